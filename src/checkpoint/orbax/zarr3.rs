//! The zarr v3 codec pipeline: array->array (`transpose`), one array->bytes (`bytes`, `sharding_indexed`),
//! then bytes->bytes (`zstd`, `gzip`, `crc32c`). Decoding runs the chain backwards; a `sharding_indexed`
//! shard holds an index of (offset, nbytes) pairs and recurses into its inner chain per inner chunk.

use serde_json::{json, Value};

use super::codec::{crc32c, strip_crc32c, Compression};
use super::dtype::{to_native, Endian, ZarrDType};
use super::zarr::{copy_block, for_each_index, transpose, ArrayCtx};
use super::Result;

#[derive(Clone, Debug)]
pub enum BytesCodec {
    Compress(Compression),
    Crc32c,
}

#[derive(Clone, Debug)]
pub enum ArrayToBytes {
    Bytes(Endian),
    Sharding(Box<Sharding>),
}

#[derive(Clone, Debug)]
pub struct Sharding {
    pub chunk_shape: Vec<u64>,
    pub codecs: CodecChain,
    pub index_codecs: CodecChain,
    pub index_at_start: bool,
}

#[derive(Clone, Debug)]
pub struct CodecChain {
    /// `transpose` orders, applied in this order when encoding.
    pub transposes: Vec<Vec<usize>>,
    pub array_to_bytes: ArrayToBytes,
    pub bytes_codecs: Vec<BytesCodec>,
}

impl CodecChain {
    pub fn parse(v: &Value, ctx: &ArrayCtx) -> Result<CodecChain> {
        let list = v.as_array().ok_or_else(|| ctx.err("codecs is not a list"))?;
        let mut transposes = Vec::new();
        let mut array_to_bytes = None;
        let mut bytes_codecs = Vec::new();
        for c in list {
            let name =
                c.get("name").and_then(Value::as_str).ok_or_else(|| ctx.err(format!("codec {c} has no name")))?;
            let cfg = c.get("configuration").cloned().unwrap_or(json!({}));
            let misplaced = || ctx.err(format!("codec {name} is out of order in the codec list"));
            match name {
                "transpose" => {
                    if array_to_bytes.is_some() {
                        return Err(misplaced());
                    }
                    let order = cfg
                        .get("order")
                        .and_then(Value::as_array)
                        .and_then(|o| o.iter().map(|x| x.as_u64().map(|x| x as usize)).collect::<Option<Vec<_>>>())
                        .ok_or_else(|| ctx.unsupported_codec(format!("transpose {cfg}")))?;
                    transposes.push(order);
                }
                "bytes" | "sharding_indexed" => {
                    if array_to_bytes.is_some() {
                        return Err(misplaced());
                    }
                    array_to_bytes = Some(if name == "bytes" {
                        ArrayToBytes::Bytes(match cfg.get("endian").and_then(Value::as_str) {
                            None | Some("little") => Endian::Little,
                            Some("big") => Endian::Big,
                            Some(e) => return Err(ctx.err(format!("bytes codec endian {e:?}"))),
                        })
                    } else {
                        let chunk_shape = cfg
                            .get("chunk_shape")
                            .and_then(Value::as_array)
                            .and_then(|s| s.iter().map(Value::as_u64).collect::<Option<Vec<_>>>())
                            .ok_or_else(|| ctx.err("sharding_indexed has no chunk_shape"))?;
                        let default_index =
                            json!([{"name": "bytes", "configuration": {"endian": "little"}}, {"name": "crc32c"}]);
                        let sharding = Sharding {
                            chunk_shape,
                            codecs: CodecChain::parse(cfg.get("codecs").unwrap_or(&json!([])), ctx)?,
                            index_codecs: CodecChain::parse(cfg.get("index_codecs").unwrap_or(&default_index), ctx)?,
                            index_at_start: match cfg.get("index_location").and_then(Value::as_str) {
                                None | Some("end") => false,
                                Some("start") => true,
                                Some(l) => return Err(ctx.err(format!("index_location {l:?}"))),
                            },
                        };
                        if sharding.index_codecs.fixed_overhead().is_none()
                            || !sharding.index_codecs.transposes.is_empty()
                        {
                            return Err(ctx.unsupported_codec("sharding index codecs other than bytes + crc32c"));
                        }
                        ArrayToBytes::Sharding(Box::new(sharding))
                    });
                }
                "zstd" | "gzip" => {
                    if array_to_bytes.is_none() {
                        return Err(misplaced());
                    }
                    let level = cfg.get("level").and_then(Value::as_i64);
                    bytes_codecs.push(BytesCodec::Compress(if name == "zstd" {
                        Compression::Zstd { level: level.unwrap_or(3) as i32 }
                    } else {
                        Compression::Gzip { level: level.unwrap_or(6) as u32 }
                    }));
                }
                "crc32c" => {
                    if array_to_bytes.is_none() {
                        return Err(misplaced());
                    }
                    bytes_codecs.push(BytesCodec::Crc32c);
                }
                other => return Err(ctx.unsupported_codec(other)),
            }
        }
        let array_to_bytes = array_to_bytes.ok_or_else(|| ctx.err("codecs has no bytes or sharding_indexed codec"))?;
        Ok(CodecChain { transposes, array_to_bytes, bytes_codecs })
    }

