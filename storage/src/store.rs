//! The object store of the file-system backend: objects' bytes under `<data_dir>/storage`, read
//! and written with the shard's own io_uring (no thread hop per chunk).
//!
//! Layout: `objects/<2 hex>/<version>` holds the bytes of one object version; `tmp/<random>` holds
//! a write in progress. A blob is named by the version uuid of its row in `storage.objects`, never
//! by the object's key, so no key can reach outside the root, a move is a metadata update, and a
//! copy is a hard link (blobs are immutable).
//!
//! Invariants: a blob exists under `objects/` only complete and durable — it is written in
//! `tmp/`, `fdatasync`ed, renamed into place and its directory synced — so a row that names it
//! never sees a partial object. A write that is abandoned (error, client gone, future dropped)
//! removes its temporary file. A blob whose row never committed (a crash between the rename and
//! the commit) is an orphan the sweeper removes (see `sweep.rs`). Memory per write is one staging
//! buffer of [`STAGING_BYTES`]; per download, [`READS_IN_FLIGHT`] chunks of [`READ_CHUNK_BYTES`].

use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use futures_core::Stream;
use md5::{Digest, Md5};
use monoio::fs::{File, OpenOptions};

/// Bytes gathered before one write to disk: large writes, few system calls.
pub const STAGING_BYTES: usize = 1024 * 1024;
/// Bytes read from disk per chunk of a download.
pub const READ_CHUNK_BYTES: usize = 512 * 1024;

/// The file-system object store of one node (shared by its shards: the paths are the state).
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
}

/// What a completed write stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub size: u64,
    /// `"<md5 hex>"`, as Supabase Storage's file backend sets it.
    pub etag: String,
}

impl FileStore {
    /// The store under `root`, its directories (the 256 fan-out directories too) created (at start-up, before the shards serve).
    pub fn open(root: &Path) -> io::Result<FileStore> {
        for fan in 0..=255u8 {
            std::fs::create_dir_all(root.join("objects").join(hex(&[fan])))?;
        }
        std::fs::create_dir_all(root.join("tmp"))?;
        Ok(FileStore { root: root.to_path_buf() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a version's blob.
    pub fn blob_path(&self, version: &str) -> PathBuf {
        assert!(is_version(version), "blob versions are generated uuids: {version:?}");
        self.root.join("objects").join(&version[..2]).join(version)
    }

    /// Starts writing a new blob.
    pub async fn create(&self) -> io::Result<BlobWriter> {
        let tmp = self.root.join("tmp").join(new_version());
        let file = OpenOptions::new().write(true).create_new(true).open(&tmp).await?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            written: 0,
            on_disk: 0,
            staged: BytesMut::with_capacity(STAGING_BYTES),
            md5: Md5::new(),
        })
    }

    /// Opens a version's blob for reading; `NotFound` when there is none. `len` is its size when
    /// its row records it (the blob is immutable and was written to that size), saving a `statx`.
    pub async fn open_blob(&self, version: &str, len: Option<u64>) -> io::Result<Blob> {
        let file = File::open(self.blob_path(version)).await?;
        let len = match len {
            Some(len) => len,
            None => file.metadata().await?.len(),
        };
        Ok(Blob { file: Rc::new(file), len })
    }

    /// Removes a version's blob; one already gone is not an error.
    pub async fn remove(&self, version: &str) -> io::Result<()> {
        match monoio::fs::remove_file(self.blob_path(version)).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Makes `to` a second name of `from`'s bytes (a copy: blobs never change). A metadata
    /// operation of the file system, done in place.
    pub fn link(&self, from: &str, to: &str) -> io::Result<()> {
        std::fs::hard_link(self.blob_path(from), self.blob_path(to))
    }
}

/// A blob being written. Dropped before [`BlobWriter::commit`], it removes its temporary file.
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    /// Bytes accepted; `on_disk` of them are written, the rest are staged.
    written: u64,
    on_disk: u64,
    staged: BytesMut,
    md5: Md5,
}

impl BlobWriter {
    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Appends `chunk`. Large chunks go to disk as they are; small ones are gathered first.
    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        self.md5.update(&chunk);
        self.written += chunk.len() as u64;
        if self.staged.is_empty() && chunk.len() >= STAGING_BYTES / 2 {
            return self.write_at_end(chunk).await;
        }
        self.staged.extend_from_slice(&chunk);
        if self.staged.len() >= STAGING_BYTES / 2 {
            self.flush().await?;
        }
        debug_assert!(self.staged.len() < STAGING_BYTES);
        Ok(())
    }

