//! Probes an attacker would try across services: switches that must cut clients
//! off at once (a disabled database, a bucket's rules changed while an upload is
//! under way), refusals that must not carry what the caller may not read (a value
//! past an increment's bound, a document's new time), answers that must not tell
//! which files or memberships exist, and references that must not show the id of
//! a document the reader may not read.

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, spawn_app};

const CREATE_COLLECTION: &str =
    "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }";

async fn database(app: &TestApp, id: &str) {
    app.admin(
        "mutation($id: ID!) { createDatabase(input: {id: $id, name: $id}) { id } }",
        json!({ "id": id }),
    )
    .await
    .ok();
}

async fn collection(app: &TestApp, database: &str, id: &str, permissions: Value) {
    app.admin(
        CREATE_COLLECTION,
        json!({"input": {
            "databaseId": database, "id": id, "name": id,
            "documentSecurity": false,
            "permissions": permissions,
            "attributes": [
                {"key": "text", "type": "STRING", "size": 200, "required": true},
                {"key": "n", "type": "INTEGER", "default": 0, "min": 0, "max": 1000}
            ],
        }}),
    )
    .await
    .ok();
}

async fn guest(app: &TestApp, query: &str) -> Answer {
    app.post(json!({ "query": query }), &[]).await
}

#[tokio::test]
async fn a_disabled_database_serves_clients_nothing_until_enabled_again() {
    let app = spawn_app().await;
    database(&app, "shop").await;
    collection(
        &app,
        "shop",
        "notes",
        json!(["read(\"any\")", "create(\"any\")", "update(\"any\")"]),
    )
    .await;
    app.admin(
        "mutation { createNote(input: {id: \"n1\", text: \"hello\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let list = "{ notes { nodes { id text } } }";
    let one = "{ note(id: \"n1\") { id text } }";
    let generic =
        "{ documents(databaseId: \"shop\", collectionId: \"notes\") { documents { id } } }";
    assert_eq!(
        guest(&app, one).await.ok()["note"]["text"],
        "hello",
        "readable while enabled"
    );

    app.admin(
        "mutation { updateDatabase(input: {id: \"shop\", enabled: false}) { enabled } }",
        json!({}),
    )
    .await
    .ok();
    // Its lists are not found, as a disabled collection's are.
    let listed = guest(&app, list).await;
    assert_eq!(listed.code(), "COLLECTION_NOT_FOUND", "{:#}", listed.body);
    assert_eq!(guest(&app, one).await.ok()["note"], Value::Null);
    let generic_listed = guest(&app, generic).await;
    assert_eq!(
        generic_listed.code(),
        "COLLECTION_NOT_FOUND",
        "{:#}",
        generic_listed.body
    );
    let created = guest(
        &app,
        "mutation { createNote(input: {id: \"n2\", text: \"sneaked\"}) { id } }",
    )
    .await;
    assert_eq!(created.code(), "PERMISSION_DENIED", "{:#}", created.body);
    let updated = guest(
        &app,
        "mutation { updateNote(input: {id: \"n1\", text: \"changed\"}) { id } }",
    )
    .await;
    assert!(updated.body.get("errors").is_some(), "{:#}", updated.body);
    // The server still reaches it, and nothing changed.
    let kept = app.admin(one, json!({})).await.ok();
    assert_eq!(kept["note"]["text"], "hello");
    assert_eq!(
        app.admin("{ note(id: \"n2\") { id } }", json!({}))
            .await
            .ok()["note"],
        Value::Null
    );

    app.admin(
        "mutation { updateDatabase(input: {id: \"shop\", enabled: true}) { enabled } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(guest(&app, one).await.ok()["note"]["text"], "hello");
    app.shutdown().await;
}

#[tokio::test]
async fn refusals_to_a_writer_who_may_not_read_carry_no_value_of_the_document() {
    let app = spawn_app().await;
    database(&app, "blind").await;
    // Users may create and change drops, but nobody may read them.
    collection(
        &app,
        "blind",
        "drops",
        json!(["create(\"users\")", "update(\"users\")"]),
    )
    .await;
    let ann = app.signed_in("ann-probe-blind@example.com").await;
    app.as_session(
        &ann,
        "mutation { createDrop(input: {id: \"d1\", text: \"secret\", n: 737}) { id } }",
        json!({}),
    )
    .await;
    let message = |answer: &Answer| {
        answer.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };

    let past_bound = app
        .as_session(
            &ann,
            "mutation { incrementDrop(input: {id: \"d1\", field: n, by: 1, max: 5}) { id } }",
            json!({}),
        )
        .await;
    // Whether a bound is passed tells the value: a writer who may not read
    // cannot give one.
    assert_eq!(
        past_bound.code(),
        "PERMISSION_DENIED",
        "{:#}",
        past_bound.body
    );
    assert!(
        !message(&past_bound).contains("738"),
        "{:#}",
        past_bound.body
    );

    let past_range = app
        .as_session(
            &ann,
            "mutation { incrementDrop(input: {id: \"d1\", field: n, by: 300}) { id } }",
            json!({}),
        )
        .await;
    // Nor whether the attribute's own range is passed: the result is held
    // within it, and the answer is the same either way.
    assert_eq!(past_range.ok()["incrementDrop"], Value::Null);

    let stale = app
        .as_session(
            &ann,
            "mutation { updateDrop(input: {id: \"d1\", text: \"x\", expectedUpdatedAt: \"2001-01-01T00:00:00Z\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(stale.code(), "DOCUMENT_CHANGED", "{:#}", stale.body);
    let year = chrono_year();
    assert!(!message(&stale).contains(&year), "{:#}", stale.body);
    // The value is untouched by the refusals, and was held at its maximum.
    let kept = app
        .admin("{ drop(id: \"d1\") { n text } }", json!({}))
        .await
        .ok();
    assert_eq!(kept["drop"], json!({"n": 1000, "text": "secret"}));
    app.shutdown().await;
}

/// This year, as the start of an RFC 3339 time.
fn chrono_year() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    // Days since 1970 to a year, close enough for a year that is not ending.
    format!("{}-", 1970 + now / 31_556_952)
}

/// A multipart `createFile` as the admin: a complete file.
async fn admin_file(app: &TestApp, bucket: &str, id: &str) {
    let boundary = "nimbus-probe-boundary";
    let operations = json!({
        "query": "mutation($input: CreateFileInput!) { createFile(input: $input) { id } }",
        "variables": { "input": { "bucketId": bucket, "fileId": id, "file": null } },
    });
    let mut body = Vec::new();
    for (headers, content) in [
        (
            "Content-Disposition: form-data; name=\"operations\"".to_string(),
            operations.to_string(),
        ),
        (
            "Content-Disposition: form-data; name=\"map\"".to_string(),
            r#"{"0": ["variables.input.file"]}"#.to_string(),
        ),
        (
            "Content-Disposition: form-data; name=\"0\"; filename=\"a.txt\"\r\nContent-Type: text/plain"
                .to_string(),
            "private words".to_string(),
        ),
    ] {
        body.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n{content}\r\n").as_bytes());
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let response = app
        .multipart_post(boundary)
        .header("x-nimbus-key", &app.admin_key)
        .body(body)
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    assert!(!text.contains("errors"), "{text}");
}

#[tokio::test]
async fn an_upload_status_does_not_tell_others_which_files_exist() {
    let app = spawn_app().await;
    app.admin(
        "mutation { createBucket(input: {id: \"vault\", name: \"Vault\", permissions: [\"create(\\\"users\\\")\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    admin_file(&app, "vault", "plans").await;
    let eve = app.signed_in("eve-probe-uploads@example.com").await;
    let status = |file: &str| {
        format!("{{ fileUpload(bucketId: \"vault\", fileId: \"{file}\") {{ id status }} }}")
    };
    let existing = app.as_session(&eve, &status("plans"), json!({})).await;
    let missing = app.as_session(&eve, &status("nothing"), json!({})).await;
    assert_eq!(existing.code(), missing.code(), "{:#}", existing.body);
    assert_ne!(existing.code(), "UPLOAD_COMPLETE");
    let guest_existing = guest(&app, &status("plans")).await;
    let guest_missing = guest(&app, &status("nothing")).await;
    assert_eq!(
        guest_existing.code(),
        guest_missing.code(),
        "{:#}",
        guest_existing.body
    );
    // The same over the chunk endpoint.
    let put = |file: &'static str, secret: String| {
        let app = &app;
        async move {
            app.client
                .put(format!(
                    "{}/v1/storage/buckets/vault/files/{file}/upload",
                    app.url
                ))
                .header("authorization", format!("Bearer {secret}"))
                .header("content-range", "bytes 0-3/4")
                .body("abcd")
                .send()
                .await
                .unwrap()
        }
    };
    let existing = put("plans", eve.clone()).await;
    let existing = (existing.status().as_u16(), existing.text().await.unwrap());
    let missing = put("nothing", eve.clone()).await;
    let missing = (missing.status().as_u16(), missing.text().await.unwrap());
    assert_eq!(existing.0, missing.0, "{existing:?} vs {missing:?}");
    assert!(!existing.1.contains("UPLOAD_COMPLETE"), "{existing:?}");
    // The uploader (here the admin key) still hears that it is complete.
    let own = app.admin(&status("plans"), json!({})).await;
    assert_eq!(own.code(), "UPLOAD_COMPLETE", "{:#}", own.body);
    app.shutdown().await;
}

#[tokio::test]
async fn every_chunk_of_an_upload_is_checked_against_the_bucket_as_it_is_now() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path()).await;
    config.upload_chunk_size = 65_536;
    let app = crate::helpers::spawn_with(config, dir).await;
    app.admin(
        "mutation { createBucket(input: {id: \"drop\", name: \"Drop\", permissions: [\"create(\\\"users\\\")\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let ann = app.signed_in("ann-probe-chunks@example.com").await;
    let start = |id: &str| json!({"input": {"bucketId": "drop", "fileId": id, "name": format!("{id}.bin"), "size": 100_000}});
    let started = "mutation($input: CreateFileUploadInput!) { createFileUpload(input: $input) { uploadUrl } }";
    let url = |answer: Value| {
        answer["createFileUpload"]["uploadUrl"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let first = url(app.as_session(&ann, started, start("first")).await.ok());
    let second = url(app.as_session(&ann, started, start("second")).await.ok());
    let put = |url: String, range: &'static str, len: usize| {
        let (app, ann) = (&app, &ann);
        async move {
            let response = app
                .client
                .put(format!("{}{url}", app.url))
                .header("authorization", format!("Bearer {ann}"))
                .header("content-range", range)
                .body(vec![7u8; len])
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            (
                status,
                response.json::<Value>().await.unwrap_or(Value::Null),
            )
        }
    };
    let (status, body) = put(first.clone(), "bytes 0-65535/100000", 65_536).await;
    assert_eq!(status, 200, "{body}");

    // The owner stops users creating files: the started upload stops too.
    app.admin(
        "mutation { updateBucket(input: {id: \"drop\", permissions: []}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let (status, body) = put(first.clone(), "bytes 65536-99999/100000", 34_464).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "PERMISSION_DENIED",
        "{body}"
    );

    // Allowed again, but files are now capped below this upload's size.
    app.admin(
        "mutation { updateBucket(input: {id: \"drop\", permissions: [\"create(\\\"users\\\")\"], maximumFileSize: 50000}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let (status, body) = put(second, "bytes 0-65535/100000", 65_536).await;
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "FILE_TOO_LARGE",
        "{status} {body}"
    );

    // Neither file was completed.
    let files = app
        .admin(
            "{ files(bucketId: \"drop\") { nodes { id status } } }",
            json!({}),
        )
        .await
        .ok();
    let nodes = files["files"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        nodes.iter().all(|file| file["status"] != "READY"),
        "{files:#}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn removing_a_membership_tells_an_outsider_nothing_of_which_exist() {
    let app = spawn_app().await;
    let owner = app.signed_in("owner-probe-teams@example.com").await;
    let outsider = app.signed_in("outsider-probe-teams@example.com").await;
    app.as_session(
        &owner,
        "mutation { createTeam(input: {id: \"club\", name: \"Club\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let memberships = app
        .as_session(
            &owner,
            "{ memberships(teamId: \"club\") { id } }",
            json!({}),
        )
        .await
        .ok();
    let real = memberships["memberships"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let delete = "mutation($m: ID!) { deleteMembership(input: {teamId: \"club\", membershipId: $m}) { deletedId } }";
    let existing = app.as_session(&outsider, delete, json!({"m": real})).await;
    let missing = app
        .as_session(&outsider, delete, json!({"m": "nosuchmembership"}))
        .await;
    assert_eq!(existing.code(), "TEAM_NOT_FOUND", "{:#}", existing.body);
    assert_eq!(missing.code(), existing.code(), "{:#}", missing.body);
    // The owner's membership is untouched.
    let kept = app
        .as_session(
            &owner,
            "{ memberships(teamId: \"club\") { id } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(kept["memberships"][0]["id"], real.as_str());
    app.shutdown().await;
}

#[tokio::test]
async fn a_reference_shows_a_related_id_only_to_who_may_read_that_document() {
    let app = spawn_app().await;
    database(&app, "refs").await;
    for (id, permissions, document_security) in [
        ("notes", json!([]), true),
        (
            "boards",
            json!(["read(\"any\")", "update(\"users\")"]),
            false,
        ),
    ] {
        app.admin(
            CREATE_COLLECTION,
            json!({"input": {
                "databaseId": "refs", "id": id, "name": id,
                "documentSecurity": document_security,
                "permissions": permissions,
                "attributes": [{"key": "text", "type": "STRING", "size": 200, "required": true}],
            }}),
        )
        .await
        .ok();
    }
    app.admin(
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }",
        json!({"input": {
            "databaseId": "refs", "collectionId": "boards", "key": "note",
            "relatedCollectionId": "notes", "type": "MANY_TO_ONE", "onDelete": "SET_NULL"
        }}),
    )
    .await
    .ok();
    for (id, permissions) in [("hidden", json!([])), ("open", json!(["read(\"any\")"]))] {
        app.admin(
            "mutation($id: ID!, $p: [String!]) { createNote(input: {id: $id, text: \"t\", permissions: $p}) { id } }",
            json!({"id": id, "p": permissions}),
        )
        .await
        .ok();
        app.admin(
            "mutation($id: ID!, $n: ID) { createBoard(input: {id: $id, text: \"b\", note: $n}) { id } }",
            json!({"id": format!("on-{id}"), "n": id}),
        )
        .await
        .ok();
    }

    let one = |id: &str| {
        format!(
            "{{ document(databaseId: \"refs\", collectionId: \"boards\", id: \"{id}\") {{ data }} }}"
        )
    };
    let hidden = guest(&app, &one("on-hidden")).await.ok();
    assert_eq!(
        hidden["document"]["data"]["note"],
        Value::Null,
        "{hidden:#}"
    );
    let open = guest(&app, &one("on-open")).await.ok();
    assert_eq!(open["document"]["data"]["note"], "open", "{open:#}");
    let listed = guest(
        &app,
        "{ documents(databaseId: \"refs\", collectionId: \"boards\") { documents { id data } } }",
    )
    .await
    .ok();
    let notes: Vec<(Value, Value)> = listed["documents"]["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].clone(), d["data"]["note"].clone()))
        .collect();
    assert_eq!(
        notes,
        vec![
            (json!("on-hidden"), Value::Null),
            (json!("on-open"), json!("open"))
        ],
        "{listed:#}"
    );
    // Nor can a guest find out by matching or sorting on the reference.
    let by_reference = "query($q: [String!]) { documents(databaseId: \"refs\", collectionId: \"boards\", queries: $q) { documents { id } } }";
    for query in [
        json!({"method": "equal", "attribute": "note", "values": ["hidden"]}),
        json!({"method": "isNotNull", "attribute": "note", "values": []}),
        json!({"method": "orderAsc", "attribute": "note"}),
    ] {
        let refused = app
            .post(
                json!({"query": by_reference, "variables": {"q": [query.to_string()]}}),
                &[],
            )
            .await;
        assert_eq!(
            refused.code(),
            "PERMISSION_DENIED",
            "{query}: {:#}",
            refused.body
        );
    }
    let by_text = app
        .post(
            json!({"query": by_reference, "variables": {"q": [json!({"method": "equal", "attribute": "text", "values": ["b"]}).to_string()]}}),
            &[],
        )
        .await
        .ok();
    assert_eq!(
        by_text["documents"]["documents"].as_array().unwrap().len(),
        2
    );
    // A writer's answer shows no more than a read.
    let ann = app.signed_in("ann-probe-refs@example.com").await;
    let written = app
        .as_session(
            &ann,
            "mutation { updateDocument(input: {databaseId: \"refs\", collectionId: \"boards\", id: \"on-hidden\", data: {text: \"c\"}}) { data } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        written["updateDocument"]["data"]["text"], "c",
        "{written:#}"
    );
    assert_eq!(
        written["updateDocument"]["data"]["note"],
        Value::Null,
        "{written:#}"
    );
    // The typed field agrees, and the server still sees the reference.
    let typed = guest(&app, "{ board(id: \"on-hidden\") { note { id } } }")
        .await
        .ok();
    assert_eq!(typed["board"]["note"], Value::Null);
    let served = app.admin(&one("on-hidden"), json!({})).await.ok();
    assert_eq!(served["document"]["data"]["note"], "hidden");
    app.shutdown().await;
}
