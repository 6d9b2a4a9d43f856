//! One contract for the metadata store, run against SQLite and PostgreSQL
//! (which must be running: see `scripts/test-deps.sh`).

use natter_common::testing::TestDb;
use natter_media::store::{
    self, BlobRecord, Claim, MediaStore, RefAdded, UploadCreated, UploadProgress, UploadRow,
};
use std::sync::Arc;

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = natter_common::testing::TestDb::sqlite().await;
                    super::run(db, super::$name).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test]
                async fn $name() {
                    let db = natter_common::testing::TestDb::postgres().await;
                    super::run(db, super::$name).await;
                }
            )*
        }
    };
}

contract!(
    claims_charge_each_owner_once_and_dedupe,
    quota_counts_blobs_and_open_uploads,
    pending_blobs_are_busy_and_unclaim_refunds,
    references_extend_and_hold,
    uploads_lease_save_complete_and_expire,
    collection_respects_references_and_refunds,
);

async fn run<F, Fut>(db: TestDb, f: F)
where
    F: FnOnce(Arc<dyn MediaStore>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let s = store::for_db(&db.db);
    s.migrate().await.unwrap();
    // Migrating twice is harmless.
    s.migrate().await.unwrap();
    f(s).await;
    db.cleanup().await;
}

const H1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const H2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

fn blob(hash: &str, size: i64) -> BlobRecord {
    BlobRecord {
        hash: hash.into(),
        size,
        content_type: "image/jpeg".into(),
        opaque: false,
        state: store::state::PENDING.into(),
        width: Some(4000),
        height: Some(3000),
        thumb_width: Some(320),
        thumb_height: Some(240),
        preview: Some("AAAA".into()),
        preview_width: Some(32),
        preview_height: Some(24),
        thumb_note: None,
        uploader: "alice".into(),
        created_at: 1000,
        last_ref_at: 1000,
        held_refs: 0,
    }
}

fn upload(id: &str, user: &str, length: i64) -> UploadRow {
    UploadRow {
        id: id.into(),
        user_id: user.into(),
        length,
        received: 0,
        opaque: false,
        claimed_hash: None,
        metadata: "filename Y2F0LmpwZw==".into(),
        hash_state: vec![1, 2, 3],
        head: vec![],
        backend_state: "{}".into(),
        created_at: 1000,
        expires_at: 5000,
        lease_token: None,
        lease_until: 0,
        completed_hash: None,
    }
}

async fn store_ready(s: &dyn MediaStore, hash: &str, size: i64, owner: &str, now: i64) {
    assert_eq!(
        s.claim_blob(&blob(hash, size), owner, 0, None, now)
            .await
            .unwrap(),
        Claim::Created
    );
    s.mark_ready(hash).await.unwrap();
}

async fn claims_charge_each_owner_once_and_dedupe(s: Arc<dyn MediaStore>) {
    store_ready(&*s, H1, 100, "alice", 1000).await;
    let b = s.blob(H1).await.unwrap().unwrap();
    assert_eq!(
        (b.state.as_str(), b.size, b.uploader.as_str()),
        ("ready", 100, "alice")
    );
    assert_eq!(b.preview.as_deref(), Some("AAAA"));
    assert_eq!(s.usage("alice").await.unwrap().bytes, 100);
    // The same bytes again, by the same owner: no second charge; last reference moves.
    match s
        .claim_blob(&blob(H1, 100), "alice", 0, None, 2000)
        .await
        .unwrap()
    {
        Claim::Existing(e) => assert_eq!(e.last_ref_at, 2000),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.usage("alice").await.unwrap().bytes, 100);
    // By someone else: charged once to them too.
    assert!(matches!(
        s.claim_blob(&blob(H1, 100), "bob", 0, None, 3000)
            .await
            .unwrap(),
        Claim::Existing(_)
    ));
    assert_eq!(s.usage("bob").await.unwrap().bytes, 100);
    assert_eq!(s.usage("nobody").await.unwrap(), store::Usage::default());
}

async fn quota_counts_blobs_and_open_uploads(s: Arc<dyn MediaStore>) {
    store_ready(&*s, H1, 600, "alice", 1000).await;
    // 600 used; an upload of 300 fits a quota of 1000, a second does not.
    assert_eq!(
        s.create_upload(&upload("u1", "alice", 300), 1000, 10)
            .await
            .unwrap(),
        UploadCreated::Created
    );
    assert_eq!(
        s.create_upload(&upload("u2", "alice", 300), 1000, 10)
            .await
            .unwrap(),
        UploadCreated::QuotaExceeded {
            used: 900,
            quota: 1000
        }
    );
    let u = s.usage("alice").await.unwrap();
    assert_eq!((u.bytes, u.reserved, u.open_uploads), (600, 300, 1));
    // A blob of 300 would exceed the quota while u1 is open, unless it is u1 finishing.
    assert_eq!(
        s.claim_blob(&blob(H2, 300), "alice", 1000, None, 1000)
            .await
            .unwrap(),
        Claim::QuotaExceeded {
            used: 900,
            quota: 1000
        }
    );
    assert_eq!(
        s.claim_blob(&blob(H2, 300), "alice", 1000, Some("u1"), 1000)
            .await
            .unwrap(),
        Claim::Created
    );
    s.complete_upload("u1", H2).await.unwrap();
    let u = s.usage("alice").await.unwrap();
    assert_eq!((u.bytes, u.reserved, u.open_uploads), (900, 0, 0));
    // The open-upload cap.
    assert_eq!(
        s.create_upload(&upload("u3", "bob", 1), 0, 1)
            .await
            .unwrap(),
        UploadCreated::Created
    );
    assert_eq!(
        s.create_upload(&upload("u4", "bob", 1), 0, 1)
            .await
            .unwrap(),
        UploadCreated::TooManyOpen(1)
    );
    // Unlimited quota (0).
    assert_eq!(
        s.create_upload(&upload("u5", "carol", i64::MAX / 4), 0, 5)
            .await
            .unwrap(),
        UploadCreated::Created
    );
}

