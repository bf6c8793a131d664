//! Names in the database that come from what a client chose: every key and id the
//! API accepts makes names that fit both backends (MariaDB's 64 characters), through
//! every structural change: attributes of each type, indexes of each type,
//! relationships of each kind on both sides, collections and databases, at the
//! longest key (62 characters) and id (36). One past the longest is refused with
//! the code of what the client named, never about a name it did not choose.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const KEY_MAX: usize = 62;

/// A key of exactly `len` characters starting with `name`.
fn key_of(name: &str, len: usize) -> String {
    format!("{name}_{}", "x".repeat(len - name.len() - 1))
}

fn long(name: &str) -> String {
    key_of(name, KEY_MAX)
}

async fn admin_ok(app: &TestApp, query: &str, input: Value) -> Value {
    let answer = app.admin(query, json!({ "input": input })).await;
    assert!(
        answer.body.get("errors").is_none(),
        "{query}: {:#}",
        answer.body
    );
    answer.ok()
}

const CREATE_ATTRIBUTE: &str =
    "mutation($input: CreateAttributeInput!) { createAttribute(input: $input) { id } }";
const CREATE_INDEX: &str =
    "mutation($input: CreateIndexInput!) { createIndex(input: $input) { id } }";
const CREATE_RELATIONSHIP: &str =
    "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }";
const DELETE_ATTRIBUTE: &str =
    "mutation($input: DeleteAttributeInput!) { deleteAttribute(input: $input) { id } }";
const DELETE_INDEX: &str =
    "mutation($input: DeleteIndexInput!) { deleteIndex(input: $input) { id } }";

/// One attribute of every type, each with a key of `KEY_MAX` characters led by
/// `prefix`.
fn every_type(prefix: &str) -> Vec<Value> {
    let k = |name: &str| long(&format!("{prefix}{name}"));
    vec![
        json!({"key": k("string"), "type": "STRING", "size": 100}),
        json!({"key": k("text"), "type": "STRING", "size": 100000}),
        json!({"key": k("integer"), "type": "INTEGER"}),
        json!({"key": k("float"), "type": "FLOAT"}),
        json!({"key": k("boolean"), "type": "BOOLEAN"}),
        json!({"key": k("datetime"), "type": "DATETIME"}),
        json!({"key": k("email"), "type": "EMAIL"}),
        json!({"key": k("url"), "type": "URL"}),
        json!({"key": k("ip"), "type": "IP"}),
        json!({"key": k("enum"), "type": "ENUM", "elements": ["a", "b"]}),
        json!({"key": k("list"), "type": "STRING", "size": 20, "array": true}),
    ]
}

/// A key, a unique and a full-text index, with keys of `KEY_MAX` characters, on
/// the attributes [`every_type`] made with `prefix`.
fn every_index(prefix: &str) -> Vec<Value> {
    let k = |name: &str| long(&format!("{prefix}{name}"));
    vec![
        json!({"key": k("by_string"), "type": "KEY", "attributes": [k("string"), k("integer")], "orders": ["ASC", "DESC"]}),
        json!({"key": k("one_float"), "type": "UNIQUE", "attributes": [k("float")]}),
        json!({"key": k("words"), "type": "FULLTEXT", "attributes": [k("text")]}),
    ]
}

