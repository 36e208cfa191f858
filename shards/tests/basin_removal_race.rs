//! The window of decision 0001: a stream created on its owner in the instant its basin's
//! removal finishes on the basin's owner. Both decide in a serializable transaction over
//! the keys they read (the basin's `01` key; the basin's `02` range), so whichever commits
//! second fails. The two interleavings are run here step by step, on the real keys.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use slatedb::object_store::memory::InMemory;
use slatedb::WriteBatch;
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::storage::{keys, Storage};
use sluice_shards::EngineOptions;

fn names() -> (BasinName, StreamName) {
    (
        "racing-basin".parse().unwrap(),
        "late-stream".parse().unwrap(),
    )
}

async fn setup(storage: &Storage) {
    let (basin, _) = names();
    let mut batch = WriteBatch::new();
    batch.put(keys::basin_meta(&basin), b"{}");
    batch.put(keys::basin_deletion(&basin), b"");
    storage.write(batch).await.unwrap();
}

fn streams_range(basin: &BasinName) -> std::ops::Range<Bytes> {
    let namespace = keys::streams_namespace(basin);
    namespace.clone()..keys::namespace_end(&namespace)
}

#[test]
fn a_stream_created_after_the_emptiness_check_keeps_its_basin() {
    common::with_storage(
        Arc::new(InMemory::new()),
        EngineOptions::default(),
        |_, storage| async move {
            setup(&storage).await;
            let (basin, stream) = names();
            // The removal checks the basin is empty...
            let removal = storage.serializable().unwrap();
            assert!(removal.is_empty(streams_range(&basin)).await.unwrap());
            // ...then the stream's owner reads the basin, writes the stream, and commits.
            let create = storage.serializable().unwrap();
            assert!(create
                .get(keys::basin_meta(&basin))
                .await
                .unwrap()
                .is_some());
            create
                .put(
                    keys::stream_meta(&basin, &stream),
                    Bytes::from_static(b"{}"),
                )
                .unwrap();
            assert!(create.commit().await.unwrap(), "the creation commits first");
            // The removal must not go through now.
            removal.delete(keys::basin_meta(&basin)).unwrap();
            removal.delete(keys::basin_deletion(&basin)).unwrap();
            assert!(
                !removal.commit().await.unwrap(),
                "the removal saw an empty basin that is not"
            );
            assert!(storage
                .get(keys::basin_meta(&basin))
                .await
                .unwrap()
                .is_some());
            assert!(storage
                .get(keys::stream_meta(&basin, &stream))
                .await
                .unwrap()
                .is_some());
        },
    );
}

#[test]
fn a_stream_created_against_a_removed_basin_is_refused() {
    common::with_storage(
        Arc::new(InMemory::new()),
        EngineOptions::default(),
        |_, storage| async move {
            setup(&storage).await;
            let (basin, stream) = names();
            // The stream's owner reads the basin as it still is...
            let create = storage.serializable().unwrap();
            assert!(create
                .get(keys::basin_meta(&basin))
                .await
                .unwrap()
                .is_some());
            // ...the removal finds it empty and commits...
            let removal = storage.serializable().unwrap();
            assert!(removal.is_empty(streams_range(&basin)).await.unwrap());
            removal.delete(keys::basin_meta(&basin)).unwrap();
            removal.delete(keys::basin_deletion(&basin)).unwrap();
            assert!(removal.commit().await.unwrap(), "the removal commits first");
            // ...so the stream must not be written behind the removed basin.
            create
                .put(
                    keys::stream_meta(&basin, &stream),
                    Bytes::from_static(b"{}"),
                )
                .unwrap();
            assert!(
                !create.commit().await.unwrap(),
                "a stream outlived its basin"
            );
            assert!(storage
                .get(keys::stream_meta(&basin, &stream))
                .await
                .unwrap()
                .is_none());
            assert!(storage
                .get(keys::basin_meta(&basin))
                .await
                .unwrap()
                .is_none());
        },
    );
}
