//! Format versions: every signed, hashed or stored structure starts with a version byte,
//! and decoding refuses a version this build does not know.

use serde::{Serialize, de::DeserializeOwned};

use crate::encoding::{DecodeError, decode};

/// A structure whose encoding starts with a version byte.
pub trait Versioned {
    /// The version this build writes and reads.
    const VERSION: u8;
    /// The version the value claims.
    fn version(&self) -> u8;
}

/// Decodes a versioned structure: canonical bcs within `limit` bytes, known version.
pub fn decode_versioned<T>(bytes: &[u8], limit: usize) -> Result<T, DecodeError>
where
    T: Versioned + Serialize + DeserializeOwned,
{
    let value: T = decode(bytes, limit)?;
    if value.version() != T::VERSION {
        return Err(DecodeError::Malformed(format!(
            "unknown format version {} (this build reads {})",
            value.version(),
            T::VERSION
        )));
    }
    Ok(value)
}

/// Implements [`Versioned`] for structs with a `version: u8` field.
macro_rules! versioned {
    ($($ty:ty = $v:expr),* $(,)?) => {
        $(impl $crate::version::Versioned for $ty {
            const VERSION: u8 = $v;
            fn version(&self) -> u8 {
                self.version
            }
        })*
    };
}
pub(crate) use versioned;
