//! JWT verification and signing: HS256 with the configured secret; RS256/ES256 keys from the
//! `[jwt] keys` JWKS file (they only verify) and from `[auth] signing_keys_path` (the Supabase CLI's
//! `signing_keys.json`: every key verifies, the first key that may sign signs); and a bounded
//! per-shard cache of tokens already verified.
//!
//! Owns: the process-wide [`JwtKeys`] (immutable after start, shared by `Arc`) and each shard's
//! [`TokenCache`] (`!Send`, touched only by its shard — no lock on the request path). JWKs are read
//! here, without `jsonwebtoken`'s JWK types: private halves become *ring* key pairs (RSA from its
//! CRT components, P-256 from the scalar and the point), public halves `jsonwebtoken` decoding keys.
//!
//! Tokens [`JwtKeys::sign`] makes look like GoTrue's: header `{"alg":"RS256"|"ES256","kid":…,
//! "typ":"JWT"}` with a signing key, `{"alg":"HS256","typ":"JWT"}` with the secret alone. The JWKS
//! served at `/auth/v1/.well-known/jwks.json` ([`JwtKeys::public_jwks`]) is GoTrue's: each signing
//! key's members without the private ones, `use` set to `sig` and `key_ops` to `["verify"]`; then
//! the `[jwt] keys` entries without their private members. No HS256 secret is ever in it.
//!
//! Invariants: a cached entry is never served after its `exp`; the cache never holds more than its
//! configured number of entries (FIFO eviction); error messages are PostgREST's (PGRST301/PGRST303)
//! so clients comparing them byte for byte see the same text; the served JWKS holds no private
//! member; the signing key was checked at load by signing a probe and verifying it with its own
//! served public half, so a token it signs verifies here and with its JWKS.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256};
use serde_json::{Map, Value};

/// `exp` of the printed API keys: the one Supabase's demo keys carry (2032-11-12).
const API_KEY_EXPIRY: u64 = 1_983_812_996;

/// Clock skew PostgREST tolerates on `exp`/`nbf`/`iat`, seconds.
const CLOCK_SKEW_SECONDS: u64 = 30;

/// The JOSE header of HS256 tokens (API keys and tokens signed with the secret), as GoTrue and the
/// Supabase CLI write it.
const HS256_HEADER: &str = r#"{"alg":"HS256","typ":"JWT"}"#;

/// Why a token was refused. `Display` is the PostgREST message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    #[error("Expected 3 parts in JWT; got {0}")]
    Parts(usize),
    #[error("Empty JWT is sent in Authorization header")]
    Empty,
    #[error("No suitable key or wrong key type")]
    NoKey,
    #[error("Wrong or unsupported encoding algorithm")]
    Algorithm,
    #[error("JWT cryptographic operation failed")]
    Signature,
    #[error("JWT couldn't be decoded")]
    Decode,
    #[error("JWT expired")]
    Expired,
    #[error("JWT not yet valid")]
    NotYetValid,
    #[error("JWT issued at future")]
    IssuedInFuture,
    #[error("Parsing claims failed")]
    Claims,
    #[error("The JWT '{0}' claim must be a number")]
    ClaimNotNumber(&'static str),
}

impl JwtError {
    /// PostgREST's error code for this failure.
    pub fn pgrst_code(&self) -> &'static str {
        match self {
            JwtError::Expired
            | JwtError::NotYetValid
            | JwtError::IssuedInFuture
            | JwtError::Claims
            | JwtError::ClaimNotNumber(_) => "PGRST303",
            _ => "PGRST301",
        }
    }
}

/// Why a key file could not be used (at start).
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("key file {path}: {message}")]
    Parse { path: String, message: String },
    /// `index` counts from 0; the message counts from 1.
    #[error("key {} of {path}: {message}", .index + 1)]
    Key { path: String, index: usize, message: String },
    #[error("no key of {path} may sign: every key's key_ops lacks \"sign\"")]
    NoSigningKey { path: String },
}

/// Why [`JwtKeys::sign`] made no token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("token claims must be a JSON object")]
    NotAnObject,
    /// The system's random number generator failed (ECDSA and RSA blinding need it).
    #[error("signing the token failed")]
    Crypto,
}

/// Verified claims: the parsed object and its compact JSON text (what `request.jwt.claims` gets).
#[derive(Debug, Clone)]
pub struct Claims {
    pub object: Map<String, Value>,
    pub json: String,
    /// `exp` in seconds since the epoch, if the token has one.
    pub exp: Option<u64>,
}

impl Claims {
    /// The `role` claim, if it is a string.
    pub fn role(&self) -> Option<&str> {
        self.object.get("role").and_then(Value::as_str)
    }
}

