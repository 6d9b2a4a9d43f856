//! A structure-aware fuzz body for uploads: fuzz bytes become a script of
//! HTTP requests one hostile user (and a stranger) send to the real media
//! router, in process, on a real SQLite store and blob directory: TUS
//! creates (with and without a first chunk, with true and false `sha256`
//! claims), PATCHes at right and wrong offsets, with right, wrong and missing
//! checksums and content types, bodies past the declared length, lying
//! `Content-Length`s, garbage headers, HEADs, DELETEs, the stranger's tries
//! at the same upload ids, simple uploads and downloads; then time passes
//! and the collector runs. Raw header bytes alone (`upload_headers`) never get
//! past the first refusal into these paths.
//!
//! Invariants, checked after every request and at the end:
//! - no panic and no 5xx; every refusal is a JSON error with a code;
//! - an upload's offset only moves by bytes of a body it accepted, never
//!   past its length, and a checksum mismatch keeps nothing of its body;
//! - a completed upload is stored under the SHA-256 of exactly the bytes
//!   that were accepted, refuses to complete when that differs from a
//!   claimed hash, and downloads back byte for byte;
//! - the stranger can neither see, extend nor delete the user's uploads;
//! - the quota is exact: used bytes are the user's distinct stored blobs,
//!   reserved bytes the declared lengths of open uploads; once time passes
//!   and the collector runs, nothing of the script is left charged.
//!
//! Run by `media/fuzz` target `upload_session` (`scripts/fuzz.sh`); `cargo
//! test` replays the seeds in `media/fuzz/seeds/upload_session/`.

use crate::MediaConfig;
use crate::service::MediaService;
use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, StatusCode, header};
use base64::Engine;
use natter_common::clock::ManualClock;
use natter_common::db::{DatabaseConfig, SqliteSync};
use natter_common::token::{Claims, TokenKeys};
use natter_common::{Clock, Db};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use tower::ServiceExt;

/// Small limits so scripts reach them.
const MAX_UPLOAD: u64 = 2048;
const QUOTA: u64 = 8192;
const MAX_OPEN: u32 = 3;
const MAX_OPS: usize = 48;
const START_MS: i64 = 1_800_000_000_000;

/// The server every input talks to; each input is a fresh user.
struct Harness {
    rt: tokio::runtime::Runtime,
    service: MediaService,
    db: Db,
    clock: Arc<ManualClock>,
    tokens: Arc<TokenKeys>,
    next_user: AtomicU64,
    _dir: std::path::PathBuf,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("natter-upload-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let clock = ManualClock::new(START_MS);
        let tokens = Arc::new(TokenKeys::new(b"upload-fuzz-signing-key", &[]));
        let (service, db) = rt.block_on(async {
            // Durability is not what is fuzzed: no fsync per commit.
            let db_cfg = DatabaseConfig {
                sqlite_synchronous: SqliteSync::Normal,
                ..DatabaseConfig::default()
            };
            let db = Db::connect(&db_cfg, &dir).await.expect("database");
            // The part of auth's schema media reads (live-token checks).
            exec(
                &db,
                "CREATE TABLE accounts (user_id TEXT PRIMARY KEY, number TEXT, created_at BIGINT);
                 CREATE TABLE devices (user_id TEXT, device_id BIGINT, generation BIGINT,
                                       PRIMARY KEY (user_id, device_id));",
            )
            .await;
            let cfg = MediaConfig {
                max_upload_bytes: MAX_UPLOAD,
                quota_bytes_per_user: QUOTA,
                max_open_uploads_per_user: MAX_OPEN,
                video_thumbnails: false,
                thumbnail_concurrency: 1,
                ..MediaConfig::for_tests()
            };
            let service = MediaService::build(
                cfg,
                &db,
                true,
                &dir,
                clock.clone(),
                tokens.clone(),
                "http://media.invalid".into(),
            )
            .await
            .expect("media service");
            (service, db)
        });
        Harness {
            rt,
            service,
            db,
            clock,
            tokens,
            next_user: AtomicU64::new(1),
            _dir: dir,
        }
    })
}

