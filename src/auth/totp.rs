//! Time-based one-time passwords (RFC 6238) for multi-factor sign-in, and recovery
//! codes.
//!
//! It owns the arithmetic only: secrets and their base32 form, the `otpauth://` URI an
//! authenticator app scans, computing and checking codes, and making, hashing and
//! spending recovery codes. It stores nothing and knows no users: callers keep the
//! secret, the last accepted time step and the recovery-code digests, and they must
//! rate-limit attempts (a 6-digit code checked over a 3-step window is guessed with
//! probability 3 in a million per try).

use std::fmt;

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, Mac as _};
use rand::{Rng as _, RngCore as _};
use sha1::Sha1;
use sha2::{Digest as _, Sha256};
use subtle::{Choice, ConstantTimeEq as _};

/// Digits in the codes users type.
pub const DIGITS: u32 = 6;
/// Seconds one code stays current (the RFC's time step X).
pub const PERIOD_SECS: u64 = 30;
/// Bytes of a new secret: 160 bits, the HMAC-SHA1 output size RFC 4226 recommends.
pub const SECRET_LEN: usize = 20;
/// Shortest secret accepted when decoding: RFC 4226 requires at least 128 bits.
const MIN_SECRET_LEN: usize = 16;
/// Recovery codes handed out at once.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// Characters in one recovery code (about 51.7 bits each).
pub const RECOVERY_CODE_LEN: usize = 10;
const RECOVERY_ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// The shared key between the server and a user's authenticator app.
///
/// `Debug` prints no key material, so a secret can sit in a struct that is logged.
#[derive(Clone, PartialEq, Eq)]
pub struct TotpSecret(Vec<u8>);

impl TotpSecret {
    /// The RFC 4648 base32 form (upper case, no padding) that apps and the database use.
    pub fn to_base32(&self) -> String {
        BASE32_NOPAD.encode(&self.0)
    }

    /// Reads a base32 secret; case and `=` padding are ignored because apps and other
    /// servers differ on both. `None` if it is not base32 or shorter than 128 bits.
    pub fn from_base32(encoded: &str) -> Option<Self> {
        let normalized = encoded.trim_end_matches('=').to_ascii_uppercase();
        let bytes = BASE32_NOPAD.decode(normalized.as_bytes()).ok()?;
        (bytes.len() >= MIN_SECRET_LEN).then_some(TotpSecret(bytes))
    }

    /// The raw key bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for TotpSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TotpSecret(..)")
    }
}

/// A new random secret of [`SECRET_LEN`] bytes.
pub fn new_secret() -> TotpSecret {
    let mut bytes = vec![0u8; SECRET_LEN];
    // ThreadRng is a CSPRNG seeded from, and periodically reseeded by, the OS.
    rand::rng().fill_bytes(&mut bytes);
    TotpSecret(bytes)
}

/// The `otpauth://totp/...` URI (Key Uri Format) an authenticator app reads from a QR
/// code. Issuer and account are percent-encoded, so a `:` or `&` in either cannot
/// break the label or inject parameters.
pub fn otpauth_uri(secret: &TotpSecret, issuer: &str, account: &str) -> String {
    let issuer = percent_encode(issuer);
    format!(
        "otpauth://totp/{issuer}:{account}?secret={secret}&issuer={issuer}\
         &algorithm=SHA1&digits={DIGITS}&period={PERIOD_SECS}",
        account = percent_encode(account),
        secret = secret.to_base32(),
    )
}

/// Encodes everything outside RFC 3986's unreserved set, so a space becomes `%20`
/// (some apps show a literal `+`).
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The 6-digit code for the time step containing `unix_time` (seconds).
pub fn code_at(secret: &TotpSecret, unix_time: u64) -> String {
    hotp(secret, unix_time / PERIOD_SECS, DIGITS)
}

/// HOTP (RFC 4226): HMAC-SHA1 of the big-endian counter, dynamically truncated.
/// `digits` is a parameter only so the RFC's 8-digit test vectors can be checked.
fn hotp(secret: &TotpSecret, counter: u64, digits: u32) -> String {
    let mut mac =
        Hmac::<Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC accepts keys of any length");
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let binary = u32::from_be_bytes([
        hash[offset] & 0x7f,
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ]);
    let value = u64::from(binary) % 10u64.pow(digits);
    format!("{value:0width$}", width = digits as usize)
}

/// Checks a code typed at `now` (unix seconds) against the current time step and one
/// step either side, which absorbs clock drift and a code typed as it rolled over.
///
/// Returns the matched step; the caller stores it and passes it back as
/// `last_used_step`, and steps at or before it are refused, so an observed code cannot
/// be replayed. Anything but exactly [`DIGITS`] ASCII digits is refused.
pub fn verify(
    secret: &TotpSecret,
    code: &str,
    now: u64,
    last_used_step: Option<u64>,
) -> Option<u64> {
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let current = now / PERIOD_SECS;
    let mut matched = None;
    for step in current.saturating_sub(1)..=current.saturating_add(1) {
        if last_used_step.is_some_and(|used| step <= used) {
            continue;
        }
        // Every candidate is compared, so timing does not tell which step matched.
        let equal: bool = hotp(secret, step, DIGITS)
            .as_bytes()
            .ct_eq(code.as_bytes())
            .into();
        if equal && matched.is_none() {
            matched = Some(step);
        }
    }
    matched
}

