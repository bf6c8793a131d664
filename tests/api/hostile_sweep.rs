//! What an attacker sends to the GraphQL endpoint and the WebSocket, each answered
//! with a coded error in bounded time and size: searches of thousands of words,
//! introspection repeated under aliases on a project with many collections,
//! documents that repeat an argument or a variable thousands of times, odd bytes
//! in cursors and ids, pages past the largest, persisted-query ids, variables
//! nested thousands deep, and batches past the cap. (Depth, complexity, alias,
//! directive and fragment bombs, slow readers and the socket and subscription
//! caps have their tests in `limits`, `security_limits`, `security_load` and
//! `realtime`.)

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, WsClient, spawn_app};

/// Longest any of these refusals may take on a loaded test machine: each is
/// decided before the expensive part, in milliseconds.
const QUICK: Duration = Duration::from_secs(5);

async fn timed(app: &TestApp, body: Value, key: bool) -> (Answer, Duration) {
    let started = Instant::now();
    let answer = if key {
        app.post(body, &[("x-nimbus-key", &app.admin_key)]).await
    } else {
        app.post(body, &[]).await
    };
    (answer, started.elapsed())
}

/// The code of a WebSocket answer: an `error` message's first error, or that
/// of a `next` message's `errors`.
fn ws_code(message: &Value) -> &str {
    message["payload"]["errors"][0]["extensions"]["code"]
        .as_str()
        .or(message["payload"][0]["extensions"]["code"].as_str())
        .unwrap_or("<none>")
}

/// The database `db` the collections of these tests live in.
async fn database_db(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"db\", name: \"db\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
}

async fn notes(app: &TestApp) {
    database_db(app).await;
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {"databaseId": "db", "id": "notes", "name": "notes",
                          "permissions": ["read(\"any\")"],
                          "attributes": [{"key": "body", "type": "STRING", "size": 10000}],
                          "indexes": [{"key": "words", "type": "FULLTEXT", "attributes": ["body"]}]}}),
    )
    .await
    .ok();
    let notes: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("n{i}"), "body": format!("alpha beta gamma note{i}")}))
        .collect();
    app.admin(
        "mutation($n: [CreateNoteInput!]!) { createNotes(input: $n) { id } }",
        json!({"n": notes}),
    )
    .await
    .ok();
}

/// Database `db` with the collection `id`: one string attribute `body` of `size`
/// characters, with `permissions`.
async fn bodies(app: &TestApp, id: &str, permissions: Value, size: u32) {
    database_db(app).await;
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {"databaseId": "db", "id": id, "name": id, "permissions": permissions,
                          "attributes": [{"key": "body", "type": "STRING", "size": size}]}}),
    )
    .await
    .ok();
}

#[tokio::test]
async fn a_search_of_thousands_of_words_is_refused_before_it_reaches_the_index() {
    let app = spawn_app().await;
    notes(&app).await;
    let typed = "query($f: NoteFilter) { notes(filter: $f, first: 5) { totalCount } }";
    let words = |n: usize| vec!["alpha"; n].join(" ");

    let found = app
        .post(
            json!({"query": typed, "variables": {"f": {"body": {"search": words(32)}}}}),
            &[],
        )
        .await
        .ok();
    assert_eq!(found["notes"]["totalCount"], 20, "32 words are allowed");

    let (refused, took) = timed(
        &app,
        json!({"query": typed, "variables": {"f": {"body": {"search": words(200_000)}}}}),
        false,
    )
    .await;
    assert_eq!(refused.code(), "FILTER_TOO_COMPLEX", "{:#}", refused.body);
    assert!(took < QUICK, "{took:?}");

    // Words count towards the conditions of the whole filter.
    let many: Vec<Value> = (0..4)
        .map(|_| json!({"body": {"search": words(30)}}))
        .collect();
    let spread = app
        .post(
            json!({"query": typed, "variables": {"f": {"and": many}}}),
            &[],
        )
        .await;
    assert_eq!(spread.code(), "FILTER_TOO_COMPLEX", "{:#}", spread.body);

    // The same bound on the generic list's queries and a subscription's filter.
    let queries =
        [json!({"method": "search", "attribute": "body", "values": [words(33)]}).to_string()];
    let generic = app
        .post(
            json!({"query": "query($q: [String!]) { documents(databaseId: \"db\", collectionId: \"notes\", queries: $q) { total } }",
                   "variables": {"q": queries}}),
            &[],
        )
        .await;
    assert_eq!(generic.code(), "FILTER_TOO_COMPLEX", "{:#}", generic.body);
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({})).await.unwrap();
    ws.subscribe(
        "s",
        &format!(
            "subscription {{ noteChanged(filter: {{body: {{search: \"{}\"}}}}) {{ type }} }}",
            words(40)
        ),
    )
    .await;
    let message = ws.next_json().await.unwrap();
    assert_eq!(ws_code(&message), "FILTER_TOO_COMPLEX", "{message}");
    app.shutdown().await;
}

