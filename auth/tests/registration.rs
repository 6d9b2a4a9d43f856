//! HTTP tests of registration: sessions, codes, limits, account creation,
//! re-registration, registration lock and TOTP. Each runs on SQLite and PostgreSQL.

mod common;

use axum::http::StatusCode;
use common::*;
use serde_json::json;

const ALICE: &str = "+14155552671";
const BOB: &str = "+442079460958";

both_engines!(full_registration_flow, async |h: &Harness| {
    let (s, v) = h
        .call(
            "POST",
            "/v1/registration/sessions",
            None,
            Some(json!({"number": "+1 (415) 555-2671"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["number"], ALICE);
    assert_eq!(v["attempts_left"], 5);
    assert_eq!(v["verified"], false);
    assert_eq!(v["code_expires_at"], START_MS / 1000 + 600);
    assert_eq!(v["next_code_at"], START_MS / 1000 + 60);
    let id = v["session_id"].as_str().unwrap().to_owned();

    let line = h.outbox().pop().unwrap();
    assert_eq!(line["to"], ALICE);
    let code = line["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6);
    assert!(line["text"].as_str().unwrap().contains(&code));

    let (s, v) = h
        .call(
            "GET",
            &format!("/v1/registration/sessions/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["verified"], false);

    let (s, _) = h
        .call(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"session_id": id, "device_name": "phone"})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "registering before verifying is refused"
    );

    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/registration/sessions/{id}/verify"),
            None,
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["verified"], true);

    let (s, v) = h
        .call(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"session_id": id, "device_name": "Pixel"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(v["device_id"], 1);
    assert_eq!(v["reregistered"], false);
    assert_eq!(v["access_expires_at"], START_MS / 1000 + 900);
    let claims = h
        .tokens
        .verify(v["access_token"].as_str().unwrap(), START_MS / 1000)
        .unwrap();
    assert_eq!(claims.sub, v["user_id"].as_str().unwrap());
    assert_eq!(claims.dev, 1);

    let (s, acct) = h.call("GET", "/v1/account", Some(&token(&v)), None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(acct["number"], ALICE);
    assert_eq!(acct["registration_lock"], false);

    // A used session cannot register again.
    let (s, e) = h
        .call(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"session_id": id, "device_name": "Pixel"})),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(e["error"]["code"], "session_used");
});

both_engines!(garbage_input_gets_clear_errors, async |h: &Harness| {
    let cases: Vec<(Option<Vec<u8>>, bool, StatusCode, &str)> = vec![
        (
            Some(br#"{"number":"hello"}"#.to_vec()),
            true,
            StatusCode::BAD_REQUEST,
            "invalid_phone_number",
        ),
        (
            Some(br#"{"number":"4155552671"}"#.to_vec()),
            true,
            StatusCode::BAD_REQUEST,
            "invalid_phone_number",
        ),
        (
            Some(br#"{"number":"+1 415"}"#.to_vec()),
            true,
            StatusCode::BAD_REQUEST,
            "invalid_phone_number",
        ),
        (
            Some(br#"{"number":"#.to_vec()),
            true,
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            Some(br#"{"number":5}"#.to_vec()),
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Some(br#"{}"#.to_vec()),
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Some(br#"{"number":"+14155552671","extra":1}"#.to_vec()),
            true,
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
        ),
        (
            Some(br#"{"number":"+14155552671"}"#.to_vec()),
            false,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            Some(vec![b' '; 70 * 1024]),
            true,
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
    ];
    for (body, ct, status, code) in cases {
        let (s, _, v) = h
            .call_raw(
                "POST",
                "/v1/registration/sessions",
                None,
                body,
                "198.51.100.1",
                ct,
            )
            .await;
        assert_eq!(s, status, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty());
    }
    // The field name is in the message for wrong types.
    let (_, v) = h
        .call(
            "POST",
            "/v1/registration/sessions",
            None,
            Some(json!({"number": 5})),
        )
        .await;
    assert!(
        v["error"]["message"].as_str().unwrap().contains("number"),
        "{v}"
    );
    // Unknown sessions and malformed codes.
    let (s, v) = h
        .call("GET", "/v1/registration/sessions/nope", None, None)
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("session_not_found"))
    );
    let id = h.start_session(ALICE).await;
    for bad in ["12345", "abcdef", "1234567", ""] {
        let (s, v) = h
            .call(
                "POST",
                &format!("/v1/registration/sessions/{id}/verify"),
                None,
                Some(json!({"code": bad})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert_eq!(v["error"]["code"], "invalid_code");
    }
    // Malformed codes do not use up attempts.
    let (_, v) = h
        .call(
            "GET",
            &format!("/v1/registration/sessions/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(v["attempts_left"], 5);
    // No route: still JSON-free 404, nothing panics.
    let (s, _) = h.call("GET", "/v1/nothing-here", None, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
});

both_engines!(five_wrong_codes_burn_the_session, async |h: &Harness| {
    let id = h.start_session(ALICE).await;
    let right = h.code_for(&id);
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for left in (0..5).rev() {
        let (s, v) = h
            .call(
                "POST",
                &format!("/v1/registration/sessions/{id}/verify"),
                None,
                Some(json!({"code": wrong})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
        assert_eq!(v["error"]["code"], "wrong_code");
        assert_eq!(v["error"]["attempts_left"], left);
    }
    // The 6th try is refused even with the right code.
    let (s, headers, v) = h
        .call_raw(
            "POST",
            &format!("/v1/registration/sessions/{id}/verify"),
            None,
            Some(json!({"code": right}).to_string().into_bytes()),
            "198.51.100.7",
            true,
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
    assert_eq!(v["error"]["code"], "too_many_attempts");
    assert!(headers.get("retry-after").is_some());
    let (s, _) = h
        .call(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"session_id": id, "device_name": "x"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
});

both_engines!(codes_expire_after_ten_minutes, async |h: &Harness| {
    let id = h.start_session(ALICE).await;
    let code = h.code_for(&id);
    h.clock.advance_secs(600);
    let (s, v) = h
        .call(
            "POST",
            &format!("/v1/registration/sessions/{id}/verify"),
            None,
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(s, StatusCode::GONE, "{v}");
    assert_eq!(v["error"]["code"], "code_expired");
    // A new code works.
    let (s, _) = h
        .call(
            "POST",
            &format!("/v1/registration/sessions/{id}/code"),
            None,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let code = h.code_for(&id);
    let (s, _) = h
        .call(
            "POST",
            &format!("/v1/registration/sessions/{id}/verify"),
            None,
            Some(json!({"code": code})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Sessions themselves end after an hour.
    let id = h.start_session(BOB).await;
    h.clock.advance_secs(3600);
    let (s, v) = h
        .call(
            "GET",
            &format!("/v1/registration/sessions/{id}"),
            None,
            None,
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::GONE, Some("session_expired"))
    );
});

both_engines!(resend_waits_grow, async |h: &Harness| {
    let id = h.start_session(ALICE).await;
    let path = format!("/v1/registration/sessions/{id}/code");
    for wait in [60i64, 120, 300, 600, 600] {
        let (s, headers, v) = h
            .call_raw("POST", &path, None, None, "198.51.100.7", true)
            .await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
        assert_eq!(v["error"]["code"], "resend_too_soon");
        assert_eq!(headers["retry-after"], wait.to_string().as_str());
        h.clock.advance_secs(wait - 1);
        let (s, _) = h.call("POST", &path, None, None).await;
        assert_eq!(
            s,
            StatusCode::TOO_MANY_REQUESTS,
            "one second early is still too soon"
        );
        h.clock.advance_secs(1);
        let (s, v) = h
            .call("POST", &path, None, Some(json!({"transport": "voice"})))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    assert_eq!(h.outbox().last().unwrap()["transport"], "voice");
    // Only the newest code works.
    let codes: Vec<String> = h
        .outbox()
        .iter()
        .map(|l| l["code"].as_str().unwrap().to_owned())
        .collect();
    let newest = codes.last().unwrap().clone();
    if let Some(old) = codes.iter().rev().skip(1).find(|c| **c != newest) {
        let (s, _) = h
            .call(
                "POST",
                &format!("/v1/registration/sessions/{id}/verify"),
                None,
                Some(json!({"code": old})),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
    }
    let (s, _) = h
        .call(
            "POST",
            &format!("/v1/registration/sessions/{id}/verify"),
            None,
            Some(json!({"code": newest})),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = h.call("POST", &path, None, None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("already_verified"))
    );
});

both_engines!(rate_limits_per_number_ip_and_prefix, async |h: &Harness| {
    // Per number: 6 per hour, from different addresses.
    for i in 0..6 {
        let (s, _) = h
            .call_from(
                "POST",
                "/v1/registration/sessions",
                None,
                Some(json!({"number": ALICE})),
                &format!("203.0.113.{i}"),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, headers, v) = h
        .call_raw(
            "POST",
            "/v1/registration/sessions",
            None,
            Some(json!({"number": ALICE}).to_string().into_bytes()),
            "203.0.113.99",
            true,
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(v["error"]["code"], "rate_limited");
    assert_eq!(headers["retry-after"], "600");
    // Per IP: 20 per hour across numbers.
    for i in 0..20 {
        let n = format!("+1415555{:04}", 3000 + i * 7);
        let (s, v) = h
            .call_from(
                "POST",
                "/v1/registration/sessions",
                None,
                Some(json!({"number": n})),
                "192.0.2.50",
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{n}: {v}");
    }
    let (s, v) = h
        .call_from(
            "POST",
            "/v1/registration/sessions",
            None,
            Some(json!({"number": BOB})),
            "192.0.2.50",
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
});

#[tokio::test]
async fn prefix_limit_stops_sms_pumping() {
    let cfg = natter_auth::AuthConfig {
        limit_per_prefix: natter_common::ratelimit::Quota::new(3, 3600),
        ..natter_auth::AuthConfig::for_tests()
    };
    let h = Harness::with_config(Engine::Sqlite, cfg).await;
    for i in 0..3 {
        let n = format!("+1415555{:04}", 2000 + i);
        let (s, _) = h
            .call_from(
                "POST",
                "/v1/registration/sessions",
                None,
                Some(json!({"number": n})),
                &format!("203.0.113.{i}"),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED);
    }
    let (s, v) = h
        .call_from(
            "POST",
            "/v1/registration/sessions",
            None,
            Some(json!({"number": "+14155552999"})),
            "203.0.113.77",
        )
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(v["error"]["message"].as_str().unwrap().contains("range"));
    // Another range is unaffected.
    let (s, _) = h
        .call_from(
            "POST",
            "/v1/registration/sessions",
            None,
            Some(json!({"number": BOB})),
            "203.0.113.78",
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    h.cleanup().await;
}

both_engines!(
    codes_are_stored_only_as_argon2_hashes,
    async |h: &Harness| {
        let id = h.start_session(ALICE).await;
        let code = h.code_for(&id);
        let session = h.service.state.store().session(&id).await.unwrap().unwrap();
        let stored = session.code_hash.unwrap();
        assert!(stored.starts_with("$argon2id$"), "{stored}");
        assert!(!stored.contains(&code));
    }
);

both_engines!(reregistration_revokes_old_devices, async |h: &Harness| {
    let first = h.register(ALICE).await;
    let old_token = token(&first);
    let id = h.verified_session(ALICE).await;
    let (s, second) = h
        .call(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"session_id": id, "device_name": "new phone"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{second}");
    assert_eq!(second["reregistered"], true);
    assert_eq!(second["user_id"], first["user_id"]);
    let (s, v) = h.call("GET", "/v1/account", Some(&old_token), None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("token_revoked"))
    );
    let (s, _) = h
        .call(
            "POST",
            "/v1/tokens/refresh",
            None,
            Some(json!({"refresh_token": refresh(&first)})),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, v) = h
        .call("GET", "/v1/devices", Some(&token(&second)), None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["devices"].as_array().unwrap().len(), 1);
    assert_eq!(v["devices"][0]["name"], "new phone");
});

both_engines!(registration_lock_pin, async |h: &Harness| {
    let first = h.register(ALICE).await;
    let t = token(&first);
    let (s, v) = h
        .call(
            "PUT",
            "/v1/account/registration-lock",
            Some(&t),
            Some(json!({"pin": "12"})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_pin"))
    );
    let (s, _) = h
        .call(
            "PUT",
            "/v1/account/registration-lock",
            Some(&t),
            Some(json!({"pin": "2468"})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, acct) = h.call("GET", "/v1/account", Some(&t), None).await;
    assert_eq!(acct["registration_lock"], true);

    let id = h.verified_session(ALICE).await;
    let register = |pin: Option<&str>| {
        let mut body = json!({"session_id": id, "device_name": "attacker"});
        if let Some(p) = pin {
            body["registration_lock_pin"] = json!(p);
        }
        h.call("POST", "/v1/accounts", None, Some(body))
    };
    let (s, v) = register(None).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::LOCKED, Some("registration_locked"))
    );
    let (s, v) = register(Some("0000")).await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::LOCKED, Some("wrong_pin"))
    );
    assert_eq!(v["error"]["attempts_left"], 9);
    // The right PIN works and keeps the account.
    let (s, v) = register(Some("2468")).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["user_id"], first["user_id"]);
});

both_engines!(
    registration_lock_locks_out_after_repeated_failures,
    async |h: &Harness| {
        let first = h.register(ALICE).await;
        h.call(
            "PUT",
            "/v1/account/registration-lock",
            Some(&token(&first)),
            Some(json!({"pin": "2468"})),
        )
        .await;
        let id = h.verified_session(ALICE).await;
        for i in 0..10 {
            let (s, v) = h
            .call(
                "POST",
                "/v1/accounts",
                None,
                Some(json!({"session_id": id, "device_name": "x", "registration_lock_pin": "9999"})),
            )
            .await;
            if i < 9 {
                assert_eq!(s, StatusCode::LOCKED, "{i}: {v}");
            } else {
                assert_eq!(s, StatusCode::TOO_MANY_REQUESTS, "{v}");
                assert_eq!(v["error"]["code"], "second_factor_locked");
            }
        }
        // Even the right PIN is refused during the lockout…
        let (s, _) = h
            .call(
                "POST",
                "/v1/accounts",
                None,
                Some(
                    json!({"session_id": id, "device_name": "x", "registration_lock_pin": "2468"}),
                ),
            )
            .await;
        assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
        // …and accepted after it (with a fresh verified session).
        h.clock.advance_secs(24 * 3600);
        let id = h.verified_session(ALICE).await;
        let (s, v) = h
            .call(
                "POST",
                "/v1/accounts",
                None,
                Some(
                    json!({"session_id": id, "device_name": "x", "registration_lock_pin": "2468"}),
                ),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
);

both_engines!(
    concurrent_wrong_pins_cannot_outrun_the_lockout,
    async |h: &Harness| {
        // A verified session (as after a SIM swap): 40 wrong PINs at once and the
        // right one behind them. Counting each attempt before the argon2 check
        // admits exactly 10 guesses; reading the lock first once let all 40 in
        // and the right PIN re-register the account.
        let first = h.register(ALICE).await;
        h.call(
            "PUT",
            "/v1/account/registration-lock",
            Some(&token(&first)),
            Some(json!({"pin": "2468"})),
        )
        .await;
        let id = h.verified_session(ALICE).await;
        let attempt = |pin: String| {
            let body = json!({"session_id": id, "device_name": "x", "registration_lock_pin": pin});
            h.call("POST", "/v1/accounts", None, Some(body))
        };
        let mut burst: Vec<_> = (0..40)
            .map(|i| attempt(format!("{:04}", 1000 + i)))
            .collect();
        burst.push(attempt("2468".into()));
        let answers = futures_util::future::join_all(burst).await;
        let code = |(s, v): &(StatusCode, serde_json::Value)| {
            (*s, v["error"]["code"].as_str().unwrap_or("").to_owned())
        };
        let wrong = answers[..40]
            .iter()
            .filter(|a| code(a) == (StatusCode::LOCKED, "wrong_pin".into()))
            .count();
        let locked = answers[..40]
            .iter()
            .filter(|a| code(a) == (StatusCode::TOO_MANY_REQUESTS, "second_factor_locked".into()))
            .count();
        assert_eq!((wrong, locked), (9, 31), "{answers:?}");
        assert_eq!(
            code(&answers[40]),
            (StatusCode::TOO_MANY_REQUESTS, "second_factor_locked".into()),
            "the right PIN after 10 admitted guesses must wait out the lockout"
        );
        // The lockout holds: the account was not re-registered.
        let (s, _) = h
            .call("GET", "/v1/account", Some(&token(&first)), None)
            .await;
        assert_eq!(s, StatusCode::OK);
    }
);

fn totp_code(secret_b32: &str, now_secs: i64) -> String {
    use totp_rs::{Builder, Secret};
    let totp = Builder::new()
        .with_secret(Secret::try_from_base32(secret_b32).unwrap())
        .build()
        .unwrap();
    totp.generate(now_secs as u64).to_string()
}

both_engines!(totp_second_factor, async |h: &Harness| {
    let first = h.register(ALICE).await;
    let t = token(&first);
    let (s, e) = h.call("POST", "/v1/account/totp", Some(&t), None).await;
    assert_eq!(s, StatusCode::CREATED, "{e}");
    let secret = e["secret"].as_str().unwrap().to_owned();
    assert!(
        e["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    assert!(e["otpauth_uri"].as_str().unwrap().contains(&secret));
    let png = base64_decode(e["qr_png_base64"].as_str().unwrap());
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");

    let now = START_MS / 1000;
    let (s, _) = h
        .call(
            "POST",
            "/v1/account/totp/confirm",
            Some(&t),
            Some(json!({"code": "000000"})),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, r) = h
        .call(
            "POST",
            "/v1/account/totp/confirm",
            Some(&t),
            Some(json!({"code": totp_code(&secret, now)})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{r}");
    let recovery: Vec<String> = r["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(recovery.len(), 10);

    // Re-registration now needs a TOTP code.
    let id = h.verified_session(ALICE).await;
    let (s, v) = h
        .call(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"session_id": id, "device_name": "x"})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("totp_required"))
    );
    // The code used for confirmation cannot be replayed in the same step.
    let (s, v) = h
        .call(
            "POST",
            "/v1/accounts",
            None,
            Some(
                json!({"session_id": id, "device_name": "x", "totp_code": totp_code(&secret, now)}),
            ),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::FORBIDDEN, Some("wrong_totp"))
    );
    h.clock.advance_secs(30);
    let (s, v) = h
        .call("POST", "/v1/accounts", None, Some(json!({"session_id": id, "device_name": "x", "totp_code": totp_code(&secret, now + 30)})))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // A recovery code works once, in any formatting.
    let id = h.verified_session(ALICE).await;
    let sloppy = recovery[0].to_lowercase().replace('-', " ");
    let (s, v) = h
        .call(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"session_id": id, "device_name": "y", "recovery_code": sloppy})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let t = token(&v);
    let id = h.verified_session(ALICE).await;
    let (s, _) = h
        .call(
            "POST",
            "/v1/accounts",
            None,
            Some(json!({"session_id": id, "device_name": "z", "recovery_code": recovery[0]})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // Disabling needs proof too.
    let (s, _) = h
        .call(
            "POST",
            "/v1/account/totp/disable",
            Some(&t),
            Some(json!({"code": "123456"})),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = h
        .call(
            "POST",
            "/v1/account/totp/disable",
            Some(&t),
            Some(json!({"recovery_code": recovery[1]})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (_, acct) = h.call("GET", "/v1/account", Some(&t), None).await;
    assert_eq!(acct["totp_enabled"], false);
});

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// A configured test number takes the configured code, nothing is sent for it,
/// a wrong code still fails, and other numbers still get real codes.
#[tokio::test]
async fn test_numbers_take_the_configured_code_and_send_nothing() {
    let cfg = natter_auth::AuthConfig {
        test_numbers: vec!["+1 415 555 0104".into()],
        test_code: "482913".parse().unwrap(),
        ..natter_auth::AuthConfig::for_tests()
    };
    let h = Harness::with_config(Engine::Sqlite, cfg).await;
    let id = h.start_session("+14155550104").await;
    assert!(
        h.outbox().is_empty(),
        "a test number's code was sent: {:?}",
        h.outbox()
    );
    let verify = |code: &'static str| {
        let path = format!("/v1/registration/sessions/{id}/verify");
        let h = &h;
        async move {
            h.call("POST", &path, None, Some(json!({"code": code})))
                .await
        }
    };
    let (s, v) = verify("111111").await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error"]["code"], "wrong_code", "{v}");
    let (s, v) = verify("482913").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["verified"], true, "{v}");
    // Any other number is sent a random code, as ever.
    let other = h.start_session(BOB).await;
    let code = h.code_for(&other);
    assert_eq!(code.len(), 6);
    assert_eq!(h.outbox().len(), 1);
}

#[test]
fn test_numbers_need_a_six_digit_code_and_valid_numbers() {
    let mut cfg = natter_auth::AuthConfig {
        test_numbers: vec!["+14155550104".into()],
        ..natter_auth::AuthConfig::for_tests()
    };
    let err = cfg.validate().unwrap_err();
    assert!(err.contains("auth.test_code"), "{err}");
    cfg.test_code = "12345".parse().unwrap();
    assert!(cfg.validate().unwrap_err().contains("auth.test_code"));
    cfg.test_code = "123456".parse().unwrap();
    assert_eq!(cfg.validate(), Ok(()));
    cfg.test_numbers.push("4155550199".into());
    let err = cfg.validate().unwrap_err();
    assert!(
        err.contains("auth.test_numbers") && err.contains("4155550199"),
        "{err}"
    );
}
