//! One resolved query: a filter is refused with its own code wherever it is
//! nested, before anything runs, and a bad cursor is `INVALID_CURSOR` (with its
//! former name in `extensions.aliases`) whichever API it is given to.

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, spawn_app};

const CREATE_COLLECTION: &str =
    "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }";

/// `blog.authors` (with a name) and `blog.posts` (with a title and views), each
/// post pointing at its author, both readable by anyone.
async fn blog(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"blog\", name: \"Blog\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for (id, attributes) in [
        (
            "authors",
            json!([{"key": "name", "type": "STRING", "size": 100, "required": true}]),
        ),
        (
            "posts",
            json!([
                {"key": "title", "type": "STRING", "size": 200, "required": true},
                {"key": "views", "type": "INTEGER", "default": 0}
            ]),
        ),
    ] {
        app.admin(
            CREATE_COLLECTION,
            json!({"input": {
                "databaseId": "blog", "id": id, "name": id,
                "permissions": ["read(\"any\")"],
                "attributes": attributes
            }}),
        )
        .await
        .ok();
    }
    app.admin(
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }",
        json!({"input": {"databaseId": "blog", "collectionId": "authors", "key": "posts", "relatedCollectionId": "posts", "type": "ONE_TO_MANY", "twoWayKey": "author", "onDelete": "CASCADE"}}),
    )
    .await
    .ok();
    app.admin(
        "mutation { createAuthor(input: {id: \"ann\", name: \"Ann Lee\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for (id, views) in [("p1", 1), ("p2", 2), ("p3", 3)] {
        app.admin(
            "mutation($id: ID, $views: Int) { createPost(input: {id: $id, title: \"Hi\", views: $views, author: \"ann\"}) { id } }",
            json!({"id": id, "views": views}),
        )
        .await
        .ok();
    }
}

/// The code of the first error and its aliases.
fn code_and_aliases(answer: &Answer) -> (String, Value) {
    let extensions = &answer.body["errors"][0]["extensions"];
    (answer.code().to_string(), extensions["aliases"].clone())
}

async fn documents(app: &TestApp, queries: &[&str]) -> Answer {
    app.admin(
        "query($q: [String!]) { documents(databaseId: \"blog\", collectionId: \"posts\", queries: $q) { documents { id } } }",
        json!({"q": queries}),
    )
    .await
}

#[tokio::test]
async fn a_bad_cursor_is_invalid_cursor_with_its_former_name_as_an_alias_in_every_api() {
    let app = spawn_app().await;
    blog(&app).await;
    let expected = ("INVALID_CURSOR".to_string(), json!(["CURSOR_INVALID"]));

    // Typed: a forged cursor, and one of another order.
    let forged = app
        .admin("{ posts(after: \"Zm9yZ2Vk\") { totalCount } }", json!({}))
        .await;
    assert_eq!(code_and_aliases(&forged), expected);
    assert_eq!(forged.body["errors"][0]["extensions"]["field"], "after");
    let page = app
        .admin(
            "{ posts(first: 1, orderBy: [{views: DESC}]) { pageInfo { endCursor } } }",
            json!({}),
        )
        .await
        .ok();
    let cursor = page["posts"]["pageInfo"]["endCursor"].as_str().unwrap();
    let next = app
        .admin(
            "query($c: String) { posts(first: 1, after: $c, orderBy: [{views: DESC}]) { nodes { id } } }",
            json!({"c": cursor}),
        )
        .await
        .ok();
    assert_eq!(next["posts"]["nodes"], json!([{"id": "p2"}]));
    let other_order = app
        .admin(
            "query($c: String) { posts(before: $c, orderBy: [{views: ASC}]) { totalCount } }",
            json!({"c": cursor}),
        )
        .await;
    assert_eq!(code_and_aliases(&other_order), expected);
    assert_eq!(
        other_order.body["errors"][0]["extensions"]["field"],
        "before"
    );

    // Appwrite's queries: a cursor naming a document that is not there.
    let gone = documents(&app, &[r#"{"method":"cursorAfter","values":["nope"]}"#]).await;
    assert_eq!(code_and_aliases(&gone), expected);
    let after = documents(&app, &[r#"{"method":"cursorAfter","values":["p1"]}"#])
        .await
        .ok();
    assert_eq!(
        after["documents"]["documents"],
        json!([{"id": "p2"}, {"id": "p3"}])
    );

    // Other codes carry no aliases.
    let unknown = documents(
        &app,
        &[r#"{"method":"equal","attribute":"nope","values":[1]}"#],
    )
    .await;
    assert_eq!(
        code_and_aliases(&unknown),
        ("FILTER_UNKNOWN_FIELD".to_string(), Value::Null)
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_search_across_a_relationship_needs_the_related_index_like_any_other() {
    let app = spawn_app().await;
    blog(&app).await;
    let search = "{ posts(filter: {author: {name: {search: \"ann\"}}}) { nodes { id } } }";
    let refused = app.admin(search, json!({})).await;
    assert_eq!(
        refused.code(),
        "SEARCH_NEEDS_FULLTEXT_INDEX",
        "{:#}",
        refused.body
    );
    assert_eq!(refused.body["errors"][0]["extensions"]["field"], "name");
    assert!(refused.body["data"].is_null() || refused.body["data"]["posts"].is_null());
    app.admin(
        "mutation { createIndex(input: {databaseId: \"blog\", collectionId: \"authors\", index: {key: \"name_text\", type: FULLTEXT, attributes: [\"name\"]}}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let found = app.admin(search, json!({})).await.ok();
    assert_eq!(
        found["posts"]["nodes"],
        json!([{"id": "p1"}, {"id": "p2"}, {"id": "p3"}])
    );
    app.shutdown().await;
}