    async fn flush(&mut self) -> io::Result<()> {
        if self.staged.is_empty() {
            return Ok(());
        }
        let staged = std::mem::replace(&mut self.staged, BytesMut::with_capacity(STAGING_BYTES));
        self.write_at_end(staged.freeze()).await
    }

    /// Writes `bytes` at the end of what is on disk.
    async fn write_at_end(&mut self, bytes: Bytes) -> io::Result<()> {
        let file = self.file.as_ref().ok_or_else(|| io::Error::other("blob writer already finished"))?;
        let len = bytes.len() as u64;
        let (result, _) = file.write_all_at(bytes, self.on_disk).await;
        result?;
        self.on_disk += len;
        debug_assert!(self.on_disk <= self.written);
        Ok(())
    }

    /// Makes the blob durable under `version`'s name: flush, `fdatasync`, rename into place,
    /// sync the directory.
    pub async fn commit(mut self, store: &FileStore, version: &str) -> io::Result<Stored> {
        self.flush().await?;
        let file = self.file.take().ok_or_else(|| io::Error::other("blob writer already finished"))?;
        debug_assert_eq!(self.on_disk, self.written);
        file.sync_data().await?;
        file.close().await?;
        let target = store.blob_path(version);
        monoio::fs::rename(&self.tmp, &target).await?;
        let dir = File::open(target.parent().unwrap_or(store.root())).await?;
        dir.sync_all().await?;
        dir.close().await?;
        // Renamed: nothing left for Drop to remove.
        self.tmp = PathBuf::new();
        let digest = std::mem::take(&mut self.md5).finalize();
        Ok(Stored { size: self.written, etag: format!("\"{}\"", hex(&digest)) })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.tmp.as_os_str().is_empty() {
            // Only on the failure path: one unlink, not worth a round through the ring.
            if let Err(error) = std::fs::remove_file(&self.tmp) {
                tracing::warn!(path = %self.tmp.display(), %error, "cannot remove an abandoned upload");
            }
        }
    }
}

/// A blob opened for reading.
pub struct Blob {
    file: Rc<File>,
    len: u64,
}

