//! The signaling REST API and store on both engines: the call log (paging,
//! direction, auth on every endpoint), the ICE servers endpoint (credentials
//! the TURN server accepts), the callee lookup.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use natter_common::calls::DeviceGen;
use natter_common::clock::ManualClock;
use natter_common::testing::TestDb;
use natter_common::token::{Claims, TokenKeys};
use natter_common::{Db, Secret, SharedClock};
use natter_proto::{CallId, CallMedia, EndReason, UserId};
use natter_signaling::call::{CallOutcome, CallRecord, LiveCall};
use natter_signaling::config::UrlList;
use natter_signaling::{SignalingConfig, SignalingService};
use serde_json::Value;
use std::sync::Arc;
use tower::ServiceExt;

const NOW_MS: i64 = 1_750_000_000_000;

async fn fresh(engine: &str) -> TestDb {
    let t = match engine {
        "sqlite" => TestDb::sqlite().await,
        _ => TestDb::postgres().await,
    };
    // Auth's real schema (its migrations, as `natter migrate` applies them):
    // the callee lookup reads its `accounts` and `devices` tables.
    natter_auth::store::for_db(&t.db)
        .migrate()
        .await
        .expect("auth's migrations");
    let users = "INSERT INTO accounts (user_id, number, created_at) VALUES ('alice', '+1', 0), ('bob', '+2', 0), ('carol', '+3', 0);
         INSERT INTO devices (user_id, device_id, name, created_at, last_seen_at, generation)
         VALUES ('alice', 1, 'p', 0, 0, 1), ('bob', 1, 'p', 0, 0, 3), ('bob', 2, 't', 0, 0, 7);";
    match &t.db {
        Db::Sqlite(p) => {
            sqlx::raw_sql(users).execute(p).await.unwrap();
        }
        Db::Postgres(p) => {
            sqlx::raw_sql(users).execute(p).await.unwrap();
        }
    }
    t
}

struct Setup {
    t: TestDb,
    svc: SignalingService,
    keys: Arc<TokenKeys>,
}

async fn setup(engine: &str) -> Setup {
    let t = fresh(engine).await;
    let keys = Arc::new(TokenKeys::new(b"test-signing-key-0123456789abcdef", &[]));
    let clock: SharedClock = ManualClock::new(NOW_MS);
    let cfg = SignalingConfig {
        turn_urls: UrlList::parse(
            "turn:turn.test:3478?transport=udp,turns:turn.test:5349?transport=tcp",
        ),
        max_history_page: 3,
        ..SignalingConfig::default()
    };
    let svc = SignalingService::build(
        cfg,
        &t.db,
        true,
        clock,
        keys.clone(),
        Secret::new("turn-secret"),
    )
    .await
    .unwrap();
    Setup { t, svc, keys }
}

/// A token for `user`'s device 1 at its generation in the table above.
fn token(keys: &TokenKeys, user: &str) -> String {
    token_at(keys, user, if user == "bob" { 3 } else { 1 })
}

fn token_at(keys: &TokenKeys, user: &str, generation: u32) -> String {
    keys.sign(&Claims {
        sub: user.into(),
        dev: 1,
        generation,
        iat: NOW_MS / 1000,
        exp: NOW_MS / 1000 + 600,
    })
}

