//! The child process that hosts an isolated library (`kozmo
//! __plugin-host`): it opens the library with
//! [`kozmo_interface::host::open_library`], says what it found
//! ([`Frame::Hello`]), then serves each call connection the daemon sends on
//! a thread of its own. It exits when the daemon closes the control
//! connection (and is killed if the daemon dies first).

use std::collections::HashMap;
use std::os::fd::FromRawFd;
use std::os::unix::net::UnixStream;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use kozmo_interface::host::open_library;
use kozmo_interface::{Plugin, PluginEntry, PluginError};
use kozmo_isolation_protocol::{
    read_frame, Call, EntryInfo, Frame, Hello, Library, OpenFailure, Outcome, ProtocolError, WireError,
    PROTOCOL_VERSION,
};

use crate::isolation::conn::{Conn, FdReader};
use crate::isolation::wire::{json, plain_transition, to_wire};

pub mod context;
pub mod control;
pub mod link;
pub mod setup;

use context::TaskProxy;
use control::{ChildLogger, Control};
use link::Link;
use setup::SetupProxy;

/// The hidden subcommand's arguments (set by the daemon, see
/// [`crate::isolation::spawn`]).
#[derive(Debug, Args)]
pub struct ChildArgs {
    /// The library to open.
    #[arg(long)]
    pub library: PathBuf,
    /// The file as the daemon names it in messages.
    #[arg(long)]
    pub file: PathBuf,
    /// The inherited control socket.
    #[arg(long)]
    pub control_fd: i32,
    /// The plugin ids it hosts (for messages).
    #[arg(long)]
    pub label: String,
    /// The daemon's log level (0 off ... 5 trace).
    #[arg(long, default_value_t = 2)]
    pub log_level: usize,
}

/// What the child serves.
struct Host {
    entries: Vec<PluginEntry>,
    plugins: Mutex<HashMap<String, Arc<dyn Plugin>>>,
    control: Arc<Control>,
}

fn level(n: usize) -> log::LevelFilter {
    log::LevelFilter::iter().nth(n).unwrap_or(log::LevelFilter::Trace)
}

/// Runs the child; returns when the daemon closes the control connection.
pub fn run(args: ChildArgs) -> ExitCode {
    // Secrets pass through this process's memory: closed to other
    // processes of the same user, as the daemon's is.
    if let Err(e) = crate::startup_secrets::set_non_dumpable() {
        eprintln!("plugin host {}: {e}", args.label);
        return ExitCode::from(2);
    }
    // SAFETY: the daemon passes this descriptor for us alone (spawn.rs).
    let socket = unsafe { UnixStream::from_raw_fd(args.control_fd) };
    let writer = match socket.try_clone() {
        Ok(w) => w,
        Err(e) => {
            eprintln!("plugin host {}: cannot use the control socket: {e}", args.label);
            return ExitCode::from(2);
        }
    };
    let control = Arc::new(Control::new(writer));
    ChildLogger::install(control.clone(), level(args.log_level));

    let (library, entries) = match open_library(&args.library) {
        Ok(lib) => (
            Ok(Library {
                abi_epoch: lib.abi.epoch,
                abi_minor: lib.abi.minor,
                interface_version: lib.interface_version.clone(),
                entries: lib
                    .entries
                    .iter()
                    .map(|e| EntryInfo {
                        id: e.id.clone(),
                        task_types: e.registered_task_types.clone(),
                        is_default: e.is_default,
                    })
                    .collect(),
            }),
            lib.entries,
        ),
        Err(e) => {
            let p = crate::loader::open_problem(&args.file, e);
            (
                Err(OpenFailure {
                    kind: p.kind.name().to_string(),
                    message: p.message,
                }),
                Vec::new(),
            )
        }
    };
    let opened = library.is_ok();
    let hello = Frame::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        pid: std::process::id(),
        library,
    });
    if !control.send(&hello) || !opened {
        return ExitCode::from(1);
    }
    let host = Arc::new(Host {
        entries,
        plugins: Mutex::new(HashMap::new()),
        control,
    });
    serve_control(FdReader::new(socket), &host)
}

/// The control loop: new call connections and enqueue answers.
fn serve_control(mut reader: FdReader, host: &Arc<Host>) -> ExitCode {
    let mut buf = Vec::new();
    loop {
        match read_frame(&mut reader, &mut buf) {
            // Two descriptors: the socket it reads calls from, the one it
            // answers on (one socket pair per direction, see `Conn`).
            Ok(Frame::NewConnection) => match reader.take_fds().map(<[_; 2]>::try_from) {
                Some(Ok([down, up])) => {
                    let host = host.clone();
                    let conn = Conn::one_way(UnixStream::from(down), UnixStream::from(up));
                    let started = std::thread::Builder::new()
                        .name("kozmo-plugin-call".into())
                        .spawn(move || serve_calls(conn, &host));
                    if let Err(e) = started {
                        log::error!("cannot serve a call connection: {e}");
                    }
                }
                Some(Err(fds)) => log::error!(
                    "the daemon sent NewConnection with {} descriptors instead of 2",
                    fds.len()
                ),
                None => log::error!("the daemon sent NewConnection without descriptors"),
            },
            Ok(Frame::Enqueued { id, result }) => host.control.deliver(id, result),
            Ok(other) => log::error!("unexpected {} frame on the control connection", other.name()),
            Err(ProtocolError::Closed) => return ExitCode::SUCCESS,
            Err(e) => {
                log::error!("control connection failed: {e}");
                return ExitCode::from(2);
            }
        }
    }
}

