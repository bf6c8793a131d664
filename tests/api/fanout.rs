//! One event to many subscribers at once: each gets every event it may read
//! exactly once and in order, and nothing it may not read; and the close codes of
//! the graphql-transport-ws protocol (the legacy subprotocol keeps its own).

use serde_json::{Value, json};

use crate::helpers::{TestApp, WAIT, WsClient, spawn_with, test_config};

/// Subscribers, each on a socket of its own and signed in as a user of its own.
const SUBSCRIBERS: usize = 200;

const WATCH: &str = "subscription { noteChanged { type node { id n } } }";

/// A server that lets one client address (every test socket's) hold many sockets
/// and sign in many times.
async fn roomy_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.rate_limits = false;
    config.max_connections_per_client = 0;
    config.ws_max_per_client = 0;
    config.ws_max_subscriptions_per_client = 0;
    spawn_with(config, dir).await
}

/// `count` users, each with a session of its own: their secrets.
async fn anonymous_sessions(app: &TestApp, count: usize) -> Vec<String> {
    let mut secrets = Vec::with_capacity(count);
    while secrets.len() < count {
        let batch = (count - secrets.len()).min(50);
        let aliases: String = (0..batch)
            .map(|n| format!("s{n}: createAnonymousSession {{ secret }} "))
            .collect();
        let data = app
            .post(json!({"query": format!("mutation {{ {aliases} }}")}), &[])
            .await
            .ok();
        for n in 0..batch {
            secrets.push(
                data[format!("s{n}")]["secret"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            );
        }
    }
    secrets
}

async fn user_id(app: &TestApp, secret: &str) -> String {
    app.as_session(secret, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Collection `notes`: documents readable by whom their permissions say.
async fn notes(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"feed\", name: \"Feed\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "feed", "id": "notes", "name": "notes", "documentSecurity": true,
            "permissions": [],
            "attributes": [{"key": "n", "type": "INTEGER", "min": 0, "max": 1000, "default": 0}]
        }}),
    )
    .await
    .ok();
}

async fn create_note(app: &TestApp, id: &str, reader: &str) {
    app.admin(
        "mutation($input: CreateNoteInput!) { createNote(input: $input) { id } }",
        json!({"input": {"id": id, "n": 0, "permissions": [format!("read(\"{reader}\")")]}}),
    )
    .await
    .ok();
}

async fn update_note(app: &TestApp, id: &str, n: u32) {
    app.admin(
        "mutation($input: UpdateNoteInput!) { updateNote(input: $input) { id } }",
        json!({"input": {"id": id, "n": n}}),
    )
    .await
    .ok();
}

/// The changes `ws` receives, as `id:n`, up to and including `last`.
async fn changes_until(ws: &mut WsClient, last: &str) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let message = ws.next_json().await.expect("the socket stays open");
        assert_eq!(message["type"], "next", "{message}");
        assert!(message["payload"]["errors"].is_null(), "{message}");
        let node = &message["payload"]["data"]["noteChanged"]["node"];
        let change = format!("{}:{}", node["id"].as_str().unwrap(), node["n"]);
        let done = change == last;
        seen.push(change);
        if done {
            return seen;
        }
    }
}

