//! Console administrators: server-wide accounts (not of any project) that sign in
//! to the console with email, password and an optional TOTP second factor, and the
//! console sessions they hold. A live console session, presented with its CSRF
//! token, acts with the server-wide `admin` scope (`http::identity` resolves it).
//! This service adds nothing to a project's schema: administrators are managed
//! with `nimbus admin …` and sign in at `/console/api/session`.

pub mod service;
pub mod store;

/// A console administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admin {
    pub id: String,
    /// Lowercased.
    pub email: String,
    /// Whether signing in needs a TOTP code.
    pub totp: bool,
    pub created_at: i64,
}

/// A live console session, as the console sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    pub id: String,
    pub admin: Admin,
    /// The token the console sends as `X-Nimbus-CSRF` with the cookie.
    pub csrf: String,
    /// When the session ends if unused meanwhile (milliseconds since the epoch):
    /// the earlier of its idle and its absolute end.
    pub expires_at: i64,
}
