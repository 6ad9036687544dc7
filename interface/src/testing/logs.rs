//! Capturing a plugin's `log` records in tests.

use std::cell::RefCell;
use std::sync::OnceLock;

/// One `log` record a plugin wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// Its level.
    pub level: log::Level,
    /// Its target (the plugin crate's module path, unless the plugin set one).
    pub target: String,
    /// The formatted message.
    pub message: String,
}

impl std::fmt::Display for LogRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:<5} {}: {}", self.level, self.target, self.message)
    }
}

thread_local! {
    static CAPTURE: RefCell<Option<Vec<LogRecord>>> = const { RefCell::new(None) };
}

struct CaptureLogger;

impl log::Log for CaptureLogger {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let rec = LogRecord {
            level: record.level(),
            target: record.target().to_string(),
            message: record.args().to_string(),
        };
        let captured = CAPTURE.with(|c| match c.borrow_mut().as_mut() {
            Some(v) => {
                v.push(rec.clone());
                true
            }
            None => false,
        });
        if !captured {
            // Another thread of the plugin (or of the test): still shown
            // (`cargo test` keeps it for failing tests), not captured.
            eprintln!("{rec}");
        }
    }

    fn flush(&self) {}
}

static INSTALLED: OnceLock<bool> = OnceLock::new();

/// Installs the capturing logger (used by [`capture_logs`] and
/// [`Driver`](super::Driver)) as the process's `log` logger, once, at level
/// `Trace`; `false` if another logger (e.g. `env_logger`) was installed
/// first: then nothing is captured. [`capture_logs`] calls it; call it
/// yourself before opening a plugin *library* with
/// [`open_library`](crate::host::open_library), which hands the library
/// the log level in force at that moment (none before a logger is set).
///
/// ```
/// assert!(kozmo_interface::testing::install_log_capture());
/// assert_eq!(log::max_level(), log::LevelFilter::Trace);
/// ```
pub fn install_log_capture() -> bool {
    *INSTALLED.get_or_init(|| {
        static LOGGER: CaptureLogger = CaptureLogger;
        let ok = log::set_logger(&LOGGER).is_ok();
        if ok {
            log::set_max_level(log::LevelFilter::Trace);
        }
        ok
    })
}

/// Runs `f` on this thread and returns what it logged on this thread
/// (records of other threads are printed to stderr instead). Nothing is
/// captured when another logger was installed first.
///
/// ```
/// use kozmo_interface::testing::capture_logs;
///
/// let (value, logs) = capture_logs(|| {
///     log::info!("hello from the plugin");
///     7
/// });
/// assert_eq!(value, 7);
/// assert_eq!(logs[0].message, "hello from the plugin");
/// assert_eq!(logs[0].level, log::Level::Info);
/// ```
pub fn capture_logs<T>(f: impl FnOnce() -> T) -> (T, Vec<LogRecord>) {
    install_log_capture();
    let outer = CAPTURE.with(|c| c.borrow_mut().replace(Vec::new()));
    // Put the outer capture back even if `f` panics.
    struct Restore(Option<Option<Vec<LogRecord>>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                let inner = CAPTURE.with(|c| std::mem::replace(&mut *c.borrow_mut(), outer));
                // A panic drops what was captured; a nested capture's records
                // also belong to the enclosing one.
                if let Some(inner) = inner {
                    CAPTURE.with(|c| {
                        if let Some(v) = c.borrow_mut().as_mut() {
                            v.extend(inner);
                        }
                    });
                }
            }
        }
    }
    let mut restore = Restore(Some(outer));
    let value = f();
    let outer = restore.0.take().expect("not restored yet");
    let logs = CAPTURE
        .with(|c| std::mem::replace(&mut *c.borrow_mut(), outer))
        .unwrap_or_default();
    CAPTURE.with(|c| {
        if let Some(v) = c.borrow_mut().as_mut() {
            v.extend(logs.iter().cloned());
        }
    });
    (value, logs)
}
