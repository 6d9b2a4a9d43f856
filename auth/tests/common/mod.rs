//! Test harness: the auth router on a real database (SQLite or PostgreSQL), a
//! manual clock, and the SMS outbox in a temp dir.

#![allow(dead_code, unreachable_pub)]

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use natter_auth::AuthConfig;
use natter_auth::service::AuthService;
use natter_common::clock::ManualClock;
use natter_common::http::ClientIpPolicy;
use natter_common::testing::{TempDir, TestDb};
use natter_common::token::TokenKeys;
use serde_json::{Value, json};
use std::sync::Arc;
use tower::ServiceExt;

pub const START_MS: i64 = 1_800_000_000_000;

pub struct Harness {
    pub app: Router,
    pub clock: Arc<ManualClock>,
    pub dir: TempDir,
    pub tokens: Arc<TokenKeys>,
    pub service: AuthService,
    db: Option<TestDb>,
}

#[derive(Clone, Copy, Debug)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Harness {
    pub async fn new(engine: Engine) -> Self {
        Self::with_config(engine, AuthConfig::for_tests()).await
    }

    pub async fn with_config(engine: Engine, cfg: AuthConfig) -> Self {
        let db = match engine {
            Engine::Sqlite => TestDb::sqlite().await,
            Engine::Postgres => TestDb::postgres().await,
        };
        let dir = TempDir::new("natter-auth-test");
        let clock = ManualClock::new(START_MS);
        let tokens = Arc::new(TokenKeys::new(b"test-signing-key", &[]));
        let service = AuthService::build(
            cfg,
            &db.db,
            true,
            dir.path(),
            clock.clone(),
            tokens.clone(),
            900,
        )
        .await
        .expect("auth service builds");
        let app = service.router().layer(axum::Extension(ClientIpPolicy {
            forwarded_hops: 1,
            ..ClientIpPolicy::default()
        }));
        Self {
            app,
            clock,
            dir,
            tokens,
            service,
            db: Some(db),
        }
    }

    pub async fn cleanup(mut self) {
        if let Some(db) = self.db.take() {
            db.cleanup().await;
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        self.call_from(method, path, token, body, "198.51.100.7")
            .await
    }

    pub async fn call_from(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
        ip: &str,
    ) -> (StatusCode, Value) {
        let (status, _, v) = self
            .call_raw(
                method,
                path,
                token,
                body.map(|b| b.to_string().into_bytes()),
                ip,
                true,
            )
            .await;
        (status, v)
    }

    /// Sends raw bytes; returns status, headers and the JSON body (Null if none).
    pub async fn call_raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        ip: &str,
        json_content_type: bool,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("x-forwarded-for", ip);
        if let Some(t) = token {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        if json_content_type {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let req = req
            .body(body.map(Body::from).unwrap_or_else(Body::empty))
            .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, headers, v)
    }

    /// Every line of the SMS outbox.
    pub fn outbox(&self) -> Vec<Value> {
        let path = self.dir.path().join("outbox").join("sms.jsonl");
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The last code sent in a session.
    pub fn code_for(&self, session_id: &str) -> String {
        self.outbox()
            .iter()
            .rev()
            .find(|l| l["session_id"] == session_id)
            .map(|l| l["code"].as_str().unwrap().to_owned())
            .expect("a code was sent for this session")
    }

    pub async fn start_session(&self, number: &str) -> String {
        let (s, v) = self
            .call(
                "POST",
                "/v1/registration/sessions",
                None,
                Some(json!({"number": number})),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        v["session_id"].as_str().unwrap().to_owned()
    }

    pub async fn verified_session(&self, number: &str) -> String {
        let id = self.start_session(number).await;
        let code = self.code_for(&id);
        let (s, v) = self
            .call(
                "POST",
                &format!("/v1/registration/sessions/{id}/verify"),
                None,
                Some(json!({"code": code})),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert_eq!(v["verified"], true);
        id
    }

    /// Registers `number` on a new primary device; returns the response.
    pub async fn register(&self, number: &str) -> Value {
        let id = self.verified_session(number).await;
        let (s, v) = self
            .call(
                "POST",
                "/v1/accounts",
                None,
                Some(json!({"session_id": id, "device_name": "phone"})),
            )
            .await;
        assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s} {v}");
        v
    }
}

pub fn token(v: &Value) -> String {
    v["access_token"].as_str().unwrap().to_owned()
}

pub fn refresh(v: &Value) -> String {
    v["refresh_token"].as_str().unwrap().to_owned()
}

/// Runs an async test body against both engines.
#[macro_export]
macro_rules! both_engines {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                let h = Harness::new(Engine::Sqlite).await;
                ($body)(&h).await;
                h.cleanup().await;
            }
            #[tokio::test]
            async fn postgres() {
                let h = Harness::new(Engine::Postgres).await;
                ($body)(&h).await;
                h.cleanup().await;
            }
        }
    };
}
