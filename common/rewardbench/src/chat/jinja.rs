//! Hugging Face chat templates (`tokenizer_config.json` `chat_template`), rendered like
//! transformers 4.57 `apply_chat_template(messages, tokenize=False)`:
//!
//! - jinja2 `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)` with loop
//!   controls, no auto-escaping and no kept trailing newline;
//! - globals `raise_exception(message)` and `strftime_now(format)`; a `tojson` filter that is
//!   Python's `json.dumps(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`
//!   (no HTML escaping);
//! - Python string/dict methods (`.strip()`, `.items()`, `.startswith()`, ...) through
//!   minijinja-contrib's pycompat;
//! - variables `messages`, `add_generation_prompt` (false), `tools` and `documents` (none), and the
//!   tokenizer's special tokens (`bos_token`, `eos_token`, `unk_token`, `pad_token`, `sep_token`,
//!   `cls_token`, `mask_token`, `additional_special_tokens`); a token that is not set is
//!   undefined, as in transformers' `special_tokens_map`;
//! - `{% generation %}...{% endgeneration %}` (transformers' AssistantTracker) renders its body.
//!
//! Values print as Python would for `None`, `True`, `False` and floats. Rendering is bounded by
//! [`RenderLimits`]: minijinja's fuel (instructions and allocated data) and an output size cap.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::{Kwargs, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, Value};

use super::{ChatError, Message};
use crate::pyjson::{self, DumpOptions, Encoder};

const TEMPLATE_NAME: &str = "chat_template";

/// The special tokens a chat template can refer to. `None` (or an empty string) leaves the
/// variable undefined in the template, as transformers does for tokens that are not set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub unk_token: Option<String>,
    pub pad_token: Option<String>,
    pub sep_token: Option<String>,
    pub cls_token: Option<String>,
    pub mask_token: Option<String>,
    pub additional_special_tokens: Vec<String>,
}

impl SpecialTokens {
    /// Reads the tokens from a parsed `tokenizer_config.json`: each is a string, an AddedToken
    /// object `{"content": ...}`, or null/absent. Class defaults that some Python tokenizer classes
    /// add when a token is absent are not applied.
    pub fn from_tokenizer_config(config: &serde_json::Value) -> Result<Self, ChatError> {
        let token = |key: &str| token_from_config(config, key);
        let additional_special_tokens = match config.get("additional_special_tokens") {
            None | Some(serde_json::Value::Null) => Vec::new(),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|item| {
                    token_content(item).ok_or_else(|| invalid_token("additional_special_tokens"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(invalid_token("additional_special_tokens")),
        };
        Ok(Self {
            bos_token: token("bos_token")?,
            eos_token: token("eos_token")?,
            unk_token: token("unk_token")?,
            pad_token: token("pad_token")?,
            sep_token: token("sep_token")?,
            cls_token: token("cls_token")?,
            mask_token: token("mask_token")?,
            additional_special_tokens,
        })
    }

    fn named(&self) -> [(&'static str, &Option<String>); 7] {
        [
            ("bos_token", &self.bos_token),
            ("eos_token", &self.eos_token),
            ("unk_token", &self.unk_token),
            ("pad_token", &self.pad_token),
            ("sep_token", &self.sep_token),
            ("cls_token", &self.cls_token),
            ("mask_token", &self.mask_token),
        ]
    }
}

fn token_content(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(map) => map.get("content")?.as_str().map(str::to_owned),
        _ => None,
    }
}

fn token_from_config(config: &serde_json::Value, key: &str) -> Result<Option<String>, ChatError> {
    match config.get(key) {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(value) => token_content(value)
            .map(Some)
            .ok_or_else(|| invalid_token(key)),
    }
}

fn invalid_token(key: &str) -> ChatError {
    ChatError::InvalidTokenizerConfig {
        detail: format!("{key} must be a string, an object with a string \"content\", or null"),
    }
}

/// Bounds on one render, so that a hostile or broken template cannot run or grow without end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenderLimits {
    /// minijinja fuel: about one unit per instruction and per 64 bytes of data the template
    /// creates, so it bounds both time and memory.
    pub fuel: u64,
    /// Largest accepted output, in bytes.
    pub max_output_bytes: usize,
}

impl Default for RenderLimits {
    /// 20 million fuel (well under a second, at most about 1.3 GB of data; real chat templates
    /// need a few thousand per conversation) and 64 MiB of output.
    fn default() -> Self {
        Self {
            fuel: 20_000_000,
            max_output_bytes: 64 << 20,
        }
    }
}

/// A compiled HF chat template with the special tokens it renders with. Cheap to clone (shared).
#[derive(Clone)]
pub struct JinjaTemplate {
    inner: Arc<Compiled>,
}

#[derive(Clone)]
struct Compiled {
    env: Environment<'static>,
    source: String,
    special_tokens: SpecialTokens,
    limits: RenderLimits,
}

impl std::fmt::Debug for JinjaTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JinjaTemplate")
            .field("source", &self.inner.source)
            .field("special_tokens", &self.inner.special_tokens)
            .field("limits", &self.inner.limits)
            .finish()
    }
}

