//! `bench-oneshot SOCKET REQUEST_BYTES`: the floor for "start a process, ask,
//! print". Connects to the bare server, sends one request frame of
//! REQUEST_BYTES (4-byte big-endian length included), reads the one reply
//! frame and prints its body. Standard library only, nothing else to start.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(socket), Some(Ok(request_bytes))) =
        (args.get(1), args.get(2).map(|n| n.parse::<usize>()))
    else {
        eprintln!("usage: bench-oneshot SOCKET REQUEST_BYTES");
        return ExitCode::from(2);
    };
    match ask(socket, request_bytes.max(5)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench-oneshot: {e}");
            ExitCode::FAILURE
        }
    }
}

fn ask(socket: &str, request_bytes: usize) -> std::io::Result<()> {
    let mut request = vec![b'q'; request_bytes];
    request[..4].copy_from_slice(&((request_bytes - 4) as u32).to_be_bytes());
    let mut stream = UnixStream::connect(socket)?;
    stream.write_all(&request)?;
    let mut header = [0u8; 4];
    stream.read_exact(&mut header)?;
    let len = u32::from_be_bytes(header) as usize;
    if len > 64 * 1024 {
        return Err(std::io::Error::other("reply frame too large"));
    }
    let mut body = vec![0u8; len + 1];
    stream.read_exact(&mut body[..len])?;
    body[len] = b'\n';
    std::io::stdout().lock().write_all(&body)
}
