//! Tokenizer metadata for GGUF from a Hugging Face tokenizer (`tokenizer.json`, with
//! `tokenizer_config.json` and `config.json` for special tokens), written the way llama.cpp's
//! converter writes it: the token list padded to the model's vocabulary size, token types,
//! merges, the pre-tokenizer name identified by the hash of the tokenizer's output on a fixed
//! text, special token ids and add-flags in the order they are discovered, chat template and
//! normalizer flags.

use super::pre_hashes::PRE_TOKENIZER_HASHES;
use crate::gguf::{Array, Value};
use anyhow::{bail, Context, Result};
use serde_json::{Map, Value as Json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;

/// llama.cpp's token types.
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// The text llama.cpp's converter tokenizes to recognise a pre-tokenizer (`chktxt`, 0c1e570).
pub const CHECK_TEXT: &str = "\n \n\n \n\n\n \t \t\t \t\n  \n   \n    \n     \n\u{1F680} (normal) \u{1F636}\u{200D}\u{1F32B}\u{FE0F} (multiple emojis concatenated) \u{2705} \u{1F999}\u{1F999} 3 33 333 3333 33333 333333 3333333 33333333 3.3 3..3 3...3 \u{1780}\u{17B6}\u{1793}\u{17CB}\u{178F}\u{17C2}\u{1796}\u{17B7}\u{179F}\u{17C1}\u{179F}\u{17A2}\u{17B6}\u{1785}\u{1F601} ?\u{6211}\u{60F3}\u{5728}apple\u{5DE5}\u{4F5C}1314151\u{5929}\u{FF5E} ------======= \u{043D}\u{0435}\u{0449}\u{043E} \u{043D}\u{0430} \u{0411}\u{044A}\u{043B}\u{0433}\u{0430}\u{0440}\u{0441}\u{043A}\u{0438} ''''''```````\"\"\"\"......!!!!!!?????? I've been 'told he's there, 'RE you sure? 'M not sure I'll make it, 'D you like some tea? We'Ve a'lL";

/// The flavour of vocabulary llama.cpp stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VocabKind {
    /// Byte-level BPE (Qwen2, ModernBERT): `tokenizer.ggml.model = "gpt2"`, with merges.
    Gpt2,
    /// WordPiece (BERT): `tokenizer.ggml.model = "bert"`, tokens in "phantom space" form.
    Bert,
}

struct Added {
    content: String,
    special: bool,
    normalized: bool,
}

fn read_json(path: &Path) -> Result<Option<Json>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let v = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    Ok(Some(v))
}

/// Whether llama.cpp's converter treats an added token as a control token by its look.
fn looks_special(t: &str) -> bool {
    matches!(t, "<pad>" | "<mask>" | "<2mass>" | "[@BOS@]")
        || (t.starts_with("<|") && t.ends_with("|>"))
        || (t.starts_with("<\u{FF5C}") && t.ends_with("\u{FF5C}>"))
        || (t.starts_with("<unused") && t.ends_with('>'))
}

/// sha256 of the token ids of [`CHECK_TEXT`], rendered as Python renders a list of ints.
pub fn check_hash(tokenizer: &tokenizers::Tokenizer) -> Result<String> {
    // transformers switches off the truncation and padding a tokenizer.json may carry (MiniLM's
    // pads and truncates to 128) unless a call asks for them; so must we.
    let mut tokenizer = tokenizer.clone();
    tokenizer
        .with_truncation(None)
        .map_err(|e| anyhow::anyhow!("cannot disable truncation: {e}"))?
        .with_padding(None);
    let enc = tokenizer
        .encode(CHECK_TEXT, true)
        .map_err(|e| anyhow::anyhow!("tokenizer failed on the check text: {e}"))?;
    let ids: Vec<String> = enc.get_ids().iter().map(u32::to_string).collect();
    let rendered = format!("[{}]", ids.join(", "));
    Ok(format!("{:x}", Sha256::digest(rendered.as_bytes())))
}

pub fn pre_tokenizer_name(hash: &str) -> Option<&'static str> {
    PRE_TOKENIZER_HASHES
        .iter()
        .find(|(h, _)| *h == hash)
        .map(|(_, name)| *name)
}

