//! Account events under Appwrite's names: sessions created and ended, recovery
//! and verification tokens issued and used, sign-in tokens, `users.U.update.<field>`
//! and accepted invitations reach webhooks without a secret in them, and reach a
//! realtime `account` subscriber only when they are the subscriber's own.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, WAIT, WsClient, spawn_with, test_config};
use crate::smtp_server::TestSmtp;
use crate::webhooks::{Receiver, create_webhook, eventually};

async fn app_with_mail_and_webhooks() -> (TestApp, TestSmtp) {
    let smtp = TestSmtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.smtp_url = Some(smtp.url.clone());
    config.webhooks_allow_private = true;
    config.jobs_poll_ms = 50;
    (spawn_with(config, dir).await, smtp)
}

async fn run(app: &TestApp, query: &str, variables: Value, bearer: Option<&str>) -> Value {
    let header = bearer.map(|secret| format!("Bearer {secret}"));
    let headers: Vec<(&str, &str)> = header
        .iter()
        .map(|h| ("authorization", h.as_str()))
        .collect();
    app.post(json!({"query": query, "variables": variables}), &headers)
        .await
        .ok()
}

/// Signs up `email` with `password` and signs in: the user's id and session secret.
async fn account(app: &TestApp, email: &str, password: &str) -> (String, String) {
    let created = run(app, "mutation($e: String!, $p: String!) { createAccount(input: {email: $e, password: $p}) { id } }", json!({"e": email, "p": password}), None).await;
    let secret = sign_in(app, email, password).await;
    (
        created["createAccount"]["id"].as_str().unwrap().to_string(),
        secret,
    )
}

async fn sign_in(app: &TestApp, email: &str, password: &str) -> String {
    let signed = run(app, "mutation($e: String!, $p: String!) { createEmailPasswordSession(input: {email: $e, password: $p}) { secret } }", json!({"e": email, "p": password}), None).await;
    signed["createEmailPasswordSession"]["secret"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Every JSON key anywhere in `value`.
fn keys(value: &Value, into: &mut BTreeSet<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                into.insert(key.clone());
                keys(inner, into);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| keys(item, into)),
        _ => {}
    }
}

