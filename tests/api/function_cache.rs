//! What each replica keeps of a function for its executions (settings, opened
//! variables) follows every change made on another replica within the event
//! log's delivery, and sync executions over HTTP are recorded behind their
//! responses, soon after, and all of them by a shutdown; `logsTruncated` says
//! when an execution's logs were cut.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::functions::{VARIABLE, deploy, deployed, execute};
use crate::helpers::{TestApp, from_server, spawn_with, test_config};

/// How soon a change made on one replica reaches another's executions: the
/// relay reads the log at least every second (at once with Redis), plus room for
/// a busy machine. Without the event the kept function would last a minute.
const CHANGE_BOUND: Duration = Duration::from_secs(5);

/// How soon a sync execution's record can be read after its response.
const RECORD_BOUND: Duration = Duration::from_secs(2);

/// A server whose database a second replica can open.
async fn shared_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.secret = Some("function-cache-tests-share-this-secret-01234".into());
    // The second replica opens the same database: this one's SQLite file, when SQLite.
    config.database_url = Some(config.effective_database_url());
    spawn_with(config, dir).await
}

/// Another replica of `app`'s database.
pub(crate) async fn replica_of(app: &TestApp) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = app.config.clone();
    config.data_dir = dir.path().to_path_buf();
    let server = nimbus::Server::start(config.clone())
        .await
        .expect("the second replica starts");
    from_server(server, app.admin_key.clone(), config, dir)
}

