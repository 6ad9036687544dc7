//! The real daemon (this binary's `serve`) for the benchmark parts that
//! measure it whole (`shell`, `async`): one plugin library in a temporary
//! plugin directory, a temporary data directory, the default configuration
//! plus what the part adds; stopped by its pid (SIGTERM, then SIGKILL after
//! a minute) when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running daemon.
pub struct BenchDaemon {
    /// Its process.
    pub child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    _dir: tempfile::TempDir,
}

impl BenchDaemon {
    /// Starts the daemon with `library` as its only plugin (named `file_name`
    /// in the plugin directory), `workers` workers and `env` added to its
    /// environment; waits until it listens (30 s at most: then its log is in
    /// the error).
    pub fn start(
        prefix: &str,
        library: &Path,
        file_name: &str,
        workers: usize,
        env: &[(&str, String)],
    ) -> anyhow::Result<BenchDaemon> {
        let dir = tempfile::Builder::new().prefix(prefix).tempdir()?;
        let plugins = dir.path().join("plugins");
        std::fs::create_dir(&plugins)?;
        std::fs::copy(library, plugins.join(file_name))?;
        let log = std::fs::File::create(dir.path().join("daemon.log"))?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("serve")
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--plugins-dir")
            .arg(&plugins)
            .args(["--listen", "127.0.0.1:0", "--workers", &workers.to_string()])
            .env_remove("KOZMO_API_TOKEN")
            .env_remove("KOZMO_RESYNC_INTERVAL_SECS")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(base) = line.strip_prefix("kozmo: listening on ") {
                    let _ = tx.send(base.trim().to_string());
                }
            }
        });
        let Ok(base) = rx.recv_timeout(Duration::from_secs(30)) else {
            let _ = child.kill();
            let _ = child.wait();
            let log = std::fs::read_to_string(dir.path().join("daemon.log")).unwrap_or_default();
            anyhow::bail!("the daemon did not start listening within 30 s; its log:\n{log}");
        };
        Ok(BenchDaemon { child, base, _dir: dir })
    }
}

impl Drop for BenchDaemon {
    fn drop(&mut self) {
        // SIGTERM: the daemon stops its children and exits; then reap it.
        // SAFETY: kill(2) on the pid of a child this process has not reaped.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
