//! The binary endpoints of storage (bytes do not belong in GraphQL):
//! `GET …/download` (attachment), `GET …/view` (inline, `Range` for media),
//! `GET …/preview` (image previews) and `PUT …/upload` (a chunk of a resumable
//! upload), under `/v1/storage/buckets/{bucket}/files/{file}/`. Reads check the same
//! permissions as the API, for a key, a bearer token, the session cookie (with the
//! project in `?project=`), or a signed `?token=`.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use futures_util::StreamExt as _;
use serde::Deserialize;
use tokio_util::io::ReaderStream;

use crate::AppState;
use crate::auth::{Caller, Credential, ScopedAccess};
use crate::error::{AppError, AppResult, codes};
use crate::files::Key;
use crate::services::storage::preview::{self, PreviewBody};
use crate::services::storage::render::PreviewParams;
use crate::services::storage::service::{self, file_error};
use crate::services::storage::upload::{self, ContentRange};
use crate::services::storage::{Bucket, StoredFile, tokens};

use super::graphql::plain_error;
use super::identity::{self, Presented};

#[derive(Deserialize)]
pub struct FilePath {
    bucket: String,
    file: String,
}

/// The error as JSON, with the status its code deserves (`crate::error::codes`).
pub fn error(err: AppError) -> Response {
    if matches!(err, AppError::Db(_) | AppError::Internal(_)) {
        // Logs the cause; the client reads only the generic message.
        let _ = err.to_graphql();
    }
    let mut response = plain_error(&err.code(), &err.message());
    if let AppError::Busy { retry_after } | AppError::RateLimited { retry_after } = err {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    }
    response
}

/// The credentials of a binary request: as for GraphQL, but the project may also
/// come from `?project=` (an `<img>` cannot send headers).
fn presented(headers: &HeaderMap, project: Option<&str>) -> Presented {
    match project {
        Some(project) if identity::header(headers, identity::PROJECT_HEADER).is_none() => {
            Presented::for_project(headers, project)
        }
        _ => Presented::from_headers(headers),
    }
}

/// The file a read request may see, and its bucket.
async fn readable(
    state: &AppState,
    headers: &HeaderMap,
    path: &FilePath,
    query: &[(String, String)],
) -> AppResult<(Bucket, StoredFile)> {
    readable_by(state, headers, path, query)
        .await
        .map(|(bucket, file, _)| (bucket, file))
}

/// [`readable`], and whether a server (an API key, the console) reads it rather
/// than a client (a user, a guest, whoever holds a signed URL).
async fn readable_by(
    state: &AppState,
    headers: &HeaderMap,
    path: &FilePath,
    query: &[(String, String)],
) -> AppResult<(Bucket, StoredFile, bool)> {
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if let Some(token) = param("token") {
        let grant =
            tokens::verify(&state.secret, token, crate::db::now_millis()).map_err(|err| {
                AppError::Invalid {
                    code: match err {
                        tokens::TokenError::Expired => codes::FILE_TOKEN_EXPIRED,
                        tokens::TokenError::Invalid => codes::INVALID_FILE_TOKEN,
                    },
                    field: "token".into(),
                    reason: match err {
                        tokens::TokenError::Expired => "the signed URL has expired".into(),
                        tokens::TokenError::Invalid => "the signed URL is not genuine".into(),
                    },
                }
            })?;
        let project_matches = param("project").is_none_or(|p| p == grant.project_id);
        if grant.bucket_id != path.bucket || grant.file_id != path.file || !project_matches {
            return Err(AppError::Invalid {
                code: codes::INVALID_FILE_TOKEN,
                field: "token".into(),
                reason: "the signed URL is for another file".into(),
            });
        }
        let (bucket, file) = signed_file(state, &grant).await?;
        return Ok((bucket, file, false));
    }
    let addressed = identity::resolve(state, &presented(headers, param("project"))).await?;
    let access = ScopedAccess::of(&addressed.caller)?;
    let server = matches!(*access, crate::auth::access::Access::Server);
    let (bucket, file) = service::readable_file(state, &access, &path.bucket, &path.file).await?;
    Ok((bucket, file, server))
}

