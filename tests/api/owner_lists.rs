//! Lists of documents readable only through their own permissions (a user's
//! own, a team's, shared with a few): each reader gets exactly what it may read,
//! once, in the list's order, page after page (keyset and offset), with its
//! total; whichever side the list reads first (the reader's few grants, or the
//! collection in order when the reader's roles name many grants).

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

/// Page size: small, so that every list takes several pages.
const PAGE: usize = 3;

/// One document of the `posts` collection and who may read it.
struct Post {
    id: String,
    published: bool,
    views: i64,
    permissions: Vec<String>,
}

/// The readers and what each of them may read.
struct World {
    ann: String,
    bob: String,
    cat: String,
    posts: Vec<Post>,
}

pub(crate) async fn user_id(app: &TestApp, secret: &str) -> String {
    app.as_session(secret, "{ account { id } }", json!({}))
        .await
        .ok()["account"]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Creates `posts` as the admin, fifty to a request.
async fn create_posts(app: &TestApp, posts: &[Post]) {
    for chunk in posts.chunks(50) {
        let mut query = String::from("mutation {");
        for (i, post) in chunk.iter().enumerate() {
            query.push_str(&format!(
                " p{i}: createPost(input: {{id: {}, title: \"t\", published: {}, views: {}, permissions: {}}}) {{ id }}",
                json!(post.id),
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

/// The `posts` collection of [`world`], without its documents.
pub(crate) async fn world_collection(app: &TestApp) {
    app.admin(
        "mutation { createDatabase(input: {id: \"app\", name: \"App\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: CreateCollectionInput!) { createCollection(input: $input) { id } }",
        json!({"input": {
            "databaseId": "app", "id": "posts", "name": "posts",
            "documentSecurity": true,
            "permissions": ["create(\"users\")"],
            "attributes": [
                {"key": "title", "type": "STRING", "size": 100, "required": true},
                {"key": "published", "type": "BOOLEAN", "default": false},
                {"key": "views", "type": "INTEGER", "default": 0}
            ],
            "indexes": [{"key": "hot", "type": "KEY", "attributes": ["published", "views"]}]
        }}),
    )
    .await
    .ok();
}

/// A `posts` collection (`title`, `published`, `views`, an index on
/// `(published, views)`) that signed-in users may create in but nobody may read
/// as a whole; document security on. Ann is in teams `red` and `blue`, Bob in
/// `blue`, Cat in none. `update_only_for_ann` more posts give Ann `update` and
/// nothing else: her roles then name that many more grants, none readable.
async fn world(app: &TestApp, update_only_for_ann: usize) -> World {
    world_collection(app).await;
    let secrets = [
        app.signed_in("ann-lists@example.com").await,
        app.signed_in("bob-lists@example.com").await,
        app.signed_in("cat-lists@example.com").await,
    ];
    let [ann, bob] = [
        user_id(app, &secrets[0]).await,
        user_id(app, &secrets[1]).await,
    ];
    for team in ["red", "blue", "green"] {
        app.admin(
            "mutation($id: ID!) { createTeam(input: {id: $id, name: $id}) { id } }",
            json!({"id": team}),
        )
        .await
        .ok();
    }
    for (team, user) in [("red", &ann), ("blue", &ann), ("blue", &bob)] {
        app.admin(
            "mutation($t: ID!, $u: ID!) { createMembership(input: {teamId: $t, userId: $u, roles: [\"member\"]}) { id } }",
            json!({"t": team, "u": user}),
        )
        .await
        .ok();
    }

    let read = |role: &str| format!("read(\"{role}\")");
    let (ann_role, bob_role) = (format!("user:{ann}"), format!("user:{bob}"));
    let mut posts = Vec::new();
    let mut add = |id: String, n: i64, permissions: Vec<String>| {
        posts.push(Post {
            id,
            // Two in three published; views repeat, so that the id breaks ties.
            published: n % 3 != 0,
            views: (n * 7) % 5,
            permissions,
        })
    };
    for n in 0..8 {
        add(format!("ann-{n}"), n, vec![read(&ann_role)]);
    }
    for n in 0..6 {
        add(format!("bob-{n}"), n + 1, vec![read(&bob_role)]);
    }
    for n in 0..5 {
        add(format!("red-{n}"), n + 2, vec![read("team:red")]);
        add(format!("blue-{n}"), n, vec![read("team:blue")]);
        add(format!("green-{n}"), n, vec![read("team:green")]);
        add(format!("zed-{n}"), n + 1, vec![read("user:zed")]);
    }
    // Shared with two users; and readable by Ann through two of her roles.
    add("shared".into(), 4, vec![read(&ann_role), read(&bob_role)]);
    add(
        "twice".into(),
        5,
        vec![read(&ann_role), read("team:red"), read("team:red/member")],
    );
    for n in 0..update_only_for_ann {
        add(
            format!("upd-{n:04}"),
            n as i64,
            vec![format!("update(\"{ann_role}\")")],
        );
    }
    create_posts(app, &posts).await;
    let [ann, bob, cat] = secrets;
    World {
        ann,
        bob,
        cat,
        posts,
    }
}

/// The ids of the published posts `roles` may read, most viewed first, ties by id.
fn expected(world: &World, roles: &[String]) -> Vec<String> {
    let mut readable: Vec<&Post> = world
        .posts
        .iter()
        .filter(|p| p.published)
        .filter(|p| {
            roles
                .iter()
                .any(|role| p.permissions.contains(&format!("read(\"{role}\")")))
        })
        .collect();
    readable.sort_by(|a, b| b.views.cmp(&a.views).then_with(|| a.id.cmp(&b.id)));
    readable.iter().map(|p| p.id.clone()).collect()
}

/// Sends `query` as `secret`, or as a guest without one.
pub(crate) async fn ask(
    app: &TestApp,
    secret: Option<&str>,
    query: &str,
    variables: Value,
) -> Value {
    match secret {
        Some(secret) => app.as_session(secret, query, variables).await.ok(),
        None => app
            .post(json!({"query": query, "variables": variables}), &[])
            .await
            .ok(),
    }
}

/// The typed list of published posts by views, page after page through
/// keyset cursors; checks `totalCount` on every page.
async fn keyset_pages(app: &TestApp, secret: Option<&str>, total: usize) -> Vec<String> {
    let query = "query($after: String, $first: Int) { posts(filter: {published: {eq: true}}, orderBy: [{views: DESC}], first: $first, after: $after) { totalCount nodes { id } pageInfo { hasNextPage endCursor } } }";
    let mut ids = Vec::new();
    let mut after = Value::Null;
    for _ in 0..100 {
        let data = ask(app, secret, query, json!({"after": after, "first": PAGE})).await;
        let page = &data["posts"];
        assert_eq!(page["totalCount"], total, "totalCount on every page");
        let nodes = page["nodes"].as_array().unwrap();
        assert!(nodes.len() <= PAGE);
        ids.extend(nodes.iter().map(|n| n["id"].as_str().unwrap().to_string()));
        if page["pageInfo"]["hasNextPage"] != true {
            return ids;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
    panic!("the list never ended");
}

/// The same list through Appwrite's queries, page after page by offset; checks
/// `total` on every page.
async fn offset_pages(app: &TestApp, secret: Option<&str>, total: usize) -> Vec<String> {
    let query = "query($q: [String!]) { documents(databaseId: \"app\", collectionId: \"posts\", queries: $q) { total documents { id } } }";
    let mut ids = Vec::new();
    for page in 0..100 {
        let queries = [
            json!({"method": "equal", "attribute": "published", "values": [true]}).to_string(),
            json!({"method": "orderDesc", "attribute": "views"}).to_string(),
            json!({"method": "limit", "values": [PAGE]}).to_string(),
            json!({"method": "offset", "values": [page * PAGE]}).to_string(),
        ];
        let data = ask(app, secret, query, json!({"q": queries})).await;
        assert_eq!(data["documents"]["total"], total, "total on every page");
        let documents = data["documents"]["documents"].as_array().unwrap();
        ids.extend(
            documents
                .iter()
                .map(|d| d["id"].as_str().unwrap().to_string()),
        );
        if documents.len() < PAGE {
            return ids;
        }
    }
    panic!("the list never ended");
}

/// Every reader's list, both ways, against what it may read.
async fn check_every_reader(app: &TestApp, world: &World) {
    let ann_id = user_id(app, &world.ann).await;
    let bob_id = user_id(app, &world.bob).await;
    let ann_roles = [
        format!("user:{ann_id}"),
        "team:red".into(),
        "team:blue".into(),
    ];
    let bob_roles = [format!("user:{bob_id}"), "team:blue".into()];
    for (who, secret, roles) in [
        ("ann", Some(world.ann.as_str()), &ann_roles[..]),
        ("bob", Some(world.bob.as_str()), &bob_roles[..]),
        ("cat", Some(world.cat.as_str()), &[][..]),
        ("a guest", None, &[][..]),
    ] {
        let want = expected(world, roles);
        let by_keyset = keyset_pages(app, secret, want.len()).await;
        assert_eq!(by_keyset, want, "{who}'s list by keyset");
        let by_offset = offset_pages(app, secret, want.len()).await;
        assert_eq!(by_offset, want, "{who}'s list by offset");
    }
}

/// The expectations of [`world`] as made hold what the lists must show: posts
/// Ann reads through two roles, shared ones, her teams'.
async fn check_world_as_made(app: &TestApp, world: &World) {
    let ann_id = user_id(app, &world.ann).await;
    let bob_id = user_id(app, &world.bob).await;
    let ann_roles = [
        format!("user:{ann_id}"),
        "team:red".into(),
        "team:blue".into(),
    ];
    let bob_roles = [format!("user:{bob_id}"), "team:blue".into()];
    let ann = expected(world, &ann_roles);
    let bob = expected(world, &bob_roles);
    assert!(ann.len() > 2 * PAGE && bob.len() > PAGE);
    for id in ["shared", "twice", "red-0", "blue-1"] {
        assert_eq!(ann.iter().filter(|i| *i == id).count(), 1, "{id}");
    }
    assert!(bob.contains(&"shared".to_string()) && !bob.contains(&"red-0".to_string()));
    let distinct: BTreeSet<&String> = ann.iter().collect();
    assert_eq!(distinct.len(), ann.len());
}

#[tokio::test]
async fn each_reader_lists_exactly_its_own_and_its_teams_documents_across_pages() {
    let app = spawn_app().await;
    let world = world(&app, 0).await;
    check_world_as_made(&app, &world).await;
    check_every_reader(&app, &world).await;
    app.shutdown().await;
}

#[tokio::test]
async fn a_reader_whose_roles_name_many_grants_lists_the_same_documents() {
    let app = spawn_app().await;
    // More grants than a list reads from the side table first: Ann's lists walk
    // the collection in order, Bob's still start from his grants.
    let world = world(&app, 1000).await;
    check_world_as_made(&app, &world).await;
    check_every_reader(&app, &world).await;
    // Ann may update the other thousand but not read them.
    let everything = ask(
        &app,
        Some(&world.ann),
        "{ posts(first: 1) { totalCount } }",
        json!({}),
    )
    .await;
    let ann_id = user_id(&app, &world.ann).await;
    let readable = world
        .posts
        .iter()
        .filter(|p| {
            [
                format!("user:{ann_id}"),
                "team:red".into(),
                "team:blue".into(),
            ]
            .iter()
            .any(|role| p.permissions.contains(&format!("read(\"{role}\")")))
        })
        .count();
    assert_eq!(everything["posts"]["totalCount"], readable);
    app.shutdown().await;
}

#[tokio::test]
async fn lists_follow_permission_changes_and_deletes() {
    let app = spawn_app().await;
    let mut world = world(&app, 0).await;
    let ann_role = format!("user:{}", user_id(&app, &world.ann).await);
    let bob_role = format!("user:{}", user_id(&app, &world.bob).await);
    let read = |role: &str| format!("read(\"{role}\")");
    // Each kind of reader turned into each other: one owner to two readers,
    // two readers to one, one owner to another, a team to none (an update grant
    // only), nobody's to Ann's, one owner to a team.
    let changes = [
        ("ann-1", vec![read(&ann_role), read(&bob_role)]),
        ("shared", vec![read(&bob_role)]),
        ("bob-0", vec![read(&ann_role)]),
        ("red-0", vec![format!("update(\"{ann_role}\")")]),
        ("zed-0", vec![read(&ann_role)]),
        ("ann-4", vec![read("team:blue")]),
    ];
    for (id, permissions) in changes {
        let data = app
            .admin(
                "mutation($id: ID!, $p: [String!]!) { updatePost(input: {id: $id, permissions: $p}) { id permissions } }",
                json!({"id": id, "p": permissions}),
            )
            .await
            .ok();
        assert_eq!(
            data["updatePost"]["permissions"],
            json!(permissions),
            "{id}"
        );
        let post = world.posts.iter_mut().find(|p| p.id == id).unwrap();
        post.permissions = permissions;
    }
    // Deleted: one owner's, one with several readers, a team's.
    for id in ["ann-2", "twice", "blue-1"] {
        app.admin(
            "mutation($id: ID!) { deletePost(input: {id: $id}) { deletedId } }",
            json!({"id": id}),
        )
        .await
        .ok();
        world.posts.retain(|p| p.id != id);
    }
    // What the lists must now show: the changes in both directions.
    let ann_roles = [ann_role.clone(), "team:red".into(), "team:blue".into()];
    let ann = expected(&world, &ann_roles);
    let bob = expected(&world, &[bob_role.clone(), "team:blue".into()]);
    let published = |id: &str| world.posts.iter().any(|p| p.id == id && p.published);
    for id in ["ann-1", "bob-0", "zed-0", "ann-4"] {
        assert_eq!(ann.contains(&id.to_string()), published(id), "{id} for Ann");
    }
    for id in ["ann-1", "shared", "ann-4"] {
        assert_eq!(bob.contains(&id.to_string()), published(id), "{id} for Bob");
    }
    for id in ["ann-1", "bob-0", "zed-0", "ann-4", "shared"] {
        assert!(published(id), "{id} is published");
    }
    for id in ["shared", "red-0", "ann-2", "twice", "blue-1"] {
        assert!(!ann.contains(&id.to_string()), "{id} not for Ann");
    }
    assert!(!bob.contains(&"bob-0".to_string()) && !bob.contains(&"blue-1".to_string()));
    check_every_reader(&app, &world).await;
    app.shutdown().await;
}

#[tokio::test]
async fn each_reader_lists_exactly_its_own_and_its_teams_files_across_pages() {
    let app = spawn_app().await;
    app.admin(
        "mutation($input: CreateBucketInput!) { createBucket(input: $input) { id } }",
        json!({"input": {"id": "box", "name": "Box", "permissions": ["create(\"users\")"], "fileSecurity": true}}),
    )
    .await
    .ok();
    let ann = app.signed_in("ann-files@example.com").await;
    let bob = app.signed_in("bob-files@example.com").await;
    let cat = app.signed_in("cat-files@example.com").await;
    let ann_role = format!("user:{}", user_id(&app, &ann).await);
    let bob_role = format!("user:{}", user_id(&app, &bob).await);
    app.admin(
        "mutation { createTeam(input: {id: \"red\", name: \"red\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($u: ID!) { createMembership(input: {teamId: \"red\", userId: $u, roles: [\"member\"]}) { id } }",
        json!({"u": ann_role.trim_start_matches("user:")}),
    )
    .await
    .ok();
    let read = |role: &str| format!("read(\"{role}\")");
    let mut files: Vec<(String, Vec<String>)> = Vec::new();
    for n in 0..5 {
        files.push((format!("ann-{n}"), vec![read(&ann_role)]));
        files.push((format!("zed-{n}"), vec![read("user:zed")]));
    }
    for n in 0..3 {
        files.push((format!("bob-{n}"), vec![read(&bob_role)]));
        files.push((format!("red-{n}"), vec![read("team:red")]));
    }
    files.push(("shared".into(), vec![read(&ann_role), read(&bob_role)]));
    files.push((
        "twice".into(),
        vec![read(&ann_role), read("team:red"), read("team:red/member")],
    ));
    for (id, permissions) in &files {
        crate::storage::upload(
            &app,
            &[("x-nimbus-key", &app.admin_key)],
            json!({"bucketId": "box", "fileId": id, "file": null, "permissions": permissions}),
            "f.txt",
            "text/plain",
            b"x",
        )
        .await
        .ok();
    }
    let query = "query($after: String) { files(bucketId: \"box\", first: 2, after: $after) { totalCount nodes { id } pageInfo { hasNextPage endCursor } } }";
    for (who, secret, roles) in [
        (
            "ann",
            Some(ann.as_str()),
            vec![ann_role.clone(), "team:red".into()],
        ),
        ("bob", Some(bob.as_str()), vec![bob_role.clone()]),
        ("cat", Some(cat.as_str()), vec![]),
        ("a guest", None, vec![]),
    ] {
        let mut want: Vec<String> = files
            .iter()
            .filter(|(_, permissions)| roles.iter().any(|role| permissions.contains(&read(role))))
            .map(|(id, _)| id.clone())
            .collect();
        want.sort();
        let mut got = Vec::new();
        let mut after = Value::Null;
        loop {
            let data = ask(&app, secret, query, json!({"after": after})).await;
            let page = &data["files"];
            assert_eq!(page["totalCount"], want.len(), "{who}'s total");
            got.extend(
                page["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["id"].as_str().unwrap().to_string()),
            );
            if page["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(got, want, "{who}'s files");
    }
    app.shutdown().await;
}

#[tokio::test]
async fn a_member_lists_exactly_its_own_teams_across_pages() {
    let app = spawn_app().await;
    let ann = app.signed_in("ann-teams@example.com").await;
    let bob = app.signed_in("bob-teams@example.com").await;
    let ann_id = user_id(&app, &ann).await;
    let bob_id = user_id(&app, &bob).await;
    for n in 0..7 {
        app.admin(
            "mutation($id: ID!) { createTeam(input: {id: $id, name: $id}) { id } }",
            json!({"id": format!("team-{n}")}),
        )
        .await
        .ok();
    }
    for (team, user) in [(5, &ann_id), (1, &ann_id), (3, &ann_id), (3, &bob_id)] {
        app.admin(
            "mutation($t: ID!, $u: ID!) { createMembership(input: {teamId: $t, userId: $u, roles: [\"member\"]}) { id } }",
            json!({"t": format!("team-{team}"), "u": user}),
        )
        .await
        .ok();
    }
    let query = "query($after: String) { teams(first: 2, after: $after) { totalCount nodes { id } pageInfo { hasNextPage endCursor } } }";
    for (secret, want) in [
        (&ann, vec!["team-1", "team-3", "team-5"]),
        (&bob, vec!["team-3"]),
    ] {
        let mut got = Vec::new();
        let mut after = Value::Null;
        loop {
            let data = app
                .as_session(secret, query, json!({"after": after}))
                .await
                .ok();
            assert_eq!(data["teams"]["totalCount"], want.len());
            got.extend(
                data["teams"]["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["id"].as_str().unwrap().to_string()),
            );
            if data["teams"]["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = data["teams"]["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(got, want);
    }
    app.shutdown().await;
}

/// Documents in the middle-range test: enough that a reader with a little over
/// a thousand grants still reads a page from them (the threshold grows with
/// the square root of the collection's size; ADR 0017).
const MIDDLE_DOCUMENTS: usize = 50_000;

#[tokio::test]
async fn a_reader_with_more_than_a_thousand_grants_in_a_large_collection_lists_exactly_its_documents()
 {
    let app = spawn_app().await;
    world_collection(&app).await;
    let ann = app.signed_in("ann-middle@example.com").await;
    let bob = app.signed_in("bob-middle@example.com").await;
    let (ann_id, bob_id) = (user_id(&app, &ann).await, user_id(&app, &bob).await);
    app.admin(
        "mutation { createTeam(input: {id: \"red\", name: \"red\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation($u: ID!) { createMembership(input: {teamId: \"red\", userId: $u, roles: [\"member\"]}) { id } }",
        json!({"u": ann_id}),
    )
    .await
    .ok();
    // Ann reads one post in 48 as herself (1,041), 30 more through team `red`,
    // ten of those also as herself; Bob one in 997, two of them Ann's as well.
    let read = |role: &str| format!("read(\"{role}\")");
    let mut posts = Vec::with_capacity(MIDDLE_DOCUMENTS);
    for n in 0..MIDDLE_DOCUMENTS {
        let mut permissions = Vec::new();
        if n % 48 == 5 {
            permissions.push(read(&format!("user:{ann_id}")));
        }
        if n % 1601 == 7 || n % 4800 == 5 {
            permissions.push(read("team:red"));
        }
        if n % 997 == 3 || n == 48 * 300 + 5 || n == 48 * 700 + 5 {
            permissions.push(read(&format!("user:{bob_id}")));
        }
        if permissions.is_empty() {
            permissions.push(read(&format!("user:zed{}", n % 40)));
        }
        posts.push(Post {
            id: format!("m{n:05}"),
            published: n % 3 != 0,
            // Views repeat, so that the id breaks ties within a page.
            views: ((n as i64) * 7919) % 2003,
            permissions,
        });
    }
    for chunk in posts.chunks(1000) {
        let input: Vec<Value> = chunk
            .iter()
            .map(|p| {
                json!({"id": p.id, "title": "t", "published": p.published, "views": p.views,
                       "permissions": p.permissions})
            })
            .collect();
        let data = app
            .admin(
                "mutation($input: [CreatePostInput!]!) { createPosts(input: $input) { id } }",
                json!({"input": input}),
            )
            .await
            .ok();
        assert_eq!(data["createPosts"].as_array().unwrap().len(), chunk.len());
    }
    let world = World {
        ann: ann.clone(),
        bob: bob.clone(),
        cat: String::new(),
        posts,
    };
    let ann_roles = [format!("user:{ann_id}"), "team:red".to_string()];
    let grants = world
        .posts
        .iter()
        .flat_map(|p| &p.permissions)
        .filter(|p| ann_roles.iter().any(|r| **p == read(r)))
        .count();
    // More grants than a page reads from unconditionally, fewer than the
    // threshold of a collection this size.
    assert!((1000..1200).contains(&grants), "{grants} grants");
    for (who, secret, roles) in [
        ("ann", &ann, &ann_roles[..]),
        ("bob", &bob, &[format!("user:{bob_id}")][..]),
    ] {
        let want = expected(&world, roles);
        let query = "query($after: String) { posts(filter: {published: {eq: true}}, orderBy: [{views: DESC}], first: 100, after: $after) { totalCount nodes { id } pageInfo { hasNextPage endCursor } } }";
        let mut got = Vec::new();
        let mut after = Value::Null;
        for _ in 0..100 {
            let data = app
                .as_session(secret, query, json!({"after": after}))
                .await
                .ok();
            let page = &data["posts"];
            assert_eq!(page["totalCount"], want.len(), "{who}'s total");
            got.extend(
                page["nodes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|n| n["id"].as_str().unwrap().to_string()),
            );
            if page["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(got, want, "{who}'s list");
    }
    // The expectations hold what the list must show: hundreds of Ann's
    // published posts, each once, the shared ones in both lists.
    let ann_list = expected(&world, &ann_roles);
    assert!(ann_list.len() > 600, "{}", ann_list.len());
    let distinct: BTreeSet<&String> = ann_list.iter().collect();
    assert_eq!(distinct.len(), ann_list.len());
    let bob_list = expected(&world, &[format!("user:{bob_id}")]);
    assert!(bob_list.iter().any(|id| ann_list.contains(id)));
    app.shutdown().await;
}

/// The sole reader of a document with `permissions` (as the API shows them):
/// the one role its `read` permissions name, none when they name none or
/// several.
fn sole_reader_of(permissions: &[Value]) -> Option<String> {
    let readers: BTreeSet<&str> = permissions
        .iter()
        .filter_map(|p| p.as_str()?.strip_prefix("read(\"")?.strip_suffix("\")"))
        .collect();
    match readers.len() {
        1 => readers.into_iter().next().map(str::to_string),
        _ => None,
    }
}

/// The physical table of the `posts` collection.
pub(crate) async fn posts_table(app: &TestApp) -> String {
    let pool = app.server.as_ref().unwrap().state().db.pool();
    sqlx::query_scalar("SELECT table_name FROM db_collections WHERE id = 'posts'")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Every post's stored sole reader and its grants' `sole` marks agree with its
/// permissions as the API shows them (the side table's truth); answers how many
/// posts there are.
pub(crate) async fn check_sole_readers(app: &TestApp) -> usize {
    let data = app
        .admin(
            "{ posts(first: 1000) { nodes { id permissions } } }",
            json!({}),
        )
        .await
        .ok();
    let nodes = data["posts"]["nodes"].as_array().unwrap().clone();
    let table = posts_table(app).await;
    let pool = app.server.as_ref().unwrap().state().db.pool();
    let stored: Vec<(String, Option<String>)> = sqlx::query_as(&format!(
        "SELECT id, nimbus_reader FROM {table} ORDER BY id"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    let marks: Vec<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT resource_id, role, sole FROM {table}_perms ORDER BY resource_id, role"
    ))
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(stored.len(), nodes.len(), "one row per document");
    for node in &nodes {
        let id = node["id"].as_str().unwrap();
        let want = sole_reader_of(node["permissions"].as_array().unwrap());
        let row = stored.iter().find(|(i, _)| i == id).expect("stored");
        assert_eq!(row.1, want, "the sole reader of {id}");
        for (_, role, sole) in marks.iter().filter(|(r, _, _)| r == id) {
            assert_eq!(
                *sole,
                i64::from(want.as_deref() == Some(role.as_str())),
                "the mark of {id}'s grant to {role}"
            );
        }
    }
    assert_eq!(
        marks.iter().filter(|(_, _, sole)| *sole == 1).count(),
        stored.iter().filter(|(_, reader)| reader.is_some()).count(),
        "one marked grant per document with a sole reader"
    );
    nodes.len()
}

#[tokio::test]
async fn sole_readers_stay_exact_through_every_write() {
    let app = spawn_app().await;
    world_collection(&app).await;
    let ann = app.signed_in("ann-sole@example.com").await;
    let ann_id = user_id(&app, &ann).await;
    let ann_role = format!("user:{ann_id}");
    let read = |role: &str| format!("read(\"{role}\")");
    let create = "mutation($id: ID!, $p: [String!]) { createPost(input: {id: $id, title: \"t\", permissions: $p}) { id } }";

    // One create to a request, many at once: MariaDB shares their inserts.
    let kinds: Vec<(String, Vec<String>)> = vec![
        (
            "owner".into(),
            vec![read(&ann_role), format!("write(\"{ann_role}\")")],
        ),
        ("owner-twice".into(), vec![read(&ann_role), read(&ann_role)]),
        ("two".into(), vec![read(&ann_role), read("user:bob")]),
        (
            "team".into(),
            vec![read("team:red"), "update(\"team:blue\")".into()],
        ),
        ("team-role".into(), vec![read("team:red/owner")]),
        (
            "team-and-role".into(),
            vec![read("team:red"), read("team:red/owner")],
        ),
        ("label".into(), vec![read("label:vip")]),
        (
            "any".into(),
            vec![read("any"), format!("update(\"{ann_role}\")")],
        ),
        ("users".into(), vec![read("users")]),
        ("verified".into(), vec![read("users/verified")]),
        ("nobody".into(), vec![format!("update(\"{ann_role}\")")]),
        ("none".into(), vec![]),
        ("odd".into(), vec![read("user:a.b-c_D9")]),
    ];
    let creates = kinds
        .iter()
        .map(|(id, permissions)| app.admin(create, json!({"id": id, "p": permissions})));
    for answer in futures_util::future::join_all(creates).await {
        answer.ok();
    }
    // Created by a signed-in user with no permissions given: the creator's own.
    app.as_session(
        &ann,
        "mutation { createPost(input: {id: \"mine\", title: \"t\"}) { id } }",
        json!({}),
    )
    .await
    .ok();
    // Several in one request; in bulk; an upsert's create.
    app.admin(
        "mutation($a: [String!], $b: [String!]) { a: createPost(input: {id: \"req-a\", title: \"t\", permissions: $a}) { id } b: createPost(input: {id: \"req-b\", title: \"t\", permissions: $b}) { id } }",
        json!({"a": [read("team:red")], "b": [read("any"), read("users")]}),
    )
    .await
    .ok();
    app.admin(
        "mutation($input: [CreatePostInput!]!) { createPosts(input: $input) { id } }",
        json!({"input": [
            {"id": "bulk-1", "title": "t", "permissions": [read(&ann_role)]},
            {"id": "bulk-2", "title": "t", "permissions": [read(&ann_role), read("team:red")]},
            {"id": "bulk-3", "title": "t", "permissions": []}
        ]}),
    )
    .await
    .ok();
    let upsert = "mutation($input: UpsertPostInput!) { upsertPost(input: $input) { id } }";
    app.admin(
        upsert,
        json!({"input": {"id": "up", "title": "t", "permissions": [read("label:vip")]}}),
    )
    .await
    .ok();
    assert_eq!(check_sole_readers(&app).await, kinds.len() + 7);

    // A permission that does not parse is refused whole, with its code.
    for bad in [
        "read(\"user:x'); DROP TABLE posts; --\")",
        "read(\"user:\")",
        "read(\"team:a/b/c\")",
    ] {
        let answer = app.admin(create, json!({"id": "bad", "p": [bad]})).await;
        assert_eq!(answer.code(), "INVALID_PERMISSION", "{bad}");
    }
    let answer = app
        .admin(
            "mutation($p: [String!]!) { updatePost(input: {id: \"owner\", permissions: $p}) { id } }",
            json!({"p": [read("users"), "read(\"user:a b\")"]}),
        )
        .await;
    assert_eq!(answer.code(), "INVALID_PERMISSION");

    // One reader to several, back to one, to none, to a team; each way round.
    let update = "mutation($id: ID!, $p: [String!]!) { updatePost(input: {id: $id, permissions: $p}) { id } }";
    for (id, permissions) in [
        ("owner", vec![read(&ann_role), read("user:bob")]),
        ("two", vec![read("user:bob")]),
        ("team", vec![]),
        ("nobody", vec![read("team:blue")]),
        ("any", vec![read("any"), read("users")]),
        (
            "owner",
            vec![read("user:bob"), format!("delete(\"{ann_role}\")")],
        ),
        ("owner-twice", vec![format!("write(\"{ann_role}\")")]),
    ] {
        app.admin(update, json!({"id": id, "p": permissions}))
            .await
            .ok();
        check_sole_readers(&app).await;
    }
    // A change of data alone leaves the reader as it was.
    app.admin(
        "mutation { updatePost(input: {id: \"two\", views: 3}) { id } }",
        json!({}),
    )
    .await
    .ok();
    // In bulk; an upsert's update; an increment.
    app.admin(
        "mutation($input: [UpdatePostInput!]!) { updatePosts(input: $input) { id } }",
        json!({"input": [
            {"id": "bulk-1", "permissions": [read(&ann_role), read("label:vip")]},
            {"id": "bulk-2", "permissions": [read("team:red")]},
            {"id": "bulk-3", "views": 5}
        ]}),
    )
    .await
    .ok();
    app.admin(
        upsert,
        json!({"input": {"id": "up", "permissions": [read("label:vip"), read("any")]}}),
    )
    .await
    .ok();
    app.admin(
        "mutation { incrementPost(input: {id: \"two\", field: \"views\", by: 1}) { views } }",
        json!({}),
    )
    .await
    .ok();
    let count = check_sole_readers(&app).await;

    // Deleted one by one and in bulk: their rows and grants go.
    app.admin(
        "mutation { deletePost(input: {id: \"label\"}) { deletedId } }",
        json!({}),
    )
    .await
    .ok();
    app.admin(
        "mutation { deletePosts(input: {filter: {views: {gte: 4}}}) { deletedIds } }",
        json!({}),
    )
    .await
    .ok();
    assert_eq!(check_sole_readers(&app).await, count - 3);
    app.shutdown().await;
}

/// Takes the sole readers away from the `posts` table, as the versions before
/// them made it: no twin indexes, no column, no `sole` marks, the older
/// side-table index, and the collection not marked.
async fn as_before_sole_readers(app: &TestApp) {
    let table = posts_table(app).await;
    let pool = app.server.as_ref().unwrap().state().db.pool();
    let statements = if app.config.effective_database_url().starts_with("mysql") {
        vec![
            format!("ALTER TABLE {table} DROP KEY s_reader, DROP KEY r_hot"),
            format!("ALTER TABLE {table} DROP COLUMN nimbus_reader"),
            format!(
                "ALTER TABLE {table}_perms DROP KEY s_role, DROP COLUMN sole, \
                 ADD KEY s_role (role, resource_id, actions)"
            ),
        ]
    } else {
        vec![
            format!("DROP INDEX s_{table}__reader"),
            format!("DROP INDEX r_{table}__hot"),
            format!("ALTER TABLE {table} DROP COLUMN nimbus_reader"),
            format!("DROP INDEX s_{table}__perms"),
            format!("ALTER TABLE {table}_perms DROP COLUMN sole"),
            format!("CREATE INDEX s_{table}__perms ON {table}_perms (role, resource_id, actions)"),
        ]
    };
    // On one connection: each sees the schema the one before left.
    let mut conn = pool.acquire().await.unwrap();
    for statement in statements {
        sqlx::query(&statement).execute(&mut *conn).await.unwrap();
    }
    sqlx::query("UPDATE db_collections SET readers_ready = 0, reader_twins = 0")
        .execute(&mut *conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_collection_made_before_sole_readers_is_filled_in_at_the_next_start() {
    // The database outlives the first server: a file of its own on SQLite.
    let keep = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = crate::helpers::test_config(dir.path()).await;
    if config.database_url.is_none() {
        config.database_url = Some(format!(
            "sqlite://{}?mode=rwc",
            keep.path().join("nimbus.db").display()
        ));
    }
    config.secret = Some("owner-lists-tests-share-this-secret-0123456789".into());
    let first = crate::helpers::spawn_with(config.clone(), dir).await;
    let world = world(&first, 0).await;
    let admin_key = first.admin_key.clone();
    as_before_sole_readers(&first).await;
    first.shutdown().await;

    let dir = tempfile::tempdir().unwrap();
    config.data_dir = dir.path().to_path_buf();
    let server = nimbus::Server::start(config.clone())
        .await
        .expect("the server starts on the older tables");
    let app = crate::helpers::from_server(server, admin_key, config, dir);
    let pool = app.server.as_ref().unwrap().state().db.pool();
    let ready: Vec<(i64, i64)> =
        sqlx::query_as("SELECT readers_ready, reader_twins FROM db_collections")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(ready, [(1, 1)]);
    assert_eq!(check_sole_readers(&app).await, world.posts.len());
    check_every_reader(&app, &world).await;
    // Written to after: kept exact.
    app.admin(
        "mutation($p: [String!]!) { updatePost(input: {id: \"shared\", permissions: $p}) { id } }",
        json!({"p": ["read(\"team:red\")"]}),
    )
    .await
    .ok();
    check_sole_readers(&app).await;
    app.shutdown().await;
}

#[tokio::test]
async fn wide_label_and_shared_readers_list_in_both_orders_and_directions() {
    let app = spawn_app().await;
    world_collection(&app).await;
    let ann = app.signed_in("ann-wide@example.com").await;
    let bob = app.signed_in("bob-wide@example.com").await;
    let (ann_id, bob_id) = (user_id(&app, &ann).await, user_id(&app, &bob).await);
    app.admin(
        "mutation($id: ID!) { updateUser(input: {id: $id, labels: [\"vip\"]}) { id } }",
        json!({"id": ann_id}),
    )
    .await
    .ok();
    let read = |role: &str| format!("read(\"{role}\")");
    let (ann_role, bob_role) = (format!("user:{ann_id}"), format!("user:{bob_id}"));
    let mut posts = Vec::new();
    let kinds: Vec<(&str, Vec<String>)> = vec![
        ("any", vec![read("any")]),
        ("users", vec![read("users")]),
        ("vip", vec![read("label:vip")]),
        ("ann", vec![read(&ann_role)]),
        ("bob", vec![read(&bob_role)]),
        ("both", vec![read(&ann_role), read(&bob_role)]),
        ("any-and-ann", vec![read("any"), read(&ann_role)]),
        ("nobody", vec![format!("update(\"{ann_role}\")")]),
        ("none", vec![]),
    ];
    for (kind, permissions) in &kinds {
        for n in 0..4 {
            posts.push(Post {
                id: format!("{kind}-{n}"),
                published: n != 3,
                views: (n * 3 + kind.len() as i64) % 4,
                permissions: permissions.clone(),
            });
        }
    }
    create_posts(&app, &posts).await;
    let world = World {
        ann: ann.clone(),
        bob: bob.clone(),
        cat: String::new(),
        posts,
    };
    check_sole_readers(&app).await;
    let ann_roles: Vec<String> = vec![
        "any".into(),
        "users".into(),
        ann_role.clone(),
        "label:vip".into(),
    ];
    let bob_roles: Vec<String> = vec!["any".into(), "users".into(), bob_role.clone()];
    let guest_roles: Vec<String> = vec!["any".into(), "guests".into()];
    for (who, secret, roles) in [
        ("ann", Some(ann.as_str()), &ann_roles),
        ("bob", Some(bob.as_str()), &bob_roles),
        ("a guest", None, &guest_roles),
    ] {
        let desc = expected(&world, roles);
        let mut asc = desc.clone();
        // Ascending views, ties still by id ascending.
        asc.sort_by_key(|id| {
            let post = world.posts.iter().find(|p| &p.id == id).unwrap();
            (post.views, post.id.clone())
        });
        assert!(desc.len() > PAGE, "{who} reads several pages");
        for (order, want) in [("DESC", &desc), ("ASC", &asc)] {
            for backwards in [false, true] {
                let got = pages_of(
                    &app,
                    secret,
                    "{published: {eq: true}}",
                    &format!("[{{views: {order}}}]"),
                    backwards,
                    PAGE,
                    want.len(),
                )
                .await;
                assert_eq!(&got, want, "{who}, {order}, backwards: {backwards}");
            }
        }
        assert_eq!(
            offset_pages(&app, secret, desc.len()).await,
            desc,
            "{who} by offset"
        );
    }
    // Ann's own post shared, then hers alone again, then nobody's: her lists follow.
    let update = "mutation($id: ID!, $p: [String!]!) { updatePost(input: {id: $id, permissions: $p}) { id } }";
    let mut world = world;
    for permissions in [
        vec![read(&ann_role), read(&bob_role), read("label:vip")],
        vec![read(&ann_role)],
        vec![],
    ] {
        app.admin(update, json!({"id": "ann-0", "p": permissions}))
            .await
            .ok();
        world
            .posts
            .iter_mut()
            .find(|p| p.id == "ann-0")
            .unwrap()
            .permissions = permissions;
        check_sole_readers(&app).await;
        for (secret, roles) in [(&ann, &ann_roles), (&bob, &bob_roles)] {
            let want = expected(&world, roles);
            assert_eq!(keyset_pages(&app, Some(secret), want.len()).await, want);
        }
    }
    app.shutdown().await;
}

/// A list of `posts` (`filter` and `order_by` as GraphQL literals), `size` to
/// a page, forwards through `first`/`after` or from the end through
/// `last`/`before`; checks `totalCount` on every page and answers the ids in
/// the list's order.
pub(crate) async fn pages_of(
    app: &TestApp,
    secret: Option<&str>,
    filter: &str,
    order_by: &str,
    backwards: bool,
    size: usize,
    total: usize,
) -> Vec<String> {
    let (count, cursor_arg, more, next) = if backwards {
        ("last", "before", "hasPreviousPage", "startCursor")
    } else {
        ("first", "after", "hasNextPage", "endCursor")
    };
    let query = format!(
        "query($cursor: String, $n: Int) {{ posts(filter: {filter}, orderBy: {order_by}, {count}: $n, {cursor_arg}: $cursor) {{ totalCount nodes {{ id }} pageInfo {{ {more} {next} }} }} }}"
    );
    let mut chunks: Vec<Vec<String>> = Vec::new();
    let mut cursor = Value::Null;
    for _ in 0..200 {
        let data = ask(app, secret, &query, json!({"cursor": cursor, "n": size})).await;
        let page = &data["posts"];
        assert_eq!(page["totalCount"], total, "totalCount on every page");
        let nodes = page["nodes"].as_array().unwrap();
        assert!(nodes.len() <= size);
        chunks.push(
            nodes
                .iter()
                .map(|n| n["id"].as_str().unwrap().to_string())
                .collect(),
        );
        if page["pageInfo"][more] != true {
            if backwards {
                chunks.reverse();
            }
            return chunks.concat();
        }
        cursor = page["pageInfo"][next].clone();
    }
    panic!("the list never ended");
}

/// A reader whose one own document sits among many it shares and many it
/// cannot read, listed by an attribute no index holds (`title`, with ties)
/// under a filter on another (`views`): every page, whichever side of the
/// own document it starts on, in both orders and both directions and by
/// offset, holds exactly what the reader may read, once, with the same total.
/// A plan that reads a reader's own documents apart from its shared ones
/// must meet them in one order across every page boundary.
#[tokio::test]
async fn one_own_document_among_shared_ones_pages_by_an_unindexed_attribute() {
    let app = spawn_app().await;
    world_collection(&app).await;
    let ann = app.signed_in("ann-among@example.com").await;
    let bob = app.signed_in("bob-among@example.com").await;
    let (ann_id, bob_id) = (user_id(&app, &ann).await, user_id(&app, &bob).await);
    let read = |role: &str| format!("read(\"{role}\")");
    let (ann_role, bob_role) = (format!("user:{ann_id}"), format!("user:{bob_id}"));
    // (id, title, views, permissions): titles repeat so that the id breaks
    // ties; Ann's own post sorts in the middle of her list either way.
    let mut posts: Vec<(String, String, i64, Vec<String>)> = Vec::new();
    posts.push(("own".into(), "g".into(), 3, vec![read(&ann_role)]));
    for n in 0..12i64 {
        let title = ((b'a' + (n * 5 % 13) as u8) as char).to_string();
        posts.push((
            format!("shared-{n:02}"),
            title.clone(),
            n % 5,
            vec![read(&ann_role), read(&bob_role)],
        ));
        posts.push((
            format!("bob-{n:02}"),
            title.clone(),
            n % 5,
            vec![read(&bob_role)],
        ));
        posts.push((
            format!("also-{n:02}"),
            title,
            n % 4,
            vec![read(&ann_role), read("any")],
        ));
    }
    let create = "mutation($id: ID!, $t: String!, $v: Int!, $p: [String!]) { createPost(input: {id: $id, title: $t, views: $v, permissions: $p}) { id } }";
    for (id, title, views, permissions) in &posts {
        app.admin(
            create,
            json!({"id": id, "t": title, "v": views, "p": permissions}),
        )
        .await
        .ok();
    }
    assert_eq!(check_sole_readers(&app).await, posts.len());

    // Ann reads her own post, the shared ones and the ones anyone reads; the
    // filter keeps views of at least 1.
    let mut want: Vec<&(String, String, i64, Vec<String>)> = posts
        .iter()
        .filter(|(_, _, views, permissions)| {
            *views >= 1
                && (permissions.contains(&read(&ann_role)) || permissions.contains(&read("any")))
        })
        .collect();
    want.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    let asc: Vec<String> = want.iter().map(|p| p.0.clone()).collect();
    // Descending by title; the id breaks ties ascending whatever the order.
    want.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let desc: Vec<String> = want.iter().map(|p| p.0.clone()).collect();
    let own = asc.iter().position(|id| id == "own").unwrap();
    assert!(
        own > PAGE && own + PAGE < asc.len(),
        "the own post is mid-list"
    );

    let filter = "{views: {gte: 1}}";
    for (order, want) in [("ASC", &asc), ("DESC", &desc)] {
        let order_by = format!("[{{title: {order}}}]");
        for backwards in [false, true] {
            let got = pages_of(
                &app,
                Some(&ann),
                filter,
                &order_by,
                backwards,
                PAGE,
                want.len(),
            )
            .await;
            assert_eq!(&got, want, "{order}, backwards: {backwards}");
        }
    }
    // By offset, every page size from one to past the whole list: each
    // boundary falls at another place around the own post.
    let query = "query($q: [String!]) { documents(databaseId: \"app\", collectionId: \"posts\", queries: $q) { total documents { id } } }";
    for size in [1, 2, PAGE, asc.len() + 1] {
        let mut ids = Vec::new();
        for page in 0..=asc.len() {
            let queries = [
                json!({"method": "greaterThanEqual", "attribute": "views", "values": [1]})
                    .to_string(),
                json!({"method": "orderAsc", "attribute": "title"}).to_string(),
                json!({"method": "limit", "values": [size]}).to_string(),
                json!({"method": "offset", "values": [page * size]}).to_string(),
            ];
            let data = ask(&app, Some(ann.as_str()), query, json!({"q": queries})).await;
            assert_eq!(
                data["documents"]["total"],
                asc.len(),
                "total, pages of {size}"
            );
            let documents = data["documents"]["documents"].as_array().unwrap();
            ids.extend(
                documents
                    .iter()
                    .map(|d| d["id"].as_str().unwrap().to_string()),
            );
            if documents.len() < size {
                break;
            }
        }
        assert_eq!(ids, asc, "by offset, pages of {size}");
    }
    app.shutdown().await;
}
