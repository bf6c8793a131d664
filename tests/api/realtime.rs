//! Subscriptions over both WebSocket subprotocols, across replicas, and through a
//! Redis outage.

use serde_json::{Value, json};

use crate::helpers::{
    ServeOptions, ServeProcess, TestApp, WsClient, from_server, spawn_app, spawn_with, test_config,
    test_redis,
};

const KEY_EVENTS: &str =
    "subscription { realtime(channels: [\"keys\"]) { events channels payload timestamp } }";

async fn subscribed(app: &TestApp, key: &str, legacy: bool) -> WsClient {
    let mut ws = WsClient::connect(&app.ws_url, legacy).await;
    let ack = ws.init(json!({"X-Nimbus-Key": key})).await.expect("ack");
    assert_eq!(ack["type"], "connection_ack");
    ws.subscribe("1", KEY_EVENTS).await;
    ws
}

async fn create_named_key(app: &TestApp, name: &str) -> String {
    let data = app
        .admin(
            "mutation($name: String!) { createApiKey(input: {name: $name, scopes: [\"keys.read\"]}) { apiKey { id } } }",
            json!({"name": name}),
        )
        .await
        .ok();
    data["createApiKey"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A subscription goes live asynchronously after `subscribe`: create keys named
/// `name` until `ws` receives an event, and return that event.
async fn first_event(app: &TestApp, ws: &mut WsClient, name: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    loop {
        create_named_key(app, name).await;
        if let Some(message) = ws.socket_next_within_short_time().await {
            return message;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event reached the subscriber"
        );
    }
}

fn realtime_event(message: &serde_json::Value) -> &serde_json::Value {
    assert!(
        matches!(message["type"].as_str(), Some("next" | "data")),
        "{message}"
    );
    &message["payload"]["data"]["realtime"]
}

#[tokio::test]
async fn a_created_key_reaches_subscribers_on_both_subprotocols() {
    let app = spawn_app().await;
    let mut modern = subscribed(&app, &app.admin_key, false).await;
    let mut legacy = subscribed(&app, &app.admin_key, true).await;
    for ws in [&mut modern, &mut legacy] {
        let message = first_event(&app, ws, "first").await;
        assert_eq!(message["id"], "1");
        let event = realtime_event(&message);
        let id = event["payload"]["id"].as_str().unwrap();
        assert_eq!(
            event["events"],
            json!([
                format!("keys.{id}.create"),
                "keys.*.create",
                format!("keys.{id}"),
                "keys.*"
            ])
        );
        assert_eq!(event["channels"], json!(["keys", format!("keys.{id}")]));
        assert_eq!(event["payload"]["name"], "first");
        assert_eq!(event["payload"]["scopes"], json!(["keys.read"]));
        assert!(
            event["payload"].get("secret").is_none(),
            "secrets never travel in events"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn subscribers_without_the_scope_receive_nothing() {
    let app = spawn_app().await;
    let outsider = app.create_key("default", &["users.read"]).await;
    let mut blind = subscribed(&app, &outsider, false).await;
    let mut seeing = subscribed(&app, &app.admin_key, false).await;
    first_event(&app, &mut seeing, "warm-up").await;
    let id = create_named_key(&app, "watched").await;
    loop {
        let message = seeing.next_json().await.expect("open");
        if realtime_event(&message)["payload"]["id"] == id.as_str() {
            break;
        }
    }
    let next = blind.socket_next_within_short_time().await;
    assert!(next.is_none(), "a key without keys.read received {next:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn connection_init_with_a_bad_key_or_project_is_refused() {
    let app = spawn_app().await;
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    let refused = ws.init(json!({"X-Nimbus-Key": "nk_forged_secret"})).await;
    let (code, reason) = refused.expect_err("the server closes");
    assert_eq!(code, 4403);
    assert!(reason.starts_with("INVALID_API_KEY"), "{reason}");

    let mut ws = WsClient::connect(&app.ws_url, false).await;
    let (_, reason) = ws
        .init(json!({"headers": {"x-nimbus-project": "nope"}}))
        .await
        .expect_err("closed");
    assert!(reason.starts_with("PROJECT_NOT_FOUND"), "{reason}");

    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({})).await.expect("anonymous ack");
    ws.subscribe(
        "1",
        "subscription { realtime(channels: [\"bad channel\"]) { events } }",
    )
    .await;
    let message = ws.next_json().await.expect("error message");
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"],
        "INVALID_CHANNEL"
    );
    assert_eq!(ws.next_json().await.expect("complete")["type"], "complete");
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_protocol_messages_close_only_that_connection() {
    let app = spawn_app().await;
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    futures_util::SinkExt::send(
        &mut ws.socket,
        tokio_tungstenite::tungstenite::Message::text("not json"),
    )
    .await
    .unwrap();
    let (code, _) = ws.next_json().await.expect_err("closed");
    assert_eq!(code, 4400);
    assert_eq!(
        app.post(json!({"query": "{ __typename }"}), &[]).await.ok()["__typename"],
        "Query"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_connection_holds_a_bounded_number_of_subscriptions() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.ws_max_subscriptions = 2;
    let app = spawn_with(config, dir).await;
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    for id in ["1", "2", "3"] {
        ws.subscribe(id, KEY_EVENTS).await;
    }
    let refused = ws.next_json().await.expect("an answer to the third");
    assert_eq!(refused["id"], "3");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "TOO_MANY_SUBSCRIPTIONS",
        "{refused}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_revoked_key_ends_its_subscriptions() {
    let app = spawn_app().await;
    let created = app
        .admin("mutation { createApiKey(input: {name: \"watcher\", scopes: [\"keys.read\"]}) { secret apiKey { id } } }", json!({}))
        .await
        .ok();
    let secret = created["createApiKey"]["secret"].as_str().unwrap();
    let id = created["createApiKey"]["apiKey"]["id"].as_str().unwrap();
    let mut ws = subscribed(&app, secret, false).await;
    first_event(&app, &mut ws, "probe").await;
    app.admin(
        "mutation($id: ID!) { deleteApiKey(input: {id: $id}) { deletedId } }",
        json!({"id": id}),
    )
    .await
    .ok();
    // Skip probe events still queued; the revocation must end the subscription.
    let message = loop {
        let message = ws.next_json().await.expect("a message");
        if message["payload"]["data"]["realtime"].is_null() {
            break message;
        }
    };
    assert_eq!(message["id"], "1");
    let errors = if message["type"] == "next" {
        &message["payload"]["errors"]
    } else {
        &message["payload"]
    };
    assert_eq!(
        errors[0]["extensions"]["code"], "INVALID_API_KEY",
        "{message}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn two_replicas_behind_one_redis_behave_as_one_server() {
    if test_redis().is_none() {
        eprintln!("skipped: set NIMBUS_TEST_REDIS_URL and NIMBUS_TEST_DATABASE_URL to run");
        return;
    }
    let first = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = first.config.clone();
    config.data_dir = dir.path().to_path_buf();
    let server = nimbus::Server::start(config.clone())
        .await
        .expect("second replica starts");
    assert!(
        server.first_admin_key().is_none(),
        "only the first start creates an admin key"
    );
    let second = from_server(server, first.admin_key.clone(), config, dir);

    let mut ws = subscribed(&second, &second.admin_key, false).await;
    let message = first_event(&first, &mut ws, "cross-replica").await;
    let event = realtime_event(&message);
    assert_eq!(event["payload"]["name"], "cross-replica");
    assert_eq!(event["payload"]["projectId"], "default");

    // A project created on one replica is served by the other, and a rename on one
    // is seen by the other (its cache was invalidated over the bus).
    first.create_project("shared").await;
    let on_second = second
        .as_key(
            &second.admin_key,
            "shared",
            "{ project { name } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(on_second["project"]["name"], "Test");
    first
        .admin(
            "mutation { updateProject(input: {id: \"shared\", name: \"Renamed\"}) { name } }",
            json!({}),
        )
        .await
        .ok();
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    loop {
        let seen = second
            .as_key(
                &second.admin_key,
                "shared",
                "{ project { name } }",
                json!({}),
            )
            .await
            .ok();
        if seen["project"]["name"] == "Renamed" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second replica kept a stale project"
        );
        tokio::task::yield_now().await;
    }
    second.shutdown().await;
    first.shutdown().await;
}

impl WsClient {
    /// Runs `write(1)`, `write(2)`, … until this socket hears a message (a
    /// subscription is live once it hears its first event), for at most
    /// `helpers::WAIT`; answers that message, the others heard drained.
    pub async fn first_heard_while<F, Fut>(&mut self, mut write: F) -> serde_json::Value
    where
        F: FnMut(usize) -> Fut,
        Fut: std::future::Future,
    {
        let deadline = std::time::Instant::now() + crate::helpers::WAIT;
        for n in 1.. {
            write(n).await;
            if let Some(message) = self.socket_next_within_short_time().await {
                while self.socket_next_within_short_time().await.is_some() {}
                return message;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the subscription never went live"
            );
        }
        unreachable!("counted past usize::MAX")
    }

    /// The next message if one arrives within half a second.
    pub async fn socket_next_within_short_time(&mut self) -> Option<serde_json::Value> {
        use futures_util::StreamExt as _;
        match tokio::time::timeout(std::time::Duration::from_millis(500), self.socket.next()).await
        {
            Ok(Some(Ok(tokio_tungstenite::tungstenite::Message::Text(text)))) => {
                serde_json::from_str(&text).ok()
            }
            _ => None,
        }
    }
}

/// A redis-server of the test's own, to stop and start at will.
pub(crate) struct PrivateRedis {
    binary: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    pub(crate) fn start() -> Option<PrivateRedis> {
        let binary = std::env::var("NIMBUS_TEST_REDIS_SERVER")
            .ok()
            .filter(|b| !b.is_empty())
            .or_else(|| {
                let found = std::process::Command::new("sh")
                    .args(["-c", "command -v redis-server"])
                    .output()
                    .ok()?;
                Some(String::from_utf8(found.stdout).ok()?.trim().to_string())
                    .filter(|p| !p.is_empty())
            })?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let mut redis = PrivateRedis {
            binary,
            port,
            dir: tempfile::tempdir().ok()?,
            child: None,
        };
        redis.run();
        Some(redis)
    }

    pub(crate) fn run(&mut self) {
        let child = std::process::Command::new(&self.binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .current_dir(self.dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + crate::helpers::WAIT;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not come up"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn health(app: &TestApp) -> (u16, serde_json::Value) {
    let response = app
        .client
        .get(format!("{}/health", app.url))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

pub(crate) async fn wait_for_health(app: &TestApp, status: u16) -> serde_json::Value {
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    loop {
        let (code, body) = health(app).await;
        if code == status {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/health never answered {status}: {body}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// What a subscriber reading on its own task reports: the name of a key it heard
/// of, or `None` when its connection ended.
type Heard = (usize, Option<String>);

/// A subscriber to key events that reads on its own task and reports to `heard`.
async fn listening_subscriber(
    app: &TestApp,
    index: usize,
    heard: tokio::sync::mpsc::UnboundedSender<Heard>,
) {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let mut ws = subscribed(app, &app.admin_key, false).await;
    tokio::spawn(async move {
        loop {
            match ws.socket.next().await {
                Some(Ok(Message::Text(text))) => {
                    let message: serde_json::Value = serde_json::from_str(&text).unwrap();
                    let name = message["payload"]["data"]["realtime"]["payload"]["name"]
                        .as_str()
                        .map(str::to_string);
                    if name.is_some() && heard.send((index, name)).is_err() {
                        return;
                    }
                }
                Some(Ok(Message::Close(_)) | Err(_)) | None => {
                    let _ = heard.send((index, None));
                    return;
                }
                Some(Ok(_)) => {}
            }
        }
    });
}

/// Creates keys named `label-N` until each of `subscribers` has heard of one;
/// fails when a connection ends or time runs out. Returns the other names heard.
async fn publish_until_every_subscriber_hears(
    app: &TestApp,
    heard: &mut tokio::sync::mpsc::UnboundedReceiver<Heard>,
    subscribers: usize,
    label: &str,
) -> Vec<String> {
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    let mut reached = std::collections::HashSet::new();
    let mut others = Vec::new();
    let mut attempt = 0;
    while reached.len() < subscribers {
        attempt += 1;
        let name = format!("{label}-{attempt}");
        create_named_key(app, &name).await;
        // Subscriptions go live asynchronously: give this key a moment, then another.
        let round = tokio::time::Instant::now() + std::time::Duration::from_millis(500);
        while reached.len() < subscribers {
            match tokio::time::timeout_at(round, heard.recv()).await {
                Ok(Some((index, Some(name)))) if name.starts_with(&format!("{label}-")) => {
                    reached.insert(index);
                }
                Ok(Some((_, Some(name)))) => others.push(name),
                Ok(Some((index, None))) => panic!("subscriber {index} lost its connection"),
                Ok(None) => unreachable!("the test holds a sender"),
                Err(_) => break,
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {subscribers} subscribers heard a `{label}` key",
            reached.len()
        );
    }
    others
}

#[tokio::test]
async fn a_hundred_subscribers_survive_a_redis_restart_without_reconnecting() {
    const SUBSCRIBERS: usize = 100;
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("skipped: no redis-server on this machine");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.redis_url = Some(redis.url());
    let app = spawn_with(config, dir).await;
    let (report, mut heard) = tokio::sync::mpsc::unbounded_channel();
    for index in 0..SUBSCRIBERS {
        listening_subscriber(&app, index, report.clone()).await;
    }
    publish_until_every_subscriber_hears(&app, &mut heard, SUBSCRIBERS, "before").await;
    assert_eq!(health(&app).await.0, 200);

    redis.stop();
    let down = wait_for_health(&app, 503).await;
    assert_eq!(down["checks"]["bus"]["status"], "down");
    assert_eq!(down["checks"]["database"]["status"], "up");
    // Queries and writes go on; their events are logged, and delivered from the log.
    app.admin("{ apiKeys { totalCount } }", json!({}))
        .await
        .ok();
    create_named_key(&app, "during").await;
    let (status, still_down) = health(&app).await;
    assert_eq!(status, 503, "the outage is reported while it lasts");
    assert_eq!(still_down["checks"]["bus"]["status"], "down");

    redis.run();
    wait_for_health(&app, 200).await;
    // The same sockets and subscriptions deliver again, without reconnecting.
    let late = publish_until_every_subscriber_hears(&app, &mut heard, SUBSCRIBERS, "after").await;
    let mut during = late.iter().filter(|name| *name == "during").count();
    while let Ok((index, name)) = heard.try_recv() {
        let name = name.unwrap_or_else(|| panic!("subscriber {index} lost its connection"));
        during += usize::from(name == "during");
    }
    assert_eq!(
        during, SUBSCRIBERS,
        "the write acknowledged during the outage reached every subscriber once"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_socket_that_never_initialises_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.ws_init_timeout_secs = 1;
    let app = spawn_with(config, dir).await;
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    let closed = ws.next_json().await;
    assert!(
        closed.is_err(),
        "the server kept a silent socket open: {closed:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn account_team_and_membership_changes_reach_the_users_they_concern() {
    let app = spawn_app().await;
    let sign_up = |email: &'static str| app.signed_in(email);
    let ann = sign_up("ann@example.com").await;
    let bob = sign_up("bob@example.com").await;
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"Authorization": format!("Bearer {ann}")}))
        .await
        .expect("ack");
    ws.subscribe("1", "subscription { realtime(channels: [\"account\", \"teams\", \"memberships\"]) { events channels payload } }").await;
    // Live once Ann hears of her own change.
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    let mut n = 0;
    loop {
        n += 1;
        app.as_session(
            &ann,
            "mutation($n: String!) { updateName(input: {name: $n}) { name } }",
            json!({"n": format!("Ann {n}")}),
        )
        .await
        .ok();
        if let Some(message) = ws.socket_next_within_short_time().await {
            let event = realtime_event(&message);
            assert!(
                event["events"][0]
                    .as_str()
                    .unwrap()
                    .ends_with(".update.name"),
                "{event}"
            );
            assert!(
                event["channels"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("account"))
            );
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no account event reached Ann"
        );
    }
    while ws.socket_next_within_short_time().await.is_some() {}

    // Bob's changes are not Ann's business; her new team is.
    app.as_session(
        &bob,
        "mutation { updateName(input: {name: \"Bob\"}) { name } }",
        json!({}),
    )
    .await
    .ok();
    app.as_session(
        &ann,
        "mutation { createTeam(input: {id: \"crew\", name: \"Crew\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let mut names = Vec::new();
    while let Some(message) = ws.socket_next_within_short_time().await {
        let event = realtime_event(&message);
        names.push(event["events"][0].as_str().unwrap().to_string());
    }
    assert!(names.iter().any(|n| n == "teams.crew.create"), "{names:?}");
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("teams.crew.memberships.") && n.ends_with(".create")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .all(|n| !n.contains("users.") || !n.contains("bob")),
        "{names:?}"
    );
    let bob_id = app
        .as_session(&bob, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        names.iter().all(|n| !n.contains(&bob_id)),
        "Bob's change reached Ann: {names:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn presence_shows_who_is_on_a_channel_and_follows_their_state() {
    let app = spawn_app().await;
    app.post(json!({"query": "mutation { createAccount(input: {email: \"ann@example.com\", password: \"presence-password\"}) { id } }"}), &[]).await.ok();
    let signed = app
        .post(json!({"query": "mutation { createEmailPasswordSession(input: {email: \"ann@example.com\", password: \"presence-password\"}) { secret session { userId } } }"}), &[])
        .await
        .ok();
    let ann = signed["createEmailPasswordSession"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let ann_id = signed["createEmailPasswordSession"]["session"]["userId"]
        .as_str()
        .unwrap()
        .to_string();

    let mut watcher = WsClient::connect(&app.ws_url, false).await;
    watcher.init(json!({})).await.expect("ack");
    watcher
        .subscribe("w", "subscription { presenceChanged(channel: \"room-1\") { type presenceId userId state } }")
        .await;
    let mut present = WsClient::connect(&app.ws_url, true).await;
    present
        .init(json!({"Authorization": format!("Bearer {ann}")}))
        .await
        .expect("ack");
    present
        .subscribe("p", "subscription { presence(channel: \"room-1\", state: {typing: false}) { type userId state } }")
        .await;
    let event = |message: serde_json::Value| message["payload"]["data"]["presenceChanged"].clone();
    let joined = event(watcher.next_json().await.expect("a join"));
    assert_eq!(joined["type"], "JOIN");
    assert_eq!(joined["userId"], ann_id.as_str());
    assert_eq!(joined["state"], json!({"typing": false}));
    let own = present.next_json().await.expect("her own join");
    assert_eq!(own["payload"]["data"]["presence"]["type"], "JOIN", "{own}");

    let updated = app
        .as_session(&ann, "mutation { updatePresence(input: {channel: \"room-1\", state: {typing: true}}) { updatedCount } }", json!({}))
        .await
        .ok();
    assert_eq!(updated["updatePresence"]["updatedCount"], 1);
    let update = event(watcher.next_json().await.expect("an update"));
    assert_eq!(update["type"], "UPDATE");
    assert_eq!(update["state"], json!({"typing": true}));
    assert_eq!(update["presenceId"], joined["presenceId"]);

    // Closing the socket is leaving.
    drop(present);
    let left = event(watcher.next_json().await.expect("a leave"));
    assert_eq!(left["type"], "LEAVE");
    assert_eq!(left["presenceId"], joined["presenceId"]);

    let bad = app
        .post(json!({"query": "mutation { updatePresence(input: {channel: \"room-1\", state: null}) { updatedCount } }"}), &[])
        .await;
    assert_eq!(bad.code(), "UNAUTHENTICATED");
    app.shutdown().await;
}

/// Polls [`TestApp::metric`] until `done` holds for its value; fails after `crate::helpers::WAIT`.
async fn wait_for_metric(app: &TestApp, name: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    loop {
        let value = app.metric(name).await;
        if done(value) {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} stayed at {value}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// This process's resident memory in bytes; the servers of the tests run in it.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kilobytes: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kilobytes * 1024)
}

/// Raises this process's soft limit on open files towards `wanted` (as far as the
/// hard limit allows) and returns the limit in effect.
fn raise_open_file_limit(wanted: libc::rlim_t) -> libc::rlim_t {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < wanted {
            let raised = libc::rlimit {
                rlim_cur: wanted.min(limit.rlim_max),
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    limit.rlim_cur
}

/// A client that subscribes with `query` and then never reads. Its receive window
/// and segment size are small, so the server's socket buffers for it fill after
/// tens of kilobytes (loopback's defaults would take megabytes per client).
async fn non_reading_subscriber(app: &TestApp, query: &str) -> WsClient {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let stream = crate::helpers::small_window_connection(app).await;
    let mut request = app.ws_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    // The client's own buffers stay small too, so this process's memory shows the
    // server's share.
    let buffers = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let (socket, _) = tokio_tungstenite::client_async_with_config(
        request,
        tokio_tungstenite::MaybeTlsStream::Plain(stream),
        Some(buffers),
    )
    .await
    .expect("websocket connects");
    let mut ws = WsClient {
        socket,
        legacy: false,
    };
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    ws.subscribe("1", query).await;
    ws
}

/// How a non-reading client's connection looks once it reads again.
enum SlowClientEnd {
    /// A close frame: code and reason.
    Closed(u16, String),
    /// The connection ended without one (the server dropped it).
    Dropped,
}

/// Reads what the server sent until the connection ends, or `None` if it is still
/// open after `crate::helpers::WAIT`; also returns how many messages came first.
async fn read_to_the_end(mut ws: WsClient) -> (Option<SlowClientEnd>, usize) {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    let mut messages = 0;
    let reading = async {
        loop {
            match ws.socket.next().await {
                Some(Ok(Message::Text(_))) => messages += 1,
                Some(Ok(Message::Close(frame))) => {
                    return frame.map_or(SlowClientEnd::Dropped, |f| {
                        SlowClientEnd::Closed(u16::from(f.code), f.reason.to_string())
                    });
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => return SlowClientEnd::Dropped,
            }
        }
    };
    let end = tokio::time::timeout(crate::helpers::WAIT, reading)
        .await
        .ok();
    (end, messages)
}

#[tokio::test]
async fn clients_that_stop_reading_are_dropped_and_memory_stays_bounded() {
    const WANTED_CLIENTS: usize = 1000;
    // Each client holds two descriptors in this process (its end and the server's).
    let open_files = raise_open_file_limit(WANTED_CLIENTS as libc::rlim_t * 2 + 512);
    let clients = WANTED_CLIENTS.min((open_files.saturating_sub(512) / 2) as usize);
    if clients < WANTED_CLIENTS {
        eprintln!("only {clients} clients: the open-file limit is {open_files}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.ws_send_timeout_secs = 1;
    // Every client connects from this process's one address.
    config.max_connections_per_client = 0;
    config.ws_max_per_client = 0;
    let app = spawn_with(config, dir).await;
    let mut reader = subscribed(&app, &app.admin_key, false).await;
    first_event(&app, &mut reader, "warm-up").await;

    // Each event reaches a slow client as ~30 KB (90 copies of the key), so a few
    // fill its buffers.
    let copies: String = (0..90).map(|i| format!("p{i}: payload ")).collect();
    let fat_events = format!("subscription {{ realtime(channels: [\"keys\"]) {{ {copies} }} }}");
    let connections_before = app.metric("nimbus_websocket_connections").await;
    let subscriptions_before = app.metric("nimbus_subscriptions_active").await;
    let too_slow_before = app.metric("nimbus_websocket_too_slow_total").await;
    let memory_before = resident_bytes();
    let slow: Vec<WsClient> = {
        use futures_util::StreamExt as _;
        futures_util::stream::iter(0..clients)
            .map(|_| non_reading_subscriber(&app, &fat_events))
            .buffer_unordered(32)
            .collect()
            .await
    };
    // The gauge counts every test server in this process: others' subscriptions
    // may end meanwhile, so the count need not reach `before + clients` exactly.
    let margin = clients as f64 / 4.0;
    wait_for_metric(&app, "nimbus_subscriptions_active", |active| {
        active >= subscriptions_before + clients as f64 - margin
    })
    .await;

    // Publish until the server has given up on every slow client; the reading
    // subscriber gets each event meanwhile.
    let mut memory_peak = resident_bytes();
    let mut slowest_delivery = std::time::Duration::ZERO;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    for attempt in 1.. {
        let name = format!("{attempt:-<128}");
        let published = std::time::Instant::now();
        create_named_key(&app, &name).await;
        loop {
            let message = reader
                .next_json()
                .await
                .expect("the reader stays subscribed");
            if realtime_event(&message)["payload"]["name"] == name.as_str() {
                break;
            }
        }
        slowest_delivery = slowest_delivery.max(published.elapsed());
        memory_peak = memory_peak.max(resident_bytes());
        let dropped = app.metric("nimbus_websocket_too_slow_total").await - too_slow_before;
        if dropped >= clients as f64 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "only {dropped} of {clients} slow clients were dropped"
        );
    }
    assert!(
        slowest_delivery < std::time::Duration::from_secs(5),
        "the reading subscriber waited {slowest_delivery:?} for an event"
    );

    // Their connections and subscriptions are gone (other tests' may come and go).
    wait_for_metric(&app, "nimbus_websocket_connections", |open| {
        open <= connections_before + margin
    })
    .await;
    wait_for_metric(&app, "nimbus_subscriptions_active", |active| {
        active <= subscriptions_before + margin
    })
    .await;

    // Each slow client, reading at last, finds its connection ended.
    let ends: Vec<(Option<SlowClientEnd>, usize)> = {
        use futures_util::StreamExt as _;
        futures_util::stream::iter(slow)
            .map(read_to_the_end)
            .buffer_unordered(64)
            .collect()
            .await
    };
    let mut close_frames = 0;
    for (end, messages) in &ends {
        assert!(
            *messages > 0,
            "a slow client received nothing before the end"
        );
        match end {
            None => panic!("a slow client's connection is still open"),
            Some(SlowClientEnd::Closed(code, reason)) => {
                assert_eq!(*code, 4008, "{reason}");
                assert!(reason.starts_with("SUBSCRIBER_TOO_SLOW: "), "{reason}");
                close_frames += 1;
            }
            Some(SlowClientEnd::Dropped) => {}
        }
    }
    eprintln!(
        "{clients} slow clients dropped, {close_frames} with a close frame; slowest delivery to the reader {slowest_delivery:?}"
    );

    // Memory stayed bounded: a stuck connection holds the one message it is
    // writing (~30 KB, as JSON and as a frame) and its own state, whatever was
    // published after; here both ends of each connection live in this process.
    if let (Some(before), Some(peak)) = (memory_before, memory_peak) {
        let growth = peak.saturating_sub(before);
        eprintln!("resident memory grew by {} KiB", growth / 1024);
        assert!(
            growth < clients as u64 * 256 * 1024,
            "resident memory grew by {growth} bytes for {clients} slow clients"
        );
    }

    // The server still serves subscribers promptly afterwards.
    let id = create_named_key(&app, "after-the-slow-ones").await;
    loop {
        let message = reader
            .next_json()
            .await
            .expect("the reader stays subscribed");
        if realtime_event(&message)["payload"]["id"] == id.as_str() {
            break;
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn presences_of_a_replica_that_dies_leave_after_the_presence_timeout() {
    let Some(redis) = PrivateRedis::start() else {
        eprintln!("skipped: no redis-server on this machine");
        return;
    };
    let timeout = std::time::Duration::from_secs(2);
    let heartbeat = timeout / 4;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.redis_url = Some(redis.url());
    config.secret = Some("a-secret-both-replicas-of-this-test-share".into());
    config.presence_timeout_secs = timeout.as_secs();
    let first = spawn_with(config, dir).await;
    let mut second = ServeProcess::start(&first, ServeOptions::default()).await;

    let mut watcher = WsClient::connect(&first.ws_url, false).await;
    watcher.init(json!({})).await.expect("ack");
    watcher
        .subscribe(
            "w",
            "subscription { presenceChanged(channel: \"crash-room\") { type presenceId state } }",
        )
        .await;
    let mut present = WsClient::connect(&second.ws_url, false).await;
    present
        .init(json!({"X-Nimbus-Key": first.admin_key}))
        .await
        .expect("ack");
    present
        .subscribe(
            "p",
            "subscription { presence(channel: \"crash-room\", state: {on: \"second\"}) { type } }",
        )
        .await;
    let change = |message: serde_json::Value| message["payload"]["data"]["presenceChanged"].clone();
    let joined = change(watcher.next_json().await.expect("a join"));
    assert_eq!(joined["type"], "JOIN", "{joined}");
    assert_eq!(joined["state"], json!({"on": "second"}));

    // While the second replica lives, its heartbeats keep the presence on the first.
    let quiet = tokio::time::timeout(timeout * 2, watcher.next_json()).await;
    assert!(quiet.is_err(), "a live presence changed: {quiet:?}");

    second.kill();
    let killed = std::time::Instant::now();
    let left = change(watcher.next_json().await.expect("a leave"));
    let took = killed.elapsed();
    assert_eq!(left["type"], "LEAVE", "{left}");
    assert_eq!(left["presenceId"], joined["presenceId"]);
    // Not a goodbye (there was none) but the timeout: the last heartbeat came at
    // most one beat before the kill, and expiry runs once a beat.
    assert!(
        took >= timeout - heartbeat - std::time::Duration::from_millis(200),
        "LEAVE after {took:?}, before the presence timed out"
    );
    assert!(
        took <= timeout + heartbeat + std::time::Duration::from_secs(2),
        "LEAVE only after {took:?}"
    );
    drop(present);
    first.shutdown().await;
}

#[tokio::test]
async fn protocol_violations_close_with_the_graphql_ws_codes() {
    let app = spawn_app().await;
    // An operation before `connection_init`.
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.subscribe("1", KEY_EVENTS).await;
    let (code, _) = ws.next_json().await.expect_err("closed");
    assert_eq!(code, 4401);

    // A second `connection_init`.
    let mut ws = subscribed(&app, &app.admin_key, false).await;
    let (code, _) = ws.init(json!({})).await.expect_err("closed");
    assert_eq!(code, 4429);

    // An id that is still subscribed.
    let mut ws = subscribed(&app, &app.admin_key, false).await;
    ws.subscribe("1", KEY_EVENTS).await;
    let (code, reason) = ws.next_json().await.expect_err("closed");
    assert_eq!(code, 4409);
    assert!(reason.contains("1"), "{reason}");

    // After `complete` the id is free again, and the new subscription works.
    let mut ws = subscribed(&app, &app.admin_key, false).await;
    ws.send(json!({"type": "complete", "id": "1"})).await;
    let completed = ws.next_json().await.expect("complete");
    assert_eq!(completed, json!({"type": "complete", "id": "1"}));
    ws.subscribe("1", KEY_EVENTS).await;
    ws.ping_pong().await;
    create_named_key(&app, "after-complete").await;
    let message = ws.next_json().await.expect("an event");
    assert_eq!(message["id"], "1");
    assert_eq!(
        realtime_event(&message)["payload"]["name"],
        "after-complete"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_answer_too_large_for_one_event_is_refused_with_its_code() {
    let app = spawn_app().await;
    app.admin(
        "mutation { createDatabase(input: {id: \"big\", name: \"Big\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {"databaseId": "big", "id": "notes", "name": "notes", "permissions": [],
            "attributes": [{"key": "text", "type": "STRING", "size": 40000}]}}),
    )
    .await
    .ok();
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    // The payload a hundred times: some 4 MB for a 40 KB document.
    let aliases: String = (0..100).map(|n| format!(" a{n}: payload")).collect();
    ws.subscribe(
        "1",
        &format!("subscription {{ realtime(channels: [\"documents\"]) {{{aliases} }} }}"),
    )
    .await;
    let text = "x".repeat(40_000);
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    let message = loop {
        app.admin(
            "mutation($text: String!) { createDocument(input: {databaseId: \"big\", collectionId: \"notes\", data: {text: $text}}) { id } }",
            json!({"text": text}),
        )
        .await
        .ok();
        if let Some(message) = ws.socket_next_within_short_time().await {
            break message;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no answer reached the subscriber"
        );
    };
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"],
        "RESPONSE_TOO_LARGE",
        "{}",
        message.to_string().chars().take(400).collect::<String>()
    );
    app.shutdown().await;
}

/// Channels named whole cost an event one comparison each; channels with a `*`
/// segment are matched segment by segment, and a subscription gives at most ten
/// of them. Both kinds still match.
#[tokio::test]
async fn a_subscription_gives_at_most_ten_channels_with_a_wildcard() {
    let app = spawn_app().await;
    let subscription = |channels: &[String]| {
        format!(
            "subscription {{ realtime(channels: {}) {{ channels }} }}",
            serde_json::to_string(channels).unwrap()
        )
    };
    let patterns: Vec<String> = (0..11).map(|n| format!("keys.*.x{n}")).collect();
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    ws.subscribe("many", &subscription(&patterns)).await;
    let refused = ws.next_json().await.expect("an answer");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "INVALID_CHANNEL",
        "{refused}"
    );
    assert_eq!(ws.next_json().await.expect("complete")["type"], "complete");

    // Ten patterns (one of which matches) and 90 names (none of which do).
    let mut channels: Vec<String> = (0..9).map(|n| format!("keys.*.x{n}")).collect();
    channels.push("keys.*".into());
    channels.extend((0..90).map(|n| format!("keys.k{n}")));
    ws.subscribe("patterns", &subscription(&channels)).await;
    let message = first_event(&app, &mut ws, "by-pattern").await;
    assert_eq!(message["id"], "patterns", "{message}");

    // Names alone, the one that matches given twice.
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    let names: Vec<String> = ["keys.none", "keys", "keys"].map(String::from).to_vec();
    ws.subscribe("names", &subscription(&names)).await;
    let message = first_event(&app, &mut ws, "by-name").await;
    assert_eq!(message["id"], "names", "{message}");
    assert_eq!(realtime_event(&message)["channels"][0], "keys", "{message}");
    app.shutdown().await;
}

/// Appwrite's realtime queries: a subscription on one collection's documents
/// hears only the changes to documents that match its queries, before or after
/// the change (one entering or leaving the set is heard too).
#[tokio::test]
async fn realtime_queries_deliver_only_the_documents_they_match() {
    let app = spawn_app().await;
    app.admin(
        "mutation { createDatabase(input: {id: \"live\", name: \"Live\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for id in ["posts", "notes"] {
        app.admin(
            "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
            json!({"input": {
                "databaseId": "live", "id": id, "name": id, "permissions": ["read(\"any\")"],
                "attributes": [
                    {"key": "title", "type": "STRING", "size": 50, "required": true},
                    {"key": "views", "type": "INTEGER", "default": 0}
                ],
            }}),
        )
        .await
        .ok();
    }
    // A vault nobody but keys reads, which posts may point at.
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "live", "id": "vault", "name": "vault",
            "attributes": [{"key": "secret", "type": "STRING", "size": 50}],
        }}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }",
        json!({"input": {
            "databaseId": "live", "collectionId": "posts", "key": "vault",
            "relatedCollectionId": "vault", "type": "MANY_TO_ONE", "onDelete": "SET_NULL"
        }}),
    )
    .await
    .ok();
    let popular =
        json!({"method": "greaterThan", "attribute": "views", "values": [10]}).to_string();
    let subscription = "subscription($channels: [String!]!, $queries: [String!]) { realtime(channels: $channels, queries: $queries) { events payload } }";
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({})).await.expect("ack");
    let start = |id: &str, channels: Value, queries: Value| json!({"id": id, "type": "subscribe", "payload": {"query": subscription, "variables": {"channels": channels, "queries": queries}}});
    // Refused: other channels beside the collection's documents, a page, an
    // unknown attribute, a condition across a relationship.
    for (channels, queries, code) in [
        (json!(["files"]), json!([popular]), "QUERY_INVALID"),
        (
            json!([
                "databases.live.collections.posts.documents",
                "databases.live.collections.notes.documents"
            ]),
            json!([popular]),
            "QUERY_INVALID",
        ),
        (
            json!(["databases.live.collections.*.documents"]),
            json!([popular]),
            "QUERY_INVALID",
        ),
        (
            json!(["databases.live.collections.posts.documents"]),
            json!([json!({"method": "limit", "values": [5]}).to_string()]),
            "QUERY_INVALID",
        ),
        (
            json!(["databases.live.collections.posts.documents"]),
            json!([json!({"method": "equal", "attribute": "nope", "values": [1]}).to_string()]),
            "FILTER_UNKNOWN_FIELD",
        ),
        // No condition on a relationship, as a typed subscription's filter:
        // one on a reference would go on comparing it whoever may read it by
        // then (here: nobody but keys).
        (
            json!(["databases.live.collections.posts.documents"]),
            json!([json!({"method": "equal", "attribute": "vault", "values": ["v1"]}).to_string()]),
            "FILTER_INVALID",
        ),
        (
            json!(["databases.live.collections.posts.documents"]),
            json!([json!({"method": "isNull", "attribute": "vault"}).to_string()]),
            "FILTER_INVALID",
        ),
        (
            json!(["databases.live.collections.posts.documents"]),
            json!([
                json!({"method": "equal", "attribute": "vault.secret", "values": ["x"]})
                    .to_string()
            ]),
            "FILTER_INVALID",
        ),
        // Nor is a collection it may read nothing of.
        (
            json!(["databases.live.collections.vault.documents"]),
            json!([json!({"method": "equal", "attribute": "secret", "values": ["x"]}).to_string()]),
            "PERMISSION_DENIED",
        ),
    ] {
        ws.send(start("bad", channels.clone(), queries)).await;
        let refused = ws.next_json().await.expect("an answer");
        assert_eq!(
            refused["payload"]["errors"][0]["extensions"]["code"], code,
            "{channels}: {refused}"
        );
        assert_eq!(ws.next_json().await.expect("complete")["type"], "complete");
    }
    ws.send(start(
        "popular",
        json!(["databases.live.collections.posts.documents"]),
        json!([popular]),
    ))
    .await;
    ws.ping_pong().await;
    let write = |query: &'static str, variables: Value| {
        let app = &app;
        async move { app.admin(query, variables).await.ok() }
    };
    let create = "mutation($c: ID!, $id: ID!, $views: Int!) { createDocument(input: {databaseId: \"live\", collectionId: $c, id: $id, data: {title: \"t\", views: $views}}) { id } }";
    let update = "mutation($id: ID!, $views: Int!) { updateDocument(input: {databaseId: \"live\", collectionId: \"posts\", id: $id, data: {views: $views}}) { id } }";
    let delete = "mutation($id: ID!) { deleteDocument(input: {databaseId: \"live\", collectionId: \"posts\", id: $id}) { deletedId } }";
    write(create, json!({"c": "posts", "id": "quiet", "views": 5})).await;
    write(create, json!({"c": "posts", "id": "hit", "views": 50})).await;
    write(
        create,
        json!({"c": "notes", "id": "elsewhere", "views": 99}),
    )
    .await;
    write(update, json!({"id": "quiet", "views": 20})).await;
    write(update, json!({"id": "hit", "views": 1})).await;
    write(update, json!({"id": "hit", "views": 2})).await;
    write(delete, json!({"id": "quiet"})).await;
    write(create, json!({"c": "posts", "id": "last", "views": 100})).await;
    let mut heard = Vec::new();
    while heard.len() < 5 {
        let message = ws.next_json().await.expect("an event");
        assert_eq!(message["id"], "popular", "{message}");
        let event = realtime_event(&message);
        let action = event["events"][0]
            .as_str()
            .unwrap()
            .rsplit('.')
            .next()
            .unwrap()
            .to_string();
        heard.push((
            event["payload"]["$id"].as_str().unwrap().to_string(),
            action,
        ));
    }
    let expected: Vec<(String, String)> = [
        ("hit", "create"),
        ("quiet", "update"),
        ("hit", "update"),
        ("quiet", "delete"),
        ("last", "create"),
    ]
    .iter()
    .map(|(id, action)| (id.to_string(), action.to_string()))
    .collect();
    assert_eq!(heard, expected);
    app.shutdown().await;
}
