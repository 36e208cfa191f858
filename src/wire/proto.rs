//! Protobuf messages of package `s2.v1` (WIRE §3.2, `reference/s2.proto`) and their
//! conversion to and from the engine's record types.
//!
//! The messages are declared by hand so the build needs neither `protoc` nor a build script;
//! field numbers and labels must stay exactly as in the reference schema.

use bytes::Bytes;
use prost::Message;
use sluice_shards::records::{self, AppendBatch, FencingToken, Position};

/// Position of a record in a stream.
#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct StreamPosition {
    /// Sequence number.
    #[prost(uint64, tag = "1")]
    pub seq_num: u64,
    /// Timestamp in milliseconds.
    #[prost(uint64, tag = "2")]
    pub timestamp: u64,
}

/// A record header: a name-value pair of arbitrary bytes.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Header {
    /// Header name; empty only in command records.
    #[prost(bytes = "bytes", tag = "1")]
    pub name: Bytes,
    /// Header value.
    #[prost(bytes = "bytes", tag = "2")]
    pub value: Bytes,
}

/// A record to be appended.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AppendRecord {
    /// Client-supplied timestamp; explicit presence, so `Some(0)` differs from absent.
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    /// Headers of the record.
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<Header>,
    /// Body of the record.
    #[prost(bytes = "bytes", tag = "3")]
    pub body: Bytes,
}

/// The body of a unary protobuf append, and of each S2S append-session input frame.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AppendInput {
    /// Records to append atomically.
    #[prost(message, repeated, tag = "1")]
    pub records: Vec<AppendRecord>,
    /// The seq_num the first record must receive.
    #[prost(uint64, optional, tag = "2")]
    pub match_seq_num: Option<u64>,
    /// The fencing token the stream must currently have.
    #[prost(string, optional, tag = "3")]
    pub fencing_token: Option<String>,
}

/// Acknowledgement of a durable append. The server always sets all three positions.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct AppendAck {
    /// Position of the first appended record.
    #[prost(message, optional, tag = "1")]
    pub start: Option<StreamPosition>,
    /// Seq_num of the last appended record + 1, and that record's timestamp.
    #[prost(message, optional, tag = "2")]
    pub end: Option<StreamPosition>,
    /// The durable tail when the ack was produced.
    #[prost(message, optional, tag = "3")]
    pub tail: Option<StreamPosition>,
}

/// A record as read back from a stream.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct SequencedRecord {
    /// Assigned sequence number.
    #[prost(uint64, tag = "1")]
    pub seq_num: u64,
    /// Timestamp in milliseconds.
    #[prost(uint64, tag = "2")]
    pub timestamp: u64,
    /// Headers of the record.
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Header>,
    /// Body of the record.
    #[prost(bytes = "bytes", tag = "4")]
    pub body: Bytes,
}

/// A batch of records for a reader; with no records and a tail it is an S2S heartbeat.
#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct ReadBatch {
    /// Records in seq_num order.
    #[prost(message, repeated, tag = "1")]
    pub records: Vec<SequencedRecord>,
    /// The tail, present only while following live appends.
    #[prost(message, optional, tag = "2")]
    pub tail: Option<StreamPosition>,
}

/// Why a protobuf append body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    /// The body is not a decodable `AppendInput`: 400 `bad_proto`.
    #[error("{0}")]
    BadProto(String),
    /// The input decoded but breaks a record, batch or fencing-token rule: 422 `invalid`.
    #[error("{0}")]
    Invalid(String),
}

/// Decode an `AppendInput` message from a request body or an S2S frame payload. Taking
/// `Bytes` lets prost slice record bodies out of the payload instead of copying them.
pub fn decode_append_input(body: Bytes) -> Result<AppendInput, ProtoError> {
    AppendInput::decode(body).map_err(|e| ProtoError::BadProto(e.to_string()))
}

/// Validate a decoded `AppendInput` into an engine batch.
///
/// Records and batch limits are checked before the fencing token, the order the reference
/// uses, so the message a client sees for an input with several faults is the same. Unlike
/// JSON, an over-long fencing token here is `invalid` (WIRE §3.2).
pub fn append_input_to_batch(input: AppendInput) -> Result<AppendBatch, ProtoError> {
    let records = input
        .records
        .into_iter()
        .map(|r| records::AppendRecord {
            timestamp: r.timestamp,
            headers: r
                .headers
                .into_iter()
                .map(|h| records::Header {
                    name: h.name,
                    value: h.value,
                })
                .collect(),
            body: r.body,
        })
        .collect();
    let token = input.fencing_token.map(FencingToken::new).transpose();
    let mut batch = AppendBatch::new(records, input.match_seq_num, None)
        .map_err(|e| ProtoError::Invalid(e.0))?;
    batch.fencing_token = token.map_err(ProtoError::Invalid)?;
    Ok(batch)
}

