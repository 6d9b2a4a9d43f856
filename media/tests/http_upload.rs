//! Simple uploads and downloads over real HTTP, on local files (SQLite) and on
//! the S3 test server (PostgreSQL): the happy path, dedupe, signed URLs,
//! ranges, and every kind of bad input with its status — and nothing
//! half-stored afterwards.

#[macro_use]
mod common;

use base64::Engine;
use common::*;
use natter_common::Secret;
use natter_common::clock::Clock;
use natter_common::ratelimit::Quota;
use natter_media::BlobHash;
use natter_media::sign::{Object, UrlSigner};
use natter_media::store::Claim;
use reqwest::StatusCode;

both_backends!(
    photo_upload_gives_hash_preview_and_thumbnail_and_downloads,
    same_content_is_stored_once,
    downloads_need_a_token_or_a_valid_signature,
    ranges_etags_and_head,
    oversize_uploads_are_refused_and_nothing_is_stored,
    wrong_types_hash_mismatches_and_bad_images_are_refused,
    truncated_uploads_leave_nothing,
    opaque_uploads_are_stored_as_sent,
    quota_is_enforced,
    uploads_over_the_per_user_rate_get_429_with_retry_after,
    urls_signed_with_a_previous_key_work_after_rotation,
    the_same_bytes_being_stored_elsewhere_give_503_busy_with_retry_after_1,
    tokens_of_logged_out_devices_are_refused,
);

/// Logout bumps the device's credential generation in auth's table: media
/// refuses the old, still unexpired token, on upload and on token downloads.
async fn tokens_of_logged_out_devices_are_refused(b: Backend) {
    let srv = Server::start(b).await;
    let r = srv.upload("alice", b"before logout", "").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let hash = r.json()["hash"].as_str().unwrap().to_owned();
    let token = srv.token("alice").await;
    srv.sql("UPDATE devices SET generation = generation + 1 WHERE user_id = 'alice'")
        .await;
    // The answer may be cached for LIVE_CACHE_TTL (5 s) at most.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let info = srv.url(&format!("/v1/media/{hash}/info"));
    let r = loop {
        let r = srv.send(srv.http.get(&info).bearer_auth(&token)).await;
        if r.status != StatusCode::OK || std::time::Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "token_revoked")
    );
    let r = srv
        .send(
            srv.http
                .post(srv.url("/v1/media"))
                .bearer_auth(&token)
                .body("after"),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "token_revoked")
    );
    srv.cleanup().await;
}

