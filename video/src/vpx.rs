//! VP8 through the system's libvpx (the codec library browsers use), behind a
//! safe API: [`Vp8Encoder`] tuned for real-time calls (one pass, CBR, no
//! look-ahead, error resilient, keyframes only on request) whose bitrate can
//! follow a bandwidth estimate, and [`Vp8Decoder`], which says when a picture
//! is corrupt (a reference was lost) so the caller can ask for a keyframe.
//!
//! Every `unsafe` block of the crate is here; each says why it is sound.
#![allow(unsafe_code)]

use crate::frame::{I420Frame, MAX_DIMENSION};
use std::ffi::CStr;
use std::os::raw::{c_int, c_uint};
use vpx_sys as ffi;

/// Why libvpx refused.
#[derive(Debug, thiserror::Error)]
pub enum VpxError {
    /// A call into libvpx failed.
    #[error("libvpx {call}: {message}")]
    Codec {
        /// The function that failed.
        call: &'static str,
        /// libvpx's own explanation.
        message: String,
    },
    /// Settings outside what this wrapper accepts.
    #[error("bad encoder settings: {0}")]
    Settings(String),
    /// A picture of another size than the encoder was made for.
    #[error("picture is {got_w}x{got_h}, encoder expects {want_w}x{want_h}")]
    WrongSize {
        /// Picture width.
        got_w: u32,
        /// Picture height.
        got_h: u32,
        /// Encoder width.
        want_w: u32,
        /// Encoder height.
        want_h: u32,
    },
}

fn check(
    ctx: *mut ffi::vpx_codec_ctx_t,
    call: &'static str,
    err: ffi::vpx_codec_err_t,
) -> Result<(), VpxError> {
    if err == ffi::vpx_codec_err_t::VPX_CODEC_OK {
        return Ok(());
    }
    // SAFETY: vpx_codec_err_to_string returns a static NUL-terminated string
    // for any error value; vpx_codec_error_detail reads the context (valid or
    // zeroed, as every context here is) and returns NULL or a C string it owns.
    let message = unsafe {
        let base = CStr::from_ptr(ffi::vpx_codec_err_to_string(err))
            .to_string_lossy()
            .into_owned();
        let detail = if ctx.is_null() {
            std::ptr::null()
        } else {
            ffi::vpx_codec_error_detail(ctx)
        };
        if detail.is_null() {
            base
        } else {
            format!("{base}: {}", CStr::from_ptr(detail).to_string_lossy())
        }
    };
    Err(VpxError::Codec { call, message })
}

/// Real-time encoder settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncoderSettings {
    /// Picture width.
    pub width: u32,
    /// Picture height.
    pub height: u32,
    /// Frames per second the camera delivers.
    pub fps: u32,
    /// Starting target bitrate, bits per second.
    pub bitrate_bps: u32,
    /// Encoder threads (1 for calls on phones; 2 on a laptop at 720p).
    pub threads: u32,
    /// libvpx speed, 4–16 for real time: higher is faster and blurrier.
    /// WebRTC uses about 6 on desktops and 12 on phones.
    pub speed: i32,
}

impl EncoderSettings {
    /// What a call uses at `width`x`height`@`fps`, at a bitrate that suits the size.
    pub fn for_call(width: u32, height: u32, fps: u32) -> Self {
        let pixels = u64::from(width) * u64::from(height) * u64::from(fps);
        // About 0.1 bit per pixel per second at 30 fps: 920 kbit/s at 640x480.
        let bitrate_bps = (pixels / 10).clamp(100_000, 2_500_000) as u32;
        Self {
            width,
            height,
            fps,
            bitrate_bps,
            threads: if width * height >= 1280 * 720 { 2 } else { 1 },
            speed: 8,
        }
    }
}

/// One compressed picture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedFrame {
    /// The VP8 frame (what goes into RTP after the payload descriptor).
    pub data: Vec<u8>,
    /// An intra frame that needs no earlier picture.
    pub keyframe: bool,
}

/// A VP8 encoder for calls.
pub struct Vp8Encoder {
    // Boxed: libvpx keeps pointers to both for the context's life.
    ctx: Box<ffi::vpx_codec_ctx_t>,
    cfg: Box<ffi::vpx_codec_enc_cfg_t>,
    settings: EncoderSettings,
    pts: i64,
}

// SAFETY: the context is only reached through &mut self, so from one thread
// at a time; libvpx contexts have no thread affinity.
unsafe impl Send for Vp8Encoder {}