#[tokio::test]
async fn account_events_reach_webhooks_under_appwrite_names_without_secrets() {
    let receiver = Receiver::start().await;
    let (app, smtp) = app_with_mail_and_webhooks().await;
    create_webhook(
        &app,
        &receiver.url("/ok"),
        &[
            "users.*.sessions.*",
            "users.*.recovery.*",
            "users.*.verification.*",
            "users.*.tokens.*",
            "users.*.update",
            "teams.*.memberships.*.update.status",
        ],
    )
    .await;
    let mut secrets: Vec<String> = Vec::new();
    let (ann, first) = account(&app, "ann@example.com", "ann-password-1").await;
    secrets.push(first.clone());
    let second = sign_in(&app, "ann@example.com", "ann-password-1").await;
    secrets.push(second.clone());

    // Her own changes, each under its field's name.
    run(
        &app,
        "mutation { updateName(input: {name: \"Ann\"}) { id } }",
        json!({}),
        Some(&first),
    )
    .await;
    run(
        &app,
        "mutation { updatePrefs(input: {prefs: {theme: \"dark\"}}) { id } }",
        json!({}),
        Some(&first),
    )
    .await;
    run(&app, "mutation { updatePassword(input: {password: \"ann-password-2\", oldPassword: \"ann-password-1\"}) { id } }", json!({}), Some(&first)).await;
    // A key's: status and labels.
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, labels: [\"vip\"]}) { id } }",
        json!({"id": ann}),
    )
    .await
    .ok();

    // Verification: mailed, then used.
    run(
        &app,
        "mutation { createVerification(input: {url: \"http://localhost/verify\"}) { userId } }",
        json!({}),
        Some(&first),
    )
    .await;
    let mail = smtp.wait_for_message_to("ann@example.com", WAIT).await;
    let secret = mail.link_param("secret").unwrap();
    secrets.push(secret.clone());
    run(&app, "mutation($u: ID!, $s: String!) { updateVerification(input: {userId: $u, secret: $s}) { emailVerified } }", json!({"u": ann, "s": secret}), None).await;

    // Recovery: mailed, then used (which signs her out everywhere).
    let before = smtp.messages_to("ann@example.com").len();
    run(&app, "mutation { createRecovery(input: {email: \"ann@example.com\", url: \"http://localhost/reset\"}) }", json!({}), None).await;
    let mail = eventually("the recovery mail", || {
        let mails = smtp.messages_to("ann@example.com");
        async move { mails.get(before).cloned() }
    })
    .await;
    let secret = mail.link_param("secret").unwrap();
    secrets.push(secret.clone());
    run(&app, "mutation($u: ID!, $s: String!) { updateRecovery(input: {userId: $u, secret: $s, password: \"ann-password-3\"}) }", json!({"u": ann, "s": secret}), None).await;
    let third = sign_in(&app, "ann@example.com", "ann-password-3").await;
    secrets.push(third.clone());
    run(
        &app,
        "mutation { deleteSession(input: {id: \"current\"}) { deletedId } }",
        json!({}),
        Some(&third),
    )
    .await;

    // A sign-in link is a token.
    run(&app, "mutation { createMagicUrlToken(input: {email: \"ann@example.com\", url: \"http://localhost/magic\"}) { userId } }", json!({}), None).await;

    // An invitation accepted.
    let (_, owner) = account(&app, "olga@example.com", "olga-password-1").await;
    secrets.push(owner.clone());
    run(
        &app,
        "mutation { createTeam(input: {id: \"band\", name: \"Band\"}) { id } }",
        json!({}),
        Some(&owner),
    )
    .await;
    let (bob, bob_session) = account(&app, "bob@example.com", "bob-password-1").await;
    secrets.push(bob_session.clone());
    let invited = run(&app, "mutation { createMembership(input: {teamId: \"band\", email: \"bob@example.com\", roles: [\"drums\"], url: \"http://localhost/join\"}) { id } }", json!({}), Some(&owner)).await;
    let membership = invited["createMembership"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mail = smtp.wait_for_message_to("bob@example.com", WAIT).await;
    let secret = mail.link_param("secret").unwrap();
    secrets.push(secret.clone());
    let accepted = run(&app, "mutation($m: ID!, $s: String!) { updateMembershipStatus(input: {teamId: \"band\", membershipId: $m, secret: $s}) { session { secret } } }", json!({"m": membership, "s": secret}), None).await;
    if let Some(secret) = accepted["updateMembershipStatus"]["session"]["secret"].as_str() {
        secrets.push(secret.to_string());
    }

    let expected = [
        format!("users.{ann}.update.name"),
        format!("users.{ann}.update.prefs"),
        format!("users.{ann}.update.password"),
        format!("users.{ann}.update.labels"),
        format!("users.{ann}.verification.*.create"),
        format!("users.{ann}.verification.*.update"),
        format!("users.{ann}.recovery.*.create"),
        format!("users.{ann}.recovery.*.update"),
        format!("users.{ann}.tokens.*.create"),
        format!("users.{ann}.sessions.*.create"),
        format!("users.{ann}.sessions.*.delete"),
        format!("users.{bob}.sessions.*.create"),
        format!("teams.band.memberships.{membership}.update.status"),
    ];
    let names = |requests: &[crate::webhooks::Received]| -> Vec<String> {
        requests
            .iter()
            .map(|r| {
                serde_json::from_str::<Value>(&r.body).unwrap()["events"][0]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let matched = |pattern: &str, names: &[String]| {
        names.iter().any(|name| {
            let parts: Vec<&str> = name.split('.').collect();
            let wanted: Vec<&str> = pattern.split('.').collect();
            parts.len() == wanted.len()
                && parts.iter().zip(&wanted).all(|(a, b)| *b == "*" || a == b)
        })
    };
    let requests = eventually("every account event delivered", || {
        let got = receiver.requests_to("/ok");
        let names = names(&got);
        let all = expected.iter().all(|pattern| matched(pattern, &names));
        async move { all.then_some(got) }
    })
    .await;
    let names = names(&requests);
    // Ended: the second device by the new password, the first by the recovery,
    // the third by signing out; each once.
    let ended: BTreeSet<&String> = names
        .iter()
        .filter(|n| n.starts_with(&format!("users.{ann}.sessions.")) && n.ends_with(".delete"))
        .collect();
    let ended_count = names.iter().filter(|n| ended.contains(n)).count();
    assert_eq!((ended.len(), ended_count), (3, 3), "{names:?}");

    for request in &requests {
        let body: Value = serde_json::from_str(&request.body).unwrap();
        for secret in &secrets {
            assert!(
                !request.body.contains(secret.as_str()),
                "a secret travelled: {body}"
            );
        }
        for password in [
            "ann-password-1",
            "ann-password-2",
            "ann-password-3",
            "bob-password-1",
        ] {
            assert!(
                !request.body.contains(password),
                "a password travelled: {body}"
            );
        }
        assert!(!request.body.contains("argon2"), "a hash travelled: {body}");
        let mut found = BTreeSet::new();
        keys(&body["payload"], &mut found);
        for key in [
            "secret",
            "secretHash",
            "passwordHash",
            "password",
            "hash",
            "totpSecret",
            "recoveryCodes",
        ] {
            assert!(!found.contains(key), "`{key}` in {body}");
        }
    }
    app.shutdown().await;
}

/// The events a realtime `account` subscription hears within a short time.
async fn heard(ws: &mut WsClient) -> Vec<String> {
    let mut names = Vec::new();
    while let Some(message) = ws.socket_next_within_short_time().await {
        if let Some(name) = message["payload"]["data"]["realtime"]["events"][0].as_str() {
            names.push(name.to_string());
        }
    }
    names
}

#[tokio::test]
async fn an_account_subscriber_hears_its_own_session_and_user_events_only() {
    let (app, _smtp) = app_with_mail_and_webhooks().await;
    let (ann, first) = account(&app, "ann@example.com", "ann-password-1").await;
    let (bob, bob_first) = account(&app, "bob@example.com", "bob-password-1").await;
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"Authorization": format!("Bearer {first}")}))
        .await
        .expect("ack");
    ws.subscribe(
        "1",
        "subscription { realtime(channels: [\"account\"]) { events channels payload } }",
    )
    .await;
    // Live once Ann hears of her own change.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        run(
            &app,
            "mutation { updateName(input: {name: \"Ann\"}) { id } }",
            json!({}),
            Some(&first),
        )
        .await;
        if heard(&mut ws)
            .await
            .iter()
            .any(|n| n == &format!("users.{ann}.update.name"))
        {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "Ann heard nothing");
    }

    // Bob signs in again, changes his name and signs out a device: none of it
    // is Ann's. Ann signs in on a second device and signs it out.
    let bob_second = sign_in(&app, "bob@example.com", "bob-password-1").await;
    run(
        &app,
        "mutation { updateName(input: {name: \"Bob\"}) { id } }",
        json!({}),
        Some(&bob_first),
    )
    .await;
    run(
        &app,
        "mutation { deleteSession(input: {id: \"current\"}) { deletedId } }",
        json!({}),
        Some(&bob_second),
    )
    .await;
    let second = sign_in(&app, "ann@example.com", "ann-password-1").await;
    run(
        &app,
        "mutation { deleteSession(input: {id: \"current\"}) { deletedId } }",
        json!({}),
        Some(&second),
    )
    .await;
    run(
        &app,
        "mutation { updatePrefs(input: {prefs: {a: 1}}) { id } }",
        json!({}),
        Some(&first),
    )
    .await;

    let mut names = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !names
        .iter()
        .any(|n: &String| n == &format!("users.{ann}.update.prefs"))
    {
        names.extend(heard(&mut ws).await);
        assert!(tokio::time::Instant::now() < deadline, "{names:?}");
    }
    let created: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(&format!("users.{ann}.sessions.")) && n.ends_with(".create"))
        .collect();
    let deleted: Vec<&String> = names
        .iter()
        .filter(|n| n.starts_with(&format!("users.{ann}.sessions.")) && n.ends_with(".delete"))
        .collect();
    assert_eq!(created.len(), 1, "{names:?}");
    assert_eq!(deleted.len(), 1, "{names:?}");
    assert_eq!(
        created[0].trim_end_matches(".create"),
        deleted[0].trim_end_matches(".delete"),
        "the same session"
    );
    assert!(
        names.iter().all(|n| !n.contains(&bob)),
        "Bob's events reached Ann: {names:?}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn sessions_trimmed_past_the_limit_and_a_block_are_events() {
    let receiver = Receiver::start().await;
    let (app, _smtp) = app_with_mail_and_webhooks().await;
    app.admin(
        "mutation { updateProjectAuth(input: {projectId: \"default\", maxSessions: 1}) { id } }",
        json!({}),
    )
    .await
    .ok();
    create_webhook(
        &app,
        &receiver.url("/ok"),
        &["users.*.sessions.*.delete", "users.*.update.status"],
    )
    .await;
    let (cleo, first) = account(&app, "cleo@example.com", "cleo-password-1").await;
    let first_id = run(
        &app,
        "{ accountSessions { id current } }",
        json!({}),
        Some(&first),
    )
    .await["accountSessions"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A second sign-in ends the first: the limit is one session.
    let second = sign_in(&app, "cleo@example.com", "cleo-password-1").await;
    assert!(
        run(&app, "{ account { id } }", json!({}), Some(&second)).await["account"]["id"]
            .is_string()
    );
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, blocked: true}) { id } }",
        json!({"id": cleo}),
    )
    .await
    .ok();
    let requests = receiver.wait_for("/ok", 2).await;
    // Deliveries are jobs run side by side: they may arrive in either order.
    let mut bodies: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::from_str::<Value>(&r.body).unwrap())
        .collect();
    bodies.sort_by_key(|body| body["events"][0].as_str().unwrap().to_string());
    let names: Vec<&str> = bodies
        .iter()
        .map(|body| body["events"][0].as_str().unwrap())
        .collect();
    let mut expected = [
        format!("users.{cleo}.sessions.{first_id}.delete"),
        format!("users.{cleo}.update.status"),
    ];
    expected.sort();
    assert_eq!(names, expected);
    let blocked = bodies
        .iter()
        .find(|body| {
            body["events"][0]
                .as_str()
                .unwrap()
                .ends_with(".update.status")
        })
        .unwrap();
    assert_eq!(blocked["payload"]["blocked"], true, "{blocked}");
    app.shutdown().await;
}

