//! Received VP8 RTP packets back into whole frames (RFC 7741), as a pure state
//! machine: packets go in with their arrival time, frames come out in order.
//!
//! A frame is whole when its packets run without a gap from the one that
//! starts it (S=1, partition 0) to the one with the marker bit, all with one
//! RTP timestamp. Packets may arrive out of order (jitter) or late (NACK
//! retransmissions), so a gap is waited for up to [`Assembler::patience`];
//! after that what was missing is written off, and since the frames after a
//! loss refer to a picture the decoder never had, nothing but a keyframe is
//! let through until one arrives — and the caller is told to ask for one.

use bytes::Bytes;
use rtc_rtp::codec::vp8::Vp8Packet;
use rtc_rtp::packetizer::Depacketizer;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Packets held at most while waiting for a gap to fill (about 1.5 s of
/// 2.5 Mbit/s video); beyond it the oldest are written off.
pub const MAX_HELD_PACKETS: usize = 512;
/// The RTP clock of video (RFC 7741: 90 kHz).
const VIDEO_CLOCK_HZ: u32 = 90_000;
/// Largest frame assembled (a 4K keyframe at high quality is well under it).
pub const MAX_FRAME_BYTES: usize = 4 << 20;

/// One whole compressed frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The VP8 frame, payload descriptors removed.
    pub data: Vec<u8>,
    /// An intra frame (decodes without earlier ones).
    pub keyframe: bool,
    /// Its RTP timestamp (90 kHz).
    pub rtp_timestamp: u32,
}

#[derive(Debug, Clone)]
struct Held {
    timestamp: u32,
    marker: bool,
    /// Starts a frame (S=1, partition 0).
    start: bool,
    payload: Bytes,
}

/// Figures about what arrived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AssemblyStats {
    /// Whole frames that came out.
    pub frames: u64,
    /// Of those, keyframes.
    pub keyframes: u64,
    /// Packets written off after waiting.
    pub packets_lost: u64,
    /// Whole frames dropped because an earlier loss left them undecodable.
    pub frames_skipped: u64,
    /// Packets that were not VP8.
    pub malformed: u64,
}

/// The reassembly state of one video stream.
pub struct Assembler {
    held: BTreeMap<u64, Held>,
    /// Extended sequence number of the next packet wanted in order.
    next: Option<u64>,
    highest: Option<u64>,
    /// Since when the next packet has been missing while later ones wait.
    gap_since: Option<Instant>,
    /// After a loss: only a keyframe may pass.
    need_keyframe: bool,
    /// A frame came out or a gap was written off: `next` no longer moves back.
    started: bool,
    /// RTP timestamp of the last frame that came out.
    last_timestamp: Option<u32>,
    patience: Duration,
    stats: AssemblyStats,
}

impl Assembler {
    /// `patience`: how long a gap may stay open for a retransmission
    /// (a few round trips; NACK needs one).
    pub fn new(patience: Duration) -> Self {
        Self {
            held: BTreeMap::new(),
            next: None,
            highest: None,
            gap_since: None,
            need_keyframe: true,
            started: false,
            last_timestamp: None,
            patience,
            stats: AssemblyStats::default(),
        }
    }

    pub fn stats(&self) -> AssemblyStats {
        self.stats
    }

    /// Waiting for a keyframe (the caller should have asked for one).
    pub fn needs_keyframe(&self) -> bool {
        self.need_keyframe
    }

    /// Tells the assembler the decoder could not use a frame it passed: the
    /// stream is broken until the next keyframe.
    pub fn decoder_failed(&mut self) {
        self.need_keyframe = true;
    }

    /// A 16-bit sequence number as a 64-bit one that never wraps.
    fn extend(&self, seq: u16) -> u64 {
        let Some(high) = self.highest else {
            return (1 << 32) + u64::from(seq);
        };
        let base = high & !0xffff;
        let candidates = [base.wrapping_sub(0x1_0000), base, base + 0x1_0000];
        candidates
            .into_iter()
            .map(|c| c + u64::from(seq))
            .min_by_key(|c| c.abs_diff(high))
            .unwrap_or(base + u64::from(seq))
    }

