//! An ephemeral PostgreSQL cluster for tests: `initdb` into a temporary
//! directory, the server on a free 127.0.0.1 port (and a Unix socket in
//! that directory), stopped (immediate shutdown) and removed when the
//! [`PgServer`] drops, also when the test panics. The server is a direct
//! child with `PR_SET_PDEATHSIG(SIGQUIT)`: if the test process dies
//! without unwinding (SIGKILL, abort), PostgreSQL shuts down too.
//!
//! The binaries are the installed PostgreSQL's (`pg_config --bindir`,
//! else the newest `/usr/lib/postgresql/*/bin`); missing, [`PgServer::start`]
//! panics saying what to install (tests never skip silently). PostgreSQL
//! refuses to run as root: as root, `initdb` and the server run as the
//! `postgres` user (the package creates it), on a directory it owns.
//!
//! Host connections need a password (`scram-sha-256`), so tests see a
//! realistic `postgres://user:password@127.0.0.1:port/db` URL.

use std::io::Write;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The superuser `initdb` creates.
pub const USER: &str = "kozmo";

/// A running throw-away PostgreSQL server.
pub struct PgServer {
    child: Option<Child>,
    /// Holds data directory, socket and log; removed on drop.
    dir: tempfile::TempDir,
    bindir: PathBuf,
    port: u16,
    password: String,
    /// `(uid, gid)` the server runs as when the tests run as root.
    run_as: Option<(u32, u32)>,
}

/// Where the PostgreSQL server binaries are, or what to do to get them.
pub fn bindir() -> Result<PathBuf, String> {
    find_bindir("pg_config", Path::new("/usr/lib/postgresql"))
}

/// [`bindir`] with another `pg_config` and versions directory (tests).
fn find_bindir(pg_config: &str, versions: &Path) -> Result<PathBuf, String> {
    let has_initdb = |d: &Path| d.join("initdb").is_file() && d.join("postgres").is_file();
    if let Ok(out) = Command::new(pg_config).arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && has_initdb(&d) {
            return Ok(d);
        }
    }
    // `pg_config` of libpq-dev alone names no server: look where Debian
    // installs each version's server.
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(versions)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let d = e.path().join("bin");
            has_initdb(&d).then_some((v, d))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, d)| d).ok_or_else(|| {
        "PostgreSQL server binaries (initdb, postgres) not found: neither `pg_config --bindir` nor \
         /usr/lib/postgresql/*/bin has them. Install PostgreSQL (Debian: `apt-get install -y postgresql`; \
         .ci/run does this) and run the tests again"
            .to_string()
    })
}

