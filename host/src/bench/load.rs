//! P5: load + check time of plugin libraries, on fresh copies (a library
//! already open would be served from the dynamic loader's cache; libraries
//! are never unloaded, so every copy stays mapped until the process ends).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::ProgressBar;

use crate::loader::{check_files, load_directory, LoaderConfig, LoaderServices};

/// One library's figure.
#[derive(Debug, Clone)]
pub struct LibraryTime {
    /// File name.
    pub name: String,
    /// Median of the fresh copies checked, seconds.
    pub seconds: f64,
}

/// P5 results.
#[derive(Debug, Clone)]
pub struct LoadPoint {
    /// Where the libraries were found.
    pub source: PathBuf,
    /// Every plugin library that checks fine, with its time.
    pub libraries: Vec<LibraryTime>,
    /// Files with the platform suffix that are not usable plugin libraries.
    pub skipped: Vec<String>,
    /// `load_directory` over `copies` fresh copies of the first library:
    /// (copies, seconds). The duplicate-id rule rejects them after every
    /// per-file check and loader ran, so the whole pipeline is measured.
    pub copies_dir: Option<(usize, f64)>,
    /// `load_directory` over one fresh copy of each library: (libraries, seconds).
    pub distinct_dir: Option<(usize, f64)>,
}

impl LoadPoint {
    /// Mean over the libraries, seconds.
    pub fn mean_library_seconds(&self) -> Option<f64> {
        if self.libraries.is_empty() {
            return None;
        }
        Some(self.libraries.iter().map(|l| l.seconds).sum::<f64>() / self.libraries.len() as f64)
    }
}

fn fresh_dir() -> anyhow::Result<tempfile::TempDir> {
    let dir = tempfile::Builder::new().prefix("kozmo-bench-load-").tempdir()?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

fn copy(src: &Path, dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dest = dir.join(format!("{name}{}", std::env::consts::DLL_SUFFIX));
    std::fs::copy(src, &dest)?;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o644))?;
    Ok(dest)
}

/// The files of `dir` with the platform's library suffix, sorted.
pub fn candidates(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.ends_with(std::env::consts::DLL_SUFFIX))
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Loads the way `serve` does: each library is probed in a child first.
fn probing(config: LoaderConfig) -> LoaderConfig {
    config.probing_with_current_exe()
}

/// Measures the libraries of `dir`: `per_library` fresh copies of each
/// (median), a directory of `copies` copies of the first, and a directory
/// of one copy of each. `None` if `dir` holds no usable plugin library.
pub fn measure(dir: &Path, per_library: usize, copies: usize, pb: &ProgressBar) -> anyhow::Result<Option<LoadPoint>> {
    // Fresh services per load: a plugin registers its metrics once per registry.
    let services = || LoaderServices::offline("in the benchmark");
    let scratch = fresh_dir()?;
    let mut libraries = Vec::new();
    let mut usable = Vec::new();
    let mut skipped = Vec::new();
    for (i, file) in candidates(dir).into_iter().enumerate() {
        let name = file
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        pb.set_message(format!("P5 checking {name}"));
        let mut times = Vec::new();
        for k in 0..per_library.max(1) {
            let c = copy(&file, scratch.path(), &format!("l{i}_{k}"))?;
            let start = Instant::now();
            let ok = check_files(std::slice::from_ref(&c), &probing(LoaderConfig::default()), &services()).is_ok();
            times.push(start.elapsed().as_secs_f64());
            if !ok {
                break;
            }
        }
        if times.len() < per_library.max(1) {
            skipped.push(name);
            continue;
        }
        times.sort_by(f64::total_cmp);
        libraries.push(LibraryTime {
            name,
            seconds: super::quantile(&times, 0.5),
        });
        usable.push(file);
    }
    if usable.is_empty() {
        return Ok(None);
    }
    // Prefer echo (the default plugin) for the copies.
    let first = usable
        .iter()
        .find(|p| p.to_string_lossy().contains("echo"))
        .unwrap_or(&usable[0])
        .clone();
    pb.set_message(format!("P5 directory of {copies} copies"));
    let d = fresh_dir()?;
    for i in 0..copies {
        copy(&first, d.path(), &format!("c{i:03}"))?;
    }
    let services_now = services();
    let start = Instant::now();
    let _ = load_directory(&probing(LoaderConfig::new(d.path())), &services_now);
    let copies_dir = Some((copies, start.elapsed().as_secs_f64()));

    pb.set_message("P5 directory of distinct libraries");
    let d = fresh_dir()?;
    for (i, f) in usable.iter().enumerate() {
        let stem = f
            .file_stem()
            .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
        copy(f, d.path(), &format!("{stem}_{i}"))?;
    }
    let services_now = services();
    let start = Instant::now();
    let r = load_directory(&probing(LoaderConfig::new(d.path())), &services_now);
    let distinct_dir = r.is_ok().then(|| (usable.len(), start.elapsed().as_secs_f64()));
    Ok(Some(LoadPoint {
        source: dir.to_path_buf(),
        libraries,
        skipped,
        copies_dir,
        distinct_dir,
    }))
}
