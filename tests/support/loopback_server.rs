//! The accept loop every network double runs on: a listener on
//! `127.0.0.1:<ephemeral port>` served on its own thread and Tokio runtime, so
//! it keeps answering while a test blocks (e.g. on `Command::output`) or runs
//! on a current-thread runtime. Dropping it stops the loop and closes every
//! connection still open.

use std::future::Future;
use std::net::SocketAddr;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;

pub struct LoopbackServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LoopbackServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopbackServer")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl LoopbackServer {
    /// Listens on `127.0.0.1:<ephemeral port>` and runs `on_connection` for
    /// each accepted connection, each in its own task. The call itself runs in
    /// the accept loop, so it sees connections in the order they came. The
    /// server thread is named `<name>-<port>`.
    ///
    /// # Panics
    /// If the listener or the server thread cannot be created.
    pub fn start<F, Fut>(name: &str, on_connection: F) -> LoopbackServer
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        // Bind synchronously so the port is known (and connectable) on return,
        // and so this works from inside or outside a Tokio runtime.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("making the listener non-blocking");
        let addr = listener.local_addr().expect("listener address");
        let (shutdown, shutdown_rx) = oneshot::channel();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("building the server runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("registering listener");
                    accept_loop(listener, on_connection, shutdown_rx).await;
                });
            })
            .expect("spawning the server thread");
        LoopbackServer {
            addr,
            shutdown: Some(shutdown),
            thread: Some(thread),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for LoopbackServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // The loop ends promptly: shutting down drops every connection task.
            let _ = thread.join();
        }
    }
}

async fn accept_loop<F, Fut>(
    listener: TcpListener,
    on_connection: F,
    mut shutdown: oneshot::Receiver<()>,
) where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Dropping the set on shutdown aborts every connection still open.
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(on_connection(tcp));
                }
                // E.g. out of file descriptors: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}
