//! An invitation by email creates no account for an address nobody proved: the
//! membership names the address until the emailed link is accepted, which creates
//! the user (email verified) or claims the unverified one, and signs them in. An
//! email the relay cannot take yet is retried until it can; pending invitations by
//! email are listed, renewed, deleted and announced like any membership, and a
//! signed-in user may accept one only for an address they verified.

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, WAIT, WsClient, spawn_with, test_config};
use crate::smtp_server::TestSmtp;

const INVITE: &str = "mutation($input: CreateMembershipInput!) { createMembership(input: $input) { id userId email confirmed roles } }";
const ACCEPT_LINK: &str = "mutation($t: ID!, $m: ID!, $s: String!) { updateMembershipStatus(input: {teamId: $t, membershipId: $m, secret: $s}) { membership { id userId email confirmed roles } session { secret session { userId } } } }";
const ACCEPT_SIGNED_IN: &str = "mutation($t: ID!, $m: ID!) { updateMembershipStatus(input: {teamId: $t, membershipId: $m}) { membership { id userId email confirmed } } }";
const USERS: &str = "{ users { totalCount nodes { id email emailVerified } } }";

async fn app_with_smtp(smtp_url: String) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.smtp_url = Some(smtp_url);
    spawn_with(config, dir).await
}

async fn owner_of(app: &TestApp, email: &str, team: &str) -> String {
    let owner = app.signed_in(email).await;
    app.as_session(
        &owner,
        "mutation($t: ID!) { createTeam(input: {id: $t, name: \"The Band\"}) { id } }",
        json!({"t": team}),
    )
    .await
    .ok();
    owner
}

fn invitation(team: &str, email: &str, role: &str) -> Value {
    json!({"input": {"teamId": team, "email": email, "name": "Nico", "roles": [role], "url": "http://localhost/join"}})
}

async fn users(app: &TestApp) -> Value {
    app.admin(USERS, json!({})).await.ok()["users"].clone()
}

/// `owner` invites `email` to `team` by mail: the membership, and the secret of
/// the link mailed.
async fn invite_by_mail(
    app: &TestApp,
    smtp: &TestSmtp,
    owner: &str,
    team: &str,
    email: &str,
    role: &str,
) -> (Value, String) {
    let invited = app
        .as_session(owner, INVITE, invitation(team, email, role))
        .await
        .ok()["createMembership"]
        .clone();
    let secret = smtp
        .wait_for_message_to(email, WAIT)
        .await
        .link_param("secret")
        .unwrap();
    (invited, secret)
}

async fn accept_link(app: &TestApp, team: &str, membership: &Value, secret: &str) -> Answer {
    app.post(
        json!({"query": ACCEPT_LINK, "variables": {"t": team, "m": membership, "s": secret}}),
        &[],
    )
    .await
}