async fn pending_blobs_are_busy_and_unclaim_refunds(s: Arc<dyn MediaStore>) {
    assert_eq!(
        s.claim_blob(&blob(H1, 100), "alice", 0, None, 1000)
            .await
            .unwrap(),
        Claim::Created
    );
    // Another upload of the same bytes while the first is moving them into place.
    assert_eq!(
        s.claim_blob(&blob(H1, 100), "bob", 0, None, 1000)
            .await
            .unwrap(),
        Claim::Busy
    );
    assert_eq!(
        s.add_ref(H1, "message", "m1", false, "bob", 1000)
            .await
            .unwrap(),
        RefAdded::NoBlob
    );
    s.unclaim(H1).await.unwrap();
    assert!(s.blob(H1).await.unwrap().is_none());
    assert_eq!(s.usage("alice").await.unwrap().bytes, 0);
    assert!(
        s.mark_ready(H1).await.is_err(),
        "a vanished pending blob cannot become ready"
    );
    // unclaim leaves ready blobs alone.
    store_ready(&*s, H2, 50, "alice", 1000).await;
    s.unclaim(H2).await.unwrap();
    assert!(s.blob(H2).await.unwrap().is_some());
    assert_eq!(s.usage("alice").await.unwrap().bytes, 50);
}

async fn references_extend_and_hold(s: Arc<dyn MediaStore>) {
    store_ready(&*s, H1, 10, "alice", 1000).await;
    assert_eq!(
        s.add_ref(H1, "message", "m1", false, "alice", 5000)
            .await
            .unwrap(),
        RefAdded::Added
    );
    assert_eq!(
        s.add_ref(H1, "message", "m1", false, "alice", 9000)
            .await
            .unwrap(),
        RefAdded::Exists
    );
    let b = s.blob(H1).await.unwrap().unwrap();
    assert_eq!(
        (b.last_ref_at, b.held_refs),
        (5000, 0),
        "a repeated reference changes nothing"
    );
    assert_eq!(b.expires_at(100), Some(5100));
    assert_eq!(
        s.add_ref(H1, "profile", "alice", true, "alice", 6000)
            .await
            .unwrap(),
        RefAdded::Added
    );
    let b = s.blob(H1).await.unwrap().unwrap();
    assert_eq!(
        (b.last_ref_at, b.held_refs, b.expires_at(100)),
        (6000, 1, None)
    );
    // An older timestamp never moves the last reference back.
    assert_eq!(
        s.add_ref(H1, "message", "m0", false, "bob", 10)
            .await
            .unwrap(),
        RefAdded::Added
    );
    assert_eq!(s.blob(H1).await.unwrap().unwrap().last_ref_at, 6000);
    let refs = s.refs(H1).await.unwrap();
    assert_eq!(refs.len(), 3);
    assert!(
        refs.iter()
            .any(|r| r.kind == "profile" && r.holds && r.created_by == "alice")
    );
    assert!(s.remove_ref(H1, "profile", "alice", 7000).await.unwrap());
    assert!(!s.remove_ref(H1, "profile", "alice", 7000).await.unwrap());
    let b = s.blob(H1).await.unwrap().unwrap();
    assert_eq!((b.last_ref_at, b.held_refs), (7000, 0));
    assert_eq!(
        s.add_ref(H2, "message", "m1", false, "alice", 1)
            .await
            .unwrap(),
        RefAdded::NoBlob
    );
}

