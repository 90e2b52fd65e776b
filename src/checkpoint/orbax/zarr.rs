//! zarr arrays (v2 `.zarray` and v3 `zarr.json`) inside a key-value store: metadata, chunk keys, and the
//! assembly of decoded chunks into the whole C-order array (edge chunks are stored padded and cropped here).
//!
//! zarr's metadata is simple JSON that no maintained Rust crate reads in both versions with tensorstore's
//! extensions (bfloat16, float8, int4), so it is parsed here with serde_json. The v3 codec pipeline lives in
//! [`super::zarr3`].

use crate::storage::Location;

use serde_json::Value;

use super::codec::Compression;
use super::dtype::{to_native, Endian, ZarrDType};
use super::kvstore::KvStore;
use super::zarr3::CodecChain;
use super::{OrbaxError, Result};

/// Names the array in every error.
#[derive(Clone, Debug)]
pub struct ArrayCtx {
    pub dir: Location,
    pub array: String,
}

impl ArrayCtx {
    pub fn err(&self, reason: impl Into<String>) -> OrbaxError {
        OrbaxError::Array { dir: self.dir.clone(), array: self.array.clone(), reason: reason.into() }
    }

    pub fn unsupported_codec(&self, codec: impl Into<String>) -> OrbaxError {
        OrbaxError::UnsupportedCodec { dir: self.dir.clone(), array: self.array.clone(), codec: codec.into() }
    }
}

/// How chunks are encoded and named.
#[derive(Clone, Debug)]
pub enum ChunkEncoding {
    V2 { compressor: Option<Compression>, endian: Endian, fortran_order: bool, separator: String },
    V3 { codecs: CodecChain, default_keys: bool, separator: String },
}

/// One array's metadata, in either zarr version.
#[derive(Clone, Debug)]
pub struct ArrayMeta {
    pub shape: Vec<u64>,
    pub chunks: Vec<u64>,
    pub dtype: ZarrDType,
    /// One element of the fill value, native (little-endian) bytes.
    pub fill: Vec<u8>,
    pub encoding: ChunkEncoding,
}

/// The metadata key of `name` in the given zarr version.
pub fn metadata_key(name: &str, zarr3: bool) -> String {
    format!("{name}/{}", if zarr3 { "zarr.json" } else { ".zarray" })
}

fn u64_list(v: Option<&Value>, what: &str) -> Result<Vec<u64>, String> {
    let arr = v.and_then(Value::as_array).ok_or_else(|| format!("`{what}` is missing or not a list"))?;
    arr.iter().map(|x| x.as_u64().ok_or_else(|| format!("`{what}` holds {x}, not a size"))).collect()
}

impl ArrayMeta {
    /// Reads the metadata of array `name` from the store.
    pub fn load(store: &KvStore, ctx: &ArrayCtx, zarr3: bool) -> Result<ArrayMeta> {
        let key = metadata_key(&ctx.array, zarr3);
        let raw = store
            .get(&key)
            .map_err(|e| ctx.err(format!("reading {key}: {e}")))?
            .ok_or_else(|| ctx.err(format!("{key} is not in {}; the checkpoint is incomplete", store.describe())))?;
        let json: Value = serde_json::from_slice(&raw).map_err(|e| ctx.err(format!("{key} is not JSON: {e}")))?;
        if zarr3 { ArrayMeta::parse_v3(&json, ctx) } else { ArrayMeta::parse_v2(&json, ctx) }.map_err(|e| match e {
            OrbaxError::Array { dir, array, reason } => {
                OrbaxError::Array { dir, array, reason: format!("{key}: {reason}") }
            }
            other => other,
        })
    }

