//! Steady message load over a cluster with an exact account of what happened:
//! every message a client sent, every `sent` ack, every copy received. The
//! failure tests check it: nothing acked is lost, nothing is delivered twice,
//! no client id is stored twice.

use natter_client::{Account, Chat, ConnectOptions, Event, Events};
use natter_proto::{ClientMsgId, Kind, MsgId, Target, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// What every client saw.
#[derive(Debug, Default)]
pub struct Ledger {
    /// Client ids issued: (sender, id) → recipient.
    pub issued: HashMap<(UserId, ClientMsgId), UserId>,
    /// `sent` acks: (sender, id) → message ids the server gave it.
    pub acked: HashMap<(UserId, ClientMsgId), HashSet<MsgId>>,
    /// Copies handed to recipients: (recipient, msg_id) → count.
    pub received: HashMap<(UserId, MsgId), u32>,
    /// (sender, client id) of each received message id.
    pub received_ids: HashMap<MsgId, (UserId, ClientMsgId)>,
    /// `connected` events per user (a reconnect to another node adds one).
    pub connects: HashMap<UserId, u32>,
    /// Close codes that ended a connection for good (none expected).
    pub fatal: Vec<(UserId, Option<u16>, String)>,
    /// `sent` acks marked `dup`: resends the server recognised (after a
    /// connection dropped before its ack arrived).
    pub dup_acks: usize,
    /// Barrier markers received (see [`settle`]): (recipient, client id).
    /// They are not part of the load and not counted above.
    pub markers: HashSet<(UserId, ClientMsgId)>,
}

/// Client ids of barrier markers start with this (load ids are hex UUIDs).
const MARKER: &str = "barrier-";

fn is_marker(id: &ClientMsgId) -> bool {
    id.as_str().starts_with(MARKER)
}

/// The check's verdict.
#[derive(Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Messages acknowledged `sent`.
    pub acked: usize,
    /// Acknowledged and never received.
    pub lost: usize,
    /// Received more than once (by the same recipient), or stored twice.
    pub duplicated: usize,
    /// Issued and never acknowledged.
    pub unacked: usize,
}

impl Ledger {
    /// Counts lost and duplicated messages.
    pub fn verdict(&self) -> Verdict {
        let mut lost = 0;
        let mut duplicated = 0;
        for (key, ids) in &self.acked {
            if ids.len() > 1 {
                // One client id stored as two messages (a resend not deduplicated).
                duplicated += 1;
            }
            let to = &self.issued[key];
            for id in ids {
                match self.received.get(&(to.clone(), *id)) {
                    None => lost += 1,
                    Some(1) => {}
                    Some(_) => duplicated += 1,
                }
            }
        }
        Verdict {
            acked: self.acked.len(),
            lost,
            duplicated,
            unacked: self.issued.len() - self.acked.len(),
        }
    }

    /// Acked messages not received yet.
    pub fn missing(&self) -> usize {
        self.verdict().lost
    }
}

/// A client of the load: one device, with failover over every node.
pub struct LoadClient {
    /// Its account's user.
    pub user: UserId,
    chat: Chat,
    reader: JoinHandle<()>,
}

/// Connects `account` to `ws_urls[0]` (falling back to the others in turn),
/// recording into `ledger`. Returns once connected.
pub async fn connect(
    account: Account,
    ws_urls: Vec<String>,
    ledger: Arc<Mutex<Ledger>>,
) -> anyhow::Result<LoadClient> {
    let user = account.credentials().user();
    let opts = ConnectOptions {
        ws_url: ws_urls.first().cloned(),
        fallback_ws_urls: ws_urls.into_iter().skip(1).collect(),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_millis(500),
        ..ConnectOptions::default()
    };
    let (chat, mut events) = Chat::connect(account, opts);
    wait_connected(&mut events).await?;
    ledger
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .connects
        .insert(user.clone(), 1);
    let u = user.clone();
    let reader = tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
            match ev {
                Event::Connected(_) => *l.connects.entry(u.clone()).or_default() += 1,
                Event::Sent(s) if is_marker(&s.id) => {}
                Event::Message(m) if is_marker(&m.id) => {
                    l.markers.insert((u.clone(), m.id));
                }
                Event::Sent(s) => {
                    if s.dup {
                        l.dup_acks += 1;
                    }
                    l.acked
                        .entry((u.clone(), s.id.clone()))
                        .or_default()
                        .insert(s.msg_id);
                }
                Event::Message(m) => {
                    *l.received.entry((u.clone(), m.msg_id)).or_default() += 1;
                    l.received_ids
                        .insert(m.msg_id, (m.from.user.clone(), m.id.clone()));
                }
                Event::Closed { code, reason } => l.fatal.push((u.clone(), code, reason)),
                _ => {}
            }
        }
    });
    Ok(LoadClient { user, chat, reader })
}

