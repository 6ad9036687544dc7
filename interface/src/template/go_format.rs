//! Go-compatible value formatting: the text a [`Literal`] becomes when a
//! template substitutes `{{ .Inputs.<name> }}` (see [`serialize_literal`]).
//!
//! Task command lines written for the original Go implementation expect
//! its output byte for byte, so this module reproduces what Go prints:
//! floats as `%v` (shortest round-trip digits, exponent form below 1e-4 and
//! from 1e6 on, `1e+06`), durations in protobuf text form, and msgpack
//! binaries decoded and printed like Go's `%v` of an `interface{}`
//! (`map[a:1 b:true]`, keys sorted). The rules and their vectors are in
//! `docs/semantics.md#literal-formatting`.

use crate::literals::{Literal, LiteralDuration};

/// The text a literal becomes in `{{ .Inputs.<name> }}`.
///
/// Collections print as `[a,b]` (recursively), integers and booleans plainly,
/// floats like Go's `%v` (`1.1`, `15`, `1.234567e+06`), strings as is,
/// datetimes as RFC 3339 UTC with nanoseconds (trailing zeros removed),
/// durations as `seconds:10 nanos:5`, blobs and schemas as their URI, and
/// `msgpack` binaries as the decoded value printed like Go's `%v`
/// (`map[a:1 b:true]`). Other binary tags, `None` and maps are errors.
///
/// ```
/// use kozmo_interface::literals::Literal;
/// use kozmo_interface::template::serialize_literal;
///
/// let l = Literal::Collection(vec![Literal::Integer(1), Literal::Float(1234567.0), "x".into()]);
/// assert_eq!(serialize_literal(&l).unwrap(), "[1,1.234567e+06,x]");
/// ```
pub fn serialize_literal(lit: &Literal) -> Result<String, String> {
    match lit {
        Literal::Collection(items) => {
            let parts = items.iter().map(serialize_literal).collect::<Result<Vec<_>, _>>()?;
            Ok(format!("[{}]", parts.join(",")))
        }
        Literal::Integer(i) => Ok(i.to_string()),
        Literal::Boolean(b) => Ok(b.to_string()),
        Literal::Float(f) => Ok(format_float(*f)),
        Literal::String(s) => Ok(s.clone()),
        Literal::Datetime(t) => Ok(crate::format_rfc3339_nanos(*t)),
        Literal::Duration(d) => Ok(format_duration(d)),
        Literal::Blob { uri, .. } => Ok(uri.clone()),
        Literal::Schema { uri } => Ok(uri.clone()),
        Literal::Binary { tag, value } => {
            if tag != "msgpack" {
                return Err(format!("unsupported binary tag [{tag}]"));
            }
            let decoded = rmpv::decode::read_value(&mut value.as_slice()).map_err(|e| {
                format!(
                    "failed to unmarshal messagepack bytes with literal:[binary tag:{tag:?} {} bytes], err:[{e}]",
                    value.len()
                )
            })?;
            go_format_msgpack(&decoded).map_err(|e| {
                format!("failed to unmarshal messagepack bytes with literal:[binary tag:{tag:?}], err:[{e}]")
            })
        }
        Literal::None => Err("received an unexpected scalar type [None]".into()),
        Literal::Map(_) => Err("received an unexpected primitive type [Map]".into()),
    }
}

