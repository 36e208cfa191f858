//! JSON `AppendInput` bodies in both formats (raw and base64): parsing never panics and
//! stays in proportion to the input, and the records of any accepted body come back
//! unchanged through the server's own read encoder and the parser again.

use sluice::wire::json::{parse_append_input, read_batch_json, Format};
use sluice_shards::records::{ReadBatch, SequencedRecord};

use crate::alloc_meter::bounded;

pub fn run(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let format = if selector & 1 == 0 {
        Format::Raw
    } else {
        Format::Base64
    };
    // `[{}]` is a record of some 80 bytes from 4 bytes of input, held twice while
    // decoding (the JSON form and the engine's).
    let bound = 256 * body.len() + (64 << 10);
    let Ok(batch) = bounded("parsing a JSON append", bound, || {
        parse_append_input(body, format)
    }) else {
        return;
    };
    let sequenced = ReadBatch {
        records: batch
            .records()
            .iter()
            .enumerate()
            .map(|(i, r)| SequencedRecord {
                seq_num: i as u64,
                timestamp: r.timestamp.unwrap_or(0),
                headers: r.headers.clone(),
                body: r.body.clone(),
            })
            .collect(),
        tail: None,
    };
    let json = serde_json::to_vec(&read_batch_json(&sequenced, format)).expect("serialises");
    let again = parse_append_input(&json, format).expect("the server's own JSON parses back");
    assert_eq!(again.len(), batch.len());
    for (a, b) in again.records().iter().zip(batch.records()) {
        assert_eq!(a.headers, b.headers, "headers round-trip");
        assert_eq!(a.body, b.body, "bodies round-trip");
        assert_eq!(a.timestamp, Some(b.timestamp.unwrap_or(0)));
    }
}
