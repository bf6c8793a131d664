//! One hostile client cannot make a replica work for it: a query text whose
//! selections or aliases, as written, already exceed the limits is refused
//! before it is parsed, over HTTP and over WebSocket alike; one client address
//! opens only so many presences a second, each a JOIN and a LEAVE for every
//! watcher of its channel; and a client reconnecting past the connection cap in
//! a loop gets a bounded number of answers a second, the rest closed at once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::{TestApp, WAIT, WsClient, spawn_app, spawn_with, test_config};

/// `count` copies of `__typename`, then `tail`.
fn copies(count: usize, tail: &str) -> String {
    format!("{{ {}{tail}", "__typename ".repeat(count))
}

/// `count` aliased fields, then `tail`.
fn aliases(count: usize, tail: &str) -> String {
    let fields: String = (0..count).map(|i| format!("a{i}: __typename ")).collect();
    format!("{{ {fields}{tail}")
}

async fn socket(app: &TestApp, payload: Value) -> WsClient {
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    let ack = ws.init(payload).await.expect("ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws
}

/// The first message of operation `id`, once started with `query`.
async fn first(ws: &mut WsClient, id: &str, query: &str) -> Value {
    ws.subscribe(id, query).await;
    loop {
        let message = ws.next_json().await.expect("a message");
        if message["id"] == id {
            return message;
        }
    }
}

fn error_code(message: &Value) -> &str {
    let errors = if message["payload"].is_array() {
        &message["payload"]
    } else {
        &message["payload"]["errors"]
    };
    errors[0]["extensions"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn a_query_over_the_limits_as_written_is_refused_before_it_is_parsed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.graphql_max_query_bytes = 1536 * 1024;
    let app = spawn_with(config, dir).await;
    let max = 5000;

    // About a megabyte of selections: refused by the scan, with its own message.
    let huge = copies(95_000, "}");
    assert!(huge.len() > 1_000_000);
    let answer = app.post(json!({ "query": huge }), &[]).await;
    assert_eq!(answer.code(), "QUERY_TOO_COMPLEX", "{:?}", answer.body);
    assert!(answer.body.get("data").is_none(), "{:?}", answer.body);
    let message = answer.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("before its fragments are expanded"),
        "{message}"
    );

    // Were the texts parsed, these would fail as syntax errors.
    for (query, code) in [
        (copies(max + 1, "}}}"), "QUERY_TOO_COMPLEX"),
        (aliases(101, "(("), "TOO_MANY_ALIASES"),
    ] {
        let answer = app.post(json!({ "query": query }), &[]).await;
        assert_eq!(answer.code(), code, "{:?}", answer.body);
    }
    let answer = app.post(json!({ "query": copies(10, "}}}") }), &[]).await;
    assert_eq!(answer.code(), "GRAPHQL_PARSE_FAILED", "{:?}", answer.body);

    // At the limits, the query runs.
    let data = app
        .post(json!({ "query": copies(max, "}") }), &[])
        .await
        .ok();
    assert_eq!(data["__typename"], "Query");
    let data = app
        .post(json!({ "query": aliases(100, "}") }), &[])
        .await
        .ok();
    assert_eq!(data["a99"], "Query");

    // An argument's object value is not a selection set: its names are not
    // counted (the query is refused only by validation, for the unknown argument).
    let names: String = (0..60).map(|i| format!("n{i}: {{ m{i}: 1 }} ")).collect();
    let objects = copies(max - 1, &format!("__typename(x: {{ {names} }}) }}"));
    let answer = app.post(json!({ "query": objects }), &[]).await;
    assert_eq!(
        answer.code(),
        "GRAPHQL_VALIDATION_FAILED",
        "{:?}",
        answer.body
    );

    app.shutdown().await;
}

#[tokio::test]
async fn a_subscription_over_the_limits_as_written_is_refused_before_it_is_parsed() {
    let app = spawn_app().await;
    let mut ws = socket(&app, json!({})).await;
    let subscription = format!("subscription {}", aliases(101, "(("));
    let message = first(&mut ws, "s", &subscription).await;
    assert_eq!(error_code(&message), "TOO_MANY_ALIASES", "{message}");
    let message = first(&mut ws, "t", &copies(5001, "")).await;
    assert_eq!(error_code(&message), "QUERY_TOO_COMPLEX", "{message}");
    app.shutdown().await;
}

#[tokio::test]
async fn presences_opened_per_second_from_one_client_address_are_limited() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.presence_max_joins_per_client = 2;
    let app = spawn_with(config, dir).await;
    let secret = app.signed_in("joiner@example.com").await;
    let mut ws = socket(&app, json!({"Authorization": format!("Bearer {secret}")})).await;
    let presence = |channel: &str| {
        format!("subscription {{ presence(channel: \"{channel}\") {{ type presenceId }} }}")
    };
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for (id, channel) in [("a", "room-a"), ("b", "room-b"), ("c", "room-c")] {
        let message = first(&mut ws, id, &presence(channel)).await;
        outcomes.push(
            match message["type"].as_str() {
                Some("next") if message["payload"]["data"]["presence"]["type"] == "JOIN" => "JOIN",
                _ => error_code(&message),
            }
            .to_string(),
        );
    }
    // The window is a second: three opened within it leave the third refused.
    if started.elapsed() < Duration::from_secs(1) {
        assert_eq!(outcomes, ["JOIN", "JOIN", "RATE_LIMITED"]);
    } else {
        assert_eq!(outcomes[..2], ["JOIN", "JOIN"]);
    }
    // Closing a presence does not give back a place in the window.
    ws.send(json!({"id": "a", "type": "complete"})).await;
    let message = first(&mut ws, "d", &presence("room-d")).await;
    if started.elapsed() < Duration::from_secs(1) {
        assert_eq!(error_code(&message), "RATE_LIMITED", "{message}");
    }
    app.shutdown().await;
}

/// What the server sends on `stream` before it closes it.
async fn read_to_close(stream: &mut TcpStream) -> String {
    let mut received = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server kept a refused connection open");
    String::from_utf8_lossy(&received).into_owned()
}

#[tokio::test]
async fn a_client_reconnecting_past_the_cap_gets_a_bounded_number_of_answers() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.max_connections_per_client = 1;
    let app = spawn_with(config, dir).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let held = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let mut answers = Vec::new();
    for _ in 0..20 {
        let mut refused = TcpStream::connect(&addr).await.unwrap();
        // The peer may have closed already; what it answered is what counts.
        let _ = refused
            .write_all(b"GET /health HTTP/1.1\r\nHost: nimbus\r\n\r\n")
            .await;
        answers.push(read_to_close(&mut refused).await);
    }
    let answered = answers
        .iter()
        .filter(|answer| answer.starts_with("HTTP/1.1 503"))
        .count();
    assert!(
        answers[0].contains("TOO_MANY_CONNECTIONS"),
        "the first is answered: {:?}",
        answers[0]
    );
    assert!(
        answers
            .iter()
            .all(|a| a.is_empty() || a.starts_with("HTTP/1.1 503")),
        "{answers:?}"
    );
    // Within one `Retry-After` (a second), 16 answers at most.
    if started.elapsed() < Duration::from_secs(1) {
        assert_eq!(answered, 16, "{answers:?}");
    } else {
        assert!(answered >= 16, "{answers:?}");
    }
    drop(held);
    app.shutdown().await;
}
