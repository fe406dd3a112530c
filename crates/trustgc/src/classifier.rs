//! [`Classifier`]: what users call. A generative classifier with its config, ready to say
//! how likely an image is under each class, which class it is, and whether it looks like
//! anything the model knows.
//!
//! # Units and formulas
//! `D` is the number of input dimensions (`C·H·W` of the model input), `d_y` the squared
//! distance of the latent to class `y`'s mean, `log|det J|` the flow's log-determinant.
//! - `class_log_likelihoods[y] = log p(x|y) = −½ d_y + log|det J| − (D/2) ln 2π`, in nats,
//!   for `x` in the model's input space (after normalization).
//! - `log_posterior[y] = log p(y|x) = log p(x|y) + log π_y − log Σ_y' π_y' p(x|y')`, with
//!   the prior `π` uniform unless set with [`Classifier::with_prior`].
//! - `log_marginal = log p(x) = log Σ_y π_y p(x|y)`, nats.
//! - `bits_per_dim`: `−log p(x)` of the 8-bit image, per dimension, in bits:
//!   `(−log p(x) + D·mean_c ln std_c + D·ln 255) / (D·ln 2)` (the normalization's and the
//!   1/255 scaling's Jacobians; no dequantization noise is added at inference).
//! - `logits = −½ d` are the reference's `logits_tr`.

use std::path::Path;
use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::{DataError, Tensor, TensorData};
use image::DynamicImage;
use serde::Serialize;
use trustgc_core::head::ClassNorms;
use trustgc_core::input::InputSpec;
use trustgc_core::{GcConfig, GenerativeClassifier, InputShapeError};

use crate::calibration::{CalibrationCheckError, TemperatureScaling};
use crate::ood::{OodCheckError, OodStats, Verdict};
use crate::preprocess::{ImageError, InputError, model_input, read_image};
use crate::scores::{model_pixels, png_bits};

/// Why a classification could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    /// The image file could not be read or converted.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A decoded image of a batch could not be converted.
    #[error("image {index} of the batch: {source}")]
    Input {
        /// Which image of the batch.
        index: usize,
        /// What is wrong with it.
        #[source]
        source: InputError,
    },
    /// The model has no input representation, so it cannot take images (give tensors).
    #[error(
        "the model's config has no `input` representation; pass tensors to `likelihoods_tensor`"
    )]
    NoInputSpec,
    /// A tensor of the wrong shape.
    #[error(transparent)]
    Shape(#[from] InputShapeError),
    /// The input holds NaN or infinite values.
    #[error("input {index} holds {count} non-finite values (NaN or infinity)")]
    NonFinite {
        /// Which input of the batch.
        index: usize,
        /// How many values.
        count: usize,
    },
    /// A prior of the wrong length or with non-positive entries.
    #[error("the class prior needs {classes} positive finite weights")]
    Prior {
        /// The number of classes.
        classes: usize,
    },
    /// Values read back from the device could not be converted to host floats.
    #[error("cannot read {what} back from the device: {source}")]
    ReadBack {
        /// Which tensor.
        what: &'static str,
        /// burn's error.
        #[source]
        source: DataError,
    },
}

/// `[z_fc, z_conv]` of each input of a batch, on the host.
fn latents_of<B: Backend>(
    z_fc: &Tensor<B, 2>,
    z_conv: &Tensor<B, 2>,
) -> Result<Vec<Vec<f32>>, ClassifyError> {
    let [batch, l] = z_fc.dims();
    let rest = z_conv.dims()[1];
    let fc: Vec<f32> = read_back("the latents", z_fc.clone())?;
    let conv: Vec<f32> = read_back("the latents", z_conv.clone())?;
    Ok((0..batch)
        .map(|i| {
            let mut z = Vec::with_capacity(l + rest);
            z.extend_from_slice(&fc[i * l..(i + 1) * l]);
            z.extend_from_slice(&conv[i * rest..(i + 1) * rest]);
            z
        })
        .collect())
}

