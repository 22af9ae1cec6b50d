//! Rate limits per `[auth.rate_limit]`, with GoTrue's buckets (reference/auth.md §6): token
//! buckets per client IP for request kinds, and process-wide buckets for mail and SMS sent.
//!
//! Owns [`RateLimits`], shared by every shard (`Arc`). Auth requests are not the Data API's hot
//! path, and each check holds one of [`STRIPES`] mutexes (chosen by the address) for a few
//! hundred nanoseconds, so shards rarely meet on a lock.
//!
//! Invariants: a bucket never holds more than its burst nor less than zero tokens; the number of
//! tracked addresses is bounded ([`MAX_TRACKED_PER_STRIPE`] per stripe; full buckets are
//! forgotten first, and if every one is in use the oldest-refilled are dropped, which can only
//! let a client through early, never lock one out).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::AuthError;
use crate::settings::RateLimit;

const STRIPES: usize = 16;
const MAX_TRACKED_PER_STRIPE: usize = 4096;
const FIVE_MINUTES: Duration = Duration::from_secs(300);
const HOUR: Duration = Duration::from_secs(3600);

/// What a request is counted against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bucket {
    /// `/token` (`token_refresh` per 5 min).
    Token,
    /// `/verify` (`token_verifications` per 5 min).
    Verify,
    /// `/signup`, `/otp`, `/magiclink`, `/recover`, `/resend`, `PUT /user` (`sign_in_sign_ups` per 5 min).
    SignInSignUp,
    /// Anonymous sign-ins (`anonymous_users` per hour).
    AnonymousSignIn,
    /// MFA challenge and verify (15 per minute, GoTrue's fixed default).
    MfaChallengeVerify,
}

#[derive(Debug, Clone, Copy)]
struct Rate {
    burst: f64,
    per_second: f64,
}

impl Rate {
    fn new(limit: u64, window: Duration) -> Rate {
        debug_assert!(limit > 0, "validated by Auth::validate");
        Rate { burst: limit as f64, per_second: limit as f64 / window.as_secs_f64() }
    }
}

