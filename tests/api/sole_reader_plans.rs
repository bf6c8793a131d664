//! Lists read by each document's sole reader (ADR 0022): the documents whose
//! one reader is a role of the caller (its user, a team, `users`, `any`) come
//! from a range of their own per role, those it shares with others from its
//! grants, merged in one order. Every page, by cursor in both directions and
//! by offset, under filters and orders by indexed and unindexed attributes,
//! holds exactly what the reader may read, once, with its total; wherever the
//! page boundaries fall between the two kinds. Readers with more roles than
//! the plan takes, and collections whose sole readers are not yet filled in,
//! keep the plans that read the grants alone, with the same answers.

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};
use crate::owner_lists::{ask, check_sole_readers, posts_table, user_id, world_collection};

/// A post: its id, title, whether published, views and permissions.
struct Post {
    id: String,
    title: String,
    published: bool,
    views: i64,
    permissions: Vec<String>,
}

fn read(role: &str) -> String {
    format!("read(\"{role}\")")
}

/// Creates `posts` as the admin, forty to a request.
async fn create(app: &TestApp, posts: &[Post]) {
    for chunk in posts.chunks(40) {
        let mut query = String::from("mutation {");
        for (i, post) in chunk.iter().enumerate() {
            query.push_str(&format!(
                " p{i}: createPost(input: {{id: {}, title: {}, published: {}, views: {}, permissions: {}}}) {{ id }}",
                json!(post.id),
                json!(post.title),
                post.published,
                post.views,
                json!(post.permissions)
            ));
        }
        query.push_str(" }");
        let data = app.admin(&query, json!({})).await.ok();
        assert_eq!(data.as_object().unwrap().len(), chunk.len());
    }
}

/// One way to list: a typed filter and order, and the same as Appwrite queries.
struct Listing {
    name: &'static str,
    filter: &'static str,
    order_by: &'static str,
    /// The same through Appwrite's queries, when they can say it.
    queries: Option<Vec<Value>>,
    /// Which posts match.
    matches: fn(&Post) -> bool,
    /// The order, ties by id ascending.
    key: fn(&Post) -> (i64, String),
    desc: bool,
}

fn listings() -> Vec<Listing> {
    vec![
        Listing {
            name: "published by views, descending (indexed)",
            filter: "{published: {eq: true}}",
            order_by: "[{views: DESC}]",
            queries: Some(vec![
                json!({"method": "equal", "attribute": "published", "values": [true]}),
                json!({"method": "orderDesc", "attribute": "views"}),
            ]),
            matches: |p| p.published,
            key: |p| (p.views, String::new()),
            desc: true,
        },
        Listing {
            name: "published by views, ascending (indexed)",
            filter: "{published: {eq: true}}",
            order_by: "[{views: ASC}]",
            queries: Some(vec![
                json!({"method": "equal", "attribute": "published", "values": [true]}),
                json!({"method": "orderAsc", "attribute": "views"}),
            ]),
            matches: |p| p.published,
            key: |p| (p.views, String::new()),
            desc: false,
        },
        Listing {
            name: "viewed by title, ascending (unindexed)",
            filter: "{views: {gte: 1}}",
            order_by: "[{title: ASC}]",
            queries: Some(vec![
                json!({"method": "greaterThanEqual", "attribute": "views", "values": [1]}),
                json!({"method": "orderAsc", "attribute": "title"}),
            ]),
            matches: |p| p.views >= 1,
            key: |p| (0, p.title.clone()),
            desc: false,
        },
        Listing {
            name: "titles from c, by title descending (unindexed)",
            filter: "{title: {gte: \"c\"}, published: {eq: true}}",
            order_by: "[{title: DESC}]",
            queries: Some(vec![
                json!({"method": "greaterThanEqual", "attribute": "title", "values": ["c"]}),
                json!({"method": "equal", "attribute": "published", "values": [true]}),
                json!({"method": "orderDesc", "attribute": "title"}),
            ]),
            matches: |p| p.published && p.title.as_str() >= "c",
            key: |p| (0, p.title.clone()),
            desc: true,
        },
        Listing {
            name: "everything, by id",
            filter: "{}",
            order_by: "[]",
            queries: Some(vec![]),
            matches: |_| true,
            key: |_| (0, String::new()),
            desc: false,
        },
        Listing {
            name: "either condition, none of another, by views and title",
            filter: "{or: [{title: {startsWith: \"a\"}}, {views: {in: [4, 5]}}], not: {published: {eq: false}}}",
            order_by: "[{views: DESC}, {title: ASC}]",
            queries: None,
            matches: |p| p.published && (p.title.starts_with('a') || [4, 5].contains(&p.views)),
            key: |p| (-p.views, p.title.clone()),
            desc: false,
        },
        Listing {
            name: "some titles, few views, by title",
            filter: "{title: {in: [\"a\", \"c\", \"e\"]}, views: {lte: 4}}",
            order_by: "[{title: ASC}]",
            queries: Some(vec![
                json!({"method": "equal", "attribute": "title", "values": ["a", "c", "e"]}),
                json!({"method": "lessThanEqual", "attribute": "views", "values": [4]}),
                json!({"method": "orderAsc", "attribute": "title"}),
            ]),
            matches: |p| ["a", "c", "e"].contains(&p.title.as_str()) && p.views <= 4,
            key: |p| (0, p.title.clone()),
            desc: false,
        },
    ]
}

