//! Starting the wrapper process, checking on it, and killing its group.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::quote;
use crate::run_as::RunAs;

/// Variables passed from the daemon's environment to the command (when
/// set); everything else comes from the task's `container.env`.
pub const INHERITED_ENV: &[&str] = &[
    "PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
];

/// `PATH` when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The files of one started command, all inside its working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Files {
    /// The working directory (also the command's current directory).
    pub work_dir: PathBuf,
    /// The command's standard output.
    pub stdout: PathBuf,
    /// The command's standard error.
    pub stderr: PathBuf,
    /// Written with the exit status (`<status>\n`, one write) when the
    /// command ends; a file without its newline is not written yet.
    pub exit_code: PathBuf,
    /// The wrapper shell's own error output.
    pub wrapper_log: PathBuf,
    /// The wrapper's pid, written (by rename from [`Files::pid_tmp`]) by
    /// the wrapper's process itself, between fork and exec, so before it
    /// can run the command.
    pub pid: PathBuf,
    /// The pid before the rename.
    pub pid_tmp: PathBuf,
    /// Held (`flock`) by the wrapper for as long as it runs.
    pub lock: PathBuf,
}

impl Files {
    /// The file layout inside `work_dir`.
    pub fn in_dir(work_dir: &Path) -> Self {
        Files {
            work_dir: work_dir.to_path_buf(),
            stdout: work_dir.join("stdout"),
            stderr: work_dir.join("stderr"),
            exit_code: work_dir.join("exit_code"),
            wrapper_log: work_dir.join("wrapper.log"),
            pid: work_dir.join("pid"),
            pid_tmp: work_dir.join("pid.tmp"),
            lock: work_dir.join("lock"),
        }
    }
}

/// The descriptor number the wrapper holds the lock on (closed for the command).
pub const LOCK_FD: RawFd = 9;

/// The `/bin/sh -c` script, run in the working directory (its pid is
/// already recorded, see [`spawn`]): runs `argv` in a subshell with its
/// output redirected and without the lock descriptor, then records the exit
/// status in `exit_code` with one write of `<status>\n` (a reader that finds
/// no newline yet looks again). Paths are relative to the working
/// directory, so a command run as another user needs no access to the
/// directories above it. No helper program runs: per task, one `/bin/sh`
/// and the command's own process (a `mv` for each file, as renames, cost
/// two more processes per task: most of a short command's cost).
pub fn wrapper_script(argv: &[String]) -> String {
    format!(
        "( {cmd} ) {LOCK_FD}>&- </dev/null >stdout 2>stderr; echo $? >exit_code",
        cmd = quote::join(argv),
    )
}

