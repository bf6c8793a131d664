//! Nobody reaches what they do not own: the ids of deleted teams and users are not
//! given out again (their grants outlive them), pending invitations are renewed with
//! a new secret, team creators stay owners, signed URLs open one incarnation of a
//! file, mailed links die with the address they went to, item permissions carry no
//! `create`, keys revoke only keys within their own scopes, and the schema file
//! follows `NIMBUS_INTROSPECTION`.

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, WAIT, spawn_app, spawn_with, test_config};
use crate::smtp_server::TestSmtp;
use crate::storage::error_code;

/// A multipart `createFile` of a small text file.
async fn upload(app: &TestApp, headers: &[(&str, &str)], input: Value, bytes: &[u8]) -> Answer {
    crate::storage::upload(app, headers, input, "f.txt", "text/plain", bytes).await
}

async fn admin_upload(app: &TestApp, bucket: &str, file: &str, bytes: &[u8]) {
    upload(
        app,
        &[("x-nimbus-key", &app.admin_key)],
        json!({"bucketId": bucket, "fileId": file, "file": null}),
        bytes,
    )
    .await
    .ok();
}

async fn create_bucket(app: &TestApp, input: Value) {
    app.admin(
        "mutation($input: CreateBucketInput!) { createBucket(input: $input) { id } }",
        json!({ "input": input }),
    )
    .await
    .ok();
}

