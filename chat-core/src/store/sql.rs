//! The SQL behind [`MessageStore`], written once and compiled for both engines.
//!
//! SQLite and PostgreSQL both accept `$n` placeholders, `RETURNING` and
//! `ON CONFLICT`, so one body of SQL serves both. Batches become multi-row
//! statements: a commit runs a small number of statements whatever its size
//! (split into a few cached shapes, see [`SHAPES`]), which is what makes group
//! commit pay off. Lookups by several keys are written as `OR`s of equalities,
//! which both engines answer from indexes (SQLite scans the whole table for a
//! row-value `IN (VALUES …)`, which made every commit slower as tables grew).

use super::*;
use natter_common::db::BeginWrite;
use natter_proto::{Body, From, ReceiptStatus};
use sqlx::{PgPool, SqlitePool};
use std::collections::{HashMap, HashSet, VecDeque};

/// Sizes of multi-row statements. A batch is split greedily into pieces of
/// these sizes (100 rows = 64 + 16 + 16 + 4), so each statement kind has at
/// most five shapes: they stay in the drivers' prepared-statement caches
/// instead of being re-prepared for every batch size. 256 rows of at most 10
/// binds stay far below SQLite's 32766 and PostgreSQL's 65535 bind limits.
const SHAPES: [usize; 5] = [256, 64, 16, 4, 1];

/// Splits `v` into slices whose lengths are in [`SHAPES`].
fn pieces<T>(v: &[T]) -> Vec<&[T]> {
    let mut out = Vec::new();
    let mut rest = v;
    while !rest.is_empty() {
        let n = SHAPES
            .iter()
            .copied()
            .find(|s| *s <= rest.len())
            .unwrap_or(1);
        let (head, tail) = rest.split_at(n);
        out.push(head);
        rest = tail;
    }
    out
}

/// For statements where a repeated key changes nothing (lookups, and updates
/// or deletes by key): pieces of exactly a [`SHAPES`] size, the last one
/// padded by repeating its final element. A batch of 50 keys is then one
/// statement of 64 instead of five (16 + 16 + 16 + 1 + 1); every statement is a
/// round trip to the driver, which is what a commit spends most of its time on.
fn padded_pieces<T: Clone>(v: &[T]) -> Vec<Vec<T>> {
    v.chunks(SHAPES[0])
        .map(|c| {
            let n = SHAPES
                .iter()
                .rev()
                .copied()
                .find(|s| *s >= c.len())
                .unwrap_or(SHAPES[0]);
            let mut piece = c.to_vec();
            if let Some(last) = c.last() {
                piece.resize(n, last.clone());
            }
            piece
        })
        .collect()
}

mod sqlite_direct;

/// SQLite implementation.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    /// The group commit's own connection, opened on the first commit
    /// (a database file only; in-memory databases use the pool).
    direct: Arc<tokio::sync::OnceCell<Option<sqlite_direct::DirectWriter>>>,
}

impl SqliteStore {
    /// Wraps a pool.
    pub fn new(pool: SqlitePool) -> Self {
        Self {
            pool,
            direct: Arc::default(),
        }
    }

    /// The direct write path (see `sqlite_direct`), with the pool's settings.
    async fn direct_writer(&self) -> StoreResult<Option<&sqlite_direct::DirectWriter>> {
        let direct = self
            .direct
            .get_or_try_init(|| async {
                let opts = self.pool.connect_options();
                let path = opts.get_filename();
                if path.as_os_str().is_empty() || path.to_str() == Some(":memory:") {
                    return Ok(None);
                }
                let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
                    .fetch_one(&self.pool)
                    .await?;
                let busy_ms: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
                    .fetch_one(&self.pool)
                    .await?;
                let busy = std::time::Duration::from_millis(busy_ms.max(0) as u64);
                sqlite_direct::DirectWriter::open(path, synchronous, busy).map(Some)
            })
            .await?;
        Ok(direct.as_ref())
    }
}

/// PostgreSQL implementation.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    /// Wraps a pool.
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// PostgreSQL commits through the pool (its statements are batched).
    async fn direct_writer(&self) -> StoreResult<Option<&sqlite_direct::DirectWriter>> {
        Ok(None)
    }
}

fn target_parts(t: &Target) -> (&'static str, &str) {
    match t {
        Target::User(u) => ("u", u.as_str()),
        Target::Group(g) => ("g", g.as_str()),
    }
}

fn target_from(kind: &str, id: String) -> Target {
    if kind == "g" {
        Target::Group(GroupId(id))
    } else {
        Target::User(UserId(id))
    }
}

/// A queue entry joined with its message.
#[derive(Debug, sqlx::FromRow)]
struct QueueRow {
    seq: i64,
    user_id: String,
    device_id: i64,
    generation: i64,
    qkind: i64,
    msg_id: i64,
    peer: Option<String>,
    at: i64,
    sender_user: String,
    sender_device: i64,
    client_id: String,
    conv_kind: String,
    conv_id: String,
    mkind: String,
    body: Option<Vec<u8>>,
    system: Option<String>,
    created_at: i64,
}

const QUEUE_SELECT: &str = "SELECT q.seq, q.user_id, q.device_id, q.generation, q.kind AS qkind, q.msg_id, q.peer, q.at,
        m.sender_user, m.sender_device, m.client_id, m.conv_kind, m.conv_id, m.kind AS mkind, m.body, m.system, m.created_at
 FROM chat_queue q JOIN chat_messages m ON m.msg_id = q.msg_id";

impl QueueRow {
    fn message(&self) -> Message {
        Message {
            msg_id: self.msg_id as u64,
            id: ClientMsgId(self.client_id.clone()),
            from: From {
                user: UserId(self.sender_user.clone()),
                device: self.sender_device as DeviceId,
            },
            to: target_from(&self.conv_kind, self.conv_id.clone()),
            kind: Kind(self.mkind.clone()),
            body: Body(self.body.clone().unwrap_or_default()),
            ts: self.created_at,
            system: self
                .system
                .as_deref()
                .and_then(|s| serde_json::from_str(s).ok()),
        }
    }

    fn into_queued(self) -> Queued {
        let frame = if self.qkind == item::MSG {
            QueuedFrame::Msg(Arc::new(self.message()))
        } else {
            QueuedFrame::Receipt(Receipt {
                receipt_id: self.seq as u64,
                msg_id: self.msg_id as u64,
                id: ClientMsgId(self.client_id.clone()),
                to: target_from(&self.conv_kind, self.conv_id.clone()),
                status: if self.qkind == item::READ {
                    ReceiptStatus::Read
                } else {
                    ReceiptStatus::Delivered
                },
                by: UserId(self.peer.clone().unwrap_or_default()),
                ts: self.at,
            })
        };
        Queued {
            user: UserId(self.user_id),
            device: self.device_id as DeviceId,
            generation: self.generation,
            seq: self.seq,
            prev: None,
            frame,
        }
    }
}

/// What a commit learns about a message it writes receipts for.
#[derive(Debug, Clone, sqlx::FromRow)]
struct MsgInfo {
    msg_id: i64,
    sender_user: String,
    client_id: String,
    conv_kind: String,
    conv_id: String,
}

impl MsgInfo {
    /// A 1:1 message: its recipient's state is in the message row.
    fn is_direct(&self) -> bool {
        self.conv_kind == "u"
    }
}

/// Which receipt state a status update sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Delivered,
    Read,
}

#[derive(Debug, sqlx::FromRow)]
struct StatusJoin {
    msg_id: i64,
    user_id: String,
    delivered_at: Option<i64>,
    read_at: Option<i64>,
    sender_user: String,
    client_id: String,
    conv_kind: String,
    conv_id: String,
}

impl StatusJoin {
    /// A 1:1 message: its recipient's state is in the message row.
    fn is_direct(&self) -> bool {
        self.conv_kind == "u"
    }
}

#[derive(Debug, sqlx::FromRow)]
struct MemberRow {
    user_id: String,
    admin: bool,
    added_at: i64,
}

#[derive(Debug, sqlx::FromRow)]
struct GroupRow {
    group_id: String,
    name: String,
    created_by: String,
    created_at: i64,
}

/// A queue row to insert at the end of a commit.
struct NewRow {
    user: String,
    device: i64,
    generation: i64,
    kind: i64,
    msg_id: i64,
    peer: Option<String>,
    frame: QueuedFrame,
}

type RowKey = (String, i64, i64, i64, Option<String>);

impl NewRow {
    /// The committed entry, once the database gave it sequence number `seq`
    /// (a receipt's id is its entry's sequence number).
    fn into_queued(self, seq: i64) -> Queued {
        let frame = match self.frame {
            QueuedFrame::Receipt(mut rc) => {
                rc.receipt_id = seq as u64;
                QueuedFrame::Receipt(rc)
            }
            f => f,
        };
        Queued {
            user: UserId(self.user),
            device: self.device as DeviceId,
            generation: self.generation,
            seq,
            prev: None,
            frame,
        }
    }

