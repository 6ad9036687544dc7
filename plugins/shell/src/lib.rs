//! The `shell` plugin: runs a task's command as a local process.
//!
//! Task type `shell` (plugin id `shell`, not the default plugin).
//!
//! ## The task
//!
//! ```json
//! {
//!   "type": "shell",
//!   "container": {
//!     "command": ["sh", "-c", "echo \"hello, $1 from $GREETER\"", "sh"],
//!     "args": ["{{ .Inputs.name }}"],
//!     "env": {"GREETER": "kozmo"}
//!   },
//!   "custom": {"timeout_kill_grace_ms": 2000},
//!   "inputs": {"name": "world"}
//! }
//! ```
//!
//! * `container.command` followed by `container.args` is the program and its
//!   arguments (no shell is involved unless you call one). Each string is
//!   rendered with [`kozmo_interface::template::render`] first:
//!   `{{ .Inputs.<name> }}`, `{{ .RawOutputDataPrefix }}`,
//!   `{{ .PerRetryUniqueKey }}`, ... A template error fails the task
//!   permanently (`TemplateError`).
//!
//! ## ⚠ Safe templating: never template inputs into a `sh -c` script
//!
//! **Rendered values are not shell-escaped.** An input templated *into the
//! script string* of `sh -c` becomes shell code: with input
//! `x = "hi; touch pwned"`,
//!
//! ```text
//! "command": ["sh", "-c", "echo {{ .Inputs.x }}"]      <- UNSAFE: runs `touch pwned`
//! ```
//!
//! runs the `touch`. Pass inputs as **positional arguments** instead: each
//! rendered argument reaches the script as one word (`$1`, `$2`, ...),
//! whatever it contains, and is used quoted:
//!
//! ```text
//! "command": ["sh", "-c", "echo \"$1\"", "sh"],       <- safe: prints `hi; touch pwned`
//! "args": ["{{ .Inputs.x }}"]
//! ```
//!
//! (the `sh` after the script is `$0`). The example above and
//! `examples/shell-hello.json` do this. Without `sh -c` at all (a program
//! and its arguments) templating is safe: no shell parses the arguments.
//! * The environment is **not** the daemon's: the command gets `PATH`
//!   (default `/usr/local/bin:/usr/bin:/bin`), `HOME`, `USER`, `LOGNAME`,
//!   `LANG`, `LC_ALL`, `LC_CTYPE`, `TZ` and `TMPDIR` from the daemon when
//!   set, then `container.env` on top.
//! * Standard input is `/dev/null`; the current directory is the attempt's
//!   working directory (below).
//! * `custom` (optional): `timeout_kill_grace_ms` (default 2000, at most
//!   600000): on abort,
//!   how long the process group has between SIGTERM and SIGKILL. Unknown
//!   keys are rejected (`BadConfig`).
//!
//! ## Outputs
//!
//! * exit status 0: Success with outputs `exit_code` (integer, 0) and
//!   `stdout` (string: the standard output without one trailing newline, at
//!   most 1 MiB, or half the host's `max_dataset_size_bytes` if smaller; a
//!   longer output is cut and a note says so).
//! * any other status: RetryableFailure, kind USER, code `NonZeroExit`, with
//!   the status and the last lines of standard error in the message (a
//!   command killed by signal N reports 128+N, as the shell does).
//! * Either way standard output and error are copied to the data store at
//!   `<raw output prefix>/stdout` and `<raw output prefix>/stderr` (at most
//!   32 MiB each) and the task's logs (`TaskInfo::logs`, names `stdout` and
//!   `stderr`) point there.
//!
//! ## How it runs
//!
//! `handle` never waits for the command. The first round creates the
//! attempt's working directory — `<raw output prefix>/shell` when the raw
//! output prefix is an absolute path or a `file://` URL (the daemon's local
//! data store; the prefix is per attempt), else
//! `$TMPDIR/kozmo-shell/<generated name>-<hash of the attempt's id>`; the
//! same in every round and every process — takes an exclusive `flock` on
//! its `lock` file and starts, in that directory and a new process group
//! holding the lock on descriptor 9,
//!
//! ```text
//! /bin/sh -c "( 'prog' 'arg' ... ) 9>&- </dev/null >stdout 2>stderr; echo $? >exit_code"
//! ```
//!
//! whose process has recorded its own pid in `pid` (written to `pid.tmp`
//! and renamed, between fork and exec: before anything can run; if that
//! fails nothing runs and the round fails). `exit_code` is one write of
//! `<status>\n`: a file without its newline is not written yet.
//!
//! then reports Running (version 1) with logs pointing at the local
//! `stdout`/`stderr` files. The plugin state ([`ShellState`]) holds the
//! pid/pgid and the paths. Later rounds look for the `exit_code` file;
//! since the wrapper writes it, the result is found even by a restarted
//! daemon whose child the process no longer is. The round that finds it
//! runs as soon as the command ends: a thread of the plugin waits for the
//! wrapper and then signals the execution (`task_refresh_indicator`), so a
//! command that takes milliseconds completes in milliseconds, not at the
//! daemon's next resync. A command adopted after a restart (no longer a
//! child) is looked at by the daemon's resync timer instead
//! (`--resync-interval-secs`). A wrapper that is gone
//! without an exit code (killed from outside, machine rebooted) gives a
//! SYSTEM RetryableFailure `ProcessVanished`.
//!
//! ## After a crash: the command runs once
//!
//! If the daemon dies after starting the command but before the round that
//! started it was committed, the next daemon's first round has no plugin
//! state — and finds the working directory instead: an `exit_code` there is
//! adopted as the result; a held lock means the wrapper still runs, and it
//! is adopted by the pid it recorded (no pid yet: Running, looked at again
//! next round); a free lock with a recorded pid means a wrapper ran and
//! ended without a status (`ProcessVanished`, never a second start). Only
//! when no wrapper ever recorded a pid — so none ran the command — is it
//! started.
//!
//! ## Write failures
//!
//! A working directory, lock or wrapper that cannot be written because the
//! disk (or quota) is full or the file system is read-only is a handler
//! error of the round (`ShellWriteFailed`, counted by the daemon and shown
//! on the execution), not a silent Running; so is a wrapper that ended
//! without being able to record its pid or exit status.
//!
//! ## Running commands as another user (`run_as`)
//!
//! With the daemon setting `[plugins.settings.shell] run_as = "<user>"`
//! (or the variable `KOZMO_PLUGIN_SHELL_RUN_AS`), commands run as that
//! user, with its groups and its `HOME`, `USER` and `LOGNAME`; the working
//! directory is given to that user. The daemon must be root or have
//! `CAP_SETUID`, `CAP_SETGID` and `CAP_CHOWN`, and the user must exist, or
//! the plugin fails to load with a message saying so. With the data
//! directory mode 0700 and owned by the daemon's user, the command can use
//! its working directory (by relative paths: it starts there) but cannot
//! read `kozmo.db` or other tasks' files. See [`run_as`].
//!
//! `abort` sends SIGTERM to the whole process group and SIGKILL after the
//! grace period to whatever is left; it returns within a quarter second (a
//! background thread sends the SIGKILL). `finalize` releases nothing and
//! keeps the files.

