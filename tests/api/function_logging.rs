//! `logging: false` on a function (ADR 31): its successful synchronous
//! executions (the HTTP route, `createExecution` without `async`) answer as
//! before but leave no record and no `executions` event; failed and
//! asynchronous executions are recorded whatever the setting. Switching it
//! takes effect on every replica within the bound of the function cache, and
//! only a key holding `functions.write` may switch it.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::function_cache::replica_of;
use crate::functions::{UPDATE, deployed, execute};
use crate::helpers::{TestApp, WAIT, WsClient, spawn_with, test_config};

/// How soon a change made on one replica reaches another's executions, as in
/// `function_cache`.
const CHANGE_BOUND: Duration = Duration::from_secs(5);

/// Answers `ok` to a GET, and fails with a thrown error to a `?fail` one.
const ANSWER_OR_THROW: &str = "export default ({ req, res, log }) => { \
    log('ran ' + req.path); \
    if (req.query.fail !== undefined) throw new Error('asked to fail'); \
    return res.json({ ok: true, path: req.path }); };";

const RECORD: &str = "query($f: String!, $e: String!) { execution(functionId: $f, executionId: $e) { id status trigger failure errors logs } }";
const COUNT: &str =
    "query($f: String!) { executions(functionId: $f) { totalCount nodes { id status trigger } } }";

/// A server whose database a second replica can open.
async fn shared_app() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.secret = Some("function-logging-tests-share-this-secret-012".into());
    config.database_url = Some(config.effective_database_url());
    spawn_with(config, dir).await
}

/// The HTTP route's answer: status, body, and the execution id it names.
async fn call(app: &TestApp, path: &str) -> (u16, String, Option<String>) {
    let response = app
        .client
        .get(format!("{}/v1/functions/{path}", app.url))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("x-nimbus-execution-id")
        .map(|v| v.to_str().unwrap().to_string());
    (status, response.text().await.unwrap(), id)
}

