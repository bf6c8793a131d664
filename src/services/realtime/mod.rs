//! Realtime: the `realtime(channels:)` subscription delivers the bus events of the
//! addressed project on the given channels, each only to callers allowed to read
//! the resource. A subscriber that falls too far behind is ended with
//! `SUBSCRIBER_TOO_SLOW` instead of buffering without bound; a key revoked while
//! subscribed ends its subscriptions with `INVALID_API_KEY`; a session signed out, or
//! its user blocked or deleted, ends them with that error; new team roles apply at
//! once. A document's references in an event's `payload` show the related id only
//! to subscribers who may read that document, as reading it would (the services
//! owning resources say how, through [`ResourceAccess`]).
//!
//! Presence on a channel that names a document or file is for those who may read
//! it; announcing needs a user or key unless the project lets guests in.

pub mod presence;
pub mod resume;
pub mod watch;

use async_graphql::Value;
use async_graphql::dynamic::{
    Field, FieldFuture, FieldValue, InputValue, Object, SubscriptionField, SubscriptionFieldFuture,
    TypeRef,
};
use tokio::sync::broadcast::error::RecvError;

use std::sync::Arc;

use futures_util::{Stream, StreamExt as _};

use crate::AppState;
use crate::auth::rate_limit::client_key;
use crate::auth::{Caller, Credential};
use crate::bus::{BusMessage, Event, Published, channel_matches};
use crate::error::{AppError, AppResult, codes};
use crate::gauge::GaugeGuard;
use crate::graphql::SchemaParts;
use crate::graphql::types::{DATETIME, JSON, app, caller, datetime, input, object, prop};
use crate::services::users::service::{ClientInfo, reload_session};

const MAX_CHANNELS: usize = 100;
const MAX_CHANNEL_LENGTH: usize = 256;
/// Channels with a `*` segment one subscription may give. Every event of the
/// project is matched against every subscription's channels: a name is compared
/// whole, in one step, but a pattern segment by segment, and 100 patterns that
/// match all but their last segment cost each of thousands of subscriptions of
/// one client tens of microseconds per event.
const MAX_PATTERN_CHANNELS: usize = 10;

fn check_channels(channels: &[String]) -> AppResult<()> {
    let invalid = |reason: String| AppError::Invalid {
        code: codes::INVALID_CHANNEL,
        field: "channels".into(),
        reason,
    };
    if channels.is_empty() || channels.len() > MAX_CHANNELS {
        return Err(invalid(format!("give 1 to {MAX_CHANNELS} channels")));
    }
    if channels
        .iter()
        .filter(|channel| is_pattern(channel))
        .count()
        > MAX_PATTERN_CHANNELS
    {
        return Err(invalid(format!(
            "give at most {MAX_PATTERN_CHANNELS} channels with a `*` segment"
        )));
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

/// A channel with a `*` segment, matched segment by segment.
fn is_pattern(channel: &str) -> bool {
    channel.split('.').any(|segment| segment == "*")
}

/// The event's names: its own, most specific first, then every other name Appwrite
/// gives it (each mix of ids and `*`, without the action, the parents), so that a
/// client written for Appwrite finds the one it looks for.
fn event_names(event: &Event) -> Vec<String> {
    let mut names = event.events.clone();
    for name in crate::services::webhooks::deliver::appwrite_event_names(&event.events) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

fn event_value(event: &Event, cursors: &resume::Cursors) -> Value {
    let strings =
        |items: &[String]| Value::List(items.iter().map(|s| Value::from(s.as_str())).collect());
    object([
        ("cursor", cursors.value(event)),
        ("events", strings(&event_names(event))),
        ("channels", strings(&event.channels_with_action())),
        ("timestamp", datetime(event.timestamp)),
        (
            "payload",
            Value::from_json(event.payload.clone()).unwrap_or(Value::Null),
        ),
    ])
}

/// The bus events of the caller's project that `wanted` selects and the caller
/// may read, as they come (each an `Arc<Published>` of a `BusMessage::Event`). The stream ends
/// with an error when the subscriber falls too far behind, its key is revoked,
/// or its session ends or its user is blocked or deleted; a change of the user's
/// roles applies to the next event.
pub fn caller_events(
    state: AppState,
    mut caller: Caller,
    wanted: impl Fn(&Event) -> bool + Send + 'static,
) -> impl Stream<Item = Result<Arc<Published>, async_graphql::Error>> + Send + 'static {
    let own_key_revoked = caller.key().map(|k| format!("keys.{}.delete", k.key_id));
    let mut messages = state.bus.subscribe_paced();
    let mut roles = caller.roles().names();
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
                        codes::SUBSCRIBER_TOO_SLOW,
                    ).into());
                    break;
                }
                Err(RecvError::Closed) => break,
            };
            let event = match &message.message {
                BusMessage::Event(event) => event,
                BusMessage::UserChanged { project_id, user_id } => {
                    // The subscriber's own user: reload or end. Boxed: its state
                    // would otherwise sit in every idle subscription.
                    match Box::pin(follow_user_change(&state, &mut caller, project_id, user_id)).await {
                        Ok(Some(_)) => roles = caller.roles().names(),
                        Ok(None) => {}
                        Err(err) => {
                            yield Err(err.to_graphql());
                            break;
                        }
                    }
                    continue;
                }
                // A console session is re-checked by the connection that holds
                // it, woken through the session cache.
                BusMessage::ProjectChanged { .. }
                | BusMessage::AdminChanged { .. }
                | BusMessage::Presence(_)
                | BusMessage::Resumed => continue,
            };
            if event.project_id != caller.project.id {
                continue;
            }
            if own_key_revoked.as_ref().is_some_and(|name| event.events.contains(name)) {
                yield Err(AppError::InvalidApiKey.to_graphql());
                break;
            }
            if wanted(event) && caller.may_receive(event, &roles) {
                yield Ok(message.clone());
            }
        }
    }
}

