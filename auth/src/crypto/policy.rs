//! The password policy (reference/auth.md §1.2, §8): minimum length, required character sets,
//! GoTrue's weak-password messages and reasons, and bcrypt's 72-byte limit.
//!
//! Invariants, from GoTrue's `checkPasswordStrength` (`internal/api/password.go`):
//! - lengths are counted in bytes of UTF-8, not characters;
//! - a password longer than [`MAX_PASSWORD_BYTES`] is not weak but invalid: callers answer 400
//!   `validation_failed` with [`TOO_LONG_MESSAGE`] before asking [`PasswordPolicy::check`];
//! - the length rule is reported before the character rule; the character rule is reported once,
//!   naming every set; the messages of all failed rules are joined with one space;
//! - the `pwned` reason (HaveIBeenPwned) is not decided here.

use std::fmt;

/// bcrypt reads at most 72 bytes of a password; GoTrue refuses longer ones.
pub const MAX_PASSWORD_BYTES: usize = 72;

/// The 400 `validation_failed` message for a password over [`MAX_PASSWORD_BYTES`] bytes.
pub const TOO_LONG_MESSAGE: &str = "Password cannot be longer than 72 characters";

/// The `weak_password.reasons` entry for a password shorter than the minimum.
pub const REASON_LENGTH: &str = "length";
/// The `weak_password.reasons` entry for a password missing a required character set.
pub const REASON_CHARACTERS: &str = "characters";
/// The `weak_password.reasons` entry for a password found in a breach corpus (decided by callers).
pub const REASON_PWNED: &str = "pwned";

/// Whether a password is over bcrypt's limit (GoTrue's 400 [`TOO_LONG_MESSAGE`]).
pub fn too_long(password: &str) -> bool {
    password.len() > MAX_PASSWORD_BYTES
}

/// A password policy: `[auth] minimum_password_length` and the sets of `password_requirements`
/// (see `settings::required_character_sets`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordPolicy<'a> {
    /// Fewest bytes a password may have. Used as given: raising values below 6 to 6, as GoTrue
    /// does, is the settings' job.
    pub min_length: usize,
    /// Character sets of which a password must contain at least one character each. Empty sets
    /// are ignored (GoTrue's configuration never holds one).
    pub required_sets: &'a [&'a str],
}

/// Why a password is weak: GoTrue's 422 `weak_password` message and reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeakPassword {
    /// The messages of the failed rules, joined with a space.
    pub message: String,
    /// [`REASON_LENGTH`] and/or [`REASON_CHARACTERS`], in that order.
    pub reasons: Vec<&'static str>,
}

