//! Headless Chromium driven over the DevTools protocol (CDP) on a WebSocket:
//! launch it with `--remote-debugging-port=0`, read the port it chose from
//! `DevToolsActivePort` in its profile directory, find the page target in
//! `/json/list`, then send `Runtime.evaluate`, `Page.navigate`, … on the page's
//! socket. The browser is killed when [`Browser`] drops, whatever happened.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

/// How long the browser may take to start (a loaded 2-core machine is slow).
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one DevTools command may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// How long [`Browser::wait_for`] waits for a condition on the page.
pub const WAIT: Duration = Duration::from_secs(15);

/// The Chromium to use: `$CHROMIUM`, else the first of the usual names on `PATH`.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "CHROMIUM={} is not a file: point it at a Chromium or Chrome binary",
            path.display()
        );
        return path;
    }
    let names = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ];
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in names {
            let exe = dir.join(name);
            if exe.is_file() {
                return exe;
            }
        }
    }
    panic!(
        "no Chromium found (looked for {names:?} on PATH and $CHROMIUM). This test needs a \
         real browser: run scripts/test.sh, which installs Debian's chromium, or \
         `apt-get install -y chromium`, or set CHROMIUM=/path/to/chrome"
    );
}

pub struct Browser {
    child: Child,
    profile: PathBuf,
    page: Option<WebSocket<TcpStream>>,
    next_id: u64,
    /// Uncaught exceptions, console errors and CSP violations seen on the page.
    pub errors: Vec<String>,
}

