//! The files of one resumable upload, under `<store root>/uploads/<version>/`:
//!
//! - `info.json`: what the creation decided ([`Info`]: the object, its length, type, cache
//!   control and user metadata, who may continue it, whether it replaces), replaced whole —
//!   written to `info.json.tmp`, `fdatasync`ed, renamed over, the directory synced — so it is
//!   always the old or the new state, never a torn one. It is rewritten once more when the
//!   object's row commits (`committed` set), and that is the only change.
//! - `data`: the bytes received so far. The upload's offset is this file's length; a `PATCH`
//!   answers only after `fdatasync`, so every offset a client was told survives a crash.
//! - `unverified-<offset>`: present while a request with `Upload-Checksum` appends from
//!   `<offset>` (created durably before its first byte is written, removed once the bytes are
//!   verified and durable, or truncated away). While it exists the offset is `<offset>`, so bytes
//!   not yet verified are never counted — not even after a crash mid-request: the next writer
//!   truncates them.
//!
//! The lock of an upload is `flock(LOCK_EX | LOCK_NB)` on its directory ([`Lock`]); see the
//! parent module for why. Invariants: `data` is written only by the holder of the lock, at its
//! end; `info.json` is never partially visible; an upload whose directory has no readable
//! `info.json` does not exist (a crash during creation leaves a directory expiry removes); the
//! directory name is a generated version, never client text.

use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use md5::{Digest, Md5};
use monoio::fs::{File, OpenOptions};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::store::{hex, is_version, FileStore, STAGING_BYTES};

const INFO: &str = "info.json";
const INFO_TMP: &str = "info.json.tmp";
const DATA: &str = "data";
/// The marker of a checksummed append in progress, followed by the offset it started at.
const UNVERIFIED: &str = "unverified-";
/// Largest `info.json` read back (it holds at most the 8 KiB metadata header and a key).
const MAX_INFO_BYTES: u64 = 64 * 1024;
/// Bytes read per step when hashing a finished upload.
const HASH_CHUNK_BYTES: usize = 1024 * 1024;
/// Upload directories looked at by one expiry round; the rest wait for the next.
const MAX_EXPIRY_CANDIDATES: usize = 100_000;

/// Who may continue an upload: the same credentials that created it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Access {
    /// A JWT's role and `sub` (a `PATCH` with another user's token finds nothing).
    Token { role: String, sub: Option<String> },
    /// A signed upload token for the object (`x-signature`), whoever holds it.
    Signed,
}

/// What the creation of an upload decided (`info.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    pub bucket: String,
    pub key: String,
    /// `Upload-Length`.
    pub length: u64,
    pub mime: String,
    pub cache_control: String,
    pub user_metadata: Option<Value>,
    /// `Upload-Metadata` as sent (a `HEAD` answers it).
    pub metadata_header: String,
    /// The owner of the object row (`owner_id`; `owner` when a uuid).
    pub owner: Option<String>,
    pub access: Access,
    /// Replaces an existing object (`x-upsert`, or the signed token's `upsert`).
    pub upsert: bool,
    /// The object's row committed: the upload is finished and `data` is gone.
    #[serde(default)]
    pub committed: bool,
}

/// One upload as read from disk.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The version the object will have; the directory's name.
    pub version: String,
    pub dir: PathBuf,
    pub info: Info,
    /// Bytes received: the length of `data` (the whole length once committed).
    pub offset: u64,
    /// When `info.json` or `data` last changed: expiry counts from here.
    pub touched: SystemTime,
}

impl Upload {
    pub fn data_path(&self) -> PathBuf {
        self.dir.join(DATA)
    }

    /// Every byte is here but the object's row is not committed yet.
    pub fn complete_uncommitted(&self) -> bool {
        !self.info.committed && self.offset == self.info.length
    }

    /// Untouched for `expiry`.
    pub fn expired(&self, expiry: Duration, now: SystemTime) -> bool {
        now.duration_since(self.touched).is_ok_and(|idle| idle > expiry)
    }
}

/// The exclusive lock of one upload, held while its bytes or state change; released when
/// dropped (the descriptor closes), also when the request's future is cancelled or the process
/// dies.
#[derive(Debug)]
pub struct Lock {
    _dir: std::fs::File,
}

impl Lock {
    /// Takes the lock of the upload in `dir` without waiting: `None` while another request (on
    /// any shard) holds it; `NotFound` when the upload is gone.
    pub fn try_acquire(dir: &Path) -> io::Result<Option<Lock>> {
        // Opening a directory and flock(2) with LOCK_NB are metadata calls that never wait on
        // the disk or on another holder: done in place, as the store's hard links are.
        let file = std::fs::File::open(dir)?;
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(Some(Lock { _dir: file }));
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(error)
        }
    }
}

