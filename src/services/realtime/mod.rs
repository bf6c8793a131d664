//! Realtime: the `realtime(channels:)` subscription delivers the bus events of the
//! addressed project on the given channels, each only to callers allowed to read
//! the resource. A subscriber that falls too far behind is ended with
//! `SUBSCRIBER_TOO_SLOW` instead of buffering without bound; a key revoked while
//! subscribed ends its subscriptions with `INVALID_API_KEY`; a session signed out, or
//! its user blocked or deleted, ends them with that error; new team roles apply at
//! once.

use async_graphql::Value;
use async_graphql::dynamic::{
    FieldValue, InputValue, Object, SubscriptionField, SubscriptionFieldFuture, TypeRef,
};
use tokio::sync::broadcast::error::RecvError;

use std::sync::Arc;

use futures_util::{Stream, StreamExt as _};

use crate::AppState;
use crate::auth::{Caller, Credential};
use crate::bus::{BusMessage, Event, channel_matches};
use crate::error::{AppError, AppResult};
use crate::graphql::SchemaParts;
use crate::graphql::types::{DATETIME, JSON, app, caller, datetime, object, prop};
use crate::http::metrics::GaugeGuard;
use crate::services::users::service::reload_session;

const MAX_CHANNELS: usize = 100;
const MAX_CHANNEL_LENGTH: usize = 256;

fn check_channels(channels: &[String]) -> AppResult<()> {
    let invalid = |reason: String| AppError::Invalid {
        code: "INVALID_CHANNEL",
        field: "channels".into(),
        reason,
    };
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return Err(invalid(format!("give 1 to {MAX_CHANNELS} channels")));
    }
    for channel in channels {
        let well_formed = !channel.is_empty()
            && channel.len() <= MAX_CHANNEL_LENGTH
            && channel.split('.').all(|segment| {
                !segment.is_empty()
                    && (segment == "*"
                        || segment
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-')))
            });
        if !well_formed {
            return Err(invalid(format!(
                "`{channel}` is not a channel: dot-separated names of a-z, A-Z, 0-9, '_', '-', or `*`"
            )));
        }
    }
    Ok(())
}

fn event_value(event: &Event) -> Value {
    let strings =
        |items: &[String]| Value::List(items.iter().map(|s| Value::from(s.as_str())).collect());
    object([
        ("events", strings(&event.events)),
        ("channels", strings(&event.channels)),
        ("timestamp", datetime(event.timestamp)),
        (
            "payload",
            Value::from_json(event.payload.clone()).unwrap_or(Value::Null),
        ),
    ])
}

/// The bus events of the caller's project that `wanted` selects and the caller
/// may read, as they come (each an `Arc<BusMessage::Event>`). The stream ends
/// with an error when the subscriber falls too far behind, its key is revoked,
/// or its session ends or its user is blocked or deleted; a change of the user's
/// roles applies to the next event.
pub fn caller_events(
    state: AppState,
    mut caller: Caller,
    wanted: impl Fn(&Event) -> bool + Send + 'static,
) -> impl Stream<Item = Result<Arc<BusMessage>, async_graphql::Error>> + Send + 'static {
    let own_key_revoked = caller.key().map(|k| format!("keys.{}.delete", k.key_id));
    let mut messages = state.bus.subscribe();
    let active = GaugeGuard::raise("nimbus_subscriptions_active");
    async_stream::stream! {
        let _active = active;
        loop {
            let message = match messages.recv().await {
                Ok(message) => message,
                Err(RecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "dropping a realtime subscriber that fell behind");
                    yield Err(crate::graphql::limits::coded(
                        format!("the subscriber fell {missed} events behind and was dropped; resubscribe and re-query"),
                        "SUBSCRIBER_TOO_SLOW",
                    ).into());
                    break;
                }
                Err(RecvError::Closed) => break,
            };
            let event = match &*message {
                BusMessage::Event(event) => event,
                BusMessage::UserChanged { project_id, user_id } => {
                    // The subscriber's own user changed: signed out, blocked,
                    // deleted, or new team roles. Reload or end.
                    let Credential::Session(session) = &caller.credential else { continue };
                    if session.user.project_id != *project_id || session.user.id != *user_id {
                        continue;
                    }
                    match reload_session(&state, session).await {
                        Ok(reloaded) => caller.credential = Credential::Session(reloaded),
                        Err(err) => {
                            yield Err(err.to_graphql());
                            break;
                        }
                    }
                    continue;
                }
                BusMessage::ProjectChanged { .. } => continue,
            };
            if event.project_id != caller.project.id {
                continue;
            }
            if own_key_revoked.as_ref().is_some_and(|name| event.events.contains(name)) {
                yield Err(AppError::InvalidApiKey.to_graphql());
                break;
            }
            if wanted(event) && caller.may_receive(event) {
                yield Ok(message.clone());
            }
        }
    }
}

pub fn register(parts: &mut SchemaParts, _project: &crate::services::projects::Project) {
    parts.add_type(
        Object::new("RealtimeEvent")
            .description("A change to a resource, delivered to subscribers allowed to read it.")
            .field(prop(
                "events",
                TypeRef::named_nn_list_nn(TypeRef::STRING),
                "Event names, most specific first, e.g. `keys.K.create`, `keys.*.create`.",
            ))
            .field(prop(
                "channels",
                TypeRef::named_nn_list_nn(TypeRef::STRING),
                "Channels the event was published on.",
            ))
            .field(prop(
                "timestamp",
                TypeRef::named_nn(DATETIME),
                "When the change happened.",
            ))
            .field(prop(
                "payload",
                TypeRef::named_nn(JSON),
                "The resource after the change (before it, for a delete).",
            )),
    );
    parts.subscription(
        SubscriptionField::new("realtime", TypeRef::named_nn("RealtimeEvent"), |ctx| {
            SubscriptionFieldFuture::new(async move {
                let state = app(&ctx)?.clone();
                let caller = caller(&ctx)?.clone();
                let channels: Vec<String> = ctx
                    .args
                    .try_get("channels")?
                    .list()?
                    .iter()
                    .map(|v| v.string().map(str::to_string))
                    .collect::<Result<_, _>>()?;
                check_channels(&channels)?;
                let wanted = move |event: &Event| {
                    event
                        .channels
                        .iter()
                        .any(|c| channels.iter().any(|pattern| channel_matches(pattern, c)))
                };
                Ok(caller_events(state, caller, wanted).map(|item| {
                    item.map(|message| match &*message {
                        BusMessage::Event(event) => FieldValue::value(event_value(event)),
                        _ => FieldValue::NULL,
                    })
                }))
            })
        })
        .description("Events on the given channels of the addressed project, e.g. `keys` or `keys.K`; a `*` segment matches any one segment. Only events the caller may read arrive.")
        .argument(InputValue::new("channels", TypeRef::named_nn_list_nn(TypeRef::STRING)).description("Channels to watch, 1 to 100.")),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_malformed_channel_names() {
        assert!(check_channels(&["keys".into(), "keys.*".into()]).is_ok());
        for bad in ["", "keys..x", "keys.$x", "a b"] {
            assert!(check_channels(&[bad.into()]).is_err(), "{bad:?}");
        }
        assert!(check_channels(&[]).is_err());
    }
}
