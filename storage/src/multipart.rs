//! A sans-IO streaming parser of `multipart/form-data` request bodies (RFC 7578 over RFC 2046),
//! as storage-js sends uploads: text fields, then a file part whose field name may be empty.
//!
//! Owns: [`boundary`] (the boundary of a `Content-Type`), [`Parser`] (bytes in, [`Event`]s out)
//! and its [`Limits`]. It does no I/O: the caller appends what it read to a `BytesMut` and calls
//! [`Parser::parse`] until it answers `Ok(None)`, then reads more.
//!
//! Invariants: a part's body is never buffered — each `Data` is split off the caller's buffer
//! without a copy, and when `parse` wants more input the buffer holds at most
//! `max(max_header_bytes, delimiter length)` bytes (the tail that could begin a delimiter, or an
//! unfinished header block), so memory is bounded whatever the size of a file; a `Data` is never
//! empty and never holds a byte of a delimiter; nothing follows `End`; an error is final (every
//! later call answers it again).

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem::Finder;

/// The boundary of a `Content-Type: multipart/form-data; boundary=...` value: quoted or not, the
/// media type in any case, other parameters ignored. `None` when the type is another one or the
/// boundary is missing or not RFC 2046's (1 to 70 of its characters, not ending with a space).
pub fn boundary(content_type: &str) -> Option<String> {
    let (media_type, mut params) = Params::after_item(content_type);
    if !media_type.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let boundary = params.find_map(|param| match param {
        Ok((key, value)) if key.eq_ignore_ascii_case("boundary") => Some(Ok(value)),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    })?;
    boundary.ok().filter(|b| valid_boundary(b))
}

/// RFC 2046's `boundary := 0*69<bchars> bcharsnospace`.
fn valid_boundary(boundary: &str) -> bool {
    let bchar = |c: u8| c.is_ascii_alphanumeric() || b"'()+_,-./:=? ".contains(&c);
    (1..=70).contains(&boundary.len()) && boundary.bytes().all(bchar) && !boundary.ends_with(' ')
}

/// What one part declares about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartHead {
    /// The form field's name from `Content-Disposition` (storage-js sends the file's as `""`).
    pub name: String,
    /// Present for a file part: `filename*` (RFC 5987, UTF-8) when given, else `filename`.
    pub filename: Option<String>,
    /// The part's own `Content-Type`, as sent.
    pub content_type: Option<String>,
}

/// What [`Parser::parse`] read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A new part's headers were read.
    Part(PartHead),
    /// Bytes of the current part's body (never empty, never any of the delimiter).
    Data(Bytes),
    /// The current part ended.
    PartEnd,
    /// The closing delimiter was read; anything after it (the epilogue) is ignored.
    End,
}

/// Why a body is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MultipartError {
    #[error("The multipart body ended before its closing boundary.")]
    Truncated,
    #[error("The multipart body has too much text before its first boundary.")]
    PreambleTooLarge,
    #[error("A multipart part's headers are too large.")]
    HeadersTooLarge,
    #[error("A multipart part has too many headers.")]
    TooManyHeaders,
    #[error("The multipart body has too many parts.")]
    TooManyParts,
    #[error("A multipart boundary is followed by unexpected bytes.")]
    MalformedDelimiter,
    #[error("A multipart part has a malformed header.")]
    MalformedHeader,
    #[error("A multipart part is not form-data with a field name or a file name.")]
    NotFormData,
}

/// The bounds on what a body may make the parser hold or count.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A part's header block, its closing blank line and the padding after its delimiter
    /// included (default 8 KiB).
    pub max_header_bytes: usize,
    /// Header lines in one part (default 16).
    pub max_headers: usize,
    /// Parts in the body (default 64).
    pub max_parts: usize,
    /// Bytes before the first delimiter (default 8 KiB).
    pub max_preamble_bytes: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_header_bytes: 8 * 1024, max_headers: 16, max_parts: 64, max_preamble_bytes: 8 * 1024 }
    }
}

