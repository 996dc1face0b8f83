//! WebSocket messages (protocol §1): each client message and its answer, each
//! error code, over a real WebSocket.

mod common;

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;
use tungstenite::protocol::frame::coding::CloseCode;

fn error_code(v: &Value) -> &str {
    assert_eq!(v["type"], "error", "{v}");
    let msg = v["error"]["message"].as_str().unwrap_or_default();
    assert!(!msg.is_empty(), "error without a message: {v}");
    v["error"]["code"].as_str().unwrap_or_default()
}

#[test]
fn subscribe_is_acknowledged_with_request_id_and_topic() {
    let s = start();
    create_topic(s.addr, "orders");
    let mut ws = Ws::connect(s.addr);
    ws.send(
        json!({"type":"subscribe","topic":"orders","client_id":"s1","last_n":5,"request_id":"r1"}),
    );
    let ack = ws.recv();
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["request_id"], "r1");
    assert_eq!(ack["topic"], "orders");
    assert_eq!(ack["status"], "ok");
}

#[test]
fn request_id_is_echoed_verbatim_or_null() {
    let s = start();
    let mut ws = Ws::connect(s.addr);
    ws.send(json!({"type":"ping","request_id":42}));
    assert_eq!(ws.recv()["request_id"], 42);
    ws.send(json!({"type":"ping"}));
    let pong = ws.recv();
    assert_eq!(pong["type"], "pong");
    assert!(pong.get("request_id").is_none_or(Value::is_null), "{pong}");
    ws.send(json!({"type":"ping","request_id":"r4"}));
    let mut pong = ws.recv();
    pong.as_object_mut().unwrap().remove("ts");
    assert_eq!(pong, json!({"type":"pong","request_id":"r4"}));
}

#[test]
fn publish_is_acknowledged_and_delivered_verbatim() {
    let s = start();
    create_topic(s.addr, "orders");
    let mut sub = Ws::connect(s.addr);
    sub.subscribe("orders", "s1", 0);
    let mut publisher = Ws::connect(s.addr);
    let id = "550e8400-e29b-41d4-a716-446655440000";
    let payload = json!({"order_id":"ORD-123","amount":99.5,"tags":["a","b"],"nested":{"x":null}});
    publisher.send(json!({"type":"publish","topic":"orders","message":{"id":id,"payload":payload},"request_id":"r3"}));
    let ack = publisher.recv();
    assert_eq!(ack["type"], "ack");
    assert_eq!(ack["request_id"], "r3");
    assert_eq!(ack["topic"], "orders");
    assert_eq!(ack["status"], "ok");
    let event = sub.recv();
    assert_eq!(event["type"], "event");
    assert_eq!(event["topic"], "orders");
    assert_eq!(event["message"], json!({"id": id, "payload": payload}));
}