async fn wait_connected(events: &mut Events) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ev = tokio::time::timeout_at(deadline, events.recv())
            .await
            .map_err(|_| anyhow::anyhow!("no connection within 10 s"))?;
        match ev {
            Some(Event::Connected(_)) => return Ok(()),
            Some(Event::Closed { code, reason }) => {
                anyhow::bail!("connection closed: {code:?} {reason}")
            }
            Some(_) => {}
            None => anyhow::bail!("connection task ended"),
        }
    }
}

impl LoadClient {
    /// Sends a text to `to`, recording the client id.
    pub fn send(&self, to: &UserId, ledger: &Mutex<Ledger>) {
        // Record before sending: the ack may arrive before this returns.
        let id = ClientMsgId::new(uuid::Uuid::new_v4().simple().to_string());
        ledger
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .issued
            .insert((self.user.clone(), id.clone()), to.clone());
        self.chat.send_with_id(
            id,
            Target::User(to.clone()),
            natter_proto::Kind::text(),
            b"load".to_vec(),
        );
    }

    /// Closes the connection.
    pub fn close(self) {
        self.chat.close();
        self.reader.abort();
    }
}

/// Sends from each client to the next (a ring) every `every`, for `rounds`
/// rounds. Break things between calls (or from a spawned task, mid-call).
pub async fn ring_load(
    clients: &[LoadClient],
    ledger: &Arc<Mutex<Ledger>>,
    rounds: usize,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    for _ in 0..rounds {
        tick.tick().await;
        for (i, c) in clients.iter().enumerate() {
            let to = &clients[(i + 1) % clients.len()].user;
            c.send(to, ledger);
        }
    }
}

/// Waits until every issued message is acked and every acked one received
/// (or `limit` passes), then ends with a barrier; returns the verdict.
///
/// The barrier replaces a grace period, which a late duplicate could outlast:
/// each client sends a marker message to the next one (the load's ring), and
/// the verdict is taken once every marker arrived. A device's messages reach
/// it in commit order, so whatever was committed for a recipient before its
/// marker (a second copy of a message included) has been received by then.
/// Panics if the markers do not arrive within 30 s: without them the verdict
/// proves nothing.
pub async fn settle(clients: &[LoadClient], ledger: &Mutex<Ledger>, limit: Duration) -> Verdict {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let v = ledger.lock().unwrap_or_else(|p| p.into_inner()).verdict();
        if (v.lost == 0 && v.unacked == 0) || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let round = uuid::Uuid::new_v4().simple().to_string();
    let mut expected = HashSet::new();
    for (i, c) in clients.iter().enumerate() {
        let to = &clients[(i + 1) % clients.len()].user;
        let id = ClientMsgId::new(format!("{MARKER}{round}-{i}"));
        c.chat.send_with_id(
            id.clone(),
            Target::User(to.clone()),
            Kind::text(),
            b"barrier".to_vec(),
        );
        expected.insert((to.clone(), id));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        {
            let l = ledger.lock().unwrap_or_else(|p| p.into_inner());
            let missing: Vec<_> = expected.difference(&l.markers).collect();
            if missing.is_empty() {
                return l.verdict();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "barrier markers did not arrive within 30 s: {missing:?}; verdict so far: {:?}",
                l.verdict()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
