//! `pubsubd bench`: a load generator for any server speaking the protocol.
use std::process::ExitCode;

pub fn main(_args: Vec<String>) -> ExitCode {
    eprintln!("pubsubd: bench is not built yet");
    ExitCode::FAILURE
}
