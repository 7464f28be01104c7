//! The client side of the bare baseline: one Unix-socket connection, a
//! prebuilt request frame, a reply read whole. Nothing else.

use std::path::Path;

use azbroker_proto::{
    frame, ChainSpec, ClientFrame, DaemonFrame, GetToken, Hello, Reply, Request, PROTOCOL_VERSION,
};
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

/// The daemon without the client library: prebuilt Hello and token-request
/// frames written on a plain socket, each reply read whole. Splits the cached
/// figure's distance from the bare round trip into daemon and library parts.
pub struct RawBrokerClient {
    stream: UnixStream,
    request: Vec<u8>,
    reply: Vec<u8>,
}

impl RawBrokerClient {
    pub async fn connect(
        socket: &Path,
        chain: &ChainSpec,
        get: GetToken,
    ) -> Result<RawBrokerClient, String> {
        let hello = ClientFrame {
            id: 0,
            request: Request::Hello(Hello {
                protocol_version: PROTOCOL_VERSION,
                client_name: "azbroker-bench-raw".into(),
                pid: std::process::id(),
                chain: chain.clone(),
            }),
        };
        let request = ClientFrame {
            id: 1,
            request: Request::GetToken(get),
        };
        let encode = |frame: &ClientFrame| frame::encode(frame).map_err(|e| e.to_string());
        let mut client = RawBrokerClient {
            stream: UnixStream::connect(socket)
                .await
                .map_err(|e| format!("daemon: {e}"))?,
            request: encode(&request)?,
            reply: Vec::new(),
        };
        client
            .stream
            .write_all(&encode(&hello)?)
            .await
            .map_err(|e| format!("Hello: {e}"))?;
        match client.read_reply().await? {
            Reply::Welcome(_) => Ok(client),
            _ => Err("the daemon did not welcome the raw client".into()),
        }
    }

    /// One cached-token request, one whole reply (checked to be a token).
    pub async fn round_trip(&mut self) -> Result<(), String> {
        self.stream
            .write_all(&self.request)
            .await
            .map_err(|e| format!("raw request: {e}"))?;
        match self.read_reply().await? {
            Reply::Token(token) if token.cached => Ok(()),
            _ => Err("the raw client's request was not a cache hit".into()),
        }
    }

    async fn read_reply(&mut self) -> Result<Reply, String> {
        let mut header = [0u8; frame::HEADER_LEN];
        self.stream
            .read_exact(&mut header)
            .await
            .map_err(|e| format!("raw reply: {e}"))?;
        let len = frame::body_len(header).map_err(|e| e.to_string())?;
        self.reply.resize(len, 0);
        self.stream
            .read_exact(&mut self.reply)
            .await
            .map_err(|e| format!("raw reply: {e}"))?;
        let reply: DaemonFrame = frame::decode(&self.reply).map_err(|e| e.to_string())?;
        Ok(reply.reply)
    }
}
