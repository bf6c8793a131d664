//! The generic API's bulk and atomic writes, as Appwrite names them:
//! `createDocuments`, `upsertDocument`, `updateDocuments`, `deleteDocuments`,
//! `incrementDocumentAttribute` and `decrementDocumentAttribute`.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// `shop.items`: anyone signed in may create and read; each item its creator's
/// to change (document security).
async fn items(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"shop\", name: \"Shop\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "shop", "id": "items", "name": "items",
            "documentSecurity": true,
            "permissions": ["read(\"users\")", "create(\"users\")"],
            "attributes": [
                {"key": "name", "type": "STRING", "size": 50, "required": true},
                {"key": "stock", "type": "INTEGER", "min": 0, "max": 100, "default": 0},
                {"key": "tag", "type": "STRING", "size": 20}
            ]
        }}),
    )
    .await
    .ok();
}

const CREATE_MANY: &str = "mutation($d: [JSON!]!) { createDocuments(input: {databaseId: \"shop\", collectionId: \"items\", documents: $d}) { id permissions data } }";
const UPDATE_MANY: &str = "mutation($data: JSON, $q: [String!]) { updateDocuments(input: {databaseId: \"shop\", collectionId: \"items\", data: $data, queries: $q}) { id data } }";
const DELETE_MANY: &str = "mutation($q: [String!]) { deleteDocuments(input: {databaseId: \"shop\", collectionId: \"items\", queries: $q}) { deletedIds } }";
const UPSERT: &str = "mutation($id: ID!, $data: JSON!) { upsertDocument(input: {databaseId: \"shop\", collectionId: \"items\", id: $id, data: $data}) { id data } }";
const STEP_UP: &str = "mutation($id: ID!, $by: Float, $limit: Float) { incrementDocumentAttribute(input: {databaseId: \"shop\", collectionId: \"items\", id: $id, attribute: \"stock\", value: $by, limit: $limit}) { data } }";
const STEP_DOWN: &str = "mutation($id: ID!, $by: Float, $limit: Float) { decrementDocumentAttribute(input: {databaseId: \"shop\", collectionId: \"items\", id: $id, attribute: \"stock\", value: $by, limit: $limit}) { data } }";

