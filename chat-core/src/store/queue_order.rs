//! Per-device queue order when several chat-core nodes write to one database.
//!
//! Queue sequence numbers come from one identity column, so two transactions
//! on different nodes can take 10 and 11 and commit 11 first. A session that
//! saw 11 would then skip 10 (it reads "after its cursor"). To keep each
//! device's sequence numbers in commit order, every transaction that appends
//! to a queue first takes transaction-scoped advisory locks on the devices'
//! stripes (sorted, so two writers never wait on each other in a cycle), and
//! only then draws sequence numbers: a later writer for the same device waits
//! for the earlier one's commit and so draws larger numbers.
//!
//! Under the same locks it reads each device's newest existing entry, which
//! becomes the `prev` of the first new one: a node that receives live
//! deliveries out of order (they travel over different connections) sees the
//! gap and reads the queue instead of skipping an entry.
//!
//! SQLite needs neither: one process owns the file and its single writer task
//! already commits in sequence order.

use super::StoreResult;
use super::sql::{PgStore, SqliteStore};
use std::collections::HashMap;

/// Newest existing entry per (user, device), for the devices a commit appends to.
pub(super) type PrevSeqs = Option<HashMap<(String, i64), i64>>;

/// Advisory-lock namespace (the two-int form; sqlx's migration lock uses the
/// one-bigint form, a separate key space). "NT" in ASCII.
const LOCK_CLASS: i32 = 0x4e54;

/// Stripes of devices: enough that unrelated devices rarely share a lock, few
/// enough that a large fan-out stays far below PostgreSQL's lock table
/// (max_locks_per_transaction × max_connections, 6,400 by default).
const STRIPES: u32 = 1024;

/// FNV-1a: stable across processes and versions (std's hasher is neither).
fn stripe(user: &str, device: i64) -> i32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in user.bytes().chain(device.to_le_bytes()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    (h % STRIPES) as i32
}

impl SqliteStore {
    pub(super) async fn order_queues(
        _conn: &mut sqlx::SqliteConnection,
        _devices: &[(&str, i64, i64)],
    ) -> StoreResult<PrevSeqs> {
        Ok(None)
    }
}

impl PgStore {
    /// Locks the devices' stripes, then reads their newest entries. Two
    /// statements on purpose: under READ COMMITTED each statement reads a new
    /// snapshot, and the read must see what the lock's previous holder committed.
    pub(super) async fn order_queues(
        conn: &mut sqlx::PgConnection,
        devices: &[(&str, i64, i64)],
    ) -> StoreResult<PrevSeqs> {
        if devices.is_empty() {
            return Ok(Some(HashMap::new()));
        }
        let mut stripes: Vec<i32> = devices.iter().map(|(u, d, _)| stripe(u, *d)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        // unnest yields the array in order, so locks are taken in sorted order.
        sqlx::query("SELECT pg_advisory_xact_lock($1, s) FROM unnest($2::int4[]) AS s")
            .bind(LOCK_CLASS)
            .bind(&stripes)
            .execute(&mut *conn)
            .await?;
        let users: Vec<String> = devices.iter().map(|(u, _, _)| (*u).to_owned()).collect();
        let ids: Vec<i64> = devices.iter().map(|(_, d, _)| *d).collect();
        let gens: Vec<i64> = devices.iter().map(|(_, _, g)| *g).collect();
        let rows: Vec<(String, i64, Option<i64>)> = sqlx::query_as(
            "SELECT k.u, k.d, (SELECT max(q.seq) FROM chat_queue q
                               WHERE q.user_id = k.u AND q.device_id = k.d AND q.generation = k.g)
             FROM unnest($1::text[], $2::int8[], $3::int8[]) AS k(u, d, g)",
        )
        .bind(&users)
        .bind(&ids)
        .bind(&gens)
        .fetch_all(&mut *conn)
        .await?;
        Ok(Some(
            rows.into_iter()
                .map(|(u, d, s)| ((u, d), s.unwrap_or(0)))
                .collect(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stripes_are_stable_and_in_range() {
        assert_eq!(stripe("alice", 1), stripe("alice", 1));
        assert_ne!(stripe("alice", 1), stripe("alice", 2));
        for i in 0..1000 {
            let s = stripe(&format!("u{i}"), i);
            assert!((0..STRIPES as i32).contains(&s));
        }
    }
}
