//! Scenarios as data, and the runner that plays them with the client SDK and
//! writes a transcript.
//!
//! A scenario names users and steps. Devices are `alice` (alice's primary,
//! device 1) or `alice/2` (her second, linked device). Each step may say how
//! many new events it waits for per device (`expect = { bob = 1 }`); the runner
//! then ends the step with a barrier (see [`Runner`]'s `barrier`: marker
//! messages that prove nothing else is on its way, where a window of silence
//! would miss a late duplicate), and writes every event of the step, device by
//! device in arrival order, with ids and times normalised (user ids become
//! names, message ids become the sender's client ids, group ids become group
//! names, times are dropped). Transcripts are compared with checked-in golden
//! files.
//!
//! Like a real app, the runner keeps what each device received (by message id)
//! across reconnects: a redelivery of a message it already stored is not shown,
//! while a second copy of one client id under another message id (a double
//! store) is.

use crate::server::Server;
use anyhow::{Context, bail};
use natter_client::{Account, Api, Chat, ConnectOptions, Credentials, Event};
use natter_proto::{
    CallAnswer, CallClientFrame, CallId, CallMedia, CallOffer, CallRef, ClientMsgId, GroupId, Kind,
    MsgId, ReceiptStatus, ServerFrame, SystemEvent, Target, UserId,
};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;
use tokio::sync::mpsc;

/// A scenario file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Name (the golden transcript is `golden/<name>.txt`).
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Needs a server that can be killed (a real process).
    #[serde(default)]
    pub needs_process: bool,
    /// Call ring timeout of the server (default 60 s).
    #[serde(default)]
    pub ring_timeout_secs: Option<u32>,
    /// The steps.
    pub steps: Vec<Step>,
}

/// Events to wait for, per device.
pub type Expect = BTreeMap<String, usize>;

/// One step.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "do", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Register a user's primary device (with a fresh phone number).
    Register {
        /// User name.
        user: String,
    },
    /// Link another device to a user.
    Link {
        /// User name.
        user: String,
    },
    /// Open a device's connection; waits for `synced`.
    Connect {
        /// Device.
        device: String,
        /// Events to wait for (the backlog).
        #[serde(default)]
        expect: Expect,
    },
    /// Close a device's connection (it goes offline).
    Disconnect {
        /// Device.
        device: String,
    },
    /// Send a text message; waits for `sent`.
    Send {
        /// Sending device.
        from: String,
        /// `bob` or `group:<name>`.
        to: String,
        /// Client message id.
        id: String,
        /// Text.
        text: String,
        /// Send it this many times (duplicate sends).
        #[serde(default = "one")]
        times: usize,
        /// Events to wait for.
        #[serde(default)]
        expect: Expect,
    },
    /// Mark messages (by client id) read on a device.
    Read {
        /// Device.
        device: String,
        /// Client ids of messages it received.
        ids: Vec<String>,
        /// Events to wait for.
        #[serde(default)]
        expect: Expect,
    },
    /// Create a group.
    GroupCreate {
        /// Creator device.
        by: String,
        /// Group name (also its label).
        group: String,
        /// Other members (user names).
        members: Vec<String>,
        /// Events to wait for.
        #[serde(default)]
        expect: Expect,
    },
    /// Add members.
    GroupAdd {
        /// Admin device.
        by: String,
        /// Group label.
        group: String,
        /// User names.
        users: Vec<String>,
        /// Events to wait for.
        #[serde(default)]
        expect: Expect,
    },
    /// Remove a member (or leave, when `user` is `by`'s user).
    GroupRemove {
        /// Device.
        by: String,
        /// Group label.
        group: String,
        /// User name.
        user: String,
        /// Events to wait for.
        #[serde(default)]
        expect: Expect,
    },
    /// Restart the server (SIGKILL with `kill = true`); connected devices
    /// reconnect by themselves.
    RestartServer {
        /// SIGKILL instead of a graceful stop.
        #[serde(default)]
        kill: bool,
        /// Events to wait for.
        #[serde(default)]
        expect: Expect,
    },
    /// Record the messages the server still holds for a device (REST).
    Pending {
        /// Device.
        device: String,
    },
    /// Only wait for events.
    Wait {
        /// Events to wait for.
        expect: Expect,
    },
    /// Place a call (signaling only: the SDP is a placeholder).
    Call {
        /// Calling device.
        from: String,
        /// Callee (user name).
        to: String,
        /// Call id.
        call: String,
        /// Video instead of audio.
        #[serde(default)]
        video: bool,
        /// Events to wait for.
        #[serde(default)]
        expect: Expect,
    },
    /// Answer a ringing call on a device.
    Answer {
        /// Device.
        device: String,
        /// Call id.
        call: String,
        /// Events to wait for.
        #[serde(default)]
        expect: Expect,
    },
    /// Decline a ringing call on a device.
    Reject {
        /// Device.
        device: String,
        /// Call id.
        call: String,
        /// Events to wait for.
        #[serde(default)]
        expect: Expect,
    },
    /// Hang up (or cancel) a call on a device.
    Hangup {
        /// Device.
        device: String,
        /// Call id.
        call: String,
        /// Events to wait for.
        #[serde(default)]
        expect: Expect,
    },
    /// Record a user's call log (REST).
    CallLog {
        /// Device whose token reads it.
        device: String,
        /// Entries to wait for (the log is written just after a call ends).
        #[serde(default = "one")]
        calls: usize,
    },
}

