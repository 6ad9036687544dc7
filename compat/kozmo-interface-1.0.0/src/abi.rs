//! The ABI version a library speaks: an **epoch** and a **minor**.
//!
//! * The epoch names an incompatible generation of the boundary; each has
//!   its own frozen module (`ffi::v1`, later `ffi::v2`), and a host keeps
//!   every epoch module it ever shipped, so it keeps loading plugins built
//!   for older epochs.
//! * The minor counts additive changes inside an epoch: a host service, a
//!   plugin method or a root-module field appended after the frozen ones.
//!
//! Both are independent of this crate's semver version: the crate may get
//! a new major for Rust-level reasons while the ABI epoch stays, and the
//! library header (what abi_stable's own version check reads) carries the
//! ABI version `"<epoch>.<minor>.0"`, never the crate version.
//!
//! What a plugin author may rely on: a plugin built against epoch E, minor
//! x loads and runs unchanged in every host of epoch E with minor y ≥ x. In
//! a host with y < x it loads with a warning (`kozmo plugins list/check`
//! and the daemon's log say which minor each side has); each host service
//! the older host lacks returns an error naming the minor it needs, and
//! every plugin method the older host does not know is simply never called.
//!
//! ```
//! use kozmo_interface::abi::{AbiVersion, ABI_VERSION};
//!
//! assert_eq!(ABI_VERSION, AbiVersion::new(1, 0));
//! assert_eq!(ABI_VERSION.to_string(), "1.0");
//! assert_eq!(AbiVersion::parse("1.3.0"), Some(AbiVersion::new(1, 3)));
//! assert!(AbiVersion::new(1, 0).can_run(AbiVersion::new(1, 0)));
//! assert!(AbiVersion::new(1, 2).can_run(AbiVersion::new(1, 1)));
//! assert!(!AbiVersion::new(1, 1).can_run(AbiVersion::new(1, 2)));
//! ```

use std::fmt;
use std::sync::OnceLock;

use crate::ffi::current;
use crate::PluginError;

/// An ABI version: epoch and minor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AbiVersion {
    /// The incompatible generation (`ffi::v<epoch>`).
    pub epoch: u32,
    /// Additive changes inside the epoch.
    pub minor: u32,
}

impl AbiVersion {
    /// `epoch.minor`.
    pub const fn new(epoch: u32, minor: u32) -> Self {
        AbiVersion { epoch, minor }
    }

    /// Parses `"E.M"` or `"E.M.P"` (the patch, always 0, is ignored).
    pub fn parse(s: &str) -> Option<AbiVersion> {
        let mut parts = s.trim().split('.');
        let epoch = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        match (parts.next(), parts.next()) {
            (None, None) => {}
            (Some(p), None) if p.parse::<u32>().is_ok() => {}
            _ => return None,
        }
        Some(AbiVersion { epoch, minor })
    }

    /// Whether a host speaking `self` has everything a plugin built
    /// against `plugin` may use (same epoch, host minor ≥ plugin minor).
    pub const fn can_run(self, plugin: AbiVersion) -> bool {
        self.epoch == plugin.epoch && self.minor >= plugin.minor
    }
}

impl fmt::Display for AbiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.epoch, self.minor)
    }
}

/// The ABI this copy of the interface speaks (the epoch new plugins are
/// built for, and its latest minor).
pub const ABI_VERSION: AbiVersion = AbiVersion::new(current::ABI_EPOCH, current::ABI_MINOR);

/// Code of the error a host service returns when the daemon is older than
/// the minor that added it.
pub const NEEDS_NEWER_HOST: &str = "NeedsNewerHost";

static HOST_ABI: OnceLock<AbiVersion> = OnceLock::new();

/// The ABI of the daemon that loaded this plugin library; `None` outside a
/// daemon (in the host process itself, or in a plugin's unit tests).
///
/// A plugin that wants a feature of a later minor can check it before
/// calling, instead of handling [`NEEDS_NEWER_HOST`]:
///
/// ```
/// use kozmo_interface::abi::{host_abi, AbiVersion};
///
/// let newer_feature = host_abi().is_some_and(|h| h.can_run(AbiVersion::new(1, 1)));
/// # assert!(!newer_feature);
/// ```
pub fn host_abi() -> Option<AbiVersion> {
    HOST_ABI.get().copied()
}

/// Plugin side: remembers what the host said when it attached.
pub(crate) fn set_host_abi(v: AbiVersion) {
    let _ = HOST_ABI.set(v);
}

/// The error for a host service that was added in ABI `added_in`, called
/// in a daemon that does not provide it (the default body of every host
/// service appended after a release).
pub fn needs_newer_host(what: &str, added_in: AbiVersion) -> PluginError {
    let host = match host_abi() {
        Some(h) => format!("this daemon speaks ABI {h}"),
        None => "this host does not provide it".to_string(),
    };
    PluginError::system(
        NEEDS_NEWER_HOST,
        format!("{what} needs a daemon speaking kozmo ABI {added_in} or newer ({host}); upgrade the daemon"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_accepts_two_or_three_numbers_only() {
        assert_eq!(AbiVersion::parse("1.0"), Some(AbiVersion::new(1, 0)));
        assert_eq!(AbiVersion::parse("2.7.0"), Some(AbiVersion::new(2, 7)));
        for bad in ["", "1", "1.x", "1.0.0.0", "a.b", "1.0.z", "-1.0"] {
            assert_eq!(AbiVersion::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_header_string_is_the_abi_version() {
        assert_eq!(
            AbiVersion::parse(current::ABI_VERSION_STRING),
            Some(ABI_VERSION),
            "ABI_VERSION_STRING must be \"<ABI_EPOCH>.<ABI_MINOR>.0\""
        );
    }

    #[test]
    fn the_missing_service_error_names_the_needed_minor() {
        let e = needs_newer_host("task_context.example", AbiVersion::new(1, 4));
        assert_eq!(e.code, NEEDS_NEWER_HOST);
        assert_eq!(e.kind, crate::ErrorKind::System);
        assert!(
            e.message.contains("needs a daemon speaking kozmo ABI 1.4 or newer"),
            "{}",
            e.message
        );
    }

    #[test]
    fn another_epoch_never_runs() {
        assert!(!AbiVersion::new(2, 5).can_run(AbiVersion::new(1, 0)));
        assert!(!AbiVersion::new(1, 5).can_run(AbiVersion::new(2, 0)));
    }
}
