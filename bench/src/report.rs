//! Latency histograms, per-scenario outcomes, and their rendering as a table or JSON lines.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms hold: 60 s, in microseconds.
const MAX_US: u64 = 60_000_000;

/// A latency histogram in microseconds.
pub struct Latency {
    hist: Histogram<u64>,
    samples: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    pub fn new() -> Self {
        Self {
            hist: Histogram::<u64>::new_with_bounds(1, MAX_US, 3)
                .expect("static histogram bounds are valid"),
            samples: 0,
        }
    }

    pub fn record(&mut self, elapsed: Duration) {
        self.record_us(elapsed.as_micros() as u64);
    }

    pub fn record_us(&mut self, us: u64) {
        // Values outside the bounds are clamped rather than dropped.
        let _ = self.hist.record(us.clamp(1, MAX_US));
        self.samples += 1;
    }

    pub fn merge(&mut self, other: &Latency) {
        self.hist
            .add(&other.hist)
            .expect("histograms with the same bounds always add");
        self.samples += other.samples;
    }

    pub fn summary(&self) -> Option<LatencySummary> {
        if self.samples == 0 {
            return None;
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Some(LatencySummary {
            p50: ms(self.hist.value_at_quantile(0.50)),
            p90: ms(self.hist.value_at_quantile(0.90)),
            p99: ms(self.hist.value_at_quantile(0.99)),
            p999: ms(self.hist.value_at_quantile(0.999)),
            max: ms(self.hist.max()),
        })
    }
}

/// Latency quantiles in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct LatencySummary {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The result of one scenario run.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub scenario: String,
    pub mib_per_s: Option<f64>,
    pub records_per_s: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub p999_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub errors: u64,
    /// Scenario-specific numbers (ack latency of the latency scenario, RSS, ...).
    pub extra: BTreeMap<String, f64>,
    /// What the columns mean for this scenario.
    pub note: String,
}

impl Outcome {
    pub fn new(scenario: &str) -> Self {
        Self {
            scenario: scenario.to_owned(),
            mib_per_s: None,
            records_per_s: None,
            p50_ms: None,
            p90_ms: None,
            p99_ms: None,
            p999_ms: None,
            max_ms: None,
            errors: 0,
            extra: BTreeMap::new(),
            note: String::new(),
        }
    }

    /// Sets MiB/s and records/s from totals over `elapsed`.
    pub fn set_rates(&mut self, bytes: u64, records: u64, elapsed: Duration) {
        let secs = elapsed.as_secs_f64().max(1e-9);
        self.mib_per_s = Some(bytes as f64 / (1024.0 * 1024.0) / secs);
        self.records_per_s = Some(records as f64 / secs);
    }

    pub fn set_latency(&mut self, latency: &Latency) {
        if let Some(summary) = latency.summary() {
            self.p50_ms = Some(summary.p50);
            self.p90_ms = Some(summary.p90);
            self.p99_ms = Some(summary.p99);
            self.p999_ms = Some(summary.p999);
            self.max_ms = Some(summary.max);
        }
    }

    /// Adds `<prefix>_p50_ms` ... `<prefix>_max_ms` to the extras.
    pub fn add_latency_extra(&mut self, prefix: &str, latency: &Latency) {
        if let Some(summary) = latency.summary() {
            for (name, value) in [
                ("p50", summary.p50),
                ("p90", summary.p90),
                ("p99", summary.p99),
                ("p999", summary.p999),
                ("max", summary.max),
            ] {
                self.extra.insert(format!("{prefix}_{name}_ms"), value);
            }
        }
    }

    /// Every numeric metric, in display order, for the comparison.
    pub fn metrics(&self) -> Vec<(String, Option<f64>)> {
        let mut metrics = vec![
            ("mib_per_s".to_owned(), self.mib_per_s),
            ("records_per_s".to_owned(), self.records_per_s),
            ("p50_ms".to_owned(), self.p50_ms),
            ("p90_ms".to_owned(), self.p90_ms),
            ("p99_ms".to_owned(), self.p99_ms),
            ("p999_ms".to_owned(), self.p999_ms),
            ("max_ms".to_owned(), self.max_ms),
            ("errors".to_owned(), Some(self.errors as f64)),
        ];
        metrics.extend(
            self.extra
                .iter()
                .map(|(name, value)| (name.clone(), Some(*value))),
        );
        metrics
    }

