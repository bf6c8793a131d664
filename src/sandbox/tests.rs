//! The engine's behaviour, driven through the public interface.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;

use super::*;
use crate::sandbox::engine;

/// A host whose fetch answers after `delay` (a tokio timer: it only works on
/// the runtime), or never when `delay` is `None`.
struct FakeHost {
    delay: Option<Duration>,
}

const FAKE: FakeHost = FakeHost {
    delay: Some(Duration::ZERO),
};

impl Host for FakeHost {
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, String>> {
        let delay = self.delay;
        Box::pin(async move {
            match delay {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending::<()>().await,
            }
            if request.url.contains("refused") {
                return Err("the address is not allowed".to_string());
            }
            Ok(FetchResponse {
                status: 200,
                url: request.url,
                headers: vec![("content-type".into(), "application/json".into())],
                body: bytes::Bytes::from_static(b"{\"hello\":\"world\"}"),
            })
        })
    }

    fn graphql(&self, query: String, variables: String) -> BoxFuture<'static, String> {
        Box::pin(async move {
            let variables: serde_json::Value = serde_json::from_str(&variables).unwrap();
            serde_json::json!({ "data": { "query": query, "variables": variables } }).to_string()
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
        env: Arc::default(),
        request: Request {
            method: "GET".into(),
            scheme: "http".into(),
            host: "localhost".into(),
            port: 80,
            path: "/".into(),
            ..Request::default()
        },
        limits: Limits::default(),
        host: Arc::new(FAKE),
        warm: None,
        tenant: Arc::from("project"),
    }
}

async fn run(pool: &Pool, code: &str) -> Outcome {
    run_with(pool, code, |_| {}).await
}

async fn run_with(pool: &Pool, code: &str, change: impl FnOnce(&mut Invocation)) -> Outcome {
    let program = compile(&source(code)).expect("compiles");
    let mut invocation = invocation(program);
    change(&mut invocation);
    pool.run(invocation).await.expect("not busy")
}

fn body(outcome: &Outcome) -> String {
    match &outcome.result {
        Ok(response) => String::from_utf8_lossy(&response.body).into_owned(),
        Err(failure) => panic!(
            "failed: {failure:?}; logs {} errors {}",
            outcome.logs, outcome.errors
        ),
    }
}

const HELLO: &str = "export default async ({ res }) => res.json({ ok: true })";

/// The worker is healthy after a failure: the next execution succeeds.
async fn next_one_succeeds(pool: &Pool) {
    let outcome = run(pool, HELLO).await;
    assert_eq!(body(&outcome), "{\"ok\":true}");
}

fn compile_error(modules: &[(&str, &str)], entry: &str) -> CompileError {
    compile(&Source {
        modules: modules
            .iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect(),
        entrypoint: entry.into(),
    })
    .expect_err("refused")
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

#[test]
fn a_syntax_error_names_its_module_and_line() {
    let error = compile_error(
        &[(
            "index.js",
            "export default async ({ res }) => {\n  const a = 1;\n  return res.json(a +);\n};\n",
        )],
        "index.js",
    );
    assert_eq!(error.module.as_deref(), Some("index.js"));
    assert_eq!(error.line, Some(3), "{error:?}");
    let error = compile_error(
        &[
            (
                "index.js",
                "import { f } from './lib/util.js';\nexport default f;\n",
            ),
            ("lib/util.js", "export function f() {\n\n  return (;\n}\n"),
        ],
        "index.js",
    );
    assert_eq!(error.module.as_deref(), Some("lib/util.js"));
    assert_eq!(error.line, Some(3), "{error:?}");
}

#[tokio::test]
async fn imports_among_the_deployments_modules_resolve_by_relative_path() {
    let program = compile(&Source {
        modules: BTreeMap::from([
            ("src/index.js".to_string(), "import { greet } from './lib/greet.js';\nexport default ({ res }) => res.text(greet('nimbus'));".to_string()),
            ("src/lib/greet.js".to_string(), "import { PREFIX } from '../consts.js';\nexport const greet = (n) => PREFIX + n;".to_string()),
            ("src/consts.js".to_string(), "export const PREFIX = 'hello ';".to_string()),
        ]),
        entrypoint: "src/index.js".into(),
    })
    .expect("compiles");
    let pool = Pool::new(1, 1);
    let outcome = pool.run(invocation(program)).await.unwrap();
    assert_eq!(body(&outcome), "hello nimbus");
}

#[test]
fn imports_of_anything_else_are_refused_at_compile_time() {
    for (specifier, expect) in [
        ("std", "only the deployment's own modules"),
        ("os", "only the deployment's own modules"),
        ("node:fs", "only the deployment's own modules"),
        ("/etc/passwd", "only the deployment's own modules"),
        ("./missing.js", "no module 'missing.js'"),
        ("../outside.js", "outside the deployment"),
    ] {
        let error = compile_error(
            &[(
                "index.js",
                &format!(
                    "import * as m from '{specifier}';\nexport default ({{ res }}) => res.empty();"
                ),
            )],
            "index.js",
        );
        assert!(error.message.contains(expect), "{specifier}: {error:?}");
    }
}

#[tokio::test]
async fn dynamic_imports_reach_the_deployments_modules_only() {
    let program = compile(&Source {
        modules: BTreeMap::from([
            (
                "index.js".to_string(),
                "export default async ({ res }) => {
                    const refused = [];
                    for (const name of ['std', 'os', '<nimbus>', './missing.js']) {
                        try { await import(name); refused.push('loaded ' + name); } catch (e) { refused.push(e.name); }
                    }
                    const lib = await import('./lib.js');
                    return res.json({ refused, value: lib.value });
                }"
                .to_string(),
            ),
            ("lib.js".to_string(), "export const value = 7;".to_string()),
        ]),
        entrypoint: "index.js".into(),
    })
    .expect("compiles");
    let pool = Pool::new(1, 1);
    let outcome = pool.run(invocation(program)).await.unwrap();
    assert_eq!(
        body(&outcome),
        "{\"refused\":[\"ReferenceError\",\"ReferenceError\",\"ReferenceError\",\"ReferenceError\"],\"value\":7}"
    );
}

#[test]
fn a_missing_entrypoint_or_default_export_is_a_compile_error() {
    let error = compile_error(&[("index.js", HELLO)], "main.js");
    assert!(
        error.message.contains("'main.js' is not one of"),
        "{error:?}"
    );
    let error = compile_error(
        &[("index.js", "export const handler = () => 1;")],
        "index.js",
    );
    assert!(
        error
            .message
            .contains("no default export that is a function"),
        "{error:?}"
    );
    assert_eq!(error.module.as_deref(), Some("index.js"));
    let error = compile_error(&[("index.js", "export default 42;")], "index.js");
    assert!(
        error
            .message
            .contains("no default export that is a function"),
        "{error:?}"
    );
    let error = compile_error(
        &[(
            "index.js",
            "throw new Error('boom at load');\nexport default () => 1;",
        )],
        "index.js",
    );
    assert!(error.message.contains("boom at load"), "{error:?}");
    assert_eq!(error.line, Some(1), "{error:?}");
}

#[tokio::test]
async fn a_program_of_another_format_is_refused_cleanly() {
    let pool = Pool::new(1, 1);
    let good = compile(&source(HELLO)).unwrap();
    for bytes in [Vec::new(), b"\x00not a program".to_vec(), {
        let mut b = good.to_bytes().to_vec();
        b[0] = 0;
        b
    }] {
        let outcome = pool
            .run(invocation(Program::from_bytes(bytes)))
            .await
            .unwrap();
        match outcome.result {
            Err(Failure::InvalidResponse(message)) => {
                assert!(message.contains("deploy it again"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
    let reloaded = Program::from_bytes(good.to_bytes().to_vec());
    let outcome = pool.run(invocation(reloaded)).await.unwrap();
    assert_eq!(body(&outcome), "{\"ok\":true}");
}

#[tokio::test]
async fn every_execution_gets_a_fresh_context() {
    let pool = Pool::new(1, 4);
    let code = "export default ({ res }) => { const seen = globalThis.leak ?? null; const extra = [].extra ?? null; globalThis.leak = 'set'; Array.prototype.extra = 1; return res.json({ seen, extra }); }";
    for _ in 0..3 {
        assert_eq!(
            body(&run(&pool, code).await),
            "{\"seen\":null,\"extra\":null}"
        );
    }
}

#[tokio::test]
async fn a_full_queue_answers_busy_at_once() {
    let pool = Pool::new(1, 1);
    let slow = compile(&source("export default async ({ res }) => { await fetch('https://slow.example'); return res.empty(); }")).unwrap();
    let slow_invocation = || {
        let mut i = invocation(slow.clone());
        i.host = Arc::new(FakeHost {
            delay: Some(Duration::from_millis(500)),
        });
        i
    };
    let first = pool.run(slow_invocation());
    let second = pool.run(slow_invocation());
    let third = async {
        // Let the first two take the worker and the one place in the queue.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let busy = pool.run(slow_invocation()).await.expect_err("busy");
        assert!(started.elapsed() < Duration::from_millis(50));
        assert!(busy.retry_after >= Duration::from_secs(1));
        assert!(busy.retry_after <= Duration::from_secs(60));
    };
    let (a, b, ()) = tokio::join!(first, second, third);
    assert!(a.unwrap().result.is_ok());
    assert!(b.unwrap().result.is_ok());
}

#[tokio::test]
async fn background_work_waits_for_a_place_where_a_request_is_refused() {
    let pool = Pool::new(1, 0);
    let slow = compile(&source("export default async ({ res }) => { await fetch('https://slow.example'); return res.empty(); }")).unwrap();
    let mut first = invocation(slow);
    first.host = Arc::new(FakeHost {
        delay: Some(Duration::from_millis(300)),
    });
    let hello = compile(&source(HELLO)).unwrap();
    let first = pool.run(first);
    let later = async {
        // Let the first take the one worker.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(pool.run(invocation(hello.clone())).await.is_err());
        let started = std::time::Instant::now();
        let outcome = pool.run_when_free(invocation(hello.clone())).await;
        (outcome, started.elapsed())
    };
    let (first, (outcome, waited)) = tokio::join!(first, later);
    assert!(first.unwrap().result.is_ok());
    assert_eq!(body(&outcome), "{\"ok\":true}");
    // It ran once the first was done, not at once.
    assert!(waited >= Duration::from_millis(100), "{waited:?}");
}

#[tokio::test]
async fn a_caller_that_goes_away_does_not_wedge_the_worker() {
    let pool = Pool::new(1, 4);
    let spin = compile(&source("export default () => { while (true) {} }")).unwrap();
    let mut long = invocation(spin);
    long.limits.cpu = Duration::from_secs(600);
    long.limits.wall = Duration::from_secs(600);
    let abandoned = tokio::time::timeout(Duration::from_millis(200), pool.run(long)).await;
    assert!(abandoned.is_err(), "still running when dropped");
    let outcome = tokio::time::timeout(Duration::from_secs(5), run(&pool, HELLO))
        .await
        .expect("the worker is free again");
    assert_eq!(body(&outcome), "{\"ok\":true}");
}

#[tokio::test]
async fn an_endless_loop_hits_the_cpu_limit() {
    let pool = Pool::new(1, 1);
    let outcome = run_with(&pool, "export default () => { while (true) {} }", |i| {
        i.limits.cpu = Duration::from_millis(200);
    })
    .await;
    assert_eq!(outcome.result.unwrap_err(), Failure::CpuLimit);
    assert!(
        outcome.duration < Duration::from_secs(2),
        "{:?}",
        outcome.duration
    );
    next_one_succeeds(&pool).await;
}

#[tokio::test]
async fn a_memory_bomb_hits_the_memory_limit() {
    let pool = Pool::new(1, 1);
    let outcome = run_with(
        &pool,
        "export default () => { const a = []; while (true) a.push('x'.repeat(1024) + a.length); }",
        |i| {
            i.limits.memory = 16 << 20;
        },
    )
    .await;
    assert_eq!(outcome.result.unwrap_err(), Failure::MemoryLimit);
    next_one_succeeds(&pool).await;
    next_one_succeeds(&pool).await;
}

/// Bytes the host makes for the guest (here `TextEncoder`'s) are the engine's
/// own, so they count against the limit: 16 MiB encoded again and again under
/// 40 MiB stops at the second copy, not after gigabytes outside the meter.
#[test]
fn encoded_text_counts_against_the_memory_limit() {
    let limit = 40 << 20;
    // Bounded, so that bytes outside the meter would end in a response here
    // rather than in the test process running out of memory.
    let program = compile(&source(
        "export default ({ res }) => { const s = 'x'.repeat(16 << 20), k = []; \
         for (let i = 0; i < 16; i++) k.push(new TextEncoder().encode(s)); \
         return res.json(k.length); }",
    ))
    .unwrap();
    let mut invocation = invocation(program);
    invocation.limits.memory = limit;
    let (outcome, peak) = engine::run_metered(invocation);
    assert_eq!(outcome.result.unwrap_err(), Failure::MemoryLimit);
    // The text and its first copy were counted, and nothing went past the limit.
    assert!(peak >= 32 << 20, "peak {peak}");
    assert!(peak <= limit, "peak {peak}");
}

/// A host whose fetch answers `size` bytes.
struct BigAnswers(usize);

impl Host for BigAnswers {
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, String>> {
        let body = bytes::Bytes::from(vec![b'x'; self.0]);
        Box::pin(async move {
            Ok(FetchResponse {
                status: 200,
                url: request.url,
                headers: Vec::new(),
                body,
            })
        })
    }

    fn graphql(&self, _query: String, _variables: String) -> BoxFuture<'static, String> {
        Box::pin(async { "null".to_string() })
    }
}

#[tokio::test]
async fn fetched_bodies_and_the_request_body_count_against_the_memory_limit() {
    let pool = Pool::new(1, 1);
    let outcome = run_with(
        &pool,
        "export default async ({ res }) => { const k = []; \
         for (let i = 0; i < 16; i++) k.push(await fetch('https://api.example/big')); \
         return res.json(k.length); }",
        |i| {
            i.host = Arc::new(BigAnswers(4 << 20));
            i.limits.memory = 16 << 20;
        },
    )
    .await;
    assert_eq!(outcome.result.unwrap_err(), Failure::MemoryLimit);
    let outcome = run_with(&pool, HELLO, |i| {
        i.request.body = bytes::Bytes::from(vec![b'x'; 24 << 20]);
        i.limits.memory = 16 << 20;
    })
    .await;
    assert_eq!(outcome.result.unwrap_err(), Failure::MemoryLimit);
    next_one_succeeds(&pool).await;
}

/// A host that never answers.
struct Silent;

impl Host for Silent {
    fn fetch(&self, _request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, String>> {
        Box::pin(std::future::pending())
    }

    fn graphql(&self, _query: String, _variables: String) -> BoxFuture<'static, String> {
        Box::pin(std::future::pending())
    }
}

/// The host's copies of the requests of calls in flight count against the
/// memory limit: 64 calls of a 1 MiB body or query do not fit in 16 MiB.
#[tokio::test]
async fn requests_of_host_calls_in_flight_count_against_the_memory_limit() {
    let pool = Pool::new(1, 1);
    let code = "export default async ({ req, res }) => { \
        const big = 'x'.repeat(1 << 20), calls = []; \
        for (let i = 0; i < 64; i++) calls.push(req.path === '/fetch' \
          ? fetch('https://api.example/', { method: 'POST', body: big }) : nimbus.graphql(big)); \
        await Promise.all(calls); return res.empty(); }";
    for path in ["/fetch", "/graphql"] {
        let outcome = run_with(&pool, code, |i| {
            i.request.path = path.into();
            i.host = Arc::new(Silent);
            i.limits.memory = 16 << 20;
            i.limits.wall = Duration::from_secs(2);
        })
        .await;
        assert_eq!(outcome.result.unwrap_err(), Failure::MemoryLimit, "{path}");
    }
    next_one_succeeds(&pool).await;
}

/// A host that counts its answers on the execution's [`crate::sandbox::Held`]
/// as it reads them, as the functions service's `fetch` does.
struct HeldAnswers(usize);

impl Host for HeldAnswers {
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, String>> {
        let size = self.0;
        Box::pin(async move {
            if !request.held.take(size) {
                return Err("the answer does not fit under the memory limit".into());
            }
            Ok(FetchResponse {
                status: 200,
                url: request.url,
                headers: Vec::new(),
                body: bytes::Bytes::from(vec![b'x'; size]),
            })
        })
    }

    fn graphql(&self, _query: String, _variables: String) -> BoxFuture<'static, String> {
        Box::pin(async { "null".to_string() })
    }
}

/// Answers the host has read but the guest has not taken yet count against the
/// memory limit: 64 fetches of 1 MiB that all arrive while the guest computes do
/// not fit in 16 MiB (the answers past it are refused, or the guest runs out of
/// memory beside them); taken one at a time, they do.
#[tokio::test]
async fn answers_waiting_for_the_guest_count_against_the_memory_limit() {
    let pool = Pool::new(1, 1);
    let code = "export default async ({ req, res }) => { \
        if (req.path === '/one-by-one') { \
          for (let i = 0; i < 64; i++) await fetch('https://api.example/'); return res.json(0); } \
        const calls = []; \
        for (let i = 0; i < 64; i++) calls.push(fetch('https://api.example/').then(() => 0, () => 1)); \
        const until = Date.now() + 300; while (Date.now() < until) {} \
        const refused = (await Promise.all(calls)).reduce((a, b) => a + b, 0); \
        return res.json(refused); }";
    let run = |path: &'static str| {
        run_with(&pool, code, move |i| {
            i.request.path = path.into();
            i.host = Arc::new(HeldAnswers(1 << 20));
            i.limits.memory = 16 << 20;
            i.limits.wall = Duration::from_secs(5);
            i.limits.cpu = Duration::from_secs(5);
        })
    };
    let at_once = run("/at-once").await;
    match &at_once.result {
        Err(failure) => assert_eq!(*failure, Failure::MemoryLimit),
        Ok(_) => {
            let refused: u32 = body(&at_once).parse().unwrap();
            assert!(refused >= 48, "{refused} refused");
        }
    }
    assert_eq!(body(&run("/one-by-one").await), "0");
    next_one_succeeds(&pool).await;
}

/// What a host call holds is given back when it ends, or when the execution
/// does with the call still in flight.
#[tokio::test]
async fn host_calls_give_back_what_they_held() {
    let pool = Pool::new(1, 1);
    let sequential = "export default async ({ res }) => { const big = 'x'.repeat(1 << 20); \
        for (let i = 0; i < 32; i++) { await fetch('https://api.example/', { method: 'POST', body: big }); \
          await nimbus.graphql(big); } \
        return res.json('done'); }";
    let outcome = run_with(&pool, sequential, |i| {
        i.host = Arc::new(BigAnswers(16));
        i.limits.memory = 16 << 20;
    })
    .await;
    assert_eq!(body(&outcome), "\"done\"");
    // Left in flight: stopped with the execution, on an engine that is kept.
    let left = "export default ({ res }) => { const big = 'x'.repeat(1 << 20); \
        for (let i = 0; i < 8; i++) fetch('https://api.example/', { method: 'POST', body: big }); \
        return res.json('left'); }";
    for _ in 0..8 {
        let outcome = run_with(&pool, left, |i| {
            i.host = Arc::new(Silent);
            i.limits.memory = 16 << 20;
        })
        .await;
        assert_eq!(body(&outcome), "\"left\"");
    }
}

#[tokio::test]
async fn text_encoder_writes_utf_8_and_a_lone_surrogate_as_a_replacement() {
    let pool = Pool::new(1, 1);
    let outcome = run(
        &pool,
        "export default ({ res }) => { const e = new TextEncoder(), d = new TextDecoder(); \
         const bytes = (s) => [...e.encode(s)]; \
         return res.json([bytes('a\\ud800b'), bytes('\\udc00'), bytes('\\ud83d\\ude00'), bytes('\u{e9}'), \
           bytes(''), d.decode(e.encode('h\u{e9}llo \\ud83d\\ude00')), d.decode(new Uint8Array([0x61, 0xff]))]); }",
    )
    .await;
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&body(&outcome)).unwrap(),
        serde_json::json!([
            [97, 239, 191, 189, 98],
            [239, 191, 189],
            [240, 159, 152, 128],
            [195, 169],
            [],
            "h\u{e9}llo \u{1F600}",
            "a\u{FFFD}",
        ])
    );
}

#[tokio::test]
async fn deep_recursion_overflows_the_stack() {
    let pool = Pool::new(1, 1);
    let outcome = run(
        &pool,
        "const f = (n) => f(n + 1) + 1;\nexport default () => f(0);",
    )
    .await;
    assert_eq!(outcome.result.unwrap_err(), Failure::StackOverflow);
    next_one_succeeds(&pool).await;
}

#[tokio::test]
async fn a_throw_or_a_rejection_is_thrown_with_message_and_stack() {
    let pool = Pool::new(1, 1);
    let outcome = run(
        &pool,
        "function deep() {\n  throw new TypeError('bad thing');\n}\nexport default () => deep();",
    )
    .await;
    match outcome.result.unwrap_err() {
        Failure::Thrown(text) => {
            assert!(text.starts_with("TypeError: bad thing"), "{text}");
            assert!(
                text.contains("deep") && text.contains("index.js:2"),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    let outcome = run(
        &pool,
        "export default async () => { await null; return Promise.reject(new Error('nope')); }",
    )
    .await;
    assert!(
        matches!(outcome.result.unwrap_err(), Failure::Thrown(t) if t.starts_with("Error: nope"))
    );
    let outcome = run(&pool, "export default () => { throw 'plain'; }").await;
    assert!(matches!(outcome.result.unwrap_err(), Failure::Thrown(t) if t.contains("plain")));
    next_one_succeeds(&pool).await;
}

#[tokio::test]
async fn a_promise_that_can_never_settle_ends_at_once() {
    let pool = Pool::new(1, 1);
    let outcome = run_with(
        &pool,
        "export default async () => { await new Promise(() => {}); }",
        |i| {
            i.limits.wall = Duration::from_secs(30);
        },
    )
    .await;
    assert_eq!(outcome.result.unwrap_err(), Failure::NeverSettled);
    assert!(
        outcome.duration < Duration::from_millis(500),
        "{:?}",
        outcome.duration
    );
    next_one_succeeds(&pool).await;
}

#[tokio::test]
async fn a_host_call_past_the_wall_time_times_out() {
    let pool = Pool::new(1, 1);
    let outcome = run_with(&pool, "export default async ({ res }) => { await fetch('https://never.example'); return res.empty(); }", |i| {
        i.limits.wall = Duration::from_millis(300);
        i.host = Arc::new(FakeHost { delay: None });
    })
    .await;
    assert_eq!(outcome.result.unwrap_err(), Failure::Timeout);
    assert!(outcome.duration >= Duration::from_millis(300));
    assert!(
        outcome.duration < Duration::from_secs(2),
        "{:?}",
        outcome.duration
    );
    next_one_succeeds(&pool).await;
}

#[tokio::test]
async fn host_calls_count_toward_wall_time_not_cpu_time() {
    let pool = Pool::new(1, 1);
    let outcome = run_with(&pool, "export default async ({ res }) => { const r = await fetch('https://slow.example'); return res.json(r.status); }", |i| {
        i.limits.cpu = Duration::from_millis(100);
        i.limits.wall = Duration::from_secs(5);
        i.host = Arc::new(FakeHost { delay: Some(Duration::from_millis(400)) });
    })
    .await;
    assert_eq!(body(&outcome), "200");
    assert!(outcome.duration >= Duration::from_millis(400));
}

#[tokio::test]
async fn a_huge_response_is_refused() {
    let pool = Pool::new(1, 1);
    let outcome = run_with(
        &pool,
        "export default ({ res }) => res.send('x'.repeat(100 * 1024 * 1024));",
        |i| {
            i.limits.memory = 256 << 20;
        },
    )
    .await;
    assert_eq!(outcome.result.unwrap_err(), Failure::ResponseTooLarge);
    // Multi-byte text is measured in UTF-8 bytes.
    let outcome = run_with(
        &pool,
        "export default ({ res }) => res.text('é'.repeat(600));",
        |i| {
            i.limits.response = 1000;
        },
    )
    .await;
    assert_eq!(outcome.result.unwrap_err(), Failure::ResponseTooLarge);
    let outcome = run_with(
        &pool,
        "export default ({ res }) => res.binary(new Uint8Array(2000));",
        |i| {
            i.limits.response = 1000;
        },
    )
    .await;
    assert_eq!(outcome.result.unwrap_err(), Failure::ResponseTooLarge);
    next_one_succeeds(&pool).await;
}

#[tokio::test]
async fn a_megabyte_of_logs_is_cut_at_the_limit() {
    let pool = Pool::new(1, 1);
    let outcome = run(&pool, "export default ({ res }) => { for (let i = 0; i < 16384; i++) console.log('y'.repeat(63)); console.error('late'); return res.text('done'); }").await;
    assert_eq!(body(&outcome), "done");
    assert!(outcome.logs_truncated);
    assert!(outcome.logs.len() + outcome.errors.len() <= Limits::default().log);
    assert!(outcome.logs.len() > Limits::default().log - 100);
    assert!(outcome.errors.is_empty());
    let outcome = run(&pool, "export default ({ res, log, error }) => { console.log('a', 1, { b: 2 }); console.info('i'); log('via context'); console.warn('w'); error('e'); return res.empty(); }").await;
    assert!(!outcome.logs_truncated);
    assert_eq!(outcome.logs, "a 1 {\"b\":2}\ni\nvia context\n");
    assert_eq!(outcome.errors, "w\ne\n");
}

#[tokio::test]
async fn text_cut_inside_an_emoji_is_logged_not_thrown() {
    let pool = Pool::new(1, 1);
    let outcome = run(&pool, "export default ({ res, log, error }) => { const half = '😀'.slice(0, 1); log('name: ' + half); console.error(half, 'x'); return res.text('ok'); }").await;
    assert_eq!(body(&outcome), "ok");
    assert_eq!(outcome.logs, "name: \u{FFFD}\n");
    assert_eq!(outcome.errors, "\u{FFFD} x\n");
}

#[tokio::test]
async fn the_guest_sees_the_request_as_appwrite_describes_it() {
    let pool = Pool::new(1, 1);
    let code = r#"export default ({ req, res }) => {
        let bad = null;
        try { req.bodyJson; } catch (e) { bad = e.name; }
        return res.json({
            method: req.method, path: req.path, query: req.query, queryString: req.queryString,
            headers: req.headers, url: req.url, text: req.bodyText, bytes: req.bodyBinary.length,
            port: req.port, scheme: req.scheme, host: req.host, bad,
        }, 201, { 'X-Extra': 'yes' });
    }"#;
    let outcome = run_with(&pool, code, |i| {
        i.request = Request {
            method: "POST".into(),
            scheme: "https".into(),
            host: "api.example".into(),
            port: 8443,
            path: "/v1/hook".into(),
            query_string: "a=1&b=two+words&c=%C3%A9&a=3".into(),
            headers: vec![
                ("Content-Type".into(), "text/plain".into()),
                ("X-Custom".into(), "v".into()),
            ],
            body: bytes::Bytes::from_static(b"{not json"),
        };
    })
    .await;
    let response = outcome.result.as_ref().unwrap();
    assert_eq!(response.status, 201);
    assert!(response.headers.contains(&("x-extra".into(), "yes".into())));
    let got: serde_json::Value = serde_json::from_slice(&response.body).unwrap();
    assert_eq!(
        got,
        serde_json::json!({
            "method": "POST", "path": "/v1/hook", "query": { "a": "3", "b": "two words", "c": "é" },
            "queryString": "a=1&b=two+words&c=%C3%A9&a=3",
            "headers": { "content-type": "text/plain", "x-custom": "v" },
            "url": "https://api.example:8443/v1/hook?a=1&b=two+words&c=%C3%A9&a=3",
            "text": "{not json", "bytes": 9, "port": 8443, "scheme": "https", "host": "api.example",
            "bad": "SyntaxError",
        })
    );
    let outcome = run_with(
        &pool,
        "export default ({ req, res }) => res.json(req.bodyJson.n + 1)",
        |i| {
            i.request.body = bytes::Bytes::from_static(b"{\"n\": 41}");
        },
    )
    .await;
    assert_eq!(body(&outcome), "42");
}

#[tokio::test]
async fn every_kind_of_response_comes_back() {
    let pool = Pool::new(1, 1);
    let response = run(
        &pool,
        "export default ({ res }) => res.redirect('https://elsewhere.example/x')",
    )
    .await
    .result
    .unwrap();
    assert_eq!(response.status, 301);
    assert!(
        response
            .headers
            .contains(&("location".into(), "https://elsewhere.example/x".into()))
    );
    let response = run(&pool, "export default ({ res }) => res.redirect('/y', 302)")
        .await
        .result
        .unwrap();
    assert_eq!(response.status, 302);
    let response = run(&pool, "export default ({ res }) => res.empty()")
        .await
        .result
        .unwrap();
    assert_eq!((response.status, response.body.len()), (204, 0));
    let response = run(
        &pool,
        "export default ({ res }) => res.binary(new Uint8Array([1, 2, 255]))",
    )
    .await
    .result
    .unwrap();
    assert_eq!(&response.body[..], &[1, 2, 255]);
    assert!(
        response
            .headers
            .contains(&("content-type".into(), "application/octet-stream".into()))
    );
    let response = run(&pool, "export default ({ res }) => res.text('hé', 418)")
        .await
        .result
        .unwrap();
    assert_eq!(
        (response.status, &response.body[..]),
        (418, "hé".as_bytes())
    );
    let response = run(
        &pool,
        "export default ({ res }) => res.send('raw', 200, { 'content-type': 'text/csv' })",
    )
    .await
    .result
    .unwrap();
    assert_eq!(
        response.headers,
        vec![("content-type".to_string(), "text/csv".to_string())]
    );
    for code in [
        "export default () => ({ status: 200, body: 'forged' })",
        "export default () => undefined",
        "export default ({ res }) => res.send('x', 1000)",
        "export default ({ res }) => res.send('x', 200, { 'bad name': 'v' })",
        "export default ({ res }) => res.send('x', 200, { 'x-a': 'line\\nbreak' })",
        "export default ({ res }) => ({ ...res.send('x') })",
    ] {
        let outcome = run(&pool, code).await;
        assert!(
            matches!(outcome.result, Err(Failure::InvalidResponse(_))),
            "{code}: {:?}",
            outcome.result
        );
    }
    // A result cannot be altered after `res.*` made it.
    let code = "export default ({ res }) => { const r = res.send('x'); for (const f of [() => r.headers.push(5), () => { r.status = 1; }, () => r.headers[0] = 'x']) { try { f(); } catch (e) {} } return r; }";
    let response = run(&pool, code).await.result.unwrap();
    assert_eq!((response.status, response.headers.len()), (200, 0));
    let code = "export default ({ res }) => { const r = res.binary(new Uint8Array([1, 2, 3])); new Uint8Array(r.body)[0] = 9; return r; }";
    let response = run(&pool, code).await.result.unwrap();
    assert_eq!(&response.body[..], &[1, 2, 3]);
    next_one_succeeds(&pool).await;
}

#[tokio::test]
async fn env_holds_the_functions_variables_only() {
    // The test process has a PATH and a HOME; the guest must see neither.
    assert!(std::env::var_os("PATH").is_some());
    let pool = Pool::new(1, 1);
    let code = "export default ({ env, res }) => res.json({ env, process: process.env, keys: Object.keys(process.env), path: process.env.PATH ?? null, home: env.HOME ?? null, std: typeof std, os: typeof os, require: typeof require })";
    let outcome = run_with(&pool, code, |i| {
        i.env = Arc::new(BTreeMap::from([("API_KEY".to_string(), "k1".to_string())]));
    })
    .await;
    let got: serde_json::Value = serde_json::from_str(&body(&outcome)).unwrap();
    assert_eq!(
        got,
        serde_json::json!({
            "env": { "API_KEY": "k1" }, "process": { "API_KEY": "k1" }, "keys": ["API_KEY"],
            "path": null, "home": null,
            "std": "undefined", "os": "undefined", "require": "undefined",
        })
    );
}

#[tokio::test]
async fn timers_run_within_the_execution_only() {
    let pool = Pool::new(1, 1);
    let code = "export default async ({ res }) => {
        const order = [];
        const cancelled = setTimeout(() => order.push('cancelled'), 5);
        clearTimeout(cancelled);
        await new Promise((resolve) => setTimeout(() => { order.push('timer'); resolve(); }, 20));
        setTimeout(() => console.log('never runs'), 10000);
        return res.json(order);
    }";
    let outcome = run(&pool, code).await;
    assert_eq!(body(&outcome), "[\"timer\"]");
    assert!(outcome.duration < Duration::from_secs(2));
    assert!(outcome.logs.is_empty());
    next_one_succeeds(&pool).await;
}

#[tokio::test]
async fn fetch_and_graphql_reach_the_host_on_its_runtime() {
    let pool = Pool::new(1, 1);
    let code = r#"export default async ({ res }) => {
        const r = await fetch('https://api.example/x', { method: 'post', headers: { 'X-A': '1' }, body: 'hi' });
        const copy = await fetch('https://api.example/y');
        const refused = await fetch('https://refused.example').then(() => 'no', (e) => e.message);
        const gql = await nimbus.graphql('query Q($id: ID!) { document(id: $id) { id } }', { id: 'd1' });
        return res.json({
            status: r.status, ok: r.ok, url: r.url, type: r.headers.get('Content-Type'),
            json: await r.json(), text: await copy.text(), bytes: (await copy.arrayBuffer()).byteLength,
            refused, gql,
        });
    }"#;
    let outcome = run_with(&pool, code, |i| {
        i.host = Arc::new(FakeHost {
            delay: Some(Duration::from_millis(10)),
        });
    })
    .await;
    let got: serde_json::Value = serde_json::from_str(&body(&outcome)).unwrap();
    assert_eq!(
        got,
        serde_json::json!({
            "status": 200, "ok": true, "url": "https://api.example/x", "type": "application/json",
            "json": { "hello": "world" }, "text": "{\"hello\":\"world\"}", "bytes": 17,
            "refused": "the address is not allowed",
            "gql": { "data": { "query": "query Q($id: ID!) { document(id: $id) { id } }", "variables": { "id": "d1" } } },
        })
    );
}

/// Figures for the report: `cargo test --release --lib sandbox::tests::measures -- --nocapture`.
#[tokio::test]
async fn measures_compile_execution_and_idle_memory() {
    let started = std::time::Instant::now();
    let rounds = 50;
    for _ in 0..rounds {
        compile(&source(HELLO)).unwrap();
    }
    let compile_each = started.elapsed() / rounds;
    let pool = Pool::new(1, 1);
    let program = compile(&source(HELLO)).unwrap();
    let mut durations = Vec::new();
    let mut round_trips = Vec::new();
    for _ in 0..200 {
        let started = std::time::Instant::now();
        let outcome = pool.run(invocation(program.clone())).await.unwrap();
        round_trips.push(started.elapsed());
        assert!(outcome.result.is_ok());
        durations.push(outcome.duration);
    }
    durations.sort();
    round_trips.sort();
    let (idle, peak) = engine::memory_figures(invocation(program));
    println!(
        "compile hello-world {compile_each:?}; execution p50 {:?} p99 {:?}; through the pool p50 {:?}; idle engine {} KiB; peak during a hello-world {} KiB",
        durations[100],
        durations[198],
        round_trips[100],
        idle / 1024,
        peak / 1024,
    );
    assert!(idle > 0 && peak > idle);
}

/// A host whose `nimbus.graphql` answers who it acts for.
struct Identity(&'static str);

impl Host for Identity {
    fn fetch(&self, _request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, String>> {
        Box::pin(std::future::pending())
    }

    fn graphql(&self, _query: String, _variables: String) -> BoxFuture<'static, String> {
        let who = self.0;
        Box::pin(async move { serde_json::json!({ "data": { "who": who } }).to_string() })
    }
}

/// A host whose `nimbus.graphql` answers this text, whatever it is asked.
struct Answers(&'static str);

impl Host for Answers {
    fn fetch(&self, _request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, String>> {
        Box::pin(std::future::pending())
    }

    fn graphql(&self, _query: String, _variables: String) -> BoxFuture<'static, String> {
        let text = self.0;
        Box::pin(async move { text.to_string() })
    }
}

#[tokio::test]
async fn graphql_answers_reach_the_guest_as_the_host_wrote_them() {
    let pool = Pool::new(1, 1);
    let code = r#"export default async ({ res }) => {
        const gql = await nimbus.graphql('{ b a }');
        const own = gql.data.a;
        return res.json({
            keys: Object.keys(gql.data), own: Object.keys(own),
            plain: Object.getPrototypeOf(own) === Object.prototype, polluted: own.x ?? null,
        });
    }"#;
    let outcome = run_with(&pool, code, |i| {
        i.host = Arc::new(Answers(r#"{"data":{"b":1,"a":{"__proto__":{"x":1}}}}"#));
    })
    .await;
    // The keys in the host's order (the query's, for the functions service), and
    // a `__proto__` key an own property, as `JSON.parse` makes it.
    assert_eq!(
        body(&outcome),
        r#"{"keys":["b","a"],"own":["__proto__"],"plain":true,"polluted":null}"#
    );
}

#[tokio::test]
async fn a_graphql_answer_that_does_not_parse_rejects_the_call() {
    let pool = Pool::new(1, 1);
    let code = r#"export default async ({ res }) => {
        const got = await nimbus.graphql('{ a }').then(() => 'parsed', (e) => e instanceof Error);
        return res.json({ got });
    }"#;
    let outcome = run_with(&pool, code, |i| {
        i.host = Arc::new(Answers("{ not json"));
    })
    .await;
    assert_eq!(body(&outcome), r#"{"got":true}"#);
}

#[tokio::test]
async fn what_throws_as_a_graphql_call_starts_rejects_it() {
    let pool = Pool::new(1, 1);
    let code = r#"export default async ({ res }) => {
        const cyclic = {}; cyclic.self = cyclic;
        const bad = { toString() { throw new Error('no text'); } };
        const a = await nimbus.graphql('{ a }', cyclic).then(() => 'ran', (e) => e.constructor.name);
        const b = await nimbus.graphql(bad).then(() => 'ran', (e) => e.message);
        return res.json({ a, b });
    }"#;
    let outcome = run_with(&pool, code, |i| {
        i.host = Arc::new(Answers(r#"{"data":null}"#));
    })
    .await;
    assert_eq!(body(&outcome), r#"{"a":"TypeError","b":"no text"}"#);
}

fn warm(owner: &str, version: &str) -> impl FnOnce(&mut Invocation) {
    let key = WarmKey {
        owner: owner.into(),
        version: version.into(),
    };
    move |i| i.warm = Some(key)
}

const COUNTER: &str = "let count = 0; export default ({ res }) => res.json({ count: ++count, leak: globalThis.leak ?? null })";

#[tokio::test]
async fn a_warm_context_keeps_module_state_for_its_key_only() {
    let pool = Pool::new(1, 4);
    for expected in 1..=3 {
        let outcome = run_with(&pool, COUNTER, warm("p/f", "1/d")).await;
        assert_eq!(
            body(&outcome),
            format!("{{\"count\":{expected},\"leak\":null}}")
        );
    }
    // Another function on the same thread has its own context.
    let other = run_with(&pool, COUNTER, warm("p/g", "1/d")).await;
    assert_eq!(body(&other), "{\"count\":1,\"leak\":null}");
    let back = run_with(&pool, COUNTER, warm("p/f", "1/d")).await;
    assert_eq!(body(&back), "{\"count\":4,\"leak\":null}");
    // A new version (deployment, settings or variables) starts over.
    let changed = run_with(&pool, COUNTER, warm("p/f", "2/d")).await;
    assert_eq!(body(&changed), "{\"count\":1,\"leak\":null}");
    // The default stays a fresh context, untouched by the warm ones.
    assert_eq!(
        body(&run(&pool, COUNTER).await),
        "{\"count\":1,\"leak\":null}"
    );
    assert_eq!(
        body(&run(&pool, COUNTER).await),
        "{\"count\":1,\"leak\":null}"
    );
}

#[tokio::test]
async fn a_warm_context_serves_each_execution_with_its_own_host_env_and_logs() {
    let pool = Pool::new(1, 4);
    // The guest keeps the API's functions from its first execution.
    let code = "const gql = nimbus.graphql; const log = console.log; let first; \
        export default async ({ req, res, env }) => { first ??= env.WHO; log('as', env.WHO); \
        const answer = await gql('{ me }'); \
        if (req.path === '/noisy') for (let i = 0; i < 2000; i++) console.log('z'.repeat(63)); \
        return res.json({ who: answer.data.who, env: env.WHO, first }); }";
    let as_user = |who: &'static str, noisy: bool| {
        move |i: &mut Invocation| {
            warm("p/f", "1/d")(i);
            i.host = Arc::new(Identity(who));
            i.env = Arc::new(BTreeMap::from([("WHO".to_string(), who.to_string())]));
            if noisy {
                i.request.path = "/noisy".into();
            }
            i.limits.log = 4096;
        }
    };
    let a = run_with(&pool, code, as_user("alice", true)).await;
    assert_eq!(
        body(&a),
        "{\"who\":\"alice\",\"env\":\"alice\",\"first\":\"alice\"}"
    );
    assert!(a.logs.starts_with("as alice\n"));
    assert!(a.logs_truncated);
    // Same key, so the same context: module state is kept, but the host, the
    // logs and their cap are the second execution's own. (`env` comes with
    // the key: changed variables make a new version.)
    let b = run_with(&pool, code, as_user("bob", false)).await;
    assert_eq!(
        body(&b),
        "{\"who\":\"bob\",\"env\":\"alice\",\"first\":\"alice\"}"
    );
    assert_eq!(b.logs, "as alice\n");
    assert!(!b.logs_truncated);
}

#[tokio::test]
async fn a_warm_context_that_did_not_end_cleanly_is_dropped() {
    let pool = Pool::new(1, 4);
    let code = "let count = 0; export default async ({ req, res }) => { count++; globalThis.leak = 'set'; \
        const seen = { count, leak: globalThis.seen ?? null }; globalThis.seen = 'set'; \
        switch (req.path) { \
          case '/loop': while (true) {} \
          case '/throw': throw new Error('boom'); \
          case '/deep': { const f = (n) => f(n + 1) + 1; f(0); } \
          case '/bomb': { const a = []; while (true) a.push('x'.repeat(1024) + a.length); } \
          case '/timer': setTimeout(() => {}, 60000); break; \
          case '/fetch': fetch('https://never.example'); break; \
          case '/forever': await new Promise(() => {}); \
        } \
        return res.json(seen); }";
    let at = |path: &'static str| {
        move |i: &mut Invocation| {
            warm("p/f", "1/d")(i);
            i.request.path = path.into();
            i.host = Arc::new(FakeHost { delay: None });
            i.limits.cpu = Duration::from_millis(200);
            i.limits.wall = Duration::from_secs(5);
            i.limits.memory = 16 << 20;
        }
    };
    for (path, failure) in [
        ("/loop", Some(Failure::CpuLimit)),
        ("/throw", None),
        ("/deep", Some(Failure::StackOverflow)),
        ("/bomb", Some(Failure::MemoryLimit)),
        ("/timer", None),
        ("/fetch", None),
        ("/forever", Some(Failure::NeverSettled)),
    ] {
        let warmed = run_with(&pool, code, at("/")).await;
        assert_eq!(
            body(&warmed),
            "{\"count\":1,\"leak\":null}",
            "before {path}"
        );
        let again = run_with(&pool, code, at("/")).await;
        assert_eq!(
            body(&again),
            "{\"count\":2,\"leak\":\"set\"}",
            "before {path}"
        );
        let outcome = run_with(&pool, code, at(path)).await;
        match failure {
            Some(failure) => assert_eq!(outcome.result.unwrap_err(), failure, "{path}"),
            None if path == "/throw" => {
                assert!(matches!(outcome.result, Err(Failure::Thrown(_))), "{path}")
            }
            None => assert!(outcome.result.is_ok(), "{path}"),
        }
        let after = run_with(&pool, code, at("/")).await;
        assert_eq!(
            body(&after),
            "{\"count\":1,\"leak\":null}",
            "after {path}: a fresh context"
        );
        // The next key starts clean for the next round.
        pool.forget_warm("");
    }
}

#[tokio::test]
async fn what_a_warm_context_keeps_counts_against_its_memory_limit() {
    let pool = Pool::new(1, 4);
    // Each execution keeps one more MiB; the limit is 8 MiB.
    let code = "const kept = []; export default ({ res }) => { kept.push('x'.repeat(1 << 20)); return res.json(kept.length); }";
    let limited = |i: &mut Invocation| {
        warm("p/f", "1/d")(i);
        i.limits.memory = 8 << 20;
    };
    let mut kept = Vec::new();
    loop {
        let outcome = run_with(&pool, code, limited).await;
        match outcome.result {
            Ok(_) => kept.push(body(&outcome)),
            Err(failure) => {
                assert_eq!(failure, Failure::MemoryLimit);
                break;
            }
        }
        assert!(
            kept.len() < 10,
            "the kept state outgrew the limit: {kept:?}"
        );
    }
    assert!(kept.len() >= 4, "{kept:?}");
    // The context that hit the limit was dropped: the next starts over.
    assert_eq!(body(&run_with(&pool, code, limited).await), "1");
}

#[tokio::test]
async fn forgotten_warm_contexts_start_over() {
    let pool = Pool::new(1, 4);
    assert_eq!(
        body(&run_with(&pool, COUNTER, warm("p/f", "1/d")).await),
        "{\"count\":1,\"leak\":null}"
    );
    assert_eq!(
        body(&run_with(&pool, COUNTER, warm("q/f", "1/d")).await),
        "{\"count\":1,\"leak\":null}"
    );
    pool.forget_warm("p/");
    assert_eq!(
        body(&run_with(&pool, COUNTER, warm("p/f", "1/d")).await),
        "{\"count\":1,\"leak\":null}"
    );
    assert_eq!(
        body(&run_with(&pool, COUNTER, warm("q/f", "1/d")).await),
        "{\"count\":2,\"leak\":null}"
    );
}

#[test]
fn a_thread_keeps_a_bounded_number_of_warm_contexts() {
    let mut worker = engine::Worker::new().expect("the engine starts");
    let program = compile(&source(COUNTER)).expect("compiles");
    for n in 0..engine::WARM_CONTEXTS + 3 {
        let mut i = invocation(program.clone());
        warm(&format!("p/f{n}"), "1")(&mut i);
        assert!(worker.execute(i, None, None).result.is_ok());
    }
    assert_eq!(worker.warm_contexts(), engine::WARM_CONTEXTS);
}

/// A host whose `nimbus.graphql` answers with the name of the thread that
/// finished the call: `fast` at once, `slow` once `fast` has answered, `panic`
/// by panicking.
#[derive(Default)]
struct ThreadHost {
    fast_answered: Arc<tokio::sync::Notify>,
}

impl Host for ThreadHost {
    fn fetch(&self, request: FetchRequest) -> BoxFuture<'static, Result<FetchResponse, String>> {
        FAKE.fetch(request)
    }

    fn graphql(&self, query: String, _variables: String) -> BoxFuture<'static, String> {
        let fast_answered = self.fast_answered.clone();
        Box::pin(async move {
            match query.as_str() {
                "slow" => fast_answered.notified().await,
                "fast" => fast_answered.notify_one(),
                _ => panic!("a host call panicked"),
            }
            let thread = std::thread::current().name().unwrap_or("").to_string();
            serde_json::json!({ "data": thread }).to_string()
        })
    }
}

#[tokio::test]
async fn a_call_awaited_alone_runs_on_the_engines_thread_and_one_left_pending_moves_to_the_runtime()
{
    let pool = Pool::new(1, 1);
    let code = "export default async ({ res }) => {
        const slow = nimbus.graphql('slow');
        const fast = await nimbus.graphql('fast');
        return res.json({ fast: fast.data, slow: (await slow).data });
    }";
    let outcome = run_with(&pool, code, |i| i.host = Arc::new(ThreadHost::default())).await;
    let got: serde_json::Value = serde_json::from_str(&body(&outcome)).unwrap();
    assert_eq!(got["fast"], "nimbus-fn-0", "{got}");
    // `slow` was still pending when guest code ran again: the runtime (this
    // test's thread) finished it, not the engine waiting for it later.
    assert_ne!(got["slow"], "nimbus-fn-0", "{got}");
    assert!(got["slow"].is_string(), "{got}");
}

#[tokio::test]
async fn a_host_call_that_panics_fails_that_call_only() {
    let pool = Pool::new(1, 1);
    let code = "export default async ({ res }) => {
        let message = null;
        try { await nimbus.graphql('panic'); } catch (e) { message = e.message; }
        const fast = await nimbus.graphql('fast');
        return res.json({ message, fast: fast.data });
    }";
    let outcome = run_with(&pool, code, |i| i.host = Arc::new(ThreadHost::default())).await;
    assert_eq!(
        body(&outcome),
        r#"{"message":"the host call failed","fast":"nimbus-fn-0"}"#
    );
    next_one_succeeds(&pool).await;
}

