//! Webhooks against a real receiver: signatures, filters, failures of every kind,
//! automatic disabling, the private-address guard and hostile inputs.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use nimbus::config::Config;
use serde_json::{Value, json};
use tokio::sync::Notify;

use crate::helpers::{TestApp, WAIT, spawn_app, spawn_with, test_config};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

#[derive(Default)]
struct Log {
    requests: Mutex<Vec<Received>>,
    arrived: Notify,
}

/// A webhook receiver on 127.0.0.1 that records every request. Paths: `/ok…`
/// answers 200, `/fail` 500, `/slow` never in time, `/big` 10 MB, `/redirect` a
/// redirect to a private address, `/hang-once` hangs on its first request and
/// answers 200 after, `/pause` answers 200 after a quarter of a second.
pub struct Receiver {
    pub base: String,
    log: Arc<Log>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        use axum::body::Body;
        use axum::response::{IntoResponse as _, Response};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Log::default());
        let recorded = log.clone();
        let app = axum::Router::new().fallback(move |request: axum::extract::Request| {
            let log = recorded.clone();
            async move {
                let path = request.uri().path().to_string();
                let headers = request.headers().clone();
                let bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
                    .await
                    .unwrap_or_default();
                let earlier = {
                    let mut requests = log.requests.lock().unwrap();
                    let earlier = requests.iter().filter(|r| r.path == path).count();
                    requests.push(Received {
                        path: path.clone(),
                        headers,
                        body: String::from_utf8_lossy(&bytes).into_owned(),
                    });
                    earlier
                };
                log.arrived.notify_waiters();
                let response: Response = match path.as_str() {
                    "/fail" => {
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "nope").into_response()
                    }
                    "/slow" => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        "late".into_response()
                    }
                    "/pause" => {
                        tokio::time::sleep(Duration::from_millis(250)).await;
                        "thanks".into_response()
                    }
                    "/hang-once" if earlier == 0 => {
                        tokio::time::sleep(Duration::from_secs(600)).await;
                        "late".into_response()
                    }
                    "/big" => {
                        let chunk = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
                        let chunks = futures_util::stream::iter(
                            (0..160).map(move |_| Ok::<_, std::io::Error>(chunk.clone())),
                        );
                        Response::new(Body::from_stream(chunks))
                    }
                    "/redirect" => {
                        axum::response::Redirect::temporary("http://10.0.0.1/steal").into_response()
                    }
                    _ => "thanks".into_response(),
                };
                response
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { base, log }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn requests_to(&self, path: &str) -> Vec<Received> {
        let requests = self.log.requests.lock().unwrap();
        requests
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `count` requests to `path` arrived; answers them.
    pub async fn wait_for(&self, path: &str, count: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let arrived = self.log.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let got = self.requests_to(path);
            if got.len() >= count {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!(
                    "{count} requests to {path} did not arrive; got {}",
                    got.len()
                );
            }
        }
    }
}

/// A server whose webhooks may reach the receiver on loopback, with short
/// timeouts and retries.
pub async fn app_with_webhooks(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.webhooks_allow_private = true;
    config.webhooks_timeout_secs = 1;
    config.webhooks_failure_threshold = 3;
    config.jobs_retry_base_ms = 50;
    config.jobs_poll_ms = 50;
    config.jobs_max_attempts = 5;
    adjust(&mut config);
    spawn_with(config, dir).await
}

const CREATE: &str = "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { secret webhook { id enabled events tlsVerify failures } } }";

/// Creates a webhook as the admin; answers its id and secret.
pub async fn create_webhook(app: &TestApp, url: &str, events: &[&str]) -> (String, String) {
    let data = app
        .admin(
            CREATE,
            json!({"input": {"name": "hook", "url": url, "events": events}}),
        )
        .await
        .ok();
    (
        data["createWebhook"]["webhook"]["id"]
            .as_str()
            .unwrap()
            .to_string(),
        data["createWebhook"]["secret"]
            .as_str()
            .unwrap()
            .to_string(),
    )
}

