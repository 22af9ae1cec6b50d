//! A blocking PostgreSQL client for one dedicated OS thread: logical replication and plain
//! simple queries.
//!
//! Owns one socket (TCP or the server's unix socket `<dir>/.s.PGSQL.<port>`), its startup and
//! authentication (the same [`crate::auth::Auth`] responder as the pipelined client), simple
//! queries, the replication commands (`IDENTIFY_SYSTEM`, `CREATE_REPLICATION_SLOT … LOGICAL`,
//! `START_REPLICATION … LOGICAL`) and, once streaming, the CopyBoth stream: XLogData and primary
//! keepalive messages in, standby status updates out.
//!
//! Why blocking: the replication core is one thread with one connection and nothing else to do
//! between messages; a reactor would add nothing but a runtime on a thread that is not a shard.
//! Every read has a timeout (the socket's `SO_RCVTIMEO`), so the owner can poll a stop flag and
//! send status updates on time while the server is quiet.
//!
//! Invariants:
//! - every session starts with `TimeZone=UTC`, `DateStyle=ISO`, `IntervalStyle=postgres`,
//!   `client_encoding=UTF8` and `extra_float_digits=1`: the text of every value the server sends
//!   (pgoutput's tuples included, which the walsender renders with its session's settings) is in
//!   one known form;
//! - the read buffer is bounded: a message whose declared length is larger than
//!   `max_message_bytes` is refused ([`ReplicationError::MessageTooLarge`]) before any of it is
//!   buffered; the connection is unusable afterwards (the stream is out of step);
//! - a read that times out keeps what it had buffered, so a message split across timeouts is
//!   never lost or misframed.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use fallible_iterator::FallibleIterator;
use postgres_protocol::message::{backend::Message, frontend};

use crate::auth::Auth;
use crate::batch::{Row, SimpleResult};
use crate::config::{ConnectConfig, Host};
use crate::error::{DbError, PgError};

/// Microseconds between the Unix epoch and PostgreSQL's epoch (2000-01-01 00:00:00 UTC).
pub const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800 * 1_000_000;

/// The default bound on one message from the server: 64 MiB.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// The settings every session of this client starts with (see the module's invariants).
const SESSION_SETTINGS: [(&str, &str); 5] = [
    ("client_encoding", "UTF8"),
    ("DateStyle", "ISO"),
    ("TimeZone", "UTC"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "1"),
];

/// Failures of the blocking client.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The server answered with an ErrorResponse.
    #[error("database error: {0}")]
    Db(Box<DbError>),
    /// Socket-level failure.
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    /// The server sent something this client does not understand or did not expect.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Authentication could not be completed.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// A message larger than the configured bound.
    #[error("a '{tag}' message of {len} bytes is larger than max_message_bytes ({limit})")]
    MessageTooLarge {
        /// The message's type byte.
        tag: char,
        /// Its declared length.
        len: usize,
        /// The configured bound.
        limit: usize,
    },
    /// Nothing complete arrived in time (startup or a query).
    #[error("PostgreSQL did not answer within {0:?}")]
    Timeout(Duration),
    /// The server closed the socket.
    #[error("the server closed the connection")]
    Closed,
    /// The server ended the CopyBoth stream (CopyDone).
    #[error("the server ended the replication stream")]
    StreamEnded,
}

impl ReplicationError {
    /// The SQLSTATE of a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            ReplicationError::Db(e) => Some(&e.code),
            _ => None,
        }
    }
}

impl From<DbError> for ReplicationError {
    fn from(e: DbError) -> Self {
        ReplicationError::Db(Box::new(e))
    }
}

impl From<PgError> for ReplicationError {
    fn from(e: PgError) -> Self {
        match e {
            PgError::Db(e) => ReplicationError::Db(e),
            PgError::Io(e) => ReplicationError::Io(e),
            PgError::Auth(m) => ReplicationError::Auth(m),
            PgError::Protocol(m) => ReplicationError::Protocol(m),
            other => ReplicationError::Protocol(other.to_string()),
        }
    }
}

