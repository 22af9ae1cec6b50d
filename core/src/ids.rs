//! Identifiers every service makes or checks: random (version 4) UUIDs, as GoTrue, Realtime and
//! Storage write them.
//!
//! Invariants: [`uuid_v4`] draws its 122 random bits from the operating system's CSPRNG (ring's
//! `SystemRandom`), so ids are unguessable; its text is lowercase and hyphenated, which
//! [`is_uuid`] accepts (as it accepts upper case).

use ring::rand::{SecureRandom, SystemRandom};

/// A random (version 4, RFC 9562) UUID, lowercase and hyphenated:
/// `xxxxxxxx-xxxx-4xxx-Nxxx-xxxxxxxxxxxx` with `N` one of `8 9 a b`.
pub fn uuid_v4() -> String {
    let mut bytes = [0u8; 16];
    SystemRandom::new().fill(&mut bytes).expect("the operating system's random source is available");
    bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
    bytes[8] = (bytes[8] & 0x3f) | 0x80; // variant 10xx
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    debug_assert_eq!(hex.len(), 32);
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Lower-case or upper-case hyphenated UUID text (8-4-4-4-12 hexadecimal digits).
pub fn is_uuid(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_version_4_and_recognised() {
        let a = uuid_v4();
        assert!(is_uuid(&a), "{a}");
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
        assert_ne!(a, uuid_v4());
        assert!(is_uuid("4D56E902-F0A0-4662-8448-A4D9E643C142"));
        assert!(!is_uuid("user-1"));
        assert!(!is_uuid("4d56e902f0a0-4662-8448-a4d9e643c142-"));
    }
}
