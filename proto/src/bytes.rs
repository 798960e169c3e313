//! Fixed-size byte newtypes: hex in human-readable formats (TOML, JSON), raw bytes in bcs.

/// Defines a `Copy` newtype over `[u8; N]` with hex `Display`/`FromStr` and serde that
/// writes hex for human-readable formats and length-checked bytes for binary ones.
macro_rules! fixed_bytes {
    ($(#[$meta:meta])* $name:ident, $len:expr) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(pub [u8; $len]);

        impl $name {
            /// Length in bytes.
            pub const LEN: usize = $len;

            /// The raw bytes.
            pub fn as_bytes(&self) -> &[u8; $len] {
                &self.0
            }

            /// Builds the value from a slice that must be exactly `LEN` bytes long.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, $crate::bytes::BytesError> {
                <[u8; $len]>::try_from(bytes)
                    .map(Self)
                    .map_err(|_| $crate::bytes::BytesError::Length { expected: $len, found: bytes.len() })
            }
        }

        impl AsRef<[u8]> for $name {
            fn as_ref(&self) -> &[u8] {
                &self.0
            }
        }

        impl core::fmt::Display for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(&hex::encode(self.0))
            }
        }

        impl core::fmt::Debug for $name {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "{}({})", stringify!($name), hex::encode(self.0))
            }
        }

        impl core::str::FromStr for $name {
            type Err = $crate::bytes::BytesError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $crate::bytes::decode_hex::<$len>(s).map(Self)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.serialize_str(&hex::encode(self.0))
                } else {
                    s.serialize_bytes(&self.0)
                }
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                    $crate::bytes::decode_hex_strict::<$len>(&s).map(Self).map_err(serde::de::Error::custom)
                } else {
                    let v = d.deserialize_bytes($crate::bytes::BytesVisitor)?;
                    Self::from_slice(&v).map_err(serde::de::Error::custom)
                }
            }
        }
    };
}
pub(crate) use fixed_bytes;

/// A byte string of the wrong length or a malformed hex string.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BytesError {
    /// The value has the wrong number of bytes.
    #[error("expected {expected} bytes, found {found}")]
    Length {
        /// Required length.
        expected: usize,
        /// Length given.
        found: usize,
    },
    /// The string is not lowercase or uppercase hexadecimal.
    #[error("not a hex string: {0}")]
    Hex(String),
}

/// Decodes exactly `N` bytes of hex.
pub(crate) fn decode_hex<const N: usize>(s: &str) -> Result<[u8; N], BytesError> {
    let v = hex::decode(s.trim()).map_err(|e| BytesError::Hex(e.to_string()))?;
    let found = v.len();
    <[u8; N]>::try_from(v).map_err(|_| BytesError::Length { expected: N, found })
}

/// Decodes exactly `N` bytes of hex in the one form cairn writes: lower case, no spaces.
/// Used for JSON and TOML, so a document is read exactly as strictly as its bytes
/// (`docs/formats/`); [`decode_hex`] (command lines, headers) is lenient.
pub(crate) fn decode_hex_strict<const N: usize>(s: &str) -> Result<[u8; N], BytesError> {
    if !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return Err(BytesError::Hex(format!("{s:?} must be lower-case hex digits only")));
    }
    decode_hex(s)
}

/// Reads a byte string from a binary format.
pub(crate) struct BytesVisitor;

impl serde::de::Visitor<'_> for BytesVisitor {
    type Value = Vec<u8>;
    fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("a byte string")
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
}
