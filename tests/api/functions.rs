//! Functions: settings checked with stable codes, variables sealed and never
//! shown, deployments compiled once (a syntax error names its line), executions
//! run synchronously, as jobs and over plain HTTP, who may run and read them, and
//! what a guest reaches outside the sandbox (`nimbus.graphql` with the caller's
//! or the function's rights, `fetch` kept off private addresses).

use std::io::Write as _;

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, WAIT, WsClient, spawn_app, spawn_with, test_config};

pub(crate) const CREATE: &str = "mutation($input: CreateFunctionInput!) { createFunction(input: $input) { id name runtime entrypoint execute events schedule timeout memory enabled scopes deploymentId } }";
pub(crate) const UPDATE: &str = "mutation($input: UpdateFunctionInput!) { updateFunction(input: $input) { id name execute schedule timeout enabled } }";
pub(crate) const EXECUTE: &str = "mutation($input: CreateExecutionInput!) { createExecution(input: $input) { id status trigger responseStatusCode responseBody responseHeaders { name value } logs errors failure duration } }";
pub(crate) const VARIABLE: &str =
    "mutation($input: VariableInput!) { createVariable(input: $input) { key size } }";

pub(crate) async fn create(app: &TestApp, input: Value) -> Answer {
    app.admin(CREATE, json!({ "input": input })).await
}

/// A multipart `createDeployment` request (the GraphQL multipart request spec).
pub(crate) async fn deploy(app: &TestApp, function: &str, filename: &str, bytes: &[u8]) -> Answer {
    let response = deploy_response(app, "default", function, filename, bytes).await;
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    Answer {
        status,
        body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
    }
}

/// The HTTP response to a `createDeployment` in `project`, as the admin.
pub(crate) async fn deploy_response(
    app: &TestApp,
    project: &str,
    function: &str,
    filename: &str,
    bytes: &[u8],
) -> reqwest::Response {
    deploy_response_as(app, &app.admin_key, project, function, filename, bytes).await
}

/// The HTTP response to a `createDeployment` in `project`, with `key`.
pub(crate) async fn deploy_response_as(
    app: &TestApp,
    key: &str,
    project: &str,
    function: &str,
    filename: &str,
    bytes: &[u8],
) -> reqwest::Response {
    let boundary = "nimbus-functions-boundary-5c1e";
    let operations = json!({
        "query": "mutation($input: CreateDeploymentInput!) { createDeployment(input: $input) { id functionId modules sourceSize } }",
        "variables": { "input": { "functionId": function, "code": null } },
    });
    let mut body = Vec::new();
    let mut part = |headers: &str, content: &[u8]| {
        body.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    };
    part(
        "Content-Disposition: form-data; name=\"operations\"",
        operations.to_string().as_bytes(),
    );
    part(
        "Content-Disposition: form-data; name=\"map\"",
        br#"{"0": ["variables.input.code"]}"#,
    );
    part(
        &format!(
            "Content-Disposition: form-data; name=\"0\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream"
        ),
        bytes,
    );
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    app.multipart_post(boundary)
        .header("x-nimbus-key", key)
        .header("x-nimbus-project", project)
        .body(body)
        .send()
        .await
        .expect("request sent")
}

/// A function `id` whose code is `code` (one `main.js`), deployed and active.
pub(crate) async fn deployed(app: &TestApp, id: &str, settings: Value, code: &str) {
    let mut input = json!({"id": id, "name": id, "entrypoint": "main.js"});
    input
        .as_object_mut()
        .unwrap()
        .extend(settings.as_object().unwrap().clone());
    create(app, input).await.ok();
    deploy(app, id, "main.js", code.as_bytes()).await.ok();
}

/// A gzipped tar of `files`.
pub(crate) fn tar_gz(files: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, text) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(text.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        // Written raw, so a path the `tar` crate would refuse (`..`) can be tried.
        let name = &mut header.as_old_mut().name;
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, text.as_bytes()).unwrap();
    }
    let tar = builder.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    gz.finish().unwrap()
}

pub(crate) async fn execute_as(app: &TestApp, headers: &[(&str, &str)], input: Value) -> Answer {
    app.post(
        json!({"query": EXECUTE, "variables": {"input": input}}),
        headers,
    )
    .await
}

/// What execution `id` of `function` logged, as a key reads it (callers and events
/// are not shown logs).
pub(crate) async fn logs_of(app: &TestApp, function: &str, id: &str) -> String {
    let read = app
        .admin(
            "query($f: ID!, $id: ID!) { execution(functionId: $f, executionId: $id) { logs } }",
            json!({ "f": function, "id": id }),
        )
        .await
        .ok();
    read["execution"]["logs"].as_str().unwrap().to_string()
}

pub(crate) async fn execute(app: &TestApp, input: Value) -> Answer {
    let key = app.admin_key.clone();
    execute_as(app, &[("x-nimbus-key", &key)], input).await
}

