//! What the bench's clients receive: the handshake answer, frames, and the
//! messages in them, checked for loss, duplicates and order per
//! (subscriber, publisher) stream, and timed.

use super::*;

impl Engine {
    pub(super) fn read(&mut self, key: usize, even_stalled: bool) {
        let Some(client) = self.clients.get(key) else {
            return;
        };
        if client.sock.is_none()
            || !even_stalled
                && matches!(client.role, Role::Stalled { .. })
                && client.phase == Phase::Ready
        {
            return;
        }
        let mut rbuf = std::mem::take(&mut self.rbuf);
        let mut total = 0;
        while let Some(sock) = self.clients.get_mut(key).and_then(|c| c.sock.as_mut()) {
            match crate::io::read(sock, &mut rbuf) {
                Io::Progress(n) => {
                    total += n;
                    self.take_bytes(key, &rbuf[..n]);
                    if total >= READ_CAP {
                        self.again.push(key);
                        break;
                    }
                }
                Io::WouldBlock => break,
                // End of stream, reset or refused: the server is gone for this client.
                Io::Closed | Io::Failed(_) => {
                    self.lost(key);
                    break;
                }
            }
        }
        self.rbuf = rbuf;
        self.flush(key);
    }

    fn take_bytes(&mut self, key: usize, bytes: &[u8]) {
        let mut inbuf = std::mem::take(&mut self.clients[key].inbuf);
        let used = if inbuf.is_empty() {
            let used = self.consume(key, bytes);
            inbuf.extend_from_slice(&bytes[used..]);
            0
        } else {
            inbuf.extend_from_slice(bytes);
            self.consume(key, &inbuf)
        };
        inbuf.drain(..used);
        if let Some(c) = self.clients.get_mut(key) {
            c.inbuf = inbuf;
        }
    }

