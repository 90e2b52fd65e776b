//! TFRecord framing, as TensorFlow's `RecordWriter` writes it (TensorBoard event files are TFRecord files):
//!
//! ```text
//! u64 LE  length of data
//! u32 LE  masked_crc32c(length bytes)
//! [u8]    data
//! u32 LE  masked_crc32c(data)
//! ```
//!
//! `masked_crc32c(x) = ((c >> 15) | (c << 17)) + 0xa282ead8` (wrapping) with `c` the CRC-32C (Castagnoli) of
//! `x`; the mask keeps a CRC of bytes that themselves contain CRCs from looking valid.

use std::path::Path;

use super::MetricsError;

const MASK_DELTA: u32 = 0xa282_ead8;

/// TFRecord's masked CRC-32C of `bytes`.
pub fn masked_crc32c(bytes: &[u8]) -> u32 {
    let c = crc32c::crc32c(bytes);
    c.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Appends one framed record holding `data` to `out`.
pub fn frame_record(data: &[u8], out: &mut Vec<u8>) {
    let len = (data.len() as u64).to_le_bytes();
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc32c(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc32c(data).to_le_bytes());
}

/// Splits a TFRecord byte stream into its records, checking both checksums of each. A truncated or
/// corrupt record is an error naming its byte offset (`path` is only used in the error).
pub fn parse_records(bytes: &[u8], path: &Path) -> Result<Vec<Vec<u8>>, MetricsError> {
    let corrupt = |offset: usize, what: String| MetricsError::Corrupt { path: path.to_path_buf(), offset, what };
    let u32_at = |i: usize| u32::from_le_bytes(bytes[i..i + 4].try_into().expect("4 bytes"));
    let mut records = Vec::new();
    let mut pos = 0;
    while pos < bytes.len() {
        if bytes.len() - pos < 12 {
            return Err(corrupt(pos, format!("truncated header: {} of 12 bytes", bytes.len() - pos)));
        }
        let len_bytes = &bytes[pos..pos + 8];
        let (want, got) = (u32_at(pos + 8), masked_crc32c(len_bytes));
        if want != got {
            return Err(corrupt(pos, format!("length checksum {want:#010x}, computed {got:#010x}")));
        }
        let len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
        let start = pos + 12;
        let avail = (bytes.len() - start) as u64;
        if avail < len.saturating_add(4) {
            return Err(corrupt(pos, format!("truncated record: {len} data bytes + 4 expected, {avail} left")));
        }
        let end = start + len as usize;
        let data = &bytes[start..end];
        let (want, got) = (u32_at(end), masked_crc32c(data));
        if want != got {
            return Err(corrupt(pos, format!("data checksum {want:#010x}, computed {got:#010x}")));
        }
        records.push(data.to_vec());
        pos = end + 4;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut buf = Vec::new();
        frame_record(b"hello", &mut buf);
        frame_record(b"", &mut buf);
        assert_eq!(buf.len(), 12 + 5 + 4 + 12 + 4);
        let p = Path::new("mem");
        assert_eq!(parse_records(&buf, p).unwrap(), vec![b"hello".to_vec(), vec![]]);
        let mut bad = buf.clone();
        bad[13] ^= 1;
        assert!(matches!(parse_records(&bad, p), Err(MetricsError::Corrupt { offset: 0, .. })));
        assert!(parse_records(&buf[..buf.len() - 1], p).is_err());
    }

    #[test]
    fn crc32c_check_value() {
        // The CRC-32C check value (RFC 3720).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }
}
