//! Storage's counters on one shard, rendered as `/metrics` series with a `shard` label: bytes in
//! and out, uploads in progress and done, downloads, transform cache hits. (Transform times go to
//! the shard's duration histograms: `madbase_operation_duration_seconds{operation="storage_transform"}`.)
//!
//! Invariants: written only by their shard (`Cell`s, no atomics on the request path); an
//! upload is counted in progress exactly while its [`UploadGuard`] lives.

use std::cell::Cell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_core::Stream;
use madbase_core::metrics::ServiceSeries;

/// One shard's Storage counters.
#[derive(Debug, Default)]
pub struct Counters {
    pub bytes_in: Cell<u64>,
    pub bytes_out: Cell<u64>,
    pub uploads_in_progress: Cell<u64>,
    pub uploads: Cell<u64>,
    pub downloads: Cell<u64>,
    pub transform_cache_hits: Cell<u64>,
}

pub fn add(cell: &Cell<u64>, n: u64) {
    cell.set(cell.get().wrapping_add(n));
}

impl Counters {
    /// The counters as `/metrics` series.
    pub fn series(&self) -> Vec<ServiceSeries> {
        let s = |name, kind, help, cell: &Cell<u64>| ServiceSeries { name, kind, help, value: cell.get() };
        vec![
            s("madbase_storage_bytes_in_total", "counter", "Object bytes received by uploads.", &self.bytes_in),
            s("madbase_storage_bytes_out_total", "counter", "Object bytes sent by downloads.", &self.bytes_out),
            s(
                "madbase_storage_uploads_in_progress",
                "gauge",
                "Uploads streaming to the object store now.",
                &self.uploads_in_progress,
            ),
            s("madbase_storage_uploads_total", "counter", "Uploads stored and committed.", &self.uploads),
            s(
                "madbase_storage_downloads_total",
                "counter",
                "Downloads answered with an object's bytes.",
                &self.downloads,
            ),
            s(
                "madbase_storage_transform_cache_hits_total",
                "counter",
                "Transformed images answered from the cache.",
                &self.transform_cache_hits,
            ),
        ]
    }

    /// Counts an upload in progress until the guard is dropped.
    pub fn upload_started(self: &Rc<Self>) -> UploadGuard {
        add(&self.uploads_in_progress, 1);
        UploadGuard { counters: self.clone() }
    }
}

/// An upload in progress (see [`Counters::upload_started`]).
pub struct UploadGuard {
    counters: Rc<Counters>,
}

impl Drop for UploadGuard {
    fn drop(&mut self) {
        let gauge = &self.counters.uploads_in_progress;
        debug_assert!(gauge.get() > 0);
        gauge.set(gauge.get().saturating_sub(1));
    }
}

/// A download body that counts the bytes it yields.
pub struct Counted<S> {
    inner: S,
    counters: Rc<Counters>,
}

impl<S> Counted<S> {
    pub fn new(inner: S, counters: Rc<Counters>) -> Counted<S> {
        Counted { inner, counters }
    }
}

impl<S: Stream<Item = std::io::Result<Bytes>> + Unpin> Stream for Counted<S> {
    type Item = std::io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        if let Poll::Ready(Some(Ok(chunk))) = &polled {
            add(&self.counters.bytes_out, chunk.len() as u64);
        }
        polled
    }
}
