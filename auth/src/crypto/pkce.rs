//! PKCE (RFC 7636) as GoTrue applies it: the two challenge methods, the validation of a
//! `code_challenge` when a flow starts, and the check of a `code_verifier` when the code is
//! exchanged (`POST /token?grant_type=pkce`).
//!
//! Invariants: [`check_challenge`] accepts exactly what GoTrue's `isValidCodeChallenge`
//! accepts (43–128 bytes of `[A-Za-z0-9._~-]`) with its messages; [`verify`] compares in
//! constant time for both methods; nothing here panics on any input.

use base64::Engine as _;
use ring::digest;
use subtle::ConstantTimeEq;

/// Shortest accepted `code_challenge` (RFC 7636 §4.2).
pub const MIN_CHALLENGE_LEN: usize = 43;
/// Longest accepted `code_challenge`.
pub const MAX_CHALLENGE_LEN: usize = 128;

/// The 400 `validation_failed` message for a challenge of the wrong length.
pub const CHALLENGE_LENGTH_MESSAGE: &str = "code challenge has to be between 43 and 128 characters";
/// The 400 `validation_failed` message for a challenge with other characters.
pub const CHALLENGE_CHARACTERS_MESSAGE: &str =
    "code challenge can only contain alphanumeric characters, hyphens, periods, underscores and tildes";

/// A `code_challenge_method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `s256`: the challenge is base64url-without-padding(SHA-256(verifier)).
    S256,
    /// `plain`: the challenge is the verifier.
    Plain,
}

impl Method {
    /// Parses a `code_challenge_method` case-insensitively (`s256`, `S256`, `plain`, `PLAIN`, …),
    /// as GoTrue's `ParseCodeChallengeMethod` does; anything else is `None`.
    pub fn parse(text: &str) -> Option<Method> {
        if text.eq_ignore_ascii_case("s256") {
            Some(Method::S256)
        } else if text.eq_ignore_ascii_case("plain") {
            Some(Method::Plain)
        } else {
            None
        }
    }

    /// The name GoTrue stores in `auth.flow_state.code_challenge_method`: `s256` or `plain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::S256 => "s256",
            Method::Plain => "plain",
        }
    }
}

/// Checks a `code_challenge` as GoTrue does when a PKCE flow starts: first its length in bytes
/// (43–128), then its characters (`A`–`Z a`–`z 0`–`9 . _ ~ -`). The error is the message of
/// GoTrue's 400 `validation_failed`.
pub fn check_challenge(challenge: &str) -> Result<(), &'static str> {
    if !(MIN_CHALLENGE_LEN..=MAX_CHALLENGE_LEN).contains(&challenge.len()) {
        return Err(CHALLENGE_LENGTH_MESSAGE);
    }
    let allowed = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b'-');
    if !challenge.bytes().all(allowed) {
        return Err(CHALLENGE_CHARACTERS_MESSAGE);
    }
    Ok(())
}

/// The S256 challenge of a verifier: base64url without padding of SHA-256 over its bytes.
pub fn s256_challenge(verifier: &str) -> String {
    let hash = digest::digest(&digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hash.as_ref())
}