/// The protobuf text form of a Duration: `seconds:10 nanos:5`, zero fields
/// omitted.
fn format_duration(d: &LiteralDuration) -> String {
    let mut parts = Vec::new();
    if d.seconds != 0 {
        parts.push(format!("seconds:{}", d.seconds));
    }
    if d.nanos != 0 {
        parts.push(format!("nanos:{}", d.nanos));
    }
    parts.join(" ")
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`).
fn format_float(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    layout_shortest_g(&format!("{f:e}"))
}

/// Go's `%v` of a float32.
fn format_float32(f: f32) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    layout_shortest_g(&format!("{f:e}"))
}

/// Lays out Rust's shortest `{:e}` text (`-1.234e6`) the way Go's `%g` with
/// shortest precision does: exponent form when the decimal exponent is < -4
/// or >= 6, with a signed exponent of at least two digits.
fn layout_shortest_g(sci: &str) -> String {
    let (neg, rest) = match sci.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, sci),
    };
    let (mantissa, exp) = rest.split_once('e').expect("`{:e}` output has an exponent");
    let exp: i32 = exp.parse().expect("`{:e}` exponent is an integer");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let n = digits.len() as i32;
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if !(-4..6).contains(&exp) {
        out.push_str(&digits[..1]);
        if n > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.unsigned_abs()));
    } else {
        let dp = exp + 1;
        if dp <= 0 {
            out.push_str("0.");
            out.push_str(&"0".repeat((-dp) as usize));
            out.push_str(&digits);
        } else if dp >= n {
            out.push_str(&digits);
            out.push_str(&"0".repeat((dp - n) as usize));
        } else {
            out.push_str(&digits[..dp as usize]);
            out.push('.');
            out.push_str(&digits[dp as usize..]);
        }
    }
    out
}

/// Go's `%v` of a value decoded from msgpack into `interface{}`.
fn go_format_msgpack(v: &rmpv::Value) -> Result<String, String> {
    use rmpv::Value;
    Ok(match v {
        Value::Nil => "<nil>".into(),
        Value::Boolean(b) => b.to_string(),
        Value::Integer(i) => match (i.as_i64(), i.as_u64()) {
            (Some(x), _) => x.to_string(),
            (None, Some(x)) => x.to_string(),
            (None, None) => return Err("integer out of range".into()),
        },
        Value::F32(f) => format_float32(*f),
        Value::F64(f) => format_float(*f),
        Value::String(s) => match s.as_str() {
            Some(s) => s.to_string(),
            None => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        },
        Value::Binary(b) => go_format_bytes(b),
        Value::Array(items) => {
            let parts = items.iter().map(go_format_msgpack).collect::<Result<Vec<_>, _>>()?;
            format!("[{}]", parts.join(" "))
        }
        Value::Map(entries) => {
            let mut sorted: Vec<&(Value, Value)> = entries.iter().collect();
            sorted.sort_by(|a, b| compare_keys(&a.0, &b.0));
            let parts = sorted
                .iter()
                .map(|(k, v)| Ok(format!("{}:{}", go_format_msgpack(k)?, go_format_msgpack(v)?)))
                .collect::<Result<Vec<_>, String>>()?;
            format!("map[{}]", parts.join(" "))
        }
        Value::Ext(tag, _) => return Err(format!("msgpack: unknown ext id={tag}")),
    })
}

fn go_format_bytes(b: &[u8]) -> String {
    let parts: Vec<String> = b.iter().map(u8::to_string).collect();
    format!("[{}]", parts.join(" "))
}

/// Orders map keys like Go's `fmt` does for the common cases: by kind
/// first, then by value (numbers numerically, strings bytewise).
fn compare_keys(a: &rmpv::Value, b: &rmpv::Value) -> std::cmp::Ordering {
    use rmpv::Value;
    fn rank(v: &Value) -> u8 {
        match v {
            Value::Nil => 0,
            Value::Boolean(_) => 1,
            Value::Integer(_) => 2,
            Value::F32(_) | Value::F64(_) => 3,
            Value::String(_) => 4,
            Value::Binary(_) => 5,
            Value::Array(_) => 6,
            Value::Map(_) => 7,
            Value::Ext(..) => 8,
        }
    }
    let float = |v: &Value| match v {
        Value::F32(f) => f64::from(*f),
        Value::F64(f) => *f,
        _ => 0.0,
    };
    match (a, b) {
        (Value::Boolean(x), Value::Boolean(y)) => x.cmp(y),
        (Value::Integer(x), Value::Integer(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(x), Some(y)) => x.cmp(&y),
            _ => x.as_u64().cmp(&y.as_u64()),
        },
        (Value::F32(_) | Value::F64(_), Value::F32(_) | Value::F64(_)) => float(a).total_cmp(&float(b)),
        (Value::String(x), Value::String(y)) => x.as_bytes().cmp(y.as_bytes()),
        (Value::Binary(x), Value::Binary(y)) => x.cmp(y),
        _ => rank(a).cmp(&rank(b)),
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::literals::LiteralMap;

    // --- serialisation ----------------------------------------------------

    #[test]
    fn serialisation_vectors() {
        let blob = Literal::Blob {
            uri: "asdf fdsa".into(),
            format: String::new(),
        };
        assert_eq!(serialize_literal(&blob).unwrap(), "asdf fdsa");
        let schema = Literal::Schema {
            uri: "s3://some-bucket/fdsa/x.parquet".into(),
        };
        assert_eq!(serialize_literal(&schema).unwrap(), "s3://some-bucket/fdsa/x.parquet");

        let v = rmpv::Value::Map(vec![
            (rmpv::Value::from("d"), rmpv::Value::from("string")),
            (rmpv::Value::from("a"), rmpv::Value::from(1)),
            (rmpv::Value::from("c"), rmpv::Value::from(1.1)),
            (rmpv::Value::from("b"), rmpv::Value::from(true)),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &v).unwrap();
        let bin = Literal::Binary {
            tag: "msgpack".into(),
            value: bytes,
        };
        assert_eq!(serialize_literal(&bin).unwrap(), "map[a:1 b:true c:1.1 d:string]");

        let bad = Literal::Binary {
            tag: "unsupported-tag".into(),
            value: vec![1],
        };
        let err = serialize_literal(&bad).unwrap_err();
        assert!(err.contains("unsupported binary tag"), "{err}");
        assert_eq!(err, "unsupported binary tag [unsupported-tag]");

        let broken = Literal::Binary {
            tag: "msgpack".into(),
            value: vec![0x92, 0x01],
        };
        let err = serialize_literal(&broken).unwrap_err();
        assert!(err.starts_with("failed to unmarshal messagepack bytes"), "{err}");
    }

    #[test]
    fn msgpack_nested_values_print_like_go() {
        let v = rmpv::Value::Map(vec![
            (
                rmpv::Value::from("l"),
                rmpv::Value::Array(vec![rmpv::Value::from(-1), rmpv::Value::Nil, rmpv::Value::from("x y")]),
            ),
            (
                rmpv::Value::from("m"),
                rmpv::Value::Map(vec![(rmpv::Value::from("k"), rmpv::Value::F32(0.1))]),
            ),
            (rmpv::Value::from("f"), rmpv::Value::from(1e6)),
        ]);
        let mut bytes = Vec::new();
        rmpv::encode::write_value(&mut bytes, &v).unwrap();
        let bin = Literal::Binary {
            tag: "msgpack".into(),
            value: bytes,
        };
        assert_eq!(
            serialize_literal(&bin).unwrap(),
            "map[f:1e+06 l:[-1 <nil> x y] m:map[k:0.1]]"
        );
    }

    #[test]
    fn scalar_serialisation() {
        assert_eq!(serialize_literal(&Literal::Integer(15)).unwrap(), "15");
        assert_eq!(serialize_literal(&Literal::Integer(-3)).unwrap(), "-3");
        assert_eq!(serialize_literal(&Literal::Boolean(true)).unwrap(), "true");
        assert_eq!(serialize_literal(&Literal::Boolean(false)).unwrap(), "false");
        assert_eq!(serialize_literal(&"a $b".into()).unwrap(), "a $b");
        let whole = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
        assert_eq!(
            serialize_literal(&Literal::Datetime(whole)).unwrap(),
            "2024-01-02T03:04:05Z"
        );
        let milli = whole + chrono::Duration::milliseconds(100);
        assert_eq!(
            serialize_literal(&Literal::Datetime(milli)).unwrap(),
            "2024-01-02T03:04:05.1Z"
        );
        let d = |seconds, nanos| serialize_literal(&Literal::Duration(LiteralDuration { seconds, nanos })).unwrap();
        assert_eq!(d(10, 5), "seconds:10 nanos:5");
        assert_eq!(d(10, 0), "seconds:10");
        assert_eq!(d(0, 5), "nanos:5");
        assert_eq!(d(0, 0), "");
        assert_eq!(
            serialize_literal(&Literal::None).unwrap_err(),
            "received an unexpected scalar type [None]"
        );
        assert_eq!(
            serialize_literal(&Literal::Map(LiteralMap::new())).unwrap_err(),
            "received an unexpected primitive type [Map]"
        );
    }

    #[test]
    fn float_vectors() {
        for (f, s) in [
            (1.1, "1.1"),
            (15.0, "15"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e6, "1e+06"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e21, "1e+21"),
            (-2.5, "-2.5"),
            (100000.0, "100000"),
            (0.0, "0"),
            (-0.0, "-0"),
            (1.5e-300, "1.5e-300"),
            (0.000123, "0.000123"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(serialize_literal(&Literal::Float(f)).unwrap(), s, "{f:?}");
        }
        assert_eq!(format_float32(0.1), "0.1");
    }
}