async fn exec(db: &Db, sql: &str) {
    let sql = sqlx::AssertSqlSafe(sql.to_owned());
    match db {
        Db::Sqlite(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
        Db::Postgres(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
    }
    .expect("harness SQL");
}

/// `FUZZ_TRACE=1` prints every request and answer (to read a crash).
fn trace() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FUZZ_TRACE").is_some())
}

/// Reads the script; past its end every read is zero.
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> u8 {
        match self.0.split_first() {
            Some((b, rest)) => {
                self.0 = rest;
                *b
            }
            None => 0,
        }
    }
    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.byte(), self.byte()])
    }
    fn done(&self) -> bool {
        self.0.is_empty()
    }
    /// Content of `n` bytes: the script's own (flag set), else a pattern
    /// from one script byte, so large bodies do not eat the script.
    fn content(&mut self, n: usize, from_script: bool) -> Vec<u8> {
        if from_script {
            return self.bytes(n);
        }
        let seed = self.byte();
        (0..n)
            .map(|i| (i as u8).wrapping_mul(seed | 1).wrapping_add(seed))
            .collect()
    }
    /// `n` bytes: the script's own, then a filler derived from `n`.
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let take = n.min(self.0.len());
        let mut v = self.0[..take].to_vec();
        self.0 = &self.0[take..];
        v.extend((take..n).map(|i| (i * 31 + n) as u8));
        v
    }
}

/// One answer, with what the invariants look at.
struct Answer {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn offset(&self) -> Option<u64> {
        self.header("upload-offset").and_then(|v| v.parse().ok())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// An upload the script created, as the client knows it.
struct Slot {
    path: String,
    length: u64,
    /// What the client means to upload (PATCH bodies are cut from it).
    content: Vec<u8>,
    /// Bytes the server accepted, in order.
    accepted: Vec<u8>,
    claimed: Option<[u8; 32]>,
    open: bool,
}

struct Run<'h> {
    h: &'h Harness,
    token: String,
    stranger: String,
    slots: Vec<Slot>,
    /// Stored blobs this user owns: hex hash → bytes.
    owned: BTreeMap<String, Vec<u8>>,
    /// Statuses answered, for tests of the seeds.
    statuses: std::sync::Mutex<BTreeMap<u16, usize>>,
}

/// A header value of arbitrary bytes, less those no header may carry.
fn garbage_header(mut bytes: Vec<u8>) -> HeaderValue {
    bytes.retain(|&b| b == b'\t' || (b >= 0x20 && b != 0x7f));
    HeaderValue::from_bytes(&bytes).expect("visible bytes make a header value")
}

fn sha(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

impl Run<'_> {
    async fn send(&self, req: Request<Body>) -> Answer {
        let method = req.method().clone();
        let uri = req.uri().clone();
        let resp = self
            .h
            .service
            .router()
            .oneshot(req)
            .await
            .expect("the router is infallible");
        let status = resp.status();
        if trace() {
            eprintln!("{method} {uri} -> {status}");
        }
        *self
            .statuses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(status.as_u16())
            .or_default() += 1;
        let headers = resp.headers().clone();
        let body = axum::body::to_bytes(resp.into_body(), 1 << 20)
            .await
            .expect("response body")
            .to_vec();
        if trace() && !status.is_success() {
            eprintln!("  {}", String::from_utf8_lossy(&body));
        }
        assert!(
            !status.is_server_error(),
            "{method} {uri} answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
        if status.is_client_error() && method != Method::HEAD {
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                panic!(
                    "{method} {uri} {status}: not JSON: {:?}",
                    String::from_utf8_lossy(&body)
                )
            });
            assert!(
                v["error"]["code"].as_str().is_some_and(|c| !c.is_empty()),
                "{method} {uri} {status}: no error code in {v}"
            );
        }
        Answer {
            status,
            headers,
            body,
        }
    }

