//! Durable jobs across a database restart: webhook deliveries that a replica holds
//! leases on while MariaDB goes away and comes back are run after it, each event
//! reaching the receiver (more than once only as at-least-once allows), and the
//! replica's job loop carries on without a restart of its own.
//!
//! The restart is made by a TCP proxy between the server and the suite's MariaDB:
//! every connection is cut (the server rolls back what they had open, as a restart
//! does) and new ones are refused until it is "back", without disturbing the other
//! tests that share that MariaDB.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

use crate::helpers::{WAIT, fresh_database, spawn_with, test_config, test_database_server};
use crate::webhooks::{create_team, create_webhook, eventually};

/// A proxy to the database that can be taken down and brought back.
struct Outage {
    addr: std::net::SocketAddr,
    down: Arc<AtomicBool>,
    /// Bumped to cut every open connection.
    cut: watch::Sender<u64>,
    refused: Arc<AtomicUsize>,
    refused_one: Arc<Notify>,
}

impl Outage {
    async fn start(upstream: String) -> Outage {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let (cut, cuts) = watch::channel(0u64);
        let refused = Arc::new(AtomicUsize::new(0));
        let refused_one = Arc::new(Notify::new());
        let (is_down, refusals, refusal) = (down.clone(), refused.clone(), refused_one.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if is_down.load(Ordering::SeqCst) {
                    drop(client);
                    refusals.fetch_add(1, Ordering::SeqCst);
                    refusal.notify_waiters();
                    continue;
                }
                let upstream = upstream.clone();
                let mut cuts = cuts.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&upstream).await else {
                        return;
                    };
                    let mut client = client;
                    cuts.borrow_and_update();
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Outage {
            addr,
            down,
            cut,
            refused,
            refused_one,
        }
    }

    /// Cuts every connection and refuses new ones; answers once the server has
    /// tried to reconnect `attempts` times while it was down.
    async fn restart(&self, attempts: usize) {
        self.down.store(true, Ordering::SeqCst);
        self.cut.send_modify(|n| *n += 1);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let refused = self.refused_one.notified();
            tokio::pin!(refused);
            refused.as_mut().enable();
            if self.refused.load(Ordering::SeqCst) >= attempts {
                break;
            }
            assert!(
                tokio::time::timeout_at(deadline, refused).await.is_ok(),
                "the server did not try to reach the database while it was down"
            );
        }
        self.down.store(false, Ordering::SeqCst);
    }
}

/// A receiver that holds every delivery until released, counting each `webhook-id`.
struct HeldReceiver {
    url: String,
    seen: Arc<std::sync::Mutex<HashMap<String, usize>>>,
    arrived: Arc<Notify>,
    release: watch::Sender<bool>,
}

impl HeldReceiver {
    async fn start() -> HeldReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/held", listener.local_addr().unwrap());
        let seen: Arc<std::sync::Mutex<HashMap<String, usize>>> = Arc::default();
        let arrived = Arc::new(Notify::new());
        let (release, released) = watch::channel(false);
        let (log, signal) = (seen.clone(), arrived.clone());
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let (log, signal, mut released) = (log.clone(), signal.clone(), released.clone());
            async move {
                let id = headers
                    .get("webhook-id")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                *log.lock().unwrap().entry(id).or_default() += 1;
                signal.notify_waiters();
                let _ = released.wait_for(|open| *open).await;
                "thanks"
            }
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        HeldReceiver {
            url,
            seen,
            arrived,
            release,
        }
    }

    fn seen(&self) -> HashMap<String, usize> {
        self.seen.lock().unwrap().clone()
    }

    async fn wait_for_requests(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let got: usize = self.seen().values().sum();
            if got >= count {
                return;
            }
            assert!(
                tokio::time::timeout_at(deadline, arrived).await.is_ok(),
                "{count} deliveries did not arrive; got {got}"
            );
        }
    }
}

#[tokio::test]
async fn jobs_leased_while_mariadb_restarts_run_after_it_and_the_job_loop_recovers() {
    let Some(server) = test_database_server() else {
        eprintln!("skipped: a MariaDB restart needs NIMBUS_TEST_DATABASE_URL");
        return;
    };
    let database = fresh_database().await.unwrap();
    let upstream = url::Url::parse(&server).unwrap();
    let outage = Outage::start(format!(
        "{}:{}",
        upstream.host_str().unwrap(),
        upstream.port().unwrap_or(3306)
    ))
    .await;
    let mut through_proxy = url::Url::parse(&database).unwrap();
    through_proxy.set_port(Some(outage.addr.port())).unwrap();

    let receiver = HeldReceiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = test_config(dir.path()).await;
    config.database_url = Some(through_proxy.to_string());
    config.webhooks_allow_private = true;
    config.webhooks_timeout_secs = 30;
    config.jobs_poll_ms = 50;
    config.jobs_retry_base_ms = 50;
    config.jobs_lease_secs = 2;
    config.jobs_concurrency = 4;
    let app = spawn_with(config, dir).await;
    create_webhook(&app, &receiver.url, &["teams.*.create"]).await;
    const TEAMS: usize = 8;
    for n in 0..TEAMS {
        create_team(&app, &format!("team-{n}")).await;
    }

    // The replica holds leases on as many deliveries as it runs at once, each one
    // waiting at the receiver, when the database goes away.
    receiver.wait_for_requests(4).await;
    outage.restart(3).await;
    // The held deliveries are answered now; recording them fails or comes late.
    receiver.release.send_replace(true);

    // Once the database is back, every event reaches the receiver and every job
    // ends done, without restarting the replica.
    let jobs = eventually("every delivery job done", || async {
        let answer = app
            .admin(
                "{ jobs(kind: \"webhook\", first: 100) { nodes { id status attempts } } }",
                json!({}),
            )
            .await;
        let nodes = answer.body["data"]["jobs"]["nodes"].as_array()?.clone();
        (nodes.len() == TEAMS && nodes.iter().all(|j| j["status"] == "DONE")).then_some(nodes)
    })
    .await;
    assert_eq!(jobs.len(), TEAMS);
    let seen = eventually("every event delivered", || async {
        let seen = receiver.seen();
        (seen.len() == TEAMS).then_some(seen)
    })
    .await;
    assert!(!seen.contains_key(""), "every delivery has a webhook-id");
    // At least once: a delivery whose outcome could not be recorded runs again after
    // its lease, and nothing else does.
    let repeated = seen.values().filter(|&&n| n > 1).count();
    assert!(repeated <= 4, "only held deliveries repeat: {seen:?}");
    assert!(seen.values().all(|&n| n <= 3), "{seen:?}");

    // The job loop works on: a new event is delivered at once.
    create_team(&app, "after").await;
    eventually("a delivery after the restart", || async {
        (receiver.seen().len() == TEAMS + 1).then_some(())
    })
    .await;
    app.shutdown().await;
}
