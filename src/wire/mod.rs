//! The bytes on the wire, one codec each, shared by the server, the CLI, the
//! bench and the tests: WebSocket frames and HTTP responses.

pub mod decoder;
pub mod frame;
pub mod response;
