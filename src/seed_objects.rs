//! The objects of declared buckets (`[storage.buckets.<id>] objects_path`): uploaded at start,
//! after the shards listen and before MadBase says it has started, as `supabase start` (and
//! `supabase seed buckets`) upload them — through the Storage API as the service role, so every
//! bucket limit, MIME rule and durability guarantee of a normal upload applies.
//!
//! As the Supabase CLI (`UpsertObjects`): every regular file under the folder (symbolic links
//! and other special files are skipped, folders are not followed through links), in lexical
//! order, to `<bucket>/<path relative to the folder>` (a single file: to `<bucket>/<file name>`),
//! overwriting (`x-upsert: true`), `Cache-Control: max-age=3600`, the content type sniffed from
//! the first 512 bytes and, where that says only `text/plain`, taken from the extension.
//!
//! Invariants: a file is streamed from disk, never read whole; one upload at a time; a server
//! error is retried for a bounded time ([`PATIENCE`]: right after start the shards may still be
//! connecting to PostgreSQL); a file the server refuses, or a folder that cannot be read, is
//! logged with the reason and the start goes on (the buckets themselves were created by the
//! start-up batch); at most [`MAX_DEPTH`] folder levels are walked.

use std::fs::{self, File};
use std::io::Read;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use madbase_storage::object::encode_uri_component;
use madbase_storage::settings::Storage;

use crate::cli::Client;

/// Folder levels walked below an `objects_path`.
const MAX_DEPTH: usize = 64;

/// How many bytes the content type is sniffed from (Go's `http.DetectContentType`, which the
/// Supabase CLI uses).
const SNIFF_BYTES: usize = 512;

/// What one bucket's upload did.
#[derive(Debug, Default)]
struct Outcome {
    uploaded: usize,
    failed: usize,
}

/// Uploads every declared bucket's `objects_path` to the server listening at `listening`, with
/// the service role's key; nothing to do when no bucket declares one.
pub fn upload_all(listening: SocketAddr, service_key: &str, storage: &Storage) -> Result<(), String> {
    let declared: Vec<_> =
        storage.buckets.0.iter().filter_map(|(id, b)| Some((id, b.objects_path.as_ref()?))).collect();
    if !storage.enabled || declared.is_empty() {
        return Ok(());
    }
    let mut own = listening;
    if own.ip().is_unspecified() {
        own.set_ip(if own.is_ipv4() { Ipv4Addr::LOCALHOST.into() } else { Ipv6Addr::LOCALHOST.into() });
    }
    let client = Client::new(&format!("http://{own}"), service_key.to_owned())?;
    wait_until_healthy(&client);
    for (bucket, folder) in declared {
        let outcome = upload(&client, bucket, Path::new(folder));
        tracing::info!(bucket = %bucket, objects_path = %folder, uploaded = outcome.uploaded, failed = outcome.failed, "declared bucket's objects uploaded");
    }
    Ok(())
}

/// How long a start waits for the server to be healthy, and for one file to be taken while the
/// server answers 5xx (its PostgreSQL connections are still being made right after start).
const PATIENCE: Duration = Duration::from_secs(60);

