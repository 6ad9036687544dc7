//! The service's side of what the console inspects: why an execution
//! waits (`GET /v1/executions/{id}/wait`), the resource namespaces
//! (`GET /v1/quotas`) and an execution's files in the data store
//! (`GET /v1/executions/{id}/files`, `…/file`).
//!
//! Files: only regular files under the execution's own directories
//! (`EngineHandle::data_dirs`) are listed or read. A requested path is
//! checked lexically (relative, plain components, under one of those
//! directories), then opened one component at a time from the data store's
//! root with `openat(O_NOFOLLOW)`, so no symbolic link — not even one a
//! task made in its working directory, or swapped in meanwhile — leads
//! outside.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use super::service::service_error;
use super::DaemonService;
use kozmo_api::types::{FileChunk, FileEntry, FileList, QuotaBody, ResourceWait, WaitBody};
use kozmo_api::ServiceError;
use kozmo_engine::model::ExecPhase;
use kozmo_engine::resources::{NamespaceMembers, NamespaceUsage};

/// Most files listed per execution.
const MAX_FILES: usize = 1000;
/// Deepest directory level listed below an execution's directory.
const MAX_DEPTH: usize = 8;
/// Most holders or waiters named per namespace.
const MAX_NAMED: usize = 100;
/// Most waiters whose submission time is read to place one in line.
const MAX_PLACED: usize = 1000;
/// The plugin phase of a task waiting for a token.
const WAITING_FOR_RESOURCES: &str = "PhaseWaitingForResources";

impl DaemonService {
    pub(super) fn wait_info_now(&self, id: &str) -> Result<WaitBody, ServiceError> {
        let v = self.engine.get(id).map_err(service_error)?;
        let mut body = WaitBody {
            id: v.id.clone(),
            phase: v.phase.as_str().to_string(),
            waiting: false,
            kind: "running".into(),
            reason: None,
            resources: Vec::new(),
        };
        if v.phase.is_terminal() {
            body.kind = "finished".into();
            return Ok(body);
        }
        body.waiting = true;
        if let Some(w) = v.waiting {
            body.kind = if w.starts_with("abort pending") {
                "abort_pending"
            } else if w.ends_with("is not loaded") {
                "plugin_not_loaded"
            } else {
                "plugin_call"
            }
            .into();
            body.reason = Some(w);
            return Ok(body);
        }
        let usage = self.engine.resource_usage();
        let members = self.engine.resource_members();
        let mut waits: Vec<&NamespaceMembers> = members.iter().filter(|m| m.waiters.iter().any(|w| w == id)).collect();
        let told_to_wait = v.plugin_phase == WAITING_FOR_RESOURCES;
        if !waits.is_empty() || told_to_wait {
            body.kind = "resources".into();
            body.reason = Some(
                self.plugin_reason(id)
                    .unwrap_or_else(|| "waiting for a resource token".into()),
            );
            if waits.is_empty() {
                // A manager that cannot list its waiters (Redis): the
                // namespaces of the execution's plugin.
                let plugin = v.plugin_id.as_deref().unwrap_or_default();
                body.resources = usage
                    .iter()
                    .filter(|u| u.namespace.split(':').nth(1) == Some(plugin))
                    .map(|u| resource_wait(u, None, None))
                    .collect();
            } else {
                waits.sort_by(|a, b| a.namespace.cmp(&b.namespace));
                body.resources = waits
                    .into_iter()
                    .filter_map(|m| {
                        let u = usage.iter().find(|u| u.namespace == m.namespace)?;
                        let place = self.in_line(&m.waiters).iter().position(|w| w == id);
                        Some(resource_wait(u, Some(m), place.map(|p| p as u64 + 1)))
                    })
                    .collect();
            }
            return Ok(body);
        }
        if v.phase == ExecPhase::Queued {
            body.kind = "queued".into();
            body.reason = Some("submitted; its first round has not run yet".into());
        } else if let Some(abort) = v.abort_requested {
            body.kind = "abort_pending".into();
            body.reason = Some(format!("abort requested ({abort}); its next step aborts it"));
        } else {
            body.waiting = false;
        }
        Ok(body)
    }

