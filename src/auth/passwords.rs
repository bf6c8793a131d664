//! Password hashing for accounts, and verification of hashes imported from
//! other systems.
//!
//! New passwords get an Argon2id hash ([`hash_password`]). Users imported through
//! the Users API keep the hash their old system made — Argon2, bcrypt, scrypt,
//! Firebase's modified scrypt, SHA-1/2/3, MD5 or phpass — until they next sign in;
//! then [`StoredHash::needs_rehash`] tells the caller to store a fresh Argon2id hash
//! (Appwrite does the same on email/password sign-in).
//!
//! This module only hashes and compares. It does no I/O, knows nothing of users or
//! of the database, and never spawns: Argon2id, bcrypt and scrypt are meant to cost
//! tens of milliseconds of CPU, so async callers must run [`hash_password`] and
//! [`verify_password`] inside `tokio::task::spawn_blocking`, never on a runtime
//! worker. Comparisons of derived values are constant-time (`subtle`).
//!
//! # Stored form
//! [`StoredHash::to_stored`] gives one text per hash, for one database column, and
//! [`StoredHash::from_stored`] reads it back. Every form names its algorithm, and
//! only the canonical text is accepted, so `from_stored(s)?.to_stored() == s`:
//!
//! | algorithm | stored text |
//! |---|---|
//! | Argon2 | the PHC string itself: `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>` (also `$argon2i$`, `$argon2d$`) |
//! | bcrypt | the modular-crypt string itself: `$2a$`, `$2b$` or `$2y$`, two-digit cost, salt and hash; 60 characters |
//! | phpass | the portable hash itself: `$P$` (WordPress) or `$H$` (phpBB); 34 characters |
//! | scrypt | `scrypt$n=<N>,r=<r>,p=<p>$<salt hex>$<hash hex>` |
//! | Firebase scrypt | `firebase-scrypt$rounds=<r>,mem_cost=<log2 N>$<salt>$<salt separator>$<signer key>$<hash>`, the four fields in padded standard base64 as Firebase exports them |
//! | SHA | `<version>$<digest hex>`, the version named as Appwrite's `passwordVersion`: `sha256$…`, `sha512/224$…`, `sha3-256$…` |
//! | MD5 | `md5$<digest hex>` |
//!
//! Hex is lowercase; numbers are decimal without sign or leading zeros.
//!
//! # Limits
//! Passwords over [`MAX_PASSWORD_BYTES`] are refused before any hashing, for every
//! algorithm. An imported hash sets the work of every later sign-in attempt, which
//! anyone who knows the email can trigger, so [`verify_password`] and the `import_*`
//! constructors refuse costs above these. The last column is one verification at
//! the limit, on one core of the EPYC the limits were measured on; our own Argon2id
//! takes about 20 ms.
//!
//! | algorithm | limits | at the limit |
//! |---|---|---|
//! | Argon2 | m ≤ 256 MiB, p ≤ 16, m·t ≤ 1 GiB (KiB × passes) | 1 s |
//! | bcrypt | cost ≤ 16 (real exports use 10–12; Appwrite's own test, 15) | 4 s |
//! | scrypt, Firebase scrypt | N ≤ 2^20, r ≤ 32, p ≤ 16, memory 128·N·r ≤ 256 MiB, N·r·p ≤ 2^22 | 1.1 s, 256 MiB |
//! | phpass | 2^20 MD5 iterations (WordPress uses 2^13) | 70 ms |
//!
//! [`StoredHash::from_stored`] checks shape only, not these limits, so lowering a
//! limit later leaves stored users readable: they fail to verify with a clear error.

use std::fmt;

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::alphabet;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use ctr::cipher::{KeyIvInit as _, StreamCipher as _};
use md5::Md5;
use rand::RngCore as _;
use sha2::Digest as _;
use subtle::ConstantTimeEq as _;

/// Longest password accepted, in bytes of UTF-8. Appwrite's password validator stops
/// at 256 too; the bound keeps an attacker from making the hashers chew megabytes.
pub const MAX_PASSWORD_BYTES: usize = 256;

// New hashes: Argon2id with OWASP's first recommended configuration (Password Storage
// Cheat Sheet: "a minimum configuration of 19 MiB of memory, an iteration count of 2,
// and 1 degree of parallelism"). OWASP rates its alternatives (46 MiB × 1 pass down
// to 7 MiB × 5 passes) as equally strong; this one balances memory held per
// concurrent sign-in against CPU time.
const ARGON2_MEMORY_KIB: u32 = 19 * 1024;
const ARGON2_ITERATIONS: u32 = 2;
const ARGON2_LANES: u32 = 1;
const ARGON2_OUTPUT_BYTES: usize = 32;
const ARGON2_SALT_BYTES: usize = 16;

// Ceilings on imported costs; see "Limits" in the module docs.
const MAX_ARGON2_MEMORY_KIB: u64 = 256 * 1024;
const MAX_ARGON2_LANES: u64 = 16;
const MAX_ARGON2_WORK_KIB: u64 = 1 << 20;
const MAX_BCRYPT_COST: u64 = 16;
const MAX_SCRYPT_LOG_N: u64 = 20;
const MAX_SCRYPT_R: u64 = 32;
const MAX_SCRYPT_P: u64 = 16;
const MAX_SCRYPT_MEMORY_BYTES: u64 = 256 << 20;
const MAX_SCRYPT_WORK: u64 = 1 << 22;
const MAX_PHPASS_LOG2: u64 = 20;

// Sizes of imported salts, keys and hashes: generous for real systems, small enough
// that a stored hash stays a short column value.
const MAX_FIELD_BYTES: usize = 1024;
const MIN_SCRYPT_HASH_BYTES: usize = 16;
const MAX_SCRYPT_HASH_BYTES: usize = 512;
const MIN_ARGON2_SALT_BYTES: usize = 8;

// Names used in error messages and by [`StoredHash::algorithm`].
const ARGON2: &str = "argon2";
const BCRYPT: &str = "bcrypt";
const SCRYPT: &str = "scrypt";
const SCRYPT_MODIFIED: &str = "scryptMod";
const SHA: &str = "sha";
const MD5: &str = "md5";
const PHPASS: &str = "phpass";

// Stored-form prefixes of the algorithms without a native self-describing string.
const SCRYPT_PREFIX: &str = "scrypt";
const SCRYPT_MODIFIED_PREFIX: &str = "firebase-scrypt";
const MD5_PREFIX: &str = "md5";

/// The alphabet of phpass's own base64 (same characters as crypt(3), its own order).
const PHPASS_ITOA64: &[u8; 64] =
    b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Imported base64 may leave out its `=` padding; what we store always has it.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a password could not be hashed or checked. No variant carries the password
/// or hash material, so messages are safe to log and to show an API-key holder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The password is longer than [`MAX_PASSWORD_BYTES`]; refused before hashing.
    #[error("password is longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// A stored or imported hash does not have the shape its algorithm requires.
    #[error("malformed {algorithm} hash: {reason}")]
    Malformed {
        algorithm: &'static str,
        reason: &'static str,
    },
    /// An imported hash asks for more work per sign-in than this server will do.
    #[error("{algorithm} {parameter} is {value}, above the limit of {limit}")]
    CostTooHigh {
        algorithm: &'static str,
        parameter: &'static str,
        value: u64,
        limit: u64,
    },
    /// The stored text names no algorithm this module knows.
    #[error("unrecognised password hash format")]
    UnknownFormat,
    /// Hashing failed for a reason other than its input; a bug, not a user error.
    #[error("password hashing failed: {0}")]
    Internal(String),
}

fn malformed(algorithm: &'static str, reason: &'static str) -> PasswordError {
    PasswordError::Malformed { algorithm, reason }
}

fn at_most(
    algorithm: &'static str,
    parameter: &'static str,
    value: u64,
    limit: u64,
) -> Result<(), PasswordError> {
    if value > limit {
        return Err(PasswordError::CostTooHigh {
            algorithm,
            parameter,
            value,
            limit,
        });
    }
    Ok(())
}

fn check_password_length(password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    Ok(())
}

/// A fresh Argon2id hash of `password`, as a PHC string
/// (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`) with a random 16-byte salt.
///
/// CPU-heavy (tens of milliseconds): call it from `spawn_blocking`.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    check_password_length(password)?;
    let mut salt = [0u8; ARGON2_SALT_BYTES];
    // ThreadRng is a CSPRNG seeded from, and periodically reseeded by, the OS.
    rand::rng().fill_bytes(&mut salt);
    let salt = SaltString::encode_b64(&salt).map_err(internal)?;
    let hash = current_argon2()?
        .hash_password(password.as_bytes(), &salt)
        .map_err(internal)?;
    Ok(hash.to_string())
}

fn internal(error: impl fmt::Display) -> PasswordError {
    PasswordError::Internal(error.to_string())
}

fn current_argon2() -> Result<Argon2<'static>, PasswordError> {
    let params = Params::new(
        ARGON2_MEMORY_KIB,
        ARGON2_ITERATIONS,
        ARGON2_LANES,
        Some(ARGON2_OUTPUT_BYTES),
    )
    .map_err(internal)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Whether `password` matches `stored`.
