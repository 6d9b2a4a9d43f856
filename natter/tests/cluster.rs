//! The distributed shape with real processes: three `natter serve` nodes on
//! loopback ports, one PostgreSQL database and one Redis (a key prefix per
//! test, so tests run in parallel). PostgreSQL and Redis are required: these
//! fail, never skip, without them (scripts/test-deps.sh starts them).

use natter_client::{Chat, ConnectOptions, Event, Events};
use natter_proto::{PresenceState, ReceiptStatus, Target, TypingState, UserId};
use natter_tests::cluster::{LocalCluster, PrivateRedis, test_redis_url};
use natter_tests::ledger::{self, Ledger};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_natter");

/// Waits for the first event matching `f` (skipping others), up to 10 s.
async fn expect<T>(events: &mut Events, what: &str, mut f: impl FnMut(&Event) -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(ev)) => {
                if let Some(t) = f(&ev) {
                    return t;
                }
            }
            Ok(None) => panic!("events ended while waiting for {what}"),
            Err(_) => panic!("timed out waiting for {what}"),
        }
    }
}

fn connect_to(account: natter_client::Account, ws_url: String) -> (Chat, Events) {
    Chat::connect(
        account,
        ConnectOptions {
            ws_url: Some(ws_url),
            ..ConnectOptions::default()
        },
    )
}

