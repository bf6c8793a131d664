//! Identities linked by an OAuth2 sign-in and unlinked by their user are events
//! under Appwrite's names (`users.U.identities.I.create|delete`): they reach
//! webhooks and event-triggered functions, and a realtime `account` subscriber
//! only when the identity is the subscriber's own.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::functions::deployed;
use crate::helpers::{TestApp, WAIT, WsClient};
use crate::oauth_provider::TestProvider;
use crate::oauth2::{SUCCESS, ann, configure, sign_in, spawn_oauth_app_with};
use crate::webhooks::{Receiver, create_webhook, eventually};

async fn run(app: &TestApp, query: &str, variables: Value, bearer: &str) -> Value {
    let header = format!("Bearer {bearer}");
    app.post(
        json!({"query": query, "variables": variables}),
        &[("authorization", &header)],
    )
    .await
    .body
}

/// A password user with a verified email, signed in: their id and session secret.
async fn verified_user(app: &TestApp, email: &str) -> (String, String) {
    let password = "identity-events-1";
    let created = app
        .post(
            json!({"query": "mutation($e: String!, $p: String!) { createAccount(input: {email: $e, password: $p}) { id } }", "variables": {"e": email, "p": password}}),
            &[],
        )
        .await
        .ok();
    let id = created["createAccount"]["id"].as_str().unwrap().to_string();
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, emailVerified: true}) { id } }",
        json!({"id": id}),
    )
    .await
    .ok();
    let signed = app
        .post(
            json!({"query": "mutation($e: String!, $p: String!) { createEmailPasswordSession(input: {email: $e, password: $p}) { secret } }", "variables": {"e": email, "p": password}}),
            &[],
        )
        .await
        .ok();
    let secret = signed["createEmailPasswordSession"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    (id, secret)
}

/// An `account` subscriber acting as `secret`, live once it hears of its own
/// change.
async fn account_subscriber(app: &TestApp, user: &str, secret: &str) -> WsClient {
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"Authorization": format!("Bearer {secret}")}))
        .await
        .expect("ack");
    ws.subscribe(
        "a",
        "subscription { realtime(channels: [\"account\"]) { events payload } }",
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        run(
            app,
            "mutation { updatePrefs(input: {prefs: {warm: true}}) { id } }",
            json!({}),
            secret,
        )
        .await;
        if until(&mut ws, &format!("users.{user}.update.prefs"))
            .await
            .is_some()
        {
            return ws;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the account subscription never went live"
        );
    }
}

/// The events `ws` hears up to the first named `name`, with the payload of that
/// one; none if it is not heard within a short time.
async fn until(ws: &mut WsClient, name: &str) -> Option<(Vec<String>, Value)> {
    let mut heard = Vec::new();
    while let Some(message) = ws.socket_next_within_short_time().await {
        let event = &message["payload"]["data"]["realtime"];
        let first = event["events"][0].as_str().unwrap_or_default().to_string();
        heard.push(first.clone());
        if first == name {
            return Some((heard, event["payload"].clone()));
        }
    }
    None
}

/// Every event `ws` hears until `name` (which it must hear within [`WAIT`]).
async fn heard_until(ws: &mut WsClient, name: &str) -> (Vec<String>, Value) {
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, ws.next_json())
            .await
            .unwrap_or_else(|_| panic!("{name} never heard; heard {all:?}"))
            .expect("the subscription goes on");
        let event = &message["payload"]["data"]["realtime"];
        let first = event["events"][0].as_str().unwrap_or_default().to_string();
        all.push(first.clone());
        if first == name {
            return (all, event["payload"].clone());
        }
    }
}

const EXECUTIONS: &str = "query($f: ID!) { executions(functionId: $f, first: 10) { nodes { trigger status responseBody } } }";

