//! The encrypted-payload opener: sealed bytes from the store open only with their key and
//! associated data, anything else is refused without a panic, and sealing then opening
//! gives the plaintext back.

use arbitrary::{Arbitrary, Unstructured};
use sluice_shards::crypto::{open, seal};

use crate::alloc_meter::bounded;
use crate::stored_record::{cipher, key};

fn run_inner(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let Some(cipher) = cipher(u)? else {
        return Ok(());
    };
    let key = key(u, cipher)?;
    let aad = <[u8; 24]>::arbitrary(u)?;
    let flip = usize::arbitrary(u)?;
    let roundtrip = bool::arbitrary(u)?;
    let bytes = u.bytes(u.len())?;
    if roundtrip {
        let sealed = seal(cipher, &key, &aad, bytes);
        assert_eq!(open(cipher, &key, &aad, &sealed).as_deref(), Some(bytes));
        let mut tampered = sealed.clone();
        let bit = flip % (tampered.len() * 8);
        tampered[bit / 8] ^= 1 << (bit % 8);
        assert_eq!(
            open(cipher, &key, &aad, &tampered),
            None,
            "tampering is caught"
        );
        let mut other = aad;
        other[flip % 24] ^= 1;
        assert_eq!(
            open(cipher, &key, &other, &sealed),
            None,
            "the position is bound"
        );
    } else {
        let bound = 2 * bytes.len() + (4 << 10);
        let _ = bounded("opening a sealed payload", bound, || {
            open(cipher, &key, &aad, bytes)
        });
    }
    Ok(())
}

pub fn run(data: &[u8]) {
    let _ = run_inner(&mut Unstructured::new(data));
}
