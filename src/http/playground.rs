//! The GraphiQL playground: `GET /playground` and the files it loads from
//! `GET /playground/assets/{file}`, all embedded in the binary.
//!
//! Owns only this static page. The files are vendored under `playground/` (see
//! `playground/README.md` for how to update them) and compiled in, so the playground
//! works offline and under a CSP of `'self'`. It must never read the filesystem at run
//! time nor turn a request path into a file path: each asset is one fixed match arm.
//! The page talks to `/v1/graphql` and `/v1/graphql/ws`, which other modules serve.

use axum::{
    Router,
    extract::Path,
    http::{StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

const PAGE: &str = include_str!("../../playground/index.html");

/// Everything the page loads comes from this origin. Scripts and styles are files,
/// never inline, so neither needs `'unsafe-inline'`; GraphiQL's icons and fonts are
/// `data:` URLs inside its stylesheet. `ws:`/`wss:` are listed because not every
/// browser counts a same-origin WebSocket as `'self'`. The one thing this blocks is
/// the `<style>` element GraphiQL's dialogs add to lock page scrolling, which a
/// full-window page with `overflow: hidden` does not need.
const PAGE_CSP: &str = "default-src 'none'; \
    script-src 'self'; \
    style-src 'self'; \
    connect-src 'self' ws: wss:; \
    img-src 'self' data:; \
    font-src 'self' data:; \
    base-uri 'none'; \
    form-action 'none'; \
    frame-ancestors 'none'";

/// Assets keep fixed names across releases, so a day is the longest a browser may
/// run an old copy against a new page; the page itself is always revalidated.
const ASSET_CACHE_CONTROL: &str = "public, max-age=86400";

const JAVASCRIPT: &str = "text/javascript; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";

/// The routes of the playground, to be merged into the application's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/playground", get(page))
        .route(
            "/playground/",
            get(|| async { Redirect::permanent("/playground") }),
        )
        .route("/playground/assets/{file}", get(asset))
}

async fn page() -> Response {
    super::embedded_page(PAGE_CSP, PAGE)
}

async fn asset(Path(file): Path<String>) -> Response {
    match embedded(&file) {
        Some((body, content_type)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, ASSET_CACHE_CONTROL),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The embedded file and its content type for an asset name, if there is one.
fn embedded(file: &str) -> Option<(&'static [u8], &'static str)> {
    let found: (&'static [u8], &'static str) = match file {
        "playground.js" => (include_bytes!("../../playground/playground.js"), JAVASCRIPT),
        "playground.css" => (include_bytes!("../../playground/playground.css"), CSS),
        "graphiql.min.js" => (
            include_bytes!("../../playground/graphiql.min.js"),
            JAVASCRIPT,
        ),
        "graphiql.min.css" => (include_bytes!("../../playground/graphiql.min.css"), CSS),
        "react.production.min.js" => (
            include_bytes!("../../playground/react.production.min.js"),
            JAVASCRIPT,
        ),
        "react-dom.production.min.js" => (
            include_bytes!("../../playground/react-dom.production.min.js"),
            JAVASCRIPT,
        ),
        _ => return None,
    };
    Some(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::page_tests::{body_text, header};

    async fn get(uri: &str) -> Response {
        crate::http::page_tests::get(router(), uri).await
    }

    #[tokio::test]
    async fn serves_the_page_as_uncached_html_under_a_self_only_csp() {
        let response = get("/playground").await;

        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(header(&response, header::CACHE_CONTROL), "no-cache");
        let csp = header(&response, header::CONTENT_SECURITY_POLICY);
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        assert!(
            body_text(response)
                .await
                .contains("<title>Nimbus playground</title>")
        );
    }

    #[tokio::test]
    async fn serves_each_asset_with_its_content_type_and_a_day_of_caching() {
        for (file, content_type) in [
            ("playground.js", JAVASCRIPT),
            ("playground.css", CSS),
            ("graphiql.min.js", JAVASCRIPT),
            ("graphiql.min.css", CSS),
            ("react.production.min.js", JAVASCRIPT),
            ("react-dom.production.min.js", JAVASCRIPT),
        ] {
            let response = get(&format!("/playground/assets/{file}")).await;

            assert_eq!(response.status(), StatusCode::OK, "{file}");
            assert_eq!(
                header(&response, header::CONTENT_TYPE),
                content_type,
                "{file}"
            );
            assert_eq!(
                header(&response, header::CACHE_CONTROL),
                "public, max-age=86400",
                "{file}"
            );
            assert!(!body_text(response).await.is_empty(), "{file}");
        }
    }

    #[tokio::test]
    async fn serves_every_asset_the_page_refers_to() {
        let page = body_text(get("/playground").await).await;
        let referenced: Vec<&str> = page
            .split("\"/playground/assets/")
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap())
            .collect();

        assert!(referenced.len() >= 4, "{referenced:?}");
        for file in referenced {
            assert!(
                embedded(file).is_some(),
                "page refers to unknown asset {file}"
            );
        }
    }

    #[tokio::test]
    async fn answers_unknown_assets_with_not_found() {
        for uri in [
            "/playground/assets/missing.js",
            "/playground/assets/index.html",
            "/playground/assets/..%2F..%2FCargo.toml",
            "/playground/assets/graphiql.min.js.map",
        ] {
            assert_eq!(get(uri).await.status(), StatusCode::NOT_FOUND, "{uri}");
        }
    }

    #[tokio::test]
    async fn redirects_the_trailing_slash_to_the_page() {
        let response = get("/playground/").await;

        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(header(&response, header::LOCATION), "/playground");
    }
}
