//! Load + check time of plugin libraries (release-built fixtures):
//!
//! * `one_library`: symbol check, `dlopen`, abi_stable header and layout
//!   checks, entries, loader — for a fresh copy of `echo` each time (a
//!   library already open would be served from the dynamic loader's cache);
//! * `dir_50_copies`: `load_directory` over 50 fresh copies of `echo` (the
//!   duplicate-id rule rejects them after every per-file check ran, so the
//!   whole pipeline is measured);
//! * `fixture_dir`: `load_directory` over fresh copies of every fixture.
//!
//! Every load probes its libraries in a child `kozmo` first, as `serve`
//! does.
//!
//! Run: `cargo bench -p kozmo-host --bench load`. Every iteration leaves
//! its libraries mapped (libraries are never unloaded), so the sample
//! counts are kept small.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{black_box, criterion_group, criterion_main, Criterion, SamplingMode};
use kozmo_host::loader::{check_files, load_directory, LoaderConfig, LoaderServices};

const FIXTURES: [&str; 10] = [
    "kozmo-plugin-echo",
    "kozmo-fixture-second",
    "kozmo-fixture-echo-dup",
    "kozmo-fixture-default2",
    "kozmo-fixture-claimer",
    "kozmo-fixture-shortname",
    "kozmo-fixture-epoch99",
    "kozmo-fixture-badentry",
    "kozmo-fixture-noroot",
    "kozmo-fixture-panicky",
];

fn fresh_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn copy(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dest = dir.join(format!("{name}{}", std::env::consts::DLL_SUFFIX));
    std::fs::copy(src, &dest).unwrap();
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o755)).unwrap();
    dest
}

fn bench(c: &mut Criterion) {
    // `cargo bench` passes --bench and gets release libraries; `cargo test
    // --all-targets` runs each benchmark once as a smoke test, with the debug
    // libraries the test suites already built.
    let bench_mode = std::env::args().any(|a| a == "--bench");
    let copies = if bench_mode { 50 } else { 3 };
    let libs = if bench_mode {
        kozmo_testkit::build_plugins_release(&FIXTURES)
    } else {
        kozmo_testkit::build_plugins(&FIXTURES)
    };
    let echo = libs[0].clone();
    let services = LoaderServices::offline("in the benchmark");
    let mut group = c.benchmark_group("load");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(200))
        .measurement_time(Duration::from_millis(500));

    group.bench_function("one_library", |b| {
        b.iter_custom(|iters| {
            let dir = fresh_dir();
            let files: Vec<PathBuf> = (0..iters).map(|i| copy(&echo, dir.path(), &format!("e{i}"))).collect();
            let start = Instant::now();
            for f in &files {
                let r = check_files(std::slice::from_ref(f), &probing(LoaderConfig::default()), &services);
                assert!(r.is_ok());
                black_box(r.ok());
            }
            start.elapsed()
        })
    });

    group.bench_function(format!("dir_{copies}_copies"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = fresh_dir();
                for i in 0..copies {
                    copy(&echo, dir.path(), &format!("e{i:02}"));
                }
                let start = Instant::now();
                let r = load_directory(&probing(LoaderConfig::new(dir.path())), &services);
                total += start.elapsed();
                let report = r.unwrap_err();
                assert_eq!(report.errors.len(), 1, "{report}");
            }
            total
        })
    });

    group.bench_function("fixture_dir", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = fresh_dir();
                for (lib, name) in libs.iter().zip(FIXTURES) {
                    copy(lib, dir.path(), name);
                }
                let start = Instant::now();
                black_box(load_directory(&probing(LoaderConfig::new(dir.path())), &services).err());
                total += start.elapsed();
            }
            total
        })
    });
    group.finish();
}

/// Loads the way `serve` does: each library is probed in a child (the
/// built `kozmo`) first.
fn probing(config: LoaderConfig) -> LoaderConfig {
    LoaderConfig {
        probe_program: Some(PathBuf::from(env!("CARGO_BIN_EXE_kozmo"))),
        ..config
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
