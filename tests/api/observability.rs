//! Health, metrics and the playground.

use serde_json::{Value, json};

use crate::helpers::spawn_app;

#[tokio::test]
async fn health_reports_every_dependency() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/health", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "up");
    for check in ["database", "bus", "storage"] {
        assert_eq!(body["checks"][check]["status"], "up", "{check}: {body}");
    }
    let expected_db = if crate::helpers::test_database_server().is_some() {
        "mariadb"
    } else {
        "sqlite"
    };
    assert_eq!(body["checks"]["database"]["kind"], expected_db);
    let expected_bus = if crate::helpers::test_redis().is_some() {
        "redis"
    } else {
        "in-process"
    };
    assert_eq!(body["checks"]["bus"]["kind"], expected_bus);
    app.shutdown().await;
}

#[tokio::test]
async fn metrics_count_operations_and_connections() {
    let app = spawn_app().await;
    app.post(
        json!({"query": "query MetricsProbe { __typename }", "operationName": "MetricsProbe"}),
        &[],
    )
    .await
    .ok();
    let text = app.get_text("/metrics").await;
    assert!(
        text.contains("nimbus_graphql_requests_total{operation=\"MetricsProbe\",outcome=\"ok\"}"),
        "{text}"
    );
    assert!(text.contains("nimbus_graphql_request_duration_seconds_bucket"));
    assert!(text.contains("nimbus_db_pool_connections{state=\"idle\"}"));
    let mut ws = crate::helpers::WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({})).await.expect("ack");
    let text = app.get_text("/metrics").await;
    let open = text
        .lines()
        .find(|l| l.starts_with("nimbus_websocket_connections "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .expect("an open-connections gauge");
    assert!(open >= 1.0);
    app.shutdown().await;
}

#[tokio::test]
async fn the_playground_is_served_without_a_cdn() {
    let app = spawn_app().await;
    let page = app
        .client
        .get(format!("{}/playground", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(
        !html.contains("https://"),
        "the playground must not load anything from the internet"
    );
    let script = app
        .client
        .get(format!("{}/playground/assets/playground.js", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(script.status(), 200);
    assert!(
        script
            .text()
            .await
            .unwrap()
            .contains("graphql-transport-ws")
    );
    app.shutdown().await;
}
