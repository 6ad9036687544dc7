//! One supervised child per isolated library. A [`Generation`] is one
//! child process (its pid, control writer, idle call connections and how it
//! ended); the [`Supervisor`] starts generations, runs calls on the current
//! one, and when one ends (crash, exit, kill after a deadline) restarts it
//! with backoff and loads its plugins again, while every call in flight on
//! the dead one fails with the cause.
//!
//! Invariants: a pid is signalled only while its process is unreaped (the
//! monitor records the end under the same lock `kill` takes, before it
//! reaps); exactly one restart runs at a time (the monitor of the current
//! generation runs it; a generation that dies before it became current is
//! retried by the restart in progress).

use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use kozmo_isolation_protocol::{
    encode_frame, read_frame, write_frame, Call, Frame, Hello, Library, OpenFailure, Outcome,
};

use super::child::HOLD_DONE_FOR;
use super::conn::{is_timeout, send_with_fds, Conn};
use super::control::{forward_output, serve_control, Handles, LastWords};
use super::serve::{serve, Served};
use super::spawn::{self, ChildSpec};
use super::IsolationConfig;
use crate::loader::setup::PluginSetupContext;
use crate::loader::LoaderServices;
use kozmo_engine::sync::lock;

/// How long a caller waits for a broken child's end to be known.
const END_WAIT: Duration = Duration::from_secs(2);
/// How long the monitor waits for a dead child's last stderr line.
const OUTPUT_WAIT: Duration = Duration::from_millis(300);

/// One child process.
pub struct Generation {
    /// Its process id.
    pub pid: u32,
    control: Mutex<(UnixStream, Vec<u8>)>,
    idle: Mutex<Vec<Conn>>,
    end: Mutex<End>,
    ended: Condvar,
    last_output: LastWords,
    memory_mb: Option<u64>,
}

#[derive(Default)]
struct End {
    /// Why the daemon killed it, if it did.
    kill_reason: Option<String>,
    /// How it ended, once it has.
    cause: Option<String>,
    /// The signal that ended it, if one did and the daemon did not send it.
    signal: Option<i32>,
}

impl Generation {
    /// Sends a frame on the control connection (false if the child is gone).
    pub fn send_control(&self, frame: &Frame) -> bool {
        let mut w = lock(&self.control);
        let (stream, buf) = &mut *w;
        write_frame(stream, frame, buf).is_ok()
    }

    /// Kills the child (once), recording why.
    pub fn kill(&self, reason: String) {
        let mut end = lock(&self.end);
        if end.cause.is_none() {
            end.kill_reason.get_or_insert(reason);
            spawn::kill(self.pid);
        }
    }

    /// How it ended, waiting up to `wait` for it to end.
    fn wait_end(&self, wait: Duration) -> Option<String> {
        let end = lock(&self.end);
        let (end, _) = self
            .ended
            .wait_timeout_while(end, wait, |e| e.cause.is_none())
            .unwrap_or_else(|e| e.into_inner());
        end.cause.clone()
    }

    fn is_dead(&self) -> bool {
        lock(&self.end).cause.is_some()
    }

    /// An idle call connection, or a new one passed to the child.
    fn checkout(&self) -> std::io::Result<Conn> {
        if let Some(c) = lock(&self.idle).pop() {
            return Ok(c);
        }
        // One socket pair per direction (see `Conn`).
        let (down_ours, down_theirs) = UnixStream::pair()?;
        let (up_ours, up_theirs) = UnixStream::pair()?;
        let mut bytes = Vec::new();
        encode_frame(&Frame::NewConnection, &mut bytes).map_err(std::io::Error::other)?;
        send_with_fds(
            &lock(&self.control).0,
            &bytes,
            &[down_theirs.as_raw_fd(), up_theirs.as_raw_fd()],
        )?;
        Ok(Conn::one_way(up_ours, down_ours))
    }

    fn checkin(&self, conn: Conn) {
        lock(&self.idle).push(conn);
    }
}

enum State {
    /// Calls go to this child.
    Up(Arc<Generation>),
    /// The child ended; a restart is under way.
    Down(String),
    /// Not needed any more (the library turned out not to be isolated).
    Retired,
}

/// Why a call did not complete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The child ended during the call (the cause).
    Died(String),
    /// No child was running, and none came up before the call's deadline.
    NotRunning(String),
}

