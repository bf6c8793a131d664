//! Avatars: QR codes and flags by URL and over GraphQL — the image holds the
//! text or flag asked for at the size asked for, caching headers and `304`, the
//! format from `output=` or `Accept`, downloads, and every bad parameter refused
//! with its code before anything is drawn.

use serde_json::{Value, json};

use crate::helpers::{Answer, TestApp, spawn_app};

async fn fetch(
    app: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Vec<u8>) {
    let url = if path.starts_with("http") {
        path.to_string()
    } else {
        format!("{}{path}", app.url)
    };
    let mut request = app.client.get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.bytes().await.unwrap().to_vec())
}

fn code_of(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body).unwrap()["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
        .to_string()
}

fn header<'a>(headers: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    headers.get(name).map_or("", |v| v.to_str().unwrap_or(""))
}

/// The dark modules read back from a QR PNG of `modules` + 2×`margin` modules a
/// side, sampled at each module's centre.
fn read_modules(png: &[u8], modules: usize, margin: usize) -> Vec<bool> {
    let img = image::load_from_memory(png).unwrap().to_luma8();
    let total = modules + 2 * margin;
    let side = img.width() as usize;
    let mut dark = Vec::new();
    for y in 0..modules {
        for x in 0..modules {
            let centre = |m: usize| (((m + margin) * 2 + 1) * side / (2 * total)) as u32;
            dark.push(img.get_pixel(centre(x), centre(y)).0[0] < 128);
        }
    }
    dark
}

fn expected_modules(text: &str) -> (Vec<bool>, usize) {
    let code =
        qrcode::QrCode::with_error_correction_level(text.as_bytes(), qrcode::EcLevel::M).unwrap();
    let width = code.width();
    let dark = code
        .to_colors()
        .into_iter()
        .map(|c| c == qrcode::Color::Dark)
        .collect();
    (dark, width)
}

/// The GraphQL answer to `{ avatars { field(args) } }`, without a credential.
async fn avatar_field(app: &TestApp, field: &str, args: &str) -> Answer {
    app.post(
        json!({ "query": format!("{{ avatars {{ {field}({args}) }} }}") }),
        &[],
    )
    .await
}

/// Fetches `path`, expects 400 `INVALID_AVATAR_PARAMETER` whose message names
/// `field`, and answers the body; `shown` labels the case in failures.
async fn refused_naming(app: &TestApp, path: &str, shown: &str, field: &str) -> Vec<u8> {
    let (status, _, body) = fetch(app, path, &[]).await;
    assert_eq!(status, 400, "{shown}");
    let error: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        error["errors"][0]["extensions"]["code"], "INVALID_AVATAR_PARAMETER",
        "{shown}: {error}"
    );
    assert!(
        error["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains(field),
        "{shown}: {error}"
    );
    body
}