#[tokio::test]
async fn inviting_a_new_email_creates_no_user_until_the_link_makes_one_verified_and_signed_in() {
    let smtp = TestSmtp::start().await;
    let app = app_with_smtp(smtp.url.clone()).await;
    let owner = owner_of(&app, "olga@example.com", "band").await;
    let before = users(&app).await;
    assert_eq!(before["totalCount"], 1);

    let invited = app
        .as_session(
            &owner,
            INVITE,
            invitation("band", "New@Example.com", "drums"),
        )
        .await
        .ok()["createMembership"]
        .clone();
    assert_eq!(
        (&invited["userId"], &invited["email"], &invited["confirmed"]),
        (&Value::Null, &json!("new@example.com"), &json!(false))
    );
    assert_eq!(users(&app).await, before, "inviting creates no user");

    // The owner sees the pending invitation with the address it went to.
    let listed = app
        .as_session(
            &owner,
            "{ memberships(teamId: \"band\") { id userId email confirmed } }",
            json!({}),
        )
        .await
        .ok();
    let pending: Vec<&Value> = listed["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["confirmed"] == false)
        .collect();
    assert_eq!(
        pending,
        [
            &json!({"id": invited["id"], "userId": null, "email": "new@example.com", "confirmed": false})
        ]
    );

    let mail = smtp.wait_for_message_to("new@example.com", WAIT).await;
    assert_eq!(mail.link_param("userId"), None, "the link names no account");
    assert_eq!(
        mail.link_param("membershipId").as_deref(),
        invited["id"].as_str()
    );
    let secret = mail.link_param("secret").unwrap();
    let wrong = accept_link(&app, "band", &invited["id"], "not-the-secret").await;
    assert_eq!(wrong.code(), "INVALID_TOKEN");
    assert_eq!(users(&app).await, before, "a wrong secret creates no user");

    let accepted = accept_link(&app, "band", &invited["id"], &secret)
        .await
        .ok()["updateMembershipStatus"]
        .clone();
    let user_id = accepted["session"]["session"]["userId"]
        .as_str()
        .expect("signed in")
        .to_string();
    assert_eq!(
        accepted["membership"],
        json!({"id": invited["id"], "userId": user_id, "email": null, "confirmed": true, "roles": ["drums"]})
    );
    let after = users(&app).await;
    assert_eq!(after["totalCount"], 2, "exactly one user is created");
    let created: Vec<&Value> = after["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["email"] == "new@example.com")
        .collect();
    assert_eq!(
        created,
        [&json!({"id": user_id, "email": "new@example.com", "emailVerified": true})]
    );
    let session = accepted["session"]["secret"].as_str().unwrap();
    let me = app
        .as_session(
            session,
            "{ account { id name emailVerified } teams { totalCount nodes { id } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        me["account"],
        json!({"id": user_id, "name": "Nico", "emailVerified": true})
    );
    assert_eq!(
        me["teams"],
        json!({"totalCount": 1, "nodes": [{"id": "band"}]})
    );
    // The member's role `member:ID` is theirs now.
    let roles = app
        .as_session(
            session,
            "{ memberships(teamId: \"band\") { id userId } }",
            json!({}),
        )
        .await
        .ok();
    assert!(
        roles["memberships"]
            .as_array()
            .unwrap()
            .contains(&json!({"id": invited["id"], "userId": user_id})),
        "{roles}"
    );

    let replay = accept_link(&app, "band", &invited["id"], &secret).await;
    assert_eq!(replay.code(), "INVALID_TOKEN");
    assert_eq!(users(&app).await["totalCount"], 2);
    app.shutdown().await;
}

#[tokio::test]
async fn an_invitation_mailed_while_the_relay_is_down_stays_pending_and_arrives_later() {
    // A relay nobody listens on yet.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
    config.jobs_retry_base_ms = 100;
    let app = spawn_with(config, dir).await;
    let owner = owner_of(&app, "olga@example.com", "band").await;
    let before = users(&app).await;

    let invited = app
        .as_session(
            &owner,
            INVITE,
            invitation("band", "nico@example.com", "drums"),
        )
        .await
        .ok()["createMembership"]
        .clone();
    assert_eq!(users(&app).await, before, "no user until the link is used");
    let listed = app
        .as_session(
            &owner,
            "{ memberships(teamId: \"band\") { email confirmed } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        listed["memberships"],
        json!([{"email": null, "confirmed": true}, {"email": "nico@example.com", "confirmed": false}]),
    );

    // The relay comes back: the queued email arrives, and its link works.
    let smtp = TestSmtp::start_on(port).await;
    let secret = smtp
        .wait_for_message_to("nico@example.com", WAIT)
        .await
        .link_param("secret")
        .unwrap();
    let accepted = accept_link(&app, "band", &invited["id"], &secret)
        .await
        .ok();
    assert_eq!(
        accepted["updateMembershipStatus"]["membership"]["confirmed"],
        true
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_pending_email_invitation_is_renewed_deleted_and_announced_like_any_membership() {
    let smtp = TestSmtp::start().await;
    let app = app_with_smtp(smtp.url.clone()).await;
    let owner = owner_of(&app, "olga@example.com", "band").await;
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"Authorization": format!("Bearer {owner}")}))
        .await
        .expect("ack");
    ws.subscribe(
        "1",
        "subscription { realtime(channels: [\"teams\", \"memberships\"]) { events payload } }",
    )
    .await;
    // Live once the owner hears of a change to the team.
    let deadline = std::time::Instant::now() + WAIT;
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
        assert!(std::time::Instant::now() < deadline, "no team event");
    }
    while ws.socket_next_within_short_time().await.is_some() {}

    let first = app
        .as_session(
            &owner,
            INVITE,
            invitation("band", "nico@example.com", "drums"),
        )
        .await
        .ok()["createMembership"]
        .clone();
    let id = first["id"].as_str().unwrap().to_string();
    let created = next_membership_event(&mut ws).await;
    assert_eq!(
        created["events"][0],
        format!("teams.band.memberships.{id}.create")
    );
    assert_eq!(
        (&created["payload"]["userId"], &created["payload"]["email"]),
        (&Value::Null, &json!("nico@example.com"))
    );
    let old_secret = smtp
        .wait_for_message_to("nico@example.com", WAIT)
        .await
        .link_param("secret")
        .unwrap();

    // Re-sent: the same invitation, new roles, a new secret; the old link fails.
    let second = app
        .as_session(
            &owner,
            INVITE,
            invitation("band", "nico@example.com", "bass"),
        )
        .await
        .ok()["createMembership"]
        .clone();
    assert_eq!(
        (&second["id"], &second["roles"], &second["userId"]),
        (&first["id"], &json!(["bass"]), &Value::Null)
    );
    let renewed = next_membership_event(&mut ws).await;
    assert_eq!(
        renewed["events"][0],
        format!("teams.band.memberships.{id}.update")
    );
    let stale = accept_link(&app, "band", &first["id"], &old_secret).await;
    assert_eq!(stale.code(), "INVALID_TOKEN");
    let new_secret = smtp
        .wait_for_message_to("nico@example.com", WAIT)
        .await
        .link_param("secret")
        .unwrap();
    assert_ne!(new_secret, old_secret);

    // Deleting the pending invitation voids its link; still no user exists.
    let deleted = app
        .as_session(
            &owner,
            "mutation($m: ID!) { deleteMembership(input: {teamId: \"band\", membershipId: $m}) { deletedId } }",
            json!({"m": id}),
        )
        .await
        .ok();
    assert_eq!(deleted["deleteMembership"]["deletedId"], id.as_str());
    let gone = next_membership_event(&mut ws).await;
    assert_eq!(
        gone["events"][0],
        format!("teams.band.memberships.{id}.delete")
    );
    let void = accept_link(&app, "band", &first["id"], &new_secret).await;
    assert_eq!(void.code(), "MEMBERSHIP_NOT_FOUND", "{}", void.body);
    assert_eq!(users(&app).await["totalCount"], 1);
    app.shutdown().await;
}

