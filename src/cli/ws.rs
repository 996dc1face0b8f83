//! The WebSocket side of the client above the socket: reading server
//! messages as JSON, and `pub`.

use std::collections::VecDeque;
use std::io::{self, BufRead};
use std::process::ExitCode;
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::time::Duration;

use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::websocket::{Inbound, Socket, WsError, connect, describe, is_timeout};
use super::{Client, Failure};

/// Publishes in flight at once when reading stdin; answers come back in order.
const WINDOW: usize = 32;
/// While stdin is quiet, how often to read the socket so heartbeats get their
/// pong well within any idle timeout the server may use.
const IDLE_POLL: Duration = Duration::from_millis(50);

/// What one read produced.
pub(super) enum Received {
    /// A server message: its text as received and its parsed JSON.
    Json(String, Value),
    /// The server's close frame, with its code and reason when it has them.
    Closed(Option<(u16, String)>),
    /// Control frames (answered by the socket), binary or non-JSON text.
    Other,
}

/// Reads one message, waiting at most `timeout` (`None`: forever).
pub(super) fn receive(socket: &mut Socket, timeout: Option<Duration>) -> Result<Received, WsError> {
    Ok(match socket.read(timeout)? {
        Inbound::Text(text) => match serde_json::from_str::<Value>(&text) {
            Ok(value) => Received::Json(text, value),
            Err(_) => {
                eprintln!("pubsubd: ignoring a message that is not JSON: {text}");
                Received::Other
            }
        },
        Inbound::Closed(frame) => Received::Closed(frame),
        Inbound::Other => Received::Other,
    })
}

pub(super) fn field<'a>(value: &'a Value, name: &str) -> Option<&'a str> {
    value.get(name).and_then(Value::as_str)
}

/// `CODE: message` of an `error` answer.
pub(super) fn error_text(value: &Value) -> String {
    let error = value.get("error");
    let code = error.and_then(|e| field(e, "code")).unwrap_or("ERROR");
    let message = error
        .and_then(|e| field(e, "message"))
        .unwrap_or("(no message)");
    format!("{code}: {message}")
}

pub(super) fn close_text(frame: &Option<(u16, String)>) -> String {
    match frame {
        None => "no close code".to_string(),
        Some((code, reason)) if reason.is_empty() => format!("close code {code}"),
        Some((code, reason)) => format!("close code {code}: {reason}"),
    }
}

/// A payload from the command line or stdin: valid JSON, kept verbatim.
fn parse_payload(text: &str) -> Result<Box<RawValue>, String> {
    serde_json::from_str::<Box<RawValue>>(text).map_err(|e| {
        let t = text.trim_start();
        let looks_bare = !t.starts_with(['{', '[', '"', '-'])
            && !t.starts_with(|c: char| c.is_ascii_digit())
            && !["true", "false", "null"].iter().any(|w| t.starts_with(w));
        if looks_bare {
            format!("{e} (a string payload needs JSON quotes, e.g. '\"hello\"')")
        } else {
            e.to_string()
        }
    })
}

/// One publishing connection and its requests awaiting an answer.
struct Publisher<'a> {
    socket: Socket,
    topic: &'a str,
    client_id: Option<&'a str>,
    timeout: Duration,
    /// `(request_id, stdin line or 0)` in sending order.
    pending: VecDeque<(String, usize)>,
    sent: u64,
    acknowledged: u64,
}

