//! Sign-in through OAuth2 and OpenID Connect providers: the providers a project
//! configures (GitHub, Google, GitLab, or any OIDC issuer under a name of its own),
//! the authorization-code flow with PKCE, and the identities that link a provider's
//! account to a user.
//!
//! The browser leaves at `/v1/account/oauth2/{provider}` and comes back to
//! `/v1/account/oauth2/callback/{provider}/{project}`; in between only the digest of
//! the `state` is stored, so any replica can finish a sign-in another one started,
//! and each state works once. The state is also bound to the browser that started
//! the sign-in by a nonce cookie ([`browser_nonce`]): a callback URL planted in
//! another browser (login CSRF) does not sign that browser in.

use oauth2::basic::BasicClient;
use oauth2::{
    AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse as _, TokenUrl,
};
use serde::Deserialize;
use std::net::IpAddr;
use std::time::Duration;

use crate::AppState;
use crate::auth::scopes::{UsersRead, UsersWrite};
use crate::auth::sealing::Sealer;
use crate::auth::secrets;
use crate::auth::{AdminGrant, Grant};
use crate::db::{DbErrorExt as _, Page, ids, now_millis};
use crate::error::{AppError, AppResult, codes};
use crate::outbound;
use crate::services::projects::AuthSettings;
use crate::services::users::service::{
    ClientInfo, commit_logged, insert_passwordless_user, insert_session_in, session_opened,
    user_created, with_proven_mailbox,
};
use crate::services::users::{Session, User, store as users_store};

/// How long a browser may take at the provider.
const STATE_TTL_MS: i64 = 10 * 60 * 1000;
/// How long the one-time secret of the token mode lasts.
const TOKEN_TTL_MS: i64 = 5 * 60 * 1000;
/// The kind of the one-time token the token mode hands to an app.
pub const OAUTH2_TOKEN: &str = "oauth2";
const SEALING_PURPOSE: &str = "oauth2-client-secret";
const MAX_URL: usize = 2048;

/// How a provider is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// GitHub's OAuth2 apps: no OIDC; the profile from `/user`, the verified email
    /// from `/user/emails`.
    GitHub,
    /// OpenID Connect: endpoints from the issuer's discovery document, the profile
    /// from its userinfo endpoint.
    Oidc,
}

/// What a project stored for one provider.
#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub project_id: String,
    pub provider: String,
    pub enabled: bool,
    pub client_id: String,
    /// Sealed; see [`Sealer`].
    sealed_secret: String,
    pub issuer: Option<String>,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub userinfo_url: Option<String>,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl ProviderConfig {
    pub fn flavor(&self) -> Flavor {
        flavor_of(&self.provider)
    }
}

fn flavor_of(provider: &str) -> Flavor {
    if provider == "github" {
        Flavor::GitHub
    } else {
        Flavor::Oidc
    }
}

/// The issuer a well-known provider uses unless told otherwise.
fn default_issuer(provider: &str) -> Option<&'static str> {
    match provider {
        "google" => Some("https://accounts.google.com"),
        "gitlab" => Some("https://gitlab.com"),
        _ => None,
    }
}

fn default_scopes(flavor: Flavor) -> Vec<String> {
    let scopes: &[&str] = match flavor {
        Flavor::GitHub => &["read:user", "user:email"],
        Flavor::Oidc => &["openid", "email", "profile"],
    };
    scopes.iter().map(|s| s.to_string()).collect()
}

/// A change to a project's provider, from `updateProjectOAuth2Provider`.
#[derive(Debug, Default)]
pub struct ProviderChanges {
    pub enabled: Option<bool>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    pub issuer: Option<String>,
    pub authorization_url: Option<String>,
    pub token_url: Option<String>,
    pub userinfo_url: Option<String>,
    pub scopes: Option<Vec<String>>,
}

fn invalid(field: &str, reason: impl Into<String>) -> AppError {
    AppError::Invalid {
        code: codes::INVALID_OAUTH2_PROVIDER,
        field: field.into(),
        reason: reason.into(),
    }
}

/// A provider name: lower-case letters, digits and `-`, 2 to 32 long.
pub fn check_provider_name(provider: &str) -> AppResult<()> {
    let ok = (2..=32).contains(&provider.len())
        && provider
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && provider.as_bytes()[0].is_ascii_lowercase();
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "provider",
            "use 2 to 32 lower-case letters, digits and `-`, starting with a letter",
        ))
    }
}

/// An endpoint URL: absolute `https` (or `http` to a loopback host, for development).
/// One the server fetches (`fetched`: the issuer, token and userinfo URLs) must also
/// not resolve to a private, loopback or reserved address unless the operator allows
/// it; a name that does not resolve yet is taken, since it is checked again at use.
async fn check_endpoint(
    state: &AppState,
    field: &str,
    value: &str,
    fetched: bool,
) -> AppResult<url::Url> {
    if value.len() > MAX_URL {
        return Err(invalid(field, "longer than 2048 characters"));
    }
    let url = url::Url::parse(value).map_err(|_| invalid(field, "not an absolute URL"))?;
    let loopback = url
        .host_str()
        .is_some_and(|host| host == "localhost" || is_loopback(host));
    match url.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(invalid(
                field,
                "use https (plain http only to localhost or a loopback address)",
            ));
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid(field, outbound::Refused::Credentials.to_string()));
    }
    if fetched {
        match outbound::allowed_addresses(&url, reachable(state)).await {
            Ok(_) | Err(outbound::Refused::Unresolved) => {}
            Err(refused) => return Err(invalid(field, refused.to_string())),
        }
    }
    Ok(url)
}