async fn get(s: &Setup, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = Request::get(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = s
        .svc
        .router()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn record(id: &str, caller: &str, callee: &str, started: i64, outcome: CallOutcome) -> CallRecord {
    let answered = outcome == CallOutcome::Answered;
    CallRecord {
        call_id: CallId::new(id),
        caller: UserId::new(caller),
        caller_device: 1,
        callee: UserId::new(callee),
        answered_device: answered.then_some(2),
        media: CallMedia::Audio,
        started_at: started,
        answered_at: answered.then_some(started + 1_000),
        ended_at: started + 61_000,
        outcome,
        reason: if answered {
            EndReason::Hangup
        } else {
            EndReason::Missed
        },
    }
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite { $( #[tokio::test] async fn $name() { super::$name("sqlite").await } )* }
        mod postgres { $( #[tokio::test] async fn $name() { super::$name("postgres").await } )* }
    };
}

both!(
    every_endpoint_needs_a_token,
    call_log_pages_newest_first_with_direction,
    ice_servers_hand_out_turn_rest_credentials,
    callee_lookup_reads_auth_tables,
    tokens_of_logged_out_devices_are_refused,
    live_calls_are_kept_until_they_end_and_abandoned_ones_are_closed,
);

async fn every_endpoint_needs_a_token(engine: &str) {
    let s = setup(engine).await;
    for path in ["/v1/calls", "/v1/calls/ice-servers"] {
        let (status, body) = get(&s, path, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(body["error"]["code"], "missing_token");
        let (status, body) = get(&s, path, Some("not.a.token")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(body["error"]["code"], "invalid_token");
    }
    s.t.cleanup().await;
}

async fn call_log_pages_newest_first_with_direction(engine: &str) {
    let s = setup(engine).await;
    let store = natter_signaling::store::for_db(&s.t.db);
    store
        .record(&record("c1", "alice", "bob", 1_000, CallOutcome::Answered))
        .await
        .unwrap();
    store
        .record(&record("c2", "bob", "alice", 2_000, CallOutcome::Missed))
        .await
        .unwrap();
    store
        .record(&record("c3", "alice", "bob", 3_000, CallOutcome::Missed))
        .await
        .unwrap();
    store
        .record(&record("c4", "alice", "bob", 4_000, CallOutcome::Missed))
        .await
        .unwrap();
    store
        .record(&record("x", "carol", "dave", 5_000, CallOutcome::Missed))
        .await
        .unwrap();
    let alice = token(&s.keys, "alice");
    let (status, body) = get(&s, "/v1/calls", Some(&alice)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let ids: Vec<&str> = body["calls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["call_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["c4", "c3", "c2"],
        "page size is max_history_page (3) by default here"
    );
    assert_eq!(body["calls"][2]["direction"], "incoming");
    assert_eq!(body["calls"][2]["peer"], "bob");
    assert_eq!(body["calls"][0]["direction"], "outgoing");
    assert_eq!(body["next_before"], 2_000);
    let (_, body) = get(&s, "/v1/calls?before=2000&limit=3", Some(&alice)).await;
    let c = &body["calls"][0];
    assert_eq!(c["call_id"], "c1");
    assert_eq!(c["outcome"], "answered");
    assert_eq!(c["duration_ms"], 60_000);
    assert_eq!(c["reason"], "hangup");
    assert!(
        c.get("answered_device").is_none(),
        "only the callee sees its device"
    );
    assert!(body.get("next_before").is_none());
    let (_, body) = get(&s, "/v1/calls", Some(&token(&s.keys, "bob"))).await;
    assert_eq!(body["calls"].as_array().unwrap().len(), 3);
    let (status, body) = get(&s, "/v1/calls?limit=0", Some(&alice)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"]["code"], "invalid_query");
    let (status, _) = get(&s, "/v1/calls?limit=4", Some(&alice)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    s.t.cleanup().await;
}

/// Logout, removal and re-registration bump the device's generation in auth's
/// table: a token of the old generation (still signed and unexpired) is refused
/// here too, not only by chat and auth.
async fn tokens_of_logged_out_devices_are_refused(engine: &str) {
    let s = setup(engine).await;
    let stale = token_at(&s.keys, "bob", 2);
    let (status, body) = get(&s, "/v1/calls/ice-servers", Some(&stale)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_revoked"))
    );
    let (status, body) = get(&s, "/v1/calls", Some(&stale)).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_revoked"))
    );
    // A device that was never registered (or was removed) has no row at all.
    let (status, _) = get(&s, "/v1/calls", Some(&token_at(&s.keys, "mallory", 1))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = get(&s, "/v1/calls", Some(&token(&s.keys, "bob"))).await;
    assert_eq!(status, StatusCode::OK, "the current generation works");
    s.t.cleanup().await;
}

/// Each answer mints a TURN credential: an account fetching one a second used
/// to get an unlimited supply of TURN usernames.
#[tokio::test]
async fn ice_servers_are_rate_limited_per_user() {
    let s = setup("sqlite").await;
    let alice = token(&s.keys, "alice");
    let limit = SignalingConfig::default().ice_servers_rate;
    for n in 0..limit.count {
        let (status, body) = get(&s, "/v1/calls/ice-servers", Some(&alice)).await;
        assert_eq!(status, StatusCode::OK, "fetch {n}: {body}");
    }
    let (status, body) = get(&s, "/v1/calls/ice-servers", Some(&alice)).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(body["error"]["code"], "rate_limited");
    let (status, _) = get(&s, "/v1/calls/ice-servers", Some(&token(&s.keys, "bob"))).await;
    assert_eq!(status, StatusCode::OK, "another user has their own budget");
    s.t.cleanup().await;
}

async fn ice_servers_hand_out_turn_rest_credentials(engine: &str) {
    let s = setup(engine).await;
    let (status, body) = get(&s, "/v1/calls/ice-servers", Some(&token(&s.keys, "alice"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let expiry = NOW_MS / 1000 + 600;
    assert_eq!(body["ttl_secs"], 600);
    assert_eq!(body["expires_at"], expiry);
    assert_eq!(body["ice_servers"][0]["urls"][0], "stun:turn.test:3478");
    let turn = &body["ice_servers"][1];
    assert_eq!(turn["urls"].as_array().unwrap().len(), 2);
    let user = turn["username"].as_str().unwrap();
    assert_eq!(user, format!("{expiry}:alice"));
    let creds = natter_turn_core::auth::Credentials::new("natter", Some(b"turn-secret"), []);
    assert_eq!(
        creds.key_for(user, (expiry - 1) as u64).unwrap(),
        natter_turn_core::auth::long_term_key(user, "natter", turn["credential"].as_str().unwrap())
    );
    s.t.cleanup().await;
}

async fn callee_lookup_reads_auth_tables(engine: &str) {
    let s = setup(engine).await;
    let store = natter_signaling::store::for_db(&s.t.db);
    let bob = store.callee(&UserId::new("bob")).await.unwrap();
    assert!(bob.exists);
    assert_eq!(
        bob.devices,
        vec![
            DeviceGen {
                device: 1,
                generation: 3
            },
            DeviceGen {
                device: 2,
                generation: 7
            }
        ]
    );
    let alice = store.callee(&UserId::new("alice")).await.unwrap();
    assert!(alice.exists);
    assert_eq!(
        alice.devices,
        vec![DeviceGen {
            device: 1,
            generation: 1
        }]
    );
    let carol = store.callee(&UserId::new("carol")).await.unwrap();
    assert!(
        carol.exists && carol.devices.is_empty(),
        "an account with no device"
    );
    assert!(!store.callee(&UserId::new("nobody")).await.unwrap().exists);
    s.t.cleanup().await;
}

fn live(id: &str, started: i64, answered: Option<(u32, i64)>) -> LiveCall {
    LiveCall {
        call_id: CallId::new(id),
        caller: UserId::new("alice"),
        caller_device: 1,
        callee: UserId::new("bob"),
        media: CallMedia::Video,
        started_at: started,
        answered,
    }
}

/// Live calls are rows until they end; those of a node that stopped are
/// logged once as failed (`connection_lost`), and the true end of a call a
/// sweep closed too early replaces the sweep's row.
async fn live_calls_are_kept_until_they_end_and_abandoned_ones_are_closed(engine: &str) {
    let s = setup(engine).await;
    let store = natter_signaling::store::for_db(&s.t.db);
    let history = |user: &'static str| {
        let store = store.clone();
        async move {
            store
                .history(&UserId::new(user), i64::MAX, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|r| (r.call_id.0, r.outcome, r.reason))
                .collect::<Vec<_>>()
        }
    };
    // A call rings, is answered and ends: one log row, nothing live.
    store
        .live(&live("c1", 1_000, None), "node-a")
        .await
        .unwrap();
    store
        .live(&live("c1", 1_000, Some((2, 1_500))), "node-a")
        .await
        .unwrap();
    assert_eq!(store.live_owners().await.unwrap(), ["node-a"]);
    store
        .record(&record("c1", "alice", "bob", 1_000, CallOutcome::Answered))
        .await
        .unwrap();
    assert!(store.live_owners().await.unwrap().is_empty());
    assert_eq!(
        history("alice").await,
        [("c1".to_owned(), CallOutcome::Answered, EndReason::Hangup)]
    );

    // node-a dies with two calls; node-b lives on with one.
    store
        .live(&live("c2", 2_000, None), "node-a")
        .await
        .unwrap();
    store
        .live(&live("c3", 3_000, Some((1, 3_100))), "node-a")
        .await
        .unwrap();
    store
        .live(&live("c4", 4_000, None), "node-b")
        .await
        .unwrap();
    let closed = store.close_abandoned("node-a", 9_000).await.unwrap();
    let mut ids: Vec<&str> = closed.iter().map(|r| r.call_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["c2", "c3"]);
    let c3 = closed.iter().find(|r| r.call_id.as_str() == "c3").unwrap();
    assert_eq!(
        (c3.answered_device, c3.answered_at, c3.ended_at, c3.media),
        (Some(1), Some(3_100), 9_000, CallMedia::Video)
    );
    assert!(
        store
            .close_abandoned("node-a", 9_500)
            .await
            .unwrap()
            .is_empty(),
        "closed twice"
    );
    assert_eq!(store.live_owners().await.unwrap(), ["node-b"]);
    let h = history("bob").await;
    assert_eq!(h.len(), 3, "{h:?}");
    assert!(h.contains(&(
        "c3".to_owned(),
        CallOutcome::Failed,
        EndReason::ConnectionLost
    )));

    // node-b only looked dead: its answered call was swept, then it ends
    // the call for real. One row, the true one.
    store
        .live(&live("c5", 5_000, Some((2, 5_100))), "node-b")
        .await
        .unwrap();
    assert_eq!(
        store.close_abandoned("node-b", 9_000).await.unwrap().len(),
        2
    );
    store
        .record(&record("c5", "alice", "bob", 5_000, CallOutcome::Answered))
        .await
        .unwrap();
    let c5: Vec<_> = history("alice")
        .await
        .into_iter()
        .filter(|(id, ..)| id == "c5")
        .collect();
    assert_eq!(
        c5,
        [("c5".to_owned(), CallOutcome::Answered, EndReason::Hangup)]
    );
    s.t.cleanup().await;
}

const BLESS_OPENAPI: &str = "UPDATE_OPENAPI=1 cargo test -p natter-signaling --test api openapi";

/// The checked-in document (`docs/api/signaling.openapi.json`) is what the
/// code generates, names both routes, and is served. The test only compares;
/// with `UPDATE_OPENAPI=1` (exactly `1`) it writes the file first.
#[tokio::test]
async fn openapi_document_is_checked_in_and_served() {
    let generated = natter_signaling::openapi().to_pretty_json().unwrap() + "\n";
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api/signaling.openapi.json");
    if std::env::var("UPDATE_OPENAPI").as_deref() == Ok("1") {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} cannot be read ({e}); create it with `{BLESS_OPENAPI}`",
            path.display()
        )
    });
    assert!(
        checked_in == generated,
        "docs/api/signaling.openapi.json is stale; if the API change is intended, \
         bless it with `{BLESS_OPENAPI}` and commit the file"
    );
    let doc: Value = serde_json::from_str(&generated).unwrap();
    for p in ["/v1/calls", "/v1/calls/ice-servers"] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
        assert!(
            doc["paths"][p]["get"]["responses"].get("401").is_some(),
            "{p}: the 401 answer is documented"
        );
    }
    let s = setup("sqlite").await;
    let (status, served) = get(&s, "/v1/calls/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served["info"]["title"], "Natter signaling API");
    s.t.cleanup().await;
}
