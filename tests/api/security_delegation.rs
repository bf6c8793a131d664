//! What a key hands on to what it configures: a webhook delivers, and a function is
//! triggered by, only events that key may read; a function's code and settings are
//! changed only by a key holding every scope the function holds; `jobs.read` does
//! not show the events a delivery carries.

use serde_json::{Value, json};

use crate::functions::{CREATE, deploy_response_as};
use crate::helpers::TestApp;
use crate::webhooks::{Receiver, app_with_webhooks, create_team, eventually};

const CREATE_WEBHOOK: &str =
    "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { webhook { id } } }";

async fn create_user(app: &TestApp, email: &str) {
    app.admin(
        "mutation($email: String!) { createUser(input: {email: $email, password: \"long-enough-1\"}) { id } }",
        json!({"email": email}),
    )
    .await
    .ok();
}

/// The `events` of every request `path` received, in order.
fn names(receiver: &Receiver, path: &str) -> Vec<String> {
    receiver
        .requests_to(path)
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.body).unwrap()["events"][0]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn a_webhook_delivers_only_the_events_its_key_may_read() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|_| {}).await;
    // A key that may manage webhooks and read teams, but not users.
    let key = app
        .create_key("default", &["webhooks.write", "teams.read"])
        .await;
    let made = app
        .as_key(
            &key,
            "default",
            CREATE_WEBHOOK,
            json!({"input": {"name": "all", "url": receiver.url("/ok/keyed"),
                "events": ["users.*", "teams.*"]}}),
        )
        .await
        .ok();
    let hook = made["createWebhook"]["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // The operator's webhook takes every event: the control.
    crate::webhooks::create_webhook(&app, &receiver.url("/ok/operator"), &["users.*", "teams.*"])
        .await;

    create_user(&app, "ann-delegated@example.com").await;
    create_team(&app, "first").await;
    // Logged after the user: once the operator's webhook has both, the consumer
    // has passed the user's event by the key's webhook too.
    receiver.wait_for("/ok/operator", 2).await;
    receiver.wait_for("/ok/keyed", 1).await;
    assert_eq!(names(&receiver, "/ok/keyed"), ["teams.first.create"]);

    // A key that may read users points it elsewhere: from then on users' events
    // go, as that key may read them; teams' no longer do.
    let other = app
        .create_key("default", &["webhooks.write", "users.read"])
        .await;
    app.as_key(
        &other,
        "default",
        "mutation($id: ID!, $url: String!) { updateWebhook(input: {id: $id, url: $url}) { id } }",
        json!({"id": hook, "url": receiver.url("/ok/moved")}),
    )
    .await
    .ok();
    create_team(&app, "second").await;
    create_user(&app, "bob-delegated@example.com").await;
    receiver.wait_for("/ok/operator", 4).await;
    receiver.wait_for("/ok/moved", 1).await;
    let moved = names(&receiver, "/ok/moved");
    assert_eq!(moved.len(), 1, "{moved:?}");
    assert!(
        moved[0].starts_with("users.") && moved[0].ends_with(".create"),
        "{moved:?}"
    );

    // `jobs.read` names each delivery's event, without the event itself.
    let reader = app.create_key("default", &["jobs.read"]).await;
    let jobs = app
        .as_key(
            &reader,
            "default",
            "{ jobs(kind: \"webhook\", first: 100) { nodes { payload } } }",
            json!({}),
        )
        .await
        .ok();
    let payloads = jobs["jobs"]["nodes"].as_array().unwrap();
    assert_eq!(payloads.len(), 6, "{jobs:#}");
    for job in payloads {
        assert!(job["payload"]["eventId"].is_string(), "{job:#}");
        assert!(job["payload"].get("body").is_none(), "{job:#}");
        assert!(
            !job["payload"].to_string().contains("delegated@"),
            "{job:#}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_key_that_repoints_a_webhook_does_not_receive_what_was_queued_before() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|c| c.webhooks_failure_threshold = 100).await;
    let (hook, _) =
        crate::webhooks::create_webhook(&app, &receiver.url("/fail"), &["teams.*"]).await;
    create_team(&app, "private-plans").await;
    // The operator's delivery fails and waits for its retry.
    receiver.wait_for("/fail", 1).await;
    let key = app.create_key("default", &["webhooks.write"]).await;
    app.as_key(
        &key,
        "default",
        "mutation($id: ID!, $url: String!) { updateWebhook(input: {id: $id, url: $url}) { id } }",
        json!({"id": hook, "url": receiver.url("/ok/stolen")}),
    )
    .await
    .ok();
    eventually("the queued delivery ended", || async {
        let jobs = app
            .admin(
                "{ jobs(kind: \"webhook\", first: 10) { nodes { status } } }",
                json!({}),
            )
            .await
            .ok();
        let nodes = jobs["jobs"]["nodes"].as_array().unwrap().clone();
        nodes
            .iter()
            .all(|n| n["status"] == "DONE" || n["status"] == "DEAD")
            .then_some(())
    })
    .await;
    assert!(
        receiver.requests_to("/ok/stolen").is_empty(),
        "the team's event reached the key that re-pointed the webhook"
    );
    app.shutdown().await;
}

/// A key of the default project holding `scopes`: its secret and its id.
async fn key_with_id(app: &TestApp, scopes: &[&str]) -> (String, String) {
    let created = app
        .admin(
            "mutation($scopes: [String!]!) { createApiKey(input: {projectId: \"default\", name: \"keyed\", scopes: $scopes}) { secret apiKey { id } } }",
            json!({"scopes": scopes}),
        )
        .await
        .ok();
    let text = |value: &Value| value.as_str().unwrap().to_string();
    (
        text(&created["createApiKey"]["secret"]),
        text(&created["createApiKey"]["apiKey"]["id"]),
    )
}

/// With an operator's webhook on team events beside the webhook at `path` that
/// key `key_id` stands behind: a team made before the key is revoked reaches
/// both, one made after reaches the operator's only.
async fn revoking_the_key_ends_the_webhook(
    app: &TestApp,
    receiver: &Receiver,
    key_id: &str,
    path: &str,
) {
    crate::webhooks::create_webhook(app, &receiver.url("/ok/operator"), &["teams.*"]).await;
    create_team(app, "before").await;
    receiver.wait_for(path, 1).await;

    app.admin(
        "mutation($id: ID!) { deleteApiKey(input: {id: $id}) { deletedId } }",
        json!({"id": key_id}),
    )
    .await
    .ok();
    create_team(app, "after").await;
    receiver.wait_for("/ok/operator", 2).await;
    // Both events were handled in one pass of the log: the revoked key's webhook
    // got the first only.
    let jobs = app
        .admin(
            "{ jobs(kind: \"webhook\", first: 10) { totalCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(jobs["jobs"]["totalCount"], 3, "{jobs:#}");
    assert_eq!(names(receiver, path), ["teams.before.create"]);
}

#[tokio::test]
async fn a_revoked_key_ends_what_it_handed_on() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|_| {}).await;
    let (key, key_id) = key_with_id(&app, &["webhooks.write", "teams.read"]).await;
    let (key, key_id) = (key.as_str(), key_id.as_str());
    app.as_key(
        key,
        "default",
        CREATE_WEBHOOK,
        json!({"input": {"name": "keyed", "url": receiver.url("/ok/keyed"), "events": ["teams.*"]}}),
    )
    .await
    .ok();
    revoking_the_key_ends_the_webhook(&app, &receiver, key_id, "/ok/keyed").await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_webhook_keeps_its_failure_count_when_a_change_does_not_enable_it() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|_| {}).await;
    let (hook, _) =
        crate::webhooks::create_webhook(&app, &receiver.url("/fail"), &["teams.*"]).await;
    create_team(&app, "failing").await;
    eventually("a failure counted", || async {
        let found = app
            .admin(
                "query($id: ID!) { webhook(id: $id) { failures } }",
                json!({"id": hook}),
            )
            .await
            .ok();
        (found["webhook"]["failures"].as_i64() >= Some(1)).then_some(())
    })
    .await;
    let renamed = app
        .admin(
            "mutation($id: ID!) { updateWebhook(input: {id: $id, name: \"renamed\"}) { name failures enabled } }",
            json!({"id": hook}),
        )
        .await
        .ok();
    assert_eq!(renamed["updateWebhook"]["name"], "renamed");
    assert!(
        renamed["updateWebhook"]["failures"].as_i64() >= Some(1),
        "a rename wiped the failure count: {renamed:#}"
    );
    let enabled = app
        .admin(
            "mutation($id: ID!) { updateWebhook(input: {id: $id, enabled: true}) { failures enabled } }",
            json!({"id": hook}),
        )
        .await
        .ok();
    assert_eq!(enabled["updateWebhook"]["failures"], 0, "{enabled:#}");
    assert_eq!(enabled["updateWebhook"]["enabled"], true);
    app.shutdown().await;
}

#[tokio::test]
async fn a_function_is_changed_only_by_a_key_holding_its_scopes() {
    let app = crate::helpers::spawn_app().await;
    let strong = app
        .create_key("default", &["functions.write", "users.read", "users.write"])
        .await;
    let weak = app.create_key("default", &["functions.write"]).await;
    app.as_key(
        &strong,
        "default",
        CREATE,
        json!({"input": {"id": "admin-tool", "name": "t", "entrypoint": "main.js",
            "scopes": ["users.read", "users.write"]}}),
    )
    .await
    .ok();
    let code = b"export default async ({ res }) => res.empty();";

    // Another key may not put its own code behind the function's scopes, change
    // them, or choose which deployment runs.
    let refused = deploy_response_as(&app, &weak, "default", "admin-tool", "main.js", code).await;
    let body: Value = refused.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "PERMISSION_DENIED",
        "{body:#}"
    );
    let renamed = app
        .as_key(
            &weak,
            "default",
            "mutation { updateFunction(input: {id: \"admin-tool\", entrypoint: \"other.js\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(renamed.code(), "PERMISSION_DENIED", "{:#}", renamed.body);
    // Nor the variables its code reads.
    let variable = app
        .as_key(
            &weak,
            "default",
            "mutation { createVariable(input: {functionId: \"admin-tool\", key: \"TARGET\", value: \"https://evil.example\"}) { key } }",
            json!({}),
        )
        .await;
    assert_eq!(variable.code(), "PERMISSION_DENIED", "{:#}", variable.body);

    // The key that holds them may.
    let deployed =
        deploy_response_as(&app, &strong, "default", "admin-tool", "main.js", code).await;
    let body: Value = deployed.json().await.unwrap();
    let deployment = body["data"]["createDeployment"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body:#}"))
        .to_string();
    let activated = app
        .as_key(
            &weak,
            "default",
            "mutation($f: ID!, $d: ID!) { activateDeployment(input: {functionId: $f, deploymentId: $d}) { id } }",
            json!({"f": "admin-tool", "d": deployment}),
        )
        .await;
    assert_eq!(
        activated.code(),
        "PERMISSION_DENIED",
        "{:#}",
        activated.body
    );
    let function = app
        .admin(
            "{ function(id: \"admin-tool\") { entrypoint deploymentId } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(function["function"]["entrypoint"], "main.js");
    assert_eq!(function["function"]["deploymentId"], deployment.as_str());
    app.shutdown().await;
}

#[tokio::test]
async fn a_function_is_triggered_only_by_events_its_key_may_read() {
    let app = crate::helpers::spawn_app().await;
    let key = app
        .create_key("default", &["functions.write", "teams.read"])
        .await;
    app.as_key(
        &key,
        "default",
        CREATE,
        json!({"input": {"id": "listener", "name": "l", "entrypoint": "main.js",
            "events": ["users.*.create", "teams.*.create"]}}),
    )
    .await
    .ok();
    let response = deploy_response_as(
        &app,
        &key,
        "default",
        "listener",
        "main.js",
        b"export default async ({ res }) => res.empty();",
    )
    .await;
    assert_eq!(response.status(), 200);

    create_user(&app, "cy-delegated@example.com").await;
    create_team(&app, "heard").await;
    let executions = eventually("the team's event ran the function", || async {
        let found = app
            .admin(
                "{ executions(functionId: \"listener\", first: 10) { nodes { requestHeaders { name value } } } }",
                json!({}),
            )
            .await
            .ok();
        let nodes = found["executions"]["nodes"].as_array().unwrap().clone();
        (!nodes.is_empty()).then_some(nodes)
    })
    .await;
    // Each event is handled in log order: the user's came first.
    let events: Vec<String> = executions
        .iter()
        .flat_map(|e| e["requestHeaders"].as_array().unwrap().clone())
        .filter(|h| h["name"] == "x-nimbus-event")
        .map(|h| h["value"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(events, ["teams.heard.create"]);
    app.shutdown().await;
}

#[tokio::test]
async fn a_user_blocked_while_a_function_runs_as_them_stops_acting_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path()).await;
    config.functions_allow_private = true;
    let app = crate::helpers::spawn_with(config, dir).await;
    let ann = app.signed_in("ann-running@example.com").await;
    let me = app
        .as_session(&ann, "{ account { id } }", json!({}))
        .await
        .ok();
    let ann_id = me["account"]["id"].as_str().unwrap().to_string();

    // A page the function fetches mid-run: answering it, the administrator
    // blocks the user the function acts as.
    let (url, admin_key) = (app.url.clone(), app.admin_key.clone());
    let blocker = axum::Router::new().route(
        "/block",
        axum::routing::get(move || {
            let (url, admin_key, ann_id) = (url.clone(), admin_key.clone(), ann_id.clone());
            async move {
                reqwest::Client::new()
                    .post(format!("{url}/v1/graphql"))
                    .header("x-nimbus-key", admin_key)
                    .json(&json!({"query": "mutation($id: ID!) { updateUser(input: {id: $id, blocked: true}) { blocked } }", "variables": {"id": ann_id}}))
                    .send()
                    .await
                    .unwrap();
                "blocked"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let block_url = format!("http://{}/block", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, blocker).await });

    crate::functions::deployed(
        &app,
        "as-ann",
        json!({"execute": ["users"]}),
        &format!(
            r#"export default async ({{ res }}) => {{
                const before = await nimbus.graphql('{{ account {{ id }} }}');
                await fetch('{block_url}');
                const after = await nimbus.graphql('{{ account {{ id }} }}');
                return res.json({{ before, after }});
            }};"#
        ),
    )
    .await;
    let bearer = format!("Bearer {ann}");
    let answer = crate::functions::execute_as(
        &app,
        &[("authorization", bearer.as_str())],
        json!({"functionId": "as-ann"}),
    )
    .await
    .ok();
    let body: Value =
        serde_json::from_str(answer["createExecution"]["responseBody"].as_str().unwrap()).unwrap();
    assert!(
        body["before"]["data"]["account"]["id"].is_string(),
        "{body:#}"
    );
    assert!(
        body["after"]["data"].is_null() || body["after"]["data"]["account"].is_null(),
        "{body:#}"
    );
    assert_eq!(
        body["after"]["errors"][0]["extensions"]["code"], "USER_BLOCKED",
        "{body:#}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_session_owing_its_second_factor_neither_runs_functions_nor_reads_executions() {
    let app = crate::helpers::spawn_app().await;
    let full = app.signed_in("mia-mfa@example.com").await;
    crate::helpers::enrol_totp(&app, &full).await;
    app.as_session(
        &full,
        "mutation { updateMfa(input: {enabled: true}) { mfa } }",
        json!({}),
    )
    .await
    .ok();
    crate::functions::deployed(
        &app,
        "who",
        json!({"execute": ["any"]}),
        r#"export default async ({ req, res }) => res.text(req.headers["x-nimbus-user-id"] || "guest")"#,
    )
    .await;
    let full_bearer = format!("Bearer {full}");
    let own = crate::functions::execute_as(
        &app,
        &[("authorization", full_bearer.as_str())],
        json!({"functionId": "who"}),
    )
    .await
    .ok();
    let mia = own["createExecution"]["responseBody"].as_str().unwrap();
    assert_ne!(mia, "guest", "a full session runs as its user");

    // The password alone: a session that still owes the authenticator's code.
    let signed = app
        .post(json!({"query": "mutation { createEmailPasswordSession(input: {email: \"mia-mfa@example.com\", password: \"db-password-1\"}) { secret } }"}), &[])
        .await
        .ok();
    let owing = signed["createEmailPasswordSession"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let owing_bearer = format!("Bearer {owing}");
    let headers = [("authorization", owing_bearer.as_str())];
    let run = crate::functions::execute_as(&app, &headers, json!({"functionId": "who"})).await;
    assert_eq!(run.code(), "MFA_REQUIRED", "{:?}", run.body);
    let later =
        crate::functions::execute_as(&app, &headers, json!({"functionId": "who", "async": true}))
            .await;
    assert_eq!(later.code(), "MFA_REQUIRED", "{:?}", later.body);
    let id = own["createExecution"]["id"].as_str().unwrap();
    for query in [
        "{ executions(functionId: \"who\") { totalCount nodes { responseBody } } }".to_string(),
        format!("{{ execution(functionId: \"who\", executionId: \"{id}\") {{ responseBody }} }}"),
    ] {
        let read = app.post(json!({ "query": query }), &headers).await;
        assert_eq!(read.code(), "MFA_REQUIRED", "{query}: {:?}", read.body);
    }
    let route = reqwest::Client::new()
        .get(format!("{}/v1/functions/who", app.url))
        .header("authorization", &owing_bearer)
        .send()
        .await
        .unwrap();
    let status = route.status().as_u16();
    let text = route.text().await.unwrap();
    assert!(!text.contains(mia), "{status}: {text}");
    assert_eq!(status, 401, "{text}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_revoked_admin_key_ends_what_it_handed_on_in_other_projects_at_once() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|config| config.functions_allow_private = true).await;
    app.create_project("elsewhere").await;
    let created = app
        .admin(
            "mutation { createApiKey(input: {projectId: \"default\", name: \"roaming\", scopes: [\"admin\"]}) { secret apiKey { id } } }",
            json!({}),
        )
        .await
        .ok();
    let key = created["createApiKey"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let key_id = created["createApiKey"]["apiKey"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.as_key(
        &key,
        "elsewhere",
        CREATE_WEBHOOK,
        json!({"input": {"name": "planted", "url": receiver.url("/ok/planted"), "events": ["teams.*"]}}),
    )
    .await
    .ok();
    let operator = app.admin_key.clone();
    app.as_key(
        &operator,
        "elsewhere",
        CREATE_WEBHOOK,
        json!({"input": {"name": "operator", "url": receiver.url("/ok/operator"), "events": ["teams.*"]}}),
    )
    .await
    .ok();

    // A page the function fetches mid-run: answering it, the operator revokes the
    // key that gave the function its scopes.
    let (url, admin_key, revoked) = (app.url.clone(), app.admin_key.clone(), key_id.clone());
    let revoker = axum::Router::new().route(
        "/revoke",
        axum::routing::get(move || {
            let (url, admin_key, revoked) = (url.clone(), admin_key.clone(), revoked.clone());
            async move {
                reqwest::Client::new()
                    .post(format!("{url}/v1/graphql"))
                    .header("x-nimbus-key", admin_key)
                    .json(&json!({"query": "mutation($id: ID!) { deleteApiKey(input: {id: $id}) { deletedId } }", "variables": {"id": revoked}}))
                    .send()
                    .await
                    .unwrap();
                "revoked"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let revoke_url = format!("http://{}/revoke", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, revoker).await });
    app.as_key(
        &key,
        "elsewhere",
        CREATE,
        json!({"input": {"id": "counter", "name": "counter", "entrypoint": "main.js", "execute": ["any"], "scopes": ["teams.read"]}}),
    )
    .await
    .ok();
    let code = format!(
        r#"export default async ({{ req, res }}) => {{
            const before = await nimbus.graphql('{{ teams {{ totalCount }} }}');
            if (req.path === '/revoke') await fetch('{revoke_url}');
            const after = await nimbus.graphql('{{ teams {{ totalCount }} }}');
            return res.json({{ before, after }});
        }};"#
    );
    let deployed = deploy_response_as(
        &app,
        &key,
        "elsewhere",
        "counter",
        "main.js",
        code.as_bytes(),
    )
    .await;
    assert!(deployed.status().is_success());

    create_team_in(&app, "elsewhere", "before").await;
    receiver.wait_for("/ok/planted", 1).await;
    let run = |path: &'static str| {
        let app = &app;
        async move {
            let answer = app
                .post(
                    json!({"query": crate::functions::EXECUTE, "variables": {"input": {"functionId": "counter", "path": path}}}),
                    &[("x-nimbus-project", "elsewhere")],
                )
                .await
                .ok();
            serde_json::from_str::<Value>(
                answer["createExecution"]["responseBody"].as_str().unwrap(),
            )
            .unwrap()
        }
    };
    let body = run("/revoke").await;
    assert_eq!(body["before"]["data"]["teams"]["totalCount"], 1, "{body:#}");
    assert_eq!(
        body["after"]["errors"][0]["extensions"]["code"], "SCOPE_MISSING",
        "the revoked key's scopes ended inside the running execution: {body:#}"
    );
    let body = run("/").await;
    assert_eq!(
        body["before"]["errors"][0]["extensions"]["code"], "SCOPE_MISSING",
        "{body:#}"
    );

    create_team_in(&app, "elsewhere", "after").await;
    receiver.wait_for("/ok/operator", 2).await;
    let planted = receiver.requests_to("/ok/planted");
    assert_eq!(
        planted.len(),
        1,
        "the planted webhook heard nothing after the revocation"
    );
    app.shutdown().await;
}

async fn create_team_in(app: &TestApp, project: &str, id: &str) {
    let operator = app.admin_key.clone();
    app.as_key(
        &operator,
        project,
        "mutation($id: ID!) { createTeam(input: {id: $id, name: \"Team\"}) { id } }",
        json!({"id": id}),
    )
    .await
    .ok();
}

/// A function configures under the key that gave it its scopes: a webhook it
/// creates through `nimbus.graphql` stops delivering when that key is revoked,
/// as one the key made itself would (revoking must not be escaped by letting a
/// function re-issue the key's reach without it).
#[tokio::test]
async fn what_a_function_hands_on_ends_with_the_key_that_configured_it() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|_| {}).await;
    let (key, key_id) =
        key_with_id(&app, &["functions.write", "webhooks.write", "teams.read"]).await;
    let (key, key_id) = (key.as_str(), key_id.as_str());
    app.as_key(
        key,
        "default",
        CREATE,
        json!({"input": {"id": "hooker", "name": "hooker", "entrypoint": "main.js",
            "scopes": ["webhooks.write", "teams.read"]}}),
    )
    .await
    .ok();
    let code = format!(
        r#"export default async ({{ res }}) => {{
            const made = await nimbus.graphql(
                'mutation($input: CreateWebhookInput!) {{ createWebhook(input: $input) {{ webhook {{ id }} }} }}',
                {{ input: {{ name: "laundered", url: "{}", events: ["teams.*"] }} }},
            );
            if (made.errors) throw new Error(JSON.stringify(made.errors));
            return res.json(made.data);
        }};"#,
        receiver.url("/ok/laundered")
    );
    let deployed =
        deploy_response_as(&app, key, "default", "hooker", "main.js", code.as_bytes()).await;
    let body: Value = deployed.json().await.unwrap();
    assert!(
        body["data"]["createDeployment"]["id"].is_string(),
        "{body:#}"
    );
    let ran = crate::functions::execute(&app, json!({"functionId": "hooker"}))
        .await
        .ok();
    assert_eq!(ran["createExecution"]["responseStatusCode"], 200, "{ran:#}");
    revoking_the_key_ends_the_webhook(&app, &receiver, key_id, "/ok/laundered").await;
    app.shutdown().await;
}