/// A GET of `path` (absolute URL or server path) with a session's bearer token, if
/// any: status and body.
async fn fetch(app: &TestApp, path: &str, session: Option<&str>) -> (u16, Vec<u8>) {
    let url = if path.starts_with("http") {
        path.to_string()
    } else {
        format!("{}{path}", app.url)
    };
    let mut request = app.client.get(url);
    if let Some(secret) = session {
        request = request.header("authorization", format!("Bearer {secret}"));
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn user_id(app: &TestApp, session: &str) -> String {
    app.as_session(session, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

const CREATE_TEAM: &str = "mutation($id: ID!, $roles: [String!]) { createTeam(input: {id: $id, name: \"Crew\", roles: $roles}) { id } }";

#[tokio::test]
async fn a_deleted_teams_id_is_not_given_out_again_so_its_grants_stay_out_of_reach() {
    let app = spawn_app().await;
    let ann = app.signed_in("ann@example.com").await;
    let eve = app.signed_in("eve@example.com").await;
    app.as_session(&ann, CREATE_TEAM, json!({"id": "crew"}))
        .await
        .ok();
    create_bucket(
        &app,
        json!({"id": "crew-files", "name": "Crew files",
               "permissions": ["read(\"team:crew\")", "read(\"team:crew/owner\")"]}),
    )
    .await;
    admin_upload(&app, "crew-files", "plan", b"the crew's plan").await;
    let view = "/v1/storage/buckets/crew-files/files/plan/view";
    assert_eq!(
        fetch(&app, view, Some(&ann)).await,
        (200, b"the crew's plan".to_vec())
    );

    app.as_session(
        &ann,
        "mutation { deleteTeam(input: {id: \"crew\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(fetch(&app, view, Some(&ann)).await.0, 404);

    // Whoever takes the id next would be a member of `team:crew`: nobody may.
    let taken = app
        .as_session(&eve, CREATE_TEAM, json!({"id": "crew"}))
        .await;
    assert_eq!(taken.code(), "TEAM_ALREADY_EXISTS");
    let by_server = app.admin(CREATE_TEAM, json!({"id": "crew"})).await;
    assert_eq!(by_server.code(), "TEAM_ALREADY_EXISTS");
    let (status, _) = fetch(&app, view, Some(&eve)).await;
    assert_eq!(status, 404, "the grants of the deleted team reach nobody");
    let teams = app
        .as_session(&eve, "{ teams { totalCount } }", json!({}))
        .await
        .ok();
    assert_eq!(teams["teams"]["totalCount"], 0);

    // Other ids stay free, and a refused id left nothing half-made.
    app.as_session(&eve, CREATE_TEAM, json!({"id": "crew2"}))
        .await
        .ok();
    let all = app
        .admin("{ teams { nodes { id } } }", json!({}))
        .await
        .ok();
    assert_eq!(all["teams"]["nodes"], json!([{"id": "crew2"}]));
    app.shutdown().await;
}

#[tokio::test]
async fn a_deleted_users_id_is_not_given_out_again_so_its_grants_stay_out_of_reach() {
    let app = spawn_app().await;
    app.admin(
        "mutation { createUser(input: {id: \"frank\", email: \"frank@example.com\", password: \"frank-password-1\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    create_bucket(
        &app,
        json!({"id": "diaries", "name": "Diaries", "permissions": ["read(\"user:frank\")"]}),
    )
    .await;
    admin_upload(&app, "diaries", "frank", b"dear diary").await;
    app.admin(
        "mutation { deleteUser(input: {id: \"frank\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();

    let sign_up = "mutation($id: ID!, $e: String!) { createAccount(input: {id: $id, email: $e, password: \"db-password-1\"}) { id } }";
    let taken = app
        .post(
            json!({"query": sign_up, "variables": {"id": "frank", "e": "mallory@example.com"}}),
            &[],
        )
        .await;
    assert_eq!(taken.code(), "USER_ALREADY_EXISTS");
    let by_server = app
        .admin(
            "mutation { createUser(input: {id: \"frank\", email: \"other@example.com\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(by_server.code(), "USER_ALREADY_EXISTS");
    // The refused sign-up kept nothing: the email is still free.
    let mallory = app.signed_in("mallory@example.com").await;
    assert_ne!(user_id(&app, &mallory).await, "frank");
    let (status, _) = fetch(
        &app,
        "/v1/storage/buckets/diaries/files/frank/view",
        Some(&mallory),
    )
    .await;
    assert_eq!(status, 404);
    app.shutdown().await;
}

#[tokio::test]
async fn a_team_creator_who_names_roles_stays_owner() {
    let app = spawn_app().await;
    let ann = app.signed_in("ann@example.com").await;
    app.as_session(&ann, CREATE_TEAM, json!({"id": "band", "roles": ["drums"]}))
        .await
        .ok();
    let members = app
        .as_session(
            &ann,
            "{ memberships(teamId: \"band\") { roles confirmed } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        members["memberships"],
        json!([{"roles": ["drums", "owner"], "confirmed": true}])
    );
    let renamed = app
        .as_session(
            &ann,
            "mutation { updateTeamName(input: {id: \"band\", name: \"The Band\"}) { name } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(renamed["updateTeamName"]["name"], "The Band");
    app.shutdown().await;
}

async fn app_with_mail() -> (TestApp, TestSmtp) {
    let smtp = TestSmtp::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.smtp_url = Some(smtp.url.clone());
    (spawn_with(config, dir).await, smtp)
}

#[tokio::test]
async fn inviting_again_renews_a_pending_invitation_and_only_the_newest_link_works() {
    let (app, smtp) = app_with_mail().await;
    let owner = app.signed_in("olga@example.com").await;
    app.as_session(&owner, CREATE_TEAM, json!({"id": "band"}))
        .await
        .ok();
    let invite = "mutation($input: CreateMembershipInput!) { createMembership(input: $input) { id userId confirmed roles } }";
    let input = |email: &str, role: &str| json!({"input": {"teamId": "band", "email": email, "roles": [role], "url": "http://localhost/join"}});

    let first = app
        .as_session(&owner, invite, input("nico@example.com", "drums"))
        .await
        .ok()["createMembership"]
        .clone();
    let old_mail = smtp.wait_for_message_to("nico@example.com", WAIT).await;
    let old_secret = old_mail.link_param("secret").unwrap();

    let second = app
        .as_session(&owner, invite, input("nico@example.com", "bass"))
        .await
        .ok()["createMembership"]
        .clone();
    assert_eq!(second["id"], first["id"], "the same invitation, renewed");
    assert_eq!(second["confirmed"], false);
    assert_eq!(second["roles"], json!(["bass"]));
    let new_mail = smtp.wait_for_message_to("nico@example.com", WAIT).await;
    let new_secret = new_mail.link_param("secret").unwrap();
    assert_ne!(new_secret, old_secret);
    assert_eq!(
        new_mail.link_param("membershipId").as_deref(),
        first["id"].as_str()
    );

    let accept = "mutation($m: ID!, $s: String!) { updateMembershipStatus(input: {teamId: \"band\", membershipId: $m, secret: $s}) { membership { confirmed roles } } }";
    let vars = |secret: &str| json!({"m": first["id"], "s": secret});
    let stale = app
        .post(
            json!({"query": accept, "variables": vars(&old_secret)}),
            &[],
        )
        .await;
    assert_eq!(stale.code(), "INVALID_TOKEN");
    let accepted = app
        .post(
            json!({"query": accept, "variables": vars(&new_secret)}),
            &[],
        )
        .await
        .ok();
    assert_eq!(
        accepted["updateMembershipStatus"]["membership"],
        json!({"confirmed": true, "roles": ["bass"]})
    );
    let again = app
        .as_session(&owner, invite, input("nico@example.com", "keys"))
        .await;
    assert_eq!(again.code(), "MEMBERSHIP_ALREADY_EXISTS");

    // A server inviting someone with a pending invitation confirms it, and the
    // emailed link stops working.
    let pending = app
        .as_session(&owner, invite, input("pat@example.com", "drums"))
        .await
        .ok()["createMembership"]
        .clone();
    let pat_mail = smtp.wait_for_message_to("pat@example.com", WAIT).await;
    let key = app.create_key("default", &["teams.write"]).await;
    let added = app
        .as_key(
            &key,
            "default",
            invite,
            json!({"input": {"teamId": "band", "email": "pat@example.com", "roles": ["roadie"]}}),
        )
        .await
        .ok()["createMembership"]
        .clone();
    assert_eq!(
        (&added["id"], &added["confirmed"], &added["roles"]),
        (&pending["id"], &json!(true), &json!(["roadie"]))
    );
    let link = app
        .post(
            json!({"query": accept, "variables": {"m": pending["id"], "s": pat_mail.link_param("secret").unwrap()}}),
            &[],
        )
        .await;
    assert_eq!(link.code(), "INVALID_TOKEN");
    app.shutdown().await;
}

#[tokio::test]
async fn changing_the_email_voids_the_links_mailed_to_the_old_one() {
    let (app, smtp) = app_with_mail().await;
    let session = app.signed_in("nora@example.com").await;
    app.as_session(
        &session,
        "mutation { createVerification(input: {url: \"http://localhost/verify\"}) { userId } }",
        json!({}),
    )
    .await
    .ok();
    let mail = smtp.wait_for_message_to("nora@example.com", WAIT).await;
    let (user, secret) = (
        mail.link_param("userId").unwrap(),
        mail.link_param("secret").unwrap(),
    );
    let moved = app
        .as_session(
            &session,
            "mutation { updateEmail(input: {email: \"someone-else@example.com\", password: \"db-password-1\"}) { email emailVerified } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        moved["updateEmail"],
        json!({"email": "someone-else@example.com", "emailVerified": false})
    );

    // The link proved nora@ reachable, not the new address.
    let stale = app
        .post(
            json!({"query": "mutation($u: ID!, $s: String!) { updateVerification(input: {userId: $u, secret: $s}) { emailVerified } }",
                   "variables": {"u": user, "s": secret}}),
            &[],
        )
        .await;
    assert_eq!(stale.code(), "INVALID_TOKEN");
    let account = app
        .as_session(&session, "{ account { emailVerified } }", json!({}))
        .await
        .ok();
    assert_eq!(account["account"]["emailVerified"], false);
    app.shutdown().await;
}

#[tokio::test]
async fn a_signed_url_does_not_open_a_later_file_given_the_same_id() {
    let app = spawn_app().await;
    create_bucket(&app, json!({"id": "private", "name": "Private"})).await;
    admin_upload(&app, "private", "report", b"first report").await;
    let mint = "mutation { createFileToken(input: {bucketId: \"private\", fileId: \"report\", expiresIn: 600}) { viewUrl } }";
    let minted = app.admin(mint, json!({})).await.ok();
    let old_url = minted["createFileToken"]["viewUrl"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        fetch(&app, &old_url, None).await,
        (200, b"first report".to_vec())
    );

    app.admin(
        "mutation { deleteFile(input: {bucketId: \"private\", fileId: \"report\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    admin_upload(&app, "private", "report", b"second report, not shared").await;
    let (status, body) = fetch(&app, &old_url, None).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (404, "FILE_NOT_FOUND")
    );
    let download = old_url.replace("/view?", "/download?");
    assert_eq!(fetch(&app, &download, None).await.0, 404);

    // A URL minted for the new file opens it.
    let minted = app.admin(mint, json!({})).await.ok();
    let new_url = minted["createFileToken"]["viewUrl"].as_str().unwrap();
    assert_eq!(
        fetch(&app, new_url, None).await,
        (200, b"second report, not shared".to_vec())
    );
    app.shutdown().await;
}

fn sorted(list: &Value) -> Vec<String> {
    let mut list: Vec<String> = serde_json::from_value(list.clone()).unwrap();
    list.sort();
    list
}

#[tokio::test]
async fn item_permissions_refuse_create_and_write_means_update_and_delete() {
    let app = spawn_app().await;
    create_bucket(
        &app,
        json!({"id": "shared", "name": "Shared", "permissions": ["create(\"users\")"], "fileSecurity": true}),
    )
    .await;
    let ann = app.signed_in("ann@example.com").await;
    let me = format!("user:{}", user_id(&app, &ann).await);
    let bearer = format!("Bearer {ann}");
    let headers = [("authorization", bearer.as_str())];

    let refused = upload(
        &app,
        &headers,
        json!({"bucketId": "shared", "fileId": "a", "file": null,
               "permissions": [format!("read(\"{me}\")"), format!("create(\"{me}\")")]}),
        b"a",
    )
    .await;
    assert_eq!(refused.code(), "INVALID_PERMISSION");
    let written = upload(
        &app,
        &headers,
        json!({"bucketId": "shared", "fileId": "a", "file": null,
               "permissions": [format!("read(\"{me}\")"), format!("write(\"{me}\")")]}),
        b"a",
    )
    .await
    .ok();
    assert_eq!(
        sorted(&written["createFile"]["permissions"]),
        [
            format!("delete(\"{me}\")"),
            format!("read(\"{me}\")"),
            format!("update(\"{me}\")")
        ]
    );
    let update = "mutation($p: [String!]) { updateFile(input: {bucketId: \"shared\", fileId: \"a\", permissions: $p}) { permissions } }";
    let by_server = app.admin(update, json!({"p": ["create(\"any\")"]})).await;
    assert_eq!(by_server.code(), "INVALID_PERMISSION");
    let by_owner = app
        .as_session(&ann, update, json!({"p": [format!("create(\"{me}\")")]}))
        .await;
    assert_eq!(by_owner.code(), "INVALID_PERMISSION");
    let file = app
        .admin(
            "{ file(bucketId: \"shared\", fileId: \"a\") { permissions } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        sorted(&file["file"]["permissions"]),
        sorted(&written["createFile"]["permissions"]),
        "a refused update changes nothing"
    );

    // Documents are items too; their collection keeps `create`.
    app.admin(
        "mutation { createDatabase(input: {id: \"notes\", name: \"Notes\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {"databaseId": "notes", "id": "note", "name": "note", "documentSecurity": true,
                "permissions": ["create(\"users\")"],
                "attributes": [{"key": "text", "type": "STRING", "size": 100}]}}),
    )
    .await
    .ok();
    let create_document = "mutation($p: [String!]) { createDocument(input: {databaseId: \"notes\", collectionId: \"note\", data: {text: \"hi\"}, permissions: $p}) { permissions } }";
    let refused = app
        .as_session(
            &ann,
            create_document,
            json!({"p": [format!("create(\"{me}\")")]}),
        )
        .await;
    assert_eq!(refused.code(), "INVALID_PERMISSION");
    let document = app
        .as_session(
            &ann,
            create_document,
            json!({"p": [format!("read(\"{me}\")"), format!("write(\"{me}\")")]}),
        )
        .await
        .ok();
    assert_eq!(
        sorted(&document["createDocument"]["permissions"]),
        [
            format!("delete(\"{me}\")"),
            format!("read(\"{me}\")"),
            format!("update(\"{me}\")")
        ]
    );
    app.shutdown().await;
}

const CREATE_KEY: &str = "mutation($scopes: [String!]!) { createApiKey(input: {name: \"k\", scopes: $scopes}) { secret apiKey { id } } }";
const DELETE_KEY: &str = "mutation($id: ID!) { deleteApiKey(input: {id: $id}) { deletedId } }";

/// Creates a key in the default project as the admin: its id and secret.
async fn key_with(app: &TestApp, scopes: &[&str]) -> (String, String) {
    let data = app.admin(CREATE_KEY, json!({"scopes": scopes})).await.ok();
    let created = &data["createApiKey"];
    (
        created["apiKey"]["id"].as_str().unwrap().to_string(),
        created["secret"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_key_revokes_only_keys_within_its_own_scopes() {
    let app = spawn_app().await;
    let (_, manager) = key_with(&app, &["keys.write", "users.read"]).await;
    let (admin_id, admin_secret) = key_with(&app, &["admin"]).await;
    let (broader_id, _) = key_with(&app, &["users.read", "users.write"]).await;
    let (narrower_id, _) = key_with(&app, &["users.read"]).await;

    let refused = app
        .as_key(&manager, "default", DELETE_KEY, json!({"id": admin_id}))
        .await;
    assert_eq!(refused.code(), "PERMISSION_DENIED");
    let still = app
        .as_key(
            &admin_secret,
            "default",
            "{ projects { totalCount } }",
            json!({}),
        )
        .await;
    assert!(still.body.get("errors").is_none(), "{:#}", still.body);
    let refused = app
        .as_key(&manager, "default", DELETE_KEY, json!({"id": broader_id}))
        .await;
    assert_eq!(refused.code(), "PERMISSION_DENIED");

    let deleted = app
        .as_key(&manager, "default", DELETE_KEY, json!({"id": narrower_id}))
        .await
        .ok();
    assert_eq!(deleted["deleteApiKey"]["deletedId"], narrower_id.as_str());
    let deleted = app.admin(DELETE_KEY, json!({"id": broader_id})).await.ok();
    assert_eq!(deleted["deleteApiKey"]["deletedId"], broader_id.as_str());
    let keys = app
        .admin("{ apiKeys { nodes { id } } }", json!({}))
        .await
        .ok();
    let ids: Vec<&str> = keys["apiKeys"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&admin_id.as_str()), "{ids:?}");
    assert!(!ids.contains(&broader_id.as_str()), "{ids:?}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_schema_file_needs_an_api_key_when_introspection_is_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.introspection = false;
    let app = spawn_with(config, dir).await;
    let path = "/v1/graphql/schema.graphql";
    let get = |headers: Vec<(&'static str, String)>| {
        let mut request = app.client.get(format!("{}{path}", app.url));
        for (name, value) in headers {
            request = request.header(name, value);
        }
        async move {
            let response = request.send().await.expect("request sent");
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };

    let (status, body) = get(vec![]).await;
    assert_eq!(
        (status, error_code(body.as_bytes()).as_str()),
        (401, "UNAUTHENTICATED")
    );
    let session = app.signed_in("ann@example.com").await;
    let (status, body) = get(vec![("authorization", format!("Bearer {session}"))]).await;
    assert_eq!(
        (status, error_code(body.as_bytes()).as_str()),
        (403, "PERMISSION_DENIED")
    );
    let (status, body) = get(vec![("x-nimbus-key", "nk_not-a-key".into())]).await;
    assert_eq!(
        (status, error_code(body.as_bytes()).as_str()),
        (401, "INVALID_API_KEY")
    );
    let key = app.create_key("default", &["users.read"]).await;
    let (status, body) = get(vec![("x-nimbus-key", key)]).await;
    assert_eq!(status, 200);
    assert!(body.contains("type Query"), "{body}");
    // Nor do validation errors suggest the names of fields.
    let near_miss = app.post(json!({"query": "{ acount { id } }"}), &[]).await;
    let message = near_miss.body["errors"][0]["message"].as_str().unwrap();
    assert!(
        message.contains("acount") && !message.contains("account"),
        "{message}"
    );
    app.shutdown().await;

    // With introspection on, the schema is public, as introspection is.
    let app = spawn_app().await;
    let sdl = app.get_text(path).await;
    assert!(sdl.contains("type Query"), "{sdl}");
    let near_miss = app.post(json!({"query": "{ acount { id } }"}), &[]).await;
    let message = near_miss.body["errors"][0]["message"].as_str().unwrap();
    assert!(message.contains("Did you mean \"account\""), "{message}");
    app.shutdown().await;
}

#[tokio::test]
async fn file_writes_answer_only_files_the_caller_may_read() {
    let app = spawn_app().await;
    create_bucket(
        &app,
        json!({"id": "drop", "name": "Drop box", "permissions": ["create(\"users\")"], "fileSecurity": true}),
    )
    .await;
    let ann = app.signed_in("ann@example.com").await;
    let me = format!("user:{}", user_id(&app, &ann).await);
    let bearer = format!("Bearer {ann}");
    let headers = [("authorization", bearer.as_str())];

    // A drop box: Ann may put a file in and rename it, but not read it back.
    let written = upload(
        &app,
        &headers,
        json!({"bucketId": "drop", "fileId": "tip", "file": null,
               "permissions": [format!("update(\"{me}\")")]}),
        b"secret tip",
    )
    .await
    .ok();
    assert_eq!(
        written["createFile"],
        Value::Null,
        "the upload answers null"
    );
    let update = "mutation { updateFile(input: {bucketId: \"drop\", fileId: \"tip\", name: \"renamed.txt\"}) { id name permissions } }";
    let renamed = app.as_session(&ann, update, json!({})).await.ok();
    assert_eq!(
        renamed["updateFile"],
        Value::Null,
        "the update answers null"
    );

    // Both writes stand.
    let stored = app
        .admin(
            "{ file(bucketId: \"drop\", fileId: \"tip\") { name size } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(stored["file"]["name"], "renamed.txt");
    assert_eq!(stored["file"]["size"], 10);

    // With read as well, the file comes back.
    let readable = upload(
        &app,
        &headers,
        json!({"bucketId": "drop", "fileId": "note", "file": null,
               "permissions": [format!("read(\"{me}\")"), format!("update(\"{me}\")")]}),
        b"note",
    )
    .await
    .ok();
    assert_eq!(readable["createFile"]["id"], "note");
    app.shutdown().await;
}

/// A key hands out neither scopes nor time it does not have: one that expires
/// cannot make a key that outlives it.
#[tokio::test]
async fn an_expiring_key_cannot_make_a_key_that_outlives_it() {
    let app = spawn_app().await;
    let ends = chrono::Utc::now() + chrono::Duration::hours(1);
    let parent = app
        .admin(
            "mutation($at: DateTime!) { createApiKey(input: {name: \"temp\", scopes: [\"keys.write\", \"keys.read\"], expiresAt: $at}) { secret } }",
            json!({"at": ends.to_rfc3339()}),
        )
        .await
        .ok()["createApiKey"]["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let create = "mutation($at: DateTime) { createApiKey(input: {name: \"child\", scopes: [\"keys.read\"], expiresAt: $at}) { apiKey { name } } }";
    let forever = app.as_key(&parent, "default", create, json!({})).await;
    assert_eq!(forever.code(), "PERMISSION_DENIED", "{:#}", forever.body);
    let later = (ends + chrono::Duration::minutes(1)).to_rfc3339();
    let beyond = app
        .as_key(&parent, "default", create, json!({"at": later}))
        .await;
    assert_eq!(beyond.code(), "PERMISSION_DENIED", "{:#}", beyond.body);
    let within = (ends - chrono::Duration::minutes(1)).to_rfc3339();
    let child = app
        .as_key(&parent, "default", create, json!({"at": within}))
        .await
        .ok();
    assert_eq!(child["createApiKey"]["apiKey"]["name"], "child");
    app.shutdown().await;
}

/// A bucket `docs` whose files only their own permissions open, holding `f1`
/// (`hello`), which the admin uploaded with none.
async fn private_file(app: &TestApp) {
    create_bucket(
        app,
        json!({"id": "docs", "name": "Docs", "fileSecurity": true, "permissions": []}),
    )
    .await;
    admin_upload(app, "docs", "f1", b"hello").await;
}

/// An update of a file's permissions computed from a copy read before an owner's
/// revocation is written only over that copy: it finds the file changed and puts
/// no grant back.
#[tokio::test]
async fn a_file_update_read_before_a_revocation_cannot_undo_it() {
    let app = spawn_app().await;
    private_file(&app).await;
    let state = app.server.as_ref().unwrap().state().clone();
    let find = nimbus::services::storage::store::find_file;
    let before = find(state.db.pool(), "default", "docs", "f1")
        .await
        .unwrap()
        .unwrap();
    app.admin(
        "mutation { updateFile(input: {bucketId: \"docs\", fileId: \"f1\", permissions: [\"read(\\\"users\\\")\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let mut stale = before.clone();
    stale.permissions = ["read(\"any\")", "delete(\"any\")"]
        .iter()
        .map(|p| p.parse().unwrap())
        .collect();
    stale.updated_at = before.updated_at + 1;
    let mut conn = state.db.pool().acquire().await.unwrap();
    let written =
        nimbus::services::storage::store::update_file(&mut conn, &stale, before.updated_at)
            .await
            .unwrap();
    assert!(
        !written,
        "a write over an older copy must find nothing to write"
    );
    drop(conn);
    let after = find(state.db.pool(), "default", "docs", "f1")
        .await
        .unwrap()
        .unwrap();
    let kept: Vec<String> = after.permissions.iter().map(ToString::to_string).collect();
    assert_eq!(kept, ["read(\"users\")"]);
    // Through the API, a rename keeps applying over what is there now.
    let renamed = app
        .admin(
            "mutation { updateFile(input: {bucketId: \"docs\", fileId: \"f1\", name: \"g.txt\"}) { name permissions } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        renamed["updateFile"],
        json!({"name": "g.txt", "permissions": ["read(\"users\")"]})
    );
    app.shutdown().await;
}

/// A key bypasses file permissions, so a file write answers with the file only
/// to a key that may read files too: `files.write` alone is answered what a guest
/// may read (here, nothing).
#[tokio::test]
async fn a_key_that_may_only_write_files_is_answered_nothing_it_wrote() {
    let app = spawn_app().await;
    private_file(&app).await;
    let rename = "mutation($n: String!) { updateFile(input: {bucketId: \"docs\", fileId: \"f1\", name: $n}) { name size } }";
    let writer = app.create_key("default", &["files.write"]).await;
    let blind = app
        .as_key(&writer, "default", rename, json!({"n": "blind.txt"}))
        .await
        .ok();
    assert_eq!(blind["updateFile"], Value::Null, "{blind:#}");
    let both = app
        .create_key("default", &["files.write", "files.read"])
        .await;
    let seen = app
        .as_key(&both, "default", rename, json!({"n": "seen.txt"}))
        .await
        .ok();
    assert_eq!(seen["updateFile"], json!({"name": "seen.txt", "size": 5}));
    app.shutdown().await;
}

/// A signed URL lends what its maker may read, no longer than they may: a user's
/// ends with their session or their read permission, a key's with the key.
#[tokio::test]
async fn a_signed_url_holds_only_while_its_maker_could_read_the_file() {
    let app = spawn_app().await;
    private_file(&app).await;
    let share = |permissions: Value| {
        app.admin(
            "mutation($p: [String!]) { updateFile(input: {bucketId: \"docs\", fileId: \"f1\", permissions: $p}) { id } }",
            json!({"p": permissions}),
        )
    };
    let mint = "mutation { createFileToken(input: {bucketId: \"docs\", fileId: \"f1\", expiresIn: 600}) { viewUrl } }";
    let url_of = |answer: Answer| {
        answer.ok()["createFileToken"]["viewUrl"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let opens = |url: String| {
        let app = &app;
        async move {
            let (status, body) = fetch(app, &url, None).await;
            (status, error_code(&body))
        }
    };

    // Read taken away: the URL a user made no longer opens.
    let ann = app.signed_in("ann@example.com").await;
    let ann_id = user_id(&app, &ann).await;
    share(json!([format!("read(\"user:{ann_id}\")")]))
        .await
        .ok();
    let url = url_of(app.as_session(&ann, mint, json!({})).await);
    assert_eq!(opens(url.clone()).await.0, 200);
    share(json!([])).await.ok();
    assert_eq!(opens(url.clone()).await, (404, "FILE_NOT_FOUND".into()));
    share(json!([format!("read(\"user:{ann_id}\")")]))
        .await
        .ok();
    assert_eq!(
        opens(url.clone()).await.0,
        200,
        "given back, it opens again"
    );

    // Signed out: neither the URL made with the session nor one made by a JWT of it.
    let jwt = app
        .as_session(&ann, "mutation { createJWT { jwt } }", json!({}))
        .await
        .ok()["createJWT"]["jwt"]
        .as_str()
        .unwrap()
        .to_string();
    let minted_by_jwt = app
        .as_session(
            &jwt,
            "mutation { createFileToken(input: {bucketId: \"docs\", fileId: \"f1\", expiresIn: 604800}) { viewUrl expiresAt } }",
            json!({}),
        )
        .await
        .ok();
    // A JWT lends no longer than it lives: fifteen minutes, not the week asked.
    let ends = chrono::DateTime::parse_from_rfc3339(
        minted_by_jwt["createFileToken"]["expiresAt"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let left = ends.timestamp() - chrono::Utc::now().timestamp();
    assert!((0..=900).contains(&left), "{left} s left");
    let by_jwt = minted_by_jwt["createFileToken"]["viewUrl"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(opens(by_jwt.clone()).await.0, 200);
    app.as_session(
        &ann,
        "mutation { deleteSession(input: {id: \"current\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    for url in [url, by_jwt] {
        assert_eq!(opens(url).await, (400, "INVALID_FILE_TOKEN".into()));
    }

    // A key's URL ends with the key.
    let (key_id, key) = key_with(&app, &["files.read"]).await;
    let url = url_of(app.as_key(&key, "default", mint, json!({})).await);
    assert_eq!(opens(url.clone()).await.0, 200);
    app.admin(DELETE_KEY, json!({"id": key_id})).await.ok();
    assert_eq!(opens(url).await, (400, "INVALID_FILE_TOKEN".into()));

    // A guest's, with the file's public read.
    share(json!(["read(\"any\")"])).await.ok();
    let url = url_of(app.post(json!({"query": mint}), &[]).await);
    assert_eq!(opens(url.clone()).await.0, 200);
    share(json!([])).await.ok();
    assert_eq!(opens(url).await.0, 404);
    app.shutdown().await;
}
