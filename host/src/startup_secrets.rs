//! Secrets given to `kozmo serve` at start (`KOZMO_SECRET_*`,
//! `KOZMO_API_TOKEN`, `KOZMO_STORE` and `KOZMO_RESOURCES` variables,
//! `--api-token`, `--store` and `--resources` on the command line: a store
//! or Redis URL may hold a password), kept in memory only and out of reach of the processes tasks
//! start.
//!
//! Unsetting a variable is not enough: `/proc/<pid>/environ` shows a
//! process's *initial* environment block and `/proc/<pid>/cmdline` its
//! arguments (world-readable, shown by `ps`), and root reads both whatever
//! the dumpable flag says. So [`protect_serve`], called first thing in
//! `main`, re-executes the daemon (same pid, same arguments otherwise)
//! without those variables and arguments when it finds any, handing their
//! values to the new image through an anonymous memory file (`memfd`)
//! whose descriptor number is in [`HANDOFF_ENV`]. The new image reads and
//! closes it before any thread starts, and marks itself non-dumpable
//! (`PR_SET_DUMPABLE 0`), so processes of the same user can read neither
//! its memory nor its `/proc/<pid>/environ`.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use kozmo_engine::secrets::ENV_PREFIX;

/// The API token variable (for `kozmo serve` and the client commands).
pub const API_TOKEN_ENV: &str = "KOZMO_API_TOKEN";

/// The store variable: a PostgreSQL URL may carry a password.
pub const STORE_ENV: &str = "KOZMO_STORE";

/// The resource manager variable: a Redis URL may carry a password.
pub const RESOURCES_ENV: &str = "KOZMO_RESOURCES";

/// Internal: the descriptor number of the hand-over memfd in the re-executed daemon.
pub const HANDOFF_ENV: &str = "KOZMO_INTERNAL_SECRETS_FD";

/// Command-line options whose value is a secret (`--token` is the client
/// commands' global flag, accepted, and ignored, by `serve`).
const SECRET_OPTIONS: &[&str] = &["--api-token", "--token", "--store", "--resources"];

/// What the daemon was given at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// `KOZMO_SECRET_*` and `KOZMO_API_TOKEN` variables, by name.
    pub env: BTreeMap<String, String>,
    /// The value of `--api-token` on the command line (the last one given).
    pub api_token_arg: Option<String>,
    /// The value of `--store` on the command line (the last one given).
    #[serde(default)]
    pub store_arg: Option<String>,
    /// The value of `--resources` on the command line (the last one given).
    #[serde(default)]
    pub resources_arg: Option<String>,
}

impl Snapshot {
    /// The secret variables of the current environment (no arguments).
    pub fn from_current_env() -> Snapshot {
        Snapshot {
            env: std::env::vars_os()
                .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
                .filter(|(k, _)| is_secret_var(k))
                .collect(),
            api_token_arg: None,
            store_arg: None,
            resources_arg: None,
        }
    }

    /// The store from the command line, else from `KOZMO_STORE`.
    pub fn store(&self) -> Option<String> {
        self.store_arg.clone().or_else(|| self.env.get(STORE_ENV).cloned())
    }

    /// The resource manager from the command line, else from `KOZMO_RESOURCES`.
    pub fn resources(&self) -> Option<String> {
        self.resources_arg
            .clone()
            .or_else(|| self.env.get(RESOURCES_ENV).cloned())
    }

    /// The API token from the command line, else from `KOZMO_API_TOKEN`.
    pub fn api_token(&self) -> Option<String> {
        self.api_token_arg
            .clone()
            .or_else(|| self.env.get(API_TOKEN_ENV).cloned())
    }
}

static INSTALLED: OnceLock<Snapshot> = OnceLock::new();

/// Whether a variable holds a secret.
pub fn is_secret_var(name: &str) -> bool {
    name.starts_with(ENV_PREFIX) || name == API_TOKEN_ENV || name == STORE_ENV || name == RESOURCES_ENV
}