pub async fn create_team(app: &TestApp, id: &str) {
    app.admin(
        "mutation($id: ID!) { createTeam(input: {id: $id, name: \"Team\"}) { id } }",
        json!({"id": id}),
    )
    .await
    .ok();
}

async fn webhook(app: &TestApp, id: &str) -> Value {
    app.admin(
        "query($id: ID!) { webhook(id: $id) { id enabled failures } }",
        json!({"id": id}),
    )
    .await
    .ok()["webhook"]
        .clone()
}

async fn deliveries(app: &TestApp, id: &str) -> Vec<Value> {
    let data = app
        .admin(
            "query($id: ID!) { webhookDeliveries(webhookId: $id, first: 100) { totalCount nodes { eventId attempt statusCode success error responseExcerpt durationMs } } }",
            json!({"id": id}),
        )
        .await
        .ok();
    data["webhookDeliveries"]["nodes"]
        .as_array()
        .unwrap()
        .clone()
}

/// Polls `check` until it answers `Some`, for state the server settles in the
/// background (a delivery logged, a webhook disabled); panics after [`WAIT`].
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} did not happen in time"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn header<'a>(request: &'a Received, name: &str) -> &'a str {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header"))
}

#[tokio::test]
async fn a_delivery_is_signed_both_ways_and_logged() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|_| {}).await;
    let (hook, secret) = create_webhook(&app, &receiver.url("/ok"), &["teams.*.create"]).await;
    assert!(secret.starts_with("whsec_"), "{secret}");
    create_team(&app, "signed").await;

    let request = receiver.wait_for("/ok", 1).await.remove(0);
    let body: Value = serde_json::from_str(&request.body).unwrap();
    assert_eq!(body["payload"]["id"], "signed");
    assert_eq!(body["events"][0], "teams.signed.create");
    let id = header(&request, "webhook-id");
    assert_eq!(body["id"], id);
    let timestamp = header(&request, "webhook-timestamp");
    let now = chrono::Utc::now().timestamp();
    assert!((now - timestamp.parse::<i64>().unwrap()).abs() < 60);

    // Standard Webhooks: HMAC-SHA256 of `id.timestamp.body` under the decoded key.
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = <Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.{}", request.body).as_bytes());
    let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
    assert_eq!(header(&request, "webhook-signature"), expected);

    // Appwrite: base64 HMAC-SHA1 of URL + body under the secret.
    let mut mac = <Hmac<sha1::Sha1> as hmac::Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}{}", receiver.url("/ok"), request.body).as_bytes());
    assert_eq!(
        header(&request, "x-appwrite-webhook-signature"),
        STANDARD.encode(mac.finalize().into_bytes())
    );
    assert_eq!(header(&request, "x-appwrite-webhook-id"), hook);
    assert_eq!(header(&request, "x-appwrite-webhook-name"), "hook");
    assert_eq!(header(&request, "x-appwrite-webhook-project-id"), "default");
    // Appwrite's names: the event's, without its action, with `*` for its id.
    let names: Vec<&str> = header(&request, "x-appwrite-webhook-events")
        .split(',')
        .collect();
    assert_eq!(
        names,
        [
            "teams.signed.create",
            "teams.*.create",
            "teams.signed",
            "teams.*"
        ]
    );

    let logged = eventually("the delivery log", || async {
        let logged = deliveries(&app, &hook).await;
        (!logged.is_empty()).then_some(logged)
    })
    .await;
    assert_eq!(logged[0]["eventId"], id);
    assert_eq!(logged[0]["statusCode"], 200);
    assert_eq!(logged[0]["success"], true);
    assert_eq!(logged[0]["attempt"], 1);
    assert_eq!(logged[0]["responseExcerpt"], "thanks");

    // A rotated secret signs from now on; the old one no longer does.
    let rotated = app
        .admin(
            "mutation($id: ID!) { rotateWebhookSecret(input: {id: $id}) { secret webhook { id } } }",
            json!({"id": hook}),
        )
        .await
        .ok();
    let new_secret = rotated["rotateWebhookSecret"]["secret"].as_str().unwrap();
    assert_ne!(new_secret, secret);
    create_team(&app, "rotated").await;
    let request = receiver.wait_for("/ok", 2).await.remove(1);
    let key = STANDARD
        .decode(new_secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = <Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&key).unwrap();
    mac.update(
        format!(
            "{}.{}.{}",
            header(&request, "webhook-id"),
            header(&request, "webhook-timestamp"),
            request.body
        )
        .as_bytes(),
    );
    assert_eq!(
        header(&request, "webhook-signature"),
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    );
    // The secret is never shown again.
    let listed = app
        .admin("{ webhooks { nodes { id name url } } }", json!({}))
        .await
        .ok();
    assert!(!listed.to_string().contains("whsec_"));
    app.shutdown().await;
}

