//! Sans-I/O RFC 6455 frame codec for the server side.
//!
//! Owns: parsing client frame headers, unmasking, reassembling fragmented messages and
//! validating them; encoding (unmasked) server frames. Invariants: a frame is only consumed when
//! it is complete and its payload is at most `max_frame` bytes, so the read buffer never holds
//! more than one frame plus one read; a reassembled message is at most `max_message` bytes; client
//! frames must be masked, use no reserved bits or opcodes, and control frames are unfragmented and
//! at most 125 bytes (else close 1002); text and close reasons are valid UTF-8 (else 1007);
//! oversize frames and messages close with 1009.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Frame opcodes defined by RFC 6455.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    /// Continuation of a fragmented message.
    Continuation,
    /// Text data frame.
    Text,
    /// Binary data frame.
    Binary,
    /// Connection close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl OpCode {
    fn from_u8(b: u8) -> Option<OpCode> {
        Some(match b {
            0 => OpCode::Continuation,
            1 => OpCode::Text,
            2 => OpCode::Binary,
            8 => OpCode::Close,
            9 => OpCode::Ping,
            10 => OpCode::Pong,
            _ => return None,
        })
    }

    fn as_u8(self) -> u8 {
        match self {
            OpCode::Continuation => 0,
            OpCode::Text => 1,
            OpCode::Binary => 2,
            OpCode::Close => 8,
            OpCode::Ping => 9,
            OpCode::Pong => 10,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, OpCode::Close | OpCode::Ping | OpCode::Pong)
    }
}

/// WebSocket close codes used by this crate.
pub mod close_code {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// Endpoint going away (shutdown, idle).
    pub const GOING_AWAY: u16 = 1001;
    /// Protocol error.
    pub const PROTOCOL: u16 = 1002;
    /// Data type the endpoint cannot accept.
    pub const UNSUPPORTED: u16 = 1003;
    /// Payload inconsistent with its type (invalid UTF-8 text).
    pub const INVALID_PAYLOAD: u16 = 1007;
    /// Policy violation (used for slow consumers).
    pub const POLICY: u16 = 1008;
    /// Message too big.
    pub const TOO_BIG: u16 = 1009;
    /// Unexpected server condition.
    pub const INTERNAL: u16 = 1011;
}

/// A protocol violation by the peer; [`WsProtocolError::close_code`] is the code to close with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WsProtocolError {
    /// Framing rules broken (close 1002).
    #[error("websocket protocol error: {0}")]
    Protocol(&'static str),
    /// Text or close reason is not UTF-8 (close 1007).
    #[error("invalid UTF-8 in text message")]
    InvalidUtf8,
    /// Frame or message over the configured limit (close 1009).
    #[error("message too big")]
    TooBig,
}

impl WsProtocolError {
    /// The close code this violation is answered with.
    pub fn close_code(&self) -> u16 {
        match self {
            WsProtocolError::Protocol(_) => close_code::PROTOCOL,
            WsProtocolError::InvalidUtf8 => close_code::INVALID_PAYLOAD,
            WsProtocolError::TooBig => close_code::TOO_BIG,
        }
    }
}

/// Bytes that are valid UTF-8 (cheap to clone, zero-copy from the read buffer).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// Validates `b` as UTF-8.
    pub fn try_from_bytes(b: Bytes) -> Result<Utf8Bytes, std::str::Utf8Error> {
        std::str::from_utf8(&b)?;
        Ok(Utf8Bytes(b))
    }

    /// From a static string.
    pub const fn from_static(s: &'static str) -> Utf8Bytes {
        Utf8Bytes(Bytes::from_static(s.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor validates (or starts from a `str`), and the bytes are
        // immutable.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Into the underlying bytes.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }
}

impl std::ops::Deref for Utf8Bytes {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Self {
        Utf8Bytes(Bytes::from(s))
    }
}

impl From<&'static str> for Utf8Bytes {
    fn from(s: &'static str) -> Self {
        Utf8Bytes::from_static(s)
    }
}

/// A close frame's payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// Close code.
    pub code: u16,
    /// Reason (≤ 123 bytes on the wire).
    pub reason: Utf8Bytes,
}

/// A WebSocket message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A complete text message (validated UTF-8).
    Text(Utf8Bytes),
    /// A complete binary message.
    Binary(Bytes),
    /// A ping (answered automatically when received).
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame (with code, if the peer sent one).
    Close(Option<CloseFrame>),
}