struct AsymmetricKey {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

enum Signer {
    Rsa(RsaKeyPair),
    Ecdsa(EcdsaKeyPair),
}

/// The key access tokens are signed with, when `[auth] signing_keys_path` names one.
struct SigningKey {
    kid: Option<String>,
    algorithm: Algorithm,
    signer: Signer,
    /// The base64url JOSE header of every token it signs.
    header: String,
}

/// The keys tokens are verified and signed with. Immutable; one per process.
pub struct JwtKeys {
    hmac: DecodingKey,
    hmac_key: ring::hmac::Key,
    /// Signing keys first (file order), then the `[jwt] keys` JWKS.
    asymmetric: Vec<AsymmetricKey>,
    signing: Option<SigningKey>,
    rng: SystemRandom,
    /// The public halves, served at `/auth/v1/.well-known/jwks.json`.
    public_jwks: Value,
}

/// JWK members that hold private key material; never served.
const PRIVATE_JWK_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// The members of a JWK this module reads (others, like `ext`, are kept only in the served copy).
#[derive(Default, serde::Deserialize)]
#[serde(default)]
struct JwkMembers {
    kty: String,
    kid: Option<String>,
    alg: Option<String>,
    key_ops: Option<Vec<String>>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    d: Option<String>,
    p: Option<String>,
    q: Option<String>,
    dp: Option<String>,
    dq: Option<String>,
    qi: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl JwkMembers {
    /// GoTrue signs with a key whose `key_ops` include `sign`; a key without `key_ops` may too.
    fn may_sign(&self) -> bool {
        self.key_ops.as_ref().is_none_or(|ops| ops.iter().any(|op| op == "sign"))
    }

    fn algorithm(&self) -> Result<Algorithm, String> {
        match (self.kty.as_str(), self.alg.as_deref(), self.crv.as_deref()) {
            ("RSA", None | Some("RS256"), _) => Ok(Algorithm::RS256),
            ("EC", None | Some("ES256"), Some("P-256")) => Ok(Algorithm::ES256),
            (kty, alg, crv) => Err(format!(
                "only RS256 (RSA) and ES256 (EC P-256) keys are supported, not kty {kty:?}, alg {}, crv {}",
                alg.map_or("unset".to_owned(), |a| format!("{a:?}")),
                crv.map_or("unset".to_owned(), |c| format!("{c:?}")),
            )),
        }
    }

    /// A base64url member (padding tolerated), as bytes.
    fn bytes(&self, name: &str, value: &Option<String>) -> Result<Vec<u8>, String> {
        let text = value.as_deref().ok_or_else(|| format!("the {:?} key lacks member {name:?}", self.kty))?;
        URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).map_err(|e| format!("member {name:?}: {e}"))
    }

    /// An RSA integer member: big-endian without leading zeros.
    fn unsigned(&self, name: &str, value: &Option<String>) -> Result<Vec<u8>, String> {
        let bytes = self.bytes(name, value)?;
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        match bytes[start..].is_empty() {
            true => Err(format!("member {name:?} is zero")),
            false => Ok(bytes[start..].to_vec()),
        }
    }

    /// A P-256 coordinate or scalar: exactly 32 bytes, left-padded (the Supabase CLI writes Go's
    /// `big.Int.Bytes()`, which drops leading zero bytes).
    fn p256(&self, name: &str, value: &Option<String>) -> Result<[u8; 32], String> {
        let bytes = self.bytes(name, value)?;
        let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
        let significant = &bytes[start..];
        if significant.len() > 32 {
            return Err(format!("member {name:?} is longer than 32 bytes"));
        }
        let mut out = [0u8; 32];
        out[32 - significant.len()..].copy_from_slice(significant);
        Ok(out)
    }

    /// `0x04 ‖ x ‖ y`, the uncompressed point.
    fn p256_point(&self) -> Result<Vec<u8>, String> {
        let mut point = vec![0x04];
        point.extend_from_slice(&self.p256("x", &self.x)?);
        point.extend_from_slice(&self.p256("y", &self.y)?);
        Ok(point)
    }

    /// The key that verifies tokens (from the public members).
    fn verifying_key(&self, algorithm: Algorithm) -> Result<DecodingKey, String> {
        Ok(match algorithm {
            Algorithm::RS256 => {
                DecodingKey::from_rsa_raw_components(&self.unsigned("n", &self.n)?, &self.unsigned("e", &self.e)?)
            }
            _ => DecodingKey::from_ec_der(&self.p256_point()?),
        })
    }

