//! Account flows through a real SMTP server the test starts: verification,
//! recovery, magic link and emailed code.

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, WAIT, spawn_with, test_config};
use crate::smtp_server::TestSmtp;

async fn app_with_mail() -> (TestApp, TestSmtp) {
    let smtp = TestSmtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.smtp_url = Some(smtp.url.clone());
    (spawn_with(config, dir).await, smtp)
}

async fn run(app: &TestApp, query: &str, variables: Value, bearer: Option<&str>) -> Answer {
    let header = bearer.map(|secret| format!("Bearer {secret}"));
    let headers: Vec<(&str, &str)> = header
        .iter()
        .map(|h| ("authorization", h.as_str()))
        .collect();
    app.post(json!({"query": query, "variables": variables}), &headers)
        .await
}

async fn account_with_session(app: &TestApp, email: &str) -> String {
    run(app, "mutation($e: String!) { createAccount(input: {email: $e, password: \"mail-password\"}) { id } }", json!({"e": email}), None)
        .await
        .ok();
    let signed = run(
        app,
        "mutation($e: String!) { createEmailPasswordSession(input: {email: $e, password: \"mail-password\"}) { secret } }",
        json!({"e": email}),
        None,
    )
    .await
    .ok();
    signed["createEmailPasswordSession"]["secret"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn email_verification_arrives_by_mail_and_works_once() {
    let (app, smtp) = app_with_mail().await;
    let session = account_with_session(&app, "nora@example.com").await;
    let sent = run(&app, "mutation { createVerification(input: {url: \"http://localhost/verify\"}) { userId expiresAt } }", json!({}), Some(&session))
        .await
        .ok();
    let mail = smtp.wait_for_message_to("nora@example.com", WAIT).await;
    assert!(
        mail.subject().to_lowercase().contains("verif"),
        "{}",
        mail.subject()
    );
    let link = mail.first_link().expect("a link");
    assert!(link.starts_with("http://localhost/verify?"), "{link}");
    let user_id = mail.link_param("userId").unwrap();
    let secret = mail.link_param("secret").unwrap();
    assert_eq!(sent["createVerification"]["userId"], user_id.as_str());

    let wrong = run(&app, "mutation($u: ID!) { updateVerification(input: {userId: $u, secret: \"nope\"}) { emailVerified } }", json!({"u": user_id}), None).await;
    assert_eq!(wrong.code(), "INVALID_TOKEN");
    let verified = run(
        &app,
        "mutation($u: ID!, $s: String!) { updateVerification(input: {userId: $u, secret: $s}) { emailVerified } }",
        json!({"u": user_id, "s": secret}),
        None,
    )
    .await
    .ok();
    assert_eq!(verified["updateVerification"]["emailVerified"], true);
    let replay = run(
        &app,
        "mutation($u: ID!, $s: String!) { updateVerification(input: {userId: $u, secret: $s}) { emailVerified } }",
        json!({"u": user_id, "s": secret}),
        None,
    )
    .await;
    assert_eq!(replay.code(), "INVALID_TOKEN", "a link works once");

    let elsewhere = run(
        &app,
        "mutation { createVerification(input: {url: \"https://evil.example/steal\"}) { userId } }",
        json!({}),
        Some(&session),
    )
    .await;
    assert_eq!(elsewhere.code(), "INVALID_REDIRECT_URL");
    // A verified address is not mailed again, as Appwrite answers.
    let again = run(
        &app,
        "mutation { createVerification(input: {url: \"http://localhost/verify\"}) { userId } }",
        json!({}),
        Some(&session),
    )
    .await;
    assert_eq!(again.code(), "EMAIL_ALREADY_VERIFIED", "{:#}", again.body);
    assert_eq!(smtp.messages_to("nora@example.com").len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn password_recovery_resets_the_password_and_signs_out_everywhere() {
    let (app, smtp) = app_with_mail().await;
    let session = account_with_session(&app, "olga@example.com").await;
    let unknown = run(&app, "mutation { createRecovery(input: {email: \"nobody@example.com\", url: \"http://localhost/reset\"}) }", json!({}), None)
        .await
        .ok();
    assert_eq!(
        unknown["createRecovery"], true,
        "unknown emails get the same answer"
    );
    run(&app, "mutation { createRecovery(input: {email: \"olga@example.com\", url: \"http://localhost/reset\"}) }", json!({}), None)
        .await
        .ok();
    let mail = smtp.wait_for_message_to("olga@example.com", WAIT).await;
    let (user_id, secret) = (
        mail.link_param("userId").unwrap(),
        mail.link_param("secret").unwrap(),
    );
    assert!(smtp.messages_to("nobody@example.com").is_empty());

    let reset = "mutation($u: ID!, $s: String!, $p: String!) { updateRecovery(input: {userId: $u, secret: $s, password: $p}) }";
    let weak = run(
        &app,
        reset,
        json!({"u": user_id, "s": secret, "p": "short"}),
        None,
    )
    .await;
    assert_eq!(weak.code(), "PASSWORD_TOO_SHORT");
    // A refused password leaves the link usable; a new one works as well.
    run(&app, "mutation { createRecovery(input: {email: \"olga@example.com\", url: \"http://localhost/reset\"}) }", json!({}), None)
        .await
        .ok();
    let mail = smtp.wait_for_message_to("olga@example.com", WAIT).await;
    let secret = mail.link_param("secret").unwrap();
    run(
        &app,
        reset,
        json!({"u": user_id, "s": secret, "p": "brand-new-password"}),
        None,
    )
    .await
    .ok();
    assert_eq!(
        run(&app, "{ account { id } }", json!({}), Some(&session))
            .await
            .code(),
        "INVALID_SESSION"
    );
    run(
        &app,
        "mutation { createEmailPasswordSession(input: {email: \"olga@example.com\", password: \"brand-new-password\"}) { secret } }",
        json!({}),
        None,
    )
    .await
    .ok();
    app.shutdown().await;
}

#[tokio::test]
async fn magic_links_and_emailed_codes_sign_users_in() {
    let (app, smtp) = app_with_mail().await;
    let token = run(
        &app,
        "mutation { createMagicUrlToken(input: {email: \"pia@example.com\", url: \"http://localhost/magic\"}) { userId } }",
        json!({}),
        None,
    )
    .await
    .ok();
    let mail = smtp.wait_for_message_to("pia@example.com", WAIT).await;
    let user_id = mail.link_param("userId").unwrap();
    assert_eq!(
        token["createMagicUrlToken"]["userId"],
        Value::Null,
        "guests are not told user ids; the link carries it"
    );
    let create_session = "mutation($u: ID!, $s: String!) { createSession(input: {userId: $u, secret: $s}) { secret session { provider } } }";
    let signed = run(
        &app,
        create_session,
        json!({"u": user_id, "s": mail.link_param("secret").unwrap()}),
        None,
    )
    .await
    .ok();
    assert_eq!(signed["createSession"]["session"]["provider"], "magic-url");
    let session = signed["createSession"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let account = run(
        &app,
        "{ account { email emailVerified } }",
        json!({}),
        Some(&session),
    )
    .await
    .ok();
    assert_eq!(
        account["account"],
        json!({"email": "pia@example.com", "emailVerified": true})
    );

    run(
        &app,
        "mutation { createEmailToken(input: {email: \"pia@example.com\"}) { userId expiresAt } }",
        json!({}),
        None,
    )
    .await
    .ok();
    let mail = smtp.wait_for_message_to("pia@example.com", WAIT).await;
    let code = mail.first_code(6).expect("a 6-digit code");
    let wrong_code = if code == "000000" { "111111" } else { "000000" };
    assert_eq!(
        run(
            &app,
            create_session,
            json!({"u": user_id, "s": wrong_code}),
            None
        )
        .await
        .code(),
        "INVALID_TOKEN"
    );
    let by_code = run(&app, create_session, json!({"u": user_id, "s": code}), None)
        .await
        .ok();
    assert_eq!(by_code["createSession"]["session"]["provider"], "email-otp");

    app.admin(
        "mutation { updateProjectAuth(input: {projectId: \"default\", magicUrl: false}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let disabled = run(
        &app,
        "mutation { createMagicUrlToken(input: {email: \"pia@example.com\", url: \"http://localhost/magic\"}) { userId } }",
        json!({}),
        None,
    )
    .await;
    assert_eq!(disabled.code(), "AUTH_METHOD_DISABLED");
    app.shutdown().await;
}

#[tokio::test]
async fn without_smtp_mail_is_written_to_the_outbox_folder() {
    let app = crate::helpers::spawn_app().await;
    let session = account_with_session(&app, "quinn@example.com").await;
    run(
        &app,
        "mutation { createVerification(input: {url: \"http://localhost/verify\"}) { userId } }",
        json!({}),
        Some(&session),
    )
    .await
    .ok();
    // Mail is sent in the background: wait for it to land.
    let outbox = app.config.data_dir.join("outbox");
    let deadline = std::time::Instant::now() + WAIT;
    let (files, messages) = loop {
        let files: Vec<_> = std::fs::read_dir(&outbox)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        let messages: Vec<_> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|x| x == "eml"))
            .cloned()
            .collect();
        if !messages.is_empty() || std::time::Instant::now() > deadline {
            break (files, messages);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert_eq!(messages.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&messages[0]).unwrap();
    assert!(text.contains("To: quinn@example.com"), "{text}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_team_invitation_by_email_reaches_a_new_user_whose_link_signs_them_in() {
    let (app, smtp) = app_with_mail().await;
    let owner = account_with_session(&app, "olga@example.com").await;
    run(
        &app,
        "mutation { createTeam(input: {id: \"band\", name: \"The Band\"}) { id } }",
        json!({}),
        Some(&owner),
    )
    .await
    .ok();
    let invite = "mutation($input: CreateMembershipInput!) { createMembership(input: $input) { id userId email confirmed roles } }";

    // Inviting by email needs the page that accepts invitations, on an allowed host.
    let no_url = run(
        &app,
        invite,
        json!({"input": {"teamId": "band", "email": "new@example.com", "roles": ["drums"]}}),
        Some(&owner),
    )
    .await;
    assert_eq!(no_url.code(), "BAD_USER_INPUT");
    let foreign = run(&app, invite, json!({"input": {"teamId": "band", "email": "new@example.com", "roles": ["drums"], "url": "https://evil.example/join"}}), Some(&owner)).await;
    assert_eq!(foreign.code(), "INVALID_REDIRECT_URL");
    let nobody = app
        .admin(
            "{ users(search: \"new@example.com\") { totalCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        nobody["users"]["totalCount"], 0,
        "a refused invitation creates no user"
    );

    let invited = run(&app, invite, json!({"input": {"teamId": "band", "email": "New@Example.com", "name": "Nico", "roles": ["drums"], "url": "http://localhost/join"}}), Some(&owner))
        .await
        .ok();
    assert_eq!(invited["createMembership"]["confirmed"], false);
    // The invitation names the address; no user exists until it is accepted.
    assert_eq!(invited["createMembership"]["userId"], Value::Null);
    assert_eq!(invited["createMembership"]["email"], "new@example.com");
    let membership_id = invited["createMembership"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let mail = smtp.wait_for_message_to("new@example.com", WAIT).await;
    assert!(mail.subject().contains("The Band"), "{}", mail.subject());
    let link = mail.first_link().expect("a link");
    assert!(link.starts_with("http://localhost/join?"), "{link}");
    assert_eq!(
        mail.link_param("membershipId").as_deref(),
        Some(membership_id.as_str())
    );
    assert_eq!(mail.link_param("userId"), None);
    assert_eq!(mail.link_param("teamId").as_deref(), Some("band"));
    let secret = mail.link_param("secret").unwrap();

    let accept = "mutation($m: ID!, $s: String!) { updateMembershipStatus(input: {teamId: \"band\", membershipId: $m, secret: $s}) { membership { confirmed roles userId email } session { secret session { userId } } } }";
    let wrong = run(
        &app,
        accept,
        json!({"m": membership_id, "s": "not-the-secret"}),
        None,
    )
    .await;
    assert_eq!(wrong.code(), "INVALID_TOKEN");
    let accepted = run(&app, accept, json!({"m": membership_id, "s": secret}), None)
        .await
        .ok();
    let status = &accepted["updateMembershipStatus"];
    let user_id = status["session"]["session"]["userId"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        status["membership"],
        json!({"confirmed": true, "roles": ["drums"], "userId": user_id, "email": null})
    );
    let session = status["session"]["secret"].as_str().unwrap();
    let me = run(
        &app,
        "{ account { name email emailVerified } teams { nodes { id } } }",
        json!({}),
        Some(session),
    )
    .await
    .ok();
    assert_eq!(
        me["account"],
        json!({"name": "Nico", "email": "new@example.com", "emailVerified": true})
    );
    assert_eq!(me["teams"]["nodes"], json!([{"id": "band"}]));

    let replay = run(&app, accept, json!({"m": membership_id, "s": secret}), None).await;
    assert_eq!(replay.code(), "INVALID_TOKEN");

    // A server adds by email at once, without mail.
    let key = app.create_key("default", &["teams.write"]).await;
    let added = app
        .as_key(
            &key,
            "default",
            invite,
            json!({"input": {"teamId": "band", "email": "roadie@example.com", "roles": []}}),
        )
        .await
        .ok();
    assert_eq!(added["createMembership"]["confirmed"], true);
    assert!(smtp.messages_to("roadie@example.com").is_empty());
}
