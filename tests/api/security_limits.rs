//! What one hostile client can cost a replica: documents whose fragments, directives
//! or repeated fields expand to far more than their text (refused before
//! execution, on every root and transport), variables that are large held or
//! named many times (each use a copy; refused before anything reads them), slow
//! and idle connections (closed by
//! the header, body and idle timeouts), too many connections (refused at the caps)
//! and invented operation names (kept out of the metrics' labels).

use std::time::{Duration, Instant};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{WAIT, WsClient, spawn_app, spawn_with, test_config};

/// 30 fragments on `on`, each spreading the next twice, down to `F30 { __typename }`.
fn bomb_fragments(on: &str) -> String {
    let mut fragments = String::new();
    for i in 0..30 {
        fragments.push_str(&format!(
            " fragment F{i} on {on} {{ ...F{n} ...F{n} }}",
            n = i + 1
        ));
    }
    fragments.push_str(&format!(" fragment F30 on {on} {{ __typename }}"));
    fragments
}

/// A document of 30 fragments, each spreading the next twice: about 1.2 KB that
/// expands to 2^30 selections, under the root `on`.
fn fragment_bomb(operation: &str, on: &str) -> String {
    format!("{operation} {{ ...F0 }}{}", bomb_fragments(on))
}

/// The answer to `body` posted to `/v1/graphql`, which must come within [`WAIT`].
async fn post_within_wait(app: &crate::helpers::TestApp, body: Value) -> crate::helpers::Answer {
    tokio::time::timeout(WAIT, app.post(body, &[]))
        .await
        .expect("refused without being expanded")
}

