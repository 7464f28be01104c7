//! The client side of the bare baseline: one Unix-socket connection, a
//! prebuilt request frame, a reply read whole. Nothing else.

use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

pub struct BareClient {
    stream: UnixStream,
    request: Vec<u8>,
    reply: Vec<u8>,
}

impl BareClient {
    pub async fn connect(
        socket: &Path,
        request_bytes: usize,
        reply_bytes: usize,
    ) -> std::io::Result<BareClient> {
        let mut request = vec![b'q'; request_bytes.max(5)];
        let body_len = (request.len() - 4) as u32;
        request[..4].copy_from_slice(&body_len.to_be_bytes());
        Ok(BareClient {
            stream: UnixStream::connect(socket).await?,
            request,
            reply: vec![0; reply_bytes],
        })
    }

    /// One request, one whole reply.
    pub async fn round_trip(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&self.request).await?;
        self.stream.read_exact(&mut self.reply).await?;
        Ok(())
    }
}
