//! The real `kozmo serve` binary on a free loopback port, with temporary
//! directories and plugins built as shared libraries (shared by the daemon
//! suites).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kozmo_host::client::Client;
use serde_json::Value;

pub fn kozmo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kozmo"))
}

pub fn example(name: &str) -> PathBuf {
    kozmo_testkit::workspace_root().join("examples").join(name)
}

/// A plugin directory with copies of the bundled plugins (mode 0755/0644).
pub fn plugin_dir(root: &Path, which: &[&str]) -> PathBuf {
    let dir = root.join("plugins");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for lib in kozmo_testkit::build_plugins(which) {
        let to = dir.join(lib.file_name().unwrap());
        std::fs::copy(&lib, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir
}

pub struct Daemon {
    pub child: Option<Child>,
    pub client: Client,
    pub data: PathBuf,
    pub plugins: PathBuf,
    pub extra: Vec<String>,
    /// Variables added to the daemon's environment.
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
}

impl Daemon {
    /// A daemon set up under `root` with copies of `plugins`, not started.
    pub fn new(root: &Path, plugins: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon {
            child: None,
            client: Client::new("http://127.0.0.1:1", None),
            data: root.join("data"),
            plugins: plugin_dir(root, plugins),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            log: root.join("daemon.log"),
        }
    }

    pub fn start(root: &Path, plugins: &[&str], extra: &[&str]) -> Daemon {
        Self::start_with_env(root, plugins, extra, &[])
    }

    /// [`Daemon::start`] with variables added to the daemon's environment.
    pub fn start_with_env(root: &Path, plugins: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut d = Self::new(root, plugins, extra, env);
        d.restart();
        d
    }

    pub fn command(&self) -> Command {
        let mut cmd = kozmo();
        cmd.arg("serve")
            .arg("--data-dir")
            .arg(&self.data)
            .arg("--plugins-dir")
            .arg(&self.plugins)
            .args(&self.extra);
        // Tests that pass their own resync interval (or its default) get it.
        if !self.extra.iter().any(|a| a == "--resync-interval-secs") {
            cmd.arg("--resync-interval-secs").arg("0.2");
        }
        if !self.extra.iter().any(|a| a == "--listen") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        cmd.env("RUST_LOG", "info").env_remove("KOZMO_API_TOKEN");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    pub fn restart(&mut self) {
        if let Err(status) = self.try_start() {
            panic!("daemon exited ({status}) before listening; log:\n{}", self.log_text());
        }
    }

    /// Starts the daemon the way systemd's `Restart=always` would, until one
    /// stays up for `settle`: the exit statuses of those that died.
    pub fn restart_until_stable(&mut self, settle: Duration, max: usize) -> Vec<std::process::ExitStatus> {
        let mut deaths = Vec::new();
        while deaths.len() <= max {
            if let Err(status) = self.try_start() {
                deaths.push(status);
                continue;
            }
            let child = self.child.as_mut().unwrap();
            let start = Instant::now();
            let died = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if start.elapsed() > settle {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            match died {
                Some(status) => {
                    self.child = None;
                    deaths.push(status);
                }
                None => return deaths,
            }
        }
        panic!("the daemon died {} times; log:\n{}", deaths.len(), self.log_text());
    }

    /// Spawns the daemon and waits for its listening line; the exit status
    /// if it died first.
    pub fn try_start(&mut self) -> Result<(), std::process::ExitStatus> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut child = self
            .command()
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("kozmo serve starts");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let addr = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(url) = line.strip_prefix("kozmo: listening on ") {
                        break url.to_string();
                    }
                }
                _ => return Err(child.wait().unwrap()),
            }
        };
        std::thread::spawn(move || for _ in lines {});
        let token = self
            .extra
            .iter()
            .position(|a| a == "--api-token")
            .map(|i| self.extra[i + 1].clone())
            .or_else(|| {
                self.env
                    .iter()
                    .find(|(k, _)| k == "KOZMO_API_TOKEN")
                    .map(|(_, v)| v.clone())
            });
        self.client = Client::new(&addr, token);
        self.child = Some(child);
        Ok(())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        child.wait().unwrap()
    }

    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        kozmo()
            .args(args)
            .env("KOZMO_SERVER", self.client.base())
            .env_remove("KOZMO_API_TOKEN")
            .output()
            .unwrap()
    }

    pub fn submit(&self, body: &Value) -> String {
        let (_, v) = self.client.post("/v1/executions", body).unwrap();
        v["id"].as_str().unwrap().to_string()
    }

    pub fn wait_phase(&self, id: &str, done: impl Fn(&str) -> bool, within: Duration) -> Value {
        self.wait_phase_where(id, |v| done(v["phase"].as_str().unwrap_or_default()), within)
    }

    pub fn wait_phase_where(&self, id: &str, done: impl Fn(&Value) -> bool, within: Duration) -> Value {
        let start = Instant::now();
        loop {
            let (_, v) = self.client.get(&format!("/v1/executions/{id}")).unwrap();
            if done(&v) {
                return v;
            }
            assert!(start.elapsed() < within, "{id} stuck at {v}; log:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn wait_terminal(&self, id: &str) -> Value {
        self.wait_phase(
            id,
            |p| matches!(p, "Succeeded" | "Failed" | "Aborted"),
            Duration::from_secs(60),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn pid_alive(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}
