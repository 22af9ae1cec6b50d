//! Password hashes (reference/auth.md §4.2): new hashes, verification of stored ones, and
//! GoTrue's rule for re-hashing after a successful sign-in.
//!
//! What it accepts, from GoTrue's `internal/crypto/password.go` and `models.User.Authenticate`:
//! - **bcrypt** `$2a$`, `$2b$`, `$2y$` (and `$2x$`, which Go's bcrypt also reads as `$2a$`), any
//!   cost 04–31; new hashes are `$2a$10$…` (Go's `bcrypt.DefaultCost`, Go's version letter).
//!   pgcrypto's `crypt(pw, gen_salt('bf'))` (`$2a$06$…`) verifies. Only the first 72 bytes of a
//!   password count, as in every bcrypt.
//! - **Argon2** PHC strings `$argon2id$v=19$m=…,t=…,p=…$<salt>$<hash>` and `$argon2i$…`, with
//!   GoTrue's limits: version 19 only, no `keyid`/`data`, m ≤ 1 GiB (1048576 KiB), t ≤ 20,
//!   p ≤ 16, salt and hash unpadded standard base64 and not empty. `$argon2d$` is refused, as
//!   GoTrue refuses it.
//! - **Firebase scrypt** `$fbscrypt$…` is not supported (it needs scrypt and AES-256-CTR, which
//!   none of the crate's dependencies provide): such hashes never verify.
//!
//! Invariants: [`verify`] never panics and answers `false` for every unknown or malformed hash;
//! derived keys are compared in constant time; [`hash`] output always verifies with the same
//! password. [`hash`] and [`verify`] are CPU-heavy by design (bcrypt cost 10 is tens of
//! milliseconds of one core; an imported Argon2 hash may ask for up to 1 GiB and 20 passes):
//! callers run them on the blocking pool, never on a reactor. [`needs_rehash`] is cheap.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore as _;
use subtle::ConstantTimeEq;

/// The bcrypt cost of new hashes (Go's `bcrypt.DefaultCost`).
pub const BCRYPT_COST: u32 = 10;

/// bcrypt's smallest cost; GoTrue re-hashes hashes of this cost (they come from its test mode).
const BCRYPT_MIN_COST: u32 = 4;
const BCRYPT_MAX_COST: u32 = 31;

/// Length of a bcrypt hash: `$2a$10$` (7), salt (22), hash (31).
const BCRYPT_HASH_LEN: usize = 60;

/// GoTrue's Argon2 limits (`ParseArgon2Hash`).
const ARGON2_MAX_M_KIB: u32 = 1024 * 1024;
const ARGON2_MAX_T: u32 = 20;
const ARGON2_MAX_P: u32 = 16;

/// Go's `base64.RawStdEncoding`: standard alphabet, no padding, trailing bits not checked.
const RAW_STD_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// bcrypt's own base64 alphabet, no padding, trailing bits not checked (as Go's bcrypt reads
/// salts).
const BCRYPT_B64_LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::BCRYPT,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// A new bcrypt hash of `password`: `$2a$10$<salt><hash>` with a random salt.
///
/// Passwords over 72 bytes are hashed by their first 72 bytes (bcrypt's limit); callers refuse
/// them first (`policy::too_long`), as GoTrue does. CPU-heavy: run it on the blocking pool.
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    OsRng.fill_bytes(&mut salt);
    let parts = bcrypt::hash_with_salt(password, BCRYPT_COST, salt).expect("bcrypt cost 10 is a valid cost");
    let hash = parts.format_for_version(bcrypt::Version::TwoA);
    debug_assert_eq!(hash.len(), BCRYPT_HASH_LEN);
    debug_assert!(hash.starts_with("$2a$10$"));
    hash
}

/// Whether `password` matches the stored `hash` (bcrypt or Argon2, see the module doc).
/// Unknown, malformed or unsupported hashes give `false`; nothing panics.
///
/// CPU-heavy: run it on the blocking pool.
pub fn verify(password: &str, hash: &str) -> bool {
    if hash.starts_with("$argon2") {
        parse_argon2(hash).is_some_and(|parsed| parsed.verify(password))
    } else if hash.starts_with("$fbscrypt") {
        false
    } else {
        parse_bcrypt(hash).is_some_and(|parsed| parsed.verify(password))
    }
}

