//! The image endpoints of avatars, `GET /v1/avatars/{kind}?…`: public unless the
//! addressed project (`X-Nimbus-Project` or `?project=`) turned `avatarsPublic`
//! off, checked before anything else, `304` included; answered with a strong `ETag` (a digest of the parameters that decide the bytes), `304`
//! to a matching `If-None-Match` without drawing, and a long public cache
//! lifetime, since the same parameters always give the same image. The format
//! comes from `output=` or else from `Accept` (then the answer varies on it).

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::AppState;
use crate::error::{AppError, AppResult, codes};
use crate::services::avatars::flags::{self, FlagParams};
use crate::services::avatars::icons::{self, IconParams, IconSet};
use crate::services::avatars::initials::{self, InitialsParams};
use crate::services::avatars::invalid;
use crate::services::avatars::output::Output;
use crate::services::avatars::qr::{self, QrParams};
use crate::services::avatars::remote;
use crate::services::avatars::{AvatarGrant, grant};
use crate::services::storage::preview::preview_error;
use crate::services::storage::render::{self, PreviewParams};

use super::identity;
use super::storage::{disposition, error};

/// How long caches may keep an avatar: its URL names all that decides it.
const CACHE_CONTROL: &str = "public, max-age=604800";
/// The same for a project whose avatars are not for everyone: only the
/// caller's own cache may keep one.
const PRIVATE_CACHE_CONTROL: &str = "private, max-age=604800";

/// The credentials of an avatar request, with the project from the header or,
/// for an `<img>` that cannot send one, from `?project=`.
fn presented(headers: &HeaderMap, query: &[(String, String)]) -> identity::Presented {
    match param(query, "project") {
        Some(project) if identity::header(headers, identity::PROJECT_HEADER).is_none() => {
            identity::Presented::for_project(headers, project)
        }
        _ => identity::Presented::from_headers(headers),
    }
}

/// Leave to answer an avatar request. A project whose avatars are public answers
/// everyone without reading the credential (a stale cookie does not break an
/// `<img>`); otherwise the credential must resolve to a user or a key.
async fn admit(
    state: &AppState,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> AppResult<AvatarGrant> {
    let presented = presented(headers, query);
    let loaded = identity::project(state, &presented).await?;
    if loaded.project.auth.avatars_public {
        return Ok(AvatarGrant { shared: true });
    }
    grant(&identity::resolve(state, &presented).await?.caller)
}

/// The `Cache-Control` of an avatar answered under `grant`.
fn cache_control(grant: AvatarGrant) -> &'static str {
    if grant.shared {
        CACHE_CONTROL
    } else {
        PRIVATE_CACHE_CONTROL
    }
}

fn query_pairs(uri: &axum::http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

fn param<'a>(query: &'a [(String, String)], name: &str) -> Option<&'a str> {
    query
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn int_param(query: &[(String, String)], name: &str) -> AppResult<Option<i64>> {
    param(query, name)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map_err(|_| invalid(name, "expected an integer"))
        })
        .transpose()
}

fn bool_param(query: &[(String, String)], name: &str) -> AppResult<bool> {
    match param(query, name) {
        None | Some("" | "0" | "false") => Ok(false),
        Some("1" | "true") => Ok(true),
        Some(_) => Err(invalid(name, "expected true or false")),
    }
}

/// The format to answer in: `output` when given, else the best of `offered` for
/// `Accept`; the second value says whether `Accept` decided.
fn pick_output(
    given: Option<Output>,
    headers: &HeaderMap,
    offered: &[Output],
) -> AppResult<(Output, bool)> {
    if let Some(output) = given {
        return Ok((output, false));
    }
    let accept = identity::header(headers, "accept");
    Output::negotiate(accept, offered)
        .map(|o| (o, true))
        .ok_or_else(|| {
            let types: Vec<_> = offered.iter().map(|o| o.mime_type()).collect();
            AppError::Invalid {
                code: codes::NOT_ACCEPTABLE,
                field: "Accept".into(),
                reason: format!("this avatar is served as {}", types.join(", ")),
            }
        })
}