/// The record of execution `id` of `function`, once written (HTTP records are
/// written behind their responses).
async fn record(app: &TestApp, function: &str, id: &str) -> Value {
    let started = Instant::now();
    loop {
        let answer = app.admin(RECORD, json!({"f": function, "e": id})).await;
        if answer.body.get("errors").is_none() {
            return answer.ok()["execution"].clone();
        }
        assert_eq!(answer.code(), "EXECUTION_NOT_FOUND", "{:#}", answer.body);
        assert!(
            started.elapsed() < WAIT,
            "the record of {id} did not appear"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn executions(app: &TestApp, function: &str) -> Value {
    app.admin(COUNT, json!({"f": function})).await.ok()["executions"].clone()
}

#[tokio::test]
async fn without_logging_successes_answer_the_same_and_leave_no_record_but_failures_and_async_runs_do()
 {
    let app = shared_app().await;
    deployed(&app, "logged", json!({"execute": ["any"]}), ANSWER_OR_THROW).await;
    deployed(
        &app,
        "quiet",
        json!({"execute": ["any"], "logging": false}),
        ANSWER_OR_THROW,
    )
    .await;
    let settings = app
        .admin(
            "{ a: function(id: \"logged\") { logging } b: function(id: \"quiet\") { logging } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        settings,
        json!({"a": {"logging": true}, "b": {"logging": false}})
    );

    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    ws.subscribe(
        "x",
        "subscription { executionChanged(functionId: \"quiet\") { id status failure } }",
    )
    .await;
    ws.ping_pong().await;

    // The same answer over HTTP, with and without a record.
    let (status, logged_body, logged_id) = call(&app, "logged/a").await;
    assert_eq!(status, 200, "{logged_body}");
    let (status, quiet_body, quiet_id) = call(&app, "quiet/a").await;
    assert_eq!(status, 200, "{quiet_body}");
    assert_eq!(quiet_body, logged_body);
    assert_eq!(
        serde_json::from_str::<Value>(&quiet_body).unwrap(),
        json!({"ok": true, "path": "/a"})
    );
    let logged_id = logged_id.expect("a recorded execution is named");
    assert_eq!(quiet_id, None, "no record to name");
    assert_eq!(
        record(&app, "logged", &logged_id).await["status"],
        "COMPLETED"
    );

    // The same answer from `createExecution`, which names an id it keeps no record of.
    let logged_run = execute(
        &app,
        json!({"functionId": "logged", "method": "GET", "path": "/b"}),
    )
    .await
    .ok()["createExecution"]
        .clone();
    let quiet_run = execute(
        &app,
        json!({"functionId": "quiet", "method": "GET", "path": "/b"}),
    )
    .await
    .ok()["createExecution"]
        .clone();
    for field in [
        "status",
        "responseStatusCode",
        "responseBody",
        "logs",
        "errors",
    ] {
        assert_eq!(quiet_run[field], logged_run[field], "{field}");
    }
    assert_eq!(quiet_run["logs"], "ran /b\n");
    let gone = app
        .admin(RECORD, json!({"f": "quiet", "e": quiet_run["id"]}))
        .await;
    assert_eq!(gone.code(), "EXECUTION_NOT_FOUND", "{:#}", gone.body);

    // A failure over HTTP is recorded with its error, and announced: the first
    // event of the function's executions is its, after two successes.
    let (status, body, failed_id) = call(&app, "quiet/c?fail").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("EXECUTION_THREW"), "{body}");
    let failed_id = failed_id.expect("a failure is recorded, and named");
    let failed = record(&app, "quiet", &failed_id).await;
    assert_eq!(failed["status"], "FAILED", "{failed:#}");
    assert_eq!(failed["failure"], "EXECUTION_THREW");
    assert!(
        failed["errors"].as_str().unwrap().contains("asked to fail"),
        "{failed:#}"
    );
    assert_eq!(failed["logs"], "ran /c\n");
    let first = tokio::time::timeout(WAIT, ws.next_json())
        .await
        .expect("an execution event")
        .expect("a message");
    assert_eq!(
        first["payload"]["data"]["executionChanged"],
        json!({"id": failed_id, "status": "FAILED", "failure": "EXECUTION_THREW"}),
        "{first:#}"
    );

    // A failure through `createExecution` too.
    let thrown = execute(
        &app,
        json!({"functionId": "quiet", "method": "GET", "path": "/d?fail"}),
    )
    .await
    .ok()["createExecution"]
        .clone();
    assert_eq!(thrown["status"], "FAILED", "{thrown:#}");
    assert_eq!(
        record(&app, "quiet", thrown["id"].as_str().unwrap()).await["failure"],
        "EXECUTION_THREW"
    );

    // An asynchronous execution is recorded, and finished, whatever the setting.
    let queued = execute(
        &app,
        json!({"functionId": "quiet", "async": true, "method": "GET", "path": "/e"}),
    )
    .await
    .ok()["createExecution"]
        .clone();
    assert_eq!(queued["status"], "WAITING");
    let queued_id = queued["id"].as_str().unwrap().to_string();
    let started = Instant::now();
    let finished = loop {
        let kept = record(&app, "quiet", &queued_id).await;
        if kept["status"] != "WAITING" && kept["status"] != "PROCESSING" {
            break kept;
        }
        assert!(started.elapsed() < WAIT, "the async execution did not end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(finished["status"], "COMPLETED", "{finished:#}");
    assert_eq!(finished["logs"], "ran /e\n");

    // Only the two failures and the async run are kept of `quiet`.
    let kept = executions(&app, "quiet").await;
    assert_eq!(kept["totalCount"], 3, "{kept:#}");
    let mut ids: Vec<&str> = kept["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![
        failed_id.as_str(),
        thrown["id"].as_str().unwrap(),
        queued_id.as_str(),
    ];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    app.shutdown().await;
}

/// Calls `function` on `app` until whether its success is recorded (named by
/// the answer) is `recorded`, within [`CHANGE_BOUND`].
async fn until_recorded(app: &TestApp, function: &str, recorded: bool) -> Option<String> {
    let started = Instant::now();
    loop {
        let (status, body, id) = call(app, function).await;
        assert_eq!(status, 200, "{body}");
        if id.is_some() == recorded {
            return id;
        }
        assert!(
            started.elapsed() < CHANGE_BOUND,
            "logging did not become {recorded} on the other replica within {CHANGE_BOUND:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn switching_logging_takes_effect_on_another_replica_and_needs_functions_write() {
    let first = shared_app().await;
    deployed(
        &first,
        "switch",
        json!({"execute": ["any"]}),
        ANSWER_OR_THROW,
    )
    .await;
    let second = replica_of(&first).await;
    // The second replica keeps the function ready, recording its successes.
    let id = until_recorded(&second, "switch", true).await.unwrap();
    assert_eq!(record(&second, "switch", &id).await["status"], "COMPLETED");

    // Hostile: a key that may only read functions, a signed-in user, a guest,
    // and a value that is no boolean change nothing.
    let reader = first.create_key("default", &["functions.read"]).await;
    let change = json!({"input": {"id": "switch", "logging": false}});
    let refused = first
        .as_key(&reader, "default", UPDATE, change.clone())
        .await;
    assert_eq!(refused.code(), "SCOPE_MISSING", "{:#}", refused.body);
    let ann = first.signed_in("ann@example.com").await;
    let refused = first.as_session(&ann, UPDATE, change.clone()).await;
    assert!(refused.body.get("errors").is_some(), "{:#}", refused.body);
    assert!(refused.body["data"].is_null(), "{:#}", refused.body);
    let refused = first
        .post(json!({"query": UPDATE, "variables": change}), &[])
        .await;
    assert!(refused.body.get("errors").is_some(), "{:#}", refused.body);
    let refused = first
        .admin(UPDATE, json!({"input": {"id": "switch", "logging": "no"}}))
        .await;
    assert!(refused.body.get("errors").is_some(), "{:#}", refused.body);
    let kept = first
        .admin("{ function(id: \"switch\") { logging } }", json!({}))
        .await
        .ok();
    assert_eq!(kept["function"]["logging"], true);
    let id = until_recorded(&second, "switch", true).await.unwrap();
    record(&second, "switch", &id).await;

    // Off on the first replica: the second stops recording successes.
    let changed = first
        .admin(
            "mutation($input: UpdateFunctionInput!) { updateFunction(input: $input) { logging } }",
            json!({"input": {"id": "switch", "logging": false}}),
        )
        .await
        .ok();
    assert_eq!(changed["updateFunction"]["logging"], false);
    until_recorded(&second, "switch", false).await;
    let before = executions(&second, "switch").await["totalCount"].clone();
    for _ in 0..5 {
        let (status, _, id) = call(&second, "switch").await;
        assert_eq!((status, id), (200, None));
    }
    // A failure is still recorded; once it is, nothing was added before it.
    let (status, _, failed) = call(&second, "switch?fail").await;
    assert_eq!(status, 500);
    record(&second, "switch", &failed.expect("a failure is named")).await;
    assert_eq!(
        executions(&second, "switch").await["totalCount"],
        before.as_i64().unwrap() + 1
    );

    // On again.
    first
        .admin(
            "mutation($input: UpdateFunctionInput!) { updateFunction(input: $input) { logging } }",
            json!({"input": {"id": "switch", "logging": true}}),
        )
        .await
        .ok();
    let id = until_recorded(&second, "switch", true).await.unwrap();
    assert_eq!(record(&second, "switch", &id).await["status"], "COMPLETED");
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn records_written_together_are_each_kept_only_under_the_function_they_ran_as() {
    let app = crate::helpers::spawn_app().await;
    deployed(&app, "f", json!({"execute": ["any"]}), ANSWER_OR_THROW).await;
    let state = app.server.as_ref().unwrap().state();
    let created_at: i64 = sqlx::query_scalar(
        "SELECT created_at FROM functions WHERE project_id = 'default' AND id = 'f'",
    )
    .fetch_one(state.db.pool())
    .await
    .unwrap();
    let record = |id: &str| nimbus::services::functions::Execution {
        id: id.into(),
        project_id: "default".into(),
        function_id: "f".into(),
        deployment_id: "d".into(),
        trigger: "http".into(),
        status: "completed".into(),
        caller: None,
        request_method: "GET".into(),
        request_path: "/".into(),
        request_headers: vec![("x-a".into(), "b".into())],
        response_status: 200,
        response_headers: Vec::new(),
        // Past what a record keeps: cut to 64 KiB.
        response_body: vec![b'x'; 100 << 10].into(),
        logs: format!("log of {id}\n"),
        errors: String::new(),
        logs_truncated: false,
        failure: None,
        duration_ms: 1,
        scheduled_at: None,
        created_at,
        updated_at: created_at,
    };
    // 7 records (statements of 4, 2 and 1), every third of a function of the
    // same id deleted before: those are not written, the others all are.
    let records: Vec<_> = (0..7).map(|n| record(&format!("r{n}"))).collect();
    let rows: Vec<_> = records
        .iter()
        .enumerate()
        .map(|(n, e)| {
            (
                e,
                if n % 3 == 0 {
                    created_at - 1
                } else {
                    created_at
                },
            )
        })
        .collect();
    let mut conn = state.db.pool().acquire().await.unwrap();
    let mut written = nimbus::services::functions::store::insert_executions_of(&mut conn, &rows)
        .await
        .unwrap();
    drop(conn);
    written.sort();
    assert_eq!(written, ["r1", "r2", "r4", "r5"]);
    let kept = executions(&app, "f").await;
    assert_eq!(kept["totalCount"], 4, "{kept:#}");
    let r5 = app
        .admin(
            "{ execution(functionId: \"f\", executionId: \"r5\") { logs requestHeaders { name value } responseBodyBase64 } }",
            json!({}),
        )
        .await
        .ok()["execution"]
        .clone();
    assert_eq!(r5["logs"], "log of r5\n");
    assert_eq!(r5["requestHeaders"], json!([{"name": "x-a", "value": "b"}]));
    let body = r5["responseBodyBase64"].as_str().unwrap();
    assert_eq!(
        body.len(),
        (64 << 10) / 3 * 4 + 4,
        "the kept body is 64 KiB"
    );
    app.shutdown().await;
}