#[tokio::test]
async fn functions_are_created_changed_listed_and_deleted_with_checked_settings() {
    let app = spawn_app().await;
    let made = create(
        &app,
        json!({
            "id": "enrich", "name": "Enrich", "entrypoint": "src/main.mjs",
            "execute": ["users", "team:core/owner"], "events": ["databases.*.collections.*.documents.*.create"],
            "schedule": "*/5 * * * *", "timeout": 30, "memory": 128, "scopes": ["documents.read"],
        }),
    )
    .await
    .ok()["createFunction"]
        .clone();
    assert_eq!(made["runtime"], "JS");
    assert_eq!(made["execute"], json!(["users", "team:core/owner"]));
    assert_eq!(made["schedule"], "*/5 * * * *");
    assert_eq!(made["timeout"], 30);
    assert_eq!(made["memory"], 128);
    assert_eq!(made["enabled"], true);
    assert_eq!(made["scopes"], json!(["documents.read"]));
    assert_eq!(made["deploymentId"], Value::Null);

    for (input, code, field) in [
        (
            json!({"name": "x", "entrypoint": "../main.js"}),
            "BAD_USER_INPUT",
            "entrypoint",
        ),
        (
            json!({"name": "x", "entrypoint": "main.py"}),
            "BAD_USER_INPUT",
            "entrypoint",
        ),
        (
            json!({"name": "", "entrypoint": "main.js"}),
            "BAD_USER_INPUT",
            "name",
        ),
        (
            json!({"name": "x", "entrypoint": "main.js", "execute": ["everyone"]}),
            "INVALID_ROLE",
            "execute",
        ),
        (
            json!({"name": "x", "entrypoint": "main.js", "events": ["documents.*.create"]}),
            "INVALID_FUNCTION_EVENTS",
            "events",
        ),
        (
            json!({"name": "x", "entrypoint": "main.js", "schedule": "every minute"}),
            "INVALID_SCHEDULE",
            "schedule",
        ),
        (
            json!({"name": "x", "entrypoint": "main.js", "timeout": 0}),
            "BAD_USER_INPUT",
            "timeout",
        ),
        (
            json!({"name": "x", "entrypoint": "main.js", "timeout": 901}),
            "BAD_USER_INPUT",
            "timeout",
        ),
        (
            json!({"name": "x", "entrypoint": "main.js", "memory": 4096}),
            "BAD_USER_INPUT",
            "memory",
        ),
        (
            json!({"name": "x", "entrypoint": "main.js", "scopes": ["documents.everything"]}),
            "INVALID_SCOPE",
            "scopes",
        ),
        (
            json!({"name": "x", "entrypoint": "main.js", "scopes": ["admin"]}),
            "INVALID_SCOPE",
            "scopes",
        ),
        (
            json!({"id": "enrich", "name": "x", "entrypoint": "main.js"}),
            "FUNCTION_ALREADY_EXISTS",
            "",
        ),
    ] {
        let answer = create(&app, input.clone()).await;
        assert_eq!(answer.code(), code, "{input}: {:#}", answer.body);
        if !field.is_empty() {
            assert_eq!(
                answer.body["errors"][0]["extensions"]["field"], field,
                "{input}"
            );
        }
    }

    // A key gives a function no scope it does not hold itself.
    let writer = app
        .create_key("default", &["functions.write", "functions.read"])
        .await;
    let beyond = app
        .as_key(
            &writer,
            "default",
            CREATE,
            json!({"input": {"name": "x", "entrypoint": "main.js", "scopes": ["users.write"]}}),
        )
        .await;
    assert_eq!(beyond.code(), "PERMISSION_DENIED", "{:#}", beyond.body);
    // Reading needs `functions.read`; signed-in users manage no functions.
    let reader = app.create_key("default", &["executions.read"]).await;
    let refused = app
        .as_key(
            &reader,
            "default",
            "{ functions { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(refused.code(), "SCOPE_MISSING");
    let ann = app.signed_in("ann@example.com").await;
    let refused = app
        .as_session(
            &ann,
            CREATE,
            json!({"input": {"name": "x", "entrypoint": "main.js"}}),
        )
        .await;
    assert_eq!(refused.code(), "PERMISSION_DENIED");

    let changed = app
        .admin(UPDATE, json!({"input": {"id": "enrich", "name": "Enrich more", "schedule": "", "enabled": false, "execute": ["any"]}}))
        .await
        .ok()["updateFunction"]
        .clone();
    assert_eq!(changed["name"], "Enrich more");
    assert_eq!(changed["schedule"], Value::Null);
    assert_eq!(changed["enabled"], false);
    assert_eq!(changed["execute"], json!(["any"]));
    let bad = app
        .admin(
            UPDATE,
            json!({"input": {"id": "enrich", "schedule": "61 * * * *"}}),
        )
        .await;
    assert_eq!(bad.code(), "INVALID_SCHEDULE");
    // crontab's shorthands and day numbers (0 and 7 are Sunday) are schedules.
    for schedule in ["@daily", "0 9 * * 1-5", "30 6 * * 0,7"] {
        let taken = app
            .admin(
                UPDATE,
                json!({"input": {"id": "enrich", "schedule": schedule}}),
            )
            .await
            .ok();
        assert_eq!(taken["updateFunction"]["schedule"], schedule);
    }
    for schedule in ["0 9 * * 8", "@sometimes"] {
        let bad = app
            .admin(
                UPDATE,
                json!({"input": {"id": "enrich", "schedule": schedule}}),
            )
            .await;
        assert_eq!(bad.code(), "INVALID_SCHEDULE", "{schedule}");
    }

    create(
        &app,
        json!({"id": "second", "name": "Second", "entrypoint": "main.js"}),
    )
    .await
    .ok();
    let listed = app
        .admin(
            "{ functions(first: 1) { totalCount nodes { id } pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(listed["functions"]["totalCount"], 2);
    assert_eq!(listed["functions"]["nodes"][0]["id"], "enrich");
    assert_eq!(listed["functions"]["pageInfo"]["hasNextPage"], true);

    let deleted = app
        .admin(
            "mutation { deleteFunction(input: {id: \"enrich\"}) { deletedId } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(deleted["deleteFunction"]["deletedId"], "enrich");
    let gone = app
        .admin("{ function(id: \"enrich\") { id } }", json!({}))
        .await;
    assert_eq!(gone.code(), "FUNCTION_NOT_FOUND");
    app.shutdown().await;
}

#[tokio::test]
async fn variables_are_sealed_at_rest_never_shown_and_bounded() {
    let app = spawn_app().await;
    create(
        &app,
        json!({"id": "vars", "name": "Vars", "entrypoint": "main.js"}),
    )
    .await
    .ok();
    let secret = "sk_live_very_secret_value_1234";
    let made = app
        .admin(
            VARIABLE,
            json!({"input": {"functionId": "vars", "key": "STRIPE_KEY", "value": secret}}),
        )
        .await;
    assert!(!made.body.to_string().contains(secret));
    assert_eq!(made.ok()["createVariable"]["size"], secret.len());
    let listed = app
        .admin(
            "{ functionVariables(functionId: \"vars\") { key size createdAt } }",
            json!({}),
        )
        .await;
    assert!(!listed.body.to_string().contains(secret));
    assert_eq!(listed.ok()["functionVariables"][0]["key"], "STRIPE_KEY");
    // The type has no field that could show a value.
    let asked = app
        .admin(
            "{ functionVariables(functionId: \"vars\") { value } }",
            json!({}),
        )
        .await;
    assert_eq!(
        asked.code(),
        "GRAPHQL_VALIDATION_FAILED",
        "{:#}",
        asked.body
    );

    // At rest the value is sealed.
    let pool = app.server.as_ref().unwrap().state().db.pool().clone();
    let row = sqlx::query("SELECT value FROM function_variables")
        .fetch_one(&pool)
        .await
        .unwrap();
    let stored = nimbus::db::columns::text(&row, "value").unwrap();
    assert!(!stored.is_empty());
    assert!(!stored.contains(secret));

    for (input, code) in [
        (
            json!({"functionId": "vars", "key": "STRIPE_KEY", "value": "again"}),
            "VARIABLE_ALREADY_EXISTS",
        ),
        (
            json!({"functionId": "vars", "key": "1BAD", "value": "x"}),
            "INVALID_VARIABLE",
        ),
        (
            json!({"functionId": "vars", "key": "BIG", "value": "x".repeat(8 * 1024 + 1)}),
            "INVALID_VARIABLE",
        ),
        (
            json!({"functionId": "nope", "key": "K", "value": "x"}),
            "FUNCTION_NOT_FOUND",
        ),
    ] {
        let answer = app.admin(VARIABLE, json!({"input": input})).await;
        assert_eq!(answer.code(), code, "{:#}", answer.body);
    }
    // 64 KiB together at most.
    for n in 0..7 {
        app.admin(VARIABLE, json!({"input": {"functionId": "vars", "key": format!("PART_{n}"), "value": "y".repeat(8 * 1024)}}))
            .await
            .ok();
    }
    let over = app
        .admin(VARIABLE, json!({"input": {"functionId": "vars", "key": "PART_7", "value": "y".repeat(8 * 1024)}}))
        .await;
    assert_eq!(over.code(), "INVALID_VARIABLE", "{:#}", over.body);

    let missing = app
        .admin("mutation { updateVariable(input: {functionId: \"vars\", key: \"NOPE\", value: \"v\"}) { key } }", json!({}))
        .await;
    assert_eq!(missing.code(), "VARIABLE_NOT_FOUND");
    let updated = app
        .admin("mutation { updateVariable(input: {functionId: \"vars\", key: \"STRIPE_KEY\", value: \"new\"}) { size } }", json!({}))
        .await
        .ok();
    assert_eq!(updated["updateVariable"]["size"], 3);
    app.admin("mutation { deleteVariable(input: {functionId: \"vars\", key: \"STRIPE_KEY\"}) { deletedId } }", json!({}))
        .await
        .ok();
    let listed = app
        .admin(
            "{ functionVariables(functionId: \"vars\") { key } }",
            json!({}),
        )
        .await
        .ok();
    assert!(!listed.to_string().contains("STRIPE_KEY"));
    app.shutdown().await;
}

#[tokio::test]
async fn uploads_that_are_not_javascript_or_break_the_archive_rules_are_refused() {
    let app = spawn_app().await;
    create(
        &app,
        json!({"id": "code", "name": "Code", "entrypoint": "main.js"}),
    )
    .await
    .ok();
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    for (filename, bytes, needle) in [
        ("logo.png", png.to_vec(), "upload one"),
        ("main.js", png.to_vec(), "not"),
        ("code.tar.gz", b"not gzip at all".to_vec(), "gzipped tar"),
        (
            "code.tar.gz",
            tar_gz(&[("../evil.js", "export default () => 1")]),
            "plain names",
        ),
        (
            "code.tar.gz",
            tar_gz(&[("main.js", "x"), ("run.sh", "rm -rf /")]),
            "only",
        ),
        (
            "code.tar.gz",
            tar_gz(&[("lib.js", "export const a = 1;")]),
            "entrypoint `main.js`",
        ),
    ] {
        let answer = deploy(&app, "code", filename, &bytes).await;
        assert_eq!(
            answer.code(),
            "DEPLOYMENT_INVALID",
            "{filename}: {:#}",
            answer.body
        );
        let message = answer.body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(needle), "{filename}: {message}");
    }
    let listed = app
        .admin(
            "{ deployments(functionId: \"code\") { totalCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(listed["deployments"]["totalCount"], 0);
    app.shutdown().await;
}

#[tokio::test]
async fn execute_roles_decide_who_may_run_a_function() {
    let app = spawn_app().await;
    deployed(
        &app,
        "members",
        json!({"execute": ["users"]}),
        "export default async ({ res }) => res.text('hello member')",
    )
    .await;
    deployed(
        &app,
        "public",
        json!({"execute": ["any"]}),
        "export default async ({ res }) => res.text('hello anyone')",
    )
    .await;
    let guest = execute_as(&app, &[], json!({"functionId": "members"})).await;
    assert_eq!(guest.code(), "UNAUTHENTICATED", "{:#}", guest.body);
    let nobody = app.create_key("default", &["functions.read"]).await;
    let keyed = execute_as(
        &app,
        &[("x-nimbus-key", &nobody)],
        json!({"functionId": "members"}),
    )
    .await;
    assert_eq!(keyed.code(), "SCOPE_MISSING");
    let ann = app.signed_in("ann@example.com").await;
    let bearer = format!("Bearer {ann}");
    let member = execute_as(
        &app,
        &[("authorization", &bearer)],
        json!({"functionId": "members"}),
    )
    .await;
    assert_eq!(
        member.ok()["createExecution"]["responseBody"],
        "hello member"
    );
    let public = execute_as(&app, &[], json!({"functionId": "public"})).await;
    assert_eq!(
        public.ok()["createExecution"]["responseBody"],
        "hello anyone"
    );

    // A guest cannot read an execution; its caller can, and only its own.
    let ann_run = execute_as(
        &app,
        &[("authorization", &bearer)],
        json!({"functionId": "members"}),
    )
    .await
    .ok();
    let id = ann_run["createExecution"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let read =
        format!("{{ execution(functionId: \"members\", executionId: \"{id}\") {{ id status }} }}");
    assert_eq!(
        app.post(json!({"query": read}), &[]).await.code(),
        "EXECUTION_NOT_FOUND"
    );
    let bob = app.signed_in("bob@example.com").await;
    assert_eq!(
        app.as_session(&bob, &read, json!({})).await.code(),
        "EXECUTION_NOT_FOUND"
    );
    assert_eq!(
        app.as_session(&ann, &read, json!({})).await.ok()["execution"]["status"],
        "COMPLETED"
    );
    let mine = app
        .as_session(
            &bob,
            "{ executions(functionId: \"members\") { totalCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(mine["executions"]["totalCount"], 0);

    app.admin(UPDATE, json!({"input": {"id": "public", "enabled": false}}))
        .await
        .ok();
    let disabled = execute_as(&app, &[], json!({"functionId": "public"})).await;
    assert_eq!(disabled.code(), "FUNCTION_DISABLED");
    app.shutdown().await;
}

#[tokio::test]
async fn a_deployment_runs_synchronously_with_its_body_status_headers_logs_and_env() {
    let app = spawn_app().await;
    create(
        &app,
        json!({"id": "echo", "name": "Echo", "entrypoint": "main.js"}),
    )
    .await
    .ok();
    app.admin(
        VARIABLE,
        json!({"input": {"functionId": "echo", "key": "GREETING", "value": "hej"}}),
    )
    .await
    .ok();
    let code = r#"
        export default async ({ req, res, log, error, env }) => {
            log('method ' + req.method);
            console.log('path', req.path, req.query.x);
            error('careful');
            return res.json(
                { greeting: env.GREETING, body: req.bodyJson, header: req.headers['x-test'] },
                201,
                { 'x-answer': '42' },
            );
        };
    "#;
    let deployment = deploy(&app, "echo", "bundle.mjs", code.as_bytes())
        .await
        .ok();
    assert_eq!(deployment["createDeployment"]["modules"], 1);
    let answer = execute(
        &app,
        json!({"functionId": "echo", "body": "{\"n\": 7}", "method": "PUT", "path": "/items?x=1",
               "headers": [{"name": "X-Test", "value": "yes"}]}),
    )
    .await
    .ok();
    let run = &answer["createExecution"];
    assert_eq!(run["status"], "COMPLETED", "{run:#}");
    assert_eq!(run["trigger"], "GRAPHQL");
    assert_eq!(run["responseStatusCode"], 201);
    let body: Value = serde_json::from_str(run["responseBody"].as_str().unwrap()).unwrap();
    assert_eq!(
        body,
        json!({"greeting": "hej", "body": {"n": 7}, "header": "yes"})
    );
    let headers = run["responseHeaders"].as_array().unwrap();
    assert!(
        headers
            .iter()
            .any(|h| h["name"] == "x-answer" && h["value"] == "42"),
        "{headers:?}"
    );
    let logs = run["logs"].as_str().unwrap();
    assert!(
        logs.contains("method PUT") && logs.contains("/items"),
        "{logs}"
    );
    assert!(run["errors"].as_str().unwrap().contains("careful"));
    assert_eq!(run["failure"], Value::Null);

    // The record keeps it, for a key with `executions.read`.
    let id = run["id"].as_str().unwrap();
    let reader = app.create_key("default", &["executions.read"]).await;
    let kept = app
        .as_key(&reader, "default", &format!("{{ execution(functionId: \"echo\", executionId: \"{id}\") {{ responseStatusCode logs }} }}"), json!({}))
        .await
        .ok();
    assert_eq!(kept["execution"]["responseStatusCode"], 201);

    // The variable reaches `env` but never an answer of the API.
    let all = app
        .admin(
            "{ functionVariables(functionId: \"echo\") { key } }",
            json!({}),
        )
        .await;
    assert!(!all.body.to_string().contains("hej"));
    app.shutdown().await;
}

#[tokio::test]
async fn a_syntax_error_answers_deployment_invalid_with_its_line() {
    let app = spawn_app().await;
    create(
        &app,
        json!({"id": "broken", "name": "Broken", "entrypoint": "main.js"}),
    )
    .await
    .ok();
    let code = "export default async ({ res }) => {\n  const a = 1;\n  return res.text(a +);\n};\n";
    let answer = deploy(&app, "broken", "main.js", code.as_bytes()).await;
    assert_eq!(answer.code(), "DEPLOYMENT_INVALID", "{:#}", answer.body);
    let message = answer.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("main.js") && message.contains("line 3"),
        "{message}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_tar_gz_of_modules_runs_its_entrypoint_with_its_imports() {
    let app = spawn_app().await;
    create(
        &app,
        json!({"id": "modular", "name": "Modular", "entrypoint": "src/main.js"}),
    )
    .await
    .ok();
    let archive = tar_gz(&[
        (
            "src/main.js",
            "import { shout } from './lib/text.js';\nexport default async ({ res }) => res.text(shout('hi'));\n",
        ),
        (
            "src/lib/text.js",
            "export const shout = (s) => s.toUpperCase() + '!';\n",
        ),
    ]);
    let deployment = deploy(&app, "modular", "code.tar.gz", &archive).await.ok();
    assert_eq!(deployment["createDeployment"]["modules"], 2);
    let run = execute(&app, json!({"functionId": "modular"})).await.ok();
    assert_eq!(run["createExecution"]["responseBody"], "HI!", "{run:#}");
    app.shutdown().await;
}

#[tokio::test]
async fn an_async_execution_is_queued_runs_as_a_job_and_is_announced() {
    let app = spawn_app().await;
    deployed(
        &app,
        "later",
        json!({}),
        "export default async ({ res, log }) => { log('ran later'); return res.json({ done: true }); }",
    )
    .await;
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    ws.subscribe(
        "x",
        "subscription { executionChanged(functionId: \"later\") { id status logs responseBody } }",
    )
    .await;
    ws.ping_pong().await;
    let queued = execute(&app, json!({"functionId": "later", "async": true}))
        .await
        .ok();
    assert_eq!(queued["createExecution"]["status"], "WAITING");
    let id = queued["createExecution"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let finished = tokio::time::timeout(WAIT, async {
        loop {
            let message = ws.next_json().await.expect("an execution event");
            let execution = message["payload"]["data"]["executionChanged"].clone();
            if execution["id"] == id.as_str() && execution["status"] != "WAITING" {
                return execution;
            }
        }
    })
    .await
    .expect("the execution finishes in time");
    assert_eq!(finished["status"], "COMPLETED", "{finished:#}");
    assert_eq!(finished["logs"], "", "events carry no logs");
    assert!(logs_of(&app, "later", &id).await.contains("ran later"));
    assert_eq!(finished["responseBody"], "{\"done\":true}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_http_route_passes_the_request_and_returns_the_response() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.functions_max_request_bytes = 1 << 20;
    let app = spawn_with(config, dir).await;
    deployed(
        &app,
        "hook",
        json!({"execute": ["any"]}),
        r#"export default async ({ req, res }) => res.send(
            `${req.method} ${req.path} ${req.queryString} ${req.headers['x-signature']} ${req.bodyText}`,
            202,
            { 'content-type': 'text/plain', 'x-handled': 'yes' },
        );"#,
    )
    .await;
    deployed(
        &app,
        "private",
        json!({"execute": ["users"]}),
        "export default async ({ res }) => res.text('no')",
    )
    .await;
    let url = format!("{}/v1/functions/hook/stripe/events?live=1", app.url);
    let response = app
        .client
        .patch(&url)
        .header("x-signature", "t=1,v1=abc")
        .header("authorization", "Bearer third-party-token")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    assert_eq!(response.headers()["x-handled"], "yes");
    assert!(response.headers().contains_key("x-nimbus-execution-id"));
    assert_eq!(
        response.text().await.unwrap(),
        "PATCH /stripe/events live=1 t=1,v1=abc payload"
    );

    let refused = app
        .client
        .get(format!("{}/v1/functions/private", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status().as_u16(), 401);
    let missing = app
        .client
        .get(format!("{}/v1/functions/nope/x", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status().as_u16(), 404);

    // A body over the limit is refused, over HTTP and over GraphQL.
    let big = app
        .client
        .post(format!("{}/v1/functions/hook", app.url))
        .body(vec![b'a'; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);
    let body: Value = big.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "REQUEST_TOO_LARGE");
    let big = execute(
        &app,
        json!({"functionId": "hook", "body": "a".repeat(2 << 20)}),
    )
    .await;
    assert_eq!(big.code(), "REQUEST_TOO_LARGE", "{}", big.status);
    app.shutdown().await;
}

#[tokio::test]
async fn nimbus_graphql_reads_as_the_caller_and_stops_at_the_function_scopes() {
    let app = spawn_app().await;
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
    app.as_session(
        &ann,
        "mutation { createDocument(input: {databaseId: \"app\", collectionId: \"notes\", id: \"n1\", data: {text: \"ann's\"}}) { id } }",
        json!({}),
    )
    .await
    .ok();
    deployed(
        &app,
        "reader",
        json!({"execute": ["any"], "scopes": ["databases.read"]}),
        r#"export default async ({ res }) => res.json(await nimbus.graphql(
            'query($id: ID!) { document(databaseId: "app", collectionId: "notes", id: $id) { id data } }',
            { id: 'n1' },
        ));"#,
    )
    .await;
    let answer_of = |answer: Answer| -> Value {
        let body = answer.ok()["createExecution"]["responseBody"].clone();
        serde_json::from_str(body.as_str().unwrap()).unwrap()
    };
    let as_ann = answer_of(
        execute_as(
            &app,
            &[("authorization", &format!("Bearer {ann}"))],
            json!({"functionId": "reader"}),
        )
        .await,
    );
    assert_eq!(
        as_ann["data"]["document"]["data"]["text"], "ann's",
        "{as_ann:#}"
    );
    let bob = app.signed_in("bob@example.com").await;
    let as_bob = answer_of(
        execute_as(
            &app,
            &[("authorization", &format!("Bearer {bob}"))],
            json!({"functionId": "reader"}),
        )
        .await,
    );
    // Bob may not read Ann's note: to him it is not there, as in his own app.
    assert_eq!(as_bob["data"]["document"], Value::Null, "{as_bob:#}");
    assert!(as_bob.get("errors").is_none(), "{as_bob:#}");
    // A guest's call runs with the function's scopes: `databases.read` reads no
    // documents.
    let as_guest = answer_of(execute_as(&app, &[], json!({"functionId": "reader"})).await);
    assert_eq!(
        as_guest["errors"][0]["extensions"]["code"], "SCOPE_MISSING",
        "{as_guest:#}"
    );
    app.admin(
        UPDATE,
        json!({"input": {"id": "reader", "scopes": ["documents.read"]}}),
    )
    .await
    .ok();
    let as_guest = answer_of(execute_as(&app, &[], json!({"functionId": "reader"})).await);
    assert_eq!(as_guest["data"]["document"]["id"], "n1", "{as_guest:#}");

    // A function runs another (or itself) only asynchronously: a synchronous chain
    // would hold every sandbox thread, each waiting on the next.
    deployed(
        &app,
        "chain",
        json!({"execute": ["any"], "scopes": ["executions.write"]}),
        r#"export default async ({ res }) => res.json(await nimbus.graphql(
            'mutation { createExecution(input: {functionId: "chain"}) { id } }',
        ));"#,
    )
    .await;
    let chained = answer_of(execute_as(&app, &[], json!({"functionId": "chain"})).await);
    assert_eq!(
        chained["errors"][0]["extensions"]["code"], "OPERATION_NOT_ALLOWED",
        "{chained:#}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn nimbus_graphql_answers_in_the_order_of_the_query() {
    let app = spawn_app().await;
    // The keys as `/v1/graphql` writes them: the query's order, not sorted.
    deployed(
        &app,
        "ordered",
        json!({"execute": ["any"]}),
        r#"export default async ({ res }) => {
            const read = await nimbus.graphql('{ zebra: __typename apple: __typename mango: __typename }');
            if (read.errors) return res.json(read, 500);
            return res.json({ top: Object.keys(read), data: Object.keys(read.data) });
        };"#,
    )
    .await;
    let run = execute(&app, json!({"functionId": "ordered"})).await.ok();
    let body = run["createExecution"]["responseBody"].as_str().unwrap();
    assert_eq!(
        body, r#"{"top":["data"],"data":["zebra","apple","mango"]}"#,
        "{run:#}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn nimbus_graphql_takes_variables_as_json_stringify_writes_them() {
    let app = spawn_app().await;
    // Plain data is written by the host; the rest by `JSON.stringify`, with the
    // same outcome: the variable reaches the query, or the call rejects.
    deployed(
        &app,
        "variables",
        json!({"execute": ["any"]}),
        r#"export default async ({ res }) => {
            const query = 'query($flag: Boolean!) { ... on Query @include(if: $flag) { shown: __typename } }';
            const cyclic = { flag: true }; cyclic.self = cyclic;
            const cases = {
                plain: { flag: true },
                off: { flag: false, extra: [1, 'two', null, { n: 0.5 }] },
                toJSON: { toJSON() { return { flag: true }; } },
                getter: { get flag() { return true; } },
                proxy: new Proxy({ flag: true }, {}),
                nested: { flag: true, deep: JSON.parse('[' .repeat(40) + ']'.repeat(40)) },
                cyclic,
                bigint: { flag: 1n },
                fn: () => 1,
            };
            const out = {};
            for (const [name, variables] of Object.entries(cases)) {
                try {
                    const read = await nimbus.graphql(query, variables);
                    out[name] = read.errors ? read.errors[0].message : (read.data?.shown ?? 'hidden');
                } catch (e) {
                    out[name] = e.name;
                }
            }
            return res.json(out);
        };"#,
    )
    .await;
    let run = execute(&app, json!({"functionId": "variables"})).await.ok();
    let body: Value =
        serde_json::from_str(run["createExecution"]["responseBody"].as_str().unwrap())
            .unwrap_or_else(|_| panic!("{run:#}"));
    assert_eq!(
        body,
        json!({
            "plain": "Query", "off": "hidden", "toJSON": "Query", "getter": "Query",
            "proxy": "Query", "nested": "Query", "cyclic": "TypeError", "bigint": "TypeError",
            "fn": "TypeError",
        }),
        "{run:#}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn fetch_to_a_private_address_is_refused_by_default() {
    let app = spawn_app().await;
    let target = format!("{}/health", app.url);
    deployed(
        &app,
        "fetcher",
        json!({}),
        &format!(
            r#"export default async ({{ res }}) => {{
                try {{ const r = await fetch('{target}'); return res.text('reached ' + r.status); }}
                catch (e) {{ return res.text('refused: ' + e.message, 403); }}
            }};"#
        ),
    )
    .await;
    let run = execute(&app, json!({"functionId": "fetcher"})).await.ok();
    let run = &run["createExecution"];
    assert_eq!(run["responseStatusCode"], 403, "{run:#}");
    assert!(
        run["responseBody"].as_str().unwrap().contains("private"),
        "{run:#}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_endless_loop_fails_with_the_cpu_limit_and_the_next_execution_works() {
    let app = spawn_app().await;
    deployed(
        &app,
        "spin",
        json!({"timeout": 1}),
        "export default async ({ req, res }) => { if (req.path === '/spin') { while (true) {} } return res.text('fine'); }",
    )
    .await;
    let spun = execute(&app, json!({"functionId": "spin", "path": "/spin"}))
        .await
        .ok();
    assert_eq!(spun["createExecution"]["status"], "FAILED", "{spun:#}");
    assert_eq!(spun["createExecution"]["failure"], "EXECUTION_CPU_LIMIT");
    let next = execute(&app, json!({"functionId": "spin"})).await.ok();
    assert_eq!(next["createExecution"]["status"], "COMPLETED");
    assert_eq!(next["createExecution"]["responseBody"], "fine");
    app.shutdown().await;
}

#[tokio::test]
async fn a_schedule_runs_the_function_and_removing_it_stops_the_ticks() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.jobs_poll_ms = 50;
    let app = spawn_with(config, dir).await;
    deployed(
        &app,
        "ticker",
        json!({"schedule": "* * * * * *"}),
        "export default async ({ req, res, log }) => { log('tick ' + req.method); return res.empty(); }",
    )
    .await;
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    ws.subscribe(
        "t",
        "subscription { executionChanged(functionId: \"ticker\") { id status trigger logs } }",
    )
    .await;
    let ran = tokio::time::timeout(WAIT, async {
        loop {
            let message = ws.next_json().await.expect("an execution event");
            let execution = message["payload"]["data"]["executionChanged"].clone();
            if execution["status"] == "COMPLETED" {
                return execution;
            }
        }
    })
    .await
    .expect("a tick runs the function in time");
    assert_eq!(ran["trigger"], "SCHEDULE", "{ran:#}");
    // Events carry no logs; a key reads them.
    assert_eq!(ran["logs"], "", "{ran:#}");
    let logs = logs_of(&app, "ticker", ran["id"].as_str().unwrap()).await;
    assert!(logs.contains("tick POST"), "{logs}");

    let pool = app.server.as_ref().unwrap().state().db.pool().clone();
    let schedules = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM job_schedules WHERE kind = 'functions.schedule'",
        )
        .fetch_one(&pool)
        .await
        .unwrap()
    };
    assert_eq!(schedules().await, 1);
    app.admin(UPDATE, json!({"input": {"id": "ticker", "schedule": ""}}))
        .await
        .ok();
    assert_eq!(schedules().await, 0);
    app.admin(
        UPDATE,
        json!({"input": {"id": "ticker", "schedule": "0 0 * * *"}}),
    )
    .await
    .ok();
    assert_eq!(schedules().await, 1);
    app.admin(
        "mutation { deleteFunction(input: {id: \"ticker\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(schedules().await, 0);
    app.shutdown().await;
}

#[tokio::test]
async fn a_full_sandbox_answers_too_many_executions_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.functions_workers = 1;
    config.functions_queue = 0;
    let app = spawn_with(config, dir).await;
    deployed(
        &app,
        "slow",
        json!({"execute": ["any"], "timeout": 2}),
        "export default async ({ req, res }) => { if (req.path === '/slow') { while (true) {} } return res.text('done'); }",
    )
    .await;
    let url = format!("{}/v1/functions/slow/slow", app.url);
    let client = app.client.clone();
    // The long execution, tried again should a short one hold the thread just then.
    let busy = tokio::spawn(async move {
        loop {
            let status = client.get(&url).send().await.unwrap().status();
            if status.as_u16() != 429 {
                return status;
            }
        }
    });
    // While the one sandbox thread is busy and nothing may wait, a second
    // execution is refused at once.
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            let response = app
                .client
                .get(format!("{}/v1/functions/slow", app.url))
                .send()
                .await
                .unwrap();
            if response.status().as_u16() == 429 {
                return response;
            }
            assert!(
                !busy.is_finished(),
                "no execution was refused while one ran: {}",
                response.text().await.unwrap()
            );
        }
    })
    .await
    .expect("refused in time");
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"],
        "TOO_MANY_EXECUTIONS"
    );
    let over_graphql = execute(&app, json!({"functionId": "slow"})).await;
    assert!(
        over_graphql.code() == "TOO_MANY_EXECUTIONS" || busy.is_finished(),
        "{:#}",
        over_graphql.body
    );
    // The busy one ends at its CPU limit.
    assert_eq!(busy.await.unwrap().as_u16(), 500);
    // Once free, the next execution runs.
    let next = execute(&app, json!({"functionId": "slow"})).await.ok();
    assert_eq!(next["createExecution"]["responseBody"], "done");
    app.shutdown().await;
}