/// A tensor's values on the host, as `E`.
fn read_back<B: Backend, const D: usize, E: burn::tensor::Element>(
    what: &'static str,
    tensor: Tensor<B, D>,
) -> Result<Vec<E>, ClassifyError> {
    tensor
        .into_data()
        .convert::<E>()
        .into_vec()
        .map_err(|source| ClassifyError::ReadBack { what, source })
}

/// One class's scores, for top-k lists.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScore {
    /// Class index.
    pub class: usize,
    /// Class name (the index as text when the config names none).
    pub name: String,
    /// `p(y|x)`.
    pub posterior: f64,
    /// `log p(x|y)`, nats.
    pub log_likelihood: f64,
}

/// What a generative classifier says about one input. See the module docs for units.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Likelihoods {
    /// `log p(x|y)` per class, nats, input space, constants included.
    pub class_log_likelihoods: Vec<f64>,
    /// `‖z_fc − μ_y‖² / n_loss_dims` per class: the mean squared distance of the latent's
    /// loss dimensions from the class mean (about 1 for a sample of the class Gaussian).
    /// It is the class-specific part of `log p(x|y)` in the dimensions that carry the class;
    /// the class test of the verdict uses it.
    pub class_distances: Vec<f64>,
    /// `log p(y|x)` per class (with the classifier's prior), recalibrated with the
    /// temperature of [`Likelihoods::temperature`] when the classifier has one.
    pub log_posterior: Vec<f64>,
    /// The temperature applied to the posterior ([`crate::calibration`]), `None` when
    /// the posterior is the model's own.
    pub temperature: Option<f64>,
    /// `log p(x)`, nats.
    pub log_marginal: f64,
    /// Bits per dimension of the 8-bit image (`None` without an input representation).
    pub bits_per_dim: Option<f64>,
    /// `(log₂ p(x) + L(x)) / D` (`L(x)`: the PNG size of the 8-bit image the model sees),
    /// the complexity test's score ([`crate::scores::complexity`]: the bits per dimension
    /// the model saves over a PNG encoder, up to a constant of the model). Computed for decoded images when the model's
    /// [`OodStats`] hold a complexity test; `None` otherwise (and for tensor inputs).
    pub complexity: Option<f64>,
    /// The latent test's statistic ([`crate::ood::LatentGaussian::statistic`]: the squared
    /// Mahalanobis distance per dimension to the nearest class under the Gaussian
    /// refitted on real latents), when the model's [`OodStats`] hold a latent test.
    pub latent_distance: Option<f64>,
    /// The reference's logits `−½ d`.
    pub logits: Vec<f64>,
    /// The verdict, when the model carries [`OodStats`].
    pub verdict: Option<Verdict>,
    /// Class names.
    #[serde(skip)]
    pub class_names: Arc<Vec<String>>,
}

impl Likelihoods {
    /// The `k` most probable classes, most probable first.
    pub fn top_k(&self, k: usize) -> Vec<ClassScore> {
        let mut order: Vec<usize> = (0..self.log_posterior.len()).collect();
        order.sort_by(|&a, &b| self.log_posterior[b].total_cmp(&self.log_posterior[a]));
        order
            .into_iter()
            .take(k)
            .map(|class| ClassScore {
                class,
                name: self.class_name(class),
                posterior: self.log_posterior[class].exp(),
                log_likelihood: self.class_log_likelihoods[class],
            })
            .collect()
    }

    /// The most probable class.
    pub fn predicted(&self) -> ClassScore {
        self.top_k(1).remove(0)
    }

    /// A class's name (its index as text when the config names none).
    pub fn class_name(&self, class: usize) -> String {
        self.class_names
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    }

