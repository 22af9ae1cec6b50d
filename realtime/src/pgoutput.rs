//! A decoder of `pgoutput` logical replication messages, protocol version 1.
//!
//! Owns the byte-level format of one message (the payload of one XLogData): Begin, Commit,
//! Origin, Relation, Type, Insert, Update (with its optional `K`/`O` old tuple and the `N` new
//! one), Delete, Truncate and Message, and TupleData (`n` null, `u` unchanged TOAST, `t` text,
//! `b` binary).
//!
//! Invariants: decoding never panics and never allocates more than the input can justify (a
//! declared count is checked against the bytes left before anything is reserved); any input
//! that is not exactly one well-formed message — truncated, trailing bytes, unknown tags,
//! strings without their terminator or not UTF-8 — is a [`DecodeError`]. Values borrow from
//! the input: the decoder copies nothing.
//!
//! Why this shape: it faces the network (a server, or whatever sits in between), so it is a
//! pure function of bytes, fuzzed (`fuzz/fuzz_targets/pgoutput.rs`) and property-tested; the
//! replication core turns its output into [`crate::changes`] types.

/// A decoding failure: what was being read and why it failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The message ended before a field.
    #[error("pgoutput: message truncated reading {0}")]
    Truncated(&'static str),
    /// Bytes left after a whole message.
    #[error("pgoutput: {0} trailing bytes after the message")]
    Trailing(usize),
    /// An unknown message type.
    #[error("pgoutput: unknown message type {0:#04x}")]
    UnknownMessage(u8),
    /// An unknown tuple-value or tuple-kind byte.
    #[error("pgoutput: unexpected byte {byte:#04x} reading {what}")]
    UnexpectedByte {
        /// What was being read.
        what: &'static str,
        /// The byte found.
        byte: u8,
    },
    /// A string that is not NUL-terminated or not UTF-8.
    #[error("pgoutput: malformed string reading {0}")]
    BadString(&'static str),
    /// A negative count or length.
    #[error("pgoutput: negative {0}")]
    Negative(&'static str),
}

/// One column value of a tuple.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TupleValue<'a> {
    /// SQL NULL.
    Null,
    /// An unchanged TOASTed value (not sent).
    Unchanged,
    /// The value in text format.
    Text(&'a [u8]),
    /// The value in binary format (only when the subscription asked for it).
    Binary(&'a [u8]),
}

/// A column of a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn<'a> {
    /// Part of the replica identity.
    pub key: bool,
    pub name: &'a str,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// The old row an Update or Delete carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OldTuple<'a> {
    /// `K`: the replica identity's columns (others null).
    Key(Vec<TupleValue<'a>>),
    /// `O`: the whole old row (replica identity FULL).
    Full(Vec<TupleValue<'a>>),
}

impl<'a> OldTuple<'a> {
    /// The values, whichever kind.
    pub fn values(&self) -> &[TupleValue<'a>] {
        match self {
            OldTuple::Key(v) | OldTuple::Full(v) => v,
        }
    }
}

/// One pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgOutputMessage<'a> {
    Begin {
        /// The commit record's position.
        final_lsn: u64,
        /// Microseconds since 2000-01-01 UTC.
        commit_time: i64,
        xid: u32,
    },
    Commit {
        flags: u8,
        commit_lsn: u64,
        /// The end of the commit record: where a client resumes after this transaction.
        end_lsn: u64,
        commit_time: i64,
    },
    Origin {
        lsn: u64,
        name: &'a str,
    },
    Relation {
        oid: u32,
        namespace: &'a str,
        name: &'a str,
        /// `pg_class.relreplident`: `d`, `n`, `f` or `i`.
        replica_identity: u8,
        columns: Vec<RelationColumn<'a>>,
    },
    Type {
        oid: u32,
        namespace: &'a str,
        name: &'a str,
    },
    Insert {
        relation: u32,
        new: Vec<TupleValue<'a>>,
    },
    Update {
        relation: u32,
        old: Option<OldTuple<'a>>,
        new: Vec<TupleValue<'a>>,
    },
    Delete {
        relation: u32,
        old: OldTuple<'a>,
    },
    Truncate {
        options: u8,
        relations: Vec<u32>,
    },
    /// A logical decoding message (`pg_logical_emit_message`); its content is not kept.
    Message {
        transactional: bool,
        lsn: u64,
        prefix: &'a str,
        content: &'a [u8],
    },
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.buf.len() < n {
            return Err(DecodeError::Truncated(what));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.take(1, what)?[0])
    }

    fn i16(&mut self, what: &'static str) -> Result<i16, DecodeError> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        Ok(self.i32(what)? as u32)
    }

    fn u64(&mut self, what: &'static str) -> Result<u64, DecodeError> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }

    fn i64(&mut self, what: &'static str) -> Result<i64, DecodeError> {
        Ok(self.u64(what)? as i64)
    }

    fn str(&mut self, what: &'static str) -> Result<&'a str, DecodeError> {
        let end = self.buf.iter().position(|&b| b == 0).ok_or(DecodeError::BadString(what))?;
        let s = std::str::from_utf8(&self.buf[..end]).map_err(|_| DecodeError::BadString(what))?;
        self.buf = &self.buf[end + 1..];
        Ok(s)
    }

    fn count(&mut self, what: &'static str, min_bytes_each: usize) -> Result<usize, DecodeError> {
        let n = self.i16(what)?;
        let n = usize::try_from(n).map_err(|_| DecodeError::Negative(what))?;
        // Each entry needs at least `min_bytes_each` bytes: a count the input cannot hold is
        // truncated input, found before anything is reserved for it.
        if n.saturating_mul(min_bytes_each) > self.buf.len() {
            return Err(DecodeError::Truncated(what));
        }
        Ok(n)
    }

    fn tuple(&mut self) -> Result<Vec<TupleValue<'a>>, DecodeError> {
        let n = self.count("tuple column count", 1)?;
        let mut values = Vec::with_capacity(n);
        for _ in 0..n {
            let kind = self.u8("tuple value kind")?;
            let v = match kind {
                b'n' => TupleValue::Null,
                b'u' => TupleValue::Unchanged,
                b't' | b'b' => {
                    let len = self.i32("tuple value length")?;
                    let len = usize::try_from(len).map_err(|_| DecodeError::Negative("tuple value length"))?;
                    let bytes = self.take(len, "tuple value")?;
                    if kind == b't' {
                        TupleValue::Text(bytes)
                    } else {
                        TupleValue::Binary(bytes)
                    }
                }
                byte => return Err(DecodeError::UnexpectedByte { what: "tuple value kind", byte }),
            };
            values.push(v);
        }
        Ok(values)
    }
}

/// Decodes one pgoutput (protocol v1) message: exactly the whole of `data`.
pub fn decode(data: &[u8]) -> Result<PgOutputMessage<'_>, DecodeError> {
    let mut r = Reader { buf: data };
    let tag = r.u8("message type")?;
    let msg = match tag {
        b'B' => PgOutputMessage::Begin {
            final_lsn: r.u64("begin lsn")?,
            commit_time: r.i64("begin time")?,
            xid: r.u32("xid")?,
        },
        b'C' => PgOutputMessage::Commit {
            flags: r.u8("commit flags")?,
            commit_lsn: r.u64("commit lsn")?,
            end_lsn: r.u64("commit end lsn")?,
            commit_time: r.i64("commit time")?,
        },
        b'O' => PgOutputMessage::Origin { lsn: r.u64("origin lsn")?, name: r.str("origin name")? },
        b'R' => {
            let oid = r.u32("relation oid")?;
            let namespace = r.str("relation namespace")?;
            let name = r.str("relation name")?;
            let replica_identity = r.u8("replica identity")?;
            // flags (1) + name (≥ 1) + type (4) + typmod (4)
            let n = r.count("relation column count", 10)?;
            let mut columns = Vec::with_capacity(n);
            for _ in 0..n {
                let flags = r.u8("column flags")?;
                columns.push(RelationColumn {
                    key: flags & 1 == 1,
                    name: r.str("column name")?,
                    type_oid: r.u32("column type")?,
                    type_modifier: r.i32("column type modifier")?,
                });
            }
            PgOutputMessage::Relation { oid, namespace, name, replica_identity, columns }
        }
        b'Y' => PgOutputMessage::Type {
            oid: r.u32("type oid")?,
            namespace: r.str("type namespace")?,
            name: r.str("type name")?,
        },
        b'I' => {
            let relation = r.u32("insert relation")?;
            match r.u8("insert tuple kind")? {
                b'N' => PgOutputMessage::Insert { relation, new: r.tuple()? },
                byte => return Err(DecodeError::UnexpectedByte { what: "insert tuple kind", byte }),
            }
        }
        b'U' => {
            let relation = r.u32("update relation")?;
            let mut kind = r.u8("update tuple kind")?;
            let old = match kind {
                b'K' | b'O' => {
                    let values = r.tuple()?;
                    let old = if kind == b'K' { OldTuple::Key(values) } else { OldTuple::Full(values) };
                    kind = r.u8("update new tuple kind")?;
                    Some(old)
                }
                _ => None,
            };
            if kind != b'N' {
                return Err(DecodeError::UnexpectedByte { what: "update new tuple kind", byte: kind });
            }
            PgOutputMessage::Update { relation, old, new: r.tuple()? }
        }
        b'D' => {
            let relation = r.u32("delete relation")?;
            let old = match r.u8("delete tuple kind")? {
                b'K' => OldTuple::Key(r.tuple()?),
                b'O' => OldTuple::Full(r.tuple()?),
                byte => return Err(DecodeError::UnexpectedByte { what: "delete tuple kind", byte }),
            };
            PgOutputMessage::Delete { relation, old }
        }
        b'T' => {
            let n = r.i32("truncate relation count")?;
            let n = usize::try_from(n).map_err(|_| DecodeError::Negative("truncate relation count"))?;
            let options = r.u8("truncate options")?;
            if n.saturating_mul(4) > r.buf.len() {
                return Err(DecodeError::Truncated("truncate relations"));
            }
            let mut relations = Vec::with_capacity(n);
            for _ in 0..n {
                relations.push(r.u32("truncate relation")?);
            }
            PgOutputMessage::Truncate { options, relations }
        }
        b'M' => {
            let flags = r.u8("message flags")?;
            let lsn = r.u64("message lsn")?;
            let prefix = r.str("message prefix")?;
            let len = r.i32("message length")?;
            let len = usize::try_from(len).map_err(|_| DecodeError::Negative("message length"))?;
            PgOutputMessage::Message {
                transactional: flags & 1 == 1,
                lsn,
                prefix,
                content: r.take(len, "message content")?,
            }
        }
        other => return Err(DecodeError::UnknownMessage(other)),
    };
    if !r.buf.is_empty() {
        return Err(DecodeError::Trailing(r.buf.len()));
    }
    Ok(msg)
}

/// Encoders of the same messages, for tests and the fuzz target's seeds (the inverse of
/// [`decode`] for every message it accepts).
pub mod encode {
    use super::{OldTuple, PgOutputMessage, TupleValue};

    fn tuple(out: &mut Vec<u8>, values: &[TupleValue<'_>]) {
        out.extend_from_slice(&(values.len() as i16).to_be_bytes());
        for v in values {
            match v {
                TupleValue::Null => out.push(b'n'),
                TupleValue::Unchanged => out.push(b'u'),
                TupleValue::Text(b) | TupleValue::Binary(b) => {
                    out.push(if matches!(v, TupleValue::Text(_)) { b't' } else { b'b' });
                    out.extend_from_slice(&(b.len() as i32).to_be_bytes());
                    out.extend_from_slice(b);
                }
            }
        }
    }

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    }

    /// The wire bytes of `msg`.
    pub fn message(msg: &PgOutputMessage<'_>) -> Vec<u8> {
        let mut o = Vec::new();
        match msg {
            PgOutputMessage::Begin { final_lsn, commit_time, xid } => {
                o.push(b'B');
                o.extend_from_slice(&final_lsn.to_be_bytes());
                o.extend_from_slice(&commit_time.to_be_bytes());
                o.extend_from_slice(&xid.to_be_bytes());
            }
            PgOutputMessage::Commit { flags, commit_lsn, end_lsn, commit_time } => {
                o.push(b'C');
                o.push(*flags);
                o.extend_from_slice(&commit_lsn.to_be_bytes());
                o.extend_from_slice(&end_lsn.to_be_bytes());
                o.extend_from_slice(&commit_time.to_be_bytes());
            }
            PgOutputMessage::Origin { lsn, name } => {
                o.push(b'O');
                o.extend_from_slice(&lsn.to_be_bytes());
                string(&mut o, name);
            }
            PgOutputMessage::Relation { oid, namespace, name, replica_identity, columns } => {
                o.push(b'R');
                o.extend_from_slice(&oid.to_be_bytes());
                string(&mut o, namespace);
                string(&mut o, name);
                o.push(*replica_identity);
                o.extend_from_slice(&(columns.len() as i16).to_be_bytes());
                for c in columns {
                    o.push(u8::from(c.key));
                    string(&mut o, c.name);
                    o.extend_from_slice(&c.type_oid.to_be_bytes());
                    o.extend_from_slice(&c.type_modifier.to_be_bytes());
                }
            }
            PgOutputMessage::Type { oid, namespace, name } => {
                o.push(b'Y');
                o.extend_from_slice(&oid.to_be_bytes());
                string(&mut o, namespace);
                string(&mut o, name);
            }
            PgOutputMessage::Insert { relation, new } => {
                o.push(b'I');
                o.extend_from_slice(&relation.to_be_bytes());
                o.push(b'N');
                tuple(&mut o, new);
            }
            PgOutputMessage::Update { relation, old, new } => {
                o.push(b'U');
                o.extend_from_slice(&relation.to_be_bytes());
                match old {
                    Some(OldTuple::Key(v)) => {
                        o.push(b'K');
                        tuple(&mut o, v);
                    }
                    Some(OldTuple::Full(v)) => {
                        o.push(b'O');
                        tuple(&mut o, v);
                    }
                    None => {}
                }
                o.push(b'N');
                tuple(&mut o, new);
            }
            PgOutputMessage::Delete { relation, old } => {
                o.push(b'D');
                o.extend_from_slice(&relation.to_be_bytes());
                o.push(if matches!(old, OldTuple::Key(_)) { b'K' } else { b'O' });
                tuple(&mut o, old.values());
            }
            PgOutputMessage::Truncate { options, relations } => {
                o.push(b'T');
                o.extend_from_slice(&(relations.len() as i32).to_be_bytes());
                o.push(*options);
                for r in relations {
                    o.extend_from_slice(&r.to_be_bytes());
                }
            }
            PgOutputMessage::Message { transactional, lsn, prefix, content } => {
                o.push(b'M');
                o.push(u8::from(*transactional));
                o.extend_from_slice(&lsn.to_be_bytes());
                string(&mut o, prefix);
                o.extend_from_slice(&(content.len() as i32).to_be_bytes());
                o.extend_from_slice(content);
            }
        }
        o
    }

    /// One of each message kind, as seeds for fuzzing and property tests.
    pub fn samples() -> Vec<Vec<u8>> {
        use super::RelationColumn;
        let cols = vec![
            RelationColumn { key: true, name: "id", type_oid: 20, type_modifier: -1 },
            RelationColumn { key: false, name: "body", type_oid: 25, type_modifier: -1 },
        ];
        let row = vec![TupleValue::Text(b"1"), TupleValue::Text(b"hello")];
        let key = vec![TupleValue::Text(b"1"), TupleValue::Null];
        let msgs = vec![
            PgOutputMessage::Begin { final_lsn: 0x1_0000_0010, commit_time: 757_382_400_000_000, xid: 740 },
            PgOutputMessage::Commit { flags: 0, commit_lsn: 0x1_0000_0010, end_lsn: 0x1_0000_0040, commit_time: 1 },
            PgOutputMessage::Origin { lsn: 7, name: "origin" },
            PgOutputMessage::Relation {
                oid: 16384,
                namespace: "public",
                name: "t",
                replica_identity: b'd',
                columns: cols,
            },
            PgOutputMessage::Type { oid: 16390, namespace: "public", name: "mood" },
            PgOutputMessage::Insert { relation: 16384, new: row.clone() },
            PgOutputMessage::Update {
                relation: 16384,
                old: Some(OldTuple::Full(row.clone())),
                new: vec![TupleValue::Text(b"1"), TupleValue::Unchanged],
            },
            PgOutputMessage::Update { relation: 16384, old: Some(OldTuple::Key(key.clone())), new: row.clone() },
            PgOutputMessage::Update {
                relation: 16384,
                old: None,
                new: vec![TupleValue::Binary(b"\x00\x01"), TupleValue::Null],
            },
            PgOutputMessage::Delete { relation: 16384, old: OldTuple::Key(key) },
            PgOutputMessage::Delete { relation: 16384, old: OldTuple::Full(row) },
            PgOutputMessage::Truncate { options: 1, relations: vec![16384, 16385] },
            PgOutputMessage::Message { transactional: true, lsn: 9, prefix: "p", content: b"c" },
        ];
        msgs.iter().map(message).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn every_sample_round_trips() {
        for bytes in encode::samples() {
            let msg = decode(&bytes).unwrap_or_else(|e| panic!("{e} decoding {bytes:?}"));
            assert_eq!(encode::message(&msg), bytes);
        }
    }

    #[test]
    fn every_prefix_of_a_sample_is_an_error_and_so_is_a_trailing_byte() {
        for bytes in encode::samples() {
            for n in 0..bytes.len() {
                assert!(decode(&bytes[..n]).is_err(), "prefix {n} of {bytes:?}");
            }
            let mut longer = bytes.clone();
            longer.push(0);
            assert_eq!(decode(&longer), Err(DecodeError::Trailing(1)));
        }
    }

    #[test]
    fn huge_declared_counts_are_refused_before_allocating() {
        // An Insert declaring 32767 columns with 3 bytes of data.
        let mut m = vec![b'I', 0, 0, 0, 1, b'N', 0x7f, 0xff, b'n', b'n', b'n'];
        assert_eq!(decode(&m), Err(DecodeError::Truncated("tuple column count")));
        // A text value claiming 2 GiB.
        m = vec![b'I', 0, 0, 0, 1, b'N', 0, 1, b't', 0x7f, 0xff, 0xff, 0xff];
        assert_eq!(decode(&m), Err(DecodeError::Truncated("tuple value")));
        // A truncate of -1 relations.
        m = vec![b'T', 0xff, 0xff, 0xff, 0xff, 0];
        assert_eq!(decode(&m), Err(DecodeError::Negative("truncate relation count")));
    }

    /// Property: for random and mutated inputs the decoder returns (never panics), and
    /// whatever it accepts re-encodes to bytes that decode to the same message (flag bytes
    /// are normalised, so the bytes themselves may differ).
    #[test]
    fn random_and_mutated_bytes_never_panic_and_accepted_input_round_trips() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed_f9a0);
        let samples = encode::samples();
        let tags = b"BCORYIUDTMKNOnutbx\0";
        for i in 0..200_000 {
            let input: Vec<u8> = if i % 4 == 0 {
                let len = rng.gen_range(0..64);
                let mut v: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                if let Some(first) = v.first_mut() {
                    *first = tags[rng.gen_range(0..tags.len())];
                }
                v
            } else {
                let mut v = samples[rng.gen_range(0..samples.len())].clone();
                for _ in 0..rng.gen_range(1..4) {
                    match rng.gen_range(0..4) {
                        0 if !v.is_empty() => {
                            let at = rng.gen_range(0..v.len());
                            v[at] = if rng.gen_bool(0.5) { rng.gen() } else { tags[rng.gen_range(0..tags.len())] };
                        }
                        1 if !v.is_empty() => {
                            let at = rng.gen_range(0..v.len());
                            v.truncate(at);
                        }
                        2 => {
                            let at = rng.gen_range(0..=v.len());
                            v.insert(at, rng.gen());
                        }
                        _ if !v.is_empty() => {
                            let at = rng.gen_range(0..v.len());
                            v.remove(at);
                        }
                        _ => {}
                    }
                }
                v
            };
            if let Ok(msg) = decode(&input) {
                let again = encode::message(&msg);
                assert_eq!(decode(&again).as_ref(), Ok(&msg), "accepted input must round-trip");
            }
        }
    }
}