/// Waits (at most [`PATIENCE`]) until `/health` answers 200: PostgreSQL answers and every shard
/// runs. An upload that still meets a server error is retried (see [`upload_file`]).
fn wait_until_healthy(client: &Client) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match client.send("GET", "/health", &[], std::io::empty(), 0) {
            Ok((200, _)) => return,
            answer if Instant::now() >= deadline => {
                tracing::warn!(?answer, "the server is not healthy yet; uploading declared objects anyway");
                return;
            }
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// Uploads the files under `folder` (or the file `folder`) into `bucket`, each as it is found.
fn upload(client: &Client, bucket: &str, folder: &Path) -> Outcome {
    let mut outcome = Outcome::default();
    let mut each = |file: &Path, key: &str| match upload_file(client, bucket, file, key) {
        Ok(()) => outcome.uploaded += 1,
        Err(reason) => {
            outcome.failed += 1;
            tracing::error!(bucket = %bucket, file = %file.display(), key = %key, reason = %reason, "cannot upload a declared bucket's object");
        }
    };
    // The folder itself may be a link (the CLI stats it); links inside are not followed.
    match fs::metadata(folder) {
        Ok(meta) if meta.is_file() => {
            let name = folder.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            each(folder, &name);
        }
        Ok(meta) if meta.is_dir() => walk(folder, "", 0, &mut each),
        Ok(_) => {
            tracing::error!(bucket = %bucket, objects_path = %folder.display(), "objects_path is neither a file nor a folder")
        }
        Err(e) => {
            tracing::error!(bucket = %bucket, objects_path = %folder.display(), error = %e, "cannot read objects_path")
        }
    }
    outcome
}

/// Hands `each` the regular files under `folder` with their keys (`prefix` + relative path), in
/// lexical order, as they are found (nothing gathers them: a folder of any size costs one
/// listing per level).
fn walk(folder: &Path, prefix: &str, depth: usize, each: &mut dyn FnMut(&Path, &str)) {
    if depth >= MAX_DEPTH {
        tracing::error!(folder = %folder.display(), "objects_path is nested deeper than {MAX_DEPTH} folders; not walked further");
        return;
    }
    let entries = match fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) => {
            tracing::error!(folder = %folder.display(), error = %e, "cannot read a folder of objects_path");
            return;
        }
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|entry| entry.file_name());
    for entry in entries {
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            tracing::error!(file = %entry.path().display(), "not uploaded: the name is not UTF-8");
            continue;
        };
        let key = format!("{prefix}{name}");
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => walk(&entry.path(), &format!("{key}/"), depth + 1, each),
            Ok(kind) if kind.is_file() => each(&entry.path(), &key),
            _ => {} // links and special files, as the CLI
        }
    }
}

/// Uploads one file; a server error (5xx) or a failed connection is retried with backoff for at
/// most [`PATIENCE`] (an upsert of the same bytes: retrying cannot duplicate anything).
fn upload_file(client: &Client, bucket: &str, file: &Path, key: &str) -> Result<(), String> {
    let deadline = Instant::now() + PATIENCE;
    let mut pause = Duration::from_millis(100);
    loop {
        match upload_once(client, bucket, file, key) {
            Err(Failure::Transient(reason)) if Instant::now() + pause < deadline => {
                tracing::debug!(file = %file.display(), %reason, "declared object upload retried");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(Failure::Transient(reason) | Failure::Refused(reason)) => return Err(reason),
            Ok(()) => return Ok(()),
        }
    }
}

/// Why one attempt failed.
enum Failure {
    /// The server could not take it now (5xx, or no answer).
    Transient(String),
    /// The server refused the file (4xx) or it cannot be read.
    Refused(String),
}

fn upload_once(client: &Client, bucket: &str, file: &Path, key: &str) -> Result<(), Failure> {
    let refused = |e: std::io::Error| Failure::Refused(e.to_string());
    let mut opened = File::open(file).map_err(refused)?;
    let length = opened.metadata().map_err(refused)?.len();
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut opened).take(SNIFF_BYTES as u64).read_to_end(&mut head).map_err(refused)?;
    let content_type = content_type(&head, file);
    let path = std::iter::once(bucket).chain(key.split('/')).map(encode_uri_component).collect::<Vec<_>>().join("/");
    let headers = [("Content-Type", content_type), ("Cache-Control", "max-age=3600"), ("x-upsert", "true")];
    let body = head.as_slice().chain(opened);
    let (status, answer) = client
        .send("POST", &format!("/storage/v1/object/{path}"), &headers, body, length)
        .map_err(Failure::Transient)?;
    if (200..300).contains(&status) {
        return Ok(());
    }
    // Storage's envelope: the real status in `statusCode` (the HTTP status may be 400).
    let json: serde_json::Value = serde_json::from_slice(&answer).unwrap_or_default();
    let field = |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    let code = field("statusCode").unwrap_or_else(|| status.to_string());
    let error = field("error").unwrap_or_default();
    let message = field("message").unwrap_or_else(|| String::from_utf8_lossy(&answer).into_owned());
    let reason = format!("{code} {error}: {message}");
    if status >= 500 || code.starts_with('5') {
        Err(Failure::Transient(reason))
    } else {
        Err(Failure::Refused(reason))
    }
}