#![deny(missing_docs)]

#[cfg(not(unix))]
compile_error!("the shell plugin needs a Unix system (process groups, /bin/sh)");

pub mod process;
pub mod quote;
pub mod run_as;

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use kozmo_interface::kit::{now_ms, TaskContextExt};
use kozmo_interface::serde_json::{self, json};
use kozmo_interface::task::TaskTemplate;
use kozmo_interface::template::{render, Parameters};
use kozmo_interface::{
    Literal, LiteralMap, PhaseInfo, Plugin, PluginEntry, PluginError, PluginLoader, PluginStateReaderExt,
    PluginStateWriterExt, Result, TaskExecutionContext, TaskInfo, TaskLog, Transition,
};
use serde::{Deserialize, Serialize};

use crate::process::{Files, Leader};
use crate::run_as::RunAs;

/// Version given to the plugin state.
pub const STATE_VERSION: u8 = 1;

/// Phase version of the Running phase (one event when the command starts).
pub const RUNNING_VERSION: u32 = 1;

/// Largest `stdout` output value, in bytes.
pub const MAX_STDOUT_OUTPUT: usize = 1024 * 1024;

/// Largest copy of standard output or error written to the data store.
pub const MAX_DATA_STORE_COPY: u64 = 32 * 1024 * 1024;