/// Writes `<pid>\n` to `tmp` and renames it to `to`, with only
/// async-signal-safe system calls and no allocation: called between fork
/// and exec.
fn write_pid_file(pid: nix::libc::pid_t, tmp: &std::ffi::CStr, to: &std::ffi::CStr) -> io::Result<()> {
    use nix::libc;
    let mut digits = [0u8; 24];
    let mut at = digits.len() - 1;
    digits[at] = b'\n';
    let mut n = pid.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let text = &digits[at..];
    // SAFETY: plain system calls on NUL-terminated paths and a stack buffer.
    unsafe {
        let fd = libc::open(
            tmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_CLOEXEC,
            0o644,
        );
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let written = libc::write(fd, text.as_ptr().cast(), text.len());
        let write_error = (written != text.len() as isize).then(io::Error::last_os_error);
        if libc::close(fd) != 0 && write_error.is_none() {
            return Err(io::Error::last_os_error());
        }
        if let Some(e) = write_error {
            return Err(e);
        }
        if libc::rename(tmp.as_ptr(), to.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Tries to take an exclusive `flock` on `file` without waiting: `false`
/// when another open description of it holds one (a running wrapper).
pub fn try_lock(file: &File) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor this function borrows.
    let r = unsafe { nix::libc::flock(file.as_raw_fd(), nix::libc::LOCK_EX | nix::libc::LOCK_NB) };
    if r == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(nix::libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// What [`spawn`] started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The wrapper's pid, which is also its process group id.
    pub pid: u32,
    /// The wrapper's start time (`/proc/<pid>/stat` field 22), where known.
    pub start_ticks: Option<u64>,
}

/// Starts `argv` through the wrapper in its own process group, without
/// waiting for it. The wrapper's process records its own pid in
/// `files.pid` between fork and exec (as the `run_as` user, after the
/// switch): when that fails nothing runs and the error is returned. A detached thread reaps the child so it never lingers as
/// a zombie of this process, then calls `on_exit`: the wrapper has recorded
/// the exit status by then, so the plugin's next round finds it (the shell
/// plugin passes its execution's refresh signal, so that round runs at once
/// instead of at the next resync).
///
/// `lock_fd` (an open descriptor of `files.lock` this process holds an
/// exclusive `flock` on) becomes the wrapper's descriptor [`LOCK_FD`], so
/// the lock is held for as long as the wrapper runs. With `run_as` the
/// wrapper runs as that user (groups, group, user set after the change of
/// directory, before `/bin/sh` starts) with its `HOME`, `USER` and `LOGNAME`.
pub fn spawn(
    argv: &[String],
    env: &BTreeMap<String, String>,
    files: &Files,
    lock_fd: Option<RawFd>,
    run_as: Option<&RunAs>,
    on_exit: impl FnOnce() + Send + 'static,
) -> io::Result<Started> {
    let wrapper_log = File::create(&files.wrapper_log)?;
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(wrapper_script(argv))
        .current_dir(&files.work_dir)
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(wrapper_log)
        .process_group(0);
    for key in INHERITED_ENV {
        if let Some(v) = std::env::var_os(key) {
            cmd.env(key, v);
        } else if *key == "PATH" {
            cmd.env(key, DEFAULT_PATH);
        }
    }
    if let Some(user) = run_as {
        cmd.env("HOME", &user.home)
            .env("USER", &user.name)
            .env("LOGNAME", &user.name);
    }
    cmd.envs(env);
    // Relative to the working directory, the process's current directory by
    // then (std changes it before the closure runs): a `run_as` user needs
    // no access to the directories above it.
    let file_name = |p: &Path| {
        let name = p.file_name().map(|n| n.as_encoded_bytes()).unwrap_or_default();
        std::ffi::CString::new(name)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a file name holds a NUL byte"))
    };
    let (pid_tmp, pid_file) = (file_name(&files.pid_tmp)?, file_name(&files.pid)?);
    let ids = run_as.filter(|u| u.switches()).map(|u| {
        (
            u.uid,
            u.gid,
            u.groups.iter().map(|g| *g as nix::libc::gid_t).collect::<Vec<_>>(),
        )
    });
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            use nix::libc;
            if let Some(fd) = lock_fd {
                let ok = if fd == LOCK_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(fd, LOCK_FD) == LOCK_FD
                };
                if !ok {
                    return Err(io::Error::last_os_error());
                }
            }
            // Capabilities the daemon was given to switch users (systemd's
            // AmbientCapabilities) must not reach the command.
            let _ = libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            );
            if let Some((uid, gid, groups)) = &ids {
                if libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setgid(*gid) != 0
                    || libc::setuid(*uid) != 0
                {
                    return Err(io::Error::last_os_error());
                }
            }
            // Before exec, so before the command can run: a recorded pid
            // is what tells a later round that a wrapper started.
            write_pid_file(libc::getpid(), &pid_tmp, &pid_file)
        });
    }
    let mut child = cmd.spawn()?;
    let pid = child.id();
    let started = Started {
        pid,
        start_ticks: proc_stat(pid).map(|s| s.start_ticks),
    };
    let reaper = std::thread::Builder::new()
        .name(format!("kozmo-shell-reap-{pid}"))
        .spawn(move || {
            let _ = child.wait();
            on_exit();
        });
    if let Err(e) = reaper {
        log::warn!("shell: cannot start a reaper thread for pid {pid}: {e}; it may linger as a zombie");
    }
    Ok(started)
}

/// The parts of `/proc/<pid>/stat` this plugin uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Process state letter (`R`, `S`, `Z`, ...).
    pub state: char,
    /// Process group id.
    pub pgrp: i32,
    /// Start time in clock ticks after boot.
    pub start_ticks: u64,
}

/// Reads `/proc/<pid>/stat` (Linux); `None` where there is no such file.
pub fn proc_stat(pid: u32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_proc_stat(&text)
}

/// Parses the text of a `/proc/<pid>/stat` file. The command name (field 2)
/// may contain spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so field N is fields[N - 3].
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// What became of a wrapper process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leader {
    /// It is still running.
    Alive,
    /// It has exited (or is an unreaped zombie).
    Gone,
    /// Its pid now belongs to another process (seen after a restart).
    Reused,
}