    /// The key that signs tokens (from the private members).
    fn signer(&self, algorithm: Algorithm, rng: &SystemRandom) -> Result<Signer, String> {
        match algorithm {
            Algorithm::RS256 => {
                let components = ring::rsa::KeyPairComponents {
                    public_key: ring::rsa::PublicKeyComponents {
                        n: self.unsigned("n", &self.n)?,
                        e: self.unsigned("e", &self.e)?,
                    },
                    d: self.unsigned("d", &self.d)?,
                    p: self.unsigned("p", &self.p)?,
                    q: self.unsigned("q", &self.q)?,
                    dP: self.unsigned("dp", &self.dp)?,
                    dQ: self.unsigned("dq", &self.dq)?,
                    qInv: self.unsigned("qi", &self.qi)?,
                };
                RsaKeyPair::from_components(&components)
                    .map(Signer::Rsa)
                    .map_err(|e| format!("not a usable RSA private key (2048 to 4096 bits, e = 65537 or more): {e}"))
            }
            _ => EcdsaKeyPair::from_private_key_and_public_key(
                &ECDSA_P256_SHA256_FIXED_SIGNING,
                &self.p256("d", &self.d)?,
                &self.p256_point()?,
                rng,
            )
            .map(Signer::Ecdsa)
            .map_err(|e| format!("not a usable P-256 private key: {e}")),
        }
    }
}

/// A JWK of a key file: its raw object (what is served, less the private members) and the
/// members read here.
type FileKey = (Map<String, Value>, JwkMembers);

/// The keys of a key file: a bare JSON array of JWKs (the Supabase CLI's `signing_keys.json`) or a
/// JWK set (`{"keys": […]}`).
fn read_key_file(path: &Path) -> Result<Vec<FileKey>, KeyError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: shown.clone(), source })?;
    let parse_error = |message: String| KeyError::Parse { path: shown.clone(), message };
    let raw: Value = serde_json::from_str(&text).map_err(|e| parse_error(format!("not JSON: {e}")))?;
    let keys = match raw {
        Value::Array(keys) => keys,
        Value::Object(mut set) => match set.remove("keys") {
            Some(Value::Array(keys)) => keys,
            _ => return Err(parse_error("a JWK set needs a \"keys\" array".to_owned())),
        },
        _ => return Err(parse_error("expected a JSON array of JWKs or a JWK set".to_owned())),
    };
    keys.into_iter()
        .enumerate()
        .map(|(index, key)| {
            let key_error = |message: String| KeyError::Key { path: shown.clone(), index, message };
            let Value::Object(object) = key else { return Err(key_error("not a JSON object".to_owned())) };
            let members =
                serde_json::from_value(Value::Object(object.clone())).map_err(|e| key_error(e.to_string()))?;
            Ok((object, members))
        })
        .collect()
}

/// `object` without its private members.
fn public_half(mut object: Map<String, Value>) -> Map<String, Value> {
    for member in PRIVATE_JWK_MEMBERS {
        object.remove(*member);
    }
    object
}

