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
