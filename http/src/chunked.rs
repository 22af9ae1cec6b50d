//! Sans-I/O decoder for `Transfer-Encoding: chunked` request bodies.
//!
//! Owns: the chunked state machine. It takes bytes from the front of the connection's read
//! buffer and hands back chunk data as zero-copy [`Bytes`] split off that buffer. Invariants:
//! a chunk-size line is at most `max_line` bytes and must end in CRLF (bare LF is refused, as a
//! request-smuggling guard); chunk sizes fit in a `u64`; the trailer section is at most
//! `max_trailers` bytes and is discarded; after `Done` nothing more is consumed.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::ChunkError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size,
    Data(u64),
    DataCrlf,
    Trailers(usize),
    Done,
}

/// One step of decoding.
#[derive(Debug, PartialEq, Eq)]
pub enum Chunk {
    /// Body bytes (never empty).
    Data(Bytes),
    /// The buffer holds no complete next element; read more and call again.
    NeedMore,
    /// The body is complete (last chunk and trailers consumed).
    Done,
}

/// Incremental chunked-body decoder.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    max_line: usize,
    max_trailers: usize,
}

impl ChunkedDecoder {
    /// A decoder with the given chunk-size-line and trailer limits.
    pub fn new(max_line: usize, max_trailers: usize) -> Self {
        ChunkedDecoder { state: State::Size, max_line, max_trailers }
    }

    /// True once the terminating chunk and trailers were consumed.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Bytes of chunk data still expected in the current chunk (a hint for read sizes).
    pub fn remaining_in_chunk(&self) -> u64 {
        match self.state {
            State::Data(n) => n,
            _ => 0,
        }
    }

    /// Decodes the next element from the front of `buf`, consuming what it decodes.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Chunk, ChunkError> {
        loop {
            match self.state {
                State::Done => return Ok(Chunk::Done),
                State::Size => {
                    let Some(nl) = find_crlf(buf, self.max_line)? else {
                        return Ok(Chunk::NeedMore);
                    };
                    let size = parse_size_line(&buf[..nl])?;
                    buf.advance(nl + 2);
                    self.state = if size == 0 { State::Trailers(0) } else { State::Data(size) };
                }
                State::Data(n) => {
                    if buf.is_empty() {
                        return Ok(Chunk::NeedMore);
                    }
                    let take = usize::try_from(n).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = n - take as u64;
                    self.state = if left == 0 { State::DataCrlf } else { State::Data(left) };
                    return Ok(Chunk::Data(data));
                }
                State::DataCrlf => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(ChunkError::MissingCrlf);
                        }
                        return Ok(Chunk::NeedMore);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(ChunkError::MissingCrlf);
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers(seen) => {
                    let budget = self.max_trailers.saturating_sub(seen);
                    let Some(nl) = find_crlf(buf, budget).map_err(|_| ChunkError::Trailers)? else {
                        return Ok(Chunk::NeedMore);
                    };
                    let line_empty = nl == 0;
                    if !line_empty && !buf[..nl].iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b) || b >= 0x80) {
                        return Err(ChunkError::Trailers);
                    }
                    buf.advance(nl + 2);
                    if line_empty {
                        self.state = State::Done;
                        return Ok(Chunk::Done);
                    }
                    let seen = seen + nl + 2;
                    if seen > self.max_trailers {
                        return Err(ChunkError::Trailers);
                    }
                    self.state = State::Trailers(seen);
                }
            }
        }
    }
}

/// Position of the CRLF ending the first line of `buf`, if it is there within `max` bytes.
fn find_crlf(buf: &[u8], max: usize) -> Result<Option<usize>, ChunkError> {
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(0) => Err(ChunkError::InvalidSize),
        Some(i) if window[i - 1] == b'\r' => Ok(Some(i - 1)),
        Some(_) => Err(ChunkError::InvalidSize),
        None if buf.len() > max.saturating_add(1) => Err(ChunkError::LineTooLong),
        None => Ok(None),
    }
}

/// `1*HEXDIG [ BWS ";" ext ]` with no control characters.
fn parse_size_line(line: &[u8]) -> Result<u64, ChunkError> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(ChunkError::InvalidSize);
    }
    let mut size: u64 = 0;
    for &b in &line[..digits] {
        let d = (b as char).to_digit(16).ok_or(ChunkError::InvalidSize)?;
        size = size.checked_mul(16).and_then(|s| s.checked_add(u64::from(d))).ok_or(ChunkError::InvalidSize)?;
    }
    let rest = &line[digits..];
    let rest_trim = rest.trim_ascii_start();
    if !rest_trim.is_empty() {
        if rest_trim[0] != b';' {
            return Err(ChunkError::InvalidSize);
        }
        if !rest_trim.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)) {
            return Err(ChunkError::InvalidSize);
        }
    } else if !rest.is_empty() {
        return Err(ChunkError::InvalidSize);
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[u8]) -> Result<(Vec<u8>, bool), ChunkError> {
        let mut d = ChunkedDecoder::new(64, 256);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        loop {
            match d.decode(&mut buf)? {
                Chunk::Data(b) => out.extend_from_slice(&b),
                Chunk::NeedMore => return Ok((out, false)),
                Chunk::Done => return Ok((out, true)),
            }
        }
    }

    #[test]
    fn decodes_with_extensions_and_trailers() {
        let (out, done) = all(b"5;name=v\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n").unwrap();
        assert_eq!(out, b"hello world");
        assert!(done);
    }

    #[test]
    fn partial_input_needs_more() {
        let (out, done) = all(b"5\r\nhel").unwrap();
        assert_eq!(out, b"hel");
        assert!(!done);
    }

    #[test]
    fn rejects_bad_input() {
        assert!(all(b"zz\r\n").is_err());
        assert!(all(b"5\nhello").is_err());
        assert!(all(b"5\r\nhelloXX").is_err());
        assert!(all(b"fffffffffffffffff\r\n").is_err());
        assert!(all(&[b'1'; 200]).is_err());
        assert!(all(b"5 x\r\n").is_err());
    }
}