/// Where the parser is in the body.
#[derive(Debug, Clone)]
enum State {
    /// Before the first delimiter; `discarded` preamble bytes were dropped (0: none consumed, so
    /// the body may still open with the delimiter's `--boundary` without its CRLF).
    Preamble {
        discarded: usize,
    },
    /// Just past a `--boundary`: `--` (the close) or transport padding and CRLF follow.
    Delimiter,
    /// In a header block: the lines before `scanned` are complete, `lines` of them.
    Headers {
        scanned: usize,
        lines: usize,
    },
    Body,
    Done,
    Failed(MultipartError),
}

/// What one state's step did.
enum Step {
    Emit(Event),
    /// Needs more input.
    More,
    /// Changed state; step again.
    Again,
}

/// Where the next delimiter is in a buffer.
enum Scan {
    /// The delimiter (its CRLF) starts here.
    Delimiter(usize),
    /// No delimiter; these first bytes cannot be part of one.
    Clear(usize),
}

/// A streaming `multipart/form-data` parser for one body.
#[derive(Debug, Clone)]
pub struct Parser {
    /// Finds the delimiter `\r\n--boundary`; its needle is the delimiter.
    finder: Finder<'static>,
    limits: Limits,
    parts: usize,
    state: State,
}

impl Parser {
    /// A parser for the boundary [`boundary`] read, with the default limits.
    pub fn new(boundary: &str) -> Parser {
        Parser::with_limits(boundary, Limits::default())
    }

    /// A parser for the boundary [`boundary`] read, with these limits.
    pub fn with_limits(boundary: &str, limits: Limits) -> Parser {
        let delimiter = [b"\r\n--", boundary.as_bytes()].concat();
        Parser {
            finder: Finder::new(&delimiter).into_owned(),
            limits,
            parts: 0,
            state: State::Preamble { discarded: 0 },
        }
    }