/// Reloads `caller`'s session when the user a bus change names (signed out,
/// blocked, deleted, new team roles or labels) is its own: `Ok(None)` when it is
/// not, else the roles the caller held before. A change made during a bus gap
/// arrives too, from the event log.
///
/// The reload runs on a task of its own. A subscription's stream is polled by its
/// socket's task, which may itself be re-checking the same change and need a
/// database connection meanwhile: a query of the stream's, suspended with its
/// connection held while that task waits for one, would wait for good on a small
/// pool.
async fn follow_user_change(
    state: &AppState,
    caller: &mut Caller,
    project_id: &str,
    user_id: &str,
) -> AppResult<Option<crate::auth::permissions::RoleSet>> {
    let Credential::Session(session) = &caller.credential else {
        return Ok(None);
    };
    if session.user.project_id != project_id || session.user.id != user_id {
        return Ok(None);
    }
    let (owned_state, session) = (state.clone(), session.clone());
    let reloaded = tokio::spawn(async move { reload_session(&owned_state, &session).await })
        .await
        .map_err(|err| {
            AppError::Internal(anyhow::anyhow!("reloading a session failed: {err}"))
        })??;
    let before = caller.roles();
    caller.credential = Credential::Session(reloaded);
    Ok(Some(before))
}

/// A `realtime(channels:)` subscription: the events on any of its channels.
/// Which of the events a `realtime` subscription's channels carry it asked for
/// with its `queries`: the documents of one collection that match them.
pub trait EventFilter: Send + Sync + 'static {
    /// Whether `event`, one the subscriber may read, is one it asked for.
    fn passes(&self, event: &Event, caller: &Caller) -> bool;

    /// What [`EventFilter::passes`] may read of one event, as
    /// [`watch::Watch::scan_cost`] counts it.
    fn scan_cost(&self) -> u64;
}

struct ChannelWatch {
    /// The channels named whole, each given once: compared to an event's in one
    /// step.
    names: Vec<String>,
    /// The channels with a `*` segment ([`MAX_PATTERN_CHANNELS`] at most).
    patterns: Vec<String>,
    /// The channels that end in an action (`files.create`), as a channel and the
    /// action: they also take an event of that action on the channel before it.
    with_action: Vec<(String, &'static str)>,
    /// The position of `after:`, when resuming.
    after: Option<i64>,
    cursors: Arc<resume::Cursors>,
    /// What its `queries` ask for, when it gave any.
    filter: Option<Arc<dyn EventFilter>>,
}

impl ChannelWatch {
    /// Whether `event` is on one of the channels.
    fn on_channels(&self, event: &Event) -> bool {
        let wanted = event.channels.iter().any(|channel| {
            self.names.iter().any(|name| name == channel)
                || self
                    .patterns
                    .iter()
                    .any(|pattern| channel_matches(pattern, channel))
        });
        if wanted {
            return true;
        }
        if self.with_action.is_empty() {
            return false;
        }
        let Some(action) = event.channel_action() else {
            return false;
        };
        event
            .channels
            .iter()
            .filter(|channel| crate::bus::takes_action(channel))
            .any(|channel| {
                self.with_action.iter().any(|(wanted, wanted_action)| {
                    *wanted_action == action && channel_matches(wanted, channel)
                })
            })
    }
}

impl watch::Watch for ChannelWatch {
    fn outcome(&self, event: &Event, caller: &Caller) -> Option<watch::Outcome> {
        let asked = self.on_channels(event)
            && self
                .filter
                .as_ref()
                .is_none_or(|filter| filter.passes(event, caller));
        asked.then_some("")
    }