/// Whether GoTrue would replace `hash` by a fresh [`hash`] after a successful sign-in with it:
/// bcrypt hashes whose cost is above 10 or exactly 4. Cheaper bcrypt costs (5–9, e.g.
/// pgcrypto's 6), Argon2, Firebase scrypt and unreadable hashes are kept as they are.
pub fn needs_rehash(hash: &str) -> bool {
    if hash.starts_with("$argon2") || hash.starts_with("$fbscrypt") {
        return false;
    }
    parse_bcrypt(hash).is_some_and(|parsed| parsed.cost > BCRYPT_COST || parsed.cost == BCRYPT_MIN_COST)
}

/// A bcrypt hash read as Go's bcrypt reads it.
struct Bcrypt<'a> {
    cost: u32,
    salt: [u8; 16],
    /// The 31 characters of the hash part, as stored.
    digest: &'a str,
}

fn parse_bcrypt(hash: &str) -> Option<Bcrypt<'_>> {
    let b = hash.as_bytes();
    // `$2a$10$` + 22 salt characters + 31 hash characters.
    if b.len() != BCRYPT_HASH_LEN || !hash.starts_with("$2") || b[3] != b'$' || b[6] != b'$' {
        return None;
    }
    if !matches!(b[2], b'a' | b'b' | b'x' | b'y') || !b[4].is_ascii_digit() || !b[5].is_ascii_digit() {
        return None;
    }
    let cost = u32::from(b[4] - b'0') * 10 + u32::from(b[5] - b'0');
    if !(BCRYPT_MIN_COST..=BCRYPT_MAX_COST).contains(&cost) {
        return None;
    }
    // All ASCII from here on (checked), so the slices below are on character boundaries.
    let bcrypt_char = |c: &u8| c.is_ascii_alphanumeric() || *c == b'.' || *c == b'/';
    if !b[7..].iter().all(bcrypt_char) {
        return None;
    }
    let salt: [u8; 16] = BCRYPT_B64_LENIENT.decode(&hash[7..29]).ok()?.try_into().ok()?;
    let digest = &hash[29..];
    debug_assert_eq!(digest.len(), 31);
    Some(Bcrypt { cost, salt, digest })
}

impl Bcrypt<'_> {
    fn verify(&self, password: &str) -> bool {
        let Ok(parts) = bcrypt::hash_with_salt(password, self.cost, self.salt) else {
            return false;
        };
        let computed = parts.format_for_version(bcrypt::Version::TwoB);
        debug_assert_eq!(computed.len(), BCRYPT_HASH_LEN);
        let computed_digest = computed.get(29..).unwrap_or_default();
        computed_digest.as_bytes().ct_eq(self.digest.as_bytes()).into()
    }
}

/// An Argon2 PHC string within GoTrue's limits.
struct Argon2Hash {
    algorithm: argon2::Algorithm,
    m_kib: u32,
    t: u32,
    p: u32,
    salt: Vec<u8>,
    digest: Vec<u8>,
}

/// Reads `$argon2{id,i}$v=19$m=<m>,t=<t>,p=<p>$<salt>$<hash>` as GoTrue's `ParseArgon2Hash`
/// does (its regular expression, then its limits).
fn parse_argon2(hash: &str) -> Option<Argon2Hash> {
    let rest = hash.strip_prefix("$argon2")?;
    let (algorithm, rest) = if let Some(rest) = rest.strip_prefix("id$") {
        (argon2::Algorithm::Argon2id, rest)
    } else if let Some(rest) = rest.strip_prefix("i$") {
        (argon2::Algorithm::Argon2i, rest)
    } else {
        return None; // `$argon2d$` and anything else
    };
    let rest = rest.strip_prefix("v=19$")?;
    let (m, rest) = number_until(rest.strip_prefix("m=")?, ',')?;
    let (t, rest) = number_until(rest.strip_prefix("t=")?, ',')?;
    // `p` ends at `$`; a `,keyid=` or `,data=` (refused by GoTrue) fails here.
    let (p, rest) = number_until(rest.strip_prefix("p=")?, '$')?;
    let (salt, digest) = rest.split_once('$')?;
    if digest.contains('\n') {
        return None;
    }
    if m > u64::from(ARGON2_MAX_M_KIB) || t > u64::from(ARGON2_MAX_T) || p > u64::from(ARGON2_MAX_P) {
        return None;
    }
    let salt = RAW_STD_LENIENT.decode(salt).ok()?;
    let digest = RAW_STD_LENIENT.decode(digest).ok()?;
    if salt.is_empty() || digest.is_empty() {
        return None;
    }
    Some(Argon2Hash {
        algorithm,
        m_kib: u32::try_from(m).ok()?,
        t: u32::try_from(t).ok()?,
        p: u32::try_from(p).ok()?,
        salt,
        digest,
    })
}

