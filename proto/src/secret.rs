//! A string that must never be printed: tokens, refresh tokens, client secrets.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Holds a secret string; its memory is wiped on drop and `Debug` shows only a marker.
///
/// There is deliberately no `Display`: reading the value takes an explicit
/// [`Secret::expose`], which is easy to find in review.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        // SAFETY: only zeros are written, and the string is left empty.
        wipe(unsafe { self.0.as_mut_vec() });
    }
}

/// Overwrites a buffer's whole allocation, spare capacity included, with
/// zeros, and empties it. With glibc, `explicit_bzero`: a `memset` the
/// compiler may not remove as a dead store, where `zeroize`'s volatile
/// writes go a byte at a time (1,600 instructions for an access token,
/// which every client pays on every token it drops). Elsewhere, `zeroize`.
fn wipe(bytes: &mut Vec<u8>) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: the pointer and capacity are this Vec's own allocation, and
        // zero is a valid byte; nothing reads the bytes before `clear`.
        unsafe { libc::explicit_bzero(bytes.as_mut_ptr().cast(), bytes.capacity()) };
        bytes.clear();
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    zeroize::Zeroize::zeroize(bytes);
}

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Callers must not log or format it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Secret::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_value() {
        let secret = Secret::new("hunter2-super-secret");
        let shown = format!("{secret:?} {:?}", Some(&secret));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn wiping_zeroes_the_whole_allocation() {
        let mut bytes = Vec::with_capacity(64);
        bytes.extend_from_slice(b"eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9.secret");
        let (at, capacity) = (bytes.as_ptr(), bytes.capacity());
        wipe(&mut bytes);
        assert!(bytes.is_empty());
        assert_eq!((bytes.as_ptr(), bytes.capacity()), (at, capacity));
        // SAFETY: the allocation is still this Vec's, and every byte of it was written.
        let all = unsafe { std::slice::from_raw_parts(at, capacity) };
        assert!(all.iter().all(|&b| b == 0), "{all:?}");
    }

    #[test]
    fn serializes_as_plain_string() {
        let secret = Secret::new("abc");
        let bytes = postcard::to_stdvec(&secret).unwrap();
        assert_eq!(bytes, postcard::to_stdvec("abc").unwrap());
        let back: Secret = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.expose(), "abc");
    }
}
