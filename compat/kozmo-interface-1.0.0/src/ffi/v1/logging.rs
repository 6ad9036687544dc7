//! Plugin logs: the glue installs a `log` logger in the plugin that
//! forwards each record to the host's logger.

use std::sync::OnceLock;

use abi_stable::sabi_trait;
use abi_stable::sabi_trait::TD_Opaque;
use abi_stable::std_types::{RBox, RStr};

/// A log record sink the host passes to the plugin.
#[sabi_trait]
pub trait FfiLogSink: Send + Sync {
    /// Logs one record (`level`: 1 error … 5 trace).
    #[sabi(last_prefix_field)]
    fn log(&self, level: u8, target: RStr<'_>, message: RStr<'_>);
}

fn level_from_u8(v: u8) -> log::Level {
    match v {
        1 => log::Level::Error,
        2 => log::Level::Warn,
        3 => log::Level::Info,
        4 => log::Level::Debug,
        _ => log::Level::Trace,
    }
}

/// Host side: writes forwarded records into the host's `log` logger.
pub struct HostLogSink;

impl HostLogSink {
    /// The FFI object for [`install_forwarding_logger`].
    pub fn object() -> FfiLogSink_TO<'static, RBox<()>> {
        FfiLogSink_TO::from_value(HostLogSink, TD_Opaque)
    }
}

impl FfiLogSink for HostLogSink {
    fn log(&self, level: u8, target: RStr<'_>, message: RStr<'_>) {
        log::logger().log(
            &log::Record::builder()
                .level(level_from_u8(level))
                .target(target.as_str())
                .args(format_args!("{}", message.as_str()))
                .build(),
        );
    }
}

struct Forwarder(FfiLogSink_TO<'static, RBox<()>>);

static FORWARDER: OnceLock<Forwarder> = OnceLock::new();

impl log::Log for Forwarder {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let message = record.args().to_string();
            self.0
                .log(record.level() as u8, record.target().into(), message.as_str().into());
        }
    }

    fn flush(&self) {}
}

/// Plugin side: installs the forwarding logger (once per library) with the
/// host's maximum level, and a panic hook that reports through it instead of
/// printing to the daemon's stderr.
pub fn install_forwarding_logger(sink: FfiLogSink_TO<'static, RBox<()>>, max_level: u8) {
    super::guard::install_panic_hook();
    let level = match max_level {
        0 => log::LevelFilter::Off,
        v => level_from_u8(v).to_level_filter(),
    };
    log::set_max_level(level);
    if FORWARDER.set(Forwarder(sink)).is_ok() {
        if let Some(f) = FORWARDER.get() {
            let _ = log::set_logger(f);
        }
    }
}
