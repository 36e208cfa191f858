//! Byte layouts of the values a streamer persists.
//!
//! Record (inside a segment run, `segments::format`, behind its 4-byte length):
//! `format(1) | timestamp(8) | expires_at_ms(8) | payload`, where the
//! payload is `header_count(4) | (name_len(4) name value_len(4) value)* | body`:
//! - format 0: the payload in the clear;
//! - format 1 (aegis-256) and 2 (aes-256-gcm): the payload sealed by [`crate::crypto`],
//!   with the stream id and seq_num as associated data.
//!
//! `expires_at_ms` is the write time plus the retention age under the config at write
//! time, 0 for never; reads skip records past it, before compaction removes them.
//!
//! Stream state (`12` keys), rewritten with every append batch:
//! `next_seq_num(8) | last_timestamp(8) | trim_point(8) | last_write_ms(8) |
//!  fencing_token (UTF-8, rest)`
//!
//! Integers are big-endian. Persisted: change only by adding a new format byte.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::config::Cipher;
use crate::crypto::{self, EncryptionKey};
use crate::records::{FencingToken, Header, Position, SequencedRecord};
use crate::segments::format::{concat, ChunkWriter};

/// Record formats. Persisted: never renumber.
const FORMAT_PLAIN: u8 = 0;
const FORMAT_AEGIS_256: u8 = 1;
const FORMAT_AES_256_GCM: u8 = 2;

/// Bytes before the payload: format, timestamp, expiry.
const RECORD_PREFIX_BYTES: usize = 17;

