//! `$sequence`: each document's number in the order its collection's documents
//! were made, whichever way it was made (alone, in a shared insert, several in
//! one request, upserted), shown by the generic and the typed API and in its
//! events (live and replayed from the log), kept by updates, and filtered and
//! ordered by.

use serde_json::{Value, json};

use crate::event_log_rows::{first_replayed, live_counters, next_document_event};
use crate::helpers::{TestApp, WAIT};

const CREATE: &str =
    "mutation($input: CreateDocumentInput!) { createDocument(input: $input) { id sequence } }";

async fn created(app: &TestApp, id: &str, n: i64) -> Value {
    app.admin(
        CREATE,
        json!({"input": {"databaseId": "log", "collectionId": "counters", "id": id, "data": {"n": n}}}),
    )
    .await
    .ok()["createDocument"]
        .clone()
}

/// The ids and sequences of the counters `queries` list.
async fn listed(app: &TestApp, queries: &[String]) -> Vec<(String, String)> {
    let answer = app
        .admin(
            "query($q: [String!]) { documents(databaseId: \"log\", collectionId: \"counters\", queries: $q) { documents { id sequence } } }",
            json!({"q": queries}),
        )
        .await
        .ok();
    answer["documents"]["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["id"].as_str().unwrap().to_string(),
                d["sequence"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn number(sequence: &Value) -> i64 {
    sequence
        .as_str()
        .unwrap_or_else(|| panic!("a sequence is a string: {sequence}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn documents_are_numbered_in_the_order_they_were_made() {
    let (app, mut live, cursor) = live_counters().await;

    // Ids against the order of making, so that neither order stands in for the other.
    let alone = created(&app, "z-alone", 1).await;
    let heard = next_document_event(&mut live, WAIT)
        .await
        .expect("the live event");
    assert_eq!(heard["payload"]["$id"], "z-alone");
    assert_eq!(heard["payload"]["$sequence"], alone["sequence"], "{heard}");

    let many = app
        .admin(
            "mutation($docs: [JSON!]!) { createDocuments(input: {databaseId: \"log\", collectionId: \"counters\", documents: $docs}) { id sequence } }",
            json!({"docs": [{"$id": "m-second", "n": 2}, {"$id": "b-third", "n": 3}]}),
        )
        .await
        .ok()["createDocuments"]
        .clone();
    let upserted = app
        .admin(
            "mutation { upsertDocument(input: {databaseId: \"log\", collectionId: \"counters\", id: \"a-fourth\", data: {n: 4}}) { id sequence } }",
            json!({}),
        )
        .await
        .ok()["upsertDocument"]
        .clone();
    let sequences = [
        number(&alone["sequence"]),
        number(&many[0]["sequence"]),
        number(&many[1]["sequence"]),
        number(&upserted["sequence"]),
    ];
    assert!(
        sequences.windows(2).all(|pair| pair[0] < pair[1]),
        "in the order made: {sequences:?}"
    );

    // Every read shows the same number; an update keeps it.
    let read = app
        .admin(
            "{ document(databaseId: \"log\", collectionId: \"counters\", id: \"m-second\") { sequence } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(read["document"]["sequence"], many[0]["sequence"]);
    let updated = app
        .admin(
            "mutation { updateDocument(input: {databaseId: \"log\", collectionId: \"counters\", id: \"m-second\", data: {n: 20}}) { sequence } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(updated["updateDocument"]["sequence"], many[0]["sequence"]);
    // `$sequence` in the data written is Appwrite's read-only field: ignored.
    let ignored = app
        .admin(
            "mutation($data: JSON) { updateDocument(input: {databaseId: \"log\", collectionId: \"counters\", id: \"b-third\", data: $data}) { sequence } }",
            json!({"data": {"n": 30, "$sequence": 9999}}),
        )
        .await
        .ok();
    assert_eq!(ignored["updateDocument"]["sequence"], many[1]["sequence"]);

    // Ordered by, and filtered with a string or a number.
    let made = [
        ("z-alone", &alone),
        ("m-second", &many[0]),
        ("b-third", &many[1]),
        ("a-fourth", &upserted),
    ];
    let ids: Vec<String> = made.iter().map(|(id, _)| id.to_string()).collect();
    let in_ours = json!({"method": "equal", "attribute": "$id", "values": ids}).to_string();
    let newest_first = listed(
        &app,
        &[
            in_ours.clone(),
            r#"{"method":"orderDesc","attribute":"$sequence"}"#.into(),
        ],
    )
    .await;
    let expected: Vec<(String, String)> = made
        .iter()
        .rev()
        .map(|(id, document)| {
            (
                id.to_string(),
                document["sequence"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(newest_first, expected);
    let third = many[1]["sequence"].as_str().unwrap();
    for value in [json!(third), json!(number(&many[1]["sequence"]))] {
        let found = listed(
            &app,
            &[json!({"method": "equal", "attribute": "$sequence", "values": [value]}).to_string()],
        )
        .await;
        assert_eq!(found, [("b-third".to_string(), third.to_string())]);
    }
    let after_second = listed(
        &app,
        &[
            in_ours,
            json!({"method": "greaterThan", "attribute": "$sequence", "values": [many[0]["sequence"]]})
                .to_string(),
            r#"{"method":"orderAsc","attribute":"$sequence"}"#.into(),
        ],
    )
    .await;
    let after_ids: Vec<&str> = after_second.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(after_ids, ["b-third", "a-fourth"]);
    let refused = app
        .admin(
            "query($q: [String!]) { documents(databaseId: \"log\", collectionId: \"counters\", queries: $q) { total } }",
            json!({"q": [r#"{"method":"equal","attribute":"$sequence","values":["twelve"]}"#]}),
        )
        .await;
    assert_eq!(refused.code(), "FILTER_INVALID");

    // The typed API shows it and orders by it.
    let typed = app
        .admin(
            "{ counters(orderBy: [{sequence: DESC}], first: 1) { nodes { id sequence } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        typed["counters"]["nodes"],
        json!([{"id": "a-fourth", "sequence": upserted["sequence"]}])
    );

    // … and filters by it, a decimal string compared as a number.
    let later = app
        .admin(
            "query($after: String) { counters(filter: {sequence: {gt: $after}}, orderBy: [{sequence: ASC}]) { nodes { id } } }",
            json!({"after": many[0]["sequence"]}),
        )
        .await
        .ok();
    assert_eq!(
        later["counters"]["nodes"],
        json!([{"id": "b-third"}, {"id": "a-fourth"}])
    );

    // Replayed from the log, the create's event still carries its number.
    assert_eq!(first_replayed(&app, &cursor).await, heard);
    app.shutdown().await;
}
