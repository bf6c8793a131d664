//! The cheaper paths answer what the full ones did: a field of the caller's
//! `Locale` selected alone (each read from the caller's place on its own) is what
//! the whole object says, in fragments and aliases too; and an event log consumer
//! that passes over the events of projects it does not act on (unread, with no
//! transaction) still acts on every event of those it does, exactly once, and
//! still stores a position that follows the log.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_with, test_config};
use crate::webhooks::{Receiver, app_with_webhooks, create_team, create_webhook, eventually};

const FIELDS: [&str; 7] = [
    "ip",
    "countryCode",
    "country",
    "continentCode",
    "continent",
    "eu",
    "currency",
];

async fn locale(app: &TestApp, query: &str, headers: &[(&str, &str)]) -> Value {
    app.post(json!({ "query": query }), headers).await.ok()["locale"].clone()
}

#[tokio::test]
async fn each_locale_field_alone_is_what_the_whole_object_says() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.trusted_proxies = "127.0.0.1".parse().unwrap();
    let app = spawn_with(config, dir).await;

    let whole = format!("{{ locale {{ {} }} }}", FIELDS.join(" "));
    for (address, language) in [
        ("8.8.8.8", "de"),
        ("193.51.24.1", "fr"),
        ("2a00:1450::1", "en"),
        ("10.1.2.3", "de"),
    ] {
        let headers = [("x-forwarded-for", address), ("x-nimbus-locale", language)];
        let all = locale(&app, &whole, &headers).await;
        assert_eq!(all["ip"], address);
        for field in FIELDS {
            let alone = locale(&app, &format!("{{ locale {{ {field} }} }}"), &headers).await;
            assert_eq!(alone, json!({ field: all[field] }), "{field} of {address}");
        }
        // Aliases, a field twice, fragments and `__typename` beside them.
        let shaped = locale(
            &app,
            "{ locale { __typename c: countryCode countryCode ...F ... on Locale { eu } } } \
             fragment F on Locale { n: country continent }",
            &headers,
        )
        .await;
        assert_eq!(
            shaped,
            json!({
                "__typename": "Locale",
                "c": all["countryCode"],
                "countryCode": all["countryCode"],
                "n": all["country"],
                "continent": all["continent"],
                "eu": all["eu"],
            }),
            "{address}"
        );
    }

    let us = locale(
        &app,
        &whole,
        &[("x-forwarded-for", "8.8.8.8"), ("x-nimbus-locale", "de")],
    )
    .await;
    assert_eq!(
        us,
        json!({"ip": "8.8.8.8", "countryCode": "US", "country": "Vereinigte Staaten von Amerika",
               "continentCode": "NA", "continent": "Nordamerika", "eu": false, "currency": "USD"})
    );
    let french = locale(&app, &whole, &[("x-forwarded-for", "193.51.24.1")]).await;
    assert_eq!(
        (&french["countryCode"], &french["eu"], &french["currency"]),
        (&json!("FR"), &json!(true), &json!("EUR"))
    );
    let private = locale(&app, &whole, &[("x-forwarded-for", "10.1.2.3")]).await;
    assert_eq!(
        private,
        json!({"ip": "10.1.2.3", "countryCode": null, "country": null, "continentCode": null,
               "continent": null, "eu": false, "currency": null})
    );
    app.shutdown().await;
}

/// Creates a team in `project` with a key of it.
async fn create_team_in(app: &TestApp, key: &str, project: &str, id: &str) {
    let data = app
        .as_key(
            key,
            project,
            "mutation($id: ID!) { createTeam(input: {id: $id, name: \"Team\"}) { id } }",
            json!({"id": id}),
        )
        .await
        .ok();
    assert_eq!(data["createTeam"]["id"], id, "{data}");
}

#[tokio::test]
async fn a_consumer_acts_on_its_projects_events_only_and_its_position_follows_the_log() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|_| {}).await;
    // Only the default project has a webhook; `quiet` has none.
    create_webhook(&app, &receiver.url("/ok"), &["teams.*.create"]).await;
    app.create_project("quiet").await;
    let quiet = app.create_key("quiet", &["teams.write"]).await;

    let mut expected = Vec::new();
    for n in 0..12 {
        create_team_in(&app, &quiet, "quiet", &format!("q{n}")).await;
        if n % 3 == 0 {
            let id = format!("d{n}");
            create_team(&app, &id).await;
            expected.push(format!("teams.{id}.create"));
        }
    }
    let requests = receiver.wait_for("/ok", expected.len()).await;
    let mut names: Vec<String> = requests
        .iter()
        .map(|request| {
            serde_json::from_str::<Value>(&request.body).unwrap()["events"][0]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    names.sort();
    expected.sort();
    assert_eq!(names, expected);

    // The quiet project's events were passed over, but not held back: both
    // consumers store a position at the log's head (pruning waits for it).
    let pool = app.server.as_ref().unwrap().state().db.pool().clone();
    let head: i64 = sqlx::query_scalar("SELECT MAX(position) FROM event_log")
        .fetch_one(&pool)
        .await
        .unwrap();
    eventually("both consumers' positions at the head", || async {
        let positions: Vec<i64> = sqlx::query_scalar(
            "SELECT position FROM log_consumers WHERE name IN ('webhooks', 'functions')",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        (positions.len() == 2 && positions.iter().all(|&p| p >= head)).then_some(())
    })
    .await;
    // Nothing more arrived: no event of the quiet project became a delivery.
    assert_eq!(receiver.requests_to("/ok").len(), expected.len());
    app.shutdown().await;
}
