//! Short-lived JWTs a backend can use on a user's behalf, signed HS256 with a key
//! derived from the server secret and the project id.
//!
//! It owns issuing and checking the token only: whether the user and session still
//! exist, and whether JWT sign-in is enabled for the project, are the caller's checks.
//! The algorithm is pinned to HS256 (a token naming `none`, another HMAC or any
//! public-key algorithm is refused before its signature is looked at), and each
//! project signs with its own key and is named in `aud`, so a token minted for one
//! project opens nothing in another. Errors never echo the token.

use std::fmt;

use hmac::{Hmac, Mac as _};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::codes;

/// Lifetime of a JWT when the caller has no reason to choose another: 15 minutes.
pub const DEFAULT_TTL_SECS: u64 = 900;
/// Longest token looked at; ours are a few hundred bytes, so anything much larger is
/// refused before any base64 or JSON work is spent on it.
const MAX_TOKEN_LEN: usize = 4096;
const ISSUER: &str = "nimbus";

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// `INVALID_JWT`: malformed, badly signed, not HS256, or for another project.
    #[error("the JWT is invalid or not valid for this project")]
    Invalid,
    /// `JWT_EXPIRED`: correctly signed for this project, but past its `exp`.
    #[error("the JWT has expired")]
    Expired,
}

impl JwtError {
    /// The `extensions.code` a client receives.
    pub fn code(self) -> &'static str {
        match self {
            JwtError::Invalid => codes::INVALID_JWT,
            JwtError::Expired => codes::JWT_EXPIRED,
        }
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtClaims {
    pub user_id: String,
    pub session_id: String,
    /// Unix seconds after which the token is refused.
    pub expires_at: u64,
}

/// The payload on the wire: registered claim names where one fits, `sid` for the
/// session as in OpenID Connect.
#[derive(Serialize, Deserialize)]
struct WireClaims {
    iss: String,
    aud: String,
    sub: String,
    sid: String,
    iat: u64,
    exp: u64,
}

/// Signs and checks JWTs for every project, from the one server secret.
///
/// `Debug` prints no key material.
#[derive(Clone)]
pub struct JwtKeys {
    server_secret: Vec<u8>,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtKeys(..)")
    }
}

impl JwtKeys {
    /// Keys derived from the server secret; rotating that secret voids every JWT.
    pub fn new(server_secret: &str) -> Self {
        JwtKeys {
            server_secret: server_secret.as_bytes().to_vec(),
        }
    }

