//! S2S session framing: any bytes, split anywhere, decode to the same frames or the same
//! error as when they arrive whole; a terminal frame round-trips; memory stays within one
//! frame and one decompressed payload, however large a LENGTH or a compressed payload
//! claims to be.

use sluice::wire::s2s::{
    encode_terminal, Frame, FrameDecoder, FrameError, DECOMPRESSED_PAYLOAD_MAX, FRAME_LENGTH_MAX,
};

use crate::alloc_meter::bounded;

/// What decoding a whole body gives: its frames, then how it ended.
type Outcome = (Vec<Frame>, Result<(), FrameError>);

fn decode(chunks: impl Iterator<Item = impl AsRef<[u8]>>) -> Outcome {
    let mut decoder = FrameDecoder::new();
    let mut frames = Vec::new();
    for chunk in chunks {
        decoder.push(chunk.as_ref());
        loop {
            match decoder.next_frame() {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Err(e)),
            }
        }
    }
    let end = decoder.finish();
    (frames, end)
}

pub fn run(data: &[u8]) {
    let Some((&stride, body)) = data.split_first() else {
        return;
    };
    // One frame buffered plus the chunk, one decompressed payload and its decompressor.
    let bound = 2 * body.len() + FRAME_LENGTH_MAX + 2 * DECOMPRESSED_PAYLOAD_MAX + (4 << 20);
    let whole = bounded("decoding S2S frames", bound, || {
        decode(std::iter::once(body))
    });
    let split = decode(body.chunks(usize::from(stride) + 1));
    assert_eq!(
        whole, split,
        "frames do not depend on how the body is split"
    );
    for frame in &whole.0 {
        if let Frame::Terminal { status, body } = frame {
            let encoded = encode_terminal(*status, body);
            let (again, end) = decode(std::iter::once(&encoded));
            assert_eq!(end, Ok(()));
            assert_eq!(again, vec![frame.clone()], "a terminal frame round-trips");
        }
    }
}
