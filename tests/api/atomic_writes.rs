//! A change that writes several rows writes them all or none: a sign-up with its
//! session, an emailed sign-in's first use with its user, a link or code with
//! the session or change it allows, an accepted invitation with its user and
//! session, a recovery code with the session it lets past the second factor, a
//! console administrator's code with the console session it opens, a first
//! provider sign-in's user and identity with its session.
//!
//! A crash between two writes is staged by a trigger of the database itself that
//! refuses every insert into one table (SQLite's `RAISE`, MariaDB's `SIGNAL`): the
//! request fails at that write, as a crash would stop it there, and the test then
//! checks that nothing of the change is left and that the client can try again.

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, WAIT, enrol_totp, spawn_app, spawn_with, test_config};
use crate::smtp_server::TestSmtp;

const ANONYMOUS: &str = "mutation { createAnonymousSession { secret session { userId } } }";
const USERS: &str = "{ users { totalCount nodes { id email emailVerified } } }";
const CREATE_SESSION: &str = "mutation($u: ID!, $s: String!) { createSession(input: {userId: $u, secret: $s}) { secret session { userId provider } } }";

/// Refuses every insert into `table` until [`heal`]; the refusal's text must not
/// reach the client.
async fn break_inserts(app: &TestApp, table: &str) {
    let db = &app.server.as_ref().unwrap().state().db;
    let sql = match db.dialect() {
        nimbus::db::Dialect::Sqlite => format!(
            "CREATE TRIGGER staged_fault_{table} BEFORE INSERT ON {table} \
             BEGIN SELECT RAISE(ABORT, 'staged fault'); END"
        ),
        nimbus::db::Dialect::MySql => format!(
            "CREATE TRIGGER staged_fault_{table} BEFORE INSERT ON {table} FOR EACH ROW \
             SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'staged fault'"
        ),
    };
    sqlx::raw_sql(&sql).execute(db.pool()).await.unwrap();
}

async fn heal(app: &TestApp, table: &str) {
    let db = &app.server.as_ref().unwrap().state().db;
    sqlx::raw_sql(&format!("DROP TRIGGER staged_fault_{table}"))
        .execute(db.pool())
        .await
        .unwrap();
}

/// The failure a staged fault makes: `INTERNAL`, naming nothing of the database.
fn assert_failed_inside(answer: &Answer) {
    assert_eq!(answer.code(), "INTERNAL", "{:#}", answer.body);
    let text = answer.body.to_string();
    assert!(
        !text.contains("staged") && !text.contains("INSERT"),
        "{text}"
    );
}

async fn users(app: &TestApp) -> Value {
    app.admin(USERS, json!({})).await.ok()["users"].clone()
}

async fn app_with_mail() -> (TestApp, TestSmtp) {
    let smtp = TestSmtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.smtp_url = Some(smtp.url.clone());
    (spawn_with(config, dir).await, smtp)
}

async fn guest(app: &TestApp, query: &str, variables: Value) -> Answer {
    app.post(json!({"query": query, "variables": variables}), &[])
        .await
}

