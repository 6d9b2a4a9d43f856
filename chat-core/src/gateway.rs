//! The WebSocket driver: one task per socket. It authenticates the device,
//! registers it in the hub, then runs a `select!` over the socket, the hub's
//! deliveries, the writer's answers, queue pages and the session's timer,
//! feeding each input to the sans-IO [`Session`] and carrying out its effects.

use crate::call_event::CallEvent;
use crate::hub::{Closer, LocalConn, Outbound};
use crate::pipeline::{Delivery, Effect, Persist, Session};
use crate::state::ChatState;
use crate::store::{BatchOp, DeviceRef, NewMessage, OpOutcome};
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message as WsMessage, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use natter_common::ApiError;
use natter_common::http::ClientIp;
use natter_common::listener::AddressSlot;
use natter_common::token::TokenError;
use natter_proto::{
    ClientFrame, CloseCode, ErrorCode, ErrorFrame, Hello, Limits, PROTOCOL_VERSION, ServerFrame,
    Target, TypingEvent, TypingSend, UserId,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tracing::Instrument;

type Sink = SplitSink<WebSocket, WsMessage>;
type Stream = SplitStream<WebSocket>;

/// How long a socket may block a write before it is given up on.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /v1/ws`.
pub(crate) async fn upgrade(
    State(st): State<ChatState>,
    ClientIp(client): ClientIp,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    // Counted until the socket authenticates: thousands of upgrades that never
    // send `auth` would otherwise each hold a socket for auth_timeout_secs.
    let max = st.0.cfg.max_unauthenticated_per_ip as usize;
    let Some(unauthenticated) = st.0.unauthenticated.take(client, max) else {
        metrics::counter!("chat_ws_refused_total", "reason" => "unauthenticated_per_ip")
            .increment(1);
        return ApiError::too_many(
            "too_many_connections",
            format!("at most {max} unauthenticated sockets per client address"),
            u64::from(st.0.cfg.auth_timeout_secs),
        )
        .into_response();
    };
    let token = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim().to_owned());
    let limit = st.0.cfg.frame_limit();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(st.0.cfg.ws_read_buffer_bytes)
        .write_buffer_size(st.0.cfg.ws_write_buffer_bytes)
        .on_upgrade(move |socket| run(st, socket, token, unauthenticated))
}

async fn run(
    st: ChatState,
    socket: WebSocket,
    header_token: Option<String>,
    unauthenticated: AddressSlot,
) {
    metrics::counter!("chat_ws_opened_total").increment(1);
    let (mut sink, mut stream) = socket.split();
    let authenticated = authenticate(&st, &mut sink, &mut stream, header_token).await;
    drop(unauthenticated);
    let dev = match authenticated {
        Ok(dev) => dev,
        Err(code) => {
            // Counted like every other close, so opened minus closed is the
            // number of live sockets.
            metrics::counter!("chat_ws_closed_total", "code" => code.code().to_string())
                .increment(1);
            close(&mut sink, code).await;
            return;
        }
    };
    let span = tracing::info_span!("ws", user_id = %dev.user, device_id = dev.device);
    connected(st, sink, stream, dev).instrument(span).await;
}

/// Frames a socket may send before `auth` (pings included) before it is
/// closed with 1008: a client needs none.
pub const MAX_FRAMES_BEFORE_AUTH: u32 = 8;

