//! The chat connection: one WebSocket per device, kept open by a background
//! task that reconnects with exponential backoff and jitter, refreshes an
//! expired token, and resends every message the server has not acknowledged
//! (safe: sends are idempotent by client id). Messages and receipts are handed
//! to the app as [`Event`]s, deduplicated, and acknowledged to the server once
//! handed over.

use crate::account::Account;
use futures_util::{SinkExt, StreamExt};
use natter_proto::{
    ClientFrame, ClientMsgId, CloseCode, ErrorCode, ErrorFrame, Hello, Kind, Message, MsgId,
    MsgIds, Presence, Receipt, ReceiptIds, Send, Sent, ServerFrame, Target, TypingEvent,
    TypingSend, TypingState, UserId, Users,
};
use std::collections::{HashSet, VecDeque};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// What the connection tells the app.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Authenticated (after every reconnect).
    Connected(Hello),
    /// Everything queued while offline has been received.
    Synced,
    /// A message (each `msg_id` once per connection object).
    Message(Message),
    /// A sent message is durable on the server.
    Sent(Sent),
    /// Delivered / read receipt.
    Receipt(Receipt),
    /// Someone is typing.
    Typing(TypingEvent),
    /// A subscribed user's presence.
    Presence(Presence),
    /// The server refused a frame.
    Error(ErrorFrame),
    /// A `call.*` frame (see [`crate::call`]).
    Call(ServerFrame),
    /// The socket dropped; reconnecting after `retry_in`.
    Disconnected {
        /// The close code, if the server sent one.
        code: Option<u16>,
        /// Backoff before the next attempt.
        retry_in: Duration,
    },
    /// The connection ended for good (closed by the app, or a close code that
    /// forbids reconnecting: replaced, revoked, auth failed).
    Closed {
        /// The close code, if any.
        code: Option<u16>,
        /// Why.
        reason: String,
    },
}

/// Connection settings.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Send `delivered` for each message once it is handed to the app.
    pub auto_delivered: bool,
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// The WebSocket URL (default: derived from the API's base URL).
    pub ws_url: Option<String>,
    /// More gateway URLs (other nodes of a cluster), tried in turn after
    /// `ws_url` when a connection fails or drops: for deployments without a
    /// load balancer in front of the chat nodes.
    pub fallback_ws_urls: Vec<String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            auto_delivered: true,
            backoff_min: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            ws_url: None,
            fallback_ws_urls: Vec::new(),
        }
    }
}

enum Cmd {
    Send(Send),
    Frame(ClientFrame),
    Close,
}

/// Handle to a chat connection. Cheap to clone; dropping every handle closes it.
#[derive(Clone)]
pub struct Chat {
    cmd: mpsc::UnboundedSender<Cmd>,
}

/// The app's side of a connection's events.
pub type Events = mpsc::UnboundedReceiver<Event>;

impl Chat {
    /// Opens a connection in the background; events arrive on the receiver.
    pub fn connect(account: Account, opts: ConnectOptions) -> (Chat, Events) {
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let first = opts
            .ws_url
            .clone()
            .unwrap_or_else(|| account.api().ws_url());
        let driver = Driver {
            ws_urls: std::iter::once(first)
                .chain(opts.fallback_ws_urls.iter().cloned())
                .collect(),
            url_index: 0,
            account,
            opts,
            events: ev_tx,
            outbox: VecDeque::new(),
            unsent_frames: Vec::new(),
            seen_msgs: Seen::new(20_000),
            seen_receipts: Seen::new(20_000),
            retry_at: None,
        };
        tokio::spawn(driver.run(cmd_rx));
        (Chat { cmd: cmd_tx }, ev_rx)
    }

    /// Sends a message with a fresh client id; returns the id. It is resent
    /// after reconnects until the server acknowledges it. The id is a UUID v7:
    /// ids that grow with time land at the end of the server's idempotency
    /// index, which makes a send cheaper there (docs/protocol.md).
    pub fn send(&self, to: Target, kind: Kind, body: Vec<u8>) -> ClientMsgId {
        let id = ClientMsgId::new(uuid::Uuid::now_v7().simple().to_string());
        self.send_with_id(id.clone(), to, kind, body);
        id
    }

    /// Sends a text message.
    pub fn send_text(&self, to: Target, text: &str) -> ClientMsgId {
        self.send(to, Kind::text(), text.as_bytes().to_vec())
    }