fn is_loopback(host: &str) -> bool {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

/// Which addresses the server may ask a provider at.
fn reachable(state: &AppState) -> fn(IpAddr) -> bool {
    if state.config.oauth2_allow_private {
        outbound::any_address
    } else {
        outbound::is_public
    }
}

/// How long one request to a provider may take, connection included.
const PROVIDER_TIMEOUT: Duration = Duration::from_secs(15);

/// A client for one request to a provider's `what` endpoint at `url`: the URL is
/// checked again (a discovery document, or a name that resolves elsewhere since it
/// was configured, may point inside), and the client connects only to the addresses
/// so checked and follows no redirect.
async fn provider_client(
    state: &AppState,
    what: &str,
    url: &str,
) -> AppResult<(url::Url, reqwest::Client)> {
    let refused = |refused: outbound::Refused| {
        tracing::warn!(%url, %refused, "an OAuth2 provider endpoint was not asked");
        AppError::Upstream {
            code: if refused == outbound::Refused::Private {
                codes::OAUTH2_PROVIDER_PRIVATE
            } else {
                codes::OAUTH2_PROVIDER_FAILED
            },
            reason: format!("the provider's {what} URL {refused}"),
        }
    };
    let url = outbound::check_url(url, MAX_URL).map_err(refused)?;
    let addresses = outbound::allowed_addresses(&url, reachable(state))
        .await
        .map_err(refused)?;
    let client = outbound::pinned_client(
        &url,
        &addresses,
        reqwest::Client::builder()
            .timeout(PROVIDER_TIMEOUT)
            .user_agent(concat!("nimbus/", env!("CARGO_PKG_VERSION"), " (oauth2)")),
        PROVIDER_TIMEOUT,
    )
    .map_err(|err| AppError::Internal(anyhow::anyhow!("OAuth2 provider client: {err}")))?;
    Ok((url, client))
}

/// Creates or changes a provider of the admin grant's project.
pub async fn configure_provider(
    state: &AppState,
    admin: &AdminGrant,
    provider: &str,
    changes: ProviderChanges,
) -> AppResult<ProviderConfig> {
    let project_id = admin.project();
    check_provider_name(provider)?;
    let existing = store::find_provider(state, project_id, provider).await?;
    let now = now_millis();
    let sealer = sealer(state);
    let mut config = existing.unwrap_or_else(|| ProviderConfig {
        project_id: project_id.to_string(),
        provider: provider.to_string(),
        enabled: false,
        client_id: String::new(),
        sealed_secret: String::new(),
        issuer: None,
        authorization_url: None,
        token_url: None,
        userinfo_url: None,
        scopes: default_scopes(flavor_of(provider)),
        created_at: now,
        updated_at: now,
    });
    let url_setting = async |field: &str,
                             value: Option<String>,
                             fetched: bool|
           -> AppResult<Option<Option<String>>> {
        match value {
            None => Ok(None),
            Some(v) if v.is_empty() => Ok(Some(None)),
            Some(v) => check_endpoint(state, field, &v, fetched)
                .await
                .map(|_| Some(Some(v))),
        }
    };
    if let Some(enabled) = changes.enabled {
        config.enabled = enabled;
    }
    if let Some(client_id) = changes.client_id {
        if client_id.is_empty() || client_id.len() > 512 {
            return Err(invalid("clientId", "give 1 to 512 characters"));
        }
        config.client_id = client_id;
    }
    if let Some(secret) = changes.client_secret {
        if secret.is_empty() || secret.len() > 1024 {
            return Err(invalid("clientSecret", "give 1 to 1024 characters"));
        }
        config.sealed_secret = sealer.seal(&secret);
    }
    if let Some(issuer) = url_setting("issuer", changes.issuer, true).await? {
        config.issuer = issuer.map(|i| i.trim_end_matches('/').to_string());
    }
    if let Some(v) = url_setting("authorizationUrl", changes.authorization_url, false).await? {
        config.authorization_url = v;
    }
    if let Some(v) = url_setting("tokenUrl", changes.token_url, true).await? {
        config.token_url = v;
    }
    if let Some(v) = url_setting("userInfoUrl", changes.userinfo_url, true).await? {
        config.userinfo_url = v;
    }
    if let Some(scopes) = changes.scopes {
        if scopes.len() > 50
            || scopes
                .iter()
                .any(|s| s.is_empty() || s.len() > 200 || s.contains(char::is_whitespace))
        {
            return Err(invalid(
                "scopes",
                "give at most 50 scopes, each 1 to 200 characters without spaces",
            ));
        }
        config.scopes = scopes;
    }
    if config.enabled {
        if config.client_id.is_empty() || config.sealed_secret.is_empty() {
            return Err(invalid(
                "enabled",
                "a provider needs a clientId and a clientSecret before it is enabled",
            ));
        }
        let explicit = config.authorization_url.is_some()
            && config.token_url.is_some()
            && config.userinfo_url.is_some();
        if config.flavor() == Flavor::Oidc
            && !explicit
            && config.issuer.is_none()
            && default_issuer(provider).is_none()
        {
            return Err(invalid(
                "issuer",
                "an OpenID Connect provider needs its issuer URL (or all three endpoint URLs)",
            ));
        }
    }
    config.updated_at = now;
    store::save_provider(state, &config, &config.sealed_secret).await?;
    Ok(config)
}

/// The providers of the admin grant's project.
pub async fn list_providers(
    state: &AppState,
    admin: &AdminGrant,
) -> AppResult<Vec<ProviderConfig>> {
    store::list_providers(state, admin.project()).await
}

/// Removes a provider of the admin grant's project.
pub async fn delete_provider(
    state: &AppState,
    admin: &AdminGrant,
    provider: &str,
) -> AppResult<()> {
    check_provider_name(provider)?;
    if store::delete_provider(state, admin.project(), provider).await? {
        Ok(())
    } else {
        Err(AppError::NotFound {
            what: "OAuth2 provider",
            id: provider.into(),
        })
    }
}

fn sealer(state: &AppState) -> Sealer {
    Sealer::new(&state.secret, SEALING_PURPOSE)
}

/// The three endpoints of a provider, after discovery.
#[derive(Debug, Clone)]
struct Endpoints {
    authorization: String,
    token: String,
    userinfo: String,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    userinfo_endpoint: Option<String>,
}

fn provider_failed(reason: impl Into<String>) -> AppError {
    AppError::Upstream {
        code: codes::OAUTH2_PROVIDER_FAILED,
        reason: reason.into(),
    }
}

async fn endpoints(state: &AppState, config: &ProviderConfig) -> AppResult<Endpoints> {
    let (mut authorization, mut token, mut userinfo) = (
        config.authorization_url.clone(),
        config.token_url.clone(),
        config.userinfo_url.clone(),
    );
    if config.flavor() == Flavor::GitHub {
        authorization.get_or_insert_with(|| "https://github.com/login/oauth/authorize".into());
        token.get_or_insert_with(|| "https://github.com/login/oauth/access_token".into());
        userinfo.get_or_insert_with(|| "https://api.github.com/user".into());
    }
    if authorization.is_none() || token.is_none() || userinfo.is_none() {
        let issuer = config
            .issuer
            .clone()
            .or_else(|| default_issuer(&config.provider).map(String::from))
            .ok_or_else(|| invalid("issuer", "the provider has no issuer configured"))?;
        let (url, http) = provider_client(
            state,
            "discovery",
            &format!("{issuer}/.well-known/openid-configuration"),
        )
        .await?;
        let discovery: Discovery = http
            .get(url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|err| {
                tracing::warn!(error = %err, %issuer, "OpenID Connect discovery failed");
                provider_failed("the provider's OpenID Connect discovery failed")
            })?
            .json()
            .await
            .map_err(|err| {
                tracing::warn!(error = %err, %issuer, "unreadable OpenID Connect discovery");
                provider_failed("the provider's OpenID Connect discovery is unreadable")
            })?;
        if discovery.issuer.trim_end_matches('/') != issuer {
            tracing::warn!(expected = %issuer, got = %discovery.issuer, "OpenID Connect issuer mismatch");
            return Err(provider_failed(
                "the provider's discovery document names another issuer",
            ));
        }
        authorization.get_or_insert(discovery.authorization_endpoint);
        token.get_or_insert(discovery.token_endpoint);
        if userinfo.is_none() {
            userinfo = discovery.userinfo_endpoint;
        }
    }
    match (authorization, token, userinfo) {
        (Some(authorization), Some(token), Some(userinfo)) => Ok(Endpoints {
            authorization,
            token,
            userinfo,
        }),
        _ => Err(provider_failed(
            "the provider publishes no userinfo endpoint",
        )),
    }
}

/// Where a sign-in goes back to, and how it hands over the session.
#[derive(Debug, Clone)]
pub struct Start {
    pub provider: String,
    pub success_url: String,
    pub failure_url: String,
    /// Hand an app a one-time `userId` + `secret` for `createSession` instead of
    /// setting the session cookie.
    pub token_mode: bool,
    pub scopes: Vec<String>,
}

/// The `success`/`failure` URL of a sign-in, to a host the project allows.
pub fn check_return_url(policy: &AuthSettings, field: &str, value: &str) -> AppResult<String> {
    super::service::check_redirect_url(policy, field, value).map(String::from)
}

async fn enabled_provider(
    state: &AppState,
    project_id: &str,
    provider: &str,
) -> AppResult<ProviderConfig> {
    check_provider_name(provider).map_err(|_| AppError::MethodDisabled { method: "OAuth2" })?;
    match store::find_provider(state, project_id, provider).await? {
        Some(config) if config.enabled => Ok(config),
        _ => Err(AppError::MethodDisabled { method: "OAuth2" }),
    }
}

fn client(
    config: &ProviderConfig,
    secret: String,
    endpoints: &Endpoints,
    callback: &str,
) -> AppResult<
    BasicClient<
        oauth2::EndpointSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointNotSet,
        oauth2::EndpointSet,
    >,
> {
    let bad = |what: &str| provider_failed(format!("the provider's {what} URL is not valid"));
    Ok(BasicClient::new(ClientId::new(config.client_id.clone()))
        .set_client_secret(ClientSecret::new(secret))
        .set_auth_uri(
            AuthUrl::new(endpoints.authorization.clone()).map_err(|_| bad("authorization"))?,
        )
        .set_token_uri(TokenUrl::new(endpoints.token.clone()).map_err(|_| bad("token"))?)
        .set_redirect_uri(RedirectUrl::new(callback.to_string()).map_err(|_| bad("callback"))?)
        // GitHub reads the credentials from the form; OIDC servers must accept HTTP
        // Basic (client_secret_basic is the default method of the spec).
        .set_auth_type(match config.flavor() {
            Flavor::GitHub => AuthType::RequestBody,
            Flavor::Oidc => AuthType::BasicAuth,
        }))
}

/// The nonce the browser that starts a sign-in keeps in a cookie, and must show at
/// the callback with the sign-in's `state`: an HMAC of the state under the server
/// secret, so nothing more is stored, any replica can check it, and nobody without
/// the browser's cookie can finish the sign-in in it.
pub fn browser_nonce(state: &AppState, state_secret: &str) -> String {
    use hmac::Mac as _;
    let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(state.secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"nimbus oauth2 browser nonce\0");
    mac.update(state_secret.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// A sign-in begun: where to send the browser, and the nonce it must keep.
pub struct Begun {
    pub authorize_url: String,
    pub nonce: String,
}

/// Begins a sign-in: records the state and returns the provider's authorization URL
/// to send the browser to.
pub async fn begin(
    state: &AppState,
    project_id: &str,
    callback: &str,
    start: Start,
) -> AppResult<Begun> {
    let config = enabled_provider(state, project_id, &start.provider).await?;
    let secret = sealer(state).open(&config.sealed_secret).map_err(|_| {
        AppError::Internal(anyhow::anyhow!(
            "OAuth2 client secret does not unseal: was the server secret changed?"
        ))
    })?;
    let endpoints = endpoints(state, &config).await?;
    let client = client(&config, secret, &endpoints, callback)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let state_secret = secrets::random_token();
    let scopes = if start.scopes.is_empty() {
        config.scopes.clone()
    } else {
        start.scopes.clone()
    };
    let (url, _) = client
        .authorize_url(|| CsrfToken::new(state_secret.clone()))
        .add_scopes(scopes.into_iter().map(Scope::new))
        .set_pkce_challenge(challenge)
        .url();
    let now = now_millis();
    store::prune_states(state, now).await?;
    store::insert_state(
        state,
        &store::PendingSignIn {
            project_id: project_id.to_string(),
            state_hash: secrets::digest(&state_secret),
            provider: start.provider,
            pkce_verifier: verifier.secret().clone(),
            success_url: start.success_url,
            failure_url: start.failure_url,
            token_mode: start.token_mode,
            expires_at: now + STATE_TTL_MS,
        },
    )
    .await?;
    Ok(Begun {
        authorize_url: url.into(),
        nonce: browser_nonce(state, &state_secret),
    })
}

/// A sign-in that came back: where to send the browser next.
pub enum Finished {
    /// Set this session's cookie, then go to `success_url`.
    Session {
        session: Session,
        secret: String,
        success_url: String,
    },
    /// Go to `success_url`, which carries `userId` and a one-time `secret`.
    Token { success_url: String },
}

/// A failed sign-in whose failure URL is known: the browser goes there with the code.
pub struct Failed {
    pub failure_url: String,
    pub error: AppError,
}

/// What the callback got back from the provider, and the browser's nonce cookie.
pub struct Callback {
    pub code: Option<String>,
    pub state: Option<String>,
    pub error: Option<String>,
    pub nonce: Option<String>,
}

/// Finishes a sign-in. `Err(Err(_))`: the state is unknown (nowhere to go back to);
/// `Err(Ok(failed))`: send the browser to the failure URL.
pub async fn finish(
    state: &AppState,
    project_id: &str,
    provider: &str,
    callback_url: &str,
    callback: Callback,
    client_info: ClientInfo,
) -> Result<Finished, Result<Failed, AppError>> {
    let state_invalid = || AppError::Invalid {
        code: codes::OAUTH2_STATE_INVALID,
        field: "state".into(),
        reason: "the sign-in is unknown, was already finished, or took longer than 10 minutes"
            .into(),
    };
    let presented = callback.state.ok_or_else(|| Err(state_invalid()))?;
    let pending = store::take_state(state, project_id, &secrets::digest(&presented))
        .await
        .map_err(Err)?
        .filter(|p| p.provider == provider)
        .ok_or_else(|| Err(state_invalid()))?;
    let fail = |error: AppError| {
        Ok(Failed {
            failure_url: pending.failure_url.clone(),
            error,
        })
    };
    if pending.expires_at <= now_millis() {
        return Err(fail(state_invalid()));
    }
    let expected = browser_nonce(state, &presented);
    let same_browser = callback.nonce.as_deref().is_some_and(|nonce| {
        use subtle::ConstantTimeEq as _;
        bool::from(nonce.as_bytes().ct_eq(expected.as_bytes()))
    });
    if !same_browser {
        return Err(fail(AppError::Invalid {
            code: codes::OAUTH2_NONCE_INVALID,
            field: "state".into(),
            reason: "this browser did not start this sign-in (or blocks its cookie); start again"
                .into(),
        }));
    }
    if let Some(error) = callback.error {
        tracing::info!(%provider, error = %error.chars().take(100).collect::<String>(), "OAuth2 provider refused the sign-in");
        return Err(fail(AppError::Invalid {
            code: codes::OAUTH2_DENIED,
            field: "code".into(),
            reason: "the provider did not authorize the sign-in".into(),
        }));
    }
    let Some(code) = callback.code else {
        return Err(fail(provider_failed(
            "the provider sent no authorization code",
        )));
    };
    let result = async {
        let profile =
            fetch_profile(state, project_id, provider, callback_url, code, &pending).await?;
        let opening = if pending.token_mode {
            Opening::Token
        } else {
            Opening::Session {
                provider: format!("oauth2-{provider}"),
                client: client_info,
                policy: Box::new(crate::services::users::service::policy(state, project_id).await?),
            }
        };
        let (user, opened) =
            user_for_profile(state, project_id, provider, &profile, &opening).await?;
        match opened {
            Opened::Token(secret) => {
                let mut url = url::Url::parse(&pending.success_url).map_err(|_| {
                    AppError::Internal(anyhow::anyhow!("stored success URL does not parse"))
                })?;
                url.query_pairs_mut()
                    .append_pair("userId", &user.id)
                    .append_pair("secret", &secret);
                Ok(Finished::Token {
                    success_url: url.into(),
                })
            }
            Opened::Session(session, secret) => {
                session_opened(state, &user, &session).await;
                Ok(Finished::Session {
                    session,
                    secret,
                    success_url: pending.success_url.clone(),
                })
            }
        }
    }
    .await;
    result.map_err(fail)
}

/// The account at the provider.
#[derive(Debug, Clone, Default)]
struct Profile {
    subject: String,
    email: Option<String>,
    email_verified: bool,
    name: Option<String>,
}

async fn fetch_profile(
    state: &AppState,
    project_id: &str,
    provider: &str,
    callback_url: &str,
    code: String,
    pending: &store::PendingSignIn,
) -> AppResult<Profile> {
    let config = enabled_provider(state, project_id, provider).await?;
    let secret = sealer(state).open(&config.sealed_secret).map_err(|_| {
        AppError::Internal(anyhow::anyhow!(
            "OAuth2 client secret does not unseal: was the server secret changed?"
        ))
    })?;
    let endpoints = endpoints(state, &config).await?;
    let client = client(&config, secret, &endpoints, callback_url)?;
    let (_, http) = provider_client(state, "token", &endpoints.token).await?;
    let token = client
        .exchange_code(AuthorizationCode::new(code))
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()))
        .request_async(&http)
        .await
        .map_err(|err| {
            tracing::warn!(%provider, error = %err, "OAuth2 code exchange failed");
            provider_failed("the provider refused the authorization code")
        })?;
    let access_token = token.access_token().secret();
    let get = async |what: &str, url: String| {
        let (url, http) = provider_client(state, what, &url).await?;
        Ok::<_, AppError>(
            http.get(url)
                .bearer_auth(access_token)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await,
        )
    };
    let read = |what: &'static str| {
        move |err: reqwest::Error| {
            tracing::warn!(%provider, error = %err, "OAuth2 {what} request failed");
            provider_failed(format!("the provider's {what} could not be read"))
        }
    };
    match config.flavor() {
        Flavor::Oidc => {
            let info: OidcUserInfo = get("userinfo", endpoints.userinfo.clone())
                .await?
                .and_then(|r| r.error_for_status())
                .map_err(read("userinfo"))?
                .json()
                .await
                .map_err(read("userinfo"))?;
            Ok(Profile {
                subject: info.sub,
                email: info.email,
                email_verified: info.email_verified.unwrap_or(false),
                name: info.name.or(info.preferred_username),
            })
        }
        Flavor::GitHub => {
            let user: GitHubUser = get("user profile", endpoints.userinfo.clone())
                .await?
                .and_then(|r| r.error_for_status())
                .map_err(read("user profile"))?
                .json()
                .await
                .map_err(read("user profile"))?;
            let emails: Vec<GitHubEmail> = get(
                "email list",
                format!("{}/emails", endpoints.userinfo.trim_end_matches('/')),
            )
            .await?
            .and_then(|r| r.error_for_status())
            .map_err(read("email list"))?
            .json()
            .await
            .map_err(read("email list"))?;
            let primary = emails
                .iter()
                .find(|e| e.primary && e.verified)
                .or_else(|| emails.iter().find(|e| e.verified));
            Ok(Profile {
                subject: user.id.to_string(),
                email: primary.map(|e| e.email.clone()).or(user.email),
                email_verified: primary.is_some(),
                name: user.name.or(Some(user.login)),
            })
        }
    }
}

