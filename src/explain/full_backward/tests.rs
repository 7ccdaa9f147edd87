//! The full backward against PyTorch autograd (tests/fixtures/*/generic_attention.safetensors,
//! written by tools/make_method_fixtures.py): ∂logit/∂A of the first block, every row, and the
//! gradient at the first block's input, so a wrong step of the chain shows up here before it
//! blurs into a map.

use std::path::Path;

use safetensors::SafeTensors;

use super::record_generic_attention;
use crate::explain::agcam::ClassChoice;
use crate::explain::{Engine, Method, Plan};
use crate::gpu::testing::gpus;
use crate::kernels::encode;
use crate::model::{load_model, ConfigOverrides};
use crate::vit::record_forward;

/// Fixtures with debug tensors: layer scale, HF naming and eps, no qkv bias, bf16 weights.
const FIXTURES: &[&str] = &["odd_ls", "odd_nols", "hf_vit", "deit3_ls", "patch32"];

fn f32s(st: &SafeTensors<'_>, name: &str) -> Vec<f32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    bytemuck::pod_collect_to_vec::<u8, f32>(t.data())
}

fn i32s(st: &SafeTensors<'_>, name: &str) -> Vec<i32> {
    let t = st.tensor(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    bytemuck::pod_collect_to_vec::<u8, i32>(t.data())
}

/// Runs the forward and the full backward for class `classes[b]` of image b, stopping at
/// `probe`; returns (∂logit/∂A of the probed layer [B, H, N, padded] or of layer 0's dS,
/// the residual gradient [B, N, D]).
fn run(
    engine: &mut Engine,
    input: &[f32],
    classes: &[u32],
    probe: Option<usize>,
) -> (Vec<f32>, Vec<f32>) {
    let batch = classes.len();
    assert!(batch <= engine.capacity);
    let (gpu, k, cfg) = (&engine.gpu, &engine.kernels, &engine.config);
    let explain = Some((Method::GenericAttention, 1));
    let scratch = Plan::of(gpu, k, cfg, explain, engine.capacity).scratch;
    engine.prepare(engine.capacity, scratch);
    engine.prepare_full(1, 0, false);
    let (gpu, k, cfg, w) = (
        &engine.gpu,
        &engine.kernels,
        &engine.config,
        &engine.weights,
    );
    let ws = engine.workspace.as_ref().unwrap();
    let (back, full) = (ws.back.as_ref().unwrap(), ws.full.as_ref().unwrap());
    gpu.queue
        .write_buffer(&ws.acts.images, 0, bytemuck::cast_slice(input));
    gpu.queue
        .write_buffer(&back.classes, 0, bytemuck::cast_slice(classes));
    let mut dispatches = record_forward(gpu, k, cfg, w, &ws.acts, batch, None, Some(&full.keep));
    dispatches.extend(record_generic_attention(
        gpu,
        k,
        cfg,
        w,
        &ws.acts,
        (back, full),
        (batch, 1),
        ClassChoice::Given,
        probe,
    ));
    let n = cfg.tokens();
    let attn_len = batch * cfg.num_heads * n * n.next_multiple_of(4);
    let grad_len = batch * n * cfg.embed_dim;
    let attn_read = gpu.readback("test d_attn", 4 * attn_len as u64);
    let grad_read = gpu.readback("test grad", 4 * grad_len as u64);
    let mut enc = gpu.device.create_command_encoder(&Default::default());
    encode(
        &mut enc.begin_compute_pass(&Default::default()),
        &dispatches,
    );
    enc.copy_buffer_to_buffer(&full.d_attn, 0, &attn_read, 0, 4 * attn_len as u64);
    enc.copy_buffer_to_buffer(&full.grad, 0, &grad_read, 0, 4 * grad_len as u64);
    gpu.queue.submit([enc.finish()]);
    (
        gpu.read(&attn_read, attn_len).unwrap(),
        gpu.read(&grad_read, grad_len).unwrap(),
    )
}

fn check(tag: &str, got: &[f32], want: &[f32], tol: f64) {
    assert_eq!(got.len(), want.len(), "{tag}: length");
    let scale = want.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let err = got
        .iter()
        .zip(want)
        .fold(0.0f64, |m, (&a, &b)| m.max((a as f64 - b as f64).abs()));
    assert!(scale > 0.0, "{tag}: the reference is zero");
    assert!(
        err <= tol * scale,
        "{tag}: error {err:e} of max {scale:e} (ratio {:e})",
        err / scale
    );
}

#[test]
fn full_backward_matches_pytorch_autograd() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    for gpu in gpus() {
        for name in FIXTURES {
            let dir = root.join(name);
            let model = load_model(&dir, None, &ConfigOverrides::default()).unwrap();
            let reference = std::fs::read(dir.join("reference.safetensors")).unwrap();
            let reference = SafeTensors::deserialize(&reference).unwrap();
            let ga = std::fs::read(dir.join("generic_attention.safetensors")).unwrap();
            let ga = SafeTensors::deserialize(&ga).unwrap();
            let input = f32s(&reference, "input");
            let classes = i32s(&reference, "classes");
            let shape = reference.tensor("classes").unwrap().shape().to_vec();
            let slot0: Vec<u32> = (0..shape[0])
                .map(|b| classes[b * shape[1]] as u32)
                .collect();
            let cfg = model.config.clone();
            let mut engine = Engine::new(gpu.clone(), &model).unwrap();
            let tag = format!("{name} on {}", gpu.describe());

            let (n, np) = (cfg.tokens(), cfg.tokens().next_multiple_of(4));
            let (d_attn, _) = run(&mut engine, &input, &slot0, Some(0));
            let unpadded: Vec<f32> = d_attn
                .chunks(np)
                .flat_map(|row| &row[..n])
                .copied()
                .collect();
            check(
                &format!("{tag}: ∂logit/∂A_0"),
                &unpadded,
                &f32s(&ga, "debug.grad_attn.0"),
                1e-4,
            );

            let (_, grad) = run(&mut engine, &input, &slot0, None);
            check(
                &format!("{tag}: ∂logit/∂x_0"),
                &grad,
                &f32s(&ga, "debug.grad_tokens"),
                1e-4,
            );
        }
    }
}
