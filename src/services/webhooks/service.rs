//! Webhook rules: checking and storing webhooks, their secrets (generated here,
//! shown once, sealed at rest), the delivery log, and turning a committed event
//! into delivery jobs.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use rand::RngCore as _;

use crate::AppState;
use crate::auth::scopes::{WebhooksRead, WebhooksWrite};
use crate::auth::sealing::Sealer;
use crate::auth::{ApiKeyGrant, Delegation, Grant};
use crate::bus::Event;
use crate::db::{Page, ids, now_millis};
use crate::error::{AppError, AppResult, codes};
use crate::jobs::NewJob;
use crate::outbound;

use super::{Delivery, Webhook, store};

/// The kind of delivery jobs.
pub const KIND: &str = "webhook";
/// The kind of the schedule that prunes the delivery log.
pub const PRUNE_KIND: &str = "webhooks.prune";
const SEALING_PURPOSE: &str = "webhook secrets";
const MAX_NAME: usize = 128;
pub const MAX_URL_BYTES: usize = 2048;

/// A webhook to create.
#[derive(Debug)]
pub struct NewWebhook {
    pub id: Option<String>,
    pub name: String,
    pub url: String,
    pub events: Vec<String>,
    pub enabled: bool,
    pub tls_verify: bool,
    /// HTTP Basic credentials for its deliveries; empty: none.
    pub http_user: Option<String>,
    pub http_pass: Option<String>,
}

/// Changes to a webhook; what is `None` stays.
#[derive(Debug, Default)]
pub struct WebhookChange {
    pub name: Option<String>,
    pub url: Option<String>,
    pub events: Option<Vec<String>>,
    pub enabled: Option<bool>,
    pub tls_verify: Option<bool>,
    /// A new Basic user; empty: none (the password goes with it).
    pub http_user: Option<String>,
    /// A new Basic password; empty: none.
    pub http_pass: Option<String>,
}

/// Most characters of a webhook's Basic user or password.
const MAX_HTTP_CREDENTIAL: usize = 256;

/// A Basic user or password as given: `None` for an empty one; refused when it
/// is too long, holds a control character, or (a user) a colon, which Basic
/// credentials cannot carry.
fn check_http_credential(field: &str, value: &str) -> AppResult<Option<String>> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.chars().count() > MAX_HTTP_CREDENTIAL
        || value.chars().any(char::is_control)
        || (field == "httpUser" && value.contains(':'))
    {
        return Err(AppError::invalid(
            field,
            format!(
                "at most {MAX_HTTP_CREDENTIAL} characters, no control characters{}",
                if field == "httpUser" {
                    " and no `:`"
                } else {
                    ""
                }
            ),
        ));
    }
    Ok(Some(value.to_string()))
}

fn not_found(id: &str) -> AppError {
    AppError::NotFound {
        what: "webhook",
        id: id.to_string(),
    }
}

fn sealer(state: &AppState) -> Sealer {
    Sealer::new(&state.secret, SEALING_PURPOSE)
}

/// A new signing secret, in Standard Webhooks' form: `whsec_` and 32 random bytes
/// in base64.
fn new_secret() -> String {
    let mut key = [0u8; 32];
    rand::rng().fill_bytes(&mut key);
    format!("whsec_{}", STANDARD.encode(key))
}

fn check_name(name: &str) -> AppResult<()> {
    let length = name.chars().count();
    if name.trim().is_empty() || length > MAX_NAME || name.chars().any(char::is_control) {
        return Err(AppError::invalid(
            "name",
            format!("must be 1 to {MAX_NAME} printable characters"),
        ));
    }
    Ok(())
}

/// An http(s) URL without credentials that, unless the operator allows private
/// receivers, does not name a private address. A name is resolved again at every
/// delivery; one that does not resolve yet is taken.
async fn check_url(state: &AppState, text: &str) -> AppResult<String> {
    let bad = |reason: String| AppError::Invalid {
        code: codes::INVALID_WEBHOOK_URL,
        field: "url".into(),
        reason,
    };
    let url = outbound::check_url(text, MAX_URL_BYTES).map_err(|r| bad(r.to_string()))?;
    if !state.config.webhooks_allow_private {
        match outbound::allowed_addresses(&url, outbound::is_public).await {
            Ok(_) | Err(outbound::Refused::Unresolved) => {}
            Err(refused) => return Err(bad(refused.to_string())),
        }
    }
    // Normalising escapes what needs it, which can make the URL longer.
    let url = url.to_string();
    if url.len() > MAX_URL_BYTES {
        return Err(bad(outbound::Refused::TooLong(MAX_URL_BYTES).to_string()));
    }
    Ok(url)
}

