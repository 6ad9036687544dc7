//! Builds crates against *another* copy of `kozmo-interface` (the released
//! one under `compat/`, or a simulated next version generated from the
//! current source), each set in a cargo workspace of its own under
//! `target/plugin-builds/compat/`, all sharing one target directory so
//! dependencies compile once.
//!
//! Files are written only when their content changes, so a second run is a
//! no-op for cargo.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{library_file_name, plugin_target_dir, workspace_root};

/// What a crate of a foreign workspace builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// A plugin (`cdylib`).
    Plugin,
    /// A program (`bin`).
    Program,
}

/// A crate to build against a foreign interface: its (unique) package
/// name, the directory whose `src/` it compiles, what it builds and extra
/// dependency lines for its manifest.
#[derive(Debug, Clone)]
pub struct ForeignCrate {
    /// Package name, unique across every foreign workspace (artifacts share
    /// one target directory).
    pub package: String,
    /// The directory holding `src/` (e.g. `plugins/echo`).
    pub source: PathBuf,
    /// Library or program.
    pub artifact: Artifact,
    /// Extra `[dependencies]` lines, e.g. `abi_stable = "=0.11.3"`.
    pub extra_dependencies: Vec<String>,
    /// Extra source files copied into its `src/` (source path relative to
    /// the workspace root, file name in `src/`).
    pub extra_sources: Vec<(PathBuf, String)>,
}

impl ForeignCrate {
    /// A plugin built from `source` (relative to the workspace root).
    pub fn plugin(package: &str, source: &str) -> Self {
        ForeignCrate {
            package: package.into(),
            source: workspace_root().join(source),
            artifact: Artifact::Plugin,
            extra_dependencies: Vec::new(),
            extra_sources: Vec::new(),
        }
    }

    /// A program built from `source` (relative to the workspace root).
    pub fn program(package: &str, source: &str, extra: &[&str]) -> Self {
        ForeignCrate {
            package: package.into(),
            source: workspace_root().join(source),
            artifact: Artifact::Program,
            extra_dependencies: extra.iter().map(|s| s.to_string()).collect(),
            extra_sources: Vec::new(),
        }
    }

    /// Adds `file` (relative to the workspace root) to its `src/` as `name`.
    pub fn with_source(mut self, file: &str, name: &str) -> Self {
        self.extra_sources.push((workspace_root().join(file), name.into()));
        self
    }
}

/// Where foreign workspaces and their shared target directory live.
pub fn compat_dir() -> PathBuf {
    plugin_target_dir().join("compat")
}

/// Writes `content` to `path` unless it already holds exactly that.
pub fn write_if_changed(path: &Path, content: &str) {
    if std::fs::read_to_string(path).ok().as_deref() == Some(content) {
        return;
    }
    std::fs::create_dir_all(path.parent().expect("a file has a parent")).expect("create the parent directory");
    std::fs::write(path, content).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// Copies the text files of `from` into `to` (recursively, `target/`
/// skipped), writing only what changed.
pub fn copy_tree(from: &Path, to: &Path) {
    copy_tree_overriding(from, to, Path::new(""), &BTreeMap::new());
}

/// [`copy_tree`], with the content of some files (by path relative to
/// `from`'s root) replaced.
fn copy_tree_overriding(from: &Path, to: &Path, rel: &Path, overrides: &BTreeMap<PathBuf, String>) {
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display())) {
        let entry = entry.expect("a directory entry");
        let name = entry.file_name();
        let path = entry.path();
        if name == "target" {
            continue;
        }
        let rel = rel.join(&name);
        if path.is_dir() {
            copy_tree_overriding(&path, &to.join(&name), &rel, overrides);
        } else {
            let text = match overrides.get(&rel) {
                Some(t) => t.clone(),
                None => std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
            };
            write_if_changed(&to.join(&name), &text);
        }
    }
}

/// Removes what `to` holds and `from` no longer does (a module that became
/// a directory, a deleted file), so a copy made by an earlier run of the
/// tests cannot shadow the current sources.
fn remove_stale(from: &Path, to: &Path) {
    let Ok(entries) = std::fs::read_dir(to) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        let (source, path) = (from.join(&name), entry.path());
        if !source.exists() || source.is_dir() != path.is_dir() {
            let removed = match path.is_dir() {
                true => std::fs::remove_dir_all(&path),
                false => std::fs::remove_file(&path),
            };
            removed.unwrap_or_else(|e| panic!("removing the stale copy {}: {e}", path.display()));
        } else if source.is_dir() {
            remove_stale(&source, &path);
        }
    }
}

fn manifest(c: &ForeignCrate, interface: &Path) -> String {
    let kind = match c.artifact {
        Artifact::Plugin => "[lib]\ncrate-type = [\"cdylib\"]\n".to_string(),
        Artifact::Program => format!("[[bin]]\nname = \"{}\"\npath = \"src/main.rs\"\n", c.package),
    };
    format!(
        "[package]\nname = \"{}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n{kind}\n\
         [dependencies]\nkozmo-interface = {{ path = {:?} }}\nlog = \"0.4\"\n{}\n",
        c.package,
        interface.display().to_string(),
        c.extra_dependencies.join("\n")
    )
}

