//! Databases: collections as tables, their own GraphQL types, filters, orders,
//! pages, permissions, the generic API, and all-or-nothing requests.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const CREATE_COLLECTION: &str = "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id graphqlName attributes { key type required } indexes { key type } } }";

/// A `blog` database with a `posts` collection anyone may read and signed-in
/// users may write, each post its author's.
async fn blog(app: &TestApp) -> Value {
    app.admin(
        "mutation { createDatabase(input: {id: \"blog\", name: \"Blog\"}) { id name enabled } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        CREATE_COLLECTION,
        json!({"input": {
            "databaseId": "blog",
            "id": "posts",
            "name": "posts",
            "documentSecurity": true,
            "permissions": ["read(\"any\")", "create(\"users\")"],
            "attributes": [
                {"key": "title", "type": "STRING", "size": 200, "required": true},
                {"key": "views", "type": "INTEGER", "min": 0, "max": 1000000, "default": 0},
                {"key": "published", "type": "BOOLEAN", "default": false},
                {"key": "tags", "type": "STRING", "size": 32, "array": true},
                {"key": "publishedAt", "type": "DATETIME"}
            ],
            "indexes": [
                {"key": "by_views", "type": "KEY", "attributes": ["views"]},
                {"key": "by_published_views", "type": "KEY", "attributes": ["published", "views"], "orders": ["ASC", "DESC"]}
            ]
        }}),
    )
    .await
    .ok()["createCollection"]
        .clone()
}

/// An `authors` collection in the blog: anyone may read it, signed-in users may
/// create and delete authors.
async fn authors(app: &TestApp) {
    app.admin(
        CREATE_COLLECTION,
        json!({"input": {
            "databaseId": "blog", "id": "authors", "name": "authors",
            "permissions": ["read(\"any\")", "create(\"users\")", "delete(\"users\")"],
            "attributes": [{"key": "name", "type": "STRING", "size": 100, "required": true}]
        }}),
    )
    .await
    .ok();
}

async fn user(app: &TestApp, email: &str) -> String {
    app.signed_in(email).await
}