impl Browser {
    /// Starts headless Chromium with a fresh profile and connects to its page.
    pub fn launch() -> Browser {
        static LAUNCHED: AtomicUsize = AtomicUsize::new(0);
        let exe = chromium();
        let profile = std::env::temp_dir().join(format!(
            "pubsubd-dashboard-{}-{}",
            std::process::id(),
            LAUNCHED.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&profile);
        std::fs::create_dir_all(&profile).expect("create the browser profile directory");
        let log = std::fs::File::create(profile.join("chromium.log")).expect("browser log");
        let child = Command::new(&exe)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--disable-dev-shm-usage",
                "--mute-audio",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
                "--window-size=1280,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            // Its own process group, so that Drop ends the renderers with it.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("could not start {}: {e}", exe.display()));
        let mut browser = Browser {
            child,
            profile,
            page: None,
            next_id: 0,
            errors: Vec::new(),
        };
        let port = browser.devtools_port();
        let url = browser.page_socket_url(port);
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
        stream.set_read_timeout(Some(CALL_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(CALL_TIMEOUT)).unwrap();
        let (ws, _) = tungstenite::client::client(url.as_str(), stream)
            .unwrap_or_else(|e| panic!("DevTools WebSocket handshake with {url}: {e}"));
        browser.page = Some(ws);
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser.call("Log.enable", json!({}));
        browser
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.profile.join("chromium.log")).unwrap_or_default();
        let mut start = log.len().saturating_sub(2000);
        while !log.is_char_boundary(start) {
            start += 1;
        }
        log[start..].to_string()
    }

    fn devtools_port(&mut self) -> u16 {
        let file = self.profile.join("DevToolsActivePort");
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Some(port) = text.lines().next().and_then(|l| l.trim().parse().ok())
            {
                return port;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("Chromium exited ({status}) at start:\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "Chromium wrote no DevToolsActivePort within {START_TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The page target's DevTools socket, from `GET /json/list`.
    fn page_socket_url(&self, port: u16) -> String {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let targets = http_get_json(port, "/json/list");
            let page = targets.as_array().and_then(|list| {
                list.iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            });
            if let Some(url) = page {
                return url.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "no page target in /json/list: {targets}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends one DevTools command and returns its result; events that arrive
    /// meanwhile are checked for page errors.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let ws = self.page.as_mut().expect("connected");
        ws.send(Message::text(
            json!({"id": id, "method": method, "params": params}).to_string(),
        ))
        .unwrap_or_else(|e| panic!("send {method}: {e}"));
        let deadline = Instant::now() + CALL_TIMEOUT;
        loop {
            assert!(Instant::now() < deadline, "{method}: no answer");
            let msg = match self.page.as_mut().expect("connected").read() {
                Ok(Message::Text(t)) => t,
                Ok(_) => continue,
                Err(e) => panic!("{method}: DevTools connection: {e}"),
            };
            let v: Value = serde_json::from_str(msg.as_str()).expect("DevTools sends JSON");
            if v["id"] == id {
                if let Some(err) = v.get("error") {
                    panic!("{method} failed: {err}");
                }
                return v["result"].clone();
            }
            self.note_event(&v);
        }
    }

    fn note_event(&mut self, v: &Value) {
        let p = &v["params"];
        match v["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let d = &p["exceptionDetails"];
                self.errors.push(format!(
                    "uncaught: {} {}",
                    d["text"], d["exception"]["description"]
                ));
            }
            Some("Runtime.consoleAPICalled") if p["type"] == "error" => {
                self.errors.push(format!("console.error: {}", p["args"]));
            }
            // Failed fetches (a 401 the page expects) are "network"; a blocked
            // script or style is "security" and must never happen.
            Some("Log.entryAdded")
                if p["entry"]["source"] != "network" && p["entry"]["level"] == "error" =>
            {
                self.errors.push(format!("log: {}", p["entry"]["text"]));
            }
            _ => {}
        }
    }

    pub fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({ "url": url }));
        assert!(r.get("errorText").is_none(), "navigate to {url}: {r}");
    }

    /// Evaluates `expr` in the page (promises awaited) and returns its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true, "awaitPromise": true}),
        );
        if let Some(e) = r.get("exceptionDetails") {
            panic!(
                "evaluating {expr}: {}",
                e["exception"]["description"]
                    .as_str()
                    .unwrap_or("exception")
            );
        }
        r["result"]["value"].clone()
    }

    /// Polls `expr` until it is truthy and returns its value; fails after [`WAIT`]
    /// showing what the page says.
    pub fn wait_for(&mut self, what: &str, expr: &str) -> Value {
        self.wait_for_within(what, expr, WAIT)
    }

    pub fn wait_for_within(&mut self, what: &str, expr: &str, wait: Duration) -> Value {
        let deadline = Instant::now() + wait;
        // Until the page is there, its elements may be missing: that is "not yet".
        let guarded =
            format!("(() => {{ try {{ return ({expr}); }} catch (_) {{ return null; }} }})()");
        loop {
            let v = self.eval(&guarded);
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let text = self.eval("document.body ? document.body.innerText : ''");
                panic!(
                    "timed out after {wait:?} waiting for {what} ({expr} = {v}); page text:\n{}",
                    text.as_str().unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resizes the viewport (CSS pixels); `mobile` also sets a phone's touch and viewport rules.
    pub fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
    }

    /// Emulates `prefers-color-scheme`.
    pub fn color_scheme(&mut self, scheme: &str) {
        self.call(
            "Emulation.setEmulatedMedia",
            json!({"features": [{"name": "prefers-color-scheme", "value": scheme}]}),
        );
    }

    /// Saves a PNG of the whole page at the given width: the viewport is made as
    /// tall as the page, so nothing scrolls and nothing is cut.
    pub fn screenshot(&mut self, path: &Path, width: u32, mobile: bool) {
        self.viewport(width, 600, mobile);
        let height = self
            .eval("document.documentElement.scrollHeight")
            .as_u64()
            .expect("page height") as u32;
        self.viewport(width, height, mobile);
        let r = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(r["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("screenshot directory");
        }
        std::fs::write(path, png).expect("write screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ask first; then make sure, by the process group this test created.
        if let Some(ws) = self.page.as_mut() {
            let _ = ws.send(Message::text(
                json!({"id": 0, "method": "Browser.close"}).to_string(),
            ));
        }
        self.page = None;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let pgid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) with the id of the process group made for this child.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
        // The renderers, reparented to init, go a moment later.
        let deadline = Instant::now() + Duration::from_secs(3);
        // SAFETY: signal 0 only asks whether the group still has members.
        while unsafe { libc::kill(-pgid, 0) } == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `GET path` from the DevTools HTTP endpoint, as JSON.
fn http_get_json(port: u16, path: &str) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools HTTP");
    s.set_read_timeout(Some(CALL_TIMEOUT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    // DevTools keeps the connection open: read by Content-Length.
    let mut raw = Vec::new();
    let mut chunk = [0u8; 16 << 10];
    loop {
        let n = s.read(&mut chunk).expect("read DevTools HTTP answer");
        assert!(n > 0, "DevTools closed before answering {path}");
        raw.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&raw);
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse::<usize>().ok())?
            })
            .unwrap_or_else(|| panic!("{path}: no Content-Length: {head}"));
        if body.len() >= length {
            return serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0);
    for c in text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
    {
        acc = acc << 6 | u32::from(value(c));
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}
