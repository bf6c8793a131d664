//! One hostile client cannot stall a replica through realtime: announcing presence
//! needs a user (unless the project allows guests); presence on a document is for
//! those who may read it; presences are capped per channel, user and client
//! address, in state size and in what a new watcher is sent; WebSockets and
//! subscriptions are capped per client address across sockets; a resumed
//! subscription's replay holds no socket past its credential, is bounded per client
//! address, and sends only what the subscriber may read now, its payloads showing
//! related ids only to who may read them; and outgoing email is bounded per
//! sender, per client address and per invited recipient.

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::helpers::{TestApp, WAIT, WsClient, spawn_app, spawn_with, test_config};

async fn socket(app: &TestApp, payload: Value) -> WsClient {
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    let ack = ws.init(payload).await.expect("ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws
}

fn bearer(secret: &str) -> Value {
    json!({"Authorization": format!("Bearer {secret}")})
}

/// The next message of operation `id` (skipping others).
async fn next_of(ws: &mut WsClient, id: &str) -> Value {
    loop {
        let message = ws.next_json().await.expect("a message");
        if message["id"] == id {
            return message;
        }
    }
}

/// The error code of a result message, if it carries one.
fn error_code(message: &Value) -> Option<String> {
    let errors = if message["payload"].is_array() {
        &message["payload"]
    } else {
        &message["payload"]["errors"]
    };
    errors[0]["extensions"]["code"].as_str().map(str::to_string)
}

/// Starts `query` as `id` and returns its first message.
async fn first(ws: &mut WsClient, id: &str, query: &str) -> Value {
    ws.subscribe(id, query).await;
    next_of(ws, id).await
}

fn presence(channel: &str) -> String {
    format!("subscription {{ presence(channel: \"{channel}\") {{ type presenceId userId }} }}")
}

fn watch(channel: &str) -> String {
    format!("subscription {{ presenceChanged(channel: \"{channel}\") {{ type presenceId }} }}")
}

/// Asserts the first message of a presence subscription is a JOIN.
async fn joins(ws: &mut WsClient, id: &str, query: &str) -> Value {
    let message = first(ws, id, query).await;
    assert_eq!(message["type"], "next", "{message}");
    let event = message["payload"]["data"]
        .as_object()
        .and_then(|data| data.values().next().cloned())
        .unwrap_or(Value::Null);
    assert_eq!(event["type"], "JOIN", "{message}");
    event
}

async fn refused(ws: &mut WsClient, id: &str, query: &str) -> String {
    let message = first(ws, id, query).await;
    error_code(&message).unwrap_or_else(|| panic!("expected an error, got {message}"))
}

#[tokio::test]
async fn announcing_presence_needs_a_user_unless_the_project_allows_guests() {
    let app = spawn_app().await;
    let mut guest = socket(&app, json!({})).await;
    assert_eq!(
        refused(&mut guest, "p", &presence("lobby")).await,
        "UNAUTHENTICATED"
    );
    // Watching needs no user.
    guest.subscribe("w", &watch("lobby")).await;
    guest.ping_pong().await;

    let ann = app.signed_in("ann@example.com").await;
    let mut signed = socket(&app, bearer(&ann)).await;
    joins(&mut signed, "p", &presence("lobby")).await;

    let updated = app
        .admin(
            "mutation { updateProjectAuth(input: {projectId: \"default\", presenceGuests: true}) { auth { presenceGuests } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(updated["updateProjectAuth"]["auth"]["presenceGuests"], true);
    let mut guest = socket(&app, json!({})).await;
    let mut seen_guest = false;
    guest.subscribe("p", &presence("lobby")).await;
    for _ in 0..2 {
        let message = next_of(&mut guest, "p").await;
        assert_eq!(error_code(&message), None, "{message}");
        seen_guest |= message["payload"]["data"]["presence"]["userId"].is_null();
    }
    assert!(seen_guest, "the guest is present");
}

async fn private_document(app: &TestApp, reader: &str) {
    app.admin(
        "mutation { createDatabase(input: {id: \"vault\", name: \"Vault\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "vault", "id": "notes", "name": "notes", "documentSecurity": true,
            "permissions": [],
            "attributes": [{"key": "text", "type": "STRING", "size": 20}]
        }}),
    )
    .await
    .ok();
    app.admin(
        "mutation($p: [String!]) { createDocument(input: {databaseId: \"vault\", collectionId: \"notes\", id: \"d1\", data: {text: \"secret\"}, permissions: $p}) { id } }",
        json!({"p": [format!("read(\"user:{reader}\")")]}),
    )
    .await
    .ok();
}

