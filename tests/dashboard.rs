//! The live dashboard (issue 14): the page's HTTP contract, and the page itself
//! in headless Chromium against a live server carrying traffic.
//!
//! The browser tests are ignored by plain `cargo test`; `scripts/test.sh`
//! installs Chromium and runs them. Run alone:
//! `cargo test --test dashboard -- --ignored`. Without Chromium they fail.

mod cdp;
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use cdp::Browser;
use common::*;
use serde_json::{Value, json};

const KEY: &str = "s3cret-key";

// ---- the page over HTTP ----

#[test]
fn page_loads_without_a_key_with_a_strict_policy() {
    let s = start_with(|c| c.api_keys = vec![KEY.into()]);
    let r = http(s.addr, "GET", "/dashboard", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let body = String::from_utf8(r.body.clone()).expect("UTF-8 page");
    assert!(body.starts_with("<!doctype html>"), "{}", &body[..40]);
    assert!(body.contains("<title>pubsubd dashboard</title>"));
    assert!(body.len() <= 40 * 1024, "page is {} bytes", body.len());

    let csp = r.header("content-security-policy").expect("a CSP");
    let script_src = csp
        .split(';')
        .map(str::trim)
        .find(|d| d.starts_with("script-src"))
        .expect("script-src");
    assert!(script_src.starts_with("script-src 'sha256-"), "{csp}");
    assert!(!script_src.contains("unsafe"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");

    let r = http(s.addr, "GET", "/", None);
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("dashboard"));
}

#[test]
fn only_the_page_is_exempt_from_the_key() {
    let s = start_with(|c| c.api_keys = vec![KEY.into()]);
    let with_key = format!("X-API-Key: {KEY}\r\n");
    for (method, path) in [
        ("GET", "/stats"),
        ("GET", "/topics"),
        ("GET", "/dashboard/x"),
        ("GET", "/dashboardx"),
        ("POST", "/dashboard"),
        ("DELETE", "/"),
    ] {
        let r = Http::connect(s.addr).request(method, path, "", Some("{}"));
        assert_eq!(r.status, 401, "{method} {path} without a key");
    }
    for (method, path) in [
        ("POST", "/dashboard"),
        ("DELETE", "/"),
        ("PUT", "/dashboard"),
    ] {
        let r = Http::connect(s.addr).request(method, path, &with_key, Some("{}"));
        assert_eq!(r.status, 405, "{method} {path}");
        assert_eq!(r.header("allow"), Some("GET"), "{method} {path}");
    }
    let r = Http::connect(s.addr).request("GET", "/dashboard/x", &with_key, None);
    assert_eq!(r.status, 404);
}

// ---- the page in a browser ----

/// Publishes to `topics` in turn at a modest, varying rate (≤ 25/s per topic when
/// two topics) until dropped, on one connection that is also subscribed to them,
/// so that both published and delivered counts move.
struct Traffic {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<u64>>,
}

impl Traffic {
    fn start(addr: SocketAddr, topics: &[&str]) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut ws = Ws::connect(addr);
            for t in &topics {
                ws.subscribe(t, &format!("traffic-{t}"), 0);
            }
            let until = Instant::now() + Duration::from_secs(120);
            let mut sent = 0u64;
            while !flag.load(Ordering::Relaxed) && Instant::now() < until {
                let topic = &topics[sent as usize % topics.len()];
                let id = format!("t{sent}");
                ws.send(json!({"type":"publish","topic":topic,"request_id":id,
                    "message":{"id":uuid(),"payload":{"n":sent,"sku":"SKU-1234","qty":2}}}));
                loop {
                    let v = ws.recv();
                    if v["type"] == "ack" && v["request_id"] == id.as_str() {
                        break;
                    }
                    assert_ne!(v["type"], "error", "{v}");
                }
                sent += 1;
                // 20–40 ms between publishes: a wave, so the charts have a shape.
                let wave = ((sent as f64) / 25.0).sin();
                std::thread::sleep(Duration::from_millis((30.0 + 10.0 * wave) as u64));
            }
            sent
        });
        Traffic {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let outcome = t.join();
            if !std::thread::panicking() {
                let sent = outcome.expect("the traffic thread ran cleanly");
                assert!(sent > 0, "traffic was published");
            }
        }
    }
}