/// Waits for a token (header or `auth` frame) and checks it and the device.
async fn authenticate(
    st: &ChatState,
    sink: &mut Sink,
    stream: &mut Stream,
    header_token: Option<String>,
) -> Result<DeviceRef, CloseCode> {
    let token = match header_token {
        Some(t) => t,
        None => {
            let deadline = tokio::time::Instant::now()
                + Duration::from_secs(u64::from(st.0.cfg.auth_timeout_secs));
            // Frames other than `auth` before it: each is answered, a few
            // times, then the socket is closed (an unauthenticated peer once
            // got 300 answers for 300 junk frames).
            let mut refused = 0u32;
            loop {
                if refused >= MAX_FRAMES_BEFORE_AUTH {
                    metrics::counter!("chat_ws_preauth_floods_total").increment(1);
                    return Err(CloseCode::PolicyViolation);
                }
                let msg = tokio::select! {
                    m = stream.next() => m,
                    _ = tokio::time::sleep_until(deadline) => return Err(CloseCode::AuthTimeout),
                    _ = st.0.shutdown.cancelled() => return Err(CloseCode::GoingAway),
                };
                let text = match msg {
                    Some(Ok(WsMessage::Text(t))) => t,
                    Some(Ok(WsMessage::Binary(_))) => {
                        let e = ErrorFrame::new(
                            ErrorCode::MalformedFrame,
                            "binary frames are not part of this protocol; send JSON text",
                        );
                        send_frame(sink, &ServerFrame::Error(e)).await?;
                        refused += 1;
                        continue;
                    }
                    Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {
                        refused += 1;
                        continue;
                    }
                    Some(Ok(WsMessage::Close(_))) | None => return Err(CloseCode::Normal),
                    Some(Err(e)) => return Err(read_error_code(&e)),
                };
                match natter_proto::decode_client_frame(&text) {
                    Ok(ClientFrame::Auth(a)) => {
                        if a.v.is_some_and(|v| v != PROTOCOL_VERSION) {
                            let e = ErrorFrame::new(
                                ErrorCode::UnsupportedVersion,
                                format!("this server speaks protocol version {PROTOCOL_VERSION}"),
                            )
                            .about(Some("auth".into()), None);
                            send_frame(sink, &ServerFrame::Error(e)).await?;
                            return Err(CloseCode::UnsupportedVersion);
                        }
                        break a.token;
                    }
                    Ok(other) => {
                        let e = ErrorFrame::new(
                            ErrorCode::NotAuthenticated,
                            "send {\"type\":\"auth\",\"token\":\"…\"} first (or connect with an Authorization header)",
                        )
                        .about(Some(other.type_name().into()), None);
                        send_frame(sink, &ServerFrame::Error(e)).await?;
                        refused += 1;
                    }
                    Err(e) => {
                        let err = ErrorFrame::new(e.code(), e.to_string())
                            .about(e.frame_type().map(str::to_owned), None);
                        send_frame(sink, &ServerFrame::Error(err)).await?;
                        refused += 1;
                    }
                }
            }
        }
    };
    let claims = match st.0.tokens.verify(&token, st.0.clock.now_secs()) {
        Ok(c) => c,
        Err(TokenError::Expired(_)) => {
            let e = ErrorFrame::new(
                ErrorCode::TokenExpired,
                "access token expired; refresh it and reconnect",
            );
            send_frame(sink, &ServerFrame::Error(e)).await?;
            return Err(CloseCode::TokenExpired);
        }
        Err(err) => {
            let e = ErrorFrame::new(ErrorCode::InvalidToken, err.to_string());
            send_frame(sink, &ServerFrame::Error(e)).await?;
            return Err(CloseCode::AuthFailed);
        }
    };
    let user = UserId(claims.sub);
    match st.0.store.device_generation(&user, claims.dev).await {
        Ok(Some(g)) if g == i64::from(claims.generation) => Ok(DeviceRef {
            user,
            device: claims.dev,
            generation: g,
        }),
        Ok(_) => {
            let e = ErrorFrame::new(
                ErrorCode::DeviceRevoked,
                "this device was removed, logged out or re-registered",
            );
            send_frame(sink, &ServerFrame::Error(e)).await?;
            Err(CloseCode::DeviceRevoked)
        }
        Err(e) => {
            tracing::error!(error = %e, "device lookup failed");
            Err(CloseCode::InternalError)
        }
    }
}

/// Turns a writer outcome into the socket's answer.
type AnswerFn = Box<dyn FnOnce(Result<OpOutcome, ()>) -> Answer + Send>;

