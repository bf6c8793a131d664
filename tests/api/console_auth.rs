//! Console administrators and sign-in: `nimbus admin`, `/console/api/session` and
//! the TOTP routes, the console cookie with its CSRF token as a credential on
//! GraphQL over HTTP and WebSocket (where using it renews its idle end too), and
//! `createUserJWT`.

use std::process::{Command, Stdio};

use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::helpers::{TestApp, WAIT, WsClient, spawn_app};

pub(crate) const PASSWORD: &str = "console-pass-47";

/// `nimbus admin ARGS…` against the test server's database, the password (if any)
/// on standard input; its success, standard output and standard error.
///
/// The command runs on the blocking pool: the test server shares this test's
/// runtime, and a write transaction it has open must be able to commit while
/// the command waits for SQLite's lock.
pub(crate) async fn nimbus_admin(
    app: &TestApp,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String, String) {
    let database_url = app.config.effective_database_url();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let stdin = stdin.map(str::to_string);
    tokio::task::spawn_blocking(move || run_admin(&database_url, &args, stdin.as_deref()))
        .await
        .unwrap()
}

fn run_admin(database_url: &str, args: &[String], stdin: Option<&str>) -> (bool, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_nimbus"));
    for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("NIMBUS_")) {
        command.env_remove(name);
    }
    command
        .arg("admin")
        .args(args)
        .env("NIMBUS_DATABASE_URL", database_url)
        .env("NIMBUS_DATA_DIR", dir.path())
        .env("NIMBUS_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("nimbus runs");
    {
        use std::io::Write as _;
        let mut input = child.stdin.take().unwrap();
        if let Some(text) = stdin {
            writeln!(input, "{text}").unwrap();
        }
    }
    let output = child.wait_with_output().unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

pub(crate) async fn create_admin(app: &TestApp, email: &str) {
    let (ok, _, stderr) = nimbus_admin(
        app,
        &["create", "--email", email, "--password-stdin"],
        Some(PASSWORD),
    )
    .await;
    assert!(ok, "admin create failed: {stderr}");
}

/// A console API answer: status, headers and JSON body (`Null` when empty).
pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

impl Reply {
    pub(crate) fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("<none>")
    }

    /// The `nimbus_console=…` cookie pair the answer sets.
    fn cookie(&self) -> String {
        let set = self.set_cookie();
        set.split(';').next().unwrap().trim().to_string()
    }

    fn set_cookie(&self) -> String {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .find(|v| v.starts_with("nimbus_console="))
            .expect("a nimbus_console cookie is set")
    }
}