    /// Parses what `buf` holds, consuming what was parsed. `Ok(None)`: more input is needed
    /// (append the next chunk to `buf` and call again); after `End`, every call drops what `buf`
    /// holds and answers `Ok(None)`.
    pub fn parse(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, MultipartError> {
        let result = self.run(buf);
        match &result {
            Err(e) => self.state = State::Failed(e.clone()),
            Ok(None) => debug_assert!(buf.len() <= self.held_bound(), "held {} bytes", buf.len()),
            Ok(Some(Event::Data(data))) => debug_assert!(!data.is_empty()),
            Ok(Some(_)) => {}
        }
        result
    }

    /// Call when the input ended: `Err(Truncated)` unless `End` was returned (or the error
    /// `parse` returned).
    pub fn finish(&self) -> Result<(), MultipartError> {
        match &self.state {
            State::Done => Ok(()),
            State::Failed(e) => Err(e.clone()),
            _ => Err(MultipartError::Truncated),
        }
    }

    /// The most `buf` holds when `parse` wants more input.
    fn held_bound(&self) -> usize {
        self.limits.max_header_bytes.max(self.delimiter().len())
    }

    fn delimiter(&self) -> &[u8] {
        self.finder.needle()
    }

    fn run(&mut self, buf: &mut BytesMut) -> Result<Option<Event>, MultipartError> {
        loop {
            let step = match self.state {
                State::Preamble { discarded } => self.preamble(buf, discarded)?,
                State::Delimiter => self.after_delimiter(buf)?,
                State::Headers { scanned, lines } => self.headers(buf, scanned, lines)?,
                State::Body => self.body(buf),
                State::Done => {
                    buf.clear();
                    Step::More
                }
                State::Failed(ref e) => return Err(e.clone()),
            };
            match step {
                Step::Emit(event) => return Ok(Some(event)),
                Step::More => return Ok(None),
                Step::Again => {}
            }
        }
    }

    /// Drops the preamble up to the first delimiter, holding back only what could begin one.
    fn preamble(&mut self, buf: &mut BytesMut, discarded: usize) -> Result<Step, MultipartError> {
        if discarded == 0 {
            // RFC 2046: the first delimiter's CRLF may be the body's start, i.e. absent.
            let dash_boundary = &self.delimiter()[2..];
            if buf.starts_with(dash_boundary) {
                buf.advance(dash_boundary.len());
                self.state = State::Delimiter;
                return Ok(Step::Again);
            }
            if dash_boundary.starts_with(buf) {
                return Ok(Step::More);
            }
        }
        let (skip, found) = match self.scan(buf) {
            Scan::Delimiter(at) => (at, true),
            Scan::Clear(n) => (n, false),
        };
        let discarded = discarded + skip;
        if discarded > self.limits.max_preamble_bytes {
            return Err(MultipartError::PreambleTooLarge);
        }
        if found {
            buf.advance(skip + self.delimiter().len());
            self.state = State::Delimiter;
            return Ok(Step::Again);
        }
        buf.advance(skip);
        self.state = State::Preamble { discarded };
        Ok(Step::More)
    }

    /// After `--boundary`: `--` ends the body; else transport padding, CRLF and a new part.
    fn after_delimiter(&mut self, buf: &mut BytesMut) -> Result<Step, MultipartError> {
        match buf.first() {
            None => return Ok(Step::More),
            Some(b'-') => {
                return match buf.get(1) {
                    None => Ok(Step::More),
                    Some(b'-') => {
                        buf.clear();
                        self.state = State::Done;
                        Ok(Step::Emit(Event::End))
                    }
                    Some(_) => Err(MultipartError::MalformedDelimiter),
                };
            }
            Some(_) => {}
        }
        let padding = buf.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(buf.len());
        let line_end = match &buf[padding..] {
            [b'\r', b'\n', ..] => padding + 2,
            [] | [b'\r'] if buf.len() <= self.limits.max_header_bytes => return Ok(Step::More),
            [] | [b'\r'] => return Err(MultipartError::HeadersTooLarge),
            _ => return Err(MultipartError::MalformedDelimiter),
        };
        self.parts += 1;
        if self.parts > self.limits.max_parts {
            return Err(MultipartError::TooManyParts);
        }
        buf.advance(line_end);
        self.state = State::Headers { scanned: 0, lines: 0 };
        Ok(Step::Again)
    }

    /// Reads a header block up to its blank line (CRLF, or a bare LF tolerated), resuming the
    /// scan where the last call stopped so a block fed byte by byte is scanned once.
    fn headers(&mut self, buf: &mut BytesMut, mut scanned: usize, mut lines: usize) -> Result<Step, MultipartError> {
        let max = self.limits.max_header_bytes;
        while let Some(newline) = memchr::memchr(b'\n', &buf[scanned..]) {
            let next = scanned + newline + 1;
            if next > max {
                return Err(MultipartError::HeadersTooLarge);
            }
            if matches!(&buf[scanned..next - 1], b"" | b"\r") {
                let block = buf.split_to(next);
                let head = part_head(&block)?;
                self.state = State::Body;
                return Ok(Step::Emit(Event::Part(head)));
            }
            lines += 1;
            if lines > self.limits.max_headers {
                return Err(MultipartError::TooManyHeaders);
            }
            scanned = next;
        }
        // A blank line arriving later would end the block past `max`.
        if buf.len() >= max {
            return Err(MultipartError::HeadersTooLarge);
        }
        self.state = State::Headers { scanned, lines };
        Ok(Step::More)
    }

    /// Hands out as much of the body as cannot be a delimiter; at a delimiter, ends the part.
    fn body(&mut self, buf: &mut BytesMut) -> Step {
        match self.scan(buf) {
            Scan::Delimiter(0) => {
                buf.advance(self.delimiter().len());
                self.state = State::Delimiter;
                Step::Emit(Event::PartEnd)
            }
            Scan::Clear(0) => Step::More,
            Scan::Delimiter(n) | Scan::Clear(n) => Step::Emit(Event::Data(buf.split_to(n).freeze())),
        }
    }

    /// The next delimiter in `buf`, or how much of `buf` cannot begin one: all of it but a tail
    /// shorter than the delimiter that is a prefix of it (a delimiter starts with CR, so only a
    /// tail starting at a CR can be one).
    fn scan(&self, buf: &[u8]) -> Scan {
        if let Some(at) = self.finder.find(buf) {
            return Scan::Delimiter(at);
        }
        let delimiter = self.delimiter();
        let tail = buf.len().saturating_sub(delimiter.len() - 1);
        let held =
            memchr::memchr_iter(b'\r', &buf[tail..]).map(|i| tail + i).find(|&i| delimiter.starts_with(&buf[i..]));
        Scan::Clear(held.unwrap_or(buf.len()))
    }
}

/// The head of a part from its header block (every line ends with LF, the last one blank).
fn part_head(block: &[u8]) -> Result<PartHead, MultipartError> {
    let mut disposition = None;
    let mut content_type = None;
    for line in block.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let colon = memchr::memchr(b':', line).ok_or(MultipartError::MalformedHeader)?;
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| b.is_ascii_graphic()) || value.contains(&b'\r') {
            return Err(MultipartError::MalformedHeader);
        }
        let slot = if name.eq_ignore_ascii_case(b"content-disposition") {
            &mut disposition
        } else if name.eq_ignore_ascii_case(b"content-type") {
            &mut content_type
        } else {
            continue;
        };
        let value = std::str::from_utf8(value).map_err(|_| MultipartError::MalformedHeader)?;
        if slot.replace(value.to_owned()).is_some() {
            return Err(MultipartError::MalformedHeader);
        }
    }
    let (name, filename) = form_data(&disposition.ok_or(MultipartError::NotFormData)?)?;
    Ok(PartHead { name, filename, content_type })
}