/// The error `raise_exception` returns, recognised again after rendering.
#[derive(Debug)]
struct RaisedByTemplate(String);

impl std::fmt::Display for RaisedByTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RaisedByTemplate {}

impl JinjaTemplate {
    /// Compiles `source`; syntax errors are reported here.
    pub fn new(source: &str, special_tokens: SpecialTokens) -> Result<Self, ChatError> {
        let limits = RenderLimits::default();
        let mut env = Environment::new();
        let syntax = SyntaxConfig::builder()
            .trim_blocks(true)
            .lstrip_blocks(true)
            .keep_trailing_newline(false)
            .build()
            .map_err(|err| ChatError::TemplateSyntax {
                detail: err.to_string(),
            })?;
        env.set_syntax(syntax);
        env.set_auto_escape_callback(|_| AutoEscape::None);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.set_formatter(python_formatter);
        env.set_fuel(Some(limits.fuel));
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, rewrite_generation_tags(source))
            .map_err(|err| ChatError::TemplateSyntax {
                detail: describe(&err),
            })?;
        Ok(Self {
            inner: Arc::new(Compiled {
                env,
                source: source.to_owned(),
                special_tokens,
                limits,
            }),
        })
    }

    /// The template of a parsed `tokenizer_config.json`, or `None` when it has no
    /// `chat_template`. A list of `{name, template}` (several named templates) yields the one named
    /// `"default"`, as `apply_chat_template` picks it.
    pub fn from_tokenizer_config(config: &serde_json::Value) -> Result<Option<Self>, ChatError> {
        if !config.is_object() {
            return Err(ChatError::InvalidTokenizerConfig {
                detail: "expected a JSON object".to_owned(),
            });
        }
        let source = match config.get("chat_template") {
            None | Some(serde_json::Value::Null) => return Ok(None),
            Some(serde_json::Value::String(source)) => source.clone(),
            Some(serde_json::Value::Array(items)) => named_template(items, "default")?,
            Some(_) => {
                return Err(ChatError::InvalidTokenizerConfig {
                    detail: "chat_template must be a string or a list of {name, template}"
                        .to_owned(),
                })
            }
        };
        let tokens = SpecialTokens::from_tokenizer_config(config)?;
        Self::new(&source, tokens).map(Some)
    }

    /// Replaces the default [`RenderLimits`].
    pub fn with_limits(mut self, limits: RenderLimits) -> Self {
        let inner = Arc::make_mut(&mut self.inner);
        inner.env.set_fuel(Some(limits.fuel));
        inner.limits = limits;
        self
    }

    pub fn source(&self) -> &str {
        &self.inner.source
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.inner.special_tokens
    }

    pub fn limits(&self) -> RenderLimits {
        self.inner.limits
    }

    /// `apply_chat_template(messages, tokenize=False)`, no generation prompt.
    pub fn render(&self, messages: &[Message]) -> Result<String, ChatError> {
        self.render_with_generation_prompt(messages, false)
    }

    /// Like [`render`](Self::render) with `add_generation_prompt` set as given.
    pub fn render_with_generation_prompt(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String, ChatError> {
        let messages: Value = messages
            .iter()
            .map(|m| {
                Value::from_pairs([("role", m.role.as_str()), ("content", m.content.as_str())])
            })
            .collect();
        let mut ctx: Vec<(&str, Value)> = vec![
            ("messages", messages),
            ("add_generation_prompt", Value::from(add_generation_prompt)),
            ("tools", Value::from(())),
            ("documents", Value::from(())),
        ];
        for (name, token) in self.inner.special_tokens.named() {
            if let Some(token) = token.as_deref().filter(|t| !t.is_empty()) {
                ctx.push((name, Value::from(token)));
            }
        }
        let additional = &self.inner.special_tokens.additional_special_tokens;
        if !additional.is_empty() {
            let tokens: Value = additional.iter().map(String::as_str).collect();
            ctx.push(("additional_special_tokens", tokens));
        }
        let template =
            self.inner
                .env
                .get_template(TEMPLATE_NAME)
                .map_err(|err| ChatError::Render {
                    detail: describe(&err),
                })?;
        let output = template
            .render(Value::from_pairs(ctx))
            .map_err(|err| self.render_error(err))?;
        if output.len() > self.inner.limits.max_output_bytes {
            return Err(ChatError::OutputTooLarge {
                max_bytes: self.inner.limits.max_output_bytes,
            });
        }
        Ok(output)
    }

    fn render_error(&self, err: Error) -> ChatError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
        while let Some(current) = source {
            if let Some(raised) = current.downcast_ref::<RaisedByTemplate>() {
                return ChatError::TemplateException {
                    message: raised.0.clone(),
                };
            }
            source = current.source();
        }
        match err.kind() {
            ErrorKind::OutOfFuel => ChatError::OutOfFuel {
                fuel: self.inner.limits.fuel,
            },
            ErrorKind::SyntaxError => ChatError::TemplateSyntax {
                detail: describe(&err),
            },
            _ => ChatError::Render {
                detail: describe(&err),
            },
        }
    }
}

