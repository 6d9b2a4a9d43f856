//! The HTTP side: registration and tokens (auth's API), and chat's REST API
//! (groups, message status, pending messages, presence, push tokens).

use crate::Error;
use natter_proto::{GroupId, Message, MsgId, PresencePrivacy, Target, UserId};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A device's credentials, as auth issues them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The account.
    pub user_id: String,
    /// This device.
    pub device_id: u32,
    /// Bearer token for every service.
    pub access_token: String,
    /// Unix seconds.
    pub access_expires_at: i64,
    /// Single-use refresh token.
    pub refresh_token: String,
    /// Unix seconds.
    pub refresh_expires_at: i64,
}

impl Credentials {
    /// The account as a protocol id.
    pub fn user(&self) -> UserId {
        UserId::new(self.user_id.clone())
    }
}

/// One `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:`, `turn:` or `turns:` URLs.
    pub urls: Vec<String>,
    /// TURN username.
    #[serde(default)]
    pub username: Option<String>,
    /// TURN password.
    #[serde(default)]
    pub credential: Option<String>,
}

/// `GET /v1/calls/ice-servers`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServers {
    /// STUN, then TURN with credentials.
    pub ice_servers: Vec<IceServer>,
    /// Credential lifetime.
    pub ttl_secs: u32,
    /// Unix seconds.
    pub expires_at: i64,
}

/// One call of the call log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLogEntry {
    /// The call.
    pub call_id: natter_proto::CallId,
    /// `outgoing` or `incoming`.
    pub direction: String,
    /// The other party.
    pub peer: UserId,
    /// Audio or video.
    pub media: natter_proto::CallMedia,
    /// Unix ms.
    pub started_at: i64,
    /// Unix ms.
    #[serde(default)]
    pub answered_at: Option<i64>,
    /// Unix ms.
    pub ended_at: i64,
    /// Answer to end.
    pub duration_ms: u64,
    /// `answered`, `rejected`, `busy`, `missed`, `cancelled`, `unavailable`, `failed`.
    pub outcome: String,
    /// What ended it.
    pub reason: natter_proto::EndReason,
    /// The device that answered (incoming calls).
    #[serde(default)]
    pub answered_device: Option<u32>,
}

/// `GET /v1/calls`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallLog {
    /// Newest first.
    pub calls: Vec<CallLogEntry>,
    /// For the next page.
    #[serde(default)]
    pub next_before: Option<i64>,
}

/// A registration session (a phone number waiting for its code).
#[derive(Debug, Clone, Deserialize)]
pub struct RegSession {
    /// Id to verify with.
    pub session_id: String,
    /// The number, E.164.
    pub number: String,
}

/// A group as the server reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    /// Id.
    pub group_id: GroupId,
    /// Name.
    pub name: String,
    /// Creator.
    pub created_by: UserId,
    /// Unix ms.
    pub created_at: i64,
    /// Members.
    pub members: Vec<GroupMember>,
}

/// A group member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    /// Account.
    pub user_id: UserId,
    /// Admin.
    pub admin: bool,
    /// Unix ms.
    pub added_at: i64,
}

/// A sent message's state.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct MessageStatus {
    /// Server id.
    pub msg_id: MsgId,
    /// Client id.
    pub id: String,
    /// Conversation.
    pub to: Target,
    /// Unix ms.
    pub created_at: i64,
    /// Devices still waiting.
    pub pending_devices: i64,
    /// Per recipient.
    pub recipients: Vec<RecipientStatus>,
}

/// Delivery state for one recipient.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct RecipientStatus {
    /// Recipient.
    pub user_id: UserId,
    /// Unix ms.
    pub delivered_at: Option<i64>,
    /// Unix ms.
    pub read_at: Option<i64>,
}

/// A user's presence.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct PresenceInfo {
    /// Whose.
    pub user_id: UserId,
    /// `online`, `offline` or `hidden`.
    pub state: natter_proto::PresenceState,
    /// Unix ms.
    pub last_seen: Option<i64>,
}

/// Filter for pending messages.
#[derive(Debug, Clone, Default)]
pub struct PendingQuery {
    /// Conversation.
    pub conversation: Option<Target>,
    /// Unix ms, inclusive.
    pub since: Option<i64>,
    /// Unix ms, exclusive.
    pub until: Option<i64>,
    /// 1..=500.
    pub limit: Option<u32>,
}

/// HTTP client for one server.
#[derive(Debug, Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    code: String,
    message: String,
}