#[derive(Deserialize)]
struct OidcUserInfo {
    sub: String,
    email: Option<String>,
    email_verified: Option<bool>,
    name: Option<String>,
    preferred_username: Option<String>,
}

#[derive(Deserialize)]
struct GitHubUser {
    id: u64,
    login: String,
    name: Option<String>,
    email: Option<String>,
}

#[derive(Deserialize)]
struct GitHubEmail {
    email: String,
    primary: bool,
    verified: bool,
}

/// The user behind a provider account: the one linked before; else the user with
/// the same email, when the provider vouches for that email; else a new user.
///
/// The user a first sign-in creates and the identity that links it are written in
/// one transaction, so nothing can leave a user without its identity. Two first
/// sign-ins of one provider account at once (or a sign-up with its email) clash on
/// a unique key: the loser's transaction rolls back whole and its next round finds
/// what the winner wrote, so both sign in as the one user.
/// What a provider's sign-in opens, in the transaction that finds or links its
/// user: a session (with the project's policy), or the one-time token of the
/// token mode. A crash cannot leave a first sign-in's user and identity without
/// the session or token that was to use them.
enum Opening {
    Session {
        provider: String,
        client: ClientInfo,
        policy: Box<crate::services::projects::AuthSettings>,
    },
    Token,
}