/// Creates the upload `version` (its directory, empty `data`, `info.json`, all durable) and
/// returns it locked.
pub async fn create(store: &FileStore, version: &str, info: &Info) -> io::Result<(Upload, Lock)> {
    debug_assert!(is_version(version));
    let dir = store.upload_dir(version);
    // A mkdir (and of `uploads/` the first time): metadata, done in place.
    std::fs::create_dir_all(&dir)?;
    let lock = Lock::try_acquire(&dir)?.ok_or_else(|| io::Error::other("a new upload directory is locked"))?;
    let data = OpenOptions::new().write(true).create_new(true).open(dir.join(DATA)).await?;
    data.close().await?;
    write_info(&dir, info).await?;
    sync_dir(dir.parent().unwrap_or(store.root())).await?;
    let upload = Upload { version: version.to_owned(), dir, info: info.clone(), offset: 0, touched: SystemTime::now() };
    Ok((upload, lock))
}

/// The upload `version`; `None` when there is none (never created, terminated, expired and
/// removed, or a creation cut before its `info.json`).
pub async fn open(store: &FileStore, version: &str) -> io::Result<Option<Upload>> {
    let dir = store.upload_dir(version);
    let info_path = dir.join(INFO);
    let info_meta = match monoio::fs::metadata(&info_path).await {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if info_meta.len() > MAX_INFO_BYTES {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "info.json is larger than any state written"));
    }
    let info: Info = match monoio::fs::read(&info_path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut touched = info_meta.modified()?;
    let offset = if info.committed {
        info.length
    } else {
        match monoio::fs::metadata(dir.join(DATA)).await {
            Ok(meta) => {
                touched = touched.max(meta.modified()?);
                meta.len().min(unverified_from(&dir)?.unwrap_or(u64::MAX))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
    };
    Ok(Some(Upload { version: version.to_owned(), dir, info, offset, touched }))
}

/// The unverified-append markers of `dir` and the offsets they name (one at most, in practice).
fn unverified_markers(dir: &Path) -> io::Result<Vec<(PathBuf, u64)>> {
    // A listing of an upload's directory (two or three names): metadata, done in place.
    let mut markers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let offset = entry.file_name().to_str().and_then(|n| n.strip_prefix(UNVERIFIED)?.parse().ok());
        if let Some(offset) = offset {
            markers.push((entry.path(), offset));
        }
    }
    Ok(markers)
}

/// Where a checksummed append whose bytes are not verified started.
fn unverified_from(dir: &Path) -> io::Result<Option<u64>> {
    Ok(unverified_markers(dir)?.into_iter().map(|(_, offset)| offset).min())
}

/// Replaces `info.json` atomically and durably.
pub async fn write_info(dir: &Path, info: &Info) -> io::Result<()> {
    let json = serde_json::to_vec(info).map_err(io::Error::other)?;
    debug_assert!((json.len() as u64) < MAX_INFO_BYTES);
    let tmp = dir.join(INFO_TMP);
    let file = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).await?;
    let (written, _) = file.write_all_at(json, 0).await;
    written?;
    file.sync_data().await?;
    file.close().await?;
    monoio::fs::rename(&tmp, dir.join(INFO)).await?;
    sync_dir(dir).await
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    let file = File::open(dir).await?;
    file.sync_all().await?;
    file.close().await
}

/// Appends to an upload's `data` (the holder of its [`Lock`] only). Small chunks are gathered
/// into writes of [`STAGING_BYTES`] / 2; [`Appender::finish`] makes everything durable, or for a
/// checksummed append whose bytes are refused, removes them.
pub struct Appender {
    file: File,
    /// The offset this append started at.
    start: u64,
    on_disk: u64,
    staged: BytesMut,
    /// The marker of a checksummed append ([`UNVERIFIED`]).
    marker: Option<PathBuf>,
}

impl Appender {
    /// Opens `upload`'s data to append at its offset. Bytes past the offset (a checksummed
    /// append cut by a crash) are truncated first. `checked`: the bytes are verified before they
    /// count, so a marker is made durable before the first one is written.
    pub async fn open(upload: &Upload, checked: bool) -> io::Result<Appender> {
        debug_assert!(!upload.info.committed);
        let file = OpenOptions::new().write(true).open(upload.data_path()).await?;
        if file.metadata().await?.len() > upload.offset {
            truncate(&file, upload.offset)?;
            file.sync_data().await?;
        }
        for (stale, _) in unverified_markers(&upload.dir)? {
            std::fs::remove_file(stale)?;
        }
        let marker = if checked {
            let marker = upload.dir.join(format!("{UNVERIFIED}{}", upload.offset));
            OpenOptions::new().write(true).create(true).truncate(true).open(&marker).await?.close().await?;
            sync_dir(&upload.dir).await?;
            Some(marker)
        } else {
            None
        };
        Ok(Appender { file, start: upload.offset, on_disk: upload.offset, staged: BytesMut::new(), marker })
    }