/// A decimal number (`[0-9]+`) up to `end`, and the text after `end`.
fn number_until(text: &str, end: char) -> Option<(u64, &str)> {
    let (digits, rest) = text.split_once(end)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, rest))
}

impl Argon2Hash {
    fn verify(&self, password: &str) -> bool {
        // Go's argon2 panics on t = 0 or p = 0 (GoTrue answers 500); this crate also needs
        // m ≥ 8·p, a salt of at least 8 bytes and a hash of at least 4: all those are `false`.
        let Ok(params) = argon2::Params::new(self.m_kib, self.t, self.p, Some(self.digest.len())) else {
            return false;
        };
        let hasher = argon2::Argon2::new(self.algorithm, argon2::Version::V0x13, params);
        let mut computed = vec![0u8; self.digest.len()];
        if hasher.hash_password_into(password.as_bytes(), &self.salt, &mut computed).is_err() {
            return false;
        }
        computed.ct_eq(&self.digest).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng as _;

    /// From a real pgcrypto: `select crypt('password123', gen_salt('bf'))` and `gen_salt('bf', 10)`.
    const PGCRYPTO_06: &str = "$2a$06$fUVI3FmAa.2rH/qogO..7ub1mAQZBIOnobTsd6sgdeAv.tAGHNSPu";
    const PGCRYPTO_10: &str = "$2a$10$GnB96Ajkf0sdlpdm24ZBc.H1HIrasU7ogZO.UE0FziLJZJT6WifEq";

    /// From libxcrypt's crypt(3) (Python's `crypt.crypt`), an independent implementation.
    const XCRYPT_2Y_05: &str = "$2y$05$abcdefghijklmnopqrstuuVvizFiIFKRHf5OQay/hm.7gM0NJgP1u"; // password123
    const XCRYPT_UNICODE: &str = "$2b$04$0123456789abcdefghijkeiW3pXAGFvUt89Dtn9IR5I8Z1/Nl.XlG"; // pässwörd-ünïcode
    const XCRYPT_72X: &str = "$2b$04$0123456789abcdefghijkeQTbmm.RcNPT0JaHsD9KFomKrKSIRYFm"; // "x" × 72
    const XCRYPT_EMPTY: &str = "$2a$04$0123456789abcdefghijkeagcC/LUFLxqVIZJNW0EnkwdNPowsYWi"; // ""

    /// GoTrue's own Argon2 examples (`internal/crypto/password_test.go`), both of the password `test`.
    const ARGON2I: &str = "$argon2i$v=19$m=16,t=2,p=1$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g";
    const ARGON2ID: &str =
        "$argon2id$v=19$m=32,t=3,p=2$SFVpOWJ0eXhjRzVkdGN1RQ$RXnb8rh7LaDcn07xsssqqulZYXOM/EUCEFMVcAcyYVk";

    #[test]
    fn new_hashes_are_2a_cost_10_and_verify() {
        let h = hash("password123");
        assert!(h.starts_with("$2a$10$"), "{h}");
        assert_eq!(h.len(), 60);
        assert!(verify("password123", &h));
        assert!(!verify("password124", &h));
        assert!(!needs_rehash(&h));
    }

    #[test]
    fn pgcrypto_hashes_verify() {
        assert!(verify("password123", PGCRYPTO_06));
        assert!(!verify("password1234", PGCRYPTO_06));
        assert!(!verify("", PGCRYPTO_06));
        assert!(verify("password123", PGCRYPTO_10));
        assert!(!verify("Password123", PGCRYPTO_10));
    }

    #[test]
    fn other_bcrypt_implementations_verify() {
        assert!(verify("password123", XCRYPT_2Y_05));
        assert!(verify("pässwörd-ünïcode", XCRYPT_UNICODE));
        assert!(!verify("passwörd-ünïcode", XCRYPT_UNICODE));
        assert!(verify("", XCRYPT_EMPTY));
        assert!(!verify("x", XCRYPT_EMPTY));
        // Only the first 72 bytes count.
        let x72 = "x".repeat(72);
        assert!(verify(&x72, XCRYPT_72X));
        assert!(verify(&format!("{x72}yyyy"), XCRYPT_72X));
        assert!(!verify(&"x".repeat(71), XCRYPT_72X));
    }

    #[test]
    fn version_letters() {
        let body = &PGCRYPTO_06[3..];
        for letter in ["a", "b", "x", "y"] {
            assert!(verify("password123", &format!("$2{letter}{body}")), "$2{letter}$");
        }
        for letter in ["", "c", "A", "$"] {
            assert!(!verify("password123", &format!("$2{letter}{body}")), "$2{letter}$");
        }
        assert!(!verify("password123", &format!("$3a{body}")));
    }

    #[test]
    fn malformed_bcrypt_is_false() {
        assert!(!verify("password123", ""));
        assert!(!verify("password123", "password123"));
        assert!(!verify("password123", &PGCRYPTO_06[..59]));
        assert!(!verify("password123", &format!("{PGCRYPTO_06}u")));
        assert!(!verify("password123", &PGCRYPTO_06.replace("$06$", "$6$$")));
        assert!(!verify("password123", &PGCRYPTO_06.replace("$06$", "$03$")));
        assert!(!verify("password123", &PGCRYPTO_06.replace("$06$", "$32$")));
        assert!(!verify("password123", &PGCRYPTO_06.replace("$06$", "$0a$")));
        assert!(!verify("password123", &PGCRYPTO_06.replace('.', "+")));
        assert!(!verify("password123", &PGCRYPTO_06.replace("fUVI", "fUVé")));
        // The last hash character differing only in its two unused bits: Go compares the text.
        assert!(!verify("password123", &PGCRYPTO_06.replace("HNSPu", "HNSPv")));
        assert!(!verify("password123", &PGCRYPTO_06.replace("HNSPu", "HNSPa")));
    }

    #[test]
    fn bcrypt_salts_are_read_leniently_like_go() {
        // The 22nd salt character carries 4 unused bits; libxcrypt wrote `e`, `l` differs only there.
        let lenient = XCRYPT_EMPTY.replacen("ghijke", "ghijkl", 1);
        assert!(verify("", &lenient));
        // The hash part must be exactly the canonical one.
        let last = XCRYPT_EMPTY.len() - 1;
        assert!(!verify("", &format!("{}{}", &XCRYPT_EMPTY[..last], "j")));
    }

    #[test]
    fn argon2_gotrue_examples() {
        assert!(verify("test", ARGON2I));
        assert!(verify("test", ARGON2ID));
        assert!(!verify("test1", ARGON2I));
        assert!(!verify("test1", ARGON2ID));
        assert!(!verify("", ARGON2ID));
        assert!(!needs_rehash(ARGON2I));
        assert!(!needs_rehash(ARGON2ID));
    }

    #[test]
    fn argon2_refusals_follow_gotrue() {
        // GoTrue's negative examples, then this crate's own limits and format checks.
        let refused = [
            "$argon2d$v=19$m=16,t=2,p=1$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2id$v=16$m=16,t=2,p=1$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2id$v=19$m=16,t=2,p=1,data=abc$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2id$v=19$m=16,t=2,p=1,keyid=abc$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2id$v=19$m=4294967297,t=2,p=1$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2id$v=19$m=16,t=4294967297,p=1$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2id$v=19$m=16,t=2,p=256$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2id$v=19$m=16,t=2,p=1$!!!$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2id$v=19$m=16,t=2,p=1$bGJRWThNOHJJTVBSdHl2dQ$!!!",
            "$argon2id$v=19$m=16,t=2,p=1$$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2id$v=19$m=16,t=2,p=1$bGJRWThNOHJJTVBSdHl2dQ$",
            // Over GoTrue's limits: 1 GiB + 1 KiB, 21 passes, 17 lanes.
            "$argon2i$v=19$m=1048577,t=2,p=1$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2i$v=19$m=16,t=21,p=1$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2i$v=19$m=1024,t=2,p=17$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            // Go's argon2 would panic on these (t = 0, p = 0); m below 8·p.
            "$argon2i$v=19$m=16,t=0,p=1$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2i$v=19$m=16,t=2,p=0$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2i$v=19$m=8,t=2,p=2$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            // Shapes: no version, padded base64, signs, spaces, missing parts.
            "$argon2i$m=16,t=2,p=1$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2i$v=19$m=16,t=2,p=1$bGJRWThNOHJJTVBSdHl2dQ==$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2i$v=19$m=+16,t=2,p=1$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2i$v=19$m=16,t=2,p=1 $bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2i$v=19$m=16,p=1,t=2$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g",
            "$argon2i$v=19$m=16,t=2,p=1$bGJRWThNOHJJTVBSdHl2dQ",
            "$argon2i$v=19$m=16,t=2,p=1$bGJRWThNOHJJTVBSdHl2dQ$NfEnUOuUpb7F2fQkgFUG4g\n",
            "$argon2",
            "$argon2id$",
        ];
        for hash in refused {
            assert!(!verify("test", hash), "{hash}");
            assert!(!needs_rehash(hash), "{hash}");
        }
    }

    #[test]
    fn argon2_leading_zeros_in_parameters_are_read_like_go() {
        let padded = ARGON2I.replace("m=16,t=2,p=1", "m=0016,t=02,p=001");
        assert!(verify("test", &padded));
    }

    #[test]
    fn firebase_scrypt_is_not_supported() {
        // GoTrue's example of the password `mytestpassword`.
        let fb = "$fbscrypt$v=1,n=14,r=8,p=1,ss=Bw==,sk=ou9tdYTGyYm8kuR6Dt0Bp0kDuAYoXrK16mbZO4yGwAn3oLspjnN0/c41v8xZnO1n14J3MjKj1b2g6AUCAlFwMw==$C0sHCg9ek77hsg==$zKVTMvnWVw5BBOZNUdnsalx4c4c7y/w7IS5p6Ut2+CfEFFlz37J9huyQfov4iizN8dbjvEJlM5tQaJP84+hfTw==";
        assert!(!verify("mytestpassword", fb));
        assert!(!needs_rehash(fb));
    }

    #[test]
    fn rehash_rule_is_gotrues() {
        let body = &PGCRYPTO_06[6..];
        let with_cost = |cost: u32| format!("$2a${cost:02}{body}");
        assert!(needs_rehash(&with_cost(4)));
        for cost in 5..=10 {
            assert!(!needs_rehash(&with_cost(cost)), "cost {cost}");
        }
        for cost in 11..=31 {
            assert!(needs_rehash(&with_cost(cost)), "cost {cost}");
        }
        assert!(!needs_rehash(PGCRYPTO_06));
        assert!(!needs_rehash(PGCRYPTO_10));
        assert!(needs_rehash(XCRYPT_EMPTY));
        assert!(needs_rehash(&XCRYPT_EMPTY.replace("$2a$", "$2y$")));
        assert!(!needs_rehash(""));
        assert!(!needs_rehash("$2a$04$short"));
        assert!(!needs_rehash(&with_cost(3)));
        assert!(!needs_rehash(&with_cost(32)));
    }

    /// Random text, and random single-character changes to valid hashes outside their cost
    /// parameters (a random cost could legitimately ask for hours of work).
    #[test]
    fn random_inputs_never_panic() {
        let mut rng = rand::thread_rng();
        let mutate = |rng: &mut rand::rngs::ThreadRng, base: &str, from: usize| -> String {
            let mut chars: Vec<char> = base.chars().collect();
            let at = rng.gen_range(from..chars.len());
            match rng.gen_range(0..3) {
                0 => chars[at] = rng.gen::<char>(),
                1 => chars[at] = char::from(rng.gen_range(b' '..=b'~')),
                _ => {
                    chars.remove(at);
                }
            }
            chars.into_iter().collect()
        };
        for _ in 0..300 {
            let len = rng.gen_range(0..90);
            let text: String = (0..len).map(|_| rng.gen::<char>()).collect();
            assert!(!verify(&text, &text));
            assert!(!needs_rehash(&text));
            let prefixed = format!("$argon2id$v=19${text}");
            assert!(!verify("test", &prefixed));
            let _ = verify(&text, XCRYPT_EMPTY);

            let bcrypt = mutate(&mut rng, XCRYPT_EMPTY, 7);
            let _ = verify("", &bcrypt);
            let _ = needs_rehash(&bcrypt);
            let argon = mutate(&mut rng, ARGON2I, 27);
            let _ = verify("test", &argon);
            let _ = needs_rehash(&argon);
        }
    }
}