fn named_template(items: &[serde_json::Value], wanted: &str) -> Result<String, ChatError> {
    let mut names = Vec::new();
    for item in items {
        let name = item.get("name").and_then(|v| v.as_str());
        let template = item.get("template").and_then(|v| v.as_str());
        let (Some(name), Some(template)) = (name, template) else {
            return Err(ChatError::InvalidTokenizerConfig {
                detail: "each chat_template list entry needs string \"name\" and \"template\""
                    .to_owned(),
            });
        };
        if name == wanted {
            return Ok(template.to_owned());
        }
        names.push(name.to_owned());
    }
    Err(ChatError::NoDefaultTemplate { names })
}

/// The error's message with its template line, and the chain of causes.
fn describe(err: &Error) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        let _ = write!(out, ": {cause}");
        source = cause.source();
    }
    out
}

/// transformers' `{% generation %}` block tag (AssistantTracker) only marks its body; turn it into
/// an always-true `if` so the body renders and whitespace control stays that of a block tag.
fn rewrite_generation_tags(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        out.push_str(&rest[..start]);
        let tag = &rest[start..];
        match rewrite_generation_tag(tag) {
            Some((replacement, consumed)) => {
                out.push_str(&replacement);
                rest = &tag[consumed..];
            }
            None => {
                out.push_str("{%");
                rest = &tag[2..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// If `tag` starts with `{%[-+] generation|endgeneration [-+]%}`, the replacement tag and the
/// length of the original.
fn rewrite_generation_tag(tag: &str) -> Option<(String, usize)> {
    let bytes = tag.as_bytes();
    let mut i = 2;
    let open_flag = match bytes.get(i) {
        Some(b'-') | Some(b'+') => {
            i += 1;
            &tag[i - 1..i]
        }
        _ => "",
    };
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    let (keyword, replacement) = if tag[i..].starts_with("endgeneration") {
        ("endgeneration", "endif")
    } else if tag[i..].starts_with("generation") {
        ("generation", "if true")
    } else {
        return None;
    };
    i += keyword.len();
    while bytes.get(i).is_some_and(u8::is_ascii_whitespace) {
        i += 1;
    }
    let close_flag = match bytes.get(i) {
        Some(b'-') | Some(b'+') => {
            i += 1;
            &tag[i - 1..i]
        }
        _ => "",
    };
    if !tag[i..].starts_with("%}") {
        return None;
    }
    Some((
        format!("{{%{open_flag} {replacement} {close_flag}%}}"),
        i + 2,
    ))
}

fn raise_exception(message: Value) -> Result<Value, Error> {
    let message = match message.as_str() {
        Some(s) => s.to_owned(),
        None => message.to_string(),
    };
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(RaisedByTemplate(message)))
}

/// Python prints `None`, `True`, `False` and floats differently from minijinja.
fn python_formatter(out: &mut Output, state: &mut State, value: &Value) -> Result<(), Error> {
    let python = match value.kind() {
        ValueKind::None => Some("None".to_owned()),
        ValueKind::Bool => Some(if value.is_true() { "True" } else { "False" }.to_owned()),
        ValueKind::Number if !value.is_integer() => {
            f64::try_from(value.clone()).ok().map(pyjson::float_repr)
        }
        _ => None,
    };
    match python {
        Some(text) => out
            .write_str(&text)
            .map_err(|_| Error::new(ErrorKind::WriteFailure, "formatting failed")),
        None => minijinja::escape_formatter(out, state, value),
    }
}

/// transformers' `tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False)`,
/// i.e. Python's `json.dumps` with those arguments.
fn tojson(value: &Value, positional: &[Value], kwargs: Kwargs) -> Result<Value, Error> {
    const NAMES: [&str; 4] = ["ensure_ascii", "indent", "separators", "sort_keys"];
    if positional.len() > NAMES.len() {
        return Err(Error::new(
            ErrorKind::TooManyArguments,
            "tojson takes at most 4 arguments (ensure_ascii, indent, separators, sort_keys)",
        ));
    }
    let mut given: [Option<Value>; 4] = Default::default();
    for (slot, value) in given.iter_mut().zip(positional) {
        *slot = Some(value.clone());
    }
    for (slot, name) in given.iter_mut().zip(NAMES) {
        if let Some(value) = kwargs.get::<Option<Value>>(name)? {
            if slot.is_some() {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    format!("tojson got multiple values for argument '{name}'"),
                ));
            }
            *slot = Some(value);
        }
    }
    kwargs.assert_all_used()?;
    let [ensure_ascii, indent, separators, sort_keys] = given;
    let indent = match indent {
        None => None,
        Some(v) if v.is_none() => None,
        Some(v) if v.kind() == ValueKind::String => Some(v.as_str().unwrap_or("").to_owned()),
        Some(v) => match v.as_i64() {
            Some(n) => Some(" ".repeat(usize::try_from(n).unwrap_or(0))),
            None => {
                return Err(Error::new(
                    ErrorKind::InvalidOperation,
                    "tojson indent must be an integer, a string or none",
                ))
            }
        },
    };
    let separators = match separators {
        Some(v) if !v.is_none() => {
            let parts: Vec<Value> = v.try_iter()?.collect();
            match parts.as_slice() {
                [item, key] if item.as_str().is_some() && key.as_str().is_some() => Some((
                    item.as_str().unwrap_or_default().to_owned(),
                    key.as_str().unwrap_or_default().to_owned(),
                )),
                _ => {
                    return Err(Error::new(
                        ErrorKind::InvalidOperation,
                        "tojson separators must be a pair of strings",
                    ))
                }
            }
        }
        _ => None,
    };
    let options = DumpOptions::new(
        ensure_ascii.is_some_and(|v| v.is_true()),
        indent,
        separators,
        sort_keys.is_some_and(|v| v.is_true()),
    );
    let mut encoder = Encoder::new(&options);
    write_json(&mut encoder, value)?;
    Ok(Value::from(encoder.finish()))
}

fn not_serializable(value: &Value) -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        format!("Object of type {} is not JSON serializable", value.kind()),
    )
}