    /// The verdict in words (`agrees with Bag`, `ambiguous: Shirt, T-shirt/top`,
    /// `out of distribution: matches no class`), `None` without [`OodStats`].
    pub fn verdict_text(&self) -> Option<String> {
        Some(match self.verdict.as_ref()? {
            Verdict::Confident { class } => format!("agrees with {}", self.class_name(*class)),
            Verdict::Ambiguous { classes } => {
                let names: Vec<String> = classes.iter().map(|&c| self.class_name(c)).collect();
                format!("ambiguous: {}", names.join(", "))
            }
            Verdict::OutOfDistribution {
                atypical_marginal: true,
                ..
            } => "out of distribution: its likelihood is atypical".into(),
            Verdict::OutOfDistribution {
                atypical_complexity: true,
                ..
            } => "out of distribution: the model explains it no better than a PNG encoder".into(),
            Verdict::OutOfDistribution {
                atypical_latent: true,
                ..
            } => "out of distribution: its latent lies where real images' latents do not".into(),
            Verdict::OutOfDistribution { .. } => "out of distribution: matches no class".into(),
        })
    }
}

/// A generative classifier ready for inference: the model, its config (class names,
/// input representation), an optional class prior, and optional out-of-distribution
/// statistics for verdicts.
///
/// Open one with `Classifier::shipped` (a model embedded in the crate, feature `shipped`),
/// [`Classifier::from_dir`] (a model folder), `Classifier::pretrained` (a released
/// ImageNet model from the hub, feature `pretrained`) or [`Classifier::new`] (a model you built or trained).
///
/// ```
/// use trustgc::burn::backend::Flex;
/// use trustgc::image::{DynamicImage, GrayImage};
/// use trustgc::{Classifier, Shipped};
///
/// let classifier = Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default())?
///     // Bags are nine times as common as anything else where this runs.
///     .with_prior(Some(&[1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 9.0, 1.0]))?;
/// let image = DynamicImage::ImageLuma8(GrayImage::from_pixel(28, 28, [128].into()));
/// let result = classifier.likelihoods(&image)?;
/// assert_eq!(result.top_k(10).len(), 10);
/// println!("{}: {}", result.predicted().name, result.verdict_text().unwrap_or_default());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct Classifier<B: Backend> {
    config: GcConfig,
    model: GenerativeClassifier<B>,
    norms: ClassNorms<B>,
    log_prior: Option<Vec<f64>>,
    ood: Option<OodStats>,
    /// The latent test's per-class constants, computed when `ood` is attached.
    latent_projections: Option<crate::ood::latent::LatentProjections>,
    temperature: Option<TemperatureScaling>,
    class_names: Arc<Vec<String>>,
    device: B::Device,
}

pub(crate) fn logsumexp(v: &[f64]) -> f64 {
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if !max.is_finite() {
        return max;
    }
    max + v.iter().map(|x| (x - max).exp()).sum::<f64>().ln()
}

impl<B: Backend> Classifier<B> {
    /// Wraps a model and its config.
    pub fn new(config: GcConfig, model: GenerativeClassifier<B>, device: &B::Device) -> Self {
        let norms = model.head.class_norms();
        let class_names = Arc::new(config.class_names.clone());
        Self {
            config,
            model,
            norms,
            log_prior: None,
            ood: None,
            latent_projections: None,
            temperature: None,
            class_names,
            device: device.clone(),
        }
    }

    /// Attaches out-of-distribution statistics (enables verdicts).
    ///
    /// # Errors
    /// [`OodCheckError`] when the statistics do not fit the model
    /// ([`OodStats::check_model`]: another number of classes or latent size, impossible
    /// thresholds); they would give wrong verdicts.
    pub fn with_ood(mut self, ood: OodStats) -> Result<Self, OodCheckError> {
        ood.check_model(
            self.config.n_classes,
            self.config.total_dims(),
            self.config.n_loss_dims,
        )?;
        // The latent statistic's per-class constants, once (check_model has checked the
        // shapes they need).
        self.latent_projections = ood
            .latent
            .as_ref()
            .and_then(|test| test.gaussian.projections());
        self.ood = Some(ood);
        Ok(self)
    }

