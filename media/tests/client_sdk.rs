//! The client SDK's media module (what `natter-cli upload` / `download` use)
//! against the real service on both backends: a photo comes back with its
//! hash, preview and thumbnail and downloads through its signed URL; an
//! upload dropped half-way resumes from the server's offset; a partial
//! download resumes with a range request.

#[macro_use]
mod common;

use common::*;
use natter_client::media::{MediaClient, Progress};
use natter_client::{Account, Api, Credentials};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

both_backends!(sdk_uploads_resume_and_downloads_verify);

async fn account(srv: &Server, user: &str) -> Account {
    let creds = Credentials {
        user_id: user.into(),
        device_id: 1,
        access_token: srv.token(user).await,
        access_expires_at: i64::MAX / 2,
        refresh_token: "unused".into(),
        refresh_expires_at: i64::MAX / 2,
    };
    Account::new(Api::new(&srv.base).unwrap(), creds)
}

/// Records the furthest progress and wakes a waiter past a threshold.
struct Watch {
    seen: AtomicU64,
    stop_at: u64,
    stop: tokio::sync::Notify,
}

impl Progress for Watch {
    fn update(&self, done: u64, _total: u64) {
        self.seen.fetch_max(done, Ordering::SeqCst);
        if done >= self.stop_at {
            self.stop.notify_one();
        }
    }
}

async fn sdk_uploads_resume_and_downloads_verify(b: Backend) {
    let srv = Server::start(b).await;
    let state = srv.dir.path().join("client-state");
    let media = MediaClient::new(account(&srv, "alice").await, &state).with_chunk_size(1024 * 1024);
    let noop = |_: u64, _: u64| {};

    // A photo: hash, preview, thumbnail, signed URL.
    let photo_path = srv.dir.path().join("photo.jpg");
    let photo = jpeg(1200, 900);
    std::fs::write(&photo_path, &photo).unwrap();
    let up = media.upload(&photo_path, false, &noop).await.unwrap();
    assert_eq!(up.info.hash, sha256_hex(&photo));
    assert_eq!(up.resumed_from, 0);
    let preview = up.info.preview.as_ref().expect("a preview").jpeg().unwrap();
    assert!(image::load_from_memory(&preview).is_ok());
    assert_eq!(
        (up.info.thumbnail.width, up.info.thumbnail.height),
        (Some(320), Some(240))
    );
    let out = srv.dir.path().join("photo.out");
    let info = media.download(&up.info.hash, &out, &noop).await.unwrap();
    assert_eq!(info.size, photo.len() as u64);
    assert!(std::fs::read(&out).unwrap() == photo);

    // A large file whose upload is dropped after 3 MiB (the process died).
    let big_path = srv.dir.path().join("big.bin");
    let big = noise(9 * MIB + 99, 41);
    std::fs::write(&big_path, &big).unwrap();
    let watch = Arc::new(Watch {
        seen: AtomicU64::new(0),
        stop_at: 3 * MIB as u64,
        stop: tokio::sync::Notify::new(),
    });
    tokio::select! {
        r = media.upload(&big_path, false, &*watch) => panic!("the upload should have been dropped: {r:?}"),
        _ = watch.stop.notified() => {}
    }
    // Run again: it continues from where the server is.
    let up = media.upload(&big_path, false, &noop).await.unwrap();
    assert!(
        up.resumed_from >= 3 * MIB as u64 && up.resumed_from < big.len() as u64,
        "resumed from {}",
        up.resumed_from
    );
    assert_eq!(up.info.hash, sha256_hex(&big));
    assert_eq!(
        std::fs::read_dir(&state).unwrap().count(),
        0,
        "no state left after completion"
    );

    // A partial download is resumed with a range request and verified.
    let out = srv.dir.path().join("big.out");
    std::fs::write(&out, &big[..4 * MIB]).unwrap();
    media.download(&up.info.hash, &out, &noop).await.unwrap();
    assert!(std::fs::read(&out).unwrap() == big);
    // A corrupted partial file is caught by the hash check.
    std::fs::write(&out, vec![0u8; MIB]).unwrap();
    let err = media
        .download(&up.info.hash, &out, &noop)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("SHA-256"), "{err}");

    // Refusals come back with the server's code.
    let html = srv.dir.path().join("page.html");
    std::fs::write(&html, b"<html><body>hello</body></html>").unwrap();
    let err = media.upload(&html, false, &noop).await.unwrap_err();
    assert!(err.to_string().contains("unsupported_type"), "{err}");
    srv.cleanup().await;
}