/// [`RECOVERY_CODE_COUNT`] fresh recovery codes of [`RECOVERY_CODE_LEN`] lowercase
/// letters and digits. Show them once; store only [`digest_code`] of each.
pub fn new_recovery_codes() -> Vec<String> {
    let mut rng = rand::rng();
    (0..RECOVERY_CODE_COUNT)
        .map(|_| {
            (0..RECOVERY_CODE_LEN)
                .map(|_| {
                    char::from(RECOVERY_ALPHABET[rng.random_range(0..RECOVERY_ALPHABET.len())])
                })
                .collect()
        })
        .collect()
}

/// Hex SHA-256 of a recovery code, after trimming and lower-casing it so a code typed
/// in capitals still matches. The codes are random, so a fast hash suffices.
pub fn digest_code(code: &str) -> String {
    hex::encode(Sha256::digest(normalize_recovery_code(code).as_bytes()))
}

fn normalize_recovery_code(code: &str) -> String {
    code.trim().to_ascii_lowercase()
}

/// Spends a recovery code: if its digest is among `digests`, that digest is removed
/// and `true` returned. Every stored digest is compared in constant time, so timing
/// reveals neither whether nor where a code matched. Malformed input is `false`.
pub fn consume_recovery_code(code: &str, digests: &mut Vec<String>) -> bool {
    let normalized = normalize_recovery_code(code);
    if normalized.len() != RECOVERY_CODE_LEN
        || !normalized.bytes().all(|b| RECOVERY_ALPHABET.contains(&b))
    {
        return false;
    }
    let presented = digest_code(&normalized);
    let mut found = Choice::from(0);
    let mut index = 0;
    for (i, stored) in digests.iter().enumerate() {
        let equal = presented.as_bytes().ct_eq(stored.as_bytes());
        index = if bool::from(equal & !found) { i } else { index };
        found |= equal;
    }
    if bool::from(found) {
        digests.remove(index);
        true
    } else {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ASCII key of RFC 6238 Appendix B for HMAC-SHA1.
    fn rfc_secret() -> TotpSecret {
        TotpSecret(b"12345678901234567890".to_vec())
    }

    #[test]
    fn codes_match_the_rfc_6238_sha1_test_vectors() {
        let vectors = [
            (59, "94287082"),
            (1_111_111_109, "07081804"),
            (1_111_111_111, "14050471"),
            (1_234_567_890, "89005924"),
            (2_000_000_000, "69279037"),
            (20_000_000_000, "65353130"),
        ];
        for (time, expected) in vectors {
            assert_eq!(
                hotp(&rfc_secret(), time / PERIOD_SECS, 8),
                expected,
                "{time}"
            );
        }
    }

    #[test]
    fn user_codes_are_the_last_six_digits_of_the_rfc_vectors() {
        assert_eq!(code_at(&rfc_secret(), 59), "287082");
        assert_eq!(code_at(&rfc_secret(), 1_111_111_109), "081804");
    }

    #[test]
    fn codes_match_the_rfc_4226_hotp_vectors() {
        let expected = ["755224", "287082", "359152", "969429", "338314"];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(hotp(&rfc_secret(), counter as u64, 6), *code);
        }
    }

    #[test]
    fn a_new_secret_is_random_and_survives_base32() {
        let secret = new_secret();
        assert_eq!(secret.as_bytes().len(), SECRET_LEN);
        assert_ne!(secret, new_secret());
        let encoded = secret.to_base32();
        assert_eq!(encoded.len(), 32);
        assert!(!encoded.contains('='));
        assert_eq!(TotpSecret::from_base32(&encoded), Some(secret.clone()));
        assert_eq!(
            TotpSecret::from_base32(&encoded.to_ascii_lowercase()),
            Some(secret)
        );
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(rfc_secret().to_base32(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(BASE32_NOPAD.encode(b"foobar"), "MZXW6YTBOI");
    }

    #[test]
    fn malformed_or_short_base32_secrets_are_refused() {
        for bad in [
            "",
            "GEZDGNBV",
            "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1",
            "ÄÖÜ",
            "GEZD GNBV",
        ] {
            assert_eq!(TotpSecret::from_base32(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn debug_output_hides_the_secret() {
        assert_eq!(format!("{:?}", rfc_secret()), "TotpSecret(..)");
    }

    #[test]
    fn otpauth_uri_percent_encodes_issuer_and_account() {
        let uri = otpauth_uri(&rfc_secret(), "Acme & Co", "ana:b@example.com");
        assert_eq!(
            uri,
            "otpauth://totp/Acme%20%26%20Co:ana%3Ab%40example.com\
             ?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=Acme%20%26%20Co\
             &algorithm=SHA1&digits=6&period=30"
        );
        let unicode = otpauth_uri(&rfc_secret(), "Zürich", "é");
        assert!(unicode.starts_with("otpauth://totp/Z%C3%BCrich:%C3%A9?"));
    }

    #[test]
    fn the_current_code_verifies_and_returns_its_step() {
        let secret = new_secret();
        let now = 1_700_000_015;
        assert_eq!(
            verify(&secret, &code_at(&secret, now), now, None),
            Some(now / 30)
        );
    }

    #[test]
    fn codes_one_step_either_side_are_accepted_but_not_two() {
        let secret = rfc_secret();
        let now: u64 = 1_700_000_015;
        let step = now / 30;
        for (offset, accepted) in [(-60i64, false), (-30, true), (30, true), (60, false)] {
            let at = now.checked_add_signed(offset).unwrap();
            let expected = accepted.then_some(at / 30);
            assert_eq!(verify(&secret, &code_at(&secret, at), now, None), expected);
        }
        assert_eq!(
            verify(&secret, &code_at(&secret, now), now, Some(step - 1)),
            Some(step)
        );
    }

    #[test]
    fn a_used_step_cannot_be_replayed() {
        let secret = new_secret();
        let now = 1_700_000_015;
        let code = code_at(&secret, now);
        let used = verify(&secret, &code, now, None).unwrap();
        assert_eq!(verify(&secret, &code, now, Some(used)), None);
        assert_eq!(verify(&secret, &code, now + 30, Some(used)), None);
        // An older code is refused too once a later step has been used.
        let previous = code_at(&secret, now - 30);
        assert_eq!(verify(&secret, &previous, now, Some(used)), None);
        // The next code still works.
        let next = code_at(&secret, now + 30);
        assert_eq!(verify(&secret, &next, now + 30, Some(used)), Some(used + 1));
    }

    #[test]
    fn malformed_codes_are_refused_without_panicking() {
        let secret = rfc_secret();
        let now = 59;
        assert_eq!(verify(&secret, "287082", now, None), Some(1));
        for bad in [
            "",
            "28708",
            "2870820",
            "28708a",
            "abcdef",
            " 287082",
            "287 082",
            "-28708",
            "２８７０８２",
            "28708\u{0662}",
            "🙂🙂",
            "\0\0\0\0\0\0",
        ] {
            assert_eq!(verify(&secret, bad, now, None), None, "{bad:?}");
        }
    }

    #[test]
    fn verifying_near_the_epoch_or_the_end_of_time_does_not_overflow() {
        let secret = rfc_secret();
        assert_eq!(verify(&secret, &code_at(&secret, 0), 0, None), Some(0));
        let code = code_at(&secret, u64::MAX);
        assert_eq!(verify(&secret, &code, u64::MAX, None), Some(u64::MAX / 30));
    }

    #[test]
    fn new_recovery_codes_are_ten_distinct_lowercase_alphanumerics() {
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), RECOVERY_CODE_COUNT);
        for code in &codes {
            assert_eq!(code.len(), RECOVERY_CODE_LEN);
            assert!(
                code.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)),
                "{code}"
            );
        }
        let mut unique = codes.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), codes.len());
    }

    #[test]
    fn a_recovery_code_is_stored_as_a_sha256_digest_and_spent_once() {
        let codes = new_recovery_codes();
        let mut stored: Vec<String> = codes.iter().map(|c| digest_code(c)).collect();
        assert!(stored.iter().all(|d| d.len() == 64 && !codes.contains(d)));

        assert!(consume_recovery_code(&codes[3], &mut stored));
        assert_eq!(stored.len(), RECOVERY_CODE_COUNT - 1);
        assert!(!consume_recovery_code(&codes[3], &mut stored));
        assert!(consume_recovery_code(
            &format!("  {}\n", codes[7].to_ascii_uppercase()),
            &mut stored
        ));
        assert_eq!(stored.len(), RECOVERY_CODE_COUNT - 2);
    }

    #[test]
    fn unknown_or_malformed_recovery_codes_are_refused_without_panicking() {
        let codes = new_recovery_codes();
        let mut stored: Vec<String> = codes.iter().map(|c| digest_code(c)).collect();
        let first = codes[0].clone();
        for bad in [
            "",
            "abc",
            "aaaaaaaaaa",
            &format!("{first}x"),
            &first[..9],
            "ääääääääää",
            "aaaa-aaaaa",
            &stored[0].clone(),
        ] {
            assert!(!consume_recovery_code(bad, &mut stored), "{bad:?}");
        }
        assert_eq!(stored.len(), RECOVERY_CODE_COUNT);
        assert!(!consume_recovery_code(&first, &mut Vec::new()));
    }
}