/// A function's page is served from the API's origin: it runs sandboxed, cannot
/// set Nimbus's cookies nor read any project's session cookie, and its code never
/// mistakes a caller's header for one Nimbus set. A signed-in caller's session
/// reaches the code as a JWT of it would: data, not credentials.
#[tokio::test]
async fn a_function_cannot_pose_as_nimbus_to_a_browser_or_to_its_own_code() {
    let app = spawn_app().await;
    deployed(
        &app,
        "page",
        json!({"execute": ["any"]}),
        r#"export default async ({ req, res }) => res.send(
            JSON.stringify({
                user: req.headers['x-nimbus-user-id'] ?? null,
                appwrite: req.headers['x-appwrite-user-id'] ?? null,
                cookie: req.headers['cookie'] ?? null,
                trigger: [req.headers['x-nimbus-trigger'], req.headers['x-appwrite-trigger']],
                execution: req.headers['x-appwrite-execution-id'] ?? null,
            }),
            200,
            { 'content-type': 'text/html', 'set-cookie': 'nimbus_console=planted; Path=/' },
        );"#,
    )
    .await;
    let response = app
        .client
        .get(format!("{}/v1/functions/page", app.url))
        .header(
            "cookie",
            "nimbus_session_other=ns_secret; app=1; nimbus_console=cs_secret",
        )
        .header("x-nimbus-user-id", "victim")
        .header("x-appwrite-user-id", "victim")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let headers = response.headers().clone();
    let types: Vec<_> = headers.get_all("content-type").iter().collect();
    assert_eq!(types, ["text/html"]);
    let policy = headers["content-security-policy"].to_str().unwrap();
    assert!(policy.starts_with("sandbox ") && !policy.contains("allow-same-origin"));
    assert_eq!(headers["x-content-type-options"], "nosniff");
    assert!(headers.get("set-cookie").is_none(), "{headers:?}");
    let execution = headers["x-nimbus-execution-id"]
        .to_str()
        .unwrap()
        .to_string();
    let seen: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
    assert_eq!(
        seen,
        json!({"user": null, "appwrite": null, "cookie": "app=1",
            "trigger": ["http", "http"], "execution": execution})
    );

    let ann = app.signed_in("ann-function@example.com").await;
    let ann_id = app
        .as_session(&ann, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .clone();
    let bearer = format!("Bearer {ann}");
    let answer = execute_as(
        &app,
        &[("authorization", &bearer)],
        json!({"functionId": "page", "headers": [{"name": "X-Nimbus-User-Id", "value": "victim"}]}),
    )
    .await
    .ok();
    let seen: Value =
        serde_json::from_str(answer["createExecution"]["responseBody"].as_str().unwrap()).unwrap();
    assert_eq!(seen["user"], ann_id, "{seen:#}");
    // Appwrite's names too, for code written for it; `createExecution` is its `http`.
    assert_eq!(seen["appwrite"], ann_id, "{seen:#}");
    assert_eq!(seen["trigger"], json!(["graphql", "http"]));

    // Run by Ann, code written by whoever deployed it acts on her data, not on
    // her credentials: no JWT of hers to carry away.
    deployed(
        &app,
        "minter",
        json!({"execute": ["users"]}),
        r#"export default async ({ res }) => res.json(await nimbus.graphql('mutation { createJWT { jwt } }'));"#,
    )
    .await;
    let answer = execute_as(
        &app,
        &[("authorization", &bearer)],
        json!({"functionId": "minter"}),
    )
    .await
    .ok();
    let minted: Value =
        serde_json::from_str(answer["createExecution"]["responseBody"].as_str().unwrap()).unwrap();
    assert!(minted["data"].is_null(), "{minted:#}");
    assert!(
        minted["errors"][0]["extensions"]["code"].is_string(),
        "{minted:#}"
    );
    app.shutdown().await;
}