    pub fn parse_v2(j: &Value, ctx: &ArrayCtx) -> Result<ArrayMeta> {
        if j.get("zarr_format").and_then(Value::as_u64) != Some(2) {
            return Err(ctx.err("zarr_format is not 2"));
        }
        let shape = u64_list(j.get("shape"), "shape").map_err(|e| ctx.err(e))?;
        let chunks = u64_list(j.get("chunks"), "chunks").map_err(|e| ctx.err(e))?;
        let dtype_s = j.get("dtype").and_then(Value::as_str).ok_or_else(|| ctx.err("dtype is missing"))?;
        let (dtype, endian) = ZarrDType::from_zarr2(dtype_s).ok_or_else(|| OrbaxError::UnsupportedDType {
            dir: ctx.dir.clone(),
            array: ctx.array.clone(),
            dtype: dtype_s.to_string(),
        })?;
        let compressor = match j.get("compressor") {
            None | Some(Value::Null) => None,
            Some(c) => Some(parse_v2_compressor(c, ctx)?),
        };
        if !matches!(j.get("filters"), None | Some(Value::Null)) && j["filters"] != Value::Array(vec![]) {
            return Err(ctx.unsupported_codec(format!("zarr v2 filters {}", j["filters"])));
        }
        let fortran_order = match j.get("order").and_then(Value::as_str).unwrap_or("C") {
            "C" => false,
            "F" => true,
            o => return Err(ctx.err(format!("order {o:?} is neither C nor F"))),
        };
        let separator = j.get("dimension_separator").and_then(Value::as_str).unwrap_or(".").to_string();
        let fill = fill_bytes(dtype, j.get("fill_value").unwrap_or(&Value::Null)).map_err(|e| ctx.err(e))?;
        let meta = ArrayMeta {
            shape,
            chunks,
            dtype,
            fill,
            encoding: ChunkEncoding::V2 { compressor, endian, fortran_order, separator },
        };
        meta.check(ctx)?;
        Ok(meta)
    }

    pub fn parse_v3(j: &Value, ctx: &ArrayCtx) -> Result<ArrayMeta> {
        if j.get("zarr_format").and_then(Value::as_u64) != Some(3) {
            return Err(ctx.err("zarr_format is not 3"));
        }
        if j.get("node_type").and_then(Value::as_str) != Some("array") {
            return Err(ctx.err("node_type is not \"array\""));
        }
        let shape = u64_list(j.get("shape"), "shape").map_err(|e| ctx.err(e))?;
        let grid = j.get("chunk_grid").ok_or_else(|| ctx.err("chunk_grid is missing"))?;
        if grid.get("name").and_then(Value::as_str) != Some("regular") {
            return Err(ctx.unsupported_codec(format!("chunk grid {}", grid.get("name").unwrap_or(&Value::Null))));
        }
        let chunks = u64_list(grid.pointer("/configuration/chunk_shape"), "chunk_shape").map_err(|e| ctx.err(e))?;
        let dtype_s = j.get("data_type").and_then(Value::as_str).ok_or_else(|| ctx.err("data_type is missing"))?;
        let dtype = ZarrDType::from_zarr3(dtype_s).ok_or_else(|| OrbaxError::UnsupportedDType {
            dir: ctx.dir.clone(),
            array: ctx.array.clone(),
            dtype: dtype_s.to_string(),
        })?;
        let cke = j.get("chunk_key_encoding");
        let (default_keys, separator) = match cke.and_then(|c| c.get("name")).and_then(Value::as_str) {
            None | Some("default") => (true, "/"),
            Some("v2") => (false, "."),
            Some(other) => return Err(ctx.unsupported_codec(format!("chunk key encoding {other}"))),
        };
        let separator = cke
            .and_then(|c| c.pointer("/configuration/separator"))
            .and_then(Value::as_str)
            .unwrap_or(separator)
            .to_string();
        let codecs = CodecChain::parse(j.get("codecs").ok_or_else(|| ctx.err("codecs is missing"))?, ctx)?;
        let fill = fill_bytes(dtype, j.get("fill_value").unwrap_or(&Value::Null)).map_err(|e| ctx.err(e))?;
        let meta =
            ArrayMeta { shape, chunks, dtype, fill, encoding: ChunkEncoding::V3 { codecs, default_keys, separator } };
        meta.check(ctx)?;
        Ok(meta)
    }

    fn check(&self, ctx: &ArrayCtx) -> Result<()> {
        if self.shape.len() != self.chunks.len() {
            return Err(ctx.err(format!("shape {:?} and chunks {:?} differ in rank", self.shape, self.chunks)));
        }
        if self.chunks.contains(&0) {
            return Err(ctx.err(format!("chunk shape {:?} has a zero dimension", self.chunks)));
        }
        if let ChunkEncoding::V3 { codecs, .. } = &self.encoding {
            codecs.check_shape(&self.chunks, ctx)?;
        }
        Ok(())
    }

