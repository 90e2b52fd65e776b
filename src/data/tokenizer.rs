//! HuggingFace tokenizers (`tokenizer_type=huggingface`): `tokenizer.json` through the `tokenizers` crate,
//! with BOS/EOS from `tokenizer_config.json` as MaxText reads them.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("tokenizer_path {path} has no tokenizer.json (give the directory of a HuggingFace tokenizer or its tokenizer.json)")]
    NotFound { path: PathBuf },
    #[error("cannot load tokenizer {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    #[error("tokenizing the prompt: {0}")]
    Encode(String),
    #[error("detokenizing: {0}")]
    Decode(String),
}

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    bos: Option<u32>,
    eos: Vec<u32>,
    pub path: PathBuf,
}

impl Tokenizer {
    /// `path` is a directory holding `tokenizer.json` (and optionally `tokenizer_config.json`) or the file.
    pub fn load(path: &Path) -> Result<Tokenizer, TokenizerError> {
        let (dir, file) = if path.is_dir() { (path.to_path_buf(), path.join("tokenizer.json")) } else { (path.parent().unwrap_or(Path::new(".")).to_path_buf(), path.to_path_buf()) };
        if !file.is_file() {
            return Err(TokenizerError::NotFound { path: path.to_path_buf() });
        }
        let inner = tokenizers::Tokenizer::from_file(&file).map_err(|e| TokenizerError::Load { path: file.clone(), reason: e.to_string() })?;
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
        Ok(Tokenizer { inner, bos, eos, path: file })
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

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