    /// The offset once everything accepted is written.
    pub fn offset(&self) -> u64 {
        self.on_disk + self.staged.len() as u64
    }

    pub async fn write(&mut self, chunk: Bytes) -> io::Result<()> {
        if self.staged.is_empty() && chunk.len() >= STAGING_BYTES / 2 {
            return self.write_at_end(chunk).await;
        }
        self.staged.extend_from_slice(&chunk);
        if self.staged.len() >= STAGING_BYTES / 2 {
            let staged = std::mem::take(&mut self.staged).freeze();
            self.write_at_end(staged).await?;
        }
        debug_assert!(self.staged.len() < STAGING_BYTES);
        Ok(())
    }

    async fn write_at_end(&mut self, bytes: Bytes) -> io::Result<()> {
        let len = bytes.len() as u64;
        let (result, _) = self.file.write_all_at(bytes, self.on_disk).await;
        result?;
        self.on_disk += len;
        Ok(())
    }

    /// `accept`: writes what is staged and `fdatasync`s, then drops the marker — the returned
    /// offset is durable. Otherwise (a checksummed append refused) the bytes of this append are
    /// truncated away and the offset is where it started.
    pub async fn finish(mut self, accept: bool) -> io::Result<u64> {
        debug_assert!(accept || self.marker.is_some(), "only verified appends are refused");
        if accept {
            if !self.staged.is_empty() {
                let staged = std::mem::take(&mut self.staged).freeze();
                self.write_at_end(staged).await?;
            }
        } else {
            truncate(&self.file, self.start)?;
            self.on_disk = self.start;
        }
        self.file.sync_data().await?;
        self.file.close().await?;
        if let Some(marker) = &self.marker {
            // After the sync: a crash before this line truncates at the next append, which
            // costs the client a resend, never an unverified byte.
            monoio::fs::remove_file(marker).await?;
        }
        Ok(self.on_disk)
    }
}