    fn key(&self) -> RowKey {
        (
            self.user.clone(),
            self.device,
            self.kind,
            self.msg_id,
            self.peer.clone(),
        )
    }
}

/// A message about to be inserted, with who should get it.
struct Outgoing<'a> {
    op: usize,
    msg: &'a NewMessage,
    /// Users whose devices get a copy (the sender's other devices included).
    audience: Vec<String>,
    /// Users that get a `chat_status` row: a group's members other than the
    /// sender. None for a 1:1 message (its recipient's state is in the
    /// message row) or a system message.
    status_for: Vec<String>,
}

fn receipt_row(
    info: &MsgInfo,
    status: ReceiptStatus,
    by: &str,
    to_user: &str,
    device: (i64, i64),
    now: UnixMillis,
) -> NewRow {
    NewRow {
        user: to_user.to_owned(),
        device: device.0,
        generation: device.1,
        kind: if status == ReceiptStatus::Read {
            item::READ
        } else {
            item::DELIVERED
        },
        msg_id: info.msg_id,
        peer: Some(by.to_owned()),
        frame: QueuedFrame::Receipt(Receipt {
            receipt_id: 0,
            msg_id: info.msg_id as u64,
            id: ClientMsgId(info.client_id.clone()),
            to: target_from(&info.conv_kind, info.conv_id.clone()),
            status,
            by: UserId(by.to_owned()),
            ts: now,
        }),
    }
}

/// A receipt-like operation (delivered, read, ack) and its position in the batch.
type IdsOp<'a, T> = (usize, &'a DeviceRef, &'a Vec<T>);

/// A batch's operations by kind, each with its position. Both commit paths
/// apply them in this order: messages, deliveries, reads, acks.
struct SortedOps<'a> {
    sends: Vec<SendOp<'a>>,
    delivered: Vec<IdsOp<'a, MsgId>>,
    reads: Vec<IdsOp<'a, MsgId>>,
    acks: Vec<IdsOp<'a, ReceiptId>>,
}

impl<'a> SortedOps<'a> {
    fn of(ops: &'a [BatchOp]) -> Self {
        let mut sorted = SortedOps {
            sends: Vec::new(),
            delivered: Vec::new(),
            reads: Vec::new(),
            acks: Vec::new(),
        };
        for (i, op) in ops.iter().enumerate() {
            match op {
                BatchOp::Send(m) => sorted.sends.push((i, m)),
                BatchOp::Delivered(d, ids) => sorted.delivered.push((i, d, ids)),
                BatchOp::Read(d, ids) => sorted.reads.push((i, d, ids)),
                BatchOp::Ack(d, ids) => sorted.acks.push((i, d, ids)),
            }
        }
        sorted
    }
}

/// A send and its position in the batch.
type SendOp<'a> = (usize, &'a NewMessage);

/// A send's idempotency key: sender, device, the device's credential
/// generation and the client's id (migration 2004 added the generation).
type SendKey = (String, i64, i64, String);

/// The idempotency key of a send.
fn send_key(m: &NewMessage) -> SendKey {
    (
        m.sender.0.clone(),
        i64::from(m.sender_device),
        m.sender_generation,
        m.client_id.0.clone(),
    )
}

/// Sends of a batch split into first occurrences and in-batch repeats
/// (`(op, op of the first)`), which answer like their first occurrence.
fn split_repeats<'a>(sends: &[SendOp<'a>]) -> (Vec<SendOp<'a>>, Vec<(usize, usize)>) {
    let mut first: HashMap<(&str, DeviceId, i64, &str), usize> = HashMap::new();
    let mut unique = Vec::new();
    let mut repeats = Vec::new();
    for &(i, m) in sends {
        let key = (
            m.sender.as_str(),
            m.sender_device,
            m.sender_generation,
            m.client_id.as_str(),
        );
        match first.entry(key) {
            std::collections::hash_map::Entry::Occupied(e) => repeats.push((i, *e.get())),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(i);
                unique.push((i, m));
            }
        }
    }
    (unique, repeats)
}

/// Answers sends stored before (idempotency) with their stored ack; returns the rest.
fn answer_duplicates<'a>(
    unique: Vec<(usize, &'a NewMessage)>,
    existing: &HashMap<SendKey, (i64, i64)>,
    outcomes: &mut [Option<OpOutcome>],
) -> Vec<(usize, &'a NewMessage)> {
    let mut fresh = Vec::new();
    for (i, m) in unique {
        if let Some(&(id, ts)) = existing.get(&send_key(m)) {
            outcomes[i] = Some(OpOutcome::Send(SendOutcome::Duplicate(Sent {
                id: m.client_id.clone(),
                msg_id: id as u64,
                ts,
                dup: true,
            })));
        } else {
            fresh.push((i, m));
        }
    }
    fresh
}

/// Refuses sends to unknown users or groups and from non-members; the rest
/// become outgoing messages with their audience.
fn plan_sends<'a>(
    fresh: Vec<(usize, &'a NewMessage)>,
    known: &HashSet<String>,
    members: &HashMap<String, Vec<String>>,
    outcomes: &mut [Option<OpOutcome>],
) -> Vec<Outgoing<'a>> {
    let mut out = Vec::new();
    for (i, m) in fresh {
        let refused = match &m.to {
            Target::User(u) if !known.contains(&u.0) => Some((
                natter_proto::ErrorCode::UnknownRecipient,
                format!("no user {u}"),
            )),
            Target::User(u) => {
                // The recipient's state lives in the message row (migration 2002).
                out.push(Outgoing {
                    op: i,
                    msg: m,
                    audience: vec![u.0.clone(), m.sender.0.clone()],
                    status_for: vec![],
                });
                None
            }
            Target::Group(g) => match members.get(&g.0) {
                None => Some((
                    natter_proto::ErrorCode::UnknownGroup,
                    format!("no group {g}"),
                )),
                Some(ms) if !ms.contains(&m.sender.0) => Some((
                    natter_proto::ErrorCode::NotAMember,
                    format!("you are not a member of group {g}"),
                )),
                Some(ms) => {
                    out.push(Outgoing {
                        op: i,
                        msg: m,
                        audience: ms.clone(),
                        status_for: ms.iter().filter(|u| **u != m.sender.0).cloned().collect(),
                    });
                    None
                }
            },
        };
        if let Some((code, why)) = refused {
            outcomes[i] = Some(OpOutcome::Send(SendOutcome::Refused(code, why)));
        }
    }
    out
}

/// Answers in-batch repeats like their first occurrence.
fn answer_repeats(repeats: Vec<(usize, usize)>, outcomes: &mut [Option<OpOutcome>]) {
    for (i, f) in repeats {
        let o = match &outcomes[f] {
            Some(OpOutcome::Send(SendOutcome::Stored(s) | SendOutcome::Duplicate(s))) => {
                SendOutcome::Duplicate(Sent {
                    dup: true,
                    ..s.clone()
                })
            }
            Some(OpOutcome::Send(r @ SendOutcome::Refused(..))) => r.clone(),
            _ => SendOutcome::Refused(natter_proto::ErrorCode::InternalError, "lost".into()),
        };
        outcomes[i] = Some(OpOutcome::Send(o));
    }
}

/// Answers each `read` op with the ids that named no message of its user,
/// and returns, per (message, reader), the first device in the batch that
/// reported the read: its siblings get the read sync.
fn answer_reads(
    ops: &[IdsOp<'_, MsgId>],
    found: &HashMap<(i64, String), StatusJoin>,
    outcomes: &mut [Option<OpOutcome>],
) -> HashMap<(i64, String), i64> {
    let mut reader_device = HashMap::new();
    for (i, d, ids) in ops {
        let mut unknown = Vec::new();
        for id in dedup(ids.iter().copied()) {
            let key = (id as i64, d.user.0.clone());
            if found.contains_key(&key) {
                reader_device.entry(key).or_insert(i64::from(d.device));
            } else {
                unknown.push(id);
            }
        }
        outcomes[*i] = Some(OpOutcome::Unknown(unknown));
    }
    reader_device
}

/// Queue rows of a stored message: every device of its audience except the
/// one that sent it.
fn message_rows(
    o: &Outgoing<'_>,
    msg_id: i64,
    now: UnixMillis,
    devices: &HashMap<String, Vec<(i64, i64)>>,
    rows: &mut Vec<NewRow>,
) {
    let frame = Arc::new(Message {
        msg_id: msg_id as u64,
        id: o.msg.client_id.clone(),
        from: From {
            user: o.msg.sender.clone(),
            device: o.msg.sender_device,
        },
        to: o.msg.to.clone(),
        kind: o.msg.kind.clone(),
        body: Body(o.msg.body.clone()),
        ts: now,
        system: o.msg.system.clone(),
    });
    for u in dedup(o.audience.iter()) {
        for &(d, g) in devices.get(u).map(Vec::as_slice).unwrap_or_default() {
            if *u == o.msg.sender.0 && d == i64::from(o.msg.sender_device) {
                continue;
            }
            rows.push(NewRow {
                user: u.clone(),
                device: d,
                generation: g,
                kind: item::MSG,
                msg_id,
                peer: None,
                frame: QueuedFrame::Msg(frame.clone()),
            });
        }
    }
}

/// Receipt rows for a message just marked read: `delivered` first when it had
/// not been, `read` to the sender's devices, and a read sync to the reader's
/// other devices (all but `reader`).
fn read_rows(
    r: &StatusJoin,
    reader: Option<i64>,
    devices: &HashMap<String, Vec<(i64, i64)>>,
    now: UnixMillis,
    rows: &mut Vec<NewRow>,
) {
    let info = MsgInfo {
        msg_id: r.msg_id,
        sender_user: r.sender_user.clone(),
        client_id: r.client_id.clone(),
        conv_kind: r.conv_kind.clone(),
        conv_id: r.conv_id.clone(),
    };
    let sender_devices = devices
        .get(&r.sender_user)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if r.delivered_at.is_none() {
        for &dev in sender_devices {
            rows.push(receipt_row(
                &info,
                ReceiptStatus::Delivered,
                &r.user_id,
                &r.sender_user,
                dev,
                now,
            ));
        }
    }
    for &dev in sender_devices {
        rows.push(receipt_row(
            &info,
            ReceiptStatus::Read,
            &r.user_id,
            &r.sender_user,
            dev,
            now,
        ));
    }
    for &dev in devices
        .get(&r.user_id)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if Some(dev.0) != reader {
            rows.push(receipt_row(
                &info,
                ReceiptStatus::Read,
                &r.user_id,
                &r.user_id,
                dev,
                now,
            ));
        }
    }
}

