//! The task-file reader (`kozmo_engine::spec_parse::parse_spec`, used by
//! `POST /v1/executions` and `kozmo submit`): bytes that parse as JSON go
//! through it.
//!
//! Asserts, beyond "no panic": an accepted spec has a canonical JSON (what
//! the store keeps and what an idempotent resubmission is compared by);
//! that JSON is accepted again as the same spec, and its canonical JSON is
//! the same text.
#![no_main]

use kozmo_engine::spec_parse::parse_spec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(spec) = parse_spec(body) else {
        return;
    };
    let canonical = spec.to_canonical_json();
    let value: serde_json::Value = serde_json::from_str(&canonical).expect("canonical JSON is JSON");
    let again = parse_spec(value).unwrap_or_else(|e| panic!("canonical {canonical} is refused: {e:?}"));
    assert_eq!(again, spec, "canonical {canonical} reads back as another spec");
    assert_eq!(
        again.to_canonical_json(),
        canonical,
        "canonical JSON is not a fixed point"
    );
});