async fn user_id(app: &TestApp, secret: &str) -> String {
    app.as_session(secret, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn presence_on_a_document_is_only_for_those_who_may_read_it() {
    let app = spawn_app().await;
    let ann = app.signed_in("ann@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    private_document(&app, &user_id(&app, &ann).await).await;
    let channel = "databases.vault.collections.notes.documents.d1";

    let mut ann_ws = socket(&app, bearer(&ann)).await;
    joins(&mut ann_ws, "p", &presence(channel)).await;

    let mut bob_ws = socket(&app, bearer(&bob)).await;
    assert_eq!(
        refused(&mut bob_ws, "w", &watch(channel)).await,
        "DOCUMENT_NOT_FOUND",
        "who is on a document is hidden from those who may not read it"
    );
    assert_eq!(
        refused(&mut bob_ws, "p", &presence(channel)).await,
        "DOCUMENT_NOT_FOUND"
    );
    let mut guest = socket(&app, json!({})).await;
    assert_eq!(
        refused(&mut guest, "w", &watch(channel)).await,
        "DOCUMENT_NOT_FOUND"
    );
    // A resource channel must name its resource in full, so it can be checked.
    for short in ["documents.d1", "files.f1", "databases.vault"] {
        assert_eq!(
            refused(&mut bob_ws, short, &watch(short)).await,
            "INVALID_CHANNEL",
            "{short}"
        );
    }
    assert_eq!(
        refused(&mut bob_ws, "f", &watch("buckets.nope.files.f1")).await,
        "BUCKET_NOT_FOUND"
    );
}

#[tokio::test]
async fn presence_on_a_document_ends_when_its_reader_may_no_longer_read_it() {
    let app = spawn_app().await;
    let ann = app.signed_in("ann-revoked@example.com").await;
    let ann_id = user_id(&app, &ann).await;
    private_document(&app, &ann_id).await;
    app.as_session(
        &ann,
        "mutation { createTeam(input: {id: \"club\", name: \"Club\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation { createDocument(input: {databaseId: \"vault\", collectionId: \"notes\", id: \"d2\", data: {text: \"club's\"}, permissions: [\"read(\\\"team:club\\\")\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let own = "databases.vault.collections.notes.documents.d1";
    let club = "databases.vault.collections.notes.documents.d2";
    let mut ws = socket(&app, bearer(&ann)).await;
    joins(&mut ws, "own", &presence(own)).await;
    joins(&mut ws, "club", &presence(club)).await;
    ws.subscribe("watch", &watch(club)).await;
    ws.ping_pong().await;

    // Her own note given to someone else: what is said on it is no longer hers to
    // hear, nor is she there any more.
    app.admin(
        "mutation { updateDocument(input: {databaseId: \"vault\", collectionId: \"notes\", id: \"d1\", data: {}, permissions: [\"read(\\\"user:someone-else\\\")\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let ended = next_of(&mut ws, "own").await;
    assert_eq!(
        error_code(&ended).as_deref(),
        Some("PERMISSION_DENIED"),
        "{ended}"
    );

    // Out of the team that lets her read the other (removed by a server: as its
    // only owner she may not leave it): both of her operations on it end.
    let memberships = app
        .as_session(&ann, "{ memberships(teamId: \"club\") { id } }", json!({}))
        .await
        .ok();
    let membership = memberships["memberships"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.admin(
        "mutation($m: ID!) { deleteMembership(input: {teamId: \"club\", membershipId: $m}) { deletedId } }",
        json!({"m": membership}),
    )
    .await
    .ok();
    let mut ended = Vec::new();
    while ended.len() < 2 {
        let message = ws.next_json().await.expect("a message");
        if message["type"] == "error" || error_code(&message).is_some() {
            assert_eq!(
                error_code(&message).as_deref(),
                Some("PERMISSION_DENIED"),
                "{message}"
            );
            ended.push(message["id"].as_str().unwrap_or_default().to_string());
        }
    }
    ended.sort();
    assert_eq!(ended, ["club", "watch"]);
    // The socket itself stays: her session holds.
    ws.ping_pong().await;
    app.shutdown().await;
}

/// What decides access to a document or file is also its collection, database or
/// bucket: a presence on one follows their changes too, asked again as they are now.
#[tokio::test]
async fn presence_on_a_document_or_file_follows_its_collection_and_bucket() {
    let app = spawn_app().await;
    let ann = app.signed_in("ann-parents@example.com").await;
    let ann_id = user_id(&app, &ann).await;
    private_document(&app, &ann_id).await;
    app.admin(
        "mutation($input: CreateBucketInput!) { createBucket(input: $input) { id } }",
        json!({"input": {"id": "shelf", "name": "Shelf", "fileSecurity": true, "permissions": []}}),
    )
    .await
    .ok();
    crate::storage::upload(
        &app,
        &[("x-nimbus-key", &app.admin_key)],
        json!({"bucketId": "shelf", "fileId": "f1", "file": null,
               "permissions": [format!("read(\"user:{ann_id}\")")]}),
        "f.txt",
        "text/plain",
        b"hello",
    )
    .await
    .ok();
    let note = "databases.vault.collections.notes.documents.d1";
    let file = "buckets.shelf.files.f1";
    let mut ws = socket(&app, bearer(&ann)).await;
    joins(&mut ws, "note", &presence(note)).await;
    ws.subscribe("watch", &watch(note)).await;
    joins(&mut ws, "file", &presence(file)).await;
    ws.ping_pong().await;

    // Renamed, the collection still lets her read her note: both stay, and the
    // watcher hears her arrive again from another socket.
    app.admin(
        "mutation { updateCollection(input: {databaseId: \"vault\", id: \"notes\", name: \"Notes\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let mut other = socket(&app, bearer(&ann)).await;
    joins(&mut other, "again", &presence(note)).await;
    let heard = next_of(&mut ws, "watch").await;
    assert_eq!(
        heard["payload"]["data"]["presenceChanged"]["type"], "JOIN",
        "{heard}"
    );

    // Documents' own permissions no longer count: she may not read it any more.
    app.admin(
        "mutation { updateCollection(input: {databaseId: \"vault\", id: \"notes\", documentSecurity: false}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let mut ended = Vec::new();
    while ended.len() < 2 {
        let message = ws.next_json().await.expect("a message");
        if let Some(code) = error_code(&message) {
            assert_eq!(code, "PERMISSION_DENIED", "{message}");
            ended.push(message["id"].as_str().unwrap_or_default().to_string());
        }
    }
    ended.sort();
    assert_eq!(ended, ["note", "watch"]);

    // The bucket deleted: the file is gone with it.
    app.admin(
        "mutation { deleteBucket(input: {id: \"shelf\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    let gone = next_of(&mut ws, "file").await;
    assert_eq!(
        error_code(&gone).as_deref(),
        Some("PERMISSION_DENIED"),
        "{gone}"
    );
    ws.ping_pong().await;
    app.shutdown().await;
}

#[tokio::test]
async fn presences_are_capped_per_user_in_state_size_and_in_what_a_watcher_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.presence_max_per_user = 2;
    config.presence_max_replay = 2;
    config.presence_max_state_bytes = 64;
    config.presence_max_updates_per_client = 3;
    let app = spawn_with(config, dir).await;
    let ann = app.signed_in("ann@example.com").await;
    let bob = app.signed_in("bob@example.com").await;

    let mut ann_ws = socket(&app, bearer(&ann)).await;
    let big = "x".repeat(100);
    assert_eq!(
        refused(
            &mut ann_ws,
            "big",
            &format!(
                "subscription {{ presence(channel: \"r\", state: {{note: \"{big}\"}}) {{ type }} }}"
            ),
        )
        .await,
        "PRESENCE_TOO_LARGE"
    );
    let update = app
        .as_session(
            &ann,
            "mutation($s: JSON) { updatePresence(input: {channel: \"r\", state: $s}) { updatedCount } }",
            json!({"s": {"note": big}}),
        )
        .await;
    assert_eq!(update.code(), "PRESENCE_TOO_LARGE");

    joins(&mut ann_ws, "p1", &presence("r")).await;
    joins(&mut ann_ws, "p2", &presence("r")).await;
    assert_eq!(
        refused(&mut ann_ws, "p3", &presence("other")).await,
        "TOO_MANY_PRESENCES",
        "the cap is per user, over every channel"
    );
    // Each presence an update changes counts against the address's updates a
    // second: two, then two more of three.
    let updated = app
        .as_session(
            &ann,
            "mutation { a: updatePresence(input: {channel: \"r\", state: 1}) { updatedCount } b: updatePresence(input: {channel: \"r\", state: 2}) { updatedCount } }",
            json!({}),
        )
        .await;
    assert_eq!(
        updated.body["data"]["a"]["updatedCount"], 2,
        "{:#}",
        updated.body
    );
    assert!(updated.body["data"]["b"].is_null(), "{:#}", updated.body);
    assert_eq!(updated.code(), "RATE_LIMITED", "{:#}", updated.body);
    assert_eq!(
        updated.body["errors"][0]["path"],
        json!(["b"]),
        "{:#}",
        updated.body
    );
    assert_eq!(updated.body["errors"].as_array().map(Vec::len), Some(1));
    let mut bob_ws = socket(&app, bearer(&bob)).await;
    joins(&mut bob_ws, "p", &presence("r")).await;

    // Three are present; a new watcher is sent the first two, then only changes.
    let mut watcher = socket(&app, json!({})).await;
    watcher.subscribe("w", &watch("r")).await;
    for _ in 0..2 {
        let message = next_of(&mut watcher, "w").await;
        assert_eq!(
            message["payload"]["data"]["presenceChanged"]["type"], "JOIN",
            "{message}"
        );
    }
    watcher.ping_pong().await;
    bob_ws.send(json!({"id": "p", "type": "complete"})).await;
    let next = next_of(&mut watcher, "w").await;
    assert_eq!(
        next["payload"]["data"]["presenceChanged"]["type"], "LEAVE",
        "no third JOIN was replayed: {next}"
    );
    // A presence ended gives its place back.
    ann_ws.send(json!({"id": "p1", "type": "complete"})).await;
    next_of(&mut ann_ws, "p1").await;
    joins(&mut ann_ws, "p4", &presence("other")).await;
}

#[tokio::test]
async fn presences_are_capped_per_channel_and_per_client_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.presence_max_per_channel = 2;
    config.presence_max_per_client = 3;
    let app = spawn_with(config, dir).await;
    let mut sockets = Vec::new();
    for name in ["a", "b", "c"] {
        let secret = app.signed_in(&format!("{name}@example.com")).await;
        sockets.push(socket(&app, bearer(&secret)).await);
    }
    joins(&mut sockets[0], "p", &presence("room")).await;
    joins(&mut sockets[1], "p", &presence("room")).await;
    assert_eq!(
        refused(&mut sockets[2], "p", &presence("room")).await,
        "TOO_MANY_PRESENCES",
        "the channel is full"
    );
    joins(&mut sockets[2], "q", &presence("hall")).await;
    assert_eq!(
        refused(&mut sockets[2], "r", &presence("porch")).await,
        "TOO_MANY_PRESENCES",
        "every socket here is from one address, which holds three"
    );
}

#[tokio::test]
async fn websockets_per_client_address_are_capped() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.ws_max_per_client = 2;
    let app = spawn_with(config, dir).await;
    let first = socket(&app, json!({})).await;
    let _second = socket(&app, json!({})).await;
    let upgrade = || {
        let mut request = app.ws_url.as_str().into_client_request().unwrap();
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().unwrap(),
        );
        tokio_tungstenite::connect_async(request)
    };
    match upgrade().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            let body: Value = serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
            assert_eq!(
                body["errors"][0]["extensions"]["code"],
                "TOO_MANY_CONNECTIONS"
            );
        }
        other => panic!("a third socket from one address: {:?}", other.map(|_| ())),
    }
    // A closed socket gives its place back.
    drop(first);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if upgrade().await.is_ok() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the place of a closed socket is given back"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn subscriptions_per_client_address_are_capped_across_its_sockets() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.ws_max_subscriptions_per_client = 3;
    let app = spawn_with(config, dir).await;
    let mut a = socket(&app, json!({})).await;
    let mut b = socket(&app, json!({})).await;
    let realtime = "subscription { realtime(channels: [\"keys\"]) { events } }";
    a.subscribe("a1", realtime).await;
    a.subscribe("a2", realtime).await;
    a.ping_pong().await;
    b.subscribe("b1", realtime).await;
    b.ping_pong().await;
    assert_eq!(
        refused(&mut b, "b2", "{ __typename }").await,
        "TOO_MANY_SUBSCRIPTIONS"
    );
    // Ending one on the other socket makes room.
    a.send(json!({"id": "a1", "type": "complete"})).await;
    a.ping_pong().await;
    let answer = first(&mut b, "b3", "{ __typename }").await;
    assert_eq!(answer["payload"]["data"]["__typename"], "Query", "{answer}");
}

async fn invite(app: &TestApp, owner: &str, team: &str, email: &str) -> crate::helpers::Answer {
    app.as_session(
        owner,
        "mutation($input: CreateMembershipInput!) { createMembership(input: $input) { id } }",
        json!({"input": {"teamId": team, "email": email, "roles": [], "url": "http://localhost/join"}}),
    )
    .await
}

fn retry_after(answer: &crate::helpers::Answer) -> u64 {
    answer.body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap_or_else(|| panic!("a retryAfter: {}", answer.body))
}

#[tokio::test]
async fn emails_asked_from_one_client_address_are_limited_whatever_the_flow() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.mail_max_per_client = 3;
    let app = spawn_with(config, dir).await;
    let ask = |query: &'static str| app.post(json!({"query": query}), &[]);
    ask("mutation { createMagicUrlToken(input: {email: \"a@example.com\", url: \"http://localhost/magic\"}) { userId } }")
        .await
        .ok();
    ask("mutation { createEmailToken(input: {email: \"b@example.com\"}) { userId } }")
        .await
        .ok();
    ask("mutation { createRecovery(input: {email: \"c@example.com\", url: \"http://localhost/reset\"}) }")
        .await
        .ok();
    // A fourth recipient, by any flow: each has its own per-recipient limit, but
    // the address has asked for three emails this hour.
    let limited = ask("mutation { createMagicUrlToken(input: {email: \"d@example.com\", url: \"http://localhost/magic\"}) { userId } }").await;
    assert_eq!(limited.code(), "RATE_LIMITED", "{}", limited.body);
    assert!(retry_after(&limited) > 3000);
    let nobody = app
        .admin(
            "{ users(search: \"d@example.com\") { totalCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        nobody["users"]["totalCount"], 0,
        "a refused email creates no user"
    );
}

#[tokio::test]
async fn invitations_are_limited_per_sender_and_per_recipient() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.mail_max_per_sender = 2;
    config.mail_max_per_client = 0;
    let app = spawn_with(config, dir).await;
    let olga = app.signed_in("olga@example.com").await;
    let pia = app.signed_in("pia@example.com").await;
    for (owner, team) in [(&olga, "band"), (&pia, "choir")] {
        app.as_session(
            owner,
            "mutation($t: ID!) { createTeam(input: {id: $t, name: \"Team\"}) { id } }",
            json!({"t": team}),
        )
        .await
        .ok();
    }
    invite(&app, &olga, "band", "x@example.com").await.ok();
    invite(&app, &olga, "band", "y@example.com").await.ok();
    let limited = invite(&app, &olga, "band", "z@example.com").await;
    assert_eq!(limited.code(), "RATE_LIMITED", "{}", limited.body);
    assert!(retry_after(&limited) > 3000);
    let nobody = app
        .admin(
            "{ users(search: \"z@example.com\") { totalCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        nobody["users"]["totalCount"], 0,
        "a refused invitation creates no user"
    );
    // The bound is Olga's, not everyone's.
    invite(&app, &pia, "choir", "z@example.com").await.ok();

    // One recipient is mailed at most ten invitations an hour, renewals included,
    // whoever sends them.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.mail_max_per_sender = 0;
    config.mail_max_per_client = 0;
    let app = spawn_with(config, dir).await;
    let olga = app.signed_in("olga@example.com").await;
    app.as_session(
        &olga,
        "mutation { createTeam(input: {id: \"band\", name: \"Band\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for _ in 0..10 {
        invite(&app, &olga, "band", "r@example.com").await.ok();
    }
    let limited = invite(&app, &olga, "band", "r@example.com").await;
    assert_eq!(limited.code(), "RATE_LIMITED", "{}", limited.body);
}

/// Uploads a small file as the admin (the GraphQL multipart request spec).
async fn admin_upload(app: &TestApp, bucket: &str, file: &str) {
    let boundary = "nimbus-presence-boundary";
    let operations = json!({
        "query": "mutation($input: CreateFileInput!) { createFile(input: $input) { id } }",
        "variables": {"input": {"bucketId": bucket, "fileId": file, "file": null}},
    });
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"operations\"\r\n\r\n{operations}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"map\"\r\n\r\n{{\"0\": [\"variables.input.file\"]}}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"0\"; filename=\"f.txt\"\r\nContent-Type: text/plain\r\n\r\nnotes\r\n\
         --{boundary}--\r\n"
    );
    let response = app
        .multipart_post(boundary)
        .header("x-nimbus-key", &app.admin_key)
        .body(body)
        .send()
        .await
        .expect("request sent");
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["data"]["createFile"]["id"], file, "{answer}");
}