#[tokio::test]
async fn mfa_changes_are_events_without_the_authenticator_secret() {
    let receiver = Receiver::start().await;
    let (app, _smtp) = app_with_mail_and_webhooks().await;
    create_webhook(
        &app,
        &receiver.url("/ok"),
        &["users.*.update.mfa", "users.*.sessions.*.update"],
    )
    .await;
    let (dora, session) = account(&app, "dora@example.com", "dora-password-1").await;
    let added = run(
        &app,
        "mutation { createMfaAuthenticator { secret uri } }",
        json!({}),
        Some(&session),
    )
    .await;
    let secret = added["createMfaAuthenticator"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let totp = nimbus::auth::totp::TotpSecret::from_base32(&secret).unwrap();
    let code = nimbus::auth::totp::code_at(&totp, chrono::Utc::now().timestamp() as u64);
    run(
        &app,
        "mutation($c: String!) { verifyMfaAuthenticator(input: {code: $c}) }",
        json!({"c": code}),
        Some(&session),
    )
    .await;
    run(
        &app,
        "mutation { updateMfa(input: {enabled: true}) { mfa } }",
        json!({}),
        Some(&session),
    )
    .await;

    let requests = receiver.wait_for("/ok", 4).await;
    let bodies: Vec<Value> = requests
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let names: Vec<&str> = bodies
        .iter()
        .map(|b| b["events"][0].as_str().unwrap())
        .collect();
    let mfa = format!("users.{dora}.update.mfa");
    assert_eq!(names.iter().filter(|n| **n == mfa).count(), 2, "{names:?}");
    let passed: Vec<&Value> = bodies
        .iter()
        .filter(|b| {
            let name = b["events"][0].as_str().unwrap();
            name.starts_with(&format!("users.{dora}.sessions.")) && name.ends_with(".update")
        })
        .collect();
    assert_eq!(passed.len(), 2, "{names:?}");
    // Deliveries are jobs run side by side: their order of arrival is not the
    // order of the events.
    assert!(
        passed.iter().all(|b| b["payload"]["mfaVerified"] == true),
        "{passed:?}"
    );
    assert!(
        bodies
            .iter()
            .any(|b| b["events"][0] == mfa.as_str() && b["payload"]["mfa"] == true),
        "{names:?}"
    );
    for request in &requests {
        assert!(!request.body.contains(&secret), "the TOTP secret travelled");
        assert!(
            !request.body.contains(&session),
            "the session secret travelled"
        );
        assert!(!request.body.contains("otpauth"), "{}", request.body);
    }
    app.shutdown().await;
}
