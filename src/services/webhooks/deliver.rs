//! Delivering one event to one webhook, as a job: resolve and check the receiver
//! (no private addresses unless allowed), connect only to what was checked, POST
//! the event signed two ways (Standard Webhooks and Appwrite's), follow no
//! redirect, read at most [`MAX_RESPONSE_BYTES`] of the answer within the timeout,
//! and log the attempt. A failure counts against the webhook, which is disabled at
//! the threshold; otherwise the job is retried with backoff.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use futures_util::StreamExt as _;
use hmac::{Hmac, Mac as _};

use crate::AppState;
use crate::auth::scopes::{ScopeMarker, WebhooksRead};
use crate::db::{ids, now_millis};
use crate::jobs::{Failure, Handler, Job};
use crate::outbound;

use super::service::{self, MAX_URL_BYTES};
use super::{Delivery, store};

/// The most of a receiver's answer read; a longer answer is a failed delivery.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The most of it kept in the delivery log.
const EXCERPT_BYTES: usize = 1024;

/// How one attempt went.
#[derive(Debug, Default)]
struct Attempt {
    status: Option<u16>,
    excerpt: Option<String>,
    error: Option<String>,
}

/// `v1,<base64 HMAC-SHA256>` of `id.timestamp.body` under the secret's key, as
/// Standard Webhooks signs.
pub fn standard_signature(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|key| STANDARD.decode(key).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let mut mac =
        <Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&key).expect("HMAC takes any key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Appwrite's `X-Appwrite-Webhook-Signature`: base64 HMAC-SHA1 of the URL followed
/// by the body, keyed with the secret as written.
pub fn appwrite_signature(secret: &str, url: &str, body: &str) -> String {
    let mut mac = <Hmac<sha1::Sha1> as hmac::Mac>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes any key");
    mac.update(url.as_bytes());
    mac.update(body.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Runs delivery jobs.
pub struct WebhookJobs;

#[async_trait::async_trait]
impl Handler for WebhookJobs {
    async fn run(&self, state: &AppState, job: &Job) -> Result<(), Failure> {
        let field = |name: &str| {
            job.payload
                .get(name)
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .ok_or_else(|| Failure::Permanent(format!("the delivery has no {name}")))
        };
        let webhook_id = field("webhookId")?;
        let event_id = field("eventId")?;
        let body = job
            .payload
            .get("body")
            .ok_or_else(|| Failure::Permanent("the delivery has no body".into()))?;
        let retry = |err: sqlx::Error| Failure::Retry(format!("database: {err}"));
        let Some(row) = store::find(state.db.pool(), &job.project_id, &webhook_id)
            .await
            .map_err(retry)?
        else {
            // Deleted since: nothing to deliver.
            return Ok(());
        };
        if row.enabled == 0 {
            return Ok(());
        }
        // Whoever configured the webhook last decides where it sends: a delivery
        // queued under another's delegation goes only where that event could go
        // now (a narrower key that re-points the webhook does not receive the
        // deliveries still queued or retried).
        let key_scope = job.payload.get("keyScope").and_then(|v| v.as_str());
        let happened = body.get("timestamp").and_then(|v| v.as_i64());
        let reach = crate::auth::Delegation::from_column(row.reach.as_deref());
        if !key_scope
            .zip(happened)
            .is_some_and(|(scope, at)| reach.covers(scope, at))
        {
            tracing::info!(webhook = %webhook_id, event = %event_id, "a queued delivery is no longer the webhook's to send");
            return Ok(());
        }
        let secret = service::open_secret(state, &row.secret).ok_or_else(|| {
            Failure::Permanent("the webhook's secret does not open with this server secret".into())
        })?;
        let body = serde_json::to_string(body)
            .map_err(|err| Failure::Permanent(format!("the body does not serialise: {err}")))?;
        let events: Vec<String> = body_events(job);

        let started = Instant::now();
        let timeout = Duration::from_secs(state.config.webhooks_timeout_secs.max(1));
        let attempt = match tokio::time::timeout(
            timeout,
            attempt(state, &row, &secret, &event_id, &events, &body, timeout),
        )
        .await
        {
            Ok(attempt) => attempt,
            Err(_) => Attempt {
                error: Some(format!("no answer within {} s", timeout.as_secs())),
                ..Attempt::default()
            },
        };
        let success = attempt.error.is_none();
        let delivery = Delivery {
            id: ids::generate(),
            webhook_id: webhook_id.clone(),
            event_id,
            job_id: job.id.clone(),
            attempt: job.attempts,
            status_code: attempt.status.map(i64::from),
            duration_ms: started.elapsed().as_millis() as i64,
            success,
            error: attempt.error.clone(),
            response_excerpt: attempt.excerpt,
            created_at: now_millis(),
        };
        if let Err(err) = log_delivery(state, &job.project_id, &delivery).await {
            tracing::warn!(error = %err, "cannot log a webhook delivery");
        }
        if success {
            // Most deliveries follow a success: no write then (on SQLite even an
            // UPDATE that changes nothing waits for the one writer).
            if row.failures != 0 {
                store::reset_failures(state.db.pool(), &job.project_id, &webhook_id)
                    .await
                    .map_err(retry)?;
            }
            return Ok(());
        }
        let threshold = i64::from(state.config.webhooks_failure_threshold.max(1));
        let disabled = store::count_failure(
            state.db.pool(),
            &job.project_id,
            &webhook_id,
            threshold,
            now_millis(),
        )
        .await
        .map_err(retry)?;
        let error = attempt.error.unwrap_or_default();
        if disabled {
            tracing::info!(webhook = %webhook_id, project = %job.project_id, "webhook disabled after consecutive failures");
            return Err(Failure::Permanent(format!(
                "{error}; the webhook is disabled after {threshold} consecutive failures"
            )));
        }
        Err(Failure::Retry(error))
    }
}

/// Records an attempt in the delivery log, with its event in the same transaction.
async fn log_delivery(
    state: &AppState,
    project_id: &str,
    delivery: &Delivery,
) -> Result<(), sqlx::Error> {
    let mut tx = state.db.pool().begin().await?;
    store::insert_delivery(&mut *tx, project_id, delivery).await?;
    let event = delivery_event(project_id, delivery);
    crate::bus::log::commit(&state.bus, tx, vec![crate::bus::BusMessage::Event(event)]).await
}

/// An attempt as `webhooks.W.deliveries.D.create`, on the channels `webhooks`,
/// `webhooks.W` and `webhooks.W.deliveries`, to keys holding `webhooks.read` only.
/// No webhook pattern names `webhooks`, so it is never itself delivered to a webhook.
fn delivery_event(project_id: &str, delivery: &Delivery) -> crate::bus::Event {
    let name = format!(
        "webhooks.{}.deliveries.{}",
        delivery.webhook_id, delivery.id
    );
    crate::bus::Event {
        channels: vec![
            "webhooks".into(),
            format!("webhooks.{}", delivery.webhook_id),
            format!("webhooks.{}.deliveries", delivery.webhook_id),
        ],
        key_scope: <WebhooksRead as ScopeMarker>::NAME.into(),
        ..crate::bus::Event::change(
            project_id,
            &name,
            "webhooks.*.deliveries.*",
            "create",
            super::schema::delivery_json(delivery),
        )
    }
}

/// The names Appwrite gives an event, from Nimbus's (`events`: its name, then
/// the same with its last ids in turn written `*`): every mix of ids and `*`, for
/// the name, the name without its action, and each parent resource, in the
/// order Appwrite's `Event::generateEvents` lists them, so a receiver written
/// for Appwrite finds the name it looks for in `X-Appwrite-Webhook-Events`.
pub(crate) fn appwrite_event_names(events: &[String]) -> Vec<String> {
    let Some(full) = events.first() else {
        return Vec::new();
    };
    let segments: Vec<&str> = full.split('.').collect();
    // A name is pairs of a kind and an id, then the action: the action's place
    // tells how many ids (a file's events list fewer patterns than its ids).
    let ids = segments
        .iter()
        .enumerate()
        .find(|(n, segment)| *n > 0 && n % 2 == 0 && crate::bus::CHANNEL_ACTIONS.contains(segment))
        .map_or(events.len().saturating_sub(1), |(n, _)| n / 2);
    if ids == 0 || ids > 3 || segments.len() <= 2 * ids {
        return events.to_vec();
    }
    let (resource, action) = segments.split_at(2 * ids);
    // A pattern: the resource down to `depth` ids, then what follows it.
    let mut patterns: Vec<(usize, &[&str])> = Vec::new();
    let attribute = action.len() > 1;
    if ids >= 2 {
        if attribute {
            patterns.push((ids, action));
        }
        patterns.push((ids, &action[..1]));
        patterns.push((ids, &[]));
    } else {
        patterns.push((1, &action[..1]));
    }
    if attribute {
        patterns.push((1, action));
    }
    patterns.extend((1..=ids).rev().map(|depth| (depth, &[][..])));
    let mut unique: Vec<(usize, &[&str])> = Vec::new();
    for pattern in patterns {
        if !unique.contains(&pattern) {
            unique.push(pattern);
        }
    }

    // The pattern with the ids in `stars` (a bit per id) written `*`.
    let render = |(depth, tail): (usize, &[&str]), stars: u32| -> String {
        let mut parts: Vec<&str> = Vec::with_capacity(2 * depth + tail.len());
        for (n, segment) in resource[..2 * depth].iter().enumerate() {
            let starred = n % 2 == 1 && stars & (1 << (n / 2)) != 0;
            parts.push(if starred { "*" } else { segment });
        }
        parts.extend_from_slice(tail);
        parts.join(".")
    };
    let all = (1u32 << ids) - 1;
    let mut names: Vec<String> = Vec::new();
    let mut push = |name: String| {
        if !names.contains(&name) {
            names.push(name);
        }
    };
    for pattern in unique {
        push(render(pattern, 0));
        push(render(pattern, all));
        for key in 0..ids {
            for current in 0..ids {
                if ids == 3 {
                    for sub in (0..ids).filter(|sub| *sub != current && *sub != key) {
                        push(render(pattern, 1 << sub));
                        push(render(pattern, (1 << sub) | (1 << current)));
                        push(render(pattern, 1 << current));
                    }
                } else if current != key {
                    push(render(pattern, 1 << current));
                }
            }
        }
    }
    names
}

fn body_events(job: &Job) -> Vec<String> {
    job.payload
        .get("body")
        .and_then(|b| b.get("events"))
        .and_then(|e| serde_json::from_value(e.clone()).ok())
        .unwrap_or_default()
}

/// What a client is made for: it connects only to `addresses`, checked for `host`.
type ClientKey = (String, Vec<std::net::SocketAddr>, bool, Duration);

/// Clients made for deliveries, at most this many kept.
const MAX_CLIENTS: usize = 256;

/// A client pinned to `addresses` (just checked for `url`'s host), made once per
/// host, address set, TLS setting and timeout: making one loads the TLS root
/// certificates, which cost more CPU than the delivery itself. A host that resolves
/// elsewhere gets another client, so a connection still goes only to addresses
/// checked for it.
fn client_for(
    url: &url::Url,
    mut addresses: Vec<std::net::SocketAddr>,
    tls_verify: bool,
    timeout: Duration,
) -> reqwest::Result<reqwest::Client> {
    static CLIENTS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<ClientKey, reqwest::Client>>,
    > = std::sync::OnceLock::new();
    addresses.sort();
    let key = (
        url.host_str().unwrap_or_default().to_string(),
        addresses,
        tls_verify,
        timeout,
    );
    let clients = CLIENTS.get_or_init(Default::default);
    if let Some(client) = clients.lock().expect("not poisoned").get(&key) {
        return Ok(client.clone());
    }
    let client = outbound::pinned_client(
        url,
        &key.1,
        reqwest::Client::builder()
            .timeout(timeout)
            .danger_accept_invalid_certs(!tls_verify)
            .user_agent(concat!("nimbus/", env!("CARGO_PKG_VERSION"), " (webhooks)")),
        timeout,
    )?;
    let mut clients = clients.lock().expect("not poisoned");
    if clients.len() >= MAX_CLIENTS {
        clients.clear();
    }
    clients.insert(key, client.clone());
    Ok(client)
}

async fn attempt(
    state: &AppState,
    row: &store::WebhookRow,
    secret: &str,
    event_id: &str,
    events: &[String],
    body: &str,
    timeout: Duration,
) -> Attempt {
    let failed = |error: String| Attempt {
        error: Some(error),
        ..Attempt::default()
    };
    let url = match outbound::check_url(&row.url, MAX_URL_BYTES) {
        Ok(url) => url,
        Err(refused) => return failed(format!("the URL {refused}")),
    };
    let allowed = if state.config.webhooks_allow_private {
        outbound::any_address
    } else {
        outbound::is_public
    };
    let addresses = match outbound::allowed_addresses(&url, allowed).await {
        Ok(addresses) => addresses,
        Err(refused) => return failed(format!("the URL {refused}")),
    };
    let client = match client_for(&url, addresses, row.tls_verify != 0, timeout) {
        Ok(client) => client,
        Err(err) => return failed(format!("cannot prepare the request: {err}")),
    };
    let timestamp = now_millis() / 1000;
    let mut request = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("webhook-id", event_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            standard_signature(secret, event_id, timestamp, body),
        )
        .header("X-Appwrite-Webhook-Id", &row.id)
        .header("X-Appwrite-Webhook-Name", header_text(&row.name))
        .header("X-Appwrite-Webhook-Project-Id", &row.project_id)
        .header(
            "X-Appwrite-Webhook-Events",
            appwrite_event_names(events).join(","),
        )
        .header(
            "X-Appwrite-Webhook-Signature",
            appwrite_signature(secret, url.as_str(), body),
        )
        .body(body.to_string());
    if let Some(user) = &row.http_user {
        let password = row
            .http_pass
            .as_deref()
            .and_then(|sealed| service::open_secret(state, sealed));
        request = request.basic_auth(user, password);
    }
    let response = request.send().await;
    let response = match response {
        Ok(response) => response,
        Err(err) if err.is_timeout() => {
            return failed(format!("no answer within {} s", timeout.as_secs()));
        }
        Err(err) if err.is_connect() => return failed("cannot connect to the receiver".into()),
        Err(_) => return failed("the request to the receiver failed".into()),
    };
    let status = response.status();
    let mut read = Vec::new();
    let mut too_large = false;
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        too_large = true;
    }
    let mut stream = response.bytes_stream();
    while !too_large && let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else {
            break;
        };
        if read.len() + chunk.len() > MAX_RESPONSE_BYTES {
            // Keep what fits for the excerpt; read no further.
            let room = MAX_RESPONSE_BYTES - read.len();
            read.extend_from_slice(&chunk[..room]);
            too_large = true;
            break;
        }
        read.extend_from_slice(&chunk);
    }
    drop(stream);
    let excerpt = excerpt(&read);
    let error = if status.is_redirection() {
        Some(format!(
            "the receiver answered {} (redirects are not followed)",
            status.as_u16()
        ))
    } else if !status.is_success() {
        Some(format!("the receiver answered {}", status.as_u16()))
    } else if too_large {
        Some(format!(
            "the receiver's answer is over {MAX_RESPONSE_BYTES} bytes"
        ))
    } else {
        None
    };
    Attempt {
        status: Some(status.as_u16()),
        excerpt,
        error,
    }
}

/// The first bytes of an answer as text, cut at a character boundary.
fn excerpt(bytes: &[u8]) -> Option<String> {
    if bytes.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(EXCERPT_BYTES)]);
    Some(text.trim_end_matches('\u{FFFD}').to_string())
}

