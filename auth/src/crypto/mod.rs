//! Auth's cryptography: the pure building blocks the endpoints compose (reference/auth.md §1.2,
//! §2.4, §4.2, §4.5, §5). Nothing here touches the database, the network or the clock: time is
//! an argument, randomness comes from the operating system.
//!
//! | module | owns |
//! |---|---|
//! | [`password`] | password hashes: new bcrypt hashes (cost 10, `$2a$`), verification of bcrypt and Argon2 hashes, GoTrue's re-hash rule |
//! | [`policy`] | the password policy: minimum length, required character sets, GoTrue's weak-password messages and reasons, the 72-byte limit |
//! | [`random`] | random identifiers and secrets: refresh tokens, UUIDs, numeric OTPs, URL-safe tokens |
//! | [`otp`] | the hashed one-time token of email links and `token_hash`, constant-time string equality |
//! | [`totp`] | TOTP (RFC 6238, SHA-1, 6 digits, 30 s): secrets, `otpauth://` URIs, codes, verification with ±1 step |
//! | [`qr`] | the SVG QR code of a TOTP enrollment |
//! | [`pkce`] | PKCE (RFC 7636): challenge methods, challenge validation, verifier checks |
//!
//! Invariants shared by every module:
//! - no function panics on any input (strings from clients and hashes from the database alike);
//!   the only panics left are a failing operating-system random source, as in GoTrue;
//! - every comparison of a secret with a presented value is constant-time in the content (lengths
//!   may show);
//! - behaviour is GoTrue's (supabase/auth): where this code departs from it, the function's doc
//!   says so.
//!
//! Password hashing and verification are deliberately slow (bcrypt cost 10 costs tens of
//! milliseconds of one core; Argon2 may cost more); callers run them on the blocking pool, never
//! on a shard's reactor. Everything else here is cheap.

pub mod otp;
pub mod password;
pub mod pkce;
pub mod policy;
pub mod qr;
pub mod random;
pub mod totp;
