//! GraphQL of usage: `usage(projectId, range | from/to, interval, metrics)`.

use async_graphql::dynamic::{
    Enum, EnumItem, Field, FieldFuture, FieldValue, InputValue, Object, ResolverContext, TypeRef,
};
use async_graphql::{Name, Value};

use crate::auth::scopes::UsageRead;
use crate::error::{AppError, AppResult};
use crate::graphql::SchemaParts;
use crate::graphql::types::{
    DATETIME, app, caller, datetime, object, opt_string, parse_datetime, prop,
};

use super::Metric;
use super::service::{self, Interval, Report, Series, Span};

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

/// The spans `range` offers: name, width, description.
const RANGES: &[(&str, i64, &str)] = &[
    ("LAST_24_HOURS", DAY, "The last 24 hours, up to now."),
    ("LAST_7_DAYS", 7 * DAY, "The last 7 days, up to now."),
    ("LAST_30_DAYS", 30 * DAY, "The last 30 days, up to now."),
    (
        "LAST_90_DAYS",
        90 * DAY,
        "The last 90 days, up to now (at `DAY` only: hourly it is more points than allowed).",
    ),
];

pub fn register(parts: &mut SchemaParts, _project: &crate::services::projects::Project) {
    parts.add_type(RANGES.iter().fold(
        Enum::new("UsageRange").description("A span of time ending now."),
        |ty, (name, _, about)| ty.item(EnumItem::new(*name).description(*about)),
    ));
    parts.add_type(
        Enum::new("UsageInterval")
            .description("How much time one point of a usage series covers (UTC buckets).")
            .item(EnumItem::new("HOUR").description("One point per hour (hourly buckets are kept `NIMBUS_USAGE_HOURLY_RETENTION_DAYS`)."))
            .item(EnumItem::new("DAY").description("One point per day (daily buckets are kept `NIMBUS_USAGE_DAILY_RETENTION_DAYS`).")),
    );
    parts.add_type(Metric::ALL.iter().fold(
        Enum::new("UsageMetric").description("What usage counts."),
        |ty, metric| ty.item(EnumItem::new(metric.graphql()).description(metric.about())),
    ));
    parts.add_type(
        Object::new("UsagePoint")
            .description("The value of a usage series in one bucket.")
            .field(prop(
                "time",
                TypeRef::named_nn(DATETIME),
                "Start of the bucket.",
            ))
            .field(prop(
                "value",
                TypeRef::named_nn(TypeRef::FLOAT),
                "The value in the bucket (a whole number; Float because bytes outgrow Int).",
            )),
    );
    parts.add_type(
        Object::new("UsageSeries")
            .description("One metric (or one key of it) over the range.")
            .field(prop("metric", TypeRef::named_nn("UsageMetric"), "What is counted."))
            .field(prop("key", TypeRef::named(TypeRef::STRING), "The part of the metric: a root field (`query.users`), an error code, `http` or `ws`; `other` for keys past the caps; null for the metric as a whole."))
            .field(prop("total", TypeRef::named_nn(TypeRef::FLOAT), "Over the range: the sum of a counter, the highest point of a peak, the latest snapshot of a gauge."))
            .field(prop("points", TypeRef::named_nn_list_nn("UsagePoint"), "One point per bucket of the range, oldest first.")),
    );
    parts.add_type(
        Object::new("Usage")
            .description("A project's usage over a range of time.")
            .field(prop(
                "projectId",
                TypeRef::named_nn(TypeRef::ID),
                "The project.",
            ))
            .field(prop(
                "from",
                TypeRef::named_nn(DATETIME),
                "Start of the first bucket.",
            ))
            .field(prop(
                "to",
                TypeRef::named_nn(DATETIME),
                "End of the last bucket (the current one, while it lasts).",
            ))
            .field(prop(
                "interval",
                TypeRef::named_nn("UsageInterval"),
                "What each point covers.",
            ))
            .field(prop(
                "series",
                TypeRef::named_nn_list_nn("UsageSeries"),
                "Each metric asked for as a whole, then each of its keys, the largest first.",
            )),
    );
    parts.query(usage());
}

fn enum_arg(ctx: &ResolverContext<'_>, name: &str) -> AppResult<Option<String>> {
    match ctx.args.get(name) {
        None => Ok(None),
        Some(v) if v.is_null() => Ok(None),
        Some(v) => v
            .enum_name()
            .map(|n| Some(n.to_string()))
            .map_err(|_| AppError::invalid(name, "expected an enum value")),
    }
}

