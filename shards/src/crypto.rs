//! Encryption at rest with client-supplied keys (SEMANTICS §9). A stream's cipher is fixed
//! at creation; every append and read brings the key, which is never stored. Each record's
//! headers and body are sealed with a fresh random nonce and bound to the stream and
//! position by the associated data, so a sealed record cannot be moved or replayed
//! elsewhere. Command records stay plaintext.

use aes_gcm::aead::{Aead, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::Engine as _;

use crate::config::Cipher;

/// Longest key material accepted in the header, in characters (base64 of 32 bytes is 44).
pub const KEY_MATERIAL_MAX_CHARS: usize = 44;
const KEY_BYTES: usize = 32;
const AEGIS_NONCE_BYTES: usize = 32;
const AEGIS_TAG_BYTES: usize = 16;
const GCM_NONCE_BYTES: usize = 12;

/// The highest seq_num an AES-256-GCM stream may assign to a sealed record.
pub const AES_GCM_SEQ_NUM_MAX: u64 = u32::MAX as u64;

/// A 32-byte key, checked against the stream's cipher.
#[derive(Clone)]
pub struct EncryptionKey([u8; KEY_BYTES]);

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey(..)")
    }
}

/// Key material as it came in the `S2-Encryption-Key` header (already trimmed and at most
/// [`KEY_MATERIAL_MAX_CHARS`] long).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyMaterial(String);

impl KeyMaterial {
    pub fn new(text: &str) -> Result<KeyMaterial, String> {
        let text = text.trim();
        if text.is_empty() || text.len() > KEY_MATERIAL_MAX_CHARS {
            return Err(format!(
                "invalid encryption key: key material length {} is out of range",
                text.len()
            ));
        }
        Ok(KeyMaterial(text.to_owned()))
    }

    /// The key for a stream with `cipher`; the error text is what the client sees.
    pub fn key_for(&self, cipher: Cipher) -> Result<EncryptionKey, String> {
        let name = cipher.name();
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&self.0)
            .map_err(|_| {
                format!("invalid encryption key for stream cipher '{name}': invalid base64")
            })?;
        let key: [u8; KEY_BYTES] = bytes.as_slice().try_into().map_err(|_| {
            format!(
                "invalid encryption key length for stream cipher '{name}': {}",
                bytes.len()
            )
        })?;
        Ok(EncryptionKey(key))
    }
}

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random source failed");
    b
}

/// `nonce || ciphertext || tag`.
pub fn seal(cipher: Cipher, key: &EncryptionKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    match cipher {
        Cipher::Aegis256 => {
            let nonce: [u8; AEGIS_NONCE_BYTES] = random();
            let (ct, tag) = aegis::aegis256::Aegis256::<AEGIS_TAG_BYTES>::new(&key.0, &nonce)
                .encrypt(plaintext, aad);
            [&nonce[..], &ct, &tag].concat()
        }
        Cipher::Aes256Gcm => {
            let nonce: [u8; GCM_NONCE_BYTES] = random();
            let gcm = Aes256Gcm::new(&key.0.into());
            let ct = gcm
                .encrypt(
                    &nonce.into(),
                    Payload {
                        msg: plaintext,
                        aad,
                    },
                )
                .expect("AES-GCM encryption of an in-memory buffer");
            [&nonce[..], &ct].concat()
        }
    }
}

/// Undo [`seal`]; `None` if the key is wrong or the data was altered.
pub fn open(cipher: Cipher, key: &EncryptionKey, aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    match cipher {
        Cipher::Aegis256 => {
            if sealed.len() < AEGIS_NONCE_BYTES + AEGIS_TAG_BYTES {
                return None;
            }
            let (nonce, rest) = sealed.split_at(AEGIS_NONCE_BYTES);
            let (ct, tag) = rest.split_at(rest.len() - AEGIS_TAG_BYTES);
            let nonce: [u8; AEGIS_NONCE_BYTES] = nonce.try_into().ok()?;
            let tag: [u8; AEGIS_TAG_BYTES] = tag.try_into().ok()?;
            aegis::aegis256::Aegis256::<AEGIS_TAG_BYTES>::new(&key.0, &nonce)
                .decrypt(ct, &tag, aad)
                .ok()
        }
        Cipher::Aes256Gcm => {
            if sealed.len() < GCM_NONCE_BYTES {
                return None;
            }
            let (nonce, ct) = sealed.split_at(GCM_NONCE_BYTES);
            let nonce: [u8; GCM_NONCE_BYTES] = nonce.try_into().ok()?;
            Aes256Gcm::new(&key.0.into())
                .decrypt(&nonce.into(), Payload { msg: ct, aad })
                .ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(bytes: &[u8]) -> KeyMaterial {
        KeyMaterial::new(&base64::engine::general_purpose::STANDARD.encode(bytes)).unwrap()
    }

    #[test]
    fn key_material_errors() {
        assert!(KeyMaterial::new(&"A".repeat(45))
            .unwrap_err()
            .contains("out of range"));
        assert!(KeyMaterial::new("  ").is_err());
        let e = KeyMaterial::new("not base64!")
            .unwrap()
            .key_for(Cipher::Aegis256)
            .unwrap_err();
        assert_eq!(
            e,
            "invalid encryption key for stream cipher 'aegis-256': invalid base64"
        );
        let e = material(&[1; 16]).key_for(Cipher::Aes256Gcm).unwrap_err();
        assert_eq!(
            e,
            "invalid encryption key length for stream cipher 'aes-256-gcm': 16"
        );
    }

    #[test]
    fn seal_open_round_trip_and_wrong_key() {
        for cipher in [Cipher::Aegis256, Cipher::Aes256Gcm] {
            let key = material(&[7; 32]).key_for(cipher).unwrap();
            let other = material(&[8; 32]).key_for(cipher).unwrap();
            let sealed = seal(cipher, &key, b"aad", b"secret");
            assert_eq!(
                open(cipher, &key, b"aad", &sealed).as_deref(),
                Some(&b"secret"[..])
            );
            assert_eq!(open(cipher, &other, b"aad", &sealed), None);
            assert_eq!(open(cipher, &key, b"other aad", &sealed), None);
            assert_ne!(
                seal(cipher, &key, b"aad", b"secret"),
                sealed,
                "fresh nonce each time"
            );
        }
    }
}
