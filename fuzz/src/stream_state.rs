//! The stream state codec (a stream's `12` key): any stored value decodes or fails
//! cleanly, and what decodes encodes back to exactly the same bytes.

use bytes::Bytes;
use sluice_shards::streamer::codec::{decode_state, encode_state};

use crate::alloc_meter::bounded;

pub fn run(data: &[u8]) {
    let value = Bytes::copy_from_slice(data);
    let bound = 2 * data.len() + 1024;
    let Ok(state) = bounded("decoding a stream state", bound, || decode_state(value)) else {
        return;
    };
    assert_eq!(
        encode_state(&state).as_ref(),
        data,
        "a stream state re-encodes to its bytes"
    );
}