#[tokio::test]
async fn patterns_and_wildcards_choose_the_events_delivered_once_each() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|_| {}).await;
    create_webhook(&app, &receiver.url("/ok/one-team"), &["teams.alpha"]).await;
    create_webhook(&app, &receiver.url("/ok/created"), &["teams.*.create"]).await;
    create_webhook(&app, &receiver.url("/ok/users"), &["users.*.create"]).await;
    let (off, _) = create_webhook(&app, &receiver.url("/ok/off"), &["teams.*"]).await;
    app.admin(
        "mutation($id: ID!) { updateWebhook(input: {id: $id, enabled: false}) { enabled } }",
        json!({"id": off}),
    )
    .await
    .ok();

    create_team(&app, "alpha").await;
    create_team(&app, "beta").await;
    app.admin(
        "mutation { updateTeamName(input: {id: \"alpha\", name: \"Renamed\"}) { id } }",
        json!({}),
    )
    .await
    .ok();

    // Deliveries are queued by the event log's webhooks consumer once each write
    // has committed: four jobs, no more.
    eventually("four delivery jobs", || async {
        let jobs = app
            .admin(
                "{ jobs(kind: \"webhook\", first: 100) { totalCount } }",
                json!({}),
            )
            .await
            .ok();
        (jobs["jobs"]["totalCount"] == 4).then_some(())
    })
    .await;
    let one = receiver.wait_for("/ok/one-team", 2).await;
    let created = receiver.wait_for("/ok/created", 2).await;
    let names = |requests: &[Received]| -> Vec<String> {
        let mut names: Vec<String> = requests
            .iter()
            .map(|r| {
                serde_json::from_str::<Value>(&r.body).unwrap()["events"][0]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&one), ["teams.alpha.create", "teams.alpha.update"]);
    assert_eq!(names(&created), ["teams.alpha.create", "teams.beta.create"]);
    assert!(receiver.requests_to("/ok/users").is_empty());
    assert!(receiver.requests_to("/ok/off").is_empty());

    // Hearing an event again (a replay, a second replica) queues nothing more.
    let state = app.server.as_ref().unwrap().state();
    let event = nimbus::bus::Event::change(
        "default",
        "teams.gamma",
        "teams.*",
        "create",
        json!({"id": "gamma"}),
    );
    use nimbus::services::webhooks::service::{Hooks, queue_deliveries};
    let mut conn = state.db.pool().acquire().await.unwrap();
    let first = queue_deliveries(state, &mut conn, &mut Hooks::default(), &event)
        .await
        .unwrap();
    let again = queue_deliveries(state, &mut conn, &mut Hooks::default(), &event)
        .await
        .unwrap();
    assert_eq!((first, again), (1, 0));
    let gamma = receiver.wait_for("/ok/created", 3).await;
    assert_eq!(gamma.iter().filter(|r| r.body.contains("gamma")).count(), 1);
    app.shutdown().await;
}

