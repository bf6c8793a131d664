//! Account: the signed-in user acting on themselves — sign-up, sign-in (email and
//! password, anonymous), their sessions, profile, password and preferences. Browsers
//! get the session as an HttpOnly cookie; apps send its secret as
//! `Authorization: Bearer`.

pub mod cookies;
mod email_schema;
pub mod mfa;
mod mfa_schema;
pub mod oauth2;
pub mod oauth2_schema;
pub mod schema;
pub mod service;

pub use schema::register;
