//! Protobuf `AppendInput`, as unary append bodies and S2S append frames carry it: decoding
//! round-trips through encoding, validation never panics, and memory stays in proportion
//! to the input.

use bytes::Bytes;
use prost::Message;
use sluice::wire::proto::{append_input_to_batch, decode_append_input, AppendInput};

use crate::alloc_meter::bounded;

pub fn run(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    // An empty record is two bytes on the wire and some 80 in memory, twice over while
    // the vector grows, and again as the engine's batch.
    let bound = 512 * data.len() + (64 << 10);
    let decoded = bounded("decoding an AppendInput", bound, || {
        decode_append_input(body).map(|input| (input.clone(), append_input_to_batch(input)))
    });
    let Ok((input, _batch)) = decoded else {
        return;
    };
    let again = AppendInput::decode(input.encode_to_vec().as_slice()).expect("re-decodes");
    assert_eq!(again, input, "decode, encode, decode is the first decode");
}
