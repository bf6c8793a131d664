//! Subscriptions that follow bus events, as one shape: a [`Watch`] says what an
//! event means to its subscription, and what value the subscription field yields
//! for it. On a WebSocket the connection follows the bus itself for all of its
//! watches (`http::ws`): it asks each watch about each event and renders a response
//! once per operation and outcome, shared by every subscriber that asked alike.
//! Elsewhere the subscription field streams the events itself.
//!
//! A resolver that supports both starts with [`prepared`] (a render in progress:
//! yield the prepared value and nothing else) and ends with [`follow`]. A watch
//! resuming after a cursor ([`Watch::resume_after`]) is first handed what the
//! event log holds since, then the live events it was not handed
//! ([`super::resume`]).

use std::sync::{Arc, Mutex};

use async_graphql::Value;
use async_graphql::dynamic::{FieldValue, ResolverContext};
use futures_util::stream::{self, BoxStream};
use futures_util::{StreamExt as _, future};

use crate::AppState;
use crate::auth::Caller;
use crate::auth::access::may_see_previous;
use crate::bus::{BusMessage, Event};
use crate::error::AppError;

/// What an event means to one subscription: an outcome such as `CREATE` or
/// `LEAVE`, or `""` when there is only one kind.
pub type Outcome = &'static str;

/// One subscription's view of the bus.
pub trait Watch: Send + Sync + 'static {
    /// `None` when `event` is not for this subscription; otherwise what it means to
    /// `caller` as it is now (its roles may have changed since it subscribed).
    /// Whether the caller may read the resource is checked apart from this.
    fn outcome(&self, event: &Event, caller: &Caller) -> Option<Outcome>;

    /// The value the subscription field yields for `event` seen as `outcome`. It
    /// must depend on nothing else: subscribers of the same operation share it.
    fn value(&self, event: &Event, outcome: Outcome) -> Value;

    /// The log position to replay from before going live (`after:`), if any.
    fn resume_after(&self) -> Option<i64> {
        None
    }

    /// The most text [`Watch::outcome`] may read of one event's resource, in
    /// characters (a filter's substring and search conditions): what the
    /// subscription costs each event, counted for its client.
    fn scan_cost(&self) -> u64 {
        0
    }
}

/// Request data of a subscription started on a WebSocket: the resolver leaves its
/// watch here, and the connection takes it over.
#[derive(Clone, Default)]
pub struct WatchSlot(Arc<Mutex<Option<Box<dyn Watch>>>>);

impl WatchSlot {
    pub fn take(&self) -> Option<Box<dyn Watch>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn fill(&self, watch: Box<dyn Watch>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(watch);
    }
}

/// Request data of a render: the value the subscription field yields, once.
pub struct Prepared(pub Value);

type FieldStream<'a> = BoxStream<'a, async_graphql::Result<FieldValue<'a>>>;

/// During a render, the stream of the prepared value alone.
pub fn prepared<'a>(ctx: &ResolverContext<'a>) -> Option<FieldStream<'a>> {
    let Prepared(value) = ctx.data_opt::<Prepared>()?;
    let item = Ok(FieldValue::value(value.clone()));
    Some(stream::once(future::ready(item)).boxed())
}

/// The stream a watching subscription field returns: on a WebSocket, none (the
/// connection takes the watch over); elsewhere, the values of the events the
/// watch wants and the caller may read.
pub fn follow<'a>(
    ctx: &ResolverContext<'a>,
    state: AppState,
    caller: Caller,
    watch: impl Watch,
) -> FieldStream<'a> {
    if let Some(slot) = ctx.data_opt::<WatchSlot>() {
        slot.fill(Box::new(watch));
        return stream::empty().boxed();
    }
    let watch = Arc::new(watch);
    let receiver = caller.clone();
    let wanted = {
        let watch = watch.clone();
        let caller = caller.clone();
        move |event: &Event| watch.outcome(event, &caller).is_some()
    };
    let after = watch.resume_after();
    let resources = ctx.data::<Arc<dyn super::ResourceAccess>>().ok().cloned();
    // Live first, so that nothing logged while the replay is read falls between.
    let live = super::caller_events(state.clone(), caller.clone(), wanted);
    let events = match (after, resources) {
        (None, _) => live.boxed(),
        (Some(_), None) => {
            let missing =
                AppError::Internal(anyhow::anyhow!("resource access missing from schema data"));
            stream::once(future::ready(Err(missing.to_graphql()))).boxed()
        }
        (Some(after), Some(resources)) => {
            let handover = super::resume::Handover::join(&state, after);
            let mut replay = super::resume::Replay::new(&caller.project.id, handover.clone());
            let roles = caller.roles().names();
            let watch = watch.clone();
            // The replay a page at a time, each read once the one before was
            // taken; then the live events it did not send.
            async_stream::stream! {
                loop {
                    if replay.overdue() {
                        yield Err(super::resume::Replay::overdue_error().into());
                        return;
                    }
                    let wanted = |event: &Event| watch.outcome(event, &caller).is_some();
                    let page = replay
                        .next_page(&state, &caller, &roles, resources.as_ref(), wanted)
                        .await;
                    match page {
                        Ok(Some(events)) => {
                            for event in events {
                                yield Ok(event);
                            }
                        }
                        Ok(None) => break,
                        Err(err) => {
                            yield Err(err.to_graphql());
                            return;
                        }
                    }
                }
                let mut live = std::pin::pin!(live);
                while let Some(item) = live.next().await {
                    let replayed = matches!(&item, Ok(published)
                        if matches!(&published.message, BusMessage::Event(event) if !handover.live(event.position)));
                    if !replayed {
                        yield item;
                    }
                }
            }
            .boxed()
        }
    };
    events
        .map(move |item| {
            item.map(|published| match &published.message {
                BusMessage::Event(event) if !may_see_previous(&receiver, event) => {
                    // The version before the change is not the caller's to see.
                    let outcome = watch.outcome(event, &receiver).unwrap_or_default();
                    let without = Event {
                        previous: None,
                        ..event.clone()
                    };
                    FieldValue::value(watch.value(&without, outcome))
                }
                BusMessage::Event(event) => {
                    let outcome = watch.outcome(event, &receiver).unwrap_or_default();
                    FieldValue::value(watch.value(event, outcome))
                }
                _ => FieldValue::NULL,
            })
        })
        .boxed()
}
