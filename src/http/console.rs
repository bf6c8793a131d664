//! The console: `GET /console` and the files it loads from
//! `GET /console/assets/{version}/{file}`, all embedded in the binary.
//!
//! Owns only these static files; the pages talk to the public GraphQL API (and
//! the sign-in endpoints under `/console/api/`), which other modules serve. The
//! files live under `console/` and `build.rs` lists them (`OUT_DIR/console_assets.rs`)
//! with a digest of them all, the `{version}` of their URLs: a new build serves
//! them under a new folder, so a browser may keep each copy for good. A request
//! path is only ever compared with that fixed list, never turned into a file path,
//! and nothing is read from the filesystem at run time.

use axum::{
    Router,
    extract::Path,
    http::{StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};

/// The page, with its asset URLs pointing at this build's folder.
const PAGE: &str = include_str!(concat!(env!("OUT_DIR"), "/console_index.html"));

/// The digest naming this build's asset folder.
pub const VERSION: &str = include_str!(concat!(env!("OUT_DIR"), "/console_version.txt"));

/// Every file the page may load, by its name under `console/`, sorted.
static ASSETS: &[(&str, &[u8])] = include!(concat!(env!("OUT_DIR"), "/console_assets.rs"));

/// Everything the page loads comes from this origin, and scripts and styles are
/// files (ES modules), never inline, so neither needs `'unsafe-inline'`. File
/// previews are shown through `blob:` URLs made from `fetch` answers (which carry
/// the credential headers; an `<img src>` could not). The GraphiQL of "view as
/// user" (the playground's files, loaded on demand) keeps its icons and fonts as
/// `data:` URLs in its stylesheet. `ws:`/`wss:` are listed because not every
/// browser counts a same-origin WebSocket as `'self'`.
pub const PAGE_CSP: &str = "default-src 'none'; \
    script-src 'self'; \
    style-src 'self'; \
    connect-src 'self' ws: wss:; \
    img-src 'self' data: blob:; \
    font-src 'self' data:; \
    base-uri 'none'; \
    form-action 'none'; \
    frame-ancestors 'none'";

/// An asset's URL changes with its content, so a browser never needs to ask again.
const ASSET_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// The routes of the console, to be merged into the application's router.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/console", get(page))
        .route(
            "/console/",
            get(|| async { Redirect::permanent("/console") }),
        )
        .route("/console/assets/{version}/{*file}", get(asset))
}

async fn page() -> Response {
    super::embedded_page(PAGE_CSP, PAGE)
}

