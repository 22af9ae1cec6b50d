//! JWT verification: HS256 with the configured secret, RS256/ES256 from a JWKS file, and a bounded
//! per-shard cache of tokens already verified.
//!
//! Owns: the process-wide [`JwtKeys`] (immutable after start, shared by `Arc`) and each shard's
//! [`TokenCache`] (`!Send`, touched only by its shard — no lock on the request path).
//!
//! Invariants: a cached entry is never served after its `exp`; the cache never holds more than its
//! configured number of entries (FIFO eviction); error messages are PostgREST's (PGRST301/PGRST303)
//! so clients comparing them byte for byte see the same text.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

/// `exp` of the printed API keys: the one Supabase's demo keys carry (2032-11-12).
const API_KEY_EXPIRY: u64 = 1_983_812_996;

/// Clock skew PostgREST tolerates on `exp`/`nbf`/`iat`, seconds.
const CLOCK_SKEW_SECONDS: u64 = 30;

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

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read JWKS file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("JWKS file {path} is not a JWK set: {message}")]
    Parse { path: String, message: String },
    #[error("JWKS key {index} in {path}: {message}")]
    Key { path: String, index: usize, message: String },
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

/// The keys tokens are verified with. Immutable; one per process.
pub struct JwtKeys {
    secret: Vec<u8>,
    hmac: DecodingKey,
    asymmetric: Vec<AsymmetricKey>,
    /// The public half of the JWKS file, served at `/auth/v1/.well-known/jwks.json`.
    public_jwks: Value,
}

/// JWK members that hold private key material; never served.
const PRIVATE_JWK_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

impl JwtKeys {
    pub fn new(secret: &str, jwks_file: Option<&Path>) -> Result<JwtKeys, KeyError> {
        let mut asymmetric = Vec::new();
        let mut public_keys = Vec::new();
        if let Some(path) = jwks_file {
            let shown = path.display().to_string();
            let text =
                std::fs::read_to_string(path).map_err(|source| KeyError::Read { path: shown.clone(), source })?;
            let raw: Value = serde_json::from_str(&text)
                .map_err(|e| KeyError::Parse { path: shown.clone(), message: e.to_string() })?;
            let set: JwkSet = serde_json::from_value(raw.clone())
                .map_err(|e| KeyError::Parse { path: shown.clone(), message: e.to_string() })?;
            let raw_keys = raw.get("keys").and_then(Value::as_array).cloned().unwrap_or_default();
            for (index, (jwk, raw_key)) in set.keys.iter().zip(raw_keys).enumerate() {
                let key_error = |message: String| KeyError::Key { path: shown.clone(), index, message };
                let algorithm = jwk_algorithm(jwk)
                    .ok_or_else(|| key_error("only RS256 and ES256 keys are supported".to_owned()))?;
                let key = DecodingKey::from_jwk(jwk).map_err(|e| key_error(e.to_string()))?;
                asymmetric.push(AsymmetricKey { kid: jwk.common.key_id.clone(), algorithm, key });
                let mut public = raw_key;
                if let Some(members) = public.as_object_mut() {
                    for member in PRIVATE_JWK_MEMBERS {
                        members.remove(*member);
                    }
                }
                public_keys.push(public);
            }
        }
        Ok(JwtKeys {
            secret: secret.as_bytes().to_vec(),
            hmac: DecodingKey::from_secret(secret.as_bytes()),
            asymmetric,
            public_jwks: serde_json::json!({ "keys": public_keys }),
        })
    }

    pub fn public_jwks(&self) -> &Value {
        &self.public_jwks
    }

