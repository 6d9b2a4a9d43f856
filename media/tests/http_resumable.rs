//! Resumable uploads (TUS 1.0) over real HTTP on both backends: creation,
//! HEAD, PATCH, an interrupted PATCH resumed from the kept offset, wrong
//! offsets, checksums, expiry, termination, limits and refused content.

#[macro_use]
mod common;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use common::*;
use reqwest::StatusCode;
use sha2::Digest;

both_backends!(
    an_interrupted_large_upload_resumes_where_it_stopped,
    wrong_offsets_checksums_and_headers_are_refused,
    creation_with_upload_and_claimed_hashes,
    refused_content_deletes_the_whole_upload,
    expiry_termination_and_limits,
    a_patch_while_another_holds_the_upload_gets_423,
    a_stalled_patch_cannot_change_the_blob_after_its_lease_lapsed,
);

/// A PATCH whose lease lapsed while its client stalled, then resumed after
/// another PATCH had taken over and finished the upload, used to write its
/// bytes into the stored blob on the file backend (the file it held open had
/// been renamed into blobs/), so the blob served under hash H no longer had
/// hash H. Now the stale writer is refused and the blob is what was hashed.
async fn a_stalled_patch_cannot_change_the_blob_after_its_lease_lapsed(b: Backend) {
    let srv = Server::start(b).await;
    let tus = Tus::new(&srv, "mallory").await;
    let x = noise(300_000, 1);
    let y = noise(300_000, 2);
    let (_, url) = tus.create(x.len(), "").await;
    assert_eq!(
        tus.patch(&url, 0, &x[..100_000]).await.status,
        StatusCode::NO_CONTENT
    );
    let path = url.trim_start_matches(&srv.base).to_owned();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nTus-Resumable: 1.0.0\r\n\
         Upload-Offset: 100000\r\nContent-Type: application/offset+octet-stream\r\n\
         Content-Length: 200000\r\nConnection: close\r\n\r\n",
        tus.token
    );
    let slow = srv.raw_start(&head, &y[100_000..110_000]).await;
    let id = Tus::id(&url);
    eventually("the slow PATCH holds the lease", || async {
        srv.media()
            .store()
            .upload(&id)
            .await
            .unwrap()
            .unwrap()
            .lease_token
            .is_some()
    })
    .await;
    srv.clock.advance_secs(901);
    let done = tus.patch(&url, 100_000, &x[100_000..]).await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "the takeover finishes");
    let hash = sha256_hex(&x);
    let stale = srv.raw_finish(slow, &y[110_000..]).await;
    assert_eq!(
        stale.status,
        423,
        "{}",
        String::from_utf8_lossy(&stale.body)
    );
    let d = srv.get(&format!("/v1/media/{hash}"), Some("bob")).await;
    assert_eq!(d.status, StatusCode::OK);
    assert!(
        sha256_hex(&d.body) == hash && d.body == x,
        "the stored blob changed after it was hashed"
    );
    srv.cleanup().await;
}

