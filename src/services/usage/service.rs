//! Rules of usage: the flush that adds each replica's counts to the bucket rows
//! (keeping what failed for the next one), the snapshots of what exists, pruning,
//! and the reading of a range of buckets.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use tokio::sync::watch;

use super::counters::{Delta, OTHER};
use super::store::{self, Row};
use super::{Kind, Metric};
use crate::AppState;
use crate::auth::Grant;
use crate::auth::scopes::UsageRead;
use crate::db::{ids, now_millis};
use crate::error::{AppError, AppResult, codes};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// Most points one series of `usage` may have.
pub const MAX_POINTS: i64 = 1000;
/// Most keyed series of one metric in an answer; the others are added up as `other`.
pub const MAX_SERIES_PER_METRIC: usize = 50;
/// Most bucket rows kept for a later flush while the database refuses them; past
/// this, new counts are dropped (and counted in `nimbus_usage_dropped_total`).
const MAX_PENDING_ROWS: usize = 100_000;
/// How often buckets past their retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The start of the bucket of `period` (`h` or `d`) holding `millis` (UTC).
fn bucket_of(period: &str, millis: i64) -> i64 {
    let size = if period == "h" { HOUR } else { DAY };
    millis - millis.rem_euclid(size)
}

/// The hourly and daily rows of one count taken at `at`.
fn rows_of(
    project_id: &str,
    metric: Metric,
    dimension: &str,
    value: i64,
    at: i64,
    replica: &str,
) -> [Row; 2] {
    let kind = metric.kind();
    let row = |period: &'static str| Row {
        project_id: project_id.to_string(),
        period,
        bucket: bucket_of(period, at),
        metric: metric.stored(),
        dimension: dimension.to_string(),
        replica: if kind == Kind::Peak {
            replica.to_string()
        } else {
            String::new()
        },
        value,
        kind,
    };
    [row("h"), row("d")]
}

type RowKey = (String, &'static str, i64, &'static str, String, String);

/// Rows waiting to be written, merged by key as their kind says.
#[derive(Default)]
struct Pending {
    rows: HashMap<RowKey, Row>,
    dropped: u64,
}

impl Pending {
    fn add(&mut self, row: Row) {
        let key = (
            row.project_id.clone(),
            row.period,
            row.bucket,
            row.metric,
            row.dimension.clone(),
            row.replica.clone(),
        );
        if let Some(kept) = self.rows.get_mut(&key) {
            kept.value = match row.kind {
                Kind::Counter => kept.value.saturating_add(row.value),
                Kind::Peak => kept.value.max(row.value),
                Kind::Gauge => row.value,
            };
            return;
        }
        if self.rows.len() >= MAX_PENDING_ROWS {
            self.dropped += 1;
            return;
        }
        self.rows.insert(key, row);
    }
}

/// One replica's flushing: what it has not written yet, and whether the last
/// write failed (a failure is logged once, not at every flush).
struct Flusher {
    replica: String,
    pending: Pending,
    failing: bool,
}

impl Flusher {
    fn take_counts(&mut self, state: &AppState, at: i64) {
        for Delta {
            project_id,
            metric,
            dimension,
            value,
        } in state.usage.take()
        {
            for row in rows_of(&project_id, metric, &dimension, value, at, &self.replica) {
                self.pending.add(row);
            }
        }
    }

    /// Writes what is pending; on failure keeps it for the next flush.
    async fn write(&mut self, state: &AppState) {
        if self.pending.dropped > 0 {
            metrics::counter!("nimbus_usage_dropped_total").increment(self.pending.dropped);
            tracing::warn!(
                rows = self.pending.dropped,
                "usage counts dropped: too many waited for the database"
            );
            self.pending.dropped = 0;
        }
        if self.pending.rows.is_empty() {
            return;
        }
        let rows: Vec<Row> = self.pending.rows.values().cloned().collect();
        match store::add_all(state.db.pool(), state.db.dialect(), &rows).await {
            Ok(()) => {
                self.pending.rows.clear();
                if std::mem::take(&mut self.failing) {
                    tracing::info!("usage counts are written again");
                }
            }
            Err(err) => {
                metrics::counter!("nimbus_usage_flush_failures_total").increment(1);
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::warn!(error = %err, rows = rows.len(),
                        "cannot write usage counts; keeping them for the next flush");
                }
            }
        }
    }

    /// Takes a snapshot of what exists, as gauges of every project.
    async fn snapshot(&mut self, state: &AppState) {
        let taken = async {
            let projects: Vec<String> = sqlx::query_scalar("SELECT id FROM projects")
                .fetch_all(state.db.pool())
                .await?;
            let counts = store::snapshot(state.db.pool(), state.db.dialect()).await?;
            Ok::<_, sqlx::Error>((projects, counts))
        }
        .await;
        let (projects, counts) = match taken {
            Ok(taken) => taken,
            Err(err) => {
                tracing::warn!(error = %err, "cannot take a usage snapshot");
                return;
            }
        };
        let at = now_millis();
        let mut values: BTreeMap<(String, &'static str), i64> = BTreeMap::new();
        // Every project has every gauge: none counted is zero, not "unchanged".
        for project in projects {
            for metric in Metric::ALL.iter().filter(|m| m.kind() == Kind::Gauge) {
                values.insert((project.clone(), metric.stored()), 0);
            }
        }
        for (project, metric, n) in counts {
            if let Some(value) = values.get_mut(&(project, metric)) {
                *value = n;
            }
        }
        for ((project, metric), value) in values {
            let Some(metric) = Metric::from_stored(metric) else {
                continue;
            };
            for row in rows_of(&project, metric, "", value, at, &self.replica) {
                self.pending.add(row);
            }
        }
    }
}