#[tokio::test]
async fn fragment_bombs_are_refused_before_execution_on_every_root_and_transport() {
    let app = spawn_app().await;
    let query = fragment_bomb("query", "Query");
    assert!(query.len() < 1500, "{}", query.len());
    for (operation, on) in [("query", "Query"), ("mutation", "Mutation")] {
        let answer = post_within_wait(&app, json!({"query": fragment_bomb(operation, on)})).await;
        assert_eq!(
            answer.code(),
            "QUERY_TOO_COMPLEX",
            "{operation}: {:#}",
            answer.body
        );
        assert!(answer.body.get("data").is_none(), "{:#}", answer.body);
    }
    // Over HTTP a subscription is refused for its transport, before anything else.
    let answer = post_within_wait(
        &app,
        json!({"query": fragment_bomb("subscription", "Subscription")}),
    )
    .await;
    assert_eq!(answer.code(), "SUBSCRIPTION_OVER_HTTP", "{:#}", answer.body);

    // GET.
    let get = app
        .client
        .get(format!("{}/v1/graphql", app.url))
        .query(&[("query", query.as_str())])
        .send();
    let answer: Value = tokio::time::timeout(WAIT, get)
        .await
        .expect("answered in time")
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{answer:#}"
    );

    // A batch: each bomb refused, the harmless operation beside them answered.
    let answer = post_within_wait(
        &app,
        json!([
            {"query": query},
            {"query": "{ __typename }"},
            {"query": fragment_bomb("mutation", "Mutation")},
        ]),
    )
    .await;
    assert_eq!(
        answer.body[0]["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{:#}",
        answer.body
    );
    assert_eq!(answer.body[1]["data"]["__typename"], "Query");
    assert_eq!(
        answer.body[2]["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
        "{:#}",
        answer.body
    );

    // WebSocket, both protocols, every root.
    for legacy in [false, true] {
        let mut ws = WsClient::connect(&app.ws_url, legacy).await;
        let ack = ws
            .init(json!({"x-nimbus-key": app.admin_key}))
            .await
            .unwrap();
        assert_eq!(ack["type"], "connection_ack");
        for (id, (operation, on)) in [
            ("s", ("subscription", "Subscription")),
            ("q", ("query", "Query")),
            ("m", ("mutation", "Mutation")),
        ] {
            ws.subscribe(id, &fragment_bomb(operation, on)).await;
            let message = loop {
                let message = ws.next_json().await.expect("an answer, not a close");
                if message["type"] != "complete" {
                    break message;
                }
            };
            assert_eq!(message["id"], id, "{message:#}");
            assert_eq!(
                message["payload"]["errors"][0]["extensions"]["code"], "QUERY_TOO_COMPLEX",
                "{operation} (legacy: {legacy}): {message:#}"
            );
        }
    }
    // Still serving.
    assert_eq!(
        app.post(json!({"query": "{ __typename }"}), &[]).await.ok()["__typename"],
        "Query"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn directive_field_and_alias_bombs_are_counted_as_they_would_run() {
    let app = spawn_app().await;
    // Thousands of directives on one field, and on one fragment spread.
    let on_field = format!("{{ __typename {} }}", "@include(if: true) ".repeat(5000));
    let answer = post_within_wait(&app, json!({"query": on_field})).await;
    assert_eq!(answer.code(), "QUERY_TOO_COMPLEX", "{:#}", answer.body);
    let on_spread = format!(
        "{{ ...F {} }} fragment F on Query {{ __typename }}",
        "@skip(if: false) ".repeat(5000)
    );
    let answer = post_within_wait(&app, json!({"query": on_spread})).await;
    assert_eq!(answer.code(), "QUERY_TOO_COMPLEX", "{:#}", answer.body);
    // A few directives are fine.
    let answer = app
        .post(
            json!({"query": "{ a: __typename @include(if: true) @skip(if: false) }"}),
            &[],
        )
        .await;
    assert_eq!(answer.ok()["a"], "Query");

    // The same field 10,000 times, and 10,000 inline fragments of it.
    let repeated = format!("{{ {} }}", "__typename ".repeat(10_000));
    let answer = post_within_wait(&app, json!({"query": repeated})).await;
    assert_eq!(answer.code(), "QUERY_TOO_COMPLEX", "{:#}", answer.body);
    let inline = format!("{{ {} }}", "... { __typename } ".repeat(10_000));
    let answer = post_within_wait(&app, json!({"query": inline})).await;
    assert_eq!(answer.code(), "QUERY_TOO_COMPLEX", "{:#}", answer.body);

    // Aliases are counted where their fragment is spread: 10 aliases spread 20
    // times are 200, over the limit of 100.
    let aliases = (0..10)
        .map(|i| format!("a{i}: __typename"))
        .collect::<Vec<_>>()
        .join(" ");
    let spread = format!(
        "{{ {} }} fragment A on Query {{ {aliases} }}",
        "... { ...A } ".repeat(20)
    );
    let answer = post_within_wait(&app, json!({"query": spread})).await;
    assert_eq!(answer.code(), "TOO_MANY_ALIASES", "{:#}", answer.body);
    // Spread once, they are 10.
    let once = format!("{{ ...A }} fragment A on Query {{ {aliases} }}");
    assert_eq!(
        app.post(json!({"query": once}), &[]).await.ok()["a9"],
        "Query"
    );

    // Depth is counted through fragments too.
    let mut deep = String::from("{ __schema { types { ...T0 } } }");
    for i in 0..10 {
        deep.push_str(&format!(
            " fragment T{i} on __Type {{ ofType {{ ...T{} }} }}",
            i + 1
        ));
    }
    deep.push_str(" fragment T10 on __Type { fields { type { ofType { ofType { name } } } } }");
    let answer = post_within_wait(&app, json!({"query": deep})).await;
    assert_eq!(answer.code(), "QUERY_TOO_DEEP", "{:#}", answer.body);
    app.shutdown().await;
}

#[tokio::test]
async fn fragment_cycles_that_branch_are_refused_without_being_followed() {
    let app = spawn_app().await;
    // Each follow of the cycle doubles: walking it to any depth limit never ends.
    let query = "query { ...A } fragment A on Query { ...B ...B __typename } fragment B on Query { ...A ...A }";
    let answer = post_within_wait(&app, json!({"query": query})).await;
    assert_eq!(
        answer.code(),
        "GRAPHQL_VALIDATION_FAILED",
        "{:#}",
        answer.body
    );
    // A fragment no operation uses is refused before it is walked.
    let unused = format!("{{ __typename }}{}", bomb_fragments("Query"));
    let answer = post_within_wait(&app, json!({"query": unused})).await;
    assert_eq!(
        answer.code(),
        "GRAPHQL_VALIDATION_FAILED",
        "{:#}",
        answer.body
    );
    app.shutdown().await;
}

/// A `nimbus serve` process of its own (fresh database, the test Redis), with
/// `env` on top and at most `fd_limit` open files, as a production server has.
struct LimitedServer {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl LimitedServer {
    async fn start(env: &[(&str, &str)], fd_limit: u64) -> LimitedServer {
        use std::os::unix::process::CommandExt as _;
        let dir = tempfile::tempdir().unwrap();
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_nimbus"));
        for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("NIMBUS_")) {
            command.env_remove(name);
        }
        command
            .arg("serve")
            .env("NIMBUS_LISTEN", addr.to_string())
            .env("NIMBUS_DATA_DIR", dir.path())
            .env("NIMBUS_LOG", "error")
            .env(
                "NIMBUS_REDIS_PREFIX",
                format!("nimbus-test-{}", nimbus::db::ids::generate()),
            )
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if let Some(database) = crate::helpers::fresh_database().await {
            command.env("NIMBUS_DATABASE_URL", database);
        }
        if let Some(redis) = crate::helpers::test_redis() {
            command.env("NIMBUS_REDIS_URL", redis);
        }
        for (name, value) in env {
            command.env(name, value);
        }
        // SAFETY: between fork and exec only setrlimit, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: fd_limit,
                    rlim_max: fd_limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let server = LimitedServer {
            child: command.spawn().expect("nimbus starts"),
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + WAIT;
        let client = reqwest::Client::new();
        loop {
            let health = client.get(format!("http://{addr}/health")).send().await;
            if health.is_ok_and(|r| r.status() == 200) {
                return server;
            }
            assert!(Instant::now() < deadline, "the server did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for LimitedServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads until the server closes `stream`, within [`WAIT`]; what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
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
    assert!(
        read.is_ok(),
        "the server kept the connection open; it sent {:?}",
        String::from_utf8_lossy(&received)
    );
    received
}

/// Status line, headers (lower-cased names) and body of an HTTP/1.1 answer.
pub(crate) fn parse_answer(raw: &[u8]) -> (u16, Vec<(String, String)>, String) {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

/// One HTTP/1.1 request on `stream`, and the answer's status (the connection
/// stays open).
async fn request_on(stream: &mut TcpStream, path: &str) -> u16 {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: nimbus\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        loop {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before answering");
            received.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&received);
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length: usize = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    return;
                }
            }
        }
    })
    .await
    .expect("an answer in time");
    parse_answer(&received).0
}

#[tokio::test]
async fn half_sent_request_heads_neither_delay_others_nor_stay_open() {
    let server = LimitedServer::start(&[("NIMBUS_HTTP_HEADER_TIMEOUT", "3")], 512).await;
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: nimbus\r\nX-Slow: ")
            .await
            .unwrap();
        stalled.push(stream);
    }
    // A normal client is served at once, not after the stalled ones give up.
    let started = Instant::now();
    let health = tokio::time::timeout(WAIT, reqwest::get(format!("http://{}/health", server.addr)))
        .await
        .expect("served while 300 request heads are half sent")
        .unwrap();
    assert_eq!(health.status(), 200);
    // Before the stalled connections' header timeout, that is, not after them.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The stalled connections are closed once their header timeout passes.
    for stream in &mut stalled {
        let answer = read_to_close(stream).await;
        assert!(
            answer.is_empty() || answer.starts_with(b"HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    }
}

#[tokio::test]
async fn kept_alive_connections_wait_the_idle_timeout_then_close() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.http_header_timeout_secs = 1;
    config.http_idle_timeout_secs = 3;
    let app = spawn_with(config, dir).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(request_on(&mut stream, "/health").await, 200);
    // Idle for longer than the header timeout, shorter than the idle timeout:
    // the connection still takes a request.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(request_on(&mut stream, "/health").await, 200);
    let idle_from = Instant::now();
    read_to_close(&mut stream).await;
    assert!(
        idle_from.elapsed() >= Duration::from_secs(2),
        "closed after {:?}, before the idle timeout",
        idle_from.elapsed()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_request_head_over_the_limit_is_refused_not_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.http_max_head_bytes = 16 * 1024;
    let app = spawn_with(config, dir).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let padding = "x".repeat(32 * 1024);
    stream
        .write_all(
            format!("GET /health HTTP/1.1\r\nHost: nimbus\r\nX-Padding: {padding}\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
    let (status, _, _) = parse_answer(&read_to_close(&mut stream).await);
    assert_eq!(status, 431);
    // Under the limit, the same request is served.
    let padding = "x".repeat(8 * 1024);
    let health = app
        .client
        .get(format!("{}/health", app.url))
        .header("x-padding", padding)
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn a_trickled_body_is_answered_408_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.http_body_timeout_secs = 1;
    let app = spawn_with(config, dir).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut stream = TcpStream::connect(&addr).await.unwrap();
    let body = r#"{"query": "{ __typename }"}"#;
    stream
        .write_all(
            format!(
                "POST /v1/graphql HTTP/1.1\r\nHost: nimbus\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
                body.len() + 100,
                body
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let (status, headers, answer) = parse_answer(&read_to_close(&mut stream).await);
    assert_eq!(status, 408, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["errors"][0]["extensions"]["code"], "REQUEST_TIMEOUT");
    assert!(
        headers.contains(&("connection".into(), "close".into())),
        "{headers:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn connections_past_the_caps_are_refused_with_a_coded_503() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.max_connections_per_client = 3;
    let app = spawn_with(config, dir).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        assert_eq!(request_on(&mut stream, "/health").await, 200);
        held.push(stream);
    }
    // A fourth connection from the same address: a plain request...
    let mut fourth = TcpStream::connect(&addr).await.unwrap();
    fourth
        .write_all(b"GET /health HTTP/1.1\r\nHost: nimbus\r\n\r\n")
        .await
        .unwrap();
    let (status, headers, body) = parse_answer(&read_to_close(&mut fourth).await);
    assert_eq!(status, 503, "{body}");
    assert!(
        headers.contains(&("retry-after".into(), "1".into())),
        "{headers:?}"
    );
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "TOO_MANY_CONNECTIONS"
    );
    // ...and a WebSocket upgrade alike.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            app.ws_url.as_str(),
        )
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503)
        }
        other => panic!("expected a 503, got {:?}", other.map(|(_, r)| r.status())),
    }
    // A WebSocket holds its place too: with one held connection closed and a
    // WebSocket open in its place, the address is still full.
    drop(held.pop());
    let mut ws = wait_for_room(&app.ws_url).await;
    ws.send(Message::text(
        json!({"type": "connection_init", "payload": {}}).to_string(),
    ))
    .await
    .unwrap();
    let ack = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ack.to_string().contains("connection_ack"), "{ack}");
    let mut fifth = TcpStream::connect(&addr).await.unwrap();
    let (status, _, _) = parse_answer(&read_to_close(&mut fifth).await);
    assert_eq!(status, 503);
    // Once the WebSocket closes, there is room again.
    drop(ws);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut stream = TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: nimbus\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let (status, _, _) = parse_answer(&read_to_close(&mut stream).await);
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no room after the WebSocket closed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(held);
    app.shutdown().await;

    // The total cap, whoever connects.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.max_connections = 2;
    config.max_connections_per_client = 0;
    let app = spawn_with(config, dir).await;
    let addr = app.url.trim_start_matches("http://").to_string();
    let mut first = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(request_on(&mut first, "/health").await, 200);
    let mut second = TcpStream::connect(&addr).await.unwrap();
    assert_eq!(request_on(&mut second, "/health").await, 200);
    let mut third = TcpStream::connect(&addr).await.unwrap();
    let (status, _, body) = parse_answer(&read_to_close(&mut third).await);
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("TOO_MANY_CONNECTIONS"), "{body}");
    drop((first, second));
    app.shutdown().await;
}

/// A WebSocket to `url`, once the server has room for it (a connection closed
/// by the client is given back when the server sees it close).
async fn wait_for_room(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let mut request =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(url)
                .unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        match tokio_tungstenite::connect_async(request).await {
            Ok((socket, _)) => return socket,
            Err(err) => assert!(Instant::now() < deadline, "no room: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn metrics_label_only_operations_that_ran_and_keep_the_first_ones() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.metrics_max_operations = 10_000;
    let app = spawn_with(config, dir).await;
    let real = format!(
        "Real{}",
        nimbus::db::ids::generate().replace(['-', '.'], "_")
    );
    app.post(
        json!({"query": format!("query {real} {{ __typename }}")}),
        &[],
    )
    .await
    .ok();
    let label = format!("nimbus_graphql_requests_total{{operation=\"{real}\",outcome=\"ok\"}}");
    assert_eq!(app.metric(&label).await, 1.0);
    // Names of operations that did not pass validation, or that the document does
    // not hold, get no label.
    let junk = format!(
        "Junk{}",
        nimbus::db::ids::generate().replace(['-', '.'], "_")
    );
    let answer = app
        .post(
            json!({"query": format!("query {junk} {{ noSuchField }}")}),
            &[],
        )
        .await;
    assert_eq!(answer.code(), "GRAPHQL_VALIDATION_FAILED");
    let answer = app
        .post(
            json!({"query": "query A { __typename }", "operationName": format!("{junk}\"}} 1\n# x")}),
            &[],
        )
        .await;
    assert_eq!(answer.code(), "OPERATION_NOT_FOUND");
    let metrics = app.get_text("/metrics").await;
    assert!(!metrics.contains(&junk), "{metrics}");
    app.shutdown().await;

    // With no room for new labels, new names count as `other`; the name labelled
    // before keeps its own.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.metrics_max_operations = 0;
    let app = spawn_with(config, dir).await;
    let late = format!(
        "Late{}",
        nimbus::db::ids::generate().replace(['-', '.'], "_")
    );
    for _ in 0..3 {
        app.post(
            json!({"query": format!("query {late} {{ __typename }}")}),
            &[],
        )
        .await
        .ok();
    }
    app.post(
        json!({"query": format!("query {real} {{ __typename }}")}),
        &[],
    )
    .await
    .ok();
    assert_eq!(app.metric(&label).await, 2.0);
    let metrics = app.get_text("/metrics").await;
    assert!(!metrics.contains(&late), "{metrics}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_its_answer_loses_the_connection() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.http_send_timeout_secs = 1;
    let app = spawn_with(config, dir).await;
    let mut stream = crate::helpers::small_window_connection(&app).await;
    // Five times the schema's every type with its fields and their arguments: an
    // answer of several hundred kilobytes.
    let query = "{ __schema { types { name description fields { name description args { name description } type { name kind ofType { name kind } } } } } }";
    let body = Value::Array(vec![json!({"query": query}); 5]).to_string();
    stream
        .write_all(
            format!(
                "POST /v1/graphql HTTP/1.1\r\nHost: nimbus\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    // Not reading, for longer than the send timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let received = read_to_close(&mut stream).await;
    let text = String::from_utf8_lossy(&received);
    let (head, body) = text.split_once("\r\n\r\n").expect("the answer's head");
    let length: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("a content length");
    assert!(length > 200_000, "the answer is only {length} bytes");
    assert!(
        body.len() < length,
        "the whole answer ({length} bytes) waited for the client"
    );
    // The server still answers others.
    assert_eq!(
        app.post(json!({"query": "{ __typename }"}), &[]).await.ok()["__typename"],
        "Query"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn values_nested_thousands_deep_are_refused_before_parsing() {
    let app = spawn_app().await;
    // Parsing or validating such a value recursed once per level, until a
    // worker's stack overflowed and the whole process aborted.
    let deep = |open: &str, close: &str| (open.repeat(5000), close.repeat(5000));
    let (lists, lists_end) = deep("[", "]");
    let (objects, objects_end) = deep("{a: ", "}");
    let queries = [
        format!("{{ __typename @include(if: {lists}true{lists_end}) }}"),
        format!("{{ apiKeyScopes(x: {objects}1{objects_end}) {{ name }} }}"),
        format!("query($v: Int = {lists}1{lists_end}) {{ __typename }}"),
    ];
    for query in &queries {
        let answer = post_within_wait(&app, json!({"query": query})).await;
        assert_eq!(answer.code(), "QUERY_TOO_DEEP", "{:#}", answer.body);
    }
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"x-nimbus-key": app.admin_key}))
        .await
        .unwrap();
    ws.subscribe("deep", &queries[0]).await;
    let message = ws.next_json().await.expect("an answer, not a close");
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"], "QUERY_TOO_DEEP",
        "{message:#}"
    );
    // A value a few levels deep is fine.
    let answer = app
        .post(json!({"query": "{ __typename @include(if: true) }"}), &[])
        .await;
    assert_eq!(answer.ok()["__typename"], "Query");
    app.shutdown().await;
}

/// `n` uses of `$name`, comma-separated, for an argument list.
fn uses(name: &str, n: usize) -> String {
    vec![format!("${name}"); n].join(",")
}

#[tokio::test]
async fn variables_named_many_times_are_refused_before_anything_copies_them() {
    let app = spawn_app().await;
    // 80,000 uses of a 1.7 MB string in one list (a body under 2 MiB, a query
    // under its 256 KiB): each use was a copy of it while the query's lists were
    // counted, some 136 GB, and the process aborted.
    let query = format!(
        "query($q: String) {{ documents(databaseId: \"x\", collectionId: \"x\", \
         queries: [{}]) {{ total }} }}",
        uses("q", 80_000)
    );
    let big = "a".repeat(1_700_000);
    let started = Instant::now();
    let answer = post_within_wait(&app, json!({"query": query, "variables": {"q": big}})).await;
    assert_eq!(answer.code(), "VARIABLES_TOO_LARGE", "{:#}", answer.body);
    assert!(answer.body.get("data").is_none(), "{:#}", answer.body);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A list of 90,000 (within the bound on variables) as both pages of 2,400
    // lists: seconds of copying, with the request's own deadline not yet begun.
    let query = format!(
        "query($v: [Int]) {{ {} }}",
        "users(first: $v, last: $v) { totalCount } ".repeat(2400)
    );
    let list = vec![0; 90_000];
    let started = Instant::now();
    let answer = app
        .post(
            json!({"query": query, "variables": {"v": list}}),
            &[("accept", "application/graphql-response+json")],
        )
        .await;
    assert_eq!(answer.status, 400, "{:#}", answer.body);
    assert_eq!(answer.code(), "VARIABLES_TOO_LARGE", "{:#}", answer.body);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // The same through a fragment spread many times, in a batch beside a
    // harmless operation, which is answered.
    let spread = format!(
        "query($q: String) {{ {} }} fragment F on Query {{ a: documents(databaseId: \"x\", \
         collectionId: \"x\", queries: [{}]) {{ total }} }}",
        "...F ".repeat(100),
        uses("q", 1000)
    );
    let answer = post_within_wait(
        &app,
        json!([
            {"query": spread, "variables": {"q": "a".repeat(100_000)}},
            {"query": "{ __typename }"},
        ]),
    )
    .await;
    assert_eq!(
        answer.body[0]["errors"][0]["extensions"]["code"], "VARIABLES_TOO_LARGE",
        "{:#}",
        answer.body
    );
    assert_eq!(answer.body[1]["data"]["__typename"], "Query");

    // A variable used a few times is what clients do.
    let answer = app
        .post(
            json!({
                "query": "query($n: Int, $s: Boolean!) { a: users(first: $n) { totalCount } \
                          b: users(last: $n) @include(if: $s) { totalCount } }",
                "variables": {"n": 5, "s": true},
            }),
            &[("x-nimbus-key", app.admin_key.as_str())],
        )
        .await;
    assert_eq!(answer.ok()["b"]["totalCount"], 0);
    app.shutdown().await;
}

#[tokio::test]
async fn variables_over_their_bound_are_refused_and_undeclared_ones_dropped() {
    let app = spawn_app().await;
    // 150,000 values in 300 KB: each held as 72 bytes, some 11 MB; counted in the
    // body, before it is parsed.
    let many = vec![0; 150_000];
    for query in ["query($a: [Int]) { __typename }", "{ __typename }"] {
        let answer =
            post_within_wait(&app, json!({"query": query, "variables": {"a": many}})).await;
        assert_eq!(
            answer.code(),
            "VARIABLES_TOO_LARGE",
            "{query}: {:#}",
            answer.body
        );
        let message = answer.body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("more than 100000 values"), "{message}");
    }
    // The same in a multipart request's `operations`, counted before it is parsed.
    let boundary = "nimbus-values-boundary";
    let operations = json!({"query": "query($a: [Int]) { __typename }", "variables": {"a": many}});
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{}}\r\n--{boundary}--\r\n"
    );
    let response = app
        .multipart_post(boundary)
        .body(body)
        .send()
        .await
        .expect("request sent");
    assert_eq!(response.status(), 400);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "VARIABLES_TOO_LARGE",
        "{answer:#}"
    );
    // Text counts too: 4 MiB of it, over a body raised for the test.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.max_body_bytes = 8 * 1024 * 1024;
    let wide = spawn_with(config, dir).await;
    let text = "a".repeat(4 * 1024 * 1024 + 1);
    let answer = wide
        .post(
            json!({"query": "query($t: String) { __typename }", "variables": {"t": text}}),
            &[],
        )
        .await;
    assert_eq!(answer.code(), "VARIABLES_TOO_LARGE", "{:#}", answer.body);
    wide.shutdown().await;

    // Within the bound, with variables the operation does not declare: answered,
    // the extra ones ignored.
    let answer = app
        .post(
            json!({
                "query": "query($n: Int) { users(first: $n) { totalCount } }",
                "variables": {"n": 1, "extra": vec![0; 50_000], "other": "x"},
            }),
            &[("x-nimbus-key", app.admin_key.as_str())],
        )
        .await;
    assert_eq!(answer.ok()["users"]["totalCount"], 0);
    // Still serving.
    assert_eq!(
        app.post(json!({"query": "{ __typename }"}), &[]).await.ok()["__typename"],
        "Query"
    );
    app.shutdown().await;
}

/// The first message about operation `id` that is not its `complete`.
async fn answer_to(ws: &mut WsClient, id: &str) -> Value {
    loop {
        let message = ws.next_json().await.expect("an answer, not a close");
        if message["type"] != "complete" && message["type"] != "ka" {
            assert_eq!(message["id"], id, "{message:#}");
            return message;
        }
    }
}

#[tokio::test]
async fn a_subscription_keeps_no_more_variables_than_its_socket_allows() {
    let app = spawn_app().await;
    let realtime = "subscription($c: [String!]!) { realtime(channels: $c) { events } }";
    for legacy in [false, true] {
        let kind = if legacy { "start" } else { "subscribe" };
        let mut ws = WsClient::connect(&app.ws_url, legacy).await;
        let ack = ws
            .init(json!({"x-nimbus-key": app.admin_key}))
            .await
            .unwrap();
        assert_eq!(ack["type"], "connection_ack");
        // Over the bound on variables, within the message size.
        let payload =
            json!({"query": realtime, "variables": {"c": ["keys"], "x": vec![0; 120_000]}});
        ws.send(json!({"id": "big", "type": kind, "payload": payload}))
            .await;
        let message = answer_to(&mut ws, "big").await;
        assert_eq!(
            message["payload"]["errors"][0]["extensions"]["code"], "VARIABLES_TOO_LARGE",
            "{message:#}"
        );
        // Named many times.
        let named = format!(
            "subscription($c: String!) {{ realtime(channels: [{}]) {{ events }} }}",
            uses("c", 20_000)
        );
        let payload = json!({"query": named, "variables": {"c": "k".repeat(1000)}});
        ws.send(json!({"id": "named", "type": kind, "payload": payload}))
            .await;
        let message = answer_to(&mut ws, "named").await;
        assert_eq!(
            message["payload"]["errors"][0]["extensions"]["code"], "VARIABLES_TOO_LARGE",
            "{message:#}"
        );
        // Within the bound on variables, more than a subscription may keep.
        let channels = vec!["c"; 32_000];
        let payload = json!({"query": realtime, "variables": {"c": channels}});
        ws.send(json!({"id": "kept", "type": kind, "payload": payload}))
            .await;
        let message = answer_to(&mut ws, "kept").await;
        assert_eq!(
            message["payload"]["errors"][0]["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS",
            "{message:#}"
        );
        // Undeclared variables are dropped before they are kept: as large, they
        // do not count.
        let payload = json!({"query": realtime, "variables": {"c": ["keys"], "x": channels}});
        ws.send(json!({"id": "fine", "type": kind, "payload": payload}))
            .await;
        ws.ping_pong().await;
        app.admin(
            "mutation { createApiKey(input: {name: \"k\", scopes: [\"users.read\"]}) { apiKey { id } } }",
            json!({}),
        )
        .await
        .ok();
        let message = answer_to(&mut ws, "fine").await;
        assert!(
            message["payload"]["data"]["realtime"]["events"].is_array(),
            "{message:#}"
        );
    }
    app.shutdown().await;
}

/// A `notes` collection of 1,000 documents of 16 KiB of letters, and a filter
/// that scans each 90 times for what it never holds: over a second of work per
/// statement (a page and its `totalCount` are two), whatever the deadlines.
async fn notes_and_a_costly_filter(app: &crate::helpers::TestApp) -> Value {
    app.admin(
        "mutation { createDatabase(input: {id: \"d\", name: \"d\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "d", "id": "notes", "name": "notes",
            "permissions": ["read(\"any\")"],
            "attributes": [{"key": "body", "type": "STRING", "size": 20000, "required": true}]
        }}),
    )
    .await
    .ok();
    let body: String = (0..16 * 1024)
        .map(|i: usize| char::from(b'a' + ((i * 7 + i / 26) % 25) as u8))
        .collect();
    for batch in 0..10 {
        let input: Vec<Value> = (0..100)
            .map(|i| json!({"id": format!("n{batch}-{i}"), "body": body}))
            .collect();
        app.admin(
            "mutation($input: [CreateNoteInput!]!) { createNotes(input: $input) { id } }",
            json!({"input": input}),
        )
        .await
        .ok();
    }
    let or: Vec<Value> = (0..90)
        .map(|i| json!({"body": {"contains": format!("zz{i}")}}))
        .collect();
    json!({"or": or})
}

