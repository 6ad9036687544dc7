//! The task model plugins read through [`crate::TaskReader`]:
//! [`TaskTemplate`] and its parts.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Identifies a task (or any versioned entity).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Identifier {
    /// Project.
    pub project: String,
    /// Domain (e.g. `development`).
    pub domain: String,
    /// Name.
    pub name: String,
    /// Version.
    pub version: String,
}

/// A declared input or output.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Variable {
    /// The literal kind expected (`integer`, `string`, ...), empty = any.
    #[serde(rename = "type")]
    pub kind: String,
    /// What it means.
    pub description: String,
}

/// The declared inputs and outputs of a task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TypedInterface {
    /// Inputs by name.
    pub inputs: BTreeMap<String, Variable>,
    /// Outputs by name; a successful task must produce each of them.
    pub outputs: BTreeMap<String, Variable>,
}

/// How the host runs a task.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskMetadata {
    /// How many times a retryable USER failure may be retried.
    pub retries: u32,
    /// Time an attempt may run before it fails with `TimeoutExpired`.
    #[serde(with = "opt_duration")]
    pub timeout: Option<Duration>,
    /// Whether the task may run on interruptible capacity.
    pub interruptible: bool,
    /// Whether results may be served from / stored into the catalog cache.
    pub discoverable: bool,
    /// Cache version; bump it to invalidate cached results.
    pub cache_version: String,
}

/// A command to run (for plugins that start processes).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Container {
    /// Program and leading arguments (templated).
    pub command: Vec<String>,
    /// Further arguments (templated).
    pub args: Vec<String>,
    /// Environment variables.
    pub env: BTreeMap<String, String>,
}

/// Everything the host knows about a task definition.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct TaskTemplate {
    /// The task's identifier.
    pub id: Identifier,
    /// The task type; routes the task to a plugin.
    #[serde(rename = "type")]
    pub task_type: String,
    /// Retries, timeout, caching.
    pub metadata: TaskMetadata,
    /// Declared inputs and outputs.
    pub interface: TypedInterface,
    /// Plugin-specific configuration (free JSON).
    pub custom: serde_json::Value,
    /// An optional command.
    pub container: Option<Container>,
}

/// A task file as in `examples/` and as `kozmo submit` sends it: the
/// template's fields at the top level plus `inputs`. Other top-level keys
/// (the daemon's `execution` metadata) are ignored here.
///
/// ```
/// use kozmo_interface::task::TaskFile;
///
/// let f: TaskFile = serde_json::from_str(r#"{"type": "echo", "inputs": {"n": 1}}"#).unwrap();
/// assert_eq!(f.template.task_type, "echo");
/// assert_eq!(f.inputs["n"], kozmo_interface::Literal::Integer(1));
/// ```
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct TaskFile {
    /// The task template.
    #[serde(flatten)]
    pub template: TaskTemplate,
    /// The inputs.
    #[serde(default)]
    pub inputs: crate::literals::LiteralMap,
}

impl TaskFile {
    /// Reads and parses a task file; the error names the file.
    pub fn read(path: &std::path::Path) -> Result<TaskFile, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }
}

/// Serde of `Option<Duration>` as a human string (`"90s"`, `"1.5s"`) or seconds.
mod opt_duration {
    use std::time::Duration;

    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format!("{}s", d.as_secs_f64())),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let v = Option::<serde_json::Value>::deserialize(d)?;
        let secs = match v {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::Number(n)) => n.as_f64(),
            Some(serde_json::Value::String(s)) => parse_seconds(&s),
            Some(_) => None,
        };
        match secs {
            Some(s) if s.is_finite() && s >= 0.0 => Duration::try_from_secs_f64(s)
                .map(Some)
                .map_err(|_| D::Error::custom(format!("timeout: {s} seconds is too long to represent"))),
            _ => Err(D::Error::custom(
                "timeout: expected seconds (e.g. 90) or a duration like \"90s\", \"5m\", \"2h\", \"250ms\"",
            )),
        }
    }

    fn parse_seconds(s: &str) -> Option<f64> {
        let s = s.trim();
        let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
            (n, 0.001)
        } else if let Some(n) = s.strip_suffix('s') {
            (n, 1.0)
        } else if let Some(n) = s.strip_suffix('m') {
            (n, 60.0)
        } else if let Some(n) = s.strip_suffix('h') {
            (n, 3600.0)
        } else {
            (s, 1.0)
        };
        num.trim().parse::<f64>().ok().map(|v| v * scale)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_template_parses_with_defaults() {
        let t: TaskTemplate = serde_json::from_str(r#"{"type": "echo"}"#).unwrap();
        assert_eq!(t.task_type, "echo");
        assert_eq!(t.metadata.retries, 0);
        assert!(t.container.is_none());
    }

    #[test]
    fn timeouts_parse_in_several_forms() {
        for (text, secs) in [
            ("90", 90.0),
            ("\"90s\"", 90.0),
            ("\"5m\"", 300.0),
            ("\"250ms\"", 0.25),
            ("\"2h\"", 7200.0),
        ] {
            let json = format!(r#"{{"timeout": {text}}}"#);
            let m: TaskMetadata = serde_json::from_str(&json).unwrap();
            assert_eq!(m.timeout, Some(Duration::from_secs_f64(secs)), "{text}");
            let back: TaskMetadata = serde_json::from_str(&serde_json::to_string(&m).unwrap()).unwrap();
            assert_eq!(back, m);
        }
        let err = serde_json::from_str::<TaskMetadata>(r#"{"timeout": "soon"}"#).unwrap_err();
        assert!(err.to_string().contains("timeout: expected seconds"), "{err}");
        for huge in ["1e20", "\"1e20s\"", "\"99999999999999999h\""] {
            let json = format!(r#"{{"timeout": {huge}}}"#);
            let err = serde_json::from_str::<TaskMetadata>(&json).unwrap_err();
            assert!(err.to_string().contains("too long"), "{huge}: {err}");
        }
        for bad in ["-1", r#""NaNs""#, r#""infs""#] {
            let json = format!(r#"{{"timeout": {bad}}}"#);
            let err = serde_json::from_str::<TaskMetadata>(&json).unwrap_err();
            assert!(err.to_string().contains("timeout: expected seconds"), "{bad}: {err}");
        }
    }
}
