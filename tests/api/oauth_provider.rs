//! A small OAuth2 / OpenID Connect provider for the tests: discovery, an
//! authorization endpoint that approves (or denies) at once, a token endpoint that
//! checks the client secret, redirect URI and PKCE verifier, a userinfo endpoint,
//! and GitHub's `/user` + `/user/emails` shape.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::{Form, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest as _, Sha256};

pub const CLIENT_ID: &str = "nimbus-test-client";
pub const CLIENT_SECRET: &str = "nimbus-test-secret";

/// The account the provider signs in as next.
#[derive(Debug, Clone)]
pub struct Account {
    pub subject: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
}

#[derive(Default)]
struct Inner {
    next: Option<Account>,
    deny: bool,
    /// code → (PKCE challenge, redirect URI, account)
    codes: HashMap<String, (String, String, Account)>,
    /// access token → account
    tokens: HashMap<String, Account>,
    token_requests: usize,
}

#[derive(Clone)]
pub struct TestProvider {
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl TestProvider {
    pub async fn start() -> TestProvider {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let provider = TestProvider {
            url: url.clone(),
            inner: Arc::default(),
        };
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/userinfo", get(userinfo))
            .route("/user", get(github_user))
            .route("/user/emails", get(github_emails))
            .with_state(provider.clone());
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        provider
    }

    /// The account the next authorization signs in as.
    pub fn sign_in_as(&self, account: Account) {
        let mut inner = self.inner.lock().unwrap();
        inner.next = Some(account);
        inner.deny = false;
    }

    /// The next authorization is refused by the "user".
    pub fn deny_next(&self) {
        self.inner.lock().unwrap().deny = true;
    }

    pub fn token_requests(&self) -> usize {
        self.inner.lock().unwrap().token_requests
    }
}

async fn discovery(State(provider): State<TestProvider>) -> Json<serde_json::Value> {
    let base = &provider.url;
    Json(json!({
        "issuer": base,
        "authorization_endpoint": format!("{base}/authorize"),
        "token_endpoint": format!("{base}/token"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
    }))
}

#[derive(Deserialize)]
struct AuthorizeQuery {
    client_id: String,
    redirect_uri: String,
    response_type: String,
    state: String,
    code_challenge: Option<String>,
    code_challenge_method: Option<String>,
}

async fn authorize(
    State(provider): State<TestProvider>,
    Query(query): Query<AuthorizeQuery>,
) -> Response {
    if query.client_id != CLIENT_ID || query.response_type != "code" {
        return (StatusCode::BAD_REQUEST, "unknown client or response type").into_response();
    }
    if query.code_challenge_method.as_deref() != Some("S256") {
        return (StatusCode::BAD_REQUEST, "PKCE S256 required").into_response();
    }
    let mut redirect = url::Url::parse(&query.redirect_uri).unwrap();
    let mut inner = provider.inner.lock().unwrap();
    if inner.deny {
        inner.deny = false;
        redirect
            .query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("state", &query.state);
        return Redirect::to(redirect.as_str()).into_response();
    }
    let Some(account) = inner.next.clone() else {
        return (StatusCode::BAD_REQUEST, "no account to sign in as").into_response();
    };
    let code = format!("code-{}", inner.codes.len() + inner.tokens.len() + 1);
    inner.codes.insert(
        code.clone(),
        (
            query.code_challenge.unwrap_or_default(),
            query.redirect_uri.clone(),
            account,
        ),
    );
    redirect
        .query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", &query.state);
    Redirect::to(redirect.as_str()).into_response()
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    code: String,
    redirect_uri: String,
    code_verifier: String,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// Client credentials from HTTP Basic or from the form.
fn client_credentials(headers: &HeaderMap, form: &TokenForm) -> Option<(String, String)> {
    if let Some(basic) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
    {
        let decoded = String::from_utf8(STANDARD.decode(basic).ok()?).ok()?;
        let (id, secret) = decoded.split_once(':')?;
        let unescape = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        return Some((unescape(id), unescape(secret)));
    }
    Some((form.client_id.clone()?, form.client_secret.clone()?))
}

async fn token(
    State(provider): State<TestProvider>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let refuse =
        |error: &str| (StatusCode::BAD_REQUEST, Json(json!({"error": error}))).into_response();
    let mut inner = provider.inner.lock().unwrap();
    inner.token_requests += 1;
    if form.grant_type != "authorization_code" {
        return refuse("unsupported_grant_type");
    }
    match client_credentials(&headers, &form) {
        Some((id, secret)) if id == CLIENT_ID && secret == CLIENT_SECRET => {}
        _ => return refuse("invalid_client"),
    }
    let Some((challenge, redirect_uri, account)) = inner.codes.remove(&form.code) else {
        return refuse("invalid_grant");
    };
    if redirect_uri != form.redirect_uri {
        return refuse("invalid_grant");
    }
    let computed = URL_SAFE_NO_PAD.encode(Sha256::digest(form.code_verifier.as_bytes()));
    if computed != challenge {
        return refuse("invalid_grant");
    }
    let access_token = format!("token-for-{}", account.subject);
    inner.tokens.insert(access_token.clone(), account);
    Json(json!({"access_token": access_token, "token_type": "bearer", "expires_in": 3600}))
        .into_response()
}

fn bearer_account(provider: &TestProvider, headers: &HeaderMap) -> Option<Account> {
    let token = headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?;
    provider.inner.lock().unwrap().tokens.get(token).cloned()
}

async fn userinfo(State(provider): State<TestProvider>, headers: HeaderMap) -> Response {
    match bearer_account(&provider, &headers) {
        Some(a) => Json(json!({
            "sub": a.subject,
            "email": a.email,
            "email_verified": a.email_verified,
            "name": a.name,
        }))
        .into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn github_user(State(provider): State<TestProvider>, headers: HeaderMap) -> Response {
    match bearer_account(&provider, &headers) {
        Some(a) => Json(json!({
            "id": a.subject.parse::<u64>().unwrap_or(1),
            "login": a.name,
            "name": null,
            "email": null,
        }))
        .into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}

async fn github_emails(State(provider): State<TestProvider>, headers: HeaderMap) -> Response {
    match bearer_account(&provider, &headers) {
        Some(a) => Json(json!([
            {"email": "old-unverified@example.com", "primary": false, "verified": false},
            {"email": a.email, "primary": true, "verified": a.email_verified},
        ]))
        .into_response(),
        None => StatusCode::UNAUTHORIZED.into_response(),
    }
}
