//! auth and media in one process: a profile avatar holds a media reference,
//! changing it releases the old one, and an avatar that names no uploaded media
//! is refused. Runs the real binary (`natter serve`, the embedded shape).

use natter_tests::server::{ProcessServer, Server};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_natter");

async fn upload(http: &reqwest::Client, base: &str, token: &str, bytes: Vec<u8>) -> String {
    let r = http
        .post(format!("{base}/v1/media"))
        .bearer_auth(token)
        .body(bytes)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.unwrap()["hash"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn set_avatar(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    hash: &str,
) -> reqwest::Response {
    http.put(format!("{base}/v1/profile"))
        .bearer_auth(token)
        .json(&json!({ "avatar": hash }))
        .send()
        .await
        .unwrap()
}

async fn drop_ref(http: &reqwest::Client, base: &str, token: &str, hash: &str, user: &str) -> u16 {
    http.delete(format!("{base}/v1/media/{hash}/refs/profile/{user}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn avatars_hold_and_release_media_references() {
    let server = Server::Process(ProcessServer::start(BIN.into(), None).await.unwrap());
    let base = server.url();
    let api = natter_client::Api::new(&base).unwrap();
    let outbox = server.sms_outbox();
    let creds = natter_client::register(&api, "+14155550177", "avatar-test", |s| async move {
        natter_client::code_from_outbox(&outbox, &s.session_id).await
    })
    .await
    .unwrap();
    let (token, user) = (creds.access_token.as_str(), creds.user_id.as_str());
    let http = reqwest::Client::new();

    let first = upload(
        &http,
        &base,
        token,
        b"first avatar (text stands in for an image)".to_vec(),
    )
    .await;
    let second = upload(
        &http,
        &base,
        token,
        b"second avatar (text stands in for an image)".to_vec(),
    )
    .await;

    let r = set_avatar(&http, &base, token, &first).await;
    assert_eq!(r.status(), 200);
    let r = set_avatar(&http, &base, token, &second).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["avatar"], json!(second));

    // The first avatar's reference was released when the profile moved on; the
    // second one is held, in the user's name.
    assert_eq!(drop_ref(&http, &base, token, &first, user).await, 404);
    assert_eq!(drop_ref(&http, &base, token, &second, user).await, 204);

    // A hash that names no upload is refused, and the profile is unchanged.
    let r = set_avatar(&http, &base, token, &"ab".repeat(32)).await;
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "unknown_media"
    );
    let profile: Value = http
        .get(format!("{base}/v1/profile"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(profile["avatar"], json!(second));
    server.stop().await;
}
