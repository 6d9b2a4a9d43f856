//! The receiving end of a call's audio: a jitter buffer in front of the Opus
//! decoder. Packets are held until they can be played in sequence order:
//! a packet that overtook an earlier one (jitter reorders packets) waits for
//! it, for at most [`JITTER_DELAY`] after it arrived; past that the missing
//! frames are rebuilt — the last one from the next packet's in-band FEC, the
//! others by Opus's concealment — so the timeline is kept.

use super::audio::{FRAME, MediaError, RATE};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How long a packet waits for an earlier, missing one: above the jitter of
/// a mobile path (±20–40 ms), below what makes a conversation awkward.
pub(crate) const JITTER_DELAY: Duration = Duration::from_millis(80);
/// Most frames rebuilt for one hole; a longer outage is left out of the
/// recording (the sender's timeline is not worth seconds of concealment).
const MAX_CONCEAL: u64 = 50;
/// Packets held at most (about 2.5 s of 20 ms frames); beyond it the
/// oldest hole is given up at once.
const MAX_HELD: usize = 128;

/// Decodes received packets in order, rebuilding lost frames.
pub(crate) struct Recorder {
    dec: opus::Decoder,
    fec: bool,
    /// Extended sequence number of the next packet to play.
    next: Option<u64>,
    highest: Option<u64>,
    /// Playing has begun: the first packet waited [`JITTER_DELAY`] for any
    /// earlier one it overtook.
    started: bool,
    held: BTreeMap<u64, (Vec<u8>, Instant)>,
    last_arrival: Option<Instant>,
    pub(crate) pcm: Vec<i16>,
    pub(crate) packets: u64,
    pub(crate) lost: u64,
    pub(crate) recovered: u64,
    pub(crate) max_gap: Duration,
    /// When media reached us: (milliseconds of the sender's audio, arrival),
    /// twice a second — to compare with video's (A/V sync).
    pub(crate) timeline: Vec<(u64, Instant)>,
    first: Option<u64>,
}

/// Most timeline entries kept (over an hour at two a second).
pub(crate) const MAX_TIMELINE: usize = 8_000;

impl Recorder {
    pub(crate) fn new(fec: bool) -> Result<Self, MediaError> {
        Ok(Self {
            dec: opus::Decoder::new(RATE, opus::Channels::Mono)?,
            fec,
            next: None,
            highest: None,
            started: false,
            held: BTreeMap::new(),
            last_arrival: None,
            pcm: Vec::new(),
            packets: 0,
            lost: 0,
            recovered: 0,
            max_gap: Duration::ZERO,
            timeline: Vec::new(),
            first: None,
        })
    }

    /// A 16-bit sequence number as one that never wraps.
    fn extend(&self, seq: u16) -> u64 {
        let Some(high) = self.highest else {
            return (1 << 32) + u64::from(seq);
        };
        let base = high & !0xffff;
        [base.wrapping_sub(0x1_0000), base, base + 0x1_0000]
            .into_iter()
            .map(|c| c + u64::from(seq))
            .min_by_key(|c| c.abs_diff(high))
            .unwrap_or(base + u64::from(seq))
    }

    /// One received packet; plays whatever is due.
    pub(crate) fn push(&mut self, seq: u16, payload: &[u8], now: Instant) {
        let ext = self.extend(seq);
        if self.held.contains_key(&ext) {
            return; // duplicate
        }
        if self.next.is_some_and(|n| ext < n) {
            if self.started {
                return; // late: already played or concealed
            }
            // Before playing starts, an earlier packet moves the start back.
            self.next = Some(ext);
        }
        if let Some(prev) = self.last_arrival {
            self.max_gap = self.max_gap.max(now.saturating_duration_since(prev));
        }
        self.last_arrival = Some(now);
        self.packets += 1;
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        self.next.get_or_insert(ext);
        let first = *self.first.get_or_insert(ext);
        if ext >= first && (ext - first).is_multiple_of(25) && self.timeline.len() < MAX_TIMELINE {
            self.timeline.push(((ext - first) * 20, now));
        }
        self.held.insert(ext, (payload.to_vec(), now));
        self.play(now);
    }

    /// Plays held packets in order; a hole is waited for until the packet
    /// after it has been held [`JITTER_DELAY`] (or the buffer is full).
    pub(crate) fn play(&mut self, now: Instant) {
        if !self.started {
            // The first packet waits, as any hole would, for earlier ones.
            match self.held.values().map(|(_, at)| *at).min() {
                Some(at) if now.saturating_duration_since(at) >= JITTER_DELAY => {
                    self.started = true;
                }
                _ => return,
            }
        }
        while let (Some(next), Some((&first, (_, arrived)))) = (self.next, self.held.iter().next())
        {
            if first > next {
                let waited = now.saturating_duration_since(*arrived);
                if waited < JITTER_DELAY && self.held.len() < MAX_HELD {
                    return;
                }
                self.conceal(first - next, first);
            }
            let Some((payload, _)) = self.held.remove(&first) else {
                return;
            };
            let mut out = vec![0i16; FRAME * 6];
            if let Ok(n) = self.dec.decode(&payload, &mut out, false) {
                self.pcm.extend_from_slice(&out[..n]);
            }
            self.next = Some(first + 1);
        }
    }