#[tokio::test]
async fn failures_are_logged_and_disable_the_webhook_until_it_is_enabled_again() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|c| c.webhooks_failure_threshold = 3).await;
    let (hook, _) = create_webhook(&app, &receiver.url("/fail"), &["teams.*.create"]).await;
    create_team(&app, "failing").await;

    let disabled = eventually("the webhook disabled", || async {
        let state = webhook(&app, &hook).await;
        (state["enabled"] == false).then_some(state)
    })
    .await;
    assert_eq!(disabled["failures"], 3);
    let logged = deliveries(&app, &hook).await;
    assert_eq!(logged.len(), 3, "{logged:?}");
    for (n, attempt) in logged.iter().enumerate() {
        assert_eq!(attempt["statusCode"], 500);
        assert_eq!(attempt["success"], false);
        assert_eq!(attempt["attempt"], n as i64 + 1);
        assert_eq!(attempt["responseExcerpt"], "nope");
        assert!(attempt["error"].as_str().unwrap().contains("500"));
    }
    let dead = app
        .admin(
            "{ jobs(kind: \"webhook\", status: DEAD) { nodes { attempts lastError } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(dead["jobs"]["nodes"][0]["attempts"], 3);
    assert!(
        dead["jobs"]["nodes"][0]["lastError"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );

    // Disabled: new events are not delivered.
    create_team(&app, "ignored").await;
    assert_eq!(receiver.requests_to("/fail").len(), 3);
    // Enabled again, its count starts afresh and deliveries resume.
    let enabled = app
        .admin(
            "mutation($id: ID!) { updateWebhook(input: {id: $id, enabled: true}) { enabled failures } }",
            json!({"id": hook}),
        )
        .await
        .ok();
    assert_eq!(
        enabled["updateWebhook"],
        json!({"enabled": true, "failures": 0})
    );
    create_team(&app, "again").await;
    receiver.wait_for("/fail", 4).await;
    app.shutdown().await;
}

#[tokio::test]
async fn slow_huge_and_redirecting_receivers_are_failed_attempts() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|c| c.jobs_max_attempts = 1).await;
    let (slow, _) = create_webhook(&app, &receiver.url("/slow"), &["teams.*.create"]).await;
    let (big, _) = create_webhook(&app, &receiver.url("/big"), &["teams.*.create"]).await;
    let (redirect, _) = create_webhook(&app, &receiver.url("/redirect"), &["teams.*.create"]).await;
    create_team(&app, "stress").await;

    let attempt = |id: String| {
        let app = &app;
        async move {
            eventually("a logged attempt", || {
                let id = id.clone();
                async move { deliveries(app, &id).await.into_iter().next() }
            })
            .await
        }
    };
    let slow = attempt(slow).await;
    assert_eq!(slow["success"], false);
    assert_eq!(slow["statusCode"], Value::Null);
    assert!(
        slow["error"].as_str().unwrap().contains("no answer within"),
        "{slow}"
    );
    assert!(slow["durationMs"].as_i64().unwrap() < 5_000);

    let big = attempt(big).await;
    assert_eq!(big["success"], false);
    assert_eq!(big["statusCode"], 200);
    assert!(big["error"].as_str().unwrap().contains("over"), "{big}");
    assert!(big["responseExcerpt"].as_str().unwrap().len() <= 1024);

    let redirect = attempt(redirect).await;
    assert_eq!(redirect["success"], false);
    assert_eq!(redirect["statusCode"], 307);
    assert!(
        redirect["error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed")
    );

    // The server is fine.
    let health = app
        .client
        .get(format!("{}/health", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    app.shutdown().await;
}

#[tokio::test]
async fn by_default_private_loopback_and_link_local_receivers_are_refused() {
    let app = spawn_app().await;
    assert!(!app.config.webhooks_allow_private);
    for url in [
        "http://127.0.0.1/hook",
        "http://10.0.0.1/hook",
        "http://[::1]/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://localhost:8080/hook",
        "http://[::ffff:192.168.0.1]/",
    ] {
        let answer = app
            .admin(
                CREATE,
                json!({"input": {"name": "hook", "url": url, "events": ["users.*"]}}),
            )
            .await;
        assert_eq!(
            answer.code(),
            "INVALID_WEBHOOK_URL",
            "{url}: {:?}",
            answer.body
        );
        let message = answer.body["errors"][0]["message"].as_str().unwrap();
        assert!(message.contains("private"), "{message}");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn hostile_inputs_get_clear_codes() {
    let app = app_with_webhooks(|_| {}).await;
    let create = |input: Value| {
        let app = &app;
        async move { app.admin(CREATE, json!({"input": input})).await }
    };
    let long_url = format!("http://example.com/{}", "a".repeat(3000));
    for url in [
        "ftp://example.com/hook",
        "javascript:alert(1)",
        "file:///etc/passwd",
        "http://user:pass@example.com/",
        "not a url",
        "",
        long_url.as_str(),
    ] {
        let answer = create(json!({"name": "h", "url": url, "events": ["users.*"]})).await;
        assert_eq!(answer.code(), "INVALID_WEBHOOK_URL", "{url}");
    }
    let many: Vec<String> = (0..10_000).map(|i| format!("users.u{i}.create")).collect();
    for events in [
        json!([]),
        json!(many),
        json!(["nope.*"]),
        json!(["users.*.explode"]),
        json!(["*"]),
        json!([format!("users.{}", "x".repeat(300))]),
    ] {
        let answer =
            create(json!({"name": "h", "url": "http://example.com/", "events": events})).await;
        assert_eq!(answer.code(), "INVALID_WEBHOOK_EVENTS");
    }
    for (input, code) in [
        (
            json!({"name": "", "url": "http://example.com/", "events": ["users.*"]}),
            "BAD_USER_INPUT",
        ),
        (
            json!({"name": "a\nb", "url": "http://example.com/", "events": ["users.*"]}),
            "BAD_USER_INPUT",
        ),
        (
            json!({"id": "bad id", "name": "h", "url": "http://example.com/", "events": ["users.*"]}),
            "INVALID_ID",
        ),
        (
            json!({"name": "h", "url": "http://example.com/", "events": ["users.*"], "extra": 1}),
            "GRAPHQL_VALIDATION_FAILED",
        ),
    ] {
        assert_eq!(create(input.clone()).await.code(), code, "{input}");
    }
    create(json!({"id": "dup", "name": "h", "url": "http://example.com/", "events": ["users.*"]}))
        .await
        .ok();
    let again = create(
        json!({"id": "dup", "name": "h", "url": "http://example.com/", "events": ["users.*"]}),
    )
    .await;
    assert_eq!(again.code(), "WEBHOOK_ALREADY_EXISTS");
    let bad_update = app
        .admin(
            "mutation { updateWebhook(input: {id: \"dup\", url: \"gopher://x/\"}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(bad_update.code(), "INVALID_WEBHOOK_URL");
    let bad_update = app
        .admin(
            "mutation { updateWebhook(input: {id: \"dup\", events: [\"buckets.*.files.*.fly\"]}) { id } }",
            json!({}),
        )
        .await;
    assert_eq!(bad_update.code(), "INVALID_WEBHOOK_EVENTS");
    for mutation in [
        "mutation { updateWebhook(input: {id: \"missing\", name: \"x\"}) { id } }",
        "mutation { rotateWebhookSecret(input: {id: \"missing\"}) { secret } }",
        "mutation { deleteWebhook(input: {id: \"missing\"}) { deletedId } }",
        "{ webhook(id: \"missing\") { id } }",
        "{ webhookDeliveries(webhookId: \"missing\") { totalCount } }",
    ] {
        assert_eq!(
            app.admin(mutation, json!({})).await.code(),
            "WEBHOOK_NOT_FOUND",
            "{mutation}"
        );
    }
    // Scopes: a key that may read webhooks may not change them; another project's
    // webhooks are out of sight.
    let reader = app.create_key("default", &["webhooks.read"]).await;
    let denied = app
        .as_key(
            &reader,
            "default",
            "mutation { deleteWebhook(input: {id: \"dup\"}) { deletedId } }",
            json!({}),
        )
        .await;
    assert_eq!(denied.code(), "SCOPE_MISSING");
    app.create_project("elsewhere").await;
    let other = app
        .create_key("elsewhere", &["webhooks.read", "webhooks.write"])
        .await;
    let hidden = app
        .as_key(
            &other,
            "elsewhere",
            "{ webhook(id: \"dup\") { id } }",
            json!({}),
        )
        .await;
    assert_eq!(hidden.code(), "WEBHOOK_NOT_FOUND");
    let deleted = app
        .admin(
            "mutation { deleteWebhook(input: {id: \"dup\"}) { deletedId } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(deleted["deleteWebhook"]["deletedId"], "dup");
    app.shutdown().await;
}

#[tokio::test]
async fn delivery_attempts_can_be_watched_live() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|_| {}).await;
    let (hook, _) = create_webhook(&app, &receiver.url("/ok"), &["teams.*.create"]).await;
    let watcher = app.create_key("default", &["webhooks.read"]).await;
    let mut ws = crate::helpers::WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"X-Nimbus-Key": watcher}))
        .await
        .expect("ack");
    ws.subscribe(
        "d",
        &format!(
            "subscription {{ realtime(channels: [\"webhooks.{hook}.deliveries\"]) {{ events payload }} }}"
        ),
    )
    .await;
    // Messages are handled in order: after the pong, the subscription is live.
    ws.ping_pong().await;
    create_team(&app, "watched").await;
    let event = ws.next_json().await.expect("a delivery event");
    let data = &event["payload"]["data"]["realtime"];
    assert!(
        data["events"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("webhooks.{hook}.deliveries.")),
        "{event}"
    );
    assert_eq!(data["payload"]["webhookId"], hook);
    assert_eq!(data["payload"]["statusCode"], 200);
    assert_eq!(data["payload"]["success"], true);
    app.shutdown().await;
}