#[tokio::test]
async fn qr_codes_hold_the_text_at_the_size_asked_with_caching_headers() {
    let app = spawn_app().await;
    let text = "https://example.com/ünïcode?a=1&b=2";
    let url = format!(
        "/v1/avatars/qr?text={}&size=333&margin=3",
        url::form_urlencoded::byte_serialize(text.as_bytes()).collect::<String>()
    );
    let (status, headers, body) = fetch(&app, &url, &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert_eq!(header(&headers, "x-content-type-options"), "nosniff");
    assert!(header(&headers, "cache-control").starts_with("public"));
    assert!(header(&headers, "content-disposition").is_empty());
    let img = image::load_from_memory(&body).unwrap();
    assert_eq!((img.width(), img.height()), (333, 333));
    let (dark, width) = expected_modules(text);
    assert_eq!(
        read_modules(&body, width, 3),
        dark,
        "the image encodes the text"
    );
    assert_eq!(
        img.to_luma8().get_pixel(2, 2).0[0],
        255,
        "the quiet zone is white"
    );

    // The ETag is stable, and a client holding it gets a 304 with no body.
    let etag = header(&headers, "etag").to_string();
    assert!(etag.starts_with('"'), "{etag}");
    let (again_status, again_headers, again) = fetch(&app, &url, &[]).await;
    assert_eq!(again_status, 200);
    assert_eq!(header(&again_headers, "etag"), etag);
    assert_eq!(again, body, "the same parameters give the same bytes");
    let (status, _, body) = fetch(&app, &url, &[("if-none-match", &etag)]).await;
    assert_eq!(status, 304);
    assert!(body.is_empty());
    let (status, other_headers, _) = fetch(&app, &url.replace("size=333", "size=334"), &[]).await;
    assert_eq!(status, 200);
    assert_ne!(header(&other_headers, "etag"), etag);
    app.shutdown().await;
}

#[tokio::test]
async fn qr_format_comes_from_output_or_accept_and_download_makes_an_attachment() {
    let app = spawn_app().await;
    let (status, headers, body) = fetch(&app, "/v1/avatars/qr?text=hello&output=svg", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "image/svg+xml");
    assert_eq!(header(&headers, "content-security-policy"), "sandbox");
    let svg = String::from_utf8(body).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("width=\"400\""),
        "{svg}"
    );
    let (_, width) = expected_modules("hello");
    let total = width + 2;
    assert!(
        svg.contains(&format!("viewBox=\"0 0 {total} {total}\"")),
        "{svg}"
    );

    // Accept decides when output is absent, and the answer says it varies on it.
    let (status, headers, _) = fetch(
        &app,
        "/v1/avatars/qr?text=hello",
        &[("accept", "image/svg+xml")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "image/svg+xml");
    assert!(
        header(&headers, "vary")
            .to_ascii_lowercase()
            .contains("accept")
    );
    let (status, headers, _) = fetch(
        &app,
        "/v1/avatars/qr?text=hello",
        &[("accept", "image/avif,image/png;q=0.9,*/*;q=0.1")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "image/png");
    let (status, _, body) = fetch(
        &app,
        "/v1/avatars/qr?text=hello",
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(status, 406);
    assert_eq!(code_of(&body), "NOT_ACCEPTABLE");

    let (status, headers, _) = fetch(&app, "/v1/avatars/qr?text=hello&download=true", &[]).await;
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-disposition").starts_with("attachment; filename=\"qr.png\""),
        "{:?}",
        headers.get("content-disposition")
    );
    app.shutdown().await;
}

#[tokio::test]
async fn qr_bad_parameters_are_refused_with_their_code_and_field() {
    let app = spawn_app().await;
    let long = "a".repeat(2049);
    let longest = "a".repeat(2048);
    for (query, field) in [
        ("size=0&text=x", "size"),
        ("size=100000&text=x", "size"),
        // Appwrite's bound for QR codes.
        ("size=1001&text=x", "size"),
        ("download=2&text=x", "download"),
        ("size=-5&text=x", "size"),
        ("size=big&text=x", "size"),
        ("margin=11&text=x", "margin"),
        ("margin=-1&text=x", "margin"),
        ("output=gif&text=x", "output"),
        ("download=maybe&text=x", "download"),
        ("text=", "text"),
        ("", "text"),
        (&format!("text={long}") as &str, "text"),
    ] {
        refused_naming(&app, &format!("/v1/avatars/qr?{query}"), query, field).await;
    }
    // The bounds themselves are accepted.
    for query in [
        format!("text={longest}&size=1000&margin=0"),
        "text=x&size=1&margin=10".to_string(),
    ] {
        let (status, _, body) = fetch(&app, &format!("/v1/avatars/qr?{query}"), &[]).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    app.shutdown().await;
}

#[tokio::test]
async fn qr_urls_come_from_graphql_with_the_same_checks_and_no_credential() {
    let app = spawn_app().await;
    let answer = app
        .post(
            json!({ "query": "{ avatars { qr(text: \"hi there & more\", size: 120, output: \"svg\", download: true) } }" }),
            &[],
        )
        .await;
    let url = answer.ok()["avatars"]["qr"].as_str().unwrap().to_string();
    assert!(url.starts_with("/v1/avatars/qr?"), "{url}");
    let (status, headers, body) = fetch(&app, &url, &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-type"), "image/svg+xml");
    assert!(header(&headers, "content-disposition").starts_with("attachment"));
    let svg = String::from_utf8(body).unwrap();
    assert!(svg.contains("width=\"120\""), "{svg}");
    let (_, width) = expected_modules("hi there & more");
    assert!(
        svg.contains(&format!("0 0 {} {}", width + 2, width + 2)),
        "{svg}"
    );

    for (args, field) in [
        ("text: \"x\", size: 0", "size"),
        ("text: \"x\", size: 100000", "size"),
        ("text: \"\"", "text"),
        ("text: \"x\", output: \"bmp\"", "output"),
        ("text: \"x\", margin: 99", "margin"),
    ] {
        let answer = avatar_field(&app, "qr", args).await;
        assert_eq!(
            answer.code(),
            "INVALID_AVATAR_PARAMETER",
            "{args}: {}",
            answer.body
        );
        assert_eq!(
            answer.body["errors"][0]["extensions"]["field"], field,
            "{args}: {}",
            answer.body
        );
    }
    app.shutdown().await;
}

fn near(pixel: &image::Rgb<u8>, colour: [u8; 3]) -> bool {
    pixel.0.iter().zip(colour).all(|(a, b)| a.abs_diff(b) < 12)
}

#[tokio::test]
async fn flags_are_drawn_at_the_size_and_format_asked_and_kept() {
    let app = spawn_app().await;
    let (status, headers, body) = fetch(&app, "/v1/avatars/flags/de?width=300", &[]).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-type"), "image/png");
    assert!(header(&headers, "cache-control").starts_with("public"));
    let img = image::load_from_memory(&body).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (300, 225), "the height keeps 4:3");
    assert!(near(img.get_pixel(150, 10), [0, 0, 0]), "black on top");
    assert!(
        near(img.get_pixel(150, 112), [255, 0, 0]),
        "red in the middle"
    );
    assert!(near(img.get_pixel(150, 215), [255, 204, 0]), "gold below");

    // Both sides given: covered and centred (France's blue, white, red bands).
    let (status, _, body) = fetch(
        &app,
        "/v1/avatars/flags/FR?width=90&height=90&output=png",
        &[],
    )
    .await;
    assert_eq!(status, 200);
    let img = image::load_from_memory(&body).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (90, 90));
    assert!(
        near(img.get_pixel(45, 45), [255, 255, 255]),
        "white in the centre"
    );
    assert!(
        near(img.get_pixel(2, 45), [0, 0, 145]),
        "{:?}",
        img.get_pixel(2, 45)
    );

    // Formats: output= wins, else Accept.
    for (path, accept, mime, format) in [
        (
            "/v1/avatars/flags/br?output=jpg&quality=40",
            "",
            "image/jpeg",
            image::ImageFormat::Jpeg,
        ),
        (
            "/v1/avatars/flags/br?output=webp",
            "",
            "image/webp",
            image::ImageFormat::WebP,
        ),
        (
            "/v1/avatars/flags/br",
            "image/webp,*/*;q=0.8",
            "image/webp",
            image::ImageFormat::WebP,
        ),
        (
            "/v1/avatars/flags/br",
            "image/jpeg",
            "image/jpeg",
            image::ImageFormat::Jpeg,
        ),
    ] {
        let headers_in: Vec<(&str, &str)> = if accept.is_empty() {
            vec![]
        } else {
            vec![("accept", accept)]
        };
        let (status, headers, body) = fetch(&app, path, &headers_in).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(header(&headers, "content-type"), mime, "{path} {accept}");
        assert_eq!(
            image::guess_format(&body).unwrap(),
            format,
            "{path} {accept}"
        );
        let img = image::load_from_memory(&body).unwrap();
        assert_eq!((img.width(), img.height()), (100, 75), "{path}");
    }
    let (low, high) = (
        fetch(
            &app,
            "/v1/avatars/flags/br?output=jpg&quality=5&width=400",
            &[],
        )
        .await
        .2,
        fetch(
            &app,
            "/v1/avatars/flags/br?output=jpg&quality=100&width=400",
            &[],
        )
        .await
        .2,
    );
    assert!(
        low.len() < high.len(),
        "quality counts: {} {}",
        low.len(),
        high.len()
    );

    // The second request is served from the replica's cache, with the same bytes.
    let drawn = app.metric("nimbus_avatars_total{source=\"drawn\"}").await;
    let cached = app.metric("nimbus_avatars_total{source=\"cache\"}").await;
    let (_, first_headers, first) = fetch(&app, "/v1/avatars/flags/jp?width=123", &[]).await;
    let (_, _, second) = fetch(&app, "/v1/avatars/flags/jp?width=123", &[]).await;
    assert_eq!(first, second);
    assert!(app.metric("nimbus_avatars_total{source=\"drawn\"}").await >= drawn + 1.0);
    assert!(app.metric("nimbus_avatars_total{source=\"cache\"}").await >= cached + 1.0);
    let etag = header(&first_headers, "etag").to_string();
    let (status, _, body) = fetch(
        &app,
        "/v1/avatars/flags/jp?width=123",
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!((status, body.len()), (304, 0));
    app.shutdown().await;
}

#[tokio::test]
async fn flag_bad_codes_and_sizes_are_refused_with_their_code() {
    let app = spawn_app().await;
    let long = "x".repeat(3000);
    for (path, status_wanted, code, field) in [
        (
            "/v1/avatars/flags/zz".to_string(),
            400,
            "INVALID_AVATAR_PARAMETER",
            Some("code"),
        ),
        (
            "/v1/avatars/flags/XX".to_string(),
            400,
            "INVALID_AVATAR_PARAMETER",
            Some("code"),
        ),
        (
            "/v1/avatars/flags/deu".to_string(),
            400,
            "INVALID_AVATAR_PARAMETER",
            Some("code"),
        ),
        (
            "/v1/avatars/flags/d%00".to_string(),
            400,
            "INVALID_AVATAR_PARAMETER",
            Some("code"),
        ),
        (
            format!("/v1/avatars/flags/{long}"),
            400,
            "INVALID_AVATAR_PARAMETER",
            Some("code"),
        ),
        (
            "/v1/avatars/flags/de?width=0".to_string(),
            400,
            "INVALID_AVATAR_PARAMETER",
            Some("width"),
        ),
        (
            "/v1/avatars/flags/de?width=100000".to_string(),
            400,
            "INVALID_AVATAR_PARAMETER",
            Some("width"),
        ),
        (
            "/v1/avatars/flags/de?height=0".to_string(),
            400,
            "INVALID_AVATAR_PARAMETER",
            Some("height"),
        ),
        (
            "/v1/avatars/flags/de?width=10&height=100000".to_string(),
            400,
            "INVALID_AVATAR_PARAMETER",
            Some("height"),
        ),
        (
            "/v1/avatars/flags/de?quality=101".to_string(),
            400,
            "INVALID_AVATAR_PARAMETER",
            Some("quality"),
        ),
        (
            "/v1/avatars/flags/de?output=svg".to_string(),
            400,
            "INVALID_AVATAR_PARAMETER",
            Some("output"),
        ),
    ] {
        let (status, _, body) = fetch(&app, &path, &[]).await;
        let shown = &path[..path.len().min(60)];
        assert_eq!(status, status_wanted, "{shown}");
        let error: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            error["errors"][0]["extensions"]["code"], code,
            "{shown}: {error}"
        );
        if let Some(field) = field {
            assert!(
                error["errors"][0]["message"]
                    .as_str()
                    .unwrap()
                    .contains(field),
                "{shown}: {error}"
            );
        }
        assert!(
            body.len() < 500,
            "the answer does not echo the input: {shown}"
        );
    }
    let (status, _, body) =
        fetch(&app, "/v1/avatars/flags/de", &[("accept", "image/svg+xml")]).await;
    assert_eq!(status, 406);
    assert_eq!(code_of(&body), "NOT_ACCEPTABLE");

    // GraphQL checks the same and answers the URL.
    let answer = app
        .post(
            json!({ "query": "{ avatars { flag(code: \"It\", width: 64, output: \"webp\") } }" }),
            &[],
        )
        .await;
    let url = answer.ok()["avatars"]["flag"].as_str().unwrap().to_string();
    assert!(url.starts_with("/v1/avatars/flags/it?"), "{url}");
    let (status, headers, body) = fetch(&app, &url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "image/webp");
    let img = image::load_from_memory(&body).unwrap();
    assert_eq!((img.width(), img.height()), (64, 48));
    for (args, code) in [
        ("code: \"zz\"", "INVALID_AVATAR_PARAMETER"),
        ("code: \"de\", width: 0", "INVALID_AVATAR_PARAMETER"),
        ("code: \"de\", height: 100000", "INVALID_AVATAR_PARAMETER"),
    ] {
        let answer = avatar_field(&app, "flag", args).await;
        assert_eq!(answer.code(), code, "{args}: {}", answer.body);
    }
    app.shutdown().await;
}

#[tokio::test]
async fn initials_take_two_words_with_a_stable_colour_and_refuse_bad_names() {
    let app = spawn_app().await;
    let (status, headers, body) = fetch(
        &app,
        "/v1/avatars/initials?name=ada%20lovelace%20byron&output=svg",
        &[],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert_eq!(header(&headers, "content-type"), "image/svg+xml");
    assert!(header(&headers, "cache-control").starts_with("public"));
    let svg = String::from_utf8(body).unwrap();
    assert!(svg.contains(">AL</text>"), "{svg}");
    let colour = |svg: &str| svg.split("fill=\"#").nth(1).unwrap()[..6].to_string();
    let (_, _, again) = fetch(
        &app,
        "/v1/avatars/initials?name=Ada%20Lovelace%20Byron%20&output=svg",
        &[],
    )
    .await;
    assert_eq!(colour(&svg), colour(&String::from_utf8(again).unwrap()));

    // PNG: the size asked, the background given, letters in the middle.
    let (status, headers, body) = fetch(
        &app,
        "/v1/avatars/initials?name=Hanna%20Ito&width=120&height=80&background=%23102030",
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "image/png");
    let img = image::load_from_memory(&body).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), (120, 80));
    assert_eq!(img.get_pixel(1, 1).0, [0x10, 0x20, 0x30]);
    assert!(
        img.pixels().filter(|p| p.0[0] > 200).count() > 200,
        "letters drawn"
    );

    let long = "a".repeat(10_000);
    for (query, field) in [
        (format!("name={long}"), "name"),
        ("name=bad%00name".to_string(), "name"),
        ("name=line%0Abreak".to_string(), "name"),
        ("name=evil%E2%80%AEname".to_string(), "name"),
        ("name=%20%20".to_string(), "name"),
        ("name=x&width=0".to_string(), "width"),
        ("name=x&height=100000".to_string(), "height"),
        ("name=x&background=red".to_string(), "background"),
        ("".to_string(), "name"),
    ] {
        let shown = &query[..query.len().min(40)];
        let body =
            refused_naming(&app, &format!("/v1/avatars/initials?{query}"), shown, field).await;
        assert!(body.len() < 500, "the answer does not echo the input");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn initials_of_the_signed_in_user_are_private_and_graphql_names_only_the_initials() {
    let app = spawn_app().await;
    let secret = app.signed_in("grace.hopper@example.com").await;
    let bearer = format!("Bearer {secret}");
    let (status, headers, body) = fetch(
        &app,
        "/v1/avatars/initials?output=svg",
        &[("authorization", &bearer), ("x-nimbus-project", "default")],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(header(&headers, "cache-control").starts_with("private"));
    let own = String::from_utf8(body).unwrap();
    assert!(own.contains("</text>"), "{own}");

    let answer = app
        .as_session(
            &secret,
            "{ avatars { initials(output: \"svg\") } }",
            json!({}),
        )
        .await;
    let url = answer.ok()["avatars"]["initials"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.starts_with("/v1/avatars/initials?"), "{url}");
    assert!(!url.contains("grace") && !url.contains("example"), "{url}");
    let (status, _, body) = fetch(&app, &url, &[]).await;
    assert_eq!(status, 200);
    assert_eq!(
        String::from_utf8(body).unwrap(),
        own,
        "the URL draws the same image"
    );

    let answer = app
        .post(
            json!({ "query": "{ avatars { initials(name: \"Ada Lovelace\", width: 64) } }" }),
            &[],
        )
        .await;
    let url = answer.ok()["avatars"]["initials"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(url.contains("name=A%20L"), "{url}");
    let (status, _, body) = fetch(&app, &url, &[]).await;
    assert_eq!(status, 200);
    let img = image::load_from_memory(&body).unwrap();
    assert_eq!((img.width(), img.height()), (64, 64));

    // A guest without a name is told to give one.
    let answer = app
        .post(json!({ "query": "{ avatars { initials } }" }), &[])
        .await;
    assert_eq!(answer.code(), "INVALID_AVATAR_PARAMETER", "{}", answer.body);
    let long = "é".repeat(10_000);
    let answer = app
        .post(
            json!({ "query": "query($n: String) { avatars { initials(name: $n) } }", "variables": { "n": long } }),
            &[],
        )
        .await;
    assert_eq!(answer.code(), "INVALID_AVATAR_PARAMETER", "{}", answer.body);
    app.shutdown().await;
}

#[tokio::test]
async fn the_image_proxy_and_favicons_refuse_private_targets_and_bad_urls_and_are_rate_limited() {
    let app = spawn_app().await;
    // The test server itself is on loopback: the proxy must not reach it.
    let own = format!("{}/v1/avatars/qr?text=x", app.url);
    let targets = [
        own.as_str(),
        "http://127.0.0.1/x.png",
        "http://localhost/x.png",
        "http://10.0.0.1/x.png",
        "http://172.16.5.4/x.png",
        "http://192.168.0.1/x.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://100.64.1.1/x.png",
        "http://0.0.0.0/x.png",
        "http://[::1]/x.png",
        "http://[::ffff:10.0.0.1]/x.png",
        "http://[fe80::1]/x.png",
        "http://[fc00::1]/x.png",
        "http://[64:ff9b::7f00:1]/x.png",
        "http://[2002:7f00:1::]/x.png",
        "http://2130706433/x.png",
        "http://0177.0.0.1/x.png",
    ];
    for target in targets {
        let path = format!(
            "/v1/avatars/image?url={}",
            url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
        );
        let (status, _, body) = fetch(&app, &path, &[]).await;
        // Not found, as Appwrite answers a host it may not reach.
        assert_eq!(status, 404, "{target}");
        assert_eq!(code_of(&body), "AVATAR_FETCH_FAILED", "{target}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            !text.contains("127.0.0.1") && !text.contains("10.0.0"),
            "{text}"
        );
    }
    for (query, code) in [
        ("url=file%3A%2F%2F%2Fetc%2Fpasswd", "INVALID_AVATAR_URL"),
        ("url=ftp%3A%2F%2Fexample.com%2Fx.png", "INVALID_AVATAR_URL"),
        (
            "url=http%3A%2F%2Fuser%3Apass%40example.com%2F",
            "INVALID_AVATAR_URL",
        ),
        ("url=not%20a%20url", "INVALID_AVATAR_URL"),
        ("", "INVALID_AVATAR_PARAMETER"),
        (
            "url=https%3A%2F%2Fexample.com%2Fa.png&width=100000",
            "INVALID_PREVIEW_PARAMETER",
        ),
        (
            "url=https%3A%2F%2Fexample.com%2Fa.png&width=3000",
            "INVALID_AVATAR_PARAMETER",
        ),
    ] {
        let (status, _, body) = fetch(&app, &format!("/v1/avatars/image?{query}"), &[]).await;
        assert_eq!(status, 400, "{query}");
        assert_eq!(code_of(&body), code, "{query}");
    }
    // GraphQL checks the URL's form and answers the proxy URL.
    let answer = app
        .post(json!({ "query": "{ avatars { image(url: \"https://example.com/a b.png\", width: 50, output: \"webp\") } }" }), &[])
        .await;
    let url = answer.ok()["avatars"]["image"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        url,
        "/v1/avatars/image?url=https%3A%2F%2Fexample.com%2Fa%2520b.png&width=50&output=webp"
    );
    let answer = app
        .post(
            json!({ "query": "{ avatars { favicon(url: \"https://example.com/\") } }" }),
            &[],
        )
        .await;
    assert_eq!(
        answer.ok()["avatars"]["favicon"],
        "/v1/avatars/favicon?url=https%3A%2F%2Fexample.com%2F"
    );
    for (args, code) in [
        ("url: \"file:///etc/passwd\"", "INVALID_AVATAR_URL"),
        (
            "url: \"https://example.com/\", width: 100000",
            "INVALID_AVATAR_PARAMETER",
        ),
        (
            "url: \"https://example.com/\", output: \"svg\"",
            "INVALID_AVATAR_PARAMETER",
        ),
    ] {
        let answer = avatar_field(&app, "image", args).await;
        assert_eq!(answer.code(), code, "{args}: {}", answer.body);
    }
    let long = format!("url=https%3A%2F%2Fexample.com%2F{}", "a".repeat(3000));
    let (status, _, body) = fetch(&app, &format!("/v1/avatars/image?{long}"), &[]).await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (400, "INVALID_AVATAR_URL")
    );

    // The favicon finder is held to the same guard.
    for target in [
        "http://127.0.0.1/",
        "http://[::1]:8080/",
        "http://169.254.169.254/",
    ] {
        let path = format!(
            "/v1/avatars/favicon?url={}",
            url::form_urlencoded::byte_serialize(target.as_bytes()).collect::<String>()
        );
        let (status, _, body) = fetch(&app, &path, &[]).await;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (404, "AVATAR_FETCH_FAILED"),
            "{target}"
        );
    }
    let (status, _, body) = fetch(&app, "/v1/avatars/favicon?url=javascript%3Aalert(1)", &[]).await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (400, "INVALID_AVATAR_URL")
    );

    // Fetches count per client address: past the limit, RATE_LIMITED with Retry-After.
    let mut limited = None;
    for _ in 0..40 {
        let (status, headers, body) =
            fetch(&app, "/v1/avatars/image?url=http%3A%2F%2F127.0.0.1%2F", &[]).await;
        if status == 429 {
            limited = Some((code_of(&body), header(&headers, "retry-after").to_string()));
            break;
        }
        assert_eq!(code_of(&body), "AVATAR_FETCH_FAILED");
    }
    let (code, retry_after) = limited.expect("the proxy is rate-limited");
    assert_eq!(code, "RATE_LIMITED");
    assert!(retry_after.parse::<u64>().unwrap() >= 1);
    app.shutdown().await;
}

/// Appwrite's codes of `getBrowser` and `getCreditCard`.
const BROWSER_CODES: &[&str] = &[
    "aa", "an", "ch", "ci", "cm", "cr", "ff", "sf", "mf", "ps", "oi", "om", "op", "on",
];
const CARD_CODES: &[&str] = &[
    "amex",
    "argencard",
    "cabal",
    "cencosud",
    "diners",
    "discover",
    "elo",
    "hipercard",
    "jcb",
    "mastercard",
    "naranja",
    "targeta-shopping",
    "union-china-pay",
    "visa",
    "mir",
    "maestro",
    "rupay",
];

fn near_rgba(pixel: &image::Rgba<u8>, colour: [u8; 4]) -> bool {
    pixel.0.iter().zip(colour).all(|(a, b)| a.abs_diff(b) < 12)
}

#[tokio::test]
async fn browser_and_credit_card_icons_are_drawn_fitted_for_every_appwrite_code() {
    let app = spawn_app().await;
    for (path, codes) in [("browsers", BROWSER_CODES), ("credit-cards", CARD_CODES)] {
        for code in codes {
            let url = format!("/v1/avatars/{path}/{}?width=24", code.to_uppercase());
            let (status, headers, body) = fetch(&app, &url, &[]).await;
            assert_eq!(status, 200, "{url}: {}", String::from_utf8_lossy(&body));
            assert_eq!(header(&headers, "content-type"), "image/png", "{url}");
            let img = image::load_from_memory(&body).unwrap().to_rgba8();
            assert_eq!(img.dimensions(), (24, 24), "{url}: square by default");
            assert!(img.pixels().any(|p| p.0[3] == 255), "{url} draws something");
        }
    }

    // Chrome's mark in its blue, fitted inside a wide box: the sides stay transparent.
    let (status, headers, body) =
        fetch(&app, "/v1/avatars/browsers/ch?width=90&height=60", &[]).await;
    assert_eq!(status, 200);
    assert!(header(&headers, "cache-control").starts_with("public"));
    let img = image::load_from_memory(&body).unwrap().to_rgba8();
    assert_eq!(img.dimensions(), (90, 60));
    assert_eq!(
        img.get_pixel(5, 30).0[3],
        0,
        "left of the mark is transparent"
    );
    assert_eq!(
        img.get_pixel(85, 30).0[3],
        0,
        "right of the mark is transparent"
    );
    assert!(
        near_rgba(img.get_pixel(45, 30), [0x42, 0x85, 0xF4, 255]),
        "Chrome's blue in the middle: {:?}",
        img.get_pixel(45, 30)
    );

    // A card keeps its 3:2 shape inside a square: white with Visa's mark, and a
    // neutral grey badge where no open mark exists.
    let (_, _, body) = fetch(&app, "/v1/avatars/credit-cards/visa?width=120", &[]).await;
    let img = image::load_from_memory(&body).unwrap().to_rgba8();
    assert_eq!(img.dimensions(), (120, 120));
    assert_eq!(
        img.get_pixel(60, 5).0[3],
        0,
        "above the card is transparent"
    );
    assert!(
        near_rgba(img.get_pixel(8, 60), [255, 255, 255, 255]),
        "the card is white"
    );
    assert!(
        img.pixels().any(|p| near_rgba(p, [0x1A, 0x1F, 0x71, 255])),
        "Visa's blue is on it"
    );
    let (_, _, body) = fetch(&app, "/v1/avatars/credit-cards/cabal?width=120", &[]).await;
    let img = image::load_from_memory(&body).unwrap().to_rgba8();
    assert!(
        near_rgba(img.get_pixel(8, 60), [0x5F, 0x63, 0x68, 255]),
        "a grey badge"
    );
    assert!(
        img.pixels().any(|p| near_rgba(p, [255, 255, 255, 255])),
        "with white lettering"
    );

    // JPEG has no transparency: the margins turn white. WebP by `Accept`.
    let (status, headers, body) = fetch(
        &app,
        "/v1/avatars/browsers/ff?width=90&height=60&output=jpg&quality=80",
        &[],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "image/jpeg");
    let img = image::load_from_memory(&body).unwrap().to_rgb8();
    assert!(near(img.get_pixel(3, 30), [255, 255, 255]));
    let (status, headers, body) = fetch(
        &app,
        "/v1/avatars/credit-cards/jcb",
        &[("accept", "image/webp")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "content-type"), "image/webp");
    assert_eq!(header(&headers, "vary"), "Accept");
    assert_eq!(
        image::load_from_memory(&body)
            .unwrap()
            .to_rgba8()
            .dimensions(),
        (100, 100)
    );

    // Kept: the same ETag, and 304 to a client that has it.
    let url = "/v1/avatars/credit-cards/mastercard?width=64";
    let (_, headers, _) = fetch(&app, url, &[]).await;
    let etag = header(&headers, "etag").to_string();
    let (status, _, body) = fetch(&app, url, &[("if-none-match", &etag)]).await;
    assert_eq!((status, body.len()), (304, 0));
    app.shutdown().await;
}

#[tokio::test]
async fn icon_bad_codes_and_parameters_are_refused_and_graphql_answers_their_urls() {
    let app = spawn_app().await;
    for path in [
        "/v1/avatars/browsers/xx",
        "/v1/avatars/browsers/chrome",
        "/v1/avatars/credit-cards/paypal",
        "/v1/avatars/credit-cards/de",
    ] {
        let (status, _, body) = fetch(&app, path, &[]).await;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (400, "INVALID_AVATAR_PARAMETER"),
            "{path}"
        );
    }
    refused_naming(&app, "/v1/avatars/browsers/c%20h", "a space", "code").await;
    refused_naming(&app, "/v1/avatars/browsers/c1", "a digit", "code").await;
    refused_naming(
        &app,
        &format!("/v1/avatars/credit-cards/{}", "a".repeat(40)),
        "too long",
        "code",
    )
    .await;
    refused_naming(&app, "/v1/avatars/browsers/ch?width=0", "width 0", "width").await;
    refused_naming(
        &app,
        "/v1/avatars/credit-cards/visa?height=100000",
        "height",
        "height",
    )
    .await;
    refused_naming(
        &app,
        "/v1/avatars/credit-cards/visa?quality=101",
        "quality",
        "quality",
    )
    .await;
    refused_naming(
        &app,
        "/v1/avatars/credit-cards/visa?output=svg",
        "svg",
        "output",
    )
    .await;
    let (status, _, body) =
        fetch(&app, "/v1/avatars/browsers/ch", &[("accept", "text/html")]).await;
    assert_eq!((status, code_of(&body).as_str()), (406, "NOT_ACCEPTABLE"));

    let url = avatar_field(&app, "browser", "code: \"CH\", width: 64")
        .await
        .ok();
    assert_eq!(
        url["avatars"]["browser"],
        "/v1/avatars/browsers/ch?width=64&height=64"
    );
    let url = avatar_field(
        &app,
        "creditCard",
        "code: \"Union-China-Pay\", quality: 70, output: \"jpeg\"",
    )
    .await
    .ok();
    let url = url["avatars"]["creditCard"].as_str().unwrap().to_string();
    assert_eq!(
        url,
        "/v1/avatars/credit-cards/union-china-pay?width=100&height=100&quality=70&output=jpg"
    );
    let (status, headers, _) = fetch(&app, &url, &[]).await;
    assert_eq!(
        (status, header(&headers, "content-type")),
        (200, "image/jpeg")
    );
    assert_eq!(
        avatar_field(&app, "creditCard", "code: \"paypal\"")
            .await
            .code(),
        "INVALID_AVATAR_PARAMETER"
    );
    assert_eq!(
        avatar_field(&app, "browser", "code: \"ch\", height: 0")
            .await
            .code(),
        "INVALID_AVATAR_PARAMETER"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_project_with_avatars_not_public_serves_them_only_to_users_and_keys() {
    let app = spawn_app().await;
    let read = app
        .admin("{ project { auth { avatarsPublic } } }", json!({}))
        .await
        .ok();
    assert_eq!(
        read["project"]["auth"]["avatarsPublic"], true,
        "public by default"
    );
    app.create_project("shut").await;
    let changed = app
        .admin(
            "mutation { updateProjectAuth(input: {projectId: \"shut\", avatarsPublic: false}) { auth { avatarsPublic } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(changed["updateProjectAuth"]["auth"]["avatarsPublic"], false);

    // Every endpoint of the closed project refuses a guest before anything else,
    // a 304 included; the default project still serves everyone.
    let flag = "/v1/avatars/flags/de?width=40";
    let (_, headers, _) = fetch(&app, flag, &[]).await;
    let etag = header(&headers, "etag").to_string();
    let endpoints = [
        "/v1/avatars/qr?text=hi",
        flag,
        "/v1/avatars/browsers/ch",
        "/v1/avatars/credit-cards/visa",
        "/v1/avatars/initials?name=Ada%20Lovelace",
        "/v1/avatars/initials",
        "/v1/avatars/image?url=http://127.0.0.1/x.png",
        "/v1/avatars/favicon?url=http://127.0.0.1/",
    ];
    for path in endpoints {
        let sep = if path.contains('?') { '&' } else { '?' };
        let shut = format!("{path}{sep}project=shut");
        let (status, _, body) = fetch(&app, &shut, &[]).await;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (401, "AVATARS_NOT_PUBLIC"),
            "{shut}"
        );
        let (status, _, body) = fetch(&app, path, &[("x-nimbus-project", "shut")]).await;
        assert_eq!(
            (status, code_of(&body).as_str()),
            (401, "AVATARS_NOT_PUBLIC"),
            "{path} by header"
        );
    }
    let (status, _, _) = fetch(
        &app,
        &format!("{flag}&project=shut"),
        &[("if-none-match", &etag)],
    )
    .await;
    assert_eq!(status, 401, "no 304 without leave");
    let (status, headers, _) = fetch(&app, flag, &[]).await;
    assert_eq!(status, 200, "the default project is public");
    assert!(header(&headers, "cache-control").starts_with("public"));

    // A key of the project is served, and only its own cache may keep the answer.
    let key = app.create_key("shut", &["project.read"]).await;
    let (status, headers, body) = fetch(
        &app,
        &format!("{flag}&project=shut"),
        &[("x-nimbus-key", &key)],
    )
    .await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    assert!(
        header(&headers, "cache-control").starts_with("private"),
        "{headers:?}"
    );
    let (status, _, _) = fetch(
        &app,
        "/v1/avatars/credit-cards/visa",
        &[("x-nimbus-key", &key), ("x-nimbus-project", "shut")],
    )
    .await;
    assert_eq!(status, 200);

    // GraphQL: every field of `avatars` is refused to a guest of the closed
    // project; for a key, the URLs name the project, so an `<img>` addresses it.
    let guest = app
        .post(
            json!({ "query": "{ avatars { flag(code: \"de\") } }" }),
            &[("x-nimbus-project", "shut")],
        )
        .await;
    assert_eq!(guest.code(), "AVATARS_NOT_PUBLIC", "{:?}", guest.body);
    let data = app
        .as_key(
            &key,
            "shut",
            "{ avatars { flag(code: \"de\") creditCard(code: \"visa\") } }",
            json!({}),
        )
        .await
        .ok();
    let url = data["avatars"]["flag"].as_str().unwrap();
    assert!(url.ends_with("&project=shut"), "{url}");
    assert!(
        data["avatars"]["creditCard"]
            .as_str()
            .unwrap()
            .ends_with("&project=shut")
    );
    let (status, _, _) = fetch(&app, url, &[]).await;
    assert_eq!(status, 401, "the URL alone is no leave");

    // With the default project closed too, a signed-in user is served.
    let session = app.signed_in("avatar-reader@example.com").await;
    app.admin(
        "mutation { updateProjectAuth(input: {projectId: \"default\", avatarsPublic: false}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let (status, _, body) = fetch(&app, flag, &[]).await;
    assert_eq!(
        (status, code_of(&body).as_str()),
        (401, "AVATARS_NOT_PUBLIC")
    );
    let bearer = format!("Bearer {session}");
    let (status, _, _) = fetch(&app, flag, &[("authorization", &bearer)]).await;
    assert_eq!(status, 200, "a signed-in user is served");
    let url = app
        .as_session(&session, "{ avatars { initials } }", json!({}))
        .await
        .ok();
    assert!(
        url["avatars"]["initials"]
            .as_str()
            .unwrap()
            .starts_with("/v1/avatars/initials?")
    );
    assert_eq!(
        avatar_field(&app, "qr", "text: \"hi\"").await.code(),
        "AVATARS_NOT_PUBLIC"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_client_has_a_bounded_number_of_avatars_drawn_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path()).await;
    config.preview_renders_per_minute = 2;
    let app = crate::helpers::spawn_with(config, dir).await;
    let key = [("x-nimbus-key", app.admin_key.as_str())];
    for width in [40, 50] {
        let path = format!("/v1/avatars/initials?name=Ada%20Lovelace&width={width}&output=png");
        let (status, _, body) = fetch(&app, &path, &key).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    }
    // A third drawing, of any kind, is refused; one already drawn is not drawn again.
    let (status, headers, body) = fetch(&app, "/v1/avatars/flags/fr?width=30", &key).await;
    assert_eq!((status, code_of(&body).as_str()), (429, "RATE_LIMITED"));
    assert!(!header(&headers, "retry-after").is_empty());
    let path = "/v1/avatars/initials?name=Ada%20Lovelace&width=40&output=png";
    let (status, _, body) = fetch(&app, path, &key).await;
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    app.shutdown().await;
}
