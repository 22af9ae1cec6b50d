//! Function secrets at rest: each value sealed with ChaCha20-Poly1305 (`ring` AEAD) under the
//! master key, its name as associated data (a sealed value moved to another name does not open),
//! a fresh random nonce per seal; listed by name and SHA-256 digest only (as `supabase secrets
//! list`).
//!
//! Owns: [`MasterKey`] (from `[edge_runtime] master_key`, or generated into the data dir with
//! mode 0600 on first start) and the sealed form.
//!
//! Invariants: a plaintext value exists only inside [`MasterKey::open`]'s caller, which puts it
//! into one invocation's environment; no value is ever logged (`Debug` prints no key material);
//! names follow [`valid_secret_name`] (Supabase's rules: no `SUPABASE_` prefix, ≤ 256 bytes);
//! values are at most [`MAX_SECRET_BYTES`].

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// Supabase's limit on one secret's value (48 KiB).
pub const MAX_SECRET_BYTES: usize = 48 * 1024;
/// Supabase's limit on a project's secrets.
pub const MAX_SECRETS: usize = 100;

/// Why a key or a sealed value is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    #[error("the master key must be 32 bytes in base64")]
    BadKey,
    #[error("a sealed secret does not open under this master key")]
    Sealed,
    #[error("cannot read or create the master key file: {0}")]
    Io(String),
}

/// The key every secret is sealed under.
pub struct MasterKey {
    key: LessSafeKey,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// A key given as base64 text.
    pub fn from_base64(text: &str) -> Result<MasterKey, SecretError> {
        let bytes = base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(|_| SecretError::BadKey)?;
        Self::from_bytes(&bytes)
    }

    fn from_bytes(bytes: &[u8]) -> Result<MasterKey, SecretError> {
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, bytes).map_err(|_| SecretError::BadKey)?;
        Ok(MasterKey { key: LessSafeKey::new(unbound) })
    }

    /// The configured key, or the one in `file`, created (0600) with a random key when absent.
    /// Several processes may start on one data dir at once: the file appears whole or not at
    /// all (written aside, then linked into place), and whoever loses the race reads the
    /// winner's.
    pub fn load(configured: Option<&str>, file: &Path) -> Result<MasterKey, SecretError> {
        if let Some(text) = configured {
            return Self::from_base64(text);
        }
        let io = |e: std::io::Error| SecretError::Io(format!("{}: {e}", file.display()));
        match std::fs::read_to_string(file) {
            Ok(text) => return Self::from_base64(&text),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            Err(_) => {}
        }
        let mut bytes = [0u8; 32];
        let mut tag = [0u8; 8];
        let random = SystemRandom::new();
        random
            .fill(&mut bytes)
            .and_then(|()| random.fill(&mut tag))
            .map_err(|_| SecretError::Io("no randomness".into()))?;
        let aside = file.with_extension(format!("tmp.{}.{:016x}", std::process::id(), u64::from_le_bytes(tag)));
        write_private(&aside, base64::engine::general_purpose::STANDARD.encode(bytes).as_bytes()).map_err(io)?;
        let linked = std::fs::hard_link(&aside, file);
        let _ = std::fs::remove_file(&aside);
        match linked {
            Ok(()) => Self::from_bytes(&bytes),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Self::from_base64(&std::fs::read_to_string(file).map_err(io)?)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// `value` sealed for `name`: nonce ‖ ciphertext ‖ tag.
    pub fn seal(&self, name: &str, value: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new().fill(&mut nonce).expect("the system's random source works");
        let mut out = Vec::with_capacity(NONCE_LEN + value.len() + CHACHA20_POLY1305.tag_len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(value);
        let (head, body) = out.split_at_mut(NONCE_LEN);
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(head.try_into().unwrap()), Aad::from(name), body)
            .expect("a secret is far below ChaCha20-Poly1305's length limit");
        out.extend_from_slice(tag.as_ref());
        out
    }

    /// The value sealed for `name`.
    pub fn open(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, SecretError> {
        if sealed.len() < NONCE_LEN + CHACHA20_POLY1305.tag_len() {
            return Err(SecretError::Sealed);
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let mut body = body.to_vec();
        let nonce = Nonce::assume_unique_for_key(nonce.try_into().unwrap());
        let plain = self.key.open_in_place(nonce, Aad::from(name), &mut body).map_err(|_| SecretError::Sealed)?;
        Ok(plain.to_vec())
    }
}

/// Writes `bytes` to the file `path` (replaced if there) readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// The hex SHA-256 of a value, what listings show instead of it.
pub fn digest(value: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, value);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `name` may name a secret: an environment variable name (letters, digits, `_`, not
/// starting with a digit), at most 256 bytes, not in Supabase's reserved `SUPABASE_` prefix.
pub fn valid_secret_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 256
        && !bytes[0].is_ascii_digit()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_')
        && !name.to_ascii_uppercase().starts_with("SUPABASE_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_under_their_name_and_key() {
        let key = MasterKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([7u8; 32])).unwrap();
        let sealed = key.seal("API_KEY", b"s3cr3t");
        assert!(!sealed.windows(6).any(|w| w == b"s3cr3t"));
        assert_eq!(key.open("API_KEY", &sealed).unwrap(), b"s3cr3t");
        assert_eq!(key.open("OTHER", &sealed), Err(SecretError::Sealed));
        let other = MasterKey::from_base64(&base64::engine::general_purpose::STANDARD.encode([8u8; 32])).unwrap();
        assert_eq!(other.open("API_KEY", &sealed), Err(SecretError::Sealed));
        assert_eq!(key.open("API_KEY", &sealed[..10]), Err(SecretError::Sealed));
        assert_ne!(key.seal("API_KEY", b"s3cr3t"), sealed, "a fresh nonce per seal");
    }

    #[test]
    fn a_missing_key_file_is_created_private_and_reused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("functions/master.key");
        let first = MasterKey::load(None, &file).unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
        let second = MasterKey::load(None, &file).unwrap();
        assert_eq!(second.open("A", &first.seal("A", b"v")).unwrap(), b"v");
        // Processes starting at once on one data dir all end up with the same key.
        let racing = dir.path().join("race/master.key");
        let keys: Vec<MasterKey> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| MasterKey::load(None, &racing).unwrap())).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let sealed = keys[0].seal("A", b"v");
        assert!(keys.iter().all(|k| k.open("A", &sealed).is_ok()));
        assert_eq!(MasterKey::from_base64("short").unwrap_err(), SecretError::BadKey);
    }

    #[test]
    fn secret_names_follow_supabases_rules() {
        assert!(valid_secret_name("STRIPE_KEY"));
        assert!(valid_secret_name("_x1"));
        for bad in ["", "SUPABASE_URL", "supabase_x", "1A", "A-B", "A B", &"A".repeat(257)] {
            assert!(!valid_secret_name(bad), "{bad}");
        }
        assert_eq!(digest(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
