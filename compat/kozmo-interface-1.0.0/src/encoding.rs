//! Generated names: shortening of too-long names into fixed-length unique ids.
//!
//! Names whose UTF-8 byte length fits within a maximum length are kept as is;
//! longer names are replaced by `"f"` followed by the base32 encoding (alphabet
//! `abcdefghijklmnopqrstuvwxyz123456`, no padding) of their FNV-1a hash.
//!
//! ```
//! use kozmo_interface::encoding::fixed_length_unique_id;
//!
//! assert_eq!(fixed_length_unique_id("short", 10).unwrap(), "short");
//! assert_eq!(fixed_length_unique_id(&"x".repeat(24), 20).unwrap(), "fuaa3aji");
//! ```

use std::fmt;
use std::sync::OnceLock;

use data_encoding::{Encoding, Specification};

/// FNV-1a variant used to hash too-long names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Algorithm {
    /// 32-bit FNV-1a (hashed form is 8 characters long).
    #[default]
    Fnv32,
    /// 64-bit FNV-1a (hashed form is 14 characters long).
    Fnv64,
    /// 128-bit FNV-1a (hashed form is 27 characters long).
    Fnv128,
}

/// Error: the max length is smaller than the hashed form; carries the hashed
/// string anyway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodingError {
    /// The hashed form of the input, which is longer than `max_length`.
    pub hashed: String,
    /// The requested maximum length.
    pub max_length: usize,
}

impl fmt::Display for EncodingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "max Length is too small, cannot create an encoded string that is so small \
             (hashed value {} is longer than {})",
            self.hashed, self.max_length
        )
    }
}

impl std::error::Error for EncodingError {}

/// Prefix written before the base32-encoded hash.
const HASH_PREFIX: &str = "f";

/// Lower-case base32 alphabet used for the hashed form.
const BASE32_ALPHABET: &str = "abcdefghijklmnopqrstuvwxyz123456";

/// Returns the (lazily built) base32 encoding without padding.
fn base32() -> &'static Encoding {
    static ENCODING: OnceLock<Encoding> = OnceLock::new();
    ENCODING.get_or_init(|| {
        let mut spec = Specification::new();
        spec.symbols.push_str(BASE32_ALPHABET);
        spec.encoding().expect("valid base32 specification for generated names")
    })
}

fn fnv1a_32(bytes: &[u8]) -> [u8; 4] {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u32::from(b)).wrapping_mul(PRIME))
        .to_be_bytes()
}

fn fnv1a_64(bytes: &[u8]) -> [u8; 8] {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
        .to_be_bytes()
}

fn fnv1a_128(bytes: &[u8]) -> [u8; 16] {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013B;
    bytes
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u128::from(b)).wrapping_mul(PRIME))
        .to_be_bytes()
}

/// Hashes `input` with `algorithm` and returns the prefixed base32 form.
fn hashed_form(input: &str, algorithm: Algorithm) -> String {
    let bytes = input.as_bytes();
    let encoded = match algorithm {
        Algorithm::Fnv32 => base32().encode(&fnv1a_32(bytes)),
        Algorithm::Fnv64 => base32().encode(&fnv1a_64(bytes)),
        Algorithm::Fnv128 => base32().encode(&fnv1a_128(bytes)),
    };
    let mut out = String::with_capacity(HASH_PREFIX.len() + encoded.len());
    out.push_str(HASH_PREFIX);
    out.push_str(&encoded);
    out
}

/// Returns `input` unchanged if its UTF-8 byte length is at most `max_length`,
/// otherwise a unique id derived from its 32-bit FNV-1a hash (8 characters).
///
/// Fails with [`EncodingError`] if the hashed form is longer than `max_length`.
///
/// ```
/// use kozmo_interface::encoding::fixed_length_unique_id;
///
/// assert_eq!(fixed_length_unique_id("x", 5).unwrap(), "x");
/// assert_eq!(fixed_length_unique_id(&"x".repeat(24), 20).unwrap(), "fuaa3aji");
/// let err = fixed_length_unique_id("xx", 1).unwrap_err();
/// assert_eq!(err.hashed, "flfryc2i");
/// ```
pub fn fixed_length_unique_id(input: &str, max_length: usize) -> Result<String, EncodingError> {
    fixed_length_unique_id_with(input, max_length, Algorithm::Fnv32)
}

