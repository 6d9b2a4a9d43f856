//! Test harness: the media service on a real HTTP listener (127.0.0.1:0), on a
//! real database (SQLite or PostgreSQL) and a real blob backend (files in a
//! temp dir, or a fresh bucket on the S3-compatible test server), with a
//! manual clock.
//!
//! The S3 server is required, never skipped: `scripts/test-deps.sh` starts it;
//! `NATTER_TEST_S3_ENDPOINT` points elsewhere.

#![allow(dead_code, unreachable_pub)]

use natter_common::Db;
use natter_common::clock::ManualClock;
use natter_common::testing::{TempDir, TestDb};
use natter_common::token::{Claims, TokenKeys};
use natter_media::MediaConfig;
use natter_media::blob::{BlobStore, FsBlobStore, S3BlobStore};
use natter_media::config::{BackendKind, S3Config};
use natter_media::service::MediaService;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const START_MS: i64 = 1_800_000_000_000;
pub const MIB: usize = 1024 * 1024;

/// Where the S3-compatible test server is.
pub fn s3_endpoint() -> String {
    std::env::var("NATTER_TEST_S3_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:9310".into())
}

/// Settings for a bucket on the test server.
pub fn s3_config(bucket: &str) -> S3Config {
    S3Config {
        endpoint: s3_endpoint(),
        region: "us-east-1".into(),
        bucket: bucket.into(),
        access_key_id: natter_common::Secret::new(
            std::env::var("NATTER_TEST_S3_ACCESS_KEY").unwrap_or_else(|_| "natter-test".into()),
        ),
        secret_access_key: natter_common::Secret::new(
            std::env::var("NATTER_TEST_S3_SECRET_KEY")
                .unwrap_or_else(|_| "natter-test-secret".into()),
        ),
        part_size_bytes: 5 * MIB as u64,
        ..S3Config::default()
    }
}

/// Creates a fresh bucket on the test server. Panics with instructions when the
/// server does not answer.
pub async fn fresh_bucket() -> String {
    let name = format!(
        "natter-test-{}",
        hex::encode(natter_common::random::bytes::<6>())
    );
    let cfg = s3_config(&name);
    let creds = aws_sdk_s3::config::Credentials::new(
        cfg.access_key_id.expose(),
        cfg.secret_access_key.expose(),
        None,
        None,
        "test",
    );
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&cfg.endpoint)
        .credentials_provider(creds)
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    let created = tokio::time::timeout(
        Duration::from_secs(20),
        client.create_bucket().bucket(&name).send(),
    )
    .await;
    match created {
        Ok(Ok(_)) => name,
        Ok(Err(e)) => panic!(
            "the S3-compatible test server at {} refused to create a bucket: {}. \
             Run scripts/test-deps.sh (it builds and starts s3s-fs) or set NATTER_TEST_S3_ENDPOINT.",
            cfg.endpoint,
            aws_sdk_s3::error::DisplayErrorContext(e)
        ),
        Err(_) => panic!(
            "the S3-compatible test server at {} did not answer in 20 s. \
             Run scripts/test-deps.sh (it builds and starts s3s-fs) or set NATTER_TEST_S3_ENDPOINT.",
            cfg.endpoint
        ),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Fs,
    S3,
}

/// A blob store for contract tests, with what keeps it alive.
pub struct TestBlobs {
    pub store: Arc<dyn BlobStore>,
    pub dir: TempDir,
    pub backend: Backend,
}

pub async fn blob_store(backend: Backend) -> TestBlobs {
    let dir = TempDir::new("natter-media-blobs");
    let store: Arc<dyn BlobStore> = match backend {
        Backend::Fs => Arc::new(FsBlobStore::new(dir.path().join("media")).unwrap()),
        Backend::S3 => {
            let bucket = fresh_bucket().await;
            Arc::new(S3BlobStore::connect(&s3_config(&bucket)).await.unwrap())
        }
    };
    TestBlobs {
        store,
        dir,
        backend,
    }
}