    fn scan_cost(&self) -> u64 {
        self.filter.as_ref().map_or(0, |filter| filter.scan_cost())
    }

    fn value(&self, event: &Event, _: watch::Outcome) -> Value {
        event_value(event, &self.cursors)
    }

    fn resume_after(&self) -> Option<i64> {
        self.after
    }
}

pub fn register(parts: &mut SchemaParts, _project: &crate::services::projects::Project) {
    register_presence(parts);
    parts.add_type(realtime_event_type());
    parts.subscription(realtime());
}

fn realtime_event_type() -> Object {
    Object::new("RealtimeEvent")
        .description("A change to a resource, delivered to subscribers allowed to read it.")
        .field(prop(
            "cursor",
            TypeRef::named(TypeRef::STRING),
            resume::CURSOR_DESCRIPTION,
        ))
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
        .field(
            Field::new("payload", TypeRef::named_nn(JSON), |ctx| {
                FieldFuture::new(async move { Ok(Some(FieldValue::value(payload(&ctx).await?))) })
            })
            .description("The resource after the change (before it, for a delete); a document's references to documents the subscriber may not read are null, as when reading it."),
        )
}

/// An event's `payload`: the resource as logged, with what reading it would hide
/// from the subscriber hidden (only a document's references, for now). Keys see it
/// whole (they read every document); a payload with no reference is shared by
/// every subscriber's render as it is.
async fn payload(ctx: &async_graphql::dynamic::ResolverContext<'_>) -> AppResult<Value> {
    let parent = crate::graphql::types::parent_value(ctx);
    let field = |key: &str| match parent {
        Some(Value::Object(object)) => object.get(key).cloned(),
        _ => None,
    };
    let payload = field("payload").unwrap_or(Value::Null);
    let of_a_document = matches!(field("channels"), Some(Value::List(channels))
        if channels.iter().any(|c| matches!(c, Value::String(c) if c == "documents")));
    if !of_a_document {
        return Ok(payload);
    }
    let resources = ctx.data::<Arc<dyn ResourceAccess>>().map_err(|_| {
        AppError::Internal(anyhow::anyhow!("resource access missing from schema data"))
    })?;
    let mut json = payload
        .into_json()
        .map_err(|e| AppError::Internal(e.into()))?;
    resources.hide_unreadable_references(ctx, &mut json).await?;
    Value::from_json(json).map_err(|e| AppError::Internal(e.into()))
}

fn realtime() -> SubscriptionField {
    SubscriptionField::new("realtime", TypeRef::named_nn("RealtimeEvent"), |ctx| {
        SubscriptionFieldFuture::new(async move {
            if let Some(rendering) = watch::prepared(&ctx) {
                return Ok(rendering);
            }
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
            let mut with_action: Vec<(String, &'static str)> = channels
                .iter()
                .filter_map(|channel| {
                    let (before, last) = channel.rsplit_once('.')?;
                    let action = crate::bus::CHANNEL_ACTIONS
                        .iter()
                        .find(|action| **action == last)?;
                    Some((before.to_string(), *action))
                })
                .collect();
            // Each is compared with every event: once is enough.
            with_action.sort_unstable();
            with_action.dedup();
            let queries: Vec<String> = match ctx.args.get("queries") {
                Some(list) if !list.is_null() => list
                    .list()?
                    .iter()
                    .map(|v| v.string().map(str::to_string))
                    .collect::<Result<_, _>>()?,
                _ => Vec::new(),
            };
            let filter = if queries.is_empty() {
                None
            } else {
                let resources = ctx.data::<Arc<dyn ResourceAccess>>().map_err(|_| {
                    AppError::Internal(anyhow::anyhow!("resource access missing from schema data"))
                })?;
                Some(resources.document_filter(&ctx, &channels, &queries)?)
            };
            let after = resume::after_argument(&ctx, &caller.project.id)?;
            let cursors = state.cursors.clone();
            let (patterns, mut names): (Vec<String>, Vec<String>) =
                channels.into_iter().partition(|channel| is_pattern(channel));
            names.sort_unstable();
            names.dedup();
            let watch = ChannelWatch {
                names,
                patterns,
                with_action,
                after,
                cursors,
                filter,
            };
            Ok(watch::follow(&ctx, state, caller, watch))
        })
    })
    .description("Events on the given channels of the addressed project, e.g. `keys` or `keys.K`; a `*` segment matches any one segment (1 to 100 channels, at most 10 with a `*`). As in Appwrite, a resource's channel followed by an action (`files.create`, `teams.T.update`, `databases.D.collections.C.documents.delete`) takes only that action's events. Only events the caller may read arrive.")
    .argument(InputValue::new("channels", TypeRef::named_nn_list_nn(TypeRef::STRING)).description("Channels to watch, 1 to 100."))
    .argument(InputValue::new("queries", TypeRef::named_nn_list(TypeRef::STRING)).description("Appwrite's filter queries, as `documents` takes them (no order, page or selection, no condition on a relationship), when every channel is a documents channel of one collection (`databases.D.collections.C.documents…`): only changes to documents that match them, before or after the change, arrive."))
    .argument(resume::after_input())
}

fn presence_value(presence: &presence::Presence) -> Value {
    object([
        (
            "type",
            Value::Enum(async_graphql::Name::new(presence.kind.as_str())),
        ),
        ("channel", Value::from(presence.channel.as_str())),
        ("presenceId", Value::from(presence.id.as_str())),
        (
            "userId",
            presence
                .user_id
                .as_deref()
                .map(Value::from)
                .unwrap_or(Value::Null),
        ),
        (
            "state",
            Value::from_json(presence.state.clone()).unwrap_or(Value::Null),
        ),
        ("at", datetime(presence.at)),
    ])
}

fn check_presence_state(state: &AppState, value: &serde_json::Value) -> AppResult<()> {
    let max = state.config.presence_max_state_bytes;
    let size = serde_json::to_vec(value)
        .map(|b| b.len() as u64)
        .unwrap_or(u64::MAX);
    if size > max {
        return Err(AppError::Invalid {
            code: codes::PRESENCE_TOO_LARGE,
            field: "state".into(),
            reason: format!("at most {max} bytes of JSON"),
        });
    }
    Ok(())
}

/// Channel roots that name resources: a presence there says who is looking at a
/// document or file, so only those who may read it may announce or watch, and the
/// channel must name one resource in full to be checked.
const RESOURCE_ROOTS: [&str; 4] = ["databases", "documents", "buckets", "files"];

/// Whether the caller may read the one resource a presence channel names, asked of
/// the services that own resources. The registry attaches one to every schema, so
/// realtime names none of those services.
#[async_trait::async_trait]
pub trait ResourceAccess: Send + Sync + 'static {
    /// `None` when `segments` name no resource this knows; otherwise whether the
    /// caller may read it (a resource it may not read answers as a missing one).
    async fn check(
        &self,
        ctx: &async_graphql::dynamic::ResolverContext<'_>,
        segments: &[&str],
    ) -> Option<AppResult<()>>;

    /// [`ResourceAccess::check`] for `reader` outside a request, against the
    /// project as it is now (its collections, buckets and the item itself).
    async fn check_now(
        &self,
        state: &AppState,
        reader: &Caller,
        segments: &[&str],
    ) -> Option<AppResult<()>>;

    /// Of `events`, changes logged earlier that `reader` (with `roles`) may read as
    /// they were logged, those it may still read as the document's collection or
    /// the file's bucket is now: enabled, with its read permissions and its
    /// document or file security (the item's own permissions as the event carries
    /// them). An event keeps its `previous` only when that version passes too.
    /// Events of other resources pass as they are; so does everything for a key,
    /// which reaches disabled containers and reads by its scopes.
    async fn still_readable(
        &self,
        state: &AppState,
        reader: &Caller,
        roles: &crate::auth::permissions::RoleNames,
        events: Vec<Event>,
    ) -> AppResult<Vec<Event>>;

    /// Clears in `payload`, the resource a realtime event carries, the references
    /// to other resources the caller may not read (a document's many-to-one and
    /// one-to-one fields), as reading the resource would show it.
    async fn hide_unreadable_references(
        &self,
        ctx: &async_graphql::dynamic::ResolverContext<'_>,
        payload: &mut serde_json::Value,
    ) -> AppResult<()>;

    /// What a `realtime` subscription on `channels` asks for with `queries`:
    /// refused unless every channel is a documents channel of one collection.
    fn document_filter(
        &self,
        ctx: &async_graphql::dynamic::ResolverContext<'_>,
        channels: &[String],
        queries: &[String],
    ) -> AppResult<Arc<dyn EventFilter>>;
}

/// The channels whose change decides who may read the resource a presence
/// channel names: its database and collection, or its bucket.
fn ancestors_of(channel: &str) -> Vec<String> {
    let segments: Vec<&str> = channel.split('.').collect();
    match segments.as_slice() {
        [
            "databases",
            database,
            "collections",
            collection,
            "documents",
            _,
        ] => vec![
            format!("databases.{database}"),
            format!("databases.{database}.collections.{collection}"),
        ],
        ["buckets", bucket, "files", _] => vec![format!("buckets.{bucket}")],
        _ => Vec::new(),
    }
}

/// Whether a presence channel names a resource (and so needs its reader's access).
fn is_resource_channel(channel: &str) -> bool {
    RESOURCE_ROOTS.contains(&channel.split('.').next().unwrap_or_default())
}

/// Checks that the caller may read the resource a presence channel names:
/// `databases.D.collections.C.documents.ID` or `buckets.B.files.ID`. Other channels
/// under a resource root name no one resource and are refused; the rest are free.
async fn check_presence_access(
    ctx: &async_graphql::dynamic::ResolverContext<'_>,
    channel: &str,
) -> AppResult<()> {
    if !is_resource_channel(channel) {
        return Ok(());
    }
    let segments: Vec<&str> = channel.split('.').collect();
    let resources = ctx.data::<Arc<dyn ResourceAccess>>().map_err(|_| {
        AppError::Internal(anyhow::anyhow!("ResourceAccess missing from schema data"))
    })?;
    match resources.check(ctx, &segments).await {
        Some(checked) => checked,
        None => Err(AppError::Invalid {
            code: codes::INVALID_CHANNEL,
            field: "channel".into(),
            reason: "a presence channel under `databases`, `documents`, `buckets` or `files` names one document (`databases.D.collections.C.documents.ID`) or file (`buckets.B.files.ID`)".into(),
        }),
    }
}

/// An open `presence` subscription: present until dropped, then gone (LEAVE) on
/// every replica.
struct OwnPresence {
    state: AppState,
    presence: presence::Presence,
}

impl Drop for OwnPresence {
    fn drop(&mut self) {
        let mut leave = self.presence.clone();
        leave.kind = presence::PresenceKind::Leave;
        leave.at = chrono::Utc::now().timestamp_millis();
        let _ = self.state.presence.apply(&leave);
        let bus = self.state.bus.clone();
        tokio::spawn(async move {
            let _ = bus.publish_presence(leave).await;
        });
    }
}

/// Who is on `channel` (one JOIN each), then every JOIN, UPDATE and LEAVE there.
/// On a channel naming a document or file, `reader` is the caller that was let in:
/// the stream ends (`PERMISSION_DENIED`) once the resource is deleted, changed so
/// that the reader may no longer read it, once its collection, database or bucket
/// is deleted or changed so (asked again as they are now), or once the reader
/// loses a role. `messages` listens from before the access check, so that no
/// change falls between the check and the stream.
fn presence_stream(
    state: AppState,
    project_id: String,
    channel: String,
    own: Option<OwnPresence>,
    reader: Option<Reader>,
    mut messages: crate::bus::PacedReceiver,
) -> impl Stream<Item = Result<Value, async_graphql::Error>> + Send + 'static {
    let (mut reader, resources) = match reader {
        Some(Reader { caller, resources }) => (Some(caller), Some(resources)),
        None => (None, None),
    };
    let mut roles = reader.as_ref().map(|reader| reader.roles().names());
    let ancestors = ancestors_of(&channel);
    let current = state.presence.members(
        &project_id,
        &channel,
        Some(state.config.presence_max_replay),
    );
    let active = GaugeGuard::raise("nimbus_subscriptions_active");
    async_stream::stream! {
        let _active = active;
        let _own = own;
        let mut listed = std::collections::HashSet::new();
        for mut member in current {
            listed.insert(member.id.clone());
            member.kind = presence::PresenceKind::Join;
            yield Ok(presence_value(&member));
        }
        loop {
            let message = match messages.recv().await {
                Ok(message) => message,
                Err(RecvError::Lagged(missed)) => {
                    yield Err(crate::graphql::limits::coded(
                        format!("the subscriber fell {missed} events behind and was dropped; resubscribe"),
                        codes::SUBSCRIBER_TOO_SLOW,
                    ).into());
                    break;
                }
                Err(RecvError::Closed) => break,
            };
            let change = match &message.message {
                BusMessage::Presence(change) => change,
                BusMessage::Event(event) => {
                    let (Some(reader), Some(roles)) = (&reader, &roles) else { continue };
                    if event.project_id != project_id {
                        continue;
                    }
                    if let Some(action) = event.action_on(&channel)
                        && (action == "delete" || !reader.may_receive(event, roles))
                    {
                        yield Err(no_longer_readable().to_graphql());
                        break;
                    }
                    // Its collection, database or bucket changed (its permissions,
                    // document security, enabled flag): asked again as it is now,
                    // on a task of its own like a session reload.
                    let Some(action) = ancestors.iter().find_map(|a| event.action_on(a)) else {
                        continue;
                    };
                    let still = action != "delete" && match &resources {
                        Some(resources) => {
                            let (state, reader, resources, channel) =
                                (state.clone(), reader.clone(), resources.clone(), channel.clone());
                            tokio::spawn(async move {
                                let segments: Vec<&str> = channel.split('.').collect();
                                resources.check_now(&state, &reader, &segments).await
                            })
                            .await
                            .ok()
                            .flatten()
                            .is_some_and(|checked| checked.is_ok())
                        }
                        None => false,
                    };
                    if !still {
                        yield Err(no_longer_readable().to_graphql());
                        break;
                    }
                    continue;
                }
                BusMessage::UserChanged { project_id: changed_project, user_id } => {
                    let Some(reader) = reader.as_mut() else { continue };
                    match Box::pin(follow_user_change(&state, reader, changed_project, user_id)).await {
                        Ok(Some(before)) => {
                            // A role gone may have been what let the reader in.
                            let after = reader.roles();
                            if !before.iter().all(|role| after.contains(role)) {
                                yield Err(no_longer_readable().to_graphql());
                                break;
                            }
                            roles = Some(after.names());
                        }
                        Ok(None) => {}
                        Err(err) => {
                            yield Err(err.to_graphql());
                            break;
                        }
                    }
                    continue;
                }
                _ => continue,
            };
            // A listed presence that leaves (an expiry during a bus outage, say)
            // and is heard of again later JOINs anew.
            if change.kind == presence::PresenceKind::Leave {
                listed.remove(&change.id);
            }
            if change.project_id != project_id
                || change.channel != channel
                || change.kind == presence::PresenceKind::Heartbeat
                || (change.kind == presence::PresenceKind::Join && listed.remove(&change.id))
            {
                continue;
            }
            yield Ok(presence_value(change));
        }
    }
}

