//! "Perhaps you meant …": the closest known name to a name that is not in the schema cache.
//!
//! Owns the distance (Levenshtein over Unicode scalar values, ASCII case folded) and the rule for
//! "close enough". PostgREST uses a fuzzy n-gram set; an edit distance gives the same answers for
//! the typos that matter (a missing/extra/swapped letter, a plural) and is easy to reason about.
//!
//! Invariants: deterministic (ties go to the lexicographically smallest candidate); bounded work
//! per candidate (names longer than [`MAX_CHARS`] are not compared) so a request naming an
//! unknown table costs at most O(candidates × MAX_CHARS²).

/// Names longer than this (in chars) are never compared. PostgreSQL identifiers are ≤ 63 bytes.
pub const MAX_CHARS: usize = 128;

/// The candidate closest to `wanted`, if it is close: at most about a third of the longer name's
/// characters differ (at least one edit is always allowed). `None` when nothing qualifies.
pub fn closest<'a>(wanted: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let wanted: Vec<char> = wanted.chars().map(|c| c.to_ascii_lowercase()).collect();
    if wanted.is_empty() || wanted.len() > MAX_CHARS {
        return None;
    }
    let mut best: Option<(usize, &'a str)> = None;
    let mut row = Vec::with_capacity(MAX_CHARS + 1);
    for candidate in candidates {
        let chars: Vec<char> = candidate.chars().map(|c| c.to_ascii_lowercase()).collect();
        if chars.is_empty() || chars.len() > MAX_CHARS {
            continue;
        }
        let allowed = allowed_edits(wanted.len().max(chars.len()));
        if wanted.len().abs_diff(chars.len()) > allowed {
            continue;
        }
        let d = distance(&wanted, &chars, &mut row);
        if d > allowed {
            continue;
        }
        let better = match best {
            None => true,
            Some((bd, bn)) => d < bd || (d == bd && candidate < bn),
        };
        if better {
            best = Some((d, candidate));
        }
    }
    best.map(|(_, name)| name)
}

/// Edits tolerated between names whose longer one has `len` chars.
fn allowed_edits(len: usize) -> usize {
    (len / 3).max(1)
}

/// Levenshtein distance (insert, delete, substitute; an adjacent swap counts as two).
pub fn distance(a: &[char], b: &[char], row: &mut Vec<usize>) -> usize {
    row.clear();
    row.extend(0..=b.len());
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            let cost = usize::from(ca != cb);
            row[j + 1] = (diagonal + cost).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        distance(&a, &b, &mut Vec::new())
    }

    #[test]
    fn levenshtein() {
        assert_eq!(d("", ""), 0);
        assert_eq!(d("abc", ""), 3);
        assert_eq!(d("kitten", "sitting"), 3);
        assert_eq!(d("film", "films"), 1);
        assert_eq!(d("todos", "tdoos"), 2);
        assert_eq!(d("café", "cafe"), 1);
    }

    #[test]
    fn picks_the_closest_close_name() {
        let names = ["todos", "users", "messages", "items"];
        assert_eq!(closest("todo", names), Some("todos"));
        assert_eq!(closest("itemz", names), Some("items"));
        assert_eq!(closest("Users", names), Some("users"));
        assert_eq!(closest("mesages", names), Some("messages"));
        assert_eq!(closest("xyz", names), None);
        assert_eq!(closest("completely_unrelated", names), None);
        assert_eq!(closest("todos", std::iter::empty()), None);
    }

    #[test]
    fn ties_are_deterministic() {
        assert_eq!(closest("ab", ["ac", "aa", "ad"]), Some("aa"));
        assert_eq!(closest("ab", ["ad", "ac", "aa"]), Some("aa"));
    }

    #[test]
    fn long_names_are_bounded() {
        let long = "x".repeat(MAX_CHARS + 1);
        assert_eq!(closest(&long, [long.as_str()]), None);
    }
}
