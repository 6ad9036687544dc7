//! Reading a submitted task body strictly: the two accepted forms, unknown
//! fields refused with a hint, objects where objects belong, and every id or
//! number that reaches a path, a name or a timer checked, each error naming
//! the field's JSON path as the client wrote it.

use serde_json::{Map, Value};

use crate::model::{check_name_component, ExecutionSpec};

/// A refused task body: what is wrong, at which JSON path (as the client
/// wrote it: `inputs.n`, `metadata.retries`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecError {
    /// What is wrong, and what would be right.
    pub detail: String,
    /// JSON path of the bad field.
    pub path: String,
}

impl std::fmt::Display for SpecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.detail)
    }
}

impl std::error::Error for SpecError {}

/// Most retries a task may ask for.
pub const MAX_RETRIES: u32 = 1000;

/// Longest timeout a task may ask for: ten years (a longer one is a mistake,
/// and would overflow the engine's millisecond clock arithmetic long before
/// it mattered).
pub const MAX_TIMEOUT_SECS: u64 = 10 * 365 * 24 * 3600;

/// Longest task type.
pub const MAX_TASK_TYPE_LEN: usize = 100;

/// Reads a task body: either the nested form `{"template": {...}, "inputs":
/// {...}, "metadata": {...}}`, or the task-file form: the template's fields
/// at the top level (its `metadata` is the *task* metadata: retries,
/// timeout, ...), plus `inputs`, plus `execution` for the execution metadata
/// (project, domain, labels, ...).
///
/// Refused, each with the path of the field: a field no task has (with the
/// nearest known name as a hint), a list where an object belongs, a task
/// type or id component that could not name a file, retries above
/// [`MAX_RETRIES`], a timeout above [`MAX_TIMEOUT_SECS`].
pub fn parse_spec(body: Value) -> Result<ExecutionSpec, SpecError> {
    let flat = matches!(&body, Value::Object(obj) if !obj.contains_key("template"));
    let body = if flat { nest(body) } else { body };
    let shown = |nested: &str| client_path(flat, nested);

    check_objects(&body, "", &shown)?;

    let mut unknown: Vec<String> = Vec::new();
    let mut track = serde_path_to_error::Track::new();
    let parsed: Result<ExecutionSpec, _> =
        serde_ignored::deserialize(serde_path_to_error::Deserializer::new(&body, &mut track), |path| {
            unknown.push(path.to_string())
        });
    let spec = parsed.map_err(|e| {
        let path = shown(&track.path().to_string());
        bad(format!("invalid task at `{path}`: {e}"), path)
    })?;

    if let Some(first) = unknown.first() {
        let path = shown(first);
        let hint = nearest_known_field(&spec, first)
            .map(|k| format!("; did you mean `{}`?", shown(&k)))
            .unwrap_or_default();
        return Err(bad(
            format!("unknown field `{path}`: no task has it, so it would be ignored{hint}"),
            path,
        ));
    }
    check_values(&spec, &shown)?;
    Ok(spec)
}

fn bad(detail: String, path: String) -> SpecError {
    SpecError { detail, path }
}

/// The task-file form turned into the nested form.
fn nest(body: Value) -> Value {
    let Value::Object(mut template) = body else {
        return body;
    };
    let mut spec = Map::new();
    for (from, to) in [("inputs", "inputs"), ("execution", "metadata")] {
        if let Some(v) = template.remove(from) {
            spec.insert(to.to_string(), v);
        }
    }
    spec.insert("template".into(), Value::Object(template));
    Value::Object(spec)
}

/// A nested path (`template.metadata.retries`) as the client wrote it.
fn client_path(flat: bool, nested: &str) -> String {
    if !flat {
        return nested.to_string();
    }
    match nested.split_once('.') {
        Some(("template", rest)) => rest.to_string(),
        Some(("metadata", rest)) => format!("execution.{rest}"),
        _ => match nested {
            "template" => String::new(),
            "metadata" => "execution".into(),
            other => other.to_string(),
        },
    }
}

/// Free-form places (any JSON is the plugin's or the literal decoder's
/// business) where the structural checks do not look.
fn free_form(path: &str) -> bool {
    path == "inputs" || path == "template.custom"
}

