//! Durable jobs: a job outlives the replica that ran it, failed jobs retry and are
//! dead-lettered, administrators list, retry and delete them, and email waits out
//! an SMTP outage.

use serde_json::json;

use crate::helpers::{ServeOptions, ServeProcess, TestApp, WAIT, spawn_with, test_config};
use crate::smtp_server::TestSmtp;
use crate::webhooks::{Receiver, app_with_webhooks, create_team, create_webhook, eventually};

const JOB: &str =
    "query($id: ID!) { job(id: $id) { id kind status attempts maxAttempts lastError payload } }";

#[tokio::test]
async fn a_job_whose_replica_is_killed_is_run_by_another() {
    let receiver = Receiver::start().await;
    // The server under test only takes requests; replicas run the jobs.
    let app = app_with_webhooks(|c| {
        c.jobs_concurrency = 0;
        c.secret = Some("a-secret-the-replicas-of-this-test-share".into());
    })
    .await;
    let replica_env = || ServeOptions {
        env: vec![
            ("NIMBUS_JOBS_LEASE_SECS", "4".into()),
            ("NIMBUS_JOBS_POLL_MS", "50".into()),
            ("NIMBUS_WEBHOOKS_ALLOW_PRIVATE", "true".into()),
            ("NIMBUS_WEBHOOKS_TIMEOUT_SECS", "30".into()),
        ],
        ..ServeOptions::default()
    };
    let mut first = ServeProcess::start(&app, replica_env()).await;
    create_webhook(&app, &receiver.url("/hang-once"), &["teams.*.create"]).await;
    create_team(&app, "crash").await;

    // The first replica took the job and is stuck in it: kill it mid-job.
    let taken = receiver.wait_for("/hang-once", 1).await;
    first.kill();
    let job = app
        .admin(
            "{ jobs(kind: \"webhook\") { nodes { id status attempts } } }",
            json!({}),
        )
        .await
        .ok()["jobs"]["nodes"][0]
        .clone();
    assert_eq!(job["status"], "RUNNING", "{job}");
    assert_eq!(job["attempts"], 1);

    // Another replica takes it over once the lease expires, and finishes it.
    let _second = ServeProcess::start(&app, replica_env()).await;
    let both = receiver.wait_for("/hang-once", 2).await;
    assert_eq!(
        both[1].headers.get("webhook-id"),
        taken[0].headers.get("webhook-id"),
        "the same delivery, retried"
    );
    let done = eventually("the job done", || async {
        let job = app.admin(JOB, json!({"id": job["id"]})).await.ok()["job"].clone();
        (job["status"] == "DONE").then_some(job)
    })
    .await;
    assert_eq!(done["attempts"], 2);
    app.shutdown().await;
}

