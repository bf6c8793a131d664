//! Presence across a Redis outage longer than the presence timeout, with two
//! replicas: during the outage each replica's watchers hear its own presences
//! come and go at once and the other's expire (it can vouch for them no longer);
//! once Redis is back, each watcher hears a JOIN for every presence of the other
//! replica still alive and nothing of those that left meanwhile, and ends with
//! exactly the presences alive on both.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::json;

use crate::event_log::two_replicas_with;
use crate::helpers::{TestApp, WAIT, WsClient};
use crate::realtime::{PrivateRedis, wait_for_health};

const CHANNEL: &str = "outage-room";

type Change = (String, String);

/// A socket on `app` holding a presence on [`CHANNEL`] with state `{name}`,
/// once the server has recorded it (the subscription's first message).
async fn present(app: &TestApp, name: &str) -> WsClient {
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    ws.send(json!({"id": "p", "type": "subscribe", "payload": {
        "query": "subscription($channel: String!, $state: JSON) { presence(channel: $channel, state: $state) { type } }",
        "variables": {"channel": CHANNEL, "state": {"name": name}},
    }}))
    .await;
    let first = ws.next_json().await.expect("the presence's first event");
    assert_eq!(
        first["payload"]["data"]["presence"]["type"], "JOIN",
        "{first}"
    );
    ws
}

async fn watcher(app: &TestApp) -> WsClient {
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({})).await.expect("ack");
    ws.subscribe(
        "w",
        &format!("subscription {{ presenceChanged(channel: \"{CHANNEL}\") {{ type state }} }}"),
    )
    .await;
    ws
}

/// The next presence change a watcher hears within `within`: its type and the
/// name in its state.
async fn next_change(watcher: &mut WsClient, within: Duration) -> Option<Change> {
    let message = tokio::time::timeout(within, watcher.next_json())
        .await
        .ok()?;
    let message = message.expect("the watch goes on");
    let change = &message["payload"]["data"]["presenceChanged"];
    let (Some(kind), Some(name)) = (change["type"].as_str(), change["state"]["name"].as_str())
    else {
        panic!("not a presence change: {message}");
    };
    Some((kind.to_string(), name.to_string()))
}

fn changes(list: &[(&str, &str)]) -> BTreeSet<Change> {
    list.iter()
        .map(|(kind, name)| (kind.to_string(), name.to_string()))
        .collect()
}

/// Reads changes until `watcher` has heard exactly `expected` (each once, in
/// any order), within `within`.
async fn hears(watcher: &mut WsClient, what: &str, expected: BTreeSet<Change>, within: Duration) {
    let deadline = tokio::time::Instant::now() + within;
    let mut heard = Vec::new();
    while heard.iter().cloned().collect::<BTreeSet<_>>() != expected {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        assert!(
            !left.is_zero(),
            "{what}: heard only {heard:?}, expected {expected:?}"
        );
        // In steps shorter than the socket helper's own wait, so that silence
        // fails here, with what was heard.
        let Some(change) = next_change(watcher, left.min(WAIT / 2)).await else {
            continue;
        };
        assert!(
            expected.contains(&change),
            "{what}: heard {change:?}, expected only {expected:?} (before it: {heard:?})"
        );
        heard.push(change);
    }
    assert_eq!(heard.len(), expected.len(), "{what}: each once: {heard:?}");
}

/// Who a watcher arriving now on `app` is told is present.
async fn listed(app: &TestApp) -> BTreeSet<String> {
    let mut late = watcher(app).await;
    let mut names = BTreeSet::new();
    while let Some((kind, name)) = next_change(&mut late, Duration::from_secs(1)).await {
        assert_eq!(kind, "JOIN", "{name}");
        names.insert(name);
    }
    names
}