#[tokio::test]
async fn the_request_keeps_its_keys_and_joins_repeated_headers() {
    let pool = Pool::new(1, 1);
    let code = "export default ({ req, res }) => res.json({
        keys: Object.keys(req),
        raw: req.bodyRaw,
        rawOwn: Object.getOwnPropertyNames(req).includes('bodyRaw'),
        headers: req.headers,
        plain: Object.getPrototypeOf(req) === Object.prototype,
    })";
    let outcome = run_with(&pool, code, |i| {
        i.request.headers = vec![
            ("Accept".into(), "a".into()),
            ("constructor".into(), "c".into()),
            ("__proto__".into(), "p".into()),
            ("accept".into(), "b".into()),
        ];
        i.request.body = bytes::Bytes::from_static(b"text");
    })
    .await;
    let got: serde_json::Value = serde_json::from_str(&body(&outcome)).unwrap();
    assert_eq!(
        got,
        serde_json::json!({
            "keys": ["method", "scheme", "host", "port", "path", "queryString", "query", "headers",
                     "url", "bodyText", "bodyJson", "bodyBinary"],
            "raw": "text", "rawOwn": true,
            "headers": { "accept": "a, b", "constructor": "c", "__proto__": "p" },
            "plain": true,
        })
    );
}

/// An execution of `tenant` that waits `delay` on a fetch (a timer: no thread
/// works meanwhile, as with a guest sleeping until its timeout).
fn sleeping(tenant: &str, delay: Duration) -> Invocation {
    let program = compile(&source(
        "export default async ({ res }) => { await fetch('https://slow.example'); return res.text('slept'); }",
    ))
    .unwrap();
    let mut invocation = invocation(program);
    invocation.host = Arc::new(FakeHost { delay: Some(delay) });
    invocation.tenant = Arc::from(tenant);
    invocation
}