/// Who was let onto a presence channel naming a resource, and how to ask again
/// whether they may still read it.
struct Reader {
    caller: Caller,
    resources: Arc<dyn ResourceAccess>,
}

impl Reader {
    /// The reader of `channel` when it names a resource.
    fn of(
        ctx: &async_graphql::dynamic::ResolverContext<'_>,
        caller: &Caller,
        channel: &str,
    ) -> AppResult<Option<Reader>> {
        if !is_resource_channel(channel) {
            return Ok(None);
        }
        let resources = ctx.data::<Arc<dyn ResourceAccess>>().map_err(|_| {
            AppError::Internal(anyhow::anyhow!("ResourceAccess missing from schema data"))
        })?;
        Ok(Some(Reader {
            caller: caller.clone(),
            resources: resources.clone(),
        }))
    }
}

fn no_longer_readable() -> AppError {
    AppError::PermissionDenied {
        reason: "you may no longer read what this presence channel names; subscribe again".into(),
    }
}

/// The `channel` argument of a presence field: one channel name, no `*`.
fn channel_arg(ctx: &async_graphql::dynamic::ResolverContext<'_>) -> AppResult<String> {
    let channel = ctx
        .args
        .get("channel")
        .and_then(|v| v.string().ok().map(str::to_string))
        .unwrap_or_default();
    check_channels(std::slice::from_ref(&channel))?;
    if channel.split('.').any(|segment| segment == "*") {
        return Err(AppError::Invalid {
            code: codes::INVALID_CHANNEL,
            field: "channel".into(),
            reason: "a presence channel is one name, without `*`".into(),
        });
    }
    Ok(channel)
}