///
/// `Ok(false)` is a wrong password. `Err` means the password or the hash was refused
/// (too long, malformed, above the cost limits): a sign-in must fail then too, and the
/// error is worth logging since it points at a bad import, not at the user.
///
/// CPU-heavy for Argon2, bcrypt and scrypt: call it from `spawn_blocking`.
pub fn verify_password(password: &str, stored: &StoredHash) -> Result<bool, PasswordError> {
    check_password_length(password)?;
    // Variants can be built directly, so shape and cost are checked here and not
    // only when a hash is imported or read back.
    stored.check_shape()?;
    stored.check_cost()?;
    let password = password.as_bytes();
    match stored {
        StoredHash::Argon2(phc) => verify_argon2(password, phc),
        // Truncates at 72 bytes, as bcrypt always has; the crate compares in constant time.
        StoredHash::Bcrypt(hash) => {
            bcrypt::verify(password, hash).map_err(|_| malformed(BCRYPT, "rejected by bcrypt"))
        }
        StoredHash::Scrypt {
            salt,
            cost_cpu,
            cost_memory,
            cost_parallel,
            hash,
        } => {
            let derived = scrypt_derive(
                SCRYPT,
                password,
                salt,
                cost_cpu.trailing_zeros(),
                *cost_memory,
                *cost_parallel,
                hash.len(),
            )?;
            Ok(derived.ct_eq(hash).into())
        }
        StoredHash::ScryptModified {
            salt,
            salt_separator,
            signer_key,
            rounds,
            memory_cost,
            hash,
        } => {
            let computed = firebase_scrypt(
                password,
                salt,
                salt_separator,
                signer_key,
                *rounds,
                *memory_cost,
            )?;
            Ok(computed.ct_eq(hash).into())
        }
        StoredHash::Sha { variant, hash } => Ok(variant.digest(password).ct_eq(hash).into()),
        StoredHash::Md5 { hash } => Ok(Md5::digest(password).as_slice().ct_eq(hash).into()),
        StoredHash::Phpass { hash } => verify_phpass(password, hash),
    }
}

/// The SHA function an imported SHA hash was made with, named as Appwrite's
/// `passwordVersion` names it (PHP's `hash()` algorithm names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ShaVariant {
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512_224,
    Sha512_256,
    Sha512,
    Sha3_224,
    Sha3_256,
    Sha3_384,
    /// What Appwrite uses when `createSHAUser` is given no `passwordVersion`.
    #[default]
    Sha3_512,
}

impl ShaVariant {
    /// Every variant, in Appwrite's order.
    pub const ALL: [ShaVariant; 11] = [
        Self::Sha1,
        Self::Sha224,
        Self::Sha256,
        Self::Sha384,
        Self::Sha512_224,
        Self::Sha512_256,
        Self::Sha512,
        Self::Sha3_224,
        Self::Sha3_256,
        Self::Sha3_384,
        Self::Sha3_512,
    ];

    /// The `passwordVersion` name: `sha1`, `sha512/224`, `sha3-256`, …
    pub fn name(self) -> &'static str {
        match self {
            Self::Sha1 => "sha1",
            Self::Sha224 => "sha224",
            Self::Sha256 => "sha256",
            Self::Sha384 => "sha384",
            Self::Sha512_224 => "sha512/224",
            Self::Sha512_256 => "sha512/256",
            Self::Sha512 => "sha512",
            Self::Sha3_224 => "sha3-224",
            Self::Sha3_256 => "sha3-256",
            Self::Sha3_384 => "sha3-384",
            Self::Sha3_512 => "sha3-512",
        }
    }

    /// The variant a `passwordVersion` names, exactly as [`ShaVariant::name`] spells it.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|variant| variant.name() == name)
    }

    fn digest_len(self) -> usize {
        match self {
            Self::Sha1 => 20,
            Self::Sha224 | Self::Sha512_224 | Self::Sha3_224 => 28,
            Self::Sha256 | Self::Sha512_256 | Self::Sha3_256 => 32,
            Self::Sha384 | Self::Sha3_384 => 48,
            Self::Sha512 | Self::Sha3_512 => 64,
        }
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        match self {
            Self::Sha1 => sha1::Sha1::digest(data).to_vec(),
            Self::Sha224 => sha2::Sha224::digest(data).to_vec(),
            Self::Sha256 => sha2::Sha256::digest(data).to_vec(),
            Self::Sha384 => sha2::Sha384::digest(data).to_vec(),
            Self::Sha512_224 => sha2::Sha512_224::digest(data).to_vec(),
            Self::Sha512_256 => sha2::Sha512_256::digest(data).to_vec(),
            Self::Sha512 => sha2::Sha512::digest(data).to_vec(),
            Self::Sha3_224 => sha3::Sha3_224::digest(data).to_vec(),
            Self::Sha3_256 => sha3::Sha3_256::digest(data).to_vec(),
            Self::Sha3_384 => sha3::Sha3_384::digest(data).to_vec(),
            Self::Sha3_512 => sha3::Sha3_512::digest(data).to_vec(),
        }
    }
}

impl fmt::Display for ShaVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A password hash as kept for a user: ours (Argon2id) or one imported from another
/// system. Binary fields hold decoded bytes. Build imported ones with the `import_*`
/// constructors, which take Appwrite's `create*User` arguments and check them; keep
/// them with [`StoredHash::to_stored`].
///
/// `Debug` shows only the algorithm, so a hash never reaches the logs.
#[derive(Clone, PartialEq, Eq)]
pub enum StoredHash {
    /// A PHC string: `$argon2id$…`, `$argon2i$…` or `$argon2d$…`.
    Argon2(String),
    /// A modular-crypt bcrypt string: `$2a$`, `$2b$` or `$2y$`.
    Bcrypt(String),
    /// Plain scrypt (RFC 7914), the derived key compared with `hash`; its length is
    /// the length the old system asked of scrypt.
    Scrypt {
        salt: Vec<u8>,
        /// N, a power of two.
        cost_cpu: u64,
        /// r, the block size.
        cost_memory: u32,
        /// p.
        cost_parallel: u32,
        hash: Vec<u8>,
    },
    /// Firebase Authentication's modified scrypt: a 32-byte key is derived with
    /// scrypt(N = 2^`memory_cost`, r = `rounds`, p = 1) from the password and
    /// `salt ‖ salt_separator`, then encrypts `signer_key` with AES-256-CTR (zero IV);
    /// the ciphertext is `hash`. `salt` is per user; the separator, signer key, rounds
    /// and memory cost are the Firebase project's "password hash parameters".
    ScryptModified {
        salt: Vec<u8>,
        salt_separator: Vec<u8>,
        signer_key: Vec<u8>,
        rounds: u32,
        /// log2 of scrypt's N (Firebase's `mem_cost`).
        memory_cost: u32,
        hash: Vec<u8>,
    },
    /// An unsalted SHA digest of the password.
    Sha { variant: ShaVariant, hash: Vec<u8> },
    /// An unsalted MD5 digest of the password.
    Md5 { hash: Vec<u8> },
    /// A phpass portable hash (`$P$…`, WordPress before 6.8; `$H$…`, phpBB 3).
    Phpass { hash: String },
}

impl fmt::Debug for StoredHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StoredHash")
            .field(&self.algorithm())
            .finish()
    }
}

impl StoredHash {
    /// Firebase's default `rounds`, which Appwrite's `createScryptModifiedUser` assumes.
    pub const FIREBASE_DEFAULT_ROUNDS: i64 = 8;
    /// Firebase's default `mem_cost`, which Appwrite's `createScryptModifiedUser` assumes.
    pub const FIREBASE_DEFAULT_MEMORY_COST: i64 = 14;

    /// An imported Argon2 hash (`createArgon2User`): a PHC string with `m`, `t` and `p`.
    pub fn import_argon2(phc: &str) -> Result<Self, PasswordError> {
        Self::checked(Self::Argon2(phc.to_owned()))
    }

    /// An imported bcrypt hash (`createBcryptUser`). `$2x$` (hashes from the
    /// pre-2011 buggy crypt_blowfish) is refused: it would not verify correctly.
    pub fn import_bcrypt(hash: &str) -> Result<Self, PasswordError> {
        Self::checked(Self::Bcrypt(hash.to_owned()))
    }

    /// An imported scrypt hash (`createScryptUser`), as php-scrypt makes it: `hash`
    /// is the hex derived key, `salt` the salt text itself, `cost_cpu` N,
    /// `cost_memory` r, `cost_parallel` p and `length` the key length in bytes.
    pub fn import_scrypt(
        hash: &str,
        salt: &str,
        cost_cpu: i64,
        cost_memory: i64,
        cost_parallel: i64,
        length: i64,
    ) -> Result<Self, PasswordError> {
        let hash = hex::decode(hash).map_err(|_| malformed(SCRYPT, "hash is not hex"))?;
        if u64::try_from(length).ok() != u64::try_from(hash.len()).ok() {
            return Err(malformed(
                SCRYPT,
                "hash length differs from the given length",
            ));
        }
        let n = positive(SCRYPT, cost_cpu)?;
        let r = positive(SCRYPT, cost_memory)?;
        let p = positive(SCRYPT, cost_parallel)?;
        check_scrypt_cost(SCRYPT, n, r, p)?;
        Self::checked(Self::Scrypt {
            salt: salt.as_bytes().to_vec(),
            cost_cpu: n,
            cost_memory: narrow(SCRYPT, r)?,
            cost_parallel: narrow(SCRYPT, p)?,
            hash,
        })
    }

