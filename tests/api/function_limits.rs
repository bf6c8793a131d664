//! Functions under hostile code and hostile input, through the real API: each bad
//! execution ends with a clear status and code, the server stays healthy and the
//! next execution is fine; `fetch` never reaches the server's own network (by
//! address, by name, or by a redirect); uploads and variables past their limits
//! are refused; an event storm runs one execution per event with the sandbox
//! within its bounds. Also: asynchronous executions run as the user who started
//! them, deployments are rate-limited per project, and an event too large to be a
//! request body is not passed as one.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::functions::{VARIABLE, deploy, deploy_response, deployed, execute, execute_as, tar_gz};
use crate::helpers::{TestApp, WAIT, WsClient, from_server, spawn_app, spawn_with, test_config};

/// What the function `hostile` does, by path.
const HOSTILE: &str = r#"export default async ({ req, res }) => {
    switch (req.path) {
        case '/bomb': { const a = []; while (true) a.push('x'.repeat(1024) + a.length); }
        case '/recurse': { const f = (n) => f(n + 1) + 1; return res.json(f(0)); }
        case '/throw': throw new TypeError('thrown on purpose');
        case '/never': await new Promise(() => {}); return res.empty();
        case '/reject': return Promise.reject(new Error('rejected on purpose'));
        case '/huge': return res.send('x'.repeat(100 * 1024 * 1024));
        case '/logs': {
            for (let i = 0; i < 16384; i++) console.log('y'.repeat(63));
            return res.text('logged');
        }
        default: return res.text('fine');
    }
};"#;

async fn run(app: &TestApp, function: &str, path: &str) -> Value {
    execute(app, json!({"functionId": function, "path": path}))
        .await
        .ok()["createExecution"]
        .clone()
}

