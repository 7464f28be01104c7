//! Frames: a 4-byte big-endian body length, then a postcard body.
//!
//! This module knows bytes only. The length is checked against
//! [`MAX_FRAME_LEN`] before any body byte is read, so a peer cannot make the
//! other side allocate more than that.

use serde::{de::DeserializeOwned, Serialize};

/// Largest body either side accepts. A token reply is ~2-4 KiB; a chain spec
/// with a certificate path and secrets stays well under this.
pub const MAX_FRAME_LEN: usize = 64 * 1024;

/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The length prefix announces an empty body.
    Empty,
    /// The length prefix announces more than [`MAX_FRAME_LEN`] bytes.
    TooLarge(usize),
    /// The body ended before the message did.
    Truncated,
    /// The body holds bytes after a complete message.
    TrailingBytes(usize),
    /// The body is not a valid message (e.g. an unknown variant).
    Malformed(String),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Empty => write!(f, "empty frame"),
            FrameError::TooLarge(len) => {
                write!(
                    f,
                    "frame of {len} bytes exceeds the {MAX_FRAME_LEN}-byte limit"
                )
            }
            FrameError::Truncated => write!(f, "frame body ends mid-message"),
            FrameError::TrailingBytes(n) => write!(f, "{n} unexpected bytes after the message"),
            FrameError::Malformed(why) => write!(f, "malformed message: {why}"),
        }
    }
}

impl std::error::Error for FrameError {}

/// Room a new frame buffer starts with: a token reply fits without regrowing.
const INITIAL_CAPACITY: usize = 2 * 1024;

/// Encodes `message` as one whole frame (prefix and body), ready for a single write.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = Vec::with_capacity(INITIAL_CAPACITY);
    encode_into(&mut out, message)?;
    Ok(out)
}

/// Encodes `message` as one whole frame into `out`, replacing what it held and
/// reusing its allocation (a connection encodes every reply into one buffer).
pub fn encode_into<T: Serialize>(out: &mut Vec<u8>, message: &T) -> Result<(), FrameError> {
    out.clear();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    if let Err(e) = postcard::serialize_with_flavor(message, AppendTo(out)) {
        out.clear();
        return Err(FrameError::Malformed(e.to_string()));
    }
    let body_len = out.len() - HEADER_LEN;
    if body_len > MAX_FRAME_LEN {
        out.clear();
        return Err(FrameError::TooLarge(body_len));
    }
    out[..HEADER_LEN].copy_from_slice(&(body_len as u32).to_be_bytes());
    Ok(())
}

/// A postcard output that appends to a `Vec`, copying each string in one go
/// (postcard's own `to_extend` goes through `Extend`, a byte at a time).
struct AppendTo<'a>(&'a mut Vec<u8>);

impl postcard::ser_flavors::Flavor for AppendTo<'_> {
    type Output = ();

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// The length, prefix included, of the frame at the start of `bytes` when all
/// of it is there, so a reader can decode it in place; `None` when more must
/// be read, an error when the prefix is invalid.
pub fn whole_frame_len(bytes: &[u8]) -> Option<Result<usize, FrameError>> {
    let header: [u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
    match body_len(header) {
        Ok(len) if bytes.len() >= HEADER_LEN + len => Some(Ok(HEADER_LEN + len)),
        Ok(_) => None,
        Err(e) => Some(Err(e)),
    }
}

/// Validates a length prefix and returns the body length it announces.
pub fn body_len(header: [u8; HEADER_LEN]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(header) as usize;
    match len {
        0 => Err(FrameError::Empty),
        len if len > MAX_FRAME_LEN => Err(FrameError::TooLarge(len)),
        len => Ok(len),
    }
}

/// Decodes one message from a frame body, rejecting any bytes left over.
///
/// postcard's `from_bytes` ignores a remainder; a frame with one is a
/// framing bug or an attack, so it is an error here.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    match postcard::take_from_bytes::<T>(body) {
        Ok((message, [])) => Ok(message),
        Ok((_, rest)) => Err(FrameError::TrailingBytes(rest.len())),
        Err(postcard::Error::DeserializeUnexpectedEnd) => Err(FrameError::Truncated),
        Err(e) => Err(FrameError::Malformed(e.to_string())),
    }
}

/// Splits a buffer holding whole frames into their bodies; for tests and tools.
pub fn split(mut bytes: &[u8]) -> Result<Vec<&[u8]>, FrameError> {
    let mut bodies = Vec::new();
    while !bytes.is_empty() {
        if bytes.len() < HEADER_LEN {
            return Err(FrameError::Truncated);
        }
        let len = body_len(bytes[..HEADER_LEN].try_into().expect("4 bytes"))?;
        let rest = &bytes[HEADER_LEN..];
        if rest.len() < len {
            return Err(FrameError::Truncated);
        }
        bodies.push(&rest[..len]);
        bytes = &rest[len..];
    }
    Ok(bodies)
}