/// The field name and file name of a `Content-Disposition: form-data; name=...` value.
fn form_data(value: &str) -> Result<(String, Option<String>), MultipartError> {
    let (kind, params) = Params::after_item(value);
    if !kind.trim().eq_ignore_ascii_case("form-data") {
        return Err(MultipartError::NotFormData);
    }
    let (mut name, mut filename, mut filename_ext) = (None, None, None);
    for param in params {
        let (key, value) = param?;
        let slot = match key.to_ascii_lowercase().as_str() {
            "name" => &mut name,
            "filename" => &mut filename,
            "filename*" => &mut filename_ext,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(MultipartError::MalformedHeader);
        }
    }
    // A file part without a name is what curl sends for `-F =@file` and what busboy (Supabase
    // Storage's parser) accepts: read it as the empty name, as storage-js sends its file part.
    let name = match (name, &filename, &filename_ext) {
        (Some(name), _, _) => name,
        (None, None, None) => return Err(MultipartError::NotFormData),
        (None, _, _) => String::new(),
    };
    // RFC 7578 §4.2 / RFC 6266: `filename*` wins when its charset is one we read; undecoded, it
    // still beats no name at all, as it makes the part a file.
    let decoded = filename_ext.as_deref().and_then(ext_value);
    Ok((name, decoded.or(filename).or(filename_ext)))
}

/// An RFC 5987 `UTF-8'lang'percent-encoded` value, decoded; `None` for another charset or bad
/// encoding (the plain `filename` is used then).
fn ext_value(value: &str) -> Option<String> {
    let mut fields = value.splitn(3, '\'');
    let (charset, _language, encoded) = (fields.next()?, fields.next()?, fields.next()?);
    if !charset.eq_ignore_ascii_case("utf-8") {
        return None;
    }
    percent_encoding::percent_decode_str(encoded).decode_utf8().ok().map(|s| s.into_owned())
}