impl fmt::Display for WeakPassword {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for WeakPassword {}

impl PasswordPolicy<'_> {
    /// Checks a password against the length and character rules. Does not check
    /// [`MAX_PASSWORD_BYTES`] (see [`too_long`]).
    ///
    /// Messages: `Password should be at least N characters.` and
    /// `Password should contain at least one character of each: <sets joined by ", ">.`
    pub fn check(&self, password: &str) -> Result<(), WeakPassword> {
        let mut messages: Vec<String> = Vec::new();
        let mut reasons: Vec<&'static str> = Vec::new();

        if password.len() < self.min_length {
            reasons.push(REASON_LENGTH);
            messages.push(format!("Password should be at least {} characters.", self.min_length));
        }

        let sets = || self.required_sets.iter().copied().filter(|set| !set.is_empty());
        if sets().any(|set| !password.chars().any(|c| set.contains(c))) {
            reasons.push(REASON_CHARACTERS);
            let names: Vec<&str> = sets().collect();
            messages.push(format!("Password should contain at least one character of each: {}.", names.join(", ")));
        }

        debug_assert_eq!(messages.len(), reasons.len());
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(WeakPassword { message: messages.join(" "), reasons })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    const LOWER: &str = "abcdefghijklmnopqrstuvwxyz";
    const UPPER: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const DIGITS: &str = "0123456789";
    const SYMBOLS: &str = "!@#$%^&*()_+-=[]{};'\\:\"|<>?,./`~";

    fn policy(min_length: usize, required_sets: &'static [&'static str]) -> PasswordPolicy<'static> {
        PasswordPolicy { min_length, required_sets }
    }

    #[test]
    fn length_rule() {
        let p = policy(6, &[]);
        assert_eq!(p.check("123456"), Ok(()));
        assert_eq!(p.check("1234567"), Ok(()));
        let weak = p.check("12345").unwrap_err();
        assert_eq!(weak.message, "Password should be at least 6 characters.");
        assert_eq!(weak.reasons, ["length"]);
        assert_eq!(p.check("").unwrap_err().reasons, ["length"]);
        assert_eq!(weak.to_string(), weak.message);
    }

    #[test]
    fn length_counts_bytes() {
        let p = policy(6, &[]);
        assert_eq!(p.check("ééé"), Ok(())); // 3 characters, 6 bytes
        assert_eq!(p.check("éé").unwrap_err().reasons, ["length"]); // 4 bytes
        assert_eq!(p.check("🔑🔑"), Ok(())); // 8 bytes
    }

    #[test]
    fn character_rule_names_every_set() {
        let p = policy(6, &[LOWER, UPPER, DIGITS]);
        assert_eq!(p.check("abcDEF123"), Ok(()));
        let weak = p.check("abcdefgh").unwrap_err();
        assert_eq!(weak.reasons, ["characters"]);
        assert_eq!(
            weak.message,
            "Password should contain at least one character of each: abcdefghijklmnopqrstuvwxyz, \
             ABCDEFGHIJKLMNOPQRSTUVWXYZ, 0123456789."
        );
        // Two missing sets still give one reason and one message.
        assert_eq!(p.check("abcdefgh").unwrap_err().reasons.len(), 1);
    }

    #[test]
    fn both_rules_join_with_a_space_length_first() {
        let p = policy(8, &[LOWER, DIGITS]);
        let weak = p.check("abc").unwrap_err();
        assert_eq!(weak.reasons, ["length", "characters"]);
        assert_eq!(
            weak.message,
            "Password should be at least 8 characters. Password should contain at least one character of each: \
             abcdefghijklmnopqrstuvwxyz, 0123456789."
        );
    }

    #[test]
    fn symbols_set_and_empty_sets() {
        let p = policy(6, &[LOWER, UPPER, DIGITS, SYMBOLS]);
        assert_eq!(p.check("aB3\\xyz"), Ok(()));
        assert_eq!(p.check("aB3\"xyz"), Ok(()));
        assert_eq!(p.check("aB3 xyz").unwrap_err().reasons, ["characters"]);
        // An empty set is no requirement and is not named.
        let p = policy(6, &["", DIGITS]);
        assert_eq!(p.check("abcdef1"), Ok(()));
        assert_eq!(
            p.check("abcdefg").unwrap_err().message,
            "Password should contain at least one character of each: 0123456789."
        );
        assert_eq!(policy(6, &[""]).check("abcdefg"), Ok(()));
    }

    #[test]
    fn sets_match_by_character_not_byte() {
        // "é" is 0xC3 0xA9; "ã" is 0xC3 0xA3: sharing a byte is not sharing a character.
        let p = policy(1, &["é"]);
        assert_eq!(p.check("é"), Ok(()));
        assert_eq!(p.check("ã").unwrap_err().reasons, ["characters"]);
    }

    #[test]
    fn too_long_is_over_72_bytes() {
        assert!(!too_long(&"a".repeat(72)));
        assert!(too_long(&"a".repeat(73)));
        assert!(too_long(&"é".repeat(37))); // 37 characters, 74 bytes
        assert_eq!(TOO_LONG_MESSAGE, format!("Password cannot be longer than {MAX_PASSWORD_BYTES} characters"));
    }

    #[test]
    fn random_inputs_never_panic() {
        let mut rng = rand::thread_rng();
        let p = policy(8, &[LOWER, UPPER, DIGITS, SYMBOLS, "é🔑"]);
        for _ in 0..3000 {
            let len = rng.gen_range(0..100);
            let text: String = (0..len).map(|_| rng.gen::<char>()).collect();
            match p.check(&text) {
                Ok(()) => assert!(text.len() >= 8),
                Err(weak) => {
                    assert!(!weak.reasons.is_empty() && weak.reasons.len() <= 2);
                    assert!(weak.message.ends_with('.'));
                }
            }
            let _ = too_long(&text);
        }
    }
}
