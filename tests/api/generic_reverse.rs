//! Writes through the side of a relationship that holds no reference, as
//! Appwrite's clients make them: a person's `libraries` (the parent side of a
//! one-to-many), a one-to-one's other side, a many-to-many's related side;
//! given as ids or as documents, each write checked as the caller's own.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const CREATE: &str = "mutation($c: ID!, $id: ID!, $data: JSON!, $p: [String!]) { createDocument(input: {databaseId: \"town\", collectionId: $c, id: $id, data: $data, permissions: $p}) { id data } }";
const UPDATE: &str = "mutation($c: ID!, $id: ID!, $data: JSON) { updateDocument(input: {databaseId: \"town\", collectionId: $c, id: $id, data: $data}) { id data } }";
const DOCUMENT: &str = "query($c: ID!, $id: ID!) { document(databaseId: \"town\", collectionId: $c, id: $id) { id permissions data } }";

/// `town`: people, their libraries (a person owns many: ONE_TO_MANY
/// `people.libraries`, kept as `libraries.person`), cards (ONE_TO_ONE
/// `cards.owner`, seen from a person as `card`), genres (MANY_TO_MANY
/// `libraries.genres`, seen from a genre as `libraries`), vaults (ONE_TO_MANY
/// `people.vaults`, kept as `vaults.keeper`; MANY_TO_MANY `vaults.genres`, seen
/// from a genre as `vaults`), and a person's mentor (MANY_TO_ONE `people.mentor`,
/// seen from the mentor as `mentees`). Signed-in users read and create
/// everything but vaults, which they only create; documents carry their own
/// permissions.
async fn town(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"town\", name: \"Town\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let open = json!(["read(\"users\")", "create(\"users\")"]);
    for (id, key, permissions) in [
        ("people", "fullName", &open),
        ("libraries", "libraryName", &open),
        ("cards", "number", &open),
        ("genres", "label", &open),
        ("vaults", "label", &json!(["create(\"users\")"])),
    ] {
        app.admin(
            "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
            json!({"input": {
                "databaseId": "town", "id": id, "name": id, "documentSecurity": true,
                "permissions": permissions,
                "attributes": [{"key": key, "type": "STRING", "size": 50}],
            }}),
        )
        .await
        .ok();
    }
    for (collection, key, related, kind, two_way) in [
        ("people", "libraries", "libraries", "ONE_TO_MANY", "person"),
        ("cards", "owner", "people", "ONE_TO_ONE", "card"),
        ("libraries", "genres", "genres", "MANY_TO_MANY", "libraries"),
        ("people", "vaults", "vaults", "ONE_TO_MANY", "keeper"),
        ("vaults", "genres", "genres", "MANY_TO_MANY", "vaults"),
        ("people", "mentor", "people", "MANY_TO_ONE", "mentees"),
    ] {
        app.admin(
            "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }",
            json!({"input": {
                "databaseId": "town", "collectionId": collection, "key": key,
                "relatedCollectionId": related, "type": kind, "twoWayKey": two_way,
                "onDelete": "SET_NULL"
            }}),
        )
        .await
        .ok();
    }
}

/// A document as a key reads it, null when there is none.
async fn stored(app: &TestApp, collection: &str, id: &str) -> Value {
    app.admin(DOCUMENT, json!({"c": collection, "id": id}))
        .await
        .ok()["document"]
        .clone()
}

/// The ids of what `select` nests of document `id`'s `field`, sorted.
async fn nested_ids(app: &TestApp, collection: &str, id: &str, field: &str) -> Vec<String> {
    let select = json!({"method": "select", "values": [format!("{field}.$id")]}).to_string();
    let read = app
        .admin(
            "query($c: ID!, $id: ID!, $q: [String!]) { document(databaseId: \"town\", collectionId: $c, id: $id, queries: $q) { data } }",
            json!({"c": collection, "id": id, "q": [select]}),
        )
        .await
        .ok();
    let mut ids: Vec<String> = match &read["document"]["data"][field] {
        Value::Array(items) => items
            .iter()
            .map(|item| item["$id"].as_str().unwrap().to_string())
            .collect(),
        Value::Object(item) => vec![item["$id"].as_str().unwrap().to_string()],
        _ => Vec::new(),
    };
    ids.sort();
    ids
}

