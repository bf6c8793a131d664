//! Warm functions (`warm: true`): each sandbox thread keeps the active deployment
//! loaded in one context, whose module-level state persists between executions,
//! while each execution still gets its own request, variables, logs, identity
//! and limits; a context that did not end cleanly, and every change to the
//! function on any replica, starts a fresh one. The default stays a fresh
//! context per execution.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::function_cache::replica_of;
use crate::functions::{UPDATE, VARIABLE, deploy, deployed, execute_as};
use crate::helpers::{TestApp, spawn_with, test_config};

/// How soon a change made on one replica reaches another's executions (the
/// relay's poll, with room for a busy machine), as in `function_cache`.
const CHANGE_BOUND: Duration = Duration::from_secs(5);

/// A server with one sandbox thread (so that executions share its warm
/// contexts) whose database a second replica can open.
async fn one_thread_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.functions_workers = 1;
    config.secret = Some("function-warm-tests-share-this-secret-0123456".into());
    config.database_url = Some(config.effective_database_url());
    spawn_with(config, dir).await
}

/// The HTTP route's answer: status and body as JSON (null when not JSON).
async fn call(app: &TestApp, path: &str) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}/v1/functions/{path}", app.url))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(json!({ "text": text })),
    )
}

/// Calls `path` on `app` until `done` holds for its answer, within `bound`;
/// that answer, or the last one when it never did.
async fn until(
    app: &TestApp,
    path: &str,
    done: impl Fn(u16, &Value) -> bool,
) -> Result<Value, (u16, Value)> {
    let started = Instant::now();
    loop {
        let (status, body) = call(app, path).await;
        if done(status, &body) {
            return Ok(body);
        }
        if started.elapsed() > CHANGE_BOUND {
            return Err((status, body));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const COUNTER: &str = "let count = 0; export default ({ res, env }) => \
    res.json({ v: 1, count: ++count, greeting: env.GREETING ?? null, leak: globalThis.leak ?? null });";
const COUNTER_TWO: &str = "let count = 0; export default ({ res, env }) => \
    res.json({ v: 2, count: ++count, greeting: env.GREETING ?? null, leak: globalThis.leak ?? null });";

fn counts(body: &Value) -> i64 {
    body["count"].as_i64().unwrap_or(-1)
}

/// Two calls in a row share the warm context.
async fn warmed(app: &TestApp) {
    let (_, one) = call(app, "w").await;
    let (_, two) = call(app, "w").await;
    assert_eq!(counts(&two), counts(&one) + 1, "warm: {one} then {two}");
}

#[tokio::test]
async fn a_warm_function_keeps_module_state_between_executions_and_a_cold_one_does_not() {
    let app = one_thread_app().await;
    deployed(
        &app,
        "warm",
        json!({"execute": ["any"], "warm": true}),
        COUNTER,
    )
    .await;
    deployed(&app, "cold", json!({"execute": ["any"]}), COUNTER).await;
    let settings = app
        .admin(
            "{ a: function(id: \"warm\") { warm } b: function(id: \"cold\") { warm } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(settings, json!({"a": {"warm": true}, "b": {"warm": false}}));
    for expected in 1..=3 {
        assert_eq!(counts(&call(&app, "warm").await.1), expected);
        assert_eq!(counts(&call(&app, "cold").await.1), 1);
    }
    // Switched off: a fresh context per execution again.
    let changed = app
        .admin(
            "mutation($input: UpdateFunctionInput!) { updateFunction(input: $input) { warm } }",
            json!({"input": {"id": "warm", "warm": false}}),
        )
        .await
        .ok();
    assert_eq!(changed["updateFunction"]["warm"], false);
    assert_eq!(counts(&call(&app, "warm").await.1), 1);
    assert_eq!(counts(&call(&app, "warm").await.1), 1);
    // A bad value is a GraphQL error, not a half-made change.
    let refused = app
        .admin(UPDATE, json!({"input": {"id": "warm", "warm": "yes"}}))
        .await;
    assert!(refused.body.get("errors").is_some(), "{:#}", refused.body);
    app.shutdown().await;
}

#[tokio::test]
async fn a_warm_context_answers_each_caller_with_their_own_identity() {
    let app = one_thread_app().await;
    app.admin(
        "mutation { createDatabase(input: {id: \"app\", name: \"App\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {"databaseId": "app", "id": "notes", "name": "notes", "documentSecurity": true,
            "permissions": ["create(\"users\")"],
            "attributes": [{"key": "text", "type": "STRING", "size": 100, "required": true}]}}),
    )
    .await
    .ok();
    let ann = app.signed_in("ann@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    for (session, id, text) in [(&ann, "a1", "ann's"), (&bob, "b1", "bob's")] {
        app.as_session(
            session,
            "mutation($id: String!, $text: String!) { createDocument(input: {databaseId: \"app\", collectionId: \"notes\", id: $id, data: {text: $text}}) { id } }",
            json!({"id": id, "text": text}),
        )
        .await
        .ok();
    }
    // The guest keeps `nimbus.graphql` and `console.log` from its first
    // execution, and counts its executions.
    deployed(
        &app,
        "mine",
        json!({"execute": ["users"], "warm": true}),
        r#"const gql = nimbus.graphql; const say = console.log; let count = 0;
        export default async ({ res }) => {
            count++;
            say('execution', count);
            const answer = await gql('{ documents(databaseId: "app", collectionId: "notes") { documents { id } } }');
            return res.json({ count, ids: answer.data.documents.documents.map((d) => d.id) });
        };"#,
    )
    .await;
    let run = |session: String| {
        let app = &app;
        async move {
            let answer = execute_as(
                app,
                &[("authorization", &format!("Bearer {session}"))],
                json!({"functionId": "mine"}),
            )
            .await
            .ok();
            let execution = answer["createExecution"].clone();
            let body: Value =
                serde_json::from_str(execution["responseBody"].as_str().unwrap()).unwrap();
            // The caller is not shown the function's logs; its author's key is.
            assert_eq!(execution["logs"], "", "{execution:#}");
            let id = execution["id"].as_str().unwrap();
            (body, crate::functions::logs_of(app, "mine", id).await)
        }
    };
    let (first, logs) = run(ann.clone()).await;
    assert_eq!(first, json!({"count": 1, "ids": ["a1"]}));
    assert_eq!(logs, "execution 1\n");
    let (second, logs) = run(bob.clone()).await;
    assert_eq!(
        second,
        json!({"count": 2, "ids": ["b1"]}),
        "Bob sees only his"
    );
    assert_eq!(logs, "execution 2\n", "each execution has its own logs");
    let (third, _) = run(ann).await;
    assert_eq!(third, json!({"count": 3, "ids": ["a1"]}));
    app.shutdown().await;
}

#[tokio::test]
async fn a_warm_context_that_looped_forever_is_dropped() {
    let app = one_thread_app().await;
    deployed(
        &app,
        "spin",
        json!({"execute": ["any"], "warm": true, "timeout": 1}),
        "let count = 0; export default ({ req, res }) => { count++; \
         const seen = { count, leak: globalThis.leak ?? null }; globalThis.leak = 'set'; \
         if (req.path === '/loop') while (true) {} \
         return res.json(seen); };",
    )
    .await;
    assert_eq!(
        call(&app, "spin").await.1,
        json!({"count": 1, "leak": null})
    );
    assert_eq!(
        call(&app, "spin").await.1,
        json!({"count": 2, "leak": "set"})
    );
    let (status, body) = call(&app, "spin/loop").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.to_string().contains("EXECUTION_CPU_LIMIT"), "{body}");
    assert_eq!(
        call(&app, "spin").await.1,
        json!({"count": 1, "leak": null}),
        "a fresh context after the limit"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn every_change_to_a_warm_function_starts_fresh_contexts_on_every_replica() {
    let first = one_thread_app().await;
    deployed(
        &first,
        "w",
        json!({"execute": ["any"], "warm": true}),
        COUNTER,
    )
    .await;
    let second = replica_of(&first).await;
    warmed(&second).await;

    // A variable: the next answer with it comes from a fresh context.
    first
        .admin(
            VARIABLE,
            json!({"input": {"functionId": "w", "key": "GREETING", "value": "hello"}}),
        )
        .await
        .ok();
    let body = until(&second, "w", |_, b| b["greeting"] == "hello")
        .await
        .expect("the variable reaches the second replica");
    assert_eq!(counts(&body), 1, "{body}");
    warmed(&second).await;

    // A new deployment.
    deploy(&first, "w", "main.js", COUNTER_TWO.as_bytes())
        .await
        .ok();
    let body = until(&second, "w", |_, b| b["v"] == 2)
        .await
        .expect("the deployment reaches the second replica");
    assert_eq!(counts(&body), 1, "{body}");
    warmed(&second).await;

    // Disabled, then enabled.
    first
        .admin(UPDATE, json!({"input": {"id": "w", "enabled": false}}))
        .await
        .ok();
    until(&second, "w", |status, b| {
        status != 200 && b.to_string().contains("FUNCTION_DISABLED")
    })
    .await
    .expect("disabled on the second replica");
    first
        .admin(UPDATE, json!({"input": {"id": "w", "enabled": true}}))
        .await
        .ok();
    let body = until(&second, "w", |status, _| status == 200)
        .await
        .expect("enabled on the second replica");
    assert_eq!(counts(&body), 1, "{body}");
    warmed(&second).await;

    // Switched to a fresh context per execution.
    first
        .admin(UPDATE, json!({"input": {"id": "w", "warm": false}}))
        .await
        .ok();
    until(&second, "w", |_, b| counts(b) == 1)
        .await
        .expect("cold on the second replica");
    assert_eq!(counts(&call(&second, "w").await.1), 1);
    assert_eq!(counts(&call(&second, "w").await.1), 1);

    // Deleted.
    first
        .admin(
            "mutation { deleteFunction(input: {id: \"w\"}) { deletedId } }",
            json!({}),
        )
        .await
        .ok();
    until(&second, "w", |status, _| status == 404)
        .await
        .expect("deleted on the second replica");
    second.shutdown().await;
    first.shutdown().await;
}