    /// The key of chunk `idx` (grid indices) relative to the array's prefix.
    pub fn chunk_key(&self, idx: &[u64]) -> String {
        let joined = |sep: &str| idx.iter().map(u64::to_string).collect::<Vec<_>>().join(sep);
        match &self.encoding {
            ChunkEncoding::V3 { default_keys: true, separator, .. } => std::iter::once("c".to_string())
                .chain(idx.iter().map(u64::to_string))
                .collect::<Vec<_>>()
                .join(separator),
            ChunkEncoding::V2 { separator, .. } | ChunkEncoding::V3 { separator, .. } => {
                if idx.is_empty() {
                    "0".into()
                } else {
                    joined(separator)
                }
            }
        }
    }

    /// Decodes one stored chunk into native bytes of the full (padded) chunk shape, C order.
    pub fn decode_chunk(&self, raw: &[u8], ctx: &ArrayCtx) -> Result<Vec<u8>, String> {
        let elem = self.dtype.size();
        let n: u64 = self.chunks.iter().product();
        match &self.encoding {
            ChunkEncoding::V2 { compressor, endian, fortran_order, .. } => {
                let mut data = match compressor {
                    None => raw.to_vec(),
                    Some(c) => c.decode(raw)?,
                };
                if data.len() as u64 != n * elem as u64 {
                    return Err(format!(
                        "decodes to {} bytes, but a {:?} chunk of {} takes {}",
                        data.len(),
                        self.chunks,
                        self.dtype,
                        n * elem as u64
                    ));
                }
                to_native(self.dtype, *endian, &mut data);
                if *fortran_order && self.chunks.len() > 1 {
                    let rev: Vec<u64> = self.chunks.iter().rev().copied().collect();
                    let perm: Vec<usize> = (0..rev.len()).rev().collect();
                    data = transpose(&data, &rev, &perm, elem);
                }
                Ok(data)
            }
            ChunkEncoding::V3 { codecs, .. } => codecs.decode(raw, &self.chunks, self.dtype, &self.fill, ctx),
        }
    }
}

fn parse_v2_compressor(c: &Value, ctx: &ArrayCtx) -> Result<Compression> {
    let id = c.get("id").and_then(Value::as_str).unwrap_or("?");
    let level = c.get("level").and_then(Value::as_i64);
    Ok(match id {
        "zstd" => Compression::Zstd { level: level.unwrap_or(1) as i32 },
        "gzip" => Compression::Gzip { level: level.unwrap_or(1) as u32 },
        "zlib" => Compression::Zlib { level: level.unwrap_or(1) as u32 },
        "bz2" => Compression::Bz2 { level: level.unwrap_or(1) as u32 },
        other => return Err(ctx.unsupported_codec(format!("zarr v2 compressor {other} ({c})"))),
    })
}

