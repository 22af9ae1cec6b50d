//! What the admin API reads as GoTrue does: `ban_duration` (a Go duration) and the
//! `password_hash` formats `NewUserWithPasswordHash` accepts.

use super::MAX_FIELD_BYTES;
use crate::error::{AuthError, AuthResult};
use crate::go::{go_parse_duration, go_quote};

/// Whether GoTrue accepts `hash` as a `password_hash` (`models.NewUserWithPasswordHash`): an
/// Argon2 PHC string within its limits, a Firebase scrypt string, or anything Go's `bcrypt.Cost`
/// reads (`$`, a major version ≤ 2, a cost of 4–31, at least 59 bytes); at most 255 bytes.
pub(super) fn valid_password_hash(hash: &str) -> bool {
    if hash.len() > MAX_FIELD_BYTES {
        // `encrypted_password` is varchar(255): GoTrue fails on the insert instead.
        false
    } else if hash.starts_with("$argon2") {
        valid_argon2(hash)
    } else if let Some(rest) = hash.strip_prefix("$fbscrypt$") {
        valid_fbscrypt(rest)
    } else {
        valid_bcrypt(hash)
    }
}

pub(super) fn valid_bcrypt(hash: &str) -> bool {
    let b = hash.as_bytes();
    if b.len() < 59 || b[0] != b'$' || b[1] > b'2' {
        return false;
    }
    let cost_at = if b[2] != b'$' { 4 } else { 3 };
    let Some(cost) = hash.get(cost_at..cost_at + 2) else { return false };
    cost.bytes().all(|c| c.is_ascii_digit()) && cost.parse::<u32>().is_ok_and(|c| (4..=31).contains(&c))
}

/// `$argon2(i|id)$v=19$m=…,t=…,p=…$<salt>$<hash>` with GoTrue's limits and non-empty base64 parts.
pub(super) fn valid_argon2(hash: &str) -> bool {
    use base64::Engine as _;
    let engine = base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone)
            .with_decode_allow_trailing_bits(true),
    );
    let Some(rest) = hash.strip_prefix("$argon2id$").or_else(|| hash.strip_prefix("$argon2i$")) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix("v=19$") else { return false };
    let mut parts = rest.splitn(3, '$');
    let (Some(params), Some(salt), Some(digest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let mut limits = [("m=", 1024 * 1024), ("t=", 20), ("p=", 16)].into_iter();
    let params_ok = params.split(',').all(|param| match limits.next() {
        Some((name, max)) => param
            .strip_prefix(name)
            .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n <= max),
        None => false,
    }) && limits.next().is_none();
    let decodes = |part: &str| !part.contains('$') && engine.decode(part).is_ok_and(|bytes| !bytes.is_empty());
    params_ok && decodes(salt) && decodes(digest)
}

/// `v=…,n=…,r=…,p=…[,ss=…][,sk=…]$<salt>$<hash>` (after `$fbscrypt$`), as GoTrue's pattern reads it.
pub(super) fn valid_fbscrypt(rest: &str) -> bool {
    let mut parts = rest.splitn(3, '$');
    let (Some(params), Some(salt), Some(digest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let numbers = ["v=", "n=", "r=", "p="];
    let mut fields = params.split(',');
    let numbers_ok = numbers.iter().all(|name| {
        fields
            .next()
            .and_then(|f| f.strip_prefix(name))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    });
    let optional_ok = fields.all(|f| f.starts_with("ss=") || f.starts_with("sk="));
    numbers_ok && optional_ok && !salt.is_empty() && !digest.is_empty()
}

/// `ban_duration`: absent or `""` → untouched (`None`); `"none"` or a zero duration → cleared
/// (`Some(None)`); otherwise banned for that long from now (`Some(Some(µs))`, which may be
/// negative, as Go allows).
pub(super) fn ban_micros(text: Option<&str>) -> AuthResult<Option<Option<i64>>> {
    let Some(text) = text.filter(|t| !t.is_empty()) else { return Ok(None) };
    if text == "none" {
        return Ok(Some(None));
    }
    let parsed = match text.len() {
        0..=MAX_FIELD_BYTES => go_parse_duration(text),
        _ => Err(format!("time: invalid duration {}", go_quote(crate::call::truncate(text, MAX_FIELD_BYTES)))),
    };
    let nanos = parsed.map_err(|e| AuthError::validation(format!("invalid format for ban duration: {e}")))?;
    Ok(Some((nanos != 0).then_some(nanos / 1000)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans() {
        assert_eq!(ban_micros(None).unwrap(), None);
        assert_eq!(ban_micros(Some("")).unwrap(), None);
        assert_eq!(ban_micros(Some("none")).unwrap(), Some(None));
        assert_eq!(ban_micros(Some("0s")).unwrap(), Some(None));
        assert_eq!(ban_micros(Some("24h")).unwrap(), Some(Some(86_400_000_000)));
        let long = format!("{}h", "1".repeat(300));
        assert!(ban_micros(Some(&long))
            .unwrap_err()
            .message
            .starts_with("invalid format for ban duration: time: invalid"));
        let error = ban_micros(Some("forever")).unwrap_err();
        assert_eq!(error.status, 400);
        assert_eq!(error.message, "invalid format for ban duration: time: invalid duration \"forever\"");
    }

    #[test]
    fn hashes() {
        assert!(valid_password_hash("$2a$10$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234"));
        assert!(valid_password_hash("$2y$04$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234"));
        assert!(!valid_password_hash("$2a$03$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234"));
        assert!(!valid_password_hash("$2a$10$short"));
        assert!(!valid_password_hash("plain-text-password-that-is-long-enough-to-pass-59-bytes-xx"));
        assert!(valid_password_hash("$argon2id$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"));
        assert!(!valid_password_hash("$argon2d$v=19$m=16,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"));
        assert!(!valid_password_hash("$argon2id$v=19$m=16,t=21,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo"));
        assert!(!valid_password_hash("$argon2id$v=19$m=16,t=2,p=1$$aGFzaGhhc2hoYXNo"));
        assert!(valid_password_hash("$fbscrypt$v=1,n=14,r=8,p=1,ss=Bw==,sk=abc$c2FsdA$aGFzaA"));
    }
}
