//! Functions over plain HTTP, `/v1/functions/{functionId}/{*path}` (any method),
//! for clients and third-party webhooks: the request's method, path, query,
//! headers and body (bounded) go to the active deployment, and its response comes
//! back as it answered (hop-by-hop headers dropped). The caller's credential, as
//! for any endpoint, decides whether it may execute the function; `any` among its
//! execute roles makes it public. Also the [`Gateway`] that runs the guests'
//! `nimbus.graphql` calls through the same GraphQL execution as `/v1/graphql`.

use std::time::Duration;

use async_graphql::Request;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse as _, Response};

use crate::AppState;
use crate::auth::{Caller, Credential};
use crate::error::{AppError, codes};
use crate::http::graphql::plain_error;
use crate::http::identity::{self, Addressed, Presented};
use crate::services::functions::service::{self, ExecutionRequest, Trigger};
use crate::services::functions::{Gateway, InsideFunction, status};
use crate::services::users::service::ClientInfo;

/// The error as JSON with its code's status, and `Retry-After` when it has one.
fn error(err: AppError) -> Response {
    if matches!(err, AppError::Db(_) | AppError::Internal(_)) {
        // Logs the cause; the client reads only the generic message.
        let _ = err.to_graphql();
    }
    let mut response = plain_error(&err.code(), &err.message());
    if let AppError::TooManyExecutions { retry_after }
    | AppError::Busy { retry_after }
    | AppError::RateLimited { retry_after } = err
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    }
    response
}

/// Headers of one connection, not of the message: never passed on.
fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

/// Who calls: the project from `X-Nimbus-Project` or `?project=`, the credential
/// as for any endpoint. A bearer token that is no Nimbus session is the function's
/// business (a third party's webhook signature, say): the caller is then a guest
/// and the header is passed on. Answers whether a Nimbus session was presented in
/// the request's own headers (which are then not passed on).
async fn addressed(
    state: &AppState,
    headers: &HeaderMap,
    project: Option<&str>,
) -> Result<(Addressed, bool), AppError> {
    let presented = match project {
        Some(project) if identity::header(headers, identity::PROJECT).is_none() => {
            Presented::for_project(headers, project)
        }
        _ => Presented::from_headers(headers),
    };
    match identity::resolve(state, &presented).await {
        Ok(addressed)
            if presented.session_from_cookie
                && !cookie_may_act(headers, &addressed.caller.project) =>
        {
            let guest = Presented {
                session: None,
                session_from_cookie: false,
                ..presented
            };
            Ok((identity::resolve(state, &guest).await?, false))
        }
        Ok(addressed) => {
            let session = matches!(addressed.caller.credential, Credential::Session(_));
            Ok((addressed, session))
        }
        Err(
            AppError::InvalidSession
            | AppError::InvalidJwt
            | AppError::SessionExpired
            | AppError::JwtExpired,
        ) if presented.key.is_none() && !presented.session_from_cookie => {
            let guest = Presented {
                session: None,
                ..presented
            };
            Ok((identity::resolve(state, &guest).await?, false))
        }
        Err(err) => Err(err),
    }
}

/// Whether a request that carries the session cookie may act with it: a browser
/// sends the cookie on another site's navigations and form posts too, which must
/// not run a function as its user (a cross-site request forgery). The request
/// must come from the server's own pages or the project's (`redirectHosts`), as
/// its `Sec-Fetch-Site`, `Origin` or `Referer` says; a request with none of them
/// is no browser's, and acts. Otherwise the caller is a guest.
fn cookie_may_act(headers: &HeaderMap, project: &crate::services::projects::Project) -> bool {
    let site = identity::header(headers, "sec-fetch-site");
    if matches!(site, Some("same-origin" | "none")) {
        return true;
    }
    let origin = identity::header(headers, "origin")
        .map(str::to_string)
        .or_else(|| {
            identity::header(headers, "referer")
                .and_then(|referer| url::Url::parse(referer).ok())
                .map(|url| url.origin().ascii_serialization())
        });
    match origin {
        Some(origin) => {
            identity::origin_allowed(&origin, identity::header(headers, "host"), project)
        }
        None => site.is_none(),
    }
}

/// The parameters of a function's route.
#[derive(serde::Deserialize)]
pub struct Params {
    function: String,
    /// Below the function's own path; absent on `/v1/functions/{functionId}`.
    path: Option<String>,
}

/// `ANY /v1/functions/{functionId}` and `/v1/functions/{functionId}/{*path}`.
pub async fn execute(
    State(state): State<AppState>,
    Path(params): Path<Params>,
    request: axum::extract::Request,
) -> Response {
    // The method, URI and headers taken from the request, not copied by their
    // extractors.
    let (
        axum::http::request::Parts {
            method,
            uri,
            headers,
            extensions,
            ..
        },
        body,
    ) = request.into_parts();
    let client = match extensions.get::<axum::extract::ConnectInfo<std::net::SocketAddr>>() {
        Some(axum::extract::ConnectInfo(peer)) => {
            crate::http::client::limit_key(&state.config, *peer, &headers)
        }
        None => String::new(),
    };
    // Boxed: the router boxes the handler's future and moves it on every
    // request; holding the call's future (the execution's included) inline
    // would make it copy all of it each time.
    Box::pin(run(&state, params, method, uri, headers, body, client))
        .await
        .unwrap_or_else(error)
}