/// Supervises the child of one library.
pub struct Supervisor {
    spec: ChildSpec,
    /// The plugin ids it hosts, joined (`echo+shell`).
    pub label: String,
    cfg: IsolationConfig,
    services: LoaderServices,
    /// The daemon's side of long-lived handles.
    pub handles: Arc<Handles>,
    state: Mutex<State>,
    changed: Condvar,
    loaded: Mutex<Vec<String>>,
    backoff: Mutex<Duration>,
    restarts: AtomicU64,
}

/// What the first child said about the library.
pub enum Opened {
    /// It opened; these are its entries.
    Library(Library),
    /// It could not open it (a loader problem kind and message).
    Refused(OpenFailure),
    /// It ended before saying anything.
    Crashed {
        /// How.
        cause: String,
        /// The signal that ended it, if any.
        signal: Option<i32>,
    },
}

impl Supervisor {
    /// Starts the first child for `library` and returns what it found.
    pub fn start(
        library: PathBuf,
        file: PathBuf,
        label: String,
        cfg: &IsolationConfig,
        services: &LoaderServices,
    ) -> std::io::Result<(Arc<Supervisor>, Opened)> {
        let exe = match &cfg.host_exe {
            Some(p) => p.clone(),
            None => std::env::current_exe()?,
        };
        let sup = Arc::new(Supervisor {
            spec: ChildSpec {
                exe,
                library,
                file,
                label: label.clone(),
                memory_mb: cfg.memory_mb,
            },
            handles: Arc::new(Handles::new(&label, services.enqueue_owner.clone())),
            label,
            cfg: cfg.clone(),
            services: services.clone(),
            state: Mutex::new(State::Down("not started yet".into())),
            changed: Condvar::new(),
            loaded: Mutex::new(Vec::new()),
            backoff: Mutex::new(cfg.restart_backoff),
            restarts: AtomicU64::new(0),
        });
        let (gen, hello) = sup.start_generation()?;
        let opened = match hello {
            Ok(h) => match h.library {
                Ok(lib) => {
                    sup.set_up(gen);
                    Opened::Library(lib)
                }
                Err(f) => Opened::Refused(f),
            },
            Err(cause) => Opened::Crashed {
                cause,
                signal: lock(&gen.end).signal,
            },
        };
        Ok((sup, opened))
    }

    /// Stops supervising: the child is told to exit and not restarted.
    pub fn retire(&self) {
        let old = std::mem::replace(&mut *lock(&self.state), State::Retired);
        if let State::Up(g) = old {
            g.kill("retired".into());
        }
    }

    /// How many times the child was restarted.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// The current child's pid, if one is up.
    pub fn pid(&self) -> Option<u32> {
        match &*lock(&self.state) {
            State::Up(g) => Some(g.pid),
            _ => None,
        }
    }

    /// Loads `entry` in the current child with the loader's context.
    pub fn load(&self, entry: &str, ctx: &dyn kozmo_interface::SetupContext) -> Result<Outcome, Failure> {
        self.handles.set_enqueue_owner(ctx.enqueue_owner());
        let out = self.call(
            &Call::Load {
                entry: entry.into(),
                owner_kind: ctx.owner_kind(),
            },
            &Served::Setup { ctx, first: true },
        )?;
        let mut loaded = lock(&self.loaded);
        if !loaded.iter().any(|e| e == entry) {
            loaded.push(entry.to_string());
        }
        Ok(out)
    }

    /// Runs `call` on the current child (waiting for a restart in progress
    /// up to the call deadline), serving its service requests from `served`.
    pub fn call(&self, call: &Call, served: &Served<'_>) -> Result<Outcome, Failure> {
        let deadline = Instant::now() + self.cfg.call_timeout;
        let gen = self.current(deadline)?;
        let out = self.call_on(&gen, call, served, deadline)?;
        *lock(&self.backoff) = self.cfg.restart_backoff;
        Ok(out)
    }

