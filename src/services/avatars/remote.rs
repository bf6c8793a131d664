//! Remote images: fetching an image a URL names, for the image proxy, without
//! letting the URL reach the server's own network. Every hop is resolved and
//! checked by [`crate::outbound`] (each of its addresses must be public), and
//! the connection goes to an address so checked — a name that resolves again to
//! something else (DNS rebinding) is not asked. At most
//! [`ProxyLimits::max_redirects`] redirects, each checked the same way; the body is
//! capped in bytes and the whole fetch in time (`NIMBUS_AVATAR_PROXY_*`). Callers sniff what arrives ([`sniff`]) and never pass it
//! on as it came.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt as _;

use crate::error::{AppError, codes};
use crate::outbound::{self, is_public};

/// How far a fetch may go, from the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyLimits {
    /// Redirects followed (`NIMBUS_AVATAR_PROXY_MAX_REDIRECTS`).
    pub max_redirects: usize,
    /// Largest body read, in bytes (`NIMBUS_AVATAR_PROXY_MAX_BYTES`).
    pub max_bytes: usize,
    /// The whole fetch, redirects included (`NIMBUS_AVATAR_PROXY_TIMEOUT`).
    pub timeout: Duration,
    /// Whether reserved addresses may be fetched (`NIMBUS_AVATAR_PROXY_ALLOW_PRIVATE`).
    pub allow_private: bool,
}

impl ProxyLimits {
    pub fn of(config: &crate::config::Config) -> Self {
        ProxyLimits {
            max_redirects: config.avatar_proxy_max_redirects as usize,
            max_bytes: usize::try_from(config.avatar_proxy_max_bytes).unwrap_or(usize::MAX),
            timeout: Duration::from_secs(config.avatar_proxy_timeout_secs),
            allow_private: config.avatar_proxy_allow_private,
        }
    }
}
/// The formats the proxy may be asked to answer in (`output`).
pub const OUTPUTS: &[super::output::Output] = &[
    super::output::Output::Png,
    super::output::Output::Jpeg,
    super::output::Output::Webp,
];
/// Longest URL taken.
pub const MAX_URL_BYTES: usize = 2048;

fn bad_url(reason: impl Into<String>) -> AppError {
    AppError::Invalid {
        code: codes::INVALID_AVATAR_URL,
        field: "url".into(),
        reason: reason.into(),
    }
}

fn failed(reason: impl Into<String>) -> AppError {
    AppError::Upstream {
        code: codes::AVATAR_FETCH_FAILED,
        reason: reason.into(),
    }
}

/// A URL the proxy may try: absolute `http` or `https`, no credentials in it.
pub fn check_url(text: &str) -> Result<url::Url, AppError> {
    outbound::check_url(text, MAX_URL_BYTES).map_err(|refused| bad_url(refused.to_string()))
}

/// The addresses of `url`'s host, all of them `allowed`, or why not.
async fn allowed_addresses(
    url: &url::Url,
    allowed: fn(IpAddr) -> bool,
) -> Result<Vec<SocketAddr>, AppError> {
    // Not found, as Appwrite answers a host it may not or cannot reach: the URL
    // itself is well formed.
    // One message whatever the reason: telling a name that does not resolve from
    // one that resolves to a private address would map the operator's network.
    outbound::allowed_addresses(url, allowed)
        .await
        .map_err(|refused| {
            tracing::debug!(url = %url, reason = %refused, "avatar host refused");
            failed("the remote image's host cannot be reached")
        })
}

/// What a fetch brought: the URL it ended at (after redirects) and its bytes.
pub struct Fetched {
    pub url: url::Url,
    pub bytes: Vec<u8>,
}

/// The bytes at `url`, following redirects as the module says.
pub async fn fetch(url: url::Url, limits: ProxyLimits) -> Result<Fetched, AppError> {
    let allowed = if limits.allow_private {
        outbound::any_address
    } else {
        is_public
    };
    fetch_within(url, allowed, limits).await
}

async fn fetch_within(
    url: url::Url,
    allowed: fn(IpAddr) -> bool,
    limits: ProxyLimits,
) -> Result<Fetched, AppError> {
    tokio::time::timeout(limits.timeout, fetch_hops(url, allowed, limits))
        .await
        .map_err(|_| failed("the remote image did not arrive in time"))?
}

