//! The `Prefer` request header (reference/rest.md §4), read once per request by reads, writes,
//! calls and the OpenAPI description alike.
//!
//! Owns: [`Prefer`] (its parsing, PostgREST's refusal of unknown preferences under
//! `handling=strict`), what the preferences mean for the transaction (its end, its `timezone`
//! setting) and the `Preference-Applied` response header.
//!
//! Invariants: the first recognised value of each kind wins, a later one of the same kind is still
//! a known preference (not reported as invalid); at most [`MAX_PREFER_VALUES`] values are looked
//! at; `Preference-Applied` lists what was honoured in PostgREST's order.

use madbase_http::{Request, Response};
use madbase_pg::{Batch, TxEnd};

use super::error::ApiError;

/// `db-tx-end = commit-allow-override` (the postgrest-js fixture's setting): commit by default,
/// `Prefer: tx=rollback` may override. There is no configuration key for it yet.
const TX_OVERRIDE_ALLOWED: bool = true;
/// At most this many `Prefer` values are looked at (the header size is bounded by the HTTP layer).
const MAX_PREFER_VALUES: usize = 64;

/// `Prefer: return=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Return {
    Minimal,
    HeadersOnly,
    Representation,
}

impl Return {
    /// The value as `Preference-Applied` lists it.
    pub(super) fn applied(self) -> &'static str {
        match self {
            Return::Minimal => "return=minimal",
            Return::HeadersOnly => "return=headers-only",
            Return::Representation => "return=representation",
        }
    }
}

/// `Prefer: resolution=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    MergeDuplicates,
    IgnoreDuplicates,
}

impl Resolution {
    /// The value as `Preference-Applied` lists it.
    pub(super) fn applied(self) -> &'static str {
        match self {
            Resolution::MergeDuplicates => "resolution=merge-duplicates",
            Resolution::IgnoreDuplicates => "resolution=ignore-duplicates",
        }
    }
}

/// The `Prefer` header (every `Prefer` header, comma-separated values; the first recognised
/// value of each kind wins), as PostgREST reads it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prefer {
    pub ret: Option<Return>,
    /// `count=…` as given (`exact`, `planned`, `estimated`).
    pub count: Option<&'static str>,
    pub resolution: Option<Resolution>,
    /// `missing=default` → `Some(true)`, `missing=null` → `Some(false)`.
    pub missing_default: Option<bool>,
    pub strict: Option<bool>,
    pub max_affected: Option<u64>,
    /// `tx=rollback` → `Some(true)`.
    pub tx_rollback: Option<bool>,
    pub timezone: Option<String>,
    /// Values that are not preferences PostgREST knows (reported with `handling=strict`).
    pub invalid: Vec<String>,
}

impl Prefer {
    pub fn parse(req: &Request) -> Prefer {
        let mut p = Prefer::default();
        let mut seen = 0;
        for header in req.headers().get_all("prefer") {
            let header = String::from_utf8_lossy(header);
            for value in header.split(',').map(str::trim).filter(|v| !v.is_empty()) {
                seen += 1;
                if seen > MAX_PREFER_VALUES {
                    return p;
                }
                p.add(value);
            }
        }
        p
    }

    fn add(&mut self, value: &str) {
        let (key, arg) = value.split_once('=').unwrap_or((value, ""));
        let known = match (key, arg) {
            ("return", "minimal") => set(&mut self.ret, Return::Minimal),
            ("return", "headers-only") => set(&mut self.ret, Return::HeadersOnly),
            ("return", "representation") => set(&mut self.ret, Return::Representation),
            ("count", "exact") => set(&mut self.count, "exact"),
            ("count", "planned") => set(&mut self.count, "planned"),
            ("count", "estimated") => set(&mut self.count, "estimated"),
            ("resolution", "merge-duplicates") => set(&mut self.resolution, Resolution::MergeDuplicates),
            ("resolution", "ignore-duplicates") => set(&mut self.resolution, Resolution::IgnoreDuplicates),
            ("missing", "default") => set(&mut self.missing_default, true),
            ("missing", "null") => set(&mut self.missing_default, false),
            ("handling", "strict") => set(&mut self.strict, true),
            ("handling", "lenient") => set(&mut self.strict, false),
            ("tx", "commit") => set(&mut self.tx_rollback, false),
            ("tx", "rollback") => set(&mut self.tx_rollback, true),
            ("timezone", tz) if !tz.is_empty() => set(&mut self.timezone, tz.to_owned()),
            ("max-affected", n) => match n.parse::<u64>() {
                Ok(n) => set(&mut self.max_affected, n),
                Err(_) => false,
            },
            _ => false,
        };
        if !known {
            self.invalid.push(value.to_owned());
        }
    }