/// The tokenizer keys, in llama.cpp's order, for a model folder.
pub fn tokenizer_keys(
    dir: &Path,
    kind: VocabKind,
    vocab_size: usize,
    config_raw: &Map<String, Json>,
) -> Result<Vec<(String, Value)>> {
    let tj_path = dir.join("tokenizer.json");
    let tj = read_json(&tj_path)?.with_context(|| {
        format!(
            "{}: missing (qconvert needs the fast tokenizer file)",
            tj_path.display()
        )
    })?;
    let tokenizer = tokenizers::Tokenizer::from_file(&tj_path)
        .map_err(|e| anyhow::anyhow!("{}: cannot load: {e}", tj_path.display()))?;
    let tc = match read_json(&dir.join("tokenizer_config.json"))? {
        Some(Json::Object(m)) => Some(m),
        _ => None,
    };

    // The vocabulary with added tokens, and what is known about each added token.
    let vocab: HashMap<String, u32> = tokenizer.get_vocab(true);
    let max_id = vocab.values().copied().max().unwrap_or(0) as usize;
    if max_id >= vocab_size {
        bail!(
            "{}: token id {max_id} does not fit the model's vocab_size {vocab_size}",
            tj_path.display()
        );
    }
    let mut reverse: Vec<Option<&str>> = vec![None; vocab_size];
    for (tok, &id) in &vocab {
        reverse[id as usize] = Some(tok);
    }
    let mut added: HashMap<u32, Added> = HashMap::new();
    for a in tj
        .get("added_tokens")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(content)) = (
            a.get("id").and_then(Json::as_u64),
            a.get("content").and_then(Json::as_str),
        ) else {
            continue;
        };
        added.insert(
            id as u32,
            Added {
                content: content.to_string(),
                special: a.get("special").and_then(Json::as_bool).unwrap_or(false),
                normalized: a.get("normalized").and_then(Json::as_bool).unwrap_or(true),
            },
        );
    }
    // tokenizer_config.json's added_tokens_decoder, when present, is what transformers uses.
    if let Some(dec) = tc
        .as_ref()
        .and_then(|c| c.get("added_tokens_decoder"))
        .and_then(Json::as_object)
    {
        for (id, a) in dec {
            let (Ok(id), Some(content)) =
                (id.parse::<u32>(), a.get("content").and_then(Json::as_str))
            else {
                continue;
            };
            added.insert(
                id,
                Added {
                    content: content.to_string(),
                    special: a.get("special").and_then(Json::as_bool).unwrap_or(false),
                    normalized: a.get("normalized").and_then(Json::as_bool).unwrap_or(true),
                },
            );
        }
    }
    let added_contents: HashMap<&str, &Added> =
        added.values().map(|a| (a.content.as_str(), a)).collect();

    let mut tokens = Vec::with_capacity(vocab_size);
    let mut types = Vec::with_capacity(vocab_size);
    for (i, tok) in reverse.iter().enumerate() {
        match tok {
            None => {
                tokens.push(format!("[PAD{i}]"));
                types.push(token_type::UNUSED);
            }
            Some(tok) => match added_contents.get(tok) {
                Some(a) => {
                    let _ = a.normalized; // decode(encode(t)) == t for the tokenizers handled here
                    let special = added.get(&(i as u32)).map_or(a.special, |x| x.special);
                    if special || looks_special(tok) {
                        tokens.push(tok.to_string());
                        types.push(token_type::CONTROL);
                    } else {
                        tokens.push(tok.replace('\u{2581}', " "));
                        types.push(token_type::USER_DEFINED);
                    }
                }
                None => {
                    tokens.push(tok.to_string());
                    types.push(token_type::NORMAL);
                }
            },
        }
    }

    let hash = check_hash(&tokenizer)?;
    let pre = pre_tokenizer_name(&hash).with_context(|| {
        format!(
            "{}: the pre-tokenizer is not one llama.cpp knows (check hash {hash}); llama.cpp's converter refuses such tokenizers too",
            tj_path.display()
        )
    })?;

    let mut out: Vec<(String, Value)> = Vec::new();
    match kind {
        VocabKind::Gpt2 => {
            out.push(("tokenizer.ggml.model".into(), Value::from("gpt2")));
            out.push(("tokenizer.ggml.pre".into(), Value::from(pre)));
            out.push((
                "tokenizer.ggml.tokens".into(),
                Value::Array(Array::String(tokens)),
            ));
            out.push((
                "tokenizer.ggml.token_type".into(),
                Value::Array(Array::I32(types)),
            ));
            special_vocab(dir, &tj, tc, config_raw, true, None, &mut out)?;
        }
        VocabKind::Bert => {
            let n = tokens.len();
            let phantom: Vec<String> = tokens
                .into_iter()
                .zip(&types)
                .map(|(t, &ty)| {
                    if ty == token_type::CONTROL {
                        t
                    } else if let Some(rest) = t.strip_prefix("##") {
                        rest.to_string()
                    } else {
                        format!("\u{2581}{t}")
                    }
                })
                .collect();
            out.push(("tokenizer.ggml.model".into(), Value::from("bert")));
            out.push(("tokenizer.ggml.pre".into(), Value::from(pre)));
            out.push((
                "tokenizer.ggml.tokens".into(),
                Value::Array(Array::String(phantom)),
            ));
            out.push((
                "tokenizer.ggml.token_type".into(),
                Value::Array(Array::I32(types)),
            ));
            special_vocab(dir, &tj, tc, config_raw, false, Some(n), &mut out)?;
        }
    }
    Ok(out)
}

