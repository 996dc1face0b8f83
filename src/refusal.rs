//! Every way the server refuses a request, a frame or a connection, and what
//! each refusal is on the wire: an HTTP status, a WebSocket close code, a
//! protocol error code, a metric label and a message a person can act on.

use std::borrow::Cow;

use crate::protocol::ErrorCode;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    // ---- a WebSocket request: an `error` answer, the connection stays open ----
    /// A message that is not a valid request (the text says why).
    BadRequest(Cow<'static, str>),
    /// Publish, subscribe or unsubscribe to a topic that does not exist.
    TopicNotFound(Box<str>),
    /// A valid key whose role does not allow the request (§6), on the
    /// WebSocket or over REST; the text says what was refused ("forbidden" over REST).
    Forbidden(Cow<'static, str>),
    /// Cluster mode: Redis cannot be reached, or did not answer in time.
    Unavailable,
    /// Cluster mode: a publish handed to Redis that Redis did not confirm
    /// (the link broke, or `--request-timeout` passed): it may have been
    /// published. `UNAVAILABLE`, with a text that says so.
    Unconfirmed,

    // ---- a WebSocket the server closes ----
    /// The outbound buffer overflowed under the `disconnect` policy.
    SlowConsumer,
    /// A frame or message over `--max-message-size`.
    MessageTooBig,
    /// A text frame that is not UTF-8.
    InvalidUtf8,
    /// A frame that breaks RFC 6455.
    ProtocolViolation,
    /// Nothing arrived for the idle timeout.
    IdleTimeout,
    /// The server is shutting down (§7).
    ServerShutdown,

    // ---- an HTTP request or a connection, before or instead of an upgrade ----
    /// Not HTTP/1.1 the parser accepts (the text says what).
    MalformedHttp(&'static str),
    /// A request head over the limit.
    HeadersTooLarge(&'static str),
    BodyTooLarge,
    /// `Transfer-Encoding` (chunked bodies) is not supported.
    ChunkedBody,
    /// `/ws` without a valid WebSocket handshake (the text says what is missing).
    BadHandshake(&'static str),
    /// A handshake for a WebSocket version other than 13.
    BadWebSocketVersion,
    /// An API key is configured and the request has no valid one.
    Unauthorized,
    /// `--max-connections` reached.
    MaxConnections,
    /// A request that took longer than the request timeout to arrive.
    RequestTimeout,
    /// A new WebSocket while the server is shutting down.
    ShuttingDown,
    /// A method the route does not serve (`/ws` and every REST route).
    MethodNotAllowed(Allow),

    // ---- a REST call the routes refuse: answered, never counted ----
    /// A path no route serves.
    NoRoute,
    /// A topic route naming a topic that does not exist: REST's terse
    /// answer (the WebSocket's [`Refusal::TopicNotFound`] says how to create it).
    NoSuchTopic,
    /// `POST /topics` for a topic that already exists.
    TopicExists,
    /// A `POST /topics` body that does not name a valid topic (the text says why).
    BadBody(Cow<'static, str>),
    /// Cluster mode: a create or delete Redis could not carry out (REST's
    /// terse answer to what the WebSocket calls [`Refusal::Unavailable`]).
    EngineDown,

    // ---- a client's close frame the server answers, then hangs up ----
    /// A close code an endpoint may not send (RFC 6455 §7.4), answered in
    /// tungstenite's words as the server always has; not counted.
    UnsendableCloseCode,
}

/// The methods a route serves: the `Allow` header of its 405.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Allow {
    Get,
    GetPost,
    GetDelete,
}

impl Allow {
    fn headers(self) -> &'static [(&'static str, &'static str)] {
        match self {
            Allow::Get => &[("Allow", "GET")],
            Allow::GetPost => &[("Allow", "GET, POST")],
            Allow::GetDelete => &[("Allow", "GET, DELETE")],
        }
    }

    /// The methods, as the `Allow` header lists them.
    pub fn methods(self) -> &'static str {
        self.headers()[0].1
    }
}

/// Metric labels of `pubsubd_rejected_total`, one per counted kind of refusal.
pub const LABELS: [&str; 16] = [
    "bad_request",
    "topic_not_found",
    "unauthorized",
    "malformed_http",
    "headers_too_large",
    "body_too_large",
    "chunked_body",
    "bad_handshake",
    "message_too_big",
    "invalid_utf8",
    "protocol_violation",
    "max_connections",
    "request_timeout",
    "idle_timeout",
    "forbidden",
    "unavailable",
];

impl Refusal {
    /// The message shown to the client.
    pub fn message(&self) -> Cow<'_, str> {
        match self {
            Refusal::BadRequest(m) | Refusal::Forbidden(m) => Cow::Borrowed(m),
            Refusal::Unavailable => {
                "the cluster's shared engine (Redis) cannot be reached: retry later".into()
            }
            Refusal::Unconfirmed => {
                "Redis did not confirm this publish (the link broke or it timed out after \
                 it was sent): it may have been published; subscribers can tell a retry \
                 apart by its message id"
                    .into()
            }
            Refusal::TopicNotFound(t) => Cow::Owned(format!(
                "topic '{t}' does not exist: create it with POST /topics"
            )),
            Refusal::SlowConsumer => {
                "outbound buffer overflowed: the connection is read too slowly".into()
            }
            Refusal::MessageTooBig => "message too big".into(),
            Refusal::InvalidUtf8 => "invalid UTF-8 in a text frame".into(),
            Refusal::ProtocolViolation => "protocol error".into(),
            Refusal::IdleTimeout => "idle timeout".into(),
            Refusal::ServerShutdown => "server shutdown".into(),
            Refusal::MalformedHttp(m) | Refusal::HeadersTooLarge(m) | Refusal::BadHandshake(m) => {
                Cow::Borrowed(m)
            }
            Refusal::BodyTooLarge => "request body too large".into(),
            Refusal::ChunkedBody => {
                "Transfer-Encoding is not supported: send a Content-Length".into()
            }
            Refusal::BadWebSocketVersion => "unsupported Sec-WebSocket-Version: use 13".into(),
            Refusal::Unauthorized => "unauthorized".into(),
            Refusal::MaxConnections => "server at max connections, try again later".into(),
            Refusal::RequestTimeout => "request timeout".into(),
            Refusal::ShuttingDown => "server shutting down".into(),
            Refusal::MethodNotAllowed(allow) => {
                Cow::Owned(format!("method not allowed: use {}", allow.methods()))
            }
            Refusal::NoRoute => "not found".into(),
            Refusal::NoSuchTopic => "topic not found".into(),
            Refusal::TopicExists => "topic already exists".into(),
            Refusal::BadBody(m) => Cow::Borrowed(m),
            Refusal::EngineDown => "unavailable".into(),
            Refusal::UnsendableCloseCode => "a close code an endpoint may not send".into(),
        }
    }

    /// The protocol error code of an `error` message, for refusals that send one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Refusal::BadRequest(_) => Some(ErrorCode::BadRequest),
            Refusal::TopicNotFound(_) => Some(ErrorCode::TopicNotFound),
            Refusal::SlowConsumer => Some(ErrorCode::SlowConsumer),
            Refusal::Unauthorized => Some(ErrorCode::Unauthorized),
            Refusal::Forbidden(_) => Some(ErrorCode::Forbidden),
            Refusal::Unavailable | Refusal::Unconfirmed => Some(ErrorCode::Unavailable),
            _ => None,
        }
    }

    /// The close code, for refusals that close a WebSocket.
    pub fn close_code(&self) -> Option<u16> {
        match self {
            Refusal::SlowConsumer => Some(1008),
            Refusal::MessageTooBig => Some(1009),
            Refusal::InvalidUtf8 => Some(1007),
            Refusal::ProtocolViolation | Refusal::UnsendableCloseCode => Some(1002),
            Refusal::IdleTimeout | Refusal::ServerShutdown => Some(1001),
            _ => None,
        }
    }

    /// The reason sent in the close frame.
    pub fn close_reason(&self) -> &'static str {
        match self {
            Refusal::SlowConsumer => "slow consumer",
            Refusal::UnsendableCloseCode => "Protocol violation",
            Refusal::MessageTooBig => "message too big",
            Refusal::InvalidUtf8 => "invalid UTF-8 in a text frame",
            Refusal::ProtocolViolation => "protocol error",
            Refusal::IdleTimeout => "idle timeout",
            Refusal::ServerShutdown => "server shutdown",
            _ => "",
        }
    }

    /// The HTTP status, for refusals answered over HTTP.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::TopicNotFound(_) | Refusal::NoRoute | Refusal::NoSuchTopic => 404,
            Refusal::MethodNotAllowed(_) => 405,
            Refusal::TopicExists => 409,
            Refusal::HeadersTooLarge(_) => 431,
            Refusal::BodyTooLarge => 413,
            Refusal::ChunkedBody => 411,
            Refusal::Unauthorized => 401,
            Refusal::Forbidden(_) => 403,
            Refusal::Unavailable | Refusal::Unconfirmed | Refusal::EngineDown => 503,
            Refusal::MaxConnections | Refusal::ShuttingDown => 503,
            Refusal::RequestTimeout => 408,
            _ => 400,
        }
    }

    /// Extra headers of the HTTP answer.
    pub fn headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            Refusal::BadWebSocketVersion => &[("Sec-WebSocket-Version", "13")],
            Refusal::MethodNotAllowed(allow) => allow.headers(),
            _ => &[],
        }
    }

    /// The index of its counter in [`LABELS`], for refusals that are counted.
    pub fn counter(&self) -> Option<usize> {
        let label = match self {
            Refusal::BadRequest(_) => "bad_request",
            Refusal::TopicNotFound(_) => "topic_not_found",
            Refusal::Unauthorized => "unauthorized",
            Refusal::Forbidden(_) => "forbidden",
            Refusal::Unavailable | Refusal::Unconfirmed => "unavailable",
            Refusal::MalformedHttp(_) => "malformed_http",
            Refusal::HeadersTooLarge(_) => "headers_too_large",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::ChunkedBody => "chunked_body",
            Refusal::BadHandshake(_) | Refusal::BadWebSocketVersion => "bad_handshake",
            Refusal::MessageTooBig => "message_too_big",
            Refusal::InvalidUtf8 => "invalid_utf8",
            Refusal::ProtocolViolation => "protocol_violation",
            Refusal::MaxConnections => "max_connections",
            Refusal::RequestTimeout => "request_timeout",
            Refusal::IdleTimeout => "idle_timeout",
            // Counted elsewhere (slow-consumer disconnects) or not a refusal of the client's doing.
            Refusal::SlowConsumer | Refusal::ServerShutdown | Refusal::ShuttingDown => return None,
            // Never counted: pubsubd_rejected_total has no label for them.
            Refusal::MethodNotAllowed(_)
            | Refusal::NoRoute
            | Refusal::NoSuchTopic
            | Refusal::TopicExists
            | Refusal::BadBody(_)
            | Refusal::EngineDown
            | Refusal::UnsendableCloseCode => return None,
        };
        LABELS.iter().position(|l| *l == label)
    }

    /// The topic a refused request named, echoed in its `error`.
    pub fn topic(&self) -> Option<&str> {
        match self {
            Refusal::TopicNotFound(t) => Some(t),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unconfirmed_publish_is_unavailable_and_says_it_may_have_happened() {
        let why = Refusal::Unconfirmed;
        assert_eq!(why.error_code(), Some(ErrorCode::Unavailable));
        assert_eq!(why.counter(), Refusal::Unavailable.counter());
        assert_eq!(why.status(), 503);
        assert!(why.message().contains("may have been published"));
        assert_ne!(why.message(), Refusal::Unavailable.message());
    }

    #[test]
    fn every_label_has_a_refusal() {
        let all = [
            Refusal::BadRequest("x".into()),
            Refusal::TopicNotFound("t".into()),
            Refusal::Unauthorized,
            Refusal::MalformedHttp("x"),
            Refusal::HeadersTooLarge("x"),
            Refusal::BodyTooLarge,
            Refusal::ChunkedBody,
            Refusal::BadHandshake("x"),
            Refusal::MessageTooBig,
            Refusal::InvalidUtf8,
            Refusal::ProtocolViolation,
            Refusal::MaxConnections,
            Refusal::RequestTimeout,
            Refusal::IdleTimeout,
            Refusal::Forbidden("x".into()),
            Refusal::Unavailable,
        ];
        let counters: Vec<usize> = all.iter().filter_map(Refusal::counter).collect();
        assert_eq!(counters, (0..LABELS.len()).collect::<Vec<_>>());
        assert_eq!(Refusal::BadWebSocketVersion.counter(), Some(7));
        assert_eq!(Refusal::SlowConsumer.counter(), None);
    }

    #[test]
    fn wire_outcomes() {
        assert_eq!(Refusal::SlowConsumer.close_code(), Some(1008));
        assert_eq!(
            Refusal::SlowConsumer.error_code(),
            Some(ErrorCode::SlowConsumer)
        );
        assert_eq!(Refusal::MessageTooBig.close_code(), Some(1009));
        assert_eq!(Refusal::ChunkedBody.status(), 411);
        assert_eq!(Refusal::Forbidden("forbidden".into()).status(), 403);
        assert_eq!(
            Refusal::Forbidden("x".into()).error_code(),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(Refusal::BadHandshake("x").close_code(), None);
        assert_eq!(
            Refusal::BadWebSocketVersion.headers(),
            &[("Sec-WebSocket-Version", "13")]
        );
        assert_eq!(
            Refusal::TopicNotFound("orders".into()).message(),
            "topic 'orders' does not exist: create it with POST /topics"
        );
    }

    #[test]
    fn rest_refusals_keep_their_answers_and_are_not_counted() {
        let cases = [
            (Refusal::NoRoute, 404, "not found"),
            (Refusal::NoSuchTopic, 404, "topic not found"),
            (Refusal::TopicExists, 409, "topic already exists"),
            (
                Refusal::BadBody("invalid JSON body: x".into()),
                400,
                "invalid JSON body: x",
            ),
            (Refusal::EngineDown, 503, "unavailable"),
            (
                Refusal::MethodNotAllowed(Allow::GetPost),
                405,
                "method not allowed: use GET, POST",
            ),
        ];
        for (why, status, message) in cases {
            assert_eq!(
                (why.status(), &*why.message()),
                (status, message),
                "{why:?}"
            );
            assert_eq!(why.counter(), None, "{why:?}");
            assert_eq!(why.close_code(), None, "{why:?}");
            assert_eq!(why.error_code(), None, "{why:?}");
        }
        assert_eq!(Refusal::NoSuchTopic.headers(), &[]);
    }

    #[test]
    fn method_not_allowed_names_the_methods_in_allow() {
        for (allow, methods) in [
            (Allow::Get, "GET"),
            (Allow::GetPost, "GET, POST"),
            (Allow::GetDelete, "GET, DELETE"),
        ] {
            assert_eq!(
                Refusal::MethodNotAllowed(allow).headers(),
                &[("Allow", methods)]
            );
        }
        assert_eq!(
            &crate::http::refusal(&Refusal::MethodNotAllowed(Allow::Get), false)[..],
            b"HTTP/1.1 405 Method Not Allowed\r\nContent-Type: application/json\r\n\
              Content-Length: 39\r\nAllow: GET\r\n\r\n\
              {\"error\":\"method not allowed: use GET\"}"
        );
    }

    #[test]
    fn an_unsendable_close_code_is_answered_as_tungstenite_did() {
        let why = Refusal::UnsendableCloseCode;
        assert_eq!(
            (why.close_code(), why.close_reason()),
            (Some(1002), "Protocol violation")
        );
        assert_eq!(why.counter(), None);
        assert_eq!(why.error_code(), None);
    }
}