#[tokio::test]
async fn an_invitation_link_used_while_signed_in_as_someone_else_is_refused() {
    let smtp = TestSmtp::start().await;
    let app = app_with_smtp(smtp.url.clone()).await;
    // Mallory invites a mailbox of hers and hands the link to Alice, signed in.
    let mallory = owner_of(&app, "mallory@example.com", "trap").await;
    let (invited, secret) = invite_by_mail(
        &app,
        &smtp,
        &mallory,
        "trap",
        "mallory-2@example.com",
        "member",
    )
    .await;
    let alice = app.signed_in("alice@example.com").await;
    let variables = json!({"t": "trap", "m": invited["id"], "s": secret});
    let refused = app.as_session(&alice, ACCEPT_LINK, variables.clone()).await;
    assert_eq!(refused.code(), "TEAM_INVITE_MISMATCH");
    assert!(
        refused.body["data"].is_null() || refused.body["data"]["updateMembershipStatus"].is_null(),
        "{}",
        refused.body
    );
    // Alice stays herself, and the link was not used up.
    let me = app
        .as_session(&alice, "{ account { email } }", json!({}))
        .await
        .ok();
    assert_eq!(me["account"]["email"], "alice@example.com");
    let accepted = accept_link(&app, "trap", &invited["id"], &secret)
        .await
        .ok();
    assert_eq!(
        accepted["updateMembershipStatus"]["membership"]["confirmed"],
        true
    );
    app.shutdown().await;
}

/// The next realtime event about a membership, within [`WAIT`].
async fn next_membership_event(ws: &mut WsClient) -> Value {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next_json())
            .await
            .expect("an event in time")
            .expect("the socket stays open");
        let event = &message["payload"]["data"]["realtime"];
        if message["type"] == "next"
            && event["events"][0]
                .as_str()
                .is_some_and(|e| e.contains(".memberships."))
        {
            return event.clone();
        }
    }
}