#[tokio::test]
async fn a_collection_gets_its_own_types_and_typed_crud_with_filters_orders_and_pages() {
    let app = spawn_app().await;
    let collection = blog(&app).await;
    assert_eq!(collection["graphqlName"], "Post");
    assert_eq!(collection["indexes"].as_array().unwrap().len(), 2);

    // The schema has the collection's types at once.
    let post_type = app
        .admin(
            "{ __type(name: \"Post\") { fields { name type { kind name ofType { name } } } } }",
            json!({}),
        )
        .await
        .ok();
    let fields: Vec<&str> = post_type["__type"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "id",
            "createdAt",
            "updatedAt",
            "permissions",
            "sequence",
            "title",
            "views",
            "published",
            "tags",
            "publishedAt"
        ]
    );
    let sdl = app.get_text("/v1/graphql/schema.graphql").await;
    for expected in [
        "type Post ",
        "input PostFilter",
        "input PostOrderBy",
        "input CreatePostInput",
        "input UpdatePostInput",
        "filter: PostFilter",
        "createPost(input: CreatePostInput!): Post\n",
        "title: String!",
        "views: Int",
    ] {
        assert!(sdl.contains(expected), "schema lacks `{expected}`");
    }

    let ann = user(&app, "ann@example.com").await;
    let create = "mutation($input: CreatePostInput!) { createPost(input: $input) { id title views published tags publishedAt permissions } }";
    let mut ids = Vec::new();
    for (i, views) in [50, 700, 120, 700, 3].iter().enumerate() {
        let created = app
            .as_session(&ann, create, json!({"input": {"title": format!("Post {i}"), "views": views, "published": i % 2 == 1 || i == 4, "tags": ["rust", format!("t{i}")], "publishedAt": "2026-01-02T03:04:05.678Z"}}))
            .await
            .ok();
        ids.push(created["createPost"]["id"].as_str().unwrap().to_string());
        if i == 0 {
            let post = &created["createPost"];
            assert_eq!(post["title"], "Post 0");
            assert_eq!(post["views"], 50);
            assert_eq!(post["published"], false);
            assert_eq!(post["tags"], json!(["rust", "t0"]));
            assert_eq!(post["publishedAt"], "2026-01-02T03:04:05.678Z");
            let permissions: Vec<&str> = post["permissions"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            assert_eq!(permissions.len(), 3, "{permissions:?}");
            assert!(
                permissions.iter().all(|p| p.contains("user:")),
                "{permissions:?}"
            );
            // In Appwrite's order of the actions: read, (create), update, delete.
            let actions: Vec<&str> = permissions
                .iter()
                .map(|p| p.split('(').next().unwrap())
                .collect();
            assert_eq!(actions, ["read", "update", "delete"]);
        }
    }

    // A guest reads: published and views > 100, most viewed first, ties by id.
    let list = "query($f: PostFilter, $o: [PostOrderBy!], $first: Int, $after: String) { posts(filter: $f, orderBy: $o, first: $first, after: $after) { totalCount nodes { id title views } pageInfo { hasNextPage endCursor } } }";
    let found = app
        .post(json!({"query": list, "variables": {"f": {"published": {"eq": true}, "views": {"gt": 100}}, "o": [{"views": "DESC"}]}}), &[])
        .await
        .ok();
    assert_eq!(found["posts"]["totalCount"], 2);
    let titles: Vec<&str> = found["posts"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Post 1", "Post 3"]);

    // Paging through everything by views ascending, two at a time.
    let mut seen = Vec::new();
    let mut seen_titles = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .post(json!({"query": list, "variables": {"o": [{"views": "ASC"}], "first": 2, "after": after}}), &[])
            .await
            .ok();
        for node in page["posts"]["nodes"].as_array().unwrap() {
            seen.push(node["views"].as_i64().unwrap());
            seen_titles.push(node["title"].as_str().unwrap().to_string());
        }
        if page["posts"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["posts"]["pageInfo"]["endCursor"]
            .as_str()
            .map(String::from);
    }
    assert_eq!(seen, [3, 50, 120, 700, 700]);

    // The same pages selecting only titles: the order's column is read for the
    // cursors all the same.
    let titles_only = "query($after: String) { posts(orderBy: [{views: ASC}], first: 2, after: $after) { nodes { title } pageInfo { hasNextPage endCursor } } }";
    let mut titles = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .post(
                json!({"query": titles_only, "variables": {"after": after}}),
                &[],
            )
            .await
            .ok();
        for node in page["posts"]["nodes"].as_array().unwrap() {
            assert_eq!(node.as_object().unwrap().len(), 1, "{node}");
            titles.push(node["title"].as_str().unwrap().to_string());
        }
        if page["posts"]["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = page["posts"]["pageInfo"]["endCursor"]
            .as_str()
            .map(String::from);
    }
    assert_eq!(titles, seen_titles);

    // Without `pageInfo` no row beyond the page is read, and the page is the same;
    // with `hasPreviousPage` alone, a page read backwards still tells what precedes.
    let bare = app
        .post(
            json!({"query": "{ posts(orderBy: [{views: ASC}], first: 2) { nodes { title } } }"}),
            &[],
        )
        .await
        .ok();
    let bare: Vec<&str> = bare["posts"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node["title"].as_str().unwrap())
        .collect();
    assert_eq!(bare, seen_titles[..2]);
    // Times are read when shown, with cursors asked for or not.
    let times = |query: &'static str| {
        let app = &app;
        async move {
            let page = app.post(json!({ "query": query }), &[]).await.ok();
            page["posts"].clone()
        }
    };
    let with_cursors = times("{ posts(orderBy: [{views: ASC}], first: 2) { edges { cursor node { title createdAt } } } }").await;
    let without =
        times("{ posts(orderBy: [{views: ASC}], first: 2) { nodes { title createdAt } } }").await;
    for i in 0..2 {
        let shown = &without["nodes"][i]["createdAt"];
        assert!(
            shown.as_str().is_some_and(|t| t.starts_with("20")),
            "{without}"
        );
        assert_eq!(&with_cursors["edges"][i]["node"]["createdAt"], shown);
        assert_eq!(
            without["nodes"][i]["title"].as_str(),
            Some(seen_titles[i].as_str())
        );
        assert!(
            with_cursors["edges"][i]["cursor"]
                .as_str()
                .is_some_and(|c| !c.is_empty())
        );
    }
    let backwards = app
        .post(
            json!({"query": "{ posts(orderBy: [{views: ASC}], last: 2) { nodes { title } pageInfo { hasPreviousPage } } }"}),
            &[],
        )
        .await
        .ok();
    assert_eq!(backwards["posts"]["pageInfo"]["hasPreviousPage"], true);
    assert_eq!(
        backwards["posts"]["nodes"][1]["title"].as_str(),
        seen_titles.last().map(String::as_str)
    );

    // or / not / string and list conditions.
    let mixed = app
        .post(json!({"query": list, "variables": {"f": {"or": [{"title": {"startsWith": "Post 4"}}, {"views": {"in": [50]}}], "not": {"tags": {"contains": "t0"}}}}}), &[])
        .await
        .ok();
    let titles: Vec<&str> = mixed["posts"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["title"].as_str().unwrap())
        .collect();
    assert_eq!(titles, ["Post 4"]);

    // By id, and an unknown id is null.
    let one = app
        .post(json!({"query": "query($id: ID!) { post(id: $id) { title } missing: post(id: \"nope\") { title } }", "variables": {"id": ids[2]}}), &[])
        .await
        .ok();
    assert_eq!(one, json!({"post": {"title": "Post 2"}, "missing": null}));

    // The author updates; someone else may not.
    let update = "mutation($input: UpdatePostInput!) { updatePost(input: $input) { title views updatedAt } }";
    let updated = app
        .as_session(&ann, update, json!({"input": {"id": ids[0], "views": 51}}))
        .await
        .ok();
    assert_eq!(updated["updatePost"]["views"], 51);
    assert_eq!(updated["updatePost"]["title"], "Post 0");
    let bob = user(&app, "bob@example.com").await;
    let refused = app
        .as_session(&bob, update, json!({"input": {"id": ids[0], "views": 0}}))
        .await;
    assert_eq!(refused.code(), "PERMISSION_DENIED");
    let guest = app
        .post(
            json!({"query": "mutation { createPost(input: {title: \"x\"}) { id } }"}),
            &[],
        )
        .await;
    assert_eq!(guest.code(), "PERMISSION_DENIED");

    // A stale precondition loses no write silently.
    let stale = app
        .as_session(&ann, update, json!({"input": {"id": ids[0], "views": 52, "expectedUpdatedAt": "2020-01-01T00:00:00.000Z"}}))
        .await;
    assert_eq!(stale.code(), "DOCUMENT_CHANGED");

    let deleted = app
        .as_session(
            &ann,
            "mutation($id: ID!) { deletePost(input: {id: $id}) { deletedId } }",
            json!({"id": ids[4]}),
        )
        .await
        .ok();
    assert_eq!(deleted["deletePost"]["deletedId"], ids[4].as_str());
    let count = app
        .post(json!({"query": "{ posts { totalCount } }"}), &[])
        .await
        .ok();
    assert_eq!(count["posts"]["totalCount"], 4);

    // Nodes are built from what the selection names, through aliases and
    // fragments alike.
    let shaped = app
        .post(
            json!({"query": "query { one: post(id: \"%ID%\") { ...Named } posts(first: 1, orderBy: [{views: ASC}]) { nodes { ...Named heading: title } edges { cursor node { ... on Post { views permissions } } } } } fragment Named on Post { title createdAt }".replace("%ID%", ids[0].as_str())}),
            &[],
        )
        .await
        .ok();
    assert_eq!(shaped["one"]["title"], "Post 0");
    assert!(
        shaped["one"]["createdAt"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let node = &shaped["posts"]["nodes"][0];
    assert_eq!(node["heading"], node["title"]);
    assert!(node["createdAt"].is_string(), "{shaped:#}");
    let edge = &shaped["posts"]["edges"][0];
    assert!(edge["cursor"].is_string());
    assert!(edge["node"]["views"].is_number());
    assert!(edge["node"]["permissions"].is_array(), "{shaped:#}");
    app.shutdown().await;
}

#[tokio::test]
async fn the_mutations_of_one_request_commit_together_or_not_at_all() {
    let app = spawn_app().await;
    blog(&app).await;
    let ann = user(&app, "ann@example.com").await;
    let failing = app
        .as_session(
            &ann,
            "mutation { a: createPost(input: {id: \"first\", title: \"kept?\"}) { id } b: createPost(input: {id: \"second\", title: \"bad\", views: -5}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(failing.code(), "VALUE_OUT_OF_RANGE", "{:#}", failing.body);
    assert_eq!(
        failing.body["data"],
        Value::Null,
        "nothing of a rolled-back request is shown"
    );
    let mixed = app
        .admin(
            "mutation { a: createDocument(input: {databaseId: \"blog\", collectionId: \"posts\", data: {title: \"t\"}}) { id } b: createDatabase(input: {name: \"other\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(mixed.code(), "OPERATION_NOT_ALLOWED");
    let after = app
        .post(
            json!({"query": "{ first: post(id: \"first\") { id } posts { totalCount } }"}),
            &[],
        )
        .await
        .ok();
    assert_eq!(after, json!({"first": null, "posts": {"totalCount": 0}}));

    let both = app
        .as_session(
            &ann,
            "mutation { a: createPost(input: {id: \"first\", title: \"one\"}) { id } b: updatePost(input: {id: \"first\", title: \"one, edited\"}) { title } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(both["b"]["title"], "one, edited");
    let read = app
        .post(json!({"query": "{ post(id: \"first\") { title } }"}), &[])
        .await
        .ok();
    assert_eq!(read["post"]["title"], "one, edited");
    app.shutdown().await;
}

#[tokio::test]
async fn the_generic_api_reads_appwrite_system_fields_in_data() {
    let app = spawn_app().await;
    blog(&app).await;
    let key = app
        .create_key("default", &["documents.read", "documents.write"])
        .await;
    let create = "mutation($input: CreateDocumentInput!) { createDocument(input: $input) { id createdAt updatedAt permissions data } }";
    // A document sent back as Appwrite's clients hold it: `$id` and
    // `$permissions` stand for the arguments, a key's `$createdAt` and
    // `$updatedAt` are kept (an import), the rest is left out.
    let imported = app
        .as_key(
            &key,
            "default",
            create,
            json!({"input": {"databaseId": "blog", "collectionId": "posts", "data": {
                "$id": "imported", "$permissions": ["read(\"any\")"],
                "$createdAt": "2020-01-02T03:04:05.678+00:00", "$updatedAt": "2021-06-07 08:09:10",
                "$sequence": 7, "$databaseId": "blog", "$collectionId": "posts", "title": "Old"
            }}}),
        )
        .await
        .ok();
    let imported = &imported["createDocument"];
    assert_eq!(imported["id"], "imported");
    assert_eq!(imported["createdAt"], "2020-01-02T03:04:05.678Z");
    assert_eq!(imported["updatedAt"], "2021-06-07T08:09:10.000Z");
    assert_eq!(imported["permissions"], json!(["read(\"any\")"]));
    assert_eq!(imported["data"]["title"], "Old");
    // Stored so: lists order and filter by the given times.
    let listed = app
        .as_key(
            &key,
            "default",
            "query($q: [String!]) { documents(databaseId: \"blog\", collectionId: \"posts\", queries: $q) { documents { id } } }",
            json!({"q": [r#"{"method":"lessThan","attribute":"$createdAt","values":["2020-12-31"]}"#]}),
        )
        .await
        .ok();
    assert_eq!(
        listed["documents"]["documents"],
        json!([{"id": "imported"}])
    );
    // A key's update may set them too; without them the update time is now.
    let update = "mutation($input: UpdateDocumentInput!) { updateDocument(input: $input) { createdAt updatedAt data } }";
    let moved = app
        .as_key(
            &key,
            "default",
            update,
            json!({"input": {"databaseId": "blog", "collectionId": "posts", "id": "imported", "data": {"$updatedAt": "2022-01-01T00:00:00Z", "views": 3}}}),
        )
        .await
        .ok();
    assert_eq!(
        moved["updateDocument"]["updatedAt"],
        "2022-01-01T00:00:00.000Z"
    );
    assert_eq!(
        moved["updateDocument"]["createdAt"],
        "2020-01-02T03:04:05.678Z"
    );
    let touched = app
        .as_key(
            &key,
            "default",
            update,
            json!({"input": {"databaseId": "blog", "collectionId": "posts", "id": "imported", "data": {"views": 4}}}),
        )
        .await
        .ok();
    assert!(
        touched["updateDocument"]["updatedAt"]
            .as_str()
            .unwrap()
            .starts_with("20")
            && touched["updateDocument"]["updatedAt"].as_str().unwrap() > "2026",
        "{touched:#}"
    );

    // A user's times are left out: the clock decides.
    let ann = app.signed_in("ann@example.com").await;
    let own = app
        .as_session(
            &ann,
            create,
            json!({"input": {"databaseId": "blog", "collectionId": "posts", "data": {"$createdAt": "2000-01-01T00:00:00Z", "title": "Mine"}}}),
        )
        .await
        .ok();
    assert!(
        own["createDocument"]["createdAt"].as_str().unwrap() > "2026",
        "{own:#}"
    );
    // Bad system values are refused; unknown `$` names too.
    for (data, code) in [
        (
            json!({"$createdAt": "yesterday", "title": "x"}),
            "BAD_USER_INPUT",
        ),
        (json!({"$createdAt": 12, "title": "x"}), "BAD_USER_INPUT"),
        (
            json!({"$updatedAt": "9999-12-31T23:59:59Z", "title": "x"}),
            "BAD_USER_INPUT",
        ),
        (
            json!({"$permissions": "read(any)", "title": "x"}),
            "BAD_USER_INPUT",
        ),
        (json!({"$id": 5, "title": "x"}), "BAD_USER_INPUT"),
        (json!({"$secret": 1, "title": "x"}), "ATTRIBUTE_NOT_FOUND"),
    ] {
        let refused = app
            .as_key(
                &key,
                "default",
                create,
                json!({"input": {"databaseId": "blog", "collectionId": "posts", "data": data}}),
            )
            .await;
        assert_eq!(refused.code(), code, "{data}: {:#}", refused.body);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn the_generic_api_takes_appwrite_queries() {
    let app = spawn_app().await;
    blog(&app).await;
    let key = app
        .create_key("default", &["documents.read", "documents.write"])
        .await;
    for (id, views) in [("a", 10), ("b", 20), ("c", 30)] {
        let created = app
            .as_key(
                &key,
                "default",
                "mutation($input: CreateDocumentInput!) { createDocument(input: $input) { id data permissions } }",
                json!({"input": {"databaseId": "blog", "collectionId": "posts", "id": id, "data": {"title": format!("T{id}"), "views": views}}}),
            )
            .await
            .ok();
        assert_eq!(created["createDocument"]["data"]["views"], views);
        assert_eq!(
            created["createDocument"]["data"]["published"], false,
            "the default"
        );
    }
    let queries = [
        r#"{"method":"greaterThan","attribute":"views","values":[10]}"#,
        r#"{"method":"orderDesc","attribute":"views"}"#,
        r#"{"method":"limit","values":[1]}"#,
    ];
    let found = app
        .as_key(&key, "default", "query($q: [String!]) { documents(databaseId: \"blog\", collectionId: \"posts\", queries: $q) { total documents { id data } } }", json!({"q": queries}))
        .await
        .ok();
    assert_eq!(found["documents"]["total"], 2);
    assert_eq!(found["documents"]["documents"][0]["id"], "c");
    let cursor = [
        r#"{"method":"orderAsc","attribute":"views"}"#,
        r#"{"method":"cursorAfter","values":["a"]}"#,
    ];
    let next = app
        .as_key(&key, "default", "query($q: [String!]) { documents(databaseId: \"blog\", collectionId: \"posts\", queries: $q) { documents { id } } }", json!({"q": cursor}))
        .await
        .ok();
    assert_eq!(
        next["documents"]["documents"],
        json!([{"id": "b"}, {"id": "c"}])
    );
    let ids_and_data = |queries: Vec<&'static str>| {
        let app = &app;
        let key = &key;
        async move {
            let answer = app
                .as_key(key, "default", "query($q: [String!]) { documents(databaseId: \"blog\", collectionId: \"posts\", queries: $q) { documents { id data } } }", json!({"q": queries}))
                .await
                .ok();
            answer["documents"]["documents"].as_array().unwrap().clone()
        }
    };
    let by_id = r#"{"method":"orderAsc","attribute":"$id"}"#;
    for (negated, expected) in [
        (
            r#"{"method":"notBetween","attribute":"views","values":[15,25]}"#,
            json!(["a", "c"]),
        ),
        (
            r#"{"method":"notStartsWith","attribute":"title","values":["Tb"]}"#,
            json!(["a", "c"]),
        ),
        (
            r#"{"method":"notEndsWith","attribute":"title","values":["c"]}"#,
            json!(["a", "b"]),
        ),
        (
            r#"{"method":"notContains","attribute":"title","values":["a","c"]}"#,
            json!(["b"]),
        ),
    ] {
        let ids: Vec<Value> = ids_and_data(vec![negated, by_id])
            .await
            .iter()
            .map(|d| d["id"].clone())
            .collect();
        assert_eq!(Value::from(ids), expected, "{negated}");
    }
    // Appwrite's shorthands: any or all of several values, and the system
    // dates compared by `created…`/`updated…` (bounds included in `…Between`).
    for (query, expected) in [
        (
            r#"{"method":"containsAny","attribute":"title","values":["a","c"]}"#,
            json!(["a", "c"]),
        ),
        (
            r#"{"method":"containsAll","attribute":"title","values":["T","b"]}"#,
            json!(["b"]),
        ),
    ] {
        let ids: Vec<Value> = ids_and_data(vec![query, by_id])
            .await
            .iter()
            .map(|d| d["id"].clone())
            .collect();
        assert_eq!(Value::from(ids), expected, "{query}");
    }
    let dated = app
        .as_key(&key, "default", "{ documents(databaseId: \"blog\", collectionId: \"posts\") { documents { id createdAt updatedAt } } }", json!({}))
        .await
        .ok();
    let dated = dated["documents"]["documents"].as_array().unwrap().clone();
    let at = |id: &str, field: &str| {
        dated.iter().find(|d| d["id"] == id).unwrap()[field]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (created_b, updated_b) = (at("b", "createdAt"), at("b", "updatedAt"));
    // The same instant as Appwrite writes it.
    let appwrite_b = created_b.replace('Z', "+00:00");
    for (query, field, keep) in [
        (
            json!({"method": "createdBefore", "values": [appwrite_b]}).to_string(),
            "createdAt",
            &(|t: &str, b: &str| t < b) as &dyn Fn(&str, &str) -> bool,
        ),
        (
            json!({"method": "createdAfter", "values": [created_b]}).to_string(),
            "createdAt",
            &|t: &str, b: &str| t > b,
        ),
        (
            json!({"method": "createdBetween", "values": [created_b, created_b]}).to_string(),
            "createdAt",
            &|t: &str, b: &str| t == b,
        ),
        (
            json!({"method": "updatedBefore", "values": [updated_b]}).to_string(),
            "updatedAt",
            &|t: &str, b: &str| t < b,
        ),
        (
            json!({"method": "updatedAfter", "attribute": "$updatedAt", "values": [updated_b]})
                .to_string(),
            "updatedAt",
            &|t: &str, b: &str| t > b,
        ),
        (
            json!({"method": "updatedBetween", "values": ["2000-01-01", updated_b]}).to_string(),
            "updatedAt",
            &|t: &str, b: &str| t <= b,
        ),
    ] {
        let bound = if field == "createdAt" {
            &created_b
        } else {
            &updated_b
        };
        let expected: Vec<Value> = ["a", "b", "c"]
            .into_iter()
            .filter(|id| keep(&at(id, field), bound))
            .map(Value::from)
            .collect();
        let found = app
            .as_key(&key, "default", "query($q: [String!]) { documents(databaseId: \"blog\", collectionId: \"posts\", queries: $q) { documents { id } } }", json!({"q": [query, by_id]}))
            .await
            .ok();
        let ids: Vec<Value> = found["documents"]["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["id"].clone())
            .collect();
        assert_eq!(ids, expected, "{query}");
    }
    let misnamed = app
        .as_key(&key, "default", "query($q: [String!]) { documents(databaseId: \"blog\", collectionId: \"posts\", queries: $q) { total } }", json!({"q": [r#"{"method":"createdBefore","attribute":"views","values":["2030-01-01"]}"#]}))
        .await;
    assert_eq!(misnamed.code(), "QUERY_INVALID", "{:#}", misnamed.body);
    // A date alone is a date-time at midnight UTC, as Appwrite reads it.
    let since = ids_and_data(vec![
        r#"{"method":"greaterThan","attribute":"$createdAt","values":["1976-06-12"]}"#,
        r#"{"method":"lessThan","attribute":"$createdAt","values":["9999-12-31 23:59:59"]}"#,
        by_id,
    ])
    .await;
    assert_eq!(since.len(), 3, "{since:?}");
    // A time zone's name reads the time as that zone's, as Appwrite's fixtures
    // write them (1975-06-12 14:12:55 in New York is 18:12:55 UTC).
    let zoned = ids_and_data(vec![
        r#"{"method":"greaterThan","attribute":"$createdAt","values":["1975-06-12 14:12:55 America/New_York"]}"#,
        by_id,
    ])
    .await;
    assert_eq!(zoned.len(), 3, "{zoned:?}");
    let unknown_zone = app
        .as_key(
            &key,
            "default",
            "query($q: [String!]) { documents(databaseId: \"blog\", collectionId: \"posts\", queries: $q) { total } }",
            json!({"q": [r#"{"method":"greaterThan","attribute":"$createdAt","values":["1975-06-12 14:12:55 Mars/Olympus"]}"#]}),
        )
        .await;
    assert_eq!(
        unknown_zone.code(),
        "FILTER_INVALID",
        "{:#}",
        unknown_zone.body
    );
    // `select` keeps the attributes it names; `*` keeps them all, system names none.
    let selected = ids_and_data(vec![
        r#"{"method":"select","values":["views","$id"]}"#,
        by_id,
    ])
    .await;
    assert_eq!(selected[0]["data"], json!({"views": 10}));
    let everything = ids_and_data(vec![r#"{"method":"select","values":["*"]}"#, by_id]).await;
    assert_eq!(everything[0]["data"]["title"], "Ta");
    assert_eq!(everything[0]["data"]["views"], 10);

    // What is missing is named: the database, or the collection in it.
    for (database, collection, code) in [
        ("nowhere", "posts", "DATABASE_NOT_FOUND"),
        ("blog", "nothing", "COLLECTION_NOT_FOUND"),
    ] {
        let answer = app
            .as_key(
                &key,
                "default",
                "query($d: ID!, $c: ID!) { documents(databaseId: $d, collectionId: $c) { total } }",
                json!({"d": database, "c": collection}),
            )
            .await;
        assert_eq!(answer.code(), code, "{:#}", answer.body);
    }

    for (bad, code) in [
        (
            r#"{"method":"select","values":["views","nope"]}"#,
            "QUERY_INVALID",
        ),
        (r#"{"method":"limit","values":[1001]}"#, "QUERY_INVALID"),
        (
            r#"{"method":"equal","attribute":"nope","values":[1]}"#,
            "FILTER_UNKNOWN_FIELD",
        ),
        (
            r#"{"method":"equal","attribute":"views","values":["ten"]}"#,
            "FILTER_INVALID",
        ),
        (
            r#"{"method":"drop table","attribute":"views"}"#,
            "QUERY_INVALID",
        ),
        (
            r#"{"method":"equal","attribute":"views\"; DROP TABLE x; --","values":[1]}"#,
            "FILTER_UNKNOWN_FIELD",
        ),
        ("not json", "QUERY_INVALID"),
    ] {
        let answer = app
            .as_key(&key, "default", "query($q: [String!]) { documents(databaseId: \"blog\", collectionId: \"posts\", queries: $q) { total } }", json!({"q": [bad]}))
            .await;
        assert_eq!(answer.code(), code, "{bad}: {:#}", answer.body);
    }
    let updated = app
        .as_key(&key, "default", "mutation { updateDocument(input: {databaseId: \"blog\", collectionId: \"posts\", id: \"a\", data: {title: \"new\"}}) { data } }", json!({}))
        .await
        .ok();
    assert_eq!(updated["updateDocument"]["data"]["title"], "new");
    assert_eq!(updated["updateDocument"]["data"]["views"], 10);
    let zoned = app
        .as_key(&key, "default", "mutation { updateDocument(input: {databaseId: \"blog\", collectionId: \"posts\", id: \"b\", data: {publishedAt: \"1975-06-12 14:12:55 America/New_York\"}}) { data } }", json!({}))
        .await
        .ok();
    assert_eq!(
        zoned["updateDocument"]["data"]["publishedAt"],
        "1975-06-12T18:12:55.000+00:00"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn bad_structure_and_bad_values_get_clear_codes() {
    let app = spawn_app().await;
    blog(&app).await;
    let bad_collections = [
        (
            json!({"databaseId": "blog", "name": "users"}),
            "GRAPHQL_NAME_TAKEN",
        ),
        (
            json!({"databaseId": "blog", "name": "posts"}),
            "GRAPHQL_NAME_TAKEN",
        ),
        (
            json!({"databaseId": "blog", "name": "x", "graphqlName": "Thing", "attributes": [{"key": "a b", "type": "STRING", "size": 5}]}),
            "ATTRIBUTE_INVALID",
        ),
        (
            json!({"databaseId": "blog", "name": "x", "graphqlName": "Thing", "attributes": [{"key": "n", "type": "INTEGER", "min": 5, "max": 1}]}),
            "ATTRIBUTE_INVALID",
        ),
        (
            json!({"databaseId": "blog", "name": "x", "graphqlName": "Thing", "indexes": [{"key": "i", "type": "KEY", "attributes": ["missing"]}]}),
            "INDEX_INVALID",
        ),
        (
            json!({"databaseId": "nowhere", "name": "x"}),
            "DATABASE_NOT_FOUND",
        ),
    ];
    for (input, code) in bad_collections {
        let answer = app.admin(CREATE_COLLECTION, json!({"input": input})).await;
        assert_eq!(answer.code(), code, "{input}: {:#}", answer.body);
    }

    let key = app
        .create_key(
            "default",
            &["documents.write", "documents.read", "databases.write"],
        )
        .await;
    let create = "mutation($input: CreatePostInput!) { createPost(input: $input) { id title } }";
    let bad_values = [
        (json!({"title": "x".repeat(201)}), "VALUE_OUT_OF_RANGE"),
        (
            json!({"title": "ok", "views": 1000001}),
            "VALUE_OUT_OF_RANGE",
        ),
        (
            json!({"title": "ok", "publishedAt": "yesterday"}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (json!({"title": "ok", "id": "../etc"}), "INVALID_ID"),
        (
            json!({"title": "ok", "permissions": ["read(\"nobody-knows\")"]}),
            "INVALID_PERMISSION",
        ),
    ];
    for (input, code) in bad_values {
        let answer = app
            .as_key(&key, "default", create, json!({"input": input}))
            .await;
        assert_eq!(answer.code(), code, "{input}: {:#}", answer.body);
    }
    // Unicode is stored as given.
    let text = "emoji 🦀, RTL שלום, NUL \u{0} end";
    let stored = app
        .as_key(&key, "default", create, json!({"input": {"title": text}}))
        .await
        .ok();
    assert_eq!(stored["createPost"]["title"], text);

    // Limits and forged cursors.
    let huge = app
        .post(
            json!({"query": "{ posts(first: 1000000) { totalCount } }"}),
            &[],
        )
        .await;
    assert_eq!(huge.code(), "BAD_USER_INPUT");
    let forged = app
        .post(
            json!({"query": "{ posts(after: \"Zm9yZ2Vk\") { totalCount } }"}),
            &[],
        )
        .await;
    assert_eq!(forged.code(), "INVALID_CURSOR");
    let page = app
        .post(json!({"query": "{ posts(first: 1, orderBy: [{views: ASC}]) { pageInfo { endCursor } } }"}), &[])
        .await
        .ok();
    let cursor = page["posts"]["pageInfo"]["endCursor"].as_str().unwrap();
    let other_order = app
        .post(json!({"query": "query($c: String) { posts(after: $c, orderBy: [{title: ASC}]) { totalCount } }", "variables": {"c": cursor}}), &[])
        .await;
    assert_eq!(other_order.code(), "INVALID_CURSOR");

    // Filters nested too deep: 11 levels of the filter itself, and 1,000 levels of JSON.
    let mut nested = json!({"title": {"eq": "x"}});
    for _ in 0..11 {
        nested = json!({"and": [nested]});
    }
    let deep = app
        .post(json!({"query": "query($f: PostFilter) { posts(filter: $f) { totalCount } }", "variables": {"f": nested}}), &[])
        .await;
    assert_eq!(deep.code(), "FILTER_TOO_COMPLEX");
    let mut very_deep = String::from("{\"title\": {\"eq\": \"x\"}}");
    for _ in 0..1000 {
        very_deep = format!("{{\"and\": [{very_deep}]}}");
    }
    let body = format!(
        "{{\"query\": \"query($f: PostFilter) {{ posts(filter: $f) {{ totalCount }} }}\", \"variables\": {{\"f\": {very_deep}}}}}"
    );
    let response = app
        .client
        .post(format!("{}/v1/graphql", app.url))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status().as_u16(),
        400,
        "a 1,000-deep filter is refused before it is read"
    );
    assert!(
        app.post(json!({"query": "{ __typename }"}), &[]).await.body["data"]["__typename"]
            == "Query",
        "the server is fine"
    );

    // SQL in every string position is data, an invalid name, or refused.
    let injected = "x'); DROP TABLE posts; --";
    let stored = app
        .as_key(
            &key,
            "default",
            create,
            json!({"input": {"title": injected}}),
        )
        .await
        .ok();
    assert_eq!(stored["createPost"]["title"], injected);
    let by_id = app
        .post(json!({"query": "query($id: ID!) { post(id: $id) { id } }", "variables": {"id": injected}}), &[])
        .await
        .ok();
    assert_eq!(by_id["post"], Value::Null);
    let bad_id = app
        .as_key(
            &key,
            "default",
            create,
            json!({"input": {"title": "t", "id": injected}}),
        )
        .await;
    assert_eq!(bad_id.code(), "INVALID_ID");
    let bad_collection = app
        .admin(CREATE_COLLECTION, json!({"input": {"databaseId": "blog", "id": injected, "name": "x", "graphqlName": "Injected"}}))
        .await;
    assert_eq!(bad_collection.code(), "INVALID_ID");

    // A cursor from another collection.
    app.admin(
        CREATE_COLLECTION,
        json!({"input": {"databaseId": "blog", "id": "notes", "name": "notes", "permissions": ["read(\"any\")"], "attributes": [{"key": "text", "type": "STRING", "size": 10}]}}),
    )
    .await
    .ok();
    let posts_cursor = app
        .post(
            json!({"query": "{ posts(first: 1) { pageInfo { endCursor } } }"}),
            &[],
        )
        .await
        .ok();
    let cursor = posts_cursor["posts"]["pageInfo"]["endCursor"]
        .as_str()
        .unwrap()
        .to_string();
    let elsewhere = app
        .post(json!({"query": "query($c: String) { notes(after: $c) { totalCount } }", "variables": {"c": cursor}}), &[])
        .await;
    assert_eq!(elsewhere.code(), "INVALID_CURSOR");

    // Adding an attribute to a collection with data; a unique index over duplicates.
    let added = app
        .as_key(&key, "default", "mutation { createAttribute(input: {databaseId: \"blog\", collectionId: \"posts\", attribute: {key: \"rating\", type: FLOAT, default: 2.5}}) { attributes { key } } }", json!({}))
        .await
        .ok();
    assert_eq!(
        added["createAttribute"]["attributes"]
            .as_array()
            .unwrap()
            .len(),
        6
    );
    let rated = app
        .post(json!({"query": "{ posts { nodes { rating } } }"}), &[])
        .await
        .ok();
    assert_eq!(rated["posts"]["nodes"][0]["rating"], 2.5);
    app.as_key(&key, "default", create, json!({"input": {"title": text}}))
        .await
        .ok();
    let unique = app
        .as_key(&key, "default", "mutation { createIndex(input: {databaseId: \"blog\", collectionId: \"posts\", index: {key: \"one_title\", type: UNIQUE, attributes: [\"title\"]}}) { id } }", json!({}))
        .await;
    assert_eq!(unique.code(), "INDEX_DUPLICATE_VALUES", "{:#}", unique.body);
    let required = app
        .as_key(&key, "default", "mutation { createAttribute(input: {databaseId: \"blog\", collectionId: \"posts\", attribute: {key: \"must\", type: STRING, size: 5, required: true}}) { id } }", json!({}))
        .await;
    assert_eq!(required.code(), "ATTRIBUTE_INVALID");
    // A query validated against the schema before a change is validated again
    // after it: the field it reads is gone.
    let views = json!({"query": "{ posts { nodes { views } } }"});
    for _ in 0..2 {
        app.post(views.clone(), &[]).await.ok();
    }
    let dropped = app
        .as_key(&key, "default", "mutation { deleteAttribute(input: {databaseId: \"blog\", collectionId: \"posts\", key: \"views\"}) { attributes { key } indexes { key } } }", json!({}))
        .await
        .ok();
    let keys: Vec<&str> = dropped["deleteAttribute"]["attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["title", "published", "tags", "publishedAt", "rating"]
    );
    assert_eq!(dropped["deleteAttribute"]["indexes"], json!([]));
    let stale = app.post(views, &[]).await;
    assert_eq!(
        stale.code(),
        "GRAPHQL_VALIDATION_FAILED",
        "{:#}",
        stale.body
    );
    app.shutdown().await;
}

#[tokio::test]
async fn pages_nested_in_pages_are_refused_before_they_run() {
    let app = spawn_app().await;
    blog(&app).await;
    authors(&app).await;
    app.admin(
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }",
        json!({"input": {"databaseId": "blog", "collectionId": "authors", "key": "posts", "relatedCollectionId": "posts", "type": "ONE_TO_MANY", "twoWayKey": "author"}}),
    )
    .await
    .ok();
    let nested = "query($outer: Int, $inner: Int) { posts(first: $outer) { nodes { id author { posts(first: $inner) { nodes { id } } } } } }";
    let asked = |outer: u64, inner: u64| {
        app.post(
            json!({"query": nested, "variables": {"outer": outer, "inner": inner}}),
            &[],
        )
    };
    // 1,000 pages of 1,000: a million nodes from a short query, counted with the
    // variables' values before anything runs; the same text with small pages runs.
    let refused = asked(1000, 1000).await;
    assert_eq!(refused.code(), "QUERY_TOO_COMPLEX", "{:#}", refused.body);
    let message = refused.body["errors"][0]["message"]
        .as_str()
        .unwrap_or_default();
    assert!(message.contains("1001000 nodes"), "{message}");
    assert!(refused.body["data"].is_null(), "{:#}", refused.body);
    let ran = asked(300, 300).await.ok();
    assert_eq!(ran["posts"]["nodes"], json!([]));
    // A list without `first` counts its default page of 20: four levels of them
    // are 168,420 nodes.
    let defaults = "{ posts { nodes { author { posts { nodes { author { posts { nodes { author { posts { nodes { id } } } } } } } } } } } }";
    let refused = app.post(json!({"query": defaults}), &[]).await;
    assert_eq!(refused.code(), "QUERY_TOO_COMPLEX", "{:#}", refused.body);
    assert!(
        refused.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("168420 nodes")),
        "{:#}",
        refused.body
    );
    // Lists side by side add up: 101 pages of 1,000.
    let aliased = (0..99)
        .map(|i| format!("a{i}: posts(first: 1000) {{ nodes {{ id }} }}"))
        .chain([
            "posts(first: 1000) { nodes { id } }".to_string(),
            "authors(first: 1000) { nodes { id } }".to_string(),
        ])
        .collect::<Vec<_>>()
        .join(" ");
    let refused = app
        .post(json!({"query": format!("{{ {aliased} }}")}), &[])
        .await;
    assert_eq!(refused.code(), "QUERY_TOO_COMPLEX", "{:#}", refused.body);
    // A bulk write's answer is a list as long as its input: 200 posts, each with a
    // page of 1,000, is refused before anything is written.
    let inputs: Vec<Value> = (0..200)
        .map(|i| json!({"title": format!("p{i}")}))
        .collect();
    let bulk = "mutation($input: [CreatePostInput!]!) { createPosts(input: $input) { id author { posts(first: 1000) { nodes { id } } } } }";
    let refused = app.admin(bulk, json!({"input": inputs})).await;
    assert_eq!(refused.code(), "QUERY_TOO_COMPLEX", "{:#}", refused.body);
    assert!(
        refused.body["errors"][0]["message"]
            .as_str()
            .is_some_and(|message| message.contains("200200 nodes")),
        "{:#}",
        refused.body
    );
    let counted = app.admin("{ posts { totalCount } }", json!({})).await.ok();
    assert_eq!(counted["posts"]["totalCount"], 0, "nothing was written");

    // The generic API's `select` keeps a relationship's key like an attribute's.
    app.admin(
        "mutation { createAuthor(input: {id: \"ann\", name: \"Ann\"}) { id } createPost(input: {id: \"p\", title: \"T\", author: \"ann\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let selected = app
        .admin(
            "query($q: [String!]) { documents(databaseId: \"blog\", collectionId: \"posts\", queries: $q) { documents { data } } }",
            json!({"q": [r#"{"method":"select","values":["title","author"]}"#]}),
        )
        .await
        .ok();
    assert_eq!(
        selected["documents"]["documents"][0]["data"],
        json!({"title": "T", "author": "ann"})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn relationships_resolve_both_ways_filter_across_and_keep_integrity() {
    let app = spawn_app().await;
    blog(&app).await;
    authors(&app).await;
    let relate = "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id relationships { key relatedCollectionId type twoWayKey onDelete } } }";
    let related = app
        .admin(relate, json!({"input": {"databaseId": "blog", "collectionId": "authors", "key": "posts", "relatedCollectionId": "posts", "type": "ONE_TO_MANY", "twoWayKey": "author", "onDelete": "CASCADE"}}))
        .await
        .ok();
    assert_eq!(
        related["createRelationship"]["id"], "posts",
        "stored on the many side"
    );
    assert_eq!(
        related["createRelationship"]["relationships"],
        json!([{"key": "author", "relatedCollectionId": "authors", "type": "MANY_TO_ONE", "twoWayKey": "posts", "onDelete": "CASCADE"}])
    );
    let clash = app
        .admin(relate, json!({"input": {"databaseId": "blog", "collectionId": "posts", "key": "title", "relatedCollectionId": "authors", "type": "MANY_TO_ONE"}}))
        .await;
    // A key taken is a conflict (409), as Appwrite answers it.
    assert_eq!(clash.code(), "ATTRIBUTE_ALREADY_EXISTS");
    let again = app
        .admin(
            "mutation { createAttribute(input: {databaseId: \"blog\", collectionId: \"posts\", attribute: {key: \"TITLE\", type: STRING, size: 10}}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(again.code(), "ATTRIBUTE_ALREADY_EXISTS");
    let index = "mutation { createIndex(input: {databaseId: \"blog\", collectionId: \"posts\", index: {key: \"by_title\", type: KEY, attributes: [\"title\"]}}) { id } }";
    app.admin(index, json!({})).await.ok();
    let twice = app.admin(index, json!({})).await;
    assert_eq!(twice.code(), "INDEX_ALREADY_EXISTS");
    // What an Appwrite client waits for is there at once.
    let made = app
        .admin(
            "{ collection(databaseId: \"blog\", id: \"posts\") { attributes { status } indexes { key status } relationships { status } } }",
            json!({}),
        )
        .await
        .ok();
    let statuses: Vec<&Value> = ["attributes", "indexes", "relationships"]
        .iter()
        .flat_map(|part| made["collection"][part].as_array().unwrap())
        .map(|item| &item["status"])
        .collect();
    assert!(statuses.len() >= 3, "{made}");
    assert!(statuses.iter().all(|s| *s == "available"), "{made}");

    let key = app
        .create_key("default", &["documents.read", "documents.write"])
        .await;
    let authors = app
        .as_key(&key, "default", "mutation { ann: createAuthor(input: {id: \"ann\", name: \"Ann\"}) { id } bob: createAuthor(input: {id: \"bob\", name: \"Bob\"}) { id } }", json!({}))
        .await
        .ok();
    assert_eq!(authors["ann"]["id"], "ann");
    let mut inputs = Vec::new();
    for i in 0..50 {
        inputs.push(json!({"id": format!("p{i:02}"), "title": format!("Post {i}"), "views": i, "author": if i % 2 == 0 { "ann" } else { "bob" }}));
    }
    app.as_key(
        &key,
        "default",
        "mutation($input: [CreatePostInput!]!) { createPosts(input: $input) { id } }",
        json!({"input": inputs}),
    )
    .await
    .ok();
    let dangling = app
        .as_key(
            &key,
            "default",
            "mutation { createPost(input: {title: \"x\", author: \"nobody\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(dangling.code(), "RELATED_DOCUMENT_NOT_FOUND");

    // Forward, batched: 50 posts with their authors.
    let listed = app
        .post(json!({"query": "{ posts(first: 50, orderBy: [{views: ASC}]) { nodes { title author { id name } } } }"}), &[])
        .await
        .ok();
    let nodes = listed["posts"]["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 50);
    assert_eq!(nodes[0]["author"], json!({"id": "ann", "name": "Ann"}));
    assert_eq!(nodes[1]["author"], json!({"id": "bob", "name": "Bob"}));

    // A constant number of statements, however many posts and authors: the page
    // (its permissions are not asked for), then one batch of authors and theirs.
    let with_authors = |first: usize, name: &str| json!({"query": format!("query {name} {{ posts(first: {first}, orderBy: [{{views: ASC}}]) {{ nodes {{ title author {{ name }} }} }} }}"), "operationName": name});
    app.post(with_authors(50, "FiftyPostsWithAuthors"), &[])
        .await
        .ok();
    app.post(with_authors(4, "FourPostsWithAuthors"), &[])
        .await
        .ok();
    let fifty = crate::statements::statements_of("FiftyPostsWithAuthors");
    let four = crate::statements::statements_of("FourPostsWithAuthors");
    assert_eq!(fifty, 3, "SQL statements for 50 posts with their authors");
    assert_eq!(four, fifty, "statements do not grow with the page");
    // And the other way: every author's first posts, and their totals, in one batch.
    let per_author = app
        .post(json!({"query": "query AuthorsWithPosts { authors(orderBy: [{name: ASC}]) { nodes { name posts(first: 2, orderBy: [{views: DESC}]) { totalCount nodes { title } pageInfo { hasNextPage } } } } }", "operationName": "AuthorsWithPosts"}), &[])
        .await
        .ok();
    assert_eq!(
        per_author["authors"]["nodes"],
        json!([
            {"name": "Ann", "posts": {"totalCount": 25, "nodes": [{"title": "Post 48"}, {"title": "Post 46"}], "pageInfo": {"hasNextPage": true}}},
            {"name": "Bob", "posts": {"totalCount": 25, "nodes": [{"title": "Post 49"}, {"title": "Post 47"}], "pageInfo": {"hasNextPage": true}}}
        ])
    );
    assert_eq!(
        crate::statements::statements_of("AuthorsWithPosts"),
        4,
        "authors, then one window of posts, their permissions and their counts"
    );

    // Backward, with its own filter and order.
    let reverse = app
        .post(json!({"query": "{ author(id: \"ann\") { name posts(filter: {views: {gte: 40}}, orderBy: [{views: DESC}], first: 2) { totalCount nodes { title } } } }"}), &[])
        .await
        .ok();
    assert_eq!(
        reverse["author"],
        json!({"name": "Ann", "posts": {"totalCount": 5, "nodes": [{"title": "Post 48"}, {"title": "Post 46"}]}})
    );

    // Filtering across the relationship.
    let by_author = app
        .post(json!({"query": "{ posts(filter: {author: {name: {eq: \"Bob\"}}, views: {lt: 6}}) { nodes { title } } }"}), &[])
        .await
        .ok();
    assert_eq!(
        by_author["posts"]["nodes"],
        json!([{"title": "Post 1"}, {"title": "Post 3"}, {"title": "Post 5"}])
    );

    // Cascade: deleting Bob deletes his 25 posts, in the same transaction.
    app.as_key(
        &key,
        "default",
        "mutation { deleteAuthor(input: {id: \"bob\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    let left = app
        .post(json!({"query": "{ posts { totalCount } }"}), &[])
        .await
        .ok();
    assert_eq!(left["posts"]["totalCount"], 25);

    // Restrict and set-null.
    app.admin(
        CREATE_COLLECTION,
        json!({"input": {"databaseId": "blog", "id": "comments", "name": "comments", "attributes": [{"key": "text", "type": "STRING", "size": 100}]}}),
    )
    .await
    .ok();
    app.admin(relate, json!({"input": {"databaseId": "blog", "collectionId": "comments", "key": "post", "relatedCollectionId": "posts", "type": "MANY_TO_ONE", "onDelete": "RESTRICT"}}))
        .await
        .ok();
    app.admin(relate, json!({"input": {"databaseId": "blog", "collectionId": "comments", "key": "writer", "relatedCollectionId": "authors", "type": "MANY_TO_ONE", "onDelete": "SET_NULL"}}))
        .await
        .ok();
    app.as_key(&key, "default", "mutation { createComment(input: {id: \"c1\", text: \"hi\", post: \"p00\", writer: \"ann\"}) { id } }", json!({}))
        .await
        .ok();
    let restricted = app
        .as_key(
            &key,
            "default",
            "mutation { deletePost(input: {id: \"p00\"}) { deletedId } }",
            json!({}),
        )
        .await;
    assert_eq!(restricted.code(), "DOCUMENT_REFERENCED");
    // Ann's posts cascade, but p00 is still referenced: the whole delete is refused.
    let blocked = app
        .as_key(
            &key,
            "default",
            "mutation { deleteAuthor(input: {id: \"ann\"}) { deletedId } }",
            json!({}),
        )
        .await;
    assert_eq!(blocked.code(), "DOCUMENT_REFERENCED");
    let still = app
        .post(
            json!({"query": "{ author(id: \"ann\") { id } posts { totalCount } }"}),
            &[],
        )
        .await
        .ok();
    assert_eq!(
        still,
        json!({"author": {"id": "ann"}, "posts": {"totalCount": 25}})
    );
    app.as_key(
        &key,
        "default",
        "mutation { updateComment(input: {id: \"c1\", post: null}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.as_key(
        &key,
        "default",
        "mutation { deleteAuthor(input: {id: \"ann\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    let comment = app
        .as_key(
            &key,
            "default",
            "{ comment(id: \"c1\") { text writer { id } post { id } } posts { totalCount } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        comment,
        json!({"comment": {"text": "hi", "writer": null, "post": null}, "posts": {"totalCount": 0}})
    );

    let referenced = app
        .admin("mutation { deleteCollection(input: {databaseId: \"blog\", id: \"authors\"}) { deletedId } }", json!({}))
        .await;
    assert_eq!(referenced.code(), "COLLECTION_REFERENCED");
    app.shutdown().await;
}

#[tokio::test]
async fn document_writes_reach_realtime_subscribers_only_once_committed() {
    let app = spawn_app().await;
    blog(&app).await;
    let key = app.create_key("default", &["documents.write"]).await;
    let mut ws = crate::helpers::WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({})).await.expect("ack");
    ws.subscribe(
        "1",
        "subscription { realtime(channels: [\"databases.blog.collections.posts.documents\"]) { events payload } }",
    )
    .await;
    // The subscription goes live asynchronously: write until it hears something.
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    let mut n = 0;
    let first = loop {
        n += 1;
        app.as_key(
            &key,
            "default",
            "mutation($id: ID!) { createPost(input: {id: $id, title: \"live\"}) { id } }",
            json!({"id": format!("warm{n}")}),
        )
        .await
        .ok();
        if let Some(message) = ws.socket_next_within_short_time().await {
            break message;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no event reached the subscriber"
        );
    };
    let event = &first["payload"]["data"]["realtime"];
    let id = event["payload"]["$id"].as_str().unwrap().to_string();
    assert!(id.starts_with("warm"), "{event}");
    assert_eq!(event["payload"]["title"], "live");
    assert!(
        event["events"].as_array().unwrap().iter().any(|e| e
            == &json!(format!(
                "databases.blog.collections.posts.documents.{id}.create"
            ))),
        "{event}"
    );
    // Drain the warm-up events still in flight.
    while ws.socket_next_within_short_time().await.is_some() {}

    // A request that rolls back publishes nothing; the next event is the next commit.
    let failed = app
        .as_key(&key, "default", "mutation { a: createPost(input: {id: \"ghost\", title: \"x\"}) { id } b: createPost(input: {title: \"y\", views: -1}) { id } }", json!({}))
        .await;
    assert_eq!(failed.code(), "VALUE_OUT_OF_RANGE");
    app.as_key(
        &key,
        "default",
        "mutation { updatePost(input: {id: \"warm1\", title: \"edited\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let next = ws.next_json().await.expect("an event");
    let event = &next["payload"]["data"]["realtime"];
    assert_eq!(event["payload"]["$id"], "warm1", "{event}");
    assert_eq!(event["payload"]["title"], "edited");
    assert!(
        event["events"][0]
            .as_str()
            .unwrap()
            .ends_with("warm1.update"),
        "{event}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn search_needs_a_fulltext_index_and_then_finds_every_word() {
    let app = spawn_app().await;
    blog(&app).await;
    let key = app
        .create_key("default", &["documents.write", "databases.write"])
        .await;
    for title in ["Rust and SQLite", "Rust on MariaDB", "Go and SQLite"] {
        app.as_key(
            &key,
            "default",
            "mutation($t: String!) { createPost(input: {title: $t}) { id } }",
            json!({"t": title}),
        )
        .await
        .ok();
    }
    let search = "{ posts(filter: {title: {search: \"Rust SQLite\"}}) { nodes { title } } }";
    let refused = app.post(json!({"query": search}), &[]).await;
    assert_eq!(refused.code(), "SEARCH_NEEDS_FULLTEXT_INDEX");
    app.as_key(&key, "default", "mutation { createIndex(input: {databaseId: \"blog\", collectionId: \"posts\", index: {key: \"title_text\", type: FULLTEXT, attributes: [\"title\"]}}) { id } }", json!({}))
        .await
        .ok();
    let found = app.post(json!({"query": search}), &[]).await.ok();
    assert_eq!(
        found["posts"]["nodes"],
        json!([{"title": "Rust and SQLite"}])
    );

    // The index follows every write: new, changed and deleted documents, any case,
    // word prefixes, and input that is not search syntax.
    let write =
        "mutation($id: ID!, $t: String!) { upsertPost(input: {id: $id, title: $t}) { id } }";
    app.as_key(
        &key,
        "default",
        write,
        json!({"id": "n1", "t": "RUSTY sqlite tools"}),
    )
    .await
    .ok();
    app.as_key(
        &key,
        "default",
        write,
        json!({"id": "n2", "t": "nothing here"}),
    )
    .await
    .ok();
    app.as_key(
        &key,
        "default",
        write,
        json!({"id": "n2", "t": "rust meets SQLite"}),
    )
    .await
    .ok();
    let titles = |answer: Value| -> Vec<String> {
        let mut titles: Vec<String> = answer["posts"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["title"].as_str().unwrap().to_string())
            .collect();
        titles.sort();
        titles
    };
    let found = app.post(json!({"query": search}), &[]).await.ok();
    assert_eq!(
        titles(found),
        ["RUSTY sqlite tools", "Rust and SQLite", "rust meets SQLite"]
    );
    app.as_key(
        &key,
        "default",
        "mutation { deletePost(input: {id: \"n2\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    let found = app.post(json!({"query": search}), &[]).await.ok();
    assert_eq!(titles(found), ["RUSTY sqlite tools", "Rust and SQLite"]);
    let odd = app
        .post(json!({"query": "{ posts(filter: {title: {search: \"\\\"rust OR * NEAR(\"}}) { totalCount } }"}), &[])
        .await
        .ok();
    assert_eq!(
        odd["posts"]["totalCount"], 0,
        "search syntax in the input is only text"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn upserts_bounded_increments_and_bulk_writes() {
    let app = spawn_app().await;
    blog(&app).await;
    let key = app
        .create_key("default", &["documents.read", "documents.write"])
        .await;
    let run = |query: &'static str, variables: Value| {
        let (app, key) = (&app, key.clone());
        async move { app.as_key(&key, "default", query, variables).await }
    };

    let upsert =
        "mutation($input: UpsertPostInput!) { upsertPost(input: $input) { id title views } }";
    let created = run(upsert, json!({"input": {"id": "u1", "title": "first"}}))
        .await
        .ok();
    assert_eq!(
        created["upsertPost"],
        json!({"id": "u1", "title": "first", "views": 0})
    );
    let changed = run(upsert, json!({"input": {"id": "u1", "views": 9}}))
        .await
        .ok();
    assert_eq!(
        changed["upsertPost"],
        json!({"id": "u1", "title": "first", "views": 9})
    );
    let missing_title = run(upsert, json!({"input": {"id": "u2", "views": 1}})).await;
    assert_eq!(missing_title.code(), "VALUE_REQUIRED");

    let increment =
        "mutation($input: IncrementPostInput!) { incrementPost(input: $input) { views } }";
    let up = run(
        increment,
        json!({"input": {"id": "u1", "field": "views", "by": 5, "max": 20}}),
    )
    .await
    .ok();
    assert_eq!(up["incrementPost"]["views"], 14);
    let past = run(
        increment,
        json!({"input": {"id": "u1", "field": "views", "by": 7, "max": 20}}),
    )
    .await;
    assert_eq!(past.code(), "VALUE_OUT_OF_RANGE");
    let decrement =
        "mutation($input: DecrementPostInput!) { decrementPost(input: $input) { views } }";
    let below_range = run(
        decrement,
        json!({"input": {"id": "u1", "field": "views", "by": 15}}),
    )
    .await;
    assert_eq!(below_range.code(), "VALUE_OUT_OF_RANGE", "views has min 0");
    let down = run(decrement, json!({"input": {"id": "u1", "field": "views"}}))
        .await
        .ok();
    assert_eq!(down["decrementPost"]["views"], 13);
    let fraction = run(
        increment,
        json!({"input": {"id": "u1", "field": "views", "by": 0.5}}),
    )
    .await;
    assert_eq!(fraction.code(), "VALUE_INVALID");

    // 1,000 at once, all or none.
    let many: Vec<Value> = (0..1000)
        .map(|i| json!({"id": format!("b{i:04}"), "title": format!("bulk {i}"), "views": i}))
        .collect();
    let bulk = run(
        "mutation($input: [CreatePostInput!]!) { createPosts(input: $input) { id } }",
        json!({"input": many}),
    )
    .await
    .ok();
    assert_eq!(bulk["createPosts"].as_array().unwrap().len(), 1000);
    let updates = json!([{"id": "b0001", "title": "one"}, {"id": "b0002", "title": "two"}, {"id": "nope", "title": "x"}]);
    let partial = run(
        "mutation($input: [UpdatePostInput!]!) { updatePosts(input: $input) { id } }",
        json!({"input": updates}),
    )
    .await;
    assert_eq!(partial.code(), "DOCUMENT_NOT_FOUND");
    let unchanged = run("{ post(id: \"b0001\") { title } }", json!({}))
        .await
        .ok();
    assert_eq!(
        unchanged["post"]["title"], "bulk 1",
        "the failed bulk update left nothing behind"
    );

    let too_many = run(
        "mutation { deletePosts(input: {filter: {views: {gte: 0}}}) { deletedIds } }",
        json!({}),
    )
    .await;
    assert_eq!(too_many.code(), "TOO_MANY_DOCUMENTS");
    let deleted = run(
        "mutation { deletePosts(input: {filter: {views: {gte: 995}}}) { deletedIds } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        deleted["deletePosts"]["deletedIds"],
        json!(["b0995", "b0996", "b0997", "b0998", "b0999"])
    );
    let count = run("{ posts { totalCount } }", json!({})).await.ok();
    assert_eq!(count["posts"]["totalCount"], 996);
    app.shutdown().await;
}

/// A `labels` collection in `blog`, readable by anyone, for many-to-many links.
async fn labels(app: &TestApp) {
    app.admin(
        CREATE_COLLECTION,
        json!({"input": {
            "databaseId": "blog", "id": "labels", "name": "labels",
            "permissions": ["read(\"any\")"],
            "attributes": [{"key": "name", "type": "STRING", "size": 50, "required": true}]
        }}),
    )
    .await
    .ok();
}

/// Each field of each document sets up to a thousand links, and a request writes
/// many documents while its transaction holds the writer: a request sets at most
/// 10,000 links in all, and one past them leaves nothing behind.
#[tokio::test]
async fn a_request_sets_a_bounded_number_of_links() {
    let app = spawn_app().await;
    blog(&app).await;
    labels(&app).await;
    app.admin(
        "mutation { createRelationship(input: {databaseId: \"blog\", collectionId: \"posts\", key: \"labels\", relatedCollectionId: \"labels\", type: MANY_TO_MANY, twoWayKey: \"posts\", onDelete: SET_NULL}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let labels: Vec<Value> = (0..1000)
        .map(|i| json!({"id": format!("l{i}"), "name": format!("label {i}")}))
        .collect();
    app.admin(
        "mutation($input: [CreateLabelInput!]!) { createLabels(input: $input) { id } }",
        json!({"input": labels}),
    )
    .await
    .ok();
    let ids: Vec<String> = (0..1000).map(|i| format!("l{i}")).collect();
    let posts = |count: usize| -> Vec<Value> {
        (0..count)
            .map(|i| json!({"id": format!("p{i}"), "title": "linked", "labels": ids}))
            .collect()
    };
    let create = "mutation($input: [CreatePostInput!]!) { createPosts(input: $input) { id } }";
    let over = app.admin(create, json!({"input": posts(11)})).await;
    assert_eq!(over.code(), "TOO_MANY_LINKS", "{:#}", over.body);
    let none = app.admin("{ posts { totalCount } }", json!({})).await.ok();
    assert_eq!(
        none["posts"]["totalCount"], 0,
        "nothing of the refused request stays"
    );
    let within = app.admin(create, json!({"input": posts(10)})).await.ok();
    assert_eq!(within["createPosts"].as_array().unwrap().len(), 10);
    app.shutdown().await;
}

#[tokio::test]
async fn many_to_many_links_list_both_ways_filter_and_unlink() {
    let app = spawn_app().await;
    blog(&app).await;
    labels(&app).await;
    let related = app
        .admin(
            "mutation { createRelationship(input: {databaseId: \"blog\", collectionId: \"posts\", key: \"labels\", relatedCollectionId: \"labels\", type: MANY_TO_MANY, twoWayKey: \"posts\", onDelete: SET_NULL}) { relationships { key type twoWayKey } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        related["createRelationship"]["relationships"],
        json!([{"key": "labels", "type": "MANY_TO_MANY", "twoWayKey": "posts"}])
    );
    let key = app
        .create_key("default", &["documents.read", "documents.write"])
        .await;
    let run = |query: &'static str| {
        let (app, key) = (&app, key.clone());
        async move { app.as_key(&key, "default", query, json!({})).await }
    };
    run("mutation { a: createLabel(input: {id: \"rust\", name: \"Rust\"}) { id } b: createLabel(input: {id: \"sql\", name: \"SQL\"}) { id } c: createLabel(input: {id: \"web\", name: \"Web\"}) { id } }").await.ok();
    run("mutation { a: createPost(input: {id: \"p1\", title: \"one\", labels: [\"rust\", \"sql\"]}) { id } b: createPost(input: {id: \"p2\", title: \"two\", labels: [\"rust\"]}) { id } c: createPost(input: {id: \"p3\", title: \"three\"}) { id } }").await.ok();
    let missing =
        run("mutation { createPost(input: {title: \"x\", labels: [\"rust\", \"nope\"]}) { id } }")
            .await;
    assert_eq!(missing.code(), "RELATED_DOCUMENT_NOT_FOUND");

    let both_ways = run("{ post(id: \"p1\") { labels(orderBy: [{name: ASC}]) { totalCount nodes { name } } } label(id: \"rust\") { posts(orderBy: [{title: ASC}]) { nodes { title } } } }").await.ok();
    assert_eq!(
        both_ways,
        json!({
            "post": {"labels": {"totalCount": 2, "nodes": [{"name": "Rust"}, {"name": "SQL"}]}},
            "label": {"posts": {"nodes": [{"title": "one"}, {"title": "two"}]}}
        })
    );
    let filtered = run("{ posts(filter: {labels: {name: {eq: \"SQL\"}}}) { nodes { id } } }")
        .await
        .ok();
    assert_eq!(filtered["posts"]["nodes"], json!([{"id": "p1"}]));

    // Replacing the links, then deleting a linked label unlinks it.
    run("mutation { updatePost(input: {id: \"p2\", labels: [\"web\", \"sql\"]}) { id } }")
        .await
        .ok();
    run("mutation { deleteLabel(input: {id: \"sql\"}) { deletedId } }")
        .await
        .ok();
    let after = run("{ p1: post(id: \"p1\") { labels { nodes { id } } } p2: post(id: \"p2\") { labels { nodes { id } } } }").await.ok();
    assert_eq!(
        after,
        json!({"p1": {"labels": {"nodes": [{"id": "rust"}]}}, "p2": {"labels": {"nodes": [{"id": "web"}]}}})
    );
    // Deleting a post removes its links, not the labels.
    run("mutation { deletePost(input: {id: \"p1\"}) { deletedId } }")
        .await
        .ok();
    let labels = run("{ labels { totalCount } label(id: \"rust\") { posts { totalCount } } }")
        .await
        .ok();
    assert_eq!(
        labels,
        json!({"labels": {"totalCount": 2}, "label": {"posts": {"totalCount": 0}}})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_new_collection_is_served_at_once_by_every_replica() {
    if crate::helpers::test_redis().is_none() {
        eprintln!("skipped: set NIMBUS_TEST_REDIS_URL and NIMBUS_TEST_DATABASE_URL to run");
        return;
    }
    let first = spawn_app().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = first.config.clone();
    config.data_dir = dir.path().to_path_buf();
    let server = nimbus::Server::start(config.clone())
        .await
        .expect("second replica starts");
    let second = crate::helpers::from_server(server, first.admin_key.clone(), config, dir);

    // The second replica has built (and cached) the schema without `posts`.
    let before = second
        .post(json!({"query": "{ posts { totalCount } }"}), &[])
        .await;
    assert_eq!(before.code(), "GRAPHQL_VALIDATION_FAILED");
    blog(&first).await;
    let deadline = std::time::Instant::now() + crate::helpers::WAIT;
    loop {
        let answer = second
            .post(json!({"query": "{ posts { totalCount } }"}), &[])
            .await;
        if answer.body.get("errors").is_none() {
            assert_eq!(answer.body["data"]["posts"]["totalCount"], 0);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the second replica kept its old schema: {:#}",
            answer.body
        );
        tokio::task::yield_now().await;
    }
    let key = first.create_key("default", &["documents.write"]).await;
    first
        .as_key(
            &key,
            "default",
            "mutation { createPost(input: {id: \"shared\", title: \"from the first\"}) { id } }",
            json!({}),
        )
        .await
        .ok();
    let seen = second
        .post(json!({"query": "{ post(id: \"shared\") { title } }"}), &[])
        .await
        .ok();
    assert_eq!(seen["post"]["title"], "from the first");
    second.shutdown().await;
    first.shutdown().await;
}

#[tokio::test]
async fn typed_subscriptions_follow_a_filtered_set_with_enter_and_leave() {
    let app = spawn_app().await;
    blog(&app).await;
    let key = app.create_key("default", &["documents.write"]).await;
    let mut ws = crate::helpers::WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({})).await.expect("ack");
    ws.subscribe(
        "1",
        "subscription { postChanged(filter: {published: {eq: true}, views: {gt: 100}}) { type node { id title views } previous { views } } }",
    )
    .await;
    let write = |query: &'static str, variables: Value| {
        let (app, key) = (&app, key.clone());
        async move { app.as_key(&key, "default", query, variables).await.ok() }
    };
    let create = "mutation($id: ID!, $views: Int, $published: Boolean) { createPost(input: {id: $id, title: $id, views: $views, published: $published}) { id } }";
    // Live once a matching post is heard of.
    let message = ws
        .first_heard_while(|n| {
            write(
                create,
                json!({"id": format!("warm{n}"), "views": 500, "published": true}),
            )
        })
        .await;
    assert_eq!(
        message["payload"]["data"]["postChanged"]["type"], "CREATE",
        "{message}"
    );

    // Outside the set: nothing. Into it by an update, out of it, deleted inside it.
    write(
        create,
        json!({"id": "quiet", "views": 50, "published": true}),
    )
    .await;
    write(
        "mutation { updatePost(input: {id: \"quiet\", views: 150}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(
        changed(&mut ws).await,
        json!({"type": "UPDATE", "node": {"id": "quiet", "title": "quiet", "views": 150}, "previous": {"views": 50}})
    );
    write(
        "mutation { updatePost(input: {id: \"quiet\", published: false}) { id } }",
        json!({}),
    )
    .await;
    let left = changed(&mut ws).await;
    assert_eq!(left["type"], "LEAVE");
    assert_eq!(left["node"]["id"], "quiet");
    write(
        "mutation { updatePost(input: {id: \"quiet\", views: 151}) { id } }",
        json!({}),
    )
    .await;
    write(
        "mutation { deletePost(input: {id: \"warm1\"}) { deletedId } }",
        json!({}),
    )
    .await;
    let deleted = changed(&mut ws).await;
    assert_eq!(
        deleted["type"], "DELETE",
        "the change outside the set was not delivered"
    );
    assert_eq!(deleted["node"]["id"], "warm1");

    // A subscription to one document; and a filter with a type error is refused.
    ws.subscribe(
        "2",
        "subscription { postChanged(id: \"warm2\") { type node { title } } }",
    )
    .await;
    ws.subscribe(
        "3",
        "subscription { postChanged(filter: {views: {gt: \"many\"}}) { type } }",
    )
    .await;
    let refused = ws.next_json().await.expect("an answer");
    assert_eq!(refused["id"], "3", "{refused}");
    assert_eq!(
        refused["payload"]["errors"][0]["extensions"]["code"], "GRAPHQL_VALIDATION_FAILED",
        "{refused}"
    );
    // A collection the caller may not read cannot be watched.
    app.admin(
        CREATE_COLLECTION,
        json!({"input": {"databaseId": "blog", "id": "secrets", "name": "secrets", "attributes": [{"key": "text", "type": "STRING", "size": 10}]}}),
    )
    .await
    .ok();
    let mut guest = crate::helpers::WsClient::connect(&app.ws_url, false).await;
    guest.init(json!({})).await.expect("ack");
    guest
        .subscribe("s", "subscription { secretChanged { type } }")
        .await;
    let denied = guest.next_json().await.expect("an answer");
    assert_eq!(
        denied["payload"]["errors"][0]["extensions"]["code"], "PERMISSION_DENIED",
        "{denied}"
    );
    app.shutdown().await;
}

/// Shared transactions ended (group-committed batches, shared inserts) and the
/// requests that wrote in them.
async fn shared_transactions(app: &TestApp) -> (f64, f64) {
    let mut transactions = 0.0;
    for outcome in ["committed", "rolled_back", "failed"] {
        transactions += app
            .metric(&format!(
                "nimbus_write_batches_total{{outcome=\"{outcome}\"}}"
            ))
            .await;
    }
    let members = app.metric("nimbus_write_batch_members_total").await;
    (transactions, members)
}

async fn changed(ws: &mut crate::helpers::WsClient) -> Value {
    ws.next_json().await.expect("an event")["payload"]["data"]["postChanged"].clone()
}

#[tokio::test]
async fn concurrent_writes_commit_together_and_a_failure_after_writing_undoes_only_itself() {
    let app = spawn_app().await;
    blog(&app).await;
    authors(&app).await;
    app.admin(
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }",
        json!({"input": {"databaseId": "blog", "collectionId": "authors", "key": "posts", "relatedCollectionId": "posts", "type": "ONE_TO_MANY", "twoWayKey": "author", "onDelete": "CASCADE"}}),
    )
    .await
    .ok();
    let ann = user(&app, "ann@example.com").await;
    app.as_session(
        &ann,
        "mutation { createAuthor(input: {id: \"ann\", name: \"Ann\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let (transactions_before, members_before) = shared_transactions(&app).await;

    // Bursts of single-field creates with one among them whose write succeeds and
    // whose answer then fails (a list past the page limit): its write must go, the
    // others' must stay, each exactly once, also when they shared its batch (SQLite)
    // or its insert (MariaDB, where creates that set no relationship share one).
    let mut expected = std::collections::BTreeSet::new();
    let mut expected_authors = std::collections::BTreeSet::from(["ann".to_string()]);
    let mut rerun_seen = false;
    for round in 0..20 {
        let reruns_before = app.metric("nimbus_operations_rerun_total").await;
        let good = (0..24).map(|i| {
            let app = &app;
            let ann = &ann;
            async move {
                if i % 2 == 0 {
                    app.as_session(
                        ann,
                        "mutation($t: String!) { createPost(input: {title: $t, author: \"ann\"}) { id title } }",
                        json!({"t": format!("round {round} post {i}")}),
                    )
                    .await
                } else {
                    app.as_session(
                        ann,
                        "mutation($n: String!) { createAuthor(input: {name: $n}) { id name } }",
                        json!({"n": format!("round {round} author {i}")}),
                    )
                    .await
                }
            }
        });
        let bad = app.as_session(
            &ann,
            "mutation($id: ID!) { createAuthor(input: {id: $id, name: \"Zed\"}) { id posts(first: 1000000) { totalCount } } }",
            json!({"id": format!("zed{round}")}),
        );
        // Creates that fail on their own, at the insert (an id taken) and before it
        // (a value out of range), undo only themselves.
        let refused = (0..4).map(|i| {
            let app = &app;
            let ann = &ann;
            let input = if i % 2 == 0 {
                json!({"id": "taken", "title": "again"})
            } else {
                json!({"title": "negative", "views": -1})
            };
            async move {
                app.as_session(
                    ann,
                    "mutation($input: CreatePostInput!) { createPost(input: $input) { id } }",
                    json!({"input": input}),
                )
                .await
            }
        });
        if round == 0 {
            let taken = app
                .as_session(
                    &ann,
                    "mutation { createPost(input: {id: \"taken\", title: \"first\"}) { id } }",
                    json!({}),
                )
                .await
                .ok();
            expected.insert(taken["createPost"]["id"].as_str().unwrap().to_string());
        }
        let (good, bad, refused) = tokio::join!(
            futures_util::future::join_all(good),
            bad,
            futures_util::future::join_all(refused)
        );
        let codes: Vec<&str> = refused.iter().map(|answer| answer.code()).collect();
        assert_eq!(
            codes,
            [
                "DOCUMENT_ALREADY_EXISTS",
                "VALUE_OUT_OF_RANGE",
                "DOCUMENT_ALREADY_EXISTS",
                "VALUE_OUT_OF_RANGE"
            ]
        );
        assert_eq!(bad.code(), "BAD_USER_INPUT", "{:#}", bad.body);
        assert_eq!(bad.body["data"], Value::Null, "{:#}", bad.body);
        for (i, answer) in good.into_iter().enumerate() {
            let created = answer.ok();
            if i % 2 == 0 {
                let id = created["createPost"]["id"].as_str().unwrap().to_string();
                assert!(expected.insert(id), "ids are unique");
            } else {
                let author = &created["createAuthor"];
                assert_eq!(author["name"], format!("round {round} author {i}"));
                let id = author["id"].as_str().unwrap().to_string();
                assert!(expected_authors.insert(id), "ids are unique");
            }
        }
        if app.metric("nimbus_operations_rerun_total").await > reruns_before {
            rerun_seen = true;
        }
        let stored = app
            .post(
                json!({"query": "query($a: ID!) { author(id: $a) { id } posts(first: 1000) { totalCount edges { node { id } } } authors(first: 1000) { edges { node { id } } } }", "variables": {"a": format!("zed{round}")}}),
                &[],
            )
            .await
            .ok();
        assert_eq!(stored["author"], Value::Null, "the failed write is gone");
        let authors: std::collections::BTreeSet<String> = stored["authors"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|edge| edge["node"]["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(
            authors, expected_authors,
            "every answered create is stored, once"
        );
        let ids: std::collections::BTreeSet<String> = stored["posts"]["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|edge| edge["node"]["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(stored["posts"]["totalCount"], expected.len());
        assert_eq!(ids, expected, "every answered create is stored, once");
        // Done once a failing answer has been undone and creates have shared a
        // transaction: on a loaded machine a burst may run one request at a time.
        let (transactions, members) = shared_transactions(&app).await;
        if rerun_seen && members - members_before > transactions - transactions_before {
            break;
        }
    }
    assert!(
        rerun_seen,
        "in 20 bursts the failing request never shared a transaction with others"
    );
    let (transactions, members) = shared_transactions(&app).await;
    let (transactions, members) = (transactions - transactions_before, members - members_before);
    assert!(
        members > transactions,
        "concurrent creates shared transactions: {members} requests in {transactions}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn subscribers_share_a_render_unless_their_selection_reads_as_them() {
    let app = spawn_app().await;
    blog(&app).await;
    app.admin(
        CREATE_COLLECTION,
        json!({"input": {
            "databaseId": "blog", "id": "editors", "name": "editors",
            "documentSecurity": true,
            "permissions": ["create(\"users\")"],
            "attributes": [{"key": "name", "type": "STRING", "size": 100, "required": true}]
        }}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateRelationshipInput!) { createRelationship(input: $input) { id } }",
        json!({"input": {"databaseId": "blog", "collectionId": "posts", "key": "editor", "relatedCollectionId": "editors", "type": "MANY_TO_ONE"}}),
    )
    .await
    .ok();
    let ann = user(&app, "ann-editor@example.com").await;
    let bob = user(&app, "bob-reader@example.com").await;
    // Only Ann may read her editor document.
    app.as_session(
        &ann,
        "mutation { createEditor(input: {id: \"ed\", name: \"Ed\"}) { id } }",
        json!({}),
    )
    .await
    .ok();

    let plain = "subscription { postChanged { type node { id title } } }";
    let related = "subscription { postChanged { node { id editor { name } } } }";
    let mut watchers = Vec::new();
    for (secret, query) in [
        (&ann, plain),
        (&bob, plain),
        (&ann, related),
        (&bob, related),
    ] {
        let mut ws = crate::helpers::WsClient::connect(&app.ws_url, false).await;
        ws.init(json!({"Authorization": format!("Bearer {secret}")}))
            .await
            .expect("ack");
        ws.subscribe("1", query).await;
        ws.ping_pong().await;
        watchers.push(ws);
    }
    let shared_before = app.metric("nimbus_realtime_shared_renders_total").await;
    app.as_session(
        &ann,
        "mutation { createPost(input: {id: \"p1\", title: \"Hello\", editor: \"ed\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let mut received = Vec::new();
    for ws in &mut watchers {
        let message = ws.next_json().await.expect("an event");
        received.push(message["payload"].clone());
    }
    let created = json!({"data": {"postChanged": {"type": "CREATE", "node": {"id": "p1", "title": "Hello"}}}});
    assert_eq!(received[0], created);
    assert_eq!(received[1], created);
    assert_eq!(
        received[2],
        json!({"data": {"postChanged": {"node": {"id": "p1", "editor": {"name": "Ed"}}}}}),
        "Ann reads her editor"
    );
    assert_eq!(
        received[3],
        json!({"data": {"postChanged": {"node": {"id": "p1", "editor": null}}}}),
        "Bob may not read Ann's editor, whoever rendered first"
    );
    let shared_after = app.metric("nimbus_realtime_shared_renders_total").await;
    assert!(
        shared_after > shared_before,
        "the plain operation was rendered once for both: {shared_before} -> {shared_after}"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn database_and_collection_changes_are_events_for_keys_with_databases_read() {
    let app = spawn_app().await;
    let mut ws = crate::helpers::WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": app.admin_key}))
        .await
        .expect("ack");
    ws.subscribe(
        "1",
        "subscription { realtime(channels: [\"databases\", \"collections\"]) { events channels payload } }",
    )
    .await;
    let mut guest = crate::helpers::WsClient::connect(&app.ws_url, false).await;
    guest.init(json!({})).await.expect("ack");
    guest
        .subscribe(
            "1",
            "subscription { realtime(channels: [\"collections\", \"databases.blog.collections.posts.documents\"]) { events } }",
        )
        .await;
    ws.ping_pong().await;
    guest.ping_pong().await;

    blog(&app).await;
    let database = changed_realtime(&mut ws).await;
    // Appwrite's names: every mix of the id and `*`, with and without the action.
    assert_eq!(
        database["events"],
        json!([
            "databases.blog.create",
            "databases.*.create",
            "databases.blog",
            "databases.*"
        ])
    );
    assert_eq!(database["channels"], json!(["databases", "databases.blog"]));
    assert_eq!(database["payload"]["name"], "Blog");
    let created = changed_realtime(&mut ws).await;
    assert_eq!(
        created["events"],
        json!([
            "databases.blog.collections.posts.create",
            "databases.*.collections.*.create",
            "databases.blog.collections.*.create",
            "databases.*.collections.posts.create",
            "databases.blog.collections.posts",
            "databases.*.collections.*",
            "databases.blog.collections.*",
            "databases.*.collections.posts",
            "databases.blog",
            "databases.*"
        ])
    );
    assert_eq!(
        created["channels"],
        json!(["collections", "databases.blog.collections.posts"])
    );
    assert_eq!(created["payload"]["graphqlName"], "Post");
    app.admin(
        "mutation { createAttribute(input: {databaseId: \"blog\", collectionId: \"posts\", attribute: {key: \"subtitle\", type: STRING, size: 80}}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let updated = changed_realtime(&mut ws).await;
    assert_eq!(
        updated["events"][0],
        "databases.blog.collections.posts.update"
    );
    assert!(
        updated["payload"]["attributes"]
            .as_array()
            .is_some_and(|a| a.iter().any(|a| a["key"] == "subtitle")),
        "{updated}"
    );

    // Structure is for keys: a guest on the same channels first hears a document.
    app.admin(
        "mutation { createPost(input: {id: \"p1\", title: \"hello\", permissions: [\"read(\\\"any\\\")\"]}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let first = changed_realtime(&mut guest).await;
    assert_eq!(
        first["events"][0],
        "databases.blog.collections.posts.documents.p1.create"
    );

    app.admin(
        "mutation { deleteCollection(input: {databaseId: \"blog\", id: \"posts\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        changed_realtime(&mut ws).await["events"][0],
        "databases.blog.collections.posts.delete"
    );
    app.admin(
        "mutation { deleteDatabase(input: {id: \"blog\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        changed_realtime(&mut ws).await["events"][0],
        "databases.blog.delete"
    );
    app.shutdown().await;
}

/// The next `realtime` event on `ws`.
async fn changed_realtime(ws: &mut crate::helpers::WsClient) -> Value {
    let message = ws.next_json().await.expect("an event");
    assert_eq!(message["type"], "next", "{message}");
    message["payload"]["data"]["realtime"].clone()
}

/// The indexes `n` distinct key shapes over eight integer attributes: each alone,
/// then each ordered pair.
fn distinct_indexes(n: usize) -> Vec<Value> {
    let singles = (0..8).map(|a| vec![a]);
    let pairs = (0..8).flat_map(|a| (0..8).filter(move |b| *b != a).map(move |b| vec![a, b]));
    singles
        .chain(pairs)
        .take(n)
        .enumerate()
        .map(|(i, attrs)| {
            let attributes: Vec<String> = attrs.iter().map(|a| format!("a{a}")).collect();
            json!({"key": format!("i{i}"), "type": "KEY", "attributes": attributes})
        })
        .collect()
}

#[tokio::test]
async fn a_collection_takes_as_many_indexes_as_its_table_can_hold_and_then_a_clear_refusal() {
    let app = spawn_app().await;
    blog(&app).await;
    authors(&app).await;
    let attributes: Vec<Value> = (0..8)
        .map(|a| json!({"key": format!("a{a}"), "type": "INTEGER"}))
        .collect();
    let collection = |id: &str, indexes: Vec<Value>| {
        json!({"input": {"databaseId": "blog", "id": id, "name": id,
            "permissions": ["read(\"any\")"], "attributes": attributes.clone(), "indexes": indexes}})
    };
    // 60 of its own beside the four every table has: MariaDB's 64 keys.
    let too_many = app
        .admin(CREATE_COLLECTION, collection("wide", distinct_indexes(61)))
        .await;
    assert_eq!(
        too_many.code(),
        "INDEX_LIMIT_EXCEEDED",
        "{:#}",
        too_many.body
    );
    let absent = app
        .admin(
            "{ collection(databaseId: \"blog\", id: \"wide\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(absent.code(), "COLLECTION_NOT_FOUND", "{:#}", absent.body);

    let created = app
        .admin(CREATE_COLLECTION, collection("wide", distinct_indexes(59)))
        .await
        .ok();
    assert_eq!(
        created["createCollection"]["indexes"]
            .as_array()
            .unwrap()
            .len(),
        59
    );
    let index = |key: &str, attrs: [&str; 3]| {
        format!(
            "mutation {{ createIndex(input: {{databaseId: \"blog\", collectionId: \"wide\", index: {{key: \"{key}\", type: KEY, attributes: {attrs:?}}}}}) {{ indexes {{ key }} }} }}"
        )
    };
    let last = app
        .admin(&index("last", ["a0", "a1", "a2"]), json!({}))
        .await
        .ok();
    assert_eq!(last["createIndex"]["indexes"].as_array().unwrap().len(), 60);
    let over = app
        .admin(&index("over", ["a0", "a1", "a3"]), json!({}))
        .await;
    assert_eq!(over.code(), "INDEX_LIMIT_EXCEEDED", "{:#}", over.body);
    // A relationship held by the table needs a key of its own.
    let relate = "mutation { createRelationship(input: {databaseId: \"blog\", collectionId: \"wide\", relatedCollectionId: \"authors\", key: \"author\", type: MANY_TO_ONE}) { relationships { key } } }";
    let refused = app.admin(relate, json!({})).await;
    assert_eq!(refused.code(), "INDEX_LIMIT_EXCEEDED", "{:#}", refused.body);
    app.admin(
        "mutation { deleteIndex(input: {databaseId: \"blog\", collectionId: \"wide\", key: \"last\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let related = app.admin(relate, json!({})).await.ok();
    assert_eq!(
        related["createRelationship"]["relationships"][0]["key"],
        "author"
    );
    let listed = app
        .admin(
            "{ collection(databaseId: \"blog\", id: \"wide\") { indexes { key } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        listed["collection"]["indexes"].as_array().unwrap().len(),
        59
    );
}
