//! The engine's behaviour, driven through the public interface.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::*;

struct FakeHost;

impl Host for FakeHost {
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, String>> {
        Box::pin(async move {
            Ok(FetchResponse {
                status: 200,
                url: request.url,
                headers: vec![("content-type".into(), "application/json".into())],
                body: bytes::Bytes::from_static(b"{\"hello\":\"world\"}"),
            })
        })
    }

    fn graphql(
        &self,
        query: String,
        variables: serde_json::Value,
    ) -> BoxFuture<'static, serde_json::Value> {
        Box::pin(async move {
            serde_json::json!({ "data": { "query": query, "variables": variables } })
        })
    }
}

fn source(code: &str) -> Source {
    Source {
        modules: BTreeMap::from([("index.js".to_string(), code.to_string())]),
        entrypoint: "index.js".into(),
    }
}

fn invocation(program: Program) -> Invocation {
    Invocation {
        program,
        env: BTreeMap::new(),
        request: Request {
            method: "GET".into(),
            scheme: "http".into(),
            host: "localhost".into(),
            port: 80,
            path: "/".into(),
            ..Request::default()
        },
        limits: Limits::default(),
        host: Arc::new(FakeHost),
    }
}

async fn run(pool: &Pool, code: &str) -> Outcome {
    let program = compile(&source(code)).expect("compiles");
    pool.run(invocation(program)).await.expect("not busy")
}

#[tokio::test]
async fn runs_a_hello_world_that_answers_json() {
    let pool = Pool::new(1, 4);
    let outcome = run(
        &pool,
        "export default async ({ req, res }) => res.json({ ok: true })",
    )
    .await;
    let response = outcome.result.expect("succeeds");
    assert_eq!(response.status, 200);
    assert_eq!(&response.body[..], b"{\"ok\":true}");
    assert!(
        response
            .headers
            .contains(&("content-type".to_string(), "application/json".to_string()))
    );
}
