//! What an explanation asks for (the method and the classes) and the checks that refuse what a
//! model cannot serve, before any upload or GPU work.

use crate::error::{Error, Result};
use crate::model::{ModelConfig, Pooling};

/// How a map is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Method {
    /// Attention-Guided CAM (Leem & Seo, AAAI 2024): class-specific.
    #[default]
    Agcam,
    /// Attention rollout (Abnar & Zuidema 2020): class-agnostic.
    AttentionRollout,
    /// The last layer's class-token attention, mean over heads: class-agnostic.
    RawAttention,
    /// Grad-CAM (Selvaraju et al., ICCV 2017) as pytorch-grad-cam applies it to ViTs:
    /// class-specific. With X the last block's LN1 output at the P patch tokens,
    /// `w = (1/P) Σ_j ∂logits[c]/∂X[j]` and `map[j] = ReLU(X[j] · w)` (method.md §6.2). With
    /// class-token pooling in closed form from the last block alone; with average pooling by
    /// the last block's full backward.
    GradCam,
    /// Generic attention explainability (Chefer, Gur & Wolf, ICCV 2021, the self-attention
    /// rule; method.md §6.1): class-specific, class-token pooling only. With ∇A_k = ∂logit_c/∂A_k
    /// from the full backward (no detach) and Ā_k = mean_h max(0, ∇A_k,h ⊙ A_k,h), the map is
    /// the class-token row of R = (I + Ā_L)⋯(I + Ā_1) at the patch tokens.
    GenericAttention,
    /// Transformer attribution (Chefer, Gur & Wolf, CVPR 2021, the LRP-based method; method.md
    /// §6.3): class-specific, class-token pooling only. LRP relevance from one-hot(c) at the
    /// logits through every block with the authors' rules (z⁺ for the linear layers, their
    /// Add, Clone and bilinear rules), R_A,k the relevance of each block's attention; with
    /// ∇A_k from the full backward, Ā_k = mean_h max(0, ∇A_k,h ⊙ R_A,k,h) and the map is the
    /// class-token row of (I + Ā_L)⋯(I + Ā_1) at the patch tokens (start layer 0).
    TransformerAttribution,
}

impl Method {
    /// The name used on the command line and in JSON.
    pub fn name(self) -> &'static str {
        match self {
            Method::Agcam => "agcam",
            Method::AttentionRollout => "attention-rollout",
            Method::RawAttention => "raw-attention",
            Method::GradCam => "grad-cam",
            Method::GenericAttention => "generic-attention",
            Method::TransformerAttribution => "transformer-attribution",
        }
    }

    /// Whether the map depends on the explained class.
    pub fn is_class_specific(self) -> bool {
        matches!(
            self,
            Method::Agcam
                | Method::GradCam
                | Method::GenericAttention
                | Method::TransformerAttribution
        )
    }
}

/// Which classes to explain for each image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The predicted class (argmax of the logits), as the paper's localization protocol does.
    Predicted,
    /// The K highest-scoring classes, best first; `TopK(1)` is `Predicted`.
    TopK(usize),
    /// The same class for every image.
    Class(usize),
    /// One class per image, e.g. the ground truth in the perturbation protocol.
    PerImage(Vec<usize>),
}

/// Refuses, before any work, a request the model cannot serve: a class outside the model's, a
/// top-k of 0 or above the class count, or a method undefined for the model (AGCAM, generic
/// attention and transformer attribution on average-pooled models). [`Engine::explain_with`](super::Engine::explain_with)
/// checks the same; callers that upload a model only after checking call it first.
pub fn check_request(config: &ModelConfig, target: &Target, method: Method) -> Result<()> {
    check_method(config, method)?;
    let c = config.num_classes;
    let check_class = |class: usize| {
        if class >= c {
            Err(Error::Invalid(format!(
                "class {class} is out of range: the model has {c} classes (0..={})",
                c - 1
            )))
        } else {
            Ok(())
        }
    };
    match target {
        Target::Predicted => Ok(()),
        Target::TopK(k) if *k == 0 || *k > c => Err(Error::Invalid(format!(
            "top-k must be between 1 and the number of classes ({c}), not {k}"
        ))),
        Target::TopK(_) => Ok(()),
        Target::Class(class) => check_class(*class),
        Target::PerImage(classes) => classes.iter().try_for_each(|&class| check_class(class)),
    }
}

/// Refuses a method the model cannot be explained with.
fn check_method(config: &ModelConfig, method: Method) -> Result<()> {
    if config.pooling != Pooling::Avg {
        return Ok(());
    }
    let why = match method {
        Method::Agcam => {
            "AGCAM is undefined for average-pooled models (global_pool=\"avg\"): with the \
             attention inputs detached (method.md §2), no gradient reaches the class token's \
             query row, so every map would be zero."
        }
        Method::GenericAttention => {
            "generic attention is undefined for average-pooled models (global_pool=\"avg\"): \
             its map is the class token's row of the relevance, and the class token reaches \
             no logit there (method.md §6.1)."
        }
        Method::TransformerAttribution => {
            "transformer attribution is undefined for average-pooled models \
             (global_pool=\"avg\"): its LRP relevance starts at the class token and its map \
             is the class token's row, which reaches no logit there (method.md §6.3)."
        }
        Method::GradCam | Method::AttentionRollout | Method::RawAttention => return Ok(()),
    };
    Err(Error::Invalid(format!(
        "{}: {why} Predictions, grad-cam and the attention-rollout and raw-attention \
         baselines work.",
        config.name
    )))
}