async fn an_interrupted_large_upload_resumes_where_it_stopped(b: Backend) {
    let srv = Server::start(b).await;
    let tus = Tus::new(&srv, "alice").await;
    // 12 MiB: several S3 parts (5 MiB) and tails.
    let data = noise(12 * MIB + 321, 21);
    let hash = sha256_hex(&data);
    let (r, url) = tus.create(data.len(), "filename dmlkZW8uYmlu").await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert!(
        url.starts_with(&format!("{}/v1/media/uploads/", srv.base)),
        "{url}"
    );
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
    assert!(r.header("upload-expires").unwrap().ends_with(" GMT"));
    assert_eq!(Tus::offset(&r), 0);
    // The quota already counts the declared length.
    assert_eq!(
        srv.get("/v1/media/usage", Some("alice")).await.json()["reserved_bytes"],
        data.len()
    );
    let r = tus.patch(&url, 0, &data[..3 * MIB]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(Tus::offset(&r), 3 * MIB);
    // The phone loses its network half-way through the next chunk.
    let path = url.trim_start_matches(&srv.base).to_owned();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nTus-Resumable: 1.0.0\r\n\
         Upload-Offset: {}\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: {}\r\n\r\n",
        tus.token,
        3 * MIB,
        9 * MIB + 321
    );
    srv.raw_then_hang_up(head, &data[3 * MIB..7 * MIB + 5])
        .await;
    // What arrived is kept: HEAD says where to resume.
    eventually(
        "the interrupted PATCH has saved what it received",
        || async {
            let h = tus.head(&url).await;
            h.status == StatusCode::OK && Tus::offset(&h) > 3 * MIB
        },
    )
    .await;
    let resume_at = Tus::offset(&tus.head(&url).await);
    assert_eq!(
        resume_at,
        7 * MIB + 5,
        "every byte that reached the server is kept"
    );
    let h = tus.head(&url).await;
    assert_eq!(
        h.header("upload-length"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(h.header("cache-control"), Some("no-store"));
    assert_eq!(h.header("upload-metadata"), Some("filename dmlkZW8uYmlu"));
    // Resume, in two more requests.
    let r = tus.patch(&url, resume_at, &data[resume_at..10 * MIB]).await;
    assert_eq!(
        (r.status, Tus::offset(&r)),
        (StatusCode::NO_CONTENT, 10 * MIB)
    );
    let r = tus.patch(&url, 10 * MIB, &data[10 * MIB..]).await;
    assert_eq!(
        r.status,
        StatusCode::NO_CONTENT,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(Tus::offset(&r), data.len());
    assert_eq!(r.header("natter-media-hash"), Some(hash.as_str()));
    // HEAD after completion, and a replay of the final PATCH, both say done.
    let h = tus.head(&url).await;
    assert_eq!(
        (Tus::offset(&h), h.header("natter-media-hash")),
        (data.len(), Some(hash.as_str()))
    );
    let r = tus.patch(&url, data.len(), b"").await;
    assert_eq!(
        (r.status, r.header("natter-media-hash")),
        (StatusCode::NO_CONTENT, Some(hash.as_str()))
    );
    // The blob is whole and downloadable; the reservation became usage.
    let info = srv
        .get(&format!("/v1/media/{hash}/info"), Some("alice"))
        .await
        .json();
    assert_eq!(info["size"], data.len());
    assert!(srv.get(info["url"].as_str().unwrap(), None).await.body == data);
    let u = srv.get("/v1/media/usage", Some("alice")).await.json();
    assert_eq!(
        (u["used_bytes"].as_u64(), u["reserved_bytes"].as_u64()),
        (Some(data.len() as u64), Some(0))
    );
    assert_eq!(srv.staging_count().await, 0);
    srv.cleanup().await;
}

async fn wrong_offsets_checksums_and_headers_are_refused(b: Backend) {
    let srv = Server::start(b).await;
    let tus = Tus::new(&srv, "alice").await;
    let data = noise(100_000, 22);
    let (_, url) = tus.create(data.len(), "").await;
    assert_eq!(
        tus.patch(&url, 0, &data[..40_000]).await.status,
        StatusCode::NO_CONTENT
    );
    // Resume from the wrong place: 409 and the right offset.
    let r = tus.patch(&url, 30_000, &data[30_000..50_000]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::CONFLICT, "offset_mismatch")
    );
    assert_eq!(Tus::offset(&r), 40_000);
    assert_eq!(r.header("tus-resumable"), Some("1.0.0"));
    // A body that does not match its checksum: 460, nothing of it kept.
    let good = B64.encode(sha1::Sha1::digest(&data[40_000..60_000]));
    let r = srv
        .send(
            tus.req(reqwest::Method::PATCH, &url)
                .header("upload-offset", "40000")
                .header("content-type", "application/offset+octet-stream")
                .header("upload-checksum", format!("sha1 {good}"))
                .body(noise(20_000, 1)),
        )
        .await;
    assert_eq!(
        (r.status.as_u16(), r.code().as_str()),
        (460, "checksum_mismatch")
    );
    assert_eq!(Tus::offset(&tus.head(&url).await), 40_000);
    // The right bytes with the same checksum are accepted.
    let r = srv
        .send(
            tus.req(reqwest::Method::PATCH, &url)
                .header("upload-offset", "40000")
                .header("content-type", "application/offset+octet-stream")
                .header("upload-checksum", format!("sha1 {good}"))
                .body(data[40_000..60_000].to_vec()),
        )
        .await;
    assert_eq!(
        (r.status, Tus::offset(&r)),
        (StatusCode::NO_CONTENT, 60_000)
    );
    let sha256 = B64.encode(sha2::Sha256::digest(&data[60_000..]));
    let r = srv
        .send(
            tus.req(reqwest::Method::PATCH, &url)
                .header("upload-offset", "60000")
                .header("content-type", "application/offset+octet-stream")
                .header("upload-checksum", format!("md5 {sha256}"))
                .body(data[60_000..].to_vec()),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "unsupported_checksum_algorithm")
    );
    // Past the declared length.
    let r = tus.patch(&url, 60_000, &noise(40_001, 3)).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "exceeds_upload_length")
    );
    // Protocol errors.
    let r = srv
        .send(
            srv.http
                .patch(&url)
                .bearer_auth(&tus.token)
                .header("upload-offset", "60000")
                .header("content-type", "application/offset+octet-stream")
                .body(vec![1]),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PRECONDITION_FAILED, "unsupported_tus_version")
    );
    let r = srv
        .send(
            tus.req(reqwest::Method::PATCH, &url)
                .header("upload-offset", "60000")
                .header("content-type", "application/json")
                .body(vec![1]),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = srv
        .send(
            tus.req(reqwest::Method::PATCH, &url)
                .header("upload-offset", "-5")
                .header("content-type", "application/offset+octet-stream")
                .body(vec![1]),
        )
        .await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_header")
    );
    // Someone else's upload does not exist for them; no token at all is 401.
    let mallory = Tus::new(&srv, "mallory").await;
    assert_eq!(mallory.head(&url).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        mallory.patch(&url, 60_000, &data[60_000..]).await.code(),
        "upload_not_found"
    );
    let r = srv
        .send(srv.http.head(&url).header("tus-resumable", "1.0.0"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    // Finish properly.
    let r = tus.patch(&url, 60_000, &data[60_000..]).await;
    assert_eq!(
        r.header("natter-media-hash"),
        Some(sha256_hex(&data).as_str())
    );
    // OPTIONS advertises what we support.
    let r = srv
        .send(
            srv.http
                .request(reqwest::Method::OPTIONS, srv.url("/v1/media/uploads")),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(r.header("tus-version"), Some("1.0.0"));
    assert_eq!(
        r.header("tus-max-size"),
        Some((16 * MIB).to_string().as_str())
    );
    for ext in [
        "creation",
        "creation-with-upload",
        "expiration",
        "checksum",
        "termination",
    ] {
        assert!(
            r.header("tus-extension")
                .unwrap()
                .split(',')
                .any(|e| e == ext),
            "{ext}"
        );
    }
    assert_eq!(r.header("tus-checksum-algorithm"), Some("sha1,sha256"));
    srv.cleanup().await;
}

async fn creation_with_upload_and_claimed_hashes(b: Backend) {
    let srv = Server::start(b).await;
    let tus = Tus::new(&srv, "alice").await;
    let photo = jpeg(800, 600);
    let hash = sha256_hex(&photo);
    let meta = format!("sha256 {},filetype aW1hZ2UvanBlZw==", B64.encode(&hash));
    // The whole file in the creation request.
    let r = srv
        .send(
            tus.req(reqwest::Method::POST, &srv.url("/v1/media/uploads"))
                .header("upload-length", photo.len().to_string())
                .header("upload-metadata", meta)
                .header("content-type", "application/offset+octet-stream")
                .body(photo.clone()),
        )
        .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(
        (Tus::offset(&r), r.header("natter-media-hash")),
        (photo.len(), Some(hash.as_str()))
    );
    let info = srv
        .get(&format!("/v1/media/{hash}/info"), Some("alice"))
        .await
        .json();
    assert_eq!(info["thumbnail"]["status"], "created");
    assert!(info["preview"]["data_base64"].as_str().is_some());
    // An empty upload is complete at creation.
    let (r, _) = tus.create(0, "").await;
    assert_eq!(
        r.header("natter-media-hash"),
        Some(sha256_hex(b"").as_str())
    );
    // An opaque resumable upload must claim its hash, and gets it checked.
    let secret = noise(70_000, 23);
    let (r, _) = tus.create(secret.len(), "opaque").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "hash_required")
    );
    let meta = format!("opaque,sha256 {}", B64.encode(sha256_hex(&secret)));
    let (_, url) = tus.create(secret.len(), &meta).await;
    tus.patch(&url, 0, &secret[..1000]).await;
    let r = tus.patch(&url, 1000, &secret[1000..]).await;
    assert_eq!(
        r.header("natter-media-hash"),
        Some(sha256_hex(&secret).as_str())
    );
    let info = srv
        .get(
            &format!("/v1/media/{}/info", sha256_hex(&secret)),
            Some("alice"),
        )
        .await
        .json();
    assert_eq!(
        (info["opaque"].as_bool(), info["content_type"].as_str()),
        (Some(true), Some("application/octet-stream"))
    );
    srv.cleanup().await;
}

