//! sshd's StrictModes idea for plugin code: a plugin directory or library
//! that someone else could write to is refused, because whoever can write it
//! can run code in the daemon. That holds for every directory on the way
//! to it too, and through every symlink (see [`check_resolution`]).
//!
//! The rule, per name looked up while resolving a path (every component
//! from `/`, symlink targets included, relative paths from the current
//! directory): the directory holding the name must be owned by root or the
//! daemon's euid, and must not be writable by group or others, unless it
//! has the sticky bit (like `/tmp`) and the entry looked up in it is itself
//! owned by root or the daemon's euid (in a sticky directory only an
//! entry's owner, the directory's owner and root may rename or remove it).
//! The plugin directory and each library are stricter: owned by root or
//! the euid and not writable by group or others, sticky or not
//! ([`check_path`]).

use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use super::errors::{Problem, ProblemKind};

/// Symlinks followed at most while resolving one path (Linux's limit).
const MAX_SYMLINKS: usize = 40;

/// The daemon's effective user id.
pub fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// Whether `uid` may own what the daemon trusts.
fn trusted_owner(uid: u32, euid: u32) -> bool {
    uid == 0 || uid == euid
}

/// Who may write, from the mode's group/other write bits.
fn writers(mode: u32) -> &'static str {
    match (mode & 0o020 != 0, mode & 0o002 != 0) {
        (true, true) => "group and others",
        (true, false) => "group",
        _ => "others",
    }
}

/// What is wrong with `meta` (mode and owner), if anything.
fn insecurity(meta: &std::fs::Metadata, euid: u32) -> Option<String> {
    let mode = meta.mode();
    let mut why = Vec::new();
    if mode & 0o022 != 0 {
        why.push(format!("writable by {} (mode {:o})", writers(mode), mode & 0o7777));
    }
    let uid = meta.uid();
    if !trusted_owner(uid, euid) {
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

/// One name looked up while resolving a path: the (real) directory it was
/// looked up in and the entry (not followed).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lookup {
    dir: PathBuf,
    entry: PathBuf,
}

/// Every lookup the kernel makes to resolve `path`, in order: each
/// component from `/` (relative paths start at the current directory),
/// and through each symlink its target's components, from `/` or from the
/// directory holding the link. `Err` says why resolution failed.
fn lookups(path: &Path) -> Result<Vec<Lookup>, String> {
    let start = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| format!("cannot read the current directory: {e}"))?
            .join(path)
    };
    // Components still to resolve, the next one last.
    let mut pending: Vec<OsString> = Vec::new();
    let push = |pending: &mut Vec<OsString>, p: &Path| {
        for c in p.components().rev() {
            match c {
                Component::Normal(n) => pending.push(n.to_os_string()),
                Component::ParentDir => pending.push("..".into()),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
    };
    push(&mut pending, &start);
    let mut dir = PathBuf::from("/");
    let mut found = Vec::new();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            dir.pop();
            continue;
        }
        let entry = dir.join(&name);
        let meta = std::fs::symlink_metadata(&entry).map_err(|e| format!("{}: {e}", entry.display()))?;
        found.push(Lookup {
            dir: dir.clone(),
            entry: entry.clone(),
        });
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(format!("more than {MAX_SYMLINKS} symlinks"));
            }
            let target = std::fs::read_link(&entry).map_err(|e| format!("{}: {e}", entry.display()))?;
            if target.is_absolute() {
                dir = PathBuf::from("/");
            }
            push(&mut pending, &target);
        } else {
            dir = entry;
        }
    }
    Ok(found)
}

