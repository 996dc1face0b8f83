//! `pubsubd sub`: prints a topic's events as JSON lines, each with its `seq`.
//! `--since` resumes after a seq; `--follow` outlives a dropped connection by
//! reconnecting and resuming after the last seq printed (`protocol.md` §2,
//! "Sequence numbers and recovery").

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::websocket::{self, Socket, WsError, describe, is_timeout};
use super::ws::{Received, close_text, error_text, field, receive};
use super::{Client, Failure};
use crate::wire::frame::{CLOSE_GOING_AWAY, CLOSE_NORMAL};

/// The first wait before reconnecting; it doubles after each failed attempt,
/// up to [`BACKOFF_MAX`], and starts over once a subscription is acknowledged.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Where a subscription starts.
pub(super) enum Start {
    /// Up to N recent events (`last_n`), then live ones.
    LastN(u64),
    /// Every kept event after `seq` (in `epoch`, when given), then live ones.
    Since { seq: u64, epoch: Option<String> },
}

pub(super) struct Options<'a> {
    pub topic: &'a str,
    pub client_id: Option<&'a str>,
    pub start: Start,
    /// Reconnect and resume after a dropped connection.
    pub follow: bool,
}

/// Where the next subscription resumes: after the last seq printed, in the
/// epoch of the last acknowledgement.
struct Position {
    seq: u64,
    epoch: Option<String>,
}

/// How one connection's subscription ended.
enum Ended {
    /// For good: the command exits with this.
    Exit(Result<ExitCode, Failure>),
    /// The connection went away: `--follow` reconnects and resumes, otherwise
    /// the command fails with this.
    Dropped(Failure),
}

/// One `pubsubd sub`, across as many connections as `--follow` takes.
struct Subscriber<'a> {
    client: &'a Client,
    topic: &'a str,
    client_id: String,
    follow: bool,
    /// `None` until a subscription says where the topic is (or `--since` did).
    position: Option<Position>,
    last_n: u64,
    /// Whether any subscription was acknowledged: until then an error answer is final.
    acknowledged: bool,
    backoff: Duration,
}

pub(super) fn subscribe(client: &Client, options: &Options<'_>) -> Result<ExitCode, Failure> {
    let (position, last_n) = match &options.start {
        Start::LastN(n) => (None, *n),
        Start::Since { seq, epoch } => (
            Some(Position {
                seq: *seq,
                epoch: epoch.clone(),
            }),
            0,
        ),
    };
    let mut subscriber = Subscriber {
        client,
        topic: options.topic,
        client_id: options
            .client_id
            .map(String::from)
            .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::new_v4().simple())),
        follow: options.follow,
        position,
        last_n,
        acknowledged: false,
        backoff: BACKOFF_MIN,
    };
    // The first connection must succeed: a wrong URL or key is not worth waiting for.
    let mut socket = websocket::connect(client)?;
    let stdout = io::stdout();
    let mut out = stdout.lock();
    loop {
        let lost = match subscriber.run(socket, &mut out) {
            Ended::Exit(result) => return result,
            Ended::Dropped(failure) if subscriber.follow => failure,
            Ended::Dropped(failure) => return Err(failure),
        };
        eprintln!("pubsubd: {}; reconnecting", lost.message());
        socket = subscriber.reconnect()?;
    }
}

