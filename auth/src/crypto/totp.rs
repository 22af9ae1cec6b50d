//! TOTP factors (reference/auth.md §5; RFC 6238 over RFC 4226): secrets, the `otpauth://` URI
//! of an enrollment, codes and their verification.
//!
//! Parameters are GoTrue's and fixed: HMAC-SHA1, 6 digits, 30-second steps, verification
//! accepting the current step and one on either side. GoTrue does this with the Go library
//! pquerna/otp v1.4.0 (`totp.Generate`, `totp.ValidateCustom`); this module reproduces what
//! that library does with those parameters, including its secret reading (surrounding
//! whitespace, lowercase and missing padding tolerated) and its URI escaping.
//!
//! Invariants: [`verify`] compares in constant time and checks all three steps whatever the
//! outcome; a secret that is not base32 or decodes to nothing never yields a code; nothing here
//! panics on any input.

use std::sync::LazyLock;

use ring::hmac;
use subtle::{Choice, ConstantTimeEq};

/// Seconds per step.
pub const PERIOD: u64 = 30;
/// Digits per code.
pub const DIGITS: usize = 6;
/// Steps accepted on either side of the current one.
pub const SKEW: u64 = 1;
/// Random bytes in a new secret (pquerna/otp's default `SecretSize`).
pub const SECRET_BYTES: usize = 20;

/// Unpadded upper-case base32 that, like Go's decoder, does not insist that the unused low bits
/// of the last character be zero.
static BASE32_LENIENT: LazyLock<data_encoding::Encoding> = LazyLock::new(|| {
    let mut spec = data_encoding::Specification::new();
    spec.symbols.push_str("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567");
    spec.check_trailing_bits = false;
    spec.encoding().expect("the RFC 4648 base32 alphabet is a valid specification")
});

/// A new secret: 20 random bytes as unpadded RFC 4648 base32 (32 characters `A`–`Z 2`–`7`).
pub fn generate_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut bytes);
    let secret = data_encoding::BASE32_NOPAD.encode(&bytes);
    debug_assert_eq!(secret.len(), 32);
    secret
}

/// The enrollment URI, byte for byte what pquerna/otp v1.4.0 `totp.Generate` gives GoTrue:
/// `otpauth://totp/<issuer>:<account>?algorithm=SHA1&digits=6&issuer=<issuer>&period=30&secret=<secret>`.
///
/// The label is escaped as Go escapes a URL path (letters, digits, `-._~` and `$&+,/:;=@` kept,
/// everything else `%XX`), the query values as Go's `url.PathEscape` (the same but `/ ; , ?` are
/// escaped too; a space is `%20`). As in pquerna/otp, `&` and `=` in the issuer are left as they
/// are. GoTrue refuses to enroll when the issuer or the account (the user's email) is empty;
/// this function has no such rule, callers keep it.
pub fn uri(issuer: &str, account: &str, secret: &str) -> String {
    let mut out = String::from("otpauth://totp/");
    escape_into(&mut out, issuer, keep_in_path);
    out.push(':');
    escape_into(&mut out, account, keep_in_path);
    out.push_str("?algorithm=SHA1&digits=6&issuer=");
    escape_into(&mut out, issuer, keep_in_path_segment);
    out.push_str("&period=30&secret=");
    escape_into(&mut out, secret, keep_in_path_segment);
    out
}

/// The code for `unix_time` (seconds since the epoch), or `None` when `secret` is not base32 or
/// is empty.
pub fn code_at(secret: &str, unix_time: u64) -> Option<String> {
    let key = signing_key(secret)?;
    Some(code_for_counter(&key, unix_time / PERIOD))
}

/// Whether `code` is the code of `secret` at `unix_time` or one step before or after.
///
/// Like pquerna/otp, surrounding whitespace of `code` is ignored; what remains must be six ASCII
/// digits. A bad secret verifies nothing.
pub fn verify(secret: &str, code: &str, unix_time: u64) -> bool {
    let code = code.trim();
    if code.len() != DIGITS || !code.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Some(key) = signing_key(secret) else {
        return false;
    };
    let counter = unix_time / PERIOD;
    // Every step is computed and compared, so the time taken says nothing about which matched.
    let mut matched = Choice::from(0);
    for step in counter.saturating_sub(SKEW)..=counter.saturating_add(SKEW) {
        matched |= code_for_counter(&key, step).as_bytes().ct_eq(code.as_bytes());
    }
    matched.into()
}

