//! Starting a plugin's child process: its command line, the environment it
//! gets (no secrets, no API token), its memory cap, the death signal that
//! takes it down with the daemon; and how its end is described.
//!
//! Children are forked by one long-lived thread: `PR_SET_PDEATHSIG` fires
//! when the *thread* that forked the child ends, so forking from a worker or
//! a test thread that later exits would kill a healthy child.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "__plugin-host";

/// Environment variables a child keeps, with the plugin settings
/// (`KOZMO_PLUGIN_*`); everything else (`KOZMO_SECRET_*`, `KOZMO_API_TOKEN`,
/// `RUST_LOG`, ...) is dropped. Secrets reach the child's plugin over the
/// control connection, one `SecretManager::get` at a time.
pub const KEPT_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "LD_LIBRARY_PATH",
    "RUST_BACKTRACE",
    "RUST_MIN_STACK",
];

/// What to start.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The `kozmo` executable.
    pub exe: PathBuf,
    /// The library the child opens (resolved).
    pub library: PathBuf,
    /// The file as the plugin directory lists it, for messages.
    pub file: PathBuf,
    /// The plugin ids it hosts, for its log records.
    pub label: String,
    /// RLIMIT_AS in MiB.
    pub memory_mb: Option<u64>,
}

/// A started child and the daemon's end of its control connection.
pub struct Spawned {
    /// The process.
    pub child: Child,
    /// The control connection.
    pub control: UnixStream,
}

type Request = (ChildSpec, mpsc::Sender<io::Result<Spawned>>);

/// Starts a child on the spawner thread.
pub fn spawn(spec: ChildSpec) -> io::Result<Spawned> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Request>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("kozmo-plugin-spawner".into())
            .spawn(move || {
                for (spec, reply) in rx {
                    let _ = reply.send(spawn_here(&spec));
                }
            })
            .expect("cannot start the plugin spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    kozmo_engine::sync::lock(spawner)
        .send((spec, tx))
        .map_err(|_| io::Error::other("the plugin spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| io::Error::other("the plugin spawner thread is gone"))?
}

fn spawn_here(spec: &ChildSpec) -> io::Result<Spawned> {
    let (ours, theirs) = UnixStream::pair()?;
    let fd = theirs.as_raw_fd();
    let mut cmd = Command::new(&spec.exe);
    cmd.arg(SUBCOMMAND)
        .arg("--library")
        .arg(&spec.library)
        .arg("--file")
        .arg(&spec.file)
        .arg("--control-fd")
        .arg(fd.to_string())
        .arg("--label")
        .arg(&spec.label)
        .arg("--log-level")
        .arg((log::max_level() as usize).to_string())
        .env_clear()
        .envs(KEPT_ENV.iter().filter_map(|k| std::env::var_os(k).map(|v| (k, v))))
        .envs(std::env::vars_os().filter(|(k, _)| {
            k.to_str()
                .is_some_and(|k| k.starts_with(crate::startup_secrets::PLUGIN_SETTING_PREFIX))
        }))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: getpid before the fork; the closure runs between fork and exec
    // and makes only async-signal-safe system calls.
    let parent = unsafe { libc::getpid() };
    let limit = spec.memory_mb.map(|mb| mb.saturating_mul(1 << 20));
    unsafe {
        cmd.pre_exec(move || {
            // Keep the control socket across exec (std opens it close-on-exec).
            if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The daemon may have died before the death signal was armed.
            if libc::getppid() != parent {
                return Err(io::Error::other("the daemon exited while its plugin process started"));
            }
            // Its own process group: a terminal's Ctrl-C goes to the daemon,
            // which then stops its children in order.
            libc::setpgid(0, 0);
            if let Some(bytes) = limit {
                let rl = libc::rlimit {
                    rlim_cur: bytes as libc::rlim_t,
                    rlim_max: bytes as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_AS, &rl) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    Ok(Spawned { child, control: ours })
}

/// Blocks until `pid` has ended and says how, without reaping it
/// (`waitid` with `WNOWAIT`), so nobody can signal a recycled pid while its
/// end is being recorded; the caller reaps it afterwards.
pub fn wait_without_reaping(pid: u32) -> io::Result<ExitStatus> {
    loop {
        // SAFETY: siginfo_t is plain data filled by the kernel.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT) };
        if r != 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled a SIGCHLD siginfo, whose si_status is valid.
        let status = unsafe { info.si_status() };
        // Rebuild the wait(2) status word ExitStatus expects.
        let raw = match info.si_code {
            libc::CLD_EXITED => (status & 0xff) << 8,
            libc::CLD_DUMPED => (status & 0x7f) | 0x80,
            _ => status & 0x7f,
        };
        return Ok(ExitStatus::from_raw(raw));
    }
}

/// Sends SIGKILL to `pid`.
pub fn kill(pid: u32) {
    // SAFETY: a plain system call; callers only pass pids not yet reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// `killed by signal 11 (SIGSEGV)`, `exited with status 0`.
pub fn describe(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        let core = if status.core_dumped() { ", core dumped" } else { "" };
        format!("killed by signal {sig} ({}{core})", signal_name(sig))
    } else if let Some(code) = status.code() {
        format!("exited with status {code}")
    } else {
        format!("ended ({status})")
    }
}

/// The symbolic name of a signal (`SIGSEGV`).
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => "unknown signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_are_described_with_the_signal_name() {
        assert_eq!(describe(ExitStatus::from_raw(11)), "killed by signal 11 (SIGSEGV)");
        assert_eq!(describe(ExitStatus::from_raw(0)), "exited with status 0");
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exited with status 3");
        assert_eq!(
            describe(ExitStatus::from_raw(6 | 0x80)),
            "killed by signal 6 (SIGABRT, core dumped)"
        );
    }
}
