//! `pubsubd bench`: a load generator for any server speaking the protocol.
//!
//! One thread, one `mio::Poll`, every client on it. Prints one JSON object on
//! stdout (for scripts) and a short table on stderr (for people).

mod engine;
mod hist;
mod report;
mod sys;
mod wire;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::cli::endpoint::Endpoint;
use crate::flags::{self, Opt, Token, Tokens};
use crate::refusal::Refusal;
use engine::{Engine, Plan, Role, Tally, Target};
use report::render;

pub const USAGE: &str = "\
Usage: pubsubd bench <fanout|conns|slow> [options]

Scenarios:
  fanout   S subscribers on T topics, P publishers publishing as fast as a
           window of unanswered publishes allows, or at --rate
  conns    C idle subscribers on one topic, then K publishes to all of them
  slow     one subscriber that never reads beside F normal ones

Options (defaults in brackets):
  --url URL            server [PUBSUBD_URL or http://127.0.0.1:8080]
  --pub-url URL        where publishers connect (repeatable: publisher i to the
                       i-th mod n; topics are created and deleted through the
                       first) [--url]
  --sub-url URL        where subscribers connect (repeatable: spread
                       round-robin), e.g. other nodes of a cluster [--url]
  --api-key KEY        [PUBSUBD_API_KEY]
  --pub-key KEY        publishers' key, e.g. a --publish-key [--api-key]
  --sub-key KEY        subscribers' key, e.g. a --subscribe-key [--api-key]
  --publishers P       [1]
  --subscribers S      fanout: [1]; slow: normal subscribers [10]
  --topics T           [1]
  --size BYTES         payload size [128]
  --window N           unanswered publishes per publisher [256]
  --rate N             publishes per second over all publishers [as fast as
                       the window allows; slow: 10000]
  --max-backlog N      events sent but not yet received, per subscriber,
                       before publishers wait [1000]
  --warmup SECONDS     [1]
  --duration SECONDS   measured window [5; slow: 10]
  --count N            publish exactly N per publisher and measure all of it
  --connections C      conns: [1000]
  --messages K         conns: [10]
  --sources N          spread connections over 127.0.0.1..N [1 per 25000]
  --server-pid PID     report the server's CPU and memory
  --spin               busy-poll instead of sleeping: the bench's own wake-up
                       latency stays out of the latencies (costs one core)
  --no-create          do not create (and afterwards delete) the topics over REST
  --markdown LABEL     print one Markdown table row on stderr instead of the table
";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Scenario {
    Fanout,
    Conns,
    Slow,
}

struct Options {
    scenario: Scenario,
    url: String,
    pub_urls: Vec<String>,
    sub_urls: Vec<String>,
    api_key: Option<String>,
    pub_key: Option<String>,
    sub_key: Option<String>,
    publishers: u64,
    subscribers: Option<u64>,
    topics: u64,
    size: usize,
    window: u64,
    rate: Option<f64>,
    max_backlog: u64,
    warmup: f64,
    duration: Option<f64>,
    count: Option<u64>,
    connections: u64,
    messages: u64,
    sources: Option<u8>,
    server_pid: Option<u32>,
    create: bool,
    spin: bool,
    markdown: Option<String>,
}

const OPTIONS: &[Opt] = &[
    Opt::value("url"),
    Opt::value("pub-url"),
    Opt::value("sub-url"),
    Opt::value("api-key"),
    Opt::value("pub-key"),
    Opt::value("sub-key"),
    Opt::value("publishers"),
    Opt::value("subscribers"),
    Opt::value("topics"),
    Opt::value("size"),
    Opt::value("window"),
    Opt::value("rate"),
    Opt::value("max-backlog"),
    Opt::value("warmup"),
    Opt::value("duration"),
    Opt::value("count"),
    Opt::value("connections"),
    Opt::value("messages"),
    Opt::value("sources"),
    Opt::value("server-pid"),
    Opt::switch("no-create"),
    Opt::switch("spin"),
    Opt::value("markdown"),
    flags::HELP,
];