/// Which kind of session to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionMode {
    /// An ordinary session (catalog lookups, tests).
    Normal,
    /// `replication=database`: a walsender that also runs plain SQL.
    Replication,
}

/// What `IDENTIFY_SYSTEM` answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemInfo {
    /// The cluster's system identifier.
    pub system_id: String,
    /// The current timeline.
    pub timeline: u32,
    /// The current WAL flush position.
    pub xlogpos: u64,
    /// The database connected to (`None` for physical replication sessions).
    pub dbname: Option<String>,
}

/// One message of the CopyBoth stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMessage {
    /// WAL data (for logical replication: one output-plugin message).
    XLogData {
        /// The position of the data in the WAL.
        start: u64,
        /// The server's current end of WAL.
        wal_end: u64,
        /// The server's clock when it sent this (microseconds since 2000-01-01).
        send_time: i64,
        /// The payload.
        data: Bytes,
    },
    /// Primary keepalive.
    Keepalive {
        /// The server's current end of WAL (for logical replication: what was sent so far).
        wal_end: u64,
        /// The server's clock.
        send_time: i64,
        /// The server asks for a status update now (it is about to time the client out).
        reply_requested: bool,
    },
}

enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Socket {
    fn set_read_timeout(&self, t: Duration) -> io::Result<()> {
        // A zero timeout means "block forever" to the OS: never ask for it.
        let t = Some(t.max(Duration::from_millis(1)));
        match self {
            Socket::Tcp(s) => s.set_read_timeout(t),
            Socket::Unix(s) => s.set_read_timeout(t),
        }
    }

    fn set_write_timeout(&self, t: Duration) -> io::Result<()> {
        let t = Some(t.max(Duration::from_millis(1)));
        match self {
            Socket::Tcp(s) => s.set_write_timeout(t),
            Socket::Unix(s) => s.set_write_timeout(t),
        }
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.flush(),
            Socket::Unix(s) => s.flush(),
        }
    }
}

/// One frame as read: its type byte and the whole message (type byte and length included).
struct Frame {
    tag: u8,
    bytes: BytesMut,
}

impl Frame {
    fn parse(mut self) -> Result<Message, ReplicationError> {
        match Message::parse(&mut self.bytes) {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(ReplicationError::Protocol("incomplete message".into())),
            Err(e) => Err(ReplicationError::Protocol(format!("malformed '{}' message: {e}", self.tag as char))),
        }
    }
}

/// A blocking session (normal or replication mode), before any stream is started.
pub struct BlockingConnection {
    socket: Socket,
    rbuf: BytesMut,
    max_message_bytes: usize,
    query_timeout: Duration,
    params: Vec<(String, String)>,
    pid: i32,
}

impl std::fmt::Debug for BlockingConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingConnection").field("pid", &self.pid).finish_non_exhaustive()
    }
}

impl BlockingConnection {
    /// Connects, starts up and authenticates within `config.connect_timeout`. Messages larger
    /// than `max_message_bytes` are refused for the life of the connection.
    pub fn connect(
        config: &ConnectConfig,
        mode: SessionMode,
        max_message_bytes: usize,
    ) -> Result<BlockingConnection, ReplicationError> {
        let deadline = Instant::now() + config.connect_timeout;
        let socket = open_socket(config)?;
        socket.set_write_timeout(config.connect_timeout)?;
        let mut conn = BlockingConnection {
            socket,
            rbuf: BytesMut::with_capacity(16 * 1024),
            max_message_bytes: max_message_bytes.max(1024),
            query_timeout: Duration::from_secs(30),
            params: Vec::new(),
            pid: 0,
        };
        conn.startup(config, mode, deadline)?;
        Ok(conn)
    }

    /// Bound on waiting for one simple query's answer (default 30 s).
    pub fn set_query_timeout(&mut self, timeout: Duration) {
        self.query_timeout = timeout;
    }