async fn names(app: &TestApp, secret: &str) -> Vec<String> {
    let listed = app
        .as_session(
            secret,
            "query($q: [String!]) { documents(databaseId: \"shop\", collectionId: \"items\", queries: $q) { documents { data } } }",
            json!({"q": [r#"{"method":"orderAsc","attribute":"name"}"#]}),
        )
        .await
        .ok();
    listed["documents"]["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            format!(
                "{}:{}",
                d["data"]["name"].as_str().unwrap(),
                d["data"]["stock"]
            )
        })
        .collect()
}

#[tokio::test]
async fn documents_are_written_in_bulk_and_stepped_with_each_ones_permission() {
    let app = spawn_app().await;
    items(&app).await;
    let ann = app.signed_in("ann@example.com").await;
    let bob = app.signed_in("bob@example.com").await;

    // Created together, with Appwrite's `$id` and `$permissions`.
    let made = app
        .as_session(
            &ann,
            CREATE_MANY,
            json!({"d": [
                {"$id": "apple", "name": "apple", "stock": 3, "tag": "fruit"},
                {"$id": "pear", "name": "pear", "stock": 5, "tag": "fruit"},
                {"name": "kale", "tag": "leaf", "$permissions": ["read(\"users\")"]}
            ]}),
        )
        .await
        .ok();
    let made = made["createDocuments"].as_array().unwrap();
    assert_eq!(made.len(), 3);
    assert_eq!(made[0]["id"], "apple");
    assert_eq!(made[2]["permissions"], json!(["read(\"users\")"]));
    // All or none: one bad document writes nothing.
    let refused = app
        .as_session(
            &ann,
            CREATE_MANY,
            json!({"d": [{"name": "plum"}, {"name": "fig", "stock": 1000}]}),
        )
        .await;
    assert_eq!(refused.code(), "VALUE_OUT_OF_RANGE", "{:#}", refused.body);
    assert_eq!(names(&app, &ann).await, ["apple:3", "kale:0", "pear:5"]);

    // Bob's bulk update finds Ann's fruit but may change none of it: all or none.
    let fruit = [r#"{"method":"equal","attribute":"tag","values":["fruit"]}"#];
    let bobs = app
        .as_session(&bob, UPDATE_MANY, json!({"data": {"stock": 0}, "q": fruit}))
        .await;
    assert_eq!(bobs.code(), "PERMISSION_DENIED", "{:#}", bobs.body);
    let anns = app
        .as_session(&ann, UPDATE_MANY, json!({"data": {"stock": 9}, "q": fruit}))
        .await
        .ok();
    assert_eq!(anns["updateDocuments"].as_array().unwrap().len(), 2);
    assert_eq!(names(&app, &ann).await, ["apple:9", "kale:0", "pear:9"]);

    // An upsert changes what exists and creates what does not.
    app.as_session(&ann, UPSERT, json!({"id": "apple", "data": {"stock": 1}}))
        .await
        .ok();
    let new = app
        .as_session(
            &ann,
            UPSERT,
            json!({"id": "plum", "data": {"name": "plum", "stock": 2}}),
        )
        .await
        .ok();
    assert_eq!(new["upsertDocument"]["id"], "plum");
    let bobs = app
        .as_session(&bob, UPSERT, json!({"id": "plum", "data": {"stock": 50}}))
        .await;
    assert_eq!(bobs.code(), "PERMISSION_DENIED", "{:#}", bobs.body);
    assert_eq!(
        names(&app, &ann).await,
        ["apple:1", "kale:0", "pear:9", "plum:2"]
    );

    // Steps are atomic and bounded by `limit` and the attribute's range.
    let up = app
        .as_session(&ann, STEP_UP, json!({"id": "plum", "by": 3}))
        .await
        .ok();
    assert_eq!(up["incrementDocumentAttribute"]["data"]["stock"], 5);
    let down = app
        .as_session(&ann, STEP_DOWN, json!({"id": "plum"}))
        .await
        .ok();
    assert_eq!(down["decrementDocumentAttribute"]["data"]["stock"], 4);
    for (query, variables) in [
        (STEP_UP, json!({"id": "plum", "by": 2, "limit": 5})),
        (STEP_DOWN, json!({"id": "plum", "by": 5})),
        (STEP_UP, json!({"id": "plum", "by": 200})),
    ] {
        let refused = app.as_session(&ann, query, variables.clone()).await;
        assert_eq!(
            refused.code(),
            "VALUE_OUT_OF_RANGE",
            "{variables}: {:#}",
            refused.body
        );
    }
    for bad in [
        json!({"id": "plum", "by": 0}),
        json!({"id": "plum", "by": -1}),
    ] {
        let refused = app.as_session(&ann, STEP_UP, bad.clone()).await;
        assert_eq!(
            refused.code(),
            "BAD_USER_INPUT",
            "{bad}: {:#}",
            refused.body
        );
    }
    let bobs = app.as_session(&bob, STEP_UP, json!({"id": "plum"})).await;
    assert_eq!(bobs.code(), "PERMISSION_DENIED", "{:#}", bobs.body);
    assert_eq!(
        names(&app, &ann).await,
        ["apple:1", "kale:0", "pear:9", "plum:4"]
    );

    // Bulk deletes take filter queries only, and each document's permission.
    let paged = app
        .as_session(
            &ann,
            DELETE_MANY,
            json!({"q": [r#"{"method":"limit","values":[1]}"#]}),
        )
        .await;
    assert_eq!(paged.code(), "QUERY_INVALID", "{:#}", paged.body);
    let bobs = app.as_session(&bob, DELETE_MANY, json!({"q": fruit})).await;
    assert_eq!(bobs.code(), "PERMISSION_DENIED", "{:#}", bobs.body);
    let deleted = app
        .as_session(&ann, DELETE_MANY, json!({"q": fruit}))
        .await
        .ok();
    let mut ids: Vec<Value> = deleted["deleteDocuments"]["deletedIds"]
        .as_array()
        .unwrap()
        .clone();
    ids.sort_by_key(|id| id.to_string());
    assert_eq!(ids, [json!("apple"), json!("pear")]);
    assert_eq!(names(&app, &ann).await, ["kale:0", "plum:4"]);

    // Too many at once is refused before anything is written.
    let many: Vec<Value> = (0..1001)
        .map(|i| json!({"name": format!("n{i}")}))
        .collect();
    let refused = app.as_session(&ann, CREATE_MANY, json!({"d": many})).await;
    assert_eq!(refused.code(), "TOO_MANY_DOCUMENTS", "{:#}", refused.body);
    app.shutdown().await;
}

#[tokio::test]
async fn bulk_writes_count_towards_a_requests_nodes_and_need_the_collections_reach() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path()).await;
    config.graphql_max_nodes = 500;
    let app = crate::helpers::spawn_with(config, dir).await;
    items(&app).await;
    let ann = app.signed_in("ann@example.com").await;
    // A bulk write answers as many documents as it writes: counted before it
    // runs, by its input's length or, by queries, the most it may write.
    let many: Vec<Value> = (0..501).map(|i| json!({"name": format!("n{i}")})).collect();
    let refused = app.as_session(&ann, CREATE_MANY, json!({"d": many})).await;
    assert_eq!(refused.code(), "QUERY_TOO_COMPLEX", "{:#}", refused.body);
    let few: Vec<Value> = (0..5).map(|i| json!({"name": format!("n{i}")})).collect();
    app.as_session(&ann, CREATE_MANY, json!({"d": few}))
        .await
        .ok();
    let refused = app
        .as_session(&ann, UPDATE_MANY, json!({"data": {"stock": 1}, "q": []}))
        .await;
    assert_eq!(refused.code(), "QUERY_TOO_COMPLEX", "{:#}", refused.body);

    // Without reach to the collection's documents, a bulk write by queries is
    // refused as the list is, not answered empty.
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "shop", "id": "vault", "name": "vault",
            "permissions": [],
            "attributes": [{"key": "name", "type": "STRING", "size": 50}]
        }}),
    )
    .await
    .ok();
    let hidden = app
        .as_session(
            &ann,
            "mutation { deleteDocuments(input: {databaseId: \"shop\", collectionId: \"vault\"}) { deletedIds } }",
            json!({}),
        )
        .await;
    assert_eq!(hidden.code(), "PERMISSION_DENIED", "{:#}", hidden.body);
    app.shutdown().await;
}

