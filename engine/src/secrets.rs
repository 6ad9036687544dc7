//! Secrets from `KOZMO_SECRET_<KEY>` environment variables, then from files
//! in a configured directory. Values are never logged or put in errors.
//!
//! The variables are read once: the daemon takes a snapshot at start and
//! removes them from its environment, then builds its [`HostSecrets`] from
//! that snapshot ([`HostSecrets::with_env`]); a [`HostSecrets`] never looks
//! in the environment afterwards.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use kozmo_interface::{PluginError, Result, SecretManager};

/// Prefix of secret environment variables.
pub const ENV_PREFIX: &str = "KOZMO_SECRET_";

/// Reads secrets from the start-up snapshot of the environment and an
/// optional directory.
#[derive(Clone, Default)]
pub struct HostSecrets {
    env: Arc<BTreeMap<String, String>>,
    dir: Option<PathBuf>,
}

impl std::fmt::Debug for HostSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: values never reach a log.
        f.debug_struct("HostSecrets")
            .field("env", &self.env.keys().collect::<Vec<_>>())
            .field("dir", &self.dir)
            .finish()
    }
}

impl HostSecrets {
    /// Secrets from the `KOZMO_SECRET_<KEY>` variables of this process now
    /// and, if given, files in `dir` (embedders and tests; the daemon
    /// passes its start-up snapshot to [`HostSecrets::with_env`] instead).
    pub fn from_process_env(dir: Option<PathBuf>) -> Self {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        Self::with_env(env, dir)
    }

    /// Secrets from the given `KOZMO_SECRET_<KEY>` values (by variable
    /// name) and, if given, files in `dir`.
    pub fn with_env(env: BTreeMap<String, String>, dir: Option<PathBuf>) -> Self {
        HostSecrets {
            env: Arc::new(env),
            dir,
        }
    }

    /// `KOZMO_SECRET_<KEY>` for a key: upper case, other than `[A-Z0-9]` → `_`.
    pub fn env_name(key: &str) -> String {
        let k: String = key
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        format!("{ENV_PREFIX}{k}")
    }
}

impl SecretManager for HostSecrets {
    fn get(&self, key: &str) -> Result<String> {
        if key.is_empty() {
            return Err(PluginError::user("SecretNotFound", "empty secret key"));
        }
        if let Some(v) = self.env.get(&Self::env_name(key)) {
            return Ok(v.clone());
        }
        if let Some(dir) = &self.dir {
            let safe = !key.contains('/') && !key.contains('\\') && key != "." && key != "..";
            if safe {
                match std::fs::read_to_string(dir.join(key)) {
                    Ok(v) => return Ok(v.strip_suffix('\n').unwrap_or(&v).to_string()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(PluginError::system(
                            "SecretUnreadable",
                            format!("secret [{key}] cannot be read: {}", e.kind()),
                        ))
                    }
                }
            }
        }
        Err(PluginError::user(
            "SecretNotFound",
            format!(
                "secret [{key}] not found (set {} or a file named {key} in the secrets directory)",
                Self::env_name(key)
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_then_file_then_clear_error_without_values() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("db-pass"), "from-file\n").unwrap();
        let env = BTreeMap::from([("KOZMO_SECRET_API_TOKEN_UNIT".to_string(), "from-env".to_string())]);
        let s = HostSecrets::with_env(env, Some(dir.path().to_path_buf()));
        assert_eq!(s.get("api-token.unit").unwrap(), "from-env");
        assert_eq!(s.get("db-pass").unwrap(), "from-file");
        let e = s.get("missing").unwrap_err();
        assert_eq!(e.code, "SecretNotFound");
        assert!(e.message.contains("KOZMO_SECRET_MISSING"));
        assert!(s.get("../db-pass").is_err());
        assert!(!format!("{e:?}").contains("from-"));
        assert!(!format!("{s:?}").contains("from-env"));
    }

    #[test]
    fn a_variable_set_after_the_snapshot_is_not_seen() {
        let s = HostSecrets::with_env(BTreeMap::new(), None);
        std::env::set_var("KOZMO_SECRET_LATE_UNIT", "late");
        assert_eq!(s.get("late-unit").unwrap_err().code, "SecretNotFound");
        std::env::remove_var("KOZMO_SECRET_LATE_UNIT");
    }
}