#[tokio::test]
async fn every_subscriber_gets_each_event_it_may_read_once_in_order_and_no_other() {
    let app = roomy_app().await;
    notes(&app).await;
    let secrets = anonymous_sessions(&app, SUBSCRIBERS).await;
    let insider = user_id(&app, &secrets[0]).await;
    create_note(&app, "open", "users").await;
    create_note(&app, "private", &format!("user:{insider}")).await;

    let mut sockets = Vec::with_capacity(SUBSCRIBERS);
    for secret in &secrets {
        let mut ws = WsClient::connect(&app.ws_url, false).await;
        ws.init(json!({"Authorization": format!("Bearer {secret}")}))
            .await
            .expect("ack");
        ws.subscribe("1", WATCH).await;
        sockets.push(ws);
    }
    // Each connection handles its messages in order: once it answers a ping, its
    // subscription is listening.
    for ws in &mut sockets {
        ws.ping_pong().await;
    }

    update_note(&app, "private", 7).await;
    for n in 1..=3 {
        update_note(&app, "open", n).await;
    }
    // Read last, by everyone: whatever came before it is all they were sent.
    update_note(&app, "open", 99).await;

    let everyone = ["open:1", "open:2", "open:3", "open:99"];
    for (i, ws) in sockets.iter_mut().enumerate() {
        let seen = tokio::time::timeout(WAIT, changes_until(ws, "open:99"))
            .await
            .unwrap_or_else(|_| panic!("subscriber {i} did not get every event"));
        if i == 0 {
            let mut expected = vec!["private:7"];
            expected.extend(everyone);
            assert_eq!(seen, expected, "the one reader of `private`");
        } else {
            assert_eq!(seen, everyone, "subscriber {i} may not read `private`");
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn subscribers_that_may_read_nothing_get_nothing_while_others_get_everything() {
    let app = roomy_app().await;
    notes(&app).await;
    let secrets = anonymous_sessions(&app, 40).await;
    let insider = user_id(&app, &secrets[0]).await;
    create_note(&app, "private", &format!("user:{insider}")).await;
    create_note(&app, "marker", "any").await;

    let mut sockets = Vec::new();
    for secret in &secrets {
        let mut ws = WsClient::connect(&app.ws_url, false).await;
        ws.init(json!({"Authorization": format!("Bearer {secret}")}))
            .await
            .expect("ack");
        ws.subscribe("1", WATCH).await;
        ws.ping_pong().await;
        sockets.push(ws);
    }
    for n in 1..=20 {
        update_note(&app, "private", n).await;
    }
    update_note(&app, "marker", 1).await;

    let expected: Vec<String> = (1..=20)
        .map(|n| format!("private:{n}"))
        .chain(["marker:1".to_string()])
        .collect();
    for (i, ws) in sockets.iter_mut().enumerate() {
        let seen = changes_until(ws, "marker:1").await;
        if i == 0 {
            assert_eq!(seen, expected);
        } else {
            assert_eq!(
                seen,
                ["marker:1"],
                "subscriber {i} was sent what it may not read"
            );
        }
    }
    app.shutdown().await;
}

/// Sends a raw text frame.
async fn send_text(ws: &mut WsClient, text: &str) {
    futures_util::SinkExt::send(
        &mut ws.socket,
        tokio_tungstenite::tungstenite::Message::text(text),
    )
    .await
    .unwrap();
}

/// The close code and reason `ws` is closed with, skipping other messages.
async fn closed_with(ws: &mut WsClient) -> (u16, String) {
    loop {
        if let Err(closed) = ws.next_json().await {
            return closed;
        }
    }
}

#[tokio::test]
async fn a_malformed_or_unknown_message_closes_with_4400() {
    let app = crate::helpers::spawn_app().await;
    let long_id = format!(
        r#"{{"type": "subscribe", "id": "{}", "payload": {{"query": "{{ __typename }}"}}}}"#,
        "i".repeat(129)
    );
    let unknown = [
        "not json",
        // An id longer than 128 bytes.
        long_id.as_str(),
        r#"{"id": "1"}"#,
        r#"{"type": "bogus"}"#,
        r#"{"type": "subscribe", "id": "1"}"#,
        // Message types of the legacy subprotocol only.
        r#"{"type": "start", "id": "1", "payload": {"query": "{ __typename }"}}"#,
        r#"{"type": "stop", "id": "1"}"#,
        r#"{"type": "connection_terminate"}"#,
    ];
    for text in unknown {
        // Before connection_init and after it.
        for acknowledged in [false, true] {
            let mut ws = WsClient::connect(&app.ws_url, false).await;
            if acknowledged {
                ws.init(json!({})).await.expect("ack");
            }
            send_text(&mut ws, text).await;
            let (code, reason) = closed_with(&mut ws).await;
            assert_eq!(
                code, 4400,
                "{text} (acknowledged: {acknowledged}): {reason}"
            );
            assert!(reason.starts_with("INVALID_MESSAGE: "), "{reason}");
        }
    }
    // The legacy subprotocol keeps its own code for a message that is not one.
    let mut legacy = WsClient::connect(&app.ws_url, true).await;
    send_text(&mut legacy, "not json").await;
    assert_eq!(closed_with(&mut legacy).await.0, 1002);
    // The messages of both protocols that the legacy one reads still work there.
    let mut legacy = WsClient::connect(&app.ws_url, true).await;
    legacy.init(json!({})).await.expect("ack");
    legacy.subscribe("1", "{ __typename }").await;
    let answer = legacy.next_json().await.expect("an answer");
    assert_eq!(answer["payload"]["data"]["__typename"], "Query", "{answer}");
    // An id of 128 bytes is one.
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({})).await.expect("ack");
    let id = "i".repeat(128);
    ws.subscribe(&id, "{ __typename }").await;
    let answer = ws.next_json().await.expect("an answer");
    assert_eq!(answer["id"], id.as_str(), "{answer}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_refused_connection_init_closes_with_4403_and_the_error_code() {
    let app = crate::helpers::spawn_app().await;
    let refusals: [(Value, &str); 3] = [
        (
            json!({"X-Nimbus-Key": "nk_forged_secret"}),
            "INVALID_API_KEY",
        ),
        (
            json!({"Authorization": "Bearer not-a-session"}),
            "INVALID_SESSION",
        ),
        (
            json!({"headers": {"X-Nimbus-Project": "nope"}}),
            "PROJECT_NOT_FOUND",
        ),
    ];
    for (payload, code) in &refusals {
        let mut ws = WsClient::connect(&app.ws_url, false).await;
        let (close, reason) = ws.init(payload.clone()).await.expect_err("refused");
        assert_eq!(close, 4403, "{payload}: {reason}");
        assert!(
            reason.starts_with(&format!("{code}: ")),
            "{payload}: {reason}"
        );
    }
    // The legacy subprotocol answers `connection_error`, then closes with its code.
    let mut legacy = WsClient::connect(&app.ws_url, true).await;
    let error = legacy
        .init(json!({"X-Nimbus-Key": "nk_forged_secret"}))
        .await
        .expect("connection_error");
    assert_eq!(error["type"], "connection_error", "{error}");
    let (close, reason) = closed_with(&mut legacy).await;
    assert_eq!(close, 1002);
    assert!(reason.starts_with("INVALID_API_KEY: "), "{reason}");
    app.shutdown().await;
}