/// The file a genuine token opens, while whoever minted it could still read it.
async fn signed_file(state: &AppState, grant: &tokens::Grant) -> AppResult<(Bucket, StoredFile)> {
    let revoked = || AppError::Invalid {
        code: codes::INVALID_FILE_TOKEN,
        field: "token".into(),
        reason: "the signed URL was revoked: what made it no longer holds".into(),
    };
    let credential = match &grant.minted_by {
        tokens::Minter::Operator => return service::signed_file(state, grant).await,
        tokens::Minter::Key(key_id) => {
            if !crate::services::keys::service::key_holds(state, key_id).await? {
                return Err(revoked());
            }
            return service::signed_file(state, grant).await;
        }
        tokens::Minter::User {
            user_id,
            session_id,
        } => crate::services::users::service::delegated_session(
            state,
            &grant.project_id,
            user_id,
            session_id,
        )
        .await
        .map(Credential::Session)
        .map_err(|err| match err {
            AppError::Db(_) | AppError::Internal(_) | AppError::Unavailable => err,
            _ => revoked(),
        })?,
        tokens::Minter::Guest => Credential::Anonymous,
    };
    // Read as the minter reads it now: its roles, the file's permissions today.
    let loaded = state.schemas.get(state, &grant.project_id).await?;
    let minter = Caller {
        project: loaded.project.clone(),
        credential,
        checked_at: state.sessions.credential_changes(),
    };
    let access = ScopedAccess::of(&minter)?;
    let (bucket, file) =
        service::readable_file(state, &access, &grant.bucket_id, &grant.file_id).await?;
    if file.created_at != grant.file_created_at {
        return Err(service::file_not_found(&file.id));
    }
    Ok((bucket, file))
}

fn query_pairs(raw: Option<&str>) -> Vec<(String, String)> {
    raw.map(|q| {
        url::form_urlencoded::parse(q.as_bytes())
            .into_owned()
            .collect()
    })
    .unwrap_or_default()
}

/// `GET …/download`.
pub async fn download(
    State(state): State<AppState>,
    Path(path): Path<FilePath>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    serve(&state, &headers, &path, &query_pairs(uri.query()), true)
        .await
        .unwrap_or_else(error)
}

/// `GET …/view`.
pub async fn view(
    State(state): State<AppState>,
    Path(path): Path<FilePath>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    serve(&state, &headers, &path, &query_pairs(uri.query()), false)
        .await
        .unwrap_or_else(error)
}

/// A single byte range of a `Range` header; `None` when absent, of another unit or
/// of several ranges (then the whole file is served, as RFC 9110 allows). A byte
/// range that cannot be read (`bytes=988`, `bytes=5-3`, past the end) is
/// `RANGE_NOT_SATISFIABLE`, as Appwrite answers: the client meant a part, and a
/// whole file in its place would be taken for that part.
fn requested_range(headers: &HeaderMap, size: u64) -> AppResult<Option<std::ops::Range<u64>>> {
    let Some(value) = identity::header(headers, "range") else {
        return Ok(None);
    };
    let Some(spec) = value.strip_prefix("bytes=") else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let unsatisfiable = || AppError::Invalid {
        code: codes::RANGE_NOT_SATISFIABLE,
        field: "Range".into(),
        reason: format!("the file has {size} bytes"),
    };
    let Some((start, end)) = spec.trim().split_once('-') else {
        return Err(unsatisfiable());
    };
    let range = match (start.parse::<u64>().ok(), end.parse::<u64>().ok()) {
        (Some(start), Some(end)) if start <= end => start..end.saturating_add(1).min(size),
        (Some(start), None) if end.is_empty() => start..size,
        (None, Some(suffix)) if start.is_empty() => size.saturating_sub(suffix)..size,
        _ => return Err(unsatisfiable()),
    };
    if range.start >= size || range.is_empty() {
        return Err(unsatisfiable());
    }
    Ok(Some(range))
}