async fn refused_content_deletes_the_whole_upload(b: Backend) {
    let srv = Server::start(b).await;
    let tus = Tus::new(&srv, "alice").await;
    // A claimed hash that the bytes do not have.
    let data = noise(30_000, 24);
    let meta = format!("sha256 {}", B64.encode(sha256_hex(b"something else")));
    let (_, url) = tus.create(data.len(), &meta).await;
    tus.patch(&url, 0, &data[..10_000]).await;
    let r = tus.patch(&url, 10_000, &data[10_000..]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "hash_mismatch")
    );
    assert_eq!(
        tus.head(&url).await.status,
        StatusCode::NOT_FOUND,
        "the upload is gone"
    );
    // A disallowed type is refused as soon as its first bytes arrive.
    let mut html = b"<html><body>".to_vec();
    html.extend(std::iter::repeat_n(b'a', 5000));
    let (_, url) = tus.create(html.len(), "").await;
    let r = tus.patch(&url, 0, &html).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_type")
    );
    assert_eq!(tus.head(&url).await.status, StatusCode::NOT_FOUND);
    // A decompression bomb, sent in pieces.
    let bomb = png_bomb(60_000, 60_000);
    let (_, url) = tus.create(bomb.len(), "").await;
    tus.patch(&url, 0, &bomb[..100]).await;
    let r = tus.patch(&url, 100, &bomb[100..]).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "image_too_large")
    );
    assert_eq!(tus.head(&url).await.status, StatusCode::NOT_FOUND);
    // Nothing of any of them is stored or reserved.
    let u = srv.get("/v1/media/usage", Some("alice")).await.json();
    assert_eq!(
        (
            u["used_bytes"].as_u64(),
            u["reserved_bytes"].as_u64(),
            u["open_uploads"].as_u64()
        ),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(srv.staging_count().await, 0);
    srv.cleanup().await;
}