/// The server answers its health check and runs a good execution.
async fn still_fine(app: &TestApp, function: &str) {
    let health = app
        .client
        .get(format!("{}/health", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status().as_u16(), 200);
    let next = run(app, function, "/").await;
    assert_eq!(next["status"], "COMPLETED", "{next:#}");
    assert_eq!(next["responseBody"], "fine", "{next:#}");
}

#[tokio::test]
async fn hostile_code_fails_with_a_clear_code_and_the_next_execution_works() {
    let app = spawn_app().await;
    // 256 MiB: room for the 100 MB string, so that the response cap is what stops it.
    deployed(
        &app,
        "hostile",
        json!({"execute": ["any"], "timeout": 5, "memory": 256}),
        HOSTILE,
    )
    .await;
    deployed(&app, "small", json!({"timeout": 5, "memory": 16}), HOSTILE).await;
    for (function, path, failure, detail) in [
        ("small", "/bomb", "EXECUTION_MEMORY_LIMIT", None),
        ("hostile", "/recurse", "EXECUTION_STACK_OVERFLOW", None),
        (
            "hostile",
            "/throw",
            "EXECUTION_THREW",
            Some("TypeError: thrown on purpose"),
        ),
        (
            "hostile",
            "/reject",
            "EXECUTION_THREW",
            Some("Error: rejected on purpose"),
        ),
        ("hostile", "/never", "EXECUTION_NEVER_SETTLED", None),
        ("hostile", "/huge", "EXECUTION_RESPONSE_TOO_LARGE", None),
    ] {
        let started = Instant::now();
        let ran = run(&app, function, path).await;
        assert_eq!(ran["status"], "FAILED", "{path}: {ran:#}");
        assert_eq!(ran["failure"], failure, "{path}: {ran:#}");
        assert_eq!(ran["responseStatusCode"], 500, "{path}: {ran:#}");
        if let Some(detail) = detail {
            assert!(
                ran["errors"].as_str().unwrap().contains(detail),
                "{path}: {ran:#}"
            );
        }
        // Nothing of the host in what the caller reads.
        assert!(
            !ran["errors"].as_str().unwrap().contains("/src/"),
            "{path}: {ran:#}"
        );
        // A promise that can never settle ends at once, not at the timeout.
        if path == "/never" {
            assert!(started.elapsed() < Duration::from_secs(4), "{path}");
        }
        still_fine(&app, function).await;
    }

    // Over plain HTTP, the failure's code with its status (the function's answer
    // was bad: 502), and the record says the rest.
    let response = app
        .client
        .get(format!("{}/v1/functions/hostile/huge", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 502);
    assert!(response.headers().contains_key("x-nimbus-execution-id"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "EXECUTION_RESPONSE_TOO_LARGE",
        "{body:#}"
    );
    still_fine(&app, "hostile").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_megabyte_of_console_output_is_capped_and_flagged() {
    let app = spawn_app().await;
    deployed(&app, "chatty", json!({}), HOSTILE).await;
    let ran = run(&app, "chatty", "/logs").await;
    assert_eq!(ran["status"], "COMPLETED", "{ran:#}");
    assert_eq!(ran["responseBody"], "logged");
    let logs = ran["logs"].as_str().unwrap();
    // 1 MiB written, 64 KiB kept, and the cut said.
    assert!(logs.len() <= 64 << 10, "{}", logs.len());
    assert!(logs.len() > (64 << 10) - 100, "{}", logs.len());
    assert!(logs.starts_with(&"y".repeat(63)));
    assert!(
        ran["errors"]
            .as_str()
            .unwrap()
            .contains("logs were cut at the size limit"),
        "{ran:#}"
    );
    // The record keeps what the caller got.
    let id = ran["id"].as_str().unwrap();
    let kept = app
        .admin(
            "query($f: ID!, $id: ID!) { execution(functionId: $f, executionId: $id) { logs errors } }",
            json!({"f": "chatty", "id": id}),
        )
        .await
        .ok();
    assert_eq!(kept["execution"]["logs"], ran["logs"]);
    assert_eq!(kept["execution"]["errors"], ran["errors"]);
    still_fine(&app, "chatty").await;
    app.shutdown().await;
}

/// A server that looks public to the functions (its address is listed in
/// `NIMBUS_FUNCTIONS_FETCH_ALLOW`): `/ok` answers, `/to-loopback` and
/// `/to-metadata` redirect into private addresses. Counts the connections opened
/// to it.
async fn outside_server(nimbus_port: u16) -> (String, Arc<AtomicUsize>) {
    use axum::routing::get;
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let counted = connections.clone();
    let listener = listener.tap_io(move |_| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let loopback = format!("http://127.0.0.1:{nimbus_port}/health");
    let app = axum::Router::new()
        .route("/ok", get(|| async { "hello from outside" }))
        .route(
            "/to-loopback",
            get(move || {
                let to = loopback.clone();
                async move { (axum::http::StatusCode::FOUND, [("location", to)]) }
            }),
        )
        .route(
            "/to-metadata",
            get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", "http://169.254.169.254/latest/meta-data/")],
                )
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://127.0.0.2:{port}"), connections)
}

#[tokio::test]
async fn fetch_never_reaches_private_addresses_by_address_name_or_redirect() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.functions_fetch_allow = "127.0.0.2".parse().unwrap();
    let app = spawn_with(config, dir).await;
    let port: u16 = app.url.rsplit(':').next().unwrap().parse().unwrap();
    let (outside, connections) = outside_server(port).await;
    // Answers, per URL, what `fetch` brought or why it was refused.
    deployed(
        &app,
        "fetcher",
        json!({}),
        r#"export default async ({ req, res }) => {
            const out = [];
            for (const url of req.bodyJson) {
                try { const r = await fetch(url); out.push('reached ' + r.status + ' ' + await r.text()); }
                catch (e) { out.push('refused: ' + e.message); }
            }
            return res.json(out);
        };"#,
    )
    .await;
    let urls = json!([
        format!("{outside}/ok"),
        "http://169.254.169.254/latest/meta-data/",
        format!("http://localhost:{port}/health"),
        format!("http://127.0.0.1:{port}/health"),
        format!("http://[::1]:{port}/health"),
        format!("{outside}/to-loopback"),
        format!("{outside}/to-metadata"),
        format!("{outside}/ok"),
    ]);
    let ran = execute(
        &app,
        json!({"functionId": "fetcher", "body": urls.to_string()}),
    )
    .await
    .ok()["createExecution"]
        .clone();
    assert_eq!(ran["status"], "COMPLETED", "{ran:#}");
    let answers: Vec<String> = serde_json::from_str(ran["responseBody"].as_str().unwrap()).unwrap();
    assert_eq!(answers[0], "reached 200 hello from outside", "{answers:#?}");
    for (n, answer) in answers[1..5].iter().enumerate() {
        assert!(
            answer.starts_with("refused: the URL points to a private"),
            "{n}: {answer}"
        );
    }
    for answer in &answers[5..7] {
        assert!(
            answer.starts_with("refused: a redirect's URL points to a private"),
            "{answer}"
        );
    }
    assert_eq!(answers[7], "reached 200 hello from outside", "{answers:#?}");
    // No address of the server's network in what the guest is told.
    assert!(!answers[1..7].iter().any(|a| a.contains("127.0.0.1")));
    // One client for every call: the five requests to the outside server (two
    // answers, two redirects and the last answer) shared one kept-alive connection.
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    // The next execution reuses it too.
    let again = execute(
        &app,
        json!({"functionId": "fetcher", "body": json!([format!("{outside}/ok")]).to_string()}),
    )
    .await
    .ok();
    assert_eq!(
        again["createExecution"]["responseBody"],
        json!(["reached 200 hello from outside"]).to_string()
    );
    assert_eq!(connections.load(Ordering::SeqCst), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn an_entrypoint_that_does_not_exist_is_refused_when_deployed() {
    let app = spawn_app().await;
    deployed(&app, "entry", json!({}), HOSTILE).await;
    // An archive without the function's entrypoint.
    let archive = tar_gz(&[("lib/other.js", "export default () => 1;")]);
    let refused = deploy(&app, "entry", "code.tar.gz", &archive).await;
    assert_eq!(refused.code(), "DEPLOYMENT_INVALID", "{:#}", refused.body);
    let message = refused.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("main.js"), "{message}");
    // An entrypoint with nothing to call.
    for code in ["export const handler = () => 1;", "export default 42;"] {
        let refused = deploy(&app, "entry", "main.js", code.as_bytes()).await;
        assert_eq!(refused.code(), "DEPLOYMENT_INVALID", "{:#}", refused.body);
        assert!(
            refused.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("default export"),
            "{:#}",
            refused.body
        );
    }
    // An entrypoint that is not a module path is refused when set.
    let renamed = app
        .admin(
            crate::functions::UPDATE,
            json!({"input": {"id": "entry", "entrypoint": "../../etc/passwd"}}),
        )
        .await;
    assert_eq!(renamed.code(), "BAD_USER_INPUT", "{:#}", renamed.body);
    // The deployment that was active still is.
    still_fine(&app, "entry").await;
    app.shutdown().await;
}

#[tokio::test]
async fn variables_over_the_size_limits_are_refused_and_the_function_still_runs() {
    let app = spawn_app().await;
    deployed(
        &app,
        "env",
        json!({}),
        "export default async ({ req, res, env }) => req.path === '/' ? res.text('fine') : res.json(Object.keys(env));",
    )
    .await;
    let set = |key: &str, value: String| {
        app.admin(
            VARIABLE,
            json!({"input": {"functionId": "env", "key": key, "value": value}}),
        )
    };
    // One value over 8 KiB.
    let one = set("TOO_BIG", "v".repeat((8 << 10) + 1)).await;
    assert_eq!(one.code(), "INVALID_VARIABLE", "{:#}", one.body);
    // Values of 8 KiB each, up to 64 KiB together: the ninth is refused.
    for n in 0..8 {
        set(&format!("PART_{n}"), "v".repeat(8 << 10)).await.ok();
    }
    let ninth = set("PART_8", "v".repeat(8 << 10)).await;
    assert_eq!(ninth.code(), "INVALID_VARIABLE", "{:#}", ninth.body);
    let key = set("1BAD", "x".into()).await;
    assert_eq!(key.code(), "INVALID_VARIABLE", "{:#}", key.body);
    // Nimbus's own are Nimbus's to set.
    let reserved = set("APPWRITE_FUNCTION_ID", "spoofed".into()).await;
    assert_eq!(reserved.code(), "INVALID_VARIABLE", "{:#}", reserved.body);
    let keys = run(&app, "env", "/keys").await;
    let keys: Vec<String> = serde_json::from_str(keys["responseBody"].as_str().unwrap()).unwrap();
    let (own, set_by_nimbus): (Vec<String>, Vec<String>) = keys
        .into_iter()
        .partition(|key| !key.contains("_FUNCTION_"));
    assert_eq!(own, (0..8).map(|n| format!("PART_{n}")).collect::<Vec<_>>());
    assert!(set_by_nimbus.contains(&"APPWRITE_FUNCTION_ID".to_string()));
    assert!(set_by_nimbus.contains(&"NIMBUS_FUNCTION_DEPLOYMENT".to_string()));
    still_fine(&app, "env").await;
    app.shutdown().await;
}

/// How many documents the storm creates: 10,000 by default, fewer where the
/// machine is slow (`NIMBUS_TEST_STORM`).
fn storm_size() -> usize {
    std::env::var("NIMBUS_TEST_STORM")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(STORM)
}

/// The storm's default size.
const STORM: usize = 10_000;
/// Documents per request.
const PER_REQUEST: usize = 500;

#[tokio::test]
async fn an_event_storm_runs_one_execution_per_event_within_the_sandbox_bounds() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.jobs_poll_ms = 50;
    config.graphql_max_aliases = PER_REQUEST;
    config.graphql_max_complexity = 10 * PER_REQUEST;
    config.functions_workers = 2;
    config.functions_queue = 4;
    let app = spawn_with(config, dir).await;
    app.admin(
        "mutation { createDatabase(input: {id: \"app\", name: \"App\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {"databaseId": "app", "id": "notes", "name": "notes",
            "attributes": [{"key": "n", "type": "INTEGER", "required": true}]}}),
    )
    .await
    .ok();
    deployed(
        &app,
        "count",
        json!({"events": ["databases.*.collections.notes.documents.*.create"]}),
        "export default async ({ req, res }) => res.text(String(req.bodyJson.n));",
    )
    .await;
    let total = storm_size();
    let started = Instant::now();
    for first in (0..total).step_by(PER_REQUEST) {
        let fields: String = (first..(first + PER_REQUEST).min(total))
            .map(|n| {
                format!(
                    "d{n}: createDocument(input: {{databaseId: \"app\", collectionId: \"notes\", id: \"d{n}\", data: {{n: {n}}}}}) {{ id }} "
                )
            })
            .collect();
        app.admin(&format!("mutation {{ {fields} }}"), json!({}))
            .await
            .ok();
    }
    let created = started.elapsed();
    // Sampled while the storm runs: the sandbox never holds more than its threads
    // running and its queue waiting.
    let pool = &app.server.as_ref().unwrap().state().functions.pool;
    let (most_running, most_waiting) = tokio::time::timeout(Duration::from_secs(600), async {
        let (mut running, mut waiting) = (0, 0);
        loop {
            running = running.max(pool.running());
            waiting = waiting.max(pool.waiting());
            let done = app
                .admin(
                    "query { jobs(kind: \"functions.execute\", status: DONE, first: 1) { totalCount } }",
                    json!({}),
                )
                .await
                .ok()["jobs"]["totalCount"]
                .as_u64()
                .unwrap() as usize;
            if done == total {
                return (running, waiting);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("every event ran the function in time");
    eprintln!(
        "event storm: {total} documents created in {created:?}, all executed in {:?}",
        started.elapsed()
    );
    // The pool holds at most threads + queue executions: a place a thread frees
    // may be queued into before the thread takes its next one.
    assert!(most_running <= 2, "{most_running} running at once");
    assert!(most_waiting <= 2 + 4, "{most_waiting} waiting at once");
    // Exactly one execution per event, each completed with its own document.
    let mut seen = BTreeSet::new();
    let mut after = Value::Null;
    loop {
        let page = app
            .admin(
                "query($after: String) { executions(functionId: \"count\", first: 100, after: $after) { pageInfo { hasNextPage endCursor } nodes { status failure responseBody } } }",
                json!({"after": after}),
            )
            .await
            .ok()["executions"]
            .clone();
        for node in page["nodes"].as_array().unwrap() {
            assert_eq!(node["status"], "COMPLETED", "{node:#}");
            assert!(
                seen.insert(node["responseBody"].as_str().unwrap().to_string()),
                "twice: {node:#}"
            );
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(seen.len(), total);
    // Each ran at its first attempt: no job met a full sandbox and had to retry.
    let mut after = Value::Null;
    loop {
        let page = app
            .admin(
                "query($after: String) { jobs(kind: \"functions.execute\", first: 100, after: $after) { pageInfo { hasNextPage endCursor } nodes { status attempts lastError } } }",
                json!({"after": after}),
            )
            .await
            .ok()["jobs"]
            .clone();
        for node in page["nodes"].as_array().unwrap() {
            assert_eq!(node["status"], "DONE", "{node:#}");
            assert_eq!(node["attempts"], 1, "{node:#}");
        }
        if page["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    assert_eq!(
        seen,
        (0..total).map(|n| n.to_string()).collect::<BTreeSet<_>>()
    );
    app.shutdown().await;
}

/// A replica that runs no jobs, and a function `whoami` any user may run that
/// answers who its `nimbus.graphql` calls run as.
async fn replica_without_jobs() -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.jobs_concurrency = 0;
    config.secret = Some("function-limits-tests-share-this-secret-0123".into());
    // The second replica opens the same database: this one's SQLite file, when SQLite.
    config.database_url = Some(config.effective_database_url());
    let app = spawn_with(config, dir).await;
    deployed(
        &app,
        "whoami",
        json!({"execute": ["users"], "scopes": ["users.read"]}),
        r#"export default async ({ res }) => {
            const me = await nimbus.graphql('{ account { id } }');
            const jwt = await nimbus.graphql('mutation { createJWT { __typename } }');
            return res.json({ me: me.data?.account?.id ?? null, jwt: jwt.errors?.[0]?.extensions?.code ?? 'minted' });
        };"#,
    )
    .await;
    app
}

/// Starts a replica of `app` that runs jobs.
async fn replica_with_jobs(app: &TestApp) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = app.config.clone();
    config.jobs_concurrency = 4;
    config.jobs_poll_ms = 50;
    config.data_dir = dir.path().to_path_buf();
    let server = nimbus::Server::start(config.clone())
        .await
        .expect("the second replica starts");
    from_server(server, app.admin_key.clone(), config, dir)
}

/// A socket of the admin's hearing the `whoami` function's executions.
async fn watch_whoami(app: &TestApp) -> WsClient {
    watch_executions(app, "whoami", "id status").await
}

/// A socket of the admin's hearing `function`'s executions (`fields` of each),
/// as operation `x`, subscribed once it answers.
async fn watch_executions(app: &TestApp, function: &str, fields: &str) -> WsClient {
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    ws.subscribe(
        "x",
        &format!("subscription {{ executionChanged(functionId: \"{function}\") {{ {fields} }} }}"),
    )
    .await;
    ws.ping_pong().await;
    ws
}

/// Waits until `count` executions have been heard ending.
async fn ended_executions(ws: &mut WsClient, count: usize) {
    let mut ended = BTreeSet::new();
    tokio::time::timeout(WAIT, async {
        while ended.len() < count {
            let message = ws.next_json().await.expect("an execution event");
            let execution = &message["payload"]["data"]["executionChanged"];
            if execution["status"] == "COMPLETED" || execution["status"] == "FAILED" {
                ended.insert(execution["id"].as_str().unwrap().to_string());
            }
        }
    })
    .await
    .expect("the executions end in time");
}

/// Execution `id` of `whoami`, as the admin reads it.
async fn whoami_execution(app: &TestApp, id: String) -> Value {
    app.admin(
        "query($id: ID!) { execution(functionId: \"whoami\", executionId: $id) { status failure scheduledAt responseStatusCode responseBody errors requestHeaders { name value } } }",
        json!({"id": id}),
    )
    .await
    .ok()["execution"]
        .clone()
}

async fn user_id(app: &TestApp, secret: &str) -> String {
    app.as_session(secret, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn later(app: &TestApp, secret: &str) -> String {
    let bearer = format!("Bearer {secret}");
    let queued = execute_as(
        app,
        &[("authorization", &bearer)],
        json!({"functionId": "whoami", "async": true}),
    )
    .await
    .ok()["createExecution"]
        .clone();
    assert_eq!(queued["status"], "WAITING", "{queued:#}");
    queued["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn an_async_execution_runs_as_the_user_who_started_it_if_they_still_may() {
    let app = replica_without_jobs().await;
    let ann = app.signed_in("ann@example.com").await;
    let bob = app.signed_in("bob@example.com").await;
    let cat = app.signed_in("cat@example.com").await;
    let ann_id = user_id(&app, &ann).await;
    let bob_id = user_id(&app, &bob).await;
    let ann_run = later(&app, &ann).await;
    let bob_run = later(&app, &bob).await;
    let cat_run = later(&app, &cat).await;
    // Before the jobs run: Bob is blocked, Cat signs out.
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, blocked: true}) { id } }",
        json!({"id": bob_id}),
    )
    .await
    .ok();
    app.as_session(
        &cat,
        "mutation { deleteSession(input: {id: \"current\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    // The jobs name the user and session, never a secret.
    let jobs = app
        .admin(
            "query { jobs(kind: \"functions.execute\", first: 10) { nodes { payload } } }",
            json!({}),
        )
        .await
        .ok();
    let payloads = jobs["jobs"]["nodes"].to_string();
    assert!(payloads.contains(&ann_id), "{payloads}");
    for secret in [&ann, &bob, &cat] {
        assert!(!payloads.contains(secret.as_str()), "{payloads}");
    }

    let mut ws = watch_whoami(&app).await;
    let runner = replica_with_jobs(&app).await;
    ended_executions(&mut ws, 3).await;

    let record = |id: String| whoami_execution(&app, id);
    // Ann's ran as Ann, with what a JWT of her session may do, no more.
    let ann_ran = record(ann_run).await;
    assert_eq!(ann_ran["status"], "COMPLETED", "{ann_ran:#}");
    let answer: Value = serde_json::from_str(ann_ran["responseBody"].as_str().unwrap()).unwrap();
    assert_eq!(answer["me"], ann_id.as_str(), "{answer:#}");
    assert_eq!(answer["jwt"], "PERMISSION_DENIED", "{answer:#}");
    // Bob's and Cat's did not run.
    let bob_ran = record(bob_run).await;
    assert_eq!(bob_ran["status"], "FAILED", "{bob_ran:#}");
    assert_eq!(bob_ran["failure"], "USER_BLOCKED", "{bob_ran:#}");
    assert_eq!(bob_ran["responseBody"], "", "{bob_ran:#}");
    let cat_ran = record(cat_run).await;
    assert_eq!(cat_ran["status"], "FAILED", "{cat_ran:#}");
    assert_eq!(cat_ran["failure"], "INVALID_SESSION", "{cat_ran:#}");
    runner.shutdown().await;
    app.shutdown().await;
}

#[tokio::test]
async fn an_async_execution_started_with_a_jwt_acts_no_longer_than_the_jwt() {
    let app = replica_without_jobs().await;
    let ann = app.signed_in("ann@example.com").await;
    let ann_id = user_id(&app, &ann).await;
    let minted = app
        .as_session(&ann, "mutation { createJWT { jwt expiresAt } }", json!({}))
        .await
        .ok();
    let jwt = minted["createJWT"]["jwt"].as_str().unwrap().to_string();
    let expires_at =
        chrono::DateTime::parse_from_rfc3339(minted["createJWT"]["expiresAt"].as_str().unwrap())
            .unwrap()
            .timestamp_millis();
    let in_time = later(&app, &jwt).await;
    let too_late = later(&app, &jwt).await;
    // The job carries the JWT's end; the second one's job runs past it.
    let pool = app.server.as_ref().unwrap().state().db.pool().clone();
    let payloads: Vec<(String, String)> =
        sqlx::query("SELECT id, payload FROM jobs WHERE kind = 'functions.execute'")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|row| {
                (
                    nimbus::db::columns::text(row, "id").unwrap(),
                    nimbus::db::columns::text(row, "payload").unwrap(),
                )
            })
            .collect();
    assert_eq!(payloads.len(), 2);
    for (job, payload) in payloads {
        let mut payload: Value = serde_json::from_str(&payload).unwrap();
        let carried = payload["caller"]["jwtExpiresAt"].as_i64().unwrap();
        assert!((carried - expires_at).abs() < 1000, "{payload:#}");
        if payload["executionId"] == too_late.as_str() {
            payload["caller"]["jwtExpiresAt"] = json!(chrono::Utc::now().timestamp_millis() - 1);
            sqlx::query("UPDATE jobs SET payload = ? WHERE id = ?")
                .bind(payload.to_string())
                .bind(job)
                .execute(&pool)
                .await
                .unwrap();
        }
    }

    let mut ws = watch_whoami(&app).await;
    let runner = replica_with_jobs(&app).await;
    ended_executions(&mut ws, 2).await;
    let ended = |id: String| whoami_execution(&app, id);
    let ran = ended(in_time).await;
    assert_eq!(ran["status"], "COMPLETED", "{ran:#}");
    let answer: Value = serde_json::from_str(ran["responseBody"].as_str().unwrap()).unwrap();
    assert_eq!(answer["me"], ann_id.as_str(), "{answer:#}");
    let refused = ended(too_late).await;
    assert_eq!(refused["status"], "FAILED", "{refused:#}");
    assert_eq!(refused["failure"], "JWT_EXPIRED", "{refused:#}");
    assert_eq!(refused["responseBody"], "", "{refused:#}");
    runner.shutdown().await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_scheduled_execution_waits_for_its_time_and_can_be_cancelled_before() {
    let app = replica_without_jobs().await;
    let ann = app.signed_in("ann@example.com").await;
    let ann_id = user_id(&app, &ann).await;
    let bearer = format!("Bearer {ann}");
    let schedule = |input: Value| {
        let bearer = bearer.clone();
        let app = &app;
        async move {
            app.post(
                json!({"query": "mutation($input: CreateExecutionInput!) { createExecution(input: $input) { id status scheduledAt } }", "variables": {"input": input}}),
                &[("authorization", &bearer)],
            )
            .await
        }
    };
    let in_minutes = |minutes: i64| {
        (chrono::Utc::now() + chrono::Duration::minutes(minutes))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    // Refused: not in the background, too soon, too far, not a time.
    for (input, code) in [
        (
            json!({"functionId": "whoami", "scheduledAt": in_minutes(5)}),
            "BAD_USER_INPUT",
        ),
        (
            json!({"functionId": "whoami", "async": true, "scheduledAt": in_minutes(5), "body": "x".repeat(64 * 1024 + 1)}),
            "BAD_USER_INPUT",
        ),
        (
            json!({"functionId": "whoami", "async": true, "scheduledAt": (chrono::Utc::now() + chrono::Duration::seconds(10)).to_rfc3339()}),
            "BAD_USER_INPUT",
        ),
        (
            json!({"functionId": "whoami", "async": true, "scheduledAt": in_minutes(60 * 24 * 400)}),
            "BAD_USER_INPUT",
        ),
        (
            json!({"functionId": "whoami", "async": true, "scheduledAt": "tomorrow"}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ] {
        let refused = schedule(input.clone()).await;
        assert_eq!(refused.code(), code, "{input}: {:#}", refused.body);
    }
    let at = in_minutes(5);
    let mut scheduled = Vec::new();
    for _ in 0..2 {
        let made = schedule(json!({"functionId": "whoami", "async": true, "scheduledAt": at}))
            .await
            .ok()["createExecution"]
            .clone();
        assert_eq!(made["status"], "SCHEDULED", "{made:#}");
        assert_eq!(made["scheduledAt"], at.as_str(), "{made:#}");
        scheduled.push(made["id"].as_str().unwrap().to_string());
    }
    let (kept, cancelled) = (scheduled[0].clone(), scheduled[1].clone());
    let cancel = app
        .admin(
            "mutation($id: ID!) { deleteExecution(input: {functionId: \"whoami\", executionId: $id}) { deletedId } }",
            json!({"id": cancelled}),
        )
        .await
        .ok();
    assert_eq!(cancel["deleteExecution"]["deletedId"], cancelled.as_str());
    // The jobs wait for the time asked; brought forward, they run now.
    let pool = app.server.as_ref().unwrap().state().db.pool().clone();
    let due: Vec<(i64,)> =
        sqlx::query_as("SELECT run_at FROM jobs WHERE kind = 'functions.execute'")
            .fetch_all(&pool)
            .await
            .unwrap();
    let at_millis = chrono::DateTime::parse_from_rfc3339(&at)
        .unwrap()
        .timestamp_millis();
    assert_eq!(due, vec![(at_millis,), (at_millis,)]);
    sqlx::query("UPDATE jobs SET run_at = ? WHERE kind = 'functions.execute'")
        .bind(chrono::Utc::now().timestamp_millis())
        .execute(&pool)
        .await
        .unwrap();

    let mut ws = watch_whoami(&app).await;
    let runner = replica_with_jobs(&app).await;
    let mut heard = Vec::new();
    let finished = tokio::time::timeout(WAIT, async {
        loop {
            let message = ws.next_json().await.expect("an execution event");
            let execution = message["payload"]["data"]["executionChanged"].clone();
            heard.push(execution["status"].clone());
            if execution["status"] == "COMPLETED" || execution["status"] == "FAILED" {
                return execution;
            }
        }
    })
    .await
    .expect("the scheduled execution runs in time");
    assert_eq!(finished["id"], kept.as_str());
    // Its watchers heard it start (no longer to be cancelled), then end.
    assert_eq!(heard, [json!("PROCESSING"), json!("COMPLETED")]);
    let ran = whoami_execution(&app, kept).await;
    assert_eq!(ran["status"], "COMPLETED", "{ran:#}");
    assert_eq!(ran["scheduledAt"], at.as_str(), "{ran:#}");
    let answer: Value = serde_json::from_str(ran["responseBody"].as_str().unwrap()).unwrap();
    assert_eq!(answer["me"], ann_id.as_str(), "it ran as Ann: {answer:#}");
    assert!(
        ran["requestHeaders"]
            .as_array()
            .unwrap()
            .contains(&json!({"name": "x-appwrite-trigger", "value": "schedule"})),
        "{ran:#}"
    );
    // The cancelled one's job found nothing to run, and wrote nothing back.
    let pending = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM jobs WHERE kind = 'functions.execute' AND status IN ('queued', 'running')",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    tokio::time::timeout(WAIT, async {
        while pending().await > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("both jobs are done in time");
    let gone = app
        .admin(
            "query($id: ID!) { execution(functionId: \"whoami\", executionId: $id) { id } }",
            json!({"id": cancelled}),
        )
        .await;
    assert_eq!(gone.code(), "EXECUTION_NOT_FOUND", "{:#}", gone.body);
    runner.shutdown().await;
    app.shutdown().await;
}

#[tokio::test]
async fn scheduled_executions_have_their_own_bound_and_a_jwt_schedules_only_within_its_life() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.functions_max_scheduled = 2;
    config.functions_max_waiting = 100;
    let app = spawn_with(config, dir).await;
    deployed(
        &app,
        "later",
        json!({"execute": ["users"]}),
        "export default async ({ res }) => res.text('ran');",
    )
    .await;
    let ann = app.signed_in("ann@example.com").await;
    let in_minutes = |minutes: i64| {
        (chrono::Utc::now() + chrono::Duration::minutes(minutes))
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let run = |secret: String, input: Value| {
        let app = &app;
        async move {
            let bearer = format!("Bearer {secret}");
            execute_as(app, &[("authorization", &bearer)], input).await
        }
    };
    let scheduled = json!({"functionId": "later", "async": true, "scheduledAt": in_minutes(10)});
    for _ in 0..2 {
        run(ann.clone(), scheduled.clone()).await.ok();
    }
    let full = run(ann.clone(), scheduled.clone()).await;
    assert_eq!(full.code(), "TOO_MANY_EXECUTIONS", "{:#}", full.body);
    // Executions that wait to run at once are counted apart, and still taken.
    let queued = run(ann.clone(), json!({"functionId": "later", "async": true}))
        .await
        .ok();
    assert_eq!(queued["createExecution"]["status"], "WAITING");

    // A JWT lends at most its 15 minutes: a run after them is refused up front.
    let jwt = app
        .as_session(&ann, "mutation { createJWT { jwt } }", json!({}))
        .await
        .ok()["createJWT"]["jwt"]
        .as_str()
        .unwrap()
        .to_string();
    let past_jwt = run(
        jwt,
        json!({"functionId": "later", "async": true, "scheduledAt": in_minutes(30)}),
    )
    .await;
    assert_eq!(past_jwt.code(), "BAD_USER_INPUT", "{:#}", past_jwt.body);
    app.shutdown().await;
}

#[tokio::test]
async fn deployments_are_rate_limited_per_project_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.functions_deployments_per_minute = 3;
    let app = spawn_with(config, dir).await;
    deployed(&app, "often", json!({}), HOSTILE).await;
    let code = b"export default async ({ res }) => res.text('fine');";
    // The first counted; a refused upload counts too (it was compiled).
    deploy(&app, "often", "main.js", b"export default (").await;
    deploy(&app, "often", "main.js", code).await.ok();
    let limited = deploy(&app, "often", "main.js", code).await;
    assert_eq!(limited.code(), "RATE_LIMITED", "{:#}", limited.body);
    let retry = limited.body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    // Another project is not held back by this one.
    app.create_project("other").await;
    app.as_key(
        &app.admin_key,
        "other",
        crate::functions::CREATE,
        json!({"input": {"id": "elsewhere", "name": "x", "entrypoint": "main.js"}}),
    )
    .await
    .ok();
    let elsewhere = deploy_response(&app, "other", "elsewhere", "main.js", code).await;
    let elsewhere: Value = elsewhere.json().await.unwrap();
    assert!(elsewhere.get("errors").is_none(), "{elsewhere:#}");
    // Executions are not deployments: the function still runs.
    still_fine(&app, "often").await;
    app.shutdown().await;
}

#[tokio::test]
async fn rate_limited_graphql_answers_carry_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.functions_deployments_per_minute = 1;
    let app = spawn_with(config, dir).await;
    deployed(&app, "once", json!({}), HOSTILE).await;
    // The one deployment `deployed` made used the minute's allowance.
    let response = deploy_response(&app, "default", "once", "main.js", HOSTILE.as_bytes()).await;
    let retry_after = response
        .headers()
        .get("retry-after")
        .expect("a Retry-After header")
        .to_str()
        .unwrap()
        .parse::<u64>()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "RATE_LIMITED");
    assert_eq!(body["errors"][0]["extensions"]["retryAfter"], retry_after);
    app.shutdown().await;
}

#[tokio::test]
async fn an_event_over_the_request_size_limit_is_not_passed_as_the_body() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.jobs_poll_ms = 50;
    config.functions_max_request_bytes = 1024;
    let app = spawn_with(config, dir).await;
    app.admin(
        "mutation { createDatabase(input: {id: \"app\", name: \"App\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {"databaseId": "app", "id": "notes", "name": "notes",
            "attributes": [{"key": "text", "type": "STRING", "size": 5000, "required": true}]}}),
    )
    .await
    .ok();
    deployed(
        &app,
        "sizes",
        json!({"events": ["databases.*.collections.notes.documents.*.create"]}),
        r#"export default async ({ req, res }) => res.json({
            bytes: req.bodyText.length,
            omitted: req.headers['x-nimbus-event-body'] ?? null,
            event: req.headers['x-nimbus-event'],
        });"#,
    )
    .await;
    let mut ws = watch_executions(&app, "sizes", "id status responseBody").await;
    for (id, size) in [("small", 10), ("large", 4000)] {
        app.admin(
            "mutation($id: ID!, $text: String!) { createDocument(input: {databaseId: \"app\", collectionId: \"notes\", id: $id, data: {text: $text}}) { id } }",
            json!({"id": id, "text": "t".repeat(size)}),
        )
        .await
        .ok();
    }
    let mut answers = Vec::new();
    tokio::time::timeout(WAIT, async {
        while answers.len() < 2 {
            let message = ws.next_json().await.expect("an execution event");
            let execution = &message["payload"]["data"]["executionChanged"];
            if execution["status"] == "COMPLETED" {
                answers.push(
                    serde_json::from_str::<Value>(execution["responseBody"].as_str().unwrap())
                        .unwrap(),
                );
            }
            assert_ne!(execution["status"], "FAILED", "{execution:#}");
        }
    })
    .await
    .expect("both executions end in time");
    answers.sort_by_key(|a| a["event"].as_str().unwrap().to_string());
    // `large` sorts first.
    assert_eq!(answers[0]["bytes"], 0, "{answers:#?}");
    assert_eq!(answers[0]["omitted"], "omitted", "{answers:#?}");
    assert!(answers[0]["event"].as_str().unwrap().contains(".large."));
    let small = answers[1]["bytes"].as_u64().unwrap();
    assert!(small > 10 && small <= 1024, "{answers:#?}");
    assert_eq!(answers[1]["omitted"], Value::Null, "{answers:#?}");
    app.shutdown().await;
}

