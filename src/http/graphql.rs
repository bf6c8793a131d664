//! GraphQL over HTTP at `/v1/graphql`, following the GraphQL-over-HTTP
//! specification: `application/graphql-response+json` or `application/json` by
//! `Accept`; 4xx when a request fails before execution (under the former); 405 for
//! a mutation over GET; batches capped; CSRF-safe (no form posts; multipart only
//! with a header that forces a CORS preflight). Also serves the project's SDL.

use std::time::{Duration, Instant};

use async_graphql::parser::types::{DocumentOperations, OperationType, Selection};
use async_graphql::{BatchRequest, Name, Request, Response as GqlResponse, ServerError};
use axum::body::{Body, Bytes};
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, Request as HttpRequest, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::Instrument as _;

use crate::AppState;
use crate::auth::Credential;
use crate::error::{AppError, codes};
use crate::http::identity::{self, Addressed};
use crate::http::multipart::{self, Refusal};
use crate::http::usage;
use crate::services::databases::tx::{Finished, Mode, RequestTx};
use crate::services::usage::counters::ProjectCounters;
use crate::services::users::service::ClientInfo;

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";
/// Headers whose presence proves a CORS preflight happened (a browser form cannot
/// send them), required for multipart requests.
const PREFLIGHT_HEADERS: &[&str] = &[
    "apollo-require-preflight",
    "x-apollo-operation-name",
    identity::PROJECT_HEADER,
    identity::KEY_HEADER,
];

/// The media type of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MediaType {
    GraphqlResponse,
    Json,
}

impl MediaType {
    fn as_str(self) -> &'static str {
        match self {
            MediaType::GraphqlResponse => GRAPHQL_RESPONSE_JSON,
            MediaType::Json => JSON,
        }
    }
}

/// Picks the answer's media type from `Accept`; `None` when neither is acceptable.
pub fn negotiate(headers: &HeaderMap) -> Option<MediaType> {
    let Some(accept) = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) else {
        // The specification: no Accept header means application/json.
        return Some(MediaType::Json);
    };
    let mut best: Option<(f32, MediaType)> = None;
    for range in accept.split(',') {
        let mut params = range.split(';');
        let essence = params.next().unwrap_or("").trim().to_ascii_lowercase();
        let quality = params
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let media = match essence.as_str() {
            GRAPHQL_RESPONSE_JSON => MediaType::GraphqlResponse,
            // Generic ranges (curl sends */*) get the form every client can read.
            JSON | "application/*" | "*/*" => MediaType::Json,
            _ => continue,
        };
        if quality <= 0.0 {
            continue;
        }
        let better = match best {
            None => true,
            Some((q, current)) => {
                quality > q
                    || (quality == q && media == MediaType::GraphqlResponse && current != media)
            }
        };
        if better {
            best = Some((quality, media));
        }
    }
    best.map(|(_, media)| media)
}

/// A response carrying only `errors`, for failures outside GraphQL execution, with
/// the HTTP status the registry declares for `code`.
pub fn plain_error(code: &str, message: &str) -> Response {
    error_response(MediaType::Json, code, message)
}

fn error_response(media: MediaType, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "errors": [{ "message": message, "extensions": { "code": code } }]
    });
    json_response(codes::http_status(code), media, &body)
}

fn json_response(status: StatusCode, media: MediaType, body: &impl serde::Serialize) -> Response {
    bytes_response(status, media, Bytes::from(response_bytes(body)))
}

fn response_bytes(body: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec())
}

fn bytes_response(status: StatusCode, media: MediaType, bytes: Bytes) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(media.as_str()),
        )],
        bytes,
    )
        .into_response()
}

