//! Literal JSON decoding (`kozmo_interface::literals`), the reader of every
//! task's inputs and of every stored output: bytes that parse as JSON are
//! decoded as a map of literals (the tagged and the plain forms).
//!
//! Asserts, beyond "no panic": a decoded map serialises (tagged form), that
//! text decodes to an equal map, and serialising that gives the same text
//! (the tagged form is a fixed point, which the store relies on when it
//! reads outputs back).
#![no_main]

use kozmo_interface::literals::LiteralMap;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(map) = serde_json::from_slice::<LiteralMap>(data) else {
        return;
    };
    let text = serde_json::to_string(&map).expect("a decoded literal map serialises");
    let back: LiteralMap = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text} does not decode: {e}"));
    assert_eq!(back, map, "tagged form {text} decodes to another value");
    let again = serde_json::to_string(&back).expect("serialises");
    assert_eq!(again, text, "the tagged form is not a fixed point");
});
