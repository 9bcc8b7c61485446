//! Worker threads and the listening sockets they serve.
//!
//! `N` worker threads each run a single-threaded tokio runtime. Every
//! listener is bound once per worker with `SO_REUSEPORT`, and each worker
//! accepts on its own socket: a connection is served start to finish on
//! the thread that accepted it, with its own upstream pools slot, no work
//! stealing and no cross-thread wake-up.
//!
//! Listeners can be bound and stopped while the workers run (a reload adds
//! or removes them): binding happens on the caller's thread, and each
//! worker's accept loop is spawned onto that worker's runtime through its
//! handle.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::{oneshot, watch};

use crate::proxy::server;
use crate::proxy::snapshot::Live;

/// The worker threads.
pub struct Workers {
    handles: Vec<Handle>,
    exits: Vec<oneshot::Sender<()>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` worker threads (at least one).
    ///
    /// # Errors
    ///
    /// A thread or its runtime cannot start.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let n = n.max(1);
        let mut handles = Vec::with_capacity(n);
        let mut exits = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for w in 0..n {
            let (handle_tx, handle_rx) = std::sync::mpsc::channel();
            let (exit_tx, exit_rx) = oneshot::channel::<()>();
            let t = std::thread::Builder::new()
                .name(format!("gatehouse-worker-{w}"))
                .spawn(move || {
                    crate::worker::set_index(w);
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = handle_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = handle_tx.send(Ok(rt.handle().clone()));
                    // The runtime runs its tasks while it waits to be told
                    // to exit; dropping it then cancels what is left.
                    rt.block_on(async move {
                        let _ = exit_rx.await;
                    });
                })?;
            let handle = handle_rx
                .recv()
                .map_err(|_| std::io::Error::other(format!("worker {w} did not start")))??;
            handles.push(handle);
            exits.push(exit_tx);
            threads.push(t);
        }
        Ok(Workers {
            handles,
            exits,
            threads,
        })
    }

    /// How many workers run.
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Whether there are no workers (never, once started).
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// Binds `address` once per worker and starts each worker's accept loop
    /// for the listener `name`. With `exclusive`, binding fails when another
    /// socket (another process's) already listens on the address.
    ///
    /// # Errors
    ///
    /// The address cannot be bound (the message names the listener and the
    /// address, and why).
    pub fn listen(
        &self,
        name: &Arc<str>,
        address: SocketAddr,
        live: &Arc<Live>,
        exclusive: bool,
    ) -> Result<Listening, String> {
        if exclusive && address.port() != 0 {
            probe_exclusive(address).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AddrInUse {
                    format!(
                        "listener `{name}` cannot bind {address}: another process is listening \
                         there (a second gateway?). To share the address with another gateway \
                         on purpose (a zero-downtime upgrade), set `share_address: true` on the \
                         listener of the one that starts second"
                    )
                } else {
                    format!("listener `{name}` cannot bind {address}: {e}")
                }
            })?;
        }
        let mut addr = address;
        let mut sockets = Vec::with_capacity(self.handles.len());
        for i in 0..self.handles.len() {
            let sock = bind_reuseport(addr)
                .map_err(|e| format!("listener `{name}` cannot bind {addr}: {e}"))?;
            if i == 0 {
                // With port 0 the first socket picks the port; the others
                // join it.
                addr = sock
                    .local_addr()
                    .map_err(|e| format!("listener `{name}`: no local address: {e}"))?;
            }
            sockets.push(sock);
        }
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let loops = sockets.len();
        for (sock, handle) in sockets.into_iter().zip(&self.handles) {
            let name = name.clone();
            let live = live.clone();
            let stop_rx = stop_rx.clone();
            let done = done_tx.clone();
            handle.spawn(async move {
                match TcpListener::from_std(sock) {
                    Ok(l) => server::serve(l, name, live, stop_rx).await,
                    Err(e) => tracing::error!(listener = %name, "cannot serve the socket: {e}"),
                }
                // A loop cancelled with its runtime drops `done` instead.
                let _ = done.send(());
            });
        }
        Ok(Listening {
            name: name.clone(),
            configured: address,
            address: addr,
            stop,
            drained: Drained { rx: done_rx, loops },
        })
    }

    /// Tells every worker to exit and joins the threads; connections still
    /// open are closed.
    pub fn exit(self) {
        for e in self.exits {
            let _ = e.send(());
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// A listener being served by every worker.
pub struct Listening {
    /// Its name.
    pub name: Arc<str>,
    /// The address in the config (port 0 stays 0 here).
    pub configured: SocketAddr,
    /// The address bound.
    pub address: SocketAddr,
    stop: watch::Sender<bool>,
    drained: Drained,
}

impl Listening {
    /// Stops accepting; the returned [`Drained`] says when the listener's
    /// connections have drained (or its grace period ended).
    pub fn stop(self) -> Drained {
        let _ = self.stop.send(true);
        self.drained
    }
}

/// The end of a stopped listener's accept loops.
pub struct Drained {
    rx: std::sync::mpsc::Receiver<()>,
    loops: usize,
}

impl Drained {
    /// Blocks until every accept loop of the listener has ended (callable
    /// from any thread, async or not: it waits on a plain channel).
    pub fn wait(self) {
        for _ in 0..self.loops {
            if self.rx.recv().is_err() {
                break;
            }
        }
    }
}

/// Whether the address is free of listeners: every gateway socket has
/// `SO_REUSEPORT`, and the kernel lets a socket *without* it bind an address
/// only when no other socket listens there, whatever their options. The
/// probe is closed before the worker sockets bind (a second process
/// starting in that instant is not caught; one starting later is).
fn probe_exclusive(addr: SocketAddr) -> std::io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // Connections of a previous run in TIME_WAIT do not count.
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())
}

/// A listening socket with `SO_REUSEPORT`, so each worker thread can have
/// its own and the kernel spreads connections across them.
fn bind_reuseport(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    Ok(socket.into())
}