impl Publisher<'_> {
    fn failed(&self, what: &str, err: &WsError) -> Failure {
        Failure::Failed(format!(
            "publish to '{}' failed: {what}: {}",
            self.topic,
            describe(err, self.timeout)
        ))
    }

    fn send(&mut self, payload: &RawValue, line: usize) -> Result<(), Failure> {
        self.sent += 1;
        let request_id = format!("p{}", self.sent);
        let mut frame = json!({
            "type": "publish",
            "topic": self.topic,
            "request_id": request_id,
        });
        if let Some(id) = self.client_id {
            frame["client_id"] = json!(id);
        }
        // The payload goes in verbatim: re-encoding could change its numbers.
        let head = frame.to_string();
        let head = head.strip_suffix('}').unwrap_or(&head);
        let text = format!(
            r#"{head},"message":{{"id":"{}","payload":{}}}}}"#,
            uuid::Uuid::new_v4(),
            payload.get()
        );
        self.socket
            .send_text(text.as_bytes())
            .map_err(|e| self.failed("sending", &e))?;
        self.pending.push_back((request_id, line));
        Ok(())
    }

    /// Waits for the answer to one pending publish.
    fn await_answer(&mut self) -> Result<(), Failure> {
        loop {
            let message = match receive(&mut self.socket, Some(self.timeout)) {
                Ok(Received::Json(_, message)) => message,
                Ok(Received::Other) => continue,
                Ok(Received::Closed(frame)) => {
                    return Err(Failure::Failed(format!(
                        "publish to '{}' failed: the server closed the connection ({}) with {} message(s) unacknowledged",
                        self.topic,
                        close_text(&frame),
                        self.pending.len()
                    )));
                }
                Err(e) => return Err(self.failed("waiting for the acknowledgement", &e)),
            };
            let kind = field(&message, "type").unwrap_or("");
            if kind == "info" && field(&message, "msg") == Some("server_shutdown") {
                eprintln!("pubsubd: the server is shutting down");
            }
            if kind != "ack" && kind != "error" {
                continue;
            }
            let request_id = field(&message, "request_id");
            let position = self
                .pending
                .iter()
                .position(|(id, _)| Some(id.as_str()) == request_id);
            let line = match position.and_then(|i| self.pending.remove(i)) {
                Some((_, line)) => line,
                None if kind == "ack" => continue,
                None => 0,
            };
            if kind == "ack" {
                self.acknowledged += 1;
                return Ok(());
            }
            let at = if line > 0 {
                format!(" (stdin line {line})")
            } else {
                String::new()
            };
            return Err(Failure::Failed(format!(
                "publish to '{}' failed{at}: {}",
                self.topic,
                error_text(&message)
            )));
        }
    }

    /// Reads whatever the server sent while we had nothing to say, answering
    /// its heartbeats so an idle publisher is not closed for idleness.
    fn keep_alive(&mut self) -> Result<(), Failure> {
        loop {
            match receive(&mut self.socket, Some(Duration::from_millis(1))) {
                Ok(Received::Closed(frame)) => {
                    return Err(Failure::Failed(format!(
                        "the server closed the connection ({})",
                        close_text(&frame)
                    )));
                }
                Ok(Received::Json(_, message)) => {
                    if field(&message, "msg") == Some("server_shutdown") {
                        eprintln!("pubsubd: the server is shutting down");
                    }
                }
                Ok(Received::Other) => {}
                Err(e) if is_timeout(&e) => return Ok(()),
                Err(e) => return Err(self.failed("connection lost", &e)),
            }
        }
    }

    /// Sends stdin's lines, at most [`WINDOW`] unanswered at a time.
    fn publish_lines(&mut self, lines: &mpsc::Receiver<io::Result<String>>) -> Result<(), Failure> {
        let mut line_number = 0;
        let mut input_open = true;
        let mut stop = None;
        loop {
            while input_open && stop.is_none() && self.pending.len() < WINDOW {
                // With nothing in flight, wait for input; otherwise only take what is ready.
                let next = if self.pending.is_empty() {
                    match lines.recv_timeout(IDLE_POLL) {
                        Ok(line) => line,
                        Err(RecvTimeoutError::Timeout) => {
                            self.keep_alive()?;
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => {
                            input_open = false;
                            break;
                        }
                    }
                } else {
                    match lines.try_recv() {
                        Ok(line) => line,
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            input_open = false;
                            break;
                        }
                    }
                };
                line_number += 1;
                match next {
                    Err(e) => stop = Some(Failure::Failed(format!("cannot read stdin: {e}"))),
                    Ok(text) if text.trim().is_empty() => {}
                    Ok(text) => match parse_payload(&text) {
                        Ok(payload) => self.send(&payload, line_number)?,
                        Err(e) => {
                            stop = Some(Failure::Input(format!(
                                "invalid JSON on stdin line {line_number}: {e}"
                            )))
                        }
                    },
                }
            }
            if !self.pending.is_empty() {
                self.await_answer()?;
            } else if !input_open || stop.is_some() {
                return stop.map_or(Ok(()), Err);
            }
        }
    }
}

/// `pubsubd pub`: one message from `json`, or one per stdin line.
pub fn publish(
    client: &Client,
    topic: &str,
    json: Option<&str>,
    client_id: Option<&str>,
) -> Result<ExitCode, Failure> {
    let payload = match json {
        Some(text) => Some(
            parse_payload(text)
                .map_err(|e| Failure::Input(format!("invalid JSON payload: {e}")))?,
        ),
        None => None,
    };
    let mut publisher = Publisher {
        socket: connect(client)?,
        topic,
        client_id,
        timeout: client.timeout,
        pending: VecDeque::new(),
        sent: 0,
        acknowledged: 0,
    };
    let result = match payload {
        Some(payload) => publisher
            .send(&payload, 0)
            .and_then(|()| publisher.await_answer()),
        None => {
            // SAFETY: isatty only inspects the file descriptor.
            if unsafe { libc::isatty(libc::STDIN_FILENO) } == 1 {
                eprintln!(
                    "pubsubd: publishing one JSON payload per line to '{topic}' (Ctrl-D ends)"
                );
            }
            let (sender, lines) = mpsc::sync_channel(WINDOW);
            std::thread::spawn(move || {
                for line in io::stdin().lock().lines() {
                    let failed = line.is_err();
                    if sender.send(line).is_err() || failed {
                        break;
                    }
                }
            });
            publisher.publish_lines(&lines).map_err(|failure| {
                let done = publisher.acknowledged;
                match failure {
                    Failure::Failed(m) if done > 0 => {
                        Failure::Failed(format!("{m} ({done} earlier message(s) were published)"))
                    }
                    Failure::Input(m) if done > 0 => {
                        Failure::Input(format!("{m} ({done} earlier message(s) were published)"))
                    }
                    other => other,
                }
            })
        }
    };
    publisher.socket.hang_up();
    result.map(|()| ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_kept_verbatim_and_bare_words_get_a_hint() {
        assert_eq!(
            parse_payload(" {\"a\": 1.50} ").unwrap().get(),
            "{\"a\": 1.50}"
        );
        assert_eq!(parse_payload("-5").unwrap().get(), "-5");
        assert!(parse_payload("hello").unwrap_err().contains("JSON quotes"));
        assert!(
            !parse_payload("{\"a\":")
                .unwrap_err()
                .contains("JSON quotes")
        );
        assert!(parse_payload("").is_err());
    }
}
