//! ArrayRecord files (`grain_file_type=arrayrecord`): a riegeli file whose user records come first, then a
//! footer chunk (`RiegeliFooterMetadata`, one `ArrayRecordFooter` per user chunk) and a postscript chunk
//! (`RiegeliPostscript{footer_offset}`, stored 3 times) in the last 64 KiB block.
//!
//! Why by hand: there is no ArrayRecord crate, and the one riegeli crate (`riegeli` 0.2.1) pulls Google's
//! upb-based `protobuf` 4.x runtime, compiled from C, next to prost, for transposed chunks that ArrayRecord's
//! writer does not produce (`transpose:false` is its default). This reader covers what array_record writes:
//! riegeli blocks, the signature / metadata / padding chunks, simple record chunks (`'r'`) uncompressed or
//! compressed with brotli, zstd or snappy, all header and data hashes (HighwayHash-64) verified, and the
//! footer, whose record count bounds the user records. A transposed chunk is refused with a clear error.
//!
//! Layout (riegeli/records/records_format.md): the file is 64 KiB blocks, each starting with a 24-byte block
//! header that interrupts whatever chunk crosses it. A chunk is a 40-byte header
//! `{header_hash, data_size, data_hash, chunk_type:8 | num_records:56, decoded_data_size}` (little endian)
//! and `data_size` data bytes. A chunk ends at the later of its data's end and `begin + num_records` rounded
//! up to a possible chunk boundary (so that record positions are unique); the next chunk starts there.

use std::path::Path;

use highway::{HighwayHash, HighwayHasher, Key};
use prost::Message;

use super::error::DataError;
use super::records::layout;

const BLOCK: u64 = 1 << 16;
const BLOCK_HEADER: u64 = 24;
const CHUNK_HEADER: u64 = 40;
/// "Riegeli/records\n" twice, as little-endian words: riegeli's HighwayHash key.
const HASH_KEY: [u64; 4] = [0x2f69_6c65_6765_6952, 0x0a73_6472_6f63_6572, 0x2f69_6c65_6765_6952, 0x0a73_6472_6f63_6572];

fn hash(bytes: &[u8]) -> u64 {
    HighwayHasher::new(Key(HASH_KEY)).hash64(bytes)
}

/// `n` logical bytes from physical position `pos`, skipping the block headers in between; and the position
/// after them. `None` when the file ends first.
fn logical(file: &[u8], mut pos: u64, n: u64) -> Option<(Vec<u8>, u64)> {
    let mut out = Vec::with_capacity(n as usize);
    let mut left = n;
    while left > 0 {
        let in_block = pos % BLOCK;
        if in_block < BLOCK_HEADER {
            pos += BLOCK_HEADER - in_block;
            continue;
        }
        let take = left.min(BLOCK - in_block);
        let end = pos.checked_add(take)?;
        out.extend_from_slice(file.get(pos as usize..usize::try_from(end).ok()?)?);
        pos = end;
        left -= take;
    }
    Some((out, pos))
}

/// Where the chunk that starts at `begin` ends (riegeli's `ChunkEnd`).
fn chunk_end(begin: u64, data_end: u64, num_records: u64) -> u64 {
    // A chunk may start exactly at a block boundary or right after a block header: the same address.
    let begin = if begin % BLOCK == BLOCK_HEADER { begin - BLOCK_HEADER } else { begin };
    let by_records = begin.saturating_add(num_records);
    // Round up to a position where a chunk can begin: a block's start, or past its header (the address right
    // after a header is the block's start, so the first other one is one byte further).
    let in_block = by_records % BLOCK;
    let by_records = if in_block != 0 && in_block <= BLOCK_HEADER { by_records - in_block + BLOCK_HEADER + 1 } else { by_records };
    data_end.max(by_records)
}

fn varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *b.get(*pos)?;
        *pos += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

fn decompress(kind: u8, data: &[u8], size: u64) -> Result<Vec<u8>, String> {
    let out = match kind {
        b'z' => zstd::bulk::decompress(data, size as usize).map_err(|e| format!("zstd: {e}"))?,
        b's' => snap::raw::Decoder::new().decompress_vec(data).map_err(|e| format!("snappy: {e}"))?,
        b'b' => {
            let mut out = Vec::with_capacity(size as usize);
            brotli_decompressor::BrotliDecompress(&mut &data[..], &mut out).map_err(|e| format!("brotli: {e}"))?;
            out
        }
        other => return Err(format!("unknown compression type {other:#04x}")),
    };
    if out.len() as u64 != size {
        return Err(format!("decompressed to {} bytes, the chunk says {size}", out.len()));
    }
    Ok(out)
}

/// The records of a simple chunk's data: `compression:u8 · varint sizes_len · sizes · values`, where a
/// compressed section carries its decompressed length as a varint before the compressed bytes.
fn simple_chunk(data: &[u8], num_records: u64, decoded_size: u64) -> Result<Vec<Vec<u8>>, String> {
    let kind = *data.first().ok_or("empty chunk data")?;
    let mut pos = 1;
    let sizes_len = varint(data, &mut pos).ok_or("bad sizes length")? as usize;
    let sizes_raw = data.get(pos..pos + sizes_len).ok_or("sizes run past the chunk")?;
    let values_raw = &data[pos + sizes_len..];
    let (sizes, values) = if kind == 0 {
        (sizes_raw.to_vec(), values_raw.to_vec())
    } else {
        let (mut p, mut q) = (0, 0);
        let n = varint(sizes_raw, &mut p).ok_or("bad sizes prefix")?;
        let m = varint(values_raw, &mut q).ok_or("bad values prefix")?;
        (decompress(kind, &sizes_raw[p..], n)?, decompress(kind, &values_raw[q..], m)?)
    };
    if values.len() as u64 != decoded_size {
        return Err(format!("{} value bytes, the chunk header says {decoded_size}", values.len()));
    }
    let (mut records, mut sp, mut vp) = (Vec::with_capacity(num_records as usize), 0, 0usize);
    for _ in 0..num_records {
        let len = varint(&sizes, &mut sp).ok_or("fewer record sizes than records")? as usize;
        records.push(values.get(vp..vp + len).ok_or("record sizes exceed the values")?.to_vec());
        vp += len;
    }
    Ok(records)
}

