//! The shape of a JSON write or call body, checked in one streaming pass (no value tree): one
//! object or an array of objects, and its rows' key sets.
//!
//! Owns: [`scan`] and [`one_row_array`]. Why streaming: a 100-row bulk insert spent most of its MadBase CPU building a
//! `serde_json::Value` of the body only to compare keys; values are now skipped while the parser
//! still validates every byte of them. Invariants: the whole body is validated as JSON (trailing
//! garbage included); only keys are materialised (one reusable mark per reference key, so a
//! repeated key cannot stand in for a missing one); at most `max_rows` rows and `max_columns`
//! keys in the reference set.

use std::collections::HashMap;
use std::fmt;

use bytes::{Bytes, BytesMut};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// At most this many rows in one (bulk) insert, or in a call's body.
pub const MAX_BULK_ROWS: usize = 10_000;

/// `[<object>]` around one JSON object (the write and call statements read arrays of rows).
pub fn one_row_array(object: &Bytes) -> Bytes {
    let mut wrapped = BytesMut::with_capacity(object.len() + 2);
    wrapped.extend_from_slice(b"[");
    wrapped.extend_from_slice(object);
    wrapped.extend_from_slice(b"]");
    wrapped.freeze()
}

/// What [`scan`] learned about a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shape {
    /// A single object (not an array).
    pub single: bool,
    pub rows: usize,
    /// The given `columns=` in their order, else the first row's keys sorted (one SQL text per
    /// key set, whatever order the client wrote them in).
    pub columns: Vec<String>,
}

/// Why a body was refused (each becomes a PGRST102 message).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShapeError {
    #[error("Empty or invalid json")]
    Invalid,
    #[error("All object keys must match")]
    KeysDiffer,
    #[error("At most {0} rows can be written in one request")]
    TooManyRows(usize),
    #[error("At most {0} columns can be written")]
    TooManyColumns(usize),
}

/// Scans `raw` with the reference key set `columns` (`columns=`), or the first row's keys.
pub fn scan(
    raw: &[u8],
    columns: Option<Vec<String>>,
    max_rows: usize,
    max_columns: usize,
) -> Result<Shape, ShapeError> {
    let mut reference = Reference::new(columns.unwrap_or_default());
    let given = !reference.names.is_empty();
    let mut state =
        State { reference: &mut reference, given, rows: 0, max_rows, max_columns, single: false, error: None };
    let mut de = serde_json::Deserializer::from_slice(raw);
    let result = (&mut de).deserialize_any(Body(&mut state)).and_then(|()| de.end());
    if let Some(error) = state.error.take() {
        return Err(error);
    }
    result.map_err(|_| ShapeError::Invalid)?;
    let (single, rows) = (state.single, state.rows);
    let mut columns = reference.names;
    if !given {
        columns.sort_unstable();
    }
    Ok(Shape { single, rows, columns })
}

/// The reference key set with a reusable "seen in this row" mark per key.
struct Reference {
    names: Vec<String>,
    index: HashMap<String, usize>,
    seen: Vec<bool>,
}

impl Reference {
    fn new(names: Vec<String>) -> Self {
        let index = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        let seen = vec![false; names.len()];
        Reference { names, index, seen }
    }
}

struct State<'r> {
    reference: &'r mut Reference,
    /// The reference came from `columns=` (keys outside it are ignored, missing ones allowed).
    given: bool,
    rows: usize,
    max_rows: usize,
    max_columns: usize,
    single: bool,
    /// A shape error found mid-parse (the parse is then aborted with a custom error).
    error: Option<ShapeError>,
}

