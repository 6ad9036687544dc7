//! `run_as`: the user the shell plugin runs commands as.
//!
//! Set with the daemon's plugin setting `[plugins.settings.shell] run_as =
//! "<user>"` in kozmo.toml, which the daemon passes as the variable
//! [`RUN_AS_ENV`] (set it directly to the same effect). Read once, when the
//! plugin loads: an unknown user, or a daemon that cannot switch users,
//! fails the load with a message that says what to do.
//!
//! The child switches (supplementary groups, group, then user) after it
//! changed into the working directory and before it executes `/bin/sh`, so
//! the command can use its working directory even when the daemon's data
//! directory (mode 0700) is closed to it.

use std::ffi::CString;

use nix::unistd::{getgrouplist, Gid, Uid, User};

/// The variable that names the user (the `run_as` plugin setting).
pub const RUN_AS_ENV: &str = "KOZMO_PLUGIN_SHELL_RUN_AS";

/// A resolved user to run commands as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunAs {
    /// User name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Every group the user is in (from the group database), primary included.
    pub groups: Vec<u32>,
    /// Home directory (the command's `HOME`).
    pub home: String,
}

/// Linux capability numbers (`linux/capability.h`).
const CAP_CHOWN: u32 = 0;
const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;

/// Whether this process has a capability in its effective set.
fn has_capability(cap: u32) -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|bits| bits & (1 << cap) != 0)
}

impl RunAs {
    /// The setting from the environment: `None` when unset or empty.
    pub fn from_env() -> Result<Option<RunAs>, String> {
        match std::env::var(RUN_AS_ENV) {
            Ok(name) if !name.trim().is_empty() => Self::resolve(name.trim()).map(Some),
            Ok(_) | Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(format!("{RUN_AS_ENV} is not valid UTF-8")),
        }
    }

    /// Looks the user up and checks that this process may switch to it.
    pub fn resolve(name: &str) -> Result<RunAs, String> {
        let setting = format!("shell plugin setting run_as ({RUN_AS_ENV})");
        let user = match User::from_name(name) {
            Ok(Some(u)) => u,
            Ok(None) => {
                return Err(format!(
                    "{setting} names the user [{name}], which does not exist on this machine: \
                     create it (e.g. useradd --system --no-create-home {name}) or name another"
                ))
            }
            Err(e) => return Err(format!("{setting}: cannot look up the user [{name}]: {e}")),
        };
        let groups = CString::new(name)
            .ok()
            .and_then(|c| getgrouplist(&c, user.gid).ok())
            .unwrap_or_else(|| vec![user.gid]);
        let me = Uid::effective();
        if !me.is_root() && me != user.uid {
            let missing: Vec<&str> = [
                (CAP_SETUID, "CAP_SETUID"),
                (CAP_SETGID, "CAP_SETGID"),
                (CAP_CHOWN, "CAP_CHOWN"),
            ]
            .into_iter()
            .filter(|(cap, _)| !has_capability(*cap))
            .map(|(_, n)| n)
            .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "{setting} asks for user [{name}] (uid {}), but the daemon runs as uid {me} without {}: \
                     start it as root, or give it those capabilities (systemd: AmbientCapabilities=CAP_SETUID \
                     CAP_SETGID CAP_CHOWN), or unset run_as",
                    user.uid,
                    missing.join(", ")
                ));
            }
        }
        Ok(RunAs {
            name: name.to_string(),
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
            groups: groups.into_iter().map(Gid::as_raw).collect(),
            home: user.dir.to_string_lossy().into_owned(),
        })
    }

    /// Whether switching changes anything (the daemon may already be that user).
    pub fn switches(&self) -> bool {
        Uid::effective().as_raw() != self.uid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unknown_user_is_a_clear_error() {
        let err = RunAs::resolve("no-such-user-kozmo-test").unwrap_err();
        assert!(err.contains("does not exist") && err.contains(RUN_AS_ENV), "{err}");
    }

    #[test]
    fn the_current_user_resolves_and_does_not_switch() {
        let me = User::from_uid(Uid::effective()).unwrap().unwrap();
        let r = RunAs::resolve(&me.name).unwrap();
        assert_eq!(r.uid, me.uid.as_raw());
        assert!(r.groups.contains(&me.gid.as_raw()));
        assert!(!r.switches());
    }
}