/// Serde accepts a list for a struct (fields by position): `"metadata": []`
/// would silently mean "all defaults". Every struct of a task is an object,
/// and null is refused where the struct is required; an optional struct
/// (`template.container`) takes null as "none", the form the store's
/// canonical JSON writes it in.
fn check_objects(v: &Value, path: &str, shown: &dyn Fn(&str) -> String) -> Result<(), SpecError> {
    let Value::Object(map) = v else { return Ok(()) };
    for (key, child) in map {
        let p = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if free_form(&p) {
            continue;
        }
        match child {
            Value::Array(_) if struct_field(&p) => {
                let s = shown(&p);
                return Err(bad(format!("`{s}` must be a JSON object, not a list"), s));
            }
            Value::Null if struct_field(&p) && !optional_struct_field(&p) => {
                let s = shown(&p);
                return Err(bad(format!("`{s}` must be a JSON object (or left out), not null"), s));
            }
            Value::Object(_) => check_objects(child, &p, shown)?,
            _ => {}
        }
    }
    Ok(())
}

/// Whether a nested path names a struct-typed field (as opposed to a list or
/// a map of strings).
fn struct_field(path: &str) -> bool {
    matches!(
        path,
        "template"
            | "metadata"
            | "template.id"
            | "template.metadata"
            | "template.interface"
            | "template.container"
            | "metadata.security_context"
            | "metadata.overrides"
            | "metadata.overrides.resources"
            | "metadata.overrides.extended_resources"
    )
}

/// Whether a nested path names a struct-typed field that may be absent
/// (`Option` in the model): null there means "none", and canonical JSON
/// writes it so.
fn optional_struct_field(path: &str) -> bool {
    path == "template.container"
}

/// The nested path of the known field nearest to an unknown one, from the
/// spec serialised back: its object at the unknown field's parent lists
/// every field there.
fn nearest_known_field(spec: &ExecutionSpec, unknown_path: &str) -> Option<String> {
    let (parent, name) = match unknown_path.rsplit_once('.') {
        Some((p, n)) => (Some(p), n),
        None => (None, unknown_path),
    };
    let whole = serde_json::to_value(spec).ok()?;
    let mut at = &whole;
    if let Some(parent) = parent {
        for seg in parent.split('.') {
            at = match at {
                Value::Object(m) => m.get(seg)?,
                Value::Array(a) => a.get(seg.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
    }
    let Value::Object(fields) = at else { return None };
    fields
        .keys()
        .map(|k| (strsim::jaro_winkler(k, name), k))
        .filter(|(score, _)| *score >= 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| match parent {
            Some(p) => format!("{p}.{k}"),
            None => k.clone(),
        })
}

/// Values a type alone does not bound.
fn check_values(spec: &ExecutionSpec, shown: &dyn Fn(&str) -> String) -> Result<(), SpecError> {
    let t = &spec.template;
    let task_type = &t.task_type;
    if task_type.is_empty() {
        let p = shown("template.type");
        return Err(bad(
            format!("`{p}` is missing: every task names its type (e.g. \"echo\"), which picks its plugin"),
            p,
        ));
    }
    if task_type.len() > MAX_TASK_TYPE_LEN
        || !task_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        let p = shown("template.type");
        return Err(bad(
            format!(
                "`{p}` must be 1 to {MAX_TASK_TYPE_LEN} characters of [A-Za-z0-9._-] (got {} bytes)",
                task_type.len()
            ),
            p,
        ));
    }
    if t.metadata.retries > MAX_RETRIES {
        let p = shown("template.metadata.retries");
        return Err(bad(
            format!(
                "`{p}` is {}; at most {MAX_RETRIES} retries are allowed",
                t.metadata.retries
            ),
            p,
        ));
    }
    if let Some(timeout) = t.metadata.timeout {
        if timeout.as_secs() > MAX_TIMEOUT_SECS {
            let p = shown("template.metadata.timeout");
            return Err(bad(
                format!(
                    "`{p}` is longer than the longest allowed timeout, {MAX_TIMEOUT_SECS} s (ten years); \
                     leave it out for no timeout"
                ),
                p,
            ));
        }
    }
    let m = &spec.metadata;
    let names: [(&str, Option<&str>); 7] = [
        ("metadata.node_id", m.node_id.as_deref()),
        ("metadata.project", Some(&m.project)),
        ("metadata.domain", Some(&m.domain)),
        ("template.id.project", Some(&t.id.project)),
        ("template.id.domain", Some(&t.id.domain)),
        ("template.id.name", Some(&t.id.name)),
        ("template.id.version", Some(&t.id.version)),
    ];
    for (path, value) in names {
        if let Some(v) = value.filter(|v| !v.is_empty()) {
            if let Err(why) = check_name_component(v) {
                let p = shown(path);
                return Err(bad(format!("`{p}` {why}"), p));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
