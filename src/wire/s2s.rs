//! S2S session framing, `s2s/proto` (WIRE §5.2).
//!
//! A frame is a 3-byte big-endian LENGTH, a FLAGS byte and LENGTH − 1 payload bytes. FLAGS
//! bit 7 marks the terminal frame (2-byte HTTP status + UTF-8 JSON error body); bits 6–5
//! name the payload compression (00 none, 01 zstd, 10 gzip); bit 4 (reconnect advised) and
//! bits 3–0 carry nothing a receiver acts on.

use std::io::{Read, Write};

use bytes::{Buf, Bytes, BytesMut};

use super::coding::Coding;

/// Largest LENGTH a frame may declare: the flags byte plus the payload.
pub const FRAME_LENGTH_MAX: usize = 2 * 1024 * 1024;
/// Largest payload of a frame as sent, compressed or not.
pub const PAYLOAD_MAX: usize = FRAME_LENGTH_MAX - 1;
/// Largest payload after decompression.
pub const DECOMPRESSED_PAYLOAD_MAX: usize = PAYLOAD_MAX;
/// Largest zstd window a payload may declare, as a power of two (8 MiB). zstd buffers a
/// whole window for a frame that does not state its content size, and would accept 128
/// MiB: an 11-byte payload could make the server allocate that much. A payload inflates
/// to at most [`DECOMPRESSED_PAYLOAD_MAX`], and zstd's default level declares 2 MiB when it
/// streams without a content size (as the reference client does), so 8 MiB leaves room.
pub const ZSTD_WINDOW_LOG_MAX: u32 = 23;
/// Smallest payload worth compressing; smaller ones go out with CC = 00 even when an
/// algorithm was negotiated.
pub const COMPRESS_THRESHOLD: usize = 1024;

const LENGTH_PREFIX: usize = 3;
const STATUS_LEN: usize = 2;
const FLAG_TERMINAL: u8 = 0x80;
const CC_MASK: u8 = 0x60;
const CC_SHIFT: u8 = 5;

/// The CC bits of a regular frame's payload: 00 none, 01 a complete zstd stream, 10 a
/// complete gzip member.
fn cc_bits(compression: Coding) -> u8 {
    let cc = match compression {
        Coding::Identity => 0,
        Coding::Zstd => 1,
        Coding::Gzip => 2,
    };
    cc << CC_SHIFT
}
/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A regular frame's payload, already decompressed: one protobuf message.
    Message(Bytes),
    /// The last frame of its direction: an HTTP status and a JSON error body.
    Terminal {
        /// HTTP status code.
        status: u16,
        /// JSON error body.
        body: String,
    },
}

/// Why the frame stream cannot be decoded. Errors are fatal: the session ends with
/// `400 bad_frame` "Failed to decode S2S frame: <text>", so the texts follow the reference.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// LENGTH is above [`FRAME_LENGTH_MAX`].
    #[error("frame exceeds decode limit")]
    TooLong,
    /// LENGTH is 0, so there is not even a flags byte.
    #[error("empty frame payload")]
    Empty,
    /// CC = 11.
    #[error("unknown compression algorithm")]
    UnknownCompression,
    /// The payload is not a valid stream of the algorithm its CC bits name.
    #[error("{0}")]
    Decompress(String),
    /// The payload inflates past [`DECOMPRESSED_PAYLOAD_MAX`].
    #[error("decompressed payload exceeds limit")]
    DecompressedTooLong,
    /// A terminal frame too short to hold a status code.
    #[error("terminal message missing status code")]
    TerminalMissingStatus,
    /// A terminal frame whose body is not UTF-8.
    #[error("invalid utf-8")]
    TerminalNotUtf8,
    /// The input ended inside a frame.
    #[error("bytes remaining on stream")]
    Truncated,
}

/// Reassembles frames from arbitrarily split chunks of a request or response body.
///
/// Feed each chunk to [`push`](Self::push) and then drain [`next_frame`](Self::next_frame)
/// until it returns `None`; used that way the buffer never holds more than one frame (at
/// most [`FRAME_LENGTH_MAX`] + 3 bytes) plus the latest chunk. An over-long LENGTH is
/// rejected as soon as its 3 bytes arrive, before any of the frame is buffered.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    buf: BytesMut,
}