/// Deleting a function takes its executions along: those yet to end are
/// announced as deleted to whoever watches them, who would otherwise wait for an
/// end that never comes.
#[tokio::test]
async fn executions_yet_to_end_are_announced_deleted_with_their_function() {
    let app = replica_without_jobs().await;
    let ann = app.signed_in("ann@example.com").await;
    let bearer = format!("Bearer {ann}");
    let at = (chrono::Utc::now() + chrono::Duration::minutes(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut pending = Vec::new();
    for input in [
        json!({"functionId": "whoami", "async": true, "scheduledAt": at}),
        // Waits: no replica here runs jobs.
        json!({"functionId": "whoami", "async": true}),
    ] {
        let made = app
            .post(
                json!({"query": "mutation($input: CreateExecutionInput!) { createExecution(input: $input) { id status } }", "variables": {"input": input}}),
                &[("authorization", &bearer)],
            )
            .await
            .ok();
        pending.push(made["createExecution"]["id"].as_str().unwrap().to_string());
    }
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"Authorization": bearer}))
        .await
        .expect("ack");
    ws.subscribe(
        "mine",
        "subscription { realtime(channels: [\"functions.whoami.executions\"]) { events } }",
    )
    .await;
    ws.ping_pong().await;
    app.admin(
        "mutation { deleteFunction(input: {id: \"whoami\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    let mut deleted = BTreeSet::new();
    tokio::time::timeout(WAIT, async {
        while deleted.len() < pending.len() {
            let message = ws.next_json().await.expect("an execution event");
            for name in message["payload"]["data"]["realtime"]["events"]
                .as_array()
                .unwrap()
            {
                let name = name.as_str().unwrap();
                if let Some(id) = name
                    .strip_prefix("functions.whoami.executions.")
                    .and_then(|rest| rest.strip_suffix(".delete"))
                    .filter(|id| *id != "*")
                {
                    deleted.insert(id.to_string());
                }
            }
        }
    })
    .await
    .expect("each pending execution is announced deleted");
    assert_eq!(deleted, pending.into_iter().collect());
    app.shutdown().await;
}
