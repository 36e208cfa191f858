//! End-to-end tests for Sluice.
//!
//! Every test starts the real `sluice` binary on an ephemeral loopback port and drives it
//! through real sockets: control-plane calls go through the official Rust SDK (HTTP/2 with
//! prior knowledge), exact wire shapes and bad inputs through a small raw HTTP/1.1 client.

mod control_plane;
mod data_plane;
mod fault_proxy;
mod harness;
mod lifecycle;
mod operations;
