//! One contract for every blob backend, run against local files and against
//! the real S3-compatible test server (which must be running: see
//! `scripts/test-deps.sh`).

mod common;

use bytes::Bytes;
use common::*;
use futures_util::TryStreamExt;
use natter_media::BlobHash;
use natter_media::blob::{BlobStore, ObjectKey, PartialState, UploadId};
use std::time::{Duration, SystemTime};

macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        mod fs {
            $(
                #[tokio::test]
                async fn $name() {
                    let t = super::common::blob_store(super::common::Backend::Fs).await;
                    super::$name(&*t.store).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test]
                async fn $name() {
                    let t = super::common::blob_store(super::common::Backend::S3).await;
                    super::$name(&*t.store).await;
                }
            )*
        }
    };
}

contract!(
    one_shot_write_seal_promote_and_read,
    resumable_appends_across_part_boundaries,
    an_aborted_append_keeps_nothing,
    discard_removes_every_trace,
    small_objects_ranges_and_missing_keys,
    staging_listing_by_age,
    empty_objects,
);

async fn read(
    store: &dyn BlobStore,
    key: &ObjectKey,
    range: Option<std::ops::Range<u64>>,
) -> Option<(u64, Vec<u8>)> {
    let r = store.get(key, range).await.unwrap()?;
    let size = r.size;
    let chunks: Vec<Bytes> = r.body.try_collect().await.unwrap();
    Some((size, chunks.concat()))
}

/// Writes `data` in chunks of `chunk` bytes through one appender.
async fn append(
    store: &dyn BlobStore,
    id: &UploadId,
    state: &PartialState,
    data: &[u8],
    chunk: usize,
    seal: bool,
) -> PartialState {
    let mut a = store.append(id, state).await.unwrap();
    for c in data.chunks(chunk.max(1)) {
        a.write(Bytes::copy_from_slice(c)).await.unwrap();
    }
    a.finish(seal).await.unwrap()
}

async fn one_shot_write_seal_promote_and_read(store: &dyn BlobStore) {
    let data = noise(3 * MIB + 12345, 1);
    let id = UploadId::random();
    let s0 = store.begin(&id).await.unwrap();
    assert_eq!(s0.len, 0);
    let s1 = append(store, &id, &s0, &data, 64 * 1024, true).await;
    assert_eq!((s1.len, s1.sealed), (data.len() as u64, true));
    let staged = read(store, &ObjectKey::Staging(id.clone()), None)
        .await
        .unwrap();
    assert_eq!(staged.1, data, "the sealed staging object is readable");
    let hash = BlobHash::of(&data);
    store.promote(&id, &hash).await.unwrap();
    assert!(
        read(store, &ObjectKey::Staging(id.clone()), None)
            .await
            .is_none(),
        "promote moves, not copies"
    );
    let (size, got) = read(store, &ObjectKey::Blob(hash), None).await.unwrap();
    assert_eq!((size, got == data), (data.len() as u64, true));
    assert_eq!(
        store.size(&ObjectKey::Blob(hash)).await.unwrap(),
        Some(data.len() as u64)
    );
    // Ranges, including across internal chunk boundaries.
    for r in [
        0..1u64,
        10..20,
        524_280..524_300,
        (data.len() as u64 - 7)..data.len() as u64,
    ] {
        let (size, got) = read(store, &ObjectKey::Blob(hash), Some(r.clone()))
            .await
            .unwrap();
        assert_eq!(size, data.len() as u64);
        assert_eq!(got, &data[r.start as usize..r.end as usize], "{r:?}");
    }
    store.delete(&ObjectKey::Blob(hash)).await.unwrap();
    store.delete(&ObjectKey::Blob(hash)).await.unwrap();
    assert!(read(store, &ObjectKey::Blob(hash), None).await.is_none());
}

