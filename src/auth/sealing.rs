//! Encryption at rest for small secrets the server must read back (OAuth2 client
//! secrets, later TOTP seeds): AES-256-GCM under a key derived from the server secret
//! and a purpose, so a value sealed for one purpose never opens as another. A sealed
//! value reads `v1.<base64url nonce‖ciphertext‖tag>`; the version leaves room to
//! rotate the scheme.

use aes_gcm::aead::{Aead as _, KeyInit as _, OsRng, Payload, rand_core::RngCore as _};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

const VERSION: &str = "v1.";
const NONCE_LEN: usize = 12;

/// A cipher for one purpose.
#[derive(Clone)]
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer")
    }
}

/// A sealed value that does not open: corrupted, or sealed under another server
/// secret or purpose.
#[derive(Debug, thiserror::Error)]
#[error("the sealed value cannot be opened with this server secret")]
pub struct Unsealable;

impl Sealer {
    /// The sealer for `purpose`, keyed by HMAC-SHA256(server secret, purpose).
    pub fn new(server_secret: &str, purpose: &str) -> Self {
        let mut mac = <Hmac<Sha256> as hmac::Mac>::new_from_slice(server_secret.as_bytes())
            .expect("HMAC takes keys of any length");
        mac.update(b"nimbus sealing key\0");
        mac.update(purpose.as_bytes());
        let key = mac.finalize().into_bytes();
        Sealer {
            cipher: Aes256Gcm::new(&key),
        }
    }

    pub fn seal(&self, plaintext: &str) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), plaintext.as_bytes())
            .expect("AES-GCM encrypts any message under 64 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        format!("{VERSION}{}", URL_SAFE_NO_PAD.encode(out))
    }

    /// Seals bytes bound to `context` (which must be given again to open them):
    /// `nonce‖ciphertext‖tag`, for values kept in files rather than columns.
    pub fn seal_bytes(&self, plaintext: &[u8], context: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: context,
                },
            )
            .expect("AES-GCM encrypts any message under 64 GiB");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&ciphertext);
        out
    }

    /// Opens what [`Self::seal_bytes`] sealed with the same `context`.
    pub fn open_bytes(&self, sealed: &[u8], context: &[u8]) -> Result<Vec<u8>, Unsealable> {
        if sealed.len() < NONCE_LEN {
            return Err(Unsealable);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context,
                },
            )
            .map_err(|_| Unsealable)
    }

    pub fn open(&self, sealed: &str) -> Result<String, Unsealable> {
        let bytes = sealed
            .strip_prefix(VERSION)
            .and_then(|body| URL_SAFE_NO_PAD.decode(body).ok())
            .ok_or(Unsealable)?;
        if bytes.len() < NONCE_LEN {
            return Err(Unsealable);
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let plaintext = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| Unsealable)?;
        String::from_utf8(plaintext).map_err(|_| Unsealable)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_bytes_open_only_with_their_context_and_secret() {
        let sealer = Sealer::new(SECRET, "preview-cache");
        let sealed = sealer.seal_bytes(b"\x89PNG pixels", b"file-a");
        assert!(!sealed.windows(3).any(|w| w == b"PNG"));
        assert_ne!(sealed, sealer.seal_bytes(b"\x89PNG pixels", b"file-a"));
        assert_eq!(
            sealer.open_bytes(&sealed, b"file-a").unwrap(),
            b"\x89PNG pixels"
        );
        assert!(sealer.open_bytes(&sealed, b"file-b").is_err());
        assert!(
            Sealer::new(SECRET, "other")
                .open_bytes(&sealed, b"file-a")
                .is_err()
        );
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(sealer.open_bytes(&flipped, b"file-a").is_err());
        assert!(sealer.open_bytes(&sealed[..5], b"file-a").is_err());
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn a_sealed_value_opens_only_with_its_secret_and_purpose() {
        let sealer = Sealer::new(SECRET, "oauth2-client-secret");
        let sealed = sealer.seal("hunter2");
        assert!(sealed.starts_with("v1."));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(sealer.open(&sealed).unwrap(), "hunter2");
        assert_ne!(sealer.seal("hunter2"), sealed, "a fresh nonce each time");

        let other_purpose = Sealer::new(SECRET, "totp");
        assert!(other_purpose.open(&sealed).is_err());
        let other_secret = Sealer::new("fedcba9876543210fedcba9876543210", "oauth2-client-secret");
        assert!(other_secret.open(&sealed).is_err());
    }

    #[test]
    fn tampered_or_malformed_values_do_not_open() {
        let sealer = Sealer::new(SECRET, "p");
        let sealed = sealer.seal("value");
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 1;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(
            sealer
                .open(std::str::from_utf8(&tampered).unwrap())
                .is_err()
        );
        for bad in ["", "v1.", "v1.!!", "v2.AAAA", "v1.AAAA"] {
            assert!(sealer.open(bad).is_err(), "{bad}");
        }
    }
}
