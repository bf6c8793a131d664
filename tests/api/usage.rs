//! Usage: what a project did reaches `usage(…)` with exact counts, hourly and daily
//! alike, replicas add up, only `usage.read` (or `admin` for another project)
//! reads it, hostile ranges are refused, each range has exactly its number of
//! points, the console's own requests count in the project they act on, and
//! client-chosen names cannot grow it.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::functions::deployed;
use crate::helpers::{TestApp, WsClient, from_server, spawn_with, test_config};
use crate::storage::upload;
use crate::webhooks::eventually;

const USAGE: &str = "query($p: ID, $i: UsageInterval!) { usage(projectId: $p, range: LAST_24_HOURS, interval: $i) { projectId from to interval series { metric key total points { time value } } } }";

/// A server that flushes and snapshots every second.
async fn counting_app(max_keys: u64) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.usage_flush_secs = 1;
    config.usage_snapshot_secs = 1;
    config.usage_max_keys = max_keys;
    config.secret = Some(nimbus::db::ids::generate().repeat(3));
    spawn_with(config, dir).await
}

/// The usage of `project`, read by the admin key from the default project, as
/// `(metric, key) → total`, and the answer itself.
async fn totals(
    app: &TestApp,
    project: &str,
    interval: &str,
) -> (BTreeMap<(String, String), f64>, Value) {
    let data = app
        .admin(USAGE, json!({"p": project, "i": interval}))
        .await
        .ok();
    let usage = data["usage"].clone();
    let mut totals = BTreeMap::new();
    for series in usage["series"].as_array().unwrap() {
        let key = series["key"].as_str().unwrap_or("").to_string();
        totals.insert(
            (series["metric"].as_str().unwrap().to_string(), key),
            series["total"].as_f64().unwrap(),
        );
    }
    (totals, usage)
}

fn total(totals: &BTreeMap<(String, String), f64>, metric: &str, key: &str) -> f64 {
    totals
        .get(&(metric.to_string(), key.to_string()))
        .copied()
        .unwrap_or(0.0)
}

async fn in_project(app: &TestApp, project: &str, query: &str, variables: Value) -> Value {
    app.as_key(&app.admin_key, project, query, variables)
        .await
        .body
}

