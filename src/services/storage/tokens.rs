//! Signed file URLs: a token that lets whoever holds it read one file (download,
//! view, preview) until it expires, so an `<img src>` works without cookies or
//! headers. It is stateless: `v2.<base64url payload>.<base64url HMAC-SHA256>` under a
//! key derived from the server secret; the payload names the project, bucket, file,
//! the file's creation time and the expiry. Ids are chosen by clients and free again
//! once a file is deleted, so the creation time binds a token to one incarnation of
//! the id: a file uploaded later under the same id does not open with it. A token
//! also names who minted it ([`Minter`]), and holds only as long as they could read
//! the file themselves: at each use a user's session must still hold and its roles
//! still read the file (signing out, a block, a lost membership or a changed
//! permission end it), a key must still exist. Tokens are short-lived (at most a
//! week); those of the format before minters were named (`v2`) no longer open.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;

const VERSION: &str = "v3";
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
    pub minted_by: Minter,
}

/// Who minted a token: what must still hold, each time it is used, for it to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Minter {
    /// A console administrator, or a key handing on nothing revocable: the file's
    /// bucket and incarnation alone decide.
    Operator,
    /// An API key (or the key that gave a function its scopes): it must still exist
    /// and not have expired.
    Key(String),
    /// A signed-in user, through one of their sessions (or a JWT of it): the
    /// session must still hold and the user's roles still read the file.
    User { user_id: String, session_id: String },
    /// A caller with no credential: a guest must still be able to read the file.
    Guest,
}

impl Minter {
    /// The payload's last three fields.
    fn fields(&self) -> [&str; 3] {
        match self {
            Minter::Operator => ["o", "", ""],
            Minter::Key(id) => ["k", id, ""],
            Minter::User {
                user_id,
                session_id,
            } => ["u", user_id, session_id],
            Minter::Guest => ["g", "", ""],
        }
    }

    fn from_fields(kind: &str, first: &str, second: &str) -> Option<Minter> {
        let id = |text: &str| (!text.is_empty()).then(|| text.to_string());
        Some(match (kind, first, second) {
            ("o", "", "") => Minter::Operator,
            ("k", key, "") => Minter::Key(id(key)?),
            ("u", user, session) => Minter::User {
                user_id: id(user)?,
                session_id: id(session)?,
            },
            ("g", "", "") => Minter::Guest,
            _ => return None,
        })
    }
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
    let [kind, first, second] = grant.minted_by.fields();
    let payload = format!(
        "{}/{}/{}/{}/{}/{kind}/{first}/{second}",
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
    let fields: Vec<&str> = payload.split('/').collect();
    let [project, bucket, file, created, expires, kind, first, second] = fields[..] else {
        return Err(TokenError::Invalid);
    };
    let minted_by = Minter::from_fields(kind, first, second).ok_or(TokenError::Invalid)?;
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
        minted_by,
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
            minted_by: Minter::User {
                user_id: "ann".into(),
                session_id: "s1".into(),
            },
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
            "v3.{}.{tag}",
            URL_SAFE_NO_PAD.encode("default/photos/dog/1000/2000/u/ann/s1")
        );
        assert_eq!(verify(&secret, &forged, 0), Err(TokenError::Invalid));
        assert_ne!(mint(&secret, &other), token);
        // Another minter is another token: who minted it cannot be swapped.
        let by_guest = Grant {
            minted_by: Minter::Guest,
            ..grant()
        };
        assert_ne!(mint(&secret, &by_guest), token);
        assert_eq!(verify(&secret, &mint(&secret, &by_guest), 0), Ok(by_guest));
        // The format before minters were named no longer opens.
        let (_, rest) = token.split_once('.').unwrap();
        assert_eq!(
            verify(&secret, &format!("v2.{rest}"), 0),
            Err(TokenError::Invalid)
        );
        for junk in ["", "v2", "v3..", "v1.a.b", "v3.!!.??", "v3.a.b.c"] {
            assert_eq!(verify(&secret, junk, 0), Err(TokenError::Invalid), "{junk}");
        }
    }
}