/// What is wrong with looking `l.entry` up in `l.dir`, if anything (the
/// module's rule).
fn lookup_insecurity(l: &Lookup, euid: u32) -> Option<String> {
    let meta = std::fs::symlink_metadata(&l.dir).ok()?;
    let (mode, uid) = (meta.mode(), meta.uid());
    let shown_mode = mode & 0o7777;
    if !trusted_owner(uid, euid) {
        return Some(format!(
            "directory {} (mode {shown_mode:o}, owner uid {uid}) is owned by neither root nor the daemon's uid {euid}; \
             its owner can replace {}: `chown root` it or move the plugins out of it",
            l.dir.display(),
            l.entry.display()
        ));
    }
    if mode & 0o022 == 0 {
        return None;
    }
    let who = writers(mode);
    if mode & 0o1000 == 0 {
        return Some(format!(
            "directory {} (mode {shown_mode:o}, owner uid {uid}) is writable by {who} and not sticky, \
             so they can replace {}: run `chmod go-w {}` or move the plugins out of it",
            l.dir.display(),
            l.entry.display(),
            l.dir.display()
        ));
    }
    let entry_uid = std::fs::symlink_metadata(&l.entry).ok()?.uid();
    (!trusted_owner(entry_uid, euid)).then(|| {
        format!(
            "directory {} (mode {shown_mode:o}, owner uid {uid}) is sticky but writable by {who}, and {} in it \
             is owned by uid {entry_uid}, not root or the daemon's uid {euid}, who can replace it: \
             `chown` it or move the plugins out of it",
            l.dir.display(),
            l.entry.display()
        )
    })
}

/// Checks every directory on the way to `shown` (a plugin directory or
/// library as configured or named), through every symlink, against the
/// module's rule: one problem per offending directory, naming `shown`, the
/// directory, its mode and owner and what to do.
pub fn check_resolution(what: &str, shown: &Path) -> Vec<Problem> {
    let found = match lookups(shown) {
        Ok(found) => found,
        Err(why) => {
            return vec![Problem::file(
                ProblemKind::Unreadable,
                shown,
                format!("{what} {}: cannot resolve it: {why}", shown.display()),
            )]
        }
    };
    let euid = effective_uid();
    let mut problems: Vec<Problem> = Vec::new();
    for l in &found {
        if problems.iter().any(|p| p.files.get(1) == Some(&l.dir)) {
            continue;
        }
        if let Some(why) = lookup_insecurity(l, euid) {
            problems.push(Problem::files(
                ProblemKind::InsecurePermissions,
                vec![shown.to_path_buf(), l.dir.clone()],
                format!(
                    "{what} {} is not safe from other users: {why} (or set allow_insecure_plugin_dir)",
                    shown.display()
                ),
            ));
        }
    }
    problems
}

