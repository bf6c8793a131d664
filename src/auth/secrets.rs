//! API key secrets: generated with the OS random source, stored only as SHA-256
//! digests, compared in constant time. A secret reads `nk_<key id>_<random>`, so the
//! key can be found by id without scanning digests.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

const PREFIX: &str = "nk_";

/// A new secret for key `key_id`, and the digest to store.
pub fn new_key_secret(key_id: &str) -> (String, String) {
    let mut random = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from, and periodically reseeded by, the OS.
    rand::rng().fill_bytes(&mut random);
    let secret = format!("{PREFIX}{key_id}_{}", URL_SAFE_NO_PAD.encode(random));
    let digest = digest(&secret);
    (secret, digest)
}

/// The key id a presented secret claims, when it has the right shape.
pub fn key_id_of(secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(PREFIX)?;
    let (id, random) = rest.split_once('_')?;
    (!id.is_empty() && !random.is_empty()).then_some(id)
}

/// Hex SHA-256 of a secret.
pub fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Whether `secret` hashes to `stored_digest`, in constant time.
pub fn matches(secret: &str, stored_digest: &str) -> bool {
    digest(secret)
        .as_bytes()
        .ct_eq(stored_digest.as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_secret_names_its_key_and_matches_its_digest() {
        let (secret, stored) = new_key_secret("0123456789abcdef0123");
        assert_eq!(key_id_of(&secret), Some("0123456789abcdef0123"));
        assert!(matches(&secret, &stored));
        assert!(!matches(&format!("{secret}x"), &stored));
    }

    #[test]
    fn malformed_secrets_name_no_key() {
        for bad in ["", "nk_", "nk_abc", "xx_abc_def", "nk__def"] {
            assert_eq!(key_id_of(bad), None, "{bad:?}");
        }
    }
}
