//! I/O helpers shared by HTTP and WebSocket: interruptible reads, deadline writes, the
//! per-shard read-buffer pool and the cached `Date` header.
//!
//! Owns: the only places the crate submits socket reads and writes. Invariant (io_uring
//! hygiene): an in-flight read or write is never dropped. When a deadline or an interrupt
//! fires first, the operation is cancelled through monoio's `Canceller` and then awaited to
//! completion; bytes that raced the cancel are kept, not lost. Buffers are owned and reused.

use std::cell::RefCell;
use std::future::{poll_fn, Future};
use std::io;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use monoio::buf::{IoBuf, IoBufMut};
use monoio::io::{CancelableAsyncReadRent, CancelableAsyncWriteRent, Canceller};
use monoio::time::{Instant, Sleep};

use crate::body::ReadSide;

/// Result of an interruptible read.
#[derive(Debug)]
pub(crate) enum ReadOutcome {
    /// This many bytes were appended to the buffer.
    Data(usize),
    /// The peer closed its sending side.
    Eof,
    /// The deadline passed first.
    Timeout,
    /// The interrupt fired first.
    Interrupted,
    /// Socket error.
    Error(io::Error),
}

enum Stop {
    Timeout,
    Interrupted,
}

/// Appends one read's worth of bytes to `buf` (reserving `reserve` bytes of space first),
/// giving up at `deadline` or when `interrupt` becomes ready. The read is cancelled, never
/// dropped in flight.
pub(crate) async fn read_buf<R, I>(
    io: &mut R,
    mut buf: BytesMut,
    reserve: usize,
    deadline: Option<Instant>,
    mut interrupt: I,
) -> (ReadOutcome, BytesMut)
where
    R: CancelableAsyncReadRent,
    I: FnMut(&mut Context<'_>) -> Poll<()>,
{
    if deadline.is_some_and(|d| d <= Instant::now()) {
        return (ReadOutcome::Timeout, buf);
    }
    buf.reserve(reserve.max(1));
    let len = buf.len();
    let cap = buf.capacity();
    let canceller = Canceller::new();
    let mut op = pin!(io.cancelable_read(buf.slice_mut(len..cap), canceller.handle()));
    let ((res, slice), stop) = race(op.as_mut(), canceller, deadline, &mut interrupt).await;
    (outcome(res, stop), slice.into_inner())
}

/// A timer for `deadline`, kept off the awaiting future's frame. monoio's `Sleep` is 128-byte
/// aligned (its timer entry is cache-padded), and a future holding one inline inherits that
/// alignment: every enclosing async frame pads to it, which made an idle WebSocket's read and
/// write futures about 1.7 KiB each. Boxed, an armed timer costs one 256-byte allocation and
/// the frames around it stay small — what a socket that idles for hours holds.
fn boxed_sleep(deadline: Instant) -> Pin<Box<Sleep>> {
    Box::pin(monoio::time::sleep_until(deadline))
}

/// Awaits `op` — an operation `canceller` can cancel — giving up at `deadline` or when `interrupt`
/// becomes ready. Giving up cancels the operation and still awaits its completion, so an
/// in-flight io_uring operation is never dropped; what it completed with (bytes that raced the
/// cancel included) is returned with the reason it was stopped.
async fn race<F, T, I>(
    mut op: Pin<&mut F>,
    canceller: Canceller,
    deadline: Option<Instant>,
    interrupt: &mut I,
) -> (T, Option<Stop>)
where
    F: Future<Output = T> + ?Sized,
    I: FnMut(&mut Context<'_>) -> Poll<()>,
{
    let mut sleep = deadline.map(boxed_sleep);
    let first = poll_fn(|cx| {
        if let Poll::Ready(r) = op.as_mut().poll(cx) {
            return Poll::Ready(Ok(r));
        }
        if let Some(s) = sleep.as_mut() {
            if s.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Stop::Timeout));
            }
        }
        if interrupt(cx).is_ready() {
            return Poll::Ready(Err(Stop::Interrupted));
        }
        Poll::Pending
    })
    .await;
    match first {
        Ok(done) => (done, None),
        Err(stop) => {
            let _fresh = canceller.cancel();
            (op.await, Some(stop))
        }
    }
}