#[tokio::test]
async fn presence_on_a_file_is_only_for_those_who_may_read_it() {
    let app = spawn_app().await;
    let ann = app.signed_in("ann@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let ann_id = user_id(&app, &ann).await;
    app.admin(
        "mutation($input: CreateBucketInput!) { createBucket(input: $input) { id } }",
        json!({"input": {"id": "shared", "name": "Shared", "permissions": [format!("read(\"user:{ann_id}\")")]}}),
    )
    .await
    .ok();
    admin_upload(&app, "shared", "f1").await;
    let channel = "buckets.shared.files.f1";
    let mut ann_ws = socket(&app, bearer(&ann)).await;
    joins(&mut ann_ws, "p", &presence(channel)).await;
    let mut bob_ws = socket(&app, bearer(&bob)).await;
    assert_eq!(
        refused(&mut bob_ws, "w", &watch(channel)).await,
        "FILE_NOT_FOUND"
    );
    assert_eq!(
        refused(&mut bob_ws, "p", &presence(channel)).await,
        "FILE_NOT_FOUND"
    );
}

/// A WebSocket whose client reads slowly (a small TCP window): the server's
/// buffers for it fill after tens of kilobytes, and every write then waits for
/// the client to read.
async fn slow_socket(app: &TestApp, payload: Value) -> WsClient {
    let stream = crate::helpers::small_window_connection(app).await;
    let mut request = app.ws_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
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
    let ack = ws.init(payload).await.expect("ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws
}

/// Starts `query` as `id`, resuming after `cursor`.
async fn resume(ws: &mut WsClient, id: &str, query: &str, cursor: &str) {
    ws.send(json!({"id": id, "type": "subscribe", "payload": {
        "query": query, "variables": {"after": cursor},
    }}))
    .await;
}

/// Documents logged after the cursor [`long_history`] returns.
const HISTORY: usize = 120;
const FEED: &str = "databases.replay.collections.feed.documents";

/// A collection every user may read, and the cursor of its first document's
/// event followed by [`HISTORY`] more, each of 1.5 KB.
async fn long_history(app: &TestApp) -> String {
    app.admin(
        "mutation { createDatabase(input: {id: \"replay\", name: \"Replay\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "replay", "id": "feed", "name": "feed",
            "permissions": ["read(\"users\")"],
            "attributes": [{"key": "text", "type": "STRING", "size": 2000}]
        }}),
    )
    .await
    .ok();
    let mut key = socket(app, json!({"X-Nimbus-Key": app.admin_key})).await;
    key.subscribe(
        "k",
        &format!("subscription {{ realtime(channels: [\"{FEED}\"]) {{ cursor }} }}"),
    )
    .await;
    key.ping_pong().await;
    let create = "mutation($id: ID!, $text: String!) { createDocument(input: {databaseId: \"replay\", collectionId: \"feed\", id: $id, data: {text: $text}}) { id } }";
    app.admin(create, json!({"id": "start", "text": "start"}))
        .await
        .ok();
    let heard = next_of(&mut key, "k").await;
    let cursor = heard["payload"]["data"]["realtime"]["cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("a cursor: {heard}"))
        .to_string();
    let text = "x".repeat(1500);
    for n in 0..HISTORY {
        app.admin(create, json!({"id": format!("d{n}"), "text": text}))
            .await
            .ok();
    }
    cursor
}

