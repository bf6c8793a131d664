//! The console's sign-in, its one private API, at `/console/api/`: JSON in and
//! out, errors as `{"error": {"code", "message"}}` with the code's HTTP status.
//!
//! - `GET /console/api/session`: the live session of the `nimbus_console` cookie,
//!   `{"email", "csrf", "expiresAt", "totp"}`, else 401 `UNAUTHENTICATED`.
//! - `POST /console/api/session` `{"email", "password", "otp"?}`: signs in, sets the
//!   cookie (`HttpOnly; SameSite=Strict; Path=/`, `Secure` behind https).
//! - `DELETE /console/api/session`: signs out (204) and clears the cookie.
//! - `POST /console/api/totp`, `POST /console/api/totp/verify` `{"otp"}`,
//!   `DELETE /console/api/totp` `{"otp"}`: the signed-in administrator's second
//!   factor.
//!
//! Everything that changes something needs the CSRF token as `X-Nimbus-CSRF` beside
//! the cookie. A request whose `Origin` is not the server's own (its `Host`, or
//! `NIMBUS_PUBLIC_URL`) is refused (`ORIGIN_NOT_ALLOWED`), a body that is not
//! `application/json` too, so no other page can sign a browser in, out or anything
//! else. Bodies are capped small.

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt as _;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::error::{AppError, codes};
use crate::http::identity::{self, CONSOLE_COOKIE, CSRF_HEADER};
use crate::services::admins::ConsoleSession;
use crate::services::admins::service;

/// The most bytes a sign-in body may have: an email, a password and a code.
const MAX_BODY_BYTES: usize = 16 * 1024;

/// An answer of the console API.
type Answer = Result<Response, Refusal>;

/// A refused request: its code, message and, for a rate limit, when to retry.
pub struct Refusal {
    code: String,
    message: String,
    retry_after: Option<u64>,
}

impl Refusal {
    fn new(code: &str, message: &str) -> Self {
        Refusal {
            code: code.to_string(),
            message: message.to_string(),
            retry_after: None,
        }
    }
}