fn app_error_response(err: &AppError, media: MediaType) -> Response {
    let gql = err.to_graphql();
    let body = serde_json::json!({ "errors": [gql.into_server_error(Default::default())] });
    // A bad input value is a bad GraphQL request, whatever its code's plain-HTTP status.
    let status = match err {
        AppError::Invalid { .. } => StatusCode::BAD_REQUEST,
        other => other.http_status(),
    };
    let mut response = json_response(status, media, &body);
    if let AppError::RateLimited { retry_after }
    | AppError::Busy { retry_after }
    | AppError::TooManyExecutions { retry_after } = err
    {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, (*retry_after).into());
    }
    response
}

/// What a panic turns into: a generic 500, the panic itself only in the log.
pub fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    tracing::error!(panic = %detail, "a request handler panicked");
    plain_error(codes::INTERNAL, "internal server error")
}

/// Why a body could not be read.
enum BodyError {
    TooLarge,
    TimedOut,
}

/// Reads at most `limit` bytes of body, all of it within `timeout`: a client
/// that trickles its body holds a connection no longer than that.
async fn read_body(body: Body, limit: usize, timeout: Duration) -> Result<Bytes, BodyError> {
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, limit)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(BodyError::TooLarge),
        Err(_) => Err(BodyError::TimedOut),
    }
}

/// The answer to a body that did not arrive in time; the connection closes, as
/// the rest of the body is not read.
pub fn body_timeout_response(media: MediaType, timeout: Duration) -> Response {
    let mut response = error_response(
        media,
        codes::REQUEST_TIMEOUT,
        &format!(
            "the request body did not arrive within {}s",
            timeout.as_secs()
        ),
    );
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn content_type_essence(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// The request or batch a JSON body holds. Told apart by the body's first byte
/// rather than by serde's untagged `BatchRequest`, which first copies the whole
/// body into an intermediate tree to try each shape in turn.
pub(super) fn batch_from_json(bytes: &[u8]) -> serde_json::Result<BatchRequest> {
    let is_list = bytes
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'[');
    if is_list {
        serde_json::from_slice(bytes).map(BatchRequest::Batch)
    } else {
        serde_json::from_slice(bytes).map(BatchRequest::Single)
    }
}

/// Why a JSON request body is refused unparsed: it holds more values than its
/// requests' variables may ([`crate::graphql::budget::body_over`]).
pub(super) fn too_many_values(state: &AppState, bytes: &[u8]) -> Option<String> {
    let limits = state.parsed_queries.limits();
    crate::graphql::budget::body_over(bytes, limits, state.config.graphql_max_batch).then(|| {
        format!(
            "the body holds more than {} values of variables",
            limits.max_variable_values
        )
    })
}

/// `POST /v1/graphql`.
pub async fn graphql_post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: HttpRequest,
) -> Response {
    // The headers taken from the request, not copied by the `HeaderMap` extractor;
    // the rest of its head is dropped here, not held across the awaits below.
    let (axum::http::request::Parts { headers, .. }, body) = request.into_parts();
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let batch = match content_type_essence(&headers).as_deref() {
        Some(JSON) => json_batch(&state, body, media).await,
        Some("application/graphql") => graphql_text_batch(&state, body, media).await,
        Some("multipart/form-data") => {
            return Box::pin(post_multipart(&state, &headers, peer, body, media)).await;
        }
        _ => {
            return error_response(
                media,
                codes::UNSUPPORTED_MEDIA_TYPE,
                "send `Content-Type: application/json` (or application/graphql, or multipart/form-data for uploads)",
            );
        }
    };
    match batch {
        // Boxed, as in `graphql_get`: the router boxes the handler's future and
        // moves it on every request; holding the operation's future inline
        // would make it copy all of it each time.
        Ok(batch) => {
            Box::pin(execute(
                &state,
                &headers,
                peer,
                batch,
                media,
                Method::Post,
                None,
            ))
            .await
        }
        Err(response) => response,
    }
}

