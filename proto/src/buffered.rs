//! Frames decoded straight out of a read buffer, without I/O.
//!
//! A reader hands over the bytes it holds and learns either that more must
//! be read first, or that a whole frame lies at the front: the message, and
//! how many bytes to consume. When a read brings a whole frame (the common
//! case) it is decoded where it lies, with no copy; the length prefix is
//! checked before any body byte is waited for, so a peer cannot make a
//! reader wait for, or allocate, more than [`MAX_FRAME_LEN`](crate::MAX_FRAME_LEN).

use serde::de::DeserializeOwned;

use crate::frame::{self, FrameError, HEADER_LEN};

/// What the front of a read buffer holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Buffered<T> {
    /// Not a whole frame yet: at least `missing` more bytes must be read
    /// (exactly that many complete the prefix, or the frame once the prefix is in).
    NeedMore { missing: usize },
    /// A whole frame: its message, decoded from the buffer's first `consumed` bytes.
    Frame { message: T, consumed: usize },
}

/// Decodes the frame at the front of `buffer` when all of it is there.
/// Bytes after that frame (the next frames) are left alone.
///
/// An error means the stream is out of step or hostile (a bad length prefix,
/// a body that is not one whole message): the caller closes the connection.
pub fn decode_front<T: DeserializeOwned>(buffer: &[u8]) -> Result<Buffered<T>, FrameError> {
    let Some(header) = buffer.get(..HEADER_LEN) else {
        return Ok(Buffered::NeedMore {
            missing: HEADER_LEN - buffer.len(),
        });
    };
    let body_len = frame::body_len(header.try_into().expect("HEADER_LEN bytes"))?;
    let consumed = HEADER_LEN + body_len;
    match buffer.get(HEADER_LEN..consumed) {
        Some(body) => Ok(Buffered::Frame {
            message: frame::decode(body)?,
            consumed,
        }),
        None => Ok(Buffered::NeedMore {
            missing: consumed - buffer.len(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientFrame, Request, MAX_FRAME_LEN};

    fn status(id: u64) -> ClientFrame {
        ClientFrame {
            id,
            request: Request::Status,
        }
    }

    #[test]
    fn missing_counts_the_prefix_then_the_body() {
        let bytes = frame::encode(&status(9)).unwrap();
        assert_eq!(
            decode_front::<ClientFrame>(&[]),
            Ok(Buffered::NeedMore {
                missing: HEADER_LEN
            })
        );
        assert_eq!(
            decode_front::<ClientFrame>(&bytes[..1]),
            Ok(Buffered::NeedMore {
                missing: HEADER_LEN - 1
            })
        );
        assert_eq!(
            decode_front::<ClientFrame>(&bytes[..HEADER_LEN]),
            Ok(Buffered::NeedMore {
                missing: bytes.len() - HEADER_LEN
            })
        );
        assert_eq!(
            decode_front::<ClientFrame>(&bytes[..bytes.len() - 1]),
            Ok(Buffered::NeedMore { missing: 1 })
        );
    }

    #[test]
    fn a_whole_frame_is_consumed_and_the_next_left_alone() {
        let first = frame::encode(&status(1)).unwrap();
        let two = [first.clone(), frame::encode(&status(2)).unwrap()].concat();
        assert_eq!(
            decode_front::<ClientFrame>(&two),
            Ok(Buffered::Frame {
                message: status(1),
                consumed: first.len()
            })
        );
    }

    #[test]
    fn an_oversized_length_is_rejected_from_the_prefix_alone() {
        let too_large = (MAX_FRAME_LEN as u32 + 1).to_be_bytes();
        assert_eq!(
            decode_front::<ClientFrame>(&too_large),
            Err(FrameError::TooLarge(MAX_FRAME_LEN + 1))
        );
        assert_eq!(
            decode_front::<ClientFrame>(&0u32.to_be_bytes()),
            Err(FrameError::Empty)
        );
    }

    #[test]
    fn trailing_bytes_inside_a_frame_are_rejected() {
        let mut body = frame::encode(&status(1)).unwrap()[HEADER_LEN..].to_vec();
        body.extend_from_slice(&[0, 0]);
        let mut bytes = (body.len() as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        assert_eq!(
            decode_front::<ClientFrame>(&bytes),
            Err(FrameError::TrailingBytes(2))
        );
    }

    #[test]
    fn a_body_that_is_no_message_is_rejected() {
        // Id 1, then request variant 100, which does not exist.
        let bytes = [0, 0, 0, 2, 1, 100];
        assert!(matches!(
            decode_front::<ClientFrame>(&bytes),
            Err(FrameError::Malformed(_))
        ));
    }
}
