//! SQLite's group commit without a driver round trip per statement.
//!
//! sqlx runs every SQLite statement on the connection's worker thread and
//! hands each result row back over a channel, so a commit of a few hundred
//! operations was dozens of thread hops, each waiting for a core on a busy
//! machine: at 5,000 messages/s a commit spent 12 of its 14 ms there, against
//! under 2 ms in the final COMMIT. This path holds its own connection on the
//! writer's thread (see `WriterTask::spawn`) and runs single-row prepared
//! statements in one transaction, which SQLite executes in microseconds.
//!
//! It writes exactly what the shared SQL in `sql.rs` writes (the decisions —
//! refusals, audiences, receipt rows — are the same functions); the store
//! contract tests run against it as the SQLite implementation, and against
//! the shared SQL on PostgreSQL.

use super::*;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

const EXISTING: &str = "SELECT msg_id, created_at FROM chat_messages
     WHERE sender_user = ?1 AND sender_device = ?2 AND sender_generation = ?3 AND client_id = ?4";
const USER_EXISTS: &str = "SELECT 1 FROM accounts WHERE user_id = ?1";
const MEMBERS: &str = "SELECT user_id FROM chat_group_members WHERE group_id = ?1 ORDER BY user_id";
const DEVICES: &str =
    "SELECT device_id, generation FROM devices WHERE user_id = ?1 ORDER BY device_id";
const INSERT_MESSAGE: &str = "INSERT INTO chat_messages
     (sender_user, sender_device, sender_generation, client_id, conv_kind, conv_id, kind, body, system,
      created_at, expires_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
const INSERT_STATUS: &str = "INSERT INTO chat_status (msg_id, user_id) VALUES (?1, ?2)";
const DELETE_MESSAGE_ENTRY: &str =
    "DELETE FROM chat_queue WHERE kind = 0 AND msg_id = ?1 AND user_id = ?2 AND device_id = ?3";
const MESSAGE_INFO: &str =
    "SELECT sender_user, client_id, conv_kind, conv_id FROM chat_messages WHERE msg_id = ?1";
const MARK_DELIVERED: &str = "UPDATE chat_status SET delivered_at = ?1
     WHERE delivered_at IS NULL AND msg_id = ?2 AND user_id = ?3";
const CLEAR_BODY: &str = "UPDATE chat_messages SET body = NULL WHERE body IS NOT NULL AND NOT EXISTS
     (SELECT 1 FROM chat_queue q WHERE q.msg_id = chat_messages.msg_id AND q.kind = 0) AND msg_id = ?1";
/// A 1:1 message's recipient state is in the message row, a group member's
/// in `chat_status` (migration 2002).
const STATUS_JOIN: &str = "SELECT
       CASE WHEN m.conv_kind = 'u' THEN m.delivered_at ELSE s.delivered_at END,
       CASE WHEN m.conv_kind = 'u' THEN m.read_at ELSE s.read_at END,
       m.sender_user, m.client_id, m.conv_kind, m.conv_id
     FROM chat_messages m LEFT JOIN chat_status s
       ON m.conv_kind <> 'u' AND s.msg_id = m.msg_id AND s.user_id = ?2
     WHERE m.msg_id = ?1 AND CASE WHEN m.conv_kind = 'u'
       THEN m.conv_id = ?2 AND m.sender_user <> ?2 ELSE s.user_id IS NOT NULL END";
const MARK_READ: &str =
    "UPDATE chat_status SET read_at = ?1, delivered_at = COALESCE(delivered_at, ?1)
     WHERE read_at IS NULL AND msg_id = ?2 AND user_id = ?3";
/// A 1:1 message's first delivery and, when no device is left to get it,
/// the clearing of its body, in one statement (`CLEAR_BODY` otherwise).
const DELIVER_DIRECT: &str = "UPDATE chat_messages SET delivered_at = ?1,
       body = CASE WHEN EXISTS (SELECT 1 FROM chat_queue q WHERE q.msg_id = ?2 AND q.kind = 0)
                   THEN body ELSE NULL END
     WHERE delivered_at IS NULL AND msg_id = ?2 AND conv_kind = 'u' AND conv_id = ?3 AND sender_user <> ?3";
const MARK_READ_DIRECT: &str =
    "UPDATE chat_messages SET read_at = ?1, delivered_at = COALESCE(delivered_at, ?1)
     WHERE read_at IS NULL AND msg_id = ?2 AND conv_kind = 'u' AND conv_id = ?3 AND sender_user <> ?3";
const DELETE_RECEIPT: &str =
    "DELETE FROM chat_queue WHERE kind <> 0 AND seq = ?1 AND user_id = ?2 AND device_id = ?3";

/// A connection of its own for the group commit.
pub(crate) struct DirectWriter {
    conn: Mutex<Connection>,
    /// Set by the pool's background checkpoint (see `natter_common::db::WalCatchUp`).
    catch_up: std::sync::Arc<natter_common::db::WalCatchUp>,
}

impl std::fmt::Debug for DirectWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DirectWriter")
    }
}

