//! Durable consumers of the event log: webhook deliveries are queued from the log
//! by the one replica holding the consumer's lease, whichever replica committed
//! the event and whichever replicas die; a position that commits after later ones
//! were handled is not lost. Also: attribute and index changes have their own
//! events, and a token and its mail are written together or not at all.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::helpers::{ServeOptions, ServeProcess, TestApp, WsClient, test_database_server};
use crate::webhooks::{
    Received, Receiver, app_with_webhooks, create_team, create_webhook, eventually,
};

const SECRET: &str = "log-consumer-tests-share-this-secret-0123456789";

/// A replica of the test's server whose consumer lease lapses 2 s after it dies.
fn replica(extra: &[(&'static str, &str)]) -> ServeOptions {
    let mut env = vec![
        ("NIMBUS_CONSUMER_LEASE_SECS", "2".to_string()),
        ("NIMBUS_JOBS_POLL_MS", "50".into()),
        ("NIMBUS_JOBS_RETRY_BASE_MS", "50".into()),
        ("NIMBUS_WEBHOOKS_ALLOW_PRIVATE", "true".into()),
        ("NIMBUS_WEBHOOKS_TIMEOUT_SECS", "5".into()),
    ];
    env.extend(extra.iter().map(|(name, value)| (*name, value.to_string())));
    ServeOptions {
        env,
        ..ServeOptions::default()
    }
}

/// Creates a team through the replica at `url`, as the admin.
async fn create_team_on(app: &TestApp, url: &str, id: &str) {
    let body: Value = app
        .client
        .post(format!("{url}/v1/graphql"))
        .header("x-nimbus-key", &app.admin_key)
        .json(&json!({
            "query": "mutation($id: ID!) { createTeam(input: {id: $id, name: \"Team\"}) { id } }",
            "variables": {"id": id},
        }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["createTeam"]["id"], id, "{body}");
}

/// The most specific event name of a delivery.
fn event_name(request: &Received) -> String {
    serde_json::from_str::<Value>(&request.body).unwrap()["events"][0]
        .as_str()
        .unwrap()
        .to_string()
}

/// How many deliveries each `webhook-id` (event) got.
fn per_event(requests: &[Received]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for request in requests {
        let id = request.headers["webhook-id"].to_str().unwrap().to_string();
        *seen.entry(id).or_default() += 1;
    }
    seen
}

/// Waits until the webhook jobs number `count`, every one done.
async fn all_webhook_jobs_done(app: &TestApp, count: usize) {
    eventually("every delivery job done", || async {
        let data = app
            .admin(
                "{ jobs(kind: \"webhook\", first: 100) { totalCount nodes { status } } }",
                json!({}),
            )
            .await
            .ok();
        let nodes = data["jobs"]["nodes"].as_array()?.clone();
        (data["jobs"]["totalCount"] == count && nodes.iter().all(|j| j["status"] == "DONE"))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_event_is_delivered_once_though_the_replica_that_wrote_it_and_the_consumer_die() {
    let receiver = Receiver::start().await;
    // The server under test only takes requests: replicas consume and deliver.
    let app = app_with_webhooks(|c| {
        c.jobs_concurrency = 0;
        c.secret = Some(SECRET.into());
    })
    .await;
    create_webhook(&app, &receiver.url("/ok"), &["teams.*.create"]).await;
    let mut holder = ServeProcess::start(&app, replica(&[])).await;
    create_team(&app, "first").await;
    receiver.wait_for("/ok", 1).await;
    all_webhook_jobs_done(&app, 1).await;

    // The consumer's replica dies holding its lease; a replica that runs no
    // background work commits an event and dies right after; another event is
    // committed while no replica consumes at all.
    holder.kill();
    let mut writer = ServeProcess::start(&app, replica(&[("NIMBUS_JOBS_CONCURRENCY", "0")])).await;
    create_team_on(&app, &writer.url, "orphan").await;
    writer.kill();
    create_team(&app, "unheard").await;

    // A new replica takes the lapsed lease and queues both from the log.
    let _next = ServeProcess::start(&app, replica(&[])).await;
    receiver.wait_for("/ok", 3).await;
    create_team(&app, "last").await;
    receiver.wait_for("/ok", 4).await;
    all_webhook_jobs_done(&app, 4).await;
    let requests = receiver.requests_to("/ok");
    let mut names: Vec<String> = requests.iter().map(event_name).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "teams.first.create",
            "teams.last.create",
            "teams.orphan.create",
            "teams.unheard.create"
        ]
    );
    assert!(per_event(&requests).values().all(|&n| n == 1));
    app.shutdown().await;
}

#[tokio::test]
async fn two_replicas_queue_and_deliver_each_event_exactly_once() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|c| {
        c.secret = Some(SECRET.into());
        c.consumer_lease_secs = 2;
    })
    .await;
    let other = ServeProcess::start(&app, replica(&[])).await;
    create_webhook(&app, &receiver.url("/ok"), &["teams.*.create"]).await;
    const EVENTS: usize = 20;
    for n in 0..EVENTS {
        let id = format!("team-{n}");
        if n % 2 == 0 {
            create_team(&app, &id).await;
        } else {
            create_team_on(&app, &other.url, &id).await;
        }
    }
    receiver.wait_for("/ok", EVENTS).await;
    // Once every job is done nothing more is on its way: each event came once.
    all_webhook_jobs_done(&app, EVENTS).await;
    let requests = receiver.requests_to("/ok");
    let seen = per_event(&requests);
    assert_eq!(seen.len(), EVENTS, "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");

    // One replica holds the consumer, under a lease that runs out unless renewed.
    let pool = app.server.as_ref().unwrap().state().db.pool().clone();
    let (owner, until): (Option<String>, i64) = sqlx::query_as(
        "SELECT lease_owner, lease_until FROM log_consumers WHERE name = 'webhooks'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(owner.is_some());
    assert!(until > chrono::Utc::now().timestamp_millis());
    drop(other);
    app.shutdown().await;
}

#[tokio::test]
async fn an_event_that_commits_after_later_ones_were_handled_is_still_delivered() {
    if test_database_server().is_none() {
        // SQLite has one writer: a position is never left open behind a later one.
        eprintln!("skipped: MariaDB only");
        return;
    }
    let receiver = Receiver::start().await;
    // The held transaction keeps one connection for the whole test.
    let app = app_with_webhooks(|c| c.database_max_connections = 16).await;
    create_webhook(&app, &receiver.url("/ok"), &["teams.*.create"]).await;
    let state = app.server.as_ref().unwrap().state();
    let pool = state.db.pool().clone();

    // A transaction takes a log position and stays open.
    let late = nimbus::bus::BusMessage::Event(nimbus::bus::Event {
        channels: vec!["teams".into(), "teams.late".into()],
        key_scope: "teams.read".into(),
        ..nimbus::bus::Event::change(
            "default",
            "teams.late",
            "teams.*",
            "create",
            json!({"id": "late"}),
        )
    });
    let mut held = pool.begin().await.unwrap();
    let logged = nimbus::db::event_log::append(&mut held, nimbus::bus::log::entries([late]))
        .await
        .unwrap();
    let open_position = logged[0].position;

    // A later event commits and is delivered meanwhile...
    create_team(&app, "after").await;
    let first = receiver.wait_for("/ok", 1).await;
    assert_eq!(event_name(&first[0]), "teams.after.create");
    // ...but the stored position stays below the open one.
    let stored = || async {
        sqlx::query_scalar::<_, i64>("SELECT position FROM log_consumers WHERE name = 'webhooks'")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    assert!(stored().await < open_position);

    // Once it commits, its event is delivered too, and the position moves past it.
    held.commit().await.unwrap();
    let both = receiver.wait_for("/ok", 2).await;
    assert_eq!(event_name(&both[1]), "teams.late.create");
    eventually("the stored position past the late one", || async {
        (stored().await > open_position).then_some(())
    })
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn attribute_and_index_changes_have_their_own_events() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|_| {}).await;
    create_webhook(
        &app,
        &receiver.url("/ok/attributes"),
        &[
            "databases.*.collections.*.attributes.*.create",
            "databases.*.collections.*.attributes.*.delete",
        ],
    )
    .await;
    create_webhook(
        &app,
        &receiver.url("/ok/indexes"),
        &["databases.shop.collections.items.indexes"],
    )
    .await;
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    ws.subscribe(
        "1",
        "subscription { realtime(channels: [\"databases.shop.collections.items.attributes.*\", \"indexes\"]) { events channels payload } }",
    )
    .await;
    ws.ping_pong().await;

    let run = |query: &'static str| {
        let app = &app;
        async move { app.admin(query, json!({})).await.ok() }
    };
    run("mutation { createDatabase(input: {id: \"shop\", name: \"Shop\"}) { id } }").await;
    run("mutation { createCollection(input: {databaseId: \"shop\", id: \"items\", name: \"items\"}) { id } }").await;
    run("mutation { createAttribute(input: {databaseId: \"shop\", collectionId: \"items\", attribute: {key: \"title\", type: STRING, size: 80}}) { id } }").await;
    run("mutation { createIndex(input: {databaseId: \"shop\", collectionId: \"items\", index: {key: \"by_title\", type: KEY, attributes: [\"title\"]}}) { id } }").await;
    // Deleting the attribute drops the index that uses it: two deletions.
    run("mutation { deleteAttribute(input: {databaseId: \"shop\", collectionId: \"items\", key: \"title\"}) { id } }").await;

    let mut heard = Vec::new();
    for _ in 0..4 {
        let message = ws.next_json().await.expect("an event");
        assert_eq!(message["type"], "next", "{message}");
        heard.push(message["payload"]["data"]["realtime"].clone());
    }
    let events = heard[0]["events"].as_array().unwrap();
    assert_eq!(
        (&events[0], &events[1], events.len()),
        (
            &json!("databases.shop.collections.items.attributes.title.create"),
            &json!("databases.*.collections.*.attributes.*.create"),
            22
        )
    );
    assert_eq!(
        heard[0]["channels"],
        json!([
            "attributes",
            "databases.shop.collections.items.attributes",
            "databases.shop.collections.items.attributes.title"
        ])
    );
    assert_eq!(heard[0]["payload"]["key"], "title");
    assert_eq!(heard[0]["payload"]["size"], 80);
    assert_eq!(
        heard[1]["events"][0],
        "databases.shop.collections.items.indexes.by_title.create"
    );
    assert_eq!(heard[1]["payload"]["attributes"], json!(["title"]));
    let deleted: Vec<&Value> = heard[2..].iter().map(|e| &e["events"][0]).collect();
    assert_eq!(
        deleted,
        [
            "databases.shop.collections.items.attributes.title.delete",
            "databases.shop.collections.items.indexes.by_title.delete"
        ]
    );

    let attributes = receiver.wait_for("/ok/attributes", 2).await;
    let names: Vec<String> = attributes.iter().map(event_name).collect();
    assert!(names.contains(&"databases.shop.collections.items.attributes.title.create".into()));
    assert!(names.contains(&"databases.shop.collections.items.attributes.title.delete".into()));
    let indexes = receiver.wait_for("/ok/indexes", 2).await;
    let names: Vec<String> = indexes.iter().map(event_name).collect();
    assert!(names.contains(&"databases.shop.collections.items.indexes.by_title.create".into()));
    assert!(names.contains(&"databases.shop.collections.items.indexes.by_title.delete".into()));
    all_webhook_jobs_done(&app, 4).await;
    assert_eq!(receiver.requests_to("/ok/attributes").len(), 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_token_whose_mail_cannot_be_queued_is_not_written() {
    let app = app_with_webhooks(|_| {}).await;
    let pool = app.server.as_ref().unwrap().state().db.pool().clone();
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>(&format!("SELECT COUNT(*) FROM {table}"))
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    // An address Nimbus takes for an account but the mail relay refuses.
    let session = app.signed_in("a,b@example.com").await;
    let tokens = count("tokens").await;
    let mails = count("jobs WHERE kind = 'mail'").await;
    let refused = app
        .as_session(
            &session,
            "mutation { createVerification(input: {url: \"http://localhost/verify\"}) { expiresAt } }",
            json!({}),
        )
        .await;
    assert_eq!(refused.code(), "INVALID_EMAIL", "{:?}", refused.body);
    assert_eq!(count("tokens").await, tokens, "no token without its mail");
    assert_eq!(count("jobs WHERE kind = 'mail'").await, mails);

    // A magic link is refused before a user is made for the address.
    let users = count("users").await;
    let refused = app
        .post(
            json!({"query": "mutation { createMagicUrlToken(input: {email: \"c,d@example.com\", url: \"http://localhost/magic\"}) { userId } }"}),
            &[],
        )
        .await;
    assert_eq!(refused.code(), "INVALID_EMAIL", "{:?}", refused.body);
    assert_eq!(count("users").await, users);
    assert_eq!(count("tokens").await, tokens);
    app.shutdown().await;
}

#[tokio::test]
async fn a_new_user_is_a_users_create_event() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|_| {}).await;
    create_webhook(&app, &receiver.url("/ok"), &["users.*.create"]).await;
    app.signed_in("newcomer@example.com").await;
    let created = receiver.wait_for("/ok", 1).await;
    let body: Value = serde_json::from_str(&created[0].body).unwrap();
    let id = body["payload"]["id"].as_str().unwrap();
    assert_eq!(body["events"][0], format!("users.{id}.create"));
    assert_eq!(body["payload"]["email"], "newcomer@example.com");
    app.shutdown().await;
}
