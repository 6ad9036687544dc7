//! The local-filesystem [`DataStore`] rooted at `<data_dir>/data`.
//!
//! References are absolute paths under the root, `file://` URLs of such
//! paths, or paths relative to the root. A reference with a `..` component,
//! outside the root, or reaching outside it through a symlink is refused.

use std::fs;
use std::io::Write;
use std::path::{Component, Path, PathBuf};

use kozmo_interface::{DataStore, PluginError, Result};

/// Files under one root directory.
#[derive(Debug, Clone)]
pub struct FsDataStore {
    root: PathBuf,
    canonical_root: PathBuf,
}

fn refused(reference: &str, why: &str) -> PluginError {
    PluginError::user(
        "DataStoreReferenceRefused",
        format!("reference [{reference}] refused: {why}"),
    )
}

impl FsDataStore {
    /// A store rooted at `root` (created if missing). A relative root is
    /// made absolute against the current directory: the paths this store
    /// hands out (raw output prefixes, input paths) must name the same files
    /// for a plugin whatever its own current directory, and the shell plugin
    /// only works in prefixes that are absolute paths.
    pub fn new(root: impl Into<PathBuf>) -> std::io::Result<Self> {
        let root = std::path::absolute(root.into())?;
        fs::create_dir_all(&root)?;
        let canonical_root = root.canonicalize()?;
        Ok(FsDataStore { root, canonical_root })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path a reference names, checked to stay under the root.
    pub fn resolve(&self, reference: &str) -> Result<PathBuf> {
        let raw = reference.strip_prefix("file://").unwrap_or(reference);
        if raw.is_empty() {
            return Err(refused(reference, "empty reference"));
        }
        let p = Path::new(raw);
        if p.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(refused(reference, "`..` is not allowed"));
        }
        let full = if p.is_absolute() {
            if let Ok(rest) = p.strip_prefix(&self.root) {
                self.canonical_root.join(rest)
            } else if p.starts_with(&self.canonical_root) {
                p.to_path_buf()
            } else {
                return Err(refused(
                    reference,
                    &format!("outside the data store root {}", self.root.display()),
                ));
            }
        } else {
            self.canonical_root.join(p)
        };
        // Symlinks: the deepest existing ancestor must resolve under the root.
        let mut probe = full.as_path();
        loop {
            if let Ok(real) = probe.canonicalize() {
                if !real.starts_with(&self.canonical_root) {
                    return Err(refused(reference, "a symlink leads outside the data store root"));
                }
                break;
            }
            match probe.parent() {
                Some(parent) => probe = parent,
                None => break,
            }
        }
        Ok(full)
    }
}

impl DataStore for FsDataStore {
    fn read_raw(&self, reference: &str) -> Result<Vec<u8>> {
        let p = self.resolve(reference)?;
        fs::read(&p).map_err(|e| PluginError::system("DataStoreRead", format!("cannot read [{reference}]: {e}")))
    }

    fn write_raw(&self, reference: &str, bytes: &[u8]) -> Result<()> {
        let p = self.resolve(reference)?;
        let io = |e: std::io::Error| PluginError::system("DataStoreWrite", format!("cannot write [{reference}]: {e}"));
        if let Some(dir) = p.parent() {
            fs::create_dir_all(dir).map_err(io)?;
        }
        // Write to a sibling then rename: readers never see half an object.
        let tmp = p.with_file_name(format!(
            ".{}.tmp{}",
            p.file_name().and_then(|n| n.to_str()).unwrap_or("object"),
            std::process::id()
        ));
        let written = fs::File::create(&tmp).and_then(|mut f| f.write_all(bytes));
        let renamed = written.and_then(|()| fs::rename(&tmp, &p));
        if let Err(e) = renamed {
            // A full disk must not leave half-written siblings behind.
            let _ = fs::remove_file(&tmp);
            return Err(io(e));
        }
        Ok(())
    }

    fn head(&self, reference: &str) -> Result<Option<u64>> {
        let p = self.resolve(reference)?;
        match fs::metadata(&p) {
            Ok(m) if m.is_file() => Ok(Some(m.len())),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(PluginError::system(
                "DataStoreHead",
                format!("cannot stat [{reference}]: {e}"),
            )),
        }
    }

    fn delete(&self, reference: &str) -> Result<()> {
        let p = self.resolve(reference)?;
        match fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(PluginError::system(
                "DataStoreDelete",
                format!("cannot delete [{reference}]: {e}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_leaves_no_temporary_file_behind() {
        let dir = tempfile::tempdir().unwrap();
        let ds = FsDataStore::new(dir.path().join("data")).unwrap();
        // The rename cannot replace a non-empty directory.
        let target = ds.root().join("obj");
        fs::create_dir_all(target.join("inside")).unwrap();
        let e = ds.write_raw("obj", b"bytes").unwrap_err();
        assert_eq!(e.code, "DataStoreWrite");
        let names: Vec<_> = fs::read_dir(ds.root())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["obj"], "no .obj.tmp<pid> left");
    }

    #[test]
    fn a_relative_root_is_made_absolute() {
        // A relative path below the current directory (the package's, under
        // cargo test), removed when the test ends.
        let cwd = std::env::current_dir().unwrap();
        let dir = tempfile::tempdir_in(&cwd).unwrap();
        let relative = dir.path().strip_prefix(&cwd).unwrap().join("data");
        assert!(relative.is_relative(), "{}", relative.display());
        let ds = FsDataStore::new(&relative).unwrap();
        assert!(ds.root().is_absolute(), "{}", ds.root().display());
        assert_eq!(ds.root(), cwd.join(&relative));
        ds.write_raw("x", b"1").unwrap();
        assert_eq!(fs::read(relative.join("x")).unwrap(), b"1");
    }

    #[test]
    fn round_trip_under_the_root_in_every_form() {
        let dir = tempfile::tempdir().unwrap();
        let ds = FsDataStore::new(dir.path().join("data")).unwrap();
        let abs = dir.path().join("data/a/b.txt");
        ds.write_raw(abs.to_str().unwrap(), b"hi").unwrap();
        assert_eq!(ds.read_raw(&format!("file://{}", abs.display())).unwrap(), b"hi");
        assert_eq!(ds.head("a/b.txt").unwrap(), Some(2));
        ds.delete("a/b.txt").unwrap();
        ds.delete("a/b.txt").unwrap();
        assert_eq!(ds.head("a/b.txt").unwrap(), None);
    }

    #[test]
    fn escapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ds = FsDataStore::new(dir.path().join("data")).unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "secret").unwrap();
        for r in [
            outside.to_str().unwrap().to_string(),
            format!("{}/data/../outside.txt", dir.path().display()),
            "../outside.txt".to_string(),
            "/etc/passwd".to_string(),
        ] {
            let e = ds.read_raw(&r).unwrap_err();
            assert_eq!(e.code, "DataStoreReferenceRefused", "{r}");
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(dir.path(), dir.path().join("data/link")).unwrap();
            let e = ds.read_raw("link/outside.txt").unwrap_err();
            assert!(e.message.contains("symlink"), "{e}");
            let e = ds.write_raw("link/new.txt", b"x").unwrap_err();
            assert!(e.message.contains("symlink"), "{e}");
        }
    }
}