async fn uploads_lease_save_complete_and_expire(s: Arc<dyn MediaStore>) {
    assert_eq!(
        s.create_upload(&upload("up", "alice", 1000), 0, 5)
            .await
            .unwrap(),
        UploadCreated::Created
    );
    let row = s.upload("up").await.unwrap().unwrap();
    assert_eq!(
        (
            row.received,
            row.hash_state.as_slice(),
            row.metadata.as_str()
        ),
        (0, &[1u8, 2, 3][..], "filename Y2F0LmpwZw==")
    );
    let leased = s
        .lease_upload("up", "t1", 1000, 2000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(leased.lease_token.as_deref(), Some("t1"));
    assert!(
        s.lease_upload("up", "t2", 1500, 2500)
            .await
            .unwrap()
            .is_none(),
        "one PATCH at a time"
    );
    let p = UploadProgress {
        received: 400,
        hash_state: vec![9; 40],
        head: b"\xFF\xD8\xFF".to_vec(),
        backend_state: r#"{"len":400}"#.into(),
        expires_at: 9000,
    };
    assert!(
        !s.save_upload_progress("up", "t2", 0, &p, false)
            .await
            .unwrap(),
        "not the lease holder"
    );
    assert!(
        !s.save_upload_progress("up", "t1", 5, &p, false)
            .await
            .unwrap(),
        "wrong expected offset"
    );
    assert!(
        s.save_upload_progress("up", "t1", 0, &p, false)
            .await
            .unwrap()
    );
    assert_eq!(
        s.upload("up")
            .await
            .unwrap()
            .unwrap()
            .lease_token
            .as_deref(),
        Some("t1"),
        "kept without release"
    );
    // Saving again (same offset) with release gives the lease back in that write.
    assert!(
        s.save_upload_progress("up", "t1", 400, &p, true)
            .await
            .unwrap()
    );
    let row = s.upload("up").await.unwrap().unwrap();
    assert_eq!(
        (
            row.received,
            row.hash_state.len(),
            row.head.len(),
            row.expires_at
        ),
        (400, 40, 3, 9000)
    );
    assert!(row.lease_token.is_none());
    // A lapsed lease can be taken over.
    s.lease_upload("up", "t3", 1000, 2000)
        .await
        .unwrap()
        .unwrap();
    assert!(
        s.lease_upload("up", "t4", 2000, 3000)
            .await
            .unwrap()
            .is_some()
    );
    s.release_upload("up", "t4").await.unwrap();
    // Expiry: not before its time, and never while leased.
    assert!(s.expired_uploads(8999, 10).await.unwrap().is_empty());
    s.lease_upload("up", "t5", 9000, 9500)
        .await
        .unwrap()
        .unwrap();
    assert!(s.expired_uploads(9100, 10).await.unwrap().is_empty());
    assert!(!s.delete_expired_upload("up", 9100).await.unwrap());
    assert_eq!(s.expired_uploads(9600, 10).await.unwrap().len(), 1);
    assert!(s.delete_expired_upload("up", 9600).await.unwrap());
    assert!(s.upload("up").await.unwrap().is_none());
    // Termination returns the row.
    s.create_upload(&upload("up2", "alice", 10), 0, 5)
        .await
        .unwrap();
    assert_eq!(s.delete_upload("up2").await.unwrap().unwrap().id, "up2");
    assert!(s.delete_upload("up2").await.unwrap().is_none());
}

async fn collection_respects_references_and_refunds(s: Arc<dyn MediaStore>) {
    store_ready(&*s, H1, 100, "alice", 1000).await;
    s.claim_blob(&blob(H1, 100), "bob", 0, None, 1000)
        .await
        .unwrap();
    // A crashed upload's pending row.
    assert_eq!(
        s.claim_blob(&blob(H2, 7), "carol", 0, None, 1000)
            .await
            .unwrap(),
        Claim::Created
    );
    // Cutoffs: nothing is old enough yet.
    assert!(s.collectable_blobs(999, 999, 10).await.unwrap().is_empty());
    let due: Vec<String> = s
        .collectable_blobs(1000, 1000, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.hash)
        .collect();
    assert_eq!(due.len(), 2, "{due:?}");
    // A reference arriving before deletion starts saves the blob.
    s.add_ref(H1, "message", "m9", false, "bob", 1500)
        .await
        .unwrap();
    assert!(!s.begin_delete(H1, 1000, 1000).await.unwrap());
    assert!(s.begin_delete(H2, 1000, 1000).await.unwrap());
    s.finish_delete(H2).await.unwrap();
    assert_eq!(s.usage("carol").await.unwrap().bytes, 0);
    // Later the blob expires; deletion refunds both owners and drops references.
    assert!(s.begin_delete(H1, 1500, 0).await.unwrap());
    assert_eq!(
        s.add_ref(H1, "message", "late", false, "bob", 1600)
            .await
            .unwrap(),
        RefAdded::NoBlob
    );
    assert!(matches!(
        s.claim_blob(&blob(H1, 100), "dave", 0, None, 1600)
            .await
            .unwrap(),
        Claim::Busy
    ));
    // A blob being deleted is still collectable (a crash mid-delete resumes).
    assert_eq!(s.collectable_blobs(0, 0, 10).await.unwrap().len(), 1);
    s.finish_delete(H1).await.unwrap();
    assert!(s.blob(H1).await.unwrap().is_none());
    assert!(s.refs(H1).await.unwrap().is_empty());
    assert_eq!(s.usage("alice").await.unwrap().bytes, 0);
    assert_eq!(s.usage("bob").await.unwrap().bytes, 0);
    // Held blobs are never collectable.
    store_ready(&*s, H2, 5, "alice", 1000).await;
    s.add_ref(H2, "profile", "alice", true, "alice", 1000)
        .await
        .unwrap();
    assert!(
        s.collectable_blobs(i64::MAX, 0, 10)
            .await
            .unwrap()
            .is_empty()
    );
}