    fn request(&self, method: Method, path: &str, token: &str) -> axum::http::request::Builder {
        Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, format!("Bearer {token}"))
            .header("tus-resumable", "1.0.0")
    }

    /// The server's view of an upload: `Some(offset)` or `None` once gone.
    async fn head(&self, slot: usize, token: &str) -> Option<u64> {
        let req = self
            .request(Method::HEAD, &self.slots[slot].path, token)
            .body(Body::empty())
            .unwrap();
        let a = self.send(req).await;
        match a.status {
            StatusCode::OK => {
                let off = a.offset().expect("HEAD without Upload-Offset");
                let len: Option<u64> = a.header("upload-length").and_then(|v| v.parse().ok());
                assert_eq!(len, Some(self.slots[slot].length), "Upload-Length changed");
                assert!(off <= self.slots[slot].length, "offset past the length");
                Some(off)
            }
            StatusCode::NOT_FOUND | StatusCode::GONE => None,
            other => panic!("HEAD answered {other}"),
        }
    }

    /// Checks the server's offset against what the client knows, after a
    /// PATCH whose body was `body`: a refusal may have kept a prefix of it
    /// (a broken stream keeps what arrived), never more, never other bytes.
    async fn reconcile(&mut self, slot: usize, body: &[u8], kept_nothing: bool) {
        let before = self.slots[slot].accepted.len() as u64;
        match self.head(slot, &self.token.clone()).await {
            Some(off) => {
                assert!(self.slots[slot].open, "a finished upload came back");
                assert!(
                    off >= before && off - before <= body.len() as u64,
                    "offset {off} after {before} with a {}-byte body",
                    body.len()
                );
                if kept_nothing {
                    assert_eq!(off, before, "a checksum mismatch kept bytes");
                }
                let kept = &body[..(off - before) as usize];
                self.slots[slot].accepted.extend_from_slice(kept);
            }
            None => self.slots[slot].open = false,
        }
    }

    /// A completing answer: the blob is the accepted bytes.
    fn completed(&mut self, slot: usize, hash: &str) {
        let s = &mut self.slots[slot];
        assert_eq!(s.accepted.len() as u64, s.length, "completed early");
        let want = hex::encode(sha(&s.accepted));
        assert_eq!(hash, want, "stored under another hash than its bytes");
        if let Some(c) = s.claimed {
            assert_eq!(c, sha(&s.accepted), "completed despite a false claim");
        }
        s.open = false;
        let bytes = s.accepted.clone();
        self.owned.insert(want, bytes);
    }

    async fn create(&mut self, sc: &mut Script<'_>) {
        let flags = sc.byte();
        let length = u64::from(sc.u16()) % (MAX_UPLOAD + 64);
        let content = sc.content(length as usize, flags & 16 != 0);
        let claimed = match flags & 3 {
            _ if flags & 32 != 0 => None, // garbage metadata instead
            1 => Some(sha(&content)),
            2 => Some(sha(b"something else")),
            _ => None,
        };
        // Opaque (end-to-end-encrypted) uploads must claim their hash; others
        // are sniffed, and most fuzz bytes are then a type not allowed.
        let mut meta = Vec::new();
        if claimed.is_some() || flags & 64 != 0 {
            meta.push(format!("opaque {}", b64(b"true")));
        }
        if let Some(c) = claimed {
            meta.push(format!("sha256 {}", b64(hex::encode(c).as_bytes())));
        }
        if flags & 4 != 0 {
            meta.push(format!("filename {}", b64(&sc.bytes(8))));
        }
        let first = if flags & 8 != 0 {
            let n = (sc.byte() as usize * 4).min(content.len());
            Some(content[..n].to_vec())
        } else {
            None
        };
        let meta = if flags & 32 != 0 {
            garbage_header(sc.bytes(16))
        } else {
            HeaderValue::from_str(&meta.join(",")).expect("base64 metadata")
        };
        let mut req = self
            .request(Method::POST, "/v1/media/uploads", &self.token)
            .header("upload-length", length.to_string())
            .header("upload-metadata", meta);
        let body = match &first {
            Some(b) => {
                req = req
                    .header(header::CONTENT_TYPE, crate::tus::PATCH_CONTENT_TYPE)
                    .header(header::CONTENT_LENGTH, b.len());
                Body::from(b.clone())
            }
            None => Body::empty(),
        };
        let a = self.send(req.body(body).unwrap()).await;
        if a.status != StatusCode::CREATED {
            // A refusal for a limit holds only where the limit was reached.
            let open = self.slots.iter().filter(|s| s.open).count() as u32;
            match a.status {
                StatusCode::PAYLOAD_TOO_LARGE => assert!(
                    length > MAX_UPLOAD || self.used() + self.reserved() + length > QUOTA,
                    "413 within the limits: {}",
                    String::from_utf8_lossy(&a.body)
                ),
                StatusCode::CONFLICT => assert!(open >= MAX_OPEN, "409 with {open} open"),
                _ => {}
            }
            return;
        }
        let location = a.header("location").expect("201 without Location");
        let path = location
            .strip_prefix("http://media.invalid")
            .unwrap_or(location)
            .to_owned();
        let off = a.offset().expect("201 without Upload-Offset");
        let sent = first.unwrap_or_default();
        assert!(off <= sent.len() as u64, "offset past the first chunk");
        self.slots.push(Slot {
            path,
            length,
            content,
            accepted: sent[..off as usize].to_vec(),
            claimed,
            open: true,
        });
        let slot = self.slots.len() - 1;
        if let Some(hash) = a.header("natter-media-hash").map(str::to_owned) {
            self.completed(slot, &hash);
        }
    }

    async fn patch(&mut self, sc: &mut Script<'_>, as_stranger: bool) {
        if self.slots.is_empty() {
            return;
        }
        let slot = sc.byte() as usize % self.slots.len();
        let flags = sc.byte();
        let n = sc.byte() as usize * 3;
        let s = &self.slots[slot];
        let at = s.accepted.len();
        let mut body: Vec<u8> = s.content.iter().skip(at).take(n).copied().collect();
        if flags & 1 != 0 {
            let more = sc.byte() as usize;
            body.extend(sc.bytes(more)); // past the end, or just other bytes
        }
        if flags & 2 != 0 && !body.is_empty() {
            body[0] ^= 0x5a;
        }
        let offset = if flags & 4 != 0 {
            HeaderValue::from(sc.u16())
        } else if flags & 8 != 0 {
            garbage_header(sc.bytes(6))
        } else {
            HeaderValue::from(at)
        };
        let token = if as_stranger {
            self.stranger.clone()
        } else {
            self.token.clone()
        };
        let mut req = self
            .request(Method::PATCH, &s.path, &token)
            .header("upload-offset", offset);
        if flags & 16 == 0 {
            req = req.header(header::CONTENT_TYPE, crate::tus::PATCH_CONTENT_TYPE);
        }
        let checksum = flags >> 5;
        match checksum {
            1 => req = req.header("upload-checksum", format!("sha256 {}", b64(&sha(&body)))),
            2 => req = req.header("upload-checksum", format!("sha256 {}", b64(&[0; 32]))),
            3 => req = req.header("upload-checksum", garbage_header(sc.bytes(10))),
            _ => {}
        }
        // A lying Content-Length now and then.
        let declared = if checksum == 4 {
            body.len() + usize::from(sc.byte())
        } else {
            body.len()
        };
        req = req.header(header::CONTENT_LENGTH, declared);
        let was_open = s.open;
        let a = self.send(req.body(Body::from(body.clone())).unwrap()).await;
        if as_stranger {
            assert!(
                !a.status.is_success(),
                "the stranger's PATCH answered {}",
                a.status
            );
            let off = self.head(slot, &self.token.clone()).await;
            if was_open {
                assert_eq!(
                    off,
                    Some(self.slots[slot].accepted.len() as u64),
                    "the stranger's PATCH changed the upload"
                );
            }
            return;
        }
        if a.status == StatusCode::NO_CONTENT && !was_open {
            // Only a retried final PATCH of a completed upload: a no-op that
            // answers as the original did.
            let s = &self.slots[slot];
            let hash = a
                .header("natter-media-hash")
                .expect("replay without a hash");
            assert!(
                self.owned.contains_key(hash) && s.accepted.len() as u64 == s.length,
                "a PATCH to a finished upload was accepted"
            );
            assert_eq!(a.offset(), Some(s.length));
        } else if a.status == StatusCode::NO_CONTENT {
            let off = a.offset().expect("204 without Upload-Offset");
            let before = self.slots[slot].accepted.len() as u64;
            assert_eq!(off, before + body.len() as u64, "204 kept part of the body");
            self.slots[slot].accepted.extend_from_slice(&body);
            if let Some(hash) = a.header("natter-media-hash").map(str::to_owned) {
                self.completed(slot, &hash);
            } else {
                assert!(off < self.slots[slot].length, "complete without a hash");
            }
        } else if was_open {
            let kept_nothing = a.status.as_u16() == crate::error::CHECKSUM_MISMATCH;
            self.reconcile(slot, &body, kept_nothing).await;
        }
    }

    async fn delete(&mut self, sc: &mut Script<'_>, as_stranger: bool) {
        if self.slots.is_empty() {
            return;
        }
        let slot = sc.byte() as usize % self.slots.len();
        let token = if as_stranger {
            self.stranger.clone()
        } else {
            self.token.clone()
        };
        let req = self
            .request(Method::DELETE, &self.slots[slot].path, &token)
            .body(Body::empty())
            .unwrap();
        let a = self.send(req).await;
        if as_stranger {
            assert!(!a.status.is_success(), "the stranger deleted an upload");
        } else if a.status == StatusCode::NO_CONTENT {
            self.slots[slot].open = false;
        }
        if self.slots[slot].open {
            let off = self.head(slot, &self.token.clone()).await;
            assert_eq!(off, Some(self.slots[slot].accepted.len() as u64));
        }
    }

    async fn simple_upload(&mut self, sc: &mut Script<'_>) {
        let flags = sc.byte();
        let n = sc.u16() as usize % (MAX_UPLOAD as usize + 64);
        let body = sc.content(n, flags & 4 != 0);
        let mut path = String::from("/v1/media?opaque=");
        path += if flags & 3 != 0 || flags & 8 != 0 {
            "true"
        } else {
            "false"
        };
        match flags & 3 {
            1 => path += &format!("&sha256={}", hex::encode(sha(&body))),
            2 => path += &format!("&sha256={}", hex::encode(sha(b"not it"))),
            3 => path += &format!("&sha256={}", hex::encode(sc.bytes(3))),
            _ => {}
        }
        let req = self
            .request(Method::POST, &path, &self.token)
            .header(header::CONTENT_LENGTH, body.len())
            .body(Body::from(body.clone()))
            .unwrap();
        let a = self.send(req).await;
        if a.status.is_success() {
            let hash = a.json()["hash"].as_str().expect("hash").to_owned();
            assert_eq!(hash, hex::encode(sha(&body)), "stored under another hash");
            assert!(flags & 3 != 2, "stored despite a false claim");
            self.owned.insert(hash, body);
        }
    }

    async fn download(&mut self, sc: &mut Script<'_>) {
        if self.owned.is_empty() {
            return;
        }
        let i = sc.byte() as usize % self.owned.len();
        let (hash, bytes) = self.owned.iter().nth(i).expect("index in range");
        let who = if sc.byte() & 1 == 0 {
            &self.token
        } else {
            &self.stranger
        };
        let req = self
            .request(Method::GET, &format!("/v1/media/{hash}"), who)
            .body(Body::empty())
            .unwrap();
        let a = self.send(req).await;
        assert_eq!(a.status, StatusCode::OK, "a stored blob did not download");
        assert!(a.body == *bytes, "downloaded bytes differ");
    }

    fn used(&self) -> u64 {
        self.owned.values().map(|b| b.len() as u64).sum()
    }

    fn reserved(&self) -> u64 {
        self.slots.iter().filter(|s| s.open).map(|s| s.length).sum()
    }

    /// The quota is exact after every step.
    async fn check_usage(&self) {
        let req = self
            .request(Method::GET, "/v1/media/usage", &self.token)
            .body(Body::empty())
            .unwrap();
        let v = self.send(req).await.json();
        assert_eq!(v["used_bytes"].as_u64(), Some(self.used()), "used: {v}");
        assert_eq!(
            v["reserved_bytes"].as_u64(),
            Some(self.reserved()),
            "reserved: {v}"
        );
    }
}