/// How many lines of standard error a `NonZeroExit` message quotes.
pub const STDERR_TAIL_LINES: usize = 20;

/// Default of `timeout_kill_grace_ms`.
pub const DEFAULT_KILL_GRACE_MS: u64 = 2000;

/// Largest `timeout_kill_grace_ms`: ten minutes (a longer grace would leave
/// an aborted command's group running for good, in effect).
pub const MAX_KILL_GRACE_MS: u64 = 600_000;

/// The task's `custom` configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShellConfig {
    /// On abort: milliseconds between SIGTERM and SIGKILL.
    pub timeout_kill_grace_ms: u64,
}

impl Default for ShellConfig {
    fn default() -> Self {
        ShellConfig {
            timeout_kill_grace_ms: DEFAULT_KILL_GRACE_MS,
        }
    }
}

impl ShellConfig {
    /// Reads the configuration from a task's `custom` JSON (`null` = defaults).
    pub fn from_custom(custom: &serde_json::Value) -> std::result::Result<Self, String> {
        if custom.is_null() {
            return Ok(ShellConfig::default());
        }
        let config: ShellConfig = serde_json::from_value(custom.clone())
            .map_err(|e| format!("invalid shell task configuration (custom): {e}"))?;
        if config.timeout_kill_grace_ms > MAX_KILL_GRACE_MS {
            return Err(format!(
                "invalid shell task configuration (custom): timeout_kill_grace_ms is {}, at most {MAX_KILL_GRACE_MS} \
                 (ten minutes) is allowed",
                config.timeout_kill_grace_ms
            ));
        }
        Ok(config)
    }
}

/// What the plugin remembers between rounds about a started command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShellState {
    /// The wrapper shell's pid.
    pub pid: u32,
    /// Its process group id (equal to `pid`: the wrapper leads the group).
    pub pgid: u32,
    /// The wrapper's start time in clock ticks (Linux), to notice a reused pid.
    pub start_ticks: Option<u64>,
    /// The attempt's working directory.
    pub work_dir: String,
    /// Standard output file.
    pub stdout_path: String,
    /// Standard error file.
    pub stderr_path: String,
    /// Exit status file (present once the command has ended).
    pub exit_code_path: String,
    /// When the command was started, in milliseconds since the Unix epoch.
    pub started_at_ms: u64,
}

impl ShellState {
    fn files(&self) -> Files {
        Files {
            stdout: PathBuf::from(&self.stdout_path),
            stderr: PathBuf::from(&self.stderr_path),
            exit_code: PathBuf::from(&self.exit_code_path),
            ..Files::in_dir(Path::new(&self.work_dir))
        }
    }

    /// The state of a command found in its working directory: `pid` as the
    /// wrapper recorded it (the start time read now, if it still runs).
    fn adopted(files: &Files, pid: u32) -> ShellState {
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let started_at_ms = fs::metadata(&files.pid)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as u64)
            .unwrap_or_else(now_ms);
        ShellState {
            pid,
            pgid: pid,
            start_ticks: process::proc_stat(pid)
                .filter(|s| s.pgrp as i64 == i64::from(pid))
                .map(|s| s.start_ticks),
            work_dir: path(&files.work_dir),
            stdout_path: path(&files.stdout),
            stderr_path: path(&files.stderr),
            exit_code_path: path(&files.exit_code),
            started_at_ms,
        }
    }
}

/// FNV-1a (64 bits): a stable hash for directory names.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Where the working directory of an attempt goes. It is the same in
/// every round of the attempt, in every process, so a restarted daemon
/// finds the command an earlier round started: `<raw output prefix>/shell`
/// when the prefix is local (it is per attempt), else
/// `$TMPDIR/kozmo-shell/<generated name>-<hash of the attempt's id>`.
pub fn work_dir_for(raw_output_prefix: &str, generated_name: &str, attempt_id: &str) -> PathBuf {
    match kozmo_interface::io::local_dir(raw_output_prefix) {
        Some(dir) => dir.join("shell"),
        None => {
            let name: String = generated_name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let hash = fnv1a(format!("{raw_output_prefix}\n{attempt_id}").as_bytes());
            std::env::temp_dir()
                .join("kozmo-shell")
                .join(format!("{name}-{hash:016x}"))
        }
    }
}

