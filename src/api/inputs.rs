//! The parsers a request's query string, headers and JSON body go through before the
//! engine is asked anything, in one place for the fuzz targets (`fuzz/`): they must reach
//! exactly the code a client's bytes reach.

pub use super::headers::{
    accepts_event_stream, accepts_protobuf, basin, content_is_json, content_is_protobuf, is_s2s,
    request_token, text,
};
pub use super::records::{encryption_key, format, stream_config_header, ReadQuery};
pub use super::usage::{AccountSet, BasinSet, Interval, MetricsQuery, Range, StreamSet};
pub use super::wire::{
    parse, BasinConfigJson, BasinReconfigurationJson, CreateBasinRequest, CreateStreamRequest,
    EnsureBasinRequest, StreamConfigJson, StreamReconfigurationJson,
};
pub use super::{query, ListQuery};
pub use crate::wire::coding::Coding;