/// What [`Opening`] made: the session and its secret, or the token's secret.
enum Opened {
    Session(Session, String),
    Token(String),
}

/// Writes `opening` for `user` in `tx`; answers it with the events to log.
async fn open_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    user: &User,
    opening: &Opening,
) -> AppResult<(Opened, Vec<crate::bus::BusMessage>)> {
    if user.blocked {
        return Err(AppError::UserBlocked);
    }
    match opening {
        Opening::Session {
            provider,
            client,
            policy,
        } => {
            let (session, secret, messages) =
                insert_session_in(tx, policy, user, provider, client).await?;
            Ok((Opened::Session(session, secret), messages))
        }
        Opening::Token => {
            let secret = secrets::random_token();
            let now = now_millis();
            let id = ids::generate();
            users_store::insert_token(
                &mut **tx,
                &user.project_id,
                &id,
                &user.id,
                OAUTH2_TOKEN,
                &secrets::digest(&secret),
                now + TOKEN_TTL_MS,
                now,
            )
            .await?;
            let issued = crate::services::users::service::TokenIssued {
                project_id: &user.project_id,
                user_id: &user.id,
                id: &id,
                kind: OAUTH2_TOKEN,
                created_at: now,
                expires_at: now + TOKEN_TTL_MS,
            };
            let event = crate::services::users::service::token_event(&issued, "create");
            Ok((Opened::Token(secret), vec![event]))
        }
    }
}

