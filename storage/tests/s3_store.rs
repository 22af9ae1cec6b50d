//! The S3 object store (`madbase_storage::s3`) against a real S3-compatible server: moto's S3
//! (scripts/s3-server.sh, which installs moto into target/s3-server-venv on first use), driven
//! from a monoio runtime (as a shard would) over the egress runtime. Multipart uploads streamed in
//! chunks and read back whole and by range, the ETag as the bytes' MD5, small objects in one
//! request, server-side copies, removal, a dropped writer aborting its multipart upload, a reader
//! that stops reading holding the download back, a full egress queue refused, a silent server
//! timed out, and the sweeper's listing.
//!
//! The tests need python3 (with venv) and PyPI the first time; `MADBASE_TEST_S3=skip` skips them
//! with a message (nothing else does).

use std::future::{poll_fn, Future};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use futures_core::Stream;
use madbase_egress::Egress;
use madbase_storage::s3::{is_busy, S3Settings, S3Store, S3Stream, MIN_PART_SIZE};
use madbase_storage::store::{new_version, READ_CHUNK_BYTES};
use md5::{Digest, Md5};

const MIB: usize = 1024 * 1024;

/// A well-formed SigV4 header that moto accepts without checking the signature.
const AUTH: &str = "Authorization: AWS4-HMAC-SHA256 Credential=madbase-test/20260101/us-east-1/s3/aws4_request, \
                    SignedHeaders=host, Signature=0000\r\n";