#[tokio::test]
async fn dead_jobs_are_listed_retried_and_deleted_by_administrators() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|c| {
        c.jobs_max_attempts = 2;
        c.webhooks_failure_threshold = 100;
    })
    .await;
    create_webhook(&app, &receiver.url("/fail"), &["teams.*.create"]).await;
    create_team(&app, "doomed").await;

    let dead = eventually("a dead job", || async {
        let data = app
            .admin(
                "{ jobs(status: DEAD) { nodes { id kind attempts maxAttempts lastError } } }",
                json!({}),
            )
            .await
            .ok();
        data["jobs"]["nodes"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(dead["kind"], "webhook");
    assert_eq!(dead["attempts"], 2);
    assert_eq!(dead["maxAttempts"], 2);
    assert!(dead["lastError"].as_str().unwrap().contains("500"));
    assert_eq!(receiver.requests_to("/fail").len(), 2);

    let retried = app
        .admin(
            "mutation($id: ID!) { retryJob(input: {id: $id}) { id status attempts lastError } }",
            json!({"id": dead["id"]}),
        )
        .await
        .ok();
    assert_eq!(retried["retryJob"]["attempts"], 0);
    assert_eq!(retried["retryJob"]["lastError"], serde_json::Value::Null);
    // Two more attempts, then dead again.
    receiver.wait_for("/fail", 4).await;
    eventually("dead again", || async {
        let job = app.admin(JOB, json!({"id": dead["id"]})).await.ok()["job"].clone();
        (job["status"] == "DEAD").then_some(())
    })
    .await;

    // Only a dead job is retried; unknown ids and other projects' jobs are not found.
    let done_job = {
        create_webhook(&app, &receiver.url("/ok"), &["teams.*.delete"]).await;
        app.admin(
            "mutation { deleteTeam(input: {id: \"doomed\"}) { deletedId } }",
            json!({}),
        )
        .await
        .ok();
        receiver.wait_for("/ok", 1).await;
        eventually("a done job", || async {
            let data = app
                .admin("{ jobs(status: DONE) { nodes { id } } }", json!({}))
                .await
                .ok();
            data["jobs"]["nodes"][0]["id"].as_str().map(str::to_string)
        })
        .await
    };
    let not_dead = app
        .admin(
            "mutation($id: ID!) { retryJob(input: {id: $id}) { id } }",
            json!({"id": done_job}),
        )
        .await;
    assert_eq!(not_dead.code(), "JOB_NOT_DEAD");
    for query in [
        "mutation { retryJob(input: {id: \"missing\"}) { id } }",
        "mutation { deleteJob(input: {id: \"missing\"}) { deletedId } }",
        "{ job(id: \"missing\") { id } }",
    ] {
        assert_eq!(
            app.admin(query, json!({})).await.code(),
            "JOB_NOT_FOUND",
            "{query}"
        );
    }
    assert_eq!(
        app.admin("{ job(id: \"bad id!\") { id } }", json!({}))
            .await
            .code(),
        "INVALID_ID"
    );
    assert_eq!(
        app.admin("{ jobs(status: LOST) { totalCount } }", json!({}))
            .await
            .code(),
        "GRAPHQL_VALIDATION_FAILED"
    );
    app.create_project("other").await;
    let other = app.create_key("other", &["jobs.read", "jobs.write"]).await;
    let hidden = app
        .as_key(
            &other,
            "other",
            "query($id: ID!) { job(id: $id) { id } }",
            json!({"id": dead["id"]}),
        )
        .await;
    assert_eq!(hidden.code(), "JOB_NOT_FOUND");
    let reader = app.create_key("default", &["jobs.read"]).await;
    let denied = app
        .as_key(
            &reader,
            "default",
            "mutation($id: ID!) { deleteJob(input: {id: $id}) { deletedId } }",
            json!({"id": dead["id"]}),
        )
        .await;
    assert_eq!(denied.code(), "SCOPE_MISSING");

    let deleted = app
        .admin(
            "mutation($id: ID!) { deleteJob(input: {id: $id}) { deletedId } }",
            json!({"id": dead["id"]}),
        )
        .await
        .ok();
    assert_eq!(deleted["deleteJob"]["deletedId"], dead["id"]);
    assert_eq!(
        app.admin(JOB, json!({"id": dead["id"]})).await.code(),
        "JOB_NOT_FOUND"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn an_email_sent_while_smtp_is_down_arrives_once_it_is_back() {
    // A port with nothing listening: the relay is down.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.smtp_url = Some(format!("smtp://127.0.0.1:{port}"));
    config.jobs_retry_base_ms = 100;
    config.jobs_poll_ms = 50;
    let app = spawn_with(config, dir).await;

    let started = std::time::Instant::now();
    let session = app.signed_in("outage@example.com").await;
    let sent = app
        .as_session(
            &session,
            "mutation { createVerification(input: {url: \"http://localhost/verify\"}) { userId } }",
            json!({}),
        )
        .await;
    // The request does not wait for (or fail with) the relay.
    assert!(sent.body.get("errors").is_none(), "{:?}", sent.body);
    assert!(started.elapsed() < WAIT);

    // The job fails while the relay is down...
    let failed = eventually("a failed attempt", || async {
        let data = app
            .admin(
                "{ jobs(kind: \"mail\") { nodes { id status attempts lastError payload } } }",
                json!({}),
            )
            .await
            .ok();
        let job = data["jobs"]["nodes"][0].clone();
        job["lastError"].is_string().then_some(job)
    })
    .await;
    assert!(failed["attempts"].as_i64().unwrap() >= 1);
    // ...and its payload shows nothing of the message (links are secrets).
    assert!(
        !failed["payload"].to_string().contains("verify"),
        "{}",
        failed["payload"]
    );
    assert!(!failed["payload"].to_string().contains("outage@example.com"));

    // The relay comes back: the message arrives, once.
    let smtp = TestSmtp::start_on(port).await;
    let mail = smtp
        .wait_for_message_to("outage@example.com", WAIT * 3)
        .await;
    assert!(
        mail.first_link()
            .unwrap()
            .starts_with("http://localhost/verify?")
    );
    eventually("the mail job done", || async {
        let job = app.admin(JOB, json!({"id": failed["id"]})).await.ok()["job"].clone();
        (job["status"] == "DONE").then_some(())
    })
    .await;
    assert_eq!(smtp.messages_to("outage@example.com").len(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn each_tick_of_a_schedule_is_taken_by_one_replica_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.secret = Some("a-secret-the-replicas-of-this-test-share".into());
    config.jobs_poll_ms = 50;
    let app = spawn_with(config, dir).await;
    let _replica = ServeProcess::start(
        &app,
        ServeOptions {
            env: vec![("NIMBUS_JOBS_POLL_MS", "50".into())],
            ..ServeOptions::default()
        },
    )
    .await;
    // Every second; the kind has no handler, so each tick's job is dead-lettered
    // and stays listed.
    let state = app.server.as_ref().unwrap().state();
    state
        .jobs
        .schedule(
            state,
            "every-second",
            "default",
            "test.tick",
            json!({}),
            "* * * * * *",
        )
        .await
        .unwrap();
    let ticks = eventually("three ticks", || async {
        let data = app
            .admin(
                "{ jobs(kind: \"test.tick\", first: 100) { nodes { createdAt status lastError } } }",
                json!({}),
            )
            .await
            .ok();
        let nodes = data["jobs"]["nodes"].as_array().unwrap().clone();
        (nodes.len() >= 3).then_some(nodes)
    })
    .await;
    // Both replicas look every 50 ms; still one job per tick (per second).
    let mut seconds: Vec<String> = ticks
        .iter()
        .map(|job| job["createdAt"].as_str().unwrap()[..19].to_string())
        .collect();
    let all = seconds.len();
    seconds.dedup();
    assert_eq!(seconds.len(), all, "{ticks:?}");
    app.shutdown().await;
}

/// Project `project` with a key of `scopes` (answered) and a webhook on its
/// team events to `receiver`, and one delivery of such an event queued. The
/// replica runs no background work, event log consumers included: the delivery
/// is queued here as the webhooks consumer would.
async fn project_with_a_queued_delivery(
    app: &TestApp,
    receiver: &Receiver,
    project: &str,
    scopes: &[&str],
) -> String {
    app.create_project(project).await;
    let key = app.create_key(project, scopes).await;
    app.as_key(
        &key,
        project,
        "mutation($url: String!) { createWebhook(input: {name: \"h\", url: $url, events: [\"teams.*\"]}) { webhook { id } } }",
        json!({"url": receiver.url("/ok")}),
    )
    .await
    .ok();
    let state = app.server.as_ref().unwrap().state();
    let event = nimbus::bus::Event {
        key_scope: "teams.read".into(),
        ..nimbus::bus::Event::change(project, "teams.t", "teams.*", "create", json!({"id": "t"}))
    };
    let mut conn = state.db.pool().acquire().await.unwrap();
    let queued = nimbus::services::webhooks::service::queue_deliveries(
        state,
        &mut conn,
        &mut Default::default(),
        &event,
    )
    .await
    .unwrap();
    assert_eq!(queued, 1);
    key
}

#[tokio::test]
async fn deleting_a_project_drops_its_queued_jobs_and_webhooks() {
    let receiver = Receiver::start().await;
    // Nothing runs jobs here: the delivery stays queued.
    let app = app_with_webhooks(|c| c.jobs_concurrency = 0).await;
    let key = project_with_a_queued_delivery(
        &app,
        &receiver,
        "gone",
        &["webhooks.write", "teams.read", "teams.write", "jobs.read"],
    )
    .await;
    let queued = app
        .as_key(
            &key,
            "gone",
            "{ jobs(kind: \"webhook\") { nodes { id status } } }",
            json!({}),
        )
        .await
        .ok()["jobs"]["nodes"][0]
        .clone();
    assert_eq!(queued["status"], "QUEUED");

    app.admin(
        "mutation { deleteProject(input: {id: \"gone\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    let state = app.server.as_ref().unwrap().state();
    let left = nimbus::jobs::store::find(state.db.pool(), "gone", queued["id"].as_str().unwrap())
        .await
        .unwrap();
    assert!(left.is_none(), "{left:?}");
    app.shutdown().await;
}

/// A project deleted by a server that died between the delete's commit and
/// the removal of its jobs (rows that do not cascade with it) hands none of
/// them to a project made again with its id.
#[tokio::test]
async fn a_project_made_again_gets_nothing_a_deleted_one_of_its_id_left() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|c| c.jobs_concurrency = 0).await;
    project_with_a_queued_delivery(
        &app,
        &receiver,
        "reborn",
        &["webhooks.write", "teams.read", "jobs.read"],
    )
    .await;
    let state = app.server.as_ref().unwrap().state();
    let mut conn = state.db.pool().acquire().await.unwrap();
    // The delete's own transaction, and nothing after it.
    assert!(
        nimbus::services::projects::store::delete_project(&mut *conn, "reborn")
            .await
            .unwrap()
    );
    drop(conn);
    let left = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM jobs WHERE project_id = 'reborn'")
            .fetch_one(state.db.pool())
            .await
            .unwrap()
    };
    assert_eq!(left().await, 1, "the delivery outlived its project");

    app.create_project("reborn").await;
    assert_eq!(left().await, 0);
    let key = app.create_key("reborn", &["jobs.read"]).await;
    let jobs = app
        .as_key(&key, "reborn", "{ jobs { nodes { id } } }", json!({}))
        .await
        .ok();
    assert_eq!(jobs["jobs"]["nodes"], json!([]), "{jobs}");
    app.shutdown().await;
}

/// The busy project (the default one): a webhook to `path` on team creations,
/// and `teams` teams created in one request.
async fn busy_project_deliveries(app: &TestApp, receiver: &Receiver, path: &str, teams: usize) {
    create_webhook(app, &receiver.url(path), &["teams.*.create"]).await;
    let fields: String = (0..teams)
        .map(|n| format!("t{n}: createTeam(input: {{id: \"busy{n}\", name: \"Team\"}}) {{ id }} "))
        .collect();
    app.admin(&format!("mutation {{ {fields} }}"), json!({}))
        .await
        .ok();
}

/// A second project, `quiet`, with a webhook to `/quiet` on team creations;
/// returns the key that makes its one delivery ([`quiet_delivery`]).
async fn quiet_project(app: &TestApp, receiver: &Receiver) -> String {
    app.create_project("quiet").await;
    let quiet = app
        .create_key("quiet", &["webhooks.write", "teams.write", "teams.read"])
        .await;
    app.as_key(
        &quiet,
        "quiet",
        "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { webhook { id } } }",
        json!({"input": {"name": "hook", "url": receiver.url("/quiet"), "events": ["teams.*.create"]}}),
    )
    .await
    .ok();
    quiet
}

/// Queues the quiet project's one delivery: a team created there.
async fn quiet_delivery(app: &TestApp, key: &str) {
    app.as_key(
        key,
        "quiet",
        "mutation { createTeam(input: {id: \"mine\", name: \"Mine\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
}

/// A project's backlog does not hold back another project's jobs: the one
/// runner takes the other project's delivery at its next claim, not after the
/// backlog has drained.
#[tokio::test]
async fn one_projects_backlog_does_not_hold_back_anothers_jobs() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|c| c.jobs_concurrency = 1).await;
    let quiet = quiet_project(&app, &receiver).await;
    // The busy project: 20 deliveries of a quarter of a second each, one at a time.
    busy_project_deliveries(&app, &receiver, "/pause", 20).await;
    receiver.wait_for("/pause", 1).await;
    // The quiet project's one delivery, queued behind the whole backlog.
    quiet_delivery(&app, &quiet).await;
    receiver.wait_for("/quiet", 1).await;
    let busy_done = receiver.requests_to("/pause").len();
    assert!(
        busy_done < 10,
        "the quiet project's delivery waited for {busy_done} of the busy project's 20"
    );
    // The backlog still drains, every delivery once.
    receiver.wait_for("/pause", 20).await;
    app.shutdown().await;
}

/// Jobs of one project that hang (deliveries to a receiver that never answers
/// in time) hold at most three quarters of a replica's slots: another project's
/// job runs at once beside them, not once theirs time out.
#[tokio::test]
async fn a_project_whose_jobs_hang_leaves_slots_for_the_others() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|c| {
        c.jobs_concurrency = 4;
        c.webhooks_timeout_secs = 12;
    })
    .await;
    let quiet = quiet_project(&app, &receiver).await;
    busy_project_deliveries(&app, &receiver, "/slow", 8).await;
    // Three of the four slots take the hanging deliveries.
    receiver.wait_for("/slow", 3).await;
    let started = std::time::Instant::now();
    quiet_delivery(&app, &quiet).await;
    receiver.wait_for("/quiet", 1).await;
    let waited = started.elapsed();
    assert!(
        waited < std::time::Duration::from_secs(8),
        "the other project's delivery waited {waited:?}, for the hanging ones to time out"
    );
    assert_eq!(
        receiver.requests_to("/slow").len(),
        3,
        "the hanging project held more than its share"
    );
    app.shutdown().await;
}