/// What the writer and fetch tasks answer a socket with.
enum Answer {
    Sent(String, Result<OpOutcome, ()>),
    Ids(&'static str, Result<OpOutcome, ()>),
    Fetched(Result<Vec<Delivery>, ()>, u32),
}

async fn connected(st: ChatState, mut sink: Sink, mut stream: Stream, dev: DeviceRef) {
    let inner = &st.0;
    let (tx, mut rx) = mpsc::channel::<Outbound>(inner.cfg.outbound_queue);
    let closer = Arc::new(Closer::default());
    let since = inner.clock.now_ms();
    let reg = inner.hub.register(
        &dev.user,
        dev.device,
        dev.generation,
        since,
        tx.clone(),
        closer.clone(),
    );
    let local = LocalConn {
        user: dev.user.clone(),
        device: dev.device,
        conn_id: reg.conn_id,
        since,
    };
    // The claim completes before the queue is first read: a writer that looked
    // this device up before the claim committed its entries before the read.
    let first_anywhere = inner.cluster.claim(&local).await;
    tracing::debug!("connected");
    st.call_event(&dev.user, dev.device, CallEvent::Connected);
    if reg.came_online && first_anywhere {
        crate::presence::announce(&st, &dev.user, true, None);
    }
    let (ans_tx, mut ans_rx) = mpsc::unbounded_channel::<Answer>();
    let now = inner.clock.now_ms();
    let hello = ServerFrame::Hello(Hello {
        v: PROTOCOL_VERSION,
        user_id: dev.user.clone(),
        device_id: dev.device,
        limits: Limits {
            max_body_bytes: inner.cfg.max_body_bytes,
            max_frame_bytes: inner.cfg.frame_limit(),
            window: inner.cfg.window,
            heartbeat_secs: inner.cfg.heartbeat_secs,
            idle_timeout_secs: inner.cfg.idle_timeout_secs,
        },
    });
    let mut session = Session::new(inner.session_cfg.clone(), now)
        .with_user_sends(inner.user_sends.clone(), &dev.user);
    let mut code = send_frame(&mut sink, &hello).await.err();
    let mut effects = session.start(now);
    let mut ctx = Ctx {
        st: &st,
        dev: &dev,
        conn_id: reg.conn_id,
        tx: &tx,
        ans: &ans_tx,
    };
    // Frames are fed into the socket's buffer and flushed once no further
    // input is waiting (or after MAX_UNFLUSHED inputs): a burst of deliveries,
    // answers and incoming frames then costs one write instead of one each.
    let mut unflushed = false;
    let mut batched = 0usize;
    let mut settled = false;
    while code.is_none() {
        match ctx
            .apply(&mut sink, std::mem::take(&mut effects), &closer)
            .await
        {
            Ok(wrote) => unflushed |= wrote,
            Err(c) => {
                code = Some(c);
                break;
            }
        }
        if batched < MAX_UNFLUSHED {
            let now = inner.clock.now_ms();
            if let Ok(a) = ans_rx.try_recv() {
                batched += 1;
                effects = on_answer(&mut session, now, a);
                continue;
            }
            if let Ok(out) = rx.try_recv() {
                batched += 1;
                effects = on_outbound(&mut session, now, out);
                refetch_if_overflowed(&mut session, &closer, now, &mut effects);
                continue;
            }
            if session.wants_frames()
                && let Some(msg) = stream.next().now_or_never()
            {
                batched += 1;
                match on_socket(&mut session, now, msg) {
                    Ok(e) => effects = e,
                    Err(c) => code = Some(c),
                }
                continue;
            }
        }
        batched = 0;
        if unflushed && !settled && inner.hub.is_dispatching() {
            // The writer is still handing out this commit: whatever else it
            // has for this socket goes out in the same write.
            inner.hub.dispatch_settled().await;
            settled = true;
            continue;
        }
        settled = false;
        if std::mem::take(&mut unflushed)
            && let Err(c) = flush(&mut sink, &closer).await
        {
            code = Some(c);
            break;
        }
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis((session.poll_timeout() - inner.clock.now_ms()).max(0) as u64);
        tokio::select! {
            biased;
            _ = closer.closed() => {
                code = closer.code();
            }
            _ = inner.shutdown.cancelled() => {
                code = Some(CloseCode::GoingAway);
            }
            Some(a) = ans_rx.recv() => {
                effects = on_answer(&mut session, inner.clock.now_ms(), a);
            }
            Some(out) = rx.recv() => {
                let now = inner.clock.now_ms();
                effects = on_outbound(&mut session, now, out);
                refetch_if_overflowed(&mut session, &closer, now, &mut effects);
            }
            msg = stream.next(), if session.wants_frames() => {
                match on_socket(&mut session, inner.clock.now_ms(), msg) {
                    Ok(e) => effects = e,
                    Err(c) => code = Some(c),
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                effects = session.handle_timeout(inner.clock.now_ms());
            }
        }
    }
    let code = code.unwrap_or(CloseCode::Normal);
    metrics::counter!("chat_ws_closed_total", "code" => code.code().to_string()).increment(1);
    tracing::debug!(code = code.code(), "disconnected");
    if code != CloseCode::Normal {
        close(&mut sink, code).await;
    }
    let subs: Vec<UserId> = session.subscriptions().cloned().collect();
    inner.hub.unsubscribe(reg.conn_id, &subs);
    let now = inner.clock.now_ms();
    inner.hub.touch(&dev.user, now);
    let none_here = inner.hub.unregister(&dev.user, reg.conn_id);
    // A socket replaced by a newer one of the same device, here or on another
    // node, is not a disconnect.
    if st.call_handler().is_some()
        && !inner.hub.online_devices(&dev.user).contains(&dev.device)
        && !inner
            .cluster
            .devices_elsewhere(&dev.user)
            .await
            .contains(&dev.device)
    {
        st.call_event(&dev.user, dev.device, CallEvent::Disconnected);
    }
    let none_anywhere = inner.cluster.release(&local).await;
    if none_here && none_anywhere {
        crate::presence::announce(&st, &dev.user, false, Some(now));
    }
}

/// Inputs handled between two flushes of the socket at most.
const MAX_UNFLUSHED: usize = 64;

/// The writer's or a fetch's answer, fed to the session.
fn on_answer(session: &mut Session, now: i64, a: Answer) -> Vec<Effect> {
    match a {
        Answer::Sent(id, Ok(OpOutcome::Send(o))) => session.handle_sent(now, o, &id),
        Answer::Sent(id, _) => session.handle_send_failed(now, &id),
        Answer::Ids(t, Ok(OpOutcome::Unknown(ids))) => session.handle_unknown_ids(now, t, &ids),
        Answer::Ids(t, _) => {
            tracing::warn!(
                frame = t,
                "acknowledgement could not be stored; it will be redelivered"
            );
            Vec::new()
        }
        Answer::Fetched(Ok(page), limit) => session.handle_fetched(now, page, limit),
        Answer::Fetched(Err(()), _) => {
            session.handle_fetch_failed(now);
            Vec::new()
        }
    }
}

/// Entries that did not fit the queue are read from the store: the session
/// fetches after its cursor, and live entries it already has are skipped by seq.
fn refetch_if_overflowed(
    session: &mut Session,
    closer: &Closer,
    now: i64,
    effects: &mut Vec<Effect>,
) {
    if closer.take_overflow() {
        effects.extend(session.handle_resync(now));
    }
}

/// Something the hub queued for this socket.
fn on_outbound(session: &mut Session, now: i64, out: Outbound) -> Vec<Effect> {
    match out {
        Outbound::Delivery(d) => session.handle_live(now, d),
        Outbound::Resync => session.handle_resync(now),
        // Ephemeral frames are written as they are; the session does not track them.
        Outbound::Frame(json) => vec![Effect::Deliver(json)],
    }
}

/// What the device sent; `Err` when the socket is done.
fn on_socket(
    session: &mut Session,
    now: i64,
    msg: Option<Result<WsMessage, axum::Error>>,
) -> Result<Vec<Effect>, CloseCode> {
    match msg {
        Some(Ok(WsMessage::Text(t))) => Ok(session.handle_text(now, t.as_str())),
        Some(Ok(WsMessage::Binary(_))) => Ok(session.handle_binary(now)),
        Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {
            session.handle_activity(now);
            Ok(Vec::new())
        }
        Some(Ok(WsMessage::Close(_))) | None => Err(CloseCode::Normal),
        Some(Err(e)) => Err(read_error_code(&e)),
    }
}

struct Ctx<'a> {
    st: &'a ChatState,
    dev: &'a DeviceRef,
    conn_id: u64,
    tx: &'a mpsc::Sender<Outbound>,
    ans: &'a mpsc::UnboundedSender<Answer>,
}

impl Ctx<'_> {
    /// Carries out effects in order. Frames are fed, not flushed; returns
    /// whether any was, or the code to close with (the close frame flushes
    /// what was fed before it).
    async fn apply(
        &mut self,
        sink: &mut Sink,
        effects: Vec<Effect>,
        closer: &Closer,
    ) -> Result<bool, CloseCode> {
        let inner = &self.st.0;
        let mut wrote = false;
        for e in effects {
            match e {
                Effect::Frame(f) => {
                    feed(sink, WsMessage::Text(f.to_json().into()), closer).await?;
                    wrote = true;
                }
                Effect::Deliver(json) => {
                    feed(sink, WsMessage::Text(Utf8Bytes::from(&*json)), closer).await?;
                    wrote = true;
                }
                Effect::Persist(p) => self.persist(p).await,
                Effect::Fetch { after_seq, limit } => {
                    let store = inner.store.clone();
                    let dev = self.dev.clone();
                    let ans = self.ans.clone();
                    tokio::spawn(async move {
                        let page = match store.fetch(&dev, after_seq, limit).await {
                            Ok(q) => {
                                let mut cache = HashMap::new();
                                Ok(q.iter()
                                    .map(|e| crate::hub::delivery_of(e, &mut cache))
                                    .collect())
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "queue fetch failed");
                                Err(())
                            }
                        };
                        let _ = ans.send(Answer::Fetched(page, limit));
                    });
                }
                Effect::Typing(t) => self.typing(t),
                Effect::Subscribe(users) => {
                    inner
                        .hub
                        .subscribe(self.conn_id, &self.dev.user, &users, self.tx);
                    crate::presence::snapshot(self.st, &self.dev.user, users, self.tx.clone());
                }
                Effect::Unsubscribe(users) => inner.hub.unsubscribe(self.conn_id, &users),
                Effect::Ping => {
                    feed(sink, WsMessage::Ping(Default::default()), closer).await?;
                    wrote = true;
                }
                Effect::Touch => inner.hub.touch(&self.dev.user, inner.clock.now_ms()),
                Effect::Call(frame) => {
                    let type_name = frame.type_name();
                    let ev = CallEvent::Frame(frame);
                    if !self.st.call_event(&self.dev.user, self.dev.device, ev) {
                        let e = ErrorFrame::new(
                            ErrorCode::CallsUnavailable,
                            "call signaling is not running on this server",
                        )
                        .about(Some(type_name.into()), None);
                        let json = ServerFrame::Error(e).to_json();
                        feed(sink, WsMessage::Text(json.into()), closer).await?;
                        wrote = true;
                    }
                }
                Effect::Close(code) => return Err(code),
            }
        }
        Ok(wrote)
    }

    async fn persist(&self, p: Persist) {
        let inner = &self.st.0;
        let (op, answer): (BatchOp, AnswerFn) = match p {
            Persist::Send(s) => {
                let id = s.id.0.clone();
                (
                    BatchOp::Send(NewMessage {
                        sender: self.dev.user.clone(),
                        sender_device: self.dev.device,
                        sender_generation: self.dev.generation,
                        client_id: s.id,
                        to: s.to,
                        kind: s.kind,
                        body: s.body.0,
                        system: None,
                    }),
                    Box::new(move |r| Answer::Sent(id, r)),
                )
            }
            Persist::Delivered(ids) => (
                BatchOp::Delivered(self.dev.clone(), ids),
                Box::new(|r| Answer::Ids("delivered", r)),
            ),
            Persist::Read(ids) => (
                BatchOp::Read(self.dev.clone(), ids),
                Box::new(|r| Answer::Ids("read", r)),
            ),
            Persist::Ack(ids) => (
                BatchOp::Ack(self.dev.clone(), ids),
                Box::new(|r| Answer::Ids("ack", r)),
            ),
        };
        // The writer answers in commit order, straight into this socket's queue.
        // An acknowledgement that named only pending ids has nothing to say:
        // it is not sent, which spares a wake-up of this task per `delivered`.
        let ans = self.ans.clone();
        let reply: crate::writer::Reply = Box::new(move |r| {
            if !matches!(&r, Ok(OpOutcome::Unknown(ids)) if ids.is_empty()) {
                let _ = ans.send(answer(r));
            }
        });
        inner.writer.submit(op, Some(reply)).await;
    }

    fn typing(&self, t: TypingSend) {
        let st = self.st.clone();
        let from = self.dev.user.clone();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let inner = &st.0;
            let json: Arc<str> = Arc::from(
                ServerFrame::Typing(TypingEvent {
                    from: from.clone(),
                    to: t.to.clone(),
                    state: t.state,
                })
                .to_json(),
            );
            match &t.to {
                // Ephemeral: only devices connected now see it.
                Target::User(u) => st.send_frame(u, None, json),
                Target::Group(g) => match inner.store.group(g).await {
                    Ok(Some(group)) if group.members.iter().any(|m| m.user_id == from) => {
                        for m in group.members.iter().filter(|m| m.user_id != from) {
                            st.send_frame(&m.user_id, None, json.clone());
                        }
                    }
                    Ok(found) => {
                        let code = if found.is_some() {
                            ErrorCode::NotAMember
                        } else {
                            ErrorCode::UnknownGroup
                        };
                        let e = ServerFrame::Error(
                            ErrorFrame::new(code, format!("cannot send typing to group {g}"))
                                .about(Some("typing".into()), None),
                        );
                        let _ = tx.try_send(Outbound::Frame(Arc::from(e.to_json())));
                    }
                    Err(e) => tracing::warn!(error = %e, "group lookup for typing failed"),
                },
            }
        });
    }
}