/// The ids of the posts `roles` may read that `listing` matches, in its order.
fn expected(posts: &[Post], roles: &[String], listing: &Listing) -> Vec<String> {
    let mut readable: Vec<&Post> = posts
        .iter()
        .filter(|p| (listing.matches)(p))
        .filter(|p| roles.iter().any(|role| p.permissions.contains(&read(role))))
        .collect();
    readable.sort_by(|a, b| {
        let (ka, kb) = ((listing.key)(a), (listing.key)(b));
        let by_key = if listing.desc {
            kb.cmp(&ka)
        } else {
            ka.cmp(&kb)
        };
        by_key.then_with(|| a.id.cmp(&b.id))
    });
    readable.iter().map(|p| p.id.clone()).collect()
}

/// The typed list of `listing`, `size` to a page, forwards through
/// `first`/`after` or from the end through `last`/`before`; checks
/// `totalCount` on every page and answers the ids in the list's order.
async fn by_cursor(
    app: &TestApp,
    secret: Option<&str>,
    listing: &Listing,
    backwards: bool,
    size: usize,
    total: usize,
) -> Vec<String> {
    crate::owner_lists::pages_of(
        app,
        secret,
        listing.filter,
        listing.order_by,
        backwards,
        size,
        total,
    )
    .await
}

/// The list of `listing` through Appwrite's queries, `size` to a page by
/// offset; checks `total` on every page.
async fn by_offset(
    app: &TestApp,
    secret: Option<&str>,
    listing: &Listing,
    size: usize,
    total: usize,
) -> Vec<String> {
    let query = "query($q: [String!]) { documents(databaseId: \"app\", collectionId: \"posts\", queries: $q) { total documents { id } } }";
    let listed = listing.queries.as_ref().expect("the listing has queries");
    let mut ids = Vec::new();
    for page in 0..200 {
        let mut queries: Vec<String> = listed.iter().map(Value::to_string).collect();
        queries.push(json!({"method": "limit", "values": [size]}).to_string());
        queries.push(json!({"method": "offset", "values": [page * size]}).to_string());
        let data = ask(app, secret, query, json!({"q": queries})).await;
        assert_eq!(data["documents"]["total"], total, "total on every page");
        let documents = data["documents"]["documents"].as_array().unwrap();
        assert!(documents.len() <= size);
        ids.extend(
            documents
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_string()),
        );
        if documents.len() < size {
            return ids;
        }
    }
    panic!("the list never ended");
}

/// Every listing of `posts` as `secret` (a guest without one), whose roles
/// that any post names are `roles`: by cursor both ways in pages of 1 and 3,
/// by offset in pages of 1, 2, 3 and more than the whole list.
async fn check_reader(
    app: &TestApp,
    who: &str,
    secret: Option<&str>,
    roles: &[String],
    posts: &[Post],
) {
    for listing in listings() {
        let want = expected(posts, roles, &listing);
        let name = listing.name;
        for size in [1, 3] {
            for backwards in [false, true] {
                let got = by_cursor(app, secret, &listing, backwards, size, want.len()).await;
                assert_eq!(
                    got, want,
                    "{who}: {name}, pages of {size}, backwards: {backwards}"
                );
            }
        }
        if listing.queries.is_none() {
            continue;
        }
        for size in [1, 2, 3, want.len() + 1] {
            let got = by_offset(app, secret, &listing, size, want.len()).await;
            assert_eq!(got, want, "{who}: {name}, by offset, pages of {size}");
        }
    }
}

