//! Query limits: depth, complexity, aliases, fragment cycles, query size.

use serde_json::json;

use crate::helpers::{spawn_app, spawn_with, test_config};

#[tokio::test]
async fn a_query_deeper_than_the_limit_is_refused() {
    let app = spawn_app().await;
    // __schema { types { fields { type { ofType { ofType ... } } } } } nests past 15.
    let deep = format!(
        "{{ __schema {{ types {{ fields {{ type {{ {} name {} }} }} }} }} }}",
        "ofType { ".repeat(14),
        "} ".repeat(14)
    );
    // Refused every time: only queries that passed are remembered as validated.
    for _ in 0..2 {
        let answer = app
            .post(
                json!({"query": deep}),
                &[("accept", "application/graphql-response+json")],
            )
            .await;
        assert_eq!(answer.status, 400);
        assert_eq!(answer.code(), "QUERY_TOO_DEEP");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_query_over_the_complexity_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.graphql_max_complexity = 10;
    let app = spawn_with(config, dir).await;
    let under = (0..2)
        .map(|i| format!("s{i}: apiKeyScopes {{ name }}"))
        .collect::<Vec<_>>()
        .join(" ");
    app.post(json!({"query": format!("{{ {under} }}")}), &[])
        .await
        .ok();
    let over = (0..6)
        .map(|i| format!("s{i}: apiKeyScopes {{ name }}"))
        .collect::<Vec<_>>()
        .join(" ");
    let answer = app
        .post(json!({"query": format!("{{ {over} }}")}), &[])
        .await;
    assert_eq!(answer.code(), "QUERY_TOO_COMPLEX", "{:#}", answer.body);
    app.shutdown().await;
}

#[tokio::test]
async fn ten_thousand_aliases_are_refused_quickly() {
    let app = spawn_app().await;
    let aliases = (0..10_000)
        .map(|i| format!("a{i}: __typename"))
        .collect::<Vec<_>>()
        .join(" ");
    let started = std::time::Instant::now();
    let answer = app
        .post(json!({"query": format!("{{ {aliases} }}")}), &[])
        .await;
    assert_eq!(answer.code(), "TOO_MANY_ALIASES");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "alias check ran after validation"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn fragment_cycles_are_a_validation_error_not_a_crash() {
    let app = spawn_app().await;
    let query =
        "query { ...A } fragment A on Query { ...B } fragment B on Query { ...A __typename }";
    let answer = app.post(json!({"query": query}), &[]).await;
    assert!(
        ["GRAPHQL_VALIDATION_FAILED", "QUERY_TOO_DEEP"].contains(&answer.code()),
        "{:#}",
        answer.body
    );
    // A long chain of nested fragments that ends in a cycle.
    let mut chain = String::from("query { ...F0 }");
    for i in 0..200 {
        chain.push_str(&format!(
            " fragment F{i} on Query {{ __typename ...F{} }}",
            i + 1
        ));
    }
    chain.push_str(" fragment F200 on Query { ...F0 }");
    let answer = app.post(json!({"query": chain}), &[]).await;
    assert!(
        ["GRAPHQL_VALIDATION_FAILED", "QUERY_TOO_DEEP"].contains(&answer.code()),
        "{:#}",
        answer.body
    );
    // The server is still answering.
    assert_eq!(
        app.post(json!({"query": "{ __typename }"}), &[]).await.ok()["__typename"],
        "Query"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_query_over_the_size_limit_is_refused_with_its_own_code() {
    let app = spawn_app().await;
    // 300 KiB: under the body limit, over the query limit.
    let query = format!("{{ __typename }} #{}", "x".repeat(300 * 1024));
    let answer = app.post(json!({"query": query}), &[]).await;
    assert_eq!(answer.code(), "QUERY_TOO_LARGE");
    app.shutdown().await;
}

/// A query's validation is remembered once it passes: a later request of it with
/// variables that do not suit their arguments must be refused as the first one was.
#[tokio::test]
async fn bad_variables_are_refused_alike_before_and_after_their_query_is_remembered() {
    let app = spawn_app().await;
    let usage = "query($range: UsageRange, $from: DateTime, $interval: UsageInterval!, \
                 $metrics: [UsageMetric!]) { usage(range: $range, from: $from, \
                 interval: $interval, metrics: $metrics) { __typename } }";
    let documents = "query($d: ID!, $c: ID!, $q: [String!]) { documents(databaseId: $d, \
                     collectionId: $c, queries: $q) { total } }";
    let create = "mutation($input: CreateDocumentInput!) { createDocument(input: $input) { id } }";
    let skip = "query($skip: Boolean!) { __typename locale @skip(if: $skip) { countryCode } }";
    let input = |extra: serde_json::Value| {
        let mut input = json!({"databaseId": "d", "collectionId": "c", "data": {}});
        input
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "input": input })
    };
    let cases = [
        // An unknown enum value, a bad custom scalar, a missing non-null value, a
        // bad list item.
        (
            usage,
            json!({"interval": "HOUR", "range": "FOREVER"}),
            "FOREVER",
        ),
        (
            usage,
            json!({"interval": "HOUR", "from": "yesterday"}),
            "DateTime",
        ),
        (
            usage,
            json!({"interval": null}),
            "\"interval\", expected type",
        ),
        (
            usage,
            json!({"interval": "DAY", "metrics": ["REQUESTS", "NOPE"]}),
            "NOPE",
        ),
        (
            documents,
            json!({"d": "d", "c": "c", "q": [1]}),
            "\"queries.0\"",
        ),
        (documents, json!({"d": "d", "c": true}), "ID"),
        // Input objects: a required field left out, an unknown field, a list of
        // lists where a list of strings belongs.
        (
            create,
            json!({"input": {"databaseId": "d", "data": {}}}),
            "collectionId",
        ),
        (create, input(json!({"nope": 1})), "nope"),
        (
            create,
            input(json!({"permissions": [["read(\"any\")"]]})),
            "permissions",
        ),
        (skip, json!({"skip": "yes"}), "Boolean"),
    ];
    for (i, (query, variables, named)) in cases.into_iter().enumerate() {
        // Its own text per case, so that the first request is the query's first.
        let query = format!("{query} # {i}");
        let bad = json!({"query": query, "variables": variables});
        let accept = [("accept", "application/graphql-response+json")];
        let first = app.post(bad.clone(), &accept).await;
        assert_eq!(first.status, 400, "{:#}", first.body);
        assert_eq!(
            first.code(),
            "GRAPHQL_VALIDATION_FAILED",
            "{:#}",
            first.body
        );
        let message = first.body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains(named), "{message}");
        // Valid without variables: remembered.
        app.post(json!({"query": query, "variables": {}}), &accept)
            .await;
        let again = app.post(bad, &accept).await;
        assert_eq!(
            (again.status, &again.body),
            (first.status, &first.body),
            "{query}"
        );
    }
    // And a remembered query still runs with variables that suit it.
    let query = format!("{skip} # good");
    for (skipped, fields) in [(true, 1), (false, 2), (true, 1)] {
        let data = app
            .post(json!({"query": query, "variables": {"skip": skipped}}), &[])
            .await
            .ok();
        assert_eq!(data.as_object().unwrap().len(), fields, "{data}");
    }
    app.shutdown().await;
}

/// A missing non-null variable is the executor's to report, the same way whether
/// the query was validated before or not.
#[tokio::test]
async fn a_missing_variable_is_reported_alike_before_and_after_its_query_is_remembered() {
    let app = spawn_app().await;
    let query = "query($id: ID!) { database(id: $id) { id } }";
    let missing = app.post(json!({"query": query}), &[]).await;
    let again = app
        .post(json!({"query": query, "variables": {}}), &[])
        .await;
    assert_eq!(again.body, missing.body);
    assert_ne!(missing.code(), "<none>", "{:#}", missing.body);
    app.shutdown().await;
}