fn target_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target/")
        .to_path_buf()
}

/// `pubsubd pub TOPIC JSON` against the server, as a user would run it.
fn cli_pub(addr: SocketAddr, topic: &str, payload: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_pubsubd"))
        .args(["pub", topic, payload, "--timeout", "5"])
        .args(["--url", &format!("http://{addr}")])
        .output()
        .expect("run pubsubd pub");
    assert!(
        out.status.success(),
        "pubsubd pub {topic} {payload}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn topic_names(addr: SocketAddr, key: Option<&str>) -> Vec<String> {
    let headers = key.map_or(String::new(), |k| format!("X-API-Key: {k}\r\n"));
    let r = Http::connect(addr).request("GET", "/topics", &headers, None);
    assert_eq!(r.status, 200);
    r.json()["topics"]
        .as_array()
        .expect("topics")
        .iter()
        .map(|t| t["name"].as_str().expect("name").to_string())
        .collect()
}

fn wait_rest(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + cdp::WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A JavaScript string literal.
fn js(s: &str) -> String {
    Value::from(s).to_string()
}

/// The table row of a topic (topic names need no quoting in a selector's string).
fn row(name: &str) -> String {
    format!(
        "document.querySelector({})",
        js(&format!("#topic-rows tr[data-topic='{name}']"))
    )
}

fn click(b: &mut Browser, selector: &str) {
    let found = b.eval(&format!(
        "(() => {{ const el = document.querySelector({}); if (!el) return false; el.click(); return true; }})()",
        js(selector)
    ));
    assert_eq!(found, json!(true), "nothing to click at {selector}");
}

fn set_value(b: &mut Browser, selector: &str, value: &str) {
    let found = b.eval(&format!(
        "(() => {{ const el = document.querySelector({}); if (!el) return false; el.value = {}; return true; }})()",
        js(selector),
        js(value)
    ));
    assert_eq!(found, json!(true), "no field at {selector}");
}

fn text(b: &mut Browser, selector: &str) -> String {
    b.eval(&format!(
        "document.querySelector({}).textContent",
        js(selector)
    ))
    .as_str()
    .unwrap_or_default()
    .to_string()
}

fn assert_no_page_errors(b: &mut Browser) {
    b.eval("1"); // collect what the page reported so far
    assert!(
        b.errors.is_empty(),
        "the page reported errors: {:#?}",
        b.errors
    );
}

#[test]
#[ignore = "needs chromium: scripts/test.sh"]
fn dashboard_shows_live_traffic_and_drives_topics() {
    let s = start();
    for t in ["orders", "billing.eu", "quiet", "tail.me"] {
        create_topic(s.addr, t);
    }
    let _traffic = Traffic::start(s.addr, &["orders", "billing.eu"]);
    let mut b = Browser::launch();

    b.navigate(&format!("http://{}/", s.addr));
    b.wait_for(
        "the redirect from / to the page",
        "location.pathname === '/dashboard' && document.readyState === 'complete'",
    );

    // The topic table: the busy topics have a rate, the quiet one has none.
    let rates = b.wait_for(
        "non-zero rates for the busy topics",
        "(() => {
            const v = (n, c) => {
                const td = document.querySelector(`#topic-rows tr[data-topic='${n}'] td.${c}`);
                return td ? Number(td.dataset.value) : -1;
            };
            const out = { orders: v('orders', 'rate'), billing: v('billing.eu', 'rate'),
                          quiet: v('quiet', 'rate'), quiet_messages: v('quiet', 'messages'),
                          orders_messages: v('orders', 'messages'), orders_subs: v('orders', 'subscribers') };
            return out.orders > 0 && out.billing > 0 ? out : null;
        })()",
    );
    assert_eq!(rates["quiet"], 0.0, "{rates}");
    assert_eq!(rates["quiet_messages"], 0.0, "{rates}");
    assert_eq!(rates["orders_subs"], 1.0, "{rates}");
    assert!(rates["orders_messages"].as_f64() > Some(0.0), "{rates}");
    for t in ["orders", "billing"] {
        let r = rates[t].as_f64().unwrap();
        assert!(r <= 60.0, "{t}: {r}/s, published at most 25/s: {rates}");
    }
    let shown = b.eval(&format!(
        "{}.querySelector('td.rate').textContent",
        row("orders")
    ));
    assert!(shown.as_str().is_some_and(|t| t.ends_with("/s")), "{shown}");
    // The last seq (issue 10) is shown on a laptop, as the server counts it.
    let seq = b.eval(&format!(
        "(() => {{ const td = {}.querySelector('td.seq');
                  return {{ shown: getComputedStyle(td).display !== 'none', value: Number(td.dataset.value) }}; }})()",
        row("orders")
    ));
    let server_seq = http(s.addr, "GET", "/topics/orders", None).json()["seq"].clone();
    assert_eq!(seq["shown"], true, "{seq}");
    let (page, server) = (seq["value"].as_f64(), server_seq.as_f64());
    assert!(
        page > Some(0.0) && page <= server,
        "the page's last seq {page:?} must be a seq the server has assigned ({server:?})"
    );

    // The charts have points: published and delivered move, nothing was dropped.
    let chart = |series: &str| {
        format!(
            "(() => {{ const svg = document.querySelector('.chart[data-series={series}] svg');
                      const d = svg.querySelector('path.line').getAttribute('d') || '';
                      return {{ points: (d.match(/[ML]/g) || []).length, peak: Number(svg.dataset.peak) }}; }})()"
        )
    };
    let published = b.wait_for(
        "the published chart to have 3 points above zero",
        &format!(
            "(() => {{ const c = {}; return c.points >= 3 && c.peak > 0 ? c : null; }})()",
            chart("published")
        ),
    );
    let delivered = b.eval(&chart("delivered"));
    assert!(delivered["points"].as_u64() >= Some(3), "{delivered}");
    assert!(delivered["peak"].as_f64() > Some(0.0), "{delivered}");
    let dropped = b.eval(&chart("dropped"));
    assert!(dropped["points"].as_u64() >= Some(3), "{dropped}");
    assert_eq!(dropped["peak"], 0.0, "nothing was dropped: {dropped}");
    // A rate, not a running total: at most 50/s are sent, 3× leaves room for timing jitter.
    assert!(published["peak"].as_f64() <= Some(150.0), "{published}");

    assert_eq!(text(&mut b, "#t-topics"), "4");
    let conns = text(&mut b, "#t-conns-d");
    assert!(
        conns.contains("WebSocket 1"),
        "the traffic connection: {conns}"
    );

    // Sorting by name, both ways, then by rate.
    let order = "Array.from(document.querySelectorAll('#topic-rows tr')).map(r => r.dataset.topic)";
    click(&mut b, "#topics th[data-key=name] button");
    assert_eq!(
        b.eval(order),
        json!(["billing.eu", "orders", "quiet", "tail.me"])
    );
    click(&mut b, "#topics th[data-key=name] button");
    assert_eq!(
        b.eval(order),
        json!(["tail.me", "quiet", "orders", "billing.eu"])
    );
    click(&mut b, "#topics th[data-key=rate] button");
    let by_rate = b.eval(order);
    let busy: Vec<&str> = by_rate.as_array().unwrap()[..2]
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        busy.contains(&"orders") && busy.contains(&"billing.eu"),
        "{by_rate}"
    );

    // Create a topic from the page; a bad name is refused before it is sent.
    set_value(&mut b, "#newtopic", "bad name");
    click(&mut b, "#createform button");
    b.wait_for(
        "the bad-name message",
        "document.querySelector('#topicmsg.bad') !== null",
    );
    set_value(&mut b, "#newtopic", "made.in-browser");
    click(&mut b, "#createform button");
    wait_rest("the page to create made.in-browser", || {
        topic_names(s.addr, None).contains(&"made.in-browser".to_string())
    });
    b.wait_for(
        "the new topic's row",
        &format!("{} !== null", row("made.in-browser")),
    );
    assert!(!topic_names(s.addr, None).contains(&"bad name".to_string()));

    // Delete asks for a second click.
    let delete = "#topic-rows tr[data-topic='made.in-browser'] .delete-btn";
    click(&mut b, delete);
    assert_eq!(text(&mut b, delete), "Delete?");
    assert!(topic_names(s.addr, None).contains(&"made.in-browser".to_string()));
    click(&mut b, delete);
    wait_rest("the page to delete made.in-browser", || {
        !topic_names(s.addr, None).contains(&"made.in-browser".to_string())
    });
    b.wait_for(
        "the row to go",
        &format!("{} === null", row("made.in-browser")),
    );

    // Tail a topic: the page subscribes over /ws.
    click(&mut b, "#topic-rows tr[data-topic='tail.me'] .tail-btn");
    b.wait_for(
        "the tail to be live",
        "document.querySelector('#tailstate').textContent === 'live'",
    );
    assert_eq!(
        http(s.addr, "GET", "/stats", None).json()["topics"]["tail.me"]["subscribers"],
        1
    );
    let mut watcher = Ws::connect(s.addr);
    watcher.subscribe("tail.me", "watcher", 0);

    let tail_has = |needle: &str| {
        format!(
            "Array.from(document.querySelectorAll('#tail li.event pre')).some(p => p.textContent.includes({}))",
            js(needle)
        )
    };
    cli_pub(s.addr, "tail.me", r#"{"from":"cli","n":7}"#);
    b.wait_for(
        "the CLI's event in the tail",
        &tail_has(r#"{"from":"cli","n":7}"#),
    );

    // Hostile payloads are shown as text and run nothing.
    cli_pub(
        s.addr,
        "tail.me",
        r#"{"html":"<img src=x onerror=\"window.__pwned=1;document.title='pwned'\">","js":"<script>window.__pwned=2</script>"}"#,
    );
    let mut ws = Ws::connect(s.addr);
    let ack = ws.publish(
        "tail.me",
        json!("<img src=x onerror=window.__pwned=3><script>document.title='pwned'</script>"),
    );
    assert_eq!(ack["type"], "ack", "{ack}");
    b.wait_for(
        "the string payload as text",
        &tail_has("<img src=x onerror=window.__pwned=3><script>"),
    );
    b.wait_for(
        "the object payload as text",
        &tail_has(r#"<img src=x onerror=\"window.__pwned=1"#),
    );
    let probe = b.eval(
        "({ pwned: window.__pwned === undefined ? null : window.__pwned, title: document.title,
            elements: document.querySelectorAll('#tail img, #tail script, img').length })",
    );
    assert_eq!(
        probe,
        json!({"pwned": null, "title": "pubsubd dashboard", "elements": 0})
    );

    // Publish from the page, with the UUID fallback of insecure contexts.
    b.eval("delete Crypto.prototype.randomUUID; typeof crypto.randomUUID");
    set_value(&mut b, "#pubpayload", r#"{"from":"page","k":42}"#);
    click(&mut b, "#pubbtn");
    b.wait_for(
        "the publish ack",
        "document.querySelector('#pubmsg').textContent.startsWith('Published')",
    );
    let event = loop {
        let v = watcher.recv_skip_heartbeat();
        if v["message"]["payload"]["from"] == "page" {
            break v;
        }
    };
    assert_eq!(event["message"]["payload"], json!({"from":"page","k":42}));
    let id = uuid::Uuid::parse_str(event["message"]["id"].as_str().unwrap()).expect("a UUID");
    assert_eq!(id.get_version_num(), 4, "{id}");
    b.wait_for(
        "the page's own event in the tail",
        &tail_has(r#"{"from":"page","k":42}"#),
    );

    // Screenshots, once the charts have some history: laptop (light and dark),
    // and phone, which must not scroll sideways.
    b.wait_for_within(
        "20 s of chart history for the screenshot",
        "document.querySelector('.chart[data-series=published] svg').dataset.points >= 20",
        Duration::from_secs(40),
    );
    b.eval("window.scrollTo(0, 0)");
    b.screenshot(&target_dir().join("dashboard.png"), 1280, false);
    b.color_scheme("dark");
    b.screenshot(&target_dir().join("dashboard-dark.png"), 1280, false);
    b.color_scheme("light");
    b.viewport(390, 844, true);
    let widths = b.wait_for(
        "the phone layout",
        "(() => { const w = { page: document.documentElement.scrollWidth, view: window.innerWidth,
                             table: document.querySelector('.tablewrap').scrollWidth,
                             table_view: document.querySelector('.tablewrap').clientWidth };
                  return w.view === 390 ? w : null; })()",
    );
    assert!(
        widths["page"].as_u64() <= widths["view"].as_u64(),
        "the page scrolls sideways on a phone: {widths}"
    );
    assert!(
        widths["table"].as_u64() <= widths["table_view"].as_u64(),
        "the topic table (and its buttons) must fit a phone: {widths}"
    );
    b.screenshot(&target_dir().join("dashboard-phone.png"), 390, true);
    b.viewport(1280, 900, false);

    // Deleting the tailed topic ends the tail with a note.
    assert_eq!(http(s.addr, "DELETE", "/topics/tail.me", None).status, 200);
    b.wait_for(
        "the tail to stop",
        "document.querySelector('#tailstate').textContent === 'idle'",
    );
    b.wait_for(
        "the topic_deleted note",
        "document.querySelector('#tail li.note')?.textContent === 'The topic was deleted.'",
    );
    assert_no_page_errors(&mut b);
}