/// The options, or `Err("")` when the usage was asked for (or nothing at all).
fn parse(args: Vec<String>) -> Result<Options, String> {
    if args.is_empty() {
        return Err(String::new());
    }
    let mut scenario = None;
    let mut o = Options {
        scenario: Scenario::Fanout,
        url: std::env::var("PUBSUBD_URL").unwrap_or_else(|_| "http://127.0.0.1:8080".into()),
        pub_urls: Vec::new(),
        sub_urls: Vec::new(),
        api_key: std::env::var("PUBSUBD_API_KEY")
            .ok()
            .filter(|k| !k.is_empty()),
        pub_key: None,
        sub_key: None,
        publishers: 1,
        subscribers: None,
        topics: 1,
        size: 128,
        window: 256,
        rate: None,
        max_backlog: 1000,
        warmup: 1.0,
        duration: None,
        count: None,
        connections: 1000,
        messages: 10,
        sources: None,
        server_pid: None,
        create: true,
        spin: false,
        markdown: None,
    };
    fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String> {
        v.parse()
            .map_err(|_| format!("--{name}: '{v}' is not a valid number"))
    }
    fn positive(name: &str, v: &str) -> Result<u64, String> {
        match num::<u64>(name, v)? {
            0 => Err(format!("--{name} must be at least 1")),
            n => Ok(n),
        }
    }
    for token in Tokens::new(args, &[OPTIONS]) {
        let (name, value) = match token.map_err(|e| e.to_string())? {
            Token::Positional(arg) if scenario.is_some() => {
                return Err(format!("unexpected argument '{arg}'"));
            }
            Token::Positional(arg) => {
                scenario = Some(match arg.as_str() {
                    "fanout" => Scenario::Fanout,
                    "conns" => Scenario::Conns,
                    "slow" => Scenario::Slow,
                    _ => return Err(format!("unknown scenario '{arg}'")),
                });
                continue;
            }
            Token::Flag(name, value) => (name, value.unwrap_or_default()),
        };
        match name {
            "url" => o.url = value,
            "pub-url" => o.pub_urls.push(value),
            "sub-url" => o.sub_urls.push(value),
            "api-key" => o.api_key = Some(value),
            "pub-key" => o.pub_key = Some(value),
            "sub-key" => o.sub_key = Some(value),
            "publishers" => o.publishers = positive(name, &value)?,
            "subscribers" => o.subscribers = Some(num(name, &value)?),
            "topics" => o.topics = positive(name, &value)?,
            "size" => o.size = num(name, &value)?,
            "window" => o.window = positive(name, &value)?,
            "rate" => o.rate = Some(num::<f64>(name, &value)?).filter(|r| *r > 0.0),
            "max-backlog" => o.max_backlog = positive(name, &value)?,
            "warmup" => o.warmup = num(name, &value)?,
            "duration" => o.duration = Some(num(name, &value)?),
            "count" => o.count = Some(positive(name, &value)?),
            "connections" => o.connections = positive(name, &value)?,
            "messages" => o.messages = positive(name, &value)?,
            "sources" => o.sources = Some(num::<u8>(name, &value)?.max(1)),
            "server-pid" => o.server_pid = Some(num(name, &value)?),
            "no-create" => o.create = false,
            "spin" => o.spin = true,
            "markdown" => o.markdown = Some(value),
            "help" => return Err(String::new()),
            _ => unreachable!("option --{name} is declared but not applied"),
        }
    }
    o.scenario = scenario.ok_or("missing the scenario: fanout, conns or slow")?;
    if o.pub_urls.is_empty() {
        o.pub_urls.push(o.url.clone());
    }
    if o.sub_urls.is_empty() {
        o.sub_urls.push(o.url.clone());
    }
    Ok(o)
}

