//! What the event log keeps of a change: a document event is stored without the
//! channels, names and key scope its document's resource implies, and a
//! subscription that replays it from the log receives it exactly as the live one
//! did; rows stored whole, as before, still replay as they were written.

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

use crate::event_log::counters;
use crate::helpers::{TestApp, WAIT, WsClient, spawn_app};

const DOCUMENT_EVENTS: &str = "events channels timestamp payload cursor";

/// A subscriber to every document event of the project, after `cursor` if given.
pub(crate) async fn document_subscriber(app: &TestApp, after: Option<&str>) -> WsClient {
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    ws.send(json!({"id": "documents", "type": "subscribe", "payload": {
        "query": format!(
            "subscription($after: String) {{ realtime(channels: [\"documents\"], after: $after) {{ {DOCUMENT_EVENTS} }} }}"
        ),
        "variables": {"after": after},
    }}))
    .await;
    ws
}

/// The next document event on `ws` within `wait`, if one comes.
pub(crate) async fn next_document_event(ws: &mut WsClient, wait: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let message = match tokio::time::timeout_at(deadline, ws.socket.next()).await {
            Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Value>(&text).unwrap(),
            Ok(Some(Ok(_))) => continue,
            Ok(other) => panic!("the subscription ended: {other:?}"),
            Err(_) => return None,
        };
        let event = &message["payload"]["data"]["realtime"];
        if event.is_object() {
            return Some(event.clone());
        }
        assert!(
            message["type"] != "error" && message["payload"]["errors"].is_null(),
            "the subscription failed: {message}"
        );
    }
}

/// The first event a subscriber resuming after `cursor` is replayed.
pub(crate) async fn first_replayed(app: &TestApp, cursor: &str) -> Value {
    let mut resumed = document_subscriber(app, Some(cursor)).await;
    next_document_event(&mut resumed, WAIT)
        .await
        .expect("the replayed event")
}

pub(crate) async fn create_counter(app: &TestApp, id: &str, n: i64) {
    app.admin(
        "mutation($id: ID!, $n: Int) { createCounter(input: {id: $id, n: $n}) { id } }",
        json!({"id": id, "n": n}),
    )
    .await
    .ok();
}

/// Logs a row with `body` as text, as every body was written before it was bytes.
pub(crate) async fn insert_text_row(app: &TestApp, body: &str) {
    let pool = app.server.as_ref().unwrap().state().db.pool();
    sqlx::query("INSERT INTO event_log (project_id, created_at, body) VALUES ('default', ?, ?)")
        .bind(1_700_000_000_000_i64)
        .bind(body)
        .execute(pool)
        .await
        .unwrap();
}

/// A server with the counters collection, a document subscriber that is live,
/// and the cursor of the newest event logged before the test goes on.
pub(crate) async fn live_counters() -> (TestApp, WsClient, String) {
    let app = spawn_app().await;
    counters(&app).await;
    let mut live = document_subscriber(&app, None).await;
    let before = until_live(&app, &mut live).await;
    let cursor = before["cursor"].as_str().expect("a cursor").to_string();
    (app, live, cursor)
}

/// Creates counters `warm-N` until `ws` hears of one; answers that event.
pub(crate) async fn until_live(app: &TestApp, ws: &mut WsClient) -> Value {
    let deadline = Instant::now() + WAIT;
    for n in 0.. {
        create_counter(app, &format!("warm-{n}"), n).await;
        if let Some(event) = next_document_event(ws, Duration::from_millis(1500)).await {
            // Drain what else the warm-up brought: the last event heard is the
            // newest logged before the test goes on.
            let mut last = event;
            while let Some(event) = next_document_event(ws, Duration::from_millis(800)).await {
                last = event;
            }
            return last;
        }
        assert!(
            Instant::now() < deadline,
            "the subscription never went live"
        );
    }
    unreachable!()
}

pub(crate) async fn newest_body(app: &TestApp) -> String {
    let pool = app.server.as_ref().unwrap().state().db.pool();
    let row = sqlx::query("SELECT body FROM event_log ORDER BY position DESC LIMIT 1")
        .fetch_one(pool)
        .await
        .unwrap();
    nimbus::db::columns::text(&row, "body").unwrap()
}

