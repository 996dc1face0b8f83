//! Server-wide counters and their Prometheus text exposition (format 0.0.4).

use std::fmt::Write;

use crate::refusal::{LABELS, Refusal};

/// What the loop counts: connections, bytes and requests.
#[derive(Clone, Copy, Debug, Default)]
pub struct IoCounters {
    pub connections_accepted: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub http_requests: u64,
}

/// What the core counts: events and refusals.
#[derive(Debug, Default)]
pub struct Counters {
    pub published: u64,
    /// Event frames queued to subscribers.
    pub delivered: u64,
    pub dropped: u64,
    pub slow_consumer_disconnects: u64,
    rejected: [u64; LABELS.len()],
}

impl Counters {
    /// The count under a label of `pubsubd_rejected_total`.
    pub fn rejected_count(&self, label: &str) -> u64 {
        LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.rejected[i])
    }

    /// Counts a refusal under its label (refusals without one are counted elsewhere).
    pub fn reject(&mut self, why: &Refusal) {
        if let Some(i) = why.counter() {
            self.rejected[i] += 1;
        }
    }
}

/// Gauges read at scrape time.
pub struct Gauges {
    pub http_connections: usize,
    pub ws_connections: usize,
    pub subscriptions: usize,
    pub topics: usize,
    pub uptime_seconds: f64,
}

/// Renders every metric in the Prometheus text format.
pub fn render(
    c: &Counters,
    io: &IoCounters,
    g: &Gauges,
    redis: Option<&crate::engine::EngineStats>,
) -> String {
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "pubsubd_connections",
        "gauge",
        "Open client connections by kind.",
        &[
            ("{kind=\"http\"}", g.http_connections as f64),
            ("{kind=\"websocket\"}", g.ws_connections as f64),
        ],
    );
    metric(
        "pubsubd_connections_accepted_total",
        "counter",
        "Connections accepted since start.",
        &[("", io.connections_accepted as f64)],
    );
    metric(
        "pubsubd_subscriptions",
        "gauge",
        "Subscriptions held across all topics.",
        &[("", g.subscriptions as f64)],
    );
    metric(
        "pubsubd_topics",
        "gauge",
        "Topics that exist.",
        &[("", g.topics as f64)],
    );
    metric(
        "pubsubd_messages_published_total",
        "counter",
        "Events accepted from publishers.",
        &[("", c.published as f64)],
    );
    metric(
        "pubsubd_messages_delivered_total",
        "counter",
        "Events queued to subscribers.",
        &[("", c.delivered as f64)],
    );
    metric(
        "pubsubd_messages_dropped_total",
        "counter",
        "Events dropped by the drop-oldest overflow policy.",
        &[("", c.dropped as f64)],
    );
    metric(
        "pubsubd_slow_consumer_disconnects_total",
        "counter",
        "Connections closed because their outbound buffer overflowed.",
        &[("", c.slow_consumer_disconnects as f64)],
    );
    metric(
        "pubsubd_received_bytes_total",
        "counter",
        "Bytes read from client sockets.",
        &[("", io.bytes_in as f64)],
    );
    metric(
        "pubsubd_sent_bytes_total",
        "counter",
        "Bytes written to client sockets.",
        &[("", io.bytes_out as f64)],
    );
    metric(
        "pubsubd_http_requests_total",
        "counter",
        "HTTP requests parsed (REST and WebSocket handshakes).",
        &[("", io.http_requests as f64)],
    );
    let labels: Vec<String> = LABELS
        .iter()
        .map(|label| format!("{{reason=\"{label}\"}}"))
        .collect();
    let samples: Vec<(&str, f64)> = labels
        .iter()
        .zip(c.rejected)
        .map(|(l, n)| (l.as_str(), n as f64))
        .collect();
    metric(
        "pubsubd_rejected_total",
        "counter",
        "Requests, messages and connections refused, by reason.",
        &samples,
    );
    metric(
        "pubsubd_uptime_seconds",
        "gauge",
        "Seconds since the server started.",
        &[("", (g.uptime_seconds * 1000.0).round() / 1000.0)],
    );
    if let Some(r) = redis {
        metric(
            "pubsubd_redis_up",
            "gauge",
            "Cluster mode: 1 while the link to Redis is up.",
            &[("", if r.up { 1.0 } else { 0.0 })],
        );
        metric(
            "pubsubd_redis_reconnects_total",
            "counter",
            "Cluster mode: times the link to Redis came back after an outage.",
            &[("", r.reconnects as f64)],
        );
        metric(
            "pubsubd_redis_rtt_seconds",
            "gauge",
            "Cluster mode: round trip of the last publish through Redis.",
            &[("", r.rtt.as_secs_f64())],
        );
        metric(
            "pubsubd_redis_events_total",
            "counter",
            "Cluster mode: events sent to Redis (out) and received from it (in).",
            &[
                ("{direction=\"out\"}", r.events_out as f64),
                ("{direction=\"in\"}", r.events_in as f64),
            ],
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_help_type_and_samples() {
        let mut c = Counters {
            published: 3,
            ..Counters::default()
        };
        c.reject(&Refusal::BadRequest("x".into()));
        c.reject(&Refusal::BadRequest("y".into()));
        let g = Gauges {
            http_connections: 1,
            ws_connections: 2,
            subscriptions: 4,
            topics: 5,
            uptime_seconds: 1.5,
        };
        let text = render(&c, &IoCounters::default(), &g, None);
        assert!(text.contains(
            "# TYPE pubsubd_messages_published_total counter\npubsubd_messages_published_total 3\n"
        ));
        assert!(text.contains("pubsubd_connections{kind=\"websocket\"} 2\n"));
        assert!(text.contains("pubsubd_rejected_total{reason=\"bad_request\"} 2\n"));
        assert!(text.contains("pubsubd_uptime_seconds 1.5\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').unwrap();
            value.parse::<f64>().unwrap();
        }
    }
}
