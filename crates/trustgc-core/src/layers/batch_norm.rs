//! Batch normalization with PyTorch's `nn.BatchNorm2d` semantics.
//!
//! burn's own `BatchNorm` picks its mode from the backend (autodiff or not) and updates
//! the running variance with the biased batch variance. The reference model was trained
//! with PyTorch, whose rules we keep exactly:
//!
//! - eval: `y = x·α + β` with `α = γ / sqrt(running_var + ε)`, `β = b − running_mean·α`;
//! - train: the same with the batch mean and the *biased* batch variance over (N, H, W),
//!   then `running_mean ← (1 − m)·running_mean + m·mean`,
//!   `running_var ← (1 − m)·running_var + m·var·n/(n − 1)` (unbiased), and
//!   `num_batches_tracked ← num_batches_tracked + 1`.
//!
//! The mode is explicit ([`Mode`]) so that a model can run in eval mode under autodiff
//! (input gradients for explanations) and in train mode without it (BatchNorm averaging).

use burn::config::Config;
use burn::module::{Initializer, Module, Param, RunningState};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use super::Mode;
use crate::ops::{
    centered_channel_affine, channel_affine, channel_squared_deviations, channel_sums,
};

/// Configuration of a [`BatchNorm2d`].
#[derive(Config, Debug)]
pub struct BatchNorm2dConfig {
    /// Number of channels.
    pub num_features: usize,
    /// Added to the variance before the square root (PyTorch's `eps`).
    #[config(default = 1e-5)]
    pub epsilon: f64,
    /// Weight of the new batch statistics in the running averages (PyTorch's `momentum`).
    #[config(default = 0.05)]
    pub momentum: f64,
}

/// Batch normalization over `[batch, channels, height, width]` with PyTorch's rules.
#[derive(Module, Debug)]
pub struct BatchNorm2d<B: Backend> {
    /// Scale γ, `[channels]` (PyTorch `weight`).
    pub weight: Param<Tensor<B, 1>>,
    /// Shift b, `[channels]` (PyTorch `bias`).
    pub bias: Param<Tensor<B, 1>>,
    /// Running mean, `[channels]`.
    pub running_mean: RunningState<Tensor<B, 1>>,
    /// Running (unbiased) variance, `[channels]`.
    pub running_var: RunningState<Tensor<B, 1>>,
    /// Number of train-mode batches seen, `[1]` (an integer count stored as float;
    /// exact up to 2^24; PyTorch stores it as an int64 scalar).
    pub num_batches_tracked: RunningState<Tensor<B, 1>>,
    /// Momentum of the running averages; `None` averages all batches seen with equal
    /// weight (PyTorch's `momentum=None`, used to re-estimate the statistics).
    pub momentum: Option<f64>,
    /// ε added to the variance.
    pub epsilon: f64,
}

impl BatchNorm2dConfig {
    /// Builds the layer with γ = 1, b = 0, running mean 0 and running variance 1.
    pub fn init<B: Backend>(&self, device: &B::Device) -> BatchNorm2d<B> {
        let n = self.num_features;
        BatchNorm2d {
            weight: Initializer::Ones.init([n], device),
            bias: Initializer::Zeros.init([n], device),
            running_mean: RunningState::new(Tensor::zeros([n], device)),
            running_var: RunningState::new(Tensor::ones([n], device)),
            num_batches_tracked: RunningState::new(Tensor::zeros([1], device)),
            momentum: Some(self.momentum),
            epsilon: self.epsilon,
        }
    }
}

impl<B: Backend> BatchNorm2d<B> {
    /// Forgets the running statistics: mean 0, variance 1, no batches seen (PyTorch's
    /// `reset_running_stats`).
    pub fn reset_running_stats(&self) {
        let mean = self.running_mean.value_sync();
        let (device, dtype, n) = (mean.device(), mean.dtype(), mean.dims()[0]);
        self.running_mean
            .update(Tensor::zeros([n], (&device, dtype)));
        self.running_var.update(Tensor::ones([n], (&device, dtype)));
        self.num_batches_tracked
            .update(Tensor::zeros([1], (&device, dtype)));
        let _ = self.running_mean.value_sync();
        let _ = self.running_var.value_sync();
        let _ = self.num_batches_tracked.value_sync();
    }

    /// Normalizes `x` per channel.
    ///
    /// # Shapes
    /// - `x`: `[batch, channels, height, width]`
    /// - output: same as `x`
    ///
    /// # Returns
    /// The normalized tensor. In [`Mode::Train`] the batch statistics are used and the
    /// running statistics are updated as PyTorch does.
    pub fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> Tensor<B, 4> {
        match mode {
            Mode::Eval => {
                // PyTorch's eval arithmetic: y = x·α + β, α = γ/sqrt(var + ε), β = b − mean·α.
                let mean = self.running_mean.value_sync();
                let var = self.running_var.value_sync();
                let alpha = var
                    .add_scalar(self.epsilon)
                    .sqrt()
                    .recip()
                    .mul(self.weight.val());
                let beta = self.bias.val().sub(mean.mul(alpha.clone()));
                channel_affine(x, alpha, beta)
            }
            Mode::Train => {
                // Centered form y = (x − mean)·α + b, so that autodiff forms
                // ∂L/∂α = Σ dy·(x − mean) as PyTorch's backward does, rather than
                // Σ dy·x − mean·Σ dy, which cancels in float32 when |mean| ≫ std.
                let (mean, var) = self.batch_statistics(&x);
                let alpha = var
                    .add_scalar(self.epsilon)
                    .sqrt()
                    .recip()
                    .mul(self.weight.val());
                centered_channel_affine(x, mean, alpha, self.bias.val())
            }
        }
    }

    /// Batch mean and biased variance over (N, H, W); updates the running statistics.
    ///
    /// Each channel plane of each image is summed with `sum_rows`' blocked accuracy and the
    /// plane sums are then added, which needs no transposed copy of the batch.
    fn batch_statistics(&self, x: &Tensor<B, 4>) -> (Tensor<B, 1>, Tensor<B, 1>) {
        let [batch, _, height, width] = x.dims();
        let count = batch * height * width;
        let mean = channel_sums(x.clone()).div_scalar(count as f64);
        let var = channel_squared_deviations(x.clone(), mean.clone()).div_scalar(count as f64);

        // PyTorch refuses a single value per channel in train mode; we keep the biased
        // variance there instead of dividing by zero.
        let unbias = if count > 1 {
            count as f64 / (count - 1) as f64
        } else {
            1.0
        };
        let tracked = self.num_batches_tracked.value_sync().add_scalar(1.0);
        // Weight of this batch: the momentum, or 1/(batches seen) for a plain average.
        let m = match self.momentum {
            Some(m) => Tensor::full([1], m, (&x.device(), tracked.dtype())),
            None => tracked.clone().recip(),
        };
        let keep = m.clone().neg().add_scalar(1.0);
        let running_mean = self
            .running_mean
            .value_sync()
            .mul(keep.clone())
            .add(mean.clone().detach().mul(m.clone()));
        let running_var = self
            .running_var
            .value_sync()
            .mul(keep)
            .add(var.clone().detach().mul_scalar(unbias).mul(m));
        self.running_mean.update(running_mean.detach());
        self.running_var.update(running_var.detach());
        self.num_batches_tracked.update(tracked.detach());
        // Fold the update into the stored value now, so that visitors and exporters
        // (which read the stored value) see it.
        let _ = self.running_mean.value_sync();
        let _ = self.running_var.value_sync();
        let _ = self.num_batches_tracked.value_sync();
        (mean, var)
    }
}
