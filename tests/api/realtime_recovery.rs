//! Realtime across replicas and bus gaps: presence is reconciled after a Redis
//! outage (a presence first heard of in a heartbeat JOINs, one whose LEAVE was
//! lost leaves after the timeout, one that stayed is not announced twice), and an
//! open socket selects what a structure change added without reconnecting.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::event_log::{counters, two_replicas_with};
use crate::helpers::{WAIT, WsClient};
use crate::realtime::{PrivateRedis, wait_for_health};

/// A socket on `ws_url` holding a presence on `channel` with state `{name}`,
/// once the server has recorded it (the subscription's first message).
async fn present(ws_url: &str, key: &str, channel: &str, name: &str) -> WsClient {
    let mut ws = WsClient::connect(ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": key})).await.expect("ack");
    ws.send(json!({"id": "p", "type": "subscribe", "payload": {
        "query": "subscription($channel: String!, $state: JSON) { presence(channel: $channel, state: $state) { type } }",
        "variables": {"channel": channel, "state": {"name": name}},
    }}))
    .await;
    let first = ws.next_json().await.expect("the presence's first event");
    assert_eq!(
        first["payload"]["data"]["presence"]["type"], "JOIN",
        "{first}"
    );
    ws
}

/// The next presence change a watcher hears: its type and the name in its state.
async fn next_change(watcher: &mut WsClient, within: Duration) -> Option<(String, String)> {
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

#[tokio::test]
async fn presences_are_reconciled_after_a_redis_outage() {
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("skipped: no redis-server on this machine");
        return;
    };
    // Long enough that the outage itself expires nothing.
    let timeout = Duration::from_secs(5);
    let (first, second) = two_replicas_with(Some(redis.url()), |config| {
        config.presence_timeout_secs = timeout.as_secs();
    })
    .await;
    let mut watcher = WsClient::connect(&first.ws_url, false).await;
    watcher.init(json!({})).await.expect("ack");
    watcher
        .subscribe(
            "w",
            "subscription { presenceChanged(channel: \"gap-room\") { type state } }",
        )
        .await;
    let key = second.admin_key.clone();
    let _kept = present(&second.ws_url, &key, "gap-room", "kept").await;
    let closing = present(&second.ws_url, &key, "gap-room", "closing").await;
    let mut joined = BTreeSet::new();
    while joined.len() < 2 {
        let change = next_change(&mut watcher, WAIT).await.expect("the JOINs");
        joined.insert(change);
    }
    assert_eq!(
        joined,
        BTreeSet::from([
            ("JOIN".into(), "closing".into()),
            ("JOIN".into(), "kept".into())
        ])
    );

    // While Redis is down, one presence leaves and another arrives: neither is
    // heard on the bus.
    redis.stop();
    wait_for_health(&second, 503).await;
    wait_for_health(&first, 503).await;
    drop(closing);
    let _arrived = present(&second.ws_url, &key, "gap-room", "arrived").await;
    redis.run();
    wait_for_health(&first, 200).await;
    wait_for_health(&second, 200).await;
    let resumed = Instant::now();

    let mut heard = Vec::new();
    let expected = BTreeSet::from([
        ("JOIN".to_string(), "arrived".to_string()),
        ("LEAVE".to_string(), "closing".to_string()),
    ]);
    while heard.iter().cloned().collect::<BTreeSet<_>>() != expected {
        let change = next_change(&mut watcher, timeout + WAIT)
            .await
            .unwrap_or_else(|| panic!("after the outage the watcher heard only {heard:?}"));
        heard.push(change);
    }
    assert_eq!(heard.len(), 2, "each change once: {heard:?}");
    // The lost LEAVE is made up by the timeout, not sooner than the others had
    // to re-announce.
    let leave_at = resumed.elapsed();
    assert!(
        leave_at <= timeout + WAIT,
        "the LEAVE came only after {leave_at:?}"
    );
    // The presence that stayed stays: no second JOIN, no LEAVE, through more
    // than a whole timeout.
    let quiet = next_change(&mut watcher, timeout + timeout / 2).await;
    assert!(
        quiet.is_none(),
        "the presence that stayed changed: {quiet:?}"
    );

    // A watcher arriving now on the other replica sees exactly who is there.
    let mut late = WsClient::connect(&first.ws_url, false).await;
    late.init(json!({})).await.expect("ack");
    late.subscribe(
        "w",
        "subscription { presenceChanged(channel: \"gap-room\") { type state } }",
    )
    .await;
    let mut listed = BTreeSet::new();
    while let Some(change) = next_change(&mut late, Duration::from_secs(1)).await {
        listed.insert(change);
    }
    assert_eq!(
        listed,
        BTreeSet::from([
            ("JOIN".into(), "arrived".into()),
            ("JOIN".into(), "kept".into())
        ])
    );
    second.shutdown().await;
    first.shutdown().await;
}

const LABELS: &str = "subscription { counterChanged { node { id label } } }";

/// Whether `message` refuses an operation (a validation error).
fn refused(message: &Value) -> bool {
    message["type"] == "error" || message["payload"]["errors"].is_array()
}

/// Subscribes `query` on `ws` under `id`: the refusal, if the operation was
/// refused (its `complete` read too), none if it is live.
async fn try_subscribe(ws: &mut WsClient, id: &str, query: &str) -> Option<Value> {
    ws.subscribe(id, query).await;
    let answer = ws.socket_next_within_short_time().await?;
    if answer["type"] == "next" {
        // A refusal as a result is followed by its `complete`.
        ws.socket_next_within_short_time().await;
    }
    Some(answer).filter(refused)
}

#[tokio::test]
async fn an_open_socket_selects_a_new_attribute_without_reconnecting() {
    let redis = PrivateRedis::start();
    let (first, second) = two_replicas_with(redis.as_ref().map(PrivateRedis::url), |_| {}).await;
    counters(&first).await;
    let mut sockets = Vec::new();
    for app in [&first, &second] {
        let mut ws = WsClient::connect(&app.ws_url, false).await;
        ws.init(json!({})).await.expect("ack");
        // The structure the socket started with has no `label`.
        let refusal = try_subscribe(&mut ws, "before", LABELS).await;
        assert!(refusal.is_some(), "`label` does not exist yet");
        sockets.push(ws);
    }

    first
        .admin(
            "mutation { createAttribute(input: {databaseId: \"log\", collectionId: \"counters\", attribute: {key: \"label\", type: STRING, size: 64}}) { id } }",
            json!({}),
        )
        .await
        .ok();

    // On the replica that made the change, the very next operation sees it.
    let refusal = try_subscribe(&mut sockets[0], "after", LABELS).await;
    assert!(refusal.is_none(), "refused after the change: {refusal:?}");
    // The other replica hears of it from the bus (or the log): the same socket
    // takes it as soon as it has.
    let deadline = Instant::now() + WAIT;
    let mut attempt = 0;
    while let Some(refusal) =
        try_subscribe(&mut sockets[1], &format!("after-{attempt}"), LABELS).await
    {
        attempt += 1;
        assert!(
            Instant::now() < deadline,
            "the other replica's socket never saw the new attribute: {refusal}"
        );
    }
    let live_id = format!("after-{attempt}");

    let key = first.create_key("default", &["documents.write"]).await;
    second
        .as_key(
            &key,
            "default",
            "mutation { createCounter(input: {id: \"labelled\", label: \"hello\"}) { id label } }",
            json!({}),
        )
        .await
        .ok();
    for (ws, id) in sockets.iter_mut().zip(["after".to_string(), live_id]) {
        let message = ws.next_json().await.expect("an event");
        assert_eq!(message["id"], json!(id), "{message}");
        let node = &message["payload"]["data"]["counterChanged"]["node"];
        assert_eq!(node["id"], "labelled", "{message}");
        assert_eq!(node["label"], "hello", "{message}");
    }
    second.shutdown().await;
    first.shutdown().await;
}
