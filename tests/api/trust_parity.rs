//! Trust and parity with Appwrite where clients and probes expect it: servers list
//! and unlink any user's provider identities (and nothing of another project, nor
//! with a user's token); a first OAuth2 sign-in writes its user and identity as
//! one, even when two race; a new password ends the user's other sessions and
//! their sockets at once, as the project's `invalidateSessions` says; and an
//! execution record queued behind its response never outlives its function.

use serde_json::{Value, json};

use crate::functions::deployed;
use crate::helpers::{TestApp, WAIT, WsClient, spawn_app};
use crate::oauth_provider::{Account, TestProvider};
use crate::oauth2::{
    FAILURE, SUCCESS, browser, configure, cookie_pair, get, get_with, sign_in, spawn_oauth_app,
};

const IDENTITIES: &str = "query($user: ID, $provider: String, $search: String, $first: Int, $after: String) { identities(userId: $user, provider: $provider, search: $search, first: $first, after: $after) { totalCount pageInfo { hasNextPage endCursor } nodes { id userId provider providerUid providerEmail } } }";
const DELETE_IDENTITY: &str =
    "mutation($id: ID!) { deleteUserIdentity(input: {id: $id}) { deletedId } }";

fn account(subject: &str, email: &str) -> Account {
    Account {
        subject: subject.into(),
        email: email.into(),
        email_verified: true,
        name: subject.into(),
    }
}

/// Signs `who` in through `provider`: the session secret and the user id.
async fn signed_in_with(
    app: &TestApp,
    oidc: &TestProvider,
    provider: &str,
    who: Account,
) -> (String, String) {
    oidc.sign_in_as(who);
    let landing = sign_in(app, provider, "").await;
    assert_eq!(landing.location, SUCCESS, "{landing:?}");
    let secret = landing.session_secret();
    let me = app
        .as_session(&secret, "{ account { id } }", json!({}))
        .await
        .ok();
    (secret, me["account"]["id"].as_str().unwrap().to_string())
}