#[tokio::test]
async fn a_document_event_is_logged_without_what_its_resource_implies_and_replays_whole() {
    let (app, mut live, cursor) = live_counters().await;

    create_counter(&app, "kept", 7).await;
    let heard = next_document_event(&mut live, WAIT)
        .await
        .expect("the live event");
    assert_eq!(heard["payload"]["$id"], "kept");
    // Appwrite's twenty names of a document's change, and its channels with
    // their action after them.
    let events = heard["events"].as_array().unwrap();
    assert_eq!(events.len(), 22, "{events:?}");
    for name in [
        "databases.log.collections.counters.documents.kept.create",
        "databases.log.collections.counters.documents.*.create",
        "databases.log.collections.*.documents.*.create",
        "databases.*.collections.*.documents.*.create",
        "databases.*.collections.counters.documents.kept",
        "databases.log",
    ] {
        assert!(events.contains(&json!(name)), "{name}: {events:?}");
    }
    assert_eq!(
        heard["channels"],
        json!([
            "documents",
            "databases.log.collections.counters.documents",
            "databases.log.collections.counters.documents.kept",
            "documents.create",
            "databases.log.collections.counters.documents.create",
            "databases.log.collections.counters.documents.kept.create",
        ])
    );

    // The row holds the document, not its names and channels.
    let body = newest_body(&app).await;
    assert!(
        body.starts_with(r#"{"kind":"change","resource":"databases.log.collections.counters.documents.kept","action":"create","#),
        "stored as {body}"
    );
    for implied in [
        "\"events\"",
        "\"channels\"",
        "\"keyScope\"",
        "\"projectId\"",
    ] {
        assert!(!body.contains(implied), "{implied} is stored: {body}");
    }

    // Replayed from the log, it is the event the live subscriber received.
    let replayed = first_replayed(&app, &cursor).await;
    assert_eq!(replayed, heard);
    app.shutdown().await;
}

#[tokio::test]
async fn a_row_stored_whole_before_still_replays_as_it_was_written() {
    let (app, _live, cursor) = live_counters().await;

    // A document event as every row held it before, its names and channels in it.
    let whole = json!({
        "kind": "event", "id": "evt-written-whole", "projectId": "default",
        "events": [
            "databases.log.collections.counters.documents.old.update",
            "databases.log.collections.counters.documents.*.update",
            "databases.log.collections.*.documents.*.update",
            "databases.*.collections.*.documents.*.update",
        ],
        "channels": [
            "documents",
            "databases.log.collections.counters.documents",
            "databases.log.collections.counters.documents.old",
        ],
        "timestamp": 1_700_000_000_000_i64,
        "payload": {"$id": "old", "$collectionId": "counters", "$databaseId": "log", "n": 3},
        "readRoles": ["any"], "keyScope": "documents.read"
    });
    insert_text_row(&app, &whole.to_string()).await;

    let replayed = first_replayed(&app, &cursor).await;
    assert_eq!(replayed["payload"]["n"], 3);
    // Its own names first, then the rest of Appwrite's; its channels, then the
    // same with the action.
    let names = replayed["events"].as_array().unwrap();
    assert_eq!(
        (&names[..4], names.len()),
        (whole["events"].as_array().unwrap().as_slice(), 22)
    );
    let channels = replayed["channels"].as_array().unwrap();
    assert_eq!(
        &channels[..3],
        whole["channels"].as_array().unwrap().as_slice()
    );
    assert_eq!(
        channels[5],
        "databases.log.collections.counters.documents.old.update"
    );
    assert!(
        replayed["timestamp"]
            .as_str()
            .is_some_and(|at| at.starts_with("2023-11-14T22:13:20")),
        "replayed at {}",
        replayed["timestamp"]
    );
    app.shutdown().await;
}

/// How the newest row's body is stored: SQLite's storage class of the value,
/// MariaDB's type of the column.
async fn body_storage(app: &TestApp) -> String {
    let db = &app.server.as_ref().unwrap().state().db;
    let sql = match db.dialect() {
        nimbus::db::Dialect::Sqlite => {
            "SELECT typeof(body) AS body_storage FROM event_log ORDER BY position DESC LIMIT 1"
        }
        nimbus::db::Dialect::MySql => {
            "SELECT CAST(DATA_TYPE AS CHAR) AS body_storage FROM information_schema.COLUMNS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = 'event_log' AND COLUMN_NAME = 'body'"
        }
    };
    let row = sqlx::query(sql).fetch_one(db.pool()).await.unwrap();
    nimbus::db::columns::text(&row, "body_storage").unwrap()
}

#[tokio::test]
async fn a_body_is_stored_as_bytes_and_rows_stored_as_text_before_still_replay() {
    let (app, _live, cursor) = live_counters().await;

    // A row as bodies were written before: text.
    let written = r#"{"kind":"change","resource":"databases.log.collections.counters.documents.old","action":"create","id":"evt-as-text","timestamp":1700000000000,"payload":{"$createdAt":"2023-11-14T22:13:20.000Z","$permissions":[],"n":3},"implied":15,"readRoles":["any"]}"#;
    insert_text_row(&app, written).await;
    // And two written now, one with text beyond ASCII in it.
    create_counter(&app, "new", 4).await;
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "log", "id": "notes", "name": "notes",
            "permissions": ["read(\"any\")"],
            "attributes": [{"key": "label", "type": "STRING", "size": 100}]
        }}),
    )
    .await
    .ok();
    app.admin(
        "mutation { createNote(input: {id: \"greeting\", label: \"Grüße, 世界\"}) { id } }",
        json!({}),
    )
    .await
    .ok();

    let storage = body_storage(&app).await;
    assert!(
        storage == "blob" || storage == "mediumblob",
        "the body is stored as {storage}"
    );

    // Both replay, the second with its text as written.
    let mut resumed = document_subscriber(&app, Some(&cursor)).await;
    let first = next_document_event(&mut resumed, WAIT)
        .await
        .expect("the row written as text");
    assert_eq!(first["payload"]["$id"], "old");
    assert_eq!(first["payload"]["n"], 3);
    let second = next_document_event(&mut resumed, WAIT)
        .await
        .expect("the row written as bytes");
    assert_eq!(second["payload"]["$id"], "new");
    let third = next_document_event(&mut resumed, WAIT)
        .await
        .expect("the note written as bytes");
    assert_eq!(third["payload"]["$id"], "greeting");
    assert_eq!(third["payload"]["label"], "Grüße, 世界");
    app.shutdown().await;
}