async fn run(
    state: &AppState,
    params: Params,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
    client: String,
) -> Result<Response, AppError> {
    let function_id = params.function;
    let project = uri.query().and_then(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "project")
            .map(|(_, v)| v.into_owned())
    });
    let (addressed, by_session) = addressed(state, &headers, project.as_deref()).await?;
    let caller = addressed.caller;
    let ready = service::runnable(state, &caller, &function_id).await?;

    let limit = state.config.functions_max_request_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        // Refused before reading: the client need not send it all.
        return Err(too_large(limit));
    }
    let body = if HttpBody::is_end_stream(&body) {
        // Most calls (a GET) have none: no timer to arm for it.
        Bytes::new()
    } else {
        read_body(state, body, limit).await?
    };

    let received = body.len();
    let mut passed = Vec::with_capacity(headers.len());
    for (name, value) in &headers {
        let name = name.as_str();
        let credential = name == identity::KEY_HEADER
            || name == identity::CSRF_HEADER
            || (by_session && (name == "authorization" || name == "cookie"));
        if is_hop_by_hop(name) || credential {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        if name == "cookie" {
            // Every project's session cookie and the console's are Nimbus's
            // credentials (one host serves them all): none reaches a function,
            // whose code may be another project's. Other cookies are the app's.
            let kept: Vec<&str> = value
                .split(';')
                .map(str::trim)
                .filter(|pair| !is_nimbus_cookie(pair))
                .collect();
            if !kept.is_empty() {
                passed.push((name.to_string(), kept.join("; ")));
            }
            continue;
        }
        passed.push((name.to_string(), value.to_string()));
    }
    let host = identity::header(&headers, "host").unwrap_or_default();
    let (host_name, port) = match host.rsplit_once(':') {
        Some((name, port)) if port.parse::<u16>().is_ok() => {
            (name.to_string(), port.parse().unwrap_or(80))
        }
        _ => (host.to_string(), 80),
    };
    let scheme = identity::header(&headers, "x-forwarded-proto")
        .filter(|p| *p == "https")
        .unwrap_or("http");
    let path = params.path.as_deref().unwrap_or_default();
    let path = match uri.query() {
        Some(query) => format!("/{path}?{query}"),
        None => format!("/{path}"),
    };
    let request = service::check_request(
        state,
        &caller,
        ExecutionRequest {
            method: method.as_str().to_string(),
            path,
            headers: passed,
            body,
            host: host_name,
            scheme: scheme.into(),
            port,
        },
    )?;
    let (execution, recorded) = service::execute_now(
        state,
        &caller,
        &ready,
        Trigger::Http,
        request,
        Some(&client),
    )
    .await?;
    let response = respond(&execution, recorded);
    if let Some(counters) = state.usage.project(&caller.project.id) {
        super::usage::count_lengths(&counters, received, &response);
    }
    Ok(response)
}

/// The whole body of a call, within the size limit and the body timeout.
async fn read_body(state: &AppState, body: Body, limit: usize) -> Result<Bytes, AppError> {
    let timeout = Duration::from_secs(state.config.http_body_timeout_secs.max(1));
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(too_large(limit)),
        Err(_) => Err(AppError::Invalid {
            code: codes::REQUEST_TIMEOUT,
            field: "body".into(),
            reason: format!("the body did not arrive within {} s", timeout.as_secs()),
        }),
    }
}

fn too_large(limit: usize) -> AppError {
    AppError::Invalid {
        code: codes::REQUEST_TOO_LARGE,
        field: "body".into(),
        reason: format!("a function's request body is at most {limit} bytes"),
    }
}

/// What a function's page may do in its sandbox: run scripts, send forms, open
/// popups and downloads, all from an origin that is not the API's.
const FUNCTION_SANDBOX: &str =
    "sandbox allow-scripts allow-forms allow-popups allow-downloads allow-modals";

/// Whether a cookie (`name=value`, from a `Cookie` or `Set-Cookie` header) is one
/// of Nimbus's: a project's session or the console's.
fn is_nimbus_cookie(pair: &str) -> bool {
    let name = pair
        .trim_start()
        .split('=')
        .next()
        .unwrap_or_default()
        .trim();
    name.starts_with(crate::services::account::cookies::SESSION_COOKIE_PREFIX)
        || name == identity::CONSOLE_COOKIE
}

