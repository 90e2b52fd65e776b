//! Safetensors files, memory-mapped: a single `model.safetensors`, or shards listed by
//! `model.safetensors.index.json` (`{"weight_map": {tensor: shard file}}`). Only headers are parsed on
//! open; a tensor's bytes are touched when it is read, one tensor at a time.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use safetensors::tensor::{Dtype, Metadata, SafeTensors, View};

use super::convert::convert_bytes;
use super::{HfError, Result};
use crate::ir::DType;
use crate::runtime::HostTensor;

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// Header information of one tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorMeta {
    /// The file's element type, as safetensors spells it (`F32`, `BF16`, ...).
    pub file_dtype: String,
    pub shape: Vec<i64>,
    /// The shard file name (relative to the checkpoint directory).
    pub shard: String,
}

struct Shard {
    name: String,
    mmap: Mmap,
    /// Offset of the data section (8-byte length + header).
    data_start: usize,
    metadata: Metadata,
}

struct Entry {
    shard: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Byte range inside the shard's data section.
    start: usize,
    end: usize,
}

/// An opened HF checkpoint directory.
pub struct HfCheckpoint {
    dir: PathBuf,
    shards: Vec<Shard>,
    tensors: BTreeMap<String, Entry>,
}

impl HfCheckpoint {
    /// Opens `dir`: memory-maps every shard and parses the headers (no tensor data is read).
    pub fn open(dir: &Path) -> Result<HfCheckpoint> {
        if !dir.is_dir() {
            return Err(HfError::DirNotFound { dir: dir.to_path_buf() });
        }
        let index_path = dir.join(INDEX_FILE);
        let single = dir.join(SINGLE_FILE);
        let mut ckpt = HfCheckpoint { dir: dir.to_path_buf(), shards: Vec::new(), tensors: BTreeMap::new() };
        if index_path.is_file() {
            let weight_map = read_index(&index_path)?;
            // Shard files in first-seen order, with the tensors the index puts in each.
            let mut order: Vec<String> = Vec::new();
            let mut by_shard: HashMap<String, Vec<String>> = HashMap::new();
            for (tensor, shard) in &weight_map {
                by_shard.entry(shard.clone()).or_insert_with(|| {
                    order.push(shard.clone());
                    Vec::new()
                });
                by_shard.get_mut(shard).unwrap().push(tensor.clone());
            }
            for shard in &order {
                let names = &by_shard[shard];
                if !dir.join(shard).is_file() {
                    return Err(HfError::MissingShard {
                        shard: shard.clone(),
                        index: index_path.clone(),
                        tensor: names[0].clone(),
                        more: names.len() - 1,
                    });
                }
            }
            for shard in &order {
                let s = ckpt.add_shard(shard)?;
                for tensor in &by_shard[shard] {
                    let meta = &ckpt.shards[s].metadata;
                    let Some(info) = meta.info(tensor) else {
                        return Err(HfError::TensorNotInShard { tensor: tensor.clone(), shard: shard.clone() });
                    };
                    let entry = Entry {
                        shard: s,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start: info.data_offsets.0,
                        end: info.data_offsets.1,
                    };
                    ckpt.tensors.insert(tensor.clone(), entry);
                }
            }
        } else if single.is_file() {
            let s = ckpt.add_shard(SINGLE_FILE)?;
            let entries: Vec<(String, Entry)> = ckpt.shards[s]
                .metadata
                .tensors()
                .into_iter()
                .map(|(name, info)| {
                    let e = Entry {
                        shard: s,
                        dtype: info.dtype,
                        shape: info.shape.clone(),
                        start: info.data_offsets.0,
                        end: info.data_offsets.1,
                    };
                    (name, e)
                })
                .collect();
            ckpt.tensors.extend(entries);
        } else {
            let mut found: Vec<String> = std::fs::read_dir(dir)
                .map_err(|source| HfError::Io { path: dir.to_path_buf(), source })?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".safetensors"))
                .collect();
            found.sort();
            return Err(HfError::NoWeights { dir: dir.to_path_buf(), found });
        }
        tracing::debug!(dir = %dir.display(), shards = ckpt.shards.len(), tensors = ckpt.tensors.len(), "opened HF checkpoint");
        Ok(ckpt)
    }

    fn add_shard(&mut self, name: &str) -> Result<usize> {
        let path = self.dir.join(name);
        let file = File::open(&path).map_err(|source| HfError::Io { path: path.clone(), source })?;
        let len = file.metadata().map_err(|source| HfError::Io { path: path.clone(), source })?.len();
        let corrupt = |reason: String| HfError::CorruptHeader { file: path.clone(), reason };
        if len < 8 {
            return Err(corrupt(format!("the file is {len} bytes, shorter than the 8-byte header length")));
        }
        // SAFETY: the map is read-only; a checkpoint file changed by another process while it is mapped
        // gives wrong values (as any reader would), never memory unsafety in this process's own data.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|source| HfError::Io { path: path.clone(), source })?;
        let (n, metadata) = SafeTensors::read_metadata(&mmap).map_err(|e| corrupt(e.to_string()))?;
        self.shards.push(Shard { name: name.to_string(), mmap, data_start: 8 + n, metadata });
        Ok(self.shards.len() - 1)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    pub fn meta(&self, name: &str) -> Option<TensorMeta> {
        self.tensors.get(name).map(|e| TensorMeta {
            file_dtype: format!("{:?}", e.dtype),
            shape: e.shape.iter().map(|&d| d as i64).collect(),
            shard: self.shards[e.shard].name.clone(),
        })
    }

    /// The tensor as stored (no conversion); `None` if absent.
    pub fn read(&self, name: &str) -> Result<Option<HostTensor>> {
        let Some(e) = self.tensors.get(name) else { return Ok(None) };
        let dtype = our_dtype(e.dtype).ok_or_else(|| HfError::UnsupportedDtype {
            tensor: name.to_string(),
            dtype: format!("{:?}", e.dtype),
            target: "a host tensor".into(),
        })?;
        let dims: Vec<i64> = e.shape.iter().map(|&d| d as i64).collect();
        let data = self.bytes(e).to_vec();
        self.release(e);
        Ok(Some(HostTensor::from_bytes(dtype, &dims, data)))
    }

    /// The tensor converted to `dtype` (float types only); `None` if absent.
    pub fn read_as(&self, name: &str, dtype: DType) -> Result<Option<HostTensor>> {
        let Some(e) = self.tensors.get(name) else { return Ok(None) };
        let unsupported = || HfError::UnsupportedDtype {
            tensor: name.to_string(),
            dtype: format!("{:?}", e.dtype),
            target: dtype.to_string(),
        };
        let from = our_dtype(e.dtype).ok_or_else(unsupported)?;
        let data = convert_bytes(self.bytes(e), from, dtype).ok_or_else(unsupported)?;
        self.release(e);
        let dims: Vec<i64> = e.shape.iter().map(|&d| d as i64).collect();
        Ok(Some(HostTensor::from_bytes(dtype, &dims, data)))
    }

    /// The box at `offsets` of shape `dims` of a tensor seen with shape `view` (a reshape of its stored
    /// shape), converted to `dtype`: only the box's rows are read from the mapped file (then dropped from
    /// the resident set); `None` if absent.
    pub fn read_region_as(&self, name: &str, view: &[i64], offsets: &[i64], dims: &[i64], dtype: DType) -> Result<Option<Vec<u8>>> {
        let Some(e) = self.tensors.get(name) else { return Ok(None) };
        let unsupported = || HfError::UnsupportedDtype {
            tensor: name.to_string(),
            dtype: format!("{:?}", e.dtype),
            target: dtype.to_string(),
        };
        let from = our_dtype(e.dtype).ok_or_else(unsupported)?;
        let shape: Vec<i64> = e.shape.iter().map(|&d| d as i64).collect();
        assert_eq!(view.iter().product::<i64>(), shape.iter().product::<i64>(), "view {view:?} of {name} {shape:?}");
        let shape = view.to_vec();
        assert!(
            shape.len() == dims.len() && (0..dims.len()).all(|d| offsets[d] + dims[d] <= shape[d]),
            "box {offsets:?}+{dims:?} is outside HF tensor {name} of shape {shape:?}"
        );
        let part = crate::sharding::extract_region(self.bytes(e), &shape, offsets, dims, from.size_bytes());
        self.release(e);
        Ok(Some(convert_bytes(&part, from, dtype).ok_or_else(unsupported)?))
    }

    fn bytes(&self, e: &Entry) -> &[u8] {
        let s = &self.shards[e.shard];
        &s.mmap[s.data_start + e.start..s.data_start + e.end]
    }

    /// Drops a tensor's pages from this process's resident set once it has been copied out, so that
    /// streaming through a checkpoint larger than RAM keeps the RSS at about one tensor (the kernel's page
    /// cache still holds the pages; a later read faults them back in).
    fn release(&self, e: &Entry) {
        let s = &self.shards[e.shard];
        #[cfg(unix)]
        // SAFETY: the map is a read-only shared file mapping: MADV_DONTNEED only unmaps its pages, and the
        // next access reads the same file contents again, so no byte any reference sees can change.
        let _ = unsafe {
            s.mmap.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, s.data_start + e.start, e.end - e.start)
        };
    }
}