    /// A ParameterStatus value the server reported.
    pub fn parameter(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The server process id of this session.
    pub fn backend_pid(&self) -> i32 {
        self.pid
    }

    fn startup(&mut self, cfg: &ConnectConfig, mode: SessionMode, deadline: Instant) -> Result<(), ReplicationError> {
        let mut params: Vec<(&str, &str)> = vec![("user", &cfg.user), ("database", &cfg.dbname)];
        if mode == SessionMode::Replication {
            params.push(("replication", "database"));
        }
        params.extend(SESSION_SETTINGS);
        if let Some(app) = &cfg.application_name {
            params.push(("application_name", app));
        }
        let mut w = BytesMut::new();
        frontend::startup_message(params.iter().copied(), &mut w).map_err(ReplicationError::Io)?;
        self.write_all(&w)?;
        let mut auth = Auth::new(cfg);
        loop {
            let frame = self.read_frame(Some(deadline))?.ok_or(ReplicationError::Timeout(cfg.connect_timeout))?;
            match frame.parse()? {
                Message::ParameterStatus(body) => {
                    let (k, v) = (body.name().map_err(proto)?, body.value().map_err(proto)?);
                    self.params.push((k.to_string(), v.to_string()));
                }
                Message::BackendKeyData(body) => self.pid = body.process_id(),
                Message::NoticeResponse(body) => log_notice(body.fields()),
                Message::ErrorResponse(body) => return Err(DbError::parse(body.fields()).map_err(proto)?.into()),
                Message::ReadyForQuery(_) => return Ok(()),
                msg => {
                    w.clear();
                    auth.respond(msg, &mut w)?;
                    if !w.is_empty() {
                        self.write_all(&w)?;
                    }
                }
            }
        }
    }

    /// Runs `sql` (one or more statements, or a replication command) with the simple-query
    /// protocol; one result per statement that completed. A server error fails the call after
    /// the server is ready again, so the session stays usable.
    pub fn simple_query(&mut self, sql: &str) -> Result<Vec<SimpleResult>, ReplicationError> {
        let mut w = BytesMut::new();
        frontend::query(sql, &mut w).map_err(ReplicationError::Io)?;
        self.write_all(&w)?;
        let deadline = Instant::now() + self.query_timeout;
        let mut results = Vec::new();
        let mut columns: Vec<String> = Vec::new();
        let mut rows: Vec<Row> = Vec::new();
        let mut error: Option<DbError> = None;
        loop {
            let frame = self.read_frame(Some(deadline))?.ok_or(ReplicationError::Timeout(self.query_timeout))?;
            let tag = frame.tag;
            match frame.parse()? {
                Message::RowDescription(body) => {
                    columns = body.fields().map(|f| Ok(f.name().to_string())).collect().map_err(proto)?;
                }
                Message::DataRow(body) => {
                    let buf = body.buffer();
                    let cells: Vec<Option<Bytes>> = body
                        .ranges()
                        .map(|r| Ok(r.map(|r| Bytes::copy_from_slice(&buf[r]))))
                        .collect()
                        .map_err(proto)?;
                    rows.push(Row::new(cells));
                }
                Message::CommandComplete(body) => {
                    let tag = body.tag().map_err(proto)?.to_string();
                    results.push(SimpleResult {
                        columns: std::mem::take(&mut columns),
                        rows: std::mem::take(&mut rows),
                        command_tag: tag,
                    });
                }
                Message::EmptyQueryResponse => {}
                Message::NoticeResponse(body) => log_notice(body.fields()),
                Message::ParameterStatus(_) => {}
                Message::ErrorResponse(body) => error = Some(DbError::parse(body.fields()).map_err(proto)?),
                Message::ReadyForQuery(_) => {
                    return match error {
                        Some(e) => Err(e.into()),
                        None => Ok(results),
                    }
                }
                _ => return Err(ReplicationError::Protocol(format!("unexpected '{}' in a simple query", tag as char))),
            }
        }
    }

    /// `IDENTIFY_SYSTEM` (replication sessions only).
    pub fn identify_system(&mut self) -> Result<SystemInfo, ReplicationError> {
        let res = self.simple_query("IDENTIFY_SYSTEM")?;
        let row = res
            .first()
            .and_then(|r| r.rows.first())
            .ok_or_else(|| ReplicationError::Protocol("IDENTIFY_SYSTEM returned no row".into()))?;
        let text = |i: usize| row.get_str(i).map(str::to_string);
        Ok(SystemInfo {
            system_id: text(0).unwrap_or_default(),
            timeline: text(1).and_then(|t| t.parse().ok()).unwrap_or(0),
            xlogpos: text(2)
                .as_deref()
                .and_then(parse_lsn)
                .ok_or_else(|| ReplicationError::Protocol("IDENTIFY_SYSTEM: bad xlogpos".into()))?,
            dbname: text(3),
        })
    }

    /// `CREATE_REPLICATION_SLOT "<slot>" LOGICAL <plugin> NOEXPORT_SNAPSHOT`. Returns the slot's
    /// consistent point.
    pub fn create_logical_slot(&mut self, slot: &str, plugin: &str) -> Result<u64, ReplicationError> {
        let sql =
            format!("CREATE_REPLICATION_SLOT {} LOGICAL {} NOEXPORT_SNAPSHOT", quote_ident(slot), quote_ident(plugin));
        let res = self.simple_query(&sql)?;
        Ok(res.first().and_then(|r| r.rows.first()).and_then(|r| r.get_str(1)).and_then(parse_lsn).unwrap_or(0))
    }

    /// `START_REPLICATION SLOT "<slot>" LOGICAL <lsn> (<name> '<value>', …)`; on success the
    /// session is a CopyBoth stream. Option values are quoted as string literals.
    pub fn start_logical(
        mut self,
        slot: &str,
        start: u64,
        options: &[(&str, &str)],
    ) -> Result<ReplicationStream, ReplicationError> {
        let mut sql = format!("START_REPLICATION SLOT {} LOGICAL {}", quote_ident(slot), lsn_text(start));
        if !options.is_empty() {
            let opts: Vec<String> =
                options.iter().map(|(k, v)| format!("{} {}", quote_ident(k), quote_literal(v))).collect();
            sql.push_str(&format!(" ({})", opts.join(", ")));
        }
        let mut w = BytesMut::new();
        frontend::query(&sql, &mut w).map_err(ReplicationError::Io)?;
        self.write_all(&w)?;
        let deadline = Instant::now() + self.query_timeout;
        let mut error: Option<DbError> = None;
        loop {
            let frame = self.read_frame(Some(deadline))?.ok_or(ReplicationError::Timeout(self.query_timeout))?;
            match frame.tag {
                b'W' => {
                    debug_assert!(error.is_none());
                    return Ok(ReplicationStream { conn: self });
                }
                b'N' => {
                    if let Message::NoticeResponse(body) = frame.parse()? {
                        log_notice(body.fields());
                    }
                }
                b'S' => {}
                b'E' => {
                    if let Message::ErrorResponse(body) = frame.parse()? {
                        error = Some(DbError::parse(body.fields()).map_err(proto)?);
                    }
                }
                b'Z' => {
                    return Err(match error {
                        Some(e) => e.into(),
                        None => ReplicationError::Protocol("START_REPLICATION ended without a stream".into()),
                    })
                }
                t => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected '{}' answering START_REPLICATION",
                        t as char
                    )))
                }
            }
        }
    }

    /// Sends Terminate and closes the socket.
    pub fn close(mut self) {
        let mut w = BytesMut::new();
        frontend::terminate(&mut w);
        let _ = self.write_all(&w);
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), ReplicationError> {
        self.socket.write_all(bytes).map_err(ReplicationError::Io)
    }

    /// Reads one whole message. `None` when `deadline` passed first (what was read stays
    /// buffered). Reads wait at most until the deadline (or 1 s without one, in a loop).
    fn read_frame(&mut self, deadline: Option<Instant>) -> Result<Option<Frame>, ReplicationError> {
        loop {
            if self.rbuf.len() >= 5 {
                let tag = self.rbuf[0];
                let declared = i32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
                if declared < 4 {
                    return Err(ReplicationError::Protocol(format!(
                        "'{}' message with length {declared}",
                        tag as char
                    )));
                }
                let total = declared as usize + 1;
                if total > self.max_message_bytes {
                    return Err(ReplicationError::MessageTooLarge {
                        tag: tag as char,
                        len: total,
                        limit: self.max_message_bytes,
                    });
                }
                if self.rbuf.len() >= total {
                    let bytes = self.rbuf.split_to(total);
                    return Ok(Some(Frame { tag, bytes }));
                }
                self.rbuf.reserve(total - self.rbuf.len());
            }
            let wait = match deadline {
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return Ok(None);
                    }
                    d - now
                }
                None => Duration::from_secs(1),
            };
            self.socket.set_read_timeout(wait)?;
            let len = self.rbuf.len();
            let want = (self.rbuf.capacity() - len).max(16 * 1024);
            self.rbuf.resize(len + want, 0);
            let res = self.socket.read(&mut self.rbuf[len..]);
            match res {
                Ok(0) => {
                    self.rbuf.truncate(len);
                    return Err(ReplicationError::Closed);
                }
                Ok(n) => self.rbuf.truncate(len + n),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    self.rbuf.truncate(len);
                    if deadline.is_none() {
                        continue;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.rbuf.truncate(len),
                Err(e) => {
                    self.rbuf.truncate(len);
                    return Err(ReplicationError::Io(e));
                }
            }
        }
    }
}

