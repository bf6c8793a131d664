//! The image proxy and favicons against a hostile remote server: a page that is
//! HTML, a decompression bomb, an endless body, a server that never answers, and a
//! favicon link into the server's own network. The server may reach the remote on
//! loopback only because `NIMBUS_AVATAR_PROXY_ALLOW_PRIVATE` is on here; every
//! other limit holds, and the replica answers the next request.

use std::time::Duration;

use axum::routing::get;
use futures_util::stream;

use crate::helpers::{TestApp, spawn_with, test_config};

/// A remote server with one hostile answer per path.
async fn hostile_remote() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new()
        .route(
            "/page.png",
            get(|| async {
                (
                    [("content-type", "image/png")],
                    "<!doctype html><html><body>not an image</body></html>",
                )
            }),
        )
        .route(
            "/bomb.png",
            get(|| async {
                (
                    [("content-type", "image/png")],
                    crate::storage::png_header_only(100_000, 100_000),
                )
            }),
        )
        .route(
            "/endless.png",
            get(|| async {
                // A body without end: the proxy must stop at its byte cap.
                let chunk = bytes::Bytes::from(vec![0u8; 64 * 1024]);
                let body = stream::repeat_with(move || Ok::<_, std::io::Error>(chunk.clone()));
                (
                    [("content-type", "image/png")],
                    axum::body::Body::from_stream(body),
                )
            }),
        )
        .route(
            "/slow.png",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        )
        .route("/good.png", get(|| async { tiny_png() }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://127.0.0.1:{port}")
}

fn tiny_png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_pixel(8, 8, image::Rgb([200, 30, 30]))
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    out.into_inner()
}

async fn app_reaching_private() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.avatar_proxy_allow_private = true;
    config.avatar_proxy_timeout_secs = 2;
    config.avatar_proxy_max_bytes = 1024 * 1024;
    config.avatar_proxy_per_minute = 10_000;
    spawn_with(config, dir).await
}

async fn proxy(app: &TestApp, endpoint: &str, target: &str) -> (u16, String, Vec<u8>) {
    let url = format!(
        "{}/v1/avatars/{endpoint}?url={}&width=16",
        app.url,
        url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
    );
    let response = app.client.get(url).send().await.expect("request sent");
    let status = response.status().as_u16();
    let kind = response
        .headers()
        .get("content-type")
        .map_or("", |v| v.to_str().unwrap_or(""))
        .to_string();
    (status, kind, response.bytes().await.unwrap().to_vec())
}

fn code_of(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body).expect("a JSON error")["errors"][0]
        ["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

#[tokio::test]
async fn hostile_remote_images_get_clear_codes_and_the_proxy_stays_healthy() {
    let app = app_reaching_private().await;
    let remote = hostile_remote().await;

    // A remote that behaves is proxied (so the refusals below are the content's).
    let (status, kind, body) = proxy(&app, "image", &format!("{remote}/good.png")).await;
    assert_eq!((status, kind.as_str()), (200, "image/png"));
    assert_eq!(image::load_from_memory(&body).unwrap().width(), 16);

    for (path, status, code) in [
        // The content is sniffed, whatever the server claims.
        ("/page.png", 404, "AVATAR_FETCH_FAILED"),
        // Its header declares ten billion pixels: refused before decoding.
        ("/bomb.png", 400, "IMAGE_TOO_LARGE"),
        // Read to the byte cap, then given up.
        ("/endless.png", 404, "AVATAR_FETCH_FAILED"),
        // The whole fetch is bounded in time.
        ("/slow.png", 404, "AVATAR_FETCH_FAILED"),
    ] {
        let started = std::time::Instant::now();
        let (got, _, body) = proxy(&app, "image", &format!("{remote}{path}")).await;
        assert_eq!((got, code_of(&body).as_str()), (status, code), "{path}");
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("127.0.0.1"), "{path}: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} took {:?}",
            started.elapsed()
        );
    }

    // The replica is fine afterwards.
    let (status, _, _) = proxy(&app, "image", &format!("{remote}/good.png")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn allowing_private_addresses_does_not_lift_the_other_checks() {
    let app = app_reaching_private().await;
    let remote = hostile_remote().await;
    for target in [
        "file:///etc/passwd".to_string(),
        "http://user:pass@127.0.0.1/x.png".to_string(),
    ] {
        let (status, _, body) = proxy(&app, "image", &target).await;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (400, "INVALID_AVATAR_URL"),
            "{target}"
        );
    }
    // A favicon page that is not an image and links nowhere useful fails cleanly.
    let (status, _, body) = proxy(&app, "favicon", &format!("{remote}/page.png")).await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (404, "AVATAR_FETCH_FAILED")
    );
}