/// Deletes the buckets past their retention.
async fn prune(state: &AppState) {
    let now = now_millis();
    let config = &state.config;
    for (period, days) in [
        ("h", config.usage_hourly_retention_days),
        ("d", config.usage_daily_retention_days),
    ] {
        let before = now - i64::from(days) * DAY;
        if let Err(err) = store::prune(state.db.pool(), period, before).await {
            tracing::warn!(error = %err, "cannot prune usage buckets");
        }
    }
}

/// Flushes this replica's counts every `NIMBUS_USAGE_FLUSH_SECS` until `stop`
/// turns true, then once more; a replica running background work also takes
/// snapshots and prunes.
pub async fn flush_forever(state: AppState, mut stop: watch::Receiver<bool>) {
    let mut flusher = Flusher {
        replica: ids::generate(),
        pending: Pending::default(),
        failing: false,
    };
    let background = state.config.jobs_concurrency > 0;
    let every = Duration::from_secs(state.config.usage_flush_secs);
    let snapshot_every = Duration::from_secs(state.config.usage_snapshot_secs);
    let mut flushes = tokio::time::interval(every);
    flushes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut snapshots = tokio::time::interval(snapshot_every);
    snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut prunes = tokio::time::interval(PRUNE_EVERY);
    prunes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
            _ = flushes.tick() => {
                flusher.take_counts(&state, now_millis());
                flusher.write(&state).await;
            }
            _ = snapshots.tick(), if background => {
                flusher.snapshot(&state).await;
                flusher.write(&state).await;
            }
            _ = prunes.tick(), if background => prune(&state).await,
        }
    }
    // The last counts of a replica that shuts down.
    flusher.take_counts(&state, now_millis());
    flusher.write(&state).await;
}

/// Forgets the usage of the grant's deleted project. A failure is logged; the
/// rows then go with retention.
pub async fn forget_project(state: &AppState, admin: &crate::auth::AdminGrant) {
    if let Err(err) = store::delete_project(state.db.pool(), admin.project()).await {
        tracing::warn!(error = %err, "cannot delete a deleted project's usage");
    }
}

/// How wide each point of a series is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interval {
    Hour,
    Day,
}

impl Interval {
    fn millis(self) -> i64 {
        match self {
            Interval::Hour => HOUR,
            Interval::Day => DAY,
        }
    }

    fn period(self) -> &'static str {
        match self {
            Interval::Hour => "h",
            Interval::Day => "d",
        }
    }
}

/// Which buckets to read: a span ending now, or from one time to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Span {
    Last(i64),
    Between { from: i64, to: Option<i64> },
}

/// One series of an answer: a metric (and one of its keys), its points from the
/// first bucket on, and their total.
#[derive(Debug, Clone)]
pub struct Series {
    pub metric: Metric,
    pub key: Option<String>,
    pub total: i64,
    pub points: Vec<i64>,
}

/// The answer of `usage`.
#[derive(Debug, Clone)]
pub struct Report {
    pub project_id: String,
    pub from: i64,
    pub to: i64,
    pub interval: Interval,
    pub series: Vec<Series>,
}

impl Report {
    /// The start of each point's bucket.
    pub fn times(&self) -> impl Iterator<Item = i64> + '_ {
        (self.from..self.to).step_by(self.interval.millis() as usize)
    }
}

fn range_error(reason: String) -> AppError {
    AppError::Invalid {
        code: codes::USAGE_RANGE_TOO_LARGE,
        field: "range".into(),
        reason,
    }
}

