//! The daemon's decoder fed whatever a hostile child could write: a stream
//! of frames is read until the first error, and every frame that decodes
//! must encode again to a frame that decodes to itself. Nothing may panic,
//! and no allocation may exceed what the input itself declares within the
//! frame limit.
#![no_main]

use std::io::Cursor;

use kozmo_isolation_protocol::{encode_frame, read_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut input = Cursor::new(data);
    let mut buf = Vec::new();
    while let Ok(frame) = read_frame(&mut input, &mut buf) {
        let mut again = Vec::new();
        encode_frame(&frame, &mut again).expect("a decoded frame encodes");
        let back = read_frame(&mut Cursor::new(&again), &mut Vec::new()).expect("and decodes again");
        // NaN in a metric value is not equal to itself; compare the bytes.
        let mut twice = Vec::new();
        encode_frame(&back, &mut twice).expect("a decoded frame encodes");
        assert_eq!(again, twice);
    }
});
