//! The twin indexes of collections read per document (ADR 0022): made and
//! dropped with their indexes and with `documentSecurity`, only in the keys a
//! table has left, and at start-up for collections made before them. None of it
//! changes what a user may do with indexes, nor what any list answers.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const CREATE_COLLECTION: &str =
    "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }";

fn on_mariadb(app: &TestApp) -> bool {
    app.config.effective_database_url().starts_with("mysql")
}

/// The physical table of collection `id`.
async fn table_of(app: &TestApp, id: &str) -> String {
    let pool = app.server.as_ref().unwrap().state().db.pool();
    sqlx::query_scalar("SELECT table_name FROM db_collections WHERE id = ?")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// The twins of collection `id`'s table, as the keys of the indexes they twin
/// (`reader` for the collection's own), sorted.
pub(crate) async fn twins(app: &TestApp, id: &str) -> Vec<String> {
    let table = table_of(app, id).await;
    let pool = app.server.as_ref().unwrap().state().db.pool();
    let (sql, own, prefix) = if on_mariadb(app) {
        (
            "SELECT DISTINCT INDEX_NAME FROM information_schema.STATISTICS \
             WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
            "s_reader".to_string(),
            "r_".to_string(),
        )
    } else {
        (
            "SELECT name FROM pragma_index_list(?)",
            format!("s_{table}__reader"),
            format!("r_{table}__"),
        )
    };
    let names: Vec<String> = sqlx::query_scalar(sql)
        .bind(&table)
        .fetch_all(pool)
        .await
        .unwrap();
    let mut keys: Vec<String> = names
        .into_iter()
        .filter_map(|name| {
            if name == own {
                Some("reader".to_string())
            } else {
                name.strip_prefix(&prefix).map(str::to_string)
            }
        })
        .collect();
    keys.sort();
    keys
}

async fn create_index(app: &TestApp, collection: &str, index: Value) -> crate::helpers::Answer {
    app.admin(
        "mutation($c: ID!, $i: IndexInput!) { createIndex(input: {databaseId: \"app\", collectionId: $c, index: $i}) { indexes { key } } }",
        json!({"c": collection, "i": index}),
    )
    .await
}

async fn delete_index(app: &TestApp, collection: &str, key: &str) {
    app.admin(
        "mutation($c: ID!, $k: String!) { deleteIndex(input: {databaseId: \"app\", collectionId: $c, key: $k}) { id } }",
        json!({"c": collection, "k": key}),
    )
    .await
    .ok();
}

async fn document_security(app: &TestApp, collection: &str, on: bool) {
    let data = app
        .admin(
            "mutation($c: ID!, $on: Boolean!) { updateCollection(input: {databaseId: \"app\", id: $c, documentSecurity: $on}) { documentSecurity } }",
            json!({"c": collection, "on": on}),
        )
        .await
        .ok();
    assert_eq!(data["updateCollection"]["documentSecurity"], on);
}

/// The `app` database and its `notes` collection: signed-in users create
/// notes, each note readable by its creator only, document security on.
async fn notes(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"app\", name: \"App\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        CREATE_COLLECTION,
        json!({"input": {
            "databaseId": "app", "id": "notes", "name": "notes",
            "documentSecurity": true,
            "permissions": ["create(\"users\")"],
            "attributes": [
                {"key": "title", "type": "STRING", "size": 100, "required": true},
                {"key": "body", "type": "STRING", "size": 5000},
                {"key": "views", "type": "INTEGER", "default": 0}
            ],
            "indexes": [
                {"key": "by_views", "type": "KEY", "attributes": ["views"], "orders": ["DESC"]},
                {"key": "words", "type": "FULLTEXT", "attributes": ["title"]}
            ]
        }}),
    )
    .await
    .ok();
}