/// Ann registered and connected on node 0, Ben on node 1.
async fn ann_and_ben(c: &LocalCluster) -> (Chat, Events, UserId, Chat, Events) {
    let ann = c.register(0).await.unwrap();
    let ben = c.register(1).await.unwrap();
    let ben_id = ben.credentials().user();
    let (ann_chat, mut ann_ev) = connect_to(ann, c.nodes[0].ws_url());
    let (ben_chat, mut ben_ev) = connect_to(ben, c.nodes[1].ws_url());
    for ev in [&mut ann_ev, &mut ben_ev] {
        expect(ev, "connected", |e| {
            matches!(e, Event::Connected(_)).then_some(())
        })
        .await;
    }
    (ann_chat, ann_ev, ben_id, ben_chat, ben_ev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_receipts_presence_typing_and_replacement_across_three_nodes() {
    let c = LocalCluster::start(BIN.into(), 3, &test_redis_url(), &[])
        .await
        .unwrap();
    let ann = c.register(0).await.unwrap();
    let ben = c.register(1).await.unwrap();
    let cat = c.register(2).await.unwrap();
    let (ann_id, ben_id, cat_id) = (
        ann.credentials().user(),
        ben.credentials().user(),
        cat.credentials().user(),
    );

    // Ann on node 0 watches Ben's presence before Ben connects anywhere.
    let (ann_chat, mut ann_ev) = connect_to(ann.clone(), c.nodes[0].ws_url());
    expect(&mut ann_ev, "ann connected", |e| {
        matches!(e, Event::Connected(_)).then_some(())
    })
    .await;
    ann_chat.subscribe_presence(vec![ben_id.clone()]);
    expect(&mut ann_ev, "ben offline", |e| match e {
        Event::Presence(p) if p.user == ben_id && p.state == PresenceState::Offline => Some(()),
        _ => None,
    })
    .await;

    // Ben connects on node 1: Ann (node 0) sees him come online.
    let (ben_chat, mut ben_ev) = connect_to(ben.clone(), c.nodes[1].ws_url());
    expect(&mut ben_ev, "ben connected", |e| {
        matches!(e, Event::Connected(_)).then_some(())
    })
    .await;
    expect(&mut ann_ev, "ben online", |e| match e {
        Event::Presence(p) if p.user == ben_id && p.state == PresenceState::Online => Some(()),
        _ => None,
    })
    .await;
    // The REST view agrees (answered by node 2, which holds neither socket).
    let cat_api = natter_client::Api::new(&c.nodes[2].url()).unwrap();
    let p = cat_api
        .presence(&cat.token().await.unwrap(), &ben_id)
        .await
        .unwrap();
    assert_eq!(p.state, PresenceState::Online, "{p:?}");

    let (cat_chat, mut cat_ev) = connect_to(cat.clone(), c.nodes[2].ws_url());
    expect(&mut cat_ev, "cat connected", |e| {
        matches!(e, Event::Connected(_)).then_some(())
    })
    .await;

    // A message node 0 → node 1, its delivered and read receipts back.
    let id = ann_chat.send_text(Target::User(ben_id.clone()), "hello ben");
    let msg_id = expect(&mut ann_ev, "sent", |e| match e {
        Event::Sent(s) if s.id == id => Some(s.msg_id),
        _ => None,
    })
    .await;
    let m = expect(&mut ben_ev, "ben's message", |e| match e {
        Event::Message(m) if m.id == id => Some(m.clone()),
        _ => None,
    })
    .await;
    assert_eq!(
        (m.msg_id, &m.from.user, &m.body.0[..]),
        (msg_id, &ann_id, &b"hello ben"[..])
    );
    expect(&mut ann_ev, "delivered receipt", |e| match e {
        Event::Receipt(r) if r.msg_id == msg_id && r.status == ReceiptStatus::Delivered => Some(()),
        _ => None,
    })
    .await;
    ben_chat.read(vec![msg_id]);
    expect(&mut ann_ev, "read receipt", |e| match e {
        Event::Receipt(r)
            if r.msg_id == msg_id && r.status == ReceiptStatus::Read && r.by == ben_id =>
        {
            Some(())
        }
        _ => None,
    })
    .await;

    // Typing node 2 → node 0.
    cat_chat.typing(Target::User(ann_id.clone()), TypingState::Composing);
    let t = expect(&mut ann_ev, "typing", |e| match e {
        Event::Typing(t) => Some(t.clone()),
        _ => None,
    })
    .await;
    assert_eq!((t.from, t.state), (cat_id.clone(), TypingState::Composing));

    // A group fans out from node 2 to nodes 0 and 1.
    let g = cat_api
        .create_group(
            &cat.token().await.unwrap(),
            "trio",
            &[ann_id.clone(), ben_id.clone()],
        )
        .await
        .unwrap();
    let gid = cat_chat.send_text(Target::Group(g.group_id.clone()), "hi all");
    for (name, ev) in [("ann", &mut ann_ev), ("ben", &mut ben_ev)] {
        expect(ev, &format!("{name}'s group message"), |e| match e {
            Event::Message(m) if m.id == gid => Some(()),
            _ => None,
        })
        .await;
    }

    // One socket per device across nodes: Ben's device connects again on node
    // 2; the old socket on node 1 is closed with 4000 (replaced).
    let (_ben2, mut ben2_ev) = connect_to(ben.clone(), c.nodes[2].ws_url());
    expect(&mut ben2_ev, "ben's new socket", |e| {
        matches!(e, Event::Connected(_)).then_some(())
    })
    .await;
    let code = expect(&mut ben_ev, "old socket closed", |e| match e {
        Event::Closed { code, .. } => Some(*code),
        Event::Disconnected { code, .. } => Some(*code),
        _ => None,
    })
    .await;
    assert_eq!(code, Some(natter_proto::CloseCode::Replaced.code()));
    // The new socket gets new messages.
    let id2 = ann_chat.send_text(Target::User(ben_id.clone()), "still there?");
    expect(&mut ben2_ev, "message on the new socket", |e| match e {
        Event::Message(m) if m.id == id2 => Some(()),
        _ => None,
    })
    .await;

    // Ben leaves: Ann sees him go offline, with a last-seen time.
    drop(_ben2);
    let seen = expect(&mut ann_ev, "ben offline again", |e| match e {
        Event::Presence(p) if p.user == ben_id && p.state == PresenceState::Offline => {
            Some(p.last_seen)
        }
        _ => None,
    })
    .await;
    assert!(seen.is_some(), "offline presence carries last_seen");
}

/// Three nodes under a steady ring of messages; node 2 is killed with SIGKILL
/// mid-load. Its devices reconnect to the others; every message acked `sent`
/// arrives exactly once, none is stored twice, and every send is acked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_one_node_under_load_loses_and_duplicates_nothing() {
    let mut c = LocalCluster::start(BIN.into(), 3, &test_redis_url(), &[])
        .await
        .unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut clients = Vec::new();
    for i in 0..9 {
        let acc = c.register(0).await.unwrap();
        let urls = c.ws_urls_from(i % 3);
        clients.push(ledger::connect(acc, urls, ledger.clone()).await.unwrap());
    }
    let on_killed: Vec<UserId> = clients
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 3 == 2)
        .map(|(_, cl)| cl.user.clone())
        .collect();
    // 9 clients × 60 rounds × 25 ms: 540 messages in 1.5 s; the kill after round 20.
    ledger::ring_load(&clients, &ledger, 20, Duration::from_millis(25)).await;
    c.kill(2).unwrap();
    ledger::ring_load(&clients, &ledger, 40, Duration::from_millis(25)).await;
    let v = ledger::settle(&clients, &ledger, Duration::from_secs(30)).await;
    let l = ledger.lock().unwrap();
    eprintln!(
        "sigkill: {v:?}; resends recognised as duplicates: {}; reconnects: {:?}",
        l.dup_acks,
        on_killed.iter().map(|u| l.connects[u]).collect::<Vec<_>>()
    );
    assert_eq!(l.issued.len(), 540);
    assert!(
        l.fatal.is_empty(),
        "connections ended for good: {:?}",
        l.fatal
    );
    for u in &on_killed {
        assert!(
            l.connects[u] >= 2,
            "{u}'s device was on the killed node and must have reconnected elsewhere"
        );
    }
    assert_eq!(
        v,
        ledger::Verdict {
            acked: 540,
            lost: 0,
            duplicated: 0,
            unacked: 0
        }
    );
    drop(l);
    for cl in clients {
        cl.close();
    }
}

