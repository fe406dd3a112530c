//! Out-of-distribution scores of one input: the generative classifier's own, one corrected
//! for input complexity, and the discriminative baselines computed from the same model.
//!
//! Every score is oriented so that **higher means more in-distribution** (what
//! [`crate::metrics`] expects). With `D` the input's dimensions:
//!
//! | [`ScoreKind`] | value |
//! | --- | --- |
//! | `log_px` | `log p(x) / D`, nats per dimension |
//! | `max_log_pxy` | `max_y log p(x|y) / D` |
//! | `neg_min_distance` | `−min_y ‖z_fc − μ_y‖² / n_loss_dims` (the class test's distance) |
//! | `typicality` | `−|log p(x)/D − m|`, `m` the middle of the fitted typical range (needs `ood.json`) |
//! | `complexity` | `(log₂ p(x) + L(x)) / D`, `L(x)` the PNG size in bits of the 8-bit image the model sees (Serrà et al. 2020): the bits per dimension the model saves over a PNG encoder, up to a constant of the model ([`complexity`]) |
//! | `max_posterior` | `max_y p(y|x)` (the maximum softmax probability baseline) |
//! | `energy` | `logsumexp_y logit_y` (Liu et al. 2020; the negative free energy) |
//! | `max_logit` | `max_y logit_y` |
//!
//! Flows give simple images (flat backgrounds, few strokes) high likelihood whatever their
//! family (Nalisnick et al. 2019): `log_px` alone ranks MNIST digits above Fashion-MNIST
//! clothes. `complexity` subtracts what a generic compressor already knows about the
//! image, so that what remains is what the model knows about its own data.

use image::DynamicImage;
use serde::Serialize;
use trustgc_core::input::InputSpec;

use crate::classifier::{Likelihoods, logsumexp};
use crate::ood::OodStats;
use crate::preprocess::{Image8, InputError, grayscale_pixels, resize_and_crop, to_rgb_pil};

/// Which score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreKind {
    /// `log p(x) / D`.
    LogPx,
    /// `max_y log p(x|y) / D`.
    MaxLogPxy,
    /// `−min_y ‖z_fc − μ_y‖² / n_loss_dims`.
    NegMinDistance,
    /// `−|log p(x)/D − m|` around the fitted typical range's middle.
    Typicality,
    /// `(log₂ p(x) + L(x)) / D`, `L` the PNG size in bits.
    Complexity,
    /// `−` the latent test's statistic: the squared Mahalanobis distance per dimension to
    /// the nearest class under the Gaussian refitted on real latents.
    NegLatentDistance,
    /// `max_y p(y|x)`.
    MaxPosterior,
    /// `logsumexp_y logit_y`.
    Energy,
    /// `max_y logit_y`.
    MaxLogit,
}

impl ScoreKind {
    /// Every score, GC-native ones first.
    pub const ALL: [ScoreKind; 9] = [
        ScoreKind::LogPx,
        ScoreKind::MaxLogPxy,
        ScoreKind::NegMinDistance,
        ScoreKind::Typicality,
        ScoreKind::Complexity,
        ScoreKind::NegLatentDistance,
        ScoreKind::MaxPosterior,
        ScoreKind::Energy,
        ScoreKind::MaxLogit,
    ];

    /// Its name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            ScoreKind::LogPx => "log_px",
            ScoreKind::MaxLogPxy => "max_log_pxy",
            ScoreKind::NegMinDistance => "neg_min_distance",
            ScoreKind::Typicality => "typicality",
            ScoreKind::Complexity => "complexity",
            ScoreKind::NegLatentDistance => "neg_latent_distance",
            ScoreKind::MaxPosterior => "max_posterior",
            ScoreKind::Energy => "energy",
            ScoreKind::MaxLogit => "max_logit",
        }
    }

    /// Whether the score is the generative classifier's own (not a discriminative
    /// baseline).
    pub fn is_generative(self) -> bool {
        !matches!(
            self,
            ScoreKind::MaxPosterior | ScoreKind::Energy | ScoreKind::MaxLogit
        )
    }
}

impl std::fmt::Display for ScoreKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The 8-bit image the model sees, before normalization: the grayscale image at the
/// model's side, or the resized and center-cropped RGB photo.
///
/// # Errors
/// [`InputError`] when the image is empty or too small for the crop.
pub fn model_pixels(image: &DynamicImage, spec: &InputSpec) -> Result<Image8, InputError> {
    if image.width() == 0 || image.height() == 0 {
        return Err(InputError::Empty {
            width: image.width(),
            height: image.height(),
        });
    }
    match spec {
        InputSpec::ImageNet { resize, crop, .. } => {
            resize_and_crop(&to_rgb_pil(image), *resize, *crop)
        }
        InputSpec::Grayscale(g) => grayscale_pixels(image, g),
    }
}