async fn expiry_termination_and_limits(b: Backend) {
    let srv = Server::with(b, |c| {
        c.max_open_uploads_per_user = 2;
        c.quota_bytes_per_user = 20 * MIB as u64;
    })
    .await;
    let tus = Tus::new(&srv, "alice").await;
    let (r, _) = tus.create(16 * MIB + 1, "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large")
    );
    let (r, u1) = tus.create(15 * MIB, "").await;
    assert_eq!(r.status, StatusCode::CREATED);
    // The quota counts open uploads at their declared length.
    let (r, _) = tus.create(6 * MIB, "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "quota_exceeded")
    );
    let (_, u2) = tus.create(10, "").await;
    let (r, _) = tus.create(10, "").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::CONFLICT, "too_many_open_uploads")
    );
    let r = tus
        .req(reqwest::Method::POST, &srv.url("/v1/media/uploads"))
        .header("upload-metadata", "bad header value");
    let r = srv.send(r.header("upload-length", "10")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::BAD_REQUEST, "invalid_header")
    );
    // Termination frees the slot and the reservation.
    tus.patch(&u2, 0, b"12345").await;
    let r = srv.send(tus.req(reqwest::Method::DELETE, &u2)).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert_eq!(tus.head(&u2).await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        srv.get("/v1/media/usage", Some("alice")).await.json()["open_uploads"],
        1
    );
    // Expiry: 24 h after the last PATCH the upload is gone for the client…
    tus.patch(&u1, 0, &noise(MIB, 25)).await;
    srv.clock.advance_secs(24 * 3600 + 1);
    let r = tus.head(&u1).await;
    assert_eq!(r.status, StatusCode::GONE);
    let r = tus.patch(&u1, MIB, b"late").await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::GONE, "upload_expired")
    );
    // …and the collector removes its bytes and reservation.
    let report = srv.media().collect_garbage().await.unwrap();
    assert_eq!(report.uploads, 1);
    assert_eq!(tus.head(&u1).await.status, StatusCode::NOT_FOUND);
    let u = srv.get("/v1/media/usage", Some("alice")).await.json();
    assert_eq!(
        (u["reserved_bytes"].as_u64(), u["open_uploads"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(srv.staging_count().await, 0);
    srv.cleanup().await;
}

async fn a_patch_while_another_holds_the_upload_gets_423(b: Backend) {
    let srv = Server::start(b).await;
    let tus = Tus::new(&srv, "alice").await;
    let data = noise(300_000, 26);
    let (_, url) = tus.create(data.len(), "").await;
    assert_eq!(
        tus.patch(&url, 0, &data[..100_000]).await.status,
        StatusCode::NO_CONTENT
    );
    // A PATCH whose body is still arriving (a slow phone) holds the upload.
    let path = url.trim_start_matches(&srv.base).to_owned();
    let head = format!(
        "PATCH {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nTus-Resumable: 1.0.0\r\n\
         Upload-Offset: 100000\r\nContent-Type: application/offset+octet-stream\r\n\
         Content-Length: 200000\r\nConnection: close\r\n\r\n",
        tus.token
    );
    let slow = srv.raw_start(&head, &data[100_000..150_000]).await;
    let id = Tus::id(&url);
    eventually("the slow PATCH holds the upload's lease", || async {
        let row = srv.media().store().upload(&id).await.unwrap().unwrap();
        row.lease_token.is_some()
    })
    .await;
    // Another PATCH at the same offset (a retry from a second connection) and
    // a termination are refused while it writes.
    let r = tus.patch(&url, 100_000, &data[100_000..]).await;
    assert_eq!(
        (r.status, r.code().as_str(), r.header("tus-resumable")),
        (StatusCode::LOCKED, "upload_busy", Some("1.0.0"))
    );
    let r = srv.send(tus.req(reqwest::Method::DELETE, &url)).await;
    assert_eq!(
        (r.status, r.code().as_str(), r.header("tus-resumable")),
        (StatusCode::LOCKED, "upload_busy", Some("1.0.0"))
    );
    // HEAD still answers, with the offset saved before the slow PATCH.
    let h = tus.head(&url).await;
    assert_eq!((h.status, Tus::offset(&h)), (StatusCode::OK, 100_000));
    // The slow PATCH completes the upload; none of the refused bytes got in.
    let reply = srv.raw_finish(slow, &data[150_000..]).await;
    assert_eq!(reply.status, 204, "{reply:?}");
    assert_eq!(reply.header("upload-offset"), Some("300000"));
    let hash = sha256_hex(&data);
    assert_eq!(reply.header("natter-media-hash"), Some(hash.as_str()));
    let info = srv
        .get(&format!("/v1/media/{hash}/info"), Some("alice"))
        .await
        .json();
    assert!(srv.get(info["url"].as_str().unwrap(), None).await.body == data);
    // The lease went with it; a replay of the final PATCH gives the hash again.
    let row = srv.media().store().upload(&id).await.unwrap().unwrap();
    assert_eq!(row.lease_token, None);
    let r = tus.patch(&url, data.len(), b"").await;
    assert_eq!(
        (r.status, r.header("natter-media-hash")),
        (StatusCode::NO_CONTENT, Some(hash.as_str()))
    );
    assert_eq!(srv.staging_count().await, 0);
    srv.cleanup().await;
}
