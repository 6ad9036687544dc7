//! Rendering of task arguments: replaces `{{ .Input }}`, `{{ .OutputPrefix }}`,
//! `{{ .Inputs.<name> }}` and the other placeholders of a command line with
//! the values of the current attempt (see [`render`]).
//!
//! Placeholder names are case-insensitive and may be written with a `.` or a
//! `$` (`{{.input}}`, `{{ $Input }}`); whitespace inside the braces is
//! optional. Replacement values are inserted literally (a `$x` in a path
//! stays `$x`).
//!
//! Rendering (this module) and the Go-compatible formatting of input values
//! ([`serialize_literal`], in `go_format`) are kept apart; the behaviour of
//! both is described in `docs/semantics.md#templates`.

mod go_format;

use std::cell::OnceCell;
use std::fmt;
use std::sync::LazyLock;

use regex::{NoExpand, Regex};

use crate::io::{InputReader, OutputWriter, TaskReader};
use crate::literals::LiteralMap;
use crate::metadata::TaskExecutionMetadata;
use crate::PluginError;

pub use go_format::serialize_literal;

/// What [`render`] substitutes from.
pub struct Parameters<'a> {
    /// The attempt's metadata (namespace and generated name).
    pub task_exec_metadata: &'a dyn TaskExecutionMetadata,
    /// The inputs (`{{ .Input }}`, `{{ .InputPrefix }}`, `{{ .Inputs.<name> }}`);
    /// required unless the template list is empty.
    pub inputs: Option<&'a dyn InputReader>,
    /// The output locations (`{{ .OutputPrefix }}`, `{{ .RawOutputDataPrefix }}`,
    /// checkpoint prefixes); required unless the template list is empty.
    pub output_path: Option<&'a dyn OutputWriter>,
    /// The task definition (`{{ .TaskTemplatePath }}`); only needed when a
    /// string uses that placeholder.
    pub task: Option<&'a dyn TaskReader>,
}

/// A failed [`render`]: the strings rendered before the failing one, and why
/// it failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderError {
    /// The strings rendered successfully before the failure, in order.
    pub rendered: Vec<String>,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for RenderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RenderError {}

impl From<RenderError> for PluginError {
    /// A USER error with code `TemplateError`.
    fn from(e: RenderError) -> Self {
        PluginError::user("TemplateError", e.message)
    }
}

/// Builds a case-insensitive placeholder regex: `{{`, optional whitespace,
/// `.` or `$`, the name, optional whitespace, `}}`. Whitespace is Go RE2's
/// `\s` (ASCII space, tab, newline, form feed, carriage return).
fn placeholder(name: &str) -> Regex {
    Regex::new(&format!(r"(?i)\{{\{{[\t\n\f\r ]*[.$]{name}[\t\n\f\r ]*\}}\}}")).expect("valid placeholder regex")
}

static INPUT_FILE: LazyLock<Regex> = LazyLock::new(|| placeholder("Input"));
static INPUT_PREFIX: LazyLock<Regex> = LazyLock::new(|| placeholder("InputPrefix"));
static OUTPUT_PREFIX: LazyLock<Regex> = LazyLock::new(|| placeholder("OutputPrefix"));
static RAW_OUTPUT_DATA_PREFIX: LazyLock<Regex> = LazyLock::new(|| placeholder("RawOutputDataPrefix"));
static PREV_CHECKPOINT_PREFIX: LazyLock<Regex> = LazyLock::new(|| placeholder("PrevCheckpointPrefix"));
static CHECKPOINT_OUTPUT_PREFIX: LazyLock<Regex> = LazyLock::new(|| placeholder("CheckpointOutputPrefix"));
static PER_RETRY_UNIQUE_KEY: LazyLock<Regex> = LazyLock::new(|| placeholder("PerRetryUniqueKey"));
static TASK_TEMPLATE_PATH: LazyLock<Regex> = LazyLock::new(|| placeholder("TaskTemplatePath"));
static NAMESPACE: LazyLock<Regex> = LazyLock::new(|| placeholder("Namespace"));
static INPUT_VAR: LazyLock<Regex> = LazyLock::new(|| placeholder(r"Inputs\.([^}\t\n\f\r ]+)"));