/// The feed's events resumed after a cursor, each sent as some 30 KB (the
/// payload twenty times), so that a slow client's buffers hold a few.
fn fat_replay() -> String {
    let copies: String = (0..20).map(|i| format!("p{i}: payload ")).collect();
    format!(
        "subscription($after: String) {{ realtime(channels: [\"{FEED}\"], after: $after) {{ cursor {copies} }} }}"
    )
}

/// Reads `ws` to its close: how many events of operation `id` came first, and the
/// close frame's code.
async fn events_until_closed(ws: &mut WsClient, id: &str) -> (usize, u16) {
    let mut events = 0;
    loop {
        match ws.next_json().await {
            Ok(message) => {
                if message["id"] == id && !message["payload"]["data"].is_null() {
                    events += 1;
                }
            }
            Err((code, _)) => return (events, code),
        }
    }
}

#[tokio::test]
async fn a_socket_replaying_a_long_history_closes_as_soon_as_its_session_ends() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    // The slow client is never too slow: only the sign-out may end it.
    config.ws_send_timeout_secs = 120;
    let app = spawn_with(config, dir).await;
    let cursor = long_history(&app).await;
    let ann = app.signed_in("ann-replaying@example.com").await;
    let mut slow = slow_socket(&app, bearer(&ann)).await;
    resume(&mut slow, "r", &fat_replay(), &cursor).await;
    // The replay is under way: its first event came, and the rest cannot fit in
    // the client's buffers while it does not read.
    let first = next_of(&mut slow, "r").await;
    assert!(!first["payload"]["data"]["realtime"].is_null(), "{first}");

    let mut witness = socket(&app, bearer(&ann)).await;
    app.as_session(
        &ann,
        "mutation { deleteSession(input: {id: \"current\"}) { __typename } }",
        json!({}),
    )
    .await
    .ok();
    // Her other socket closes: the sign-out was heard.
    let (_, code) = events_until_closed(&mut witness, "none").await;
    assert_eq!(code, 4403);
    // The replaying one stops replaying and closes too: what was on its way when
    // the sign-out was heard arrives, not the rest of the history.
    let (events, code) = events_until_closed(&mut slow, "r").await;
    assert_eq!(code, 4403);
    assert!(
        events < HISTORY / 2,
        "{events} of {HISTORY} replayed events were sent after the session ended"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_address_replays_on_a_few_sockets_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.ws_send_timeout_secs = 120;
    let app = spawn_with(config, dir).await;
    let cursor = long_history(&app).await;
    let key = json!({"X-Nimbus-Key": app.admin_key});
    let mut replaying = Vec::new();
    for _ in 0..2 {
        let mut slow = slow_socket(&app, key.clone()).await;
        resume(&mut slow, "r", &fat_replay(), &cursor).await;
        let first = next_of(&mut slow, "r").await;
        assert!(!first["payload"]["data"]["realtime"].is_null(), "{first}");
        replaying.push(slow);
    }
    let plain = format!(
        "subscription($after: String) {{ realtime(channels: [\"{FEED}\"], after: $after) {{ cursor }} }}"
    );
    let mut third = socket(&app, key.clone()).await;
    resume(&mut third, "r", &plain, &cursor).await;
    let refused = next_of(&mut third, "r").await;
    assert_eq!(
        error_code(&refused).as_deref(),
        Some("RATE_LIMITED"),
        "{refused}"
    );
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["retryAfter"], 1,
        "{refused}"
    );

    // One of them gone, the address may replay again.
    drop(replaying.pop());
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let mut again = socket(&app, key.clone()).await;
        resume(&mut again, "r", &plain, &cursor).await;
        let answer = next_of(&mut again, "r").await;
        match error_code(&answer).as_deref() {
            None => break,
            Some("RATE_LIMITED") if std::time::Instant::now() < deadline => {
                // The server notices the dropped client when its next write fails.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => panic!("{other:?}: {answer}"),
        }
    }
    app.shutdown().await;
}

