//! DCT pooling (the reference's `DCTPooling2d`): a 2-D DCT-II over the final `N x N`
//! feature map, flattened so that the first `C` entries are the DC terms.
//!
//! # Notation
//! `W[k, n] = 2·cos(π(2n+1)k / 2N)` (`weight`), `t[c,u,v] = Σ_{h,n} W[u,h]·W[v,n]·x[c,h,n]`,
//! flattened at index `(v·N + u)·C + c` and multiplied by `rebalance / (2(N+1))`
//! (1/32 for N = 7). The inverse applies `inverse_weight` (= `weight⁻¹`) the same way and
//! multiplies by `2(N+1) / rebalance`.
//!
//! **Log-det quirk (kept):** the reference returns `N²·C·ln(rebalance)` in *both*
//! directions, instead of the exact `N²·C·ln(rebalance/(2(N+1))) + 2N·C·ln|det W|` with
//! opposite signs. A faithful port keeps it; see `docs/layers.md`.

use burn::config::Config;
use burn::module::{Module, Param, ParamId};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};

use super::{Invertible, LogDetConvention, Mode};

/// `weight[k, n] = 2 cos(π (2n+1) k / 2N)`, row-major `[N, N]`.
pub fn dct_weight(n: usize) -> Vec<f64> {
    let mut w = vec![0.0; n * n];
    for k in 0..n {
        for i in 0..n {
            w[k * n + i] =
                2.0 * (std::f64::consts::PI * (2 * i + 1) as f64 * k as f64 / (2 * n) as f64).cos();
        }
    }
    w
}

/// `inverse_weight = weight⁻¹`, row-major `[N, N]`: `inv[i, k] = c_k·cos(π(2i+1)k/2N)/N`
/// with `c_0 = 1/2`, `c_k = 1` otherwise (a scaled DCT-III).
pub fn dct_inverse_weight(n: usize) -> Vec<f64> {
    let mut w = vec![0.0; n * n];
    for i in 0..n {
        for k in 0..n {
            let c = if k == 0 { 0.5 } else { 1.0 };
            w[i * n + k] = c
                * (std::f64::consts::PI * (2 * i + 1) as f64 * k as f64 / (2 * n) as f64).cos()
                / n as f64;
        }
    }
    w
}

/// DCT pooling `[B, C, N, N] → [B, N·N·C]`.
#[derive(Module, Debug)]
pub struct DctPooling<B: Backend> {
    /// The DCT matrix `W`, `[N, N]` (fixed; the reference's `weight`).
    pub weight: Param<Tensor<B, 2>>,
    /// `W⁻¹`, `[N, N]` (fixed; the reference's `inv_weight`).
    pub inverse_weight: Param<Tensor<B, 2>>,
    /// The reference's `rebalance` argument (0.5).
    pub rebalance: f64,
    /// Channels `C` of the pooled map (the inverse's output shape).
    pub channels: usize,
}

/// Configuration of a [`DctPooling`] over a `[C, N, N]` map.
#[derive(Config, Debug)]
pub struct DctPoolingConfig {
    /// Channels `C` of the map.
    pub channels: usize,
    /// Side `N` of the map.
    pub size: usize,
    /// The reference's `rebalance` argument.
    #[config(default = 0.5)]
    pub rebalance: f64,
}

impl DctPoolingConfig {
    /// Builds the pooling with the closed-form matrices.
    pub fn init<B: Backend>(&self, device: &B::Device) -> DctPooling<B> {
        let n = self.size;
        DctPooling {
            weight: fixed_matrix(dct_weight(n), n, device),
            inverse_weight: fixed_matrix(dct_inverse_weight(n), n, device),
            rebalance: self.rebalance,
            channels: self.channels,
        }
    }
}

fn fixed_matrix<B: Backend>(values: Vec<f64>, n: usize, device: &B::Device) -> Param<Tensor<B, 2>> {
    let values: Vec<f32> = values.into_iter().map(|v| v as f32).collect();
    let tensor = Tensor::<B, 2>::from_data(TensorData::new(values, [n, n]), device);
    Param::initialized(ParamId::new(), tensor).set_require_grad(false)
}

impl<B: Backend> DctPooling<B> {
    /// `2(N+1)/rebalance`, the reference's `self.rebalance`.
    fn normalizer(&self, n: usize) -> f64 {
        2.0 * (n as f64 + 1.0) / self.rebalance
    }

    /// The per-sample log-det the reference reports, in either direction.
    pub fn log_det_value(&self, channels: usize, n: usize) -> f64 {
        (n * n * channels) as f64 * self.rebalance.ln()
    }

    /// `out[..., i, j] = Σ_k x[..., i, k]·m[j, k]` then the same over `i`: `M X Mᵀ`.
    fn separable(x: Tensor<B, 4>, m: Tensor<B, 2>) -> Tensor<B, 4> {
        let [batch, channels, n, _] = x.dims();
        let mt = m.transpose();
        let rows = x
            .reshape([batch * channels * n, n])
            .matmul(mt.clone())
            .reshape([batch, channels, n, n]);
        rows.swap_dims(2, 3)
            .reshape([batch * channels * n, n])
            .matmul(mt)
            .reshape([batch, channels, n, n])
            .swap_dims(2, 3)
    }

    /// The side `N` of the pooled map.
    pub fn size(&self) -> usize {
        self.weight.lazy_shape().dims::<2>()[0]
    }
}

impl<B: Backend> Invertible<B, 4, 2> for DctPooling<B> {
    /// Applies the pooling.
    ///
    /// # Shapes
    /// - `x`: `[batch, C, N, N]`
    /// - output: `[batch, N·N·C]`, log-det `[batch]`
    ///
    /// # Returns
    /// `(t, log_det)`; `t[:, :C]` are the DC terms.
    fn forward(&self, x: Tensor<B, 4>, _mode: Mode) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let [batch, channels, n, _] = x.dims();
        let (device, dtype) = (x.device(), x.dtype());
        let t = Self::separable(x, self.weight.val())
            .swap_dims(1, 3)
            .reshape([batch, n * n * channels])
            .mul_scalar(1.0 / self.normalizer(n));
        let log_det = self.log_det_value(channels, n);
        (t, Tensor::full([batch], log_det, (&device, dtype)))
    }

    /// Inverts the pooling.
    ///
    /// # Shapes
    /// - `t`: `[batch, N·N·C]`
    /// - output: `[batch, C, N, N]`, log-det `[batch]`
    ///
    /// # Returns
    /// `(x, log_det_inv)`; by the reference's quirk `log_det_inv` equals the forward
    /// log-det (same sign, [`LogDetConvention::Same`]).
    fn inverse(&self, t: Tensor<B, 2>, _mode: Mode) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let (channels, n) = (self.channels, self.size());
        let batch = t.dims()[0];
        let (device, dtype) = (t.device(), t.dtype());
        let x = t.reshape([batch, n, n, channels]).swap_dims(1, 3);
        let x = Self::separable(x, self.inverse_weight.val()).mul_scalar(self.normalizer(n));
        let log_det = self.log_det_value(channels, n);
        (x, Tensor::full([batch], log_det, (&device, dtype)))
    }

    fn log_det_convention(&self) -> LogDetConvention {
        LogDetConvention::Same
    }
}