impl JwtKeys {
    /// The keys for the HS256 `secret`, the `[jwt] keys` JWKS file (verification only) and
    /// `[auth] signing_keys_path` (the Supabase CLI's `signing_keys.json`): every key of it
    /// verifies; the first whose `key_ops` are absent or include `sign` signs. A signing-key file
    /// with no key leaves HS256 signing (as the CLI does); one whose keys all refuse `sign` is an
    /// error (as GoTrue's is).
    pub fn new(secret: &str, jwks_file: Option<&Path>, signing_keys_file: Option<&Path>) -> Result<JwtKeys, KeyError> {
        let rng = SystemRandom::new();
        let mut asymmetric = Vec::new();
        let mut public_keys = Vec::new();
        let mut signing = None;
        if let Some(path) = signing_keys_file {
            let shown = path.display().to_string();
            let keys = read_key_file(path)?;
            let any = !keys.is_empty();
            for (index, (object, members)) in keys.into_iter().enumerate() {
                let key_error = |message: String| KeyError::Key { path: shown.clone(), index, message };
                let algorithm = members.algorithm().map_err(key_error)?;
                let key = members.verifying_key(algorithm).map_err(key_error)?;
                if signing.is_none() && members.may_sign() {
                    let signer = members.signer(algorithm, &rng).map_err(key_error)?;
                    let candidate = SigningKey::new(members.kid.clone(), algorithm, signer);
                    candidate.check(&key, &rng).map_err(key_error)?;
                    signing = Some(candidate);
                }
                asymmetric.push(AsymmetricKey { kid: members.kid, algorithm, key });
                // GoTrue serves every key as a verification key (conf.JwtKeysDecoder).
                let mut public = public_half(object);
                public.insert("use".to_owned(), Value::from("sig"));
                public.insert("key_ops".to_owned(), Value::from(vec!["verify"]));
                public_keys.push(Value::Object(public));
            }
            if any && signing.is_none() {
                return Err(KeyError::NoSigningKey { path: shown });
            }
        }
        if let Some(path) = jwks_file {
            let shown = path.display().to_string();
            for (index, (object, members)) in read_key_file(path)?.into_iter().enumerate() {
                let key_error = |message: String| KeyError::Key { path: shown.clone(), index, message };
                let algorithm = members.algorithm().map_err(key_error)?;
                let key = members.verifying_key(algorithm).map_err(key_error)?;
                asymmetric.push(AsymmetricKey { kid: members.kid, algorithm, key });
                public_keys.push(Value::Object(public_half(object)));
            }
        }
        Ok(JwtKeys {
            hmac: DecodingKey::from_secret(secret.as_bytes()),
            hmac_key: ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes()),
            asymmetric,
            signing,
            rng,
            public_jwks: serde_json::json!({ "keys": public_keys }),
        })
    }

    /// `{"keys": […]}`: the public halves of the signing keys and of the `[jwt] keys` JWKS.
    pub fn public_jwks(&self) -> &Value {
        &self.public_jwks
    }

    /// The algorithm tokens are signed with and the signing key's `kid`: `(HS256, None)` without
    /// signing keys.
    pub fn signing_key(&self) -> (Algorithm, Option<&str>) {
        match &self.signing {
            Some(key) => (key.algorithm, key.kid.as_deref()),
            None => (Algorithm::HS256, None),
        }
    }

    /// A token for `claims` (a JSON object, serialised as given): RS256/ES256 with the signing key
    /// when `[auth] signing_keys_path` has one, header `{"alg":…,"kid":…,"typ":"JWT"}`; else HS256
    /// with the secret, header `{"alg":"HS256","typ":"JWT"}` — as GoTrue signs access tokens.
    pub fn sign(&self, claims: &Value) -> Result<String, SignError> {
        if !claims.is_object() {
            return Err(SignError::NotAnObject);
        }
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        match &self.signing {
            Some(key) => key.sign(&payload, &self.rng),
            None => Ok(self.hmac_token(&URL_SAFE_NO_PAD.encode(HS256_HEADER), &payload)),
        }
    }

    /// `header.payload.signature` with HMAC-SHA256 and the secret.
    fn hmac_token(&self, header: &str, payload: &str) -> String {
        let signing_input = format!("{header}.{payload}");
        let tag = ring::hmac::sign(&self.hmac_key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// An API key (`anon`, `service_role`) for the HS256 secret, shaped exactly like Supabase's
    /// demo keys (same header, claim order, issuer and expiry), so the demo secret yields the
    /// well-known demo keys byte for byte. Always HS256, signing keys or not.
    pub fn api_key(&self, role: &str) -> String {
        debug_assert!(role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let header = URL_SAFE_NO_PAD.encode(HS256_HEADER);
        let payload =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"iss":"supabase-demo","role":"{role}","exp":{API_KEY_EXPIRY}}}"#));
        self.hmac_token(&header, &payload)
    }

    /// Verifies signature and time claims; returns the claims.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, JwtError> {
        if token.is_empty() {
            return Err(JwtError::Empty);
        }
        let parts = token.split('.').count();
        if parts != 3 {
            return Err(JwtError::Parts(parts));
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| JwtError::Decode)?;
        let key = match header.alg {
            Algorithm::HS256 => &self.hmac,
            Algorithm::RS256 | Algorithm::ES256 => {
                let mut candidates = self.asymmetric.iter().filter(|k| k.algorithm == header.alg);
                // The key the token names; else a key without a `kid`; a token without a `kid`
                // takes the first key of its algorithm.
                let chosen = match &header.kid {
                    Some(kid) => self
                        .asymmetric
                        .iter()
                        .find(|k| k.algorithm == header.alg && k.kid.as_deref() == Some(kid.as_str()))
                        .or_else(|| candidates.find(|k| k.kid.is_none())),
                    None => candidates.next(),
                };
                &chosen.ok_or(JwtError::NoKey)?.key
            }
            _ => return Err(JwtError::Algorithm),
        };
        let mut validation = Validation::new(header.alg);
        // Time claims are checked below with PostgREST's rules and messages.
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, &validation).map_err(|e| match e.kind() {
            jsonwebtoken::errors::ErrorKind::InvalidSignature => JwtError::Signature,
            jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => JwtError::Algorithm,
            jsonwebtoken::errors::ErrorKind::Json(_) => JwtError::Claims,
            _ => JwtError::Decode,
        })?;
        let object = data.claims;
        let exp = time_claim(&object, "exp")?;
        if let Some(exp) = exp {
            if now > exp.saturating_add(CLOCK_SKEW_SECONDS) {
                return Err(JwtError::Expired);
            }
        }
        if let Some(nbf) = time_claim(&object, "nbf")? {
            if now.saturating_add(CLOCK_SKEW_SECONDS) < nbf {
                return Err(JwtError::NotYetValid);
            }
        }
        if let Some(iat) = time_claim(&object, "iat")? {
            if now.saturating_add(CLOCK_SKEW_SECONDS) < iat {
                return Err(JwtError::IssuedInFuture);
            }
        }
        let json = Value::Object(object.clone()).to_string();
        Ok(Claims { object, json, exp })
    }
}

impl SigningKey {
    fn new(kid: Option<String>, algorithm: Algorithm, signer: Signer) -> SigningKey {
        let mut header = Map::new();
        header.insert("alg".to_owned(), Value::from(if algorithm == Algorithm::RS256 { "RS256" } else { "ES256" }));
        if let Some(kid) = &kid {
            header.insert("kid".to_owned(), Value::from(kid.as_str()));
        }
        header.insert("typ".to_owned(), Value::from("JWT"));
        let header = URL_SAFE_NO_PAD.encode(Value::Object(header).to_string());
        SigningKey { kid, algorithm, signer, header }
    }