    /// Handles what is complete in `buf`; returns the bytes used.
    fn consume(&mut self, key: usize, buf: &[u8]) -> usize {
        let mut at = 0;
        if self.clients[key].phase == Phase::Upgrading {
            let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
                return 0;
            };
            at = end + 4;
            self.upgraded(key, &buf[..at]);
        }
        let now = self.now();
        let mut reader = std::mem::take(&mut self.clients[key].reader);
        while self.clients[key].sock.is_some() {
            match reader.next(&buf[at..], self.plan.max_frame) {
                Ok(None) => break,
                Err(why) => {
                    self.count_error(why);
                    self.lost(key);
                    at = buf.len();
                    break;
                }
                Ok(Some((message, used))) => {
                    if let Some(message) = message {
                        self.on_message(key, message, now);
                    }
                    at += used;
                }
            }
        }
        self.clients[key].reader = reader;
        at
    }

    fn upgraded(&mut self, key: usize, head: &[u8]) {
        let status = match crate::wire::response::parse_head(head) {
            Ok(Some(head)) => head.status,
            _ => 0,
        };
        self.opening -= 1;
        if status != 101 {
            self.count_error(&format!("HTTP_{status}"));
            self.lost(key);
            return;
        }
        match self.clients[key].role {
            Role::Publisher { .. } => self.clients[key].phase = Phase::Ready,
            Role::Subscriber { topic } | Role::Stalled { topic } => {
                self.opening += 1;
                self.clients[key].phase = Phase::Subscribing;
                let text = format!(
                    r#"{{"type":"subscribe","topic":"{}","client_id":"bench-{}-{key}","request_id":"s"}}"#,
                    self.plan.topics[topic],
                    std::process::id()
                );
                self.send_text(key, text.as_bytes());
            }
        }
    }

    fn on_message(&mut self, key: usize, message: ws::Message, now: u64) {
        match message {
            ws::Message::Text(text) => self.message(key, text, now),
            ws::Message::Ping(payload) => {
                let mask = self.next_mask(key);
                frame::write_frame(&mut self.clients[key].out, frame::PONG, payload, mask);
            }
            ws::Message::Close(close) => {
                let code = close.map(|(code, _)| code);
                self.clients[key].close_code = code;
                if let Some(code) = code {
                    *self.tally.close_codes.entry(code).or_default() += 1;
                }
                self.lost(key);
            }
            ws::Message::Pong => {}
            ws::Message::Binary => self.count_error("BINARY_FRAME"),
        }
    }

    fn count_error(&mut self, code: &str) {
        if let Some(n) = self.tally.errors.get_mut(code) {
            *n += 1;
        } else {
            self.tally.errors.insert(code.to_string(), 1);
        }
    }

    fn message(&mut self, key: usize, text: &[u8], now: u64) {
        let role = self.clients[key].role;
        let phase = self.clients[key].phase;
        match self.reader.read(text) {
            Msg::Event(stamp) => match role {
                Role::Subscriber { .. } => self.event(key, stamp, now),
                Role::Stalled { .. } => self.tally.stalled_received += 1,
                Role::Publisher { .. } => self.tally.foreign += 1,
            },
            Msg::ForeignEvent => self.tally.foreign += 1,
            Msg::Ack if phase == Phase::Subscribing => self.subscribed(key),
            Msg::Ack => {
                if let Some(topic) = self.answered(key) {
                    self.topic_acked[topic] += 1;
                    self.tally.acked += 1;
                }
            }
            Msg::Error(code) => {
                let code = code.to_string();
                self.count_error(&code);
                if phase == Phase::Subscribing {
                    self.lost(key);
                } else if let Some(topic) = self.answered(key) {
                    // Nobody will get this one.
                    self.backlog = self.backlog.saturating_sub(self.fanout[topic]);
                }
            }
            Msg::Dropped(n) => self.tally.dropped_reported += n,
            Msg::Info | Msg::Pong | Msg::Unknown => {}
        }
    }

    fn subscribed(&mut self, key: usize) {
        self.opening -= 1;
        let publishers = self.plan.publishers as usize;
        let client = &mut self.clients[key];
        client.phase = Phase::Ready;
        if let Role::Subscriber { topic } = client.role {
            client.streams = vec![Stream::default(); publishers];
            self.fanout[topic] += 1;
        }
    }

    /// A publisher's oldest publish has its answer; returns its topic.
    fn answered(&mut self, key: usize) -> Option<usize> {
        let client = &mut self.clients[key];
        let Role::Publisher { .. } = client.role else {
            return None;
        };
        if client.answered >= client.sent {
            return None;
        }
        let topic = (client.answered % self.plan.topics.len() as u64) as usize;
        client.answered += 1;
        Some(topic)
    }

    fn event(&mut self, key: usize, stamp: Stamp, now: u64) {
        self.tally.received += 1;
        let client = &mut self.clients[key];
        let Some(stream) = client.streams.get_mut(stamp.publisher as usize) else {
            self.tally.foreign += 1;
            return;
        };
        match stream.accept(stamp.seq) {
            Verdict::Duplicate => {
                self.tally.duplicates += 1;
                return;
            }
            Verdict::Late => self.tally.order_violations += 1,
            Verdict::InOrder => {}
        }
        client.distinct += 1;
        self.backlog = self.backlog.saturating_sub(1);
        if self.measuring {
            self.tally.latency.record(now.saturating_sub(stamp.sent));
        }
        if self.plan.lockstep && self.backlog == 0 {
            for &p in &self.publishers {
                if let Some(sent) = self.clients[p].lockstep_sent.take() {
                    self.tally.spread.record(now.saturating_sub(sent));
                }
            }
        }
    }

    /// The connection is gone (closed by the server, reset, or refused).
    pub(super) fn lost(&mut self, key: usize) {
        let Some(client) = self.clients.get_mut(key) else {
            return;
        };
        let Some(mut sock) = client.sock.take() else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut sock);
        let was = client.phase;
        client.phase = Phase::Closed;
        client.closed_by_server = true;
        self.tally.server_closed += 1;
        match (was, client.role) {
            (Phase::Upgrading | Phase::Subscribing, _) => self.opening -= 1,
            (Phase::Ready, Role::Subscriber { topic }) => {
                // Its share of the backlog will never arrive.
                self.fanout[topic] -= 1;
                let owed = self.topic_sent[topic]
                    .saturating_sub(client.distinct)
                    .min(self.backlog);
                self.backlog -= owed;
                client.expected_at_close = Some(self.topic_acked[topic]);
            }
            _ => {}
        }
    }
}
