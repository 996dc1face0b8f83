//! The poll loop (being written). The public API below is fixed.
use std::io;
use std::net::SocketAddr;

use crate::Config;

/// A running server started by [`start`]. Dropping it stops the server at once.
pub struct ServerHandle {
    addr: SocketAddr,
}

impl ServerHandle {
    /// The address the listener is bound to (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Graceful shutdown, as on SIGTERM (protocol §7); waits for the loop to exit.
    pub fn shutdown(self) -> io::Result<()> {
        Ok(())
    }
}

/// Binds the listener and runs the server on a thread of its own.
pub fn start(config: Config) -> io::Result<ServerHandle> {
    let _ = config;
    Err(io::Error::other("not built yet"))
}

/// Runs the server in this thread until SIGTERM/SIGINT.
pub fn run(config: Config) -> io::Result<()> {
    let _ = config;
    Err(io::Error::other("not built yet"))
}
