//! Reading one box (element offsets + dims) of a zarr array without reading the rest: only the chunks
//! that intersect the box are fetched, and only their needed parts are decoded.
//!
//! orbax writes a jax.Array as one chunk per shard (one chunk for the whole array when it was saved from
//! one device, as `maxtext convert` does), each a `sharding_indexed` shard with one zstd-compressed inner
//! chunk. Decoding such a chunk whole would put the whole array on the host, so an inner chunk stored as
//! plain `bytes` (+ `zstd`) is streamed instead: the index is read with a ranged read, the compressed
//! bytes are read as a stream from their file range, and the decoder stops after the box's last row. The
//! host then holds the box and a few 64 KiB buffers. Other codec chains (transpose, gzip, inner crc32c,
//! zarr v2) fall back to decoding each intersecting chunk whole (one chunk at a time).

use std::io::Read;

use super::dtype::{to_native, Endian, ZarrDType};
use super::kvstore::{KvStore, ValueLocation};
use super::zarr::{copy_block, for_each_index, ArrayCtx, ArrayMeta, ChunkEncoding};
use super::zarr3::{ArrayToBytes, BytesCodec, CodecChain};
use super::codec::Compression;
use super::{OrbaxError, Result};

/// The overlap of a box with one chunk: where it sits in the chunk and in the box.
struct Overlap {
    /// Start inside the chunk.
    in_chunk: Vec<u64>,
    /// Start inside the box.
    in_box: Vec<u64>,
    extent: Vec<u64>,
}

/// For each dim, the chunk indices `[lo, hi)` the box `[offset, offset + dim)` touches.
fn chunk_span(offsets: &[u64], dims: &[u64], chunks: &[u64]) -> Vec<(u64, u64)> {
    offsets.iter().zip(dims).zip(chunks).map(|((o, d), c)| if *d == 0 { (0, 0) } else { (o / c, (o + d - 1) / c + 1) }).collect()
}

fn overlap(chunk_origin: &[u64], chunk_shape: &[u64], offsets: &[u64], dims: &[u64]) -> Overlap {
    let mut o = Overlap { in_chunk: vec![], in_box: vec![], extent: vec![] };
    for d in 0..offsets.len() {
        let lo = offsets[d].max(chunk_origin[d]);
        let hi = (offsets[d] + dims[d]).min(chunk_origin[d] + chunk_shape[d]);
        o.in_chunk.push(lo - chunk_origin[d]);
        o.in_box.push(lo - offsets[d]);
        o.extent.push(hi.saturating_sub(lo));
    }
    o
}

/// Reads the box at `offsets` of shape `dims` of an array: native little-endian C-order bytes.
/// Missing chunks read as the fill value unless `strict`.
pub fn read_region(
    store: &KvStore,
    meta: &ArrayMeta,
    ctx: &ArrayCtx,
    strict: bool,
    offsets: &[u64],
    dims: &[u64],
) -> Result<Vec<u8>> {
    let rank = meta.shape.len();
    if offsets.len() != rank || dims.len() != rank || (0..rank).any(|d| offsets[d] + dims[d] > meta.shape[d]) {
        return Err(ctx.err(format!("box at {offsets:?} of shape {dims:?} is outside the array's shape {:?}", meta.shape)));
    }
    let elem = meta.dtype.size();
    let n = dims.iter().product::<u64>() as usize;
    let mut out = meta.fill.repeat(n);
    if n == 0 {
        return Ok(out);
    }
    let span = chunk_span(offsets, dims, &meta.chunks);
    let counts: Vec<u64> = span.iter().map(|(lo, hi)| hi - lo).collect();
    let mut result = Ok(());
    for_each_index(&counts, |rel| {
        if result.is_err() {
            return;
        }
        let g: Vec<u64> = rel.iter().zip(&span).map(|(r, (lo, _))| r + lo).collect();
        let origin: Vec<u64> = g.iter().zip(&meta.chunks).map(|(i, c)| i * c).collect();
        let ov = overlap(&origin, &meta.chunks, offsets, dims);
        let key = format!("{}/{}", ctx.array, meta.chunk_key(&g));
        result = read_chunk_part(store, meta, ctx, strict, &key, &ov, &mut out, dims, elem);
    });
    result.map(|_| out)
}