impl Blob {
    /// An open file of `len` bytes, read as a blob.
    pub fn from_file(file: File, len: u64) -> Blob {
        Blob { file: Rc::new(file), len }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes `start..end` (clamped to the blob) as a stream of chunks.
    pub fn stream(&self, start: u64, end: u64) -> BlobStream {
        let end = end.min(self.len);
        let start = start.min(end);
        let advised = (end - start > READ_AHEAD_FROM).then_some(start);
        BlobStream { file: self.file.clone(), pos: start, issued: start, end, reading: Default::default(), advised }
    }
}

type ReadFuture = Pin<Box<dyn Future<Output = (io::Result<usize>, Vec<u8>)>>>;

/// Streams longer than this ask the kernel to read ahead of their reads ([`BlobStream::advise`]).
const READ_AHEAD_FROM: u64 = 4 * READ_CHUNK_BYTES as u64;
/// How far ahead of the reads in flight the kernel is asked to read.
const READ_AHEAD_BYTES: u64 = 8 * READ_CHUNK_BYTES as u64;

/// Reads in flight per download: one being handed out, one ahead, so the disk (or page cache)
/// read of the next chunk overlaps the socket write of this one.
const READS_IN_FLIGHT: usize = 2;

/// A range of a blob, read [`READ_CHUNK_BYTES`] at a time with [`READS_IN_FLIGHT`] reads issued.
pub struct BlobStream {
    file: Rc<File>,
    /// Bytes handed out end here.
    pos: u64,
    /// The next read starts here (`pos` plus what is in flight).
    issued: u64,
    end: u64,
    reading: std::collections::VecDeque<(usize, ReadFuture)>,
    /// For a large stream: the kernel was asked to read the blob up to here.
    advised: Option<u64>,
}

impl BlobStream {
    /// Keeps the kernel reading [`READ_AHEAD_BYTES`] past the reads in flight (into the page
    /// cache, not into this process's memory), renewed every half window: a blob read cold from
    /// the disk then streams at the disk's speed, not at two reads' latency each.
    fn advise(&mut self) {
        let Some(advised) = self.advised else { return };
        if advised >= self.end || self.issued + READ_AHEAD_BYTES / 2 < advised {
            return;
        }
        let to = (self.issued + READ_AHEAD_BYTES).min(self.end);
        let (Ok(offset), Ok(len)) = (libc::off_t::try_from(advised), libc::off_t::try_from(to - advised)) else {
            return;
        };
        // Queues the read-ahead and returns (done in place, as metadata calls are); a refusal
        // costs only speed. SAFETY: fadvise on a descriptor the stream keeps open; no memory.
        unsafe { libc::posix_fadvise(self.file.as_raw_fd(), offset, len, libc::POSIX_FADV_WILLNEED) };
        self.advised = Some(to);
    }

    /// Issues reads up to [`READS_IN_FLIGHT`]; each is polled once so it is submitted now.
    fn issue(&mut self, cx: &mut Context<'_>) {
        self.advise();
        while self.reading.len() < READS_IN_FLIGHT && self.issued < self.end {
            let file = self.file.clone();
            let at = self.issued;
            let want = (self.end - at).min(READ_CHUNK_BYTES as u64) as usize;
            let mut read: ReadFuture = Box::pin(async move { file.read_at(Vec::with_capacity(want), at).await });
            if let Poll::Ready(done) = read.as_mut().poll(cx) {
                read = Box::pin(std::future::ready(done));
            }
            self.reading.push_back((want, read));
            self.issued += want as u64;
        }
        debug_assert!(self.issued <= self.end && self.reading.len() <= READS_IN_FLIGHT);
    }
}

impl Stream for BlobStream {
    type Item = io::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<io::Result<Bytes>>> {
        let this = &mut *self;
        if this.pos >= this.end {
            return Poll::Ready(None);
        }
        this.issue(cx);
        let Some((want, front)) = this.reading.front_mut() else { return Poll::Ready(None) };
        let want = *want;
        let (result, mut buf) = std::task::ready!(front.as_mut().poll(cx));
        this.reading.pop_front();
        match result {
            Ok(0) => {
                // The blob shrank under us: never the case for an immutable blob.
                this.pos = this.end;
                Poll::Ready(Some(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "blob shorter than its length"))))
            }
            Ok(n) => {
                buf.truncate(n);
                this.pos += n as u64;
                if n < want {
                    // A short read: what is in flight starts past a gap; read again from here.
                    this.reading.clear();
                    this.issued = this.pos;
                }
                debug_assert!(this.pos <= this.end);
                Poll::Ready(Some(Ok(Bytes::from(buf))))
            }
            Err(e) => {
                this.pos = this.end;
                Poll::Ready(Some(Err(e)))
            }
        }
    }
}

/// A new version id: a random (v4) uuid.
pub fn new_version() -> String {
    madbase_core::ids::uuid_v4()
}

/// A version id as [`new_version`] writes them (lower-case 8-4-4-4-12 hex).
pub fn is_version(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_digit() || (b'a'..=b'f').contains(&b),
        })
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Resumable (TUS) uploads. Their partial bytes and state live under `uploads/<version>/` until
// they are complete (`tus/state.rs` owns what is inside); a complete upload's bytes become the
// version's blob by a second name, so they are never copied.