async fn user_for_profile(
    state: &AppState,
    project_id: &str,
    provider: &str,
    profile: &Profile,
    opening: &Opening,
) -> AppResult<(User, Opened)> {
    if profile.subject.is_empty() || profile.subject.len() > 255 {
        return Err(provider_failed(
            "the provider's account id is empty or too long",
        ));
    }
    let email = profile
        .email
        .as_deref()
        .and_then(|e| crate::services::users::service::normalize_email("email", e).ok());
    // A name the user service refuses (control characters) is left out rather
    // than failing the sign-in.
    let name = profile
        .name
        .as_deref()
        .map(|n| n.chars().take(128).collect::<String>())
        .filter(|n| crate::services::users::service::check_name(n).is_ok())
        .unwrap_or_default();
    // Rounds: a claim of an unverified account, then a clash, each send it round
    // once more; a third round meets neither.
    for _ in 0..3 {
        let linked = link_profile(
            state,
            project_id,
            provider,
            profile,
            email.as_deref(),
            &name,
            opening,
        );
        if let Some(found) = linked.await? {
            return Ok(found);
        }
    }
    Err(AppError::Conflict {
        what: "identity",
        id: profile.subject.clone(),
    })
}

/// One round of [`user_for_profile`]: the user, or `None` when it changed
/// something (a claim) or lost a race, and the next round looks again.
async fn link_profile(
    state: &AppState,
    project_id: &str,
    provider: &str,
    profile: &Profile,
    email: Option<&str>,
    name: &str,
    opening: &Opening,
) -> AppResult<Option<(User, Opened)>> {
    // On SQLite this takes the write lock at once, so rounds never interleave; on
    // MariaDB a concurrent round shows up as a unique-key clash.
    let mut tx = state.db.begin_write().await?;
    if let Some(identity) =
        store::find_identity(&mut tx, project_id, provider, &profile.subject).await?
    {
        let user = users_store::find_user(&mut *tx, project_id, &identity.user_id)
            .await?
            .map(|row| row.to_user())
            .ok_or(AppError::InvalidCredentials)?;
        let (opened, messages) = open_in(&mut tx, &user, opening).await?;
        commit_logged(state, tx, messages).await?;
        return Ok(Some((user, opened)));
    }
    let existing = match email {
        Some(email) => users_store::find_user_by_email(&mut *tx, project_id, email)
            .await?
            .map(|row| row.to_user()),
        None => None,
    };
    let mut messages = Vec::new();
    let user = match existing {
        // Linking to an account on the provider's word is only safe when the
        // provider checked that the email is theirs.
        Some(_) if !profile.email_verified => {
            return Err(AppError::Invalid {
                code: codes::OAUTH2_EMAIL_IN_USE,
                field: "email".into(),
                reason: "a user with this email exists and the provider has not verified the email; sign in and link the provider from the account instead".into(),
            });
        }
        // The provider vouches for the mailbox: an account whose email was not
        // verified yet is claimed first (see `UserChanges::claim`), in a change of
        // its own; the next round links the claimed account.
        Some(user) if !user.email_verified => {
            drop(tx);
            with_proven_mailbox(state, project_id, user).await?;
            return Ok(None);
        }
        Some(user) => user,
        None => {
            let created =
                insert_passwordless_user(&mut tx, project_id, email, name, profile.email_verified)
                    .await;
            match created {
                Ok(user) => {
                    messages.push(user_created(&user));
                    user
                }
                Err(AppError::Conflict { .. }) => return Ok(None),
                Err(err) => return Err(err),
            }
        }
    };
    let now = now_millis();
    let identity = Identity {
        project_id: project_id.to_string(),
        id: ids::generate(),
        user_id: user.id.clone(),
        provider: provider.to_string(),
        subject: profile.subject.clone(),
        email: email.map(str::to_string),
        created_at: now,
        updated_at: now,
    };
    match store::insert_identity(&mut tx, &identity)
        .await
        .conflict_as("identity", &profile.subject)
    {
        Ok(()) => {}
        Err(AppError::Conflict { .. }) => return Ok(None),
        Err(err) => return Err(err),
    }
    messages.push(identity_event(&identity, "create"));
    let (opened, opening_messages) = open_in(&mut tx, &user, opening).await?;
    messages.extend(opening_messages);
    commit_logged(state, tx, messages).await?;
    Ok(Some((user, opened)))
}