    /// The reason the plugin gave in its latest task event.
    fn plugin_reason(&self, id: &str) -> Option<String> {
        let events = self.engine.events(id).ok()?;
        let last = events.iter().rev().find(|e| e.event.kind == "task")?;
        let reasons = last.event.body.get("reasons")?.as_array()?;
        reasons.last()?.as_str().map(str::to_string)
    }

    /// Waiters in order of submission (ids, then submission times read
    /// from the store; a waiter gone meanwhile is left out). More than
    /// [`MAX_PLACED`]: by id only.
    fn in_line(&self, waiters: &[String]) -> Vec<String> {
        if waiters.len() > MAX_PLACED {
            return waiters.to_vec();
        }
        let mut timed: Vec<(String, String)> = waiters
            .iter()
            .filter_map(|w| self.engine.get(w).ok().map(|v| (v.created_at, w.clone())))
            .collect();
        timed.sort();
        timed.into_iter().map(|(_, w)| w).collect()
    }

    pub(super) fn quotas_now(&self) -> Vec<QuotaBody> {
        let members: HashMap<String, NamespaceMembers> = self
            .engine
            .resource_members()
            .into_iter()
            .map(|m| (m.namespace.clone(), m))
            .collect();
        self.engine
            .resource_usage()
            .into_iter()
            .map(|u| {
                let m = members.get(&u.namespace);
                let waiters = m.map(|m| self.in_line(&m.waiters)).unwrap_or_default();
                QuotaBody {
                    namespace: u.namespace.clone(),
                    quota: u.quota,
                    in_use: u.in_use as u64,
                    waiting: u.waiting as u64,
                    holders: m
                        .map(|m| m.holders.iter().take(MAX_NAMED).cloned().collect())
                        .unwrap_or_default(),
                    waiters: waiters.into_iter().take(MAX_NAMED).collect(),
                    members_known: m.is_some(),
                }
            })
            .collect()
    }

    /// The execution's directories relative to the data store's root.
    fn own_dirs(&self, id: &str) -> Result<Vec<PathBuf>, ServiceError> {
        let root = self.engine.data_root();
        Ok(self
            .engine
            .data_dirs(id)
            .map_err(service_error)?
            .into_iter()
            .filter_map(|d| d.strip_prefix(root).ok().map(Path::to_path_buf))
            .collect())
    }

    pub(super) fn files_now(&self, id: &str) -> Result<FileList, ServiceError> {
        let root = self.engine.data_root();
        let mut list = FileList {
            items: Vec::new(),
            truncated: false,
        };
        for dir in self.own_dirs(id)? {
            walk(root, &dir, 0, &mut list);
        }
        list.items.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(list)
    }

    pub(super) fn read_file_now(
        &self,
        id: &str,
        path: &str,
        offset: u64,
        limit: usize,
    ) -> Result<FileChunk, ServiceError> {
        let not_found = || ServiceError::NotFound(format!("execution {id} has no file {path:?}"));
        let rel = Path::new(path);
        let plain = rel.components().all(|c| matches!(c, Component::Normal(_)));
        if !plain || path.ends_with('/') {
            return Err(ServiceError::BadRequest {
                detail: format!(
                    "`path` must be relative, without `.`, `..` or empty parts, as GET /v1/executions/{{id}}/files \
                     lists it; got {path:?}"
                ),
                path: Some("path".into()),
            });
        }
        if !self.own_dirs(id)?.iter().any(|d| rel.starts_with(d) && rel != d) {
            return Err(not_found());
        }
        let mut file = open_beneath(self.engine.data_root(), rel).ok_or_else(not_found)?;
        let size = file.metadata().map(|m| m.len()).map_err(|_| not_found())?;
        let offset = offset.min(size);
        file.seek(SeekFrom::Start(offset))
            .map_err(|e| ServiceError::Internal(format!("reading {path}: {e}")))?;
        let mut data = Vec::with_capacity(limit.min((size - offset) as usize));
        file.take(limit as u64)
            .read_to_end(&mut data)
            .map_err(|e| ServiceError::Internal(format!("reading {path}: {e}")))?;
        Ok(FileChunk { data, offset, size })
    }
}