fn span(ctx: &ResolverContext<'_>) -> AppResult<Span> {
    let range = enum_arg(ctx, "range")?;
    let from = opt_string(ctx, "from")?
        .map(|t| parse_datetime("from", &t))
        .transpose()?;
    let to = opt_string(ctx, "to")?
        .map(|t| parse_datetime("to", &t))
        .transpose()?;
    match (range, from, to) {
        (Some(range), None, None) => RANGES
            .iter()
            .find(|(name, _, _)| *name == range)
            .map(|(_, width, _)| Span::Last(*width))
            .ok_or_else(|| AppError::invalid("range", "unknown range")),
        (None, Some(from), to) => Ok(Span::Between { from, to }),
        (None, None, Some(_)) => Err(AppError::invalid("to", "`to` needs `from`")),
        _ => Err(AppError::invalid(
            "range",
            "give either `range`, or `from` (and optionally `to`)",
        )),
    }
}

fn interval(ctx: &ResolverContext<'_>) -> AppResult<Interval> {
    match enum_arg(ctx, "interval")?.as_deref() {
        Some("HOUR") => Ok(Interval::Hour),
        Some("DAY") => Ok(Interval::Day),
        _ => Err(AppError::invalid("interval", "expected HOUR or DAY")),
    }
}

fn metrics(ctx: &ResolverContext<'_>) -> AppResult<Vec<Metric>> {
    let Some(list) = ctx.args.get("metrics").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let list = list
        .list()
        .map_err(|_| AppError::invalid("metrics", "expected a list of UsageMetric"))?;
    list.iter()
        .map(|v| {
            v.enum_name()
                .ok()
                .and_then(Metric::from_graphql)
                .ok_or_else(|| AppError::invalid("metrics", "unknown metric"))
        })
        .collect()
}

fn series_value(report: &Report, series: &Series) -> Value {
    let points = report
        .times()
        .zip(&series.points)
        .map(|(time, value)| {
            object([
                ("time", datetime(time)),
                ("value", Value::from(*value as f64)),
            ])
        })
        .collect();
    object([
        ("metric", Value::Enum(Name::new(series.metric.graphql()))),
        (
            "key",
            series.key.as_deref().map_or(Value::Null, Value::from),
        ),
        ("total", Value::from(series.total as f64)),
        ("points", Value::List(points)),
    ])
}

fn report_value(report: &Report) -> Value {
    object([
        ("projectId", Value::from(report.project_id.as_str())),
        ("from", datetime(report.from)),
        ("to", datetime(report.to)),
        (
            "interval",
            Value::Enum(Name::new(match report.interval {
                Interval::Hour => "HOUR",
                Interval::Day => "DAY",
            })),
        ),
        (
            "series",
            Value::List(
                report
                    .series
                    .iter()
                    .map(|s| series_value(report, s))
                    .collect(),
            ),
        ),
    ])
}

fn usage() -> Field {
    Field::new("usage", TypeRef::named_nn("Usage"), |ctx| {
        FieldFuture::new(async move {
            let caller = caller(&ctx)?;
            let project = opt_string(&ctx, "projectId")?;
            let grant = caller.require_in::<UsageRead>(project.as_deref())?;
            let report = service::report(
                app(&ctx)?,
                &grant,
                span(&ctx)?,
                interval(&ctx)?,
                &metrics(&ctx)?,
            )
            .await?;
            Ok(Some(FieldValue::value(report_value(&report))))
        })
    })
    .description(format!(
        "A project's usage over a range, one point per interval (scope `usage.read`; another project than the addressed one needs `admin`). Give `range`, or `from` (and optionally `to`); at most {} points per series, else `USAGE_RANGE_TOO_LARGE`. Counts reach it within `NIMBUS_USAGE_FLUSH_SECS`; gauges (documents, files, storage bytes, users, sessions) within `NIMBUS_USAGE_SNAPSHOT_SECS`.",
        service::MAX_POINTS
    ))
    .argument(InputValue::new("projectId", TypeRef::named(TypeRef::ID)).description("The project; omitted: the addressed one."))
    .argument(InputValue::new("range", TypeRef::named("UsageRange")).description("A span ending now; or give `from`."))
    .argument(InputValue::new("from", TypeRef::named(DATETIME)).description("Start of a span (its bucket included); instead of `range`."))
    .argument(InputValue::new("to", TypeRef::named(DATETIME)).description("End of a span begun with `from`; omitted: now."))
    .argument(InputValue::new("interval", TypeRef::named_nn("UsageInterval")).description("What one point covers."))
    .argument(InputValue::new("metrics", TypeRef::named_nn_list("UsageMetric")).description("Only these metrics; omitted: all."))
}