const SPECIAL_TYPES: [&str; 7] = ["bos", "eos", "unk", "sep", "pad", "cls", "mask"];

fn special_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.bos_token_id",
        "eos" => "tokenizer.ggml.eos_token_id",
        "unk" => "tokenizer.ggml.unknown_token_id",
        // (sic): llama.cpp's key is spelled this way.
        "sep" => "tokenizer.ggml.seperator_token_id",
        "pad" => "tokenizer.ggml.padding_token_id",
        "mask" => "tokenizer.ggml.mask_token_id",
        "eot" => "tokenizer.ggml.eot_token_id",
        "eom" => "tokenizer.ggml.eom_token_id",
        _ => return None,
    })
}

fn flag_key(typ: &str) -> Option<&'static str> {
    Some(match typ {
        "bos" => "tokenizer.ggml.add_bos_token",
        "eos" => "tokenizer.ggml.add_eos_token",
        "sep" => "tokenizer.ggml.add_sep_token",
        _ => return None,
    })
}

/// An insertion-ordered map, as Python's dict.
#[derive(Default)]
struct Ordered<V>(Vec<(String, V)>);

impl<V: Copy> Ordered<V> {
    fn get(&self, k: &str) -> Option<V> {
        self.0.iter().find(|(key, _)| key == k).map(|(_, v)| *v)
    }
    fn set(&mut self, k: &str, v: V) {
        match self.0.iter_mut().find(|(key, _)| key == k) {
            Some(slot) => slot.1 = v,
            None => self.0.push((k.to_string(), v)),
        }
    }
    fn set_default(&mut self, k: &str, v: V) {
        if self.get(k).is_none() {
            self.0.push((k.to_string(), v));
        }
    }
}

fn token_str(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) if !s.is_empty() => Some(s.clone()),
        Json::Object(o) => o.get("content").and_then(Json::as_str).map(str::to_string),
        _ => None,
    }
}

fn special_token_of(tmpl: &Json) -> Option<String> {
    tmpl.get("SpecialToken")?
        .get("id")?
        .as_str()
        .map(str::to_string)
}

fn sequence_of(tmpl: &Json) -> Option<String> {
    tmpl.get("Sequence")?
        .get("id")?
        .as_str()
        .map(str::to_string)
}

