//! Event triggers of functions: a logged event runs each enabled function whose
//! patterns take it once, as a job, with the event as its request; a change a
//! function's own execution made does not trigger that function again; an event
//! storm queues one execution per event, none lost.

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::functions::deployed;
use crate::helpers::{TestApp, WAIT, WsClient, spawn_with, test_config};

const EXECUTIONS: &str = "query($f: ID!, $after: String) { executions(functionId: $f, first: 100, after: $after) { totalCount pageInfo { hasNextPage endCursor } nodes { id trigger status requestMethod requestPath requestHeaders { name value } responseBody } } }";

async fn fast_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.jobs_poll_ms = 50;
    spawn_with(config, dir).await
}

/// A database `app` with a collection `notes` (`text`, and `words` the enriching
/// function fills in).
async fn notes(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"app\", name: \"App\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {"databaseId": "app", "id": "notes", "name": "notes",
        "permissions": ["read(\"users\")"],
        "attributes": [
            {"key": "text", "type": "STRING", "size": 200, "required": true},
            {"key": "words", "type": "INTEGER", "required": false}
        ]}}),
    )
    .await
    .ok();
}

/// A socket following the executions of `function`, opened before they start.
async fn follow(app: &TestApp, function: &str) -> WsClient {
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    ws.subscribe(
        "x",
        &format!("subscription {{ executionChanged(functionId: \"{function}\") {{ id status }} }}"),
    )
    .await;
    ws
}