/// The HTTP answer of a function's execution, naming its record when there is
/// one (`x-nimbus-execution-id`).
fn respond(execution: &crate::services::functions::Execution, recorded: bool) -> Response {
    if execution.status == status::FAILED {
        let code = execution
            .failure
            .clone()
            .unwrap_or_else(|| codes::EXECUTION_INVALID_RESPONSE.to_string());
        let mut response = plain_error(&code, "the function failed; see its execution's errors");
        if let Ok(id) = HeaderValue::from_str(&execution.id) {
            response
                .headers_mut()
                .insert(HeaderName::from_static("x-nimbus-execution-id"), id);
        }
        return response;
    }
    let status = u16::try_from(execution.response_status)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, execution.response_body.clone()).into_response();
    // The function's type replaces the default rather than following it (a
    // browser reads the last of two); without one the default stays.
    if execution
        .response_headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("content-type"))
    {
        response.headers_mut().remove(header::CONTENT_TYPE);
    }
    for (name, value) in &execution.response_headers {
        // `HeaderName` lower-cases as it parses.
        let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        if is_hop_by_hop(name.as_str()) {
            continue;
        }
        if name == header::SET_COOKIE && is_nimbus_cookie(value) {
            continue;
        }
        if let Ok(value) = HeaderValue::from_str(value) {
            response.headers_mut().append(name, value);
        }
    }
    // A function's page is served from the API's own origin, beside the console:
    // in a sandbox its scripts run in an origin of their own, so they can neither
    // read what the API answers with a visitor's cookies nor reach the console.
    // A policy the function sets applies too (each one is enforced).
    response.headers_mut().append(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(FUNCTION_SANDBOX),
    );
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    if recorded && let Ok(id) = HeaderValue::from_str(&execution.id) {
        response
            .headers_mut()
            .insert(HeaderName::from_static("x-nimbus-execution-id"), id);
    }
    response
}

/// Runs guests' `nimbus.graphql` calls as `/v1/graphql` runs a request: the
/// project's cached schema, the query limits, the request's document
/// transaction, the caller's credential checked by every resolver.
pub struct FunctionsGateway;

#[async_trait::async_trait]
impl Gateway for FunctionsGateway {
    async fn execute(
        &self,
        state: &AppState,
        project_id: &str,
        credential: Credential,
        query: String,
        variables: String,
    ) -> String {
        // The credential is the execution's, watched by its host from here on.
        let checked_at = state.sessions.credential_changes();
        let refused = |code: &str, message: String| {
            serde_json::json!({ "errors": [{ "message": message, "extensions": { "code": code } }] })
                .to_string()
        };
        if query.len() > state.config.graphql_max_query_bytes {
            return refused(
                codes::QUERY_TOO_LARGE,
                format!(
                    "the query is {} bytes long; the limit is {}",
                    query.len(),
                    state.config.graphql_max_query_bytes
                ),
            );
        }
        let loaded = match state.schemas.get(state, project_id).await {
            Ok(loaded) => loaded,
            Err(err) => return refused(&err.code(), err.message()),
        };
        let addressed = Addressed {
            caller: Caller {
                project: loaded.project.clone(),
                credential,
                checked_at,
            },
            loaded,
            expires_at: None,
        };
        // Counted before they are parsed, as a request body's are: parsed, each
        // value takes some 72 bytes, outside the function's memory.
        let limits = state.parsed_queries.limits();
        if crate::graphql::budget::body_over(variables.as_bytes(), limits, 1) {
            return refused(
                codes::VARIABLES_TOO_LARGE,
                format!(
                    "the variables hold more than {} values",
                    limits.max_variable_values
                ),
            );
        }
        // Read straight into async-graphql's variables, with no JSON tree between;
        // text that is not an object is no variables, as `Variables::from_json`
        // makes of any other JSON value.
        let variables: async_graphql::Variables =
            serde_json::from_str(&variables).unwrap_or_default();
        let mut request = Request::new(query)
            .variables(variables)
            .data(InsideFunction);
        if let Err(refusal) = state.parsed_queries.prepare(&mut request) {
            return answer(&async_graphql::Response::from_errors(vec![refusal]));
        }
        // The project's functions are one client of their own: what is bounded
        // per client address (rate limits, a share of the database connections)
        // is theirs, not shared with every other project's functions.
        let client = ClientInfo {
            ip: format!("function:{project_id}"),
            user_agent: "nimbus-functions".into(),
            locale: String::new(),
        };
        let response =
            crate::http::graphql::run_operation(state, &addressed, &client, request).await;
        answer(&response)
    }

    async fn delegated(
        &self,
        state: &AppState,
        project_id: &str,
        user_id: &str,
        session_id: &str,
    ) -> crate::error::AppResult<Credential> {
        crate::services::users::service::delegated_session(state, project_id, user_id, session_id)
            .await
            .map(Credential::Session)
    }
}

/// A response as the guest receives it: written as `/v1/graphql` writes it (the
/// keys in the query's order), with no JSON tree between.
fn answer(response: &async_graphql::Response) -> String {
    serde_json::to_string(response).unwrap_or_else(|_| {
        serde_json::json!({ "errors": [{ "message": "the answer could not be written" }] })
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handler_does_not_hold_the_call_inline() {
        fn size<F, A, B, C, Fut>(_: &F) -> usize
        where
            F: Fn(A, B, C) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        fn size_7<F, A, B, C, D, E, G, H, Fut>(_: &F) -> usize
        where
            F: Fn(A, B, C, D, E, G, H) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        // The router boxes a handler's future and moves it, whole, on every
        // request: the call's future (the execution's within) is boxed apart.
        assert!(size(&execute) < size_7(&run));
    }
}