/// `L(x)`: the size in bits of `image` as a PNG at the encoder's best compression with
/// adaptive filtering (the complexity estimate of Serrà et al. 2020, who found PNG
/// among the compressors that work).
pub fn png_bits(image: &Image8) -> f64 {
    use image::ImageEncoder;
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    let color = if image.channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let mut out = Vec::new();
    let encoder =
        PngEncoder::new_with_quality(&mut out, CompressionType::Best, FilterType::Adaptive);
    // Writing into memory an image whose buffer matches its size cannot fail; if it did,
    // the raw size is the honest upper bound.
    match encoder.write_image(&image.data, image.width as u32, image.height as u32, color) {
        Ok(()) => (out.len() * 8) as f64,
        Err(_) => (image.data.len() * 8) as f64,
    }
}

/// The complexity score `(log₂ p(x) + L(x)) / D` of an input with `log p(x)` =
/// `log_marginal` (nats) over `dims` dimensions and an 8-bit image of `png_bits` bits as a
/// PNG ([`png_bits`]). It equals the bits per dimension the model saves over the PNG
/// encoder up to a constant of the model (the input normalization's Jacobian, the 8-bit
/// quantization and any padding: `log p(x)` is a density of the model's input, `L(x)` a
/// code length of the 8-bit image), so only its comparison between inputs means anything.
pub fn complexity(log_marginal: f64, png_bits: f64, dims: usize) -> f64 {
    (log_marginal / std::f64::consts::LN_2 + png_bits) / dims as f64
}

/// All scores of one input.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OodScores {
    /// `log p(x) / D`.
    pub log_px: f64,
    /// `max_y log p(x|y) / D`.
    pub max_log_pxy: f64,
    /// `−min_y ‖z_fc − μ_y‖² / n_loss_dims`.
    pub neg_min_distance: f64,
    /// `−|log p(x)/D − m|`; `None` without OoD statistics.
    pub typicality: Option<f64>,
    /// `(log₂ p(x) + L(x)) / D`; `None` when the 8-bit image is not known (a tensor input).
    pub complexity: Option<f64>,
    /// `−` the latent test's statistic; `None` without a latent test in the statistics.
    pub neg_latent_distance: Option<f64>,
    /// `max_y p(y|x)`.
    pub max_posterior: f64,
    /// `logsumexp_y logit_y`.
    pub energy: f64,
    /// `max_y logit_y`.
    pub max_logit: f64,
}

impl OodScores {
    /// The scores of one result. `dims` is the input's dimension count `D`; `png_bits` the
    /// PNG size of its 8-bit image ([`png_bits`]), when known; `ood` the fitted statistics
    /// (for `typicality`).
    pub fn new(
        result: &Likelihoods,
        dims: usize,
        png_bits: Option<f64>,
        ood: Option<&OodStats>,
    ) -> Self {
        let d = dims as f64;
        let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let log_px = result.log_marginal / d;
        let min_distance = result
            .class_distances
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min);
        Self {
            log_px,
            max_log_pxy: max(&result.class_log_likelihoods) / d,
            neg_min_distance: -min_distance,
            typicality: ood.map(|o| -(log_px - 0.5 * (o.marginal_low + o.marginal_high)).abs()),
            complexity: result
                .complexity
                .or_else(|| png_bits.map(|bits| complexity(result.log_marginal, bits, dims))),
            neg_latent_distance: result.latent_distance.map(|l| -l),
            max_posterior: max(&result.log_posterior).exp(),
            energy: logsumexp(&result.logits),
            max_logit: max(&result.logits),
        }
    }

    /// One score by kind (`None` where it is not available).
    pub fn get(&self, kind: ScoreKind) -> Option<f64> {
        match kind {
            ScoreKind::LogPx => Some(self.log_px),
            ScoreKind::MaxLogPxy => Some(self.max_log_pxy),
            ScoreKind::NegMinDistance => Some(self.neg_min_distance),
            ScoreKind::Typicality => self.typicality,
            ScoreKind::Complexity => self.complexity,
            ScoreKind::NegLatentDistance => self.neg_latent_distance,
            ScoreKind::MaxPosterior => Some(self.max_posterior),
            ScoreKind::Energy => Some(self.energy),
            ScoreKind::MaxLogit => Some(self.max_logit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_image_compresses_far_better_than_noise() {
        let flat = Image8 {
            width: 28,
            height: 28,
            channels: 1,
            data: vec![0; 784],
        };
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let noise = Image8 {
            data: (0..784)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 56) as u8
                })
                .collect(),
            ..flat.clone()
        };
        let (f, n) = (png_bits(&flat), png_bits(&noise));
        assert!(f < 800.0, "{f}");
        assert!(n > 784.0 * 7.0, "{n}");
    }
}
