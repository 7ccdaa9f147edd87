//! Random models of any shape, for benchmarks and tests.

use super::{BlockWeights, HostTensor, Model, ModelConfig, Pooling, Provenance, VitWeights};

/// A small deterministic generator (SplitMix64), so random models need no extra crate and are
/// the same on every machine.
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    fn symmetric(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

impl ModelConfig {
    /// A timm-style ViT configuration (class-token pooling, LayerNorm eps 1e-6, MLP ratio 4,
    /// mean = std = 0.5) with the given dimensions.
    pub fn vit(
        name: &str,
        (embed_dim, depth, num_heads): (usize, usize, usize),
        patch_size: usize,
        image_size: (usize, usize),
        num_classes: usize,
    ) -> ModelConfig {
        ModelConfig {
            name: name.to_string(),
            embed_dim,
            depth,
            num_heads,
            mlp_hidden: 4 * embed_dim,
            patch_size,
            image_size,
            num_classes,
            layer_norm_eps: 1e-6,
            layer_scale: false,
            pooling: Pooling::Token,
            mean: [0.5; 3],
            std: [0.5; 3],
            labels: None,
        }
    }

    /// Names [`ModelConfig::standard`] knows.
    pub const STANDARD: &'static [&'static str] = &[
        "vit_tiny_patch16_224",
        "vit_small_patch16_224",
        "vit_base_patch16_224",
        "vit_large_patch16_224",
    ];

    /// The configurations of timm's standard ViTs: `vit_tiny_patch16_224`,
    /// `vit_small_patch16_224`, `vit_base_patch16_224`, `vit_large_patch16_224`, 1000 classes.
    pub fn standard(name: &str) -> Option<ModelConfig> {
        let dims = match name {
            "vit_tiny_patch16_224" => (192, 12, 3),
            "vit_small_patch16_224" => (384, 12, 6),
            "vit_base_patch16_224" => (768, 12, 12),
            "vit_large_patch16_224" => (1024, 24, 16),
            _ => return None,
        };
        Some(ModelConfig::vit(name, dims, 16, (224, 224), 1000))
    }
}

impl Model {
    /// Random weights for `config`, deterministic in `seed`. Scales are chosen so that
    /// attention is far from uniform and every class gets a distinct logit, which makes the
    /// model a meaningful test and a realistic benchmark.
    pub fn random(config: ModelConfig, seed: u64) -> Model {
        let mut rng = SplitMix(seed);
        let mut t = |shape: &[usize], center: f32, spread: f32| {
            let len = shape.iter().product();
            let data = (0..len)
                .map(|_| center + spread * rng.symmetric())
                .collect();
            HostTensor::new(shape.to_vec(), data)
        };
        let (d, f, c, p) = (
            config.embed_dim,
            config.mlp_hidden,
            config.num_classes,
            config.patch_size,
        );
        // Uniform(-a, a) has std a/√3: linear layers get std ≈ 1/√fan_in, enough to keep
        // activations O(1) through depth with LayerNorm in front of each branch.
        let lin = |fan_in: usize| (3.0 / fan_in as f32).sqrt();
        let ls = config.layer_scale;
        let blocks = (0..config.depth)
            .map(|_| BlockWeights {
                norm1_w: t(&[d], 1.0, 0.3),
                norm1_b: t(&[d], 0.0, 0.1),
                qkv_w: t(&[3 * d, d], 0.0, 2.0 * lin(d)),
                qkv_b: t(&[3 * d], 0.0, 0.1),
                proj_w: t(&[d, d], 0.0, lin(d)),
                proj_b: t(&[d], 0.0, 0.1),
                ls1: ls.then(|| t(&[d], 0.5, 0.4)),
                norm2_w: t(&[d], 1.0, 0.3),
                norm2_b: t(&[d], 0.0, 0.1),
                fc1_w: t(&[f, d], 0.0, lin(d)),
                fc1_b: t(&[f], 0.0, 0.1),
                fc2_w: t(&[d, f], 0.0, lin(f)),
                fc2_b: t(&[d], 0.0, 0.1),
                ls2: ls.then(|| t(&[d], 0.5, 0.4)),
            })
            .collect();
        let weights = VitWeights {
            patch_w: t(&[d, 3, p, p], 0.0, lin(3 * p * p)),
            patch_b: t(&[d], 0.0, 0.1),
            cls_token: t(&[d], 0.0, 1.0),
            pos_embed: t(&[config.tokens(), d], 0.0, 0.5),
            blocks,
            norm_w: t(&[d], 1.0, 0.3),
            norm_b: t(&[d], 0.0, 0.1),
            head_w: t(&[c, d], 0.0, lin(d)),
            head_b: t(&[c], 0.0, 0.1),
        };
        let provenance = Provenance {
            format: format!("random weights (seed {seed})"),
            ..Provenance::default()
        };
        Model {
            config,
            weights,
            provenance,
        }
    }
}
