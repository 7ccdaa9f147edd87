//! The optional JSON config next to a checkpoint (timm `config.json`, or a hand-written one).
//!
//! Only the keys below are read; everything else is ignored. Where several keys can say the same
//! thing, the first one present wins, in the order listed:
//!
//! | what            | keys                                                                    |
//! |-----------------|-------------------------------------------------------------------------|
//! | attention heads | `model_args.num_heads`, `num_heads`, `num_attention_heads`              |
//! | image size      | `model_args.img_size`, `img_size`, `image_size` (int or `[h, w]`), `pretrained_cfg.input_size` (`[3, h, w]`) |
//! | mean / std      | `pretrained_cfg.mean`/`std`, `mean`/`std`, `image_mean`/`image_std`     |
//! | labels          | `label_names` (list), `labels` (list), `id2label` (`{"0": "name"}`)    |
//! | LayerNorm eps   | `layer_norm_eps`                                                        |
//! | pooling         | `global_pool` (`"token"`, `""`, `"avg"`)                                |
//! | name            | `architecture`                                                          |
//!
//! A `null` value counts as absent. A key that is present with a value of the wrong kind is an
//! error naming the key and the file.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::Pooling;
use crate::error::{Error, Result};

/// A parsed JSON config and where it came from.
#[derive(Debug)]
pub(crate) struct JsonConfig {
    path: PathBuf,
    root: serde_json::Map<String, Value>,
}

/// Finds and reads the config of `weights`: `explicit` when given (it must exist and parse), else
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

/// A short rendering of a JSON value for error messages.
fn show(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 60 {
        let head: String = s.chars().take(57).collect();
        format!("{head}...")
    } else {
        s
    }
}

/// A non-negative integer, also when written as `12.0`.
fn as_usize(v: &Value) -> Option<usize> {
    if let Some(u) = v.as_u64() {
        return usize::try_from(u).ok();
    }
    let f = v.as_f64()?;
    if f >= 0.0 && f.fract() == 0.0 && f <= u32::MAX as f64 {
        Some(f as usize)
    } else {
        None
    }
}