/// One element of a fill value as native bytes. `null` means zero, as in tensorstore.
pub fn fill_bytes(dtype: ZarrDType, v: &Value) -> Result<Vec<u8>, String> {
    use ZarrDType::*;
    let size = dtype.size();
    if v.is_null() {
        return Ok(vec![0; size]);
    }
    if let Some(hex) = v.as_str().and_then(|s| s.strip_prefix("0x")) {
        let bits = u64::from_str_radix(hex, 16).map_err(|_| format!("fill_value {v} is not hex"))?;
        let mut b = bits.to_be_bytes()[8 - size.min(8)..].to_vec();
        b.reverse();
        return Ok(b);
    }
    if let (C64 | C128, Some(pair)) = (dtype, v.as_array()) {
        let part = if dtype == C64 { F32 } else { F64 };
        let mut out = Vec::new();
        for p in pair {
            out.extend(fill_bytes(part, p)?);
        }
        return if out.len() == size { Ok(out) } else { Err(format!("complex fill_value {v} needs 2 parts")) };
    }
    let f = match v {
        Value::Bool(b) => *b as u8 as f64,
        Value::Number(n) => n.as_f64().unwrap_or(0.0),
        Value::String(s) => match s.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            _ => return Err(format!("fill_value {v} is not understood")),
        },
        _ => return Err(format!("fill_value {v} is not understood")),
    };
    if let (false, Some(i)) = (dtype.is_float(), v.as_i64()) {
        return Ok(i.to_le_bytes()[..size.min(8)].to_vec());
    }
    if let (U64, Some(u)) = (dtype, v.as_u64()) {
        return Ok(u.to_le_bytes().to_vec());
    }
    Ok(match dtype {
        Bool | I8 | U8 | Int4 => vec![f as i64 as u8],
        I16 | U16 => (f as i64 as u16).to_le_bytes().to_vec(),
        I32 | U32 => (f as i64 as u32).to_le_bytes().to_vec(),
        I64 | U64 => (f as i64).to_le_bytes().to_vec(),
        F16 => half::f16::from_f64(f).to_le_bytes().to_vec(),
        BF16 => half::bf16::from_f64(f).to_le_bytes().to_vec(),
        F32 => (f as f32).to_le_bytes().to_vec(),
        F64 => f.to_le_bytes().to_vec(),
        F8E4M3FN | F8E5M2 if f == 0.0 => vec![0],
        F8E4M3FN | F8E5M2 | C64 | C128 => return Err(format!("fill_value {v} for {dtype} is not supported")),
    })
}

/// `out` with axis `i` = axis `perm[i]` of `data` (shape `shape`).
pub fn transpose(data: &[u8], shape: &[u64], perm: &[usize], elem: usize) -> Vec<u8> {
    let rank = shape.len();
    let mut in_strides = vec![1u64; rank];
    for i in (0..rank.saturating_sub(1)).rev() {
        in_strides[i] = in_strides[i + 1] * shape[i + 1];
    }
    let out_shape: Vec<u64> = perm.iter().map(|p| shape[*p]).collect();
    let strides: Vec<u64> = perm.iter().map(|p| in_strides[*p]).collect();
    let mut out = Vec::with_capacity(data.len());
    for_each_index(&out_shape, |idx| {
        let src = idx.iter().zip(&strides).map(|(i, s)| i * s).sum::<u64>() as usize * elem;
        out.extend_from_slice(&data[src..src + elem]);
    });
    out
}

/// Calls `f` for every index of `shape` in C order (once, with `[]`, for rank 0; never if a dim is 0).
pub fn for_each_index(shape: &[u64], mut f: impl FnMut(&[u64])) {
    if shape.contains(&0) {
        return;
    }
    let mut idx = vec![0u64; shape.len()];
    loop {
        f(&idx);
        let mut d = shape.len();
        loop {
            if d == 0 {
                return;
            }
            d -= 1;
            idx[d] += 1;
            if idx[d] < shape[d] {
                break;
            }
            idx[d] = 0;
        }
    }
}

/// Copies the `extent`-sized corner of `src` (shape `src_shape`) into `dst` (shape `dst_shape`) at `origin`.
pub fn copy_block(
    dst: &mut [u8],
    dst_shape: &[u64],
    src: &[u8],
    src_shape: &[u64],
    origin: &[u64],
    extent: &[u64],
    elem: usize,
) {
    let rank = dst_shape.len();
    if rank == 0 {
        dst[..elem].copy_from_slice(&src[..elem]);
        return;
    }
    let strides = |shape: &[u64]| {
        let mut s = vec![1u64; rank];
        for i in (0..rank - 1).rev() {
            s[i] = s[i + 1] * shape[i + 1];
        }
        s
    };
    let (ds, ss) = (strides(dst_shape), strides(src_shape));
    let run = extent[rank - 1] as usize * elem;
    for_each_index(&extent[..rank - 1], |idx| {
        let mut d = origin[rank - 1];
        let mut s = 0;
        for i in 0..rank - 1 {
            d += (origin[i] + idx[i]) * ds[i];
            s += idx[i] * ss[i];
        }
        let (d, s) = (d as usize * elem, s as usize * elem);
        dst[d..d + run].copy_from_slice(&src[s..s + run]);
    });
}