/// The HTTP route's answer from `app`: status and body text.
async fn call(app: &TestApp, function: &str) -> (u16, String) {
    let response = app
        .client
        .get(format!("{}/v1/functions/{function}", app.url))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Calls `function` on `app` until `done` holds for its answer, for `bound` at
/// most; the last answer when it never did.
async fn until(
    app: &TestApp,
    function: &str,
    bound: Duration,
    done: impl Fn(u16, &str) -> bool,
) -> Result<Duration, (u16, String)> {
    let started = Instant::now();
    loop {
        let (status, body) = call(app, function).await;
        if done(status, &body) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > bound {
            return Err((status, body));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const VERSION_ONE: &str =
    "export default ({ res, env }) => res.json({ v: 1, greeting: env.GREETING ?? null });";
const VERSION_TWO: &str =
    "export default ({ res, env }) => res.json({ v: 2, greeting: env.GREETING ?? null });";

fn answer(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test]
async fn changes_on_one_replica_reach_the_executions_of_another_within_the_bound() {
    let first = shared_app().await;
    deployed(&first, "greet", json!({"execute": ["any"]}), VERSION_ONE).await;
    deployed(&first, "doomed", json!({"execute": ["any"]}), VERSION_ONE).await;
    let second = replica_of(&first).await;
    // The second replica keeps both functions ready.
    let (status, body) = call(&second, "greet").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(answer(&body), json!({"v": 1, "greeting": null}));
    assert_eq!(call(&second, "doomed").await.0, 200);

    // A new variable, then a changed one.
    first
        .admin(
            VARIABLE,
            json!({"input": {"functionId": "greet", "key": "GREETING", "value": "hello"}}),
        )
        .await
        .ok();
    until(&second, "greet", CHANGE_BOUND, |_, body| {
        answer(body)["greeting"] == "hello"
    })
    .await
    .expect("the new variable reaches the second replica");
    first
        .admin(
            "mutation($input: VariableInput!) { updateVariable(input: $input) { key } }",
            json!({"input": {"functionId": "greet", "key": "GREETING", "value": "bye"}}),
        )
        .await
        .ok();
    until(&second, "greet", CHANGE_BOUND, |_, body| {
        answer(body)["greeting"] == "bye"
    })
    .await
    .expect("the changed variable reaches the second replica");
    first
        .admin(
            "mutation($input: DeleteVariableInput!) { deleteVariable(input: $input) { __typename } }",
            json!({"input": {"functionId": "greet", "key": "GREETING"}}),
        )
        .await
        .ok();
    until(&second, "greet", CHANGE_BOUND, |_, body| {
        answer(body) == json!({"v": 1, "greeting": null})
    })
    .await
    .expect("the deleted variable is gone on the second replica");

    // A new deployment, activated.
    deploy(&first, "greet", "main.js", VERSION_TWO.as_bytes())
        .await
        .ok();
    until(&second, "greet", CHANGE_BOUND, |_, body| {
        answer(body)["v"] == 2
    })
    .await
    .expect("the new deployment runs on the second replica");

    // Disabled, then enabled again.
    first
        .admin(
            crate::functions::UPDATE,
            json!({"input": {"id": "greet", "enabled": false}}),
        )
        .await
        .ok();
    until(&second, "greet", CHANGE_BOUND, |status, body| {
        status != 200 && body.contains("FUNCTION_DISABLED")
    })
    .await
    .expect("the disabled function stops running on the second replica");
    first
        .admin(
            crate::functions::UPDATE,
            json!({"input": {"id": "greet", "enabled": true}}),
        )
        .await
        .ok();
    until(&second, "greet", CHANGE_BOUND, |status, _| status == 200)
        .await
        .expect("the enabled function runs again on the second replica");

    // Deleted.
    first
        .admin(
            "mutation { deleteFunction(input: {id: \"doomed\"}) { deletedId } }",
            json!({}),
        )
        .await
        .ok();
    until(&second, "doomed", CHANGE_BOUND, |status, _| status == 404)
        .await
        .expect("the deleted function runs no more on the second replica");

    second.shutdown().await;
    first.shutdown().await;
}

const RECORD: &str = "query($f: String!, $e: String!) { execution(functionId: $f, executionId: $e) { id status trigger responseStatusCode logs logsTruncated } }";

#[tokio::test]
async fn a_sync_execution_over_http_is_recorded_soon_after_its_response_and_all_by_a_shutdown() {
    let first = shared_app().await;
    deployed(
        &first,
        "hello",
        json!({"execute": ["any"]}),
        "export default ({ res, log }) => { log('said hello'); return res.text('hello'); };",
    )
    .await;
    let response = first
        .client
        .get(format!("{}/v1/functions/hello", first.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let id = response.headers()["x-nimbus-execution-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(response.text().await.unwrap(), "hello");
    let started = Instant::now();
    let record = loop {
        let answer = first.admin(RECORD, json!({"f": "hello", "e": id})).await;
        if answer.body.get("errors").is_none() {
            break answer.ok()["execution"].clone();
        }
        assert_eq!(answer.code(), "EXECUTION_NOT_FOUND", "{:#}", answer.body);
        assert!(
            started.elapsed() < RECORD_BOUND,
            "the record did not appear within {RECORD_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(
        record,
        json!({"id": id, "status": "COMPLETED", "trigger": "HTTP", "responseStatusCode": 200,
               "logs": "said hello\n", "logsTruncated": false})
    );

    // Many at once, then a shutdown at once: every record is written before it ends.
    let calls = (0..40).map(|_| {
        first
            .client
            .get(format!("{}/v1/functions/hello", first.url))
            .send()
    });
    for response in futures_util::future::join_all(calls).await {
        assert_eq!(response.unwrap().status().as_u16(), 200);
    }
    // (The other replica keeps the database's directory.)
    let again = replica_of(&first).await;
    first.shutdown().await;
    let counted = again
        .admin(
            "{ executions(functionId: \"hello\") { totalCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(counted["executions"]["totalCount"], 41, "{counted:#}");
    again.shutdown().await;
}

#[tokio::test]
async fn logs_truncated_says_whether_the_logs_were_cut() {
    let dir = tempfile::tempdir().unwrap();
    let app = spawn_with(test_config(dir.path()).await, dir).await;
    deployed(
        &app,
        "chatty",
        json!({}),
        "export default ({ req, res }) => { console.log('x'.repeat(req.bodyText === 'big' ? 1 << 20 : 10)); return res.text('ok'); };",
    )
    .await;
    for (body, truncated) in [("big", true), ("small", false)] {
        let run = execute(&app, json!({"functionId": "chatty", "body": body}))
            .await
            .ok()["createExecution"]
            .clone();
        assert_eq!(run["status"], "COMPLETED", "{run:#}");
        let kept = app
            .admin(
                RECORD,
                json!({"f": "chatty", "e": run["id"].as_str().unwrap()}),
            )
            .await
            .ok()["execution"]
            .clone();
        assert_eq!(kept["logsTruncated"], truncated, "{body}: {kept:#}");
        let logs = kept["logs"].as_str().unwrap();
        if truncated {
            assert!(logs.len() <= 64 << 10, "{} bytes of logs kept", logs.len());
        } else {
            assert_eq!(logs, "xxxxxxxxxx\n");
        }
    }
    app.shutdown().await;
}