async fn photo_upload_gives_hash_preview_and_thumbnail_and_downloads(b: Backend) {
    let srv = Server::start(b).await;
    let photo = jpeg(1600, 1200);
    let r = srv.upload("alice", &photo, "").await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let v = r.json();
    let hash = sha256_hex(&photo);
    assert_eq!(v["hash"], hash);
    assert_eq!(v["size"], photo.len());
    assert_eq!(v["content_type"], "image/jpeg");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(1600), Some(1200))
    );
    assert_eq!(v["deduplicated"], false);
    assert_eq!(v["thumbnail"]["status"], "created");
    assert_eq!(
        (
            v["thumbnail"]["width"].as_u64(),
            v["thumbnail"]["height"].as_u64()
        ),
        (Some(320), Some(240))
    );
    // The preview is a real JPEG of at most 32 pixels.
    let preview = base64::engine::general_purpose::STANDARD
        .decode(v["preview"]["data_base64"].as_str().unwrap())
        .unwrap();
    let p = image::load_from_memory_with_format(&preview, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((p.width(), p.height()), (32, 24));
    assert!(preview.len() < 2048, "preview is {} bytes", preview.len());
    // Download through the signed URL: no token.
    let d = srv.get(v["url"].as_str().unwrap(), None).await;
    assert_eq!(d.status, StatusCode::OK);
    assert!(d.body == photo, "downloaded bytes differ");
    assert_eq!(d.header("content-type"), Some("image/jpeg"));
    assert_eq!(
        d.header("content-length"),
        Some(photo.len().to_string().as_str())
    );
    assert_eq!(d.header("etag"), Some(format!("\"{hash}\"").as_str()));
    assert_eq!(d.header("x-content-type-options"), Some("nosniff"));
    // The thumbnail, also signed.
    let t = srv.get(v["thumbnail"]["url"].as_str().unwrap(), None).await;
    assert_eq!(t.status, StatusCode::OK);
    assert_eq!(t.header("content-type"), Some("image/jpeg"));
    let ti = image::load_from_memory_with_format(&t.body, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((ti.width(), ti.height()), (320, 240));
    // With a token; and the info endpoint for receivers.
    assert!(
        srv.get(&format!("/v1/media/{hash}"), Some("bob"))
            .await
            .body
            == photo
    );
    let info = srv
        .get(&format!("/v1/media/{hash}/info"), Some("bob"))
        .await
        .json();
    assert_eq!(info["hash"], hash);
    assert_eq!(info["preview"]["data_base64"], v["preview"]["data_base64"]);
    assert_eq!(
        info["expires_at"].as_i64(),
        Some(srv.clock_secs() + 30 * 86400)
    );
    let usage = srv.get("/v1/media/usage", Some("alice")).await.json();
    assert_eq!(usage["used_bytes"], photo.len());
    assert_eq!(srv.staging_count().await, 0);
    srv.cleanup().await;
}

async fn same_content_is_stored_once(b: Backend) {
    let srv = Server::start(b).await;
    let data = noise(300_000, 7);
    let first = srv.upload("alice", &data, "").await;
    assert_eq!(first.status, StatusCode::CREATED);
    let again = srv.upload("alice", &data, "").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["deduplicated"], true);
    assert_eq!(again.json()["hash"], first.json()["hash"]);
    let by_bob = srv.upload("bob", &data, "").await;
    assert_eq!(by_bob.status, StatusCode::OK);
    // Each owner is charged once; one object is stored.
    assert_eq!(
        srv.get("/v1/media/usage", Some("alice")).await.json()["used_bytes"],
        300_000
    );
    assert_eq!(
        srv.get("/v1/media/usage", Some("bob")).await.json()["used_bytes"],
        300_000
    );
    assert_eq!(srv.staging_count().await, 0);
    if b == Backend::Fs {
        let count = walk(&srv.dir.path().join("media/blobs"));
        assert_eq!(count, 1, "one file for one content");
    }
    srv.cleanup().await;
}

fn walk(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk(&e.path())
                    } else {
                        1
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

async fn downloads_need_a_token_or_a_valid_signature(b: Backend) {
    let srv = Server::start(b).await;
    let data = b"hello, signed world\n".to_vec();
    let v = srv.upload("alice", &data, "").await.json();
    let hash = v["hash"].as_str().unwrap().to_owned();
    let url = v["url"].as_str().unwrap().to_owned();
    let r = srv.get(&format!("/v1/media/{hash}"), None).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "missing_token")
    );
    let r = srv
        .send(
            srv.http
                .get(srv.url(&format!("/v1/media/{hash}")))
                .bearer_auth("not-a-token"),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNAUTHORIZED, "invalid_token")
    );
    // Tampered signature, another object, a moved expiry.
    let bad_sig = format!("{}AAAA", &url[..url.len() - 4]);
    assert_eq!(srv.get(&bad_sig, None).await.code(), "invalid_signature");
    let thumb_path = url.replace(
        &format!("/v1/media/{hash}?"),
        &format!("/v1/media/{hash}/thumbnail?"),
    );
    assert_eq!(
        srv.get(&thumb_path, None).await.status,
        StatusCode::FORBIDDEN
    );
    let exp = v["url_expires_at"].as_i64().unwrap();
    let later = url.replace(&format!("exp={exp}"), &format!("exp={}", exp + 3600));
    assert_eq!(srv.get(&later, None).await.code(), "invalid_signature");
    let other = srv.upload("alice", b"other content", "").await.json();
    let swapped = url.replace(&hash, other["hash"].as_str().unwrap());
    assert_eq!(srv.get(&swapped, None).await.status, StatusCode::FORBIDDEN);
    // The URL works until it expires, then says so.
    assert_eq!(srv.get(&url, None).await.status, StatusCode::OK);
    srv.clock.advance_secs(24 * 3600 + 1);
    let r = srv.get(&url, None).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "url_expired")
    );
    // Only hashes reach storage: no path tricks.
    for path in [
        "/v1/media/..%2F..%2F..%2Fetc%2Fpasswd",
        "/v1/media/blobs",
        "/v1/media/%2E%2E%2Fstaging",
        "/v1/media/0000000000000000000000000000000000000000000000000000000000000000zz",
    ] {
        let r = srv.get(path, Some("alice")).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::BAD_REQUEST, "invalid_hash"),
            "{path}"
        );
    }
    // Dot segments are resolved before routing: they reach no media route.
    for path in [
        "/v1/media/../../etc/passwd",
        "/v1/media/%2e%2e/%2e%2e/etc/passwd",
    ] {
        let r = srv.get(path, Some("alice")).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
        assert!(r.body.is_empty() || r.code() != "", "{path}");
    }
    let missing = sha256_hex(b"never uploaded");
    assert_eq!(
        srv.get(&format!("/v1/media/{missing}"), Some("alice"))
            .await
            .code(),
        "not_found"
    );
    srv.cleanup().await;
}