/// Makes user `user` a member of `team` (created first).
async fn join(app: &TestApp, team: &str, user: &str) {
    app.admin(
        "mutation($id: ID!) { createTeam(input: {id: $id, name: $id}) { id } }",
        json!({"id": team}),
    )
    .await;
    app.admin(
        "mutation($t: ID!, $u: ID!) { createMembership(input: {teamId: $t, userId: $u, roles: [\"member\"]}) { id } }",
        json!({"t": team, "u": user}),
    )
    .await
    .ok();
}

#[tokio::test]
async fn readers_list_their_sole_and_shared_documents_in_one_order_across_every_page() {
    let app = spawn_app().await;
    world_collection(&app).await;
    let ann = app.signed_in("ann-sole-plans@example.com").await;
    let bob = app.signed_in("bob-sole-plans@example.com").await;
    let cat = app.signed_in("cat-sole-plans@example.com").await;
    let (ann_id, bob_id, cat_id) = (
        user_id(&app, &ann).await,
        user_id(&app, &bob).await,
        user_id(&app, &cat).await,
    );
    join(&app, "red", &ann_id).await;
    join(&app, "blue", &bob_id).await;
    // Cat belongs to four teams: with `any`, `users`, her user and their
    // verification roles she holds seventeen roles (three per team), more
    // than a list reads a range each of; her lists keep the grants' plans.
    for team in ["t1", "t2", "t3", "t4"] {
        join(&app, team, &cat_id).await;
    }
    let (ann_role, bob_role, cat_role) = (
        format!("user:{ann_id}"),
        format!("user:{bob_id}"),
        format!("user:{cat_id}"),
    );
    let kinds: Vec<(&str, Vec<String>)> = vec![
        // One reader each: a user, a team, every signed-in user, anyone.
        ("ann", vec![read(&ann_role)]),
        (
            "ann-w",
            vec![read(&ann_role), format!("update(\"{bob_role}\")")],
        ),
        ("red", vec![read("team:red")]),
        ("users", vec![read("users")]),
        ("any", vec![read("any")]),
        ("bob", vec![read(&bob_role)]),
        ("blue", vec![read("team:blue")]),
        ("cat", vec![read(&cat_role)]),
        ("t3", vec![read("team:t3")]),
        // Several readers: shared with another user, readable by Ann through
        // two of her roles, by anyone and by Cat.
        ("shared", vec![read(&ann_role), read(&bob_role)]),
        ("twice", vec![read(&ann_role), read("team:red")]),
        ("open", vec![read("any"), read(&cat_role)]),
        ("teams", vec![read("team:t1"), read("team:blue")]),
        // No reader.
        ("upd", vec![format!("update(\"{ann_role}\")")]),
        ("none", vec![]),
    ];
    let titles = ["a", "b", "c", "d", "e"];
    let mut posts = Vec::new();
    for (k, (kind, permissions)) in kinds.iter().enumerate() {
        for n in 0..5usize {
            posts.push(Post {
                id: format!("{kind}-{n}"),
                // Titles and views repeat across kinds, so that ties are broken
                // by ids of both kinds, and each kind sorts all over the list.
                title: titles[(n * 3 + k) % titles.len()].to_string(),
                published: (n + k) % 3 != 0,
                views: ((n * 7 + k * 3) % 6) as i64,
                permissions: permissions.clone(),
            });
        }
    }
    create(&app, &posts).await;
    assert_eq!(check_sole_readers(&app).await, posts.len());

    let readers: Vec<(&str, Option<&str>, Vec<String>)> = vec![
        (
            "ann",
            Some(ann.as_str()),
            vec![
                "any".into(),
                "users".into(),
                ann_role.clone(),
                "team:red".into(),
            ],
        ),
        (
            "bob",
            Some(bob.as_str()),
            vec![
                "any".into(),
                "users".into(),
                bob_role.clone(),
                "team:blue".into(),
            ],
        ),
        (
            "cat",
            Some(cat.as_str()),
            vec![
                "any".into(),
                "users".into(),
                cat_role.clone(),
                "team:t1".into(),
                "team:t2".into(),
                "team:t3".into(),
                "team:t4".into(),
            ],
        ),
        ("a guest", None, vec!["any".into(), "guests".into()]),
    ];
    // Each signed-in reader mixes documents of its own with shared ones.
    for (who, _, roles) in &readers[..3] {
        let all = expected(&posts, roles, &listings()[4]);
        assert!(all.iter().any(|id| id.starts_with("any-")), "{who}");
        assert!(
            all.iter().any(|id| ["shared-", "open-", "teams-"]
                .iter()
                .any(|k| id.starts_with(k))),
            "{who}"
        );
    }
    for (who, secret, roles) in &readers {
        check_reader(&app, who, *secret, roles, &posts).await;
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_collection_whose_sole_readers_are_not_filled_in_lists_through_its_grants() {
    let app = spawn_app().await;
    world_collection(&app).await;
    let ann = app.signed_in("ann-not-ready@example.com").await;
    let bob = app.signed_in("bob-not-ready@example.com").await;
    let (ann_id, bob_id) = (user_id(&app, &ann).await, user_id(&app, &bob).await);
    let (ann_role, bob_role) = (format!("user:{ann_id}"), format!("user:{bob_id}"));
    let mut posts = Vec::new();
    for (kind, permissions) in [
        ("ann", vec![read(&ann_role)]),
        ("bob", vec![read(&bob_role)]),
        ("shared", vec![read(&ann_role), read(&bob_role)]),
    ] {
        for n in 0..4 {
            posts.push(Post {
                id: format!("{kind}-{n}"),
                title: format!("{}", n % 3),
                published: true,
                views: n,
                permissions: permissions.clone(),
            });
        }
    }
    create(&app, &posts).await;
    let listing = &listings()[0];
    let ann_roles = vec![ann_role.clone()];
    let bob_roles = vec![bob_role.clone()];

    // Ann's posts stored as Bob's alone: a list that reads the column shows
    // them to Bob, and not to Ann.
    let table = posts_table(&app).await;
    let state = app.server.as_ref().unwrap().state();
    sqlx::query(&format!(
        "UPDATE {table} SET nimbus_reader = ? WHERE id LIKE 'ann-%'"
    ))
    .bind(&bob_role)
    .execute(state.db.pool())
    .await
    .unwrap();
    let data = ask(
        &app,
        Some(&bob),
        "{ posts(first: 100) { totalCount nodes { id } } }",
        json!({}),
    )
    .await;
    let bob_sees: Vec<&str> = data["posts"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap())
        .collect();
    assert_eq!(data["posts"]["totalCount"], 12);
    assert!(
        bob_sees.iter().any(|id| id.starts_with("ann-")),
        "a ready collection is listed through its sole readers: {bob_sees:?}"
    );

    // Not ready: the column is not read, the grants decide.
    sqlx::query("UPDATE db_collections SET readers_ready = 0")
        .execute(state.db.pool())
        .await
        .unwrap();
    state.schemas.invalidate("default").await;
    for (who, secret, roles) in [("ann", &ann, &ann_roles), ("bob", &bob, &bob_roles)] {
        let want = expected(&posts, roles, listing);
        assert_eq!(want.len(), 8);
        for backwards in [false, true] {
            let got = by_cursor(&app, Some(secret), listing, backwards, 3, want.len()).await;
            assert_eq!(got, want, "{who}, backwards: {backwards}");
        }
        let got = by_offset(&app, Some(secret), listing, 3, want.len()).await;
        assert_eq!(got, want, "{who}, by offset");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_filter_of_many_values_lists_what_the_same_filter_of_few_values_does() {
    let app = spawn_app().await;
    world_collection(&app).await;
    let ann = app.signed_in("ann-many-values@example.com").await;
    let bob = app.signed_in("bob-many-values@example.com").await;
    let (ann_id, bob_id) = (user_id(&app, &ann).await, user_id(&app, &bob).await);
    // Eight roles: a page read by sole reader would have nine branches.
    join(&app, "red", &ann_id).await;
    let (ann_role, bob_role) = (format!("user:{ann_id}"), format!("user:{bob_id}"));
    let mut posts = Vec::new();
    for (kind, permissions) in [
        ("ann", vec![read(&ann_role)]),
        ("red", vec![read("team:red")]),
        ("shared", vec![read(&ann_role), read(&bob_role)]),
        ("bob", vec![read(&bob_role)]),
    ] {
        for n in 0..6i64 {
            posts.push(Post {
                id: format!("{kind}-{n}"),
                title: ["a", "b", "c"][n as usize % 3].to_string(),
                published: true,
                views: n,
                permissions: permissions.clone(),
            });
        }
    }
    create(&app, &posts).await;
    let query = "query($f: PostFilter) { posts(filter: $f, orderBy: [{views: DESC}], first: 100) { totalCount nodes { id } } }";
    let list = |filter: Value| {
        let (app, ann) = (&app, &ann);
        async move {
            let data = ask(app, Some(ann), query, json!({"f": filter})).await;
            let ids: Vec<String> = data["posts"]["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n["id"].as_str().unwrap().to_string())
                .collect();
            (data["posts"]["totalCount"].clone(), ids)
        }
    };
    // A hundred conditions of a hundred values each: ten thousand values,
    // ninety thousand if every branch repeated them.
    let mut titles: Vec<String> = vec!["a".into(), "c".into()];
    titles.extend((0..98).map(|n| format!("x{n}")));
    let many = json!({"and": vec![json!({"title": {"in": titles}}); 100]});
    let few = json!({"title": {"in": ["a", "c"]}});
    let mut want: Vec<&Post> = posts
        .iter()
        .filter(|p| p.title != "b" && !p.id.starts_with("bob-"))
        .collect();
    want.sort_by(|a, b| b.views.cmp(&a.views).then_with(|| a.id.cmp(&b.id)));
    let want: Vec<String> = want.iter().map(|p| p.id.clone()).collect();
    assert_eq!(list(few).await, (json!(want.len()), want.clone()));
    assert_eq!(list(many).await, (json!(want.len()), want));
    app.shutdown().await;
}

/// Readers whose lists take one branch or none: a user who reads only its own
/// documents, one who reads only documents it shares, one who reads both, and
/// one who reads nothing (its only grant is an update). Each lists exactly
/// what it may read, by cursor both ways and by offset, with its total; the
/// reader of nothing an empty list with a total of 0.
#[tokio::test]
async fn readers_of_one_kind_of_document_or_none_list_exactly_what_they_read() {
    let app = spawn_app().await;
    world_collection(&app).await;
    let mut readers = Vec::new();
    for name in ["dan", "eve", "fay", "gus"] {
        let secret = app
            .signed_in(&format!("{name}-one-branch@example.com"))
            .await;
        let id = user_id(&app, &secret).await;
        readers.push((name, secret, format!("user:{id}")));
    }
    let role = |name: &str| {
        readers
            .iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, role)| role.clone())
            .unwrap()
    };
    let kinds: Vec<(&str, Vec<String>)> = vec![
        ("dan", vec![read(&role("dan"))]),
        ("eve-fay", vec![read(&role("eve")), read(&role("fay"))]),
        ("fay", vec![read(&role("fay"))]),
        ("gus", vec![format!("update(\"{}\")", role("gus"))]),
    ];
    let titles = ["a", "b", "c", "d", "e"];
    let mut posts = Vec::new();
    for (k, (kind, permissions)) in kinds.iter().enumerate() {
        for n in 0..6usize {
            posts.push(Post {
                id: format!("{kind}-{n}"),
                title: titles[(n * 2 + k) % titles.len()].to_string(),
                published: (n + k) % 3 != 0,
                views: ((n * 5 + k) % 4) as i64,
                permissions: permissions.clone(),
            });
        }
    }
    create(&app, &posts).await;
    assert_eq!(check_sole_readers(&app).await, posts.len());
    for (name, secret, role) in &readers {
        let roles = vec!["any".to_string(), "users".to_string(), role.clone()];
        let all = expected(&posts, &roles, &listings()[4]);
        match *name {
            "gus" => assert!(all.is_empty()),
            _ => assert_eq!(all.len(), if *name == "fay" { 12 } else { 6 }, "{name}"),
        }
        check_reader(&app, name, Some(secret.as_str()), &roles, &posts).await;
    }
    app.shutdown().await;
}

/// The ids and total of one page of the published posts by views, descending,
/// `size` after `after`, as `secret`; answers its end cursor too.
async fn page_after(
    app: &TestApp,
    secret: &str,
    after: &Value,
    size: usize,
) -> (Vec<String>, i64, Value) {
    let query = "query($after: String, $n: Int) { posts(filter: {published: {eq: true}}, orderBy: [{views: DESC}], first: $n, after: $after) { totalCount nodes { id } pageInfo { endCursor } } }";
    let data = ask(app, Some(secret), query, json!({"after": after, "n": size})).await;
    let page = &data["posts"];
    let ids = page["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    (
        ids,
        page["totalCount"].as_i64().unwrap(),
        page["pageInfo"]["endCursor"].clone(),
    )
}

/// Between two pages of a reader's list, a role of the reader becomes the
/// sole reader of its first document (a team's, a post of its own), or stops
/// being the sole reader of any (its last documents deleted, or shared): each
/// page holds what the reader may read when it is asked, after the cursor,
/// with the total of that moment. A plan that leaves out the roles no document
/// is sole-read by must ask again for every page.
#[tokio::test]
async fn a_role_whose_sole_documents_appear_or_disappear_between_pages_is_listed_as_it_is() {
    let app = spawn_app().await;
    world_collection(&app).await;
    let dan = app.signed_in("dan-between-pages@example.com").await;
    let eve = app.signed_in("eve-between-pages@example.com").await;
    let (dan_id, eve_id) = (user_id(&app, &dan).await, user_id(&app, &eve).await);
    join(&app, "green", &dan_id).await;
    let (dan_role, eve_role) = (format!("user:{dan_id}"), format!("user:{eve_id}"));
    let post = |id: &str, views: i64, permissions: Vec<String>| Post {
        id: id.to_string(),
        title: "t".to_string(),
        published: true,
        views,
        permissions,
    };
    // At first Dan reads three posts shared with Eve, and nothing alone.
    create(
        &app,
        &[
            post("s-90", 90, vec![read(&dan_role), read(&eve_role)]),
            post("s-50", 50, vec![read(&dan_role), read(&eve_role)]),
            post("s-10", 10, vec![read(&dan_role), read(&eve_role)]),
            post("eve-70", 70, vec![read(&eve_role)]),
        ],
    )
    .await;
    let (ids, total, cursor) = page_after(&app, &dan, &Value::Null, 1).await;
    assert_eq!((ids, total), (vec!["s-90".to_string()], 3));

    // His team becomes the sole reader of a post, his user of another: both
    // come after the cursor, in order.
    create(
        &app,
        &[
            post("green-60", 60, vec![read("team:green")]),
            post("dan-40", 40, vec![read(&dan_role)]),
            post("dan-95", 95, vec![read(&dan_role)]),
        ],
    )
    .await;
    let (ids, total, cursor) = page_after(&app, &dan, &cursor, 2).await;
    assert_eq!((ids, total), (vec!["green-60".into(), "s-50".into()], 6));

    // The team's only post is shared with Eve, and his own before the cursor
    // is deleted: no team branch is left, and his user still has dan-40.
    let update = "mutation($id: ID!, $p: [String!]!) { updatePost(input: {id: $id, permissions: $p}) { id } }";
    app.admin(
        update,
        json!({"id": "green-60", "p": [read("team:green"), read(&eve_role)]}),
    )
    .await
    .ok();
    app.admin(
        "mutation($id: ID!) { deletePost(input: {id: $id}) { deletedId } }",
        json!({"id": "dan-95"}),
    )
    .await
    .ok();
    let (ids, total, cursor) = page_after(&app, &dan, &cursor, 1).await;
    assert_eq!((ids, total), (vec!["dan-40".to_string()], 5));

    // His last own post is given to Eve alone, and every shared one becomes
    // his alone: the shared documents' branch finds none, his user's all.
    app.admin(update, json!({"id": "dan-40", "p": [read(&eve_role)]}))
        .await
        .ok();
    for id in ["s-90", "s-50", "s-10"] {
        app.admin(update, json!({"id": id, "p": [read(&dan_role)]}))
            .await
            .ok();
    }
    let (ids, total, cursor) = page_after(&app, &dan, &cursor, 5).await;
    assert_eq!((ids, total), (vec!["s-10".to_string()], 4));
    let (ids, total, _) = page_after(&app, &dan, &Value::Null, 5).await;
    assert_eq!(
        (ids, total),
        (
            vec![
                "s-90".into(),
                "green-60".into(),
                "s-50".into(),
                "s-10".into()
            ],
            4
        )
    );

    // Nothing left to read: an empty page and a total of 0, from the start
    // and after the cursor.
    for id in ["s-90", "s-50", "s-10"] {
        app.admin(
            "mutation($id: ID!) { deletePost(input: {id: $id}) { deletedId } }",
            json!({"id": id}),
        )
        .await
        .ok();
    }
    app.admin(update, json!({"id": "green-60", "p": [read(&eve_role)]}))
        .await
        .ok();
    assert_eq!(check_sole_readers(&app).await, 3);
    for after in [Value::Null, cursor] {
        let (ids, total, _) = page_after(&app, &dan, &after, 3).await;
        assert_eq!((ids, total), (Vec::<String>::new(), 0));
    }
    app.shutdown().await;
}