/// Links each device's new entries (sorted by `seq`): the first follows the
/// device's newest existing entry, each later one the entry before it.
fn chain_prev(queued: &mut [Queued], prev: &mut HashMap<(String, i64), i64>) {
    for q in queued {
        let last = prev
            .entry((q.user.0.clone(), i64::from(q.device)))
            .or_insert(0);
        q.prev = Some(*last);
        *last = q.seq;
    }
}

fn dedup<T: Clone + Eq + std::hash::Hash>(v: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut seen = HashSet::new();
    v.into_iter().filter(|x| seen.insert(x.clone())).collect()
}

/// Time-ordered (UUID v7), as the SDK's ids: see migration 2003.
fn new_system_client_id() -> ClientMsgId {
    ClientMsgId(format!("sys-{}", uuid::Uuid::now_v7().simple()))
}

/// Appends `((c1 = ? AND c2 = ?) OR (…))` for a list of rows. SQLite plans
/// this with an index per branch (MULTI-INDEX OR), where a row-value
/// `(c1, c2) IN (VALUES …)` would scan the whole table.
macro_rules! push_or_rows {
    ($qb:expr, $rows:expr, |$r:pat_param| $col0:literal = $val0:expr $(, $col:literal = $val:expr)* $(,)?) => {{
        $qb.push("(");
        for (i, $r) in $rows.iter().enumerate() {
            if i > 0 {
                $qb.push(" OR ");
            }
            $qb.push(concat!("(", $col0, " = "));
            $qb.push_bind($val0);
            $(
                $qb.push(concat!(" AND ", $col, " = "));
                $qb.push_bind($val);
            )*
            $qb.push(")");
        }
        $qb.push(")");
    }};
}