/// The server of `app` stopped and started again on the same data with `change`
/// made to its configuration.
async fn restarted(
    app: &mut crate::helpers::TestApp,
    change: impl FnOnce(&mut nimbus::config::Config),
) -> crate::helpers::TestApp {
    if let Some(server) = app.server.take() {
        server.shutdown().await.expect("clean shutdown");
    }
    let mut config = app.config.clone();
    change(&mut config);
    let server = nimbus::Server::start(config.clone())
        .await
        .expect("the server starts again");
    crate::helpers::from_server(
        server,
        app.admin_key.clone(),
        config,
        tempfile::tempdir().unwrap(),
    )
}

const COSTLY_LIST: &str =
    "query($f: NoteFilter) { notes(filter: $f, first: 10) { totalCount nodes { id } } }";

/// A filter costs what its client chooses per row; the statement deadline stops
/// such a read in the database, the client gets `DATABASE_TIMEOUT` with nothing of
/// the SQL, and the replica goes on.
#[tokio::test]
async fn a_read_past_the_statement_deadline_is_stopped_with_a_clear_code() {
    let mut app = spawn_app().await;
    let filter = notes_and_a_costly_filter(&app).await;
    let limited = restarted(&mut app, |config| {
        config.database_statement_timeout_ms = 200;
    })
    .await;

    let started = Instant::now();
    let answer = tokio::time::timeout(WAIT, limited.admin(COSTLY_LIST, json!({"f": filter})))
        .await
        .expect("stopped well before the test's wait");
    assert_eq!(answer.code(), "DATABASE_TIMEOUT", "{:#}", answer.body);
    let message = answer.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        !message.contains("SELECT") && !message.contains("interrupt"),
        "{message}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A read the deadline does not reach, on the same replica, right after.
    let one = limited
        .admin(
            "query($f: NoteFilter) { notes(filter: $f) { totalCount } }",
            json!({"f": {"id": {"eq": "n3-7"}}}),
        )
        .await
        .ok();
    assert_eq!(one["notes"]["totalCount"], 1);
    limited.shutdown().await;
}