/// The protobuf form of an engine position.
pub fn stream_position(position: Position) -> StreamPosition {
    StreamPosition {
        seq_num: position.seq_num,
        timestamp: position.timestamp,
    }
}

/// The protobuf form of an append acknowledgement, with all three positions set.
pub fn append_ack_to_proto(ack: &records::AppendAck) -> AppendAck {
    AppendAck {
        start: Some(stream_position(ack.start)),
        end: Some(stream_position(ack.end)),
        tail: Some(stream_position(ack.tail)),
    }
}

/// Encode an append acknowledgement (a unary protobuf append response).
pub fn encode_append_ack(ack: &records::AppendAck) -> Bytes {
    Bytes::from(append_ack_to_proto(ack).encode_to_vec())
}

/// The protobuf form of an engine read batch. Record bytes are shared, not copied.
pub fn read_batch_to_proto(batch: &records::ReadBatch) -> ReadBatch {
    ReadBatch {
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
        tail: batch.tail.map(stream_position),
    }
}

/// Encode a read batch (a unary protobuf read response).
pub fn encode_read_batch(batch: &records::ReadBatch) -> Bytes {
    Bytes::from(read_batch_to_proto(batch).encode_to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position(seq_num: u64, timestamp: u64) -> Position {
        Position { seq_num, timestamp }
    }

    fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(message: &M) -> Vec<u8> {
        let encoded = message.encode_to_vec();
        let decoded = M::decode(&encoded[..]).unwrap();
        assert_eq!(&decoded, message);
        encoded
    }

    fn read_batch_from_proto(batch: ReadBatch) -> records::ReadBatch {
        records::ReadBatch {
            records: batch
                .records
                .into_iter()
                .map(|r| records::SequencedRecord {
                    seq_num: r.seq_num,
                    timestamp: r.timestamp,
                    headers: r
                        .headers
                        .into_iter()
                        .map(|h| records::Header {
                            name: h.name,
                            value: h.value,
                        })
                        .collect(),
                    body: r.body,
                })
                .collect(),
            tail: batch.tail.map(|p| position(p.seq_num, p.timestamp)),
        }
    }

    fn append_ack_from_proto(ack: AppendAck) -> Option<records::AppendAck> {
        let convert = |p: StreamPosition| position(p.seq_num, p.timestamp);
        Some(records::AppendAck {
            start: convert(ack.start?),
            end: convert(ack.end?),
            tail: convert(ack.tail?),
        })
    }

    fn header(name: &'static [u8], value: &'static [u8]) -> Header {
        Header {
            name: Bytes::from_static(name),
            value: Bytes::from_static(value),
        }
    }

    fn plain_record(body: &'static [u8]) -> AppendRecord {
        AppendRecord {
            timestamp: None,
            headers: vec![],
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn stream_position_field_numbers() {
        let encoded = round_trip(&StreamPosition {
            seq_num: 1,
            timestamp: 2,
        });
        assert_eq!(encoded, [0x08, 0x01, 0x10, 0x02]);
        assert!(round_trip(&StreamPosition::default()).is_empty());
    }

    #[test]
    fn header_and_record_round_trip() {
        let h = header(b"k", b"v");
        assert_eq!(round_trip(&h), [0x0a, 0x01, b'k', 0x12, 0x01, b'v']);
        round_trip(&AppendRecord {
            timestamp: Some(7),
            headers: vec![h.clone(), header(b"", b"fence")],
            body: Bytes::from_static(b"hello"),
        });
        round_trip(&SequencedRecord {
            seq_num: 3,
            timestamp: 4,
            headers: vec![h],
            body: Bytes::from_static(&[0, 0xff]),
        });
    }

    #[test]
    fn optional_timestamp_has_explicit_presence() {
        let zero = AppendRecord {
            timestamp: Some(0),
            ..plain_record(b"")
        };
        assert_eq!(round_trip(&zero), [0x08, 0x00]);
        assert!(round_trip(&plain_record(b"")).is_empty());
        let decoded = AppendRecord::decode(&[0x08u8, 0x00][..]).unwrap();
        assert_eq!(decoded.timestamp, Some(0));
    }

    #[test]
    fn append_input_optional_fields() {
        let bare = AppendInput {
            records: vec![plain_record(b"x")],
            match_seq_num: None,
            fencing_token: None,
        };
        round_trip(&bare);
        let full = AppendInput {
            match_seq_num: Some(0),
            fencing_token: Some(String::new()),
            ..bare.clone()
        };
        let encoded = round_trip(&full);
        // Both presence-tracked fields appear even at their zero values.
        assert!(encoded.ends_with(&[0x10, 0x00, 0x1a, 0x00]));
        let decoded = decode_append_input(encoded.into()).unwrap();
        assert_eq!(decoded.match_seq_num, Some(0));
        assert_eq!(decoded.fencing_token.as_deref(), Some(""));
    }

    #[test]
    fn ack_and_read_batch_round_trip() {
        round_trip(&AppendAck {
            start: Some(StreamPosition {
                seq_num: 1,
                timestamp: 2,
            }),
            end: Some(StreamPosition::default()),
            tail: None,
        });
        round_trip(&ReadBatch {
            records: vec![],
            tail: Some(StreamPosition::default()),
        });
        round_trip(&ReadBatch {
            records: vec![SequencedRecord {
                seq_num: 9,
                timestamp: 10,
                headers: vec![],
                body: Bytes::new(),
            }],
            tail: None,
        });
    }

    #[test]
    fn undecodable_body_is_bad_proto() {
        // Field 1, length-delimited, claims 5 bytes but only 1 follows.
        let err = decode_append_input(Bytes::from_static(&[0x0a, 0x05, 0x01])).unwrap_err();
        assert!(matches!(err, ProtoError::BadProto(ref m) if m.contains("failed to decode")));
    }

    #[test]
    fn input_converts_to_batch() {
        let input = AppendInput {
            records: vec![
                AppendRecord {
                    timestamp: Some(5),
                    headers: vec![header(b"k", b"v")],
                    body: Bytes::from_static(b"a"),
                },
                AppendRecord {
                    timestamp: None,
                    headers: vec![header(b"", b"fence")],
                    body: Bytes::from_static(b"tok"),
                },
            ],
            match_seq_num: Some(12),
            fencing_token: Some("a".repeat(36)),
        };
        let bytes = input.encode_to_vec();
        let batch = append_input_to_batch(decode_append_input(bytes.into()).unwrap()).unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch.match_seq_num, Some(12));
        assert_eq!(
            batch.fencing_token.as_ref().map(|t| t.as_str().len()),
            Some(36)
        );
        let first = &batch.records()[0];
        assert_eq!(first.timestamp, Some(5));
        assert_eq!(&first.headers[0].name[..], b"k");
        assert_eq!(&first.body[..], b"a");
        assert!(batch.records()[1].command().is_some());
    }

    #[test]
    fn long_fencing_token_is_invalid() {
        let input = AppendInput {
            records: vec![plain_record(b"")],
            match_seq_num: None,
            fencing_token: Some("a".repeat(37)),
        };
        let err = append_input_to_batch(input).unwrap_err();
        assert!(matches!(err, ProtoError::Invalid(ref m) if m.contains("36 bytes")));
    }

    #[test]
    fn batch_rules_are_invalid() {
        let empty = AppendInput::default();
        assert_eq!(
            append_input_to_batch(empty),
            Err(ProtoError::Invalid("record batch must not be empty".into()))
        );
        let bad_command = AppendInput {
            records: vec![AppendRecord {
                timestamp: None,
                headers: vec![header(b"", b"bogus")],
                body: Bytes::new(),
            }],
            ..AppendInput::default()
        };
        assert_eq!(
            append_input_to_batch(bad_command),
            Err(ProtoError::Invalid("unknown command".into()))
        );
    }

    #[test]
    fn ack_encodes_all_positions() {
        let ack = records::AppendAck {
            start: position(0, 0),
            end: position(2, 5),
            tail: position(3, 6),
        };
        let decoded = AppendAck::decode(&encode_append_ack(&ack)[..]).unwrap();
        assert!(decoded.start.is_some() && decoded.end.is_some() && decoded.tail.is_some());
        assert_eq!(append_ack_from_proto(decoded), Some(ack));
    }

    #[test]
    fn read_batch_encodes_losslessly() {
        let batch = records::ReadBatch {
            records: vec![
                records::SequencedRecord {
                    seq_num: 4,
                    timestamp: 100,
                    headers: vec![records::Header {
                        name: Bytes::from_static(b"n"),
                        value: Bytes::from_static(&[0xff, 0x00]),
                    }],
                    body: Bytes::from_static(&[1, 2, 3]),
                },
                records::SequencedRecord {
                    seq_num: 5,
                    timestamp: 101,
                    headers: vec![],
                    body: Bytes::new(),
                },
            ],
            tail: Some(position(6, 101)),
        };
        let decoded = ReadBatch::decode(&encode_read_batch(&batch)[..]).unwrap();
        assert_eq!(read_batch_from_proto(decoded), batch);

        let heartbeat = records::ReadBatch {
            records: vec![],
            tail: Some(position(0, 0)),
        };
        let decoded = ReadBatch::decode(&encode_read_batch(&heartbeat)[..]).unwrap();
        // A zero tail still has to be present: it is what marks a heartbeat.
        assert_eq!(decoded.tail, Some(StreamPosition::default()));
        assert_eq!(read_batch_from_proto(decoded), heartbeat);

        let catch_up = records::ReadBatch::default();
        let decoded = ReadBatch::decode(&encode_read_batch(&catch_up)[..]).unwrap();
        assert_eq!(decoded.tail, None);
    }
}
