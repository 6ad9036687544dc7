//! Load probing: before the host opens a library in its own process, a
//! short-lived child (the `kozmo` binary's hidden `__probe-libraries`
//! subcommand) opens it first, so a library that crashes while loading (a
//! static constructor runs at `dlopen`, before any check) is refused with a
//! one-line `load-crash` problem instead of killing `serve`, `plugins list`
//! or `plugins check`.
//!
//! One child opens the files in turn, announcing each on stdout before
//! opening it (`open N`) and after (`ok N`); when it dies, the file it was
//! opening is the culprit and a new child takes the rest. Which program
//! runs the child is [`super::LoaderConfig::probe_program`]: the daemon and
//! the CLI pass their own executable, integration tests the built `kozmo`
//! binary, unit tests `None` (no probing).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::Duration;

use super::discovery::Candidate;
use super::{one_line, Problem, ProblemKind};

/// The hidden subcommand the child runs.
pub const SUBCOMMAND: &str = "__probe-libraries";

/// How long one library may take to open in the child.
const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// The child's side: opens each file in turn, saying so before and after.
/// What opening finds wrong (other than a crash) is left to the host's own
/// open, which reports it.
pub fn child_main(files: &[PathBuf]) -> ExitCode {
    let mut out = std::io::stdout().lock();
    for (i, f) in files.iter().enumerate() {
        if writeln!(out, "open {i}").and_then(|()| out.flush()).is_err() {
            return ExitCode::FAILURE;
        }
        let _ = kozmo_interface::host::open_library(f);
        if writeln!(out, "ok {i}").and_then(|()| out.flush()).is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}

/// The candidates that opened safely in a child of `program`, and a
/// problem for each of the others.
pub(crate) fn survivors<'a>(program: &Path, candidates: Vec<&'a Candidate>) -> (Vec<&'a Candidate>, Vec<Problem>) {
    let mut ok = Vec::with_capacity(candidates.len());
    let mut problems = Vec::new();
    let mut rest = &candidates[..];
    while !rest.is_empty() {
        match run_child(program, rest) {
            Ok(Outcome::AllOpened) => {
                ok.extend_from_slice(rest);
                break;
            }
            Ok(Outcome::Died { at, how }) => {
                ok.extend_from_slice(&rest[..at]);
                let c = rest[at];
                problems.push(Problem::file(
                    ProblemKind::LoadCrash,
                    &c.path,
                    one_line(&format!("{}: {how}", c.path.display())),
                ));
                rest = &rest[at + 1..];
            }
            Err(why) => {
                for c in rest {
                    problems.push(Problem::file(
                        ProblemKind::Other,
                        &c.path,
                        one_line(&format!(
                            "{}: not opened: the load probe {} failed: {why}",
                            c.path.display(),
                            program.display()
                        )),
                    ));
                }
                break;
            }
        }
    }
    (ok, problems)
}

/// How one child ended.
enum Outcome {
    /// Every file opened.
    AllOpened,
    /// The child died (or hung) opening file `at` of its list.
    Died { at: usize, how: String },
}

/// What the child said on stdout, line by line (read on its own thread so
/// a hanging constructor can be timed out).
enum Said {
    Open(usize),
    Ok(usize),
}

fn run_child(program: &Path, files: &[&Candidate]) -> Result<Outcome, String> {
    let mut cmd = Command::new(program);
    cmd.arg(SUBCOMMAND)
        .args(files.iter().map(|c| &c.resolved))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    // The child needs no secret and no API token.
    for (k, _) in std::env::vars_os() {
        if k.to_str()
            .is_some_and(|k| k.starts_with("KOZMO_SECRET_") || k == "KOZMO_API_TOKEN")
        {
            cmd.env_remove(k);
        }
    }
    // SAFETY: setrlimit is async-signal-safe; no allocation happens here.
    unsafe {
        cmd.pre_exec(|| {
            // A crash is expected: no core dump.
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| format!("cannot start it: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, rx) = crossbeam_channel::unbounded();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let said = match line.split_once(' ') {
                Some(("open", n)) => n.parse().ok().map(Said::Open),
                Some(("ok", n)) => n.parse().ok().map(Said::Ok),
                _ => None,
            };
            if let Some(s) = said {
                if tx.send(s).is_err() {
                    break;
                }
            }
        }
    });
    let mut opening: Option<usize> = None;
    let mut opened = 0;
    loop {
        match rx.recv_timeout(OPEN_TIMEOUT) {
            Ok(Said::Open(i)) => opening = Some(i),
            Ok(Said::Ok(i)) if opening == Some(i) => {
                opening = None;
                opened += 1;
            }
            Ok(Said::Ok(_)) => {}
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                kill(&mut child);
                return match opening {
                    Some(at) => Ok(Outcome::Died {
                        at,
                        how: format!(
                            "did not finish loading within {}s (a static constructor that never returns?)",
                            OPEN_TIMEOUT.as_secs()
                        ),
                    }),
                    None => Err("it stopped answering".into()),
                };
            }
        }
    }
    let status = child.wait().map_err(|e| format!("cannot wait for it: {e}"))?;
    match opening {
        Some(at) => Ok(Outcome::Died {
            at,
            how: format!("crashed while loading ({})", describe(status)),
        }),
        None if status.success() && opened == files.len() => Ok(Outcome::AllOpened),
        None => Err(format!(
            "it {} after opening {opened} of {} files",
            describe_exit(status),
            files.len()
        )),
    }
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// `SIGSEGV`, `exit status 0`.
fn describe(status: ExitStatus) -> String {
    match status.signal() {
        Some(sig) => signal_name(sig),
        None => format!("exit status {}", status.code().unwrap_or(-1)),
    }
}

/// `was killed by SIGKILL`, `exited with status 2`.
fn describe_exit(status: ExitStatus) -> String {
    match status.signal() {
        Some(sig) => format!("was killed by {}", signal_name(sig)),
        None => format!("exited with status {}", status.code().unwrap_or(-1)),
    }
}

/// The conventional name of a signal (`SIGSEGV`), or `signal N`.
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGSYS => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn candidate(p: &str) -> Candidate {
        Candidate {
            path: PathBuf::from(p),
            resolved: PathBuf::from(p),
        }
    }

    #[test]
    fn a_probe_that_cannot_run_refuses_every_file_saying_why() {
        let (a, b) = (candidate("/p/a.so"), candidate("/p/b.so"));
        let (ok, problems) = survivors(Path::new("/nonexistent/kozmo"), vec![&a, &b]);
        assert!(ok.is_empty());
        assert_eq!(problems.len(), 2);
        assert!(
            problems[0]
                .message
                .starts_with("/p/a.so: not opened: the load probe /nonexistent/kozmo failed: cannot start it"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn signals_have_their_names() {
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(64), "signal 64");
        assert_eq!(describe(ExitStatus::from_raw(libc::SIGABRT)), "SIGABRT");
        assert_eq!(describe(ExitStatus::from_raw(3 << 8)), "exit status 3");
    }
}