/// `filename="…"` with the name made safe for a header, and `filename*=UTF-8''…`
/// beside it when that changed the name.
pub fn disposition(kind: &str, name: &str) -> HeaderValue {
    let ascii: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() && c != '"' && c != '\\' || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if ascii == name {
        return HeaderValue::from_str(&format!("{kind}; filename=\"{ascii}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("attachment"));
    }
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    HeaderValue::from_str(&format!(
        "{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}"
    ))
    .unwrap_or_else(|_| HeaderValue::from_static("attachment"))
}

async fn serve(
    state: &AppState,
    headers: &HeaderMap,
    path: &FilePath,
    query: &[(String, String)],
    attachment: bool,
) -> AppResult<Response> {
    let (_, file) = readable(state, headers, path, query).await?;
    let mut response = serve_file(state, headers, &file, attachment).await?;
    super::usage::tag(state, &file.project_id, &mut response);
    Ok(response)
}

/// The bytes of a file the caller may read.
async fn serve_file(
    state: &AppState,
    headers: &HeaderMap,
    file: &StoredFile,
    attachment: bool,
) -> AppResult<Response> {
    let etag = format!("\"{}\"", file.checksum);
    if identity::header(headers, "if-none-match") == Some(etag.as_str()) {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let range = match requested_range(headers, file.size) {
        Ok(range) => range,
        Err(err) => {
            let mut refused = error(err);
            refused.headers_mut().insert(
                header::CONTENT_RANGE,
                HeaderValue::from_str(&format!("bytes */{}", file.size))
                    .unwrap_or_else(|_| HeaderValue::from_static("bytes */*")),
            );
            return Ok(refused);
        }
    };
    let key = Key::file(&file.project_id, &file.bucket_id, &file.id).map_err(file_error)?;
    let mut stream = match &range {
        Some(range) => state
            .files
            .read_range(&key, &file.encoding, &state.secret, range.clone())
            .await
            .map_err(file_error)?,
        None => state
            .files
            .read(&key, &file.encoding, &state.secret)
            .await
            .map_err(file_error)?,
    };
    // Read the first chunk before answering, so that a file that does not decode
    // fails with an error status rather than a truncated 200.
    let first = match stream.next().await {
        Some(Ok(chunk)) => Some(chunk),
        Some(Err(err)) => {
            tracing::error!(file = %file.id, error = %err, "a stored file does not decode");
            return Err(AppError::FileUnreadable);
        }
        None => None,
    };
    let body = futures_util::stream::iter(first.map(Ok)).chain(stream);
    let (status, length) = match &range {
        Some(range) => (StatusCode::PARTIAL_CONTENT, range.end - range.start),
        None => (StatusCode::OK, file.size),
    };
    let mut response = Response::builder()
        .status(status)
        .header(header::CONTENT_LENGTH, length)
        .header(header::ACCEPT_RANGES, "bytes")
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, "private, no-cache")
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        .header(
            header::CONTENT_DISPOSITION,
            disposition(if attachment { "attachment" } else { "inline" }, &file.name),
        );
    if let Ok(checksum) = hex::decode(&file.checksum) {
        response = response.header(
            "repr-digest",
            format!(
                "sha-256=:{}:",
                base64::engine::general_purpose::STANDARD.encode(checksum)
            ),
        );
    }
    // The file's own type, as Appwrite sends it, for a download too: the browser
    // saves an attachment whatever its type. A viewed HTML or SVG file must not run
    // script in the server's origin, whichever way it is opened. A sandboxed
    // document loads no plugin, and browsers show PDFs with one: a PDF (its type is
    // sniffed from its bytes, never taken from the client) gets Appwrite's policy
    // instead, no script, which its viewer does not need.
    let policy = if file.mime_type == "application/pdf" {
        "script-src 'none'"
    } else {
        "sandbox"
    };
    response = response
        .header(header::CONTENT_TYPE, file.mime_type.as_str())
        .header(header::CONTENT_SECURITY_POLICY, policy);
    if let Some(range) = &range {
        response = response.header(
            header::CONTENT_RANGE,
            format!("bytes {}-{}/{}", range.start, range.end - 1, file.size),
        );
    }
    response
        .body(Body::from_stream(body))
        .map_err(|err| AppError::Internal(err.into()))
}

/// Pieces in which a cached preview is read.
const CACHED_PREVIEW_READ: usize = 512 * 1024;

/// `GET …/preview?width&height&gravity&…`.
pub async fn preview(
    State(state): State<AppState>,
    Path(path): Path<FilePath>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let query = query_pairs(uri.query());
    async {
        let (bucket, file, server) = readable_by(&state, &headers, &path, &query).await?;
        if !server && !bucket.transformations {
            return Err(AppError::Invalid {
                code: codes::TRANSFORMATIONS_DISABLED,
                field: "bucketId".into(),
                reason: "the bucket's images are not made into previews for clients".into(),
            });
        }
        let project_id = file.project_id.clone();
        let params_only: Vec<(String, String)> = query
            .into_iter()
            .filter(|(k, _)| k != "project" && k != "token")
            .collect();
        let params = PreviewParams::from_query(&params_only).map_err(preview::preview_error)?;
        let client = super::client::limit_key(&state.config, peer, &headers);
        let rendered = preview::preview(&state, &file, &params, &client).await?;
        let body = match rendered.body {
            PreviewBody::Cached(opened) => {
                // In pieces as large as a download's, not ReaderStream's 4 KiB (each
                // a blocking-pool round trip).
                Body::from_stream(ReaderStream::with_capacity(opened, CACHED_PREVIEW_READ))
            }
            PreviewBody::Fresh(bytes) => Body::from(bytes),
        };
        let mut response = (
            [
                (header::CONTENT_TYPE, rendered.mime_type.to_string()),
                (header::CACHE_CONTROL, "private, max-age=3600".to_string()),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
            ],
            body,
        )
            .into_response();
        super::usage::tag(&state, &project_id, &mut response);
        Ok::<_, AppError>(response)
    }
    .await
    .unwrap_or_else(error)
}

/// `PUT …/upload` with `Content-Range: bytes START-END/SIZE`: one chunk of a
/// resumable upload. Answers where the upload stands.
pub async fn upload_chunk(
    State(state): State<AppState>,
    Path(path): Path<FilePath>,
    headers: HeaderMap,
    uri: axum::http::Uri,
    body: Body,
) -> Response {
    let query = query_pairs(uri.query());
    async {
        let project = query
            .iter()
            .find(|(k, _)| k == "project")
            .map(|(_, v)| v.as_str());
        let addressed = identity::resolve(&state, &presented(&headers, project)).await?;
        let project_id = addressed.caller.project.id.clone();
        let range = ContentRange::parse(
            identity::header(&headers, "content-range").ok_or_else(|| AppError::Invalid {
                code: codes::UPLOAD_CHUNK_INVALID,
                field: "Content-Range".into(),
                reason: "each chunk needs a `Content-Range: bytes START-END/SIZE` header".into(),
            })?,
        )?;
        let stall = std::time::Duration::from_secs(state.config.http_body_timeout_secs);
        let access = ScopedAccess::of(&addressed.caller)?;
        let reader = started(crate::http::stall_limited(body, stall).0);
        let file = upload::receive_chunk(
            &state,
            &access,
            &path.bucket,
            &path.file,
            range,
            reader,
        )
        .await?;
        let ready = file.status == crate::services::storage::FileStatus::Ready;
        let body = serde_json::json!({
            "id": file.id,
            "bucketId": file.bucket_id,
            "status": if ready { "READY" } else { "UPLOADING" },
            "size": file.size,
            "chunkSize": file.chunk_size,
            "chunksTotal": file.chunks_total,
            "chunksUploaded": file.chunks_uploaded,
            "nextOffset": if ready { file.size } else { u64::from(file.chunks_uploaded) * file.chunk_size },
            "mimeType": if ready { Some(file.mime_type.as_str()) } else { None },
            "checksum": if ready { Some(file.checksum.as_str()) } else { None },
        });
        let mut response = (
            if ready {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            axum::Json(body),
        )
            .into_response();
        super::usage::tag(&state, &project_id, &mut response);
        Ok::<_, AppError>(response)
    }
    .await
    .unwrap_or_else(error)
}

/// A chunk's body whose first read starts now, beside the upload's checks, rather
/// than when they are done. A client that waits for `100 Continue` before a large
/// body (curl past 1 MiB) is sent it when the body is first read: it then sends
/// while the upload's row is read and its file opened and locked, instead of
/// waiting for them, a round trip and a few statements per chunk. The caller's
/// credential and its key's scope have been checked already; what is taken before the upload's own
/// checks is one read of the body (at most hyper's read buffer), and a stalled
/// client is cut off by the body's stall limit as before.
fn started(mut body: crate::files::ByteStream) -> crate::files::ByteStream {
    let first = tokio::spawn(async move {
        let first = body.next().await;
        (first, body)
    });
    futures_util::stream::once(first)
        .flat_map(|joined| match joined {
            Ok((first, rest)) => futures_util::stream::iter(first).chain(rest).boxed(),
            Err(error) => {
                futures_util::stream::once(async move { Err(std::io::Error::other(error)) }).boxed()
            }
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, size: u64) -> AppResult<Option<std::ops::Range<u64>>> {
        let mut headers = HeaderMap::new();
        headers.insert("range", HeaderValue::from_str(value).unwrap());
        requested_range(&headers, size)
    }

    #[test]
    fn ranges_past_the_end_or_at_the_largest_number_are_cut_to_the_file() {
        assert_eq!(
            range("bytes=0-18446744073709551615", 10).unwrap(),
            Some(0..10)
        );
        assert_eq!(range("bytes=2-99", 10).unwrap(), Some(2..10));
        assert_eq!(range("bytes=-3", 10).unwrap(), Some(7..10));
        assert_eq!(range("bytes=4-", 10).unwrap(), Some(4..10));
        assert_eq!(range("bytes=0-1,3-4", 10).unwrap(), None);
        assert_eq!(range("items=0-1", 10).unwrap(), None);
        assert!(range("bytes=10-", 10).is_err());
        for malformed in ["bytes=5", "bytes=5-3", "bytes=a-b", "bytes=-", "bytes=-0"] {
            assert!(range(malformed, 10).is_err(), "{malformed}");
        }
        assert!(range("bytes=18446744073709551615-18446744073709551615", 10).is_err());
    }
}