async fn ranges_etags_and_head(b: Backend) {
    let srv = Server::start(b).await;
    let data = noise(1_000_003, 11);
    let v = srv.upload("alice", &data, "").await.json();
    let path = format!("/v1/media/{}", v["hash"].as_str().unwrap());
    let token = srv.token("bob").await;
    let get = |range: &str| {
        srv.http
            .get(srv.url(&path))
            .bearer_auth(&token)
            .header("range", range.to_owned())
    };
    let r = srv.send(get("bytes=100-199")).await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(r.body, &data[100..200]);
    assert_eq!(r.header("content-range"), Some("bytes 100-199/1000003"));
    assert_eq!(r.header("content-length"), Some("100"));
    let r = srv.send(get("bytes=-10")).await;
    assert_eq!(
        (r.status, r.body.as_slice()),
        (StatusCode::PARTIAL_CONTENT, &data[data.len() - 10..])
    );
    let r = srv.send(get("bytes=999990-")).await;
    assert_eq!(r.body, &data[999_990..]);
    let r = srv.send(get("bytes=2000000-")).await;
    assert_eq!(r.status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(r.header("content-range"), Some("bytes */1000003"));
    // Several ranges: the whole body (allowed by RFC 9110).
    let r = srv.send(get("bytes=0-1,5-6")).await;
    assert_eq!((r.status, r.body.len()), (StatusCode::OK, data.len()));
    // If-Range with a stale validator: the whole body.
    let r = srv
        .send(get("bytes=0-1").header("if-range", "\"something-else\""))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    let etag = r.header("etag").unwrap().to_owned();
    let r = srv
        .send(
            srv.http
                .get(srv.url(&path))
                .bearer_auth(&token)
                .header("if-none-match", etag),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_MODIFIED);
    assert!(r.body.is_empty());
    let r = srv
        .send(srv.http.head(srv.url(&path)).bearer_auth(&token))
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-length"), Some("1000003"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(r.header("content-disposition"), Some("attachment"));
    assert!(r.body.is_empty());
    srv.cleanup().await;
}

async fn oversize_uploads_are_refused_and_nothing_is_stored(b: Backend) {
    let srv = Server::with(b, |c| c.max_upload_bytes = 1024 * 1024).await;
    // Declared too large: refused before a byte is read.
    let big = noise(1024 * 1024 + 1, 3);
    let r = srv.upload("alice", &big, "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    // Undeclared (chunked) and growing past the limit: cut off while streaming.
    let token = srv.token("alice").await;
    let head = format!(
        "POST /v1/media HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {token}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let mut body = Vec::new();
    for chunk in big.chunks(256 * 1024) {
        body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        body.extend_from_slice(chunk);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(b"0\r\n\r\n");
    let reply = raw_exchange(&srv, &head, &body).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert!(reply.contains("too_large"), "{reply}");
    assert!(!srv.blob_exists(&sha256_hex(&big)).await);
    eventually("no staging objects remain", || async {
        srv.staging_count().await == 0
    })
    .await;
    assert_eq!(
        srv.get("/v1/media/usage", Some("alice")).await.json()["used_bytes"],
        0
    );
    srv.cleanup().await;
}

/// Sends a request and reads the whole reply as text.
async fn raw_exchange(srv: &Server, head: &str, body: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = srv.base.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer and close before taking all of the body.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    // Until the server closes the connection (an error is a close too).
    let closed = tokio::time::timeout(WAIT, s.read_to_end(&mut out)).await;
    assert!(
        closed.is_ok(),
        "the server did not close the connection within {WAIT:?}"
    );
    String::from_utf8_lossy(&out).into_owned()
}

async fn wrong_types_hash_mismatches_and_bad_images_are_refused(b: Backend) {
    let srv = Server::start(b).await;
    let cases: Vec<(Vec<u8>, &str, StatusCode, &str)> = vec![
        (
            b"<!DOCTYPE html><script>alert(1)</script>".to_vec(),
            "",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_type",
        ),
        (
            b"\x7FELF\x02\x01\x01\x00rest-of-a-binary".to_vec(),
            "",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_type",
        ),
        (
            b"some text".to_vec(),
            "?sha256=0000000000000000000000000000000000000000000000000000000000000000",
            StatusCode::UNPROCESSABLE_ENTITY,
            "hash_mismatch",
        ),
        (
            b"x".to_vec(),
            "?sha256=abc",
            StatusCode::BAD_REQUEST,
            "invalid_hash",
        ),
        (
            b"x".to_vec(),
            "?sneaky=1",
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            png_bomb(100_000, 100_000),
            "",
            StatusCode::UNPROCESSABLE_ENTITY,
            "image_too_large",
        ),
        (
            corrupt_jpeg(),
            "",
            StatusCode::UNPROCESSABLE_ENTITY,
            "corrupt_image",
        ),
        (
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR\x00".to_vec(),
            "",
            StatusCode::UNPROCESSABLE_ENTITY,
            "corrupt_image",
        ),
        (
            b"GIF89a".to_vec(),
            "",
            StatusCode::UNPROCESSABLE_ENTITY,
            "corrupt_image",
        ),
    ];
    for (data, query, status, code) in cases {
        let r = srv.upload("alice", &data, query).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (status, code),
            "{:?}",
            String::from_utf8_lossy(&r.body)
        );
        assert!(!r.json()["error"]["message"].as_str().unwrap().is_empty());
        assert!(!srv.blob_exists(&sha256_hex(&data)).await);
    }
    assert_eq!(srv.staging_count().await, 0);
    assert_eq!(
        srv.get("/v1/media/usage", Some("alice")).await.json()["used_bytes"],
        0
    );
    // The type comes from the bytes, whatever the header says.
    let png = encode(&photo(40, 30), image::ImageFormat::Png);
    let r = srv
        .send(
            srv.http
                .post(srv.url("/v1/media"))
                .bearer_auth(srv.token("alice").await)
                .header("content-type", "text/html")
                .body(png),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["content_type"], "image/png");
    srv.cleanup().await;
}

/// A JPEG whose frame header is fine (so the bomb check passes) but whose
/// Huffman table is broken and whose scan is missing.
fn corrupt_jpeg() -> Vec<u8> {
    let mut data = jpeg(640, 480);
    let dht = data.windows(2).position(|w| w == [0xFF, 0xC4]).unwrap();
    // Table class 7 does not exist (T.81 B.2.4.2 allows 0 and 1).
    data[dht + 4] = 0x70;
    let sos = data.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    data.truncate(sos);
    data.extend_from_slice(&[0xFF, 0xD9]);
    data
}

async fn truncated_uploads_leave_nothing(b: Backend) {
    let srv = Server::start(b).await;
    let data = noise(2 * MIB, 5);
    let head = format!(
        "POST /v1/media HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nContent-Length: {}\r\n\r\n",
        srv.token("alice").await,
        data.len()
    );
    srv.raw_then_hang_up(head, &data[..MIB]).await;
    eventually("the cut-off upload is cleaned up", || async {
        srv.staging_count().await == 0
    })
    .await;
    assert!(!srv.blob_exists(&sha256_hex(&data)).await);
    assert!(!srv.blob_exists(&sha256_hex(&data[..MIB])).await);
    assert_eq!(
        srv.get("/v1/media/usage", Some("alice")).await.json()["used_bytes"],
        0
    );
    // The server is fine afterwards.
    assert_eq!(
        srv.upload("alice", &data, "").await.status,
        StatusCode::CREATED
    );
    srv.cleanup().await;
}

async fn opaque_uploads_are_stored_as_sent(b: Backend) {
    let srv = Server::start(b).await;
    // Encrypted bytes that happen to start like a JPEG: still opaque, no decoding.
    let mut data = vec![0xFF, 0xD8, 0xFF, 0xE0];
    data.extend(noise(50_000, 9));
    let hash = sha256_hex(&data);
    let r = srv
        .upload("alice", &data, &format!("?opaque=true&sha256={hash}"))
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let v = r.json();
    assert_eq!(v["content_type"], "application/octet-stream");
    assert_eq!(v["opaque"], true);
    assert_eq!(v["thumbnail"]["status"], "none");
    assert!(
        v["thumbnail"]["reason"]
            .as_str()
            .unwrap()
            .contains("opaque"),
        "{v}"
    );
    assert!(v["preview"].is_null());
    assert!(srv.get(v["url"].as_str().unwrap(), None).await.body == data);
    let r = srv.upload("alice", &data, "?opaque=true").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "hash_required")
    );
    let wrong = sha256_hex(b"not it");
    let r = srv
        .upload(
            "alice",
            &noise(10, 1),
            &format!("?opaque=true&sha256={wrong}"),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch")
    );
    assert_eq!(r.json()["error"]["claimed"], wrong);
    srv.cleanup().await;
    let srv = Server::with(b, |c| c.allow_opaque = false).await;
    let r = srv
        .upload("alice", &data, &format!("?opaque=true&sha256={hash}"))
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "opaque_not_allowed")
    );
    srv.cleanup().await;
}

