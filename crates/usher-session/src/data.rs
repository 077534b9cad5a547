//! Session data and its versioned byte encoding.
//!
//! [`SessionData`] is a map of string keys to JSON values. At rest it is one format byte followed by
//! the payload; [`FORMAT_JSON_V1`] is the only format so far. A later format gets a new byte and
//! [`SessionData::decode`] keeps reading the old ones, so an upgrade never wipes live sessions. Bytes
//! that do not decode are a [`CodecError`] (surfaced as [`crate::StoreError::Corrupt`]), never a
//! panic.

use serde_json::{Map, Value};

use crate::error::{CodecError, StoreError};

/// Format byte: the payload is a UTF-8 JSON object.
pub const FORMAT_JSON_V1: u8 = 1;

/// What a session holds: string keys to JSON values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionData(Map<String, Value>);

impl SessionData {
    /// An empty session.
    pub fn new() -> Self {
        Self::default()
    }

    /// The value of `field`, if set.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.0.get(field)
    }

    /// Sets `field`, returning the previous value.
    pub fn insert(&mut self, field: impl Into<String>, value: Value) -> Option<Value> {
        self.0.insert(field.into(), value)
    }

    /// Removes `field`, returning its value.
    pub fn remove(&mut self, field: &str) -> Option<Value> {
        self.0.remove(field)
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no field is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The underlying map.
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    /// Encodes as [`FORMAT_JSON_V1`]: the format byte, then the JSON object.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let mut out = vec![FORMAT_JSON_V1];
        serde_json::to_writer(&mut out, &self.0).map_err(CodecError::Json)?;
        Ok(out)
    }

    /// Decodes bytes written by [`SessionData::encode`] of this or an earlier format.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let (&format, payload) = bytes.split_first().ok_or(CodecError::Empty)?;
        match format {
            FORMAT_JSON_V1 => match serde_json::from_slice(payload).map_err(CodecError::Json)? {
                Value::Object(map) => Ok(Self(map)),
                _ => Err(CodecError::NotAnObject),
            },
            other => Err(CodecError::UnknownFormat(other)),
        }
    }
}

impl From<Map<String, Value>> for SessionData {
    fn from(map: Map<String, Value>) -> Self {
        Self(map)
    }
}

/// An atomic read-modify-write of one field, applied by the store under its own lock or
/// transaction so concurrent writers to different (or the same) fields lose nothing.
///
/// Why an enum and not a closure: it keeps [`crate::SessionStore`] `dyn`-compatible, needs no user
/// code to run while a store lock or SQLite write transaction is held, and can later be translated
/// for stores that run the update server-side (a Redis script, a SQL JSON function).
#[derive(Debug, Clone, PartialEq)]
pub enum FieldOp {
    /// Replace the field's value.
    Set(Value),
    /// Remove the field (no error if absent).
    Remove,
    /// Add to an integer field; a missing field counts as 0. Fails on non-integers and overflow.
    Increment(i64),
    /// Append to an array field; a missing field counts as `[]`. Fails on non-arrays.
    Push(Value),
    /// Shallow-merge keys into an object field; a missing field counts as `{}`. A `null` value
    /// removes that key. Fails on non-objects.
    Merge(Map<String, Value>),
}

impl FieldOp {
    /// Applies the operation to `field` of `data`; returns the field's new value (`Null` after
    /// [`FieldOp::Remove`]). On error `data` is unchanged.
    pub fn apply(self, data: &mut SessionData, field: &str) -> Result<Value, StoreError> {
        let invalid = |reason| StoreError::InvalidOp {
            field: field.to_owned(),
            reason,
        };
        let new = match self {
            Self::Set(v) => v,
            Self::Remove => {
                data.remove(field);
                return Ok(Value::Null);
            }
            Self::Increment(by) => {
                let cur = match data.get(field) {
                    None => 0,
                    Some(v) => v.as_i64().ok_or_else(|| invalid("not an integer"))?,
                };
                Value::from(cur.checked_add(by).ok_or_else(|| invalid("overflow"))?)
            }
            Self::Push(item) => match data.remove(field) {
                None => Value::Array(vec![item]),
                Some(Value::Array(mut items)) => {
                    items.push(item);
                    Value::Array(items)
                }
                Some(other) => {
                    data.insert(field, other);
                    return Err(invalid("not an array"));
                }
            },
            Self::Merge(entries) => match data.remove(field) {
                None => Value::Object(merge(Map::new(), entries)),
                Some(Value::Object(map)) => Value::Object(merge(map, entries)),
                Some(other) => {
                    data.insert(field, other);
                    return Err(invalid("not an object"));
                }
            },
        };
        data.insert(field, new.clone());
        Ok(new)
    }
}