#[allow(clippy::too_many_arguments)]
fn read_chunk_part(
    store: &KvStore,
    meta: &ArrayMeta,
    ctx: &ArrayCtx,
    strict: bool,
    key: &str,
    ov: &Overlap,
    out: &mut [u8],
    box_dims: &[u64],
    elem: usize,
) -> Result<()> {
    let damaged = |e: String| {
        ctx.err(format!("chunk {key}: {e}; the stored data are damaged (copy the checkpoint again or use another step)"))
    };
    let Some(loc) = store.locate(key).map_err(|e| ctx.err(format!("chunk {key}: {e}")))? else {
        if strict {
            return Err(OrbaxError::MissingChunk { dir: ctx.dir.clone(), array: ctx.array.clone(), key: key.into() });
        }
        return Ok(());
    };
    if let ChunkEncoding::V3 { codecs, .. } = &meta.encoding {
        if meta.dtype != ZarrDType::Int4 && codecs.transposes.is_empty() && codecs.bytes_codecs.is_empty() {
            if let ArrayToBytes::Sharding(sh) = &codecs.array_to_bytes {
                if let Some(inner) = Streamable::of(&sh.codecs) {
                    return read_sharded_part(&loc, meta, sh, inner, ctx, ov, out, box_dims).map_err(damaged);
                }
            }
        }
        if let Some(s) = Streamable::of(codecs).filter(|_| meta.dtype != ZarrDType::Int4) {
            let whole = Overlap { in_chunk: ov.in_chunk.clone(), in_box: ov.in_box.clone(), extent: ov.extent.clone() };
            return stream_part(s, loc.open_range(0, loc.len()).map_err(damaged)?, &meta.chunks, &whole, out, box_dims, meta.dtype)
                .map_err(damaged);
        }
    }
    // General codecs: decode the chunk whole, then copy the overlap.
    let raw = loc.read_range(0, loc.len()).map_err(damaged)?;
    let block = meta.decode_chunk(&raw, ctx).map_err(damaged)?;
    drop(raw);
    copy_overlap(&block, &meta.chunks, ov, out, box_dims, elem);
    Ok(())
}

/// Copies the overlap from a decoded chunk into the box.
fn copy_overlap(block: &[u8], chunk_shape: &[u64], ov: &Overlap, out: &mut [u8], box_dims: &[u64], elem: usize) {
    // Crop the chunk to the overlap, then place it in the box.
    let to_i = |v: &[u64]| v.iter().map(|x| *x as i64).collect::<Vec<_>>();
    let part = crate::sharding::extract_region(block, &to_i(chunk_shape), &to_i(&ov.in_chunk), &to_i(&ov.extent), elem);
    copy_block(out, box_dims, &part, &ov.extent, &ov.in_box, &ov.extent, elem);
}

/// An inner codec chain that decodes as a stream: `bytes` (either endian), optionally `zstd`.
#[derive(Clone, Copy)]
struct Streamable {
    endian: Endian,
    zstd: bool,
}

impl Streamable {
    fn of(chain: &CodecChain) -> Option<Streamable> {
        let ArrayToBytes::Bytes(endian) = chain.array_to_bytes else { return None };
        if !chain.transposes.is_empty() {
            return None;
        }
        match chain.bytes_codecs.as_slice() {
            [] => Some(Streamable { endian, zstd: false }),
            [BytesCodec::Compress(Compression::Zstd { .. })] => Some(Streamable { endian, zstd: true }),
            _ => None,
        }
    }
}

