//! Which files of a plugin directory are candidate plugin libraries.

use std::path::{Path, PathBuf};

use super::errors::{Problem, ProblemKind};

/// A candidate library: the path as found in the directory and the file it
/// resolves to (symlinks followed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The path in the plugin directory (what messages name).
    pub path: PathBuf,
    /// The file after resolving symlinks (what is opened).
    pub resolved: PathBuf,
}

/// Whether `path`'s name ends with the platform's library suffix
/// (`.so`, `.dylib`, `.dll`).
pub fn has_library_suffix(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.len() > std::env::consts::DLL_SUFFIX.len() && n.ends_with(std::env::consts::DLL_SUFFIX))
}

/// The candidate libraries of `dir`: its entries (not recursive) whose name
/// ends with the platform's library suffix and that resolve to a regular
/// file, sorted by name. Other entries are ignored; a dangling symlink with
/// the suffix is reported.
pub fn discover(dir: &Path) -> Result<(Vec<Candidate>, Vec<Problem>), Problem> {
    let read = std::fs::read_dir(dir).map_err(|e| {
        Problem::file(
            ProblemKind::DirectoryUnreadable,
            dir,
            format!(
                "cannot list the plugin directory {}: {e}; create it or point the configuration at the right one",
                dir.display()
            ),
        )
    })?;
    let mut paths = Vec::new();
    for entry in read {
        let entry = entry.map_err(|e| {
            Problem::file(
                ProblemKind::DirectoryUnreadable,
                dir,
                format!("cannot list the plugin directory {}: {e}", dir.display()),
            )
        })?;
        let path = entry.path();
        if has_library_suffix(&path) {
            paths.push(path);
        }
    }
    paths.sort();
    let mut candidates = Vec::new();
    let mut problems = Vec::new();
    for path in paths {
        match std::fs::canonicalize(&path) {
            Ok(resolved) if resolved.is_file() => candidates.push(Candidate { path, resolved }),
            Ok(_) => log::debug!("ignoring {}: not a regular file", path.display()),
            Err(e) => problems.push(Problem::file(
                ProblemKind::Unreadable,
                &path,
                format!("{}: cannot resolve the file: {e}", path.display()),
            )),
        }
    }
    Ok((candidates, problems))
}

/// Candidates for explicitly named files (`kozmo plugins check FILE...`):
/// every file is taken whatever its suffix; unresolvable ones are reported.
pub fn from_files(files: &[PathBuf]) -> (Vec<Candidate>, Vec<Problem>) {
    let mut candidates = Vec::new();
    let mut problems = Vec::new();
    for path in files {
        match std::fs::canonicalize(path) {
            Ok(resolved) if resolved.is_file() => candidates.push(Candidate {
                path: path.clone(),
                resolved,
            }),
            Ok(_) => problems.push(Problem::file(
                ProblemKind::Unreadable,
                path,
                format!("{}: not a regular file", path.display()),
            )),
            Err(e) => problems.push(Problem::file(
                ProblemKind::Unreadable,
                path,
                format!("{}: cannot read the file: {e}", path.display()),
            )),
        }
    }
    (candidates, problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_library_suffixes_sorted_and_symlinks_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let suffix = std::env::consts::DLL_SUFFIX;
        std::fs::write(dir.path().join(format!("b{suffix}")), b"x").unwrap();
        std::fs::write(dir.path().join(format!("a{suffix}")), b"x").unwrap();
        std::fs::write(dir.path().join("readme.txt"), b"x").unwrap();
        std::fs::write(dir.path().join(suffix), b"x").unwrap();
        std::fs::create_dir(dir.path().join(format!("sub{suffix}"))).unwrap();
        std::os::unix::fs::symlink(
            dir.path().join(format!("a{suffix}")),
            dir.path().join(format!("c{suffix}")),
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.path().join("missing"), dir.path().join(format!("d{suffix}"))).unwrap();
        let (c, problems) = discover(dir.path()).unwrap();
        let names: Vec<_> = c
            .iter()
            .map(|c| c.path.file_name().unwrap().to_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [format!("a{suffix}"), format!("b{suffix}"), format!("c{suffix}")]
        );
        assert_eq!(
            c[2].resolved,
            std::fs::canonicalize(dir.path().join(format!("a{suffix}"))).unwrap()
        );
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].kind, ProblemKind::Unreadable);
        assert!(problems[0].message.contains(&format!("d{suffix}")));
    }

    #[test]
    fn a_missing_directory_is_reported() {
        let e = discover(Path::new("/nonexistent/kozmo-plugins")).unwrap_err();
        assert_eq!(e.kind, ProblemKind::DirectoryUnreadable);
        assert!(e.message.contains("/nonexistent/kozmo-plugins"));
    }
}