/// Statements each within their deadline still add up; a query operation has a
/// deadline of its own, answered `OPERATION_TIMEOUT` as an execution that began
/// (`data: null`, 200 under `application/graphql-response+json`).
#[tokio::test]
async fn a_query_past_the_operation_deadline_is_stopped_with_a_clear_code() {
    let mut app = spawn_app().await;
    let filter = notes_and_a_costly_filter(&app).await;
    let limited = restarted(&mut app, |config| {
        config.database_statement_timeout_ms = 0;
        config.graphql_query_timeout_ms = 300;
    })
    .await;
    let response = limited
        .client
        .post(format!("{}/v1/graphql", limited.url))
        .header("x-nimbus-key", &limited.admin_key)
        .header("accept", "application/graphql-response+json")
        .json(&json!({"query": COSTLY_LIST, "variables": {"f": filter}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "OPERATION_TIMEOUT",
        "{body:#}"
    );
    assert!(body.get("data").is_some_and(Value::is_null), "{body:#}");
    // Mutations are not stopped halfway; a quick query still answers.
    let answer = limited
        .admin(
            "mutation { createNote(input: {id: \"late\", body: \"x\"}) { id } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(answer["createNote"]["id"], "late");
    limited.shutdown().await;
}

/// A client may give its queries a shorter deadline than the server's
/// (`X-Nimbus-Timeout`, or Appwrite's `X-Appwrite-Timeout`, in milliseconds),
/// answered `OPERATION_TIMEOUT` when it passes; never a longer one, and a value
/// that is not a whole number of milliseconds from 1 is refused.
#[tokio::test]
async fn a_client_may_give_its_queries_a_shorter_deadline() {
    let app = spawn_app().await;
    let filter = notes_and_a_costly_filter(&app).await;
    let post =
        |header: &'static str, value: &'static str, query: &'static str, variables: Value| {
            app.client
                .post(format!("{}/v1/graphql", app.url))
                .header("x-nimbus-key", &app.admin_key)
                .header(header, value)
                .json(&json!({"query": query, "variables": variables}))
                .send()
        };
    for header in ["x-nimbus-timeout", "x-appwrite-timeout"] {
        let started = Instant::now();
        let response = post(header, "50", COSTLY_LIST, json!({"f": filter}))
            .await
            .unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "OPERATION_TIMEOUT",
            "{body:#}"
        );
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("50 ms"),
            "{body:#}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
    let quick = post(
        "x-nimbus-timeout",
        "10000",
        "{ notes(first: 1) { totalCount } }",
        json!({}),
    )
    .await
    .unwrap();
    let body: Value = quick.json().await.unwrap();
    assert!(
        body["data"]["notes"]["totalCount"].as_i64().unwrap() > 0,
        "{body:#}"
    );
    for bad in ["0", "-5", "soon", "1.5"] {
        let refused = post("x-nimbus-timeout", bad, "{ __typename }", json!({}))
            .await
            .unwrap();
        assert_eq!(refused.status().as_u16(), 400, "{bad}");
        let body: Value = refused.json().await.unwrap();
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
            "{body:#}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn presence_subscriptions_count_toward_what_a_socket_keeps() {
    let app = spawn_app().await;
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"x-nimbus-key": app.admin_key}))
        .await
        .unwrap();
    // Each some 200 KB of query text (a comment): ten fit in 2 MiB, the eleventh
    // does not.
    let padded = |n: usize| {
        format!(
            "subscription {{ presenceChanged(channel: \"room-{n}\") {{ type }} }} #{}",
            "x".repeat(200_000)
        )
    };
    for n in 0..10 {
        ws.subscribe(&format!("p{n}"), &padded(n)).await;
    }
    ws.subscribe("p10", &padded(10)).await;
    let message = answer_to(&mut ws, "p10").await;
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"],
        "TOO_MANY_SUBSCRIPTIONS",
        "{}",
        message.to_string().chars().take(300).collect::<String>()
    );
    app.shutdown().await;
}

