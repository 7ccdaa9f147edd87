//! Loader tests on small synthetic checkpoints written to a temporary folder, one file per
//! topic under `tests/`, with what they share in `helpers`.

mod errors;
mod helpers;
mod hf;
mod loading;
mod timm_variants;