    /// An imported Firebase scrypt hash (`createScryptModifiedUser`): the hash, the
    /// user's salt and the project's salt separator and signer key in base64 (padding
    /// optional), and the project's `rounds` and `mem_cost`. Appwrite's endpoint takes
    /// no rounds or memory cost and assumes Firebase's defaults,
    /// [`Self::FIREBASE_DEFAULT_ROUNDS`] and [`Self::FIREBASE_DEFAULT_MEMORY_COST`].
    pub fn import_scrypt_modified(
        hash: &str,
        salt: &str,
        salt_separator: &str,
        signer_key: &str,
        rounds: i64,
        memory_cost: i64,
    ) -> Result<Self, PasswordError> {
        let decode = |field: &str, reason| {
            LENIENT_BASE64
                .decode(field)
                .map_err(|_| malformed(SCRYPT_MODIFIED, reason))
        };
        let hash = decode(hash, "hash is not base64")?;
        let salt = decode(salt, "salt is not base64")?;
        let salt_separator = decode(salt_separator, "salt separator is not base64")?;
        let signer_key = decode(signer_key, "signer key is not base64")?;
        let rounds = positive(SCRYPT_MODIFIED, rounds)?;
        let memory_cost = positive(SCRYPT_MODIFIED, memory_cost)?;
        check_scrypt_modified_cost(rounds, memory_cost)?;
        Self::checked(Self::ScryptModified {
            salt,
            salt_separator,
            signer_key,
            rounds: narrow(SCRYPT_MODIFIED, rounds)?,
            memory_cost: narrow(SCRYPT_MODIFIED, memory_cost)?,
            hash,
        })
    }

    /// An imported SHA hash (`createSHAUser`): the hex digest of the password.
    pub fn import_sha(hash: &str, variant: ShaVariant) -> Result<Self, PasswordError> {
        let hash = hex::decode(hash).map_err(|_| malformed(SHA, "hash is not hex"))?;
        Self::checked(Self::Sha { variant, hash })
    }

    /// An imported MD5 hash (`createMD5User`): the hex digest of the password.
    pub fn import_md5(hash: &str) -> Result<Self, PasswordError> {
        let hash = hex::decode(hash).map_err(|_| malformed(MD5, "hash is not hex"))?;
        Self::checked(Self::Md5 { hash })
    }

    /// An imported phpass hash (`createPHPassUser`). phpass itself hashes with bcrypt
    /// when PHP has it, and Appwrite verifies such hashes with `crypt()`, so a bcrypt
    /// string is accepted here and kept as [`StoredHash::Bcrypt`].
    pub fn import_phpass(hash: &str) -> Result<Self, PasswordError> {
        if hash.starts_with("$2") {
            return Self::import_bcrypt(hash);
        }
        Self::checked(Self::Phpass {
            hash: hash.to_owned(),
        })
    }

    fn checked(self) -> Result<Self, PasswordError> {
        self.check_shape()?;
        self.check_cost()?;
        Ok(self)
    }

    /// The algorithm's name as Appwrite's user model reports it in `hash`:
    /// `argon2`, `bcrypt`, `scrypt`, `scryptMod`, `sha`, `md5` or `phpass`.
    pub fn algorithm(&self) -> &'static str {
        match self {
            Self::Argon2(_) => ARGON2,
            Self::Bcrypt(_) => BCRYPT,
            Self::Scrypt { .. } => SCRYPT,
            Self::ScryptModified { .. } => SCRYPT_MODIFIED,
            Self::Sha { .. } => SHA,
            Self::Md5 { .. } => MD5,
            Self::Phpass { .. } => PHPASS,
        }
    }

    /// The text to keep in the database; see "Stored form" in the module docs.
    pub fn to_stored(&self) -> String {
        match self {
            Self::Argon2(hash) | Self::Bcrypt(hash) | Self::Phpass { hash } => hash.clone(),
            Self::Scrypt {
                salt,
                cost_cpu,
                cost_memory,
                cost_parallel,
                hash,
            } => format!(
                "{SCRYPT_PREFIX}$n={cost_cpu},r={cost_memory},p={cost_parallel}${}${}",
                hex::encode(salt),
                hex::encode(hash)
            ),
            Self::ScryptModified {
                salt,
                salt_separator,
                signer_key,
                rounds,
                memory_cost,
                hash,
            } => format!(
                "{SCRYPT_MODIFIED_PREFIX}$rounds={rounds},mem_cost={memory_cost}${}${}${}${}",
                STANDARD.encode(salt),
                STANDARD.encode(salt_separator),
                STANDARD.encode(signer_key),
                STANDARD.encode(hash)
            ),
            Self::Sha { variant, hash } => format!("{}${}", variant.name(), hex::encode(hash)),
            Self::Md5 { hash } => format!("{MD5_PREFIX}${}", hex::encode(hash)),
        }
    }

    /// Reads back what [`StoredHash::to_stored`] wrote. Only the canonical text is
    /// accepted; the cost limits are not applied here (see the module docs).
    pub fn from_stored(stored: &str) -> Result<Self, PasswordError> {
        let hash = if stored.starts_with("$argon2") {
            Self::Argon2(stored.to_owned())
        } else if stored.starts_with("$2") {
            Self::Bcrypt(stored.to_owned())
        } else if stored.starts_with("$P$") || stored.starts_with("$H$") {
            Self::Phpass {
                hash: stored.to_owned(),
            }
        } else {
            let (prefix, rest) = stored.split_once('$').ok_or(PasswordError::UnknownFormat)?;
            match prefix {
                SCRYPT_PREFIX => parse_stored_scrypt(rest)?,
                SCRYPT_MODIFIED_PREFIX => parse_stored_scrypt_modified(rest)?,
                MD5_PREFIX => Self::Md5 {
                    hash: stored_hex(rest)
                        .ok_or_else(|| malformed(MD5, "hash is not lowercase hex"))?,
                },
                _ => {
                    let variant =
                        ShaVariant::from_name(prefix).ok_or(PasswordError::UnknownFormat)?;
                    let hash = stored_hex(rest)
                        .ok_or_else(|| malformed(SHA, "hash is not lowercase hex"))?;
                    Self::Sha { variant, hash }
                }
            }
        };
        hash.check_shape()?;
        Ok(hash)
    }

    /// Whether the hash should be replaced by a fresh [`hash_password`] once the user
    /// has signed in with the right password: true for everything but an Argon2id hash
    /// with this module's current parameters.
    pub fn needs_rehash(&self) -> bool {
        let Self::Argon2(phc) = self else {
            return true;
        };
        let Ok((_, settings)) = parse_argon2(phc) else {
            return true;
        };
        let params = &settings.params;
        !(settings.algorithm == Algorithm::Argon2id
            && settings.version == Version::V0x13
            && params.m_cost() == ARGON2_MEMORY_KIB
            && params.t_cost() == ARGON2_ITERATIONS
            && params.p_cost() == ARGON2_LANES
            && params.output_len() == Some(ARGON2_OUTPUT_BYTES))
    }

    /// Everything but the cost limits: the fields are what their algorithm can use.
    fn check_shape(&self) -> Result<(), PasswordError> {
        match self {
            Self::Argon2(phc) => parse_argon2(phc).map(|_| ()),
            Self::Bcrypt(hash) => parse_bcrypt(hash).map(|_| ()),
            Self::Phpass { hash } => parse_phpass(hash).map(|_| ()),
            Self::Scrypt {
                salt,
                cost_cpu,
                cost_memory,
                cost_parallel,
                hash,
            } => {
                if *cost_cpu < 2 || !cost_cpu.is_power_of_two() {
                    return Err(malformed(
                        SCRYPT,
                        "N (CPU cost) must be a power of two above 1",
                    ));
                }
                if *cost_memory == 0 || *cost_parallel == 0 {
                    return Err(malformed(SCRYPT, "r and p must be positive"));
                }
                if salt.is_empty() || salt.len() > MAX_FIELD_BYTES {
                    return Err(malformed(SCRYPT, "salt must be 1 to 1024 bytes"));
                }
                if !(MIN_SCRYPT_HASH_BYTES..=MAX_SCRYPT_HASH_BYTES).contains(&hash.len()) {
                    return Err(malformed(SCRYPT, "hash must be 16 to 512 bytes"));
                }
                Ok(())
            }
            Self::ScryptModified {
                salt,
                salt_separator,
                signer_key,
                rounds,
                memory_cost,
                hash,
            } => {
                if *rounds == 0 || !(1..64).contains(memory_cost) {
                    return Err(malformed(
                        SCRYPT_MODIFIED,
                        "rounds must be positive and mem_cost between 1 and 63",
                    ));
                }
                if salt.is_empty() || signer_key.is_empty() {
                    return Err(malformed(
                        SCRYPT_MODIFIED,
                        "salt and signer key must not be empty",
                    ));
                }
                if [salt, salt_separator, signer_key]
                    .iter()
                    .any(|field| field.len() > MAX_FIELD_BYTES)
                {
                    return Err(malformed(
                        SCRYPT_MODIFIED,
                        "salt, separator or signer key over 1024 bytes",
                    ));
                }
                if hash.len() != signer_key.len() {
                    return Err(malformed(
                        SCRYPT_MODIFIED,
                        "hash and signer key differ in length",
                    ));
                }
                Ok(())
            }
            Self::Sha { variant, hash } => {
                if hash.len() != variant.digest_len() {
                    return Err(malformed(
                        SHA,
                        "digest length does not match the SHA version",
                    ));
                }
                Ok(())
            }
            Self::Md5 { hash } => {
                if hash.len() != 16 {
                    return Err(malformed(MD5, "digest must be 16 bytes"));
                }
                Ok(())
            }
        }
    }

    /// The cost limits of the module docs; assumes [`Self::check_shape`] passed.
    fn check_cost(&self) -> Result<(), PasswordError> {
        match self {
            Self::Argon2(phc) => check_argon2_cost(&parse_argon2(phc)?.1.params),
            Self::Bcrypt(hash) => at_most(
                BCRYPT,
                "cost",
                u64::from(parse_bcrypt(hash)?),
                MAX_BCRYPT_COST,
            ),
            Self::Phpass { hash } => at_most(
                PHPASS,
                "iterations (log2)",
                u64::from(parse_phpass(hash)?),
                MAX_PHPASS_LOG2,
            ),
            Self::Scrypt {
                cost_cpu,
                cost_memory,
                cost_parallel,
                ..
            } => check_scrypt_cost(
                SCRYPT,
                *cost_cpu,
                (*cost_memory).into(),
                (*cost_parallel).into(),
            ),
            Self::ScryptModified {
                rounds,
                memory_cost,
                ..
            } => check_scrypt_modified_cost((*rounds).into(), (*memory_cost).into()),
            Self::Sha { .. } | Self::Md5 { .. } => Ok(()),
        }
    }
}

