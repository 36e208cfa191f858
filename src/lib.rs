//! Sluice: a thread-per-core server for the S2 durable streams API.
//!
//! The binary (`main.rs`) parses the command line and hands it to [`boot::run`]. The wire
//! codecs ([`wire`]) and the request parsers ([`api::inputs`]) are public so that the fuzz
//! targets (`fuzz/`) drive exactly the code a client's bytes reach.

pub mod api;
pub mod boot;
pub mod cli;
mod front;
mod init_file;
pub mod wire;