/// llama.cpp's `SpecialVocab`: merges, special ids, add flags, chat template, normalizer flags.
#[allow(clippy::too_many_arguments)]
fn special_vocab(
    dir: &Path,
    tj: &Json,
    mut tc: Option<Map<String, Json>>,
    config_raw: &Map<String, Json>,
    load_merges: bool,
    n_vocab: Option<usize>,
    out: &mut Vec<(String, Value)>,
) -> Result<()> {
    let mut merges: Vec<String> = Vec::new();
    if load_merges {
        match tj
            .get("model")
            .and_then(|m| m.get("merges"))
            .and_then(Json::as_array)
        {
            Some(list) if !list.is_empty() => {
                for m in list {
                    match m {
                        Json::String(s) => merges.push(s.clone()),
                        Json::Array(pair) if pair.len() == 2 => {
                            let enc = |v: &Json| v.as_str().unwrap_or("").replace(' ', "\u{0120}");
                            merges.push(format!("{} {}", enc(&pair[0]), enc(&pair[1])));
                        }
                        _ => bail!(
                            "{}: unknown merges format",
                            dir.join("tokenizer.json").display()
                        ),
                    }
                }
            }
            _ => merges = merges_txt(dir)?,
        }
    }
    let (mut lowercase, mut strip_accents) = (None, None);
    if let Some(n) = tj.get("normalizer") {
        parse_normalizer(n, &mut lowercase, &mut strip_accents);
    }
    let added_tokens: Vec<(String, u64)> = tj
        .get("added_tokens")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| {
            Some((
                a.get("content")?.as_str()?.to_string(),
                a.get("id")?.as_u64()?,
            ))
        })
        .collect();

    let mut ids: Ordered<u32> = Ordered::default();
    let mut flags: Ordered<bool> = Ordered::default();
    let mut types: Vec<&str> = SPECIAL_TYPES.to_vec();
    let set_id = |ids: &mut Ordered<u32>, typ: &str, id: Option<i64>| -> Result<()> {
        let Some(id) = id else { return Ok(()) };
        if id < 0 {
            bail!("invalid id {id} for special token {typ}");
        }
        if n_vocab.is_none_or(|n| (id as usize) < n) && ids.get(typ).is_none() {
            ids.set(typ, id as u32);
        }
        Ok(())
    };

    // tokenizer.json's post-processor, read with tokenizer_config.json's names.
    let mut sp_bos = tc.as_ref().and_then(|c| token_str(c.get("bos_token")));
    let mut sp_cls = tc.as_ref().and_then(|c| token_str(c.get("cls_token")));
    let mut sp_eos = tc.as_ref().and_then(|c| token_str(c.get("eos_token")));
    let mut sp_sep = tc.as_ref().and_then(|c| token_str(c.get("sep_token")));
    let tc_usable = tc.as_ref().is_some_and(|c| !c.is_empty());
    if sp_bos.is_none() && sp_cls.is_some() && tc_usable {
        sp_bos = sp_cls.clone();
        tc.as_mut()
            .unwrap()
            .insert("bos_token".into(), Json::String(sp_bos.clone().unwrap()));
    }
    if sp_eos.is_none() && sp_sep.is_some() && tc_usable {
        sp_eos = sp_sep.clone();
        tc.as_mut()
            .unwrap()
            .insert("eos_token".into(), Json::String(sp_eos.clone().unwrap()));
    }
    if let Some(pp) = tj.get("post_processor").filter(|p| !p.is_null()) {
        let list: Vec<&Json> = match pp.get("processors").and_then(Json::as_array) {
            Some(v) => v.iter().collect(),
            None => vec![pp],
        };
        for p in list {
            match p.get("type").and_then(Json::as_str) {
                Some("ByteLevel") => {
                    flags.set_default("bos", false);
                    flags.set_default("eos", false);
                }
                Some("RobertaProcessing") => {
                    flags.set("bos", true);
                    flags.set("eos", true);
                    flags.set("sep", true);
                    if sp_cls.is_none() && tc_usable {
                        sp_cls = p
                            .get("cls")
                            .and_then(|c| c.get(0))
                            .and_then(Json::as_str)
                            .map(str::to_string)
                            .or(sp_bos.clone());
                        if let Some(c) = &sp_cls {
                            tc.as_mut()
                                .unwrap()
                                .insert("cls_token".into(), Json::String(c.clone()));
                        }
                    }
                    if sp_sep.is_none() && tc_usable {
                        sp_sep = p
                            .get("sep")
                            .and_then(|c| c.get(0))
                            .and_then(Json::as_str)
                            .map(str::to_string)
                            .or(sp_eos.clone());
                        if let Some(s) = &sp_sep {
                            tc.as_mut()
                                .unwrap()
                                .insert("sep_token".into(), Json::String(s.clone()));
                        }
                    }
                }
                Some("TemplateProcessing") => {
                    let single: Vec<Json> = p
                        .get("single")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let pair: Vec<Json> = p
                        .get("pair")
                        .and_then(Json::as_array)
                        .cloned()
                        .unwrap_or_default();
                    let (mut first, mut last) = (None, None);
                    if single.len() > 1 {
                        first = special_token_of(&single[0]);
                        if let Some(f) = &first {
                            if !tc_usable {
                                sp_bos = Some(f.clone());
                            } else if Some(f) != sp_bos.as_ref() && Some(f) != sp_cls.as_ref() {
                                if sp_bos.is_none() {
                                    sp_bos = Some(f.clone());
                                    tc.as_mut()
                                        .unwrap()
                                        .insert("bos_token".into(), Json::String(f.clone()));
                                }
                                if sp_cls.is_none() {
                                    sp_cls = Some(f.clone());
                                    tc.as_mut()
                                        .unwrap()
                                        .insert("cls_token".into(), Json::String(f.clone()));
                                }
                            }
                            let is = Some(f) == sp_bos.as_ref() || Some(f) == sp_cls.as_ref();
                            flags.set("bos", is);
                        }
                        last = special_token_of(&single[single.len() - 1]);
                        if let Some(l) = &last {
                            if !tc_usable {
                                sp_eos = Some(l.clone());
                            } else if Some(l) != sp_eos.as_ref() {
                                let c = tc.as_mut().unwrap();
                                if !types.contains(&"eot") {
                                    types.push("eot");
                                    c.insert(
                                        "eot_token".into(),
                                        sp_eos.clone().map_or(Json::Null, Json::String),
                                    );
                                } else if !types.contains(&"eom") {
                                    types.push("eom");
                                    c.insert(
                                        "eom_token".into(),
                                        sp_eos.clone().map_or(Json::Null, Json::String),
                                    );
                                }
                                c.insert("eos_token".into(), Json::String(l.clone()));
                                sp_eos = Some(l.clone());
                            }
                            flags.set("eos", Some(l) == sp_eos.as_ref());
                        }
                    }
                    if !pair.is_empty() {
                        let start =
                            usize::from(first.is_some() && special_token_of(&pair[0]) == first);
                        let stop =
                            if last.is_some() && special_token_of(&pair[pair.len() - 1]) == last {
                                pair.len() - 1
                            } else {
                                pair.len()
                            };
                        let mid: &[Json] = if start <= stop {
                            &pair[start..stop]
                        } else {
                            &[]
                        };
                        if !mid.is_empty() {
                            let a = sequence_of(&mid[0]);
                            let b = sequence_of(&mid[mid.len() - 1]);
                            if a.as_deref() == Some("A")
                                && b.as_deref() == Some("B")
                                && mid.len() > 2
                            {
                                let inner = &mid[1..mid.len() - 1];
                                let is_sep = |t: &Option<String>| {
                                    t.is_some()
                                        && (t.as_ref() == sp_sep.as_ref()
                                            || t.as_ref() == sp_eos.as_ref())
                                };
                                let mut add_sep = false;
                                let e0 = special_token_of(&inner[0]);
                                if e0.is_some() && is_sep(&e0) && last.is_none() {
                                    add_sep = true;
                                }
                                if inner.len() == 2 {
                                    let e1 = special_token_of(&inner[1]);
                                    if e1.is_some() && is_sep(&e1) {
                                        add_sep = true;
                                    }
                                }
                                flags.set("sep", add_sep);
                                if add_sep && sp_sep.is_none() && tc_usable {
                                    tc.as_mut().unwrap().insert(
                                        "sep_token".into(),
                                        sp_eos.clone().map_or(Json::Null, Json::String),
                                    );
                                }
                            }
                        }
                    }
                }
                _ => {}
            }
        }
    }

    let mut chat: Option<Json> = None;
    if let Some(c) = tc.as_ref().filter(|c| !c.is_empty()) {
        let jinja = dir.join("chat_template.jinja");
        let alt = if jinja.is_file() {
            Some(Json::String(
                std::fs::read_to_string(&jinja).with_context(|| jinja.display().to_string())?,
            ))
        } else {
            read_json(&dir.join("chat_template.json"))?
                .and_then(|j| j.get("chat_template").cloned())
        };
        chat = match c.get("chat_template") {
            Some(v) => Some(v.clone()),
            None => alt,
        };
        for typ in types.clone() {
            if let Some(b) = c.get(&format!("add_{typ}_token")).and_then(Json::as_bool) {
                if flags.get(typ).is_none() {
                    flags.set(typ, b);
                }
            }
            let Some(content) = token_str(c.get(&format!("{typ}_token"))) else {
                continue;
            };
            let id = added_tokens
                .iter()
                .find(|(t, _)| *t == content)
                .map(|(_, id)| *id as i64);
            set_id(&mut ids, typ, id)?;
        }
    }
    for typ in types.clone() {
        let id = config_raw
            .get(&format!("{typ}_token_id"))
            .or_else(|| {
                config_raw
                    .get("text_config")
                    .and_then(|t| t.get(format!("{typ}_token_id")))
            })
            .and_then(Json::as_i64);
        set_id(&mut ids, typ, id)?;
    }

    if !merges.is_empty() {
        out.push((
            "tokenizer.ggml.merges".into(),
            Value::Array(Array::String(merges)),
        ));
    }
    for (typ, id) in &ids.0 {
        if let Some(k) = special_key(typ) {
            set_or_append(out, k, Value::U32(*id));
        }
    }
    for (typ, v) in &flags.0 {
        if let Some(k) = flag_key(typ) {
            set_or_append(out, k, Value::Bool(*v));
        }
    }
    match chat {
        Some(Json::String(s)) if !s.is_empty() => {
            set_or_append(out, "tokenizer.chat_template", Value::String(s))
        }
        Some(Json::Array(list)) => {
            let mut default = None;
            let mut names = Vec::new();
            for choice in list {
                let name: String = choice
                    .get("name")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .chars()
                    .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                    .collect();
                let Some(t) = choice.get("template").and_then(Json::as_str) else {
                    continue;
                };
                if name.is_empty() {
                    continue;
                }
                if name == "default" {
                    default = Some(t.to_string());
                } else {
                    set_or_append(
                        out,
                        &format!("tokenizer.chat_template.{name}"),
                        Value::from(t),
                    );
                    names.push(name);
                }
            }
            if !names.is_empty() {
                set_or_append(
                    out,
                    "tokenizer.chat_templates",
                    Value::Array(Array::String(names)),
                );
            }
            if let Some(d) = default {
                set_or_append(out, "tokenizer.chat_template", Value::String(d));
            }
        }
        _ => {}
    }
    if let Some(l) = lowercase {
        set_or_append(out, "tokenizer.ggml.normalizer.lowercase", Value::Bool(l));
    }
    if let Some(s) = strip_accents {
        set_or_append(
            out,
            "tokenizer.ggml.normalizer.strip_accents",
            Value::Bool(s),
        );
    }
    Ok(())
}