/// Waits for `count` executions to end (completed or failed) on `ws`; answers how
/// many completed.
async fn ended(ws: &mut WsClient, count: usize, within: Duration) -> usize {
    let mut ended = BTreeSet::new();
    let mut completed = 0;
    tokio::time::timeout(within, async {
        while ended.len() < count {
            let message = ws.next_json().await.expect("an execution event");
            let execution = &message["payload"]["data"]["executionChanged"];
            let status = execution["status"].as_str().unwrap_or_default();
            let id = execution["id"].as_str().unwrap_or_default().to_string();
            if (status == "COMPLETED" || status == "FAILED") && ended.insert(id) {
                completed += usize::from(status == "COMPLETED");
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{} of {count} executions ended in time", ended.len()));
    completed
}

/// Every execution of `function`, oldest first.
async fn executions(app: &TestApp, function: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = app
            .admin(EXECUTIONS, json!({"f": function, "after": after}))
            .await
            .ok()["executions"]
            .clone();
        all.extend(page["nodes"].as_array().unwrap().iter().cloned());
        if page["pageInfo"]["hasNextPage"] != true {
            return all;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
}

fn header<'a>(execution: &'a Value, name: &str) -> Option<&'a str> {
    execution["requestHeaders"]
        .as_array()?
        .iter()
        .find(|h| h["name"] == name)?["value"]
        .as_str()
}

async fn create_note(app: &TestApp, id: &str, text: &str) {
    app.admin(
        "mutation($id: ID!, $text: String!) { createDocument(input: {databaseId: \"app\", collectionId: \"notes\", id: $id, data: {text: $text}}) { id } }",
        json!({"id": id, "text": text}),
    )
    .await
    .ok();
}

#[tokio::test]
async fn a_document_event_runs_each_subscribed_function_once_and_its_own_writes_do_not_loop() {
    let app = fast_app().await;
    notes(&app).await;
    let create = "databases.*.collections.*.documents.*.create";
    deployed(
        &app,
        "echo",
        json!({"events": [create]}),
        r#"export default async ({ req, res }) => res.json({
            event: req.headers['x-nimbus-event'],
            compat: req.headers['x-appwrite-event'],
            body: req.bodyJson,
        });"#,
    )
    .await;
    // The README's example, subscribed to every change of a note, its own update
    // included: without the guard, each update would run it again.
    deployed(
        &app,
        "enrich",
        json!({"events": ["databases.*.collections.notes.documents.*"],
            "scopes": ["documents.read", "documents.write"]}),
        r#"export default async ({ req, res, log }) => {
            const id = req.bodyJson['$id'];
            const read = await nimbus.graphql(
                'query($id: ID!) { document(databaseId: "app", collectionId: "notes", id: $id) { data } }',
                { id },
            );
            if (read.errors) throw new Error(JSON.stringify(read.errors));
            const words = read.data.document.data.text.split(/\s+/).length;
            const wrote = await nimbus.graphql(
                'mutation($id: ID!, $data: JSON!) { updateDocument(input: {databaseId: "app", collectionId: "notes", id: $id, data: $data}) { id } }',
                { id, data: { words } },
            );
            if (wrote.errors) throw new Error(JSON.stringify(wrote.errors));
            log(`note ${id}: ${words} words`);
            return res.json({ id, words });
        };"#,
    )
    .await;
    // Runs on the updates `enrich` makes: once it has, the consumer has handled
    // them, and any execution of `enrich` they caused would be queued.
    deployed(
        &app,
        "marker",
        json!({"events": ["databases.*.collections.*.documents.*.update"]}),
        "export default async ({ res }) => res.empty();",
    )
    .await;
    deployed(
        &app,
        "elsewhere",
        json!({"events": ["users.*.create"]}),
        "export default async ({ res }) => res.empty();",
    )
    .await;
    deployed(
        &app,
        "off",
        json!({"events": [create], "enabled": false}),
        "export default async ({ res }) => res.empty();",
    )
    .await;
    let mut echo_ws = follow(&app, "echo").await;
    let mut enrich_ws = follow(&app, "enrich").await;
    let mut marker_ws = follow(&app, "marker").await;

    create_note(&app, "n1", "three little words").await;
    create_note(&app, "n2", "two words").await;

    assert_eq!(ended(&mut echo_ws, 2, WAIT).await, 2);
    assert_eq!(ended(&mut enrich_ws, 2, WAIT).await, 2);
    assert_eq!(ended(&mut marker_ws, 2, WAIT).await, 2);

    let echoed = executions(&app, "echo").await;
    assert_eq!(echoed.len(), 2, "{echoed:#?}");
    for (execution, (id, text)) in echoed
        .iter()
        .zip([("n1", "three little words"), ("n2", "two words")])
    {
        assert_eq!(execution["trigger"], "EVENT", "{execution:#}");
        assert_eq!(execution["status"], "COMPLETED", "{execution:#}");
        assert_eq!(execution["requestMethod"], "POST");
        assert_eq!(execution["requestPath"], "/");
        let name = format!("databases.app.collections.notes.documents.{id}.create");
        assert_eq!(header(execution, "x-nimbus-event"), Some(name.as_str()));
        let answer: Value =
            serde_json::from_str(execution["responseBody"].as_str().unwrap()).unwrap();
        assert_eq!(answer["event"], name.as_str(), "{answer:#}");
        assert_eq!(answer["compat"], name.as_str(), "{answer:#}");
        assert_eq!(answer["body"]["$id"], id, "{answer:#}");
        assert_eq!(answer["body"]["$collectionId"], "notes");
        assert_eq!(answer["body"]["text"], text, "{answer:#}");
    }

    for (id, words) in [("n1", 3), ("n2", 2)] {
        let read = app
            .admin(
                "query($id: ID!) { document(databaseId: \"app\", collectionId: \"notes\", id: $id) { data } }",
                json!({"id": id}),
            )
            .await
            .ok();
        assert_eq!(read["document"]["data"]["words"], words, "{read:#}");
    }
    // The two updates `enrich` made ran `marker` and not `enrich` again.
    let enriched = executions(&app, "enrich").await;
    assert_eq!(enriched.len(), 2, "{enriched:#?}");
    assert!(enriched.iter().all(|e| e["trigger"] == "EVENT"));
    let marked = executions(&app, "marker").await;
    assert_eq!(marked.len(), 2, "{marked:#?}");
    assert!(
        marked
            .iter()
            .all(|e| header(e, "x-nimbus-event").is_some_and(|n| n.ends_with(".update")))
    );
    // Queued, if at all, with the executions above.
    assert!(executions(&app, "elsewhere").await.is_empty());
    assert!(executions(&app, "off").await.is_empty());
    app.shutdown().await;
}

