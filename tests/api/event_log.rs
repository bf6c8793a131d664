//! The event log: every change is logged in its own transaction, and each replica
//! delivers the log in commit order — per document in the order of its writes —
//! whether the bus carried the notification or not (a Redis outage, a replica that
//! heard nothing), refreshes its caches from it, and prunes it past the retention.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{TestApp, WAIT, WsClient, from_server, spawn_with, test_config};
use crate::realtime::PrivateRedis;

/// Two replicas over one database, and the given Redis (or none: then they hear
/// of each other's changes only from the log).
pub(crate) async fn two_replicas(redis: Option<String>) -> (TestApp, TestApp) {
    two_replicas_with(redis, |_| {}).await
}

/// The same, with `tweak` applied to both replicas' configuration.
pub(crate) async fn two_replicas_with(
    redis: Option<String>,
    tweak: impl FnOnce(&mut nimbus::config::Config),
) -> (TestApp, TestApp) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.redis_url = redis;
    tweak(&mut config);
    config.secret = Some("event-log-tests-share-this-secret-0123456789".into());
    // Both replicas open the same database: the first's SQLite file, when SQLite.
    config.database_url = Some(config.effective_database_url());
    let first = spawn_with(config.clone(), dir).await;
    let dir = tempfile::tempdir().unwrap();
    config.data_dir = dir.path().to_path_buf();
    let server = nimbus::Server::start(config.clone())
        .await
        .expect("the second replica starts");
    let second = from_server(server, first.admin_key.clone(), config, dir);
    (first, second)
}

const KEY_EVENTS: &str =
    "subscription { realtime(channels: [\"keys\"]) { events payload cursor } }";

async fn key_subscriber(app: &TestApp) -> WsClient {
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    ws.subscribe("keys", KEY_EVENTS).await;
    ws
}

/// A subscriber to key events resuming after `cursor`.
async fn resuming_subscriber(app: &TestApp, project: &str, cursor: &str) -> WsClient {
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key, "X-Nimbus-Project": project}))
        .await
        .expect("ack");
    ws.send(json!({"id": "keys", "type": "subscribe", "payload": {
        "query": "subscription($after: String) { realtime(channels: [\"keys\"], after: $after) { payload cursor } }",
        "variables": {"after": cursor},
    }}))
    .await;
    ws
}

/// The next key event on `ws`: the key's name and the event's cursor.
async fn next_key_event(ws: &mut WsClient) -> (String, String) {
    let message = ws.next_json().await.expect("an event");
    let event = &message["payload"]["data"]["realtime"];
    let (Some(name), Some(cursor)) = (event["payload"]["name"].as_str(), event["cursor"].as_str())
    else {
        panic!("not a key event with a cursor: {message}");
    };
    (name.to_string(), cursor.to_string())
}

/// The error code that ends the subscription on `ws`.
async fn ending_code(ws: &mut WsClient) -> String {
    let message = ws.next_json().await.expect("an answer");
    message["payload"]["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an error: {message}"))
        .to_string()
}

async fn create_key_named(app: &TestApp, name: &str) {
    app.admin(
        "mutation($name: String!) { createApiKey(input: {name: $name, scopes: [\"keys.read\"]}) { apiKey { id } } }",
        json!({"name": name}),
    )
    .await
    .ok();
}

/// The name of the key the next key event on `ws` is about, waiting up to `wait`.
async fn next_key_name(ws: &mut WsClient, wait: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = match tokio::time::timeout_at(deadline, ws.socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Value>(&text).unwrap(),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("the subscription ended: {other:?}"),
            Err(_) => return None,
        };
        let name = &message["payload"]["data"]["realtime"]["payload"]["name"];
        if let Some(name) = name.as_str() {
            return Some(name.to_string());
        }
    }
}

