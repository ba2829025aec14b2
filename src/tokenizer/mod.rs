//! Tokenizers: the Hugging Face `tokenizers` crate, loaded from a `tokenizer.json` beside the
//! model or rebuilt from the GGUF's own tokenizer metadata ([`from_gguf`]).

pub mod from_gguf;

use crate::gguf::GgufFile;
use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Where it came from, for messages.
    pub source: String,
}

impl Tokenizer {
    /// `tokenizer.json` beside the model file (MODEL.tokenizer.json, or tokenizer.json in the
    /// same folder) if present, else the GGUF's metadata.
    pub fn for_model(model_path: &Path, file: &GgufFile) -> Result<Tokenizer> {
        let beside: Vec<PathBuf> = vec![
            model_path.with_extension("tokenizer.json"),
            model_path
                .parent()
                .unwrap_or(Path::new("."))
                .join("tokenizer.json"),
        ];
        for p in beside {
            if p.is_file() {
                return Tokenizer::from_file(&p);
            }
        }
        let mut inner = from_gguf::tokenizer(file).with_context(|| {
            format!(
                "{}: rebuilding the tokenizer from metadata",
                model_path.display()
            )
        })?;
        Self::plain(&mut inner)?;
        Ok(Tokenizer {
            inner,
            source: format!("{} metadata", model_path.display()),
        })
    }

    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Self::plain(&mut inner)?;
        Ok(Tokenizer {
            inner,
            source: path.display().to_string(),
        })
    }

    /// Truncation and padding are decided per call by qgguf, not by the file.
    fn plain(t: &mut tokenizers::Tokenizer) -> Result<()> {
        t.with_truncation(None)
            .map_err(|e| anyhow::anyhow!("tokenizer: {e}"))?
            .with_padding(None);
        Ok(())
    }

    /// Token ids of `text`; `special` adds the model's special tokens (BOS/CLS, EOS/SEP).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, special)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?
            .get_ids()
            .to_vec())
    }

    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| anyhow::anyhow!("detokenizing: {e}"))
    }

    pub fn token_to_id(&self, t: &str) -> Option<u32> {
        self.inner.token_to_id(t)
    }
}