static STARTS_WITH_NON_ALPHA: LazyLock<Regex> = LazyLock::new(|| Regex::new("^[^a-zA-Z_]+").expect("valid regex"));
static NON_ALPHANUMERIC: LazyLock<Regex> = LazyLock::new(|| Regex::new("[^a-zA-Z0-9_]+").expect("valid regex"));

/// Renders each template string, replacing the placeholders of the current
/// attempt.
///
/// | placeholder (any case, `.` or `$`) | replaced by |
/// |---|---|
/// | `{{ .Input }}` | [`InputReader::input_path`] |
/// | `{{ .InputPrefix }}` | [`InputReader::input_prefix`] |
/// | `{{ .OutputPrefix }}` | [`OutputWriter::output_prefix`] |
/// | `{{ .RawOutputDataPrefix }}` | [`OutputWriter::raw_output_prefix`] |
/// | `{{ .PrevCheckpointPrefix }}` | [`OutputWriter::previous_checkpoint_prefix`], `""` if empty |
/// | `{{ .CheckpointOutputPrefix }}` | [`OutputWriter::checkpoint_prefix`] |
/// | `{{ .PerRetryUniqueKey }}` | the generated name, sanitised ([`per_retry_unique_key`]) |
/// | `{{ .TaskTemplatePath }}` | [`TaskReader::path`] |
/// | `{{ .Namespace }}` | [`TaskExecutionMetadata::namespace`] |
/// | `{{ .Inputs.<name> }}` | input `<name>` ([`serialize_literal`]); left as is if there are no inputs |
///
/// The substitutions run in that order, except that `Input` comes first and
/// `OutputPrefix` second; a value containing a placeholder of a later step
/// is expanded too. Inputs are read only for strings that use them.
///
/// An empty list renders to an empty list. Otherwise `inputs` and
/// `output_path` are required. On the first string that fails, the error
/// carries the strings rendered before it.
///
/// ```
/// use kozmo_interface::metadata::MetadataRecord;
/// use kozmo_interface::template::{render, Parameters};
/// use kozmo_interface::{ExecutionError, InputReader, LiteralMap, OutputWriter, Result};
///
/// struct In;
/// impl InputReader for In {
///     fn input_prefix(&self) -> String { "s3://b/in".into() }
///     fn input_path(&self) -> String { "s3://b/in/inputs.pb".into() }
///     fn get(&self) -> Result<LiteralMap> { Ok(LiteralMap::from([("n".to_string(), 3.into())])) }
/// }
///
/// struct Out;
/// impl OutputWriter for Out {
///     fn output_prefix(&self) -> String { "s3://b/out".into() }
///     fn raw_output_prefix(&self) -> String { "s3://b/raw".into() }
///     fn checkpoint_prefix(&self) -> String { String::new() }
///     fn previous_checkpoint_prefix(&self) -> String { String::new() }
///     fn put_outputs(&self, _: LiteralMap) -> Result<()> { Ok(()) }
///     fn put_error(&self, _: ExecutionError, _: bool) -> Result<()> { Ok(()) }
/// }
///
/// let mut md = MetadataRecord { namespace: "ns".into(), ..Default::default() };
/// md.task_execution_id.generated_name = "run-1".into();
/// let params = Parameters { task_exec_metadata: &md, inputs: Some(&In), output_path: Some(&Out), task: None };
/// let args = ["--in={{ .Input }}", "--n={{ .Inputs.n }}", "{{$namespace}}/{{ .perRetryUniqueKey }}"];
/// let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
/// assert_eq!(render(&args, &params).unwrap(), ["--in=s3://b/in/inputs.pb", "--n=3", "ns/run_1"]);
/// ```
pub fn render(templates: &[String], params: &Parameters<'_>) -> Result<Vec<String>, RenderError> {
    if templates.is_empty() {
        return Ok(Vec::new());
    }
    let key = per_retry_unique_key(params.task_exec_metadata.task_execution_id().generated_name());
    let (Some(inputs), Some(outputs)) = (params.inputs, params.output_path) else {
        return Err(RenderError {
            rendered: Vec::new(),
            message: "input reader and output path cannot be nil".into(),
        });
    };
    let values = Values {
        inputs,
        input_path: OnceCell::new(),
        input_prefix: OnceCell::new(),
        output_prefix: outputs.output_prefix(),
        raw_output_prefix: outputs.raw_output_prefix(),
        prev_checkpoint: match outputs.previous_checkpoint_prefix() {
            p if p.is_empty() => "\"\"".to_string(),
            p => p,
        },
        checkpoint: outputs.checkpoint_prefix(),
        per_retry_key: key,
        namespace: params.task_exec_metadata.namespace().to_string(),
    };
    let mut cache = InputCache {
        reader: inputs,
        map: None,
    };
    let mut rendered = Vec::with_capacity(templates.len());
    for t in templates {
        match render_one(t, &values, params.task, &mut cache) {
            Ok(s) => rendered.push(s),
            Err(message) => return Err(RenderError { rendered, message }),
        }
    }
    Ok(rendered)
}