/// The first bucket and the end of the last, for `span` read at `interval` at `now`.
fn bounds(span: Span, interval: Interval, now: i64) -> AppResult<(i64, i64)> {
    let size = interval.millis();
    let align = |t: i64| t - t.rem_euclid(size);
    let (from, to) = match span {
        Span::Last(width) => (align(now - width), align(now) + size),
        Span::Between { from, to } => {
            let to = to.unwrap_or(now);
            if to <= from {
                return Err(AppError::invalid("to", "must be later than `from`"));
            }
            (align(from), align(to - 1) + size)
        }
    };
    let points = (to - from) / size;
    if points > MAX_POINTS {
        return Err(range_error(format!(
            "the range holds {points} points at this interval; at most {MAX_POINTS}: ask for a shorter range or a coarser interval"
        )));
    }
    Ok((from, to))
}

/// The usage of the grant's project over `span`, a point per `interval`, of
/// `metrics` (all when empty).
pub async fn report(
    state: &AppState,
    grant: &Grant<UsageRead>,
    span: Span,
    interval: Interval,
    metrics: &[Metric],
) -> AppResult<Report> {
    let (from, to) = bounds(span, interval, now_millis())?;
    let project_id = grant.project();
    if !store::project_exists(state.db.pool(), project_id).await? {
        return Err(AppError::ProjectNotFound {
            id: project_id.into(),
        });
    }
    let mut wanted: Vec<Metric> = if metrics.is_empty() {
        Metric::ALL.to_vec()
    } else {
        metrics.to_vec()
    };
    wanted.sort();
    wanted.dedup();
    let names: Vec<&str> = if metrics.is_empty() {
        Vec::new()
    } else {
        wanted.iter().map(|m| m.stored()).collect()
    };
    let read = store::read(
        state.db.pool(),
        state.db.dialect(),
        project_id,
        interval.period(),
        from,
        to,
        &names,
    )
    .await?;
    let size = interval.millis();
    let points = ((to - from) / size) as usize;
    // metric → key ('' for the whole) → points
    let mut values: BTreeMap<Metric, BTreeMap<String, Vec<Option<i64>>>> = BTreeMap::new();
    for metric in &wanted {
        values
            .entry(*metric)
            .or_default()
            .insert(String::new(), vec![None; points]);
    }
    for row in read {
        let Some(metric) = Metric::from_stored(&row.metric) else {
            continue;
        };
        let Some(series) = values.get_mut(&metric) else {
            continue;
        };
        let at = ((row.bucket - from) / size) as usize;
        if at >= points {
            continue;
        }
        let mut add = |key: &str| {
            let point = &mut series
                .entry(key.to_string())
                .or_insert_with(|| vec![None; points])[at];
            *point = Some(point.unwrap_or(0).saturating_add(row.value));
        };
        if metric.keyed() {
            add(&row.dimension);
        }
        add("");
    }
    let mut series = Vec::new();
    for (metric, keys) in values {
        let of_metric: Vec<Series> = keys
            .into_iter()
            .map(|(key, points)| finish(metric, (!key.is_empty()).then_some(key), points))
            .collect();
        series.extend(capped(metric, of_metric, points));
    }
    Ok(Report {
        project_id: project_id.to_string(),
        from,
        to,
        interval,
        series,
    })
}

/// The series of one metric in the order of the answer: the whole first, then
/// the keys by total; past [`MAX_SERIES_PER_METRIC`] the smallest are added up as
/// one `other` (with any `other` the flushes counted).
fn capped(metric: Metric, mut of_metric: Vec<Series>, points: usize) -> Vec<Series> {
    of_metric.sort_by(|a, b| {
        (a.key.is_some(), std::cmp::Reverse(a.total), &a.key).cmp(&(
            b.key.is_some(),
            std::cmp::Reverse(b.total),
            &b.key,
        ))
    });
    if of_metric.len() <= MAX_SERIES_PER_METRIC + 1 {
        return of_metric;
    }
    let mut rest = of_metric.split_off(MAX_SERIES_PER_METRIC);
    if let Some(at) = of_metric
        .iter()
        .position(|s| s.key.as_deref() == Some(OTHER))
    {
        rest.push(of_metric.remove(at));
    }
    let mut other = vec![0i64; points];
    for extra in rest {
        for (sum, value) in other.iter_mut().zip(extra.points) {
            *sum = sum.saturating_add(value);
        }
    }
    of_metric.push(finish(
        metric,
        Some(OTHER.to_string()),
        other.into_iter().map(Some).collect(),
    ));
    of_metric
}