/// Joins a data-store reference and a name with one `/`.
fn join_ref(prefix: &str, name: &str) -> String {
    format!("{}/{name}", prefix.trim_end_matches('/'))
}

fn log_links(stdout: String, stderr: String) -> Vec<TaskLog> {
    vec![
        TaskLog {
            name: "stdout".into(),
            uri: stdout,
            ..TaskLog::default()
        },
        TaskLog {
            name: "stderr".into(),
            uri: stderr,
            ..TaskLog::default()
        },
    ]
}

/// Reads at most `limit` bytes from the start of a file; a missing file is
/// empty. Returns the bytes and the file's whole size.
fn read_head(path: &Path, limit: u64) -> std::io::Result<(Vec<u8>, u64)> {
    let file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), 0)),
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    let mut bytes = Vec::new();
    file.take(limit).read_to_end(&mut bytes)?;
    Ok((bytes, size))
}

/// The last `lines` lines of a file (reading at most its last 64 KiB).
fn read_tail_lines(path: &Path, lines: usize) -> String {
    const WINDOW: u64 = 64 * 1024;
    let Ok(mut file) = fs::File::open(path) else {
        return String::new();
    };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = size.saturating_sub(WINDOW);
    if file.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.trim_end_matches('\n').lines().collect();
    let from = all.len().saturating_sub(lines);
    let mut tail = all[from..].join("\n");
    const MAX_TAIL_CHARS: usize = 4096;
    if tail.len() > MAX_TAIL_CHARS {
        let mut cut = tail.len() - MAX_TAIL_CHARS;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = format!("...{}", &tail[cut..]);
    }
    tail
}

/// Cuts `bytes` to at most `limit` bytes on a character boundary, as text.
fn text_prefix(bytes: &[u8], limit: usize) -> String {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(limit.saturating_add(4))]);
    if text.len() <= limit {
        return text.into_owned();
    }
    let mut cut = limit;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_string()
}

/// The `stdout` output value: the text without one trailing newline, cut to
/// `limit` bytes with a note when longer.
pub fn stdout_value(bytes: &[u8], total_size: u64, limit: usize) -> String {
    if (total_size as usize) <= limit && bytes.len() as u64 == total_size {
        let text = String::from_utf8_lossy(bytes);
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(&text);
        return text.to_string();
    }
    let note = format!("\n[kozmo shell: output truncated to {limit} of {total_size} bytes; see the stdout log]");
    let mut text = text_prefix(bytes, limit.saturating_sub(note.len()));
    text.push_str(&note);
    text
}

/// The bytes copied to the data store: the head of the file, with a note
/// when the file is longer.
fn store_copy(head: &[u8], total_size: u64, path: &Path) -> Vec<u8> {
    let mut copy = head.to_vec();
    if total_size > head.len() as u64 {
        let note = format!(
            "\n[kozmo shell: truncated to {} of {total_size} bytes; full file: {}]\n",
            head.len(),
            path.display()
        );
        copy.extend_from_slice(note.as_bytes());
    }
    copy
}

/// The first bytes of a small file the wrapper writes (a pid, a status):
/// never more, whatever the file is.
fn read_small(path: &Path) -> Option<String> {
    let mut text = String::new();
    fs::File::open(path).ok()?.take(32).read_to_string(&mut text).ok()?;
    Some(text)
}

/// Reads the pid the wrapper recorded, if it has.
fn read_pid(path: &Path) -> Option<u32> {
    let text = read_small(path)?;
    text.strip_suffix('\n')?.trim().parse().ok().filter(|p| *p > 1)
}

/// Whether an I/O error means the disk (or quota) is full or read-only.
fn is_storage_error(e: &std::io::Error) -> bool {
    use nix::libc::{EDQUOT, ENOSPC, EROFS};
    matches!(e.raw_os_error(), Some(ENOSPC | EDQUOT | EROFS))
}

/// A write the plugin could not make: a handler error (the round is tried
/// again, and counted), never a silent Running.
fn write_failed(what: &str, path: &Path, e: &std::io::Error) -> PluginError {
    PluginError::system("ShellWriteFailed", format!("cannot {what} {}: {e}", path.display()))
}

