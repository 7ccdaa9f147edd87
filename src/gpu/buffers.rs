//! Buffer creation and readback helpers shared by every launcher.

use wgpu::util::DeviceExt;

use super::Gpu;
use crate::error::{Error, Result};

/// Smallest storage buffer: kernels may bind any buffer through a vec4 view, which needs 16
/// bytes, and wgpu rejects empty bindings.
pub const MIN_STORAGE_BYTES: u64 = 16;

/// Usage of buffers that kernels read and write, and that can be filled or read back by copies.
const STORAGE: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl Gpu {
    /// A storage buffer holding `data` (zero-padded to at least [`MIN_STORAGE_BYTES`]).
    pub fn storage_from<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> wgpu::Buffer {
        let bytes: &[u8] = bytemuck::cast_slice(data);
        if bytes.len() < MIN_STORAGE_BYTES as usize {
            let mut padded = vec![0u8; MIN_STORAGE_BYTES as usize];
            padded[..bytes.len()].copy_from_slice(bytes);
            return self.storage_from(label, &padded);
        }
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytes,
                usage: STORAGE,
            })
    }

    /// A zeroed storage buffer of `bytes` bytes (at least [`MIN_STORAGE_BYTES`]).
    pub fn storage(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(MIN_STORAGE_BYTES).next_multiple_of(4),
            usage: STORAGE,
            mapped_at_creation: false,
        })
    }

    /// A uniform buffer holding `value`.
    pub fn uniform<T: bytemuck::Pod>(&self, label: &str, value: &T) -> wgpu::Buffer {
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::bytes_of(value),
                usage: wgpu::BufferUsages::UNIFORM,
            })
    }

    /// A buffer the host can map to read results back.
    pub fn readback(&self, label: &str, bytes: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes.max(4).next_multiple_of(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Maps `buffer` (a [`Gpu::readback`] buffer whose copy has been submitted), waits, and
    /// returns its first `len` values.
    pub fn read<T: bytemuck::Pod>(&self, buffer: &wgpu::Buffer, len: usize) -> Result<Vec<T>> {
        let bytes = (len * std::mem::size_of::<T>()) as u64;
        if bytes == 0 {
            return Ok(Vec::new());
        }
        let slice = buffer.slice(..bytes);
        let (tx, rx) = std::sync::mpsc::channel();
        slice.map_async(wgpu::MapMode::Read, move |r| {
            let _ = tx.send(r);
        });
        self.wait()?;
        rx.recv()
            .map_err(|_| Error::Gpu("readback was dropped".into()))?
            .map_err(|e| Error::Gpu(format!("cannot map readback buffer: {e}")))?;
        let view = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("cannot read mapped buffer: {e}")))?;
        let out = bytemuck::cast_slice(&view).to_vec();
        drop(view);
        buffer.unmap();
        Ok(out)
    }

    /// Copies `len` values of `src` to the host (a one-off: allocates a staging buffer). Meant
    /// for tests and debugging; the engine reads back through buffers it keeps.
    pub fn download<T: bytemuck::Pod>(&self, src: &wgpu::Buffer, len: usize) -> Result<Vec<T>> {
        let bytes = (len * std::mem::size_of::<T>()) as u64;
        let staging = self.readback("download", bytes);
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(src, 0, &staging, 0, bytes.next_multiple_of(4));
        self.queue.submit([enc.finish()]);
        self.read(&staging, len)
    }
}