macro_rules! sql_store {
    ($store:ty, $db:ty, $variant:ident) => {
        impl $store {
            /// Devices (id, generation) of each user.
            async fn devices_of(
                conn: &mut <$db as sqlx::Database>::Connection,
                cache: &mut HashMap<String, Vec<(i64, i64)>>,
                users: &[String],
            ) -> StoreResult<()> {
                let missing: Vec<&String> = dedup(users.iter().filter(|u| !cache.contains_key(*u)));
                for chunk in padded_pieces(&missing) {
                    let chunk = chunk.as_slice();
                    for u in chunk {
                        cache.insert((*u).clone(), Vec::new());
                    }
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "SELECT user_id, device_id, generation FROM devices WHERE user_id IN (",
                    );
                    let mut sep = qb.separated(", ");
                    for u in chunk {
                        sep.push_bind(u.as_str());
                    }
                    qb.push(") ORDER BY user_id, device_id");
                    let rows: Vec<(String, i64, i64)> = qb.build_query_as().fetch_all(&mut *conn).await?;
                    for (u, d, g) in rows {
                        cache.entry(u).or_default().push((d, g));
                    }
                }
                Ok(())
            }

            /// Of `users`, those with an account.
            async fn existing_users(
                conn: &mut <$db as sqlx::Database>::Connection,
                users: &[String],
            ) -> StoreResult<HashSet<String>> {
                let mut found = HashSet::new();
                let users = dedup(users.iter().cloned());
                for chunk in padded_pieces(&users) {
                    let chunk = chunk.as_slice();
                    let mut qb = sqlx::QueryBuilder::<$db>::new("SELECT user_id FROM accounts WHERE user_id IN (");
                    let mut sep = qb.separated(", ");
                    for u in chunk {
                        sep.push_bind(u.as_str());
                    }
                    qb.push(")");
                    let rows: Vec<(String,)> = qb.build_query_as().fetch_all(&mut *conn).await?;
                    found.extend(rows.into_iter().map(|r| r.0));
                }
                Ok(found)
            }

            async fn load_group(
                conn: &mut <$db as sqlx::Database>::Connection,
                group_id: &str,
            ) -> StoreResult<Option<GroupInfo>> {
                let Some(g) = sqlx::query_as::<_, GroupRow>(
                    "SELECT group_id, name, created_by, created_at FROM chat_groups WHERE group_id = $1",
                )
                .bind(group_id)
                .fetch_optional(&mut *conn)
                .await?
                else {
                    return Ok(None);
                };
                let members = sqlx::query_as::<_, MemberRow>(
                    "SELECT user_id, admin, added_at FROM chat_group_members WHERE group_id = $1 ORDER BY user_id",
                )
                .bind(group_id)
                .fetch_all(&mut *conn)
                .await?;
                Ok(Some(GroupInfo {
                    group_id: GroupId(g.group_id),
                    name: g.name,
                    created_by: UserId(g.created_by),
                    created_at: g.created_at,
                    members: members
                        .into_iter()
                        .map(|m| Member {
                            user_id: UserId(m.user_id),
                            admin: m.admin,
                            added_at: m.added_at,
                        })
                        .collect(),
                }))
            }

            /// Inserts messages, their status rows, and adds their queue rows to `rows`.
            async fn insert_messages(
                conn: &mut <$db as sqlx::Database>::Connection,
                devices: &mut HashMap<String, Vec<(i64, i64)>>,
                out: &[Outgoing<'_>],
                now: UnixMillis,
                ttl_ms: i64,
                rows: &mut Vec<NewRow>,
            ) -> StoreResult<HashMap<usize, Sent>> {
                let mut ids: HashMap<SendKey, i64> = HashMap::new();
                for chunk in pieces(&out) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO chat_messages (sender_user, sender_device, sender_generation, client_id, conv_kind, conv_id, kind, body, system, created_at, expires_at) ",
                    );
                    qb.push_values(chunk, |mut b, o| {
                        let (ck, cid) = target_parts(&o.msg.to);
                        b.push_bind(o.msg.sender.as_str())
                            .push_bind(i64::from(o.msg.sender_device))
                            .push_bind(o.msg.sender_generation)
                            .push_bind(o.msg.client_id.as_str())
                            .push_bind(ck)
                            .push_bind(cid)
                            .push_bind(o.msg.kind.as_str())
                            .push_bind(o.msg.body.as_slice())
                            .push_bind(o.msg.system.as_ref().map(|s| serde_json::to_string(s).unwrap_or_default()))
                            .push_bind(now)
                            .push_bind(now + ttl_ms);
                    });
                    qb.push(" RETURNING msg_id, sender_user, sender_device, sender_generation, client_id");
                    let ret: Vec<(i64, String, i64, i64, String)> = qb.build_query_as().fetch_all(&mut *conn).await?;
                    for (id, u, d, g, c) in ret {
                        ids.insert((u, d, g, c), id);
                    }
                }
                let mut sent = HashMap::new();
                let mut status: Vec<(i64, &str)> = Vec::new();
                let audience: Vec<String> = out.iter().flat_map(|o| o.audience.iter().cloned()).collect();
                Self::devices_of(conn, devices, &audience).await?;
                for o in out {
                    let Some(&msg_id) = ids.get(&send_key(o.msg)) else {
                        // Every row of the INSERT is returned; a missing one would be
                        // a driver bug, and refusing the commit is the safe answer.
                        return Err(StoreError(sqlx::Error::Protocol(format!(
                            "insert did not return message {:?}",
                            o.msg.client_id
                        ))));
                    };
                    sent.insert(
                        o.op,
                        Sent {
                            id: o.msg.client_id.clone(),
                            msg_id: msg_id as u64,
                            ts: now,
                            dup: false,
                        },
                    );
                    for u in &o.status_for {
                        status.push((msg_id, u.as_str()));
                    }
                    message_rows(o, msg_id, now, devices, rows);
                }
                for chunk in pieces(&status) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new("INSERT INTO chat_status (msg_id, user_id) ");
                    qb.push_values(chunk, |mut b, (m, u)| {
                        b.push_bind(*m).push_bind(*u);
                    });
                    qb.build().execute(&mut *conn).await?;
                }
                Ok(sent)
            }

            /// Inserts the collected queue rows; returns them as committed entries.
            async fn insert_rows(
                conn: &mut <$db as sqlx::Database>::Connection,
                rows: Vec<NewRow>,
                now: UnixMillis,
            ) -> StoreResult<Vec<Queued>> {
                let devs: Vec<(&str, i64, i64)> = dedup(rows.iter().map(|r| (r.user.as_str(), r.device, r.generation)));
                let mut prev = Self::order_queues(&mut *conn, &devs).await?;
                let mut by_key: HashMap<RowKey, VecDeque<i64>> = HashMap::new();
                for chunk in pieces(&rows) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "INSERT INTO chat_queue (user_id, device_id, generation, kind, msg_id, peer, at) ",
                    );
                    qb.push_values(chunk, |mut b, r| {
                        b.push_bind(r.user.as_str())
                            .push_bind(r.device)
                            .push_bind(r.generation)
                            .push_bind(r.kind)
                            .push_bind(r.msg_id)
                            .push_bind(r.peer.as_deref())
                            .push_bind(now);
                    });
                    qb.push(" RETURNING seq, user_id, device_id, kind, msg_id, peer");
                    let ret: Vec<(i64, String, i64, i64, i64, Option<String>)> =
                        qb.build_query_as().fetch_all(&mut *conn).await?;
                    for (seq, u, d, k, m, p) in ret {
                        by_key.entry((u, d, k, m, p)).or_default().push_back(seq);
                    }
                }
                let mut queued = Vec::with_capacity(rows.len());
                for r in rows {
                    let Some(seq) = by_key.get_mut(&r.key()).and_then(VecDeque::pop_front) else {
                        return Err(StoreError(sqlx::Error::Protocol(
                            "queue insert did not return every row".into(),
                        )));
                    };
                    queued.push(r.into_queued(seq));
                }
                queued.sort_by_key(|q| q.seq);
                if let Some(prev) = prev.as_mut() {
                    chain_prev(&mut queued, prev);
                }
                Ok(queued)
            }

            async fn msg_infos(
                conn: &mut <$db as sqlx::Database>::Connection,
                ids: &[i64],
            ) -> StoreResult<HashMap<i64, MsgInfo>> {
                let mut out = HashMap::new();
                let ids = dedup(ids.iter().copied());
                for chunk in padded_pieces(&ids) {
                    let chunk = chunk.as_slice();
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "SELECT msg_id, sender_user, client_id, conv_kind, conv_id FROM chat_messages WHERE msg_id IN (",
                    );
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(*id);
                    }
                    qb.push(")");
                    let rows: Vec<MsgInfo> = qb.build_query_as().fetch_all(&mut *conn).await?;
                    out.extend(rows.into_iter().map(|r| (r.msg_id, r)));
                }
                Ok(out)
            }

            async fn clear_delivered_bodies(
                conn: &mut <$db as sqlx::Database>::Connection,
                ids: &[i64],
            ) -> StoreResult<()> {
                let ids = dedup(ids.iter().copied());
                for chunk in padded_pieces(&ids) {
                    let chunk = chunk.as_slice();
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "UPDATE chat_messages SET body = NULL WHERE body IS NOT NULL AND NOT EXISTS
                         (SELECT 1 FROM chat_queue q WHERE q.msg_id = chat_messages.msg_id AND q.kind = 0) AND msg_id IN (",
                    );
                    let mut sep = qb.separated(", ");
                    for id in chunk {
                        sep.push_bind(*id);
                    }
                    qb.push(")");
                    qb.build().execute(&mut *conn).await?;
                }
                Ok(())
            }

            /// The message part of a commit.
            async fn commit_sends(
                conn: &mut <$db as sqlx::Database>::Connection,
                devices: &mut HashMap<String, Vec<(i64, i64)>>,
                sends: &[(usize, &NewMessage)],
                outcomes: &mut [Option<OpOutcome>],
                rows: &mut Vec<NewRow>,
                now: UnixMillis,
                ttl_ms: i64,
            ) -> StoreResult<()> {
                let (unique, repeats) = split_repeats(sends);
                // Sent before (idempotency): answer with the stored ack.
                let mut existing: HashMap<SendKey, (i64, i64)> = HashMap::new();
                for chunk in padded_pieces(&unique) {
                    let chunk = chunk.as_slice();
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "SELECT sender_user, sender_device, sender_generation, client_id, msg_id, created_at FROM chat_messages
                         WHERE ",
                    );
                    push_or_rows!(qb, chunk, |(_, m)| "sender_user" = m.sender.as_str(),
                        "sender_device" = i64::from(m.sender_device),
                        "sender_generation" = m.sender_generation,
                        "client_id" = m.client_id.as_str());
                    let rows: Vec<(String, i64, i64, String, i64, i64)> = qb.build_query_as().fetch_all(&mut *conn).await?;
                    for (u, d, g, c, id, ts) in rows {
                        existing.insert((u, d, g, c), (id, ts));
                    }
                }
                let fresh = answer_duplicates(unique, &existing, outcomes);
                // Validate recipients.
                let users: Vec<String> = fresh
                    .iter()
                    .filter_map(|(_, m)| match &m.to {
                        Target::User(u) => Some(u.0.clone()),
                        Target::Group(_) => None,
                    })
                    .collect();
                let known = Self::existing_users(conn, &users).await?;
                let groups: Vec<String> = dedup(fresh.iter().filter_map(|(_, m)| match &m.to {
                    Target::Group(g) => Some(g.0.clone()),
                    Target::User(_) => None,
                }));
                let mut members: HashMap<String, Vec<String>> = HashMap::new();
                for chunk in padded_pieces(&groups) {
                    let chunk = chunk.as_slice();
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "SELECT group_id, user_id FROM chat_group_members WHERE group_id IN (",
                    );
                    let mut sep = qb.separated(", ");
                    for g in chunk {
                        sep.push_bind(g.as_str());
                    }
                    qb.push(") ORDER BY group_id, user_id");
                    let rows: Vec<(String, String)> = qb.build_query_as().fetch_all(&mut *conn).await?;
                    for (g, u) in rows {
                        members.entry(g).or_default().push(u);
                    }
                }
                let out = plan_sends(fresh, &known, &members, outcomes);
                let sent = Self::insert_messages(conn, devices, &out, now, ttl_ms, rows).await?;
                for (i, s) in sent {
                    outcomes[i] = Some(OpOutcome::Send(SendOutcome::Stored(s)));
                }
                answer_repeats(repeats, outcomes);
                Ok(())
            }

            /// Marks 1:1 messages delivered (or read, which implies delivered)
            /// in their own rows, where not marked before; returns (message,
            /// recipient) of those it changed. A 1:1 message's one recipient is
            /// its conversation id.
            async fn mark_direct(
                conn: &mut <$db as sqlx::Database>::Connection,
                mark: Mark,
                pairs: &[(i64, String)],
                now: UnixMillis,
            ) -> StoreResult<Vec<(i64, String)>> {
                let ids: Vec<i64> = dedup(pairs.iter().map(|(m, _)| *m));
                let mut changed = Vec::new();
                for chunk in padded_pieces(&ids) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE chat_messages SET ");
                    match mark {
                        Mark::Delivered => {
                            qb.push("delivered_at = ");
                            qb.push_bind(now);
                            qb.push(" WHERE delivered_at IS NULL");
                        }
                        Mark::Read => {
                            qb.push("read_at = ");
                            qb.push_bind(now);
                            qb.push(", delivered_at = COALESCE(delivered_at, ");
                            qb.push_bind(now);
                            qb.push(") WHERE read_at IS NULL");
                        }
                    }
                    qb.push(" AND conv_kind = 'u' AND sender_user <> conv_id AND msg_id IN (");
                    let mut sep = qb.separated(", ");
                    for id in &chunk {
                        sep.push_bind(*id);
                    }
                    qb.push(") RETURNING msg_id, conv_id");
                    let ret: Vec<(i64, String)> = qb.build_query_as().fetch_all(&mut *conn).await?;
                    changed.extend(ret);
                }
                Ok(changed)
            }

            async fn commit_delivered(
                conn: &mut <$db as sqlx::Database>::Connection,
                devices: &mut HashMap<String, Vec<(i64, i64)>>,
                ops: &[(usize, &DeviceRef, &Vec<MsgId>)],
                outcomes: &mut [Option<OpOutcome>],
                rows: &mut Vec<NewRow>,
                now: UnixMillis,
            ) -> StoreResult<()> {
                let triples: Vec<(&str, i64, i64)> = dedup(ops.iter().flat_map(|(_, d, ids)| {
                    ids.iter().map(move |id| (d.user.as_str(), i64::from(d.device), *id as i64))
                }));
                let mut deleted: HashSet<(String, i64, i64)> = HashSet::new();
                for chunk in padded_pieces(&triples) {
                    let chunk = chunk.as_slice();
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "DELETE FROM chat_queue WHERE kind = 0 AND ",
                    );
                    push_or_rows!(qb, chunk, |(u, d, m)| "msg_id" = *m, "user_id" = *u, "device_id" = *d);
                    qb.push(" RETURNING user_id, device_id, msg_id");
                    let ret: Vec<(String, i64, i64)> = qb.build_query_as().fetch_all(&mut *conn).await?;
                    deleted.extend(ret);
                }
                for (i, d, ids) in ops {
                    let unknown: Vec<u64> = dedup(ids.iter().copied())
                        .into_iter()
                        .filter(|id| !deleted.contains(&(d.user.0.clone(), i64::from(d.device), *id as i64)))
                        .collect();
                    outcomes[*i] = Some(OpOutcome::Unknown(unknown));
                }
                if deleted.is_empty() {
                    return Ok(());
                }
                let msg_ids: Vec<i64> = deleted.iter().map(|t| t.2).collect();
                let infos = Self::msg_infos(conn, &msg_ids).await?;
                let pairs: Vec<(i64, String)> = dedup(
                    deleted
                        .iter()
                        .filter(|(u, _, m)| infos.get(m).is_some_and(|i| i.sender_user != *u))
                        .map(|(u, _, m)| (*m, u.clone())),
                );
                let (direct, grouped): (Vec<_>, Vec<_>) =
                    pairs.into_iter().partition(|(m, _)| infos.get(m).is_some_and(MsgInfo::is_direct));
                let mut first_delivery =
                    Self::mark_direct(conn, Mark::Delivered, &direct, now).await?;
                for chunk in padded_pieces(&grouped) {
                    let chunk = chunk.as_slice();
                    let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE chat_status SET delivered_at = ");
                    qb.push_bind(now);
                    qb.push(" WHERE delivered_at IS NULL AND ");
                    push_or_rows!(qb, chunk, |(m, u)| "msg_id" = *m, "user_id" = u.as_str());
                    qb.push(" RETURNING msg_id, user_id");
                    let ret: Vec<(i64, String)> = qb.build_query_as().fetch_all(&mut *conn).await?;
                    first_delivery.extend(ret);
                }
                first_delivery.sort();
                let senders: Vec<String> = first_delivery
                    .iter()
                    .filter_map(|(m, _)| infos.get(m).map(|i| i.sender_user.clone()))
                    .collect();
                Self::devices_of(conn, devices, &senders).await?;
                for (m, by) in &first_delivery {
                    let Some(info) = infos.get(m) else { continue };
                    for &dev in devices.get(&info.sender_user).map(Vec::as_slice).unwrap_or_default() {
                        rows.push(receipt_row(info, ReceiptStatus::Delivered, by, &info.sender_user, dev, now));
                    }
                }
                Self::clear_delivered_bodies(conn, &msg_ids).await
            }

            async fn commit_read(
                conn: &mut <$db as sqlx::Database>::Connection,
                devices: &mut HashMap<String, Vec<(i64, i64)>>,
                ops: &[(usize, &DeviceRef, &Vec<MsgId>)],
                outcomes: &mut [Option<OpOutcome>],
                rows: &mut Vec<NewRow>,
                now: UnixMillis,
            ) -> StoreResult<()> {
                let pairs: Vec<(i64, &str)> = dedup(
                    ops.iter()
                        .flat_map(|(_, d, ids)| ids.iter().map(move |id| (*id as i64, d.user.as_str()))),
                );
                let mut found: HashMap<(i64, String), StatusJoin> = HashMap::new();
                for chunk in padded_pieces(&pairs) {
                    let chunk = chunk.as_slice();
                    // 1:1 messages to the reader: the state is in the message row.
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "SELECT msg_id, conv_id AS user_id, delivered_at, read_at, sender_user, client_id, conv_kind, conv_id
                         FROM chat_messages WHERE conv_kind = 'u' AND sender_user <> conv_id AND ",
                    );
                    push_or_rows!(qb, chunk, |(m, u)| "msg_id" = *m, "conv_id" = *u);
                    let ret: Vec<StatusJoin> = qb.build_query_as().fetch_all(&mut *conn).await?;
                    for r in ret {
                        found.insert((r.msg_id, r.user_id.clone()), r);
                    }
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "SELECT s.msg_id, s.user_id, s.delivered_at, s.read_at, m.sender_user, m.client_id, m.conv_kind, m.conv_id
                         FROM chat_status s JOIN chat_messages m ON m.msg_id = s.msg_id WHERE ",
                    );
                    push_or_rows!(qb, chunk, |(m, u)| "s.msg_id" = *m, "s.user_id" = *u);
                    let ret: Vec<StatusJoin> = qb.build_query_as().fetch_all(&mut *conn).await?;
                    for r in ret {
                        found.insert((r.msg_id, r.user_id.clone()), r);
                    }
                }
                let reader_device = answer_reads(ops, &found, outcomes);
                let (direct, grouped): (Vec<_>, Vec<_>) = found
                    .values()
                    .filter(|r| r.read_at.is_none())
                    .partition(|r| r.is_direct());
                let direct: Vec<(i64, String)> = direct.into_iter().map(|r| (r.msg_id, r.user_id.clone())).collect();
                let grouped: Vec<(i64, String)> = grouped.into_iter().map(|r| (r.msg_id, r.user_id.clone())).collect();
                let mut marked = Self::mark_direct(conn, Mark::Read, &direct, now).await?;
                for chunk in padded_pieces(&grouped) {
                    let chunk = chunk.as_slice();
                    let mut qb = sqlx::QueryBuilder::<$db>::new("UPDATE chat_status SET read_at = ");
                    qb.push_bind(now);
                    qb.push(", delivered_at = COALESCE(delivered_at, ");
                    qb.push_bind(now);
                    qb.push(") WHERE read_at IS NULL AND ");
                    push_or_rows!(qb, chunk, |(m, u)| "msg_id" = *m, "user_id" = u.as_str());
                    qb.push(" RETURNING msg_id, user_id");
                    let ret: Vec<(i64, String)> = qb.build_query_as().fetch_all(&mut *conn).await?;
                    marked.extend(ret);
                }
                marked.sort();
                let users: Vec<String> = marked
                    .iter()
                    .filter_map(|k| found.get(k))
                    .flat_map(|r| [r.sender_user.clone(), r.user_id.clone()])
                    .collect();
                Self::devices_of(conn, devices, &users).await?;
                for key in &marked {
                    let Some(r) = found.get(key) else { continue };
                    read_rows(r, reader_device.get(key).copied(), devices, now, rows);
                }
                Ok(())
            }

            async fn commit_acks(
                conn: &mut <$db as sqlx::Database>::Connection,
                ops: &[(usize, &DeviceRef, &Vec<ReceiptId>)],
                outcomes: &mut [Option<OpOutcome>],
            ) -> StoreResult<()> {
                let triples: Vec<(i64, &str, i64)> = dedup(ops.iter().flat_map(|(_, d, ids)| {
                    ids.iter().map(move |id| (*id as i64, d.user.as_str(), i64::from(d.device)))
                }));
                let mut deleted: HashSet<(i64, String, i64)> = HashSet::new();
                for chunk in padded_pieces(&triples) {
                    let chunk = chunk.as_slice();
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "DELETE FROM chat_queue WHERE kind <> 0 AND ",
                    );
                    push_or_rows!(qb, chunk, |(s, u, d)| "seq" = *s, "user_id" = *u, "device_id" = *d);
                    qb.push(" RETURNING seq, user_id, device_id");
                    let ret: Vec<(i64, String, i64)> = qb.build_query_as().fetch_all(&mut *conn).await?;
                    deleted.extend(ret);
                }
                for (i, d, ids) in ops {
                    let unknown = dedup(ids.iter().copied())
                        .into_iter()
                        .filter(|id| !deleted.contains(&(*id as i64, d.user.0.clone(), i64::from(d.device))))
                        .collect();
                    outcomes[*i] = Some(OpOutcome::Unknown(unknown));
                }
                Ok(())
            }

            async fn member_role(
                conn: &mut <$db as sqlx::Database>::Connection,
                group_id: &str,
                user: &str,
            ) -> StoreResult<Option<bool>> {
                Ok(sqlx::query_scalar::<_, bool>(
                    "SELECT admin FROM chat_group_members WHERE group_id = $1 AND user_id = $2",
                )
                .bind(group_id)
                .bind(user)
                .fetch_optional(&mut *conn)
                .await?)
            }
        }

        #[async_trait]
        impl MessageStore for $store {
            fn wants_writer_thread(&self) -> bool {
                // sqlx runs each SQLite connection on a worker thread of its
                // own; PostgreSQL sockets belong to the runtime that opened them.
                stringify!($variant) == "Sqlite"
            }

            async fn migrate(&self) -> StoreResult<()> {
                let db = Db::$variant(self.pool.clone());
                natter_common::run_migrations!(
                    &db,
                    "migrations/sqlite",
                    "migrations/postgres",
                    released: &super::RELEASED_POSTGRES_MIGRATIONS
                )
                .map_err(|e| StoreError(sqlx::Error::Migrate(Box::new(e))))
            }

            async fn commit(&self, ops: &[BatchOp], now: UnixMillis, ttl_ms: i64, _max_group: u32) -> StoreResult<Committed> {
                if let Some(direct) = self.direct_writer().await? {
                    return direct.commit(ops, now, ttl_ms);
                }
                let mut tx = self.pool.begin_write().await?;
                let mut outcomes: Vec<Option<OpOutcome>> = vec![None; ops.len()];
                let mut rows: Vec<NewRow> = Vec::new();
                let mut devices: HashMap<String, Vec<(i64, i64)>> = HashMap::new();
                let SortedOps { sends, delivered, reads, acks } = SortedOps::of(ops);
                if !sends.is_empty() {
                    Self::commit_sends(&mut *tx, &mut devices, &sends, &mut outcomes, &mut rows, now, ttl_ms).await?;
                }
                if !delivered.is_empty() {
                    Self::commit_delivered(&mut *tx, &mut devices, &delivered, &mut outcomes, &mut rows, now).await?;
                }
                if !reads.is_empty() {
                    Self::commit_read(&mut *tx, &mut devices, &reads, &mut outcomes, &mut rows, now).await?;
                }
                if !acks.is_empty() {
                    Self::commit_acks(&mut *tx, &acks, &mut outcomes).await?;
                }
                let queued = Self::insert_rows(&mut *tx, rows, now).await?;
                let finishing = std::time::Instant::now();
                tx.commit().await?;
                // The durable part (WAL write + fsync), apart from building the batch.
                metrics::histogram!("chat_commit_finish_seconds").record(finishing.elapsed().as_secs_f64());
                let outcomes = outcomes
                    .into_iter()
                    .map(|o| o.unwrap_or(OpOutcome::Unknown(Vec::new())))
                    .collect();
                Ok(Committed { outcomes, queued })
            }

            async fn commit_group(
                &self,
                change: &GroupChange,
                now: UnixMillis,
                ttl_ms: i64,
                max_group: u32,
            ) -> StoreResult<(GroupOutcome, Vec<Queued>)> {
                let mut tx = self.pool.begin_write().await?;
                let gid = change.group_id().as_str().to_owned();
                let mut extra_audience: Vec<String> = Vec::new();
                let (by, event) = match change {
                    GroupChange::Create { name, by, members, .. } => {
                        let all: Vec<String> = dedup(std::iter::once(by.0.clone()).chain(members.iter().map(|u| u.0.clone())));
                        let known = Self::existing_users(&mut *tx, &all).await?;
                        let unknown: Vec<UserId> = all.iter().filter(|u| !known.contains(*u)).map(|u| UserId(u.clone())).collect();
                        if !unknown.is_empty() {
                            return Ok((GroupOutcome::UnknownUsers(unknown), vec![]));
                        }
                        if all.len() > max_group as usize {
                            return Ok((GroupOutcome::Full { limit: max_group }, vec![]));
                        }
                        let created = sqlx::query(
                            "INSERT INTO chat_groups (group_id, name, created_by, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (group_id) DO NOTHING",
                        )
                        .bind(&gid)
                        .bind(name)
                        .bind(by.as_str())
                        .bind(now)
                        .execute(&mut *tx)
                        .await?
                        .rows_affected();
                        if created == 0 {
                            return Ok((GroupOutcome::Exists, vec![]));
                        }
                        let mut qb = sqlx::QueryBuilder::<$db>::new("INSERT INTO chat_group_members (group_id, user_id, admin, added_at) ");
                        qb.push_values(&all, |mut b, u| {
                            b.push_bind(gid.as_str()).push_bind(u.as_str()).push_bind(*u == by.0).push_bind(now);
                        });
                        qb.build().execute(&mut *tx).await?;
                        let mut sorted = all.clone();
                        sorted.sort();
                        (by, SystemEvent::GroupCreated { name: name.clone(), members: sorted.into_iter().map(UserId).collect() })
                    }
                    GroupChange::Rename { by, name, .. } => {
                        match Self::member_role(&mut *tx, &gid, by.as_str()).await? {
                            _ if Self::load_group(&mut *tx, &gid).await?.is_none() => return Ok((GroupOutcome::NotFound, vec![])),
                            None => return Ok((GroupOutcome::NotMember, vec![])),
                            Some(false) => return Ok((GroupOutcome::NotAdmin, vec![])),
                            Some(true) => {}
                        }
                        sqlx::query("UPDATE chat_groups SET name = $2 WHERE group_id = $1")
                            .bind(&gid)
                            .bind(name)
                            .execute(&mut *tx)
                            .await?;
                        (by, SystemEvent::GroupRenamed { name: name.clone() })
                    }
                    GroupChange::AddMembers { by, users, .. } => {
                        let Some(group) = Self::load_group(&mut *tx, &gid).await? else {
                            return Ok((GroupOutcome::NotFound, vec![]));
                        };
                        match group.members.iter().find(|m| m.user_id == *by) {
                            None => return Ok((GroupOutcome::NotMember, vec![])),
                            Some(m) if !m.admin => return Ok((GroupOutcome::NotAdmin, vec![])),
                            Some(_) => {}
                        }
                        let wanted: Vec<String> = dedup(users.iter().map(|u| u.0.clone()));
                        let known = Self::existing_users(&mut *tx, &wanted).await?;
                        let unknown: Vec<UserId> = wanted.iter().filter(|u| !known.contains(*u)).map(|u| UserId(u.clone())).collect();
                        if !unknown.is_empty() {
                            return Ok((GroupOutcome::UnknownUsers(unknown), vec![]));
                        }
                        let mut new: Vec<String> = wanted
                            .into_iter()
                            .filter(|u| !group.members.iter().any(|m| m.user_id.0 == *u))
                            .collect();
                        new.sort();
                        if new.is_empty() {
                            return Ok((GroupOutcome::Done(Some(group)), vec![]));
                        }
                        if group.members.len() + new.len() > max_group as usize {
                            return Ok((GroupOutcome::Full { limit: max_group }, vec![]));
                        }
                        let mut qb = sqlx::QueryBuilder::<$db>::new("INSERT INTO chat_group_members (group_id, user_id, admin, added_at) ");
                        qb.push_values(&new, |mut b, u| {
                            b.push_bind(gid.as_str()).push_bind(u.as_str()).push_bind(false).push_bind(now);
                        });
                        qb.build().execute(&mut *tx).await?;
                        (by, SystemEvent::MembersAdded { users: new.into_iter().map(UserId).collect() })
                    }
                    GroupChange::RemoveMember { by, user, .. } => {
                        let Some(group) = Self::load_group(&mut *tx, &gid).await? else {
                            return Ok((GroupOutcome::NotFound, vec![]));
                        };
                        let Some(actor) = group.members.iter().find(|m| m.user_id == *by) else {
                            return Ok((GroupOutcome::NotMember, vec![]));
                        };
                        let leaving = by == user;
                        if !leaving && !actor.admin {
                            return Ok((GroupOutcome::NotAdmin, vec![]));
                        }
                        let Some(target) = group.members.iter().find(|m| m.user_id == *user) else {
                            return Ok((GroupOutcome::UserNotMember, vec![]));
                        };
                        sqlx::query("DELETE FROM chat_group_members WHERE group_id = $1 AND user_id = $2")
                            .bind(&gid)
                            .bind(user.as_str())
                            .execute(&mut *tx)
                            .await?;
                        let remaining: Vec<&Member> = group.members.iter().filter(|m| m.user_id != *user).collect();
                        if remaining.is_empty() {
                            sqlx::query("DELETE FROM chat_groups WHERE group_id = $1").bind(&gid).execute(&mut *tx).await?;
                            tx.commit().await?;
                            return Ok((GroupOutcome::Done(None), vec![]));
                        }
                        if target.admin && !remaining.iter().any(|m| m.admin) {
                            // A group always keeps an admin: the longest-standing member takes over.
                            let heir = remaining.iter().min_by_key(|m| (m.added_at, m.user_id.0.clone())).map(|m| m.user_id.0.clone());
                            sqlx::query("UPDATE chat_group_members SET admin = TRUE WHERE group_id = $1 AND user_id = $2")
                                .bind(&gid)
                                .bind(heir)
                                .execute(&mut *tx)
                                .await?;
                        }
                        extra_audience.push(user.0.clone());
                        let ev = if leaving {
                            SystemEvent::MemberLeft { user: user.clone() }
                        } else {
                            SystemEvent::MemberRemoved { user: user.clone() }
                        };
                        (by, ev)
                    }
                    GroupChange::SetAdmin { by, user, admin, .. } => {
                        let Some(group) = Self::load_group(&mut *tx, &gid).await? else {
                            return Ok((GroupOutcome::NotFound, vec![]));
                        };
                        match group.members.iter().find(|m| m.user_id == *by) {
                            None => return Ok((GroupOutcome::NotMember, vec![])),
                            Some(m) if !m.admin => return Ok((GroupOutcome::NotAdmin, vec![])),
                            Some(_) => {}
                        }
                        let Some(target) = group.members.iter().find(|m| m.user_id == *user) else {
                            return Ok((GroupOutcome::UserNotMember, vec![]));
                        };
                        let admins = group.members.iter().filter(|m| m.admin).count();
                        if target.admin == *admin || (!admin && admins == 1) {
                            // Nothing changes (a group never loses its last admin this way).
                            return Ok((GroupOutcome::Done(Some(group)), vec![]));
                        }
                        sqlx::query("UPDATE chat_group_members SET admin = $3 WHERE group_id = $1 AND user_id = $2")
                            .bind(&gid)
                            .bind(user.as_str())
                            .bind(*admin)
                            .execute(&mut *tx)
                            .await?;
                        let ev = if *admin {
                            SystemEvent::AdminAdded { user: user.clone() }
                        } else {
                            SystemEvent::AdminRemoved { user: user.clone() }
                        };
                        (by, ev)
                    }
                };
                let Some(group) = Self::load_group(&mut *tx, &gid).await? else {
                    return Ok((GroupOutcome::NotFound, vec![]));
                };
                let msg = NewMessage {
                    sender: by.clone(),
                    sender_device: 0,
                    sender_generation: 0,
                    client_id: new_system_client_id(),
                    to: Target::Group(GroupId(gid.clone())),
                    kind: Kind::new(Kind::SYSTEM),
                    body: Vec::new(),
                    system: Some(event),
                };
                let audience: Vec<String> = group.members.iter().map(|m| m.user_id.0.clone()).chain(extra_audience).collect();
                let out = [Outgoing { op: 0, msg: &msg, audience, status_for: vec![] }];
                let mut devices = HashMap::new();
                let mut rows = Vec::new();
                Self::insert_messages(&mut *tx, &mut devices, &out, now, ttl_ms, &mut rows).await?;
                let queued = Self::insert_rows(&mut *tx, rows, now).await?;
                let finishing = std::time::Instant::now();
                tx.commit().await?;
                // The durable part (WAL write + fsync), apart from building the batch.
                metrics::histogram!("chat_commit_finish_seconds").record(finishing.elapsed().as_secs_f64());
                Ok((GroupOutcome::Done(Some(group)), queued))
            }

            async fn fetch(&self, dev: &DeviceRef, after_seq: i64, limit: u32) -> StoreResult<Vec<Queued>> {
                let rows = sqlx::query_as::<_, QueueRow>(sqlx::AssertSqlSafe(format!(
                    "{QUEUE_SELECT} WHERE q.user_id = $1 AND q.device_id = $2 AND q.generation = $3 AND q.seq > $4 ORDER BY q.seq LIMIT $5"
                )))
                .bind(dev.user.as_str())
                .bind(i64::from(dev.device))
                .bind(dev.generation)
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
                Ok(rows.into_iter().map(QueueRow::into_queued).collect())
            }

            async fn pending(&self, dev: &DeviceRef, filter: &PendingFilter) -> StoreResult<Vec<Message>> {
                let mut qb = sqlx::QueryBuilder::<$db>::new(QUEUE_SELECT);
                qb.push(" WHERE q.kind = 0 AND q.user_id = ");
                qb.push_bind(dev.user.as_str());
                qb.push(" AND q.device_id = ");
                qb.push_bind(i64::from(dev.device));
                qb.push(" AND q.generation = ");
                qb.push_bind(dev.generation);
                if let Some(since) = filter.since {
                    qb.push(" AND m.created_at >= ");
                    qb.push_bind(since);
                }
                if let Some(until) = filter.until {
                    qb.push(" AND m.created_at < ");
                    qb.push_bind(until);
                }
                match &filter.conversation {
                    Some(Target::Group(g)) => {
                        qb.push(" AND m.conv_kind = 'g' AND m.conv_id = ");
                        qb.push_bind(g.as_str());
                    }
                    Some(Target::User(u)) => {
                        qb.push(" AND m.conv_kind = 'u' AND ((m.sender_user = ");
                        qb.push_bind(u.as_str());
                        qb.push(" AND m.conv_id = ");
                        qb.push_bind(dev.user.as_str());
                        qb.push(") OR (m.sender_user = ");
                        qb.push_bind(dev.user.as_str());
                        qb.push(" AND m.conv_id = ");
                        qb.push_bind(u.as_str());
                        qb.push("))");
                    }
                    None => {}
                }
                qb.push(" ORDER BY q.seq LIMIT ");
                qb.push_bind(i64::from(filter.limit));
                let rows: Vec<QueueRow> = qb.build_query_as().fetch_all(&self.pool).await?;
                Ok(rows.iter().map(QueueRow::message).collect())
            }

            async fn message_status(&self, msg_id: MsgId) -> StoreResult<Option<MessageStatus>> {
                let row: Option<(String, String, String, String, i64, i64)> = sqlx::query_as(
                    "SELECT sender_user, client_id, conv_kind, conv_id, created_at, expires_at FROM chat_messages WHERE msg_id = $1",
                )
                .bind(msg_id as i64)
                .fetch_optional(&self.pool)
                .await?;
                let Some((sender, client_id, ck, cid, created_at, expires_at)) = row else {
                    return Ok(None);
                };
                let pending_devices: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM chat_queue WHERE msg_id = $1 AND kind = 0")
                    .bind(msg_id as i64)
                    .fetch_one(&self.pool)
                    .await?;
                // A 1:1 message's recipient state is in its own row; a group's in chat_status.
                let recipients: Vec<(String, Option<i64>, Option<i64>)> = sqlx::query_as(
                    "SELECT conv_id, delivered_at, read_at FROM chat_messages
                      WHERE msg_id = $1 AND conv_kind = 'u' AND sender_user <> conv_id
                     UNION ALL
                     SELECT user_id, delivered_at, read_at FROM chat_status WHERE msg_id = $1
                     ORDER BY 1",
                )
                .bind(msg_id as i64)
                .fetch_all(&self.pool)
                .await?;
                Ok(Some(MessageStatus {
                    msg_id,
                    id: ClientMsgId(client_id),
                    sender: UserId(sender),
                    to: target_from(&ck, cid),
                    created_at,
                    expires_at,
                    pending_devices,
                    recipients: recipients
                        .into_iter()
                        .map(|(u, d, r)| RecipientStatus { user_id: UserId(u), delivered_at: d, read_at: r })
                        .collect(),
                }))
            }

            async fn device_generation(&self, user: &UserId, device: DeviceId) -> StoreResult<Option<i64>> {
                Ok(sqlx::query_scalar("SELECT generation FROM devices WHERE user_id = $1 AND device_id = $2")
                    .bind(user.as_str())
                    .bind(i64::from(device))
                    .fetch_optional(&self.pool)
                    .await?)
            }

            async fn stale_devices(&self, devs: &[DeviceRef]) -> StoreResult<Vec<DeviceRef>> {
                let mut conn = self.pool.acquire().await?;
                let mut cache = HashMap::new();
                let users: Vec<String> = devs.iter().map(|d| d.user.0.clone()).collect();
                Self::devices_of(&mut *conn, &mut cache, &users).await?;
                Ok(devs
                    .iter()
                    .filter(|d| {
                        !cache
                            .get(&d.user.0)
                            .is_some_and(|v| v.contains(&(i64::from(d.device), d.generation)))
                    })
                    .cloned()
                    .collect())
            }

            async fn user_exists(&self, user: &UserId) -> StoreResult<bool> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE user_id = $1")
                    .bind(user.as_str())
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n > 0)
            }

            async fn group(&self, group_id: &GroupId) -> StoreResult<Option<GroupInfo>> {
                let mut conn = self.pool.acquire().await?;
                Self::load_group(&mut *conn, group_id.as_str()).await
            }

            async fn groups_of(&self, user: &UserId) -> StoreResult<Vec<GroupInfo>> {
                let mut conn = self.pool.acquire().await?;
                let ids: Vec<String> = sqlx::query_scalar(
                    "SELECT group_id FROM chat_group_members WHERE user_id = $1 ORDER BY group_id",
                )
                .bind(user.as_str())
                .fetch_all(&mut *conn)
                .await?;
                let mut out = Vec::with_capacity(ids.len());
                for id in ids {
                    if let Some(g) = Self::load_group(&mut *conn, &id).await? {
                        out.push(g);
                    }
                }
                Ok(out)
            }

            async fn presence(&self, user: &UserId) -> StoreResult<(PresencePrivacy, Option<UnixMillis>)> {
                let row: Option<(String, Option<i64>)> =
                    sqlx::query_as("SELECT privacy, last_seen_at FROM chat_presence WHERE user_id = $1")
                        .bind(user.as_str())
                        .fetch_optional(&self.pool)
                        .await?;
                Ok(match row {
                    None => (PresencePrivacy::Everyone, None),
                    Some((p, seen)) => (
                        serde_json::from_value(serde_json::Value::String(p)).unwrap_or(PresencePrivacy::Everyone),
                        seen,
                    ),
                })
            }

            async fn set_privacy(&self, user: &UserId, privacy: PresencePrivacy) -> StoreResult<()> {
                let p = match privacy {
                    PresencePrivacy::Everyone => "everyone",
                    PresencePrivacy::Contacts => "contacts",
                    PresencePrivacy::Nobody => "nobody",
                };
                sqlx::query(
                    "INSERT INTO chat_presence (user_id, privacy) VALUES ($1, $2) ON CONFLICT (user_id) DO UPDATE SET privacy = excluded.privacy",
                )
                .bind(user.as_str())
                .bind(p)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn save_last_seen(&self, seen: &[(UserId, UnixMillis)]) -> StoreResult<()> {
                if seen.is_empty() {
                    return Ok(());
                }
                let mut tx = self.pool.begin_write().await?;
                for chunk in pieces(&seen) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new("INSERT INTO chat_presence (user_id, last_seen_at) ");
                    qb.push_values(chunk, |mut b, (u, t)| {
                        b.push_bind(u.as_str()).push_bind(*t);
                    });
                    qb.push(" ON CONFLICT (user_id) DO UPDATE SET last_seen_at = excluded.last_seen_at");
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn set_contacts(&self, user: &UserId, contacts: &[UserId]) -> StoreResult<()> {
                let mut tx = self.pool.begin_write().await?;
                sqlx::query("DELETE FROM chat_contacts WHERE user_id = $1")
                    .bind(user.as_str())
                    .execute(&mut *tx)
                    .await?;
                let contacts = dedup(contacts.iter().map(|c| c.0.clone()));
                for chunk in pieces(&contacts) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new("INSERT INTO chat_contacts (user_id, contact_id) ");
                    qb.push_values(chunk, |mut b, c| {
                        b.push_bind(user.as_str()).push_bind(c.as_str());
                    });
                    qb.build().execute(&mut *tx).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn contacts(&self, user: &UserId) -> StoreResult<Vec<UserId>> {
                let rows: Vec<String> =
                    sqlx::query_scalar("SELECT contact_id FROM chat_contacts WHERE user_id = $1 ORDER BY contact_id")
                        .bind(user.as_str())
                        .fetch_all(&self.pool)
                        .await?;
                Ok(rows.into_iter().map(UserId).collect())
            }

            async fn is_contact(&self, user: &UserId, other: &UserId) -> StoreResult<bool> {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM chat_contacts WHERE user_id = $1 AND contact_id = $2")
                    .bind(user.as_str())
                    .bind(other.as_str())
                    .fetch_one(&self.pool)
                    .await?;
                Ok(n > 0)
            }

            async fn set_push_token(&self, dev: &DeviceRef, token: &PushToken, now: UnixMillis) -> StoreResult<()> {
                sqlx::query(
                    "INSERT INTO chat_push_tokens (user_id, device_id, generation, platform, token, voip_token, updated_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (user_id, device_id) DO UPDATE SET generation = excluded.generation, platform = excluded.platform,
                     token = excluded.token, voip_token = excluded.voip_token, updated_at = excluded.updated_at",
                )
                .bind(dev.user.as_str())
                .bind(i64::from(dev.device))
                .bind(dev.generation)
                .bind(&token.platform)
                .bind(&token.token)
                .bind(token.voip_token.as_deref())
                .bind(now)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn delete_push_token(&self, user: &UserId, device: DeviceId) -> StoreResult<bool> {
                let n = sqlx::query("DELETE FROM chat_push_tokens WHERE user_id = $1 AND device_id = $2")
                    .bind(user.as_str())
                    .bind(i64::from(device))
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                Ok(n > 0)
            }

            async fn forget_dead_push_token(&self, user: &UserId, device: DeviceId, token: &str) -> StoreResult<bool> {
                let whole = sqlx::query("DELETE FROM chat_push_tokens WHERE user_id = $1 AND device_id = $2 AND token = $3")
                    .bind(user.as_str())
                    .bind(i64::from(device))
                    .bind(token)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                if whole > 0 {
                    return Ok(true);
                }
                let voip = sqlx::query(
                    "UPDATE chat_push_tokens SET voip_token = NULL WHERE user_id = $1 AND device_id = $2 AND voip_token = $3",
                )
                .bind(user.as_str())
                .bind(i64::from(device))
                .bind(token)
                .execute(&self.pool)
                .await?
                .rows_affected();
                Ok(voip > 0)
            }

            async fn push_tokens(&self, devs: &[DeviceRef]) -> StoreResult<Vec<(DeviceRef, PushToken)>> {
                let mut out = Vec::new();
                for chunk in pieces(&devs) {
                    let mut qb = sqlx::QueryBuilder::<$db>::new(
                        "SELECT user_id, device_id, generation, platform, token, voip_token FROM chat_push_tokens WHERE ",
                    );
                    push_or_rows!(qb, chunk, |d| "user_id" = d.user.as_str(), "device_id" = i64::from(d.device),
                        "generation" = d.generation);
                    let rows: Vec<(String, i64, i64, String, String, Option<String>)> =
                        qb.build_query_as().fetch_all(&self.pool).await?;
                    out.extend(rows.into_iter().map(|(u, d, g, platform, token, voip_token)| {
                        (DeviceRef { user: UserId(u), device: d as DeviceId, generation: g }, PushToken { platform, token, voip_token })
                    }));
                }
                Ok(out)
            }

            async fn purge(&self, now: UnixMillis) -> StoreResult<Purged> {
                let messages = sqlx::query("DELETE FROM chat_messages WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await?
                    .rows_affected();
                let orphan_queue = sqlx::query(
                    "DELETE FROM chat_queue WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.user_id = chat_queue.user_id
                     AND d.device_id = chat_queue.device_id AND d.generation = chat_queue.generation)",
                )
                .execute(&self.pool)
                .await?
                .rows_affected();
                if orphan_queue > 0 {
                    sqlx::query(
                        "UPDATE chat_messages SET body = NULL WHERE body IS NOT NULL AND NOT EXISTS
                         (SELECT 1 FROM chat_queue q WHERE q.msg_id = chat_messages.msg_id AND q.kind = 0)",
                    )
                    .execute(&self.pool)
                    .await?;
                }
                sqlx::query(
                    "DELETE FROM chat_push_tokens WHERE NOT EXISTS (SELECT 1 FROM devices d WHERE d.user_id = chat_push_tokens.user_id
                     AND d.device_id = chat_push_tokens.device_id AND d.generation = chat_push_tokens.generation)",
                )
                .execute(&self.pool)
                .await?;
                Ok(Purged { messages, orphan_queue })
            }
        }
    };
}