    /// One line for stderr while a comparison runs.
    pub fn brief(&self) -> String {
        format!(
            "{}: {} MiB/s, {} records/s, p99 {} ms, errors {}",
            self.scenario,
            fmt_opt(self.mib_per_s, 2),
            fmt_opt(self.records_per_s, 0),
            fmt_opt(self.p99_ms, 2),
            self.errors
        )
    }
}

fn fmt_opt(value: Option<f64>, decimals: usize) -> String {
    match value {
        Some(value) => format!("{value:.decimals$}"),
        None => "-".to_owned(),
    }
}

/// Prints rows with the first column left-aligned and the others right-aligned.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|cell| cell.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.len());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            let width = widths.get(i).copied().unwrap_or(0);
            if i == 0 || (i + 1 == cells.len() && header.last() == Some(&"notes")) {
                out.push_str(&format!("{cell:<width$}"));
            } else {
                out.push_str(&format!("{cell:>width$}"));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    let dashes: Vec<String> = widths.iter().map(|width| "-".repeat(*width)).collect();
    line(dashes.iter().map(String::as_str).collect());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// One JSON object on one line.
pub fn print_json_line(outcome: &Outcome) {
    match serde_json::to_string(outcome) {
        Ok(line) => println!("{line}"),
        Err(err) => eprintln!(
            "cannot serialize the outcome of {}: {err}",
            outcome.scenario
        ),
    }
}

/// The final table of a single-endpoint run.
pub fn print_outcomes(outcomes: &[Outcome]) {
    let header = [
        "scenario",
        "MiB/s",
        "records/s",
        "p50",
        "p90",
        "p99",
        "p999",
        "max",
        "errors",
        "notes",
    ];
    let rows: Vec<Vec<String>> = outcomes
        .iter()
        .map(|outcome| {
            vec![
                outcome.scenario.clone(),
                fmt_opt(outcome.mib_per_s, 2),
                fmt_opt(outcome.records_per_s, 0),
                fmt_opt(outcome.p50_ms, 2),
                fmt_opt(outcome.p90_ms, 2),
                fmt_opt(outcome.p99_ms, 2),
                fmt_opt(outcome.p999_ms, 2),
                fmt_opt(outcome.max_ms, 2),
                outcome.errors.to_string(),
                outcome.note.clone(),
            ]
        })
        .collect();
    print_table(&header, &rows);
    println!("(latencies in ms)");
    for outcome in outcomes.iter().filter(|outcome| !outcome.extra.is_empty()) {
        let extras: Vec<String> = outcome
            .extra
            .iter()
            .map(|(name, value)| format!("{name} {value:.2}"))
            .collect();
        println!("{}: {}", outcome.scenario, extras.join(", "));
    }
}

fn median(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let mid = values.len() / 2;
    Some(if values.len() > 2 * mid {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    })
}

/// The median of `metric` over `runs`, ignoring runs where it is absent.
fn median_by(runs: &[&Outcome], metric: impl Fn(&Outcome) -> Option<f64>) -> Option<f64> {
    let mut values: Vec<f64> = runs.iter().filter_map(|run| metric(run)).collect();
    median(&mut values)
}

/// Scenario names in the order they first appear.
fn scenario_order(outcomes: &[(&'static str, Outcome)]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for (_, outcome) in outcomes {
        if !names.contains(&outcome.scenario) {
            names.push(outcome.scenario.clone());
        }
    }
    names
}

fn runs_of<'a>(
    outcomes: &'a [(&'static str, Outcome)],
    side: &str,
    scenario: &str,
) -> Vec<&'a Outcome> {
    outcomes
        .iter()
        .filter(|(s, o)| *s == side && o.scenario == scenario)
        .map(|(_, o)| o)
        .collect()
}

