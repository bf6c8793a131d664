//! Abuse limits: at most `limit` attempts per key (route plus email, IP or user) in a
//! fixed window. Counted in Redis when the server has one, so every replica shares
//! the count; in memory otherwise. If Redis cannot be reached the attempt is allowed
//! (and logged): a broken cache must not lock every user out.
//!
//! Outgoing email has limits of three kinds: per recipient (each flow's own), and
//! per sender and per client address ([`RateLimiter::hit_outgoing_mail`]), so that
//! one account, key or address cannot have the server mail many recipients.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use crate::auth::principal::User;
use crate::auth::{Caller, Credential};
use crate::error::{AppError, AppResult};

/// One limit: how many attempts in how long.
#[derive(Debug, Clone, Copy)]
pub struct Limit {
    pub attempts: u32,
    pub window: Duration,
}

impl Limit {
    pub const fn per_hour(attempts: u32) -> Self {
        Limit {
            attempts,
            window: Duration::from_secs(3600),
        }
    }

    pub const fn per_minute(attempts: u32) -> Self {
        Limit {
            attempts,
            window: Duration::from_secs(60),
        }
    }
}

/// The client a request's address stands for, in limit keys: an IPv4 address as
/// it is, an IPv6 address by its /64 network (one subscriber usually holds a whole
/// /64, so counting single addresses would hand one client billions of fresh
/// windows, and fill memory with their keys).
pub fn client_key(ip: &str) -> String {
    match ip.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => {
                let s = v6.segments();
                format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
            }
        },
        Ok(std::net::IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => ip.chars().take(64).collect(),
    }
}

/// Who asks for an email to be sent, in limit keys: the signed-in user or the API
/// key; none for guests (their client address bounds them).
pub fn mail_sender(caller: &Caller) -> Option<String> {
    let project = &caller.project.id;
    match &caller.credential {
        Credential::Session(session) => Some(user_mail_sender(&session.user)),
        _ => caller
            .key()
            .map(|key| format!("key:{project}:{}", key.key_id)),
    }
}

/// A signed-in user as [`mail_sender`] names them.
pub fn user_mail_sender(user: &User) -> String {
    format!("user:{}:{}", user.project_id, user.id)
}

/// Per-hour bounds on outgoing email beside each flow's per-recipient one; 0 turns
/// one off.
#[derive(Debug, Clone, Copy)]
pub struct MailLimits {
    pub per_sender: u32,
    pub per_client: u32,
}

/// Guesses at sent secrets one client address may make per hour, whoever they
/// name ([`RateLimiter::hit_secret_guess`]).
const SECRET_GUESSES_PER_CLIENT: Limit = Limit::per_hour(100);

/// Past this many tracked keys, expired windows are swept from memory.
const SWEEP_AT: usize = 50_000;
/// Most windows held in memory (some 40 MB). Full of live windows, an attempt
/// under a key not yet counted is counted in [`Overflow`] instead: forgetting a
/// window to make room would hand its guesses back to whoever made them, and
/// refusing every key not yet counted would let a crowd of clients (most keys
/// name what the client chose: an email, a user id) lock every newcomer out.
const MAX_WINDOWS: usize = 250_000;
/// Counters per row of [`Overflow`].
const OVERFLOW_SLOTS: usize = 1 << 17;
/// Rows of [`Overflow`].
const OVERFLOW_ROWS: usize = 4;

/// Counts for keys that found the windows full (a count-min sketch), one per
/// length of window (a minute's counts never last an hour): rows of counters, a
/// key counted in one counter of each row (chosen by a hash seeded at random, so
/// no client can pick keys that land on another's) and limited by the least of
/// them. An attempt past the limit adds nothing, and one within it raises only the
/// counters at that least value (conservative update): a counter shared by several
/// keys only counts more than each of them, never less, so past the bound of
/// memory limits still hold. What a crowd costs a newcomer grows with the crowd's
/// keys per window: with as many as a row has counters (131,072), its least
/// counter is 5 or more less than once in 10⁹, so it keeps most of its attempts;
/// a crowd of millions of keys an hour leaves newcomers fewer (at that scale,
/// count in Redis). Fixed in size (4 MiB each), made only when first needed.
struct Overflow {
    hashers: [std::collections::hash_map::RandomState; OVERFLOW_ROWS],
    /// What the counters' times count from.
    epoch: Instant,
    /// When each counter's window ends (seconds after `epoch`), and its count.
    counters: Vec<(u32, u32)>,
}

impl Overflow {
    fn new(now: Instant) -> Overflow {
        Overflow {
            hashers: Default::default(),
            epoch: now,
            counters: vec![(0, 0); OVERFLOW_ROWS * OVERFLOW_SLOTS],
        }
    }

    fn seconds(d: Duration) -> u32 {
        u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
    }