fn trim(bytes: &[u8]) -> &[u8] {
    let is_blank = |b: &u8| matches!(b, b' ' | b'\t');
    let start = bytes.iter().position(|b| !is_blank(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|b| !is_blank(b)).map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// The `; key=value` parameters of a header value after its first item: keys as written, values
/// unquoted (a quoted string's backslash escapes a character) or bare tokens trimmed.
struct Params<'a> {
    rest: &'a str,
}

impl<'a> Params<'a> {
    /// A header value's first item (up to its first `;`) and the parameters after it.
    fn after_item(value: &'a str) -> (&'a str, Params<'a>) {
        let (item, rest) = value.split_at(value.find(';').unwrap_or(value.len()));
        (item, Params { rest })
    }

    fn param(&mut self) -> Result<Option<(&'a str, String)>, MultipartError> {
        let rest = self.rest.trim_start_matches([' ', '\t']);
        let rest = match rest.strip_prefix(';') {
            Some(rest) => rest.trim_start_matches([' ', '\t']),
            None if rest.is_empty() => return Ok(None),
            None => return Err(MultipartError::MalformedHeader),
        };
        if rest.is_empty() {
            self.rest = rest; // A trailing `;` is harmless.
            return Ok(None);
        }
        let (key, rest) = rest.split_once('=').ok_or(MultipartError::MalformedHeader)?;
        if key.contains([';', '"']) {
            return Err(MultipartError::MalformedHeader); // A parameter without `=`.
        }
        let rest = rest.trim_start_matches([' ', '\t']);
        let (value, rest) = match rest.strip_prefix('"') {
            Some(quoted) => quoted_string(quoted)?,
            None => {
                let end = rest.find(';').unwrap_or(rest.len());
                (rest[..end].trim_end_matches([' ', '\t']).to_owned(), &rest[end..])
            }
        };
        self.rest = rest;
        Ok(Some((key.trim_end_matches([' ', '\t']), value)))
    }
}

impl<'a> Iterator for Params<'a> {
    type Item = Result<(&'a str, String), MultipartError>;

    fn next(&mut self) -> Option<Self::Item> {
        let param = self.param();
        if param.is_err() {
            self.rest = ""; // An error ends the iteration.
        }
        param.transpose()
    }
}

/// A quoted string's content (after its opening quote) and what follows its closing quote.
fn quoted_string(s: &str) -> Result<(String, &str), MultipartError> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &s[i + 1..])),
            '\\' => value.push(chars.next().ok_or(MultipartError::MalformedHeader)?.1),
            c => value.push(c),
        }
    }
    Err(MultipartError::MalformedHeader)
}

#[cfg(test)]
mod tests {
    use super::*;

    const B: &str = "X-BOUNDARY";