async fn fetch_hops(
    mut url: url::Url,
    allowed: fn(IpAddr) -> bool,
    limits: ProxyLimits,
) -> Result<Fetched, AppError> {
    let max_bytes = limits.max_bytes;
    for _ in 0..=limits.max_redirects {
        let addresses = allowed_addresses(&url, allowed).await?;
        // Connect only to the addresses just checked.
        let client = outbound::pinned_client(
            &url,
            &addresses,
            reqwest::Client::builder().user_agent(concat!(
                "nimbus/",
                env!("CARGO_PKG_VERSION"),
                " (avatars)"
            )),
            Duration::from_secs(5),
        )
        .map_err(|err| AppError::Internal(anyhow::anyhow!("image proxy client: {err}")))?;
        let response = client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "image/*, text/html;q=0.5")
            .send()
            .await
            .map_err(|err| {
                tracing::info!(error = %err, "a remote image could not be fetched");
                failed("the remote server did not answer")
            })?;
        let status = response.status();
        if status.is_redirection() {
            let location = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| failed("the remote server redirected nowhere"))?;
            let next = url
                .join(location)
                .map_err(|_| failed("the remote server redirected to a bad URL"))?;
            url = check_url(next.as_str())?;
            continue;
        }
        if !status.is_success() {
            return Err(failed(format!(
                "the remote server answered {}",
                status.as_u16()
            )));
        }
        if response
            .content_length()
            .is_some_and(|n| n > max_bytes as u64)
        {
            return Err(failed(format!(
                "the remote image is over {max_bytes} bytes"
            )));
        }
        let mut body = Vec::new();
        let mut stream = response.bytes_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| failed("the remote image broke off"))?;
            if body.len() + chunk.len() > max_bytes {
                return Err(failed(format!(
                    "the remote image is over {max_bytes} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        return Ok(Fetched { url, bytes: body });
    }
    Err(failed(format!(
        "more than {} redirects",
        limits.max_redirects
    )))
}

/// The MIME type of an image by its first bytes, whatever the server claimed:
/// PNG, JPEG, GIF, WebP or ICO, or `None`.
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    match image::guess_format(bytes).ok()? {
        image::ImageFormat::Png => Some("image/png"),
        image::ImageFormat::Jpeg => Some("image/jpeg"),
        image::ImageFormat::Gif => Some("image/gif"),
        image::ImageFormat::WebP => Some("image/webp"),
        image::ImageFormat::Ico => Some("image/x-icon"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn private_targets_are_refused_before_any_request() {
        for url in [
            "http://127.0.0.1/x.png",
            "http://localhost:8080/x.png",
            "http://10.1.2.3/x.png",
            "http://192.168.1.1/x.png",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://0.0.0.0/",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[fd00::1]/",
            "http://2130706433/",
            "http://0x7f.1/",
        ] {
            let parsed = check_url(url).unwrap();
            match allowed_addresses(&parsed, is_public).await {
                Err(AppError::Upstream { code, .. }) => {
                    assert_eq!(code, codes::AVATAR_FETCH_FAILED)
                }
                other => panic!("{url}: {other:?}"),
            }
        }
        for url in [
            "file:///etc/passwd",
            "ftp://example.com/x",
            "http://u:p@example.com/",
            "/x.png",
            "gopher://x/",
        ] {
            assert!(check_url(url).is_err(), "{url}");
        }
    }

    /// A server on 127.0.0.1 standing for the internet: 127.0.0.1 is "public" in
    /// these tests, every other address is not.
    async fn remote_server() -> String {
        use axum::response::{IntoResponse as _, Redirect};
        use axum::routing::get;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .route("/img", get(|| async { b"\x89PNG\r\n\x1a\nrest".to_vec() }))
            .route(
                "/hop/{n}",
                get(
                    |axum::extract::Path(n): axum::extract::Path<u32>| async move {
                        if n == 0 {
                            Redirect::temporary("/img").into_response()
                        } else {
                            Redirect::temporary(&format!("/hop/{}", n - 1)).into_response()
                        }
                    },
                ),
            )
            .route(
                "/private",
                get(move || async move {
                    Redirect::temporary(&format!("http://127.0.0.2:{port}/img")).into_response()
                }),
            )
            .route(
                "/scheme",
                get(|| async { Redirect::temporary("file:///etc/passwd").into_response() }),
            )
            .route("/big", get(|| async { vec![0u8; LIMITS.max_bytes + 1] }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://127.0.0.1:{port}")
    }

    fn only_first_loopback(ip: IpAddr) -> bool {
        ip == IpAddr::from([127, 0, 0, 1])
    }

    const LIMITS: ProxyLimits = ProxyLimits {
        max_redirects: 5,
        max_bytes: 64 * 1024,
        timeout: Duration::from_secs(2),
        allow_private: false,
    };

    async fn get(url: &str) -> Result<Vec<u8>, AppError> {
        fetch_within(check_url(url).unwrap(), only_first_loopback, LIMITS)
            .await
            .map(|fetched| fetched.bytes)
    }

    fn code(result: Result<Vec<u8>, AppError>) -> &'static str {
        match result {
            Err(AppError::Invalid { code, .. } | AppError::Upstream { code, .. }) => code,
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn redirects_are_followed_five_times_and_each_hop_is_checked() {
        let base = remote_server().await;
        assert!(
            get(&format!("{base}/img"))
                .await
                .unwrap()
                .starts_with(b"\x89PNG")
        );
        // Five redirects, then the image; six are too many.
        assert!(get(&format!("{base}/hop/4")).await.is_ok());
        assert_eq!(
            code(get(&format!("{base}/hop/5")).await),
            codes::AVATAR_FETCH_FAILED
        );
        // A redirect to a forbidden address or scheme is refused like a first URL.
        assert_eq!(
            code(get(&format!("{base}/private")).await),
            codes::AVATAR_FETCH_FAILED
        );
        assert_eq!(
            code(get(&format!("{base}/scheme")).await),
            codes::INVALID_AVATAR_URL
        );
        assert_eq!(
            code(get(&format!("{base}/big")).await),
            codes::AVATAR_FETCH_FAILED
        );
        assert_eq!(
            code(get(&format!("{base}/slow")).await),
            codes::AVATAR_FETCH_FAILED
        );
        assert_eq!(
            code(get(&format!("{base}/missing")).await),
            codes::AVATAR_FETCH_FAILED
        );
    }

    #[test]
    fn only_images_sniff_as_images() {
        assert_eq!(sniff(b"\x89PNG\r\n\x1a\n...."), Some("image/png"));
        assert_eq!(sniff(b"<svg xmlns="), None);
        assert_eq!(sniff(b"<html>"), None);
    }
}
