//! The value model of task inputs and outputs ([`Literal`], [`LiteralMap`]).
//!
//! On the wire (JSON) a literal is written in its *tagged* form, one key
//! naming the kind: `{"integer": 3}`, `{"float": 1.5}`, `{"string": "a"}`,
//! `{"boolean": true}`, `{"datetime": "2024-01-02T03:04:05Z"}`,
//! `{"duration": {"seconds": 10, "nanos": 5}}`, `{"blob": {"uri": "..."}}`,
//! `{"schema": {"uri": "..."}}`, `{"binary": {"tag": "msgpack", "value":
//! "<base64>"}}`, `{"collection": [...]}`, `{"map": {...}}`, `"none"`.
//!
//! Reading also accepts *plain* JSON for convenience: `3` → integer, `1.5` →
//! float, `"a"` → string, `true` → boolean, `[..]` → collection, an object
//! that is not a single known tag → map, `null` → none.
//!
//! ```
//! use kozmo_interface::literals::{Literal, LiteralMap};
//!
//! let inputs: LiteralMap = serde_json::from_str(r#"{"n": 3, "who": {"string": "world"}}"#).unwrap();
//! assert_eq!(inputs["n"], Literal::Integer(3));
//! assert_eq!(inputs["who"], Literal::String("world".into()));
//! assert_eq!(serde_json::to_string(&inputs["n"]).unwrap(), r#"{"integer":3}"#);
//! ```

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{json, Map, Value};

/// Named literals: the inputs or outputs of a task.
pub type LiteralMap = BTreeMap<String, Literal>;

/// A signed protobuf-style duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LiteralDuration {
    /// Whole seconds.
    pub seconds: i64,
    /// Nanoseconds, same sign as `seconds`.
    pub nanos: i32,
}

/// One input or output value.
#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    /// No value.
    None,
    /// A 64-bit integer.
    Integer(i64),
    /// A 64-bit float.
    Float(f64),
    /// A string.
    String(String),
    /// A boolean.
    Boolean(bool),
    /// A point in time (UTC).
    Datetime(DateTime<Utc>),
    /// A duration.
    Duration(LiteralDuration),
    /// A file or directory by URI.
    Blob {
        /// Where it is.
        uri: String,
        /// Its format, empty if unknown.
        format: String,
    },
    /// A structured dataset by URI.
    Schema {
        /// Where it is.
        uri: String,
    },
    /// Opaque bytes with a tag naming their encoding (e.g. `msgpack`).
    Binary {
        /// The encoding.
        tag: String,
        /// The bytes.
        value: Vec<u8>,
    },
    /// An ordered list.
    Collection(Vec<Literal>),
    /// Named values.
    Map(LiteralMap),
}

impl Literal {
    /// The tagged JSON form.
    pub fn to_json(&self) -> Value {
        match self {
            Literal::None => Value::String("none".into()),
            Literal::Integer(i) => json!({ "integer": i }),
            Literal::Float(f) => json!({ "float": f }),
            Literal::String(s) => json!({ "string": s }),
            Literal::Boolean(b) => json!({ "boolean": b }),
            Literal::Datetime(t) => json!({ "datetime": t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true) }),
            Literal::Duration(d) => json!({ "duration": { "seconds": d.seconds, "nanos": d.nanos } }),
            Literal::Blob { uri, format } => json!({ "blob": { "uri": uri, "format": format } }),
            Literal::Schema { uri } => json!({ "schema": { "uri": uri } }),
            Literal::Binary { tag, value } => {
                json!({ "binary": { "tag": tag, "value": data_encoding::BASE64.encode(value) } })
            }
            Literal::Collection(items) => {
                json!({ "collection": items.iter().map(Literal::to_json).collect::<Vec<_>>() })
            }
            Literal::Map(m) => {
                let inner: Map<String, Value> = m.iter().map(|(k, v)| (k.clone(), v.to_json())).collect();
                json!({ "map": inner })
            }
        }
    }

    /// Reads the tagged or the plain JSON form (see the module docs).
    pub fn from_json(v: Value) -> Result<Literal, String> {
        match v {
            Value::Null => Ok(Literal::None),
            Value::Bool(b) => Ok(Literal::Boolean(b)),
            Value::Number(n) => Ok(match n.as_i64() {
                Some(i) => Literal::Integer(i),
                None => Literal::Float(n.as_f64().ok_or("number out of range")?),
            }),
            Value::String(s) if s == "none" => Ok(Literal::None),
            Value::String(s) => Ok(Literal::String(s)),
            Value::Array(items) => items
                .into_iter()
                .map(Literal::from_json)
                .collect::<Result<_, _>>()
                .map(Literal::Collection),
            Value::Object(obj) => {
                if obj.len() == 1 {
                    let (tag, inner) = obj.iter().next().expect("one entry");
                    if let Some(lit) = Literal::from_tagged(tag, inner)? {
                        return Ok(lit);
                    }
                }
                obj.into_iter()
                    .map(|(k, v)| Literal::from_json(v).map(|l| (k, l)))
                    .collect::<Result<_, _>>()
                    .map(Literal::Map)
            }
        }
    }

    fn from_tagged(tag: &str, inner: &Value) -> Result<Option<Literal>, String> {
        let field = |name: &str| inner.get(name).and_then(Value::as_str).unwrap_or_default().to_string();
        let bad = |what: &str| format!("literal `{tag}`: expected {what}, got {inner}");
        let lit = match tag {
            "integer" => Literal::Integer(inner.as_i64().ok_or_else(|| bad("an integer"))?),
            "float" => Literal::Float(inner.as_f64().ok_or_else(|| bad("a number"))?),
            "string" => Literal::String(inner.as_str().ok_or_else(|| bad("a string"))?.to_string()),
            "boolean" => Literal::Boolean(inner.as_bool().ok_or_else(|| bad("true or false"))?),
            "datetime" => {
                let s = inner.as_str().ok_or_else(|| bad("an RFC 3339 string"))?;
                let t = DateTime::parse_from_rfc3339(s).map_err(|e| format!("literal `datetime`: {e}: {s}"))?;
                Literal::Datetime(t.with_timezone(&Utc))
            }
            "duration" => Literal::Duration(
                serde_json::from_value(inner.clone()).map_err(|_| bad("{\"seconds\": n, \"nanos\": n}"))?,
            ),
            "blob" if inner.is_object() => Literal::Blob {
                uri: field("uri"),
                format: field("format"),
            },
            "schema" if inner.is_object() => Literal::Schema { uri: field("uri") },
            "binary" if inner.is_object() => {
                let value = data_encoding::BASE64
                    .decode(field("value").as_bytes())
                    .map_err(|e| format!("literal `binary`: value is not base64: {e}"))?;
                Literal::Binary {
                    tag: field("tag"),
                    value,
                }
            }
            "collection" => match inner {
                Value::Array(_) => Literal::from_json(inner.clone())?,
                _ => return Err(bad("an array")),
            },
            "map" => match inner {
                Value::Object(obj) => Literal::Map(
                    obj.iter()
                        .map(|(k, v)| Literal::from_json(v.clone()).map(|l| (k.clone(), l)))
                        .collect::<Result<_, _>>()?,
                ),
                _ => return Err(bad("an object")),
            },
            _ => return Ok(None),
        };
        Ok(Some(lit))
    }
}