/// A running media server.
pub struct Server {
    pub base: String,
    pub clock: Arc<ManualClock>,
    /// Where `clock` started (ms).
    pub start_ms: i64,
    pub tokens: Arc<TokenKeys>,
    pub service: Arc<MediaService>,
    pub dir: TempDir,
    pub backend: Backend,
    pub http: reqwest::Client,
    db: Option<TestDb>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// fs backends run on SQLite, S3 on PostgreSQL: both engines and both
    /// backends see every HTTP scenario.
    pub async fn start(backend: Backend) -> Self {
        Self::with(backend, |_| {}).await
    }

    pub async fn with(backend: Backend, tweak: impl FnOnce(&mut MediaConfig)) -> Self {
        Self::with_clock_at(backend, START_MS, tweak).await
    }

    /// Like [`Server::with`], with the manual clock starting at `start_ms`.
    /// Storage stamps objects with the real time, and the collector compares
    /// those stamps with the media clock: tests of staging-object ages start
    /// the clock at [`wall_clock_ms`].
    pub async fn with_clock_at(
        backend: Backend,
        start_ms: i64,
        tweak: impl FnOnce(&mut MediaConfig),
    ) -> Self {
        let db = match backend {
            Backend::Fs => TestDb::sqlite().await,
            Backend::S3 => TestDb::postgres().await,
        };
        // Auth's real schema: media checks tokens against its `devices` table.
        natter_auth::store::for_db(&db.db)
            .migrate()
            .await
            .expect("auth's migrations");
        let dir = TempDir::new("natter-media-test");
        let mut cfg = MediaConfig::for_tests();
        if backend == Backend::S3 {
            cfg.backend = BackendKind::S3;
            cfg.s3 = s3_config(&fresh_bucket().await);
        }
        tweak(&mut cfg);
        let clock = ManualClock::new(start_ms);
        let tokens = Arc::new(TokenKeys::new(b"test-signing-key", &[]));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let service = MediaService::build(
            cfg,
            &db.db,
            true,
            dir.path(),
            clock.clone(),
            tokens.clone(),
            base.clone(),
        )
        .await
        .expect("media service builds");
        let app = service.router();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            base,
            clock,
            start_ms,
            tokens,
            service: Arc::new(service),
            dir,
            backend,
            http: reqwest::Client::new(),
            db: Some(db),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Runs `sql` on the test database.
    pub async fn sql(&self, sql: &str) {
        match &self.db.as_ref().expect("database").db {
            Db::Sqlite(p) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(p)
                .await
                .map(|_| ()),
            Db::Postgres(p) => sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
                .execute(p)
                .await
                .map(|_| ()),
        }
        .expect("test SQL");
    }

    /// A valid access token for `user`'s device 1 (far past the manual clock).
    /// Media refuses tokens whose device is not logged in, so the account and
    /// device are created in auth's tables (its real migrations) first.
    pub async fn token(&self, user: &str) -> String {
        let sql = format!(
            "INSERT INTO accounts (user_id, number, created_at) VALUES ('{user}', '+test-{user}', 0) ON CONFLICT DO NOTHING;
             INSERT INTO devices (user_id, device_id, name, created_at, last_seen_at, generation)
             VALUES ('{user}', 1, 'test', 0, 0, 1) ON CONFLICT DO NOTHING;"
        );
        self.sql(&sql).await;
        let now = self.clock_secs();
        self.tokens.sign(&Claims {
            sub: user.into(),
            dev: 1,
            generation: 1,
            iat: now,
            exp: now + 10 * 365 * 86400,
        })
    }

    /// The manual clock's start, in seconds.
    pub fn clock_secs(&self) -> i64 {
        self.start_ms / 1000
    }

    pub fn media(&self) -> &Arc<natter_media::engine::Media> {
        self.service.media()
    }

    /// Staging objects present now (should be none once uploads are over).
    pub async fn staging_count(&self) -> usize {
        self.staging_ids().await.len()
    }

    /// The uploads that have staging objects now, however recent.
    pub async fn staging_ids(&self) -> Vec<natter_media::blob::UploadId> {
        let future = std::time::SystemTime::now() + Duration::from_secs(3600);
        self.media().blobs().list_staging(future).await.unwrap()
    }

    pub async fn cleanup(mut self) {
        self.task.abort();
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
    }
}

/// A JPEG photo of `w`×`h` with a gradient and some detail.
pub fn jpeg(w: u32, h: u32) -> Vec<u8> {
    encode(&photo(w, h), image::ImageFormat::Jpeg)
}

pub fn photo(w: u32, h: u32) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let v = ((x ^ y) & 0x1F) as u8;
        image::Rgb([
            (x * 255 / w) as u8,
            (y * 255 / h) as u8,
            96u8.wrapping_add(v),
        ])
    })
}

