//! The Redis side of the bus: a publisher over a self-healing `ConnectionManager`,
//! and a listener task that owns the pub/sub connection, reconnects with backoff
//! when Redis goes away, and forwards notifications of logged messages to the relay
//! and other replicas' presence into the local broadcast (with a `Resumed` notice
//! after each reconnect, upon which the relay also catches up from the log).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt as _;
use redis::AsyncCommands as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::task::JoinHandle;

use super::log::RelayHandle;
use super::{BusMessage, Local, Wire};

const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

pub struct RedisBus {
    publisher: ConnectionManager,
    channel: String,
    /// This replica, as its presence messages name it: the listener skips them.
    origin: String,
    listening: Arc<AtomicBool>,
    listener: JoinHandle<()>,
}

impl RedisBus {
    pub(super) async fn connect(
        url: &str,
        prefix: &str,
        local: Local,
        relay: RelayHandle,
    ) -> anyhow::Result<Self> {
        let shown = crate::db::redact_url(url);
        let client =
            redis::Client::open(url).with_context(|| format!("invalid Redis URL {shown}"))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(COMMAND_TIMEOUT))
            .set_response_timeout(Some(COMMAND_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(MAX_BACKOFF);
        let publisher = tokio::time::timeout(
            COMMAND_TIMEOUT * 2,
            client.get_connection_manager_with_config(config),
        )
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))
        .and_then(|r| r.map_err(anyhow::Error::from))
        .with_context(|| format!("cannot connect to Redis at {shown}"))?;

        let channel = format!("{prefix}:bus");
        let listening = Arc::new(AtomicBool::new(false));
        let origin = crate::db::ids::generate();
        // Subscribe before returning, so a message published right after start-up is
        // not missed by this replica.
        let first = subscribe(&client, &channel)
            .await
            .with_context(|| format!("cannot subscribe to Redis at {shown}"))?;
        listening.store(true, Ordering::SeqCst);
        let listener = tokio::spawn(listen(
            client,
            channel.clone(),
            first,
            local,
            relay,
            listening.clone(),
            origin.clone(),
        ));
        Ok(RedisBus {
            publisher,
            channel,
            origin,
            listening,
            listener,
        })
    }

    /// This replica's name on the bus.
    pub(super) fn origin(&self) -> &str {
        &self.origin
    }

    /// Publishes `message`; fails at once while the listener is cut off from
    /// Redis. Every notification is only for latency (the log is the truth, and
    /// presence is re-announced on resumption), so a write or a presence must not
    /// wait on a Redis that is known to be away.
    pub(super) async fn publish(&self, message: &Wire) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.listening.load(Ordering::SeqCst),
            "the bus is reconnecting to Redis"
        );
        let payload = serde_json::to_string(message)?;
        let mut conn = self.publisher.clone();
        tokio::time::timeout(
            COMMAND_TIMEOUT,
            conn.publish::<_, _, ()>(&self.channel, payload),
        )
        .await
        .context("Redis PUBLISH timed out")?
        .context("Redis PUBLISH failed")
    }

    /// Ok when Redis answers PING and the listener is subscribed.
    pub(super) async fn check(&self) -> anyhow::Result<()> {
        let mut conn = self.publisher.clone();
        let pong: String =
            tokio::time::timeout(COMMAND_TIMEOUT, redis::cmd("PING").query_async(&mut conn))
                .await
                .context("Redis PING timed out")?
                .context("Redis PING failed")?;
        anyhow::ensure!(pong == "PONG", "unexpected PING answer");
        anyhow::ensure!(
            self.listening.load(Ordering::SeqCst),
            "the bus listener is reconnecting to Redis"
        );
        Ok(())
    }

    /// A handle on the self-healing command connection, for other Redis users
    /// (rate limits).
    pub(super) fn connection(&self) -> ConnectionManager {
        self.publisher.clone()
    }

    pub(super) fn shutdown(&self) {
        self.listener.abort();
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}

/// Forwards the Redis channel to the relay (logged messages) and the local broadcast
/// (presence) for as long as the bus lives, re-subscribing after every disconnect.
async fn listen(
    client: redis::Client,
    channel: String,
    first: redis::aio::PubSub,
    local: Local,
    relay: RelayHandle,
    listening: Arc<AtomicBool>,
    origin: String,
) {
    let mut pubsub = Some(first);
    let mut backoff = Duration::from_millis(100);
    loop {
        let connection = match pubsub.take() {
            Some(connection) => Ok(connection),
            None => tokio::time::timeout(COMMAND_TIMEOUT, subscribe(&client, &channel))
                .await
                .unwrap_or_else(|_| {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "connect timed out",
                    )))
                }),
        };
        match connection {
            Ok(connection) => {
                if !listening.swap(true, Ordering::SeqCst) {
                    tracing::info!("bus listener re-subscribed to Redis");
                    // Notifications sent during the gap are lost: the relay reads
                    // the log, and subscribers re-check what they hold.
                    local.send(BusMessage::Resumed);
                    relay.catch_up();
                }
                backoff = Duration::from_millis(100);
                let mut messages = connection.into_on_message();
                while let Some(msg) = messages.next().await {
                    match serde_json::from_slice::<Wire>(msg.get_payload_bytes()) {
                        Ok(Wire::Entry {
                            position,
                            project_id,
                            body,
                        }) => {
                            if let Some(message) = super::log::decode(&project_id, &body) {
                                relay.offer(position, message);
                            }
                        }
                        Ok(Wire::Logged { position, message }) => relay.offer(position, message),
                        // This replica's own were told here when sent.
                        Ok(Wire::Presence { origin: from, .. }) if from == origin => {}
                        Ok(Wire::Presence { presence, .. }) => local.send_presence(presence),
                        Err(err) => tracing::warn!(error = %err, "ignoring malformed bus message"),
                    }
                }
                listening.store(false, Ordering::SeqCst);
                tracing::warn!("lost the Redis bus subscription; reconnecting");
            }
            Err(err) => {
                tracing::debug!(error = %err, "Redis bus reconnect failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
