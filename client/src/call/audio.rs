//! The call's audio format and the media error type, shared by the peer
//! connection (`media`) and the receiving side (`playout`).

/// The call's audio rate: Opus wideband.
pub const RATE: u32 = 16_000;
/// Samples in one 20 ms frame at [`RATE`].
pub const FRAME: usize = (RATE / 50) as usize;

/// Why media failed.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// webrtc-rs refused.
    #[error("webrtc: {0}")]
    Webrtc(String),
    /// Opus refused.
    #[error("opus: {0}")]
    Opus(#[from] opus::Error),
}