fn read_error_code(e: &axum::Error) -> CloseCode {
    // axum wraps tungstenite's error (its text is all we can see across the
    // wrapper): a capacity error means the frame was over max_message_size /
    // max_frame_size; the client is told which rule it broke.
    let text = e.to_string();
    if text.contains("Space limit exceeded")
        || text.contains("too long")
        || text.contains("Message too big")
    {
        CloseCode::MessageTooBig
    } else if text.contains("UTF-8") || text.contains("utf-8") {
        CloseCode::InvalidPayload
    } else if text.contains("protocol error") {
        CloseCode::ProtocolError
    } else {
        CloseCode::Normal
    }
}

async fn send_frame(sink: &mut Sink, f: &ServerFrame) -> Result<(), CloseCode> {
    match tokio::time::timeout(
        WRITE_TIMEOUT,
        sink.send(WsMessage::Text(f.to_json().into())),
    )
    .await
    {
        Ok(Ok(())) => Ok(()),
        _ => Err(CloseCode::Normal),
    }
}

/// Appends a frame to the socket's write buffer (written out when it fills).
async fn feed(sink: &mut Sink, m: WsMessage, closer: &Closer) -> Result<(), CloseCode> {
    bounded(sink.feed(m), closer).await
}

/// Writes out what was fed.
async fn flush(sink: &mut Sink, closer: &Closer) -> Result<(), CloseCode> {
    bounded(sink.flush(), closer).await
}

