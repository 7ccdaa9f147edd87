//! What the forward pass needs to know about a model, inferred from tensor shapes and a config.

/// How the classifier reads the token sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// `head(norm(x)[CLS])`: timm's default and the setting of the AGCAM paper.
    Token,
    /// `head(fc_norm(mean(x[1:])))`: timm's `global_pool="avg"`.
    Avg,
}

/// Architecture, preprocessing and labels of a ViT checkpoint.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelConfig {
    /// A short name for logs and JSON output (architecture name or file stem).
    pub name: String,
    /// Embedding width D.
    pub embed_dim: usize,
    /// Number of transformer blocks L.
    pub depth: usize,
    /// Attention heads H (D need not be a multiple of 64, but must be of H).
    pub num_heads: usize,
    /// MLP hidden width F (4·D for standard ViTs).
    pub mlp_hidden: usize,
    /// Square patch side P in pixels.
    pub patch_size: usize,
    /// Input height and width in pixels (multiples of P).
    pub image_size: (usize, usize),
    /// Number of output classes C.
    pub num_classes: usize,
    /// LayerNorm epsilon: 1e-6 for timm, 1e-12 for Hugging Face.
    pub layer_norm_eps: f32,
    /// Whether blocks carry layer scale (`ls1`, `ls2`).
    pub layer_scale: bool,
    /// Class-token or average pooling.
    pub pooling: Pooling,
    /// Per-channel normalisation mean (RGB).
    pub mean: [f32; 3],
    /// Per-channel normalisation standard deviation (RGB).
    pub std: [f32; 3],
    /// Class names, index-aligned with the logits, when known.
    #[serde(skip)]
    pub labels: Option<Vec<String>>,
}

impl ModelConfig {
    /// Patch grid (rows, columns).
    pub fn grid(&self) -> (usize, usize) {
        (
            self.image_size.0 / self.patch_size,
            self.image_size.1 / self.patch_size,
        )
    }

    /// Tokens per image: the class token plus one per patch.
    pub fn tokens(&self) -> usize {
        let (gh, gw) = self.grid();
        1 + gh * gw
    }

    /// Per-head width d = D / H.
    pub fn head_dim(&self) -> usize {
        self.embed_dim / self.num_heads
    }

    /// The label of class `c`, when known.
    pub fn label(&self, c: usize) -> Option<&str> {
        self.labels.as_ref()?.get(c).map(String::as_str)
    }
}

/// Settings the user gives on the command line; each one wins over the checkpoint's config.
#[derive(Debug, Clone, Default)]
pub struct ConfigOverrides {
    /// Attention heads (`--heads`).
    pub num_heads: Option<usize>,
    /// Input size (height, width) (`--image-size`).
    pub image_size: Option<(usize, usize)>,
    /// Normalisation mean (`--mean`).
    pub mean: Option<[f32; 3]>,
    /// Normalisation std (`--std`).
    pub std: Option<[f32; 3]>,
}
