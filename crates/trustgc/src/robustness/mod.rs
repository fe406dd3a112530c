//! Robustness of a generative classifier, measured: adversarial attacks against its
//! posterior and whether its verdict notices them ([`attack`]), and distribution shift by
//! common corruptions ([`corrupt`]).
//!
//! # Pixel space
//!
//! Attacks and corruptions act on the **8-bit image the model sees**
//! ([`crate::scores::model_pixels`]: the 28 × 28 grayscale image of a Fashion-MNIST model,
//! the resized and center-cropped RGB photo of an ImageNet model), as values in `[0, 1]`
//! (pixel / 255). [`pixels_to_input`] maps such a batch `[batch, C, H, W]` to the model's
//! input exactly as [`Classifier::preprocess`] does (padding, normalization,
//! space-to-depth), with tensor operations that autodiff can differentiate. The attacked or
//! corrupted images are rounded back to 8 bits ([`to_images`]) before they are evaluated:
//! what an attacker can hand over is an image file.
//!
//! # Evaluation
//!
//! [`evaluate`] runs the classifier on 8-bit images and returns the same
//! [`Likelihoods`] (verdicts included) that `trustgc classify` would give for them as
//! image files (for a grayscale model exactly; for an ImageNet model the crop is fed as a
//! tensor, so its verdict has no complexity test). [`summarize`] turns those into the
//! numbers of a robustness report: accuracy, the fraction the verdict flags (calls out of
//! distribution) and the calibration ([`crate::metrics::calibration_report`]);
//! [`shift_detection`] measures, for every OoD score ([`ScoreKind`]), how well it separates
//! the clean images from their attacked or corrupted versions (AUROC, clean images as the
//! positive class, as in [`crate::metrics`]).

pub mod attack;
pub mod corrupt;

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use image::{DynamicImage, GrayImage};
use serde::Serialize;
use trustgc_core::input::InputSpec;

use crate::Classifier;
use crate::classifier::{ClassifyError, Likelihoods};
use crate::metrics::{
    CALIBRATION_BINS, CalibrationReport, MetricsError, calibration_report, detection_report,
};
use crate::ood::Verdict;
use crate::preprocess::Image8;
use crate::scores::{OodScores, ScoreKind, png_bits};

