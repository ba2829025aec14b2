//! The `general.*` keys llama.cpp's converter derives for a model: sampling defaults from
//! `generation_config.json`; name, author, version, license, base models, datasets, tags and
//! languages from the model card (README.md front matter); and name components parsed from the
//! card, `_name_or_path` and the folder name, in that order of precedence.

use crate::gguf::Value;
use regex::Regex;
use serde_json::Value as Json;
use std::path::Path;
use std::sync::OnceLock;

/// Fields parsed from a model id such as `Qwen/Qwen2.5-0.5B-Instruct`.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct IdComponents {
    pub name: Option<String>,
    pub organization: Option<String>,
    pub basename: Option<String>,
    pub finetune: Option<String>,
    pub version: Option<String>,
    pub size_label: Option<String>,
}

fn re(pattern: &'static str, cell: &'static OnceLock<Regex>) -> &'static Regex {
    cell.get_or_init(|| Regex::new(pattern).expect("static regex"))
}

/// Python's `str.islower()`: at least one cased character and none uppercase.
fn py_islower(s: &str) -> bool {
    s.chars().any(char::is_lowercase) && !s.chars().any(char::is_uppercase)
}

/// Python's `str.title()`: each run of letters starts upper-case, the rest lower-case.
fn py_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_cased = false;
    for c in s.chars() {
        if prev_cased {
            out.extend(c.to_lowercase());
        } else {
            out.extend(c.to_uppercase());
        }
        prev_cased = c.is_alphabetic();
    }
    out
}

