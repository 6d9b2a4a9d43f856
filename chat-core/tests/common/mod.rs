//! Shared test fixtures: fresh databases on both engines with auth's schema
//! (its real migrations, so a change there that breaks what chat-core reads
//! fails these tests) and chat's migrations.
#![allow(dead_code, unreachable_pub)]

use natter_common::Db;
use natter_common::testing::TestDb;

/// A fresh database of the engine, with auth's tables and chat's migrations.
pub async fn fresh(engine: &str) -> TestDb {
    let t = match engine {
        "sqlite" => TestDb::sqlite().await,
        _ => TestDb::postgres().await,
    };
    auth_schema(&t.db).await;
    natter_chat::store::for_db(&t.db).migrate().await.unwrap();
    t
}

/// Applies auth's migrations (the `accounts` and `devices` tables chat-core
/// reads; docs/protocol.md "Schema contract"), as `natter migrate` does.
pub async fn auth_schema(db: &Db) {
    natter_auth::store::for_db(db)
        .migrate()
        .await
        .expect("auth's migrations");
}

async fn exec(db: &Db, sql: &'static str, binds: &[&str], ints: &[i64]) {
    macro_rules! run {
        ($p:expr) => {{
            let mut q = sqlx::query(sql);
            for b in binds {
                q = q.bind(*b);
            }
            for i in ints {
                q = q.bind(*i);
            }
            q.execute($p).await.unwrap();
        }};
    }
    match db {
        Db::Sqlite(p) => run!(p),
        Db::Postgres(p) => run!(p),
    }
}

/// Creates an account with devices `(device_id, generation)`.
pub async fn add_user(db: &Db, user: &str, devices: &[(i64, i64)]) {
    exec(
        db,
        "INSERT INTO accounts (user_id, number, created_at) VALUES ($1, $2, $3)",
        &[user, user],
        &[0],
    )
    .await;
    for &(d, g) in devices {
        add_device(db, user, d, g).await;
    }
}

/// Adds a device.
pub async fn add_device(db: &Db, user: &str, device: i64, generation: i64) {
    exec(
        db,
        "INSERT INTO devices (user_id, name, device_id, created_at, last_seen_at, generation) VALUES ($1, $2, $3, 0, 0, $4)",
        &[user, "dev"],
        &[device, generation],
    )
    .await;
}

/// Removes a device (as auth does on unlink).
pub async fn remove_device(db: &Db, user: &str, device: i64) {
    exec(
        db,
        "DELETE FROM devices WHERE user_id = $1 AND device_id = $2",
        &[user],
        &[device],
    )
    .await;
}

/// Changes a device's generation (as auth does on logout).
pub async fn set_generation(db: &Db, user: &str, device: i64, generation: i64) {
    exec(
        db,
        "UPDATE devices SET generation = $2 WHERE user_id = $1 AND device_id = $3",
        &[user],
        &[generation, device],
    )
    .await;
}

use futures_util::{SinkExt, StreamExt};
use natter_chat::{ChatConfig, ChatService};
use natter_common::token::{Claims, TokenKeys};
use natter_proto::{ClientFrame, ServerFrame};
use std::sync::Arc;
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const KEY: &[u8] = b"test-signing-key-0123456789abcdef";

/// A chat server on 127.0.0.1:0.
pub struct Server {
    pub addr: std::net::SocketAddr,
    pub db: TestDb,
    pub shutdown: natter_common::Shutdown,
    pub tasks: Vec<tokio::task::JoinHandle<()>>,
    pub data_dir: natter_common::testing::TempDir,
    pub state: natter_chat::ChatState,
}

impl Server {
    pub async fn start(engine: &str, cfg: ChatConfig) -> Self {
        let db = fresh(engine).await;
        let data_dir = natter_common::testing::TempDir::new("natter-chat-test");
        let store = natter_chat::store::for_db(&db.db);
        let svc = ChatService::with_store(
            cfg,
            store,
            data_dir.path(),
            Arc::new(natter_common::SystemClock),
            Arc::new(TokenKeys::new(KEY, &[])),
        )
        .unwrap();
        let shutdown = natter_common::Shutdown::new();
        let mut tasks: Vec<_> = svc
            .spawn_background(shutdown.clone())
            .into_iter()
            .map(|p| p.task)
            .collect();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = svc.router();
        let sd = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            natter_common::listener::serve(listener, router, sd)
                .await
                .unwrap();
        }));
        Self {
            addr,
            db,
            shutdown,
            tasks,
            data_dir,
            state: svc.state().clone(),
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/v1/ws", self.addr)
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.db.cleanup().await;
    }
}

pub fn token(user: &str, dev: u32, generation: u32, exp: i64) -> String {
    TokenKeys::new(KEY, &[]).sign(&Claims {
        sub: user.into(),
        dev,
        generation,
        iat: 0,
        exp,
    })
}

pub fn valid_token(user: &str, dev: u32, generation: u32) -> String {
    token(user, dev, generation, 4_000_000_000)
}

/// A raw WebSocket client.
pub struct Client {
    pub ws: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Client {
    /// Connects with an Authorization header.
    pub async fn with_header(url: &str, token: &str) -> Self {
        let mut req = url.into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        Self { ws }
    }

    /// Connects without a header (first-frame auth).
    pub async fn bare(url: &str) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        Self { ws }
    }

    /// Connects, expects hello.
    pub async fn login(url: &str, token: &str) -> Self {
        let mut c = Self::with_header(url, token).await;
        match c.next().await {
            ServerFrame::Hello(_) => c,
            other => panic!("expected hello, got {other:?}"),
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Ws::Text(text.into())).await.unwrap();
    }

    pub async fn send(&mut self, f: &ClientFrame) {
        self.send_text(&f.to_json()).await;
    }

    /// The next frame (answering pings), within 10 s.
    pub async fn next(&mut self) -> ServerFrame {
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("a frame within 10 s")
                .expect("socket open")
                .expect("no socket error");
            match m {
                Ws::Text(t) => return natter_proto::decode_server_frame(&t).unwrap(),
                Ws::Close(c) => panic!("closed: {c:?}"),
                _ => continue,
            }
        }
    }

    /// Frames until one matches, skipping others.
    pub async fn until<T>(&mut self, mut f: impl FnMut(&ServerFrame) -> Option<T>) -> T {
        loop {
            let fr = self.next().await;
            if let Some(t) = f(&fr) {
                return t;
            }
        }
    }

    /// Waits for the close frame; returns its code.
    pub async fn closed(&mut self) -> u16 {
        loop {
            match tokio::time::timeout(Duration::from_secs(15), self.ws.next())
                .await
                .expect("close within 15 s")
            {
                Some(Ok(Ws::Close(Some(c)))) => return c.code.into(),
                Some(Ok(Ws::Close(None))) => return 1005,
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error before close: {e}"),
                None => panic!("socket ended without a close frame"),
            }
        }
    }

    /// A barrier on this socket: sends `ping` with `nonce` and returns every
    /// frame that came before its `pong`. The server answers frames in order
    /// and writes its answers behind what it already queued for this socket,
    /// so whatever was on its way here when the ping was read is in the list.
    pub async fn ping_barrier(&mut self, nonce: u64) -> Vec<ServerFrame> {
        self.send(&ClientFrame::Ping(natter_proto::Ping {
            nonce: Some(nonce),
        }))
        .await;
        let mut before = Vec::new();
        loop {
            match self.next().await {
                ServerFrame::Pong(p) => {
                    assert_eq!(p.nonce, Some(nonce), "a pong echoes its ping's nonce");
                    return before;
                }
                other => before.push(other),
            }
        }
    }
}