#[tokio::test]
async fn an_event_storm_runs_the_function_once_per_event_none_lost() {
    const NOTES: usize = 200;
    let app = fast_app().await;
    notes(&app).await;
    deployed(
        &app,
        "count",
        json!({"events": ["databases.*.collections.notes.documents.*.create"]}),
        "export default async ({ req, res }) => res.text(req.bodyJson['$id']);",
    )
    .await;
    let mut ws = follow(&app, "count").await;
    // Four requests of 50 creates each (the alias limit allows 100).
    for chunk in 0..NOTES / 50 {
        let fields: String = (0..50)
            .map(|i| {
                let n = chunk * 50 + i;
                format!(
                    "n{n}: createDocument(input: {{databaseId: \"app\", collectionId: \"notes\", id: \"n{n}\", data: {{text: \"note {n}\"}}}}) {{ id }} "
                )
            })
            .collect();
        app.admin(&format!("mutation {{ {fields} }}"), json!({}))
            .await
            .ok();
    }
    let completed = ended(&mut ws, NOTES, Duration::from_secs(120)).await;
    assert_eq!(completed, NOTES);
    let ran = executions(&app, "count").await;
    assert_eq!(ran.len(), NOTES);
    let ids: BTreeSet<String> = ran
        .iter()
        .map(|e| e["responseBody"].as_str().unwrap().to_string())
        .collect();
    let expected: BTreeSet<String> = (0..NOTES).map(|n| format!("n{n}")).collect();
    assert_eq!(ids, expected);
    app.shutdown().await;
}

#[tokio::test]
async fn two_functions_that_trigger_each_other_stop_at_the_depth_limit() {
    let app = fast_app().await;
    notes(&app).await;
    // Each bumps the note on every update of it, so each one's write runs the other.
    let bump = r#"export default async ({ req, res }) => {
        const wrote = await nimbus.graphql(
            'mutation($id: ID!, $data: JSON!) { updateDocument(input: {databaseId: "app", collectionId: "notes", id: $id, data: $data}) { id } }',
            { id: req.bodyJson['$id'], data: { words: (req.bodyJson.words ?? 0) + 1 } },
        );
        if (wrote.errors) throw new Error(JSON.stringify(wrote.errors));
        return res.empty();
    };"#;
    let settings = json!({"events": ["databases.*.collections.notes.documents.*.update"],
        "scopes": ["documents.read", "documents.write"]});
    deployed(&app, "ping", settings.clone(), bump).await;
    deployed(&app, "pong", settings, bump).await;
    deployed(
        &app,
        "marker",
        json!({"events": ["databases.*.collections.notes.documents.*.create"]}),
        "export default async ({ res }) => res.empty();",
    )
    .await;
    let mut ping_ws = follow(&app, "ping").await;
    let mut pong_ws = follow(&app, "pong").await;
    let mut marker_ws = follow(&app, "marker").await;
    create_note(&app, "n1", "one").await;
    assert_eq!(ended(&mut marker_ws, 1, WAIT).await, 1);
    app.admin(
        "mutation { updateDocument(input: {databaseId: \"app\", collectionId: \"notes\", id: \"n1\", data: {words: 0}}) { id } }",
        json!({}),
    )
    .await
    .ok();
    // The update runs both (depth 1); each one's write runs the other, one level
    // deeper, up to the limit of 8: 8 runs each.
    assert_eq!(ended(&mut ping_ws, 8, WAIT).await, 8);
    assert_eq!(ended(&mut pong_ws, 8, WAIT).await, 8);
    // Logged after the last writes: once it ran, they were handled.
    create_note(&app, "n2", "two").await;
    assert_eq!(ended(&mut marker_ws, 1, WAIT).await, 1);
    assert_eq!(executions(&app, "ping").await.len(), 8);
    assert_eq!(executions(&app, "pong").await.len(), 8);
    assert_eq!(
        app.metric("nimbus_function_triggers_dropped_total").await,
        2.0
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_function_that_queues_itself_stops_at_the_depth_limit() {
    let app = fast_app().await;
    deployed(
        &app,
        "again",
        json!({"scopes": ["executions.write"]}),
        r#"export default async ({ res }) => res.json(await nimbus.graphql(
            'mutation { createExecution(input: {functionId: "again", async: true}) { status } }',
        ));"#,
    )
    .await;
    let mut ws = follow(&app, "again").await;
    app.admin(
        "mutation { createExecution(input: {functionId: \"again\", async: true}) { id } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(ended(&mut ws, 8, WAIT).await, 8);
    let ran = executions(&app, "again").await;
    let answers: Vec<Value> = ran
        .iter()
        .map(|e| serde_json::from_str(e["responseBody"].as_str().unwrap()).unwrap())
        .collect();
    // Seven queued the next; the eighth was refused, so there is no ninth.
    assert_eq!(ran.len(), 8, "{answers:#?}");
    for answer in &answers[..7] {
        assert_eq!(
            answer["data"]["createExecution"]["status"], "WAITING",
            "{answer:#}"
        );
    }
    assert_eq!(
        answers[7]["errors"][0]["extensions"]["code"], "OPERATION_NOT_ALLOWED",
        "{:#}",
        answers[7]
    );
    app.shutdown().await;
}