impl Serialize for Literal {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Literal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Literal::from_json(Value::deserialize(d)?).map_err(D::Error::custom)
    }
}

impl From<i64> for Literal {
    fn from(v: i64) -> Self {
        Literal::Integer(v)
    }
}

impl From<f64> for Literal {
    fn from(v: f64) -> Self {
        Literal::Float(v)
    }
}

impl From<bool> for Literal {
    fn from(v: bool) -> Self {
        Literal::Boolean(v)
    }
}

impl From<&str> for Literal {
    fn from(v: &str) -> Self {
        Literal::String(v.to_string())
    }
}

impl From<String> for Literal {
    fn from(v: String) -> Self {
        Literal::String(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(l: Literal) {
        let json = serde_json::to_string(&l).unwrap();
        assert_eq!(serde_json::from_str::<Literal>(&json).unwrap(), l, "{json}");
    }

    #[test]
    fn every_kind_round_trips_through_json() {
        let t = DateTime::parse_from_rfc3339("1900-01-01T01:01:01.000000001Z")
            .unwrap()
            .with_timezone(&Utc);
        round_trip(Literal::None);
        round_trip(Literal::Integer(-3));
        round_trip(Literal::Float(1.25));
        round_trip(Literal::String("x".into()));
        round_trip(Literal::Boolean(true));
        round_trip(Literal::Datetime(t));
        round_trip(Literal::Duration(LiteralDuration { seconds: 10, nanos: 5 }));
        round_trip(Literal::Blob {
            uri: "asdf fdsa".into(),
            format: "csv".into(),
        });
        round_trip(Literal::Schema {
            uri: "s3://b/x.parquet".into(),
        });
        round_trip(Literal::Binary {
            tag: "msgpack".into(),
            value: vec![0, 1, 255],
        });
        round_trip(Literal::Collection(vec![
            Literal::Integer(1),
            Literal::String("a".into()),
        ]));
        round_trip(Literal::Map(LiteralMap::from([(
            "k".to_string(),
            Literal::Boolean(false),
        )])));
    }

    #[test]
    fn floats_read_back_exactly() {
        // Found by the literal_json fuzz target: read without serde_json's
        // float_roundtrip, "61844.674407370956" (the shortest form of this
        // float, as written) came back one ulp off.
        for f in [61844.674407370956, 0.1, 1e-300, f64::MAX, -2.2250738585072014e-308] {
            let text = serde_json::to_string(&Literal::Float(f)).unwrap();
            let back: Literal = serde_json::from_str(&text).unwrap();
            assert_eq!(back, Literal::Float(f), "{text}");
        }
        let plain: LiteralMap = serde_json::from_str(r#"{"x": 61844.6744073709551615}"#).unwrap();
        let text = serde_json::to_string(&plain).unwrap();
        assert_eq!(serde_json::from_str::<LiteralMap>(&text).unwrap(), plain, "{text}");
    }

    #[test]
    fn plain_json_is_accepted() {
        let m: LiteralMap =
            serde_json::from_str(r#"{"a": 1, "b": 1.5, "c": "s", "d": [true, null], "e": {"x": 1, "y": 2}}"#).unwrap();
        assert_eq!(m["a"], Literal::Integer(1));
        assert_eq!(m["b"], Literal::Float(1.5));
        assert_eq!(m["c"], Literal::String("s".into()));
        assert_eq!(m["d"], Literal::Collection(vec![Literal::Boolean(true), Literal::None]));
        assert!(matches!(&m["e"], Literal::Map(inner) if inner.len() == 2));
    }

    #[test]
    fn a_bad_tagged_value_is_a_clear_error() {
        let err = serde_json::from_str::<Literal>(r#"{"integer": "x"}"#).unwrap_err();
        assert!(
            err.to_string().contains("literal `integer`: expected an integer"),
            "{err}"
        );
    }
}