impl Vp8Encoder {
    /// An encoder for pictures of `settings.width`x`settings.height`.
    pub fn new(settings: EncoderSettings) -> Result<Self, VpxError> {
        let EncoderSettings {
            width,
            height,
            fps,
            bitrate_bps,
            threads,
            speed,
        } = settings;
        if width == 0 || height == 0 || width > MAX_DIMENSION || height > MAX_DIMENSION {
            return Err(VpxError::Settings(format!("size {width}x{height}")));
        }
        if !(1..=120).contains(&fps) || !(10_000..=50_000_000).contains(&bitrate_bps) {
            return Err(VpxError::Settings(format!(
                "{fps} fps at {bitrate_bps} bit/s"
            )));
        }
        if !(1..=8).contains(&threads) || !(-16..=16).contains(&speed) {
            return Err(VpxError::Settings(format!(
                "{threads} threads, speed {speed}"
            )));
        }
        // libvpx fills the config in; zeroed memory is only its starting
        // point (some of its enums have no zero value, so it is never read
        // as a config before vpx_codec_enc_config_default succeeds).
        let mut cfg = Box::<ffi::vpx_codec_enc_cfg_t>::new_zeroed();
        // SAFETY: vpx_codec_vp8_cx returns libvpx's static interface; cfg
        // points to writable memory of the config struct's size and ABI.
        let err = unsafe {
            ffi::vpx_codec_enc_config_default(ffi::vpx_codec_vp8_cx(), cfg.as_mut_ptr(), 0)
        };
        check(std::ptr::null_mut(), "vpx_codec_enc_config_default", err)?;
        // SAFETY: vpx_codec_enc_config_default succeeded and wrote every field.
        let mut cfg = unsafe { cfg.assume_init() };
        let mut ctx = Box::<ffi::vpx_codec_ctx_t>::new_zeroed();
        cfg.g_w = width;
        cfg.g_h = height;
        cfg.g_threads = threads;
        cfg.g_timebase = ffi::vpx_rational {
            num: 1,
            den: fps as c_int,
        };
        cfg.g_pass = ffi::vpx_enc_pass::VPX_RC_ONE_PASS;
        cfg.g_lag_in_frames = 0;
        // Real time: each picture must decode without the ones lost before
        // the last keyframe's dependants were refreshed.
        cfg.g_error_resilient = ffi::VPX_ERROR_RESILIENT_DEFAULT;
        cfg.rc_end_usage = ffi::vpx_rc_mode::VPX_CBR;
        cfg.rc_target_bitrate = bitrate_bps / 1000;
        cfg.rc_min_quantizer = 2;
        cfg.rc_max_quantizer = 56;
        cfg.rc_undershoot_pct = 100;
        cfg.rc_overshoot_pct = 15;
        cfg.rc_buf_initial_sz = 500;
        cfg.rc_buf_optimal_sz = 600;
        cfg.rc_buf_sz = 1000;
        // Skipped pictures look like freezes; the bandwidth estimate lowers
        // the bitrate instead.
        cfg.rc_dropframe_thresh = 0;
        cfg.rc_resize_allowed = 0;
        // Keyframes when the receiver asks (PLI/FIR), and at most every 100 s.
        cfg.kf_mode = ffi::vpx_kf_mode::VPX_KF_AUTO;
        cfg.kf_min_dist = 0;
        cfg.kf_max_dist = fps * 100;
        // SAFETY: ctx and cfg are valid and boxed (their addresses stay fixed
        // while libvpx holds them); the ABI version is the one the bindings
        // were generated for and pkg-config matched.
        let err = unsafe {
            ffi::vpx_codec_enc_init_ver(
                ctx.as_mut_ptr(),
                ffi::vpx_codec_vp8_cx(),
                &*cfg,
                0,
                ffi::VPX_ENCODER_ABI_VERSION as c_int,
            )
        };
        check(std::ptr::null_mut(), "vpx_codec_enc_init", err)?;
        // SAFETY: vpx_codec_enc_init_ver succeeded and initialised the context.
        let ctx = unsafe { ctx.assume_init() };
        let mut enc = Self {
            ctx,
            cfg,
            settings,
            pts: 0,
        };
        enc.control(ffi::vp8e_enc_control_id::VP8E_SET_CPUUSED as c_int, speed)?;
        enc.control(
            ffi::vp8e_enc_control_id::VP8E_SET_NOISE_SENSITIVITY as c_int,
            0,
        )?;
        enc.control(
            ffi::vp8e_enc_control_id::VP8E_SET_STATIC_THRESHOLD as c_int,
            1,
        )?;
        enc.control(
            ffi::vp8e_enc_control_id::VP8E_SET_TOKEN_PARTITIONS as c_int,
            0,
        )?;
        // A keyframe may take up to three average frames' worth of bits
        // (WebRTC's rule: big enough to look right, small enough not to stall).
        enc.control(
            ffi::vp8e_enc_control_id::VP8E_SET_MAX_INTRA_BITRATE_PCT as c_int,
            300,
        )?;
        Ok(enc)
    }

