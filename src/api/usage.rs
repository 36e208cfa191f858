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

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{json, Value};
use sluice_shards::names::{BasinName, StreamName};
use sluice_shards::tokens::{OpGroup, Operation};
use sluice_shards::usage::{Counter, UsageRow, MINUTE_SECS};
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
            Interval::Hour => 3600,
            Interval::Day => 86_400,
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

    /// The counts of the buckets of `interval` that overlap the range.
    async fn rows(&self, shard: &Rc<Shard>, interval: Interval) -> ApiResult<Vec<UsageRow>> {
        let from = self.start / interval.secs() * interval.secs();
        Ok(shard.usage_rows(from, self.end + 1).await?)
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
            let rows = range.rows(shard, Interval::Minute).await?;
            let basins: BTreeSet<&str> = rows
                .iter()
                .filter(|r| !r.basin.is_empty() && access.may_see_basin(&r.basin))
                .map(|r| r.basin.as_str())
                .collect();
            vec![json!({ "label": { "name": "active-basins", "values": basins } })]
        }
        AccountSet::AccountOps => {
            let interval = query.interval.unwrap_or(Interval::Hour);
            let rows = range.rows(shard, interval).await?;
            per_operation(&rows, interval, |op| op.group().0 == OpGroup::Account)
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
            let streams = shard.basin_stored_bytes(&basin).await?;
            let total: u64 = streams.iter().map(|(_, bytes)| bytes).sum();
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
            let rows: Vec<UsageRow> = range
                .rows(shard, interval)
                .await?
                .into_iter()
                .filter(|r| r.basin == basin.as_str())
                .collect();
            per_operation(&rows, interval, |op| {
                op.group().0 != OpGroup::Account
                    && !matches!(op, Operation::Append | Operation::Read)
            })
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
        let rows = range.rows(shard, self.interval).await?;
        let points = buckets(
            rows.iter()
                .filter(|r| r.basin == basin.as_str() && r.counter == self.counter),
            self.interval,
        );
        Ok(vec![accumulation(
            self.name,
            self.unit,
            self.interval,
            &points,
        )])
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

/// Sums by bucket start, in time order.
fn buckets<'a>(rows: impl Iterator<Item = &'a UsageRow>, interval: Interval) -> Vec<(u64, u64)> {
    let mut sums = BTreeMap::new();
    for row in rows {
        let at = row.minute_secs / interval.secs() * interval.secs();
        *sums.entry(at).or_insert(0u64) += row.count;
    }
    sums.into_iter().collect()
}

/// One accumulation per operation that `wanted` selects and that was counted.
fn per_operation(
    rows: &[UsageRow],
    interval: Interval,
    wanted: impl Fn(Operation) -> bool,
) -> Vec<Value> {
    let mut by_op: BTreeMap<Operation, Vec<&UsageRow>> = BTreeMap::new();
    for row in rows {
        if let Counter::Op(op) = row.counter {
            if wanted(op) {
                by_op.entry(op).or_default().push(row);
            }
        }
    }
    by_op
        .into_iter()
        .map(|(op, rows)| {
            let points = buckets(rows.into_iter(), interval);
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