/// The secret variables: the snapshot [`protect_serve`] took at start, or,
/// in a process that never called it (library use, tests), a snapshot of
/// the environment now.
pub fn secret_env() -> BTreeMap<String, String> {
    match INSTALLED.get() {
        Some(s) => s.env.clone(),
        None => Snapshot::from_current_env().env,
    }
}

/// The secrets tasks read: the variables the daemon was started with
/// ([`secret_env`]) and, if given, files in `dir`.
pub fn host_secrets(dir: Option<std::path::PathBuf>) -> kozmo_engine::secrets::HostSecrets {
    kozmo_engine::secrets::HostSecrets::with_env(secret_env(), dir)
}

/// The API token `kozmo serve` was given (flag, else variable), if any.
pub fn api_token() -> Option<String> {
    match INSTALLED.get() {
        Some(s) => s.api_token(),
        None => Snapshot::from_current_env().api_token(),
    }
}

/// The store `kozmo serve` was given (flag, else variable), if any.
pub fn store() -> Option<String> {
    match INSTALLED.get() {
        Some(s) => s.store(),
        None => Snapshot::from_current_env().store(),
    }
}

/// The resource manager `kozmo serve` was given (flag, else variable), if any.
pub fn resources() -> Option<String> {
    match INSTALLED.get() {
        Some(s) => s.resources(),
        None => Snapshot::from_current_env().resources(),
    }
}

/// The arguments without the secret options and their values, and the
/// value of the last `--api-token`. Scanning stops at a bare `--`.
pub fn split_secret_args(args: &[OsString]) -> (Vec<OsString>, Option<String>) {
    let a = split_secret_args_all(args);
    (a.kept, a.api_token)
}

/// What [`split_secret_args_all`] found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SecretArgs {
    /// The arguments without the secret options and their values.
    pub kept: Vec<OsString>,
    /// The last `--api-token`.
    pub api_token: Option<String>,
    /// The last `--store`.
    pub store: Option<String>,
    /// The last `--resources`.
    pub resources: Option<String>,
}

/// [`split_secret_args`], and the values of the last `--store` and
/// `--resources`.
pub fn split_secret_args_all(args: &[OsString]) -> SecretArgs {
    let mut kept = Vec::with_capacity(args.len());
    let mut token = None;
    let mut store = None;
    let mut resources = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        if a.as_bytes() == b"--" {
            kept.extend(args[i..].iter().cloned());
            break;
        }
        let text = a.to_string_lossy();
        let mut matched = false;
        for opt in SECRET_OPTIONS {
            if text == *opt {
                let value = args.get(i + 1).map(|v| v.to_string_lossy().into_owned());
                match *opt {
                    "--api-token" => token = value.or(token),
                    "--store" => store = value.or(store),
                    "--resources" => resources = value.or(resources),
                    _ => {}
                }
                i += 2;
                matched = true;
                break;
            }
            if let Some(value) = text.strip_prefix(opt).and_then(|r| r.strip_prefix('=')) {
                match *opt {
                    "--api-token" => token = Some(value.to_string()),
                    "--store" => store = Some(value.to_string()),
                    "--resources" => resources = Some(value.to_string()),
                    _ => {}
                }
                i += 1;
                matched = true;
                break;
            }
        }
        if !matched {
            kept.push(a.clone());
            i += 1;
        }
    }
    SecretArgs {
        kept,
        api_token: token,
        store,
        resources,
    }
}