/// Appwrite's update operators (its SDKs send them as JSON strings in `data`)
/// change a document's values from what they are, under the write's lock:
/// concurrent increments all count, an upsert of an existing document and a
/// bulk update apply them to each document's own values, and an operator that
/// does not fit its attribute changes nothing.
#[tokio::test]
async fn update_operators_apply_to_the_current_values() {
    let app = spawn_app().await;
    items(&app).await;
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "shop", "id": "films", "name": "films",
            "permissions": ["read(\"any\")"],
            "attributes": [
                {"key": "title", "type": "STRING", "size": 100, "required": true},
                {"key": "year", "type": "INTEGER"},
                {"key": "rating", "type": "FLOAT"},
                {"key": "actors", "type": "STRING", "size": 20, "array": true},
                {"key": "seen", "type": "BOOLEAN"},
                {"key": "premiere", "type": "DATETIME"}
            ]
        }}),
    )
    .await
    .ok();
    let op = |method: &str, values: Value| json!({"method": method, "values": values}).to_string();
    let create = "mutation($id: ID!, $data: JSON!) { createDocument(input: {databaseId: \"shop\", collectionId: \"films\", id: $id, data: $data}) { id } }";
    for (id, year) in [("f1", 2020), ("f2", 1999)] {
        app.admin(
            create,
            json!({"id": id, "data": {"title": "Operator Test", "year": year, "rating": 1.5,
                "actors": ["A1", "A2"], "seen": false, "premiere": "2020-01-01 12:00:00"}}),
        )
        .await
        .ok();
    }
    let update = "mutation($id: ID!, $data: JSON) { updateDocument(input: {databaseId: \"shop\", collectionId: \"films\", id: $id, data: $data}) { data } }";
    let data_of = |answer: Value| answer["updateDocument"]["data"].clone();
    let changed = data_of(
        app.admin(
            update,
            json!({"id": "f1", "data": {
                "year": op("increment", json!([5])),
                // An object is taken too.
                "rating": {"method": "multiply", "values": [2]},
                "actors": op("arrayAppend", json!(["A3"])),
                "title": op("stringConcat", json!([" Appended"])),
                "seen": op("toggle", json!([])),
                "premiere": op("dateAddDays", json!([2]))
            }}),
        )
        .await
        .ok(),
    );
    assert_eq!(changed["year"], 2025, "{changed}");
    assert_eq!(changed["rating"], 3.0);
    assert_eq!(changed["actors"], json!(["A1", "A2", "A3"]));
    assert_eq!(changed["title"], "Operator Test Appended");
    assert_eq!(changed["seen"], true);
    assert_eq!(changed["premiere"], "2020-01-03T12:00:00.000+00:00");

    // What does not fit is refused, and changes nothing.
    for (data, field) in [
        (
            json!({"year": op("divide", json!([0])), "seen": false}),
            "year",
        ),
        (json!({"title": op("increment", json!([1]))}), "title"),
        (
            json!({"actors": op("arrayInsert", json!([9, "X"]))}),
            "actors",
        ),
    ] {
        let refused = app.admin(update, json!({"id": "f1", "data": data})).await;
        assert_eq!(refused.code(), "VALUE_INVALID", "{:#}", refused.body);
        assert_eq!(
            refused.body["errors"][0]["extensions"]["field"], field,
            "{:#}",
            refused.body
        );
    }
    // A writer who may not read the document may not use operators: what one
    // refuses would tell the value.
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "shop", "id": "vault", "name": "vault",
            "documentSecurity": true, "permissions": [],
            "attributes": [{"key": "amount", "type": "INTEGER"}]
        }}),
    )
    .await
    .ok();
    app.admin(
        "mutation { createDocument(input: {databaseId: \"shop\", collectionId: \"vault\", id: \"v\", data: {amount: 7}, permissions: [\"update(\\\"users\\\")\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let writer = app.signed_in("writer@example.com").await;
    let blind = app
        .as_session(
            &writer,
            "mutation($data: JSON) { updateDocument(input: {databaseId: \"shop\", collectionId: \"vault\", id: \"v\", data: $data}) { id } }",
            json!({"data": {"amount": op("increment", json!([1, 100]))}}),
        )
        .await;
    assert_eq!(blind.code(), "PERMISSION_DENIED", "{:#}", blind.body);
    // The typed API's inputs are typed: a text that looks like an operator is text.
    let typed = app
        .admin(
            "mutation($t: String) { updateFilm(input: {id: \"f2\", title: $t}) { title } }",
            json!({"t": op("stringConcat", json!(["!"]))}),
        )
        .await
        .ok();
    assert_eq!(
        typed["updateFilm"]["title"],
        op("stringConcat", json!(["!"]))
    );
    // A value naming no operator is the value itself.
    let literal = r#"{"method":"nope","values":[1]}"#;
    let kept = data_of(
        app.admin(update, json!({"id": "f2", "data": {"title": literal}}))
            .await
            .ok(),
    );
    assert_eq!(kept["title"], literal);

    // Ten increments at once all count.
    let increments = (0..10).map(|_| {
        app.admin(
            update,
            json!({"id": "f1", "data": {"year": op("increment", json!([1]))}}),
        )
    });
    for answer in futures_util::future::join_all(increments).await {
        answer.ok();
    }
    let read = "{ document(databaseId: \"shop\", collectionId: \"films\", id: \"f1\") { data } }";
    let after = app.admin(read, json!({})).await.ok();
    assert_eq!(after["document"]["data"]["year"], 2035, "{after}");
    assert_eq!(
        after["document"]["data"]["seen"], true,
        "the refused changes left it"
    );

    // An upsert of an existing document, and a bulk update, each from its own value.
    let upserted = app
        .admin(
            "mutation($data: JSON!) { upsertDocument(input: {databaseId: \"shop\", collectionId: \"films\", id: \"f1\", data: $data}) { data } }",
            json!({"data": {"title": "Upserted", "year": op("increment", json!([5]))}}),
        )
        .await
        .ok();
    assert_eq!(upserted["upsertDocument"]["data"]["year"], 2040);
    let bulk = app
        .admin(
            "mutation($data: JSON) { updateDocuments(input: {databaseId: \"shop\", collectionId: \"films\", data: $data}) { id data } }",
            json!({"data": {"year": op("decrement", json!([10]))}}),
        )
        .await
        .ok();
    let mut years: Vec<(String, i64)> = bulk["updateDocuments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["data"]["year"].as_i64().unwrap(),
            )
        })
        .collect();
    years.sort();
    assert_eq!(years, [("f1".to_string(), 2030), ("f2".to_string(), 1989)]);
    app.shutdown().await;
}