/// A team's id stays claimed for good, and an invitation by user id tells whether
/// the id exists: both are counted per user, whatever is deleted in between.
#[tokio::test]
async fn a_user_creating_teams_or_probing_user_ids_in_a_loop_is_rate_limited() {
    let app = spawn_app().await;
    let me = app.signed_in("loop@example.com").await;
    let mut refused_at = None;
    for n in 0..70 {
        let created = app
            .as_session(
                &me,
                "mutation($id: ID!) { createTeam(input: {id: $id, name: \"Loop\"}) { id } }",
                json!({"id": format!("loop{n}")}),
            )
            .await;
        if created.code() == "RATE_LIMITED" {
            refused_at = Some(n);
            break;
        }
        created.ok();
        app.as_session(
            &me,
            "mutation($id: ID!) { deleteTeam(input: {id: $id}) { deletedId } }",
            json!({"id": format!("loop{n}")}),
        )
        .await
        .ok();
    }
    assert_eq!(refused_at, Some(60), "sixty teams an hour, deleted or not");

    // An owner asking for ever new user ids is told `USER_NOT_FOUND` a bounded
    // number of times.
    let owner = app.signed_in("probe@example.com").await;
    app.as_session(
        &owner,
        "mutation { createTeam(input: {id: \"probe\", name: \"Probe\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let mut answers = Vec::new();
    for n in 0..55 {
        let answer = app
            .as_session(
                &owner,
                "mutation($u: ID!) { createMembership(input: {teamId: \"probe\", userId: $u, roles: [\"member\"]}) { id } }",
                json!({"u": format!("nobody{n}")}),
            )
            .await;
        answers.push(answer.code().to_string());
    }
    assert!(
        answers[..50].iter().all(|code| code == "USER_NOT_FOUND"),
        "{answers:?}"
    );
    assert_eq!(answers[50], "RATE_LIMITED", "{answers:?}");
    app.shutdown().await;
}