    /// The key's counters, in `counters`.
    fn slots(&self, key: &str) -> [usize; OVERFLOW_ROWS] {
        use std::hash::BuildHasher as _;
        std::array::from_fn(|row| {
            row * OVERFLOW_SLOTS + (self.hashers[row].hash_one(key) as usize) % OVERFLOW_SLOTS
        })
    }

    /// The key's count now (its least live counter) and the seconds its window
    /// has left; (0, 0) when none is live.
    fn estimate(&self, key: &str, now: Instant) -> (u32, u64) {
        let now = Self::seconds(now.saturating_duration_since(self.epoch));
        self.slots(key)
            .iter()
            .map(|&slot| match self.counters[slot] {
                (ends, count) if ends > now => (count, u64::from(ends - now)),
                _ => (0, 0),
            })
            .min_by_key(|(count, _)| *count)
            .unwrap_or((0, 0))
    }

    fn hit(&mut self, key: &str, limit: Limit, now: Instant) -> (u32, u64) {
        let slots = self.slots(key);
        let now = Self::seconds(now.saturating_duration_since(self.epoch));
        let window = Self::seconds(limit.window).max(1);
        for &slot in &slots {
            let counter = &mut self.counters[slot];
            if counter.0 <= now {
                *counter = (now.saturating_add(window), 0);
            }
        }
        let (least, ends) = slots
            .iter()
            .map(|&slot| (self.counters[slot].1, self.counters[slot].0))
            .min_by_key(|(count, _)| *count)
            .unwrap_or((0, now));
        let left = u64::from(ends.saturating_sub(now));
        if least >= limit.attempts {
            return (least.saturating_add(1), left);
        }
        for &slot in &slots {
            if self.counters[slot].1 == least {
                self.counters[slot].1 = least + 1;
            }
        }
        (least + 1, left)
    }
}

/// The in-memory windows. After a sweep the next one waits until the map has
/// doubled: were every window live, sweeping at a fixed size would scan the whole
/// map on every attempt, and one client's fresh keys would cost everyone that.
/// Each window holds when it ends (its own limit's length after its first attempt)
/// and its count: a sweep drops only windows that ended, whatever the limit of the
/// attempt that set it off.
#[derive(Default)]
struct Windows {
    by_key: HashMap<String, (Instant, u32)>,
    sweep_at: usize,
    /// When the last sweep of full windows ran: a map full of live windows is
    /// swept at most once a [`FULL_SWEEP_EVERY`], not on every attempt (each
    /// sweep walks every window, under the lock every attempt takes).
    full_swept_at: Option<Instant>,
    /// One sketch per length of window, made when the windows first fill.
    overflows: Vec<(Duration, Box<Overflow>)>,
}

/// How often a map full of windows is swept at most.
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(1);
const REDIS_TIMEOUT: Duration = Duration::from_secs(1);

pub struct RateLimiter {
    enabled: bool,
    prefix: String,
    redis: Option<ConnectionManager>,
    local: Mutex<Windows>,
}

impl RateLimiter {
    /// Counts in Redis when a connection is given, else in memory; `enabled: false`
    /// turns every limit off.
    pub fn new(enabled: bool, prefix: &str, redis: Option<ConnectionManager>) -> Self {
        RateLimiter {
            enabled,
            prefix: format!("{prefix}:abuse:"),
            redis,
            local: Mutex::new(Windows {
                by_key: HashMap::new(),
                sweep_at: SWEEP_AT,
                full_swept_at: None,
                overflows: Vec::new(),
            }),
        }
    }

    /// Counts one attempt on `key`; `RATE_LIMITED` with the seconds until the window
    /// ends when the limit is passed.
    pub async fn hit(&self, key: &str, limit: Limit) -> AppResult<()> {
        if !self.enabled {
            return Ok(());
        }
        let (count, retry_after) = match &self.redis {
            Some(redis) => match self.hit_redis(redis.clone(), key, limit).await {
                Ok(counted) => counted,
                Err(err) => {
                    tracing::warn!(error = %err, "rate limit not counted: Redis unavailable");
                    return Ok(());
                }
            },
            None => self.hit_local(key, limit),
        };
        if count > limit.attempts {
            return Err(AppError::RateLimited {
                retry_after: retry_after.max(1),
            });
        }
        Ok(())
    }

