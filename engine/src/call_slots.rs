//! Which plugin call each worker is inside, kept in a small memory-mapped
//! file, `<data_dir>/plugin-calls`, so that it outlives a crash of the
//! process without any sync: the pages belong to the kernel's page cache,
//! which a dying process does not take with it (only a power loss can).
//!
//! Layout: a 64-byte header (`MAGIC`, then a `running` byte: 1 while an
//! engine runs, 0 after a clean stop) and one 128-byte slot per worker
//! (`busy` byte, call byte, id length byte, 5 reserved, the execution id).
//! A worker fills its slot before entering a plugin call and clears the
//! `busy` byte when the call returns: a few bytes written, no system call,
//! on the round's hot path.
//!
//! At start, [`Previous::read`] tells whether the last engine stopped
//! uncleanly and which executions it was inside a plugin call for
//! (crash-loop protection, see `crash_loop`).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

use memmap2::MmapMut;

const FILE_NAME: &str = "plugin-calls";
const MAGIC: &[u8; 8] = b"KZCALLS1";
const HEADER: usize = 64;
const RUNNING_AT: usize = 8;
const SLOT: usize = 128;
const ID_AT: usize = 8;
/// Longest id kept whole (client ids have at most 100 bytes).
const ID_MAX: usize = SLOT - ID_AT;

/// A plugin call the engine makes for an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// `Plugin::handle`.
    Handle = 1,
    /// `Plugin::abort`.
    Abort = 2,
    /// `Plugin::finalize`.
    Finalize = 3,
}

impl Call {
    fn from_byte(b: u8) -> Option<Call> {
        match b {
            1 => Some(Call::Handle),
            2 => Some(Call::Abort),
            3 => Some(Call::Finalize),
            _ => None,
        }
    }

    /// `handle`, `abort`, `finalize`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Call::Handle => "handle",
            Call::Abort => "abort",
            Call::Finalize => "finalize",
        }
    }
}

thread_local! {
    /// The slot of the worker running on this thread (`usize::MAX`: none).
    static WORKER_SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

/// Binds the current thread (a worker) to slot `index`.
pub(crate) fn bind_worker(index: usize) {
    WORKER_SLOT.with(|s| s.set(index));
}

/// What the previous engine on this data directory left in the file.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Previous {
    /// It did not stop cleanly (crash, kill, power loss).
    pub(crate) unclean: bool,
    /// The executions it was inside a plugin call for, and the calls.
    pub(crate) in_calls: Vec<(String, Call)>,
}

impl Previous {
    /// Reads `<data_dir>/plugin-calls` (no file: a clean first start).
    pub(crate) fn read(data_dir: &Path) -> Previous {
        let bytes = match std::fs::read(path(data_dir)) {
            Ok(b) => b,
            Err(_) => return Previous::default(),
        };
        if bytes.len() < HEADER || &bytes[..MAGIC.len()] != MAGIC {
            log::warn!("{}: not a plugin call record; ignored", path(data_dir).display());
            return Previous::default();
        }
        let in_calls = bytes[HEADER..]
            .chunks_exact(SLOT)
            .filter(|s| s[0] == 1)
            .filter_map(|s| {
                let call = Call::from_byte(s[1])?;
                let len = usize::from(s[2]).min(ID_MAX);
                let id = std::str::from_utf8(&s[ID_AT..ID_AT + len]).ok()?;
                Some((id.to_string(), call))
            })
            .collect();
        Previous {
            unclean: bytes[RUNNING_AT] == 1,
            in_calls,
        }
    }
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// The mapped file of a running engine: one slot per worker.
pub(crate) struct CallSlots {
    map: MmapMut,
    /// `map`'s base address: each worker writes its own slot only.
    base: *mut u8,
    slots: usize,
}

// SAFETY: the mapping lives as long as `CallSlots`; each worker thread
// writes only its own slot (its index), the busy byte is accessed
// atomically, and readers of other slots only read labels.
unsafe impl Send for CallSlots {}
// SAFETY: see `Send`.
unsafe impl Sync for CallSlots {}

impl CallSlots {
    /// Creates (or resets) the file with `slots` empty slots and marks an
    /// engine as running. Call it after [`Previous::read`] was acted upon.
    pub(crate) fn open(data_dir: &Path, slots: usize) -> std::io::Result<CallSlots> {
        let p = path(data_dir);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)?;
        file.set_len((HEADER + slots * SLOT) as u64)?;
        // SAFETY: the file is ours (the data directory lock is held) and
        // is not resized while mapped.
        let mut map = unsafe { MmapMut::map_mut(&file)? };
        map[..MAGIC.len()].copy_from_slice(MAGIC);
        map[RUNNING_AT] = 1;
        let base = map.as_mut_ptr();
        Ok(CallSlots { map, base, slots })
    }

