//! The SDK's key-directory calls against an in-process server: keys the SDK
//! generates are accepted (their signature checks out on the server), one-time
//! prekeys are handed out once each, and the count tells the device to refill.

use natter_client::Api;
use natter_client::keys::DeviceKeys;
use natter_tests::server::InProcess;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_keys_publish_and_one_time_prekeys_are_claimed_once() {
    let server = InProcess::start("sqlite").await.unwrap();
    let api = Api::new(&server.url()).unwrap();
    let outbox = server.sms_outbox();
    let mut creds = Vec::new();
    for number in ["+14155550111", "+14155550112"] {
        let o = outbox.clone();
        creds.push(
            natter_client::register(&api, number, "keys-test", |s| async move {
                natter_client::code_from_outbox(&o, &s.session_id).await
            })
            .await
            .unwrap(),
        );
    }
    let (alice, bob) = (&creds[0], &creds[1]);

    let keys = DeviceKeys::generate(2);
    api.put_keys(&alice.access_token, &keys).await.unwrap();
    assert_eq!(api.prekey_count(&alice.access_token).await.unwrap(), 2);

    let mut claimed = Vec::new();
    for _ in 0..3 {
        let bundles = api
            .key_bundles(&bob.access_token, &alice.user_id)
            .await
            .unwrap();
        assert_eq!(bundles.len(), 1, "alice has one device");
        let b = &bundles[0];
        assert_eq!(b.identity_key, keys.identity.public_key);
        assert_eq!(b.signing_key, keys.signing_public());
        claimed.push(b.one_time_prekey.clone());
    }
    let ids: Vec<_> = claimed
        .iter()
        .map(|p| p.as_ref().map(|p| p["key_id"].as_u64().unwrap()))
        .collect();
    assert!(
        ids[0].is_some() && ids[1].is_some() && ids[0] != ids[1],
        "{ids:?}"
    );
    assert_eq!(
        ids[2], None,
        "no one-time prekey is left for the third fetch"
    );
    assert_eq!(api.prekey_count(&alice.access_token).await.unwrap(), 0);

    // A tampered signature is refused by the server.
    let mut bad = keys.clone();
    bad.signed_prekey_signature = DeviceKeys::generate(0).signed_prekey_signature;
    let err = api.put_keys(&alice.access_token, &bad).await.unwrap_err();
    assert!(
        matches!(&err, natter_client::Error::Api { status: 400, code, .. } if code == "invalid_key"),
        "{err}"
    );
}