/// Reads the whole array: every chunk, cropped to the array's shape, missing chunks as the fill value
/// unless `strict` (orbax's `store_array_data_equal_to_fill_value`), where a missing chunk is an error.
pub fn read_array(store: &KvStore, meta: &ArrayMeta, ctx: &ArrayCtx, strict: bool) -> Result<Vec<u8>> {
    let elem = meta.dtype.size();
    let total = meta.shape.iter().product::<u64>() as usize * elem;
    let grid: Vec<u64> = meta.shape.iter().zip(&meta.chunks).map(|(s, c)| s.div_ceil(*c)).collect();
    let get = |idx: &[u64]| -> Result<Option<Vec<u8>>> {
        let key = format!("{}/{}", ctx.array, meta.chunk_key(idx));
        let raw = store.get(&key).map_err(|e| ctx.err(format!("chunk {key}: {e}")))?;
        match raw {
            None if strict => Err(OrbaxError::MissingChunk { dir: ctx.dir.clone(), array: ctx.array.clone(), key }),
            None => Ok(None),
            Some(raw) => meta.decode_chunk(&raw, ctx).map(Some).map_err(|e| {
                ctx.err(format!(
                    "chunk {key}: {e}; the stored data are damaged (copy the checkpoint again or use another step)"
                ))
            }),
        }
    };
    // One chunk covering the whole array (orbax's default): its decoded bytes are the array.
    if meta.chunks == meta.shape {
        return Ok(match get(&vec![0; meta.shape.len()])? {
            Some(data) => data,
            None => meta.fill.repeat(total / elem),
        });
    }
    let mut out = meta.fill.repeat(total / elem.max(1));
    let mut result = Ok(());
    for_each_index(&grid, |g| {
        if result.is_err() {
            return;
        }
        match get(g) {
            Err(e) => result = Err(e),
            Ok(None) => {}
            Ok(Some(block)) => {
                let origin: Vec<u64> = g.iter().zip(&meta.chunks).map(|(i, c)| i * c).collect();
                let extent: Vec<u64> =
                    origin.iter().zip(&meta.chunks).zip(&meta.shape).map(|((o, c), s)| (*c).min(s - o)).collect();
                copy_block(&mut out, &meta.shape, &block, &meta.chunks, &origin, &extent, elem);
            }
        }
    });
    result.map(|_| out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_block_crops_padded_edges() {
        // 3x5 array from 2x3 chunks: chunk (1,1) holds rows 2..3, cols 3..5 of a padded 2x3 block.
        let mut dst = vec![0u8; 15];
        let src = [1, 2, 9, 3, 4, 9];
        copy_block(&mut dst, &[3, 5], &src, &[2, 3], &[2, 3], &[1, 2], 1);
        assert_eq!(dst, [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn transpose_reverses_fortran_order() {
        // F-order 2x3 [[0,1,2],[3,4,5]] is stored 0,3,1,4,2,5.
        let out = transpose(&[0, 3, 1, 4, 2, 5], &[3, 2], &[1, 0], 1);
        assert_eq!(out, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn fill_values() {
        assert_eq!(fill_bytes(ZarrDType::F32, &serde_json::json!(0.0)).unwrap(), vec![0; 4]);
        assert_eq!(fill_bytes(ZarrDType::BF16, &serde_json::json!(1.0)).unwrap(), vec![0x80, 0x3f]);
        assert_eq!(fill_bytes(ZarrDType::I32, &serde_json::json!(-1)).unwrap(), vec![0xff; 4]);
        assert_eq!(fill_bytes(ZarrDType::F32, &serde_json::json!("NaN")).unwrap(), f32::NAN.to_le_bytes());
        assert_eq!(fill_bytes(ZarrDType::U16, &serde_json::json!("0x0102")).unwrap(), vec![2, 1]);
        assert_eq!(fill_bytes(ZarrDType::C64, &serde_json::json!([0.0, 0.0])).unwrap(), vec![0; 8]);
        assert_eq!(fill_bytes(ZarrDType::Bool, &serde_json::json!(false)).unwrap(), vec![0]);
    }
}