impl FrameDecoder {
    /// An empty decoder.
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// Append a chunk of input.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }

    /// The next complete frame, or `None` until more input arrives.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(prefix) = self.buf.get(..LENGTH_PREFIX) else {
            return Ok(None);
        };
        let length =
            (usize::from(prefix[0]) << 16) | (usize::from(prefix[1]) << 8) | usize::from(prefix[2]);
        if length > FRAME_LENGTH_MAX {
            return Err(FrameError::TooLong);
        }
        if length == 0 {
            return Err(FrameError::Empty);
        }
        let total = LENGTH_PREFIX + length;
        if self.buf.len() < total {
            // One allocation for the rest of this frame instead of repeated doubling.
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        self.buf.advance(LENGTH_PREFIX);
        let frame = self.buf.split_to(length).freeze();
        decode_frame(frame).map(Some)
    }

    /// Check the input ended on a frame boundary; call once the body is complete.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

/// Decode one frame's FLAGS byte and payload.
fn decode_frame(mut frame: Bytes) -> Result<Frame, FrameError> {
    let Some(&flags) = frame.first() else {
        return Err(FrameError::Empty);
    };
    frame.advance(1);
    if flags & FLAG_TERMINAL != 0 {
        // Terminal payloads are never compressed; their CC bits are not consulted.
        if frame.len() < STATUS_LEN {
            return Err(FrameError::TerminalMissingStatus);
        }
        let status = u16::from_be_bytes([frame[0], frame[1]]);
        let body = std::str::from_utf8(&frame[STATUS_LEN..])
            .map_err(|_| FrameError::TerminalNotUtf8)?
            .to_owned();
        return Ok(Frame::Terminal { status, body });
    }
    let payload = match (flags & CC_MASK) >> CC_SHIFT {
        0 => frame,
        1 => {
            let decompress = |e: std::io::Error| FrameError::Decompress(e.to_string());
            let mut decoder = zstd::stream::Decoder::with_buffer(&frame[..]).map_err(decompress)?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(decompress)?;
            inflate_bounded(decoder, frame.len())?
        }
        2 => inflate_bounded(flate2::read::GzDecoder::new(&frame[..]), frame.len())?,
        _ => return Err(FrameError::UnknownCompression),
    };
    if payload.len() > DECOMPRESSED_PAYLOAD_MAX {
        return Err(FrameError::DecompressedTooLong);
    }
    Ok(Frame::Message(payload))
}

/// Read a decompressor to its end, but never more than one byte past the limit, so a
/// small payload that claims gigabytes costs at most ~2 MiB before it is refused.
fn inflate_bounded(decoder: impl Read, compressed_len: usize) -> Result<Bytes, FrameError> {
    let capacity = compressed_len
        .saturating_mul(2)
        .clamp(COMPRESS_THRESHOLD, DECOMPRESSED_PAYLOAD_MAX);
    let mut out = Vec::with_capacity(capacity);
    let limit = DECOMPRESSED_PAYLOAD_MAX as u64 + 1;
    decoder
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|e| FrameError::Decompress(e.to_string()))?;
    if out.len() > DECOMPRESSED_PAYLOAD_MAX {
        return Err(FrameError::DecompressedTooLong);
    }
    Ok(Bytes::from(out))
}

/// Frame one protobuf message, encoding it straight into the frame unless it is to be
/// compressed: read batches are up to a MiB, and a second copy of them is measurable.
pub fn encode_proto<M: prost::Message>(message: &M, compression: Coding) -> Bytes {
    let len = message.encoded_len();
    if compression != Coding::Identity && len >= COMPRESS_THRESHOLD {
        return encode_message(&message.encode_to_vec(), compression);
    }
    debug_assert!(len <= PAYLOAD_MAX, "S2S payload over the frame limit");
    let mut out = BytesMut::with_capacity(LENGTH_PREFIX + 1 + len);
    put_prefix(&mut out, 1 + len, 0);
    message.encode_raw(&mut out);
    out.freeze()
}