fn merge(mut map: Map<String, Value>, entries: Map<String, Value>) -> Map<String, Value> {
    for (k, v) in entries {
        if v.is_null() {
            map.remove(&k);
        } else {
            map.insert(k, v);
        }
    }
    map
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn sample() -> SessionData {
        let mut d = SessionData::new();
        d.insert("user", json!("alice"));
        d.insert("cart", json!([{"sku": "a", "qty": 2}]));
        d
    }

    #[test]
    fn codec_round_trip() {
        let d = sample();
        let bytes = d.encode().unwrap();
        assert_eq!(bytes[0], FORMAT_JSON_V1);
        assert_eq!(SessionData::decode(&bytes).unwrap(), d);
        let empty = SessionData::new().encode().unwrap();
        assert!(SessionData::decode(&empty).unwrap().is_empty());
    }

    #[test]
    fn codec_rejects_garbage_without_panicking() {
        assert!(matches!(SessionData::decode(&[]), Err(CodecError::Empty)));
        assert!(matches!(
            SessionData::decode(&[9, b'{', b'}']),
            Err(CodecError::UnknownFormat(9))
        ));
        assert!(matches!(
            SessionData::decode(&[FORMAT_JSON_V1, 0xff, 0x00]),
            Err(CodecError::Json(_))
        ));
        assert!(matches!(
            SessionData::decode(b"\x01[1,2]"),
            Err(CodecError::NotAnObject)
        ));
    }

    #[test]
    fn field_ops() {
        let mut d = sample();
        assert_eq!(FieldOp::Increment(2).apply(&mut d, "n").unwrap(), json!(2));
        assert_eq!(
            FieldOp::Increment(-5).apply(&mut d, "n").unwrap(),
            json!(-3)
        );
        FieldOp::Push(json!({"sku": "b"}))
            .apply(&mut d, "cart")
            .unwrap();
        assert_eq!(d.get("cart").unwrap().as_array().unwrap().len(), 2);
        let m = json!({"a": 1, "b": 2}).as_object().unwrap().clone();
        FieldOp::Merge(m).apply(&mut d, "prefs").unwrap();
        let m = json!({"a": null, "c": 3}).as_object().unwrap().clone();
        assert_eq!(
            FieldOp::Merge(m).apply(&mut d, "prefs").unwrap(),
            json!({"b": 2, "c": 3})
        );
        FieldOp::Set(json!("x")).apply(&mut d, "s").unwrap();
        assert_eq!(FieldOp::Remove.apply(&mut d, "s").unwrap(), Value::Null);
        assert!(d.get("s").is_none());
    }

    #[test]
    fn invalid_field_ops_leave_data_unchanged() {
        let mut d = sample();
        let before = d.clone();
        assert!(matches!(
            FieldOp::Increment(1).apply(&mut d, "user"),
            Err(StoreError::InvalidOp { .. })
        ));
        assert!(FieldOp::Push(json!(1)).apply(&mut d, "user").is_err());
        assert!(FieldOp::Merge(Map::new()).apply(&mut d, "cart").is_err());
        d.insert("big", json!(i64::MAX));
        assert!(FieldOp::Increment(1).apply(&mut d, "big").is_err());
        d.remove("big");
        assert_eq!(d, before);
    }
}
