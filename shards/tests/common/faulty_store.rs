//! An object store that misbehaves on demand: the faults the engine tests inject between
//! the engine and an in-memory store.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use slatedb::object_store::path::Path;
use slatedb::object_store::{
    self, CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload,
    ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// Where segment objects live under the engine's default database path.
pub const SEGMENTS_ROOT: &str = "sluice-segments";

/// What the store does wrong, switched by the test while appends are in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Fault {
    None = 0,
    /// Segment PUTs fail before writing anything.
    SegmentPutFails,
    /// Segment PUTs write the object, then report failure.
    SegmentPutLies,
    /// SlateDB's WAL uploads (which carry every index write) fail.
    IndexWriteFails,
    /// Ranged GETs of segments fail.
    GetFails,
    /// Ranged GETs of segments return one byte short.
    GetTruncated,
    /// Ranged GETs of segments return one byte flipped.
    GetCorrupt,
}

#[derive(Debug)]
pub struct FaultyStore {
    pub inner: Arc<dyn ObjectStore>,
    pub fault: Arc<AtomicU8>,
    /// Objects written by PUTs that reported failure.
    pub lied_about: Arc<Mutex<Vec<Path>>>,
    /// While set, WAL uploads (index writes) wait.
    pub hold_wal: Arc<AtomicBool>,
    /// While set, segment and log PUTs wait.
    pub hold_segment_puts: Arc<AtomicBool>,
    /// The segment PUT to fail, counting from 1 in the order they reach the store (0:
    /// none), whatever `fault` says.
    pub fail_segment_put: Arc<AtomicUsize>,
    /// Segment PUTs answered so far, failed ones included.
    pub segment_puts: Arc<AtomicUsize>,
    /// Segment PUTs that have reached the store so far.
    segment_puts_started: AtomicUsize,
    /// While set, listings of every segment object fail (start-up's listing of the log
    /// does not).
    pub fail_list: Arc<AtomicBool>,
}

impl FaultyStore {
    /// A store over `inner` that misbehaves as `fault` says.
    pub fn new(inner: Arc<dyn ObjectStore>, fault: Arc<AtomicU8>) -> FaultyStore {
        FaultyStore {
            inner,
            fault,
            lied_about: Arc::default(),
            hold_wal: Arc::default(),
            hold_segment_puts: Arc::default(),
            fail_segment_put: Arc::default(),
            segment_puts: Arc::default(),
            segment_puts_started: AtomicUsize::new(0),
            fail_list: Arc::default(),
        }
    }

    fn fault(&self) -> u8 {
        self.fault.load(Ordering::SeqCst)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

fn injected() -> object_store::Error {
    // An error neither SlateDB nor the store client retries, so it reaches the engine.
    object_store::Error::NotImplemented {
        operation: "injected fault".to_owned(),
        implementer: "FaultyStore".to_owned(),
    }
}

fn is_segment(location: &Path) -> bool {
    location.as_ref().starts_with(SEGMENTS_ROOT)
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let fault = self.fault();
        if is_segment(location) {
            let n = self.segment_puts_started.fetch_add(1, Ordering::SeqCst) + 1;
            while self.hold_segment_puts.load(Ordering::SeqCst) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
            let result = if fault == Fault::SegmentPutFails as u8
                || n == self.fail_segment_put.load(Ordering::SeqCst)
            {
                Err(injected())
            } else if fault == Fault::SegmentPutLies as u8 {
                self.inner.put_opts(location, payload, opts).await?;
                self.lied_about.lock().unwrap().push(location.clone());
                Err(injected())
            } else {
                self.inner.put_opts(location, payload, opts).await
            };
            self.segment_puts.fetch_add(1, Ordering::SeqCst);
            return result;
        }
        while location.as_ref().contains("/wal/") && self.hold_wal.load(Ordering::SeqCst) {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        if location.as_ref().contains("/wal/") && fault == Fault::IndexWriteFails as u8 {
            return Err(injected());
        }
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let fault = self.fault();
        if !is_segment(location) || options.range.is_none() {
            return self.inner.get_opts(location, options).await;
        }
        if fault == Fault::GetFails as u8 {
            return Err(injected());
        }
        let result = self.inner.get_opts(location, options).await?;
        if fault != Fault::GetTruncated as u8 && fault != Fault::GetCorrupt as u8 {
            return Ok(result);
        }
        let (meta, range, attributes, extensions) = (
            result.meta.clone(),
            result.range.clone(),
            result.attributes.clone(),
            result.extensions.clone(),
        );
        let mut bytes = result.bytes().await?.to_vec();
        if fault == Fault::GetTruncated as u8 {
            bytes.pop();
        } else if let Some(b) = bytes.last_mut() {
            *b ^= 0x01;
        }
        let body = futures::stream::once(async move { Ok(Bytes::from(bytes)) }).boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(body),
            meta,
            range,
            attributes,
            extensions,
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if prefix.is_some_and(|p| p.as_ref() == SEGMENTS_ROOT)
            && self.fail_list.load(Ordering::SeqCst)
        {
            return futures::stream::once(async { Err(injected()) }).boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await
    }
}