    fn control(&mut self, id: c_int, value: c_int) -> Result<(), VpxError> {
        // SAFETY: the context was initialised as a VP8 encoder; these control
        // ids all take one int argument, passed through the variadic call.
        let err = unsafe { ffi::vpx_codec_control_(&mut *self.ctx, id, value) };
        check(&mut *self.ctx, "vpx_codec_control", err)
    }

    /// The settings in force (with the current bitrate).
    pub fn settings(&self) -> EncoderSettings {
        self.settings
    }

    /// Changes the target bitrate from the next picture on (as a bandwidth
    /// estimate moves); clamped to 30 kbit/s–50 Mbit/s.
    pub fn set_bitrate(&mut self, bps: u32) -> Result<(), VpxError> {
        let bps = bps.clamp(30_000, 50_000_000);
        if bps / 1000 == self.cfg.rc_target_bitrate {
            return Ok(());
        }
        self.cfg.rc_target_bitrate = bps / 1000;
        self.settings.bitrate_bps = bps;
        // SAFETY: the context is an initialised encoder and cfg the boxed
        // config it was made with; only the bitrate changed.
        let err = unsafe { ffi::vpx_codec_enc_config_set(&mut *self.ctx, &*self.cfg) };
        check(&mut *self.ctx, "vpx_codec_enc_config_set", err)
    }

    /// Compresses one picture (a keyframe when `keyframe` is set).
    pub fn encode(&mut self, frame: &I420Frame, keyframe: bool) -> Result<EncodedFrame, VpxError> {
        if frame.width() != self.cfg.g_w || frame.height() != self.cfg.g_h {
            return Err(VpxError::WrongSize {
                got_w: frame.width(),
                got_h: frame.height(),
                want_w: self.cfg.g_w,
                want_h: self.cfg.g_h,
            });
        }
        // SAFETY: vpx_img_wrap fills `img` in to
        // point into `frame`'s packed I420 buffer (stride = width, which is
        // what align 1 gives), which outlives the encode call. libvpx reads
        // the picture during vpx_codec_encode only (lag_in_frames is 0).
        let mut img = std::mem::MaybeUninit::<ffi::vpx_image_t>::zeroed();
        // SAFETY: see above; the pointer is only read through.
        let wrapped = unsafe {
            ffi::vpx_img_wrap(
                img.as_mut_ptr(),
                ffi::vpx_img_fmt::VPX_IMG_FMT_I420,
                frame.width() as c_uint,
                frame.height() as c_uint,
                1,
                frame.data().as_ptr().cast_mut(),
            )
        };
        if wrapped.is_null() {
            return Err(VpxError::Codec {
                call: "vpx_img_wrap",
                message: "picture could not be wrapped".into(),
            });
        }
        let flags = if keyframe {
            ffi::VPX_EFLAG_FORCE_KF as ffi::vpx_enc_frame_flags_t
        } else {
            0
        };
        // SAFETY: the context is an initialised encoder and `wrapped` (= img,
        // filled in by vpx_img_wrap) a valid picture of its size.
        let err = unsafe {
            ffi::vpx_codec_encode(
                &mut *self.ctx,
                wrapped,
                self.pts,
                1,
                flags,
                ffi::VPX_DL_REALTIME.into(),
            )
        };
        check(&mut *self.ctx, "vpx_codec_encode", err)?;
        self.pts += 1;
        let mut out = EncodedFrame {
            data: Vec::new(),
            keyframe: false,
        };
        let mut iter: ffi::vpx_codec_iter_t = std::ptr::null();
        loop {
            // SAFETY: iterates the packets of the encode call above; each
            // pointer is valid until the next call on this context.
            let pkt = unsafe { ffi::vpx_codec_get_cx_data(&mut *self.ctx, &mut iter) };
            if pkt.is_null() {
                break;
            }
            // SAFETY: pkt is non-null and points to a packet libvpx owns.
            let pkt = unsafe { &*pkt };
            if pkt.kind != ffi::vpx_codec_cx_pkt_kind::VPX_CODEC_CX_FRAME_PKT {
                continue;
            }
            // SAFETY: for a frame packet the `frame` variant is the live one,
            // and buf/sz describe bytes libvpx owns until the next call.
            let (data, flags) = unsafe {
                let f = pkt.data.frame;
                (
                    std::slice::from_raw_parts(f.buf as *const u8, f.sz as usize),
                    f.flags,
                )
            };
            out.data.extend_from_slice(data);
            out.keyframe |= flags & ffi::VPX_FRAME_IS_KEY != 0;
        }
        Ok(out)
    }
}