/// A wrapper that is gone without an exit status because it could not
/// write it: the write failure, with the wrapper's own error output. (Its
/// pid is written before it starts: a failure there fails the round that
/// starts it.)
fn lost_write(files: &Files) -> Option<PluginError> {
    // The redirection created the file but the write into it failed. A
    // wrapper killed between the two (an abort right after the command
    // ended) leaves the same file, so it counts as a write failure only when
    // the shell said why (its error output) or the file system has no room
    // left.
    if !fs::metadata(&files.exit_code).is_ok_and(|m| m.len() == 0) {
        return None;
    }
    let what = "record the command's exit status";
    let log = read_tail_lines(&files.wrapper_log, 5);
    let no_room = nix::sys::statvfs::statvfs(&files.work_dir).is_ok_and(|v| v.blocks_available() == 0);
    if log.is_empty() && !no_room {
        return None;
    }
    Some(PluginError::system(
        "ShellWriteFailed",
        format!(
            "the wrapper of the command could not {what} in {} (is the disk full or read-only?){}",
            files.work_dir.display(),
            if log.is_empty() {
                String::new()
            } else {
                format!("; it said: {log}")
            }
        ),
    ))
}

/// Reads the exit status the wrapper recorded, if it has: `<status>\n`,
/// written in one write; a file read while it is written lacks the newline
/// and counts as not written yet.
fn read_exit_code(path: &Path) -> Option<i64> {
    read_small(path)?.strip_suffix('\n')?.trim().parse().ok()
}

/// Runs the task's command as a local process (see the crate docs).
#[derive(Debug, Default)]
pub struct Shell {
    /// The user commands run as (`run_as`), `None` for the daemon's.
    run_as: Option<RunAs>,
}

impl Shell {
    /// A plugin that runs commands as `run_as` (`None`: the daemon's user).
    pub fn new(run_as: Option<RunAs>) -> Self {
        Shell { run_as }
    }
}