/// Creates keys named `warm-N` on `writer` until `ws` hears of one, then drains
/// what else the warm-up brought.
async fn until_live(writer: &TestApp, ws: &mut WsClient) {
    let deadline = Instant::now() + WAIT;
    for n in 0.. {
        create_key_named(writer, &format!("warm-{n}")).await;
        if next_key_name(ws, Duration::from_millis(1500))
            .await
            .is_some()
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the subscription never went live"
        );
    }
    while next_key_name(ws, Duration::from_millis(1200))
        .await
        .is_some()
    {}
}

/// A `counters` collection anyone may read, with an integer `n`.
pub(crate) async fn counters(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"log\", name: \"Log\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "log", "id": "counters", "name": "counters",
            "permissions": ["read(\"any\")"],
            "attributes": [{"key": "n", "type": "INTEGER", "min": 0, "max": 1000000, "default": 0}]
        }}),
    )
    .await
    .ok();
}

const COUNTER_EVENTS: &str = "subscription { counterChanged { type node { id n updatedAt } } }";

/// Per counter, the values of its events and their `updatedAt`, as they arrived.
type Heard = HashMap<String, Vec<(i64, String)>>;

/// What a counter subscriber heard, until `done`.
async fn hear_counters(ws: &mut WsClient, heard: &mut Heard, done: impl Fn(&Heard) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while !done(heard) {
        let text = match tokio::time::timeout_at(deadline, ws.socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => text,
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("the subscription ended: {other:?}"),
            Err(_) => panic!("not every event arrived; heard {heard:?}"),
        };
        let message: Value = serde_json::from_str(&text).unwrap();
        let node = &message["payload"]["data"]["counterChanged"]["node"];
        let (Some(id), Some(n)) = (node["id"].as_str(), node["n"].as_i64()) else {
            panic!("not a counter event: {message}");
        };
        let updated = node["updatedAt"].as_str().unwrap_or_default().to_string();
        if !id.starts_with("warm") {
            heard.entry(id.to_string()).or_default().push((n, updated));
        }
    }
}