/// The whole body of a JSON or GraphQL POST, or the answer to one that is too
/// large or too slow.
async fn post_body(state: &AppState, body: Body, media: MediaType) -> Result<Bytes, Response> {
    let body_timeout = Duration::from_secs(state.config.http_body_timeout_secs);
    read_body(body, state.config.max_body_bytes, body_timeout)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge => error_response(
                media,
                codes::REQUEST_TOO_LARGE,
                &format!(
                    "the request body exceeds {} bytes",
                    state.config.max_body_bytes
                ),
            ),
            BodyError::TimedOut => body_timeout_response(media, body_timeout),
        })
}

/// The request or batch of an `application/json` body.
async fn json_batch(
    state: &AppState,
    body: Body,
    media: MediaType,
) -> Result<BatchRequest, Response> {
    let bytes = post_body(state, body, media).await?;
    if let Some(reason) = too_many_values(state, &bytes) {
        return Err(error_response(media, codes::VARIABLES_TOO_LARGE, &reason));
    }
    batch_from_json(&bytes).map_err(|err| {
        let reason = if err.is_syntax() || err.is_eof() {
            format!(
                "the body is not valid JSON (line {}, column {})",
                err.line(),
                err.column()
            )
        } else {
            "the body is not a GraphQL request: expected {\"query\": ..., \"variables\": ..., \"operationName\": ...}".to_string()
        };
        error_response(media, codes::BAD_REQUEST, &reason)
    })
}

/// The request of an `application/graphql` body: the query text alone.
async fn graphql_text_batch(
    state: &AppState,
    body: Body,
    media: MediaType,
) -> Result<BatchRequest, Response> {
    let bytes = post_body(state, body, media).await?;
    match String::from_utf8(bytes.to_vec()) {
        Ok(query) => Ok(BatchRequest::Single(Request::new(query))),
        Err(_) => Err(error_response(
            media,
            codes::BAD_REQUEST,
            "the body is not UTF-8",
        )),
    }
}

