//! Length-prefixed bincode frames: encoding, and a decoder that bounds
//! everything by the frame's own length.

use std::fmt;
use std::io::{self, Read, Write};

use crate::{Frame, MAX_BATCH_CALLS};

/// The longest frame either side accepts (payload bytes, without the
/// 4-byte length). A data-store object larger than this cannot cross.
pub const MAX_FRAME_LEN: usize = 64 << 20;

/// Why a frame could not be read or written.
#[derive(Debug)]
pub enum ProtocolError {
    /// The peer closed the connection between frames.
    Closed,
    /// Reading or writing failed (including a cut frame and a timeout).
    Io(io::Error),
    /// A frame declared (or would need) more than [`MAX_FRAME_LEN`] bytes.
    TooLarge(usize),
    /// The bytes are not a frame.
    Malformed(String),
    /// A [`Frame::Batch`] with no calls or more than [`MAX_BATCH_CALLS`].
    BatchSize(usize),
    /// A frame decoded without using all of its bytes.
    Trailing {
        /// Bytes the frame used.
        used: usize,
        /// Bytes it declared.
        len: usize,
    },
}

impl fmt::Display for ProtocolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProtocolError::Closed => write!(f, "connection closed"),
            ProtocolError::Io(e) => write!(f, "i/o error: {e}"),
            ProtocolError::TooLarge(n) => write!(f, "frame of {n} bytes is over the {MAX_FRAME_LEN}-byte limit"),
            ProtocolError::Malformed(e) => write!(f, "malformed frame: {e}"),
            ProtocolError::BatchSize(n) => {
                write!(f, "malformed frame: a batch of {n} calls (1 to {MAX_BATCH_CALLS})")
            }
            ProtocolError::Trailing { used, len } => {
                write!(f, "malformed frame: {used} of its {len} bytes form a frame")
            }
        }
    }
}

impl std::error::Error for ProtocolError {}

impl From<io::Error> for ProtocolError {
    fn from(e: io::Error) -> Self {
        ProtocolError::Io(e)
    }
}

fn config() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<MAX_FRAME_LEN>()
}