sql_store!(SqliteStore, sqlx::Sqlite, Sqlite);
sql_store!(PgStore, sqlx::Postgres, Postgres);

#[cfg(test)]
mod tests {
    #[test]
    fn pieces_use_few_shapes_and_cover_everything() {
        let v: Vec<u32> = (0..1000).collect();
        let p = super::pieces(&v);
        assert_eq!(
            p.iter().map(|s| s.len()).collect::<Vec<_>>(),
            vec![256, 256, 256, 64, 64, 64, 16, 16, 4, 4]
        );
        assert_eq!(p.concat(), v);
        assert!(super::pieces::<u32>(&[]).is_empty());
        assert_eq!(super::pieces(&[1, 2, 3]).len(), 3);
    }

    #[test]
    fn padded_pieces_are_one_shape_each_and_repeat_only_the_last_key() {
        let v: Vec<u32> = (0..300).collect();
        let p = super::padded_pieces(&v);
        assert_eq!(p.iter().map(Vec::len).collect::<Vec<_>>(), vec![256, 64]);
        assert_eq!(p[0], (0..256).collect::<Vec<u32>>());
        assert_eq!(&p[1][..44], &(256..300).collect::<Vec<u32>>()[..]);
        assert!(p[1][44..].iter().all(|x| *x == 299));
        assert_eq!(super::padded_pieces(&[7u32]), vec![vec![7]]);
        assert_eq!(super::padded_pieces(&[1u32, 2]), vec![vec![1, 2, 2, 2]]);
        assert!(super::padded_pieces::<u32>(&[]).is_empty());
    }
}