fn positive(algorithm: &'static str, value: i64) -> Result<u64, PasswordError> {
    u64::try_from(value)
        .ok()
        .filter(|value| *value > 0)
        .ok_or_else(|| malformed(algorithm, "cost parameters must be positive"))
}

fn narrow(algorithm: &'static str, value: u64) -> Result<u32, PasswordError> {
    u32::try_from(value).map_err(|_| PasswordError::CostTooHigh {
        algorithm,
        parameter: "cost parameter",
        value,
        limit: u32::MAX.into(),
    })
}

// ---- Argon2 ----------------------------------------------------------------

struct Argon2Settings {
    algorithm: Algorithm,
    version: Version,
    params: Params,
}

fn parse_argon2(phc: &str) -> Result<(PasswordHash<'_>, Argon2Settings), PasswordError> {
    let hash = PasswordHash::new(phc).map_err(|_| malformed(ARGON2, "not a PHC string"))?;
    let algorithm = Algorithm::try_from(hash.algorithm)
        .map_err(|_| malformed(ARGON2, "algorithm is not argon2i, argon2d or argon2id"))?;
    // The reference implementation reads a string without `v=` as version 0x10.
    let version = match hash.version {
        None => Version::V0x10,
        Some(version) => {
            Version::try_from(version).map_err(|_| malformed(ARGON2, "version is not 16 or 19"))?
        }
    };
    // Params::try_from fills in defaults for missing fields; the reference format
    // requires all three, and a default could silently change the hash.
    if ["m", "t", "p"]
        .into_iter()
        .any(|name| hash.params.get_decimal(name).is_none())
    {
        return Err(malformed(ARGON2, "m, t and p must all be given"));
    }
    if hash.params.get("keyid").is_some() {
        return Err(malformed(
            ARGON2,
            "keyid hashes need a secret key this server lacks",
        ));
    }
    let mut salt_bytes = [0u8; 64];
    let salt_len = hash
        .salt
        .and_then(|salt| salt.decode_b64(&mut salt_bytes).ok())
        .map(<[u8]>::len);
    if salt_len.is_none_or(|len| len < MIN_ARGON2_SALT_BYTES) || hash.hash.is_none() {
        return Err(malformed(
            ARGON2,
            "salt of at least 8 bytes and hash required",
        ));
    }
    let params = Params::try_from(&hash).map_err(|_| malformed(ARGON2, "invalid parameters"))?;
    Ok((
        hash,
        Argon2Settings {
            algorithm,
            version,
            params,
        },
    ))
}

fn check_argon2_cost(params: &Params) -> Result<(), PasswordError> {
    let memory = u64::from(params.m_cost());
    at_most(ARGON2, "m (memory, KiB)", memory, MAX_ARGON2_MEMORY_KIB)?;
    at_most(
        ARGON2,
        "p (lanes)",
        params.p_cost().into(),
        MAX_ARGON2_LANES,
    )?;
    let work = memory.saturating_mul(params.t_cost().into());
    at_most(ARGON2, "m·t (KiB × passes)", work, MAX_ARGON2_WORK_KIB)
}

fn verify_argon2(password: &[u8], phc: &str) -> Result<bool, PasswordError> {
    let (mut hash, settings) = parse_argon2(phc)?;
    // The verifier falls back to 0x13 when `v=` is absent; pin the version read above.
    hash.version = Some(settings.version.into());
    let argon2 = Argon2::new(settings.algorithm, settings.version, settings.params);
    // password-hash compares the outputs in constant time.
    match argon2.verify_password(password, &hash) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(_) => Err(malformed(ARGON2, "rejected by argon2")),
    }
}

// ---- bcrypt ----------------------------------------------------------------

