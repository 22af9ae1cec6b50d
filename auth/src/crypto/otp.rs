//! One-time tokens: the hashed token that email links, `generate_link`'s `hashed_token` and
//! `/verify`'s `token_hash` carry, and constant-time string equality for comparing any presented
//! secret with a stored one.
//!
//! Invariants: [`token_hash`] is GoTrue's `GenerateTokenHash` bit for bit (lowercase hex of
//! SHA-224 over the address and the code, concatenated with nothing between them), so hashes
//! written by GoTrue into `auth.users` / `auth.one_time_tokens` keep verifying; [`ct_eq`] takes
//! time independent of where two equal-length strings differ.

use sha2::{Digest as _, Sha224};
use subtle::ConstantTimeEq;

/// The hashed one-time token for an email address or phone number and the code sent to it:
/// lowercase hex of SHA-224 over `email_or_phone` followed directly by `otp` (56 characters).
///
/// The caller passes the address exactly as stored (GoTrue hashes the user's email as kept in
/// `auth.users`, the phone as formatted for sending).
pub fn token_hash(email_or_phone: &str, otp: &str) -> String {
    let hash = Sha224::new().chain_update(email_or_phone.as_bytes()).chain_update(otp.as_bytes()).finalize();
    debug_assert_eq!(hash.len(), 28);
    data_encoding::HEXLOWER.encode(&hash)
}

/// Whether `a` and `b` are equal, in time that depends on their lengths but not on their content.
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_hash_is_hex_sha224_of_address_then_code() {
        // Independent values: Python's hashlib.sha224(b"a@b.c123456").hexdigest() and
        // hashlib.sha224(b"+15555550100000042").hexdigest().
        assert_eq!(token_hash("a@b.c", "123456"), "19fc8045654795b943ae7db4b637d9ee44d1dc98644c90a3fb01fa3f");
        assert_eq!(token_hash("+15555550100", "000042"), "85227ef00157758eb1af39233a566f2d6f7fd32840fbe699e2aa4889");
        // SHA-224 of the empty string (FIPS 180-4 example).
        assert_eq!(token_hash("", ""), "d14a028c2a3a2bc9476102bb288234c415a2b01f828ea62ac5b3e42f");
    }

    #[test]
    fn token_hash_concatenates_without_separator() {
        assert_eq!(token_hash("a@b.c1", "23456"), token_hash("a@b.c", "123456"));
        assert_ne!(token_hash("a@b.c", "123456"), token_hash("a@b.c", "123457"));
        assert_eq!(token_hash("x", "y").len(), 56);
    }

    #[test]
    fn ct_eq_matches_equality() {
        assert!(ct_eq("", ""));
        assert!(ct_eq("123456", "123456"));
        assert!(!ct_eq("123456", "123457"));
        assert!(!ct_eq("123456", "12345"));
        assert!(!ct_eq("", "1"));
        assert!(ct_eq("pässwörd", "pässwörd"));
    }
}
