//! The Redis-backed cluster: registry, heartbeats and the frame bus.
//!
//! Keys (all under `redis.key_prefix`):
//! - `u:{user}`: hash, device id → `node|conn|since` for each connected device.
//! - `nodes`: sorted set, node → last heartbeat (ms). A node silent for
//!   `node_ttl_ms` is gone: its devices count as offline (presence, push),
//!   though records for them are still published to its channel in case it is
//!   only late (entries are overwritten when its devices reconnect elsewhere).
//! - channel `n:{node}`: records for sockets on that node (see `wire`).
//! - channel `presence`: online/offline transitions, for every node.
//! - channel `limits`: what each node let through of the per-account limits,
//!   for the others to charge (see `crate::account_limits`).
//! - `calls-leader`: the node that runs call signaling for the cluster (set
//!   with a TTL of `node_ttl_ms`, renewed by its holder every heartbeat, taken
//!   by another node's heartbeat once it lapses). Others forward their
//!   devices' call events to it (`Header::Call` on its channel).
//!
//! Pub/sub rather than NATS: Redis is already required for the registry, and
//! losing a bus message is harmless by design (the queue is the truth, and a
//! session that misses a delivery reads its queue), so NATS' extra guarantees
//! would buy nothing for one more server to run. See docs/scaling.md.
//!
//! Recovery: any failed Redis call marks the node dirty. Its next successful
//! heartbeat, or a heartbeat that finds Redis forgot this node (restarted
//! empty), rewrites every local socket's entry and tells every local session to
//! read its queue again. A re-established bus subscription does the same, since
//! records published meanwhile are gone.

use super::jobs::{JobQueue, JobReceiver, Weight, job_queue};
use super::wire::{self, Header};
use super::{Cluster, ClusterHost, RedisConfig};
use crate::account_limits;
use crate::call_event::CallEvent;
use crate::hub::{Hub, LocalConn};
use crate::pipeline::ItemRef;
use crate::push::push_if_due;
use crate::push::{PushNotice, PushWindows};
use crate::store::{Queued, QueuedFrame};
use async_trait::async_trait;
use futures_util::StreamExt;
use natter_common::parts::Part;
use natter_common::{SharedClock, UnixMillis};
use natter_proto::{CloseCode, DeviceId, UserId};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Sets the device's entry, returns the previous one and the whole hash.
const CLAIM: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return {old or '', redis.call('HGETALL', KEYS[1])}
";

/// Keeps or takes the calls leadership: renews it for its holder, takes it
/// when nobody holds it; returns the holder.
const ELECT: &str = r"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] or not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return cur
";

/// Gives the calls leadership up, if held by ARGV[1].
const RESIGN: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Deletes the device's entry if it is still ours; returns what is left.
const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return redis.call('HGETALL', KEYS[1])
";

/// Rebuild: writes our entry unless a newer socket of the device (larger
/// `since`) holds it; returns the previous entry.
const REASSERT: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and old ~= ARGV[2] then
  local s = tonumber(string.match(old, '|(%d+)$'))
  if s and s > tonumber(ARGV[4]) then return old end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return old or ''
";

/// Records (jobs) the dispatcher takes per wake-up: bounds one pipeline.
const MAX_JOBS_PER_ROUND: usize = 2048;

/// How long a failed dispatch round is retried (covers a Redis restart).
const DISPATCH_RETRY_LIMIT: Duration = Duration::from_secs(10);

/// Work for the dispatcher task, which owns the ordering of bus messages.
enum Job {
    Forward(Vec<Queued>, UnixMillis),
    Frame(UserId, Option<DeviceId>, Arc<str>),
    Publish(String, String),
}

/// One registry entry.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    node: String,
    conn: u64,
    since: UnixMillis,
}

impl Entry {
    fn parse(s: &str) -> Option<Self> {
        let mut it = s.split('|');
        Some(Self {
            node: it.next()?.to_owned(),
            conn: it.next()?.parse().ok()?,
            since: it.next()?.parse().ok()?,
        })
    }