const INTROSPECTION: &str = "__schema { types { name kind fields { name args { name } type { name kind ofType { name } } } } }";

#[tokio::test]
async fn introspection_repeated_under_aliases_is_refused_for_any_caller() {
    let app = spawn_app().await;
    database_db(&app).await;
    // A schema of some size: every collection adds types and root fields.
    for i in 0..30 {
        let attributes: Vec<Value> = (0..10)
            .map(|a| json!({"key": format!("f{a}"), "type": "STRING", "size": 20}))
            .collect();
        app.admin(
            "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
            json!({"input": {"databaseId": "db", "id": format!("c{i}"), "name": format!("thing{i}"),
                              "attributes": attributes}}),
        )
        .await
        .ok();
    }
    let one = app
        .post(json!({"query": format!("{{ {INTROSPECTION} }}")}), &[])
        .await
        .ok();
    let size = one.to_string().len();
    assert!(size > 100_000, "the schema is large: {size} bytes");

    // The console's own question, a type and the schema, is allowed.
    app.post(
        json!({"query": "{ __type(name: \"Query\") { name } __schema { queryType { name } } }"}),
        &[],
    )
    .await
    .ok();

    let aliased: String = (0..100)
        .map(|i| format!("a{i}: {INTROSPECTION} "))
        .collect();
    for (query, key) in [
        (format!("{{ {aliased} }}"), false),
        (format!("{{ {aliased} }}"), true),
        // Through a fragment spread twice, and an inline fragment.
        (
            format!(
                "{{ ...F a: __type(name: \"Query\") {{ name }} }} fragment F on Query {{ x: {INTROSPECTION} y: {INTROSPECTION} }}"
            ),
            false,
        ),
        (
            format!(
                "{{ a: {INTROSPECTION} ... on Query {{ b: {INTROSPECTION} c: {INTROSPECTION} }} }}"
            ),
            false,
        ),
    ] {
        let (refused, took) = timed(&app, json!({"query": query}), key).await;
        assert_eq!(refused.code(), "QUERY_TOO_COMPLEX", "{:#}", refused.body);
        assert!(
            refused.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("introspection"),
            "{:#}",
            refused.body
        );
        assert!(took < QUICK, "{took:?}");
    }

    // The same over the WebSocket.
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({})).await.unwrap();
    ws.send(
        json!({"id": "q", "type": "subscribe", "payload": {"query": format!("{{ {aliased} }}")}}),
    )
    .await;
    let message = ws.next_json().await.unwrap();
    assert_eq!(ws_code(&message), "QUERY_TOO_COMPLEX", "{message}");
    app.shutdown().await;
}

