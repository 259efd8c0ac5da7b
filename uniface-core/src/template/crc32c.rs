//! CRC-32C (Castagnoli), the checksum of the template format.

const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0x82F6_3B78
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

static TABLE: [u32; 256] = table();

/// CRC-32C of `data` (initial value and final xor 0xFFFFFFFF, reflected).
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c_append(0, data)
}

/// Continue a CRC-32C: `crc32c_append(crc32c(a), b) == crc32c(a ++ b)` (for data read in
/// pieces).
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    !data.iter().fold(!crc, |c, &b| {
        TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn standard_check_value() {
        assert_eq!(super::crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(super::crc32c(b""), 0);
        let whole = super::crc32c(b"123456789");
        assert_eq!(
            super::crc32c_append(super::crc32c(b"1234"), b"56789"),
            whole
        );
    }
}