#[tokio::test]
async fn only_a_verified_address_or_the_link_accepts_an_invitation_by_email() {
    let smtp = TestSmtp::start().await;
    let app = app_with_smtp(smtp.url.clone()).await;
    let owner = owner_of(&app, "olga@example.com", "band").await;
    let (invited, secret) =
        invite_by_mail(&app, &smtp, &owner, "band", "vic@example.com", "drums").await;

    // Someone registers the invited address without holding the mailbox: signed
    // in, they cannot accept, and inviting the address again does not link them.
    let squatter = app.signed_in("vic@example.com").await;
    let refused = app
        .as_session(
            &squatter,
            ACCEPT_SIGNED_IN,
            json!({"t": "band", "m": invited["id"]}),
        )
        .await;
    assert_eq!(refused.code(), "MEMBERSHIP_NOT_FOUND", "{}", refused.body);
    let again = app
        .as_session(
            &owner,
            INVITE,
            invitation("band", "vic@example.com", "drums"),
        )
        .await
        .ok()["createMembership"]
        .clone();
    assert_eq!(
        (&again["id"], &again["userId"]),
        (&invited["id"], &Value::Null)
    );
    let secret = smtp
        .wait_for_message_to("vic@example.com", WAIT)
        .await
        .link_param("secret")
        .filter(|s| *s != secret)
        .expect("a new link");

    // The link proves the mailbox: it claims the unverified account (its password
    // and sessions go) and signs the owner of the mailbox in.
    let squatter_id = app
        .as_session(&squatter, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .clone();
    let accepted = accept_link(&app, "band", &invited["id"], &secret)
        .await
        .ok()["updateMembershipStatus"]
        .clone();
    assert_eq!(accepted["session"]["session"]["userId"], squatter_id);
    assert_eq!(accepted["membership"]["userId"], squatter_id);
    let kicked = app
        .as_session(&squatter, "{ account { id } }", json!({}))
        .await;
    assert_eq!(kicked.code(), "INVALID_SESSION", "{}", kicked.body);
    let session = accepted["session"]["secret"].as_str().unwrap();
    let me = app
        .as_session(session, "{ account { emailVerified } }", json!({}))
        .await
        .ok();
    assert_eq!(me["account"]["emailVerified"], true);
    assert_eq!(users(&app).await["totalCount"], 2);

    // A user whose verified email was invited may accept signed in.
    let pia = app.signed_in("pia@example.com").await;
    let pia_id = app
        .as_session(&pia, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .clone();
    let invited = app
        .as_session(
            &owner,
            INVITE,
            invitation("band", "pia@example.com", "keys"),
        )
        .await
        .ok()["createMembership"]
        .clone();
    assert_eq!(
        invited["userId"],
        Value::Null,
        "pia's email is not verified yet"
    );
    let key = app.create_key("default", &["users.write"]).await;
    app.as_key(
        &key,
        "default",
        "mutation($u: ID!) { updateUser(input: {id: $u, emailVerified: true}) { id } }",
        json!({"u": pia_id}),
    )
    .await
    .ok();
    let joined = app
        .as_session(
            &pia,
            ACCEPT_SIGNED_IN,
            json!({"t": "band", "m": invited["id"]}),
        )
        .await
        .ok();
    assert_eq!(
        joined["updateMembershipStatus"]["membership"],
        json!({"id": invited["id"], "userId": pia_id, "email": null, "confirmed": true})
    );
    let teams = app
        .as_session(&pia, "{ teams { nodes { id } } }", json!({}))
        .await
        .ok();
    assert_eq!(teams["teams"]["nodes"], json!([{"id": "band"}]));
    app.shutdown().await;
}

/// An invitation's link signs its holder in as the invitee: it works for a week
/// from when it was sent (a change of roles does not extend it), and not after the invitee's email or password changed (whoever still reads the
/// old mailbox, or knew the old password, holds the old link).
#[tokio::test]
async fn an_invitation_link_expires_and_dies_with_the_invitees_old_email() {
    let smtp = TestSmtp::start().await;
    let app = app_with_smtp(smtp.url.clone()).await;
    let owner = owner_of(&app, "ola@example.com", "crew").await;
    let pia = app.signed_in("pia@example.com").await;
    let pia_id = app
        .as_session(&pia, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .clone();
    let invited = app
        .as_session(
            &owner,
            INVITE,
            json!({"input": {"teamId": "crew", "userId": pia_id, "roles": ["deck"], "url": "http://localhost/join"}}),
        )
        .await
        .ok()["createMembership"]
        .clone();
    let mail = smtp.wait_for_message_to("pia@example.com", WAIT).await;
    let secret = mail.link_param("secret").unwrap();
    app.as_session(
        &pia,
        "mutation { updateEmail(input: {email: \"pia-new@example.com\", password: \"db-password-1\"}) { email } }",
        json!({}),
    )
    .await
    .ok();
    let stale = accept_link(&app, "crew", &invited["id"], &secret).await;
    assert_eq!(stale.code(), "INVALID_TOKEN", "{:#}", stale.body);

    // A week-old link to a new address.
    let invited = app
        .as_session(
            &owner,
            INVITE,
            invitation("crew", "quin@example.com", "deck"),
        )
        .await
        .ok()["createMembership"]
        .clone();
    let mail = smtp.wait_for_message_to("quin@example.com", WAIT).await;
    let secret = mail.link_param("secret").unwrap();
    let state = app.server.as_ref().unwrap().state().clone();
    sqlx::query("UPDATE memberships SET invited_at = invited_at - ? WHERE id = ?")
        .bind(8i64 * 24 * 3600 * 1000)
        .bind(invited["id"].as_str().unwrap())
        .execute(state.db.pool())
        .await
        .unwrap();
    // A change of roles since is not a new invitation: the link stays expired.
    let changed = app
        .as_session(
            &owner,
            "mutation($t: ID!, $m: ID!) { updateMembership(input: {teamId: $t, membershipId: $m, roles: [\"helm\"]}) { roles invitedAt updatedAt } }",
            json!({"t": "crew", "m": invited["id"]}),
        )
        .await
        .ok()["updateMembership"]
        .clone();
    assert_eq!(changed["roles"], json!(["helm"]));
    assert!(
        changed["invitedAt"].as_str().unwrap() < changed["updatedAt"].as_str().unwrap(),
        "{changed}"
    );
    let expired = accept_link(&app, "crew", &invited["id"], &secret).await;
    assert_eq!(expired.code(), "INVALID_TOKEN", "{:#}", expired.body);
    assert!(
        expired.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
    app.shutdown().await;
}

/// A signed-in user whose email a server marked verified: their session and id.
async fn signed_in_verified(app: &TestApp, email: &str) -> (String, Value) {
    let session = app.signed_in(email).await;
    let id = app
        .as_session(&session, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .clone();
    let key = app.create_key("default", &["users.write"]).await;
    app.as_key(
        &key,
        "default",
        "mutation($u: ID!) { updateUser(input: {id: $u, emailVerified: true}) { id } }",
        json!({"u": id}),
    )
    .await
    .ok();
    (session, id)
}

/// Any signed-in user can make a team and invite: an invitation by email must not
/// tell them whether the address has an account, nor its id.
#[tokio::test]
async fn an_owners_invitation_by_email_tells_nothing_of_the_addresss_account() {
    let smtp = TestSmtp::start().await;
    let app = app_with_smtp(smtp.url.clone()).await;
    let owner = owner_of(&app, "omar@example.com", "band").await;
    let (vera, vera_id) = signed_in_verified(&app, "vera@example.com").await;
    let invite = |email: &'static str| {
        let app = &app;
        let owner = owner.clone();
        async move {
            app.as_session(&owner, INVITE, invitation("band", email, "keys"))
                .await
                .ok()["createMembership"]
                .clone()
        }
    };
    let verified = invite("vera@example.com").await;
    let nobody = invite("nobody@example.com").await;
    for (invited, email) in [
        (&verified, "vera@example.com"),
        (&nobody, "nobody@example.com"),
    ] {
        assert_eq!(
            (&invited["userId"], &invited["email"], &invited["confirmed"]),
            (&Value::Null, &json!(email), &json!(false)),
            "{invited}"
        );
    }
    let listed = app
        .as_session(
            &owner,
            "{ memberships(teamId: \"band\") { userId email } }",
            json!({}),
        )
        .await
        .ok();
    assert!(
        !listed.to_string().contains(vera_id.as_str().unwrap()),
        "{listed}"
    );
    // Vera accepts signed in; inviting her address again is inviting a member.
    let joined = app
        .as_session(
            &vera,
            ACCEPT_SIGNED_IN,
            json!({"t": "band", "m": verified["id"]}),
        )
        .await
        .ok();
    assert_eq!(
        joined["updateMembershipStatus"]["membership"]["userId"],
        vera_id
    );
    let again = app
        .as_session(
            &owner,
            INVITE,
            invitation("band", "vera@example.com", "keys"),
        )
        .await;
    assert_eq!(
        again.code(),
        "MEMBERSHIP_ALREADY_EXISTS",
        "{:#}",
        again.body
    );
    // Invited by id while the user's address has an invitation waiting: a membership
    // of its own, not the address's (which would tell whose address it is).
    let (_, walt_id) = signed_in_verified(&app, "walt@example.com").await;
    let by_address = invite("walt@example.com").await;
    let by_id = app
        .as_session(
            &owner,
            INVITE,
            json!({"input": {"teamId": "band", "userId": walt_id, "roles": ["keys"]}}),
        )
        .await
        .ok()["createMembership"]
        .clone();
    assert_ne!(by_id["id"], by_address["id"]);
    assert_eq!(by_id["userId"], walt_id);
    assert_eq!(by_id["email"], Value::Null);
    app.shutdown().await;
}