/// A session streaming logical replication (CopyBoth).
#[derive(Debug)]
pub struct ReplicationStream {
    conn: BlockingConnection,
}

impl ReplicationStream {
    /// The next stream message, waiting at most `wait`; `None` if nothing complete arrived.
    pub fn recv(&mut self, wait: Duration) -> Result<Option<StreamMessage>, ReplicationError> {
        let deadline = Instant::now() + wait;
        loop {
            let Some(frame) = self.conn.read_frame(Some(deadline))? else { return Ok(None) };
            match frame.tag {
                b'd' => return parse_copy_data(frame).map(Some),
                b'c' => return Err(ReplicationError::StreamEnded),
                b'E' => {
                    if let Message::ErrorResponse(body) = frame.parse()? {
                        return Err(DbError::parse(body.fields()).map_err(proto)?.into());
                    }
                }
                b'N' => {
                    if let Message::NoticeResponse(body) = frame.parse()? {
                        log_notice(body.fields());
                    }
                }
                b'S' => {}
                t => {
                    return Err(ReplicationError::Protocol(format!(
                        "unexpected '{}' in the replication stream",
                        t as char
                    )))
                }
            }
        }
    }

    /// Sends a standby status update: `write` (received), `flush` and `apply` (for a logical
    /// slot: the position the server may confirm), and whether the server should answer at once.
    pub fn send_status(&mut self, write: u64, flush: u64, apply: u64, reply: bool) -> Result<(), ReplicationError> {
        debug_assert!(apply <= flush, "applied past flushed");
        let mut w = BytesMut::with_capacity(39);
        w.put_u8(b'd');
        w.put_i32(4 + 34);
        w.put_u8(b'r');
        w.put_u64(write);
        w.put_u64(flush);
        w.put_u64(apply);
        w.put_i64(pg_now_micros());
        w.put_u8(u8::from(reply));
        self.conn.write_all(&w)
    }

