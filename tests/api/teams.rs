//! Teams and memberships, and the roles they give.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

async fn signed_in_user(app: &TestApp, email: &str) -> (String, String) {
    let created = app
        .post(
            json!({"query": "mutation($e: String!) { createAccount(input: {email: $e, password: \"team-password\"}) { id } }", "variables": {"e": email}}),
            &[],
        )
        .await
        .ok();
    let signed = app
        .post(
            json!({"query": "mutation($e: String!) { createEmailPasswordSession(input: {email: $e, password: \"team-password\"}) { secret } }", "variables": {"e": email}}),
            &[],
        )
        .await
        .ok();
    (
        created["createAccount"]["id"].as_str().unwrap().to_string(),
        signed["createEmailPasswordSession"]["secret"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

#[tokio::test]
async fn a_user_creates_a_team_invites_a_member_who_accepts() {
    let app = spawn_app().await;
    let (_, owner) = signed_in_user(&app, "owner@example.com").await;
    let (member_id, member) = signed_in_user(&app, "member@example.com").await;
    let (_, outsider) = signed_in_user(&app, "outsider@example.com").await;

    let team = app
        .as_session(
            &owner,
            "mutation { createTeam(input: {id: \"crew\", name: \"Crew\"}) { id name } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(team["createTeam"], json!({"id": "crew", "name": "Crew"}));
    let owned = app.as_session(&owner,
        "{ teams { totalCount nodes { id } } memberships(teamId: \"crew\") { roles confirmed } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(owned["teams"]["totalCount"], 1);
    assert_eq!(
        owned["memberships"],
        json!([{"roles": ["owner"], "confirmed": true}])
    );

    let invite = app.as_session(&owner,
        "mutation($u: ID!) { createMembership(input: {teamId: \"crew\", userId: $u, roles: [\"editor\"]}) { id confirmed } }",
        json!({"u": member_id}),
    )
    .await
    .ok();
    assert_eq!(invite["createMembership"]["confirmed"], false);
    let membership_id = invite["createMembership"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    let total = app
        .as_session(&owner, "{ team(id: \"crew\") { total } }", json!({}))
        .await
        .ok();
    assert_eq!(
        total["team"]["total"], 1,
        "an invitation waits outside the count"
    );

    // An invitation grants nothing: the team stays invisible until accepted.
    let before = app
        .as_session(&member, "{ teams { totalCount } }", json!({}))
        .await
        .ok();
    assert_eq!(before["teams"]["totalCount"], 0);
    let hidden = app
        .as_session(&member, "{ team(id: \"crew\") { id } }", json!({}))
        .await;
    assert_eq!(hidden.code(), "TEAM_NOT_FOUND");
    let stolen = app.as_session(&outsider,
        "mutation($m: ID!) { updateMembershipStatus(input: {teamId: \"crew\", membershipId: $m}) { membership { confirmed } } }",
        json!({"m": membership_id}),
    )
    .await;
    assert_eq!(stolen.code(), "MEMBERSHIP_NOT_FOUND");

    let accepted = app.as_session(&member,
        "mutation($m: ID!) { updateMembershipStatus(input: {teamId: \"crew\", membershipId: $m}) { membership { confirmed joinedAt } session { secret } } }",
        json!({"m": membership_id}),
    )
    .await
    .ok();
    assert_eq!(
        accepted["updateMembershipStatus"]["membership"]["confirmed"],
        true
    );
    assert_eq!(accepted["updateMembershipStatus"]["session"], Value::Null);
    // One membership, read by id by a member; nobody outside the team reads it.
    let one =
        "query($m: ID!) { membership(teamId: \"crew\", id: $m) { id userId roles confirmed } }";
    let read = app
        .as_session(&member, one, json!({"m": membership_id}))
        .await
        .ok();
    assert_eq!(
        read["membership"],
        json!({"id": membership_id, "userId": member_id, "roles": ["editor"], "confirmed": true})
    );
    let outside = app
        .as_session(&outsider, one, json!({"m": membership_id}))
        .await;
    assert_eq!(outside.code(), "TEAM_NOT_FOUND", "{:#}", outside.body);
    let missing = app.as_session(&member, one, json!({"m": "nope"})).await;
    assert_eq!(missing.code(), "MEMBERSHIP_NOT_FOUND", "{:#}", missing.body);
    // The member's and the team's names come with it, as Appwrite's membership has them.
    app.as_session(
        &member,
        "mutation { updateName(input: {name: \"Mia\"}) { name } }",
        json!({}),
    )
    .await
    .ok();
    let named = app
        .as_session(
            &member,
            "query($m: ID!) { membership(teamId: \"crew\", id: $m) { userName teamName } }",
            json!({"m": membership_id}),
        )
        .await
        .ok();
    assert_eq!(
        named["membership"],
        json!({"userName": "Mia", "teamName": "Crew"})
    );
    let after = app
        .as_session(&member, "{ teams { nodes { id name } } }", json!({}))
        .await
        .ok();
    assert_eq!(
        after["teams"]["nodes"],
        json!([{"id": "crew", "name": "Crew"}])
    );

    // Only owners manage the team.
    let rename = app
        .as_session(
            &member,
            "mutation { updateTeamName(input: {id: \"crew\", name: \"Mine\"}) { name } }",
            json!({}),
        )
        .await;
    assert_eq!(rename.code(), "PERMISSION_DENIED");
    let outsider_sees = app
        .as_session(
            &outsider,
            "{ memberships(teamId: \"crew\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(outsider_sees.code(), "TEAM_NOT_FOUND");
    let renamed = app
        .as_session(
            &owner,
            "mutation { updateTeamName(input: {id: \"crew\", name: \"The Crew\"}) { name } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(renamed["updateTeamName"]["name"], "The Crew");

    // Preferences: an owner sets them, every member reads them.
    let prefs =
        "mutation($p: JSON!) { updateTeamPrefs(input: {id: \"crew\", prefs: $p}) { prefs } }";
    let unset = app
        .as_session(&member, "{ team(id: \"crew\") { prefs } }", json!({}))
        .await
        .ok();
    assert_eq!(unset["team"]["prefs"], json!({}));
    let refused = app
        .as_session(&member, prefs, json!({"p": {"theme": "mine"}}))
        .await;
    assert_eq!(refused.code(), "PERMISSION_DENIED", "{:#}", refused.body);
    let set = app
        .as_session(
            &owner,
            prefs,
            json!({"p": {"theme": "dark", "seats": [1, 2]}}),
        )
        .await
        .ok();
    assert_eq!(
        set["updateTeamPrefs"]["prefs"],
        json!({"theme": "dark", "seats": [1, 2]})
    );
    let read = app
        .as_session(&member, "{ teams { nodes { prefs } } }", json!({}))
        .await
        .ok();
    assert_eq!(read["teams"]["nodes"][0]["prefs"]["theme"], "dark");
    let huge = app
        .as_session(&owner, prefs, json!({"p": {"blob": "x".repeat(70_000)}}))
        .await;
    assert_eq!(huge.code(), "PREFS_TOO_LARGE", "{:#}", huge.body);

    // The member leaves; the team is theirs no more.
    app.as_session(&member,
        "mutation($m: ID!) { deleteMembership(input: {teamId: \"crew\", membershipId: $m}) { deletedId } }",
        json!({"m": membership_id}),
    )
    .await
    .ok();
    let left = app
        .as_session(&member, "{ teams { totalCount } }", json!({}))
        .await
        .ok();
    assert_eq!(left["teams"]["totalCount"], 0);

    app.as_session(
        &owner,
        "mutation { deleteTeam(input: {id: \"crew\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    let gone = app
        .as_session(&owner, "{ teams { totalCount } }", json!({}))
        .await
        .ok();
    assert_eq!(gone["teams"]["totalCount"], 0);
    app.shutdown().await;
}

#[tokio::test]
async fn servers_manage_every_team_and_add_members_directly() {
    let app = spawn_app().await;
    let (user_id, user) = signed_in_user(&app, "direct@example.com").await;
    let key = app
        .create_key("default", &["teams.read", "teams.write"])
        .await;
    let created = app
        .as_key(
            &key,
            "default",
            "mutation { createTeam(input: {id: \"ops\", name: \"Ops\"}) { id } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(created["createTeam"]["id"], "ops");
    let empty = app
        .as_key(
            &key,
            "default",
            "{ memberships(teamId: \"ops\") { id } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        empty["memberships"],
        json!([]),
        "a server creating a team does not join it"
    );

    // The user's session is cached before the membership: the new role must show at once.
    app.as_session(&user, "{ teams { totalCount } }", json!({}))
        .await
        .ok();
    let added = app
        .as_key(&key, "default", "mutation($u: ID!) { createMembership(input: {teamId: \"ops\", userId: $u, roles: [\"owner\"]}) { id confirmed roles } }", json!({"u": user_id}))
        .await
        .ok();
    assert_eq!(added["createMembership"]["confirmed"], true);
    let membership_id = added["createMembership"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let visible = app
        .as_session(&user, "{ teams { nodes { id } } }", json!({}))
        .await
        .ok();
    assert_eq!(visible["teams"]["nodes"], json!([{"id": "ops"}]));

    let duplicate = app
        .as_key(&key, "default", "mutation($u: ID!) { createMembership(input: {teamId: \"ops\", userId: $u, roles: []}) { id } }", json!({"u": user_id}))
        .await;
    assert_eq!(duplicate.code(), "MEMBERSHIP_ALREADY_EXISTS");
    let bad_role = app
        .as_key(&key, "default", "mutation($u: ID!) { updateMembership(input: {teamId: \"ops\", membershipId: $u, roles: [\"no spaces\"]}) { id } }", json!({"u": membership_id}))
        .await;
    assert_eq!(bad_role.code(), "BAD_USER_INPUT");
    let demoted = app
        .as_key(&key, "default", "mutation($m: ID!) { updateMembership(input: {teamId: \"ops\", membershipId: $m, roles: [\"viewer\"]}) { roles } }", json!({"m": membership_id}))
        .await
        .ok();
    assert_eq!(demoted["updateMembership"]["roles"], json!(["viewer"]));
    // Roles keep the order given, as Appwrite keeps them; a repeated one counts once.
    let ordered = app
        .as_key(&key, "default", "mutation($m: ID!) { updateMembership(input: {teamId: \"ops\", membershipId: $m, roles: [\"writer\", \"viewer\", \"writer\", \"admin\"]}) { roles } }", json!({"m": membership_id}))
        .await
        .ok();
    assert_eq!(
        ordered["updateMembership"]["roles"],
        json!(["writer", "viewer", "admin"])
    );
    let not_owner = app
        .as_session(
            &user,
            "mutation { deleteTeam(input: {id: \"ops\"}) { deletedId } }",
            json!({}),
        )
        .await;
    assert_eq!(not_owner.code(), "PERMISSION_DENIED");

    let reader = app.create_key("default", &["teams.read"]).await;
    let refused = app
        .as_key(
            &reader,
            "default",
            "mutation { deleteTeam(input: {id: \"ops\"}) { deletedId } }",
            json!({}),
        )
        .await;
    assert_eq!(refused.code(), "SCOPE_MISSING");
    let guest = app
        .post(json!({"query": "{ teams { totalCount } }"}), &[])
        .await;
    assert_eq!(guest.code(), "UNAUTHENTICATED");
    app.shutdown().await;
}

/// A user's change never leaves a team without an owner, even two owners stepping
/// down at once; a server may.
#[tokio::test]
async fn a_team_keeps_an_owner_while_users_change_it() {
    let app = spawn_app().await;
    let (_, first) = signed_in_user(&app, "first-owner@example.com").await;
    let (second_id, second) = signed_in_user(&app, "second-owner@example.com").await;
    let key = app
        .create_key("default", &["teams.read", "teams.write"])
        .await;
    app.as_session(
        &first,
        "mutation { createTeam(input: {id: \"guild\", name: \"Guild\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let own = |secret: String| {
        let app = &app;
        async move {
            let listed = app
                .as_session(
                    &secret,
                    "{ account { id } memberships(teamId: \"guild\") { id userId roles } }",
                    json!({}),
                )
                .await
                .ok();
            let me = listed["account"]["id"].clone();
            let mine = listed["memberships"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["userId"] == me)
                .cloned()
                .unwrap();
            mine["id"].as_str().unwrap().to_string()
        }
    };
    let first_membership = own(first.clone()).await;

    let leave = "mutation($m: ID!) { deleteMembership(input: {teamId: \"guild\", membershipId: $m}) { deletedId } }";
    let demote = "mutation($m: ID!) { updateMembership(input: {teamId: \"guild\", membershipId: $m, roles: [\"editor\"]}) { roles } }";
    let alone = app
        .as_session(&first, leave, json!({"m": first_membership}))
        .await;
    assert_eq!(alone.code(), "OPERATION_NOT_ALLOWED");
    let demoted = app
        .as_session(&first, demote, json!({"m": first_membership}))
        .await;
    assert_eq!(demoted.code(), "OPERATION_NOT_ALLOWED");

    // A second owner: now either may step down, but not both at once.
    app.as_key(&key, "default",
        "mutation($u: ID!) { createMembership(input: {teamId: \"guild\", userId: $u, roles: [\"owner\"]}) { confirmed } }",
        json!({"u": second_id}),
    )
    .await
    .ok();
    let second_membership = own(second.clone()).await;
    let (a, b) = tokio::join!(
        app.as_session(&first, leave, json!({"m": first_membership})),
        app.as_session(&second, demote, json!({"m": second_membership})),
    );
    let refused = [a.code().to_string(), b.code().to_string()];
    assert_eq!(
        refused
            .iter()
            .filter(|c| c.as_str() == "OPERATION_NOT_ALLOWED")
            .count(),
        1,
        "exactly one of two owners stepping down at once is refused: {refused:?}"
    );
    let left = app
        .as_key(
            &key,
            "default",
            "{ memberships(teamId: \"guild\") { roles } }",
            json!({}),
        )
        .await
        .ok();
    let owners = left["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["roles"].as_array().unwrap().contains(&json!("owner")))
        .count();
    assert_eq!(owners, 1, "{left}");

    // A server is not held to it.
    let listed = || async {
        app.as_key(
            &key,
            "default",
            "{ memberships(teamId: \"guild\") { id } }",
            json!({}),
        )
        .await
        .ok()["memberships"]
            .clone()
    };
    for membership in listed().await.as_array().unwrap() {
        app.as_key(&key, "default", leave, json!({"m": membership["id"]}))
            .await
            .ok();
    }
    assert_eq!(listed().await, json!([]));
    app.shutdown().await;
}

/// A team's memberships come a page at a time, oldest first: a team of
/// thousands is never read whole by one field, and `after` goes on from the last
/// membership of a page.
#[tokio::test]
async fn a_teams_memberships_are_listed_a_page_at_a_time() {
    let app = spawn_app().await;
    app.admin(
        "mutation { createTeam(input: {id: \"big\", name: \"Big\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    // 105 members, each added by the server (confirmed at once).
    for batch in 0..3 {
        let fields: String = (batch * 35..(batch + 1) * 35)
            .map(|n| {
                format!(
                    "u{n}: createUser(input: {{id: \"m{n:03}\", email: \"m{n}@example.com\"}}) {{ id }} \
                     t{n}: createMembership(input: {{teamId: \"big\", userId: \"m{n:03}\", roles: [\"crew\"]}}) {{ id }} "
                )
            })
            .collect();
        app.admin(&format!("mutation {{ {fields} }}"), json!({}))
            .await
            .ok();
    }
    let page = |query: &'static str, variables: Value| {
        let app = &app;
        async move {
            let answer = app.admin(query, variables).await;
            answer.body.clone()
        }
    };
    // The team counts its members (the server's, created with it, is none).
    let counted = page("{ team(id: \"big\") { total } }", json!({})).await;
    assert_eq!(counted["data"]["team"]["total"], 105, "{counted}");
    // Without `first`, a page of 100.
    let first = page("{ memberships(teamId: \"big\") { id userId } }", json!({})).await;
    let first = first["data"]["memberships"].as_array().unwrap().clone();
    assert_eq!(first.len(), 100);
    assert_eq!(first[0]["userId"], "m000");
    assert_eq!(first[99]["userId"], "m099");
    // The rest, after the last of that page, nothing twice.
    let rest = page(
        "query($a: ID) { memberships(teamId: \"big\", after: $a) { userId } }",
        json!({"a": first[99]["id"]}),
    )
    .await;
    let rest: Vec<&str> = rest["data"]["memberships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userId"].as_str().unwrap())
        .collect();
    assert_eq!(rest, ["m100", "m101", "m102", "m103", "m104"]);
    // Smaller pages.
    let two = page(
        "{ memberships(teamId: \"big\", first: 2) { userId } }",
        json!({}),
    )
    .await;
    assert_eq!(
        two["data"]["memberships"],
        json!([{"userId": "m000"}, {"userId": "m001"}])
    );
    // Hostile pages: too large, negative, a cursor from another team or none.
    for (query, code) in [
        (
            "{ memberships(teamId: \"big\", first: 101) { id } }",
            "BAD_USER_INPUT",
        ),
        (
            "{ memberships(teamId: \"big\", first: -1) { id } }",
            "BAD_USER_INPUT",
        ),
        (
            "{ memberships(teamId: \"big\", after: \"nope\") { id } }",
            "INVALID_CURSOR",
        ),
        (
            "{ memberships(teamId: \"big\", after: \"../../etc\") { id } }",
            "INVALID_CURSOR",
        ),
    ] {
        let refused = page(query, json!({})).await;
        let error = &refused["errors"][0];
        assert_eq!(error["extensions"]["code"], code, "{query}: {refused:#}");
        assert!(!error["message"].as_str().unwrap().contains("SELECT"));
    }
    app.shutdown().await;
}

/// A user is a confirmed member of a bounded number of teams: every request of
/// theirs carries the roles of all of them. Creating, being added by a server and
/// accepting are refused past it, nothing written; an invitation waiting is not
/// counted, so nobody fills another user's teams by inviting them.
#[tokio::test]
async fn a_user_is_a_member_of_a_bounded_number_of_teams() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path()).await;
    config.teams_max_per_user = 3;
    let app = crate::helpers::spawn_with(config, dir).await;
    let (ann_id, ann) = signed_in_user(&app, "ann-teams@example.com").await;
    let (_, bob) = signed_in_user(&app, "bob-teams@example.com").await;
    let create = |id: &str| {
        format!("mutation {{ createTeam(input: {{id: \"{id}\", name: \"T\"}}) {{ id }} }}")
    };
    // Bob's team invites Ann (waiting): it does not count.
    app.as_session(&bob, &create("bobs"), json!({})).await.ok();
    let invited = app
        .as_session(
            &bob,
            "mutation($u: ID!) { createMembership(input: {teamId: \"bobs\", userId: $u, roles: []}) { id confirmed } }",
            json!({"u": ann_id}),
        )
        .await
        .ok();
    assert_eq!(invited["createMembership"]["confirmed"], false);
    let invitation = invited["createMembership"]["id"].clone();
    for id in ["a1", "a2", "a3"] {
        app.as_session(&ann, &create(id), json!({})).await.ok();
    }
    let refused = app.as_session(&ann, &create("a4"), json!({})).await;
    assert_eq!(refused.code(), "TOO_MANY_TEAMS", "{:#}", refused.body);
    // Nothing of the refused team was written.
    let gone = app.admin("{ team(id: \"a4\") { id } }", json!({})).await;
    assert_eq!(gone.code(), "TEAM_NOT_FOUND", "{:#}", gone.body);
    // Nor may a server add her, nor may she accept the invitation.
    app.admin(&create("srv"), json!({})).await.ok();
    let added = app
        .admin(
            "mutation($u: ID!) { createMembership(input: {teamId: \"srv\", userId: $u, roles: []}) { id } }",
            json!({"u": ann_id}),
        )
        .await;
    assert_eq!(added.code(), "TOO_MANY_TEAMS", "{:#}", added.body);
    let accept = "mutation($m: ID!) { updateMembershipStatus(input: {teamId: \"bobs\", membershipId: $m}) { membership { confirmed } } }";
    let accepted = app.as_session(&ann, accept, json!({"m": invitation})).await;
    assert_eq!(accepted.code(), "TOO_MANY_TEAMS", "{:#}", accepted.body);
    // Leaving one makes room.
    app.as_session(
        &ann,
        "mutation { deleteTeam(input: {id: \"a1\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    let accepted = app
        .as_session(&ann, accept, json!({"m": invitation}))
        .await
        .ok();
    assert_eq!(
        accepted["updateMembershipStatus"]["membership"]["confirmed"],
        true
    );
    let teams = app
        .as_session(&ann, "{ teams { totalCount } }", json!({}))
        .await
        .ok();
    assert_eq!(teams["teams"]["totalCount"], 3);
    app.shutdown().await;
}

/// A server reads a user's memberships a page at a time too.
#[tokio::test]
async fn a_users_memberships_are_listed_a_page_at_a_time() {
    let app = spawn_app().await;
    let fields: String = (0..3)
        .map(|n| {
            format!(
                "t{n}: createTeam(input: {{id: \"team{n}\", name: \"T\"}}) {{ id }} \
                 m{n}: createMembership(input: {{teamId: \"team{n}\", userId: \"uma\", roles: []}}) {{ id }} "
            )
        })
        .collect();
    app.admin(
        "mutation { createUser(input: {id: \"uma\", email: \"uma@example.com\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(&format!("mutation {{ {fields} }}"), json!({}))
        .await
        .ok();
    let query = "query($f: Int, $a: ID) { userMemberships(userId: \"uma\", first: $f, after: $a) { id teamId } }";
    let all = app.admin(query, json!({})).await.ok()["userMemberships"].clone();
    let teams: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["teamId"].as_str().unwrap())
        .collect();
    assert_eq!(teams, ["team0", "team1", "team2"]);
    let two = app.admin(query, json!({"f": 2})).await.ok()["userMemberships"].clone();
    assert_eq!(two.as_array().unwrap().len(), 2);
    let rest = app.admin(query, json!({"a": two[1]["id"]})).await.ok()["userMemberships"].clone();
    assert_eq!(rest, json!([{"id": all[2]["id"], "teamId": "team2"}]));
    assert_eq!(
        app.admin(query, json!({"a": "nope"})).await.code(),
        "INVALID_CURSOR"
    );
    assert_eq!(
        app.admin(query, json!({"f": 101})).await.code(),
        "BAD_USER_INPUT"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn teams_are_found_by_the_start_of_their_name_in_any_case() {
    let app = spawn_app().await;
    let (_, user) = signed_in_user(&app, "finder@example.com").await;
    for (id, name) in [
        ("t1", "Ops Crew"),
        ("t2", "ops_100%"),
        ("t3", "Design"),
        ("t4", "Opsx"),
    ] {
        app.as_session(
            &user,
            "mutation($i: ID!, $n: String!) { createTeam(input: {id: $i, name: $n}) { id } }",
            json!({"i": id, "n": name}),
        )
        .await
        .ok();
    }
    // A team the user is not in is found by a server, never by the user.
    app.admin(
        "mutation { createTeam(input: {id: \"t5\", name: \"Ops elsewhere\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let search = "query($s: String) { teams(search: $s) { totalCount nodes { id } } }";
    let ids = |answer: &Value| {
        answer["teams"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["id"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let mine = app
        .as_session(&user, search, json!({"s": "OPS"}))
        .await
        .ok();
    assert_eq!(ids(&mine), ["t1", "t2", "t4"]);
    assert_eq!(mine["teams"]["totalCount"], 3);
    let all = app.admin(search, json!({"s": "ops"})).await.ok();
    assert_eq!(ids(&all), ["t1", "t2", "t4", "t5"]);
    // By id too, as Appwrite's search finds them.
    let by_id = app.admin(search, json!({"s": "T5"})).await.ok();
    assert_eq!(ids(&by_id), ["t5"]);
    // `%` and `_` are the name's own characters, not patterns.
    let literal = app
        .as_session(&user, search, json!({"s": "ops_1"}))
        .await
        .ok();
    assert_eq!(ids(&literal), ["t2"]);
    let none = app.as_session(&user, search, json!({"s": "o%"})).await.ok();
    assert_eq!(ids(&none), Vec::<String>::new());
    let long = app
        .as_session(&user, search, json!({"s": "x".repeat(300)}))
        .await;
    assert_eq!(long.code(), "BAD_USER_INPUT", "{:#}", long.body);
    app.shutdown().await;
}

/// A deleted user's memberships go with them: each team hears of it as of any
/// membership deleted, so a member's list of the team is never left with
/// someone who no longer exists.
#[tokio::test]
async fn a_deleted_users_memberships_are_announced_to_their_teams() {
    let app = spawn_app().await;
    let (_, owner) = signed_in_user(&app, "crew-owner@example.com").await;
    let (member_id, _) = signed_in_user(&app, "crew-member@example.com").await;
    app.as_session(
        &owner,
        "mutation { createTeam(input: {id: \"crew\", name: \"Crew\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let added = app
        .admin(
            "mutation($u: ID!) { createMembership(input: {teamId: \"crew\", userId: $u, roles: [\"editor\"]}) { id } }",
            json!({"u": member_id}),
        )
        .await
        .ok();
    let membership = added["createMembership"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ws = crate::helpers::WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"Authorization": format!("Bearer {owner}")}))
        .await
        .expect("ack");
    ws.subscribe(
        "crew",
        "subscription { realtime(channels: [\"teams.crew\"]) { events payload } }",
    )
    .await;
    ws.ping_pong().await;
    app.admin(
        "mutation($id: ID!) { deleteUser(input: {id: $id}) { deletedId } }",
        json!({"id": member_id}),
    )
    .await
    .ok();
    let heard = loop {
        let message = ws.next_json().await.expect("a message");
        if message["id"] == "crew" {
            break message;
        }
    };
    let event = &heard["payload"]["data"]["realtime"];
    let events: Vec<&str> = event["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        events.contains(&format!("teams.crew.memberships.{membership}.delete").as_str()),
        "{heard}"
    );
    assert_eq!(event["payload"]["userId"], member_id.as_str(), "{heard}");
    let left = app
        .as_session(
            &owner,
            "{ memberships(teamId: \"crew\") { userId } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(left["memberships"].as_array().unwrap().len(), 1, "{left}");
    app.shutdown().await;
}