    fn current(&self, deadline: Instant) -> Result<Arc<Generation>, Failure> {
        let mut st = lock(&self.state);
        loop {
            // A child whose end is recorded but whose monitor has not
            // handed over yet is as good as down: a call must not start on
            // it only to fail for a death it had no part in.
            let cause = match &*st {
                State::Up(g) if !g.is_dead() => return Ok(g.clone()),
                State::Up(g) => lock(&g.end).cause.clone().unwrap_or_default(),
                State::Retired => return Err(Failure::NotRunning("the plugin process was retired".into())),
                State::Down(cause) => cause.clone(),
            };
            let now = Instant::now();
            if now >= deadline {
                return Err(Failure::NotRunning(format!(
                    "it is being restarted; the last one ended: {cause}"
                )));
            }
            st = self
                .changed
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn call_on(
        &self,
        gen: &Generation,
        call: &Call,
        served: &Served<'_>,
        deadline: Instant,
    ) -> Result<Outcome, Failure> {
        let mut done = Vec::with_capacity(1);
        self.exchange(gen, &Frame::Call(call.clone()), &[served], deadline, &mut done)?;
        Ok(done.pop().expect("one Done per call"))
    }

    /// Runs `calls` (1 to [`kozmo_isolation_protocol::MAX_BATCH_CALLS`], all for one entry's
    /// `handle`, `abort` or `finalize`) as one [`Frame::Batch`] on the
    /// current child: call `i` is served from `served[i]`. Each call gets
    /// its own result; a child that ends during the batch fails every call
    /// whose `Done` had not arrived with the same [`Failure::Died`].
    ///
    /// The deadline applies per call: the first runs to the batch's start
    /// plus the call deadline (as a single call does), each next one to its
    /// predecessor's `Done` plus the call deadline plus the child's
    /// [`HOLD_DONE_FOR`].
    pub fn call_batch(&self, calls: Vec<Call>, served: &[Served<'_>]) -> Vec<Result<Outcome, Failure>> {
        debug_assert_eq!(calls.len(), served.len());
        let deadline = Instant::now() + self.cfg.call_timeout;
        let gen = match self.current(deadline) {
            Ok(g) => g,
            Err(f) => return calls.iter().map(|_| Err(f.clone())).collect(),
        };
        let n = calls.len();
        let served: Vec<&Served<'_>> = served.iter().collect();
        let mut done = Vec::with_capacity(n);
        let r = self.exchange(&gen, &Frame::Batch(calls), &served, deadline, &mut done);
        let mut out: Vec<Result<Outcome, Failure>> = done.into_iter().map(Ok).collect();
        match r {
            Ok(()) => *lock(&self.backoff) = self.cfg.restart_backoff,
            Err(f) => out.resize(n, Err(f)),
        }
        out
    }

    /// Sends `first` (a call or a batch of `served.len()` calls) and serves
    /// the child's requests until every call is `Done` (their outcomes are
    /// pushed to `done`, in order) or the child fails.
    fn exchange(
        &self,
        gen: &Generation,
        first: &Frame,
        served: &[&Served<'_>],
        deadline: Instant,
        done: &mut Vec<Outcome>,
    ) -> Result<(), Failure> {
        let died = |gen: &Generation| {
            let cause = gen.wait_end(END_WAIT).unwrap_or_else(|| {
                gen.kill("killed: its call connection broke".into());
                gen.wait_end(END_WAIT)
                    .unwrap_or_else(|| "did not end after SIGKILL".into())
            });
            Failure::Died(cause)
        };
        let mut conn = gen.checkout().map_err(|_| died(gen))?;
        if conn.send(first).is_err() {
            return Err(died(gen));
        }
        // Each wait is bounded by the call's deadline, and the deadline is
        // checked after every frame: a call never runs past it by more than
        // one service call of the daemon's own.
        let mut deadline = deadline;
        let grace = if served.len() > 1 {
            HOLD_DONE_FOR
        } else {
            Duration::ZERO
        };
        let wait = Some(self.cfg.call_timeout + grace);
        while done.len() < served.len() {
            let frame = conn.recv(wait);
            if frame.is_ok() && Instant::now() > deadline {
                gen.kill(format!(
                    "was killed after the call deadline of {} passed",
                    secs(self.cfg.call_timeout)
                ));
                return Err(died(gen));
            }
            match frame {
                Ok(Frame::Service(s)) => {
                    let reply = serve(s, served[done.len()], &self.handles);
                    if conn.send(&Frame::Reply(reply)).is_err() {
                        return Err(died(gen));
                    }
                }
                Ok(Frame::Done(outcome)) => {
                    done.push(outcome);
                    deadline = Instant::now() + self.cfg.call_timeout + grace;
                }
                Ok(other) => {
                    gen.kill(format!("killed: it sent a {} frame during a call", other.name()));
                    return Err(died(gen));
                }
                Err(e) if is_timeout(&e) => {
                    gen.kill(format!(
                        "was killed after the call deadline of {} passed",
                        secs(self.cfg.call_timeout)
                    ));
                    return Err(died(gen));
                }
                Err(
                    kozmo_isolation_protocol::ProtocolError::Closed | kozmo_isolation_protocol::ProtocolError::Io(_),
                ) => return Err(died(gen)),
                Err(e) => {
                    gen.kill(format!("was killed: it sent a bad frame ({e})"));
                    return Err(died(gen));
                }
            }
        }
        gen.checkin(conn);
        Ok(())
    }

    fn set_up(&self, gen: Arc<Generation>) -> bool {
        let mut st = lock(&self.state);
        if matches!(*st, State::Retired) || gen.is_dead() {
            return false;
        }
        *st = State::Up(gen);
        self.changed.notify_all();
        true
    }

    /// Starts a child and reads its hello (or how it ended before one).
    fn start_generation(self: &Arc<Self>) -> std::io::Result<(Arc<Generation>, Result<Hello, String>)> {
        let mut spawned = spawn::spawn(self.spec.clone())?;
        let pid = spawned.child.id();
        let gen = Arc::new(Generation {
            pid,
            control: Mutex::new((spawned.control.try_clone()?, Vec::new())),
            idle: Mutex::new(Vec::new()),
            end: Mutex::new(End::default()),
            ended: Condvar::new(),
            last_output: LastWords::default(),
            memory_mb: self.spec.memory_mb,
        });
        log::info!(target: &self.handles.target(), "plugin process {pid} started for {}", self.spec.library.display());
        let (stderr_done, stderr_done_rx) = mpsc::channel::<()>();
        if let Some(out) = spawned.child.stdout.take() {
            let handles = self.handles.clone();
            std::thread::spawn(move || forward_output(out, "stdout", log::Level::Info, &handles, None));
        }
        if let Some(err) = spawned.child.stderr.take() {
            let (handles, gen) = (self.handles.clone(), gen.clone());
            std::thread::spawn(move || {
                forward_output(err, "stderr", log::Level::Warn, &handles, Some(&gen.last_output));
                drop(stderr_done);
            });
        }
        {
            let (gen, weak, child) = (gen.clone(), Arc::downgrade(self), spawned.child);
            std::thread::Builder::new()
                .name("kozmo-plugin-monitor".into())
                .spawn(move || monitor(gen, child, stderr_done_rx, weak))?;
        }
        // Unbuffered: the control thread reads on from the next byte.
        let mut first = spawned.control.try_clone()?;
        let deadline = Instant::now() + self.cfg.call_timeout;
        let mut buf = Vec::new();
        let mut next = || {
            let left = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            first.set_read_timeout(Some(left))?;
            read_frame(&mut first, &mut buf)
        };
        let mut frame = next();
        // Whatever the library logs while it opens comes first.
        while let Ok(Frame::Log(r)) = &frame {
            self.handles.log(r);
            frame = next();
        }
        spawned.control.set_read_timeout(None)?;
        let hello = match frame {
            Ok(Frame::Hello(h)) if h.protocol == kozmo_isolation_protocol::PROTOCOL_VERSION => Ok(h),
            Ok(Frame::Hello(h)) => {
                gen.kill(format!(
                    "was killed: it speaks protocol {}, the daemon {}",
                    h.protocol,
                    kozmo_isolation_protocol::PROTOCOL_VERSION
                ));
                Err(gen.wait_end(END_WAIT).unwrap_or_default())
            }
            Ok(other) => {
                gen.kill(format!("was killed: it sent {} before its hello", other.name()));
                Err(gen.wait_end(END_WAIT).unwrap_or_default())
            }
            Err(e) if is_timeout(&e) => {
                gen.kill(format!("was killed: no hello within {}", secs(self.cfg.call_timeout)));
                Err(gen.wait_end(END_WAIT).unwrap_or_default())
            }
            Err(_) => Err(gen
                .wait_end(END_WAIT)
                .unwrap_or_else(|| "closed its control connection".into())),
        };
        if hello.as_ref().is_ok_and(|h| h.library.is_ok()) {
            let (gen, handles) = (gen.clone(), self.handles.clone());
            std::thread::Builder::new()
                .name("kozmo-plugin-control".into())
                .spawn(move || serve_control(gen, spawned.control, handles))?;
        }
        Ok((gen, hello))
    }

    /// Called by the monitor of `gen` once it ended: restarts the child if
    /// it was the current one.
    fn on_end(self: &Arc<Self>, gen: &Arc<Generation>, cause: &str) {
        {
            let mut st = lock(&self.state);
            match &*st {
                State::Up(g) if Arc::ptr_eq(g, gen) => *st = State::Down(cause.to_string()),
                _ => return,
            }
        }
        log::warn!(target: &self.handles.target(), "plugin process {} {cause}; restarting it", gen.pid);
        loop {
            let wait = {
                let mut b = lock(&self.backoff);
                let now = *b;
                *b = (*b * 2).min(self.cfg.max_restart_backoff);
                now
            };
            std::thread::sleep(wait);
            if matches!(*lock(&self.state), State::Retired) {
                return;
            }
            match self.restart_once() {
                Ok(pid) => {
                    let n = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
                    log::warn!(target: &self.handles.target(), "plugin process restarted (pid {pid}, restart {n})");
                    return;
                }
                Err(why) => {
                    log::error!(target: &self.handles.target(), "restarting the plugin process failed: {why}");
                    *lock(&self.state) = State::Down(why);
                }
            }
        }
    }

    /// One restart attempt: a new child, every plugin loaded again.
    fn restart_once(self: &Arc<Self>) -> Result<u32, String> {
        let (gen, hello) = self
            .start_generation()
            .map_err(|e| format!("could not be started: {e}"))?;
        match hello {
            Ok(Hello { library: Ok(_), .. }) => {}
            Ok(Hello { library: Err(f), .. }) => {
                return Err(format!("could not open the library again: {}", f.message))
            }
            Err(cause) => return Err(format!("{cause} while loading the library again")),
        }
        let entries = lock(&self.loaded).clone();
        let deadline = Instant::now() + self.cfg.call_timeout;
        for entry in entries {
            let ctx = PluginSetupContext::new(&self.services, &entry);
            let call = Call::Load {
                entry: entry.clone(),
                owner_kind: self.services.owner_kind.clone(),
            };
            match self.call_on(
                &gen,
                &call,
                &Served::Setup {
                    ctx: &ctx,
                    first: false,
                },
                deadline,
            ) {
                Ok(Outcome::Loaded(Ok(_))) => {}
                Ok(other) => {
                    gen.kill("was killed: loading again failed".into());
                    return Err(format!("loading {entry} again failed: {other:?}"));
                }
                Err(Failure::Died(cause) | Failure::NotRunning(cause)) => {
                    return Err(format!("{cause} while loading {entry} again"))
                }
            }
        }
        let pid = gen.pid;
        if self.set_up(gen) {
            Ok(pid)
        } else {
            Err("ended right after it loaded".into())
        }
    }
}

impl Drop for Supervisor {
    /// The last handle on the plugin is gone: so is its process.
    fn drop(&mut self) {
        self.retire();
    }
}

/// `60s`, `0.5s`.
fn secs(d: Duration) -> String {
    format!("{}s", d.as_secs_f64())
}

/// Waits for `gen`'s process to end, records how, reaps it, and hands over
/// to the supervisor's restart.
fn monitor(
    gen: Arc<Generation>,
    mut child: std::process::Child,
    stderr_done: mpsc::Receiver<()>,
    sup: Weak<Supervisor>,
) {
    let status = spawn::wait_without_reaping(gen.pid);
    // Its last words usually arrive just after it ended.
    let _ = stderr_done.recv_timeout(OUTPUT_WAIT);
    let cause = {
        let mut end = lock(&gen.end);
        let how = match &status {
            Ok(s) => spawn::describe(*s),
            Err(e) => format!("ended (waitid failed: {e})"),
        };
        let cause = match &end.kill_reason {
            Some(r) => r.clone(),
            None => match (gen.last_output.get(), gen.memory_mb) {
                (Some(line), Some(mb)) if line.contains("memory allocation of") => {
                    format!("{how}; out of memory under isolate_memory_mb = {mb}: {line}")
                }
                (Some(line), _) => format!("{how}; its last output: {line}"),
                (None, _) => how,
            },
        };
        if end.kill_reason.is_none() {
            end.signal = status
                .as_ref()
                .ok()
                .and_then(std::os::unix::process::ExitStatusExt::signal);
        }
        end.cause = Some(cause.clone());
        gen.ended.notify_all();
        cause
    };
    let _ = child.wait();
    if let Some(sup) = sup.upgrade() {
        sup.on_end(&gen, &cause);
    }
}
