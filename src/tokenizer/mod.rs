//! Tokenizers: the Hugging Face `tokenizers` crate, loaded from a `tokenizer.json` beside the
//! model or rebuilt from the GGUF's own tokenizer metadata ([`from_gguf`]).

pub mod from_gguf;