fn store_error(e: rusqlite::Error) -> StoreError {
    StoreError(sqlx::Error::Protocol(format!("sqlite: {e}")))
}

impl DirectWriter {
    /// Opens `path` with the pool's durability (`synchronous`, as SQLite
    /// reports it: 1 normal, 2 full, 3 extra) and lock timeout.
    pub(crate) fn open(path: &Path, synchronous: i64, busy: Duration) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(store_error)?;
        conn.busy_timeout(busy).map_err(store_error)?;
        // Checkpoints run in the background (natter_common::db), never in a
        // commit. 16 MiB of page cache (SQLite's default is 2 MiB): the queue's
        // indexes are touched at random places, and a page read back from the
        // OS is a syscall inside the commit.
        // The WAL restarts only after a checkpoint on this connection (see
        // `commit`); the size limit then gives back what a burst grew.
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = {}; PRAGMA foreign_keys = ON;
             PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -16384;
             PRAGMA journal_size_limit = {};",
            synchronous.clamp(1, 3),
            natter_common::db::WAL_SIZE_LIMIT_BYTES
        ))
        .map_err(store_error)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(Self {
            conn: Mutex::new(conn),
            catch_up: natter_common::db::wal_catch_up(path),
        })
    }

    /// Applies a batch in one transaction. Blocks: it runs on the writer's
    /// own thread.
    pub(crate) fn commit(
        &self,
        ops: &[BatchOp],
        now: UnixMillis,
        ttl_ms: i64,
    ) -> StoreResult<Committed> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if self.catch_up.take() {
            // The background checkpoint copied nearly all of the WAL; copying
            // the rest here, between two transactions, lets the next commit
            // write from the start of the WAL again instead of growing it.
            let started = std::time::Instant::now();
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                // Not this batch's problem: the WAL just stays as it is.
                tracing::warn!(error = %e, "WAL catch-up checkpoint failed");
            }
            metrics::histogram!("chat_wal_catch_up_seconds")
                .record(started.elapsed().as_secs_f64());
        }
        // IMMEDIATE: take the write lock first, so another connection's write
        // (a group change) cannot invalidate this transaction's reads.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(store_error)?;
        let committed = Batch {
            conn: &tx,
            devices: HashMap::new(),
            rows: Vec::new(),
            outcomes: vec![None; ops.len()],
            now,
        }
        .run(ops, ttl_ms)
        .map_err(store_error)?;
        let finishing = std::time::Instant::now();
        tx.commit().map_err(store_error)?;
        metrics::histogram!("chat_commit_finish_seconds").record(finishing.elapsed().as_secs_f64());
        Ok(committed)
    }
}