    /// `header.payload.signature` for an encoded payload.
    fn sign(&self, payload: &str, rng: &SystemRandom) -> Result<String, SignError> {
        let signing_input = format!("{}.{payload}", self.header);
        let signature = match &self.signer {
            Signer::Rsa(key) => {
                let mut signature = vec![0; key.public().modulus_len()];
                key.sign(&RSA_PKCS1_SHA256, rng, signing_input.as_bytes(), &mut signature)
                    .map_err(|_| SignError::Crypto)?;
                signature
            }
            Signer::Ecdsa(key) => {
                key.sign(rng, signing_input.as_bytes()).map_err(|_| SignError::Crypto)?.as_ref().to_vec()
            }
        };
        Ok(format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }

    /// Signs a probe and verifies it with `public` (the key the served JWKS describes), so a key
    /// file whose private and public members disagree fails at start, not in a client.
    fn check(&self, public: &DecodingKey, rng: &SystemRandom) -> Result<(), String> {
        let token = self
            .sign(&URL_SAFE_NO_PAD.encode("{}"), rng)
            .map_err(|_| "the private members are inconsistent (signing a probe failed)".to_owned())?;
        let (signing_input, signature) = token.rsplit_once('.').ok_or("no signature")?;
        match jsonwebtoken::crypto::verify(signature, signing_input.as_bytes(), public, self.algorithm) {
            Ok(true) => Ok(()),
            _ => Err("the private members do not match the public ones (a probe signature did not verify)".to_owned()),
        }
    }
}

fn time_claim(object: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtError> {
    match object.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => {
            let seconds = n.as_f64().ok_or(JwtError::ClaimNotNumber(name))?;
            Ok(Some(if seconds <= 0.0 { 0 } else { seconds as u64 }))
        }
        Some(_) => Err(JwtError::ClaimNotNumber(name)),
    }
}

pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A shard's cache of verified tokens, keyed by the token text. Bounded, FIFO eviction; an entry
/// is re-checked against `exp` on every hit. Failures are not cached (a bad token costs a verify).
pub struct TokenCache {
    keys: std::sync::Arc<JwtKeys>,
    capacity: usize,
    entries: HashMap<Rc<str>, Rc<Claims>>,
    order: VecDeque<Rc<str>>,
}

impl TokenCache {
    pub fn new(keys: std::sync::Arc<JwtKeys>, capacity: usize) -> TokenCache {
        assert!(capacity > 0, "token cache capacity is validated by config");
        TokenCache { keys, capacity, entries: HashMap::new(), order: VecDeque::new() }
    }

    pub fn verify(&mut self, token: &str) -> Result<Rc<Claims>, JwtError> {
        let now = unix_now();
        if let Some(claims) = self.entries.get(token) {
            match claims.exp {
                Some(exp) if now > exp.saturating_add(CLOCK_SKEW_SECONDS) => return Err(JwtError::Expired),
                _ => return Ok(claims.clone()),
            }
        }
        let claims = Rc::new(self.keys.verify(token, now)?);
        if self.entries.len() >= self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
        let key: Rc<str> = Rc::from(token);
        self.order.push_back(key.clone());
        self.entries.insert(key, claims.clone());
        debug_assert!(self.entries.len() <= self.capacity);
        Ok(claims)
    }

    /// How many verified tokens are cached.
    pub fn cached(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::DEMO_JWT_SECRET;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;
    use std::path::PathBuf;
    use std::sync::Arc;

    /// The anon key of Supabase's local development stack, signed with the demo secret.
    const DEMO_ANON_KEY: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0";

    const DEMO_SERVICE_ROLE_KEY: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU";

    /// A token signed by `jsonwebtoken` (not by the code under test).
    fn hs256(secret: &str, claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap()
    }

    fn keys() -> Arc<JwtKeys> {
        Arc::new(JwtKeys::new(DEMO_JWT_SECRET, None, None).unwrap())
    }

    /// A file of `tests/fixtures/` (see `make_signing_keys.py` there).
    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(name)
    }

    fn fixture_keys() -> Vec<Value> {
        let text = std::fs::read_to_string(fixture("signing_keys.json")).unwrap();
        serde_json::from_str::<Vec<Value>>(&text).unwrap()
    }

