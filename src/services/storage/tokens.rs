//! Signed file URLs: a token that lets whoever holds it read one file (download,
//! view, preview) until it expires, so an `<img src>` works without cookies or
//! headers. It is stateless: `v2.<base64url payload>.<base64url HMAC-SHA256>` under a
//! key derived from the server secret; the payload names the project, bucket, file,
//! the file's creation time and the expiry. Ids are chosen by clients and free again
//! once a file is deleted, so the creation time binds a token to one incarnation of
//! the id: a file uploaded later under the same id does not open with it. A token is
//! checked against the file's current permissions only when minted, so tokens are
//! short-lived (at most a week).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

const VERSION: &str = "v2";
/// Longest lifetime a token may be minted with, in seconds.
pub const MAX_LIFETIME_SECS: i64 = 7 * 24 * 3600;
/// Lifetime when none is asked for.
pub const DEFAULT_LIFETIME_SECS: i64 = 3600;

/// The file a valid token grants reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub project_id: String,
    pub bucket_id: String,
    pub file_id: String,
    /// When the file was created (milliseconds since the Unix epoch): the file the
    /// token was minted for, not another one given the same id since.
    pub file_created_at: i64,
    /// Milliseconds since the Unix epoch.
    pub expires_at: i64,
}

fn mac(secret: &str) -> Hmac<Sha256> {
    let mut key = <Hmac<Sha256> as hmac::Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    key.update(b"nimbus file token key\0");
    let derived = key.finalize().into_bytes();
    <Hmac<Sha256> as hmac::Mac>::new_from_slice(&derived).expect("HMAC takes keys of any length")
}

/// Mints a token for `grant`.
pub fn mint(secret: &str, grant: &Grant) -> String {
    let payload = format!(
        "{}/{}/{}/{}/{}",
        grant.project_id, grant.bucket_id, grant.file_id, grant.file_created_at, grant.expires_at
    );
    let mut mac = mac(secret);
    mac.update(VERSION.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    let tag = mac.finalize().into_bytes();
    format!(
        "{VERSION}.{}.{}",
        URL_SAFE_NO_PAD.encode(payload),
        URL_SAFE_NO_PAD.encode(tag)
    )
}

/// Why a token does not open.
#[derive(Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Malformed, forged, or minted under another server secret.
    Invalid,
    Expired,
}

/// The grant of a genuine, unexpired token.
pub fn verify(secret: &str, token: &str, now_millis: i64) -> Result<Grant, TokenError> {
    let mut parts = token.split('.');
    let (Some(VERSION), Some(payload), Some(tag), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Invalid);
    };
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| TokenError::Invalid)?;
    let tag = URL_SAFE_NO_PAD
        .decode(tag)
        .map_err(|_| TokenError::Invalid)?;
    let mut mac = mac(secret);
    mac.update(VERSION.as_bytes());
    mac.update(b".");
    mac.update(&payload);
    mac.verify_slice(&tag).map_err(|_| TokenError::Invalid)?;
    let payload = String::from_utf8(payload).map_err(|_| TokenError::Invalid)?;
    let mut fields = payload.split('/');
    let (Some(project), Some(bucket), Some(file), Some(created), Some(expires), None) = (
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
        fields.next(),
    ) else {
        return Err(TokenError::Invalid);
    };
    let file_created_at: i64 = created.parse().map_err(|_| TokenError::Invalid)?;
    let expires_at: i64 = expires.parse().map_err(|_| TokenError::Invalid)?;
    if expires_at <= now_millis {
        return Err(TokenError::Expired);
    }
    Ok(Grant {
        project_id: project.to_string(),
        bucket_id: bucket.to_string(),
        file_id: file.to_string(),
        file_created_at,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> Grant {
        Grant {
            project_id: "default".into(),
            bucket_id: "photos".into(),
            file_id: "cat".into(),
            file_created_at: 1_000,
            expires_at: 2_000,
        }
    }

    #[test]
    fn a_token_opens_until_it_expires() {
        let token = mint("s".repeat(32).as_str(), &grant());
        assert_eq!(verify(&"s".repeat(32), &token, 1_999), Ok(grant()));
        assert_eq!(
            verify(&"s".repeat(32), &token, 2_000),
            Err(TokenError::Expired)
        );
    }

    #[test]
    fn forged_or_foreign_tokens_do_not_open() {
        let secret = "s".repeat(32);
        let token = mint(&secret, &grant());
        assert_eq!(verify(&"t".repeat(32), &token, 0), Err(TokenError::Invalid));
        let other = Grant {
            file_id: "dog".into(),
            ..grant()
        };
        let (_, tag) = token.rsplit_once('.').unwrap();
        let forged = format!(
            "v2.{}.{tag}",
            URL_SAFE_NO_PAD.encode("default/photos/dog/1000/2000")
        );
        assert_eq!(verify(&secret, &forged, 0), Err(TokenError::Invalid));
        assert_ne!(mint(&secret, &other), token);
        for junk in ["", "v2", "v2..", "v1.a.b", "v2.!!.??", "v2.a.b.c"] {
            assert_eq!(verify(&secret, junk, 0), Err(TokenError::Invalid), "{junk}");
        }
    }
}