/// Checks a plugin file: every directory on the way to it (the plugin
/// directory's ancestors were checked already and pass again; a symlink's
/// target adds its own), then the file itself.
pub fn check_file(shown: &Path, resolved: &Path) -> Vec<Problem> {
    let mut problems = check_resolution("plugin file", shown);
    if let Err(p) = check_path("plugin file", shown, resolved) {
        problems.push(p);
    }
    problems
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{symlink, PermissionsExt};

    use super::*;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn group_or_world_writable_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.so");
        std::fs::write(&f, b"x").unwrap();
        chmod(&f, 0o644);
        assert!(check_path("plugin file", &f, &f).is_ok());
        for mode in [0o664, 0o646, 0o666] {
            chmod(&f, mode);
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
        assert!(trusted_owner(0, 12345) && trusted_owner(12345, 12345) && !trusted_owner(7, 12345));
    }

    #[test]
    fn lookups_follow_every_component_and_symlink() {
        let t = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(t.path()).unwrap();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/lib.so"), b"x").unwrap();
        std::fs::create_dir(root.join("d")).unwrap();
        symlink("../a/b/lib.so", root.join("d/rel.so")).unwrap();
        symlink(root.join("d/rel.so"), root.join("abs.so")).unwrap();
        let found = lookups(&root.join("abs.so")).unwrap();
        let dirs: Vec<&Path> = found.iter().map(|l| l.dir.as_path()).collect();
        // `/`, then each ancestor of root down to root, ...
        assert_eq!(dirs[0], Path::new("/"));
        let n = root.components().count();
        assert_eq!(dirs[n - 1], root.as_path());
        // ... then the absolute link restarts at `/`, and the relative one
        // goes on from `d`, up to root and into a/b.
        let rest: Vec<_> = found[n..].iter().map(|l| l.entry.clone()).collect();
        let tail = &rest[rest.len() - 5..];
        assert_eq!(
            tail,
            [
                root.join("d"),
                root.join("d/rel.so"),
                root.join("a"),
                root.join("a/b"),
                root.join("a/b/lib.so")
            ]
        );
        assert!(lookups(&root.join("missing/x.so")).unwrap_err().contains("missing"));
        symlink("loop", root.join("loop")).unwrap();
        assert!(lookups(&root.join("loop")).unwrap_err().contains("symlinks"));
    }

    #[test]
    fn a_world_writable_ancestor_is_refused_naming_it() {
        let t = tempfile::tempdir().unwrap();
        let open = t.path().join("open");
        std::fs::create_dir_all(open.join("plugins")).unwrap();
        chmod(&open.join("plugins"), 0o755);
        chmod(&open, 0o777);
        let problems = check_resolution("plugin directory", &open.join("plugins"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert_eq!(p.kind, ProblemKind::InsecurePermissions);
        assert_eq!(p.files[1], std::fs::canonicalize(&open).unwrap());
        for part in ["open", "mode 777", "owner uid", "not sticky", "chmod go-w", "plugins"] {
            assert!(p.message.contains(part), "{part}: {}", p.message);
        }
        chmod(&open, 0o775);
        let m = &check_resolution("plugin directory", &open.join("plugins"))[0].message;
        assert!(m.contains("writable by group and not sticky"), "{m}");
        chmod(&open, 0o755);
        assert_eq!(check_resolution("plugin directory", &open.join("plugins")), []);
    }

    #[test]
    fn a_symlink_through_a_world_writable_directory_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let (plugins, open) = (t.path().join("plugins"), t.path().join("open"));
        std::fs::create_dir_all(open.join("sub")).unwrap();
        std::fs::create_dir(&plugins).unwrap();
        std::fs::write(open.join("sub/lib.so"), b"x").unwrap();
        chmod(&open.join("sub"), 0o755);
        chmod(&open, 0o777);
        symlink(open.join("sub/lib.so"), plugins.join("lib.so")).unwrap();
        let problems = check_resolution("plugin file", &plugins.join("lib.so"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].message.contains("open") && problems[0].message.contains("lib.so"));
    }

    #[test]
    fn a_sticky_ancestor_needs_the_entry_below_to_be_ours() {
        // /tmp itself is the usual case: sticky 1777, and the tempdir in it
        // is ours.
        let t = tempfile::tempdir().unwrap();
        let sticky = t.path().join("sticky");
        std::fs::create_dir_all(sticky.join("mine")).unwrap();
        chmod(&sticky.join("mine"), 0o755);
        chmod(&sticky, 0o1777);
        assert_eq!(check_resolution("plugin directory", &sticky.join("mine")), []);
        if effective_uid() == 0 {
            // Someone else's entry in a sticky directory is refused.
            std::os::unix::fs::chown(sticky.join("mine"), Some(54321), None).unwrap();
            let problems = check_resolution("plugin directory", &sticky.join("mine"));
            assert_eq!(problems.len(), 1, "{problems:?}");
            let m = &problems[0].message;
            assert!(
                m.contains("sticky but writable by group and others") && m.contains("owned by uid 54321"),
                "{m}"
            );
        } else {
            // Not root: the same lookup as seen by another euid, for whom
            // our directory's owner is a stranger.
            let l = Lookup {
                dir: sticky.clone(),
                entry: sticky.join("mine"),
            };
            let m = lookup_insecurity(&l, effective_uid() + 1).unwrap();
            assert!(m.contains("owned by neither root"), "{m}");
        }
    }
}
