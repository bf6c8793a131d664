//! Document writes reach only what the caller owns: links and references only
//! to documents it may read, cascades with its own access, answers and
//! subscription events with only what it may read; and bad input (a zero
//! increment, control characters) is refused with a stable code.

use serde_json::{Value, json};

use crate::helpers::{TestApp, WsClient, spawn_app};

const CREATE_COLLECTION: &str =
    "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }";
const RELATE: &str =
    "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }";

/// A `sec` database: `notes` (each its creator's), `boards` pointing at notes
/// three ways (`note` MANY_TO_ONE SET_NULL, `pin` ONE_TO_ONE RESTRICT, `links`
/// MANY_TO_MANY CASCADE), and `drops` that signed-in users may create and
/// update but nobody may read.
async fn setup(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"sec\", name: \"Sec\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for (id, attributes, permissions, document_security) in [
        (
            "notes",
            json!([
                {"key": "text", "type": "STRING", "size": 200, "required": true},
                {"key": "n", "type": "INTEGER", "default": 0}
            ]),
            json!(["create(\"users\")"]),
            true,
        ),
        (
            "boards",
            json!([{"key": "name", "type": "STRING", "size": 100, "required": true}]),
            json!(["create(\"users\")"]),
            true,
        ),
        (
            "drops",
            json!([
                {"key": "text", "type": "STRING", "size": 200, "required": true},
                {"key": "n", "type": "INTEGER", "default": 0}
            ]),
            json!(["create(\"users\")", "update(\"users\")"]),
            false,
        ),
    ] {
        app.admin(
            CREATE_COLLECTION,
            json!({"input": {
                "databaseId": "sec", "id": id, "name": id,
                "documentSecurity": document_security,
                "permissions": permissions,
                "attributes": attributes,
                "indexes": if id == "notes" {
                    json!([{"key": "text_search", "type": "FULLTEXT", "attributes": ["text"]}])
                } else {
                    json!([])
                }
            }}),
        )
        .await
        .ok();
    }
    for (key, kind, two_way, on_delete) in [
        ("note", "MANY_TO_ONE", "boards", "SET_NULL"),
        ("pin", "ONE_TO_ONE", "pinnedBy", "RESTRICT"),
        ("links", "MANY_TO_MANY", "linkedBoards", "CASCADE"),
    ] {
        app.admin(
            RELATE,
            json!({"input": {
                "databaseId": "sec", "collectionId": "boards", "key": key,
                "relatedCollectionId": "notes", "type": kind,
                "twoWayKey": two_way, "onDelete": on_delete
            }}),
        )
        .await
        .ok();
    }
}

