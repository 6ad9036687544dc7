//! Reading tasks and inputs, writing outputs, and the data store.

use std::path::{Path, PathBuf};

use crate::literals::LiteralMap;
use crate::task::TaskTemplate;
use crate::{ExecutionError, Result};

/// Reads the task definition.
pub trait TaskReader {
    /// The task template.
    fn read(&self) -> Result<TaskTemplate>;
    /// Where the task template is stored (a data-store reference).
    fn path(&self) -> Result<String>;
}

/// Reads the task's inputs.
pub trait InputReader {
    /// The prefix (directory) holding the inputs.
    fn input_prefix(&self) -> String;
    /// The reference of the inputs file.
    fn input_path(&self) -> String;
    /// The inputs.
    fn get(&self) -> Result<LiteralMap>;
}

/// Where a task writes, and the calls that record its outputs or its error.
pub trait OutputWriter {
    /// The prefix under which outputs are stored.
    fn output_prefix(&self) -> String;
    /// The prefix for raw data this attempt produces (unique per attempt,
    /// the same in every round of it).
    ///
    /// Its forms:
    ///
    /// * **an absolute path** — what the Kozmo daemon passes, always: its
    ///   data store is the local directory `<data dir>/data`, and the prefix
    ///   is `<data dir>/data/raw/<generated name>` made absolute when the
    ///   daemon starts, even with a relative `--data-dir data` (the data
    ///   store root is resolved against the daemon's current directory
    ///   once), so it names the same directory whatever the plugin's own
    ///   current directory is;
    /// * **an absolute `file://` URL** (`file:///x` or `file://localhost/x`)
    ///   — the same thing spelled as a URL, as other hosts and
    ///   [`TestTaskContext`](crate::testing::TestTaskContext) pass it;
    /// * anything else (`s3://...`, `mem://...`) — not a local directory.
    ///
    /// A relative path is never passed. Use [`local_dir`] (or
    /// [`TaskContextExt::raw_output_dir`](crate::kit::TaskContextExt::raw_output_dir))
    /// to get the directory to write to, which answers `None` for the last
    /// form; never `Path::new(prefix)`. The directory may not exist yet.
    fn raw_output_prefix(&self) -> String;
    /// Where this attempt writes checkpoints.
    fn checkpoint_prefix(&self) -> String;
    /// Where the previous attempt wrote checkpoints (empty for the first).
    fn previous_checkpoint_prefix(&self) -> String;
    /// Records the outputs (read back by the host after Success).
    fn put_outputs(&self, outputs: LiteralMap) -> Result<()>;
    /// Records an error document; a Success with an error document becomes
    /// the failure it describes (retryable iff `recoverable`).
    fn put_error(&self, error: ExecutionError, recoverable: bool) -> Result<()>;
}

/// Blob storage, addressed by string references. A reference that escapes
/// the store's root is an error.
pub trait DataStore {
    /// Reads a whole object.
    fn read_raw(&self, reference: &str) -> Result<Vec<u8>>;
    /// Writes (replaces) a whole object.
    fn write_raw(&self, reference: &str, bytes: &[u8]) -> Result<()>;
    /// The object's size, or `None` if it does not exist.
    fn head(&self, reference: &str) -> Result<Option<u64>>;
    /// Deletes an object (deleting a missing object is not an error).
    fn delete(&self, reference: &str) -> Result<()>;
}

/// The local directory a data-store reference (such as
/// [`OutputWriter::raw_output_prefix`]) names, if it names one: an
/// absolute path, or a `file://` URL (`file:///x` or `file://localhost/x`).
/// Relative paths and other schemes (`mem://`, `s3://`, ...) are not local
/// directories: `None`.
///
/// ```
/// use std::path::PathBuf;
/// use kozmo_interface::io::local_dir;
///
/// assert_eq!(local_dir("/data/raw/x-n0-0"), Some(PathBuf::from("/data/raw/x-n0-0")));
/// assert_eq!(local_dir("file:///data/raw"), Some(PathBuf::from("/data/raw")));
/// assert_eq!(local_dir("file://localhost/data/raw"), Some(PathBuf::from("/data/raw")));
/// assert_eq!(local_dir("mem://raw"), None);
/// assert_eq!(local_dir("data/raw"), None);
/// ```
pub fn local_dir(reference: &str) -> Option<PathBuf> {
    let path = match reference.strip_prefix("file://") {
        Some(rest) => rest.strip_prefix("localhost").unwrap_or(rest),
        None => reference,
    };
    let path = Path::new(path);
    path.is_absolute().then(|| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_absolute_paths_and_file_urls_are_local() {
        assert_eq!(local_dir("/data/raw/x"), Some(PathBuf::from("/data/raw/x")));
        assert_eq!(local_dir("file:///data/raw"), Some(PathBuf::from("/data/raw")));
        assert_eq!(local_dir("file://localhost/data/raw"), Some(PathBuf::from("/data/raw")));
        assert_eq!(local_dir("file://relative/raw"), None);
        assert_eq!(local_dir("relative/raw"), None);
        assert_eq!(local_dir("s3://bucket/raw"), None);
        assert_eq!(local_dir("mem://raw"), None);
        assert_eq!(local_dir(""), None);
    }
}