impl State<'_> {
    fn fail<E: de::Error>(&mut self, error: ShapeError) -> E {
        self.error = Some(error);
        E::custom("shape")
    }

    /// One row (an object) from `map`.
    fn row<'de, A: MapAccess<'de>>(&mut self, mut map: A) -> Result<(), A::Error> {
        self.rows += 1;
        if self.rows > self.max_rows {
            return Err(self.fail(ShapeError::TooManyRows(self.max_rows)));
        }
        let first_defines = self.rows == 1 && !self.given;
        self.reference.seen.iter_mut().for_each(|s| *s = false);
        let (mut hits, mut extra) = (0usize, false);
        while let Some(key) = map.next_key::<String>()? {
            map.next_value::<IgnoredAny>()?;
            if first_defines {
                if !self.reference.index.contains_key(key.as_str()) {
                    if self.reference.names.len() == self.max_columns {
                        return Err(self.fail(ShapeError::TooManyColumns(self.max_columns)));
                    }
                    self.reference.index.insert(key.clone(), self.reference.names.len());
                    self.reference.names.push(key);
                    self.reference.seen.push(false);
                }
                continue;
            }
            match self.reference.index.get(key.as_str()) {
                Some(&i) if !self.reference.seen[i] => {
                    self.reference.seen[i] = true;
                    hits += 1;
                }
                Some(_) => {}
                None => extra = true,
            }
        }
        if first_defines {
            return Ok(());
        }
        let complete = hits == self.reference.names.len();
        // With `columns=` rows may lack some (they get NULL or, with `missing=default`, the
        // default); without it every row must have exactly the first row's keys.
        if !self.given && (!complete || extra) {
            return Err(self.fail(ShapeError::KeysDiffer));
        }
        Ok(())
    }
}

/// The top level: an object (one row) or an array of objects.
struct Body<'s, 'r>(&'s mut State<'r>);

impl<'de> Visitor<'de> for Body<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object or an array of objects")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.single = true;
        self.0.row(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Row(&mut *self.0))?.is_some() {}
        Ok(())
    }
}

/// One array element, which must be an object.
struct Row<'s, 'r>(&'s mut State<'r>);

impl<'de> DeserializeSeed<'de> for Row<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Row<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.row(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(body: &str, columns: Option<&[&str]>) -> Result<Shape, ShapeError> {
        scan(body.as_bytes(), columns.map(|c| c.iter().map(|s| s.to_string()).collect()), 3, 4)
    }

    #[test]
    fn shapes_and_refusals() {
        let one = shape(r#"{"b": [1, {"x": 2}], "a": null}"#, None).unwrap();
        assert_eq!((one.single, one.rows, one.columns.clone()), (true, 1, vec!["a".into(), "b".into()]));
        let many = shape(r#"[{"a":1,"b":"x"},{"b":"y","a":2}]"#, None).unwrap();
        assert_eq!((many.single, many.rows), (false, 2));
        assert_eq!(shape("[]", None).unwrap().rows, 0);
        assert_eq!(shape(r#"[{"a":1},{"b":1}]"#, None), Err(ShapeError::KeysDiffer));
        assert_eq!(
            shape(r#"[{"a":1,"b":2},{"a":1,"a":2}]"#, None),
            Err(ShapeError::KeysDiffer),
            "a repeat is no stand-in"
        );
        assert_eq!(shape(r#"[{"a":1},{"a":1,"b":2}]"#, None), Err(ShapeError::KeysDiffer));
        assert_eq!(shape(r#"[{},{},{},{}]"#, None), Err(ShapeError::TooManyRows(3)));
        assert_eq!(shape(r#"{"a":1,"b":1,"c":1,"d":1,"e":1}"#, None), Err(ShapeError::TooManyColumns(4)));
        for bad in ["", "1", "[1]", "[{}", r#"{"a":1} x"#, r#"{"a":tru}"#, "[[]]", r#""s""#] {
            assert_eq!(shape(bad, None), Err(ShapeError::Invalid), "{bad:?}");
        }
    }

    #[test]
    fn given_columns_ignore_extra_keys_and_allow_missing_ones() {
        let s = shape(r#"[{"a":1,"z":0},{"a":2,"b":3}]"#, Some(&["a", "b"])).unwrap();
        assert_eq!((s.columns, s.rows), (vec!["a".to_string(), "b".to_string()], 2));
    }
}
