//! Hand-made bad photos for the tests, well-formed except for what makes them bad.

/// A valid PNG whose header claims 50000×50000 pixels (a decompression bomb).
pub fn png_bomb() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(50_000u32.to_be_bytes());
    ihdr.extend(50_000u32.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    for chunk in [&b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01"[..], b"IEND"] {
        png.extend((chunk.len() as u32 - 4).to_be_bytes());
        png.extend(chunk);
        png.extend(crc32(chunk).to_be_bytes());
    }
    png
}

/// A 24-bit BMP of a smooth gradient: a real image with no face in it.
pub fn faceless_bmp(width: u32, height: u32) -> Vec<u8> {
    bmp(width, height, |x, y| {
        [(x % 256) as u8, (y % 256) as u8, 128]
    })
}

/// A top-down 24-bit BMP whose pixel (x, y) is `rgb(x, y)`.
pub fn bmp(width: u32, height: u32, rgb: impl Fn(u32, u32) -> [u8; 3]) -> Vec<u8> {
    let row = (width * 3).div_ceil(4) * 4;
    let size = 54 + row * height;
    let mut bmp = b"BM".to_vec();
    bmp.extend(size.to_le_bytes());
    bmp.extend([0u8; 4]);
    bmp.extend(54u32.to_le_bytes());
    bmp.extend(40u32.to_le_bytes());
    bmp.extend(width.to_le_bytes());
    // A negative height stores the rows top to bottom.
    bmp.extend((-(height as i32)).to_le_bytes());
    bmp.extend(1u16.to_le_bytes());
    bmp.extend(24u16.to_le_bytes());
    bmp.extend([0u8; 24]);
    for y in 0..height {
        let mut line: Vec<u8> = (0..width)
            .flat_map(|x| {
                let [r, g, b] = rgb(x, y);
                [b, g, r]
            })
            .collect();
        line.resize(row as usize, 0);
        bmp.extend(line);
    }
    bmp
}

/// CRC-32 (PNG chunks), so the bomb header is well-formed and only its size is wrong.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &byte in data {
        crc ^= byte as u32;
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}
