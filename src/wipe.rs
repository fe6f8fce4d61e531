//! Byte buffers wiped when dropped, at memset speed.
//!
//! zeroize's `Zeroizing<Vec<u8>>` wipes a vector through its iterator, one
//! volatile store per byte: ~1,400 instructions for a secret record of
//! 1.2 KiB, on every login (bench/results.md). A byte slice takes
//! zeroize's bulk path instead (a fill and an assembly barrier that keeps
//! the compiler from dropping it), which this type uses for the bytes and
//! the spare capacity alike. Same guarantee, same caveat: a buffer that
//! was reallocated may have left a copy behind, so callers size it first.

use std::fmt;
use std::ops::{Deref, DerefMut};

use zeroize::Zeroize;

/// A `Vec<u8>` whose whole allocation is zeroed on drop (a clone is a
/// fresh allocation, wiped on its own drop).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct WipedBytes(Vec<u8>);

impl WipedBytes {
    pub fn with_capacity(capacity: usize) -> WipedBytes {
        WipedBytes(Vec::with_capacity(capacity))
    }
}

impl From<Vec<u8>> for WipedBytes {
    fn from(bytes: Vec<u8>) -> WipedBytes {
        WipedBytes(bytes)
    }
}

impl WipedBytes {
    /// Zeroes the spare capacity, then the bytes (the length stays).
    fn wipe(&mut self) {
        self.0.spare_capacity_mut().zeroize();
        self.0.as_mut_slice().zeroize();
    }
}

impl Drop for WipedBytes {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl Deref for WipedBytes {
    type Target = Vec<u8>;
    fn deref(&self) -> &Vec<u8> {
        &self.0
    }
}

impl DerefMut for WipedBytes {
    fn deref_mut(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }
}

/// Never the contents: they may be a secret.
impl fmt::Debug for WipedBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "WipedBytes({} bytes)", self.0.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_bytes() {
        let bytes = WipedBytes::from(b"GEZDGNBV".to_vec());
        assert_eq!(format!("{bytes:?}"), "WipedBytes(8 bytes)");
        assert_eq!(bytes.as_slice(), b"GEZDGNBV");
    }

    #[test]
    fn wipe_zeroes_every_byte() {
        // The spare capacity cannot be read without unsafe code; the bytes
        // can, and both take the same zeroize bulk path.
        let mut bytes = WipedBytes::with_capacity(64);
        bytes.extend_from_slice(&[0xa5; 40]);
        bytes.wipe();
        assert_eq!(bytes.as_slice(), &[0u8; 40][..]);
    }
}