/// Builds `crates` against the interface at `interface`, in a workspace
/// named `name`, and returns each artifact's path, in order. Panics with
/// cargo's output if the build fails.
pub fn build_against(name: &str, interface: &Path, crates: &[ForeignCrate]) -> Vec<PathBuf> {
    let ws = compat_dir().join(name);
    let members: Vec<String> = crates.iter().map(|c| format!("{:?}", c.package)).collect();
    write_if_changed(
        &ws.join("Cargo.toml"),
        &format!("[workspace]\nresolver = \"2\"\nmembers = [{}]\n", members.join(", ")),
    );
    if !ws.join("Cargo.lock").exists() {
        // The main lock file pins every dependency to what the workspace
        // already uses (and has downloaded).
        std::fs::copy(workspace_root().join("Cargo.lock"), ws.join("Cargo.lock")).expect("copy Cargo.lock");
    }
    for c in crates {
        let dir = ws.join(&c.package);
        write_if_changed(&dir.join("Cargo.toml"), &manifest(c, interface));
        copy_tree(&c.source.join("src"), &dir.join("src"));
        for (file, name) in &c.extra_sources {
            let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
            write_if_changed(&dir.join("src").join(name), &text);
        }
    }
    let target = compat_dir().join("target");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(&ws)
        .args(["build", "--quiet"])
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .output()
        .expect("cargo runs");
    assert!(
        out.status.success(),
        "building {name} against {} failed:\n{}",
        interface.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    crates
        .iter()
        .map(|c| {
            let file = match c.artifact {
                Artifact::Plugin => library_file_name(&c.package),
                Artifact::Program => c.package.clone(),
            };
            let path = target.join("debug").join(file);
            assert!(
                path.exists(),
                "cargo built {} but {} is missing",
                c.package,
                path.display()
            );
            path
        })
        .collect()
}

/// The released 1.0.0 interface source.
pub fn released_interface() -> PathBuf {
    workspace_root().join("compat").join("kozmo-interface-1.0.0")
}

/// One append of a simulated next version: after the line holding
/// `// kozmo-abi-append: <marker>` in `file`, insert `code`.
#[derive(Debug, Clone, Copy)]
pub struct Append {
    /// The file, relative to the interface's root.
    pub file: &'static str,
    /// The marker's name.
    pub marker: &'static str,
    /// What to insert.
    pub code: &'static str,
}

/// One exact replacement of a simulated next version (version numbers).
#[derive(Debug, Clone, Copy)]
pub struct Replace {
    /// The file, relative to the interface's root.
    pub file: &'static str,
    /// The text that must appear exactly once.
    pub from: &'static str,
    /// Its replacement.
    pub to: &'static str,
}

/// A directory of the current interface copied under another name in a
/// simulated version (e.g. `src/ffi/v1` → `src/ffi/v2` for a new epoch),
/// before the appends and replacements apply.
#[derive(Debug, Clone, Copy)]
pub struct CopyDir {
    /// The source directory, relative to the interface's root.
    pub from: &'static str,
    /// The copy's directory, relative to the interface's root.
    pub to: &'static str,
}

/// Generates an interface under `target/plugin-builds/compat/<name>` from
/// the current `interface/` source with `copies`, then `appends` and
/// `replaces` applied; panics naming a missing marker or replaced text
/// (the markers are part of the source's contract: they say where later
/// versions append).
pub fn simulated_interface(name: &str, copies: &[CopyDir], appends: &[Append], replaces: &[Replace]) -> PathBuf {
    let source = workspace_root().join("interface");
    let dest = compat_dir().join(name);
    let read = |f: &Path| {
        std::fs::read_to_string(source.join(f)).unwrap_or_else(|e| panic!("reading interface/{}: {e}", f.display()))
    };
    // Every file that differs from the current source, by relative path.
    let mut files: BTreeMap<PathBuf, String> = BTreeMap::new();
    for c in copies {
        for entry in
            std::fs::read_dir(source.join(c.from)).unwrap_or_else(|e| panic!("reading interface/{}: {e}", c.from))
        {
            let name = entry.expect("a directory entry").file_name();
            files.insert(Path::new(c.to).join(&name), read(&Path::new(c.from).join(&name)));
        }
    }
    for a in appends {
        let text = files
            .entry(PathBuf::from(a.file))
            .or_insert_with(|| read(Path::new(a.file)));
        let tag = format!("// kozmo-abi-append: {}", a.marker);
        let at = text
            .find(&tag)
            .unwrap_or_else(|| panic!("interface/{} has no `{tag}` marker", a.file));
        let line_end = text[at..].find('\n').map_or(text.len(), |n| at + n + 1);
        text.insert_str(line_end, a.code);
    }
    for r in replaces {
        let text = files
            .entry(PathBuf::from(r.file))
            .or_insert_with(|| read(Path::new(r.file)));
        assert_eq!(
            text.matches(r.from).count(),
            1,
            "interface/{} must hold `{}` exactly once",
            r.file,
            r.from
        );
        *text = text.replacen(r.from, r.to, 1);
    }
    let overrides = files;
    remove_stale(&source, &dest);
    copy_tree_overriding(&source, &dest, Path::new(""), &overrides);
    for (path, text) in &overrides {
        // Files that exist only in the simulated version (copied dirs).
        if !source.join(path).exists() {
            write_if_changed(&dest.join(path), text);
        }
    }
    dest
}
