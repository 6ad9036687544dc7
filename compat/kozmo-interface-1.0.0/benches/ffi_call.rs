//! P1: the cost of the ABI. The same plugin code (`tests/fixtures/noop`)
//! called natively through the plain `Plugin` trait and through the loaded
//! release-built `.so` with the same host context; plus a context accessor
//! that returns a string, the plugin-state codec, template rendering and
//! generated names.
//!
//! Run: `cargo bench -p kozmo-interface --bench ffi_call`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use kozmo_interface::host::open_library;
use kozmo_interface::metadata::MetadataRecord;
use kozmo_interface::template::{render, Parameters};
use kozmo_interface::testing::{TestSetupContext, TestTaskContext};
use kozmo_interface::{encoding, load_plugin, state, Plugin};

type Plugins = Vec<Box<dyn Plugin>>;

/// The fixture's plugins: (native, through the ABI).
fn plugins() -> (Plugins, Plugins) {
    let lib = kozmo_testkit::build_plugins_release(&["kozmo-fixture-noop"]).remove(0);
    let opened = open_library(&lib).expect("noop fixture opens");
    let setup = TestSetupContext::new();
    let ffi = opened
        .entries
        .iter()
        .map(|e| load_plugin(&setup, e).expect("loads"))
        .collect();
    let native = kozmo_fixture_noop::entries()
        .iter()
        .map(|e| load_plugin(&setup, e).expect("loads"))
        .collect();
    (native, ffi)
}

fn calls(c: &mut Criterion) {
    let (native, ffi) = plugins();
    let ctx = TestTaskContext::new();
    for (i, name) in ["noop_handle", "accessor_handle"].into_iter().enumerate() {
        let mut g = c.benchmark_group(name);
        g.bench_function("native", |b| {
            b.iter(|| black_box(native[i].handle(black_box(&ctx)).unwrap()))
        });
        g.bench_function("ffi", |b| b.iter(|| black_box(ffi[i].handle(black_box(&ctx)).unwrap())));
        g.finish();
    }
}

fn helpers(c: &mut Criterion) {
    let value = (42u64, "a/plugin/state/path".to_string(), vec![1u32, 2, 3]);
    let bytes = state::encode(&value).unwrap();
    c.bench_function("state_encode", |b| b.iter(|| state::encode(black_box(&value)).unwrap()));
    c.bench_function("state_decode", |b| {
        b.iter(|| state::decode::<(u64, String, Vec<u32>)>(black_box(&bytes)).unwrap())
    });
    c.bench_function("generated_name_hashed", |b| {
        b.iter(|| {
            encoding::fixed_length_unique_id_for_parts(
                20,
                black_box(&["an-execution-name", "n0", "3"]),
                Default::default(),
            )
        })
    });
    let ctx = TestTaskContext::new().with_input("x", kozmo_interface::Literal::Integer(7));
    let metadata = MetadataRecord::default();
    let args: Vec<String> = [
        "--in={{ .Input }}",
        "--out={{ .OutputPrefix }}/{{ .PerRetryUniqueKey }}",
        "--x={{ .Inputs.x }}",
    ]
    .map(String::from)
    .to_vec();
    let params = Parameters {
        task_exec_metadata: &metadata,
        inputs: Some(&ctx),
        output_path: Some(&ctx),
        task: Some(&ctx),
    };
    c.bench_function("template_render_3_args", |b| {
        b.iter(|| render(black_box(&args), &params).unwrap())
    });
}

criterion_group!(benches, calls, helpers);
criterion_main!(benches);