/// `users.U.identities.I.<action>` of `identity`. The payload is the identity as
/// `accountIdentities` shows it: the provider's tokens are not kept, so none can
/// travel to webhooks or functions.
fn identity_event(identity: &Identity, action: &str) -> crate::bus::BusMessage {
    let time = |at: i64| {
        crate::graphql::types::datetime(at)
            .into_json()
            .unwrap_or_default()
    };
    let payload = serde_json::json!({
        "id": identity.id,
        "userId": identity.user_id,
        "provider": identity.provider,
        "providerUid": identity.subject,
        "providerEmail": identity.email,
        "createdAt": time(identity.created_at),
        "updatedAt": time(identity.updated_at),
    });
    crate::services::users::service::identity_event(
        &identity.project_id,
        &identity.user_id,
        &identity.id,
        action,
        payload,
    )
}

/// A provider account linked to a user.
#[derive(Debug, Clone)]
pub struct Identity {
    pub project_id: String,
    pub id: String,
    pub user_id: String,
    pub provider: String,
    pub subject: String,
    pub email: Option<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn identities_of(
    state: &AppState,
    project_id: &str,
    user_id: &str,
) -> AppResult<Vec<Identity>> {
    store::identities_of(state, project_id, user_id).await
}

/// Unlinks a provider account from its user.
pub async fn delete_identity(
    state: &AppState,
    project_id: &str,
    user_id: &str,
    id: &str,
) -> AppResult<()> {
    take_identity(state, project_id, Some(user_id), id)
        .await
        .map(|_| ())
}

/// Which identities [`list_identities`] answers; all of the project's by default.
#[derive(Debug, Default)]
pub struct IdentityFilter {
    pub user_id: Option<String>,
    pub provider: Option<String>,
    /// The start of the provider's account id or of the email it gave.
    pub search: Option<String>,
}

/// Every provider account linked to the grant's project's users (Appwrite's
/// `listIdentities`), by id. The provider's tokens are never kept, so none can
/// be shown.
pub async fn list_identities(
    state: &AppState,
    grant: &Grant<UsersRead>,
    mut filter: IdentityFilter,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<Identity>, i64)> {
    if let Some(user_id) = &filter.user_id {
        ids::validate("userId", user_id)?;
    }
    if let Some(provider) = &filter.provider {
        check_provider_name(provider)?;
    }
    filter.search = filter
        .search
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    if filter.search.as_ref().is_some_and(|s| s.len() > 256) {
        return Err(AppError::invalid("search", "at most 256 characters"));
    }
    let pool = state.db.pool();
    let identities =
        store::list_identities(pool, state.db.dialect(), grant.project(), &filter, page).await?;
    let total = if with_total {
        store::count_identities(pool, state.db.dialect(), grant.project(), &filter).await?
    } else {
        0
    };
    Ok((identities, total))
}

/// Unlinks any provider account of the grant's project (Appwrite's server-side
/// `deleteIdentity`); its user keeps their account and other sign-in methods.
pub async fn delete_user_identity(
    state: &AppState,
    grant: &Grant<UsersWrite>,
    id: &str,
) -> AppResult<Identity> {
    take_identity(state, grant.project(), None, id).await
}

/// Deletes identity `id` (of `user_id` only, when given) and logs its `delete`
/// event in the same transaction.
async fn take_identity(
    state: &AppState,
    project_id: &str,
    user_id: Option<&str>,
    id: &str,
) -> AppResult<Identity> {
    ids::validate("id", id)?;
    let mut tx = state.db.begin_write().await?;
    // Read and deleted in one transaction: of two requests unlinking it at once,
    // only the one whose delete took the row announces it.
    match store::take_identity(&mut tx, project_id, user_id, id).await? {
        Some(identity) => {
            crate::bus::log::commit(&state.bus, tx, vec![identity_event(&identity, "delete")])
                .await?;
            Ok(identity)
        }
        None => Err(AppError::NotFound {
            what: "identity",
            id: id.into(),
        }),
    }
}

mod store {
    //! The rows behind providers, pending sign-ins and identities.

