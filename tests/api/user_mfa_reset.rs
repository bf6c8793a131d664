//! A server removing a user's second factor (`deleteUserMfaAuthenticator`): the way
//! back in for a user who lost their authenticator app, and only with `users.write`.

use serde_json::json;

use crate::helpers::{enrol_totp, spawn_app};

#[tokio::test]
async fn a_server_removes_a_users_authenticator_and_recovery_codes() {
    let app = spawn_app().await;
    let email = "lost-phone@example.com";
    let password = "Lost-Phone-Harbor-41";
    app.post(
        json!({"query": "mutation($e: String!, $p: String!) { createAccount(input: {email: $e, password: $p}) { id } }",
               "variables": {"e": email, "p": password}}),
        &[],
    )
    .await
    .ok();
    let sign_in = || app.password_session(email, password);
    let first = sign_in().await;
    enrol_totp(&app, &first).await;
    app.as_session(&first, "mutation { createMfaRecoveryCodes }", json!({}))
        .await
        .ok();
    app.as_session(
        &first,
        "mutation { updateMfa(input: {enabled: true}) { mfa } }",
        json!({}),
    )
    .await
    .ok();
    let user_id = app
        .as_session(&first, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let locked = sign_in().await;
    assert_eq!(
        app.as_session(&locked, "{ account { id } }", json!({}))
            .await
            .code(),
        "MFA_REQUIRED"
    );

    let reset = "mutation($u: ID!) { deleteUserMfaAuthenticator(input: {userId: $u}) { id mfa } }";
    let reader = app.create_key("default", &["users.read"]).await;
    let refused = app
        .as_key(&reader, "default", reset, json!({"u": user_id}))
        .await;
    assert_eq!(refused.code(), "SCOPE_MISSING");
    let missing = app.admin(reset, json!({"u": "nobody"})).await;
    assert_eq!(missing.code(), "USER_NOT_FOUND");

    let writer = app.create_key("default", &["users.write"]).await;
    let done = app
        .as_key(&writer, "default", reset, json!({"u": user_id}))
        .await
        .ok();
    assert_eq!(
        done["deleteUserMfaAuthenticator"],
        json!({"id": user_id, "mfa": false})
    );

    // The session that owed a second factor no longer does, and a new sign-in
    // finds no authenticator and no recovery codes left to use.
    app.as_session(&locked, "{ account { id } }", json!({}))
        .await
        .ok();
    let after = sign_in().await;
    let factors = app
        .as_session(
            &after,
            "{ accountMfaFactors { totp recoveryCode } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        factors["accountMfaFactors"],
        json!({"totp": false, "recoveryCode": false})
    );
    // MFA cannot be turned back on without confirming a new authenticator.
    let again = app
        .as_session(
            &after,
            "mutation { updateMfa(input: {enabled: true}) { mfa } }",
            json!({}),
        )
        .await;
    assert_eq!(again.code(), "OPERATION_NOT_ALLOWED");
    app.shutdown().await;
}