/// Walks a template value through the JSON encoder as Python's `json` walks the Python object.
fn write_json(encoder: &mut Encoder<'_>, value: &Value) -> Result<(), Error> {
    match value.kind() {
        ValueKind::None => encoder.null(),
        ValueKind::Bool => encoder.bool(value.is_true()),
        ValueKind::Number if value.is_integer() => encoder.int(value),
        ValueKind::Number => {
            encoder.float(f64::try_from(value.clone()).map_err(|_| not_serializable(value))?)
        }
        ValueKind::String => encoder.str(value.as_str().unwrap_or_default()),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = value.try_iter()?.collect();
            encoder.list(&items, write_json)?;
        }
        ValueKind::Map => {
            let mut entries = Vec::new();
            for key in value.try_iter()? {
                let item = value.get_item(&key)?;
                entries.push((json_key(&key)?, item));
            }
            encoder.dict(entries, write_json)?;
        }
        _ => return Err(not_serializable(value)),
    }
    Ok(())
}

/// Python converts dict keys that are not strings: numbers, booleans and None.
fn json_key(key: &Value) -> Result<String, Error> {
    match key.kind() {
        ValueKind::String => Ok(key.as_str().unwrap_or_default().to_owned()),
        ValueKind::Number if key.is_integer() => Ok(key.to_string()),
        ValueKind::Number => f64::try_from(key.clone())
            .map(pyjson::json_float)
            .map_err(|_| not_serializable(key)),
        ValueKind::Bool => Ok(if key.is_true() { "true" } else { "false" }.to_owned()),
        ValueKind::None => Ok("null".to_owned()),
        _ => Err(Error::new(
            ErrorKind::InvalidOperation,
            format!(
                "keys must be str, int, float, bool or None, not {}",
                key.kind()
            ),
        )),
    }
}