impl Api {
    /// A client for `base` (`http://host:port` or `https://…`).
    pub fn new(base: &str) -> Result<Self, Error> {
        let base = base.trim_end_matches('/').to_owned();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Config(format!(
                "server URL must start with http:// or https://, got {base:?}"
            )));
        }
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        Ok(Self { base, http })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The WebSocket URL of this server.
    pub fn ws_url(&self) -> String {
        let rest = self.base.strip_prefix("http").unwrap_or(&self.base);
        format!("ws{rest}{}", natter_proto::WS_PATH)
    }

    pub(crate) async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Result<T, Error> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.map_err(|e| Error::Http(e.to_string()))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| Error::Http(e.to_string()))?;
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(b) => Error::Api {
                    status: status.as_u16(),
                    code: b.error.code,
                    message: b.error.message,
                },
                Err(_) => Error::Api {
                    status: status.as_u16(),
                    code: "http_error".into(),
                    message: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
                },
            });
        }
        let bytes = if bytes.is_empty() {
            &b"null"[..]
        } else {
            &bytes[..]
        };
        serde_json::from_slice(bytes)
            .map_err(|e| Error::Http(format!("unexpected response to {path}: {e}")))
    }

    // --- auth ---

    /// Starts registering a phone number; a code is sent to it.
    pub async fn start_registration(&self, number: &str) -> Result<RegSession, Error> {
        self.call(
            reqwest::Method::POST,
            "/v1/registration/sessions",
            None,
            Some(json!({ "number": number })),
        )
        .await
    }

    /// Checks the code.
    pub async fn verify_code(&self, session_id: &str, code: &str) -> Result<(), Error> {
        let _: serde_json::Value = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/registration/sessions/{session_id}/verify"),
                None,
                Some(json!({ "code": code })),
            )
            .await?;
        Ok(())
    }

    /// Creates the account (or moves it to this device) from a verified session.
    pub async fn create_account(
        &self,
        session_id: &str,
        device_name: &str,
    ) -> Result<Credentials, Error> {
        self.call(
            reqwest::Method::POST,
            "/v1/accounts",
            None,
            Some(json!({ "session_id": session_id, "device_name": device_name })),
        )
        .await
    }

    /// Exchanges the refresh token for new credentials.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Credentials, Error> {
        self.call(
            reqwest::Method::POST,
            "/v1/tokens/refresh",
            None,
            Some(json!({ "refresh_token": refresh_token })),
        )
        .await
    }

    /// Who has this phone number.
    pub async fn lookup(&self, token: &str, number: &str) -> Result<UserId, Error> {
        #[derive(Deserialize)]
        struct R {
            user_id: UserId,
        }
        let r: R = self
            .call(
                reqwest::Method::POST,
                "/v1/accounts/lookup",
                Some(token),
                Some(json!({ "number": number })),
            )
            .await?;
        Ok(r.user_id)
    }

    /// Makes a one-time code for linking another device (primary's token).
    pub async fn create_link_code(&self, token: &str) -> Result<String, Error> {
        #[derive(Deserialize)]
        struct R {
            link_code: String,
        }
        let r: R = self
            .call(
                reqwest::Method::POST,
                "/v1/devices/link-codes",
                Some(token),
                None,
            )
            .await?;
        Ok(r.link_code)
    }

    /// Links this new device with a code from the primary.
    pub async fn link_device(
        &self,
        link_code: &str,
        device_name: &str,
    ) -> Result<Credentials, Error> {
        self.call(
            reqwest::Method::POST,
            "/v1/devices/link",
            None,
            Some(json!({ "link_code": link_code, "device_name": device_name })),
        )
        .await
    }

    // --- chat: groups ---

    /// Creates a group with the caller as admin.
    pub async fn create_group(
        &self,
        token: &str,
        name: &str,
        members: &[UserId],
    ) -> Result<Group, Error> {
        self.call(
            reqwest::Method::POST,
            "/v1/groups",
            Some(token),
            Some(json!({ "name": name, "members": members })),
        )
        .await
    }

    /// The caller's groups.
    pub async fn groups(&self, token: &str) -> Result<Vec<Group>, Error> {
        #[derive(Deserialize)]
        struct R {
            groups: Vec<Group>,
        }
        let r: R = self
            .call(reqwest::Method::GET, "/v1/groups", Some(token), None)
            .await?;
        Ok(r.groups)
    }

    /// One group.
    pub async fn group(&self, token: &str, id: &GroupId) -> Result<Group, Error> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/groups/{id}"),
            Some(token),
            None,
        )
        .await
    }

    /// Renames a group (admins).
    pub async fn rename_group(
        &self,
        token: &str,
        id: &GroupId,
        name: &str,
    ) -> Result<Group, Error> {
        self.call(
            reqwest::Method::PATCH,
            &format!("/v1/groups/{id}"),
            Some(token),
            Some(json!({ "name": name })),
        )
        .await
    }

    /// Adds members (admins).
    pub async fn add_members(
        &self,
        token: &str,
        id: &GroupId,
        users: &[UserId],
    ) -> Result<Group, Error> {
        self.call(
            reqwest::Method::POST,
            &format!("/v1/groups/{id}/members"),
            Some(token),
            Some(json!({ "users": users })),
        )
        .await
    }

    /// Removes a member (admins), or leaves when `user` is the caller.
    pub async fn remove_member(
        &self,
        token: &str,
        id: &GroupId,
        user: &UserId,
    ) -> Result<(), Error> {
        let _: serde_json::Value = self
            .call(
                reqwest::Method::DELETE,
                &format!("/v1/groups/{id}/members/{user}"),
                Some(token),
                None,
            )
            .await?;
        Ok(())
    }

    /// Grants or revokes admin.
    pub async fn set_admin(
        &self,
        token: &str,
        id: &GroupId,
        user: &UserId,
        admin: bool,
    ) -> Result<Group, Error> {
        let method = if admin {
            reqwest::Method::PUT
        } else {
            reqwest::Method::DELETE
        };
        self.call(
            method,
            &format!("/v1/groups/{id}/admins/{user}"),
            Some(token),
            None,
        )
        .await
    }

    // --- chat: messages ---

    /// A sent message's delivery state (sender only).
    pub async fn message_status(&self, token: &str, msg_id: MsgId) -> Result<MessageStatus, Error> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/messages/{msg_id}"),
            Some(token),
            None,
        )
        .await
    }

    /// This device's pending messages.
    pub async fn pending(&self, token: &str, q: &PendingQuery) -> Result<Vec<Message>, Error> {
        #[derive(Deserialize)]
        struct R {
            messages: Vec<Message>,
        }
        let mut params = Vec::new();
        if let Some(c) = &q.conversation {
            params.push(format!("conversation={}", c.key()));
        }
        if let Some(s) = q.since {
            params.push(format!("since={s}"));
        }
        if let Some(u) = q.until {
            params.push(format!("until={u}"));
        }
        if let Some(l) = q.limit {
            params.push(format!("limit={l}"));
        }
        let path = if params.is_empty() {
            "/v1/messages/pending".to_owned()
        } else {
            format!("/v1/messages/pending?{}", params.join("&"))
        };
        let r: R = self
            .call(reqwest::Method::GET, &path, Some(token), None)
            .await?;
        Ok(r.messages)
    }

    // --- calls ---

    /// STUN/TURN servers with fresh TURN credentials.
    pub async fn ice_servers(&self, token: &str) -> Result<IceServers, Error> {
        self.call(
            reqwest::Method::GET,
            "/v1/calls/ice-servers",
            Some(token),
            None,
        )
        .await
    }

    /// The call log, newest first (`before`: Unix ms, for paging).
    pub async fn call_log(
        &self,
        token: &str,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<CallLog, Error> {
        let mut params = Vec::new();
        if let Some(b) = before {
            params.push(format!("before={b}"));
        }
        if let Some(l) = limit {
            params.push(format!("limit={l}"));
        }
        let path = format!("/v1/calls?{}", params.join("&"));
        self.call(reqwest::Method::GET, &path, Some(token), None)
            .await
    }

    // --- chat: presence ---

    /// A user's presence.
    pub async fn presence(&self, token: &str, user: &UserId) -> Result<PresenceInfo, Error> {
        self.call(
            reqwest::Method::GET,
            &format!("/v1/presence/{user}"),
            Some(token),
            None,
        )
        .await
    }

    /// Sets who may see the caller's presence.
    pub async fn set_privacy(&self, token: &str, privacy: PresencePrivacy) -> Result<(), Error> {
        let _: serde_json::Value = self
            .call(
                reqwest::Method::PUT,
                "/v1/presence/privacy",
                Some(token),
                Some(json!({ "privacy": privacy })),
            )
            .await?;
        Ok(())
    }

    /// Replaces the caller's contact list.
    pub async fn set_contacts(&self, token: &str, users: &[UserId]) -> Result<(), Error> {
        let _: serde_json::Value = self
            .call(
                reqwest::Method::PUT,
                "/v1/presence/contacts",
                Some(token),
                Some(json!({ "users": users })),
            )
            .await?;
        Ok(())
    }

    /// Registers this device's push token (`fcm` or `apns`, or a name the
    /// server's webhook gateway knows).
    pub async fn set_push_token(
        &self,
        token: &str,
        platform: &str,
        push_token: &str,
    ) -> Result<(), Error> {
        self.set_push_tokens(token, platform, push_token, None)
            .await
    }

    /// Registers this device's push token and, on iOS, its PushKit token
    /// (`voip_token`, for calls).
    pub async fn set_push_tokens(
        &self,
        token: &str,
        platform: &str,
        push_token: &str,
        voip_token: Option<&str>,
    ) -> Result<(), Error> {
        let mut body = json!({ "platform": platform, "token": push_token });
        if let Some(v) = voip_token {
            body["voip_token"] = json!(v);
        }
        let _: serde_json::Value = self
            .call(
                reqwest::Method::PUT,
                "/v1/push/token",
                Some(token),
                Some(body),
            )
            .await?;
        Ok(())
    }
}