/// A series from its bucket values (`None`: no row): counters and peaks read 0
/// where nothing was counted; a gauge keeps its last snapshot until the next.
fn finish(metric: Metric, key: Option<String>, values: Vec<Option<i64>>) -> Series {
    let kind = metric.kind();
    let mut last = 0;
    let points: Vec<i64> = values
        .into_iter()
        .map(|value| match (kind, value) {
            (Kind::Gauge, None) => last,
            (_, Some(v)) => {
                last = v;
                v
            }
            (_, None) => 0,
        })
        .collect();
    let total = match kind {
        Kind::Counter => points.iter().fold(0i64, |sum, v| sum.saturating_add(*v)),
        Kind::Peak => points.iter().copied().max().unwrap_or(0),
        Kind::Gauge => last,
    };
    Series {
        metric,
        key,
        total,
        points,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_span_covers_whole_buckets_up_to_the_current_one() {
        let now = 10 * DAY + 5 * HOUR + 123;
        let (from, to) = bounds(Span::Last(DAY), Interval::Hour, now).unwrap();
        assert_eq!((from, to), (9 * DAY + 5 * HOUR, 10 * DAY + 6 * HOUR));
        assert_eq!((to - from) / HOUR, 25);
        let (from, to) = bounds(Span::Last(7 * DAY), Interval::Day, now).unwrap();
        assert_eq!((from, to), (3 * DAY, 11 * DAY));
    }

    #[test]
    fn too_many_points_are_refused() {
        let now = 4000 * DAY;
        let err = bounds(Span::Last(3650 * DAY), Interval::Hour, now).unwrap_err();
        assert_eq!(err.code(), codes::USAGE_RANGE_TOO_LARGE);
        assert!(bounds(Span::Last(3650 * DAY), Interval::Day, now).is_err());
        assert!(bounds(Span::Last(900 * DAY), Interval::Day, now).is_ok());
        let backwards = Span::Between {
            from: now,
            to: Some(now - HOUR),
        };
        assert!(bounds(backwards, Interval::Hour, now).is_err());
    }

    #[test]
    fn gauges_carry_their_last_snapshot_and_peaks_total_their_highest() {
        let gauge = finish(
            Metric::Documents,
            None,
            vec![None, Some(3), None, Some(5), None],
        );
        assert_eq!(gauge.points, [0, 3, 3, 5, 5]);
        assert_eq!(gauge.total, 5);
        let peak = finish(
            Metric::RealtimeConnections,
            None,
            vec![Some(2), None, Some(7)],
        );
        assert_eq!(peak.points, [2, 0, 7]);
        assert_eq!(peak.total, 7);
        let counter = finish(Metric::Requests, None, vec![Some(2), None, Some(7)]);
        assert_eq!(counter.total, 9);
    }

    #[test]
    fn keys_past_the_cap_fold_into_one_other_with_the_counted_one() {
        let key =
            |name: String, value: i64| finish(Metric::Operations, Some(name), vec![Some(value)]);
        let mut of_metric = vec![finish(Metric::Operations, None, vec![Some(10_000)])];
        for n in 0..60 {
            of_metric.push(key(format!("query.f{n}"), 100 + n));
        }
        of_metric.push(key(OTHER.to_string(), 1000));
        let capped = capped(Metric::Operations, of_metric, 1);
        assert!(capped.len() <= MAX_SERIES_PER_METRIC + 1);
        assert_eq!(capped[0].key, None);
        let others: Vec<&Series> = capped
            .iter()
            .filter(|s| s.key.as_deref() == Some(OTHER))
            .collect();
        assert_eq!(others.len(), 1);
        // The counted `other` was among the largest: the 48 largest keys stay,
        // the 12 smallest (100..=111) are folded with it.
        assert_eq!(others[0].total, 1000 + (100..=111).sum::<i64>());
        let total: i64 = capped.iter().skip(1).map(|s| s.total).sum();
        assert_eq!(total, 1000 + (100..160).sum::<i64>());
    }

    #[test]
    fn pending_rows_merge_as_their_kind_says() {
        let mut pending = Pending::default();
        for (metric, value) in [
            (Metric::Requests, 2),
            (Metric::Requests, 3),
            (Metric::RealtimeConnections, 4),
            (Metric::RealtimeConnections, 1),
            (Metric::Users, 9),
            (Metric::Users, 6),
        ] {
            for row in rows_of("p", metric, "", value, 0, "r") {
                pending.add(row);
            }
        }
        let value = |metric: Metric| {
            pending
                .rows
                .values()
                .find(|r| r.metric == metric.stored() && r.period == "h")
                .unwrap()
                .value
        };
        assert_eq!(value(Metric::Requests), 5);
        assert_eq!(value(Metric::RealtimeConnections), 4);
        assert_eq!(value(Metric::Users), 6);
    }
}