    /// Recalibrates the posteriors with a fitted temperature (`trustgc calibrate`,
    /// [`crate::calibration`]); `None` restores the model's own posteriors.
    ///
    /// # Errors
    /// [`CalibrationCheckError`] for a temperature that is not usable.
    pub fn with_temperature(
        mut self,
        scaling: Option<TemperatureScaling>,
    ) -> Result<Self, CalibrationCheckError> {
        if let Some(s) = &scaling {
            s.check()?;
        }
        self.temperature = scaling;
        Ok(self)
    }

    /// The temperature scaling applied to the posteriors, if any.
    pub fn temperature(&self) -> Option<&TemperatureScaling> {
        self.temperature.as_ref()
    }

    /// Sets a class prior `π` (weights, normalized here); `None` restores the uniform one.
    pub fn with_prior(mut self, prior: Option<&[f64]>) -> Result<Self, ClassifyError> {
        self.log_prior = match prior {
            None => None,
            Some(p) => {
                let k = self.config.n_classes;
                if p.len() != k || p.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
                    return Err(ClassifyError::Prior { classes: k });
                }
                let total: f64 = p.iter().sum();
                Some(p.iter().map(|w| (w / total).ln()).collect())
            }
        };
        Ok(self)
    }

    /// The config.
    pub fn config(&self) -> &GcConfig {
        &self.config
    }

    /// The model.
    pub fn model(&self) -> &GenerativeClassifier<B> {
        &self.model
    }

    /// The device the model runs on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The out-of-distribution statistics, if any.
    pub fn ood(&self) -> Option<&OodStats> {
        self.ood.as_ref()
    }

    /// Likelihoods of one decoded image.
    ///
    /// ```
    /// use trustgc::burn::backend::Flex;
    /// use trustgc::image::{DynamicImage, GrayImage, Luma};
    /// use trustgc::{Classifier, Shipped};
    ///
    /// let classifier = Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default())?;
    /// // A white bar on black, about the shape of a pair of trousers.
    /// let image = DynamicImage::ImageLuma8(GrayImage::from_fn(28, 28, |x, _| {
    ///     Luma([if (10..18).contains(&x) { 220 } else { 0 }])
    /// }));
    /// let result = classifier.likelihoods(&image)?;
    /// let best = result.predicted();
    /// println!("{} (p = {:.3}), log p(x|y) = {:.1} nats", best.name, best.posterior, best.log_likelihood);
    /// // log p(x) = log Σ_y p(x|y) p(y), here with the uniform prior p(y) = 1/10.
    /// assert!(result.log_marginal <= best.log_likelihood);
    /// println!("verdict: {:?}", result.verdict_text());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ClassifyError::NoInputSpec`] when the config has no input representation,
    /// [`ClassifyError::Input`] when the image is empty or cannot be cropped.
    pub fn likelihoods(&self, image: &DynamicImage) -> Result<Likelihoods, ClassifyError> {
        Ok(self
            .likelihoods_batch(std::slice::from_ref(image))?
            .remove(0))
    }

    /// Likelihoods of an image file.
    ///
    /// # Errors
    /// [`ClassifyError::Image`] when the file cannot be read, decoded or converted; see
    /// [`Classifier::likelihoods`].
    pub fn likelihoods_file(&self, path: &Path) -> Result<Likelihoods, ClassifyError> {
        self.input_spec()?;
        let image = read_image(path)?;
        self.likelihoods(&image).map_err(|e| match e {
            ClassifyError::Input { source, .. } => ClassifyError::Image(ImageError::Input {
                path: path.to_path_buf(),
                source,
            }),
            other => other,
        })
    }

    /// Likelihoods of several decoded images, in one batch: [`Classifier::preprocess`]
    /// then [`Classifier::likelihoods_tensor`].
    ///
    /// ```
    /// use trustgc::burn::backend::Flex;
    /// use trustgc::image::{DynamicImage, GrayImage};
    /// use trustgc::{Classifier, Shipped};
    ///
    /// let classifier = Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default())?;
    /// let images = vec![
    ///     DynamicImage::ImageLuma8(GrayImage::from_pixel(28, 28, [0].into())),
    ///     DynamicImage::ImageLuma8(GrayImage::from_fn(28, 28, |x, y| [((x * y) % 256) as u8].into())),
    /// ];
    /// let results = classifier.likelihoods_batch(&images)?;
    /// assert_eq!(results.len(), 2);
    /// assert!(classifier.likelihoods_batch(&[])?.is_empty());
    /// for result in &results {
    ///     let posterior: f64 = result.log_posterior.iter().map(|l| l.exp()).sum();
    ///     assert!((posterior - 1.0).abs() < 1e-6);
    /// }
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// No images give no results.
    ///
    /// # Errors
    /// As [`Classifier::preprocess`] and [`Classifier::likelihoods_tensor`].
    pub fn likelihoods_batch(
        &self,
        images: &[DynamicImage],
    ) -> Result<Vec<Likelihoods>, ClassifyError> {
        if images.is_empty() {
            return Ok(Vec::new());
        }
        let x = self.preprocess(images)?;
        let png_bits = match &self.ood {
            Some(ood) if ood.complexity_low.is_some() => {
                let spec = self.input_spec()?;
                let bits = images
                    .iter()
                    .enumerate()
                    .map(|(index, image)| {
                        model_pixels(image, spec)
                            .map(|pixels| png_bits(&pixels))
                            .map_err(|source| ClassifyError::Input { index, source })
                    })
                    .collect::<Result<Vec<f64>, _>>()?;
                Some(bits)
            }
            _ => None,
        };
        self.likelihoods_with(x, png_bits.as_deref())
    }

    /// The config's input representation, which images need.
    fn input_spec(&self) -> Result<&InputSpec, ClassifyError> {
        self.config.input.as_ref().ok_or(ClassifyError::NoInputSpec)
    }

    /// Turns decoded images into the batch tensor `[batch, C, H, W]` that
    /// [`Classifier::likelihoods_tensor`] takes, with the config's input representation
    /// ([`GcConfig::input`]):
    /// - grayscale models (Fashion-MNIST): Pillow's `convert('L')`, resized and
    ///   center-cropped to the side the model was trained on unless the image has it
    ///   already (28 × 28), padded with black pixels (2 on each side: 32 × 32), scaled to
    ///   `[0, 1]`, normalized with the training pixels' mean and standard deviation, and
    ///   folded space-to-depth (2 × 2 blocks) into 4 channels of 16 × 16;
    /// - ImageNet models: torchvision's eval transform, `Resize(256)` with Pillow's
    ///   antialiased bilinear filter, `CenterCrop(224)`, `ToTensor`, `Normalize(mean, std)`.
    ///
    /// # Shapes
    /// `images.len()` images of any size → `[images.len(), C, H, W]` with
    /// `[C, H, W] = config().input_shape`.
    ///
    /// # Errors
    /// [`ClassifyError::NoInputSpec`] when the config has no input representation;
    /// [`ClassifyError::Input`] naming the first image that is empty or too small to crop.
    pub fn preprocess(&self, images: &[DynamicImage]) -> Result<Tensor<B, 4>, ClassifyError> {
        let spec = self.input_spec()?;
        let [c, h, w] = self.config.input_shape;
        let mut data = Vec::with_capacity(images.len() * c * h * w);
        for (index, image) in images.iter().enumerate() {
            data.extend(
                model_input(image, spec)
                    .map_err(|source| ClassifyError::Input { index, source })?,
            );
        }
        Ok(Tensor::from_data(
            TensorData::new(data, [images.len(), c, h, w]),
            &self.device,
        ))
    }

    /// Likelihoods of a batch tensor `[batch, C, H, W]`, already preprocessed: the model's
    /// input space, exactly what [`Classifier::preprocess`] returns. Use it to feed your
    /// own tensors (already on the device, augmented, or of a model without an input
    /// representation).
    ///
    /// ```
    /// use trustgc::burn::backend::Flex;
    /// use trustgc::burn::tensor::Tensor;
    /// use trustgc::image::{DynamicImage, GrayImage};
    /// use trustgc::{Classifier, Shipped};
    ///
    /// let device = Default::default();
    /// let classifier = Classifier::<Flex>::shipped(Shipped::FashionMnist, &device)?;
    /// let image = DynamicImage::ImageLuma8(GrayImage::from_fn(28, 28, |x, _| [(x * 9) as u8].into()));
    /// // 28 × 28 grayscale → padded to 32 × 32 → space-to-depth: [1, 4, 16, 16].
    /// let x: Tensor<Flex, 4> = classifier.preprocess(&[image])?;
    /// assert_eq!(x.dims(), [1, 4, 16, 16]);
    /// assert_eq!(x.dims()[1..], classifier.config().input_shape);
    /// // The same image twice, as one batch.
    /// let results = classifier.likelihoods_tensor(Tensor::cat(vec![x.clone(), x], 0))?;
    /// assert_eq!(results[0].class_log_likelihoods, results[1].class_log_likelihoods);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`ClassifyError::Shape`] for a tensor of another shape than `[batch, C, H, W]`,
    /// [`ClassifyError::NonFinite`] naming the first input that holds NaN or infinity,
    /// [`ClassifyError::ReadBack`] when the device's values cannot be read back.
    pub fn likelihoods_tensor(&self, x: Tensor<B, 4>) -> Result<Vec<Likelihoods>, ClassifyError> {
        self.likelihoods_with(x, None)
    }

    /// The latents `z = [z_fc, z_conv]` of a batch of model inputs (`[batch, C, H, W]`,
    /// as [`Classifier::preprocess`] makes them), one `Vec` of `D` values per input: what
    /// the latent test's Gaussian is fitted on ([`crate::ood::LatentGaussian::fit`]).
    ///
    /// # Errors
    /// As [`Classifier::likelihoods_tensor`].
    pub fn latents_tensor(&self, x: Tensor<B, 4>) -> Result<Vec<Vec<f32>>, ClassifyError> {
        self.model.check_input(&x.dims())?;
        let values: Vec<f32> = read_back("the input", x.clone())?;
        let per = values.len() / x.dims()[0].max(1);
        if let Some(index) = values
            .chunks(per.max(1))
            .position(|c| c.iter().any(|v| !v.is_finite()))
        {
            let count = values[index * per..(index + 1) * per]
                .iter()
                .filter(|v| !v.is_finite())
                .count();
            return Err(ClassifyError::NonFinite { index, count });
        }
        let out = self.model.forward_with_norms(x, &self.norms);
        latents_of(&out.z_fc, &out.z_conv)
    }

    /// [`Classifier::likelihoods_tensor`], with the PNG sizes of the inputs' 8-bit images
    /// when known (for the complexity test).
    fn likelihoods_with(
        &self,
        x: Tensor<B, 4>,
        png_bits: Option<&[f64]>,
    ) -> Result<Vec<Likelihoods>, ClassifyError> {
        self.model.check_input(&x.dims())?;
        let batch = x.dims()[0];
        let values: Vec<f32> = read_back("the input", x.clone())?;
        let per = values.len() / batch.max(1);
        for index in 0..batch {
            let count = values[index * per..(index + 1) * per]
                .iter()
                .filter(|v| !v.is_finite())
                .count();
            if count > 0 {
                return Err(ClassifyError::NonFinite { index, count });
            }
        }
        let out = self.model.forward_with_norms(x, &self.norms);
        let k = self.config.n_classes;
        let logits: Vec<f64> = read_back("the logits", out.logits())?;
        let log_det: Vec<f64> = read_back("the log-determinants", out.log_det.clone())?;
        // log p(x|y) = logit_y + log|det J| − (D/2) ln 2π, summed in f64 here: the log-det
        // (about 1e5 nats for ImageNet) added in f32 would round every class's value by up
        // to ~0.01 nats, and the posteriors built from them with it.
        let constant = 0.5 * self.config.total_dims() as f64 * (2.0 * std::f64::consts::PI).ln();
        let ll: Vec<f64> = logits
            .iter()
            .enumerate()
            .map(|(j, logit)| logit + log_det[j / k.max(1)] - constant)
            .collect();
        // ‖z_fc − μ_y‖² / n_loss_dims = (‖z_fc‖² − 2 z_fc·μ_y + ‖μ_y‖²) / n_loss_dims.
        let n_loss = self.config.n_loss_dims as f64;
        let z_fc = out.z_fc.clone();
        let cross = z_fc.clone().matmul(self.model.head.mu_fc.val().transpose());
        let z_norm = z_fc.square().sum_dim(1);
        let distances: Vec<f64> = read_back(
            "the class distances",
            (z_norm + self.norms.fc.clone().unsqueeze_dim(0) - cross.mul_scalar(2.0))
                .div_scalar(n_loss),
        )?;
        let latent_test = self.ood.as_ref().and_then(|o| o.latent.as_ref());
        let latent_distances: Option<Vec<f64>> = match (latent_test, &self.latent_projections) {
            (Some(test), Some(projections)) => {
                let latents = latents_of(&out.z_fc, &out.z_conv)?;
                Some(
                    latents
                        .iter()
                        .map(|z| projections.statistic(&test.gaussian, z))
                        .collect(),
                )
            }
            // Unreachable after check_model; NaN fails the test rather than skipping it.
            (Some(_), None) => Some(vec![f64::NAN; batch]),
            (None, _) => None,
        };
        let d = self.config.total_dims() as f64;
        let bits_offset = self
            .config
            .input
            .as_ref()
            .map(|spec| spec.mean_log_std() + 255f64.ln());
        let mut results = Vec::with_capacity(batch);
        for i in 0..batch {
            let class_ll = ll[i * k..(i + 1) * k].to_vec();
            let joint: Vec<f64> = match &self.log_prior {
                Some(prior) => class_ll.iter().zip(prior).map(|(l, p)| l + p).collect(),
                None => class_ll.iter().map(|l| l - (k as f64).ln()).collect(),
            };
            let log_marginal = logsumexp(&joint);
            let log_posterior: Vec<f64> = joint.iter().map(|j| j - log_marginal).collect();
            // The recalibrated posterior: the class terms divided by T (the shared part of
            // log p(x|y) cancels in the normalization).
            let calibrated = self.temperature.as_ref().map(|s| {
                let t = s.temperature;
                let scaled: Vec<f64> = match &self.log_prior {
                    Some(prior) => class_ll.iter().zip(prior).map(|(l, p)| l / t + p).collect(),
                    None => class_ll.iter().map(|l| l / t).collect(),
                };
                let norm = logsumexp(&scaled);
                scaled.iter().map(|j| j - norm).collect::<Vec<f64>>()
            });
            let bits_per_dim =
                bits_offset.map(|offset| (-log_marginal / d + offset) / std::f64::consts::LN_2);
            let class_distances = distances[i * k..(i + 1) * k].to_vec();
            let complexity = png_bits.and_then(|bits| bits.get(i)).map(|&bits| {
                crate::scores::complexity(log_marginal, bits, self.config.total_dims())
            });
            let latent_distance = latent_distances.as_ref().map(|l| l[i]);
            let verdict = self.ood.as_ref().map(|ood| {
                ood.verdict(
                    log_marginal / d,
                    complexity,
                    latent_distance,
                    &class_distances,
                    &log_posterior,
                )
            });
            results.push(Likelihoods {
                class_log_likelihoods: class_ll,
                class_distances,
                log_posterior: calibrated.unwrap_or(log_posterior),
                temperature: self.temperature.as_ref().map(|s| s.temperature),
                log_marginal,
                bits_per_dim,
                complexity,
                latent_distance,
                logits: logits[i * k..(i + 1) * k].to_vec(),
                verdict,
                class_names: self.class_names.clone(),
            });
        }
        Ok(results)
    }
}