/// The cost of a well-formed bcrypt string.
fn parse_bcrypt(hash: &str) -> Result<u32, PasswordError> {
    if !["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|prefix| hash.starts_with(prefix))
    {
        return Err(malformed(BCRYPT, "prefix must be $2a$, $2b$ or $2y$"));
    }
    let bytes = hash.as_bytes();
    if bytes.len() != 60 {
        return Err(malformed(BCRYPT, "must be 60 characters"));
    }
    if !bytes[4..6].iter().all(u8::is_ascii_digit) || bytes[6] != b'$' {
        return Err(malformed(BCRYPT, "cost must be two digits"));
    }
    let parts: bcrypt::HashParts = hash
        .parse()
        .map_err(|_| malformed(BCRYPT, "salt or hash is not bcrypt base64"))?;
    let cost = parts.get_cost();
    if !(4..=31).contains(&cost) {
        return Err(malformed(BCRYPT, "cost must be between 04 and 31"));
    }
    Ok(cost)
}

// ---- scrypt and Firebase scrypt ----------------------------------------------

fn check_scrypt_cost(algorithm: &'static str, n: u64, r: u64, p: u64) -> Result<(), PasswordError> {
    at_most(algorithm, "N (CPU cost)", n, 1 << MAX_SCRYPT_LOG_N)?;
    at_most(algorithm, "r (memory cost)", r, MAX_SCRYPT_R)?;
    at_most(algorithm, "p (parallel cost)", p, MAX_SCRYPT_P)?;
    // The three bounds above keep these products far from overflowing.
    at_most(
        algorithm,
        "memory 128·N·r (bytes)",
        128 * n * r,
        MAX_SCRYPT_MEMORY_BYTES,
    )?;
    at_most(algorithm, "work N·r·p", n * r * p, MAX_SCRYPT_WORK)
}

fn check_scrypt_modified_cost(rounds: u64, memory_cost: u64) -> Result<(), PasswordError> {
    at_most(
        SCRYPT_MODIFIED,
        "mem_cost (log2 N)",
        memory_cost,
        MAX_SCRYPT_LOG_N,
    )?;
    check_scrypt_cost(SCRYPT_MODIFIED, 1 << memory_cost, rounds, 1)
}

fn scrypt_derive(
    algorithm: &'static str,
    password: &[u8],
    salt: &[u8],
    log_n: u32,
    r: u32,
    p: u32,
    len: usize,
) -> Result<Vec<u8>, PasswordError> {
    let rejected = || {
        malformed(
            algorithm,
            "parameters rejected by scrypt (N must be below 2^(16·r))",
        )
    };
    let log_n = u8::try_from(log_n).map_err(|_| rejected())?;
    // The `len` of Params only matters to scrypt's PHC strings; the output buffer
    // sets the derived key's length.
    let params = scrypt::Params::new(log_n, r, p, scrypt::Params::RECOMMENDED_LEN)
        .map_err(|_| rejected())?;
    let mut derived = vec![0u8; len];
    scrypt::scrypt(password, salt, &params, &mut derived).map_err(|_| rejected())?;
    Ok(derived)
}

/// Firebase's hash: AES-256-CTR, zero IV, of the signer key under the first 32
/// bytes of scrypt(password, salt ‖ separator, N = 2^mem_cost, r = rounds, p = 1).
fn firebase_scrypt(
    password: &[u8],
    salt: &[u8],
    salt_separator: &[u8],
    signer_key: &[u8],
    rounds: u32,
    memory_cost: u32,
) -> Result<Vec<u8>, PasswordError> {
    let full_salt = [salt, salt_separator].concat();
    let key = scrypt_derive(
        SCRYPT_MODIFIED,
        password,
        &full_salt,
        memory_cost,
        rounds,
        1,
        32,
    )?;
    let mut cipher =
        ctr::Ctr128BE::<aes::Aes256>::new_from_slices(&key, &[0u8; 16]).map_err(internal)?;
    let mut encrypted = signer_key.to_vec();
    cipher.apply_keystream(&mut encrypted);
    Ok(encrypted)
}

/// `n=<N>,r=<r>,p=<p>$<salt hex>$<hash hex>`
fn parse_stored_scrypt(rest: &str) -> Result<StoredHash, PasswordError> {
    let bad = || malformed(SCRYPT, "expected scrypt$n=…,r=…,p=…$<salt hex>$<hash hex>");
    let [params, salt, hash] = split_exact(rest).ok_or_else(bad)?;
    let [n, r, p] = stored_numbers(params, ["n", "r", "p"]).ok_or_else(bad)?;
    Ok(StoredHash::Scrypt {
        salt: stored_hex(salt).ok_or_else(bad)?,
        cost_cpu: n,
        cost_memory: u32::try_from(r).map_err(|_| bad())?,
        cost_parallel: u32::try_from(p).map_err(|_| bad())?,
        hash: stored_hex(hash).ok_or_else(bad)?,
    })
}

/// `rounds=<r>,mem_cost=<m>$<salt>$<separator>$<signer key>$<hash>`
fn parse_stored_scrypt_modified(rest: &str) -> Result<StoredHash, PasswordError> {
    let bad = || {
        malformed(
            SCRYPT_MODIFIED,
            "expected firebase-scrypt$rounds=…,mem_cost=…$<salt>$<separator>$<signer key>$<hash>",
        )
    };
    let [params, salt, separator, signer_key, hash] = split_exact(rest).ok_or_else(bad)?;
    let [rounds, memory_cost] = stored_numbers(params, ["rounds", "mem_cost"]).ok_or_else(bad)?;
    let base64 = |field: &str| STANDARD.decode(field).map_err(|_| bad());
    Ok(StoredHash::ScryptModified {
        salt: base64(salt)?,
        salt_separator: base64(separator)?,
        signer_key: base64(signer_key)?,
        rounds: u32::try_from(rounds).map_err(|_| bad())?,
        memory_cost: u32::try_from(memory_cost).map_err(|_| bad())?,
        hash: base64(hash)?,
    })
}

/// Exactly `N` `$`-separated fields.
fn split_exact<const N: usize>(text: &str) -> Option<[&str; N]> {
    let mut parts = text.split('$');
    let mut out = [""; N];
    for slot in &mut out {
        *slot = parts.next()?;
    }
    parts.next().is_none().then_some(out)
}

/// `k1=v1,k2=v2,…` with exactly these keys in this order and canonical decimals.
fn stored_numbers<const N: usize>(text: &str, keys: [&str; N]) -> Option<[u64; N]> {
    let mut parts = text.split(',');
    let mut out = [0u64; N];
    for (slot, key) in out.iter_mut().zip(keys) {
        let value = parts.next()?.strip_prefix(key)?.strip_prefix('=')?;
        let canonical = !value.is_empty()
            && value.bytes().all(|b| b.is_ascii_digit())
            && (value == "0" || !value.starts_with('0'));
        *slot = if canonical {
            value.parse().ok()?
        } else {
            return None;
        };
    }
    parts.next().is_none().then_some(out)
}

/// Lowercase hex only, so that the text round-trips exactly.
fn stored_hex(text: &str) -> Option<Vec<u8>> {
    text.bytes()
        .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        .then(|| hex::decode(text).ok())
        .flatten()
}

// ---- phpass ----------------------------------------------------------------

/// The log2 iteration count of a well-formed phpass portable hash.
fn parse_phpass(hash: &str) -> Result<u32, PasswordError> {
    if !(hash.starts_with("$P$") || hash.starts_with("$H$")) {
        return Err(malformed(PHPASS, "prefix must be $P$ or $H$"));
    }
    let bytes = hash.as_bytes();
    if bytes.len() != 34 {
        return Err(malformed(PHPASS, "must be 34 characters"));
    }
    if !bytes[3..].iter().all(|c| PHPASS_ITOA64.contains(c)) {
        return Err(malformed(PHPASS, "characters outside the phpass alphabet"));
    }
    let log2 = PHPASS_ITOA64
        .iter()
        .position(|c| *c == bytes[3])
        .and_then(|log2| u32::try_from(log2).ok())
        .filter(|log2| (7..=30).contains(log2))
        .ok_or_else(|| malformed(PHPASS, "iteration count must be 2^7 to 2^30"))?;
    Ok(log2)
}

/// phpass: MD5(salt ‖ password), then 2^log2 rounds of MD5(previous ‖ password);
/// the 16 bytes in phpass's base64 follow the 12-character setting.
fn verify_phpass(password: &[u8], hash: &str) -> Result<bool, PasswordError> {
    let log2 = parse_phpass(hash)?;
    let bytes = hash.as_bytes();
    let (setting, checksum) = bytes.split_at(12);
    let salt = &setting[4..];
    let mut digest = Md5::new()
        .chain_update(salt)
        .chain_update(password)
        .finalize();
    for _ in 0..(1u32 << log2) {
        digest = Md5::new()
            .chain_update(digest)
            .chain_update(password)
            .finalize();
    }
    Ok(phpass_base64(&digest).as_bytes().ct_eq(checksum).into())
}

/// phpass's `encode64`: little-endian groups of three bytes, six bits per character,
/// and a short last group written with one character more than its bytes.
fn phpass_base64(input: &[u8]) -> String {
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for group in input.chunks(3) {
        let value = group
            .iter()
            .enumerate()
            .fold(0u32, |value, (i, byte)| value | u32::from(*byte) << (8 * i));
        for i in 0..=group.len() {
            out.push(char::from(
                PHPASS_ITOA64[((value >> (6 * i)) & 0x3f) as usize],
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Appwrite's e2e suite imports one user per algorithm with the password "appwrite"
    /// (appwrite/appwrite tests/e2e/Services/Users/UsersBase.php).
    const APPWRITE_PASSWORD: &str = "appwrite";

    fn assert_verifies(stored: &StoredHash, right: &str, wrong: &str) {
        assert_eq!(
            verify_password(right, stored),
            Ok(true),
            "{stored:?} with {right:?}"
        );
        assert_eq!(
            verify_password(wrong, stored),
            Ok(false),
            "{stored:?} with {wrong:?}"
        );
    }

    fn assert_round_trips(stored: &StoredHash) {
        let text = stored.to_stored();
        let back = StoredHash::from_stored(&text).expect("stored text reads back");
        assert_eq!(&back, stored);
        assert_eq!(back.to_stored(), text);
    }

    fn assert_malformed(result: Result<StoredHash, PasswordError>) {
        assert!(
            matches!(
                result,
                Err(PasswordError::Malformed { .. } | PasswordError::UnknownFormat)
            ),
            "{result:?}"
        );
    }

    fn assert_cost_too_high<T: fmt::Debug>(result: Result<T, PasswordError>, algorithm: &str) {
        match result {
            Err(PasswordError::CostTooHigh { algorithm: got, .. }) => assert_eq!(got, algorithm),
            other => panic!("expected CostTooHigh for {algorithm}, got {other:?}"),
        }
    }

    // ---- new hashes ----

    #[test]
    fn a_new_hash_is_current_argon2id_and_verifies_only_its_password() {
        let phc = hash_password("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        let stored = StoredHash::from_stored(&phc).unwrap();
        assert_eq!(stored, StoredHash::Argon2(phc.clone()));
        assert!(!stored.needs_rehash());
        assert_verifies(
            &stored,
            "correct horse battery staple",
            "correct horse battery stapler",
        );
        assert_round_trips(&stored);
    }

    #[test]
    fn two_hashes_of_one_password_have_different_salts() {
        assert_ne!(
            hash_password("same").unwrap(),
            hash_password("same").unwrap()
        );
    }

    #[test]
    fn passwords_over_256_bytes_are_refused_before_hashing_or_verifying() {
        let limit = "é".repeat(128); // 256 bytes in 128 characters
        assert!(hash_password(&limit).is_ok());
        let over = format!("{limit}x");
        assert_eq!(hash_password(&over), Err(PasswordError::TooLong));
        let stored = StoredHash::import_md5("144fa7eaa4904e8ee120651997f70dcc").unwrap();
        assert_eq!(verify_password(&over, &stored), Err(PasswordError::TooLong));
    }

    #[test]
    fn the_empty_password_hashes_and_verifies() {
        let stored = StoredHash::Argon2(hash_password("").unwrap());
        assert_verifies(&stored, "", " ");
    }

    // ---- Argon2 ----

    #[test]
    fn imported_argon2_hashes_from_appwrite_and_php_verify() {
        // Appwrite e2e: argon2i and argon2id hashes of "appwrite".
        for phc in [
            "$argon2i$v=19$m=20,t=3,p=2$YXBwd3JpdGU$A/54i238ed09ZR4NwlACU5XnkjNBZU9QeOEuhjLiexI",
            "$argon2id$v=19$m=65536,t=4,p=3$azFVSGhPaXVBYnZMblNRaw$Pzm3TowCIbab0S5GL2id3OhZMexfFvutVSDoZ8D/Z8o",
        ] {
            let stored = StoredHash::import_argon2(phc).unwrap();
            assert_verifies(&stored, APPWRITE_PASSWORD, "Appwrite");
            assert!(stored.needs_rehash());
            assert_round_trips(&stored);
        }
        // php-src ext/standard/tests/password/password_verify_argon2.phpt: "test".
        for phc in [
            "$argon2d$v=19$m=32768,t=2,p=1$YWpxd0VYRW9MLmp6VjFPZw$pWV5IsbBfjEK5c0bHzvAo0FsDNHUyM4p6j8vf2cxzb8",
            "$argon2i$v=19$m=65536,t=3,p=1$OEVjWWs2Z3YvWlNZQ0ZmNw$JKin7ahjmh8JYvMyFcXri0Ss/Uvd3uYpD7MG6C/5Cy0",
        ] {
            let stored = StoredHash::import_argon2(phc).unwrap();
            assert_verifies(&stored, "test", "argon2");
        }
    }

    #[test]
    fn argon2_without_a_version_field_is_read_as_version_16() {
        let params = Params::new(64, 1, 1, Some(32)).unwrap();
        let salt = SaltString::encode_b64(b"saltsaltsalt").unwrap();
        let v16 = Argon2::new(Algorithm::Argon2id, Version::V0x10, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        let unversioned = v16.replace("$v=16", "");
        assert_ne!(unversioned, v16);
        let stored = StoredHash::import_argon2(&unversioned).unwrap();
        assert_verifies(&stored, "pw", "pw2");
        assert!(stored.needs_rehash());
    }

    #[test]
    fn argon2id_with_other_parameters_needs_rehash() {
        let params = Params::new(64, 1, 1, Some(32)).unwrap();
        let salt = SaltString::encode_b64(b"saltsaltsalt").unwrap();
        let phc = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password(b"pw", &salt)
            .unwrap()
            .to_string();
        assert!(StoredHash::import_argon2(&phc).unwrap().needs_rehash());
    }

    #[test]
    fn malformed_argon2_hashes_are_refused() {
        for bad in [
            "",
            "$argon2id",
            "$argon2id$v=19$m=65536,t=4,p=3",
            "$argon2id$v=19$m=65536,t=4,p=3$azFVSGhPaXVBYnZMblNRaw",
            "$argon2x$v=19$m=65536,t=4,p=3$azFVSGhPaXVBYnZMblNRaw$Pzm3TowCIbab0S5GL2id3OhZMexfFvutVSDoZ8D/Z8o",
            "$argon2id$v=18$m=65536,t=4,p=3$azFVSGhPaXVBYnZMblNRaw$Pzm3TowCIbab0S5GL2id3OhZMexfFvutVSDoZ8D/Z8o",
            "$argon2id$v=19$m=65536,t=4$azFVSGhPaXVBYnZMblNRaw$Pzm3TowCIbab0S5GL2id3OhZMexfFvutVSDoZ8D/Z8o",
            "$argon2id$v=19$m=65536,t=4,p=3,x=1$azFVSGhPaXVBYnZMblNRaw$Pzm3TowCIbab0S5GL2id3OhZMexfFvutVSDoZ8D/Z8o",
            "$argon2id$v=19$m=65536,t=4,p=3,keyid=AAAA$azFVSGhPaXVBYnZMblNRaw$Pzm3TowCIbab0S5GL2id3OhZMexfFvutVSDoZ8D/Z8o",
            "$argon2id$v=19$m=65536,t=0,p=3$azFVSGhPaXVBYnZMblNRaw$Pzm3TowCIbab0S5GL2id3OhZMexfFvutVSDoZ8D/Z8o",
            "$argon2id$v=19$m=65536,t=4,p=3$YWJj$Pzm3TowCIbab0S5GL2id3OhZMexfFvutVSDoZ8D/Z8o",
        ] {
            assert_malformed(StoredHash::import_argon2(bad));
        }
    }

    #[test]
    fn argon2_costs_over_the_limits_are_refused() {
        let salt_and_hash = "$azFVSGhPaXVBYnZMblNRaw$Pzm3TowCIbab0S5GL2id3OhZMexfFvutVSDoZ8D/Z8o";
        for params in ["m=524288,t=1,p=1", "m=65536,t=17,p=1", "m=65536,t=1,p=17"] {
            let phc = format!("$argon2id$v=19${params}{salt_and_hash}");
            assert_cost_too_high(StoredHash::import_argon2(&phc), ARGON2);
            // Read back from storage it parses, but still will not be verified.
            let stored = StoredHash::from_stored(&phc).unwrap();
            assert_cost_too_high(verify_password("pw", &stored), ARGON2);
        }
    }

    // ---- bcrypt ----

    #[test]
    fn imported_bcrypt_hashes_verify() {
        // php-src ext/standard/tests/password/password_hash.phpt.
        let stored = StoredHash::import_bcrypt(
            "$2y$07$usesomesillystringfore2uDLvp1Ii2e./U9C8sBjqp8I90dH6hi",
        )
        .unwrap();
        assert_verifies(&stored, "rasmuslerdorf", "rasmuslerdorF");
        assert!(stored.needs_rehash());
        assert_round_trips(&stored);
    }

    #[test]
    fn appwrites_cost_15_bcrypt_hash_verifies() {
        let stored = StoredHash::import_bcrypt(
            "$2a$15$xX/myGbFU.ZSKHSi6EHdBOySTdYm8QxBLXmOPHrYMwV0mHRBBSBOq",
        )
        .unwrap();
        assert_eq!(verify_password(APPWRITE_PASSWORD, &stored), Ok(true));
    }

    #[test]
    fn bcrypt_uses_only_the_first_72_bytes_like_php() {
        let long = "x".repeat(72);
        let hash = bcrypt::hash(&long, 4).unwrap();
        let stored = StoredHash::import_bcrypt(&hash).unwrap();
        assert_eq!(verify_password(&format!("{long}tail"), &stored), Ok(true));
    }

    #[test]
    fn malformed_bcrypt_hashes_are_refused() {
        let good = "$2y$07$usesomesillystringfore2uDLvp1Ii2e./U9C8sBjqp8I90dH6hi";
        for bad in [
            String::new(),
            "$2y$".to_owned(),
            good.replace("$2y$", "$2x$"),
            good.replace("$2y$", "$2c$"),
            good.replace("$07$", "$+7$"),
            good.replace("$07$", "$03$"),
            good.replace("$07$", "$7$$"),
            format!("{good}x"),
            good[..59].to_owned(),
            good.replace('u', "!"),
            good.replace("hi", "hé"),
        ] {
            assert_malformed(StoredHash::import_bcrypt(&bad));
        }
    }

    #[test]
    fn bcrypt_cost_over_16_is_refused() {
        let hash = "$2y$17$usesomesillystringfore2uDLvp1Ii2e./U9C8sBjqp8I90dH6hi";
        assert_cost_too_high(StoredHash::import_bcrypt(hash), BCRYPT);
        let stored = StoredHash::from_stored(hash).unwrap();
        assert_cost_too_high(verify_password("pw", &stored), BCRYPT);
    }

    // ---- scrypt ----

    fn appwrite_scrypt() -> StoredHash {
        // Appwrite e2e: salt "appwrite", N=16384, r=13, p=2, 64 bytes. Also
        // reproduced with Python's hashlib.scrypt (OpenSSL).
        StoredHash::import_scrypt(
            "3fdef49701bc4cfaacd551fe017283513284b4731e6945c263246ef948d3cf63b5d269c31fd697246085111a428245e24a4ddc6b64c687bc60a8910dbafc1d5b",
            "appwrite",
            16384,
            13,
            2,
            64,
        )
        .unwrap()
    }

    #[test]
    fn an_imported_scrypt_hash_verifies_and_round_trips() {
        let stored = appwrite_scrypt();
        assert_verifies(&stored, APPWRITE_PASSWORD, "appwritf");
        assert!(stored.needs_rehash());
        assert_round_trips(&stored);
        assert!(
            stored
                .to_stored()
                .starts_with("scrypt$n=16384,r=13,p=2$6170707772697465$3fdef497")
        );
    }

    #[test]
    fn scrypt_imports_with_bad_parameters_are_refused() {
        let hash = "3fdef49701bc4cfaacd551fe01728351";
        for (n, r, p, len) in [
            (16384, 8, 1, 17),
            (3, 8, 1, 16),
            (1, 8, 1, 16),
            (0, 8, 1, 16),
            (16384, 0, 1, 16),
            (16384, 8, -1, 16),
        ] {
            assert_malformed(StoredHash::import_scrypt(hash, "salt", n, r, p, len));
        }
        assert_malformed(StoredHash::import_scrypt("zz", "salt", 16384, 8, 1, 1));
        assert_malformed(StoredHash::import_scrypt(hash, "", 16384, 8, 1, 16));
        assert_malformed(StoredHash::import_scrypt("abcd", "salt", 16384, 8, 1, 2));
    }

    #[test]
    fn scrypt_costs_over_the_limits_are_refused() {
        let hash = "3fdef49701bc4cfaacd551fe01728351";
        for (n, r, p) in [
            (1 << 21, 1, 1),
            (1 << 14, 33, 1),
            (1 << 14, 8, 17),
            (1 << 20, 8, 1),
            (1 << 17, 8, 8),
        ] {
            assert_cost_too_high(StoredHash::import_scrypt(hash, "salt", n, r, p, 16), SCRYPT);
        }
        let huge =
            StoredHash::from_stored(&format!("scrypt$n=4194304,r=8,p=1$73616c74${hash}")).unwrap();
        assert_cost_too_high(verify_password("pw", &huge), SCRYPT);
    }

    #[test]
    fn scrypt_parameters_scrypt_itself_rejects_are_an_error_not_a_panic() {
        // N must be below 2^(16·r): 2^16 with r=1 is not.
        let stored = StoredHash::Scrypt {
            salt: b"salt".to_vec(),
            cost_cpu: 1 << 16,
            cost_memory: 1,
            cost_parallel: 1,
            hash: vec![0; 16],
        };
        assert_malformed(verify_password("pw", &stored).map(|_| stored.clone()));
    }

    // ---- Firebase scrypt ----

    /// Firebase's published example (github.com/firebase/scrypt README): project
    /// parameters rounds 8, mem_cost 14, and user1@test.com's exported hash and salt.
    fn firebase_readme_example() -> StoredHash {
        StoredHash::import_scrypt_modified(
            "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ==",
            "42xEC+ixf3L2lw==",
            "Bw==",
            "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA==",
            8,
            14,
        )
        .unwrap()
    }

    #[test]
    fn firebases_published_example_verifies() {
        let stored = firebase_readme_example();
        assert_verifies(&stored, "user1password", "user2password");
        assert!(stored.needs_rehash());
        assert_round_trips(&stored);
    }

    #[test]
    fn appwrites_scrypt_modified_example_verifies_with_firebase_defaults() {
        let stored = StoredHash::import_scrypt_modified(
            "UlM7JiXRcQhzAGlaonpSqNSLIz475WMddOgLjej5De9vxTy48K6WtqlEzrRFeK4t0COfMhWCb8wuMHgxOFCHFQ==",
            "UxLMreBr6tYyjQ==",
            "Bw==",
            "XyEKE9RcTDeLEsL/RjwPDBv/RqDl8fb3gpYEOQaPihbxf1ZAtSOHCjuAAa7Q3oHpCYhXSN9tizHgVOwn6krflQ==",
            StoredHash::FIREBASE_DEFAULT_ROUNDS,
            StoredHash::FIREBASE_DEFAULT_MEMORY_COST,
        )
        .unwrap();
        assert_verifies(&stored, APPWRITE_PASSWORD, "appwrite ");
    }

    #[test]
    fn firebase_scrypt_with_other_rounds_and_memory_cost_verifies() {
        // No published vector uses non-default parameters: this one comes from an
        // independent Python implementation (hashlib.scrypt + cryptography's
        // AES-256-CTR), which also reproduces the README example above.
        let stored = StoredHash::import_scrypt_modified(
            "sexDbC42i4OVNDcGS5K30wKG7i19Q5BNkBhUce4xw1RFUC0xzoRLxv+3kxzKuxX4",
            "bmltYnVzLXNhbHQtMDAwMQ",
            "AQI",
            "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v",
            4,
            12,
        )
        .unwrap();
        assert_verifies(&stored, "correct horse", "correct horse ");
        assert_eq!(
            stored.to_stored(),
            "firebase-scrypt$rounds=4,mem_cost=12$bmltYnVzLXNhbHQtMDAwMQ==$AQI=$AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4v$sexDbC42i4OVNDcGS5K30wKG7i19Q5BNkBhUce4xw1RFUC0xzoRLxv+3kxzKuxX4"
        );
        assert_round_trips(&stored);
    }

    #[test]
    fn malformed_firebase_scrypt_imports_are_refused() {
        let hash = "lSrfV15cpx95/sZS2W9c9Kp6i/LVgQNDNC/qzrCnh1SAyZvqmZqAjTdn3aoItz+VHjoZilo78198JAdRuid5lQ==";
        let key = "jxspr8Ki0RYycVU8zykbdLGjFQ3McFUH0uiiTvC8pVMXAn210wjLNmdZJzxUECKbm0QsEmYUSDzZvpjeJ9WmXA==";
        let import = |hash, salt, key, rounds, mem| {
            StoredHash::import_scrypt_modified(hash, salt, "Bw==", key, rounds, mem)
        };
        assert_malformed(import("not base64!", "42xEC+ixf3L2lw==", key, 8, 14));
        assert_malformed(import(hash, "", key, 8, 14));
        assert_malformed(import(hash, "42xEC+ixf3L2lw==", "", 8, 14));
        assert_malformed(import("AAAA", "42xEC+ixf3L2lw==", key, 8, 14));
        assert_malformed(import(hash, "42xEC+ixf3L2lw==", key, 0, 14));
        assert_malformed(import(hash, "42xEC+ixf3L2lw==", key, 8, -14));
        assert_cost_too_high(
            import(hash, "42xEC+ixf3L2lw==", key, 8, 21),
            SCRYPT_MODIFIED,
        );
        assert_cost_too_high(
            import(hash, "42xEC+ixf3L2lw==", key, 33, 14),
            SCRYPT_MODIFIED,
        );
        assert_cost_too_high(
            import(hash, "42xEC+ixf3L2lw==", key, 8, 19),
            SCRYPT_MODIFIED,
        );
    }

    // ---- SHA and MD5 ----

    #[test]
    fn imported_sha_hashes_of_every_version_verify() {
        // Digests of "appwrite" from Python's hashlib (OpenSSL) and, for sha512/224 and
        // sha512/256, the `cryptography` package; the sha512 one is also Appwrite's e2e vector.
        let vectors = [
            (ShaVariant::Sha1, "31c315b0262695ce861bc17c63d2362684d5724c"),
            (
                ShaVariant::Sha224,
                "fd66925d38680d7a9a075ab17223d00a60c4c532a81ba3591f9167a4",
            ),
            (
                ShaVariant::Sha256,
                "ece375199f9118cf29e19e171742f668b6b13367dc1797d11da1c74795e758cc",
            ),
            (
                ShaVariant::Sha384,
                "ed6436743c51a62d3454de8559beb59d923fbb730ae6028043112ecc8520cee566c539b98383c12259a133043c1e4495",
            ),
            (
                ShaVariant::Sha512_224,
                "746d850d8f4bb904a18b936d4693edde4b7eb886ae1527d2be410464",
            ),
            (
                ShaVariant::Sha512_256,
                "ffc8b9b6a88b33dd4fddc10d49c4bdd9742689b0cf8bbd9097d4d870f824a3fd",
            ),
            (
                ShaVariant::Sha512,
                "4243da0a694e8a2f727c8060fe0507c8fa01ca68146c76d2c190805b638c20c6bf6ba04e21f11ae138785d0bff63c416e6f87badbffad37f6dee50094cc38c70",
            ),
            (
                ShaVariant::Sha3_224,
                "abb4739db875dd10d24c0ac3d675f847dbab1d1a9c9b613fffdbabe1",
            ),
            (
                ShaVariant::Sha3_256,
                "867a758eea6f62ccb37cc3f8945137def93d0638259ff4dcfc0f21629d2666fb",
            ),
            (
                ShaVariant::Sha3_384,
                "ed16007b12ad357e455ec14cf692bf1add54809948a3d4d9f07cb8ebe09cd8ac2e5bf8aa8a558af4a5a5ed7890cef5ab",
            ),
            (
                ShaVariant::Sha3_512,
                "a721f80a3f2d1c08137a2ffaad4ac23298f01916e3314111adcba471b21354145e4c6fc1cc6d1974608e2e5a96a20df4fba9ac0d52660f3fdc6e2124d5958913",
            ),
        ];
        assert_eq!(vectors.len(), ShaVariant::ALL.len());
        for (variant, hex_digest) in vectors {
            let stored = StoredHash::import_sha(hex_digest, variant).unwrap();
            assert_verifies(&stored, APPWRITE_PASSWORD, "appwritE");
            assert!(stored.needs_rehash());
            assert_round_trips(&stored);
            assert_eq!(
                stored.to_stored(),
                format!("{}${hex_digest}", variant.name())
            );
            // Uppercase hex is fine on import, and stored lowercase.
            let upper = StoredHash::import_sha(&hex_digest.to_uppercase(), variant).unwrap();
            assert_eq!(upper, stored);
        }
    }

    #[test]
    fn sha_version_names_are_appwrites_and_default_to_sha3_512() {
        for variant in ShaVariant::ALL {
            assert_eq!(ShaVariant::from_name(variant.name()), Some(variant));
        }
        assert_eq!(ShaVariant::from_name("SHA256"), None);
        assert_eq!(ShaVariant::from_name("sha512-224"), None);
        assert_eq!(ShaVariant::default(), ShaVariant::Sha3_512);
    }

    #[test]
    fn sha_digests_of_the_wrong_length_are_refused() {
        assert_malformed(StoredHash::import_sha(
            "31c315b0262695ce861bc17c63d2362684d5724c",
            ShaVariant::Sha256,
        ));
        assert_malformed(StoredHash::import_sha("not hex", ShaVariant::Sha1));
        let built = StoredHash::Sha {
            variant: ShaVariant::Sha512,
            hash: vec![0; 3],
        };
        assert_malformed(verify_password("pw", &built).map(|_| built.clone()));
    }

    #[test]
    fn imported_md5_hashes_verify() {
        let stored = StoredHash::import_md5("144fa7eaa4904e8ee120651997f70dcc").unwrap();
        assert_verifies(&stored, APPWRITE_PASSWORD, "appwrite\n");
        assert!(stored.needs_rehash());
        assert_round_trips(&stored);
        assert_eq!(stored.to_stored(), "md5$144fa7eaa4904e8ee120651997f70dcc");
        assert_malformed(StoredHash::import_md5("144fa7eaa4904e8ee120651997f70d"));
        assert_malformed(StoredHash::import_md5("144fa7eaa4904e8ee120651997f70dcg"));
    }

    // ---- phpass ----

    #[test]
    fn phpass_hashes_from_phpass_john_the_ripper_and_appwrite_verify() {
        let vectors = [
            // openwall phpass test.php: "A correct portable hash for 'test12345'".
            ("test12345", "$P$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0"),
            // John the Ripper 1.7.9 test vectors, as passlib's test suite carries them.
            ("test1", "$H$9aaaaaSXBjgypwqm.JsMssPLiS8YQ00"),
            ("123456", "$H$9PE8jEklgZhgLmZl5.HYJAzfGCQtzi1"),
            ("thisisalongertestPW", "$P$912345678LIjjb6PhecupozNBmDndU0"),
            ("JohnRipper", "$P$612345678si5M0DDyPpmRCmcltU/YW/"),
            ("JohnRipper", "$P$B12345678L6Lpt4BxNotVIMILOa9u81"),
            // passlib: the empty password, and 2^17 iterations.
            ("", "$P$7JaFQsPzJSuenezefD/3jHgt5hVfNH0"),
            ("compL3X!", "$P$FiS0N5L672xzQx1rt1vgdJQRYKnQM9/"),
            // Appwrite e2e.
            (APPWRITE_PASSWORD, "$P$Br387rwferoKN7uwHZqNMu98q3U8RO."),
        ];
        for (password, hash) in vectors {
            let stored = StoredHash::import_phpass(hash).unwrap();
            assert_verifies(&stored, password, "wrong");
            assert!(stored.needs_rehash());
            assert_round_trips(&stored);
        }
    }

    #[test]
    fn phpass_imports_that_are_bcrypt_are_kept_as_bcrypt() {
        let hash = "$2y$07$usesomesillystringfore2uDLvp1Ii2e./U9C8sBjqp8I90dH6hi";
        let stored = StoredHash::import_phpass(hash).unwrap();
        assert_eq!(stored, StoredHash::Bcrypt(hash.to_owned()));
    }

    #[test]
    fn malformed_phpass_hashes_are_refused() {
        for bad in [
            "",
            "$P$",
            "$Q$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0",
            "$P$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r!L0", // passlib's malformed example
            "$P$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r.L",
            "$P$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0.",
            "$P$4IQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0", // 2^6 iterations, below phpass's 2^7
            "$P$zIQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0", // 2^63
            "$P$9IQRaTwmfeRo7ud9Fh4E2PdI0S3r.Lé",
        ] {
            assert_malformed(StoredHash::import_phpass(bad));
        }
    }

    #[test]
    fn phpass_over_2_to_the_20_iterations_is_refused() {
        // 'J' is 2^21 iterations.
        let hash = "$P$JIQRaTwmfeRo7ud9Fh4E2PdI0S3r.L0";
        assert_cost_too_high(StoredHash::import_phpass(hash), PHPASS);
        let stored = StoredHash::from_stored(hash).unwrap();
        assert_cost_too_high(verify_password("pw", &stored), PHPASS);
    }

    #[test]
    fn phpass_base64_matches_the_reference_for_short_groups() {
        // encode64 writes one character more than the bytes of a short group.
        assert_eq!(phpass_base64(&[0]), "..");
        assert_eq!(phpass_base64(&[0xff]), "z1");
        assert_eq!(phpass_base64(&[0xff, 0xff]), "zzD");
        assert_eq!(phpass_base64(&[0xff, 0xff, 0xff]), "zzzz");
        assert_eq!(phpass_base64(&[0; 16]).len(), 22);
    }

    // ---- the stored form ----

    #[test]
    fn debug_output_shows_the_algorithm_and_no_hash_material() {
        let stored = StoredHash::import_md5("144fa7eaa4904e8ee120651997f70dcc").unwrap();
        assert_eq!(format!("{stored:?}"), "StoredHash(\"md5\")");
    }

    #[test]
    fn non_canonical_stored_text_is_refused() {
        for bad in [
            "",
            "$",
            "plain",
            "argon2id$v=19",
            "sha256",
            "sha256$",
            "SHA256$ece375199f9118cf29e19e171742f668b6b13367dc1797d11da1c74795e758cc",
            "sha256$ECE375199F9118CF29E19E171742F668B6B13367DC1797D11DA1C74795E758CC",
            "sha256$ece375199f9118cf29e19e171742f668b6b13367dc1797d11da1c74795e758cc$",
            "md5$144fa7eaa4904e8ee120651997f70dc",
            "md5$ 144fa7eaa4904e8ee120651997f70dcc",
            "scrypt$n=16384,r=8,p=1$73616c74",
            "scrypt$n=016384,r=8,p=1$73616c74$3fdef49701bc4cfaacd551fe01728351",
            "scrypt$n=+16384,r=8,p=1$73616c74$3fdef49701bc4cfaacd551fe01728351",
            "scrypt$r=8,n=16384,p=1$73616c74$3fdef49701bc4cfaacd551fe01728351",
            "scrypt$n=16384,r=8,p=1,x=1$73616c74$3fdef49701bc4cfaacd551fe01728351",
            "scrypt$n=16384,r=8,p=1$73616C74$3fdef49701bc4cfaacd551fe01728351",
            "scrypt$n=16384,r=8,p=1$$3fdef49701bc4cfaacd551fe01728351",
            "scrypt$n=16384,r=4294967296,p=1$73616c74$3fdef49701bc4cfaacd551fe01728351",
            "scrypt$n=99999999999999999999,r=8,p=1$73616c74$3fdef49701bc4cfaacd551fe01728351",
            "firebase-scrypt$rounds=8,mem_cost=14$42xEC+ixf3L2lw$Bw==$AAAA$AAAA",
            "firebase-scrypt$rounds=8,mem_cost=14$42xEC+ixf3L2lw==$Bw==$AAAA",
            "firebase-scrypt$rounds=8,mem_cost=14$42xEC+ixf3L2lx==$Bw==$AAAA$AAAA",
            "firebase-scrypt$rounds=8,mem_cost=14$42xEC+ixf3L2lw==$Bw==$AAAA$AAAAAAAA",
            "firebase-scrypt$mem_cost=14,rounds=8$42xEC+ixf3L2lw==$Bw==$AAAA$AAAA",
            "firebase-scrypt$rounds=8,mem_cost=64$42xEC+ixf3L2lw==$Bw==$AAAA$AAAA",
        ] {
            assert_malformed(StoredHash::from_stored(bad));
        }
    }

    /// Deterministic xorshift, so a failing input can be reproduced.
    fn xorshift(state: &mut u64) -> u64 {
        *state ^= *state << 13;
        *state ^= *state >> 7;
        *state ^= *state << 17;
        *state
    }

    fn is_cheap(stored: &StoredHash) -> bool {
        match stored {
            StoredHash::Argon2(phc) => {
                parse_argon2(phc).is_ok_and(|(_, s)| s.params.m_cost() * s.params.t_cost() <= 4096)
            }
            StoredHash::Bcrypt(hash) => parse_bcrypt(hash).is_ok_and(|cost| cost <= 6),
            StoredHash::Phpass { hash } => parse_phpass(hash).is_ok_and(|log2| log2 <= 12),
            StoredHash::Scrypt {
                cost_cpu,
                cost_memory,
                cost_parallel,
                ..
            } => cost_cpu * u64::from(*cost_memory) * u64::from(*cost_parallel) <= 1 << 16,
            StoredHash::ScryptModified {
                rounds,
                memory_cost,
                ..
            } => *rounds <= 8 && *memory_cost <= 10,
            StoredHash::Sha { .. } | StoredHash::Md5 { .. } => true,
        }
    }

    #[test]
    fn mutated_stored_text_never_panics_and_what_parses_round_trips() {
        let cheap_argon2 = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw", &SaltString::encode_b64(b"saltsalt").unwrap())
        .unwrap()
        .to_string();
        let seeds = [
            cheap_argon2,
            "$2y$04$usesomesillystringfore2uDLvp1Ii2e./U9C8sBjqp8I90dH6hi".to_owned(),
            "$P$7JaFQsPzJSuenezefD/3jHgt5hVfNH0".to_owned(),
            "scrypt$n=16,r=1,p=1$73616c74$3fdef49701bc4cfaacd551fe01728351".to_owned(),
            "firebase-scrypt$rounds=1,mem_cost=4$42xEC+ixf3L2lw==$Bw==$AAECAw==$AAECAw=="
                .to_owned(),
            "sha1$31c315b0262695ce861bc17c63d2362684d5724c".to_owned(),
            "md5$144fa7eaa4904e8ee120651997f70dcc".to_owned(),
        ];
        let alphabet: Vec<char> = "$=,./+0129afzAFZé\0-".chars().collect();
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for seed in &seeds {
            let chars: Vec<char> = seed.chars().collect();
            let mut candidates = Vec::new();
            for cut in 0..chars.len() {
                candidates.push(chars[..cut].iter().collect::<String>());
            }
            for _ in 0..400 {
                let mut mutated = chars.clone();
                for _ in 0..=(xorshift(&mut state) % 3) {
                    let at = (xorshift(&mut state) as usize) % mutated.len();
                    let with = alphabet[(xorshift(&mut state) as usize) % alphabet.len()];
                    match xorshift(&mut state) % 3 {
                        0 => mutated[at] = with,
                        1 => mutated.insert(at, with),
                        _ => {
                            mutated.remove(at);
                        }
                    }
                    if mutated.is_empty() {
                        mutated.push(with);
                    }
                }
                candidates.push(mutated.into_iter().collect());
            }
            for candidate in candidates {
                if let Ok(stored) = StoredHash::from_stored(&candidate) {
                    assert_eq!(stored.to_stored(), candidate, "round trip of {candidate:?}");
                    // Well-shaped but possibly slow (a mutated cost); verify the cheap ones.
                    if is_cheap(&stored) {
                        let _ = verify_password("pw", &stored);
                    }
                }
            }
        }
    }
}