fn hello_of(tenant: &str) -> Invocation {
    let mut invocation = invocation(compile(&source(HELLO)).unwrap());
    invocation.tenant = Arc::from(tenant);
    invocation
}

#[tokio::test]
async fn one_tenant_cannot_hold_every_thread_or_the_whole_queue() {
    let shares = Shares {
        running: 1,
        waiting: 2,
    };
    let pool = Pool::with_handle(2, 8, shares, tokio::runtime::Handle::try_current().ok());
    let slow = Duration::from_millis(800);
    let hog = [
        pool.run(sleeping("hog", slow)),
        pool.run(sleeping("hog", slow)),
        pool.run(sleeping("hog", slow)),
    ];
    let others = async {
        // Let the hog's first execution take a thread and the two others queue.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.running(), 1, "the hog runs on its share of threads");
        assert_eq!(pool.waiting(), 2);
        // Past its share of the queue it is refused at once, though places are free.
        let refused = pool.run(sleeping("hog", slow)).await;
        assert!(refused.is_err(), "the hog's fourth execution is refused");
        // Another tenant runs on the thread left, well before the hog's first ends.
        let started = std::time::Instant::now();
        let outcome = pool.run(hello_of("other")).await.expect("not busy");
        assert_eq!(body(&outcome), "{\"ok\":true}");
        started.elapsed()
    };
    let (hog, waited) = tokio::join!(futures_util::future::join_all(hog), others);
    assert!(waited < Duration::from_millis(500), "{waited:?}");
    for outcome in hog {
        assert_eq!(body(&outcome.expect("not busy")), "slept");
    }
}

