//! `updateAttribute`: an attribute's settings and key change in place, its
//! values and indexes kept, and a change stored documents would break refused.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const UPDATE: &str = "mutation($input: UpdateAttributeInput!) { updateAttribute(input: $input) { attributes { key type required size min max default elements array } indexes { key attributes } } }";

/// `posts` with a required title under a full-text index, views under a key
/// index, an enum, a list of tags and an optional subtitle; three posts.
async fn posts(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"blog\", name: \"Blog\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "blog", "id": "posts", "name": "posts",
            // Per-document permissions: the indexes have twins led by the
            // sole reader, made again with them.
            "documentSecurity": true,
            "permissions": ["read(\"any\")", "create(\"users\")"],
            "attributes": [
                {"key": "title", "type": "STRING", "size": 200, "required": true},
                {"key": "views", "type": "INTEGER", "min": 0, "max": 1000000, "default": 0},
                {"key": "kind", "type": "ENUM", "elements": ["note", "essay", "poem"]},
                {"key": "tags", "type": "STRING", "size": 32, "array": true},
                {"key": "subtitle", "type": "STRING", "size": 50}
            ],
            "indexes": [
                {"key": "by_views", "type": "KEY", "attributes": ["views", "title"]},
                {"key": "title_text", "type": "FULLTEXT", "attributes": ["title"]},
                {"key": "one_title", "type": "UNIQUE", "attributes": ["title"]},
                {"key": "one_subtitle", "type": "UNIQUE", "attributes": ["subtitle"]}
            ]
        }}),
    )
    .await
    .ok();
    for (id, title, views, kind) in [
        ("a", "Rust and SQLite", 5, "note"),
        ("b", "A much longer title than the others", 50, "essay"),
        ("c", "Go", 7, "note"),
    ] {
        app.admin(
            "mutation($input: CreatePostInput!) { createPost(input: $input) { id } }",
            json!({"input": {"id": id, "title": title, "views": views, "kind": kind, "tags": ["x"]}}),
        )
        .await
        .ok();
    }
}

async fn update(app: &TestApp, changes: Value) -> crate::helpers::Answer {
    let mut input = json!({"databaseId": "blog", "collectionId": "posts"});
    input
        .as_object_mut()
        .unwrap()
        .extend(changes.as_object().unwrap().clone());
    app.admin(UPDATE, json!({"input": input})).await
}

fn attribute<'a>(updated: &'a Value, key: &str) -> &'a Value {
    updated["updateAttribute"]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["key"] == key)
        .unwrap_or_else(|| panic!("no attribute {key}: {updated:#}"))
}