impl Drop for Vp8Encoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed once.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

/// What one compressed picture decoded to.
#[derive(Debug)]
pub enum Decoded {
    /// A picture, intact.
    Picture(I420Frame),
    /// A picture that refers to one this decoder never had (a lost frame):
    /// do not show it; ask the sender for a keyframe.
    Corrupt,
    /// Nothing to show (the data held no picture).
    Nothing,
}

/// A VP8 decoder.
pub struct Vp8Decoder {
    ctx: Box<ffi::vpx_codec_ctx_t>,
}

// SAFETY: as for the encoder: one thread at a time through &mut self.
unsafe impl Send for Vp8Decoder {}

impl Vp8Decoder {
    /// A decoder (single-threaded: one call's pictures are small).
    pub fn new() -> Result<Self, VpxError> {
        let mut ctx = Box::<ffi::vpx_codec_ctx_t>::new_zeroed();
        let cfg = ffi::vpx_codec_dec_cfg {
            threads: 1,
            w: 0,
            h: 0,
        };
        // SAFETY: ctx is boxed and valid; cfg outlives the call (libvpx copies it).
        let err = unsafe {
            ffi::vpx_codec_dec_init_ver(
                ctx.as_mut_ptr(),
                ffi::vpx_codec_vp8_dx(),
                &cfg,
                0,
                ffi::VPX_DECODER_ABI_VERSION as c_int,
            )
        };
        check(std::ptr::null_mut(), "vpx_codec_dec_init", err)?;
        // SAFETY: vpx_codec_dec_init_ver succeeded and initialised the context.
        let ctx = unsafe { ctx.assume_init() };
        Ok(Self { ctx })
    }

    /// Decodes one compressed picture. Garbage is an error, and the decoder
    /// stays usable: the next keyframe decodes.
    pub fn decode(&mut self, data: &[u8]) -> Result<Decoded, VpxError> {
        if data.is_empty() || data.len() > 16 << 20 {
            return Err(VpxError::Codec {
                call: "vpx_codec_decode",
                message: format!("{} bytes is not a frame", data.len()),
            });
        }
        // SAFETY: the context is an initialised decoder; data is a live slice
        // whose length fits c_uint (checked above); libvpx copies what it keeps.
        let err = unsafe {
            ffi::vpx_codec_decode(
                &mut *self.ctx,
                data.as_ptr(),
                data.len() as c_uint,
                std::ptr::null_mut(),
                0,
            )
        };
        check(&mut *self.ctx, "vpx_codec_decode", err)?;
        let mut corrupt: c_int = 0;
        // SAFETY: VP8D_GET_FRAME_CORRUPTED writes one int through the pointer.
        let err = unsafe {
            ffi::vpx_codec_control_(
                &mut *self.ctx,
                ffi::vp8_dec_control_id::VP8D_GET_FRAME_CORRUPTED as c_int,
                &mut corrupt as *mut c_int,
            )
        };
        check(
            &mut *self.ctx,
            "vpx_codec_control(VP8D_GET_FRAME_CORRUPTED)",
            err,
        )?;
        let mut iter: ffi::vpx_codec_iter_t = std::ptr::null();
        // SAFETY: iterates the pictures of the decode call above.
        let img = unsafe { ffi::vpx_codec_get_frame(&mut *self.ctx, &mut iter) };
        if img.is_null() {
            return Ok(Decoded::Nothing);
        }
        if corrupt != 0 {
            return Ok(Decoded::Corrupt);
        }
        // SAFETY: img is non-null and valid until the next call on this context.
        let img = unsafe { &*img };
        if img.fmt != ffi::vpx_img_fmt::VPX_IMG_FMT_I420 || img.d_w == 0 || img.d_h == 0 {
            return Err(VpxError::Codec {
                call: "vpx_codec_get_frame",
                message: format!("unexpected picture format {:?}", img.fmt),
            });
        }
        let (w, h) = (img.d_w as usize, img.d_h as usize);
        let (cw, ch) = (w.div_ceil(2), h.div_ceil(2));
        let mut data = Vec::with_capacity(crate::frame::i420_len(img.d_w, img.d_h));
        for (plane, (pw, ph)) in [(0, (w, h)), (1, (cw, ch)), (2, (cw, ch))] {
            let stride = img.stride[plane] as usize;
            for row in 0..ph {
                // SAFETY: libvpx's plane `plane` holds `ph` rows of `stride`
                // bytes, of which the first `pw` are the picture.
                let line =
                    unsafe { std::slice::from_raw_parts(img.planes[plane].add(row * stride), pw) };
                data.extend_from_slice(line);
            }
        }
        Ok(I420Frame::from_packed(img.d_w, img.d_h, data)
            .map_or(Decoded::Nothing, Decoded::Picture))
    }
}

