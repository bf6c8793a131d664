//! Finds the project a request addresses and the credential it presents:
//! `X-Nimbus-Project` (default `default`); then an API key in `X-Nimbus-Key`, or a
//! session secret (or a JWT from `createJWT`) in `Authorization: Bearer …`, or a
//! console administrator's session (the `nimbus_console` cookie with its CSRF token
//! in `X-Nimbus-CSRF`, acting with the server-wide `admin` scope), or the project's
//! session cookie. The console cookie without its token counts for nothing: the
//! browser sends it whichever page asks. A long-lived connection re-checks what it
//! presented with [`recheck`], past every cache, when it hears the credential may
//! have changed.

use std::sync::Arc;

use axum::http::header::{AUTHORIZATION, AsHeaderName};
use axum::http::{HeaderMap, HeaderName};

use crate::AppState;
use crate::auth::{ApiKeyGrant, Caller, Credential};
use crate::error::{AppError, AppResult, codes};
use crate::services::LoadedProject;
use crate::services::account::cookies::session_cookie_name;
use crate::services::keys::service::authenticate;
use crate::services::projects::DEFAULT_PROJECT;
use crate::services::projects::Project;
use crate::services::users::service::{resolve_jwt, resolve_session, verify_session};

pub const PROJECT_HEADER: &str = "x-nimbus-project";
pub const KEY_HEADER: &str = "x-nimbus-key";
/// The header that carries a console session's CSRF token.
pub const CSRF_HEADER: &str = "x-nimbus-csrf";
/// The names above, parsed once: a name given as text is parsed again at every
/// lookup.
pub const PROJECT: HeaderName = HeaderName::from_static(PROJECT_HEADER);
pub const KEY: HeaderName = HeaderName::from_static(KEY_HEADER);
pub const CSRF: HeaderName = HeaderName::from_static(CSRF_HEADER);
/// The cookie that holds a console administrator's session.
pub const CONSOLE_COOKIE: &str = "nimbus_console";

/// A console session presented: the cookie's secret and, when sent, the CSRF token
/// that proves the page holding it is the console.
#[derive(Clone, Default)]
pub struct ConsoleProof {
    pub secret: String,
    pub csrf: Option<String>,
}

impl std::fmt::Debug for ConsoleProof {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ConsoleProof(..)")
    }
}

/// The credentials a request presents.
#[derive(Debug, Default, Clone)]
pub struct Presented {
    pub project: Option<String>,
    pub key: Option<String>,
    pub session: Option<String>,
    /// Whether `session` is the session cookie: sent by the browser on its own,
    /// whichever page asks, so not proof that the page is the project's.
    pub session_from_cookie: bool,
    /// A console session, counted only with its CSRF token.
    pub console: Option<ConsoleProof>,
}

impl Presented {
    /// Reads the headers of an HTTP request (or a WebSocket upgrade).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        Self::read(headers, header(headers, PROJECT).map(str::to_string))
    }

    /// Reads the headers of a request that names its project elsewhere (a binary
    /// endpoint's `?project=`): the session cookie is that project's.
    pub fn for_project(headers: &HeaderMap, project: &str) -> Self {
        Self::read(headers, Some(project.to_string()))
    }

    fn read(headers: &HeaderMap, project: Option<String>) -> Self {
        let bearer = header(headers, AUTHORIZATION)
            .and_then(|value| {
                value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
            })
            .map(|token| token.trim().to_string());
        // The cookie's name is made only when there are cookies to look through.
        let cookie = headers
            .contains_key(axum::http::header::COOKIE)
            .then(|| {
                let name = session_cookie_name(project.as_deref().unwrap_or(DEFAULT_PROJECT));
                cookie(headers, &name)
            })
            .flatten();
        let console = self::cookie(headers, CONSOLE_COOKIE).map(|secret| ConsoleProof {
            secret,
            csrf: header(headers, CSRF).map(str::to_string),
        });
        Presented {
            project,
            key: header(headers, KEY).map(str::to_string),
            session_from_cookie: bearer.is_none() && cookie.is_some(),
            session: bearer.or(cookie),
            console,
        }
    }
}