fn register_presence(parts: &mut SchemaParts) {
    parts.add_type(
        async_graphql::dynamic::Enum::new("PresenceChangeType")
            .description("Someone arrived on a presence channel, changed their state, or left (closed the subscription, or their server went silent).")
            .items(["JOIN", "UPDATE", "LEAVE"]),
    );
    parts.add_type(presence_event_type());
    parts.add_input::<UpdatePresenceInput>();
    parts.add_type(update_presence_payload_type());
    parts.subscription(presence());
    parts.subscription(presence_changed());
    parts.mutation(update_presence());
}

fn presence_event_type() -> Object {
    Object::new("PresenceEvent")
        .description("A change to who is on a presence channel.")
        .field(prop(
            "type",
            TypeRef::named_nn("PresenceChangeType"),
            "What happened.",
        ))
        .field(prop(
            "channel",
            TypeRef::named_nn(TypeRef::STRING),
            "The channel.",
        ))
        .field(prop(
            "presenceId",
            TypeRef::named_nn(TypeRef::ID),
            "One open `presence` subscription.",
        ))
        .field(prop(
            "userId",
            TypeRef::named(TypeRef::ID),
            "The signed-in user behind it.",
        ))
        .field(prop(
            "state",
            TypeRef::named(JSON),
            "Its state, a small JSON value (`NIMBUS_PRESENCE_MAX_STATE_BYTES`, 1 KiB by default).",
        ))
        .field(prop("at", TypeRef::named_nn(DATETIME), "When it happened."))
}

