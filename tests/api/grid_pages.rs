//! The document grid's pages over an optional attribute: sorted by it either
//! way, paged forwards and backwards by cursor (typed connections and
//! Appwrite's `cursorAfter`/`cursorBefore`) and jumped into by `offset`, with
//! and without an index on it. Every page boundary, among the NULLs, on the
//! edge between values and NULLs and among values, gives the rows in the
//! specified order (NULLs first ascending, last descending; ties by id), once
//! each, with the list's total unchanged.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// The rows: `(id, price)`, with NULL prices and ties.
fn rows() -> Vec<(String, Option<i64>)> {
    (0..23_i64)
        .map(|i| {
            let id = format!("g{:02}", (i * 7) % 23);
            let price = (i % 4 != 1).then_some(i % 5 * 10);
            (id, price)
        })
        .collect()
}

/// The ids in the specified order.
fn expected(desc: bool) -> Vec<String> {
    let mut rows = rows();
    rows.sort_by(|a, b| {
        let by_price = if desc { b.1.cmp(&a.1) } else { a.1.cmp(&b.1) };
        by_price.then_with(|| a.0.cmp(&b.0))
    });
    rows.into_iter().map(|(id, _)| id).collect()
}

async fn shop(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"shop\", name: \"Shop\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "shop", "id": "items", "name": "Items", "graphqlName": "Item",
            "permissions": ["read(\"any\")"],
            "attributes": [
                {"key": "title", "type": "STRING", "size": 50},
                {"key": "price", "type": "INTEGER"}
            ]
        }}),
    )
    .await
    .ok();
    let input: Vec<Value> = rows()
        .into_iter()
        .map(|(id, price)| json!({"id": id, "title": format!("Item {id}"), "price": price}))
        .collect();
    let made = app
        .admin(
            "mutation($input: [CreateItemInput!]!) { createItems(input: $input) { id price } }",
            json!({"input": input}),
        )
        .await
        .ok();
    assert_eq!(made["createItems"].as_array().unwrap().len(), rows().len());
    assert_eq!(made["createItems"][1]["price"], Value::Null);
}

fn q(method: &str, attribute: Option<&str>, values: Value) -> String {
    let mut query = json!({"method": method, "values": values});
    if let Some(attribute) = attribute {
        query["attribute"] = json!(attribute);
    }
    query.to_string()
}