fn resource_wait(u: &NamespaceUsage, m: Option<&NamespaceMembers>, position: Option<u64>) -> ResourceWait {
    ResourceWait {
        namespace: u.namespace.clone(),
        quota: u.quota,
        in_use: u.in_use as u64,
        waiting: u.waiting as u64,
        position,
        holders: m
            .map(|m| m.holders.iter().take(MAX_NAMED).cloned().collect())
            .unwrap_or_default(),
    }
}

/// Lists the regular files under `root/dir` (symbolic links are neither
/// listed nor followed).
fn walk(root: &Path, dir: &Path, depth: usize, out: &mut FileList) {
    let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let Ok(meta) = e.path().symlink_metadata() else {
            continue;
        };
        let rel = dir.join(e.file_name());
        if meta.is_dir() && depth < MAX_DEPTH {
            walk(root, &rel, depth + 1, out);
        } else if meta.is_file() {
            if out.items.len() >= MAX_FILES {
                out.truncated = true;
                return;
            }
            let Some(path) = rel.to_str() else { continue };
            out.items.push(FileEntry {
                path: path.to_string(),
                size: meta.len(),
                modified_ms: meta
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_millis() as i64),
            });
        }
    }
}

/// Opens the regular file `rel` (plain components) under `root`, one
/// component at a time, refusing any symbolic link on the way; `None` when
/// it is missing, not a regular file, or behind a link.
fn open_beneath(root: &Path, rel: &Path) -> Option<File> {
    let dir_flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    let c_root = CString::new(root.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid C string; the descriptor is owned at once.
    let mut dir = owned(unsafe { libc::open(c_root.as_ptr(), dir_flags) })?;
    let parts: Vec<_> = rel.components().collect();
    for (i, part) in parts.iter().enumerate() {
        let name = CString::new(part.as_os_str().as_bytes()).ok()?;
        let last = i + 1 == parts.len();
        // A FIFO must not block the reader: O_NONBLOCK, then only a
        // regular file is read.
        let flags = if last {
            libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK | libc::O_NOCTTY
        } else {
            dir_flags
        };
        // SAFETY: `dir` is an open directory, `name` a valid C string.
        dir = owned(unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags) })?;
    }
    let file = File::from(dir);
    let meta = file.metadata().ok()?;
    (meta.file_type().is_file() && meta.nlink() > 0).then_some(file)
}

fn owned(fd: libc::c_int) -> Option<OwnedFd> {
    // SAFETY: a descriptor just returned by open/openat, owned by no one else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_beneath_refuses_links_and_non_files() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("data");
        std::fs::create_dir_all(root.join("raw/x/shell")).unwrap();
        std::fs::write(root.join("raw/x/shell/stdout"), "hello\n").unwrap();
        std::fs::write(t.path().join("secret"), "no").unwrap();
        std::os::unix::fs::symlink(t.path().join("secret"), root.join("raw/x/link")).unwrap();
        std::os::unix::fs::symlink(t.path(), root.join("raw/x/up")).unwrap();
        let mut s = String::new();
        open_beneath(&root, Path::new("raw/x/shell/stdout"))
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello\n");
        assert!(open_beneath(&root, Path::new("raw/x/link")).is_none());
        assert!(open_beneath(&root, Path::new("raw/x/up/secret")).is_none());
        assert!(open_beneath(&root, Path::new("raw/x/shell")).is_none());
        assert!(open_beneath(&root, Path::new("raw/x/missing")).is_none());
        let mut list = FileList {
            items: Vec::new(),
            truncated: false,
        };
        walk(&root, Path::new("raw/x"), 0, &mut list);
        let paths: Vec<_> = list.items.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["raw/x/shell/stdout"]);
    }
}
