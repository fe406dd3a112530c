//! The invertible layers of the IB-INN and their subnets.
//!
//! # The contract
//! Every invertible step implements [`Invertible`]: `forward(x, mode) -> (y, log_det)` and
//! `inverse(y, mode) -> (x, log_det_inv)`, with per-sample log-dets of shape `[batch]` and
//! `log_det_inv = −log_det` ([`LogDetConvention::Negated`]), except where the reference
//! differs (the DCT reports the same constant both ways, [`LogDetConvention::Same`]; see
//! [`dct`]). The flow ([`crate::flow::Flow`]) is an ordered list of such steps: its
//! forward pass is a fold that sums the log-dets, its inverse the reversed fold.
//!
//! Every layer is built from a `…Config` with `init(&device)`, as burn's own modules are.
//! `docs/layers.md` in the repository maps each layer onto the reference module and its
//! checkpoint keys.

pub mod batch_norm;
pub mod conv;
pub mod coupling;
pub mod dct;
pub mod haar;
pub mod subnet;

use burn::config::Config;
use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor};

use crate::ops::index_tensor;

/// How the log-det of [`Invertible::inverse`] relates to that of [`Invertible::forward`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogDetConvention {
    /// `log_det_inv = −log_det` (exact, every layer but the DCT).
    Negated,
    /// The same value in both directions: the reference's DCT quirk, kept for parity.
    Same,
}

/// A named raw subnet output recorded while tracing, flattened to `[batch, numel]`
/// (`s`, `s_hi`, `s_lo` as the reference names them).
pub type SubnetOutput<B> = (&'static str, Tensor<B, 2>);

/// A traced forward pass: output, per-sample log-det and the raw subnet outputs.
pub type Traced<B, const O: usize> = (Tensor<B, O>, Tensor<B, 1>, Vec<SubnetOutput<B>>);

/// An invertible step `Tensor<B, I> ↔ Tensor<B, O>` with a per-sample log-determinant.
///
/// Implemented by every invertible layer: the couplings (4 → 4), Haar downsampling
/// (4 → 4), DCT pooling (4 → 2) and the feature permutation (2 → 2).
pub trait Invertible<B: Backend, const I: usize, const O: usize> {
    /// Applies the step.
    ///
    /// # Shapes
    /// - `x`: the layer's input, batch first
    ///
    /// # Returns
    /// `(y, log_det)` with `log_det` `[batch]`, `log |det ∂y/∂x|` per sample.
    fn forward(&self, x: Tensor<B, I>, mode: Mode) -> (Tensor<B, O>, Tensor<B, 1>);

    /// Undoes [`forward`](Self::forward).
    ///
    /// # Returns
    /// `(x, log_det_inv)` with `log_det_inv` `[batch]`; its relation to the forward
    /// log-det is [`log_det_convention`](Self::log_det_convention).
    fn inverse(&self, y: Tensor<B, O>, mode: Mode) -> (Tensor<B, I>, Tensor<B, 1>);

    /// [`forward`](Self::forward) that also returns the raw subnet outputs (empty for
    /// layers without subnets), for comparing every intermediate with the reference.
    fn forward_traced(&self, x: Tensor<B, I>, mode: Mode) -> Traced<B, O> {
        let (y, log_det) = self.forward(x, mode);
        (y, log_det, Vec::new())
    }

    /// How the inverse's log-det relates to the forward one.
    fn log_det_convention(&self) -> LogDetConvention {
        LogDetConvention::Negated
    }
}

/// A step of the flow's convolutional part: a 4-D invertible layer whose BatchNorms can
/// be reached (the couplings and Haar).
pub trait FlowStep<B: Backend>: Invertible<B, 4, 4> + BatchNorms<B> {}

impl<B: Backend, T: Invertible<B, 4, 4> + BatchNorms<B>> FlowStep<B> for T {}

/// Flattens `[batch, …]` to `[batch, numel]` (for traces).
pub fn flatten_batch<B: Backend>(x: &Tensor<B, 4>) -> Tensor<B, 2> {
    let [batch, channels, height, width] = x.dims();
    x.clone().reshape([batch, channels * height * width])
}

/// Every BatchNorm layer inside a module, for changing their settings (e.g. the momentum
/// before re-estimating statistics).
pub trait BatchNorms<B: Backend> {
    /// Calls `f` on each BatchNorm layer, in the reference's state-dict order.
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut batch_norm::BatchNorm2d<B>));
}

/// Whether BatchNorm layers use running statistics or the batch's own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Mode {
    /// Running statistics; nothing is updated (PyTorch `model.eval()`).
    #[default]
    Eval,
    /// Batch statistics; running statistics are updated (PyTorch `model.train()`).
    Train,
}

/// Configuration of a [`FeaturePermutation`].
#[derive(Config, Debug)]
pub struct FeaturePermutationConfig {
    /// `permutation[i]` is the input index of output `i`; must be a permutation of
    /// `0..n`.
    pub permutation: Vec<usize>,
}

impl FeaturePermutationConfig {
    /// Builds the permutation.
    ///
    /// # Panics
    /// When `permutation` is not a permutation of `0..n` (the flow builds it from its own
    /// generator, so this is a bug, not bad input).
    pub fn init<B: Backend>(&self, device: &B::Device) -> FeaturePermutation<B> {
        let inverse = crate::rng::invert_permutation(&self.permutation);
        FeaturePermutation {
            permutation: index_tensor(&self.permutation, device),
            inverse_permutation: index_tensor(&inverse, device),
        }
    }
}

/// A fixed permutation of the features of a `[batch, n]` tensor (FrEIA `PermuteRandom`):
/// `y[:, i] = x[:, permutation[i]]`; its log-det is zero.
///
/// The reference does not save it; it is drawn at construction from numpy's legacy
/// generator (see [`crate::rng::legacy_permutation`]), so it is a constant of the module
/// here too.
#[derive(Module, Debug)]
pub struct FeaturePermutation<B: Backend> {
    /// `permutation[i]` is the input index of output `i`.
    pub permutation: Tensor<B, 1, Int>,
    /// The inverse permutation.
    pub inverse_permutation: Tensor<B, 1, Int>,
}

impl<B: Backend> Invertible<B, 2, 2> for FeaturePermutation<B> {
    /// Permutes the features: `[batch, n] → [batch, n]`, log-det zero.
    fn forward(&self, x: Tensor<B, 2>, _mode: Mode) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let zeros = Tensor::zeros([x.dims()[0]], (&x.device(), x.dtype()));
        (x.select(1, self.permutation.clone()), zeros)
    }

    /// Undoes the permutation: `[batch, n] → [batch, n]`, log-det zero.
    fn inverse(&self, y: Tensor<B, 2>, _mode: Mode) -> (Tensor<B, 2>, Tensor<B, 1>) {
        let zeros = Tensor::zeros([y.dims()[0]], (&y.device(), y.dtype()));
        (y.select(1, self.inverse_permutation.clone()), zeros)
    }
}