/// Runs a socket write, bounded by WRITE_TIMEOUT and cut short by a close
/// request. Most writes complete at the first poll (the buffer has room, the
/// kernel takes the bytes): those skip arming the timer, which was a
/// measurable share of the per-frame cost.
async fn bounded<F>(write: F, closer: &Closer) -> Result<(), CloseCode>
where
    F: std::future::Future<Output = Result<(), axum::Error>>,
{
    let mut write = std::pin::pin!(write);
    if let Some(r) = write.as_mut().now_or_never() {
        return r.map_err(|_| CloseCode::Normal);
    }
    tokio::select! {
        r = tokio::time::timeout(WRITE_TIMEOUT, write) => match r {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(CloseCode::Normal),
            Err(_) => {
                // The other way a device is too slow: its socket stops taking
                // writes (the hub counts a full queue).
                metrics::counter!("chat_slow_consumer_total").increment(1);
                Err(CloseCode::SlowConsumer)
            }
        },
        _ = closer.closed() => Err(closer.code().unwrap_or(CloseCode::Normal)),
    }
}

/// Sends a close frame (best effort, bounded in time).
async fn close(sink: &mut Sink, code: CloseCode) {
    let frame = CloseFrame {
        code: code.code(),
        reason: code.reason().into(),
    };
    let _ = tokio::time::timeout(
        Duration::from_secs(2),
        sink.send(WsMessage::Close(Some(frame))),
    )
    .await;
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
}
