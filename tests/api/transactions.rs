//! Transactions of document writes, as Appwrite's clients use them: opened,
//! staged across requests (`createOperations`, or `transactionId` on a document
//! mutation), each staging checked as the caller; committed all or none, or
//! rolled back; a user's own (and committed only by them), a key's the
//! project's.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const OPEN: &str = "mutation($input: CreateTransactionInput) { createTransaction(input: $input) { id status operations expiresAt } }";
const STAGE: &str = "mutation($t: ID!, $ops: [JSON!]!) { createOperations(input: {transactionId: $t, operations: $ops}) { id status operations } }";
const COMMIT: &str =
    "mutation($t: ID!) { updateTransaction(input: {id: $t, commit: true}) { id status } }";
const ROLLBACK: &str =
    "mutation($t: ID!) { updateTransaction(input: {id: $t, rollback: true}) { id status } }";
const READ: &str = "query($t: ID!) { transaction(id: $t) { id status operations } }";
const DOCUMENT: &str = "query($c: ID!, $id: ID!) { document(databaseId: \"ledger\", collectionId: $c, id: $id) { id data } }";

/// `ledger`: `notes` (a required `name`, a unique `email`, a `count`), which
/// anyone may create, read, update and delete, and `locked`, which signed-in
/// users may only read.
async fn ledger(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"ledger\", name: \"Ledger\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    for (id, permissions) in [
        (
            "notes",
            json!([
                "create(\"any\")",
                "read(\"any\")",
                "update(\"any\")",
                "delete(\"any\")"
            ]),
        ),
        ("locked", json!(["read(\"users\")"])),
    ] {
        app.admin(
            "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
            json!({"input": {
                "databaseId": "ledger", "id": id, "name": id, "permissions": permissions,
                "attributes": [
                    {"key": "name", "type": "STRING", "size": 50, "required": true},
                    {"key": "email", "type": "STRING", "size": 50},
                    {"key": "count", "type": "INTEGER"},
                ],
                "indexes": [{"key": "by_email", "type": "UNIQUE", "attributes": ["email"]}],
            }}),
        )
        .await
        .ok();
    }
}

fn op(action: &str, id: Option<&str>, data: Value) -> Value {
    let mut op =
        json!({"action": action, "databaseId": "ledger", "collectionId": "notes", "data": data});
    if let Some(id) = id {
        op["documentId"] = json!(id);
    }
    op
}

async fn stored(app: &TestApp, id: &str) -> Value {
    app.admin(DOCUMENT, json!({"c": "notes", "id": id}))
        .await
        .ok()["document"]
        .clone()
}

