//! Where objects' bytes live: the file system under the data dir (`store.rs`, the default) or an
//! S3-compatible store (`s3.rs`, `[storage] backend = "s3"`). One interface for the routes: a
//! blob named by its row's version is created (streamed, then committed), opened for ranged
//! reads, copied, removed, listed for the sweeper.
//!
//! Invariants: both backends make a blob visible only whole and durable (a rename after
//! `fdatasync`; a completed S3 upload); a writer dropped before its commit leaves nothing (the
//! temporary file is removed; the multipart upload is aborted). The local [`FileStore`] exists in
//! both modes: resumable uploads keep their parts there until they are complete.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use futures_core::Stream;

use crate::s3::{S3Blob, S3Store, S3Stream, S3Writer};
use crate::store::{self, BlobWriter, FileStore, Stored};

/// The object store in use.
#[derive(Debug, Clone)]
pub enum Backend {
    File(FileStore),
    S3(S3Store),
}

/// A blob being written.
pub enum Writer {
    File(BlobWriter),
    S3(S3Writer),
}

/// A blob opened for reading.
pub enum Blob {
    File(store::Blob),
    S3(S3Blob),
}

/// A range of a blob being read.
pub enum BlobStream {
    File(store::BlobStream),
    S3(S3Stream),
}

impl Backend {
    /// Starts writing the blob of `version`.
    pub async fn create(&self, version: &str) -> io::Result<Writer> {
        match self {
            Backend::File(store) => Ok(Writer::File(store.create().await?)),
            Backend::S3(s3) => Ok(Writer::S3(s3.create(version).await?)),
        }
    }

    /// Opens `version`'s blob; `len` is its size when the row knows it (S3 then needs no `HEAD`).
    pub async fn open_blob(&self, version: &str, len: Option<u64>) -> io::Result<Blob> {
        match (self, len) {
            (Backend::File(store), len) => Ok(Blob::File(store.open_blob(version, len).await?)),
            (Backend::S3(s3), Some(len)) => Ok(Blob::S3(s3.blob(version, len)?)),
            (Backend::S3(s3), None) => Ok(Blob::S3(s3.open_blob(version).await?)),
        }
    }

    /// Removes `version`'s blob; one already gone is not an error.
    pub async fn remove(&self, version: &str) -> io::Result<()> {
        match self {
            Backend::File(store) => store.remove(version).await,
            Backend::S3(s3) => s3.remove(version).await,
        }
    }

    /// Makes `to` a copy of `from` (a hard link; a server-side copy).
    pub async fn link(&self, from: &str, to: &str) -> io::Result<()> {
        match self {
            Backend::File(store) => store.link(from, to),
            Backend::S3(s3) => s3.link(from, to).await,
        }
    }

    /// Makes the complete, durable local file `data` the blob of `version` (a finished resumable
    /// upload): a hard link on the file system; streamed up to S3 otherwise.
    pub async fn adopt(&self, local: &FileStore, data: &Path, version: &str) -> io::Result<()> {
        match self {
            Backend::File(store) => store.adopt(data, version).await,
            Backend::S3(s3) => {
                let file = monoio::fs::File::open(data).await?;
                let len = file.metadata().await?.len();
                let blob = store::Blob::from_file(file, len);
                let mut writer = s3.create(version).await?;
                let mut chunks = blob.stream(0, len);
                while let Some(chunk) = std::future::poll_fn(|cx| Pin::new(&mut chunks).poll_next(cx)).await {
                    writer.write(chunk?).await?;
                }
                writer.commit().await?;
                debug_assert!(local.root().exists());
                Ok(())
            }
        }
    }

    /// Versions of blobs unchanged since `older_than`, at most `max` (the sweeper's candidates);
    /// the file system's are listed by the sweeper itself on the blocking pool.
    pub async fn s3_versions(&self, older_than: SystemTime, max: usize) -> io::Result<Vec<String>> {
        match self {
            Backend::File(_) => Ok(Vec::new()),
            Backend::S3(s3) => s3.list_versions(older_than, max).await,
        }
    }
}

impl Writer {
    pub fn written(&self) -> u64 {
        match self {
            Writer::File(w) => w.written(),
            Writer::S3(w) => w.written(),
        }
    }

    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        match self {
            Writer::File(w) => w.write(chunk).await,
            Writer::S3(w) => w.write(chunk).await,
        }
    }

    /// Makes the blob durable and visible under `version` (the version it was created for).
    pub async fn commit(self, backend: &Backend, version: &str) -> io::Result<Stored> {
        match (self, backend) {
            (Writer::File(w), Backend::File(store)) => w.commit(store, version).await,
            (Writer::S3(w), Backend::S3(_)) => w.commit().await,
            _ => Err(io::Error::other("a writer committed to another backend")),
        }
    }
}

impl Blob {
    pub fn len(&self) -> u64 {
        match self {
            Blob::File(b) => b.len(),
            Blob::S3(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes `start..end` (clamped to the blob).
    pub fn stream(&self, start: u64, end: u64) -> BlobStream {
        match self {
            Blob::File(b) => BlobStream::File(b.stream(start, end)),
            Blob::S3(b) => BlobStream::S3(b.stream(start, end)),
        }
    }
}

impl Stream for BlobStream {
    type Item = io::Result<Bytes>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        match self.get_mut() {
            BlobStream::File(s) => Pin::new(s).poll_next(cx),
            BlobStream::S3(s) => Pin::new(s).poll_next(cx),
        }
    }
}