/// Creates a webhook; answers it and its secret, which is shown only now.
/// It delivers the events `key` may read, while `key` works.
pub async fn create(
    state: &AppState,
    grant: &Grant<WebhooksWrite>,
    key: &ApiKeyGrant,
    new: NewWebhook,
) -> AppResult<(Webhook, String)> {
    let id = ids::resolve("id", new.id.as_deref())?;
    check_name(&new.name)?;
    let events = crate::bus::patterns::check_patterns(&new.events)?;
    let url = check_url(state, &new.url).await?;
    let http_user = check_http_credential("httpUser", new.http_user.as_deref().unwrap_or(""))?;
    let http_pass = check_http_credential("httpPass", new.http_pass.as_deref().unwrap_or(""))?;
    if http_pass.is_some() && http_user.is_none() {
        return Err(AppError::invalid("httpPass", "a password needs `httpUser`"));
    }
    let now = now_millis();
    let webhook = Webhook {
        id,
        project_id: grant.project().to_string(),
        name: new.name,
        url,
        events,
        enabled: new.enabled,
        tls_verify: new.tls_verify,
        http_user,
        failures: 0,
        reach: Delegation::of(key),
        created_at: now,
        updated_at: now,
    };
    let secret = new_secret();
    let sealed_pass = http_pass.map(|pass| sealer(state).seal(&pass));
    if let Err(err) = store::insert(
        state.db.pool(),
        &webhook,
        &sealer(state).seal(&secret),
        sealed_pass.as_deref(),
    )
    .await
    {
        return Err(match crate::error::DbError::from(err) {
            crate::error::DbError::UniqueViolation => AppError::Conflict {
                what: "webhook",
                id: webhook.id,
            },
            other => other.into(),
        });
    }
    tracing::info!(webhook = %webhook.id, project = %webhook.project_id, "webhook created");
    Ok((webhook, secret))
}

async fn load(state: &AppState, project_id: &str, id: &str) -> AppResult<Webhook> {
    ids::validate("id", id)?;
    store::find(state.db.pool(), project_id, id)
        .await?
        .map(|row| row.to_webhook())
        .ok_or_else(|| not_found(id))
}

/// Changes a webhook. Enabling it (again) starts its count of failures afresh.
/// From now on it delivers the events `key` may read, while `key` works: whoever
/// last points it somewhere answers for what it sends there.
pub async fn update(
    state: &AppState,
    grant: &Grant<WebhooksWrite>,
    key: &ApiKeyGrant,
    id: &str,
    change: WebhookChange,
) -> AppResult<Webhook> {
    let mut webhook = load(state, grant.project(), id).await?;
    if let Some(name) = &change.name {
        check_name(name)?;
        webhook.name = name.clone();
    }
    if let Some(events) = &change.events {
        webhook.events = crate::bus::patterns::check_patterns(events)?;
    }
    if let Some(url) = &change.url {
        webhook.url = check_url(state, url).await?;
    }
    if let Some(tls_verify) = change.tls_verify {
        webhook.tls_verify = tls_verify;
    }
    // No user leaves no password; a new user keeps it unless one is given.
    let mut sealed_pass: Option<Option<String>> = None;
    if let Some(user) = &change.http_user {
        webhook.http_user = check_http_credential("httpUser", user)?;
    }
    if let Some(pass) = &change.http_pass {
        let pass = check_http_credential("httpPass", pass)?;
        sealed_pass = Some(pass.map(|pass| sealer(state).seal(&pass)));
    }
    if webhook.http_user.is_none() {
        if matches!(sealed_pass, Some(Some(_))) {
            return Err(AppError::invalid("httpPass", "a password needs `httpUser`"));
        }
        if change.http_user.is_some() {
            sealed_pass = Some(None);
        }
    }
    if let Some(enabled) = change.enabled {
        if enabled {
            webhook.failures = 0;
        }
        webhook.enabled = enabled;
    }
    webhook.reach = Delegation::of(key);
    webhook.updated_at = now_millis();
    let sealed_pass = sealed_pass.as_ref().map(Option::as_deref);
    if !store::update(state.db.pool(), &webhook, &change, sealed_pass).await? {
        return Err(not_found(id));
    }
    load(state, grant.project(), id).await
}

/// Gives a webhook a new secret; answers it, shown only now. The old one stops
/// signing at once.
pub async fn rotate_secret(
    state: &AppState,
    grant: &Grant<WebhooksWrite>,
    id: &str,
) -> AppResult<(Webhook, String)> {
    let mut webhook = load(state, grant.project(), id).await?;
    let secret = new_secret();
    let now = now_millis();
    if !store::set_secret(
        state.db.pool(),
        grant.project(),
        id,
        &sealer(state).seal(&secret),
        now,
    )
    .await?
    {
        return Err(not_found(id));
    }
    webhook.updated_at = now;
    Ok((webhook, secret))
}

/// Deletes a webhook and its delivery log; deliveries still queued find it gone
/// and end.
pub async fn delete(
    state: &AppState,
    grant: &Grant<WebhooksWrite>,
    id: &str,
) -> AppResult<Webhook> {
    let webhook = load(state, grant.project(), id).await?;
    // One transaction: a webhook id may be taken again, and must not inherit a
    // delivery log left behind.
    let mut tx = state.db.pool().begin().await?;
    if !store::delete(&mut *tx, grant.project(), id).await? {
        return Err(not_found(id));
    }
    store::delete_deliveries_of(&mut *tx, grant.project(), id).await?;
    tx.commit().await?;
    Ok(webhook)
}