/// The replacement values of one render call. The input paths are asked
/// for only when a template names them: a host may do work to give them
/// (Kozmo's daemon writes `inputs.json` and `task.json` the first time).
struct Values<'a> {
    inputs: &'a dyn InputReader,
    input_path: OnceCell<String>,
    input_prefix: OnceCell<String>,
    output_prefix: String,
    raw_output_prefix: String,
    prev_checkpoint: String,
    checkpoint: String,
    per_retry_key: String,
    namespace: String,
}

/// Reads the inputs at most once per render call, and only when needed.
struct InputCache<'a> {
    reader: &'a dyn InputReader,
    map: Option<LiteralMap>,
}

impl InputCache<'_> {
    fn get(&mut self) -> Result<&LiteralMap, String> {
        if self.map.is_none() {
            let m = self.reader.get().map_err(|e| format!("unable to read inputs: {e}"))?;
            self.map = Some(m);
        }
        Ok(self.map.as_ref().expect("just filled"))
    }
}

/// [`replace`] with a value computed only if `re` matches.
fn replace_lazy(re: &Regex, s: String, value: impl FnOnce() -> String) -> String {
    if re.is_match(&s) {
        replace(re, s, &value())
    } else {
        s
    }
}

fn replace(re: &Regex, s: String, value: &str) -> String {
    match re.replace_all(&s, NoExpand(value)) {
        std::borrow::Cow::Borrowed(_) => s,
        std::borrow::Cow::Owned(o) => o,
    }
}

fn render_one(
    template: &str,
    v: &Values<'_>,
    task: Option<&dyn TaskReader>,
    inputs: &mut InputCache<'_>,
) -> Result<String, String> {
    let mut s = template.to_string();
    s = replace_lazy(&INPUT_FILE, s, || {
        v.input_path.get_or_init(|| v.inputs.input_path()).clone()
    });
    s = replace(&OUTPUT_PREFIX, s, &v.output_prefix);
    s = replace_lazy(&INPUT_PREFIX, s, || {
        v.input_prefix.get_or_init(|| v.inputs.input_prefix()).clone()
    });
    s = replace(&RAW_OUTPUT_DATA_PREFIX, s, &v.raw_output_prefix);
    s = replace(&PREV_CHECKPOINT_PREFIX, s, &v.prev_checkpoint);
    s = replace(&CHECKPOINT_OUTPUT_PREFIX, s, &v.checkpoint);
    s = replace(&PER_RETRY_UNIQUE_KEY, s, &v.per_retry_key);
    if TASK_TEMPLATE_PATH.is_match(&s) {
        let task = task.ok_or("task template path requested but no task reader was provided")?;
        let path = task.path().map_err(|e| e.to_string())?;
        s = replace(&TASK_TEMPLATE_PATH, s, &path);
    }
    s = replace(&NAMESPACE, s, &v.namespace);

    if !INPUT_VAR.is_match(&s) {
        return Ok(s);
    }
    let map = inputs.get()?;
    if map.is_empty() {
        // No inputs to substitute: the placeholders stay untouched
        // (docs/semantics.md#templates).
        return Ok(s);
    }
    let mut errors = Vec::new();
    let out = INPUT_VAR.replace_all(&s, |caps: &regex::Captures<'_>| {
        let matched = &caps[0];
        let name = &caps[1];
        let result = match map.get(name) {
            None => Err(format!("requested input is not found [{name}]")),
            Some(lit) => {
                serialize_literal(lit).map_err(|e| format!("failed to bind a value to inputName [{name}]: {e}"))
            }
        };
        result.unwrap_or_else(|e| {
            errors.push(format!("input template [{matched}]: {e}"));
            String::new()
        })
    });
    if errors.is_empty() {
        Ok(out.into_owned())
    } else {
        Err(errors
            .iter()
            .enumerate()
            .map(|(i, e)| format!("{i}: {e}\r\n"))
            .collect())
    }
}

