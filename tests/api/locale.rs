//! Locale: the caller's country from its client address (and `X-Forwarded-For`
//! only from a trusted proxy), the reference lists against the committed dataset,
//! and the request's language from `X-Nimbus-Locale` or `Accept-Language`.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, spawn_with, test_config};

const LISTS: &str = "{ locale {
    countries { code name }
    countriesEU { code name }
    countriesPhones { code countryCode countryName }
    continents { code name }
    currencies { code symbol symbolNative name namePlural decimalDigits rounding }
    languages { code name nativeName }
    localeCodes { code name }
} }";

const CALLER: &str = "{ locale { ip countryCode country continentCode continent eu currency } }";

/// A query with no credential at all, only these headers.
async fn public(app: &TestApp, query: &str, headers: &[(&str, &str)]) -> Value {
    app.post(json!({ "query": query }), headers).await.ok()["locale"].clone()
}

fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|item| item[key] == value)
        .unwrap_or_else(|| panic!("no {key} = {value}"))
}

fn name_of(list: &Value, code: &str) -> String {
    find(list, "code", code)["name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The committed dataset the server compiles in.
fn dataset() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/locale/locale.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test]
async fn locale_lists_match_the_dataset_and_appwrites_counts() {
    let app = spawn_app().await;
    let locale = public(&app, LISTS, &[]).await;
    let data = dataset();
    let len = |field: &str| locale[field].as_array().unwrap().len();

    assert_eq!(
        len("countries"),
        data["countries"].as_array().unwrap().len()
    );
    assert!(len("countries") >= 249, "{}", len("countries"));
    assert_eq!(len("countriesEU"), 27);
    assert_eq!(len("continents"), 7);
    // Appwrite 1.9.6 has 117 currencies, 196 calling codes, 73 translations.
    assert!(len("currencies") >= 117, "{}", len("currencies"));
    assert!(len("countriesPhones") >= 196, "{}", len("countriesPhones"));
    assert!(len("localeCodes") >= 73, "{}", len("localeCodes"));
    assert!(len("languages") >= 184, "{}", len("languages"));

    // Every English name is the dataset's.
    for country in data["countries"].as_array().unwrap() {
        let code = country["code"].as_str().unwrap();
        assert_eq!(
            name_of(&locale["countries"], code),
            country["names"][0],
            "{code}"
        );
    }
    assert_eq!(name_of(&locale["countries"], "FR"), "France");
    assert_eq!(name_of(&locale["countries"], "DE"), "Germany");
    assert_eq!(name_of(&locale["countries"], "JP"), "Japan");
    assert_eq!(name_of(&locale["countriesEU"], "DE"), "Germany");
    assert!(
        locale["countriesEU"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["code"] != "GB" && c["code"] != "CH")
    );
    assert_eq!(name_of(&locale["continents"], "EU"), "Europe");

    let eur = find(&locale["currencies"], "code", "EUR");
    assert_eq!(
        *eur,
        json!({"code": "EUR", "symbol": "€", "symbolNative": "€", "name": "Euro",
               "namePlural": "euros", "decimalDigits": 2, "rounding": 0.0})
    );
    let jpy = find(&locale["currencies"], "code", "JPY");
    assert_eq!(jpy["decimalDigits"], 0);
    assert_eq!(jpy["symbolNative"], "￥");

    let french = find(&locale["countriesPhones"], "code", "+33");
    assert_eq!(
        *french,
        json!({"code": "+33", "countryCode": "FR", "countryName": "France"})
    );
    assert!(
        locale["countriesPhones"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["code"].as_str().unwrap().starts_with('+'))
    );

    let fr = find(&locale["languages"], "code", "fr");
    assert_eq!(
        *fr,
        json!({"code": "fr", "name": "French", "nativeName": "Français"})
    );
    assert_eq!(name_of(&locale["localeCodes"], "de"), "German");
    app.shutdown().await;
}

#[tokio::test]
async fn locale_translates_by_header_and_by_accept_language() {
    let app = spawn_app().await;
    let names = |locale: &Value| ["FR", "DE", "JP"].map(|code| name_of(&locale["countries"], code));

    let german = public(&app, LISTS, &[("x-nimbus-locale", "de")]).await;
    assert_eq!(names(&german), ["Frankreich", "Deutschland", "Japan"]);
    assert_eq!(name_of(&german["continents"], "EU"), "Europa");
    assert_eq!(find(&german["currencies"], "code", "EUR")["name"], "Euro");
    assert_eq!(
        find(&german["currencies"], "code", "USD")["name"],
        "US-Dollar"
    );
    assert_eq!(name_of(&german["languages"], "fr"), "Französisch");
    assert_eq!(
        find(&german["countriesPhones"], "code", "+49")["countryName"],
        "Deutschland"
    );

    let french = public(&app, LISTS, &[("x-nimbus-locale", "fr-CA")]).await;
    assert_eq!(names(&french), ["France", "Allemagne", "Japon"]);
    assert_eq!(
        find(&french["currencies"], "code", "EUR")["namePlural"],
        "euros"
    );
    assert_eq!(name_of(&french["localeCodes"], "de"), "allemand");

    // q-values, not order, decide; unknown and refused entries are passed over.
    let weighed = "xx;q=1, en;q=0.1, fr;q=0.8, de;q=0.9, ja;q=0";
    let by_accept = public(&app, LISTS, &[("accept-language", weighed)]).await;
    assert_eq!(names(&by_accept), ["Frankreich", "Deutschland", "Japan"]);
    let japanese = public(
        &app,
        LISTS,
        &[("accept-language", "ja-JP,ja;q=0.9,en;q=0.8")],
    )
    .await;
    assert_eq!(names(&japanese), ["フランス", "ドイツ", "日本"]);

    // In Appwrite's order: places by their name in the language, as text;
    // calling codes by code; the dollar, the Canadian dollar and the euro first.
    let first = |list: &Value, field: &str| list[0][field].as_str().unwrap().to_string();
    let english = public(&app, LISTS, &[]).await;
    assert_eq!(first(&english["countries"], "code"), "AF");
    assert_eq!(first(&english["continents"], "code"), "AF");
    assert_eq!(first(&english["countriesEU"], "code"), "AT");
    assert_eq!(first(&english["countriesPhones"], "code"), "+1");
    assert_eq!(first(&english["countriesPhones"], "countryCode"), "CA");
    let currencies: Vec<&str> = english["currencies"].as_array().unwrap()[..4]
        .iter()
        .map(|c| c["code"].as_str().unwrap())
        .collect();
    assert_eq!(currencies, ["USD", "CAD", "EUR", "AED"]);
    let spanish = public(&app, LISTS, &[("x-nimbus-locale", "es")]).await;
    assert_eq!(first(&spanish["countries"], "name"), "Afganistán");
    assert_eq!(first(&spanish["countriesEU"], "name"), "Alemania");
    assert_eq!(first(&spanish["continents"], "name"), "América del Norte");
    let names_in_order: Vec<&str> = german["countries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert!(names_in_order.windows(2).all(|w| w[0] <= w[1]));

    // The explicit header wins over the browser's.
    let both = public(
        &app,
        LISTS,
        &[("accept-language", "de"), ("x-nimbus-locale", "fr")],
    )
    .await;
    assert_eq!(names(&both), ["France", "Allemagne", "Japon"]);
    app.shutdown().await;
}

#[tokio::test]
async fn locale_falls_back_to_english_for_unknown_or_oversized_languages() {
    let app = spawn_app().await;
    let english = ["France", "Germany", "Japan"];
    let huge = format!("de;q=0.9, {}", "x-private-tag;q=0.5, ".repeat(256));
    assert!(huge.len() > 5000);
    for headers in [
        vec![("x-nimbus-locale", "xx-YY")],
        vec![("accept-language", "tlh, i-klingon;q=0.9")],
        vec![("accept-language", huge.as_str())],
        vec![("accept-language", "de;q=7, fr;q=-1, ja;q=nan")],
        vec![("x-nimbus-locale", "*")],
    ] {
        let locale = public(&app, LISTS, &headers).await;
        let names = ["FR", "DE", "JP"].map(|code| name_of(&locale["countries"], code));
        assert_eq!(
            names,
            english,
            "{:?}",
            &headers[0].1[..headers[0].1.len().min(40)]
        );
    }
    app.shutdown().await;
}

#[tokio::test]
async fn locale_of_a_loopback_caller_has_no_country() {
    let app = spawn_app().await;
    let locale = public(&app, CALLER, &[("x-forwarded-for", "8.8.8.8")]).await;
    // No proxy is trusted: the header is ignored, and loopback is in no country.
    assert_eq!(
        locale,
        json!({"ip": "127.0.0.1", "countryCode": null, "country": null, "continentCode": null,
               "continent": null, "eu": false, "currency": null})
    );
    // A project that does not exist is still refused, as for every request.
    let refused = app
        .post(
            json!({"query": CALLER}),
            &[("x-nimbus-project", "nosuchproject")],
        )
        .await;
    assert_ne!(refused.code(), "<none>", "{:?}", refused.body);
    app.shutdown().await;
}

#[tokio::test]
async fn locale_honours_forwarded_for_only_from_a_trusted_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.trusted_proxies = "127.0.0.1,10.0.0.0/8".parse().unwrap();
    let app = spawn_with(config, dir).await;

    let us = public(
        &app,
        CALLER,
        &[("x-forwarded-for", "8.8.8.8"), ("x-nimbus-locale", "de")],
    )
    .await;
    assert_eq!(
        us,
        json!({"ip": "8.8.8.8", "countryCode": "US", "country": "Vereinigte Staaten von Amerika",
               "continentCode": "NA", "continent": "Nordamerika", "eu": false, "currency": "USD"})
    );
    // A forged first entry does not count: the nearest untrusted hop is the client.
    let chain = public(
        &app,
        CALLER,
        &[("x-forwarded-for", "6.6.6.6, 8.8.8.8, 10.1.2.3")],
    )
    .await;
    assert_eq!(chain["ip"], "8.8.8.8");
    assert_eq!(chain["country"], "United States of America");

    let v6 = public(&app, CALLER, &[("x-forwarded-for", "2a00:1450::1")]).await;
    assert_eq!(v6["ip"], "2a00:1450::1");
    let code = v6["countryCode"]
        .as_str()
        .expect("an IPv6 address with a country");
    assert_eq!(code.len(), 2);
    assert!(v6["continentCode"].is_string());

    let french = public(&app, CALLER, &[("x-forwarded-for", "193.51.24.1")]).await;
    assert_eq!(french["countryCode"], "FR");
    assert_eq!(french["eu"], true);
    assert_eq!(french["currency"], "EUR");

    // Garbage in the header leaves the proxy as the client.
    let garbage = public(&app, CALLER, &[("x-forwarded-for", "not an address")]).await;
    assert_eq!(garbage["ip"], "127.0.0.1");
    assert_eq!(garbage["countryCode"], Value::Null);
    app.shutdown().await;
}

#[tokio::test]
async fn a_missing_geoip_database_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    let missing = dir.path().join("GeoLite2-Country.mmdb");
    config.geoip_db = Some(missing.clone());
    let err = match nimbus::Server::start(config).await {
        Ok(_) => panic!("the server started without its GeoIP database"),
        Err(err) => format!("{err:#}"),
    };
    assert!(err.contains("NIMBUS_GEOIP_DB"), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");
}

#[tokio::test]
async fn sessions_record_the_forwarded_client_only_behind_a_trusted_proxy() {
    let create = json!({"query": "mutation { createAnonymousSession { session { ip } } }"});
    let forwarded = [("x-forwarded-for", "8.8.8.8")];

    let app = spawn_app().await;
    let direct = app.post(create.clone(), &forwarded).await.ok();
    assert_eq!(
        direct["createAnonymousSession"]["session"]["ip"],
        "127.0.0.1"
    );
    app.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.trusted_proxies = "127.0.0.0/8".parse().unwrap();
    let app = spawn_with(config, dir).await;
    let proxied = app.post(create, &forwarded).await.ok();
    assert_eq!(
        proxied["createAnonymousSession"]["session"]["ip"],
        "8.8.8.8"
    );
    app.shutdown().await;
}

#[tokio::test]
async fn locale_over_a_websocket_reads_the_upgrade_requests_headers() {
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.trusted_proxies = "127.0.0.1".parse().unwrap();
    let app = spawn_with(config, dir).await;

    let mut request = app.ws_url.as_str().into_client_request().unwrap();
    for (name, value) in [
        ("sec-websocket-protocol", "graphql-transport-ws"),
        ("accept-language", "fr-FR,fr;q=0.9"),
        ("x-forwarded-for", "8.8.8.8"),
    ] {
        request.headers_mut().insert(name, value.parse().unwrap());
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    let query = "{ locale { ip countryCode country } }";
    for message in [
        json!({"type": "connection_init", "payload": {}}),
        json!({"id": "1", "type": "subscribe", "payload": {"query": query}}),
    ] {
        socket
            .send(Message::text(message.to_string()))
            .await
            .unwrap();
    }
    let next = tokio::time::timeout(crate::helpers::WAIT, async {
        while let Some(Ok(message)) = socket.next().await {
            if let Message::Text(text) = message {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "next" {
                    return value;
                }
            }
        }
        panic!("the socket closed before the answer");
    })
    .await
    .expect("an answer within the wait");
    assert_eq!(
        next["payload"]["data"]["locale"],
        json!({"ip": "8.8.8.8", "countryCode": "US", "country": "États-Unis d'Amérique"})
    );
    app.shutdown().await;
}

#[tokio::test]
async fn locale_lists_asked_again_keep_their_language_selection_and_directives() {
    let app = spawn_app().await;
    let de = [("x-nimbus-locale", "de")];
    let fr = [("x-nimbus-locale", "fr")];
    let plain = "{ locale { countries { code name } } }";
    let first = public(&app, plain, &de).await;
    let again = public(&app, plain, &de).await;
    assert_eq!(
        first, again,
        "the same list, language and fields: the same answer"
    );
    assert_eq!(name_of(&again["countries"], "DE"), "Deutschland");
    let french = public(&app, plain, &fr).await;
    assert_eq!(
        name_of(&french["countries"], "DE"),
        "Allemagne",
        "another language"
    );

    // Aliases and `__typename` are part of what is kept; two selections of the same
    // list in one request each get their own fields.
    let aliased = public(
        &app,
        "{ locale { a: countries { c: code n: name __typename } b: countries { code } } }",
        &de,
    )
    .await;
    let germany = find(&aliased["a"], "c", "DE");
    assert_eq!(
        germany,
        &json!({ "c": "DE", "n": "Deutschland", "__typename": "LocaleCountry" })
    );
    assert_eq!(find(&aliased["b"], "code", "DE"), &json!({ "code": "DE" }));
    let eu = public(&app, "{ locale { countriesEU { code } } }", &de).await;
    assert_eq!(eu["countriesEU"].as_array().unwrap().len(), 27);

    // Fragments and directives (which may hang on variables) are resolved as usual.
    let fragment = public(
        &app,
        "{ locale { countries { ...C } } } fragment C on LocaleCountry { code name }",
        &fr,
    )
    .await;
    assert_eq!(name_of(&fragment["countries"], "DE"), "Allemagne");
    let query = "query($n: Boolean!) { locale { countries { code name @include(if: $n) } } }";
    for shown in [true, false, true] {
        let answer = app
            .post(json!({ "query": query, "variables": { "n": shown } }), &de)
            .await
            .ok();
        let germany = find(&answer["locale"]["countries"], "code", "DE");
        assert_eq!(germany.get("name").is_some(), shown, "{germany}");
    }
    app.shutdown().await;
}

/// The status and body text of a POST of `body`.
async fn raw(app: &TestApp, body: &Value, headers: &[(&str, &str)]) -> (u16, String) {
    let mut request = app
        .client
        .post(format!("{}/v1/graphql", app.url))
        .json(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

/// Asks `query` with `variables` three times: first and again on its own (the
/// second answer is the kept one), and as a batch of one, which the executor
/// always resolves; checks the three are the same bytes and returns the answer.
async fn kept_and_resolved(
    app: &TestApp,
    query: &str,
    variables: &Value,
    headers: &[(&str, &str)],
) -> Value {
    let single = json!({ "query": query, "variables": variables });
    let (status, first) = raw(app, &single, headers).await;
    assert_eq!(status, 200, "{first}");
    let (_, kept) = raw(app, &single, headers).await;
    let (_, resolved) = raw(app, &json!([single]), headers).await;
    assert_eq!(kept, first, "{query} {headers:?}");
    assert_eq!(format!("[{kept}]"), resolved, "{query} {headers:?}");
    let answer: Value = serde_json::from_str(&kept).unwrap();
    assert!(answer.get("errors").is_none(), "{answer}");
    answer["data"].clone()
}

#[tokio::test]
async fn kept_locale_answers_are_the_resolved_ones_in_every_language_and_shape() {
    let app = spawn_app().await;
    let none = json!({});
    let shapes = [
        ("{ locale { countries { code name } } }", none.clone()),
        (LISTS, none.clone()),
        (
            "{ __typename l: locale { __typename a: countriesEU { c: code n: name __typename } \
             b: countriesPhones { countryName code } } }",
            none.clone(),
        ),
        (
            "query Lists { locale { ...L } } fragment L on Locale { continents { ...C } \
             localeCodes { ... on LocaleCode { code name } } } \
             fragment C on LocaleContinent { name code }",
            none.clone(),
        ),
        (
            "query($n: Boolean!, $c: Boolean!) { locale { currencies { code name @include(if: $n) \
             symbol @skip(if: $c) } } }",
            json!({ "n": true, "c": false }),
        ),
        (
            "query($n: Boolean!, $c: Boolean!) { locale { currencies { code name @include(if: $n) \
             symbol @skip(if: $c) } } }",
            json!({ "n": false, "c": true }),
        ),
    ];
    for language in ["de", "fr-CA", "ja", "pt-BR", "xx"] {
        let headers = [("x-nimbus-locale", language)];
        for (query, variables) in &shapes {
            kept_and_resolved(&app, query, variables, &headers).await;
        }
    }
    // What the shapes answer, in one language.
    let de = [("x-nimbus-locale", "de")];
    let aliased = kept_and_resolved(&app, shapes[2].0, &none, &de).await;
    assert_eq!(aliased["__typename"], "Query");
    assert_eq!(aliased["l"]["__typename"], "Locale");
    assert_eq!(
        find(&aliased["l"]["a"], "c", "DE"),
        &json!({ "c": "DE", "n": "Deutschland", "__typename": "LocaleCountry" })
    );
    assert_eq!(
        find(&aliased["l"]["b"], "code", "+49"),
        &json!({ "countryName": "Deutschland", "code": "+49" })
    );
    let fragments = kept_and_resolved(&app, shapes[3].0, &none, &de).await;
    assert_eq!(
        find(&fragments["locale"]["continents"], "code", "EU"),
        &json!({ "name": "Europa", "code": "EU" })
    );
    let shown = kept_and_resolved(&app, shapes[4].0, &shapes[4].1, &de).await;
    assert_eq!(
        find(&shown["locale"]["currencies"], "code", "USD"),
        &json!({ "code": "USD", "name": "US-Dollar", "symbol": "$" })
    );
    let hidden = kept_and_resolved(&app, shapes[5].0, &shapes[5].1, &de).await;
    assert_eq!(
        find(&hidden["locale"]["currencies"], "code", "USD"),
        &json!({ "code": "USD" })
    );
    app.shutdown().await;
}

#[tokio::test]
async fn a_kept_locale_list_answers_only_its_own_language_and_caller() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.trusted_proxies = "127.0.0.1".parse().unwrap();
    let app = spawn_with(config, dir).await;
    let query = "{ locale { countries { code name } } }";
    let germany = |locale: Value| name_of(&locale["countries"], "DE");
    for _ in 0..2 {
        let german = public(&app, query, &[("x-nimbus-locale", "de")]).await;
        assert_eq!(germany(german), "Deutschland");
    }
    for (headers, expected) in [
        (vec![("x-nimbus-locale", "fr")], "Allemagne"),
        (vec![], "Germany"),
        (vec![("x-nimbus-locale", "de-AT")], "Deutschland"),
        (vec![("accept-language", "fr-FR,fr;q=0.9")], "Allemagne"),
        (
            vec![("accept-language", "de"), ("x-nimbus-locale", "ja")],
            "ドイツ",
        ),
        (vec![("x-nimbus-locale", "de")], "Deutschland"),
    ] {
        for _ in 0..2 {
            let locale = public(&app, query, &headers).await;
            assert_eq!(germany(locale), expected, "{headers:?}");
        }
    }

    // With the caller's own place in it, an answer is the caller's.
    let mixed = "{ locale { countryCode countries { code } } }";
    for (forwarded, country) in [("8.8.8.8", json!("US")), ("10.0.0.1", Value::Null)] {
        for _ in 0..2 {
            let locale = public(&app, mixed, &[("x-forwarded-for", forwarded)]).await;
            assert_eq!(locale["countryCode"], country, "{forwarded}");
            assert!(locale["countries"].as_array().unwrap().len() >= 249);
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn kept_locale_answers_keep_errors_and_limits_as_they_were() {
    let app = spawn_app().await;
    let query = "{ locale { countries { code name } } }";
    let unknown_operation = "query Q { locale { countries { code } } }";
    let refused: Vec<(Value, Vec<(&str, &str)>)> = vec![
        (
            json!({ "query": query }),
            vec![("authorization", "Bearer ns_not-a-session")],
        ),
        (
            json!({ "query": query }),
            vec![("x-nimbus-key", "not-a-key")],
        ),
        (
            json!({ "query": query }),
            vec![("x-nimbus-project", "no-such-project")],
        ),
        (
            json!({ "query": query }),
            vec![("x-nimbus-project", "bad id!")],
        ),
        (
            json!({ "query": "{ locale { countries { code nope } } }" }),
            vec![],
        ),
        (
            json!({ "query": "{ locale { countries { code name } }" }),
            vec![],
        ),
        (
            json!({ "query": unknown_operation, "operationName": "R" }),
            vec![],
        ),
    ];
    let mut before = Vec::new();
    for (body, headers) in &refused {
        let answer = app.post(body.clone(), headers).await;
        before.push((answer.status, answer.code().to_string()));
    }
    let codes: Vec<&str> = before.iter().map(|(_, code)| code.as_str()).collect();
    assert_eq!(
        codes[4..],
        [
            "GRAPHQL_VALIDATION_FAILED",
            "GRAPHQL_PARSE_FAILED",
            "OPERATION_NOT_FOUND"
        ]
    );
    assert_eq!(
        codes[..4],
        [
            "INVALID_SESSION",
            "INVALID_API_KEY",
            "PROJECT_NOT_FOUND",
            "INVALID_ID"
        ]
    );

    // The same list kept in every language the refused requests would get, and
    // the operation the unknown name missed: they are refused as before.
    let huge = format!("de;q=0.9, {}", "x-private-tag;q=0.5, ".repeat(256));
    assert!(huge.len() > 5000);
    let oversized = [("accept-language", huge.as_str())];
    let locale = kept_and_resolved(&app, query, &json!({}), &oversized).await;
    assert_eq!(name_of(&locale["locale"]["countries"], "DE"), "Germany");
    kept_and_resolved(&app, query, &json!({}), &[]).await;
    kept_and_resolved(&app, unknown_operation, &json!({}), &[]).await;
    for ((body, headers), was) in refused.iter().zip(&before) {
        let answer = app.post(body.clone(), headers).await;
        assert_eq!(
            (answer.status, answer.code().to_string()),
            *was,
            "{body} {headers:?}"
        );
        assert!(answer.body.get("data").is_none(), "{}", answer.body);
    }
    app.shutdown().await;
}