fn postgres_ids() -> (u32, u32) {
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam returns a pointer into static storage or null; read
    // at once on this thread.
    let pw = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !pw.is_null(),
        "tests run as root and PostgreSQL refuses to: the `postgres` user (created by the postgresql \
         package) is needed to run the test cluster, and it does not exist"
    );
    // SAFETY: non-null result of getpwnam.
    unsafe { ((*pw).pw_uid, (*pw).pw_gid) }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl PgServer {
    /// Creates and starts a cluster with a database `kozmo`; panics (with
    /// the server's log) if it cannot.
    pub fn start() -> PgServer {
        let bindir = bindir().unwrap_or_else(|e| panic!("{e}"));
        // SAFETY: geteuid has no preconditions.
        let run_as = (unsafe { libc::geteuid() } == 0).then(postgres_ids);
        // As root the server runs as `postgres`, which must reach the
        // directory: under /tmp, whatever TMPDIR says (it may be in /root).
        let mut builder = tempfile::Builder::new();
        builder.prefix("kozmo-pg-");
        let dir = match run_as {
            Some(_) => builder.tempdir_in("/tmp"),
            None => builder.tempdir(),
        }
        .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let password = format!("pw-{}-{}", std::process::id(), free_port());
        let pwfile = dir.path().join("pwfile");
        std::fs::File::create(&pwfile)
            .and_then(|mut f| writeln!(f, "{password}"))
            .unwrap();
        if let Some((uid, gid)) = run_as {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).unwrap();
        }
        let mut server = PgServer {
            child: None,
            dir,
            bindir,
            port: 0,
            password,
            run_as,
        };
        let out = server
            .command("initdb")
            .arg("-D")
            .arg(server.data_dir())
            .args([
                "-U",
                USER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
            ])
            .arg("--no-sync")
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("initdb runs");
        assert!(out.status.success(), "initdb failed:\n{}", text(&out));
        server.run();
        server.createdb("kozmo");
        server
    }

    /// A command of the cluster's binaries, run as the server's user.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(self.bindir.join(program));
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.env("LC_ALL", "C").env_remove("PGPASSWORD").env_remove("PGHOST");
        cmd
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the server on a fresh port (again after [`PgServer::stop`]).
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        // The same port again after a stop, so clients can reconnect.
        let mut port = if self.port == 0 { free_port() } else { self.port };
        for _ in 0..5 {
            self.port = port;
            port = free_port();
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.log_path())
                .unwrap();
            let mut cmd = self.command("postgres");
            cmd.arg("-D")
                .arg(self.data_dir())
                .arg("-p")
                .arg(self.port.to_string())
                .arg("-k")
                .arg(self.dir.path())
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "max_connections=60", "-c", "shared_buffers=16MB"])
                .stdin(Stdio::null())
                .stdout(log.try_clone().unwrap())
                .stderr(log);
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                let parent = libc::getpid();
                cmd.pre_exec(move || {
                    // Runs after the uid change (which would clear it).
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 || libc::getppid() != parent {
                        return Err(std::io::Error::other("parent gone"));
                    }
                    Ok(())
                });
            }
            let mut child = cmd.spawn().expect("postgres starts");
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    if self.log().contains("could not bind") || self.log().contains("Address already in use") {
                        break; // someone took the port: another one
                    }
                    panic!("postgres exited ({status}) at start; log:\n{}", self.log());
                }
                if self.ready() {
                    self.child = Some(child);
                    return;
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("postgres not ready after 60 s; log:\n{}", self.log());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("postgres found no free port; log:\n{}", self.log());
    }

    fn ready(&self) -> bool {
        self.command("pg_isready")
            .arg("-q")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-d",
                "postgres",
                "-U",
                USER,
            ])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// Immediate shutdown (the server's own crash recovery runs at the
    /// next [`PgServer::run`]).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: signalling our own unreaped child.
            unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    /// The TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password (in every [`PgServer::url`]).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres://kozmo:<password>@127.0.0.1:<port>/<db>`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://{USER}:{}@127.0.0.1:{}/{db}", self.password, self.port)
    }

    /// Creates database `name` (over the Unix socket); its URL.
    pub fn createdb(&self, name: &str) -> String {
        let out = self
            .command("createdb")
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", USER, name])
            .output()
            .expect("createdb runs");
        assert!(out.status.success(), "createdb {name} failed:\n{}", text(&out));
        self.url(name)
    }

    /// Runs SQL with `psql` in database `db` (over the Unix socket); its
    /// output, unaligned, without headers. Panics if psql fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self
            .command("psql")
            .arg("-h")
            .arg(self.dir.path())
            .args(["-p", &self.port.to_string(), "-U", USER, "-d", db])
            .args(["-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", sql])
            .output()
            .expect("psql runs");
        assert!(out.status.success(), "psql {sql:?} failed:\n{}", text(&out));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
        // The directory belongs to the server's user: TempDir removes it
        // as root (or as that same user).
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_are_an_error_saying_what_to_install() {
        let empty = tempfile::tempdir().unwrap();
        let e = find_bindir("kozmo-no-such-pg_config", empty.path()).unwrap_err();
        assert!(
            e.contains("not found") && e.contains("apt-get install -y postgresql"),
            "{e}"
        );
        // The newest version directory that has a server wins.
        for v in ["9", "15", "16"] {
            let bin = empty.path().join(v).join("bin");
            std::fs::create_dir_all(&bin).unwrap();
            if v != "16" {
                std::fs::write(bin.join("initdb"), "").unwrap();
                std::fs::write(bin.join("postgres"), "").unwrap();
            }
        }
        assert_eq!(
            find_bindir("kozmo-no-such-pg_config", empty.path()).unwrap(),
            empty.path().join("15").join("bin")
        );
    }
}
