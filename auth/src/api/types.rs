//! Request and response bodies of the auth API (JSON). Field names are public API.

use crate::sms::Transport;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Start registering a phone number.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSessionRequest {
    /// The number in international form, e.g. `+1 415 555 2671`.
    pub number: String,
    /// `sms` (default) or `voice`.
    #[serde(default)]
    pub transport: Option<Transport>,
}

/// A registration session.
#[derive(Debug, Serialize, ToSchema)]
pub struct SessionResponse {
    /// Use in the following calls.
    pub session_id: String,
    /// The number, normalised to E.164.
    pub number: String,
    /// True once a right code was given.
    pub verified: bool,
    /// When the current code stops working (Unix seconds).
    pub code_expires_at: i64,
    /// When another code may be requested (Unix seconds).
    pub next_code_at: i64,
    /// Code checks left in this session.
    pub attempts_left: i64,
    /// When the session ends (Unix seconds).
    pub expires_at: i64,
}

/// Ask for another code.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResendRequest {
    /// `sms` (default) or `voice`.
    #[serde(default)]
    pub transport: Option<Transport>,
}

/// Check a code.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The 6 digits received.
    pub code: String,
}

/// Create the account (or move it to this device) from a verified session.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// A verified registration session.
    pub session_id: String,
    /// A name for this device, e.g. "Pixel 9".
    pub device_name: String,
    /// Required when the account has a registration lock.
    #[serde(default)]
    pub registration_lock_pin: Option<String>,
    /// Required (or `recovery_code`) when the account has TOTP enabled.
    #[serde(default)]
    pub totp_code: Option<String>,
    /// A one-time recovery code instead of `totp_code`.
    #[serde(default)]
    pub recovery_code: Option<String>,
}

/// Credentials for a device.
#[derive(Debug, Serialize, ToSchema)]
pub struct Credentials {
    /// The account.
    pub user_id: String,
    /// This device (1 = primary).
    pub device_id: u32,
    /// `Authorization: Bearer` token for every service.
    pub access_token: String,
    /// When it expires (Unix seconds).
    pub access_expires_at: i64,
    /// Exchange at `/v1/tokens/refresh` for new credentials; single use.
    pub refresh_token: String,
    /// When the refresh token expires (Unix seconds).
    pub refresh_expires_at: i64,
}

/// Result of registration.
#[derive(Debug, Serialize, ToSchema)]
pub struct RegisterResponse {
    /// The new device's credentials.
    #[serde(flatten)]
    pub credentials: Credentials,
    /// The number, E.164.
    pub number: String,
    /// True when an existing account moved to this device (its old devices were removed).
    pub reregistered: bool,
}

/// Exchange a refresh token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The refresh token from the last issue.
    pub refresh_token: String,
}

/// A device of the account.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceInfo {
    /// Id (1 = primary).
    pub device_id: u32,
    /// Name.
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Last token refresh, Unix seconds.
    pub last_seen_at: i64,
    /// True for device 1.
    pub primary: bool,
}

/// The account's devices.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeviceList {
    /// Ordered by id.
    pub devices: Vec<DeviceInfo>,
}

/// A one-time code for linking a new device, shown by the primary (as text or QR).
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkCodeResponse {
    /// Give to the new device.
    pub link_code: String,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Link a new device with a code from the primary.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// From `POST /v1/devices/link-codes`.
    pub link_code: String,
    /// A name for the new device.
    pub device_name: String,
}

/// The account, as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AccountInfo {
    /// Id.
    pub user_id: String,
    /// E.164.
    pub number: String,
    /// Unix seconds.
    pub created_at: i64,
    /// A registration-lock PIN is set.
    pub registration_lock: bool,
    /// TOTP is required at registration.
    pub totp_enabled: bool,
}

/// Set the registration-lock PIN.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PinRequest {
    /// 4 to 64 characters.
    pub pin: String,
}