/// Python dict semantics: a key already written keeps its place and takes the new value.
pub fn set_or_append(out: &mut Vec<(String, Value)>, key: &str, v: Value) {
    match out.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = v,
        None => out.push((key.to_string(), v)),
    }
}

fn parse_normalizer(n: &Json, lowercase: &mut Option<bool>, strip: &mut Option<bool>) {
    match n.get("type").and_then(Json::as_str) {
        Some("Lowercase") => *lowercase = Some(true),
        Some("StripAccents") => *strip = Some(true),
        Some("BertNormalizer") => {
            if let Some(v) = n.get("lowercase") {
                *lowercase = v.as_bool();
            }
            if let Some(v) = n.get("strip_accents") {
                *strip = v.as_bool();
            }
        }
        Some("Sequence") => {
            for inner in n
                .get("normalizers")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                parse_normalizer(inner, lowercase, strip);
            }
        }
        _ => {}
    }
}

fn merges_txt(dir: &Path) -> Result<Vec<String>> {
    let path = dir.join("merges.txt");
    if !path.is_file() {
        return Ok(Vec::new());
    }
    let text = std::fs::read_to_string(&path).with_context(|| path.display().to_string())?;
    let mut lines = text.lines().peekable();
    if lines.peek().is_some_and(|l| l.trim().starts_with('#')) {
        lines.next();
    }
    Ok(lines
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let parts: Vec<&str> = l.split_whitespace().collect();
            (parts.len() == 2).then(|| format!("{} {}", parts[0], parts[1]))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_text_is_llama_cpps() {
        // sha256 of the UTF-8 bytes of llama.cpp's chktxt (431 bytes).
        assert_eq!(CHECK_TEXT.len(), 431);
        assert_eq!(
            format!("{:x}", Sha256::digest(CHECK_TEXT.as_bytes())),
            "a36179c1e2b1cfcfbfad1dc779addad2ffc778201e4cf0d538bddeafa2c526da"
        );
    }

    #[test]
    fn special_looks() {
        assert!(looks_special("<|fim_prefix|>"));
        assert!(looks_special("<unused12>"));
        assert!(!looks_special("<tool_call>"));
        let _ = token_type::UNKNOWN + token_type::BYTE;
    }
}
