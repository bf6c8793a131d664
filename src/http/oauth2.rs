//! The browser side of OAuth2 sign-in: `GET /v1/account/oauth2/{provider}` sends the
//! browser to the provider; `GET /v1/account/oauth2/callback/{provider}/{project}`
//! takes it back, signs the user in and redirects to the app's `success` URL (with
//! the session cookie, or with a one-time `userId` + `secret` in token mode), or to
//! its `failure` URL with `error=<CODE>`.
//!
//! The callback URL given to providers is built from `NIMBUS_PUBLIC_URL` only, never
//! from the request's `Host` header (which a client chooses), and OAuth2 refuses to
//! start without it. The start hands the browser a nonce cookie that the callback
//! requires, so only the browser that started a sign-in can finish it.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::AppState;
use crate::error::{AppError, codes};
use crate::http::graphql::plain_error;
use crate::services::account::cookies::session_cookie;
use crate::services::account::oauth2::{self, Callback, Failed, Finished, Start};
use crate::services::projects::DEFAULT_PROJECT;

#[derive(Debug, Deserialize)]
pub struct StartQuery {
    project: Option<String>,
    success: Option<String>,
    failure: Option<String>,
    /// `session` (default): set the session cookie; `token`: hand over a one-time
    /// secret for `createSession`, for apps whose cookies live on another domain.
    mode: Option<String>,
    /// Space-separated scopes replacing the provider's configured ones.
    scopes: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

fn error_page(err: &AppError) -> Response {
    plain_error(&err.code(), &err.message())
}

fn redirect(location: &str) -> Response {
    match HeaderValue::from_str(location) {
        Ok(value) => (StatusCode::FOUND, [(header::LOCATION, value)]).into_response(),
        Err(_) => error_page(&AppError::Internal(anyhow::anyhow!(
            "redirect URL is not a valid header value"
        ))),
    }
}

/// The failure URL with `error` and `message` added.
fn redirect_failure(failed: Failed) -> Response {
    let Ok(mut url) = url::Url::parse(&failed.failure_url) else {
        return error_page(&failed.error);
    };
    url.query_pairs_mut()
        .append_pair("error", &failed.error.code())
        .append_pair("message", &failed.error.message());
    if let AppError::Db(_) | AppError::Internal(_) = failed.error {
        // Logs the cause; what the browser sees stays generic.
        let _ = failed.error.to_graphql();
    }
    redirect(url.as_str())
}

/// Where browsers reach this server: `NIMBUS_PUBLIC_URL`, an absolute http(s) URL.
fn public_base(state: &AppState) -> Result<String, AppError> {
    let missing = |reason: &str| AppError::Invalid {
        code: codes::PUBLIC_URL_NOT_CONFIGURED,
        field: "NIMBUS_PUBLIC_URL".into(),
        reason: format!("OAuth2 sign-in needs the server's public URL: {reason}"),
    };
    let url = state
        .config
        .public_url
        .as_deref()
        .ok_or_else(|| missing("set NIMBUS_PUBLIC_URL (e.g. https://api.example.com)"))?;
    match url::Url::parse(url) {
        Ok(parsed) if matches!(parsed.scheme(), "http" | "https") && parsed.has_host() => {
            Ok(url.trim_end_matches('/').to_string())
        }
        _ => Err(missing("NIMBUS_PUBLIC_URL is not an absolute http(s) URL")),
    }
}

/// The cookie holding a browser's sign-in nonce for `project`.
fn nonce_cookie_name(project: &str) -> String {
    format!("nimbus_oauth2_{project}")
}

const CALLBACK_PATH: &str = "/v1/account/oauth2/callback/";

/// The nonce cookie: only for the callback path, only for ten minutes, out of
/// scripts' reach, and sent on the top-level navigation back from the provider
/// (Lax) but not on other sites' requests.
fn nonce_cookie(state: &AppState, project: &str, nonce: &str, max_age: u32) -> String {
    format!(
        "{}={nonce}; Path={CALLBACK_PATH}; Max-Age={max_age}; HttpOnly; SameSite=Lax{}",
        nonce_cookie_name(project),
        if state.config.secure_cookies() {
            "; Secure"
        } else {
            ""
        }
    )
}

/// The nonce cookie the browser presents for `project`.
fn presented_nonce(headers: &HeaderMap, project: &str) -> Option<String> {
    let name = nonce_cookie_name(project);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_string())
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

fn callback_url(base: &str, provider: &str, project: &str) -> String {
    format!("{base}/v1/account/oauth2/callback/{provider}/{project}")
}

/// Sign-ins one client address may start in an hour (as Appwrite): each writes
/// a pending sign-in, on SQLite under the one write lock every write shares.
const STARTS_PER_CLIENT: crate::auth::rate_limit::Limit =
    crate::auth::rate_limit::Limit::per_hour(50);

pub async fn start(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    Query(query): Query<StartQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    let project_id = query.project.as_deref().unwrap_or(DEFAULT_PROJECT);
    let client = crate::http::client::client_info(&state.config, peer, &headers);
    let from = crate::auth::rate_limit::client_key(&client.ip);
    if let Err(err) = state
        .rate_limiter
        .hit(&format!("oauth2-start:{from}"), STARTS_PER_CLIENT)
        .await
    {
        return error_page(&err);
    }
    let project = match state.schemas.get(&state, project_id).await {
        Ok(loaded) => loaded.project.clone(),
        Err(err) => return error_page(&err),
    };
    let Some(success) = query.success.as_deref() else {
        return error_page(&AppError::invalid(
            "success",
            "give the URL to return to after signing in",
        ));
    };
    let success_url = match oauth2::check_return_url(&project.auth, "success", success) {
        Ok(url) => url,
        Err(err) => return error_page(&err),
    };
    let failure_url = match query.failure.as_deref() {
        Some(failure) => match oauth2::check_return_url(&project.auth, "failure", failure) {
            Ok(url) => url,
            Err(err) => return error_page(&err),
        },
        None => success_url.clone(),
    };
    let token_mode = match query.mode.as_deref() {
        None | Some("session") => false,
        Some("token") => true,
        Some(_) => {
            return redirect_failure(Failed {
                failure_url,
                error: AppError::invalid("mode", "use `session` or `token`"),
            });
        }
    };
    let scopes = query
        .scopes
        .as_deref()
        .map(|s| s.split_whitespace().take(50).map(String::from).collect())
        .unwrap_or_default();
    let base = match public_base(&state) {
        Ok(base) => base,
        Err(error) => return redirect_failure(Failed { failure_url, error }),
    };
    let start = Start {
        provider: provider.clone(),
        success_url,
        failure_url: failure_url.clone(),
        token_mode,
        scopes,
    };
    match oauth2::begin(
        &state,
        &project.id,
        &callback_url(&base, &provider, &project.id),
        start,
    )
    .await
    {
        Ok(begun) => with_cookie(
            redirect(&begun.authorize_url),
            &nonce_cookie(&state, &project.id, &begun.nonce, 600),
        ),
        Err(error) => redirect_failure(Failed { failure_url, error }),
    }
}

pub async fn callback(
    State(state): State<AppState>,
    Path((provider, project_id)): Path<(String, String)>,
    Query(query): Query<CallbackQuery>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    // It names the nonce cookie: nothing but an id may reach a Set-Cookie header.
    if crate::db::ids::validate("project", &project_id).is_err() {
        return error_page(&AppError::invalid("project", "not a project id"));
    }
    let base = match public_base(&state) {
        Ok(base) => base,
        Err(err) => return error_page(&err),
    };
    let client = crate::http::client::client_info(&state.config, peer, &headers);
    let finished = oauth2::finish(
        &state,
        &project_id,
        &provider,
        &callback_url(&base, &provider, &project_id),
        Callback {
            code: query.code,
            state: query.state,
            error: query.error,
            nonce: presented_nonce(&headers, &project_id),
        },
        client,
    )
    .await;
    // The nonce is spent whatever happened.
    let cleared = nonce_cookie(&state, &project_id, "", 0);
    let response = match finished {
        Ok(Finished::Session {
            session,
            secret,
            success_url,
        }) => {
            let mut response = redirect(&success_url);
            let cookie = session_cookie(&session, &secret, state.config.secure_cookies());
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            response
        }
        Ok(Finished::Token { success_url }) => redirect(&success_url),
        Err(Ok(failed)) => redirect_failure(failed),
        Err(Err(err)) => error_page(&err),
    };
    with_cookie(response, &cleared)
}
