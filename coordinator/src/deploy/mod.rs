//! `coord deploy beaker|k8s`: render the specs that start a coordinator and N GPU workers.
//!
//! Both targets are minijinja templates (kept beside this file, so the rendered files keep their
//! comments) filled from the flags. Every value that reaches the YAML goes through the `q` filter
//! (a plain scalar when that reads back as the same string, else a double-quoted one), and every
//! rendered document is parsed back before it is written: a spec that would not load is an error
//! here, not on the cluster.

pub mod beaker;
pub mod k8s;

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::PathBuf;

/// `coord deploy` flags.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "deploy")]
pub struct DeployArgs {
    #[command(subcommand)]
    pub target: Target,
}

#[derive(clap::Subcommand, Debug, Clone)]
pub enum Target {
    /// A Beaker experiment spec (version v2): a coordinator task and a worker task with N replicas
    Beaker(beaker::BeakerArgs),
    /// Kubernetes manifests: namespace, coordinator StatefulSet + Service, Indexed Job of N workers
    K8s(k8s::K8sArgs),
}

/// Run `coord deploy`: render, check, then write to `-o` or stdout.
pub fn deploy(args: DeployArgs) -> Result<()> {
    match args.target {
        Target::Beaker(args) => {
            let spec = beaker::render(&args)?;
            write_one(args.output.as_ref(), &spec)
        }
        Target::K8s(args) => {
            let files = k8s::render(&args)?;
            match &args.output {
                Some(dir) => {
                    std::fs::create_dir_all(dir)
                        .with_context(|| format!("creating {}", dir.display()))?;
                    for (name, text) in &files {
                        let path = dir.join(name);
                        std::fs::write(&path, text)
                            .with_context(|| format!("writing {}", path.display()))?;
                        eprintln!("wrote {}", path.display());
                    }
                    Ok(())
                }
                None => write_one(None, &k8s::stream(&files)),
            }
        }
    }
}

fn write_one(path: Option<&PathBuf>, text: &str) -> Result<()> {
    match path {
        Some(p) if p.as_os_str() != "-" => {
            std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
            eprintln!("wrote {}", p.display());
            Ok(())
        }
        _ => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        }
    }
}

/// A YAML scalar for `s`: plain when it reads back as that same string (so `false`, `1`, `null`,
/// `a: b`, `#x`, leading/trailing spaces, ... get quoted), else double-quoted (JSON escapes are
/// valid YAML). Only a small character set is ever left plain, so the result is also safe
/// inside flow collections (`[a, b]`, `{k: v}`).
pub fn yaml_scalar(s: &str) -> String {
    let plain_chars = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-@+=~".contains(c))
        && s.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '/');
    if plain_chars {
        if let Ok(serde_norway::Value::String(back)) = serde_norway::from_str(s) {
            if back == s {
                return s.to_string();
            }
        }
    }
    serde_json::to_string(s).expect("a string serializes")
}

/// The template environment shared by both targets: `q` (YAML scalar) and strict undefined.
pub(crate) fn environment() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    // `.yaml` names would get minijinja's JSON auto-escaping: quoting is the `q` filter's job
    env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
    env.add_filter("q", |v: minijinja::Value| -> String {
        match v.as_str() {
            Some(s) => yaml_scalar(s),
            None => yaml_scalar(&v.to_string()),
        }
    });
    env
}

/// Render one template with its context, then parse every document back (a template or a value
/// that breaks the YAML is caught here).
pub(crate) fn render_template(
    name: &str,
    source: &'static str,
    ctx: &minijinja::Value,
) -> Result<String> {
    let mut env = environment();
    env.add_template(name, source)
        .with_context(|| format!("template {name}"))?;
    let mut text = env
        .get_template(name)?
        .render(ctx)
        .with_context(|| format!("rendering {name}"))?;
    // minijinja drops the template's final newline
    if !text.ends_with('\n') {
        text.push('\n');
    }
    parse_documents(&text).with_context(|| format!("{name} rendered invalid YAML:\n{text}"))?;
    Ok(text)
}

/// Parse a (multi-document) YAML stream; comment-only documents are dropped.
pub fn parse_documents(text: &str) -> Result<Vec<serde_norway::Value>> {
    use serde::Deserialize;
    let mut docs = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        let value = serde_norway::Value::deserialize(doc)?;
        if !value.is_null() {
            docs.push(value);
        }
    }
    Ok(docs)
}

/// `KEY=VALUE` (environment variables, node selectors): both sides non-empty.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// Checks shared by both targets.
pub(crate) fn check_common(workers: u32, images: &[(&str, &str)]) -> Result<()> {
    if workers == 0 {
        bail!("--workers must be at least 1 (got 0): the spec would start no GPU worker");
    }
    for (flag, image) in images {
        if image.trim().is_empty() {
            bail!(
                "{flag} is empty: give an image reference, e.g. {flag} ghcr.io/org/herd-worker:v1"
            );
        }
        if image.chars().any(char::is_whitespace) {
            bail!("{flag} {image:?} contains whitespace: not an image reference");
        }
    }
    Ok(())
}

/// Environment variable names as the shells and Kubernetes accept them.
pub(crate) fn check_env_name(name: &str) -> Result<()> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        bail!("environment variable name {name:?} is not [A-Za-z_][A-Za-z0-9_]*");
    }
    Ok(())
}
