//! Grants name their project and scope: a key operation on another project than
//! the addressed one needs `admin` and a project that exists, a key cannot reach a
//! key of another project, and a key's scopes are kept by name.

use serde_json::json;

use crate::helpers::spawn_app;

const CREATE_KEY: &str = "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { apiKey { id projectId scopes } } }";

#[tokio::test]
async fn a_key_operation_reaches_another_project_only_with_admin_and_only_one_that_exists() {
    let app = spawn_app().await;
    app.create_project("alpha").await;
    app.create_project("beta").await;
    let alpha_writer = app.create_key("alpha", &["keys.read", "keys.write"]).await;
    let into_beta = json!({"input": {"projectId": "beta", "name": "x", "scopes": ["keys.read"]}});

    let refused = app
        .as_key(&alpha_writer, "alpha", CREATE_KEY, into_beta.clone())
        .await;
    assert_eq!(refused.code(), "SCOPE_MISSING");
    assert_eq!(refused.body["errors"][0]["extensions"]["scope"], "admin");

    let created = app.admin(CREATE_KEY, into_beta).await.ok();
    let beta_key = &created["createApiKey"]["apiKey"];
    assert_eq!(beta_key["projectId"], "beta");
    let listed = app
        .admin(
            "{ apiKeys(projectId: \"beta\") { nodes { id } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(listed["apiKeys"]["nodes"], json!([{"id": beta_key["id"]}]));

    // Not the admin's own project, nor any other: the one the grant names.
    let own = app
        .as_key(
            &alpha_writer,
            "alpha",
            "{ apiKeys { nodes { projectId } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(own["apiKeys"]["nodes"], json!([{"projectId": "alpha"}]));

    let revoke = app
        .as_key(
            &alpha_writer,
            "alpha",
            "mutation($id: ID!) { deleteApiKey(input: {id: $id}) { deletedId } }",
            json!({"id": beta_key["id"]}),
        )
        .await;
    assert_eq!(revoke.code(), "API_KEY_NOT_FOUND");

    let nowhere = json!({"input": {"projectId": "nowhere", "name": "x", "scopes": ["keys.read"]}});
    let missing = app.admin(CREATE_KEY, nowhere).await;
    assert_eq!(missing.code(), "PROJECT_NOT_FOUND");
    let missing = app
        .admin(
            "{ apiKeys(projectId: \"nowhere\") { totalCount } }",
            json!({}),
        )
        .await;
    assert_eq!(missing.code(), "PROJECT_NOT_FOUND");
    app.shutdown().await;
}

#[tokio::test]
async fn a_keys_scopes_are_kept_once_each_by_name_and_unknown_ones_refused() {
    let app = spawn_app().await;
    let created = app
        .admin(
            CREATE_KEY,
            json!({"input": {"name": "x", "scopes": ["users.write", "buckets.read", "documents.read", "users.write"]}}),
        )
        .await
        .ok();
    assert_eq!(
        created["createApiKey"]["apiKey"]["scopes"],
        json!(["buckets.read", "documents.read", "users.write"])
    );

    let unknown = app
        .admin(
            CREATE_KEY,
            json!({"input": {"name": "x", "scopes": ["users.read", "users.everything"]}}),
        )
        .await;
    assert_eq!(unknown.code(), "INVALID_SCOPE");

    let listed = app
        .admin("{ apiKeyScopes { name description } }", json!({}))
        .await
        .ok();
    let names: Vec<&str> = listed["apiKeyScopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 25);
    assert_eq!(names[0], "admin");
    assert!(
        names.contains(&"files.write")
            && names.contains(&"executions.read")
            && names.contains(&"usage.read")
    );
    assert!(
        listed["apiKeyScopes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| !s["description"].as_str().unwrap().is_empty())
    );
    app.shutdown().await;
}