/// Appends `frame` (length and payload) to `out`.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) -> Result<(), ProtocolError> {
    check_batch(frame)?;
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    bincode::serde::encode_into_std_write(frame, out, config())
        .map_err(|e| ProtocolError::Malformed(format!("cannot encode {}: {e}", frame.name())))?;
    let len = out.len() - start - 4;
    if len > MAX_FRAME_LEN {
        out.truncate(start);
        return Err(ProtocolError::TooLarge(len));
    }
    out[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Encodes `frame` and writes it with one `write_all`; `buf` is scratch.
pub fn write_frame(w: &mut impl Write, frame: &Frame, buf: &mut Vec<u8>) -> Result<(), ProtocolError> {
    buf.clear();
    encode_frame(frame, buf)?;
    w.write_all(buf)?;
    Ok(())
}

/// Decodes one frame's payload (the bytes after its length), which it must
/// use exactly.
pub fn decode_payload(payload: &[u8]) -> Result<Frame, ProtocolError> {
    if payload.len() > MAX_FRAME_LEN {
        return Err(ProtocolError::TooLarge(payload.len()));
    }
    let (frame, used) = bincode::serde::decode_from_slice::<Frame, _>(payload, config())
        .map_err(|e| ProtocolError::Malformed(e.to_string()))?;
    if used != payload.len() {
        return Err(ProtocolError::Trailing {
            used,
            len: payload.len(),
        });
    }
    check_batch(&frame)?;
    Ok(frame)
}

/// Refuses an empty or oversized [`Frame::Batch`].
fn check_batch(frame: &Frame) -> Result<(), ProtocolError> {
    match frame {
        Frame::Batch(calls) if calls.is_empty() || calls.len() > MAX_BATCH_CALLS => {
            Err(ProtocolError::BatchSize(calls.len()))
        }
        _ => Ok(()),
    }
}

/// Reads one frame; `buf` is scratch (it grows to the largest frame read).
/// A clean end of stream before a frame is [`ProtocolError::Closed`].
pub fn read_frame(r: &mut impl Read, buf: &mut Vec<u8>) -> Result<Frame, ProtocolError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Err(ProtocolError::Closed),
            Ok(0) => return Err(ProtocolError::Io(io::ErrorKind::UnexpectedEof.into())),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(ProtocolError::Io(e)),
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_LEN {
        return Err(ProtocolError::TooLarge(len));
    }
    // Grown as bytes arrive, so a length the peer never fills costs nothing.
    buf.clear();
    r.take(len as u64).read_to_end(buf)?;
    if buf.len() < len {
        return Err(ProtocolError::Io(io::ErrorKind::UnexpectedEof.into()));
    }
    decode_payload(buf)
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;
    use crate::{Call, Outcome, Service, Value, WireError};

    fn round_trip(frame: Frame) {
        let mut bytes = Vec::new();
        encode_frame(&frame, &mut bytes).unwrap();
        let mut buf = Vec::new();
        let back = read_frame(&mut Cursor::new(&bytes), &mut buf).unwrap();
        assert_eq!(back, frame);
    }

    #[test]
    fn frames_round_trip() {
        round_trip(Frame::Call(Call::Handle { entry: "noop".into() }));
        round_trip(Frame::Service(Service::DataWrite {
            reference: "a/b".into(),
            bytes: vec![1, 2, 3],
        }));
        round_trip(Frame::Reply(Ok(Value::State(3, Some(vec![9])))));
        round_trip(Frame::Done(Outcome::Handled(Err(WireError {
            code: "C".into(),
            message: "m".into(),
            kind: 2,
            retryable: true,
        }))));
        round_trip(Frame::NewConnection);
        round_trip(Frame::Done(Outcome::HandledPlain(crate::PlainTransition {
            ttype: 1,
            phase: -3,
            version: 7,
            cleanup_on_failure: true,
            times: Some((Some(crate::WireTime { secs: 5, nanos: 6 }), None)),
        })));
        round_trip(Frame::Batch(vec![
            Call::Handle { entry: "noop".into() },
            Call::Handle { entry: "echo".into() },
        ]));
    }

    #[test]
    fn a_batch_must_hold_one_to_max_calls() {
        let call = Call::Handle { entry: "noop".into() };
        for n in [0, MAX_BATCH_CALLS + 1] {
            let frame = Frame::Batch(vec![call.clone(); n]);
            assert!(matches!(encode_frame(&frame, &mut Vec::new()), Err(ProtocolError::BatchSize(m)) if m == n));
            // Encoded by hand (bincode, as a peer that skips the check would).
            let payload = bincode::serde::encode_to_vec(&frame, config()).unwrap();
            assert!(matches!(decode_payload(&payload), Err(ProtocolError::BatchSize(m)) if m == n));
        }
        let full = Frame::Batch(vec![call; MAX_BATCH_CALLS]);
        round_trip(full);
    }

    #[test]
    fn a_batch_claiming_more_calls_than_its_bytes_is_malformed() {
        // Frame::Batch, then a call count of 2^60 in a few bytes.
        let mut p = vec![11u8, 253];
        p.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(decode_payload(&p), Err(ProtocolError::Malformed(_))));
        // A count that fits, and a cut second call.
        let mut bytes = Vec::new();
        let frame = Frame::Batch(vec![Call::Handle { entry: "noop".into() }; 2]);
        encode_frame(&frame, &mut bytes).unwrap();
        let cut = &bytes[4..bytes.len() - 2];
        assert!(matches!(decode_payload(cut), Err(ProtocolError::Malformed(_))));
    }

    #[test]
    fn a_clean_end_is_closed_and_a_cut_frame_is_an_io_error() {
        let mut buf = Vec::new();
        assert!(matches!(
            read_frame(&mut Cursor::new(&[]), &mut buf),
            Err(ProtocolError::Closed)
        ));
        assert!(matches!(
            read_frame(&mut Cursor::new(&[5, 0]), &mut buf),
            Err(ProtocolError::Io(_))
        ));
        let mut bytes = Vec::new();
        encode_frame(&Frame::NewConnection, &mut bytes).unwrap();
        bytes[0] += 3;
        assert!(matches!(
            read_frame(&mut Cursor::new(&bytes), &mut buf),
            Err(ProtocolError::Io(_))
        ));
    }

    #[test]
    fn a_length_the_peer_never_fills_allocates_nothing_up_front() {
        let mut buf = Vec::new();
        let claim = (MAX_FRAME_LEN as u32).to_le_bytes();
        assert!(matches!(
            read_frame(&mut Cursor::new(&claim), &mut buf),
            Err(ProtocolError::Io(_))
        ));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn an_oversized_length_is_refused_before_allocating() {
        let mut buf = Vec::new();
        let err = read_frame(&mut Cursor::new(&[0xff, 0xff, 0xff, 0xff]), &mut buf).unwrap_err();
        assert!(matches!(err, ProtocolError::TooLarge(n) if n == u32::MAX as usize));
        assert!(buf.capacity() < 1024);
    }

    #[test]
    fn hostile_payloads_are_clean_errors() {
        // An unknown variant tag.
        assert!(matches!(decode_payload(&[200]), Err(ProtocolError::Malformed(_))));
        // A string claiming 2^60 bytes inside a small frame.
        let mut p = vec![7u8]; // Frame::Call
        p.push(1); // Call::Handle
        p.push(253); // u64 length follows
        p.extend_from_slice(&(1u64 << 60).to_le_bytes());
        assert!(matches!(decode_payload(&p), Err(ProtocolError::Malformed(_))));
        // Invalid UTF-8 in a string.
        assert!(matches!(
            decode_payload(&[7, 1, 2, 0xff, 0xfe]),
            Err(ProtocolError::Malformed(_))
        ));
        // Bytes left over.
        let mut bytes = Vec::new();
        encode_frame(&Frame::NewConnection, &mut bytes).unwrap();
        let mut payload = bytes[4..].to_vec();
        payload.push(0);
        assert!(matches!(decode_payload(&payload), Err(ProtocolError::Trailing { .. })));
    }
}
