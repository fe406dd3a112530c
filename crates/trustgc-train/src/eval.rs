//! Evaluation on a labelled dataset: accuracy, `nll_joint` and bits per dimension.
//!
//! Accuracy is measured on the images as they are (no noise): how the model is used; for
//! photos also with torchvision's 10-crop (posteriors averaged over the crops, as the
//! reference's evaluation does). The likelihoods are measured, as is usual for density
//! models of 8-bit images, on dequantized images `x + U(0, 1)/255` with a fixed seed, so
//! that they are densities of the 8-bit images in the same sense as the training
//! objective.

use std::sync::Arc;

use burn::data::dataloader::DataLoader;
use burn::tensor::activation::softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{ElementConversion, Tensor, TensorData};
use serde::Serialize;
use trustgc_core::GenerativeClassifier;

use crate::data::{EpochLoader, LoaderSettings, Samples};
use crate::photos::PhotoSamples;

/// What [`evaluate`] measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct EvalReport {
    /// Images evaluated.
    pub images: usize,
    /// Fraction classified correctly, 1 crop (argmax of the posterior, uniform prior).
    pub accuracy: f64,
    /// Fraction classified correctly with 10 crops (photos only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy_10_crop: Option<f64>,
    /// Mean `nll_joint` (nats per dimension, the reference's definition) on dequantized
    /// images.
    pub nll_joint: f64,
    /// Bits per dimension of the 8-bit images (includes the 2π term, the class prior, the
    /// normalization and the 1/255 scaling).
    pub bits_per_dim: f64,
}

/// Why an evaluation has no result.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// No image could be evaluated: the set is empty, or every image was unreadable.
    /// (An accuracy of "0 %" over nothing would be a silently wrong answer.)
    #[error(
        "no images to evaluate: the data set is empty or none of its {items} items could be read"
    )]
    NoImages {
        /// Items in the data set.
        items: usize,
    },
    /// The model gave a non-finite negative log-likelihood (NaN or infinite weights or
    /// inputs): the metrics would be meaningless.
    #[error(
        "the model's nll_joint is not finite ({nll_sum}) over {images} images: its weights or the inputs hold NaN or infinite values"
    )]
    NonFinite {
        /// The summed nll_joint.
        nll_sum: f64,
        /// Images evaluated.
        images: usize,
    },
}

/// `0.5·ln 2π + ln(classes)/D + ln 255 + mean ln std`: added to `nll_joint` and divided
/// by ln 2, bits per dimension on the 8-bit scale.
pub fn bits_offset(classes: usize, total_dims: usize, mean_log_std: f64) -> f64 {
    0.5 * (2.0 * std::f64::consts::PI).ln()
        + (classes as f64).ln() / total_dims as f64
        + 255f64.ln()
        + mean_log_std
}

/// Evaluates `model` on every item of `data`; `mean_log_std` is the input
/// normalization's (see [`bits_offset`]).
///
/// # Errors
/// [`EvalError::NoImages`] for an empty set, [`EvalError::NonFinite`] when the
/// likelihoods are not finite.
pub fn evaluate<B: Backend>(
    model: &GenerativeClassifier<B>,
    data: Arc<dyn Samples>,
    mean_log_std: f64,
    batch_size: usize,
    noise_seed: u64,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<EvalReport, EvalError> {
    if data.is_empty() {
        return Err(EvalError::NoImages { items: 0 });
    }
    let classes = model.head.mu_fc.dims()[0];
    let settings = LoaderSettings {
        batch_size,
        shuffle: None,
        dequantize: None,
        noise_per_epoch: false,
        flip: false,
        label_smoothing: 0.0,
        classes,
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
        correct += out
            .losses(clean.targets)
            .correct
            .sum()
            .into_scalar()
            .elem::<f64>();
        let out = model.forward_with_norms(noisy.x, &norms);
        nll_sum += out
            .losses(noisy.targets)
            .nll_joint
            .sum()
            .into_scalar()
            .elem::<f64>();
        done += n;
        progress(done, data.len());
    }
    if done == 0 {
        return Err(EvalError::NoImages { items: data.len() });
    }
    if !nll_sum.is_finite() {
        return Err(EvalError::NonFinite {
            nll_sum,
            images: done,
        });
    }
    let images = done as f64;
    let nll_joint = nll_sum / images;
    Ok(EvalReport {
        images: done,
        accuracy: correct / images,
        accuracy_10_crop: None,
        nll_joint,
        bits_per_dim: (nll_joint + bits_offset(classes, model.total_dims, mean_log_std))
            / std::f64::consts::LN_2,
    })
}

/// 10-crop accuracy: posteriors averaged over torchvision's `TenCrop`, then argmax.
/// Unreadable images are reported and left out.
///
/// # Errors
/// [`EvalError::NoImages`] when no image could be read.
pub fn ten_crop_accuracy<B: Backend>(
    model: &GenerativeClassifier<B>,
    photos: &PhotoSamples,
    device: &B::Device,
    mut progress: impl FnMut(usize, usize),
) -> Result<f64, EvalError> {
    let [c, h, w] = photos.shape();
    let per = c * h * w;
    let norms = model.head.class_norms();
    let mut buffer = vec![0f32; 10 * per];
    let (mut correct, mut done) = (0usize, 0usize);
    for i in 0..photos.len() {
        if let Err(error) = photos.write_ten_crop(i, &mut buffer) {
            error.warn_skipped();
            continue;
        }
        let x = Tensor::<B, 4>::from_data(TensorData::new(buffer.clone(), [10, c, h, w]), device);
        let out = model.forward_with_norms(x, &norms);
        let mean = softmax(out.logits(), 1).mean_dim(0);
        let predicted = mean.argmax(1).into_scalar().elem::<i64>() as usize;
        correct += usize::from(predicted == photos.label(i));
        done += 1;
        progress(i + 1, photos.len());
    }
    if done == 0 {
        return Err(EvalError::NoImages {
            items: photos.len(),
        });
    }
    Ok(correct as f64 / done as f64)
}
