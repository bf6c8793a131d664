//! Webhooks: per project, a URL that receives the project's events matching its
//! patterns (Appwrite's event names, `*` wildcards), signed with a secret the server
//! generates and shows once. Each delivery is a durable job ([`deliver`]):
//! Standard Webhooks headers plus Appwrite's `X-Appwrite-Webhook-*`, a timeout, a
//! capped response, retries with backoff, a delivery log, and the webhook disabled
//! after too many consecutive failures. Receivers on loopback, private or
//! link-local addresses are refused unless the operator allows them
//! (`NIMBUS_WEBHOOKS_ALLOW_PRIVATE`), with the checks of [`crate::outbound`].
//!
//! Events become deliveries in one place, [`service::deliveries_for`], called once
//! per committed event on the replica that made it; a delivery is keyed by webhook
//! and event id, so hearing an event twice cannot deliver it twice.

pub mod deliver;
pub mod events;
pub mod schema;
pub mod service;
pub mod store;

pub use schema::register;

/// A webhook, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub id: String,
    pub project_id: String,
    pub name: String,
    pub url: String,
    /// Event patterns, checked.
    pub events: Vec<String>,
    pub enabled: bool,
    /// Whether the receiver's TLS certificate is checked (Appwrite's `security`).
    pub tls_verify: bool,
    /// Consecutive failed deliveries.
    pub failures: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

/// One delivery attempt, as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub webhook_id: String,
    pub event_id: String,
    pub job_id: String,
    pub attempt: i64,
    /// The receiver's HTTP status; none when it did not answer.
    pub status_code: Option<i64>,
    pub duration_ms: i64,
    pub success: bool,
    pub error: Option<String>,
    /// The start of the receiver's answer.
    pub response_excerpt: Option<String>,
    pub created_at: i64,
}

/// Queues the deliveries of every event this replica commits.
pub struct Deliveries {
    state: std::sync::Weak<crate::AppInner>,
}

impl Deliveries {
    pub fn new(state: std::sync::Weak<crate::AppInner>) -> Self {
        Deliveries { state }
    }
}

#[async_trait::async_trait]
impl crate::bus::EventSink for Deliveries {
    async fn committed(&self, event: &crate::bus::Event) {
        // The change is committed and its event logged, but its deliveries are not
        // queued yet: a database that is restarting now would lose them, so the
        // queueing is tried again (each delivery is keyed by webhook and event, so a
        // repeat queues nothing twice). This runs in a task of its own.
        let mut wait = QUEUE_RETRY_FIRST;
        let give_up = tokio::time::Instant::now() + QUEUE_RETRY_FOR;
        loop {
            let Some(state) = crate::AppState::upgrade(&self.state) else {
                return;
            };
            let Err(err) = service::deliveries_for(&state, event).await else {
                return;
            };
            drop(state);
            if tokio::time::Instant::now() + wait > give_up {
                tracing::error!(event = %event.id, error = ?err, "webhook deliveries of an event were not queued: the database stayed unavailable");
                return;
            }
            tracing::warn!(event = %event.id, error = ?err, "cannot queue webhook deliveries yet; trying again");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(QUEUE_RETRY_MAX);
        }
    }
}

/// The first wait before queueing an event's deliveries again, doubled each time up
/// to [`QUEUE_RETRY_MAX`], for at most [`QUEUE_RETRY_FOR`].
const QUEUE_RETRY_FIRST: std::time::Duration = std::time::Duration::from_millis(100);
const QUEUE_RETRY_MAX: std::time::Duration = std::time::Duration::from_secs(10);
const QUEUE_RETRY_FOR: std::time::Duration = std::time::Duration::from_secs(15 * 60);