pub fn encode(img: &image::RgbImage, fmt: image::ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img.clone())
        .write_to(&mut out, fmt)
        .unwrap();
    out.into_inner()
}

/// A PNG header declaring `w`×`h` followed by junk: a decompression bomb's shape.
pub fn png_bomb(w: u32, h: u32) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    v.extend_from_slice(&w.to_be_bytes());
    v.extend_from_slice(&h.to_be_bytes());
    v.extend_from_slice(&[8, 2, 0, 0, 0, 0x12, 0x34, 0x56, 0x78]);
    v.extend_from_slice(b"\x00\x00\x04\x00IDAT");
    v.extend(std::iter::repeat_n(0u8, 1024));
    v
}

/// Pseudo-random bytes (deterministic).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    natter_media::BlobHash::of(data).to_hex()
}

/// The metadata row of `data` as an upload claims it (`MediaStore::claim_blob`)
/// before moving its bytes into place: `pending`.
pub fn pending_blob(data: &[u8], owner: &str, now_ms: i64) -> natter_media::store::BlobRecord {
    natter_media::store::BlobRecord {
        hash: sha256_hex(data),
        size: data.len() as i64,
        content_type: "application/octet-stream".into(),
        opaque: false,
        state: natter_media::store::state::PENDING.into(),
        width: None,
        height: None,
        thumb_width: None,
        thumb_height: None,
        preview: None,
        preview_width: None,
        preview_height: None,
        thumb_note: Some("no thumbnail: not an image or video".into()),
        uploader: owner.into(),
        created_at: now_ms,
        last_ref_at: now_ms,
        held_refs: 0,
    }
}

/// The real time now, in ms since the epoch.
pub fn wall_clock_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// How long [`eventually`] and the raw-socket helpers wait for the server.
pub const WAIT: Duration = Duration::from_secs(30);

/// Polls `check` until it holds (every 20 ms), failing after [`WAIT`].
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs each scenario against both shapes: local files on SQLite, and the S3
/// test server on PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod fs {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Backend::Fs).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::common::Backend::S3).await;
                }
            )*
        }
    };
}

/// A response, with the body read.
pub struct Resp {
    pub status: reqwest::StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| {
            panic!(
                "not JSON ({}): {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The error code of a JSON error body.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Server {
    pub async fn send(&self, req: reqwest::RequestBuilder) -> Resp {
        let r = req.send().await.expect("request reaches the server");
        let status = r.status();
        let headers = r.headers().clone();
        let body = r.bytes().await.map(|b| b.to_vec()).unwrap_or_default();
        Resp {
            status,
            headers,
            body,
        }
    }

    /// POST /v1/media as `user`.
    pub async fn upload(&self, user: &str, data: &[u8], query: &str) -> Resp {
        let url = self.url(&format!("/v1/media{query}"));
        self.send(
            self.http
                .post(url)
                .bearer_auth(self.token(user).await)
                .body(data.to_vec()),
        )
        .await
    }

    pub async fn get(&self, path_or_url: &str, user: Option<&str>) -> Resp {
        let url = if path_or_url.starts_with("http") {
            path_or_url.to_owned()
        } else {
            self.url(path_or_url)
        };
        let mut req = self.http.get(url);
        if let Some(u) = user {
            req = req.bearer_auth(self.token(u).await);
        }
        self.send(req).await
    }

    /// Writes raw bytes on a new connection, then goes away mid-request: the
    /// connection is closed for writing (the end of the stream arrives after
    /// every byte sent, as when a client's process dies), and the call returns
    /// once the server has read up to that end and finished with the
    /// connection (it closes it, answering or not).
    pub async fn raw_then_hang_up(&self, head: String, body: &[u8]) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self.base.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        s.shutdown().await.unwrap();
        // The server closes the connection only after reading the end of the
        // stream, which comes after all of `body`.
        let mut sink = Vec::new();
        let closed = tokio::time::timeout(WAIT, s.read_to_end(&mut sink)).await;
        assert!(
            closed.is_ok(),
            "the server did not close the connection within {WAIT:?} after the client went away"
        );
    }

    /// Starts a request on a raw connection and sends `body_part`, leaving the
    /// request open (more body to come).
    pub async fn raw_start(&self, head: &str, body_part: &[u8]) -> tokio::net::TcpStream {
        use tokio::io::AsyncWriteExt;
        let addr = self.base.trim_start_matches("http://");
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body_part).await.unwrap();
        s.flush().await.unwrap();
        s
    }

