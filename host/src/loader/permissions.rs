//! sshd's StrictModes idea for plugin code: a plugin directory or library
//! that someone else could write to is refused, because whoever can write it
//! can run code in the daemon.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::errors::{Problem, ProblemKind};

/// The daemon's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// What is wrong with `meta` (mode and owner), if anything.
fn insecurity(meta: &std::fs::Metadata, euid: u32) -> Option<String> {
    let mode = meta.mode();
    let mut why = Vec::new();
    if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "group",
            _ => "others",
        };
        why.push(format!("writable by {who} (mode {:o})", mode & 0o7777));
    }
    let uid = meta.uid();
    if uid != 0 && uid != euid {
        why.push(format!("owned by uid {uid}, not root or the daemon's uid {euid}"));
    }
    (!why.is_empty()).then(|| why.join(", "))
}

/// Checks one path (directory or file, symlinks followed) for write access
/// by others; `shown` is the path named in messages.
pub fn check_path(what: &str, shown: &Path, resolved: &Path) -> Result<(), Problem> {
    let meta = std::fs::metadata(resolved).map_err(|e| {
        Problem::file(
            ProblemKind::Unreadable,
            shown,
            format!("{}: cannot read its metadata: {e}", shown.display()),
        )
    })?;
    match insecurity(&meta, effective_uid()) {
        None => Ok(()),
        Some(why) => {
            let target = if shown == resolved {
                String::new()
            } else {
                format!(" (resolves to {})", resolved.display())
            };
            Err(Problem::file(
                ProblemKind::InsecurePermissions,
                shown,
                format!(
                    "{what} {}{target} is {why}; run `chmod go-w` / `chown` on it, or set allow_insecure_plugin_dir",
                    shown.display()
                ),
            ))
        }
    }
}

/// Checks a plugin file and, when a symlink leads out of `dir`, the
/// directory that really holds it.
pub fn check_file(dir: Option<&Path>, shown: &Path, resolved: &Path) -> Vec<Problem> {
    let mut problems = Vec::new();
    if let Err(p) = check_path("plugin file", shown, resolved) {
        problems.push(p);
    }
    if let Some(parent) = resolved.parent() {
        let inside = dir
            .and_then(|d| std::fs::canonicalize(d).ok())
            .is_some_and(|d| d == parent);
        if !inside && dir.is_some() {
            if let Err(mut p) = check_path("directory", parent, parent) {
                p.files = vec![shown.to_path_buf(), parent.to_path_buf()];
                p.message = format!("{} is a symlink into {}", shown.display(), p.message);
                problems.push(p);
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn group_or_world_writable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.so");
        std::fs::write(&f, b"x").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_path("plugin file", &f, &f).is_ok());
        for mode in [0o664, 0o646, 0o666] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = check_path("plugin file", &f, &f).unwrap_err();
            assert_eq!(e.kind, ProblemKind::InsecurePermissions);
            assert!(
                e.message.contains("p.so") && e.message.contains("writable by"),
                "{}",
                e.message
            );
        }
    }

    #[test]
    fn owner_must_be_root_or_us() {
        let meta = std::fs::metadata("/").unwrap();
        // `/` is root's: fine for anyone.
        assert_eq!(insecurity(&meta, 12345), None);
    }
}