/// Like [`fixed_length_unique_id`], but with an explicit hashing [`Algorithm`].
///
/// The hashed form is 8 (`Fnv32`), 14 (`Fnv64`) or 27 (`Fnv128`) characters
/// long and starts with `'f'`.
///
/// ```
/// use kozmo_interface::encoding::{fixed_length_unique_id_with, Algorithm};
///
/// let id = fixed_length_unique_id_with(&"x".repeat(40), 30, Algorithm::Fnv64).unwrap();
/// assert_eq!(id.len(), 14);
/// assert!(id.starts_with('f'));
/// ```
pub fn fixed_length_unique_id_with(
    input: &str,
    max_length: usize,
    algorithm: Algorithm,
) -> Result<String, EncodingError> {
    if input.len() <= max_length {
        return Ok(input.to_owned());
    }
    let hashed = hashed_form(input, algorithm);
    if hashed.len() > max_length {
        return Err(EncodingError { hashed, max_length });
    }
    Ok(hashed)
}

/// Joins `parts` with `'-'` and applies [`fixed_length_unique_id_with`].
///
/// A separator is written only once the joined string is non-empty, so leading
/// empty parts vanish (`["", "", "n1"]` gives `"n1"`) while inner empty parts
/// are kept (`["a", "", "c"]` gives `"a--c"`).
///
/// ```
/// use kozmo_interface::encoding::{fixed_length_unique_id_for_parts, Algorithm};
///
/// assert_eq!(
///     fixed_length_unique_id_for_parts(50, &["name", "n1", "1"], Algorithm::Fnv32).unwrap(),
///     "name-n1-1"
/// );
/// assert_eq!(
///     fixed_length_unique_id_for_parts(8, &["name", "n1", "1"], Algorithm::Fnv32).unwrap(),
///     "fpmmhh6q"
/// );
/// ```
pub fn fixed_length_unique_id_for_parts<S: AsRef<str>>(
    max_length: usize,
    parts: &[S],
    algorithm: Algorithm,
) -> Result<String, EncodingError> {
    let mut joined = String::new();
    for part in parts {
        if !joined.is_empty() {
            joined.push('-');
        }
        joined.push_str(part.as_ref());
    }
    fixed_length_unique_id_with(&joined, max_length, algorithm)
}