impl FileStore {
    /// The directory of the resumable uploads not yet expired.
    pub fn uploads_dir(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// The directory of one resumable upload, named by the version its object will have.
    pub fn upload_dir(&self, version: &str) -> PathBuf {
        assert!(is_version(version), "upload directories are named by generated versions: {version:?}");
        self.uploads_dir().join(version)
    }

    /// Makes `data` (complete and durable) the blob of `version` without copying it: a hard link
    /// under `objects/`, its directory synced. A blob already there (an earlier attempt to finish
    /// the same upload) is kept: versions are unique, so it is the same file.
    pub async fn adopt(&self, data: &Path, version: &str) -> io::Result<()> {
        let target = self.blob_path(version);
        // Metadata operations of the file system, done in place (as `link`).
        match std::fs::hard_link(data, &target) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // A name added and removed changes the inode's ctime, so the sweeper's grace for
                // a blob no row names yet counts from this attempt, not from the earlier one.
                let touch = self.root.join("tmp").join(new_version());
                std::fs::hard_link(data, &touch)?;
                std::fs::remove_file(&touch)?;
            }
            Err(e) => return Err(e),
        }
        let dir = File::open(target.parent().unwrap_or(self.root())).await?;
        dir.sync_all().await?;
        dir.close().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: Future>(f: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::FusionDriver>::new().enable_timer().build().expect("runtime").block_on(f)
    }

    async fn collect(mut stream: BlobStream) -> Vec<u8> {
        let mut out = Vec::new();
        while let Some(chunk) = std::future::poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
            out.extend_from_slice(&chunk.expect("read"));
        }
        out
    }

    #[test]
    fn blobs_round_trip_through_staging_and_read_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let bytes: Vec<u8> = (0..(READ_CHUNK_BYTES * 3 + 12_345)).map(|i| (i % 251) as u8).collect();
        block_on(async {
            let mut writer = store.create().await.unwrap();
            // Small chunks are staged, large ones written through, in any mix.
            let mut rest = &bytes[..];
            for size in [1, 100, 70_000, STAGING_BYTES, 3].iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (head, tail) = rest.split_at((*size).min(rest.len()));
                writer.write(Bytes::copy_from_slice(head)).await.unwrap();
                rest = tail;
            }
            let version = new_version();
            let stored = writer.commit(&store, &version).await.unwrap();
            assert_eq!(stored.size, bytes.len() as u64);
            let digest = Md5::digest(&bytes);
            assert_eq!(stored.etag, format!("\"{}\"", hex(&digest)));
            assert!(std::fs::read_dir(dir.path().join("tmp")).unwrap().next().is_none());

            let blob = store.open_blob(&version, None).await.unwrap();
            assert_eq!(blob.len(), bytes.len() as u64);
            assert_eq!(collect(blob.stream(0, blob.len())).await, bytes);
            let (a, b) = (READ_CHUNK_BYTES as u64 - 7, READ_CHUNK_BYTES as u64 * 2 + 9);
            assert_eq!(collect(blob.stream(a, b)).await, &bytes[a as usize..b as usize]);
            assert_eq!(collect(blob.stream(5, 5)).await, Vec::<u8>::new());
            assert_eq!(collect(blob.stream(0, u64::MAX)).await.len(), bytes.len(), "the end is clamped");

            store.remove(&version).await.unwrap();
            store.remove(&version).await.unwrap();
            assert_eq!(store.open_blob(&version, None).await.err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
        });
    }

    #[test]
    fn an_abandoned_write_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        block_on(async {
            let mut writer = store.create().await.unwrap();
            writer.write(Bytes::from_static(b"half an object")).await.unwrap();
            drop(writer);
        });
        assert!(std::fs::read_dir(dir.path().join("tmp")).unwrap().next().is_none());
    }
}
