//! The bench's table row: one Markdown line (or a human table) from the
//! report's JSON.

use serde_json::{Map, Value};

use super::Options;

pub(super) fn render(o: &Options, j: &Map<String, Value>) -> String {
    let get = |k: &str| j.get(k).cloned().unwrap_or(Value::Null);
    let lat = |k: &str| j["latency_us"].get(k).cloned().unwrap_or(Value::Null);
    let int = |v: Value| match v.as_f64() {
        Some(f) => group(f as u64),
        None => "–".into(),
    };
    let pct = |v: Value| v.as_f64().map_or("–".into(), |f| format!("{f:.0} %"));
    let rss = match get("server_rss_kib").as_u64() {
        Some(k) => format!("{:.1} MiB", k as f64 / 1024.0),
        None => "–".into(),
    };
    let errors = get("errors")
        .as_object()
        .filter(|m| !m.is_empty())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}×{v}"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|| "none".into());
    let mut notes = Vec::new();
    if let Some(per) = get("server_bytes_per_connection").as_u64() {
        notes.push(format!("{per} B/conn"));
    }
    if let Some(open) = get("open_s").as_f64() {
        notes.push(format!("opened in {open:.2} s"));
    }
    if let Some(d) = j.get("deliver_all_ms") {
        notes.push(format!(
            "publish→all p50 {} ms, max {} ms",
            d["p50"], d["max"]
        ));
    }
    if let Some(s) = j.get("stalled") {
        let outcome = s["outcomes"]
            .as_array()
            .and_then(|a| a.first())
            .map(|o| match o["close_code"].as_u64() {
                Some(code) => format!("closed {code}"),
                None if o["closed_by_server"] == true => "dropped by server".into(),
                None => "still open".into(),
            })
            .unwrap_or_default();
        notes.push(format!(
            "stalled reader: {outcome} after {} events",
            s["events_received"]
        ));
    }
    let integrity = format!(
        "{} / {} / {}",
        int(get("lost")),
        int(get("duplicates")),
        int(get("order_violations"))
    );
    if let Some(label) = &o.markdown {
        return format!(
            "| {label} | {} | {} | {integrity} | {} / {} / {} / {} / {} | {errors} | {} | {} | {rss} | {} |\n",
            int(get("published_per_s")),
            int(get("delivered_per_s")),
            lat("p50"),
            lat("p90"),
            lat("p99"),
            lat("p99.9"),
            lat("max"),
            pct(get("bench_cpu_pct")),
            pct(get("server_cpu_pct")),
            notes.join("; "),
        );
    }
    let mut t = String::new();
    let mut row = |k: &str, v: String| t.push_str(&format!("  {k:<26} {v}\n"));
    row("published/s (acked)", int(get("published_per_s")));
    row("delivered events/s", int(get("delivered_per_s")));
    row(
        "expected / received",
        format!("{} / {}", int(get("expected")), int(get("received"))),
    );
    row("lost / dup / order", integrity);
    row(
        "latency µs p50/90/99/99.9",
        format!(
            "{} / {} / {} / {}",
            lat("p50"),
            lat("p90"),
            lat("p99"),
            lat("p99.9")
        ),
    );
    row("latency µs max", format!("{}", lat("max")));
    row("errors", errors);
    row("closed by server", int(get("server_closed")));
    row("bench CPU", pct(get("bench_cpu_pct")));
    row(
        "server CPU / RSS",
        format!("{} / {rss}", pct(get("server_cpu_pct"))),
    );
    for n in notes {
        row("", n);
    }
    t
}

/// 1234567 → "1 234 567".
pub(super) fn group(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}