fn update_presence_payload_type() -> Object {
    Object::new("UpdatePresencePayload")
        .description("The result of `updatePresence`.")
        .field(prop(
            "updatedCount",
            TypeRef::named_nn(TypeRef::INT),
            "How many of the caller's presences changed.",
        ))
}

fn presence() -> SubscriptionField {
    SubscriptionField::new("presence", TypeRef::named_nn("PresenceEvent"), |ctx| {
        SubscriptionFieldFuture::new(async move {
            let state = app(&ctx)?.clone();
            let caller = caller(&ctx)?;
            // Guests are anyone at all: announcing, unlike watching, takes a
            // place on the channel and in memory on every replica.
            let user_id = caller.require_session().ok().map(|s| s.user.id.clone());
            if user_id.is_none() && caller.key().is_none() && !caller.project.auth.presence_guests {
                return Err(AppError::Unauthenticated.into());
            }
            let channel = channel_arg(&ctx)?;
            let presence_state = match ctx.args.get("state") {
                Some(v) if !v.is_null() => v.as_value().clone().into_json()?,
                _ => serde_json::Value::Null,
            };
            check_presence_state(&state, &presence_state)?;
            // Listening starts before the access check and the list of who is
            // there, so no change falls in between.
            let messages = state.bus.subscribe_paced();
            check_presence_access(&ctx, &channel).await?;
            let presence = presence::Presence {
                project_id: caller.project.id.clone(),
                channel: channel.clone(),
                id: crate::db::ids::generate(),
                user_id,
                state: presence_state,
                kind: presence::PresenceKind::Join,
                at: chrono::Utc::now().timestamp_millis(),
            };
            let client = ctx
                .data::<ClientInfo>()
                .map(|c| client_key(&c.ip))
                .unwrap_or_default();
            let limits = presence::PresenceLimits {
                per_channel: state.config.presence_max_per_channel,
                per_user: state.config.presence_max_per_user,
                per_client: state.config.presence_max_per_client,
                joins_per_second: state.config.presence_max_joins_per_client,
            };
            state.presence.open_local(&presence, &client, limits)?;
            let own = OwnPresence { state: state.clone(), presence: presence.clone() };
            let reader = Reader::of(&ctx, caller, &channel)?;
            let stream = presence_stream(
                state.clone(),
                caller.project.id.clone(),
                channel,
                Some(own),
                reader,
                messages,
            );
            let _ = state.bus.publish_presence(presence).await;
            Ok(stream.map(|item| item.map(FieldValue::value)))
        })
    })
    .description("Announces the caller on a presence channel for as long as this subscription stays open, and delivers who is there (a JOIN each, up to `NIMBUS_PRESENCE_MAX_REPLAY`) and every change after. Needs a signed-in user or a key, unless the project's `presenceGuests` is on; fails with `TOO_MANY_PRESENCES` past the caps per channel, user and client address.")
    .argument(InputValue::new("channel", TypeRef::named_nn(TypeRef::STRING)).description("The channel, e.g. `room-7`, or `databases.D.collections.C.documents.ID` / `buckets.B.files.ID` to be present on a document or file the caller may read."))
    .argument(InputValue::new("state", TypeRef::named(JSON)).description("A small state to show the others (1 KiB of JSON by default)."))
}

