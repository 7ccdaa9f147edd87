//! Which files make up a model: `--weights` as a file or a folder, and the configs beside it.
//!
//! A folder holds `model.safetensors` (or exactly one `*.safetensors`), as both
//! `save_pretrained` (Hugging Face) and timm's `save_for_hf`/hub downloads lay it out. Configs are
//! looked up next to the weights file either way: `--config`, else `<stem>.json`, else
//! `config.json`; and `preprocessor_config.json` (Hugging Face image processor) when present.

use std::path::{Path, PathBuf};

use super::config_file::JsonConfig;
use crate::error::{Error, Result};

/// The name `save_pretrained` and timm's hub exports give the weights.
const WEIGHTS_NAME: &str = "model.safetensors";
/// Hugging Face's image processor config.
const PREPROCESSOR_NAME: &str = "preprocessor_config.json";

/// The files of one model.
#[derive(Debug)]
pub(crate) struct Sources {
    /// The `.safetensors` file.
    pub weights: PathBuf,
    /// The model config, when one was given or found.
    pub config: Option<JsonConfig>,
    /// `preprocessor_config.json` beside the weights, when present.
    pub preprocessor: Option<JsonConfig>,
}

/// Resolves `weights` (a file or a folder) and finds its configs; `config` is `--config`.
pub(crate) fn resolve(weights: &Path, config: Option<&Path>) -> Result<Sources> {
    let weights = if weights.is_dir() {
        weights_in_folder(weights)?
    } else {
        weights.to_path_buf()
    };
    let config = find_config(&weights, config)?;
    let dir = weights.parent().unwrap_or_else(|| Path::new(""));
    let pre = dir.join(PREPROCESSOR_NAME);
    // An explicit `--config preprocessor_config.json` is not read twice.
    let preprocessor = if pre.is_file() && config.as_ref().is_none_or(|c| c.path() != pre) {
        Some(JsonConfig::read(&pre)?)
    } else {
        None
    };
    Ok(Sources {
        weights,
        config,
        preprocessor,
    })
}

/// The weights file of a model folder.
fn weights_in_folder(dir: &Path) -> Result<PathBuf> {
    let main = dir.join(WEIGHTS_NAME);
    if main.is_file() {
        return Ok(main);
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut names: Vec<String> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        if entry.path().is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    let candidates: Vec<&String> = names
        .iter()
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    if names.iter().any(|n| n.ends_with(".safetensors.index.json")) {
        return Err(Error::checkpoint(
            dir,
            "holds a sharded checkpoint (`*.safetensors.index.json`), which is not supported: \
             save it as one file, e.g. `model.save_pretrained(folder, max_shard_size=\"100GB\")`",
        ));
    }
    match candidates.as_slice() {
        [one] => Ok(dir.join(one)),
        [] => {
            let legacy: Vec<String> = names
                .iter()
                .filter(|n| {
                    [".bin", ".pth", ".pt", ".ckpt", ".npz"]
                        .iter()
                        .any(|e| n.ends_with(e))
                })
                .map(|n| format!("`{n}`"))
                .collect();
            let mut msg = format!(
                "no `.safetensors` file in this folder (looked for `{WEIGHTS_NAME}` or a single \
                 `*.safetensors`)"
            );
            if !legacy.is_empty() {
                msg.push_str(&format!(
                    "; it holds {}: convert with `safetensors.torch.save_file(model.state_dict(), \
                     \"{WEIGHTS_NAME}\")` or `model.save_pretrained(folder)`",
                    legacy.join(", ")
                ));
            }
            Err(Error::checkpoint(dir, msg))
        }
        many => {
            let list: Vec<String> = many.iter().map(|n| format!("`{n}`")).collect();
            Err(Error::checkpoint(
                dir,
                format!(
                    "holds {} candidate weights files ({}) and no `{WEIGHTS_NAME}`: pass the one to \
                     use with --weights {}",
                    many.len(),
                    list.join(", "),
                    dir.join(many[0]).display()
                ),
            ))
        }
    }
}

/// The config of `weights`: `explicit` when given (it must exist and parse), else
/// `<weights stem>.json` in the same folder, else `config.json` there, else none.
pub(crate) fn find_config(weights: &Path, explicit: Option<&Path>) -> Result<Option<JsonConfig>> {
    if let Some(path) = explicit {
        return JsonConfig::read(path).map(Some);
    }
    let dir = weights.parent().unwrap_or_else(|| Path::new(""));
    let mut candidates = Vec::new();
    if let Some(stem) = weights.file_stem() {
        let mut name = stem.to_os_string();
        name.push(".json");
        candidates.push(dir.join(name));
    }
    candidates.push(dir.join("config.json"));
    for path in candidates {
        if path.is_file() {
            return JsonConfig::read(&path).map(Some);
        }
    }
    Ok(None)
}
