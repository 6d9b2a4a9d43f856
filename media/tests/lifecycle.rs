//! References and garbage collection on both backends, video thumbnails with
//! and without ffmpeg, and the OpenAPI document.

#[macro_use]
mod common;

use bytes::Bytes;
use common::*;
use natter_common::clock::Clock;
use natter_media::BlobHash;
use natter_media::blob::{ObjectKey, UploadId};
use natter_media::store::Claim;
use reqwest::StatusCode;
use serde_json::json;

both_backends!(
    blobs_expire_after_their_last_reference_and_are_collected,
    profile_references_hold_until_removed,
    only_owners_reference_a_blob,
    orphaned_staging_objects_are_collected_and_live_ones_kept,
    blobs_left_pending_by_a_crashed_upload_are_collected_after_an_hour,
    videos_get_a_first_frame_thumbnail_when_ffmpeg_is_there,
    without_ffmpeg_the_response_says_so,
    the_readiness_probe_reaches_the_backend,
);

async fn the_readiness_probe_reaches_the_backend(b: Backend) {
    let srv = Server::start(b).await;
    let probe = srv.service.readiness();
    probe().await.expect("backend answers");
    if b == Backend::Fs {
        // A blob directory that cannot be read makes the probe fail.
        let blobs = srv.dir.path().join("media/blobs");
        std::fs::remove_dir_all(&blobs).unwrap();
        std::fs::write(&blobs, b"not a directory").unwrap();
        assert!(probe().await.is_err());
    }
    srv.cleanup().await;
}

const DAY: i64 = 86_400;

