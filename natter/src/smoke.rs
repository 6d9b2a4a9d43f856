//! `natter smoke`: a synthetic user journey against a running release — two
//! test numbers register, one sends the other a message over the WebSocket,
//! the other receives it and confirms delivery, and the sender sees the
//! receipt. The chart's `helm test` runs it; operators can run it as a
//! synthetic check. The numbers must be in the server's `auth.test_numbers`
//! (their code is `auth.test_code`, never sent), so it needs no SMS.

use anyhow::{Context, bail};
use futures_util::{SinkExt, StreamExt};
use natter_proto::{
    Body, ClientFrame, ClientMsgId, Kind, MsgIds, Send, ServerFrame, Target, UserId,
};
use serde::Deserialize;
use serde_json::json;
use std::time::Duration;
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

/// Where the release answers and who registers.
#[derive(Debug, Clone)]
pub(crate) struct SmokeArgs {
    /// Base URL of the auth service (registration, accounts).
    pub auth_url: String,
    /// Base URL of the chat service (`/v1/ws`).
    pub chat_url: String,
    /// Two numbers from the server's `auth.test_numbers`.
    pub numbers: [String; 2],
    /// Their code (`auth.test_code`).
    pub code: String,
    /// Limit for the whole journey.
    pub timeout: Duration,
}

#[derive(Debug, Deserialize)]
struct Credentials {
    user_id: String,
    access_token: String,
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Runs the journey; `Ok` means a message went from the first number to the
/// second and its delivery receipt came back.
pub(crate) async fn run(args: SmokeArgs) -> anyhow::Result<()> {
    tokio::time::timeout(args.timeout, journey(&args))
        .await
        .with_context(|| format!("not done within {} s", args.timeout.as_secs()))?
}

async fn journey(args: &SmokeArgs) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()?;
    let alice = register(&http, &args.auth_url, &args.numbers[0], &args.code).await?;
    println!("registered {} as user {}", args.numbers[0], alice.user_id);
    let bob = register(&http, &args.auth_url, &args.numbers[1], &args.code).await?;
    println!("registered {} as user {}", args.numbers[1], bob.user_id);

    let mut alice_ws = connect(&args.chat_url, &alice.access_token).await?;
    let mut bob_ws = connect(&args.chat_url, &bob.access_token).await?;
    let text = format!("natter smoke {}", uuid::Uuid::now_v7());
    let id = ClientMsgId::new(uuid::Uuid::now_v7().simple().to_string());
    send(
        &mut alice_ws,
        &ClientFrame::Send(Send {
            id: id.clone(),
            to: Target::User(UserId::new(bob.user_id.clone())),
            kind: Kind::text(),
            body: Body(text.clone().into_bytes()),
        }),
    )
    .await?;
    let sent = next_matching(&mut alice_ws, "sent", |f| match f {
        ServerFrame::Sent(s) if s.id == id => Some(s.msg_id),
        _ => None,
    })
    .await?;
    println!("sent message {sent}");
    let got = next_matching(&mut bob_ws, "msg", |f| match f {
        ServerFrame::Msg(m) if m.id == id => Some(m),
        _ => None,
    })
    .await?;
    if got.body.0 != text.as_bytes() || got.from.user.to_string() != alice.user_id {
        bail!("the message arrived changed: {got:?}");
    }
    send(
        &mut bob_ws,
        &ClientFrame::Delivered(MsgIds {
            ids: vec![got.msg_id],
        }),
    )
    .await?;
    println!(
        "received message {} ({} bytes)",
        got.msg_id,
        got.body.0.len()
    );
    next_matching(&mut alice_ws, "receipt", |f| match f {
        ServerFrame::Receipt(r) if r.msg_id == sent => Some(()),
        _ => None,
    })
    .await?;
    println!("delivery receipt received: the release works end to end");
    let _ = alice_ws.close(None).await;
    let _ = bob_ws.close(None).await;
    Ok(())
}

async fn register(
    http: &reqwest::Client,
    base: &str,
    number: &str,
    code: &str,
) -> anyhow::Result<Credentials> {
    let session: serde_json::Value = call(
        http,
        format!("{base}/v1/registration/sessions"),
        json!({ "number": number }),
    )
    .await
    .context("starting registration")?;
    let sid = session["session_id"]
        .as_str()
        .context("no session_id in the registration session")?;
    call::<serde_json::Value>(
        http,
        format!("{base}/v1/registration/sessions/{sid}/verify"),
        json!({ "code": code }),
    )
    .await
    .context("verifying the code (is the number in auth.test_numbers, the code auth.test_code?)")?;
    call(
        http,
        format!("{base}/v1/accounts"),
        json!({ "session_id": sid, "device_name": "natter smoke" }),
    )
    .await
    .context("creating the account")
}

async fn call<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: String,
    body: serde_json::Value,
) -> anyhow::Result<T> {
    let resp = http
        .post(&url)
        .json(&body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "POST {url}: {status}: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(500)])
        );
    }
    serde_json::from_slice(&bytes).with_context(|| format!("POST {url}: unexpected answer"))
}

async fn connect(chat_url: &str, token: &str) -> anyhow::Result<Socket> {
    let ws_url = format!(
        "{}/v1/ws",
        chat_url
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    );
    let mut req = ws_url.as_str().into_client_request()?;
    req.headers_mut()
        .insert("authorization", format!("Bearer {token}").parse()?);
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .with_context(|| format!("WebSocket {ws_url}"))?;
    next_matching(&mut ws, "hello", |f| match f {
        ServerFrame::Hello(_) => Some(()),
        _ => None,
    })
    .await?;
    Ok(ws)
}

async fn send(ws: &mut Socket, frame: &ClientFrame) -> anyhow::Result<()> {
    ws.send(tungstenite::Message::text(serde_json::to_string(frame)?))
        .await
        .context("WebSocket send")
}

/// Reads frames until `pick` accepts one; an `error` frame or a close fails.
async fn next_matching<T>(
    ws: &mut Socket,
    what: &str,
    mut pick: impl FnMut(ServerFrame) -> Option<T>,
) -> anyhow::Result<T> {
    while let Some(msg) = ws.next().await {
        match msg.with_context(|| format!("waiting for {what}"))? {
            tungstenite::Message::Text(t) => {
                let frame: ServerFrame = serde_json::from_str(t.as_str())
                    .with_context(|| format!("unexpected frame while waiting for {what}: {t}"))?;
                if let ServerFrame::Error(e) = &frame {
                    bail!("error frame while waiting for {what}: {e:?}");
                }
                if let Some(v) = pick(frame) {
                    return Ok(v);
                }
            }
            tungstenite::Message::Close(c) => {
                bail!("socket closed while waiting for {what}: {c:?}")
            }
            _ => {}
        }
    }
    bail!("socket ended while waiting for {what}")
}