/// The parts of a `sharding_indexed` shard's inner chunks that overlap the box, each streamed.
#[allow(clippy::too_many_arguments)]
fn read_sharded_part(
    loc: &ValueLocation,
    meta: &ArrayMeta,
    sh: &super::zarr3::Sharding,
    inner: Streamable,
    ctx: &ArrayCtx,
    ov: &Overlap,
    out: &mut [u8],
    box_dims: &[u64],
) -> Result<(), String> {
    let grid: Vec<u64> = meta.chunks.iter().zip(&sh.chunk_shape).map(|(s, c)| s / c).collect();
    let n = grid.iter().product::<u64>();
    let index_len = 16 * n + sh.index_codecs.fixed_overhead().unwrap_or(0) as u64;
    if loc.len() < index_len {
        return Err(format!("shard of {} bytes is too short for its {index_len}-byte index", loc.len()));
    }
    let index_at = if sh.index_at_start { 0 } else { loc.len() - index_len };
    let index_raw = loc.read_range(index_at, index_len)?;
    let mut index_shape = grid.clone();
    index_shape.push(2);
    let index = sh.index_codecs.decode(&index_raw, &index_shape, ZarrDType::U64, &[0; 8], ctx).map_err(|e| format!("shard index: {e}"))?;
    // The part of the shard the box covers, and which inner chunks that touches.
    let span = chunk_span(&ov.in_chunk, &ov.extent, &sh.chunk_shape);
    let counts: Vec<u64> = span.iter().map(|(lo, hi)| hi - lo).collect();
    let mut result = Ok(());
    for_each_index(&counts, |rel| {
        if result.is_err() {
            return;
        }
        let g: Vec<u64> = rel.iter().zip(&span).map(|(r, (lo, _))| r + lo).collect();
        let flat = g.iter().zip(&grid).fold(0u64, |acc, (i, n)| acc * n + i) as usize;
        let off = u64::from_le_bytes(index[flat * 16..flat * 16 + 8].try_into().unwrap());
        let len = u64::from_le_bytes(index[flat * 16 + 8..flat * 16 + 16].try_into().unwrap());
        if off == u64::MAX && len == u64::MAX {
            return; // missing inner chunk: fill value
        }
        let origin: Vec<u64> = g.iter().zip(&sh.chunk_shape).map(|(i, c)| i * c).collect();
        // The overlap in inner-chunk coordinates; `in_box` shifts by where the shard part sits in the box.
        let part = overlap(&origin, &sh.chunk_shape, &ov.in_chunk, &ov.extent);
        let part = Overlap {
            in_box: part.in_box.iter().zip(&ov.in_box).map(|(a, b)| a + b).collect(),
            in_chunk: part.in_chunk,
            extent: part.extent,
        };
        result = loc
            .open_range(off, len)
            .and_then(|r| stream_part(inner, r, &sh.chunk_shape, &part, out, box_dims, meta.dtype))
            .map_err(|e| format!("inner chunk {g:?}: {e}"));
    });
    result
}

/// Decodes a chunk of `chunk_shape` from `raw` as a stream, copying the overlap's rows into the box and
/// stopping after the last one (the rest of the chunk is never decompressed).
fn stream_part(
    codec: Streamable,
    raw: Box<dyn Read + '_>,
    chunk_shape: &[u64],
    ov: &Overlap,
    out: &mut [u8],
    box_dims: &[u64],
    dtype: ZarrDType,
) -> Result<(), String> {
    let mut reader: Box<dyn Read + '_> =
        if codec.zstd { Box::new(zstd::stream::read::Decoder::new(raw).map_err(|e| format!("zstd: {e}"))?) } else { raw };
    let elem = dtype.size();
    let rank = chunk_shape.len();
    let strides = |shape: &[u64]| {
        let mut s = vec![1u64; rank];
        for i in (0..rank.saturating_sub(1)).rev() {
            s[i] = s[i + 1] * shape[i + 1];
        }
        s
    };
    let (cs, bs) = (strides(chunk_shape), strides(box_dims));
    let run = if rank == 0 { 1 } else { ov.extent[rank - 1] } as usize * elem;
    let outer = if rank == 0 { &[][..] } else { &ov.extent[..rank - 1] };
    let mut pos = 0u64; // bytes of the decoded chunk consumed so far
    let mut result = Ok(());
    let mut sink = std::io::sink();
    for_each_index(outer, |idx| {
        if result.is_err() {
            return;
        }
        let (mut src, mut dst) = (0u64, 0u64);
        for d in 0..rank {
            let i = if d + 1 == rank { 0 } else { idx[d] };
            src += (ov.in_chunk[d] + i) * cs[d];
            dst += (ov.in_box[d] + i) * bs[d];
        }
        let (src, dst) = (src * elem as u64, dst as usize * elem);
        let skip = src - pos;
        let r = std::io::copy(&mut (&mut reader).take(skip), &mut sink)
            .map_err(|e| format!("decoding: {e}"))
            .and_then(|k| if k == skip { Ok(()) } else { Err("chunk decodes to fewer bytes than its shape needs".into()) })
            .and_then(|_| reader.read_exact(&mut out[dst..dst + run]).map_err(|e| format!("decoding: {e}")));
        if let Err(e) = r {
            result = Err(e);
            return;
        }
        to_native(dtype, codec.endian, &mut out[dst..dst + run]);
        pos = src + run as u64;
    });
    result
}
