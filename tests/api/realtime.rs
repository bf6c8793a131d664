//! Subscriptions over both WebSocket subprotocols, across replicas, and through a
//! Redis outage.

use serde_json::json;

use crate::helpers::{
    TestApp, WsClient, from_server, spawn_app, spawn_with, test_config, test_redis,
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
            json!([format!("keys.{id}.create"), "keys.*.create"])
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
    assert_eq!(code, 1002);
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
    assert_eq!(code, 1002);
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
struct PrivateRedis {
    binary: String,
    port: u16,
    dir: tempfile::TempDir,
    child: Option<std::process::Child>,
}

impl PrivateRedis {
    fn start() -> Option<PrivateRedis> {
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

    fn run(&mut self) {
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

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn url(&self) -> String {
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

async fn wait_for_health(app: &TestApp, status: u16) -> serde_json::Value {
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

#[tokio::test]
async fn subscriptions_survive_a_redis_restart() {
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("skipped: no redis-server on this machine");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.redis_url = Some(redis.url());
    let app = spawn_with(config, dir).await;
    let mut ws = subscribed(&app, &app.admin_key, false).await;
    first_event(&app, &mut ws, "before").await;
    assert_eq!(health(&app).await.0, 200);

    redis.stop();
    let down = wait_for_health(&app, 503).await;
    assert_eq!(down["checks"]["bus"]["status"], "down");
    assert_eq!(down["checks"]["database"]["status"], "up");
    // Queries and writes go on; their events are lost while Redis is away.
    app.admin("{ apiKeys { totalCount } }", json!({}))
        .await
        .ok();
    create_named_key(&app, "during").await;

    redis.run();
    wait_for_health(&app, 200).await;
    // The same socket and subscription deliver again, without reconnecting.
    loop {
        let message = first_event(&app, &mut ws, "after").await;
        if realtime_event(&message)["payload"]["name"] == "after" {
            break;
        }
    }
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
    let sign_up = |email: &'static str| {
        let app = &app;
        async move {
            app.post(json!({"query": "mutation($e: String!) { createAccount(input: {email: $e, password: \"realtime-password\"}) { id } }", "variables": {"e": email}}), &[]).await.ok();
            let signed = app
                .post(json!({"query": "mutation($e: String!) { createEmailPasswordSession(input: {email: $e, password: \"realtime-password\"}) { secret } }", "variables": {"e": email}}), &[])
                .await
                .ok();
            signed["createEmailPasswordSession"]["secret"]
                .as_str()
                .unwrap()
                .to_string()
        }
    };
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
                event["events"][0].as_str().unwrap().ends_with(".update"),
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
