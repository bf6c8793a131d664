//! The session cookie a browser holds for a project: its name, and the
//! `Set-Cookie` values that hand it out and take it back. Sign-in sets it, the HTTP
//! layer reads it.

use crate::services::users::Session;

/// The name of the session cookie of a project.
pub fn session_cookie_name(project_id: &str) -> String {
    format!("{SESSION_COOKIE_PREFIX}{project_id}")
}

/// What every project's session cookie's name begins with.
pub const SESSION_COOKIE_PREFIX: &str = "nimbus_session_";

/// The `Set-Cookie` value that hands a browser its session: HttpOnly, SameSite=Lax
/// (sent on top-level navigations back from an OAuth2 provider, not on cross-site
/// requests), `Secure` behind TLS.
pub fn session_cookie(session: &Session, secret: &str, secure: bool) -> String {
    let max_age = ((session.expires_at - session.created_at) / 1000).max(0);
    format!(
        "{}={secret}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        session_cookie_name(&session.project_id),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that removes a project's session cookie.
pub fn cleared_session_cookie(project_id: &str) -> String {
    format!(
        "{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax",
        session_cookie_name(project_id)
    )
}