    /// The server process id of this session.
    pub fn backend_pid(&self) -> i32 {
        self.conn.pid
    }

    /// Sends Terminate and closes the socket (after a final [`ReplicationStream::send_status`]).
    pub fn close(self) {
        self.conn.close();
    }
}

fn parse_copy_data(frame: Frame) -> Result<StreamMessage, ReplicationError> {
    let mut body = frame.bytes;
    body.advance(5);
    let short = || ReplicationError::Protocol("short replication message".into());
    let kind = *body.first().ok_or_else(short)?;
    match kind {
        b'w' => {
            if body.len() < 25 {
                return Err(short());
            }
            body.advance(1);
            let start = body.get_u64();
            let wal_end = body.get_u64();
            let send_time = body.get_i64();
            Ok(StreamMessage::XLogData { start, wal_end, send_time, data: body.freeze() })
        }
        b'k' => {
            if body.len() < 18 {
                return Err(short());
            }
            body.advance(1);
            let wal_end = body.get_u64();
            let send_time = body.get_i64();
            let reply_requested = body.get_u8() != 0;
            Ok(StreamMessage::Keepalive { wal_end, send_time, reply_requested })
        }
        k => Err(ReplicationError::Protocol(format!("unknown replication message '{}'", k as char))),
    }
}

