//! Frame read/write over tokio's async byte streams (feature `tokio`).
//!
//! No timeouts here: callers decide how long a peer may take, and wrap these.

use serde::{de::DeserializeOwned, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::frame::{self, FrameError, HEADER_LEN};

#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the stream cleanly between frames.
    Closed,
    Io(std::io::Error),
    Frame(FrameError),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => write!(f, "connection closed"),
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::Frame(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReadError {}

impl From<FrameError> for ReadError {
    fn from(e: FrameError) -> Self {
        ReadError::Frame(e)
    }
}

/// Reads one frame body into `buf` (reused across calls to avoid allocation).
pub async fn read_body<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<(), ReadError> {
    let mut header = [0u8; HEADER_LEN];
    match reader.read_exact(&mut header[..1]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(ReadError::Closed),
        Err(e) => return Err(ReadError::Io(e)),
    }
    reader
        .read_exact(&mut header[1..])
        .await
        .map_err(truncated_or_io)?;
    let len = frame::body_len(header)?;
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf).await.map_err(truncated_or_io)?;
    Ok(())
}

/// Reads and decodes one message.
pub async fn read_message<T: DeserializeOwned, R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<T, ReadError> {
    read_body(reader, buf).await?;
    Ok(frame::decode(buf)?)
}

/// Encodes and writes one message with a single write call, then flushes.
pub async fn write_message<T: Serialize, W: AsyncWrite + Unpin>(
    writer: &mut W,
    message: &T,
) -> std::io::Result<()> {
    write_message_with(writer, &mut Vec::new(), message).await
}

/// [`write_message`] encoding into `buf`, whose allocation is reused from one
/// message to the next (the bytes stay in it until the next message).
pub async fn write_message_with<T: Serialize, W: AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &mut Vec<u8>,
    message: &T,
) -> std::io::Result<()> {
    frame::encode_into(buf, message)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    writer.write_all(buf).await?;
    writer.flush().await
}

fn truncated_or_io(e: std::io::Error) -> ReadError {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        ReadError::Frame(FrameError::Truncated)
    } else {
        ReadError::Io(e)
    }
}