#[tokio::test]
async fn linking_and_unlinking_an_identity_reach_webhooks_functions_and_only_its_owner() {
    let app = spawn_oauth_app_with(|config| {
        config.webhooks_allow_private = true;
        config.jobs_poll_ms = 50;
    })
    .await;
    let provider = TestProvider::start().await;
    configure(&app, "acme", json!({"issuer": provider.url})).await;
    let receiver = Receiver::start().await;
    create_webhook(&app, &receiver.url("/ok"), &["users.*.identities.*"]).await;
    deployed(
        &app,
        "linked",
        json!({"events": ["users.*.identities.*"]}),
        r#"export default async ({ req, res }) => res.json({
            event: req.headers['x-nimbus-event'],
            body: req.bodyJson,
        });"#,
    )
    .await;

    let (ann_id, ann_secret) = verified_user(&app, "ann@example.com").await;
    let (bob_id, bob_secret) = verified_user(&app, "bob@example.com").await;
    let mut ann_ws = account_subscriber(&app, &ann_id, &ann_secret).await;
    let mut bob_ws = account_subscriber(&app, &bob_id, &bob_secret).await;

    // The provider vouches for Ann's verified address: the sign-in links it.
    provider.sign_in_as(ann());
    let landing = sign_in(&app, "acme", "").await;
    assert_eq!(landing.location, SUCCESS, "{landing:?}");
    let identities = run(&app, "{ accountIdentities { id } }", json!({}), &ann_secret).await;
    let identity = identities["data"]["accountIdentities"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no identity linked: {identities}"))
        .to_string();
    let created = format!("users.{ann_id}.identities.{identity}.create");
    let (_, payload) = heard_until(&mut ann_ws, &created).await;
    let expected = |payload: &Value| {
        assert_eq!(payload["id"], identity.as_str(), "{payload}");
        assert_eq!(payload["userId"], ann_id.as_str(), "{payload}");
        assert_eq!(payload["provider"], "acme", "{payload}");
        assert_eq!(payload["providerUid"], "ann-123", "{payload}");
        assert_eq!(payload["providerEmail"], "ann@example.com", "{payload}");
        let keys: BTreeSet<&str> = payload
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            BTreeSet::from([
                "id",
                "userId",
                "provider",
                "providerUid",
                "providerEmail",
                "createdAt",
                "updatedAt"
            ]),
            "an identity event carries the identity, no provider token"
        );
    };
    expected(&payload);

    let deleted = run(
        &app,
        "mutation($id: ID!) { deleteIdentity(input: {id: $id}) { deletedId } }",
        json!({"id": identity}),
        &ann_secret,
    )
    .await;
    assert_eq!(
        deleted["data"]["deleteIdentity"]["deletedId"],
        identity.as_str(),
        "{deleted}"
    );
    let removed = format!("users.{ann_id}.identities.{identity}.delete");
    let (_, payload) = heard_until(&mut ann_ws, &removed).await;
    expected(&payload);
    // Unlinked twice: refused, and not announced again (the prefs change after
    // it comes first).
    let again = run(
        &app,
        "mutation($id: ID!) { deleteIdentity(input: {id: $id}) { deletedId } }",
        json!({"id": identity}),
        &ann_secret,
    )
    .await;
    assert_eq!(
        again["errors"][0]["extensions"]["code"], "IDENTITY_NOT_FOUND",
        "{again}"
    );
    run(
        &app,
        "mutation { updatePrefs(input: {prefs: {after: true}}) { id } }",
        json!({}),
        &ann_secret,
    )
    .await;
    let (after, _) = heard_until(&mut ann_ws, &format!("users.{ann_id}.update.prefs")).await;
    assert!(
        !after.iter().any(|name| name.contains(".identities.")),
        "{after:?}"
    );

    // Bob heard none of it.
    run(
        &app,
        "mutation { updatePrefs(input: {prefs: {after: true}}) { id } }",
        json!({}),
        &bob_secret,
    )
    .await;
    let (bob_heard, _) = heard_until(&mut bob_ws, &format!("users.{bob_id}.update.prefs")).await;
    assert!(
        bob_heard.iter().all(|name| !name.contains(&ann_id)),
        "Ann's events reached Bob: {bob_heard:?}"
    );

    // The webhook: each event once, with the identity. Deliveries are jobs run
    // side by side, so their order of arrival is not the events' order.
    let requests = receiver.wait_for("/ok", 2).await;
    let mut names = Vec::new();
    for request in &requests {
        let body: Value = serde_json::from_str(&request.body).unwrap();
        names.push(body["events"][0].as_str().unwrap().to_string());
        expected(&body["payload"]);
    }
    names.sort();
    let mut both = vec![created.clone(), removed.clone()];
    both.sort();
    assert_eq!(names, both);

    // The function ran once for each, with the event as its request.
    let ran = eventually("both executions", || {
        let app = &app;
        async move {
            let nodes =
                app.admin(EXECUTIONS, json!({"f": "linked"})).await.ok()["executions"]["nodes"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
            let done = nodes.len() == 2 && nodes.iter().all(|n| n["status"] == "COMPLETED");
            done.then_some(nodes)
        }
    })
    .await;
    let mut events = BTreeSet::new();
    for execution in &ran {
        assert_eq!(execution["trigger"], "EVENT", "{execution}");
        let response: Value =
            serde_json::from_str(execution["responseBody"].as_str().unwrap()).unwrap();
        expected(&response["body"]);
        events.insert(response["event"].as_str().unwrap().to_string());
    }
    assert_eq!(events, BTreeSet::from([created, removed]));
    app.shutdown().await;
}
