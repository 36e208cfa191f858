//! The stored record codec: any value the store hands back decodes or fails cleanly, with
//! any key or none; and any record, plain or sealed with either cipher, encodes and
//! decodes back to itself at its position (and only there, when sealed).

use arbitrary::{Arbitrary, Unstructured};
use base64::Engine;
use bytes::Bytes;
use sluice_shards::config::Cipher;
use sluice_shards::crypto::{EncryptionKey, KeyMaterial};
use sluice_shards::records::Header;
use sluice_shards::segments::format::{concat, split_records, ChunkWriter};
use sluice_shards::streamer::codec::{decode_record, encode_record_into, DecodeError, Sealing};

use crate::alloc_meter::bounded;

pub(crate) fn cipher(u: &mut Unstructured<'_>) -> arbitrary::Result<Option<Cipher>> {
    Ok(match u8::arbitrary(u)? % 3 {
        0 => None,
        1 => Some(Cipher::Aegis256),
        _ => Some(Cipher::Aes256Gcm),
    })
}

pub(crate) fn key(u: &mut Unstructured<'_>, cipher: Cipher) -> arbitrary::Result<EncryptionKey> {
    let bytes = <[u8; 32]>::arbitrary(u)?;
    let text = base64::engine::general_purpose::STANDARD.encode(bytes);
    Ok(KeyMaterial::new(&text)
        .and_then(|m| m.key_for(cipher))
        .expect("32 bytes of base64 are a key"))
}

#[derive(Debug, Arbitrary)]
struct Record {
    stream_id: u128,
    seq_num: u64,
    timestamp: u64,
    expires_at_ms: Option<u64>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
}

fn round_trip(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let cipher = cipher(u)?;
    let key = cipher.map(|c| key(u, c)).transpose()?;
    let record = Record::arbitrary(u)?;
    let headers: Vec<Header> = record
        .headers
        .iter()
        .map(|(n, v)| Header {
            name: Bytes::copy_from_slice(n),
            value: Bytes::copy_from_slice(v),
        })
        .collect();
    let body = Bytes::copy_from_slice(&record.body);
    let keyed = cipher.zip(key);
    let sealing = match &keyed {
        None => Sealing::Plain,
        Some((cipher, key)) => Sealing::Sealed {
            cipher: *cipher,
            key,
            stream_id: record.stream_id,
        },
    };
    let mut out = ChunkWriter::with_capacity(0);
    encode_record_into(
        &mut out,
        &sealing,
        record.seq_num,
        record.timestamp,
        record.expires_at_ms,
        &headers,
        &body,
    );
    let mut values = split_records(concat(&out.finish()), 1).expect("one record");
    let value = values.pop().expect("one value");
    let stored = decode_record(
        record.stream_id,
        record.seq_num,
        value.clone(),
        keyed.as_ref(),
    )
    .expect("an encoded record decodes");
    assert_eq!(stored.record.seq_num, record.seq_num);
    assert_eq!(stored.record.timestamp, record.timestamp);
    assert_eq!(
        stored.expires_at_ms,
        record.expires_at_ms.filter(|&t| t != 0)
    );
    assert_eq!(stored.record.headers, headers);
    assert_eq!(stored.record.body, body);
    if let Some(keyed) = &keyed {
        // The position is authenticated: the same bytes do not open anywhere else.
        let elsewhere = decode_record(
            record.stream_id,
            record.seq_num.wrapping_add(1),
            value.clone(),
            Some(keyed),
        );
        assert!(matches!(elsewhere, Err(DecodeError::DecryptionFailed)));
        assert!(matches!(
            decode_record(record.stream_id, record.seq_num, value, None),
            Err(DecodeError::KeyRequired(_))
        ));
    }
    Ok(())
}

fn decode_any(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let cipher = cipher(u)?;
    let key = cipher.map(|c| key(u, c)).transpose()?;
    let stream_id = u128::arbitrary(u)?;
    let seq_num = u64::arbitrary(u)?;
    let value = Bytes::copy_from_slice(u.bytes(u.len())?);
    // Each header takes at least 8 bytes of the value and 64 in memory (two `Bytes`
    // handles), and a sealed payload is opened into a copy.
    let bound = 10 * value.len() + (4 << 10);
    let keyed = cipher.zip(key);
    let _ = bounded("decoding a stored record", bound, || {
        decode_record(stream_id, seq_num, value, keyed.as_ref())
    });
    Ok(())
}

pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let _ = match u8::arbitrary(&mut u) {
        Ok(mode) if mode & 1 == 0 => round_trip(&mut u),
        Ok(_) => decode_any(&mut u),
        Err(e) => Err(e),
    };
}
