//! Credentials are checked for every operation, not once per connection: an open
//! WebSocket stops acting the moment its session, user, key or JWT stops holding
//! (signed out, blocked, deleted, expired), on every replica and across a bus gap;
//! operations on it see the caller's current roles; HTTP honours expiry to the
//! instant; and a cookie-authenticated socket is the project's own page's.

use std::time::Duration;

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderName;

use crate::helpers::{TestApp, WsClient, from_server, spawn_app, spawn_with, test_config};
use crate::realtime::{PrivateRedis, wait_for_health};

/// A signed-in user: session secret, session id and user id.
struct Signed {
    secret: String,
    session_id: String,
    user_id: String,
}

async fn sign_up(app: &TestApp, email: &str, project: &str) -> Signed {
    let headers = [("x-nimbus-project", project)];
    app.post(json!({"query": "mutation($e: String!) { createAccount(input: {email: $e, password: \"socket-password\"}) { id } }", "variables": {"e": email}}), &headers)
        .await
        .ok();
    sign_in(app, email, project).await
}

/// Signs `email` (signed up by [`sign_up`]) in again: a new session.
async fn sign_in(app: &TestApp, email: &str, project: &str) -> Signed {
    let signed = app
        .post(json!({"query": "mutation($e: String!) { createEmailPasswordSession(input: {email: $e, password: \"socket-password\"}) { secret session { id userId } } }", "variables": {"e": email}}), &[("x-nimbus-project", project)])
        .await
        .ok()["createEmailPasswordSession"]
        .clone();
    Signed {
        secret: signed["secret"].as_str().unwrap().to_string(),
        session_id: signed["session"]["id"].as_str().unwrap().to_string(),
        user_id: signed["session"]["userId"].as_str().unwrap().to_string(),
    }
}