/// How long the `Done` frames of a batch's finished calls may wait for
/// the next frame written: the daemon's deadline for a call of a batch runs
/// from the last `Done` it read, plus this.
pub const HOLD_DONE_FOR: Duration = Duration::from_millis(1);

/// Serves calls on one connection until the daemon closes it.
fn serve_calls(mut conn: Conn, host: &Host) {
    while let Ok(frame) = conn.recv(None) {
        let sent = match frame {
            Frame::Call(call) => {
                let outcome = host.call(call, &mut conn);
                conn.send(&Frame::Done(outcome))
            }
            Frame::Batch(calls) => serve_batch(calls, &mut conn, host),
            other => {
                log::error!("unexpected {} frame on a call connection", other.name());
                return;
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Runs a batch's calls in order. Their `Done` frames are held back and
/// leave together: with the next service request (the daemon reads them
/// first, so it knows whose request it is), at the end of the batch, or
/// after a call once [`HOLD_DONE_FOR`] has passed since the last write.
fn serve_batch(calls: Vec<Call>, conn: &mut Conn, host: &Host) -> Result<(), ProtocolError> {
    let Some(last) = calls.len().checked_sub(1) else {
        return Ok(());
    };
    let mut written = Instant::now();
    for (i, call) in calls.into_iter().enumerate() {
        let outcome = host.call(call, conn);
        conn.hold(&Frame::Done(outcome))?;
        if i == last || written.elapsed() >= HOLD_DONE_FOR {
            conn.flush()?;
            written = Instant::now();
        }
    }
    Ok(())
}

fn caught<T>(what: &str, f: impl FnOnce() -> kozmo_interface::Result<T>) -> Result<T, WireError> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r.map_err(|e| to_wire(&e)),
        Err(_) => Err(to_wire(&PluginError::panic(format!("{what} panicked")))),
    }
}

impl Host {
    fn plugin(&self, entry: &str) -> Result<Arc<dyn Plugin>, WireError> {
        kozmo_engine::sync::lock(&self.plugins)
            .get(entry)
            .cloned()
            .ok_or_else(|| {
                to_wire(&PluginError::system(
                    "PluginNotLoaded",
                    format!("plugin {entry} is not loaded in this process"),
                ))
            })
    }

    fn call(&self, call: Call, conn: &mut Conn) -> Outcome {
        let control = self.control.clone();
        match call {
            Call::Load { entry, owner_kind } => Outcome::Loaded(self.load(&entry, owner_kind, conn)),
            Call::Handle { entry } => {
                let done = self.plugin(&entry).and_then(|p| {
                    let ctx = TaskProxy::new(Link::new(conn), control);
                    caught("handle", || p.handle(&ctx))
                });
                // The common result (scalars only) goes without JSON.
                match done.as_ref().map(plain_transition) {
                    Ok(Some(plain)) => Outcome::HandledPlain(plain),
                    _ => Outcome::Handled(done.and_then(|t| json(&t).map_err(|e| to_wire(&e)))),
                }
            }
            Call::Abort { entry } => Outcome::Finished(self.plugin(&entry).and_then(|p| {
                let ctx = TaskProxy::new(Link::new(conn), control);
                caught("abort", || p.abort(&ctx))
            })),
            Call::Finalize { entry } => Outcome::Finished(self.plugin(&entry).and_then(|p| {
                let ctx = TaskProxy::new(Link::new(conn), control);
                caught("finalize", || p.finalize(&ctx))
            })),
        }
    }

    fn load(&self, entry: &str, owner_kind: String, conn: &mut Conn) -> Result<(String, String), WireError> {
        let Some(e) = self.entries.iter().find(|e| e.id == entry) else {
            return Err(to_wire(&PluginError::system(
                "NoSuchEntry",
                format!("the library has no entry {entry}"),
            )));
        };
        let ctx = SetupProxy::new(Link::new(conn), self.control.clone(), owner_kind);
        let plugin: Arc<dyn Plugin> = caught("the loader", || e.load_plugin.load(&ctx))?.into();
        let props = json(&plugin.properties()).map_err(|e| to_wire(&e))?;
        let id = plugin.id().to_string();
        kozmo_engine::sync::lock(&self.plugins).insert(entry.to_string(), plugin);
        Ok((id, props))
    }
}
