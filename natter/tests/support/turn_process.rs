//! A real `natter serve turn` (or `serve`) child process for attack tests.

#![allow(dead_code)] // each test file uses its own part

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_natter");
/// The TURN REST secret the process is started with.
pub(crate) const SECRET: &str = "attack-test-secret";

/// A port free for both UDP and TCP on `ip` (released before returning; the
/// child binds it moments later).
pub(crate) fn free_port(ip: &str) -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind((ip, 0)).unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind((ip, port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both UDP and TCP");
}

/// The running process.
pub(crate) struct TurnProcess {
    child: Child,
    data_dir: natter_common::testing::TempDir,
    /// `http://127.0.0.1:port`.
    pub(crate) http: String,
    /// The TURN port (UDP and TCP).
    pub(crate) turn_port: u16,
}

impl TurnProcess {
    /// `natter serve <service>` with TURN on `listen_ip` and `env` on top of the
    /// test defaults (REST secret, relays to 127.0.0.1 allowed); waits for /readyz.
    pub(crate) fn start(service: &str, listen_ip: &str, env: &[(&str, &str)]) -> TurnProcess {
        let data_dir = natter_common::testing::TempDir::new("natter-turn-attack");
        let turn_port = free_port(if listen_ip == "0.0.0.0" {
            "0.0.0.0"
        } else {
            listen_ip
        });
        let http_port = free_port("127.0.0.1");
        let mut cmd = Command::new(BIN);
        cmd.arg("serve");
        if service != "all" {
            cmd.arg(service);
        }
        cmd.env("NATTER_DATA_DIR", data_dir.path())
            .env("NATTER_HTTP__LISTEN", format!("127.0.0.1:{http_port}"))
            .env(
                "NATTER_HTTP__PUBLIC_URL",
                format!("http://127.0.0.1:{http_port}"),
            )
            .env("NATTER_TURN__LISTEN", format!("{listen_ip}:{turn_port}"))
            .env("NATTER_TURN__AUTH_SECRET", SECRET)
            .env("NATTER_TURN__ALLOWED_PEERS", "127.0.0.1/32")
            .env("NATTER_TURN__RELAY_IP", "127.0.0.1")
            .env("NATTER_LOG__FORMAT", "text")
            .env(
                "RUST_LOG",
                std::env::var("NATTER_TEST_CHILD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("natter starts");
        let mut p = TurnProcess {
            child,
            data_dir,
            http: format!("http://127.0.0.1:{http_port}"),
            turn_port,
        };
        p.wait_ready();
        p
    }

    /// The TURN address on `ip`.
    pub(crate) fn turn_addr(&self, ip: &str) -> SocketAddr {
        format!("{ip}:{}", self.turn_port).parse().unwrap()
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("natter exited while starting: {status}");
            }
            if self.readyz().0 == 200 {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("natter did not become ready within 30 s");
    }

    /// `/readyz`: status and body (0 when it does not answer).
    pub(crate) fn readyz(&self) -> (u16, String) {
        let url = format!("{}/readyz", self.http);
        let Ok(resp) = http1::blocking_get(&url) else {
            return (0, String::new());
        };
        resp
    }

    /// The exit status once the process has exited, waiting at most `limit`.
    pub(crate) fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Sends SIGTERM.
    pub(crate) fn terminate(&self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }

    /// The process's data dir.
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        self.data_dir.path()
    }

    /// Resident memory, KiB (`VmRSS`).
    pub(crate) fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("the process's status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|kib| kib.parse().ok())
            .expect("VmRSS")
    }

    /// The HTTP port.
    pub(crate) fn http_port(&self) -> u16 {
        self.http.rsplit(':').next().unwrap().parse().unwrap()
    }

    /// Whether the process is still running.
    pub(crate) fn running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for TurnProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A GET's body ("" when it fails).
pub(crate) fn get(url: &str) -> String {
    http1::blocking_get(url).map(|(_, b)| b).unwrap_or_default()
}

/// A blocking GET that needs no runtime: one HTTP/1.0 request over a socket.
mod http1 {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    pub(super) fn blocking_get(url: &str) -> std::io::Result<(u16, String)> {
        let rest = url.strip_prefix("http://").expect("http URL");
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        let mut s = TcpStream::connect(host)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        write!(s, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let status = out
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_owned();
        Ok((status, body))
    }
}