    use sqlx::Row as _;
    use sqlx::any::AnyRow;

    use super::{Identity, IdentityFilter, ProviderConfig};
    use crate::AppState;
    use crate::db::Page;
    use crate::error::AppResult;

    const PROVIDER_COLUMNS: &str = "project_id, provider, enabled, client_id, client_secret, issuer, authorization_url, token_url, userinfo_url, scopes, created_at, updated_at";

    fn provider_from(row: &AnyRow) -> Result<ProviderConfig, sqlx::Error> {
        let scopes: String = row.try_get("scopes")?;
        Ok(ProviderConfig {
            project_id: row.try_get("project_id")?,
            provider: row.try_get("provider")?,
            enabled: row.try_get::<i16, _>("enabled")? != 0,
            client_id: row.try_get("client_id")?,
            sealed_secret: row.try_get("client_secret")?,
            issuer: row.try_get("issuer")?,
            authorization_url: row.try_get("authorization_url")?,
            token_url: row.try_get("token_url")?,
            userinfo_url: row.try_get("userinfo_url")?,
            scopes: serde_json::from_str(&scopes).unwrap_or_default(),
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    pub async fn find_provider(
        state: &AppState,
        project_id: &str,
        provider: &str,
    ) -> AppResult<Option<ProviderConfig>> {
        let row = sqlx::query(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM oauth2_providers WHERE project_id = ? AND provider = ?"
        ))
        .bind(project_id)
        .bind(provider)
        .fetch_optional(state.db.pool())
        .await?;
        Ok(row.as_ref().map(provider_from).transpose()?)
    }

    pub async fn list_providers(
        state: &AppState,
        project_id: &str,
    ) -> AppResult<Vec<ProviderConfig>> {
        let rows = sqlx::query(&format!(
            "SELECT {PROVIDER_COLUMNS} FROM oauth2_providers WHERE project_id = ? ORDER BY provider"
        ))
        .bind(project_id)
        .fetch_all(state.db.pool())
        .await?;
        Ok(rows.iter().map(provider_from).collect::<Result<_, _>>()?)
    }

    /// Inserts or replaces the provider row in one statement, so two concurrent
    /// changes cannot leave a half-written row.
    pub async fn save_provider(
        state: &AppState,
        config: &ProviderConfig,
        sealed_secret: &str,
    ) -> AppResult<()> {
        let mut tx = state.db.pool().begin().await?;
        sqlx::query("DELETE FROM oauth2_providers WHERE project_id = ? AND provider = ?")
            .bind(&config.project_id)
            .bind(&config.provider)
            .execute(&mut *tx)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO oauth2_providers ({PROVIDER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&config.project_id)
        .bind(&config.provider)
        .bind(i16::from(config.enabled))
        .bind(&config.client_id)
        .bind(sealed_secret)
        .bind(&config.issuer)
        .bind(&config.authorization_url)
        .bind(&config.token_url)
        .bind(&config.userinfo_url)
        .bind(serde_json::to_string(&config.scopes).unwrap_or_else(|_| "[]".into()))
        .bind(config.created_at)
        .bind(config.updated_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_provider(
        state: &AppState,
        project_id: &str,
        provider: &str,
    ) -> AppResult<bool> {
        let done =
            sqlx::query("DELETE FROM oauth2_providers WHERE project_id = ? AND provider = ?")
                .bind(project_id)
                .bind(provider)
                .execute(state.db.pool())
                .await?;
        Ok(done.rows_affected() > 0)
    }

    /// A sign-in waiting for the browser to come back.
    #[derive(Debug, Clone)]
    pub struct PendingSignIn {
        pub project_id: String,
        pub state_hash: String,
        pub provider: String,
        pub pkce_verifier: String,
        pub success_url: String,
        pub failure_url: String,
        pub token_mode: bool,
        pub expires_at: i64,
    }

    pub async fn insert_state(state: &AppState, pending: &PendingSignIn) -> AppResult<()> {
        sqlx::query(
            "INSERT INTO oauth2_states (project_id, state_hash, provider, pkce_verifier, success_url, failure_url, token_mode, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&pending.project_id)
        .bind(&pending.state_hash)
        .bind(&pending.provider)
        .bind(&pending.pkce_verifier)
        .bind(&pending.success_url)
        .bind(&pending.failure_url)
        .bind(i16::from(pending.token_mode))
        .bind(pending.expires_at)
        .execute(state.db.pool())
        .await?;
        Ok(())
    }

    /// Removes and returns a pending sign-in: whoever deletes the row owns it, so a
    /// state cannot be used twice even by two replicas at once.
    pub async fn take_state(
        state: &AppState,
        project_id: &str,
        state_hash: &str,
    ) -> AppResult<Option<PendingSignIn>> {
        let pool = state.db.pool();
        let Some(row) = sqlx::query(
            "SELECT provider, pkce_verifier, success_url, failure_url, token_mode, expires_at FROM oauth2_states WHERE project_id = ? AND state_hash = ?",
        )
        .bind(project_id)
        .bind(state_hash)
        .fetch_optional(pool)
        .await?
        else {
            return Ok(None);
        };
        let deleted =
            sqlx::query("DELETE FROM oauth2_states WHERE project_id = ? AND state_hash = ?")
                .bind(project_id)
                .bind(state_hash)
                .execute(pool)
                .await?;
        if deleted.rows_affected() == 0 {
            return Ok(None);
        }
        Ok(Some(PendingSignIn {
            project_id: project_id.to_string(),
            state_hash: state_hash.to_string(),
            provider: row.try_get("provider")?,
            pkce_verifier: row.try_get("pkce_verifier")?,
            success_url: row.try_get("success_url")?,
            failure_url: row.try_get("failure_url")?,
            token_mode: row.try_get::<i16, _>("token_mode")? != 0,
            expires_at: row.try_get("expires_at")?,
        }))
    }

    /// Forgets sign-ins whose browsers never came back.
    pub async fn prune_states(state: &AppState, now: i64) -> AppResult<()> {
        sqlx::query("DELETE FROM oauth2_states WHERE expires_at < ?")
            .bind(now)
            .execute(state.db.pool())
            .await?;
        Ok(())
    }

    fn identity_from(row: &AnyRow) -> Result<Identity, sqlx::Error> {
        Ok(Identity {
            project_id: row.try_get("project_id")?,
            id: row.try_get("id")?,
            user_id: row.try_get("user_id")?,
            provider: row.try_get("provider")?,
            subject: row.try_get("subject")?,
            email: row.try_get("email")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    const IDENTITY_COLUMNS: &str =
        "project_id, id, user_id, provider, subject, email, created_at, updated_at";

    pub async fn find_identity(
        conn: &mut sqlx::AnyConnection,
        project_id: &str,
        provider: &str,
        subject: &str,
    ) -> AppResult<Option<Identity>> {
        let row = sqlx::query(&format!(
            "SELECT {IDENTITY_COLUMNS} FROM identities WHERE project_id = ? AND provider = ? AND subject = ?"
        ))
        .bind(project_id)
        .bind(provider)
        .bind(subject)
        .fetch_optional(conn)
        .await?;
        Ok(row.as_ref().map(identity_from).transpose()?)
    }

    pub async fn identities_of(
        state: &AppState,
        project_id: &str,
        user_id: &str,
    ) -> AppResult<Vec<Identity>> {
        let rows = sqlx::query(&format!(
            "SELECT {IDENTITY_COLUMNS} FROM identities WHERE project_id = ? AND user_id = ? ORDER BY id"
        ))
        .bind(project_id)
        .bind(user_id)
        .fetch_all(state.db.pool())
        .await?;
        Ok(rows.iter().map(identity_from).collect::<Result<_, _>>()?)
    }

    pub async fn insert_identity(
        conn: &mut sqlx::AnyConnection,
        identity: &Identity,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "INSERT INTO identities ({IDENTITY_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
        ))
        .bind(&identity.project_id)
        .bind(&identity.id)
        .bind(&identity.user_id)
        .bind(&identity.provider)
        .bind(&identity.subject)
        .bind(&identity.email)
        .bind(identity.created_at)
        .bind(identity.updated_at)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// Identities by id, filtered as `filter` says.
    pub async fn list_identities(
        pool: &sqlx::AnyPool,
        dialect: crate::db::Dialect,
        project_id: &str,
        filter: &IdentityFilter,
        page: &Page,
    ) -> AppResult<Vec<Identity>> {
        let (keyset, page_binds) = page.keyset_sql("id");
        let (conditions, binds) = filtered(dialect, filter);
        let sql = format!(
            "SELECT {IDENTITY_COLUMNS} FROM identities WHERE project_id = ?{conditions}{keyset}"
        );
        let query = sqlx::query(&sql).bind(project_id);
        let rows = binds
            .iter()
            .chain(page_binds.iter())
            .fold(query, |q, b| q.bind(b))
            .fetch_all(pool)
            .await?;
        Ok(rows.iter().map(identity_from).collect::<Result<_, _>>()?)
    }

    pub async fn count_identities(
        pool: &sqlx::AnyPool,
        dialect: crate::db::Dialect,
        project_id: &str,
        filter: &IdentityFilter,
    ) -> AppResult<i64> {
        let (conditions, binds) = filtered(dialect, filter);
        let sql = format!("SELECT COUNT(*) FROM identities WHERE project_id = ?{conditions}");
        let query = sqlx::query_scalar(&sql).bind(project_id);
        Ok(binds
            .iter()
            .fold(query, |q, b| q.bind(b))
            .fetch_one(pool)
            .await?)
    }

    /// The conditions of `filter` after `project_id = ?`, with their binds.
    fn filtered(dialect: crate::db::Dialect, filter: &IdentityFilter) -> (String, Vec<String>) {
        let mut sql = String::new();
        let mut binds = Vec::new();
        if let Some(user_id) = &filter.user_id {
            sql.push_str(" AND user_id = ?");
            binds.push(user_id.clone());
        }
        if let Some(provider) = &filter.provider {
            sql.push_str(" AND provider = ?");
            binds.push(provider.clone());
        }
        if let Some(search) = &filter.search {
            let (condition, patterns) = dialect.starts_with_any(&["subject", "email"], search);
            sql.push_str(&condition);
            binds.extend(patterns);
        }
        (sql, binds)
    }

    /// Deletes identity `id` (only if it is `user_id`'s, when given) in `conn`,
    /// answering it if this delete removed it.
    pub async fn take_identity(
        conn: &mut sqlx::AnyConnection,
        project_id: &str,
        user_id: Option<&str>,
        id: &str,
    ) -> AppResult<Option<Identity>> {
        let row = sqlx::query(&format!(
            "SELECT {IDENTITY_COLUMNS} FROM identities WHERE project_id = ? AND id = ?"
        ))
        .bind(project_id)
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(identity) = row.as_ref().map(identity_from).transpose()? else {
            return Ok(None);
        };
        if user_id.is_some_and(|user_id| user_id != identity.user_id) {
            return Ok(None);
        }
        let done = sqlx::query("DELETE FROM identities WHERE project_id = ? AND id = ?")
            .bind(project_id)
            .bind(id)
            .execute(conn)
            .await?;
        Ok((done.rows_affected() > 0).then_some(identity))
    }
}
