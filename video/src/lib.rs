//! Video for Natter calls: I420 pictures ([`I420Frame`]), Y4M files as camera
//! and recording ([`y4m`]), VP8 through the system's libvpx ([`vpx`]), and a
//! test card that carries its own frame number ([`card`]) so tests can tell
//! which picture arrived, which were skipped and how long one stayed, and the
//! reassembly of received VP8 RTP packets into frames ([`rtp`]).

pub mod card;
pub mod frame;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod rtp;
pub mod vpx;
pub mod y4m;

pub use frame::{I420Frame, MAX_DIMENSION, psnr, psnr_y};
pub use vpx::{Decoded, EncodedFrame, EncoderSettings, Vp8Decoder, Vp8Encoder, VpxError};
pub use y4m::{Y4mError, Y4mHeader, Y4mReader, Y4mWriter};