    /// `keys` written as a signing-key file in `dir`.
    fn key_file(dir: &tempfile::TempDir, name: &str, keys: &Value) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, keys.to_string()).unwrap();
        path
    }

    fn signing_keys() -> JwtKeys {
        JwtKeys::new(DEMO_JWT_SECRET, None, Some(&fixture("signing_keys.json"))).unwrap()
    }

    fn header(token: &str) -> Value {
        let encoded = token.split('.').next().unwrap();
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(encoded).unwrap()).unwrap()
    }

    /// A token signed by `jsonwebtoken` with a PEM key and a `kid`, as the auth-js suite's helper
    /// signs its keys (`jsonwebtoken.sign(claims, key, {algorithm, keyid})`).
    fn signed_elsewhere(alg: Algorithm, pem: &str, kid: &str, claims: &Value) -> String {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
        };
        let mut header = Header::new(alg);
        header.kid = Some(kid.to_owned());
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }

    #[test]
    fn demo_secret_yields_the_demo_keys() {
        let k = keys();
        assert_eq!(k.api_key("anon"), DEMO_ANON_KEY);
        assert_eq!(k.api_key("service_role"), DEMO_SERVICE_ROLE_KEY);
        let claims = k.verify(DEMO_ANON_KEY, unix_now()).unwrap();
        assert_eq!(claims.role(), Some("anon"));
        // Signing keys change access tokens, not the printed API keys.
        assert_eq!(signing_keys().api_key("anon"), DEMO_ANON_KEY);
    }

    #[test]
    fn postgrest_messages() {
        let k = keys();
        assert_eq!(k.verify("a.b", 0).unwrap_err().to_string(), "Expected 3 parts in JWT; got 2");
        assert_eq!(k.verify("", 0).unwrap_err(), JwtError::Empty);
        let expired = hs256(DEMO_JWT_SECRET, &json!({"role": "anon", "exp": 1000}));
        let err = k.verify(&expired, 2000).unwrap_err();
        assert_eq!((err.to_string().as_str(), err.pgrst_code()), ("JWT expired", "PGRST303"));
        let bad_exp = hs256(DEMO_JWT_SECRET, &json!({"role": "anon", "exp": "soon"}));
        assert_eq!(k.verify(&bad_exp, 0).unwrap_err().to_string(), "The JWT 'exp' claim must be a number");
        let forged = hs256("another-secret-another-secret-another-secret", &json!({"role": "service_role"}));
        assert_eq!(k.verify(&forged, 0).unwrap_err(), JwtError::Signature);
        let mut tampered = DEMO_ANON_KEY.to_owned();
        tampered.insert(40, 'x');
        assert!(k.verify(&tampered, 0).is_err());
    }

    #[test]
    fn cache_is_bounded_and_rechecks_expiry() {
        let k = keys();
        let mut cache = TokenCache::new(k.clone(), 3);
        for i in 0..10 {
            let token = hs256(DEMO_JWT_SECRET, &json!({"role": "anon", "n": i}));
            assert_eq!(cache.verify(&token).unwrap().object["n"], i);
            assert!(cache.cached() <= 3);
        }
        let soon = unix_now() - CLOCK_SKEW_SECONDS - 1;
        let token = hs256(DEMO_JWT_SECRET, &json!({"role": "anon", "exp": soon}));
        assert_eq!(cache.verify(&token).unwrap_err(), JwtError::Expired);
    }

    #[test]
    fn jwks_rs256_and_es256_verify_and_public_half_has_no_private_members() {
        // Keys generated once with `openssl`; the private halves exist only for this test.
        let keys = JwtKeys::new(DEMO_JWT_SECRET, Some(&fixture("jwks.json")), None).unwrap();
        let public = keys.public_jwks().to_string();
        for member in ["\"d\"", "\"p\"", "\"q\""] {
            assert!(!public.contains(member), "{public}");
        }
        for (alg, pem) in [
            (Algorithm::RS256, include_str!("../../tests/fixtures/rs256.pem")),
            (Algorithm::ES256, include_str!("../../tests/fixtures/es256.pem")),
        ] {
            let encoding = match alg {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap(),
                _ => EncodingKey::from_ec_pem(pem.as_bytes()).unwrap(),
            };
            let token = jsonwebtoken::encode(&Header::new(alg), &json!({"role": "authenticated"}), &encoding).unwrap();
            assert_eq!(keys.verify(&token, unix_now()).unwrap().role(), Some("authenticated"));
        }
        // `[jwt] keys` only verify: tokens are still signed with the secret.
        assert_eq!(keys.signing_key(), (Algorithm::HS256, None));
    }

    #[test]
    fn without_signing_keys_the_secret_signs_as_gotrue_does() {
        let k = keys();
        let token = k.sign(&json!({"sub": "u1", "role": "authenticated", "aud": "authenticated"})).unwrap();
        assert_eq!(header(&token), json!({"alg": "HS256", "typ": "JWT"}));
        assert!(token.starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."), "{token}");
        assert_eq!(k.verify(&token, unix_now()).unwrap().role(), Some("authenticated"));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&["authenticated"]);
        validation.required_spec_claims.clear();
        let decoded =
            jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_secret(DEMO_JWT_SECRET.as_bytes()), &validation)
                .unwrap();
        assert_eq!(decoded.claims["sub"], "u1");
        assert_eq!(k.public_jwks(), &json!({"keys": []}));
        assert_eq!(k.sign(&json!(["not", "claims"])).unwrap_err(), SignError::NotAnObject);
    }

    #[test]
    fn the_first_signing_key_signs_rs256_with_its_kid() {
        let k = signing_keys();
        assert_eq!(k.signing_key(), (Algorithm::RS256, Some("rsa-signing-test")));
        let claims = json!({"sub": "u1", "role": "authenticated", "exp": unix_now() + 3600});
        let token = k.sign(&claims).unwrap();
        assert_eq!(header(&token), json!({"alg": "RS256", "kid": "rsa-signing-test", "typ": "JWT"}));
        // GoTrue's key order in the header: alg, kid, typ.
        assert!(header_text(&token).starts_with(r#"{"alg":"RS256","kid":"rsa-signing-test","typ":"JWT"}"#));
        assert_eq!(k.verify(&token, unix_now()).unwrap().object["sub"], "u1");
        // Anyone holding only the served JWKS verifies it (jsonwebtoken's own JWK reader).
        let served: jsonwebtoken::jwk::JwkSet = serde_json::from_value(k.public_jwks().clone()).unwrap();
        let jwk = served.find("rsa-signing-test").unwrap();
        let mut validation = Validation::new(Algorithm::RS256);
        validation.required_spec_claims.clear();
        jsonwebtoken::decode::<Value>(&token, &DecodingKey::from_jwk(jwk).unwrap(), &validation).unwrap();
        // HS256 tokens (the printed API keys) still verify next to the signing keys.
        assert_eq!(k.verify(DEMO_ANON_KEY, unix_now()).unwrap().role(), Some("anon"));
    }

    fn header_text(token: &str) -> String {
        String::from_utf8(URL_SAFE_NO_PAD.decode(token.split('.').next().unwrap()).unwrap()).unwrap()
    }

    #[test]
    fn the_served_jwks_is_gotrues_public_half() {
        let k = signing_keys();
        let served = k.public_jwks()["keys"].as_array().unwrap().clone();
        let kids: Vec<&str> = served.iter().map(|key| key["kid"].as_str().unwrap()).collect();
        assert_eq!(kids, ["rsa-signing-test", "ec-signing-test", "ec-short-test"]);
        let files = fixture_keys();
        for (key, file) in served.iter().zip(&files) {
            let key = key.as_object().unwrap();
            for member in PRIVATE_JWK_MEMBERS {
                assert!(!key.contains_key(*member), "{member} served: {key:?}");
            }
            assert_eq!((&key["use"], &key["key_ops"]), (&json!("sig"), &json!(["verify"])));
            for member in ["kty", "kid", "alg", "ext", "n", "e", "crv", "x", "y"] {
                assert_eq!(key.get(member), file.get(member), "{member}");
            }
        }
        let rsa = served[0].as_object().unwrap();
        let members: Vec<&str> = rsa.keys().map(String::as_str).collect();
        assert_eq!(members, ["alg", "e", "ext", "key_ops", "kid", "kty", "n", "use"]);
    }

    #[test]
    fn tokens_of_every_key_verify_by_kid() {
        let k = signing_keys();
        let claims = json!({"role": "service_role", "iss": "supabase-demo"});
        // As the auth-js suite's helper signs: jsonwebtoken, RS256, keyid = the file's kid.
        let rs = signed_elsewhere(
            Algorithm::RS256,
            include_str!("../../tests/fixtures/signing_rs256.pem"),
            "rsa-signing-test",
            &claims,
        );
        assert_eq!(k.verify(&rs, unix_now()).unwrap().role(), Some("service_role"));
        // The second key: ES256.
        let es = signed_elsewhere(
            Algorithm::ES256,
            include_str!("../../tests/fixtures/signing_es256.pem"),
            "ec-signing-test",
            &claims,
        );
        assert_eq!(k.verify(&es, unix_now()).unwrap().role(), Some("service_role"));
        // Named by the wrong kid, or an unknown one: refused.
        let wrong = signed_elsewhere(
            Algorithm::ES256,
            include_str!("../../tests/fixtures/signing_es256.pem"),
            "ec-short-test",
            &claims,
        );
        assert_eq!(k.verify(&wrong, unix_now()).unwrap_err(), JwtError::Signature);
        let unknown = signed_elsewhere(
            Algorithm::RS256,
            include_str!("../../tests/fixtures/signing_rs256.pem"),
            "nobody",
            &claims,
        );
        assert_eq!(k.verify(&unknown, unix_now()).unwrap_err(), JwtError::NoKey);
        // Each key of the file signs when it is first, and the original order verifies it — the
        // third one's `d` is 31 bytes in the file, as the CLI writes such keys.
        let dir = tempfile::tempdir().unwrap();
        let files = fixture_keys();
        for (first, kid, alg) in [(1, "ec-signing-test", Algorithm::ES256), (2, "ec-short-test", Algorithm::ES256)] {
            let mut reordered = files.clone();
            reordered.swap(0, first);
            let path = key_file(&dir, "reordered.json", &json!(reordered));
            let other = JwtKeys::new(DEMO_JWT_SECRET, None, Some(&path)).unwrap();
            assert_eq!(other.signing_key(), (alg, Some(kid)));
            let token = other.sign(&claims).unwrap();
            assert_eq!(header(&token), json!({"alg": "ES256", "kid": kid, "typ": "JWT"}));
            assert_eq!(k.verify(&token, unix_now()).unwrap().role(), Some("service_role"));
        }
    }

    #[test]
    fn the_auth_js_suite_key_file_loads() {
        // `test/generate-signing-keys.js`: Node's JWK export plus kid, key_ops and alg (no `use`).
        let mut key = fixture_keys()[0].as_object().unwrap().clone();
        key.remove("use");
        key.remove("ext");
        key.insert("kid".to_owned(), json!("0b5c3a2e-7d4f-4b1a-9e8c-2f6d1a3b5c7e"));
        let dir = tempfile::tempdir().unwrap();
        let path = key_file(&dir, "signing_keys.json", &json!([key]));
        let k = JwtKeys::new(DEMO_JWT_SECRET, None, Some(&path)).unwrap();
        let token = signed_elsewhere(
            Algorithm::RS256,
            include_str!("../../tests/fixtures/signing_rs256.pem"),
            "0b5c3a2e-7d4f-4b1a-9e8c-2f6d1a3b5c7e",
            &json!({"iss": "supabase-demo", "role": "anon", "exp": 1_983_812_996u64}),
        );
        assert_eq!(k.verify(&token, unix_now()).unwrap().role(), Some("anon"));
        assert_eq!(k.public_jwks()["keys"][0]["use"], "sig");
    }

    #[test]
    fn key_files_the_program_cannot_use_are_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let load = |keys: Value| {
            let path = key_file(&dir, "keys.json", &keys);
            JwtKeys::new(DEMO_JWT_SECRET, None, Some(&path))
        };
        let files = fixture_keys();
        let (rsa, ec) = (files[0].as_object().unwrap().clone(), files[1].as_object().unwrap().clone());

        let missing = JwtKeys::new(DEMO_JWT_SECRET, None, Some(&dir.path().join("absent.json")));
        assert!(matches!(missing, Err(KeyError::Read { .. })));
        std::fs::write(dir.path().join("text.json"), "not json").unwrap();
        let text = JwtKeys::new(DEMO_JWT_SECRET, None, Some(&dir.path().join("text.json")));
        assert!(matches!(text, Err(KeyError::Parse { .. })));
        assert!(matches!(load(json!({"no": "keys"})), Err(KeyError::Parse { .. })));
        assert!(matches!(load(json!("a string")), Err(KeyError::Parse { .. })));

        let oct = json!({"kty": "oct", "k": "c2VjcmV0", "alg": "HS256"});
        let err = load(json!([rsa, oct])).err().unwrap();
        assert!(matches!(err, KeyError::Key { index: 1, .. }), "{err}");
        assert!(err.to_string().starts_with("key 2 of "), "{err}");
        let mut no_primes = rsa.clone();
        no_primes.remove("p");
        let err = load(json!([no_primes])).err().unwrap();
        assert!(err.to_string().contains("lacks member \"p\""), "{err}");
        // The private half of one key with the public half of another.
        let mut mixed = ec.clone();
        mixed.insert("x".to_owned(), files[2]["x"].clone());
        mixed.insert("y".to_owned(), files[2]["y"].clone());
        assert!(matches!(load(json!([mixed])), Err(KeyError::Key { index: 0, .. })));
        let mut wrong_crt = rsa.clone();
        wrong_crt.insert("dp".to_owned(), rsa["dq"].clone());
        assert!(matches!(load(json!([wrong_crt])), Err(KeyError::Key { index: 0, .. })));
        let mut bad_base64 = ec.clone();
        bad_base64.insert("d".to_owned(), json!("*not base64*"));
        assert!(matches!(load(json!([bad_base64])), Err(KeyError::Key { .. })));

        // Keys that only verify: GoTrue refuses a set with no signing key; so do we.
        let mut verify_only = rsa.clone();
        verify_only.insert("key_ops".to_owned(), json!(["verify"]));
        assert!(matches!(load(json!([verify_only.clone()])), Err(KeyError::NoSigningKey { .. })));
        // Followed by one that signs, the verify-only key still verifies; the second signs.
        let k = load(json!([verify_only, ec])).unwrap();
        assert_eq!(k.signing_key(), (Algorithm::ES256, Some("ec-signing-test")));
        // An empty file leaves signing to the secret, as the Supabase CLI does.
        assert_eq!(load(json!([])).unwrap().signing_key(), (Algorithm::HS256, None));
    }
}