/// Knowing a blob's hash is not enough to keep it (and its uploader's quota
/// charge) alive: a reference needs an owner. A user who has the bytes
/// uploads them (deduplicated, charged to them) and may then reference it.
async fn only_owners_reference_a_blob(b: Backend) {
    let srv = Server::start(b).await;
    let photo = jpeg(320, 240);
    let hash = srv.upload("alice", &photo, "").await.json()["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let refs = format!("/v1/media/{hash}/refs");
    let add = |who: &'static str, body: serde_json::Value| {
        let srv = &srv;
        let refs = refs.clone();
        async move {
            srv.send(
                srv.http
                    .post(srv.url(&refs))
                    .bearer_auth(srv.token(who).await)
                    .json(&body),
            )
            .await
        }
    };
    for body in [
        json!({"kind": "message", "id": "pin-1"}),
        json!({"kind": "profile", "id": "mallory"}),
    ] {
        let r = add("mallory", body.clone()).await;
        assert_eq!(
            (r.status, r.code().as_str()),
            (StatusCode::FORBIDDEN, "not_an_owner"),
            "{body}"
        );
    }
    let h: BlobHash = hash.parse().unwrap();
    assert!(
        srv.media()
            .store()
            .refs(&h.to_hex())
            .await
            .unwrap()
            .is_empty(),
        "a refused reference left a row"
    );
    // The uploader may; so may anyone after uploading the same bytes, who
    // is then charged for them too.
    assert_eq!(
        add("alice", json!({"kind": "message", "id": "m-a"}))
            .await
            .status,
        StatusCode::CREATED
    );
    let again = srv.upload("bob", &photo, "").await;
    assert_eq!(again.json()["deduplicated"], true);
    assert_eq!(
        add("bob", json!({"kind": "message", "id": "m-b"}))
            .await
            .status,
        StatusCode::CREATED
    );
    assert_eq!(
        srv.get("/v1/media/usage", Some("bob")).await.json()["used_bytes"],
        photo.len()
    );
    // A hash that names nothing stays a 404 for everyone.
    let missing = sha256_hex(b"nothing here");
    let r = srv
        .send(
            srv.http
                .post(srv.url(&format!("/v1/media/{missing}/refs")))
                .bearer_auth(srv.token("mallory").await)
                .json(&json!({"kind": "message", "id": "m"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    srv.cleanup().await;
}

async fn blobs_expire_after_their_last_reference_and_are_collected(b: Backend) {
    let srv = Server::start(b).await;
    let photo = jpeg(640, 480);
    let v = srv.upload("alice", &photo, "").await.json();
    let hash = v["hash"].as_str().unwrap().to_owned();
    let h: natter_media::BlobHash = hash.parse().unwrap();
    assert_eq!(v["expires_at"].as_i64(), Some(srv.clock_secs() + 30 * DAY));
    // Ten days later the message goes out: the blob now lives 30 days from then.
    srv.clock.advance_secs(10 * DAY);
    let refs = format!("/v1/media/{hash}/refs");
    let r = srv
        .send(
            srv.http
                .post(srv.url(&refs))
                .bearer_auth(srv.token("alice").await)
                .json(&json!({"kind": "message", "id": "msg-1"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        r.json()["expires_at"].as_i64(),
        Some(srv.clock_secs() + 40 * DAY)
    );
    // Idempotent.
    let r = srv
        .send(
            srv.http
                .post(srv.url(&refs))
                .bearer_auth(srv.token("alice").await)
                .json(&json!({"kind": "message", "id": "msg-1"})),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["created"].as_bool()),
        (StatusCode::OK, Some(false))
    );
    // Bad references.
    for (body, code) in [
        (json!({"kind": "story", "id": "x"}), "invalid_reference"),
        (
            json!({"kind": "message", "id": "has space"}),
            "invalid_reference",
        ),
        (json!({"kind": "profile", "id": "bob"}), "not_your_profile"),
    ] {
        let r = srv
            .send(
                srv.http
                    .post(srv.url(&refs))
                    .bearer_auth(srv.token("alice").await)
                    .json(&body),
            )
            .await;
        assert_eq!(r.code(), code, "{body}");
    }
    let missing = sha256_hex(b"nope");
    let r = srv
        .send(
            srv.http
                .post(srv.url(&format!("/v1/media/{missing}/refs")))
                .bearer_auth(srv.token("alice").await)
                .json(&json!({"kind": "message", "id": "m"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // 39 days after the reference the blob is still there; 40 days after, it goes.
    srv.clock.advance_secs(29 * DAY);
    assert_eq!(srv.media().collect_garbage().await.unwrap().blobs, 0);
    assert_eq!(
        srv.get(&format!("/v1/media/{hash}"), Some("bob"))
            .await
            .status,
        StatusCode::OK
    );
    srv.clock.advance_secs(DAY);
    let report = srv.media().collect_garbage().await.unwrap();
    assert_eq!((report.blobs, report.bytes), (1, photo.len() as u64));
    let r = srv.get(&format!("/v1/media/{hash}"), Some("bob")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    // Blob and thumbnail are gone from storage, and the quota is refunded.
    let blobs = srv.media().blobs();
    assert_eq!(blobs.size(&ObjectKey::Blob(h)).await.unwrap(), None);
    assert_eq!(blobs.size(&ObjectKey::Thumb(h)).await.unwrap(), None);
    assert_eq!(
        srv.get("/v1/media/usage", Some("alice")).await.json()["used_bytes"],
        0
    );
    // The same content can be uploaded again afterwards.
    assert_eq!(
        srv.upload("alice", &photo, "").await.status,
        StatusCode::CREATED
    );
    srv.cleanup().await;
}

async fn profile_references_hold_until_removed(b: Backend) {
    let srv = Server::start(b).await;
    let avatar = jpeg(400, 400);
    let hash = srv.upload("alice", &avatar, "").await.json()["hash"]
        .as_str()
        .unwrap()
        .to_owned();
    let refs = format!("/v1/media/{hash}/refs");
    let r = srv
        .send(
            srv.http
                .post(srv.url(&refs))
                .bearer_auth(srv.token("alice").await)
                .json(&json!({"kind": "profile", "id": "alice"})),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert!(r.json()["expires_at"].is_null(), "held blobs do not expire");
    // In-process references (what the binary can wire for other services).
    let h: natter_media::BlobHash = hash.parse().unwrap();
    let kind = natter_media::engine::RefKind::Message;
    assert_eq!(
        srv.media()
            .add_reference(&h, kind, "chat:42", "alice")
            .await
            .unwrap(),
        natter_media::store::RefAdded::Added
    );
    srv.clock.advance_secs(365 * DAY);
    assert_eq!(srv.media().collect_garbage().await.unwrap().blobs, 0);
    assert_eq!(
        srv.get(&format!("/v1/media/{hash}/thumbnail"), Some("bob"))
            .await
            .status,
        StatusCode::OK
    );
    // Only who added a reference removes it.
    let del = format!("/v1/media/{hash}/refs/profile/alice");
    let r = srv
        .send(
            srv.http
                .delete(srv.url(&del))
                .bearer_auth(srv.token("bob").await),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = srv
        .send(
            srv.http
                .delete(srv.url(&del))
                .bearer_auth(srv.token("alice").await),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = srv
        .send(
            srv.http
                .delete(srv.url(&del))
                .bearer_auth(srv.token("alice").await),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let info = srv
        .get(&format!("/v1/media/{hash}/info"), Some("alice"))
        .await
        .json();
    assert_eq!(
        info["expires_at"].as_i64(),
        Some(srv.clock_secs() + 365 * DAY + 30 * DAY)
    );
    srv.clock.advance_secs(30 * DAY);
    assert_eq!(srv.media().collect_garbage().await.unwrap().blobs, 1);
    srv.cleanup().await;
}

/// A one-second MPEG-4 video made by ffmpeg itself (no external files).
fn make_video(dir: &std::path::Path) -> Vec<u8> {
    let out = dir.join("clip.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=640x360:rate=10",
            "-t",
            "1",
        ])
        .args(["-c:v", "mpeg4", "-pix_fmt", "yuv420p"])
        .arg(&out)
        .status()
        .expect("ffmpeg is required for this test; scripts/test-deps.sh installs it");
    assert!(status.success(), "ffmpeg could not make the test video");
    std::fs::read(out).unwrap()
}

async fn videos_get_a_first_frame_thumbnail_when_ffmpeg_is_there(b: Backend) {
    let srv = Server::start(b).await;
    let video = make_video(srv.dir.path());
    let r = srv.upload("alice", &video, "").await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    let v = r.json();
    assert_eq!(v["content_type"], "video/mp4");
    assert_eq!(v["thumbnail"]["status"], "created", "{v}");
    assert_eq!(
        (
            v["thumbnail"]["width"].as_u64(),
            v["thumbnail"]["height"].as_u64()
        ),
        (Some(320), Some(180))
    );
    assert!(v["preview"]["data_base64"].as_str().is_some());
    let t = srv.get(v["thumbnail"]["url"].as_str().unwrap(), None).await;
    let img = image::load_from_memory_with_format(&t.body, image::ImageFormat::Jpeg).unwrap();
    assert_eq!((img.width(), img.height()), (320, 180));
    // A "video" ffmpeg cannot read is still stored, and the response says why
    // there is no thumbnail.
    let mut broken = video[..64].to_vec();
    broken.extend(noise(20_000, 31));
    let v = srv.upload("alice", &broken, "").await.json();
    assert_eq!(v["thumbnail"]["status"], "none");
    assert!(
        v["thumbnail"]["reason"]
            .as_str()
            .unwrap()
            .contains("ffmpeg could not read a frame"),
        "{v}"
    );
    srv.cleanup().await;
}

async fn without_ffmpeg_the_response_says_so(b: Backend) {
    let srv = Server::with(b, |c| c.ffmpeg_path = "/nonexistent/ffmpeg".into()).await;
    let video = make_video(srv.dir.path());
    let v = srv.upload("alice", &video, "").await.json();
    assert_eq!(v["thumbnail"]["status"], "none");
    let reason = v["thumbnail"]["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("no video thumbnail: ffmpeg is not available on this server"),
        "{reason}"
    );
    assert!(v["preview"].is_null());
    srv.cleanup().await;
}

/// How to bless a changed OpenAPI document.
const BLESS_OPENAPI: &str = "UPDATE_OPENAPI=1 cargo test -p natter-media --test lifecycle openapi";

/// The checked-in document is what the code generates. The test only compares;
/// with `UPDATE_OPENAPI=1` (exactly `1`, the explicit bless path) it writes the
/// generated document first. Any other value compares like an ordinary run.
#[tokio::test]
async fn openapi_document_is_checked_in_and_served() {
    let generated = natter_media::openapi().to_pretty_json().unwrap() + "\n";
    let path = std::path::Path::new(
        &std::env::var_os("CARGO_MANIFEST_DIR")
            .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into()),
    )
    .join("../docs/api/media.openapi.json");
    if std::env::var("UPDATE_OPENAPI").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!("docs/api/media.openapi.json cannot be read ({e}); create it with `{BLESS_OPENAPI}`")
    });
    if let Some(diff) = first_difference(&checked_in, &generated) {
        panic!(
            "docs/api/media.openapi.json is stale (checked in vs generated): {diff}\n\
             if the API change is intended, bless it with `{BLESS_OPENAPI}` and commit the file"
        );
    }
    let doc: serde_json::Value = serde_json::from_str(&generated).unwrap();
    for p in [
        "/v1/media",
        "/v1/media/{hash}",
        "/v1/media/{hash}/thumbnail",
        "/v1/media/{hash}/info",
        "/v1/media/{hash}/refs",
        "/v1/media/uploads",
        "/v1/media/uploads/{id}",
        "/v1/media/usage",
    ] {
        assert!(
            doc["paths"].get(p).is_some(),
            "{p} missing from the OpenAPI document"
        );
    }
    let srv = Server::start(Backend::Fs).await;
    let served = srv.get("/v1/media/openapi.json", None).await.json();
    assert_eq!(served["info"]["title"], "Natter media API");
    srv.cleanup().await;
}

/// Where two texts first differ, by line, or `None` when they are equal.
fn first_difference(checked_in: &str, generated: &str) -> Option<String> {
    if checked_in == generated {
        return None;
    }
    let (old, new): (Vec<&str>, Vec<&str>) =
        (checked_in.lines().collect(), generated.lines().collect());
    let at = old
        .iter()
        .zip(&new)
        .position(|(a, b)| a != b)
        .unwrap_or(old.len().min(new.len()));
    let line = |v: &[&str]| {
        v.get(at)
            .map_or("<end of file>".to_owned(), |l| format!("{l:?}"))
    };
    Some(format!(
        "{} lines checked in, {} generated; first difference at line {}:\n  - {}\n  + {}",
        old.len(),
        new.len(),
        at + 1,
        line(&old),
        line(&new)
    ))
}

/// The collector's age for staging objects no upload owns:
/// `upload_expiry_secs + upload_lease_secs + 1 h` (docs/media.md).
fn orphan_age_secs(srv: &Server) -> i64 {
    let c = srv.media().config();
    i64::from(c.upload_expiry_secs) + i64::from(c.upload_lease_secs) + 3600
}

async fn orphaned_staging_objects_are_collected_and_live_ones_kept(b: Backend) {
    // Storage stamps objects with the real time: the media clock starts there.
    let srv = Server::with_clock_at(b, wall_clock_ms(), |_| {}).await;
    let age = orphan_age_secs(&srv);
    assert_eq!(age, 24 * 3600 + 900 + 3600, "the documented defaults");
    // What a crashed node leaves: the staging object of a simple upload, and
    // a resumable upload's bytes (a tail on S3) whose row is gone.
    let crashed_simple = srv.stage(&noise(70_000, 51), true).await;
    let crashed_resumable = srv.stage(&noise(30_000, 52), false).await;
    // A live resumable upload, written to now and again 20 hours later, and a
    // stored blob.
    let tus = Tus::new(&srv, "alice").await;
    let data = noise(200_000, 53);
    let (r, url) = tus.create(data.len(), "").await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(
        tus.patch(&url, 0, &data[..50_000]).await.status,
        StatusCode::NO_CONTENT
    );
    let live: UploadId = Tus::id(&url).parse().unwrap();
    let kept = noise(40_000, 54);
    assert_eq!(
        srv.upload("alice", &kept, "").await.status,
        StatusCode::CREATED
    );
    let kept_hash: BlobHash = sha256_hex(&kept).parse().unwrap();
    srv.clock.advance_secs(20 * 3600);
    let r = tus.patch(&url, 50_000, &data[50_000..100_000]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let staged = srv.staging_ids().await;
    for id in [&crashed_simple, &crashed_resumable, &live] {
        assert!(staged.contains(id), "{id} is staged");
    }
    // Ten minutes short of the age, nothing is old enough.
    srv.clock.advance_secs(age - 20 * 3600 - 600);
    let report = srv.media().collect_garbage().await.unwrap();
    assert_eq!(report, Default::default());
    assert_eq!(srv.staging_ids().await.len(), 3);
    // Ten minutes past it, the orphans go; the upload that has a row stays,
    // however old its staging object, and so does the blob.
    srv.clock.advance_secs(1200);
    let report = srv.media().collect_garbage().await.unwrap();
    assert_eq!(
        (report.staging, report.uploads, report.blobs),
        (2, 0, 0),
        "{report:?}"
    );
    assert_eq!(srv.staging_ids().await, vec![live.clone()]);
    let blobs = srv.media().blobs();
    assert_eq!(
        blobs
            .size(&ObjectKey::Staging(crashed_simple))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        blobs.size(&ObjectKey::Blob(kept_hash)).await.unwrap(),
        Some(kept.len() as u64)
    );
    // The live upload's bytes are whole: it completes with the right hash.
    let r = tus.patch(&url, 100_000, &data[100_000..]).await;
    assert_eq!(
        (r.status, r.header("natter-media-hash")),
        (StatusCode::NO_CONTENT, Some(sha256_hex(&data).as_str()))
    );
    let info = srv
        .get(
            &format!("/v1/media/{}/info", sha256_hex(&data)),
            Some("alice"),
        )
        .await
        .json();
    assert!(srv.get(info["url"].as_str().unwrap(), None).await.body == data);
    assert_eq!(srv.staging_count().await, 0);
    srv.cleanup().await;
}

/// An upload that crashed after claiming its hash and moving its bytes and
/// thumbnail into place, but before marking the blob ready.
async fn crashed_upload(srv: &Server, data: &[u8], owner: &str) -> BlobHash {
    let now = srv.clock.now_ms();
    let claimed = srv
        .media()
        .store()
        .claim_blob(&pending_blob(data, owner, now), owner, 0, None, now)
        .await
        .unwrap();
    assert_eq!(claimed, Claim::Created);
    let hash: BlobHash = sha256_hex(data).parse().unwrap();
    let id = srv.stage(data, true).await;
    let blobs = srv.media().blobs();
    blobs
        .put(&ObjectKey::Thumb(hash), Bytes::from_static(b"thumbnail"))
        .await
        .unwrap();
    blobs.promote(&id, &hash).await.unwrap();
    hash
}

async fn blobs_left_pending_by_a_crashed_upload_are_collected_after_an_hour(b: Backend) {
    let srv = Server::start(b).await;
    let first = noise(60_000, 55);
    let h1 = crashed_upload(&srv, &first, "alice").await;
    let ready = noise(20_000, 56);
    assert_eq!(
        srv.upload("alice", &ready, "").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        srv.get("/v1/media/usage", Some("alice")).await.json()["used_bytes"],
        first.len() + ready.len()
    );
    // A pending blob is not downloadable.
    let r = srv.get(&format!("/v1/media/{h1}"), Some("bob")).await;
    assert_eq!(
        (r.status, r.code().as_str()),
        (StatusCode::NOT_FOUND, "not_found")
    );
    // 59 minutes on it is still an upload in progress.
    srv.clock.advance_secs(59 * 60);
    assert_eq!(
        srv.media().collect_garbage().await.unwrap(),
        Default::default()
    );
    let second = noise(50_000, 57);
    let h2 = crashed_upload(&srv, &second, "bob").await;
    // Past the hour it is a crashed upload: bytes, thumbnail and row go, and
    // its owner is refunded. The younger one and the ready blob stay.
    srv.clock.advance_secs(2 * 60);
    let report = srv.media().collect_garbage().await.unwrap();
    assert_eq!(
        (report.blobs, report.bytes),
        (1, first.len() as u64),
        "{report:?}"
    );
    let blobs = srv.media().blobs();
    assert_eq!(blobs.size(&ObjectKey::Blob(h1)).await.unwrap(), None);
    assert_eq!(blobs.size(&ObjectKey::Thumb(h1)).await.unwrap(), None);
    assert!(!srv.blob_exists(&h1.to_hex()).await);
    assert_eq!(
        srv.get("/v1/media/usage", Some("alice")).await.json()["used_bytes"],
        ready.len()
    );
    assert_eq!(
        blobs.size(&ObjectKey::Blob(h2)).await.unwrap(),
        Some(second.len() as u64)
    );
    assert_eq!(blobs.size(&ObjectKey::Thumb(h2)).await.unwrap(), Some(9));
    assert!(srv.blob_exists(&h2.to_hex()).await);
    let rh: BlobHash = sha256_hex(&ready).parse().unwrap();
    assert_eq!(
        blobs.size(&ObjectKey::Blob(rh)).await.unwrap(),
        Some(ready.len() as u64)
    );
    // The hash is free again: the same bytes upload normally.
    let r = srv.upload("carol", &first, "").await;
    assert_eq!(
        (r.status, r.json()["deduplicated"].as_bool()),
        (StatusCode::CREATED, Some(false))
    );
    assert!(srv.get(r.json()["url"].as_str().unwrap(), None).await.body == first);
    // An hour after the second one crashed, it goes too.
    srv.clock.advance_secs(59 * 60);
    let report = srv.media().collect_garbage().await.unwrap();
    assert_eq!(
        (report.blobs, report.bytes),
        (1, second.len() as u64),
        "{report:?}"
    );
    assert_eq!(blobs.size(&ObjectKey::Blob(h2)).await.unwrap(), None);
    assert_eq!(blobs.size(&ObjectKey::Thumb(h2)).await.unwrap(), None);
    assert_eq!(
        srv.get("/v1/media/usage", Some("bob")).await.json()["used_bytes"],
        0
    );
    assert_eq!(srv.staging_count().await, 0);
    srv.cleanup().await;
}