/// Frame one encoded protobuf message.
///
/// The payload is compressed only when an algorithm was negotiated and it is at least
/// [`COMPRESS_THRESHOLD`] bytes. Should compression fail, or produce more than
/// [`PAYLOAD_MAX`] bytes, the payload goes out uncompressed, which is always acceptable to
/// the peer. `payload` must not exceed [`PAYLOAD_MAX`] bytes; read batches and acks are far
/// below it.
fn encode_message(payload: &[u8], compression: Coding) -> Bytes {
    if compression != Coding::Identity && payload.len() >= COMPRESS_THRESHOLD {
        if let Some(compressed) = compress(payload, compression) {
            if compressed.len() <= PAYLOAD_MAX {
                return build_frame(cc_bits(compression), &[compressed.as_slice()]);
            }
        }
    }
    debug_assert!(
        payload.len() <= PAYLOAD_MAX,
        "S2S payload over the frame limit"
    );
    build_frame(0, &[payload])
}

/// Frame the terminal message of a session: `status` and the JSON error body.
pub fn encode_terminal(status: u16, json_body: &str) -> Bytes {
    build_frame(
        FLAG_TERMINAL,
        &[&status.to_be_bytes()[..], json_body.as_bytes()],
    )
}

fn compress(payload: &[u8], compression: Coding) -> Option<Vec<u8>> {
    match compression {
        Coding::Identity => None,
        Coding::Zstd => zstd::stream::encode_all(payload, zstd::DEFAULT_COMPRESSION_LEVEL).ok(),
        Coding::Gzip => {
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(payload.len() / 2),
                flate2::Compression::default(),
            );
            encoder.write_all(payload).ok()?;
            encoder.finish().ok()
        }
    }
}

fn build_frame(flags: u8, parts: &[&[u8]]) -> Bytes {
    let length = 1 + parts.iter().map(|p| p.len()).sum::<usize>();
    let mut out = BytesMut::with_capacity(LENGTH_PREFIX + length);
    put_prefix(&mut out, length, flags);
    for part in parts {
        out.extend_from_slice(part);
    }
    out.freeze()
}

/// The length prefix and flags byte of a frame whose flags byte and payload take `length`.
fn put_prefix(out: &mut BytesMut, length: usize, flags: u8) {
    // LENGTH is 24 bits; callers keep it within FRAME_LENGTH_MAX, far below 2^24.
    out.extend_from_slice(&[
        (length >> 16) as u8,
        (length >> 8) as u8,
        length as u8,
        flags,
    ]);
}

#[cfg(test)]
mod tests {
    use std::io;

    use proptest::prelude::*;

    use super::*;

    const ALL: [Coding; 3] = [Coding::Identity, Coding::Zstd, Coding::Gzip];

    /// A raw frame with the given flags byte and payload, bypassing the encoder's rules.
    fn raw_frame(flags: u8, payload: &[u8]) -> Vec<u8> {
        let length = payload.len() + 1;
        let mut out = vec![
            (length >> 16) as u8,
            (length >> 8) as u8,
            length as u8,
            flags,
        ];
        out.extend_from_slice(payload);
        out
    }

    fn zstd_compress(data: impl Read) -> Vec<u8> {
        zstd::stream::encode_all(data, 0).unwrap()
    }

