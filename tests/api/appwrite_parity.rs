//! Small things Appwrite's databases suites check and its clients rely on: the
//! fields of a database and a collection, a relationship's other side named
//! after the collection, `data` given as a JSON string, the error of a step of
//! an attribute that does not exist, and indexes' `lengths`.

use serde_json::json;

use crate::helpers::{TestApp, spawn_app};

/// Makes the database `id` with one collection, `collection` its input (less
/// the database).
async fn database_with(app: &TestApp, id: &str, collection: serde_json::Value) {
    app.admin(
        "mutation($id: ID!) { createDatabase(input: {id: $id, name: $id}) { id } }",
        json!({"id": id}),
    )
    .await
    .ok();
    let mut input = collection;
    input["databaseId"] = json!(id);
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": input}),
    )
    .await
    .ok();
}

#[tokio::test]
async fn databases_collections_and_documents_answer_as_appwrites_clients_expect() {
    let app = spawn_app().await;
    let database = app
        .admin(
            "mutation { createDatabase(input: {id: \"shop\", name: \"Shop\"}) { id type status } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        database["createDatabase"],
        json!({"id": "shop", "type": "legacy", "status": "ready"})
    );
    const CREATE: &str = "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id bytesMax bytesUsed } }";
    let small = app
        .admin(
            CREATE,
            json!({"input": {"databaseId": "shop", "id": "orders", "name": "orders",
                "permissions": ["read(\"any\")", "create(\"any\")", "update(\"any\")"],
                "attributes": [{"key": "total", "type": "INTEGER"}]}}),
        )
        .await
        .ok();
    let wide = app
        .admin(
            CREATE,
            json!({"input": {"databaseId": "shop", "id": "items", "name": "items",
                "permissions": ["read(\"any\")", "create(\"any\")"],
                "attributes": [{"key": "label", "type": "STRING", "size": 1000}]}}),
        )
        .await
        .ok();
    let (small, wide) = (&small["createCollection"], &wide["createCollection"]);
    assert_eq!(small["bytesMax"], 65_535);
    let used = |c: &serde_json::Value| c["bytesUsed"].as_u64().unwrap();
    assert!(
        used(small) > 0 && used(small) < used(wide),
        "{small} {wide}"
    );
    assert!(
        used(wide) >= 4_000,
        "a string of 1,000 takes up to 4,000 bytes: {wide}"
    );

    // A one-to-many without `twoWayKey`, and a two-way many-to-one without one:
    // the other side is named after this collection's id, as in Appwrite.
    const RELATE: &str = "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id relationships { key relatedCollectionId twoWayKey } } }";
    let one_to_many = app
        .admin(
            RELATE,
            json!({"input": {"databaseId": "shop", "collectionId": "orders", "key": "items",
                "relatedCollectionId": "items", "type": "ONE_TO_MANY"}}),
        )
        .await
        .ok();
    assert_eq!(
        one_to_many["createRelationship"]["relationships"],
        json!([{"key": "orders", "relatedCollectionId": "orders", "twoWayKey": "items"}])
    );
    app.admin(
        CREATE,
        json!({"input": {"databaseId": "shop", "id": "shops", "name": "shops", "permissions": ["read(\"any\")"]}}),
    )
    .await
    .ok();
    let two_way = app
        .admin(
            RELATE,
            json!({"input": {"databaseId": "shop", "collectionId": "orders", "key": "shop",
                "relatedCollectionId": "shops", "type": "MANY_TO_ONE", "twoWay": true}}),
        )
        .await
        .ok();
    assert_eq!(
        two_way["createRelationship"]["relationships"],
        json!([{"key": "shop", "relatedCollectionId": "shops", "twoWayKey": "orders"}])
    );
    let one_way = app
        .admin(
            RELATE,
            json!({"input": {"databaseId": "shop", "collectionId": "items", "key": "maker",
                "relatedCollectionId": "shops", "type": "MANY_TO_ONE"}}),
        )
        .await
        .ok();
    let relationships = one_way["createRelationship"]["relationships"]
        .as_array()
        .unwrap();
    let maker = relationships.iter().find(|r| r["key"] == "maker").unwrap();
    assert!(maker["twoWayKey"].is_null(), "{maker}");

    // `data` as a JSON string holding an object; anything else is refused.
    const CREATE_DOCUMENT: &str = "mutation($data: JSON!) { createDocument(input: {databaseId: \"shop\", collectionId: \"orders\", id: \"o1\", data: $data}) { id data } }";
    let made = app
        .admin(CREATE_DOCUMENT, json!({"data": "{\"total\": 5}"}))
        .await
        .ok();
    assert_eq!(made["createDocument"]["data"]["total"], 5);
    for bad in [json!("[1, 2]"), json!("total"), json!(5)] {
        let refused = app.admin(CREATE_DOCUMENT, json!({"data": bad})).await;
        assert_eq!(
            refused.code(),
            "BAD_USER_INPUT",
            "{bad}: {:#}",
            refused.body
        );
    }

    // A step of an attribute the collection lacks, or of one that is no number.
    const STEP: &str = "mutation($a: String!) { incrementDocumentAttribute(input: {databaseId: \"shop\", collectionId: \"orders\", id: \"o1\", attribute: $a}) { id } }";
    let missing = app.admin(STEP, json!({"a": "missing"})).await;
    assert_eq!(missing.code(), "ATTRIBUTE_NOT_FOUND", "{:#}", missing.body);
    let stepped = app.admin(STEP, json!({"a": "total"})).await.ok();
    assert_eq!(stepped["incrementDocumentAttribute"]["id"], "o1");
    let not_a_number = app.admin(STEP, json!({"a": "shop"})).await;
    assert_eq!(
        not_a_number.code(),
        "ATTRIBUTE_INVALID",
        "{:#}",
        not_a_number.body
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_write_answers_the_related_documents_it_was_given_inline() {
    let app = spawn_app().await;
    app.admin(
        "mutation { createDatabase(input: {id: \"town\", name: \"Town\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for (id, key) in [("people", "fullName"), ("libraries", "libraryName")] {
        app.admin(
            "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
            json!({"input": {"databaseId": "town", "id": id, "name": id,
                "permissions": ["read(\"any\")", "create(\"any\")", "update(\"any\")"],
                "attributes": [{"key": key, "type": "STRING", "size": 50}]}}),
        )
        .await
        .ok();
    }
    app.admin(
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }",
        json!({"input": {"databaseId": "town", "collectionId": "people", "key": "library",
            "relatedCollectionId": "libraries", "type": "ONE_TO_ONE", "twoWayKey": "person"}}),
    )
    .await
    .ok();
    const CREATE: &str = "mutation($c: ID!, $id: ID!, $data: JSON!) { createDocument(input: {databaseId: \"town\", collectionId: $c, id: $id, data: $data}) { id data } }";

    // Given inline: answered nested, in Appwrite's shape.
    let made = app
        .admin(CREATE, json!({"c": "people", "id": "p1", "data": {"fullName": "Ann",
            "library": {"$id": "library1", "$permissions": ["read(\"any\")"], "libraryName": "Library 1"}}}))
        .await
        .ok();
    let library = &made["createDocument"]["data"]["library"];
    assert_eq!(library["libraryName"], "Library 1", "{made}");
    assert_eq!(library["$id"], "library1");
    assert_eq!(library["$collectionId"], "libraries");
    assert_eq!(library["$databaseId"], "town");
    assert!(library["$sequence"].is_string(), "{library}");

    // Given by id: the id, as before.
    app.admin(
        CREATE,
        json!({"c": "libraries", "id": "library2", "data": {"libraryName": "Library 2"}}),
    )
    .await
    .ok();
    let by_id = app
        .admin(
            CREATE,
            json!({"c": "people", "id": "p2", "data": {"fullName": "Bob", "library": "library2"}}),
        )
        .await
        .ok();
    assert_eq!(by_id["createDocument"]["data"]["library"], "library2");

    // An update and an upsert given one inline answer it nested too.
    let updated = app
        .admin(
            "mutation { updateDocument(input: {databaseId: \"town\", collectionId: \"people\", id: \"p2\", data: {library: {libraryName: \"Library 3\"}}}) { data } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        updated["updateDocument"]["data"]["library"]["libraryName"],
        "Library 3"
    );
    let upserted = app
        .admin(
            "mutation($data: JSON!) { upsertDocument(input: {databaseId: \"town\", collectionId: \"people\", id: \"p3\", data: $data}) { data } }",
            json!({"data": {"fullName": "Cy", "library": {"$id": "library4", "libraryName": "Library 4"}}}),
        )
        .await
        .ok();
    assert_eq!(
        upserted["upsertDocument"]["data"]["library"]["$id"],
        "library4"
    );
    // From the other side, a reverse field given inline.
    let library = app
        .admin(
            CREATE,
            json!({"c": "libraries", "id": "library5", "data": {"libraryName": "Library 5",
            "person": {"$id": "p5", "fullName": "Dee"}}}),
        )
        .await
        .ok();
    assert_eq!(
        library["createDocument"]["data"]["person"]["fullName"], "Dee",
        "{library}"
    );
    // Read back without `select`, the related document is its id.
    let read = app
        .admin(
            "{ document(databaseId: \"town\", collectionId: \"people\", id: \"p1\") { data } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(read["document"]["data"]["library"], "library1");
    app.shutdown().await;
}

#[tokio::test]
async fn varchar_and_the_text_types_hold_strings_of_their_sizes() {
    let app = spawn_app().await;
    app.admin(
        "mutation { createDatabase(input: {id: \"words\", name: \"Words\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let made = app
        .admin(
            "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { attributes { key type size required array default encrypt } } }",
            json!({"input": {"databaseId": "words", "id": "notes", "name": "notes",
                "permissions": ["read(\"any\")", "create(\"any\")"],
                "attributes": [
                    {"key": "title", "type": "VARCHAR", "size": 255},
                    {"key": "greeting", "type": "VARCHAR", "size": 100, "default": "hello world"},
                    {"key": "body", "type": "TEXT"},
                    {"key": "chapter", "type": "MEDIUMTEXT"},
                    {"key": "book", "type": "LONGTEXT", "default": "empty"},
                    {"key": "lines", "type": "TEXT", "array": true},
                ]}}),
        )
        .await
        .ok();
    let attributes = &made["createCollection"]["attributes"];
    assert_eq!(
        attributes[0],
        json!({"key": "title", "type": "VARCHAR", "size": 255, "required": false, "array": false, "default": null, "encrypt": false})
    );
    assert_eq!(attributes[2]["type"], "TEXT");
    assert_eq!(attributes[3]["type"], "MEDIUMTEXT");
    assert_eq!(attributes[4]["default"], "empty");
    assert_eq!(attributes[5]["array"], true);

    // Sizes and options Appwrite refuses.
    for attribute in [
        json!({"key": "a", "type": "VARCHAR", "size": 0}),
        json!({"key": "a", "type": "VARCHAR", "size": 16382}),
        json!({"key": "a", "type": "VARCHAR"}),
        json!({"key": "a", "type": "VARCHAR", "size": 5, "default": "too long"}),
        json!({"key": "a", "type": "VARCHAR", "size": 256, "encrypt": true}),
        json!({"key": "a", "type": "TEXT", "encrypt": true}),
    ] {
        let refused = app
            .admin(
                "mutation($input: CreateAttributeInput!) { createAttribute(input: $input) { id } }",
                json!({"input": {"databaseId": "words", "collectionId": "notes", "attribute": attribute}}),
            )
            .await;
        assert_eq!(
            refused.code(),
            "ATTRIBUTE_INVALID",
            "{attribute}: {:#}",
            refused.body
        );
    }

    // Values up to each size; defaults; a text past its size is refused.
    const CREATE: &str = "mutation($id: ID!, $data: JSON!) { createDocument(input: {databaseId: \"words\", collectionId: \"notes\", id: $id, data: $data}) { data } }";
    let long = "é".repeat(20_000);
    let written = app
        .admin(CREATE, json!({"id": "n1", "data": {"title": "Title", "body": long, "chapter": long, "lines": ["a", "b"]}}))
        .await
        .ok();
    let data = &written["createDocument"]["data"];
    assert_eq!(data["greeting"], "hello world");
    assert_eq!(data["book"], "empty");
    assert_eq!(data["body"].as_str().unwrap().chars().count(), 20_000);
    assert_eq!(data["lines"], json!(["a", "b"]));
    for (key, value) in [("title", "t".repeat(256)), ("body", "b".repeat(65_536))] {
        let refused = app
            .admin(CREATE, json!({"id": "n2", "data": {key: value}}))
            .await;
        assert_eq!(
            refused.code(),
            "VALUE_OUT_OF_RANGE",
            "{key}: {:#}",
            refused.body
        );
    }
    // They are strings in the typed API, filtered as strings.
    let typed = app
        .admin(
            "{ notes(filter: {title: {startsWith: \"Ti\"}, body: {isNull: false}}) { nodes { id title greeting } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        typed["notes"]["nodes"],
        json!([{"id": "n1", "title": "Title", "greeting": "hello world"}])
    );
    app.shutdown().await;
}

/// Appwrite's index `lengths`: kept and answered one per attribute (null where
/// none was given), the characters of a string a MariaDB key covers (there a
/// unique index compares only those; SQLite indexes whole values), and refused
/// where Appwrite's validator refuses them.
#[tokio::test]
async fn index_lengths_are_kept_and_bound_what_a_mariadb_key_covers() {
    let app = spawn_app().await;
    database_with(
        &app,
        "films",
        json!({"id": "movies", "name": "movies",
            "permissions": ["read(\"any\")", "create(\"any\")"],
            "attributes": [
                {"key": "title", "type": "STRING", "size": 256},
                {"key": "description", "type": "STRING", "size": 512},
                {"key": "tagline", "type": "STRING", "size": 512},
                {"key": "year", "type": "INTEGER"},
                {"key": "actors", "type": "STRING", "size": 64, "array": true}]}),
    )
    .await;
    const CREATE: &str = "mutation($index: IndexInput!) { createIndex(input: {databaseId: \"films\", collectionId: \"movies\", index: $index}) { indexes { key attributes lengths } } }";
    let made = app
        .admin(
            CREATE,
            json!({"index": {"key": "lengthTestIndex", "type": "KEY",
                "attributes": ["title", "description", "year"], "lengths": [128, 200]}}),
        )
        .await
        .ok();
    assert_eq!(
        made["createIndex"]["indexes"],
        json!([{"key": "lengthTestIndex", "attributes": ["title", "description", "year"],
            "lengths": [128, 200, null]}])
    );
    let unique = app
        .admin(
            CREATE,
            json!({"index": {"key": "byTagline", "type": "UNIQUE",
                "attributes": ["tagline"], "lengths": [3]}}),
        )
        .await
        .ok();
    assert_eq!(
        unique["createIndex"]["indexes"][1]["lengths"],
        json!([3]),
        "{unique}"
    );
    let read = app
        .admin(
            "{ collection(databaseId: \"films\", id: \"movies\") { indexes { key lengths } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        read["collection"]["indexes"],
        json!([{"key": "lengthTestIndex", "lengths": [128, 200, null]},
            {"key": "byTagline", "lengths": [3]}])
    );

    // On MariaDB the unique key covers three characters: two taglines sharing
    // them collide there, and nowhere else.
    const ADD: &str = "mutation($data: JSON!) { createDocument(input: {databaseId: \"films\", collectionId: \"movies\", data: $data}) { id } }";
    app.admin(ADD, json!({"data": {"tagline": "abc one"}}))
        .await
        .ok();
    let second = app
        .admin(ADD, json!({"data": {"tagline": "abc two"}}))
        .await;
    if app.config.effective_database_url().starts_with("mysql") {
        assert_eq!(second.code(), "DOCUMENT_NOT_UNIQUE", "{second:?}");
    } else {
        second.ok();
    }

    for (key, attributes, lengths) in [
        // More lengths than attributes.
        ("countExceeded", json!(["title"]), json!([128, 128])),
        // Wider than a MariaDB key: 3 × 256 characters and an integer.
        (
            "tooLarge",
            json!(["title", "description", "tagline", "year"]),
            json!([256, 256, 256]),
        ),
        ("negative", json!(["title"]), json!([-1])),
        ("pastSize", json!(["title"]), json!([257])),
        ("onInteger", json!(["year"]), json!([4])),
        ("onArray", json!(["actors"]), json!([120])),
    ] {
        let refused = app
            .admin(
                CREATE,
                json!({"index": {"key": key, "type": "KEY", "attributes": attributes,
                    "lengths": lengths}}),
            )
            .await;
        assert_eq!(refused.code(), "INDEX_INVALID", "{key}: {refused:?}");
    }
    let full_text = app
        .admin(
            CREATE,
            json!({"index": {"key": "words", "type": "FULLTEXT", "attributes": ["title"],
                "lengths": [10]}}),
        )
        .await;
    assert_eq!(full_text.code(), "INDEX_INVALID", "{full_text:?}");
    app.shutdown().await;
}

/// A query takes 500 values, as in Appwrite: three hundred ids in one `equal`
/// find their documents, on both backends and for a reader who sees only some.
#[tokio::test]
async fn a_query_takes_five_hundred_values() {
    let app = spawn_app().await;
    database_with(
        &app,
        "notes",
        json!({"id": "notes", "name": "notes",
            "documentSecurity": true, "permissions": ["create(\"users\")"],
            "attributes": [{"key": "n", "type": "INTEGER"}]}),
    )
    .await;
    let session = app.signed_in("reader@example.com").await;
    let me = app
        .as_session(&session, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Every third note is the reader's.
    let notes: Vec<serde_json::Value> = (0..600)
        .map(|n| {
            let readers = if n % 3 == 0 {
                json!([format!("read(\"user:{me}\")")])
            } else {
                json!([])
            };
            json!({"$id": format!("n{n}"), "n": n, "$permissions": readers})
        })
        .collect();
    app.admin(
        "mutation($d: [JSON!]!) { createDocuments(input: {databaseId: \"notes\", collectionId: \"notes\", documents: $d}) { id } }",
        json!({"d": notes}),
    )
    .await
    .ok();
    let ids: Vec<String> = (0..300).map(|n| format!("n{}", n * 2)).collect();
    let equal = json!({"method": "equal", "attribute": "$id", "values": ids}).to_string();
    let limit = json!({"method": "limit", "values": [1000]}).to_string();
    const LIST: &str = "query($q: [String!]) { documents(databaseId: \"notes\", collectionId: \"notes\", queries: $q) { total documents { id } } }";
    let all = app.admin(LIST, json!({"q": [equal, limit]})).await.ok();
    assert_eq!(all["documents"]["total"], 300, "{all}");
    let mine = app
        .as_session(&session, LIST, json!({"q": [equal, limit]}))
        .await
        .ok();
    // Even ids below 600 that are multiples of three: multiples of six.
    let mut found: Vec<String> = mine["documents"]["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    found.sort_by_key(|id| id[1..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..100).map(|n| format!("n{}", n * 6)).collect();
    assert_eq!(found, expected);

    let too_many: Vec<u32> = (0..501).collect();
    let refused = app
        .admin(
            LIST,
            json!({"q": [json!({"method": "equal", "attribute": "n", "values": too_many}).to_string()]}),
        )
        .await;
    assert_eq!(refused.code(), "QUERY_INVALID", "{refused:?}");
    app.shutdown().await;
}

/// Appwrite's `listAttributes` and `listIndexes` take queries: a collection's
/// attributes and indexes do too, filtered and paged as Appwrite's suites ask,
/// and a query they cannot answer (a selection) is refused.
#[tokio::test]
async fn attributes_and_indexes_take_appwrites_queries() {
    let app = spawn_app().await;
    database_with(
        &app,
        "cinema",
        json!({"id": "movies", "name": "movies",
            "permissions": ["read(\"any\")"],
            "attributes": [
                {"key": "title", "type": "STRING", "size": 256},
                {"key": "releaseYear", "type": "INTEGER"},
                {"key": "description", "type": "STRING", "size": 512},
                {"key": "tagline", "type": "STRING", "size": 512},
                {"key": "rating", "type": "FLOAT"}],
            "indexes": [
                {"key": "byTitle", "type": "KEY", "attributes": ["title"]},
                {"key": "byYear", "type": "KEY", "attributes": ["releaseYear"]},
                {"key": "uniqueTagline", "type": "UNIQUE", "attributes": ["tagline"]},
                {"key": "byYearAndTitle", "type": "KEY", "attributes": ["releaseYear", "title"]}]}),
    )
    .await;
    const READ: &str = "query($a: [String!], $i: [String!]) { collection(databaseId: \"cinema\", id: \"movies\") { attributes(queries: $a) { key } indexes(queries: $i) { key } } }";
    let q = |value: serde_json::Value| value.to_string();
    let keys = |list: &serde_json::Value| -> Vec<String> {
        list.as_array()
            .unwrap()
            .iter()
            .map(|item| item["key"].as_str().unwrap().to_string())
            .collect()
    };
    let read = app
        .admin(
            READ,
            json!({
                "a": [q(json!({"method": "equal", "attribute": "type", "values": ["string"]})),
                      q(json!({"method": "limit", "values": [2]})),
                      q(json!({"method": "cursorAfter", "values": ["title"]}))],
                "i": [q(json!({"method": "equal", "attribute": "type", "values": ["key"]})),
                      q(json!({"method": "limit", "values": [2]}))],
            }),
        )
        .await
        .ok();
    let collection = &read["collection"];
    assert_eq!(keys(&collection["attributes"]), ["description", "tagline"]);
    assert_eq!(keys(&collection["indexes"]), ["byTitle", "byYear"]);
    let covering = app
        .admin(
            READ,
            json!({"i": [q(json!({"method": "contains", "attribute": "attributes", "values": ["releaseYear"]}))]}),
        )
        .await
        .ok();
    assert_eq!(
        keys(&covering["collection"]["indexes"]),
        ["byYear", "byYearAndTitle"]
    );
    assert_eq!(keys(&covering["collection"]["attributes"]).len(), 5);
    for (name, variables) in [
        (
            "attributes",
            json!({"a": [q(json!({"method": "select", "values": ["key"]}))]}),
        ),
        (
            "indexes",
            json!({"i": [q(json!({"method": "select", "values": ["key"]}))]}),
        ),
    ] {
        let refused = app.admin(READ, variables).await;
        assert_eq!(refused.code(), "QUERY_INVALID", "{name}: {refused:?}");
    }
    app.shutdown().await;
}
