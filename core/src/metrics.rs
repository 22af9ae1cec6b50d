//! Metrics: per-shard recording, merged only when `/metrics` is scraped.
//!
//! Owns: each shard's [`ShardMetrics`] (`!Send`, `RefCell`, written only by its shard, so the
//! request path never touches another core's memory) and the Prometheus text rendering of a set of
//! [`ShardSnapshot`]s. A scrape asks every shard for a snapshot over the cross-shard rings (see
//! the binary's snapshot message), merges the latency histograms (`hdrhistogram` adds exactly), and
//! renders.
//!
//! Invariants: the request-count map is bounded — keys are (service, status) with `service` from the
//! fixed set of labels the registry was made with (the services table) and status in 100..=599 — and each latency histogram has a fixed bound (1 µs .. 60 s,
//! 3 significant digits; larger values are clamped), so recording never grows memory without limit.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Duration;

use hdrhistogram::Histogram;

const LATENCY_MAX_MICROS: u64 = 60_000_000;

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_MAX_MICROS, 3).expect("static histogram bounds are valid")
}

/// One shard's counters. Lives on its shard; never shared.
pub struct ShardMetrics {
    /// The labels a request may be counted under; a fixed set keeps label cardinality bounded.
    labels: &'static [&'static str],
    requests: RefCell<BTreeMap<(&'static str, u16), u64>>,
    latency: RefCell<BTreeMap<&'static str, Histogram<u64>>>,
    /// Durations of services' own operations (an image transform), by operation name.
    durations: RefCell<BTreeMap<&'static str, Histogram<u64>>>,
}

impl ShardMetrics {
    pub fn new(labels: &'static [&'static str]) -> ShardMetrics {
        ShardMetrics {
            labels,
            requests: RefCell::new(BTreeMap::new()),
            latency: RefCell::new(BTreeMap::new()),
            durations: RefCell::new(BTreeMap::new()),
        }
    }

    /// Records one finished request. `service` must be one of the registry's labels.
    pub fn record(&self, service: &'static str, status: u16, elapsed: Duration) {
        debug_assert!(self.labels.contains(&service), "unknown service label {service}");
        debug_assert!((100..=599).contains(&status), "status {status}");
        *self.requests.borrow_mut().entry((service, status)).or_insert(0) += 1;
        let micros = (elapsed.as_micros() as u64).clamp(1, LATENCY_MAX_MICROS);
        self.latency.borrow_mut().entry(service).or_insert_with(new_histogram).saturating_record(micros);
    }

    /// Records how long one of a service's own operations took. `operation` is a constant of the
    /// calling code (`"storage_transform"`), never request data, so the series stay bounded.
    pub fn record_duration(&self, operation: &'static str, elapsed: Duration) {
        debug_assert!(operation.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "operation {operation}");
        let micros = (elapsed.as_micros() as u64).clamp(1, LATENCY_MAX_MICROS);
        self.durations.borrow_mut().entry(operation).or_insert_with(new_histogram).saturating_record(micros);
    }

    /// A copy of this shard's counters, to send to the scraping shard.
    pub fn snapshot(&self, gauges: ShardGauges) -> ShardSnapshot {
        ShardSnapshot {
            requests: self.requests.borrow().iter().map(|(k, v)| (*k, *v)).collect(),
            latency: self.latency.borrow().iter().map(|(k, h)| (*k, h.clone())).collect(),
            durations: self.durations.borrow().iter().map(|(k, h)| (*k, h.clone())).collect(),
            gauges,
        }
    }
}