#[tokio::test]
async fn the_longest_keys_and_ids_go_through_every_structural_change() {
    let app = spawn_app().await;
    let db = "d".repeat(36);
    let (posts, authors, tags) = ("p".repeat(36), "a".repeat(36), "t".repeat(36));
    admin_ok(
        &app,
        "mutation($input: CreateDatabaseInput!) { createDatabase(input: $input) { id } }",
        json!({"id": db, "name": "Longest"}),
    )
    .await;
    let create_collection =
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }";
    // Per-document security, so every key and unique index also gets its twin.
    admin_ok(
        &app,
        create_collection,
        json!({"databaseId": db, "id": posts, "name": "posts", "documentSecurity": true,
               "attributes": every_type("c_"), "indexes": every_index("c_")}),
    )
    .await;
    for (id, name) in [(&authors, "authors"), (&tags, "tags")] {
        admin_ok(
            &app,
            create_collection,
            json!({"databaseId": db, "id": id, "name": name, "documentSecurity": true,
                   "attributes": [{"key": long("label"), "type": "STRING", "size": 50}]}),
        )
        .await;
    }
    for attribute in every_type("a_") {
        admin_ok(
            &app,
            CREATE_ATTRIBUTE,
            json!({"databaseId": db, "collectionId": posts, "attribute": attribute}),
        )
        .await;
    }
    for index in every_index("a_") {
        admin_ok(
            &app,
            CREATE_INDEX,
            json!({"databaseId": db, "collectionId": posts, "index": index}),
        )
        .await;
    }
    // Relationship keys around the length where the reference index's name
    // (`ref_<key>`) stops fitting, on both sides of every kind.
    let relationships = [
        (
            &posts,
            &authors,
            "MANY_TO_ONE",
            long("writer"),
            long("written"),
        ),
        (
            &posts,
            &authors,
            "ONE_TO_ONE",
            key_of("editor", 58),
            long("edited"),
        ),
        (
            &authors,
            &posts,
            "ONE_TO_MANY",
            long("drafts"),
            key_of("draft_author", 59),
        ),
        (&posts, &tags, "MANY_TO_MANY", long("tags"), long("tagged")),
        (
            &posts,
            &posts,
            "MANY_TO_ONE",
            key_of("parent", 60),
            long("children"),
        ),
    ];
    for (from, to, kind, key, two_way) in &relationships {
        admin_ok(
            &app,
            CREATE_RELATIONSHIP,
            json!({"databaseId": db, "collectionId": from, "relatedCollectionId": to,
                   "type": kind, "key": key, "twoWayKey": two_way, "onDelete": "SET_NULL"}),
        )
        .await;
    }

    // Documents go through every column, reference and index.
    let key = app
        .create_key("default", &["documents.read", "documents.write"])
        .await;
    let create_document =
        "mutation($input: CreateDocumentInput!) { createDocument(input: $input) { id data } }";
    let write = |collection: &str, id: &str, data: Value| json!({"input": {"databaseId": db, "collectionId": collection, "id": id, "data": data}});
    for (collection, id) in [(&authors, "ann"), (&tags, "red")] {
        app.as_key(
            &key,
            "default",
            create_document,
            write(collection, id, json!({ long("label"): id })),
        )
        .await
        .ok();
    }
    let mut data = serde_json::Map::new();
    for prefix in ["c_", "a_"] {
        let k = |name: &str| long(&format!("{prefix}{name}"));
        for (name, value) in [
            ("string", json!("short")),
            ("text", json!("hello long words")),
            ("integer", json!(7)),
            ("float", json!(if prefix == "c_" { 1.5 } else { 2.5 })),
            ("boolean", json!(true)),
            ("datetime", json!("2026-01-02T03:04:05.000Z")),
            ("email", json!("a@example.com")),
            ("url", json!("https://example.com/")),
            ("ip", json!("10.0.0.1")),
            ("enum", json!("b")),
            ("list", json!(["x", "y"])),
        ] {
            data.insert(k(name), value);
        }
    }
    data.insert(long("writer"), json!("ann"));
    data.insert(key_of("editor", 58), json!("ann"));
    data.insert(key_of("draft_author", 59), json!("ann"));
    data.insert(long("tags"), json!(["red"]));
    let created = app
        .as_key(
            &key,
            "default",
            create_document,
            write(&posts, "one", Value::Object(data)),
        )
        .await
        .ok();
    assert_eq!(
        created["createDocument"]["data"][long("c_integer")],
        7,
        "{created}"
    );
    let child = json!({ key_of("parent", 60): "one", long("c_float"): 3.5, long("a_float"): 4.5 });
    app.as_key(
        &key,
        "default",
        create_document,
        write(&posts, "two", child),
    )
    .await
    .ok();

    let documents = "query($d: ID!, $c: ID!, $q: [String!]) { documents(databaseId: $d, collectionId: $c, queries: $q) { total documents { id } } }";
    let find = |queries: Vec<String>| {
        let (db, posts) = (db.clone(), posts.clone());
        let app = &app;
        let key = key.clone();
        async move {
            app.as_key(
                &key,
                "default",
                documents,
                json!({"d": db, "c": posts, "q": queries}),
            )
            .await
            .ok()["documents"]
                .clone()
        }
    };
    let by_index = find(vec![
        json!({"method": "equal", "attribute": long("c_string"), "values": ["short"]}).to_string(),
        json!({"method": "orderDesc", "attribute": long("c_integer")}).to_string(),
    ])
    .await;
    assert_eq!(by_index["documents"], json!([{"id": "one"}]));
    for prefix in ["c_", "a_"] {
        let searched = find(vec![
            json!({"method": "search", "attribute": long(&format!("{prefix}text")), "values": ["words"]})
                .to_string(),
        ])
        .await;
        assert_eq!(searched["documents"], json!([{"id": "one"}]), "{prefix}");
    }
    let by_reference = find(vec![
        json!({"method": "equal", "attribute": key_of("parent", 60), "values": ["one"]})
            .to_string(),
    ])
    .await;
    assert_eq!(by_reference["documents"], json!([{"id": "two"}]));
    let clash = app
        .as_key(
            &key,
            "default",
            create_document,
            write(&posts, "three", json!({ long("c_float"): 1.5 })),
        )
        .await;
    assert_eq!(clash.code(), "DOCUMENT_NOT_UNIQUE", "{:#}", clash.body);

    // Taken down again, piece by piece.
    for prefix in ["c_", "a_"] {
        for index in every_index(prefix) {
            admin_ok(
                &app,
                DELETE_INDEX,
                json!({"databaseId": db, "collectionId": posts, "key": index["key"]}),
            )
            .await;
        }
    }
    for (from, _, kind, key, two_way) in &relationships {
        // A one-to-many relationship is held by the related collection.
        let (holder, held_key) = if *kind == "ONE_TO_MANY" {
            (&posts, two_way)
        } else {
            (*from, key)
        };
        admin_ok(
            &app,
            DELETE_ATTRIBUTE,
            json!({"databaseId": db, "collectionId": holder, "key": held_key}),
        )
        .await;
    }
    for prefix in ["c_", "a_"] {
        for attribute in every_type(prefix) {
            admin_ok(
                &app,
                DELETE_ATTRIBUTE,
                json!({"databaseId": db, "collectionId": posts, "key": attribute["key"]}),
            )
            .await;
        }
    }
    admin_ok(
        &app,
        "mutation($input: DeleteCollectionInput!) { deleteCollection(input: $input) { deletedId } }",
        json!({"databaseId": db, "id": posts}),
    )
    .await;
    admin_ok(
        &app,
        "mutation($input: DeleteDatabaseInput!) { deleteDatabase(input: $input) { deletedId } }",
        json!({"id": db}),
    )
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn one_past_the_longest_key_or_id_is_refused_for_what_the_client_named() {
    let app = spawn_app().await;
    let too_long = key_of("k", KEY_MAX + 1);
    let long_id = "i".repeat(37);
    let refused = |answer: crate::helpers::Answer, code: &str, field: &str| {
        assert_eq!(answer.code(), code, "{:#}", answer.body);
        let error = &answer.body["errors"][0];
        assert_eq!(error["extensions"]["field"], field, "{error:#}");
        let message = error["message"].as_str().unwrap();
        assert!(
            !message.contains("ref_") && !message.contains("i_"),
            "{message}"
        );
    };
    refused(
        app.admin(
            "mutation($input: CreateDatabaseInput!) { createDatabase(input: $input) { id } }",
            json!({"input": {"id": long_id, "name": "x"}}),
        )
        .await,
        "INVALID_ID",
        "id",
    );
    admin_ok(
        &app,
        "mutation($input: CreateDatabaseInput!) { createDatabase(input: $input) { id } }",
        json!({"id": "db", "name": "x"}),
    )
    .await;
    let create_collection =
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }";
    refused(
        app.admin(
            create_collection,
            json!({"input": {"databaseId": "db", "id": long_id, "name": "x"}}),
        )
        .await,
        "INVALID_ID",
        "id",
    );
    refused(
        app.admin(
            create_collection,
            json!({"input": {"databaseId": "db", "id": "c", "name": "c",
                              "attributes": [{"key": too_long, "type": "INTEGER"}]}}),
        )
        .await,
        "ATTRIBUTE_INVALID",
        &too_long,
    );
    for id in ["c", "other"] {
        admin_ok(
            &app,
            create_collection,
            json!({"databaseId": "db", "id": id, "name": id,
                   "attributes": [{"key": "n", "type": "INTEGER"}]}),
        )
        .await;
    }
    refused(
        app.admin(
            CREATE_ATTRIBUTE,
            json!({"input": {"databaseId": "db", "collectionId": "c",
                              "attribute": {"key": too_long, "type": "STRING", "size": 5}}}),
        )
        .await,
        "ATTRIBUTE_INVALID",
        &too_long,
    );
    let index = app
        .admin(
            CREATE_INDEX,
            json!({"input": {"databaseId": "db", "collectionId": "c",
                              "index": {"key": too_long, "type": "KEY", "attributes": ["n"]}}}),
        )
        .await;
    assert_eq!(index.code(), "INDEX_INVALID", "{:#}", index.body);
    assert!(
        index.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(&too_long[..40]),
        "{:#}",
        index.body
    );
    for kind in ["MANY_TO_ONE", "ONE_TO_ONE", "ONE_TO_MANY", "MANY_TO_MANY"] {
        refused(
            app.admin(
                CREATE_RELATIONSHIP,
                json!({"input": {"databaseId": "db", "collectionId": "c", "relatedCollectionId": "other",
                                  "type": kind, "key": too_long, "twoWayKey": "back"}}),
            )
            .await,
            "ATTRIBUTE_INVALID",
            &too_long,
        );
        refused(
            app.admin(
                CREATE_RELATIONSHIP,
                json!({"input": {"databaseId": "db", "collectionId": "c", "relatedCollectionId": "other",
                                  "type": kind, "key": "there", "twoWayKey": too_long}}),
            )
            .await,
            "ATTRIBUTE_INVALID",
            &too_long,
        );
    }
    app.shutdown().await;
}

