//! The JSON configs next to a checkpoint: timm's hub `config.json`, Hugging Face's `config.json`
//! and `preprocessor_config.json`, or a hand-written one.
//!
//! Only the keys below are read; everything else is ignored. Where several keys can say the same
//! thing, the first one present wins, in the order listed:
//!
//! | what            | keys                                                                    |
//! |-----------------|-------------------------------------------------------------------------|
//! | attention heads | `model_args.num_heads`, `num_heads`, `num_attention_heads`              |
//! | image size      | `model_args.img_size`, `img_size`, `image_size` (int or `[h, w]`), `pretrained_cfg.input_size` (`[3, h, w]`) |
//! | mean / std      | `pretrained_cfg.mean`/`std`, `mean`/`std`, `image_mean`/`image_std`     |
//! | labels          | `label_names` (list, or `{"0": name}`; with `label_descriptions` `{name: text}` the texts are used), `labels` (list), `id2label` (`{"0": "name"}`) |
//! | LayerNorm eps   | `layer_norm_eps`                                                        |
//! | pooling         | `global_pool` (`"token"`, `""`, `"avg"`), also `model_args.global_pool` |
//! | name            | `architecture` (timm), `architectures[0]` (Hugging Face)                |
//!
//! Keys checked against the tensors (a disagreement is an error naming both): `hidden_size`,
//! `model_args.embed_dim`, `num_features` (D); `num_hidden_layers`, `model_args.depth` (L);
//! `intermediate_size`, `model_args.mlp_ratio` (F); `patch_size`, `model_args.patch_size` (P);
//! `num_classes` (C); `qkv_bias`, `model_args.qkv_bias`; `model_args.init_values` (layer scale);
//! `model_args.no_embed_class`; `num_channels`, `model_args.in_chans` (3). Keys that name an
//! unsupported variant are refused: `hidden_act` other than `"gelu"`, `model_args.act_layer`
//! other than `"gelu"`, `model_args.class_token: false`, `model_args.reg_tokens > 0`,
//! `model_args.qk_norm`, `model_args.pre_norm`, `model_args.pool_include_prefix`, and an
//! `architecture`/`architectures`/`model_type` outside the ViT family (see `family.rs`).
//!
//! `preprocessor_config.json` (Hugging Face image processor) supplies `image_mean`/`image_std`
//! (with `do_normalize`, `do_rescale` and `rescale_factor` folded in) and the input size from
//! `crop_size` when `do_center_crop`, else `size` (`{"height", "width"}`, an int, or
//! `{"shortest_edge"}`), each only where `config.json` does not say.
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
    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
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
    pub(crate) fn bad(&self, key: &str, expected: &str, found: &Value) -> Error {
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
            if let Some(s) = self.pair(key)? {
                return Ok(Some((s, key)));
            }
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

    /// A size given as an integer `s` (meaning `s x s`) or as `[h, w]`.
    pub(crate) fn pair(&self, key: &str) -> Result<Option<(usize, usize)>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let size = match v {
            Value::Array(a) if a.len() == 2 => as_usize(&a[0]).zip(as_usize(&a[1])),
            _ => as_usize(v).map(|s| (s, s)),
        };
        size.map(Some)
            .ok_or_else(|| self.bad(key, "an integer or [height, width]", v))
    }

    /// A non-negative integer at `key`.
    pub(crate) fn usize_at(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => as_usize(v)
                .map(Some)
                .ok_or_else(|| self.bad(key, "a non-negative integer", v)),
        }
    }

    /// A number at `key`.
    pub(crate) fn f64_at(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| self.bad(key, "a number", v)),
        }
    }

    /// A boolean at `key`.
    pub(crate) fn bool_at(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(self.bad(key, "true or false", v)),
        }
    }

    /// A string at `key`.
    pub(crate) fn str_at(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(self.bad(key, "a string", v)),
        }
    }

    /// A list of strings at `key`.
    pub(crate) fn strings_at(&self, key: &str) -> Result<Option<Vec<&str>>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_array()
            .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
            .map(Some)
            .ok_or_else(|| self.bad(key, "a list of strings", v))
    }

    /// Which tool wrote this config, from its keys.
    pub(crate) fn flavour(&self) -> Flavour {
        if self.get("architectures").is_some() || self.get("model_type").is_some() {
            Flavour::HuggingFace
        } else if self.get("architecture").is_some()
            || self.get("pretrained_cfg").is_some()
            || self.get("model_args").is_some()
        {
            Flavour::Timm
        } else {
            Flavour::Plain
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
        if let Some(v) = self.get("label_names") {
            let key = "label_names";
            let names = match v {
                Value::Object(_) => self.indexed(key, v)?,
                _ => v
                    .as_array()
                    .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect())
                    .ok_or_else(|| self.bad(key, "a list of strings", v))?,
            };
            // timm: `label_names` are unique ids (ImageNet synsets); `label_descriptions` maps
            // them to readable names.
            let dkey = "label_descriptions";
            return match self.get(dkey) {
                None => Ok(Some((names, key))),
                Some(Value::Object(map)) => {
                    let described = names
                        .iter()
                        .map(|n| match map.get(n) {
                            Some(Value::String(d)) => Ok(d.clone()),
                            Some(other) => Err(self.bad(&format!("{dkey}.{n}"), "a string", other)),
                            None => Ok(n.clone()),
                        })
                        .collect::<Result<Vec<_>>>()?;
                    Ok(Some((described, "label_names + label_descriptions")))
                }
                Some(other) => Err(self.bad(dkey, "an object {\"name\": \"description\"}", other)),
            };
        }
        let key = "labels";
        if let Some(v) = self.get(key) {
            let names: Option<Vec<String>> = v
                .as_array()
                .and_then(|a| a.iter().map(|x| x.as_str().map(str::to_string)).collect());
            return match names {
                Some(n) => Ok(Some((n, key))),
                None => Err(self.bad(key, "a list of strings", v)),
            };
        }
        let key = "id2label";
        match self.get(key) {
            None => Ok(None),
            Some(v) => Ok(Some((self.indexed(key, v)?, key))),
        }
    }

    /// Names from an object `{"0": "name", ...}` whose keys are exactly the indices 0..len.
    fn indexed(&self, key: &str, v: &Value) -> Result<Vec<String>> {
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
        Ok(slots.into_iter().flatten().collect())
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

    /// Pooling from `global_pool` (or `model_args.global_pool`), with the key.
    pub(crate) fn pooling(&self) -> Result<Option<(Pooling, &'static str)>> {
        let Some((key, v)) = self.first(&["global_pool", "model_args.global_pool"]) else {
            return Ok(None);
        };
        match v.as_str() {
            Some("token") | Some("") => Ok(Some((Pooling::Token, key))),
            Some("avg") => Ok(Some((Pooling::Avg, key))),
            Some("map") => Err(self.error(format!(
                "`{key}` is \"map\" (attention pooling head, as in SigLIP): not supported; \
                 supported: \"token\" (or \"\") and \"avg\""
            ))),
            Some(other) => Err(self.error(format!(
                "`{key}` is \"{other}\"; supported: \"token\" (or \"\") and \"avg\""
            ))),
            None => Err(self.bad(key, "a string", v)),
        }
    }

    /// The architecture name: timm's `architecture`, else the first of Hugging Face's
    /// `architectures`.
    pub(crate) fn architecture(&self) -> Result<Option<String>> {
        if let Some(a) = self.str_at("architecture")? {
            return Ok(Some(a.to_string()));
        }
        Ok(self
            .strings_at("architectures")?
            .and_then(|a| a.first().map(|s| s.to_string())))
    }

    /// Normalisation of a Hugging Face image processor config, as the engine's
    /// `(x / 255 - mean) / std`: `image_mean`/`image_std` when `do_normalize` (default true), and
    /// `rescale_factor` (default 1/255, none when `do_rescale` is false) folded into both.
    pub(crate) fn processor_mean_std(&self) -> Result<Option<([f32; 3], [f32; 3])>> {
        let normalize = self.bool_at("do_normalize")?.unwrap_or(true);
        let (mean, std) = if normalize {
            match (self.triple(&["image_mean"])?, self.triple(&["image_std"])?) {
                (Some((m, _)), Some((s, _))) => (m.map(f64::from), s.map(f64::from)),
                (None, None) => return Ok(None),
                (Some(_), None) => {
                    return Err(self.error("`image_mean` is given but `image_std` is not"))
                }
                (None, Some(_)) => {
                    return Err(self.error("`image_std` is given but `image_mean` is not"))
                }
            }
        } else {
            ([0.0; 3], [1.0; 3])
        };
        let rescale = if self.bool_at("do_rescale")?.unwrap_or(true) {
            self.f64_at("rescale_factor")?.unwrap_or(1.0 / 255.0)
        } else {
            1.0
        };
        if !(rescale.is_finite() && rescale > 0.0) {
            return Err(self.error(format!(
                "`rescale_factor` is {rescale}: it must be positive"
            )));
        }
        // (p * r - m) / s == (p / 255 - m / (255 r)) / (s / (255 r)).
        let k = 255.0 * rescale;
        let k = if (k - 1.0).abs() < 1e-9 { 1.0 } else { k };
        Ok(Some((
            mean.map(|m| (m / k) as f32),
            std.map(|s| (s / k) as f32),
        )))
    }

    /// The model input size of a Hugging Face image processor config: `crop_size` when
    /// `do_center_crop`, else `size`, with the key it came from. `{"shortest_edge": n}` gives
    /// no size (it depends on the image).
    pub(crate) fn processor_size(&self) -> Result<Option<((usize, usize), &'static str)>> {
        let key = if self.bool_at("do_center_crop")?.unwrap_or(false)
            && self.get("crop_size").is_some()
        {
            "crop_size"
        } else {
            "size"
        };
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        if let Some(map) = v.as_object() {
            let h = map.get("height").and_then(as_usize);
            let w = map.get("width").and_then(as_usize);
            return match (h, w) {
                (Some(h), Some(w)) => Ok(Some(((h, w), key))),
                _ if map.contains_key("shortest_edge") => Ok(None),
                _ => Err(self.bad(key, "{\"height\": h, \"width\": w} or an integer", v)),
            };
        }
        Ok(self.pair(key)?.map(|s| (s, key)))
    }
}

/// Which tool wrote a config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavour {
    /// timm's hub `config.json` (`architecture`, `pretrained_cfg`, `model_args`).
    Timm,
    /// Hugging Face transformers' `config.json` (`architectures`, `model_type`).
    HuggingFace,
    /// Neither: a hand-written config with plain keys.
    Plain,
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
