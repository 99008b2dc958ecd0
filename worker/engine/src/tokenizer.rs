//! A model folder's tokenizer as transformers sets it up: tokenizer.json (or a Llama SentencePiece
//! tokenizer.model, converted by [`crate::sentencepiece`]) plus the special tokens, flags and
//! chat template of tokenizer_config.json (or chat_template.jinja).

use std::path::Path;

use serde_json::Value;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{
    AddedToken, Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

use crate::error::LoadError;
use crate::model_dir::ModelDir;
use crate::sentencepiece;
use herd_rewardbench::chat::JinjaTemplate;

/// Tokenizer classes whose `add_bos_token`/`add_eos_token` flags rebuild the post-processor in
/// transformers (LlamaTokenizerFast.update_post_processor and its relatives). For every other
/// class, RewardBench's `add_eos_token = True` has no effect.
const FLAG_DRIVEN_CLASSES: &[&str] = &[
    "LlamaTokenizer",
    "LlamaTokenizerFast",
    "CodeLlamaTokenizer",
    "CodeLlamaTokenizerFast",
    "GemmaTokenizer",
    "GemmaTokenizerFast",
];

pub struct RewardTokenizer {
    tokenizer: Tokenizer,
    class: String,
    add_bos_token: bool,
    add_eos_token: bool,
    bos: Option<(String, u32)>,
    eos: Option<(String, u32)>,
    /// tokenizer_config's `cls_token` (Athene's pipeline appends it)
    cls: Option<(String, u32)>,
    pad_id: u32,
    /// whether tokenizer_config names a pad token (else pad_id is RewardBench's EOS fallback)
    has_pad_token: bool,
    chat_template: Option<JinjaTemplate>,
    /// `truncation_side` of tokenizer_config.json (transformers' default: right)
    truncation_side: TruncationSide,
    /// a token a reward model reads its score at, appended to classifier inputs
    /// (`ModelSpec::reward_token` for InternLM2, the cls_token for Athene)
    reward_token: Option<AppendedToken>,
}

/// A token a reward model's pipeline appends to every classifier input, where the reward is read
/// (see `encode::classifier_inputs_masked`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppendedToken {
    pub id: u32,
    /// the text is encoded with the tokenizer's special tokens (its BOS) before the token
    pub special_tokens: bool,
    /// appended even to a row that already ends with it
    pub always: bool,
}

impl AppendedToken {
    /// InternLM2Pipeline (rewardbench/models/internlm.py, rewardbench 0.1.4): the text encoded
    /// without special tokens (the chat template writes BOS), `id` appended unless the row
    /// already ends with it.
    pub fn internlm2(id: u32) -> Self {
        Self {
            id,
            special_tokens: false,
            always: false,
        }
    }

    /// AtheneRewardPipeline (the Athene-RM model cards): `text + cls_token` encoded with the
    /// special tokens, so the tokenizer's BOS leads and the cls token always ends the row.
    pub fn athene(id: u32) -> Self {
        Self {
            id,
            special_tokens: true,
            always: true,
        }
    }
}

/// Which end `tokenizer(..., truncation=True, max_length=n)` cuts: transformers'
/// `truncation_side`, `"right"` unless tokenizer_config.json says otherwise.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TruncationSide {
    Left,
    #[default]
    Right,
}

impl TruncationSide {
    fn direction(self) -> TruncationDirection {
        match self {
            TruncationSide::Left => TruncationDirection::Left,
            TruncationSide::Right => TruncationDirection::Right,
        }
    }
}

/// The classes whose folders may hold only a SentencePiece `tokenizer.model`: AutoTokenizer
/// loads them as LlamaTokenizerFast, which converts it with LlamaConverter.
const LLAMA_CLASSES: &[&str] = &["LlamaTokenizer", "LlamaTokenizerFast"];

/// LlamaTokenizerFast.__init__'s defaults for `unk_token`, `bos_token` and `eos_token`.
fn llama_default(name: &str) -> Option<&'static str> {
    match name {
        "unk_token" => Some("<unk>"),
        "bos_token" => Some("<s>"),
        "eos_token" => Some("</s>"),
        _ => None,
    }
}