/// The session cookie acts on the plain HTTP route only for the server's own
/// pages and the project's: another site's navigation or form post to a function
/// runs it as a guest, not as the user whose browser sent the cookie.
#[tokio::test]
async fn another_sites_request_runs_a_function_as_a_guest() {
    let app = spawn_app().await;
    deployed(
        &app,
        "who",
        json!({"execute": ["any"]}),
        r#"export default async ({ req, res }) => res.json(req.headers['x-nimbus-user-id'] ?? null);"#,
    )
    .await;
    let ann = app.signed_in("ann-csrf@example.com").await;
    let ann_id = app
        .as_session(&ann, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .clone();
    let cookie = format!("nimbus_session_default={ann}");
    let host = app.url.trim_start_matches("http://").to_string();
    let own = format!("http://{host}");
    // A method, the browser's headers, and whether the cookie acts.
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
    let cases: [Case; 6] = [
        ("GET", &[], true),
        ("GET", &[("sec-fetch-site", "same-origin")], true),
        ("GET", &[("sec-fetch-site", "none")], true),
        ("GET", &[("sec-fetch-site", "cross-site")], false),
        (
            "POST",
            &[
                ("sec-fetch-site", "same-site"),
                ("origin", "https://evil.example"),
            ],
            false,
        ),
        ("POST", &[("origin", own.as_str())], true),
    ];
    for (method, headers, acts) in cases {
        let mut request = app
            .client
            .request(
                method.parse().unwrap(),
                format!("{}/v1/functions/who", app.url),
            )
            .header("cookie", &cookie);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{method} {headers:?}");
        let seen: Value = response.json().await.unwrap();
        let expected = if acts { ann_id.clone() } else { Value::Null };
        assert_eq!(seen, expected, "{method} {headers:?}");
    }
    app.shutdown().await;
}

/// `ping`, a function anyone may execute, answering `pong`.
async fn deployed_ping(app: &TestApp) {
    deployed(
        app,
        "ping",
        json!({"execute": ["any"]}),
        "export default async ({ res }) => res.text('pong')",
    )
    .await;
}

/// A mutation of `count` asynchronous executions of `ping`, each selecting `fields`.
fn async_pings(count: usize, fields: &str) -> String {
    let executions: String = (0..count)
        .map(|n| {
            format!(
                "e{n}: createExecution(input: {{functionId: \"ping\", async: true}}) {{ {fields} }} "
            )
        })
        .collect();
    format!("mutation {{ {executions} }}")
}

/// Every execution holds a sandbox thread or a queued job that all projects
/// share: a user or a guest client starts at most 60 a minute, however it batches
/// or aliases them; a key (a server) is not limited.
#[tokio::test]
async fn executions_one_client_starts_are_limited_per_minute() {
    let app = spawn_app().await;
    deployed_ping(&app).await;
    let query = async_pings(61, "id");
    let guest = app.post(json!({"query": query}), &[]).await;
    let refused: Vec<&Value> = guest.body["errors"]
        .as_array()
        .map(|errors| errors.iter().collect())
        .unwrap_or_default();
    assert_eq!(refused.len(), 1, "{:#}", guest.body);
    assert_eq!(refused[0]["extensions"]["code"], "RATE_LIMITED");
    let key = app.admin(&query, json!({})).await;
    assert!(key.body.get("errors").is_none(), "{:#}", key.body);
    app.shutdown().await;
}

/// A key (or a function queueing its own executions, chain after chain) is not
/// limited per minute, but what one project keeps waiting is bounded: past it an
/// asynchronous execution is refused, nothing of it written, and the project's
/// other work and other projects go on.
#[tokio::test]
async fn a_project_keeps_a_bounded_number_of_executions_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    // Nothing runs the queued executions: they stay waiting.
    config.jobs_concurrency = 0;
    config.functions_max_waiting = 3;
    let app = spawn_with(config, dir).await;
    deployed_ping(&app).await;
    let answer = app.admin(&async_pings(5, "id status"), json!({})).await;
    let errors = answer.body["errors"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(errors.len(), 2, "{:#}", answer.body);
    for error in &errors {
        assert_eq!(
            error["extensions"]["code"], "TOO_MANY_EXECUTIONS",
            "{error:#}"
        );
        assert!(error["extensions"]["retryAfter"].as_u64().unwrap() >= 1);
    }
    for n in 0..3 {
        assert_eq!(answer.body["data"][format!("e{n}")]["status"], "WAITING");
    }
    // Only the three accepted were recorded.
    let listed = app
        .admin(
            "query { executions(functionId: \"ping\", first: 10) { totalCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(listed["executions"]["totalCount"], 3);
    // A synchronous execution does not wait in the queue and still runs.
    let now = app
        .admin(
            "mutation { createExecution(input: {functionId: \"ping\"}) { status responseBody duration } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(now["createExecution"]["responseBody"], "pong");
    // However quick, a run took time: at least a millisecond.
    assert!(now["createExecution"]["duration"].as_f64().unwrap() >= 0.001);
    app.shutdown().await;
}

/// Runs by hand, as a replica's job runner would, every queued execution job of
/// the default project.
async fn run_queued_executions(app: &TestApp) {
    use nimbus::jobs::Handler as _;
    let state = app.server.as_ref().unwrap().state();
    let queued = app
        .admin(
            "{ jobs(kind: \"functions.execute\", first: 50) { nodes { id } } }",
            json!({}),
        )
        .await
        .ok();
    for node in queued["jobs"]["nodes"].as_array().unwrap() {
        let row =
            nimbus::jobs::store::find(state.db.pool(), "default", node["id"].as_str().unwrap())
                .await
                .unwrap()
                .unwrap();
        let job = nimbus::jobs::Job::from(row);
        nimbus::services::functions::execute::ExecuteJobs
            .run(state, &job)
            .await
            .unwrap();
    }
}

/// Calls already queued obey the function as it is when they run: disabled, or
/// with the caller's role taken off its execute roles, they fail and run no code;
/// a deployment activated since runs in place of the one they were queued for.
#[tokio::test]
async fn queued_executions_obey_the_function_as_it_is_when_they_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    // Nothing runs the queued executions but the test.
    config.jobs_concurrency = 0;
    let app = spawn_with(config, dir).await;
    deployed_ping(&app).await;
    let queue =
        "mutation { createExecution(input: {functionId: \"ping\", async: true}) { id status } }";
    let guest = app.post(json!({"query": queue}), &[]).await.ok();
    assert_eq!(guest["createExecution"]["status"], "WAITING");
    let by_key = app.admin(queue, json!({})).await.ok();
    app.admin(
        "mutation { updateFunction(input: {id: \"ping\", enabled: false}) { id } }",
        json!({}),
    )
    .await
    .ok();
    run_queued_executions(&app).await;
    let status = "query($id: ID!) { execution(functionId: \"ping\", executionId: $id) { status failure responseBody } }";
    for queued in [&guest, &by_key] {
        let id = &queued["createExecution"]["id"];
        let ran = app.admin(status, json!({"id": id})).await.ok();
        assert_eq!(
            ran["execution"],
            json!({"status": "FAILED", "failure": "FUNCTION_DISABLED", "responseBody": ""}),
            "{ran:#}"
        );
    }

    // Enabled again, but no longer for guests; and new code activated.
    app.admin(
        "mutation { updateFunction(input: {id: \"ping\", enabled: true}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let guest = app.post(json!({"query": queue}), &[]).await.ok();
    let by_key = app.admin(queue, json!({})).await.ok();
    let dee = app.signed_in("dee-queued@example.com").await;
    let by_user = app.as_session(&dee, queue, json!({})).await.ok();
    app.admin(
        "mutation { updateFunction(input: {id: \"ping\", execute: []}) { id } }",
        json!({}),
    )
    .await
    .ok();
    deploy(
        &app,
        "ping",
        "main.js",
        b"export default async ({ res }) => res.text('pong 2')",
    )
    .await
    .ok();
    run_queued_executions(&app).await;
    let refused = app
        .admin(status, json!({"id": guest["createExecution"]["id"]}))
        .await
        .ok();
    assert_eq!(refused["execution"]["status"], "FAILED", "{refused:#}");
    assert_eq!(refused["execution"]["failure"], "UNAUTHENTICATED");
    let refused = app
        .admin(status, json!({"id": by_user["createExecution"]["id"]}))
        .await
        .ok();
    assert_eq!(
        refused["execution"]["failure"], "PERMISSION_DENIED",
        "{refused:#}"
    );
    let ran = app
        .admin(
            "query($id: ID!) { execution(functionId: \"ping\", executionId: $id) { status failure responseBody deploymentId } }",
            json!({"id": by_key["createExecution"]["id"]}),
        )
        .await
        .ok();
    let active = app
        .admin("{ function(id: \"ping\") { deploymentId } }", json!({}))
        .await
        .ok()["function"]["deploymentId"]
        .clone();
    assert_eq!(
        ran["execution"],
        json!({"status": "COMPLETED", "failure": null, "responseBody": "pong 2", "deploymentId": active}),
        "{ran:#}"
    );
    app.shutdown().await;
}

/// A client calling a public function over its HTTP route in a loop leaves at
/// most 120 records a minute (each keeps its headers, body, response and logs
/// for days): past them its calls still run and answer, unrecorded; a key's
/// calls are always recorded.
#[tokio::test]
async fn one_client_leaves_a_bounded_number_of_records_a_minute() {
    let app = spawn_app().await;
    deployed_ping(&app).await;
    let url = format!("{}/v1/functions/ping", app.url);
    for n in 0..121 {
        let response = app.client.get(&url).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "call {n}");
        let recorded = response.headers().contains_key("x-nimbus-execution-id");
        assert_eq!(recorded, n < 120, "call {n}");
        assert_eq!(response.text().await.unwrap(), "pong");
    }
    let by_key = app
        .client
        .get(&url)
        .header("x-nimbus-key", &app.admin_key)
        .send()
        .await
        .unwrap();
    assert!(by_key.headers().contains_key("x-nimbus-execution-id"));
    // Written behind their responses: wait for all of them.
    crate::webhooks::eventually("121 records", || async {
        let listed = app
            .admin(
                "{ executions(functionId: \"ping\", first: 1) { totalCount } }",
                json!({}),
            )
            .await
            .ok();
        let count = listed["executions"]["totalCount"].as_i64().unwrap();
        assert!(count <= 121, "{count} records");
        (count == 121).then_some(())
    })
    .await;
    app.shutdown().await;
}

/// A deployment and a variable are read one at a time, and an ended execution's
/// record can be deleted, as Appwrite's functions API allows; a queued one
/// cannot (it would write its record again as it ends).
#[tokio::test]
async fn deployments_and_variables_read_one_at_a_time_and_ended_executions_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    // Asynchronous executions stay queued.
    config.jobs_concurrency = 0;
    let app = spawn_with(config, dir).await;
    deployed_ping(&app).await;
    let active = app
        .admin("{ function(id: \"ping\") { deploymentId } }", json!({}))
        .await
        .ok()["function"]["deploymentId"]
        .clone();
    let deployment =
        "query($d: ID!) { deployment(functionId: \"ping\", deploymentId: $d) { id functionId } }";
    let one = app.admin(deployment, json!({"d": active})).await.ok();
    assert_eq!(
        one["deployment"],
        json!({"id": active, "functionId": "ping"})
    );
    let missing = app.admin(deployment, json!({"d": "nope"})).await;
    assert_eq!(missing.code(), "DEPLOYMENT_NOT_FOUND", "{:#}", missing.body);

    app.admin(
        VARIABLE,
        json!({"input": {"functionId": "ping", "key": "API_TOKEN", "value": "secret"}}),
    )
    .await
    .ok();
    let variable = "query($k: String!) { functionVariable(functionId: \"ping\", key: $k) { key } }";
    let found = app.admin(variable, json!({"k": "API_TOKEN"})).await.ok();
    assert_eq!(found["functionVariable"]["key"], "API_TOKEN");
    let missing = app.admin(variable, json!({"k": "OTHER"})).await;
    assert_eq!(missing.code(), "VARIABLE_NOT_FOUND", "{:#}", missing.body);

    let run = "mutation($a: Boolean) { createExecution(input: {functionId: \"ping\", async: $a}) { id status } }";
    let ended = app.admin(run, json!({"a": false})).await.ok()["createExecution"]["id"].clone();
    let queued = app.admin(run, json!({"a": true})).await.ok()["createExecution"]["id"].clone();
    let delete = "mutation($e: ID!) { deleteExecution(input: {functionId: \"ping\", executionId: $e}) { deletedId } }";
    let read = "query($e: ID!) { execution(functionId: \"ping\", executionId: $e) { id } }";
    let reader = app
        .create_key("default", &["functions.read", "executions.read"])
        .await;
    let refused = app
        .as_key(&reader, "default", delete, json!({"e": ended}))
        .await;
    assert_eq!(refused.code(), "SCOPE_MISSING", "{:#}", refused.body);
    // A signed-in user deletes no record, not even one of their own runs.
    let eve = app.signed_in("eve-records@example.com").await;
    let own =
        app.as_session(&eve, run, json!({"a": false})).await.ok()["createExecution"]["id"].clone();
    let refused = app.as_session(&eve, delete, json!({"e": own})).await;
    assert_ne!(refused.body["errors"], Value::Null, "{:#}", refused.body);
    app.admin(read, json!({"e": own})).await.ok();
    let not_ended = app.admin(delete, json!({"e": queued})).await;
    assert_eq!(
        not_ended.code(),
        "OPERATION_NOT_ALLOWED",
        "{:#}",
        not_ended.body
    );
    let deleted = app.admin(delete, json!({"e": ended})).await.ok();
    assert_eq!(deleted["deleteExecution"]["deletedId"], ended);
    let gone = app.admin(read, json!({"e": ended})).await;
    assert_eq!(gone.code(), "EXECUTION_NOT_FOUND", "{:#}", gone.body);
    let again = app.admin(delete, json!({"e": ended})).await;
    assert_eq!(again.code(), "EXECUTION_NOT_FOUND", "{:#}", again.body);
    // The queued one is still there.
    app.admin(read, json!({"e": queued})).await.ok();
    app.shutdown().await;
}

#[tokio::test]
async fn executions_are_listed_by_status_and_trigger_within_what_the_caller_may_read() {
    let app = spawn_app().await;
    deployed(
        &app,
        "picky",
        json!({"execute": ["any"]}),
        r#"export default async ({ req, res }) => {
            if (req.path === '/fail') throw new Error('refused');
            return res.text('ok');
        };"#,
    )
    .await;
    for path in ["/", "/fail"] {
        let ran = execute(&app, json!({"functionId": "picky", "path": path}))
            .await
            .ok();
        assert!(ran["createExecution"]["id"].is_string(), "{ran}");
    }
    let http = app
        .client
        .get(format!("{}/v1/functions/picky/fail", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(http.status().as_u16(), 500);
    let ann = app.signed_in("ann@example.com").await;
    let bearer = format!("Bearer {ann}");
    execute_as(
        &app,
        &[("authorization", &bearer)],
        json!({"functionId": "picky", "path": "/fail"}),
    )
    .await
    .ok();
    let listed = "query($status: ExecutionStatus, $trigger: ExecutionTrigger) { executions(functionId: \"picky\", status: $status, trigger: $trigger) { totalCount nodes { status trigger } } }";
    let seen = |answer: Value| {
        let executions = &answer["executions"];
        let nodes: Vec<(String, String)> = executions["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| {
                (
                    n["status"].as_str().unwrap().to_string(),
                    n["trigger"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(executions["totalCount"], nodes.len(), "{answer}");
        nodes
    };
    let pair = |status: &str, trigger: &str| (status.to_string(), trigger.to_string());
    for (variables, expected) in [
        (
            json!({"status": "FAILED"}),
            vec![
                pair("FAILED", "GRAPHQL"),
                pair("FAILED", "HTTP"),
                pair("FAILED", "GRAPHQL"),
            ],
        ),
        (
            json!({"status": "COMPLETED"}),
            vec![pair("COMPLETED", "GRAPHQL")],
        ),
        (json!({"trigger": "HTTP"}), vec![pair("FAILED", "HTTP")]),
        (
            json!({"status": "FAILED", "trigger": "GRAPHQL"}),
            vec![pair("FAILED", "GRAPHQL"), pair("FAILED", "GRAPHQL")],
        ),
        (json!({"status": "WAITING"}), vec![]),
    ] {
        let answer = app.admin(listed, variables.clone()).await.ok();
        assert_eq!(seen(answer), expected, "{variables}");
    }
    // A user filters their own executions only.
    for (variables, expected) in [
        (json!({"status": "FAILED"}), vec![pair("FAILED", "GRAPHQL")]),
        (json!({"status": "COMPLETED"}), vec![]),
        (json!({"trigger": "HTTP"}), vec![]),
    ] {
        let answer = app.as_session(&ann, listed, variables.clone()).await.ok();
        assert_eq!(seen(answer), expected, "{variables}");
    }
    // Only the enums' values.
    for bad in [json!({"status": "failed"}), json!({"trigger": "CRON"})] {
        let refused = app.admin(listed, bad.clone()).await;
        assert_eq!(refused.code(), "GRAPHQL_VALIDATION_FAILED", "{bad}");
    }
    app.shutdown().await;
}

/// A function and its schedule commit together: when the schedule cannot be
/// written (the database refusing it here; a server killed in between before),
/// the function is not made either, so the same `createFunction` made again
/// succeeds with its schedule, and an update whose schedule fails changes
/// nothing.
#[tokio::test]
async fn a_function_and_its_schedule_commit_together() {
    let app = spawn_app().await;
    let db = app.server.as_ref().unwrap().state().db.clone();
    let mysql = db.dialect() == nimbus::db::Dialect::MySql;
    let refuse = |on: bool| {
        let statement = match (on, mysql) {
            (true, false) => {
                "CREATE TRIGGER refuse_schedules BEFORE INSERT ON job_schedules \
                 BEGIN SELECT RAISE(ABORT, 'injected fault'); END"
            }
            (true, true) => {
                "CREATE TRIGGER refuse_schedules BEFORE INSERT ON job_schedules FOR EACH ROW \
                 SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'injected fault'"
            }
            (false, _) => "DROP TRIGGER refuse_schedules",
        };
        let pool = db.pool().clone();
        async move { sqlx::raw_sql(statement).execute(&pool).await.unwrap() }
    };
    let schedules = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM job_schedules WHERE kind = 'functions.schedule'",
        )
        .fetch_one(db.pool())
        .await
        .unwrap()
    };
    let input = json!({"input": {"id": "nightly", "name": "Nightly", "entrypoint": "main.js", "schedule": "0 3 * * *"}});
    refuse(true).await;
    let failed = app.admin(CREATE, input.clone()).await;
    refuse(false).await;
    assert_eq!(failed.code(), "INTERNAL", "{:#}", failed.body);
    let missing = app
        .admin("{ function(id: \"nightly\") { id } }", json!({}))
        .await;
    assert_eq!(missing.code(), "FUNCTION_NOT_FOUND", "{:#}", missing.body);
    assert_eq!(schedules().await, 0);
    let made = app.admin(CREATE, input).await.ok();
    assert_eq!(made["createFunction"]["schedule"], "0 3 * * *");
    assert_eq!(schedules().await, 1);

    // An update dropping the schedule, then one setting it again that fails.
    app.admin(UPDATE, json!({"input": {"id": "nightly", "schedule": ""}}))
        .await
        .ok();
    assert_eq!(schedules().await, 0);
    refuse(true).await;
    let failed = app
        .admin(
            UPDATE,
            json!({"input": {"id": "nightly", "schedule": "0 4 * * *", "name": "Later"}}),
        )
        .await;
    refuse(false).await;
    assert_eq!(failed.code(), "INTERNAL", "{:#}", failed.body);
    let kept = app
        .admin("{ function(id: \"nightly\") { name schedule } }", json!({}))
        .await
        .ok();
    assert_eq!(
        kept["function"],
        json!({"name": "Nightly", "schedule": null})
    );
    assert_eq!(schedules().await, 0);
    app.shutdown().await;
}