/// Step 1 of the sanitisation: a leading run of characters that are not
/// `[a-zA-Z_]` becomes a single `a`.
fn replace_leading_non_alpha(name: &str) -> String {
    STARTS_WITH_NON_ALPHA.replace(name, NoExpand("a")).into_owned()
}

/// The value of `{{ .PerRetryUniqueKey }}`: the generated name made a valid
/// identifier. A leading run of characters that are not letters or `_`
/// becomes one `a`, then every run of characters outside `[a-zA-Z0-9_]`
/// becomes one `_`.
///
/// ```
/// use kozmo_interface::template::per_retry_unique_key;
///
/// assert_eq!(per_retry_unique_key("per-retry-unique-key"), "per_retry_unique_key");
/// assert_eq!(per_retry_unique_key("1-abc"), "aabc");
/// ```
pub fn per_retry_unique_key(generated_name: &str) -> String {
    NON_ALPHANUMERIC
        .replace_all(&replace_leading_non_alpha(generated_name), NoExpand("_"))
        .into_owned()
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::literals::Literal;
    use crate::metadata::MetadataRecord;
    use crate::task::TaskTemplate;
    use crate::ExecutionError;

    struct Inputs {
        path: String,
        prefix: String,
        map: crate::Result<LiteralMap>,
        calls: Cell<usize>,
        path_calls: Cell<usize>,
    }

    impl InputReader for Inputs {
        fn input_prefix(&self) -> String {
            self.path_calls.set(self.path_calls.get() + 1);
            self.prefix.clone()
        }
        fn input_path(&self) -> String {
            self.path_calls.set(self.path_calls.get() + 1);
            self.path.clone()
        }
        fn get(&self) -> crate::Result<LiteralMap> {
            self.calls.set(self.calls.get() + 1);
            self.map.clone()
        }
    }

    struct Outputs {
        output_prefix: String,
        raw: String,
        checkpoint: String,
        prev: String,
    }

    impl OutputWriter for Outputs {
        fn output_prefix(&self) -> String {
            self.output_prefix.clone()
        }
        fn raw_output_prefix(&self) -> String {
            self.raw.clone()
        }
        fn checkpoint_prefix(&self) -> String {
            self.checkpoint.clone()
        }
        fn previous_checkpoint_prefix(&self) -> String {
            self.prev.clone()
        }
        fn put_outputs(&self, _outputs: LiteralMap) -> crate::Result<()> {
            Ok(())
        }
        fn put_error(&self, _error: ExecutionError, _recoverable: bool) -> crate::Result<()> {
            Ok(())
        }
    }

    struct Task(crate::Result<String>);

    impl TaskReader for Task {
        fn read(&self) -> crate::Result<TaskTemplate> {
            Ok(TaskTemplate::default())
        }
        fn path(&self) -> crate::Result<String> {
            self.0.clone()
        }
    }

    /// The common setup of the vectors in docs/semantics.md#template-vectors.
    struct Setup {
        md: MetadataRecord,
        inputs: Inputs,
        outputs: Outputs,
        task: Option<Task>,
    }

    fn setup() -> Setup {
        let mut md = MetadataRecord {
            namespace: "test-namespace".into(),
            ..Default::default()
        };
        md.task_execution_id.generated_name = "per_retry_unique_key".into();
        Setup {
            md,
            inputs: Inputs {
                path: "input/blah".into(),
                prefix: String::new(),
                map: Ok(LiteralMap::new()),
                calls: Cell::new(0),
                path_calls: Cell::new(0),
            },
            outputs: Outputs {
                output_prefix: "output/blah".into(),
                raw: "s3://custom-bucket".into(),
                checkpoint: String::new(),
                prev: String::new(),
            },
            task: None,
        }
    }

    fn with_inputs(map: LiteralMap) -> Setup {
        let mut s = setup();
        s.inputs.map = Ok(map);
        s
    }

    impl Setup {
        fn render(&self, templates: &[&str]) -> Result<Vec<String>, RenderError> {
            let templates: Vec<String> = templates.iter().map(|s| s.to_string()).collect();
            let params = Parameters {
                task_exec_metadata: &self.md,
                inputs: Some(&self.inputs),
                output_path: Some(&self.outputs),
                task: self.task.as_ref().map(|t| t as &dyn TaskReader),
            };
            render(&templates, &params)
        }

        fn ok(&self, templates: &[&str], expected: &[&str]) {
            assert_eq!(self.render(templates).unwrap(), expected, "templates {templates:?}");
        }
    }

    fn strs(items: &[&str]) -> Literal {
        Literal::Collection(items.iter().map(|s| Literal::String(s.to_string())).collect())
    }

    // --- docs/semantics.md#template-vectors --------------------------------

    #[test]
    fn row_01_empty_list_with_empty_params() {
        let md = MetadataRecord::default();
        let params = Parameters {
            task_exec_metadata: &md,
            inputs: None,
            output_path: None,
            task: None,
        };
        assert_eq!(render(&[], &params).unwrap(), Vec::<String>::new());
    }

    #[test]
    fn missing_inputs_or_outputs_is_an_error() {
        let s = setup();
        let templates = vec!["hello".to_string()];
        for (inputs, outputs) in [
            (None, Some(&s.outputs as &dyn OutputWriter)),
            (Some(&s.inputs as &dyn InputReader), None),
        ] {
            let params = Parameters {
                task_exec_metadata: &s.md,
                inputs,
                output_path: outputs,
                task: None,
            };
            let err = render(&templates, &params).unwrap_err();
            assert_eq!(err.message, "input reader and output path cannot be nil");
            assert!(err.rendered.is_empty());
        }
    }

    #[test]
    fn input_paths_are_asked_for_only_when_a_template_names_them_and_once() {
        let s = setup();
        s.ok(
            &["sh", "-c", "echo {{ .OutputPrefix }}"],
            &["sh", "-c", "echo output/blah"],
        );
        assert_eq!(s.inputs.path_calls.get(), 0, "no input placeholder: no path asked for");
        s.ok(
            &["{{ .Input }}", "{{ .Input }}", "{{ .InputPrefix }}/x"],
            &["input/blah", "input/blah", "/x"],
        );
        assert_eq!(s.inputs.path_calls.get(), 2, "each path once per render");
    }

    #[test]
    fn row_02_plain_strings() {
        setup().ok(&["hello", "world"], &["hello", "world"]);
    }

    #[test]
    fn row_03_input() {
        setup().ok(&["hello", "world", "{{ .Input }}"], &["hello", "world", "input/blah"]);
    }

    #[test]
    fn row_04_other_input_path() {
        let mut s = setup();
        s.inputs.path = "input/prefix".into();
        s.ok(&["hello", "world", "{{ .Input }}"], &["hello", "world", "input/prefix"]);
    }

    #[test]
    fn row_05_output_prefix() {
        setup().ok(
            &["hello", "world", "{{ .OutputPrefix }}"],
            &["hello", "world", "output/blah"],
        );
    }

    #[test]
    fn row_06_input_and_output_prefix() {
        setup().ok(
            &["hello", "world", "{{ .Input }}", "{{ .OutputPrefix }}"],
            &["hello", "world", "input/blah", "output/blah"],
        );
    }

    #[test]
    fn row_07_non_matching_and_raw_output_prefix() {
        setup().ok(
            &[
                "hello",
                "world",
                "${{input}}",
                "{{ .OutputPrefix }}",
                "--switch {{ .rawOutputDataPrefix }}",
            ],
            &[
                "hello",
                "world",
                "${{input}}",
                "output/blah",
                "--switch s3://custom-bucket",
            ],
        );
    }

    #[test]
    fn row_08_collection_input() {
        with_inputs(LiteralMap::from([("arr".to_string(), strs(&["a", "b"]))])).ok(
            &[
                "hello",
                "world",
                "--someArg {{ .Inputs.arr }}",
                "{{ .OutputPrefix }}",
                "{{ $RawOutputDataPrefix }}",
            ],
            &["hello", "world", "--someArg [a,b]", "output/blah", "s3://custom-bucket"],
        );
    }

    #[test]
    fn row_09_datetime_input() {
        let t = Utc.with_ymd_and_hms(1900, 1, 1, 1, 1, 1).unwrap() + chrono::Duration::nanoseconds(1);
        with_inputs(LiteralMap::from([("date".to_string(), Literal::Datetime(t))])).ok(
            &[
                "hello",
                "world",
                "--someArg {{ .Inputs.date }}",
                "{{ .OutputPrefix }}",
                "{{ .rawOutputDataPrefix }}",
            ],
            &[
                "hello",
                "world",
                "--someArg 1900-01-01T01:01:01.000000001Z",
                "output/blah",
                "s3://custom-bucket",
            ],
        );
    }

    #[test]
    fn row_10_nested_collection_and_unknown_placeholder() {
        let arr = Literal::Collection(vec![
            strs(&["a", "b"]),
            Literal::Collection(vec![Literal::Integer(1), Literal::Integer(2)]),
        ]);
        with_inputs(LiteralMap::from([("arr".to_string(), arr)])).ok(
            &[
                "hello",
                "world",
                "--someArg {{ .Inputs.arr }}",
                "{{ .OutputPrefix }}",
                "{{ .wrongOutputDataPrefix }}",
            ],
            &[
                "hello",
                "world",
                "--someArg [[a,b],[1,2]]",
                "output/blah",
                "{{ .wrongOutputDataPrefix }}",
            ],
        );
    }

    #[test]
    fn row_11_empty_inputs_leave_placeholders() {
        setup().ok(
            &[
                "hello",
                "world",
                "--someArg {{ .Inputs.arr }}",
                "{{ .OutputPrefix }}",
                "--raw-data-output-prefix {{ .rawOutputDataPrefix }}",
            ],
            &[
                "hello",
                "world",
                "--someArg {{ .Inputs.arr }}",
                "output/blah",
                "--raw-data-output-prefix s3://custom-bucket",
            ],
        );
    }

    #[test]
    fn row_13_missing_input_is_an_error_collection() {
        let s = with_inputs(LiteralMap::from([("arr".to_string(), strs(&["a", "b"]))]));
        let err = s
            .render(&["hello", "world", "--someArg {{ .Inputs.blah }}"])
            .unwrap_err();
        assert_eq!(
            err.message,
            "0: input template [{{ .Inputs.blah }}]: requested input is not found [blah]\r\n"
        );
        assert_eq!(err.rendered, ["hello", "world"]);
        assert_eq!(err.to_string(), err.message);
        let pe = PluginError::from(err);
        assert_eq!(pe.code, "TemplateError");
        assert_eq!(pe.kind, crate::ErrorKind::User);
    }

    #[test]
    fn row_15_per_retry_unique_key() {
        setup().ok(
            &[
                "hello",
                "{{ .perRetryUniqueKey }}",
                "world",
                "{{ .rawOutputDataPrefix }}",
            ],
            &["hello", "per_retry_unique_key", "world", "s3://custom-bucket"],
        );
    }

    #[test]
    fn row_16_task_template_path() {
        let mut s = setup();
        s.task = Some(Task(Ok("s3://task-path".into())));
        s.ok(
            &["hello", "{{ .perRetryUniqueKey }}", "world", "{{ .taskTemplatePath }}"],
            &["hello", "per_retry_unique_key", "world", "s3://task-path"],
        );
    }

    #[test]
    fn row_17_task_template_path_error() {
        let mut s = setup();
        s.task = Some(Task(Err(PluginError::system("PathFailed", "no path"))));
        let err = s
            .render(&["hello", "{{ .perRetryUniqueKey }}", "world", "{{ .taskTemplatePath }}"])
            .unwrap_err();
        assert_eq!(err.message, "PathFailed: no path");
        assert_eq!(err.rendered, ["hello", "per_retry_unique_key", "world"]);
    }

    #[test]
    fn task_path_is_only_asked_for_when_used() {
        let mut s = setup();
        s.task = Some(Task(Err(PluginError::system("PathFailed", "no path"))));
        s.ok(&["{{ .Input }}"], &["input/blah"]);
        s.task = None;
        s.ok(&["{{ .Input }}"], &["input/blah"]);
        assert!(s.render(&["{{ .TaskTemplatePath }}"]).is_err());
    }

    fn checkpoints(prev: &str, cur: &str) -> Setup {
        let mut s = setup();
        s.outputs.prev = prev.into();
        s.outputs.checkpoint = cur.into();
        s
    }

    #[test]
    fn row_18_checkpoints_do_not_disturb_other_placeholders() {
        checkpoints("s3://prev-checkpoint/prefix", "s3://new-checkpoint/prefix")
            .ok(&["{{ .Input }}", "{{ .OutputPrefix }}"], &["input/blah", "output/blah"]);
    }

    #[test]
    fn row_19_empty_previous_checkpoint_is_two_quotes() {
        checkpoints("", "s3://new-checkpoint/prefix").ok(
            &[
                "--prev={{ .PrevCheckpointPrefix }}",
                "--checkpoint={{ .CheckpointOutputPrefix }}",
            ],
            &["--prev=\"\"", "--checkpoint=s3://new-checkpoint/prefix"],
        );
    }

    #[test]
    fn row_20_checkpoints() {
        checkpoints("s3://prev-checkpoint/prefix", "s3://new-checkpoint/prefix").ok(
            &[
                "--prev={{ .PrevCheckpointPrefix }}",
                "--checkpoint={{ .CheckpointOutputPrefix }}",
            ],
            &[
                "--prev=s3://prev-checkpoint/prefix",
                "--checkpoint=s3://new-checkpoint/prefix",
            ],
        );
    }

    #[test]
    fn row_21_checkpoints_lower_case() {
        checkpoints("s3://prev-checkpoint/prefix", "s3://new-checkpoint/prefix").ok(
            &[
                "--prev={{ .prevcheckpointprefix }}",
                "--checkpoint={{ .checkpointoutputprefix }}",
            ],
            &[
                "--prev=s3://prev-checkpoint/prefix",
                "--checkpoint=s3://new-checkpoint/prefix",
            ],
        );
    }

    #[test]
    fn row_23_generated_name_is_sanitised() {
        let mut s = setup();
        s.md.task_execution_id.generated_name = "per-retry-unique-key".into();
        s.ok(&["{{ .perRetryUniqueKey }}"], &["per_retry_unique_key"]);
    }

    // --- regex-only vectors -----------------------------------------------

    #[test]
    fn input_regex_vectors() {
        for m in [
            "{{$input}}",
            "{{ $Input }}",
            "{{.input}}",
            "{{ .Input }}",
            "{{  .Input }}",
            "{{       .Input }}",
            "{{ .Input}}",
            "{{.Input }}",
            "--something={{.Input}}",
        ] {
            assert!(INPUT_FILE.is_match(m), "{m}");
        }
        for m in ["{{input}}", "{$input}}", "{{ .InputFile }}", "{{ .InputPrefix }}"] {
            assert!(!INPUT_FILE.is_match(m), "{m}");
        }
    }

    #[test]
    fn output_prefix_regex_vectors() {
        for m in [
            "{{.OutputPrefix}}",
            "{{ .OutputPrefix }}",
            "{{  .OutputPrefix }}",
            "{{      .OutputPrefix }}",
            "{{ .OutputPrefix}}",
            "{{.OutputPrefix }}",
            "--something={{.OutputPrefix}}",
        ] {
            assert!(OUTPUT_PREFIX.is_match(m), "{m}");
        }
        for m in ["{{output}}", "{.OutputPrefix}}"] {
            assert!(!OUTPUT_PREFIX.is_match(m), "{m}");
        }
    }

    #[test]
    fn other_placeholder_spellings() {
        for m in ["{{ .rawOutputDataPrefix }}", "{{ $RawOutputDataPrefix }}"] {
            assert!(RAW_OUTPUT_DATA_PREFIX.is_match(m), "{m}");
        }
        assert!(NAMESPACE.is_match("{{.namespace}}"));
        assert!(!RAW_OUTPUT_DATA_PREFIX.is_match("{{ .wrongOutputDataPrefix }}"));
        // Only ASCII whitespace counts, as in Go's RE2 `\s`.
        assert!(INPUT_FILE.is_match("{{\t.Input\r\n}}"));
        assert!(!INPUT_FILE.is_match("{{\u{a0}.Input}}"));
        let caps = INPUT_VAR.captures("{{ .Inputs.a.b-c }}").unwrap();
        assert_eq!(&caps[1], "a.b-c");
    }

    // --- per-retry key ----------------------------------------------------

    #[test]
    fn per_retry_unique_key_vectors() {
        assert_eq!(per_retry_unique_key("per-retry-unique-key"), "per_retry_unique_key");
        assert_eq!(
            replace_leading_non_alpha("doesn't start with a number"),
            "doesn't start with a number"
        );
        assert_eq!(
            replace_leading_non_alpha("1 does start with a number"),
            "adoes start with a number"
        );
        assert_eq!(replace_leading_non_alpha("  1 3 nd spaces "), "and spaces ");
        assert_eq!(per_retry_unique_key("_x--y..z"), "_x_y_z");
    }

    // --- Kozmo-specific behaviour ----------------------------------------

    #[test]
    fn dollar_in_a_value_stays_literal() {
        let mut s = setup();
        s.outputs.output_prefix = "s3://b/$x/${y}/$$".into();
        s.ok(&["--out={{ .OutputPrefix }}"], &["--out=s3://b/$x/${y}/$$"]);
    }

    #[test]
    fn inputs_are_not_read_without_an_inputs_placeholder() {
        let mut s = setup();
        s.inputs.map = Err(PluginError::system("ReadFailed", "cannot read"));
        s.ok(&["{{ .OutputPrefix }}", "hello"], &["output/blah", "hello"]);
        assert_eq!(s.inputs.calls.get(), 0);
        let err = s.render(&["{{ .OutputPrefix }}", "{{ .Inputs.x }}"]).unwrap_err();
        assert_eq!(err.message, "unable to read inputs: ReadFailed: cannot read");
        assert_eq!(err.rendered, ["output/blah"]);
    }

    #[test]
    fn inputs_are_read_once_per_render() {
        let s = with_inputs(LiteralMap::from([("x".to_string(), Literal::Integer(1))]));
        s.ok(&["{{ .Inputs.x }}", "{{ .Inputs.x }}"], &["1", "1"]);
        assert_eq!(s.inputs.calls.get(), 1);
    }

    #[test]
    fn later_placeholders_inside_values_are_expanded() {
        let mut s = setup();
        s.outputs.raw = "s3://raw-data/prefix/{{ .Namespace }}".into();
        s.ok(
            &["{{ .RawOutputDataPrefix }}"],
            &["s3://raw-data/prefix/test-namespace"],
        );
        // An earlier step's placeholder inside a value is left alone.
        s.outputs.raw = "s3://raw/{{ .Input }}".into();
        s.ok(&["{{ .RawOutputDataPrefix }}"], &["s3://raw/{{ .Input }}"]);
    }

    #[test]
    fn input_values_are_not_rescanned() {
        let s = with_inputs(LiteralMap::from([("x".to_string(), "{{ .Namespace }}".into())]));
        s.ok(&["{{ .Inputs.x }}"], &["{{ .Namespace }}"]);
    }

    #[test]
    fn several_inputs_in_one_string() {
        let s = with_inputs(LiteralMap::from([
            ("a".to_string(), Literal::Integer(1)),
            ("b.c".to_string(), Literal::Float(2.5)),
            ("d".to_string(), "x".into()),
        ]));
        s.ok(
            &["--a={{ .Inputs.a }} --b={{$inputs.b.c}} --d={{.Inputs.d}} --a2={{ .Inputs.a }}"],
            &["--a=1 --b=2.5 --d=x --a2=1"],
        );
    }

    #[test]
    fn input_names_are_case_sensitive_and_errors_are_collected() {
        let s = with_inputs(LiteralMap::from([
            ("a".to_string(), Literal::Integer(1)),
            ("n".to_string(), Literal::None),
        ]));
        let err = s
            .render(&["{{ .Inputs.A }} {{ .Inputs.a }} {{ .Inputs.n }}"])
            .unwrap_err();
        assert_eq!(
            err.message,
            "0: input template [{{ .Inputs.A }}]: requested input is not found [A]\r\n\
             1: input template [{{ .Inputs.n }}]: failed to bind a value to inputName [n]: \
             received an unexpected scalar type [None]\r\n"
        );
    }
}
