//! Template rendering (`kozmo_interface::template::render`), which turns a
//! task's argument templates into a command line.
//!
//! Input: UTF-8 text split at NUL into the inputs (a JSON literal map;
//! empty when it does not parse), the namespace, the generated name, the
//! previous checkpoint prefix, then the templates.
//!
//! Asserts, beyond "no panic": an `Ok` has one string per template; a
//! template without `{{` comes back unchanged; the inputs are read at most
//! once, and not at all unless a template or a value mentions `inputs.`;
//! and every character of the output comes from the templates or the given
//! values (nothing is read from anywhere else).
#![no_main]

use std::cell::Cell;
use std::collections::BTreeSet;

use kozmo_interface::literals::LiteralMap;
use kozmo_interface::metadata::MetadataRecord;
use kozmo_interface::template::{per_retry_unique_key, render, serialize_literal, Parameters};
use kozmo_interface::{ExecutionError, InputReader, OutputWriter, Result};
use libfuzzer_sys::fuzz_target;

struct In {
    map: LiteralMap,
    reads: Cell<usize>,
}

impl InputReader for In {
    fn input_prefix(&self) -> String {
        "/data/in".into()
    }
    fn input_path(&self) -> String {
        "/data/in/inputs.json".into()
    }
    fn get(&self) -> Result<LiteralMap> {
        self.reads.set(self.reads.get() + 1);
        Ok(self.map.clone())
    }
}

struct Out {
    prev: String,
}

impl OutputWriter for Out {
    fn output_prefix(&self) -> String {
        "/data/out".into()
    }
    fn raw_output_prefix(&self) -> String {
        "/data/raw".into()
    }
    fn checkpoint_prefix(&self) -> String {
        "/data/ckpt".into()
    }
    fn previous_checkpoint_prefix(&self) -> String {
        self.prev.clone()
    }
    fn put_outputs(&self, _: LiteralMap) -> Result<()> {
        Ok(())
    }
    fn put_error(&self, _: ExecutionError, _: bool) -> Result<()> {
        Ok(())
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut fields = text.split('\0');
    let inputs = fields.next().unwrap_or_default();
    let namespace = fields.next().unwrap_or_default();
    let generated = fields.next().unwrap_or_default();
    let prev = fields.next().unwrap_or_default().to_string();
    let templates: Vec<String> = fields.map(str::to_string).collect();

    let map: LiteralMap = serde_json::from_str(inputs).unwrap_or_default();
    let mut md = MetadataRecord {
        namespace: namespace.into(),
        ..Default::default()
    };
    md.task_execution_id.generated_name = generated.into();
    let input = In {
        map,
        reads: Cell::new(0),
    };
    let out = Out { prev };
    let params = Parameters {
        task_exec_metadata: &md,
        inputs: Some(&input),
        output_path: Some(&out),
        task: None,
    };
    let result = render(&templates, &params);

    // Every value render may insert.
    let mut values = vec![
        input.input_prefix(),
        input.input_path(),
        out.output_prefix(),
        out.raw_output_prefix(),
        out.checkpoint_prefix(),
        out.previous_checkpoint_prefix(),
        "\"\"".to_string(),
        per_retry_unique_key(generated),
        namespace.to_string(),
    ];
    values.extend(input.map.values().filter_map(|l| serialize_literal(l).ok()));
    let mentions_inputs = |s: &str| s.to_ascii_lowercase().contains("inputs.");
    assert!(input.reads.get() <= 1, "inputs read {} times", input.reads.get());
    if !templates.iter().any(|t| mentions_inputs(t)) && !values.iter().any(|v| mentions_inputs(v)) {
        assert_eq!(input.reads.get(), 0, "inputs read though no string uses them");
    }
    let rendered = match &result {
        Ok(r) => {
            assert_eq!(r.len(), templates.len());
            r
        }
        Err(e) => {
            assert!(e.rendered.len() < templates.len());
            &e.rendered
        }
    };
    let allowed: BTreeSet<char> = templates.iter().chain(&values).flat_map(|s| s.chars()).collect();
    for (t, r) in templates.iter().zip(rendered) {
        if !t.contains("{{") {
            assert_eq!(r, t, "a template without placeholders changed");
        }
        if let Some(c) = r.chars().find(|c| !allowed.contains(c)) {
            panic!("{r:?} (from {t:?}) holds {c:?}, found in no template or value");
        }
    }
});