impl Shell {
    fn start(&self, ctx: &dyn TaskExecutionContext) -> Result<PhaseInfo> {
        let template: TaskTemplate = ctx.task_reader().read()?;
        if let Err(message) = ShellConfig::from_custom(&template.custom) {
            return Ok(PhaseInfo::failure("BadConfig", message, None));
        }
        let container = template.container.unwrap_or_default();
        let argv: Vec<String> = container.command.iter().chain(&container.args).cloned().collect();
        if argv.is_empty() {
            return Ok(PhaseInfo::failure(
                "NoCommand",
                "a shell task needs a command: set container.command (and container.args)",
                None,
            ));
        }
        let params = Parameters {
            task_exec_metadata: ctx.task_execution_metadata(),
            inputs: Some(ctx.input_reader()),
            output_path: Some(ctx.output_writer()),
            task: Some(ctx.task_reader()),
        };
        let argv = match render(&argv, &params) {
            Ok(argv) => argv,
            Err(e) => {
                return Ok(PhaseInfo::failure(
                    "TemplateError",
                    format!("cannot render the command: {}", e.message),
                    None,
                ))
            }
        };
        let nul = argv.iter().any(|a| a.contains('\0'))
            || container
                .env
                .iter()
                .any(|(k, v)| k.is_empty() || k.contains(['=', '\0']) || v.contains('\0'));
        if nul {
            return Ok(PhaseInfo::failure(
                "BadCommand",
                "the command, its arguments and environment must not contain NUL bytes; \
                 variable names must be non-empty and must not contain '='",
                None,
            ));
        }

        let exec_id = ctx.task_execution_metadata().task_execution_id();
        let generated_name = exec_id.generated_name();
        let attempt_id = serde_json::to_string(exec_id.id()).unwrap_or_default();
        let work_dir = work_dir_for(&ctx.output_writer().raw_output_prefix(), generated_name, &attempt_id);
        if let Err(e) = fs::create_dir_all(&work_dir) {
            if is_storage_error(&e) {
                return Err(write_failed("create the working directory", &work_dir, &e));
            }
            return Ok(PhaseInfo::system_retryable_failure(
                "WorkDirFailed",
                format!("cannot create the working directory {}: {e}", work_dir.display()),
                None,
            ));
        }
        let files = Files::in_dir(&work_dir);

        // An earlier round of this attempt may have started the command and
        // then lost its state (the daemon died before the round was
        // committed): adopt that command instead of starting it again.
        if let Some(info) = self.adopt(ctx, &files, generated_name)? {
            return Ok(info);
        }
        let lock = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&files.lock)
            .map_err(|e| write_failed("create the lock file", &files.lock, &e))?;
        match process::try_lock(&lock) {
            Ok(true) => {}
            Ok(false) => return self.adopt_locked(ctx, &files, true),
            Err(e) => return Err(write_failed("lock", &files.lock, &e)),
        }
        // The lock is ours: no wrapper of this attempt runs. One that ran
        // and recorded its pid may have started the command; never again.
        if files.pid.exists() || files.exit_code.exists() {
            drop(lock);
            return match self.adopt(ctx, &files, generated_name)? {
                Some(info) => Ok(info),
                None => self.adopt_locked(ctx, &files, false),
            };
        }
        if let Some(user) = &self.run_as {
            if user.switches() {
                if let Err(e) = std::os::unix::fs::chown(&work_dir, Some(user.uid), Some(user.gid)) {
                    return Ok(PhaseInfo::system_retryable_failure(
                        "RunAsFailed",
                        format!(
                            "cannot give the working directory {} to user [{}] (run_as): {e}",
                            work_dir.display(),
                            user.name
                        ),
                        None,
                    ));
                }
            }
        }
        let refresh = ctx.task_refresh_indicator();
        let started = match process::spawn(
            &argv,
            &container.env,
            &files,
            Some(lock.as_raw_fd()),
            self.run_as.as_ref(),
            move || refresh.signal(),
        ) {
            Ok(s) => s,
            Err(e) if is_storage_error(&e) => return Err(write_failed("start the command", &work_dir, &e)),
            Err(e) => {
                return Ok(PhaseInfo::system_retryable_failure(
                    "SpawnFailed",
                    format!("cannot start /bin/sh for the command: {e}"),
                    None,
                ))
            }
        };
        // The wrapper holds the lock now (its own descriptor of it).
        drop(lock);
        let path = |p: &Path| p.to_string_lossy().into_owned();
        let state = ShellState {
            pid: started.pid,
            pgid: started.pid,
            start_ticks: started.start_ticks,
            work_dir: path(&files.work_dir),
            stdout_path: path(&files.stdout),
            stderr_path: path(&files.stderr),
            exit_code_path: path(&files.exit_code),
            started_at_ms: now_ms(),
        };
        log::info!(
            "shell: {generated_name} started pid {} in {}{}: {}",
            state.pid,
            state.work_dir,
            self.run_as
                .as_ref()
                .map(|u| format!(" as user {}", u.name))
                .unwrap_or_default(),
            quote::join(&argv)
        );
        if let Err(e) = ctx.plugin_state_writer().put(STATE_VERSION, &state) {
            // Without state no later round could find this process: stop it.
            process::terminate_group(state.pgid, Duration::ZERO);
            return Err(e);
        }
        Ok(PhaseInfo::running(RUNNING_VERSION, Some(running_info(&state))))
    }

    /// A command an earlier round started, found by its files: the result
    /// when it has finished, else `None`.
    fn adopt(&self, ctx: &dyn TaskExecutionContext, files: &Files, name: &str) -> Result<Option<PhaseInfo>> {
        if read_exit_code(&files.exit_code).is_none() {
            return Ok(None);
        }
        let pid = read_pid(&files.pid).unwrap_or(0);
        log::info!(
            "shell: {name}: the command in {} already ran (pid {pid}); adopting its result instead of starting it again",
            files.work_dir.display()
        );
        let state = ShellState::adopted(files, pid);
        ctx.plugin_state_writer().put(STATE_VERSION, &state)?;
        self.poll(ctx, &state).map(Some)
    }

    /// The lock is held (`held`: a wrapper runs), or a wrapper that ended
    /// recorded its pid: adopt that wrapper. A held lock but no pid yet (the
    /// wrapper is just starting): Running without state; the next round
    /// looks again.
    fn adopt_locked(&self, ctx: &dyn TaskExecutionContext, files: &Files, held: bool) -> Result<PhaseInfo> {
        let Some(pid) = read_pid(&files.pid) else {
            log::info!(
                "shell: a wrapper in {} is starting; looking again next round",
                files.work_dir.display()
            );
            return Ok(PhaseInfo::running(RUNNING_VERSION, None));
        };
        log::info!(
            "shell: the command in {} was started by an earlier round (pid {pid}); adopting it instead of starting it again",
            files.work_dir.display()
        );
        let state = ShellState::adopted(files, pid);
        ctx.plugin_state_writer().put(STATE_VERSION, &state)?;
        if held {
            self.poll(ctx, &state)
        } else {
            // Whatever has that pid now, it is not the wrapper (which would hold the lock).
            self.poll_with(ctx, &state, Leader::Gone)
        }
    }

    fn poll(&self, ctx: &dyn TaskExecutionContext, state: &ShellState) -> Result<PhaseInfo> {
        let files = state.files();
        if let Some(code) = read_exit_code(&files.exit_code) {
            return self.finish(ctx, state, code);
        }
        self.poll_with(ctx, state, process::leader(state.pid, state.start_ticks))
    }

    /// [`Shell::poll`] once what became of the wrapper is known.
    fn poll_with(&self, ctx: &dyn TaskExecutionContext, state: &ShellState, leader: Leader) -> Result<PhaseInfo> {
        let files = state.files();
        match leader {
            Leader::Alive => Ok(PhaseInfo::running(RUNNING_VERSION, Some(running_info(state)))),
            gone => {
                // It may have written its status just before it exited.
                if let Some(code) = read_exit_code(&files.exit_code) {
                    return self.finish(ctx, state, code);
                }
                if let Some(e) = lost_write(&files) {
                    return Err(e);
                }
                let how = if gone == Leader::Reused {
                    "its pid now belongs to another process"
                } else {
                    "it is no longer running"
                };
                Ok(PhaseInfo::system_retryable_failure(
                    "ProcessVanished",
                    format!(
                        "the command's process {} ended without recording an exit status ({how}); \
                         it was probably killed from outside. Output so far: {}",
                        state.pid, state.work_dir
                    ),
                    Some(running_info(state)),
                ))
            }
        }
    }

    fn finish(&self, ctx: &dyn TaskExecutionContext, state: &ShellState, code: i64) -> Result<PhaseInfo> {
        let files = state.files();
        let raw = ctx.output_writer().raw_output_prefix();
        let stdout_ref = join_ref(&raw, "stdout");
        let stderr_ref = join_ref(&raw, "stderr");
        let (stdout, stdout_size) = read_head(&files.stdout, MAX_DATA_STORE_COPY)?;
        let (stderr, stderr_size) = read_head(&files.stderr, MAX_DATA_STORE_COPY)?;
        ctx.data_store()
            .write_raw(&stdout_ref, &store_copy(&stdout, stdout_size, &files.stdout))?;
        ctx.data_store()
            .write_raw(&stderr_ref, &store_copy(&stderr, stderr_size, &files.stderr))?;
        let elapsed_ms = now_ms().saturating_sub(state.started_at_ms);
        let info = TaskInfo {
            logs: log_links(stdout_ref, stderr_ref),
            custom_info: json!({ "pid": state.pid, "work_dir": state.work_dir, "exit_code": code, "elapsed_ms": elapsed_ms }),
            ..TaskInfo::default()
        };
        log::info!(
            "shell: {} pid {} exited with status {code}",
            ctx.generated_name(),
            state.pid
        );
        if code == 0 {
            let mut limit = MAX_STDOUT_OUTPUT;
            let max_doc = ctx.max_dataset_size_bytes();
            if max_doc > 0 {
                limit = limit.min((max_doc / 2) as usize);
            }
            let outputs = LiteralMap::from([
                ("exit_code".to_string(), Literal::Integer(0)),
                (
                    "stdout".to_string(),
                    Literal::String(stdout_value(&stdout, stdout_size, limit)),
                ),
            ]);
            ctx.output_writer().put_outputs(outputs)?;
            return Ok(PhaseInfo::success(Some(info)));
        }
        let tail = read_tail_lines(&files.stderr, STDERR_TAIL_LINES);
        let message = if tail.is_empty() {
            format!("the command exited with status {code} (standard error is empty)")
        } else {
            format!("the command exited with status {code}; last lines of standard error:\n{tail}")
        };
        Ok(PhaseInfo::retryable_failure("NonZeroExit", message, Some(info)))
    }
}

