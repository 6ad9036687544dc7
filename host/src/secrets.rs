//! Secrets from `KOZMO_SECRET_<KEY>` environment variables, then from files
//! in a configured directory. Values are never logged or put in errors.

use std::path::PathBuf;

use kozmo_interface::{PluginError, Result, SecretManager};

/// Prefix of secret environment variables.
pub const ENV_PREFIX: &str = "KOZMO_SECRET_";

/// Reads secrets from the environment and an optional directory.
#[derive(Debug, Clone, Default)]
pub struct HostSecrets {
    dir: Option<PathBuf>,
}

impl HostSecrets {
    /// Secrets from the environment and, if given, files in `dir`.
    pub fn new(dir: Option<PathBuf>) -> Self {
        HostSecrets { dir }
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
        if let Ok(v) = std::env::var(Self::env_name(key)) {
            return Ok(v);
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
        std::env::set_var("KOZMO_SECRET_API_TOKEN_UNIT", "from-env");
        let s = HostSecrets::new(Some(dir.path().to_path_buf()));
        assert_eq!(s.get("api-token.unit").unwrap(), "from-env");
        assert_eq!(s.get("db-pass").unwrap(), "from-file");
        let e = s.get("missing").unwrap_err();
        assert_eq!(e.code, "SecretNotFound");
        assert!(e.message.contains("KOZMO_SECRET_MISSING"));
        assert!(s.get("../db-pass").is_err());
        assert!(!format!("{e:?}").contains("from-"));
    }
}
