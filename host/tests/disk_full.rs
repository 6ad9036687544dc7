//! The daemon's data dir on a small tmpfs filled to the last byte: answers
//! are 507 `storage_full`, `/healthz` says degraded with the reason, the
//! store-error counter counts, and once space returns everything recovers
//! without a restart and no acknowledged submission is lost.
//!
//! Mounting needs root (CI runs as root); elsewhere the test prints why it
//! did not run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kozmo_host::client::ClientError;
use serde_json::{json, Value};

mod daemon_harness;

use daemon_harness::*;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(at)
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if out.status.success() {
            Ok(Tmpfs(at.to_path_buf()))
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the file system is full.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 16 * 1024];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(_) => break,
        }
    }
    // The last partial block too.
    while f.write(&[0u8]).is_ok_and(|n| n == 1) {
        written += 1;
    }
    written
}

fn health(d: &Daemon) -> (u16, Value) {
    match d.client.get("/healthz") {
        Ok(r) => r,
        Err(ClientError::Api { status, .. }) => {
            let text = ureq::get(&format!("{}/healthz", d.client.base())).call();
            match text {
                Err(ureq::Error::Status(_, resp)) => (status, resp.into_json().unwrap_or(Value::Null)),
                _ => (status, Value::Null),
            }
        }
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn a_full_disk_is_507_degraded_then_recovers_losing_nothing() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: mounting a tmpfs needs root; run as root (CI does) to test a full disk");
        return;
    }
    let root = tempfile::tempdir().unwrap();
    // The harness puts the daemon's data dir at <root>/data: mount it there.
    let mount_at = root.path().join("data");
    let tmpfs = match Tmpfs::mount(&mount_at, "6m") {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs here ({why})");
            return;
        }
    };
    let d = Daemon::start(root.path(), &["kozmo-plugin-echo"], &[]);

    let mut acked: Vec<String> = Vec::new();
    for i in 0..20 {
        acked.push(d.submit(&json!({"type": "echo", "inputs": {"i": i}})));
    }
    for id in &acked {
        assert_eq!(d.wait_terminal(id)["phase"], "Succeeded");
    }

    let filler = mount_at.join("filler");
    let filled = fill(&filler);
    assert!(filled > 0);

    // Submissions go on while SQLite has free pages; then they are refused.
    let started = Instant::now();
    let url = format!("{}/v1/executions", d.client.base());
    let (retry_after, refusal) = loop {
        let body = json!({"type": "echo", "inputs": {"pad": "x".repeat(4000), "n": acked.len()}});
        match ureq::post(&url).send_json(body) {
            Ok(r) => acked.push(r.into_json::<Value>().unwrap()["id"].as_str().unwrap().to_string()),
            Err(ureq::Error::Status(507, r)) => {
                break (
                    r.header("retry-after").map(str::to_string),
                    r.into_json::<Value>().unwrap(),
                )
            }
            Err(e) => panic!("{e}; log:\n{}", d.log_text()),
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the full disk was never noticed; log:\n{}",
            d.log_text()
        );
    };
    assert_eq!(refusal["error"], "storage_full", "{refusal}");
    assert!(refusal["detail"].as_str().unwrap().contains("free space"), "{refusal}");
    assert!(retry_after.is_some(), "a 507 says when to retry");

    let (status, h) = health(&d);
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["status"], "degraded", "{h}");
    assert_eq!(h["reason"], "storage_full", "{h}");
    let metrics = d.client.get_text("/metrics").unwrap();
    let full: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("kozmo_store_errors_total{kind=\"full\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no store error counter in\n{metrics}"));
    assert!(full > 0);

    // Space returns: the next submission succeeds, health comes back.
    std::fs::remove_file(&filler).unwrap();
    let again = Instant::now();
    let late = loop {
        match d
            .client
            .post("/v1/executions", &json!({"type": "echo", "inputs": {"after": true}}))
        {
            Ok((_, v)) => break v["id"].as_str().unwrap().to_string(),
            Err(ClientError::Api { status: 507, .. }) if again.elapsed() < Duration::from_secs(30) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(e) => panic!("{e}; log:\n{}", d.log_text()),
        }
    };
    acked.push(late);
    let (status, h) = health(&d);
    assert_eq!((status, h["status"].as_str()), (200, Some("ok")), "{h}");
    // Nothing acknowledged was lost: each reaches Succeeded.
    for id in &acked {
        assert_eq!(d.wait_terminal(id)["phase"], "Succeeded", "{id}");
    }
    eprintln!(
        "{} acknowledged submissions all succeeded after the disk was full",
        acked.len()
    );
    drop(d);
    drop(tmpfs);
}