/// The content type the Supabase CLI sends: sniffed from `head`, and where that finds only text,
/// the extension's type when it has one.
fn content_type(head: &[u8], file: &Path) -> &'static str {
    let sniffed = sniff(head);
    if sniffed.starts_with("text/plain") {
        let extension = file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        if let Some(by_extension) = extension.as_deref().and_then(type_by_extension) {
            return by_extension;
        }
    }
    sniffed
}

/// The WHATWG MIME sniffing subset Go's `http.DetectContentType` implements, for the types a
/// project's seed files have.
fn sniff(head: &[u8]) -> &'static str {
    const SIGNATURES: &[(&[u8], &str)] = &[
        (b"%PDF-", "application/pdf"),
        (b"%!PS-Adobe-", "application/postscript"),
        (b"\xFE\xFF", "text/plain; charset=utf-16be"),
        (b"\xFF\xFE", "text/plain; charset=utf-16le"),
        (b"\xEF\xBB\xBF", "text/plain; charset=utf-8"),
        (b"\x00\x00\x01\x00", "image/x-icon"),
        (b"\x00\x00\x02\x00", "image/x-icon"),
        (b"BM", "image/bmp"),
        (b"GIF87a", "image/gif"),
        (b"GIF89a", "image/gif"),
        (b"\x89PNG\r\n\x1A\n", "image/png"),
        (b"\xFF\xD8\xFF", "image/jpeg"),
        (b"\x1A\x45\xDF\xA3", "video/webm"),
        (b"OggS\x00", "application/ogg"),
        (b"ID3", "audio/mpeg"),
        (b"wOFF", "font/woff"),
        (b"wOF2", "font/woff2"),
        (b"\x1F\x8B\x08", "application/x-gzip"),
        (b"PK\x03\x04", "application/zip"),
        (b"Rar!\x1A\x07\x00", "application/x-rar-compressed"),
        (b"Rar!\x1A\x07\x01\x00", "application/x-rar-compressed"),
        (b"\x00\x61\x73\x6D", "application/wasm"),
    ];
    if let Some((_, mime)) = SIGNATURES.iter().find(|(signature, _)| head.starts_with(signature)) {
        return mime;
    }
    if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WEBP") {
        return "image/webp";
    }
    if head.starts_with(b"RIFF") && head.get(8..12) == Some(b"WAVE") {
        return "audio/wave";
    }
    if is_mp4(head) {
        return "video/mp4";
    }
    let text = head.trim_ascii_start();
    let tag_is = |tag: &[u8]| {
        text.len() > tag.len() && text[..tag.len()].eq_ignore_ascii_case(tag) && matches!(text[tag.len()], b' ' | b'>')
    };
    const HTML_TAGS: &[&[u8]] = &[
        b"<!DOCTYPE HTML",
        b"<HTML",
        b"<HEAD",
        b"<SCRIPT",
        b"<IFRAME",
        b"<H1",
        b"<DIV",
        b"<FONT",
        b"<TABLE",
        b"<A",
        b"<STYLE",
        b"<TITLE",
        b"<B",
        b"<BODY",
        b"<BR",
        b"<P",
        b"<!--",
    ];
    if HTML_TAGS.iter().any(|tag| tag_is(tag)) {
        return "text/html; charset=utf-8";
    }
    if text.starts_with(b"<?xml") {
        return "text/xml; charset=utf-8";
    }
    // Go's binary data bytes: control characters other than tab, newlines, form feed and escape.
    let binary = head.iter().any(|&b| matches!(b, 0x00..=0x08 | 0x0B | 0x0E..=0x1A | 0x1C..=0x1F));
    if binary {
        "application/octet-stream"
    } else {
        "text/plain; charset=utf-8"
    }
}

