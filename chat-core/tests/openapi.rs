//! The chat REST API's OpenAPI document: checked in as
//! `docs/api/chat.openapi.json`, generated from the handlers' annotations,
//! naming every REST route, and served at `/v1/chat/openapi.json`.

mod common;

use common::Server;
use natter_chat::ChatConfig;

const BLESS_OPENAPI: &str = "UPDATE_OPENAPI=1 cargo test -p natter-chat --test openapi";

/// The test only compares; with `UPDATE_OPENAPI=1` (exactly `1`) it writes
/// the file first.
#[tokio::test]
async fn openapi_document_is_checked_in_names_every_route_and_is_served() {
    let generated = natter_chat::api::openapi().to_pretty_json().unwrap() + "\n";
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api/chat.openapi.json");
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
        "docs/api/chat.openapi.json is stale; if the API change is intended, \
         bless it with `{BLESS_OPENAPI}` and commit the file"
    );
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    for (path, methods) in [
        ("/v1/messages/pending", &["get"][..]),
        ("/v1/messages/{msg_id}", &["get"]),
        ("/v1/groups", &["get", "post"]),
        ("/v1/groups/{group_id}", &["get", "patch"]),
        ("/v1/groups/{group_id}/members", &["post"]),
        ("/v1/groups/{group_id}/members/{user_id}", &["delete"]),
        ("/v1/groups/{group_id}/admins/{user_id}", &["put", "delete"]),
        ("/v1/presence/privacy", &["get", "put"]),
        ("/v1/presence/contacts", &["get", "put"]),
        ("/v1/presence/{user_id}", &["get"]),
        ("/v1/push/token", &["put", "delete"]),
    ] {
        for m in methods {
            let op = &doc["paths"][path][m];
            assert!(op.is_object(), "{m} {path} missing from the document");
            assert!(
                op["responses"].get("401").is_some(),
                "{m} {path}: the 401 answer is documented"
            );
        }
    }
    let s = Server::start("sqlite", ChatConfig::default()).await;
    let served: serde_json::Value = reqwest::get(s.http("/v1/chat/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served["info"]["title"], "Natter chat API");
    assert_eq!(served["paths"], doc["paths"]);
    s.stop().await;
}
