//! `topics`, `stats` and `healthcheck`: REST requests and their output.

use std::io::Write;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::endpoint::encode_segment;
use super::http::{self, Response};
use super::{Client, Failure};

fn call(
    client: &Client,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<Response, Failure> {
    http::request(
        &client.endpoint,
        method,
        path,
        client.api_key.as_deref(),
        body,
        client.timeout,
    )
    .map_err(Failure::Failed)
}

/// The response of a request that must succeed, or why it did not.
fn expect_success(response: Response, what: &str) -> Result<Response, Failure> {
    if response.is_success() {
        Ok(response)
    } else {
        Err(Failure::Failed(format!(
            "{what} failed: {}",
            response.error_text()
        )))
    }
}

fn json_body(response: &Response, what: &str) -> Result<Value, Failure> {
    serde_json::from_slice(&response.body)
        .map_err(|e| Failure::Failed(format!("{what}: the server's answer is not JSON ({e})")))
}

fn print(text: &str) -> Result<ExitCode, Failure> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        // A closed pipe (`| head`) is the reader's choice, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(Failure::Failed(format!("cannot write to stdout: {e}"))),
    }
}

fn raw(response: &Response) -> String {
    String::from_utf8_lossy(&response.body)
        .trim_end()
        .to_string()
}

pub fn list_topics(client: &Client, as_json: bool) -> Result<ExitCode, Failure> {
    let what = "listing topics";
    let response = expect_success(call(client, "GET", "/topics", None)?, what)?;
    if as_json {
        return print(&raw(&response));
    }
    let body = json_body(&response, what)?;
    let topics = body
        .get("topics")
        .and_then(Value::as_array)
        .ok_or_else(|| Failure::Failed(format!("{what}: the answer has no \"topics\" list")))?;
    if topics.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let lines: Vec<String> = topics
        .iter()
        .map(|topic| {
            let name = topic.get("name").and_then(Value::as_str).unwrap_or("?");
            let subscribers = topic.get("subscribers").map_or(json!(null), Value::clone);
            format!("{name}\t{subscribers}")
        })
        .collect();
    print(&lines.join("\n"))
}

pub fn create_topic(client: &Client, name: &str, as_json: bool) -> Result<ExitCode, Failure> {
    let body = json!({ "name": name }).to_string();
    let response = call(client, "POST", "/topics", Some(body.as_bytes()))?;
    let response = expect_success(response, &format!("creating topic '{name}'"))?;
    if as_json {
        return print(&raw(&response));
    }
    print(&format!("created topic '{name}'"))
}

pub fn delete_topic(client: &Client, name: &str, as_json: bool) -> Result<ExitCode, Failure> {
    let path = format!("/topics/{}", encode_segment(name));
    let response = call(client, "DELETE", &path, None)?;
    let response = expect_success(response, &format!("deleting topic '{name}'"))?;
    if as_json {
        return print(&raw(&response));
    }
    print(&format!("deleted topic '{name}'"))
}

pub fn stats(client: &Client) -> Result<ExitCode, Failure> {
    let what = "reading stats";
    let response = expect_success(call(client, "GET", "/stats", None)?, what)?;
    let body = json_body(&response, what)?;
    let pretty =
        serde_json::to_string_pretty(&body).map_err(|e| Failure::Failed(format!("{what}: {e}")))?;
    print(&pretty)
}

/// Exit 0 on `200`, 1 otherwise; the body goes to stdout so that
/// `docker inspect` shows it in the health log.
pub fn healthcheck(client: &Client) -> Result<ExitCode, Failure> {
    let response = call(client, "GET", "/health", None)?;
    if response.status != 200 {
        return Err(Failure::Failed(format!(
            "unhealthy: GET {}/health answered {}",
            client.endpoint.http_url(),
            response.error_text()
        )));
    }
    print(&raw(&response))
}
