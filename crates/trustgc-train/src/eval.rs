//! Evaluation on a labelled dataset: accuracy, `nll_joint` and bits per dimension.
//!
//! Accuracy is measured on the images as they are (no noise): how the model is used.
//! The likelihoods are measured, as is usual for density models of 8-bit images, on
//! dequantized images `x + U(0, 1)/255` with a fixed seed, so that they are densities of
//! the 8-bit images in the same sense as the training objective.

use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::tensor::ElementConversion;
use burn::tensor::backend::Backend;
use serde::Serialize;
use trustgc_core::GenerativeClassifier;
use trustgc_core::input::GrayscaleInput;

use crate::data::{EpochLoader, LabeledImages, LoaderSettings};

/// What [`evaluate`] measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalReport {
    /// Images evaluated.
    pub images: usize,
    /// Fraction classified correctly (argmax of the posterior, uniform prior).
    pub accuracy: f64,
    /// Mean `nll_joint` (nats per dimension, the reference's definition) on dequantized
    /// images.
    pub nll_joint: f64,
    /// Bits per dimension of the 8-bit images (includes the 2π term, the class prior, the
    /// normalization and the 1/255 scaling).
    pub bits_per_dim: f64,
}

/// `0.5·ln 2π + ln(classes)/D + ln 255 + ln std`: added to `nll_joint` and divided by
/// ln 2, bits per dimension on the 8-bit scale.
pub fn bits_offset(classes: usize, total_dims: usize, mean_log_std: f64) -> f64 {
    0.5 * (2.0 * std::f64::consts::PI).ln()
        + (classes as f64).ln() / total_dims as f64
        + 255f64.ln()
        + mean_log_std
}

/// Evaluates `model` on every image of `data`.
pub fn evaluate<B: Backend>(
    model: &GenerativeClassifier<B>,
    input: &GrayscaleInput,
    data: Arc<LabeledImages>,
    batch_size: usize,
    noise_seed: u64,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> EvalReport {
    let classes = model.head.mu_fc.dims()[0];
    let settings = LoaderSettings {
        batch_size,
        shuffle: None,
        dequantize: None,
        noise_per_epoch: false,
        flip: false,
        label_smoothing: 0.0,
        classes,
        input: input.clone(),
    };
    let indices: Vec<usize> = (0..data.len()).collect();
    let clean = EpochLoader::<B>::new(
        data.clone(),
        indices.clone(),
        settings.clone(),
        0,
        device.clone(),
    );
    let noisy = EpochLoader::<B>::new(
        data.clone(),
        indices,
        LoaderSettings {
            dequantize: Some(noise_seed),
            ..settings
        },
        0,
        device.clone(),
    );
    let norms = model.head.class_norms();
    let (mut correct, mut nll_sum, mut done) = (0.0, 0.0, 0);
    for (clean, noisy) in clean.iter().zip(noisy.iter()) {
        let n = clean.labels.len();
        let out = model.forward_with_norms(clean.x, &norms);
        let losses = out.losses(clean.targets);
        correct += losses.correct.sum().into_scalar().elem::<f64>();
        let out = model.forward_with_norms(noisy.x, &norms);
        let losses = out.losses(noisy.targets);
        nll_sum += losses.nll_joint.sum().into_scalar().elem::<f64>();
        done += n;
        progress(done, data.len());
    }
    let images = done.max(1) as f64;
    let nll_joint = nll_sum / images;
    EvalReport {
        images: done,
        accuracy: correct / images,
        nll_joint,
        bits_per_dim: (nll_joint
            + bits_offset(classes, model.total_dims, f64::from(input.std).ln()))
            / std::f64::consts::LN_2,
    }
}