/// Creates a note as the user of `secret`; answers its id.
async fn note(app: &TestApp, secret: &str, title: &str, views: i64) -> String {
    app.as_session(
        secret,
        "mutation($t: String!, $v: Int!) { createNote(input: {title: $t, views: $v}) { id } }",
        json!({"t": title, "v": views}),
    )
    .await
    .ok()["createNote"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The notes the user of `secret` lists, most viewed first, and the total.
async fn listed(app: &TestApp, secret: &str) -> (Vec<String>, i64) {
    let data = app
        .as_session(
            secret,
            "{ notes(orderBy: [{views: DESC}], first: 50) { totalCount nodes { id } } }",
            json!({}),
        )
        .await
        .ok();
    let ids = data["notes"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    (ids, data["notes"]["totalCount"].as_i64().unwrap())
}

#[tokio::test]
async fn twins_follow_indexes_and_document_security_while_lists_stay_the_same() {
    let app = spawn_app().await;
    notes(&app).await;
    // The collection's own and the key index's; none for full-text search.
    assert_eq!(twins(&app, "notes").await, ["by_views", "reader"]);

    let ann = app.signed_in("ann-twins@example.com").await;
    let bob = app.signed_in("bob-twins@example.com").await;
    let mut ann_notes = Vec::new();
    for (title, views) in [("a", 5), ("b", 9), ("c", 1)] {
        ann_notes.push((views, note(&app, &ann, title, views).await));
    }
    let bob_note = note(&app, &bob, "d", 7).await;
    ann_notes.sort_by_key(|(views, _)| std::cmp::Reverse(*views));
    let ann_list: Vec<String> = ann_notes.iter().map(|(_, id)| id.clone()).collect();
    let check = |ann_expected: Vec<String>, bob_expected: Vec<String>| {
        let app = &app;
        let (ann, bob) = (ann.clone(), bob.clone());
        async move {
            let (ann_got, bob_got) = (listed(app, &ann).await, listed(app, &bob).await);
            assert_eq!(ann_got.0, ann_expected);
            assert_eq!(ann_got.1, ann_expected.len() as i64);
            assert_eq!(bob_got.0, bob_expected);
            assert_eq!(bob_got.1, bob_expected.len() as i64);
        }
    };
    check(ann_list.clone(), vec![bob_note.clone()]).await;

    // An index made later gets its twin; one refused by the data leaves none.
    let made = create_index(
        &app,
        "notes",
        json!({"key": "by_title", "type": "KEY", "attributes": ["title", "views"], "orders": ["ASC", "DESC"]}),
    )
    .await
    .ok();
    assert_eq!(made["createIndex"]["indexes"].as_array().unwrap().len(), 3);
    assert_eq!(
        twins(&app, "notes").await,
        ["by_title", "by_views", "reader"]
    );
    note(&app, &bob, "a", 3).await;
    let refused = create_index(
        &app,
        "notes",
        json!({"key": "one_title", "type": "UNIQUE", "attributes": ["title"]}),
    )
    .await;
    assert_eq!(
        refused.code(),
        "INDEX_DUPLICATE_VALUES",
        "{:#}",
        refused.body
    );
    assert_eq!(
        twins(&app, "notes").await,
        ["by_title", "by_views", "reader"]
    );
    // An index on a long string: its twin is made on MariaDB within the key
    // limit, through the string's prefix.
    create_index(
        &app,
        "notes",
        json!({"key": "by_body", "type": "KEY", "attributes": ["body"]}),
    )
    .await
    .ok();
    assert_eq!(
        twins(&app, "notes").await,
        ["by_body", "by_title", "by_views", "reader"]
    );

    // Dropped with its index, and with the attribute its index covers.
    delete_index(&app, "notes", "by_views").await;
    assert_eq!(
        twins(&app, "notes").await,
        ["by_body", "by_title", "reader"]
    );
    app.admin(
        "mutation { deleteAttribute(input: {databaseId: \"app\", collectionId: \"notes\", key: \"body\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(twins(&app, "notes").await, ["by_title", "reader"]);
    let bob_list = listed(&app, &bob).await.0;
    assert_eq!(bob_list.len(), 2);
    assert_eq!(bob_list[0], bob_note);
    check(ann_list.clone(), bob_list.clone()).await;

    // documentSecurity off: no twins, and the documents' own permissions no
    // longer count (the collection's grant no read: the list is refused); on
    // again: all of them, and the same lists.
    document_security(&app, "notes", false).await;
    assert!(twins(&app, "notes").await.is_empty());
    for secret in [&ann, &bob] {
        let refused = app
            .as_session(secret, "{ notes(first: 50) { totalCount } }", json!({}))
            .await;
        assert_eq!(refused.code(), "PERMISSION_DENIED");
    }
    document_security(&app, "notes", true).await;
    assert_eq!(twins(&app, "notes").await, ["by_title", "reader"]);
    check(ann_list.clone(), bob_list.clone()).await;
    // Turning it on again changes nothing.
    document_security(&app, "notes", true).await;
    assert_eq!(twins(&app, "notes").await, ["by_title", "reader"]);

    // Written to after the toggles: kept in the lists.
    let newest = note(&app, &ann, "e", 100).await;
    let mut expected = vec![newest];
    expected.extend(ann_list);
    check(expected, bob_list).await;
    app.shutdown().await;
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
async fn the_index_limit_is_the_same_with_document_security_and_twins_take_what_is_left() {
    let app = spawn_app().await;
    app.admin(
        "mutation { createDatabase(input: {id: \"app\", name: \"App\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let attributes: Vec<Value> = (0..8)
        .map(|a| json!({"key": format!("a{a}"), "type": "INTEGER"}))
        .collect();
    let collection = |id: &str, indexes: Vec<Value>| {
        json!({"input": {"databaseId": "app", "id": id, "name": id,
            "documentSecurity": true,
            "permissions": ["read(\"any\")"], "attributes": attributes.clone(), "indexes": indexes}})
    };
    app.admin(
        CREATE_COLLECTION,
        json!({"input": {"databaseId": "app", "id": "people", "name": "people",
            "permissions": ["read(\"any\")"],
            "attributes": [{"key": "name", "type": "STRING", "size": 10}]}}),
    )
    .await
    .ok();
    // 60 of its own beside the four every table has, as without
    // documentSecurity: MariaDB's 64 keys.
    let too_many = app
        .admin(CREATE_COLLECTION, collection("items", distinct_indexes(61)))
        .await;
    assert_eq!(
        too_many.code(),
        "INDEX_LIMIT_EXCEEDED",
        "{:#}",
        too_many.body
    );

    // 58: keys left for the collection's twin and the first index's.
    app.admin(CREATE_COLLECTION, collection("items", distinct_indexes(58)))
        .await
        .ok();
    assert_eq!(twins(&app, "items").await, ["i0", "reader"]);
    let index =
        |key: &str, attrs: [&str; 3]| json!({"key": key, "type": "KEY", "attributes": attrs});
    create_index(&app, "items", index("fifty_nine", ["a0", "a1", "a2"]))
        .await
        .ok();
    assert_eq!(twins(&app, "items").await, ["reader"]);
    let last = create_index(&app, "items", index("last", ["a0", "a1", "a3"]))
        .await
        .ok();
    assert_eq!(last["createIndex"]["indexes"].as_array().unwrap().len(), 60);
    assert!(twins(&app, "items").await.is_empty());
    let over = create_index(&app, "items", index("over", ["a0", "a1", "a4"])).await;
    assert_eq!(over.code(), "INDEX_LIMIT_EXCEEDED", "{:#}", over.body);
    // A relationship's key counts as before.
    let relate = "mutation { createRelationship(input: {databaseId: \"app\", collectionId: \"items\", relatedCollectionId: \"people\", key: \"owner\", type: MANY_TO_ONE}) { relationships { key } } }";
    let refused = app.admin(relate, json!({})).await;
    assert_eq!(refused.code(), "INDEX_LIMIT_EXCEEDED", "{:#}", refused.body);
    delete_index(&app, "items", "last").await;
    assert_eq!(twins(&app, "items").await, ["reader"]);
    let related = app.admin(relate, json!({})).await.ok();
    assert_eq!(
        related["createRelationship"]["relationships"][0]["key"],
        "owner"
    );
    assert!(twins(&app, "items").await.is_empty());
    // Its key given back, the twin comes back.
    app.admin(
        "mutation { deleteAttribute(input: {databaseId: \"app\", collectionId: \"items\", key: \"owner\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(twins(&app, "items").await, ["reader"]);
    // Documents are written and listed whatever twins the table has.
    let created = app
        .admin(
            "mutation { createItem(input: {a0: 1, permissions: [\"read(\\\"users\\\")\"]}) { id } }",
            json!({}),
        )
        .await
        .ok();
    let id = created["createItem"]["id"].as_str().unwrap().to_string();
    let listed = app
        .admin("{ items(first: 5) { totalCount nodes { id } } }", json!({}))
        .await
        .ok();
    assert_eq!(listed["items"]["totalCount"], 1);
    assert_eq!(listed["items"]["nodes"][0]["id"], id.as_str());
    app.shutdown().await;
}

#[tokio::test]
async fn a_collection_made_before_twins_gets_them_at_the_next_start() {
    // The database outlives the first server: a file of its own on SQLite.
    let keep = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path()).await;
    if config.database_url.is_none() {
        config.database_url = Some(format!(
            "sqlite://{}?mode=rwc",
            keep.path().join("nimbus.db").display()
        ));
    }
    config.secret = Some("reader-twins-tests-share-this-secret-0123456789".into());
    let first = crate::helpers::spawn_with(config.clone(), dir).await;
    notes(&first).await;
    let ann = first.signed_in("ann-twins@example.com").await;
    let one = note(&first, &ann, "a", 1).await;
    let two = note(&first, &ann, "b", 2).await;
    // As the versions before the twins left it.
    let table = table_of(&first, "notes").await;
    let statements = if on_mariadb(&first) {
        vec![format!(
            "ALTER TABLE {table} DROP KEY s_reader, DROP KEY r_by_views"
        )]
    } else {
        vec![
            format!("DROP INDEX s_{table}__reader"),
            format!("DROP INDEX r_{table}__by_views"),
        ]
    };
    {
        let pool = first.server.as_ref().unwrap().state().db.pool();
        let mut conn = pool.acquire().await.unwrap();
        for statement in statements {
            sqlx::query(&statement).execute(&mut *conn).await.unwrap();
        }
        sqlx::query("UPDATE db_collections SET reader_twins = 0")
            .execute(&mut *conn)
            .await
            .unwrap();
    }
    assert!(twins(&first, "notes").await.is_empty());
    let admin_key = first.admin_key.clone();
    first.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    config.data_dir = dir.path().to_path_buf();
    let server = nimbus::Server::start(config.clone())
        .await
        .expect("the server starts on tables without twins");
    let app = crate::helpers::from_server(server, admin_key, config, dir);
    assert_eq!(twins(&app, "notes").await, ["by_views", "reader"]);
    let pool = app.server.as_ref().unwrap().state().db.pool();
    let marks: Vec<i64> = sqlx::query_scalar("SELECT reader_twins FROM db_collections")
        .fetch_all(pool)
        .await
        .unwrap();
    assert_eq!(marks, [1]);
    assert_eq!(listed(&app, &ann).await, (vec![two, one], 2));
    app.shutdown().await;
}

#[tokio::test]
async fn an_index_cannot_take_the_name_of_a_relationships_own_index() {
    let app = spawn_app().await;
    app.admin(
        "mutation { createDatabase(input: {id: \"app\", name: \"App\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for id in ["people", "books"] {
        app.admin(
            CREATE_COLLECTION,
            json!({"input": {"databaseId": "app", "id": id, "name": id,
                "documentSecurity": true,
                "permissions": ["read(\"any\")"],
                "attributes": [{"key": "name", "type": "STRING", "size": 10}]}}),
        )
        .await
        .ok();
    }
    let relate = |key: &str| {
        format!(
            "mutation {{ createRelationship(input: {{databaseId: \"app\", collectionId: \"books\", relatedCollectionId: \"people\", key: \"{key}\", type: MANY_TO_ONE}}) {{ relationships {{ key }} }} }}"
        )
    };
    app.admin(&relate("author"), json!({})).await.ok();
    for key in ["ref_author", "REF_Author"] {
        let taken = create_index(
            &app,
            "books",
            json!({"key": key, "type": "KEY", "attributes": ["name"]}),
        )
        .await;
        assert_eq!(taken.code(), "INDEX_INVALID", "{:#}", taken.body);
    }
    // The other way round: the index first.
    create_index(
        &app,
        "books",
        json!({"key": "ref_editor", "type": "KEY", "attributes": ["name"]}),
    )
    .await
    .ok();
    let refused = app.admin(&relate("editor"), json!({})).await;
    assert_eq!(refused.code(), "ATTRIBUTE_INVALID", "{:#}", refused.body);
    // Nothing was left half made: the collection takes other names.
    let data = app.admin(&relate("editor2"), json!({})).await.ok();
    let keys: Vec<&str> = data["createRelationship"]["relationships"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["author", "editor2"]);
    assert_eq!(twins(&app, "books").await, ["reader", "ref_editor"]);
    app.shutdown().await;
}
