//! The invertible layers of the IB-INN and their subnets.
//!
//! Every invertible layer has `forward(x) -> (y, log_det)` and
//! `inverse(y) -> (x, log_det_inv)`, with per-sample log-dets of shape `[batch]` and
//! `log_det_inv = −log_det` except where the reference differs (the DCT, see
//! [`dct`]). `docs/layers.md` maps each layer onto the reference module and its keys.

pub mod batch_norm;
pub mod coupling;
pub mod dct;
pub mod haar;
pub mod subnet;

use burn::module::Module;
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

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

/// A fixed permutation of the features of a `[batch, n]` tensor (FrEIA `PermuteRandom`):
/// `y[:, i] = x[:, permutation[i]]`.
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

fn index_tensor<B: Backend>(indices: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let data: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    Tensor::from_data(
        TensorData::new(data, [indices.len()]).convert::<B::IntElem>(),
        device,
    )
}

impl<B: Backend> FeaturePermutation<B> {
    /// Builds the permutation from its indices.
    pub fn new(permutation: &[usize], device: &B::Device) -> Self {
        let inverse = crate::rng::invert_permutation(permutation);
        Self {
            permutation: index_tensor(permutation, device),
            inverse_permutation: index_tensor(&inverse, device),
        }
    }

    /// Permutes the features.
    ///
    /// # Shapes
    /// - `x`: `[batch, n]`
    /// - output: `[batch, n]` (the log-det is zero)
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.select(1, self.permutation.clone())
    }

    /// Undoes [`forward`](Self::forward).
    ///
    /// # Shapes
    /// - `y`: `[batch, n]`
    /// - output: `[batch, n]`
    pub fn inverse(&self, y: Tensor<B, 2>) -> Tensor<B, 2> {
        y.select(1, self.inverse_permutation.clone())
    }
}
