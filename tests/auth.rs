//! Authentication (protocol §6) on REST and on the WebSocket handshake.

mod common;

use common::*;
use serde_json::json;

fn server() -> Server {
    start_with(|c| c.api_keys = vec!["k1".into(), "k2".into()])
}

#[test]
fn rest_needs_a_valid_key() {
    let s = server();
    for (headers, what) in [
        ("", "no key"),
        ("X-API-Key: wrong\r\n", "wrong key"),
        ("X-API-Key: k\r\n", "prefix"),
    ] {
        for (method, path) in [
            ("GET", "/topics"),
            ("POST", "/topics"),
            ("GET", "/stats"),
            ("DELETE", "/topics/x"),
            ("GET", "/metrics"),
        ] {
            let r = Http::connect(s.addr).request(method, path, headers, Some(r#"{"name":"t"}"#));
            assert_eq!(r.status, 401, "{what}: {method} {path}");
            assert_eq!(r.json(), json!({"error":"unauthorized"}));
        }
    }
    for key in ["k1", "k2"] {
        let r =
            Http::connect(s.addr).request("GET", "/topics", &format!("X-API-Key: {key}\r\n"), None);
        assert_eq!(r.status, 200, "{key}");
    }
    assert_eq!(
        health(s.addr)["topics"],
        0,
        "nothing was created without a key"
    );
}

#[test]
fn health_needs_no_key() {
    let s = server();
    assert_eq!(http(s.addr, "GET", "/health", None).status, 200);
}

#[test]
fn websocket_handshake_needs_a_key_before_the_upgrade() {
    let s = server();
    match Ws::connect_path(s.addr, "/ws", &[]) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("upgraded without a key"),
    }
    match Ws::connect_path(s.addr, "/ws?api_key=nope", &[]) {
        Err(tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 401),
        other => panic!("wrong key: {:?}", other.err()),
    }
    let mut by_header =
        Ws::connect_path(s.addr, "/ws", &[("X-API-Key", "k1")]).expect("header key");
    by_header.ping();
    let mut by_query = Ws::connect_path(s.addr, "/ws?api_key=k2", &[]).expect("query key");
    by_query.ping();
}

#[test]
fn without_keys_configured_everything_is_open() {
    let s = start();
    assert_eq!(http(s.addr, "GET", "/topics", None).status, 200);
    Ws::connect(s.addr).ping();
}