async fn open(app: &TestApp) -> String {
    app.admin(OPEN, json!({})).await.ok()["createTransaction"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test]
async fn staged_writes_commit_together_or_not_at_all() {
    let app = spawn_app().await;
    ledger(&app).await;

    // Opened pending and empty, for 300 s unless told; 60 to 3600 s.
    let opened = app.admin(OPEN, json!({})).await.ok()["createTransaction"].clone();
    assert_eq!(opened["status"], "pending");
    assert_eq!(opened["operations"], 0);
    let expires = chrono::DateTime::parse_from_rfc3339(opened["expiresAt"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let left = expires - chrono::Utc::now().timestamp();
    assert!((280..=310).contains(&left), "{left}");
    let longer = app.admin(OPEN, json!({"input": {"ttl": 900}})).await.ok();
    let expires = chrono::DateTime::parse_from_rfc3339(
        longer["createTransaction"]["expiresAt"].as_str().unwrap(),
    )
    .unwrap()
    .timestamp();
    assert!((880..=910).contains(&(expires - chrono::Utc::now().timestamp())));
    for ttl in [30, 4000] {
        let refused = app.admin(OPEN, json!({"input": {"ttl": ttl}})).await;
        assert_eq!(
            refused.code(),
            "BAD_USER_INPUT",
            "{ttl}: {:#}",
            refused.body
        );
    }

    // Staged across requests, checked, kept apart until committed.
    let t = opened["id"].as_str().unwrap().to_string();
    let staged = app
        .admin(
            STAGE,
            json!({"t": t, "ops": [
                op("create", Some("doc1"), json!({"name": "One"})),
                op("create", Some("doc2"), json!({"name": "Two", "count": 1})),
            ]}),
        )
        .await
        .ok();
    assert_eq!(staged["createOperations"]["operations"], 2);
    let staged = app
        .admin(
            STAGE,
            json!({"t": t, "ops": [
                op("update", Some("doc1"), json!({"name": "One, changed"})),
                op("increment", Some("doc2"), json!({"attribute": "count", "value": 4})),
            ]}),
        )
        .await
        .ok();
    assert_eq!(staged["createOperations"]["operations"], 4);
    assert!(stored(&app, "doc1").await.is_null());
    for (operation, code) in [
        (
            json!({"action": "create", "databaseId": "nowhere", "collectionId": "notes", "documentId": "x", "data": {"name": "X"}}),
            "DATABASE_NOT_FOUND",
        ),
        (
            json!({"action": "create", "databaseId": "ledger", "collectionId": "nothing", "documentId": "x", "data": {"name": "X"}}),
            "COLLECTION_NOT_FOUND",
        ),
        (
            op("update", Some("missing"), json!({"name": "X"})),
            "DOCUMENT_NOT_FOUND",
        ),
        (op("fly", Some("x"), json!({})), "BAD_USER_INPUT"),
        (
            op(
                "bulkUpsert",
                None,
                json!([{"$id": "d", "name": "A"}, {"$id": "d", "name": "B"}]),
            ),
            "VALUE_INVALID",
        ),
        (
            json!({"action": "create", "databaseId": "ledger"}),
            "BAD_USER_INPUT",
        ),
        (json!("create"), "BAD_USER_INPUT"),
        // What Appwrite's validator of operations refuses.
        (op("create", None, json!({"name": "X"})), "BAD_USER_INPUT"),
        (
            op("create", Some(""), json!({"name": "X"})),
            "BAD_USER_INPUT",
        ),
        (op("create", Some("x"), json!(null)), "BAD_USER_INPUT"),
        (
            op("bulkCreate", None, json!("not a list")),
            "BAD_USER_INPUT",
        ),
        (
            op("bulkUpdate", None, json!({"data": {"name": "X"}})),
            "BAD_USER_INPUT",
        ),
        (
            op("bulkUpdate", None, json!({"queries": []})),
            "BAD_USER_INPUT",
        ),
        (op("bulkDelete", None, json!({})), "BAD_USER_INPUT"),
        (
            op("increment", Some("doc2"), json!({"value": 1})),
            "BAD_USER_INPUT",
        ),
    ] {
        let refused = app.admin(STAGE, json!({"t": t, "ops": [operation]})).await;
        assert_eq!(refused.code(), code, "{operation}: {:#}", refused.body);
    }
    let unchanged = app.admin(READ, json!({"t": t})).await.ok();
    assert_eq!(unchanged["transaction"]["operations"], 4);

    let committed = app.admin(COMMIT, json!({"t": t})).await.ok();
    assert_eq!(committed["updateTransaction"]["status"], "committed");
    assert_eq!(stored(&app, "doc1").await["data"]["name"], "One, changed");
    assert_eq!(stored(&app, "doc2").await["data"]["count"], 5);
    let again = app.admin(COMMIT, json!({"t": t})).await;
    assert_eq!(again.code(), "TRANSACTION_NOT_READY", "{:#}", again.body);
    let late = app
        .admin(
            STAGE,
            json!({"t": t, "ops": [op("delete", Some("doc1"), json!(null))]}),
        )
        .await;
    assert_eq!(late.code(), "TRANSACTION_NOT_READY");

    // A commit refused by one operation keeps none of them, and fails.
    let t = open(&app).await;
    app.admin(
        STAGE,
        json!({"t": t, "ops": [
            op("create", Some("doc3"), json!({"name": "Three"})),
            op("create", Some("doc4"), json!({"name": "Four", "email": "four@example.com"})),
        ]}),
    )
    .await
    .ok();
    app.admin(
        "mutation { createDocument(input: {databaseId: \"ledger\", collectionId: \"notes\", id: \"first\", data: {name: \"First\", email: \"four@example.com\"}}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let clash = app.admin(COMMIT, json!({"t": t})).await;
    assert_eq!(clash.code(), "DOCUMENT_NOT_UNIQUE", "{:#}", clash.body);
    assert_eq!(
        clash.body["errors"][0]["extensions"]["field"],
        "operations[1].data"
    );
    assert!(stored(&app, "doc3").await.is_null());
    let failed = app.admin(READ, json!({"t": t})).await.ok();
    assert_eq!(failed["transaction"]["status"], "failed");

    // What the data makes of an operation refuses the commit, not the staging,
    // as in Appwrite; through a document mutation it refuses at once.
    for (operation, code, field) in [
        (
            op("create", Some("x"), json!({"title": "X"})),
            "ATTRIBUTE_NOT_FOUND",
            "operations[0].data",
        ),
        (
            op("create", Some("doc1"), json!({"name": "again"})),
            "DOCUMENT_ALREADY_EXISTS",
            "<none>",
        ),
    ] {
        let t = open(&app).await;
        let staged = app
            .admin(STAGE, json!({"t": t, "ops": [operation]}))
            .await
            .ok();
        assert_eq!(staged["createOperations"]["operations"], 1);
        let refused = app.admin(COMMIT, json!({"t": t})).await;
        assert_eq!(refused.code(), code, "{:#}", refused.body);
        assert_eq!(
            refused.body["errors"][0]["extensions"]["field"]
                .as_str()
                .unwrap_or("<none>"),
            field
        );
        let failed = app.admin(READ, json!({"t": t})).await.ok();
        assert_eq!(failed["transaction"]["status"], "failed");
        assert!(stored(&app, "x").await.is_null());
        let at_once = app
            .admin(
                "mutation($t: ID!) { createDocument(input: {databaseId: \"ledger\", collectionId: \"notes\", id: \"doc1\", data: {name: \"again\"}, transactionId: $t}) { id } }",
                json!({"t": open(&app).await}),
            )
            .await;
        assert_eq!(
            at_once.code(),
            "DOCUMENT_ALREADY_EXISTS",
            "{:#}",
            at_once.body
        );
    }

    // A document changed by someone else after its operation was staged
    // refuses the commit (Appwrite's request timestamps), and the change stays.
    let t = open(&app).await;
    app.admin(
        STAGE,
        json!({"t": t, "ops": [op("update", Some("doc2"), json!({"count": 200}))]}),
    )
    .await
    .ok();
    let other = open(&app).await;
    app.admin(
        STAGE,
        json!({"t": other, "ops": [op("update", Some("doc2"), json!({"count": 300}))]}),
    )
    .await
    .ok();
    let first = app.admin(COMMIT, json!({"t": t})).await.ok();
    assert_eq!(first["updateTransaction"]["status"], "committed");
    let conflict = app.admin(COMMIT, json!({"t": other})).await;
    assert_eq!(
        conflict.code(),
        "TRANSACTION_CONFLICT",
        "{:#}",
        conflict.body
    );
    assert_eq!(
        conflict.body["errors"][0]["extensions"]["field"],
        "operations[0].documentId"
    );
    assert_eq!(stored(&app, "doc2").await["data"]["count"], 200);
    let failed = app.admin(READ, json!({"t": other})).await.ok();
    assert_eq!(failed["transaction"]["status"], "failed");

    // Rolled back: nothing runs, nothing more is taken.
    let t = open(&app).await;
    app.admin(
        STAGE,
        json!({"t": t, "ops": [op("delete", Some("doc1"), json!(null))]}),
    )
    .await
    .ok();
    let rolled = app.admin(ROLLBACK, json!({"t": t})).await.ok();
    assert_eq!(
        rolled["updateTransaction"]["status"], "failed",
        "as Appwrite answers it"
    );
    assert_eq!(stored(&app, "doc1").await["id"], "doc1");
    let after = app.admin(COMMIT, json!({"t": t})).await;
    assert_eq!(after.code(), "TRANSACTION_NOT_READY");
    let neither = app
        .admin(
            "mutation($t: ID!) { updateTransaction(input: {id: $t}) { id } }",
            json!({"t": t}),
        )
        .await;
    assert_eq!(neither.code(), "BAD_USER_INPUT");

    // At most 100 operations.
    let t = open(&app).await;
    let many: Vec<Value> = (0..101)
        .map(|n| op("create", Some(&format!("n{n}")), json!({"name": "N"})))
        .collect();
    let too_many = app.admin(STAGE, json!({"t": t, "ops": many})).await;
    assert_eq!(too_many.code(), "TRANSACTION_LIMIT_EXCEEDED");
    app.shutdown().await;
}

#[tokio::test]
async fn document_mutations_stage_into_a_transaction_that_only_its_owner_reaches() {
    let app = spawn_app().await;
    ledger(&app).await;
    let ann = app.signed_in("ann-tx@example.com").await;
    let bob = app.signed_in("bob-tx@example.com").await;
    let opened = app.as_session(&ann, OPEN, json!({})).await.ok();
    let t = opened["createTransaction"]["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A document mutation given `transactionId` answers what it would do, and
    // does it at the commit; a later one sees what earlier ones staged.
    let created = app
        .as_session(
            &ann,
            "mutation($t: ID) { createDocument(input: {databaseId: \"ledger\", collectionId: \"notes\", data: {name: \"Staged\", count: 1}, transactionId: $t}) { id data } }",
            json!({"t": t}),
        )
        .await
        .ok();
    let id = created["createDocument"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(created["createDocument"]["data"]["name"], "Staged");
    assert!(stored(&app, &id).await.is_null());
    let stepped = app
        .as_session(
            &ann,
            "mutation($t: ID, $id: ID!) { incrementDocumentAttribute(input: {databaseId: \"ledger\", collectionId: \"notes\", id: $id, attribute: \"count\", value: 2, transactionId: $t}) { data } }",
            json!({"t": t, "id": id}),
        )
        .await
        .ok();
    assert_eq!(stepped["incrementDocumentAttribute"]["data"]["count"], 3);
    let bulk = app
        .as_session(
            &ann,
            "mutation($t: ID, $q: [String!]) { updateDocuments(input: {databaseId: \"ledger\", collectionId: \"notes\", data: {name: \"Bulk\"}, queries: $q, transactionId: $t}) { id } }",
            json!({"t": t, "q": [json!({"method": "equal", "attribute": "count", "values": [3]}).to_string()]}),
        )
        .await
        .ok();
    assert_eq!(bulk["updateDocuments"][0]["id"], id.as_str());
    let gone = app
        .as_session(
            &ann,
            "mutation($t: ID) { createDocument(input: {databaseId: \"ledger\", collectionId: \"notes\", id: \"brief\", data: {name: \"Brief\"}, transactionId: $t}) { id } }",
            json!({"t": t}),
        )
        .await
        .ok();
    assert_eq!(gone["createDocument"]["id"], "brief");
    app.as_session(
        &ann,
        "mutation($t: ID) { deleteDocument(input: {databaseId: \"ledger\", collectionId: \"notes\", id: \"brief\", transactionId: $t}) { deletedId } }",
        json!({"t": t}),
    )
    .await
    .ok();

    // Staging is checked as the caller: no create where it may not create.
    let denied = app
        .as_session(
            &ann,
            STAGE,
            json!({"t": t, "ops": [{"action": "create", "databaseId": "ledger", "collectionId": "locked", "documentId": "x", "data": {"name": "X"}}]}),
        )
        .await;
    assert_eq!(denied.code(), "PERMISSION_DENIED", "{:#}", denied.body);

    // Another user reaches none of it; a key reaches all of it.
    for (query, variables) in [
        (READ, json!({"t": t})),
        (COMMIT, json!({"t": t})),
        (ROLLBACK, json!({"t": t})),
        (
            STAGE,
            json!({"t": t, "ops": [op("delete", Some("doc1"), json!(null))]}),
        ),
        (
            "mutation($t: ID!) { deleteTransaction(input: {id: $t}) { deletedId } }",
            json!({"t": t}),
        ),
    ] {
        let hidden = app.as_session(&bob, query, variables).await;
        assert_eq!(
            hidden.code(),
            "TRANSACTION_NOT_FOUND",
            "{query}: {:#}",
            hidden.body
        );
    }
    let listed = |secret: String| {
        let app = &app;
        async move {
            app.as_session(
                &secret,
                "{ transactions { total transactions { id } } }",
                json!({}),
            )
            .await
            .ok()["transactions"]
                .clone()
        }
    };
    assert_eq!(listed(bob.clone()).await["total"], 0);
    assert_eq!(
        listed(ann.clone()).await["transactions"][0]["id"],
        t.as_str()
    );
    let by_key = app.admin(READ, json!({"t": t})).await.ok();
    assert_eq!(by_key["transaction"]["operations"], 5);
    let guest = app.post(json!({"query": OPEN}), &[]).await;
    assert_eq!(guest.code(), "UNAUTHENTICATED");

    // Staging runs on a database transaction of its own: not after another
    // write of the same request.
    let mixed = app
        .as_session(
            &ann,
            "mutation($t: ID!, $ops: [JSON!]!) { createDocument(input: {databaseId: \"ledger\", collectionId: \"notes\", data: {name: \"Now\"}}) { id } createOperations(input: {transactionId: $t, operations: $ops}) { id } }",
            json!({"t": t, "ops": [op("create", Some("later"), json!({"name": "Later"}))]}),
        )
        .await;
    assert_eq!(mixed.code(), "BAD_USER_INPUT", "{:#}", mixed.body);

    // One transaction run a request: each starts the request's bounds afresh.
    let twice = app
        .as_session(
            &ann,
            "mutation($t: ID!, $ops: [JSON!]!) { a: createOperations(input: {transactionId: $t, operations: $ops}) { id } b: createOperations(input: {transactionId: $t, operations: $ops}) { id } }",
            json!({"t": t, "ops": [op("create", Some("twice"), json!({"name": "Twice"}))]}),
        )
        .await;
    assert_eq!(twice.code(), "BAD_USER_INPUT", "{:#}", twice.body);
    assert_eq!(
        app.admin(READ, json!({"t": t})).await.ok()["transaction"]["operations"],
        6
    );

    let committed = app.as_session(&ann, COMMIT, json!({"t": t})).await.ok();
    assert_eq!(committed["updateTransaction"]["status"], "committed");
    let document = stored(&app, &id).await;
    assert_eq!(document["data"]["name"], "Bulk");
    assert_eq!(document["data"]["count"], 3);
    assert!(stored(&app, "brief").await.is_null());

    // Only the user commits what they staged (a key's reach is not theirs),
    // without the times only a key sets.
    let t = app.as_session(&ann, OPEN, json!({})).await.ok()["createTransaction"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    app.as_session(
        &ann,
        STAGE,
        json!({"t": t, "ops": [op("create", Some("dated"), json!({"name": "Dated", "$createdAt": "2001-01-01T00:00:00.000Z"}))]}),
    )
    .await
    .ok();
    let by_key = app.admin(COMMIT, json!({"t": t})).await;
    assert_eq!(by_key.code(), "PERMISSION_DENIED", "{:#}", by_key.body);
    let by_ann = app.as_session(&ann, COMMIT, json!({"t": t})).await.ok();
    assert_eq!(by_ann["updateTransaction"]["status"], "committed");
    let dated = app
        .admin(
            "{ document(databaseId: \"ledger\", collectionId: \"notes\", id: \"dated\") { createdAt } }",
            json!({}),
        )
        .await
        .ok();
    let created = dated["document"]["createdAt"].as_str().unwrap();
    assert!(!created.starts_with("2001"), "{created}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_transaction_announces_its_writes_when_committed_and_ends_when_it_expires() {
    use crate::event_log_rows::{create_counter, live_counters, next_document_event};
    use crate::helpers::WAIT;

    let (app, mut live, _) = live_counters().await;
    ledger(&app).await;

    // Staging runs the writes and undoes them: nothing is heard of them then.
    let t = open(&app).await;
    app.admin(
        STAGE,
        json!({"t": t, "ops": [
            op("create", Some("e1"), json!({"name": "One"})),
            op("create", Some("e2"), json!({"name": "Two"})),
        ]}),
    )
    .await
    .ok();
    create_counter(&app, "marker", 1).await;
    let heard = next_document_event(&mut live, WAIT)
        .await
        .expect("the marker's event");
    assert_eq!(heard["payload"]["$id"], "marker");

    // Committed, each write is heard once, in order.
    app.admin(COMMIT, json!({"t": t})).await.ok();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let event = next_document_event(&mut live, WAIT)
            .await
            .expect("a committed write's event");
        ids.push(event["payload"]["$id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids, ["e1", "e2"]);

    // Past its time it takes nothing, and the next one opened prunes it.
    let late = open(&app).await;
    let pool = app.server.as_ref().unwrap().state().db.pool();
    sqlx::query("UPDATE document_transactions SET expires_at = 1 WHERE id = ?")
        .bind(&late)
        .execute(pool)
        .await
        .unwrap();
    for (query, variables) in [
        (COMMIT, json!({"t": late})),
        (
            STAGE,
            json!({"t": late, "ops": [op("create", Some("e3"), json!({"name": "Three"}))]}),
        ),
    ] {
        let expired = app.admin(query, variables).await;
        assert_eq!(expired.code(), "TRANSACTION_EXPIRED", "{:#}", expired.body);
    }
    open(&app).await;
    let pruned = app.admin(READ, json!({"t": late})).await;
    assert_eq!(pruned.code(), "TRANSACTION_NOT_FOUND");
    assert!(stored(&app, "e3").await.is_null());
    app.shutdown().await;
}

/// A commit runs its operations with the committer's permissions, so only the
/// user who staged a transaction commits it (a key may read and roll it back),
/// and a commit tells its user of a later change only to a document they may
/// read: a change to one they may not is refused as its operation is, whatever
/// staging let through behind an operation left to the commit.
#[tokio::test]
async fn a_users_transaction_is_committed_by_that_user_and_tells_nothing_unreadable() {
    let app = spawn_app().await;
    ledger(&app).await;
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {"databaseId": "ledger", "id": "vault", "name": "vault", "permissions": [],
            "attributes": [{"key": "name", "type": "STRING", "size": 50, "required": true}]}}),
    )
    .await
    .ok();
    const ADD: &str = "mutation($c: ID!, $id: ID!, $data: JSON!) { createDocument(input: {databaseId: \"ledger\", collectionId: $c, id: $id, data: $data}) { id } }";
    app.admin(
        ADD,
        json!({"c": "vault", "id": "secret", "data": {"name": "gold"}}),
    )
    .await
    .ok();
    let uma = app.signed_in("uma@example.com").await;
    let open_as_uma = || async {
        app.as_session(&uma, OPEN, json!({})).await.ok()["createTransaction"]["id"]
            .as_str()
            .unwrap()
            .to_string()
    };

    // Staged by a user, committed by a key: refused, and rolled back instead.
    let t = open_as_uma().await;
    app.as_session(
        &uma,
        STAGE,
        json!({"t": t, "ops": [op("create", Some("u1"), json!({"name": "one"}))]}),
    )
    .await
    .ok();
    let by_key = app.admin(COMMIT, json!({"t": t})).await;
    assert_eq!(by_key.code(), "PERMISSION_DENIED", "{:#}", by_key.body);
    assert!(stored(&app, "u1").await.is_null());
    let rolled = app.admin(ROLLBACK, json!({"t": t})).await.ok();
    assert_eq!(rolled["updateTransaction"]["status"], "failed");

    // What the user's own update of the vault is answered.
    let vault_update = |id: &str| {
        json!({"action": "update", "databaseId": "ledger", "collectionId": "vault",
            "documentId": id, "data": {"name": "lead"}})
    };
    let direct = app
        .as_session(
            &uma,
            "mutation { updateDocument(input: {databaseId: \"ledger\", collectionId: \"vault\", id: \"secret\", data: {name: \"lead\"}}) { id } }",
            json!({}),
        )
        .await;
    let refused_code = direct.code().to_string();
    assert_ne!(refused_code, "<none>", "{:#}", direct.body);

    // An id taken leaves the first operation to the commit; the vault update
    // behind it is staged, the vault's document changes, the id is freed.
    app.as_session(
        &uma,
        ADD,
        json!({"c": "notes", "id": "mine", "data": {"name": "m"}}),
    )
    .await
    .ok();
    let t = open_as_uma().await;
    app.as_session(
        &uma,
        STAGE,
        json!({"t": t, "ops": [op("create", Some("mine"), json!({"name": "again"})), vault_update("secret")]}),
    )
    .await
    .ok();
    app.admin(
        "mutation { updateDocument(input: {databaseId: \"ledger\", collectionId: \"vault\", id: \"secret\", data: {name: \"silver\"}}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.as_session(
        &uma,
        "mutation { deleteDocument(input: {databaseId: \"ledger\", collectionId: \"notes\", id: \"mine\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    let commit = app.as_session(&uma, COMMIT, json!({"t": t})).await;
    assert_eq!(commit.code(), refused_code, "{:#}", commit.body);
    let secret = app
        .admin(DOCUMENT, json!({"c": "vault", "id": "secret"}))
        .await
        .ok();
    assert_eq!(secret["document"]["data"]["name"], "silver");
    assert!(stored(&app, "mine").await.is_null(), "nothing of it kept");
    app.shutdown().await;
}
