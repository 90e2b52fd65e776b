//! HuggingFace tokenizers (`tokenizer_type=huggingface`): `tokenizer.json` through the `tokenizers` crate,
//! with BOS/EOS from `tokenizer_config.json` as MaxText reads them. A directory may hold
//! `tokenizer.json.zst` instead (zstd-compressed): the shipped Qwen3 tokenizer is kept that way, 1.6 MB
//! instead of 11.4 MB in the repository.

use std::path::{Path, PathBuf};

use crate::config::TokenizerType;
use crate::storage::{local_dir, Location, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer_path {path} has no tokenizer.json or tokenizer.json.zst (give the directory of a HuggingFace tokenizer or its tokenizer.json)")]
    NotFound { path: PathBuf },
    #[error("cannot load tokenizer {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("tokenizing the prompt: {0}")]
    Encode(String),
    #[error("detokenizing: {0}")]
    Decode(String),
    #[error("tokenizer_type={0} is not built: set tokenizer_type=huggingface (a tokenizer.json, as MaxText's Qwen3-Next commands do)")]
    UnsupportedType(TokenizerType),
}

/// Only HuggingFace tokenizers are built: every loader of the configured tokenizer asks this first.
pub fn require_huggingface(tokenizer_type: TokenizerType) -> Result<(), TokenizerError> {
    match tokenizer_type {
        TokenizerType::HuggingFace => Ok(()),
        other => Err(TokenizerError::UnsupportedType(other)),
    }
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Vec<u32>,
    /// `get_vocab_size(true)` builds the whole vocabulary map (151k entries for Qwen3): computed once here,
    /// never per token.
    vocab_size: usize,
    pub path: PathBuf,
}

impl Tokenizer {
    /// `path` is a directory holding `tokenizer.json` or `tokenizer.json.zst` (and optionally
    /// `tokenizer_config.json`), or one of those files.
    pub fn load(path: &Path) -> Result<Tokenizer, TokenizerError> {
        let (dir, file) = if path.is_dir() {
            let plain = path.join("tokenizer.json");
            let packed = path.join("tokenizer.json.zst");
            (path.to_path_buf(), if !plain.is_file() && packed.is_file() { packed } else { plain })
        } else {
            (path.parent().unwrap_or(Path::new(".")).to_path_buf(), path.to_path_buf())
        };
        if !file.is_file() {
            return Err(TokenizerError::NotFound { path: path.to_path_buf() });
        }
        let load_err = |reason: String| TokenizerError::Load { path: file.clone(), reason };
        let inner = if file.extension().is_some_and(|e| e == "zst") {
            let packed = std::fs::read(&file).map_err(|e| load_err(e.to_string()))?;
            let json = zstd::decode_all(packed.as_slice()).map_err(|e| load_err(format!("not a zstd file: {e}")))?;
            tokenizers::Tokenizer::from_bytes(json).map_err(|e| load_err(e.to_string()))?
        } else {
            tokenizers::Tokenizer::from_file(&file).map_err(|e| load_err(e.to_string()))?
        };
        let config: serde_json::Value = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or(serde_json::Value::Null);
        let special = |key: &str| -> Option<u32> {
            let v = &config[key];
            let name = v.as_str().or_else(|| v["content"].as_str())?;
            inner.token_to_id(name)
        };
        let bos = special("bos_token");
        // Generation stops at the configured EOS and at `<|endoftext|>` (Qwen's document end).
        let mut eos: Vec<u32> = special("eos_token").into_iter().collect();
        if let Some(id) = inner.token_to_id("<|endoftext|>") {
            if !eos.contains(&id) {
                eos.push(id);
            }
        }
        let vocab_size = inner.get_vocab_size(true);
        Ok(Tokenizer { inner, bos, eos, vocab_size, path: file })
    }

    /// Token ids of `text`; with `add_bos`, the BOS token first when the tokenizer has one (Qwen3 has none).
    pub fn encode(&self, text: &str, add_bos: bool) -> Result<Vec<i64>, TokenizerError> {
        let enc = self.inner.encode(text, false).map_err(|e| TokenizerError::Encode(e.to_string()))?;
        let mut ids: Vec<i64> = Vec::with_capacity(enc.len() + 1);
        if add_bos {
            if let Some(b) = self.bos {
                ids.push(b as i64);
            }
        }
        ids.extend(enc.get_ids().iter().map(|&i| i as i64));
        Ok(ids)
    }