pub(crate) async fn console(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<reqwest::Body>,
) -> Reply {
    let mut request = app
        .client
        .request(method, format!("{}/console/api/{path}", app.url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

pub(crate) async fn sign_in(
    app: &TestApp,
    email: &str,
    password: &str,
    otp: Option<&str>,
) -> Reply {
    let mut input = json!({"email": email, "password": password});
    if let Some(otp) = otp {
        input["otp"] = json!(otp);
    }
    console(
        app,
        reqwest::Method::POST,
        "session",
        &[("content-type", "application/json")],
        Some(input.to_string().into()),
    )
    .await
}

/// Signs in; the cookie pair and the CSRF token.
pub(crate) async fn signed_in(app: &TestApp, email: &str) -> (String, String) {
    let reply = sign_in(app, email, PASSWORD, None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let csrf = reply.body["csrf"].as_str().unwrap().to_string();
    (reply.cookie(), csrf)
}

/// A GraphQL request with the console cookie (and the CSRF header when given).
pub(crate) async fn as_console(
    app: &TestApp,
    cookie: &str,
    csrf: Option<&str>,
    project: &str,
    query: &str,
    variables: Value,
) -> crate::helpers::Answer {
    let mut headers = vec![("cookie", cookie), ("x-nimbus-project", project)];
    if let Some(csrf) = csrf {
        headers.push(("x-nimbus-csrf", csrf));
    }
    app.post(json!({"query": query, "variables": variables}), &headers)
        .await
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn totp_code(secret: &str, at: u64) -> String {
    let secret = nimbus::auth::totp::TotpSecret::from_base32(secret).unwrap();
    nimbus::auth::totp::code_at(&secret, at)
}

/// A WebSocket to the server with these upgrade headers.
async fn socket(app: &TestApp, headers: &[(&str, &str)]) -> WsClient {
    let mut request = app.ws_url.as_str().into_client_request().unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().unwrap(),
    );
    for (name, value) in headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let (socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("websocket connects");
    WsClient {
        socket,
        legacy: false,
    }
}

/// The answer to one operation on the socket (its `next`), or the close.
async fn ws_query(ws: &mut WsClient, id: &str, query: &str) -> Result<Value, (u16, String)> {
    ws.send(json!({"id": id, "type": "subscribe", "payload": {"query": query}}))
        .await;
    loop {
        let message = ws.next_json().await?;
        if message["id"] == id && message["type"] == "next" {
            return Ok(message["payload"].clone());
        }
        if message["id"] == id && message["type"] == "error" {
            return Ok(json!({"errors": message["payload"]}));
        }
    }
}

fn own_origin(app: &TestApp) -> String {
    app.url.clone()
}

#[tokio::test]
async fn an_administrator_made_by_the_cli_signs_in_and_acts_as_admin_only_with_the_csrf_token() {
    let app = spawn_app().await;
    create_admin(&app, "Root@Example.com").await;
    let (ok, listed, _) = nimbus_admin(&app, &["list"], None).await;
    assert!(ok);
    assert!(
        listed.starts_with("root@example.com\tpassword\t"),
        "{listed}"
    );

    let reply = sign_in(&app, "root@example.com", PASSWORD, None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["email"], "root@example.com");
    assert_eq!(reply.body["totp"], false);
    let csrf = reply.body["csrf"].as_str().unwrap().to_string();
    assert!(csrf.len() >= 32, "{csrf}");
    assert!(reply.body["expiresAt"].as_str().unwrap().ends_with('Z'));
    // The cookie's attributes, exactly: a browser session cookie that scripts
    // cannot read and no other site's page sends; not `Secure` over plain http.
    let set_cookie = reply.set_cookie();
    let mut attributes: Vec<&str> = set_cookie.split(';').skip(1).map(str::trim).collect();
    attributes.sort_unstable();
    assert_eq!(
        attributes,
        ["HttpOnly", "Path=/", "SameSite=Strict"],
        "{set_cookie}"
    );
    let cookie = reply.cookie();
    assert!(cookie.starts_with("nimbus_console=nc_"), "{cookie}");

    let current = console(
        &app,
        reqwest::Method::GET,
        "session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(current.status, 200);
    assert_eq!(current.body["csrf"], csrf.as_str());
    assert_eq!(current.body["email"], "root@example.com");

    // Signing in again from a browser that holds a session replaces it.
    let input = json!({"email": "root@example.com", "password": PASSWORD}).to_string();
    let again = console(
        &app,
        reqwest::Method::POST,
        "session",
        &[("content-type", "application/json"), ("cookie", &cookie)],
        Some(input.into()),
    )
    .await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_ne!(again.cookie(), cookie);
    let replaced = console(
        &app,
        reqwest::Method::GET,
        "session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!(replaced.status, 401);
    let cookie = again.cookie();
    let csrf = again.body["csrf"].as_str().unwrap().to_string();

    // With the token: the server-wide admin scope, in any project.
    let created = as_console(
        &app,
        &cookie,
        Some(&csrf),
        "default",
        "mutation { createProject(input: {id: \"shop\", name: \"Shop\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(created["createProject"]["id"], "shop");
    app.as_key(
        &app.create_key("shop", &["users.write"]).await,
        "shop",
        "mutation { createUser(input: {id: \"ann\", email: \"ann@example.com\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let users = as_console(
        &app,
        &cookie,
        Some(&csrf),
        "shop",
        "{ users { totalCount nodes { id } } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(users["users"]["totalCount"], 1);
    assert_eq!(users["users"]["nodes"][0]["id"], "ann");

    // The cookie alone, or with another token, is no credential: anonymous.
    let query = "mutation { createProject(input: {id: \"shop2\", name: \"Shop\"}) { id } }";
    let bare = as_console(&app, &cookie, None, "default", query, json!({})).await;
    assert_eq!(bare.code(), "UNAUTHENTICATED", "{:?}", bare.body);
    let forged = as_console(
        &app,
        &cookie,
        Some("x".repeat(43).as_str()),
        "default",
        query,
        json!({}),
    )
    .await;
    assert_eq!(forged.code(), "UNAUTHENTICATED", "{:?}", forged.body);
    let listed = as_console(
        &app,
        &cookie,
        None,
        "shop",
        "{ users { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(listed.code(), "UNAUTHENTICATED", "{:?}", listed.body);
    // A token without its cookie neither.
    let token_only = app
        .post(json!({"query": query}), &[("x-nimbus-csrf", csrf.as_str())])
        .await;
    assert_eq!(token_only.code(), "UNAUTHENTICATED");

    // Another administrator's cookie with this token: tokens are per session.
    create_admin(&app, "ops@example.com").await;
    let (other_cookie, _) = signed_in(&app, "ops@example.com").await;
    let crossed = as_console(
        &app,
        &other_cookie,
        Some(&csrf),
        "default",
        query,
        json!({}),
    )
    .await;
    assert_eq!(crossed.code(), "UNAUTHENTICATED");
    app.shutdown().await;
}

#[tokio::test]
async fn the_cli_refuses_weak_passwords_and_twins_and_deletes_administrators_with_their_sessions() {
    let app = spawn_app().await;
    let (ok, _, stderr) = nimbus_admin(
        &app,
        &["create", "--email", "weak@example.com", "--password-stdin"],
        Some("password"),
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("PASSWORD_TOO_COMMON"), "{stderr}");
    let (ok, _, stderr) = nimbus_admin(
        &app,
        &["create", "--email", "short@example.com", "--password-stdin"],
        Some("abc"),
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("PASSWORD_TOO_SHORT"), "{stderr}");
    let (ok, _, stderr) = nimbus_admin(
        &app,
        &["create", "--email", "not-an-email", "--password-stdin"],
        Some(PASSWORD),
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("INVALID_EMAIL"), "{stderr}");
    let (ok, _, stderr) = nimbus_admin(&app, &["create", "--email", "x@example.com"], None).await;
    assert!(!ok, "no terminal and no --password-stdin");
    assert!(stderr.contains("--password-stdin"), "{stderr}");

    create_admin(&app, "root@example.com").await;
    let (ok, _, stderr) = nimbus_admin(
        &app,
        &["create", "--email", "ROOT@example.com", "--password-stdin"],
        Some(PASSWORD),
    )
    .await;
    assert!(!ok);
    assert!(stderr.contains("ADMIN_ALREADY_EXISTS"), "{stderr}");

    let (cookie, csrf) = signed_in(&app, "root@example.com").await;
    let query = "{ projects { totalCount } }";
    as_console(&app, &cookie, Some(&csrf), "default", query, json!({}))
        .await
        .ok();
    let origin = own_origin(&app);
    let mut ws = socket(&app, &[("origin", &origin), ("cookie", &cookie)]).await;
    assert_eq!(
        ws.init(json!({"csrf": csrf})).await.unwrap()["type"],
        "connection_ack"
    );
    let (ok, _, stderr) =
        nimbus_admin(&app, &["delete", "--email", "root@example.com"], None).await;
    assert!(ok, "{stderr}");
    // Deleted by another process: the server hears it from the event log, and the
    // socket let in with the administrator's session closes.
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if let Err(close) = ws.next_json().await {
                return close;
            }
        }
    })
    .await
    .expect("the socket closes");
    assert_eq!(closed.0, 4403, "{closed:?}");
    let after = as_console(&app, &cookie, Some(&csrf), "default", query, json!({})).await;
    assert_eq!(after.code(), "UNAUTHENTICATED");
    let (ok, listed, _) = nimbus_admin(&app, &["list"], None).await;
    assert!(ok);
    assert_eq!(listed, "");
    let (ok, _, stderr) =
        nimbus_admin(&app, &["delete", "--email", "root@example.com"], None).await;
    assert!(!ok);
    assert!(stderr.contains("ADMIN_NOT_FOUND"), "{stderr}");
    app.shutdown().await;
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_email_get_the_same_answer_until_the_limit() {
    let app = spawn_app().await;
    create_admin(&app, "root@example.com").await;
    let wrong = sign_in(&app, "root@example.com", "not-the-password", None).await;
    let unknown = sign_in(&app, "nobody@example.com", PASSWORD, None).await;
    assert_eq!((wrong.status, wrong.code()), (401, "INVALID_CREDENTIALS"));
    assert_eq!(
        (unknown.status, unknown.code()),
        (401, "INVALID_CREDENTIALS")
    );
    assert_eq!(wrong.body, unknown.body);
    assert!(wrong.headers.get("set-cookie").is_none());

    // Ten attempts per email an hour (one was made above): the eleventh is refused
    // before the password is looked at, the right one included.
    for _ in 0..9 {
        let reply = sign_in(&app, "root@example.com", "not-the-password", None).await;
        assert_eq!(reply.code(), "INVALID_CREDENTIALS");
    }
    let limited = sign_in(&app, "root@example.com", PASSWORD, None).await;
    assert_eq!((limited.status, limited.code()), (429, "RATE_LIMITED"));
    let retry_after: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&retry_after), "{retry_after}");
    // Another email from the same address still gets an answer.
    let other = sign_in(&app, "nobody@example.com", PASSWORD, None).await;
    assert_eq!(other.code(), "INVALID_CREDENTIALS");
    app.shutdown().await;
}

#[tokio::test]
async fn with_totp_enrolled_sign_in_needs_a_current_code() {
    let app = spawn_app().await;
    create_admin(&app, "root@example.com").await;
    let (cookie, csrf) = signed_in(&app, "root@example.com").await;
    let with_token = [
        ("cookie", cookie.as_str()),
        ("x-nimbus-csrf", csrf.as_str()),
        ("content-type", "application/json"),
    ];
    // Enrolling needs the token too.
    let refused = console(
        &app,
        reqwest::Method::POST,
        "totp",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!((refused.status, refused.code()), (401, "UNAUTHENTICATED"));
    let enrolled = console(&app, reqwest::Method::POST, "totp", &with_token, None).await;
    assert_eq!(enrolled.status, 200, "{}", enrolled.body);
    let secret = enrolled.body["secret"].as_str().unwrap().to_string();
    let uri = enrolled.body["uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    assert!(uri.contains("root%40example.com"), "{uri}");

    // Not active until verified: sign-in still needs no code.
    sign_in(&app, "root@example.com", PASSWORD, None).await;
    let wrong = console(
        &app,
        reqwest::Method::POST,
        "totp/verify",
        &with_token,
        Some(json!({"otp": "000000"}).to_string().into()),
    )
    .await;
    assert_eq!(wrong.code(), "INVALID_MFA_CODE", "{}", wrong.body);
    let verified = console(
        &app,
        reqwest::Method::POST,
        "totp/verify",
        &with_token,
        Some(
            json!({"otp": totp_code(&secret, now_unix())})
                .to_string()
                .into(),
        ),
    )
    .await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    assert_eq!(verified.body["totp"], true);

    let without = sign_in(&app, "root@example.com", PASSWORD, None).await;
    assert_eq!((without.status, without.code()), (401, "MFA_REQUIRED"));
    assert!(without.headers.get("set-cookie").is_none());
    let bad = sign_in(&app, "root@example.com", PASSWORD, Some("123456")).await;
    assert_eq!(bad.code(), "INVALID_MFA_CODE");
    // A wrong password with a code is still only a wrong password.
    let code = totp_code(&secret, now_unix() + 30);
    let wrong_password = sign_in(&app, "root@example.com", "nope-nope-nope", Some(&code)).await;
    assert_eq!(wrong_password.code(), "INVALID_CREDENTIALS");
    let accepted = sign_in(&app, "root@example.com", PASSWORD, Some(&code)).await;
    assert_eq!(accepted.status, 200, "{}", accepted.body);
    assert_eq!(accepted.body["totp"], true);
    // The same code again is a replay.
    let replayed = sign_in(&app, "root@example.com", PASSWORD, Some(&code)).await;
    assert_eq!(replayed.code(), "INVALID_MFA_CODE");
    app.shutdown().await;
}

#[tokio::test]
async fn removing_totp_takes_a_code_and_sign_in_needs_none_after() {
    let app = spawn_app().await;
    create_admin(&app, "root@example.com").await;
    let (cookie, csrf) = signed_in(&app, "root@example.com").await;
    let with_token = [
        ("cookie", cookie.as_str()),
        ("x-nimbus-csrf", csrf.as_str()),
        ("content-type", "application/json"),
    ];
    let enrolled = console(&app, reqwest::Method::POST, "totp", &with_token, None).await;
    let secret = enrolled.body["secret"].as_str().unwrap().to_string();
    let verify = json!({"otp": totp_code(&secret, now_unix())}).to_string();
    let verified = console(
        &app,
        reqwest::Method::POST,
        "totp/verify",
        &with_token,
        Some(verify.into()),
    )
    .await;
    assert_eq!(verified.status, 200, "{}", verified.body);
    let again = console(&app, reqwest::Method::POST, "totp", &with_token, None).await;
    assert_eq!(again.code(), "AUTHENTICATOR_ALREADY_EXISTS");

    let wrong = json!({"otp": "111111"}).to_string();
    let refused = console(
        &app,
        reqwest::Method::DELETE,
        "totp",
        &with_token,
        Some(wrong.into()),
    )
    .await;
    assert_eq!(refused.code(), "INVALID_MFA_CODE");
    let code = json!({"otp": totp_code(&secret, now_unix() + 30)}).to_string();
    let removed = console(
        &app,
        reqwest::Method::DELETE,
        "totp",
        &with_token,
        Some(code.into()),
    )
    .await;
    assert_eq!(removed.status, 200, "{}", removed.body);
    assert_eq!(removed.body["totp"], false);
    let plain = sign_in(&app, "root@example.com", PASSWORD, None).await;
    assert_eq!(plain.status, 200, "{}", plain.body);
    app.shutdown().await;
}

#[tokio::test]
async fn signing_out_revokes_the_session_for_requests_and_open_sockets() {
    let app = spawn_app().await;
    create_admin(&app, "root@example.com").await;
    let (cookie, csrf) = signed_in(&app, "root@example.com").await;
    let origin = own_origin(&app);

    let mut ws = socket(&app, &[("origin", &origin), ("cookie", &cookie)]).await;
    let ack = ws.init(json!({"csrf": csrf})).await.unwrap();
    assert_eq!(ack["type"], "connection_ack");
    let answer = ws_query(&mut ws, "1", "{ projects { totalCount } }")
        .await
        .unwrap();
    assert_eq!(answer["data"]["projects"]["totalCount"], 1, "{answer}");

    // Signing out needs the token.
    let refused = console(
        &app,
        reqwest::Method::DELETE,
        "session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!((refused.status, refused.code()), (401, "UNAUTHENTICATED"));
    let out = console(
        &app,
        reqwest::Method::DELETE,
        "session",
        &[("cookie", &cookie), ("x-nimbus-csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(out.status, 204);
    let cleared = out.set_cookie();
    assert!(cleared.starts_with("nimbus_console=;"), "{cleared}");
    assert!(cleared.contains("Max-Age=0"), "{cleared}");

    // The socket let in with the session ends with it.
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match ws.next_json().await {
                Err(close) => return close,
                Ok(_) => continue,
            }
        }
    })
    .await
    .expect("the socket closes");
    assert_eq!(closed.0, 4403, "{closed:?}");
    assert!(closed.1.starts_with("INVALID_SESSION"), "{closed:?}");

    // The cookie kept by a stolen copy opens nothing any more.
    let reused = as_console(
        &app,
        &cookie,
        Some(&csrf),
        "default",
        "{ projects { totalCount } }",
        json!({}),
    )
    .await;
    assert_eq!(reused.code(), "UNAUTHENTICATED");
    let current = console(
        &app,
        reqwest::Method::GET,
        "session",
        &[("cookie", &cookie)],
        None,
    )
    .await;
    assert_eq!((current.status, current.code()), (401, "UNAUTHENTICATED"));
    let again = console(
        &app,
        reqwest::Method::DELETE,
        "session",
        &[("cookie", &cookie), ("x-nimbus-csrf", &csrf)],
        None,
    )
    .await;
    assert_eq!(again.status, 401);
    app.shutdown().await;
}

#[tokio::test]
async fn a_websocket_gets_the_console_cookie_only_from_the_servers_own_page_with_the_token() {
    let app = spawn_app().await;
    create_admin(&app, "root@example.com").await;
    let (cookie, csrf) = signed_in(&app, "root@example.com").await;
    let admin_only = "{ projects { totalCount } }";

    // Another site's page: the cookie is ignored, the token does not help.
    let mut foreign = socket(
        &app,
        &[("origin", "http://evil.example"), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(
        foreign.init(json!({"csrf": csrf})).await.unwrap()["type"],
        "connection_ack"
    );
    let answer = ws_query(&mut foreign, "1", admin_only).await.unwrap();
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{answer}"
    );

    // The server's own page without the token: ignored too.
    let origin = own_origin(&app);
    let mut tokenless = socket(&app, &[("origin", &origin), ("cookie", &cookie)]).await;
    assert_eq!(
        tokenless.init(json!({})).await.unwrap()["type"],
        "connection_ack"
    );
    let answer = ws_query(&mut tokenless, "1", admin_only).await.unwrap();
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{answer}"
    );

    // No Origin at all (not a browser): the cookie does not count either.
    let mut originless = socket(&app, &[("cookie", &cookie)]).await;
    assert_eq!(
        originless.init(json!({"csrf": csrf})).await.unwrap()["type"],
        "connection_ack"
    );
    let answer = ws_query(&mut originless, "1", admin_only).await.unwrap();
    assert_eq!(
        answer["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{answer}"
    );

    // The server's own page with the token, in the project the payload names.
    app.create_project("shop").await;
    let mut own = socket(&app, &[("origin", &origin), ("cookie", &cookie)]).await;
    let ack = own
        .init(json!({"csrf": csrf, "x-nimbus-project": "shop"}))
        .await
        .unwrap();
    assert_eq!(ack["type"], "connection_ack");
    let answer = ws_query(&mut own, "1", "{ project { id } }").await.unwrap();
    assert_eq!(answer["data"]["project"]["id"], "shop", "{answer}");
    app.shutdown().await;
}

#[tokio::test]
async fn hostile_sign_in_bodies_get_coded_errors() {
    let app = spawn_app().await;
    create_admin(&app, "root@example.com").await;
    let json_type = [("content-type", "application/json")];

    let huge_email = format!("{}@example.com", "a".repeat(10 * 1024));
    let reply = sign_in(&app, &huge_email, PASSWORD, None).await;
    assert_eq!((reply.status, reply.code()), (400, "INVALID_EMAIL"));
    let reply = sign_in(&app, "ro\u{0}ot@example.com", PASSWORD, None).await;
    assert_eq!((reply.status, reply.code()), (400, "INVALID_EMAIL"));
    let reply = sign_in(&app, "root@example.com", "pass\u{7}\u{0}word", None).await;
    assert_eq!((reply.status, reply.code()), (401, "INVALID_CREDENTIALS"));
    let reply = sign_in(&app, "root@example.com", &"p".repeat(100_000), None).await;
    assert_eq!((reply.status, reply.code()), (413, "REQUEST_TOO_LARGE"));

    let reply = post_raw(
        &app,
        &json_type,
        b"email=root@example.com&password=x".to_vec(),
    )
    .await;
    assert_eq!((reply.status, reply.code()), (400, "BAD_REQUEST"));
    let reply = post_raw(
        &app,
        &json_type,
        b"{\"email\": 1, \"password\": []}".to_vec(),
    )
    .await;
    assert_eq!((reply.status, reply.code()), (400, "BAD_REQUEST"));
    let reply = post_raw(
        &app,
        &json_type,
        b"{\"email\": \"root@example.com\"}".to_vec(),
    )
    .await;
    assert_eq!((reply.status, reply.code()), (400, "BAD_REQUEST"));
    let reply = post_raw(&app, &json_type, vec![b' '; 1024 * 1024]).await;
    assert_eq!((reply.status, reply.code()), (413, "REQUEST_TOO_LARGE"));
    // A form post (what another site's page can send without asking) is refused.
    let form = json!({"email": "root@example.com", "password": PASSWORD}).to_string();
    let reply = post_raw(
        &app,
        &[("content-type", "text/plain")],
        form.clone().into_bytes(),
    )
    .await;
    assert_eq!(
        (reply.status, reply.code()),
        (415, "UNSUPPORTED_MEDIA_TYPE")
    );
    let reply = post_raw(
        &app,
        &[
            ("content-type", "application/json"),
            ("origin", "http://evil.example"),
        ],
        form.into_bytes(),
    )
    .await;
    assert_eq!((reply.status, reply.code()), (403, "ORIGIN_NOT_ALLOWED"));
    assert!(reply.headers.get("set-cookie").is_none());

    // Cookies that are not sessions are no credential and break nothing.
    for junk in [
        "nimbus_console=",
        "nimbus_console=nc_",
        "nimbus_console=nc_../../x_y",
        "nimbus_console=ns_abc_def",
    ] {
        let reply = console(
            &app,
            reqwest::Method::GET,
            "session",
            &[("cookie", junk)],
            None,
        )
        .await;
        assert_eq!(
            (reply.status, reply.code()),
            (401, "UNAUTHENTICATED"),
            "{junk}"
        );
        let answer = app
            .post(
                json!({"query": "{ projects { totalCount } }"}),
                &[("cookie", junk), ("x-nimbus-csrf", "x")],
            )
            .await;
        assert_eq!(answer.code(), "UNAUTHENTICATED", "{junk}");
    }
    // Nothing of the above left a session behind.
    let fine = sign_in(&app, "root@example.com", PASSWORD, None).await;
    assert_eq!(fine.status, 200);
    app.shutdown().await;
}

async fn post_raw(app: &TestApp, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    console(
        app,
        reqwest::Method::POST,
        "session",
        headers,
        Some(body.into()),
    )
    .await
}

/// Creates a key in the default project; its id and secret.
async fn key_with_id(app: &TestApp, scopes: &[&str]) -> (String, String) {
    let data = app
        .admin(
            "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret apiKey { id } } }",
            json!({"input": {"projectId": "default", "name": "test", "scopes": scopes}}),
        )
        .await
        .ok();
    (
        data["createApiKey"]["apiKey"]["id"]
            .as_str()
            .unwrap()
            .to_string(),
        data["createApiKey"]["secret"].as_str().unwrap().to_string(),
    )
}

const CREATE_USER_JWT: &str =
    "mutation($input: CreateUserJWTInput!) { createUserJWT(input: $input) { jwt expiresAt } }";

#[tokio::test]
async fn create_user_jwt_acts_as_the_user_and_is_recorded_with_who_minted_it() {
    let app = spawn_app().await;
    let (key_id, key) = key_with_id(&app, &["users.write", "users.read"]).await;
    for (id, email) in [("ann", "ann@example.com"), ("bob", "bob@example.com")] {
        app.as_key(
            &key,
            "default",
            "mutation($id: ID!, $e: String!) { createUser(input: {id: $id, email: $e, password: \"db-password-1\"}) { id } }",
            json!({"id": id, "e": email}),
        )
        .await
        .ok();
    }

    let before = chrono::Utc::now();
    let minted = app
        .as_key(
            &key,
            "default",
            CREATE_USER_JWT,
            json!({"input": {"userId": "ann", "duration": 600}}),
        )
        .await
        .ok();
    let jwt = minted["createUserJWT"]["jwt"].as_str().unwrap().to_string();
    let expires_at = chrono::DateTime::parse_from_rfc3339(
        minted["createUserJWT"]["expiresAt"].as_str().unwrap(),
    )
    .unwrap();
    let lifetime = (expires_at.with_timezone(&chrono::Utc) - before).num_seconds();
    assert!((598..=602).contains(&lifetime), "{lifetime}");

    // It reads as Ann, and only as Ann may: her account, not the server's lists.
    let me = app
        .as_session(&jwt, "{ account { id email } }", json!({}))
        .await
        .ok();
    assert_eq!(me["account"]["id"], "ann");
    let server_only = app
        .as_session(&jwt, "{ users { totalCount } }", json!({}))
        .await;
    assert_eq!(
        server_only.code(),
        "PERMISSION_DENIED",
        "{:?}",
        server_only.body
    );
    let other = app
        .as_session(&jwt, "{ user(id: \"bob\") { id } }", json!({}))
        .await;
    assert_eq!(other.code(), "PERMISSION_DENIED", "{:?}", other.body);
    // A JWT mints no JWT.
    let chained = app
        .as_session(&jwt, "mutation { createJWT { jwt } }", json!({}))
        .await;
    assert_eq!(chained.code(), "PERMISSION_DENIED");

    // Recorded in Ann's activity log with the key that minted it.
    let logs = app
        .as_key(
            &key,
            "default",
            "{ userLogs(userId: \"ann\", last: 1) { nodes { event actor } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(logs["userLogs"]["nodes"][0]["event"], "jwt.create");
    assert_eq!(
        logs["userLogs"]["nodes"][0]["actor"],
        format!("key:{key_id}")
    );
    let own = app
        .as_session(
            &jwt,
            "{ accountLogs(last: 1) { nodes { event actor ip userAgent } } }",
            json!({}),
        )
        .await
        .ok();
    // The user sees that a server did it, not which key, from where.
    assert_eq!(
        own["accountLogs"]["nodes"][0],
        json!({"event": "jwt.create", "actor": "server", "ip": "", "userAgent": ""})
    );

    // Signing Ann out everywhere ends it.
    app.as_key(
        &key,
        "default",
        "mutation { deleteUserSessions(input: {userId: \"ann\"}) { deletedCount } }",
        json!({}),
    )
    .await
    .ok();
    let ended = app.as_session(&jwt, "{ account { id } }", json!({})).await;
    assert_eq!(ended.code(), "INVALID_JWT", "{:?}", ended.body);
    app.shutdown().await;
}

#[tokio::test]
async fn create_user_jwt_needs_users_write_a_known_user_and_at_most_an_hour() {
    let app = spawn_app().await;
    let (_, writer) = key_with_id(&app, &["users.write"]).await;
    let (_, reader) = key_with_id(&app, &["users.read"]).await;
    app.as_key(
        &writer,
        "default",
        "mutation { createUser(input: {id: \"ann\", email: \"ann@example.com\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let input = |duration: Value| json!({"input": {"userId": "ann", "duration": duration}});

    let scoped = app
        .as_key(&reader, "default", CREATE_USER_JWT, input(json!(60)))
        .await;
    assert_eq!(scoped.code(), "SCOPE_MISSING");
    let guest = app
        .post(
            json!({"query": CREATE_USER_JWT, "variables": input(json!(60))}),
            &[],
        )
        .await;
    assert_eq!(guest.code(), "UNAUTHENTICATED");
    let user = app.signed_in("carl@example.com").await;
    let by_user = app
        .as_session(&user, CREATE_USER_JWT, input(json!(60)))
        .await;
    assert_eq!(by_user.code(), "PERMISSION_DENIED");
    for duration in [json!(3601), json!(0), json!(-5)] {
        let refused = app
            .as_key(&writer, "default", CREATE_USER_JWT, input(duration.clone()))
            .await;
        assert_eq!(refused.code(), "BAD_USER_INPUT", "{duration}");
        assert_eq!(refused.body["errors"][0]["extensions"]["field"], "duration");
    }
    let longest = app
        .as_key(&writer, "default", CREATE_USER_JWT, input(json!(3600)))
        .await
        .ok();
    assert!(longest["createUserJWT"]["jwt"].is_string());
    let unknown = app
        .as_key(
            &writer,
            "default",
            CREATE_USER_JWT,
            json!({"input": {"userId": "nobody"}}),
        )
        .await;
    assert_eq!(unknown.code(), "USER_NOT_FOUND");
    let malformed = app
        .as_key(
            &writer,
            "default",
            CREATE_USER_JWT,
            json!({"input": {"userId": "../x"}}),
        )
        .await;
    assert_eq!(malformed.code(), "INVALID_ID");
    // Nothing was minted by the refusals: one entry, from the one success.
    let (_, both) = key_with_id(&app, &["users.read"]).await;
    let logs = app
        .as_key(
            &both,
            "default",
            "{ userLogs(userId: \"ann\") { nodes { event } } }",
            json!({}),
        )
        .await
        .ok();
    let minted = logs["userLogs"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| n["event"] == "jwt.create")
        .count();
    assert_eq!(minted, 1);
    app.shutdown().await;
}

#[tokio::test]
async fn the_console_views_as_a_user_and_the_log_names_the_administrator() {
    let app = spawn_app().await;
    create_admin(&app, "root@example.com").await;
    let (cookie, csrf) = signed_in(&app, "root@example.com").await;
    as_console(
        &app,
        &cookie,
        Some(&csrf),
        "default",
        "mutation { createUser(input: {id: \"ann\", email: \"ann@example.com\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let minted = as_console(
        &app,
        &cookie,
        Some(&csrf),
        "default",
        CREATE_USER_JWT,
        json!({"input": {"userId": "ann"}}),
    )
    .await
    .ok();
    let jwt = minted["createUserJWT"]["jwt"].as_str().unwrap();
    // The bearer JWT wins over the console cookie a browser sends beside it.
    let me = app
        .post(
            json!({"query": "{ account { id } }"}),
            &[
                ("authorization", &format!("Bearer {jwt}")),
                ("cookie", &cookie),
                ("x-nimbus-csrf", &csrf),
            ],
        )
        .await
        .ok();
    assert_eq!(me["account"]["id"], "ann");
    let logs = as_console(
        &app,
        &cookie,
        Some(&csrf),
        "default",
        "{ userLogs(userId: \"ann\", last: 1) { nodes { event actor } } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        logs["userLogs"]["nodes"][0]["actor"],
        "admin:root@example.com"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn serve_says_how_to_create_an_administrator_while_there_is_none() {
    let app = spawn_app().await;
    let banner = |app: &TestApp| {
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut command = Command::new(env!("CARGO_BIN_EXE_nimbus"));
        for (name, _) in std::env::vars().filter(|(k, _)| k.starts_with("NIMBUS_")) {
            command.env_remove(name);
        }
        let mut child = command
            .arg("serve")
            .env("NIMBUS_LISTEN", format!("127.0.0.1:{port}"))
            .env("NIMBUS_DATA_DIR", dir.path())
            .env("NIMBUS_DATABASE_URL", app.config.effective_database_url())
            .env("NIMBUS_LOG", "warn")
            .env("NIMBUS_JOBS_CONCURRENCY", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stdout).lines() {
                if lines.send(line.unwrap_or_default()).is_err() {
                    return;
                }
            }
        });
        let mut text = String::new();
        // The banner ends with the health line or, when there is one, the
        // administrator hint's command.
        while let Ok(line) = received.recv_timeout(WAIT) {
            text.push_str(&line);
            text.push('\n');
            if line.contains("nimbus admin create") {
                break;
            }
            if line.contains("Health:") {
                // A hint follows at once when there is one.
                while let Ok(line) = received.recv_timeout(std::time::Duration::from_secs(2)) {
                    text.push_str(&line);
                    text.push('\n');
                    if line.contains("nimbus admin create") {
                        break;
                    }
                }
                break;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        (text, dir)
    };
    let (text, _dir) = banner(&app);
    assert!(text.contains("No console administrator yet"), "{text}");
    assert!(text.contains("nimbus admin create --email"), "{text}");
    create_admin(&app, "root@example.com").await;
    let (text, _dir) = banner(&app);
    assert!(text.contains("Health:"), "{text}");
    assert!(!text.contains("No console administrator"), "{text}");
    app.shutdown().await;
}

#[tokio::test]
async fn behind_an_https_public_url_the_console_cookie_is_secure() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path()).await;
    config.public_url = Some("https://console.example".into());
    let app = crate::helpers::spawn_with(config, dir).await;
    create_admin(&app, "root@example.com").await;
    let reply = sign_in(&app, "root@example.com", PASSWORD, None).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let set_cookie = reply.set_cookie();
    let mut attributes: Vec<&str> = set_cookie.split(';').skip(1).map(str::trim).collect();
    attributes.sort_unstable();
    assert_eq!(
        attributes,
        ["HttpOnly", "Path=/", "SameSite=Strict", "Secure"],
        "{set_cookie}"
    );

    // Behind a proxy that rewrites `Host`, the public URL's origin is the server's
    // own, for the console API and for the WebSocket.
    let form = json!({"email": "root@example.com", "password": PASSWORD}).to_string();
    for (origin, status) in [
        ("https://console.example", 200),
        ("https://evil.example", 403),
        ("http://console.example", 403),
    ] {
        let reply = post_raw(
            &app,
            &[("content-type", "application/json"), ("origin", origin)],
            form.clone().into_bytes(),
        )
        .await;
        assert_eq!(reply.status, status, "{origin}: {}", reply.body);
    }
    let csrf = reply.body["csrf"].as_str().unwrap().to_string();
    let cookie = reply.cookie();
    let mut ws = socket(
        &app,
        &[("origin", "https://console.example"), ("cookie", &cookie)],
    )
    .await;
    assert_eq!(
        ws.init(json!({"csrf": csrf})).await.unwrap()["type"],
        "connection_ack"
    );
    let answer = ws_query(&mut ws, "1", "{ projects { totalCount } }")
        .await
        .unwrap();
    assert_eq!(answer["data"]["projects"]["totalCount"], 1, "{answer}");
    app.shutdown().await;
}

#[tokio::test]
async fn functions_are_never_handed_the_console_cookie_or_its_token() {
    let app = spawn_app().await;
    create_admin(&app, "root@example.com").await;
    let (cookie, csrf) = signed_in(&app, "root@example.com").await;
    crate::functions::deployed(
        &app,
        "echo",
        json!({"execute": ["any"]}),
        "export default async ({ req, res }) => res.text(`${req.headers['cookie']}|${req.headers['x-nimbus-csrf']}`)",
    )
    .await;
    let response = app
        .client
        .get(format!("{}/v1/functions/echo", app.url))
        .header("cookie", format!("theme=dark; {cookie}"))
        .header("x-nimbus-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.unwrap(), "theme=dark|undefined");
    app.shutdown().await;
}

#[tokio::test]
async fn the_file_routes_take_the_console_session_only_with_its_token() {
    let app = spawn_app().await;
    create_admin(&app, "root@example.com").await;
    let (cookie, csrf) = signed_in(&app, "root@example.com").await;
    as_console(
        &app,
        &cookie,
        Some(&csrf),
        "default",
        "mutation { createBucket(input: {id: \"private\", name: \"Private\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let uploaded = crate::storage::upload(
        &app,
        &[("cookie", &cookie), ("x-nimbus-csrf", &csrf)],
        json!({"bucketId": "private", "fileId": "notes", "file": null}),
        "notes.txt",
        "text/plain",
        b"only for admins",
    )
    .await
    .ok();
    assert_eq!(uploaded["createFile"]["id"], "notes");
    let download = format!(
        "{}/v1/storage/buckets/private/files/notes/download",
        app.url
    );
    let with_token = app
        .client
        .get(&download)
        .header("cookie", &cookie)
        .header("x-nimbus-csrf", &csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(with_token.status().as_u16(), 200);
    assert_eq!(with_token.text().await.unwrap(), "only for admins");
    // An `<img>` or a link another page plants sends the cookie alone: no file.
    let cookie_only = app
        .client
        .get(&download)
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(cookie_only.status().as_u16(), 404);
    let body: Value = cookie_only.json().await.unwrap();
    assert_eq!(body["errors"][0]["extensions"]["code"], "FILE_NOT_FOUND");
    app.shutdown().await;
}

#[tokio::test]
async fn the_cli_sets_a_password_under_the_policy_and_ends_the_administrators_sessions() {
    let app = spawn_app().await;
    create_admin(&app, "root@example.com").await;
    create_admin(&app, "other@example.com").await;
    let (cookie, csrf) = signed_in(&app, "root@example.com").await;
    let (other_cookie, other_csrf) = signed_in(&app, "other@example.com").await;
    let query = "{ projects { totalCount } }";
    let origin = own_origin(&app);
    let mut ws = socket(&app, &[("origin", &origin), ("cookie", &cookie)]).await;
    assert_eq!(
        ws.init(json!({"csrf": csrf})).await.unwrap()["type"],
        "connection_ack"
    );

    // Refused as `create` refuses: the sessions stay.
    for (email, password, code) in [
        ("root@example.com", "password", "PASSWORD_TOO_COMMON"),
        ("root@example.com", "abc", "PASSWORD_TOO_SHORT"),
        ("nobody@example.com", "another-pass-83", "ADMIN_NOT_FOUND"),
        ("not-an-email", "another-pass-83", "INVALID_EMAIL"),
    ] {
        let (ok, _, stderr) = nimbus_admin(
            &app,
            &["password", "--email", email, "--password-stdin"],
            Some(password),
        )
        .await;
        assert!(!ok, "{email} {password}");
        assert!(stderr.contains(code), "{code}: {stderr}");
    }
    let (ok, _, stderr) =
        nimbus_admin(&app, &["password", "--email", "root@example.com"], None).await;
    assert!(!ok, "no terminal and no --password-stdin");
    assert!(stderr.contains("--password-stdin"), "{stderr}");
    as_console(&app, &cookie, Some(&csrf), "default", query, json!({}))
        .await
        .ok();

    let (ok, _, stderr) = nimbus_admin(
        &app,
        &[
            "password",
            "--email",
            "ROOT@example.com",
            "--password-stdin",
        ],
        Some("another-pass-83"),
    )
    .await;
    assert!(ok, "{stderr}");
    // Changed by another process: the server hears it from the event log, and
    // the socket let in with the administrator's session closes.
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if let Err(close) = ws.next_json().await {
                return close;
            }
        }
    })
    .await
    .expect("the socket closes");
    assert_eq!(closed.0, 4403, "{closed:?}");
    let after = as_console(&app, &cookie, Some(&csrf), "default", query, json!({})).await;
    assert_eq!(after.code(), "UNAUTHENTICATED");
    // Another administrator's session is not touched.
    as_console(
        &app,
        &other_cookie,
        Some(&other_csrf),
        "default",
        query,
        json!({}),
    )
    .await
    .ok();
    // The old password no longer signs in; the new one does.
    let old = sign_in(&app, "root@example.com", PASSWORD, None).await;
    assert_eq!(old.status, 401, "{}", old.body);
    let new = sign_in(&app, "root@example.com", "another-pass-83", None).await;
    assert_eq!(new.status, 200, "{}", new.body);
    let csrf = new.body["csrf"].as_str().unwrap().to_string();
    as_console(
        &app,
        &new.cookie(),
        Some(&csrf),
        "default",
        query,
        json!({}),
    )
    .await
    .ok();
    app.shutdown().await;
}

#[tokio::test]
async fn a_console_session_used_only_over_a_websocket_stays_alive_past_its_idle_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path()).await;
    // Idle after 2 s; in use, marked used every half second.
    config.console_session_idle_secs = 2;
    let app = crate::helpers::spawn_with(config, dir).await;
    create_admin(&app, "root@example.com").await;
    let (cookie, csrf) = signed_in(&app, "root@example.com").await;
    let origin = own_origin(&app);
    let mut ws = socket(&app, &[("origin", &origin), ("cookie", &cookie)]).await;
    assert_eq!(
        ws.init(json!({"csrf": csrf})).await.unwrap()["type"],
        "connection_ack"
    );
    // Used over the socket only, for twice its idle time and more.
    let started = std::time::Instant::now();
    let mut n = 0;
    while started.elapsed() < std::time::Duration::from_millis(4500) {
        n += 1;
        let answer = ws_query(&mut ws, &n.to_string(), "{ projects { totalCount } }")
            .await
            .unwrap_or_else(|close| panic!("closed after {:?}: {close:?}", started.elapsed()));
        assert!(
            answer["data"]["projects"]["totalCount"].as_i64().unwrap() >= 1,
            "{answer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    // The stored session was renewed too: HTTP takes it.
    let query = "{ projects { totalCount } }";
    as_console(&app, &cookie, Some(&csrf), "default", query, json!({}))
        .await
        .ok();
    // Left idle, it ends: the socket closes, HTTP refuses it.
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            if let Err(close) = ws.next_json().await {
                return close;
            }
        }
    })
    .await
    .expect("the idle session's socket closes");
    assert_eq!(closed.0, 4403, "{closed:?}");
    let after = as_console(&app, &cookie, Some(&csrf), "default", query, json!({})).await;
    assert_eq!(after.code(), "UNAUTHENTICATED");
    app.shutdown().await;
}

#[tokio::test]
async fn an_administrator_signed_in_creates_keys_that_outlast_the_session() {
    let app = spawn_app().await;
    create_admin(&app, "keys@example.com").await;
    let (cookie, csrf) = signed_in(&app, "keys@example.com").await;
    let made = as_console(
        &app,
        &cookie,
        Some(&csrf),
        "default",
        "mutation { createApiKey(input: {projectId: \"default\", name: \"ci\", scopes: [\"users.read\"]}) { secret apiKey { expiresAt } } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(
        made["createApiKey"]["apiKey"]["expiresAt"],
        Value::Null,
        "{made:#}"
    );
    // A key that expires still cannot.
    let expiring = app
        .admin(
            "mutation { createApiKey(input: {projectId: \"default\", name: \"short\", scopes: [\"keys.write\", \"users.read\"], expiresAt: \"2999-01-01T00:00:00Z\"}) { secret } }",
            json!({}),
        )
        .await
        .ok();
    let refused = app
        .as_key(
            expiring["createApiKey"]["secret"].as_str().unwrap(),
            "default",
            "mutation { createApiKey(input: {projectId: \"default\", name: \"long\", scopes: [\"users.read\"]}) { secret } }",
            json!({}),
        )
        .await;
    assert_eq!(refused.code(), "PERMISSION_DENIED", "{:#}", refused.body);
    app.shutdown().await;
}

#[tokio::test]
async fn jwts_a_server_mints_do_not_count_towards_a_users_sessions() {
    let app = spawn_app().await;
    app.admin(
        "mutation { updateProjectAuth(input: {projectId: \"default\", maxSessions: 2}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let (_, key) = key_with_id(&app, &["users.write"]).await;
    app.as_key(
        &key,
        "default",
        "mutation { createUser(input: {id: \"cara\", email: \"cara@example.com\", password: \"db-password-1\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let sign_in = || app.password_session("cara@example.com", "db-password-1");
    let (first, second) = (sign_in().await, sign_in().await);
    let jwt = app
        .as_key(
            &key,
            "default",
            CREATE_USER_JWT,
            json!({"input": {"userId": "cara"}}),
        )
        .await
        .ok()["createUserJWT"]["jwt"]
        .as_str()
        .unwrap()
        .to_string();
    let third = sign_in().await;
    let account = |secret: String| {
        let app = &app;
        async move {
            app.as_session(&secret, "{ account { id } }", json!({}))
                .await
                .code()
                .to_string()
        }
    };
    // Two devices' sessions are kept: the newest two, the JWT's not among them.
    assert_eq!(account(first).await, "INVALID_SESSION");
    assert_eq!(account(second).await, "<none>");
    assert_eq!(account(third).await, "<none>");
    assert_eq!(account(jwt).await, "<none>");

    // Nothing trims them, so an expired one goes as the next is minted.
    app.as_key(
        &key,
        "default",
        CREATE_USER_JWT,
        json!({"input": {"userId": "cara", "duration": 1}}),
    )
    .await
    .ok();
    let server_sessions = || async {
        app.admin("{ userSessions(userId: \"cara\") { provider } }", json!({}))
            .await
            .ok()["userSessions"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["provider"] == "server")
            .count()
    };
    assert_eq!(server_sessions().await, 2);
    // The one-second JWT's session expires: a matter of the clock, not of an event.
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    app.as_key(
        &key,
        "default",
        CREATE_USER_JWT,
        json!({"input": {"userId": "cara"}}),
    )
    .await
    .ok();
    assert_eq!(
        server_sessions().await,
        2,
        "the expired one went, the new one came"
    );
    app.shutdown().await;
}