fn strftime_now(format: String) -> Result<Value, Error> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|_| Error::new(ErrorKind::InvalidOperation, "system clock is before 1970"))?;
    let secs = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
    Ok(Value::from(strftime(&format, secs, now.subsec_micros())))
}

/// Python's `datetime.strftime(format)` (glibc conversions, C locale) for the naive UTC time
/// `unix_seconds` after the epoch: what `strftime_now` renders on a machine whose clock is UTC.
/// `%z` and `%Z` are empty (naive time); unknown conversions are kept as written.
pub fn strftime_utc(format: &str, unix_seconds: i64) -> String {
    strftime(format, unix_seconds, 0)
}

const WEEKDAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];

/// A broken-down UTC time, like C's `struct tm`.
struct Tm {
    year: i64,
    /// 1..=12
    month: u32,
    /// 1..=31
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Sunday
    weekday: u32,
    /// 0-based day of the year
    yday: u32,
    unix_seconds: i64,
    micros: u32,
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl Tm {
    fn from_unix(unix_seconds: i64, micros: u32) -> Self {
        let days = unix_seconds.div_euclid(86_400);
        let secs = unix_seconds.rem_euclid(86_400) as u32;
        let (year, month, day) = civil_from_days(days);
        const CUMULATIVE: [u32; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
        let yday = CUMULATIVE[month as usize - 1] + day - 1 + u32::from(month > 2 && is_leap(year));
        Tm {
            year,
            month,
            day,
            hour: secs / 3600,
            minute: secs / 60 % 60,
            second: secs % 60,
            weekday: (days + 4).rem_euclid(7) as u32,
            yday,
            unix_seconds,
            micros,
        }
    }

    /// ISO 8601 (year, week).
    fn iso_week(&self) -> (i64, u32) {
        let iso_weekday = (self.weekday + 6) % 7 + 1; // Monday = 1
        let week = (self.yday as i64 + 1 - iso_weekday as i64 + 10) / 7;
        let weeks_in = |year: i64| {
            // Weekday of Jan 1 of `year`, from this date's weekday and day of year.
            let jan1 = |y: i64| {
                let days = days_from_civil(y, 1, 1);
                (days + 4).rem_euclid(7) // 0 = Sunday
            };
            let w = jan1(year);
            if w == 4 || (is_leap(year) && w == 3) {
                53
            } else {
                52
            }
        };
        if week < 1 {
            (self.year - 1, weeks_in(self.year - 1))
        } else if week > weeks_in(self.year) as i64 {
            (self.year + 1, 1)
        } else {
            (self.year, week as u32)
        }
    }
}

/// (year, month, day) to days since 1970-01-01 (inverse of `civil_from_days`).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn strftime(format: &str, unix_seconds: i64, micros: u32) -> String {
    let tm = Tm::from_unix(unix_seconds, micros);
    let mut out = String::new();
    let mut chars = format.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let flag = match chars.peek() {
            Some(&(_, f @ ('-' | '_' | '0' | '^'))) => {
                chars.next();
                Some(f)
            }
            _ => None,
        };
        let Some((end, conv)) = chars.next() else {
            out.push_str(&format[start..]);
            break;
        };
        match conversion(&tm, conv, flag) {
            Some(text) => out.push_str(&text),
            None => out.push_str(&format[start..end + conv.len_utf8()]),
        }
    }
    out
}

