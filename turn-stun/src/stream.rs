//! TCP and TLS client connections: accept, split the byte stream into STUN and
//! ChannelData frames (RFC 8656 §12.5), and write what the core sends back.

use std::sync::Arc;
use std::time::Duration;

use natter_common::Shutdown;
use natter_turn_core::codec::stream_frame_len;
use natter_turn_core::{FiveTuple, Transport};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc};
use tracing::{Instrument, debug, warn};

use crate::tls::TlsReloader;

/// Messages from the stream connection tasks to the core task.
pub(crate) enum Inbound {
    /// A frame from a stream client.
    Client { ft: FiveTuple, data: Vec<u8> },
    /// A stream connection is ready.
    Opened { ft: FiveTuple, conn: ConnHandle },
    /// A stream connection ended.
    Closed { ft: FiveTuple },
}

/// Frames queued for one connection before further frames are dropped: a client
/// that does not read cannot make the server buffer without bound.
pub(crate) const CONNECTION_QUEUE: usize = 1024;
/// A TLS handshake must finish within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A write to a client must make progress within this, or the connection is
/// closed: a client that never reads must not pin its connection slot (and its
/// queued frames) forever once its TCP window is full.
pub(crate) const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Read buffer growth step; a frame is at most 65,535 + 20 bytes.
const READ_CHUNK: usize = 16 * 1024;

/// What the core task keeps per connection.
pub(crate) struct ConnHandle {
    pub(crate) tx: mpsc::Sender<Vec<u8>>,
    pub(crate) close: Shutdown,
    pub(crate) opened: std::time::Instant,
}

pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsReloader>,
    inbox: mpsc::Sender<Inbound>,
    limit: Arc<Semaphore>,
    accepting: Shutdown,
    shutdown: Shutdown,
) {
    let transport = if tls.is_some() {
        Transport::Tls
    } else {
        Transport::Tcp
    };
    loop {
        // Accepting stops when draining starts (the listener is then dropped, so
        // new connections are refused); open connections live on until `shutdown`.
        let accepted = tokio::select! {
            _ = accepting.cancelled() => return,
            r = listener.accept() => r,
        };
        let (stream, client) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                warn!(error = %e, transport = transport.as_str(), "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            metrics::counter!("natter_turn_refusals_total", "reason" => "connection_limit")
                .increment(1);
            continue; // dropping the stream closes it
        };
        let Ok(server) = stream.local_addr() else {
            continue;
        };
        // A dual-stack `[::]` listener reports IPv4 peers as `::ffff:a.b.c.d`.
        let (client, server) = (crate::udp::canonical(client), crate::udp::canonical(server));
        let _ = stream.set_nodelay(true);
        let ft = FiveTuple {
            transport,
            client,
            server,
        };
        let inbox = inbox.clone();
        let close = shutdown.child_token();
        let acceptor = tls.as_ref().map(TlsReloader::acceptor);
        let span = tracing::debug_span!("turn_connection", client = %client, transport = transport.as_str());
        tokio::spawn(
            async move {
                let _permit = permit;
                match acceptor {
                    None => serve(stream, ft, inbox, close).await,
                    Some(acceptor) => {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                        {
                            Ok(Ok(tls)) => serve(tls, ft, inbox, close).await,
                            Ok(Err(e)) => debug!(error = %e, "TLS handshake failed"),
                            Err(_) => debug!("TLS handshake timed out"),
                        }
                    }
                }
            }
            .instrument(span),
        );
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    ft: FiveTuple,
    inbox: mpsc::Sender<Inbound>,
    close: Shutdown,
) {
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(CONNECTION_QUEUE);
    let handle = ConnHandle {
        tx,
        close: close.clone(),
        opened: std::time::Instant::now(),
    };
    if inbox
        .send(Inbound::Opened { ft, conn: handle })
        .await
        .is_err()
    {
        return;
    }
    let (mut rd, mut wr) = tokio::io::split(stream);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut out: Vec<u8> = Vec::new();
    let reason = loop {
        tokio::select! {
            _ = close.cancelled() => break "closed by server",
            read = rd.read_buf(&mut buf) => match read {
                Ok(0) => break "closed by client",
                Ok(_) => match split_frames(&mut buf, ft, &inbox).await {
                    Ok(()) => {}
                    Err(reason) => break reason,
                },
                Err(_) => break "read error",
            },
            frame = rx.recv() => {
                let Some(frame) = frame else { break "server gone" };
                // Coalesce what is queued into one write.
                out.clear();
                out.extend_from_slice(&frame);
                while out.len() < 64 * 1024 {
                    match rx.try_recv() {
                        Ok(more) => out.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                // The write is raced against the server closing the connection
                // and bounded in time: a client that stops reading is dropped.
                tokio::select! {
                    _ = close.cancelled() => break "closed by server",
                    written = tokio::time::timeout(WRITE_TIMEOUT, wr.write_all(&out)) => match written {
                        Ok(Ok(())) => {}
                        Ok(Err(_)) => break "write error",
                        Err(_) => {
                            metrics::counter!("natter_turn_dropped_total", "reason" => "write_timeout")
                                .increment(1);
                            break "write timed out: the client is not reading";
                        }
                    },
                }
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_CHUNK);
        }
    };
    debug!(reason, "connection ended");
    // Shutting down writes (a TLS close_notify) must not wait on a client that
    // does not read either.
    let _ = tokio::time::timeout(Duration::from_secs(1), wr.shutdown()).await;
    let _ = inbox.send(Inbound::Closed { ft }).await;
}

/// Hands every complete frame at the front of `buf` to the core task.
async fn split_frames(
    buf: &mut Vec<u8>,
    ft: FiveTuple,
    inbox: &mpsc::Sender<Inbound>,
) -> Result<(), &'static str> {
    let mut consumed = 0;
    loop {
        let rest = &buf[consumed..];
        match stream_frame_len(rest) {
            Ok(Some(len)) if len <= rest.len() => {
                let data = rest[..len].to_vec();
                consumed += len;
                if inbox.send(Inbound::Client { ft, data }).await.is_err() {
                    return Err("server gone");
                }
            }
            Ok(_) => break,
            Err(_) => return Err("bytes that are neither STUN nor ChannelData"),
        }
    }
    buf.drain(..consumed);
    Ok(())
}