/// A multipart request (uploads): the caller is known and each file authorised
/// before it is spooled, and the spooled files live until the operations end.
async fn post_multipart(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
    body: Body,
    media: MediaType,
) -> Response {
    if !PREFLIGHT_HEADERS.iter().any(|h| headers.contains_key(*h)) {
        return error_response(
            media,
            codes::CSRF_PREFLIGHT_REQUIRED,
            "multipart requests must carry a header that forces a CORS preflight, e.g. `Apollo-Require-Preflight: true` or `X-Nimbus-Project`",
        );
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // The caller and project first: nothing of an upload is spooled for
    // someone who may not send it.
    let addressed = match identity::from_headers(state, headers).await {
        Ok(addressed) => addressed,
        Err(err) => return app_error_response(&err, media),
    };
    let refused = |mut response: Response| {
        // The rest of the body is not read: the connection cannot carry
        // another request.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    };
    let received = match multipart::receive(state, &addressed.caller, content_type, body).await {
        Ok(received) => received,
        Err(Refusal::App(err)) => return refused(app_error_response(&err, media)),
        Err(Refusal::TimedOut) => {
            let body_timeout = Duration::from_secs(state.config.http_body_timeout_secs);
            return body_timeout_response(media, body_timeout);
        }
        Err(Refusal::Plain { code, message }) => {
            return refused(error_response(media, code, &message));
        }
    };
    let multipart::Received { batch, spooled } = received;
    let response = execute(
        state,
        headers,
        peer,
        batch,
        media,
        Method::Post,
        Some(addressed),
    )
    .await;
    // The spooled files go once the operations are done with them.
    drop(spooled);
    response
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetParams {
    query: Option<String>,
    variables: Option<String>,
    operation_name: Option<String>,
    extensions: Option<String>,
}

/// `GET /v1/graphql?query=…&variables=…&operationName=…`: queries only.
pub async fn graphql_get(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    params: Result<Query<GetParams>, axum::extract::rejection::QueryRejection>,
    request: HttpRequest,
) -> Response {
    // The headers taken from the request, not copied by the `HeaderMap` extractor.
    let headers = request.into_parts().0.headers;
    let Some(media) = negotiate(&headers) else {
        return not_acceptable();
    };
    let bad = |reason: &str| error_response(media, codes::BAD_REQUEST, reason);
    let Ok(Query(params)) = params else {
        return bad("malformed query string");
    };
    let Some(query) = params.query else {
        return bad("the `query` parameter is missing");
    };
    let mut request = Request::new(query);
    if let Some(name) = params.operation_name.filter(|n| !n.is_empty()) {
        request = request.operation_name(name);
    }
    if let Some(variables) = params.variables.filter(|v| !v.is_empty()) {
        match serde_json::from_str::<serde_json::Value>(&variables) {
            Ok(json @ serde_json::Value::Object(_)) => {
                request = request.variables(async_graphql::Variables::from_json(json));
            }
            _ => return bad("`variables` must be a JSON object"),
        }
    }
    if let Some(extensions) = params.extensions.filter(|v| !v.is_empty())
        && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&extensions).is_err()
    {
        return bad("`extensions` must be a JSON object");
    }
    // Boxed: the router boxes the handler's future and moves it on every
    // request; holding the operation's future inline would make it copy all of
    // it each time.
    Box::pin(execute(
        &state,
        &headers,
        peer,
        BatchRequest::Single(request),
        media,
        Method::Get,
        None,
    ))
    .await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Method {
    Get,
    Post,
}

/// The type and name of the operation a request would run, parsing its query once
/// (the parsed document is kept on the request, so it is not parsed again).
fn operation_of(request: &mut Request) -> Option<(OperationType, Option<Name>)> {
    let name = request.operation_name.clone();
    let document = request.parsed_query().ok()?;
    match (&document.operations, name) {
        (DocumentOperations::Single(op), _) => Some((op.node.ty, None)),
        (DocumentOperations::Multiple(ops), Some(name)) => ops
            .get_key_value(name.as_str())
            .map(|(name, op)| (op.node.ty, Some(name.clone()))),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops
            .iter()
            .next()
            .map(|(name, op)| (op.node.ty, Some(name.clone()))),
        _ => None,
    }
}

/// Runs one operation with its document transaction. A mutation of a single field
/// shares a group-committed batch with others (where the database has group
/// commit); should the batch roll back, the operation runs again, alone.
pub(crate) async fn run_operation(
    state: &AppState,
    addressed: &Addressed,
    client: &ClientInfo,
    mut request: Request,
) -> GqlResponse {
    let shares = state.db.group_commit().is_some() || state.creates.is_some();
    let shared = shares && is_single_field_mutation(&mut request);
    let again = shared.then(|| copy_request(&request));
    let mode = if shared {
        Mode::Shared
    } else {
        Mode::Exclusive
    };
    // Boxed: the executor's state machine is large, and every future around it
    // (this one, the handler's, the router's layers) would otherwise hold it
    // inline and copy all of it each time it is moved into the next.
    if let Some(response) = Box::pin(run_in(state, addressed, client, request, mode)).await {
        return response;
    }
    tracing::debug!("the operation's batch rolled back; running it again alone");
    metrics::counter!("nimbus_operations_rerun_total").increment(1);
    match again {
        Some(request) => Box::pin(run_in(state, addressed, client, request, Mode::Exclusive)).await,
        None => None,
    }
    .unwrap_or_else(|| {
        GqlResponse::from_errors(vec![
            AppError::Internal(anyhow::anyhow!(
                "an exclusive transaction was asked to run again"
            ))
            .to_graphql()
            .into_server_error(Default::default()),
        ])
    })
}

/// One run of an operation; `None` when it must run again.
async fn run_in(
    state: &AppState,
    addressed: &Addressed,
    client: &ClientInfo,
    request: Request,
    mode: Mode,
) -> Option<GqlResponse> {
    let tx = RequestTx::new(state, mode);
    // Everything the operation does (its SQL included) is logged within this span.
    let span = tracing::info_span!(
        "graphql",
        operation = request.operation_name.as_deref().unwrap_or("")
    );
    // The database connections it leases count for its client's share.
    let mut response = crate::db::lease::LEASE_CLIENT
        .scope(
            crate::http::client::lease_client(&client.ip),
            addressed
                .loaded
                .schema
                .execute(
                    request
                        .data(addressed.caller.clone())
                        .data(client.clone())
                        .data(tx.clone()),
                )
                .instrument(span),
        )
        .await;
    // Document writes of the request commit together, or not at all.
    match tx.finish(response.errors.is_empty()).await {
        Ok(Finished::Kept) => {}
        // Results of writes that were undone must not be shown.
        Ok(Finished::RolledBack) => response.data = async_graphql::Value::Null,
        Ok(Finished::Retry) => return None,
        Err(err) => {
            response = GqlResponse::from_errors(vec![
                err.to_graphql().into_server_error(Default::default()),
            ]);
        }
    }
    Some(response)
}

/// A mutation with one root field and no uploads: it can run again from its text
/// alone, and its writes are one operation.
fn is_single_field_mutation(request: &mut Request) -> bool {
    if !request.uploads.is_empty() {
        return false;
    }
    let name = request.operation_name.clone();
    let Ok(document) = request.parsed_query() else {
        return false;
    };
    let operation = match (&document.operations, name) {
        (DocumentOperations::Single(op), _) => op,
        (DocumentOperations::Multiple(ops), Some(name)) => match ops.get(name.as_str()) {
            Some(op) => op,
            None => return false,
        },
        _ => return false,
    };
    operation.node.ty == OperationType::Mutation
        && matches!(
            operation.node.selection_set.node.items.as_slice(),
            [item] if matches!(item.node, Selection::Field(_))
        )
}

/// The request as the client sent it, to run again.
fn copy_request(request: &Request) -> Request {
    let mut copy = Request::new(request.query.clone()).variables(request.variables.clone());
    copy.operation_name = request.operation_name.clone();
    copy.extensions = request.extensions.clone();
    copy.introspection_mode = request.introspection_mode;
    copy
}

/// Headers in which a client gives its queries a shorter deadline than the
/// server's, in milliseconds: Nimbus's, and Appwrite's for its clients.
const TIMEOUT_HEADERS: [&str; 2] = ["x-nimbus-timeout", "x-appwrite-timeout"];

/// The deadline the client gives its query operations, if it gives one; why
/// the value is refused, if it is not a whole number of milliseconds from 1.
fn client_deadline(
    headers: &HeaderMap,
) -> Result<Option<crate::graphql::limits::ClientDeadline>, String> {
    let Some((name, value)) = TIMEOUT_HEADERS
        .iter()
        .find_map(|name| headers.get(*name).map(|value| (*name, value)))
    else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<u64>().ok())
        .filter(|millis| *millis > 0)
        .map(|millis| {
            Some(crate::graphql::limits::ClientDeadline(
                Duration::from_millis(millis),
            ))
        })
        .ok_or_else(|| format!("`{name}` is a whole number of milliseconds, from 1"))
}

/// Runs a request or batch: checks its shape, finds the caller when the body did
/// not, refuses what must not run, runs the rest and answers them together.
async fn execute(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
    batch: BatchRequest,
    media: MediaType,
    method: Method,
    addressed: Option<Addressed>,
) -> Response {
    let is_batch = matches!(batch, BatchRequest::Batch(_));
    let mut requests = match requests_of(state, batch, media) {
        Ok(requests) => requests,
        Err(response) => return *response,
    };
    match client_deadline(headers) {
        Ok(Some(deadline)) => {
            requests = requests
                .into_iter()
                .map(|request| request.data(deadline))
                .collect();
        }
        Ok(None) => {}
        Err(reason) => return error_response(media, codes::BAD_REQUEST, &reason),
    }
    let addressed = match addressed {
        Some(addressed) => addressed,
        None => match identity::from_headers(state, headers).await {
            Ok(addressed) => addressed,
            Err(err) => return app_error_response(&err, media),
        },
    };
    let counters = addressed.loaded.usage.as_deref();
    let response = execute_as(
        state, headers, peer, requests, is_batch, media, method, &addressed, counters,
    )
    .await;
    if let Some(counters) = counters {
        usage::count_answered(counters, headers, method == Method::Post, &response);
    }
    response
}

/// [`execute`] once the caller is known, counting each operation in `counters`
/// when usage is on.
#[allow(clippy::too_many_arguments)]
async fn execute_as(
    state: &AppState,
    headers: &HeaderMap,
    peer: SocketAddr,
    mut requests: Vec<Request>,
    is_batch: bool,
    media: MediaType,
    method: Method,
    addressed: &Addressed,
    counters: Option<&ProjectCounters>,
) -> Response {
    let client = crate::http::client::client_info(&state.config, peer, headers);
    // One operation that answers every caller alike may have been answered before.
    let loaded = &addressed.loaded;
    let alike = (!is_batch && !loaded.alike.is_empty()).then_some(&loaded.alike);
    if let Some(rules) = alike
        && let Some(asked) = state.kept_answers.ask(&loaded.project.id, &requests[0])
        && let Some(kept) = state.kept_answers.get(rules, &asked, &client.locale)
    {
        let started = Instant::now();
        if let Some(counters) = counters {
            counters.operation(&kept.roots, std::iter::empty());
        }
        let response = bytes_response(StatusCode::OK, media, kept.body);
        crate::http::metrics::record_operation(
            &state.config,
            kept.name.as_deref(),
            started.elapsed(),
            true,
            true,
        );
        return response;
    }
    let mut screened = Vec::with_capacity(requests.len());
    for request in requests.iter_mut() {
        match screen(state, request, media, method) {
            Ok(outcome) => screened.push(outcome),
            Err(response) => return *response,
        }
    }
    let mut answered = Vec::with_capacity(requests.len());
    for (mut request, screened) in requests.into_iter().zip(screened) {
        let response = match screened {
            Screened::Answered(response) => {
                if let Some(counters) = counters {
                    counters.operation(&[], usage::error_codes(&response));
                }
                *response
            }
            Screened::Runs(name) => {
                let roots = if counters.is_some() {
                    usage::known_roots(&loaded.schema, usage::roots_of(&mut request))
                } else {
                    Vec::new()
                };
                let to_keep = alike.and_then(|rules| {
                    state.kept_answers.covered(
                        rules,
                        &loaded.project.id,
                        &mut request,
                        &client.locale,
                    )
                });
                let response =
                    run_measured(state, addressed, &client, request, name.as_deref()).await;
                if let Some(counters) = counters {
                    counters.operation(&roots, usage::error_codes(&response));
                }
                if let Some(to_keep) = to_keep
                    && is_clean(&response)
                {
                    let body = Bytes::from(response_bytes(&response_json(&response)));
                    state
                        .kept_answers
                        .keep(to_keep, name.as_deref(), &roots, body.clone());
                    return bytes_response(StatusCode::OK, media, body);
                }
                response
            }
        };
        answered.push(response);
    }
    answer(&answered, is_batch, media)
}

/// An answer that is the same every time it is given: data only, no error, no
/// extension, no header.
fn is_clean(response: &GqlResponse) -> bool {
    response.errors.is_empty()
        && response.extensions.is_empty()
        && response.http_headers.is_empty()
        && response.data != async_graphql::Value::Null
}

/// The requests of a batch, or the answer to one that is empty or too large.
fn requests_of(
    state: &AppState,
    batch: BatchRequest,
    media: MediaType,
) -> Result<Vec<Request>, Box<Response>> {
    if batch.iter().any(|request| request.query.trim().is_empty()) {
        return Err(Box::new(error_response(
            media,
            codes::BAD_REQUEST,
            "the request has no `query`: expected {\"query\": ..., \"variables\": ..., \"operationName\": ...}",
        )));
    }
    match batch {
        BatchRequest::Single(request) => Ok(vec![request]),
        BatchRequest::Batch(requests) => {
            let max = state.config.graphql_max_batch;
            if max == 0 {
                return Err(Box::new(error_response(
                    media,
                    codes::BATCHING_DISABLED,
                    "batched requests are turned off on this server",
                )));
            }
            if requests.is_empty() || requests.len() > max {
                return Err(Box::new(error_response(
                    media,
                    codes::BATCH_TOO_LARGE,
                    &format!("a batch holds 1 to {max} operations"),
                )));
            }
            Ok(requests)
        }
    }
}

/// What becomes of one request of a batch before anything runs.
enum Screened {
    /// Refused, with this answer, in place of running.
    Answered(Box<GqlResponse>),
    /// It runs; the name of its operation, as its document declares it.
    Runs(Option<Name>),
}

impl Screened {
    fn refused(error: ServerError) -> Self {
        Screened::Answered(Box::new(GqlResponse::from_errors(vec![error])))
    }
}

/// Parses one request and refuses it if it cannot run: a query over the size
/// limit or the text limits, or a subscription. A mutation over GET refuses the
/// whole request (`Err`), batch and all.
fn screen(
    state: &AppState,
    request: &mut Request,
    media: MediaType,
    method: Method,
) -> Result<Screened, Box<Response>> {
    if request.query.len() > state.config.graphql_max_query_bytes {
        // Refused before parsing: a huge query costs nothing more than its bytes.
        return Ok(Screened::refused(crate::graphql::limits::coded(
            format!(
                "the query is {} bytes long; the limit is {}",
                request.query.len(),
                state.config.graphql_max_query_bytes
            ),
            codes::QUERY_TOO_LARGE,
        )));
    }
    if let Err(refused) = state.parsed_queries.prepare(request) {
        return Ok(Screened::refused(refused));
    }
    let (ty, name) = operation_of(request).unzip();
    match ty {
        Some(OperationType::Mutation) if method == Method::Get => {
            let mut response = error_response(
                media,
                codes::METHOD_NOT_ALLOWED,
                "mutations are not allowed over GET; use POST",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("POST"));
            Err(Box::new(response))
        }
        Some(OperationType::Subscription) => Ok(Screened::refused(crate::graphql::limits::coded(
            "subscriptions are served over WebSocket at /v1/graphql/ws (graphql-transport-ws or graphql-ws)",
            codes::SUBSCRIPTION_OVER_HTTP,
        ))),
        _ => Ok(Screened::Runs(name.flatten())),
    }
}

/// Runs one operation and records its duration and outcome.
async fn run_measured(
    state: &AppState,
    addressed: &Addressed,
    client: &ClientInfo,
    request: Request,
    name: Option<&str>,
) -> GqlResponse {
    let started = Instant::now();
    let response = run_operation(state, addressed, client, request).await;
    crate::http::metrics::record_operation(
        &state.config,
        name,
        started.elapsed(),
        response.errors.is_empty(),
        // Only an operation that passed validation may add a label.
        !is_request_error(&response),
    );
    response
}

/// The HTTP answer to the responses of a request (an object) or of a batch (a
/// list), with the headers their resolvers asked for.
fn answer(answered: &[GqlResponse], is_batch: bool, media: MediaType) -> Response {
    let mut response = match answered {
        [response] if !is_batch => {
            json_response(status_of(response, media), media, &response_json(response))
        }
        list => json_response(
            StatusCode::OK,
            media,
            &list.iter().map(response_json).collect::<Vec<_>>(),
        ),
    };
    // Headers resolvers asked for, e.g. the session cookie of a sign-in.
    for (name, value) in answered.iter().flat_map(|r| r.http_headers.iter()) {
        response.headers_mut().append(name.clone(), value.clone());
    }
    // An error that says when to come back (`RATE_LIMITED`, `TOO_MANY_EXECUTIONS`,
    // a busy server) says it in HTTP too, where clients and proxies look for it.
    if let Some(seconds) = retry_after(answered) {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, seconds.into());
    }
    response
}

/// The longest `retryAfter` of the errors of `answered`, in seconds.
fn retry_after(answered: &[GqlResponse]) -> Option<u64> {
    answered
        .iter()
        .flat_map(|r| r.errors.iter())
        .filter_map(|e| match e.extensions.as_ref()?.get("retryAfter")? {
            async_graphql::Value::Number(n) => n.as_u64(),
            _ => None,
        })
        .max()
}

/// A response that failed before execution: no data, and no error from a field
/// nor a query stopped at its deadline (which had begun).
fn is_request_error(response: &GqlResponse) -> bool {
    response.data == async_graphql::Value::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|e: &ServerError| {
            e.path.is_empty()
                && !e.extensions.as_ref().is_some_and(|ext| {
                    ext.get("code") == Some(&async_graphql::Value::from(codes::OPERATION_TIMEOUT))
                })
        })
}

