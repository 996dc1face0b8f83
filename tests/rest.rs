//! REST (protocol §5): each status of the contract over real HTTP/1.1.

mod common;

use common::*;
use serde_json::json;

#[test]
fn create_topic_then_conflict() {
    let s = start();
    let r = http(s.addr, "POST", "/topics", Some(r#"{"name":"orders"}"#));
    assert_eq!(r.status, 201);
    assert_eq!(r.json(), json!({"status":"created","topic":"orders"}));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let r = http(s.addr, "POST", "/topics", Some(r#"{"name":"orders"}"#));
    assert_eq!(r.status, 409);
    assert_eq!(r.json(), json!({"error":"topic already exists"}));
}

#[test]
fn create_topic_rejects_bad_bodies_and_names() {
    let s = start();
    for body in [
        "not json",
        "{}",
        r#"{"name":5}"#,
        r#"["orders"]"#,
        r#"{"name":""}"#,
        r#"{"name":"has space"}"#,
        r#"{"name":"a/b"}"#,
        r#"{"name":"ünïcode"}"#,
        &format!(r#"{{"name":"{}"}}"#, "a".repeat(256)),
    ] {
        let r = http(s.addr, "POST", "/topics", Some(body));
        assert_eq!(r.status, 400, "{body}");
        assert!(
            r.json()["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
    }
    // The longest valid name and every allowed character class work.
    create_topic(s.addr, &"a".repeat(255));
    create_topic(s.addr, "AZaz09._-:");
}

#[test]
fn delete_topic_then_not_found() {
    let s = start();
    create_topic(s.addr, "orders");
    let r = http(s.addr, "DELETE", "/topics/orders", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!({"status":"deleted","topic":"orders"}));
    let r = http(s.addr, "DELETE", "/topics/orders", None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error":"topic not found"}));
}

#[test]
fn topic_names_in_paths_are_percent_decoded() {
    let s = start();
    create_topic(s.addr, "a:b");
    let r = http(s.addr, "DELETE", "/topics/a%3Ab", None);
    assert_eq!(r.status, 200, "{:?}", r.json());
    assert_eq!(r.json()["topic"], "a:b");
    assert_eq!(http(s.addr, "DELETE", "/topics/a%3Ab", None).status, 404);
}

#[test]
fn list_topics_counts_subscribers() {
    let s = start();
    create_topic(s.addr, "b");
    create_topic(s.addr, "a");
    let mut ws1 = Ws::connect(s.addr);
    let mut ws2 = Ws::connect(s.addr);
    ws1.subscribe("a", "c1", 0);
    ws2.subscribe("a", "c2", 0);
    ws2.subscribe("b", "c2", 0);
    let r = http(s.addr, "GET", "/topics", None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"topics":[{"name":"a","subscribers":2,"seq":0},{"name":"b","subscribers":1,"seq":0}]})
    );
}

#[test]
fn health_reports_uptime_topics_and_subscribers() {
    let s = start();
    create_topic(s.addr, "t");
    let mut ws = Ws::connect(s.addr);
    ws.subscribe("t", "c", 0);
    let r = http(s.addr, "GET", "/health", None);
    assert_eq!(r.status, 200);
    let h = r.json();
    assert!(h["uptime_sec"].is_u64(), "{h}");
    assert_eq!(h["topics"], 1);
    assert_eq!(h["subscribers"], 1);
}

#[test]
fn stats_count_messages_and_subscribers_per_topic() {
    let s = start();
    create_topic(s.addr, "t");
    create_topic(s.addr, "quiet");
    let mut sub = Ws::connect(s.addr);
    sub.subscribe("t", "c", 0);
    let mut publisher = Ws::connect(s.addr);
    for n in 0..3 {
        assert_eq!(publisher.publish("t", json!(n))["type"], "ack");
    }
    let st = stats(s.addr);
    assert_eq!(st["topics"]["t"]["messages"], 3);
    assert_eq!(st["topics"]["t"]["subscribers"], 1);
    assert_eq!(st["topics"]["quiet"]["messages"], 0);
    assert_eq!(st["topics"]["quiet"]["subscribers"], 0);
}

#[test]
fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let s = start();
    let r = http(s.addr, "GET", "/nope", None);
    assert_eq!(r.status, 404);
    assert!(r.json()["error"].is_string());
    for (method, path, allow) in [
        ("PUT", "/topics", ["GET", "POST"].as_slice()),
        ("DELETE", "/topics", &["GET", "POST"]),
        ("POST", "/topics/x", &["GET", "DELETE"]),
        ("POST", "/health", &["GET"]),
        ("POST", "/stats", &["GET"]),
        ("POST", "/metrics", &["GET"]),
        ("POST", "/ws", &["GET"]),
    ] {
        let r = http(s.addr, method, path, None);
        assert_eq!(r.status, 405, "{method} {path}");
        let got = r
            .header("allow")
            .unwrap_or_else(|| panic!("{method} {path}: no Allow"));
        for m in allow {
            assert!(got.contains(m), "{method} {path}: Allow {got:?} lacks {m}");
        }
        assert!(r.json()["error"].is_string());
    }
}

#[test]
fn keep_alive_serves_many_requests_on_one_connection() {
    let s = start();
    let mut c = Http::connect(s.addr);
    for i in 0..20 {
        let name = format!("t{i}");
        let r = c.request(
            "POST",
            "/topics",
            "",
            Some(&json!({"name": name}).to_string()),
        );
        assert_eq!(r.status, 201);
        assert!(
            r.header("connection")
                .is_none_or(|v| !v.eq_ignore_ascii_case("close"))
        );
    }
    assert_eq!(c.request("GET", "/health", "", None).json()["topics"], 20);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let s = start();
    let mut c = Http::connect(s.addr);
    let body = r#"{"name":"p"}"#;
    let batch = format!(
        "POST /topics HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}\
         POST /topics HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}\
         GET /topics HTTP/1.1\r\n\r\n\
         DELETE /topics/p HTTP/1.1\r\n\r\n\
         GET /nope HTTP/1.1\r\n\r\n",
        body.len(),
        body.len()
    );
    c.send(batch.as_bytes());
    let statuses: Vec<u16> = (0..5).map(|_| c.read_response().status).collect();
    assert_eq!(statuses, vec![201, 409, 200, 200, 404]);
}

#[test]
fn connection_close_is_honoured() {
    let s = start();
    let mut c = Http::connect(s.addr);
    let r = c.request("GET", "/health", "Connection: close\r\n", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.closed_by_server());
}

#[test]
fn http_1_0_closes_after_the_response() {
    let s = start();
    let mut c = Http::connect(s.addr);
    c.send(b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    assert!(c.closed_by_server());
}

#[test]
fn limits_and_malformed_requests() {
    let s = start_with(|c| c.max_body_size = 1024);
    // Body over the limit: 413.
    let mut c = Http::connect(s.addr);
    c.send(b"POST /topics HTTP/1.1\r\nContent-Length: 5000\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 413);
    assert!(r.json()["error"].is_string());
    // Headers over 8 KiB: 431.
    let mut c = Http::connect(s.addr);
    c.send(
        format!(
            "GET /health HTTP/1.1\r\nX-Big: {}\r\n\r\n",
            "a".repeat(9000)
        )
        .as_bytes(),
    );
    assert_eq!(c.read_response().status, 431);
    // Too many headers: 431.
    let mut c = Http::connect(s.addr);
    let many: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    c.send(format!("GET /health HTTP/1.1\r\n{many}\r\n").as_bytes());
    assert_eq!(c.read_response().status, 431);
    // Garbage: 400, then the server closes.
    let mut c = Http::connect(s.addr);
    c.send(b"\x16\x03\x01 this is not http\r\n\r\n");
    let r = c.read_response();
    assert_eq!(r.status, 400);
    assert!(r.json()["error"].is_string());
    assert!(c.closed_by_server());
    // Chunked bodies are refused with 411.
    let mut c = Http::connect(s.addr);
    c.send(b"POST /topics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
    assert_eq!(c.read_response().status, 411);
    assert!(c.closed_by_server());
    // The server is unharmed.
    assert_eq!(http(s.addr, "GET", "/health", None).status, 200);
}

#[test]
fn good_request_then_garbage_on_one_connection() {
    let s = start();
    let mut c = Http::connect(s.addr);
    c.send(b"GET /health HTTP/1.1\r\n\r\nGARBAGE GARBAGE\r\n\r\n");
    assert_eq!(c.read_response().status, 200);
    assert_eq!(c.read_response().status, 400);
    assert!(c.closed_by_server());
}

#[test]
fn bad_websocket_handshakes_get_400_and_the_server_keeps_serving() {
    let s = start();
    let key = "dGhlIHNhbXBsZSBub25jZQ==";
    for (what, headers) in [
        ("plain GET", String::new()),
        (
            "missing key",
            "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n".into(),
        ),
        (
            "wrong version",
            format!(
                "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: {key}\r\n"
            ),
        ),
        (
            "no Upgrade header",
            format!(
                "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
            ),
        ),
        (
            "no Connection: Upgrade",
            format!(
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
            ),
        ),
    ] {
        let mut c = Http::connect(s.addr);
        let r = c.request("GET", "/ws", &headers, None);
        assert_eq!(r.status, 400, "{what}");
        assert!(r.json()["error"].is_string(), "{what}");
    }
    let mut ws = Ws::connect(s.addr);
    ws.ping();
}