    /// An API key (`anon`, `service_role`) for the HS256 secret, shaped exactly like Supabase's
    /// demo keys (same header, claim order, issuer and expiry), so the demo secret yields the
    /// well-known demo keys byte for byte.
    pub fn api_key(&self, role: &str) -> String {
        use base64::engine::general_purpose::URL_SAFE_NO_PAD;
        use base64::Engine;
        debug_assert!(role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","typ":"JWT"}"#);
        let payload =
            URL_SAFE_NO_PAD.encode(format!(r#"{{"iss":"supabase-demo","role":"{role}","exp":{API_KEY_EXPIRY}}}"#));
        let signing_input = format!("{header}.{payload}");
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.secret);
        let tag = ring::hmac::sign(&key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
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
                let candidates = self.asymmetric.iter().filter(|k| k.algorithm == header.alg);
                let mut chosen = None;
                for candidate in candidates {
                    if header.kid.is_none() || candidate.kid == header.kid || candidate.kid.is_none() {
                        chosen = Some(&candidate.key);
                        break;
                    }
                }
                chosen.ok_or(JwtError::NoKey)?
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

fn jwk_algorithm(jwk: &Jwk) -> Option<Algorithm> {
    use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, KeyAlgorithm};
    match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Some(Algorithm::RS256),
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Some(Algorithm::ES256)
        }
        _ => None,
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
    use std::sync::Arc;

    /// The anon key of Supabase's local development stack, signed with the demo secret.
    const DEMO_ANON_KEY: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6ImFub24iLCJleHAiOjE5ODM4MTI5OTZ9.CRXP1A7WOeoJeXxjNni43kdQwgnWNReilDMblYTn_I0";

    impl JwtKeys {
        fn sign_hs256(&self, claims: &Value) -> String {
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(&self.secret))
                .unwrap()
        }
    }

    const DEMO_SERVICE_ROLE_KEY: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJzdXBhYmFzZS1kZW1vIiwicm9sZSI6InNlcnZpY2Vfcm9sZSIsImV4cCI6MTk4MzgxMjk5Nn0.EGIM96RAZx35lJzdJsyH-qQwv8Hdp7fsn3W0YpN81IU";

    fn keys() -> Arc<JwtKeys> {
        Arc::new(JwtKeys::new(DEMO_JWT_SECRET, None).unwrap())
    }

    #[test]
    fn demo_secret_yields_the_demo_keys() {
        let k = keys();
        assert_eq!(k.api_key("anon"), DEMO_ANON_KEY);
        assert_eq!(k.api_key("service_role"), DEMO_SERVICE_ROLE_KEY);
        let claims = k.verify(DEMO_ANON_KEY, unix_now()).unwrap();
        assert_eq!(claims.role(), Some("anon"));
    }

    #[test]
    fn postgrest_messages() {
        let k = keys();
        assert_eq!(k.verify("a.b", 0).unwrap_err().to_string(), "Expected 3 parts in JWT; got 2");
        assert_eq!(k.verify("", 0).unwrap_err(), JwtError::Empty);
        let expired = k.sign_hs256(&json!({"role": "anon", "exp": 1000}));
        let err = k.verify(&expired, 2000).unwrap_err();
        assert_eq!((err.to_string().as_str(), err.pgrst_code()), ("JWT expired", "PGRST303"));
        let bad_exp = k.sign_hs256(&json!({"role": "anon", "exp": "soon"}));
        assert_eq!(k.verify(&bad_exp, 0).unwrap_err().to_string(), "The JWT 'exp' claim must be a number");
        let other = JwtKeys::new("another-secret-another-secret-another-secret", None).unwrap();
        let forged = other.sign_hs256(&json!({"role": "service_role"}));
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
            let token = k.sign_hs256(&json!({"role": "anon", "n": i}));
            assert_eq!(cache.verify(&token).unwrap().object["n"], i);
            assert!(cache.cached() <= 3);
        }
        let soon = unix_now() - CLOCK_SKEW_SECONDS - 1;
        let token = k.sign_hs256(&json!({"role": "anon", "exp": soon}));
        assert_eq!(cache.verify(&token).unwrap_err(), JwtError::Expired);
    }

    #[test]
    fn jwks_rs256_and_es256_verify_and_public_half_has_no_private_members() {
        // Keys generated once with `openssl`; the private halves exist only for this test.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(&path, include_str!("../../tests/fixtures/jwks.json")).unwrap();
        let keys = JwtKeys::new(DEMO_JWT_SECRET, Some(&path)).unwrap();
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
    }
}