/// The `$id` of the document a `realtime` result carries.
fn document_id(message: &Value) -> Option<&str> {
    message["payload"]["data"]["realtime"]["payload"]["$id"].as_str()
}

#[tokio::test]
async fn a_replay_sends_nothing_its_collection_no_longer_lets_the_subscriber_read() {
    let app = spawn_app().await;
    let ann = app.signed_in("ann-history@example.com").await;
    let ann_id = user_id(&app, &ann).await;
    app.admin(
        "mutation { createDatabase(input: {id: \"hist\", name: \"Hist\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    // Three collections that let her read now, each to change before she
    // resumes, and one that stays as it is.
    for (id, permissions, document_security) in [
        ("granted", json!(["read(\"users\")"]), false),
        ("disabled", json!(["read(\"users\")"]), false),
        ("owned", json!([]), true),
        ("open", json!(["read(\"users\")"]), false),
    ] {
        app.admin(
            "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
            json!({"input": {
                "databaseId": "hist", "id": id, "name": id,
                "documentSecurity": document_security, "permissions": permissions,
                "attributes": [{"key": "text", "type": "STRING", "size": 20}]
            }}),
        )
        .await
        .ok();
    }
    let create = |collection: &str, id: &str| {
        json!({"query": "mutation($c: String!, $id: ID!, $p: [String!]) { createDocument(input: {databaseId: \"hist\", collectionId: $c, id: $id, data: {text: \"t\"}, permissions: $p}) { id } }",
               "variables": {"c": collection, "id": id, "p": [format!("read(\"user:{ann_id}\")")]}})
    };
    let admin = [("x-nimbus-key", app.admin_key.as_str())];
    let channels: Vec<String> = ["granted", "disabled", "owned", "open"]
        .iter()
        .map(|c| format!("databases.hist.collections.{c}.documents"))
        .collect();
    let query = format!(
        "subscription($after: String) {{ realtime(channels: {}, after: $after) {{ cursor payload }} }}",
        serde_json::to_string(&channels).unwrap()
    );

    // She hears the first document live and keeps its cursor.
    let mut ws = socket(&app, bearer(&ann)).await;
    ws.send(json!({"id": "live", "type": "subscribe", "payload": {"query": query}}))
        .await;
    ws.ping_pong().await;
    app.post(create("open", "o1"), &admin).await.ok();
    let heard = next_of(&mut ws, "live").await;
    assert_eq!(document_id(&heard), Some("o1"), "{heard}");
    let cursor = heard["payload"]["data"]["realtime"]["cursor"]
        .as_str()
        .unwrap()
        .to_string();
    drop(ws);

    // While she is away: a document in each, then each collection changes.
    for collection in ["granted", "disabled", "owned"] {
        app.post(create(collection, &format!("{collection}-1")), &admin)
            .await
            .ok();
    }
    for change in [
        "updateCollection(input: {databaseId: \"hist\", id: \"granted\", permissions: []}) { id }",
        "updateCollection(input: {databaseId: \"hist\", id: \"disabled\", enabled: false}) { id }",
        "updateCollection(input: {databaseId: \"hist\", id: \"owned\", documentSecurity: false}) { id }",
    ] {
        app.admin(&format!("mutation {{ {change} }}"), json!({}))
            .await
            .ok();
    }
    app.post(create("open", "o2"), &admin).await.ok();

    // Resumed, she gets only what she may read now: the open collection's
    // document, then the live ones.
    let mut ws = socket(&app, bearer(&ann)).await;
    resume(&mut ws, "r", &query, &cursor).await;
    let replayed = next_of(&mut ws, "r").await;
    assert_eq!(document_id(&replayed), Some("o2"), "{replayed}");
    app.post(create("open", "o3"), &admin).await.ok();
    let live = next_of(&mut ws, "r").await;
    assert_eq!(document_id(&live), Some("o3"), "{live}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_realtime_payload_shows_a_related_id_only_to_who_may_read_that_document() {
    let app = spawn_app().await;
    app.admin(
        "mutation { createDatabase(input: {id: \"refs\", name: \"Refs\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for (id, permissions, document_security) in [
        ("notes", json!([]), true),
        ("boards", json!(["read(\"any\")"]), false),
    ] {
        app.admin(
            "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
            json!({"input": {
                "databaseId": "refs", "id": id, "name": id,
                "documentSecurity": document_security, "permissions": permissions,
                "attributes": [{"key": "text", "type": "STRING", "size": 200, "required": true}],
            }}),
        )
        .await
        .ok();
    }
    app.admin(
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }",
        json!({"input": {
            "databaseId": "refs", "collectionId": "boards", "key": "note",
            "relatedCollectionId": "notes", "type": "MANY_TO_ONE", "onDelete": "SET_NULL"
        }}),
    )
    .await
    .ok();
    let boards = "subscription($after: String) { realtime(channels: [\"databases.refs.collections.boards.documents\"], after: $after) { cursor payload } }";
    let subscribe = async |payload: Value| {
        let mut ws = socket(&app, payload).await;
        ws.send(json!({"id": "b", "type": "subscribe", "payload": {"query": boards}}))
            .await;
        ws.ping_pong().await;
        ws
    };
    // A guest and a key, asking alike: a render is not shared between them.
    let mut guest = subscribe(json!({})).await;
    let mut key = subscribe(json!({"X-Nimbus-Key": app.admin_key})).await;
    app.admin(
        "mutation { createBoard(input: {id: \"first\", text: \"b\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let first = next_of(&mut guest, "b").await;
    let cursor = first["payload"]["data"]["realtime"]["cursor"]
        .as_str()
        .unwrap_or_else(|| panic!("{first}"))
        .to_string();
    next_of(&mut key, "b").await;
    for (id, permissions) in [("hidden", json!([])), ("open", json!(["read(\"any\")"]))] {
        app.admin(
            "mutation($id: ID!, $p: [String!]) { createNote(input: {id: $id, text: \"t\", permissions: $p}) { id } }",
            json!({"id": id, "p": permissions}),
        )
        .await
        .ok();
        app.admin(
            "mutation($id: ID!, $n: ID) { createBoard(input: {id: $id, text: \"b\", note: $n}) { id } }",
            json!({"id": format!("on-{id}"), "n": id}),
        )
        .await
        .ok();
    }
    let notes = |message: &Value| {
        let payload = &message["payload"]["data"]["realtime"]["payload"];
        (payload["$id"].clone(), payload["note"].clone())
    };
    let expected_by_guest = [
        (json!("on-hidden"), Value::Null),
        (json!("on-open"), json!("open")),
    ];
    let mut heard = Vec::new();
    for _ in 0..2 {
        heard.push(notes(&next_of(&mut guest, "b").await));
    }
    assert_eq!(heard, expected_by_guest, "live, to a guest");
    let mut heard = Vec::new();
    for _ in 0..2 {
        heard.push(notes(&next_of(&mut key, "b").await));
    }
    assert_eq!(
        heard,
        [
            (json!("on-hidden"), json!("hidden")),
            (json!("on-open"), json!("open"))
        ],
        "live, to a key"
    );
    // Replayed alike.
    let mut resumed = socket(&app, json!({})).await;
    resume(&mut resumed, "r", boards, &cursor).await;
    let mut heard = Vec::new();
    for _ in 0..2 {
        heard.push(notes(&next_of(&mut resumed, "r").await));
    }
    assert_eq!(heard, expected_by_guest, "replayed, to a guest");
    // Deleting a note clears the boards pointing at it (SET_NULL): that is an
    // update of each, heard live and replayed like any other.
    let deleted = app
        .admin(
            "mutation { deleteNote(input: {id: \"open\"}) { deletedId } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(deleted["deleteNote"]["deletedId"], "open");
    let written = app
        .admin("{ board(id: \"on-open\") { note { id } } }", json!({}))
        .await
        .ok();
    assert_eq!(written["board"]["note"], Value::Null);
    for (ws, id) in [(&mut guest, "b"), (&mut key, "b"), (&mut resumed, "r")] {
        let cleared = next_of(ws, id).await;
        let payload = &cleared["payload"]["data"]["realtime"]["payload"];
        assert_eq!(
            notes(&cleared),
            (json!("on-open"), Value::Null),
            "{cleared}"
        );
        let (created, updated) = (
            payload["$createdAt"].as_str().unwrap_or_default(),
            payload["$updatedAt"].as_str().unwrap_or_default(),
        );
        assert!(updated > created, "{cleared}");
    }
    app.shutdown().await;
}
