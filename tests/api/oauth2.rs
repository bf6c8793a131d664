//! OAuth2 / OpenID Connect sign-in against a provider the test starts: the browser's
//! redirects are followed by hand, as a browser would, and the resulting session
//! is used like any other.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_with, test_config};
use crate::oauth_provider::{Account, CLIENT_ID, CLIENT_SECRET, TestProvider};

pub const SUCCESS: &str = "http://localhost/signed-in";
pub const FAILURE: &str = "http://localhost/failed";

/// A server whose `NIMBUS_PUBLIC_URL` is its own address, as OAuth2 requires: the
/// port is chosen before the server starts.
pub async fn spawn_oauth_app() -> TestApp {
    spawn_oauth_app_with(|_| {}).await
}

/// [`spawn_oauth_app`] with more settings.
pub async fn spawn_oauth_app_with(adjust: impl FnOnce(&mut nimbus::config::Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.listen = format!("127.0.0.1:{port}").parse().unwrap();
    config.public_url = Some(format!("http://127.0.0.1:{port}"));
    // The test provider listens on loopback.
    config.oauth2_allow_private = true;
    adjust(&mut config);
    spawn_with(config, dir).await
}

/// Where a sign-in ended: the last redirect and the cookies it set.
#[derive(Debug)]
pub struct Landing {
    pub status: u16,
    pub location: String,
    /// The session cookie, when one was set.
    pub cookie: Option<String>,
    /// The OAuth2 nonce cookie, when one was set (or cleared).
    pub nonce: Option<String>,
    pub body: String,
}

impl Landing {
    pub fn param(&self, name: &str) -> Option<String> {
        url::Url::parse(&self.location)
            .ok()?
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// The session secret from the `Set-Cookie` header.
    pub fn session_secret(&self) -> String {
        let cookie = self.cookie.as_deref().expect("a session cookie");
        assert!(cookie.starts_with("nimbus_session_default="), "{cookie}");
        assert!(cookie.contains("HttpOnly"), "{cookie}");
        assert!(cookie.contains("SameSite=Lax"), "{cookie}");
        cookie["nimbus_session_default=".len()..]
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }
}

pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn get(client: &reqwest::Client, url: &str) -> Landing {
    get_with(client, url, None).await
}

/// A GET sending `cookie` (`name=value`), as a browser that holds it would.
pub async fn get_with(client: &reqwest::Client, url: &str, cookie: Option<&str>) -> Landing {
    let mut request = client.get(url);
    if let Some(cookie) = cookie {
        request = request.header("cookie", cookie);
    }
    let response = request.send().await.expect("request sent");
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(String::from)
        .unwrap_or_default();
    let cookies: Vec<String> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(String::from)
        .collect();
    let named = |prefix: &str| cookies.iter().find(|c| c.starts_with(prefix)).cloned();
    let cookie = named("nimbus_session_");
    let nonce = named("nimbus_oauth2_");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Landing {
        status,
        location,
        cookie,
        nonce,
        body,
    }
}

/// `name=value` of a `Set-Cookie` header.
pub fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

/// Follows the whole dance: Nimbus → provider → Nimbus's callback → the app.
pub async fn sign_in(app: &TestApp, provider: &str, extra: &str) -> Landing {
    let client = browser();
    let start = format!(
        "{}/v1/account/oauth2/{provider}?project=default&success={SUCCESS}&failure={FAILURE}{extra}",
        app.url
    );
    let to_provider = get(&client, &start).await;
    assert_eq!(to_provider.status, 302, "{to_provider:?}");
    if to_provider.location.starts_with("http://localhost/") {
        return to_provider;
    }
    let nonce = to_provider.nonce.as_deref().map(cookie_pair);
    let to_callback = get(&client, &to_provider.location).await;
    assert!((301..=308).contains(&to_callback.status), "{to_callback:?}");
    assert!(
        to_callback.location.starts_with(&format!(
            "{}/v1/account/oauth2/callback/{provider}/default?",
            app.url
        )),
        "{to_callback:?}"
    );
    get_with(&client, &to_callback.location, nonce.as_deref()).await
}

pub async fn configure(app: &TestApp, provider: &str, settings: Value) -> Value {
    let mut input = json!({
        "projectId": "default",
        "provider": provider,
        "enabled": true,
        "clientId": CLIENT_ID,
        "clientSecret": CLIENT_SECRET,
    });
    input
        .as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    app.admin(
        "mutation($input: UpdateProjectOAuth2ProviderInput!) { updateProjectOAuth2Provider(input: $input) { provider enabled clientId issuer scopes signInPath callbackPath } }",
        json!({"input": input}),
    )
    .await
    .ok()["updateProjectOAuth2Provider"]
        .clone()
}

pub fn ann() -> Account {
    Account {
        subject: "ann-123".into(),
        email: "ann@example.com".into(),
        email_verified: true,
        name: "Ann".into(),
    }
}

const ACCOUNT: &str = "{ account { id email name emailVerified } accountIdentities { provider providerUid providerEmail userId } }";

#[tokio::test]
async fn an_oidc_sign_in_creates_a_verified_user_once_and_sets_the_session_cookie() {
    let app = spawn_oauth_app().await;
    let provider = TestProvider::start().await;
    let configured = configure(&app, "acme", json!({"issuer": provider.url})).await;
    assert_eq!(configured["scopes"], json!(["openid", "email", "profile"]));
    assert_eq!(
        configured["signInPath"],
        "/v1/account/oauth2/acme?project=default"
    );
    assert_eq!(
        configured["callbackPath"],
        "/v1/account/oauth2/callback/acme/default"
    );

    provider.sign_in_as(ann());
    let landing = sign_in(&app, "acme", "").await;
    assert_eq!(landing.status, 302, "{landing:?}");
    assert_eq!(landing.location, SUCCESS);
    let secret = landing.session_secret();
    let me = app.as_session(&secret, ACCOUNT, json!({})).await.ok();
    assert_eq!(me["account"]["email"], "ann@example.com");
    assert_eq!(me["account"]["name"], "Ann");
    assert_eq!(me["account"]["emailVerified"], true);
    assert_eq!(
        me["accountIdentities"],
        json!([{"provider": "acme", "providerUid": "ann-123", "providerEmail": "ann@example.com", "userId": me["account"]["id"]}])
    );

    // The cookie alone signs the browser in.
    let by_cookie = app
        .post(
            json!({"query": "{ account { id } }"}),
            &[("cookie", &format!("nimbus_session_default={secret}"))],
        )
        .await
        .ok();
    assert_eq!(by_cookie["account"]["id"], me["account"]["id"]);

    // Signing in again finds the same user.
    let again = sign_in(&app, "acme", "").await;
    let me_again = app
        .as_session(&again.session_secret(), ACCOUNT, json!({}))
        .await
        .ok();
    assert_eq!(me_again["account"]["id"], me["account"]["id"]);
    assert_eq!(me_again["accountIdentities"].as_array().unwrap().len(), 1);
    let users = app.admin("{ users { totalCount } }", json!({})).await.ok();
    assert_eq!(users["users"]["totalCount"], 1);
    app.shutdown().await;
}

#[tokio::test]
async fn token_mode_hands_an_app_a_one_time_secret_for_create_session() {
    let app = spawn_oauth_app().await;
    let provider = TestProvider::start().await;
    configure(&app, "acme", json!({"issuer": provider.url})).await;
    provider.sign_in_as(ann());
    let landing = sign_in(&app, "acme", "&mode=token").await;
    assert_eq!(landing.status, 302);
    assert!(landing.location.starts_with(SUCCESS), "{landing:?}");
    assert!(landing.cookie.is_none(), "token mode sets no cookie");
    let user_id = landing.param("userId").expect("userId");
    let secret = landing.param("secret").expect("secret");
    let create = "mutation($u: ID!, $s: String!) { createSession(input: {userId: $u, secret: $s}) { secret session { userId provider } } }";
    let session = app
        .post(
            json!({"query": create, "variables": {"u": user_id, "s": secret}}),
            &[],
        )
        .await
        .ok();
    assert_eq!(
        session["createSession"]["session"]["userId"],
        user_id.as_str()
    );
    assert_eq!(session["createSession"]["session"]["provider"], "oauth2");
    let replay = app
        .post(
            json!({"query": create, "variables": {"u": user_id, "s": secret}}),
            &[],
        )
        .await;
    assert_eq!(replay.code(), "INVALID_TOKEN");
    app.shutdown().await;
}

#[tokio::test]
async fn github_sign_in_takes_the_verified_primary_email_and_links_an_existing_user() {
    let app = spawn_oauth_app().await;
    let provider = TestProvider::start().await;
    // A user who signed up with a password before.
    let created = app
        .admin(
            "mutation { createUser(input: {email: \"gus@example.com\", password: \"long-enough-1\"}) { id } }",
            json!({}),
        )
        .await
        .ok();
    configure(
        &app,
        "github",
        json!({
            "authorizationUrl": format!("{}/authorize", provider.url),
            "tokenUrl": format!("{}/token", provider.url),
            "userInfoUrl": format!("{}/user", provider.url),
        }),
    )
    .await;
    provider.sign_in_as(Account {
        subject: "4242".into(),
        email: "gus@example.com".into(),
        email_verified: true,
        name: "gus-login".into(),
    });
    let landing = sign_in(&app, "github", "").await;
    assert_eq!(landing.location, SUCCESS, "{landing:?}");
    let me = app
        .as_session(&landing.session_secret(), ACCOUNT, json!({}))
        .await
        .ok();
    assert_eq!(me["account"]["id"], created["createUser"]["id"]);
    assert_eq!(me["accountIdentities"][0]["providerUid"], "4242");
    assert_eq!(
        me["accountIdentities"][0]["providerEmail"],
        "gus@example.com"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn failed_sign_ins_go_to_the_failure_url_with_a_code() {
    let app = spawn_oauth_app().await;
    let provider = TestProvider::start().await;
    configure(&app, "acme", json!({"issuer": provider.url})).await;

    // The user says no at the provider.
    provider.deny_next();
    let denied = sign_in(&app, "acme", "").await;
    assert!(denied.location.starts_with(FAILURE), "{denied:?}");
    assert_eq!(denied.param("error").as_deref(), Some("OAUTH2_DENIED"));
    assert!(denied.cookie.is_none());

    // An unverified email that belongs to an existing user does not take it over.
    app.admin(
        "mutation { createUser(input: {email: \"eve@example.com\", password: \"long-enough-1\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    provider.sign_in_as(Account {
        subject: "eve-1".into(),
        email: "eve@example.com".into(),
        email_verified: false,
        name: "Eve".into(),
    });
    let takeover = sign_in(&app, "acme", "").await;
    assert_eq!(
        takeover.param("error").as_deref(),
        Some("OAUTH2_EMAIL_IN_USE")
    );
    assert!(takeover.cookie.is_none());

    // A blocked user stays out.
    provider.sign_in_as(ann());
    let first = sign_in(&app, "acme", "").await;
    let me = app
        .as_session(&first.session_secret(), "{ account { id } }", json!({}))
        .await
        .ok();
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, blocked: true}) { id } }",
        json!({"id": me["account"]["id"]}),
    )
    .await
    .ok();
    let blocked = sign_in(&app, "acme", "").await;
    assert_eq!(blocked.param("error").as_deref(), Some("USER_BLOCKED"));

    // A provider that refuses our client secret.
    configure(&app, "acme", json!({"clientSecret": "not-the-secret"})).await;
    let before = provider.token_requests();
    let refused = sign_in(&app, "acme", "").await;
    assert_eq!(
        refused.param("error").as_deref(),
        Some("OAUTH2_PROVIDER_FAILED")
    );
    assert_eq!(provider.token_requests(), before + 1);

    // A disabled provider never reaches the provider.
    configure(&app, "acme", json!({"enabled": false})).await;
    let disabled = sign_in(&app, "acme", "").await;
    assert_eq!(
        disabled.param("error").as_deref(),
        Some("AUTH_METHOD_DISABLED")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn callbacks_and_return_urls_are_checked() {
    let app = spawn_oauth_app().await;
    let provider = TestProvider::start().await;
    configure(&app, "acme", json!({"issuer": provider.url})).await;
    provider.sign_in_as(ann());
    let client = browser();

    // A success URL on a host the project does not allow.
    let foreign = get(
        &client,
        &format!(
            "{}/v1/account/oauth2/acme?success=https://evil.example/steal",
            app.url
        ),
    )
    .await;
    assert_eq!(foreign.status, 400, "{foreign:?}");
    assert!(
        foreign.body.contains("INVALID_REDIRECT_URL"),
        "{}",
        foreign.body
    );

    // A state can be used once; a made-up one not at all.
    let to_provider = get(
        &client,
        &format!("{}/v1/account/oauth2/acme?success={SUCCESS}", app.url),
    )
    .await;
    let nonce = to_provider.nonce.as_deref().map(cookie_pair);
    let to_callback = get(&client, &to_provider.location).await;
    let first = get_with(&client, &to_callback.location, nonce.as_deref()).await;
    assert_eq!(first.location, SUCCESS);
    let replay = get_with(&client, &to_callback.location, nonce.as_deref()).await;
    assert_eq!(replay.status, 400);
    assert!(
        replay.body.contains("OAUTH2_STATE_INVALID"),
        "{}",
        replay.body
    );
    let forged = get(
        &client,
        &format!(
            "{}/v1/account/oauth2/callback/acme/default?code=x&state=made-up",
            app.url
        ),
    )
    .await;
    assert_eq!(forged.status, 400);
    assert!(
        forged.body.contains("OAUTH2_STATE_INVALID"),
        "{}",
        forged.body
    );

    // An unknown provider.
    let unknown = sign_in(&app, "nope", "").await;
    assert_eq!(
        unknown.param("error").as_deref(),
        Some("AUTH_METHOD_DISABLED")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn provider_settings_are_admin_only_and_never_show_the_secret() {
    let app = spawn_oauth_app().await;
    let enabling_without_secret = app
        .admin(
            "mutation { updateProjectOAuth2Provider(input: {projectId: \"default\", provider: \"okta\", enabled: true, clientId: \"x\"}) { provider } }",
            json!({}),
        )
        .await;
    assert_eq!(enabling_without_secret.code(), "INVALID_OAUTH2_PROVIDER");
    let bad_name = app
        .admin(
            "mutation { updateProjectOAuth2Provider(input: {projectId: \"default\", provider: \"Bad Name\"}) { provider } }",
            json!({}),
        )
        .await;
    assert_eq!(bad_name.code(), "INVALID_OAUTH2_PROVIDER");
    let plain_http = app
        .admin(
            "mutation { updateProjectOAuth2Provider(input: {projectId: \"default\", provider: \"okta\", issuer: \"http://idp.example.com\"}) { provider } }",
            json!({}),
        )
        .await;
    assert_eq!(plain_http.code(), "INVALID_OAUTH2_PROVIDER");

    configure(&app, "google", json!({})).await;
    let listed = app
        .admin(
            "{ oauth2Providers(projectId: \"default\") { provider enabled clientId issuer } }",
            json!({}),
        )
        .await;
    assert!(!listed.body.to_string().contains(CLIENT_SECRET));
    assert_eq!(
        listed.ok()["oauth2Providers"],
        json!([{"provider": "google", "enabled": true, "clientId": CLIENT_ID, "issuer": null}])
    );
    let introspected = app
        .admin(
            "{ __type(name: \"OAuth2Provider\") { fields { name } } }",
            json!({}),
        )
        .await
        .ok();
    assert!(!introspected.to_string().contains("clientSecret"));

    let key = app.create_key("default", &["users.read"]).await;
    let by_key = app
        .as_key(
            &key,
            "default",
            "{ oauth2Providers(projectId: \"default\") { provider } }",
            json!({}),
        )
        .await;
    assert_eq!(by_key.code(), "SCOPE_MISSING");

    let deleted = app
        .admin(
            "mutation { deleteProjectOAuth2Provider(input: {projectId: \"default\", provider: \"google\"}) { provider } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(deleted["deleteProjectOAuth2Provider"]["provider"], "google");
    let again = app
        .admin(
            "mutation { deleteProjectOAuth2Provider(input: {projectId: \"default\", provider: \"google\"}) { provider } }",
            json!({}),
        )
        .await;
    assert_eq!(again.code(), "OAUTH2_PROVIDER_NOT_FOUND");
    app.shutdown().await;
}