pub fn main(args: Vec<String>) -> ExitCode {
    let options = match parse(args) {
        Ok(o) => o,
        Err(e) if e.is_empty() => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("pubsubd bench: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(report) => {
            println!("{}", Value::Object(report.json));
            eprint!("{}", report.text);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pubsubd bench: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Report {
    json: Map<String, Value>,
    text: String,
}

/// CPU and clock readings at one moment, to difference over a window.
struct Mark {
    at: Instant,
    own_cpu: Duration,
    server_cpu: Option<Duration>,
    acked: u64,
    received: u64,
}

fn mark(engine: &Engine, server_pid: Option<u32>) -> Mark {
    Mark {
        at: Instant::now(),
        own_cpu: sys::own_cpu(),
        server_cpu: server_pid.and_then(sys::process_cpu),
        acked: engine.tally.acked,
        received: engine.tally.received,
    }
}

/// A URL's endpoint (for REST) and where its WebSocket clients connect.
fn target(url: &str) -> Result<(Endpoint, Target), String> {
    let endpoint = Endpoint::parse(url)?;
    let addr = endpoint
        .resolve()
        .map_err(|e| format!("cannot resolve {url}: {e}"))?
        .into_iter()
        .next()
        .ok_or_else(|| format!("no address for {url}"))?;
    let target = Target {
        addr,
        host: endpoint.authority(),
        ws_path: endpoint.path("/ws"),
    };
    Ok((endpoint, target))
}

fn run(o: &Options) -> Result<Report, String> {
    let mut pub_targets = Vec::new();
    let mut endpoint = None;
    for url in &o.pub_urls {
        let (e, t) = target(url)?;
        // Topics are created and deleted through the first publisher URL.
        endpoint.get_or_insert(e);
        pub_targets.push(t);
    }
    let endpoint = endpoint.ok_or("no --pub-url")?;
    let sub_targets = o
        .sub_urls
        .iter()
        .map(|url| target(url).map(|(_, t)| t))
        .collect::<Result<Vec<_>, _>>()?;
    let addr = sub_targets[0].addr;
    let fd_limit = crate::sys::raise_fd_limit();
    let subscribers = match o.scenario {
        Scenario::Fanout => o.subscribers.unwrap_or(1),
        Scenario::Slow => o.subscribers.unwrap_or(10),
        Scenario::Conns => o.connections,
    };
    let needed = subscribers + o.publishers + 16;
    if needed > fd_limit {
        return Err(format!(
            "{needed} connections need more open files than this process may have ({fd_limit})"
        ));
    }
    let topics: Vec<String> = (0..if o.scenario == Scenario::Fanout {
        o.topics
    } else {
        1
    })
        .map(|i| format!("bench.{}.{i}", std::process::id()))
        .collect();
    if o.create {
        create_topics(&endpoint, o.api_key.as_deref(), &topics)?;
    }
    let sources = sources(o, addr, subscribers);
    let plan = Plan {
        pub_targets,
        sub_targets,
        pub_key: o.pub_key.clone().or_else(|| o.api_key.clone()),
        sub_key: o.sub_key.clone().or_else(|| o.api_key.clone()),
        size: o.size,
        window: if o.scenario == Scenario::Conns {
            1
        } else {
            o.window
        },
        rate: match (o.scenario, o.rate) {
            (_, Some(r)) => Some(r / o.publishers as f64),
            (Scenario::Slow, None) => Some(10_000.0 / o.publishers as f64),
            _ => None,
        },
        max_backlog: o.max_backlog.saturating_mul(subscribers.max(1)),
        lockstep: o.scenario == Scenario::Conns,
        publishers: o.publishers,
        count: if o.scenario == Scenario::Conns {
            Some(o.messages)
        } else {
            o.count
        },
        sources,
        connect_batch: 256,
        max_frame: 64 << 20,
        spin: o.spin,
        topics,
    };
    let topic_count = plan.topics.len();
    let topic_names = plan.topics.clone();
    let mut engine = Engine::new(plan).map_err(|e| format!("cannot start: {e}"))?;
    let open_timeout = Duration::from_secs(30 + subscribers / 500);
    let rss_idle = o.server_pid.and_then(sys::process_rss_kib);

    let mut roles: Vec<Role> = (0..subscribers)
        .map(|i| Role::Subscriber {
            topic: i as usize % topic_count,
        })
        .collect();
    if o.scenario == Scenario::Slow {
        roles.insert(0, Role::Stalled { topic: 0 });
    }
    let open_time = engine.open(&roles, open_timeout)?;
    let rss_open = o.server_pid.and_then(sys::process_rss_kib);
    let publishers: Vec<Role> = (0..o.publishers).map(|id| Role::Publisher { id }).collect();
    engine.open(&publishers, Duration::from_secs(10))?;

    let io = |e: std::io::Error| format!("poll failed: {e}");
    let quiet = Duration::from_secs(3);
    let (start, end) = if engine_counts(o) {
        engine.measuring = true;
        let start = mark(&engine, o.server_pid);
        engine.publish_count(quiet).map_err(io)?;
        (start, mark(&engine, o.server_pid))
    } else {
        engine
            .run_for(Duration::from_secs_f64(o.warmup), true)
            .map_err(io)?;
        engine.measuring = true;
        let start = mark(&engine, o.server_pid);
        let default = if o.scenario == Scenario::Slow {
            10.0
        } else {
            5.0
        };
        let window = Duration::from_secs_f64(o.duration.unwrap_or(default));
        engine.run_for(window, true).map_err(io)?;
        let end = mark(&engine, o.server_pid);
        engine.measuring = false;
        engine.drain(quiet).map_err(io)?;
        (start, end)
    };
    if o.scenario == Scenario::Slow {
        engine
            .read_stalled(Duration::from_millis(500))
            .map_err(io)?;
    }
    let rss_end = o.server_pid.and_then(sys::process_rss_kib);
    let still_open = engine.connections();
    engine.close_all();
    if o.create {
        delete_topics(&endpoint, o.api_key.as_deref(), &topic_names);
    }

    let mut r = summarize(o, &engine, &start, &end, subscribers, still_open);
    let json = &mut r.json;
    if let Some((rss, peak)) = rss_end {
        json.insert("server_rss_kib".into(), json!(rss));
        json.insert("server_peak_rss_kib".into(), json!(peak));
    }
    if o.scenario == Scenario::Conns {
        json.insert("open_s".into(), json!(round(open_time.as_secs_f64(), 3)));
        let spread = &engine.tally.spread;
        json.insert(
            "deliver_all_ms".into(),
            json!({
                "publishes": spread.count(),
                "p50": round(spread.quantile(0.5) as f64 / 1e6, 2),
                "max": round(spread.max() as f64 / 1e6, 2),
            }),
        );
        if let (Some((idle, _)), Some((open, _))) = (rss_idle, rss_open) {
            json.insert("server_rss_idle_kib".into(), json!(idle));
            json.insert("server_rss_open_kib".into(), json!(open));
            json.insert(
                "server_bytes_per_connection".into(),
                json!(open.saturating_sub(idle) * 1024 / subscribers.max(1)),
            );
        }
    }
    if o.scenario == Scenario::Slow {
        let outcomes: Vec<Value> = engine
            .stalled_outcomes()
            .into_iter()
            .map(|(code, closed)| json!({"close_code": code, "closed_by_server": closed}))
            .collect();
        json.insert(
            "stalled".into(),
            json!({
                "events_received": engine.tally.stalled_received,
                "outcomes": outcomes,
            }),
        );
    }
    r.text = render(o, &r.json);
    Ok(r)
}

fn engine_counts(o: &Options) -> bool {
    o.scenario == Scenario::Conns || o.count.is_some()
}

/// Source addresses: one per 25 000 connections (a source address has about
/// 28 000 ephemeral ports), only for a loopback server.
fn sources(o: &Options, addr: SocketAddr, connections: u64) -> Vec<Ipv4Addr> {
    let n = o.sources.map(u64::from).unwrap_or(connections / 25_000 + 1);
    if n <= 1 || !addr.ip().is_loopback() || !addr.is_ipv4() {
        return Vec::new();
    }
    (1..=n.min(250) as u8)
        .map(|i| Ipv4Addr::new(127, 0, 0, i))
        .collect()
}

fn create_topics(
    endpoint: &Endpoint,
    api_key: Option<&str>,
    topics: &[String],
) -> Result<(), String> {
    for topic in topics {
        let body = json!({ "name": topic }).to_string();
        let response = crate::cli::http::request(
            endpoint,
            "POST",
            "/topics",
            api_key,
            Some(body.as_bytes()),
            Duration::from_secs(5),
        )?;
        // A topic that exists already is as good as a new one.
        if !response.is_success() && response.status != Refusal::TopicExists.status() {
            return Err(format!(
                "creating topic {topic} failed: {}",
                response.error_text()
            ));
        }
    }
    Ok(())
}

/// Leaves the server as the bench found it; a failure here changes no result.
fn delete_topics(endpoint: &Endpoint, api_key: Option<&str>, topics: &[String]) {
    for topic in topics {
        let path = format!("/topics/{}", crate::cli::endpoint::encode_segment(topic));
        let _ = crate::cli::http::request(
            endpoint,
            "DELETE",
            &path,
            api_key,
            None,
            Duration::from_secs(5),
        );
    }
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

fn summarize(
    o: &Options,
    engine: &Engine,
    start: &Mark,
    end: &Mark,
    subscribers: u64,
    still_open: usize,
) -> Report {
    let t: &Tally = &engine.tally;
    let secs = end.at.duration_since(start.at).as_secs_f64().max(1e-9);
    let expected = engine.expected();
    let distinct = engine.distinct();
    let us = |ns: u64| round(ns as f64 / 1000.0, 1);
    let cpu = |a: Duration, b: Duration| round((b - a).as_secs_f64() / secs * 100.0, 1);
    let mut json = Map::new();
    let scenario = match o.scenario {
        Scenario::Fanout => "fanout",
        Scenario::Conns => "conns",
        Scenario::Slow => "slow",
    };
    json.insert("scenario".into(), json!(scenario));
    json.insert("publishers".into(), json!(o.publishers));
    json.insert("subscribers".into(), json!(subscribers));
    json.insert("topics".into(), json!(engine_topics(o)));
    json.insert("size".into(), json!(o.size));
    json.insert("seconds".into(), json!(round(secs, 3)));
    json.insert(
        "published_per_s".into(),
        json!(round((end.acked - start.acked) as f64 / secs, 0)),
    );
    json.insert(
        "delivered_per_s".into(),
        json!(round((end.received - start.received) as f64 / secs, 0)),
    );
    json.insert("published".into(), json!(t.sent));
    json.insert("acked".into(), json!(t.acked));
    json.insert("expected".into(), json!(expected));
    json.insert("received".into(), json!(t.received));
    json.insert("lost".into(), json!(expected.saturating_sub(distinct)));
    json.insert("duplicates".into(), json!(t.duplicates));
    json.insert("order_violations".into(), json!(t.order_violations));
    json.insert("foreign_events".into(), json!(t.foreign));
    json.insert("dropped_reported".into(), json!(t.dropped_reported));
    let h = &t.latency;
    json.insert(
        "latency_us".into(),
        json!({
            "samples": h.count(),
            "p50": us(h.quantile(0.5)),
            "p90": us(h.quantile(0.9)),
            "p99": us(h.quantile(0.99)),
            "p99.9": us(h.quantile(0.999)),
            "max": us(h.max()),
        }),
    );
    json.insert("errors".into(), json!(t.errors));
    let codes: Map<String, Value> = t
        .close_codes
        .iter()
        .map(|(c, n)| (c.to_string(), json!(n)))
        .collect();
    json.insert("server_closed".into(), json!(t.server_closed));
    json.insert("close_codes".into(), Value::Object(codes));
    json.insert("connections_open_at_end".into(), json!(still_open));
    json.insert(
        "bench_cpu_pct".into(),
        json!(cpu(start.own_cpu, end.own_cpu)),
    );
    if let (Some(a), Some(b)) = (start.server_cpu, end.server_cpu) {
        json.insert("server_cpu_pct".into(), json!(cpu(a, b)));
    }
    Report {
        json,
        text: String::new(),
    }
}

fn engine_topics(o: &Options) -> u64 {
    if o.scenario == Scenario::Fanout {
        o.topics
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::report::group;
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn options_parse_and_refuse_nonsense() {
        let o = parse(args(
            "fanout --publishers 4 --subscribers=100 --topics 10 --rate 1000",
        ))
        .unwrap();
        assert!(o.scenario == Scenario::Fanout);
        assert_eq!((o.publishers, o.subscribers, o.topics), (4, Some(100), 10));
        assert_eq!(o.rate, Some(1000.0));
        assert!(parse(args("fanout --publishers 0")).is_err());
        assert!(parse(args("fanout --size big")).is_err());
        assert!(parse(args("fanout --window")).is_err());
        assert!(parse(args("nope")).is_err());
        assert!(parse(args("slow --bogus 1")).is_err());
        assert!(parse(args("--size 5")).is_err());
        assert!(parse(args("fanout conns")).is_err());
        assert!(parse(args("fanout --spin=1")).is_err());
        // Flags may come before the scenario; help wins wherever it stands.
        let o = parse(args("--spin --size=64 conns")).unwrap();
        assert!(o.scenario == Scenario::Conns && o.spin && o.size == 64);
        assert_eq!(parse(args("slow -h")).err().as_deref(), Some(""));
        assert_eq!(parse(args("")).err().as_deref(), Some(""));
    }

    #[test]
    fn pub_and_sub_urls_repeat_and_default_to_url() {
        let o = parse(args("fanout --url http://h:1")).unwrap();
        assert_eq!(
            (o.pub_urls, o.sub_urls),
            (args("http://h:1"), args("http://h:1"))
        );
        let o = parse(args(
            "fanout --pub-url http://a:1 --sub-url http://a:1 --sub-url=http://b:2",
        ))
        .unwrap();
        assert_eq!(o.pub_urls, args("http://a:1"));
        assert_eq!(o.sub_urls, args("http://a:1 http://b:2"));
    }

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1 000");
        assert_eq!(group(1_234_567), "1 234 567");
    }
}