    /// One received packet (RTP sequence number, timestamp, marker, payload).
    /// Returns the frames it completed, in order.
    pub fn push(
        &mut self,
        seq: u16,
        timestamp: u32,
        marker: bool,
        payload: &Bytes,
        now: Instant,
    ) -> Vec<Frame> {
        let mut vp8 = Vp8Packet::default();
        let Ok(inner) = vp8.depacketize(payload) else {
            self.stats.malformed += 1;
            return self.poll(now);
        };
        let ext = self.extend(seq);
        if self.next.is_some_and(|n| ext < n) {
            if self.started {
                return self.poll(now); // late or duplicate: its frame is done with
            }
            // Before anything came out, an earlier packet (reordered at the
            // start of the stream) moves the start back.
            self.next = Some(ext);
        }
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        if self.next.is_none() {
            self.next = Some(ext);
        }
        self.held.insert(
            ext,
            Held {
                timestamp,
                marker,
                start: vp8.s == 1 && vp8.pid == 0,
                payload: inner,
            },
        );
        while self.held.len() > MAX_HELD_PACKETS {
            self.write_off_first_gap();
        }
        self.poll(now)
    }

    /// Frames that became ready by waiting (a gap given up on); call on a
    /// timer as well as after [`push`](Self::push).
    pub fn poll(&mut self, now: Instant) -> Vec<Frame> {
        let mut out = Vec::new();
        loop {
            while let Some(frame) = self.take_next_frame() {
                if let Some(f) = self.admit(frame) {
                    out.push(f);
                }
            }
            let Some(next) = self.next else { break };
            if !self.blocked(next) {
                self.gap_since = None;
                break;
            }
            let since = *self.gap_since.get_or_insert(now);
            if now.duration_since(since) < self.patience && !self.gap_outlived_patience() {
                break;
            }
            self.give_up(next);
        }
        out
    }

    /// Whether the frame at `next` is held up by a packet that is missing
    /// while later ones wait (rather than simply not all here yet).
    fn blocked(&self, next: u64) -> bool {
        let Some(&last) = self.held.keys().next_back() else {
            return false;
        };
        match self.held.get(&next) {
            None => true,
            Some(head) if !head.start => true,
            Some(_) => {
                // A hole inside the run starting at `next`, with packets after it.
                let mut seq = next;
                while self.held.contains_key(&seq) {
                    seq += 1;
                }
                seq < last
            }
        }
    }

    /// Whether the media waiting after the gap was captured more than
    /// `patience` after the last frame that came out: the path was down
    /// (an outage), the missing packets were due long ago, and a keyframe
    /// will come sooner than their retransmissions would be worth showing.
    fn gap_outlived_patience(&self) -> bool {
        let (Some(last), Some(waiting)) = (self.last_timestamp, self.held.values().next_back())
        else {
            return false;
        };
        let ticks = waiting.timestamp.wrapping_sub(last);
        // A timestamp "behind" the last frame wraps to a huge number: not a jump.
        ticks < u32::MAX / 2
            && u128::from(ticks) * 1000 / u128::from(VIDEO_CLOCK_HZ) > self.patience.as_millis()
    }

    /// Writes off everything from `next` up to the next frame start after it.
    fn give_up(&mut self, next: u64) {
        let resume = self
            .held
            .range(next + 1..)
            .find(|(_, p)| p.start)
            .map(|(&k, _)| k)
            .or_else(|| self.held.keys().next_back().map(|&k| k + 1))
            .unwrap_or(next + 1);
        self.write_off(next, resume);
        self.gap_since = None;
        self.need_keyframe = true;
    }

    /// Lets a whole frame through unless a loss before it left it undecodable.
    fn admit(&mut self, frame: Frame) -> Option<Frame> {
        if self.need_keyframe && !frame.keyframe {
            self.stats.frames_skipped += 1;
            return None;
        }
        self.need_keyframe = false;
        self.stats.frames += 1;
        self.stats.keyframes += u64::from(frame.keyframe);
        Some(frame)
    }

    /// The frame starting at `next`, if all of it is here.
    fn take_next_frame(&mut self) -> Option<Frame> {
        let next = self.next?;
        let first = self.held.get(&next)?;
        if !first.start {
            if self.started {
                // The middle of a frame whose start was written off: drop up
                // to the next start.
                self.drop_through_frame_end(next);
            }
            // At the very start, an earlier packet may still come (reordered).
            return None;
        }
        let timestamp = first.timestamp;
        let mut end = next;
        loop {
            let p = self.held.get(&end)?;
            if p.timestamp != timestamp || (end != next && p.start) {
                // The frame's last packet is missing (a new frame began): it
                // can never be whole.
                self.write_off(next, end);
                self.need_keyframe = true;
                return None;
            }
            if p.marker {
                break;
            }
            end += 1;
        }
        let mut data = Vec::new();
        for seq in next..=end {
            if let Some(p) = self.held.remove(&seq)
                && data.len() + p.payload.len() <= MAX_FRAME_BYTES
            {
                data.extend_from_slice(&p.payload);
            }
        }
        self.next = Some(end + 1);
        self.gap_since = None;
        self.started = true;
        self.last_timestamp = Some(timestamp);
        // VP8 frame tag: bit 0 of the first byte is 0 on a keyframe.
        let keyframe = data.first().is_some_and(|b| b & 1 == 0);
        Some(Frame {
            data,
            keyframe,
            rtp_timestamp: timestamp,
        })
    }