/// The answer for an image of `output` tagged `etag`: `304` when the client has
/// it, else the bytes kept in the replica's cache, or those `draw` makes, drawn on
/// a turn of the preview pool.
#[allow(clippy::too_many_arguments)]
async fn answer(
    state: &AppState,
    headers: &HeaderMap,
    client: &str,
    grant: AvatarGrant,
    etag: String,
    output: Output,
    negotiated: bool,
    attachment: Option<&str>,
    draw: impl FnOnce() -> AppResult<Vec<u8>> + Send + 'static,
) -> AppResult<Response> {
    answer_with(
        state,
        headers,
        client,
        (etag, cache_control(grant)),
        output,
        negotiated,
        attachment,
        draw,
    )
    .await
}

/// [`answer`] with the `Cache-Control` given: an image drawn from the caller's
/// own account must not be kept by a shared cache. Callers hold an
/// [`AvatarGrant`] for the request.
#[allow(clippy::too_many_arguments)]
async fn answer_with(
    state: &AppState,
    headers: &HeaderMap,
    client: &str,
    (etag, cache_control): (String, &'static str),
    output: Output,
    negotiated: bool,
    attachment: Option<&str>,
    draw: impl FnOnce() -> AppResult<Vec<u8>> + Send + 'static,
) -> AppResult<Response> {
    // Only an answer `Accept` chose varies on it.
    let vary = if negotiated { "Accept" } else { "" };
    let matches = identity::header(headers, "if-none-match")
        .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        let mut response = (
            StatusCode::NOT_MODIFIED,
            [
                (header::ETAG, etag),
                (header::CACHE_CONTROL, cache_control.to_string()),
            ],
        )
            .into_response();
        if negotiated {
            response
                .headers_mut()
                .insert(header::VARY, header::HeaderValue::from_static("Accept"));
        }
        return Ok(response);
    }
    let bytes = match state.avatars.get(&etag) {
        Some(bytes) => {
            metrics::counter!("nimbus_avatars_total", "source" => "cache").increment(1);
            bytes
        }
        None => {
            crate::services::storage::preview::count_render(state, client).await?;
            let turn = state.preview_turns.take().await?;
            let drawn: Arc<[u8]> = turn.run("avatar", draw).await??.into();
            state.avatars.put(etag.clone(), drawn.clone());
            metrics::counter!("nimbus_avatars_total", "source" => "drawn").increment(1);
            drawn
        }
    };
    let mut response = Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, output.mime_type())
        .header(header::CONTENT_LENGTH, bytes.len())
        .header(header::ETAG, etag)
        .header(header::CACHE_CONTROL, cache_control)
        .header(header::X_CONTENT_TYPE_OPTIONS, "nosniff")
        // An SVG opened on its own must not run script in the server's origin.
        .header(header::CONTENT_SECURITY_POLICY, "sandbox");
    if !vary.is_empty() {
        response = response.header(header::VARY, vary);
    }
    if let Some(name) = attachment {
        response = response.header(header::CONTENT_DISPOSITION, disposition("attachment", name));
    }
    response
        .body(Body::from(Bytes::from_owner(bytes)))
        .map_err(|err| AppError::Internal(err.into()))
}

/// `GET /v1/avatars/qr?text&size&margin&output&download`.
pub async fn qr(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let query = query_pairs(&uri);
    async {
        let client = super::client::limit_key(&state.config, peer, &headers);
        let grant = admit(&state, &headers, &query).await?;
        let params = QrParams::new(
            param(&query, "text"),
            int_param(&query, "size")?,
            int_param(&query, "margin")?,
            param(&query, "output"),
            bool_param(&query, "download")?,
        )?;
        let (output, negotiated) = pick_output(params.output, &headers, qr::OUTPUTS)?;
        let name = format!("qr.{}", output.extension());
        let attachment = params.download.then_some(name.as_str());
        let etag = params.etag(output);
        answer(
            &state,
            &headers,
            &client,
            grant,
            etag,
            output,
            negotiated,
            attachment,
            move || qr::render(&params, output),
        )
        .await
    }
    .await
    .unwrap_or_else(error)
}

#[derive(serde::Deserialize)]
pub struct FlagPath {
    code: String,
}