impl From<AppError> for Refusal {
    fn from(err: AppError) -> Self {
        // Logs the cause of a database or internal failure; the client gets the
        // generic message.
        let _ = err.to_graphql();
        let retry_after = match &err {
            AppError::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        };
        Refusal {
            code: err.code(),
            message: err.message(),
            retry_after,
        }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let body = serde_json::json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (codes::http_status(&self.code), axum::Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

fn unauthenticated() -> Refusal {
    Refusal::new(
        codes::UNAUTHENTICATED,
        "no console session: sign in, and send the session's CSRF token as X-Nimbus-CSRF",
    )
}

/// Refuses a request from a page that is not the server's own: the cookie is
/// `SameSite=Strict`, and this closes what that leaves (sibling subdomains, old
/// browsers, and sign-in, which needs no cookie).
fn same_origin_only(state: &AppState, headers: &HeaderMap) -> Result<(), Refusal> {
    if identity::header(headers, "origin").is_none()
        || identity::from_own_page(&state.config, headers)
    {
        Ok(())
    } else {
        Err(Refusal::new(
            codes::ORIGIN_NOT_ALLOWED,
            "the console API answers only the server's own pages",
        ))
    }
}

/// Reads a JSON body of at most [`MAX_BODY_BYTES`].
async fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: Body) -> Result<T, Refusal> {
    let json = identity::header(headers, "content-type").is_some_and(|value| {
        value
            .split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
    });
    if !json {
        return Err(Refusal::new(
            codes::UNSUPPORTED_MEDIA_TYPE,
            "send the body as application/json",
        ));
    }
    let too_large = || {
        Refusal::new(
            codes::REQUEST_TOO_LARGE,
            &format!("the body is over {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = identity::header(headers, "content-length").and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|_| Refusal::new(codes::BAD_REQUEST, "the body did not arrive whole"))?;
        if bytes.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&bytes).map_err(|_| {
        Refusal::new(
            codes::BAD_REQUEST,
            "the body is not the JSON object this endpoint takes",
        )
    })
}

/// The value of the console cookie, when the request carries one.
fn cookie(headers: &HeaderMap) -> Option<String> {
    identity::cookie(headers, CONSOLE_COOKIE)
}

/// The live session of the cookie, proven by the CSRF header.
async fn proven(state: &AppState, headers: &HeaderMap) -> Result<ConsoleSession, Refusal> {
    let (Some(secret), Some(csrf)) = (cookie(headers), identity::header(headers, CSRF_HEADER))
    else {
        return Err(unauthenticated());
    };
    service::with_csrf(state, &secret, csrf)
        .await?
        .ok_or_else(unauthenticated)
}

fn session_body(session: &ConsoleSession) -> serde_json::Value {
    serde_json::json!({
        "email": session.admin.email,
        "csrf": session.csrf,
        "expiresAt": crate::graphql::types::datetime(session.expires_at),
        "totp": session.admin.totp,
    })
}

fn session_response(session: &ConsoleSession) -> Response {
    (StatusCode::OK, axum::Json(session_body(session))).into_response()
}

/// The `Set-Cookie` value that hands the browser its console session: a browser
/// session cookie (the server ends it when idle or old), unreadable by scripts,
/// never sent by another site's page.
fn session_cookie(state: &AppState, secret: &str) -> String {
    format!(
        "{CONSOLE_COOKIE}={secret}; HttpOnly; SameSite=Strict; Path=/{}",
        if state.config.secure_cookies() {
            "; Secure"
        } else {
            ""
        }
    )
}

fn cleared_cookie(state: &AppState) -> String {
    format!(
        "{CONSOLE_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0{}",
        if state.config.secure_cookies() {
            "; Secure"
        } else {
            ""
        }
    )
}

fn with_cookie(mut response: Response, cookie: &str) -> Response {
    if let Ok(value) = HeaderValue::from_str(cookie) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /console/api/session`.
pub async fn get_session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let answer: Answer = async {
        same_origin_only(&state, &headers)?;
        let secret = cookie(&headers).ok_or_else(unauthenticated)?;
        let session = service::current(&state, &secret)
            .await?
            .ok_or_else(unauthenticated)?;
        let mut response = session_response(&session);
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }
    .await;
    answer.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct SignIn {
    email: String,
    password: String,
    #[serde(default)]
    otp: Option<String>,
}

/// `POST /console/api/session`.
pub async fn create_session(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer: Answer = async {
        same_origin_only(&state, &headers)?;
        let input: SignIn = json_body(&headers, body).await?;
        let client = crate::http::client::client_info(&state.config, peer, &headers);
        let (session, secret) = service::sign_in(
            &state,
            &input.email,
            input.password,
            input.otp.as_deref(),
            &client,
        )
        .await?;
        // A new sign-in replaces the session the browser held (no fixation, and
        // nothing left behind).
        if let Some(old) = cookie(&headers) {
            service::end_replaced(&state, &old).await?;
        }
        Ok(with_cookie(
            session_response(&session),
            &session_cookie(&state, &secret),
        ))
    }
    .await;
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /console/api/session`.
pub async fn delete_session(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let answer: Answer = async {
        same_origin_only(&state, &headers)?;
        let session = proven(&state, &headers).await?;
        service::sign_out(&state, &session).await?;
        Ok(with_cookie(
            StatusCode::NO_CONTENT.into_response(),
            &cleared_cookie(&state),
        ))
    }
    .await;
    answer.unwrap_or_else(IntoResponse::into_response)
}

#[derive(Deserialize)]
struct Code {
    otp: String,
}

/// `POST /console/api/totp`: a new secret, active once verified.
pub async fn create_totp(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let answer: Answer = async {
        same_origin_only(&state, &headers)?;
        let session = proven(&state, &headers).await?;
        let (secret, uri) = service::enrol_totp(&state, &session).await?;
        let body = serde_json::json!({"secret": secret, "uri": uri});
        let mut response = (StatusCode::OK, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        Ok(response)
    }
    .await;
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// `POST /console/api/totp/verify`: activates the new secret; answers the session.
pub async fn verify_totp(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer: Answer = async {
        same_origin_only(&state, &headers)?;
        let session = proven(&state, &headers).await?;
        let input: Code = json_body(&headers, body).await?;
        service::confirm_totp(&state, &session, &input.otp).await?;
        refreshed(&state, &headers).await
    }
    .await;
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// `DELETE /console/api/totp`: removes the factor; answers the session.
pub async fn delete_totp(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let answer: Answer = async {
        same_origin_only(&state, &headers)?;
        let session = proven(&state, &headers).await?;
        let input: Code = json_body(&headers, body).await?;
        service::remove_totp(&state, &session, &input.otp).await?;
        refreshed(&state, &headers).await
    }
    .await;
    answer.unwrap_or_else(IntoResponse::into_response)
}

/// The session as it is now, after a change to it.
async fn refreshed(state: &AppState, headers: &HeaderMap) -> Answer {
    let session = proven(state, headers).await?;
    Ok(session_response(&session))
}