    /// What storage-js's `upload` sends: its text fields, then the file under an empty name.
    fn storage_js(boundary: &str) -> Vec<u8> {
        let fields = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"cacheControl\"\r\n\r\n3600\r\n\
            --{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\n\r\n{{\"a\":1}}\r\n\
            --{boundary}\r\nContent-Disposition: form-data; name=\"\"; filename=\"blob\"\r\n\
            Content-Type: image/png\r\n\r\n"
        );
        [fields.as_bytes(), b"\x89PNG\r\n--X\r\n", format!("\r\n--{boundary}--\r\n").as_bytes()].concat()
    }

    /// Feeds `pieces` one after the other, parsing all each allows, checking the bound on what
    /// stays held; then `finish`. Adjacent `Data` are joined so splits compare equal.
    fn feed(parser: &mut Parser, pieces: &[&[u8]]) -> Result<Vec<Event>, MultipartError> {
        let mut events: Vec<Event> = Vec::new();
        let mut buf = BytesMut::new();
        for piece in pieces {
            buf.extend_from_slice(piece);
            while let Some(event) = parser.parse(&mut buf)? {
                match (events.last_mut(), event) {
                    (Some(Event::Data(last)), Event::Data(more)) => *last = [&last[..], &more[..]].concat().into(),
                    (_, event) => events.push(event),
                }
            }
            assert!(buf.len() <= parser.held_bound());
        }
        parser.finish().map(|()| events)
    }

    fn parse_all(body: &[u8]) -> Result<Vec<Event>, MultipartError> {
        feed(&mut Parser::new(B), &[body])
    }

    fn field(name: &str) -> Event {
        Event::Part(PartHead { name: name.into(), filename: None, content_type: None })
    }

    fn data(bytes: &[u8]) -> Event {
        Event::Data(Bytes::copy_from_slice(bytes))
    }

    fn storage_js_events() -> Vec<Event> {
        let file =
            PartHead { name: String::new(), filename: Some("blob".into()), content_type: Some("image/png".into()) };
        vec![
            field("cacheControl"),
            data(b"3600"),
            Event::PartEnd,
            field("metadata"),
            data(b"{\"a\":1}"),
            Event::PartEnd,
            Event::Part(file),
            data(b"\x89PNG\r\n--X\r\n"),
            Event::PartEnd,
            Event::End,
        ]
    }

    #[test]
    fn storage_js_body() {
        assert_eq!(parse_all(&storage_js(B)), Ok(storage_js_events()));
        // Browsers' boundaries begin with dashes of their own.
        let webkit = "----WebKitFormBoundary7MA4YWxkTrZu0gW";
        assert_eq!(feed(&mut Parser::new(webkit), &[&storage_js(webkit)]), Ok(storage_js_events()));
    }

    #[test]
    fn every_split_gives_the_same_events() {
        let expected = Ok(storage_js_events());
        let body = storage_js(B);
        let bytes: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(feed(&mut Parser::new(B), &bytes), expected);
        for at in 0..=body.len() {
            let (a, b) = body.split_at(at);
            assert_eq!(feed(&mut Parser::new(B), &[a, b]), expected, "split at {at}");
        }
    }

    #[test]
    fn boundary_lookalikes_are_data() {
        let content: &[u8] = b"\r\n--X-BOUNDAR\r\n-X-BOUNDARY\n--X-BOUNDARY--X-BOUNDARY\r\r\n--X\r\n--\r";
        let body = [b"--X-BOUNDARY\r\nContent-Disposition: form-data; name=f\r\n\r\n", content, b"\r\n--X-BOUNDARY--"]
            .concat();
        let expected = Ok(vec![field("f"), data(content), Event::PartEnd, Event::End]);
        assert_eq!(parse_all(&body), expected);
        for at in 0..=body.len() {
            let (a, b) = body.split_at(at);
            assert_eq!(feed(&mut Parser::new(B), &[a, b]), expected, "split at {at}");
        }
    }

    #[test]
    fn truncated_bodies_fail_on_finish() {
        let body = storage_js(B);
        for len in 0..body.len() - 2 {
            let result = parse_all(&body[..len]);
            assert_eq!(result, Err(MultipartError::Truncated), "{len} bytes");
        }
        assert!(parse_all(&body[..body.len() - 2]).is_ok(), "the epilogue's CRLF is optional");
    }

    #[test]
    fn preamble_padding_and_epilogue_are_skipped() {
        let body = b"This is a preamble.\r\n--X-BOUNDARY \t\r\nContent-Disposition: form-data; name=a\r\n\r\n\
            1\r\n--X-BOUNDARY--  \r\nand an epilogue\r\n--X-BOUNDARY\r\n";
        let expected = vec![field("a"), data(b"1"), Event::PartEnd, Event::End];
        assert_eq!(parse_all(body), Ok(expected));
        // A preamble line that merely starts like the delimiter is still preamble.
        let body = b"--X-BOUNDAR\r\n--X-BOUNDARY\r\nContent-Disposition: form-data; name=a\r\n\r\n\r\n--X-BOUNDARY--";
        assert_eq!(parse_all(body), Ok(vec![field("a"), Event::PartEnd, Event::End]));
    }

    #[test]
    fn nothing_follows_end() {
        let mut parser = Parser::new(B);
        let mut buf = BytesMut::from(&b"--X-BOUNDARY--epilogue"[..]);
        assert_eq!(parser.parse(&mut buf), Ok(Some(Event::End)));
        buf.extend_from_slice(b"\r\n--X-BOUNDARY\r\nContent-Disposition: form-data; name=a\r\n\r\n");
        assert_eq!(parser.parse(&mut buf), Ok(None));
        assert!(buf.is_empty());
        assert_eq!(parser.finish(), Ok(()));
    }

    #[test]
    fn headers_are_read_leniently() {
        let body = b"--X-BOUNDARY\r\ncontent-DISPOSITION:Form-Data ; NAME = \"a \\\"q\\\\ b\" ;filename=plain.txt;\n\
            X-Other: ignored\r\ncontent-type:  text/plain; charset=utf-8 \n\n\
            \r\n--X-BOUNDARY\r\nContent-Disposition: form-data; name=\"f\"; filename=\"fallback\"; \
            filename*=UTF-8''%E2%82%AC%20rates.txt\r\n\r\n\r\n--X-BOUNDARY\r\n\
            Content-Disposition: form-data; name=\"g\"; filename*=ISO-8859-1''%A3.txt; filename=\"x\"\r\n\r\n\
            \r\n--X-BOUNDARY--";
        let first = PartHead {
            name: "a \"q\\ b".into(),
            filename: Some("plain.txt".into()),
            content_type: Some("text/plain; charset=utf-8".into()),
        };
        let second = PartHead { name: "f".into(), filename: Some("€ rates.txt".into()), content_type: None };
        let third = PartHead { name: "g".into(), filename: Some("x".into()), content_type: None };
        let expected = vec![
            Event::Part(first),
            Event::PartEnd,
            Event::Part(second),
            Event::PartEnd,
            Event::Part(third),
            Event::PartEnd,
            Event::End,
        ];
        assert_eq!(parse_all(body), Ok(expected));
        let undecoded = form_data("form-data; name=h; filename*=ISO-8859-1''%A3");
        assert_eq!(undecoded, Ok(("h".into(), Some("ISO-8859-1''%A3".into()))));
    }

    #[test]
    fn empty_parts_and_an_empty_file() {
        let body = b"--X-BOUNDARY\r\nContent-Disposition: form-data; name=\"\"\r\n\r\n\r\n--X-BOUNDARY\r\n\
            Content-Disposition: form-data; name=\"\"; filename=\"\"\r\nContent-Type: application/octet-stream\r\n\
            \r\n\r\n--X-BOUNDARY--";
        let file = PartHead {
            name: String::new(),
            filename: Some(String::new()),
            content_type: Some("application/octet-stream".into()),
        };
        let expected = vec![field(""), Event::PartEnd, Event::Part(file), Event::PartEnd, Event::End];
        assert_eq!(parse_all(body), Ok(expected));
        assert_eq!(parse_all(b"--X-BOUNDARY--"), Ok(vec![Event::End]));
    }

    #[test]
    fn limits_are_enforced() {
        let limits = Limits { max_header_bytes: 64, max_headers: 2, max_parts: 2, max_preamble_bytes: 16 };
        let run = |body: &[u8]| feed(&mut Parser::with_limits(B, limits), &body.chunks(7).collect::<Vec<_>>());
        let part = |headers: &str| format!("--X-BOUNDARY\r\n{headers}\r\n\r\nbody\r\n");
        let cd = "Content-Disposition: form-data; name=a";
        let ok = format!("{}{}--X-BOUNDARY--", part(cd), part(cd));
        assert!(run(ok.as_bytes()).is_ok());
        let three = format!("{}{}{}--X-BOUNDARY--", part(cd), part(cd), part(cd));
        assert_eq!(run(three.as_bytes()), Err(MultipartError::TooManyParts));
        let many = part(&format!("{cd}\r\nA: 1\r\nB: 2"));
        assert_eq!(run(many.as_bytes()), Err(MultipartError::TooManyHeaders));
        let long = part(&format!("{cd}\r\nA: {}", "x".repeat(30)));
        assert_eq!(run(long.as_bytes()), Err(MultipartError::HeadersTooLarge));
        let endless = format!("--X-BOUNDARY\r\n{}", "x".repeat(100));
        assert_eq!(run(endless.as_bytes()), Err(MultipartError::HeadersTooLarge));
        let padded = format!("--X-BOUNDARY{}\r\n", " ".repeat(100));
        assert_eq!(run(padded.as_bytes()), Err(MultipartError::HeadersTooLarge));
        let preamble = format!("{}\r\n{ok}", "p".repeat(17));
        assert_eq!(run(preamble.as_bytes()), Err(MultipartError::PreambleTooLarge));
        let preamble = format!("{}\r\n{ok}", "p".repeat(16));
        assert!(run(preamble.as_bytes()).is_ok());
        assert_eq!(run("p".repeat(100).as_bytes()), Err(MultipartError::PreambleTooLarge));
    }

    #[test]
    fn malformed_bodies_are_refused() {
        let cases: [(&[u8], MultipartError); 9] = [
            (b"--X-BOUNDARY\r\nno colon\r\n\r\n", MultipartError::MalformedHeader),
            (b"--X-BOUNDARY\r\n: empty name\r\n\r\n", MultipartError::MalformedHeader),
            (b"--X-BOUNDARY\r\nContent-Disposition: form-data; name=\"open\r\n\r\n", MultipartError::MalformedHeader),
            (
                b"--X-BOUNDARY\r\nContent-Disposition: form-data; name=a; name=b\r\n\r\n",
                MultipartError::MalformedHeader,
            ),
            (b"--X-BOUNDARY\r\nContent-Disposition: form-data; name=\"a\"x\r\n\r\n", MultipartError::MalformedHeader),
            (b"--X-BOUNDARY\r\nContent-Disposition: form-data; bare; name=a\r\n\r\n", MultipartError::MalformedHeader),
            (b"--X-BOUNDARY\r\nContent-Disposition: attachment; name=a\r\n\r\n", MultipartError::NotFormData),
            (b"--X-BOUNDARY\r\nContent-Type: text/plain\r\n\r\n", MultipartError::NotFormData),
            (b"--X-BOUNDARY-\r\n", MultipartError::MalformedDelimiter),
        ];
        for (body, error) in cases {
            assert_eq!(parse_all(body), Err(error.clone()), "{}", String::from_utf8_lossy(body));
        }
        let mut parser = Parser::new(B);
        let mut buf = BytesMut::from(&b"--X-BOUNDARYx"[..]);
        assert_eq!(parser.parse(&mut buf), Err(MultipartError::MalformedDelimiter));
        buf.extend_from_slice(b"--X-BOUNDARY--");
        assert_eq!(parser.parse(&mut buf), Err(MultipartError::MalformedDelimiter), "an error is final");
        assert_eq!(parser.finish(), Err(MultipartError::MalformedDelimiter));
    }

    #[test]
    fn a_large_part_streams_in_few_events() {
        let file: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let head = b"--X-BOUNDARY\r\nContent-Disposition: form-data; name=\"\"; filename=\"big\"\r\n\r\n";
        let body = [&head[..], &file, b"\r\n--X-BOUNDARY--\r\n"].concat();
        for chunk in [64 << 10, 1 << 20, body.len()] {
            let mut parser = Parser::new(B);
            let mut buf = BytesMut::new();
            let (mut received, mut data_events) = (0, 0);
            for piece in body.chunks(chunk) {
                buf.extend_from_slice(piece);
                while let Some(event) = parser.parse(&mut buf).expect("a valid body") {
                    if let Event::Data(bytes) = event {
                        assert_eq!(bytes[..], file[received..received + bytes.len()]);
                        received += bytes.len();
                        data_events += 1;
                    }
                }
                assert!(buf.len() < B.len() + 4, "only a possible delimiter is held back");
            }
            assert_eq!((received, parser.finish()), (file.len(), Ok(())));
            assert!(data_events <= body.len() / chunk + 2, "{data_events} Data events in chunks of {chunk}");
        }
    }

    #[test]
    fn boundary_from_content_type() {
        assert_eq!(boundary("multipart/form-data; boundary=abc"), Some("abc".into()));
        assert_eq!(boundary("Multipart/Form-Data;charset=utf-8;BOUNDARY=\"a b:c\" ; x=y"), Some("a b:c".into()));
        let webkit = "multipart/form-data; boundary=----WebKitFormBoundary7MA4YWxkTrZu0gW";
        assert_eq!(boundary(webkit), Some("----WebKitFormBoundary7MA4YWxkTrZu0gW".into()));
        assert_eq!(boundary(&format!("multipart/form-data; boundary={}", "a".repeat(70))), Some("a".repeat(70)));
        let refused = [
            "multipart/form-data".to_owned(),
            "multipart/form-data; boundary=".to_owned(),
            "multipart/form-data; boundary=\"\"".to_owned(),
            "multipart/form-data; boundary=\"ends \"".to_owned(),
            "multipart/form-data; boundary=\"a\r\nb\"".to_owned(),
            "multipart/form-data; boundary=\"unterminated".to_owned(),
            format!("multipart/form-data; boundary={}", "a".repeat(71)),
            "multipart/mixed; boundary=abc".to_owned(),
            "application/json".to_owned(),
        ];
        for content_type in refused {
            assert_eq!(boundary(&content_type), None, "{content_type:?}");
        }
    }
}