    /// Removes held packets in `from..to` and moves `next` to `to`.
    fn write_off(&mut self, from: u64, to: u64) {
        let keep = self.held.split_off(&to);
        self.held = keep;
        self.stats.packets_lost += to.saturating_sub(from);
        self.next = Some(to);
        self.started = true;
    }

    fn drop_through_frame_end(&mut self, next: u64) {
        let mut seq = next;
        while let Some(p) = self.held.get(&seq) {
            if p.start && seq != next {
                break;
            }
            seq += 1;
            if self.held[&(seq - 1)].marker {
                break;
            }
        }
        self.write_off(next, seq);
        self.need_keyframe = true;
    }

    /// Too many packets held: gives up on the oldest frame.
    fn write_off_first_gap(&mut self) {
        if let Some(next) = self.next {
            self.give_up(next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RTP payloads for one frame of `len` bytes cut into `parts` packets.
    fn packetize(frame: &[u8], parts: usize) -> Vec<Bytes> {
        let chunk = frame.len().div_ceil(parts);
        frame
            .chunks(chunk)
            .enumerate()
            .map(|(i, c)| {
                // Minimal descriptor: X=0, N=0, S=first, PID=0.
                let mut p = vec![if i == 0 { 0x10 } else { 0x00 }];
                p.extend_from_slice(c);
                Bytes::from(p)
            })
            .collect()
    }

    /// Frame `n`: a keyframe when `key`, `len` bytes.
    fn frame(n: u8, key: bool, len: usize) -> Vec<u8> {
        let mut f = vec![n; len];
        f[0] = if key { 0x10 } else { 0x11 };
        f
    }

    struct Stream {
        seq: u16,
        ts: u32,
    }

    impl Stream {
        /// (seq, ts, marker, payload) for each packet of one frame.
        fn send(&mut self, f: &[u8], parts: usize) -> Vec<(u16, u32, bool, Bytes)> {
            let p = packetize(f, parts);
            let n = p.len();
            let out = p
                .into_iter()
                .enumerate()
                .map(|(i, b)| {
                    let s = self.seq;
                    self.seq = self.seq.wrapping_add(1);
                    (s, self.ts, i + 1 == n, b)
                })
                .collect();
            self.ts = self.ts.wrapping_add(3000);
            out
        }
    }

    fn feed(a: &mut Assembler, pkts: &[(u16, u32, bool, Bytes)], now: Instant) -> Vec<Frame> {
        pkts.iter()
            .flat_map(|(s, t, m, b)| a.push(*s, *t, *m, b, now))
            .collect()
    }

    #[test]
    fn frames_come_out_whole_and_in_order_despite_reordering_and_wrap() {
        let t = Instant::now();
        let mut a = Assembler::new(Duration::from_millis(200));
        let mut s = Stream { seq: 65_530, ts: 1 };
        let f0 = frame(0, true, 3000);
        let f1 = frame(1, false, 900);
        let mut pkts = s.send(&f0, 4);
        pkts.extend(s.send(&f1, 3));
        // Arrival order shuffled: later packets first.
        pkts.swap(0, 5);
        pkts.swap(2, 6);
        let out = feed(&mut a, &pkts, t);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].data, f0);
        assert!(out[0].keyframe);
        assert_eq!(out[1].data, f1);
        assert!(!out[1].keyframe);
        assert_eq!(a.stats().frames, 2);
        assert_eq!(a.stats().packets_lost, 0);
    }

    #[test]
    fn a_retransmission_within_patience_fills_the_gap() {
        let t = Instant::now();
        let mut a = Assembler::new(Duration::from_millis(200));
        let mut s = Stream { seq: 10, ts: 1 };
        let f0 = s.send(&frame(0, true, 2000), 2);
        let f1 = s.send(&frame(1, false, 2000), 2);
        let f2 = s.send(&frame(2, false, 100), 1);
        assert_eq!(feed(&mut a, &f0, t).len(), 1);
        // f1's first packet is lost for now; f1's tail and f2 wait.
        assert!(feed(&mut a, &f1[1..], t).is_empty());
        assert!(feed(&mut a, &f2, t).is_empty());
        assert!(a.poll(t + Duration::from_millis(100)).is_empty());
        // The NACKed packet arrives in time: both frames come out.
        let out = feed(&mut a, &f1[..1], t + Duration::from_millis(120));
        assert_eq!(out.len(), 2);
        assert!(!a.needs_keyframe());
    }

    #[test]
    fn a_loss_given_up_on_skips_to_the_next_keyframe() {
        let t = Instant::now();
        let mut a = Assembler::new(Duration::from_millis(200));
        let mut s = Stream { seq: 100, ts: 1 };
        feed(&mut a, &s.send(&frame(0, true, 500), 1), t);
        let lost = s.send(&frame(1, false, 500), 1);
        let f2 = s.send(&frame(2, false, 500), 1);
        let f3 = s.send(&frame(3, true, 1500), 2);
        let f4 = s.send(&frame(4, false, 500), 1);
        drop(lost);
        assert!(feed(&mut a, &f2, t).is_empty());
        // Patience runs out: frame 2 refers to the lost frame 1, so it is skipped.
        assert!(a.poll(t + Duration::from_millis(250)).is_empty());
        assert!(a.needs_keyframe());
        assert_eq!(a.stats().packets_lost, 1);
        assert_eq!(a.stats().frames_skipped, 1);
        let out = feed(&mut a, &f3, t + Duration::from_millis(300));
        assert_eq!(out.len(), 1);
        assert!(out[0].keyframe);
        assert_eq!(feed(&mut a, &f4, t + Duration::from_millis(330)).len(), 1);
        assert!(!a.needs_keyframe());
    }

    #[test]
    fn after_an_outage_the_gap_is_given_up_at_once() {
        let t = Instant::now();
        let mut a = Assembler::new(Duration::from_millis(500));
        let mut s = Stream { seq: 500, ts: 1 };
        feed(&mut a, &s.send(&frame(0, true, 500), 1), t);
        // Two seconds of frames (60 at 3000 ticks each) never arrive…
        for n in 0..60 {
            drop(s.send(&frame(n, false, 500), 1));
        }
        // …then the path is back: the first packet after it is 2 s of media
        // later, so waiting for retransmissions is pointless.
        let f = s.send(&frame(61, false, 500), 1);
        assert!(feed(&mut a, &f, t + Duration::from_secs(2)).is_empty());
        assert!(a.needs_keyframe(), "given up without waiting 500 ms");
        assert_eq!(a.stats().packets_lost, 60);
        let k = s.send(&frame(62, true, 500), 1);
        assert_eq!(feed(&mut a, &k, t + Duration::from_millis(2100)).len(), 1);
    }

    #[test]
    fn a_frame_missing_its_tail_is_written_off() {
        let t = Instant::now();
        let mut a = Assembler::new(Duration::from_millis(200));
        let mut s = Stream { seq: 1, ts: 1 };
        feed(&mut a, &s.send(&frame(0, true, 500), 1), t);
        let f1 = s.send(&frame(1, false, 900), 3);
        let f2 = s.send(&frame(2, true, 900), 3);
        feed(&mut a, &f1[..2], t);
        // f1's tail may yet be retransmitted: the keyframe after it waits…
        assert!(feed(&mut a, &f2, t).is_empty());
        // …until patience runs out; then f1 is given up and the keyframe comes out.
        let out = a.poll(t + Duration::from_millis(250));
        assert_eq!(out.len(), 1);
        assert!(out[0].keyframe);
        assert_eq!(a.stats().packets_lost, 3, "f1's tail, then its two orphans");
    }

    #[test]
    fn garbage_and_floods_are_bounded() {
        let t = Instant::now();
        let mut a = Assembler::new(Duration::from_secs(10));
        assert!(a.push(1, 1, true, &Bytes::from_static(&[1]), t).is_empty());
        assert_eq!(a.stats().malformed, 1);
        // Thousands of middle-of-frame packets that never complete.
        for i in 0..5000u16 {
            a.push(
                i.wrapping_mul(3),
                7,
                false,
                &Bytes::from_static(&[0, 1, 2, 3]),
                t,
            );
        }
        assert!(a.held.len() <= MAX_HELD_PACKETS);
        // Before any keyframe, delta frames do not pass.
        let mut s = Stream { seq: 40_000, ts: 9 };
        let mut b = Assembler::new(Duration::from_millis(10));
        assert!(feed(&mut b, &s.send(&frame(1, false, 100), 1), t).is_empty());
        assert_eq!(b.stats().frames_skipped, 1);
    }
}