    pub fn decode(&self, ids: &[i64]) -> Result<String, TokenizerError> {
        let ids: Vec<u32> = ids.iter().filter(|&&i| i >= 0).map(|&i| i as u32).collect();
        self.inner.decode(&ids, true).map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    pub fn eos_ids(&self) -> Vec<i64> {
        self.eos.iter().map(|&i| i as i64).collect()
    }

    /// Number of ids the tokenizer knows (added tokens included); cached at load.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// The id of a token string (special tokens included), if any.
    pub fn token_to_id(&self, token: &str) -> Option<i64> {
        self.inner.token_to_id(token).map(|i| i as i64)
    }

    /// The token string of an id (byte-level form, e.g. `Ġthe`), if any.
    pub fn id_to_token(&self, id: i64) -> Option<String> {
        u32::try_from(id).ok().and_then(|i| self.inner.id_to_token(i))
    }

    /// Text of `ids` with special tokens kept (the form the server's `text` fields and `/detokenize` return).
    pub fn decode_all(&self, ids: &[i64]) -> Result<String, TokenizerError> {
        let ids: Vec<u32> = ids.iter().filter(|&&i| i >= 0).map(|&i| i as u32).collect();
        self.inner.decode(&ids, false).map_err(|e| TokenizerError::Decode(e.to_string()))
    }

    /// The BOS token string and the EOS token string (the first EOS id), as `tokenizer_config.json` names them.
    pub fn bos_token(&self) -> Option<String> {
        self.bos.and_then(|b| self.inner.id_to_token(b))
    }

    pub fn eos_token(&self) -> Option<String> {
        self.eos.first().and_then(|&e| self.inner.id_to_token(e))
    }

    /// The directory the tokenizer was loaded from (where `tokenizer_config.json` lives).
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Streams text from tokens as they are generated: only the new suffix is decoded each time (the window
/// from the last stable point), so a step costs O(1) in the sequence length, and a partial UTF-8 character
/// (a byte-level token that ends mid-character, decoded as U+FFFD) is held back until it completes.
pub struct TextStream {
    ids: Vec<i64>,
    prefix: usize,
    read: usize,
    skip_special: bool,
}

impl TextStream {
    pub fn new(skip_special: bool) -> TextStream {
        TextStream { ids: Vec::new(), prefix: 0, read: 0, skip_special }
    }

    fn text(&self, tok: &Tokenizer, ids: &[i64]) -> Result<String, TokenizerError> {
        if self.skip_special {
            tok.decode(ids)
        } else {
            tok.decode_all(ids)
        }
    }

    /// Adds one token and returns the text it completes (possibly empty).
    pub fn push(&mut self, tok: &Tokenizer, id: i64) -> Result<String, TokenizerError> {
        self.ids.push(id);
        let before = self.text(tok, &self.ids[self.prefix..self.read])?;
        let now = self.text(tok, &self.ids[self.prefix..])?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.starts_with(&before) {
            let new = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(new)
        } else {
            Ok(String::new())
        }
    }

    /// Whatever is held back (an incomplete character at the end), as decoded.
    pub fn finish(&mut self, tok: &Tokenizer) -> Result<String, TokenizerError> {
        let before = self.text(tok, &self.ids[self.prefix..self.read])?;
        let now = self.text(tok, &self.ids[self.prefix..])?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        Ok(now.get(before.len()..).unwrap_or("").to_string())
    }
}

/// `tokenizer_path` as a local path when it is a `gs://` one: the tokenizer (a directory's `tokenizer*`
/// and `special_tokens_map.json` files, or the one `tokenizer.json` named, with its directory's
/// `tokenizer_config.json`) is copied to a local temporary directory first, because the tokenizers library
/// reads files by path. `None` for a local path or a hub id.
pub fn local_tokenizer_path(given: &str) -> Result<Option<PathBuf>, StorageError> {
    let loc = Location::parse(given)?;
    if !loc.is_remote() {
        return Ok(None);
    }
    if loc.is_file()? {
        let (Some(name), Some(dir)) = (loc.file_name(), loc.parent()) else { return Err(StorageError::NotFound { loc: given.into() }) };
        let staged = local_dir(&dir, &format!("tokenizer_path={given}"), |n| n == name || n == "tokenizer_config.json")?;
        return Ok(Some(staged.join(name)));
    }
    let keep = |n: &str| n.starts_with("tokenizer") || n == "special_tokens_map.json";
    Ok(Some(local_dir(&loc, &format!("tokenizer_path={given}"), keep)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stream_pieces_add_up_to_the_whole_text() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/tokenizers/qwen3-tokenizer");
        let tok = Tokenizer::load(&dir).unwrap();
        let text = "Héllo wörld — 你好，世界! 🙂🚀 done.";
        let ids = tok.encode(text, false).unwrap();
        let mut s = TextStream::new(true);
        let mut out = String::new();
        for &id in &ids {
            let piece = s.push(&tok, id).unwrap();
            assert!(!piece.contains('\u{FFFD}'), "a partial character leaked: {piece:?}");
            out.push_str(&piece);
        }
        out.push_str(&s.finish(&tok).unwrap());
        assert_eq!(out, text);
        assert_eq!(tok.vocab_size(), 151669);
    }
}