/// A socket initialised with `payload`.
async fn socket(url: &str, payload: Value) -> WsClient {
    let mut ws = WsClient::connect(url, false).await;
    let ack = ws.init(payload).await.expect("ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws
}

fn bearer(secret: &str) -> Value {
    json!({"Authorization": format!("Bearer {secret}")})
}

/// Runs `query` on the socket as operation `id`; returns its result.
async fn query(ws: &mut WsClient, id: &str, query: &str) -> Value {
    ws.subscribe(id, query).await;
    let result = ws.next_json().await.expect("a result");
    assert_eq!(result["id"], id, "{result}");
    let complete = ws.next_json().await.expect("complete");
    assert_eq!(complete["type"], "complete", "{complete}");
    result["payload"].clone()
}

/// [`query`] on a socket whose credential may expire meanwhile: `None` when the
/// socket closed or the operation did not answer normally.
async fn try_query(ws: &mut WsClient, id: &str, query: &str) -> Option<Value> {
    ws.subscribe(id, query).await;
    let result = ws.next_json().await.ok()?;
    if result["id"] != id || result["type"] != "next" {
        return None;
    }
    let complete = ws.next_json().await.ok()?;
    (complete["type"] == "complete").then(|| result["payload"].clone())
}

/// Reads the socket to its close: the messages before it, and the close frame.
async fn read_to_close(ws: &mut WsClient) -> (Vec<Value>, (u16, String)) {
    let mut messages = Vec::new();
    loop {
        match ws.next_json().await {
            Ok(message) => messages.push(message),
            Err(close) => return (messages, close),
        }
    }
}

/// The socket closes with 4403 and a reason starting `code: `.
async fn assert_closed_with(ws: &mut WsClient, code: &str) -> Vec<Value> {
    let (messages, (close, reason)) = read_to_close(ws).await;
    assert_eq!(close, 4403, "{reason} after {messages:?}");
    assert!(
        reason.starts_with(&format!("{code}: ")),
        "{reason} after {messages:?}"
    );
    messages
}

/// Subscription `id` ended with an error coded `code`, then `complete`.
fn assert_ended(messages: &[Value], id: &str, code: &str) {
    let error = messages
        .iter()
        .find(|m| m["id"] == id && m["type"] == "next" && m["payload"]["errors"].is_array())
        .unwrap_or_else(|| panic!("no error for {id}: {messages:?}"));
    assert_eq!(
        error["payload"]["errors"][0]["extensions"]["code"], code,
        "{error}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m["id"] == id && m["type"] == "complete"),
        "{messages:?}"
    );
}

const PRESENCE: &str = "subscription { presence(channel: \"room\") { type presenceId userId } }";
const WATCH_ROOM: &str =
    "subscription { presenceChanged(channel: \"room\") { type presenceId userId } }";

/// A watcher of the `room` presence channel, and the JOIN of `user_id` seen there.
async fn watch_room_until_join(ws: &mut WsClient, user_id: &str) {
    ws.subscribe("w", WATCH_ROOM).await;
    loop {
        let message = ws.next_json().await.expect("a presence event");
        let event = &message["payload"]["data"]["presenceChanged"];
        if event["type"] == "JOIN" && event["userId"] == user_id {
            return;
        }
    }
}

async fn assert_leaves(ws: &mut WsClient, user_id: &str) {
    loop {
        let message = ws.next_json().await.expect("a presence event");
        let event = &message["payload"]["data"]["presenceChanged"];
        if event["type"] == "LEAVE" && event["userId"] == user_id {
            return;
        }
    }
}

#[tokio::test]
async fn signing_out_closes_the_sockets_of_the_session_and_their_presences_leave() {
    let app = spawn_app().await;
    let ann = sign_up(&app, "ann@example.com", "default").await;
    let mut present = socket(&app.ws_url, bearer(&ann.secret)).await;
    present.subscribe("p", PRESENCE).await;
    let mut idle = socket(&app.ws_url, bearer(&ann.secret)).await;
    let mut watcher = socket(&app.ws_url, json!({})).await;
    watch_room_until_join(&mut watcher, &ann.user_id).await;
    // The socket answers as Ann until she signs out.
    let me = query(&mut idle, "q", "{ account { id } }").await;
    assert_eq!(me["data"]["account"]["id"], ann.user_id.as_str());

    app.as_session(
        &ann.secret,
        "mutation { deleteSession(input: {id: \"current\"}) { __typename } }",
        json!({}),
    )
    .await
    .ok();
    let messages = assert_closed_with(&mut present, "INVALID_SESSION").await;
    assert_ended(&messages, "p", "INVALID_SESSION");
    assert_closed_with(&mut idle, "INVALID_SESSION").await;
    assert_leaves(&mut watcher, &ann.user_id).await;
    app.shutdown().await;
}

#[tokio::test]
async fn signing_out_everywhere_blocking_or_deleting_the_user_closes_their_sockets() {
    let app = spawn_app().await;
    let ann = sign_up(&app, "ann@example.com", "default").await;
    let mut ws = socket(&app.ws_url, bearer(&ann.secret)).await;
    ws.subscribe("p", PRESENCE).await;
    app.admin(
        "mutation($id: ID!) { deleteUserSessions(input: {userId: $id}) { __typename } }",
        json!({"id": ann.user_id}),
    )
    .await
    .ok();
    let messages = assert_closed_with(&mut ws, "INVALID_SESSION").await;
    assert_ended(&messages, "p", "INVALID_SESSION");

    let bob = sign_up(&app, "bob@example.com", "default").await;
    let mut ws = socket(&app.ws_url, bearer(&bob.secret)).await;
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, blocked: true}) { id } }",
        json!({"id": bob.user_id}),
    )
    .await
    .ok();
    assert_closed_with(&mut ws, "USER_BLOCKED").await;

    let cat = sign_up(&app, "cat@example.com", "default").await;
    let mut ws = socket(&app.ws_url, bearer(&cat.secret)).await;
    app.admin(
        "mutation($id: ID!) { deleteUser(input: {id: $id}) { __typename } }",
        json!({"id": cat.user_id}),
    )
    .await
    .ok();
    assert_closed_with(&mut ws, "INVALID_SESSION").await;
    app.shutdown().await;
}

