//! The wire protocol between the `kozmo` daemon and the child process that
//! hosts an isolated plugin library (`kozmo __plugin-host`).
//!
//! Two kinds of connection, both Unix stream sockets:
//!
//! * the **control** connection (the child's inherited descriptor): the
//!   child's [`Frame::Hello`], its log records, the calls its long-lived
//!   handles make from any thread (refresh signals, metrics, enqueue), and
//!   the daemon's [`Frame::NewConnection`] (a new call connection's two
//!   descriptors ride along as `SCM_RIGHTS`);
//! * **call** connections, one per call in flight, each one socket pair per
//!   direction (so neither side is woken when the other merely consumes
//!   what it sent, as it would be on a single pair): the daemon sends a
//!   [`Frame::Call`]; the child answers with any number of
//!   [`Frame::Service`] requests (the plugin calling back into the host),
//!   each answered by one [`Frame::Reply`], then exactly one
//!   [`Frame::Done`]. Calls on one connection are strictly nested, so no
//!   call ids are needed there; concurrency comes from several connections.
//!   A [`Frame::Batch`] carries several calls at once (up to
//!   [`MAX_BATCH_CALLS`]): the child runs them in order, each as if it came
//!   alone (its services, then its `Done`), so the `Done` frames say which
//!   call the next services belong to. The child may hold back a batch's
//!   `Done` frames and write them together (before its next `Service`, at
//!   the end of the batch, or once a millisecond has passed), so a batch of
//!   quick calls costs one write and one wake-up each way.
//!
//! Every frame is a little-endian `u32` length followed by that many bytes
//! of bincode 2 (serde, standard configuration). Values of the plugin
//! interface that evolve (task templates, literals, metadata, phase infos,
//! namespaces) travel as JSON text inside the frames, as they do across the
//! FFI boundary; this crate does not depend on the interface.
//!
//! The decoder never trusts its peer: a frame longer than [`MAX_FRAME_LEN`]
//! is refused before anything is allocated, bincode's allocation limit is
//! the frame's own length, a frame must be consumed exactly, and every
//! failure is a [`ProtocolError`], never a panic.

mod codec;
mod frames;

pub use codec::{decode_payload, encode_frame, read_frame, write_frame, ProtocolError, MAX_FRAME_LEN};
pub use frames::{
    Call, EntryInfo, Frame, Hello, Library, LogRecord, MetricKind, MetricOp, OpenFailure, Outcome, PlainTransition,
    Service, Value, WireError, WireTime, MAX_BATCH_CALLS, PROTOCOL_VERSION,
};