pub async fn get(state: &AppState, grant: &Grant<WebhooksRead>, id: &str) -> AppResult<Webhook> {
    load(state, grant.project(), id).await
}

pub async fn list(
    state: &AppState,
    grant: &Grant<WebhooksRead>,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<Webhook>, i64)> {
    let rows = store::list(state.db.pool(), grant.project(), page).await?;
    let total = if with_total {
        store::count(state.db.pool(), grant.project()).await?
    } else {
        0
    };
    Ok((rows.iter().map(|r| r.to_webhook()).collect(), total))
}

/// The delivery log of a webhook, oldest first.
pub async fn deliveries(
    state: &AppState,
    grant: &Grant<WebhooksRead>,
    webhook_id: &str,
    page: &Page,
    with_total: bool,
) -> AppResult<(Vec<Delivery>, i64)> {
    load(state, grant.project(), webhook_id).await?;
    let rows = store::list_deliveries(state.db.pool(), grant.project(), webhook_id, page).await?;
    let total = if with_total {
        store::count_deliveries(state.db.pool(), grant.project(), webhook_id).await?
    } else {
        0
    };
    Ok((rows.iter().map(|r| r.to_delivery()).collect(), total))
}

/// The body a receiver gets for `event`: what realtime subscribers see of it,
/// without the fields that only steer realtime (readers, channels).
pub fn body_of(event: &Event) -> serde_json::Value {
    serde_json::json!({
        "id": event.id,
        "projectId": event.project_id,
        "events": event.events,
        "timestamp": event.timestamp,
        "payload": event.payload,
    })
}

/// One enabled webhook, as deliveries need it.
struct Hook {
    id: String,
    patterns: Vec<String>,
    reach: Delegation,
}

/// The enabled webhooks of the projects seen so far: read once per project for a
/// batch of events.
#[derive(Default)]
pub struct Hooks(std::collections::HashMap<String, Vec<Hook>>);

/// Those of `projects` whose events may become deliveries (they have an enabled
/// webhook): the event log consumer passes over the others' events unread.
pub async fn projects_to_deliver(
    state: &AppState,
    projects: &[&str],
) -> AppResult<std::collections::HashSet<String>> {
    Ok(store::with_enabled(state.db.pool(), projects).await?)
}

/// Queues one delivery of `event` per enabled webhook of its project whose patterns
/// take it and whose configuring key could read it when it happened, through `conn` (the consumer's transaction): the one entry point from
/// logged events to webhooks. Idempotent per webhook and event id. Answers how many
/// deliveries were queued now.
pub async fn queue_deliveries(
    state: &AppState,
    conn: &mut sqlx::AnyConnection,
    hooks: &mut Hooks,
    event: &Event,
) -> AppResult<usize> {
    let Some(name) = event.events.first() else {
        return Ok(0);
    };
    if !hooks.0.contains_key(&event.project_id) {
        let enabled = store::enabled(&mut *conn, &event.project_id)
            .await?
            .into_iter()
            .map(|(id, patterns, reach)| Hook {
                id,
                patterns: serde_json::from_str(&patterns).unwrap_or_default(),
                reach: Delegation::from_column(reach.as_deref()),
            })
            .collect();
        hooks.0.insert(event.project_id.clone(), enabled);
    }
    let mut queued = 0;
    let mut body = None;
    for hook in &hooks.0[&event.project_id] {
        if !hook
            .patterns
            .iter()
            .any(|p| crate::bus::patterns::matches(p, name))
            || !hook.reach.covers(&event.key_scope, event.timestamp)
        {
            continue;
        }
        let webhook_id = &hook.id;
        let body = body.get_or_insert_with(|| body_of(event)).clone();
        let job = NewJob {
            project_id: event.project_id.clone(),
            kind: KIND,
            payload: serde_json::json!({
                "webhookId": webhook_id,
                "eventId": event.id,
                "keyScope": event.key_scope,
                "body": body,
            }),
            run_at: None,
            dedupe_key: Some(format!(
                "webhook:{}:{webhook_id}:{}",
                event.project_id, event.id
            )),
        };
        if state
            .jobs
            .enqueue(&mut *conn, state.db.dialect(), job)
            .await?
            .is_some()
        {
            queued += 1;
        }
    }
    Ok(queued)
}

/// Forgets the delivery log of the grant's deleted project (its webhooks go with
/// its rows). A failure is logged; pruning takes what is left.
pub async fn forget_project(state: &AppState, admin: &crate::auth::AdminGrant) {
    if let Err(err) = store::delete_project_deliveries(state.db.pool(), admin.project()).await {
        tracing::warn!(error = %err, "cannot delete a deleted project's webhook deliveries");
    }
}

/// The secret of a webhook, opened; `None` when it does not open (sealed under
/// another server secret).
pub(super) fn open_secret(state: &AppState, sealed: &str) -> Option<String> {
    sealer(state).open(sealed).ok()
}
