//! `pubsubd bench` judged against servers whose behaviour is known: a mock
//! that drops, duplicates, reorders and refuses on purpose, and the real one.

mod common;

use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TIMEOUT, binary, start, start_with, stats, wait_child_within};
use serde_json::{Value, json};

/// Runs the bench binary; its JSON report, or a panic with its stderr.
fn bench(args: &[&str]) -> Value {
    let child = binary(&["bench"])
        .args(args)
        .spawn()
        .expect("the binary runs");
    let out = wait_child_within(child, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "bench {args:?} failed: {}",
        out.stderr
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("bench printed no JSON ({e}): {}", out.stderr))
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

// ---- a server that misbehaves on purpose ----

/// Of every ten publishes on a connection, the mock drops the 3rd, sends the
/// 5th twice, sends the 7th after the 8th, and answers the 9th with an error
/// (and does not deliver it).
fn misbehaving_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let subscribers: Arc<Mutex<Vec<Arc<Mutex<TcpStream>>>>> = Arc::default();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let subscribers = subscribers.clone();
            std::thread::spawn(move || serve(stream, &subscribers));
        }
    });
    addr
}

fn send_frame(to: &Mutex<TcpStream>, text: &str) {
    let frame = pubsubd::wire::frame::text_frame(text.as_bytes());
    let _ = to.lock().expect("lock").write_all(&frame);
}

fn serve(stream: TcpStream, subscribers: &Mutex<Vec<Arc<Mutex<TcpStream>>>>) {
    let writer = Arc::new(Mutex::new(stream.try_clone().expect("clone")));
    let Ok(mut ws) = tungstenite::accept(stream) else {
        return;
    };
    let broadcast = |event: &str| {
        for s in subscribers.lock().expect("lock").iter() {
            send_frame(s, event);
        }
    };
    let ts = "2026-01-01T00:00:00.000Z";
    let mut held: Option<String> = None;
    let mut n = 0u64;
    while let Ok(msg) = ws.read() {
        let Ok(text) = msg.into_text() else { continue };
        let Ok(req) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let topic = req["topic"].clone();
        match req["type"].as_str() {
            Some("subscribe") => {
                subscribers.lock().expect("lock").push(writer.clone());
                let ack = json!({"type":"ack","request_id":req["request_id"],"topic":topic,"status":"ok","ts":ts});
                send_frame(&writer, &ack.to_string());
            }
            Some("publish") => {
                n += 1;
                if n % 10 == 9 {
                    let err = json!({"type":"error","topic":topic,"error":{"code":"TOPIC_NOT_FOUND","message":"no"},"ts":ts});
                    send_frame(&writer, &err.to_string());
                    continue;
                }
                let ack = json!({"type":"ack","topic":topic,"status":"ok","ts":ts});
                send_frame(&writer, &ack.to_string());
                let event = json!({"type":"event","topic":topic,"message":req["message"],"ts":ts})
                    .to_string();
                match n % 10 {
                    3 => {}
                    5 => {
                        broadcast(&event);
                        broadcast(&event);
                    }
                    7 => held = Some(event),
                    _ => {
                        broadcast(&event);
                        if let Some(late) = held.take() {
                            broadcast(&late);
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

#[test]
fn integrity_counters_match_what_the_server_did() {
    let addr = misbehaving_server();
    let report = bench(&[
        "fanout",
        "--url",
        &url(addr),
        "--no-create",
        "--subscribers",
        "2",
        "--count",
        "1000",
    ]);
    // 1000 publishes: 100 refused, 900 acknowledged, of which 100 dropped.
    assert_eq!(report["published"], 1000, "{report}");
    assert_eq!(report["acked"], 900, "{report}");
    assert_eq!(report["errors"]["TOPIC_NOT_FOUND"], 100, "{report}");
    assert_eq!(report["expected"], 2 * 900, "{report}");
    assert_eq!(report["lost"], 2 * 100, "{report}");
    assert_eq!(report["duplicates"], 2 * 100, "{report}");
    assert_eq!(report["order_violations"], 2 * 100, "{report}");
    // Received: 800 delivered once (incl. 100 late ones) + 100 twice.
    assert_eq!(report["received"], 2 * 900, "{report}");
    assert_eq!(report["latency_us"]["samples"], 2 * 800, "{report}");
}

#[test]
fn a_well_behaved_server_shows_no_loss_and_counts_add_up() {
    let server = start();
    let report = bench(&[
        "fanout",
        "--url",
        &url(server.addr),
        "--publishers",
        "2",
        "--subscribers",
        "10",
        "--topics",
        "2",
        "--count",
        "500",
    ]);
    // 1000 publishes over 2 topics of 5 subscribers each.
    assert_eq!(report["acked"], 1000, "{report}");
    assert_eq!(report["expected"], 5000, "{report}");
    assert_eq!(report["received"], 5000, "{report}");
    for zero in ["lost", "duplicates", "order_violations", "server_closed"] {
        assert_eq!(report[zero], 0, "{zero}: {report}");
    }
    assert_eq!(report["errors"], json!({}));
    let p50 = report["latency_us"]["p50"].as_f64().expect("p50");
    let max = report["latency_us"]["max"].as_f64().expect("max");
    assert!(p50 > 0.0 && p50 <= max, "{report}");
}

#[test]
fn a_timed_run_reports_rates() {
    let server = start();
    let report = bench(&[
        "fanout",
        "--url",
        &url(server.addr),
        "--subscribers",
        "3",
        "--warmup",
        "0.2",
        "--duration",
        "0.5",
        "--server-pid",
        &std::process::id().to_string(),
    ]);
    assert!(
        report["published_per_s"].as_f64().expect("rate") > 0.0,
        "{report}"
    );
    assert!(
        report["delivered_per_s"].as_f64().expect("rate") > 0.0,
        "{report}"
    );
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["order_violations"], 0, "{report}");
    assert!(report["server_cpu_pct"].as_f64().is_some(), "{report}");
    assert!(
        report["server_rss_kib"].as_u64().expect("rss") > 0,
        "{report}"
    );
}

#[test]
fn idle_connections_all_get_each_publish() {
    let server = start();
    let report = bench(&[
        "conns",
        "--url",
        &url(server.addr),
        "--connections",
        "300",
        "--messages",
        "3",
    ]);
    assert_eq!(report["subscribers"], 300);
    assert_eq!(report["received"], 900, "{report}");
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["deliver_all_ms"]["publishes"], 3, "{report}");
}

#[test]
fn a_stalled_reader_is_cut_off_and_the_others_lose_nothing() {
    let server = start_with(|c| {
        c.outbound_limit = 64 << 10;
        c.slow_consumer_grace = Duration::from_millis(500);
    });
    let report = bench(&[
        "slow",
        "--url",
        &url(server.addr),
        "--subscribers",
        "3",
        "--size",
        "4000",
        "--rate",
        "2000",
        "--warmup",
        "0",
        "--duration",
        "3",
    ]);
    assert_eq!(report["lost"], 0, "{report}");
    assert_eq!(report["duplicates"], 0, "{report}");
    assert!(report["received"].as_u64().expect("received") > 0);
    let outcome = &report["stalled"]["outcomes"][0];
    assert_eq!(outcome["closed_by_server"], true, "{report}");
    let deadline = Instant::now() + TIMEOUT;
    while stats(server.addr)["totals"]["slow_consumer_disconnects"] != 1 {
        assert!(Instant::now() < deadline, "{}", stats(server.addr));
        std::thread::sleep(Duration::from_millis(10));
    }
}