#[tokio::test]
async fn repeated_arguments_and_variables_get_a_bounded_list_of_errors() {
    let app = spawn_app().await;
    let repeated_argument = format!(
        "{{ users({}) {{ totalCount }} }}",
        vec!["first: 1"; 20_000].join(", ")
    );
    let repeated_variable = format!(
        "query({}) {{ __typename }}",
        vec!["$v: Int"; 20_000].join(", ")
    );
    let unused_variables = format!(
        "query({}) {{ __typename }}",
        (0..15_000)
            .map(|i| format!("$v{i}: Int"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for query in [repeated_argument, repeated_variable, unused_variables] {
        let sent = query.len();
        let (answer, took) = timed(&app, json!({"query": query}), true).await;
        assert!(took < QUICK, "{took:?}");
        let errors = answer.body["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 101, "100 and the count of the rest");
        assert!(
            errors
                .iter()
                .all(|e| e["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"),
            "{errors:?}"
        );
        let last = errors[100]["message"].as_str().unwrap();
        assert!(
            last.ends_with("more validation errors were left out"),
            "{last}"
        );
        let answered = answer.body.to_string().len();
        assert!(
            answered < sent,
            "an answer of {answered} bytes to a query of {sent}"
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn odd_bytes_huge_pages_and_batches_are_coded_refusals() {
    let app = spawn_app().await;
    notes(&app).await;
    let page = "query($a: String, $n: Int) { notes(first: $n, after: $a) { totalCount } }";
    for cursor in [
        "\u{0}\u{ffff}%%%".to_string(),
        "eyJ4IjoxfQ".to_string(),
        "A".repeat(1_000_000),
    ] {
        let (answer, took) = timed(
            &app,
            json!({"query": page, "variables": {"a": cursor, "n": 2}}),
            false,
        )
        .await;
        assert_eq!(answer.code(), "INVALID_CURSOR", "{:#}", answer.body);
        assert!(took < QUICK, "{took:?}");
    }
    for first in [1001, i64::from(i32::MAX)] {
        let answer = app
            .post(json!({"query": page, "variables": {"n": first}}), &[])
            .await;
        assert_eq!(answer.code(), "BAD_USER_INPUT", "{:#}", answer.body);
    }
    let generic = "query($q: [String!]) { documents(databaseId: \"db\", collectionId: \"notes\", queries: $q) { total } }";
    for query in [
        json!({"method": "limit", "values": [1_000_000_000]}),
        json!({"method": "offset", "values": [-1]}),
        json!({"method": "offset", "values": [i64::MAX]}),
        json!({"method": "limit", "values": [1.5e308]}),
    ] {
        let answer = app
            .post(
                json!({"query": generic, "variables": {"q": [query.to_string()]}}),
                &[],
            )
            .await;
        assert_eq!(answer.code(), "QUERY_INVALID", "{query}: {:#}", answer.body);
    }
    // Ids with odd bytes read as ids nothing has.
    let missing = app
        .post(
            json!({"query": "query($i: ID!) { note(id: $i) { id } }", "variables": {"i": "a\u{0}b"}}),
            &[],
        )
        .await
        .ok();
    assert_eq!(missing["note"], Value::Null);
    // Persisted-query ids are not taken for a query, and variables nested past
    // the JSON reader's depth are refused as a body.
    let persisted = app
        .post(
            json!({"extensions": {"persistedQuery": {"version": 1, "sha256Hash": "ab".repeat(32)}}}),
            &[],
        )
        .await;
    assert_eq!(
        (persisted.status, persisted.code()),
        (400, "BAD_REQUEST"),
        "{:#}",
        persisted.body
    );
    let deep = format!(
        "{{\"query\": \"{{ __typename }}\", \"variables\": {{\"d\": {}1{}}}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    let started = Instant::now();
    let response = app
        .client
        .post(format!("{}/v1/graphql", app.url))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "BAD_REQUEST",
        "{body}"
    );
    assert!(started.elapsed() < QUICK);
    // A batch past the cap is refused whole.
    let batch: Vec<Value> = (0..11)
        .map(|_| json!({"query": "{ __typename }"}))
        .collect();
    let refused = app.post(json!(batch), &[]).await;
    assert_eq!(refused.code(), "BATCH_TOO_LARGE", "{:#}", refused.body);
    app.shutdown().await;
}

#[tokio::test]
async fn a_date_time_whose_offset_leaves_years_0000_to_9999_is_refused() {
    let app = spawn_app().await;
    let key = "mutation($at: DateTime) { createApiKey(input: {name: \"late\", scopes: [\"users.read\"], expiresAt: $at}) { apiKey { id expiresAt } } }";
    // Texts within years 0000 to 9999 whose offsets carry them out in UTC.
    for at in ["9999-12-31T23:59:59-23:59", "0000-01-01T00:00:00+00:01"] {
        let answer = app.admin(key, json!({ "at": at })).await;
        assert_eq!(
            answer.code(),
            "GRAPHQL_VALIDATION_FAILED",
            "{at}: {:#}",
            answer.body
        );
    }
    let keys = app
        .admin("{ apiKeys { nodes { name expiresAt } } }", json!({}))
        .await
        .ok();
    assert!(
        !keys["apiKeys"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k["name"] == "late"),
        "nothing was stored: {keys:#}"
    );
    let last = app
        .admin(key, json!({ "at": "9999-12-31T23:59:59.999Z" }))
        .await
        .ok();
    assert_eq!(
        last["createApiKey"]["apiKey"]["expiresAt"],
        "9999-12-31T23:59:59.999Z"
    );
    let usage = "query($from: DateTime) { usage(from: $from, interval: DAY) { from } }";
    let answer = app
        .admin(usage, json!({ "from": "0000-01-01T00:00:00+23:59" }))
        .await;
    assert_eq!(
        answer.code(),
        "GRAPHQL_VALIDATION_FAILED",
        "{:#}",
        answer.body
    );
    // Written in the query, the scalar's own check refuses it too.
    let answer = app
        .admin(
            "{ usage(from: \"0000-01-01T00:00:00+23:59\", interval: DAY) { from } }",
            json!({}),
        )
        .await;
    assert_eq!(
        answer.code(),
        "GRAPHQL_VALIDATION_FAILED",
        "{:#}",
        answer.body
    );
    app.shutdown().await;
}

#[tokio::test]
async fn subscription_filters_read_a_bounded_amount_of_text_of_each_change() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path()).await;
    // Two filters of one condition on a body of a million characters, not three.
    config.ws_max_filter_text_per_client = 2_500_000;
    let app = crate::helpers::spawn_with(config, dir).await;
    bodies(
        &app,
        "essays",
        json!(["read(\"any\")", "create(\"any\")"]),
        1_000_000,
    )
    .await;
    let conditions = |n: usize| {
        let or: Vec<String> = (0..n)
            .map(|i| format!("{{body: {{contains: \"zq{i}\"}}}}"))
            .collect();
        format!(
            "subscription {{ essayChanged(filter: {{or: [{}]}}) {{ type node {{ id }} }} }}",
            or.join(", ")
        )
    };
    // Each condition may read the whole body of each changed essay: a hundred
    // would read a hundred million characters per change.
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({})).await.unwrap();
    ws.subscribe("wide", &conditions(100)).await;
    let message = ws.next_json().await.unwrap();
    assert_eq!(ws_code(&message), "FILTER_TOO_COMPLEX", "{message}");
    assert_eq!(ws.next_json().await.unwrap()["type"], "complete");

    ws.subscribe("one", &conditions(1)).await;
    let mut other = WsClient::connect(&app.ws_url, false).await;
    other.init(json!({})).await.unwrap();
    other.subscribe("two", &conditions(1)).await;
    other.subscribe("three", &conditions(1)).await;
    let refused = other.next_json().await.unwrap();
    assert_eq!(refused["id"], "three", "{refused}");
    assert_eq!(ws_code(&refused), "TOO_MANY_SUBSCRIPTIONS", "{refused}");

    // The two admitted still hear what matches them.
    let body = format!("{} zq0", "word ".repeat(100_000));
    app.post(
        json!({"query": "mutation($b: String!) { createEssay(input: {id: \"e1\", body: $b}) { id } }", "variables": {"b": body}}),
        &[],
    )
    .await
    .ok();
    for (socket, id) in [(&mut ws, "one"), (&mut other, "two")] {
        let heard = loop {
            let message = socket.next_json().await.unwrap();
            if message["id"] == id && message["type"] == "next" {
                break message;
            }
        };
        assert_eq!(
            heard["payload"]["data"]["essayChanged"]["node"]["id"], "e1",
            "{heard}"
        );
    }
    // A socket's share is given back when it closes.
    drop(ws);
    let mut attempt = 0;
    crate::webhooks::eventually("the closed socket's share is freed", || {
        attempt += 1;
        let (app, query) = (&app, conditions(1));
        async move {
            let mut again = WsClient::connect(&app.ws_url, false).await;
            again.init(json!({})).await.unwrap();
            again.subscribe("again", &query).await;
            let id = format!("later{attempt}");
            app.post(
                json!({"query": "mutation($id: ID!) { createEssay(input: {id: $id, body: \"zq0\"}) { id } }", "variables": {"id": id}}),
                &[],
            )
            .await
            .ok();
            let message = again.next_json().await.unwrap();
            (message["payload"]["data"]["essayChanged"]["node"]["id"] == id.as_str()).then_some(())
        }
    })
    .await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_bulk_deletes_filter_does_not_hold_up_other_writes() {
    let app = spawn_app().await;
    bodies(
        &app,
        "piles",
        json!(["read(\"any\")", "create(\"any\")", "delete(\"any\")"]),
        200000,
    )
    .await;
    for round in 0..4 {
        let piles: Vec<Value> = (0..15)
            .map(|i| json!({"id": format!("p{round}x{i}"), "body": format!("{} {i}", "lorem ".repeat(16_000))}))
            .collect();
        app.admin(
            "mutation($p: [CreatePileInput!]!) { createPiles(input: $p) { id } }",
            json!({"p": piles}),
        )
        .await
        .ok();
    }
    // Nothing matches, and finding that out reads every body ninety times over.
    let or: Vec<String> = (0..90)
        .map(|i| format!("{{body: {{contains: \"absent{i}\"}}}}"))
        .collect();
    let fields: Vec<String> = (0..3)
        .map(|a| {
            format!(
                "a{a}: deletePiles(input: {{filter: {{or: [{}]}}}}) {{ deletedIds }}",
                or.join(", ")
            )
        })
        .collect();
    let stall = format!("mutation {{ {} }}", fields.join(" "));
    let deleting = {
        let (url, stall) = (app.url.clone(), stall.clone());
        tokio::spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/graphql"))
                .json(&json!({ "query": stall }))
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        })
    };
    // Other clients' writes go on while the filter is read.
    let mut written_meanwhile = 0;
    let mut n = 0;
    while !deleting.is_finished() {
        n += 1;
        let created = app
            .post(
                json!({"query": "mutation($id: ID!) { createPile(input: {id: $id, body: \"x\"}) { id } }", "variables": {"id": format!("meanwhile{n}")}}),
                &[],
            )
            .await
            .ok();
        assert_eq!(created["createPile"]["id"], format!("meanwhile{n}"));
        if !deleting.is_finished() {
            written_meanwhile += 1;
        }
    }
    let answer = deleting.await.unwrap();
    assert_eq!(answer["data"]["a0"]["deletedIds"], json!([]), "{answer:#}");
    assert!(
        written_meanwhile >= 3,
        "writes waited for the bulk delete's filter: {written_meanwhile} went through meanwhile"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_answer_that_grows_past_its_limit_is_stopped_with_a_code() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path()).await;
    config.graphql_max_response_bytes = 1_000_000;
    let app = crate::helpers::spawn_with(config, dir).await;
    bodies(&app, "tomes", json!(["read(\"any\")"]), 100000).await;
    let tomes: Vec<Value> = (0..4)
        .map(|i| json!({"id": format!("t{i}"), "body": "a".repeat(100_000)}))
        .collect();
    app.admin(
        "mutation($t: [CreateTomeInput!]!) { createTomes(input: $t) { id } }",
        json!({"t": tomes}),
    )
    .await
    .ok();
    // 400 kB: within the limit.
    let once = app
        .post(
            json!({"query": "{ tomes(first: 10) { nodes { body } } }"}),
            &[],
        )
        .await
        .ok();
    assert_eq!(once["tomes"]["nodes"].as_array().unwrap().len(), 4);
    // The same page under five aliases, typed and as the generic list's JSON.
    let aliases = |field: &str| {
        (0..5)
            .map(|a| format!("a{a}: {field}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    for query in [
        format!("{{ {} }}", aliases("tomes(first: 10) { nodes { body } }")),
        format!(
            "{{ {} }}",
            aliases(
                "documents(databaseId: \"db\", collectionId: \"tomes\") { documents { data } }"
            )
        ),
    ] {
        let (answer, took) = timed(&app, json!({ "query": query }), false).await;
        assert_eq!(
            answer.code(),
            "RESPONSE_TOO_LARGE",
            "{query}: {}",
            answer.body["errors"]
        );
        assert!(
            answer.body["data"].is_null(),
            "nothing of the answer is sent"
        );
        assert!(took < QUICK, "{took:?}");
    }
    app.shutdown().await;
}
