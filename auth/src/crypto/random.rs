//! Random identifiers and secrets: legacy refresh tokens, UUIDs, numeric one-time codes and
//! URL-safe tokens.
//!
//! Invariants: every value comes from the operating system's random source (`OsRng`, a CSPRNG);
//! each output is uniform over its alphabet and length (no modulo bias); the formats are GoTrue's
//! where GoTrue has one. A failing operating-system random source panics (GoTrue panics too):
//! there is no safe value to return instead.

use base64::Engine as _;
use rand::rngs::OsRng;
use rand::{Rng as _, RngCore as _};

/// Length of a legacy (non-v2) refresh token.
pub const REFRESH_TOKEN_LEN: usize = 12;

/// A legacy refresh token: 12 characters of lowercase base32 (`a`–`z`, `2`–`7`), 60 random bits.
///
/// GoTrue: `crypto.SecureAlphanumeric(12)` (`internal/models/refresh_token.go`), which encodes 8
/// random bytes as unpadded standard base32, lowercases it and keeps the first 12 characters;
/// this does the same.
pub fn refresh_token() -> String {
    // (12 * 5 + 7) / 8 = 8 bytes give 13 base32 characters; the first 12 are uniform.
    let mut bytes = [0u8; (REFRESH_TOKEN_LEN * 5).div_ceil(8)];
    OsRng.fill_bytes(&mut bytes);
    let mut token = data_encoding::BASE32_NOPAD.encode(&bytes);
    debug_assert!(token.len() >= REFRESH_TOKEN_LEN);
    token.truncate(REFRESH_TOKEN_LEN);
    token.make_ascii_lowercase();
    token
}

pub use madbase_core::ids::uuid_v4;

/// A numeric one-time code of exactly `digits` decimal digits, leading zeros kept (`"004217"`),
/// uniform over all `10^digits` values. `digits == 0` gives `""`.
///
/// GoTrue: `crypto.GenerateOtp` (a uniform integer below `10^digits`, zero-padded); drawing each
/// digit uniformly is the same distribution and has no upper limit on `digits`.
pub fn numeric_otp(digits: usize) -> String {
    (0..digits).map(|_| char::from(b'0' + OsRng.gen_range(0..10u8))).collect()
}

/// `bytes` random bytes as unpadded base64url (`A`–`Z a`–`z 0`–`9 - _`), for nonces, state
/// values and other opaque tokens that travel in URLs. 32 bytes give 43 characters.
///
/// GoTrue draws its opaque random secrets the same way (`base64.RawURLEncoding` over
/// `crypto/rand` bytes, e.g. OAuth client secrets in `internal/api/oauthserver/service.go`).
/// Note that GoTrue's email-link `token` is not random text: it is [`super::otp::token_hash`] of
/// the address and the code.
pub fn url_token(bytes: usize) -> String {
    let mut buffer = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buffer);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&buffer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn refresh_token_is_12_lowercase_base32() {
        let mut seen = HashSet::new();
        let mut alphabet = HashSet::new();
        for _ in 0..2000 {
            let token = refresh_token();
            assert_eq!(token.len(), 12, "{token}");
            assert!(token.bytes().all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)), "{token}");
            alphabet.extend(token.bytes());
            assert!(seen.insert(token), "a 60-bit token repeated");
        }
        // 24000 draws cover the whole 32-character alphabet.
        assert_eq!(alphabet.len(), 32);
    }

    #[test]
    fn uuid_v4_shape() {
        let mut seen = HashSet::new();
        for _ in 0..1000 {
            let id = uuid_v4();
            let b = id.as_bytes();
            assert_eq!(b.len(), 36, "{id}");
            for (i, &c) in b.iter().enumerate() {
                if [8, 13, 18, 23].contains(&i) {
                    assert_eq!(c, b'-', "{id}");
                } else {
                    assert!(c.is_ascii_digit() || (b'a'..=b'f').contains(&c), "{id}");
                }
            }
            assert_eq!(b[14], b'4', "{id}");
            assert!(matches!(b[19], b'8' | b'9' | b'a' | b'b'), "{id}");
            assert!(seen.insert(id));
        }
    }

    #[test]
    fn numeric_otp_lengths_and_digits() {
        assert_eq!(numeric_otp(0), "");
        for digits in [1, 6, 8, 10, 30] {
            let code = numeric_otp(digits);
            assert_eq!(code.len(), digits);
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "{code}");
        }
    }

    #[test]
    fn numeric_otp_is_roughly_uniform_and_keeps_leading_zeros() {
        let mut counts = [0usize; 10];
        let mut leading_zero = false;
        for _ in 0..2000 {
            let code = numeric_otp(6);
            leading_zero |= code.starts_with('0');
            for b in code.bytes() {
                counts[usize::from(b - b'0')] += 1;
            }
        }
        assert!(leading_zero, "2000 codes without a leading zero");
        // 12000 digits, 1200 expected per value; 900..1500 is far outside chance (σ ≈ 33).
        for (digit, &count) in counts.iter().enumerate() {
            assert!((900..1500).contains(&count), "digit {digit} drawn {count} times");
        }
    }

    #[test]
    fn url_token_is_unpadded_base64url() {
        assert_eq!(url_token(0), "");
        assert_eq!(url_token(32).len(), 43);
        assert_eq!(url_token(16).len(), 22);
        let mut seen = HashSet::new();
        for _ in 0..500 {
            let token = url_token(24);
            assert_eq!(token.len(), 32);
            assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "{token}");
            assert!(seen.insert(token));
        }
    }
}
