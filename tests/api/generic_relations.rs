//! The generic API's queries across relationships, as Appwrite writes them:
//! `author.name` compares the name of the author a post points at,
//! `tags.label` the labels of the tags it links, `author.$id` the author's id;
//! allowed only to who may read every document of the related collection.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// `press`: authors (readable by any signed-in user, or by nobody but keys
/// when `open_authors` is false), tags, and posts pointing at an author
/// (many-to-one) and linking tags (many-to-many); three posts.
async fn press(app: &TestApp, open_authors: bool) {
    app.admin(
        "mutation { createDatabase(input: {id: \"press\", name: \"Press\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let authors_read = if open_authors {
        json!(["read(\"users\")"])
    } else {
        json!([])
    };
    for (id, permissions, key) in [
        ("authors", authors_read, "name"),
        ("tags", json!(["read(\"users\")"]), "label"),
        ("posts", json!(["read(\"users\")"]), "title"),
    ] {
        app.admin(
            "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
            json!({"input": {
                "databaseId": "press", "id": id, "name": id, "permissions": permissions,
                "attributes": [{"key": key, "type": "STRING", "size": 50, "required": true}],
            }}),
        )
        .await
        .ok();
    }
    let relate =
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }";
    for (key, related, kind) in [
        ("author", "authors", "MANY_TO_ONE"),
        ("tags", "tags", "MANY_TO_MANY"),
    ] {
        app.admin(
            relate,
            json!({"input": {
                "databaseId": "press", "collectionId": "posts", "key": key,
                "relatedCollectionId": related, "type": kind, "onDelete": "SET_NULL"
            }}),
        )
        .await
        .ok();
    }
    let create = "mutation($c: ID!, $id: ID!, $data: JSON!) { createDocument(input: {databaseId: \"press\", collectionId: $c, id: $id, data: $data}) { id } }";
    for (collection, id, data) in [
        ("authors", "ann", json!({"name": "Ann"})),
        ("authors", "bob", json!({"name": "Bob"})),
        ("tags", "rust", json!({"label": "rust"})),
        ("tags", "go", json!({"label": "go"})),
        (
            "posts",
            "p1",
            json!({"title": "One", "author": "ann", "tags": ["rust"]}),
        ),
        (
            "posts",
            "p2",
            json!({"title": "Two", "author": "bob", "tags": ["go", "rust"]}),
        ),
        (
            "posts",
            "p3",
            json!({"title": "Three", "author": "ann", "tags": ["go"]}),
        ),
    ] {
        app.admin(create, json!({"c": collection, "id": id, "data": data}))
            .await
            .ok();
    }
}

/// A collection `id` (a `name` each) no reader may read, and a many-to-one
/// relationship `key` to it from `authors`.
async fn private_to_authors(app: &TestApp, id: &str, key: &str) {
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "press", "id": id, "name": id, "permissions": [],
            "attributes": [{"key": "name", "type": "STRING", "size": 50}],
        }}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }",
        json!({"input": {
            "databaseId": "press", "collectionId": "authors", "key": key,
            "relatedCollectionId": id, "type": "MANY_TO_ONE", "onDelete": "SET_NULL"
        }}),
    )
    .await
    .ok();
}

const POSTS: &str = "query($q: [String!]) { documents(databaseId: \"press\", collectionId: \"posts\", queries: $q) { total documents { id } } }";

fn query(method: &str, attribute: &str, values: Value) -> String {
    json!({"method": method, "attribute": attribute, "values": values}).to_string()
}