/// One conversion; `None` when unknown (then glibc keeps the text as written).
fn conversion(tm: &Tm, conv: char, flag: Option<char>) -> Option<String> {
    let num = |value: i64, width: usize, pad: char| -> String {
        let pad = match flag {
            Some('-') => return value.to_string(),
            Some('_') => ' ',
            Some('0') => '0',
            _ => pad,
        };
        let digits = value.abs().to_string();
        let sign = if value < 0 { "-" } else { "" };
        let fill = width.saturating_sub(digits.len() + sign.len());
        format!("{sign}{}{digits}", pad.to_string().repeat(fill))
    };
    let hour12 = match tm.hour % 12 {
        0 => 12,
        h => h,
    };
    let weekday = WEEKDAYS[tm.weekday as usize];
    let month = MONTHS[tm.month as usize - 1];
    let text = match conv {
        'a' => weekday[..3].to_owned(),
        'A' => weekday.to_owned(),
        'b' | 'h' => month[..3].to_owned(),
        'B' => month.to_owned(),
        'c' => strftime("%a %b %e %H:%M:%S %Y", tm.unix_seconds, tm.micros),
        'C' => num(tm.year.div_euclid(100), 2, '0'),
        'd' => num(tm.day.into(), 2, '0'),
        'D' | 'x' => strftime("%m/%d/%y", tm.unix_seconds, tm.micros),
        'e' => num(tm.day.into(), 2, ' '),
        'f' => format!("{:06}", tm.micros),
        'F' => format!("{}-{:02}-{:02}", num(tm.year, 1, '0'), tm.month, tm.day),
        'g' => num(tm.iso_week().0.rem_euclid(100), 2, '0'),
        'G' => num(tm.iso_week().0, 1, '0'),
        'H' => num(tm.hour.into(), 2, '0'),
        'I' => num(hour12.into(), 2, '0'),
        'j' => num(i64::from(tm.yday) + 1, 3, '0'),
        'k' => num(tm.hour.into(), 2, ' '),
        'l' => num(hour12.into(), 2, ' '),
        'm' => num(tm.month.into(), 2, '0'),
        'M' => num(tm.minute.into(), 2, '0'),
        'n' => "\n".to_owned(),
        'p' => if tm.hour < 12 { "AM" } else { "PM" }.to_owned(),
        'P' => if tm.hour < 12 { "am" } else { "pm" }.to_owned(),
        'r' => strftime("%I:%M:%S %p", tm.unix_seconds, tm.micros),
        'R' => format!("{:02}:{:02}", tm.hour, tm.minute),
        's' => tm.unix_seconds.to_string(),
        'S' => num(tm.second.into(), 2, '0'),
        't' => "\t".to_owned(),
        'T' | 'X' => format!("{:02}:{:02}:{:02}", tm.hour, tm.minute, tm.second),
        'u' => ((tm.weekday + 6) % 7 + 1).to_string(),
        'U' => num(i64::from((tm.yday + 7 - tm.weekday) / 7), 2, '0'),
        'V' => num(tm.iso_week().1.into(), 2, '0'),
        'w' => tm.weekday.to_string(),
        'W' => num(i64::from((tm.yday + 7 - (tm.weekday + 6) % 7) / 7), 2, '0'),
        'y' => num(tm.year.rem_euclid(100), 2, '0'),
        'Y' => num(tm.year, 1, '0'),
        'z' | 'Z' => String::new(),
        '%' => "%".to_owned(),
        _ => return None,
    };
    Some(if flag == Some('^') {
        text.to_uppercase()
    } else {
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(source: &str) -> JinjaTemplate {
        let tokens = SpecialTokens {
            bos_token: Some("<s>".into()),
            eos_token: Some("</s>".into()),
            ..SpecialTokens::default()
        };
        JinjaTemplate::new(source, tokens).unwrap()
    }

    #[test]
    fn floats_print_and_serialise_as_python_repr_with_ties_to_even() {
        // 21.716323852539062 is exactly 21.7163238525390625 (0x1.5b761p+4): the two 17-digit
        // neighbours ...062 and ...063 are equally close, and Python breaks the tie to even.
        // Python 3: `repr(21.716323852539062)` and
        // `json.dumps([21.716323852539062, {"k": 21.716323852539062}, 1e-05])` give the strings
        // below (Rust's `{:e}` would end in ...063).
        let t = template(
            "{% set x = 21.716323852539062 %}{{ x }}|{{ [x, {'k': x}, 0.00001] | tojson }}",
        );
        assert_eq!(
            t.render(&[]).unwrap(),
            r#"21.716323852539062|[21.716323852539062, {"k": 21.716323852539062}, 1e-05]"#
        );
    }

    #[test]
    fn generation_tags_become_block_tags() {
        assert_eq!(
            rewrite_generation_tags("a{%- generation -%}b{% endgeneration %}c{% if x %}"),
            "a{%- if true -%}b{% endif %}c{% if x %}"
        );
        assert_eq!(
            rewrite_generation_tags("{%generation%}{% generations %}"),
            "{% if true %}{% generations %}"
        );
    }

    #[test]
    fn hostile_templates_are_bounded() {
        let small = RenderLimits {
            fuel: 1_000_000,
            ..RenderLimits::default()
        };
        let endless = template(
            "{% for a in range(100000) %}{% for b in range(100000) %}{% endfor %}{% endfor %}",
        )
        .with_limits(small);
        let err = endless.render(&[]).unwrap_err();
        assert!(matches!(err, ChatError::OutOfFuel { .. }), "{err}");
        assert!(err.to_string().contains("rendering budget"), "{err}");

        let doubling = template(
            "{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(60) %}\
             {% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s | length }}",
        );
        let err = doubling.render(&[]).unwrap_err();
        assert!(matches!(err, ChatError::OutOfFuel { .. }), "{err}");

        let big = template("{{ 'x' * 1000 }}").with_limits(RenderLimits {
            fuel: 1_000_000,
            max_output_bytes: 999,
        });
        let err = big.render(&[]).unwrap_err();
        assert!(
            matches!(err, ChatError::OutputTooLarge { max_bytes: 999 }),
            "{err}"
        );
    }

    #[test]
    fn syntax_and_runtime_errors_name_the_problem() {
        let err =
            JinjaTemplate::new("{% for m in messages %}", SpecialTokens::default()).unwrap_err();
        assert!(matches!(err, ChatError::TemplateSyntax { .. }), "{err}");
        assert!(err.to_string().contains("syntax error"), "{err}");

        let err = template("{{ messages | no_such_filter }}")
            .render(&[])
            .unwrap_err();
        assert!(matches!(err, ChatError::Render { .. }), "{err}");
        assert!(err.to_string().contains("no_such_filter"), "{err}");
    }

    #[test]
    fn raise_exception_carries_the_message() {
        let err = template("{% if true %}{{ raise_exception('bad ' ~ bos_token) }}{% endif %}")
            .render(&[])
            .unwrap_err();
        match err {
            ChatError::TemplateException { message } => assert_eq!(message, "bad <s>"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn tokenizer_config_forms() {
        let config = serde_json::json!({
            "chat_template": [
                {"name": "tool_use", "template": "T"},
                {"name": "default", "template": "{{ bos_token }}{{ eos_token }}{{ pad_token }}"}
            ],
            "bos_token": {"content": "<s>", "__type": "AddedToken"},
            "eos_token": "</s>",
            "pad_token": null
        });
        let template = JinjaTemplate::from_tokenizer_config(&config)
            .unwrap()
            .unwrap();
        assert_eq!(template.render(&[]).unwrap(), "<s></s>");

        let none = serde_json::json!({"bos_token": "<s>"});
        assert!(JinjaTemplate::from_tokenizer_config(&none)
            .unwrap()
            .is_none());

        let no_default = serde_json::json!({"chat_template": [{"name": "a", "template": "x"}]});
        let err = JinjaTemplate::from_tokenizer_config(&no_default).unwrap_err();
        assert!(matches!(err, ChatError::NoDefaultTemplate { .. }), "{err}");

        let bad_token = serde_json::json!({"chat_template": "x", "eos_token": 3});
        let err = JinjaTemplate::from_tokenizer_config(&bad_token).unwrap_err();
        assert!(err.to_string().contains("eos_token"), "{err}");
    }

    #[test]
    fn strftime_fixed_times() {
        // 2024-02-29 23:59:59 UTC, a Thursday.
        let t = 1_709_251_199;
        assert_eq!(strftime_utc("%d %b %Y", t), "29 Feb 2024");
        assert_eq!(strftime_utc("%Y-%m-%d %H:%M:%S", t), "2024-02-29 23:59:59");
        assert_eq!(strftime_utc("%A %j %-d %Q %", t), "Thursday 060 29 %Q %");
        assert_eq!(strftime_utc("%G-W%V-%u", 0), "1970-W01-4");
    }
}