/// A header value from user text: control characters, which would break the
/// header, become spaces.
fn header_text(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Prunes the delivery log past retention.
pub struct PruneDeliveries;

#[async_trait::async_trait]
impl Handler for PruneDeliveries {
    async fn run(&self, state: &AppState, _job: &Job) -> Result<(), Failure> {
        let before = now_millis() - i64::from(state.config.jobs_retention_days) * 86_400_000;
        store::prune_deliveries(state.db.pool(), before)
            .await
            .map(|_| ())
            .map_err(|err| Failure::Retry(format!("cannot prune deliveries: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_as_the_standard_webhooks_example() {
        // The example of the Standard Webhooks specification.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = r#"{"test": 2432232314}"#;
        assert_eq!(
            standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body),
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    fn names(events: &[&str]) -> Vec<String> {
        appwrite_event_names(&events.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn event_names_are_appwrites_every_mix_of_ids_and_wildcards() {
        // Computed with Appwrite's `Event::generateEvents` from the same event.
        assert_eq!(
            names(&[
                "databases.d.collections.c.documents.x.create",
                "databases.d.collections.c.documents.*.create",
                "databases.d.collections.*.documents.*.create",
                "databases.*.collections.*.documents.*.create",
            ]),
            [
                "databases.d.collections.c.documents.x.create",
                "databases.*.collections.*.documents.*.create",
                "databases.d.collections.*.documents.x.create",
                "databases.*.collections.*.documents.x.create",
                "databases.*.collections.c.documents.x.create",
                "databases.d.collections.c.documents.*.create",
                "databases.*.collections.c.documents.*.create",
                "databases.d.collections.*.documents.*.create",
                "databases.d.collections.c.documents.x",
                "databases.*.collections.*.documents.*",
                "databases.d.collections.*.documents.x",
                "databases.*.collections.*.documents.x",
                "databases.*.collections.c.documents.x",
                "databases.d.collections.c.documents.*",
                "databases.*.collections.c.documents.*",
                "databases.d.collections.*.documents.*",
                "databases.d.collections.c",
                "databases.*.collections.*",
                "databases.d.collections.*",
                "databases.*.collections.c",
                "databases.d",
                "databases.*",
            ]
        );
        assert_eq!(
            names(&[
                "teams.t.memberships.m.update.status",
                "teams.t.memberships.*.update.status",
                "teams.*.memberships.*.update.status",
            ]),
            [
                "teams.t.memberships.m.update.status",
                "teams.*.memberships.*.update.status",
                "teams.t.memberships.*.update.status",
                "teams.*.memberships.m.update.status",
                "teams.t.memberships.m.update",
                "teams.*.memberships.*.update",
                "teams.t.memberships.*.update",
                "teams.*.memberships.m.update",
                "teams.t.memberships.m",
                "teams.*.memberships.*",
                "teams.t.memberships.*",
                "teams.*.memberships.m",
                "teams.t.update.status",
                "teams.*.update.status",
                "teams.t",
                "teams.*",
            ]
        );
        assert_eq!(
            names(&["users.u.update.email", "users.*.update.email"]),
            [
                "users.u.update",
                "users.*.update",
                "users.u.update.email",
                "users.*.update.email",
                "users.u",
                "users.*",
            ]
        );
        // A file's event lists two patterns for its two ids (the order of a
        // membership's, above).
        assert_eq!(
            names(&["buckets.b.files.f.create", "buckets.*.files.*.create"]),
            [
                "buckets.b.files.f.create",
                "buckets.*.files.*.create",
                "buckets.b.files.*.create",
                "buckets.*.files.f.create",
                "buckets.b.files.f",
                "buckets.*.files.*",
                "buckets.b.files.*",
                "buckets.*.files.f",
                "buckets.b",
                "buckets.*",
            ]
        );
        assert!(names(&[]).is_empty());
    }

    #[test]
    fn header_text_has_no_line_breaks() {
        assert_eq!(header_text("a\r\nb"), "a  b");
    }
}
