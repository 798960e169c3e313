//! Canonical binary encoding (bcs) of every signed, hashed or stored structure.
//!
//! Decoding untrusted bytes is bounded before any allocation happens: the input length
//! is checked against a caller-given limit, bcs itself bounds nesting depth, and the
//! decoded value must re-encode to exactly the input, so that two different byte strings
//! never decode to the same value (no trailing bytes, no non-minimal lengths, no
//! non-canonical booleans, options or map orders).

use serde::{Serialize, de::DeserializeOwned};

/// The largest structure a peer may send in one message: 4 MiB.
pub const MAX_MESSAGE_LEN: usize = 4 << 20;

/// Why bytes could not be decoded into a value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input is longer than the caller's limit; it was not parsed.
    #[error("input is {len} bytes, more than the limit of {limit}")]
    TooLong {
        /// Input length.
        len: usize,
        /// The limit given.
        limit: usize,
    },
    /// bcs refused the input (truncated, trailing bytes, bad tag, bad UTF-8, ...).
    #[error("malformed encoding: {0}")]
    Malformed(String),
    /// The input decoded, but it is not the canonical encoding of the value it names.
    #[error("non-canonical encoding")]
    NonCanonical,
}

/// Why a value could not be encoded (only values outside cairn's formats fail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode value: {0}")]
pub struct EncodeError(String);

/// Encodes a value canonically.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, EncodeError> {
    bcs::to_bytes(value).map_err(|e| EncodeError(e.to_string()))
}

/// Decodes a value, refusing input longer than `limit` bytes and any non-canonical form.
pub fn decode<T: Serialize + DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, DecodeError> {
    if bytes.len() > limit {
        return Err(DecodeError::TooLong { len: bytes.len(), limit });
    }
    let value: T = bcs::from_bytes(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    match bcs::to_bytes(&value) {
        Ok(again) if again == bytes => Ok(value),
        _ => Err(DecodeError::NonCanonical),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        flag: bool,
        items: Vec<u32>,
        name: String,
    }

    fn sample() -> Sample {
        Sample { flag: true, items: vec![1, 2, 3], name: "cairn".into() }
    }

    #[test]
    fn round_trips() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(decode::<Sample>(&bytes, 1024).unwrap(), sample());
    }

    #[test]
    fn rejects_trailing_bytes() {
        let mut bytes = encode(&sample()).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<Sample>(&bytes, 1024), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn rejects_non_canonical_bool_and_length() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[0] = 2; // a bool other than 0 or 1
        assert!(decode::<Sample>(&bytes, 1024).is_err());
        // Vec length 3 written as a two-byte ULEB128 (0x83 0x00) instead of 0x03.
        let good = encode(&sample()).unwrap();
        let mut long = vec![good[0], 0x83, 0x00];
        long.extend_from_slice(&good[2..]);
        assert!(decode::<Sample>(&long, 1024).is_err());
    }

    #[test]
    fn refuses_input_over_the_limit_before_parsing() {
        let bytes = encode(&sample()).unwrap();
        let err = decode::<Sample>(&bytes, bytes.len() - 1).unwrap_err();
        assert_eq!(err, DecodeError::TooLong { len: bytes.len(), limit: bytes.len() - 1 });
    }
}
