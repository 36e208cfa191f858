//! The `s2.v1` protobuf messages of the data plane (WIRE.md §3.2, `reference/s2.proto`),
//! declared by hand for raw protobuf and S2S requests.

#[derive(Clone, Copy, PartialEq, Eq, prost::Message)]
pub struct StreamPosition {
    #[prost(uint64, tag = "1")]
    pub seq_num: u64,
    #[prost(uint64, tag = "2")]
    pub timestamp: u64,
}

#[derive(Clone, PartialEq, Eq, prost::Message)]
pub struct Header {
    #[prost(bytes = "vec", tag = "1")]
    pub name: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AppendRecord {
    #[prost(uint64, optional, tag = "1")]
    pub timestamp: Option<u64>,
    #[prost(message, repeated, tag = "2")]
    pub headers: Vec<Header>,
    #[prost(bytes = "vec", tag = "3")]
    pub body: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AppendInput {
    #[prost(message, repeated, tag = "1")]
    pub records: Vec<AppendRecord>,
    #[prost(uint64, optional, tag = "2")]
    pub match_seq_num: Option<u64>,
    #[prost(string, optional, tag = "3")]
    pub fencing_token: Option<String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct AppendAck {
    #[prost(message, optional, tag = "1")]
    pub start: Option<StreamPosition>,
    #[prost(message, optional, tag = "2")]
    pub end: Option<StreamPosition>,
    #[prost(message, optional, tag = "3")]
    pub tail: Option<StreamPosition>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct SequencedRecord {
    #[prost(uint64, tag = "1")]
    pub seq_num: u64,
    #[prost(uint64, tag = "2")]
    pub timestamp: u64,
    #[prost(message, repeated, tag = "3")]
    pub headers: Vec<Header>,
    #[prost(bytes = "vec", tag = "4")]
    pub body: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReadBatch {
    #[prost(message, repeated, tag = "1")]
    pub records: Vec<SequencedRecord>,
    #[prost(message, optional, tag = "2")]
    pub tail: Option<StreamPosition>,
}

/// A record with only a body.
pub fn record(body: &[u8]) -> AppendRecord {
    AppendRecord {
        timestamp: None,
        headers: Vec::new(),
        body: body.to_vec(),
    }
}

/// An AppendInput of body-only records and no conditions.
pub fn input(bodies: &[&str]) -> AppendInput {
    AppendInput {
        records: bodies.iter().map(|body| record(body.as_bytes())).collect(),
        match_seq_num: None,
        fencing_token: None,
    }
}

/// The positions of an ack, all three of which must be set.
pub fn ack_positions(ack: &AppendAck) -> [(u64, u64); 3] {
    let get = |position: &Option<StreamPosition>, name: &str| {
        let position = position.unwrap_or_else(|| panic!("AppendAck.{name} is not set: {ack:?}"));
        (position.seq_num, position.timestamp)
    };
    [
        get(&ack.start, "start"),
        get(&ack.end, "end"),
        get(&ack.tail, "tail"),
    ]
}
