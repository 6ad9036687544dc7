//! The open-file limit against the connection cap: the soft limit is raised
//! to the hard one (as Go and many servers do at start), and the cap lowered,
//! with a warning, when even that leaves too few descriptors for the store,
//! the plugins and their children.

/// Descriptors kept for everything but HTTP connections.
const RESERVED_FDS: u64 = 256;

/// The connection cap that fits the open-file limit (raising the soft limit
/// first).
pub(crate) fn connections_within_fd_limit(wanted: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return wanted;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    let room = lim.rlim_cur.saturating_sub(RESERVED_FDS).max(16);
    if (wanted as u64) <= room {
        return wanted;
    }
    log::warn!(
        "http_max_connections {wanted} does not fit the open-file limit {} (ulimit -n); serving at most {room} \
         connections: raise the limit (LimitNOFILE= in the systemd unit) to allow more",
        lim.rlim_cur
    );
    room as usize
}
