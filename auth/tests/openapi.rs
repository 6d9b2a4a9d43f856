//! The OpenAPI document is generated from the code, served at
//! /v1/openapi.json, and checked in at docs/api/auth.openapi.json. This test
//! fails when the checked-in copy is stale; `scripts/bless.sh` rewrites it
//! (it runs this test with `UPDATE_OPENAPI=1`; any other value only compares).

mod common;

use axum::http::StatusCode;
use common::*;

#[tokio::test]
async fn checked_in_document_matches_the_code() {
    let generated = natter_auth::openapi().to_pretty_json().unwrap() + "\n";
    let path = std::path::Path::new(
        &std::env::var_os("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../docs/api/auth.openapi.json");
    if std::env::var("UPDATE_OPENAPI").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/api/auth.openapi.json is stale: run scripts/bless.sh and review the diff"
    );
    // Every handler is documented.
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/registration/sessions",
        "/v1/registration/sessions/{session_id}/verify",
        "/v1/accounts",
        "/v1/tokens/refresh",
        "/v1/devices/link",
        "/v1/keys/{user_id}/{device_id}",
        "/v1/account/totp/confirm",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} missing from the OpenAPI document"
        );
    }
}

#[tokio::test]
async fn served_at_v1_openapi_json() {
    let h = Harness::new(Engine::Sqlite).await;
    let (s, v) = h.call("GET", "/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["info"]["title"], "Natter auth API");
    h.cleanup().await;
}
