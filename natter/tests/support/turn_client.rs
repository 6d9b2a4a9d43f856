//! A small blocking TURN client for process-level tests, on natter's own codec.
//! (Interop with an independent client is `turn-stun/tests/interop.rs`.)

#![allow(dead_code)] // each test file uses its own part

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use natter_turn::core::auth::{long_term_key, rest_password};
use natter_turn::core::codec::{
    Attribute, AttributeType, Class, IntegrityKind, Message, MessageBuilder, Method, TransactionId,
    stream_frame_len,
};

/// The REST username `expiry:user` valid for `secs` from now, and its password.
pub(crate) fn rest_credentials(secret: &str, user: &str, secs: i64) -> (String, String) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let username = format!("{}:{user}", now + secs);
    let password = rest_password(secret.as_bytes(), &username);
    (username, password)
}

/// How a request was answered.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A success response (its bytes).
    Success(Vec<u8>),
    /// An error response: code and bytes.
    Error(u16, Vec<u8>),
    /// Nothing within the timeout.
    Silent,
}

impl Answer {
    /// The error code, if an error.
    pub(crate) fn code(&self) -> Option<u16> {
        match self {
            Answer::Error(c, _) => Some(*c),
            _ => None,
        }
    }
}

enum Conn {
    Udp(UdpSocket, SocketAddr),
    Tcp(TcpStream, Vec<u8>),
    /// TLS through `openssl s_client -quiet`: bytes written to its stdin go out
    /// encrypted, decrypted bytes come out of its stdout (read by a thread).
    Tls(
        std::process::Child,
        std::process::ChildStdin,
        std::sync::mpsc::Receiver<Vec<u8>>,
        Vec<u8>,
    ),
}

/// One client 5-tuple.
pub(crate) struct TurnClient {
    conn: Conn,
    /// Username and password.
    credentials: Option<(String, String)>,
    realm: String,
    nonce: String,
    tid: u64,
    /// How long to wait for an answer.
    pub(crate) timeout: Duration,
}

impl TurnClient {
    /// A UDP client bound on `local_ip` (any port), talking to `server`.
    pub(crate) fn udp(local_ip: &str, server: SocketAddr) -> TurnClient {
        let sock = UdpSocket::bind((local_ip, 0)).expect("bind a client socket");
        TurnClient::over(Conn::Udp(sock, server))
    }

    /// A TCP client.
    pub(crate) fn tcp(server: SocketAddr) -> std::io::Result<TurnClient> {
        let stream = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
        Ok(TurnClient::over(Conn::Tcp(stream, Vec::new())))
    }