fn presence_changed() -> SubscriptionField {
    SubscriptionField::new("presenceChanged", TypeRef::named_nn("PresenceEvent"), |ctx| {
        SubscriptionFieldFuture::new(async move {
            let state = app(&ctx)?.clone();
            let caller = caller(&ctx)?;
            let channel = channel_arg(&ctx)?;
            let messages = state.bus.subscribe_paced();
            check_presence_access(&ctx, &channel).await?;
            let reader = Reader::of(&ctx, caller, &channel)?;
            Ok(presence_stream(state, caller.project.id.clone(), channel, None, reader, messages)
                .map(|item| item.map(FieldValue::value)))
        })
    })
    .description("Who is on a presence channel (a JOIN each, up to `NIMBUS_PRESENCE_MAX_REPLAY`), then every JOIN, UPDATE and LEAVE, without announcing the caller.")
    .argument(InputValue::new("channel", TypeRef::named_nn(TypeRef::STRING)))
}

fn update_presence() -> Field {
    async_graphql::dynamic::Field::new("updatePresence", TypeRef::named_nn("UpdatePresencePayload"), |ctx| {
        async_graphql::dynamic::FieldFuture::new(async move {
            let state = app(&ctx)?;
            let caller = caller(&ctx)?;
            let me = caller.require_session()?;
            let UpdatePresenceInput { channel, state: new_state } = input(&ctx)?;
            let new_state = new_state.unwrap_or(serde_json::Value::Null);
            check_presence_state(state, &new_state)?;
            let mine = state.presence.held_by(&caller.project.id, &channel, &me.user.id);
            // Each update reaches every watcher of the channel on every replica.
            let client = ctx
                .data::<ClientInfo>()
                .map(|c| client_key(&c.ip))
                .unwrap_or_default();
            let per_second = state.config.presence_max_updates_per_client;
            // At most a second's worth at once, so that a user holding more
            // presences than that can still update them once a second.
            let count = mine.len().min(per_second);
            state.presence.charge_updates(&client, count, per_second)?;
            for mut presence in mine.clone() {
                presence.state = new_state.clone();
                presence.kind = presence::PresenceKind::Update;
                presence.at = chrono::Utc::now().timestamp_millis();
                let _ = state.bus.publish_presence(presence).await;
            }
            Ok(Some(async_graphql::dynamic::FieldValue::value(object([(
                "updatedCount",
                Value::from(mine.len()),
            )]))))
        })
    })
    .description("Changes the signed-in caller's state on a presence channel, in every presence they hold there. Each presence changed counts one against `NIMBUS_PRESENCE_MAX_UPDATES_PER_CLIENT` a second (`RATE_LIMITED` past it, and nothing changed).")
    .argument(UpdatePresenceInput::argument())
}

crate::graphql_input! {
    "A new presence state for the caller on a channel."
    struct UpdatePresenceInput {
        "The presence channel, as `presence` takes it."
        channel: String,
        "The new state, a small JSON value; null clears it."
        state: Option<serde_json::Value>,
    }
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