/// Why a robustness measurement could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RobustnessError {
    /// No images were given.
    #[error("no images to {what}")]
    Empty {
        /// What was to be done with them.
        what: &'static str,
    },
    /// Every labelled image is of the same class: accuracy and calibration on one class
    /// say nothing about a classifier.
    #[error(
        "all {images} labelled images are of class {class}; give images of at least two classes"
    )]
    OneClass {
        /// The class.
        class: usize,
        /// How many images.
        images: usize,
    },
    /// A label that is not a class of the model.
    #[error("label {label} of image {index} is not one of the model's {classes} classes")]
    Label {
        /// Which image.
        index: usize,
        /// Its label.
        label: usize,
        /// The model's classes.
        classes: usize,
    },
    /// Not one label per image.
    #[error("{images} images but {labels} labels")]
    Labels {
        /// Images given.
        images: usize,
        /// Labels given.
        labels: usize,
    },
    /// The model has no input representation, so there is no pixel space to act in.
    #[error("the model's config has no `input` representation: attacks and corruptions need one")]
    NoInputSpec,
    /// An image that is not the size and channel count of the model's pixel space.
    #[error(
        "image {index} is {width}x{height} with {channels} channels; the model's pixel space is {expected:?} (channels, height, width)"
    )]
    ImageShape {
        /// Which image.
        index: usize,
        /// Its width.
        width: usize,
        /// Its height.
        height: usize,
        /// Its channels.
        channels: usize,
        /// `[C, H, W]` of the model's pixel space.
        expected: [usize; 3],
    },
    /// An image whose pixel buffer does not hold `width · height · channels` values.
    #[error(
        "image {index} claims {width}x{height} with {channels} channels but holds {len} values"
    )]
    PixelData {
        /// Which image.
        index: usize,
        /// Its width.
        width: usize,
        /// Its height.
        height: usize,
        /// Its channels.
        channels: usize,
        /// The values it holds.
        len: usize,
    },
    /// A pixel tensor of the wrong shape.
    #[error("pixel batch of shape {found:?}; the model's pixel space is [batch, {}, {}, {}]", expected[0], expected[1], expected[2])]
    PixelShape {
        /// `[C, H, W]` of the model's pixel space.
        expected: [usize; 3],
        /// The shape given.
        found: Vec<usize>,
    },
    /// Pixels outside `[0, 1]` or not finite.
    #[error("pixel batch holds {count} values that are NaN, infinite or outside [0, 1]")]
    PixelRange {
        /// How many.
        count: usize,
    },
    /// An attack setting that cannot work.
    #[error("attack setting `{field}` = {value} {requirement}")]
    Setting {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: f64,
        /// What it must be.
        requirement: &'static str,
    },
    /// The adaptive attack needs the model's OoD statistics (`ood.json`).
    #[error("the adaptive attack needs the model's out-of-distribution statistics (ood.json)")]
    NoOodStats,
    /// autodiff gave no gradient for the pixels (a backend that does not track them).
    #[error("the backend returned no gradient for the attacked pixels")]
    NoGradient,
    /// The loss of the attack is NaN or infinite.
    #[error("the attack's loss is not finite (NaN or infinity) at step {step}")]
    NonFiniteLoss {
        /// The step.
        step: usize,
    },
    /// The gradient of the attack's loss has NaN or infinite entries.
    #[error("the gradient of the attack's loss has {count} non-finite entries at step {step}")]
    NonFiniteGradient {
        /// The step.
        step: usize,
        /// How many entries are NaN or infinite.
        count: usize,
    },
    /// A corruption severity outside `0..=5`.
    #[error("corruption severity {severity} is not in 0..=5")]
    Severity {
        /// The severity given.
        severity: usize,
    },
    /// The JPEG corruption could not encode or decode an image.
    #[error("the JPEG corruption failed on a {width}x{height} image: {reason}")]
    Jpeg {
        /// Width of the image.
        width: usize,
        /// Height of the image.
        height: usize,
        /// What failed (libjpeg's message is not kept: it reports through a panic).
        reason: &'static str,
    },
    /// The JPEG corruption's decoder rejected its own output.
    #[error("the JPEG corruption could not decode its own output")]
    JpegDecode(#[source] crate::preprocess::ImageError),
    /// The classifier failed.
    #[error(transparent)]
    Classify(#[from] ClassifyError),
    /// A metric could not be computed (NaN scores, an empty set).
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Values read back from the device could not be converted.
    #[error("cannot read {what} back from the device: {source}")]
    ReadBack {
        /// Which tensor.
        what: &'static str,
        /// burn's error.
        #[source]
        source: burn::tensor::DataError,
    },
}

/// [`RobustnessError::PixelData`] when `image`'s buffer does not hold
/// `width · height · channels` values (its fields are public).
pub(crate) fn check_data(image: &Image8, index: usize) -> Result<(), RobustnessError> {
    let len = image.data.len();
    if len == image.width * image.height * image.channels {
        Ok(())
    } else {
        Err(RobustnessError::PixelData {
            index,
            width: image.width,
            height: image.height,
            channels: image.channels,
            len,
        })
    }
}

/// A tensor's values on the host as `f32`.
pub(crate) fn host<B: Backend, const D: usize>(
    what: &'static str,
    tensor: Tensor<B, D>,
) -> Result<Vec<f32>, RobustnessError> {
    tensor
        .into_data()
        .convert::<f32>()
        .into_vec()
        .map_err(|source| RobustnessError::ReadBack { what, source })
}

/// The model's pixel space `[C, H, W]`: `[1, size, size]` for a grayscale
/// representation, `[3, crop, crop]` for an ImageNet one.
pub fn pixel_shape(spec: &InputSpec) -> [usize; 3] {
    match spec {
        InputSpec::Grayscale(g) => [1, g.size, g.size],
        InputSpec::ImageNet { crop, .. } => [3, *crop, *crop],
    }
}

/// Checks that `labels` are one per image, classes of the model, and of at least two
/// classes.
///
/// # Errors
/// [`RobustnessError::Empty`], [`RobustnessError::Labels`], [`RobustnessError::Label`],
/// [`RobustnessError::OneClass`].
pub fn check_labels(
    images: usize,
    labels: &[usize],
    classes: usize,
) -> Result<(), RobustnessError> {
    if images == 0 {
        return Err(RobustnessError::Empty { what: "evaluate" });
    }
    if labels.len() != images {
        return Err(RobustnessError::Labels {
            images,
            labels: labels.len(),
        });
    }
    if let Some((index, &label)) = labels.iter().enumerate().find(|(_, l)| **l >= classes) {
        return Err(RobustnessError::Label {
            index,
            label,
            classes,
        });
    }
    if labels.iter().all(|&l| l == labels[0]) {
        return Err(RobustnessError::OneClass {
            class: labels[0],
            images,
        });
    }
    Ok(())
}

/// 8-bit images of the model's pixel space as a batch `[batch, C, H, W]` of values in
/// `[0, 1]`.
///
/// # Errors
/// [`RobustnessError::Empty`] for no images, [`RobustnessError::ImageShape`] for an image
/// of another size or channel count than `shape`.
pub fn to_tensor<B: Backend>(
    images: &[Image8],
    shape: [usize; 3],
    device: &B::Device,
) -> Result<Tensor<B, 4>, RobustnessError> {
    if images.is_empty() {
        return Err(RobustnessError::Empty { what: "attack" });
    }
    let [c, h, w] = shape;
    let mut data = Vec::with_capacity(images.len() * c * h * w);
    for (index, image) in images.iter().enumerate() {
        check_data(image, index)?;
        if [image.channels, image.height, image.width] != shape {
            return Err(RobustnessError::ImageShape {
                index,
                width: image.width,
                height: image.height,
                channels: image.channels,
                expected: shape,
            });
        }
        for channel in 0..c {
            data.extend(
                image.data[channel..]
                    .iter()
                    .step_by(c)
                    .map(|&v| f32::from(v) / 255.0),
            );
        }
    }
    Ok(Tensor::from_data(
        TensorData::new(data, [images.len(), c, h, w]),
        device,
    ))
}

/// A batch of pixels in `[0, 1]` rounded to 8-bit images (values outside `[0, 1]` are
/// clamped first).
///
/// # Errors
/// [`RobustnessError::ReadBack`] when the values cannot be read back.
pub fn to_images<B: Backend>(pixels: Tensor<B, 4>) -> Result<Vec<Image8>, RobustnessError> {
    let [n, c, h, w] = pixels.dims();
    let values = host("the pixels", pixels)?;
    let per = c * h * w;
    Ok((0..n)
        .map(|i| {
            let image = &values[i * per..(i + 1) * per];
            let mut data = vec![0u8; per];
            for channel in 0..c {
                for p in 0..h * w {
                    data[p * c + channel] = quantize(image[channel * h * w + p]);
                }
            }
            Image8 {
                width: w,
                height: h,
                channels: c,
                data,
            }
        })
        .collect())
}

/// A value in `[0, 1]` to the nearest 8-bit level (NaN to 0).
pub(crate) fn quantize(v: f32) -> u8 {
    if v.is_nan() {
        return 0;
    }
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Maps pixels `[batch, C, H, W]` in `[0, 1]` of the model's pixel space ([`pixel_shape`])
/// to the model's input, as [`Classifier::preprocess`] does after decoding and resizing:
/// for a grayscale representation, pad with black, normalize, fold space-to-depth; for an
/// ImageNet one, normalize per channel. Only tensor operations that autodiff
/// differentiates, so gradients flow back to the pixels.
///
/// # Shapes
/// `[batch, C, H, W]` (pixel space) → `[batch, C', H', W']` (the config's `input_shape`).
pub fn pixels_to_input<B: Backend>(spec: &InputSpec, pixels: Tensor<B, 4>) -> Tensor<B, 4> {
    match spec {
        InputSpec::Grayscale(g) => {
            let n = pixels.dims()[0];
            let p = g.pad;
            let padded = pixels.pad([(p, p), (p, p)], burn::tensor::ops::PadMode::Constant(0.0));
            let normalized = padded.sub_scalar(g.mean).div_scalar(g.std);
            let s = g.space_to_depth;
            let small = g.padded_size() / s;
            // Pixel (s·i + r, s·j + c) goes to channel s·r + c at (i, j).
            normalized
                .reshape([n, small, s, small, s])
                .permute([0, 2, 4, 1, 3])
                .reshape([n, s * s, small, small])
        }
        InputSpec::ImageNet { mean, std, .. } => {
            let device = pixels.device();
            let mean = Tensor::<B, 1>::from_data(TensorData::new(mean.to_vec(), [3]), &device)
                .reshape([1, 3, 1, 1]);
            let std = Tensor::<B, 1>::from_data(TensorData::new(std.to_vec(), [3]), &device)
                .reshape([1, 3, 1, 1]);
            pixels.sub(mean).div(std)
        }
    }
}

/// An 8-bit image as a decoded image.
fn to_dynamic(image: &Image8) -> Option<DynamicImage> {
    match image.channels {
        1 => GrayImage::from_raw(image.width as u32, image.height as u32, image.data.clone())
            .map(DynamicImage::ImageLuma8),
        3 => image::RgbImage::from_raw(image.width as u32, image.height as u32, image.data.clone())
            .map(DynamicImage::ImageRgb8),
        _ => None,
    }
}

/// The classifier's results on 8-bit images of its pixel space, with every image's OoD
/// scores ([`OodScores`], the complexity score from the image's PNG size).
///
/// For a grayscale model the images go through [`Classifier::likelihoods_batch`], as image
/// files would (the verdict includes the complexity test); for an ImageNet model the crop
/// goes through [`pixels_to_input`] and [`Classifier::likelihoods_tensor`] (resizing a crop
/// again would change it), so its verdict has no complexity test.
///
/// # Errors
/// [`RobustnessError::Empty`], [`RobustnessError::NoInputSpec`],
/// [`RobustnessError::ImageShape`], or the classifier's error.
pub fn evaluate<B: Backend>(
    classifier: &Classifier<B>,
    images: &[Image8],
    batch: usize,
) -> Result<(Vec<Likelihoods>, Vec<OodScores>), RobustnessError> {
    if images.is_empty() {
        return Err(RobustnessError::Empty { what: "evaluate" });
    }
    let spec = classifier
        .config()
        .input
        .as_ref()
        .ok_or(RobustnessError::NoInputSpec)?;
    let shape = pixel_shape(spec);
    let dims = classifier.config().total_dims();
    let mut results = Vec::with_capacity(images.len());
    let mut scores = Vec::with_capacity(images.len());
    for (chunk_index, chunk) in images.chunks(batch.max(1)).enumerate() {
        let chunk_results = match spec {
            InputSpec::Grayscale(_) => {
                let decoded = chunk
                    .iter()
                    .enumerate()
                    .map(|(i, image)| {
                        let shape_error = || RobustnessError::ImageShape {
                            index: chunk_index * batch.max(1) + i,
                            width: image.width,
                            height: image.height,
                            channels: image.channels,
                            expected: shape,
                        };
                        check_data(image, chunk_index * batch.max(1) + i)?;
                        if [image.channels, image.height, image.width] != shape {
                            return Err(shape_error());
                        }
                        to_dynamic(image).ok_or_else(shape_error)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                classifier.likelihoods_batch(&decoded)?
            }
            InputSpec::ImageNet { .. } => {
                let pixels = to_tensor::<B>(chunk, shape, classifier.device())?;
                classifier.likelihoods_tensor(pixels_to_input(spec, pixels))?
            }
        };
        for (result, image) in chunk_results.iter().zip(chunk) {
            scores.push(OodScores::new(
                result,
                dims,
                Some(png_bits(image)),
                classifier.ood(),
            ));
        }
        results.extend(chunk_results);
    }
    Ok((results, scores))
}

/// Accuracy, verdict flags and calibration of one set of results.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SetSummary {
    /// Images.
    pub images: usize,
    /// The fraction whose most probable class is their label.
    pub accuracy: f64,
    /// The fraction the verdict calls out of distribution (`None` without `ood.json`).
    pub flag_rate: Option<f64>,
    /// The fraction that is misclassified *and* not flagged: the attacker's success.
    pub undetected_errors: Option<f64>,
    /// Calibration of the posteriors (the recalibrated ones when the model has a
    /// temperature); `None` for fewer than [`CALIBRATION_BINS`] images (the equal-mass
    /// ECE needs one image per bin).
    pub calibration: Option<CalibrationReport>,
}

/// [`SetSummary`] of results and their labels.
///
/// # Errors
/// [`check_labels`]'s errors; [`RobustnessError::Metrics`] when the posteriors are not
/// distributions (NaN).
pub fn summarize(results: &[Likelihoods], labels: &[usize]) -> Result<SetSummary, RobustnessError> {
    let k = results.first().map_or(0, |r| r.log_posterior.len());
    check_labels(results.len(), labels, k)?;
    let probs: Vec<f64> = results
        .iter()
        .flat_map(|r| r.log_posterior.iter().map(|l| l.exp()))
        .collect();
    let calibration = (results.len() >= CALIBRATION_BINS)
        .then(|| calibration_report(&probs, k, labels))
        .transpose()?;
    let n = results.len() as f64;
    let accuracy = results
        .iter()
        .zip(labels)
        .filter(|(r, l)| r.predicted().class == **l)
        .count() as f64
        / n;
    if let Some(bad) = probs.iter().position(|p| !p.is_finite()) {
        return Err(MetricsError::NotADistribution {
            index: bad / k.max(1),
            problem: crate::metrics::RowProblem::NotFinite {
                class: bad % k.max(1),
                value: probs[bad],
            },
        }
        .into());
    }
    let flagged = |r: &Likelihoods| matches!(r.verdict, Some(Verdict::OutOfDistribution { .. }));
    let has_verdicts = results.iter().all(|r| r.verdict.is_some());
    let flag_rate = has_verdicts.then(|| results.iter().filter(|r| flagged(r)).count() as f64 / n);
    let undetected_errors = has_verdicts.then(|| {
        results
            .iter()
            .zip(labels)
            .filter(|(r, l)| r.predicted().class != **l && !flagged(r))
            .count() as f64
            / n
    });
    Ok(SetSummary {
        images: results.len(),
        accuracy,
        flag_rate,
        undetected_errors,
        calibration,
    })
}

/// How well each OoD score separates clean images from their attacked or corrupted
/// versions.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ShiftDetection {
    /// AUROC of every available score, clean images as the positive (in-distribution)
    /// class: 1 when every clean image scores higher than every shifted one, 0.5 chance,
    /// below 0.5 when the shifted images look *more* in-distribution.
    pub auroc: Vec<(ScoreKind, f64)>,
    /// The score of highest AUROC (chosen on these same images: an optimistic pick).
    pub best: ScoreKind,
    /// Its AUROC.
    pub best_auroc: f64,
}

/// [`ShiftDetection`] of clean and shifted scores.
///
/// # Errors
/// [`RobustnessError::Empty`] when either set is empty or no score is available for both;
/// [`RobustnessError::Metrics`] for NaN or infinite scores.
pub fn shift_detection(
    clean: &[OodScores],
    shifted: &[OodScores],
) -> Result<ShiftDetection, RobustnessError> {
    if clean.is_empty() || shifted.is_empty() {
        return Err(RobustnessError::Empty {
            what: "compare clean and shifted images of",
        });
    }
    let mut auroc = Vec::new();
    for kind in ScoreKind::ALL {
        let values =
            |set: &[OodScores]| -> Option<Vec<f64>> { set.iter().map(|s| s.get(kind)).collect() };
        let (Some(a), Some(b)) = (values(clean), values(shifted)) else {
            continue;
        };
        auroc.push((kind, detection_report(&a, &b, None)?.auroc));
    }
    let &(best, best_auroc) =
        auroc
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .ok_or(RobustnessError::Empty {
                what: "score (no score is available for both sets)",
            })?;
    Ok(ShiftDetection {
        auroc,
        best,
        best_auroc,
    })
}
