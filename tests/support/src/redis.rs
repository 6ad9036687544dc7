//! A throw-away Redis server for tests, the sibling of
//! [`crate::postgres::PgServer`]: `redis-server` on a free 127.0.0.1 port,
//! no persistence (no RDB snapshots, no AOF), `--daemonize no`, working
//! directory and log in a temporary directory, a password (so tests see a
//! realistic `redis://:password@127.0.0.1:port/` URL). It is killed by pid
//! when the [`RedisServer`] drops, also when the test panics, and it is a
//! direct child with `PR_SET_PDEATHSIG(SIGKILL)`: if the test process dies
//! without unwinding, the server dies too.
//!
//! The binary is `redis-server` from `PATH` (or `/usr/bin`,
//! `/usr/local/bin`); missing, [`RedisServer::start`] panics saying what to
//! install (tests never skip silently).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running throw-away Redis server.
pub struct RedisServer {
    child: Option<Child>,
    /// Working directory and log; removed on drop.
    dir: tempfile::TempDir,
    port: u16,
    password: String,
}

/// Where `redis-server` is, or what to do to get it.
pub fn server_binary() -> Result<PathBuf, String> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")]);
    find_server(&dirs)
}

/// [`server_binary`] in these directories (tests).
fn find_server(dirs: &[PathBuf]) -> Result<PathBuf, String> {
    dirs.iter()
        .map(|d| d.join("redis-server"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            "redis-server not found (on PATH, /usr/bin or /usr/local/bin). Install Redis (Debian: \
         `apt-get install -y redis-server`; .ci/run does this) and run the tests again"
                .to_string()
        })
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl RedisServer {
    /// Starts a server; panics (with its log) if it cannot.
    pub fn start() -> RedisServer {
        let binary = server_binary().unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new().prefix("kozmo-redis-").tempdir().unwrap();
        let password = format!("pw-{}-{}", std::process::id(), free_port());
        let mut server = RedisServer {
            child: None,
            dir,
            port: 0,
            password,
        };
        for _ in 0..5 {
            server.port = free_port();
            let mut cmd = Command::new(&binary);
            cmd.args(["--port", &server.port.to_string(), "--bind", "127.0.0.1"])
                .args(["--daemonize", "no", "--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(server.dir.path())
                .arg("--logfile")
                .arg(server.log_path())
                .args(["--requirepass", &server.password])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                let parent = libc::getpid();
                cmd.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 || libc::getppid() != parent {
                        return Err(std::io::Error::other("parent gone"));
                    }
                    Ok(())
                });
            }
            let mut child = cmd.spawn().expect("redis-server starts");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    if server.log().contains("Address already in use") {
                        break; // someone took the port: another one
                    }
                    panic!("redis-server exited ({status}) at start; log:\n{}", server.log());
                }
                if server.ready() {
                    server.child = Some(child);
                    return server;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("redis-server not ready after 30 s; log:\n{}", server.log());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("redis-server found no free port; log:\n{}", server.log());
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Answers `PING` (after `AUTH`) on its port.
    fn ready(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let auth = format!(
            "*2\r\n$4\r\nAUTH\r\n${}\r\n{}\r\n*1\r\n$4\r\nPING\r\n",
            self.password.len(),
            self.password
        );
        if s.write_all(auth.as_bytes()).is_err() {
            return false;
        }
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(b"+PONG\r\n") {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if got.starts_with(b"-") {
                return false; // e.g. -LOADING
            }
        }
        true
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The password (in every [`RedisServer::url`]).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `redis://:<password>@127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://:{}@127.0.0.1:{}/", self.password, self.port)
    }

    /// The temporary directory the server runs in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_binary_is_an_error_saying_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let e = find_server(&[empty.path().to_path_buf()]).unwrap_err();
        assert!(
            e.contains("not found") && e.contains("apt-get install -y redis-server"),
            "{e}"
        );
        std::fs::write(empty.path().join("redis-server"), "").unwrap();
        assert_eq!(
            find_server(&[PathBuf::from("/nonexistent"), empty.path().to_path_buf()]).unwrap(),
            empty.path().join("redis-server")
        );
    }

    #[test]
    fn starts_answers_with_its_password_and_dies_on_drop() {
        let server = RedisServer::start();
        assert!(server.ready());
        let url = server.url();
        assert!(url.contains(server.password()) && url.ends_with(&format!(":{}/", server.port())));
        let pid = server.child.as_ref().unwrap().id() as i32;
        let port = server.port();
        drop(server);
        // SAFETY: signal 0 only checks whether the pid exists.
        assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "the server is gone");
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err());
    }
}