#[tokio::test]
async fn deliveries_carry_basic_credentials_whose_password_is_never_shown() {
    let receiver = Receiver::start().await;
    let app = app_with_webhooks(|_| {}).await;
    let made = app
        .admin(
            "mutation($input: CreateWebhookInput!) { createWebhook(input: $input) { webhook { id httpUser } } }",
            json!({"input": {"name": "hook", "url": receiver.url("/ok/basic"), "events": ["teams.*.create"], "httpUser": "ann", "httpPass": "s3cret pass"}}),
        )
        .await
        .ok();
    let hook = made["createWebhook"]["webhook"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(made["createWebhook"]["webhook"]["httpUser"], "ann");
    assert!(!made.to_string().contains("s3cret"), "{made}");
    create_team(&app, "basic").await;
    let request = receiver.wait_for("/ok/basic", 1).await.remove(0);
    assert_eq!(
        header(&request, "authorization"),
        format!("Basic {}", STANDARD.encode("ann:s3cret pass"))
    );

    // A new user keeps the password; no user, no credentials.
    let update =
        "mutation($input: UpdateWebhookInput!) { updateWebhook(input: $input) { httpUser } }";
    app.admin(update, json!({"input": {"id": hook, "httpUser": "bob"}}))
        .await
        .ok();
    create_team(&app, "basic2").await;
    let request = receiver.wait_for("/ok/basic", 2).await.remove(1);
    assert_eq!(
        header(&request, "authorization"),
        format!("Basic {}", STANDARD.encode("bob:s3cret pass"))
    );
    let cleared = app
        .admin(update, json!({"input": {"id": hook, "httpUser": ""}}))
        .await
        .ok();
    assert_eq!(cleared["updateWebhook"]["httpUser"], Value::Null);
    create_team(&app, "basic3").await;
    let request = receiver.wait_for("/ok/basic", 3).await.remove(2);
    assert!(request.headers.get("authorization").is_none());

    for (input, field) in [
        (json!({"httpUser": "a:b", "httpPass": "x"}), "httpUser"),
        (json!({"httpUser": "a\nb"}), "httpUser"),
        (json!({"httpUser": "u".repeat(300)}), "httpUser"),
        (json!({"httpPass": "only a password"}), "httpPass"),
    ] {
        let mut full = json!({"name": "h", "url": "http://example.com/", "events": ["users.*"]});
        full.as_object_mut()
            .unwrap()
            .extend(input.as_object().unwrap().clone());
        let refused = app.admin(CREATE, json!({"input": full})).await;
        assert_eq!(
            refused.code(),
            "BAD_USER_INPUT",
            "{input}: {:#}",
            refused.body
        );
        assert_eq!(
            refused.body["errors"][0]["extensions"]["field"], field,
            "{:#}",
            refused.body
        );
    }
    app.shutdown().await;
}