/// Makes the daemon's secrets unreachable by other processes; call it first
/// thing in `main` of `kozmo serve`, while the process has one thread.
///
/// Returns only in the process that goes on serving: either there was
/// nothing to hide, or this is the re-executed image (which has read the
/// hand-over). An error says why the secrets could not be hidden; the
/// daemon must then not start.
pub fn protect_serve() -> Result<(), String> {
    if let Some(fd) = std::env::var_os(HANDOFF_ENV) {
        let snapshot = read_handoff(&fd)?;
        std::env::remove_var(HANDOFF_ENV);
        let _ = INSTALLED.set(snapshot);
        return set_non_dumpable();
    }
    let args: Vec<OsString> = std::env::args_os().collect();
    let SecretArgs {
        kept,
        api_token,
        store,
        resources,
    } = split_secret_args_all(args.get(1..).unwrap_or_default());
    let snapshot = Snapshot {
        api_token_arg: api_token,
        store_arg: store,
        resources_arg: resources,
        ..Snapshot::from_current_env()
    };
    let in_env = std::env::vars_os().any(|(k, _)| k.to_str().is_some_and(is_secret_var));
    if snapshot.env.is_empty() && kept.len() + 1 == args.len() && !in_env {
        let _ = INSTALLED.set(snapshot);
        return set_non_dumpable();
    }
    let fd = write_handoff(&snapshot)?;
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg0(args.first().map(OsString::as_os_str).unwrap_or(OsStr::new("kozmo")))
        .args(&kept)
        .env_clear()
        .envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(|k| !is_secret_var(k))))
        .env(HANDOFF_ENV, fd.to_string());
    let e = cmd.exec();
    Err(format!(
        "cannot re-execute the daemon without its secrets in the environment and arguments \
         (/proc/self/exe: {e}); refusing to start with them visible to other processes"
    ))
}

/// Writes the snapshot into a memfd that stays open across exec.
fn write_handoff(snapshot: &Snapshot) -> Result<i32, String> {
    let bytes = serde_json::to_vec(snapshot).map_err(|e| format!("cannot encode the secrets hand-over: {e}"))?;
    // SAFETY: a valid NUL-terminated name; no flags, so no close-on-exec.
    let fd = unsafe { libc::memfd_create(c"kozmo-secrets".as_ptr(), 0) };
    if fd < 0 {
        return Err(format!(
            "cannot create the memory file that hands the secrets to the re-executed daemon: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: `fd` was just created and is owned here.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(&bytes)
        .map_err(|e| format!("cannot write the secrets hand-over: {e}"))?;
    Ok(file.into_raw_fd())
}

/// Reads and closes the memfd the previous image wrote.
fn read_handoff(fd: &OsStr) -> Result<Snapshot, String> {
    let fd: i32 = fd
        .to_str()
        .and_then(|s| s.parse().ok())
        .filter(|fd| *fd > 2)
        .ok_or_else(|| format!("{HANDOFF_ENV} must be a descriptor number (it is set by the daemon itself)"))?;
    // SAFETY: the descriptor was inherited for this purpose and nothing else uses it.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let mut bytes = Vec::new();
    file.seek(SeekFrom::Start(0))
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| format!("cannot read the secrets hand-over (descriptor {fd}): {e}"))?;
    drop(file);
    serde_json::from_slice(&bytes).map_err(|e| format!("the secrets hand-over is not valid: {e}"))
}

/// Reads an API token file: its first line, which must not be empty. A
/// file that group or others may read is accepted with a warning.
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "cannot read the API token file {} (api_token_file / --api-token-file / KOZMO_API_TOKEN_FILE): {e}",
            path.display()
        )
    })?;
    let token = text.lines().next().unwrap_or_default().trim_end_matches('\r');
    if token.is_empty() {
        return Err(format!(
            "the API token file {} is empty: put the token on its first line",
            path.display()
        ));
    }
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            log::warn!(
                "the API token file {} may be read by group or others (mode {:o}); chmod 600 it",
                path.display(),
                meta.permissions().mode() & 0o777
            );
        }
    }
    Ok(token.to_string())
}

/// Prefix of the variables that carry plugin settings.
pub const PLUGIN_SETTING_PREFIX: &str = "KOZMO_PLUGIN_";