/// The HMAC-SHA1 key of a base32 secret, read as pquerna/otp reads it: surrounding whitespace
/// removed, letters upper-cased, padding optional.
fn signing_key(secret: &str) -> Option<hmac::Key> {
    let cleaned = secret.trim().trim_end_matches('=').to_ascii_uppercase();
    let bytes = BASE32_LENIENT.decode(cleaned.as_bytes()).ok()?;
    if bytes.is_empty() {
        return None;
    }
    Some(hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &bytes))
}

/// RFC 4226 §5.3: HMAC over the big-endian counter, dynamic truncation, the last six digits.
fn code_for_counter(key: &hmac::Key, counter: u64) -> String {
    let tag = hmac::sign(key, &counter.to_be_bytes());
    let mac = tag.as_ref();
    debug_assert_eq!(mac.len(), 20);
    let offset = usize::from(mac[mac.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([mac[offset] & 0x7f, mac[offset + 1], mac[offset + 2], mac[offset + 3]]);
    format!("{:06}", binary % 1_000_000)
}

/// The bytes Go's URL path escaping leaves alone.
fn keep_in_path(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~$&+,/:;=@".contains(&b)
}

/// The bytes Go's `url.PathEscape` leaves alone.
fn keep_in_path_segment(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-_.~$&+:=@".contains(&b)
}

fn escape_into(out: &mut String, text: &str, keep: fn(u8) -> bool) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    for b in text.bytes() {
        if keep(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    /// base32 of the RFC 6238 SHA-1 seed "12345678901234567890".
    const RFC_SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    /// RFC 6238 Appendix B (SHA-1 rows), the 8-digit codes cut to their last 6 digits.
    const RFC_VECTORS: [(u64, &str); 6] = [
        (59, "287082"),             // 94287082
        (1_111_111_109, "081804"),  // 07081804
        (1_111_111_111, "050471"),  // 14050471
        (1_234_567_890, "005924"),  // 89005924
        (2_000_000_000, "279037"),  // 69279037
        (20_000_000_000, "353130"), // 65353130
    ];

    #[test]
    fn secret_of_the_rfc_seed() {
        assert_eq!(data_encoding::BASE32_NOPAD.encode(b"12345678901234567890"), RFC_SECRET);
    }

    #[test]
    fn rfc6238_vectors() {
        for (time, code) in RFC_VECTORS {
            assert_eq!(code_at(RFC_SECRET, time).as_deref(), Some(code), "t = {time}");
            assert!(verify(RFC_SECRET, code, time), "t = {time}");
        }
    }

    #[test]
    fn rfc4226_vectors() {
        // RFC 4226 Appendix D: HOTP values for counters 0..9 of the same seed.
        let expected =
            ["755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871", "520489"];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(code_at(RFC_SECRET, counter as u64 * PERIOD).as_deref(), Some(*code), "counter {counter}");
        }
    }

    #[test]
    fn skew_is_one_step_each_way() {
        // 1111111109 is in step 37037036; the code of that step is valid from 1111111080 to
        // 1111111109, and with the skew from 1111111050 to 1111111139.
        let code = "081804";
        assert!(!verify(RFC_SECRET, code, 1_111_111_049));
        assert!(verify(RFC_SECRET, code, 1_111_111_050));
        assert!(verify(RFC_SECRET, code, 1_111_111_080));
        assert!(verify(RFC_SECRET, code, 1_111_111_139));
        assert!(!verify(RFC_SECRET, code, 1_111_111_140));
        // Counter 1 is next to counter 0 at time 0; nothing wraps below zero.
        assert!(verify(RFC_SECRET, "287082", 0));
        assert!(verify(RFC_SECRET, "755224", 0));
        assert!(!verify(RFC_SECRET, "359152", 0));
        assert!(code_at(RFC_SECRET, u64::MAX).is_some());
        let _ = verify(RFC_SECRET, "000000", u64::MAX);
    }

    #[test]
    fn codes_must_be_six_digits() {
        assert!(verify(RFC_SECRET, " 287082\n", 59)); // pquerna/otp trims
        for bad in ["", "28708", "2870822", "28708a", "+87082", "-87082", "２87082", "287 082", "0x1234"] {
            assert!(!verify(RFC_SECRET, bad, 59), "{bad:?}");
        }
    }

    #[test]
    fn secrets_are_read_like_pquerna() {
        assert_eq!(code_at(&RFC_SECRET.to_lowercase(), 59).as_deref(), Some("287082"));
        assert_eq!(code_at(&format!("  {RFC_SECRET}\n"), 59).as_deref(), Some("287082"));
        // "ABCDEFG" is 7 characters: 4 bytes, padded it is "ABCDEFG=".
        assert_eq!(code_at("ABCDEFG", 59), code_at("ABCDEFG=", 59));
        assert!(code_at("ABCDEFG", 59).is_some());
        for bad in ["", "   ", "A", "ABC", "GEZDGNBVGY3TQOJQ1", "GEZDGNBV GY3TQOJQ", "GEZDGNBVGY3TQOJQ8", "é"] {
            assert_eq!(code_at(bad, 59), None, "{bad:?}");
            assert!(!verify(bad, "287082", 59), "{bad:?}");
        }
    }

    #[test]
    fn generated_secrets() {
        let secret = generate_secret();
        assert_eq!(secret.len(), 32);
        assert!(secret.bytes().all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)), "{secret}");
        assert_eq!(data_encoding::BASE32_NOPAD.decode(secret.as_bytes()).map(|k| k.len()), Ok(20));
        assert_ne!(secret, generate_secret());
        let code = code_at(&secret, 1_700_000_000).expect("a generated secret is valid");
        assert!(verify(&secret, &code, 1_700_000_000));
        assert!(verify(&secret, &code, 1_700_000_000 + PERIOD));
    }

    #[test]
    fn uri_layout_is_pquernas() {
        assert_eq!(
            uri("127.0.0.1:3000", "a@b.c", RFC_SECRET),
            "otpauth://totp/127.0.0.1:3000:a@b.c?algorithm=SHA1&digits=6&issuer=127.0.0.1:3000&period=30\
             &secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ"
        );
        assert_eq!(
            uri("localhost", "user+tag@example.com", "JBSWY3DPEHPK3PXP"),
            "otpauth://totp/localhost:user+tag@example.com?algorithm=SHA1&digits=6&issuer=localhost&period=30\
             &secret=JBSWY3DPEHPK3PXP"
        );
    }

    #[test]
    fn uri_escaping_is_gos() {
        // Path: `/ , ;` kept, space `%20`, `? # %` and non-ASCII escaped. Query (PathEscape):
        // `/ , ; ?` escaped too, `& = + : @ $` kept.
        assert_eq!(
            uri("My App/Co, Ltd; ok?", "ü #1%", "S"),
            "otpauth://totp/My%20App/Co,%20Ltd;%20ok%3F:%C3%BC%20%231%25?algorithm=SHA1&digits=6\
             &issuer=My%20App%2FCo%2C%20Ltd%3B%20ok%3F&period=30&secret=S"
        );
        assert_eq!(
            uri("a&b=c+d$e@f", "x", "S"),
            "otpauth://totp/a&b=c+d$e@f:x?algorithm=SHA1&digits=6&issuer=a&b=c+d$e@f&period=30&secret=S"
        );
        assert_eq!(
            uri("tab\t\"<>\\^`{|}", "~-._", "S"),
            "otpauth://totp/tab%09%22%3C%3E%5C%5E%60%7B%7C%7D:~-._?algorithm=SHA1&digits=6\
             &issuer=tab%09%22%3C%3E%5C%5E%60%7B%7C%7D&period=30&secret=S"
        );
    }

    #[test]
    fn random_inputs_never_panic() {
        let mut rng = rand::thread_rng();
        for _ in 0..2000 {
            let len = rng.gen_range(0..48);
            let text: String = (0..len).map(|_| rng.gen::<char>()).collect();
            let time = rng.gen::<u64>();
            let _ = code_at(&text, time);
            let _ = verify(&text, &text, time);
            let _ = verify(RFC_SECRET, &text, time);
            let link = uri(&text, &text, &text);
            assert!(link.is_ascii(), "{link}");
            assert!(!link.bytes().any(|b| b == b'#' || b == b' ' || b.is_ascii_control()), "{link}");
        }
    }
}