impl Drop for Vp8Decoder {
    fn drop(&mut self) {
        // SAFETY: the context was initialised in `new` and is destroyed once.
        unsafe {
            ffi::vpx_codec_destroy(&mut *self.ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::{read_stamp, test_card};
    use crate::frame::psnr;

    #[test]
    fn a_card_survives_encode_and_decode() {
        let settings = EncoderSettings::for_call(320, 240, 30);
        let mut enc = Vp8Encoder::new(settings).unwrap();
        let mut dec = Vp8Decoder::new().unwrap();
        let mut worst = f64::INFINITY;
        for n in 0..30 {
            let src = test_card(320, 240, n);
            let e = enc.encode(&src, false).unwrap();
            assert_eq!(e.keyframe, n == 0, "only the first picture is a keyframe");
            let Decoded::Picture(out) = dec.decode(&e.data).unwrap() else {
                panic!("frame {n} did not decode");
            };
            assert_eq!(read_stamp(&out), Some(n));
            if n > 5 {
                worst = worst.min(psnr(&src, &out).unwrap());
            }
        }
        assert!(worst > 30.0, "PSNR {worst:.1} dB");
        // A keyframe on request, and a bitrate change takes.
        enc.set_bitrate(200_000).unwrap();
        assert_eq!(enc.settings().bitrate_bps, 200_000);
        assert!(enc.encode(&test_card(320, 240, 30), true).unwrap().keyframe);
        assert!(matches!(
            enc.encode(&test_card(640, 480, 0), false),
            Err(VpxError::WrongSize { .. })
        ));
    }

    #[test]
    fn a_lost_frame_is_reported_and_a_keyframe_recovers() {
        let mut enc = Vp8Encoder::new(EncoderSettings::for_call(320, 240, 30)).unwrap();
        let frames: Vec<_> = (0..10)
            .map(|n| enc.encode(&test_card(320, 240, n), n == 8).unwrap())
            .collect();
        let mut dec = Vp8Decoder::new().unwrap();
        // Garbage first: an error, and the decoder carries on.
        assert!(dec.decode(&[0xff; 40]).is_err());
        assert!(dec.decode(&[]).is_err());
        // A delta frame with no keyframe before it cannot be shown.
        let mut shown = 0;
        for f in &frames[1..8] {
            match dec.decode(&f.data) {
                Ok(Decoded::Picture(_)) => shown += 1,
                Ok(Decoded::Corrupt | Decoded::Nothing) | Err(_) => {}
            }
        }
        assert_eq!(shown, 0, "no picture without its references");
        let Decoded::Picture(p) = dec.decode(&frames[8].data).unwrap() else {
            panic!("the keyframe decodes");
        };
        assert_eq!(read_stamp(&p), Some(8));
        assert!(matches!(
            dec.decode(&frames[9].data).unwrap(),
            Decoded::Picture(_)
        ));
    }

    #[test]
    fn settings_out_of_range_are_refused() {
        let mut s = EncoderSettings::for_call(640, 480, 30);
        assert_eq!(s.bitrate_bps, 921_600);
        s.width = 0;
        assert!(matches!(Vp8Encoder::new(s), Err(VpxError::Settings(_))));
        let mut s = EncoderSettings::for_call(640, 480, 30);
        s.speed = 99;
        assert!(Vp8Encoder::new(s).is_err());
    }
}
