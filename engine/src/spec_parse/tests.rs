use serde_json::json;

use super::*;

fn refused(body: Value) -> (String, String) {
    match parse_spec(body.clone()) {
        Err(SpecError { path, detail }) => (path, detail),
        other => panic!("{body} was not refused: {other:?}"),
    }
}

#[test]
fn the_task_file_form_and_the_nested_form_parse_alike() {
    let flat = json!({"type": "echo", "metadata": {"retries": 2}, "inputs": {"x": 1},
        "execution": {"project": "p"}});
    let nested = json!({"template": {"type": "echo", "metadata": {"retries": 2}}, "inputs": {"x": 1},
        "metadata": {"project": "p"}});
    assert_eq!(parse_spec(flat).unwrap(), parse_spec(nested).unwrap());
}

#[test]
fn every_example_task_file_parses() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let body: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        parse_spec(body).unwrap_or_else(|e| panic!("{}: {e:?}", path.display()));
        seen += 1;
    }
    assert!(seen >= 2, "only {seen} example task files in {dir}");
}

#[test]
fn a_bad_field_reports_its_path() {
    assert_eq!(
        refused(json!({"type": "echo", "metadata": {"retries": "x"}})).0,
        "metadata.retries"
    );
    assert_eq!(
        refused(json!({"type": "echo", "execution": {"labels": 3}})).0,
        "execution.labels"
    );
    assert_eq!(
        refused(json!({"type": "echo", "interface": {"outputs": 5}})).0,
        "interface.outputs"
    );
}

#[test]
fn unknown_fields_are_refused_with_the_nearest_known_one() {
    let (path, detail) = refused(json!({"type": "echo", "metadata": {"retriez": 2}}));
    assert_eq!(path, "metadata.retriez");
    assert!(detail.contains("did you mean `metadata.retries`?"), "{detail}");

    let (path, detail) = refused(json!({"type": "echo", "execution": {"projct": "p"}}));
    assert_eq!(path, "execution.projct");
    assert!(detail.contains("`execution.project`"), "{detail}");

    let (path, detail) = refused(json!({"tpye": "echo"}));
    assert_eq!(path, "tpye");
    assert!(detail.contains("did you mean `type`?"), "{detail}");

    let (path, _) = refused(json!({"template": {"type": "echo"}, "metadata": {"node": "x"}}));
    assert_eq!(path, "metadata.node");

    let (path, detail) = refused(json!({"type": "echo", "zzzzzz": 1}));
    assert_eq!(path, "zzzzzz");
    assert!(!detail.contains("did you mean"), "{detail}");
}

#[test]
fn free_form_places_take_any_json() {
    parse_spec(json!({"type": "shell", "custom": {"anything": [1, {"x": null}]},
        "inputs": {"a": [1, 2], "b": {"c": "d"}}}))
    .unwrap();
}

#[test]
fn a_list_where_an_object_belongs_is_refused() {
    for (body, want) in [
        (json!({"type": "echo", "metadata": []}), "metadata"),
        (json!({"type": "echo", "execution": [1]}), "execution"),
        (json!({"type": "echo", "container": ["sh"]}), "container"),
        (json!({"template": [], "inputs": {}}), "template"),
    ] {
        let (path, detail) = refused(body);
        assert_eq!(path, want, "{detail}");
        assert!(detail.contains("must be a JSON object"), "{detail}");
    }
}

#[test]
fn timeouts_out_of_range_are_refused_not_panicking() {
    for t in [
        json!(1e20),
        json!("1e20s"),
        json!("99999999999999999h"),
        json!("9223372036854775807ms"),
        json!(-1),
    ] {
        let (path, detail) = refused(json!({"type": "echo", "metadata": {"timeout": t}}));
        assert_eq!(path, "metadata.timeout", "{t}: {detail}");
    }
    let ok = parse_spec(json!({"type": "echo", "metadata": {"timeout": "3650d"}}));
    assert!(ok.is_err(), "days are not a unit");
    let ten_years = parse_spec(json!({"type": "echo", "metadata": {"timeout": MAX_TIMEOUT_SECS}})).unwrap();
    assert_eq!(ten_years.template.metadata.timeout.unwrap().as_secs(), MAX_TIMEOUT_SECS);
}

#[test]
fn retries_are_bounded() {
    assert_eq!(
        refused(json!({"type": "echo", "metadata": {"retries": 1001}})).0,
        "metadata.retries"
    );
    assert_eq!(
        refused(json!({"type": "echo", "metadata": {"retries": -1}})).0,
        "metadata.retries"
    );
    parse_spec(json!({"type": "echo", "metadata": {"retries": 1000}})).unwrap();
}

#[test]
fn task_types_must_be_short_plain_names() {
    let (path, _) = refused(json!({"type": "ec\u{0}ho"}));
    assert_eq!(path, "type");
    let (path, detail) = refused(json!({"type": "x".repeat(100_000)}));
    assert_eq!(path, "type");
    assert!(
        detail.len() < 300,
        "the detail must not echo the value: {} bytes",
        detail.len()
    );
    parse_spec(json!({"type": "container_array.v2-x"})).unwrap();
}

#[test]
fn path_components_are_checked_where_they_are() {
    for (body, want) in [
        (
            json!({"type": "echo", "execution": {"node_id": "../../../../../../../escaped"}}),
            "execution.node_id",
        ),
        (
            json!({"template": {"type": "echo"}, "metadata": {"node_id": "a/b"}}),
            "metadata.node_id",
        ),
        (
            json!({"type": "echo", "execution": {"project": ".."}}),
            "execution.project",
        ),
        (
            json!({"type": "echo", "execution": {"domain": "d\nx"}}),
            "execution.domain",
        ),
        (json!({"type": "echo", "id": {"name": "a/../../b"}}), "id.name"),
        (json!({"type": "echo", "id": {"version": "v 1"}}), "id.version"),
    ] {
        let (path, detail) = refused(body);
        assert_eq!(path, want, "{detail}");
        assert!(detail.contains("[A-Za-z0-9._-]"), "{detail}");
    }
    parse_spec(json!({"type": "echo", "execution": {"node_id": "n-1.b_2", "project": "p", "domain": "dev"}})).unwrap();
}

#[test]
fn null_is_refused_where_a_struct_is_required_and_means_none_where_it_is_optional() {
    for (body, path) in [
        (json!({"type": "echo", "metadata": null}), "metadata"),
        (json!({"type": "echo", "id": null}), "id"),
        (json!({"template": null}), "template"),
        (
            json!({"type": "echo", "execution": {"security_context": null}}),
            "execution.security_context",
        ),
    ] {
        let (at, detail) = refused(body);
        assert_eq!(at, path);
        assert!(detail.contains("object"), "{detail}");
    }
    // `container` is optional: null is "no container", in both forms, and
    // it is how the canonical JSON (what the store keeps) writes it, so
    // that JSON reads back as the same spec.
    for body in [
        json!({"type": "echo", "container": null}),
        json!({"template": {"type": "echo", "container": null}}),
    ] {
        let spec = parse_spec(body).unwrap();
        assert!(spec.template.container.is_none());
        let canonical: serde_json::Value = serde_json::from_str(&spec.to_canonical_json()).unwrap();
        assert_eq!(canonical["template"]["container"], serde_json::Value::Null);
        assert_eq!(parse_spec(canonical).unwrap(), spec);
    }
    // Free-form fields take any JSON, null included.
    assert!(parse_spec(json!({"type": "echo", "custom": null})).is_ok());
}