fn one() -> usize {
    1
}

impl Scenario {
    /// Parses a TOML scenario.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Loads every `*.toml` in a directory, by name.
    pub fn load_dir(dir: &std::path::Path) -> anyhow::Result<Vec<Self>> {
        let mut out = Vec::new();
        let mut paths: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            let text = std::fs::read_to_string(&p)?;
            out.push(Self::parse(&text).with_context(|| format!("{}", p.display()))?);
        }
        Ok(out)
    }
}

struct Device {
    account: Account,
    chat: Option<Chat>,
    /// msg ids stored, and client id of each (for `read`).
    stored: HashMap<MsgId, String>,
    receipts: HashSet<(MsgId, ReceiptStatus, UserId)>,
    connects: usize,
    /// Connected, or reconnecting by itself (not closed by the step or for good).
    live: bool,
}

/// The runner's own account, which sends the barriers' marker messages. It
/// is never in a transcript, and neither are its markers.
struct Barrier {
    user: UserId,
    chat: Chat,
}

/// Plays a scenario; returns its transcript.
pub struct Runner {
    server: Server,
    api: Api,
    devices: BTreeMap<String, Device>,
    users: HashMap<String, UserId>,
    names: HashMap<UserId, String>,
    groups: HashMap<String, GroupId>,
    group_names: HashMap<GroupId, String>,
    events_tx: mpsc::UnboundedSender<(String, Event)>,
    events: mpsc::UnboundedReceiver<(String, Event)>,
    lines: Vec<String>,
    /// Connections opened so far (a cluster spreads them over its nodes).
    connects_total: usize,
    /// Registered at the first barrier that has a device to reach.
    barrier: Option<Barrier>,
    /// Markers received: (device label, marker client id).
    markers_seen: HashSet<(String, String)>,
    /// Markers sent so far (their client ids are `barrier-<n>`).
    markers_sent: u64,
}

/// Most barrier rounds per step (see [`Runner::barrier`]).
const MAX_BARRIER_ROUNDS: usize = 4;

/// Longest wait for a step's expected events.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

impl Runner {
    /// A runner against `server`.
    pub fn new(server: Server) -> anyhow::Result<Self> {
        let api = Api::new(&server.url())?;
        let (events_tx, events) = mpsc::unbounded_channel();
        Ok(Self {
            server,
            api,
            devices: BTreeMap::new(),
            users: HashMap::new(),
            names: HashMap::new(),
            groups: HashMap::new(),
            group_names: HashMap::new(),
            events_tx,
            events,
            lines: Vec::new(),
            connects_total: 0,
            barrier: None,
            markers_seen: HashSet::new(),
            markers_sent: 0,
        })
    }

    /// Runs every step; returns the transcript and the server (to stop it).
    pub async fn run(mut self, s: &Scenario) -> (anyhow::Result<String>, Server) {
        self.lines.push(format!("# {}: {}", s.name, s.description));
        let mut result = Ok(());
        for (i, step) in s.steps.iter().enumerate() {
            self.lines.push(format!("> {}", describe_step(step)));
            if let Err(e) = self.step(step).await {
                result = Err(e.context(format!("step {}: {}", i + 1, describe_step(step))));
                break;
            }
        }
        for d in self.devices.values() {
            if let Some(c) = &d.chat {
                c.close();
            }
        }
        if let Some(b) = &self.barrier {
            b.chat.close();
        }
        let transcript = self.lines.join("\n") + "\n";
        (result.map(|()| transcript), self.server)
    }