fn open_socket(config: &ConnectConfig) -> Result<Socket, ReplicationError> {
    match &config.host {
        Host::Unix(dir) => {
            let path = dir.join(format!(".s.PGSQL.{}", config.port));
            Ok(Socket::Unix(UnixStream::connect(path)?))
        }
        Host::Tcp(host) => {
            let mut last = io::Error::new(io::ErrorKind::NotFound, format!("{host} resolves to no address"));
            for addr in (host.as_str(), config.port).to_socket_addrs()? {
                match TcpStream::connect_timeout(&addr, config.connect_timeout) {
                    Ok(s) => {
                        let _ = s.set_nodelay(true);
                        return Ok(Socket::Tcp(s));
                    }
                    Err(e) => last = e,
                }
            }
            Err(ReplicationError::Io(last))
        }
    }
}

fn log_notice(fields: postgres_protocol::message::backend::ErrorFields<'_>) {
    if let Ok(n) = DbError::parse(fields) {
        tracing::debug!(code = %n.code, message = %n.message, "pg notice");
    }
}

fn proto(e: io::Error) -> ReplicationError {
    ReplicationError::Protocol(e.to_string())
}

/// Now, in microseconds since 2000-01-01 UTC (the replication protocol's clock).
pub fn pg_now_micros() -> i64 {
    let since_unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    i64::try_from(since_unix.as_micros()).unwrap_or(i64::MAX) - PG_EPOCH_OFFSET_MICROS
}

/// `X/Y`, as PostgreSQL writes an LSN.
pub fn lsn_text(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn as u32)
}

/// Parses PostgreSQL's `X/Y` LSN text.
pub fn parse_lsn(text: &str) -> Option<u64> {
    let (hi, lo) = text.split_once('/')?;
    Some((u64::from(u32::from_str_radix(hi, 16).ok()?) << 32) | u64::from(u32::from_str_radix(lo, 16).ok()?))
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled (standard_conforming_strings is on since 9.1).
pub fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_data_messages_parse_and_short_ones_fail() {
        let mut m = BytesMut::new();
        m.put_u8(b'd');
        m.put_i32(4 + 25 + 3);
        m.put_u8(b'w');
        m.put_u64(10);
        m.put_u64(20);
        m.put_i64(30);
        m.put_slice(b"abc");
        let msg = parse_copy_data(Frame { tag: b'd', bytes: m }).unwrap();
        assert_eq!(
            msg,
            StreamMessage::XLogData { start: 10, wal_end: 20, send_time: 30, data: Bytes::from_static(b"abc") }
        );
        let mut k = BytesMut::new();
        k.put_u8(b'd');
        k.put_i32(4 + 5);
        k.put_slice(b"k1234");
        assert!(parse_copy_data(Frame { tag: b'd', bytes: k }).is_err());
    }

    #[test]
    fn quoting() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(parse_lsn(&lsn_text(0x16_B374_D848)), Some(0x16_B374_D848));
    }
}