/// Every record of a riegeli file, each with the position of the chunk holding it.
fn riegeli_records(file: &[u8]) -> Result<Vec<(u64, Vec<u8>)>, String> {
    if file.len() < (BLOCK_HEADER + CHUNK_HEADER) as usize {
        return Err(format!("{} bytes: too short for a riegeli file", file.len()));
    }
    let mut out = Vec::new();
    let mut pos = 0u64;
    while pos < file.len() as u64 {
        let (h, data_start) = logical(file, pos, CHUNK_HEADER).ok_or_else(|| format!("chunk at byte {pos}: the file ends inside its header"))?;
        let word = |i: usize| u64::from_le_bytes(h[i * 8..i * 8 + 8].try_into().unwrap());
        if word(0) != hash(&h[8..40]) {
            return Err(format!("chunk at byte {pos}: the header hash does not match (damaged file, or not a riegeli/ArrayRecord file)"));
        }
        let (data_size, data_hash, kind, num_records, decoded) = (word(1), word(2), word(3) as u8, word(3) >> 8, word(4));
        let (data, data_end) = logical(file, data_start, data_size).ok_or_else(|| format!("chunk at byte {pos}: the file ends inside its {data_size} data bytes (truncated?)"))?;
        if data_hash != hash(&data) {
            return Err(format!("chunk at byte {pos}: the data hash does not match: the chunk is damaged; re-create the file"));
        }
        match kind {
            b's' if pos == 0 => {}
            b'm' | b'p' => {}
            b'r' => {
                for r in simple_chunk(&data, num_records, decoded).map_err(|e| format!("chunk at byte {pos}: {e}"))? {
                    out.push((pos, r));
                }
            }
            b't' => return Err(format!("chunk at byte {pos} is transposed (riegeli `transpose:true`), which is not read; write the file with transpose:false (array_record's default)")),
            other => return Err(format!("chunk at byte {pos} has unknown type {other:#04x}")),
        }
        pos = chunk_end(pos, data_end, num_records);
    }
    Ok(out)
}

/// The user records of an ArrayRecord file, in order.
pub fn arrayrecord_records(file: &[u8], path: &Path) -> Result<Vec<Vec<u8>>, DataError> {
    let err = |reason: String| DataError::Record { path: path.into(), record: "ArrayRecord file".into(), reason };
    let all = riegeli_records(file).map_err(err)?;
    // The last record is a postscript copy; everything from the footer's chunk on is not user data.
    let (_, last) = all.last().ok_or_else(|| err("no records, not even ArrayRecord's footer".into()))?;
    let post = layout::RiegeliPostscript::decode(last.as_slice()).map_err(|e| err(format!("no ArrayRecord postscript at the end ({e}): a plain riegeli file?")))?;
    let footer_at = post.footer_offset();
    let split = all.partition_point(|(chunk, _)| *chunk < footer_at);
    let footer = all.get(split).ok_or_else(|| err(format!("no footer at byte {footer_at}")))?;
    let meta = layout::RiegeliFooterMetadata::decode(footer.1.as_slice()).map_err(|e| err(format!("bad footer metadata: {e}")))?;
    let Some(layout::riegeli_footer_metadata::Metadata::ArrayRecordMetadata(m)) = meta.metadata else {
        return Err(err("the footer holds no ArrayRecord metadata".into()));
    };
    if m.num_records() != split as u64 {
        return Err(err(format!("the footer lists {} records but the file holds {split} (truncated or damaged)", m.num_records())));
    }
    Ok(all.into_iter().take(split).map(|(_, r)| r).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logical_bytes_skip_block_headers() {
        let file: Vec<u8> = (0..(2 * BLOCK + 100)).map(|i| (i % 251) as u8).collect();
        let (b, end) = logical(&file, BLOCK - 10, 20).unwrap();
        assert_eq!(end, BLOCK + BLOCK_HEADER + 10);
        assert_eq!(&b[..10], &file[(BLOCK - 10) as usize..BLOCK as usize]);
        assert_eq!(&b[10..], &file[(BLOCK + BLOCK_HEADER) as usize..(BLOCK + BLOCK_HEADER + 10) as usize]);
        assert!(logical(&file, 2 * BLOCK + 90, 20).is_none());
    }

    #[test]
    fn chunk_end_rounds_record_positions_out_of_block_headers() {
        assert_eq!(chunk_end(64, 200, 3), 200);
        assert_eq!(chunk_end(64, 70, 100), 164);
        assert_eq!(chunk_end(BLOCK - 10, BLOCK, 20), BLOCK + BLOCK_HEADER + 1);
        assert_eq!(chunk_end(BLOCK - 10, BLOCK + 30, 20), BLOCK + 30);
    }

    #[test]
    fn simple_chunk_uncompressed() {
        // sizes [2, 1] as varints, values "abc".
        let data = [0u8, 2, 2, 1, b'a', b'b', b'c'];
        assert_eq!(simple_chunk(&data, 2, 3).unwrap(), vec![b"ab".to_vec(), b"c".to_vec()]);
        assert!(simple_chunk(&data, 2, 4).unwrap_err().contains("header says 4"));
    }
}