#[tokio::test]
async fn concurrent_increments_reach_both_replicas_in_the_order_of_each_documents_writes() {
    const DOCUMENTS: usize = 30;
    const INCREMENTS: i64 = 10;
    let redis = PrivateRedis::start();
    let (first, second) = two_replicas(redis.as_ref().map(PrivateRedis::url)).await;
    counters(&first).await;
    let key = first.create_key("default", &["documents.write"]).await;
    let mut subscribers = Vec::new();
    for app in [&first, &second] {
        let mut ws = WsClient::connect(&app.ws_url, false).await;
        ws.init(json!({})).await.expect("ack");
        ws.subscribe("c", COUNTER_EVENTS).await;
        subscribers.push(ws);
    }
    // Live on both once each has heard of a warm-up counter.
    let mut warm = 0;
    let deadline = Instant::now() + WAIT;
    let mut live = [false, false];
    while live != [true, true] {
        warm += 1;
        first
            .as_key(
                &key,
                "default",
                "mutation($id: ID!) { createCounter(input: {id: $id}) { id } }",
                json!({"id": format!("warm{warm}")}),
            )
            .await
            .ok();
        for (ws, live) in subscribers.iter_mut().zip(live.iter_mut()) {
            while ws.socket_next_within_short_time().await.is_some() {
                *live = true;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the subscriptions never went live"
        );
    }
    for ws in &mut subscribers {
        while ws.socket_next_within_short_time().await.is_some() {}
    }

    // Created all at once (shared inserts and group commits), then incremented all
    // at once, half of the writes through each replica.
    let create = |index: usize| {
        let app = if index.is_multiple_of(2) {
            &first
        } else {
            &second
        };
        let key = key.clone();
        async move {
            app.as_key(
                &key,
                "default",
                "mutation($id: ID!) { createCounter(input: {id: $id, n: 0}) { id } }",
                json!({"id": format!("c{index}")}),
            )
            .await
            .ok();
        }
    };
    futures_util::future::join_all((0..DOCUMENTS).map(create)).await;
    let increment = |(index, round): (usize, i64)| {
        let app = if (index + round as usize).is_multiple_of(2) {
            &first
        } else {
            &second
        };
        let key = key.clone();
        async move {
            app.as_key(
                &key,
                "default",
                "mutation($id: ID!) { incrementCounter(input: {id: $id, field: \"n\", by: 1}) { n } }",
                json!({"id": format!("c{index}")}),
            )
            .await
            .ok();
        }
    };
    let writes: Vec<(usize, i64)> = (0..INCREMENTS)
        .flat_map(|round| (0..DOCUMENTS).map(move |index| (index, round)))
        .collect();
    futures_util::stream::iter(writes)
        .for_each_concurrent(32, increment)
        .await;

    let complete = |heard: &Heard| {
        heard.len() == DOCUMENTS
            && heard
                .values()
                .all(|values| values.len() as i64 > INCREMENTS)
    };
    for (replica, ws) in subscribers.iter_mut().enumerate() {
        let mut heard = HashMap::new();
        hear_counters(ws, &mut heard, complete).await;
        for (id, events) in &heard {
            let values: Vec<i64> = events.iter().map(|(n, _)| *n).collect();
            let expected: Vec<i64> = (0..=INCREMENTS).collect();
            assert_eq!(
                values, expected,
                "replica {replica} heard {id}'s writes out of order, twice or not at all"
            );
            // Every write moves `updatedAt` on by at least a millisecond: the
            // document's version, which the events carry in order.
            assert!(
                events.windows(2).all(|pair| pair[0].1 < pair[1].1),
                "replica {replica} heard {id}'s versions out of order: {events:?}"
            );
        }
    }
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn writes_acknowledged_while_redis_is_down_reach_the_other_replica_in_order() {
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("skipped: no redis-server on this machine");
        return;
    };
    let (first, second) = two_replicas(Some(redis.url())).await;
    let mut ws = key_subscriber(&second).await;
    until_live(&first, &mut ws).await;

    redis.stop();
    crate::realtime::wait_for_health(&first, 503).await;
    let during: Vec<String> = (0..5).map(|n| format!("during-{n}")).collect();
    for name in &during {
        create_key_named(&first, name).await;
    }
    redis.run();
    crate::realtime::wait_for_health(&first, 200).await;
    crate::realtime::wait_for_health(&second, 200).await;
    create_key_named(&first, "after").await;

    let mut heard = Vec::new();
    while heard.last().map(String::as_str) != Some("after") {
        let name = next_key_name(&mut ws, WAIT)
            .await
            .unwrap_or_else(|| panic!("the other replica heard only {heard:?}"));
        heard.push(name);
    }
    let mut expected = during.clone();
    expected.push("after".into());
    assert_eq!(heard, expected, "every acknowledged write, once, in order");
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn a_replica_that_hears_nothing_still_delivers_from_the_log() {
    // No Redis at all: the replicas share only the database.
    let (first, second) = two_replicas(None).await;
    let mut ws = key_subscriber(&second).await;
    until_live(&first, &mut ws).await;
    for name in ["quiet-0", "quiet-1", "quiet-2"] {
        create_key_named(&first, name).await;
    }
    let mut heard = Vec::new();
    for _ in 0..3 {
        heard.push(
            next_key_name(&mut ws, WAIT)
                .await
                .expect("delivered from the log"),
        );
    }
    assert_eq!(heard, ["quiet-0", "quiet-1", "quiet-2"]);
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn a_session_deleted_during_a_redis_outage_stops_working_on_the_other_replica() {
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("skipped: no redis-server on this machine");
        return;
    };
    let (first, second) = two_replicas(Some(redis.url())).await;
    let secret = first.signed_in("outage@example.com").await;
    // The second replica has the session cached.
    for _ in 0..2 {
        let me = second
            .as_session(&secret, "{ account { id } }", json!({}))
            .await;
        assert!(me.ok()["account"]["id"].is_string());
    }

    redis.stop();
    crate::realtime::wait_for_health(&first, 503).await;
    first
        .as_session(
            &secret,
            "mutation { deleteSession(input: {id: \"current\"}) { deletedId } }",
            json!({}),
        )
        .await
        .ok();
    let deleted = Instant::now();
    // Within the relay's poll interval (and some slack), with Redis still down.
    loop {
        let me = second
            .as_session(&secret, "{ account { id } }", json!({}))
            .await;
        if me.code() == "INVALID_SESSION" {
            break;
        }
        assert!(
            deleted.elapsed() < Duration::from_secs(4),
            "the deleted session still worked on the other replica: {:?}",
            me.body
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(redis);
    second.shutdown().await;
    first.shutdown().await;
}

async fn logged_events(app: &TestApp) -> i64 {
    let pool = app.server.as_ref().unwrap().state().db.pool();
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM event_log")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn events_older_than_the_retention_are_pruned_and_their_cursors_need_a_resync() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.event_retention_secs = 2;
    let app = spawn_with(config, dir).await;
    let mut ws = key_subscriber(&app).await;
    until_live(&app, &mut ws).await;
    create_key_named(&app, "short-lived").await;
    let (_, cursor) = next_key_event(&mut ws).await;
    create_key_named(&app, "pruned-before-it-was-replayed").await;
    assert!(logged_events(&app).await >= 1, "the change was logged");
    let deadline = Instant::now() + WAIT;
    while logged_events(&app).await > 0 {
        assert!(Instant::now() < deadline, "the log was never pruned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut late = resuming_subscriber(&app, "default", &cursor).await;
    assert_eq!(ending_code(&mut late).await, "RESYNC_REQUIRED");
    app.shutdown().await;
}

#[tokio::test]
async fn a_subscription_resumed_after_a_cursor_replays_what_it_missed_then_goes_on_live() {
    let app = crate::helpers::spawn_app().await;
    let mut ws = key_subscriber(&app).await;
    until_live(&app, &mut ws).await;
    create_key_named(&app, "seen").await;
    let (name, cursor) = next_key_event(&mut ws).await;
    assert_eq!(name, "seen");
    // The client goes away; keys are made meanwhile.
    drop(ws);
    for name in ["missed-1", "missed-2", "missed-3"] {
        create_key_named(&app, name).await;
    }
    let mut resumed = resuming_subscriber(&app, "default", &cursor).await;
    let mut heard = Vec::new();
    for _ in 0..3 {
        heard.push(next_key_event(&mut resumed).await.0);
    }
    assert_eq!(
        heard,
        ["missed-1", "missed-2", "missed-3"],
        "replayed in order"
    );
    // Live from there: every later event once, none of the replayed again.
    create_key_named(&app, "live").await;
    assert_eq!(next_key_event(&mut resumed).await.0, "live");
    let more = resumed.socket_next_within_short_time().await;
    assert!(more.is_none(), "delivered twice: {more:?}");

    // A cursor that is not one, or one of another project.
    let mut garbled = resuming_subscriber(&app, "default", "bm90IGEgY3Vyc29y").await;
    assert_eq!(ending_code(&mut garbled).await, "INVALID_CURSOR");
    // Made up from the start of the log, or the received one moved back: a client
    // resumes from where it was, not from what it writes.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let made_up = b64.encode("ev1:default:0");
    let mut forged = resuming_subscriber(&app, "default", &made_up).await;
    assert_eq!(ending_code(&mut forged).await, "INVALID_CURSOR");
    // The received cursor is sealed: its place in the log (which every project
    // shares) cannot be read, and no byte of it can be changed.
    let mut received = b64.decode(&cursor).unwrap();
    assert!(received.starts_with(b"ev3"), "{received:?}");
    assert!(
        !String::from_utf8_lossy(&received).contains("default"),
        "the cursor reads as text"
    );
    let last = received.len() - 1;
    received[last] ^= 1;
    let moved = b64.encode(&received);
    let mut forged = resuming_subscriber(&app, "default", &moved).await;
    assert_eq!(ending_code(&mut forged).await, "INVALID_CURSOR");
    app.create_project("elsewhere").await;
    let mut foreign = resuming_subscriber(&app, "elsewhere", &cursor).await;
    assert_eq!(ending_code(&mut foreign).await, "INVALID_CURSOR");
    app.shutdown().await;
}

#[tokio::test]
async fn a_position_taken_by_an_open_transaction_holds_later_events_back_for_a_bounded_time() {
    let app = crate::helpers::spawn_app().await;
    if !app.config.effective_database_url().starts_with("mysql") {
        // SQLite has one writer: no position is taken by one transaction while
        // another commits.
        eprintln!("skipped: MariaDB only");
        app.shutdown().await;
        return;
    }
    let mut ws = key_subscriber(&app).await;
    until_live(&app, &mut ws).await;
    // A transaction takes a position and stays open past the relay's bound.
    let pool = app.server.as_ref().unwrap().state().db.pool().clone();
    let mut held = pool.begin().await.unwrap();
    let late = json!({
        "kind": "event", "projectId": "default", "events": ["keys.late.create", "keys.*.create"],
        "channels": ["keys", "keys.late"], "timestamp": 0, "payload": {"name": "committed-late"},
        "readRoles": [], "keyScope": "keys.read"
    });
    sqlx::query("INSERT INTO event_log (project_id, created_at, body) VALUES ('default', ?, ?)")
        .bind(chrono_now())
        .bind(late.to_string())
        .execute(&mut *held)
        .await
        .unwrap();
    let written = Instant::now();
    create_key_named(&app, "behind-the-gap").await;
    let name = next_key_name(&mut ws, WAIT).await;
    assert_eq!(name.as_deref(), Some("behind-the-gap"));
    assert!(
        written.elapsed() >= Duration::from_secs(4),
        "delivered after {:?}: the relay did not wait for the open position",
        written.elapsed()
    );
    // Committed after the relay passed it: delivered late, not lost.
    held.commit().await.unwrap();
    let name = next_key_name(&mut ws, WAIT).await;
    assert_eq!(name.as_deref(), Some("committed-late"));
    app.shutdown().await;
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test]
async fn a_typed_subscription_resumes_after_a_cursor_with_its_filter() {
    let app = crate::helpers::spawn_app().await;
    counters(&app).await;
    let key = app.create_key("default", &["documents.write"]).await;
    let create = |id: String, n: i64| {
        let (app, key) = (&app, key.clone());
        async move {
            app.as_key(
                &key,
                "default",
                "mutation($id: ID!, $n: Int) { createCounter(input: {id: $id, n: $n}) { id } }",
                json!({"id": id, "n": n}),
            )
            .await
            .ok();
        }
    };
    let query = "subscription($after: String) { counterChanged(filter: {n: {gte: 5}}, after: $after) { node { id } cursor } }";
    let subscribe = |after: Option<String>| {
        let app = &app;
        async move {
            let mut ws = WsClient::connect(&app.ws_url, false).await;
            ws.init(json!({})).await.expect("ack");
            ws.send(json!({"id": "c", "type": "subscribe",
                "payload": {"query": query, "variables": {"after": after}}}))
                .await;
            ws
        }
    };
    let mut ws = subscribe(None).await;
    let deadline = Instant::now() + WAIT;
    let mut warm = 0;
    let cursor = loop {
        warm += 1;
        create(format!("warm{warm}"), 9).await;
        if let Some(message) = ws.socket_next_within_short_time().await {
            break message["payload"]["data"]["counterChanged"]["cursor"]
                .as_str()
                .expect("a cursor")
                .to_string();
        }
        assert!(
            Instant::now() < deadline,
            "the subscription never went live"
        );
    };
    drop(ws);
    create("low".into(), 1).await;
    create("high".into(), 7).await;
    let mut resumed = subscribe(Some(cursor)).await;
    let message = resumed.next_json().await.expect("a replayed event");
    let id = &message["payload"]["data"]["counterChanged"]["node"]["id"];
    // Warm-ups after the cursor may come first; the filtered-out one never does.
    let mut ids = vec![id.as_str().unwrap().to_string()];
    while let Some(message) = resumed.socket_next_within_short_time().await {
        let id = &message["payload"]["data"]["counterChanged"]["node"]["id"];
        ids.push(id.as_str().unwrap().to_string());
    }
    assert_eq!(ids.last().map(String::as_str), Some("high"), "{ids:?}");
    assert!(
        !ids.iter().any(|id| id == "low"),
        "the filter applies to replays: {ids:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_replica_started_while_a_transaction_holds_a_position_delivers_it_once_committed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    if !config.effective_database_url().starts_with("mysql") {
        // SQLite has one writer: no position below the head is still open.
        eprintln!("skipped: MariaDB only");
        return;
    }
    config.secret = Some("event-log-tests-share-this-secret-0123456789".into());
    config.database_url = Some(config.effective_database_url());
    // The held transaction keeps one pool connection for the whole test: leave
    // the server more than the tests' usual two for its own work.
    config.database_max_connections = 16;
    let app = spawn_with(config.clone(), dir).await;
    let pool = app.server.as_ref().unwrap().state().db.pool().clone();
    let mut held = pool.begin().await.unwrap();
    let late = json!({
        "kind": "event", "projectId": "default", "events": ["keys.late.create", "keys.*.create"],
        "channels": ["keys", "keys.late"], "timestamp": 0, "payload": {"name": "committed-late"},
        "readRoles": [], "keyScope": "keys.read"
    });
    sqlx::query("INSERT INTO event_log (project_id, created_at, body) VALUES ('default', ?, ?)")
        .bind(chrono_now())
        .bind(late.to_string())
        .execute(&mut *held)
        .await
        .unwrap();
    // A later position commits, so the replica starts with its head past the open one.
    create_key_named(&app, "after-the-open-one").await;
    let dir = tempfile::tempdir().unwrap();
    config.data_dir = dir.path().to_path_buf();
    let server = nimbus::Server::start(config.clone())
        .await
        .expect("the second replica starts");
    let replica = from_server(server, app.admin_key.clone(), config, dir);
    let mut ws = key_subscriber(&replica).await;
    until_live(&app, &mut ws).await;
    held.commit().await.unwrap();
    loop {
        match next_key_name(&mut ws, WAIT).await.as_deref() {
            Some("committed-late") => break,
            Some(_) => continue,
            None => panic!("the replica never delivered the position open at its start"),
        }
    }
    replica.shutdown().await;
    app.shutdown().await;
}

/// A subscriber to key events reading on its own task: it reports its index on
/// `live` at its first `warm-` key, and returns the names of the `w-` keys it
/// heard, in order, once it hears `end`.
async fn recording_subscriber(
    app: &TestApp,
    index: usize,
    live: tokio::sync::mpsc::UnboundedSender<usize>,
) -> tokio::task::JoinHandle<Vec<String>> {
    let mut ws = key_subscriber(app).await;
    tokio::spawn(async move {
        let mut heard = Vec::new();
        let mut warm = false;
        loop {
            let text = match ws.socket.next().await {
                Some(Ok(Message::Text(text))) => text,
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    panic!("subscriber {index} lost its connection after {heard:?}")
                }
                Some(Ok(_)) => continue,
            };
            let message: Value = serde_json::from_str(&text).unwrap();
            let Some(name) = message["payload"]["data"]["realtime"]["payload"]["name"].as_str()
            else {
                panic!("subscriber {index} got something else than a key event: {message}");
            };
            if name.starts_with("warm-") && !warm {
                warm = true;
                let _ = live.send(index);
            } else if name.starts_with("w-") {
                heard.push(name.to_string());
            } else if name == "end" {
                return heard;
            }
        }
    })
}

#[tokio::test]
async fn a_hundred_subscribers_get_every_acknowledged_write_in_order_across_a_ten_second_redis_outage()
 {
    const SUBSCRIBERS: usize = 100;
    const OUTAGE: Duration = Duration::from_secs(10);
    const PERIOD: Duration = Duration::from_millis(50);
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("skipped: no redis-server on this machine");
        return;
    };
    let (first, second) = two_replicas(Some(redis.url())).await;
    let (live, mut went_live) = tokio::sync::mpsc::unbounded_channel();
    let mut subscribers = Vec::new();
    for index in 0..SUBSCRIBERS {
        let app = if index.is_multiple_of(2) {
            &first
        } else {
            &second
        };
        subscribers.push(recording_subscriber(app, index, live.clone()).await);
    }
    let mut ready = std::collections::HashSet::new();
    let deadline = Instant::now() + WAIT * 2;
    for n in 0.. {
        create_key_named(&first, &format!("warm-{n}")).await;
        let round = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(index)) = tokio::time::timeout_at(round, went_live.recv()).await {
            ready.insert(index);
        }
        if ready.len() == SUBSCRIBERS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} subscribers went live",
            ready.len()
        );
    }

    // A write every 50 ms at most, alternately through each replica, each
    // acknowledged before the next: their commit order is their order. Redis
    // dies once the stream has run a second, stays down ten seconds, and comes
    // back; the stream goes on two more seconds. Each phase also lasts until
    // enough writes were acknowledged in it: on a loaded machine a write can take
    // longer than its period, and a thin stream would prove little.
    const BEFORE: usize = 10;
    const DURING: usize = 60;
    const AFTER: usize = 20;
    enum Phase {
        Before,
        Down,
        After,
    }
    let mut acknowledged = Vec::new();
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut phase = Phase::Before;
    // When the current phase began, and how many writes had been acknowledged.
    let mut began = (Instant::now(), 0usize);
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut n = 0usize;
    loop {
        ticks.tick().await;
        let (since, count) = (began.0.elapsed(), acknowledged.len() - began.1);
        match phase {
            Phase::Before if since >= Duration::from_secs(1) && count >= BEFORE => {
                redis.stop();
                phase = Phase::Down;
                began = (Instant::now(), acknowledged.len());
            }
            Phase::Down if since >= OUTAGE && count >= DURING => {
                redis.run();
                phase = Phase::After;
                began = (Instant::now(), acknowledged.len());
            }
            Phase::After if since >= Duration::from_secs(2) && count >= AFTER => break,
            _ => {}
        }
        assert!(
            Instant::now() < deadline,
            "writes stopped being acknowledged: {} of {n}",
            acknowledged.len()
        );
        let app = if n.is_multiple_of(2) { &first } else { &second };
        let name = format!("w-{n}");
        let answer = app
            .admin(
                "mutation($name: String!) { createApiKey(input: {name: $name, scopes: [\"keys.read\"]}) { apiKey { id } } }",
                json!({"name": name}),
            )
            .await;
        if answer.body["data"]["createApiKey"]["apiKey"]["id"].is_string() {
            acknowledged.push(name);
        }
        n += 1;
    }
    crate::realtime::wait_for_health(&first, 200).await;
    crate::realtime::wait_for_health(&second, 200).await;
    create_key_named(&second, "end").await;

    for (index, subscriber) in subscribers.into_iter().enumerate() {
        let heard = tokio::time::timeout(WAIT * 3, subscriber)
            .await
            .unwrap_or_else(|_| panic!("subscriber {index} never heard the end"))
            .expect("the subscriber's task");
        assert_eq!(
            heard, acknowledged,
            "subscriber {index} heard other than every acknowledged write once, in order"
        );
    }
    second.shutdown().await;
    first.shutdown().await;
}