impl Subscriber<'_> {
    /// Connects again, waiting longer after each failure; gives up only when
    /// the server refuses the client itself (4xx: a key no longer valid).
    fn reconnect(&mut self) -> Result<Socket, Failure> {
        loop {
            std::thread::sleep(self.backoff);
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
            match websocket::open(self.client) {
                Ok(socket) => return Ok(socket),
                Err((failure, Some(status))) if (400..500).contains(&status) => {
                    return Err(failure);
                }
                Err((failure @ Failure::Usage(_), _)) => return Err(failure),
                Err(_) => {}
            }
        }
    }

    fn request(&self) -> Value {
        let mut request = json!({
            "type": "subscribe",
            "topic": self.topic,
            "client_id": self.client_id,
            "request_id": "sub",
        });
        match &self.position {
            Some(position) => {
                request["since"] = json!(position.seq);
                if let Some(epoch) = &position.epoch {
                    request["epoch"] = json!(epoch);
                }
            }
            None => request["last_n"] = json!(self.last_n),
        }
        request
    }

    /// Subscribes on `socket` and prints events until the connection ends.
    fn run(&mut self, mut socket: Socket, out: &mut impl Write) -> Ended {
        let url = self.client.endpoint.ws_url();
        let timeout = self.client.timeout;
        let lost = |e: WsError| {
            Failure::Failed(format!(
                "connection to {url} lost: {}",
                describe(&e, timeout)
            ))
        };
        let request = self.request();
        if let Err(e) = socket.send_text(request.to_string().as_bytes()) {
            return Ended::Dropped(lost(e));
        }
        let topic = self.topic;
        let subscribe_deadline = Instant::now() + timeout;
        let mut subscribed = false;
        // Set by an error the server sends before it closes (e.g. SLOW_CONSUMER).
        let mut server_error = None;
        loop {
            let wait =
                (!subscribed).then(|| subscribe_deadline.saturating_duration_since(Instant::now()));
            let (raw, message) = match receive(&mut socket, wait) {
                Ok(Received::Json(raw, message)) => (raw, message),
                Ok(Received::Other) => continue,
                Ok(Received::Closed(frame)) => {
                    socket.hang_up();
                    return match (server_error, &frame) {
                        (Some(error), _) => Ended::Dropped(Failure::Failed(error)),
                        (None, None) => self.closed("no close code"),
                        (None, Some((CLOSE_NORMAL | CLOSE_GOING_AWAY, _))) => {
                            self.closed(&close_text(&frame))
                        }
                        (None, Some(_)) => Ended::Dropped(Failure::Failed(format!(
                            "the server closed the subscription ({})",
                            close_text(&frame)
                        ))),
                    };
                }
                Err(e) if is_timeout(&e) && !subscribed => {
                    return Ended::Dropped(Failure::Failed(format!(
                        "subscribe to '{topic}': no answer within {:.1} s",
                        timeout.as_secs_f64()
                    )));
                }
                Err(e) => {
                    return Ended::Dropped(server_error.map_or_else(|| lost(e), Failure::Failed));
                }
            };
            match field(&message, "type").unwrap_or("") {
                "event" => {
                    // One line per event: the server's JSON is compact, but be sure.
                    let line = if raw.contains('\n') {
                        message.to_string()
                    } else {
                        raw
                    };
                    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                        socket.hang_up();
                        return Ended::Exit(if e.kind() == io::ErrorKind::BrokenPipe {
                            Ok(ExitCode::SUCCESS)
                        } else {
                            Err(Failure::Failed(format!("cannot write to stdout: {e}")))
                        });
                    }
                    if let (Some(position), Some(seq)) = (
                        &mut self.position,
                        message.get("seq").and_then(Value::as_u64),
                    ) {
                        position.seq = seq;
                    }
                }
                "ack" if field(&message, "request_id") == Some("sub") => {
                    subscribed = true;
                    self.acknowledged(&request, &message);
                }
                "error" if field(&message, "request_id") == Some("sub") => {
                    socket.hang_up();
                    let failure = Failure::Failed(format!(
                        "subscribe to '{topic}' failed: {}",
                        error_text(&message)
                    ));
                    // After a restart the topic may come back a moment later.
                    let code = message.get("error").and_then(|e| field(e, "code"));
                    let passing = matches!(code, Some("TOPIC_NOT_FOUND" | "UNAVAILABLE"));
                    return if self.acknowledged && passing {
                        Ended::Dropped(failure)
                    } else {
                        Ended::Exit(Err(failure))
                    };
                }
                "error" => {
                    let text = format!(
                        "the server ended the subscription: {}",
                        error_text(&message)
                    );
                    server_error = Some(text);
                }
                "info" => match field(&message, "msg").unwrap_or("") {
                    "ping" => {}
                    "server_shutdown" => eprintln!("pubsubd: the server is shutting down"),
                    "messages_dropped" => eprintln!(
                        "pubsubd: warning: the server dropped {} event(s) this subscriber was too slow to take",
                        message.get("dropped").map_or(json!("some"), Value::clone)
                    ),
                    "topic_deleted" if field(&message, "topic") == Some(topic) => {
                        socket.hang_up();
                        return Ended::Exit(Err(Failure::Failed(format!(
                            "topic '{topic}' was deleted"
                        ))));
                    }
                    "subscription_replaced" if field(&message, "topic") == Some(topic) => {
                        socket.hang_up();
                        return Ended::Exit(Err(Failure::Failed(format!(
                            "another connection subscribed to '{topic}' with client id '{}' and took the subscription over",
                            self.client_id
                        ))));
                    }
                    _ => eprintln!("pubsubd: {raw}"),
                },
                _ => {}
            }
        }
    }

    /// A close the server meant (1000, 1001, or none): the end, unless following.
    fn closed(&self, how: &str) -> Ended {
        if self.follow {
            Ended::Dropped(Failure::Failed(format!(
                "the server closed the connection ({how})"
            )))
        } else {
            Ended::Exit(Ok(ExitCode::SUCCESS))
        }
    }

    /// Takes the topic's seq and epoch from the subscribe `ack`, so that the
    /// next subscription resumes where this one stands, and tells the user.
    fn acknowledged(&mut self, request: &Value, ack: &Value) {
        let seq = ack.get("seq").and_then(Value::as_u64);
        let epoch = field(ack, "epoch").map(String::from);
        let recovered = ack.get("recovered").and_then(Value::as_bool);
        let since = request.get("since").and_then(Value::as_u64);
        let sent_epoch = field(request, "epoch");
        let reconnected = self.acknowledged;
        self.acknowledged = true;
        self.backoff = BACKOFF_MIN;
        let topic = self.topic;
        let at = |seq: Option<u64>| seq.map_or_else(|| "?".to_string(), |s| s.to_string());
        let in_epoch = epoch.as_deref().unwrap_or("?");
        let Some(since) = since else {
            // A last_n subscription: replayed events carry their own seqs,
            // and live ones follow the topic's seq at the ack.
            self.position = seq.map(|seq| Position {
                seq,
                epoch: epoch.clone(),
            });
            if self.follow {
                eprintln!(
                    "pubsubd: subscribed to '{topic}' at seq {} in epoch {in_epoch}",
                    at(seq)
                );
            }
            return;
        };
        // Another epoch, or a since ahead of the topic: the server starts
        // from the beginning of the epoch it has (protocol §2).
        let restarted = sent_epoch.is_some_and(|sent| Some(sent) != epoch.as_deref())
            || seq.is_some_and(|seq| since > seq);
        let verb = if reconnected {
            "reconnected; resumed"
        } else {
            "resumed"
        };
        let from = if restarted {
            format!(
                "from the start of epoch {in_epoch}, as seq {since} is not in it (the topic was re-created or the server restarted)"
            )
        } else {
            format!("after seq {since} in epoch {in_epoch}")
        };
        let recovered = match recovered {
            Some(true) => "recovered: true, nothing missed",
            Some(false) => "recovered: false, some events are no longer kept",
            None => "recovered: unknown",
        };
        eprintln!("pubsubd: {verb} '{topic}' {from}; {recovered}");
        self.position = Some(Position {
            seq: if restarted { 0 } else { since },
            epoch: epoch.or_else(|| sent_epoch.map(String::from)),
        });
    }
}