/// Why a stored record could not be turned back into a record.
#[derive(Debug)]
pub enum DecodeError {
    Undecodable(&'static str),
    /// Sealed, and the key given does not open it.
    DecryptionFailed,
    /// Sealed, and no key was given.
    KeyRequired(Cipher),
}

/// Why a stored value could not be decoded.
#[derive(Debug)]
pub struct Undecodable(pub &'static str);

impl From<Undecodable> for DecodeError {
    fn from(u: Undecodable) -> DecodeError {
        DecodeError::Undecodable(u.0)
    }
}

/// A stored record and when it expires (`None`: never).
pub struct StoredRecord {
    pub record: SequencedRecord,
    pub expires_at_ms: Option<u64>,
}

/// How the payload of new records is stored.
pub enum Sealing<'a> {
    Plain,
    Sealed {
        cipher: Cipher,
        key: &'a EncryptionKey,
        stream_id: u128,
    },
}

fn associated_data(stream_id: u128, seq_num: u64) -> [u8; 24] {
    let mut aad = [0u8; 24];
    aad[..16].copy_from_slice(&stream_id.to_be_bytes());
    aad[16..].copy_from_slice(&seq_num.to_be_bytes());
    aad
}

fn encode_payload(headers: &[Header], body: &Bytes, out: &mut ChunkWriter) {
    out.put_u32(headers.len() as u32);
    for h in headers {
        out.put_u32(h.name.len() as u32);
        out.put_slice(&h.name);
        out.put_u32(h.value.len() as u32);
        out.put_slice(&h.value);
    }
    out.put_bytes(body);
}

fn payload_len(headers: &[Header], body: &[u8]) -> usize {
    4 + headers
        .iter()
        .map(|h| 8 + h.name.len() + h.value.len())
        .sum::<usize>()
        + body.len()
}

/// Append one record to a run: its length (`segments::format`), then its stored value.
/// A plain record's body is shared with the caller, not copied, when it is large.
pub fn encode_record_into(
    out: &mut ChunkWriter,
    sealing: &Sealing<'_>,
    seq_num: u64,
    timestamp: u64,
    expires_at_ms: Option<u64>,
    headers: &[Header],
    body: &Bytes,
) {
    let format = match sealing {
        Sealing::Plain => FORMAT_PLAIN,
        Sealing::Sealed {
            cipher: Cipher::Aegis256,
            ..
        } => FORMAT_AEGIS_256,
        Sealing::Sealed {
            cipher: Cipher::Aes256Gcm,
            ..
        } => FORMAT_AES_256_GCM,
    };
    let put_prefix = |out: &mut ChunkWriter, payload_bytes: usize| {
        out.put_u32((RECORD_PREFIX_BYTES + payload_bytes) as u32);
        out.put_u8(format);
        out.put_u64(timestamp);
        out.put_u64(expires_at_ms.unwrap_or(0));
    };
    match sealing {
        Sealing::Plain => {
            put_prefix(out, payload_len(headers, body));
            encode_payload(headers, body, out);
        }
        Sealing::Sealed {
            cipher,
            key,
            stream_id,
        } => {
            let mut plain = ChunkWriter::with_capacity(payload_len(headers, body));
            encode_payload(headers, body, &mut plain);
            let aad = associated_data(*stream_id, seq_num);
            let sealed = crypto::seal(*cipher, key, &aad, &concat(&plain.finish()));
            put_prefix(out, sealed.len());
            out.put_slice(&sealed);
        }
    }
}

/// An upper bound on the inline bytes [`encode_record_into`] writes for one plain record
/// (a large body is shared, but counting it too only oversizes the buffer).
pub fn encoded_len_hint(headers: &[Header], body: &[u8]) -> usize {
    4 + RECORD_PREFIX_BYTES + payload_len(headers, body)
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

fn decode_payload(mut value: Bytes) -> Result<(Vec<Header>, Bytes), Undecodable> {
    let count = take_u32(&mut value)? as usize;
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
    Ok((headers, value))
}

/// Decode a stored record; sealed ones need `key` (the stream's cipher and key).
pub fn decode_record(
    stream_id: u128,
    seq_num: u64,
    mut value: Bytes,
    key: Option<&(Cipher, EncryptionKey)>,
) -> Result<StoredRecord, DecodeError> {
    if value.remaining() < RECORD_PREFIX_BYTES {
        return Err(DecodeError::Undecodable("record value truncated"));
    }
    let format = value.get_u8();
    let timestamp = value.get_u64();
    let expires_at_ms = Some(value.get_u64()).filter(|&t| t != 0);
    let cipher = match format {
        FORMAT_PLAIN => None,
        FORMAT_AEGIS_256 => Some(Cipher::Aegis256),
        FORMAT_AES_256_GCM => Some(Cipher::Aes256Gcm),
        _ => return Err(DecodeError::Undecodable("unknown record format")),
    };
    let payload = match cipher {
        None => value,
        Some(cipher) => {
            let Some((_, key)) = key else {
                return Err(DecodeError::KeyRequired(cipher));
            };
            let aad = associated_data(stream_id, seq_num);
            Bytes::from(
                crypto::open(cipher, key, &aad, &value).ok_or(DecodeError::DecryptionFailed)?,
            )
        }
    };
    let (headers, body) = decode_payload(payload)?;
    Ok(StoredRecord {
        record: SequencedRecord {
            seq_num,
            timestamp,
            headers,
            body,
        },
        expires_at_ms,
    })
}

/// What a stream's `12` key holds: its durable tail, trim point and fencing token.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamState {
    pub tail: Position,
    pub trim_point: u64,
    /// Wall-clock time of the last append, for delete-on-empty; 0 if never written.
    pub last_write_ms: u64,
    pub fencing_token: FencingToken,
}

const STATE_FIXED_BYTES: usize = 32;

pub fn encode_state(state: &StreamState) -> Bytes {
    let token = state.fencing_token.as_str().as_bytes();
    let mut v = BytesMut::with_capacity(STATE_FIXED_BYTES + token.len());
    v.put_u64(state.tail.seq_num);
    v.put_u64(state.tail.timestamp);
    v.put_u64(state.trim_point);
    v.put_u64(state.last_write_ms);
    v.put_slice(token);
    v.freeze()
}

pub fn decode_state(mut value: Bytes) -> Result<StreamState, Undecodable> {
    if value.remaining() < STATE_FIXED_BYTES {
        return Err(Undecodable("stream state truncated"));
    }
    let tail = Position {
        seq_num: value.get_u64(),
        timestamp: value.get_u64(),
    };
    let trim_point = value.get_u64();
    let last_write_ms = value.get_u64();
    let token = String::from_utf8(value.to_vec())
        .ok()
        .and_then(|t| FencingToken::new(t).ok())
        .ok_or(Undecodable("fencing token invalid"))?;
    Ok(StreamState {
        tail,
        trim_point,
        last_write_ms,
        fencing_token: token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One record's stored value, as a run holds it after its length prefix.
    fn encode_record(
        sealing: &Sealing<'_>,
        seq_num: u64,
        timestamp: u64,
        expires_at_ms: Option<u64>,
        headers: &[Header],
        body: &[u8],
    ) -> Bytes {
        let mut w = ChunkWriter::default();
        let body = Bytes::copy_from_slice(body);
        encode_record_into(
            &mut w,
            sealing,
            seq_num,
            timestamp,
            expires_at_ms,
            headers,
            &body,
        );
        let mut all = concat(&w.finish());
        let len = all.get_u32() as usize;
        assert_eq!(len, all.len(), "length prefix counts the value");
        all
    }

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
        let v = encode_record(&Sealing::Plain, 7, 42, Some(99), &headers, b"body");
        let stored = decode_record(1, 7, v, None).unwrap();
        assert_eq!(stored.expires_at_ms, Some(99));
        let r = stored.record;
        assert_eq!(r.seq_num, 7);
        assert_eq!(r.timestamp, 42);
        assert_eq!(r.headers, headers);
        assert_eq!(&r.body[..], b"body");
    }

    #[test]
    fn corrupt_records_are_errors_not_panics() {
        let plain = encode_record(&Sealing::Plain, 0, 1, None, &[], b"");
        assert_eq!(
            decode_record(1, 0, plain.clone(), None)
                .unwrap()
                .expires_at_ms,
            None
        );
        for cut in 0..plain.len() {
            assert!(decode_record(1, 0, plain.slice(..cut), None).is_err());
        }
        let mut bad = BytesMut::from(&plain[..]);
        bad[17..21].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode_record(1, 0, bad.freeze(), None).is_err());
    }

    #[test]
    fn sealed_records_need_the_right_key_and_position() {
        use base64::Engine as _;
        let material = |b: u8| {
            crate::crypto::KeyMaterial::new(
                &base64::engine::general_purpose::STANDARD.encode([b; 32]),
            )
            .unwrap()
        };
        for cipher in [Cipher::Aegis256, Cipher::Aes256Gcm] {
            let key = material(1).key_for(cipher).unwrap();
            let sealing = Sealing::Sealed {
                cipher,
                key: &key,
                stream_id: 9,
            };
            let v = encode_record(&sealing, 3, 5, None, &[], b"secret");
            assert!(
                !v.windows(6).any(|w| w == b"secret"),
                "body stored in the clear"
            );
            let right = (cipher, key.clone());
            let got = decode_record(9, 3, v.clone(), Some(&right)).unwrap();
            assert_eq!(&got.record.body[..], b"secret");
            let wrong = (cipher, material(2).key_for(cipher).unwrap());
            assert!(matches!(
                decode_record(9, 3, v.clone(), Some(&wrong)),
                Err(DecodeError::DecryptionFailed)
            ));
            assert!(matches!(
                decode_record(9, 4, v.clone(), Some(&right)),
                Err(DecodeError::DecryptionFailed)
            ));
            assert!(matches!(
                decode_record(9, 3, v, None),
                Err(DecodeError::KeyRequired(_))
            ));
        }
    }

    #[test]
    fn state_round_trip() {
        let s = StreamState {
            tail: Position {
                seq_num: 9,
                timestamp: 100,
            },
            trim_point: 3,
            last_write_ms: 77,
            fencing_token: FencingToken::new("tok".into()).unwrap(),
        };
        assert_eq!(decode_state(encode_state(&s)).unwrap(), s);
    }
}
