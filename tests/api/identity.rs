//! Accounts, sessions and server-side user management.

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, spawn_app, totp_now};

const SIGN_IN: &str = "mutation($email: String!, $password: String!) { createEmailPasswordSession(input: {email: $email, password: $password}) { secret session { id userId provider current } } }";

async fn sign_up(app: &TestApp, email: &str, password: &str) -> Value {
    app.post(
        json!({"query": "mutation($email: String!, $password: String!) { createAccount(input: {email: $email, password: $password, name: \"Ann\"}) { id email name anonymous } }",
               "variables": {"email": email, "password": password}}),
        &[],
    )
    .await
    .ok()["createAccount"]
        .clone()
}

async fn sign_in(app: &TestApp, email: &str, password: &str) -> Answer {
    app.post(
        json!({"query": SIGN_IN, "variables": {"email": email, "password": password}}),
        &[],
    )
    .await
}

async fn session_secret(app: &TestApp, email: &str, password: &str) -> String {
    sign_in(app, email, password).await.ok()["createEmailPasswordSession"]["secret"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn a_user_signs_up_signs_in_and_reads_their_account() {
    let app = spawn_app().await;
    let user = sign_up(&app, "Ann@Example.com", "correct horse").await;
    assert_eq!(
        user["email"], "ann@example.com",
        "emails are stored lowercased"
    );
    assert_eq!(user["anonymous"], false);

    let signed_in = sign_in(&app, "ann@example.com", "correct horse").await;
    let payload = signed_in.ok()["createEmailPasswordSession"].clone();
    assert_eq!(payload["session"]["userId"], user["id"]);
    assert_eq!(payload["session"]["provider"], "email");
    let secret = payload["secret"].as_str().unwrap();
    assert!(secret.starts_with("ns_"));

    let account = app
        .as_session(
            secret,
            "{ account { id email name } accountSessions { id current } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(account["account"]["id"], user["id"]);
    assert_eq!(account["accountSessions"][0]["current"], true);

    let guest = app
        .post(json!({"query": "{ account { id } }"}), &[])
        .await
        .ok();
    assert_eq!(guest["account"], Value::Null);
    app.shutdown().await;
}

#[tokio::test]
async fn browsers_get_an_http_only_cookie_that_works_as_the_session() {
    let app = spawn_app().await;
    sign_up(&app, "cookie@example.com", "cookie-password").await;
    let response = app
        .client
        .post(format!("{}/v1/graphql", app.url))
        .json(&json!({"query": SIGN_IN, "variables": {"email": "cookie@example.com", "password": "cookie-password"}}))
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("nimbus_session_default=ns_"), "{cookie}");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap();
    let account = app
        .post(
            json!({"query": "{ account { email } }"}),
            &[("cookie", pair)],
        )
        .await
        .ok();
    assert_eq!(account["account"]["email"], "cookie@example.com");
    // The cookie of one project is not a session in another.
    app.create_project("other").await;
    let elsewhere = app
        .post(
            json!({"query": "{ account { email } }"}),
            &[("cookie", pair), ("x-nimbus-project", "other")],
        )
        .await
        .ok();
    assert_eq!(elsewhere["account"], Value::Null);
    app.shutdown().await;
}

#[tokio::test]
async fn wrong_credentials_do_not_tell_which_part_was_wrong() {
    let app = spawn_app().await;
    sign_up(&app, "bob@example.com", "bob-password").await;
    let wrong_password = sign_in(&app, "bob@example.com", "not-bobs").await;
    let unknown_email = sign_in(&app, "nobody@example.com", "bob-password").await;
    assert_eq!(wrong_password.code(), "INVALID_CREDENTIALS");
    assert_eq!(unknown_email.code(), "INVALID_CREDENTIALS");
    assert_eq!(
        wrong_password.body["errors"][0]["message"],
        unknown_email.body["errors"][0]["message"]
    );
    app.shutdown().await;
}

#[tokio::test]
async fn bad_sign_up_input_is_refused_with_codes_and_nothing_is_written() {
    let app = spawn_app().await;
    let attempt = |email: &'static str, password: String, name: String| {
        app.post(
            json!({"query": "mutation($e: String!, $p: String!, $n: String) { createAccount(input: {email: $e, password: $p, name: $n}) { id } }",
                   "variables": {"e": email, "p": password, "n": name}}),
            &[],
        )
    };
    assert_eq!(
        attempt("not-an-email", "long enough".into(), "A".into())
            .await
            .code(),
        "INVALID_EMAIL"
    );
    assert_eq!(
        attempt("a@b.co", "short".into(), "A".into()).await.code(),
        "PASSWORD_TOO_SHORT"
    );
    assert_eq!(
        attempt("a@b.co", "x".repeat(300), "A".into()).await.code(),
        "PASSWORD_TOO_LONG"
    );
    assert_eq!(
        attempt("a@b.co", "long enough".into(), "n".repeat(129))
            .await
            .code(),
        "BAD_USER_INPUT"
    );
    assert_eq!(
        attempt("a@b.co", "long enough".into(), "nul\0name".into())
            .await
            .code(),
        "BAD_USER_INPUT"
    );
    attempt("a@b.co", "long enough".into(), "A".into())
        .await
        .ok();
    assert_eq!(
        attempt("A@B.CO", "long enough".into(), "A".into())
            .await
            .code(),
        "USER_ALREADY_EXISTS"
    );
    let listed = app.create_key("default", &["users.read"]).await;
    let count = app
        .as_key(&listed, "default", "{ users { totalCount } }", json!({}))
        .await
        .ok();
    assert_eq!(
        count["users"]["totalCount"], 1,
        "only the valid sign-up was stored"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_deleted_session_stops_working_at_once() {
    let app = spawn_app().await;
    sign_up(&app, "carol@example.com", "carol-password").await;
    let first = session_secret(&app, "carol@example.com", "carol-password").await;
    let second = session_secret(&app, "carol@example.com", "carol-password").await;
    // Warm the session cache, so the test proves eviction rather than a cold lookup.
    app.as_session(&first, "{ account { id } }", json!({}))
        .await
        .ok();
    app.as_session(
        &first,
        "mutation { deleteSession(input: {id: \"current\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    let gone = app
        .as_session(&first, "{ account { id } }", json!({}))
        .await;
    assert_eq!(gone.status, 401);
    assert_eq!(gone.code(), "INVALID_SESSION");
    app.as_session(&second, "{ account { id } }", json!({}))
        .await
        .ok();
    let all = app
        .as_session(
            &second,
            "mutation { deleteSessions { deletedCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(all["deleteSessions"]["deletedCount"], 1);
    assert_eq!(
        app.as_session(&second, "{ account { id } }", json!({}))
            .await
            .code(),
        "INVALID_SESSION"
    );
    assert_eq!(
        app.as_session("ns_forged_secret", "{ account { id } }", json!({}))
            .await
            .code(),
        "INVALID_SESSION"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn anonymous_users_become_full_accounts() {
    let app = spawn_app().await;
    let anonymous = app
        .post(
            json!({"query": "mutation { createAnonymousSession { secret session { provider } } }"}),
            &[],
        )
        .await
        .ok();
    assert_eq!(
        anonymous["createAnonymousSession"]["session"]["provider"],
        "anonymous"
    );
    let secret = anonymous["createAnonymousSession"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let account = app
        .as_session(&secret, "{ account { anonymous email } }", json!({}))
        .await
        .ok();
    assert_eq!(
        account["account"],
        json!({"anonymous": true, "email": null})
    );
    let upgraded = app.as_session(&secret,
        "mutation { updateEmail(input: {email: \"dan@example.com\", password: \"dan-password\"}) { anonymous email } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        upgraded["updateEmail"],
        json!({"anonymous": false, "email": "dan@example.com"})
    );
    session_secret(&app, "dan@example.com", "dan-password").await;
    app.shutdown().await;
}

#[tokio::test]
async fn password_changes_need_the_old_password_and_replace_it() {
    let app = spawn_app().await;
    sign_up(&app, "erin@example.com", "first-password").await;
    let secret = session_secret(&app, "erin@example.com", "first-password").await;
    let wrong = app.as_session(&secret, "mutation { updatePassword(input: {password: \"second-password\", oldPassword: \"nope-nope\"}) { id } }", json!({})).await;
    assert_eq!(wrong.code(), "INVALID_CREDENTIALS");
    let missing = app
        .as_session(
            &secret,
            "mutation { updatePassword(input: {password: \"second-password\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(missing.code(), "BAD_USER_INPUT");
    app.as_session(&secret, "mutation { updatePassword(input: {password: \"second-password\", oldPassword: \"first-password\"}) { passwordUpdatedAt } }", json!({}))
        .await
        .ok();
    assert_eq!(
        sign_in(&app, "erin@example.com", "first-password")
            .await
            .code(),
        "INVALID_CREDENTIALS"
    );
    session_secret(&app, "erin@example.com", "second-password").await;

    let prefs = app
        .as_session(
            &secret,
            "mutation($p: JSON!) { updatePrefs(input: {prefs: $p}) { prefs } }",
            json!({"p": {"theme": "dark"}}),
        )
        .await
        .ok();
    assert_eq!(prefs["updatePrefs"]["prefs"], json!({"theme": "dark"}));
    let huge = json!({"blob": "x".repeat(70 * 1024)});
    let refused = app
        .as_session(
            &secret,
            "mutation($p: JSON!) { updatePrefs(input: {prefs: $p}) { id } }",
            json!({"p": huge}),
        )
        .await;
    assert_eq!(refused.code(), "PREFS_TOO_LARGE");
    // Deep nesting is refused long before JSON readers of the user's events would
    // refuse it (128 levels); 32 levels are kept.
    let nested =
        |depth: usize| (0..depth - 1).fold(json!({"leaf": true}), |inner, _| json!({ "n": inner }));
    for (depth, code) in [
        (33, Some("PREFS_TOO_LARGE")),
        (100, Some("PREFS_TOO_LARGE")),
        (32, None),
    ] {
        let answer = app
            .as_session(
                &secret,
                "mutation($p: JSON!) { updatePrefs(input: {prefs: $p}) { id } }",
                json!({"p": nested(depth)}),
            )
            .await;
        match code {
            Some(code) => assert_eq!(answer.code(), code, "{depth}"),
            None => assert!(
                answer.body["errors"].is_null(),
                "{depth}: {:#}",
                answer.body
            ),
        }
    }
    let renamed = app
        .as_session(
            &secret,
            "mutation { updateName(input: {name: \"Erin E.\"}) { name } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(renamed["updateName"]["name"], "Erin E.");
    app.shutdown().await;
}

#[tokio::test]
async fn servers_manage_users_and_a_block_ends_sessions_at_once() {
    let app = spawn_app().await;
    let key = app
        .create_key("default", &["users.read", "users.write"])
        .await;
    let created = app
        .as_key(&key, "default", "mutation { createUser(input: {id: \"frank\", email: \"frank@example.com\", password: \"frank-password\", name: \"Frank\"}) { id email } }", json!({}))
        .await
        .ok();
    assert_eq!(created["createUser"]["id"], "frank");
    let grace = app
        .as_key(
            &key,
            "default",
            "mutation { createUser(input: {email: \"grace@example.com\", phone: \"+14155550123\"}) { id } }",
            json!({}),
        )
        .await
        .ok()["createUser"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // By id or phone too, as Appwrite's search finds them.
    for search in [grace.as_str(), "+1415555"] {
        let found = app
            .as_key(
                &key,
                "default",
                "query($s: String) { users(search: $s) { nodes { id } } }",
                json!({ "s": search }),
            )
            .await
            .ok();
        assert_eq!(found["users"]["nodes"], json!([{"id": grace}]), "{search}");
    }
    let found = app
        .as_key(
            &key,
            "default",
            "{ users(search: \"fra\") { totalCount nodes { id name } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(found["users"]["totalCount"], 1);
    assert_eq!(found["users"]["nodes"][0]["name"], "Frank");
    // A name or email's start, letters in either case, on both databases.
    for search in ["FRANK", "Fra", "FRANK@EXAMPLE"] {
        let found = app
            .as_key(
                &key,
                "default",
                "query($s: String) { users(search: $s) { totalCount nodes { id } } }",
                json!({ "s": search }),
            )
            .await
            .ok();
        assert_eq!(found["users"]["totalCount"], 1, "{search}");
        assert_eq!(found["users"]["nodes"][0]["id"], "frank", "{search}");
    }
    let wildcard = app
        .as_key(
            &key,
            "default",
            "{ users(search: \"%\") { totalCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        wildcard["users"]["totalCount"], 0,
        "LIKE wildcards in a search are literal"
    );

    let secret = session_secret(&app, "frank@example.com", "frank-password").await;
    app.as_session(&secret, "{ account { id } }", json!({}))
        .await
        .ok();
    let sessions = app
        .as_key(
            &key,
            "default",
            "{ userSessions(userId: \"frank\") { id provider } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(sessions["userSessions"].as_array().unwrap().len(), 1);

    let blocked = app
        .as_key(&key, "default", "mutation { updateUser(input: {id: \"frank\", blocked: true, labels: [\"vip\"]}) { blocked labels } }", json!({}))
        .await
        .ok();
    assert_eq!(
        blocked["updateUser"],
        json!({"blocked": true, "labels": ["vip"]})
    );
    let refused = app
        .as_session(&secret, "{ account { id } }", json!({}))
        .await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.code(), "USER_BLOCKED");
    assert_eq!(
        sign_in(&app, "frank@example.com", "frank-password")
            .await
            .code(),
        "USER_BLOCKED"
    );

    app.as_key(
        &key,
        "default",
        "mutation { updateUser(input: {id: \"frank\", blocked: false}) { blocked } }",
        json!({}),
    )
    .await
    .ok();
    app.as_session(&secret, "{ account { id } }", json!({}))
        .await
        .ok();
    app.as_key(
        &key,
        "default",
        "mutation { deleteUser(input: {id: \"frank\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        app.as_session(&secret, "{ account { id } }", json!({}))
            .await
            .code(),
        "INVALID_SESSION"
    );
    let missing = app
        .as_key(&key, "default", "{ user(id: \"frank\") { id } }", json!({}))
        .await;
    assert_eq!(missing.code(), "USER_NOT_FOUND");
    app.shutdown().await;
}

#[tokio::test]
async fn signed_in_users_cannot_reach_server_operations() {
    let app = spawn_app().await;
    sign_up(&app, "henry@example.com", "henry-password").await;
    let secret = session_secret(&app, "henry@example.com", "henry-password").await;
    let users = app
        .as_session(&secret, "{ users { totalCount } }", json!({}))
        .await;
    assert_eq!(users.code(), "PERMISSION_DENIED");
    let reader = app.create_key("default", &["users.read"]).await;
    let write = app
        .as_key(
            &reader,
            "default",
            "mutation { deleteUser(input: {id: \"x\"}) { deletedId } }",
            json!({}),
        )
        .await;
    assert_eq!(write.code(), "SCOPE_MISSING");
    app.shutdown().await;
}

#[tokio::test]
async fn repeated_sign_in_attempts_are_rate_limited() {
    let app = spawn_app().await;
    sign_up(&app, "ivan@example.com", "ivan-password").await;
    // Signing in with the right password, however often, is no abuse: each
    // success starts the count again (Appwrite's `testAccountAbuseReset`).
    for _ in 0..20 {
        session_secret(&app, "ivan@example.com", "ivan-password").await;
    }
    for _ in 0..10 {
        assert_eq!(
            sign_in(&app, "ivan@example.com", "wrong-password")
                .await
                .code(),
            "INVALID_CREDENTIALS"
        );
    }
    let limited = sign_in(&app, "ivan@example.com", "ivan-password").await;
    assert_eq!(limited.code(), "RATE_LIMITED");
    let retry_after = limited.body["errors"][0]["extensions"]["retryAfter"]
        .as_u64()
        .unwrap();
    assert!((3000..=3600).contains(&retry_after), "{retry_after}");
    // Another email from the same client is not affected.
    sign_up(&app, "judy@example.com", "judy-password").await;
    session_secret(&app, "judy@example.com", "judy-password").await;
    app.shutdown().await;
}

#[tokio::test]
async fn signing_out_ends_the_sessions_open_subscriptions() {
    let app = spawn_app().await;
    sign_up(&app, "kate@example.com", "kate-password").await;
    let secret = session_secret(&app, "kate@example.com", "kate-password").await;
    let mut ws = crate::helpers::WsClient::connect(&app.ws_url, false).await;
    let ack = ws
        .init(json!({"Authorization": format!("Bearer {secret}")}))
        .await
        .expect("ack");
    assert_eq!(ack["type"], "connection_ack");
    ws.subscribe(
        "1",
        "subscription { realtime(channels: [\"account\"]) { events } }",
    )
    .await;
    // Let the subscription start: a ping round trip on the socket, then a request.
    ws.ping_pong().await;
    app.as_session(&secret, "{ account { id } }", json!({}))
        .await
        .ok();

    app.as_session(
        &secret,
        "mutation { deleteSession(input: {id: \"current\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    // The session's own `delete` event may come first; then the subscription ends.
    let message = loop {
        let message = ws.next_json().await.expect("the subscription ends");
        let events = &message["payload"]["data"]["realtime"]["events"];
        match events[0].as_str() {
            Some(name) if name.contains(".sessions.") && name.ends_with(".delete") => continue,
            _ => break message,
        }
    };
    assert_eq!(message["id"], "1");
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"], "INVALID_SESSION",
        "{message}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn users_imported_with_foreign_hashes_sign_in_with_their_old_passwords() {
    let app = spawn_app().await;
    let key = app.create_key("default", &["users.write"]).await;
    let md5 = format!("{:032x}", md5_of("appwrite-password"));
    let created = app
        .as_key(
            &key,
            "default",
            "mutation($h: PasswordHashInput!) { createUser(input: {email: \"legacy@example.com\", passwordHash: $h}) { id passwordUpdatedAt } }",
            json!({"h": {"algorithm": "MD5", "hash": md5}}),
        )
        .await
        .ok();
    assert!(created["createUser"]["passwordUpdatedAt"].is_string());
    assert_eq!(
        sign_in(&app, "legacy@example.com", "not-the-password")
            .await
            .code(),
        "INVALID_CREDENTIALS"
    );
    // The first sign-in verifies the MD5 digest and re-hashes with argon2id; the
    // second verifies the new hash.
    session_secret(&app, "legacy@example.com", "appwrite-password").await;
    session_secret(&app, "legacy@example.com", "appwrite-password").await;

    let bad = app
        .as_key(
            &key,
            "default",
            "mutation { createUser(input: {email: \"bad@example.com\", passwordHash: {algorithm: SCRYPT, hash: \"00\"}}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(bad.code(), "INVALID_PASSWORD_HASH");
    app.shutdown().await;
}

/// MD5 of a text, computed here so the test does not trust the server's code.
fn md5_of(text: &str) -> u128 {
    use md5::Digest as _;
    u128::from_be_bytes(md5::Md5::digest(text.as_bytes()).into())
}

#[tokio::test]
async fn a_jwt_acts_as_its_session_until_the_session_ends() {
    let app = spawn_app().await;
    sign_up(&app, "liam@example.com", "liam-password").await;
    let secret = session_secret(&app, "liam@example.com", "liam-password").await;
    let issued = app
        .as_session(
            &secret,
            "mutation { createJWT { jwt expiresAt } }",
            json!({}),
        )
        .await
        .ok();
    let jwt = issued["createJWT"]["jwt"].as_str().unwrap().to_string();
    assert_eq!(jwt.split('.').count(), 3);
    // Appwrite's `duration`: seconds, 1 to 3600; 15 minutes without it.
    let lifetime = |answer: &Value| {
        let expires = chrono::DateTime::parse_from_rfc3339(
            answer["createJWT"]["expiresAt"].as_str().unwrap(),
        )
        .unwrap();
        (expires.timestamp() - chrono::Utc::now().timestamp()) as f64
    };
    assert!((lifetime(&issued) - 900.0).abs() <= 5.0, "{issued}");
    let short = app
        .as_session(
            &secret,
            "mutation { createJWT(duration: 60) { jwt expiresAt } }",
            json!({}),
        )
        .await
        .ok();
    assert!((lifetime(&short) - 60.0).abs() <= 5.0, "{short}");
    for duration in [0, 3601, -5] {
        let refused = app
            .as_session(
                &secret,
                "mutation($d: Int) { createJWT(duration: $d) { jwt } }",
                json!({"d": duration}),
            )
            .await;
        assert_eq!(
            refused.code(),
            "BAD_USER_INPUT",
            "{duration}: {:#}",
            refused.body
        );
    }
    let account = app
        .as_session(&jwt, "{ account { email } }", json!({}))
        .await
        .ok();
    assert_eq!(account["account"]["email"], "liam@example.com");

    // Forged: the payload changed, or the algorithm swapped for none.
    let mut parts: Vec<&str> = jwt.split('.').collect();
    let none_header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
    parts[0] = none_header;
    let unsigned = format!("{}.{}.", parts[0], parts[1]);
    assert_eq!(
        app.as_session(&unsigned, "{ account { id } }", json!({}))
            .await
            .code(),
        "INVALID_JWT"
    );
    let tampered = format!("{}x", jwt);
    assert_eq!(
        app.as_session(&tampered, "{ account { id } }", json!({}))
            .await
            .code(),
        "INVALID_JWT"
    );
    // Another project does not accept it.
    app.create_project("elsewhere").await;
    let bearer = format!("Bearer {jwt}");
    let other = app
        .post(
            json!({"query": "{ account { id } }"}),
            &[
                ("authorization", &bearer),
                ("x-nimbus-project", "elsewhere"),
            ],
        )
        .await;
    assert_eq!(other.code(), "INVALID_JWT");

    app.as_session(
        &secret,
        "mutation { deleteSessions { deletedCount } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        app.as_session(&jwt, "{ account { id } }", json!({}))
            .await
            .code(),
        "INVALID_JWT"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_projects_password_and_session_policy_is_enforced() {
    let app = spawn_app().await;
    app.create_project("strict").await;
    let updated = app
        .admin(
            "mutation { updateProjectAuth(input: {projectId: \"strict\", passwordMinLength: 10, passwordDictionary: true, personalDataCheck: true, passwordHistory: 2, maxSessions: 2, anonymous: false}) { auth { passwordMinLength passwordDictionary maxSessions anonymous emailPassword sessionLength } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        updated["updateProjectAuth"]["auth"],
        json!({"passwordMinLength": 10, "passwordDictionary": true, "maxSessions": 2, "anonymous": false, "emailPassword": true, "sessionLength": 31536000})
    );
    let out_of_range = app.admin("mutation { updateProjectAuth(input: {projectId: \"strict\", maxSessions: 1000}) { id } }", json!({})).await;
    assert_eq!(out_of_range.code(), "BAD_USER_INPUT");

    let strict = [("x-nimbus-project", "strict")];
    let sign_up = |email: &'static str, password: &'static str, name: &'static str| {
        app.post(
            json!({"query": "mutation($e: String!, $p: String!, $n: String) { createAccount(input: {email: $e, password: $p, name: $n}) { id } }",
                   "variables": {"e": email, "p": password, "n": name}}),
            &strict,
        )
    };
    assert_eq!(
        sign_up("m@example.com", "short-one", "Mia").await.code(),
        "PASSWORD_TOO_SHORT"
    );
    assert_eq!(
        sign_up("m@example.com", "password123", "Mia").await.code(),
        "PASSWORD_TOO_COMMON"
    );
    assert_eq!(
        sign_up("mia.rossi@example.com", "xx-mia.rossi-xx", "Mia")
            .await
            .code(),
        "PASSWORD_PERSONAL_DATA"
    );
    sign_up("mia@example.com", "Quiet-Harbor-71", "Mia")
        .await
        .ok();
    let anonymous = app
        .post(
            json!({"query": "mutation { createAnonymousSession { secret } }"}),
            &strict,
        )
        .await;
    assert_eq!(anonymous.code(), "AUTH_METHOD_DISABLED");

    let sign_in = json!({"query": "mutation { createEmailPasswordSession(input: {email: \"mia@example.com\", password: \"Quiet-Harbor-71\"}) { secret } }"});
    let mut secrets = Vec::new();
    for _ in 0..3 {
        let data = app.post(sign_in.clone(), &strict).await.ok();
        secrets.push(
            data["createEmailPasswordSession"]["secret"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    let account = json!({"query": "{ account { id } }"});
    let oldest = in_strict(&app, &secrets[0], account.clone()).await;
    assert_eq!(
        oldest.code(),
        "INVALID_SESSION",
        "the oldest session ended past maxSessions"
    );
    in_strict(&app, &secrets[1], account.clone()).await.ok();
    in_strict(&app, &secrets[2], account).await.ok();

    let change = |password: &str, old: &str| json!({"query": "mutation($p: String!, $o: String) { updatePassword(input: {password: $p, oldPassword: $o}) { id } }", "variables": {"p": password, "o": old}});
    in_strict(
        &app,
        &secrets[1],
        change("Second-Harbor-72", "Quiet-Harbor-71"),
    )
    .await
    .ok();
    let reused = in_strict(
        &app,
        &secrets[1],
        change("Quiet-Harbor-71", "Second-Harbor-72"),
    )
    .await;
    assert_eq!(reused.code(), "PASSWORD_RECENTLY_USED");
    app.shutdown().await;
}

async fn in_strict(app: &TestApp, secret: &str, body: Value) -> Answer {
    let bearer = format!("Bearer {secret}");
    app.post(
        body,
        &[("x-nimbus-project", "strict"), ("authorization", &bearer)],
    )
    .await
}

#[tokio::test]
async fn with_mfa_a_new_session_must_pass_the_second_factor() {
    let app = spawn_app().await;
    sign_up(&app, "mona@example.com", "mona-password").await;
    let first = session_secret(&app, "mona@example.com", "mona-password").await;
    let added = app
        .as_session(
            &first,
            "mutation { createMfaAuthenticator { secret uri } }",
            json!({}),
        )
        .await
        .ok();
    let secret = added["createMfaAuthenticator"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        added["createMfaAuthenticator"]["uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/")
    );
    let early = app
        .as_session(
            &first,
            "mutation { updateMfa(input: {enabled: true}) { mfa } }",
            json!({}),
        )
        .await;
    assert_eq!(
        early.code(),
        "OPERATION_NOT_ALLOWED",
        "MFA needs a confirmed authenticator"
    );
    let wrong = app
        .as_session(
            &first,
            "mutation { verifyMfaAuthenticator(input: {code: \"000000x\"}) }",
            json!({}),
        )
        .await;
    assert_eq!(wrong.code(), "INVALID_MFA_CODE");
    let code = totp_now(&secret);
    app.as_session(
        &first,
        "mutation($c: String!) { verifyMfaAuthenticator(input: {code: $c}) }",
        json!({"c": code}),
    )
    .await
    .ok();
    let replay = app
        .as_session(
            &first,
            "mutation($c: String!) { deleteMfaAuthenticator(input: {code: $c}) }",
            json!({"c": code}),
        )
        .await;
    assert_eq!(replay.code(), "INVALID_MFA_CODE", "a code works once");
    let codes = app
        .as_session(&first, "mutation { createMfaRecoveryCodes }", json!({}))
        .await
        .ok();
    let recovery: Vec<String> =
        serde_json::from_value(codes["createMfaRecoveryCodes"].clone()).unwrap();
    assert_eq!(recovery.len(), 10);
    let on = app
        .as_session(
            &first,
            "mutation { updateMfa(input: {enabled: true}) { mfa } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(on["updateMfa"]["mfa"], true);
    // The session that turned MFA on keeps working.
    app.as_session(&first, "{ account { id } }", json!({}))
        .await
        .ok();

    // A new sign-in owes the second factor: everything else answers MFA_REQUIRED.
    let second = session_secret(&app, "mona@example.com", "mona-password").await;
    let blocked = app
        .as_session(&second, "{ account { id } }", json!({}))
        .await;
    assert_eq!(blocked.code(), "MFA_REQUIRED");
    let factors = app
        .as_session(
            &second,
            "{ accountMfaFactors { totp recoveryCode } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        factors["accountMfaFactors"],
        json!({"totp": true, "recoveryCode": true})
    );
    let challenge = "mutation($f: MfaFactor!, $c: String!) { updateMfaChallenge(input: {factor: $f, code: $c}) }";
    let bad = app
        .as_session(
            &second,
            challenge,
            json!({"f": "RECOVERY_CODE", "c": "not-a-code"}),
        )
        .await;
    assert_eq!(bad.code(), "INVALID_MFA_CODE");
    app.as_session(
        &second,
        challenge,
        json!({"f": "RECOVERY_CODE", "c": recovery[0]}),
    )
    .await
    .ok();
    app.as_session(&second, "{ account { id } }", json!({}))
        .await
        .ok();

    // A used recovery code does not work again.
    let third = session_secret(&app, "mona@example.com", "mona-password").await;
    let reused = app
        .as_session(
            &third,
            challenge,
            json!({"f": "RECOVERY_CODE", "c": recovery[0]}),
        )
        .await;
    assert_eq!(reused.code(), "INVALID_MFA_CODE");

    // A server can turn MFA off for a user who lost their factors.
    let key = app.create_key("default", &["users.write"]).await;
    let user_id = app
        .as_session(&first, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .clone();
    app.as_key(
        &key,
        "default",
        "mutation($u: ID!) { updateUser(input: {id: $u, mfa: false}) { mfa } }",
        json!({"u": user_id}),
    )
    .await
    .ok();
    app.as_session(&third, "{ account { id } }", json!({}))
        .await
        .ok();
    app.shutdown().await;
}

#[tokio::test]
async fn the_activity_log_records_sign_ins_changes_and_sign_outs() {
    let app = spawn_app().await;
    sign_up(&app, "otto@example.com", "otto-password").await;
    let secret = session_secret(&app, "otto@example.com", "otto-password").await;
    app.as_session(
        &secret,
        "mutation { updateName(input: {name: \"Otto\"}) { name } }",
        json!({}),
    )
    .await
    .ok();
    let logs = app
        .as_session(
            &secret,
            "{ accountLogs { totalCount nodes { event ip } } }",
            json!({}),
        )
        .await
        .ok();
    let events: Vec<&str> = logs["accountLogs"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        ["user.create", "session.create.email", "user.update.name"]
    );
    assert_eq!(logs["accountLogs"]["nodes"][1]["ip"], "127.0.0.1");
    let newest = app
        .as_session(
            &secret,
            "{ accountLogs(last: 1) { nodes { event } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        newest["accountLogs"]["nodes"][0]["event"],
        "user.update.name"
    );

    let key = app
        .create_key("default", &["users.read", "teams.write"])
        .await;
    let user_id = app
        .as_session(&secret, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .clone();
    app.as_session(
        &secret,
        "mutation { deleteSession(input: {id: \"current\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    let server_view = app
        .as_key(
            &key,
            "default",
            "query($u: ID!) { userLogs(userId: $u, last: 1) { totalCount nodes { event } } }",
            json!({"u": user_id}),
        )
        .await
        .ok();
    assert_eq!(
        server_view["userLogs"]["nodes"][0]["event"],
        "session.delete"
    );
    assert_eq!(server_view["userLogs"]["totalCount"], 4);

    app.as_key(
        &key,
        "default",
        "mutation { createTeam(input: {id: \"t1\", name: \"T\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.as_key(&key, "default", "mutation($u: ID!) { createMembership(input: {teamId: \"t1\", userId: $u, roles: [\"member\"]}) { id } }", json!({"u": user_id}))
        .await
        .ok();
    let memberships = app
        .as_key(
            &key,
            "default",
            "query($u: ID!) { userMemberships(userId: $u) { teamId roles confirmed } }",
            json!({"u": user_id}),
        )
        .await
        .ok();
    assert_eq!(
        memberships["userMemberships"],
        json!([{"teamId": "t1", "roles": ["member"], "confirmed": true}])
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_signed_in_caller_cannot_sign_in_again() {
    let app = spawn_app().await;
    sign_up(&app, "fay@example.com", "fay-password").await;
    let secret = session_secret(&app, "fay@example.com", "fay-password").await;
    let refused = app
        .as_session(
            &secret,
            "mutation { createAnonymousSession { secret } }",
            json!({}),
        )
        .await;
    assert_eq!(refused.code(), "SESSION_ALREADY_EXISTS");
    // Every way of signing in, the right password included: a new session's
    // cookie would strand the one the caller holds.
    let again = app
        .as_session(
            &secret,
            "mutation { createEmailPasswordSession(input: {email: \"fay@example.com\", password: \"fay-password\"}) { secret } }",
            json!({}),
        )
        .await;
    assert_eq!(again.code(), "SESSION_ALREADY_EXISTS");
    let by_token = app
        .as_session(
            &secret,
            "mutation { createSession(input: {email: \"fay@example.com\", secret: \"123456\"}) { secret } }",
            json!({}),
        )
        .await;
    assert_eq!(by_token.code(), "SESSION_ALREADY_EXISTS");
    let sessions = app
        .as_session(&secret, "{ accountSessions { id } }", json!({}))
        .await
        .ok();
    assert_eq!(
        sessions["accountSessions"].as_array().map(Vec::len),
        Some(1),
        "no session was opened beside the caller's"
    );
    let users = app.admin("{ users { totalCount } }", json!({})).await.ok();
    assert_eq!(
        users["users"]["totalCount"], 1,
        "no anonymous user was made"
    );
    // The session it was refused to still works.
    let account = app
        .as_session(&secret, "{ account { email } }", json!({}))
        .await
        .ok();
    assert_eq!(account["account"]["email"], "fay@example.com");
    app.shutdown().await;
}

/// A JWT acts as its user for a backend or a function, but does not sign them out
/// or unlink how they sign in: those take the session's own secret.
#[tokio::test]
async fn a_jwt_signs_no_session_out() {
    let app = spawn_app().await;
    sign_up(&app, "gus@example.com", "gus-password").await;
    let secret = session_secret(&app, "gus@example.com", "gus-password").await;
    let other = session_secret(&app, "gus@example.com", "gus-password").await;
    let jwt = app
        .as_session(&secret, "mutation { createJWT { jwt } }", json!({}))
        .await
        .ok()["createJWT"]["jwt"]
        .as_str()
        .unwrap()
        .to_string();
    for query in [
        "mutation { deleteSessions { deletedCount } }",
        "mutation { deleteSession(input: {id: \"current\"}) { deletedId } }",
        "mutation { deleteIdentity(input: {id: \"any-identity\"}) { deletedId } }",
    ] {
        let refused = app.as_session(&jwt, query, json!({})).await;
        assert_eq!(
            refused.code(),
            "PERMISSION_DENIED",
            "{query}: {:#}",
            refused.body
        );
    }
    for session in [&secret, &other] {
        let account = app
            .as_session(session, "{ account { email } }", json!({}))
            .await
            .ok();
        assert_eq!(account["account"]["email"], "gus@example.com");
    }
    // The session's own secret signs out.
    let out = app
        .as_session(
            &secret,
            "mutation { deleteSessions { deletedCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(out["deleteSessions"]["deletedCount"], 2);
    app.shutdown().await;
}

#[tokio::test]
async fn a_session_is_extended_by_its_own_secret_only() {
    let app = spawn_app().await;
    sign_up(&app, "gus@example.com", "gus-password").await;
    let secret = session_secret(&app, "gus@example.com", "gus-password").await;
    let id = app
        .as_session(
            &secret,
            "{ accountSession(id: \"current\") { id } }",
            json!({}),
        )
        .await
        .ok()["accountSession"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Near its end: a minute left.
    let pool = app.server.as_ref().unwrap().state().db.pool().clone();
    let soon = chrono::Utc::now().timestamp_millis() + 60_000;
    sqlx::query("UPDATE sessions SET expires_at = ? WHERE id = ?")
        .bind(soon)
        .bind(&id)
        .execute(&pool)
        .await
        .unwrap();
    app.server.as_ref().unwrap().state().sessions.clear();
    let update = "mutation($id: ID!) { updateSession(input: {id: $id}) { id expiresAt current } }";
    // A JWT does not renew the session it rides on.
    let jwt = app
        .as_session(&secret, "mutation { createJWT { jwt } }", json!({}))
        .await
        .ok()["createJWT"]["jwt"]
        .as_str()
        .unwrap()
        .to_string();
    let refused = app.as_session(&jwt, update, json!({"id": "current"})).await;
    assert_eq!(refused.code(), "PERMISSION_DENIED", "{:#}", refused.body);
    // Another user's session is not found.
    sign_up(&app, "hal@example.com", "hal-password").await;
    let hal = session_secret(&app, "hal@example.com", "hal-password").await;
    let theirs = app.as_session(&hal, update, json!({"id": id})).await;
    assert_eq!(theirs.code(), "SESSION_NOT_FOUND", "{:#}", theirs.body);
    // Its own secret extends it to the project's session length.
    let extended = app
        .as_session(&secret, update, json!({"id": "current"}))
        .await
        .ok();
    assert_eq!(extended["updateSession"]["id"], id.as_str());
    assert_eq!(extended["updateSession"]["current"], true);
    let expires = chrono::DateTime::parse_from_rfc3339(
        extended["updateSession"]["expiresAt"].as_str().unwrap(),
    )
    .unwrap()
    .timestamp_millis();
    assert!(expires > soon + 24 * 3_600_000, "{extended:#}");
    let read = app
        .as_session(
            &secret,
            "{ accountSession(id: \"current\") { expiresAt } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        read["accountSession"]["expiresAt"],
        extended["updateSession"]["expiresAt"]
    );
    // Ten extensions an hour per user, as Appwrite allows: each is a write and
    // drops the user's cached sessions everywhere.
    for _ in 1..10 {
        app.as_session(&secret, update, json!({"id": "current"}))
            .await
            .ok();
    }
    let limited = app
        .as_session(&secret, update, json!({"id": "current"}))
        .await;
    assert_eq!(limited.code(), "RATE_LIMITED", "{:#}", limited.body);
    // Another user's own limit is untouched.
    let theirs = app.as_session(&hal, update, json!({"id": "current"})).await;
    assert_eq!(theirs.ok()["updateSession"]["current"], true);
    app.shutdown().await;
}