#[test]
#[ignore = "needs chromium: scripts/test.sh"]
fn dashboard_asks_for_a_key_and_says_when_it_is_wrong() {
    let s = start_with(|c| c.api_keys = vec![KEY.into()]);
    let mut b = Browser::launch();
    b.navigate(&format!("http://{}/dashboard", s.addr));

    b.wait_for(
        "the key prompt",
        "!document.querySelector('#keybox').hidden
         && document.querySelector('#keymsg').textContent.includes('needs an API key')",
    );
    assert_eq!(text(&mut b, "#status"), "key needed");
    // /health needs no key: the uptime shows while the rest waits.
    b.wait_for(
        "the uptime",
        "document.querySelector('#t-uptime').textContent.endsWith('s')",
    );
    assert_eq!(text(&mut b, "#t-conns"), "–");

    set_value(&mut b, "#keyinput", "wrong-key");
    click(&mut b, "#keyform button[type=submit]");
    b.wait_for(
        "the wrong-key message",
        "document.querySelector('#keymsg').textContent.includes('refused (401')",
    );
    assert_eq!(
        b.eval("document.querySelector('#keybox').hidden"),
        json!(false)
    );
    assert_eq!(text(&mut b, "#status"), "key refused");
    assert_eq!(text(&mut b, "#t-conns"), "–");

    set_value(&mut b, "#keyinput", KEY);
    click(&mut b, "#keyform button[type=submit]");
    b.wait_for(
        "the data, once the key is right",
        "document.querySelector('#keybox').hidden && document.querySelector('#status').textContent === 'live'
         && document.querySelector('#t-conns').textContent !== '–'",
    );
    assert_eq!(
        b.eval("sessionStorage.getItem('pubsubd.api_key')"),
        json!(KEY)
    );

    // The key goes with REST (X-API-Key) and with the WebSocket (?api_key=).
    set_value(&mut b, "#newtopic", "keyed");
    click(&mut b, "#createform button");
    wait_rest("the page to create a topic with the key", || {
        topic_names(s.addr, Some(KEY)).contains(&"keyed".to_string())
    });
    set_value(&mut b, "#tailtopic", "keyed");
    click(&mut b, "#tailbtn");
    b.wait_for(
        "the keyed tail to be live",
        "document.querySelector('#tailstate').textContent === 'live'",
    );

    // The key lasts for the tab: a reload does not ask again.
    b.navigate(&format!("http://{}/dashboard", s.addr));
    b.wait_for(
        "the data after a reload",
        "document.readyState === 'complete' && document.querySelector('#status').textContent === 'live'
         && document.querySelector('#keybox').hidden",
    );
    assert_no_page_errors(&mut b);
}
