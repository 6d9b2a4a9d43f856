//! HTTP tests of tokens, devices, the key directory, profiles, lookup and
//! account deletion. Each runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use natter_common::token::{Claims, TokenKeys};
use serde_json::{Value, json};
use std::collections::HashSet;

const ALICE: &str = "+14155552671";
const BOB: &str = "+442079460958";

both_engines!(refresh_rotates_and_replay_revokes, async |h: &Harness| {
    let reg = h.register(ALICE).await;
    let r1 = refresh(&reg);
    let (s, v) = h
        .call(
            "POST",
            "/v1/tokens/refresh",
            None,
            Some(json!({"refresh_token": r1})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let r2 = refresh(&v);
    let t2 = token(&v);
    assert_ne!(r1, r2);
    let (s, _) = h.call("GET", "/v1/account", Some(&t2), None).await;
    assert_eq!(s, StatusCode::OK);
    // Replaying r1 revokes the device: r2 and t2 stop working.
    let (s, v) = h
        .call(
            "POST",
            "/v1/tokens/refresh",
            None,
            Some(json!({"refresh_token": r1})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("refresh_token_reused"))
    );
    let (s, _) = h
        .call(
            "POST",
            "/v1/tokens/refresh",
            None,
            Some(json!({"refresh_token": r2})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = h.call("GET", "/v1/account", Some(&t2), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_revoked"))
    );
    // Unknown and absurd refresh tokens.
    for bad in ["nope", "", &"x".repeat(5000)] {
        let (s, v) = h
            .call(
                "POST",
                "/v1/tokens/refresh",
                None,
                Some(json!({"refresh_token": bad})),
            )
            .await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_refresh_token"))
        );
    }
});

both_engines!(refresh_tokens_expire, async |h: &Harness| {
    let reg = h.register(ALICE).await;
    h.clock.advance_secs(60 * 24 * 3600);
    let (s, _) = h
        .call(
            "POST",
            "/v1/tokens/refresh",
            None,
            Some(json!({"refresh_token": refresh(&reg)})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
});

both_engines!(access_tokens_are_checked, async |h: &Harness| {
    let reg = h.register(ALICE).await;
    let t = token(&reg);
    let (s, headers, v) = h
        .call_raw("GET", "/v1/account", None, None, "198.51.100.7", false)
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("missing_token"))
    );
    assert_eq!(headers["www-authenticate"], "Bearer");
    for bad in ["garbage", "a.b.c", "...", &"x".repeat(3000)] {
        let (s, v) = h.call("GET", "/v1/account", Some(bad), None).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_token")),
            "{bad}"
        );
    }
    // Signed with another key, same claims.
    let claims = h.tokens.verify(&t, START_MS / 1000).unwrap();
    let forged = TokenKeys::new(b"someone-else's key", &[]).sign(&claims);
    let (s, v) = h.call("GET", "/v1/account", Some(&forged), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("invalid_token"))
    );
    // Right key, another device's generation: refused by the database check.
    let stale = h.tokens.sign(&Claims {
        generation: claims.generation.wrapping_add(1),
        ..claims.clone()
    });
    let (s, v) = h.call("GET", "/v1/account", Some(&stale), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_revoked"))
    );
    // Expired.
    h.clock.advance_secs(900);
    let (s, v) = h.call("GET", "/v1/account", Some(&t), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_expired"))
    );
});

both_engines!(logout_revokes_at_once, async |h: &Harness| {
    let reg = h.register(ALICE).await;
    let t = token(&reg);
    let (s, _) = h.call("POST", "/v1/tokens/logout", Some(&t), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call("GET", "/v1/account", Some(&t), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = h
        .call(
            "POST",
            "/v1/tokens/refresh",
            None,
            Some(json!({"refresh_token": refresh(&reg)})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
});

async fn link(h: &Harness, primary: &str, name: &str) -> (StatusCode, Value) {
    let (s, code) = h
        .call("POST", "/v1/devices/link-codes", Some(primary), None)
        .await;
    assert_eq!(s, StatusCode::CREATED, "{code}");
    h.call(
        "POST",
        "/v1/devices/link",
        None,
        Some(json!({"link_code": code["link_code"], "device_name": name})),
    )
    .await
}

both_engines!(devices_link_list_remove, async |h: &Harness| {
    let reg = h.register(ALICE).await;
    let primary = token(&reg);
    let mut linked = Vec::new();
    for i in 0..4 {
        let (s, v) = link(h, &primary, &format!("tablet {i}")).await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        assert_eq!(v["device_id"], i + 2);
        assert_eq!(v["user_id"], reg["user_id"]);
        linked.push(v);
    }
    let (s, v) = link(h, &primary, "one too many").await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("too_many_devices"))
    );
    let (_, list) = h
        .call("GET", "/v1/devices", Some(&token(&linked[0])), None)
        .await;
    let ids: Vec<i64> = list["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5]);
    assert_eq!(list["devices"][0]["primary"], true);

    // A link code works once and expires.
    let (_, code) = h
        .call("POST", "/v1/devices/link-codes", Some(&primary), None)
        .await;
    h.call("DELETE", "/v1/devices/5", Some(&primary), None)
        .await;
    let body = json!({"link_code": code["link_code"], "device_name": "again"});
    let (s, _) = h
        .call("POST", "/v1/devices/link", None, Some(body.clone()))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, v) = h.call("POST", "/v1/devices/link", None, Some(body)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_link_code"))
    );
    h.call("DELETE", "/v1/devices/5", Some(&primary), None)
        .await;
    let (_, code) = h
        .call("POST", "/v1/devices/link-codes", Some(&primary), None)
        .await;
    h.clock.advance_secs(601);
    let (s, _) = h
        .call(
            "POST",
            "/v1/devices/link",
            None,
            Some(json!({"link_code": code["link_code"], "device_name": "late"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Access tokens from before the clock jump expired; refresh them.
    let (s, fresh) = h
        .call(
            "POST",
            "/v1/tokens/refresh",
            None,
            Some(json!({"refresh_token": refresh(&reg)})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{fresh}");
    let primary = token(&fresh);
    let (s, fresh2) = h
        .call(
            "POST",
            "/v1/tokens/refresh",
            None,
            Some(json!({"refresh_token": refresh(&linked[0])})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{fresh2}");
    let second = token(&fresh2);

    // Only the primary links or removes other devices; a device may remove itself.
    let (s, _) = h
        .call("POST", "/v1/devices/link-codes", Some(&second), None)
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h.call("DELETE", "/v1/devices/3", Some(&second), None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, v) = h
        .call("DELETE", "/v1/devices/1", Some(&primary), None)
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("cannot_remove_primary"))
    );
    let (s, _) = h.call("DELETE", "/v1/devices/2", Some(&second), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _) = h.call("GET", "/v1/devices", Some(&second), None).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "a removed device's token stops working"
    );
    let (s, _) = h
        .call("DELETE", "/v1/devices/9", Some(&primary), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .call("DELETE", "/v1/devices/notanumber", Some(&primary), None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
});

struct DeviceKeys {
    signing: SigningKey,
    identity: [u8; 32],
}

fn device_keys(seed: u8) -> DeviceKeys {
    DeviceKeys {
        signing: SigningKey::from_bytes(&[seed; 32]),
        identity: [seed.wrapping_add(100); 32],
    }
}

fn keys_body(k: &DeviceKeys, prekey_ids: std::ops::Range<u32>) -> Value {
    let spk = [k.identity[0] ^ 0x55; 32];
    json!({
        "identity_key": B64.encode(k.identity),
        "signing_key": B64.encode(k.signing.verifying_key().to_bytes()),
        "signed_prekey": {"key_id": 7, "public_key": B64.encode(spk), "signature": B64.encode(k.signing.sign(&spk).to_bytes())},
        "one_time_prekeys": prekey_ids.map(|i| json!({"key_id": i, "public_key": B64.encode([i as u8; 32])})).collect::<Vec<_>>(),
    })
}

both_engines!(
    a_stranger_cannot_drain_one_time_prekeys,
    async |h: &Harness| {
        // Bob fetching Alice's bundle in a loop (about 20 GETs once emptied all
        // of them): past `limit_prekey_claims_per_pair` (10 per hour) his
        // bundles carry the signed prekey only, and Alice keeps the rest.
        let alice = h.register(ALICE).await;
        let bob = h.register(BOB).await;
        let (ta, tb) = (token(&alice), token(&bob));
        let (s, _) = h
            .call(
                "PUT",
                "/v1/keys",
                Some(&ta),
                Some(keys_body(&device_keys(1), 0..50)),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let alice_id = alice["user_id"].as_str().unwrap();
        let mut with_prekey = 0;
        for _ in 0..40 {
            let (s, b) = h
                .call("GET", &format!("/v1/keys/{alice_id}/1"), Some(&tb), None)
                .await;
            assert_eq!(s, StatusCode::OK, "the bundle itself is always served: {b}");
            assert!(b["signed_prekey"]["public_key"].is_string());
            if b["one_time_prekey"].is_object() {
                with_prekey += 1;
            }
        }
        assert_eq!(with_prekey, 10, "one caller claims at most 10 per hour");
        let (_, c) = h.call("GET", "/v1/keys/count", Some(&ta), None).await;
        assert_eq!(c["one_time_prekeys"], 40, "Alice keeps the rest");
        // Another caller still gets one.
        let carol = h.register("+14155550199").await;
        let (_, b) = h
            .call(
                "GET",
                &format!("/v1/keys/{alice_id}/1"),
                Some(&token(&carol)),
                None,
            )
            .await;
        assert!(b["one_time_prekey"].is_object(), "{b}");
    }
);

both_engines!(key_directory, async |h: &Harness| {
    let alice = h.register(ALICE).await;
    let bob = h.register(BOB).await;
    let (ta, tb) = (token(&alice), token(&bob));
    let k = device_keys(1);

    // Bad signature, bad lengths, bad base64.
    let mut bad = keys_body(&k, 0..0);
    bad["signed_prekey"]["signature"] = json!(B64.encode([0u8; 64]));
    let (s, v) = h.call("PUT", "/v1/keys", Some(&ta), Some(bad)).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_key"))
    );
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signature")
    );
    let mut bad = keys_body(&k, 0..0);
    bad["identity_key"] = json!(B64.encode([1u8; 31]));
    let (s, v) = h.call("PUT", "/v1/keys", Some(&ta), Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("identity_key must be 32 bytes"),
        "{v}"
    );
    let mut bad = keys_body(&k, 0..0);
    bad["signing_key"] = json!("not base64!");
    let (s, _) = h.call("PUT", "/v1/keys", Some(&ta), Some(bad)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = h
        .call("PUT", "/v1/keys", Some(&ta), Some(keys_body(&k, 0..101)))
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("too_many_prekeys"))
    );
    let mut dup = keys_body(&k, 0..2);
    dup["one_time_prekeys"][1]["key_id"] = json!(0);
    let (s, _) = h.call("PUT", "/v1/keys", Some(&ta), Some(dup)).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = h
        .call(
            "POST",
            "/v1/keys/one-time",
            Some(&ta),
            Some(json!({"one_time_prekeys": []})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("no_identity_key"))
    );

    // Upload 3 prekeys; the cap is 100 in all.
    let (s, v) = h
        .call("PUT", "/v1/keys", Some(&ta), Some(keys_body(&k, 0..3)))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["one_time_prekeys"], 3);
    let more: Vec<Value> = (3..100)
        .map(|i| json!({"key_id": i, "public_key": B64.encode([1u8; 32])}))
        .collect();
    let (s, v) = h
        .call(
            "POST",
            "/v1/keys/one-time",
            Some(&ta),
            Some(json!({"one_time_prekeys": more})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["one_time_prekeys"], 100);
    let (s, v) = h
        .call(
            "POST",
            "/v1/keys/one-time",
            Some(&ta),
            Some(
                json!({"one_time_prekeys": [{"key_id": 500, "public_key": B64.encode([1u8; 32])}]}),
            ),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("too_many_prekeys"))
    );

    // Bob fetches a bundle: the signed prekey verifies, one prekey is claimed.
    let alice_id = alice["user_id"].as_str().unwrap();
    let (s, b) = h
        .call("GET", &format!("/v1/keys/{alice_id}/1"), Some(&tb), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["one_time_prekey"]["key_id"], 0);
    assert_eq!(b["identity_key"], B64.encode(k.identity));
    let (_, c) = h.call("GET", "/v1/keys/count", Some(&ta), None).await;
    assert_eq!(c["one_time_prekeys"], 99);
    let (_, all) = h
        .call("GET", &format!("/v1/keys/{alice_id}"), Some(&tb), None)
        .await;
    assert_eq!(all["bundles"].as_array().unwrap().len(), 1);
    assert_eq!(all["bundles"][0]["one_time_prekey"]["key_id"], 1);
    // A duplicate id is refused, all or nothing.
    let (s, v) = h
        .call(
            "POST",
            "/v1/keys/one-time",
            Some(&ta),
            Some(
                json!({"one_time_prekeys": [{"key_id": 50, "public_key": B64.encode([1u8; 32])}]}),
            ),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("duplicate_key_id"))
    );
    // Unknown device / user.
    let (s, _) = h
        .call("GET", &format!("/v1/keys/{alice_id}/4"), Some(&tb), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h.call("GET", "/v1/keys/nobody", Some(&tb), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .call("GET", &format!("/v1/keys/{alice_id}/1"), None, None)
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // A new identity key drops the old identity's prekeys.
    let (s, v) = h
        .call(
            "PUT",
            "/v1/keys",
            Some(&ta),
            Some(keys_body(&device_keys(2), 0..0)),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["one_time_prekeys"], 0);
    let (_, b) = h
        .call("GET", &format!("/v1/keys/{alice_id}/1"), Some(&tb), None)
        .await;
    assert_eq!(
        b["one_time_prekey"],
        Value::Null,
        "exhausted: bundle without a one-time prekey"
    );
});

both_engines!(
    concurrent_claims_never_hand_out_a_prekey_twice,
    async |h: &Harness| {
        let alice = h.register(ALICE).await;
        let bob = h.register(BOB).await;
        let (s, _) = h
            .call(
                "PUT",
                "/v1/keys",
                Some(&token(&alice)),
                Some(keys_body(&device_keys(3), 0..20)),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        let path = format!("/v1/keys/{}/1", alice["user_id"].as_str().unwrap());
        // Alice's own account (a device linking itself claims from it): the
        // per-caller cap on claims (10) does not apply, only the race.
        let _ = bob;
        let tb = token(&alice);
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..50 {
            let app = h.app.clone();
            let (path, tb) = (path.clone(), tb.clone());
            tasks.spawn(async move {
                use tower::ServiceExt;
                let req = axum::http::Request::get(path)
                    .header("authorization", format!("Bearer {tb}"))
                    .body(axum::body::Body::empty())
                    .unwrap();
                let resp = app.oneshot(req).await.unwrap();
                assert_eq!(resp.status(), StatusCode::OK);
                let bytes = http_body_util::BodyExt::collect(resp.into_body())
                    .await
                    .unwrap()
                    .to_bytes();
                let v: Value = serde_json::from_slice(&bytes).unwrap();
                v["one_time_prekey"]["key_id"].as_i64()
            });
        }
        let mut claimed = Vec::new();
        while let Some(r) = tasks.join_next().await {
            if let Some(id) = r.unwrap() {
                claimed.push(id);
            }
        }
        let distinct: HashSet<i64> = claimed.iter().copied().collect();
        assert_eq!(
            claimed.len(),
            20,
            "every prekey handed out exactly once: {claimed:?}"
        );
        assert_eq!(distinct.len(), 20);
    }
);

both_engines!(profiles_and_lookup, async |h: &Harness| {
    let alice = h.register(ALICE).await;
    let bob = h.register(BOB).await;
    let ta = token(&alice);
    let avatar = "ab".repeat(32);
    let (s, p) = h
        .call(
            "PUT",
            "/v1/profile",
            Some(&ta),
            Some(json!({"display_name": "Alice", "about": "hi", "avatar": avatar})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    assert_eq!(p["display_name"], "Alice");
    let (s, p) = h
        .call(
            "PUT",
            "/v1/profile",
            Some(&ta),
            Some(json!({"about": "busy"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        (p["display_name"].as_str(), p["avatar"].as_str()),
        (Some("Alice"), Some(avatar.as_str()))
    );
    let (_, p) = h
        .call(
            "PUT",
            "/v1/profile",
            Some(&ta),
            Some(json!({"avatar": null})),
        )
        .await;
    assert_eq!(p["avatar"], Value::Null);
    for bad in [
        json!({"display_name": "x".repeat(65)}),
        json!({"about": "a\u{7}b"}),
        json!({"avatar": "../../etc/passwd"}),
    ] {
        let (s, v) = h.call("PUT", "/v1/profile", Some(&ta), Some(bad)).await;
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some("invalid_profile"))
        );
    }
    let (s, p) = h
        .call(
            "GET",
            &format!("/v1/profile/{}", alice["user_id"].as_str().unwrap()),
            Some(&token(&bob)),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(p["about"], "busy");
    let (s, _) = h
        .call("GET", "/v1/profile/nobody", Some(&token(&bob)), None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, v) = h
        .call(
            "POST",
            "/v1/accounts/lookup",
            Some(&token(&bob)),
            Some(json!({"number": "+1 415-555-2671"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["user_id"], alice["user_id"]);
    let (s, _) = h
        .call(
            "POST",
            "/v1/accounts/lookup",
            Some(&token(&bob)),
            Some(json!({"number": "+14155550199"})),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = h
        .call(
            "POST",
            "/v1/accounts/lookup",
            None,
            Some(json!({"number": ALICE})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
});

both_engines!(
    deleting_an_account_removes_every_row,
    async |h: &Harness| {
        let alice = h.register(ALICE).await;
        let ta = token(&alice);
        h.call(
            "PUT",
            "/v1/keys",
            Some(&ta),
            Some(keys_body(&device_keys(4), 0..5)),
        )
        .await;
        h.call(
            "PUT",
            "/v1/account/registration-lock",
            Some(&ta),
            Some(json!({"pin": "1357"})),
        )
        .await;
        let (_, linked) = link(h, &ta, "tablet").await;
        h.call("POST", "/v1/devices/link-codes", Some(&ta), None)
            .await;
        let (_, e) = h.call("POST", "/v1/account/totp", Some(&ta), None).await;
        let code = {
            use totp_rs::{Builder, Secret};
            Builder::new()
                .with_secret(Secret::try_from_base32(e["secret"].as_str().unwrap()).unwrap())
                .build()
                .unwrap()
                .generate((START_MS / 1000) as u64)
                .to_string()
        };
        let (s, _) = h
            .call(
                "POST",
                "/v1/account/totp/confirm",
                Some(&ta),
                Some(json!({"code": code})),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        h.start_session(ALICE).await;

        let user_id = alice["user_id"].as_str().unwrap();
        let before = h
            .service
            .state
            .store()
            .count_account_rows(user_id, ALICE)
            .await
            .unwrap();
        assert!(
            before.iter().all(|(_, n)| *n > 0),
            "every table has rows before: {before:?}"
        );

        let (s, _) = h
            .call("DELETE", "/v1/account", Some(&token(&linked)), None)
            .await;
        assert_eq!(
            s,
            StatusCode::FORBIDDEN,
            "only the primary deletes the account"
        );
        let (s, _) = h.call("DELETE", "/v1/account", Some(&ta), None).await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        let after = h
            .service
            .state
            .store()
            .count_account_rows(user_id, ALICE)
            .await
            .unwrap();
        assert!(
            after.iter().all(|(_, n)| *n == 0),
            "no rows left: {after:?}"
        );
        let (s, _) = h.call("GET", "/v1/account", Some(&ta), None).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
        // The number can register again, as a new account.
        let again = h.register(ALICE).await;
        assert_ne!(again["user_id"], alice["user_id"]);
    }
);

/// `auth.limit_lookup_per_user`: number lookups per caller are limited (they
/// reveal who is registered), 429 `rate_limited` with `Retry-After` beyond it,
/// and another caller keeps its own budget.
#[tokio::test]
async fn number_lookups_are_rate_limited_per_caller() {
    let cfg = natter_auth::AuthConfig {
        limit_lookup_per_user: natter_common::ratelimit::Quota::new(3, 60),
        ..natter_auth::AuthConfig::for_tests()
    };
    let h = Harness::with_config(Engine::Sqlite, cfg).await;
    let alice = h.register(ALICE).await;
    let bob = h.register(BOB).await;
    let lookup = |t: String| {
        let h = &h;
        async move {
            h.call_raw(
                "POST",
                "/v1/accounts/lookup",
                Some(&t),
                Some(json!({"number": ALICE}).to_string().into_bytes()),
                "198.51.100.7",
                true,
            )
            .await
        }
    };
    for n in 0..3 {
        let (s, _, v) = lookup(token(&bob)).await;
        assert_eq!(s, StatusCode::OK, "lookup {n}: {v}");
    }
    let (s, headers, v) = lookup(token(&bob)).await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"]["code"], "rate_limited");
    assert_eq!(headers["retry-after"], "20");
    let (s, _, _) = lookup(token(&alice)).await;
    assert_eq!(s, StatusCode::OK, "another caller has its own budget");
    h.cleanup().await;
}
