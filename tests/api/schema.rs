//! The schema a client's code generator sees.

use crate::helpers::spawn_app;

#[tokio::test]
async fn schema_core_graphql_is_what_the_code_builds() {
    let config = nimbus::config::Config::with_data_dir("unused");
    let built = nimbus::services::core_sdl(&config).unwrap_or_else(|e| panic!("{}", e.message()));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/schema/core.graphql");
    let stored = std::fs::read_to_string(path).expect("schema/core.graphql exists");
    assert!(
        stored == built,
        "schema/core.graphql is stale: run `cargo run -- schema print > schema/core.graphql`"
    );
}

#[tokio::test]
async fn the_sdl_endpoint_serves_the_callers_project_schema() {
    let app = spawn_app().await;
    let response = app
        .client
        .get(format!("{}/v1/graphql/schema.graphql", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/graphql")
    );
    let sdl = response.text().await.unwrap();
    assert!(sdl.contains("type Query"));
    assert!(sdl.contains("createApiKey(input: CreateApiKeyInput!): CreateApiKeyPayload!"));
    let missing = app
        .client
        .get(format!("{}/v1/graphql/schema.graphql", app.url))
        .header("x-nimbus-project", "missing")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    app.shutdown().await;
}

#[tokio::test]
async fn introspection_can_be_turned_off() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path()).await;
    config.introspection = false;
    let app = crate::helpers::spawn_with(config, dir).await;
    let answer = app
        .post(
            serde_json::json!({"query": "{ __schema { queryType { name } } }"}),
            &[],
        )
        .await;
    assert!(answer.body["errors"].is_array(), "{:#}", answer.body);
    app.shutdown().await;
}