/// A read that outlives the code that started it: it owns the connection's read side (socket
/// half and buffer) while in flight, so it can be handed from one owner to the next (the
/// disconnect watch hands its read to the next head read instead of cancelling it and
/// submitting a fresh one). It must be finished with [`InflightRead::finish`] (or polled to
/// completion), never dropped in flight: finishing cancels through its `Canceller` and awaits.
pub(crate) struct InflightRead {
    canceller: Canceller,
    /// Length of the buffer when the read was submitted (bytes before it were already there).
    start_len: usize,
    fut: Pin<Box<dyn Future<Output = (io::Result<usize>, ReadSide)>>>,
}

impl InflightRead {
    /// Submits (on first poll) one read into `rs.buf`'s spare capacity, reserving `reserve`
    /// bytes first.
    pub(crate) fn start(mut rs: ReadSide, reserve: usize) -> InflightRead {
        rs.buf.reserve(reserve.max(1));
        let start_len = rs.buf.len();
        let canceller = Canceller::new();
        let handle = canceller.handle();
        let fut = Box::pin(async move {
            let ReadSide { mut io, buf } = rs;
            let cap = buf.capacity();
            let (res, slice) = io.cancelable_read(buf.slice_mut(start_len..cap), handle).await;
            (res, ReadSide { io, buf: slice.into_inner() })
        });
        InflightRead { canceller, start_len, fut }
    }

    /// True if the buffer held no unconsumed bytes when the read was submitted.
    pub(crate) fn started_empty(&self) -> bool {
        self.start_len == 0
    }

    /// Polls the read; `Ready` once it completed (the read side is handed back).
    pub(crate) fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<(ReadOutcome, ReadSide)> {
        self.fut.as_mut().poll(cx).map(|(res, rs)| (outcome(res, None), rs))
    }