/// transformers' `CHAT_TEMPLATE_FILE`: a template kept beside tokenizer_config.json.
pub const CHAT_TEMPLATE_FILE: &str = "chat_template.jinja";
/// transformers' `CHAT_TEMPLATE_DIR`: named templates, read by transformers >= 4.52 only.
pub const CHAT_TEMPLATE_DIR: &str = "additional_chat_templates";

/// The chat template transformers 4.51.0 (the version rewardbench 0.1.4 pins) gives the
/// tokenizer: `chat_template.jinja` when the folder has one, else tokenizer_config's
/// `chat_template` (tokenization_utils_base.py `_from_pretrained`: the file "clobbers any
/// template in the config", string or list of named templates alike). The file is read as
/// Python's text-mode `open()` reads it: UTF-8, with `\r\n` and `\r` turned into `\n`.
/// `additional_chat_templates/` is not read by 4.51.0 (later versions add its files as named
/// templates), so it is ignored here too, with a warning.
fn chat_template(dir: &ModelDir, config: &Value) -> Result<Option<JinjaTemplate>, LoadError> {
    let config_path = dir.path("tokenizer_config.json");
    let extra = dir.path(CHAT_TEMPLATE_DIR);
    if extra.is_dir() {
        tracing::warn!(
            "{}: ignored, as transformers 4.51.0 (pinned by rewardbench 0.1.4) ignores it",
            extra.display()
        );
    }
    let file = dir.path(CHAT_TEMPLATE_FILE);
    if !file.exists() {
        return JinjaTemplate::from_tokenizer_config(config)
            .map_err(|e| LoadError::file(config_path, e));
    }
    let bytes = std::fs::read(&file).map_err(|e| LoadError::file(&file, e))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| LoadError::file(&file, format!("not UTF-8 text: {e}")))?;
    let source = text.replace("\r\n", "\n").replace('\r', "\n");
    // the config still supplies the special tokens the template can use
    let mut config = match config {
        Value::Null => Value::Object(Default::default()),
        other => other.clone(),
    };
    let Some(object) = config.as_object_mut() else {
        return Err(LoadError::file(config_path, "expected a JSON object"));
    };
    object.insert("chat_template".to_string(), Value::String(source));
    JinjaTemplate::from_tokenizer_config(&config).map_err(|e| LoadError::file(&file, e))
}

/// The fast tokenizer AutoTokenizer builds for the folder: tokenizer.json, or, for a Llama
/// tokenizer without one (or whose config sets `add_prefix_space`, which makes
/// LlamaTokenizerFast.__init__ convert from the slow tokenizer), the SentencePiece
/// `tokenizer.model` converted as transformers' LlamaConverter does.
fn backend(
    dir: &ModelDir,
    config: &Value,
    special_map: &Value,
    class: &str,
) -> Result<Tokenizer, LoadError> {
    let json_path = dir.path("tokenizer.json");
    let model_path = dir.path("tokenizer.model");
    let config_path = dir.path("tokenizer_config.json");
    let llama = LLAMA_CLASSES.contains(&class);
    let set = |name: &str| config.get(name).is_some_and(|v| !v.is_null());
    let from_slow = llama
        && (set("add_prefix_space")
            || config.get("from_slow").and_then(Value::as_bool) == Some(true));
    if json_path.is_file() && !(from_slow && model_path.is_file()) {
        return Tokenizer::from_file(&json_path).map_err(|e| LoadError::file(&json_path, e));
    }
    if !model_path.is_file() {
        return Err(LoadError::file(
            &json_path,
            "missing, and there is no SentencePiece tokenizer.model either (pass --tokenizer DIR \
             to use another folder's)",
        ));
    }
    if !llama {
        return Err(LoadError::file(
            &model_path,
            format!(
                "herd converts a SentencePiece tokenizer.model only for Llama tokenizers, and \
                 tokenizer_config.json names tokenizer_class {class:?} (expected one of {}); add \
                 the folder's tokenizer.json",
                LLAMA_CLASSES.join(", ")
            ),
        ));
    }
    let config_bool = |name: &str, default: bool| -> Result<bool, LoadError> {
        match config.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(LoadError::file(
                &config_path,
                format!("{name} must be true, false or null, not {other}"),
            )),
        }
    };
    let decoder_entries =
        added_tokens_decoder(config).map_err(|e| LoadError::file(&config_path, e))?;
    let first_three = [0u64, 1, 2].map(|id| {
        decoder_entries
            .iter()
            .find(|(at, _)| *at == id)
            .map(|(_, token)| token.content.clone())
    });
    let options = sentencepiece::LlamaOptions {
        // LlamaTokenizerFast: `legacy=None` means the legacy behaviour
        legacy: config_bool("legacy", true)?,
        // the slow LlamaTokenizer's default, which LlamaConverter reads
        add_prefix_space: config_bool("add_prefix_space", true)?,
        first_three,
    };
    let proto =
        sentencepiece::read_model(&model_path).map_err(|e| LoadError::file(&model_path, e))?;
    let mut tokenizer = sentencepiece::llama_tokenizer(&proto, &options)
        .map_err(|e| LoadError::file(&model_path, e))?;
    let specials = special_tokens(
        config,
        special_map,
        !decoder_entries.is_empty(),
        &decoder_entries,
    )
    .map_err(|e| LoadError::file(&config_path, e))?;
    sentencepiece::add_config_tokens(&mut tokenizer, &decoder_entries, &specials)
        .map_err(|e| LoadError::file(&config_path, e))?;
    Ok(tokenizer)
}