    fn encode(&self) -> String {
        format!("{}|{}|{}", self.node, self.conn, self.since)
    }
}

/// See the module docs.
pub(crate) struct RedisCluster {
    client: redis::Client,
    conn: ConnectionManager,
    cfg: RedisConfig,
    node: String,
    clock: SharedClock,
    /// Nodes whose heartbeat is older than `node_ttl_ms`. Unknown nodes count
    /// as alive: a node that just started may not be in our view yet.
    dead: RwLock<HashSet<String>>,
    dirty: AtomicBool,
    jobs: JobQueue<Job>,
    jobs_rx: Mutex<Option<JobReceiver<Job>>>,
    claim: redis::Script,
    release: redis::Script,
    elect: redis::Script,
    /// The calls leader, as of the last heartbeat (`None` until known).
    leader: RwLock<Option<String>>,
}

impl RedisCluster {
    /// Connects (failing start-up when Redis is unreachable) and registers
    /// this node with a first heartbeat.
    pub(crate) async fn connect(cfg: &RedisConfig, clock: SharedClock) -> Result<Self, String> {
        cfg.validate()?;
        let client = redis::Client::open(cfg.url.expose())
            .map_err(|e| format!("redis.url: not a valid Redis URL ({:?})", e.kind()))?;
        // Short timeouts and few retries: a call that cannot reach Redis marks
        // the node dirty and moves on; the heartbeat repairs state later.
        let mcfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = client
            .get_connection_manager_with_config(mcfg)
            .await
            .map_err(|e| format!("redis: cannot connect: {e}"))?;
        let node = if cfg.node_id.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            cfg.node_id.clone()
        };
        if node.contains('|') {
            return Err("redis.node_id: must not contain '|'".into());
        }
        let (tx, rx) = job_queue(cfg.shed_ephemeral_at_jobs, cfg.max_waiting_entries);
        let me = Self {
            client,
            conn,
            cfg: cfg.clone(),
            node,
            clock,
            dead: RwLock::new(HashSet::new()),
            dirty: AtomicBool::new(false),
            jobs: tx,
            jobs_rx: Mutex::new(Some(rx)),
            claim: redis::Script::new(CLAIM),
            release: redis::Script::new(RELEASE),
            elect: redis::Script::new(ELECT),
            leader: RwLock::new(None),
        };
        me.beat()
            .await
            .map_err(|e| format!("redis: first heartbeat failed: {e}"))?;
        me.elect_leader()
            .await
            .map_err(|e| format!("redis: calls leader lookup failed: {e}"))?;
        tracing::info!(node = %me.node, "chat: joined the cluster");
        Ok(me)
    }

    fn key(&self, what: &str) -> String {
        format!("{}{what}", self.cfg.key_prefix)
    }

    fn user_key(&self, user: &UserId) -> String {
        self.key(&format!("u:{user}"))
    }

    /// Set while a device's message wake-up window is open.
    fn push_window_key(&self, user: &UserId, device: DeviceId) -> String {
        self.key(&format!("pw:{user}:{device}"))
    }

    fn node_channel(&self, node: &str) -> String {
        self.key(&format!("n:{node}"))
    }

    fn entry_ttl_ms(&self) -> u64 {
        self.cfg.entry_ttl_secs.saturating_mul(1000)
    }

    fn failed(&self, what: &str, e: &redis::RedisError) {
        metrics::counter!("chat_redis_errors_total").increment(1);
        if !self.dirty.swap(true, Ordering::SeqCst) {
            tracing::warn!(error = %e, what, "chat: Redis call failed; state will be rebuilt");
        }
    }

    /// Whether an entry belongs to another live node.
    fn elsewhere(&self, e: &Entry) -> bool {
        e.node != self.node
            && !self
                .dead
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&e.node)
    }

    /// Entries of a flat HGETALL reply (field, value, field, value, …).
    fn entries(flat: &[String]) -> Vec<(DeviceId, Entry)> {
        flat.chunks_exact(2)
            .filter_map(|kv| Some((kv[0].parse().ok()?, Entry::parse(&kv[1])?)))
            .collect()
    }

    fn publish_close(&self, user: &UserId, old: &Entry) {
        let mut payload = String::new();
        let h = Header::Close {
            u: user.clone(),
            conn: old.conn,
            code: CloseCode::Replaced.code(),
        };
        wire::push_record(&mut payload, &h, None);
        self.jobs.push(
            Job::Publish(self.node_channel(&old.node), payload),
            Weight::Durable(1),
        );
    }

    /// Heartbeat: refreshes our score, learns which nodes are gone, and
    /// reports whether Redis had forgotten us (restarted without our state).
    async fn beat(&self) -> redis::RedisResult<bool> {
        let now = self.clock.now_ms();
        let nodes = self.key("nodes");
        let cutoff = now - self.cfg.node_ttl_ms as i64;
        let (score, _, dead, _): (Option<f64>, i64, Vec<String>, i64) = redis::pipe()
            .zscore(&nodes, &self.node)
            .zadd(&nodes, &self.node, now)
            .zrangebyscore(&nodes, "-inf", cutoff)
            // Forget nodes gone for long (their entries are overwritten or expire).
            .zrembyscore(&nodes, "-inf", cutoff - 100 * self.cfg.node_ttl_ms as i64)
            .query_async(&mut self.conn.clone())
            .await?;
        *self.dead.write().unwrap_or_else(|p| p.into_inner()) = dead.into_iter().collect();
        Ok(score.is_none())
    }

    /// Renews or takes the calls leadership, or learns who holds it.
    async fn elect_leader(&self) -> redis::RedisResult<()> {
        let holder: String = self
            .elect
            .key(self.key("calls-leader"))
            .arg(&self.node)
            .arg(self.cfg.node_ttl_ms)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut cur = self.leader.write().unwrap_or_else(|p| p.into_inner());
        if cur.as_deref() != Some(holder.as_str()) {
            tracing::info!(leader = %holder, me = holder == self.node, "chat: calls leader");
            *cur = Some(holder);
        }
        Ok(())
    }

    /// Rewrites every local socket's entry (after Redis lost or missed
    /// updates); settles conflicts with sockets of the same device elsewhere.
    async fn rebuild(&self, hub: &Hub) -> redis::RedisResult<()> {
        let conns = hub.local_conns();
        let started = Instant::now();
        for chunk in conns.chunks(512) {
            let mut pipe = redis::pipe();
            for c in chunk {
                let me = Entry {
                    node: self.node.clone(),
                    conn: c.conn_id,
                    since: c.since,
                };
                pipe.cmd("EVAL")
                    .arg(REASSERT)
                    .arg(1)
                    .arg(self.user_key(&c.user))
                    .arg(c.device)
                    .arg(me.encode())
                    .arg(self.entry_ttl_ms())
                    .arg(c.since);
            }
            let olds: Vec<String> = pipe.query_async(&mut self.conn.clone()).await?;
            for (c, old) in chunk.iter().zip(olds) {
                let Some(old) = Entry::parse(&old) else {
                    continue;
                };
                if old.node == self.node && old.conn == c.conn_id {
                    continue;
                }
                if old.since > c.since && self.elsewhere(&old) {
                    // A newer socket of this device lives on another node.
                    hub.close_conn(&c.user, c.conn_id, CloseCode::Replaced);
                } else if old.node != self.node {
                    self.publish_close(&c.user, &old);
                }
            }
        }
        tracing::info!(
            sockets = conns.len(),
            ms = started.elapsed().as_millis() as u64,
            "chat: registry entries rebuilt"
        );
        Ok(())
    }

    async fn heartbeat_loop(self: Arc<Self>, st: Arc<dyn ClusterHost>) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.heartbeat_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_rebuild = Instant::now();
        loop {
            tokio::select! {
                _ = st.shutdown().cancelled() => break,
                _ = tick.tick() => {}
            }
            let forgotten = match self.beat().await {
                Ok(f) => f,
                Err(e) => {
                    self.failed("heartbeat", &e);
                    continue;
                }
            };
            if let Err(e) = self.elect_leader().await {
                self.failed("calls leader", &e);
            }
            let dirty = self.dirty.swap(false, Ordering::SeqCst);
            let due = last_rebuild.elapsed() >= Duration::from_secs(self.cfg.rebuild_secs);
            if forgotten || dirty || due {
                match self.rebuild(st.hub()).await {
                    Ok(()) => last_rebuild = Instant::now(),
                    Err(e) => {
                        self.failed("rebuild", &e);
                        continue;
                    }
                }
                if forgotten || dirty {
                    // Deliveries routed while the registry was wrong went nowhere.
                    st.hub().resync_all();
                }
            }
        }
        // Leave promptly so others stop routing here (best effort), and let
        // another node take the calls at its next heartbeat.
        let _: redis::RedisResult<i64> = redis::cmd("ZREM")
            .arg(self.key("nodes"))
            .arg(&self.node)
            .query_async(&mut self.conn.clone())
            .await;
        let _: redis::RedisResult<i64> = redis::Script::new(RESIGN)
            .key(self.key("calls-leader"))
            .arg(&self.node)
            .invoke_async(&mut self.conn.clone())
            .await;
    }

    async fn bus_loop(self: Arc<Self>, st: Arc<dyn ClusterHost>) {
        let mine = self.node_channel(&self.node);
        let presence = self.key("presence");
        let limits = self.key("limits");
        let mut first = true;
        let mut backoff = Duration::from_millis(100);
        loop {
            let sub = async {
                let mut ps = self.client.get_async_pubsub().await?;
                ps.subscribe(&mine).await?;
                ps.subscribe(&presence).await?;
                ps.subscribe(&limits).await?;
                Ok::<_, redis::RedisError>(ps)
            };
            let ps = tokio::select! {
                _ = st.shutdown().cancelled() => return,
                r = sub => r,
            };
            match ps {
                Ok(ps) => {
                    if !first {
                        tracing::info!("chat: bus subscription restored");
                        st.hub().resync_all();
                        self.dirty.store(true, Ordering::SeqCst);
                    }
                    first = false;
                    backoff = Duration::from_millis(100);
                    let mut stream = ps.into_on_message();
                    loop {
                        let msg = tokio::select! {
                            _ = st.shutdown().cancelled() => return,
                            m = stream.next() => m,
                        };
                        let Some(msg) = msg else { break };
                        match msg.get_payload::<String>() {
                            Ok(p) if msg.get_channel_name() == limits => {
                                self.handle_limits(&*st, &p)
                            }
                            Ok(p) => self.handle_bus(&*st, &p),
                            Err(e) => tracing::warn!(error = %e, "chat: unreadable bus message"),
                        }
                    }
                    tracing::warn!("chat: bus subscription lost; reconnecting");
                    self.dirty.store(true, Ordering::SeqCst);
                }
                Err(e) => self.failed("subscribe", &e),
            }
            tokio::select! {
                _ = st.shutdown().cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Another node's report of the per-account events it let through.
    fn handle_limits(&self, st: &dyn ClusterHost, payload: &str) {
        let Some(report) = account_limits::decode_report(payload) else {
            tracing::warn!("chat: skipped a malformed limits report");
            return;
        };
        if report.node == self.node {
            return;
        }
        let Some(target) = st.account_limit(report.limit) else {
            return;
        };
        let now = self.clock.now_ms();
        for (account, n) in report.counts {
            target.charge(account, n, now);
        }
    }

    /// Reports what this node let through of the per-account limits, every
    /// [`account_limits::SYNC_INTERVAL`]. Best effort: a failed publish loses
    /// those charges (the limits stay enforced on each node).
    async fn limits_loop(self: Arc<Self>, st: Arc<dyn ClusterHost>) {
        let limits = st.account_limits();
        for l in &limits {
            l.share();
        }
        let channel = self.key("limits");
        let mut tick = tokio::time::interval(account_limits::SYNC_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = st.shutdown().cancelled() => break,
                _ = tick.tick() => {}
            }
            for l in &limits {
                let counts = l.take_unreported();
                if counts.is_empty() {
                    continue;
                }
                for report in account_limits::encode_reports(&self.node, l.name, counts) {
                    let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                        .arg(&channel)
                        .arg(report)
                        .query_async(&mut self.conn.clone())
                        .await;
                    if let Err(e) = sent {
                        self.failed("limits report", &e);
                    }
                }
            }
        }
    }

    fn handle_bus(&self, st: &dyn ClusterHost, payload: &str) {
        let hub = st.hub();
        for r in wire::records(payload) {
            let (h, frame) = match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "chat: skipped a bus record");
                    continue;
                }
            };
            match h {
                Header::Deliver {
                    u,
                    d,
                    g,
                    seq,
                    prev,
                    msg,
                    rcpt,
                } => {
                    let item = match (msg, rcpt) {
                        (Some(m), _) => ItemRef::Msg(m),
                        (None, Some(r)) => ItemRef::Receipt(r),
                        (None, None) => continue,
                    };
                    let delivery = crate::pipeline::Delivery {
                        seq,
                        prev,
                        item,
                        json: frame,
                    };
                    // Not here (any more): it waits in the queue for the device.
                    hub.deliver(&u, d, g, delivery);
                }
                Header::Frame { u, d: None } => {
                    hub.send_ephemeral(&u, &frame);
                }
                Header::Frame { u, d: Some(d) } => {
                    hub.send_device(&u, d, &frame);
                }
                Header::Close { u, conn, code } => {
                    let code = CloseCode::from_code(code).unwrap_or(CloseCode::Replaced);
                    tracing::debug!(user_id = %u, conn, "socket replaced on another node");
                    hub.close_conn(&u, conn, code);
                }
                Header::Call { u, d, ev } => match CallEvent::from_bus(&ev, &frame) {
                    Some(ev) => st.call_event_from_bus(&u, d, ev),
                    None => tracing::warn!(ev, "chat: skipped an unreadable call event"),
                },
                Header::Presence { u, online, seen } => {
                    if let Some(t) = seen {
                        hub.note_seen(&u, t);
                    }
                    st.announce_local(&u, online, seen);
                }
            }
        }
    }

    async fn dispatch_loop(
        self: Arc<Self>,
        mut rx: JobReceiver<Job>,
        hub: Arc<Hub>,
        push: mpsc::Sender<PushNotice>,
        shutdown: CancellationToken,
    ) {
        // Ends at shutdown, after one last round for what is already queued. It
        // cannot wait for its senders to go: this struct holds one, and the loop
        // holds the struct (that wait once kept every distributed node from
        // exiting after SIGTERM, and with it the push task this loop feeds).
        loop {
            let job = tokio::select! {
                job = rx.recv() => job,
                _ = shutdown.cancelled() => rx.try_recv(),
            };
            let Some(job) = job else { break };
            let mut jobs = vec![job];
            while jobs.len() < MAX_JOBS_PER_ROUND {
                match rx.try_recv() {
                    Some(j) => jobs.push(j),
                    None => break,
                }
            }
            // A failed round is retried for a while: a publish that never
            // happens would leave its entries waiting until the device's next
            // entry or reconnect. Repeats are harmless (sessions drop entries
            // they already wrote). Past the limit, the receiving nodes' resync
            // after the outage covers it.
            let started = Instant::now();
            let mut pause = Duration::from_millis(50);
            while let Err(e) = self.dispatch(&jobs, &hub, &push).await {
                self.failed("dispatch", &e);
                if started.elapsed() > DISPATCH_RETRY_LIMIT || shutdown.is_cancelled() {
                    metrics::counter!("chat_bus_dropped_rounds_total").increment(1);
                    break;
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }

    /// Looks up the users the jobs concern (one pipeline), then publishes one
    /// message per node (one more pipeline). Order within a node's channel
    /// follows job order.
    async fn dispatch(
        &self,
        jobs: &[Job],
        hub: &Hub,
        push: &mpsc::Sender<PushNotice>,
    ) -> redis::RedisResult<()> {
        let mut users: Vec<&UserId> = Vec::new();
        let mut seen = HashSet::new();
        for j in jobs {
            match j {
                Job::Forward(qs, _) => {
                    for q in qs {
                        if seen.insert(&q.user) {
                            users.push(&q.user);
                        }
                    }
                }
                Job::Frame(u, _, _) => {
                    if seen.insert(u) {
                        users.push(u);
                    }
                }
                Job::Publish(..) => {}
            }
        }
        let mut located: HashMap<&UserId, Vec<(DeviceId, Entry)>> = HashMap::new();
        if !users.is_empty() {
            let mut pipe = redis::pipe();
            for u in &users {
                pipe.hgetall(self.user_key(u));
            }
            let replies: Vec<Vec<String>> = pipe.query_async(&mut self.conn.clone()).await?;
            for (u, flat) in users.iter().zip(replies) {
                located.insert(*u, Self::entries(&flat));
            }
        }
        let mut out: HashMap<String, String> = HashMap::new();
        let mut json_cache = HashMap::new();
        for j in jobs {
            match j {
                Job::Forward(qs, now) => {
                    for q in qs {
                        let at = located.get(&q.user).and_then(|l| {
                            l.iter()
                                .find(|(d, e)| *d == q.device && e.node != self.node)
                        });
                        let Some((_, e)) = at else {
                            push_if_due(hub, push, q, *now);
                            continue;
                        };
                        // A node whose heartbeat is late may still hold the
                        // socket (a busy or paused process): publish anyway,
                        // since a record nobody reads costs nothing and one
                        // skipped would leave the entry waiting until the
                        // device's next entry or reconnect; and push, in case
                        // the node is really gone.
                        if !self.elsewhere(e) {
                            tracing::debug!(user_id = %q.user, device_id = q.device, node = %e.node, "chat: device's node looks gone; published and pushed");
                            metrics::counter!("chat_bus_to_silent_node_total").increment(1);
                            push_if_due(hub, push, q, *now);
                        }
                        let (msg, rcpt) = match &q.frame {
                            QueuedFrame::Msg(m) => (Some(m.msg_id), None),
                            QueuedFrame::Receipt(r) => (None, Some(r.receipt_id)),
                        };
                        let d = crate::hub::delivery_of(q, &mut json_cache);
                        let h = Header::Deliver {
                            u: q.user.clone(),
                            d: q.device,
                            g: q.generation,
                            seq: q.seq,
                            prev: q.prev,
                            msg,
                            rcpt,
                        };
                        wire::push_record(
                            out.entry(self.node_channel(&e.node)).or_default(),
                            &h,
                            Some(&d.json),
                        );
                    }
                }
                Job::Frame(u, device, json) => {
                    let mut nodes: Vec<&str> = Vec::new();
                    // Late nodes too, as for entries above.
                    for (d, e) in located.get(u).map(Vec::as_slice).unwrap_or_default() {
                        if device.is_none_or(|x| x == *d)
                            && e.node != self.node
                            && !nodes.contains(&e.node.as_str())
                        {
                            nodes.push(&e.node);
                        }
                    }
                    for n in nodes {
                        let h = Header::Frame {
                            u: u.clone(),
                            d: *device,
                        };
                        wire::push_record(
                            out.entry(self.node_channel(n)).or_default(),
                            &h,
                            Some(json),
                        );
                    }
                }
                Job::Publish(channel, payload) => {
                    let buf = out.entry(channel.clone()).or_default();
                    if !buf.is_empty() {
                        buf.push('\n');
                    }
                    buf.push_str(payload);
                }
            }
        }
        if out.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        for (channel, payload) in &out {
            pipe.publish(channel, payload).ignore();
        }
        metrics::counter!("chat_bus_messages_total").increment(out.len() as u64);
        pipe.query_async::<()>(&mut self.conn.clone()).await
    }
}

#[async_trait]
impl Cluster for RedisCluster {
    #[tracing::instrument(skip_all, fields(user_id = %conn.user, device_id = conn.device))]
    async fn claim(&self, conn: &LocalConn) -> bool {
        let me = Entry {
            node: self.node.clone(),
            conn: conn.conn_id,
            since: conn.since,
        };
        let r: redis::RedisResult<(String, Vec<String>)> = self
            .claim
            .key(self.user_key(&conn.user))
            .arg(conn.device)
            .arg(me.encode())
            .arg(self.entry_ttl_ms())
            .invoke_async(&mut self.conn.clone())
            .await;
        match r {
            Ok((old, all)) => {
                // Connected: its next offline message wakes it again.
                let reset: redis::RedisResult<()> = redis::cmd("DEL")
                    .arg(self.push_window_key(&conn.user, conn.device))
                    .query_async(&mut self.conn.clone())
                    .await;
                if let Err(e) = reset {
                    self.failed("push window reset", &e);
                }
                if let Some(old) = Entry::parse(&old)
                    && old.node != self.node
                {
                    // One socket per device: the older one, on another node, goes.
                    self.publish_close(&conn.user, &old);
                }
                !Self::entries(&all)
                    .iter()
                    .any(|(d, e)| *d != conn.device && self.elsewhere(e))
            }
            Err(e) => {
                // Served anyway; the next heartbeat writes the entry.
                self.failed("claim", &e);
                true
            }
        }
    }

    async fn release(&self, conn: &LocalConn) -> bool {
        let me = Entry {
            node: self.node.clone(),
            conn: conn.conn_id,
            since: conn.since,
        };
        let r: redis::RedisResult<Vec<String>> = self
            .release
            .key(self.user_key(&conn.user))
            .arg(conn.device)
            .arg(me.encode())
            .invoke_async(&mut self.conn.clone())
            .await;
        match r {
            Ok(all) => !Self::entries(&all).iter().any(|(_, e)| self.elsewhere(e)),
            Err(e) => {
                self.failed("release", &e);
                true
            }
        }
    }

    async fn online_elsewhere(&self, user: &UserId) -> bool {
        let r: redis::RedisResult<Vec<String>> = redis::cmd("HGETALL")
            .arg(self.user_key(user))
            .query_async(&mut self.conn.clone())
            .await;
        match r {
            Ok(flat) => Self::entries(&flat).iter().any(|(_, e)| self.elsewhere(e)),
            Err(e) => {
                self.failed("lookup", &e);
                false
            }
        }
    }

    async fn devices_elsewhere(&self, user: &UserId) -> Vec<DeviceId> {
        let r: redis::RedisResult<Vec<String>> = redis::cmd("HGETALL")
            .arg(self.user_key(user))
            .query_async(&mut self.conn.clone())
            .await;
        match r {
            Ok(flat) => Self::entries(&flat)
                .into_iter()
                .filter(|(_, e)| self.elsewhere(e))
                .map(|(d, _)| d)
                .collect(),
            Err(e) => {
                self.failed("lookup", &e);
                Vec::new()
            }
        }
    }

    fn node_id(&self) -> &str {
        &self.node
    }

    async fn node_alive(&self, node: &str) -> bool {
        if node == self.node {
            return true;
        }
        let r: redis::RedisResult<Option<f64>> = redis::cmd("ZSCORE")
            .arg(self.key("nodes"))
            .arg(node)
            .query_async(&mut self.conn.clone())
            .await;
        match r {
            Ok(Some(beat)) => (self.clock.now_ms() - beat as i64) < self.cfg.node_ttl_ms as i64,
            Ok(None) => false,
            Err(e) => {
                // Unknown: assume alive, so nothing of it is closed early.
                self.failed("node lookup", &e);
                true
            }
        }
    }

    fn calls_leader(&self) -> Option<String> {
        self.leader
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn forward_call(&self, node: &str, user: &UserId, device: DeviceId, ev: &CallEvent) {
        let mut payload = String::new();
        let h = Header::Call {
            u: user.clone(),
            d: device,
            ev: ev.kind().to_owned(),
        };
        wire::push_record(&mut payload, &h, ev.frame_json().as_deref());
        // Durable weight: a call event is never shed with typing frames.
        self.jobs.push(
            Job::Publish(self.node_channel(node), payload),
            Weight::Durable(1),
        );
    }

    fn forward(&self, entries: Vec<Queued>, now: UnixMillis) -> Vec<Queued> {
        if !entries.is_empty() {
            // Refused only far past the ephemeral bound: a dropped entry
            // waits in the store until its device's next entry or reconnect.
            let n = entries.len();
            self.jobs
                .push(Job::Forward(entries, now), Weight::Durable(n));
        }
        Vec::new()
    }

    fn frame(&self, to: &UserId, device: Option<DeviceId>, json: Arc<str>) {
        self.jobs
            .push(Job::Frame(to.clone(), device, json), Weight::Ephemeral);
    }

    fn presence(&self, user: &UserId, online: bool, last_seen: Option<UnixMillis>) {
        let mut payload = String::new();
        let h = Header::Presence {
            u: user.clone(),
            online,
            seen: last_seen,
        };
        wire::push_record(&mut payload, &h, None);
        self.jobs.push(
            Job::Publish(self.key("presence"), payload),
            Weight::Ephemeral,
        );
    }

    fn spawn(
        self: Arc<Self>,
        st: Arc<dyn ClusterHost>,
        push: mpsc::Sender<PushNotice>,
    ) -> Vec<Part> {
        let Some(rx) = self
            .jobs_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return Vec::new();
        };
        let hub = st.hub().clone();
        vec![
            Part::spawn(
                "bus-dispatch",
                self.clone()
                    .dispatch_loop(rx, hub, push, st.shutdown().clone()),
            ),
            Part::spawn("bus-heartbeat", self.clone().heartbeat_loop(st.clone())),
            Part::spawn("bus-limits", self.clone().limits_loop(st.clone())),
            Part::spawn("bus", self.bus_loop(st)),
        ]
    }
}

#[async_trait]
impl PushWindows for RedisCluster {
    async fn claim_push_windows(&self, notices: &[PushNotice], window_ms: i64) -> Vec<bool> {
        let mut pipe = redis::pipe();
        let mut asked = Vec::new();
        for (i, n) in notices.iter().enumerate() {
            if n.reason == crate::push::PushReason::Message && window_ms > 0 {
                pipe.cmd("SET")
                    .arg(self.push_window_key(&n.user, n.device))
                    .arg(1)
                    .arg("NX")
                    .arg("PX")
                    .arg(window_ms);
                asked.push(i);
            }
        }
        let mut out = vec![true; notices.len()];
        if asked.is_empty() {
            return out;
        }
        let r: redis::RedisResult<Vec<Option<String>>> =
            pipe.query_async(&mut self.conn.clone()).await;
        match r {
            Ok(set) => {
                for (i, ok) in asked.into_iter().zip(set) {
                    out[i] = ok.is_some();
                }
            }
            // Redis away: a second wake-up beats none.
            Err(e) => self.failed("push windows", &e),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_skipped() {
        let e = Entry {
            node: "n1".into(),
            conn: 7,
            since: 1_700_000_000_000,
        };
        assert_eq!(Entry::parse(&e.encode()), Some(e.clone()));
        let flat = vec![
            "3".to_owned(),
            e.encode(),
            "x".to_owned(),
            e.encode(),
            "4".to_owned(),
            "garbage".to_owned(),
        ];
        assert_eq!(RedisCluster::entries(&flat), vec![(3, e)]);
    }
}