    /// Sends the rest of a request started with [`Server::raw_start`] (whose
    /// head asked for `Connection: close`) and reads the whole reply.
    pub async fn raw_finish(&self, mut s: tokio::net::TcpStream, rest: &[u8]) -> RawReply {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        s.write_all(rest).await.unwrap();
        s.flush().await.unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut out))
            .await
            .unwrap_or_else(|_| panic!("no complete reply within {WAIT:?}"))
            .unwrap();
        RawReply::parse(&out)
    }

    /// Writes `data` to a new staging object as an upload does, sealed (all
    /// of it arrived) or not.
    pub async fn stage(&self, data: &[u8], seal: bool) -> natter_media::blob::UploadId {
        let blobs = self.media().blobs();
        let id = natter_media::blob::UploadId::random();
        let state = blobs.begin(&id).await.unwrap();
        let mut a = blobs.append(&id, &state).await.unwrap();
        a.write(bytes::Bytes::copy_from_slice(data)).await.unwrap();
        a.finish(seal).await.unwrap();
        id
    }

    /// Blob rows, for "nothing half-stored" checks.
    pub async fn blob_exists(&self, hash: &str) -> bool {
        self.media().store().blob(hash).await.unwrap().is_some()
    }
}

/// An HTTP/1.1 reply read from a raw connection.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    /// Header names in lowercase.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawReply {
    fn parse(raw: &[u8]) -> Self {
        let end = raw
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no HTTP reply: {:?}", String::from_utf8_lossy(raw)));
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|c| c.parse().ok())
            .unwrap_or_else(|| panic!("bad status line in {head:?}"));
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Self {
            status,
            headers,
            body: raw[end + 4..].to_vec(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A TUS 1.0 client for `user`.
pub struct Tus<'a> {
    pub srv: &'a Server,
    pub token: String,
}

impl<'a> Tus<'a> {
    pub async fn new(srv: &'a Server, user: &str) -> Self {
        Self {
            srv,
            token: srv.token(user).await,
        }
    }

    pub fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        self.srv
            .http
            .request(method, url)
            .bearer_auth(&self.token)
            .header("tus-resumable", "1.0.0")
    }

    pub async fn create(&self, length: usize, metadata: &str) -> (Resp, String) {
        let mut req = self
            .req(reqwest::Method::POST, &self.srv.url("/v1/media/uploads"))
            .header("upload-length", length.to_string());
        if !metadata.is_empty() {
            req = req.header("upload-metadata", metadata);
        }
        let r = self.srv.send(req).await;
        let loc = r.header("location").unwrap_or_default().to_owned();
        (r, loc)
    }

    pub async fn patch(&self, url: &str, offset: usize, data: &[u8]) -> Resp {
        self.srv
            .send(
                self.req(reqwest::Method::PATCH, url)
                    .header("upload-offset", offset.to_string())
                    .header("content-type", "application/offset+octet-stream")
                    .body(data.to_vec()),
            )
            .await
    }

    pub async fn head(&self, url: &str) -> Resp {
        self.srv.send(self.req(reqwest::Method::HEAD, url)).await
    }

    pub fn offset(r: &Resp) -> usize {
        r.header("upload-offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no Upload-Offset in a {} response {:?}: {}",
                    r.status,
                    r.headers,
                    String::from_utf8_lossy(&r.body)
                )
            })
    }

    /// The upload id at the end of an upload URL.
    pub fn id(url: &str) -> String {
        url.rsplit('/').next().unwrap_or_default().to_owned()
    }
}
