//! Bearer secrets (API keys, sessions): generated from a CSPRNG, stored only as
//! SHA-256 digests, compared in constant time. A secret reads `<prefix><id>_<random>`
//! (`nk_` for keys, `ns_` for sessions, `nc_` for console sessions), so its row is
//! found by id without scanning digests.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

/// What a secret opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    ApiKey,
    Session,
    /// A console administrator's session (the `nimbus_console` cookie).
    Console,
}

impl SecretKind {
    fn prefix(self) -> &'static str {
        match self {
            SecretKind::ApiKey => "nk_",
            SecretKind::Session => "ns_",
            SecretKind::Console => "nc_",
        }
    }
}

/// 32 random bytes as 43 characters of base64url.
pub fn random_token() -> String {
    let mut random = [0u8; 32];
    // ThreadRng is a CSPRNG seeded from, and periodically reseeded by, the OS.
    rand::rng().fill_bytes(&mut random);
    URL_SAFE_NO_PAD.encode(random)
}

/// A new secret for the row `id`, and the digest to store.
pub fn new_secret(kind: SecretKind, id: &str) -> (String, String) {
    let secret = format!("{}{id}_{}", kind.prefix(), random_token());
    let digest = digest(&secret);
    (secret, digest)
}

/// The row id a presented secret of this kind claims, when it has the right shape.
pub fn id_of(kind: SecretKind, secret: &str) -> Option<&str> {
    let rest = secret.strip_prefix(kind.prefix())?;
    let (id, random) = rest.split_once('_')?;
    (!id.is_empty() && !random.is_empty()).then_some(id)
}

/// Hex SHA-256 of a secret.
pub fn digest(secret: &str) -> String {
    hex::encode(digest_bytes(secret))
}

/// SHA-256 of a secret, as bytes.
pub fn digest_bytes(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
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
        let (secret, stored) = new_secret(SecretKind::Session, "0123456789abcdef0123");
        assert_eq!(
            id_of(SecretKind::Session, &secret),
            Some("0123456789abcdef0123")
        );
        assert_eq!(id_of(SecretKind::ApiKey, &secret), None);
        assert!(matches(&secret, &stored));
        assert!(!matches(&format!("{secret}x"), &stored));
    }

    #[test]
    fn malformed_secrets_name_no_key() {
        for bad in ["", "nk_", "nk_abc", "xx_abc_def", "nk__def"] {
            assert_eq!(id_of(SecretKind::ApiKey, bad), None, "{bad:?}");
        }
    }
}
