//! ChannelData messages (RFC 8656 §12.4) and stream framing (§12.5, RFC 8489 §6.2.2).

use super::message::HEADER_LEN;

/// Lowest valid channel number (RFC 8656 §12).
pub const CHANNEL_MIN: u16 = 0x4000;
/// Highest channel number we accept. RFC 8656 narrowed the range to 0x4FFF, but
/// RFC 5766 allowed up to 0x7FFF and deployed clients (coturn's among them) still
/// pick numbers there; every such number still demultiplexes as ChannelData.
pub const CHANNEL_MAX: u16 = 0x7FFF;

/// A ChannelData message borrowing its payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelData<'a> {
    /// Channel number, 0x4000..=0x7FFF.
    pub channel: u16,
    /// Application data.
    pub data: &'a [u8],
}

/// Why bytes are not a ChannelData message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChannelDataError {
    /// Fewer than the 4 header bytes.
    #[error("ChannelData is {0} bytes, shorter than its 4-byte header")]
    TooShort(usize),
    /// Channel number outside 0x4000..=0x7FFF.
    #[error("channel number {0:#06x} is outside 0x4000..=0x7fff")]
    BadChannel(u16),
    /// The length field claims more than is there.
    #[error("ChannelData declares {declared} bytes of data but carries {actual}")]
    Truncated {
        /// Length field.
        declared: usize,
        /// Bytes after the header.
        actual: usize,
    },
    /// More than 3 bytes of padding follow the data.
    #[error(
        "ChannelData declares {declared} bytes of data but {actual} follow; at most 3 bytes of padding are allowed"
    )]
    TrailingBytes {
        /// Length field.
        declared: usize,
        /// Bytes after the header.
        actual: usize,
    },
}

/// Why a byte stream cannot be split into STUN/ChannelData frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Neither a STUN message (top bits 00) nor ChannelData (top bits 01) starts here.
    #[error("stream byte {0:#04x} starts neither a STUN message nor ChannelData")]
    UnknownFrame(u8),
    /// A STUN header on a stream declared a length that is not a multiple of 4.
    #[error("STUN message on the stream declares unaligned length {0}")]
    UnalignedStun(u16),
}

/// Cheap demultiplexing check: the first two bits are 01 and a header is present.
pub fn looks_like_channel_data(data: &[u8]) -> bool {
    data.len() >= 4 && data[0] & 0xC0 == 0x40
}

impl<'a> ChannelData<'a> {
    /// Decodes one ChannelData message; up to 3 bytes of trailing padding are accepted.
    pub fn decode(bytes: &'a [u8]) -> Result<ChannelData<'a>, ChannelDataError> {
        if bytes.len() < 4 {
            return Err(ChannelDataError::TooShort(bytes.len()));
        }
        let channel = u16::from_be_bytes([bytes[0], bytes[1]]);
        if !(CHANNEL_MIN..=CHANNEL_MAX).contains(&channel) {
            return Err(ChannelDataError::BadChannel(channel));
        }
        let declared = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        let actual = bytes.len() - 4;
        if declared > actual {
            return Err(ChannelDataError::Truncated { declared, actual });
        }
        if actual - declared > 3 {
            return Err(ChannelDataError::TrailingBytes { declared, actual });
        }
        Ok(ChannelData {
            channel,
            data: &bytes[4..4 + declared],
        })
    }

    /// Appends the encoded message to `out`, padded to a multiple of 4 when `pad`
    /// (required on TCP and TLS, §12.5). Data longer than 65535 bytes is cut to fit
    /// the length field; callers relay datagrams, which are never that large.
    pub fn encode(&self, pad: bool, out: &mut Vec<u8>) {
        let len = self.data.len().min(usize::from(u16::MAX));
        out.reserve(4 + len + 3);
        out.extend_from_slice(&self.channel.to_be_bytes());
        out.extend_from_slice(&(len as u16).to_be_bytes());
        out.extend_from_slice(&self.data[..len]);
        if pad {
            while !out.len().is_multiple_of(4) {
                out.push(0);
            }
        }
    }
}

/// Length of the first frame in a stream buffer: `Ok(None)` when more bytes are needed
/// to know it. STUN frames are `20 + length`; ChannelData frames are `4 + length`
/// rounded up to a multiple of 4, as RFC 8656 §12.5 requires on streams.
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, FramingError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u16::from_be_bytes([buf[2], buf[3]]);
    match buf[0] & 0xC0 {
        0x00 => {
            if !len.is_multiple_of(4) {
                return Err(FramingError::UnalignedStun(len));
            }
            Ok(Some(HEADER_LEN + usize::from(len)))
        }
        0x40 => Ok(Some(4 + ((usize::from(len) + 3) & !3))),
        _ => Err(FramingError::UnknownFrame(buf[0])),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_accepts_padding_up_to_three_bytes() {
        let cd = ChannelData::decode(&[0x40, 0x00, 0x00, 0x01, 0xAA, 0, 0, 0]).unwrap();
        assert_eq!(
            cd,
            ChannelData {
                channel: 0x4000,
                data: &[0xAA]
            }
        );
        assert_eq!(
            ChannelData::decode(&[0x40, 0x00, 0x00, 0x00, 0, 0, 0, 0]),
            Err(ChannelDataError::TrailingBytes {
                declared: 0,
                actual: 4
            })
        );
        assert_eq!(
            ChannelData::decode(&[0x40, 0x00, 0x00, 0x02, 1]),
            Err(ChannelDataError::Truncated {
                declared: 2,
                actual: 1
            })
        );
        assert_eq!(
            ChannelData::decode(&[0x80, 0x00, 0x00, 0x00]),
            Err(ChannelDataError::BadChannel(0x8000))
        );
        assert_eq!(
            ChannelData::decode(&[0x7F, 0xFF, 0x00, 0x00]).map(|c| c.channel),
            Ok(0x7FFF)
        );
        assert_eq!(
            ChannelData::decode(&[0x40]),
            Err(ChannelDataError::TooShort(1))
        );
    }

    #[test]
    fn encode_pads_only_when_asked() {
        let mut out = Vec::new();
        ChannelData {
            channel: 0x4001,
            data: b"abcde",
        }
        .encode(true, &mut out);
        assert_eq!(out.len(), 12);
        out.clear();
        ChannelData {
            channel: 0x4001,
            data: b"abcde",
        }
        .encode(false, &mut out);
        assert_eq!(out.len(), 9);
        assert_eq!(ChannelData::decode(&out).unwrap().data, b"abcde");
    }

    #[test]
    fn stream_framing() {
        assert_eq!(stream_frame_len(&[0x40, 0x00]), Ok(None));
        assert_eq!(stream_frame_len(&[0x40, 0x00, 0x00, 0x05]), Ok(Some(12)));
        assert_eq!(stream_frame_len(&[0x00, 0x01, 0x00, 0x08]), Ok(Some(28)));
        assert_eq!(
            stream_frame_len(&[0x00, 0x01, 0x00, 0x07]),
            Err(FramingError::UnalignedStun(7))
        );
        // A TLS record starts 0x16: framed as STUN, it then fails to decode and the driver closes.
        assert_eq!(stream_frame_len(&[0x16, 0x03, 0x01, 0x00]), Ok(Some(276)));
        assert_eq!(
            stream_frame_len(&[0x80, 0, 0, 0]),
            Err(FramingError::UnknownFrame(0x80))
        );
    }
}
