//! What can be wrong with a plugin directory: [`ProblemKind`], [`Problem`],
//! and the [`LoadReport`] that collects them.

use std::fmt;
use std::path::{Path, PathBuf};

/// The kind of a problem; each check has its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ProblemKind {
    /// The plugin directory is missing or cannot be listed.
    DirectoryUnreadable,
    /// A plugin directory or file is writable by group/others or owned by
    /// another user.
    InsecurePermissions,
    /// The file cannot be read.
    Unreadable,
    /// The file is not a shared library (or `dlopen` refused it).
    NotALibrary,
    /// Opening the library killed the process that opened it (a crashing
    /// static constructor; found by the load probe, or by an isolated
    /// plugin's child).
    LoadCrash,
    /// A library without Kozmo's root module.
    NoRootModule,
    /// abi_stable's header is of another abi_stable release.
    AbiHeaderMismatch,
    /// The plugin was built against another major of `kozmo-interface`.
    InterfaceMismatch,
    /// The plugin declares another Kozmo ABI epoch.
    EpochMismatch,
    /// abi_stable's layout check failed.
    LayoutMismatch,
    /// The plugin was built with `panic = "abort"`.
    PanicAbort,
    /// Listing the library's entries failed.
    EntriesFailed,
    /// An entry without id or without task types.
    InvalidEntry,
    /// A loader returned an error.
    LoaderError,
    /// A loader panicked.
    LoaderPanic,
    /// The plugin's properties are invalid (`generated_name_max_length < 8`).
    InvalidProperties,
    /// The loaded plugin's `id()` differs from its entry's id.
    PluginIdMismatch,
    /// One plugin id exported twice (two libraries, the same library twice,
    /// or a copy under another name).
    DuplicateId,
    /// More than one plugin marked `is_default`.
    MultipleDefaults,
    /// A task type registered by several plugins with no configured choice.
    TaskTypeConflict,
    /// The loader configuration names plugins or task types that do not fit.
    Config,
    /// The library was built against a newer ABI minor than this host's
    /// (a warning: it loads, and the host services it lacks report so).
    NewerAbi,
    /// Anything else the library loader reported.
    Other,
}

impl ProblemKind {
    /// Short kebab-case name, printed in brackets by the CLI.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::DirectoryUnreadable => "directory-unreadable",
            ProblemKind::InsecurePermissions => "insecure-permissions",
            ProblemKind::Unreadable => "unreadable",
            ProblemKind::NotALibrary => "not-a-library",
            ProblemKind::LoadCrash => "load-crash",
            ProblemKind::NoRootModule => "no-root-module",
            ProblemKind::AbiHeaderMismatch => "abi-header-mismatch",
            ProblemKind::InterfaceMismatch => "interface-mismatch",
            ProblemKind::EpochMismatch => "epoch-mismatch",
            ProblemKind::LayoutMismatch => "layout-mismatch",
            ProblemKind::PanicAbort => "panic-abort",
            ProblemKind::EntriesFailed => "entries-failed",
            ProblemKind::InvalidEntry => "invalid-entry",
            ProblemKind::LoaderError => "loader-error",
            ProblemKind::LoaderPanic => "loader-panic",
            ProblemKind::InvalidProperties => "invalid-properties",
            ProblemKind::PluginIdMismatch => "plugin-id-mismatch",
            ProblemKind::DuplicateId => "duplicate-id",
            ProblemKind::MultipleDefaults => "multiple-defaults",
            ProblemKind::TaskTypeConflict => "task-type-conflict",
            ProblemKind::Config => "config",
            ProblemKind::NewerAbi => "newer-abi",
            ProblemKind::Other => "other",
        }
    }

    /// Whether the problem concerns one file only; under
    /// `skip_invalid_plugins` such problems become warnings and the file (or
    /// plugin) is skipped. Directory, cross-file and configuration problems
    /// always stay errors.
    pub fn is_single_file(self) -> bool {
        !matches!(
            self,
            ProblemKind::DirectoryUnreadable
                | ProblemKind::DuplicateId
                | ProblemKind::MultipleDefaults
                | ProblemKind::TaskTypeConflict
                | ProblemKind::Config
        )
    }
}

impl fmt::Display for ProblemKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One problem: its kind, the file(s) it concerns, and a one-line message
/// that names them, the cause, and what to do where obvious.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What kind of check failed.
    pub kind: ProblemKind,
    /// The files (or directory) concerned, as discovered (not canonicalised).
    pub files: Vec<PathBuf>,
    /// One line for humans.
    pub message: String,
}

impl Problem {
    /// A problem with one file.
    pub fn file(kind: ProblemKind, file: &Path, message: impl Into<String>) -> Problem {
        Problem {
            kind,
            files: vec![file.to_path_buf()],
            message: message.into(),
        }
    }

    /// A problem concerning several files.
    pub fn files(kind: ProblemKind, files: Vec<PathBuf>, message: impl Into<String>) -> Problem {
        Problem {
            kind,
            files,
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Everything found wrong while loading a directory (or checking files).
#[derive(Debug, Clone, Default)]
pub struct LoadReport {
    /// Problems that stop the daemon (all of them in strict mode).
    pub errors: Vec<Problem>,
    /// Problems skipped under `skip_invalid_plugins`.
    pub warnings: Vec<Problem>,
    /// What did load fine (for listing next to the problems).
    pub loaded: Vec<super::PluginInfo>,
}

impl LoadReport {
    /// Whether the daemon must refuse to start (exit code 2).
    pub fn is_fatal(&self) -> bool {
        !self.errors.is_empty()
    }

    /// The errors of one kind.
    pub fn errors_of(&self, kind: ProblemKind) -> Vec<&Problem> {
        self.errors.iter().filter(|p| p.kind == kind).collect()
    }

    /// Whether any error or warning exists.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty() && self.warnings.is_empty()
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for p in &self.errors {
            writeln!(f, "error[{}]: {}", p.kind, p.message)?;
        }
        for p in &self.warnings {
            writeln!(f, "warning[{}]: {}", p.kind, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadReport {}
