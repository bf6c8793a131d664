//! What the event log keeps of a document: a created document's row leaves out
//! its id, its database's and collection's ids (its resource names them) and its
//! update time (its creation time), and a subscription that replays it from the
//! log still receives every field the live one did; an update keeps its own
//! update time; a row written with those fields, as before, replays as written.

use serde_json::json;

use crate::event_log_rows::{
    create_counter, document_subscriber, first_replayed, insert_text_row, live_counters,
    newest_body, next_document_event,
};
use crate::helpers::WAIT;

#[tokio::test]
async fn a_created_and_updated_document_replays_its_ids_and_times_from_rows_without_them() {
    let (app, mut live, cursor) = live_counters().await;

    create_counter(&app, "trimmed", 7).await;
    let created = next_document_event(&mut live, WAIT)
        .await
        .expect("the live create");
    let payload = &created["payload"];
    assert_eq!(payload["$id"], "trimmed");
    assert_eq!(payload["$databaseId"], "log");
    assert_eq!(payload["$collectionId"], "counters");
    assert_eq!(payload["n"], 7);
    assert!(payload["$createdAt"].is_string(), "{payload}");
    assert_eq!(payload["$updatedAt"], payload["$createdAt"]);
    let body = newest_body(&app).await;
    for implied in [
        "\"$id\"",
        "\"$databaseId\"",
        "\"$collectionId\"",
        "\"$updatedAt\"",
    ] {
        assert!(!body.contains(implied), "{implied} is stored: {body}");
    }
    assert!(body.contains("\"$createdAt\""), "{body}");
    assert!(body.contains("\"implied\":15"), "{body}");

    // A later update: its update time is its own (a millisecond past the last
    // at least), and stays in its row.
    app.admin(
        "mutation { updateCounter(input: {id: \"trimmed\", n: 8}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let updated = next_document_event(&mut live, WAIT)
        .await
        .expect("the live update");
    assert_eq!(updated["payload"]["n"], 8);
    assert_eq!(updated["payload"]["$id"], "trimmed");
    assert_ne!(
        updated["payload"]["$updatedAt"], updated["payload"]["$createdAt"],
        "{updated}"
    );
    let body = newest_body(&app).await;
    assert!(body.contains("\"$updatedAt\""), "{body}");
    assert!(!body.contains("\"$databaseId\""), "{body}");

    // Replayed from the log: the events the live subscriber received, whole.
    let mut resumed = document_subscriber(&app, Some(&cursor)).await;
    for heard in [&created, &updated] {
        let replayed = next_document_event(&mut resumed, WAIT)
            .await
            .expect("a replayed event");
        assert_eq!(&replayed, heard);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_change_row_written_with_its_ids_replays_as_it_was_written() {
    let (app, _live, cursor) = live_counters().await;

    // A change as rows held it before: its ids and both times in its document
    // (written out: a change's body begins with its kind).
    let written = r#"{"kind":"change","resource":"databases.log.collections.counters.documents.old","action":"create","id":"evt-with-ids","timestamp":1700000000000,"payload":{"$collectionId":"counters","$createdAt":"2023-11-14T22:13:20.000Z","$databaseId":"log","$id":"old","$permissions":[],"$updatedAt":"2023-11-14T22:13:20.000Z","n":3},"readRoles":["any"]}"#;
    insert_text_row(&app, written).await;

    let replayed = first_replayed(&app, &cursor).await;
    let written: serde_json::Value = serde_json::from_str(written).unwrap();
    assert_eq!(replayed["payload"], written["payload"]);
    app.shutdown().await;
}
