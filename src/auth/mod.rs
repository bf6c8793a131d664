//! Who is calling and what they may do: API key secrets and scopes, and the
//! [`Caller`] every resolver receives, whose checks hand back grants that the
//! privileged service functions take as arguments.

pub mod caller;
pub mod scopes;
pub mod secrets;

pub use caller::{AdminGrant, ApiKeyGrant, Caller, Credential, ScopeGrant};
