//! agcam: Attention-Guided CAM for Vision Transformers on wgpu.