    /// Sends with a chosen client id (resending an id is idempotent).
    pub fn send_with_id(&self, id: ClientMsgId, to: Target, kind: Kind, body: Vec<u8>) {
        let _ = self.cmd.send(Cmd::Send(Send {
            id,
            to,
            kind,
            body: natter_proto::Body(body),
        }));
    }

    /// Marks messages read (the senders get `read` receipts).
    pub fn read(&self, ids: Vec<MsgId>) {
        for chunk in ids.chunks(natter_proto::MAX_IDS_PER_FRAME) {
            let _ = self.cmd.send(Cmd::Frame(ClientFrame::Read(MsgIds {
                ids: chunk.to_vec(),
            })));
        }
    }

    /// Acknowledges messages (only needed with `auto_delivered = false`).
    pub fn delivered(&self, ids: Vec<MsgId>) {
        for chunk in ids.chunks(natter_proto::MAX_IDS_PER_FRAME) {
            let _ = self.cmd.send(Cmd::Frame(ClientFrame::Delivered(MsgIds {
                ids: chunk.to_vec(),
            })));
        }
    }

    /// Typing indicator (ephemeral; dropped while offline).
    pub fn typing(&self, to: Target, state: TypingState) {
        let _ = self
            .cmd
            .send(Cmd::Frame(ClientFrame::Typing(TypingSend { to, state })));
    }

    /// Subscribes to users' presence.
    pub fn subscribe_presence(&self, users: Vec<UserId>) {
        let _ = self
            .cmd
            .send(Cmd::Frame(ClientFrame::PresenceSubscribe(Users { users })));
    }

    /// Sends a `call.*` frame (answers arrive as [`Event::Call`]).
    pub fn call_frame(&self, frame: natter_proto::CallClientFrame) {
        let _ = self.cmd.send(Cmd::Frame(frame.into()));
    }

    /// Closes the connection (normal closure); a `Closed` event follows.
    pub fn close(&self) {
        let _ = self.cmd.send(Cmd::Close);
    }
}

/// A bounded set remembering the most recent ids.
struct Seen {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    cap: usize,
}

impl Seen {
    fn new(cap: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap,
        }
    }

    /// True when new.
    fn insert(&mut self, id: u64) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

struct Driver {
    account: Account,
    opts: ConnectOptions,
    /// `ws_url` then the fallbacks; never empty.
    ws_urls: Vec<String>,
    /// The one in use; moves on after a failed or dropped connection.
    url_index: usize,
    events: mpsc::UnboundedSender<Event>,
    /// Sends not yet acknowledged, in order.
    outbox: VecDeque<Send>,
    /// Reads/typing/etc. issued while offline (reads are worth keeping).
    unsent_frames: Vec<ClientFrame>,
    seen_msgs: Seen,
    seen_receipts: Seen,
    /// When refused-but-retryable sends go out again.
    retry_at: Option<Instant>,
}

enum Ended {
    /// The app closed, or every handle was dropped.
    ByApp,
    /// Reconnect (after a backoff), optionally refreshing the token first.
    Retry { code: Option<u16>, refresh: bool },
    /// Do not reconnect.
    Fatal { code: Option<u16>, reason: String },
}