/// Point-in-time gauges a shard reports with its snapshot.
#[derive(Debug, Clone, Default)]
pub struct ShardGauges {
    pub shard: usize,
    pub driver: String,
    /// This shard's PostgreSQL lanes, by name: connections, batches in flight and queued,
    /// cancels, results refused.
    pub pg: Vec<(&'static str, madbase_pg::PoolStats)>,
    pub jwt_cache_entries: usize,
    /// (producer, lane, depth, capacity) for each ring this shard consumes.
    pub rings: Vec<(String, &'static str, usize, usize)>,
    pub blocking_queued: usize,
    /// This shard's HTTP limits at work: bodies held, refusals, timeouts.
    pub http: madbase_http::HttpStats,
    /// The services' own series for this shard (Realtime's connections, channels, drops).
    pub services: Vec<ServiceSeries>,
    /// Services' series with labels of their own (a function's name), already in Prometheus
    /// text with this shard's `shard` label, under their `# HELP`/`# TYPE` block: rendered as
    /// one block per distinct header. Bounded by what the service deploys.
    pub labeled: Vec<(&'static str, String)>,
}

/// One value of a service's own series: rendered with a `shard` label, or without one when it
/// is process-wide (passed to [`render`] directly).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSeries {
    pub name: &'static str,
    /// `gauge` or `counter`.
    pub kind: &'static str,
    pub help: &'static str,
    pub value: u64,
}

/// What one shard sends back to a scrape. `Send`: it crosses cores.
#[derive(Debug, Clone)]
pub struct ShardSnapshot {
    pub requests: Vec<((&'static str, u16), u64)>,
    pub latency: Vec<(&'static str, Histogram<u64>)>,
    pub durations: Vec<(&'static str, Histogram<u64>)>,
    pub gauges: ShardGauges,
}

/// One value per shard: (name, `gauge` or `counter`, help, how to read it).
type Series = (&'static str, &'static str, &'static str, fn(&ShardGauges) -> u64);

const PER_SHARD_SERIES: &[Series] = &[
    ("madbase_jwt_cache_entries", "gauge", "Verified tokens cached.", |g| g.jwt_cache_entries as u64),
    ("madbase_blocking_pool_queued", "gauge", "Jobs queued on the blocking pool (process-wide).", |g| {
        g.blocking_queued as u64
    }),
    ("madbase_http_body_bytes_held", "gauge", "Request-body bytes held while collected.", |g| g.http.body_bytes_held),
    (
        "madbase_http_body_refused_busy_total",
        "counter",
        "Bodies refused (503): the shard's body budget was in use.",
        |g| g.http.body_refused_busy,
    ),
    ("madbase_http_body_refused_too_large_total", "counter", "Bodies refused as too large (413).", |g| {
        g.http.body_refused_too_large
    }),
    ("madbase_http_body_timeouts_total", "counter", "Bodies that did not arrive in time (408).", |g| {
        g.http.body_timeouts
    }),
    ("madbase_http_header_timeouts_total", "counter", "Request heads that did not arrive in time (408).", |g| {
        g.http.header_timeouts
    }),
    ("madbase_http_bad_targets_total", "counter", "Requests refused for a malformed request target (400).", |g| {
        g.http.bad_targets
    }),
    ("madbase_ws_send_queued_bytes", "gauge", "Bytes waiting in this shard's WebSocket send queues.", |g| {
        g.http.ws_send_queued_bytes
    }),
    ("madbase_ws_slow_consumer_closes_total", "counter", "WebSockets closed (1008): their send queue was full.", |g| {
        g.http.ws_slow_consumer_closes
    }),
    (
        "madbase_ws_shard_queue_closes_total",
        "counter",
        "WebSockets closed (1008): the shard's send queues were full.",
        |g| g.http.ws_shard_queue_closes,
    ),
];

/// One value per shard and PostgreSQL lane: (name, `gauge` or `counter`, help, how to read it).
type LaneSeries = (&'static str, &'static str, &'static str, fn(&madbase_pg::PoolStats) -> u64);

const PER_LANE_SERIES: &[LaneSeries] = &[
    (
        "madbase_pg_moved_off_stalled_total",
        "counter",
        "Queued batches moved to another connection because their connection's head statement stalled.",
        |p| p.moved_off_stalled,
    ),
    ("madbase_pg_connections_up", "gauge", "PostgreSQL connections currently usable.", |p| p.connections_up as u64),
    ("madbase_pg_connections_configured", "gauge", "PostgreSQL connections configured.", |p| p.connections as u64),
    ("madbase_pg_in_flight", "gauge", "Batches sent to PostgreSQL and not yet answered.", |p| p.in_flight as u64),
    ("madbase_pg_queued", "gauge", "Batches waiting for a PostgreSQL connection.", |p| p.queued as u64),
    ("madbase_pg_cancels_sent_total", "counter", "CancelRequests sent for batches whose caller went away.", |p| {
        p.cancels_sent
    }),
    (
        "madbase_pg_retried_after_stray_cancel_total",
        "counter",
        "Batches re-run after a cancel meant for another.",
        |p| p.retried_after_stray_cancel,
    ),
    ("madbase_pg_results_too_large_total", "counter", "Results refused past [pg] max_result_bytes.", |p| {
        p.results_too_large
    }),
];

/// Renders the merged snapshots, the process-wide count of log lines dropped and the services'
/// process-wide series, as Prometheus text exposition format 0.0.4.
pub fn render(snapshots: &[ShardSnapshot], log_lines_dropped: u64, process: &[ServiceSeries]) -> String {
    let mut out = String::with_capacity(4096);
    let mut requests: BTreeMap<(&'static str, u16), u64> = BTreeMap::new();
    let mut latency: BTreeMap<&'static str, Histogram<u64>> = BTreeMap::new();
    let mut durations: BTreeMap<&'static str, Histogram<u64>> = BTreeMap::new();
    for snap in snapshots {
        for (key, n) in &snap.requests {
            *requests.entry(*key).or_insert(0) += n;
        }
        merge_histograms(&mut latency, &snap.latency);
        merge_histograms(&mut durations, &snap.durations);
    }

    let _ = writeln!(out, "# HELP madbase_shards Number of shards (one per core).");
    let _ = writeln!(out, "# TYPE madbase_shards gauge");
    let _ = writeln!(out, "madbase_shards {}", snapshots.len());
    let _ = writeln!(out, "# HELP madbase_shard_driver I/O driver each shard runs on (1 = this driver).");
    let _ = writeln!(out, "# TYPE madbase_shard_driver gauge");
    for s in snapshots {
        let _ = writeln!(out, "madbase_shard_driver{{shard=\"{}\",driver=\"{}\"}} 1", s.gauges.shard, s.gauges.driver);
    }

    let _ = writeln!(out, "# HELP madbase_http_requests_total Requests answered, by service and status.");
    let _ = writeln!(out, "# TYPE madbase_http_requests_total counter");
    for ((service, status), n) in &requests {
        let _ = writeln!(out, "madbase_http_requests_total{{service=\"{service}\",status=\"{status}\"}} {n}");
    }

    let _ = writeln!(
        out,
        "# HELP madbase_http_request_duration_seconds Request latency (handler time), merged across shards."
    );
    let _ = writeln!(out, "# TYPE madbase_http_request_duration_seconds summary");
    render_summary(&mut out, "madbase_http_request_duration_seconds", "service", &latency);
    let _ = writeln!(
        out,
        "# HELP madbase_operation_duration_seconds Services' own operations (an image transform), merged across shards."
    );
    let _ = writeln!(out, "# TYPE madbase_operation_duration_seconds summary");
    render_summary(&mut out, "madbase_operation_duration_seconds", "operation", &durations);

    for (name, kind, help, get) in PER_SHARD_SERIES {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in snapshots {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", s.gauges.shard, get(&s.gauges));
        }
    }
    for (name, kind, help, get) in PER_LANE_SERIES {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in snapshots {
            for (lane, stats) in &s.gauges.pg {
                let _ = writeln!(out, "{name}{{shard=\"{}\",lane=\"{lane}\"}} {}", s.gauges.shard, get(stats));
            }
        }
    }
    render_service_series(&mut out, snapshots);
    render_labeled_series(&mut out, snapshots);
    for series in process {
        let _ = writeln!(out, "# HELP {} {}", series.name, series.help);
        let _ = writeln!(out, "# TYPE {} {}", series.name, series.kind);
        let _ = writeln!(out, "{} {}", series.name, series.value);
    }
    let _ = writeln!(out, "# HELP madbase_log_lines_dropped_total Log lines dropped because the log sink fell behind.");
    let _ = writeln!(out, "# TYPE madbase_log_lines_dropped_total counter");
    let _ = writeln!(out, "madbase_log_lines_dropped_total {log_lines_dropped}");
    let _ = writeln!(out, "# HELP madbase_ring_depth Messages waiting in a cross-shard ring.");
    let _ = writeln!(out, "# TYPE madbase_ring_depth gauge");
    for s in snapshots {
        for (ring, lane, depth, _) in &s.gauges.rings {
            let _ = writeln!(
                out,
                "madbase_ring_depth{{shard=\"{}\",from=\"{ring}\",lane=\"{lane}\"}} {depth}",
                s.gauges.shard
            );
        }
    }
    let _ = writeln!(out, "# HELP madbase_ring_capacity Capacity of a cross-shard ring.");
    let _ = writeln!(out, "# TYPE madbase_ring_capacity gauge");
    for s in snapshots {
        for (ring, lane, _, capacity) in &s.gauges.rings {
            let _ = writeln!(
                out,
                "madbase_ring_capacity{{shard=\"{}\",from=\"{ring}\",lane=\"{lane}\"}} {capacity}",
                s.gauges.shard
            );
        }
    }
    out
}

/// Adds each shard's histograms into `merged`, by name.
fn merge_histograms(merged: &mut BTreeMap<&'static str, Histogram<u64>>, from: &[(&'static str, Histogram<u64>)]) {
    for (name, h) in from {
        let into = merged.entry(name).or_insert_with(new_histogram);
        // Same bounds on every shard, so adding cannot fail; clamp defensively anyway.
        if into.add(h).is_err() {
            for v in h.iter_recorded() {
                into.saturating_record_n(v.value_iterated_to(), v.count_at_value());
            }
        }
    }
}

/// Quantiles, sum and count of each histogram in seconds, labelled `label="<name>"`.
fn render_summary(out: &mut String, metric: &str, label: &str, histograms: &BTreeMap<&'static str, Histogram<u64>>) {
    for (name, h) in histograms {
        for q in [0.5, 0.9, 0.99, 0.999] {
            let v = h.value_at_quantile(q) as f64 / 1e6;
            let _ = writeln!(out, "{metric}{{{label}=\"{name}\",quantile=\"{q}\"}} {v}");
        }
        let sum: f64 =
            h.iter_recorded().map(|v| v.value_iterated_to() as f64 * v.count_at_value() as f64).sum::<f64>() / 1e6;
        let _ = writeln!(out, "{metric}_sum{{{label}=\"{name}\"}} {sum}");
        let _ = writeln!(out, "{metric}_count{{{label}=\"{name}\"}} {}", h.len());
    }
}

/// The services' per-shard series, each name once (in the order the first shard lists them).
fn render_service_series(out: &mut String, snapshots: &[ShardSnapshot]) {
    let mut names: Vec<&ServiceSeries> = Vec::new();
    for s in snapshots {
        for series in &s.gauges.services {
            if names.iter().all(|n| n.name != series.name) {
                names.push(series);
            }
        }
    }
    for head in names {
        let _ = writeln!(out, "# HELP {} {}", head.name, head.help);
        let _ = writeln!(out, "# TYPE {} {}", head.name, head.kind);
        for s in snapshots {
            for series in s.gauges.services.iter().filter(|x| x.name == head.name) {
                let _ = writeln!(out, "{}{{shard=\"{}\"}} {}", head.name, s.gauges.shard, series.value);
            }
        }
    }
}

/// The services' labelled series: each header once, then every shard's lines under it.
fn render_labeled_series(out: &mut String, snapshots: &[ShardSnapshot]) {
    let mut headers: Vec<&'static str> = Vec::new();
    for s in snapshots {
        for (header, _) in &s.gauges.labeled {
            if !headers.contains(header) {
                headers.push(header);
            }
        }
    }
    for header in headers {
        out.push_str(header);
        for s in snapshots {
            for (_, lines) in s.gauges.labeled.iter().filter(|(h, _)| *h == header) {
                out.push_str(lines);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_durations_merge_into_one_summary() {
        let a = ShardMetrics::new(&["storage"]);
        let b = ShardMetrics::new(&["storage"]);
        a.record_duration("storage_transform", Duration::from_millis(30));
        b.record_duration("storage_transform", Duration::from_millis(40));
        let shard = |n| ShardGauges { shard: n, ..Default::default() };
        let text = render(&[a.snapshot(shard(0)), b.snapshot(shard(1))], 0, &[]);
        assert!(text.contains("# TYPE madbase_operation_duration_seconds summary"), "{text}");
        assert!(text.contains("madbase_operation_duration_seconds_count{operation=\"storage_transform\"} 2"), "{text}");
        let sum = text
            .lines()
            .find_map(|l| l.strip_prefix("madbase_operation_duration_seconds_sum{operation=\"storage_transform\"} "))
            .and_then(|v| v.parse::<f64>().ok());
        assert!(sum.is_some_and(|s| (s - 0.07).abs() < 0.001), "{text}");
    }

    #[test]
    fn merges_counts_and_quantiles_across_shards() {
        let a = ShardMetrics::new(&["rest", "health"]);
        let b = ShardMetrics::new(&["rest", "health"]);
        for _ in 0..99 {
            a.record("rest", 200, Duration::from_micros(100));
        }
        b.record("rest", 200, Duration::from_secs(2));
        b.record("health", 503, Duration::from_micros(5));
        let text = render(
            &[
                a.snapshot(ShardGauges {
                    shard: 0,
                    driver: "io_uring".into(),
                    services: vec![ServiceSeries { name: "madbase_x", kind: "gauge", help: "X.", value: 3 }],
                    ..Default::default()
                }),
                b.snapshot(ShardGauges {
                    shard: 1,
                    driver: "io_uring".into(),
                    labeled: vec![("# TYPE madbase_z counter\n", "madbase_z{f=\"a\",shard=\"1\"} 2\n".into())],
                    ..Default::default()
                }),
            ],
            0,
            &[ServiceSeries { name: "madbase_y_total", kind: "counter", help: "Y.", value: 7 }],
        );
        assert!(text.contains("# TYPE madbase_z counter\nmadbase_z{f=\"a\",shard=\"1\"} 2\n"), "{text}");
        assert!(text.contains("# TYPE madbase_x gauge\nmadbase_x{shard=\"0\"} 3\n"), "{text}");
        assert!(text.contains("madbase_y_total 7\n"), "{text}");
        assert!(text.contains("madbase_shards 2\n"), "{text}");
        assert!(text.contains("madbase_http_requests_total{service=\"rest\",status=\"200\"} 100\n"));
        assert!(text.contains("madbase_http_requests_total{service=\"health\",status=\"503\"} 1\n"));
        assert!(text.contains("madbase_http_request_duration_seconds_count{service=\"rest\"} 100\n"));
        // 99 of 100 samples are 100 µs; the slow one shows only above the 99th percentile.
        assert!(
            text.contains("madbase_http_request_duration_seconds{service=\"rest\",quantile=\"0.5\"} 0.0001"),
            "{text}"
        );
        assert!(text.contains("madbase_shard_driver{shard=\"1\",driver=\"io_uring\"} 1"));
    }
}