/// The ids of the posts `queries` find for `secret` (a key when `None`), and the
/// total they count.
async fn found(app: &TestApp, secret: Option<&str>, queries: &[String]) -> Vec<String> {
    let variables = json!({"q": queries});
    let answer = match secret {
        Some(secret) => app.as_session(secret, POSTS, variables).await,
        None => app.admin(POSTS, variables).await,
    };
    let listed = answer.ok();
    let mut ids: Vec<String> = listed["documents"]["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed["documents"]["total"], ids.len(), "{listed}");
    ids.sort();
    ids
}

#[tokio::test]
async fn queries_compare_the_fields_of_related_documents() {
    let app = spawn_app().await;
    press(&app, true).await;
    let ann = app.signed_in("reader@example.com").await;
    for (queries, expected) in [
        (
            vec![query("equal", "author.name", json!(["Ann"]))],
            vec!["p1", "p3"],
        ),
        (
            vec![query("equal", "author.$id", json!(["bob"]))],
            vec!["p2"],
        ),
        (
            vec![query("startsWith", "author.name", json!(["B"]))],
            vec!["p2"],
        ),
        (
            vec![query("notEqual", "author.name", json!(["Ann"]))],
            vec!["p2"],
        ),
        (
            vec![query("equal", "tags.label", json!(["rust"]))],
            vec!["p1", "p2"],
        ),
        (
            vec![
                query("equal", "tags.label", json!(["go"])),
                query("equal", "author.name", json!(["Ann"])),
            ],
            vec!["p3"],
        ),
        (
            vec![
                json!({"method": "or", "values": [
                    {"method": "equal", "attribute": "author.name", "values": ["Bob"]},
                    {"method": "equal", "attribute": "title", "values": ["One"]}
                ]})
                .to_string(),
            ],
            vec!["p1", "p2"],
        ),
    ] {
        assert_eq!(
            found(&app, Some(&ann), &queries).await,
            expected,
            "{queries:?}"
        );
        assert_eq!(found(&app, None, &queries).await, expected, "{queries:?}");
    }
    // Bulk writes find their documents the same way.
    let updated = app
        .admin(
            "mutation($q: [String!]) { updateDocuments(input: {databaseId: \"press\", collectionId: \"posts\", data: {title: \"Bob's\"}, queries: $q}) { id } }",
            json!({"q": [query("equal", "author.name", json!(["Bob"]))]}),
        )
        .await
        .ok();
    assert_eq!(updated["updateDocuments"], json!([{"id": "p2"}]));
    // A dotted name whose first part is no relationship, or whose second part
    // the related collection lacks, is refused as any unknown attribute is.
    for attribute in ["title.name", "author.nope", "nope.name"] {
        let refused = app
            .admin(
                POSTS,
                json!({"q": [query("equal", attribute, json!(["x"]))]}),
            )
            .await;
        assert_eq!(
            refused.code(),
            "FILTER_UNKNOWN_FIELD",
            "{attribute}: {:#}",
            refused.body
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_query_across_a_relationship_needs_every_related_document_readable() {
    let app = spawn_app().await;
    press(&app, false).await;
    let reader = app.signed_in("reader@example.com").await;
    // Authors are the keys' alone: a reader comparing their names would learn
    // what they hold.
    let across = [query("equal", "author.name", json!(["Ann"]))];
    let refused = app.as_session(&reader, POSTS, json!({"q": across})).await;
    assert_eq!(refused.code(), "PERMISSION_DENIED", "{:#}", refused.body);
    assert_eq!(found(&app, None, &across).await, ["p1", "p3"]);
    // Nor one level down: authors open, their houses private, so comparing an
    // author's house compares a reference the reader may not read.
    private_to_authors(&app, "houses", "house").await;
    app.admin(
        "mutation($input: UpdateCollectionInput!) { updateCollection(input: $input) { id } }",
        json!({"input": {"databaseId": "press", "id": "authors", "permissions": ["read(\"users\")"]}}),
    )
    .await
    .ok();
    for attribute in ["author.house", "author.house.name"] {
        let deep = [query("equal", attribute, json!(["h1"]))];
        let refused = app.as_session(&reader, POSTS, json!({"q": deep})).await;
        assert_eq!(
            refused.code(),
            "PERMISSION_DENIED",
            "{attribute}: {:#}",
            refused.body
        );
        assert_eq!(found(&app, None, &deep).await, Vec::<String>::new());
    }
    assert_eq!(
        found(
            &app,
            Some(&reader),
            &[query("equal", "author.name", json!(["Ann"]))]
        )
        .await,
        ["p1", "p3"]
    );
    // Tags stay open to the reader.
    assert_eq!(
        found(
            &app,
            Some(&reader),
            &[query("equal", "tags.label", json!(["go"]))]
        )
        .await,
        ["p2", "p3"]
    );
    app.shutdown().await;
}

const POSTS_DATA: &str = "query($q: [String!]) { documents(databaseId: \"press\", collectionId: \"posts\", queries: $q) { documents { id data } } }";

fn select(names: &[&str]) -> String {
    json!({"method": "select", "values": names}).to_string()
}

/// The `data` of each post `queries` list for `secret`, by id.
async fn posts_data(app: &TestApp, secret: &str, queries: &[String]) -> Vec<(String, Value)> {
    let mut queries = queries.to_vec();
    queries.push(json!({"method": "orderAsc", "attribute": "$id"}).to_string());
    let listed = app
        .as_session(secret, POSTS_DATA, json!({"q": queries}))
        .await
        .ok();
    listed["documents"]["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_string(), d["data"].clone()))
        .collect()
}

/// `select` nests related documents, as Appwrite's does: `author.*` puts the
/// author in place of its id (in Appwrite's shape), `author.name` keeps its
/// `name` alone, a many-to-many field and the reverse field of a two-way
/// relationship nest lists, and a read by id takes the same selection. Only
/// documents the reader may read are nested: an author it may not read is null.
#[tokio::test]
async fn select_nests_the_related_documents_the_reader_may_read() {
    let app = spawn_app().await;
    press(&app, true).await;
    // Authors point at agents no reader may read.
    private_to_authors(&app, "agents", "agent").await;
    app.admin(
        "mutation { createDocument(input: {databaseId: \"press\", collectionId: \"agents\", id: \"secret-agent\", data: {name: \"X\"}}) { id } updateDocument(input: {databaseId: \"press\", collectionId: \"authors\", id: \"ann\", data: {agent: \"secret-agent\"}}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let reader = app.signed_in("reader@example.com").await;
    let nested = posts_data(&app, &reader, &[select(&["title", "author.*"])]).await;
    assert_eq!(nested.len(), 3);
    let (id, first) = &nested[0];
    assert_eq!(id, "p1");
    assert_eq!(first["title"], "One");
    assert_eq!(first["author"]["$id"], "ann");
    assert_eq!(first["author"]["name"], "Ann");
    assert_eq!(first["author"]["$collectionId"], "authors");
    assert!(first["author"]["$createdAt"].is_string(), "{first}");
    assert!(first.get("tags").is_none(), "{first}");
    // A nested document's own reference to what the reader may not read is hidden.
    assert!(first["author"]["agent"].is_null(), "{first}");
    assert!(!first.to_string().contains("secret-agent"), "{first}");
    assert_eq!(nested[1].1["author"]["name"], "Bob");

    // A field named past the dot keeps it alone (and the system fields).
    let named = posts_data(&app, &reader, &[select(&["author.$id"])]).await;
    let author = named[0].1["author"].as_object().unwrap();
    assert_eq!(author["$id"], "ann");
    assert!(!author.contains_key("name"), "{author:?}");
    let misspelt = app
        .as_session(&reader, POSTS_DATA, json!({"q": [select(&["author.nme"])]}))
        .await;
    assert_eq!(misspelt.code(), "QUERY_INVALID", "{:#}", misspelt.body);

    // A many-to-many field nests a list.
    let tagged = posts_data(&app, &reader, &[select(&["*", "tags.label"])]).await;
    let labels = |data: &Value| -> Vec<String> {
        let mut labels: Vec<String> = data["tags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["label"].as_str().unwrap().to_string())
            .collect();
        labels.sort();
        labels
    };
    assert_eq!(labels(&tagged[1].1), ["go", "rust"]);
    assert_eq!(tagged[1].1["title"], "Two", "`*` keeps the attributes");
    assert_eq!(tagged[1].1["author"], "bob", "`*` leaves a reference an id");

    // The reverse field of a two-way relationship nests the documents pointing here.
    app.admin(
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }",
        json!({"input": {
            "databaseId": "press", "collectionId": "posts", "key": "editor",
            "relatedCollectionId": "authors", "type": "MANY_TO_ONE",
            "twoWayKey": "edited", "onDelete": "SET_NULL"
        }}),
    )
    .await
    .ok();
    for post in ["p1", "p2"] {
        app.admin(
            "mutation($id: ID!) { updateDocument(input: {databaseId: \"press\", collectionId: \"posts\", id: $id, data: {editor: \"bob\"}}) { id } }",
            json!({"id": post}),
        )
        .await
        .ok();
    }
    let bob = app
        .as_session(
            &reader,
            "query($q: [String!]) { document(databaseId: \"press\", collectionId: \"authors\", id: \"bob\", queries: $q) { data } }",
            json!({"q": [select(&["name", "edited.title"])]}),
        )
        .await
        .ok();
    let mut edited: Vec<&str> = bob["document"]["data"]["edited"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    edited.sort();
    assert_eq!(edited, ["One", "Two"], "{bob}");
    assert_eq!(bob["document"]["data"]["name"], "Bob");
    let filtered = app
        .as_session(
            &reader,
            "query($q: [String!]) { document(databaseId: \"press\", collectionId: \"authors\", id: \"bob\", queries: $q) { data } }",
            json!({"q": [query("equal", "name", json!(["Bob"]))]}),
        )
        .await;
    assert_eq!(filtered.code(), "QUERY_INVALID", "{:#}", filtered.body);
    app.shutdown().await;

    // Authors no reader may read: nested as null, their ids not shown either.
    let app = spawn_app().await;
    press(&app, false).await;
    let reader = app.signed_in("reader@example.com").await;
    let hidden = posts_data(&app, &reader, &[select(&["title", "author.*"])]).await;
    assert_eq!(hidden.len(), 3);
    assert!(
        hidden.iter().all(|(_, data)| data["author"].is_null()),
        "{hidden:?}"
    );
    app.shutdown().await;
}

const DOCUMENT: &str = "query($c: ID!, $id: ID!) { document(databaseId: \"press\", collectionId: $c, id: $id) { id updatedAt data } }";
const CREATE_DOCUMENT: &str = "mutation($c: ID!, $id: ID!, $data: JSON!) { createDocument(input: {databaseId: \"press\", collectionId: $c, id: $id, data: $data}) { id data } }";

/// A document as a key reads it, null when there is none.
async fn stored(app: &TestApp, collection: &str, id: &str) -> Value {
    app.admin(DOCUMENT, json!({"c": collection, "id": id}))
        .await
        .ok()["document"]
        .clone()
}

#[tokio::test]
async fn related_documents_given_inline_are_written_with_the_document() {
    let app = spawn_app().await;
    press(&app, true).await;

    // A new author with its id, a new tag without one, a tag that exists
    // changed, and one named by its id.
    let made = app
        .admin(
            CREATE_DOCUMENT,
            json!({"c": "posts", "id": "p4", "data": {
                "title": "Four",
                "author": {"$id": "cy", "name": "Cy", "$collectionId": "authors"},
                "tags": ["rust", {"label": "zig"}, {"$id": "go", "label": "golang"}],
            }}),
        )
        .await
        .ok();
    // Answered nested, as Appwrite answers a write given related documents.
    assert_eq!(made["createDocument"]["data"]["author"]["$id"], "cy");
    assert_eq!(made["createDocument"]["data"]["author"]["name"], "Cy");
    let tags: Vec<&str> = made["createDocument"]["data"]["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|tag| tag["$id"].as_str().unwrap())
        .collect();
    assert!(
        tags.contains(&"rust") && tags.contains(&"go") && tags.len() == 3,
        "{tags:?}"
    );
    assert_eq!(stored(&app, "authors", "cy").await["data"]["name"], "Cy");
    let linked = app
        .admin(
            "query($q: [String!]) { document(databaseId: \"press\", collectionId: \"posts\", id: \"p4\", queries: $q) { data } }",
            json!({"q": [select(&["tags.$id"])]}),
        )
        .await
        .ok();
    let tags: Vec<String> = linked["document"]["data"]["tags"]
        .as_array()
        .expect("the post's tags")
        .iter()
        .map(|t| t["$id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(tags.len(), 3, "{tags:?}");
    assert!(tags.contains(&"rust".into()) && tags.contains(&"go".into()));
    let new_tag = tags.iter().find(|t| *t != "rust" && *t != "go").unwrap();
    assert_eq!(stored(&app, "tags", new_tag).await["data"]["label"], "zig");
    assert_eq!(stored(&app, "tags", "go").await["data"]["label"], "golang");

    // An object holding an `$id` alone names the document and changes nothing.
    let ann = stored(&app, "authors", "ann").await;
    let named = app
        .admin(
            CREATE_DOCUMENT,
            json!({"c": "posts", "id": "p5", "data": {"title": "Five", "author": {"$id": "ann"}}}),
        )
        .await
        .ok();
    assert_eq!(named["createDocument"]["data"]["author"]["$id"], "ann");
    assert_eq!(stored(&app, "authors", "ann").await, ann);
    let missing = app
        .admin(
            CREATE_DOCUMENT,
            json!({"c": "posts", "id": "p6", "data": {"title": "Six", "author": {"$id": "nobody"}}}),
        )
        .await;
    assert_eq!(missing.code(), "RELATED_DOCUMENT_NOT_FOUND");

    // A nested write that fails undoes the whole write, the nested ones before it too.
    for (author, code) in [
        (json!({"$id": "dee"}), "RELATED_DOCUMENT_NOT_FOUND"),
        (
            json!({"$id": "dee", "nickname": "D"}),
            "ATTRIBUTE_NOT_FOUND",
        ),
    ] {
        let failed = app
            .admin(
                CREATE_DOCUMENT,
                json!({"c": "posts", "id": "p6", "data": {
                    "title": "Six",
                    "tags": [{"$id": "kept", "label": "kept"}],
                    "author": author,
                }}),
            )
            .await;
        assert_eq!(failed.code(), code, "{:#}", failed.body);
    }
    // Its error names the field by its path from the document written.
    let wrong = app
        .admin(
            CREATE_DOCUMENT,
            json!({"c": "posts", "id": "p6", "data": {"title": "Six", "author": {"name": 5}}}),
        )
        .await;
    assert_eq!(
        wrong.body["errors"][0]["extensions"]["field"], "author.name",
        "{:#}",
        wrong.body
    );
    for (collection, id) in [("posts", "p6"), ("tags", "kept"), ("authors", "dee")] {
        assert!(
            stored(&app, collection, id).await.is_null(),
            "{collection}/{id} was written"
        );
    }

    // Each nested write is the caller's own: a user who may create posts but
    // not authors creates neither.
    app.admin(
        "mutation { updateCollection(input: {databaseId: \"press\", id: \"posts\", permissions: [\"read(\\\"users\\\")\", \"create(\\\"users\\\")\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let user = app.signed_in("nested-writer@example.com").await;
    let own = app
        .as_session(
            &user,
            CREATE_DOCUMENT,
            json!({"c": "posts", "id": "p7", "data": {"title": "Seven", "author": "ann"}}),
        )
        .await
        .ok();
    assert_eq!(own["createDocument"]["id"], "p7");
    let denied = app
        .as_session(
            &user,
            CREATE_DOCUMENT,
            json!({"c": "posts", "id": "p8", "data": {"title": "Eight", "author": {"name": "Eve"}}}),
        )
        .await;
    assert_eq!(denied.code(), "PERMISSION_DENIED");
    assert!(stored(&app, "posts", "p8").await.is_null());

    // Bounded: three levels deep, a hundred documents.
    app.admin(
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }",
        json!({"input": {
            "databaseId": "press", "collectionId": "authors", "key": "mentor",
            "relatedCollectionId": "authors", "type": "MANY_TO_ONE", "onDelete": "SET_NULL"
        }}),
    )
    .await
    .ok();
    let chain = |levels: usize| {
        let mut author = json!({"name": format!("level {levels}")});
        for level in (1..levels).rev() {
            author = json!({"name": format!("level {level}"), "mentor": author});
        }
        author
    };
    let deep = app
        .admin(
            CREATE_DOCUMENT,
            json!({"c": "posts", "id": "p9", "data": {"title": "Nine", "author": chain(4)}}),
        )
        .await;
    assert_eq!(deep.code(), "VALUE_INVALID", "{:#}", deep.body);
    let three = app
        .admin(
            CREATE_DOCUMENT,
            json!({"c": "posts", "id": "p9", "data": {"title": "Nine", "author": chain(3)}}),
        )
        .await
        .ok();
    let first = three["createDocument"]["data"]["author"]["$id"]
        .as_str()
        .unwrap()
        .to_string();
    let second = stored(&app, "authors", &first).await["data"]["mentor"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        stored(&app, "authors", &second).await["data"]["name"],
        "level 2"
    );
    let many: Vec<Value> = (0..101)
        .map(|n| json!({"label": format!("t{n}")}))
        .collect();
    let too_many = app
        .admin(
            CREATE_DOCUMENT,
            json!({"c": "posts", "id": "p10", "data": {"title": "Ten", "tags": many}}),
        )
        .await;
    assert_eq!(too_many.code(), "TOO_MANY_DOCUMENTS", "{:#}", too_many.body);
    assert!(stored(&app, "posts", "p10").await.is_null());
    // The bound is the request's, whatever the number of its writes.
    let posts: Vec<Value> = (0..51)
        .map(|n| json!({"$id": format!("bulk{n}"), "title": "Bulk", "tags": [{"label": "a"}, {"label": "b"}]}))
        .collect();
    let bulk = app
        .admin(
            "mutation($d: [JSON!]!) { createDocuments(input: {databaseId: \"press\", collectionId: \"posts\", documents: $d}) { id } }",
            json!({"d": posts}),
        )
        .await;
    assert_eq!(bulk.code(), "TOO_MANY_DOCUMENTS", "{:#}", bulk.body);
    assert!(stored(&app, "posts", "bulk0").await.is_null());

    // An update operator on a relationship is no document to write.
    let operator = app
        .admin(
            "mutation($data: JSON) { updateDocument(input: {databaseId: \"press\", collectionId: \"posts\", id: \"p2\", data: $data}) { id } }",
            json!({"data": {"tags": {"method": "arrayAppend", "values": ["rust"]}}}),
        )
        .await;
    assert_eq!(operator.code(), "VALUE_INVALID", "{:#}", operator.body);
    // A bulk update writes its related document once, for all it changes.
    let bulk = app
        .admin(
            "mutation($data: JSON, $q: [String!]) { updateDocuments(input: {databaseId: \"press\", collectionId: \"posts\", data: $data, queries: $q}) { id data } }",
            json!({
                "data": {"author": {"name": "Hal"}},
                "q": [query("equal", "$id", json!(["p2", "p3"]))],
            }),
        )
        .await
        .ok();
    let changed = bulk["updateDocuments"].as_array().unwrap();
    assert_eq!(changed.len(), 2);
    let hal = changed[0]["data"]["author"].as_str().unwrap();
    assert_eq!(changed[1]["data"]["author"], hal);
    assert_eq!(stored(&app, "authors", hal).await["data"]["name"], "Hal");
    let hals = app
        .admin(
            "query($q: [String!]) { documents(databaseId: \"press\", collectionId: \"authors\", queries: $q) { total } }",
            json!({"q": [query("equal", "name", json!(["Hal"]))]}),
        )
        .await
        .ok();
    assert_eq!(hals["documents"]["total"], 1);

    // An update and an upsert take them too.
    let updated = app
        .admin(
            "mutation($data: JSON) { updateDocument(input: {databaseId: \"press\", collectionId: \"posts\", id: \"p1\", data: $data}) { data } }",
            json!({"data": {"author": {"$id": "fay", "name": "Fay"}}}),
        )
        .await
        .ok();
    assert_eq!(updated["updateDocument"]["data"]["author"]["$id"], "fay");
    let upserted = app
        .admin(
            "mutation($data: JSON!) { upsertDocument(input: {databaseId: \"press\", collectionId: \"posts\", id: \"p11\", data: $data}) { data } }",
            json!({"data": {"title": "Eleven", "author": {"$id": "gus", "name": "Gus"}}}),
        )
        .await
        .ok();
    assert_eq!(upserted["upsertDocument"]["data"]["author"]["name"], "Gus");
    assert_eq!(stored(&app, "authors", "gus").await["data"]["name"], "Gus");
    app.shutdown().await;
}
