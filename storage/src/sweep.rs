//! The sweeper: removes what an interrupted write left in the object store. Runs on one shard
//! (an owner task), at start and every [`SWEEP_EVERY`].
//!
//! Two kinds of leftovers: temporary files of writes that never finished (a crash mid-upload),
//! and blobs (on the file system or in S3) no row names (a crash between a blob's durable rename and its row's commit, or a
//! removal that failed after its row was deleted). Invariants: only files whose inode changed
//! longer than [`GRACE`] ago are candidates (a write in flight renames or links its blob moments
//! before its commit, which changes the inode); a blob is removed only when PostgreSQL says no
//! row names its version; directory listing runs on the blocking pool, never on the shard.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use madbase_core::ShardCtx;
use madbase_pg::{Batch, Statement};

use crate::db::text;
use crate::store::is_version;
use crate::Shared;

/// How often the sweeper runs.
pub const SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// How long a file must be left unchanged before it may be an orphan.
pub const GRACE: Duration = Duration::from_secs(3600);
/// Versions asked about in one statement.
const BATCH: usize = 1000;
/// Candidates looked at in one sweep; the rest wait for the next.
const MAX_CANDIDATES: usize = 100_000;

/// What one sweep removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    pub temporary: usize,
    pub orphans: usize,
}

/// Sweeps until shutdown; expires abandoned resumable uploads beside it (`tus::expire_forever`).
pub async fn sweep_forever(ctx: Rc<ShardCtx>, shared: Arc<Shared>) {
    monoio::join!(sweep_blobs_forever(ctx.clone(), shared.clone()), crate::tus::expire_forever(ctx, shared));
}

async fn sweep_blobs_forever(ctx: Rc<ShardCtx>, shared: Arc<Shared>) {
    loop {
        match sweep_once(&ctx, &shared, GRACE).await {
            Ok(swept) if swept != Swept::default() => {
                tracing::info!(temporary = swept.temporary, orphans = swept.orphans, "storage sweep removed leftovers");
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(%error, "storage sweep failed; retrying at the next round"),
        }
        monoio::select! {
            _ = monoio::time::sleep(SWEEP_EVERY) => {}
            _ = ctx.shutdown.triggered() => return,
        }
    }
}

/// One sweep of files unchanged for `grace`.
pub async fn sweep_once(ctx: &ShardCtx, shared: &Shared, grace: Duration) -> Result<Swept, String> {
    let root = shared.store.root().to_path_buf();
    let listing = ctx.blocking.spawn(move || list_candidates(&root, grace)).map_err(|e| format!("{e:?}"))?;
    let (temporary, mut candidates) = listing.await.map_err(|e| format!("{e:?}"))?.map_err(|e| e.to_string())?;
    // With S3, the blobs are listed there (the local `objects/` is empty).
    let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(UNIX_EPOCH);
    candidates.extend(shared.backend.s3_versions(cutoff, MAX_CANDIDATES).await.map_err(|e| e.to_string())?);
    let mut swept = Swept { temporary, orphans: 0 };
    for chunk in candidates.chunks(BATCH) {
        let orphans = unnamed_versions(ctx, chunk).await?;
        for version in orphans {
            shared.backend.remove(&version).await.map_err(|e| e.to_string())?;
            swept.orphans += 1;
        }
    }
    Ok(swept)
}

/// Removes stale temporary files; returns how many, and the versions of stale blobs.
fn list_candidates(root: &Path, grace: Duration) -> std::io::Result<(usize, Vec<String>)> {
    let cutoff = SystemTime::now().checked_sub(grace).unwrap_or(UNIX_EPOCH);
    let cutoff = cutoff.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() as i64;
    let stale = |path: &PathBuf| std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.ctime() <= cutoff);
    let mut temporary = 0;
    for entry in std::fs::read_dir(root.join("tmp"))? {
        let path = entry?.path();
        if stale(&path) && std::fs::remove_file(&path).is_ok() {
            temporary += 1;
        }
    }
    let mut candidates = Vec::new();
    for fan in std::fs::read_dir(root.join("objects"))? {
        for entry in std::fs::read_dir(fan?.path())? {
            let path = entry?.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else { continue };
            if is_version(name) && stale(&path) {
                candidates.push(name.to_owned());
                if candidates.len() >= MAX_CANDIDATES {
                    return Ok((temporary, candidates));
                }
            }
        }
    }
    Ok((temporary, candidates))
}

/// The versions among `versions` that no row of `storage.objects` names.
async fn unnamed_versions(ctx: &ShardCtx, versions: &[String]) -> Result<Vec<String>, String> {
    let sql = "select v from unnest($1::text[]) v \
               where not exists (select 1 from storage.objects o where o.version = v)";
    let array = madbase_pg::text_array_literal(versions.iter().map(String::as_str));
    let batch = Batch::new().role("service_role").statement(Statement::new(sql).bind(text(&array)));
    let results = ctx.lanes.get(crate::LANE).execute(batch).await.map_err(|e| e.to_string())?;
    let rows = results.first().map(|r| r.rows.as_slice()).unwrap_or_default();
    Ok(rows.iter().filter_map(|r| r.get_str(0)).filter(|v| is_version(v)).map(str::to_owned).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{new_version, FileStore};

    #[test]
    fn stale_temporary_files_go_and_stale_blobs_are_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::open(dir.path()).unwrap();
        let version = new_version();
        std::fs::write(store.blob_path(&version), b"bytes").unwrap();
        std::fs::write(dir.path().join("tmp").join("abandoned"), b"half").unwrap();
        std::fs::write(dir.path().join("objects").join("00").join("not-a-version"), b"?").unwrap();

        let (temporary, candidates) = list_candidates(dir.path(), GRACE).unwrap();
        assert_eq!((temporary, candidates.len()), (0, 0), "fresh files are left alone");

        let (temporary, candidates) = list_candidates(dir.path(), Duration::ZERO).unwrap();
        assert_eq!(temporary, 1);
        assert_eq!(candidates, vec![version.clone()]);
        assert!(std::fs::read_dir(dir.path().join("tmp")).unwrap().next().is_none());
        assert!(store.blob_path(&version).exists(), "only PostgreSQL decides a blob is an orphan");
    }
}