    /// Awaits the read, giving up at `deadline` or when `interrupt` becomes ready: the read is
    /// then cancelled and awaited (bytes that raced the cancel are kept, as in [`read_buf`]).
    pub(crate) async fn finish<I>(self, deadline: Option<Instant>, mut interrupt: I) -> (ReadOutcome, ReadSide)
    where
        I: FnMut(&mut Context<'_>) -> Poll<()>,
    {
        let InflightRead { canceller, mut fut, .. } = self;
        let ((res, rs), stop) = race(fut.as_mut(), canceller, deadline, &mut interrupt).await;
        (outcome(res, stop), rs)
    }

    /// Cancels the read and awaits its completion.
    pub(crate) async fn cancel(self) -> (ReadOutcome, ReadSide) {
        self.finish(None, |_| Poll::Ready(())).await
    }
}

fn outcome(res: io::Result<usize>, stop: Option<Stop>) -> ReadOutcome {
    match (res, stop) {
        (Ok(n), _) if n > 0 => ReadOutcome::Data(n),
        (Ok(_), None) => ReadOutcome::Eof,
        (_, Some(Stop::Timeout)) => ReadOutcome::Timeout,
        (_, Some(Stop::Interrupted)) => ReadOutcome::Interrupted,
        (Err(e), None) => ReadOutcome::Error(e),
    }
}

/// Why a write did not complete.
#[derive(Debug)]
pub(crate) enum WriteError {
    Timeout,
    Interrupted,
    #[allow(dead_code)] // read through Debug in logs
    Io(io::Error),
}

/// Writes all of `buf`, each write bounded by `timeout` of no progress and by `abort`.
pub(crate) async fn write_all<W, T, A>(
    io: &mut W,
    buf: T,
    timeout: Duration,
    mut abort: A,
) -> (Result<(), WriteError>, T)
where
    W: CancelableAsyncWriteRent,
    T: IoBuf + 'static,
    A: FnMut(&mut Context<'_>) -> Poll<Option<Instant>>,
{
    let total = buf.bytes_init();
    let mut written = 0usize;
    let mut buf = buf;
    while written < total {
        let canceller = Canceller::new();
        let mut op = pin!(io.cancelable_write(buf.slice(written..total), canceller.handle()));
        let mut sleep = boxed_sleep(Instant::now() + timeout);
        let mut abort_sleep: Option<(Instant, Pin<Box<Sleep>>)> = None;
        let first = poll_fn(|cx| {
            if let Poll::Ready(r) = op.as_mut().poll(cx) {
                return Poll::Ready(Ok(r));
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(Stop::Timeout));
            }
            // `abort` yields Ready(None) to stop now, Ready(Some(t)) for a hard deadline.
            match abort(cx) {
                Poll::Ready(None) => return Poll::Ready(Err(Stop::Interrupted)),
                Poll::Ready(Some(t)) => {
                    if abort_sleep.as_ref().is_none_or(|(at, _)| *at != t) {
                        abort_sleep = Some((t, boxed_sleep(t)));
                    }
                    if let Some((_, s)) = abort_sleep.as_mut() {
                        if s.as_mut().poll(cx).is_ready() {
                            return Poll::Ready(Err(Stop::Interrupted));
                        }
                    }
                }
                Poll::Pending => {}
            }
            Poll::Pending
        })
        .await;
        let (stop, (res, slice)) = match first {
            Ok(done) => (None, done),
            Err(stop) => {
                let _fresh = canceller.cancel();
                (Some(stop), op.await)
            }
        };
        buf = slice.into_inner();
        match res {
            Ok(0) => return (Err(WriteError::Io(io::ErrorKind::WriteZero.into())), buf),
            Ok(n) => written += n,
            Err(e) if stop.is_none() => return (Err(WriteError::Io(e)), buf),
            Err(_) => {}
        }
        match stop {
            Some(_) if written >= total => break,
            Some(Stop::Timeout) => return (Err(WriteError::Timeout), buf),
            Some(Stop::Interrupted) => return (Err(WriteError::Interrupted), buf),
            None => {}
        }
    }
    (Ok(()), buf)
}

/// A write-side abort condition that never fires.
pub(crate) fn no_abort(_: &mut Context<'_>) -> Poll<Option<Instant>> {
    Poll::Pending
}

/// A read-side interrupt that never fires.
pub(crate) fn no_interrupt(_: &mut Context<'_>) -> Poll<()> {
    Poll::Pending
}

const POOL_MAX: usize = 256;

thread_local! {
    static READ_POOL: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// A read buffer larger than this many read sizes is not kept once drained: not pooled here,
/// and replaced by a fresh one in `crate::ws` (a large frame's allocation is let go).
pub(crate) const LARGE_READ_FACTOR: usize = 4;

/// Takes a read buffer with at least `size` bytes of capacity from this shard's pool.
pub(crate) fn take_read_buffer(size: usize) -> BytesMut {
    READ_POOL
        .with(|p| p.borrow_mut().pop())
        .filter(|b| b.capacity() >= size)
        .unwrap_or_else(|| BytesMut::with_capacity(size))
}

/// Returns a read buffer to the pool (kept only if it is a plain, right-sized buffer).
pub(crate) fn give_back_read_buffer(mut buf: BytesMut, size: usize) {
    buf.clear();
    if buf.capacity() < size || buf.capacity() > size * LARGE_READ_FACTOR {
        return;
    }
    READ_POOL.with(|p| {
        let mut p = p.borrow_mut();
        if p.len() < POOL_MAX {
            p.push(buf);
        }
    });
}

thread_local! {
    static DATE: RefCell<(u64, Bytes)> = const { RefCell::new((u64::MAX, Bytes::new())) };
}

/// The current `Date` header value (IMF-fixdate), formatted at most once per second per shard.
pub fn http_date() -> Bytes {
    let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    DATE.with(|d| {
        let mut d = d.borrow_mut();
        if d.0 != secs {
            *d = (secs, Bytes::from(format_http_date(secs)));
        }
        d.1.clone()
    })
}

/// The proleptic Gregorian (year, month 1–12, day 1–31) of a count of days since 1970-01-01
/// (Howard Hinnant's civil-from-days; any `i64` day count of a real date).
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since 1970-01-01 of a proleptic Gregorian date: the inverse of [`civil_from_days`].
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Formats seconds since the Unix epoch as `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn format_http_date(secs: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    let (y, mo, d) = civil_from_days(days as i64);
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        DAYS[(days % 7) as usize],
        d,
        MONTHS[(mo - 1) as usize],
        y,
        h,
        m,
        s
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn date_format() {
        assert_eq!(super::format_http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(super::format_http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    }
}