/// `GET /v1/avatars/flags/{code}?width&height&quality&output`.
pub async fn flag(
    State(state): State<AppState>,
    axum::extract::Path(path): axum::extract::Path<FlagPath>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let query = query_pairs(&uri);
    async {
        let client = super::client::limit_key(&state.config, peer, &headers);
        let grant = admit(&state, &headers, &query).await?;
        let params = FlagParams::new(
            Some(&path.code),
            int_param(&query, "width")?,
            int_param(&query, "height")?,
            int_param(&query, "quality")?,
            param(&query, "output"),
        )?;
        let (output, negotiated) = pick_output(params.output, &headers, flags::OUTPUTS)?;
        let etag = params.etag(output);
        answer(
            &state,
            &headers,
            &client,
            grant,
            etag,
            output,
            negotiated,
            None,
            move || flags::render(&params, output),
        )
        .await
    }
    .await
    .unwrap_or_else(error)
}

/// `GET /v1/avatars/browsers/{code}?width&height&quality&output`.
pub async fn browser(
    State(state): State<AppState>,
    axum::extract::Path(path): axum::extract::Path<FlagPath>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let client = super::client::limit_key(&state.config, peer, &headers);
    icon(
        &state,
        &client,
        &icons::BROWSERS,
        &path.code,
        &headers,
        &uri,
    )
    .await
}

/// `GET /v1/avatars/credit-cards/{code}?width&height&quality&output`.
pub async fn credit_card(
    State(state): State<AppState>,
    axum::extract::Path(path): axum::extract::Path<FlagPath>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let client = super::client::limit_key(&state.config, peer, &headers);
    icon(
        &state,
        &client,
        &icons::CREDIT_CARDS,
        &path.code,
        &headers,
        &uri,
    )
    .await
}

async fn icon(
    state: &AppState,
    client: &str,
    set: &'static IconSet,
    code: &str,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
) -> Response {
    let query = query_pairs(uri);
    async {
        let grant = admit(state, headers, &query).await?;
        let params = IconParams::new(
            set,
            Some(code),
            int_param(&query, "width")?,
            int_param(&query, "height")?,
            int_param(&query, "quality")?,
            param(&query, "output"),
        )?;
        let (output, negotiated) = pick_output(params.output, headers, icons::OUTPUTS)?;
        let etag = params.etag(output);
        answer(
            state,
            headers,
            client,
            grant,
            etag,
            output,
            negotiated,
            None,
            move || icons::render(&params, output),
        )
        .await
    }
    .await
    .unwrap_or_else(error)
}

/// The name of the signed-in user of a request (its name, else its email), with
/// the project from the header or `?project=`; `None` for a guest.
async fn signed_in_name(
    state: &AppState,
    headers: &HeaderMap,
    query: &[(String, String)],
) -> AppResult<Option<String>> {
    let presented = presented(headers, query);
    let addressed = identity::resolve(state, &presented).await?;
    Ok(addressed.caller.require_session().ok().map(|me| {
        let user = &me.user;
        if user.name.trim().is_empty() {
            user.email.clone().unwrap_or_default()
        } else {
            user.name.clone()
        }
    }))
}

/// `GET /v1/avatars/initials?name&width&height&background&output`; without
/// `name`, the signed-in user's name or email.
pub async fn initials(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    let query = query_pairs(&uri);
    async {
        let client = super::client::limit_key(&state.config, peer, &headers);
        let grant = admit(&state, &headers, &query).await?;
        let (name, own) = match param(&query, "name") {
            Some(name) => (Some(name.to_string()), false),
            None => (signed_in_name(&state, &headers, &query).await?, true),
        };
        let params = InitialsParams::new(
            name.as_deref(),
            int_param(&query, "width")?,
            int_param(&query, "height")?,
            param(&query, "background"),
            param(&query, "output"),
        )?;
        let (output, negotiated) = pick_output(params.output, &headers, initials::OUTPUTS)?;
        let etag = params.etag(output);
        let caching = if own {
            "private, no-cache"
        } else {
            cache_control(grant)
        };
        answer_with(
            &state,
            &headers,
            &client,
            (etag, caching),
            output,
            negotiated,
            None,
            move || initials::render(&params, output),
        )
        .await
    }
    .await
    .unwrap_or_else(error)
}