async fn asset(Path((version, file)): Path<(String, String)>) -> Response {
    // Another build's folder is refused rather than answered with this build's
    // files: a page of one build must not run modules of another.
    let found = (version == VERSION).then(|| embedded(&file)).flatten();
    match found {
        Some((body, content_type)) => (
            [
                (header::CONTENT_TYPE, content_type),
                (header::CACHE_CONTROL, ASSET_CACHE_CONTROL),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, [(header::CACHE_CONTROL, "no-store")]).into_response(),
    }
}

/// The embedded file and its content type for an asset name, if there is one.
fn embedded(file: &str) -> Option<(&'static [u8], &'static str)> {
    let index = ASSETS
        .binary_search_by(|(name, _)| (*name).cmp(file))
        .ok()?;
    let (name, body) = ASSETS[index];
    let content_type = match name.rsplit_once('.')?.1 {
        "js" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "svg" => "image/svg+xml",
        "json" => "application/json",
        _ => return None,
    };
    Some((body, content_type))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::page_tests::{body_text, header};

    async fn get(uri: &str) -> Response {
        crate::http::page_tests::get(router(), uri).await
    }

    #[tokio::test]
    async fn serves_the_page_uncached_unframeable_under_a_self_only_csp() {
        let response = get("/console").await;

        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, header::CONTENT_TYPE),
            "text/html; charset=utf-8"
        );
        assert_eq!(header(&response, header::CACHE_CONTROL), "no-cache");
        assert_eq!(header(&response, header::X_FRAME_OPTIONS), "DENY");
        let csp = header(&response, header::CONTENT_SECURITY_POLICY);
        assert!(csp.starts_with("default-src 'none';"), "{csp}");
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("style-src 'self';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(!csp.contains("unsafe"), "{csp}");
        let page = body_text(response).await;
        assert!(page.contains("<title>Nimbus console</title>"));
        assert!(!page.contains("{{ASSETS}}"));
        assert!(!page.contains("<style"), "no inline style");
        assert!(
            !page.contains("<script>") && !page.contains("<script type=\"module\">"),
            "no inline script"
        );
    }

    #[tokio::test]
    async fn serves_every_asset_the_page_and_its_modules_refer_to_for_good() {
        let page = body_text(get("/console").await).await;
        let prefix = format!("/console/assets/{VERSION}/");
        let mut referenced: Vec<String> = page
            .split(&format!("\"{prefix}"))
            .skip(1)
            .map(|rest| rest.split('"').next().unwrap().to_string())
            .collect();
        assert!(referenced.len() >= 2, "{referenced:?}");
        // Modules import each other by relative paths: follow them.
        let mut seen = std::collections::BTreeSet::new();
        while let Some(file) = referenced.pop() {
            if !seen.insert(file.clone()) {
                continue;
            }
            let response = get(&format!("{prefix}{file}")).await;
            assert_eq!(response.status(), StatusCode::OK, "{file}");
            assert_eq!(
                header(&response, header::CACHE_CONTROL),
                "public, max-age=31536000, immutable",
                "{file}"
            );
            assert_eq!(header(&response, header::X_CONTENT_TYPE_OPTIONS), "nosniff");
            if !file.ends_with(".js") {
                continue;
            }
            assert_eq!(
                header(&response, header::CONTENT_TYPE),
                "text/javascript; charset=utf-8"
            );
            let dir = file.rsplit_once('/').map_or("", |(dir, _)| dir).to_string();
            let text = body_text(response).await;
            // Static imports (`from "./x.js"`, minified `from"./x.js"`) and
            // dynamic ones (`import("./x.js")`, a library loaded by one page).
            let patterns = ['"', '\''].into_iter().flat_map(|quote| {
                ["from ", "from", "import("].map(|lead| (quote, format!("{lead}{quote}./")))
            });
            for (quote, pattern) in patterns {
                for rest in text.split(&pattern).skip(1) {
                    let target = rest.split(quote).next().unwrap();
                    referenced.push(if dir.is_empty() {
                        target.to_string()
                    } else {
                        format!("{dir}/{target}")
                    });
                }
            }
        }
        assert!(seen.len() >= 4, "{seen:?}");
    }

    #[tokio::test]
    async fn answers_unknown_assets_and_other_builds_with_not_found() {
        let first = ASSETS[0].0;
        for uri in [
            format!("/console/assets/{VERSION}/missing.js"),
            format!("/console/assets/{VERSION}/index.html"),
            format!("/console/assets/{VERSION}/..%2F..%2FCargo.toml"),
            format!("/console/assets/{VERSION}/../../Cargo.toml"),
            format!("/console/assets/{VERSION}/tests/package.json"),
            format!("/console/assets/{VERSION}/vendor/README.md"),
            format!("/console/assets/0000000000000000/{first}"),
        ] {
            let response = get(&uri).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{uri}");
            assert_eq!(header(&response, header::CACHE_CONTROL), "no-store");
        }
    }

    #[tokio::test]
    async fn redirects_the_trailing_slash_to_the_page() {
        let response = get("/console/").await;

        assert_eq!(response.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(header(&response, header::LOCATION), "/console");
    }

    /// The size budget of the console: under 600 KB gzipped, GraphiQL aside
    /// (the playground's files, which "view as user" loads on demand, are not
    /// among these). Counted as a browser would fetch them: the page and every
    /// asset, each compressed on its own.
    #[test]
    fn stays_under_its_size_budget_gzipped() {
        use std::io::Write as _;
        const BUDGET: usize = 600 * 1000;
        let gzipped = |bytes: &[u8]| {
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            encoder.write_all(bytes).unwrap();
            encoder.finish().unwrap().len()
        };
        let mut total = gzipped(PAGE.as_bytes());
        let mut sizes = Vec::new();
        for (name, body) in ASSETS {
            assert!(!body.is_empty(), "{name} is empty");
            let size = gzipped(body);
            sizes.push((size, *name));
            total += size;
        }
        sizes.sort_unstable_by(|a, b| b.cmp(a));
        assert!(
            total < BUDGET,
            "the console is {total} bytes gzipped, over its budget of {BUDGET}; largest: {:?}",
            &sizes[..sizes.len().min(5)]
        );
        // Every script the page starts from is counted.
        assert!(sizes.iter().any(|(_, name)| *name == "app.js"));
        assert!(sizes.iter().any(|(_, name)| name.starts_with("vendor/")));
    }

    #[test]
    fn lists_the_assets_sorted_for_lookup() {
        assert!(ASSETS.windows(2).all(|pair| pair[0].0 < pair[1].0));
        assert!(embedded("app.js").is_some());
    }
}
