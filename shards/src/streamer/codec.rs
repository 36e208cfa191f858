//! Byte layouts of the values a streamer persists.
//!
//! Record (`10` keys):
//! `format(1) = 0 | timestamp(8) | expires_at_ms(8) | header_count(4) |
//!  (name_len(4) name value_len(4) value)* | body`
//!
//! `expires_at_ms` is the write time plus the retention age under the config at write
//! time, 0 for never; reads skip records past it, before compaction removes them.
//!
//! Stream state (`12` keys), rewritten with every append batch:
//! `next_seq_num(8) | last_timestamp(8) | trim_point(8) | fencing_token (UTF-8, rest)`
//!
//! Integers are big-endian. Persisted: change only by adding a new format byte.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::records::{FencingToken, Header, Position, SequencedRecord};

const FORMAT_PLAIN: u8 = 0;

/// Why a stored value could not be decoded.
#[derive(Debug)]
pub struct Undecodable(pub &'static str);

/// Bytes before the headers: format, timestamp, expiry, header count.
const RECORD_PREFIX_BYTES: usize = 21;

/// A stored record and when it expires (`None`: never).
pub struct StoredRecord {
    pub record: SequencedRecord,
    pub expires_at_ms: Option<u64>,
}

pub fn encode_record(
    timestamp: u64,
    expires_at_ms: Option<u64>,
    headers: &[Header],
    body: &[u8],
) -> Bytes {
    let size = RECORD_PREFIX_BYTES
        + headers
            .iter()
            .map(|h| 8 + h.name.len() + h.value.len())
            .sum::<usize>()
        + body.len();
    let mut v = BytesMut::with_capacity(size);
    v.put_u8(FORMAT_PLAIN);
    v.put_u64(timestamp);
    v.put_u64(expires_at_ms.unwrap_or(0));
    v.put_u32(headers.len() as u32);
    for h in headers {
        v.put_u32(h.name.len() as u32);
        v.put_slice(&h.name);
        v.put_u32(h.value.len() as u32);
        v.put_slice(&h.value);
    }
    v.put_slice(body);
    v.freeze()
}

fn take(buf: &mut Bytes, n: usize) -> Result<Bytes, Undecodable> {
    if buf.remaining() < n {
        return Err(Undecodable("record value truncated"));
    }
    Ok(buf.split_to(n))
}

fn take_u32(buf: &mut Bytes) -> Result<u32, Undecodable> {
    if buf.remaining() < 4 {
        return Err(Undecodable("record value truncated"));
    }
    Ok(buf.get_u32())
}

pub fn decode_record(seq_num: u64, mut value: Bytes) -> Result<StoredRecord, Undecodable> {
    if value.remaining() < RECORD_PREFIX_BYTES {
        return Err(Undecodable("record value truncated"));
    }
    if value.get_u8() != FORMAT_PLAIN {
        return Err(Undecodable("unknown record format"));
    }
    let timestamp = value.get_u64();
    let expires_at_ms = Some(value.get_u64()).filter(|&t| t != 0);
    let count = value.get_u32() as usize;
    // Each header takes at least 8 bytes: refuse counts the value cannot hold.
    if count > value.remaining() / 8 {
        return Err(Undecodable("header count exceeds value"));
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        let n = take_u32(&mut value)? as usize;
        let name = take(&mut value, n)?;
        let n = take_u32(&mut value)? as usize;
        let value_bytes = take(&mut value, n)?;
        headers.push(Header {
            name,
            value: value_bytes,
        });
    }
    Ok(StoredRecord {
        record: SequencedRecord {
            seq_num,
            timestamp,
            headers,
            body: value,
        },
        expires_at_ms,
    })
}

/// What a stream's `12` key holds: its durable tail, trim point and fencing token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    pub tail: Position,
    pub trim_point: u64,
    pub fencing_token: FencingToken,
}

pub fn encode_state(state: &StreamState) -> Bytes {
    let token = state.fencing_token.as_str().as_bytes();
    let mut v = BytesMut::with_capacity(24 + token.len());
    v.put_u64(state.tail.seq_num);
    v.put_u64(state.tail.timestamp);
    v.put_u64(state.trim_point);
    v.put_slice(token);
    v.freeze()
}

pub fn decode_state(mut value: Bytes) -> Result<StreamState, Undecodable> {
    if value.remaining() < 24 {
        return Err(Undecodable("stream state truncated"));
    }
    let tail = Position {
        seq_num: value.get_u64(),
        timestamp: value.get_u64(),
    };
    let trim_point = value.get_u64();
    let token = String::from_utf8(value.to_vec())
        .ok()
        .and_then(|t| FencingToken::new(t).ok())
        .ok_or(Undecodable("fencing token invalid"))?;
    Ok(StreamState {
        tail,
        trim_point,
        fencing_token: token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_round_trip() {
        let headers = vec![
            Header {
                name: Bytes::from_static(b"k"),
                value: Bytes::from_static(b""),
            },
            Header {
                name: Bytes::from_static(b""),
                value: Bytes::from_static(b"fence"),
            },
        ];
        let v = encode_record(42, Some(99), &headers, b"body");
        let stored = decode_record(7, v).unwrap();
        assert_eq!(stored.expires_at_ms, Some(99));
        let r = stored.record;
        assert_eq!(r.seq_num, 7);
        assert_eq!(r.timestamp, 42);
        assert_eq!(r.headers, headers);
        assert_eq!(&r.body[..], b"body");
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        assert_eq!(
            decode_record(0, encode_record(1, None, &[], b""))
                .unwrap()
                .expires_at_ms,
            None
        );
        let v = encode_record(1, None, &[], b"");
        for cut in 0..v.len() {
            assert!(decode_record(0, v.slice(..cut)).is_err());
        }
        let mut bad = BytesMut::from(&v[..]);
        bad[17..21].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_record(0, bad.freeze()).is_err());
    }

    #[test]
    fn state_round_trip() {
        let s = StreamState {
            tail: Position {
                seq_num: 9,
                timestamp: 100,
            },
            trim_point: 3,
            fencing_token: FencingToken::new("tok".into()).unwrap(),
        };
        assert_eq!(decode_state(encode_state(&s)).unwrap(), s);
    }
}