    /// Plays everything still held (the call ended).
    pub(crate) fn flush(&mut self) {
        self.started = true;
        while let (Some(next), Some(&first)) = (self.next, self.held.keys().next()) {
            if first > next {
                self.conceal(first - next, first);
            }
            if let Some((payload, _)) = self.held.remove(&first) {
                let mut out = vec![0i16; FRAME * 6];
                if let Ok(n) = self.dec.decode(&payload, &mut out, false) {
                    self.pcm.extend_from_slice(&out[..n]);
                }
            }
            self.next = Some(first + 1);
        }
    }

    /// Rebuilds `missing` frames before the held packet `before`: the last
    /// from its in-band FEC, the others by concealment.
    fn conceal(&mut self, missing: u64, before: u64) {
        self.lost += missing;
        let fec_payload = self.held.get(&before).map(|(p, _)| p.clone());
        let rebuilt = missing.min(MAX_CONCEAL);
        for i in 0..rebuilt {
            let mut out = [0i16; FRAME];
            let last = i + 1 == rebuilt;
            let n = match (&fec_payload, last && self.fec) {
                (Some(p), true) => self.dec.decode(p, &mut out, true).ok(),
                _ => self.dec.decode(&[], &mut out, false).ok(),
            };
            if last && self.fec && n.is_some() {
                self.recovered += 1;
            }
            self.pcm
                .extend_from_slice(&out[..n.unwrap_or(FRAME).min(FRAME)]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::call::wav::Pcm;

    const FRAME_TIME: Duration = Duration::from_millis(20);

    fn packets(fec: bool, n: usize) -> Vec<Vec<u8>> {
        let mut enc =
            opus::Encoder::new(RATE, opus::Channels::Mono, opus::Application::Voip).unwrap();
        enc.set_inband_fec(fec).unwrap();
        enc.set_packet_loss_perc(if fec { 20 } else { 0 }).unwrap();
        let tone = Pcm::tone(RATE, 440.0, n as f64 * 0.02, 0.5);
        tone.samples
            .chunks_exact(FRAME)
            .map(|f| enc.encode_vec(f, 1500).unwrap())
            .collect()
    }

    #[test]
    fn lost_frames_are_rebuilt_from_fec_and_the_timeline_kept() {
        let p = packets(true, 50);
        let mut r = Recorder::new(true).unwrap();
        let t = Instant::now();
        for (i, pkt) in p.iter().enumerate() {
            if i == 10 || i == 20 || i == 21 {
                continue; // lost
            }
            r.push(1000 + i as u16, pkt, t + FRAME_TIME * i as u32);
        }
        r.flush();
        assert_eq!(r.lost, 3);
        assert_eq!(
            r.recovered, 2,
            "one per hole: the frame just before a packet"
        );
        assert_eq!(
            r.pcm.len(),
            50 * FRAME,
            "lost frames are concealed in place"
        );
        assert_eq!(r.max_gap, FRAME_TIME * 3);
        // Duplicates and late packets change nothing.
        r.push(1000 + 5, &p[5], t + FRAME_TIME * 60);
        assert_eq!(r.pcm.len(), 50 * FRAME);
    }

    #[test]
    fn reordered_packets_are_played_in_order_not_lost() {
        let p = packets(true, 40);
        let mut r = Recorder::new(true).unwrap();
        let t = Instant::now();
        // Pairs swapped: 1,0,3,2,…, each 20 ms apart (40 ms of jitter).
        for k in 0..40usize {
            let i = k ^ 1;
            r.push(
                65_520u16.wrapping_add(i as u16),
                &p[i],
                t + FRAME_TIME * k as u32,
            );
        }
        r.flush();
        assert_eq!(r.lost, 0, "nothing waited longer than the jitter delay");
        assert_eq!(r.pcm.len(), 40 * FRAME);
        // A packet later than the jitter delay: its frame was already
        // rebuilt (from the next packet's FEC), and it is dropped.
        let mut r = Recorder::new(true).unwrap();
        r.push(0, &p[0], t);
        r.push(2, &p[2], t + FRAME_TIME);
        r.play(t + FRAME_TIME + JITTER_DELAY);
        r.push(1, &p[1], t + FRAME_TIME * 2 + JITTER_DELAY);
        r.flush();
        assert_eq!((r.lost, r.recovered, r.pcm.len()), (1, 1, 3 * FRAME));
    }
}