#[tokio::test]
async fn what_a_project_did_reaches_usage_with_exact_counts_hourly_and_daily() {
    let app = counting_app(200).await;
    app.create_project("tally").await;
    let p = "tally";
    in_project(
        &app,
        p,
        "mutation { createDatabase(input: {id: \"db\", name: \"Db\"}) { id } }",
        json!({}),
    )
    .await;
    in_project(
        &app,
        p,
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {"databaseId": "db", "id": "notes", "name": "notes", "permissions": [],
            "attributes": [{"key": "title", "type": "STRING", "size": 50, "required": true}]}}),
    )
    .await;
    for id in ["n1", "n2"] {
        let created = in_project(
            &app,
            p,
            "mutation($id: ID!) { createDocument(input: {databaseId: \"db\", collectionId: \"notes\", id: $id, data: {title: \"t\"}}) { id } }",
            json!({"id": id}),
        )
        .await;
        assert_eq!(created["data"]["createDocument"]["id"], id, "{created}");
    }
    let deleted = in_project(
        &app,
        p,
        "mutation { deleteDocument(input: {databaseId: \"db\", collectionId: \"notes\", id: \"n1\"}) { deletedId } }",
        json!({}),
    )
    .await;
    assert_eq!(
        deleted["data"]["deleteDocument"]["deletedId"], "n1",
        "{deleted}"
    );
    in_project(
        &app,
        p,
        "mutation { createBucket(input: {id: \"b\", name: \"B\"}) { id } }",
        json!({}),
    )
    .await;
    let file = upload(
        &app,
        &[("x-nimbus-key", &app.admin_key), ("x-nimbus-project", p)],
        json!({"bucketId": "b", "fileId": "f1", "file": null}),
        "hello.txt",
        "text/plain",
        b"hello usage",
    )
    .await;
    assert_eq!(
        file.body["data"]["createFile"]["size"], 11,
        "{:?}",
        file.body
    );
    let user = in_project(
        &app,
        p,
        "mutation { createUser(input: {id: \"ann\", email: \"ann@example.com\", password: \"ann-password-1\"}) { id } }",
        json!({}),
    )
    .await;
    assert_eq!(user["data"]["createUser"]["id"], "ann", "{user}");
    let missing = in_project(&app, p, "{ user(id: \"nobody\") { id } }", json!({})).await;
    assert_eq!(missing["errors"][0]["extensions"]["code"], "USER_NOT_FOUND");
    let invalid = in_project(&app, p, "{ noSuchField }", json!({})).await;
    assert_eq!(
        invalid["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    for _ in 0..3 {
        // Counted bodies keep their length: the answer is not sent chunked.
        let response = app
            .client
            .post(format!("{}/v1/graphql", app.url))
            .header("x-nimbus-key", &app.admin_key)
            .header("x-nimbus-project", p)
            .json(&json!({"query": "{ __typename }"}))
            .send()
            .await
            .unwrap();
        let length = response.headers().get("content-length").cloned();
        let body = response.bytes().await.unwrap();
        assert_eq!(length.unwrap().to_str().unwrap(), body.len().to_string());
    }
    // A realtime connection of the project, with one exchange on it.
    let mut ws = WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"x-nimbus-key": app.admin_key, "x-nimbus-project": p}))
        .await
        .unwrap();
    ws.ping_pong().await;

    // 13 operations: 2 for the structure, 3 document writes, the bucket, the file,
    // the user, 2 errors, 3 `__typename`.
    let settled = |t: &BTreeMap<(String, String), f64>| {
        total(t, "REQUESTS", "") == 13.0
            && total(t, "DOCUMENTS_CREATED", "") == 2.0
            && total(t, "FILES_CREATED", "") == 1.0
            && total(t, "USERS_CREATED", "") == 1.0
            && total(t, "DOCUMENTS", "") == 1.0
            && total(t, "DOCUMENTS_DELETED", "") == 1.0
            && total(t, "FILES", "") == 1.0
            && total(t, "USERS", "") == 1.0
            && total(t, "REALTIME_CONNECTIONS", "") == 1.0
            && total(t, "BANDWIDTH_IN", "ws") > 0.0
    };
    let (hourly, answer) = eventually("the counts reaching usage", || async {
        let (t, answer) = totals(&app, p, "HOUR").await;
        settled(&t).then_some((t, answer))
    })
    .await;
    let expected = [
        ("REQUESTS", "", 13.0),
        ("OPERATIONS", "mutation.createDatabase", 1.0),
        ("OPERATIONS", "mutation.createCollection", 1.0),
        ("OPERATIONS", "mutation.createDocument", 2.0),
        ("OPERATIONS", "mutation.deleteDocument", 1.0),
        ("OPERATIONS", "mutation.createBucket", 1.0),
        ("OPERATIONS", "mutation.createFile", 1.0),
        ("OPERATIONS", "mutation.createUser", 1.0),
        ("OPERATIONS", "query.user", 1.0),
        ("OPERATIONS", "query.__typename", 3.0),
        ("OPERATIONS", "", 12.0),
        ("ERRORS", "USER_NOT_FOUND", 1.0),
        ("ERRORS", "GRAPHQL_VALIDATION_FAILED", 1.0),
        ("ERRORS", "", 2.0),
        ("DOCUMENTS", "", 1.0),
        ("DOCUMENTS_CREATED", "", 2.0),
        ("DOCUMENTS_DELETED", "", 1.0),
        ("FILES", "", 1.0),
        ("FILES_CREATED", "", 1.0),
        ("STORAGE_BYTES", "", 11.0),
        ("USERS", "", 1.0),
        ("USERS_CREATED", "", 1.0),
        ("REALTIME_CONNECTIONS", "", 1.0),
    ];
    for (metric, key, value) in expected {
        assert_eq!(
            total(&hourly, metric, key),
            value,
            "{metric} {key}: {answer}"
        );
    }
    // The field that does not exist is counted nowhere.
    assert!(
        !hourly.keys().any(|(_, key)| key.contains("noSuchField")),
        "{answer}"
    );
    assert!(total(&hourly, "BANDWIDTH_IN", "http") > 11.0, "{answer}");
    assert!(total(&hourly, "BANDWIDTH_OUT", "http") > 0.0, "{answer}");
    assert!(total(&hourly, "BANDWIDTH_OUT", "ws") > 0.0, "{answer}");
    assert_eq!(answer["interval"], "HOUR");
    let series = answer["series"].as_array().unwrap();
    assert!(
        series
            .iter()
            .all(|s| s["points"].as_array().unwrap().len() == 25)
    );

    // The daily buckets hold the same.
    let (daily, daily_answer) = totals(&app, p, "DAY").await;
    for (metric, key, value) in expected {
        assert_eq!(
            total(&daily, metric, key),
            value,
            "{metric} {key}: {daily_answer}"
        );
    }

    // A download's bytes count as they stream out.
    let before = total(&hourly, "BANDWIDTH_OUT", "http");
    let downloaded = app
        .client
        .get(format!(
            "{}/v1/storage/buckets/b/files/f1/download",
            app.url
        ))
        .header("x-nimbus-key", &app.admin_key)
        .header("x-nimbus-project", p)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&downloaded[..], b"hello usage");
    let (after, answer) = eventually("the download counted", || async {
        let (t, answer) = totals(&app, p, "HOUR").await;
        (total(&t, "BANDWIDTH_OUT", "http") > before).then_some((t, answer))
    })
    .await;
    assert_eq!(
        total(&after, "BANDWIDTH_OUT", "http"),
        before + 11.0,
        "{answer}"
    );
    ws.socket.close(None).await.ok();
    app.shutdown().await;
}