async fn quota_is_enforced(b: Backend) {
    let srv = Server::with(b, |c| {
        c.max_upload_bytes = 400_000;
        c.quota_bytes_per_user = 1_000_000;
    })
    .await;
    for i in 0..3 {
        assert_eq!(
            srv.upload("alice", &noise(300_000, i), "").await.status,
            StatusCode::CREATED
        );
    }
    let r = srv.upload("alice", &noise(300_000, 99), "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded")
    );
    assert_eq!(r.json()["error"]["quota_bytes"], 1_000_000);
    assert!(!srv.blob_exists(&sha256_hex(&noise(300_000, 99))).await);
    assert_eq!(srv.staging_count().await, 0);
    // Another user is not affected.
    assert_eq!(
        srv.upload("bob", &noise(300_000, 99), "").await.status,
        StatusCode::CREATED
    );
    let u = srv.get("/v1/media/usage", Some("alice")).await.json();
    assert_eq!(
        (u["used_bytes"].as_u64(), u["quota_bytes"].as_u64()),
        (Some(900_000), Some(1_000_000))
    );
    srv.cleanup().await;
}

async fn uploads_over_the_per_user_rate_get_429_with_retry_after(b: Backend) {
    // Two upload requests a minute: one every 30 s, a burst of two.
    let srv = Server::with(b, |c| c.limit_uploads_per_user = Quota::new(2, 60)).await;
    let tus = Tus::new(&srv, "alice").await;
    // Simple uploads and resumable creations share the budget.
    assert_eq!(
        srv.upload("alice", b"first", "").await.status,
        StatusCode::CREATED
    );
    let (r, url) = tus.create(6, "").await;
    assert_eq!(r.status, StatusCode::CREATED);
    let refused = b"third upload".to_vec();
    let r = srv.upload("alice", &refused, "").await;
    assert_eq!(
        (r.status, r.code().as_str(), r.header("retry-after")),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some("30"))
    );
    assert_eq!(r.json()["error"]["retry_after_secs"], 30);
    assert!(!srv.blob_exists(&sha256_hex(&refused)).await);
    // The only staging object is the open upload's (none yet on S3).
    let open = Tus::id(&url);
    let staged = srv.staging_ids().await;
    assert!(staged.iter().all(|id| id.as_str() == open), "{staged:?}");
    let (r, _) = tus.create(10, "").await;
    assert_eq!(
        (r.status, r.code().as_str(), r.header("retry-after")),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some("30"))
    );
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
    let u = srv.get("/v1/media/usage", Some("alice")).await.json();
    assert_eq!(
        (u["used_bytes"].as_u64(), u["open_uploads"].as_u64()),
        (Some(5), Some(1))
    );
    // Writing to an upload already created is not a new upload request.
    let r = tus.patch(&url, 0, b"second").await;
    assert_eq!(
        (r.status, r.header("natter-media-hash")),
        (StatusCode::NO_CONTENT, Some(sha256_hex(b"second").as_str()))
    );
    // Another user has their own budget.
    assert_eq!(
        srv.upload("bob", &refused, "").await.status,
        StatusCode::CREATED
    );
    // Retry-After counts down with the clock, and is exact.
    srv.clock.advance_secs(29);
    let r = srv.upload("alice", &refused, "").await;
    assert_eq!(
        (r.status, r.code().as_str(), r.header("retry-after")),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some("1"))
    );
    srv.clock.advance_secs(1);
    let r = srv.upload("alice", &refused, "").await;
    assert_eq!(r.status, StatusCode::OK, "deduplicated against bob's copy");
    let r = srv.upload("alice", b"one more", "").await;
    assert_eq!(
        (r.status, r.code().as_str(), r.header("retry-after")),
        (StatusCode::TOO_MANY_REQUESTS, "rate_limited", Some("30"))
    );
    srv.cleanup().await;
}