/// One outcome per scenario of `side`, each number the median over its rounds; errors are
/// summed, since any error in any round matters.
pub fn median_outcomes(outcomes: &[(&'static str, Outcome)], side: &str) -> Vec<Outcome> {
    let mut result = Vec::new();
    for scenario in scenario_order(outcomes) {
        let runs = runs_of(outcomes, side, &scenario);
        let Some(first) = runs.first() else {
            continue;
        };
        let mut merged = Outcome::new(&scenario);
        merged.mib_per_s = median_by(&runs, |o| o.mib_per_s);
        merged.records_per_s = median_by(&runs, |o| o.records_per_s);
        merged.p50_ms = median_by(&runs, |o| o.p50_ms);
        merged.p90_ms = median_by(&runs, |o| o.p90_ms);
        merged.p99_ms = median_by(&runs, |o| o.p99_ms);
        merged.p999_ms = median_by(&runs, |o| o.p999_ms);
        merged.max_ms = median_by(&runs, |o| o.max_ms);
        merged.errors = runs.iter().map(|o| o.errors).sum();
        for run in &runs {
            for name in run.extra.keys() {
                if !merged.extra.contains_key(name) {
                    if let Some(value) = median_by(&runs, |o| o.extra.get(name).copied()) {
                        merged.extra.insert(name.clone(), value);
                    }
                }
            }
        }
        merged.note = if runs.len() > 1 {
            format!("{} (median of {} rounds)", first.note, runs.len())
        } else {
            first.note.clone()
        };
        result.push(merged);
    }
    result
}

#[derive(Serialize)]
struct CompareLine<'a> {
    scenario: &'a str,
    metric: &'a str,
    rounds: usize,
    a: Option<f64>,
    b: Option<f64>,
    ratio: Option<f64>,
}

/// Per scenario and metric: the median over rounds for A and for B, and the ratio A/B.
/// `outcomes` holds `(side, outcome)` pairs with side "A" or "B".
pub fn print_comparison(outcomes: &[(&'static str, Outcome)], json: bool) {
    let scenarios = scenario_order(outcomes);
    let rounds = outcomes.iter().filter(|(side, _)| *side == "A").count() / scenarios.len().max(1);

    let mut rows = Vec::new();
    for scenario in &scenarios {
        let a_runs = runs_of(outcomes, "A", scenario);
        let b_runs = runs_of(outcomes, "B", scenario);
        // Metric names in the order the outcomes list them.
        let mut names: Vec<String> = Vec::new();
        for run in a_runs.iter().chain(&b_runs) {
            for (name, _) in run.metrics() {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        for name in &names {
            let metric = |o: &Outcome| {
                o.metrics()
                    .into_iter()
                    .find(|(n, _)| n == name)
                    .and_then(|(_, value)| value)
            };
            let a = median_by(&a_runs, metric);
            let b = median_by(&b_runs, metric);
            if a.is_none() && b.is_none() {
                continue;
            }
            let ratio = match (a, b) {
                (Some(a), Some(b)) if b != 0.0 => Some(a / b),
                _ => None,
            };
            if json {
                let line = CompareLine {
                    scenario,
                    metric: name,
                    rounds,
                    a,
                    b,
                    ratio,
                };
                match serde_json::to_string(&line) {
                    Ok(text) => println!("{text}"),
                    Err(err) => eprintln!("cannot serialize a comparison line: {err}"),
                }
            } else {
                let decimals = if name == "records_per_s" { 0 } else { 2 };
                rows.push(vec![
                    scenario.clone(),
                    name.clone(),
                    fmt_opt(a, decimals),
                    fmt_opt(b, decimals),
                    fmt_opt(ratio, 3),
                ]);
            }
        }
    }
    if !json {
        println!("medians over {rounds} round(s); A/B > 1 means A is higher");
        print_table(&["scenario", "metric", "A", "B", "A/B"], &rows);
    }
}