fn running_info(state: &ShellState) -> TaskInfo {
    TaskInfo {
        logs: log_links(state.stdout_path.clone(), state.stderr_path.clone()),
        custom_info: json!({ "pid": state.pid, "work_dir": state.work_dir }),
        ..TaskInfo::default()
    }
}

impl Plugin for Shell {
    fn id(&self) -> &str {
        "shell"
    }

    fn handle(&self, ctx: &dyn TaskExecutionContext) -> Result<Transition> {
        let (_, state) = ctx.plugin_state_reader().get::<ShellState>()?;
        let info = match state {
            None => self.start(ctx)?,
            Some(state) => self.poll(ctx, &state)?,
        };
        Ok(Transition::ephemeral(info))
    }

    fn abort(&self, ctx: &dyn TaskExecutionContext) -> Result<()> {
        let (_, state) = ctx.plugin_state_reader().get::<ShellState>()?;
        let Some(state) = state else {
            return Ok(()); // never started
        };
        if process::leader(state.pid, state.start_ticks) == Leader::Reused {
            // The group ended long ago and its id may be someone else's now.
            log::info!(
                "shell: pid {} was reused; nothing of the task is left to kill",
                state.pid
            );
            return Ok(());
        }
        let grace = ctx
            .task_reader()
            .read()
            .ok()
            .and_then(|t| ShellConfig::from_custom(&t.custom).ok())
            .unwrap_or_default()
            .timeout_kill_grace_ms;
        log::info!("shell: aborting process group {}", state.pgid);
        process::terminate_group(state.pgid, Duration::from_millis(grace));
        Ok(())
    }

