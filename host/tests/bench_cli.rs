//! `kozmo bench --quick` as the real binary: every row of the table is
//! there, in the terminal and in the Markdown file, and the plot is an SVG.
//! No timing is asserted.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use kozmo_host::bench::report::{NOTES_MARKER, ROW_NAMES};

#[test]
fn quick_bench_writes_every_row_and_keeps_notes() {
    let libs = kozmo_testkit::build_plugins(&[
        "kozmo-plugin-echo",
        "kozmo-plugin-shell",
        "kozmo-plugin-rest",
        "kozmo-fixture-noop",
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let plugins = tmp.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::fs::set_permissions(&plugins, std::fs::Permissions::from_mode(0o755)).unwrap();
    for lib in &libs {
        let to = plugins.join(lib.file_name().unwrap());
        std::fs::copy(lib, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let output = tmp.path().join("BENCHMARKS.md");
    let plot = tmp.path().join("docs/throughput.svg");
    // Notes after the marker survive a run.
    std::fs::write(
        &output,
        format!("old table\n{NOTES_MARKER}\n\n## Where the time goes\n\nkept\n"),
    )
    .unwrap();

    let run = || {
        Command::new(env!("CARGO_BIN_EXE_kozmo"))
            .arg("bench")
            .arg("--quick")
            .arg("--output")
            .arg(&output)
            .arg("--plot")
            .arg(&plot)
            .arg("--plugins-dir")
            .arg(&plugins)
            .arg("--criterion-dir")
            .arg(tmp.path().join("no-criterion"))
            .output()
            .unwrap()
    };
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let table = String::from_utf8_lossy(&out.stdout);
    let md = std::fs::read_to_string(&output).unwrap();
    for name in ROW_NAMES {
        assert!(table.contains(name), "terminal table lacks [{name}]:\n{table}");
        assert!(md.contains(&format!("| {name}")), "BENCHMARKS lacks [{name}]:\n{md}");
    }
    for size in [
        "100 in flight",
        "1,000 in flight",
        "(SQLite, synchronous=FULL)",
        "(memory)",
        "5 copies",
    ] {
        assert!(md.contains(size), "no [{size}] row:\n{md}");
    }
    assert!(
        md.contains("not measured: run `cargo bench"),
        "P1 says how to get it:\n{md}"
    );
    assert!(md.contains("libkozmo_plugin_echo"), "P5 lists the library:\n{md}");
    for p4 in [
        "| P4 no-op handle round trip, isolated / raw pipe | ",
        "| Isolated no-op plugin, engine rounds/s, 100 in flight | ",
    ] {
        let line = md
            .lines()
            .find(|l| l.starts_with(p4))
            .unwrap_or_else(|| panic!("no [{p4}] row:\n{md}"));
        assert!(!line.contains("not measured"), "P4 ran with the noop fixture: {line}");
    }
    // The retention part ran both loads, each without and with retention.
    assert!(md.contains("## Retention"), "{md}");
    for load in ["### At the full rate", "### Paced at 50 % of that rate"] {
        let at = md.find(load).unwrap_or_else(|| panic!("no [{load}]:\n{md}"));
        let step = md[at..]
            .lines()
            .find(|l| l.starts_with("| step commit (a step's result → its execution's next call) | "))
            .unwrap_or_else(|| panic!("no step commit row after [{load}]:\n{md}"));
        assert_eq!(step.matches(" ms |").count(), 3, "three latencies: {step}");
        assert!(md[at..].contains("step commit p99 during pruning / without: "), "{md}");
    }
    // The async part ran: rest executions polling the local job service.
    assert!(md.contains("## Asynchronous plugins (rest)"), "{md}");
    let qps = md
        .lines()
        .find(|l| l.starts_with("| read QPS, 200 executions polling every 1 s, limit 50/s | "))
        .unwrap_or_else(|| panic!("no async read QPS row:\n{md}"));
    assert!(!qps.contains("not measured"), "{qps}");
    // The wake-up parts ran: shell tasks through a real daemon, signals.
    assert!(md.contains("## Wake-ups: shell tasks and signals"), "{md}");
    for row in [
        "| shell: 50 `sh -c true` tasks through the daemon / `xargs -P",
        "| shell: one task submit → Succeeded, default configuration (resync 5 s), p50 / p99 of 5 | ",
        "| signal: plugin `signal()` → start of its next round (SQLite, resync 1 h), p50 / p99 of 20 | ",
    ] {
        let line = md
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no [{row}] row:\n{md}"));
        assert!(!line.contains("not measured"), "{line}");
        assert!(line.contains(" ms") || line.contains("/s"), "a figure: {line}");
    }
    for fact in ["CPUs (nproc)", "model", "memory", "date (UTC)", "git commit"] {
        assert!(md.contains(&format!("| {fact} |")), "no [{fact}]:\n{md}");
    }
    assert!(
        md.contains("](docs/throughput.svg)"),
        "plot linked relative to the file:\n{md}"
    );
    assert!(md.ends_with("## Where the time goes\n\nkept\n"), "notes kept:\n{md}");
    assert!(!md.contains("old table"));
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("executions in flight"), "{svg}");

    // A second run keeps the notes exactly once.
    assert!(run().status.success());
    let md = std::fs::read_to_string(&output).unwrap();
    assert_eq!(md.matches(NOTES_MARKER).count(), 1);
    assert_eq!(md.matches("\nkept\n").count(), 1, "{md}");
}

#[test]
fn bench_help_explains_each_measurement() {
    let out = Command::new(env!("CARGO_BIN_EXE_kozmo"))
        .args(["bench", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for p in [
        "P1",
        "P2",
        "P3",
        "P5",
        "P6",
        "Latency",
        "--quick",
        "--output",
        "--plugins-dir",
    ] {
        assert!(help.contains(p), "help lacks {p}:\n{help}");
    }
}

#[test]
fn no_plugin_library_is_reported_in_the_table() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let output = tmp.path().join("B.md");
    let out = Command::new(env!("CARGO_BIN_EXE_kozmo"))
        .args(["bench", "--quick", "--in-flight", "50", "--memory-executions", "50"])
        .args(["--durable-executions", "20", "--latency-samples", "2"])
        .arg("--output")
        .arg(&output)
        .arg("--plot")
        .arg(tmp.path().join("p.svg"))
        .arg("--plugins-dir")
        .arg(&empty)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let md = std::fs::read_to_string(&output).unwrap();
    assert!(
        md.contains("| P5 load + check, one library | not measured: no plugin library in"),
        "{md}"
    );
    assert!(
        md.contains("| P5 load + check, directory of 50 copies | not measured"),
        "{md}"
    );
}