    fn device(&mut self, label: &str) -> anyhow::Result<&mut Device> {
        let key = canonical(label);
        self.devices
            .get_mut(&key)
            .with_context(|| format!("no device {label}"))
    }

    async fn step(&mut self, step: &Step) -> anyhow::Result<()> {
        let mut expect = Expect::new();
        match step {
            Step::Register { user } => {
                let number = random_number();
                let outbox = self.server.sms_outbox();
                let creds =
                    natter_client::register(&self.api, &number, "scenario", |s| async move {
                        natter_client::code_from_outbox(&outbox, &s.session_id).await
                    })
                    .await
                    .with_context(|| format!("register {user}"))?;
                self.add_device(user, creds);
            }
            Step::Link { user } => {
                let primary = self.device(user)?.account.clone();
                let code = self.api.create_link_code(&primary.token().await?).await?;
                let creds = self.api.link_device(&code, "scenario-linked").await?;
                self.add_device(user, creds);
            }
            Step::Connect { device, expect: e } => {
                expect = e.clone();
                let label = canonical(device);
                let opts = ConnectOptions {
                    ws_url: self.server.ws_url_for(self.connects_total),
                    ..ConnectOptions::default()
                };
                self.connects_total += 1;
                let d = self.device(device)?;
                let (chat, mut events) = Chat::connect(d.account.clone(), opts);
                d.chat = Some(chat);
                d.live = true;
                let tx = self.events_tx.clone();
                tokio::spawn(async move {
                    while let Some(ev) = events.recv().await {
                        let closed = matches!(ev, Event::Closed { .. });
                        let _ = tx.send((label.clone(), ev));
                        if closed {
                            break;
                        }
                    }
                });
                self.wait_for(&expect, Some((canonical(device), Waiting::Synced)))
                    .await?;
                return Ok(());
            }
            Step::Disconnect { device } => {
                let label = canonical(device);
                let d = self.device(device)?;
                let chat = d
                    .chat
                    .take()
                    .with_context(|| format!("{device} is not connected"))?;
                d.live = false;
                chat.close();
                self.wait_for(&expect, Some((label, Waiting::Closed)))
                    .await?;
                return Ok(());
            }
            Step::Send {
                from,
                to,
                id,
                text,
                times,
                expect: e,
            } => {
                expect = e.clone();
                let target = self.target(to)?;
                let chat = self
                    .device(from)?
                    .chat
                    .clone()
                    .with_context(|| format!("{from} is not connected"))?;
                for _ in 0..*times {
                    chat.send_with_id(
                        natter_proto::ClientMsgId::new(id.clone()),
                        target.clone(),
                        natter_proto::Kind::text(),
                        text.as_bytes().to_vec(),
                    );
                }
            }
            Step::Read {
                device,
                ids,
                expect: e,
            } => {
                expect = e.clone();
                let d = self.device(device)?;
                let mut msg_ids = Vec::new();
                for id in ids {
                    let m = d
                        .stored
                        .iter()
                        .filter(|(_, c)| *c == id)
                        .map(|(m, _)| *m)
                        .next()
                        .with_context(|| format!("{device} has no message {id}"))?;
                    msg_ids.push(m);
                }
                d.chat
                    .as_ref()
                    .with_context(|| format!("{device} is not connected"))?
                    .read(msg_ids);
            }
            Step::GroupCreate {
                by,
                group,
                members,
                expect: e,
            } => {
                expect = e.clone();
                let token = self.device(by)?.account.token().await?;
                let users: Vec<UserId> = members
                    .iter()
                    .map(|m| self.user(m))
                    .collect::<anyhow::Result<_>>()?;
                let g = self.api.create_group(&token, group, &users).await?;
                self.groups.insert(group.clone(), g.group_id.clone());
                self.group_names.insert(g.group_id, group.clone());
            }
            Step::GroupAdd {
                by,
                group,
                users,
                expect: e,
            } => {
                expect = e.clone();
                let token = self.device(by)?.account.token().await?;
                let users: Vec<UserId> = users
                    .iter()
                    .map(|m| self.user(m))
                    .collect::<anyhow::Result<_>>()?;
                let gid = self
                    .groups
                    .get(group)
                    .cloned()
                    .with_context(|| format!("no group {group}"))?;
                self.api.add_members(&token, &gid, &users).await?;
            }
            Step::GroupRemove {
                by,
                group,
                user,
                expect: e,
            } => {
                expect = e.clone();
                let token = self.device(by)?.account.token().await?;
                let uid = self.user(user)?;
                let gid = self
                    .groups
                    .get(group)
                    .cloned()
                    .with_context(|| format!("no group {group}"))?;
                self.api.remove_member(&token, &gid, &uid).await?;
            }
            Step::RestartServer { kill, expect: e } => {
                expect = e.clone();
                let before: Vec<(String, usize)> = self
                    .devices
                    .iter()
                    .filter(|(_, d)| d.chat.is_some())
                    .map(|(l, d)| (l.clone(), d.connects))
                    .collect();
                self.server.restart(*kill).await?;
                // Every connected device reconnects by itself.
                let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
                loop {
                    let done = before
                        .iter()
                        .all(|(l, n)| self.devices.get(l).is_some_and(|d| d.connects > *n));
                    if done {
                        break;
                    }
                    let ev = tokio::time::timeout_at(deadline, self.events.recv())
                        .await
                        .context("devices did not reconnect after the restart")?;
                    if let Some((label, ev)) = ev {
                        self.record(&label, ev, &mut Vec::new());
                    }
                }
            }
            Step::Pending { device } => {
                let label = canonical(device);
                let token = self.device(device)?.account.token().await?;
                let pending = self
                    .api
                    .pending(&token, &natter_client::PendingQuery::default())
                    .await?;
                let barrier = self.barrier.as_ref().map(|b| &b.user);
                let ids: Vec<String> = pending
                    .iter()
                    .filter(|m| Some(&m.from.user) != barrier)
                    .map(|m| m.id.0.clone())
                    .collect();
                self.lines
                    .push(format!("{label}: pending [{}]", ids.join(", ")));
                return Ok(());
            }
            Step::Wait { expect: e } => expect = e.clone(),
            Step::Call {
                from,
                to,
                call,
                video,
                expect: e,
            } => {
                expect = e.clone();
                let to = self.user(to)?;
                self.chat_of(from)?
                    .call_frame(CallClientFrame::Offer(CallOffer {
                        call_id: CallId::new(call.as_str()),
                        to,
                        media: if *video {
                            CallMedia::Video
                        } else {
                            CallMedia::Audio
                        },
                        sdp: format!("sdp-offer-{call}"),
                    }));
            }
            Step::Answer {
                device,
                call,
                expect: e,
            } => {
                expect = e.clone();
                self.chat_of(device)?
                    .call_frame(CallClientFrame::Answer(CallAnswer {
                        call_id: CallId::new(call.as_str()),
                        sdp: format!("sdp-answer-{call}"),
                    }));
            }
            Step::Reject {
                device,
                call,
                expect: e,
            } => {
                expect = e.clone();
                self.chat_of(device)?
                    .call_frame(CallClientFrame::Reject(CallRef {
                        call_id: CallId::new(call.as_str()),
                    }));
            }
            Step::Hangup {
                device,
                call,
                expect: e,
            } => {
                expect = e.clone();
                self.chat_of(device)?
                    .call_frame(CallClientFrame::Hangup(CallRef {
                        call_id: CallId::new(call.as_str()),
                    }));
            }
            Step::CallLog { device, calls } => {
                let label = canonical(device);
                let token = self.device(device)?.account.token().await?;
                // The log is written just after the call ends; poll for it.
                let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
                let mut log = self.api.call_log(&token, None, None).await?;
                while log.calls.len() < *calls {
                    if tokio::time::Instant::now() > deadline {
                        bail!(
                            "call log of {device} has {} entries, expected {calls}",
                            log.calls.len()
                        );
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    log = self.api.call_log(&token, None, None).await?;
                }
                let entries: Vec<String> = log
                    .calls
                    .iter()
                    .map(|c| {
                        let peer = self.names.get(&c.peer).cloned().unwrap_or_default();
                        let answered = c
                            .answered_device
                            .map(|d| format!(" on device {d}"))
                            .unwrap_or_default();
                        format!(
                            "{} {} {} {} {}{answered} ({})",
                            c.call_id,
                            c.direction,
                            peer,
                            c.media.as_str(),
                            c.outcome,
                            c.reason.as_str()
                        )
                    })
                    .collect();
                self.lines
                    .push(format!("{label}: call log [{}]", entries.join("; ")));
                return Ok(());
            }
        }
        self.wait_for(&expect, None).await
    }

    fn add_device(&mut self, user: &str, creds: Credentials) {
        let uid = creds.user();
        self.users.insert(user.to_owned(), uid.clone());
        self.names.insert(uid, user.to_owned());
        let label = format!("{user}/{}", creds.device_id);
        self.devices.insert(
            label,
            Device {
                account: Account::new(self.api.clone(), creds),
                chat: None,
                stored: HashMap::new(),
                receipts: HashSet::new(),
                connects: 0,
                live: false,
            },
        );
    }

    fn chat_of(&mut self, device: &str) -> anyhow::Result<Chat> {
        self.device(device)?
            .chat
            .clone()
            .with_context(|| format!("{device} is not connected"))
    }

    fn user(&self, name: &str) -> anyhow::Result<UserId> {
        self.users
            .get(name)
            .cloned()
            .with_context(|| format!("no user {name}"))
    }

    fn target(&self, to: &str) -> anyhow::Result<Target> {
        match to.strip_prefix("group:") {
            Some(g) => Ok(Target::Group(
                self.groups
                    .get(g)
                    .cloned()
                    .with_context(|| format!("no group {g}"))?,
            )),
            None => Ok(Target::User(self.user(to)?)),
        }
    }

    /// Collects events until `expect` is met (and the optional connection
    /// condition), then until the step's barrier; appends them to the
    /// transcript.
    async fn wait_for(
        &mut self,
        expect: &Expect,
        waiting: Option<(String, Waiting)>,
    ) -> anyhow::Result<()> {
        let mut got: Vec<(String, String)> = Vec::new();
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        let mut condition = waiting;
        let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
        let expect: BTreeMap<String, usize> =
            expect.iter().map(|(k, v)| (canonical(k), *v)).collect();
        loop {
            let met = condition.is_none()
                && expect
                    .iter()
                    .all(|(d, n)| counts.get(d).copied().unwrap_or(0) >= *n);
            if met {
                break;
            }
            let Ok(ev) = tokio::time::timeout_at(deadline, self.events.recv()).await else {
                self.flush(got);
                bail!(
                    "timed out waiting for {expect:?} (got {counts:?}, waiting for {condition:?})"
                );
            };
            let Some((label, ev)) = ev else {
                bail!("event channel closed")
            };
            if let Some((l, w)) = &condition
                && *l == label
                && ((*w == Waiting::Synced && ev == Event::Synced)
                    || (*w == Waiting::Closed && matches!(ev, Event::Closed { .. })))
            {
                condition = None;
            }
            let before = got.len();
            self.record(&label, ev, &mut got);
            if got.len() > before {
                *counts.entry(label).or_default() += got.len() - before;
            }
        }
        let barrier = self.barrier(&mut got).await;
        self.flush(got);
        barrier
    }

    /// Ends a step: proves that nothing more is on its way to any connected
    /// device, where a window of silence would not (a late duplicate after it
    /// goes unseen).
    ///
    /// The runner's own account sends a marker message to every user with a
    /// live device, and waits until each of those devices received its
    /// marker, recording whatever came before. Messages and receipts reach a
    /// device in commit order, and frames the server sends straight to a
    /// socket (call signaling) share that socket's queue, so everything
    /// committed or queued for a device before its marker arrives before it.
    /// What arrives in a round can cause more (a message is acknowledged, a
    /// receipt follows): rounds repeat until one brings nothing new.
    async fn barrier(&mut self, got: &mut Vec<(String, String)>) -> anyhow::Result<()> {
        for _ in 0..MAX_BARRIER_ROUNDS {
            let live: Vec<String> = self
                .devices
                .iter()
                .filter(|(_, d)| d.live)
                .map(|(l, _)| l.clone())
                .collect();
            if live.is_empty() {
                return Ok(());
            }
            let chat = self.barrier_chat().await?;
            // One marker per user reaches every device of that user.
            let mut markers: BTreeMap<String, String> = BTreeMap::new();
            let mut waiting: HashSet<(String, String)> = HashSet::new();
            for label in live {
                let user = label.split('/').next().unwrap_or_default().to_owned();
                let id = match markers.get(&user) {
                    Some(id) => id.clone(),
                    None => {
                        self.markers_sent += 1;
                        let id = format!("barrier-{}", self.markers_sent);
                        markers.insert(user, id.clone());
                        id
                    }
                };
                waiting.insert((label, id));
            }
            for (user, id) in &markers {
                chat.send_with_id(
                    ClientMsgId::new(id.as_str()),
                    Target::User(self.user(user)?),
                    Kind::text(),
                    b"barrier".to_vec(),
                );
            }
            let before = got.len();
            let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
            loop {
                // A device closed for good meanwhile gets nothing more.
                waiting.retain(|w| {
                    !self.markers_seen.contains(w) && self.devices.get(&w.0).is_some_and(|d| d.live)
                });
                if waiting.is_empty() {
                    break;
                }
                let Ok(ev) = tokio::time::timeout_at(deadline, self.events.recv()).await else {
                    let mut missing: Vec<_> = waiting.into_iter().collect();
                    missing.sort();
                    bail!("barrier: markers did not arrive (device, marker): {missing:?}");
                };
                let Some((label, ev)) = ev else {
                    bail!("event channel closed")
                };
                self.record(&label, ev, got);
            }
            if got.len() == before {
                return Ok(());
            }
        }
        bail!("events kept arriving through {MAX_BARRIER_ROUNDS} barrier rounds")
    }

    /// The barrier account's connection (registered and connected the first
    /// time; on the first node of a cluster, without moving the scenario's
    /// own devices to other nodes).
    async fn barrier_chat(&mut self) -> anyhow::Result<Chat> {
        if let Some(b) = &self.barrier {
            return Ok(b.chat.clone());
        }
        let number = random_number();
        let outbox = self.server.sms_outbox();
        let creds =
            natter_client::register(&self.api, &number, "scenario-barrier", |s| async move {
                natter_client::code_from_outbox(&outbox, &s.session_id).await
            })
            .await
            .context("register the barrier account")?;
        let user = creds.user();
        let opts = ConnectOptions {
            ws_url: self.server.ws_url_for(0),
            ..ConnectOptions::default()
        };
        let (chat, mut events) = Chat::connect(Account::new(self.api.clone(), creds), opts);
        // Its own events (sent, receipts for the markers) are not the scenario's.
        tokio::spawn(async move { while events.recv().await.is_some() {} });
        self.barrier = Some(Barrier {
            user,
            chat: chat.clone(),
        });
        Ok(chat)
    }

    /// Appends a step's lines: device by device; per device, messages in
    /// arrival order (conversation order is the property under test), then
    /// everything else sorted (receipts from several recipients race).
    fn flush(&mut self, got: Vec<(String, String)>) {
        let mut by_device: BTreeMap<String, (Vec<String>, Vec<String>)> = BTreeMap::new();
        for (device, line) in got {
            let e = by_device.entry(device.clone()).or_default();
            if line.starts_with(&format!("{device}: msg ")) {
                e.0.push(line);
            } else {
                e.1.push(line);
            }
        }
        for (_, (msgs, mut rest)) in by_device {
            rest.sort();
            self.lines.extend(msgs);
            self.lines.extend(rest);
        }
    }

    /// Turns an event into a transcript line (or nothing).
    fn record(&mut self, label: &str, ev: Event, out: &mut Vec<(String, String)>) {
        let names = self.names.clone();
        let groups = self.group_names.clone();
        let name = |u: &UserId| {
            names
                .get(u)
                .cloned()
                .unwrap_or_else(|| format!("<unknown {u}>"))
        };
        let target = |t: &Target| match t {
            Target::User(u) => name(u),
            Target::Group(g) => format!(
                "group:{}",
                groups.get(g).cloned().unwrap_or_else(|| "<unknown>".into())
            ),
        };
        let barrier = self.barrier.as_ref().map(|b| b.user.clone());
        let Some(d) = self.devices.get_mut(label) else {
            return;
        };
        let line = match ev {
            Event::Connected(_) => {
                d.connects += 1;
                None
            }
            Event::Message(m) if Some(&m.from.user) == barrier.as_ref() => {
                self.markers_seen.insert((label.to_owned(), m.id.0.clone()));
                None
            }
            Event::Message(m) => {
                if let std::collections::hash_map::Entry::Vacant(slot) = d.stored.entry(m.msg_id) {
                    let cid = if m.system.is_some() {
                        "sys".to_owned()
                    } else {
                        m.id.0.clone()
                    };
                    slot.insert(cid.clone());
                    let from = format!("{}/{}", name(&m.from.user), m.from.device);
                    let what = match &m.system {
                        Some(s) => system_text(s, &name),
                        None => format!("\"{}\"", m.body.as_text().unwrap_or("<binary>")),
                    };
                    Some(format!(
                        "{label}: msg {cid} from {from} to {}: {what}",
                        target(&m.to)
                    ))
                } else {
                    None
                }
            }
            Event::Sent(s) => Some(format!(
                "{label}: sent {}{}",
                s.id,
                if s.dup { " (dup)" } else { "" }
            )),
            Event::Receipt(r) => {
                if d.receipts.insert((r.msg_id, r.status, r.by.clone())) {
                    let status = if r.status == ReceiptStatus::Read {
                        "read"
                    } else {
                        "delivered"
                    };
                    Some(format!(
                        "{label}: receipt {status} {} by {}",
                        r.id,
                        name(&r.by)
                    ))
                } else {
                    None
                }
            }
            Event::Error(e) => Some(format!(
                "{label}: error {} ({})",
                e.code,
                e.id.as_deref().or(e.ref_type.as_deref()).unwrap_or("-")
            )),
            Event::Typing(t) => Some(format!("{label}: typing {} {:?}", name(&t.from), t.state)),
            Event::Presence(p) => {
                Some(format!("{label}: presence {} {:?}", name(&p.user), p.state))
            }
            Event::Closed { code, .. } => {
                d.live = false;
                code.filter(|c| *c != 1000)
                    .map(|c| format!("{label}: closed {c}"))
            }
            Event::Call(f) => call_text(&f, &name).map(|t| format!("{label}: {t}")),
            Event::Synced | Event::Disconnected { .. } => None,
        };
        if let Some(l) = line {
            out.push((label.to_owned(), l));
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    Synced,
    Closed,
}

fn system_text(s: &SystemEvent, name: &dyn Fn(&UserId) -> String) -> String {
    // Ids are random per run; names sorted keep the transcript stable.
    let list = |v: &[UserId]| {
        let mut names: Vec<String> = v.iter().map(name).collect();
        names.sort();
        names.join(", ")
    };
    match s {
        SystemEvent::GroupCreated { name: n, members } => {
            format!("[created \"{n}\" with {}]", list(members))
        }
        SystemEvent::GroupRenamed { name: n } => format!("[renamed to \"{n}\"]"),
        SystemEvent::MembersAdded { users } => format!("[added {}]", list(users)),
        SystemEvent::MemberRemoved { user } => format!("[removed {}]", name(user)),
        SystemEvent::MemberLeft { user } => format!("[{} left]", name(user)),
        SystemEvent::AdminAdded { user } => format!("[{} is admin]", name(user)),
        SystemEvent::AdminRemoved { user } => format!("[{} is no longer admin]", name(user)),
    }
}

/// A call frame as a transcript line (SDP, candidates and times left out).
fn call_text(f: &ServerFrame, name: &dyn Fn(&UserId) -> String) -> Option<String> {
    Some(match f {
        ServerFrame::CallIncoming(c) => format!(
            "call.incoming {} from {}/{} {}",
            c.call_id,
            name(&c.from.user),
            c.from.device,
            c.media.as_str()
        ),
        ServerFrame::CallRinging(r) => format!(
            "call.ringing {} (devices {}, pushed {})",
            r.call_id, r.devices, r.pushed
        ),
        ServerFrame::CallAnswered(a) => {
            format!("call.answered {} on device {}", a.call_id, a.device)
        }
        ServerFrame::CallIce(i) => format!("call.ice {}", i.call_id),
        ServerFrame::CallUpdate(u) => format!("call.update {}", u.call_id),
        ServerFrame::CallEnded(e) => format!(
            "call.ended {} {}{}",
            e.call_id,
            e.reason.as_str(),
            if e.duration_ms.is_some() {
                " (with duration)"
            } else {
                ""
            }
        ),
        _ => return None,
    })
}

/// `alice` → `alice/1`.
fn canonical(label: &str) -> String {
    if label.contains('/') {
        label.to_owned()
    } else {
        format!("{label}/1")
    }
}

fn describe_step(s: &Step) -> String {
    let exp = |e: &Expect| {
        if e.is_empty() {
            String::new()
        } else {
            format!(
                " (expect {})",
                e.iter()
                    .map(|(d, n)| format!("{d}:{n}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        }
    };
    match s {
        Step::Register { user } => format!("register {user}"),
        Step::Link { user } => format!("link a device for {user}"),
        Step::Connect { device, expect } => format!("connect {device}{}", exp(expect)),
        Step::Disconnect { device } => format!("disconnect {device}"),
        Step::Send {
            from,
            to,
            id,
            text,
            times,
            expect,
        } => {
            let t = if *times > 1 {
                format!(" x{times}")
            } else {
                String::new()
            };
            format!("{from} sends {id} to {to}: \"{text}\"{t}{}", exp(expect))
        }
        Step::Read {
            device,
            ids,
            expect,
        } => format!("{device} reads {}{}", ids.join(", "), exp(expect)),
        Step::GroupCreate {
            by,
            group,
            members,
            expect,
        } => {
            format!(
                "{by} creates group {group} with {}{}",
                members.join(", "),
                exp(expect)
            )
        }
        Step::GroupAdd {
            by,
            group,
            users,
            expect,
        } => format!("{by} adds {} to {group}{}", users.join(", "), exp(expect)),
        Step::GroupRemove {
            by,
            group,
            user,
            expect,
        } => format!("{by} removes {user} from {group}{}", exp(expect)),
        Step::RestartServer { kill, expect } => {
            format!(
                "restart the server{}{}",
                if *kill { " with SIGKILL" } else { "" },
                exp(expect)
            )
        }
        Step::Pending { device } => format!("pending on the server for {device}"),
        Step::Wait { expect } => format!("wait{}", exp(expect)),
        Step::Call {
            from,
            to,
            call,
            video,
            expect,
        } => format!(
            "{from} calls {to} ({call}, {}){}",
            if *video { "video" } else { "audio" },
            exp(expect)
        ),
        Step::Answer {
            device,
            call,
            expect,
        } => format!("{device} answers {call}{}", exp(expect)),
        Step::Reject {
            device,
            call,
            expect,
        } => format!("{device} rejects {call}{}", exp(expect)),
        Step::Hangup {
            device,
            call,
            expect,
        } => format!("{device} hangs up {call}{}", exp(expect)),
        Step::CallLog { device, .. } => format!("call log of {device}"),
    }
}

/// A fresh, valid North American number (415 area, 2xx–9xx exchange).
fn random_number() -> String {
    let r = uuid::Uuid::new_v4().as_u128();
    let exchange = 200 + (r % 800) as u32;
    let line = ((r >> 16) % 10_000) as u32;
    format!("+1415{exchange:03}{line:04}")
}

/// Compares a transcript with its golden file; returns a diff on mismatch.
/// Only with `NATTER_BLESS` set to exactly `1` (the explicit bless path) it
/// writes the golden file instead; see [`compare_or_bless`].
pub fn check_golden(golden_dir: &std::path::Path, name: &str, actual: &str) -> Result<(), String> {
    compare_or_bless(
        golden_dir,
        name,
        actual,
        std::env::var_os("NATTER_BLESS").as_deref(),
    )
}

/// [`check_golden`] with the value of `NATTER_BLESS` given: `Some("1")`
/// writes the golden file and returns `Ok`; anything else (unset, `0`, empty,
/// `true`, …) compares, and fails with a diff on a mismatch.
pub fn compare_or_bless(
    golden_dir: &std::path::Path,
    name: &str,
    actual: &str,
    bless: Option<&std::ffi::OsStr>,
) -> Result<(), String> {
    let path = golden_dir.join(format!("{name}.txt"));
    if bless.is_some_and(|v| v == "1") {
        std::fs::write(&path, actual).map_err(|e| format!("write {}: {e}", path.display()))?;
        return Ok(());
    }
    // A value other than `1` is not a bless: say so, in case one was meant.
    let ignored = bless.map(|v| {
        format!(
            "NATTER_BLESS={v:?} is set but only NATTER_BLESS=1 blesses; the transcript was compared\n"
        )
    });
    let expected = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "no golden transcript {} ({e}); bless it explicitly with NATTER_BLESS=1\n{}",
            path.display(),
            ignored.clone().unwrap_or_default()
        )
    })?;
    if expected == actual {
        return Ok(());
    }
    let mut diff = format!("transcript of {name} differs from {}:\n", path.display());
    let (e, a): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    for i in 0..e.len().max(a.len()) {
        match (e.get(i), a.get(i)) {
            (Some(x), Some(y)) if x == y => diff.push_str(&format!("  {x}\n")),
            (x, y) => {
                if let Some(x) = x {
                    diff.push_str(&format!("- {x}\n"));
                }
                if let Some(y) = y {
                    diff.push_str(&format!("+ {y}\n"));
                }
            }
        }
    }
    diff.push_str(&ignored.unwrap_or_default());
    diff.push_str(
        "if the new transcript is the right one, bless it explicitly with NATTER_BLESS=1\n",
    );
    Err(diff)
}