async fn key_expiring_at(
    app: &TestApp,
    expires_at: Option<chrono::DateTime<chrono::Utc>>,
) -> (String, String) {
    let created = app
        .admin(
            "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id } } }",
            json!({"input": {"name": "socket", "scopes": ["keys.read"], "expiresAt": expires_at.map(|t| t.to_rfc3339())}}),
        )
        .await
        .ok();
    (
        created["createApiKey"]["secret"]
            .as_str()
            .unwrap()
            .to_string(),
        created["createApiKey"]["apiKey"]["id"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

/// The secret of a new key expiring at `expires`; `None` when the machine was so
/// slow that the instant passed before the key was created (it is then refused).
async fn try_key_expiring_at(
    app: &TestApp,
    expires: chrono::DateTime<chrono::Utc>,
) -> Option<String> {
    let created = app
        .admin(
            "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }",
            json!({"input": {"name": "socket", "scopes": ["keys.read"], "expiresAt": expires.to_rfc3339()}}),
        )
        .await;
    if created.body["errors"].is_array() {
        assert!(chrono::Utc::now() >= expires, "{:?}", created.body);
        return None;
    }
    created.body["data"]["createApiKey"]["secret"]
        .as_str()
        .map(str::to_string)
}

/// Waits until the wall clock has passed `at`.
async fn pass(at: chrono::DateTime<chrono::Utc>) {
    let left = (at - chrono::Utc::now()).num_milliseconds();
    if left >= 0 {
        tokio::time::sleep(Duration::from_millis(left as u64 + 1)).await;
    }
}

#[tokio::test]
async fn a_deleted_or_expired_key_closes_its_sockets_at_once() {
    let app = spawn_app().await;
    let (secret, id) = key_expiring_at(&app, None).await;
    let mut ws = socket(&app.ws_url, json!({"X-Nimbus-Key": secret})).await;
    ws.subscribe(
        "1",
        "subscription { realtime(channels: [\"keys\"]) { events } }",
    )
    .await;
    app.admin(
        "mutation($id: ID!) { deleteApiKey(input: {id: $id}) { deletedId } }",
        json!({"id": id}),
    )
    .await
    .ok();
    let messages = assert_closed_with(&mut ws, "INVALID_API_KEY").await;
    assert_ended(&messages, "1", "INVALID_API_KEY");

    // Expiry needs no event: the connection's timer closes an idle socket. The key
    // must be created, its socket opened and used before it expires; a round in
    // which the machine was too slow for that proves nothing and is tried again
    // with more room (a new key), so the close is still timed against the key's
    // own expiry instant.
    let mut room = chrono::Duration::milliseconds(1500);
    for round in 0.. {
        let expires = chrono::Utc::now() + room;
        let created = try_key_expiring_at(&app, expires).await;
        let mut ws = WsClient::connect(&app.ws_url, false).await;
        let before = match created {
            Some(secret) => match ws.init(json!({"X-Nimbus-Key": secret})).await {
                Ok(ack) if ack["type"] == "connection_ack" => {
                    try_query(&mut ws, "q", "{ apiKeys { totalCount } }").await
                }
                _ => None,
            },
            None => None,
        };
        if chrono::Utc::now() >= expires {
            assert!(round < 4, "never used the key within {room}");
            room = room * 2;
            continue;
        }
        let before = before.expect("the socket was accepted before the key expired");
        assert!(before["errors"].is_null(), "{before}");
        assert_closed_with(&mut ws, "API_KEY_EXPIRED").await;
        assert!(
            chrono::Utc::now() >= expires,
            "closed before the key expired"
        );
        assert!(
            chrono::Utc::now() < expires + chrono::Duration::seconds(2),
            "closed long after the key expired"
        );
        break;
    }
    app.shutdown().await;
}

fn state(app: &TestApp) -> &nimbus::AppState {
    app.server.as_ref().unwrap().state()
}

/// Moves a session's expiry (no operation shortens one; an expiry that arrives is
/// the same to the server).
async fn expire_session_at(app: &TestApp, session_id: &str, at: chrono::DateTime<chrono::Utc>) {
    sqlx::query("UPDATE sessions SET expires_at = ? WHERE id = ?")
        .bind(at.timestamp_millis())
        .bind(session_id)
        .execute(state(app).db.pool())
        .await
        .unwrap();
}

#[tokio::test]
async fn an_expiring_session_or_jwt_closes_its_socket_when_it_expires() {
    let app = spawn_app().await;
    // The socket must be open and subscribed before the credential expires; a
    // round in which the machine was too slow for that proves nothing and is
    // tried again with more room and a new session (or JWT). The close is timed
    // against the credential's own expiry instant.
    sign_up(&app, "ann@example.com", "default").await;
    let mut room = chrono::Duration::milliseconds(1500);
    for round in 0.. {
        let ann = sign_in(&app, "ann@example.com", "default").await;
        let expires = chrono::Utc::now() + room;
        expire_session_at(&app, &ann.session_id, expires).await;
        let mut ws = WsClient::connect(&app.ws_url, false).await;
        let acked = ws
            .init(bearer(&ann.secret))
            .await
            .is_ok_and(|ack| ack["type"] == "connection_ack");
        if acked {
            ws.subscribe("p", PRESENCE).await;
        }
        // The subscription's first answer (the presence JOIN) says it started.
        let started = acked && ws.next_json().await.is_ok_and(|m| m["type"] == "next");
        if chrono::Utc::now() >= expires {
            assert!(round < 4, "never subscribed within {room}");
            room = room * 2;
            continue;
        }
        assert!(started, "the subscription did not start before the expiry");
        let messages = assert_closed_with(&mut ws, "SESSION_EXPIRED").await;
        assert_ended(&messages, "p", "SESSION_EXPIRED");
        assert!(chrono::Utc::now() >= expires);
        break;
    }

    let bob = sign_up(&app, "bob@example.com", "default").await;
    let mut lifetime = 2;
    for round in 0.. {
        let now = chrono::Utc::now().timestamp() as u64;
        let jwt = state(&app)
            .jwt
            .issue("default", &bob.user_id, &bob.session_id, now, lifetime);
        let expires = chrono::DateTime::from_timestamp((now + lifetime) as i64, 0).unwrap();
        let mut ws = WsClient::connect(&app.ws_url, false).await;
        let acked = ws
            .init(bearer(&jwt))
            .await
            .is_ok_and(|ack| ack["type"] == "connection_ack");
        let me = if acked {
            try_query(&mut ws, "q", "{ account { id } }").await
        } else {
            None
        };
        if chrono::Utc::now() >= expires {
            assert!(round < 4, "never used the JWT within {lifetime} s");
            lifetime *= 2;
            continue;
        }
        let me = me.expect("the socket was accepted before the JWT expired");
        assert_eq!(me["data"]["account"]["id"], bob.user_id.as_str());
        assert_closed_with(&mut ws, "JWT_EXPIRED").await;
        assert!(chrono::Utc::now() >= expires);
        break;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn http_requests_honour_key_session_and_jwt_expiry_to_the_instant() {
    let app = spawn_app().await;
    let ann = sign_up(&app, "ann@example.com", "default").await;
    sign_up(&app, "carl@example.com", "default").await;
    // A key and a session of Carl's end at the same instant, set once the slow
    // sign-ups are done, and both are loaded (and cached) before it. A round in
    // which the machine was too slow to load them before that instant proves
    // nothing: it is tried again with more room, with a new key and session.
    let mut room = chrono::Duration::milliseconds(1200);
    for round in 0.. {
        let carl = sign_in(&app, "carl@example.com", "default").await;
        let expires = chrono::Utc::now() + room;
        let key = try_key_expiring_at(&app, expires).await;
        expire_session_at(&app, &carl.session_id, expires).await;
        let by_key = match &key {
            Some(key) => Some(
                app.as_key(key, "default", "{ apiKeys { totalCount } }", json!({}))
                    .await,
            ),
            None => None,
        };
        let by_session = app
            .as_session(&carl.secret, "{ account { id } }", json!({}))
            .await;
        if chrono::Utc::now() >= expires {
            assert!(round < 4, "never loaded the credentials within {room}");
            room = room * 2;
            continue;
        }
        by_key.expect("a key created before its expiry").ok();
        by_session.ok();
        let key = key.unwrap();

        pass(expires).await;
        let answer = app
            .as_key(&key, "default", "{ apiKeys { totalCount } }", json!({}))
            .await;
        assert_eq!(answer.code(), "API_KEY_EXPIRED", "{:?}", answer.body);
        let answer = app
            .as_session(&carl.secret, "{ account { id } }", json!({}))
            .await;
        assert_eq!(answer.code(), "SESSION_EXPIRED", "{:?}", answer.body);
        break;
    }

    let now = chrono::Utc::now().timestamp() as u64;
    let jwt = state(&app)
        .jwt
        .issue("default", &ann.user_id, &ann.session_id, now, 1);
    let jwt_expires = chrono::DateTime::from_timestamp(now as i64 + 1, 0).unwrap();
    pass(jwt_expires).await;
    let answer = app.as_session(&jwt, "{ account { id } }", json!({})).await;
    assert_eq!(answer.code(), "JWT_EXPIRED", "{:?}", answer.body);
    app.shutdown().await;
}

/// A database with `crewdocs` readable by team `crew` and `vipdocs` by label `vip`,
/// one document `d1` in each.
async fn guarded_documents(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"vault\", name: \"Vault\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for (id, role) in [("crewdocs", "team:crew"), ("vipdocs", "label:vip")] {
        app.admin(
            "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
            json!({"input": {
                "databaseId": "vault", "id": id, "name": id,
                "permissions": [format!("read(\"{role}\")")],
                "attributes": [{"key": "text", "type": "STRING", "size": 20}]
            }}),
        )
        .await
        .ok();
        create_document(app, id, "d1").await;
    }
}

async fn create_document(app: &TestApp, collection: &str, id: &str) {
    app.admin(
        "mutation($c: ID!, $id: ID!) { createDocument(input: {databaseId: \"vault\", collectionId: $c, id: $id, data: {text: \"secret\"}}) { id } }",
        json!({"c": collection, "id": id}),
    )
    .await
    .ok();
}

async fn sees(ws: &mut WsClient, collection: &str) -> bool {
    let query_text = format!(
        "{{ document(databaseId: \"vault\", collectionId: \"{collection}\", id: \"d1\") {{ id }} }}"
    );
    let result = query(ws, "q", &query_text).await;
    assert!(result["errors"].is_null(), "{result}");
    !result["data"]["document"].is_null()
}

#[tokio::test]
async fn operations_on_an_open_socket_get_the_callers_current_roles() {
    let app = spawn_app().await;
    guarded_documents(&app).await;
    let ann = sign_up(&app, "ann@example.com", "default").await;
    app.as_session(
        &ann.secret,
        "mutation { createTeam(input: {id: \"crew\", name: \"Crew\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    // A socket running only queries, not listening to the bus.
    let mut ws = socket(&app.ws_url, bearer(&ann.secret)).await;
    assert!(sees(&mut ws, "crewdocs").await);
    assert!(!sees(&mut ws, "vipdocs").await);
    // Another with a subscription resolved as a stream, and one that follows the
    // team's documents (live once it delivers one), running while the roles change.
    let mut events = socket(&app.ws_url, bearer(&ann.secret)).await;
    events.subscribe("p", PRESENCE).await;
    let joined = events.next_json().await.expect("own join");
    assert_eq!(joined["id"], "p");
    events
        .subscribe("r", "subscription { realtime(channels: [\"databases.vault.collections.crewdocs.documents\", \"account\"]) { events payload } }")
        .await;
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    for n in 0.. {
        create_document(&app, "crewdocs", &format!("live{n}")).await;
        if events.socket_next_within_short_time().await.is_some() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the subscription never went live"
        );
    }
    while events.socket_next_within_short_time().await.is_some() {}

    let memberships = app
        .admin("{ memberships(teamId: \"crew\") { id } }", json!({}))
        .await
        .ok();
    let membership = memberships["memberships"][0]["id"].as_str().unwrap();
    app.admin(
        "mutation($m: ID!) { deleteMembership(input: {teamId: \"crew\", membershipId: $m}) { __typename } }",
        json!({"m": membership}),
    )
    .await
    .ok();
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, labels: [\"vip\"]}) { id } }",
        json!({"id": ann.user_id}),
    )
    .await
    .ok();
    // The very next operations on the socket see the change.
    assert!(
        !sees(&mut ws, "crewdocs").await,
        "a removed member still reads the team's documents"
    );
    assert!(sees(&mut ws, "vipdocs").await, "a new label did not apply");
    // The running subscription no longer delivers the team's documents: the one
    // created next is skipped, and Ann's own change after it arrives.
    create_document(&app, "crewdocs", "after").await;
    app.as_session(
        &ann.secret,
        "mutation { updateName(input: {name: \"Marker\"}) { name } }",
        json!({}),
    )
    .await
    .ok();
    loop {
        let message = events.next_json().await.expect("an event");
        let event = &message["payload"]["data"]["realtime"];
        assert_ne!(event["payload"]["$id"], "after", "{message}");
        assert!(
            !event["events"][0]
                .as_str()
                .unwrap_or_default()
                .contains("crewdocs"),
            "{message}"
        );
        if event["payload"]["name"] == "Marker" {
            break;
        }
    }
    app.shutdown().await;
}

/// A second replica of `first`, in this process, on the same database and Redis.
async fn second_replica(first: &TestApp) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = first.config.clone();
    config.data_dir = dir.path().to_path_buf();
    config.database_url = Some(first.config.effective_database_url());
    let server = nimbus::Server::start(config.clone())
        .await
        .expect("second replica starts");
    from_server(server, first.admin_key.clone(), config, dir)
}

#[tokio::test]
async fn a_change_made_while_the_bus_was_down_reaches_every_replica_when_it_returns() {
    let Some(mut redis) = PrivateRedis::start() else {
        eprintln!("skipped: no redis-server on this machine");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.redis_url = Some(redis.url());
    config.secret = Some(nimbus::db::ids::generate().repeat(3));
    let first = spawn_with(config, dir).await;
    let second = second_replica(&first).await;
    let ann = sign_up(&first, "ann@example.com", "default").await;
    let bob = sign_up(&first, "bob@example.com", "default").await;

    // A change on one replica reaches sockets on the other through the bus.
    let mut ws = socket(&second.ws_url, bearer(&bob.secret)).await;
    first
        .admin(
            "mutation($id: ID!) { updateUser(input: {id: $id, blocked: true}) { id } }",
            json!({"id": bob.user_id}),
        )
        .await
        .ok();
    assert_closed_with(&mut ws, "USER_BLOCKED").await;

    // Ann is cached on the second replica, and has a socket there.
    second
        .as_session(&ann.secret, "{ account { id } }", json!({}))
        .await
        .ok();
    let mut ws = socket(&second.ws_url, bearer(&ann.secret)).await;
    redis.stop();
    wait_for_health(&first, 503).await;
    wait_for_health(&second, 503).await;
    first
        .admin(
            "mutation($id: ID!) { updateUser(input: {id: $id, blocked: true}) { id } }",
            json!({"id": ann.user_id}),
        )
        .await
        .ok();
    redis.run();
    // No event said so, but once the bus is back the socket re-checks.
    assert_closed_with(&mut ws, "USER_BLOCKED").await;
    let answer = second
        .as_session(&ann.secret, "{ account { id } }", json!({}))
        .await;
    assert_eq!(answer.code(), "USER_BLOCKED", "{:?}", answer.body);
    second.shutdown().await;
    first.shutdown().await;
}

/// Connects with extra upgrade headers; `Err` holds the refusal's status and body.
async fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<WsClient, (u16, Value)> {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    for (name, value) in headers {
        request.headers_mut().insert(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(WsClient {
            socket,
            legacy: false,
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_ref()
                .and_then(|b| serde_json::from_slice(b).ok())
                .unwrap_or(Value::Null);
            Err((status, body))
        }
        Err(err) => panic!("connect failed: {err}"),
    }
}

#[tokio::test]
async fn cookie_sessions_open_sockets_of_any_project_from_its_own_origins_only() {
    let app = spawn_app().await;
    app.create_project("other").await;
    let ann = sign_up(&app, "ann@example.com", "other").await;
    let cookie = format!("nimbus_session_other={}", ann.secret);
    let url = format!("{}?project=other", app.ws_url);

    // The project's cookie, from a non-browser client, the server's own page or
    // an allowed host's.
    let own_origin = app.url.clone();
    for headers in [
        vec![("cookie", cookie.as_str())],
        vec![("cookie", cookie.as_str()), ("origin", own_origin.as_str())],
        vec![
            ("cookie", cookie.as_str()),
            ("origin", "http://localhost:5173"),
        ],
    ] {
        let mut ws = connect_with(&url, &headers).await.expect("upgraded");
        let ack = ws.init(json!({})).await.expect("ack");
        assert_eq!(ack["type"], "connection_ack");
        let me = query(&mut ws, "q", "{ account { id } }").await;
        assert_eq!(
            me["data"]["account"]["id"],
            ann.user_id.as_str(),
            "{headers:?}: {me}"
        );
    }

    // From another site's page, the cookie opens nothing.
    let (status, body) = connect_with(
        &url,
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(status, 403);
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "ORIGIN_NOT_ALLOWED",
        "{body}"
    );
    // Unless the project allows that origin.
    app.admin(
        "mutation { updateProjectAuth(input: {projectId: \"other\", redirectHosts: [\"localhost\", \"evil.example\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    connect_with(
        &url,
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await
    .expect("an allowed origin");

    // A credential in connection_init is the page's own: no origin check.
    let mut ws = connect_with(&app.ws_url, &[("origin", "https://elsewhere.example")])
        .await
        .expect("upgraded");
    ws.init(
        json!({"X-Nimbus-Project": "other", "Authorization": format!("Bearer {}", ann.secret)}),
    )
    .await
    .expect("ack");
    let me = query(&mut ws, "q", "{ account { id } }").await;
    assert_eq!(me["data"]["account"]["id"], ann.user_id.as_str());
    app.shutdown().await;
}

#[tokio::test]
async fn deleting_a_project_closes_the_sockets_addressing_it() {
    let app = spawn_app().await;
    app.create_project("doomed").await;
    let key = app.create_key("doomed", &["keys.read"]).await;
    let mut keyed = socket(
        &app.ws_url,
        json!({"X-Nimbus-Project": "doomed", "X-Nimbus-Key": key}),
    )
    .await;
    let mut guest = socket(&app.ws_url, json!({"X-Nimbus-Project": "doomed"})).await;
    app.admin(
        "mutation { deleteProject(input: {id: \"doomed\"}) { __typename } }",
        json!({}),
    )
    .await
    .ok();
    for ws in [&mut keyed, &mut guest] {
        let (messages, (close, reason)) = read_to_close(ws).await;
        assert_eq!(close, 4403, "{reason} after {messages:?}");
        assert!(
            reason.starts_with("PROJECT_NOT_FOUND: ") || reason.starts_with("INVALID_API_KEY: "),
            "{reason}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_collections_new_permissions_apply_to_sockets_opened_before() {
    let app = spawn_app().await;
    guarded_documents(&app).await;
    app.admin(
        "mutation { updateCollection(input: {databaseId: \"vault\", id: \"crewdocs\", permissions: [\"read(\\\"any\\\")\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let mut guest = socket(&app.ws_url, json!({})).await;
    assert!(sees(&mut guest, "crewdocs").await);
    app.admin(
        "mutation { updateCollection(input: {databaseId: \"vault\", id: \"crewdocs\", permissions: []}) { id } }",
        json!({}),
    )
    .await
    .ok();
    assert!(
        !sees(&mut guest, "crewdocs").await,
        "a socket kept the collection's old permissions"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_cookie_upgrade_is_refused_when_its_projects_origins_cannot_be_read() {
    let app = spawn_app().await;
    app.create_project("broken").await;
    let ann = sign_up(&app, "ann-broken@example.com", "broken").await;
    let key = app
        .create_key("broken", &["databases.read", "databases.write"])
        .await;
    app.as_key(
        &key,
        "broken",
        "mutation { createDatabase(input: {id: \"d\", name: \"D\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.as_key(
        &key,
        "broken",
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {"databaseId": "d", "id": "c", "name": "c", "permissions": [],
            "attributes": [{"key": "text", "type": "STRING", "size": 20}]}}),
    )
    .await
    .ok();
    // A row the project cannot be loaded from (a hand edit, a bad restore), then
    // a change that makes every replica load the project again.
    let pool = app.server.as_ref().unwrap().state().db.pool();
    sqlx::query("UPDATE db_collections SET permissions = 'not json' WHERE project_id = 'broken'")
        .execute(pool)
        .await
        .unwrap();
    app.admin(
        "mutation { updateProjectAuth(input: {projectId: \"broken\", redirectHosts: [\"localhost\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();

    let cookie = format!("nimbus_session_broken={}", ann.secret);
    let url = format!("{}?project=broken", app.ws_url);
    let (status, body) = connect_with(
        &url,
        &[("cookie", &cookie), ("origin", "https://evil.example")],
    )
    .await
    .err()
    .expect("a cookie upgrade from another site is refused when the origins cannot be read");
    assert_eq!(status, 500, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "INTERNAL",
        "{body}"
    );
    // Without the cookie there is nothing to check: the socket opens (and the
    // project's load error is told at `connection_init`).
    connect_with(&url, &[("origin", "https://evil.example")])
        .await
        .expect("upgraded");
    app.shutdown().await;
}

#[tokio::test]
async fn a_socket_opened_while_its_session_is_revoked_does_not_keep_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    // Few connections: a check waits for one, which widens the moment between a
    // socket's check and its watch that a revocation may fall into.
    config.database_max_connections = 2;
    let app = spawn_with(config, dir).await;
    let dan = sign_up(&app, "dan-racing@example.com", "default").await;
    let openings: Vec<_> = (0..40)
        .map(|_| {
            let (url, payload) = (app.ws_url.clone(), bearer(&dan.secret));
            tokio::spawn(async move {
                let mut ws = WsClient::connect(&url, false).await;
                match ws.init(payload).await {
                    Ok(ack) if ack["type"] == "connection_ack" => Some(ws),
                    _ => None,
                }
            })
        })
        .collect();
    app.admin(
        "mutation($id: ID!) { deleteUserSessions(input: {userId: $id}) { __typename } }",
        json!({"id": dan.user_id}),
    )
    .await
    .ok();
    // However the openings and the revocation interleaved, none acts after it.
    for opening in openings {
        let Some(mut ws) = opening.await.unwrap() else {
            continue;
        };
        let answer = try_query(&mut ws, "a", "{ account { id } }").await;
        assert!(
            answer
                .as_ref()
                .is_none_or(|a| a["data"]["account"].is_null()),
            "a socket acted with the revoked session: {answer:?}"
        );
    }
    app.shutdown().await;
}