fn status_of(response: &GqlResponse, media: MediaType) -> StatusCode {
    if media == MediaType::GraphqlResponse && is_request_error(response) {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    }
}

/// The JSON of a response; a request error has no `data` entry at all, an
/// execution that failed has `"data": null`. Serialised straight from the
/// response's values, so objects keep the order of their selection.
#[derive(serde::Serialize)]
struct ResponseJson<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<&'a async_graphql::Value>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [ServerError],
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    extensions: &'a std::collections::BTreeMap<String, async_graphql::Value>,
}

fn response_json(response: &GqlResponse) -> ResponseJson<'_> {
    ResponseJson {
        data: (!is_request_error(response)).then_some(&response.data),
        errors: &response.errors,
        extensions: &response.extensions,
    }
}

fn not_acceptable() -> Response {
    plain_error(
        codes::NOT_ACCEPTABLE,
        "accept application/graphql-response+json or application/json",
    )
}

/// `GET /v1/graphql/schema.graphql`: the SDL of the addressed project, for code
/// generators. It tells what introspection tells, so with `NIMBUS_INTROSPECTION`
/// off only the project's servers (any valid API key of it) may read it.
pub async fn schema_sdl(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let addressed = identity::from_headers(&state, &headers)
        .await
        .and_then(|addressed| {
            if state.config.introspection {
                return Ok(addressed);
            }
            match &addressed.caller.credential {
                Credential::Key(_) => Ok(addressed),
                Credential::Session(_) => Err(AppError::PermissionDenied {
                    reason: "introspection is off: the schema needs an API key of the project"
                        .into(),
                }),
                Credential::Anonymous => Err(AppError::Unauthenticated),
            }
        });
    match addressed {
        Ok(addressed) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/graphql; charset=utf-8"),
            )],
            addressed.loaded.schema.sdl(),
        )
            .into_response(),
        Err(err) => app_error_response(&err, MediaType::Json),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without calling it.
    fn future_size<F, A, B, C, Fut>(_: &F) -> usize
    where
        F: Fn(A, B, C) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    fn future_size_4<F, A, B, C, D, Fut>(_: &F) -> usize
    where
        F: Fn(A, B, C, D) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn the_handlers_do_not_hold_the_operation_inline() {
        fn size<F, A, B, C, D, E, G, H, Fut>(_: &F) -> usize
        where
            F: Fn(A, B, C, D, E, G, H) -> Fut,
        {
            std::mem::size_of::<Fut>()
        }
        // The router boxes a handler's future and moves it, whole, on every
        // request: the operation's future is boxed apart.
        let operation = size(&execute);
        assert!(future_size(&graphql_post) < operation);
        assert!(future_size_4(&graphql_get) < operation);
    }
}
