//! Nobody reaches an account they do not own: password changes sign the other
//! devices out, a JWT cannot renew itself or touch credentials, signing in through
//! the mailbox or a provider claims an account someone else registered first,
//! OAuth2 sign-ins finish only in the browser that started them, guessing a user's
//! secrets does not lock the user out, and sign-in timing and answers reveal no
//! accounts.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, WAIT, spawn_app, spawn_with, test_config, totp_now};
use crate::oauth_provider::{Account, TestProvider};
use crate::oauth2::{
    FAILURE, SUCCESS, browser, configure, cookie_pair, get, get_with, sign_in, spawn_oauth_app,
};
use crate::smtp_server::TestSmtp;

const PASSWORD: &str = "first-password-1";

async fn app_with_mail() -> (TestApp, TestSmtp) {
    let smtp = TestSmtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.smtp_url = Some(smtp.url.clone());
    (spawn_with(config, dir).await, smtp)
}

/// A query as a guest, or with `bearer` (a session secret or a JWT).
async fn run(app: &TestApp, bearer: Option<&str>, query: &str, variables: Value) -> Answer {
    match bearer {
        Some(bearer) => app.as_session(bearer, query, variables).await,
        None => {
            app.post(json!({"query": query, "variables": variables}), &[])
                .await
        }
    }
}

/// A query from another loopback address, as another client would send it.
async fn run_from(app: &TestApp, address: [u8; 4], query: &str, variables: Value) -> Answer {
    run_from_as(app, address, None, query, variables).await
}

async fn run_from_as(
    app: &TestApp,
    address: [u8; 4],
    bearer: Option<&str>,
    query: &str,
    variables: Value,
) -> Answer {
    let client = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(address))
        .build()
        .unwrap();
    let mut request = client
        .post(format!("{}/v1/graphql", app.url))
        .json(&json!({"query": query, "variables": variables}));
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap();
    Answer { status, body }
}