    fn finalize(&self, _ctx: &dyn TaskExecutionContext) -> Result<()> {
        // Nothing to release: the process has ended or was aborted; the files stay.
        Ok(())
    }
}

/// The entry: id `shell`, task type `shell`.
pub fn entry() -> PluginEntry {
    PluginEntry {
        id: "shell".into(),
        registered_task_types: vec!["shell".into()],
        load_plugin: PluginLoader::new(|_setup| {
            let run_as = RunAs::from_env().map_err(|m| PluginError::user("BadConfig", m))?;
            if let Some(user) = &run_as {
                log::info!("shell: commands run as user {} (uid {})", user.name, user.uid);
            }
            Ok(Box::new(Shell::new(run_as)))
        }),
        is_default: false,
    }
}

kozmo_interface::export_plugins![entry()];

#[cfg(test)]
mod lost_write_tests {
    use super::*;

    #[test]
    fn an_empty_exit_code_file_is_a_write_failure_only_when_the_shell_said_so() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::in_dir(dir.path());
        fs::write(&files.wrapper_log, "").unwrap();
        assert!(lost_write(&files).is_none(), "no exit_code file: not a write failure");
        fs::write(&files.exit_code, "").unwrap();
        // Killed between creating exit_code and writing it (room on the
        // disk, nothing said): not a write failure.
        assert!(lost_write(&files).is_none());
        fs::write(&files.wrapper_log, "sh: echo: I/O error: No space left on device\n").unwrap();
        let e = lost_write(&files).expect("the shell said the write failed");
        assert_eq!(e.code, "ShellWriteFailed");
        assert!(
            e.message.contains("exit status") && e.message.contains("No space left"),
            "{}",
            e.message
        );
        fs::write(&files.exit_code, "0\n").unwrap();
        assert!(lost_write(&files).is_none(), "a written status is no failure");
    }

    #[test]
    fn small_files_are_read_to_their_newline_and_never_far() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exit_code");
        for (text, code) in [("0\n", Some(0)), ("127\n", Some(127)), ("12", None), ("", None)] {
            fs::write(&p, text).unwrap();
            assert_eq!(read_exit_code(&p), code, "{text:?}");
        }
        // A device that never ends (what a hostile symlink could point at).
        assert_eq!(read_exit_code(Path::new("/dev/zero")), None);
        assert_eq!(read_pid(Path::new("/dev/zero")), None);
    }
}