/// TOTP enrolment: add to an authenticator app, then confirm with a code.
#[derive(Debug, Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// Base32 secret, for manual entry.
    pub secret: String,
    /// `otpauth://totp/…` URI.
    pub otpauth_uri: String,
    /// The URI as a QR code, PNG, base64.
    pub qr_png_base64: String,
}

/// A TOTP code (or a recovery code where accepted).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCodeRequest {
    /// 6 digits from the authenticator.
    #[serde(default)]
    pub code: Option<String>,
    /// Instead of `code`, when disabling.
    #[serde(default)]
    pub recovery_code: Option<String>,
}

/// Recovery codes, shown once.
#[derive(Debug, Serialize, ToSchema)]
pub struct RecoveryCodes {
    /// Each usable once instead of a TOTP code.
    pub recovery_codes: Vec<String>,
}

/// A profile.
#[derive(Debug, Serialize, ToSchema)]
pub struct Profile {
    /// Whose.
    pub user_id: String,
    /// Up to 64 characters.
    pub display_name: String,
    /// Up to 140 characters.
    pub about: String,
    /// Media hash of the avatar.
    pub avatar: Option<String>,
}

/// Profile changes; absent fields stay as they are, `"avatar": null` removes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileUpdateRequest {
    /// Up to 64 characters.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Up to 140 characters.
    #[serde(default)]
    pub about: Option<String>,
    /// A media hash, or null to remove.
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub avatar: Option<Option<String>>,
}

fn double_option<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

/// Who has a phone number.
#[derive(Debug, Serialize, ToSchema)]
pub struct LookupResponse {
    /// The account id.
    pub user_id: String,
}

/// A signed prekey.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignedPrekey {
    /// Chosen by the device.
    pub key_id: u32,
    /// Curve25519 public key, base64 (32 bytes).
    pub public_key: String,
    /// Ed25519 signature of the 32 key bytes by `signing_key`, base64 (64 bytes).
    pub signature: String,
}

/// A one-time prekey.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PrekeyDto {
    /// Chosen by the device; unique per device.
    pub key_id: u32,
    /// Curve25519 public key, base64 (32 bytes).
    pub public_key: String,
}

/// Upload this device's keys.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PutKeysRequest {
    /// Curve25519 identity key, base64 (32 bytes).
    pub identity_key: String,
    /// Ed25519 public key that signs prekeys, base64 (32 bytes).
    pub signing_key: String,
    /// The current signed prekey.
    pub signed_prekey: SignedPrekey,
    /// Up to 100 one-time prekeys.
    #[serde(default)]
    pub one_time_prekeys: Vec<PrekeyDto>,
}

/// Add one-time prekeys.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddPrekeysRequest {
    /// Up to 100 in all per device.
    pub one_time_prekeys: Vec<PrekeyDto>,
}

/// How many one-time prekeys this device has left.
#[derive(Debug, Serialize, ToSchema)]
pub struct PrekeyCount {
    /// Refill when low.
    pub one_time_prekeys: u32,
}

/// Everything needed to start an encrypted session with one device.
#[derive(Debug, Serialize, ToSchema)]
pub struct PrekeyBundle {
    /// Account.
    pub user_id: String,
    /// Device.
    pub device_id: u32,
    /// Curve25519 identity key, base64.
    pub identity_key: String,
    /// Ed25519 signing key, base64.
    pub signing_key: String,
    /// Signed prekey.
    pub signed_prekey: SignedPrekey,
    /// A one-time prekey, removed from the directory; absent when none is left.
    pub one_time_prekey: Option<PrekeyDto>,
}

/// Bundles for every device of an account that has keys.
#[derive(Debug, Serialize, ToSchema)]
pub struct BundleList {
    /// One per device.
    pub bundles: Vec<PrekeyBundle>,
}

/// The error body every endpoint uses.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorResponse {
    /// `{"code": "...", "message": "..."}` plus endpoint-specific fields.
    #[schema(value_type = Object)]
    pub error: serde_json::Value,
}