    fn gzip_compress(mut data: impl Read) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        io::copy(&mut data, &mut encoder).unwrap();
        encoder.finish().unwrap()
    }

    fn decode_one(bytes: &[u8]) -> Result<Option<Frame>, FrameError> {
        let mut decoder = FrameDecoder::new();
        decoder.push(bytes);
        decoder.next_frame()
    }

    /// Feed `stream` in chunks whose sizes cycle through `cuts`, draining after each.
    fn decode_chunked(stream: &[u8], cuts: &[usize]) -> Result<Vec<Frame>, FrameError> {
        let mut decoder = FrameDecoder::new();
        let mut frames = Vec::new();
        let mut rest = stream;
        let mut i = 0;
        while !rest.is_empty() {
            let n = cuts
                .get(i % cuts.len().max(1))
                .copied()
                .unwrap_or(1)
                .clamp(1, rest.len());
            let (chunk, tail) = rest.split_at(n);
            decoder.push(chunk);
            while let Some(frame) = decoder.next_frame()? {
                frames.push(frame);
            }
            rest = tail;
            i += 1;
        }
        decoder.finish()?;
        Ok(frames)
    }

    fn message(payload: &[u8]) -> Frame {
        Frame::Message(Bytes::copy_from_slice(payload))
    }

    #[test]
    fn spec_regular_frame_example() {
        let bytes: [u8; 9] = [0x00, 0x00, 0x06, 0x00, 1, 2, 3, 4, 5];
        assert_eq!(decode_one(&bytes), Ok(Some(message(&[1, 2, 3, 4, 5]))));
        for compression in ALL {
            // Below the threshold nothing is compressed, whatever was negotiated.
            assert_eq!(
                &encode_message(&[1, 2, 3, 4, 5], compression)[..],
                &bytes[..]
            );
        }
    }

    #[test]
    fn spec_terminal_frame_example() {
        let json = r#"{"code":"stream_not_found","message":"stream `s` not found"}"#;
        let bytes = encode_terminal(404, json);
        let ll = 3 + json.len();
        assert_eq!(&bytes[..3], &[0x00, 0x00, ll as u8]);
        assert_eq!(&bytes[3..6], &[0x80, 0x01, 0x94]);
        assert_eq!(&bytes[6..], json.as_bytes());
        assert_eq!(
            decode_one(&bytes),
            Ok(Some(Frame::Terminal {
                status: 404,
                body: json.to_owned()
            }))
        );
    }

    #[test]
    fn byte_by_byte_matches_whole() {
        let big: Vec<u8> = (0..4000u32).map(|i| (i % 7) as u8).collect();
        let mut stream = Vec::new();
        stream.extend_from_slice(&encode_message(b"", Coding::Identity));
        stream.extend_from_slice(&encode_message(b"small", Coding::Zstd));
        stream.extend_from_slice(&encode_message(&big, Coding::Zstd));
        stream.extend_from_slice(&encode_message(&big, Coding::Gzip));
        stream.extend_from_slice(&encode_message(&big, Coding::Identity));
        stream.extend_from_slice(&encode_terminal(412, r#"{"seq_num_mismatch":3}"#));
        let expected = vec![
            message(b""),
            message(b"small"),
            message(&big),
            message(&big),
            message(&big),
            Frame::Terminal {
                status: 412,
                body: r#"{"seq_num_mismatch":3}"#.to_owned(),
            },
        ];
        assert_eq!(
            decode_chunked(&stream, &[stream.len()]),
            Ok(expected.clone())
        );
        assert_eq!(decode_chunked(&stream, &[1]), Ok(expected.clone()));
        assert_eq!(decode_chunked(&stream, &[2, 5, 1, 3]), Ok(expected));
    }

    #[test]
    fn proto_frames_decode_to_the_message() {
        use crate::wire::proto::{Header, ReadBatch, SequencedRecord};
        use prost::Message;
        let record = |seq_num: u64, body: Vec<u8>| SequencedRecord {
            seq_num,
            timestamp: seq_num * 10,
            headers: vec![Header {
                name: Bytes::from_static(b"k"),
                value: Bytes::from_static(b"v"),
            }],
            body: Bytes::from(body),
        };
        for batch in [
            ReadBatch::default(),
            ReadBatch {
                records: vec![record(1, b"x".to_vec()), record(2, vec![3; 5000])],
                tail: None,
            },
        ] {
            for compression in ALL {
                let frame = encode_proto(&batch, compression);
                let Ok(Some(Frame::Message(payload))) = decode_one(&frame) else {
                    panic!("not one message frame: {frame:?}");
                };
                assert_eq!(ReadBatch::decode(payload).unwrap(), batch);
            }
        }
    }

    #[test]
    fn compresses_only_when_negotiated_and_large() {
        let big = vec![7u8; 2000];
        assert_eq!(encode_message(&big, Coding::Identity)[3], 0x00);
        assert_eq!(encode_message(&big, Coding::Zstd)[3], 0x20);
        assert_eq!(encode_message(&big, Coding::Gzip)[3], 0x40);
        assert_eq!(encode_message(&big[..1023], Coding::Zstd)[3], 0x00);
        assert_eq!(encode_message(&big[..1024], Coding::Gzip)[3], 0x40);
        assert!(encode_message(&big, Coding::Zstd).len() < big.len());
    }

    #[test]
    fn accepts_compressed_input_frames() {
        let payload = b"hello hello hello".repeat(10);
        let zstd_frame = raw_frame(0x20, &zstd_compress(&payload[..]));
        assert_eq!(decode_one(&zstd_frame), Ok(Some(message(&payload))));
        let gzip_frame = raw_frame(0x40, &gzip_compress(&payload[..]));
        assert_eq!(decode_one(&gzip_frame), Ok(Some(message(&payload))));
        // Small payloads may be compressed by a peer too.
        let tiny = raw_frame(0x20, &zstd_compress(&b"x"[..]));
        assert_eq!(decode_one(&tiny), Ok(Some(message(b"x"))));
    }

    #[test]
    fn ignores_reconnect_and_reserved_bits() {
        assert_eq!(
            decode_one(&raw_frame(0x1f, b"ab")),
            Ok(Some(message(b"ab")))
        );
        let zstd_frame = raw_frame(0x20 | 0x10 | 0x05, &zstd_compress(&b"ab"[..]));
        assert_eq!(decode_one(&zstd_frame), Ok(Some(message(b"ab"))));
        let terminal = raw_frame(0x80 | 0x60 | 0x1f, &[0x01, 0xf4, b'{', b'}']);
        assert_eq!(
            decode_one(&terminal),
            Ok(Some(Frame::Terminal {
                status: 500,
                body: "{}".to_owned()
            }))
        );
    }

    #[test]
    fn rejects_malformed_frames() {
        assert_eq!(
            decode_one(&raw_frame(0x60, b"ab")),
            Err(FrameError::UnknownCompression)
        );
        assert_eq!(decode_one(&[0, 0, 0]), Err(FrameError::Empty));
        assert_eq!(
            decode_one(&raw_frame(0x80, &[0x01])),
            Err(FrameError::TerminalMissingStatus)
        );
        assert_eq!(
            decode_one(&raw_frame(0x80, &[0x01, 0x94, 0xff])),
            Err(FrameError::TerminalNotUtf8)
        );
        assert!(matches!(
            decode_one(&raw_frame(0x20, b"definitely not zstd")),
            Err(FrameError::Decompress(_))
        ));
        assert!(matches!(
            decode_one(&raw_frame(0x40, b"definitely not gzip")),
            Err(FrameError::Decompress(_))
        ));
        let truncated = zstd_compress(&[9u8; 5000][..]);
        assert!(matches!(
            decode_one(&raw_frame(0x20, &truncated[..truncated.len() - 4])),
            Err(FrameError::Decompress(_))
        ));
    }

    #[test]
    fn length_limit() {
        // 2 MiB + 1 is refused from the 3 length bytes alone.
        assert_eq!(decode_one(&[0x20, 0x00, 0x01]), Err(FrameError::TooLong));
        assert_eq!(decode_one(&[0xff, 0xff, 0xff]), Err(FrameError::TooLong));
        // Exactly 2 MiB (flags + 2 MiB − 1 payload) is accepted.
        let payload = vec![3u8; PAYLOAD_MAX];
        let bytes = raw_frame(0x00, &payload);
        assert_eq!(&bytes[..3], &[0x20, 0x00, 0x00]);
        assert_eq!(
            decode_one(&bytes),
            Ok(Some(Frame::Message(Bytes::from(payload))))
        );
    }

    #[test]
    fn decompressed_limit() {
        let at_limit = zstd_compress(io::repeat(0).take(DECOMPRESSED_PAYLOAD_MAX as u64));
        match decode_one(&raw_frame(0x20, &at_limit)) {
            Ok(Some(Frame::Message(p))) => assert_eq!(p.len(), DECOMPRESSED_PAYLOAD_MAX),
            other => panic!("unexpected {other:?}"),
        }
        let over = zstd_compress(io::repeat(0).take(DECOMPRESSED_PAYLOAD_MAX as u64 + 1));
        assert_eq!(
            decode_one(&raw_frame(0x20, &over)),
            Err(FrameError::DecompressedTooLong)
        );
        let gzip_over = gzip_compress(io::repeat(0).take(3 << 20));
        assert_eq!(
            decode_one(&raw_frame(0x40, &gzip_over)),
            Err(FrameError::DecompressedTooLong)
        );
    }

    /// A zstd payload that does not state its content size, with the given window.
    fn zstd_with_window(window_log: u32, data: &[u8]) -> Vec<u8> {
        let mut encoder = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        encoder.window_log(window_log).unwrap();
        encoder.include_contentsize(false).unwrap();
        encoder.write_all(data).unwrap();
        let out = encoder.finish().unwrap();
        // Magic, then a header without the single-segment flag: the window descriptor
        // follows, exponent in its top five bits.
        assert_eq!(out[4] & 0x20, 0, "the frame states no content size");
        assert_eq!(u32::from(out[5] >> 3) + 10, window_log, "declared window");
        out
    }

    #[test]
    fn zstd_windows_are_bounded() {
        let data = b"a payload that fits any window".repeat(64);
        match decode_one(&raw_frame(
            0x20,
            &zstd_with_window(ZSTD_WINDOW_LOG_MAX, &data),
        )) {
            Ok(Some(Frame::Message(p))) => assert_eq!(p, data),
            other => panic!("a window at the bound: {other:?}"),
        }
        let over = zstd_with_window(ZSTD_WINDOW_LOG_MAX + 1, &data);
        match decode_one(&raw_frame(0x20, &over)) {
            Err(FrameError::Decompress(text)) => assert!(text.contains("memory"), "{text}"),
            other => panic!("a window over the bound: {other:?}"),
        }
    }

    #[test]
    fn zstd_bomb_stops_early() {
        // Concatenated zstd frames form one valid stream; 1024 copies of a 1 MiB frame of
        // zeros claim 1 GiB from a few tens of KiB, which must be refused after ~2 MiB.
        let one = zstd_compress(io::repeat(0).take(1 << 20));
        let bomb = one.repeat(1024);
        assert!(bomb.len() <= PAYLOAD_MAX);
        assert_eq!(
            decode_one(&raw_frame(0x20, &bomb)),
            Err(FrameError::DecompressedTooLong)
        );
    }

    #[test]
    fn partial_frame_at_end_is_an_error() {
        let mut decoder = FrameDecoder::new();
        assert_eq!(decoder.finish(), Ok(()));
        decoder.push(&[0, 0]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.finish(), Err(FrameError::Truncated));
        decoder.push(&[6, 0, 1, 2]);
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.finish(), Err(FrameError::Truncated));
        decoder.push(&[3, 4, 5]);
        assert_eq!(decoder.next_frame(), Ok(Some(message(&[1, 2, 3, 4, 5]))));
        assert_eq!(decoder.next_frame(), Ok(None));
        assert_eq!(decoder.finish(), Ok(()));
    }

    fn payload() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            prop::collection::vec(any::<u8>(), 0..5000),
            // Low-entropy data so compression actually shrinks some payloads.
            prop::collection::vec(0u8..4, 0..5000),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn encode_decode_round_trip(
            payloads in prop::collection::vec(payload(), 1..4),
            cuts in prop::collection::vec(1usize..3000, 1..16),
        ) {
            for compression in ALL {
                let mut stream = Vec::new();
                for p in &payloads {
                    stream.extend_from_slice(&encode_message(p, compression));
                }
                let expected: Vec<Frame> = payloads.iter().map(|p| message(p.as_slice())).collect();
                prop_assert_eq!(decode_chunked(&stream, &cuts), Ok(expected));
            }
        }
    }
}
