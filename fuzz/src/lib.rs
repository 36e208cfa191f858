//! Fuzz targets for every decoder of bytes a client or the store controls. Each module's
//! `run` is one target: it feeds the fuzzer's bytes to the decoder the server uses, checks
//! the decoder's properties (round trips, agreement between equivalent paths) and that it
//! allocates no more than a bound in proportion to its input. `cargo fuzz` runs them under
//! libFuzzer (`make fuzz`); `tests/corpus.rs` replays the committed corpora on stable.

pub mod alloc_meter;

pub mod commit_manifest;
pub mod json_append;
pub mod json_configs;
pub mod proto_append_input;
pub mod proto_read_batch;
pub mod request_inputs;
pub mod s2s_frames;
pub mod sealed_payload;
pub mod segment;
pub mod stored_record;
pub mod stream_state;

/// One target's body: fed one input, it panics on a failed property.
pub type Target = fn(&[u8]);

/// Every target by name, as `cargo fuzz` and the corpus directories name them.
pub const TARGETS: &[(&str, Target)] = &[
    ("commit_manifest", commit_manifest::run),
    ("json_append", json_append::run),
    ("json_configs", json_configs::run),
    ("proto_append_input", proto_append_input::run),
    ("proto_read_batch", proto_read_batch::run),
    ("request_inputs", request_inputs::run),
    ("s2s_frames", s2s_frames::run),
    ("sealed_payload", sealed_payload::run),
    ("segment", segment::run),
    ("stored_record", stored_record::run),
    ("stream_state", stream_state::run),
];