/// One transaction's work.
struct Batch<'c> {
    conn: &'c Connection,
    /// Devices (id, generation) of users looked up so far.
    devices: HashMap<String, Vec<(i64, i64)>>,
    rows: Vec<NewRow>,
    outcomes: Vec<Option<OpOutcome>>,
    now: UnixMillis,
}

type SqlResult<T> = rusqlite::Result<T>;

impl Batch<'_> {
    fn run(mut self, ops: &[BatchOp], ttl_ms: i64) -> SqlResult<Committed> {
        let SortedOps {
            sends,
            delivered,
            reads,
            acks,
        } = SortedOps::of(ops);
        self.sends(&sends, ttl_ms)?;
        self.delivered(&delivered)?;
        self.reads(&reads)?;
        self.acks(&acks)?;
        let queued = self.insert_rows()?;
        let outcomes = self
            .outcomes
            .into_iter()
            .map(|o| o.unwrap_or(OpOutcome::Unknown(Vec::new())))
            .collect();
        Ok(Committed { outcomes, queued })
    }

    fn load_devices(&mut self, user: &str) -> SqlResult<()> {
        if self.devices.contains_key(user) {
            return Ok(());
        }
        let mut st = self.conn.prepare_cached(DEVICES)?;
        let found = st
            .query_map(params![user], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<SqlResult<Vec<(i64, i64)>>>()?;
        self.devices.insert(user.to_owned(), found);
        Ok(())
    }

    fn sends(&mut self, sends: &[(usize, &NewMessage)], ttl_ms: i64) -> SqlResult<()> {
        if sends.is_empty() {
            return Ok(());
        }
        let (unique, repeats) = split_repeats(sends);
        let mut existing = HashMap::new();
        {
            let mut st = self.conn.prepare_cached(EXISTING)?;
            for (_, m) in &unique {
                let key = send_key(m);
                let found: Option<(i64, i64)> = st
                    .query_row(params![key.0, key.1, key.2, key.3], |r| {
                        Ok((r.get(0)?, r.get(1)?))
                    })
                    .optional()?;
                if let Some(v) = found {
                    existing.insert(key, v);
                }
            }
        }
        let fresh = answer_duplicates(unique, &existing, &mut self.outcomes);
        let mut known = HashSet::new();
        let mut members: HashMap<String, Vec<String>> = HashMap::new();
        {
            let mut user_st = self.conn.prepare_cached(USER_EXISTS)?;
            let mut member_st = self.conn.prepare_cached(MEMBERS)?;
            for (_, m) in &fresh {
                match &m.to {
                    Target::User(u) => {
                        if !known.contains(&u.0) && user_st.exists(params![u.as_str()])? {
                            known.insert(u.0.clone());
                        }
                    }
                    Target::Group(g) => {
                        if !members.contains_key(&g.0) {
                            let ms = member_st
                                .query_map(params![g.as_str()], |r| r.get::<_, String>(0))?
                                .collect::<SqlResult<Vec<String>>>()?;
                            // No rows: no such group (a group always has members).
                            if !ms.is_empty() {
                                members.insert(g.0.clone(), ms);
                            }
                        }
                    }
                }
            }
        }
        let out = plan_sends(fresh, &known, &members, &mut self.outcomes);
        for o in &out {
            for u in &o.audience {
                self.load_devices(u)?;
            }
        }
        let mut msg_st = self.conn.prepare_cached(INSERT_MESSAGE)?;
        let mut status_st = self.conn.prepare_cached(INSERT_STATUS)?;
        for o in &out {
            let (ck, cid) = target_parts(&o.msg.to);
            let system = o
                .msg
                .system
                .as_ref()
                .map(|s| serde_json::to_string(s).unwrap_or_default());
            msg_st.execute(params![
                o.msg.sender.as_str(),
                i64::from(o.msg.sender_device),
                o.msg.sender_generation,
                o.msg.client_id.as_str(),
                ck,
                cid,
                o.msg.kind.as_str(),
                o.msg.body.as_slice(),
                system,
                self.now,
                self.now + ttl_ms,
            ])?;
            let msg_id = self.conn.last_insert_rowid();
            for u in &o.status_for {
                status_st.execute(params![msg_id, u.as_str()])?;
            }
            message_rows(o, msg_id, self.now, &self.devices, &mut self.rows);
            self.outcomes[o.op] = Some(OpOutcome::Send(SendOutcome::Stored(Sent {
                id: o.msg.client_id.clone(),
                msg_id: msg_id as u64,
                ts: self.now,
                dup: false,
            })));
        }
        answer_repeats(repeats, &mut self.outcomes);
        Ok(())
    }

    /// Runs a status update (`sql` binds now, message id, user) for each
    /// pair; returns the pairs it changed (those not marked before).
    fn mark(&self, sql: &str, pairs: Vec<(i64, String)>) -> SqlResult<Vec<(i64, String)>> {
        let mut st = self.conn.prepare_cached(sql)?;
        let mut changed = Vec::new();
        for (m, u) in pairs {
            if st.execute(params![self.now, m, u])? > 0 {
                changed.push((m, u));
            }
        }
        Ok(changed)
    }

    fn message_info(&self, msg_id: i64) -> SqlResult<Option<MsgInfo>> {
        let mut st = self.conn.prepare_cached(MESSAGE_INFO)?;
        st.query_row(params![msg_id], |r| {
            Ok(MsgInfo {
                msg_id,
                sender_user: r.get(0)?,
                client_id: r.get(1)?,
                conv_kind: r.get(2)?,
                conv_id: r.get(3)?,
            })
        })
        .optional()
    }

    fn delivered(&mut self, ops: &[(usize, &DeviceRef, &Vec<MsgId>)]) -> SqlResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        // Keys borrow the user from the operation: this runs for every
        // delivered id of a commit, on the writer's thread.
        let mut deleted: HashSet<(&str, i64, i64)> = HashSet::new();
        let mut msg_ids = Vec::new();
        {
            let mut st = self.conn.prepare_cached(DELETE_MESSAGE_ENTRY)?;
            for (_, d, ids) in ops {
                for id in ids.iter() {
                    let key = (d.user.as_str(), i64::from(d.device), *id as i64);
                    if deleted.contains(&key) {
                        continue;
                    }
                    if st.execute(params![key.2, key.0, key.1])? > 0 {
                        msg_ids.push(key.2);
                        deleted.insert(key);
                    }
                }
            }
        }
        for (i, d, ids) in ops {
            let unknown: Vec<u64> = dedup(ids.iter().copied())
                .into_iter()
                .filter(|id| !deleted.contains(&(d.user.as_str(), i64::from(d.device), *id as i64)))
                .collect();
            self.outcomes[*i] = Some(OpOutcome::Unknown(unknown));
        }
        let msg_ids = dedup(msg_ids);
        let mut infos = HashMap::new();
        for id in &msg_ids {
            if let Some(info) = self.message_info(*id)? {
                infos.insert(*id, info);
            }
        }
        let mut pairs: Vec<(i64, String)> = deleted
            .iter()
            .filter(|(u, _, m)| infos.get(m).is_some_and(|i| i.sender_user != *u))
            .map(|(u, _, m)| (*m, (*u).to_owned()))
            .collect();
        pairs.sort();
        pairs.dedup();
        let (direct, grouped): (Vec<_>, Vec<_>) = pairs
            .into_iter()
            .partition(|(m, _)| infos.get(m).is_some_and(MsgInfo::is_direct));
        let mut first_delivery = self.mark(DELIVER_DIRECT, direct)?;
        // Those bodies are settled already.
        let settled: HashSet<i64> = first_delivery.iter().map(|(m, _)| *m).collect();
        first_delivery.extend(self.mark(MARK_DELIVERED, grouped)?);
        first_delivery.sort();
        for (m, _) in &first_delivery {
            if let Some(info) = infos.get(m) {
                let sender = info.sender_user.clone();
                self.load_devices(&sender)?;
            }
        }
        for (m, by) in &first_delivery {
            let Some(info) = infos.get(m) else { continue };
            for &dev in self
                .devices
                .get(&info.sender_user)
                .map(Vec::as_slice)
                .unwrap_or_default()
            {
                self.rows.push(receipt_row(
                    info,
                    ReceiptStatus::Delivered,
                    by,
                    &info.sender_user,
                    dev,
                    self.now,
                ));
            }
        }
        let mut st = self.conn.prepare_cached(CLEAR_BODY)?;
        for id in msg_ids.iter().filter(|id| !settled.contains(id)) {
            st.execute(params![id])?;
        }
        Ok(())
    }

    fn reads(&mut self, ops: &[(usize, &DeviceRef, &Vec<MsgId>)]) -> SqlResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let pairs: Vec<(i64, &str)> = dedup(
            ops.iter()
                .flat_map(|(_, d, ids)| ids.iter().map(move |id| (*id as i64, d.user.as_str()))),
        );
        let mut found: HashMap<(i64, String), StatusJoin> = HashMap::new();
        {
            let mut st = self.conn.prepare_cached(STATUS_JOIN)?;
            for (m, u) in pairs {
                let row = st
                    .query_row(params![m, u], |r| {
                        Ok(StatusJoin {
                            msg_id: m,
                            user_id: u.to_owned(),
                            delivered_at: r.get(0)?,
                            read_at: r.get(1)?,
                            sender_user: r.get(2)?,
                            client_id: r.get(3)?,
                            conv_kind: r.get(4)?,
                            conv_id: r.get(5)?,
                        })
                    })
                    .optional()?;
                if let Some(row) = row {
                    found.insert((m, u.to_owned()), row);
                }
            }
        }
        let reader_device = answer_reads(ops, &found, &mut self.outcomes);
        let key = |r: &StatusJoin| (r.msg_id, r.user_id.clone());
        let (direct, grouped): (Vec<_>, Vec<_>) = found
            .values()
            .filter(|r| r.read_at.is_none())
            .partition(|r| r.is_direct());
        let mut direct: Vec<(i64, String)> = direct.into_iter().map(key).collect();
        let mut grouped: Vec<(i64, String)> = grouped.into_iter().map(key).collect();
        direct.sort();
        grouped.sort();
        let mut marked = self.mark(MARK_READ_DIRECT, direct)?;
        marked.extend(self.mark(MARK_READ, grouped)?);
        marked.sort();
        for key in &marked {
            if let Some(r) = found.get(key) {
                let (sender, reader) = (r.sender_user.clone(), r.user_id.clone());
                self.load_devices(&sender)?;
                self.load_devices(&reader)?;
            }
        }
        for key in &marked {
            let Some(r) = found.get(key) else { continue };
            read_rows(
                r,
                reader_device.get(key).copied(),
                &self.devices,
                self.now,
                &mut self.rows,
            );
        }
        Ok(())
    }

    fn acks(&mut self, ops: &[(usize, &DeviceRef, &Vec<ReceiptId>)]) -> SqlResult<()> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut deleted: HashSet<(i64, &str, i64)> = HashSet::new();
        {
            let mut st = self.conn.prepare_cached(DELETE_RECEIPT)?;
            for (_, d, ids) in ops {
                for id in ids.iter() {
                    let key = (*id as i64, d.user.as_str(), i64::from(d.device));
                    if !deleted.contains(&key) && st.execute(params![key.0, key.1, key.2])? > 0 {
                        deleted.insert(key);
                    }
                }
            }
        }
        for (i, d, ids) in ops {
            let unknown = dedup(ids.iter().copied())
                .into_iter()
                .filter(|id| !deleted.contains(&(*id as i64, d.user.as_str(), i64::from(d.device))))
                .collect();
            self.outcomes[*i] = Some(OpOutcome::Unknown(unknown));
        }
        Ok(())
    }

    /// Inserts the collected queue rows; sequence numbers are the row ids, in
    /// insertion order (one writer: commit order is sequence order). Rows go
    /// in `INSERT_CHUNK` to a statement, with the sequence numbers given:
    /// one statement (bind, step, `sqlite_sequence` update) per chunk instead
    /// of per row. They are the numbers AUTOINCREMENT would have chosen: one
    /// above the highest ever used, which the IMMEDIATE transaction keeps
    /// from changing under us.
    fn insert_rows(&mut self) -> SqlResult<Vec<Queued>> {
        let rows = std::mem::take(&mut self.rows);
        let mut queued = Vec::with_capacity(rows.len());
        if rows.is_empty() {
            return Ok(queued);
        }
        // Cached: `Connection::query_row` would parse this for every commit.
        let mut next: i64 = self
            .conn
            .prepare_cached(NEXT_SEQ)?
            .query_row([], |r| r.get(0))?;
        let mut rows = rows.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<NewRow> = rows.by_ref().take(INSERT_CHUNK).collect();
            let mut st = self.conn.prepare_cached(&CHUNK_SQL[chunk.len()])?;
            let mut values: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(chunk.len() * 8);
            let seqs: Vec<i64> = (next..next + chunk.len() as i64).collect();
            for (r, seq) in chunk.iter().zip(&seqs) {
                values.extend([
                    seq as &dyn rusqlite::ToSql,
                    &r.user,
                    &r.device,
                    &r.generation,
                    &r.kind,
                    &r.msg_id,
                    &r.peer,
                    &self.now,
                ]);
            }
            st.execute(values.as_slice())?;
            next += chunk.len() as i64;
            queued.extend(
                chunk
                    .into_iter()
                    .zip(seqs)
                    .map(|(r, seq)| r.into_queued(seq)),
            );
        }
        Ok(queued)
    }
}

