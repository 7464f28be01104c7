//! The buffered reader of a connection's replies. Like tokio's `BufReader`
//! (same fill and consume rules), but its buffer is wiped when the connection
//! goes: replies carry tokens, and tokio's buffer is freed as it is.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};
use zeroize::Zeroizing;

pub struct ReplyReader<R> {
    inner: R,
    /// Allocated once per connection, at its full size.
    buf: Zeroizing<Box<[u8]>>,
    pos: usize,
    filled: usize,
}

impl<R: AsyncRead + Unpin> ReplyReader<R> {
    pub fn with_capacity(capacity: usize, inner: R) -> ReplyReader<R> {
        ReplyReader {
            inner,
            buf: Zeroizing::new(vec![0; capacity].into_boxed_slice()),
            pos: 0,
            filled: 0,
        }
    }

    /// The bytes read but not consumed yet.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[self.pos..self.filled]
    }
}

impl<R: AsyncRead + Unpin> AsyncBufRead for ReplyReader<R> {
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        if this.pos >= this.filled {
            let mut read = ReadBuf::new(&mut this.buf[..]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            this.filled = read.filled().len();
            this.pos = 0;
        }
        Poll::Ready(Ok(&this.buf[this.pos..this.filled]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        this.pos = (this.pos + amt).min(this.filled);
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for ReplyReader<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // Nothing buffered and a read at least as big as the buffer: straight
        // into the caller's (wiped) buffer, as tokio's BufReader does.
        if self.pos >= self.filled && out.remaining() >= self.buf.len() {
            return Pin::new(&mut self.inner).poll_read(cx, out);
        }
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let amt = available.len().min(out.remaining());
        out.put_slice(&available[..amt]);
        self.consume(amt);
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn reads_like_a_buf_reader_across_small_and_large_reads() {
        let (mut tx, rx) = tokio::io::duplex(64);
        let data: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            tx.write_all(&sent).await.unwrap();
        });
        let mut reader = ReplyReader::with_capacity(16, rx);
        let mut got = Vec::new();
        let first = reader.fill_buf().await.unwrap().to_vec();
        assert!(!first.is_empty());
        assert_eq!(reader.buffer(), &first[..]);
        reader.consume(3);
        got.extend_from_slice(&first[..3]);
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        got.extend_from_slice(&rest);
        writer.await.unwrap();
        assert_eq!(got, data);
    }
}