    /// Bytes the chain adds to raw array bytes, if that is fixed (no compression, no sharding).
    pub(super) fn fixed_overhead(&self) -> Option<usize> {
        if !matches!(self.array_to_bytes, ArrayToBytes::Bytes(_)) {
            return None;
        }
        self.bytes_codecs.iter().map(|c| matches!(c, BytesCodec::Crc32c).then_some(4)).sum()
    }

    /// The shape the array->bytes codec sees, after the transposes.
    fn inner_shape(&self, shape: &[u64]) -> Vec<u64> {
        let mut s = shape.to_vec();
        for order in &self.transposes {
            s = order.iter().map(|o| s[*o]).collect();
        }
        s
    }

    /// Rejects chains that cannot apply to chunks of `shape`.
    pub fn check_shape(&self, shape: &[u64], ctx: &ArrayCtx) -> Result<()> {
        let mut s = shape.to_vec();
        for order in &self.transposes {
            let mut sorted = order.clone();
            sorted.sort_unstable();
            if sorted != (0..s.len()).collect::<Vec<_>>() {
                return Err(ctx.err(format!("transpose order {order:?} does not fit rank {}", s.len())));
            }
            s = order.iter().map(|o| s[*o]).collect();
        }
        if let ArrayToBytes::Sharding(sh) = &self.array_to_bytes {
            if sh.chunk_shape.len() != s.len() || sh.chunk_shape.iter().zip(&s).any(|(i, o)| *i == 0 || o % i != 0) {
                return Err(
                    ctx.err(format!("inner chunk shape {:?} does not divide the shard shape {s:?}", sh.chunk_shape))
                );
            }
            sh.codecs.check_shape(&sh.chunk_shape, ctx)?;
        }
        Ok(())
    }

    /// Decodes one encoded chunk of `shape` into native C-order bytes.
    pub fn decode(
        &self,
        raw: &[u8],
        shape: &[u64],
        dtype: ZarrDType,
        fill: &[u8],
        ctx: &ArrayCtx,
    ) -> Result<Vec<u8>, String> {
        let mut buf = std::borrow::Cow::Borrowed(raw);
        for c in self.bytes_codecs.iter().rev() {
            buf = match c {
                BytesCodec::Compress(comp) => comp.decode(&buf)?.into(),
                BytesCodec::Crc32c => strip_crc32c(&buf)?.to_vec().into(),
            };
        }
        let inner = self.inner_shape(shape);
        let elem = dtype.size();
        let mut data = match &self.array_to_bytes {
            ArrayToBytes::Bytes(endian) => {
                let want = inner.iter().product::<u64>() as usize * elem;
                if buf.len() != want {
                    return Err(format!(
                        "decodes to {} bytes, but a {inner:?} chunk of {dtype} takes {want}",
                        buf.len()
                    ));
                }
                let mut data = buf.into_owned();
                to_native(dtype, *endian, &mut data);
                data
            }
            ArrayToBytes::Sharding(sh) => sh.decode(&buf, &inner, dtype, fill, ctx)?,
        };
        // Undo the transposes, last first: encoding with order o put axis o[i] at i.
        let mut cur = inner;
        for order in self.transposes.iter().rev() {
            let mut inv = vec![0usize; order.len()];
            for (i, o) in order.iter().enumerate() {
                inv[*o] = i;
            }
            data = transpose(&data, &cur, &inv, elem);
            cur = inv.iter().map(|i| cur[*i]).collect();
        }
        Ok(data)
    }
}

