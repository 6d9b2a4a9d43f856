//! Hand-made PNG files: valid, undecodable, with a broken header.

#![allow(dead_code)]

// ------------------------------------------------------------------ images

/// A `width`×`height` RGB PNG (uncompressed deflate blocks) with a gradient.
pub(crate) fn png_image(width: u32, height: u32) -> Vec<u8> {
    let mut raw = Vec::with_capacity((height * (1 + width * 3)) as usize);
    for y in 0..height {
        raw.push(0); // filter: none
        for x in 0..width {
            raw.extend([(x * 255 / width) as u8, (y * 255 / height) as u8, 0x80]);
        }
    }
    let mut z = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(0xFFFF).collect();
    for (i, block) in blocks.iter().enumerate() {
        z.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        z.extend(len.to_le_bytes());
        z.extend((!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    z.extend(adler32(&raw).to_be_bytes());
    png_file(width, height, &z)
}

/// A PNG with a good header and an IDAT that is not zlib data.
pub(crate) fn png_undecodable() -> Vec<u8> {
    png_file(8, 8, b"this is not a zlib stream at all")
}

/// A PNG signature followed by something other than an IHDR.
pub(crate) fn png_bad_header() -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    png_chunk(&mut v, b"tEXt", b"no IHDR first");
    png_chunk(&mut v, b"IEND", b"");
    v
}

/// Just the header of a `width`×`height` PNG (the bomb check reads no further).
pub(crate) fn png_header_only(width: u32, height: u32) -> Vec<u8> {
    png_file(width, height, &[])
}

pub(crate) fn png_file(width: u32, height: u32, idat: &[u8]) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend(width.to_be_bytes());
    ihdr.extend(height.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]); // 8-bit RGB, deflate, no filter, no interlace
    png_chunk(&mut v, b"IHDR", &ihdr);
    if !idat.is_empty() {
        png_chunk(&mut v, b"IDAT", idat);
    }
    png_chunk(&mut v, b"IEND", b"");
    v
}

pub(crate) fn png_chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend((data.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32(&out[start..]);
    out.extend(crc.to_be_bytes());
}

pub(crate) fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

pub(crate) fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    (b << 16) | a
}
