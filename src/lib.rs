//! pubsubd: a single-threaded, in-memory publish/subscribe server.
//!
//! The server is one `mio` poll loop that owns every socket. Tests and embedders
//! start it with [`start`], learn its address, and stop it:
//!
//! ```no_run
//! let mut config = pubsubd::Config::default();
//! config.host = [127, 0, 0, 1].into();
//! config.port = 0;
//! let server = pubsubd::start(config).unwrap();
//! println!("listening on {}", server.local_addr());
//! server.shutdown().unwrap();
//! ```

pub mod bench;
pub mod cli;
pub mod clock;
pub mod config;
pub mod core;
mod dashboard;
pub mod engine;
pub mod flags;
pub mod http;
pub mod io;
pub mod logger;
mod metrics;
pub mod outbound;
pub mod protocol;
pub mod refusal;
mod server;
pub mod sys;
pub mod wire;

pub use config::{Config, ConfigError, OverflowPolicy};
pub use server::{ServerHandle, Stopped, run, start};
