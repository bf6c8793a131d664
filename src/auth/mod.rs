//! Who is calling and what they may do: API key and session secrets, scopes,
//! passwords, the permission engine, and the [`Caller`] every resolver receives,
//! whose checks hand back grants that the privileged service functions take as
//! arguments.

pub mod access;
pub mod caller;
pub mod delegation;
pub mod jwt;
pub mod passwords;
pub mod permissions;
pub mod principal;
pub mod rate_limit;
pub mod scopes;
pub mod sealing;
pub mod secrets;
pub mod session_cache;
pub mod totp;

pub use access::{Access, Container, Reach, ScopedAccess};
pub use caller::{Actor, AdminGrant, ApiKeyGrant, Caller, Credential, Grant, console_key_id};
pub use delegation::Delegation;