/// A key the generated types already use beside the attributes (a filter's
/// `and`/`or`/`not`, an update's `expectedUpdatedAt`) is refused for attributes
/// and relationships alike: taken, it would leave the project without a schema,
/// so every request to it would fail.
#[tokio::test]
async fn keys_of_generated_fields_are_refused_and_the_project_keeps_working() {
    let app = spawn_app().await;
    let key = app.create_key("default", &["databases.write"]).await;
    let as_key = |query: &'static str, input: Value| {
        let app = &app;
        let key = key.clone();
        async move {
            app.as_key(&key, "default", query, json!({ "input": input }))
                .await
        }
    };
    admin_ok(
        &app,
        "mutation($input: CreateDatabaseInput!) { createDatabase(input: $input) { id } }",
        json!({"id": "db", "name": "db"}),
    )
    .await;
    for id in ["c", "other"] {
        admin_ok(
            &app,
            "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
            json!({"databaseId": "db", "id": id, "name": id,
                   "attributes": [{"key": "n", "type": "INTEGER"}]}),
        )
        .await;
    }
    for taken in ["and", "or", "not", "expectedUpdatedAt"] {
        let attribute = as_key(
            CREATE_ATTRIBUTE,
            json!({"databaseId": "db", "collectionId": "c",
                   "attribute": {"key": taken, "type": "STRING", "size": 10}}),
        )
        .await;
        assert_eq!(
            attribute.code(),
            "ATTRIBUTE_INVALID",
            "{taken}: {:#}",
            attribute.body
        );
        for (key, back) in [(taken, "back"), ("there", taken)] {
            let relationship = as_key(
                CREATE_RELATIONSHIP,
                json!({"databaseId": "db", "collectionId": "c", "relatedCollectionId": "other",
                       "type": "MANY_TO_ONE", "key": key, "twoWayKey": back}),
            )
            .await;
            assert_eq!(
                relationship.code(),
                "ATTRIBUTE_INVALID",
                "{key}/{back}: {:#}",
                relationship.body
            );
        }
    }
    let still = app
        .as_key(&key, "default", "{ __typename }", json!({}))
        .await
        .ok();
    assert_eq!(still["__typename"], "Query");
    app.shutdown().await;
}
