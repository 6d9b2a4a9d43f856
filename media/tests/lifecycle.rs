//! References and garbage collection on both backends, video thumbnails with
//! and without ffmpeg, and the OpenAPI document.

#[macro_use]
mod common;

use common::*;
use natter_media::blob::ObjectKey;
use reqwest::StatusCode;
use serde_json::json;

both_backends!(
    blobs_expire_after_their_last_reference_and_are_collected,
    profile_references_hold_until_removed,
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
                .bearer_auth(srv.token("alice"))
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
                .bearer_auth(srv.token("alice"))
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
                    .bearer_auth(srv.token("alice"))
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
                .bearer_auth(srv.token("alice"))
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
                .bearer_auth(srv.token("alice"))
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
            .add_reference(&h, kind, "chat:42", "chat-core")
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
        .send(srv.http.delete(srv.url(&del)).bearer_auth(srv.token("bob")))
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = srv
        .send(
            srv.http
                .delete(srv.url(&del))
                .bearer_auth(srv.token("alice")),
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = srv
        .send(
            srv.http
                .delete(srv.url(&del))
                .bearer_auth(srv.token("alice")),
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

#[tokio::test]
async fn openapi_document_is_checked_in_and_served() {
    let generated = natter_media::openapi().to_pretty_json().unwrap() + "\n";
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/api/media.openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/api/media.openapi.json is stale: run UPDATE_OPENAPI=1 cargo test -p natter-media --test lifecycle openapi"
    );
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