#[tokio::test]
async fn a_freed_thread_takes_the_tenant_running_the_fewest_first() {
    let shares = Shares {
        running: 2,
        waiting: 8,
    };
    let pool = Pool::with_handle(2, 8, shares, tokio::runtime::Handle::try_current().ok());
    let first = pool.run(sleeping("busy", Duration::from_millis(300)));
    let second = pool.run(sleeping("busy", Duration::from_millis(900)));
    let queued_first = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let outcome = pool
            .run(sleeping("busy", Duration::from_millis(600)))
            .await
            .expect("not busy");
        assert_eq!(body(&outcome), "slept");
        started.elapsed()
    };
    let queued_later = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(pool.waiting(), 1, "the busy tenant's third waits");
        let started = std::time::Instant::now();
        let outcome = pool.run(hello_of("quiet")).await.expect("not busy");
        assert_eq!(body(&outcome), "{\"ok\":true}");
        started.elapsed()
    };
    let (a, b, busy_third, quiet) = tokio::join!(first, second, queued_first, queued_later);
    assert!(a.unwrap().result.is_ok() && b.unwrap().result.is_ok());
    // The first thread freed (at about 300 ms) went to the quiet tenant, which
    // queued after the busy one's third; that third then waited for the next.
    assert!(quiet < Duration::from_millis(600), "{quiet:?}");
    assert!(busy_third >= Duration::from_millis(800), "{busy_third:?}");
}