fn read_index(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|source| HfError::Io { path: path.to_path_buf(), source })?;
    let bad = |reason: String| HfError::BadIndex { path: path.to_path_buf(), reason };
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
    let map =
        json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no \"weight_map\" object".into()))?;
    map.iter()
        .map(|(tensor, shard)| match shard.as_str() {
            Some(s) if !s.contains("..") && !s.starts_with('/') => Ok((tensor.clone(), s.to_string())),
            _ => Err(bad(format!("weight_map[{tensor:?}] = {shard} is not a shard file name in the directory"))),
        })
        .collect()
}

fn our_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F64 => DType::F64,
        Dtype::F32 => DType::F32,
        Dtype::BF16 => DType::BF16,
        Dtype::F16 => DType::F16,
        Dtype::I64 => DType::S64,
        Dtype::I32 => DType::S32,
        Dtype::I8 => DType::S8,
        Dtype::U64 => DType::U64,
        Dtype::U32 => DType::U32,
        Dtype::U8 => DType::U8,
        Dtype::BOOL => DType::Pred,
        _ => return None,
    })
}

fn file_dtype(d: DType) -> Dtype {
    match d {
        DType::F64 => Dtype::F64,
        DType::F32 => Dtype::F32,
        DType::BF16 => Dtype::BF16,
        DType::F16 => Dtype::F16,
        DType::S64 => Dtype::I64,
        DType::S32 => Dtype::I32,
        DType::S8 => Dtype::I8,
        DType::U64 => Dtype::U64,
        DType::U32 => Dtype::U32,
        DType::U8 => Dtype::U8,
        DType::Pred => Dtype::BOOL,
    }
}