#[tokio::test]
async fn usage_needs_its_scope_and_another_project_needs_admin() {
    let app = counting_app(200).await;
    app.create_project("other").await;
    let reader = app.create_key("default", &["usage.read"]).await;
    let users = app.create_key("default", &["users.read"]).await;
    let query = "query($p: ID) { usage(projectId: $p, range: LAST_7_DAYS, interval: DAY) { projectId series { metric total } } }";

    let own = app.as_key(&reader, "default", query, json!({})).await.ok();
    assert_eq!(own["usage"]["projectId"], "default");
    assert!(own["usage"]["series"].as_array().unwrap().len() >= 20);

    let refused = app.as_key(&users, "default", query, json!({})).await;
    assert_eq!(refused.code(), "SCOPE_MISSING", "{:?}", refused.body);
    assert_eq!(
        refused.body["errors"][0]["extensions"]["scope"],
        "usage.read"
    );

    let foreign = app
        .as_key(&reader, "default", query, json!({"p": "other"}))
        .await;
    assert_eq!(foreign.code(), "SCOPE_MISSING", "{:?}", foreign.body);
    assert!(foreign.body["data"].is_null());

    let anonymous = app.post(json!({"query": query}), &[]).await;
    assert_eq!(anonymous.code(), "UNAUTHENTICATED", "{:?}", anonymous.body);

    let session = app.signed_in("eve@example.com").await;
    let user = app.as_session(&session, query, json!({})).await;
    assert_eq!(user.code(), "PERMISSION_DENIED", "{:?}", user.body);

    // Admin reads another project; one that does not exist is not found.
    let other = app.admin(query, json!({"p": "other"})).await.ok();
    assert_eq!(other["usage"]["projectId"], "other");
    let none = app.admin(query, json!({"p": "nowhere"})).await;
    assert_eq!(none.code(), "PROJECT_NOT_FOUND", "{:?}", none.body);
    app.shutdown().await;
}