impl JsonConfig {
    /// Reads and parses `path`; the top level must be a JSON object.
    pub(crate) fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, &text)
    }

    /// Parses `text`, attributing errors to `path`.
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Self> {
        let value: Value = serde_json::from_str(text)
            .map_err(|e| Error::checkpoint(path, format!("cannot parse the JSON config: {e}")))?;
        match value {
            Value::Object(root) => Ok(JsonConfig {
                path: path.to_path_buf(),
                root,
            }),
            other => Err(Error::checkpoint(
                path,
                format!(
                    "the JSON config must be an object ({{\"key\": value, ...}}), found {}",
                    show(&other)
                ),
            )),
        }
    }

    /// The config file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The value at a dotted `key` ("model_args.num_heads"); `null` counts as absent.
    fn get(&self, key: &str) -> Option<&Value> {
        let mut parts = key.split('.');
        let mut v = self.root.get(parts.next()?)?;
        for p in parts {
            v = v.as_object()?.get(p)?;
        }
        (!v.is_null()).then_some(v)
    }

    /// The first of `keys` that is present, with its key.
    fn first<'k>(&self, keys: &[&'k str]) -> Option<(&'k str, &Value)> {
        keys.iter().find_map(|&k| self.get(k).map(|v| (k, v)))
    }

    /// An error about `key` in this file.
    fn bad(&self, key: &str, expected: &str, found: &Value) -> Error {
        Error::checkpoint(
            &self.path,
            format!("`{key}` must be {expected}, found {}", show(found)),
        )
    }

    /// An error about this file.
    pub(crate) fn error(&self, msg: impl Into<String>) -> Error {
        Error::checkpoint(&self.path, msg)
    }

    /// Attention heads, with the key they came from.
    pub(crate) fn num_heads(&self) -> Result<Option<(usize, &'static str)>> {
        let Some((key, v)) =
            self.first(&["model_args.num_heads", "num_heads", "num_attention_heads"])
        else {
            return Ok(None);
        };
        match as_usize(v) {
            Some(h) if h > 0 => Ok(Some((h, key))),
            _ => Err(self.bad(key, "a positive integer", v)),
        }
    }

    /// Input (height, width), with the key it came from.
    pub(crate) fn image_size(&self) -> Result<Option<((usize, usize), &'static str)>> {
        for key in ["model_args.img_size", "img_size", "image_size"] {
            let Some(v) = self.get(key) else { continue };
            let size = match v {
                Value::Array(a) if a.len() == 2 => as_usize(&a[0]).zip(as_usize(&a[1])),
                _ => as_usize(v).map(|s| (s, s)),
            };
            return match size {
                Some(s) => Ok(Some((s, key))),
                None => Err(self.bad(key, "an integer or [height, width]", v)),
            };
        }
        let key = "pretrained_cfg.input_size";
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let dims: Option<Vec<usize>> = v.as_array().and_then(|a| a.iter().map(as_usize).collect());
        match dims.as_deref() {
            Some(&[3, h, w]) => Ok(Some(((h, w), key))),
            Some(&[c, _, _]) => Err(self.error(format!(
                "`{key}` says {c} input channels; only RGB (3) is supported"
            ))),
            _ => Err(self.bad(key, "[3, height, width]", v)),
        }
    }

    /// Three numbers from the first of `keys` present.
    fn triple(&self, keys: &[&'static str]) -> Result<Option<([f32; 3], &'static str)>> {
        let Some((key, v)) = self.first(keys) else {
            return Ok(None);
        };
        let nums: Option<Vec<f64>> = v
            .as_array()
            .and_then(|a| a.iter().map(Value::as_f64).collect());
        match nums.as_deref() {
            Some(&[a, b, c]) => Ok(Some(([a as f32, b as f32, c as f32], key))),
            _ => Err(self.bad(key, "a list of 3 numbers", v)),
        }
    }

    /// Normalisation mean, with its key.
    pub(crate) fn mean(&self) -> Result<Option<([f32; 3], &'static str)>> {
        self.triple(&["pretrained_cfg.mean", "mean", "image_mean"])
    }

    /// Normalisation std, with its key.
    pub(crate) fn std(&self) -> Result<Option<([f32; 3], &'static str)>> {
        self.triple(&["pretrained_cfg.std", "std", "image_std"])
    }

    /// Class names in index order, with the key they came from.
    pub(crate) fn labels(&self) -> Result<Option<(Vec<String>, &'static str)>> {
        for key in ["label_names", "labels"] {
            let Some(v) = self.get(key) else { continue };
            let names: Option<Vec<String>> = v
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect());
            return match names {
                Some(n) => Ok(Some((n, key))),
                None => Err(self.bad(key, "a list of strings", v)),
            };
        }
        let key = "id2label";
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let Some(map) = v.as_object() else {
            return Err(self.bad(key, "an object {\"0\": \"name\", ...}", v));
        };
        let mut slots: Vec<Option<String>> = vec![None; map.len()];
        for (k, name) in map {
            let Some(name) = name.as_str() else {
                return Err(self.bad(&format!("{key}.{k}"), "a string", name));
            };
            let index = k
                .parse::<usize>()
                .ok()
                .filter(|&i| i < slots.len())
                .ok_or_else(|| {
                    self.error(format!(
                        "`{key}` has the key \"{k}\"; keys must be the class indices 0..{}",
                        map.len()
                    ))
                })?;
            // Keys are distinct strings, but "1" and "01" name the same index.
            if slots[index].replace(name.to_string()).is_some() {
                return Err(self.error(format!("`{key}` names class {index} twice")));
            }
        }
        // `map.len()` distinct indices below `map.len()`: every slot is filled.
        Ok(Some((slots.into_iter().flatten().collect(), key)))
    }

    /// LayerNorm epsilon.
    pub(crate) fn layer_norm_eps(&self) -> Result<Option<f32>> {
        let key = "layer_norm_eps";
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_f64() {
            Some(e) if e.is_finite() && e >= 0.0 => Ok(Some(e as f32)),
            _ => Err(self.bad(key, "a non-negative number", v)),
        }
    }

    /// Pooling from `global_pool`.
    pub(crate) fn pooling(&self) -> Result<Option<Pooling>> {
        let key = "global_pool";
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_str() {
            Some("token") | Some("") => Ok(Some(Pooling::Token)),
            Some("avg") => Ok(Some(Pooling::Avg)),
            Some(other) => Err(self.error(format!(
                "`{key}` is \"{other}\"; supported: \"token\" (or \"\") and \"avg\""
            ))),
            None => Err(self.bad(key, "a string", v)),
        }
    }

    /// The architecture name.
    pub(crate) fn architecture(&self) -> Result<Option<String>> {
        let key = "architecture";
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(v) => Err(self.bad(key, "a string", v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(text: &str) -> JsonConfig {
        JsonConfig::parse(Path::new("c.json"), text).unwrap()
    }

    #[test]
    fn priorities_and_forms() {
        let c = cfg(
            r#"{"num_heads": 4, "model_args": {"num_heads": 3, "img_size": [32, 48]},
                        "img_size": 64, "pretrained_cfg": {"input_size": [3, 16, 16]}}"#,
        );
        assert_eq!(c.num_heads().unwrap(), Some((3, "model_args.num_heads")));
        assert_eq!(
            c.image_size().unwrap(),
            Some(((32, 48), "model_args.img_size"))
        );
        let c =
            cfg(r#"{"pretrained_cfg": {"input_size": [3, 16, 24]}, "num_attention_heads": 2.0}"#);
        assert_eq!(
            c.image_size().unwrap(),
            Some(((16, 24), "pretrained_cfg.input_size"))
        );
        assert_eq!(c.num_heads().unwrap(), Some((2, "num_attention_heads")));
        let c = cfg(r#"{"image_size": 40, "img_size": null}"#);
        assert_eq!(c.image_size().unwrap(), Some(((40, 40), "image_size")));
    }

    #[test]
    fn bad_values_name_the_key() {
        let c = cfg(
            r#"{"num_heads": "twelve", "img_size": [1, 2, 3], "mean": [0.5, 0.5],
                        "global_pool": "max", "id2label": {"0": "a", "5": "b"}}"#,
        );
        let msg = c.num_heads().unwrap_err().to_string();
        assert!(
            msg.contains("`num_heads`") && msg.contains("twelve"),
            "{msg}"
        );
        assert!(c
            .image_size()
            .unwrap_err()
            .to_string()
            .contains("`img_size`"));
        assert!(c.mean().unwrap_err().to_string().contains("3 numbers"));
        assert!(c.pooling().unwrap_err().to_string().contains("\"max\""));
        assert!(c.labels().unwrap_err().to_string().contains("\"5\""));
        let c = cfg(r#"{"pretrained_cfg": {"input_size": [1, 16, 16]}}"#);
        assert!(c
            .image_size()
            .unwrap_err()
            .to_string()
            .contains("1 input channels"));
    }

    #[test]
    fn not_an_object() {
        let e = JsonConfig::parse(Path::new("c.json"), "[1, 2]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.json") && e.contains("object"), "{e}");
        let e = JsonConfig::parse(Path::new("c.json"), "{nope")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot parse") && e.contains("line 1"), "{e}");
    }
}
