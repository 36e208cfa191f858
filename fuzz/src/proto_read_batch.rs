//! Protobuf `ReadBatch`, what unary protobuf reads and S2S read frames send: any batch a
//! client could decode survives the server's own encoder unchanged, through the engine's
//! record type and back.

use prost::Message;
use sluice::wire::proto::{encode_read_batch, ReadBatch};
use sluice_shards::records::{self, Header, Position, SequencedRecord};

use crate::alloc_meter::bounded;

pub fn run(data: &[u8]) {
    let bound = 512 * data.len() + (64 << 10);
    let Ok(batch) = bounded("decoding a ReadBatch", bound, || ReadBatch::decode(data)) else {
        return;
    };
    let engine = records::ReadBatch {
        records: batch
            .records
            .iter()
            .map(|r| SequencedRecord {
                seq_num: r.seq_num,
                timestamp: r.timestamp,
                headers: r
                    .headers
                    .iter()
                    .map(|h| Header {
                        name: h.name.clone(),
                        value: h.value.clone(),
                    })
                    .collect(),
                body: r.body.clone(),
            })
            .collect(),
        tail: batch.tail.map(|t| Position {
            seq_num: t.seq_num,
            timestamp: t.timestamp,
        }),
    };
    let encoded = encode_read_batch(&engine);
    let again = ReadBatch::decode(encoded).expect("the server's encoding decodes");
    assert_eq!(again, batch, "a read batch survives the server's encoder");
}