#[tokio::test]
async fn hostile_ranges_are_refused_with_a_clear_code() {
    let app = counting_app(200).await;
    let ask = |args: &str| format!("{{ usage({args}) {{ from series {{ total }} }} }}");
    for (args, code) in [
        // Ten years of hours.
        (
            "from: \"2016-01-01T00:00:00Z\", interval: HOUR",
            "USAGE_RANGE_TOO_LARGE",
        ),
        (
            "from: \"1970-01-01T00:00:00Z\", interval: DAY",
            "USAGE_RANGE_TOO_LARGE",
        ),
        (
            "range: LAST_90_DAYS, interval: HOUR",
            "USAGE_RANGE_TOO_LARGE",
        ),
        (
            "range: LAST_7_DAYS, from: \"2026-01-01T00:00:00Z\", interval: HOUR",
            "BAD_USER_INPUT",
        ),
        ("interval: HOUR", "BAD_USER_INPUT"),
        (
            "from: \"2026-01-02T00:00:00Z\", to: \"2026-01-01T00:00:00Z\", interval: HOUR",
            "BAD_USER_INPUT",
        ),
        (
            "from: \"yesterday\", interval: HOUR",
            "GRAPHQL_VALIDATION_FAILED",
        ),
        (
            "to: \"2026-01-01T00:00:00Z\", interval: HOUR",
            "BAD_USER_INPUT",
        ),
    ] {
        let answer = app.admin(&ask(args), json!({})).await;
        assert_eq!(answer.code(), code, "{args}: {:?}", answer.body);
        let message = answer.body["errors"][0]["message"].as_str().unwrap();
        assert!(
            !message.contains("SELECT") && !message.contains("usage_counters"),
            "{message}"
        );
    }
    // The widest allowed: 1000 hourly points.
    let answer = app
        .admin(
            &ask("from: \"2026-01-01T00:00:00Z\", to: \"2026-02-11T16:00:00Z\", interval: HOUR"),
            json!({}),
        )
        .await
        .ok();
    assert_eq!(answer["usage"]["from"], "2026-01-01T00:00:00.000Z");
    app.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_names_and_fields_stays_within_the_cap() {
    let app = counting_app(3).await;
    app.create_project("flood").await;
    let p = "flood";
    // Operation names are the client's: many of them are one key.
    for n in 0..60 {
        in_project(
            &app,
            p,
            &format!("query Flood{n} {{ __typename }}"),
            json!({}),
        )
        .await;
    }
    // Five root fields, three keys at most: the rest count as `other`.
    let wide = in_project(
        &app,
        p,
        "{ a: __typename databases { id } account { id } accountSessions { id } accountIdentities { id } }",
        json!({}),
    )
    .await;
    assert!(wide["errors"].is_array(), "{wide}");
    let (t, answer) = eventually("the flood reaching usage", || async {
        let (t, answer) = totals(&app, p, "HOUR").await;
        (total(&t, "REQUESTS", "") == 61.0).then_some((t, answer))
    })
    .await;
    let keys: Vec<&String> = t
        .keys()
        .filter(|(metric, key)| metric == "OPERATIONS" && !key.is_empty())
        .map(|(_, key)| key)
        .collect();
    assert!(keys.len() <= 4, "{keys:?}");
    assert!(keys.iter().all(|k| !k.contains("Flood")), "{keys:?}");
    assert_eq!(total(&t, "OPERATIONS", ""), 65.0, "{answer}");
    assert!(total(&t, "OPERATIONS", "other") >= 2.0, "{answer}");
    app.shutdown().await;
}

/// A second replica of `first`, in this process, on the same database.
async fn second_replica(first: &TestApp) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = first.config.clone();
    config.data_dir = dir.path().to_path_buf();
    config.database_url = Some(first.config.effective_database_url());
    let server = nimbus::Server::start(config.clone())
        .await
        .expect("second replica starts");
    from_server(server, first.admin_key.clone(), config, dir)
}

#[tokio::test]
async fn two_replicas_on_one_database_add_up() {
    let first = counting_app(200).await;
    first.create_project("pair").await;
    let second = second_replica(&first).await;
    for _ in 0..2 {
        in_project(&first, "pair", "{ __typename }", json!({})).await;
    }
    for _ in 0..3 {
        in_project(&second, "pair", "{ __typename }", json!({})).await;
    }
    let (t, answer) = eventually("both replicas' counts", || async {
        let (t, answer) = totals(&first, "pair", "HOUR").await;
        (total(&t, "OPERATIONS", "query.__typename") >= 5.0).then_some((t, answer))
    })
    .await;
    assert_eq!(total(&t, "OPERATIONS", "query.__typename"), 5.0, "{answer}");
    // A replica that shuts down flushes what it counted last.
    in_project(&second, "pair", "{ __typename }", json!({})).await;
    second.shutdown().await;
    let (t, answer) = totals(&first, "pair", "DAY").await;
    assert_eq!(total(&t, "OPERATIONS", "query.__typename"), 6.0, "{answer}");
    first.shutdown().await;
}