/// One page of the grid's own query (`documents` with Appwrite's queries):
/// the ids and the total.
async fn grid_page(app: &TestApp, queries: &[String]) -> (Vec<String>, i64) {
    let page = app
        .admin(
            "query($q: [String!]) { documents(databaseId: \"shop\", collectionId: \"items\", queries: $q) { total documents { id } } }",
            json!({"q": queries}),
        )
        .await
        .ok();
    let ids = page["documents"]["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    (ids, page["documents"]["total"].as_i64().unwrap())
}

/// Every way of paging the list sorted by price, `desc` or not, by `size`.
async fn check_pages(app: &TestApp, desc: bool, size: usize, what: &str) {
    let want = expected(desc);
    let total = want.len() as i64;
    let order = q(
        if desc { "orderDesc" } else { "orderAsc" },
        Some("price"),
        json!([]),
    );
    let limit = q("limit", None, json!([size]));

    // Scrolling down with `cursorAfter`, from each page's last document.
    let mut seen: Vec<String> = Vec::new();
    loop {
        let mut queries = vec![order.clone(), limit.clone()];
        if let Some(last) = seen.last() {
            queries.push(q("cursorAfter", None, json!([last])));
        }
        let (ids, listed) = grid_page(app, &queries).await;
        assert_eq!(listed, total, "{what}");
        let end = ids.is_empty();
        seen.extend(ids);
        if end || seen.len() >= want.len() {
            break;
        }
    }
    assert_eq!(seen, want, "{what}: cursorAfter by {size}");

    // Scrolling up with `cursorBefore`, from each page's first document.
    let mut seen: Vec<String> = vec![want.last().unwrap().clone()];
    loop {
        let queries = vec![
            order.clone(),
            limit.clone(),
            q("cursorBefore", None, json!([seen[0]])),
        ];
        let (ids, _) = grid_page(app, &queries).await;
        if ids.is_empty() || seen.len() > want.len() {
            break;
        }
        assert!(ids.len() <= size, "{what}");
        seen.splice(0..0, ids);
    }
    assert_eq!(seen, want, "{what}: cursorBefore by {size}");

    // Jumping by offset to every page, and one past the end.
    let mut seen = Vec::new();
    for offset in (0..=want.len()).step_by(size) {
        let queries = vec![
            order.clone(),
            limit.clone(),
            q("offset", None, json!([offset])),
        ];
        let (ids, listed) = grid_page(app, &queries).await;
        assert_eq!(listed, total, "{what}");
        seen.extend(ids);
    }
    assert_eq!(seen, want, "{what}: offset by {size}");

    // The typed connection, forwards and backwards, with its page info.
    let direction = if desc { "DESC" } else { "ASC" };
    let forwards = format!(
        "query($n: Int, $c: String) {{ items(orderBy: [{{price: {direction}}}], first: $n, after: $c) {{ totalCount nodes {{ id }} pageInfo {{ hasNextPage endCursor }} }} }}"
    );
    let backwards = format!(
        "query($n: Int, $c: String) {{ items(orderBy: [{{price: {direction}}}], last: $n, before: $c) {{ totalCount nodes {{ id }} pageInfo {{ hasPreviousPage startCursor }} }} }}"
    );
    for (query, next, more, at_end) in [
        (&forwards, "endCursor", "hasNextPage", false),
        (&backwards, "startCursor", "hasPreviousPage", true),
    ] {
        let mut seen: Vec<String> = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let page = app.admin(query, json!({"n": size, "c": cursor})).await.ok();
            let page = &page["items"];
            assert_eq!(page["totalCount"], total, "{what}");
            let ids: Vec<String> = page["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["id"].as_str().unwrap().to_string())
                .collect();
            assert!(!ids.is_empty() && ids.len() <= size, "{what}: {ids:?}");
            if at_end {
                seen.splice(0..0, ids);
            } else {
                seen.extend(ids);
            }
            if page["pageInfo"][more] != true || seen.len() > want.len() {
                break;
            }
            cursor = page["pageInfo"][next].as_str().map(String::from);
        }
        assert_eq!(seen, want, "{what}: typed {query} by {size}");
    }
}

#[tokio::test]
async fn pages_sorted_by_an_optional_attribute_keep_the_order_across_its_nulls_with_and_without_an_index()
 {
    let app = spawn_app().await;
    shop(&app).await;
    // The specified orders put the NULLs (every fourth row) at the start
    // ascending and at the end descending.
    let nulls = rows().iter().filter(|(_, p)| p.is_none()).count();
    assert!(nulls >= 5);
    let (ids, _) = grid_page(&app, &[q("orderDesc", Some("price"), json!([]))]).await;
    assert_eq!(ids, expected(true));
    assert!(
        ids[ids.len() - nulls..]
            .iter()
            .all(|id| rows().iter().any(|(r, p)| r == id && p.is_none()))
    );

    for indexed in [false, true] {
        if indexed {
            app.admin(
                "mutation { createIndex(input: {databaseId: \"shop\", collectionId: \"items\", index: {key: \"by_price\", type: KEY, attributes: [\"price\"]}}) { id } }",
                json!({}),
            )
            .await
            .ok();
        }
        for desc in [true, false] {
            for size in [1, 2, 3, 5, 6, 23] {
                let what = format!("indexed {indexed}, desc {desc}");
                check_pages(&app, desc, size, &what).await;
            }
        }
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_page_after_the_last_value_of_a_descending_list_holds_its_nulls_and_reports_what_follows()
{
    let app = spawn_app().await;
    shop(&app).await;
    let want = expected(true);
    let nulls = rows().iter().filter(|(_, p)| p.is_none()).count();
    // The last document with a price: what follows it is every NULL, in id order.
    let edge = &want[want.len() - nulls - 1];
    let page = app
        .admin(
            "query($c: String) { items(orderBy: [{price: DESC}], first: 2, after: $c) { nodes { id price } pageInfo { hasNextPage } } }",
            json!({"c": Value::Null}),
        )
        .await
        .ok();
    assert_eq!(page["items"]["pageInfo"]["hasNextPage"], true);
    let (after, _) = grid_page(
        &app,
        &[
            q("orderDesc", Some("price"), json!([])),
            q("limit", None, json!([nulls + 1])),
            q("cursorAfter", None, json!([edge])),
        ],
    )
    .await;
    assert_eq!(after, want[want.len() - nulls..]);
    // A page that ends on the edge says more follow (the NULLs), read by the
    // second statement of that page.
    let edge_page = app
        .admin(
            &format!(
                "{{ items(orderBy: [{{price: DESC}}], first: {}) {{ nodes {{ id price }} pageInfo {{ hasNextPage endCursor }} }} }}",
                want.len() - nulls
            ),
            json!({}),
        )
        .await
        .ok();
    let nodes = edge_page["items"]["nodes"].as_array().unwrap();
    assert!(nodes.iter().all(|n| !n["price"].is_null()));
    assert_eq!(edge_page["items"]["pageInfo"]["hasNextPage"], true);
    let rest = app
        .admin(
            "query($c: String) { items(orderBy: [{price: DESC}], first: 100, after: $c) { nodes { id price } pageInfo { hasNextPage } } }",
            json!({"c": edge_page["items"]["pageInfo"]["endCursor"]}),
        )
        .await
        .ok();
    let rest_ids: Vec<&str> = rest["items"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(rest_ids, want[want.len() - nulls..]);
    assert_eq!(rest["items"]["pageInfo"]["hasNextPage"], false);
    app.shutdown().await;
}
