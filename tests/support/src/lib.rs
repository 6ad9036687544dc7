//! Test support shared by Kozmo's test suites.
//!
//! [`build_plugins`] builds workspace plugin crates as real shared libraries
//! once per test process (and cargo makes later runs no-ops), in a target
//! directory of their own: `cargo test` holds the lock of the main one while
//! tests run. [`postgres::PgServer`] is a throw-away PostgreSQL cluster
//! (the store's and the daemon's tests; later ones may reuse it);
//! [`redis::RedisServer`] a throw-away Redis server (the resource manager
//! on Redis and the daemon's tests of it).

pub mod compat;
pub mod job_service;
pub mod postgres;
pub mod redis;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support sits two levels below the workspace root")
        .to_path_buf()
}

/// Where plugin libraries are built.
pub fn plugin_target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
        .join("plugin-builds")
}

/// The platform's file name of a cdylib built from `package`.
pub fn library_file_name(package: &str) -> String {
    let stem = package.replace('-', "_");
    format!("{}{stem}{}", std::env::consts::DLL_PREFIX, std::env::consts::DLL_SUFFIX)
}

fn build_profile(
    packages: &[&str],
    extra_rustflags: Option<&str>,
    target_dir: &Path,
    release: bool,
) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root()).arg("build").arg("--quiet");
    if release {
        cmd.arg("--release");
    }
    for p in packages {
        cmd.arg("-p").arg(p);
    }
    cmd.env("CARGO_TARGET_DIR", target_dir);
    // Flags of the outer build (coverage, sanitizers) must not leak in unasked.
    cmd.env_remove("RUSTFLAGS").env_remove("CARGO_ENCODED_RUSTFLAGS");
    if let Some(flags) = extra_rustflags {
        cmd.env("RUSTFLAGS", flags);
    }
    let out = cmd.output().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building {packages:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// Builds `packages` into `target_dir` and returns each library's path,
/// in order; panics with cargo's output if the build fails.
fn build_and_locate(packages: &[&str], rustflags: Option<&str>, target_dir: &Path, release: bool) -> Vec<PathBuf> {
    if let Err(e) = build_profile(packages, rustflags, target_dir, release) {
        panic!("{e}");
    }
    let profile_dir = target_dir.join(if release { "release" } else { "debug" });
    packages
        .iter()
        .map(|p| {
            let path = profile_dir.join(library_file_name(p));
            assert!(path.exists(), "cargo built {p} but {} is missing", path.display());
            path
        })
        .collect()
}

static BUILT: OnceLock<Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();

/// Builds `packages` (debug) once per process and returns each library's
/// path, in order. Panics with cargo's output if the build fails.
pub fn build_plugins(packages: &[&str]) -> Vec<PathBuf> {
    build_plugins_with(packages, None, "default")
}

/// Like [`build_plugins`] with extra `RUSTFLAGS` (e.g. `-C panic=abort`),
/// in a target sub-directory named `flavour`.
pub fn build_plugins_with(packages: &[&str], rustflags: Option<&str>, flavour: &str) -> Vec<PathBuf> {
    let cache = BUILT.get_or_init(|| Mutex::new(BTreeMap::new()));
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    let dir = plugin_target_dir().join(flavour);
    let missing: Vec<&str> = packages
        .iter()
        .copied()
        .filter(|p| !cache.contains_key(&format!("{flavour}/{p}")))
        .collect();
    if !missing.is_empty() {
        for (p, path) in missing.iter().zip(build_and_locate(&missing, rustflags, &dir, false)) {
            cache.insert(format!("{flavour}/{p}"), path);
        }
    }
    packages
        .iter()
        .map(|p| cache[&format!("{flavour}/{p}")].clone())
        .collect()
}

/// Builds `packages` with `--release` (for benchmarks: release libraries
/// are ~50x smaller than debug ones, which changes load times) into the
/// `release` flavour directory, and returns each library's path. Not
/// cached per process; cargo makes repeated calls cheap.
pub fn build_plugins_release(packages: &[&str]) -> Vec<PathBuf> {
    build_and_locate(packages, None, &plugin_target_dir().join("release"), true)
}