    /// [`Prefer::parse`], refusing unknown preferences under `handling=strict` (400 PGRST122).
    pub(super) fn checked(req: &Request) -> Result<Prefer, ApiError> {
        let prefer = Prefer::parse(req);
        if prefer.is_strict() && !prefer.invalid.is_empty() {
            return Err(ApiError::InvalidPreferences(prefer.invalid));
        }
        Ok(prefer)
    }

    pub(super) fn is_strict(&self) -> bool {
        self.strict == Some(true)
    }

    /// `count=exact`, and `estimated` (which counts exactly too: a read then takes the planner's
    /// estimate above db-max-rows; a call and a write keep the exact count).
    pub(super) fn counts_exactly(&self) -> bool {
        matches!(self.count, Some("exact" | "estimated"))
    }

    /// `max-affected`, which applies only with `handling=strict`.
    pub(super) fn strict_max_affected(&self) -> Option<u64> {
        self.max_affected.filter(|_| self.is_strict())
    }

    /// How the request's transaction ends: `Prefer: tx=rollback` rolls back when overrides are
    /// allowed, as in PostgREST; otherwise it commits.
    pub(super) fn tx_end(&self) -> TxEnd {
        if TX_OVERRIDE_ALLOWED && self.tx_rollback == Some(true) {
            TxEnd::Rollback
        } else {
            TxEnd::Commit
        }
    }

    /// The transaction settings the preferences ask for: `timezone` (an unknown zone is
    /// PostgreSQL's 22023 error, even with `handling=lenient`, as in PostgREST).
    pub(super) fn settings(&self, batch: Batch) -> Batch {
        match &self.timezone {
            Some(timezone) => batch.setting("timezone", timezone.as_str()),
            None => batch,
        }
    }

    /// Sets `Preference-Applied` (when anything was honoured), in PostgREST's order: `leading`
    /// (a write's resolution/missing/return), count (as asked for, as PostgREST lists it), tx,
    /// handling, timezone, then `max_affected`.
    pub(super) fn set_applied(&self, response: &mut Response, mut applied: Vec<String>, max_affected: Option<u64>) {
        if let Some(count) = self.count {
            applied.push(format!("count={count}"));
        }
        if TX_OVERRIDE_ALLOWED {
            match self.tx_rollback {
                Some(true) => applied.push("tx=rollback".to_owned()),
                Some(false) => applied.push("tx=commit".to_owned()),
                None => {}
            }
        }
        match self.strict {
            Some(true) => applied.push("handling=strict".to_owned()),
            Some(false) => applied.push("handling=lenient".to_owned()),
            None => {}
        }
        if let Some(timezone) = &self.timezone {
            applied.push(format!("timezone={timezone}"));
        }
        if let Some(limit) = max_affected {
            applied.push(format!("max-affected={limit}"));
        }
        if !applied.is_empty() {
            response.set_header("preference-applied", applied.join(", "));
        }
    }
}

/// Keeps the first value of a kind; a later one of the same kind is still a known preference.
fn set<T>(slot: &mut Option<T>, value: T) -> bool {
    if slot.is_none() {
        *slot = Some(value);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_parsing() {
        let mut p = Prefer::default();
        for v in [
            "return=representation",
            "return=minimal",
            "count=exact",
            "handling=strict",
            "max-affected=5",
            "foo",
            "tx=rollback",
            "max-affected=x",
        ] {
            p.add(v);
        }
        assert_eq!(p.ret, Some(Return::Representation));
        assert_eq!(p.count, Some("exact"));
        assert_eq!(p.max_affected, Some(5));
        assert_eq!(p.strict_max_affected(), Some(5));
        assert_eq!(p.tx_rollback, Some(true));
        assert_eq!(p.invalid, ["foo", "max-affected=x"]);
        p.strict = Some(false);
        assert_eq!(p.strict_max_affected(), None, "max-affected needs handling=strict");
    }
}