    /// HMAC-SHA256(server secret, "jwt:" + project id): a key per project, so neither
    /// a leaked token nor a bug in the `aud` check lets one project's token pass in
    /// another, and the server secret itself never signs anything a client sees.
    fn project_key(&self, project_id: &str) -> [u8; 32] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.server_secret)
            .expect("HMAC accepts keys of any length");
        mac.update(b"jwt:");
        mac.update(project_id.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// A token for `user_id`'s session `session_id` in `project_id`, valid from
    /// `now_unix` for `ttl_secs` seconds ([`DEFAULT_TTL_SECS`] unless there is a reason).
    pub fn issue(
        &self,
        project_id: &str,
        user_id: &str,
        session_id: &str,
        now_unix: u64,
        ttl_secs: u64,
    ) -> String {
        let claims = WireClaims {
            iss: ISSUER.to_owned(),
            aud: project_id.to_owned(),
            sub: user_id.to_owned(),
            sid: session_id.to_owned(),
            iat: now_unix,
            exp: now_unix.saturating_add(ttl_secs),
        };
        let key = EncodingKey::from_secret(&self.project_key(project_id));
        // Serializing strings and integers, and an HMAC over them, cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key)
            .expect("HS256 signing of plain claims is infallible")
    }

    /// Checks a token presented for `project_id` at `now_unix`.
    ///
    /// The signature is checked (in constant time) before any claim is believed, so a
    /// forged token is `Invalid` even when its `exp` has passed.
    pub fn verify(
        &self,
        project_id: &str,
        token: &str,
        now_unix: u64,
    ) -> Result<JwtClaims, JwtError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(JwtError::Invalid);
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "aud", "iss", "sub"]);
        validation.set_audience(&[project_id]);
        validation.set_issuer(&[ISSUER]);
        // Expiry is checked below against the caller's clock, which tests can set;
        // the library would read the system clock and allow a minute of leeway.
        validation.validate_exp = false;
        let key = DecodingKey::from_secret(&self.project_key(project_id));
        let data =
            jsonwebtoken::decode::<WireClaims>(token, &key, &validation).map_err(|e| {
                match e.kind() {
                    ErrorKind::ExpiredSignature => JwtError::Expired,
                    _ => JwtError::Invalid,
                }
            })?;
        let claims = data.claims;
        // No leeway: the replicas that issue and check tokens keep one clock (NTP),
        // and a token must not outlive its `exp`, on HTTP or on an open socket.
        if now_unix >= claims.exp {
            return Err(JwtError::Expired);
        }
        Ok(JwtClaims {
            user_id: claims.sub,
            session_id: claims.sid,
            expires_at: claims.exp,
        })
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{Hmac, Mac as _};
    use sha2::Sha512;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn keys() -> JwtKeys {
        JwtKeys::new("server-secret-for-tests")
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn claims_json(project_id: &str, exp: u64) -> String {
        format!(
            r#"{{"iss":"nimbus","aud":"{project_id}","sub":"user1","sid":"sess1","iat":{NOW},"exp":{exp}}}"#
        )
    }

    /// A token signed with the right project key but under any header we like.
    fn forge(header: &str, payload: &str, project_id: &str) -> String {
        let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let mut mac = Hmac::<Sha256>::new_from_slice(&keys().project_key(project_id)).unwrap();
        mac.update(signing_input.as_bytes());
        format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()))
    }

    #[test]
    fn an_issued_token_verifies_to_its_user_and_session() {
        let token = keys().issue("proj1", "user1", "sess1", NOW, DEFAULT_TTL_SECS);
        assert_eq!(token.split('.').count(), 3);
        assert_eq!(
            keys().verify("proj1", &token, NOW + 10),
            Ok(JwtClaims {
                user_id: "user1".into(),
                session_id: "sess1".into(),
                expires_at: NOW + DEFAULT_TTL_SECS,
            })
        );
    }

    #[test]
    fn the_header_names_hs256() {
        let token = keys().issue("proj1", "user1", "sess1", NOW, DEFAULT_TTL_SECS);
        let header = URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap();
        let header: serde_json::Value = serde_json::from_slice(&header).unwrap();
        assert_eq!(header["alg"], "HS256");
    }

    #[test]
    fn a_hand_forged_token_with_the_right_key_verifies() {
        // Guards the forging helper the algorithm tests below rely on.
        let token = forge(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &claims_json("proj1", NOW + 60),
            "proj1",
        );
        assert!(keys().verify("proj1", &token, NOW).is_ok());
    }

    #[test]
    fn a_token_signed_with_another_server_secret_is_invalid() {
        let token = JwtKeys::new("another-secret").issue("proj1", "user1", "sess1", NOW, 900);
        assert_eq!(keys().verify("proj1", &token, NOW), Err(JwtError::Invalid));
    }

    #[test]
    fn a_tampered_payload_or_signature_is_invalid() {
        let token = keys().issue("proj1", "user1", "sess1", NOW, 900);
        let parts: Vec<&str> = token.split('.').collect();
        let other_payload = b64(claims_json("proj1", NOW + 10_000).as_bytes());
        let swapped = format!("{}.{other_payload}.{}", parts[0], parts[2]);
        assert_eq!(
            keys().verify("proj1", &swapped, NOW),
            Err(JwtError::Invalid)
        );

        let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        signature[0] ^= 1;
        let flipped = format!("{}.{}.{}", parts[0], parts[1], b64(&signature));
        assert_eq!(
            keys().verify("proj1", &flipped, NOW),
            Err(JwtError::Invalid)
        );

        let truncated = format!("{}.{}.{}", parts[0], parts[1], b64(&signature[..16]));
        assert_eq!(
            keys().verify("proj1", &truncated, NOW),
            Err(JwtError::Invalid)
        );
    }

    #[test]
    fn an_unsigned_alg_none_token_is_invalid() {
        let payload = claims_json("proj1", NOW + 60);
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None"}"#,
            r#"{"alg":"NONE"}"#,
        ] {
            let unsigned = format!("{}.{}.", b64(header.as_bytes()), b64(payload.as_bytes()));
            assert_eq!(
                keys().verify("proj1", &unsigned, NOW),
                Err(JwtError::Invalid)
            );
            // Even with a valid HMAC over it, `none` is not HS256.
            let signed = forge(header, &payload, "proj1");
            assert_eq!(keys().verify("proj1", &signed, NOW), Err(JwtError::Invalid));
        }
    }

    #[test]
    fn an_hs512_token_is_invalid_even_when_signed_with_the_project_key() {
        let header = r#"{"alg":"HS512","typ":"JWT"}"#;
        let payload = claims_json("proj1", NOW + 60);
        let signing_input = format!("{}.{}", b64(header.as_bytes()), b64(payload.as_bytes()));
        let mut mac = Hmac::<Sha512>::new_from_slice(&keys().project_key("proj1")).unwrap();
        mac.update(signing_input.as_bytes());
        let token = format!("{signing_input}.{}", b64(&mac.finalize().into_bytes()));
        assert_eq!(keys().verify("proj1", &token, NOW), Err(JwtError::Invalid));
    }

    #[test]
    fn other_algorithms_in_the_header_are_invalid() {
        let payload = claims_json("proj1", NOW + 60);
        for alg in [
            "RS256", "ES256", "EdDSA", "PS256", "HS384", "hs256", "", "HS256 ",
        ] {
            let header = format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#);
            let token = forge(&header, &payload, "proj1");
            assert_eq!(
                keys().verify("proj1", &token, NOW),
                Err(JwtError::Invalid),
                "{alg}"
            );
        }
        let no_alg = forge(r#"{"typ":"JWT"}"#, &payload, "proj1");
        assert_eq!(keys().verify("proj1", &no_alg, NOW), Err(JwtError::Invalid));
    }

    #[test]
    fn a_token_is_expired_from_its_exp_on() {
        let token = keys().issue("proj1", "user1", "sess1", NOW, 900);
        let exp = NOW + 900;
        assert!(keys().verify("proj1", &token, exp - 1).is_ok());
        assert_eq!(keys().verify("proj1", &token, exp), Err(JwtError::Expired));
        assert_eq!(
            keys().verify("proj1", &token, NOW + 86_400),
            Err(JwtError::Expired)
        );
    }

    #[test]
    fn a_forged_expired_token_is_invalid_not_expired() {
        let token = JwtKeys::new("another-secret").issue("proj1", "user1", "sess1", NOW, 1);
        assert_eq!(
            keys().verify("proj1", &token, NOW + 86_400),
            Err(JwtError::Invalid)
        );
    }

    #[test]
    fn a_token_for_one_project_is_invalid_in_another() {
        let token = keys().issue("projA", "user1", "sess1", NOW, 900);
        assert_eq!(keys().verify("projB", &token, NOW), Err(JwtError::Invalid));
        // The audience claim alone also refuses it, even under project B's key.
        let wrong_aud = forge(
            r#"{"alg":"HS256","typ":"JWT"}"#,
            &claims_json("projA", NOW + 60),
            "projB",
        );
        assert_eq!(
            keys().verify("projB", &wrong_aud, NOW),
            Err(JwtError::Invalid)
        );
    }

    #[test]
    fn a_token_missing_required_claims_is_invalid() {
        let header = r#"{"alg":"HS256","typ":"JWT"}"#;
        for payload in [
            r#"{"iss":"nimbus","aud":"proj1","sub":"user1","sid":"sess1","iat":1}"#.to_owned(),
            format!(
                r#"{{"iss":"nimbus","sub":"user1","sid":"sess1","iat":1,"exp":{}}}"#,
                NOW + 60
            ),
            format!(
                r#"{{"aud":"proj1","sub":"user1","sid":"sess1","iat":1,"exp":{}}}"#,
                NOW + 60
            ),
            format!(
                r#"{{"iss":"other","aud":"proj1","sub":"u","sid":"s","iat":1,"exp":{}}}"#,
                NOW + 60
            ),
            format!(
                r#"{{"iss":"nimbus","aud":"proj1","sub":"user1","iat":1,"exp":{}}}"#,
                NOW + 60
            ),
            r#"{"iss":"nimbus","aud":"proj1","sub":"u","sid":"s","iat":1,"exp":"soon"}"#.to_owned(),
            "not json".to_owned(),
        ] {
            let token = forge(header, &payload, "proj1");
            assert_eq!(
                keys().verify("proj1", &token, NOW),
                Err(JwtError::Invalid),
                "{payload}"
            );
        }
    }

    #[test]
    fn garbage_strings_are_invalid_without_panicking() {
        let token = keys().issue("proj1", "user1", "sess1", NOW, 900);
        let huge = "a".repeat(1 << 20);
        let huge_dotted = format!("{}.{}.{}", "a".repeat(1 << 20), "b", "c");
        // Just under the length cap, so the decoder itself sees them.
        let long = "a".repeat(MAX_TOKEN_LEN);
        let long_dotted = format!("{}.{}.{}", "e".repeat(2000), "y".repeat(2000), "z");
        let garbage = [
            "",
            ".",
            "..",
            "...",
            "nodots",
            "a.b",
            "a.b.c",
            "a.b.c.d",
            "!!!.@@@.###",
            "ä.ö.ü",
            &format!("{token}."),
            &format!(".{token}"),
            &format!("{token}.{token}"),
            &token.replace('.', ".."),
            &huge,
            &huge_dotted,
            &long,
            &long_dotted,
        ];
        for bad in garbage {
            let shown: String = bad.chars().take(40).collect();
            assert_eq!(
                keys().verify("proj1", bad, NOW),
                Err(JwtError::Invalid),
                "{shown}"
            );
        }
    }

    #[test]
    fn errors_map_to_their_codes_and_never_echo_the_token() {
        assert_eq!(JwtError::Invalid.code(), "INVALID_JWT");
        assert_eq!(JwtError::Expired.code(), "JWT_EXPIRED");
        let token = keys().issue("proj1", "user1", "sess1", NOW, 900);
        let error = keys().verify("proj2", &token, NOW).unwrap_err();
        assert!(!error.to_string().contains(&token[..20]));
        assert!(!format!("{error:?}").contains("user1"));
    }

    #[test]
    fn debug_output_hides_the_server_secret() {
        assert_eq!(format!("{:?}", keys()), "JwtKeys(..)");
    }

    #[test]
    fn project_keys_differ_per_project() {
        assert_ne!(keys().project_key("a"), keys().project_key("b"));
        assert_ne!(keys().project_key("a"), JwtKeys::new("x").project_key("a"));
    }
}
