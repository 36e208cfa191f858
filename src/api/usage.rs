//! Usage metrics (API §3.8): `/v1/metrics`, `/v1/metrics/{basin}` and
//! `/v1/metrics/{basin}/{stream}`, built from the engine's per-minute counts
//! (`sluice_shards::usage`).
//!
//! Each set has one metric type: `active-basins` is a label of the basins with any
//! activity in the range; `account-ops` and `basin-ops` are one accumulation per operation
//! (account ops: the account op group, metrics requests included; basin ops: the basin and
//! stream groups but appends and reads, which have their own sets); `append-ops`,
//! `read-ops`, `append-throughput` and `read-throughput` are one accumulation each (ops
//! are batches appended or sent; throughput is metered bytes); `storage` is a gauge of the
//! metered bytes held now, present when the range reaches the current minute.

use std::collections::BTreeMap;
use std::rc::Rc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::tokens::{OpGroup, Operation};
use sluice_shards::usage::{Counter, UsageSums, DAY_SECS, HOUR_SECS, MINUTE_SECS};
use sluice_shards::Shard;

use super::access::Access;
use super::{ApiError, ApiResult, Body};

/// The longest range a request may span.
const SPAN_MAX_SECS: u64 = 90 * 24 * 3600;
/// How far past now a range may end.
const FUTURE_MAX_SECS: u64 = 60;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Interval {
    Minute,
    Hour,
    Day,
}

impl Interval {
    fn secs(self) -> u64 {
        match self {
            Interval::Minute => MINUTE_SECS,
            Interval::Hour => HOUR_SECS,
            Interval::Day => DAY_SECS,
        }
    }