/// Whether the wrapper `pid` that started at `start_ticks` is still running.
pub fn leader(pid: u32, start_ticks: Option<u64>) -> Leader {
    let Ok(raw) = i32::try_from(pid) else {
        return Leader::Gone;
    };
    if kill(Pid::from_raw(raw), None) == Err(Errno::ESRCH) {
        return Leader::Gone;
    }
    if let Some(stat) = proc_stat(pid) {
        if let Some(expected) = start_ticks {
            if stat.start_ticks != expected {
                return Leader::Reused;
            }
        }
        if matches!(stat.state, 'Z' | 'X' | 'x') {
            return Leader::Gone;
        }
    }
    Leader::Alive
}

/// Whether any process of group `pgid` exists.
pub fn group_exists(pgid: u32) -> bool {
    match i32::try_from(pgid) {
        Ok(raw) if raw > 1 => killpg(Pid::from_raw(raw), None) != Err(Errno::ESRCH),
        _ => false,
    }
}

fn signal_group(pgid: u32, signal: Signal) {
    if let Ok(raw) = i32::try_from(pgid) {
        // Never signal group 0 (ours) or 1 (init's).
        if raw > 1 {
            match killpg(Pid::from_raw(raw), signal) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => log::warn!("shell: cannot send {signal} to process group {pgid}: {e}"),
            }
        }
    }
}

/// How long [`terminate_group`] waits for the group to end after SIGTERM
/// before it returns and leaves the SIGKILL to a background thread.
const SYNC_WAIT: Duration = Duration::from_millis(250);

/// Sends SIGTERM to the group, and SIGKILL `grace` later if anything of it is
/// still there. Returns within about a quarter second: a group that outlives
/// that is killed by a detached thread. A group that is already gone is not
/// an error.
pub fn terminate_group(pgid: u32, grace: Duration) {
    if !group_exists(pgid) {
        return;
    }
    if grace.is_zero() {
        signal_group(pgid, Signal::SIGKILL);
        return;
    }
    signal_group(pgid, Signal::SIGTERM);
    let start = Instant::now();
    let sync_deadline = start + SYNC_WAIT.min(grace);
    while Instant::now() < sync_deadline {
        if !group_exists(pgid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let killer = move || {
        let deadline = start + grace;
        while Instant::now() < deadline {
            if !group_exists(pgid) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        if group_exists(pgid) {
            log::info!("shell: process group {pgid} outlived its {grace:?} grace period; sending SIGKILL");
            signal_group(pgid, Signal::SIGKILL);
        }
    };
    if std::thread::Builder::new()
        .name(format!("kozmo-shell-kill-{pgid}"))
        .spawn(killer)
        .is_err()
    {
        signal_group(pgid, Signal::SIGKILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_counts_fields_after_the_command_name() {
        let text = "1234 (my (odd) cmd) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        let s = parse_proc_stat(text).unwrap();
        assert_eq!(
            s,
            ProcStat {
                state: 'S',
                pgrp: 1234,
                start_ticks: 987654
            }
        );
        assert_eq!(parse_proc_stat("garbage"), None);
        assert_eq!(parse_proc_stat("1 (x) S 1"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn our_own_process_is_alive_and_a_wrong_start_time_means_reused() {
        let me = std::process::id();
        let stat = proc_stat(me).unwrap();
        assert_eq!(leader(me, Some(stat.start_ticks)), Leader::Alive);
        assert_eq!(leader(me, Some(stat.start_ticks + 1)), Leader::Reused);
    }

    #[test]
    fn a_missing_pid_is_gone() {
        // pid_max is at most 2^22 on Linux.
        assert_eq!(leader(i32::MAX as u32, None), Leader::Gone);
        assert!(!group_exists(i32::MAX as u32));
        assert!(!group_exists(0), "group 0 means the caller's own group: never used");
        terminate_group(i32::MAX as u32, Duration::from_millis(10));
    }

    #[test]
    fn the_script_quotes_the_command_and_records_the_status() {
        let s = wrapper_script(&["echo".into(), "a'b".into()]);
        assert_eq!(
            s,
            r"( 'echo' 'a'\''b' ) 9>&- </dev/null >stdout 2>stderr; echo $? >exit_code"
        );
    }

    #[test]
    fn the_pid_file_is_the_number_and_a_newline_renamed_into_place() {
        let dir = tempfile::tempdir().unwrap();
        let files = Files::in_dir(dir.path());
        let c = |p: &Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        for pid in [2, 10, 4_194_304, i32::MAX] {
            write_pid_file(pid, &c(&files.pid_tmp), &c(&files.pid)).unwrap();
            assert_eq!(std::fs::read_to_string(&files.pid).unwrap(), format!("{pid}\n"));
            assert!(!files.pid_tmp.exists());
        }
        let missing = dir.path().join("no-such-dir/pid.tmp");
        let e = write_pid_file(7, &c(&missing), &c(&files.pid)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
    }
}