/// What the proxy fetches for a request.
#[derive(Clone, Copy)]
enum Remote {
    /// The image at the URL.
    Image,
    /// The icon of the page at the URL.
    Favicon,
}

/// `GET /v1/avatars/image?url&width&height&output&…` (the preview parameters):
/// a remote image, fetched as [`remote`] says and redrawn through the preview
/// renderer, so that what reaches the client is always an image Nimbus encoded.
/// Limited per client address.
pub async fn image(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    proxied(&state, peer, &headers, &uri, Remote::Image).await
}

/// `GET /v1/avatars/favicon?url&…`: the icon of the page at `url`, as
/// [`crate::services::avatars::favicon`] finds it, redrawn like `image`.
pub async fn favicon(
    State(state): State<AppState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    uri: axum::http::Uri,
) -> Response {
    proxied(&state, peer, &headers, &uri, Remote::Favicon).await
}

async fn proxied(
    state: &AppState,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    uri: &axum::http::Uri,
    what: Remote,
) -> Response {
    let query = query_pairs(uri);
    async {
        let grant = admit(state, headers, &query).await?;
        let url = remote::check_url(
            param(&query, "url").ok_or_else(|| invalid("url", "the URL is required"))?,
        )?;
        let rest: Vec<(String, String)> = query
            .iter()
            .filter(|(k, _)| k != "url" && k != "project")
            .cloned()
            .collect();
        let params = PreviewParams::from_query(&rest).map_err(preview_error)?;
        for (name, value) in [("width", params.width), ("height", params.height)] {
            if value > crate::services::avatars::MAX_SIZE {
                return Err(invalid(
                    name,
                    format!("must be 0 to {} pixels", crate::services::avatars::MAX_SIZE),
                ));
            }
        }
        let ip = super::client::client_ip(&state.config.trusted_proxies, peer.ip(), headers);
        let key = format!(
            "avatars-remote:{}",
            crate::auth::rate_limit::client_key(&ip.to_string())
        );
        state
            .rate_limiter
            .hit(
                &key,
                crate::auth::rate_limit::Limit {
                    attempts: state.config.avatar_proxy_per_minute,
                    window: std::time::Duration::from_secs(60),
                },
            )
            .await?;
        let not_an_image = || AppError::Upstream {
            code: codes::AVATAR_FETCH_FAILED,
            reason: "the remote file is not a PNG, JPEG, GIF, WebP or ICO image".into(),
        };
        let limits = remote::ProxyLimits::of(&state.config);
        let (source, mime_type) = match what {
            Remote::Image => {
                let fetched = remote::fetch(url, limits).await?;
                let mime = remote::sniff(&fetched.bytes).ok_or_else(not_an_image)?;
                (fetched.bytes, mime)
            }
            Remote::Favicon => crate::services::avatars::favicon::fetch(url, limits).await?,
        };
        let max_pixels = state.config.preview_max_pixels;
        let rendered = {
            let turn = state.preview_turns.take().await?;
            turn.run("avatar", move || {
                let (source, mime_type) = if mime_type == "image/x-icon" {
                    (
                        crate::services::avatars::favicon::ico_to_png(&source, max_pixels)?,
                        "image/png",
                    )
                } else {
                    (source, mime_type)
                };
                render::render(&source, mime_type, &params, max_pixels).map_err(preview_error)
            })
            .await??
        };
        metrics::counter!("nimbus_avatars_total", "source" => "remote").increment(1);
        Ok::<_, AppError>(
            (
                [
                    (header::CONTENT_TYPE, rendered.mime_type.to_string()),
                    (
                        header::CACHE_CONTROL,
                        if grant.shared {
                            "public, max-age=3600"
                        } else {
                            "private, max-age=3600"
                        }
                        .to_string(),
                    ),
                    (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
                    (header::CONTENT_SECURITY_POLICY, "sandbox".to_string()),
                ],
                rendered.bytes,
            )
                .into_response(),
        )
    }
    .await
    .unwrap_or_else(error)
}
