//! One end of a connection to (or from) a plugin's child process: framed
//! reads and writes with reusable buffers and an optional deadline, and the
//! descriptor passing that creates call connections.

use std::io::{self, BufReader, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use std::io::Write;

use kozmo_isolation_protocol::{encode_frame, read_frame, Frame, ProtocolError};

/// A framed connection over Unix stream sockets. Reads are buffered (a
/// frame's length and payload usually arrive in one `read`); frames may be
/// held back ([`Conn::hold`]) to leave with the next one sent.
///
/// A call connection reads and writes on two different sockets, one socket
/// pair per direction ([`Conn::one_way`]): on a single pair, the kernel
/// wakes a reader waiting on its socket whenever the peer consumes what
/// that socket sent (freeing the sent buffer signals "writable" to every
/// waiter on the sender's socket, readers included), so each round trip
/// cost the waiting side a spurious wake-up and sleep.
pub struct Conn {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    timeout: Option<Duration>,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
}

impl Conn {
    /// A connection that reads frames from `reader` and writes them to
    /// `writer`, each one end of its own socket pair (the peer holds the
    /// other two ends): nobody ever waits to read on the socket this side
    /// writes to, so no write-space wake-up finds a sleeping reader.
    pub fn one_way(reader: UnixStream, writer: UnixStream) -> Self {
        Conn {
            reader: BufReader::with_capacity(8 << 10, reader),
            writer,
            timeout: None,
            rbuf: Vec::new(),
            wbuf: Vec::new(),
        }
    }

    /// Sends one frame, after any frames held back, in one write.
    pub fn send(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        encode_frame(frame, &mut self.wbuf)?;
        self.flush()
    }

    /// Encodes `frame` to be written with the next [`Conn::send`] or
    /// [`Conn::flush`].
    pub fn hold(&mut self, frame: &Frame) -> Result<(), ProtocolError> {
        encode_frame(frame, &mut self.wbuf)
    }

    /// Writes the frames held back, if any.
    pub fn flush(&mut self) -> Result<(), ProtocolError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let r = self.writer.write_all(&self.wbuf);
        self.wbuf.clear();
        Ok(r?)
    }

    /// Reads one frame, waiting at most `timeout` for it (`None`: no
    /// limit); running out is an [`io::ErrorKind::WouldBlock`] or
    /// `TimedOut` I/O error (see [`is_timeout`]).
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<Frame, ProtocolError> {
        if timeout != self.timeout {
            self.reader.get_ref().set_read_timeout(timeout)?;
            self.timeout = timeout;
        }
        let frame = read_frame(&mut self.reader, &mut self.rbuf);
        self.shrink();
        frame
    }

    /// Sends `frame` and reads the answer.
    pub fn request(&mut self, frame: &Frame) -> Result<Frame, ProtocolError> {
        self.send(frame)?;
        self.recv(None)
    }

    /// Keeps one unusually large frame from pinning its buffer for good.
    fn shrink(&mut self) {
        if self.rbuf.capacity() > 1 << 20 {
            self.rbuf = Vec::new();
        }
        if self.wbuf.is_empty() && self.wbuf.capacity() > 1 << 20 {
            self.wbuf = Vec::new();
        }
    }
}

/// Whether a read failed because its deadline passed.
pub fn is_timeout(e: &ProtocolError) -> bool {
    matches!(e, ProtocolError::Io(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut))
}

/// Room for the control message of `fds` descriptors.
fn control_buffer(fds: usize) -> Vec<u8> {
    // SAFETY: CMSG_SPACE only computes a size.
    vec![0u8; unsafe { libc::CMSG_SPACE((fds * std::mem::size_of::<RawFd>()) as u32) } as usize]
}

/// A message header over one data buffer and a control buffer; both must
/// outlive its use.
fn message(iov: &mut libc::iovec, control: &mut [u8]) -> libc::msghdr {
    // SAFETY: msghdr is plain data; zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = control.len() as _;
    msg
}

/// Sends `bytes` with `fds` attached (`SCM_RIGHTS`, one control message)
/// in one `sendmsg`.
pub fn send_with_fds(socket: &UnixStream, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    let mut control = control_buffer(fds.len());
    let msg = message(&mut iov, &mut control);
    // SAFETY: the control buffer is CMSG_SPACE(fds.len() fds) bytes, so the
    // first header and its data fit in it.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
        let data = libc::CMSG_DATA(cmsg) as *mut RawFd;
        for (i, fd) in fds.iter().enumerate() {
            std::ptr::write_unaligned(data.add(i), *fd);
        }
    }
    let mut sent = 0;
    while sent == 0 {
        // SAFETY: msg points at live buffers (see above).
        let n = unsafe { libc::sendmsg(socket.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        sent = n as usize;
    }
    // The descriptor went with the first bytes; the rest is plain data.
    if sent < bytes.len() {
        use std::io::Write;
        (&*socket).write_all(&bytes[sent..])?;
    }
    Ok(())
}

/// Reads a socket with `recvmsg`, keeping the descriptors that arrive with
/// the bytes for [`FdReader::take_fds`]: the descriptors of one message
/// together, messages in order.
pub struct FdReader {
    socket: UnixStream,
    fds: std::collections::VecDeque<Vec<OwnedFd>>,
}

impl FdReader {
    /// Reads `socket`.
    pub fn new(socket: UnixStream) -> Self {
        FdReader {
            socket,
            fds: Default::default(),
        }
    }

    /// The descriptors of the oldest message that brought some and whose
    /// descriptors were not taken yet.
    pub fn take_fds(&mut self) -> Option<Vec<OwnedFd>> {
        self.fds.pop_front()
    }
}

impl Read for FdReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        const MAX_FDS: usize = 8;
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr() as *mut libc::c_void,
            iov_len: buf.len(),
        };
        let mut control = control_buffer(MAX_FDS);
        let mut msg = message(&mut iov, &mut control);
        let n = loop {
            // SAFETY: as above; MSG_CMSG_CLOEXEC keeps received fds out of
            // anything the plugin spawns.
            let n = unsafe { libc::recvmsg(self.socket.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        };
        // SAFETY: the kernel filled msg_control; CMSG_* walk it within
        // msg_controllen, and SCM_RIGHTS data holds whole descriptors.
        let mut received = Vec::new();
        unsafe {
            let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
            while !cmsg.is_null() {
                if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(cmsg) as *const RawFd;
                    let header = libc::CMSG_LEN(0) as usize;
                    let count = ((*cmsg).cmsg_len as usize - header) / std::mem::size_of::<RawFd>();
                    for i in 0..count {
                        let fd = std::ptr::read_unaligned(data.add(i));
                        received.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
            }
        }
        // The kernel ends a read at a message that carries descriptors, so
        // these are that one message's.
        if !received.is_empty() {
            self.fds.push_back(received);
        }
        Ok(n)
    }
}
