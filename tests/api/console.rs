//! The console as a browser meets it through the whole server: the page and
//! its modules with their headers, and the public API calls its sign-in and
//! project switcher rely on. (The pages themselves are tested in Chromium by
//! `scripts/console-tests`.)

use serde_json::json;

use crate::helpers::spawn_app;

/// The asset URLs a page refers to in `"…"` attributes, under `prefix`.
fn referenced(page: &str, prefix: &str) -> Vec<String> {
    page.split(&format!("\"{prefix}"))
        .skip(1)
        .map(|rest| format!("{prefix}{}", rest.split('"').next().unwrap()))
        .collect()
}

#[tokio::test]
async fn serves_the_console_unframeable_under_a_self_only_csp_with_assets_cached_for_good() {
    let app = spawn_app().await;

    let response = app
        .client
        .get(format!("{}/console", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let headers = response.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none';"), "{csp}");
    assert!(csp.contains("script-src 'self';"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(headers["x-frame-options"], "DENY");
    assert_eq!(headers["cache-control"], "no-cache");
    let page = response.text().await.unwrap();

    let assets = referenced(&page, "/console/assets/");
    assert!(
        assets.iter().any(|url| url.ends_with("/app.js"))
            && assets.iter().any(|url| url.ends_with("/app.css")),
        "{assets:?}"
    );
    for url in &assets {
        let response = app
            .client
            .get(format!("{}{url}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{url}");
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=31536000, immutable",
            "{url}"
        );
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }

    // Another build's folder is not answered with this build's files.
    let version = assets[0].split('/').nth(3).unwrap();
    let other = assets[0].replace(version, "0123456789abcdef");
    let response = app
        .client
        .get(format!("{}{other}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn every_html_page_of_the_server_refuses_to_be_framed() {
    let app = spawn_app().await;
    for path in ["/console", "/playground"] {
        let response = app
            .client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        assert_eq!(response.headers()["x-frame-options"], "DENY", "{path}");
        let csp = response.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
    }
    app.shutdown().await;
}

/// The console signs a key in with `projects(first: 1)` and then works in any
/// project through `X-Nimbus-Project`: an admin key passes, a narrower key of
/// the same project does not get in.
#[tokio::test]
async fn the_console_sign_in_probe_admits_only_admin_keys_which_then_work_in_any_project() {
    let app = spawn_app().await;
    let probe = "query ConsoleSignIn { projects(first: 1) { totalCount } }";

    let admin = app
        .as_key(&app.admin_key, "default", probe, json!({}))
        .await;
    assert!(admin.ok()["projects"]["totalCount"].as_i64().unwrap() >= 1);

    let narrow = app
        .create_key("default", &["databases.read", "databases.write"])
        .await;
    let refused = app.as_key(&narrow, "default", probe, json!({})).await;
    assert_eq!(refused.code(), "SCOPE_MISSING", "{:?}", refused.body);

    app.admin(
        "mutation($input: CreateProjectInput!) { createProject(input: $input) { id } }",
        json!({"input": {"id": "shop", "name": "Shop"}}),
    )
    .await
    .ok();
    let created = app
        .as_key(
            &app.admin_key,
            "shop",
            "mutation($input: CreateDatabaseInput!) { createDatabase(input: $input) { id } }",
            json!({"input": {"id": "main", "name": "Main"}}),
        )
        .await
        .ok();
    assert_eq!(created["createDatabase"]["id"], "main");
    let in_shop = app
        .as_key(&app.admin_key, "shop", "{ databases { id } }", json!({}))
        .await
        .ok();
    assert_eq!(in_shop["databases"], json!([{"id": "main"}]));
    let in_default = app
        .as_key(&app.admin_key, "default", "{ databases { id } }", json!({}))
        .await
        .ok();
    assert_eq!(in_default["databases"], json!([]));
    app.shutdown().await;
}
