//! GraphQL over HTTP: media types, methods, status codes and malformed requests.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn answers_json_by_default_and_graphql_response_json_when_asked() {
    let app = spawn_app().await;
    let plain = app
        .client
        .post(format!("{}/v1/graphql", app.url))
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    assert_eq!(plain.headers()["content-type"], "application/json");
    assert_eq!(
        plain.json::<Value>().await.unwrap(),
        json!({"data": {"__typename": "Query"}})
    );

    let modern = app
        .client
        .post(format!("{}/v1/graphql", app.url))
        .header(
            "accept",
            "application/graphql-response+json, application/json;q=0.9",
        )
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        modern.headers()["content-type"],
        "application/graphql-response+json"
    );

    let refused = app
        .client
        .post(format!("{}/v1/graphql", app.url))
        .header("accept", "text/html")
        .json(&json!({"query": "{ __typename }"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 406);

    // Fields come back in the order they were selected, as the spec asks.
    let ordered = app
        .client
        .post(format!("{}/v1/graphql", app.url))
        .json(&json!({"query": "{ zebra: __typename alpha: __typename }"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(ordered, r#"{"data":{"zebra":"Query","alpha":"Query"}}"#);
    app.shutdown().await;
}

#[tokio::test]
async fn request_errors_are_400_under_graphql_response_json_and_200_under_json() {
    let app = spawn_app().await;
    let modern = app
        .post(
            json!({"query": "{ __typename "}),
            &[("accept", "application/graphql-response+json")],
        )
        .await;
    assert_eq!(modern.status, 400);
    assert_eq!(modern.code(), "GRAPHQL_PARSE_FAILED");
    assert!(
        modern.body.get("data").is_none(),
        "a request error has no data entry"
    );

    let legacy = app.post(json!({"query": "{ noSuchField }"}), &[]).await;
    assert_eq!(legacy.status, 200);
    assert_eq!(legacy.code(), "GRAPHQL_VALIDATION_FAILED");
    app.shutdown().await;
}

#[tokio::test]
async fn get_runs_queries_and_refuses_mutations_with_405() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/v1/graphql", app.url))
        .query(&[
            (
                "query",
                "query Q($v: Boolean!) { __typename apiKeyScopes @include(if: $v) { name } }",
            ),
            ("variables", "{\"v\":true}"),
            ("operationName", "Q"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.json::<Value>().await.unwrap()["data"]["__typename"],
        "Query"
    );

    let mutation = app
        .client
        .get(format!("{}/v1/graphql", app.url))
        .query(&[(
            "query",
            "mutation { deleteApiKey(input: {id: \"x\"}) { deletedId } }",
        )])
        .send()
        .await
        .unwrap();
    assert_eq!(mutation.status(), 405);
    assert_eq!(mutation.headers()["allow"], "POST");
    app.shutdown().await;
}

#[tokio::test]
async fn malformed_bodies_get_bad_request_with_a_code() {
    let app = spawn_app().await;
    let send = |body: &'static str, content_type: &'static str| {
        app.client
            .post(format!("{}/v1/graphql", app.url))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let malformed = send("{\"query\": ", "application/json").await.unwrap();
    assert_eq!(malformed.status(), 400);
    assert_eq!(
        malformed.json::<Value>().await.unwrap()["errors"][0]["extensions"]["code"],
        "BAD_REQUEST"
    );

    let not_graphql = send("{\"hello\": 1}", "application/json").await.unwrap();
    assert_eq!(not_graphql.status(), 400);
    let body: Value = not_graphql.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_REQUEST");

    let form = send(
        "query=%7B__typename%7D",
        "application/x-www-form-urlencoded",
    )
    .await
    .unwrap();
    assert_eq!(form.status(), 415, "form posts would allow CSRF");

    let multipart = send("--x--", "multipart/form-data; boundary=x")
        .await
        .unwrap();
    assert_eq!(multipart.status(), 400);
    assert_eq!(
        multipart.json::<Value>().await.unwrap()["errors"][0]["extensions"]["code"],
        "CSRF_PREFLIGHT_REQUIRED"
    );

    let graphql_body = send("{ __typename }", "application/graphql").await.unwrap();
    assert_eq!(
        graphql_body.json::<Value>().await.unwrap()["data"]["__typename"],
        "Query"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_operation_names_and_wrong_variable_types_are_coded() {
    let app = spawn_app().await;
    let unknown = app
        .post(
            json!({"query": "query A { __typename } query B { __typename }", "operationName": "C"}),
            &[],
        )
        .await;
    assert_eq!(unknown.code(), "OPERATION_NOT_FOUND");

    let wrong = app
        .admin(
            "query($first: Int) { projects(first: $first) { totalCount } }",
            json!({"first": "ten"}),
        )
        .await;
    assert!(wrong.body["errors"].is_array(), "{:#}", wrong.body);
    assert!(
        ["GRAPHQL_VALIDATION_FAILED", "BAD_USER_INPUT"].contains(&wrong.code()),
        "code {}",
        wrong.code()
    );
    app.shutdown().await;
}

#[tokio::test]
async fn batches_run_in_order_and_are_capped() {
    let app = spawn_app().await;
    let batch = app
        .post(
            json!([{"query": "{ __typename }"}, {"query": "{ apiKeyScopes { name } }"}]),
            &[],
        )
        .await;
    assert_eq!(batch.status, 200);
    assert_eq!(batch.body[0]["data"]["__typename"], "Query");
    assert_eq!(batch.body[1]["data"]["apiKeyScopes"][0]["name"], "admin");

    let too_many: Vec<Value> = (0..11)
        .map(|_| json!({"query": "{ __typename }"}))
        .collect();
    let refused = app.post(Value::Array(too_many), &[]).await;
    assert_eq!(refused.status, 400);
    assert_eq!(refused.code(), "BATCH_TOO_LARGE");
    app.shutdown().await;
}

#[tokio::test]
async fn a_ten_mebibyte_query_is_refused_before_parsing() {
    let app = spawn_app().await;
    let huge = format!("{{ {} }}", "__typename ".repeat(1024 * 1024));
    let answer = app.post(json!({"query": huge}), &[]).await;
    assert_eq!(answer.status, 413);
    assert_eq!(answer.code(), "REQUEST_TOO_LARGE");
    app.shutdown().await;
}

#[tokio::test]
async fn subscriptions_over_http_point_to_the_websocket() {
    let app = spawn_app().await;
    let answer = app
        .post(
            json!({"query": "subscription { realtime(channels: [\"keys\"]) { events } }"}),
            &[],
        )
        .await;
    assert_eq!(answer.code(), "SUBSCRIPTION_OVER_HTTP");
    app.shutdown().await;
}

#[tokio::test]
async fn unknown_endpoints_answer_404_json() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/v2/nothing", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert_eq!(
        response.json::<Value>().await.unwrap()["errors"][0]["extensions"]["code"],
        "NOT_FOUND"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_field_error_names_the_field_by_its_path() {
    let app = spawn_app().await;
    let answer = app
        .post(
            json!({"query": "{ __typename them: users { totalCount } }"}),
            &[],
        )
        .await;
    assert_ne!(answer.code(), "<none>", "{:#}", answer.body);
    assert_eq!(
        answer.body["errors"][0]["path"],
        json!(["them"]),
        "{:#}",
        answer.body
    );
    assert_eq!(
        answer.body["data"]["__typename"], "Query",
        "{:#}",
        answer.body
    );
    app.shutdown().await;
}