/// tokenizer_config's `added_tokens_decoder`: `{"<id>": {AddedToken fields}}`.
fn added_tokens_decoder(config: &Value) -> Result<Vec<(u64, AddedToken)>, String> {
    let Some(entries) = config.get("added_tokens_decoder") else {
        return Ok(Vec::new());
    };
    let Some(entries) = entries.as_object() else {
        return Err("added_tokens_decoder must be an object of id -> token".to_string());
    };
    entries
        .iter()
        .map(|(id, entry)| {
            let id: u64 = id
                .parse()
                .map_err(|_| format!("added_tokens_decoder key {id:?} is not a token id"))?;
            let token = sentencepiece::added_token(entry, false)
                .map_err(|e| format!("added_tokens_decoder[{id}]: {e}"))?;
            Ok((id, token))
        })
        .collect()
}

/// The special tokens transformers 4.51.0 hands the tokenizer, in `SPECIAL_TOKENS_ATTRIBUTES`
/// order. Without `added_tokens_decoder` (the legacy layout) special_tokens_map.json's entries
/// replace the config's, objects becoming special AddedTokens; with it, a token whose content
/// has an entry there becomes that entry. LlamaTokenizerFast's defaults fill unk/bos/eos.
fn special_tokens(
    config: &Value,
    special_map: &Value,
    has_decoder: bool,
    decoder: &[(u64, AddedToken)],
) -> Result<Vec<sentencepiece::SpecialToken>, String> {
    use sentencepiece::SpecialToken;
    let one = |value: &Value, key: &str| -> Result<Option<SpecialToken>, String> {
        let token = match value {
            Value::Null => return Ok(None),
            Value::String(text) => SpecialToken::Text(text.clone()),
            Value::Object(_) => SpecialToken::Added(
                sentencepiece::added_token(value, true).map_err(|e| format!("{key}: {e}"))?,
            ),
            other => {
                return Err(format!(
                    "{key} must be a string, a token object or null, not {other}"
                ))
            }
        };
        if has_decoder {
            let content = match &token {
                SpecialToken::Text(text) => text.as_str(),
                SpecialToken::Added(added) => added.content.as_str(),
            };
            if let Some((_, entry)) = decoder.iter().find(|(_, t)| t.content == content) {
                return Ok(Some(SpecialToken::Added(entry.clone())));
            }
        }
        Ok(Some(token))
    };
    let lookup = |key: &str| -> Option<&Value> {
        if !has_decoder {
            if let Some(value) = special_map.get(key) {
                return Some(value);
            }
        }
        config.get(key)
    };
    let mut tokens = Vec::new();
    for key in [
        "bos_token",
        "eos_token",
        "unk_token",
        "sep_token",
        "pad_token",
        "cls_token",
        "mask_token",
    ] {
        match lookup(key) {
            Some(value) => tokens.extend(one(value, key)?),
            None => tokens.extend(llama_default(key).map(|t| SpecialToken::Text(t.to_string()))),
        }
    }
    match lookup("additional_special_tokens") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for item in items {
                tokens.extend(one(item, "additional_special_tokens")?);
            }
        }
        Some(other) => {
            return Err(format!(
                "additional_special_tokens must be a list, not {other}"
            ))
        }
    }
    Ok(tokens)
}