    /// Ends the window of `key`: what was counted there no longer counts (a
    /// success that shows the attempts were the owner's, as Appwrite resets its
    /// sign-in counter). Attempts counted in the overflow sketch stay counted:
    /// its counters are shared with other keys. A failure only leaves the count
    /// as it was.
    pub async fn forget(&self, key: &str) {
        if !self.enabled {
            return;
        }
        match &self.redis {
            Some(redis) => {
                let mut redis = redis.clone();
                let key = format!("{}{key}", self.prefix);
                let deleted = tokio::time::timeout(
                    REDIS_TIMEOUT,
                    redis::cmd("DEL").arg(&key).query_async::<i64>(&mut redis),
                )
                .await;
                if !matches!(deleted, Ok(Ok(_))) {
                    tracing::debug!("a rate-limit window was not reset: Redis unavailable");
                }
            }
            None => {
                if let Ok(mut windows) = self.local.lock() {
                    windows.by_key.remove(key);
                }
            }
        }
    }

    /// Counts one guess at a secret a user was sent (a link's, a code's, an
    /// invitation's) against the client address it comes from, before any limit
    /// keyed by what the client names (a user id, an email, an invitation): past
    /// it, a client's guesses at ever new names leave no window behind each.
    pub async fn hit_secret_guess(&self, project_id: &str, client_ip: &str) -> AppResult<()> {
        self.hit(
            &format!("secret-client:{project_id}:{}", client_key(client_ip)),
            SECRET_GUESSES_PER_CLIENT,
        )
        .await
    }

    /// Counts one outgoing email against its sender (when there is one) and the
    /// client address it was asked from; `RATE_LIMITED` past either bound.
    pub async fn hit_outgoing_mail(
        &self,
        sender: Option<&str>,
        client_ip: &str,
        limits: MailLimits,
    ) -> AppResult<()> {
        if limits.per_client > 0 {
            let key = format!("mail-client:{}", client_key(client_ip));
            self.hit(&key, Limit::per_hour(limits.per_client)).await?;
        }
        if let Some(sender) = sender
            && limits.per_sender > 0
        {
            let key = format!("mail-sender:{sender}");
            self.hit(&key, Limit::per_hour(limits.per_sender)).await?;
        }
        Ok(())
    }

    async fn hit_redis(
        &self,
        mut redis: ConnectionManager,
        key: &str,
        limit: Limit,
    ) -> anyhow::Result<(u32, u64)> {
        let key = format!("{}{key}", self.prefix);
        let seconds = limit.window.as_secs().max(1);
        // The window starts with the first attempt: SET NX gives the key its expiry once.
        let (count, ttl): (u32, i64) = tokio::time::timeout(
            REDIS_TIMEOUT,
            redis::pipe()
                .atomic()
                .cmd("SET")
                .arg(&key)
                .arg(0)
                .arg("EX")
                .arg(seconds)
                .arg("NX")
                .ignore()
                .cmd("INCR")
                .arg(&key)
                .cmd("TTL")
                .arg(&key)
                .query_async(&mut redis),
        )
        .await??;
        Ok((count, u64::try_from(ttl).unwrap_or(seconds)))
    }