/// The value of the cookie `name`, when the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(cookie, _)| *cookie == name)
        .map(|(_, value)| value.to_string())
        .filter(|value| !value.is_empty())
}

/// Whether a request's `Origin` is the server's own page: same host and port as the
/// request's `Host`, or the origin of `NIMBUS_PUBLIC_URL` (behind a proxy that
/// rewrites `Host`).
pub fn from_own_page(config: &crate::config::Config, headers: &HeaderMap) -> bool {
    let Some(origin) = header(headers, "origin") else {
        return false;
    };
    let public = config
        .public_url
        .as_deref()
        .and_then(|url| url::Url::parse(url).ok());
    same_origin(origin, header(headers, "host"))
        || public.is_some_and(|public| {
            url::Url::parse(origin).is_ok_and(|origin| origin.origin() == public.origin())
        })
}

/// Whether a browser page at `origin` (an `Origin` header) is the server's own:
/// same host and port as the request's `Host`.
pub fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Ok(parsed) = url::Url::parse(origin) else {
        return false;
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return false;
    }
    let Some(origin_host) = parsed.host_str() else {
        return false;
    };
    let authority = match parsed.port() {
        Some(port) => format!("{origin_host}:{port}"),
        None => origin_host.to_string(),
    };
    host.is_some_and(|host| host.eq_ignore_ascii_case(&authority))
}

/// The caller of a request and the project it addresses, with its schema.
pub struct Addressed {
    pub caller: Caller,
    pub loaded: Arc<LoadedProject>,
    /// When the credential stops working (milliseconds since the epoch): the
    /// earliest of the session's, the JWT's and the key's expiry; `None`: never.
    pub expires_at: Option<i64>,
}