impl Driver {
    async fn run(mut self, mut cmds: mpsc::UnboundedReceiver<Cmd>) {
        let mut failures: u32 = 0;
        let mut refresh = false;
        loop {
            let ended = match self.connect(refresh).await {
                Ok(ws) => {
                    let (e, got_hello) = self.session(ws, &mut cmds).await;
                    if got_hello {
                        failures = 0;
                    }
                    e
                }
                Err(e) => e,
            };
            let code = match ended {
                Ended::ByApp => {
                    let _ = self.events.send(Event::Closed {
                        code: Some(1000),
                        reason: "closed by the app".into(),
                    });
                    return;
                }
                Ended::Fatal { code, reason } => {
                    let _ = self.events.send(Event::Closed { code, reason });
                    return;
                }
                Ended::Retry { code, refresh: r } => {
                    refresh = r;
                    code
                }
            };
            failures = failures.saturating_add(1);
            self.url_index = (self.url_index + 1) % self.ws_urls.len();
            let delay = backoff(&self.opts, failures);
            let _ = self.events.send(Event::Disconnected {
                code,
                retry_in: delay,
            });
            let wake = Instant::now() + delay;
            // While waiting, keep accepting commands (sends queue in the outbox).
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => break,
                    c = cmds.recv() => match c {
                        None | Some(Cmd::Close) => {
                            let _ = self.events.send(Event::Closed { code: None, reason: "closed by the app".into() });
                            return;
                        }
                        Some(Cmd::Send(s)) => self.outbox.push_back(s),
                        Some(Cmd::Frame(f)) => self.keep_offline(f),
                    },
                }
            }
        }
    }

    fn keep_offline(&mut self, f: ClientFrame) {
        // Typing is ephemeral; everything else is sent once connected.
        if !matches!(f, ClientFrame::Typing(_)) {
            self.unsent_frames.push(f);
        }
    }

    async fn connect(&mut self, refresh: bool) -> Result<Socket, Ended> {
        let token = if refresh {
            self.account.force_refresh().await
        } else {
            self.account.token().await
        };
        let token = match token {
            Ok(t) => t,
            Err(crate::Error::Api {
                status: 401,
                message,
                ..
            }) => {
                return Err(Ended::Fatal {
                    code: None,
                    reason: format!("credentials refused: {message}"),
                });
            }
            Err(_) => {
                return Err(Ended::Retry {
                    code: None,
                    refresh: false,
                });
            }
        };
        let url = &self.ws_urls[self.url_index % self.ws_urls.len()];
        let mut req = match url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => {
                return Err(Ended::Fatal {
                    code: None,
                    reason: format!("bad WebSocket URL {url}: {e}"),
                });
            }
        };
        let value = match format!("Bearer {token}").parse() {
            Ok(v) => v,
            Err(_) => {
                return Err(Ended::Fatal {
                    code: None,
                    reason: "token is not a valid header value".into(),
                });
            }
        };
        req.headers_mut().insert("authorization", value);
        match tokio::time::timeout(
            Duration::from_secs(15),
            // Small, latency-bound frames: no Nagle.
            tokio_tungstenite::connect_async_with_config(req, None, true),
        )
        .await
        {
            Ok(Ok((ws, _))) => Ok(ws),
            _ => Err(Ended::Retry {
                code: None,
                refresh: false,
            }),
        }
    }

    /// Runs one connected socket. Returns how it ended and whether `hello` came.
    async fn session(
        &mut self,
        mut ws: Socket,
        cmds: &mut mpsc::UnboundedReceiver<Cmd>,
    ) -> (Ended, bool) {
        let mut got_hello = false;
        loop {
            let now = Instant::now();
            let retry = self.retry_at.unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                c = cmds.recv() => {
                    let frame = match c {
                        None | Some(Cmd::Close) => {
                            let _ = ws.close(None).await;
                            return (Ended::ByApp, got_hello);
                        }
                        Some(Cmd::Send(s)) => {
                            self.outbox.push_back(s.clone());
                            if !got_hello { continue; }
                            ClientFrame::Send(s)
                        }
                        Some(Cmd::Frame(f)) => {
                            if !got_hello { self.keep_offline(f); continue; }
                            f
                        }
                    };
                    if ws.send(Ws::Text(frame.to_json().into())).await.is_err() {
                        return (Ended::Retry { code: None, refresh: false }, got_hello);
                    }
                }
                _ = tokio::time::sleep_until(retry), if self.retry_at.is_some() => {
                    self.retry_at = None;
                    if got_hello && self.resend_all(&mut ws).await.is_err() {
                        return (Ended::Retry { code: None, refresh: false }, got_hello);
                    }
                }
                m = ws.next() => {
                    let text = match m {
                        Some(Ok(Ws::Text(t))) => t,
                        Some(Ok(Ws::Close(c))) => {
                            let code = c.map(|c| u16::from(c.code));
                            return (self.ended_by_close(code), got_hello);
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => return (Ended::Retry { code: None, refresh: false }, got_hello),
                    };
                    let frame = match natter_proto::decode_server_frame(&text) {
                        Ok(f) => f,
                        Err(e) => {
                            tracing::warn!(error = %e, "ignoring a frame this client does not understand");
                            continue;
                        }
                    };
                    if let ServerFrame::Hello(h) = &frame {
                        got_hello = true;
                        let _ = self.events.send(Event::Connected(h.clone()));
                        if self.resend_all(&mut ws).await.is_err() {
                            return (Ended::Retry { code: None, refresh: false }, got_hello);
                        }
                        continue;
                    }
                    if let Some(reply) = self.handle(frame)
                        && ws.send(Ws::Text(reply.to_json().into())).await.is_err()
                    {
                        return (Ended::Retry { code: None, refresh: false }, got_hello);
                    }
                }
            }
        }
    }

    fn ended_by_close(&self, code: Option<u16>) -> Ended {
        match code.and_then(CloseCode::from_code) {
            Some(CloseCode::TokenExpired) => Ended::Retry {
                code,
                refresh: true,
            },
            Some(c) if !c.should_reconnect() => Ended::Fatal {
                code,
                reason: c.reason().to_owned(),
            },
            _ => Ended::Retry {
                code,
                refresh: false,
            },
        }
    }

    /// Sends the outbox (in order) and frames kept while offline.
    async fn resend_all(&mut self, ws: &mut Socket) -> Result<(), ()> {
        let frames: Vec<ClientFrame> = self
            .outbox
            .iter()
            .cloned()
            .map(ClientFrame::Send)
            .chain(self.unsent_frames.drain(..))
            .collect();
        for f in frames {
            ws.feed(Ws::Text(f.to_json().into()))
                .await
                .map_err(|_| ())?;
        }
        ws.flush().await.map_err(|_| ())
    }

    /// Applies a server frame; returns a frame to answer with.
    fn handle(&mut self, frame: ServerFrame) -> Option<ClientFrame> {
        match frame {
            ServerFrame::Sent(s) => {
                self.outbox.retain(|o| o.id != s.id);
                let _ = self.events.send(Event::Sent(s));
                None
            }
            ServerFrame::Msg(m) => {
                let id = m.msg_id;
                if self.seen_msgs.insert(id) {
                    let _ = self.events.send(Event::Message(m));
                }
                // Acknowledged again when redelivered: the server still has it.
                self.opts
                    .auto_delivered
                    .then(|| ClientFrame::Delivered(MsgIds { ids: vec![id] }))
            }
            ServerFrame::Receipt(r) => {
                let id = r.receipt_id;
                if self.seen_receipts.insert(id) {
                    let _ = self.events.send(Event::Receipt(r));
                }
                Some(ClientFrame::Ack(ReceiptIds { ids: vec![id] }))
            }
            ServerFrame::Synced(_) => {
                let _ = self.events.send(Event::Synced);
                None
            }
            ServerFrame::Typing(t) => {
                let _ = self.events.send(Event::Typing(t));
                None
            }
            ServerFrame::Presence(p) => {
                let _ = self.events.send(Event::Presence(p));
                None
            }
            ServerFrame::Error(e) => {
                if e.ref_type.as_deref() == Some("send")
                    && let Some(id) = &e.id
                {
                    let retryable =
                        matches!(e.code, ErrorCode::RateLimited | ErrorCode::InternalError);
                    if retryable {
                        let wait = Duration::from_millis(e.retry_after_ms.unwrap_or(1000).max(50));
                        let at = Instant::now() + wait;
                        self.retry_at = Some(self.retry_at.map_or(at, |t| t.min(at)));
                    } else {
                        self.outbox.retain(|o| o.id.as_str() != id);
                    }
                }
                let _ = self.events.send(Event::Error(e));
                None
            }
            ServerFrame::Hello(_) | ServerFrame::Pong(_) => None,
            call @ (ServerFrame::CallIncoming(_)
            | ServerFrame::CallRinging(_)
            | ServerFrame::CallAnswered(_)
            | ServerFrame::CallIce(_)
            | ServerFrame::CallUpdate(_)
            | ServerFrame::CallEnded(_)) => {
                let _ = self.events.send(Event::Call(call));
                None
            }
        }
    }
}

/// Exponential backoff with jitter: min·2^(n-1), capped, ±25 %.
fn backoff(opts: &ConnectOptions, failures: u32) -> Duration {
    let base = opts
        .backoff_min
        .saturating_mul(1u32 << failures.saturating_sub(1).min(16))
        .min(opts.backoff_max);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 500) as f64 / 1000.0 - 0.25;
    base.mul_f64(1.0 + jitter).min(opts.backoff_max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let o = ConnectOptions::default();
        let d1 = backoff(&o, 1);
        assert!(
            d1 >= Duration::from_millis(187) && d1 <= Duration::from_millis(313),
            "{d1:?}"
        );
        let d5 = backoff(&o, 5);
        assert!(
            d5 >= Duration::from_millis(3000) && d5 <= Duration::from_millis(5000),
            "{d5:?}"
        );
        assert!(backoff(&o, 40) <= o.backoff_max);
    }

    #[test]
    fn seen_forgets_oldest() {
        let mut s = Seen::new(2);
        assert!(s.insert(1));
        assert!(!s.insert(1));
        s.insert(2);
        s.insert(3);
        assert!(s.insert(1), "1 was forgotten");
    }
}
