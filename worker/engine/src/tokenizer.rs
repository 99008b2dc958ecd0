//! A model folder's tokenizer as transformers sets it up: tokenizer.json plus the special tokens,
//! flags and chat template of tokenizer_config.json.

use std::path::Path;

use serde_json::Value;
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::LoadError;
use crate::model_dir::ModelDir;
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
    pad_id: u32,
    /// whether tokenizer_config names a pad token (else pad_id is RewardBench's EOS fallback)
    has_pad_token: bool,
    chat_template: Option<JinjaTemplate>,
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
        let json_path = dir.path("tokenizer.json");
        if !json_path.is_file() {
            return Err(LoadError::file(
                &json_path,
                "missing (herd needs the fast-tokenizer file; pass --tokenizer DIR to use another folder's)",
            ));
        }
        let tokenizer =
            Tokenizer::from_file(&json_path).map_err(|e| LoadError::file(&json_path, e))?;
        let config = dir
            .read_optional_json("tokenizer_config.json")?
            .unwrap_or(Value::Null);
        let special_map = dir
            .read_optional_json("special_tokens_map.json")?
            .unwrap_or(Value::Null);
        let special = |name: &str| {
            token_string(config.get(name)).or_else(|| token_string(special_map.get(name)))
        };
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
        // RewardBench: a tokenizer without a pad token pads with EOS
        let has_pad_token = pad.is_some();
        let pad_id = pad.or_else(|| eos.clone()).map(|(_, id)| id).unwrap_or(0);
        let flag = |name: &str, default: bool| {
            config.get(name).and_then(Value::as_bool).unwrap_or(default)
        };
        let chat_template = JinjaTemplate::from_tokenizer_config(&config)
            .map_err(|e| LoadError::file(dir.path("tokenizer_config.json"), e))?;
        let mut loaded = Self {
            tokenizer,
            class: config
                .get("tokenizer_class")
                .and_then(Value::as_str)
                .unwrap_or("PreTrainedTokenizerFast")
                .to_string(),
            add_bos_token: flag("add_bos_token", true),
            add_eos_token: flag("add_eos_token", false),
            bos,
            eos,
            pad_id,
            has_pad_token,
            chat_template,
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
        let mut tokenizer = self.tokenizer.clone();
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                direction: TruncationDirection::Left,
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