    /// A TCP client with a small receive buffer (so that not reading fills it).
    pub(crate) fn tcp_small_buffer(server: SocketAddr) -> std::io::Result<TurnClient> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(server),
            socket2::Type::STREAM,
            None,
        )?;
        socket.set_recv_buffer_size(4096)?;
        socket.connect_timeout(&server.into(), Duration::from_secs(5))?;
        Ok(TurnClient::over(Conn::Tcp(socket.into(), Vec::new())))
    }

    /// A TLS client (TURNS) through `openssl s_client`. Once the caller stops
    /// calling [`TurnClient::recv`], nothing reads s_client's output: its pipe
    /// fills, s_client stops reading the socket, and the server's writes stall,
    /// as with a real client that stopped reading.
    pub(crate) fn tls(server: SocketAddr) -> std::io::Result<TurnClient> {
        use std::process::{Command, Stdio};
        let mut child = Command::new("openssl")
            .args(["s_client", "-quiet", "-connect", &server.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        // A bounded hand-off: the reader thread blocks (and so stops reading
        // the pipe) once 4 chunks wait unread.
        let (tx, rx) = std::sync::mpsc::sync_channel(4);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Ok(TurnClient::over(Conn::Tls(child, stdin, rx, Vec::new())))
    }

    fn over(conn: Conn) -> TurnClient {
        TurnClient {
            conn,
            credentials: None,
            realm: String::new(),
            nonce: String::new(),
            tid: u64::from(std::process::id()) << 32,
            timeout: Duration::from_secs(3),
        }
    }

    /// The UDP socket's local address.
    pub(crate) fn local_addr(&self) -> SocketAddr {
        match &self.conn {
            Conn::Udp(s, _) => s.local_addr().unwrap(),
            Conn::Tcp(s, _) => s.local_addr().unwrap(),
            Conn::Tls(..) => panic!("the TLS client's address is s_client's"),
        }
    }

    /// Uses these credentials for requests that need them.
    pub(crate) fn login(&mut self, username: &str, password: &str) {
        self.nonce.clear();
        self.realm.clear();
        self.credentials = Some((username.to_owned(), password.to_owned()));
    }

    /// Sends raw bytes.
    pub(crate) fn send_raw(&mut self, bytes: &[u8]) {
        match &mut self.conn {
            Conn::Udp(s, server) => {
                let _ = s.send_to(bytes, *server);
            }
            Conn::Tcp(s, _) => {
                let _ = s.write_all(bytes);
            }
            Conn::Tls(_, stdin, _, _) => {
                let _ = stdin.write_all(bytes).and_then(|()| stdin.flush());
            }
        }
    }

    /// Receives one datagram or frame, or `None` after the timeout.
    pub(crate) fn recv(&mut self) -> Option<Vec<u8>> {
        let deadline = Instant::now() + self.timeout;
        match &mut self.conn {
            Conn::Udp(s, _) => {
                s.set_read_timeout(Some(self.timeout)).unwrap();
                let mut buf = vec![0u8; 65_536];
                let (n, _) = s.recv_from(&mut buf).ok()?;
                buf.truncate(n);
                Some(buf)
            }
            Conn::Tls(_, _, rx, pending) => loop {
                if let Ok(Some(len)) = stream_frame_len(pending)
                    && len <= pending.len()
                {
                    let frame = pending[..len].to_vec();
                    pending.drain(..len);
                    return Some(frame);
                }
                let left = deadline.checked_duration_since(Instant::now())?;
                match rx.recv_timeout(left) {
                    Ok(chunk) => pending.extend_from_slice(&chunk),
                    Err(_) => return None,
                }
            },
            Conn::Tcp(s, pending) => loop {
                if let Ok(Some(len)) = stream_frame_len(pending)
                    && len <= pending.len()
                {
                    let frame = pending[..len].to_vec();
                    pending.drain(..len);
                    return Some(frame);
                }
                let left = deadline.checked_duration_since(Instant::now())?;
                s.set_read_timeout(Some(left.max(Duration::from_millis(1))))
                    .unwrap();
                let mut buf = [0u8; 8192];
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                }
            },
        }
    }

    fn next_tid(&mut self) -> TransactionId {
        self.tid += 1;
        let mut t = [0u8; 12];
        t[4..].copy_from_slice(&self.tid.to_be_bytes());
        TransactionId(t)
    }

    /// Sends a request (signed when credentials and a nonce are known) and waits
    /// for its answer; a 401/438 with a nonce is retried once, signed.
    pub(crate) fn request(&mut self, method: Method, attrs: &[Attribute<'_>]) -> Answer {
        for _ in 0..2 {
            let tid = self.next_tid();
            let bytes = self.build(method, tid, attrs);
            self.send_raw(&bytes);
            let answer = self.await_answer(tid);
            let Answer::Error(code @ (401 | 438), bytes) = &answer else {
                return answer;
            };
            let msg = Message::decode(bytes).unwrap();
            let (Ok(Some(Attribute::Realm(realm))), Ok(Some(Attribute::Nonce(nonce)))) =
                (msg.get(AttributeType::REALM), msg.get(AttributeType::NONCE))
            else {
                return answer;
            };
            let retry = self.credentials.is_some() && (*code == 438 || self.nonce.is_empty());
            self.realm = realm.to_owned();
            self.nonce = nonce.to_owned();
            if !retry {
                return answer;
            }
        }
        Answer::Silent
    }

    fn build(&self, method: Method, tid: TransactionId, attrs: &[Attribute<'_>]) -> Vec<u8> {
        let mut b = MessageBuilder::new(Class::Request, method, tid);
        for a in attrs {
            b.add(a);
        }
        match &self.credentials {
            Some((user, password)) if !self.nonce.is_empty() => {
                b.add(&Attribute::Username(user))
                    .add(&Attribute::Realm(&self.realm))
                    .add(&Attribute::Nonce(&self.nonce));
                let key = long_term_key(user, &self.realm, password);
                b.finish(Some((IntegrityKind::Sha1, &key.0)), true)
            }
            _ => b.finish(None, true),
        }
    }

    fn await_answer(&mut self, tid: TransactionId) -> Answer {
        let deadline = Instant::now() + self.timeout;
        while Instant::now() < deadline {
            let Some(bytes) = self.recv() else {
                return Answer::Silent;
            };
            let Ok(msg) = Message::decode(&bytes) else {
                continue;
            };
            if msg.transaction_id != tid {
                continue;
            }
            return match msg.class {
                Class::Success => Answer::Success(bytes.clone()),
                Class::Error => match msg.get(AttributeType::ERROR_CODE) {
                    Ok(Some(Attribute::ErrorCode(e))) => Answer::Error(e.code, bytes.clone()),
                    _ => Answer::Error(0, bytes.clone()),
                },
                _ => continue,
            };
        }
        Answer::Silent
    }

    /// A Binding request: the reflexive address, if answered.
    pub(crate) fn binding(&mut self) -> Option<SocketAddr> {
        match self.request(Method::BINDING, &[]) {
            Answer::Success(bytes) => match Message::decode(&bytes)
                .ok()?
                .get(AttributeType::XOR_MAPPED_ADDRESS)
            {
                Ok(Some(Attribute::XorMappedAddress(a))) => Some(a),
                _ => None,
            },
            _ => None,
        }
    }

    /// Allocates with `extra` attributes: the relayed address (and reservation
    /// token), or the error code (0 when unanswered).
    pub(crate) fn allocate(
        &mut self,
        extra: &[Attribute<'_>],
    ) -> Result<(SocketAddr, Option<[u8; 8]>), u16> {
        let mut attrs = vec![Attribute::RequestedTransport(17)];
        attrs.extend_from_slice(extra);
        match self.request(Method::ALLOCATE, &attrs) {
            Answer::Success(bytes) => {
                let msg = Message::decode(&bytes).unwrap();
                let Ok(Some(Attribute::XorRelayedAddress(relayed))) =
                    msg.get(AttributeType::XOR_RELAYED_ADDRESS)
                else {
                    panic!("Allocate success without XOR-RELAYED-ADDRESS")
                };
                let token = match msg.get(AttributeType::RESERVATION_TOKEN) {
                    Ok(Some(Attribute::ReservationToken(t))) => Some(t),
                    _ => None,
                };
                Ok((relayed, token))
            }
            Answer::Error(code, _) => Err(code),
            Answer::Silent => Err(0),
        }
    }

    /// CreatePermission for `peer`: Ok, or the error code (0 when unanswered).
    pub(crate) fn permit(&mut self, peer: SocketAddr) -> Result<(), u16> {
        match self.request(
            Method::CREATE_PERMISSION,
            &[Attribute::XorPeerAddress(peer)],
        ) {
            Answer::Success(_) => Ok(()),
            Answer::Error(code, _) => Err(code),
            Answer::Silent => Err(0),
        }
    }

    /// Refresh with `lifetime` seconds (0 deletes).
    pub(crate) fn refresh(&mut self, lifetime: u32) -> Result<(), u16> {
        match self.request(Method::REFRESH, &[Attribute::Lifetime(lifetime)]) {
            Answer::Success(_) => Ok(()),
            Answer::Error(code, _) => Err(code),
            Answer::Silent => Err(0),
        }
    }

    /// Sends `data` to `peer` in a Send indication.
    pub(crate) fn send_to_peer(&mut self, peer: SocketAddr, data: &[u8]) {
        let tid = self.next_tid();
        let mut b = MessageBuilder::new(Class::Indication, Method::SEND, tid);
        b.add(&Attribute::XorPeerAddress(peer))
            .add(&Attribute::Data(data));
        let bytes = b.finish(None, false);
        self.send_raw(&bytes);
    }

    /// The next Data indication's (peer, data), or `None` after the timeout.
    pub(crate) fn recv_data(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        let deadline = Instant::now() + self.timeout;
        while Instant::now() < deadline {
            let bytes = self.recv()?;
            let Ok(msg) = Message::decode(&bytes) else {
                continue;
            };
            if (msg.class, msg.method) != (Class::Indication, Method::DATA) {
                continue;
            }
            if let (Ok(Some(Attribute::XorPeerAddress(p))), Ok(Some(Attribute::Data(d)))) = (
                msg.get(AttributeType::XOR_PEER_ADDRESS),
                msg.get(AttributeType::DATA),
            ) {
                return Some((p, d.to_vec()));
            }
        }
        None
    }
}

/// Relays one datagram each way between a fresh allocation of `client` and a
/// UDP peer on 127.0.0.1; panics with the step that failed.
pub(crate) fn relay_round_trip(client: &mut TurnClient) {
    let (relayed, _) = client.allocate(&[]).expect("allocate");
    let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
    peer.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let peer_addr = peer.local_addr().unwrap();
    client.permit(peer_addr).expect("permission for the peer");
    client.send_to_peer(peer_addr, b"to the peer");
    let mut buf = [0u8; 64];
    let (n, from) = peer.recv_from(&mut buf).expect("the peer receives");
    assert_eq!(&buf[..n], b"to the peer");
    assert_eq!(from.port(), relayed.port(), "sent from the relayed port");
    peer.send_to(b"to the client", from).unwrap();
    let (p, data) = client.recv_data().expect("the client receives");
    assert_eq!((p, data.as_slice()), (peer_addr, &b"to the client"[..]));
}

impl Drop for TurnClient {
    fn drop(&mut self) {
        if let Conn::Tls(child, ..) = &mut self.conn {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