async fn urls_signed_with_a_previous_key_work_after_rotation(b: Backend) {
    // The key was rotated: "key-1" moved to previous_signing_keys.
    let srv = Server::with(b, |c| {
        c.signing_key = Secret::new("media-url-test-key-2");
        c.previous_signing_keys = vec![Secret::new("media-url-test-key-1")];
    })
    .await;
    let photo = jpeg(640, 480);
    let v = srv.upload("alice", &photo, "").await.json();
    let hash: BlobHash = v["hash"].as_str().unwrap().parse().unwrap();
    let exp = v["url_expires_at"].as_i64().unwrap();
    // New URLs are signed with the current key.
    let current = UrlSigner::new(b"media-url-test-key-2", &[]);
    assert_eq!(v["url"], current.url(&srv.base, Object::Blob, &hash, exp));
    assert_eq!(
        v["thumbnail"]["url"],
        current.url(&srv.base, Object::Thumbnail, &hash, exp)
    );
    // URLs handed out before the rotation still open their objects.
    let previous = UrlSigner::new(b"media-url-test-key-1", &[]);
    let old_exp = srv.clock_secs() + 3600;
    let old_blob = previous.url(&srv.base, Object::Blob, &hash, old_exp);
    let r = srv.get(&old_blob, None).await;
    assert_eq!(
        (r.status, r.header("content-type")),
        (StatusCode::OK, Some("image/jpeg"))
    );
    assert!(r.body == photo);
    let r = srv
        .get(
            &previous.url(&srv.base, Object::Thumbnail, &hash, old_exp),
            None,
        )
        .await;
    assert_eq!(
        (r.status, r.header("content-type")),
        (StatusCode::OK, Some("image/jpeg"))
    );
    // A key the server does not know: 403 invalid_signature.
    let unknown = UrlSigner::new(b"media-url-test-key-0", &[]);
    for what in [Object::Blob, Object::Thumbnail] {
        let r = srv
            .get(&unknown.url(&srv.base, what, &hash, old_exp), None)
            .await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::FORBIDDEN, "invalid_signature"),
            "{what:?}"
        );
    }
    // Previous-key URLs still expire.
    srv.clock.advance_secs(3600);
    let r = srv.get(&old_blob, None).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "url_expired")
    );
    srv.cleanup().await;
    // Once the old key is dropped from previous_signing_keys, its URLs stop working.
    let srv = Server::with(b, |c| c.signing_key = Secret::new("media-url-test-key-2")).await;
    assert_eq!(
        srv.upload("alice", &photo, "").await.status,
        StatusCode::CREATED
    );
    let r = srv
        .get(&previous.url(&srv.base, Object::Blob, &hash, old_exp), None)
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::FORBIDDEN, "invalid_signature")
    );
    srv.cleanup().await;
}