/// Runs one script.
pub fn upload_script(data: &[u8]) {
    run_script(data);
}

/// Runs one script; how often each status was answered.
fn run_script(data: &[u8]) -> BTreeMap<u16, usize> {
    let h = harness();
    let n = h.next_user.fetch_add(1, Ordering::Relaxed);
    let user = format!("fz{n}");
    let stranger = format!("st{n}");
    h.rt.block_on(async {
        exec(
            &h.db,
            &format!(
                "INSERT INTO devices (user_id, device_id, generation) VALUES ('{user}', 1, 1), ('{stranger}', 1, 1);"
            ),
        )
        .await;
        let now = h.clock.now_ms() / 1000;
        let token = |sub: &str| {
            h.tokens.sign(&Claims {
                sub: sub.into(),
                dev: 1,
                generation: 1,
                iat: now,
                exp: now + 100 * 365 * 86_400,
            })
        };
        let mut run = Run {
            h,
            token: token(&user),
            stranger: token(&stranger),
            slots: Vec::new(),
            owned: BTreeMap::new(),
            statuses: Default::default(),
        };
        let mut sc = Script(data);
        for _ in 0..MAX_OPS {
            if sc.done() {
                break;
            }
            let op = sc.byte();
            if trace() {
                eprintln!("op {op}");
            }
            match op % 10 {
                0 | 1 => run.create(&mut sc).await,
                2..=4 => run.patch(&mut sc, false).await,
                5 => run.patch(&mut sc, true).await,
                6 => {
                    let as_stranger = sc.0.first().is_some_and(|b| b & 1 == 1);
                    run.delete(&mut sc, as_stranger).await
                }
                7 => run.simple_upload(&mut sc).await,
                8 => run.download(&mut sc).await,
                _ => {
                    if !run.slots.is_empty() {
                        let slot = sc.byte() as usize % run.slots.len();
                        let off = run.head(slot, &run.stranger.clone()).await;
                        assert_eq!(off, None, "the stranger saw an upload");
                    }
                }
            }
            run.check_usage().await;
        }
        // Time passes: every upload expires, every blob outlives its
        // retention; the collector leaves nothing of this script charged.
        let cfg = h.service.media().config();
        let later = (cfg.retention_secs + u64::from(cfg.upload_expiry_secs) + 7200) as i64;
        h.clock.advance_ms(later * 1000);
        for _ in 0..16 {
            let r = h.service.media().collect_garbage().await.expect("collector");
            if r.blobs == 0 && r.uploads == 0 {
                break;
            }
        }
        run.slots.iter_mut().for_each(|s| s.open = false);
        run.owned.clear();
        run.check_usage().await;
        run.statuses.into_inner().unwrap_or_else(|p| p.into_inner())
    })
}

