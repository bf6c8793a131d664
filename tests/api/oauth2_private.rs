//! OAuth2 providers inside the server's network: by default a project cannot point
//! its sign-in at a loopback, private or link-local address, neither when it
//! configures a provider nor when a sign-in would fetch from one; the operator's
//! `NIMBUS_OAUTH2_ALLOW_PRIVATE` lets it.

use serde_json::json;

use crate::helpers::{TestApp, from_server, spawn_with, test_config};
use crate::oauth_provider::{CLIENT_ID, CLIENT_SECRET, TestProvider};
use crate::oauth2::{FAILURE, ann, configure, sign_in, spawn_oauth_app_with};

const CONFIGURE: &str = "mutation($input: UpdateProjectOAuth2ProviderInput!) { updateProjectOAuth2Provider(input: $input) { provider } }";

#[tokio::test]
async fn by_default_provider_urls_inside_the_network_are_refused_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(dir.path()).await, dir).await;
    assert!(!app.config.oauth2_allow_private);
    let provider = TestProvider::start().await;
    let port = provider.url.rsplit(':').next().unwrap().to_string();
    let inside = [
        provider.url.clone(),
        format!("http://localhost:{port}"),
        "https://10.0.0.1".to_string(),
        "https://[::1]:8443".to_string(),
        "https://169.254.169.254".to_string(),
        "https://[::ffff:127.0.0.1]".to_string(),
        "https://192.168.0.10/oauth".to_string(),
    ];
    for field in ["issuer", "tokenUrl", "userInfoUrl"] {
        for url in &inside {
            let answer = app
                .admin(
                    CONFIGURE,
                    json!({"input": {
                        "projectId": "default",
                        "provider": "acme",
                        "clientId": CLIENT_ID,
                        "clientSecret": CLIENT_SECRET,
                        field: url,
                    }}),
                )
                .await;
            assert_eq!(answer.code(), "INVALID_OAUTH2_PROVIDER", "{field} {url}");
            let message = answer.body["errors"][0]["message"].as_str().unwrap();
            assert!(
                message.contains(field) && message.contains("private"),
                "{field} {url}: {message}"
            );
        }
    }
    // Nothing was stored by the refused changes.
    let providers = app
        .admin(
            "{ oauth2Providers(projectId: \"default\") { provider } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(providers["oauth2Providers"], json!([]));
    // The browser's authorization URL is never fetched by the server: it may be
    // anywhere.
    configure(
        &app,
        "acme",
        json!({
            "authorizationUrl": "http://127.0.0.1:1/authorize",
            "tokenUrl": "https://provider.example/token",
            "userInfoUrl": "https://provider.example/userinfo",
        }),
    )
    .await;
    app.shutdown().await;
}

/// A replica over `app`'s database whose operator does not allow private providers.
async fn strict_replica(app: &TestApp) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = app.config.clone();
    config.database_url = Some(config.effective_database_url());
    config.data_dir = dir.path().to_path_buf();
    config.oauth2_allow_private = false;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    config.public_url = Some(format!("http://127.0.0.1:{port}"));
    let server = nimbus::Server::start(config.clone())
        .await
        .expect("the strict replica starts");
    from_server(server, app.admin_key.clone(), config, dir)
}

#[tokio::test]
async fn at_sign_in_no_discovery_token_or_userinfo_request_goes_inside_unless_allowed() {
    let app = spawn_oauth_app_with(|config| {
        config.secret = Some("the-replicas-of-this-test-share-this-secret".into());
    })
    .await;
    assert!(app.config.oauth2_allow_private);
    let provider = TestProvider::start().await;
    configure(&app, "acme", json!({"issuer": provider.url})).await;
    configure(
        &app,
        "direct",
        json!({
            "authorizationUrl": format!("{}/authorize", provider.url),
            "tokenUrl": format!("{}/token", provider.url),
            "userInfoUrl": format!("{}/userinfo", provider.url),
        }),
    )
    .await;
    // The server that allows private providers signs in through both.
    for name in ["acme", "direct"] {
        provider.sign_in_as(ann());
        let landed = sign_in(&app, name, "").await;
        assert!(landed.cookie.is_some(), "{name}: {landed:?}");
    }

    // One that does not, over the same settings, asks neither: discovery is not
    // fetched, so the sign-in does not begin...
    let strict = strict_replica(&app).await;
    let exchanged = provider.token_requests();
    provider.sign_in_as(ann());
    let refused = sign_in(&strict, "acme", "").await;
    assert!(refused.location.starts_with(FAILURE), "{refused:?}");
    assert_eq!(
        refused.param("error").as_deref(),
        Some("OAUTH2_PROVIDER_PRIVATE")
    );
    // ...and with explicit endpoints the browser comes back with a code that is not
    // exchanged at the token URL.
    provider.sign_in_as(ann());
    let refused = sign_in(&strict, "direct", "").await;
    assert!(refused.location.starts_with(FAILURE), "{refused:?}");
    assert_eq!(
        refused.param("error").as_deref(),
        Some("OAUTH2_PROVIDER_PRIVATE")
    );
    assert!(refused.cookie.is_none());
    assert_eq!(
        provider.token_requests(),
        exchanged,
        "no code was exchanged"
    );
    strict.shutdown().await;
    app.shutdown().await;
}
