//! Byte codecs used by zarr and OCDBT: zstd, gzip, zlib, bz2 and the crc32c checksum.
//!
//! Errors are plain strings; the caller adds the file or array they belong to.

use std::io::Read;

/// A bytes-to-bytes compression codec.
#[derive(Clone, Debug, PartialEq)]
pub enum Compression {
    Zstd { level: i32 },
    Gzip { level: u32 },
    Zlib { level: u32 },
    Bz2 { level: u32 },
}

impl Compression {
    pub fn decode(&self, data: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Compression::Zstd { .. } => zstd_decode(data),
            Compression::Gzip { .. } => read_all(flate2::read::MultiGzDecoder::new(data), "gzip"),
            Compression::Zlib { .. } => read_all(flate2::read::ZlibDecoder::new(data), "zlib"),
            Compression::Bz2 { .. } => read_all(bzip2::read::MultiBzDecoder::new(data), "bz2"),
        }
    }

    pub fn encode(&self, data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let finish = |r: std::io::Result<Vec<u8>>| r.expect("compressing into memory cannot fail");
        match self {
            Compression::Zstd { level } => zstd_encode(data, *level),
            Compression::Gzip { level } => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(*level));
                e.write_all(data).expect("in-memory write");
                finish(e.finish())
            }
            Compression::Zlib { level } => {
                let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(*level));
                e.write_all(data).expect("in-memory write");
                finish(e.finish())
            }
            Compression::Bz2 { level } => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::new(*level));
                e.write_all(data).expect("in-memory write");
                finish(e.finish())
            }
        }
    }
}

fn read_all(mut r: impl Read, what: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.read_to_end(&mut out).map_err(|e| format!("{what} data does not decompress ({e})"))?;
    Ok(out)
}

/// Decodes one or more zstd frames, with or without a content size or checksum.
pub fn zstd_decode(data: &[u8]) -> Result<Vec<u8>, String> {
    zstd::stream::decode_all(data).map_err(|e| format!("zstd data does not decompress ({e})"))
}

/// One zstd frame with the content size in its header (what tensorstore writes). Level 0 is zstd's default.
pub fn zstd_encode(data: &[u8], level: i32) -> Vec<u8> {
    zstd::bulk::compress(data, level).expect("zstd compression into memory cannot fail")
}

pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

/// Splits off and checks a trailing little-endian crc32c (zarr3 `crc32c` codec).
pub fn strip_crc32c(data: &[u8]) -> Result<&[u8], String> {
    if data.len() < 4 {
        return Err(format!("{} bytes is too short to hold a crc32c checksum", data.len()));
    }
    let (body, tail) = data.split_at(data.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().unwrap());
    let actual = crc32c(body);
    if stored != actual {
        return Err(format!("crc32c mismatch (stored {stored:#010x}, computed {actual:#010x})"));
    }
    Ok(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn codecs_round_trip() {
        let data: Vec<u8> = (0..1000u32).flat_map(|i| (i % 17).to_le_bytes()).collect();
        for c in [
            Compression::Zstd { level: 3 },
            Compression::Gzip { level: 1 },
            Compression::Zlib { level: 1 },
            Compression::Bz2 { level: 1 },
        ] {
            assert_eq!(c.decode(&c.encode(&data)).unwrap(), data, "{c:?}");
        }
        assert!(zstd_decode(b"not zstd").is_err());
    }

    #[test]
    fn crc32c_codec_detects_corruption() {
        let mut v = b"abcd".to_vec();
        v.extend(crc32c(b"abcd").to_le_bytes());
        assert_eq!(strip_crc32c(&v).unwrap(), b"abcd");
        v[0] ^= 1;
        assert!(strip_crc32c(&v).unwrap_err().contains("crc32c mismatch"));
    }
}