/// Builds a generated name from `exec_name` bounded by `min_length` and
/// `max_length` (in UTF-8 bytes).
///
/// Names shorter than `min_length` are right-padded with `'0'` up to
/// `min_length` (even if that exceeds `max_length`); names longer than
/// `max_length` are shortened with [`fixed_length_unique_id`]; other names are
/// returned unchanged.
///
/// ```
/// use kozmo_interface::encoding::generated_name_with;
///
/// assert_eq!(generated_name_with("exec", 10, 100).unwrap(), "exec000000");
/// assert_eq!(generated_name_with("exec name name", 10, 100).unwrap(), "exec name name");
/// assert!(generated_name_with("exec name", 0, 0).is_err());
/// ```
pub fn generated_name_with(exec_name: &str, min_length: usize, max_length: usize) -> Result<String, EncodingError> {
    let len = exec_name.len();
    if len < min_length {
        let mut out = String::with_capacity(min_length);
        out.push_str(exec_name);
        for _ in len..min_length {
            out.push('0');
        }
        Ok(out)
    } else if len > max_length {
        fixed_length_unique_id(exec_name, max_length)
    } else {
        Ok(exec_name.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err_hashed<T: std::fmt::Debug>(r: Result<T, EncodingError>) -> String {
        r.expect_err("expected an EncodingError").hashed
    }

    #[test]
    fn fixed_length_unique_id_vectors() {
        assert_eq!(fixed_length_unique_id("x", 5).unwrap(), "x");

        let err = fixed_length_unique_id("xx", 1).unwrap_err();
        assert_eq!(err.hashed, "flfryc2i");
        assert_eq!(err.max_length, 1);

        assert_eq!(err_hashed(fixed_length_unique_id("xxxxxx", 5)), "fufiti6i");
        assert_eq!(fixed_length_unique_id("xxxxx", 10).unwrap(), "xxxxx");
        assert_eq!(fixed_length_unique_id(&"x".repeat(24), 20).unwrap(), "fuaa3aji");
    }

    #[test]
    fn for_parts_vectors() {
        let a = Algorithm::Fnv32;
        assert_eq!(
            fixed_length_unique_id_for_parts(10, &["x", "y", "z"], a).unwrap(),
            "x-y-z"
        );
        assert_eq!(
            err_hashed(fixed_length_unique_id_for_parts(1, &["x", "y"], a)),
            "fz2jizji"
        );
        assert_eq!(fixed_length_unique_id_for_parts(2, &["x"], a).unwrap(), "x");
        assert_eq!(
            err_hashed(fixed_length_unique_id_for_parts(4, &["x", "y", "z"], a)),
            "fxzsoqrq"
        );
        let many = ["x", "y", "z", "m", "n", "y", "z", "m", "n", "y", "z", "m", "n"];
        assert_eq!(fixed_length_unique_id_for_parts(15, &many, a).unwrap(), "fe63sz6y");
    }

    #[test]
    fn for_parts_separator_rules() {
        let a = Algorithm::Fnv32;
        assert_eq!(fixed_length_unique_id_for_parts(50, &["", "", "n1"], a).unwrap(), "n1");
        assert_eq!(
            fixed_length_unique_id_for_parts(50, &["a", "", "c"], a).unwrap(),
            "a--c"
        );
        assert_eq!(
            fixed_length_unique_id_for_parts(50, &["name", "n1", "1"], a).unwrap(),
            "name-n1-1"
        );
        assert_eq!(
            fixed_length_unique_id_for_parts(8, &["name", "n1", "1"], a).unwrap(),
            "fpmmhh6q"
        );
        assert_eq!(
            fixed_length_unique_id_for_parts(20, &["n0", "2", "n1"], a).unwrap(),
            "n0-2-n1"
        );
        // Owned strings work too.
        let owned = vec![String::from("n0"), String::from("2"), String::from("n1")];
        assert_eq!(fixed_length_unique_id_for_parts(20, &owned, a).unwrap(), "n0-2-n1");
    }

    #[test]
    fn generated_name_with_vectors() {
        assert!(generated_name_with("exec name", 0, 0).is_err());
        assert_eq!(
            generated_name_with("exec name name", 10, 100).unwrap(),
            "exec name name"
        );
        assert_eq!(generated_name_with("exec", 10, 100).unwrap(), "exec000000");
    }

    #[test]
    fn generated_name_with_pads_even_beyond_max() {
        assert_eq!(generated_name_with("ab", 5, 3).unwrap(), "ab000");
    }

    #[test]
    fn other_algorithms_lengths() {
        let input = "x".repeat(100);
        let id64 = fixed_length_unique_id_with(&input, 50, Algorithm::Fnv64).unwrap();
        assert_eq!(id64.len(), 14);
        assert!(id64.starts_with('f'));

        let id128 = fixed_length_unique_id_with(&input, 50, Algorithm::Fnv128).unwrap();
        assert_eq!(id128.len(), 27);
        assert!(id128.starts_with('f'));

        assert!(id64.chars().skip(1).all(|c| BASE32_ALPHABET.contains(c)));
        assert!(id128.chars().skip(1).all(|c| BASE32_ALPHABET.contains(c)));
    }

    #[test]
    fn default_algorithm_is_fnv32() {
        assert_eq!(Algorithm::default(), Algorithm::Fnv32);
        assert_eq!(
            fixed_length_unique_id_with("xxxxxx", 5, Algorithm::default())
                .unwrap_err()
                .hashed,
            "fufiti6i"
        );
    }

    #[test]
    fn error_display_mentions_hashed() {
        let err = fixed_length_unique_id("xx", 1).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("flfryc2i"), "{msg}");
        assert_eq!(
            msg,
            "max Length is too small, cannot create an encoded string that is so small \
             (hashed value flfryc2i is longer than 1)"
        );
        let _: &dyn std::error::Error = &err;
    }
}