/// PostgreSQL connections are killed (pg_terminate_backend), then a private
/// Redis is restarted empty, both mid-load. Nodes recover by themselves: every
/// acked message arrives exactly once, the registry is rebuilt from the live
/// sockets (every device's entry is back in Redis), and cross-node delivery
/// works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_connections_killed_and_redis_restarted_mid_load() {
    let mut redis_srv = PrivateRedis::start().await.unwrap();
    let c = LocalCluster::start(BIN.into(), 3, &redis_srv.url(), &[])
        .await
        .unwrap();
    let db_name = c.database_url.rsplit('/').next().unwrap().to_owned();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut clients = Vec::new();
    for i in 0..6 {
        let acc = c.register(0).await.unwrap();
        clients.push(
            ledger::connect(acc, c.ws_urls_from(i % 3), ledger.clone())
                .await
                .unwrap(),
        );
    }
    // 6 clients × 80 rounds × 25 ms: 480 messages in 2 s. PostgreSQL loses
    // every connection after round 15; Redis dies after round 40 and comes
    // back empty 300 ms later, while the load goes on.
    ledger::ring_load(&clients, &ledger, 15, Duration::from_millis(25)).await;
    let n = terminate_backends(&db_name).await;
    assert!(n > 0, "no PostgreSQL connection of the cluster was found");
    ledger::ring_load(&clients, &ledger, 25, Duration::from_millis(25)).await;
    let restart = tokio::spawn(async move {
        redis_srv.restart(Duration::from_millis(300)).await.unwrap();
        redis_srv
    });
    ledger::ring_load(&clients, &ledger, 40, Duration::from_millis(25)).await;
    let redis_srv = restart.await.unwrap();
    let v = ledger::settle(&clients, &ledger, Duration::from_secs(30)).await;
    {
        let l = ledger.lock().unwrap();
        assert!(
            l.fatal.is_empty(),
            "connections ended for good: {:?}",
            l.fatal
        );
    }
    assert_eq!(
        v,
        ledger::Verdict {
            acked: 480,
            lost: 0,
            duplicated: 0,
            unacked: 0
        }
    );

    // The registry was rebuilt from the live sockets: each device has its entry.
    let client = redis::Client::open(redis_srv.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for cl in &clients {
        let key = format!("{}u:{}", c.key_prefix, cl.user);
        loop {
            let n: usize = redis::cmd("HLEN")
                .arg(&key)
                .query_async(&mut conn)
                .await
                .unwrap();
            if n == 1 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no registry entry for {}",
                cl.user
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // And live cross-node delivery works again (0 → 1 is node 0 → node 1).
    let before = ledger.lock().unwrap().received.len();
    clients[0].send(&clients[1].user.clone(), &ledger);
    let v = ledger::settle(&clients, &ledger, Duration::from_secs(5)).await;
    assert_eq!((v.lost, v.duplicated, v.unacked), (0, 0, 0));
    assert_eq!(ledger.lock().unwrap().received.len(), before + 1);
    for cl in clients {
        cl.close();
    }
}

/// Terminates every connection to `db` (as a failover or a DBA would); returns how many.
async fn terminate_backends(db: &str) -> i64 {
    use sqlx::Connection;
    let admin = natter_common::testing::postgres_admin_url();
    let mut conn = sqlx::postgres::PgConnection::connect(&admin).await.unwrap();
    let n: Option<i64> = sqlx::query_scalar(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
    )
    .bind(db)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    n.unwrap_or(0)
}

/// Recorded scenarios from the chat-core suite, with devices spread over
/// three nodes: the transcripts must equal the single-node goldens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_scenario_group_of_five_on_three_nodes() {
    let c = LocalCluster::start(BIN.into(), 3, &test_redis_url(), &[])
        .await
        .unwrap();
    natter_tests::run_and_check(
        "group_of_five_one_offline",
        natter_tests::server::Server::Cluster(c),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_scenario_multi_device_on_three_nodes() {
    let c = LocalCluster::start(BIN.into(), 3, &test_redis_url(), &[])
        .await
        .unwrap();
    natter_tests::run_and_check("multi_device", natter_tests::server::Server::Cluster(c)).await;
}

/// `rediss://`: the nodes reach Redis over TLS (a private redis-server with a
/// certificate from a test CA, trusted through `SSL_CERT_FILE`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reach_redis_over_tls() {
    let r = PrivateRedis::start_tls().await.unwrap();
    assert!(r.url().starts_with("rediss://"));
    // Without the test CA the certificate is not trusted: the node refuses to start.
    let untrusted = LocalCluster::start(BIN.into(), 1, &r.url(), &[]).await;
    assert!(untrusted.is_err(), "a node trusted an unknown CA");
    let ca = r.ca_file().unwrap().to_str().unwrap().to_owned();
    let c = LocalCluster::start(BIN.into(), 2, &r.url(), &[("SSL_CERT_FILE", &ca)])
        .await
        .unwrap();
    let (ann_chat, _ann_ev, ben_id, _ben_chat, mut ben_ev) = ann_and_ben(&c).await;
    let id = ann_chat.send_text(Target::User(ben_id), "over tls");
    expect(&mut ben_ev, "message across nodes", |e| match e {
        Event::Message(m) if m.id == id => Some(()),
        _ => None,
    })
    .await;
}

/// A node that is alive but silent past `node_ttl_ms` (frozen with SIGSTOP, as
/// a process starved of CPU would be) looks gone to the others. A message for
/// a device on it is still published to it, so the device gets it once the
/// node runs again, without reconnecting; the sender's node also pushes, in
/// case the node is really gone. (Before, the delivery was skipped and the
/// message waited in the queue until the device's next reconnect.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_node_still_gets_its_deliveries() {
    let c = LocalCluster::start(BIN.into(), 2, &test_redis_url(), &[])
        .await
        .unwrap();
    let (ann_chat, mut ann_ev, ben_id, _ben_chat, mut ben_ev) = ann_and_ben(&c).await;
    c.freeze(1, true).unwrap();
    // Node 0 beats every 200 ms and gives up on a node after 1 s of silence:
    // wait until it has.
    node_looks_gone(&c, 0, 1).await;
    let id = ann_chat.send_text(Target::User(ben_id.clone()), "while you were frozen");
    let sent = tokio::time::timeout(
        Duration::from_secs(10),
        expect(&mut ann_ev, "sent", |e| match e {
            Event::Sent(s) if s.id == id => Some(()),
            _ => None,
        }),
    )
    .await;
    // Node 0 took node 1 for gone: it pushed to Ben's device.
    let outbox = c.push_outbox(0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let pushed = loop {
        let text = std::fs::read_to_string(&outbox).unwrap_or_default();
        if text.contains(ben_id.0.as_str()) || tokio::time::Instant::now() > deadline {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    c.freeze(1, false).unwrap();
    sent.expect("no sent ack from node 0");
    assert!(
        pushed.contains(ben_id.0.as_str()),
        "node 0 did not push to the device on the silent node: {pushed:?}"
    );
    expect(
        &mut ben_ev,
        "the message once the node runs again",
        |e| match e {
            Event::Message(m) if m.id == id => Some(()),
            _ => None,
        },
    )
    .await;
}

/// Waits (at most 20 s) until node `watcher` takes node `silent` for gone, as
/// Redis shows it. A node's heartbeat writes its time into the `nodes` sorted
/// set and, in the same round trip, reads which nodes are older than
/// `node_ttl_ms` (1 s here): `watcher` has seen `silent` as gone once its own
/// score is 1 s past `silent`'s. It stores that view right after the reply,
/// so the heartbeat after that one proves it is in place.
async fn node_looks_gone(c: &LocalCluster, watcher: usize, silent: usize) {
    const NODE_TTL_MS: f64 = 1_000.0;
    let client = redis::Client::open(c.redis_url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{}nodes", c.key_prefix);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let mut gone_at: Option<f64> = None;
    loop {
        let scores: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(&key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await
            .unwrap();
        // Node ids end with the node's port (tests/src/cluster.rs).
        let score = |i: usize| {
            let suffix = format!("-{}", c.nodes[i].port);
            scores
                .iter()
                .find(|(id, _)| id.ends_with(&suffix))
                .map(|(_, s)| *s)
        };
        if let (Some(w), Some(s)) = (score(watcher), score(silent)) {
            match gone_at {
                Some(first) if w > first => return,
                None if w - s >= NODE_TTL_MS => gone_at = Some(w),
                _ => {}
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node {watcher} never took node {silent} for gone: {scores:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The offline recipient reconnects to another node than before (the runner
/// spreads connections over the nodes in order) and drains its queue there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_scenario_recipient_offline_then_reconnects_on_three_nodes() {
    let c = LocalCluster::start(BIN.into(), 3, &test_redis_url(), &[])
        .await
        .unwrap();
    natter_tests::run_and_check(
        "recipient_offline_then_reconnects",
        natter_tests::server::Server::Cluster(c),
    )
    .await;
}

/// An account's budgets (`chat.limit_sends_per_user`, `chat.limit_group_writes`)
/// are one budget across the nodes, not one per node: what one node let
/// through is charged on the others (within `SYNC_INTERVAL`, 0.5 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_account_limits_are_one_budget_across_nodes() {
    let env = [
        ("NATTER_CHAT__LIMIT_SENDS_PER_USER__COUNT", "20"),
        ("NATTER_CHAT__LIMIT_SENDS_PER_USER__PERIOD_SECS", "3600"),
        ("NATTER_CHAT__LIMIT_GROUP_WRITES__COUNT", "5"),
        ("NATTER_CHAT__LIMIT_GROUP_WRITES__PERIOD_SECS", "3600"),
    ];
    let c = LocalCluster::start(BIN.into(), 2, &test_redis_url(), &env)
        .await
        .unwrap();
    let ann = c.register(0).await.unwrap();
    let ben = c.register(1).await.unwrap();
    let ben_id = ben.credentials().user();
    let api = [
        natter_client::Api::new(&c.nodes[0].url()).unwrap(),
        natter_client::Api::new(&c.nodes[1].url()).unwrap(),
    ];
    let token = ann.token().await.unwrap();

    // Group changes: the whole budget on node 0, then node 1 refuses.
    for i in 0..5 {
        api[0]
            .create_group(&token, &format!("group {i}"), std::slice::from_ref(&ben_id))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    match api[1]
        .create_group(&token, "one too many", std::slice::from_ref(&ben_id))
        .await
    {
        Err(natter_client::Error::Api { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (429, "rate_limited"));
        }
        other => panic!("node 1 gave the account a budget of its own: {other:?}"),
    }

    // Sends: Ann's first device on node 0 spends the budget; her second
    // device, linked on node 1, is refused there.
    let code = api[0].create_link_code(&token).await.unwrap();
    let second = api[1].link_device(&code, "second").await.unwrap();
    let ann2 = natter_client::Account::new(api[1].clone(), second);
    let (one, mut one_ev) = connect_to(ann, c.nodes[0].ws_url());
    let (two, mut two_ev) = connect_to(ann2, c.nodes[1].ws_url());
    for ev in [&mut one_ev, &mut two_ev] {
        expect(ev, "connected", |e| {
            matches!(e, Event::Connected(_)).then_some(())
        })
        .await;
    }
    let ids: Vec<natter_proto::ClientMsgId> = (0..20)
        .map(|i| one.send_text(Target::User(ben_id.clone()), &format!("m{i}")))
        .collect();
    for id in &ids {
        expect(&mut one_ev, "sent", |e| match e {
            Event::Sent(s) if s.id == *id => Some(()),
            Event::Error(e) => panic!("a send within the budget was refused: {e:?}"),
            _ => None,
        })
        .await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for i in 0..5 {
        let id = two.send_text(Target::User(ben_id.clone()), &format!("over {i}"));
        expect(&mut two_ev, "refusal", |e| match e {
            Event::Error(e) if e.id.as_deref() == Some(id.as_str()) => {
                assert_eq!(e.code, natter_proto::ErrorCode::RateLimited, "{e:?}");
                Some(())
            }
            Event::Sent(s) if s.id == id => {
                panic!("node 1 gave the account a send budget of its own")
            }
            _ => None,
        })
        .await;
    }
    drop((one, two));
}

/// A recorded call scenario on three nodes: the scenario's devices connect
/// round-robin, so caller and callee (and a callee's two devices) sit on
/// different nodes; the transcript must match the single-node golden.
async fn call_scenario_on_three_nodes(name: &str) {
    let text = std::fs::read_to_string(natter_tests::scenarios_dir().join(format!("{name}.toml")))
        .unwrap();
    let ring = natter_tests::scenario::Scenario::parse(&text)
        .unwrap()
        .ring_timeout_secs
        .map(|s| s.to_string());
    let env: Vec<(&str, &str)> = ring
        .iter()
        .map(|s| ("NATTER_SIGNALING__RING_TIMEOUT_SECS", s.as_str()))
        .collect();
    let c = LocalCluster::start(BIN.into(), 3, &test_redis_url(), &env)
        .await
        .unwrap();
    natter_tests::run_and_check(name, natter_tests::server::Server::Cluster(c)).await;
}

macro_rules! call_scenarios_on_three_nodes {
    ($($name:ident),* $(,)?) => {
        mod calls_on_three_nodes {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
               async fn $name() { super::call_scenario_on_three_nodes(stringify!($name)).await } )*
        }
    };
}

call_scenarios_on_three_nodes!(
    call_answer_on_second_device,
    call_reject,
    call_busy,
    call_ring_timeout,
    call_caller_cancel,
    call_offline_callee_push,
    call_glare,
);

/// Waits up to `within` for `call.ended` of `call` on `events`; its reason.
async fn call_ended(events: &mut Events, call: &str, within: Duration) -> natter_proto::EndReason {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(Event::Call(natter_proto::ServerFrame::CallEnded(e))))
                if e.call_id.as_str() == call =>
            {
                return e.reason;
            }
            Ok(Some(_)) => {}
            Ok(None) => panic!("events ended while waiting for the end of {call}"),
            Err(_) => panic!("{call} did not end within {within:?}"),
        }
    }
}

/// Owner loss: the calls leader (node 0, the first to start) is killed with
/// SIGKILL while one call is answered and another rings, both with their
/// parties on the other nodes. A surviving node ends both for every party
/// with `connection_lost` within the reconnect grace, and the call logs,
/// read from another node, have both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_calls_leader_ends_its_calls_for_both_parties() {
    use natter_proto::{CallAnswer, CallClientFrame, CallId, CallMedia, CallOffer, EndReason};
    let mut c = LocalCluster::start(BIN.into(), 3, &test_redis_url(), &[])
        .await
        .unwrap();
    let mut chats = Vec::new();
    let mut ids = Vec::new();
    for node in [1, 2, 1, 2] {
        let a = c.register(node).await.unwrap();
        ids.push(a.credentials().user());
        let token = a.token().await.unwrap();
        let (chat, mut ev) = connect_to(a, c.nodes[node].ws_url());
        expect(&mut ev, "connected", |e| {
            matches!(e, Event::Connected(_)).then_some(())
        })
        .await;
        chats.push((chat, ev, token));
    }
    let offer = |call: &str, to: &UserId| {
        CallClientFrame::Offer(CallOffer {
            call_id: CallId::new(call),
            to: to.clone(),
            media: CallMedia::Audio,
            sdp: "offer".into(),
        })
    };
    // Ann (node 1) calls Ben (node 2), who answers; Cat (node 1) calls Dan
    // (node 2), who lets it ring.
    chats[0].0.call_frame(offer("answered-1", &ids[1]));
    expect(&mut chats[1].1, "incoming", |e| {
        matches!(e, Event::Call(natter_proto::ServerFrame::CallIncoming(_))).then_some(())
    })
    .await;
    chats[1].0.call_frame(CallClientFrame::Answer(CallAnswer {
        call_id: CallId::new("answered-1"),
        sdp: "answer".into(),
    }));
    expect(&mut chats[0].1, "answered", |e| {
        matches!(e, Event::Call(natter_proto::ServerFrame::CallAnswered(_))).then_some(())
    })
    .await;
    chats[2].0.call_frame(offer("ringing-1", &ids[3]));
    expect(&mut chats[3].1, "incoming", |e| {
        matches!(e, Event::Call(natter_proto::ServerFrame::CallIncoming(_))).then_some(())
    })
    .await;

    c.kill(0).unwrap();
    let grace = Duration::from_secs(30); // signaling.reconnect_grace_secs
    for (i, call) in [
        (0, "answered-1"),
        (1, "answered-1"),
        (2, "ringing-1"),
        (3, "ringing-1"),
    ] {
        let reason = call_ended(&mut chats[i].1, call, grace).await;
        assert_eq!(reason, EndReason::ConnectionLost, "party {i} of {call}");
    }
    let api = natter_client::Api::new(&c.nodes[2].url()).unwrap();
    for (i, call) in [(0, "answered-1"), (3, "ringing-1")] {
        let log = api.call_log(&chats[i].2, None, None).await.unwrap();
        let e = log
            .calls
            .iter()
            .find(|e| e.call_id.as_str() == call)
            .unwrap_or_else(|| panic!("{call} is not in party {i}'s call log: {log:?}"));
        assert_eq!(
            (e.outcome.as_str(), e.reason),
            ("failed", EndReason::ConnectionLost)
        );
    }
    // Calls work again: a surviving node leads now.
    chats[0].0.call_frame(offer("after-1", &ids[3]));
    expect(&mut chats[3].1, "incoming after the takeover", |e| {
        matches!(e, Event::Call(natter_proto::ServerFrame::CallIncoming(i)) if i.call_id.as_str() == "after-1")
            .then_some(())
    })
    .await;
}