    fn busy(&self, slot: usize) -> &AtomicU8 {
        // SAFETY: `slot < self.slots`, so the byte is inside the mapping;
        // AtomicU8 has the layout of u8.
        unsafe { AtomicU8::from_ptr(self.base.add(HEADER + slot * SLOT)) }
    }

    /// Records that the current worker enters `call` for execution `id`;
    /// the record is cleared when the guard drops (the call returned or
    /// unwound). Threads that are not workers record nothing.
    pub(crate) fn enter(&self, id: &str, call: Call) -> InCall<'_> {
        let slot = WORKER_SLOT.with(Cell::get);
        if slot >= self.slots {
            return InCall { slots: self, slot };
        }
        let len = id.len().min(ID_MAX);
        // SAFETY: the slot is inside the mapping and only this worker
        // writes it; its busy byte is 0, so no reader takes these bytes.
        unsafe {
            let at = self.base.add(HEADER + slot * SLOT);
            at.add(1).write(call as u8);
            at.add(2).write(len as u8);
            std::ptr::copy_nonoverlapping(id.as_ptr(), at.add(ID_AT), len);
        }
        self.busy(slot).store(1, Ordering::Release);
        InCall { slots: self, slot }
    }

    /// The call slot `slot`'s worker is inside, if any.
    pub(crate) fn call_of(&self, slot: usize) -> Option<Call> {
        if slot >= self.slots || self.busy(slot).load(Ordering::Acquire) == 0 {
            return None;
        }
        // SAFETY: inside the mapping; a torn read only mislabels the call.
        Call::from_byte(unsafe { self.base.add(HEADER + slot * SLOT + 1).read_volatile() })
    }

    /// A clean stop: no call is in progress any more as far as the next
    /// start is concerned (calls still stuck are not crashes), and the
    /// engine is marked stopped; synced, so a power loss right after a
    /// clean stop is not taken for a crash.
    pub(crate) fn mark_clean(&self) {
        // SAFETY: the range is inside the mapping; workers are stopped (a
        // stuck one only ever clears its busy byte).
        unsafe { std::ptr::write_bytes(self.base.add(RUNNING_AT), 0, self.map.len() - RUNNING_AT) };
        if let Err(e) = self.map.flush() {
            log::warn!("cannot sync the plugin call record: {e}");
        }
    }
}

/// A worker inside a plugin call (see [`CallSlots::enter`]).
pub(crate) struct InCall<'a> {
    slots: &'a CallSlots,
    slot: usize,
}

impl Drop for InCall<'_> {
    fn drop(&mut self) {
        if self.slot < self.slots.slots {
            self.slots.busy(self.slot).store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_in_progress_survives_in_the_file_and_a_clean_stop_clears_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Previous::read(dir.path()), Previous::default(), "no file yet");
        let slots = CallSlots::open(dir.path(), 4).unwrap();
        bind_worker(2);
        {
            let _in = slots.enter("exec-1", Call::Abort);
            assert_eq!(slots.call_of(2), Some(Call::Abort));
            // What a crash at this point leaves behind.
            let p = Previous::read(dir.path());
            assert!(p.unclean);
            assert_eq!(p.in_calls, vec![("exec-1".to_string(), Call::Abort)]);
        }
        assert_eq!(slots.call_of(2), None, "cleared when the call returns");
        let p = Previous::read(dir.path());
        assert!(p.unclean && p.in_calls.is_empty(), "running, in no call");
        let _in = slots.enter("exec-2", Call::Handle);
        slots.mark_clean();
        assert_eq!(Previous::read(dir.path()), Previous::default());
        bind_worker(usize::MAX);
    }

    #[test]
    fn threads_that_are_not_workers_record_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let slots = CallSlots::open(dir.path(), 1).unwrap();
        let _in = slots.enter("x", Call::Handle);
        assert!(Previous::read(dir.path()).in_calls.is_empty());
    }
}