struct HostView<'a> {
    tensor: &'a HostTensor,
    shape: Vec<usize>,
}

impl View for HostView<'_> {
    fn dtype(&self) -> Dtype {
        file_dtype(self.tensor.dtype)
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Borrowed(&self.tensor.data)
    }
    fn data_len(&self) -> usize {
        self.tensor.data.len()
    }
}

/// Writes `tensors` to one safetensors file (HF layout: names as given, row-major little-endian data).
pub fn write_safetensors(path: &Path, tensors: &[(String, HostTensor)]) -> Result<()> {
    let views = tensors
        .iter()
        .map(|(name, t)| (name.as_str(), HostView { tensor: t, shape: t.dims.iter().map(|&d| d as usize).collect() }));
    safetensors::serialize_to_file(views, None, path)
        .map_err(|e| HfError::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_then_read_back() {
        let dir = std::env::temp_dir().join(format!("hf_files_test_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = HostTensor::from_f32(&[1.0, -2.5, 3.25, 4.0, 5.0, 6.0], &[2, 3]);
        let b = HostTensor::from_i32(&[7, 8], &[2]);
        write_safetensors(&dir.join(SINGLE_FILE), &[("a".into(), a.clone()), ("b".into(), b.clone())]).unwrap();
        let ckpt = HfCheckpoint::open(&dir).unwrap();
        assert_eq!(ckpt.names().collect::<Vec<_>>(), vec!["a", "b"]);
        assert_eq!(ckpt.read("a").unwrap().unwrap(), a);
        assert_eq!(ckpt.read("b").unwrap().unwrap(), b);
        let a16 = ckpt.read_as("a", DType::BF16).unwrap().unwrap();
        assert_eq!(a16.to_f32(), vec![1.0, -2.5, 3.25, 4.0, 5.0, 6.0]);
        assert!(matches!(ckpt.read_as("b", DType::F32), Err(HfError::UnsupportedDtype { .. })));
        assert!(ckpt.read("c").unwrap().is_none());
        assert_eq!(ckpt.meta("a").unwrap().shape, vec![2, 3]);

        // A truncated file is reported as corrupt, naming the file.
        let bytes = std::fs::read(dir.join(SINGLE_FILE)).unwrap();
        std::fs::write(dir.join(SINGLE_FILE), &bytes[..bytes.len() - 4]).unwrap();
        let err = HfCheckpoint::open(&dir).err().unwrap();
        assert!(matches!(err, HfError::CorruptHeader { .. }), "{err}");
        std::fs::write(dir.join(SINGLE_FILE), b"\xff\xff").unwrap();
        assert!(matches!(HfCheckpoint::open(&dir), Err(HfError::CorruptHeader { .. })));
        std::fs::remove_dir_all(&dir).unwrap();

        assert!(matches!(HfCheckpoint::open(&dir), Err(HfError::DirNotFound { .. })));
    }
}