impl Message {
    /// Text message from anything string-like.
    pub fn text(s: impl Into<Utf8Bytes>) -> Message {
        Message::Text(s.into())
    }

    /// Binary message.
    pub fn binary(b: impl Into<Bytes>) -> Message {
        Message::Binary(b.into())
    }

    /// Payload length in bytes.
    pub fn len(&self) -> usize {
        match self {
            Message::Text(t) => t.len(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
            Message::Close(c) => c.as_ref().map_or(0, |c| 2 + c.reason.len()),
        }
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Final fragment.
    pub fin: bool,
    /// Opcode.
    pub opcode: OpCode,
    /// Masking key (client frames must have one).
    pub mask: Option<[u8; 4]>,
    /// Payload length.
    pub len: u64,
}

/// Parses a client frame header at the start of `buf`: `Ok(None)` if incomplete.
pub fn parse_frame_header(buf: &[u8], max_frame: u64) -> Result<Option<(FrameHeader, usize)>, WsProtocolError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 {
        return Err(WsProtocolError::Protocol("reserved bits set"));
    }
    let opcode = OpCode::from_u8(b0 & 0x0f).ok_or(WsProtocolError::Protocol("reserved opcode"))?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(WsProtocolError::Protocol("client frame not masked"));
    }
    let (len, mut at) = match b1 & 0x7f {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            let n = u64::from_be_bytes(b);
            if n >> 63 != 0 {
                return Err(WsProtocolError::Protocol("payload length high bit set"));
            }
            (n, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || len > 125) {
        return Err(WsProtocolError::Protocol("invalid control frame"));
    }
    if len > max_frame {
        return Err(WsProtocolError::TooBig);
    }
    if buf.len() < at + 4 {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    Ok(Some((FrameHeader { fin, opcode, mask: Some(mask), len }, at)))
}

/// XORs `data` with the masking key (in place).
pub fn apply_mask(data: &mut [u8], key: [u8; 4]) {
    let k8 = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for c in &mut chunks {
        let mut w = [0u8; 8];
        w.copy_from_slice(c);
        c.copy_from_slice(&(u64::from_ne_bytes(w) ^ k8).to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i & 3];
    }
}

/// Writes an unmasked (server) frame header.
pub fn encode_header(out: &mut BytesMut, fin: bool, opcode: OpCode, len: usize) {
    out.put_u8(if fin { 0x80 } else { 0 } | opcode.as_u8());
    if len < 126 {
        out.put_u8(len as u8);
    } else if len <= u16::MAX as usize {
        out.put_u8(126);
        out.put_u16(len as u16);
    } else {
        out.put_u8(127);
        out.put_u64(len as u64);
    }
}

/// Writes a masked (client) frame: used by tests and fuzzers to build valid input.
pub fn encode_client_frame(out: &mut BytesMut, fin: bool, opcode: OpCode, payload: &[u8], key: [u8; 4]) {
    let start = out.len();
    encode_header(out, fin, opcode, payload.len());
    out[start + 1] |= 0x80;
    out.put_slice(&key);
    let p = out.len();
    out.put_slice(payload);
    apply_mask(&mut out[p..], key);
}

/// Close payload: code + reason truncated to 123 bytes at a char boundary.
pub(crate) fn close_payload(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut b = BytesMut::with_capacity(2 + end);
    b.put_u16(code);
    b.put_slice(&reason.as_bytes()[..end]);
    b.freeze()
}

fn valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// One decoded event from the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A complete data message (`Text` or `Binary`).
    Message(Message),
    /// A ping with its payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// The peer's close frame.
    Close(Option<CloseFrame>),
}

/// Incremental decoder of client frames into messages.
#[derive(Debug)]
pub struct WsDecoder {
    max_frame: usize,
    max_message: usize,
    frag: Option<(bool, BytesMut)>,
}

impl WsDecoder {
    /// A decoder with frame and message size limits.
    pub fn new(max_frame: usize, max_message: usize) -> WsDecoder {
        WsDecoder { max_frame, max_message, frag: None }
    }