impl Sharding {
    fn decode(
        &self,
        buf: &[u8],
        shard_shape: &[u64],
        dtype: ZarrDType,
        fill: &[u8],
        ctx: &ArrayCtx,
    ) -> Result<Vec<u8>, String> {
        let grid: Vec<u64> = shard_shape.iter().zip(&self.chunk_shape).map(|(s, c)| s / c).collect();
        let n = grid.iter().product::<u64>() as usize;
        let index_len = 16 * n + self.index_codecs.fixed_overhead().unwrap_or(0);
        if buf.len() < index_len {
            return Err(format!("shard of {} bytes is too short for its {index_len}-byte index", buf.len()));
        }
        let index_raw = if self.index_at_start { &buf[..index_len] } else { &buf[buf.len() - index_len..] };
        let mut index_shape = grid.clone();
        index_shape.push(2);
        let index = self
            .index_codecs
            .decode(index_raw, &index_shape, ZarrDType::U64, &[0; 8], ctx)
            .map_err(|e| format!("shard index: {e}"))?;
        let elem = dtype.size();
        let total = shard_shape.iter().product::<u64>() as usize;
        let mut out = fill.repeat(total);
        let mut flat = 0usize;
        let mut result = Ok(());
        for_each_index(&grid, |g| {
            if result.is_err() {
                return;
            }
            let off = u64::from_le_bytes(index[flat * 16..flat * 16 + 8].try_into().unwrap());
            let len = u64::from_le_bytes(index[flat * 16 + 8..flat * 16 + 16].try_into().unwrap());
            flat += 1;
            if off == u64::MAX && len == u64::MAX {
                return; // missing inner chunk: fill value
            }
            let Some(piece) =
                off.checked_add(len).filter(|e| *e <= buf.len() as u64).map(|e| &buf[off as usize..e as usize])
            else {
                result = Err(format!("shard index points at bytes [{off}, {off}+{len}) of a {}-byte shard", buf.len()));
                return;
            };
            match self.codecs.decode(piece, &self.chunk_shape, dtype, fill, ctx) {
                Err(e) => result = Err(format!("inner chunk {g:?}: {e}")),
                Ok(block) => {
                    let origin: Vec<u64> = g.iter().zip(&self.chunk_shape).map(|(i, c)| i * c).collect();
                    copy_block(&mut out, shard_shape, &block, &self.chunk_shape, &origin, &self.chunk_shape, elem);
                }
            }
        });
        result.map(|_| out)
    }
}

/// orbax's zarr3 codecs: `sharding_indexed` with one inner chunk per shard, inner `bytes` (LE) + `zstd`
/// (level 3, no checksum), index `bytes` (LE) + `crc32c`. Returns the `codecs` JSON.
pub fn orbax_codecs_json(chunk_shape: &[u64], zstd_level: i32) -> Value {
    json!([{
        "configuration": {
            "chunk_shape": chunk_shape,
            "codecs": [
                {"configuration": {"endian": "little"}, "name": "bytes"},
                {"configuration": {"checksum": false, "level": zstd_level}, "name": "zstd"}
            ],
            "index_codecs": [
                {"configuration": {"endian": "little"}, "name": "bytes"},
                {"name": "crc32c"}
            ]
        },
        "name": "sharding_indexed"
    }])
}

/// Encodes one chunk (native LE bytes) as an orbax shard: zstd frame, then the index (offset 0, nbytes)
/// and its crc32c.
pub fn encode_orbax_shard(raw: &[u8], zstd_level: i32) -> Vec<u8> {
    let mut out = Compression::Zstd { level: zstd_level }.encode(raw);
    let mut index = Vec::with_capacity(16);
    index.extend(0u64.to_le_bytes());
    index.extend((out.len() as u64).to_le_bytes());
    let crc = crc32c(&index);
    out.extend(index);
    out.extend(crc.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ArrayCtx {
        ArrayCtx { dir: crate::storage::Location::Local("/x".into()), array: "a".into() }
    }

    #[test]
    fn orbax_shard_round_trips() {
        let raw: Vec<u8> = (0..48u8).collect();
        let chain = CodecChain::parse(&orbax_codecs_json(&[3, 4], 3), &ctx()).unwrap();
        let enc = encode_orbax_shard(&raw, 3);
        assert_eq!(chain.decode(&enc, &[3, 4], ZarrDType::F32, &[0; 4], &ctx()).unwrap(), raw);
        let mut bad = enc.clone();
        let n = bad.len();
        bad[n - 10] ^= 1; // inside the index
        assert!(chain.decode(&bad, &[3, 4], ZarrDType::F32, &[0; 4], &ctx()).unwrap_err().contains("crc32c"));
    }

    #[test]
    fn transpose_codec_is_undone() {
        // Array [[0,1,2],[3,4,5]] (u8) encoded with transpose order [1,0] is stored as 0,3,1,4,2,5.
        let chain = CodecChain::parse(
            &json!([{"name": "transpose", "configuration": {"order": [1, 0]}}, {"name": "bytes"}]),
            &ctx(),
        )
        .unwrap();
        let out = chain.decode(&[0, 3, 1, 4, 2, 5], &[2, 3], ZarrDType::U8, &[0], &ctx()).unwrap();
        assert_eq!(out, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn unknown_codec_is_named() {
        let e = CodecChain::parse(&json!([{"name": "bytes"}, {"name": "blosc"}]), &ctx()).unwrap_err();
        assert!(e.to_string().contains("blosc"), "{e}");
    }
}