#[tokio::test]
async fn an_anonymous_sign_in_that_fails_at_its_session_leaves_no_user() {
    let app = spawn_app().await;
    let before = users(&app).await;
    break_inserts(&app, "sessions").await;
    let failed = guest(&app, ANONYMOUS, json!({})).await;
    assert_failed_inside(&failed);
    assert_eq!(
        users(&app).await,
        before,
        "no user that nobody holds a session of"
    );

    heal(&app, "sessions").await;
    let signed = guest(&app, ANONYMOUS, json!({})).await.ok();
    let user_id = signed["createAnonymousSession"]["session"]["userId"]
        .as_str()
        .unwrap()
        .to_string();
    let secret = signed["createAnonymousSession"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let after = users(&app).await;
    assert_eq!(after["totalCount"], 1, "{after}");
    assert_eq!(after["nodes"][0]["id"], user_id.as_str());
    let me = app
        .as_session(&secret, "{ account { id } }", json!({}))
        .await
        .ok();
    assert_eq!(me["account"]["id"], user_id.as_str());
    app.shutdown().await;
}

#[tokio::test]
async fn an_emailed_sign_in_that_fails_at_its_token_creates_no_user() {
    let (app, smtp) = app_with_mail().await;
    let magic = "mutation { createMagicUrlToken(input: {email: \"ines@example.com\", url: \"http://localhost/magic\"}) { expiresAt } }";
    let code = "mutation { createEmailToken(input: {email: \"ines@example.com\"}) { expiresAt } }";
    break_inserts(&app, "tokens").await;
    for flow in [magic, code] {
        let failed = guest(&app, flow, json!({})).await;
        assert_failed_inside(&failed);
        assert_eq!(
            users(&app).await["totalCount"],
            0,
            "no account for an address that was sent nothing"
        );
    }
    heal(&app, "tokens").await;

    guest(&app, magic, json!({})).await.ok();
    let mail = smtp.wait_for_message_to("ines@example.com", WAIT).await;
    let user_id = mail.link_param("userId").unwrap();
    let listed = users(&app).await;
    assert_eq!(
        listed["nodes"],
        json!([{"id": user_id, "email": "ines@example.com", "emailVerified": false}])
    );
    let signed = guest(
        &app,
        CREATE_SESSION,
        json!({"u": user_id, "s": mail.link_param("secret").unwrap()}),
    )
    .await
    .ok();
    assert_eq!(
        signed["createSession"]["session"]["userId"],
        user_id.as_str()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_sign_in_link_that_fails_at_its_session_is_not_used_up() {
    let (app, smtp) = app_with_mail().await;
    guest(
        &app,
        "mutation { createMagicUrlToken(input: {email: \"jon@example.com\", url: \"http://localhost/magic\"}) { expiresAt } }",
        json!({}),
    )
    .await
    .ok();
    let mail = smtp.wait_for_message_to("jon@example.com", WAIT).await;
    let (user_id, secret) = (
        mail.link_param("userId").unwrap(),
        mail.link_param("secret").unwrap(),
    );
    break_inserts(&app, "sessions").await;
    let failed = guest(&app, CREATE_SESSION, json!({"u": user_id, "s": secret})).await;
    assert_failed_inside(&failed);
    assert_eq!(
        users(&app).await["nodes"][0]["emailVerified"],
        false,
        "the claim went with the session"
    );

    heal(&app, "sessions").await;
    let signed = guest(&app, CREATE_SESSION, json!({"u": user_id, "s": secret}))
        .await
        .ok();
    assert_eq!(
        signed["createSession"]["session"],
        json!({"userId": user_id, "provider": "magic-url"})
    );
    assert_eq!(users(&app).await["nodes"][0]["emailVerified"], true);
    let replay = guest(&app, CREATE_SESSION, json!({"u": user_id, "s": secret})).await;
    assert_eq!(replay.code(), "INVALID_TOKEN", "a link still works once");
    app.shutdown().await;
}

#[tokio::test]
async fn a_refused_new_password_leaves_the_recovery_link_usable_once() {
    let (app, smtp) = app_with_mail().await;
    guest(
        &app,
        "mutation { createAccount(input: {email: \"kim@example.com\", password: \"first-password-kim\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    guest(
        &app,
        "mutation { createRecovery(input: {email: \"kim@example.com\", url: \"http://localhost/reset\"}) }",
        json!({}),
    )
    .await
    .ok();
    let mail = smtp.wait_for_message_to("kim@example.com", WAIT).await;
    let (user_id, secret) = (
        mail.link_param("userId").unwrap(),
        mail.link_param("secret").unwrap(),
    );
    let reset = "mutation($u: ID!, $s: String!, $p: String!) { updateRecovery(input: {userId: $u, secret: $s, password: $p}) }";
    let weak = guest(
        &app,
        reset,
        json!({"u": user_id, "s": secret, "p": "short"}),
    )
    .await;
    assert_eq!(weak.code(), "PASSWORD_TOO_SHORT");
    let done = guest(
        &app,
        reset,
        json!({"u": user_id, "s": secret, "p": "second-password-kim"}),
    )
    .await
    .ok();
    assert_eq!(done["updateRecovery"], true);
    let replay = guest(
        &app,
        reset,
        json!({"u": user_id, "s": secret, "p": "third-password-kim"}),
    )
    .await;
    assert_eq!(replay.code(), "INVALID_TOKEN");
    guest(
        &app,
        "mutation { createEmailPasswordSession(input: {email: \"kim@example.com\", password: \"second-password-kim\"}) { secret } }",
        json!({}),
    )
    .await
    .ok();
    app.shutdown().await;
}

#[tokio::test]
async fn an_invitation_accepted_while_sessions_fail_creates_and_confirms_nothing() {
    let (app, smtp) = app_with_mail().await;
    let owner = app.signed_in("lena@example.com").await;
    app.as_session(
        &owner,
        "mutation { createTeam(input: {id: \"crew\", name: \"Crew\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let invited = app
        .as_session(
            &owner,
            "mutation { createMembership(input: {teamId: \"crew\", email: \"max@example.com\", roles: [\"deck\"], url: \"http://localhost/join\"}) { id confirmed } }",
            json!({}),
        )
        .await
        .ok()["createMembership"]
        .clone();
    let mail = smtp.wait_for_message_to("max@example.com", WAIT).await;
    let secret = mail.link_param("secret").unwrap();
    let before = users(&app).await;
    let accept = "mutation($m: ID!, $s: String!) { updateMembershipStatus(input: {teamId: \"crew\", membershipId: $m, secret: $s}) { membership { confirmed } session { secret session { userId } } } }";

    break_inserts(&app, "sessions").await;
    let failed = guest(&app, accept, json!({"m": invited["id"], "s": secret})).await;
    assert_failed_inside(&failed);
    assert_eq!(users(&app).await, before, "no user without its session");
    let memberships = app
        .as_session(
            &owner,
            "{ memberships(teamId: \"crew\") { id confirmed } }",
            json!({}),
        )
        .await
        .ok();
    let pending: Vec<&Value> = memberships["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["id"] == invited["id"])
        .collect();
    assert_eq!(pending, [&json!({"id": invited["id"], "confirmed": false})]);

    heal(&app, "sessions").await;
    let accepted = guest(&app, accept, json!({"m": invited["id"], "s": secret}))
        .await
        .ok()["updateMembershipStatus"]
        .clone();
    assert_eq!(accepted["membership"]["confirmed"], true);
    let session = accepted["session"]["secret"].as_str().unwrap();
    let me = app
        .as_session(session, "{ account { email emailVerified } }", json!({}))
        .await
        .ok();
    assert_eq!(
        me["account"],
        json!({"email": "max@example.com", "emailVerified": true})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_recovery_code_is_spent_only_with_the_session_it_lets_in() {
    let app = spawn_app().await;
    let (email, password) = ("mia@example.com", "Mia-Harbor-Lantern-7");
    let sign_in = "mutation($e: String!, $p: String!) { createEmailPasswordSession(input: {email: $e, password: $p}) { secret } }";
    guest(
        &app,
        "mutation($e: String!, $p: String!) { createAccount(input: {email: $e, password: $p}) { id } }",
        json!({"e": email, "p": password}),
    )
    .await
    .ok();
    let new_session = || async {
        guest(&app, sign_in, json!({"e": email, "p": password}))
            .await
            .ok()["createEmailPasswordSession"]["secret"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = new_session().await;
    enrol_totp(&app, &first).await;
    let codes = app
        .as_session(&first, "mutation { createMfaRecoveryCodes }", json!({}))
        .await
        .ok()["createMfaRecoveryCodes"]
        .clone();
    let code = codes[0].as_str().unwrap().to_string();
    app.as_session(
        &first,
        "mutation { updateMfa(input: {enabled: true}) { mfa } }",
        json!({}),
    )
    .await
    .ok();
    let locked = new_session().await;
    let challenge =
        "mutation($c: String!) { updateMfaChallenge(input: {factor: RECOVERY_CODE, code: $c}) }";

    // The session is marked as past the second factor with its event logged:
    // refusing the log's insert stops the change after the code was checked.
    break_inserts(&app, "event_log").await;
    let failed = app.as_session(&locked, challenge, json!({"c": code})).await;
    assert_failed_inside(&failed);
    heal(&app, "event_log").await;
    assert_eq!(
        app.as_session(&locked, "{ account { id } }", json!({}))
            .await
            .code(),
        "MFA_REQUIRED"
    );

    let passed = app
        .as_session(&locked, challenge, json!({"c": code}))
        .await
        .ok();
    assert_eq!(passed["updateMfaChallenge"], true);
    app.as_session(&locked, "{ account { id } }", json!({}))
        .await
        .ok();
    let other = new_session().await;
    let spent = app.as_session(&other, challenge, json!({"c": code})).await;
    assert_eq!(spent.code(), "INVALID_MFA_CODE", "a code still works once");
    app.shutdown().await;
}

#[tokio::test]
async fn a_console_code_is_spent_only_with_the_session_it_opens() {
    use crate::console_auth::{
        PASSWORD, console, create_admin, now_unix, sign_in, signed_in, totp_code,
    };
    let app = spawn_app().await;
    create_admin(&app, "root@example.com").await;
    let (cookie, csrf) = signed_in(&app, "root@example.com").await;
    let with_token = [
        ("cookie", cookie.as_str()),
        ("x-nimbus-csrf", csrf.as_str()),
        ("content-type", "application/json"),
    ];
    let enrolled = console(&app, reqwest::Method::POST, "totp", &with_token, None).await;
    let secret = enrolled.body["secret"].as_str().unwrap().to_string();
    let verified = console(
        &app,
        reqwest::Method::POST,
        "totp/verify",
        &with_token,
        Some(
            json!({"otp": totp_code(&secret, now_unix())})
                .to_string()
                .into(),
        ),
    )
    .await;
    assert_eq!(verified.status, 200, "{}", verified.body);

    let code = totp_code(&secret, now_unix() + 30);
    break_inserts(&app, "console_sessions").await;
    let failed = sign_in(&app, "root@example.com", PASSWORD, Some(&code)).await;
    assert_eq!(failed.code(), "INTERNAL", "{}", failed.body);
    assert!(
        !failed.body.to_string().contains("staged"),
        "{}",
        failed.body
    );
    heal(&app, "console_sessions").await;

    let accepted = sign_in(&app, "root@example.com", PASSWORD, Some(&code)).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    let replayed = sign_in(&app, "root@example.com", PASSWORD, Some(&code)).await;
    assert_eq!(
        replayed.code(),
        "INVALID_MFA_CODE",
        "a code still works once"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_first_provider_sign_in_that_fails_at_its_session_links_nobody() {
    use crate::oauth2::{FAILURE, SUCCESS, ann, configure, sign_in, spawn_oauth_app};
    let app = spawn_oauth_app().await;
    let provider = crate::oauth_provider::TestProvider::start().await;
    configure(&app, "acme", json!({"issuer": provider.url})).await;

    provider.sign_in_as(ann());
    break_inserts(&app, "sessions").await;
    let failed = sign_in(&app, "acme", "").await;
    assert!(failed.location.starts_with(FAILURE), "{failed:?}");
    assert_eq!(failed.param("error").as_deref(), Some("INTERNAL"));
    assert_eq!(
        users(&app).await["totalCount"],
        0,
        "no user and identity without the session"
    );

    heal(&app, "sessions").await;
    provider.sign_in_as(ann());
    let landing = sign_in(&app, "acme", "").await;
    assert_eq!(landing.location, SUCCESS, "{landing:?}");
    let me = app
        .as_session(
            &landing.session_secret(),
            "{ account { email } accountIdentities { providerUid } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        me,
        json!({"account": {"email": "ann@example.com"}, "accountIdentities": [{"providerUid": "ann-123"}]})
    );
    app.shutdown().await;
}