/// Seed scripts (committed under `media/fuzz/seeds/upload_session/`):
/// each walks a family of paths once, for the fuzzer to mutate.
#[cfg(test)]
pub(crate) fn seed_scripts() -> Vec<(&'static str, Vec<u8>)> {
    let le = |n: u16| n.to_le_bytes();
    let mut plain = vec![0, 0b1001];
    plain.extend(le(100));
    plain.extend([7, 10]); // pattern 7; first chunk 40 bytes
    plain.extend([2, 0, 0, 20]); // PATCH the other 60
    plain.extend([8, 0, 0, 8, 0, 1]); // download as the user and the stranger
    plain.extend([2, 0, 0, 0]); // the final PATCH again (a replay)
    let mut claims = vec![0, 0b0010];
    claims.extend(le(60));
    claims.extend([3, 2, 0, 0, 20]); // false claim: the completing PATCH is 422
    claims.extend([7, 0b101]);
    claims.extend(le(30));
    claims.extend([b'x'; 30]); // a simple upload of the script's bytes, true claim
    claims.extend([7, 0b10]);
    claims.extend(le(30));
    claims.push(9); // a simple upload with a false claim
    claims.extend([8, 0, 0]);
    let mut stranger = vec![0, 1];
    stranger.extend(le(200));
    stranger.push(1);
    stranger.extend([5, 0, 0, 10, 9, 0, 6, 1]); // the stranger's PATCH, HEAD, DELETE
    stranger.extend([2, 0, 0b0010_0000, 10]); // a PATCH with its true checksum
    stranger.extend([2, 0, 0b0100_0000, 10]); // and with a false one (460)
    stranger.extend([2, 0, 0b0000_0100, 10, 5, 0]); // at a wrong offset (409)
    stranger.extend([2, 0, 0b0001_0000, 10]); // the wrong Content-Type (415)
    stranger.extend([2, 0, 0b1000_0000, 10, 50]); // a lying Content-Length
    stranger.extend([2, 0, 0b0000_0001, 10, 150]); // past the length (413), last:
    // its extra bytes are the rest of the script.
    let mut limits = Vec::new();
    for _ in 0..4 {
        limits.extend([0, 1]);
        limits.extend(le(1000));
        limits.push(5); // four open uploads: the fourth is 409
    }
    limits.extend([1, 0]);
    limits.extend(le(2100));
    limits.push(1); // past max_upload_bytes: 413
    limits.extend([0, 0]);
    limits.extend(le(0));
    limits.push(1); // an empty upload completes at once
    limits.extend([6, 0]); // the owner's DELETE
    vec![
        ("plain", plain),
        ("claims", claims),
        ("stranger", stranger),
        ("limits", limits),
    ]
}

#[cfg(test)]
mod tests {
    /// Each seed passes, and its prefixes (where most mutations start);
    /// whole, each reaches the answers it was written for.
    #[test]
    fn the_seed_scripts_pass_and_reach_their_paths() {
        for (name, script) in super::seed_scripts() {
            for cut in [script.len() / 2, 3] {
                super::run_script(&script[..cut.min(script.len())]);
            }
            if super::trace() {
                eprintln!("seed {name}");
            }
            let seen = super::run_script(&script);
            let want: &[u16] = match name {
                "plain" => &[201, 204, 200],
                "claims" => &[201, 422, 200],
                "stranger" => &[201, 204, 404, 409, 413, 415, 460],
                _ => &[201, 409, 413],
            };
            for code in want {
                assert!(seen.contains_key(code), "{name}: no {code} in {seen:?}");
            }
        }
    }
}
