//! Haar wavelet downsampling (FrEIA `HaarDownsampling`, `order_by_wavelet=True`).
//!
//! # Notation
//! For each input channel `c` and each 2x2 block with pixels `a = (0,0)`, `b = (0,1)`,
//! `c' = (1,0)`, `d = (1,1)` the four Haar kernels give
//! `k0 = a+b+c'+d`, `k1 = a−b+c'−d`, `k2 = a+b−c'−d`, `k3 = a−b−c'+d`.
//! Outputs are ordered by wavelet (channel `k·C + c`) and multiplied by
//! `fac_fwd = 0.5·rebalance`. The inverse multiplies by `fac_rev = 0.5/rebalance` and
//! applies the transposed kernels.
//!
//! `log_det = (C·H·W/4)·(ln 16 + 4·ln fac_fwd)` per sample (the reference computes it as a
//! Python float); the inverse uses `fac_rev`, which negates it.
//!
//! The reference stores the kernels as `haar_weights` `[4C, 1, 2, 2]`; we keep them as a
//! fixed parameter (checked against the closed form when a checkpoint is imported) and
//! compute with the closed form above.

use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::batch_norm::BatchNorm2d;
use super::{BatchNorms, Invertible, Mode};
use crate::ops::{DepthOrder, contiguous, depth_to_space, space_to_depth};

/// The four 2x2 Haar kernels, `[k][row][col]`.
pub const HAAR_KERNELS: [[[f32; 2]; 2]; 4] = [
    [[1.0, 1.0], [1.0, 1.0]],
    [[1.0, -1.0], [1.0, -1.0]],
    [[1.0, 1.0], [-1.0, -1.0]],
    [[1.0, -1.0], [-1.0, 1.0]],
];

/// The reference's `haar_weights` for `channels` input channels, `[4C, 1, 2, 2]` flattened.
pub fn haar_weights(channels: usize) -> Vec<f32> {
    (0..channels)
        .flat_map(|_| HAAR_KERNELS.iter().flatten().flatten().copied())
        .collect()
}

/// The reference's `order_by_wavelet` permutation: `out[:, k] = conv_out[:, perm[k]]`.
pub fn wavelet_order(channels: usize) -> Vec<usize> {
    (0..4)
        .flat_map(|i| (0..channels).map(move |j| i + 4 * j))
        .collect()
}

/// Haar downsampling `[B, C, H, W] → [B, 4C, H/2, W/2]`.
#[derive(Module, Debug)]
pub struct HaarDownsampling<B: Backend> {
    /// The reference's fixed `haar_weights`, `[4C, 1, 2, 2]`.
    pub kernels: Param<Tensor<B, 4>>,
    /// The reference's `rebalance` (0.5 in the released model).
    pub rebalance: f64,
}

/// Configuration of a [`HaarDownsampling`].
#[derive(Config, Debug)]
pub struct HaarDownsamplingConfig {
    /// Input channels `C` (the output has `4C`).
    pub channels: usize,
    /// The reference's `rebalance`: outputs are multiplied by `0.5 · rebalance`.
    #[config(default = 0.5)]
    pub rebalance: f64,
}

impl HaarDownsamplingConfig {
    /// Builds the transform.
    pub fn init<B: Backend>(&self, device: &B::Device) -> HaarDownsampling<B> {
        let channels = self.channels;
        let kernels = Tensor::<B, 4>::from_data(
            TensorData::new(haar_weights(channels), [4 * channels, 1, 2, 2]),
            device,
        );
        HaarDownsampling {
            kernels: Param::initialized(ParamId::new(), kernels).set_require_grad(false),
            rebalance: self.rebalance,
        }
    }
}

impl<B: Backend> HaarDownsampling<B> {
    /// The per-sample log-det of the forward transform for an input of `elements` values.
    pub fn log_det_value(&self, elements: usize) -> f64 {
        elements as f64 / 4.0 * (16f64.ln() + 4.0 * (0.5 * self.rebalance).ln())
    }
}

impl<B: Backend> Invertible<B, 4, 4> for HaarDownsampling<B> {
    /// Applies the transform (no mode dependence).
    ///
    /// # Shapes
    /// - `x`: `[batch, C, H, W]` with even `H`, `W`
    /// - output: `[batch, 4C, H/2, W/2]`, log-det `[batch]`
    ///
    /// # Returns
    /// `(y, log_det)`.
    fn forward(&self, x: Tensor<B, 4>, _mode: Mode) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let [batch, channels, height, width] = x.dims();
        let (device, dtype) = (x.device(), x.dtype());
        // [B, 4C, H/2, W/2] with the pixel (r, s) of each 2x2 block in channels (2r + s)·C + c.
        let u = space_to_depth(x, DepthOrder::PositionMajor);
        let pick = |k: usize| contiguous(u.clone().narrow(1, k * channels, channels));
        let (a, b, c, d) = (pick(0), pick(1), pick(2), pick(3));
        let (sum_top, sum_bottom) = (a.clone().add(b.clone()), c.clone().add(d.clone()));
        let (diff_top, diff_bottom) = (a.sub(b), c.sub(d));
        let k0 = sum_top.clone().add(sum_bottom.clone());
        let k1 = diff_top.clone().add(diff_bottom.clone());
        let k2 = sum_top.sub(sum_bottom);
        let k3 = diff_top.sub(diff_bottom);
        // Wavelet-major: output channel k·C + c.
        let y = Tensor::cat(vec![k0, k1, k2, k3], 1).mul_scalar(0.5 * self.rebalance);
        let log_det = self.log_det_value(channels * height * width);
        (y, Tensor::full([batch], log_det, (&device, dtype)))
    }

    /// Inverts the transform.
    ///
    /// # Shapes
    /// - `y`: `[batch, 4C, H, W]`
    /// - output: `[batch, C, 2H, 2W]`, log-det `[batch]`
    ///
    /// # Returns
    /// `(x, log_det_inv)` with `log_det_inv = −log_det`.
    fn inverse(&self, y: Tensor<B, 4>, _mode: Mode) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let [batch, channels4, h2, w2] = y.dims();
        let channels = channels4 / 4;
        let (device, dtype) = (y.device(), y.dtype());
        let fac_rev = 0.5 / self.rebalance;
        let k = y.mul_scalar(fac_rev);
        let pick = |i: usize| contiguous(k.clone().narrow(1, i * channels, channels));
        let (k0, k1, k2, k3) = (pick(0), pick(1), pick(2), pick(3));
        let (s02, s13) = (k0.clone().add(k2.clone()), k1.clone().add(k3.clone()));
        let (d02, d13) = (k0.sub(k2), k1.sub(k3));
        let a = s02.clone().add(s13.clone());
        let b = s02.sub(s13);
        let c = d02.clone().add(d13.clone());
        let d = d02.sub(d13);
        let u = Tensor::cat(vec![a, b, c, d], 1);
        let elements = channels4 * h2 * w2;
        let log_det = elements as f64 / 4.0 * (16f64.ln() + 4.0 * fac_rev.ln());
        (
            depth_to_space(u, DepthOrder::PositionMajor),
            Tensor::full([batch], log_det, (&device, dtype)),
        )
    }
}

impl<B: Backend> BatchNorms<B> for HaarDownsampling<B> {
    fn for_each_batch_norm(&mut self, _f: &mut dyn FnMut(&mut BatchNorm2d<B>)) {}
}