/// Runs `f` on a fresh monoio runtime on its own thread (as a shard would), with a watchdog.
fn on_monoio<T: Send + 'static, F: Future<Output = T> + 'static>(f: impl FnOnce() -> F + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        let mut rt =
            monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("monoio runtime");
        let out = rt.block_on(f());
        let _ = tx.send(out);
    });
    match rx.recv_timeout(Duration::from_secs(180)) {
        Ok(v) => {
            t.join().expect("monoio thread");
            v
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => match t.join() {
            Err(p) => std::panic::resume_unwind(p),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("the monoio side did not finish within 180 s"),
    }
}

// ---------------------------------------------------------------------------------------------
// The server.

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    /// Starts scripts/s3-server.sh on a free port; `None` (with a message) only when
    /// `MADBASE_TEST_S3=skip`.
    fn start() -> Option<Server> {
        if std::env::var("MADBASE_TEST_S3").is_ok_and(|v| v == "skip") {
            eprintln!("SKIPPED: MADBASE_TEST_S3=skip, so the S3 store is not tested against moto");
            return None;
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/s3-server.sh");
        let mut child = Command::new("bash")
            .arg(&script)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start scripts/s3-server.sh (needs bash and python3; MADBASE_TEST_S3=skip skips these tests)");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        // The first run installs moto from PyPI.
        let line = match rx.recv_timeout(Duration::from_secs(300)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                panic!("the S3 server did not start within 300 s");
            }
        };
        let port = line.trim().strip_prefix("listening 127.0.0.1 ").and_then(|p| p.parse().ok()).unwrap_or_else(|| {
            let _ = child.kill();
            panic!("the S3 server did not announce its port: {line:?} (see its error output above)")
        });
        Some(Server { child, port })
    }

    /// One plain HTTP/1.1 request, with an Authorization header moto does not verify (an
    /// anonymous one would meet the objects' private ACL). Returns status, headers, body.
    fn http(&self, method: &str, target: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect to moto");
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        write!(
            s,
            "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: {}\r\nConnection: close\r\n{AUTH}\r\n",
            self.port,
            body.len()
        )
        .unwrap();
        s.write_all(body).unwrap();
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).expect("read the answer");
        let end = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 4;
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        (status, headers, raw[end..].to_vec())
    }

    fn create_bucket(&self, bucket: &str) {
        let (status, _, body) = self.http("PUT", &format!("/{bucket}"), b"");
        assert_eq!(status, 200, "create bucket {bucket}: {}", String::from_utf8_lossy(&body));
    }

    /// S3's own ETag of a key (a HEAD), unquoted.
    fn s3_etag(&self, bucket: &str, key: &str) -> Option<String> {
        let (status, headers, _) = self.http("HEAD", &format!("/{bucket}/{key}"), b"");
        if status == 404 {
            return None;
        }
        assert_eq!(status, 200, "HEAD {key}");
        headers.into_iter().find(|(k, _)| k == "etag").map(|(_, v)| v.trim_matches('"').to_owned())
    }

    /// The keys of the bucket's multipart uploads in progress.
    fn uploads(&self, bucket: &str) -> Vec<String> {
        let (status, _, body) = self.http("GET", &format!("/{bucket}?uploads"), b"");
        assert_eq!(status, 200, "list multipart uploads");
        let xml = String::from_utf8(body).unwrap();
        xml.split("<Upload>")
            .skip(1)
            .map(|u| u.split("<Key>").nth(1).and_then(|k| k.split("</Key>").next()).unwrap_or_default().to_owned())
            .collect()
    }

    fn settings(&self, bucket: &str, prefix: &str) -> S3Settings {
        S3Settings {
            bucket: bucket.to_owned(),
            region: "us-east-1".to_owned(),
            endpoint: Some(format!("http://127.0.0.1:{}", self.port)),
            access_key_id: "madbase-test".to_owned(),
            secret_access_key: "madbase-test".to_owned(),
            force_path_style: true,
            prefix: prefix.to_owned(),
            part_size: MIN_PART_SIZE,
            ..S3Settings::default()
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // The script exec'd the server: this is the python process itself.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

/// `len` bytes that differ everywhere (no two parts alike).
fn pattern(len: usize, seed: u64) -> Bytes {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    Bytes::from(out)
}

fn md5_etag(bytes: &[u8]) -> String {
    let digest = Md5::digest(bytes);
    format!("\"{}\"", digest.iter().map(|b| format!("{b:02x}")).collect::<String>())
}

/// Reads a stream to its end: the bytes and the largest chunk.
async fn collect(mut stream: S3Stream) -> io::Result<(Vec<u8>, usize)> {
    let mut out = Vec::new();
    let mut largest = 0;
    while let Some(chunk) = poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await {
        let chunk = chunk?;
        assert!(!chunk.is_empty(), "no empty chunks");
        largest = largest.max(chunk.len());
        out.extend_from_slice(&chunk);
    }
    Ok((out, largest))
}

/// Waits (on the calling thread) until `check` holds, up to 20 s.
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn multipart_upload_read_ranges_copy_remove() {
    let Some(server) = Server::start() else { return };
    let server = std::sync::Arc::new(server);
    server.create_bucket("roundtrip");
    let egress = Egress::start(2, 64).expect("egress");
    let store = S3Store::new(&server.settings("roundtrip", "madbase/objects"), egress.clone()).expect("store");
    let data = pattern(20 * MIB, 7);
    let (v, copy) = (new_version(), new_version());

    let srv = server.clone();
    on_monoio(move || async move {
        // 20 MiB in 64 KiB chunks: four parts of 5 MiB.
        let mut writer = store.create(&v).await.expect("create");
        for chunk in data.chunks(64 * 1024) {
            writer.write(data.slice_ref(chunk)).await.expect("write");
        }
        assert_eq!(writer.written(), data.len() as u64);
        let stored = writer.commit().await.expect("commit");
        assert_eq!(stored.size, data.len() as u64);
        assert_eq!(stored.etag, md5_etag(&data), "the ETag is the bytes' MD5, not S3's");
        let key = format!("madbase/objects/{v}");
        let s3_etag = srv.s3_etag("roundtrip", &key).expect("the object exists");
        assert!(s3_etag.ends_with("-4"), "stored as a multipart upload of 4 parts: {s3_etag}");
        assert!(srv.uploads("roundtrip").is_empty(), "no upload left in progress");

        let blob = store.open_blob(&v).await.expect("open");
        assert_eq!(blob.len(), data.len() as u64);
        let (all, largest) = collect(blob.stream(0, u64::MAX)).await.expect("read all");
        assert!(all == data[..], "read back whole");
        // Gathered up to READ_CHUNK_BYTES, or one read of the HTTP client as it came (hyper reads
        // at most 408 KiB at a time).
        assert!(largest <= 2 * READ_CHUNK_BYTES, "chunks of at most {}: {largest}", 2 * READ_CHUNK_BYTES);

        let part = MIN_PART_SIZE as u64;
        let len = data.len() as u64;
        for (start, end) in [(0, 1), (part - 3, part + 3), (1, len - 1), (len - 10, len + 100), (12345, 3 * part + 777)]
        {
            let (got, _) = collect(blob.stream(start, end)).await.expect("read a range");
            let want = &data[start as usize..end.min(len) as usize];
            assert!(got == want, "range {start}..{end}: {} bytes, want {}", got.len(), want.len());
        }
        for (start, end) in [(5, 5), (len, len + 10), (10, 3)] {
            let (got, _) = collect(blob.stream(start, end)).await.expect("an empty range");
            assert!(got.is_empty(), "range {start}..{end}");
        }

        // A copy inside the service outlives its source.
        store.link(&v, &copy).await.expect("link");
        store.remove(&v).await.expect("remove");
        store.remove(&v).await.expect("removing an absent blob is fine");
        assert_eq!(store.open_blob(&v).await.err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));
        assert!(srv.s3_etag("roundtrip", &key).is_none());
        let copied = store.open_blob(&copy).await.expect("open the copy");
        assert_eq!(copied.len(), len);
        let (got, _) = collect(copied.stream(0, len)).await.expect("read the copy");
        assert!(got == data[..], "the copy has the bytes");

        // A blob whose length the row knows: no HEAD first.
        let known = store.blob(&copy, len).expect("blob");
        let (got, _) = collect(known.stream(len - 5, len)).await.expect("read the end");
        assert!(got == data[data.len() - 5..]);

        // A blob removed after it was opened: its read fails, as NotFound.
        store.remove(&copy).await.expect("remove the copy");
        let err = collect(copied.stream(0, len)).await.expect_err("the blob is gone");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    });
    wait_until("every job ended", || egress.in_flight() == 0);
}

#[test]
fn small_boundary_and_empty_objects() {
    let Some(server) = Server::start() else { return };
    let server = std::sync::Arc::new(server);
    server.create_bucket("small");
    let egress = Egress::start(2, 64).expect("egress");
    let store = S3Store::new(&server.settings("small", ""), egress.clone()).expect("store");

    let srv = server.clone();
    on_monoio(move || async move {
        // (size, chunk sizes cycled, S3's ETag has a part count)
        let cases: [(usize, &[usize], Option<usize>); 6] = [
            (0, &[1], None),
            (3, &[1, 2], None),
            (MIN_PART_SIZE - 1, &[300 * 1024, 7], None),
            (MIN_PART_SIZE, &[MIB], Some(1)),
            (MIN_PART_SIZE + 1, &[4 * MIB, 1, 3 * MIB], Some(2)),
            (11 * MIB + 5, &[1, 100_000, 3 * MIB + 1, 512 * 1024, 17], Some(3)),
        ];
        for (i, (size, chunks, parts)) in cases.into_iter().enumerate() {
            let data = pattern(size, 100 + i as u64);
            let v = new_version();
            let mut writer = store.create(&v).await.expect("create");
            let (mut at, mut k) = (0, 0);
            while at < size {
                let n = chunks[k % chunks.len()].min(size - at);
                writer.write(data.slice(at..at + n)).await.expect("write");
                at += n;
                k += 1;
            }
            let stored = writer.commit().await.expect("commit");
            assert_eq!(stored.size, size as u64, "case {i}");
            assert_eq!(stored.etag, md5_etag(&data), "case {i}");
            let s3_etag = srv.s3_etag("small", &v).expect("the object exists");
            match parts {
                None => assert_eq!(format!("\"{s3_etag}\""), stored.etag, "case {i}: one PutObject"),
                Some(n) => assert!(s3_etag.ends_with(&format!("-{n}")), "case {i}: {n} parts, S3 says {s3_etag}"),
            }
            let blob = store.open_blob(&v).await.expect("open");
            assert_eq!(blob.len(), size as u64, "case {i}");
            assert_eq!(blob.is_empty(), size == 0);
            let (got, _) = collect(blob.stream(0, u64::MAX)).await.expect("read");
            assert!(got == data[..], "case {i}: read back");
        }
        assert!(srv.uploads("small").is_empty(), "no upload left in progress");
    });
    wait_until("every job ended", || egress.in_flight() == 0);
}

#[test]
fn dropped_writer_aborts_and_a_stalled_reader_holds_the_download() {
    let Some(server) = Server::start() else { return };
    let server = std::sync::Arc::new(server);
    server.create_bucket("abort");
    // An egress of its own: its count of unfinished jobs is this test's.
    let egress = Egress::start(1, 8).expect("egress");
    let store = S3Store::new(&server.settings("abort", "p"), egress.clone()).expect("store");

    let (srv, eg) = (server.clone(), egress.clone());
    on_monoio(move || async move {
        // Past two parts: the multipart upload has begun.
        let v = new_version();
        let data = pattern(12 * MIB, 3);
        let mut writer = store.create(&v).await.expect("create");
        for chunk in data.chunks(256 * 1024) {
            writer.write(data.slice_ref(chunk)).await.expect("write");
        }
        let key = format!("p/{v}");
        wait_until("the multipart upload shows", || srv.uploads("abort") == [key.clone()]);
        drop(writer);
        wait_until("the upload job ended", || eg.in_flight() == 0);
        assert!(srv.uploads("abort").is_empty(), "the multipart upload was aborted");
        assert_eq!(store.open_blob(&v).await.err().map(|e| e.kind()), Some(io::ErrorKind::NotFound));

        // Dropped before a part was full: nothing was sent, nothing appears.
        let small = new_version();
        let mut writer = store.create(&small).await.expect("create");
        writer.write(pattern(100 * 1024, 4)).await.expect("write");
        drop(writer);
        wait_until("the upload job ended", || eg.in_flight() == 0);
        assert!(srv.s3_etag("abort", &format!("p/{small}")).is_none());
        assert!(srv.uploads("abort").is_empty());

        // A reader that stops reading: the download waits (a few chunks ahead, not the whole
        // object), and ends when the stream is dropped.
        let big = new_version();
        let data = pattern(16 * MIB, 5);
        let mut writer = store.create(&big).await.expect("create");
        writer.write(data.clone()).await.expect("write");
        writer.commit().await.expect("commit");
        let blob = store.open_blob(&big).await.expect("open");
        let mut stream = blob.stream(0, blob.len());
        let first = poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await.expect("a chunk").expect("ok");
        assert!(data.starts_with(&first));
        monoio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(eg.in_flight(), 1, "the download waits for the reader");
        drop(stream);
        wait_until("the download job ended", || eg.in_flight() == 0);
    });
}

#[test]
fn missing_busy_listing_and_timeouts() {
    let Some(server) = Server::start() else { return };
    let server = std::sync::Arc::new(server);
    server.create_bucket("misc");
    let egress = Egress::start(1, 1).expect("egress");
    let store = S3Store::new(&server.settings("misc", "/sweep/"), egress.clone()).expect("store");

    // A server that accepts connections and never answers.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let silent_port = silent.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        while let Ok((conn, _)) = silent.accept() {
            held.push(conn);
        }
    });
    let mut slow = server.settings("misc", "");
    slow.endpoint = Some(format!("http://127.0.0.1:{silent_port}"));
    slow.request_timeout = Duration::from_millis(500);
    let silent_store = S3Store::new(&slow, Egress::start(1, 4).expect("egress")).expect("store");

    let (srv, eg) = (server.clone(), egress.clone());
    on_monoio(move || async move {
        let missing = new_version();
        let err = store.open_blob(&missing).await.err().expect("no blob");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        store.remove(&missing).await.expect("removing an absent blob is fine");
        let err = store.link(&missing, &new_version()).await.expect_err("no source");
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        assert_eq!(store.open_blob("not-a-version").await.err().map(|e| e.kind()), Some(io::ErrorKind::InvalidInput));

        // A full egress queue (one slot, held by an upload) refuses at once.
        let held = store.create(&new_version()).await.expect("create");
        let err = store.create(&new_version()).await.err().expect("busy");
        assert!(is_busy(&err), "{err}");
        let err = store.open_blob(&missing).await.err().expect("busy");
        assert!(is_busy(&err), "{err}");
        drop(held);
        wait_until("the slot is free", || eg.in_flight() == 0);

        // The sweeper's listing: versions under the prefix only, in key order.
        let before = SystemTime::now() - Duration::from_secs(3600);
        let mut versions = Vec::new();
        for i in 0..3 {
            let v = new_version();
            let mut writer = store.create(&v).await.expect("create");
            writer.write(Bytes::from(vec![i as u8; 10])).await.expect("write");
            writer.commit().await.expect("commit");
            versions.push(v);
        }
        versions.sort();
        let other = new_version();
        for key in ["sweep/not-a-version".to_owned(), format!("sweep/deeper/{other}"), format!("elsewhere/{other}")] {
            let (status, _, _) = srv.http("PUT", &format!("/misc/{key}"), b"x");
            assert_eq!(status, 200, "PUT {key}");
        }
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(store.list_versions(later, 100).await.expect("list"), versions);
        assert_eq!(store.list_versions(later, 2).await.expect("list"), versions[..2]);
        assert!(store.list_versions(before, 100).await.expect("list").is_empty(), "none older than an hour");
        assert_eq!(store.list_versions_after(Some(&versions[0]), later, 100).await.expect("list"), versions[1..]);

        // Deadlines: a server that never answers is an error, not a hang.
        let started = Instant::now();
        let err = silent_store.open_blob(&missing).await.err().expect("no answer");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(started.elapsed() < Duration::from_secs(30), "{:?}", started.elapsed());
    });
}
