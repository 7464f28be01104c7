//! `bench-bare-server SOCKET REPLY_BYTES`: the bare baseline. Answers every
//! length-prefixed request frame with a fixed frame of REPLY_BYTES (prefix
//! included), and does nothing else: no decoding, no lookup, no allocation
//! per request. It runs on the same kind of runtime as `azbrokerd` (tokio,
//! one worker per core) so that the two differ only in the work per request.

use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// Same bound as azbroker's frames.
const MAX_FRAME: usize = 64 * 1024;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(socket), Some(Ok(reply_bytes))) =
        (args.get(1), args.get(2).map(|n| n.parse::<usize>()))
    else {
        eprintln!("usage: bench-bare-server SOCKET REPLY_BYTES");
        return ExitCode::from(2);
    };
    let mut reply = vec![b't'; reply_bytes.clamp(5, MAX_FRAME)];
    let body_len = (reply.len() - 4) as u32;
    reply[..4].copy_from_slice(&body_len.to_be_bytes());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        let listener = match UnixListener::bind(socket) {
            Ok(listener) => listener,
            Err(e) => {
                eprintln!("bench-bare-server: cannot listen on {socket}: {e}");
                return ExitCode::FAILURE;
            }
        };
        let reply: &'static [u8] = Box::leak(reply.into_boxed_slice());
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(serve(stream, reply));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        }
    })
}

/// Reads whatever arrived, answers each whole frame in it, keeps the rest.
async fn serve(mut stream: UnixStream, reply: &'static [u8]) {
    let mut buf = vec![0u8; 2 * MAX_FRAME];
    let mut filled = 0;
    loop {
        match stream.read(&mut buf[filled..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => filled += n,
        }
        let mut start = 0;
        while filled - start >= 4 {
            let len = u32::from_be_bytes(buf[start..start + 4].try_into().expect("4 bytes"));
            let len = len as usize;
            if len == 0 || len > MAX_FRAME {
                return;
            }
            if filled - start < 4 + len {
                break;
            }
            start += 4 + len;
            if stream.write_all(reply).await.is_err() {
                return;
            }
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
    }
}
