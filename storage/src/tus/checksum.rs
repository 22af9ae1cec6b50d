//! TUS's checksum extension: the `Upload-Checksum` header (`<algorithm> <base64 digest>`) of a
//! `PATCH` (or of a creation with upload) and the running digest of the bytes that request
//! carries. Without I/O; the header parser is fuzzed by `fuzz/fuzz_targets/storage_tus_headers.rs`.
//!
//! The protocol's rules: the server names what it computes in `Tus-Checksum-Algorithm`; a header
//! naming another algorithm is a 400; the digest covers exactly this request's bytes, and when
//! it differs the server answers 460 and keeps none of them (the caller's job: `mod.rs`).
//! Invariants: [`UploadChecksum::parse`] refuses a header over [`MAX_CHECKSUM_BYTES`] before
//! looking at it, and a parsed checksum's digest has its algorithm's length.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use md5::{Digest as _, Md5};

use super::headers::HeaderError;

/// What `Tus-Checksum-Algorithm` advertises (the protocol requires `sha1`).
pub const CHECKSUM_ALGORITHMS: &str = "sha1,sha256,sha512,md5";

/// Longest `Upload-Checksum` header taken: `sha512 ` and the base64 of 64 bytes, with room.
pub const MAX_CHECKSUM_BYTES: usize = 128;

/// An algorithm of [`CHECKSUM_ALGORITHMS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Sha1,
    Sha256,
    Sha512,
    Md5,
}

impl Algorithm {
    fn named(name: &str) -> Option<Algorithm> {
        match name {
            "sha1" => Some(Algorithm::Sha1),
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            "md5" => Some(Algorithm::Md5),
            _ => None,
        }
    }

    /// The digest's length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
            Algorithm::Md5 => 16,
        }
    }
}

/// Why an `Upload-Checksum` header is refused (both are 400s).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    #[error(transparent)]
    Header(#[from] HeaderError),
    /// An algorithm this server does not compute.
    #[error("Unsupported Upload-Checksum algorithm")]
    Unsupported,
}

/// A parsed `Upload-Checksum`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadChecksum {
    pub algorithm: Algorithm,
    pub digest: Vec<u8>,
}

impl UploadChecksum {
    /// `<algorithm> <base64 digest>`: a lower-case algorithm name, one space, the standard
    /// base64 (padded) of a digest of the algorithm's length.
    pub fn parse(value: &str) -> Result<UploadChecksum, ChecksumError> {
        const NAME: &str = "upload-checksum";
        if value.len() > MAX_CHECKSUM_BYTES {
            return Err(HeaderError::TooLarge(NAME).into());
        }
        let (name, encoded) = value.split_once(' ').ok_or(HeaderError::Invalid(NAME))?;
        let algorithm = Algorithm::named(name).ok_or(ChecksumError::Unsupported)?;
        let digest = STANDARD.decode(encoded).map_err(|_| HeaderError::Invalid(NAME))?;
        if digest.len() != algorithm.output_len() {
            return Err(HeaderError::Invalid(NAME).into());
        }
        Ok(UploadChecksum { algorithm, digest })
    }

    /// A running digest of the algorithm, to feed the request's bytes.
    pub fn start(&self) -> Running {
        let ring = |algorithm| Running::Ring(ring::digest::Context::new(algorithm));
        match self.algorithm {
            Algorithm::Sha1 => ring(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
            Algorithm::Sha256 => ring(&ring::digest::SHA256),
            Algorithm::Sha512 => ring(&ring::digest::SHA512),
            Algorithm::Md5 => Running::Md5(Md5::new()),
        }
    }

    /// Whether `running`, fed every byte of the request, ends at this digest.
    pub fn matches(&self, running: Running) -> bool {
        let computed = match running {
            Running::Ring(context) => context.finish().as_ref().to_vec(),
            Running::Md5(md5) => md5.finalize().to_vec(),
        };
        computed == self.digest
    }
}

/// The digest of the bytes seen so far.
pub enum Running {
    Ring(ring::digest::Context),
    Md5(Md5),
}

impl Running {
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Running::Ring(context) => context.update(bytes),
            Running::Md5(md5) => md5.update(bytes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest_of(header: &str, parts: &[&[u8]]) -> bool {
        let checksum = UploadChecksum::parse(header).unwrap();
        let mut running = checksum.start();
        parts.iter().for_each(|part| running.update(part));
        checksum.matches(running)
    }

    #[test]
    fn checksums_of_every_algorithm_match_their_bytes() {
        // Digests of "hello world" from sha1sum, sha256sum, sha512sum and md5sum, in base64.
        let cases = [
            "sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",
            "sha256 uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=",
            "sha512 MJ7MSJwS1utMxA9QyQLytNDtd+5RGnx6m808qG1M2G+YndNbxf9JlnDaNCVbRbDP2DDoH2Bdz33FVC6TrpzXbw==",
            "md5 XrY7u+Ae7tCTyyK7j1rNww==",
        ];
        for header in cases {
            assert!(digest_of(header, &[b"hello", b" ", b"world"]), "{header}");
            assert!(!digest_of(header, &[b"hello world!"]), "{header}");
        }
    }

    #[test]
    fn bad_checksum_headers_are_refused() {
        let invalid = Err(ChecksumError::Header(HeaderError::Invalid("upload-checksum")));
        assert_eq!(UploadChecksum::parse("crc32 AAAAAA=="), Err(ChecksumError::Unsupported));
        assert_eq!(UploadChecksum::parse("SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0="), Err(ChecksumError::Unsupported));
        assert_eq!(UploadChecksum::parse("sha1"), invalid);
        assert_eq!(UploadChecksum::parse("sha1 not base64!"), invalid);
        assert_eq!(UploadChecksum::parse("sha1 XrY7u+Ae7tCTyyK7j1rNww=="), invalid, "an md5-sized digest");
        assert_eq!(UploadChecksum::parse("sha1  Kq5sNclPz7QV2+lfQIuc6R7oRu0="), invalid);
        let long = format!("sha1 {}", "A".repeat(200));
        assert_eq!(UploadChecksum::parse(&long), Err(ChecksumError::Header(HeaderError::TooLarge("upload-checksum"))));
    }
}