const UPSERT_MANY: &str = "mutation($d: [JSON!]!) { upsertDocuments(input: {databaseId: \"shop\", collectionId: \"items\", documents: $d}) { id data } }";

#[tokio::test]
async fn documents_are_upserted_in_bulk_all_or_none_each_with_its_own_permission() {
    let app = spawn_app().await;
    items(&app).await;
    let ann = app.signed_in("ann-upserts@example.com").await;
    let bob = app.signed_in("bob-upserts@example.com").await;
    app.as_session(
        &ann,
        CREATE_MANY,
        json!({"d": [{"$id": "pen", "name": "pen", "stock": 1}]}),
    )
    .await
    .ok();

    // One changed, one made with its id, one with an id generated.
    let written = app
        .as_session(
            &ann,
            UPSERT_MANY,
            json!({"d": [
                {"$id": "pen", "stock": 5},
                {"$id": "ink", "name": "ink", "stock": 2},
                {"name": "nib", "stock": 3, "$createdAt": null},
            ]}),
        )
        .await
        .ok();
    let written = written["upsertDocuments"].as_array().unwrap();
    assert_eq!(written.len(), 3);
    assert_eq!(written[0]["id"], "pen");
    assert_eq!(written[0]["data"]["name"], "pen", "kept");
    assert_eq!(written[0]["data"]["stock"], 5);
    assert_eq!(written[1]["id"], "ink");
    assert_eq!(written[2]["data"]["name"], "nib");
    assert!(written[2]["id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(names(&app, &ann).await, ["ink:2", "nib:3", "pen:5"]);

    // Bob may create but not change Ann's: his whole batch is refused, his own
    // new document in it too.
    let refused = app
        .as_session(
            &bob,
            UPSERT_MANY,
            json!({"d": [{"$id": "cap", "name": "cap"}, {"$id": "pen", "stock": 0}]}),
        )
        .await;
    assert_eq!(refused.code(), "PERMISSION_DENIED", "{:#}", refused.body);
    assert_eq!(names(&app, &ann).await, ["ink:2", "nib:3", "pen:5"]);

    // Bad input: a value out of range undoes the batch; times and too many are refused.
    let out_of_range = app
        .as_session(
            &ann,
            UPSERT_MANY,
            json!({"d": [{"$id": "ink", "stock": 9}, {"$id": "pen", "stock": 101}]}),
        )
        .await;
    assert_eq!(out_of_range.code(), "VALUE_OUT_OF_RANGE");
    assert_eq!(names(&app, &ann).await, ["ink:2", "nib:3", "pen:5"]);
    let timed = app
        .admin(
            UPSERT_MANY,
            json!({"d": [{"$id": "ink", "$updatedAt": "2024-01-01T00:00:00.000Z"}]}),
        )
        .await;
    assert_eq!(timed.code(), "BAD_USER_INPUT", "{:#}", timed.body);
    let twice = app
        .as_session(
            &ann,
            UPSERT_MANY,
            json!({"d": [{"$id": "ink", "stock": 7}, {"$id": "ink", "stock": 8}]}),
        )
        .await;
    assert_eq!(twice.code(), "VALUE_INVALID", "{:#}", twice.body);
    assert_eq!(names(&app, &ann).await, ["ink:2", "nib:3", "pen:5"]);
    let many: Vec<Value> = (0..1001)
        .map(|n| json!({"name": format!("n{n}")}))
        .collect();
    let too_many = app.admin(UPSERT_MANY, json!({"d": many})).await;
    assert_eq!(too_many.code(), "TOO_MANY_DOCUMENTS");
    app.shutdown().await;
}