async fn resumable_appends_across_part_boundaries(store: &dyn BlobStore) {
    // 5 MiB parts on S3: pieces shorter and longer than a part, ending mid-part,
    // exactly on a part boundary, and a final short piece.
    let data = noise(13 * MIB + 777, 2);
    let cuts = [0, 3 * MIB, 5 * MIB, 11 * MIB + 5, 13 * MIB, data.len()];
    let id = UploadId::random();
    let mut state = store.begin(&id).await.unwrap();
    for w in cuts.windows(2) {
        let last = w[1] == data.len();
        // A fresh appender per piece, from the saved state, as separate requests do.
        let saved = serde_json::to_string(&state).unwrap();
        let restored: PartialState = serde_json::from_str(&saved).unwrap();
        state = append(store, &id, &restored, &data[w[0]..w[1]], 100_000, last).await;
        assert_eq!(state.len, w[1] as u64);
    }
    let hash = BlobHash::of(&data);
    store.promote(&id, &hash).await.unwrap();
    let (_, got) = read(store, &ObjectKey::Blob(hash), None).await.unwrap();
    assert!(got == data, "resumed object differs from the original");
    assert!(
        store
            .list_staging(SystemTime::now() + Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty(),
        "no tails left behind"
    );
}

async fn an_aborted_append_keeps_nothing(store: &dyn BlobStore) {
    let data = noise(7 * MIB, 3);
    let id = UploadId::random();
    let s0 = store.begin(&id).await.unwrap();
    let s1 = append(store, &id, &s0, &data[..2 * MIB], 300_000, false).await;
    // A PATCH whose checksum failed: written, then given up.
    let mut a = store.append(&id, &s1).await.unwrap();
    a.write(Bytes::from(noise(6 * MIB, 99))).await.unwrap();
    a.abort().await;
    // Resume from the last good state with the right bytes.
    let s2 = append(store, &id, &s1, &data[2 * MIB..], 300_000, true).await;
    assert_eq!(s2.len, data.len() as u64);
    let (_, got) = read(store, &ObjectKey::Staging(id.clone()), None)
        .await
        .unwrap();
    assert!(
        got == data,
        "bytes of the aborted append leaked into the object"
    );
    store.discard(&id, Some(&s2)).await.unwrap();
}

async fn discard_removes_every_trace(store: &dyn BlobStore) {
    let id = UploadId::random();
    let s0 = store.begin(&id).await.unwrap();
    // Leaves an open multipart upload and a tail on S3.
    let s1 = append(store, &id, &s0, &noise(6 * MIB, 4), 1 << 20, false).await;
    store.discard(&id, Some(&s1)).await.unwrap();
    store.discard(&id, Some(&s1)).await.unwrap();
    assert!(
        read(store, &ObjectKey::Staging(id.clone()), None)
            .await
            .is_none()
    );
    assert!(
        store
            .list_staging(SystemTime::now() + Duration::from_secs(60))
            .await
            .unwrap()
            .is_empty()
    );
    // A discarded upload cannot be resumed.
    let resumed = async {
        let mut a = store.append(&id, &s1).await?;
        a.write(Bytes::from_static(b"more")).await?;
        a.finish(true).await
    }
    .await;
    assert!(
        resumed.is_err(),
        "appending to a discarded upload must fail"
    );
    store.discard(&id, None).await.unwrap();
}

async fn small_objects_ranges_and_missing_keys(store: &dyn BlobStore) {
    let h = BlobHash::of(b"thumb-owner");
    let key = ObjectKey::Thumb(h);
    assert!(read(store, &key, None).await.is_none());
    assert_eq!(store.size(&key).await.unwrap(), None);
    store
        .put(&key, Bytes::from_static(b"first version"))
        .await
        .unwrap();
    store
        .put(&key, Bytes::from_static(b"thumbnail bytes"))
        .await
        .unwrap();
    assert_eq!(read(store, &key, None).await.unwrap().1, b"thumbnail bytes");
    assert_eq!(read(store, &key, Some(4..9)).await.unwrap().1, b"bnail");
    assert_eq!(
        store.read_all(&key, 100).await.unwrap().unwrap(),
        Bytes::from_static(b"thumbnail bytes")
    );
    assert!(
        store.read_all(&key, 3).await.is_err(),
        "read_all refuses objects over its limit"
    );
    store.delete(&key).await.unwrap();
    assert!(read(store, &ObjectKey::Blob(h), Some(0..1)).await.is_none());
    store.delete(&ObjectKey::Blob(h)).await.unwrap();
}

async fn staging_listing_by_age(store: &dyn BlobStore) {
    let id = UploadId::random();
    let s0 = store.begin(&id).await.unwrap();
    append(store, &id, &s0, b"partial", 3, false).await;
    let past = SystemTime::now() - Duration::from_secs(3600);
    let future = SystemTime::now() + Duration::from_secs(3600);
    assert!(
        !store.list_staging(past).await.unwrap().contains(&id),
        "new objects are not old"
    );
    assert!(store.list_staging(future).await.unwrap().contains(&id));
    store.discard(&id, None).await.unwrap();
}

async fn empty_objects(store: &dyn BlobStore) {
    let id = UploadId::random();
    let s0 = store.begin(&id).await.unwrap();
    let s1 = append(store, &id, &s0, b"", 1, true).await;
    assert_eq!((s1.len, s1.sealed), (0, true));
    let h = BlobHash::of(b"");
    store.promote(&id, &h).await.unwrap();
    assert_eq!(
        read(store, &ObjectKey::Blob(h), None).await.unwrap(),
        (0, vec![])
    );
    assert_eq!(
        read(store, &ObjectKey::Blob(h), Some(0..0))
            .await
            .unwrap()
            .1,
        Vec::<u8>::new()
    );
    store.delete(&ObjectKey::Blob(h)).await.unwrap();
}