/// Queue rows per INSERT statement.
const INSERT_CHUNK: usize = 32;

/// The INSERT of a chunk of `n` rows at index `n`, built once: at low rates
/// nearly every commit ends with a short chunk, and building its text per
/// commit was work on the writer's thread.
static CHUNK_SQL: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| (0..=INSERT_CHUNK).map(insert_chunk_sql).collect());

/// The next queue sequence number, as AUTOINCREMENT would choose it.
const NEXT_SEQ: &str = "SELECT max(
       COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'chat_queue'), 0),
       COALESCE((SELECT max(seq) FROM chat_queue), 0)) + 1";

/// An INSERT of `n` queue rows with their sequence numbers.
fn insert_chunk_sql(n: usize) -> String {
    let mut sql = String::from(
        "INSERT INTO chat_queue (seq, user_id, device_id, generation, kind, msg_id, peer, at) VALUES ",
    );
    for i in 0..n {
        if i > 0 {
            sql.push_str(", ");
        }
        let b = i * 8;
        sql.push_str(&format!(
            "(?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{}, ?{})",
            b + 1,
            b + 2,
            b + 3,
            b + 4,
            b + 5,
            b + 6,
            b + 7,
            b + 8
        ));
    }
    sql
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MessageStore;
    use natter_common::testing::TestDb;

    /// A migrated store on a fresh SQLite file, and its pool.
    async fn file_store() -> (TestDb, SqliteStore, SqlitePool) {
        let t = TestDb::sqlite().await;
        let Db::Sqlite(pool) = &t.db else {
            panic!("TestDb::sqlite is SQLite");
        };
        let pool = pool.clone();
        // Chat's tables refer to auth's (migration 2004 reads `devices`).
        natter_auth::store::for_db(&t.db)
            .migrate()
            .await
            .expect("auth's migrations");
        let store = SqliteStore::new(pool.clone());
        store.migrate().await.expect("migrate");
        (t, store, pool)
    }

    /// An acknowledgement of a receipt that does not exist: a commit that
    /// writes nothing and answers with the unknown id.
    async fn ack_nothing(store: &SqliteStore, id: u64) {
        let dev = DeviceRef {
            user: UserId::new("nobody"),
            device: 1,
            generation: 1,
        };
        let committed = store
            .commit(&[BatchOp::Ack(dev, vec![id])], 0, 1_000, 16)
            .await
            .expect("commit");
        assert!(
            matches!(&committed.outcomes[0], OpOutcome::Unknown(ids) if ids == &[id]),
            "an ack for no receipt names it: {:?}",
            committed.outcomes
        );
    }

    /// The store contract tests cover what is written; this pins down that a
    /// file database really takes the direct path (not the pool's).
    #[tokio::test]
    async fn a_file_database_commits_through_its_own_connection() {
        let (_t, store, _) = file_store().await;
        ack_nothing(&store, 42).await;
        assert!(
            store.direct.get().is_some_and(Option::is_some),
            "the commit went through the pool instead of the direct writer"
        );
    }

    /// Queue rows inserted in chunks get the numbers AUTOINCREMENT would
    /// have given them: in order, after the highest ever used (even when
    /// that entry is gone), and `sqlite_sequence` follows.
    #[tokio::test]
    async fn chunked_queue_rows_continue_the_sequence_without_reuse() {
        let (_t, store, pool) = file_store().await;
        let conn = Connection::open(pool.connect_options().get_filename()).unwrap();
        conn.execute_batch(
            "INSERT INTO chat_messages (msg_id, sender_user, sender_device, client_id, conv_kind,
                 conv_id, kind, created_at, expires_at) VALUES (5, 'a', 1, 'c', 'u', 'b', 'text', 0, 9);
             INSERT INTO chat_queue (seq, user_id, device_id, generation, kind, msg_id, at)
                 VALUES (41, 'b', 1, 1, 0, 5, 0);
             DELETE FROM chat_queue;",
        )
        .unwrap();
        drop(store);
        let rows = (0..INSERT_CHUNK + 8)
            .map(|i| NewRow {
                user: format!("u{i}"),
                device: 1,
                generation: 1,
                kind: 1,
                msg_id: 5,
                peer: None,
                frame: QueuedFrame::Receipt(natter_proto::Receipt {
                    receipt_id: 0,
                    msg_id: 5,
                    id: ClientMsgId::new("c"),
                    to: Target::User(UserId::new("b")),
                    status: ReceiptStatus::Delivered,
                    by: UserId::new("b"),
                    ts: 0,
                }),
            })
            .collect();
        let queued = Batch {
            conn: &conn,
            devices: HashMap::new(),
            rows,
            outcomes: Vec::new(),
            now: 7,
        }
        .insert_rows()
        .unwrap();
        let seqs: Vec<i64> = queued.iter().map(|q| q.seq).collect();
        assert_eq!(seqs, (42..42 + INSERT_CHUNK as i64 + 8).collect::<Vec<_>>());
        assert!(
            queued
                .iter()
                .zip(0..)
                .all(|(q, i)| q.user.as_str() == format!("u{i}"))
        );
        let stored: Vec<(i64, String)> = conn
            .prepare("SELECT seq, user_id FROM chat_queue ORDER BY seq")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(stored.len(), INSERT_CHUNK + 8);
        assert_eq!(stored[0], (42, "u0".to_owned()));
        let last: i64 = conn
            .query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'chat_queue'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(last, 41 + INSERT_CHUNK as i64 + 8);
    }

    /// The background checkpoint's flag is taken by the next commit, which
    /// checkpoints first and still commits.
    #[tokio::test]
    async fn the_next_commit_takes_the_wal_catch_up_flag() {
        let (_t, store, pool) = file_store().await;
        let flag = natter_common::db::wal_catch_up(pool.connect_options().get_filename());
        flag.signal();
        ack_nothing(&store, 7).await;
        assert!(!flag.take(), "the writer took the flag");
    }
}