/// A model id as a title: words of lower-case letters are title-cased, unless they look like a
/// version or start with a digit; everything else is kept.
pub fn id_to_title(s: &str) -> String {
    static KEEP: OnceLock<Regex> = OnceLock::new();
    let keep = re(r"^(v\d+(?:\.\d+)*|\d.*)$", &KEEP);
    s.trim()
        .replace('-', " ")
        .split_whitespace()
        .map(|w| {
            if py_islower(w) && !keep.is_match(w) {
                py_title(w)
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[derive(Default, Clone)]
struct Tags {
    basename: bool,
    size_label: bool,
    finetune: bool,
    version: bool,
    kind: bool,
}

impl Tags {
    fn is_empty(&self) -> bool {
        !(self.basename || self.size_label || self.finetune || self.version || self.kind)
    }
    fn count(&self) -> usize {
        [
            self.basename,
            self.size_label,
            self.finetune,
            self.version,
            self.kind,
        ]
        .iter()
        .filter(|&&b| b)
        .count()
    }
}

/// Splits a model id into name components, as llama.cpp's `get_model_id_components` does.
pub fn model_id_components(model_id: &str, total_params: i64) -> IdComponents {
    static VERSION: OnceLock<Regex> = OnceLock::new();
    static KIND: OnceLock<Regex> = OnceLock::new();
    static SIZE: OnceLock<Regex> = OnceLock::new();
    static FINETUNE: OnceLock<Regex> = OnceLock::new();
    let version_re = re(r"(?i)^(?:(?:v|iter)?\d+(?:[.]\d+)*)$", &VERSION);
    let kind_re = re(r"(?i)^(?:i?q\d(?:_\w)*|b?fp?(?:16|32))$", &KIND);
    let size_re = re(
        r"(?i)^(?:(?:(?:[A]|\d+[x])?\d+(?:[._]\d+)?[KMBT][\d]?|small|mini|medium|large|x?xl))$",
        &SIZE,
    );
    let finetune_re = re(r"(?i)^(?:chat|instruct|vision|lora)$", &FINETUNE);

    if model_id.contains(' ') {
        return IdComponents {
            name: Some(model_id.to_string()),
            ..Default::default()
        };
    }
    let (org, full) = match model_id.split_once('/') {
        Some((o, n)) => (Some(o), n),
        None => (None, model_id),
    };
    let org = org.filter(|o| !o.starts_with('.'));
    let mut parts: Vec<String> = full
        .split('-')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let mut tags = vec![Tags::default(); parts.len()];
    for i in 0..parts.len() {
        let part = parts[i].clone();
        if version_re.is_match(&part) {
            tags[i].version = true;
        } else if kind_re.is_match(&part) {
            tags[i].kind = true;
            parts[i] = part.to_uppercase();
        } else if i > 0 && size_re.is_match(&part) {
            let mut p: Vec<char> = part.replace('_', ".").chars().collect();
            let n = p.len();
            if p[n - 1].is_ascii_digit() && n >= 2 {
                // bloom-7b1 notation: 7b1 -> 7.1b
                let last = p[n - 1];
                let before = p[n - 2];
                p.truncate(n - 2);
                p.push('.');
                p.push(last);
                p.push(before);
            }
            let n = p.len();
            if n > 1 && p[n - 2].is_ascii_digit() && "kmbt".contains(p[n - 1]) {
                p[n - 1] = p[n - 1].to_ascii_uppercase();
            }
            if total_params != 0 {
                let number: String = p[..p.len() - 1].iter().collect();
                let suffix = p[p.len() - 1];
                // Python's str.find gives -1 for a suffix outside " KMBT", and the label is
                // then scaled by 1000^-1: kept for identical results.
                let scale = " KMBT".find(suffix).map_or(-1, |i| i as i32);
                if let Ok(x) = number.parse::<f64>() {
                    let label = x * 1000f64.powi(scale);
                    let far = if total_params < 0 {
                        label < (total_params.unsigned_abs() / 8) as f64
                    } else {
                        (label - total_params as f64).abs() > (7 * total_params / 8) as f64
                    };
                    if far {
                        tags[i].finetune = true;
                        let last = p.len() - 1;
                        p[last] = p[last].to_ascii_lowercase();
                    }
                }
            }
            if tags[i].is_empty() {
                tags[i].size_label = true;
            }
            parts[i] = p.into_iter().collect();
        } else if i > 0 && finetune_re.is_match(&part) {
            if total_params < 0 && part.eq_ignore_ascii_case("lora") {
                tags[i].kind = true;
            } else {
                tags[i].finetune = true;
            }
        }
    }
    let numeric_size = parts
        .iter()
        .zip(&tags)
        .any(|(p, t)| t.size_label && p.chars().any(|c| c.is_ascii_digit()));
    if numeric_size {
        for (p, t) in parts.iter().zip(tags.iter_mut()) {
            if t.size_label && p.chars().all(char::is_alphabetic) {
                t.size_label = false;
            }
        }
    }
    let mut at_start = true;
    for (p, t) in parts.iter().zip(tags.iter_mut()) {
        let starts_alpha = p.chars().next().is_some_and(char::is_alphabetic);
        if at_start && ((t.is_empty() && starts_alpha) || t.version) {
            t.basename = true;
        } else {
            at_start = false;
            if t.is_empty() {
                t.finetune = true;
            }
        }
    }
    for t in tags.iter_mut().rev() {
        if t.basename && t.count() > 1 {
            t.basename = false;
        } else {
            break;
        }
    }
    let join = |f: &dyn Fn(&Tags) -> bool| {
        let mut seen: Vec<&str> = Vec::new();
        for (p, t) in parts.iter().zip(&tags) {
            if f(t) {
                seen.push(p);
            }
        }
        (!seen.is_empty()).then(|| seen.join("-"))
    };
    let basename = join(&|t| t.basename);
    let mut size_labels: Vec<&str> = Vec::new();
    for (p, t) in parts.iter().zip(&tags) {
        if t.size_label && !size_labels.contains(&p.as_str()) {
            size_labels.push(p);
        }
    }
    let size_label = (!size_labels.is_empty()).then(|| size_labels.join("-"));
    let finetune = join(&|t| t.finetune);
    let version = join(&|t| t.version && !t.basename);
    let basename = if size_label.is_none() && finetune.is_none() && version.is_none() {
        None
    } else {
        basename
    };
    IdComponents {
        name: Some(full.to_string()),
        organization: org.map(str::to_string),
        basename,
        finetune,
        version,
        size_label,
    }
}

/// llama.cpp's rounded parameter count: "494M", "1.5B", "22M".
pub fn size_label(total_params: u64) -> String {
    let n = total_params as f64;
    let (x, suffix) = if n > 1e12 {
        (n * 1e-12, "T")
    } else if n > 1e9 {
        (n * 1e-9, "B")
    } else if n > 1e6 {
        (n * 1e-6, "M")
    } else {
        (n * 1e-3, "K")
    };
    // Python's round() rounds half to even.
    let rounded = x.round_ties_even();
    let digits = format!("{rounded}")
        .trim_end_matches(".0")
        .trim_start_matches('0')
        .len();
    let fix = 2usize.saturating_sub(digits);
    format!("{x:.fix$}{suffix}")
}

/// The model card: the YAML front matter of README.md, as JSON (empty when absent or invalid).
fn model_card(dir: &Path) -> serde_json::Map<String, Json> {
    let Ok(text) = std::fs::read_to_string(dir.join("README.md")) else {
        return Default::default();
    };
    let mut lines = text.lines();
    if lines.next() != Some("---") {
        return Default::default();
    }
    let mut yaml = String::new();
    for l in lines {
        if l == "---" {
            break;
        }
        yaml.push_str(l);
        yaml.push('\n');
    }
    // llama.cpp's converter quotes a bare `no` list item (YAML 1.1 reads it as false) and turns
    // tabs into spaces before parsing; same here.
    let yaml = yaml.replace("- no\n", "- \"no\"\n").replace('\t', "  ");
    match serde_yaml_ng::from_str::<Json>(&yaml) {
        Ok(Json::Object(m)) => m,
        _ => Default::default(),
    }
}

#[derive(Default)]
struct Fields {
    name: Option<String>,
    author: Option<String>,
    version: Option<String>,
    organization: Option<String>,
    description: Option<String>,
    finetune: Option<String>,
    basename: Option<String>,
    size_label: Option<String>,
    source_url: Option<String>,
    source_doi: Option<String>,
    source_uuid: Option<String>,
    source_repo_url: Option<String>,
    license: Option<String>,
    license_name: Option<String>,
    license_link: Option<String>,
    base_models: Option<Vec<Vec<(String, String)>>>,
    datasets: Option<Vec<Vec<(String, String)>>>,
    tags: Option<Vec<String>>,
    languages: Option<Vec<String>>,
}

fn card_str(v: &Json) -> Option<String> {
    match v {
        Json::String(s) => Some(s.clone()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(if *b { "True" } else { "False" }.to_string()),
        _ => None,
    }
}

/// Base models and datasets: Hugging Face ids, URLs, or dictionaries.
fn card_refs(value: Option<&Json>, total_params: i64) -> Vec<Vec<(String, String)>> {
    let items: Vec<&Json> = match value {
        Some(Json::Array(a)) => a.iter().collect(),
        Some(v @ Json::String(_)) => vec![v],
        _ => Vec::new(),
    };
    static HF_URL: OnceLock<Regex> = OnceLock::new();
    let hf_url = re(r"^https?://huggingface.co/([^/]+/[^/]+)$", &HF_URL);
    let mut out = Vec::new();
    for item in items {
        let mut e: Vec<(String, String)> = Vec::new();
        let push_components = |id: &str, e: &mut Vec<(String, String)>, with_url: bool| {
            let c = model_id_components(id, total_params);
            if let Some(n) = &c.name {
                e.push(("name".into(), id_to_title(n)));
            }
            if let Some(o) = &c.organization {
                e.push(("organization".into(), id_to_title(o)));
            }
            if let Some(v) = &c.version {
                e.push(("version".into(), v.clone()));
            }
            if with_url {
                if let (Some(o), Some(n)) = (&c.organization, &c.name) {
                    e.push(("repo_url".into(), format!("https://huggingface.co/{o}/{n}")));
                }
            }
        };
        match item {
            Json::String(id)
                if id.starts_with("http://")
                    || id.starts_with("https://")
                    || id.starts_with("ssh://") =>
            {
                e.push(("repo_url".into(), id.clone()));
                if id.contains("huggingface.co") {
                    if let Some(m) = hf_url.captures(id) {
                        push_components(&m[1], &mut e, false);
                    }
                }
            }
            Json::String(id) => push_components(id, &mut e, true),
            Json::Object(o) => {
                for (k, v) in o {
                    if let Some(s) = card_str(v) {
                        e.push((k.clone(), s));
                    }
                }
            }
            _ => continue,
        }
        out.push(e);
    }
    out
}

fn fill_from_card(m: &mut Fields, card: &serde_json::Map<String, Json>, total_params: i64) {
    let get = |k: &str| card.get(k).and_then(card_str);
    let set = |slot: &mut Option<String>, key: &str| {
        if slot.is_none() && card.contains_key(key) {
            *slot = get(key);
        }
    };
    for prefix in ["", "model_"] {
        set(&mut m.name, &format!("{prefix}name"));
        set(&mut m.author, &format!("{prefix}author"));
        set(&mut m.version, &format!("{prefix}version"));
        set(&mut m.organization, &format!("{prefix}organization"));
        set(&mut m.description, &format!("{prefix}description"));
        set(&mut m.finetune, &format!("{prefix}finetune"));
        set(&mut m.basename, &format!("{prefix}basename"));
        set(&mut m.size_label, &format!("{prefix}size_label"));
        set(&mut m.source_url, &format!("{prefix}url"));
        set(&mut m.source_doi, &format!("{prefix}doi"));
        set(&mut m.source_uuid, &format!("{prefix}uuid"));
        set(&mut m.source_repo_url, &format!("{prefix}repo_url"));
    }
    set(&mut m.name, "model_name");
    set(&mut m.author, "model_creator");
    set(&mut m.basename, "model_type");
    if let Some(v) = ["base_model", "base_models", "base_model_sources"]
        .iter()
        .find(|k| card.contains_key(**k))
    {
        m.base_models
            .get_or_insert_with(Vec::new)
            .extend(card_refs(card.get(*v), total_params));
    }
    if let Some(v) = ["datasets", "dataset", "dataset_sources"]
        .iter()
        .find(|k| card.contains_key(**k))
    {
        m.datasets
            .get_or_insert_with(Vec::new)
            .extend(card_refs(card.get(*v), total_params));
    }
    if m.license.is_none() {
        m.license = match card.get("license") {
            Some(Json::Array(a)) => {
                Some(a.iter().filter_map(card_str).collect::<Vec<_>>().join(","))
            }
            Some(v) => card_str(v),
            None => None,
        };
    }
    set(&mut m.license_name, "license_name");
    set(&mut m.license_link, "license_link");
    let append = |slot: &mut Option<Vec<String>>, key: &str| match card.get(key) {
        Some(Json::Array(a)) => slot
            .get_or_insert_with(Vec::new)
            .extend(a.iter().filter_map(card_str)),
        Some(Json::String(s)) => slot.get_or_insert_with(Vec::new).push(s.clone()),
        _ => {}
    };
    append(&mut m.tags, "tags");
    append(&mut m.tags, "pipeline_tag");
    append(&mut m.languages, "languages");
    append(&mut m.languages, "language");
}

/// The `general.*` keys, in the order llama.cpp's converter writes them.
pub fn general_keys(
    dir: &Path,
    config_raw: &serde_json::Map<String, Json>,
    total_params: u64,
) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = vec![("general.type".into(), Value::from("model"))];
    out.extend(sampling_keys(dir));
    let mut m = Fields::default();
    fill_from_card(&mut m, &model_card(dir), total_params as i64);
    let fill = |m: &mut Fields, c: IdComponents| {
        m.name = m.name.take().or(c.name.map(|n| id_to_title(&n)));
        m.organization = m
            .organization
            .take()
            .or(c.organization.map(|o| id_to_title(&o)));
        m.basename = m.basename.take().or(c.basename);
        m.finetune = m.finetune.take().or(c.finetune);
        m.version = m.version.take().or(c.version);
        m.size_label = m.size_label.take().or(c.size_label);
    };
    if let Some(id) = config_raw.get("_name_or_path").and_then(Json::as_str) {
        if id.matches('/').count() <= 1 {
            fill(&mut m, model_id_components(id, total_params as i64));
        }
    }
    let dir_name = dir
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    if !dir_name.is_empty() {
        fill(&mut m, model_id_components(&dir_name, total_params as i64));
    }
    let name = m.name.take().unwrap_or(dir_name);
    if m.size_label.is_none() && total_params > 0 {
        m.size_label = Some(size_label(total_params));
    }
    let mut put = |k: &str, v: Option<String>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            out.push((format!("general.{k}"), Value::String(v)));
        }
    };
    put("name", Some(name));
    put("author", m.author);
    put("version", m.version);
    put("organization", m.organization);
    put("finetune", m.finetune);
    put("basename", m.basename);
    put("description", m.description);
    put("size_label", m.size_label);
    put("license", m.license);
    put("license.name", m.license_name);
    put("license.link", m.license_link);
    put("source.url", m.source_url);
    put("source.doi", m.source_doi);
    put("source.uuid", m.source_uuid);
    put("source.repo_url", m.source_repo_url);
    for (group, list) in [("base_model", m.base_models), ("dataset", m.datasets)] {
        let Some(list) = list else { continue };
        out.push((
            format!("general.{group}.count"),
            Value::U32(list.len() as u32),
        ));
        for (i, entry) in list.iter().enumerate() {
            for field in [
                "name",
                "author",
                "version",
                "organization",
                "description",
                "url",
                "doi",
                "uuid",
                "repo_url",
            ] {
                if let Some((_, v)) = entry.iter().find(|(k, _)| k == field) {
                    if !v.is_empty() {
                        out.push((
                            format!("general.{group}.{i}.{field}"),
                            Value::String(v.clone()),
                        ));
                    }
                }
            }
        }
    }
    for (k, list) in [("tags", m.tags), ("languages", m.languages)] {
        if let Some(l) = list.filter(|l| !l.is_empty()) {
            out.push((
                format!("general.{k}"),
                Value::Array(crate::gguf::Array::String(l)),
            ));
        }
    }
    out
}

/// `general.sampling.*` from `generation_config.json` (ignored when missing or unreadable).
fn sampling_keys(dir: &Path) -> Vec<(String, Value)> {
    let Ok(text) = std::fs::read_to_string(dir.join("generation_config.json")) else {
        return Vec::new();
    };
    let Ok(Json::Object(g)) = serde_json::from_str::<Json>(&text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let int = |k: &str| {
        g.get(k)
            .and_then(Json::as_i64)
            .map(|v| Value::I32(v as i32))
    };
    let float = |k: &str| {
        g.get(k)
            .and_then(Json::as_f64)
            .map(|v| Value::F32(v as f32))
    };
    let mut push = |k: &str, v: Option<Value>| {
        if let Some(v) = v {
            out.push((format!("general.sampling.{k}"), v));
        }
    };
    push(
        "sequence",
        g.get("sequence").and_then(Json::as_str).map(Value::from),
    );
    push("top_k", int("top_k"));
    push("top_p", float("top_p"));
    push("min_p", float("min_p"));
    push("xtc_probability", float("xtc_probability"));
    push("xtc_threshold", float("xtc_threshold"));
    push("temp", float("temperature"));
    push("penalty_last_n", int("penalty_last_n"));
    push(
        "penalty_repeat",
        float("penalty_repeat").or_else(|| float("repetition_penalty")),
    );
    push("mirostat", int("mirostat"));
    push("mirostat_tau", float("mirostat_tau"));
    push("mirostat_eta", float("mirostat_eta"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_ids_parse_like_llama_cpp() {
        // Rows observed from llama.cpp's converter (see the convert notes in docs).
        let c = model_id_components("Qwen2.5-0.5B-Instruct", 494_032_768);
        assert_eq!(
            id_to_title(c.name.as_deref().unwrap()),
            "Qwen2.5 0.5B Instruct"
        );
        assert_eq!(c.basename.as_deref(), Some("Qwen2.5"));
        assert_eq!(c.finetune.as_deref(), Some("Instruct"));
        assert_eq!(c.size_label.as_deref(), Some("0.5B"));
        let c = model_id_components("Qwen2.5-0.5B-Instruct", 10_000_000);
        assert_eq!(c.finetune.as_deref(), Some("0.5b-Instruct"));
        assert_eq!(c.size_label, None);
        let c = model_id_components("bge-small-en-v1.5", 33_000_000);
        assert_eq!(id_to_title(c.name.as_deref().unwrap()), "Bge Small En v1.5");
        assert_eq!(c.basename.as_deref(), Some("bge"));
        assert_eq!(c.finetune.as_deref(), Some("en"));
        assert_eq!(c.version.as_deref(), Some("v1.5"));
        assert_eq!(c.size_label.as_deref(), Some("small"));
        let c = model_id_components("ModernBERT-base", 149_000_000);
        assert_eq!(id_to_title(c.name.as_deref().unwrap()), "ModernBERT Base");
        assert_eq!((c.basename, c.size_label), (None, None));
        let c = model_id_components("ms-marco-MiniLM-L-6-v2", 22_000_000);
        assert_eq!(
            id_to_title(c.name.as_deref().unwrap()),
            "Ms Marco MiniLM L 6 v2"
        );
        assert_eq!(c.basename.as_deref(), Some("ms-marco-MiniLM-L"));
        assert_eq!(c.version.as_deref(), Some("6-v2"));
        assert_eq!(id_to_title("cls2default"), "Cls2Default");
    }

    #[test]
    fn size_labels() {
        assert_eq!(size_label(494_032_768), "494M");
        assert_eq!(size_label(1_543_714_304), "1.5B");
        assert_eq!(size_label(7_615_616_512), "7.6B");
        assert_eq!(size_label(3_400_000), "3.4M");
        assert_eq!(size_label(999), "1.0K");
        assert_eq!(size_label(10_000_000), "10M");
    }
}
