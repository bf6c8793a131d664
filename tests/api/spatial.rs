//! Point, line and polygon attributes as Appwrite's clients use them: written
//! and read as coordinates, compared with Appwrite's spatial queries (the same
//! answers on SQLite and MariaDB), in the typed API with their own list types
//! and filter, and the rules of spatial indexes and defaults.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const CREATE: &str = "mutation($c: ID!, $id: ID!, $data: JSON!) { createDocument(input: {databaseId: \"geo\", collectionId: $c, id: $id, data: $data}) { id data } }";
const LIST: &str = "query($c: ID!, $q: [String!]) { documents(databaseId: \"geo\", collectionId: $c, queries: $q) { total documents { id data } } }";

async fn geo_database(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"geo\", name: \"Geo\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
}

async fn create_collection(app: &TestApp, id: &str, graphql_name: &str, attributes: Value) {
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "geo", "id": id, "name": id, "graphqlName": graphql_name,
            "permissions": ["read(\"users\")", "create(\"users\")", "update(\"users\")"],
            "attributes": attributes,
        }}),
    )
    .await
    .ok();
}

/// The ids a list of `collection` answers `queries` with, sorted, and its total.
async fn ids(
    app: &TestApp,
    session: &str,
    collection: &str,
    queries: &[Value],
) -> (Vec<String>, u64) {
    let queries: Vec<String> = queries.iter().map(Value::to_string).collect();
    let data = app
        .as_session(session, LIST, json!({"c": collection, "q": queries}))
        .await
        .ok();
    let mut found: Vec<String> = data["documents"]["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    found.sort();
    (found, data["documents"]["total"].as_u64().unwrap())
}

/// A shape's numbers in order, whatever their JSON form (`6` or `6.0`).
fn floats(shape: &Value) -> Vec<f64> {
    match shape {
        Value::Array(items) => items.iter().flat_map(floats).collect(),
        other => other.as_f64().into_iter().collect(),
    }
}

fn query(method: &str, attribute: &str, values: Value) -> Value {
    json!({"method": method, "attribute": attribute, "values": values})
}

#[tokio::test]
async fn shapes_are_written_read_and_compared_as_appwrite_compares_them() {
    let app = spawn_app().await;
    geo_database(&app).await;
    create_collection(
        &app,
        "places",
        "Place",
        json!([
            {"key": "name", "type": "STRING", "size": 100, "required": true},
            {"key": "pointAttr", "type": "POINT", "required": true},
            {"key": "lineAttr", "type": "LINE", "required": true},
            {"key": "polyAttr", "type": "POLYGON", "required": true},
        ]),
    )
    .await;
    let ann = app.signed_in("ann@example.com").await;
    for (id, point, line, polygon) in [
        (
            "doc1",
            json!([6, 6]),
            json!([[1, 1], [1.1, 1.1], [2, 2]]),
            json!([[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]),
        ),
        (
            "doc2",
            json!([7, 6]),
            json!([[10, 10], [20, 20]]),
            json!([[[20, 20], [30, 20], [30, 30], [20, 30], [20, 20]]]),
        ),
        (
            "doc3",
            json!([25, 25]),
            json!([[25, 25], [35, 35]]),
            json!([[[40, 40], [50, 40], [50, 50], [40, 50], [40, 40]]]),
        ),
    ] {
        let created = app
            .as_session(&ann, CREATE, json!({"c": "places", "id": id, "data": {
                "name": format!("Test {id}"), "pointAttr": point, "lineAttr": line, "polyAttr": polygon,
            }}))
            .await
            .ok();
        assert_eq!(
            floats(&created["createDocument"]["data"]["pointAttr"]),
            floats(&point)
        );
        assert_eq!(
            floats(&created["createDocument"]["data"]["polyAttr"]),
            floats(&polygon)
        );
    }
    let read = app
        .as_session(
            &ann,
            "{ document(databaseId: \"geo\", collectionId: \"places\", id: \"doc1\") { data } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        read["document"]["data"]["lineAttr"],
        json!([[1.0, 1.0], [1.1, 1.1], [2.0, 2.0]])
    );
    assert_eq!(
        read["document"]["data"]["polyAttr"][0][2],
        json!([10.0, 10.0])
    );

    let doc1 = vec!["doc1".to_string()];
    let all = vec!["doc1".to_string(), "doc2".into(), "doc3".into()];
    let square = json!([[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]]);
    // Every answer the same with spatial indexes on the shapes (made over the
    // documents there are), which narrow the candidates by bounding box.
    for indexed in [false, true] {
        if indexed {
            for attribute in ["pointAttr", "lineAttr", "polyAttr"] {
                app.admin(
                    "mutation($input: CreateIndexInput!) { createIndex(input: $input) { id } }",
                    json!({"input": {"databaseId": "geo", "collectionId": "places", "index": {"key": format!("near_{attribute}"), "type": "SPATIAL", "attributes": [attribute]}}}),
                )
                .await
                .ok();
            }
        }
        for (queries, expected) in [
            (
                vec![query("equal", "polyAttr", json!([square]))],
                doc1.clone(),
            ),
            (
                vec![query("notEqual", "pointAttr", json!([[6, 6]]))],
                vec!["doc2".into(), "doc3".into()],
            ),
            (
                vec![query("contains", "lineAttr", json!([[1.1, 1.1]]))],
                doc1.clone(),
            ),
            (
                vec![query("notContains", "polyAttr", json!([[15, 15]]))],
                all.clone(),
            ),
            (
                vec![query("intersects", "polyAttr", json!([[5, 5]]))],
                doc1.clone(),
            ),
            (
                vec![query("notIntersects", "polyAttr", json!([[60, 60]]))],
                all.clone(),
            ),
            (
                vec![query(
                    "overlaps",
                    "polyAttr",
                    json!([[[[5, 5], [12, 5], [12, 12], [5, 12], [5, 5]]]]),
                )],
                doc1.clone(),
            ),
            (
                vec![query(
                    "notOverlaps",
                    "polyAttr",
                    json!([[[[60, 60], [70, 60], [70, 70], [60, 70], [60, 60]]]]),
                )],
                all.clone(),
            ),
            (
                vec![query("distanceEqual", "pointAttr", json!([[[6, 6], 1]]))],
                vec!["doc2".into()],
            ),
            (
                vec![query("distanceNotEqual", "pointAttr", json!([[[6, 6], 1]]))],
                vec!["doc1".into(), "doc3".into()],
            ),
            (
                vec![query(
                    "distanceGreaterThan",
                    "pointAttr",
                    json!([[[6, 6], 5]]),
                )],
                vec!["doc3".into()],
            ),
            (
                vec![query(
                    "distanceLessThan",
                    "pointAttr",
                    json!([[[6, 6], 0.5]]),
                )],
                doc1.clone(),
            ),
            (
                vec![query("crosses", "lineAttr", json!([[[1, 2], [2, 1]]]))],
                doc1.clone(),
            ),
            (
                vec![query("notCrosses", "lineAttr", json!([[[0, 1], [0, 2]]]))],
                all.clone(),
            ),
            (
                vec![query(
                    "touches",
                    "polyAttr",
                    json!([[[[10, 10], [20, 10], [20, 20], [10, 20], [10, 10]]]]),
                )],
                vec!["doc1".into(), "doc2".into()],
            ),
            (
                vec![query(
                    "notTouches",
                    "polyAttr",
                    json!([[[[60, 60], [70, 60], [70, 70], [60, 70], [60, 60]]]]),
                )],
                all.clone(),
            ),
            // With other conditions and nested in `or`.
            (
                vec![json!({"method": "or", "values": [
                    query("equal", "name", json!(["Test doc3"])),
                    query("intersects", "polyAttr", json!([[5, 5]])),
                ]})],
                vec!["doc1".into(), "doc3".into()],
            ),
        ] {
            let (found, total) = ids(&app, &ann, "places", &queries).await;
            assert_eq!(found, expected, "{queries:?}");
            assert_eq!(total, expected.len() as u64, "{queries:?}");
        }
    }

    // `select` keeps only the shapes named.
    let select = json!({"method": "select", "values": ["name", "pointAttr"]}).to_string();
    let selected = app
        .as_session(&ann, LIST, json!({"c": "places", "q": [select]}))
        .await
        .ok();
    let first = &selected["documents"]["documents"][0]["data"];
    assert!(
        first.get("pointAttr").is_some() && first.get("lineAttr").is_none(),
        "{first}"
    );

    // Bad shapes and bad comparisons are refused with their codes.
    for (data, says) in [
        (json!({"pointAttr": [181, 0]}), "longitude"),
        (json!({"pointAttr": [1]}), "two numbers"),
        (json!({"lineAttr": [[1, 1]]}), "at least two points"),
        (
            json!({"polyAttr": [[[0, 0], [1, 0], [1, 1], [0, 1]]]}),
            "closed",
        ),
        (json!({"polyAttr": "POINT(1 1)"}), "the WKT is a point"),
    ] {
        let answer = app
            .as_session(&ann, "mutation($data: JSON) { updateDocument(input: {databaseId: \"geo\", collectionId: \"places\", id: \"doc1\", data: $data}) { id } }", json!({"data": data}))
            .await;
        assert_eq!(answer.code(), "VALUE_INVALID", "{data}: {:#}", answer.body);
        assert!(answer.body.to_string().contains(says), "{:#}", answer.body);
    }
    for (bad, code) in [
        (query("lessThan", "pointAttr", json!([5])), "FILTER_INVALID"),
        (
            query("intersects", "name", json!([[5, 5]])),
            "FILTER_INVALID",
        ),
        (
            query("distanceLessThan", "polyAttr", json!([[[5, 5], 10, true]])),
            "FILTER_INVALID",
        ),
        (
            query("distanceLessThan", "pointAttr", json!([[[5, 5], -1]])),
            "FILTER_INVALID",
        ),
        (
            query("distanceLessThan", "pointAttr", json!([[5, 5]])),
            "QUERY_INVALID",
        ),
        (
            query("intersects", "polyAttr", json!([[500, 5]])),
            "VALUE_INVALID",
        ),
        (
            query("intersects", "polyAttr", json!(["x"])),
            "VALUE_INVALID",
        ),
        (
            json!({"method": "orderAsc", "attribute": "pointAttr"}),
            "FILTER_INVALID",
        ),
    ] {
        let answer = app
            .as_session(&ann, LIST, json!({"c": "places", "q": [bad.to_string()]}))
            .await;
        assert_eq!(answer.code(), code, "{bad}: {:#}", answer.body);
    }

    // The document changes, and the answers with it.
    app.as_session(&ann, "mutation { updateDocument(input: {databaseId: \"geo\", collectionId: \"places\", id: \"doc3\", data: {pointAttr: [6, 6.25]}}) { id } }", json!({}))
        .await
        .ok();
    let near = query("distanceLessThan", "pointAttr", json!([[[6, 6], 0.5]]));
    assert_eq!(ids(&app, &ann, "places", &[near]).await.0, ["doc1", "doc3"]);

    // The typed API: shapes as lists of floats, and a spatial filter.
    let sdl = app.get_text("/v1/graphql/schema.graphql").await;
    for expected in [
        "pointAttr: [Float!]!",
        "lineAttr: [[Float!]!]!",
        "polyAttr: [[[Float!]!]!]!",
        "pointAttr: SpatialFilter",
        "input SpatialFilter",
    ] {
        assert!(sdl.contains(expected), "schema lacks `{expected}`");
    }
    let created = app
        .as_session(&ann, "mutation($input: CreatePlaceInput!) { createPlace(input: $input) { id pointAttr lineAttr polyAttr } }", json!({"input": {
            "name": "Typed", "pointAttr": [6.1, 6], "lineAttr": [[0, 0], [3, 3]],
            "polyAttr": [[[100, 0], [101, 0], [101, 1], [100, 0]]],
        }}))
        .await
        .ok();
    assert_eq!(created["createPlace"]["pointAttr"], json!([6.1, 6.0]));
    let typed = app
        .as_session(
            &ann,
            "query($f: PlaceFilter) { places(filter: $f, first: 10) { edges { node { id } } } }",
            json!({"f": {
                "pointAttr": {"distanceLessThan": {"shape": [6, 6], "distance": 0.2}},
                "lineAttr": {"notCrosses": [[10, 0], [10, 1]]},
            }}),
        )
        .await
        .ok();
    let typed_ids: Vec<&str> = typed["places"]["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["node"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(typed_ids.len(), 2, "{typed}");
    assert!(typed_ids.contains(&"doc1"), "{typed}");
    let refused = app
        .as_session(
            &ann,
            "query($f: PlaceFilter) { places(filter: $f) { edges { node { id } } } }",
            json!({"f": {"pointAttr": {"intersects": [1, 2, 3]}}}),
        )
        .await;
    assert_eq!(refused.code(), "VALUE_INVALID", "{:#}", refused.body);
    app.shutdown().await;
}

#[tokio::test]
async fn spatial_indexes_and_defaults_follow_the_rules_of_appwrites_mariadb() {
    let app = spawn_app().await;
    geo_database(&app).await;
    create_collection(
        &app,
        "spots",
        "Spot",
        json!([
            {"key": "loc", "type": "POINT", "required": true},
            {"key": "maybe", "type": "POINT"},
        ]),
    )
    .await;
    let index = |key: &str, kind: &str, attribute: &str| json!({"input": {"databaseId": "geo", "collectionId": "spots", "index": {"key": key, "type": kind, "attributes": [attribute]}}});
    const CREATE_INDEX: &str = "mutation($input: CreateIndexInput!) { createIndex(input: $input) { indexes { key type } } }";
    let made = app
        .admin(CREATE_INDEX, index("by_loc", "SPATIAL", "loc"))
        .await
        .ok();
    assert_eq!(
        made["createIndex"]["indexes"],
        json!([{"key": "by_loc", "type": "SPATIAL"}])
    );
    for (key, kind, attribute, says) in [
        ("by_maybe", "SPATIAL", "maybe", "optional"),
        ("loc_key", "KEY", "loc", "SPATIAL index"),
        ("loc_unique", "UNIQUE", "loc", "SPATIAL index"),
    ] {
        let refused = app.admin(CREATE_INDEX, index(key, kind, attribute)).await;
        assert_eq!(refused.code(), "INDEX_INVALID", "{:#}", refused.body);
        assert!(
            refused.body.to_string().contains(says),
            "{:#}",
            refused.body
        );
    }
    // An indexed shape stays required.
    let optional = app
        .admin("mutation { updateAttribute(input: {databaseId: \"geo\", collectionId: \"spots\", key: \"loc\", required: false}) { id } }", json!({}))
        .await;
    assert_eq!(optional.code(), "INDEX_INVALID", "{:#}", optional.body);
    let array = app
        .admin("mutation { createAttribute(input: {databaseId: \"geo\", collectionId: \"spots\", attribute: {key: \"many\", type: POINT, array: true}}) { id } }", json!({}))
        .await;
    assert_eq!(array.code(), "ATTRIBUTE_INVALID", "{:#}", array.body);

    // Distances in meters, on the sphere.
    let ann = app.signed_in("ann@example.com").await;
    for (id, loc) in [("p0", json!([0, 0])), ("p1", json!([0.009, 0]))] {
        app.as_session(
            &ann,
            CREATE,
            json!({"c": "spots", "id": id, "data": {"loc": loc}}),
        )
        .await
        .ok();
    }
    for (method, distance, expected) in [
        ("distanceLessThan", 1500, vec!["p0", "p1"]),
        ("distanceLessThan", 500, vec!["p0"]),
        ("distanceGreaterThan", 500, vec!["p1"]),
        ("distanceEqual", 0, vec!["p0"]),
        ("distanceNotEqual", 0, vec!["p1"]),
    ] {
        let q = query(method, "loc", json!([[[0, 0], distance, true]]));
        assert_eq!(
            ids(&app, &ann, "spots", &[q]).await.0,
            expected,
            "{method} {distance}"
        );
    }
    // A second spatial index on the shape is refused; renamed, the shape keeps
    // its index; the index dropped, the answers stay.
    let twice = app
        .admin(CREATE_INDEX, index("by_loc_again", "SPATIAL", "loc"))
        .await;
    assert_eq!(twice.code(), "INDEX_INVALID", "{:#}", twice.body);
    app.admin(
        "mutation { updateAttribute(input: {databaseId: \"geo\", collectionId: \"spots\", key: \"loc\", required: true, newKey: \"place\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    let near = query("distanceLessThan", "place", json!([[[0, 0], 500, true]]));
    assert_eq!(
        ids(&app, &ann, "spots", std::slice::from_ref(&near))
            .await
            .0,
        ["p0"]
    );
    app.as_session(
        &ann,
        CREATE,
        json!({"c": "spots", "id": "p9", "data": {"place": [0.001, 0.001]}}),
    )
    .await
    .ok();
    assert_eq!(
        ids(&app, &ann, "spots", std::slice::from_ref(&near))
            .await
            .0,
        ["p0", "p9"]
    );
    let indexes = app
        .admin(
            "{ collection(databaseId: \"geo\", id: \"spots\") { indexes { key attributes } } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        indexes["collection"]["indexes"],
        json!([{"key": "by_loc", "attributes": ["place"]}])
    );
    app.admin(
        "mutation { deleteIndex(input: {databaseId: \"geo\", collectionId: \"spots\", key: \"by_loc\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(ids(&app, &ann, "spots", &[near]).await.0, ["p0", "p9"]);

    // A shape with no value meets only the negated conditions.
    let no_shape = query("notIntersects", "maybe", json!([[0, 0]]));
    assert_eq!(
        ids(&app, &ann, "spots", &[no_shape]).await.0,
        ["p0", "p1", "p9"]
    );
    let no_shape = query("intersects", "maybe", json!([[0, 0]]));
    assert!(ids(&app, &ann, "spots", &[no_shape]).await.0.is_empty());

    // A required shape cannot come to a collection with documents; one with a
    // default can, and later documents take it.
    let required = app
        .admin("mutation { createAttribute(input: {databaseId: \"geo\", collectionId: \"spots\", attribute: {key: \"route\", type: LINE, required: true}}) { id } }", json!({}))
        .await;
    assert_eq!(required.code(), "ATTRIBUTE_INVALID", "{:#}", required.body);
    for (key, kind, default) in [
        ("route", "LINE", json!([[0, 0], [1, 1]])),
        (
            "area",
            "POLYGON",
            json!([[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]),
        ),
    ] {
        app.admin(
            "mutation($input: CreateAttributeInput!) { createAttribute(input: $input) { id } }",
            json!({"input": {"databaseId": "geo", "collectionId": "spots", "attribute": {"key": key, "type": kind, "default": default}}}),
        )
        .await
        .ok();
    }
    let bad_default = app
        .admin("mutation { createAttribute(input: {databaseId: \"geo\", collectionId: \"spots\", attribute: {key: \"bad\", type: POINT, default: [500, 0]}}) { id } }", json!({}))
        .await;
    assert_eq!(
        bad_default.code(),
        "ATTRIBUTE_INVALID",
        "{:#}",
        bad_default.body
    );
    let later = app
        .as_session(
            &ann,
            CREATE,
            json!({"c": "spots", "id": "p2", "data": {"place": [1, 1]}}),
        )
        .await
        .ok();
    assert_eq!(
        later["createDocument"]["data"]["route"],
        json!([[0.0, 0.0], [1.0, 1.0]])
    );
    assert_eq!(
        later["createDocument"]["data"]["area"][0]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let earlier = app
        .as_session(
            &ann,
            "{ document(databaseId: \"geo\", collectionId: \"spots\", id: \"p0\") { data } }",
            json!({}),
        )
        .await
        .ok();
    assert_eq!(
        earlier["document"]["data"]["route"],
        json!([[0.0, 0.0], [1.0, 1.0]])
    );
    app.shutdown().await;
}

#[tokio::test]
async fn shape_attributes_change_in_place_and_subscriptions_follow_a_region() {
    let app = spawn_app().await;
    geo_database(&app).await;
    create_collection(
        &app,
        "zones",
        "Zone",
        json!([
            {"key": "name", "type": "STRING", "size": 100},
            {"key": "location", "type": "POINT", "required": true},
            {"key": "route", "type": "LINE"},
            {"key": "area", "type": "POLYGON", "required": true},
        ]),
    )
    .await;
    // Appwrite's `update*Attribute` on shapes: required, defaults, a new key.
    const UPDATE: &str = "mutation($input: UpdateAttributeInput!) { updateAttribute(input: $input) { attributes { key required default } } }";
    let update = |key: &str, rest: Value| {
        let mut input = json!({"databaseId": "geo", "collectionId": "zones", "key": key});
        input
            .as_object_mut()
            .unwrap()
            .extend(rest.as_object().unwrap().clone());
        json!({"input": input})
    };
    for (key, rest) in [
        ("location", json!({"required": false, "default": null})),
        (
            "route",
            json!({"required": false, "default": [[0, 0], [1, 1]]}),
        ),
        ("area", json!({"required": false, "newKey": "coverage"})),
        ("location", json!({"required": false, "default": [0, 0]})),
    ] {
        app.admin(UPDATE, update(key, rest)).await.ok();
    }
    let refused = app
        .admin(
            UPDATE,
            update("location", json!({"required": false, "default": [0, 100]})),
        )
        .await;
    assert_eq!(refused.code(), "ATTRIBUTE_INVALID", "{:#}", refused.body);
    let attributes = app
        .admin("{ collection(databaseId: \"geo\", id: \"zones\") { attributes { key required default } } }", json!({}))
        .await
        .ok();
    assert_eq!(
        attributes["collection"]["attributes"],
        json!([
            {"key": "name", "required": false, "default": null},
            {"key": "location", "required": false, "default": [0, 0]},
            {"key": "route", "required": false, "default": [[0, 0], [1, 1]]},
            {"key": "coverage", "required": false, "default": null},
        ])
    );
    let ann = app.signed_in("ann@example.com").await;
    let made = app
        .as_session(
            &ann,
            CREATE,
            json!({"c": "zones", "id": "z0", "data": {
                "name": "Defaults", "coverage": [[[0, 0], [10, 0], [10, 10], [0, 10], [0, 0]]],
            }}),
        )
        .await
        .ok();
    let data = &made["createDocument"]["data"];
    assert_eq!(floats(&data["location"]), [0.0, 0.0]);
    assert_eq!(floats(&data["route"]), [0.0, 0.0, 1.0, 1.0]);
    assert_eq!(floats(&data["coverage"]).len(), 10);

    // A typed subscription to the zones whose location lies in a square.
    let mut ws = crate::helpers::WsClient::connect(&app.ws_url, false).await;
    ws.init(json!({"Authorization": format!("Bearer {ann}")}))
        .await
        .expect("ack");
    ws.subscribe(
        "1",
        "subscription { zoneChanged(filter: {location: {intersects: [[[2, 2], [20, 2], [20, 20], [2, 20], [2, 2]]]}}) { type node { id location } } }",
    )
    .await;
    let create = |id: String, at: Value| {
        let (app, ann) = (&app, ann.clone());
        async move {
            app.as_session(
                &ann,
                CREATE,
                json!({"c": "zones", "id": id, "data": {"location": at}}),
            )
            .await
            .ok()
        }
    };
    // Live once a zone inside is heard of.
    let message = ws
        .first_heard_while(|n| create(format!("warm{n}"), json!([5, 5])))
        .await;
    assert_eq!(
        message["payload"]["data"]["zoneChanged"]["type"], "CREATE",
        "{message}"
    );
    let move_to = |at: Value| {
        let (app, ann) = (&app, ann.clone());
        async move {
            app.as_session(&ann, "mutation($data: JSON) { updateDocument(input: {databaseId: \"geo\", collectionId: \"zones\", id: \"far\", data: $data}) { id } }", json!({"data": {"location": at}}))
                .await
                .ok()
        }
    };
    create("far".into(), json!([50, 50])).await;
    move_to(json!([6, 7])).await;
    let entered = ws.next_json().await.expect("an event")["payload"]["data"]["zoneChanged"].clone();
    assert_eq!(
        entered,
        json!({"type": "UPDATE", "node": {"id": "far", "location": [6.0, 7.0]}})
    );
    move_to(json!([60, 60])).await;
    let left = ws.next_json().await.expect("an event")["payload"]["data"]["zoneChanged"].clone();
    assert_eq!(left["type"], "LEAVE", "{left}");
    assert_eq!(left["node"]["id"], "far", "{left}");
    app.shutdown().await;
}

/// Shapes written as WKT, as Appwrite takes them too: stored and answered as
/// coordinates, found by spatial queries like any other, a WKT of the wrong
/// shape or none at all refused with `VALUE_INVALID`.
#[tokio::test]
async fn shapes_written_as_wkt_are_kept_as_coordinates() {
    let app = spawn_app().await;
    geo_database(&app).await;
    create_collection(
        &app,
        "parcels",
        "Parcel",
        json!([
            {"key": "spot", "type": "POINT"},
            {"key": "path", "type": "LINE"},
            {"key": "area", "type": "POLYGON"}]),
    )
    .await;
    let session = app.signed_in("wkt@example.com").await;
    let written = app
        .as_session(
            &session,
            CREATE,
            json!({"c": "parcels", "id": "p1", "data": {
                "spot": "POINT(30 10)",
                "path": "LINESTRING (30 10, 10 30, 40 40)",
                "area": "POLYGON ((0 0, 10 0, 10 10, 0 10, 0 0))"}}),
        )
        .await
        .ok();
    let data = &written["createDocument"]["data"];
    assert_eq!(floats(&data["spot"]), [30.0, 10.0], "{data}");
    assert_eq!(floats(&data["path"]), [30.0, 10.0, 10.0, 30.0, 40.0, 40.0]);
    assert_eq!(
        floats(&data["area"]),
        [0.0, 0.0, 10.0, 0.0, 10.0, 10.0, 0.0, 10.0, 0.0, 0.0]
    );
    assert!(data["area"][0][0].is_array(), "rings of points: {data}");
    let (found, total) = ids(
        &app,
        &session,
        "parcels",
        &[query("contains", "area", json!([[5, 5]]))],
    )
    .await;
    assert_eq!((found, total), (vec!["p1".to_string()], 1));
    for (data, says) in [
        (json!({"spot": "LINESTRING(0 0, 1 1)"}), "the WKT is a line"),
        (json!({"spot": "somewhere"}), "WKT"),
        (
            json!({"area": "POLYGON((0 0, 1 0, 0 0))"}),
            "at least 4 points",
        ),
    ] {
        let refused = app
            .as_session(
                &session,
                CREATE,
                json!({"c": "parcels", "id": "bad", "data": data}),
            )
            .await;
        assert_eq!(refused.code(), "VALUE_INVALID", "{refused:?}");
        assert!(
            refused.body.to_string().contains(says),
            "{says}: {refused:?}"
        );
    }
    app.shutdown().await;
}