/// Every watcher in `watchers` hears exactly `expected`.
async fn all_hear(
    watchers: &mut [WsClient],
    what: &str,
    expected: BTreeSet<Change>,
    within: Duration,
) {
    for (index, watcher) in watchers.iter_mut().enumerate() {
        hears(
            watcher,
            &format!("{what}, watcher {index}"),
            expected.clone(),
            within,
        )
        .await;
    }
}

#[tokio::test]
async fn after_an_outage_longer_than_the_timeout_watchers_end_with_exactly_the_live_presences() {
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("skipped: no redis-server on this machine");
        return;
    };
    let timeout = Duration::from_secs(4);
    let (first, second) = two_replicas_with(Some(redis.url()), |config| {
        config.presence_timeout_secs = timeout.as_secs();
    })
    .await;
    // On each replica, a watcher from before anyone is present, and one from
    // after (told who is there when it starts).
    let mut on_first = vec![watcher(&first).await];
    let mut on_second = vec![watcher(&second).await];
    let _home = present(&first, "home").await;
    let brief = present(&first, "brief").await;
    let _kept = present(&second, "kept").await;
    let closing = present(&second, "closing").await;
    let everyone = changes(&[
        ("JOIN", "home"),
        ("JOIN", "brief"),
        ("JOIN", "kept"),
        ("JOIN", "closing"),
    ]);
    all_hear(&mut on_first, "before", everyone.clone(), WAIT).await;
    all_hear(&mut on_second, "before", everyone.clone(), WAIT).await;
    on_first.push(watcher(&first).await);
    on_second.push(watcher(&second).await);
    all_hear(&mut on_first[1..], "listed", everyone.clone(), WAIT).await;
    all_hear(&mut on_second[1..], "listed", everyone, WAIT).await;

    // Redis goes away. On each replica a presence leaves and another arrives;
    // the other replica hears of neither.
    redis.stop();
    wait_for_health(&first, 503).await;
    wait_for_health(&second, 503).await;
    drop(brief);
    let _nearby = present(&first, "nearby").await;
    drop(closing);
    let _arrived = present(&second, "arrived").await;
    // Each replica's watchers hear its own replica's changes at once, and the
    // other replica's presences expire: the outage outlasts the timeout.
    let within = timeout * 2 + WAIT;
    all_hear(
        &mut on_first,
        "during the outage, on the first",
        changes(&[
            ("LEAVE", "brief"),
            ("JOIN", "nearby"),
            ("LEAVE", "kept"),
            ("LEAVE", "closing"),
        ]),
        within,
    )
    .await;
    all_hear(
        &mut on_second,
        "during the outage, on the second",
        changes(&[
            ("LEAVE", "closing"),
            ("JOIN", "arrived"),
            ("LEAVE", "home"),
            ("LEAVE", "brief"),
        ]),
        within,
    )
    .await;

    redis.run();
    wait_for_health(&first, 200).await;
    wait_for_health(&second, 200).await;
    // Each hears the other's live presences again, within a heartbeat or two,
    // and nothing of those that left during the outage.
    all_hear(
        &mut on_first,
        "after the outage, on the first",
        changes(&[("JOIN", "kept"), ("JOIN", "arrived")]),
        timeout + WAIT,
    )
    .await;
    all_hear(
        &mut on_second,
        "after the outage, on the second",
        changes(&[("JOIN", "home"), ("JOIN", "nearby")]),
        timeout + WAIT,
    )
    .await;
    // And then it holds: no presence comes back or leaves for more than a
    // whole timeout.
    let settle = timeout + timeout / 2;
    let quiet = futures_util::future::join_all(
        on_first
            .iter_mut()
            .chain(on_second.iter_mut())
            .map(|watcher| next_change(watcher, settle)),
    )
    .await;
    assert!(
        quiet.iter().all(Option::is_none),
        "after settling: {quiet:?}"
    );

    let alive: BTreeSet<String> = ["home", "nearby", "kept", "arrived"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(listed(&first).await, alive);
    assert_eq!(listed(&second).await, alive);
    second.shutdown().await;
    first.shutdown().await;
}