#[derive(Debug, Clone, Copy)]
struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    fn full(rate: Rate, now: Instant) -> TokenBucket {
        TokenBucket { tokens: rate.burst, at: now }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate.per_second).min(rate.burst);
        self.at = now;
        debug_assert!((0.0..=rate.burst).contains(&self.tokens));
    }

    /// Takes one token if there is one.
    fn take(&mut self, rate: Rate, now: Instant) -> bool {
        self.refill(rate, now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Every Auth rate limit of the process.
pub struct RateLimits {
    token: Rate,
    verify: Rate,
    sign_in_sign_up: Rate,
    anonymous: Rate,
    mfa: Rate,
    email: Rate,
    sms: Rate,
    per_ip: Vec<Mutex<HashMap<(Bucket, IpAddr), TokenBucket>>>,
    emails_sent: Mutex<TokenBucket>,
    sms_sent: Mutex<TokenBucket>,
}

impl RateLimits {
    pub fn new(settings: &RateLimit) -> RateLimits {
        let now = Instant::now();
        let email = Rate::new(settings.email_sent, HOUR);
        let sms = Rate::new(settings.sms_sent, HOUR);
        RateLimits {
            token: Rate::new(settings.token_refresh, FIVE_MINUTES),
            verify: Rate::new(settings.token_verifications, FIVE_MINUTES),
            sign_in_sign_up: Rate::new(settings.sign_in_sign_ups, FIVE_MINUTES),
            anonymous: Rate::new(settings.anonymous_users, HOUR),
            mfa: Rate::new(15, Duration::from_secs(60)),
            email,
            sms,
            per_ip: (0..STRIPES).map(|_| Mutex::new(HashMap::new())).collect(),
            emails_sent: Mutex::new(TokenBucket::full(email, now)),
            sms_sent: Mutex::new(TokenBucket::full(sms, now)),
        }
    }

    fn rate(&self, bucket: Bucket) -> Rate {
        match bucket {
            Bucket::Token => self.token,
            Bucket::Verify => self.verify,
            Bucket::SignInSignUp => self.sign_in_sign_up,
            Bucket::AnonymousSignIn => self.anonymous,
            Bucket::MfaChallengeVerify => self.mfa,
        }
    }

    /// Counts one request of `bucket` from `ip`: 429 `over_request_rate_limit` when its bucket is empty.
    pub fn check(&self, bucket: Bucket, ip: IpAddr) -> Result<(), AuthError> {
        let rate = self.rate(bucket);
        let now = Instant::now();
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        ip.hash(&mut hasher);
        let stripe = &self.per_ip[hasher.finish() as usize % STRIPES];
        let mut map = stripe.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= MAX_TRACKED_PER_STRIPE && !map.contains_key(&(bucket, ip)) {
            forget_idle(&mut map, |b| self.rate(b), now);
        }
        let entry = map.entry((bucket, ip)).or_insert_with(|| TokenBucket::full(rate, now));
        if entry.take(rate, now) {
            Ok(())
        } else {
            Err(AuthError::rate_limited())
        }
    }

    /// Counts one email about to be sent: 429 `over_email_send_rate_limit` past `email_sent` per hour.
    pub fn email_sent(&self) -> Result<(), AuthError> {
        let mut bucket = self.emails_sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if bucket.take(self.email, Instant::now()) {
            Ok(())
        } else {
            Err(AuthError::new(429, "over_email_send_rate_limit", "email rate limit exceeded"))
        }
    }

    /// Counts one SMS about to be sent: 429 `over_sms_send_rate_limit` past `sms_sent` per hour.
    pub fn sms_sent(&self) -> Result<(), AuthError> {
        let mut bucket = self.sms_sent.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if bucket.take(self.sms, Instant::now()) {
            Ok(())
        } else {
            Err(AuthError::new(429, "over_sms_send_rate_limit", "SMS rate limit exceeded"))
        }
    }
}

/// Drops the buckets that have refilled (they mean nothing); if none has, the half refilled longest ago.
fn forget_idle(map: &mut HashMap<(Bucket, IpAddr), TokenBucket>, rate: impl Fn(Bucket) -> Rate, now: Instant) {
    map.retain(|(bucket, _), b| {
        let mut refilled = *b;
        refilled.refill(rate(*bucket), now);
        refilled.tokens < rate(*bucket).burst
    });
    if map.len() >= MAX_TRACKED_PER_STRIPE {
        let mut ages: Vec<_> = map.iter().map(|(key, b)| (b.at, *key)).collect();
        ages.sort_unstable_by_key(|(at, _)| *at);
        for (_, key) in ages.into_iter().take(MAX_TRACKED_PER_STRIPE / 2) {
            map.remove(&key);
        }
    }
    debug_assert!(map.len() < MAX_TRACKED_PER_STRIPE);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_empty_and_are_per_address() {
        let limits = RateLimits::new(&RateLimit { token_refresh: 3, ..RateLimit::default() });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            limits.check(Bucket::Token, a).unwrap();
        }
        assert_eq!(limits.check(Bucket::Token, a).unwrap_err().code, "over_request_rate_limit");
        limits.check(Bucket::Token, b).unwrap();
        limits.check(Bucket::Verify, a).unwrap();
    }

    #[test]
    fn tracked_addresses_are_bounded() {
        let limits = RateLimits::new(&RateLimit::default());
        for i in 0..(STRIPES * MAX_TRACKED_PER_STRIPE * 2) as u32 {
            limits.check(Bucket::SignInSignUp, IpAddr::from(i.to_be_bytes())).unwrap();
        }
        let tracked: usize = limits.per_ip.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(tracked <= STRIPES * MAX_TRACKED_PER_STRIPE);
    }

    #[test]
    fn email_limit_is_global() {
        let limits = RateLimits::new(&RateLimit { email_sent: 2, ..RateLimit::default() });
        limits.email_sent().unwrap();
        limits.email_sent().unwrap();
        assert_eq!(limits.email_sent().unwrap_err().code, "over_email_send_rate_limit");
    }
}