/// The ids of a list of ids, or of documents (a write answers those it was
/// given inline nested).
fn ids(list: &Value) -> Vec<String> {
    let mut ids: Vec<String> = list
        .as_array()
        .unwrap_or_else(|| panic!("a list of ids: {list}"))
        .iter()
        .map(|id| id.as_str().or(id["$id"].as_str()).unwrap().to_string())
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn documents_pointing_at_a_document_are_written_from_its_side() {
    let app = spawn_app().await;
    town(&app).await;
    let ray = app.signed_in("ray@example.com").await;

    // Created with two new libraries, one without an id: both point at it,
    // and take the person's permissions for want of their own.
    let everyone = json!(["read(\"any\")", "update(\"any\")"]);
    let made = app
        .as_session(
            &ray,
            CREATE,
            json!({"c": "people", "id": "ray", "p": everyone, "data": {
                "fullName": "Ray Charles",
                "libraries": [
                    {"$id": "l10", "libraryName": "Library 10"},
                    {"$id": "unique()", "libraryName": "Library 11"},
                ],
            }}),
        )
        .await
        .ok();
    let listed = ids(&made["createDocument"]["data"]["libraries"]);
    assert_eq!(listed.len(), 2, "{made}");
    assert!(listed.contains(&"l10".to_string()));
    let l11 = listed.iter().find(|id| *id != "l10").unwrap().clone();
    assert_eq!(nested_ids(&app, "people", "ray", "libraries").await, listed);
    for library in &listed {
        let library = stored(&app, "libraries", library).await;
        assert_eq!(library["data"]["person"], "ray", "{library}");
        assert_eq!(library["permissions"], everyone, "{library}");
    }

    // Listed again, the list is what the person points at: one left out is
    // cleared, an existing one named by id is taken, a repeated id is one.
    let other = app
        .as_session(
            &ray,
            CREATE,
            json!({"c": "libraries", "id": "l12", "p": everyone, "data": {"libraryName": "Library 12"}}),
        )
        .await
        .ok();
    assert_eq!(other["createDocument"]["id"], "l12");
    let updated = app
        .as_session(
            &ray,
            UPDATE,
            json!({"c": "people", "id": "ray", "data": {"libraries": ["l10", "l12", {"$id": "l12"}]}}),
        )
        .await
        .ok();
    assert_eq!(
        ids(&updated["updateDocument"]["data"]["libraries"]),
        ["l10", "l12"]
    );
    assert_eq!(
        nested_ids(&app, "people", "ray", "libraries").await,
        ["l10", "l12"]
    );
    assert_eq!(
        stored(&app, "libraries", &l11).await["data"]["person"],
        Value::Null
    );
    // An update that leaves the field out leaves the list alone.
    app.as_session(
        &ray,
        UPDATE,
        json!({"c": "people", "id": "ray", "data": {"fullName": "Ray"}}),
    )
    .await
    .ok();
    assert_eq!(
        nested_ids(&app, "people", "ray", "libraries").await,
        ["l10", "l12"]
    );

    // Each document whose reference changes is the caller's update: another
    // user may read Ray's own library but not change it, and nothing of the
    // write is kept.
    let own = app
        .as_session(
            &ray,
            CREATE,
            json!({"c": "libraries", "id": "l13", "p": ["read(\"users\")"], "data": {"libraryName": "Ray's"}}),
        )
        .await
        .ok();
    assert_eq!(own["createDocument"]["id"], "l13");
    let vee = app.signed_in("vee@example.com").await;
    let denied = app
        .as_session(
            &vee,
            CREATE,
            json!({"c": "people", "id": "vee", "data": {"fullName": "Vee", "libraries": ["l13"]}}),
        )
        .await;
    assert_eq!(denied.code(), "PERMISSION_DENIED", "{:#}", denied.body);
    assert!(stored(&app, "people", "vee").await.is_null());
    assert_eq!(
        stored(&app, "libraries", "l13").await["data"]["person"],
        Value::Null
    );
    // What the caller may not read is as missing, and stays as it is.
    let hidden = app
        .admin(
            CREATE,
            json!({"c": "vaults", "id": "v1", "p": [], "data": {"label": "Hidden", "keeper": "ray"}}),
        )
        .await
        .ok();
    assert_eq!(hidden["createDocument"]["id"], "v1");
    let missing = app
        .as_session(
            &vee,
            CREATE,
            json!({"c": "people", "id": "vee", "data": {"vaults": ["v1"]}}),
        )
        .await;
    assert_eq!(
        missing.code(),
        "RELATED_DOCUMENT_NOT_FOUND",
        "{:#}",
        missing.body
    );
    assert_eq!(missing.body["errors"][0]["extensions"]["field"], "vaults");
    let kept = app
        .as_session(
            &ray,
            UPDATE,
            json!({"c": "people", "id": "ray", "data": {"vaults": [{"$id": "v2", "label": "Ray's"}]}}),
        )
        .await
        .ok();
    assert_eq!(ids(&kept["updateDocument"]["data"]["vaults"]), ["v2"]);
    assert_eq!(stored(&app, "vaults", "v1").await["data"]["keeper"], "ray");
    assert_eq!(stored(&app, "vaults", "v2").await["data"]["keeper"], "ray");
    app.as_session(
        &ray,
        UPDATE,
        json!({"c": "people", "id": "ray", "data": {"libraries": [], "vaults": []}}),
    )
    .await
    .ok();
    assert_eq!(
        stored(&app, "libraries", "l10").await["data"]["person"],
        Value::Null
    );
    assert_eq!(
        stored(&app, "vaults", "v2").await["data"]["keeper"],
        Value::Null
    );
    assert_eq!(stored(&app, "vaults", "v1").await["data"]["keeper"], "ray");

    // Bad values are refused, with the field named.
    let many: Vec<String> = (0..1001).map(|n| format!("x{n}")).collect();
    for (value, code) in [
        (json!("l10"), "VALUE_INVALID"),
        (json!([5]), "VALUE_INVALID"),
        (json!(["not an id!"]), "VALUE_INVALID"),
        (json!(many), "VALUE_INVALID"),
        (json!(["nobody"]), "RELATED_DOCUMENT_NOT_FOUND"),
        (
            json!({"method": "arrayAppend", "values": ["l10"]}),
            "VALUE_INVALID",
        ),
        (json!([{"libraryName": 7}]), "VALUE_INVALID"),
    ] {
        let refused = app
            .as_session(
                &ray,
                UPDATE,
                json!({"c": "people", "id": "ray", "data": {"libraries": value}}),
            )
            .await;
        assert_eq!(refused.code(), code, "{value}: {:#}", refused.body);
        let field = refused.body["errors"][0]["extensions"]["field"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        assert!(field.starts_with("libraries"), "{value}: {field}");
    }
    let bulk = app
        .admin(
            "mutation($data: JSON) { updateDocuments(input: {databaseId: \"town\", collectionId: \"people\", data: $data}) { id } }",
            json!({"data": {"libraries": ["l10"]}}),
        )
        .await;
    assert_eq!(bulk.code(), "VALUE_INVALID", "{:#}", bulk.body);
    assert_eq!(
        stored(&app, "libraries", "l10").await["data"]["person"],
        Value::Null
    );

    // A one-to-one from its other side: one document, an id, or null.
    let carded = app
        .as_session(
            &ray,
            UPDATE,
            json!({"c": "people", "id": "ray", "data": {"card": {"$id": "c1", "number": "1"}}}),
        )
        .await
        .ok();
    assert_eq!(carded["updateDocument"]["data"]["card"]["$id"], "c1");
    assert_eq!(stored(&app, "cards", "c1").await["data"]["owner"], "ray");
    app.admin(
        CREATE,
        json!({"c": "cards", "id": "c2", "p": ["read(\"users\")", "update(\"users\")"], "data": {"number": "2"}}),
    )
    .await
    .ok();
    app.as_session(
        &ray,
        UPDATE,
        json!({"c": "people", "id": "ray", "data": {"card": "c2"}}),
    )
    .await
    .ok();
    assert_eq!(
        stored(&app, "cards", "c1").await["data"]["owner"],
        Value::Null
    );
    assert_eq!(stored(&app, "cards", "c2").await["data"]["owner"], "ray");
    assert_eq!(nested_ids(&app, "people", "ray", "card").await, ["c2"]);
    let listed = app
        .as_session(
            &ray,
            UPDATE,
            json!({"c": "people", "id": "ray", "data": {"card": ["c1"]}}),
        )
        .await;
    assert_eq!(listed.code(), "VALUE_INVALID", "{:#}", listed.body);
    app.as_session(
        &ray,
        UPDATE,
        json!({"c": "people", "id": "ray", "data": {"card": null}}),
    )
    .await
    .ok();
    assert_eq!(
        stored(&app, "cards", "c2").await["data"]["owner"],
        Value::Null
    );

    // A many-to-many from its related side replaces the genre's links.
    let jazz = app
        .as_session(
            &ray,
            CREATE,
            json!({"c": "genres", "id": "jazz", "p": everyone, "data": {
                "label": "Jazz",
                "libraries": ["l10", {"$id": "l20", "libraryName": "Library 20"}],
            }}),
        )
        .await
        .ok();
    assert_eq!(
        ids(&jazz["createDocument"]["data"]["libraries"]),
        ["l10", "l20"]
    );
    assert_eq!(
        nested_ids(&app, "libraries", "l10", "genres").await,
        ["jazz"]
    );
    assert_eq!(
        nested_ids(&app, "libraries", "l20", "genres").await,
        ["jazz"]
    );
    app.as_session(
        &ray,
        UPDATE,
        json!({"c": "genres", "id": "jazz", "data": {"libraries": ["l20"]}}),
    )
    .await
    .ok();
    assert!(
        nested_ids(&app, "libraries", "l10", "genres")
            .await
            .is_empty()
    );
    assert_eq!(
        nested_ids(&app, "genres", "jazz", "libraries").await,
        ["l20"]
    );
    let unreadable = app
        .as_session(
            &ray,
            UPDATE,
            json!({"c": "genres", "id": "jazz", "data": {"libraries": ["nobody"]}}),
        )
        .await;
    assert_eq!(
        unreadable.code(),
        "RELATED_DOCUMENT_NOT_FOUND",
        "{:#}",
        unreadable.body
    );
    assert_eq!(
        nested_ids(&app, "genres", "jazz", "libraries").await,
        ["l20"]
    );
    // A link to a document the caller may not read is not its to remove.
    app.admin(
        CREATE,
        json!({"c": "vaults", "id": "v3", "p": [], "data": {"label": "Sealed", "genres": ["jazz"]}}),
    )
    .await
    .ok();
    let unlinked = app
        .as_session(
            &ray,
            UPDATE,
            json!({"c": "genres", "id": "jazz", "data": {"vaults": []}}),
        )
        .await
        .ok();
    assert_eq!(unlinked["updateDocument"]["data"]["vaults"], json!([]));
    assert_eq!(nested_ids(&app, "vaults", "v3", "genres").await, ["jazz"]);

    // An upsert takes them too, its id made by the create.
    let upserted = app
        .as_session(
            &ray,
            "mutation($data: JSON!) { upsertDocument(input: {databaseId: \"town\", collectionId: \"people\", id: \"unique()\", data: $data}) { id data } }",
            json!({"data": {"fullName": "Nat", "libraries": [{"libraryName": "Library 30"}]}}),
        )
        .await
        .ok();
    let nat = upserted["upsertDocument"]["id"].as_str().unwrap();
    assert_ne!(nat, "unique()");
    let library = upserted["upsertDocument"]["data"]["libraries"][0]["$id"]
        .as_str()
        .unwrap();
    assert_eq!(
        stored(&app, "libraries", library).await["data"]["person"],
        nat
    );

    // Both sides of a relationship of a collection with itself at once are refused.
    let both = app
        .as_session(
            &ray,
            UPDATE,
            json!({"c": "people", "id": "ray", "data": {"mentor": "ray", "mentees": []}}),
        )
        .await;
    assert_eq!(both.code(), "VALUE_INVALID", "{:#}", both.body);
    assert_eq!(both.body["errors"][0]["extensions"]["field"], "mentees");
    app.as_session(
        &ray,
        UPDATE,
        json!({"c": "people", "id": "ray", "data": {"mentees": ["ray", nat]}}),
    )
    .await
    .ok();
    assert_eq!(stored(&app, "people", nat).await["data"]["mentor"], "ray");
    assert_eq!(stored(&app, "people", "ray").await["data"]["mentor"], "ray");

    // A collection lists the relationships pointing at it, seen from its side.
    let seen = app
        .admin(
            "{ collection(databaseId: \"town\", id: \"people\") { reverseRelationships { key relatedCollectionId type twoWayKey onDelete status } } }",
            json!({}),
        )
        .await
        .ok();
    let mut sides: Vec<Value> = seen["collection"]["reverseRelationships"]
        .as_array()
        .unwrap()
        .clone();
    sides.sort_by_key(|side| side["key"].as_str().unwrap_or_default().to_string());
    assert_eq!(
        sides,
        [
            json!({"key": "card", "relatedCollectionId": "cards", "type": "ONE_TO_ONE", "twoWayKey": "owner", "onDelete": "SET_NULL", "status": "available"}),
            json!({"key": "libraries", "relatedCollectionId": "libraries", "type": "ONE_TO_MANY", "twoWayKey": "person", "onDelete": "SET_NULL", "status": "available"}),
            json!({"key": "mentees", "relatedCollectionId": "people", "type": "ONE_TO_MANY", "twoWayKey": "mentor", "onDelete": "SET_NULL", "status": "available"}),
            json!({"key": "vaults", "relatedCollectionId": "vaults", "type": "ONE_TO_MANY", "twoWayKey": "keeper", "onDelete": "SET_NULL", "status": "available"}),
        ]
    );

    // The typed API's inputs take them as ids.
    let typed = app
        .as_session(
            &ray,
            "mutation { createPerson(input: {id: \"tia\", fullName: \"Tia\", libraries: [\"l10\"], card: \"c1\"}) { id } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(typed["createPerson"]["id"], "tia");
    assert_eq!(
        stored(&app, "libraries", "l10").await["data"]["person"],
        "tia"
    );
    assert_eq!(stored(&app, "cards", "c1").await["data"]["owner"], "tia");
    app.as_session(
        &ray,
        "mutation { updatePerson(input: {id: \"tia\", libraries: [], card: null}) { id } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        stored(&app, "libraries", "l10").await["data"]["person"],
        Value::Null
    );
    assert_eq!(
        stored(&app, "cards", "c1").await["data"]["owner"],
        Value::Null
    );
    app.shutdown().await;
}

#[tokio::test]
async fn each_document_a_reverse_field_changes_announces_its_update() {
    use crate::event_log_rows::{live_counters, next_document_event};
    use crate::helpers::WAIT;

    let (app, mut live, _) = live_counters().await;
    town(&app).await;
    app.admin(
        CREATE,
        json!({"c": "libraries", "id": "lx", "p": ["read(\"any\")"], "data": {"libraryName": "X"}}),
    )
    .await
    .ok();
    app.admin(
        CREATE,
        json!({"c": "people", "id": "px", "p": ["read(\"any\")"], "data": {"fullName": "P", "libraries": ["lx"]}}),
    )
    .await
    .ok();
    let mut heard = Vec::new();
    while heard.len() < 3 {
        let event = next_document_event(&mut live, WAIT)
            .await
            .expect("the writes' events");
        heard.push((
            event["events"][0].as_str().unwrap_or_default().to_string(),
            event["payload"].clone(),
        ));
    }
    let (last, library) = &heard[2];
    assert!(last.ends_with("documents.lx.update"), "{heard:?}");
    assert_eq!(library["person"], "px");
    assert!(heard[1].0.ends_with("documents.px.create"), "{heard:?}");
    app.shutdown().await;
}
