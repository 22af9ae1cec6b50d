//! Auth's cryptography: password hashes, one-time codes, TOTP, PKCE, random tokens.