async fn user_id(app: &TestApp, secret: &str) -> String {
    app.as_session(secret, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Creates a note as `secret` with `permissions` (none: its creator's alone).
async fn note(app: &TestApp, secret: &str, id: &str, permissions: Option<Value>) {
    app.as_session(
        secret,
        "mutation($input: CreateNoteInput!) { createNote(input: $input) { id } }",
        json!({"input": {"id": id, "text": format!("text of {id}"), "permissions": permissions}}),
    )
    .await
    .ok();
}

/// A note as the admin sees it: null once it is gone.
async fn admin_note(app: &TestApp, id: &str) -> Value {
    app.admin(
        "query($id: ID!) { note(id: $id) { id text } }",
        json!({"id": id}),
    )
    .await
    .ok()["note"]
        .clone()
}

/// The error message with every quoted id made alike, to compare two answers'
/// shapes.
fn shape(answer: &crate::helpers::Answer, ids: &[&str]) -> (String, String) {
    let mut message = answer.body["errors"][0]["message"]
        .as_str()
        .unwrap_or("<no message>")
        .to_string();
    for id in ids {
        message = message.replace(id, "ID");
    }
    (answer.code().to_string(), message)
}

#[tokio::test]
async fn linking_a_document_the_caller_cannot_read_is_like_linking_a_missing_one() {
    let app = spawn_app().await;
    setup(&app).await;
    let ann = app.signed_in("ann-links@example.com").await;
    let bob = app.signed_in("bob-links@example.com").await;
    note(&app, &ann, "secret", None).await;
    note(&app, &ann, "shared", Some(json!(["read(\"users\")"]))).await;
    app.as_session(
        &bob,
        "mutation { createBoard(input: {id: \"mine\", name: \"Mine\"}) { id } }",
        json!({}),
    )
    .await
    .ok();

    // Every way of setting a reference or links, typed and generic.
    let writes: Vec<(&str, Value)> = vec![
        (
            "mutation($t: ID) { createBoard(input: {name: \"B\", note: $t}) { id } }",
            json!({}),
        ),
        (
            "mutation($t: ID) { createBoard(input: {name: \"B\", pin: $t}) { id } }",
            json!({}),
        ),
        (
            "mutation($t: ID!) { createBoard(input: {name: \"B\", links: [$t]}) { id } }",
            json!({}),
        ),
        (
            "mutation($t: ID) { updateBoard(input: {id: \"mine\", note: $t}) { id } }",
            json!({}),
        ),
        (
            "mutation($t: ID) { updateBoard(input: {id: \"mine\", pin: $t}) { id } }",
            json!({}),
        ),
        (
            "mutation($t: ID!) { updateBoard(input: {id: \"mine\", links: [$t]}) { id } }",
            json!({}),
        ),
        (
            "mutation($t: ID) { upsertBoard(input: {id: \"mine\", note: $t}) { id } }",
            json!({}),
        ),
        (
            "mutation($t: ID!) { upsertBoard(input: {id: \"fresh\", name: \"F\", links: [$t]}) { id } }",
            json!({}),
        ),
        (
            "mutation($t: ID) { createBoards(input: [{name: \"B1\"}, {name: \"B2\", pin: $t}]) { id } }",
            json!({}),
        ),
        (
            "mutation($t: ID) { updateBoards(input: [{id: \"mine\", note: $t}]) { id } }",
            json!({}),
        ),
        (
            "mutation($data: JSON!) { createDocument(input: {databaseId: \"sec\", collectionId: \"boards\", data: $data}) { id } }",
            json!({"name": "G", "note": "$t"}),
        ),
        (
            "mutation($data: JSON!) { updateDocument(input: {databaseId: \"sec\", collectionId: \"boards\", id: \"mine\", data: $data}) { id } }",
            json!({"links": ["$t"]}),
        ),
    ];
    for (query, data) in &writes {
        let variables = |target: &str| {
            let data = serde_json::to_string(data).unwrap().replace("$t", target);
            json!({"t": target, "data": serde_json::from_str::<Value>(&data).unwrap()})
        };
        let hidden = app.as_session(&bob, query, variables("secret")).await;
        let missing = app.as_session(&bob, query, variables("nothere")).await;
        assert_eq!(hidden.code(), "RELATED_DOCUMENT_NOT_FOUND", "{query}");
        assert_eq!(
            shape(&hidden, &["secret"]),
            shape(&missing, &["nothere"]),
            "{query}: an unreadable document answers as a missing one"
        );
        assert!(hidden.body["data"].is_null() || hidden.body["data"] == json!(null));
    }
    // Nothing was written by the refused requests.
    let board = app
        .admin(
            "{ board(id: \"mine\") { note { id } pin { id } links { nodes { id } } } boards { totalCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        board,
        json!({"board": {"note": null, "pin": null, "links": {"nodes": []}}, "boards": {"totalCount": 1}})
    );

    // A readable document links; a key holding documents.write reaches any.
    app.as_session(
        &bob,
        "mutation { updateBoard(input: {id: \"mine\", note: \"shared\", pin: \"shared\", links: [\"shared\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let key = app.create_key("default", &["documents.write"]).await;
    app.as_key(
        &key,
        "default",
        "mutation { createBoard(input: {id: \"server\", name: \"S\", note: \"secret\", links: [\"secret\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.shutdown().await;
}

#[tokio::test]
async fn cascades_and_set_null_run_with_the_callers_access_or_not_at_all() {
    let app = spawn_app().await;
    setup(&app).await;
    let ann = app.signed_in("ann-cascade@example.com").await;
    let bob = app.signed_in("bob-cascade@example.com").await;
    let ann_id = user_id(&app, &ann).await;
    // Readable by every user, Ann's to delete.
    let shared = json!(["read(\"users\")", format!("delete(\"user:{ann_id}\")")]);
    note(&app, &ann, "victim", Some(shared.clone())).await;
    note(&app, &bob, "own", None).await;
    // Bob may read Ann's note, so may link it; deleting his board would cascade
    // to it through `links`.
    app.as_session(
        &bob,
        "mutation { createBoard(input: {id: \"trap\", name: \"Trap\", links: [\"victim\", \"own\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for delete in [
        "mutation { deleteBoard(input: {id: \"trap\"}) { deletedId } }",
        "mutation { deleteBoards(input: {filter: {id: {eq: \"trap\"}}}) { deletedIds } }",
        "mutation { deleteDocument(input: {databaseId: \"sec\", collectionId: \"boards\", id: \"trap\"}) { deletedId } }",
    ] {
        let refused = app.as_session(&bob, delete, json!({})).await;
        assert_eq!(refused.code(), "PERMISSION_DENIED", "{delete}");
        let message = refused.body["errors"][0]["message"].as_str().unwrap();
        assert!(!message.contains("victim"), "{message}");
    }
    assert_eq!(admin_note(&app, "victim").await["id"], "victim");
    assert_eq!(
        admin_note(&app, "own").await["id"],
        "own",
        "rolled back whole"
    );
    let trap = app
        .admin("{ board(id: \"trap\") { id } }", json!({}))
        .await
        .ok();
    assert_eq!(trap["board"]["id"], "trap");

    // A cascade within what the caller may delete runs.
    app.as_session(
        &bob,
        "mutation { createBoard(input: {id: \"tidy\", name: \"Tidy\", links: [\"own\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.as_session(
        &bob,
        "mutation { updateBoard(input: {id: \"trap\", links: [\"victim\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.as_session(
        &bob,
        "mutation { deleteBoard(input: {id: \"tidy\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    assert!(
        admin_note(&app, "own").await.is_null(),
        "cascaded to Bob's own note"
    );

    // SET_NULL in a document the deleter may not update: refused, unchanged.
    app.as_session(
        &bob,
        "mutation { updateBoard(input: {id: \"trap\", note: \"victim\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let refused = app
        .as_session(
            &ann,
            "mutation { deleteNote(input: {id: \"victim\"}) { deletedId } }",
            json!({}),
        )
        .await;
    assert_eq!(refused.code(), "PERMISSION_DENIED");
    let message = refused.body["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains("trap"), "{message}");
    assert_eq!(admin_note(&app, "victim").await["id"], "victim");
    let trap = app
        .admin("{ board(id: \"trap\") { note { id } } }", json!({}))
        .await
        .ok();
    assert_eq!(trap["board"]["note"]["id"], "victim");

    // RESTRICT holds even when the blocker is unreadable, and names no id.
    note(&app, &ann, "pinned", Some(shared)).await;
    app.as_session(
        &bob,
        "mutation { createBoard(input: {id: \"hidden-pin\", name: \"P\", pin: \"pinned\", permissions: []}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let refused = app
        .as_session(
            &ann,
            "mutation { deleteNote(input: {id: \"pinned\"}) { deletedId } }",
            json!({}),
        )
        .await;
    assert_eq!(refused.code(), "DOCUMENT_REFERENCED");
    let message = refused.body["errors"][0]["message"].as_str().unwrap();
    assert!(!message.contains("hidden-pin"), "{message}");

    // The server's key reaches everything, as before.
    let key = app.create_key("default", &["documents.write"]).await;
    app.as_key(
        &key,
        "default",
        "mutation { deleteBoard(input: {id: \"trap\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    assert!(admin_note(&app, "victim").await.is_null());
    app.shutdown().await;
}

#[tokio::test]
async fn mutations_answer_null_for_documents_the_caller_may_not_read() {
    let app = spawn_app().await;
    setup(&app).await;
    let bob = app.signed_in("bob-drops@example.com").await;
    let run = |query: &'static str| {
        let (app, bob) = (&app, bob.clone());
        async move { app.as_session(&bob, query, json!({})).await.ok() }
    };
    // `drops`: Bob may create and update, never read.
    let answers = [
        (
            run("mutation { createDrop(input: {id: \"d1\", text: \"a\"}) { id text } }").await,
            "createDrop",
            json!(null),
        ),
        (
            run("mutation { createDrops(input: [{id: \"d2\", text: \"b\"}, {id: \"d3\", text: \"c\"}]) { id text } }").await,
            "createDrops",
            json!([]),
        ),
        (
            run("mutation { updateDrop(input: {id: \"d1\", text: \"a2\"}) { id text } }").await,
            "updateDrop",
            json!(null),
        ),
        (
            run("mutation { updateDrops(input: [{id: \"d2\", text: \"b2\"}]) { id text } }").await,
            "updateDrops",
            json!([]),
        ),
        (
            run("mutation { upsertDrop(input: {id: \"d3\", text: \"c2\"}) { id text } }").await,
            "upsertDrop",
            json!(null),
        ),
        (
            run("mutation { upsertDrop(input: {id: \"d4\", text: \"d\"}) { id text } }").await,
            "upsertDrop",
            json!(null),
        ),
        (
            run("mutation { incrementDrop(input: {id: \"d1\", field: n, by: 2}) { id n } }").await,
            "incrementDrop",
            json!(null),
        ),
        (
            run("mutation { decrementDrop(input: {id: \"d1\", field: n}) { id n } }").await,
            "decrementDrop",
            json!(null),
        ),
        (
            run("mutation { createDocument(input: {databaseId: \"sec\", collectionId: \"drops\", id: \"d5\", data: {text: \"e\"}}) { id data } }").await,
            "createDocument",
            json!(null),
        ),
        (
            run("mutation { updateDocument(input: {databaseId: \"sec\", collectionId: \"drops\", id: \"d5\", data: {text: \"e2\"}}) { id data } }").await,
            "updateDocument",
            json!(null),
        ),
    ];
    for (data, field, expected) in answers {
        assert_eq!(data[field], expected, "{field}");
    }
    // The writes happened.
    let stored = app
        .admin(
            "{ drops(orderBy: [{id: ASC}]) { nodes { id text n } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        stored["drops"]["nodes"],
        json!([
            {"id": "d1", "text": "a2", "n": 1},
            {"id": "d2", "text": "b2", "n": 0},
            {"id": "d3", "text": "c2", "n": 0},
            {"id": "d4", "text": "d", "n": 0},
            {"id": "d5", "text": "e2", "n": 0}
        ])
    );

    // Whether a step passes a bound tells the value: only a reader may give one
    // (an increment without one still works for Bob).
    for query in [
        "mutation { incrementDrop(input: {id: \"d1\", field: n, by: 1, max: 5}) { id } }",
        "mutation { decrementDrop(input: {id: \"d1\", field: n, by: 1, min: 0}) { id } }",
    ] {
        let refused = app.as_session(&bob, query, json!({})).await;
        assert_eq!(refused.code(), "PERMISSION_DENIED", "{:#}", refused.body);
    }
    let bounded = app
        .admin(
            "mutation { incrementDrop(input: {id: \"d1\", field: n, by: 1, max: 5}) { n } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(bounded["incrementDrop"]["n"], 2);

    // A document created with permissions that leave its creator out.
    let given = run("mutation { createNote(input: {id: \"gift\", text: \"for all\", permissions: [\"update(\\\"users\\\")\"]}) { id text } }").await;
    assert_eq!(given["createNote"], json!(null));
    let others = app.signed_in("cy-drops@example.com").await;
    let updated = app
        .as_session(
            &others,
            "mutation { updateNote(input: {id: \"gift\", text: \"changed\"}) { id text } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(updated["updateNote"], json!(null));
    // What the caller may read still comes back.
    let own =
        run("mutation { createNote(input: {id: \"mine\", text: \"mine\"}) { id text } }").await;
    assert_eq!(own["createNote"], json!({"id": "mine", "text": "mine"}));
    app.shutdown().await;
}

/// The next `noteChanged` payload on `ws`.
async fn changed(ws: &mut WsClient) -> Value {
    ws.next_json().await.expect("an event")["payload"]["data"]["noteChanged"].clone()
}

#[tokio::test]
async fn subscribers_see_a_previous_version_only_if_they_could_read_it() {
    let app = spawn_app().await;
    setup(&app).await;
    let ann = app.signed_in("ann-previous@example.com").await;
    let bob = app.signed_in("bob-previous@example.com").await;
    let ann_id = user_id(&app, &ann).await;
    let query = "subscription { noteChanged { type node { id text } previous { id text } } }";
    let mut watchers = Vec::new();
    for secret in [&ann, &bob] {
        let mut ws = WsClient::connect(&app.ws_url, false).await;
        ws.init(json!({"Authorization": format!("Bearer {secret}")}))
            .await
            .expect("ack");
        ws.subscribe("1", query).await;
        ws.ping_pong().await;
        watchers.push(ws);
    }
    let own = |action: &str| format!("{action}(\"user:{ann_id}\")");
    let update = "mutation($input: UpdateNoteInput!) { updateNote(input: $input) { id } }";
    app.as_session(
        &ann,
        "mutation($input: CreateNoteInput!) { createNote(input: $input) { id } }",
        json!({"input": {"id": "n1", "text": "private", "permissions": [own("read"), own("update")]}}),
    )
    .await
    .ok();
    assert_eq!(changed(&mut watchers[0]).await["type"], "CREATE");
    // Made readable by all: Bob sees the new version, not the private one.
    app.as_session(
        &ann,
        update,
        json!({"input": {"id": "n1", "text": "public", "permissions": ["read(\"users\")", own("update")]}}),
    )
    .await
    .ok();
    assert_eq!(
        changed(&mut watchers[0]).await,
        json!({"type": "UPDATE", "node": {"id": "n1", "text": "public"}, "previous": {"id": "n1", "text": "private"}})
    );
    assert_eq!(
        changed(&mut watchers[1]).await,
        json!({"type": "UPDATE", "node": {"id": "n1", "text": "public"}, "previous": null})
    );
    // Both could read the previous version.
    app.as_session(
        &ann,
        update,
        json!({"input": {"id": "n1", "text": "still public"}}),
    )
    .await
    .ok();
    for ws in &mut watchers {
        assert_eq!(
            changed(ws).await["previous"],
            json!({"id": "n1", "text": "public"})
        );
    }
    // Made private again: Bob hears nothing of the new version. The next event
    // he gets is a later one he may read.
    app.as_session(
        &ann,
        update,
        json!({"input": {"id": "n1", "text": "secret again", "permissions": [own("read"), own("update")]}}),
    )
    .await
    .ok();
    assert_eq!(
        changed(&mut watchers[0]).await["node"]["text"],
        "secret again"
    );
    app.as_session(
        &ann,
        "mutation($input: CreateNoteInput!) { createNote(input: $input) { id } }",
        json!({"input": {"id": "n2", "text": "open", "permissions": ["read(\"users\")"]}}),
    )
    .await
    .ok();
    assert_eq!(
        changed(&mut watchers[1]).await,
        json!({"type": "CREATE", "node": {"id": "n2", "text": "open"}, "previous": null})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_document_leaves_a_filtered_set_only_for_subscribers_who_could_read_it_there() {
    let app = spawn_app().await;
    setup(&app).await;
    let ann = app.signed_in("ann-leave@example.com").await;
    let bob = app.signed_in("bob-leave@example.com").await;
    let ann_id = user_id(&app, &ann).await;
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"Authorization": format!("Bearer {bob}")}))
        .await
        .expect("ack");
    ws.subscribe(
        "1",
        "subscription { noteChanged(filter: {text: {eq: \"in\"}}) { type node { id text } previous { text } } }",
    )
    .await;
    ws.ping_pong().await;
    let own = format!("update(\"user:{ann_id}\")");
    let write = |query: &'static str, input: Value| {
        let (app, ann) = (&app, ann.clone());
        async move {
            app.as_session(&ann, query, json!({"input": input}))
                .await
                .ok()
        }
    };
    let create = "mutation($input: CreateNoteInput!) { createNote(input: $input) { id } }";
    let update = "mutation($input: UpdateNoteInput!) { updateNote(input: $input) { id } }";
    // In Bob's set while he may not read it, then out of it once he may: he
    // never saw it there, so he hears nothing.
    let own_read = format!("read(\"user:{ann_id}\")");
    write(
        create,
        json!({"id": "hid", "text": "in", "permissions": [own.clone(), own_read]}),
    )
    .await;
    write(
        update,
        json!({"id": "hid", "text": "out", "permissions": ["read(\"users\")", own.clone()]}),
    )
    .await;
    // A readable one entering and leaving his set: he hears both.
    write(
        create,
        json!({"id": "seen", "text": "in", "permissions": ["read(\"users\")", own.clone()]}),
    )
    .await;
    write(update, json!({"id": "seen", "text": "out"})).await;
    let first = ws.next_json().await.expect("an event");
    assert_eq!(
        first["payload"]["data"]["noteChanged"],
        json!({"type": "CREATE", "node": {"id": "seen", "text": "in"}, "previous": null})
    );
    let second = ws.next_json().await.expect("an event");
    assert_eq!(
        second["payload"]["data"]["noteChanged"],
        json!({"type": "LEAVE", "node": {"id": "seen", "text": "out"}, "previous": {"text": "in"}})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn increments_by_zero_are_refused() {
    let app = spawn_app().await;
    setup(&app).await;
    let ann = app.signed_in("ann-zero@example.com").await;
    note(&app, &ann, "z", None).await;
    for query in [
        "mutation { incrementNote(input: {id: \"z\", field: n, by: 0}) { n } }",
        "mutation { decrementNote(input: {id: \"z\", field: n, by: 0}) { n } }",
        "mutation { incrementNote(input: {id: \"z\", field: n, by: 0.0, max: 10}) { n } }",
    ] {
        let refused = app.as_session(&ann, query, json!({})).await;
        assert_eq!(refused.code(), "VALUE_INVALID", "{query}");
    }
    let by_one = app
        .as_session(
            &ann,
            "mutation { incrementNote(input: {id: \"z\", field: n}) { n } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(by_one["incrementNote"]["n"], 1);
    app.shutdown().await;
}

#[tokio::test]
async fn control_characters_in_search_terms_and_filter_values_are_invalid_values() {
    let app = spawn_app().await;
    setup(&app).await;
    let key = app
        .create_key("default", &["documents.read", "documents.write"])
        .await;
    app.as_key(
        &key,
        "default",
        "mutation { createNote(input: {id: \"plain\", text: \"plain words\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for bad in ["a\u{0}b", "\u{0}", "word\u{1}", "x\u{7f}"] {
        for (query, variables) in [
            (
                "query($s: String!) { notes(filter: {text: {search: $s}}) { totalCount nodes { id } } }",
                json!({"s": bad}),
            ),
            (
                "query($q: [String!]) { documents(databaseId: \"sec\", collectionId: \"notes\", queries: $q) { total } }",
                json!({"q": [json!({"method": "search", "attribute": "text", "values": [bad]}).to_string()]}),
            ),
        ] {
            let answer = app.as_key(&key, "default", query, variables).await;
            assert_eq!(
                answer.code(),
                "VALUE_INVALID",
                "{query} with {bad:?}: {:#}",
                answer.body
            );
        }
    }
    // Other string inputs that reach SQL: never INTERNAL.
    let nul = "a\u{0}b";
    for (query, variables) in [
        (
            "query($s: String!) { notes(filter: {text: {eq: $s}}) { totalCount } }",
            json!({"s": nul}),
        ),
        (
            "query($s: String!) { notes(filter: {text: {startsWith: $s}}) { totalCount } }",
            json!({"s": nul}),
        ),
        (
            "query($s: String!) { notes(filter: {text: {contains: $s}}) { totalCount } }",
            json!({"s": nul}),
        ),
        (
            "query($s: String!) { notes(filter: {id: {eq: $s}}) { totalCount } }",
            json!({"s": nul}),
        ),
        ("query($s: ID!) { note(id: $s) { id } }", json!({"s": nul})),
        (
            "query($q: [String!]) { documents(databaseId: \"sec\", collectionId: \"notes\", queries: $q) { total } }",
            json!({"q": [json!({"method": "equal", "attribute": "text", "values": [nul]}).to_string()]}),
        ),
        (
            "query($q: [String!]) { documents(databaseId: \"sec\", collectionId: \"notes\", queries: $q) { total } }",
            json!({"q": [json!({"method": "cursorAfter", "values": [nul]}).to_string()]}),
        ),
        (
            "mutation($s: String!) { createNote(input: {text: $s}) { id } }",
            json!({"s": nul}),
        ),
        (
            "mutation($s: ID!) { createNote(input: {id: $s, text: \"t\"}) { id } }",
            json!({"s": nul}),
        ),
        (
            "mutation($s: ID!) { updateNote(input: {id: $s, text: \"t\"}) { id } }",
            json!({"s": nul}),
        ),
    ] {
        let answer = app.as_key(&key, "default", query, variables).await;
        assert_ne!(answer.code(), "INTERNAL", "{query}: {:#}", answer.body);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn plural_collection_names_get_english_singular_type_names() {
    let app = spawn_app().await;
    app.admin(
        "mutation { createDatabase(input: {id: \"names\", name: \"Names\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for (id, name) in [("movies", "Movies"), ("people", "People")] {
        app.admin(
            CREATE_COLLECTION,
            json!({"input": {
                "databaseId": "names", "id": id, "name": name,
                "permissions": ["read(\"any\")"],
                "attributes": [{"key": "title", "type": "STRING", "size": 100, "required": true}]
            }}),
        )
        .await
        .ok();
    }
    let key = app.create_key("default", &["documents.write"]).await;
    let created = app
        .as_key(
            &key,
            "default",
            "mutation { createMovie(input: {id: \"m1\", title: \"Alien\"}) { __typename id } createPerson(input: {id: \"p1\", title: \"Ripley\"}) { __typename id } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        created,
        json!({"createMovie": {"__typename": "Movie", "id": "m1"}, "createPerson": {"__typename": "Person", "id": "p1"}})
    );
    let listed = app
        .post(
            json!({"query": "{ movie(id: \"m1\") { title } movies { nodes { title } } person(id: \"p1\") { title } people { totalCount } }"}),
            &[],
        )
        .await
        .ok();
    assert_eq!(
        listed,
        json!({"movie": {"title": "Alien"}, "movies": {"nodes": [{"title": "Alien"}]}, "person": {"title": "Ripley"}, "people": {"totalCount": 1}})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_right_to_update_grants_no_right_the_caller_lacks() {
    let app = spawn_app().await;
    setup(&app).await;
    let ann = app.signed_in("ann-grants@example.com").await;
    let bob = app.signed_in("bob-grants@example.com").await;
    let (ann_id, bob_id) = (user_id(&app, &ann).await, user_id(&app, &bob).await);
    let grant = |action: &str, id: &str| format!("{action}(\"user:{id}\")");
    let set_by_admin = |permissions: Vec<String>| {
        app.admin(
            "mutation($p: [String!]!) { updateNote(input: {id: \"handed\", permissions: $p}) { id } }",
            json!({"p": permissions}),
        )
    };
    note(&app, &ann, "handed", None).await;
    let mut handed = vec![
        grant("read", &ann_id),
        grant("update", &ann_id),
        grant("delete", &ann_id),
    ];
    handed.push(grant("update", &bob_id));
    set_by_admin(handed).await.ok();
    let update = "mutation($input: UpdateNoteInput!) { updateNote(input: $input) { id } }";
    let as_bob = |permissions: Vec<String>| {
        app.as_session(
            &bob,
            update,
            json!({"input": {"id": "handed", "text": "bob's", "permissions": permissions}}),
        )
    };
    // Bob may update Ann's note, but neither delete nor read it: he cannot give
    // himself either (`write` is update and delete).
    for permissions in [
        vec![grant("update", &bob_id), grant("delete", &bob_id)],
        vec![grant("read", &bob_id)],
        vec![format!("write(\"user:{bob_id}\")")],
        vec!["read(\"users\")".to_string()],
    ] {
        let refused = as_bob(permissions.clone()).await;
        assert_eq!(
            refused.code(),
            "PERMISSION_DENIED",
            "{permissions:?}: {:#}",
            refused.body
        );
    }
    assert_eq!(
        admin_note(&app, "handed").await,
        json!({"id": "handed", "text": "text of handed"}),
        "nothing was written"
    );
    let delete = "mutation { deleteNote(input: {id: \"handed\"}) { deletedId } }";
    let deleted = app.as_session(&bob, delete, json!({})).await;
    assert_eq!(deleted.code(), "DOCUMENT_NOT_FOUND", "{:#}", deleted.body);
    // What he may do already he may grant: reading, once he may read it.
    as_bob(vec![grant("update", &bob_id)]).await.ok();
    assert_eq!(admin_note(&app, "handed").await["text"], "bob's");
    set_by_admin(vec![grant("read", &bob_id), grant("update", &bob_id)])
        .await
        .ok();
    as_bob(vec![
        "read(\"users\")".to_string(),
        grant("update", &bob_id),
    ])
    .await
    .ok();
    let ann_reads = app
        .as_session(&ann, "{ note(id: \"handed\") { text } }", json!({}))
        .await
        .ok();
    assert_eq!(ann_reads["note"]["text"], "bob's");
    let deleted = app.as_session(&bob, delete, json!({})).await;
    assert_eq!(deleted.code(), "PERMISSION_DENIED", "{:#}", deleted.body);
    app.shutdown().await;
}

/// A list the collection lets the caller read none of is refused, as Appwrite
/// and PocketBase refuse it, rather than answered as an empty collection: by
/// its permissions (`PERMISSION_DENIED`), or while it is disabled (not found);
/// the same collection's documents inside a readable one stay hidden, not errors.
#[tokio::test]
async fn a_list_of_a_collection_the_caller_may_read_nothing_of_is_refused() {
    let app = spawn_app().await;
    setup(&app).await;
    let bob = app.signed_in("bob-lists@example.com").await;
    app.as_session(
        &bob,
        "mutation { createDrop(input: {id: \"d1\", text: \"t\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let typed = app
        .as_session(&bob, "{ drops { totalCount nodes { id } } }", json!({}))
        .await;
    assert_eq!(typed.code(), "PERMISSION_DENIED", "{:#}", typed.body);
    let generic = app
        .as_session(
            &bob,
            "{ documents(databaseId: \"sec\", collectionId: \"drops\") { total } }",
            json!({}),
        )
        .await;
    assert_eq!(generic.code(), "PERMISSION_DENIED", "{:#}", generic.body);
    let guest = app
        .post(json!({"query": "{ drops { totalCount } }"}), &[])
        .await;
    assert_eq!(guest.code(), "PERMISSION_DENIED", "{:#}", guest.body);
    // A server lists them.
    let listed = app.admin("{ drops { totalCount } }", json!({})).await.ok();
    assert_eq!(listed["drops"]["totalCount"], 1);

    // Notes with document security: a list of only one's own, however few.
    note(&app, &bob, "n1", None).await;
    let own = app
        .as_session(&bob, "{ notes { nodes { id } } }", json!({}))
        .await
        .ok();
    assert_eq!(own["notes"]["nodes"], json!([{"id": "n1"}]));
    let stranger = app.signed_in("cy-lists@example.com").await;
    let none = app
        .as_session(&stranger, "{ notes { totalCount } }", json!({}))
        .await
        .ok();
    assert_eq!(none["notes"]["totalCount"], 0);

    // Disabled: not found to clients, listed to servers.
    app.admin(
        "mutation { updateCollection(input: {databaseId: \"sec\", id: \"notes\", enabled: false}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for query in [
        "{ notes { totalCount } }",
        "{ documents(databaseId: \"sec\", collectionId: \"notes\") { total } }",
    ] {
        let refused = app.as_session(&bob, query, json!({})).await;
        assert_eq!(refused.code(), "COLLECTION_NOT_FOUND", "{:#}", refused.body);
    }
    let listed = app.admin("{ notes { totalCount } }", json!({})).await.ok();
    assert_eq!(listed["notes"]["totalCount"], 1);
    app.shutdown().await;
}

/// A key bypasses document permissions, so what a write leaves is its answer only
/// when the key may read documents too: `documents.write` alone is answered what a
/// guest may read (here, nothing; a collection readable by `any` answers it).
#[tokio::test]
async fn a_key_that_may_only_write_documents_is_answered_nothing_it_wrote() {
    let app = spawn_app().await;
    setup(&app).await;
    let bob = app.signed_in("bob-blind@example.com").await;
    note(&app, &bob, "n1", None).await;
    let writer = app.create_key("default", &["documents.write"]).await;
    let both = app
        .create_key("default", &["documents.write", "documents.read"])
        .await;
    let run = |key: String, query: &'static str| {
        let app = &app;
        async move { app.as_key(&key, "default", query, json!({})).await }
    };
    let refused = run(writer.clone(), "{ note(id: \"n1\") { text } }").await;
    assert_eq!(refused.code(), "SCOPE_MISSING");
    for (query, field) in [
        (
            "mutation { updateNote(input: {id: \"n1\", n: 1}) { text n } }",
            "updateNote",
        ),
        (
            "mutation { upsertNote(input: {id: \"n1\", text: \"t2\"}) { text } }",
            "upsertNote",
        ),
        (
            "mutation { createNote(input: {id: \"n2\", text: \"new\"}) { text } }",
            "createNote",
        ),
        (
            "mutation { updateDocument(input: {databaseId: \"sec\", collectionId: \"notes\", id: \"n1\", data: {}}) { data permissions } }",
            "updateDocument",
        ),
        (
            "mutation { createDocument(input: {databaseId: \"sec\", collectionId: \"notes\", id: \"n3\", data: {text: \"x\"}}) { data } }",
            "createDocument",
        ),
    ] {
        let answer = run(writer.clone(), query).await.ok();
        assert_eq!(answer[field], Value::Null, "{query}: {answer:#}");
    }
    // The writes stood.
    assert_eq!(admin_note(&app, "n1").await["text"], "t2");
    assert_eq!(admin_note(&app, "n2").await["text"], "new");
    // With `documents.read` too, the answer shows the document.
    let answer = run(
        both,
        "mutation { updateNote(input: {id: \"n1\", n: 2}) { text n } }",
    )
    .await
    .ok();
    assert_eq!(answer["updateNote"], json!({"text": "t2", "n": 2}));
    app.shutdown().await;
}

/// An upsert tells a caller no more of which ids exist than a create does: an
/// existing document it may neither read nor update is answered as a missing id.
#[tokio::test]
async fn an_upsert_does_not_tell_whether_an_unreadable_document_exists() {
    let app = spawn_app().await;
    setup(&app).await;
    let bob = app.signed_in("bob-upsert@example.com").await;
    note(&app, &bob, "mine", None).await;
    const UPSERT: &str =
        "mutation($id: ID!) { upsertNote(input: {id: $id, text: \"guess\"}) { id } }";
    // A guest may not create notes: the same refusal for an id that exists and
    // one that does not.
    let existing = app
        .post(json!({"query": UPSERT, "variables": {"id": "mine"}}), &[])
        .await;
    let missing = app
        .post(json!({"query": UPSERT, "variables": {"id": "nope"}}), &[])
        .await;
    assert_eq!(existing.code(), "PERMISSION_DENIED", "{:#}", existing.body);
    assert_eq!(
        shape(&existing, &["mine"]),
        shape(&missing, &["nope"]),
        "{:#} / {:#}",
        existing.body,
        missing.body
    );
    // A user who may create notes: taken, as `createNote` would say, and the
    // note is unchanged.
    let cy = app.signed_in("cy-upsert@example.com").await;
    let taken = app.as_session(&cy, UPSERT, json!({"id": "mine"})).await;
    assert_eq!(taken.code(), "DOCUMENT_ALREADY_EXISTS", "{:#}", taken.body);
    assert_eq!(admin_note(&app, "mine").await["text"], "text of mine");
    // Its owner updates it.
    let own = app
        .as_session(&bob, UPSERT, json!({"id": "mine"}))
        .await
        .ok();
    assert_eq!(own["upsertNote"]["id"], "mine");
    assert_eq!(admin_note(&app, "mine").await["text"], "guess");
    app.shutdown().await;
}

/// What one request's deletes remove or change through their relationships'
/// on-delete rules is bounded (10,000 documents): past it the delete is refused
/// whole, before it has held the writer for the lot.
#[tokio::test]
async fn a_requests_deletes_reach_at_most_ten_thousand_documents() {
    let app = spawn_app().await;
    setup(&app).await;
    app.admin(
        RELATE,
        json!({"input": {
            "databaseId": "sec", "collectionId": "boards", "key": "hub",
            "relatedCollectionId": "notes", "type": "MANY_TO_ONE", "onDelete": "CASCADE"
        }}),
    )
    .await
    .ok();
    let bob = app.signed_in("bob-cascade@example.com").await;
    note(&app, &bob, "hub", None).await;
    let boards: Vec<Value> = (0..1000)
        .map(|n| json!({"name": format!("b{n}"), "hub": "hub"}))
        .collect();
    for _ in 0..10 {
        app.as_session(
            &bob,
            "mutation($input: [CreateBoardInput!]!) { createBoards(input: $input) { id } }",
            json!({"input": boards}),
        )
        .await
        .ok();
    }
    const DELETE_HUB: &str = "mutation { deleteNote(input: {id: \"hub\"}) { deletedId } }";
    // The note and its 10,000 boards: one too many.
    let refused = app.as_session(&bob, DELETE_HUB, json!({})).await;
    assert_eq!(refused.code(), "TOO_MANY_DOCUMENTS", "{:#}", refused.body);
    let count = "{ boards { totalCount } note(id: \"hub\") { id } }";
    let left = app.admin(count, json!({})).await.ok();
    assert_eq!(
        left,
        json!({"boards": {"totalCount": 10000}, "note": {"id": "hub"}})
    );
    // One board fewer, and the whole cascade fits.
    let one = app
        .admin("{ boards(first: 1) { nodes { id } } }", json!({}))
        .await
        .ok()["boards"]["nodes"][0]["id"]
        .clone();
    app.as_session(
        &bob,
        "mutation($id: ID!) { deleteBoard(input: {id: $id}) { deletedId } }",
        json!({"id": one}),
    )
    .await
    .ok();
    let deleted = app.as_session(&bob, DELETE_HUB, json!({})).await.ok();
    assert_eq!(deleted["deleteNote"]["deletedId"], "hub");
    let left = app.admin(count, json!({})).await.ok();
    assert_eq!(left, json!({"boards": {"totalCount": 0}, "note": null}));
    app.shutdown().await;
}
