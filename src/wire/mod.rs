//! Wire formats of the S2 v1 API (WIRE §3–§5): protobuf messages, the JSON record encoding,
//! SSE events and S2S session framing. Everything here is a pure conversion between bytes on
//! the wire and the engine's record types; no module does I/O.

pub mod coding;
pub mod json;
pub mod proto;
pub mod s2s;
pub mod sse;
