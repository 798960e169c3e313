//! The unique-key rule of FHIR JSON ("property names SHALL be unique"): one walk of a
//! JSON text with a serde visitor that names the path of a key seen twice.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Why a JSON text fails the unique-key rule.
#[derive(Debug)]
pub(super) enum KeyError {
    /// The path of a key seen twice in one object.
    Duplicate(String),
    /// Not JSON at all.
    Malformed(String),
}

/// Checks that no object of a JSON text has the same key twice (FHIR R4 JSON: "property
/// names SHALL be unique"); a duplicate is named by its FHIRPath-like path.
pub(super) fn unique_keys(text: &[u8]) -> Result<(), KeyError> {
    let found = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(text);
    let result = Unique { path: String::new(), found: &found }.deserialize(&mut de).and_then(|()| de.end());
    match (result, found.into_inner()) {
        (_, Some(path)) => Err(KeyError::Duplicate(path)),
        (Err(e), None) => Err(KeyError::Malformed(e.to_string())),
        (Ok(()), None) => Ok(()),
    }
}

/// A serde visitor that walks a JSON value, remembering keys per object.
struct Unique<'a> {
    path: String,
    found: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0usize;
        while seq.next_element_seed(Unique { path: format!("{}[{i}]", self.path), found: self.found })?.is_some() {
            i += 1;
        }
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() { key.clone() } else { format!("{}.{key}", self.path) };
            if !seen.insert(key) {
                *self.found.borrow_mut() = Some(path);
                return Err(de::Error::custom("duplicate key"));
            }
            map.next_value_seed(Unique { path, found: self.found })?;
        }
        Ok(())
    }
}