    /// Decodes the next event from the front of `buf`; `Ok(None)` when more bytes are needed.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, WsProtocolError> {
        loop {
            let Some((h, hl)) = parse_frame_header(buf, self.max_frame as u64)? else {
                return Ok(None);
            };
            let len = h.len as usize; // ≤ max_frame, fits
            if buf.len() < hl + len {
                return Ok(None);
            }
            let mut payload = buf.split_to(hl + len);
            payload.advance(hl);
            if let Some(key) = h.mask {
                apply_mask(&mut payload, key);
            }
            match h.opcode {
                OpCode::Ping => return Ok(Some(Incoming::Ping(payload.freeze()))),
                OpCode::Pong => return Ok(Some(Incoming::Pong(payload.freeze()))),
                OpCode::Close => return parse_close(payload.freeze()).map(|c| Some(Incoming::Close(c))),
                OpCode::Text | OpCode::Binary => {
                    if self.frag.is_some() {
                        return Err(WsProtocolError::Protocol("data frame inside a fragmented message"));
                    }
                    if len > self.max_message {
                        return Err(WsProtocolError::TooBig);
                    }
                    let text = h.opcode == OpCode::Text;
                    if h.fin {
                        return finish(text, payload.freeze()).map(Some);
                    }
                    self.frag = Some((text, payload));
                }
                OpCode::Continuation => {
                    let Some((text, acc)) = self.frag.as_mut() else {
                        return Err(WsProtocolError::Protocol("continuation without a message"));
                    };
                    if acc.len() + len > self.max_message {
                        return Err(WsProtocolError::TooBig);
                    }
                    acc.extend_from_slice(&payload);
                    if h.fin {
                        let text = *text;
                        let acc = self.frag.take().map(|(_, a)| a).unwrap_or_default();
                        return finish(text, acc.freeze()).map(Some);
                    }
                }
            }
        }
    }
}

fn finish(text: bool, payload: Bytes) -> Result<Incoming, WsProtocolError> {
    if text {
        let t = Utf8Bytes::try_from_bytes(payload).map_err(|_| WsProtocolError::InvalidUtf8)?;
        Ok(Incoming::Message(Message::Text(t)))
    } else {
        Ok(Incoming::Message(Message::Binary(payload)))
    }
}

fn parse_close(p: Bytes) -> Result<Option<CloseFrame>, WsProtocolError> {
    match p.len() {
        0 => Ok(None),
        1 => Err(WsProtocolError::Protocol("close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            if !valid_close_code(code) {
                return Err(WsProtocolError::Protocol("invalid close code"));
            }
            let reason = Utf8Bytes::try_from_bytes(p.slice(2..)).map_err(|_| WsProtocolError::InvalidUtf8)?;
            Ok(Some(CloseFrame { code, reason }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_fragmented_text() {
        let mut b = BytesMut::new();
        encode_client_frame(&mut b, false, OpCode::Text, b"hel", [1, 2, 3, 4]);
        encode_client_frame(&mut b, true, OpCode::Ping, b"p", [9, 9, 9, 9]);
        encode_client_frame(&mut b, true, OpCode::Continuation, b"lo", [5, 6, 7, 8]);
        let mut d = WsDecoder::new(1024, 1024);
        assert_eq!(d.decode(&mut b).unwrap(), Some(Incoming::Ping(Bytes::from_static(b"p"))));
        assert_eq!(d.decode(&mut b).unwrap(), Some(Incoming::Message(Message::text("hello"))));
        assert_eq!(d.decode(&mut b).unwrap(), None);
    }

    #[test]
    fn rejects_violations() {
        let mut d = WsDecoder::new(16, 32);
        let mut b = BytesMut::from(&[0x81u8, 0x01, b'a'][..]);
        assert_eq!(d.decode(&mut b), Err(WsProtocolError::Protocol("client frame not masked")));
        let mut b = BytesMut::new();
        encode_client_frame(&mut b, true, OpCode::Binary, &[0u8; 17], [0; 4]);
        assert_eq!(WsDecoder::new(16, 32).decode(&mut b), Err(WsProtocolError::TooBig));
        let mut b = BytesMut::new();
        encode_client_frame(&mut b, true, OpCode::Text, &[0xff, 0xfe], [1; 4]);
        assert_eq!(WsDecoder::new(16, 32).decode(&mut b), Err(WsProtocolError::InvalidUtf8));
        let mut b = BytesMut::from(&[0xC1u8, 0x80, 0, 0, 0, 0][..]);
        assert!(matches!(WsDecoder::new(16, 32).decode(&mut b), Err(WsProtocolError::Protocol(_))));
    }
}