/// `"<s>"` or `{"content": "<s>", ...}` in tokenizer_config.json.
fn token_string(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

impl RewardTokenizer {
    pub fn load(dir: &ModelDir) -> Result<Self, LoadError> {
        let config = dir
            .read_optional_json("tokenizer_config.json")?
            .unwrap_or(Value::Null);
        let special_map = dir
            .read_optional_json("special_tokens_map.json")?
            .unwrap_or(Value::Null);
        let class = config
            .get("tokenizer_class")
            .and_then(Value::as_str)
            .unwrap_or("PreTrainedTokenizerFast")
            .to_string();
        let llama = LLAMA_CLASSES.contains(&class.as_str());
        let special = |name: &str| {
            token_string(config.get(name))
                .or_else(|| token_string(special_map.get(name)))
                .or_else(|| {
                    // LlamaTokenizerFast's keyword defaults, for a token named nowhere
                    let absent = config.get(name).is_none() && special_map.get(name).is_none();
                    llama_default(name)
                        .filter(|_| llama && absent)
                        .map(str::to_string)
                })
        };
        let tokenizer = backend(dir, &config, &special_map, &class)?;
        let with_id = |name: &str| -> Result<Option<(String, u32)>, LoadError> {
            let Some(token) = special(name) else {
                return Ok(None);
            };
            let id = tokenizer.token_to_id(&token).ok_or_else(|| {
                LoadError::file(
                    dir.path("tokenizer_config.json"),
                    format!("{name} {token:?} is not in the vocabulary"),
                )
            })?;
            Ok(Some((token, id)))
        };
        let bos = with_id("bos_token")?;
        let eos = with_id("eos_token")?;
        let pad = with_id("pad_token")?;
        // only Athene's pipeline reads it: a cls_token outside the vocabulary is not an error here
        let cls = special("cls_token")
            .and_then(|token| tokenizer.token_to_id(&token).map(|id| (token, id)));
        // RewardBench: a tokenizer without a pad token pads with EOS
        let has_pad_token = pad.is_some();
        let pad_id = pad.or_else(|| eos.clone()).map(|(_, id)| id).unwrap_or(0);
        let flag = |name: &str, default: bool| {
            config.get(name).and_then(Value::as_bool).unwrap_or(default)
        };
        let chat_template = chat_template(dir, &config)?;
        // PreTrainedTokenizerBase.__init__: truncation_side must be "right" or "left"
        let truncation_side = match config.get("truncation_side") {
            None | Some(Value::Null) => TruncationSide::Right,
            Some(Value::String(side)) if side == "right" => TruncationSide::Right,
            Some(Value::String(side)) if side == "left" => TruncationSide::Left,
            Some(other) => {
                return Err(LoadError::file(
                    dir.path("tokenizer_config.json"),
                    format!("truncation_side should be \"right\" or \"left\", found {other}"),
                ))
            }
        };
        let mut loaded = Self {
            tokenizer,
            class,
            add_bos_token: flag("add_bos_token", true),
            add_eos_token: flag("add_eos_token", false),
            bos,
            eos,
            cls,
            pad_id,
            has_pad_token,
            chat_template,
            truncation_side,
            reward_token: None,
        };
        loaded.update_post_processor(dir.root())?;
        Ok(loaded)
    }

    pub fn chat_template(&self) -> Option<&JinjaTemplate> {
        self.chat_template.as_ref()
    }

    pub fn bos_id(&self) -> Option<u32> {
        self.bos.as_ref().map(|(_, id)| *id)
    }

    pub fn eos_id(&self) -> Option<u32> {
        self.eos.as_ref().map(|(_, id)| *id)
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The side the tokenizer truncates by default (tokenizer_config.json `truncation_side`).
    pub fn truncation_side(&self) -> TruncationSide {
        self.truncation_side
    }

    pub fn has_pad_token(&self) -> bool {
        self.has_pad_token
    }

    /// Whether `id` is in the vocabulary (added tokens included).
    pub fn has_id(&self, id: u32) -> bool {
        self.tokenizer.id_to_token(id).is_some()
    }

    fn flag_driven(&self) -> bool {
        FLAG_DRIVEN_CLASSES.contains(&self.class.as_str())
    }

    /// tokenizer_config's `cls_token` and its id.
    pub fn cls(&self) -> Option<(&str, u32)> {
        self.cls.as_ref().map(|(token, id)| (token.as_str(), *id))
    }

    /// The token every classifier input must end with (see `encode::classifier_inputs_masked`).
    pub fn reward_token(&self) -> Option<AppendedToken> {
        self.reward_token
    }

    pub fn set_reward_token(&mut self, token: Option<AppendedToken>) {
        self.reward_token = token;
    }

    /// RewardBench sets `tokenizer.add_eos_token = True` when it formats with FastChat
    /// templates; only flag-driven tokenizer classes react to it.
    pub fn set_add_eos_token(&mut self, root: &Path) -> Result<(), LoadError> {
        self.add_eos_token = true;
        self.update_post_processor(root)
    }

    /// Mirrors transformers' update_post_processor: `[bos] $A [eos]` from the flags.
    fn update_post_processor(&mut self, root: &Path) -> Result<(), LoadError> {
        if !self.flag_driven() {
            return Ok(());
        }
        let mut pieces: Vec<String> = Vec::new();
        let mut special = Vec::new();
        if let (true, Some((token, id))) = (self.add_bos_token, &self.bos) {
            pieces.push(format!("{token}:0"));
            special.push((token.clone(), *id));
        }
        pieces.push("$A:0".to_string());
        if let (true, Some((token, id))) = (self.add_eos_token, &self.eos) {
            pieces.push(format!("{token}:0"));
            special.push((token.clone(), *id));
        }
        let single = pieces.join(" ");
        let pair = format!(
            "{single} {}",
            single.replace(":0", ":1").replace("$A", "$B")
        );
        let processor = TemplateProcessing::builder()
            .try_single(single.as_str())
            .and_then(|b| b.try_pair(pair.as_str()))
            .map_err(|e| LoadError::file(root, format!("tokenizer post-processor: {e}")))?
            .special_tokens(special)
            .build()
            .map_err(|e| LoadError::file(root, format!("tokenizer post-processor: {e}")))?;
        self.tokenizer.with_post_processor(Some(processor));
        Ok(())
    }

    /// Token ids of `texts`, special tokens added, truncated from the left to `max_length`
    /// (special tokens kept), as RewardBench's pipeline tokenizes.
    pub fn encode_truncated(
        &self,
        texts: Vec<String>,
        max_length: usize,
    ) -> Result<Vec<Vec<u32>>, String> {
        self.encode_truncated_from(texts, max_length, TruncationSide::Left)
    }

    /// Token ids of `texts`, special tokens added, truncated from `side` to `max_length`
    /// (special tokens kept, as transformers reserves room for them).
    pub fn encode_truncated_from(
        &self,
        texts: Vec<String>,
        max_length: usize,
        side: TruncationSide,
    ) -> Result<Vec<Vec<u32>>, String> {
        let mut tokenizer = self.tokenizer.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                direction: side.direction(),
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(|e| e.to_string())?;
        Self::ids(&tokenizer, texts, true)
    }

    /// Token ids of `texts` without special tokens or truncation (DPO builds its own).
    pub fn encode_plain(&self, texts: Vec<String>) -> Result<Vec<Vec<u32>>, String> {
        Self::ids(&self.tokenizer, texts, false)
    }

    fn ids(
        tokenizer: &Tokenizer,
        texts: Vec<String>,
        special: bool,
    ) -> Result<Vec<Vec<u32>>, String> {
        let encodings = tokenizer
            .encode_batch(texts, special)
            .map_err(|e| e.to_string())?;
        Ok(encodings
            .into_iter()
            .map(|e| e.get_ids().to_vec())
            .collect())
    }
}