/// Whether `verifier` answers the stored `challenge` under `method`, compared in constant time.
/// Like GoTrue, the verifier itself is not checked for RFC 7636's length or alphabet.
pub fn verify(verifier: &str, challenge: &str, method: Method) -> bool {
    match method {
        Method::S256 => s256_challenge(verifier).as_bytes().ct_eq(challenge.as_bytes()).into(),
        Method::Plain => verifier.as_bytes().ct_eq(challenge.as_bytes()).into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    /// RFC 7636 Appendix B.
    const RFC_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    /// reference/captures/wire_capture_auth_readable.txt: the challenge auth-js put in the
    /// `/authorize` URL and the verifier it sent to `/token?grant_type=pkce`.
    const CAPTURED_VERIFIER: &str =
        "46c9f8d985c8dce9dc98ecc1ab25d5642304abf946d95f2a0dee38602df1b145b0fa8ce033f4ad026487624878f51572d22ba907b89bfd2d";
    const CAPTURED_CHALLENGE: &str = "qyBADmewrEx9Pj8PkSWgZ_7Z_sR_7pT3BihlgmQwvW8";

    #[test]
    fn rfc7636_example() {
        assert_eq!(s256_challenge(RFC_VERIFIER), RFC_CHALLENGE);
        assert!(verify(RFC_VERIFIER, RFC_CHALLENGE, Method::S256));
        assert!(!verify(RFC_VERIFIER, RFC_CHALLENGE, Method::Plain));
        assert!(!verify("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXK", RFC_CHALLENGE, Method::S256));
        assert_eq!(check_challenge(RFC_CHALLENGE), Ok(()));
    }

    #[test]
    fn auth_js_capture() {
        assert!(verify(CAPTURED_VERIFIER, CAPTURED_CHALLENGE, Method::S256));
        assert_eq!(check_challenge(CAPTURED_CHALLENGE), Ok(()));
        assert!(!verify(CAPTURED_VERIFIER, RFC_CHALLENGE, Method::S256));
    }

    #[test]
    fn plain_is_equality() {
        assert!(verify(RFC_VERIFIER, RFC_VERIFIER, Method::Plain));
        assert!(!verify(RFC_VERIFIER, &RFC_VERIFIER[1..], Method::Plain));
        assert!(!verify("", "x", Method::Plain));
    }

    #[test]
    fn methods_parse_case_insensitively() {
        assert_eq!(Method::parse("s256"), Some(Method::S256));
        assert_eq!(Method::parse("S256"), Some(Method::S256));
        assert_eq!(Method::parse("plain"), Some(Method::Plain));
        assert_eq!(Method::parse("PLAIN"), Some(Method::Plain));
        assert_eq!(Method::parse("Plain"), Some(Method::Plain));
        assert_eq!(Method::parse(""), None);
        assert_eq!(Method::parse("sha256"), None);
        assert_eq!(Method::parse(" s256"), None);
        assert_eq!(Method::parse("ſ256"), None); // U+017F, which Unicode case folding maps to `s`
        assert_eq!(Method::S256.as_str(), "s256");
        assert_eq!(Method::Plain.as_str(), "plain");
        assert_eq!(Method::parse(Method::S256.as_str()), Some(Method::S256));
    }

    #[test]
    fn challenge_rules_and_messages() {
        assert_eq!(check_challenge(""), Err(CHALLENGE_LENGTH_MESSAGE));
        assert_eq!(check_challenge(&"a".repeat(42)), Err(CHALLENGE_LENGTH_MESSAGE));
        assert_eq!(check_challenge(&"a".repeat(43)), Ok(()));
        assert_eq!(check_challenge(&"a".repeat(128)), Ok(()));
        assert_eq!(check_challenge(&"a".repeat(129)), Err(CHALLENGE_LENGTH_MESSAGE));
        // Length is checked first, in bytes.
        assert_eq!(check_challenge(&"!".repeat(10)), Err(CHALLENGE_LENGTH_MESSAGE));
        assert_eq!(check_challenge(&"é".repeat(22)), Err(CHALLENGE_CHARACTERS_MESSAGE)); // 44 bytes
        assert_eq!(check_challenge(&"é".repeat(21)), Err(CHALLENGE_LENGTH_MESSAGE)); // 42 bytes
        assert_eq!(check_challenge(&format!("{}=", "a".repeat(43))), Err(CHALLENGE_CHARACTERS_MESSAGE));
        assert_eq!(check_challenge(&format!("{} ", "a".repeat(43))), Err(CHALLENGE_CHARACTERS_MESSAGE));
        assert_eq!(check_challenge(&format!("{}+/", "a".repeat(43))), Err(CHALLENGE_CHARACTERS_MESSAGE));
        assert_eq!(check_challenge(&format!("{}\n", "a".repeat(43))), Err(CHALLENGE_CHARACTERS_MESSAGE));
        assert_eq!(check_challenge("AZaz09._~-AZaz09._~-AZaz09._~-AZaz09._~-AZa"), Ok(()));
    }

    #[test]
    fn random_inputs_never_panic() {
        let mut rng = rand::thread_rng();
        for _ in 0..2000 {
            let len = rng.gen_range(0..160);
            let text: String = (0..len).map(|_| rng.gen::<char>()).collect();
            let _ = check_challenge(&text);
            let _ = Method::parse(&text);
            assert!(!verify(&text, &text, Method::S256) || s256_challenge(&text) == text);
            assert!(verify(&text, &text, Method::Plain));
            assert!(verify(&text, &s256_challenge(&text), Method::S256));
            assert_eq!(check_challenge(&s256_challenge(&text)), Ok(()));
        }
    }
}