/// The value of a header when it is present and readable.
pub fn header(headers: &HeaderMap, name: impl AsHeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Resolves the addressed project and the caller. A key wins over a session.
pub async fn resolve(state: &AppState, presented: &Presented) -> AppResult<Addressed> {
    resolve_with(state, presented, Sessions::Cached).await
}

/// Resolves again what a long-lived connection presented, reading sessions from the
/// database rather than the cache (which may not have heard of a change yet).
pub async fn recheck(state: &AppState, presented: &Presented) -> AppResult<Addressed> {
    resolve_with(state, presented, Sessions::Stored).await
}

/// Where a session secret is looked up.
#[derive(Clone, Copy)]
enum Sessions {
    Cached,
    Stored,
}

async fn resolve_with(
    state: &AppState,
    presented: &Presented,
    sessions: Sessions,
) -> AppResult<Addressed> {
    let checked_at = state.sessions.credential_changes();
    let project = presented.project.as_deref();
    check_project_id(project)?;
    let project_id = project.unwrap_or(DEFAULT_PROJECT);
    let loaded = state.schemas.get(state, project_id).await?;
    let bearer = presented
        .session
        .as_ref()
        .filter(|_| !presented.session_from_cookie);
    if presented.key.is_none()
        && bearer.is_none()
        && let Some(proof) = &presented.console
    {
        match Box::pin(console(state, proof, &loaded.project.id)).await? {
            Some((grant, expires_at)) => {
                return Ok(Addressed {
                    caller: Caller {
                        project: loaded.project.clone(),
                        credential: Credential::Key(Box::new(grant)),
                        checked_at,
                    },
                    loaded,
                    expires_at: Some(expires_at),
                });
            }
            // A connection that was let in with the console session loses it.
            None if matches!(sessions, Sessions::Stored) => return Err(AppError::InvalidSession),
            // Without its token, or ended: as if not sent.
            None => {}
        }
    }
    // Each credential's lookup is boxed: an anonymous request (and the future of
    // every request, which holds this one) need not carry their states inline.
    let (credential, expires_at) = match (&presented.key, &presented.session) {
        (Some(secret), _) => {
            let key = Box::pin(authenticate(state, &loaded.project.id, secret)).await?;
            let expires_at = key.expires_at;
            (Credential::Key(Box::new(key)), expires_at)
        }
        // Session secrets start `ns_`; anything else with dots is a JWT.
        (None, Some(token)) if !token.starts_with("ns_") && token.contains('.') => {
            let (session, jwt_expires_at) =
                Box::pin(resolve_jwt(state, &loaded.project.id, token)).await?;
            let expires_at = session.session.expires_at.min(jwt_expires_at);
            (Credential::Session(session), Some(expires_at))
        }
        (None, Some(secret)) => {
            let session = match sessions {
                Sessions::Cached => {
                    Box::pin(resolve_session(state, &loaded.project.id, secret)).await?
                }
                Sessions::Stored => {
                    Box::pin(verify_session(state, &loaded.project.id, secret)).await?
                }
            };
            let expires_at = session.session.expires_at;
            (Credential::Session(session), Some(expires_at))
        }
        (None, None) => (Credential::Anonymous, None),
    };
    Ok(Addressed {
        caller: Caller {
            project: loaded.project.clone(),
            credential,
            checked_at,
        },
        loaded,
        expires_at,
    })
}

/// The admin grant of a live console session proven by its CSRF token, in
/// `project_id`, and when the session ends unless used; `None` without the token
/// or for a session that ended.
async fn console(
    state: &AppState,
    proof: &ConsoleProof,
    project_id: &str,
) -> AppResult<Option<(ApiKeyGrant, i64)>> {
    let Some(csrf) = &proof.csrf else {
        return Ok(None);
    };
    let session = crate::services::admins::service::with_csrf(state, &proof.secret, csrf).await?;
    Ok(session.map(|session| {
        let grant =
            ApiKeyGrant::console(project_id, &session.admin.email, Some(session.expires_at));
        (grant, session.expires_at)
    }))
}

/// Whether a browser page at `origin` (an `Origin` header) is one of the project's
/// own: the server's own origin (`host`, the request's `Host` header), or a host
/// the project allows (`redirectHosts`, the hosts of its web apps).
pub fn origin_allowed(origin: &str, host: Option<&str>, project: &Project) -> bool {
    let Ok(parsed) = url::Url::parse(origin) else {
        return false;
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return false;
    }
    let Some(origin_host) = parsed.host_str().map(str::to_ascii_lowercase) else {
        return false;
    };
    let origin_authority = match parsed.port() {
        Some(port) => format!("{origin_host}:{port}"),
        None => origin_host.clone(),
    };
    host.is_some_and(|host| host.eq_ignore_ascii_case(&origin_authority))
        || project.auth.redirect_hosts.contains(&origin_host)
}

/// The project a request addresses, without looking at its credential: for
/// answers that do not depend on who asks.
pub async fn project(state: &AppState, presented: &Presented) -> AppResult<Arc<LoadedProject>> {
    let project = presented.project.as_deref();
    check_project_id(project)?;
    state
        .schemas
        .get(state, project.unwrap_or(DEFAULT_PROJECT))
        .await
}

/// Resolves from the request headers.
pub async fn from_headers(state: &AppState, headers: &HeaderMap) -> AppResult<Addressed> {
    resolve(state, &Presented::from_headers(headers)).await
}

/// Rejects a malformed project id early with `INVALID_ID` rather than "not found".
fn check_project_id(project: Option<&str>) -> AppResult<()> {
    match project {
        Some(id) => crate::db::ids::validate("project", id).map_err(|_| AppError::Invalid {
            code: codes::INVALID_ID,
            field: "X-Nimbus-Project".into(),
            reason: "a project id has 1 to 36 characters of a-z, A-Z, 0-9, '.', '_' and '-'".into(),
        }),
        None => Ok(()),
    }
}