/// Shortens `file` to `len` bytes (a metadata change: done in place, as the store's links are).
fn truncate(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(io::Error::other)?;
    // SAFETY: ftruncate on a descriptor `file` owns for the duration of the call.
    if unsafe { libc::ftruncate(file.as_raw_fd(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The ETag of a finished upload's bytes (`"<md5 hex>"`, as the object store's uploads have),
/// computed by reading them back. Blocking: run it on the blocking pool.
pub fn etag_blocking(data: &Path) -> io::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(data)?;
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; HASH_CHUNK_BYTES];
    loop {
        match file.read(&mut buf)? {
            0 => break,
            n => md5.update(&buf[..n]),
        }
    }
    Ok(format!("\"{}\"", hex(&md5.finalize())))
}

/// Removes an upload's directory. Blocking (a large `data` takes a while to unlink): run it on
/// the blocking pool, holding the upload's lock.
pub fn remove_blocking(dir: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Removes every upload under `uploads` untouched for `expiry` whose lock is free (one a
/// request holds is in use); returns how many. Blocking: run it on the blocking pool.
pub fn expire_blocking(uploads: &Path, expiry: Duration) -> io::Result<usize> {
    let entries = match std::fs::read_dir(uploads) {
        Ok(entries) => entries,
        // No upload was ever created.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let now = SystemTime::now();
    let mut removed = 0;
    for entry in entries.take(MAX_EXPIRY_CANDIDATES) {
        let dir = entry?.path();
        let named = dir.file_name().and_then(|n| n.to_str()).is_some_and(is_version);
        if !named || !dir.is_dir() {
            continue;
        }
        // The newest change of anything inside (the directory itself for a creation cut early).
        let touched = [dir.clone(), dir.join(INFO), dir.join(DATA)]
            .iter()
            .filter_map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
            .max()
            .unwrap_or(UNIX_EPOCH);
        if now.duration_since(touched).is_ok_and(|idle| idle > expiry) {
            match Lock::try_acquire(&dir) {
                Ok(Some(_lock)) => {
                    remove_blocking(&dir)?;
                    removed += 1;
                }
                // In use, or terminated meanwhile.
                Ok(None) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::new_version;

    fn info() -> Info {
        Info {
            bucket: "b".into(),
            key: "folder/a.bin".into(),
            length: 10,
            mime: "application/octet-stream".into(),
            cache_control: "no-cache".into(),
            user_metadata: Some(serde_json::json!({"k": "v"})),
            metadata_header: "bucketName Yg==".into(),
            owner: Some("user".into()),
            access: Access::Token { role: "authenticated".into(), sub: Some("user".into()) },
            upsert: false,
            committed: false,
        }
    }

    fn block_on<F: std::future::Future>(future: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().build().unwrap().block_on(future)
    }

    #[test]
    fn an_upload_is_created_appended_reopened_locked_and_expired() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let version = new_version();
        block_on(async {
            let (upload, lock) = create(&store, &version, &info()).await.unwrap();
            assert!(Lock::try_acquire(&upload.dir).unwrap().is_none(), "one holder at a time");
            let mut appender = Appender::open(&upload, false).await.unwrap();
            appender.write(Bytes::from_static(b"hello")).await.unwrap();
            assert_eq!(appender.offset(), 5);
            assert_eq!(appender.finish(true).await.unwrap(), 5);
            drop(lock);

            let reopened = open(&store, &version).await.unwrap().unwrap();
            assert_eq!((reopened.offset, &reopened.info), (5, &info()));
            assert!(!reopened.complete_uncommitted());
            let lock = Lock::try_acquire(&reopened.dir).unwrap().expect("released when dropped");
            let mut appender = Appender::open(&reopened, false).await.unwrap();
            appender.write(Bytes::from_static(b"world")).await.unwrap();
            appender.finish(true).await.unwrap();
            let full = open(&store, &version).await.unwrap().unwrap();
            assert!(full.complete_uncommitted());
            assert_eq!(std::fs::read(full.data_path()).unwrap(), b"helloworld");
            assert_eq!(etag_blocking(&full.data_path()).unwrap(), "\"fc5e038d38a57032085441e7fe7010b0\"");
            store.adopt(&full.data_path(), &version).await.unwrap();
            store.adopt(&full.data_path(), &version).await.expect("a second attempt keeps the blob");
            assert_eq!(std::fs::read(store.blob_path(&version)).unwrap(), b"helloworld");
            assert_eq!(std::fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);

            assert_eq!(expire_blocking(&store.uploads_dir(), Duration::ZERO).unwrap(), 0, "a locked upload stays");
            drop(lock);
            assert_eq!(expire_blocking(&store.uploads_dir(), Duration::from_secs(3600)).unwrap(), 0);
            assert_eq!(expire_blocking(&store.uploads_dir(), Duration::ZERO).unwrap(), 1);
            assert!(open(&store, &version).await.unwrap().is_none());
        });
    }

    #[test]
    fn checksummed_appends_count_only_once_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let version = new_version();
        block_on(async {
            let (upload, lock) = create(&store, &version, &info()).await.unwrap();
            let mut appender = Appender::open(&upload, true).await.unwrap();
            appender.write(Bytes::from_static(b"hel")).await.unwrap();
            appender.finish(true).await.unwrap();
            let upload = open(&store, &version).await.unwrap().unwrap();
            assert_eq!(upload.offset, 3, "verified bytes count");
            assert_eq!(unverified_from(&upload.dir).unwrap(), None, "the marker is gone");

            // Refused: the bytes are truncated away.
            let mut appender = Appender::open(&upload, true).await.unwrap();
            appender.write(Bytes::from_static(b"XXXX")).await.unwrap();
            assert_eq!(appender.finish(false).await.unwrap(), 3);
            assert_eq!(std::fs::read(upload.data_path()).unwrap(), b"hel");

            // A crash mid-append: written bytes and the marker are on disk. They do not count,
            // and the next append (checked or not) starts where the marker says.
            let mut appender = Appender::open(&upload, true).await.unwrap();
            appender.write(Bytes::from_static(b"YYYY")).await.unwrap();
            let staged = std::mem::take(&mut appender.staged).freeze();
            appender.write_at_end(staged).await.unwrap();
            drop(appender);
            let after_crash = open(&store, &version).await.unwrap().unwrap();
            assert_eq!(after_crash.offset, 3);
            assert_eq!(std::fs::metadata(after_crash.data_path()).unwrap().len(), 7);
            let mut appender = Appender::open(&after_crash, false).await.unwrap();
            appender.write(Bytes::from_static(b"lo")).await.unwrap();
            assert_eq!(appender.finish(true).await.unwrap(), 5);
            assert_eq!(std::fs::read(after_crash.data_path()).unwrap(), b"hello");
            assert_eq!(unverified_from(&after_crash.dir).unwrap(), None);
            drop(lock);
        });
    }

    #[test]
    fn committing_rewrites_the_state_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let version = new_version();
        block_on(async {
            let (upload, _lock) = create(&store, &version, &info()).await.unwrap();
            let committed = Info { committed: true, ..info() };
            write_info(&upload.dir, &committed).await.unwrap();
            std::fs::remove_file(upload.data_path()).unwrap();
            let reopened = open(&store, &version).await.unwrap().unwrap();
            assert_eq!((reopened.offset, reopened.info.committed), (10, true));
            assert!(!upload.dir.join(INFO_TMP).exists());
            assert!(open(&store, &new_version()).await.unwrap().is_none(), "unknown uploads are none");
        });
    }
}