    fn hit_local(&self, key: &str, limit: Limit) -> (u32, u64) {
        let Ok(mut windows) = self.local.lock() else {
            return (0, 0);
        };
        let now = Instant::now();
        let full = windows.by_key.len() >= MAX_WINDOWS;
        let swept_lately = windows
            .full_swept_at
            .is_some_and(|at| now.saturating_duration_since(at) < FULL_SWEEP_EVERY);
        if windows.by_key.len() >= windows.sweep_at.min(MAX_WINDOWS) && !(full && swept_lately) {
            if full {
                windows.full_swept_at = Some(now);
            }
            windows.by_key.retain(|_, (ends, _)| *ends > now);
            windows.sweep_at = SWEEP_AT.max(windows.by_key.len() * 2);
        }
        let sketch = windows
            .overflows
            .iter()
            .position(|(window, _)| *window == limit.window);
        if windows.by_key.len() >= MAX_WINDOWS && !windows.by_key.contains_key(key) {
            metrics::counter!("nimbus_rate_limit_full_total").increment(1);
            let sketch = match sketch {
                Some(at) => at,
                None => {
                    let made = Box::new(Overflow::new(now));
                    windows.overflows.push((limit.window, made));
                    windows.overflows.len() - 1
                }
            };
            return windows.overflows[sketch].1.hit(key, limit, now);
        }
        // A key counted in a sketch while the windows were full goes on from its
        // count there: room made later hands no attempts back.
        let fresh = match sketch {
            Some(at) if !windows.by_key.contains_key(key) => {
                let (count, left) = windows.overflows[at].1.estimate(key, now);
                (now + Duration::from_secs(left), count)
            }
            _ => (now + limit.window, 0),
        };
        let ends = now + limit.window;
        let entry = windows.by_key.entry(key.to_string()).or_insert(fresh);
        if entry.0 <= now {
            *entry = (ends, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        let left = entry.0.saturating_duration_since(now);
        (entry.1, left.as_secs())
    }
}

#[cfg(test)]
mod tests {

    /// Full windows neither lock newcomers out nor forget anyone's count: a key
    /// not yet counted is limited in the overflow's counters, one counted before
    /// goes on in its own window.
    #[tokio::test]
    async fn a_full_memory_still_limits_new_keys_without_refusing_them() {
        let limiter = RateLimiter::new(true, "t", None);
        let hour = Limit::per_hour(1000);
        {
            let mut windows = limiter.local.lock().unwrap();
            let ends = Instant::now() + Duration::from_secs(3600);
            for n in 0..MAX_WINDOWS {
                windows.by_key.insert(format!("k{n}"), (ends, 1));
            }
        }
        // A crowd's fresh keys, as many as a row of the overflow has counters.
        for n in 0..OVERFLOW_SLOTS {
            let _ = limiter.hit(&format!("crowd{n}"), Limit::per_hour(1)).await;
        }
        let ten = Limit::per_hour(10);
        let mut allowed = 0;
        while limiter.hit("newcomer", ten).await.is_ok() {
            allowed += 1;
            assert!(allowed <= 10, "a newcomer passed its limit");
        }
        assert!(allowed >= 6, "a newcomer had {allowed} attempts of 10");
        assert!(
            matches!(
                limiter.hit("newcomer", ten).await,
                Err(AppError::RateLimited { retry_after }) if retry_after > 3500
            ),
            "past its limit, a newcomer is refused for the window's rest"
        );
        limiter.hit("k7", hour).await.unwrap();
        assert_eq!(limiter.local.lock().unwrap().by_key["k7"].1, 2);
        assert_eq!(limiter.local.lock().unwrap().by_key.len(), MAX_WINDOWS);
        // A minute's limit is counted apart from the hour's crowd: all of it.
        let minute = Limit::per_minute(10);
        for attempt in 0..10 {
            assert!(limiter.hit("quick", minute).await.is_ok(), "{attempt}");
        }
        assert!(limiter.hit("quick", minute).await.is_err());
        // Room made later hands the newcomer's refused attempts back to nobody.
        limiter.local.lock().unwrap().by_key.clear();
        assert!(
            limiter.hit("newcomer", ten).await.is_err(),
            "its count carried over from the sketch"
        );
    }

    use super::*;

    #[tokio::test]
    async fn the_attempt_after_the_limit_is_refused_with_a_retry_time() {
        let limiter = RateLimiter::new(true, "t", None);
        let limit = Limit::per_hour(3);
        for _ in 0..3 {
            limiter.hit("k", limit).await.unwrap();
        }
        match limiter.hit("k", limit).await {
            Err(AppError::RateLimited { retry_after }) => assert!(retry_after > 3500),
            other => panic!("expected RATE_LIMITED, got {other:?}"),
        }
        limiter.hit("other key", limit).await.unwrap();
    }

    /// A sweep set off by an attempt under a short limit keeps the live windows
    /// of longer ones: a per-minute limit hit by anyone must not reset the hourly
    /// counts of password guesses.
    #[tokio::test]
    async fn a_sweep_keeps_every_window_that_has_not_ended() {
        let limiter = RateLimiter::new(true, "t", None);
        let hourly = Limit::per_hour(3);
        let per_minute = Limit::per_minute(1_000_000);
        for _ in 0..3 {
            limiter.hit("guesses", hourly).await.unwrap();
        }
        {
            let mut windows = limiter.local.lock().unwrap();
            // As if the hourly window began two minutes ago.
            let entry = windows.by_key.get_mut("guesses").unwrap();
            entry.0 -= Duration::from_secs(120);
            windows.sweep_at = 1;
        }
        limiter.hit("fresh", per_minute).await.unwrap();
        assert!(
            matches!(
                limiter.hit("guesses", hourly).await,
                Err(AppError::RateLimited { .. })
            ),
            "the hourly window was swept"
        );
    }

    #[test]
    fn ipv6_clients_count_by_their_64_network() {
        assert_eq!(client_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(
            client_key("2001:db8:1:2:ffff::9"),
            client_key("2001:db8:1:2::1")
        );
        assert_eq!(client_key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(client_key("192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn a_sweep_that_frees_nothing_waits_for_the_map_to_double() {
        let limiter = RateLimiter::new(true, "t", None);
        for i in 0..=SWEEP_AT {
            limiter.hit_local(&i.to_string(), Limit::per_hour(1));
        }
        let windows = limiter.local.lock().unwrap();
        assert_eq!(windows.by_key.len(), SWEEP_AT + 1);
        assert_eq!(windows.sweep_at, SWEEP_AT * 2);
    }

    #[tokio::test]
    async fn a_disabled_limiter_never_refuses() {
        let limiter = RateLimiter::new(false, "t", None);
        for _ in 0..100 {
            limiter.hit("k", Limit::per_hour(1)).await.unwrap();
        }
    }
}