#[test]
fn payload_numbers_keep_their_digits() {
    let s = start();
    create_topic(s.addr, "n");
    let mut ws = Ws::connect(s.addr);
    ws.subscribe("n", "c", 0);
    let text = format!(
        r#"{{"type":"publish","topic":"n","message":{{"id":"{}","payload":[123456789012345678901234567890,1.50,-0.0,1e400]}}}}"#,
        uuid()
    );
    ws.send_text(&text);
    assert_eq!(ws.recv()["type"], "ack");
    match ws.ws.read().unwrap() {
        Message::Text(t) => assert!(
            t.as_str()
                .contains(r#""payload":[123456789012345678901234567890,1.50,-0.0,1e400]"#),
            "{t}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_publisher_that_subscribes_gets_its_own_event_after_the_ack() {
    let s = start();
    create_topic(s.addr, "self");
    let mut ws = Ws::connect(s.addr);
    ws.subscribe("self", "me", 0);
    ws.send(json!({"type":"publish","topic":"self","message":{"id":uuid(),"payload":"hi"},"request_id":"p"}));
    assert_eq!(ws.recv()["type"], "ack");
    let event = ws.recv();
    assert_eq!(event["type"], "event");
    assert_eq!(event["message"]["payload"], "hi");
}

#[test]
fn unsubscribe_acks_and_stops_delivery() {
    let s = start();
    create_topic(s.addr, "t");
    let mut sub = Ws::connect(s.addr);
    sub.subscribe("t", "c", 0);
    sub.send(json!({"type":"unsubscribe","topic":"t","client_id":"c","request_id":"u1"}));
    let ack = sub.recv();
    assert_eq!(
        (ack["type"].as_str(), ack["request_id"].as_str()),
        (Some("ack"), Some("u1"))
    );
    assert_eq!(ack["topic"], "t");
    let mut publisher = Ws::connect(s.addr);
    assert_eq!(publisher.publish("t", json!("lost"))["type"], "ack");
    // Nothing arrives: the next thing the subscriber reads is its own pong.
    sub.ping();
}

#[test]
fn unsubscribe_is_idempotent_but_needs_the_topic() {
    let s = start();
    create_topic(s.addr, "t");
    let mut ws = Ws::connect(s.addr);
    ws.send(json!({"type":"unsubscribe","topic":"t","client_id":"c","request_id":1}));
    assert_eq!(ws.recv()["type"], "ack");
    ws.send(json!({"type":"unsubscribe","topic":"missing","client_id":"c","request_id":2}));
    let err = ws.recv();
    assert_eq!(error_code(&err), "TOPIC_NOT_FOUND");
    assert_eq!(err["request_id"], 2);
    assert_eq!(err["topic"], "missing");
}

#[test]
fn unknown_topics_are_not_found_for_publish_and_subscribe() {
    let s = start();
    let mut ws = Ws::connect(s.addr);
    ws.send(json!({"type":"publish","topic":"nope","message":{"id":uuid(),"payload":1},"request_id":"p"}));
    let err = ws.recv();
    assert_eq!(error_code(&err), "TOPIC_NOT_FOUND");
    assert_eq!(
        (err["request_id"].as_str(), err["topic"].as_str()),
        (Some("p"), Some("nope"))
    );
    ws.send(json!({"type":"subscribe","topic":"nope","client_id":"c","request_id":"s"}));
    assert_eq!(error_code(&ws.recv()), "TOPIC_NOT_FOUND");
    // The connection stays open, and nothing was created.
    ws.ping();
    assert_eq!(health(s.addr)["topics"], 0);
}

#[test]
fn auto_create_makes_topics_on_publish_and_subscribe() {
    let s = start_with(|c| c.auto_create_topics = true);
    let mut ws = Ws::connect(s.addr);
    ws.subscribe("fresh", "c", 0);
    assert_eq!(ws.publish("other", json!(1))["type"], "ack");
    let topics = http(s.addr, "GET", "/topics", None).json();
    assert_eq!(
        topics,
        json!({"topics":[{"name":"fresh","subscribers":1,"seq":0},{"name":"other","subscribers":0,"seq":1}]})
    );
}

#[test]
fn every_bad_request_is_answered_and_the_connection_stays_open() {
    let s = start();
    create_topic(s.addr, "t");
    let mut ws = Ws::connect(s.addr);
    let id = uuid();
    let long = "x".repeat(256);
    let cases: Vec<String> = vec![
        "not json".into(),
        "[1,2,3]".into(),
        "42".into(),
        r#""just a string""#.into(),
        r#"{"topic":"t"}"#.into(),
        r#"{"type":"dance","request_id":"r"}"#.into(),
        r#"{"type":7}"#.into(),
        r#"{"type":"subscribe","client_id":"c"}"#.into(),
        r#"{"type":"subscribe","topic":5,"client_id":"c"}"#.into(),
        r#"{"type":"subscribe","topic":"t"}"#.into(),
        r#"{"type":"subscribe","topic":"t","client_id":3}"#.into(),
        r#"{"type":"subscribe","topic":"t","client_id":"c","last_n":-1}"#.into(),
        r#"{"type":"subscribe","topic":"t","client_id":"c","last_n":2.5}"#.into(),
        r#"{"type":"subscribe","topic":"t","client_id":"c","last_n":"3"}"#.into(),
        r#"{"type":"subscribe","topic":"","client_id":"c"}"#.into(),
        r#"{"type":"subscribe","topic":"a b","client_id":"c"}"#.into(),
        r#"{"type":"subscribe","topic":"a/b","client_id":"c"}"#.into(),
        r#"{"type":"subscribe","topic":"ünï","client_id":"c"}"#.into(),
        format!(r#"{{"type":"subscribe","topic":"{long}","client_id":"c"}}"#),
        r#"{"type":"unsubscribe","topic":"t"}"#.into(),
        r#"{"type":"publish","topic":"t"}"#.into(),
        r#"{"type":"publish","topic":"t","message":"m"}"#.into(),
        r#"{"type":"publish","topic":"t","message":{"payload":1}}"#.into(),
        r#"{"type":"publish","topic":"t","message":{"id":"not-a-uuid","payload":1}}"#.into(),
        r#"{"type":"publish","topic":"t","message":{"id":12,"payload":1}}"#.into(),
        format!(r#"{{"type":"publish","topic":"t","message":{{"id":"{id}"}}}}"#),
        format!(r#"{{"type":"publish","message":{{"id":"{id}","payload":1}}}}"#),
        r#"{"type":"ping","type":"ping"}"#.into(),
    ];
    for text in &cases {
        ws.send_text(text);
        let answer = ws.recv();
        assert_eq!(error_code(&answer), "BAD_REQUEST", "{text}: {answer}");
    }
    // request_id and topic are echoed on errors where the request had them.
    ws.send_text(r#"{"type":"subscribe","topic":"t","request_id":"bad-1"}"#);
    let err = ws.recv();
    assert_eq!(
        (err["request_id"].as_str(), err["topic"].as_str()),
        (Some("bad-1"), Some("t"))
    );
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("client_id"),
        "{err}"
    );
    ws.ping();
}

#[test]
fn binary_frames_are_bad_requests() {
    let s = start();
    let mut ws = Ws::connect(s.addr);
    ws.ws.send(Message::binary(vec![1u8, 2, 3])).unwrap();
    assert_eq!(error_code(&ws.recv()), "BAD_REQUEST");
    ws.ping();
}

#[test]
fn every_request_gets_one_answer_in_order() {
    let s = start();
    create_topic(s.addr, "t");
    let mut ws = Ws::connect(s.addr);
    for i in 0..60 {
        let msg = match i % 5 {
            0 => json!({"type":"ping","request_id":i}),
            1 => json!({"type":"subscribe","topic":"t","client_id":"c","request_id":i}),
            2 => {
                json!({"type":"publish","topic":"missing","message":{"id":uuid(),"payload":i},"request_id":i})
            }
            3 => json!({"type":"unsubscribe","topic":"t","client_id":"c","request_id":i}),
            _ => json!({"type":"bogus","request_id":i}),
        };
        ws.send(msg);
    }
    for i in 0..60 {
        let answer = ws.recv();
        let want = ["pong", "ack", "error", "ack", "error"][i % 5];
        assert_eq!(answer["type"], want, "answer {i}: {answer}");
        assert_eq!(answer["request_id"], i, "answer {i}: {answer}");
    }
}

#[test]
fn messages_over_the_size_limit_close_with_1009() {
    let s = start_with(|c| c.max_message_size = 4096);
    create_topic(s.addr, "t");
    let mut ws = Ws::connect(s.addr);
    // Just under the limit is fine.
    let fits = format!(
        r#"{{"type":"publish","topic":"t","message":{{"id":"{}","payload":"{}"}}}}"#,
        uuid(),
        "x".repeat(3900)
    );
    ws.send_text(&fits);
    assert_eq!(ws.recv()["type"], "ack");
    ws.send_text(&"y".repeat(5000));
    assert_eq!(ws.expect_close(), Some(CloseCode::Size));
    // Others are unaffected.
    Ws::connect(s.addr).ping();
}

#[test]
fn ping_and_pong_frames_are_handled() {
    let s = start();
    let mut ws = Ws::connect(s.addr);
    ws.ws.send(Message::Ping(b"hello".to_vec().into())).unwrap();
    loop {
        match ws.ws.read().unwrap() {
            Message::Pong(data) => {
                assert_eq!(&data[..], b"hello");
                break;
            }
            Message::Text(t) => panic!("unexpected {t}"),
            _ => {}
        }
    }
    ws.ws.send(Message::Pong(Vec::new().into())).unwrap();
    ws.ping();
}

#[test]
fn fragmented_messages_are_reassembled() {
    use tungstenite::protocol::frame::Frame;
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    let s = start();
    let mut ws = Ws::connect(s.addr);
    let text = br#"{"type":"ping","request_id":"frag"}"#;
    let (a, b) = text.split_at(10);
    let (b, c) = b.split_at(10);
    ws.ws
        .write(Message::Frame(Frame::message(
            a.to_vec(),
            OpCode::Data(Data::Text),
            false,
        )))
        .unwrap();
    ws.ws
        .write(Message::Frame(Frame::message(
            b.to_vec(),
            OpCode::Data(Data::Continue),
            false,
        )))
        .unwrap();
    ws.ws
        .send(Message::Frame(Frame::message(
            c.to_vec(),
            OpCode::Data(Data::Continue),
            true,
        )))
        .unwrap();
    let pong = ws.recv();
    assert_eq!(
        (pong["type"].as_str(), pong["request_id"].as_str()),
        (Some("pong"), Some("frag"))
    );
}

#[test]
fn a_clean_close_is_answered() {
    let s = start();
    let mut ws = Ws::connect(s.addr);
    ws.ws.close(None).unwrap();
    loop {
        match ws.ws.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("close handshake failed: {e}"),
        }
    }
}