#[tokio::test]
async fn an_attribute_changes_its_settings_and_key_keeping_its_values_and_indexes() {
    let app = spawn_app().await;
    posts(&app).await;
    let twins = || crate::reader_twins::twins(&app, "posts");
    assert_eq!(
        twins().await,
        ["by_views", "one_subtitle", "one_title", "reader"]
    );

    // A required title becomes optional: the column loses its NOT NULL (made
    // again on SQLite), its values and its full-text index stay.
    let optional = update(&app, json!({"key": "title", "required": false}))
        .await
        .ok();
    assert_eq!(attribute(&optional, "title")["required"], false);
    app.admin(
        "mutation { createPost(input: {id: \"d\", views: 1}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let searched = app
        .admin(
            "{ posts(filter: {title: {search: \"SQLite\"}}) { nodes { id title } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        searched["posts"]["nodes"],
        json!([{"id": "a", "title": "Rust and SQLite"}])
    );

    // `views` becomes `hits`: the values, the index and the typed field follow.
    let renamed = update(
        &app,
        json!({"key": "views", "required": false, "default": 0, "newKey": "hits"}),
    )
    .await
    .ok();
    assert_eq!(attribute(&renamed, "hits")["default"], 0);
    assert!(
        renamed["updateAttribute"]["indexes"]
            .as_array()
            .unwrap()
            .contains(&json!({"key": "by_views", "attributes": ["hits", "title"]})),
        "{renamed:#}"
    );
    let ordered = app
        .admin(
            "{ posts(orderBy: [{hits: DESC}], filter: {hits: {gt: 5}}) { nodes { id hits } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        ordered["posts"]["nodes"],
        json!([{"id": "b", "hits": 50}, {"id": "c", "hits": 7}])
    );
    assert_eq!(
        twins().await,
        ["by_views", "one_subtitle", "one_title", "reader"],
        "made again"
    );
    let old_field = app.admin("{ posts { nodes { views } } }", json!({})).await;
    assert_eq!(old_field.code(), "GRAPHQL_VALIDATION_FAILED");
    let generic = app
        .admin(
            "query($q: [String!]) { documents(databaseId: \"blog\", collectionId: \"posts\", queries: $q) { documents { id data } } }",
            json!({"q": [r#"{"method":"equal","attribute":"hits","values":[50]}"#]}),
        )
        .await
        .ok();
    assert_eq!(generic["documents"]["documents"][0]["id"], "b");
    assert_eq!(generic["documents"]["documents"][0]["data"]["hits"], 50);

    // A default that would give documents one value under a unique index is
    // refused, and changes nothing.
    let duplicated = update(
        &app,
        json!({"key": "subtitle", "required": false, "default": "none"}),
    )
    .await;
    assert_eq!(
        duplicated.code(),
        "INDEX_DUPLICATE_VALUES",
        "{:#}",
        duplicated.body
    );
    app.admin(
        "mutation { deleteIndex(input: {databaseId: \"blog\", collectionId: \"posts\", key: \"one_subtitle\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    // A new default reaches the documents that had no value.
    let defaulted = update(
        &app,
        json!({"key": "subtitle", "required": false, "default": "none"}),
    )
    .await
    .ok();
    assert_eq!(attribute(&defaulted, "subtitle")["default"], "none");
    let filled = app
        .admin("{ post(id: \"a\") { subtitle } }", json!({}))
        .await
        .ok();
    assert_eq!(filled["post"]["subtitle"], "none");

    // Widening always works; narrowing works while every stored value fits.
    let sized = update(&app, json!({"key": "title", "required": false, "size": 40}))
        .await
        .ok();
    assert_eq!(attribute(&sized, "title")["size"], 40);
    let long = app
        .admin(
            "mutation { createPost(input: {title: \"This title is longer than forty characters\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(long.code(), "VALUE_OUT_OF_RANGE", "{:#}", long.body);
    // Its unique index still holds after every change.
    let twice = app
        .admin(
            "mutation { createPost(input: {title: \"Go\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(twice.code(), "DOCUMENT_NOT_UNIQUE", "{:#}", twice.body);
    let ranged = update(
        &app,
        json!({"key": "hits", "required": false, "default": 0, "max": 100}),
    )
    .await
    .ok();
    assert_eq!(attribute(&ranged, "hits")["max"], 100);
    let kinds = update(
        &app,
        json!({"key": "kind", "required": false, "elements": ["note", "essay"]}),
    )
    .await
    .ok();
    assert_eq!(
        attribute(&kinds, "kind")["elements"],
        json!(["note", "essay"])
    );
    let tags = update(&app, json!({"key": "tags", "required": false, "size": 64}))
        .await
        .ok();
    assert_eq!(attribute(&tags, "tags")["size"], 64);

    // Made required again once every document has a title.
    app.admin(
        "mutation { updatePost(input: {id: \"d\", title: \"Dee\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let required = update(&app, json!({"key": "title", "required": true}))
        .await
        .ok();
    assert_eq!(attribute(&required, "title")["required"], true);
    let untitled = app
        .admin(
            "mutation { createPost(input: {hits: 1}) { id } }",
            json!({}),
        )
        .await;
    assert!(
        ["VALUE_REQUIRED", "GRAPHQL_VALIDATION_FAILED"].contains(&untitled.code()),
        "{:#}",
        untitled.body
    );
    let everything = app
        .admin(
            "{ posts(orderBy: [{hits: ASC}]) { nodes { id title hits kind tags subtitle } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        everything["posts"]["nodes"],
        json!([
            {"id": "d", "title": "Dee", "hits": 1, "kind": null, "tags": null, "subtitle": "none"},
            {"id": "a", "title": "Rust and SQLite", "hits": 5, "kind": "note", "tags": ["x"], "subtitle": "none"},
            {"id": "c", "title": "Go", "hits": 7, "kind": "note", "tags": ["x"], "subtitle": "none"},
            {"id": "b", "title": "A much longer title than the others", "hits": 50, "kind": "essay", "tags": ["x"], "subtitle": "none"}
        ])
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_change_stored_documents_would_break_or_bad_input_is_refused_and_changes_nothing() {
    let app = spawn_app().await;
    posts(&app).await;
    let refusals = [
        // Made required while a document has none.
        (
            json!({"key": "subtitle", "required": true}),
            "ATTRIBUTE_INVALID",
        ),
        // Narrower than a stored value.
        (
            json!({"key": "title", "required": true, "size": 20}),
            "ATTRIBUTE_INVALID",
        ),
        (
            json!({"key": "views", "required": false, "max": 10}),
            "ATTRIBUTE_INVALID",
        ),
        (
            json!({"key": "views", "required": false, "min": 6}),
            "ATTRIBUTE_INVALID",
        ),
        (
            json!({"key": "kind", "required": false, "elements": ["essay"]}),
            "ATTRIBUTE_INVALID",
        ),
        // A list never narrows.
        (
            json!({"key": "tags", "required": false, "size": 16}),
            "ATTRIBUTE_INVALID",
        ),
        // Settings of another kind, bad values, a default with `required`.
        (
            json!({"key": "views", "required": false, "size": 10}),
            "ATTRIBUTE_INVALID",
        ),
        (
            json!({"key": "title", "required": false, "min": 1}),
            "ATTRIBUTE_INVALID",
        ),
        (
            json!({"key": "views", "required": false, "default": "many"}),
            "ATTRIBUTE_INVALID",
        ),
        (
            json!({"key": "views", "required": false, "min": "low"}),
            "ATTRIBUTE_INVALID",
        ),
        (
            json!({"key": "title", "required": true, "default": "x"}),
            "ATTRIBUTE_INVALID",
        ),
        (
            json!({"key": "title", "required": true, "size": 0}),
            "ATTRIBUTE_INVALID",
        ),
        (
            json!({"key": "kind", "required": false, "elements": []}),
            "ATTRIBUTE_INVALID",
        ),
        // Keys: unknown, taken (in any case), not a key.
        (
            json!({"key": "nope", "required": false}),
            "ATTRIBUTE_NOT_FOUND",
        ),
        (
            json!({"key": "views", "required": false, "newKey": "TITLE"}),
            "ATTRIBUTE_ALREADY_EXISTS",
        ),
        (
            json!({"key": "views", "required": false, "newKey": "bad key!"}),
            "ATTRIBUTE_INVALID",
        ),
        (
            json!({"key": "views", "required": false, "newKey": "x".repeat(300)}),
            "ATTRIBUTE_INVALID",
        ),
    ];
    for (changes, code) in refusals {
        let refused = update(&app, changes.clone()).await;
        assert_eq!(refused.code(), code, "{changes}: {:#}", refused.body);
        let message = refused.body["errors"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(
            !message.contains("ALTER") && !message.contains("SELECT"),
            "{message}"
        );
    }
    // Nothing changed.
    let collection = app
        .admin(
            "{ collection(databaseId: \"blog\", id: \"posts\") { attributes { key required size min max elements } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        collection["collection"]["attributes"],
        json!([
            {"key": "title", "required": true, "size": 200, "min": null, "max": null, "elements": null},
            {"key": "views", "required": false, "size": null, "min": 0, "max": 1000000, "elements": null},
            {"key": "kind", "required": false, "size": null, "min": null, "max": null, "elements": ["note", "essay", "poem"]},
            {"key": "tags", "required": false, "size": 32, "min": null, "max": null, "elements": null},
            {"key": "subtitle", "required": false, "size": 50, "min": null, "max": null, "elements": null}
        ])
    );

    // Only a key holding `databases.write` changes structure.
    let user = app.signed_in("ann@example.com").await;
    let refused = app
        .as_session(
            &user,
            UPDATE,
            json!({"input": {"databaseId": "blog", "collectionId": "posts", "key": "title", "required": false}}),
        )
        .await;
    assert!(
        ["PERMISSION_DENIED", "UNAUTHENTICATED"].contains(&refused.code()),
        "{:#}",
        refused.body
    );
    let reader = app.create_key("default", &["databases.read"]).await;
    let refused = app
        .as_key(
            &reader,
            "default",
            UPDATE,
            json!({"input": {"databaseId": "blog", "collectionId": "posts", "key": "title", "required": false}}),
        )
        .await;
    assert_eq!(refused.code(), "SCOPE_MISSING", "{:#}", refused.body);
    app.shutdown().await;
}

#[tokio::test]
async fn a_relationships_delete_rule_changes_from_either_side() {
    let app = spawn_app().await;
    posts(&app).await;
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "blog", "id": "authors", "name": "authors",
            "permissions": ["read(\"any\")"],
            "attributes": [{"key": "name", "type": "STRING", "size": 50}]
        }}),
    )
    .await
    .ok();
    // Held by `posts` (the many side) as `author`; `authors` sees it as `posts`.
    app.admin(
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }",
        json!({"input": {"databaseId": "blog", "collectionId": "authors", "key": "posts", "relatedCollectionId": "posts", "type": "ONE_TO_MANY", "twoWayKey": "author"}}),
    )
    .await
    .ok();
    app.admin(
        "mutation { createAuthor(input: {id: \"ann\", name: \"Ann\"}) { id } updatePost(input: {id: \"a\", author: \"ann\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let delete_ann = "mutation { deleteAuthor(input: {id: \"ann\"}) { deletedId } }";
    let restricted = app.admin(delete_ann, json!({})).await;
    assert_eq!(
        restricted.code(),
        "DOCUMENT_REFERENCED",
        "{:#}",
        restricted.body
    );

    // A server gave the post a time ahead of the clock.
    app.admin(
        "mutation($data: JSON) { updateDocument(input: {databaseId: \"blog\", collectionId: \"posts\", id: \"a\", data: $data}) { id } }",
        json!({"data": {"$updatedAt": "2040-01-01T00:00:00Z"}}),
    )
    .await
    .ok();
    let relationship_update = "mutation($input: UpdateRelationshipInput!) { updateRelationship(input: $input) { id relationships { key onDelete } } }";
    let change = |collection: &str, key: &str, rule: &str| json!({"input": {"databaseId": "blog", "collectionId": collection, "key": key, "onDelete": rule}});
    // Named from the reverse side: the answer is the collection named.
    let from_authors = app
        .admin(relationship_update, change("authors", "posts", "SET_NULL"))
        .await
        .ok();
    assert_eq!(from_authors["updateRelationship"]["id"], "authors");
    let held = app
        .admin(
            "{ collection(databaseId: \"blog\", id: \"posts\") { relationships { key onDelete } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        held["collection"]["relationships"],
        json!([{"key": "author", "onDelete": "SET_NULL"}])
    );
    app.admin(delete_ann, json!({})).await.ok();
    let orphan = app
        .admin("{ post(id: \"a\") { author { id } updatedAt } }", json!({}))
        .await
        .ok();
    assert_eq!(orphan["post"]["author"], Value::Null);
    // Cleared by the delete, it changed later than it last had, as any update.
    assert_eq!(orphan["post"]["updatedAt"], "2040-01-01T00:00:00.001Z");

    // Named from the side holding it.
    let from_posts = app
        .admin(relationship_update, change("posts", "author", "CASCADE"))
        .await
        .ok();
    assert_eq!(
        from_posts["updateRelationship"]["relationships"],
        json!([{"key": "author", "onDelete": "CASCADE"}])
    );
    app.admin(
        "mutation { createAuthor(input: {id: \"bob\", name: \"Bob\"}) { id } updatePost(input: {id: \"b\", author: \"bob\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation { deleteAuthor(input: {id: \"bob\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    let cascaded = app
        .admin("{ post(id: \"b\") { id } }", json!({}))
        .await
        .ok();
    assert_eq!(cascaded["post"], Value::Null, "deleted with its author");

    for (collection, key, rule, code) in [
        ("posts", "title", "CASCADE", "ATTRIBUTE_INVALID"),
        ("posts", "nope", "CASCADE", "ATTRIBUTE_NOT_FOUND"),
        ("nothing", "author", "CASCADE", "COLLECTION_NOT_FOUND"),
        ("posts", "author", "EXPLODE", "GRAPHQL_VALIDATION_FAILED"),
    ] {
        let refused = app
            .admin(relationship_update, change(collection, key, rule))
            .await;
        assert_eq!(refused.code(), code, "{key} {rule}: {:#}", refused.body);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_subscription_filtering_on_a_renamed_attribute_matches_nothing_rather_than_everything() {
    let app = spawn_app().await;
    posts(&app).await;
    let mut ws = crate::helpers::WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    ws.subscribe(
        "stale",
        "subscription { postChanged(filter: {views: {ne: 5}}) { type node { id } } }",
    )
    .await;
    ws.subscribe("all", "subscription { postChanged { type node { id } } }")
        .await;
    // Live once a write to `c` is heard of.
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    for views in 10.. {
        app.admin(
            "mutation($v: Int) { updatePost(input: {id: \"c\", views: $v}) { id } }",
            json!({"v": views}),
        )
        .await
        .ok();
        if let Some(message) = ws.socket_next_within_short_time().await
            && message["id"] == "all"
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the subscriptions never went live"
        );
    }
    update(
        &app,
        json!({"key": "views", "required": false, "default": 0, "newKey": "hits"}),
    )
    .await
    .ok();
    for hits in [8, 9] {
        app.admin(
            "mutation($h: Int) { updatePost(input: {id: \"a\", hits: $h}) { id } }",
            json!({"h": hits}),
        )
        .await
        .ok();
    }
    // Both writes reach the unfiltered subscription; the stale filter, which
    // would read a missing `views` as not 5, hears neither.
    let heard = tokio::time::timeout(crate::helpers::WAIT, async {
        let mut heard = Vec::new();
        while heard.iter().filter(|id| *id == "all").count() < 2 {
            let message = ws.next_json().await.expect("an event");
            if message["type"] == "next"
                && message["payload"]["data"]["postChanged"]["node"]["id"] == "a"
            {
                heard.push(message["id"].as_str().unwrap_or_default().to_string());
            }
        }
        heard
    })
    .await
    .expect("the events arrive in time");
    assert_eq!(heard, ["all", "all"]);
    app.shutdown().await;
}

/// A structure change whose client goes away while its DDL waits leaves
/// nothing behind. MariaDB's DDL commits by itself: the column was added while
/// the metadata that names it never was, and making the attribute again failed
/// on the column left there. Now the change is settled on its own session (its
/// undo runs), and the same attribute can be made next. SQLite's change is one
/// transaction.
#[tokio::test]
async fn a_structure_change_whose_client_goes_away_mid_ddl_leaves_nothing_behind() {
    let app = spawn_app().await;
    posts(&app).await;
    let db = app.server.as_ref().unwrap().state().db.clone();
    let mysql = db.dialect() == nimbus::db::Dialect::MySql;
    let table: String =
        sqlx::query_scalar("SELECT table_name FROM db_collections WHERE id = 'posts'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    // Holds the table: on MariaDB a reading transaction, whose metadata lock
    // the ALTER waits for; on SQLite the write lock.
    let url = app.config.effective_database_url();
    let mut blocker = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    let mut watcher = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    if mysql {
        sqlx::raw_sql("BEGIN").execute(&mut blocker).await.unwrap();
        sqlx::raw_sql(&format!("SELECT COUNT(*) FROM `{table}`"))
            .execute(&mut blocker)
            .await
            .unwrap();
    } else {
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut blocker)
            .await
            .unwrap();
    }
    let create = json!({"query": "mutation { createAttribute(input: {databaseId: \"blog\", collectionId: \"posts\", attribute: {key: \"late\", type: STRING, size: 20}}) { attributes { key } } }"});
    let gone = tokio::spawn(
        app.client
            .post(format!("{}/v1/graphql", app.url))
            .header("x-nimbus-key", &app.admin_key)
            .json(&create)
            .send(),
    );
    if mysql {
        // The change is at its DDL, waiting for the table.
        let waiting = async {
            loop {
                let altering: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                     WHERE INFO LIKE '%ALTER TABLE%' AND STATE LIKE 'Waiting for table metadata lock%'",
                )
                .fetch_one(&mut watcher)
                .await
                .unwrap();
                if altering > 0 {
                    break;
                }
                tokio::task::yield_now().await;
            }
        };
        if tokio::time::timeout(crate::helpers::WAIT, waiting)
            .await
            .is_err()
        {
            let rows: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
                "SELECT CAST(STATE AS CHAR), CAST(INFO AS CHAR) FROM information_schema.PROCESSLIST",
            )
            .fetch_all(&mut watcher)
            .await
            .unwrap();
            panic!("the ALTER waits for the table: {rows:?}");
        }
    }
    // The client goes away: its connection closes with the request unanswered.
    gone.abort();
    let _ = gone.await;
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();
    drop(blocker);
    let made = app
        .admin(create["query"].as_str().unwrap(), json!({}))
        .await
        .ok();
    let keys: Vec<&Value> = made["createAttribute"]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| &a["key"])
        .collect();
    assert_eq!(keys.iter().filter(|k| **k == "late").count(), 1, "{made}");
    let written = app
        .admin(
            "mutation { createPost(input: {id: \"d\", title: \"Late\", late: \"yes\"}) { late } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(written["createPost"]["late"], "yes");
    app.shutdown().await;
}

/// Collections `ids` of database `blog`, a `name` each.
async fn named_collections(app: &TestApp, ids: &[&str]) {
    for id in ids {
        app.admin(
            "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
            json!({"input": {
                "databaseId": "blog", "id": id, "name": id,
                "attributes": [{"key": "name", "type": "STRING", "size": 50}],
            }}),
        )
        .await
        .ok();
    }
}

/// Changes giving one collection the same key at once (an attribute, and the
/// reverse fields of two relationships) are checked where they take turns:
/// one wins, the others are refused, and the collection's type keeps one field
/// of that name (the project's schema still builds).
#[tokio::test]
async fn changes_taking_one_key_at_once_leave_one_field() {
    let app = spawn_app().await;
    posts(&app).await;
    named_collections(&app, &["fans", "critics"]).await;
    let relate =
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }";
    let reverse = |holder: &str, key: &str, back: &str| {
        json!({"input": {
            "databaseId": "blog", "collectionId": holder, "key": key,
            "relatedCollectionId": "posts", "type": "MANY_TO_ONE",
            "twoWayKey": back, "onDelete": "SET_NULL"
        }})
    };
    let attribute = "mutation($key: String!) { createAttribute(input: {databaseId: \"blog\", collectionId: \"posts\", attribute: {key: $key, type: STRING, size: 10}}) { id } }";
    for round in 0..4 {
        let back = format!("taken{round}");
        let key = format!("post{round}");
        let (a, b, c) = tokio::join!(
            app.admin(relate, reverse("fans", &key, &back)),
            app.admin(relate, reverse("critics", &key, &back)),
            app.admin(attribute, json!({"key": back})),
        );
        let codes = [a.code(), b.code(), c.code()];
        assert_eq!(
            codes.iter().filter(|code| **code == "<none>").count(),
            1,
            "round {round}: {codes:?}"
        );
        assert_eq!(
            codes
                .iter()
                .filter(|code| **code == "ATTRIBUTE_ALREADY_EXISTS")
                .count(),
            2,
            "round {round}: {codes:?}"
        );
    }
    // A rename to a key another collection's change gives the same collection
    // at the same moment (a reverse field).
    for round in 0..4 {
        let spare = format!("spare{round}");
        let wanted = format!("wanted{round}");
        app.admin(attribute, json!({"key": spare})).await.ok();
        let (created, renamed) = tokio::join!(
            app.admin(relate, reverse("fans", &format!("again{round}"), &wanted)),
            update(
                &app,
                json!({"key": spare, "required": false, "newKey": wanted})
            ),
        );
        let codes = [created.code(), renamed.code()];
        assert!(
            codes == ["<none>", "ATTRIBUTE_ALREADY_EXISTS"]
                || codes == ["ATTRIBUTE_ALREADY_EXISTS", "<none>"],
            "round {round}: {codes:?}"
        );
    }
    let still = app
        .admin("{ posts(first: 1) { totalCount } }", json!({}))
        .await
        .ok();
    assert_eq!(still["posts"]["totalCount"], 3);
    app.shutdown().await;
}

/// Waits until no `ALTER` of `table` runs (or waits) on the server.
async fn alter_ended(watcher: &mut sqlx::AnyConnection, table: &str) {
    let ended = async {
        loop {
            let altering: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE '%ALTER TABLE%{table}%' AND ID <> CONNECTION_ID()"
            ))
            .fetch_one(&mut *watcher)
            .await
            .unwrap();
            if altering == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(crate::helpers::WAIT, ended)
        .await
        .expect("the ALTER ends");
}

/// Waits until an `ALTER` of `table` waits for the table's metadata lock.
async fn alter_waiting(watcher: &mut sqlx::AnyConnection, table: &str) {
    let waiting = async {
        loop {
            let altering: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE '%ALTER TABLE%{table}%' \
                 AND STATE LIKE 'Waiting for table metadata lock%'"
            ))
            .fetch_one(&mut *watcher)
            .await
            .unwrap();
            if altering > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(crate::helpers::WAIT, waiting)
        .await
        .expect("the ALTER waits for the table");
}

/// Holds `notes`' metadata row: a change's DDL runs, its metadata waits.
async fn hold_metadata(blocker: &mut sqlx::AnyConnection) {
    sqlx::raw_sql("BEGIN").execute(&mut *blocker).await.unwrap();
    sqlx::raw_sql("SELECT version FROM db_collections WHERE id = 'notes' FOR UPDATE")
        .execute(&mut *blocker)
        .await
        .unwrap();
}

/// Waits until a change's metadata waits for its row (held by a blocker).
async fn metadata_waiting(watcher: &mut sqlx::AnyConnection) {
    let waiting = async {
        loop {
            let waits: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM information_schema.PROCESSLIST \
                 WHERE INFO LIKE 'UPDATE db_collections%' AND STATE = 'Updating'",
            )
            .fetch_one(&mut *watcher)
            .await
            .unwrap();
            if waits > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(crate::helpers::WAIT, waiting)
        .await
        .is_err()
    {
        let rows: Vec<(Option<String>, Option<Vec<u8>>)> =
            sqlx::query_as("SELECT STATE, INFO FROM information_schema.PROCESSLIST")
                .fetch_all(&mut *watcher)
                .await
                .unwrap();
        let rows: Vec<(Option<String>, String)> = rows
            .into_iter()
            .map(|(state, info)| {
                (
                    state,
                    String::from_utf8_lossy(&info.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        panic!("the metadata waits for its row: {rows:?}");
    }
}

async fn column_exists(watcher: &mut sqlx::AnyConnection, table: &str, column: &str) -> bool {
    let found: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?",
    )
    .bind(table)
    .bind(column)
    .fetch_one(&mut *watcher)
    .await
    .unwrap();
    found > 0
}

/// A replica killed between a structure change's DDL and its metadata (DDL
/// commits by itself on MariaDB) leaves the change written down: the next
/// change of the project settles it before its own (a required column the
/// metadata never named is dropped, so the key can be made again), and a
/// replica starting settles what a killed one left of a drop (which runs only
/// once the metadata no longer names the column: reads never meet metadata
/// naming a column that is gone).
#[tokio::test]
async fn a_change_whose_replica_dies_mid_ddl_is_settled_by_the_next_holder_of_the_lock() {
    use crate::helpers::{ServeOptions, ServeProcess, WAIT, spawn_with, test_config};
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.secret = Some("structure-tests-share-this-secret-0123456789".into());
    let app = spawn_with(config, dir).await;
    let db = app.server.as_ref().unwrap().state().db.clone();
    if db.dialect() != nimbus::db::Dialect::MySql {
        // SQLite's DDL is transactional, and its one file has no replicas.
        app.shutdown().await;
        return;
    }
    app.admin(
        "mutation { createDatabase(input: {id: \"blog\", name: \"Blog\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "blog", "id": "notes", "name": "notes",
            "permissions": ["read(\"any\")"],
            "attributes": [{"key": "body", "type": "STRING", "size": 100}]
        }}),
    )
    .await
    .ok();
    let table: String =
        sqlx::query_scalar("SELECT table_name FROM db_collections WHERE id = 'notes'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let url = app.config.effective_database_url();
    let connect = || async {
        <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap()
    };
    let (mut blocker, mut watcher) = (connect().await, connect().await);
    let intents = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM structure_intents")
            .fetch_one(db.pool())
            .await
            .unwrap()
    };
    // Sends `query` to the replica as a client that never sees its answer.
    let send = |replica: &ServeProcess, query: &str| {
        let request = app
            .client
            .post(format!("{}/v1/graphql", replica.url))
            .header("x-nimbus-key", &app.admin_key)
            .json(&json!({"query": query}))
            .send();
        tokio::spawn(request)
    };

    // A required attribute: its column made, the replica killed before its metadata.
    let mut replica = ServeProcess::start(&app, ServeOptions::default()).await;
    hold_metadata(&mut blocker).await;
    let create = "mutation { createAttribute(input: {databaseId: \"blog\", collectionId: \"notes\", attribute: {key: \"title\", type: STRING, size: 20, required: true}}) { attributes { key } } }";
    let unanswered = send(&replica, create);
    metadata_waiting(&mut watcher).await;
    replica.kill();
    let _ = unanswered.await;
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();
    assert_eq!(
        intents().await,
        1,
        "the change was written down before its DDL"
    );
    assert!(
        column_exists(&mut watcher, &table, "a_title").await,
        "a required column no metadata names"
    );
    // The next change settles it first: the key is free, and made once.
    let made = app.admin(create, json!({})).await.ok();
    let keys: Vec<&str> = made["createAttribute"]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["key"].as_str())
        .collect();
    assert_eq!(keys, ["body", "title"], "{made}");
    assert_eq!(intents().await, 0);
    let written = app
        .admin(
            "mutation { createNote(input: {id: \"n1\", title: \"First\", body: \"text\"}) { title body } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(written["createNote"]["title"], "First", "{written}");

    let read_body = || async {
        app.admin(
            "{ documents(databaseId: \"blog\", collectionId: \"notes\") { total documents { id data } } }",
            json!({}),
        )
        .await
        .ok()
    };
    let delete = "mutation { deleteAttribute(input: {databaseId: \"blog\", collectionId: \"notes\", key: \"body\"}) { attributes { key } } }";
    // A drop whose replica is killed before its metadata: nothing is dropped,
    // so the documents stay readable with the attribute the metadata names.
    let mut replica = ServeProcess::start(&app, ServeOptions::default()).await;
    hold_metadata(&mut blocker).await;
    let unanswered = send(&replica, delete);
    metadata_waiting(&mut watcher).await;
    replica.kill();
    let _ = unanswered.await;
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();
    assert!(column_exists(&mut watcher, &table, "a_body").await);
    let read = read_body().await;
    assert_eq!(
        read["documents"]["documents"][0]["data"]["body"], "text",
        "{read}"
    );

    // A drop whose replica is killed once its metadata committed, its DDL
    // waiting for a reader: the column waits to go, named by nothing.
    let mut replica = ServeProcess::start(&app, ServeOptions::default()).await;
    sqlx::raw_sql("BEGIN").execute(&mut blocker).await.unwrap();
    sqlx::raw_sql(&format!("SELECT COUNT(*) FROM `{table}`"))
        .execute(&mut blocker)
        .await
        .unwrap();
    let unanswered = send(&replica, delete);
    alter_waiting(&mut watcher, &table).await;
    replica.kill();
    let _ = unanswered.await;
    sqlx::raw_sql("COMMIT").execute(&mut blocker).await.unwrap();
    alter_ended(&mut watcher, &table).await;
    let attributes: Vec<u8> =
        sqlx::query_scalar("SELECT attributes FROM db_collections WHERE id = 'notes'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let attributes = String::from_utf8(attributes).unwrap();
    assert!(
        !attributes.contains("\"body\""),
        "the metadata went before the drop: {attributes}"
    );
    let read = read_body().await;
    assert_eq!(read["documents"]["total"], 1, "{read}");
    // A replica starting settles it: the drop runs again (or finds it done).
    let _settler = ServeProcess::start(&app, ServeOptions::default()).await;
    let settled = async {
        while intents().await > 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(WAIT, settled)
        .await
        .expect("a starting replica settles the change");
    assert!(!column_exists(&mut watcher, &table, "a_body").await);
    let made = app
        .admin(
            "mutation { createAttribute(input: {databaseId: \"blog\", collectionId: \"notes\", attribute: {key: \"body\", type: INTEGER}}) { attributes { key type } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        made["createAttribute"]["attributes"][1]["type"], "INTEGER",
        "{made}"
    );
    app.shutdown().await;
}

/// A collection deleted while a relationship to it is made: whichever takes
/// its turn first wins, and the other is refused where changes take turns
/// (`COLLECTION_REFERENCED`, or `RELATED_COLLECTION_NOT_FOUND`), so no
/// relationship is left pointing at a collection gone. On MariaDB both are
/// held at the project's structure lock until each has passed its first
/// checks.
#[tokio::test]
async fn a_collection_deleted_while_a_relationship_to_it_is_made_leaves_none_dangling() {
    let app = spawn_app().await;
    let db = app.server.as_ref().unwrap().state().db.clone();
    let mysql = db.dialect() == nimbus::db::Dialect::MySql;
    app.admin(
        "mutation { createDatabase(input: {id: \"blog\", name: \"Blog\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    named_collections(&app, &["authors", "books"]).await;
    let project: String =
        sqlx::query_scalar("SELECT project_id FROM db_collections WHERE id = 'authors'")
            .fetch_one(db.pool())
            .await
            .unwrap();
    let url = app.config.effective_database_url();
    let mut holder = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    if mysql {
        let locked: i64 = sqlx::query_scalar(
            "SELECT GET_LOCK(CONCAT('nimbus_ddl_', MD5(CONCAT(DATABASE(), ':', ?))), 10)",
        )
        .bind(&project)
        .fetch_one(&mut holder)
        .await
        .unwrap();
        assert_eq!(locked, 1);
    }
    let delete = app.admin(
        "mutation { deleteCollection(input: {databaseId: \"blog\", id: \"authors\"}) { deletedId } }",
        json!({}),
    );
    let relate = app.admin(
        "mutation { createRelationship(input: {databaseId: \"blog\", collectionId: \"books\", relatedCollectionId: \"authors\", key: \"author\", type: MANY_TO_ONE}) { relationships { key } } }",
        json!({}),
    );
    let release = async {
        if mysql {
            // Both wait for the lock, their first checks passed.
            let waiting = async {
                loop {
                    let waiters: i64 = sqlx::query_scalar(
                        "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE STATE = 'User lock'",
                    )
                    .fetch_one(&mut holder)
                    .await
                    .unwrap();
                    if waiters >= 2 {
                        break;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
            };
            tokio::time::timeout(crate::helpers::WAIT, waiting)
                .await
                .expect("both changes wait for the project's structure lock");
            sqlx::query("SELECT RELEASE_ALL_LOCKS()")
                .execute(&mut holder)
                .await
                .unwrap();
        }
    };
    let (deleted, related, ()) = tokio::join!(delete, relate, release);
    let codes = (deleted.code(), related.code());
    let books = app
        .admin(
            "{ collection(databaseId: \"blog\", id: \"books\") { relationships { key relatedCollectionId } } }",
            json!({}),
        )
        .await
        .ok();
    let relationships = books["collection"]["relationships"].as_array().unwrap();
    let authors = app
        .admin(
            "{ collection(databaseId: \"blog\", id: \"authors\") { id } }",
            json!({}),
        )
        .await;
    if relationships.is_empty() {
        assert_eq!(authors.code(), "COLLECTION_NOT_FOUND", "{codes:?}");
        assert_eq!(codes.1, "RELATED_COLLECTION_NOT_FOUND", "{codes:?}");
    } else {
        assert_eq!(relationships[0]["relatedCollectionId"], "authors");
        assert_eq!(authors.ok()["collection"]["id"], "authors", "{codes:?}");
        assert_eq!(codes.0, "COLLECTION_REFERENCED", "{codes:?}");
    }
    app.shutdown().await;
}