fn ids_of(answer: &Value) -> Vec<String> {
    answer["identities"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect()
}

/// A realtime subscriber on `users` as a key, live once it hears a change of
/// `user_id` it made itself.
async fn users_subscriber(app: &TestApp, key: &str, user_id: &str) -> WsClient {
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": key})).await.expect("ack");
    ws.subscribe(
        "u",
        "subscription { realtime(channels: [\"users\"]) { events payload } }",
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    for round in 0.. {
        app.admin(
            "mutation($id: ID!, $name: String!) { updateUser(input: {id: $id, name: $name}) { id } }",
            json!({"id": user_id, "name": format!("warm {round}")}),
        )
        .await
        .ok();
        while let Some(message) = ws.socket_next_within_short_time().await {
            let name = &message["payload"]["data"]["realtime"]["events"][0];
            if name == &json!(format!("users.{user_id}.update.name")) {
                return ws;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the users subscription never went live"
        );
    }
    unreachable!()
}

#[tokio::test]
async fn servers_list_and_unlink_any_users_identities_and_nothing_else() {
    let app = spawn_oauth_app().await;
    let oidc = TestProvider::start().await;
    configure(&app, "acme", json!({"issuer": oidc.url})).await;
    configure(&app, "other", json!({"issuer": oidc.url})).await;
    let (ann_secret, ann) =
        signed_in_with(&app, &oidc, "acme", account("ann-1", "ann@example.com")).await;
    let (_, ann_again) =
        signed_in_with(&app, &oidc, "other", account("ann-2", "ann@example.com")).await;
    assert_eq!(ann, ann_again, "a verified email links to the same user");
    let (_, bob) = signed_in_with(&app, &oidc, "acme", account("bob-1", "bob@example.com")).await;

    let reader = app.create_key("default", &["users.read"]).await;
    let writer = app
        .create_key("default", &["users.read", "users.write"])
        .await;
    let list = |variables: Value| {
        let reader = reader.clone();
        let app = &app;
        async move {
            app.as_key(&reader, "default", IDENTITIES, variables)
                .await
                .ok()
        }
    };
    let all = list(json!({})).await;
    assert_eq!(all["identities"]["totalCount"], 3, "{all}");
    let by_ann = list(json!({"user": ann})).await;
    assert_eq!(by_ann["identities"]["totalCount"], 2, "{by_ann}");
    let by_other = list(json!({"provider": "other"})).await;
    assert_eq!(
        by_other["identities"]["nodes"],
        json!([{"id": by_other["identities"]["nodes"][0]["id"], "userId": ann, "provider": "other", "providerUid": "ann-2", "providerEmail": "ann@example.com"}])
    );
    let searched = list(json!({"search": "bob"})).await;
    assert_eq!(searched["identities"]["nodes"][0]["userId"], bob.as_str());
    assert_eq!(searched["identities"]["totalCount"], 1);
    // Pages by id, like `users`.
    let first = list(json!({"first": 2})).await;
    assert_eq!(first["identities"]["pageInfo"]["hasNextPage"], true);
    let cursor = first["identities"]["pageInfo"]["endCursor"].clone();
    let rest = list(json!({"first": 2, "after": cursor})).await;
    assert_eq!(rest["identities"]["pageInfo"]["hasNextPage"], false);
    let mut paged = ids_of(&first);
    paged.extend(ids_of(&rest));
    let mut every = ids_of(&all);
    every.sort();
    assert_eq!(paged, every, "pages cover every identity once, by id");
    // No provider token is kept, so the type has nowhere to show one.
    let fields = app
        .admin(
            "{ __type(name: \"Identity\") { fields { name } } }",
            json!({}),
        )
        .await
        .ok();
    let names: Vec<String> = fields["__type"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_lowercase())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.contains("token") || n.contains("secret")),
        "{names:?}"
    );

    // Hostile callers.
    let ann_acme = by_ann["identities"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["provider"] == "acme")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let no_scope = app.create_key("default", &["keys.read"]).await;
    let answer = app
        .as_key(&no_scope, "default", IDENTITIES, json!({}))
        .await;
    assert_eq!(answer.code(), "SCOPE_MISSING", "{:?}", answer.body);
    let answer = app
        .as_key(&reader, "default", DELETE_IDENTITY, json!({"id": ann_acme}))
        .await;
    assert_eq!(answer.code(), "SCOPE_MISSING", "{:?}", answer.body);
    let answer = app.as_session(&ann_secret, IDENTITIES, json!({})).await;
    assert_eq!(answer.code(), "PERMISSION_DENIED", "{:?}", answer.body);
    let answer = app
        .as_session(&ann_secret, DELETE_IDENTITY, json!({"id": ann_acme}))
        .await;
    assert_eq!(answer.code(), "PERMISSION_DENIED", "{:?}", answer.body);
    let answer = app
        .post(json!({"query": IDENTITIES, "variables": {}}), &[])
        .await;
    assert_eq!(answer.code(), "UNAUTHENTICATED", "{:?}", answer.body);
    app.create_project("elsewhere").await;
    let foreign = app
        .create_key("elsewhere", &["users.read", "users.write"])
        .await;
    let answer = app
        .as_key(
            &foreign,
            "elsewhere",
            DELETE_IDENTITY,
            json!({"id": ann_acme}),
        )
        .await;
    assert_eq!(answer.code(), "IDENTITY_NOT_FOUND", "{:?}", answer.body);
    let seen = app
        .as_key(&foreign, "elsewhere", IDENTITIES, json!({}))
        .await
        .ok();
    assert_eq!(seen["identities"]["totalCount"], 0);
    let answer = app
        .as_key(&writer, "default", DELETE_IDENTITY, json!({"id": "nope"}))
        .await;
    assert_eq!(answer.code(), "IDENTITY_NOT_FOUND", "{:?}", answer.body);
    for bad in ["../x", "", &"a".repeat(37)] {
        let answer = app
            .as_key(&writer, "default", DELETE_IDENTITY, json!({"id": bad}))
            .await;
        assert_eq!(answer.code(), "INVALID_ID", "{bad}: {:?}", answer.body);
    }
    let answer = app
        .as_key(&reader, "default", IDENTITIES, json!({"user": "../x"}))
        .await;
    assert_eq!(answer.code(), "INVALID_ID", "{:?}", answer.body);
    let answer = app
        .as_key(
            &reader,
            "default",
            IDENTITIES,
            json!({"provider": "NOT A NAME"}),
        )
        .await;
    assert_eq!(
        answer.code(),
        "INVALID_OAUTH2_PROVIDER",
        "{:?}",
        answer.body
    );
    assert_eq!(list(json!({})).await["identities"]["totalCount"], 3);

    // Unlinking is announced like the user's own unlinking, without tokens.
    let mut ws = users_subscriber(&app, &reader, &ann).await;
    let deleted = app
        .as_key(&writer, "default", DELETE_IDENTITY, json!({"id": ann_acme}))
        .await
        .ok();
    assert_eq!(
        deleted["deleteUserIdentity"]["deletedId"],
        ann_acme.as_str()
    );
    let name = format!("users.{ann}.identities.{ann_acme}.delete");
    let deadline = tokio::time::Instant::now() + WAIT;
    let payload = loop {
        let message = tokio::time::timeout_at(deadline, ws.next_json())
            .await
            .unwrap_or_else(|_| panic!("{name} never heard"))
            .expect("the subscription goes on");
        let event = &message["payload"]["data"]["realtime"];
        if event["events"][0] == json!(name) {
            break event["payload"].clone();
        }
    };
    assert_eq!(payload["id"], ann_acme.as_str());
    assert_eq!(payload["provider"], "acme");
    assert!(
        !payload.to_string().to_lowercase().contains("token"),
        "{payload}"
    );
    let again = app
        .as_key(&writer, "default", DELETE_IDENTITY, json!({"id": ann_acme}))
        .await;
    assert_eq!(again.code(), "IDENTITY_NOT_FOUND");
    let mine = app
        .as_session(&ann_secret, "{ accountIdentities { provider } }", json!({}))
        .await
        .ok();
    assert_eq!(mine["accountIdentities"], json!([{"provider": "other"}]));
    // The user keeps their account.
    let user = app
        .admin(
            "query($id: ID!) { user(id: $id) { id } }",
            json!({"id": ann}),
        )
        .await
        .ok();
    assert_eq!(user["user"]["id"], ann.as_str());
    app.shutdown().await;
}

/// The callback URL of a sign-in a browser started, with its nonce cookie.
async fn callback_of(app: &TestApp, client: &reqwest::Client) -> (String, Option<String>) {
    let start = format!(
        "{}/v1/account/oauth2/acme?project=default&success={SUCCESS}&failure={FAILURE}",
        app.url
    );
    let to_provider = get(client, &start).await;
    assert_eq!(to_provider.status, 302, "{to_provider:?}");
    let nonce = to_provider.nonce.as_deref().map(cookie_pair);
    let to_callback = get(client, &to_provider.location).await;
    assert!((301..=308).contains(&to_callback.status), "{to_callback:?}");
    (to_callback.location, nonce)
}

#[tokio::test]
async fn two_first_sign_ins_of_one_provider_account_at_once_make_one_user_and_one_identity() {
    let app = spawn_oauth_app().await;
    let oidc = TestProvider::start().await;
    configure(&app, "acme", json!({"issuer": oidc.url})).await;
    let reader = app.create_key("default", &["users.read"]).await;
    // With an email (the users' unique email clashes first) and without one (only
    // the identity's unique key can clash).
    let accounts = [
        account("race-1", "race1@example.com"),
        account("race-2", "race2@example.com"),
        account("race-3", ""),
        account("race-4", ""),
    ];
    for (round, who) in accounts.into_iter().enumerate() {
        oidc.sign_in_as(who.clone());
        let (one, two) = (browser(), browser());
        let (first, second) = tokio::join!(callback_of(&app, &one), callback_of(&app, &two));
        // Both browsers come back at once.
        let (a, b) = tokio::join!(
            get_with(&one, &first.0, first.1.as_deref()),
            get_with(&two, &second.0, second.1.as_deref())
        );
        assert_eq!(a.location, SUCCESS, "{a:?}");
        assert_eq!(b.location, SUCCESS, "{b:?}");
        let whose = async |secret: String| {
            app.as_session(&secret, "{ account { id } }", json!({}))
                .await
                .ok()["account"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let user_a = whose(a.session_secret()).await;
        let user_b = whose(b.session_secret()).await;
        assert_eq!(user_a, user_b, "round {round}: two users for one account");
        let identities = app
            .as_key(
                &reader,
                "default",
                IDENTITIES,
                json!({"search": who.subject}),
            )
            .await
            .ok();
        assert_eq!(
            identities["identities"]["totalCount"], 1,
            "round {round}: {identities}"
        );
        assert_eq!(
            identities["identities"]["nodes"][0]["userId"],
            user_a.as_str()
        );
        let users = app.admin("{ users { totalCount } }", json!({})).await.ok();
        assert_eq!(
            users["users"]["totalCount"],
            round + 1,
            "round {round}: a user without its identity was left"
        );
    }
    app.shutdown().await;
}

const PASSWORD: &str = "first-password-1";

/// Signs up `email` and signs in twice: the user id and two session secrets.
async fn two_sessions(app: &TestApp, email: &str) -> (String, String, String) {
    let created = app
        .post(json!({"query": "mutation($e: String!, $p: String!) { createAccount(input: {email: $e, password: $p}) { id } }", "variables": {"e": email, "p": PASSWORD}}), &[])
        .await
        .ok();
    let sign_in = async || {
        app.post(json!({"query": "mutation($e: String!, $p: String!) { createEmailPasswordSession(input: {email: $e, password: $p}) { secret } }", "variables": {"e": email, "p": PASSWORD}}), &[])
            .await
            .ok()["createEmailPasswordSession"]["secret"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = sign_in().await;
    let second = sign_in().await;
    (
        created["createAccount"]["id"].as_str().unwrap().to_string(),
        first,
        second,
    )
}

/// A socket as `secret` with a live `account` subscription.
async fn account_socket(app: &TestApp, secret: &str) -> WsClient {
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    let ack = ws
        .init(json!({"Authorization": format!("Bearer {secret}")}))
        .await
        .expect("ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    ws.subscribe(
        "a",
        "subscription { realtime(channels: [\"account\"]) { events } }",
    )
    .await;
    // An operation answered after the subscription proves it started.
    ws.send(json!({"id": "q", "type": "subscribe", "payload": {"query": "{ account { id } }"}}))
        .await;
    loop {
        let message = ws.next_json().await.expect("the socket stays open");
        if message["id"] == "q" && message["type"] == "complete" {
            return ws;
        }
    }
}

/// The socket closes with 4403 `INVALID_SESSION`, its subscription ended first.
async fn assert_closed(ws: &mut WsClient) {
    let mut messages = Vec::new();
    let (code, reason) = loop {
        match ws.next_json().await {
            Ok(message) => messages.push(message),
            Err(close) => break close,
        }
    };
    assert_eq!(code, 4403, "{reason} after {messages:?}");
    assert!(
        reason.starts_with("INVALID_SESSION: "),
        "{reason} after {messages:?}"
    );
}

async fn who(app: &TestApp, secret: &str) -> crate::helpers::Answer {
    app.as_session(secret, "{ account { id } }", json!({}))
        .await
}

#[tokio::test]
async fn a_new_password_ends_the_users_other_sessions_and_their_sockets_at_once() {
    let app = spawn_app().await;
    let project = app
        .admin("{ project { auth { invalidateSessions } } }", json!({}))
        .await
        .ok();
    assert_eq!(project["project"]["auth"]["invalidateSessions"], true);
    let (ann, current, other) = two_sessions(&app, "ann@example.com").await;
    let mut other_ws = account_socket(&app, &other).await;
    let mut current_ws = account_socket(&app, &current).await;

    // The user's own change keeps the session that made it.
    app.as_session(
        &current,
        "mutation($old: String!) { updatePassword(input: {password: \"second-password-2\", oldPassword: $old}) { id } }",
        json!({"old": PASSWORD}),
    )
    .await
    .ok();
    assert_closed(&mut other_ws).await;
    assert_eq!(who(&app, &other).await.code(), "INVALID_SESSION");
    let me = who(&app, &current).await.ok();
    assert_eq!(me["account"]["id"], ann.as_str());
    let sessions = app
        .as_session(&current, "{ accountSessions { id } }", json!({}))
        .await
        .ok();
    assert_eq!(sessions["accountSessions"].as_array().unwrap().len(), 1);
    // The current socket goes on working.
    let answer = {
        current_ws
            .send(json!({"id": "q2", "type": "subscribe", "payload": {"query": "{ account { id } }"}}))
            .await;
        loop {
            let message = current_ws.next_json().await.expect("open");
            if message["id"] == "q2" {
                break message;
            }
        }
    };
    assert_eq!(answer["payload"]["data"]["account"]["id"], ann.as_str());

    // A server's new password ends every session.
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, password: \"third-password-3\"}) { id } }",
        json!({"id": ann}),
    )
    .await
    .ok();
    assert_closed(&mut current_ws).await;
    assert_eq!(who(&app, &current).await.code(), "INVALID_SESSION");
    let left = app
        .admin(
            "query($id: ID!) { userSessions(userId: $id) { id } }",
            json!({"id": ann}),
        )
        .await
        .ok();
    assert_eq!(left["userSessions"], json!([]));
    app.shutdown().await;
}

#[tokio::test]
async fn with_invalidate_sessions_off_a_new_password_keeps_every_session() {
    let app = spawn_app().await;
    let updated = app
        .admin(
            "mutation { updateProjectAuth(input: {projectId: \"default\", invalidateSessions: false}) { auth { invalidateSessions } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        updated["updateProjectAuth"]["auth"]["invalidateSessions"],
        false
    );
    let (ann, current, other) = two_sessions(&app, "ann@example.com").await;
    app.as_session(
        &current,
        "mutation($old: String!) { updatePassword(input: {password: \"second-password-2\", oldPassword: $old}) { id } }",
        json!({"old": PASSWORD}),
    )
    .await
    .ok();
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, password: \"third-password-3\"}) { id } }",
        json!({"id": ann}),
    )
    .await
    .ok();
    for secret in [&current, &other] {
        let me = who(&app, secret).await.ok();
        assert_eq!(me["account"]["id"], ann.as_str());
    }
    // A new project starts with the setting on.
    app.create_project("fresh").await;
    let fresh = app
        .admin(
            "{ project(id: \"fresh\") { auth { invalidateSessions } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(fresh["project"]["auth"]["invalidateSessions"], true);
    app.shutdown().await;
}

const EXECUTIONS: &str = "query($f: ID!) { executions(functionId: $f, first: 100) { totalCount nodes { id responseBody } } }";

/// Runs function `id` over plain HTTP (its record is written behind the
/// response): the body and the execution id.
async fn run_over_http(app: &TestApp, id: &str) -> (String, String) {
    let response = app
        .client
        .get(format!("{}/v1/functions/{id}", app.url))
        .send()
        .await
        .unwrap();
    let execution = response.headers()["x-nimbus-execution-id"]
        .to_str()
        .unwrap()
        .to_string();
    (response.text().await.unwrap(), execution)
}

#[tokio::test]
async fn records_queued_behind_their_response_never_outlive_their_function() {
    let app = spawn_app().await;
    deployed(
        &app,
        "f",
        json!({"execute": ["any"]}),
        "export default async ({ res }) => res.text('old')",
    )
    .await;
    // Executions of the old function answer while it is deleted: their records
    // are queued around the delete.
    let runs: Vec<_> = (0..24)
        .map(|_| {
            let client = app.client.clone();
            let url = format!("{}/v1/functions/f", app.url);
            tokio::spawn(async move { client.get(url).send().await.map(|r| r.status()) })
        })
        .collect();
    app.admin(
        "mutation { deleteFunction(input: {id: \"f\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    for run in runs {
        let _ = run.await.unwrap();
    }
    deployed(
        &app,
        "f",
        json!({"execute": ["any"]}),
        "export default async ({ res }) => res.text('new')",
    )
    .await;
    let (body, marker) = run_over_http(&app, "f").await;
    assert_eq!(body, "new");
    // Records are written in the order they were queued: once the new one shows,
    // every older one was written or dropped.
    let deadline = tokio::time::Instant::now() + WAIT;
    let executions = loop {
        let executions = app.admin(EXECUTIONS, json!({"f": "f"})).await.ok();
        let nodes = executions["executions"]["nodes"].as_array().unwrap();
        if nodes.iter().any(|n| n["id"] == marker.as_str()) {
            break executions;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record was never written"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(executions["executions"]["totalCount"], 1, "{executions}");
    let state = app.server.as_ref().unwrap().state();
    let rows: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM function_executions WHERE project_id = 'default' AND function_id = 'f'",
    )
    .fetch_one(state.db.pool())
    .await
    .unwrap();
    assert_eq!(rows, 1, "orphan records of the deleted function");

    // A record that reaches the writer after its function was deleted and made
    // again is not written: it names the function it ran as by its creation.
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
        request_headers: Vec::new(),
        response_status: 200,
        response_headers: Vec::new(),
        response_body: b"stale".to_vec().into(),
        logs: String::new(),
        errors: String::new(),
        logs_truncated: false,
        failure: None,
        duration_ms: 1,
        scheduled_at: None,
        created_at: created_at - 1,
        updated_at: created_at - 1,
    };
    let store = nimbus::services::functions::store::insert_execution_of;
    let written = store(state.db.pool(), &record("stale"), created_at - 1, None)
        .await
        .unwrap();
    assert!(!written, "a record of a function gone was written");
    let written = store(state.db.pool(), &record("live"), created_at, None)
        .await
        .unwrap();
    assert!(written, "a record of the function as it is was not written");
    app.shutdown().await;
}

const MEMBERSHIPS: &str = "{ memberships(teamId: \"band\") { id userId email confirmed roles } }";

/// The next realtime event `ws` hears, within [`WAIT`]: its first name and payload.
async fn next_event(ws: &mut WsClient) -> (String, Value) {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next_json())
            .await
            .expect("an event in time")
            .expect("the socket stays open");
        let event = &message["payload"]["data"]["realtime"];
        if message["type"] == "next" {
            return (
                event["events"][0].as_str().unwrap_or_default().to_string(),
                event["payload"].clone(),
            );
        }
    }
}

#[tokio::test]
async fn an_invited_address_is_shown_to_the_teams_owners_and_servers_only() {
    let smtp = crate::smtp_server::TestSmtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path()).await;
    config.smtp_url = Some(smtp.url.clone());
    let app = crate::helpers::spawn_with(config, dir).await;
    let owner = app.signed_in("olga@example.com").await;
    app.as_session(
        &owner,
        "mutation { createTeam(input: {id: \"band\", name: \"The Band\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let member = app.signed_in("mia@example.com").await;
    let mia = who(&app, &member).await.ok()["account"]["id"].clone();
    app.admin(
        "mutation($u: ID!) { createMembership(input: {teamId: \"band\", userId: $u, roles: [\"drums\"]}) { confirmed } }",
        json!({"u": mia}),
    )
    .await
    .ok();
    // Mia listens to the team's memberships, live once she hears a team change.
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"Authorization": format!("Bearer {member}")}))
        .await
        .expect("ack");
    ws.subscribe(
        "m",
        "subscription { realtime(channels: [\"teams\", \"memberships\"]) { events payload } }",
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        app.as_session(
            &owner,
            "mutation { updateTeamName(input: {id: \"band\", name: \"The Band\"}) { id } }",
            json!({}),
        )
        .await
        .ok();
        if ws.socket_next_within_short_time().await.is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no team event");
    }
    while ws.socket_next_within_short_time().await.is_some() {}

    let invited = app
        .as_session(
            &owner,
            "mutation { createMembership(input: {teamId: \"band\", email: \"nico@example.com\", roles: [\"bass\"], url: \"http://localhost/join\"}) { id email } }",
            json!({}),
        )
        .await
        .ok()["createMembership"]
        .clone();
    assert_eq!(invited["email"], "nico@example.com");
    let pending = |list: &Value| {
        list["memberships"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == invited["id"])
            .cloned()
            .expect("the invitation is listed")
    };
    let seen_by_member = app.as_session(&member, MEMBERSHIPS, json!({})).await.ok();
    let row = pending(&seen_by_member);
    assert_eq!(
        (&row["email"], &row["userId"]),
        (&Value::Null, &Value::Null)
    );
    assert_eq!(row["confirmed"], false);
    let seen_by_owner = app.as_session(&owner, MEMBERSHIPS, json!({})).await.ok();
    assert_eq!(pending(&seen_by_owner)["email"], "nico@example.com");
    let seen_by_server = app.admin(MEMBERSHIPS, json!({})).await.ok();
    assert_eq!(pending(&seen_by_server)["email"], "nico@example.com");

    // Nor does Mia hear of it: the next event she hears is the team's change that
    // came after the invitation.
    app.as_session(
        &owner,
        "mutation { updateTeamName(input: {id: \"band\", name: \"After\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let (name, payload) = next_event(&mut ws).await;
    assert!(name.starts_with("teams.band.update"), "{name}: {payload}");
    assert!(!payload.to_string().contains("nico@"), "{payload}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_server_adding_a_new_address_makes_its_user_with_the_membership_once() {
    let app = spawn_app().await;
    for team in ["reds", "blues"] {
        app.admin(
            "mutation($t: ID!) { createTeam(input: {id: $t, name: $t}) { id } }",
            json!({"t": team}),
        )
        .await
        .ok();
    }
    let add = |team: &'static str| {
        app.admin(
            "mutation($t: ID!) { createMembership(input: {teamId: $t, email: \"Nia@Example.com\", name: \"Nia\", roles: [\"fan\"]}) { userId confirmed } }",
            json!({"t": team}),
        )
    };
    // The same new address added to two teams at once: one user, in both.
    let (reds, blues) = tokio::join!(add("reds"), add("blues"));
    let (reds, blues) = (reds.ok(), blues.ok());
    assert_eq!(reds["createMembership"]["confirmed"], true);
    assert_eq!(
        reds["createMembership"]["userId"],
        blues["createMembership"]["userId"]
    );
    let users = app
        .admin(
            "{ users { totalCount nodes { id email name } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(users["users"]["totalCount"], 1, "{users}");
    assert_eq!(
        users["users"]["nodes"][0],
        json!({"id": reds["createMembership"]["userId"], "email": "nia@example.com", "name": "Nia"})
    );
    // A refused membership creates no user.
    let refused = app
        .admin(
            "mutation { createMembership(input: {teamId: \"nope\", email: \"ghost@example.com\", roles: [\"fan\"]}) { userId } }",
            json!({}),
        )
        .await;
    assert_eq!(refused.code(), "TEAM_NOT_FOUND");
    let users = app.admin("{ users { totalCount } }", json!({})).await.ok();
    assert_eq!(users["users"]["totalCount"], 1);
    app.shutdown().await;
}