#[tokio::test]
async fn sessions_and_executions_are_counted() {
    let app = counting_app(200).await;
    deployed(
        &app,
        "hello",
        json!({"execute": ["any"]}),
        "export default async ({ res }) => res.text('hi')",
    )
    .await;
    // Without a record (`logging: false`), and so without an event, it counts too.
    deployed(
        &app,
        "quiet",
        json!({"execute": ["any"], "logging": false}),
        "export default async ({ res }) => res.text('hi')",
    )
    .await;
    for function in ["hello", "hello", "quiet"] {
        let run = app
            .admin(
                "mutation($f: ID!) { createExecution(input: {functionId: $f}) { responseBody } }",
                json!({"f": function}),
            )
            .await
            .ok();
        assert_eq!(run["createExecution"]["responseBody"], "hi");
    }
    let over_http = app
        .client
        .get(format!("{}/v1/functions/quiet", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(over_http.text().await.unwrap(), "hi");
    app.signed_in("ann@example.com").await;
    let (t, answer) = eventually("sessions and executions reaching usage", || async {
        let (t, answer) = totals(&app, "default", "HOUR").await;
        (total(&t, "EXECUTIONS", "") == 4.0 && total(&t, "SESSIONS", "") == 1.0)
            .then_some((t, answer))
    })
    .await;
    assert_eq!(total(&t, "SESSIONS_CREATED", ""), 1.0, "{answer}");
    assert_eq!(total(&t, "USERS_CREATED", ""), 1.0, "{answer}");
    assert_eq!(total(&t, "USERS", ""), 1.0, "{answer}");
    app.shutdown().await;
}

#[tokio::test]
async fn counts_a_flush_could_not_write_arrive_with_a_later_one() {
    let app = counting_app(200).await;
    app.create_project("later").await;
    let server = app.server.as_ref().unwrap();
    let pool = server.state().db.pool().clone();
    // The table goes away: flushes fail and keep their counts.
    sqlx::query("ALTER TABLE usage_counters RENAME TO usage_counters_away")
        .execute(&pool)
        .await
        .unwrap();
    for _ in 0..4 {
        in_project(&app, "later", "{ __typename }", json!({})).await;
    }
    // A flush that starts from now holds those four.
    let failures = app.metric("nimbus_usage_flush_failures_total").await;
    eventually("a flush failing", || async {
        (app.metric("nimbus_usage_flush_failures_total").await > failures).then_some(())
    })
    .await;
    sqlx::query("ALTER TABLE usage_counters_away RENAME TO usage_counters")
        .execute(&pool)
        .await
        .unwrap();
    let (t, answer) = eventually("the kept counts written", || async {
        let (t, answer) = totals(&app, "later", "HOUR").await;
        (total(&t, "OPERATIONS", "query.__typename") >= 4.0).then_some((t, answer))
    })
    .await;
    assert_eq!(total(&t, "OPERATIONS", "query.__typename"), 4.0, "{answer}");
    assert_eq!(total(&t, "REQUESTS", ""), 4.0, "{answer}");
    app.shutdown().await;
}

/// `usage(range, interval)` of the addressed project: its `from`, `to` and the
/// times of its points, as milliseconds.
async fn span_of(app: &TestApp, range: &str, interval: &str) -> (i64, i64, Vec<i64>) {
    let query = format!(
        "{{ usage(range: {range}, interval: {interval}, metrics: [REQUESTS]) {{ from to series {{ points {{ time }} }} }} }}"
    );
    let data = app.admin(&query, json!({})).await.ok();
    let millis = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap())
            .unwrap()
            .timestamp_millis()
    };
    let usage = &data["usage"];
    let times = usage["series"][0]["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| millis(&p["time"]))
        .collect();
    (millis(&usage["from"]), millis(&usage["to"]), times)
}

#[tokio::test]
async fn each_range_has_exactly_its_buckets_and_the_current_one() {
    const HOUR: i64 = 3_600_000;
    const DAY: i64 = 24 * HOUR;
    let app = crate::helpers::spawn_app().await;
    // (range, interval, points): the range's whole buckets before the current
    // one, and the current one.
    let cases = [
        ("LAST_24_HOURS", "HOUR", 25),
        ("LAST_24_HOURS", "DAY", 2),
        ("LAST_7_DAYS", "HOUR", 7 * 24 + 1),
        ("LAST_7_DAYS", "DAY", 8),
        ("LAST_30_DAYS", "HOUR", 30 * 24 + 1),
        ("LAST_30_DAYS", "DAY", 31),
        ("LAST_90_DAYS", "DAY", 91),
    ];
    for (range, interval, points) in cases {
        let size = if interval == "HOUR" { HOUR } else { DAY };
        let before = chrono::Utc::now().timestamp_millis();
        let (from, to, times) = span_of(&app, range, interval).await;
        let after = chrono::Utc::now().timestamp_millis();
        assert_eq!(times.len(), points, "{range} {interval}");
        assert_eq!(to - from, points as i64 * size, "{range} {interval}");
        assert_eq!(times[0], from, "{range} {interval}");
        assert!(
            times.windows(2).all(|w| w[1] - w[0] == size),
            "{range} {interval}"
        );
        // The last point is the bucket holding now; the first starts the range.
        let current = |t: i64| t - t.rem_euclid(size);
        assert!(
            *times.last().unwrap() == current(before) || *times.last().unwrap() == current(after),
            "{range} {interval}"
        );
        assert_eq!(from % size, 0, "{range} {interval}");
    }
    let refused = app
        .admin(
            "{ usage(range: LAST_90_DAYS, interval: HOUR) { from } }",
            json!({}),
        )
        .await;
    assert_eq!(refused.code(), "USAGE_RANGE_TOO_LARGE");
    app.shutdown().await;
}

#[tokio::test]
async fn the_consoles_own_requests_count_in_the_project_they_act_on() {
    use crate::console_auth::{as_console, create_admin, signed_in};
    let app = counting_app(200).await;
    app.create_project("watched").await;
    create_admin(&app, "root@example.com").await;
    let (cookie, csrf) = signed_in(&app, "root@example.com").await;
    // Three requests of a console administrator's session, two of an admin key
    // of another project, all addressed to `watched`.
    for _ in 0..3 {
        let answer = as_console(
            &app,
            &cookie,
            Some(&csrf),
            "watched",
            "{ project { id } }",
            json!({}),
        )
        .await
        .ok();
        assert_eq!(answer["project"]["id"], "watched");
    }
    for _ in 0..2 {
        let answer = in_project(&app, "watched", "{ project { name } }", json!({})).await;
        assert!(answer["errors"].is_null(), "{answer}");
    }
    let (counted, answer) = eventually("the console's requests counted", || async {
        let (t, answer) = totals(&app, "watched", "HOUR").await;
        (total(&t, "REQUESTS", "") >= 5.0).then_some((t, answer))
    })
    .await;
    assert_eq!(total(&counted, "REQUESTS", ""), 5.0, "{answer}");
    assert_eq!(
        total(&counted, "OPERATIONS", "query.project"),
        5.0,
        "{answer}"
    );
    assert!(total(&counted, "BANDWIDTH_IN", "http") > 0.0, "{answer}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_length_a_request_declares_but_does_not_send_is_not_counted() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let app = counting_app(1000).await;
    app.create_project("victim").await;
    // A GET whose body is never read, declaring an exabyte of it.
    let address = app.url.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
    stream
        .write_all(
            b"GET /v1/graphql?query=%7B__typename%7D HTTP/1.1\r\nHost: localhost\r\n\
              X-Nimbus-Project: victim\r\nContent-Length: 9223372036854775807\r\n\
              Connection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let mut answer = vec![0u8; 12];
    stream.read_exact(&mut answer).await.unwrap();
    assert_eq!(
        &answer,
        b"HTTP/1.1 200",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    drop(stream);
    let (counted, answer) = eventually("the answer counted", || async {
        let (t, answer) = totals(&app, "victim", "HOUR").await;
        (total(&t, "BANDWIDTH_OUT", "http") > 0.0).then_some((t, answer))
    })
    .await;
    assert_eq!(total(&counted, "BANDWIDTH_IN", "http"), 0.0, "{answer}");
    app.shutdown().await;
}