    fn of_secs(secs: u64) -> Interval {
        match secs {
            MINUTE_SECS => Interval::Minute,
            HOUR_SECS => Interval::Hour,
            _ => Interval::Day,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Interval::Minute => "minute",
            Interval::Hour => "hour",
            Interval::Day => "day",
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct MetricsQuery<S> {
    pub set: S,
    #[serde(default)]
    pub start: Option<u32>,
    #[serde(default)]
    pub end: Option<u32>,
    #[serde(default)]
    pub interval: Option<Interval>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountSet {
    ActiveBasins,
    AccountOps,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BasinSet {
    Storage,
    AppendOps,
    ReadOps,
    ReadThroughput,
    AppendThroughput,
    BasinOps,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamSet {
    Storage,
}

/// A validated range: `start..=end` in epoch seconds.
#[derive(Debug, Clone, Copy)]
pub struct Range {
    start: u64,
    end: u64,
    now: u64,
}

impl Range {
    pub fn parse(start: Option<u32>, end: Option<u32>, now: u64) -> ApiResult<Range> {
        let invalid = |m: &str| Err(ApiError::Invalid(m.to_owned()));
        let (Some(start), Some(end)) = (start, end) else {
            return invalid("Both `start` and `end` are required");
        };
        let (start, end) = (u64::from(start), u64::from(end));
        if start > end {
            return invalid("`start` must not be after `end`");
        }
        if end > now + FUTURE_MAX_SECS {
            return invalid("`end` must not be more than a minute in the future");
        }
        if end - start > SPAN_MAX_SECS {
            return invalid("The time range must not exceed 90 days");
        }
        Ok(Range { start, end, now })
    }

    /// The counts of `basin` (`None`: every basin, and operations on none) that `wanted`
    /// picks, in the
    /// buckets of `interval` that overlap the range, or of a wider interval when the range
    /// has more buckets than one query sums (the engine's `QUERY_BUCKETS_MAX`).
    async fn sums(
        &self,
        shard: &Rc<Shard>,
        basin: Option<&str>,
        interval: Interval,
        wanted: impl Fn(Counter) -> bool,
    ) -> ApiResult<(Interval, UsageSums)> {
        let from = self.start / interval.secs() * interval.secs();
        let (width, sums) = shard
            .usage_sums(basin, from, self.end + 1, interval.secs(), wanted)
            .await?;
        Ok((Interval::of_secs(width), sums))
    }

    /// Whether the range reaches the current minute, where a gauge has its one point.
    fn reaches_now(&self) -> Option<u64> {
        let minute = self.now / MINUTE_SECS * MINUTE_SECS;
        (self.start <= self.now && self.end + MINUTE_SECS > self.now).then_some(minute)
    }
}

fn now_secs(shard: &Shard) -> u64 {
    shard.clock().now_millis() / 1000
}

pub async fn account(
    shard: &Rc<Shard>,
    access: &Access,
    req: &Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let query: MetricsQuery<AccountSet> = super::query(req.uri().query())?;
    access.allow(Operation::AccountMetrics)?;
    let range = Range::parse(query.start, query.end, now_secs(shard))?;
    let values = match query.set {
        AccountSet::ActiveBasins => {
            let from = range.start / MINUTE_SECS * MINUTE_SECS;
            let basins: Vec<String> = shard
                .active_basins(from, range.end + 1)
                .await?
                .into_iter()
                .filter(|b| access.may_see_basin(b))
                .collect();
            vec![json!({ "label": { "name": "active-basins", "values": basins } })]
        }
        AccountSet::AccountOps => {
            let interval = query.interval.unwrap_or(Interval::Hour);
            let wanted = |op: Operation| op.group().0 == OpGroup::Account;
            let (interval, sums) = range
                .sums(shard, None, interval, op_counter(wanted))
                .await?;
            per_operation(&sums, interval)
        }
    };
    Ok(respond(req, values))
}

pub async fn basin(
    shard: &Rc<Shard>,
    access: &Access,
    raw_basin: &str,
    req: &Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let basin = basin_segment(raw_basin)?;
    let query: MetricsQuery<BasinSet> = super::query(req.uri().query())?;
    access.basin(Operation::BasinMetrics, &basin)?;
    let range = Range::parse(query.start, query.end, now_secs(shard))?;
    let minutely = query.interval.unwrap_or(Interval::Minute);
    let series = |name, counter, unit| Series {
        name,
        counter,
        unit,
        interval: minutely,
    };
    let values = match query.set {
        BasinSet::Storage => {
            let total = shard.basin_stored_bytes(&basin).await?;
            vec![gauge("storage", range.reaches_now(), total)]
        }
        BasinSet::AppendOps => {
            let s = series("append-ops", Counter::Op(Operation::Append), "operations");
            s.of(shard, range, &basin).await?
        }
        BasinSet::ReadOps => {
            let s = series("read-ops", Counter::Op(Operation::Read), "operations");
            s.of(shard, range, &basin).await?
        }
        BasinSet::AppendThroughput => {
            let s = series("append-throughput", Counter::AppendBytes, "bytes");
            s.of(shard, range, &basin).await?
        }
        BasinSet::ReadThroughput => {
            let s = series("read-throughput", Counter::ReadBytes, "bytes");
            s.of(shard, range, &basin).await?
        }
        BasinSet::BasinOps => {
            let interval = query.interval.unwrap_or(Interval::Hour);
            let wanted = |op: Operation| {
                op.group().0 != OpGroup::Account
                    && !matches!(op, Operation::Append | Operation::Read)
            };
            let (interval, sums) = range
                .sums(shard, Some(basin.as_str()), interval, op_counter(wanted))
                .await?;
            per_operation(&sums, interval)
        }
    };
    Ok(respond(req, values))
}

pub async fn stream(
    shard: &Rc<Shard>,
    access: &Access,
    raw_basin: &str,
    raw_stream: &str,
    req: &Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let basin = basin_segment(raw_basin)?;
    let stream = super::path_segment(raw_stream)?
        .parse::<StreamName>()
        .map_err(|e| ApiError::BadPath(format!("Invalid URL: {e}")))?;
    let query: MetricsQuery<StreamSet> = super::query(req.uri().query())?;
    let stream = access.stream(Operation::StreamMetrics, &basin, stream)?;
    let range = Range::parse(query.start, query.end, now_secs(shard))?;
    let StreamSet::Storage = query.set;
    let bytes = shard.stream_stored_bytes(basin, stream).await?;
    Ok(respond(
        req,
        vec![gauge("storage", range.reaches_now(), bytes)],
    ))
}

/// A set of one accumulation of one counter.
struct Series {
    name: &'static str,
    counter: Counter,
    unit: &'static str,
    interval: Interval,
}

impl Series {
    async fn of(
        &self,
        shard: &Rc<Shard>,
        range: Range,
        basin: &BasinName,
    ) -> ApiResult<Vec<Value>> {
        let (interval, sums) = range
            .sums(shard, Some(basin.as_str()), self.interval, |c| {
                c == self.counter
            })
            .await?;
        let points: Vec<(u64, u64)> = sums.into_iter().map(|((at, _), n)| (at, n)).collect();
        Ok(vec![accumulation(self.name, self.unit, interval, &points)])
    }
}

fn basin_segment(raw: &str) -> ApiResult<BasinName> {
    super::path_segment(raw)?
        .parse()
        .map_err(|e| ApiError::BadPath(format!("Invalid URL: {e}")))
}

fn respond(req: &Request<Incoming>, values: Vec<Value>) -> Response<Body> {
    super::json(
        req.headers(),
        StatusCode::OK,
        &json!({ "values": values }),
        None,
    )
}

/// A counter filter that picks the operations `wanted` picks.
fn op_counter(wanted: impl Fn(Operation) -> bool) -> impl Fn(Counter) -> bool {
    move |counter| matches!(counter, Counter::Op(op) if wanted(op))
}

/// One accumulation per operation counted, in time order.
fn per_operation(sums: &UsageSums, interval: Interval) -> Vec<Value> {
    let mut by_op: BTreeMap<Operation, Vec<(u64, u64)>> = BTreeMap::new();
    for (&(at, counter), &n) in sums {
        if let Counter::Op(op) = counter {
            by_op.entry(op).or_default().push((at, n));
        }
    }
    by_op
        .into_iter()
        .map(|(op, mut points)| {
            points.sort_unstable();
            accumulation(op.as_str(), "operations", interval, &points)
        })
        .collect()
}

fn accumulation(name: &str, unit: &str, interval: Interval, points: &[(u64, u64)]) -> Value {
    json!({ "accumulation": {
        "name": name,
        "unit": unit,
        "interval": interval.as_str(),
        "values": points,
    } })
}

fn gauge(name: &str, at: Option<u64>, bytes: u64) -> Value {
    let values: Vec<(u64, u64)> = at.map(|at| (at, bytes)).into_iter().collect();
    json!({ "gauge": { "name": name, "unit": "bytes", "values": values } })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let now = 1_800_000_000;
        let ok = |s: u32, e: u32| Range::parse(Some(s), Some(e), now).is_ok();
        assert!(ok(0, 3600), "old ranges are fine");
        assert!(
            ok(now as u32 - 3600, now as u32 + 60),
            "up to a minute ahead"
        );
        assert!(!ok(now as u32 - 3600, now as u32 + 61));
        assert!(!ok(now as u32, now as u32 - 1), "start after end");
        assert!(ok(now as u32 - 90 * 86_400, now as u32), "exactly 90 days");
        assert!(!ok(now as u32 - 90 * 86_400 - 1, now as u32));
        assert!(Range::parse(None, Some(1), now).is_err());
        assert!(Range::parse(Some(1), None, now).is_err());
    }
}
