//! The log's commit objects (segment format version 2), as start-up replay reads them back
//! from the store: a header and a manifest decode or fail cleanly, without allocating past
//! a bound in proportion to their bytes, and what decodes encodes back to the same bytes.

use bytes::Bytes;
use sluice_shards::segments::log::commit::{
    decode_header, decode_manifest, encode_header, Entry, HEADER_BYTES,
};

use crate::alloc_meter::bounded;

pub fn run(data: &[u8]) {
    let Ok(head) = decode_header(data) else {
        return;
    };
    let manifest = Bytes::copy_from_slice(&data[HEADER_BYTES.min(data.len())..]);
    // Entries hold `Bytes` handles of the input and a vector of markers each.
    let bound = 8 * data.len() + (4 << 10);
    let Ok(entries) = bounded("decoding a manifest", bound, || {
        decode_manifest(&head, manifest.clone())
    }) else {
        return;
    };
    let encoded: Vec<Bytes> = entries.iter().map(Entry::encode).collect();
    assert_eq!(
        encoded.concat(),
        manifest.to_vec(),
        "a manifest encodes back"
    );
    assert_eq!(
        encode_header(head.kind, head.position, head.epoch, &encoded).as_ref(),
        &data[..HEADER_BYTES],
        "a header encodes back"
    );
}
