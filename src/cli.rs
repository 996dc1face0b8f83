//! The shell client: `pubsubd sub|pub|topics|stats|healthcheck`.
use std::process::ExitCode;

/// First arguments that select the client instead of the server.
pub const COMMANDS: &[&str] = &["sub", "pub", "topics", "stats", "healthcheck"];

pub fn main(_args: Vec<String>) -> ExitCode {
    eprintln!("pubsubd: the shell client is not built yet");
    ExitCode::FAILURE
}