async fn the_same_bytes_being_stored_elsewhere_give_503_busy_with_retry_after_1(b: Backend) {
    let srv = Server::start(b).await;
    let data = noise(150_000, 71);
    let hash: BlobHash = sha256_hex(&data).parse().unwrap();
    // Another upload of the same bytes (on another node, say) has claimed the
    // hash and is moving its bytes into place: the blob is pending.
    let now = srv.clock.now_ms();
    let store = srv.media().store();
    let claimed = store
        .claim_blob(&pending_blob(&data, "bob", now), "bob", 0, None, now)
        .await
        .unwrap();
    assert_eq!(claimed, Claim::Created);
    // A simple upload and the last PATCH of a resumable one of those bytes
    // retry their claim while it holds, then give up with 503 busy.
    let tus = Tus::new(&srv, "carol").await;
    let (r, url) = tus.create(data.len(), "").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        tus.patch(&url, 0, &data[..100_000]).await.status,
        StatusCode::NO_CONTENT
    );
    let started = std::time::Instant::now();
    let (simple, last_patch) = tokio::join!(
        srv.upload("alice", &data, ""),
        tus.patch(&url, 100_000, &data[100_000..])
    );
    // 50 claims 200 ms apart (CLAIM_ATTEMPTS, CLAIM_RETRY in engine.rs).
    assert!(
        started.elapsed() >= std::time::Duration::from_secs(9),
        "gave up after {:?} without retrying",
        started.elapsed()
    );
    for r in [&simple, &last_patch] {
        assert_eq!(
            (r.status, r.code().as_str(), r.header("retry-after")),
            (StatusCode::SERVICE_UNAVAILABLE, "busy", Some("1")),
            "{}",
            String::from_utf8_lossy(&r.body)
        );
        assert_eq!(r.json()["error"]["retry_after_secs"], 1);
    }
    assert_eq!(last_patch.header("tus-resumable"), Some("1.0.0"));
    // Nothing of the refused simple upload is kept or charged; the resumable
    // upload keeps its bytes for a retry.
    assert_eq!(
        srv.get("/v1/media/usage", Some("alice")).await.json()["used_bytes"],
        0
    );
    assert_eq!(Tus::offset(&tus.head(&url).await), data.len());
    assert_eq!(srv.staging_ids().await.len(), 1);
    // The other upload finishes: bytes in place, blob ready.
    let id = srv.stage(&data, true).await;
    srv.media().blobs().promote(&id, &hash).await.unwrap();
    store.mark_ready(&hash.to_hex()).await.unwrap();
    // Retries now succeed, deduplicated against it.
    let r = srv.upload("alice", &data, "").await;
    assert_eq!(
        (r.status, r.json()["deduplicated"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    let r = tus.patch(&url, data.len(), b"").await;
    assert_eq!(
        (r.status, r.header("natter-media-hash")),
        (StatusCode::NO_CONTENT, Some(hash.to_hex().as_str()))
    );
    assert!(
        srv.get(&format!("/v1/media/{hash}"), Some("carol"))
            .await
            .body
            == data
    );
    for user in ["alice", "carol"] {
        let u = srv.get("/v1/media/usage", Some(user)).await.json();
        assert_eq!(
            (u["used_bytes"].as_u64(), u["reserved_bytes"].as_u64()),
            (Some(data.len() as u64), Some(0)),
            "{user}"
        );
    }
    assert_eq!(srv.staging_count().await, 0);
    srv.cleanup().await;
}