/// `[plugins.settings.<id>] key = "value"` as `KOZMO_PLUGIN_<ID>_<KEY>` variables (the names
/// plugins read, `kozmo_interface::webapi::setting_var`).
pub fn plugin_setting_vars(settings: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<(String, String)> {
    settings
        .iter()
        .flat_map(|(id, kv)| {
            kv.iter()
                .map(move |(k, v)| (kozmo_interface::webapi::setting_var(id, k), v.clone()))
        })
        .collect()
}

/// `PR_SET_DUMPABLE 0`: no core dumps, and `/proc/<pid>/{environ,mem,fd}`
/// of this process are closed to other processes of the same user.
pub fn set_non_dumpable() -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(format!(
            "cannot mark the daemon non-dumpable (prctl PR_SET_DUMPABLE): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn secret_options_are_cut_out_in_both_forms() {
        let (kept, token) = split_secret_args(&os(&[
            "serve",
            "--api-token",
            "one",
            "--data-dir",
            "/d",
            "--api-token=two",
            "--token",
            "client",
            "-v",
        ]));
        assert_eq!(kept, os(&["serve", "--data-dir", "/d", "-v"]));
        assert_eq!(token.as_deref(), Some("two"));
        let (kept, token) = split_secret_args(&os(&["serve", "--listen", "127.0.0.1:0"]));
        assert_eq!(kept, os(&["serve", "--listen", "127.0.0.1:0"]));
        assert_eq!(token, None);
        let (kept, _) = split_secret_args(&os(&["serve", "--", "--api-token"]));
        assert_eq!(kept, os(&["serve", "--", "--api-token"]));
        let a = split_secret_args_all(&os(&[
            "serve",
            "--store",
            "postgres://k:pw@h/a",
            "--resources",
            "redis://:pw@h/0",
            "--store=postgres://k:pw@h/b",
            "-v",
            "--resources=redis://:pw@h/1",
        ]));
        assert_eq!(a.kept, os(&["serve", "-v"]));
        assert_eq!(a.store.as_deref(), Some("postgres://k:pw@h/b"), "the last one");
        assert_eq!(a.resources.as_deref(), Some("redis://:pw@h/1"), "the last one");
        assert!(is_secret_var(STORE_ENV) && is_secret_var(RESOURCES_ENV));
    }

    #[test]
    fn the_hand_over_round_trips_through_a_memfd() {
        let snapshot = Snapshot {
            env: BTreeMap::from([("KOZMO_SECRET_X".to_string(), "v".to_string())]),
            api_token_arg: Some("t".into()),
            store_arg: Some("postgres://k:pw@h/d".into()),
            resources_arg: Some("redis://:pw@h/0".into()),
        };
        let fd = write_handoff(&snapshot).unwrap();
        let back = read_handoff(OsStr::new(&fd.to_string())).unwrap();
        assert_eq!(back, snapshot);
        assert_eq!(back.api_token().as_deref(), Some("t"));
        assert!(is_secret_var("KOZMO_API_TOKEN") && is_secret_var("KOZMO_SECRET_A"));
        assert!(!is_secret_var("KOZMO_API_TOKEN_FILE"));
    }

    #[test]
    fn token_files_and_plugin_settings() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "tok-1\nignored\n").unwrap();
        assert_eq!(read_token_file(&f).unwrap(), "tok-1");
        std::fs::write(&f, "\n").unwrap();
        assert!(read_token_file(&f).unwrap_err().contains("empty"));
        assert!(read_token_file(&dir.path().join("none"))
            .unwrap_err()
            .contains("cannot read"));
        let settings = BTreeMap::from([(
            "shell".to_string(),
            BTreeMap::from([("run_as".to_string(), "nobody".to_string())]),
        )]);
        assert_eq!(
            plugin_setting_vars(&settings),
            [("KOZMO_PLUGIN_SHELL_RUN_AS".to_string(), "nobody".to_string())]
        );
    }
}