async fn sign_up(app: &TestApp, email: &str) -> String {
    run(
        app,
        None,
        "mutation($e: String!, $p: String!) { createAccount(input: {email: $e, password: $p}) { id } }",
        json!({"e": email, "p": PASSWORD}),
    )
    .await
    .ok()["createAccount"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

async fn password_session(app: &TestApp, email: &str, password: &str) -> Answer {
    run(
        app,
        None,
        "mutation($e: String!, $p: String!) { createEmailPasswordSession(input: {email: $e, password: $p}) { secret } }",
        json!({"e": email, "p": password}),
    )
    .await
}

async fn session(app: &TestApp, email: &str) -> String {
    password_session(app, email, PASSWORD).await.ok()["createEmailPasswordSession"]["secret"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The code of `{ account { id } }` with this secret: `<none>` when it works.
async fn account_code(app: &TestApp, secret: &str) -> String {
    run(app, Some(secret), "{ account { id } }", json!({}))
        .await
        .code()
        .to_string()
}

/// Adds an authenticator and confirms it with a code of its own.
async fn add_authenticator(app: &TestApp, secret: &str) {
    let seed = text_at(
        app,
        secret,
        "mutation { createMfaAuthenticator { secret } }",
        "/createMfaAuthenticator/secret",
    )
    .await;
    run(
        app,
        Some(secret),
        "mutation($c: String!) { verifyMfaAuthenticator(input: {code: $c}) }",
        json!({"c": totp_now(&seed)}),
    )
    .await
    .ok();
}

/// Adds an authenticator, turns MFA on and returns the recovery codes.
async fn turn_mfa_on(app: &TestApp, secret: &str) -> Vec<String> {
    add_authenticator(app, secret).await;
    let codes = run(
        app,
        Some(secret),
        "mutation { createMfaRecoveryCodes }",
        json!({}),
    )
    .await
    .ok();
    run(
        app,
        Some(secret),
        "mutation { updateMfa(input: {enabled: true}) { mfa } }",
        json!({}),
    )
    .await
    .ok();
    serde_json::from_value(codes["createMfaRecoveryCodes"].clone()).unwrap()
}

/// The text at `pointer` of what `query` answers with `secret`.
async fn text_at(app: &TestApp, secret: &str, query: &str, pointer: &str) -> String {
    run(app, Some(secret), query, json!({}))
        .await
        .ok()
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no text at {pointer}"))
        .to_string()
}

async fn jwt_of(app: &TestApp, secret: &str) -> String {
    text_at(
        app,
        secret,
        "mutation { createJWT { jwt } }",
        "/createJWT/jwt",
    )
    .await
}

#[tokio::test]
async fn changing_the_password_ends_the_other_sessions_but_not_this_one() {
    let app = spawn_app().await;
    sign_up(&app, "ada@example.com").await;
    let here = session(&app, "ada@example.com").await;
    let elsewhere = session(&app, "ada@example.com").await;
    run(
        &app,
        Some(&here),
        "mutation($p: String!) { updatePassword(input: {password: \"second-password-2\", oldPassword: $p}) { id } }",
        json!({"p": PASSWORD}),
    )
    .await
    .ok();
    assert_eq!(
        account_code(&app, &here).await,
        "<none>",
        "this device stays"
    );
    assert_eq!(account_code(&app, &elsewhere).await, "INVALID_SESSION");
    let sessions = run(
        &app,
        Some(&here),
        "{ accountSessions { current } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(sessions["accountSessions"], json!([{"current": true}]));
    app.shutdown().await;
}

#[tokio::test]
async fn a_server_setting_a_password_ends_every_session_of_the_user() {
    let app = spawn_app().await;
    let id = sign_up(&app, "bob@example.com").await;
    let one = session(&app, "bob@example.com").await;
    let two = session(&app, "bob@example.com").await;
    // Other changes leave the sessions alone.
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, name: \"Bob\"}) { id } }",
        json!({"id": id}),
    )
    .await
    .ok();
    assert_eq!(account_code(&app, &one).await, "<none>");
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, password: \"set-by-server-3\"}) { id } }",
        json!({"id": id}),
    )
    .await
    .ok();
    assert_eq!(account_code(&app, &one).await, "INVALID_SESSION");
    assert_eq!(account_code(&app, &two).await, "INVALID_SESSION");
    let left = app
        .admin(
            "query($id: ID!) { userSessions(userId: $id) { id } }",
            json!({"id": id}),
        )
        .await
        .ok();
    assert_eq!(left["userSessions"], json!([]));
    let kept = password_session(&app, "bob@example.com", "set-by-server-3")
        .await
        .ok()["createEmailPasswordSession"]["secret"]
        .as_str()
        .unwrap()
        .to_string();

    // An empty password takes it away (Appwrite's): no password signs in, and
    // the sessions end as for a new one. A user cannot clear their own.
    let own = run(
        &app,
        Some(&kept),
        "mutation { updatePassword(input: {password: \"\", oldPassword: \"set-by-server-3\"}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(own.code(), "PASSWORD_TOO_SHORT", "{:#}", own.body);
    let cleared = app
        .admin(
            "mutation($id: ID!) { updateUser(input: {id: $id, password: \"\"}) { passwordUpdatedAt } }",
            json!({"id": id}),
        )
        .await
        .ok();
    assert_eq!(cleared["updateUser"]["passwordUpdatedAt"], json!(null));
    assert_eq!(account_code(&app, &kept).await, "INVALID_SESSION");
    for password in ["set-by-server-3", ""] {
        assert_eq!(
            password_session(&app, "bob@example.com", password)
                .await
                .code(),
            "INVALID_CREDENTIALS",
            "{password:?}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_jwt_cannot_mint_a_jwt_open_sessions_manage_mfa_or_set_a_first_password() {
    let app = spawn_app().await;
    sign_up(&app, "cy@example.com").await;
    let secret = session(&app, "cy@example.com").await;
    let jwt = jwt_of(&app, &secret).await;
    assert_eq!(
        account_code(&app, &jwt).await,
        "<none>",
        "a JWT acts as the user"
    );
    for refused in [
        "mutation { createJWT { jwt } }",
        "mutation { createAnonymousSession { secret } }",
        "mutation { createEmailPasswordSession(input: {email: \"cy@example.com\", password: \"first-password-1\"}) { secret } }",
        "mutation { createMfaAuthenticator { secret } }",
        "mutation { createMfaRecoveryCodes }",
        "mutation { updateMfa(input: {enabled: false}) { id } }",
    ] {
        let answer = run(&app, Some(&jwt), refused, json!({})).await;
        assert_eq!(
            answer.code(),
            "PERMISSION_DENIED",
            "{refused}: {:?}",
            answer.body
        );
    }
    // With the password, a JWT may change it (the password proves the change).
    run(
        &app,
        Some(&jwt),
        "mutation($p: String!) { updatePassword(input: {password: \"changed-by-jwt-4\", oldPassword: $p}) { id } }",
        json!({"p": PASSWORD}),
    )
    .await
    .ok();

    // An account without a password: only the session itself may give it one.
    let anonymous = run(
        &app,
        None,
        "mutation { createAnonymousSession { secret } }",
        json!({}),
    )
    .await
    .ok()["createAnonymousSession"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let anonymous_jwt = jwt_of(&app, &anonymous).await;
    let set_password =
        "mutation { updatePassword(input: {password: \"chosen-password-5\"}) { id } }";
    assert_eq!(
        run(&app, Some(&anonymous_jwt), set_password, json!({}))
            .await
            .code(),
        "PERMISSION_DENIED"
    );
    run(&app, Some(&anonymous), set_password, json!({}))
        .await
        .ok();
    app.shutdown().await;
}

#[tokio::test]
async fn a_magic_link_claims_an_account_someone_registered_with_the_victims_email() {
    let (app, smtp) = app_with_mail().await;
    // The squatter registers the victim's address first, and stays signed in.
    let squatted = sign_up(&app, "vic@example.com").await;
    let squatter = session(&app, "vic@example.com").await;

    let token = run(
        &app,
        None,
        "mutation { createMagicUrlToken(input: {email: \"vic@example.com\", url: \"http://localhost/magic\"}) { userId expiresAt } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        token["createMagicUrlToken"]["userId"],
        Value::Null,
        "guests are not told user ids"
    );
    let mail = smtp.wait_for_message_to("vic@example.com", WAIT).await;
    let user_id = mail.link_param("userId").unwrap();
    assert_eq!(user_id, squatted);
    let signed = run(
        &app,
        None,
        "mutation($u: ID!, $s: String!) { createSession(input: {userId: $u, secret: $s}) { secret } }",
        json!({"u": user_id, "s": mail.link_param("secret").unwrap()}),
    )
    .await
    .ok();
    let victim = signed["createSession"]["secret"].as_str().unwrap();

    assert_eq!(account_code(&app, &squatter).await, "INVALID_SESSION");
    assert_eq!(
        password_session(&app, "vic@example.com", PASSWORD)
            .await
            .code(),
        "INVALID_CREDENTIALS",
        "the squatter's password is gone"
    );
    let me = run(
        &app,
        Some(victim),
        "{ account { id emailVerified } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        me["account"],
        json!({"id": squatted, "emailVerified": true})
    );

    // An account whose email is verified keeps its password and sessions.
    let again = run(
        &app,
        None,
        "mutation { createMagicUrlToken(input: {email: \"vic@example.com\", url: \"http://localhost/magic\"}) { expiresAt } }",
        json!({}),
    )
    .await;
    again.ok();
    run(
        &app,
        Some(victim),
        "mutation { updatePassword(input: {password: \"victims-own-6\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let mail = smtp.wait_for_message_to("vic@example.com", WAIT).await;
    run(
        &app,
        None,
        "mutation($u: ID!, $s: String!) { createSession(input: {userId: $u, secret: $s}) { secret } }",
        json!({"u": user_id, "s": mail.link_param("secret").unwrap()}),
    )
    .await
    .ok();
    assert_eq!(account_code(&app, victim).await, "<none>");
    password_session(&app, "vic@example.com", "victims-own-6")
        .await
        .ok();
    app.shutdown().await;
}

#[tokio::test]
async fn an_emailed_code_is_finished_with_the_email_and_claims_an_unverified_account() {
    let (app, smtp) = app_with_mail().await;
    sign_up(&app, "val@example.com").await;
    let squatter = session(&app, "val@example.com").await;
    // The squatter's own second factor would lock the owner out: it goes too.
    turn_mfa_on(&app, &squatter).await;
    let token = run(
        &app,
        None,
        "mutation { createEmailToken(input: {email: \"val@example.com\"}) { userId } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(token["createEmailToken"]["userId"], Value::Null);
    let mail = smtp.wait_for_message_to("val@example.com", WAIT).await;
    let code = mail.first_code(6).expect("a 6-digit code");
    let by_email = "mutation($e: String!, $s: String!) { createSession(input: {email: $e, secret: $s}) { secret session { provider } } }";
    let unknown = run(
        &app,
        None,
        by_email,
        json!({"e": "nobody@example.com", "s": code}),
    )
    .await;
    assert_eq!(unknown.code(), "INVALID_TOKEN");
    let signed = run(
        &app,
        None,
        by_email,
        json!({"e": "VAL@example.com", "s": code}),
    )
    .await
    .ok();
    assert_eq!(signed["createSession"]["session"]["provider"], "email-otp");
    let owner = signed["createSession"]["secret"].as_str().unwrap();
    let me = run(
        &app,
        Some(owner),
        "{ account { mfa emailVerified } accountMfaFactors { totp recoveryCode } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        me,
        json!({"account": {"mfa": false, "emailVerified": true}, "accountMfaFactors": {"totp": false, "recoveryCode": false}})
    );
    assert_eq!(account_code(&app, &squatter).await, "INVALID_SESSION");
    assert_eq!(
        password_session(&app, "val@example.com", PASSWORD)
            .await
            .code(),
        "INVALID_CREDENTIALS"
    );
    let both = run(
        &app,
        None,
        "mutation { createSession(input: {userId: \"x\", email: \"val@example.com\", secret: \"123456\"}) { secret } }",
        json!({}),
    )
    .await;
    assert_eq!(both.code(), "BAD_USER_INPUT");
    app.shutdown().await;
}

#[tokio::test]
async fn guessing_a_users_link_from_elsewhere_does_not_lock_the_user_out() {
    let (app, smtp) = app_with_mail().await;
    run(
        &app,
        None,
        "mutation { createMagicUrlToken(input: {email: \"wen@example.com\", url: \"http://localhost/magic\"}) { expiresAt } }",
        json!({}),
    )
    .await
    .ok();
    let mail = smtp.wait_for_message_to("wen@example.com", WAIT).await;
    let user_id = mail.link_param("userId").unwrap();
    let create = "mutation($u: ID!, $s: String!) { createSession(input: {userId: $u, secret: $s}) { secret } }";
    let mut codes = Vec::new();
    for guess in 0..11 {
        let answer = run_from(
            &app,
            [127, 0, 0, 2],
            create,
            json!({"u": user_id, "s": format!("wrong-{guess}")}),
        )
        .await;
        codes.push(answer.code().to_string());
    }
    assert_eq!(codes[..10], vec!["INVALID_TOKEN"; 10]);
    assert_eq!(codes[10], "RATE_LIMITED", "the guesser is stopped");
    let signed = run(
        &app,
        None,
        create,
        json!({"u": user_id, "s": mail.link_param("secret").unwrap()}),
    )
    .await;
    assert!(
        signed.body["data"]["createSession"]["secret"].is_string(),
        "the owner's link still works: {:?}",
        signed.body
    );
    app.shutdown().await;
}

/// The shortest of `rounds` wrong sign-ins for each of `emails`. Each round signs
/// in once as each, in turn, so that a burst of load on the machine slows them
/// alike rather than all the samples of one.
async fn fastest_refusals(app: &TestApp, emails: &[&str], rounds: usize) -> Vec<Duration> {
    let mut fastest = vec![Duration::MAX; emails.len()];
    for _ in 0..rounds {
        for (email, fastest) in emails.iter().zip(&mut fastest) {
            let started = Instant::now();
            let answer = password_session(app, email, "not-the-password-9").await;
            assert_eq!(answer.code(), "INVALID_CREDENTIALS");
            *fastest = (*fastest).min(started.elapsed());
        }
    }
    fastest
}

#[tokio::test]
async fn signing_in_takes_as_long_without_an_account_or_a_password() {
    // Each address is tried more often than the sign-in limit allows in an hour.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.rate_limits = false;
    let app = spawn_with(config, dir).await;
    sign_up(&app, "pw@example.com").await;
    app.admin(
        "mutation { createUser(input: {email: \"nopw@example.com\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    // Warm the password threads and the dummy hash.
    fastest_refusals(&app, &["warm@example.com"], 3).await;
    // A sign-in that skips the hash is many times faster in every measurement;
    // one skewed by the machine's load is not, so a measurement that fails is
    // taken again, up to three times.
    let mut measured = Vec::new();
    for _ in 0..3 {
        let fastest = fastest_refusals(
            &app,
            &["pw@example.com", "nopw@example.com", "none@example.com"],
            5,
        )
        .await;
        let with_password = fastest[0];
        let short: Vec<(&str, Duration)> =
            [("no password", fastest[1]), ("no account", fastest[2])]
                .into_iter()
                .filter(|(_, took)| *took * 3 < with_password)
                .collect();
        if short.is_empty() {
            app.shutdown().await;
            return;
        }
        measured.push((with_password, short));
    }
    panic!("refused faster than with a password (password, then the quicker ones): {measured:?}");
}

#[tokio::test]
async fn a_server_can_clear_a_users_email_and_phone_but_the_user_cannot() {
    let app = spawn_app().await;
    let id = sign_up(&app, "dee@example.com").await;
    let secret = session(&app, "dee@example.com").await;
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, phone: \"+15551234567\", emailVerified: true, phoneVerified: true}) { id } }",
        json!({"id": id}),
    )
    .await
    .ok();
    let own = run(
        &app,
        Some(&secret),
        "mutation($p: String!) { updateEmail(input: {email: \"\", password: $p}) { id } }",
        json!({"p": PASSWORD}),
    )
    .await;
    assert_eq!(own.code(), "INVALID_EMAIL");
    let cleared = app
        .admin(
            "mutation($id: ID!) { updateUser(input: {id: $id, email: \"\", phone: \"\"}) { email emailVerified phone phoneVerified } }",
            json!({"id": id}),
        )
        .await
        .ok();
    assert_eq!(
        cleared["updateUser"],
        json!({"email": null, "emailVerified": false, "phone": null, "phoneVerified": false})
    );
    let stored = app
        .admin(
            "query($id: ID!) { user(id: $id) { email phone } }",
            json!({"id": id}),
        )
        .await
        .ok();
    assert_eq!(stored["user"], json!({"email": null, "phone": null}));
    // The address is free again.
    sign_up(&app, "dee@example.com").await;
    app.shutdown().await;
}

#[tokio::test]
async fn user_labels_are_kept_once_in_the_order_first_given() {
    let app = spawn_app().await;
    let id = sign_up(&app, "eli@example.com").await;
    let labels = app
        .admin(
            "mutation($id: ID!) { updateUser(input: {id: $id, labels: [\"beta\", \"admin\", \"beta\", \"vip\", \"admin\"]}) { labels } }",
            json!({"id": id}),
        )
        .await
        .ok();
    assert_eq!(
        labels["updateUser"]["labels"],
        json!(["beta", "admin", "vip"])
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_oauth2_sign_in_with_a_verified_email_claims_an_unverified_account() {
    let app = spawn_oauth_app().await;
    let provider = TestProvider::start().await;
    configure(&app, "acme", json!({"issuer": provider.url})).await;
    let squatted = sign_up(&app, "fay@example.com").await;
    let squatter = session(&app, "fay@example.com").await;
    provider.sign_in_as(Account {
        subject: "fay-1".into(),
        email: "fay@example.com".into(),
        email_verified: true,
        name: "Fay".into(),
    });
    let landing = sign_in(&app, "acme", "").await;
    assert_eq!(landing.location, SUCCESS, "{landing:?}");
    let me = app
        .as_session(
            &landing.session_secret(),
            "{ account { id emailVerified } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        me["account"],
        json!({"id": squatted, "emailVerified": true})
    );
    assert_eq!(account_code(&app, &squatter).await, "INVALID_SESSION");
    assert_eq!(
        password_session(&app, "fay@example.com", PASSWORD)
            .await
            .code(),
        "INVALID_CREDENTIALS"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_oauth2_callback_finishes_only_in_the_browser_that_started_it() {
    let app = spawn_oauth_app().await;
    let provider = TestProvider::start().await;
    configure(&app, "acme", json!({"issuer": provider.url})).await;
    provider.sign_in_as(crate::oauth2::ann());
    let attacker = browser();
    let start = format!(
        "{}/v1/account/oauth2/acme?success={SUCCESS}&failure={FAILURE}",
        app.url
    );
    let to_provider = get(&attacker, &start).await;
    let nonce = to_provider.nonce.clone().expect("a nonce cookie");
    assert!(nonce.contains("HttpOnly"), "{nonce}");
    assert!(nonce.contains("SameSite=Lax"), "{nonce}");
    assert!(
        nonce.contains("Path=/v1/account/oauth2/callback/"),
        "{nonce}"
    );
    assert!(!nonce.contains("Secure"), "plain http: {nonce}");
    let to_callback = get(&attacker, &to_provider.location).await;

    // The attacker's callback URL, opened in the victim's browser (no nonce, or
    // the nonce of another sign-in), signs nobody in.
    let planted = get(&browser(), &to_callback.location).await;
    assert!(planted.location.starts_with(FAILURE), "{planted:?}");
    assert_eq!(
        planted.param("error").as_deref(),
        Some("OAUTH2_NONCE_INVALID")
    );
    assert!(planted.cookie.is_none(), "{planted:?}");

    let other = get(&browser(), &start).await;
    let to_provider = get(&attacker, &start).await;
    let to_callback = get(&attacker, &to_provider.location).await;
    let mixed = get_with(
        &browser(),
        &to_callback.location,
        other.nonce.as_deref().map(cookie_pair).as_deref(),
    )
    .await;
    assert_eq!(
        mixed.param("error").as_deref(),
        Some("OAUTH2_NONCE_INVALID")
    );
    assert!(mixed.cookie.is_none());
    app.shutdown().await;
}

#[tokio::test]
async fn oauth2_callbacks_come_from_the_public_url_never_the_host_header() {
    // Without NIMBUS_PUBLIC_URL, OAuth2 refuses to start.
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    // The test provider listens on loopback.
    config.oauth2_allow_private = true;
    let bare = spawn_with(config, dir).await;
    let provider = TestProvider::start().await;
    configure(&bare, "acme", json!({"issuer": provider.url})).await;
    let refused = get(
        &browser(),
        &format!(
            "{}/v1/account/oauth2/acme?success={SUCCESS}&failure={FAILURE}",
            bare.url
        ),
    )
    .await;
    assert!(refused.location.starts_with(FAILURE), "{refused:?}");
    assert_eq!(
        refused.param("error").as_deref(),
        Some("PUBLIC_URL_NOT_CONFIGURED")
    );
    bare.shutdown().await;

    let app = spawn_oauth_app().await;
    configure(&app, "acme", json!({"issuer": provider.url})).await;
    let response = browser()
        .get(format!(
            "{}/v1/account/oauth2/acme?success={SUCCESS}",
            app.url
        ))
        .header("host", "evil.example")
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let location = response.headers()["location"].to_str().unwrap().to_string();
    let redirect_uri = url::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "redirect_uri")
        .map(|(_, v)| v.into_owned())
        .expect("a redirect_uri");
    assert_eq!(
        redirect_uri,
        format!("{}/v1/account/oauth2/callback/acme/default", app.url)
    );

    // Return URLs only to the project's hosts.
    for query in [
        "success=https://evil.example/x",
        "success=http://localhost/ok&failure=https://evil.example/x",
        "success=javascript:alert(1)",
    ] {
        let answer = get(
            &browser(),
            &format!("{}/v1/account/oauth2/acme?{query}", app.url),
        )
        .await;
        assert_eq!(answer.status, 400, "{query}: {answer:?}");
        assert!(answer.body.contains("INVALID_REDIRECT_URL"), "{query}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn guessing_second_factors_from_elsewhere_does_not_lock_the_user_out() {
    let app = spawn_app().await;
    sign_up(&app, "gia@example.com").await;
    let first = session(&app, "gia@example.com").await;
    let recovery = turn_mfa_on(&app, &first).await;
    let challenge = "mutation($f: MfaFactor!, $c: String!) { updateMfaChallenge(input: {factor: $f, code: $c}) }";

    // Someone with the password signs in from elsewhere and guesses codes.
    let guesser = run_from(
        &app,
        [127, 0, 0, 3],
        "mutation($e: String!, $p: String!) { createEmailPasswordSession(input: {email: $e, password: $p}) { secret } }",
        json!({"e": "gia@example.com", "p": PASSWORD}),
    )
    .await
    .ok()["createEmailPasswordSession"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let mut codes = Vec::new();
    for guess in 0..11 {
        let answer = run_from_as(
            &app,
            [127, 0, 0, 3],
            Some(&guesser),
            challenge,
            json!({"f": "TOTP", "c": format!("{:06}", guess)}),
        )
        .await;
        codes.push(answer.code().to_string());
    }
    assert_eq!(codes[10], "RATE_LIMITED", "{codes:?}");

    // The owner, signing in from their own address, still passes.
    let second = session(&app, "gia@example.com").await;
    assert_eq!(account_code(&app, &second).await, "MFA_REQUIRED");
    run(
        &app,
        Some(&second),
        challenge,
        json!({"f": "RECOVERY_CODE", "c": recovery[0]}),
    )
    .await
    .ok();
    assert_eq!(account_code(&app, &second).await, "<none>");
    app.shutdown().await;
}

#[tokio::test]
async fn a_session_owing_its_second_factor_signs_itself_out_and_nothing_else() {
    let app = spawn_app().await;
    sign_up(&app, "hal@example.com").await;
    let first = session(&app, "hal@example.com").await;
    turn_mfa_on(&app, &first).await;
    let first_id = current_session_id(&app, &first).await;
    let pending = session(&app, "hal@example.com").await;
    assert_eq!(account_code(&app, &pending).await, "MFA_REQUIRED");
    let sign_out = "mutation($id: ID!) { deleteSession(input: {id: $id}) { deletedId } }";

    // A password alone signs no other device out, one or all.
    let other = run(&app, Some(&pending), sign_out, json!({"id": first_id})).await;
    assert_eq!(other.code(), "MFA_REQUIRED");
    let all = run(
        &app,
        Some(&pending),
        "mutation { deleteSessions { deletedCount } }",
        json!({}),
    )
    .await;
    assert_eq!(all.code(), "MFA_REQUIRED");
    assert_eq!(account_code(&app, &first).await, "<none>");
    // Nor may it sign in again on top of itself; it may end itself.
    let again = run(
        &app,
        Some(&pending),
        "mutation($e: String!, $p: String!) { createEmailPasswordSession(input: {email: $e, password: $p}) { secret } }",
        json!({"e": "hal@example.com", "p": PASSWORD}),
    )
    .await;
    assert_eq!(again.code(), "SESSION_ALREADY_EXISTS");
    let ended = run(&app, Some(&pending), sign_out, json!({"id": "current"}))
        .await
        .ok();
    assert!(ended["deleteSession"]["deletedId"].is_string());
    assert_eq!(account_code(&app, &pending).await, "INVALID_SESSION");
    assert_eq!(account_code(&app, &first).await, "<none>");
    app.shutdown().await;
}

#[tokio::test]
async fn behind_an_https_public_url_cookies_are_secure() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.public_url = Some("https://nimbus.example".into());
    // The test provider listens on loopback.
    config.oauth2_allow_private = true;
    let app = spawn_with(config, dir).await;
    let provider = TestProvider::start().await;
    configure(&app, "acme", json!({"issuer": provider.url})).await;
    let started = get(
        &browser(),
        &format!("{}/v1/account/oauth2/acme?success={SUCCESS}", app.url),
    )
    .await;
    let nonce = started.nonce.expect("a nonce cookie");
    assert!(nonce.contains("; Secure"), "{nonce}");

    sign_up(&app, "hal@example.com").await;
    let response = app
        .client
        .post(format!("{}/v1/graphql", app.url))
        .json(&json!({"query": "mutation { createEmailPasswordSession(input: {email: \"hal@example.com\", password: \"first-password-1\"}) { secret } }"}))
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(cookie.starts_with("nimbus_session_default="), "{cookie}");
    assert!(cookie.contains("; Secure"), "{cookie}");
    app.shutdown().await;
}

/// A client holds a whole IPv6 network (a /64 is what one subscriber gets):
/// password guesses from its addresses count as one client's.
#[tokio::test]
async fn password_guesses_from_one_ipv6_network_count_as_one_client() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.trusted_proxies = "127.0.0.1".parse().unwrap();
    let app = spawn_with(config, dir).await;
    sign_up(&app, "ivy@example.com").await;
    let query = "mutation($p: String!) { createEmailPasswordSession(input: {email: \"ivy@example.com\", password: $p}) { secret } }";
    let mut codes = Vec::new();
    for guess in 0..11 {
        let address = format!("2001:db8:7:9::{:x}", guess + 1);
        let answer = app
            .post(
                json!({"query": query, "variables": {"p": format!("wrong-{guess}")}}),
                &[("x-forwarded-for", &address)],
            )
            .await;
        codes.push(answer.code().to_string());
    }
    assert_eq!(codes[..10], vec!["INVALID_CREDENTIALS"; 10]);
    assert_eq!(codes[10], "RATE_LIMITED", "{codes:?}");
    // Another network is another client.
    let elsewhere = app
        .post(
            json!({"query": query, "variables": {"p": "wrong-again"}}),
            &[("x-forwarded-for", "2001:db8:8::1")],
        )
        .await;
    assert_eq!(elsewhere.code(), "INVALID_CREDENTIALS");
    app.shutdown().await;
}

/// A change prepared from a copy of the user read before a block (a `updatePrefs`
/// racing the administrator's block) is written only over that copy: it finds
/// the row changed and puts nothing back.
#[tokio::test]
async fn a_change_read_before_a_block_cannot_undo_it() {
    let app = spawn_app().await;
    let user_id = sign_up(&app, "kai@example.com").await;
    let state = app.server.as_ref().unwrap().state().clone();
    let pool = state.db.pool();
    let store = nimbus::services::users::store::find_user;
    let before = store(pool, "default", &user_id).await.unwrap().unwrap();
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, blocked: true}) { blocked } }",
        json!({"id": user_id}),
    )
    .await
    .ok();
    let mut stale = before.to_user();
    stale.prefs = json!({"theme": "dark"}).as_object().unwrap().clone();
    stale.updated_at += 1;
    let written = nimbus::services::users::store::update_user(
        pool,
        &stale,
        &before.password_history(),
        before.to_user().updated_at,
    )
    .await
    .unwrap();
    assert!(
        !written,
        "a write over an older copy must find nothing to write"
    );
    let after = store(pool, "default", &user_id)
        .await
        .unwrap()
        .unwrap()
        .to_user();
    assert!(after.blocked);

    // Through the API, changes keep applying over what is there now.
    let admin_prefs = app
        .admin(
            "mutation($id: ID!) { updateUser(input: {id: $id, prefs: {theme: \"light\"}}) { blocked prefs } }",
            json!({"id": user_id}),
        )
        .await
        .ok();
    assert_eq!(admin_prefs["updateUser"]["prefs"]["theme"], "light");
    let after = store(pool, "default", &user_id)
        .await
        .unwrap()
        .unwrap()
        .to_user();
    assert!(after.blocked, "a later change keeps the block");
    app.shutdown().await;
}

#[tokio::test]
async fn one_client_guessing_secrets_for_ever_new_users_is_bounded() {
    let app = spawn_app().await;
    let guess = "mutation($u: ID!) { updateRecovery(input: {userId: $u, secret: \"guess\", password: \"long-enough-1\"}) }";
    // Each user id its own: no per-user window could stop this alone.
    for n in 0..100 {
        let answer = app
            .post(
                json!({"query": guess, "variables": {"u": format!("nobody{n}")}}),
                &[],
            )
            .await;
        assert_eq!(
            answer.code(),
            "INVALID_TOKEN",
            "guess {n}: {:#}",
            answer.body
        );
    }
    let answer = app
        .post(
            json!({"query": guess, "variables": {"u": "nobody-else"}}),
            &[],
        )
        .await;
    assert_eq!(answer.code(), "RATE_LIMITED", "{:#}", answer.body);
    // Email codes count with them.
    let answer = app
        .post(
            json!({"query": "mutation { createSession(input: {email: \"new@example.com\", secret: \"123456\"}) { secret } }"}),
            &[],
        )
        .await;
    assert_eq!(answer.code(), "RATE_LIMITED", "{:#}", answer.body);
    app.shutdown().await;
}

#[tokio::test]
async fn replacing_recovery_codes_takes_a_second_factor_now() {
    let app = spawn_app().await;
    sign_up(&app, "rc@example.com").await;
    let secret = session(&app, "rc@example.com").await;
    let codes = turn_mfa_on(&app, &secret).await;
    let replace = "mutation($i: MfaCodeInput) { createMfaRecoveryCodes(input: $i) }";
    // The session alone (a stolen cookie) cannot swap the owner's codes for its own.
    for proof in [
        json!(null),
        json!({"code": "000000"}),
        json!({"code": "not-a-code"}),
    ] {
        let answer = run(&app, Some(&secret), replace, json!({"i": proof})).await;
        assert_eq!(
            answer.code(),
            "INVALID_MFA_CODE",
            "{proof}: {:#}",
            answer.body
        );
    }
    let renewed: Vec<String> = serde_json::from_value(
        run(
            &app,
            Some(&secret),
            replace,
            json!({"i": {"code": codes[0]}}),
        )
        .await
        .ok()["createMfaRecoveryCodes"]
            .clone(),
    )
    .unwrap();
    assert_eq!(renewed.len(), 10);
    assert!(renewed.iter().all(|code| !codes.contains(code)));
    // The codes replaced prove nothing any more; the new ones do.
    let answer = run(
        &app,
        Some(&secret),
        replace,
        json!({"i": {"code": codes[1]}}),
    )
    .await;
    assert_eq!(answer.code(), "INVALID_MFA_CODE", "{:#}", answer.body);
    run(
        &app,
        Some(&secret),
        replace,
        json!({"i": {"code": renewed[0]}}),
    )
    .await
    .ok();

    // With MFA on and no codes yet, the first ones take a second factor too.
    sign_up(&app, "rd@example.com").await;
    let other = session(&app, "rd@example.com").await;
    add_authenticator(&app, &other).await;
    run(
        &app,
        Some(&other),
        "mutation { updateMfa(input: {enabled: true}) { mfa } }",
        json!({}),
    )
    .await
    .ok();
    let first = run(&app, Some(&other), replace, json!({"i": null})).await;
    assert_eq!(first.code(), "INVALID_MFA_CODE", "{:#}", first.body);
    app.shutdown().await;
}

/// The id of the session `secret` opens.
async fn current_session_id(app: &TestApp, secret: &str) -> String {
    text_at(
        app,
        secret,
        "{ accountSession(id: \"current\") { id current } }",
        "/accountSession/id",
    )
    .await
}

#[tokio::test]
async fn a_user_reads_one_session_and_a_server_ends_one_session_of_a_user() {
    let app = spawn_app().await;
    let dee = sign_up(&app, "dee@example.com").await;
    sign_up(&app, "eve@example.com").await;
    let (phone, laptop) = (
        session(&app, "dee@example.com").await,
        session(&app, "dee@example.com").await,
    );
    let eve = session(&app, "eve@example.com").await;
    let phone_id = current_session_id(&app, &phone).await;
    let laptop_id = current_session_id(&app, &laptop).await;
    let one = "query($id: ID!) { accountSession(id: $id) { id current } }";
    let read = run(&app, Some(&laptop), one, json!({"id": phone_id}))
        .await
        .ok();
    assert_eq!(
        read["accountSession"],
        json!({"id": phone_id, "current": false})
    );
    // Another user's session is no session of the caller's.
    let foreign = run(&app, Some(&eve), one, json!({"id": phone_id})).await;
    assert_eq!(foreign.code(), "SESSION_NOT_FOUND", "{:#}", foreign.body);

    let end = "mutation($u: ID!, $s: ID!) { deleteUserSession(input: {userId: $u, sessionId: $s}) { deletedId } }";
    let reader = app.create_key("default", &["users.read"]).await;
    let refused = app
        .as_key(&reader, "default", end, json!({"u": dee, "s": phone_id}))
        .await;
    assert_eq!(refused.code(), "SCOPE_MISSING", "{:#}", refused.body);
    let writer = app.create_key("default", &["users.write"]).await;
    // A session is ended only through its own user.
    let eve_id = current_session_id(&app, &eve).await;
    let mismatched = app
        .as_key(&writer, "default", end, json!({"u": dee, "s": eve_id}))
        .await;
    assert_eq!(
        mismatched.code(),
        "SESSION_NOT_FOUND",
        "{:#}",
        mismatched.body
    );
    assert_eq!(account_code(&app, &eve).await, "<none>");
    let ended = app
        .as_key(&writer, "default", end, json!({"u": dee, "s": phone_id}))
        .await
        .ok();
    assert_eq!(ended["deleteUserSession"]["deletedId"], phone_id.as_str());
    assert_eq!(account_code(&app, &phone).await, "INVALID_SESSION");
    assert_eq!(account_code(&app, &laptop).await, "<none>");
    assert_ne!(laptop_id, phone_id);
    let again = app
        .as_key(&writer, "default", end, json!({"u": dee, "s": phone_id}))
        .await;
    assert_eq!(again.code(), "SESSION_NOT_FOUND");
    let hostile = app
        .as_key(&writer, "default", end, json!({"u": dee, "s": "../../x"}))
        .await;
    assert_eq!(hostile.code(), "INVALID_ID", "{:#}", hostile.body);
    app.shutdown().await;
}

#[tokio::test]
async fn a_user_blocks_their_own_account_and_only_a_server_opens_it_again() {
    let app = spawn_app().await;
    let fay = sign_up(&app, "fay@example.com").await;
    let (phone, laptop) = (
        session(&app, "fay@example.com").await,
        session(&app, "fay@example.com").await,
    );
    let block = "mutation { updateStatus { id blocked } }";
    // A JWT is a backend's delegation: it does not close the account.
    let jwt = jwt_of(&app, &phone).await;
    let refused = run(&app, Some(&jwt), block, json!({})).await;
    assert_eq!(refused.code(), "PERMISSION_DENIED", "{:#}", refused.body);
    let blocked = run(&app, Some(&phone), block, json!({})).await.ok();
    assert_eq!(blocked["updateStatus"], json!({"id": fay, "blocked": true}));
    for secret in [&phone, &laptop, &jwt] {
        assert_eq!(account_code(&app, secret).await, "USER_BLOCKED");
    }
    assert_eq!(
        password_session(&app, "fay@example.com", PASSWORD)
            .await
            .code(),
        "USER_BLOCKED"
    );
    let key = app.create_key("default", &["users.write"]).await;
    app.as_key(
        &key,
        "default",
        "mutation($u: ID!) { updateUser(input: {id: $u, blocked: false}) { blocked } }",
        json!({"u": fay}),
    )
    .await
    .ok();
    let again = session(&app, "fay@example.com").await;
    assert_eq!(account_code(&app, &again).await, "<none>");
    app.shutdown().await;
}

/// A user deletes their own account (Appwrite's `DELETE /account`), even as the
/// sole owner of a team: every session stops at once, the email is free to sign
/// up again, and the team stays without them. A JWT cannot, nor can a guest.
#[tokio::test]
async fn a_user_deletes_their_own_account() {
    let app = spawn_app().await;
    let gus = sign_up(&app, "gus@example.com").await;
    let (phone, laptop) = (
        session(&app, "gus@example.com").await,
        session(&app, "gus@example.com").await,
    );
    run(
        &app,
        Some(&phone),
        "mutation { createTeam(input: {id: \"band\", name: \"Band\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let delete = "mutation { deleteAccount { deletedId } }";
    let jwt = jwt_of(&app, &phone).await;
    let refused = run(&app, Some(&jwt), delete, json!({})).await;
    assert_eq!(refused.code(), "PERMISSION_DENIED", "{:#}", refused.body);
    let guest = run(&app, None, delete, json!({})).await;
    assert_eq!(guest.code(), "UNAUTHENTICATED", "{:#}", guest.body);
    let deleted = run(&app, Some(&laptop), delete, json!({})).await.ok();
    assert_eq!(deleted["deleteAccount"]["deletedId"], json!(gus));
    for secret in [&phone, &laptop, &jwt] {
        assert_ne!(account_code(&app, secret).await, "<none>");
    }
    let key = app
        .create_key("default", &["users.read", "teams.read"])
        .await;
    let user = app
        .as_key(
            &key,
            "default",
            "query($u: ID!) { user(id: $u) { id } }",
            json!({"u": gus}),
        )
        .await;
    assert_eq!(user.code(), "USER_NOT_FOUND", "{:#}", user.body);
    let team = app
        .as_key(
            &key,
            "default",
            "{ team(id: \"band\") { id total } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(team["team"], json!({"id": "band", "total": 0}));
    let again = sign_up(&app, "gus@example.com").await;
    assert_ne!(again, gus);
    app.shutdown().await;
}

/// A user's activity log grows with every sign-in and change: entries older than
/// the retention go, every user's, and newer ones stay.
#[tokio::test]
async fn activity_log_entries_past_the_retention_are_pruned() {
    let app = spawn_app().await;
    sign_up(&app, "old@example.com").await;
    let me = session(&app, "old@example.com").await;
    let logs = "{ accountLogs { totalCount nodes { event } } }";
    let before = run(&app, Some(&me), logs, json!({})).await.ok();
    let total = before["accountLogs"]["totalCount"].as_i64().unwrap();
    assert!(total >= 2, "{before}");
    let state = app.server.as_ref().unwrap().state().clone();
    // Every entry but the newest, as if made fifteen days ago.
    let fifteen_days_ago = nimbus::db::now_millis() - 15 * 86_400_000;
    sqlx::query(
        "UPDATE activity_logs SET created_at = ? WHERE id <> (SELECT id FROM (SELECT MAX(id) AS id FROM activity_logs) AS newest)",
    )
    .bind(fifteen_days_ago)
    .execute(state.db.pool())
    .await
    .unwrap();
    let pruned = nimbus::services::users::service::prune_activity_logs(&state)
        .await
        .unwrap();
    assert_eq!(pruned as i64, total - 1);
    let after = run(&app, Some(&me), logs, json!({})).await.ok();
    assert_eq!(after["accountLogs"]["totalCount"], 1);
    assert_eq!(
        after["accountLogs"]["nodes"][0]["event"],
        before["accountLogs"]["nodes"][total as usize - 1]["event"]
    );
    app.shutdown().await;
}

/// Links and codes are kept a day past their end (answered `TOKEN_EXPIRED`
/// meanwhile), then pruned: anyone may have a user's recovery link mailed, and
/// each was kept for ever.
#[tokio::test]
async fn tokens_a_day_past_their_end_are_pruned() {
    let app = spawn_app().await;
    let user = sign_up(&app, "links@example.com").await;
    let state = app.server.as_ref().unwrap().state().clone();
    let now = nimbus::db::now_millis();
    for (id, ended) in [
        ("ended-long-ago", now - 2 * 86_400_000),
        ("ended-lately", now - 3_600_000),
        ("live", now + 3_600_000),
    ] {
        sqlx::query(
            "INSERT INTO tokens (project_id, id, user_id, kind, secret_hash, expires_at, created_at) \
             VALUES ('default', ?, ?, 'recovery', ?, ?, ?)",
        )
        .bind(id)
        .bind(&user)
        .bind(format!("hash-of-{id}"))
        .bind(ended)
        .bind(ended - 3_600_000)
        .execute(state.db.pool())
        .await
        .unwrap();
    }
    let pruned = nimbus::services::users::service::prune_expired_tokens(&state)
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let mut kept: Vec<String> = sqlx::query_scalar("SELECT id FROM tokens WHERE user_id = ?")
        .bind(&user)
        .fetch_all(state.db.pool())
        .await
        .unwrap();
    kept.sort();
    assert_eq!(kept, ["ended-lately", "live"]);
    app.shutdown().await;
}

/// Asking for an emailed sign-in tells nobody that an address's account is
/// blocked: the answer is any address's, and nothing is mailed to it.
#[tokio::test]
async fn an_emailed_sign_in_for_a_blocked_account_answers_like_any_other() {
    let (app, smtp) = app_with_mail().await;
    let blocked = sign_up(&app, "shut@example.com").await;
    app.admin(
        "mutation($u: ID!) { updateUser(input: {id: $u, blocked: true}) { blocked } }",
        json!({"u": blocked}),
    )
    .await
    .ok();
    let ask = |email: &'static str, flow: &'static str| {
        let app = &app;
        async move {
            let query = match flow {
                "magic" => {
                    "mutation($e: String!) { createMagicUrlToken(input: {email: $e, url: \"http://localhost/magic\"}) { userId } }"
                }
                _ => "mutation($e: String!) { createEmailToken(input: {email: $e}) { userId } }",
            };
            run(app, None, query, json!({"e": email})).await
        }
    };
    for flow in ["magic", "code"] {
        let answer = ask("shut@example.com", flow).await;
        assert_eq!(answer.code(), "<none>", "{flow}: {:#}", answer.body);
        let other = ask("open@example.com", flow).await;
        assert_eq!(
            answer.body["data"]
                .as_object()
                .map(|d| d.values().cloned().collect::<Vec<_>>()),
            other.body["data"]
                .as_object()
                .map(|d| d.values().cloned().collect::<Vec<_>>()),
            "{flow}: the same answer as an open address's"
        );
    }
    smtp.wait_for_message_to("open@example.com", WAIT).await;
    assert!(smtp.messages_to("shut@example.com").is_empty());
    app.shutdown().await;
}

/// Guesses at one account from many networks close it to strangers (its own limit,
/// a hundred an hour), but not to the network its owner signs in from.
#[tokio::test]
async fn password_guesses_from_many_networks_do_not_lock_the_owner_out_at_home() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.trusted_proxies = "127.0.0.1".parse().unwrap();
    let app = spawn_with(config, dir).await;
    sign_up(&app, "uma@example.com").await;
    let query = "mutation($p: String!) { createEmailPasswordSession(input: {email: \"uma@example.com\", password: $p}) { secret } }";
    let from = |address: String, password: String| {
        let app = &app;
        async move {
            app.post(
                json!({"query": query, "variables": {"p": password}}),
                &[("x-forwarded-for", &address)],
            )
            .await
        }
    };
    let home = "198.51.100.7".to_string();
    from(home.clone(), PASSWORD.into()).await.ok();
    // The owner's sign-in and 99 guesses from ten networks: the account's hundred.
    for guess in 0..99 {
        let network = guess / 10;
        let answer = from(format!("203.0.113.{network}"), format!("wrong-{guess}")).await;
        assert_eq!(answer.code(), "INVALID_CREDENTIALS", "guess {guess}");
    }
    let stranger = from("192.0.2.50".into(), PASSWORD.into()).await;
    assert_eq!(
        stranger.code(),
        "RATE_LIMITED",
        "the account is closed to strangers"
    );
    let owner = from(home, PASSWORD.into()).await;
    assert_eq!(owner.code(), "<none>", "{:#}", owner.body);
    app.shutdown().await;
}