/// An ISO base media file whose brands name `mp4` (AVIF and HEIF files are not video).
fn is_mp4(head: &[u8]) -> bool {
    let Some(size) = head.get(..4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize) else {
        return false;
    };
    if head.len() < size || size % 4 != 0 || head.get(4..8) != Some(b"ftyp") {
        return false;
    }
    // The major brand at 8, the minor version at 12, compatible brands from 16.
    (8..size).step_by(4).filter(|&at| at != 12).any(|at| head.get(at..at + 3) == Some(b"mp4"))
}

/// Go's built-in extension table (`mime.TypeByExtension`) and the text types a seed folder
/// commonly holds.
fn type_by_extension(extension: &str) -> Option<&'static str> {
    Some(match extension {
        "avif" => "image/avif",
        "css" => "text/css; charset=utf-8",
        "csv" => "text/csv; charset=utf-8",
        "gif" => "image/gif",
        "htm" | "html" => "text/html; charset=utf-8",
        "jpeg" | "jpg" => "image/jpeg",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "md" => "text/markdown; charset=utf-8",
        "pdf" => "application/pdf",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "txt" => "text/plain; charset=utf-8",
        "wasm" => "application/wasm",
        "webp" => "image/webp",
        "xml" => "text/xml; charset=utf-8",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types_as_the_supabase_cli_sends_them() {
        let png = b"\x89PNG\r\n\x1A\n\0\0\0\rIHDR";
        assert_eq!(content_type(png, Path::new("a/photo.bin")), "image/png", "the bytes win over the name");
        assert_eq!(content_type(b"{\"a\": 1}\n", Path::new("data.json")), "application/json");
        assert_eq!(content_type(b"<svg xmlns=\"x\"></svg>", Path::new("logo.svg")), "image/svg+xml");
        assert_eq!(content_type(b"  <!DOCTYPE html>\n<html>", Path::new("index.html")), "text/html; charset=utf-8");
        assert_eq!(content_type(b"<?xml version=\"1.0\"?><svg/>", Path::new("logo.svg")), "text/xml; charset=utf-8");
        assert_eq!(content_type(b"hello", Path::new("notes")), "text/plain; charset=utf-8");
        assert_eq!(content_type(b"hello", Path::new("notes.unknown")), "text/plain; charset=utf-8");
        assert_eq!(content_type(b"\x00\x01\x02", Path::new("blob.txt")), "application/octet-stream");
        assert_eq!(content_type(b"", Path::new("empty.css")), "text/css; charset=utf-8");
        assert_eq!(content_type(b"RIFF\0\0\0\0WEBPVP8 ", Path::new("x")), "image/webp");
        assert_eq!(content_type(b"<p>hi</p>", Path::new("x")), "text/html; charset=utf-8");
        assert_eq!(content_type(b"<pre>hi</pre>", Path::new("x")), "text/plain; charset=utf-8");
        let mp4 = b"\0\0\0\x18ftypisom\0\0\x02\0isommp41";
        assert_eq!(content_type(mp4, Path::new("clip")), "video/mp4");
        let avif = b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf";
        assert_eq!(content_type(avif, Path::new("photo.avif")), "application/octet-stream");
    }

    #[test]
    fn walk_collects_regular_files_in_order_with_their_keys() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("b/deeper")).unwrap();
        fs::write(root.join("z.txt"), "z").unwrap();
        fs::write(root.join("a.txt"), "a").unwrap();
        fs::write(root.join("b/deeper/c.png"), "c").unwrap();
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("link.txt")).unwrap();
        std::os::unix::fs::symlink(root.join("b"), root.join("linked-folder")).unwrap();
        let mut files: Vec<(std::path::PathBuf, String)> = Vec::new();
        walk(root, "", 0, &mut |file, key| files.push((file.to_path_buf(), key.to_owned())));
        let keys: Vec<&str> = files.iter().map(|(_, key)| key.as_str()).collect();
        assert_eq!(keys, ["a.txt", "b/deeper/c.png", "z.txt"]);
        assert_eq!(files[1].0, root.join("b/deeper/c.png"));
    }
}
