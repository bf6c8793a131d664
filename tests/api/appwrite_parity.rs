//! Small things Appwrite's databases suites check and its clients rely on: the
//! fields of a database and a collection, a relationship's other side named
//! after the collection, `data` given as a JSON string, and the error of a step
//! of an attribute that does not exist.

use serde_json::json;

use crate::helpers::spawn_app;

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
