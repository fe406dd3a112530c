//! Common corruptions of 8-bit images at severities 0 (none) to 5, after Hendrycks and
//! Dietterich, "Benchmarking Neural Network Robustness to Common Corruptions and
//! Perturbations" (ICLR 2019, ImageNet-C).
//!
//! Each corruption acts on the image the model sees ([`crate::scores::model_pixels`]) with
//! values `v ∈ [0, 1]` (pixel / 255), and rounds the result back to 8 bits. Severity 0
//! returns the image unchanged. The parameters per severity 1..=5:
//!
//! | [`Corruption`] | parameter | 1 | 2 | 3 | 4 | 5 |
//! | --- | --- | --- | --- | --- | --- | --- |
//! | `gaussian_noise` | σ of `v + N(0, σ²)` | 0.08 | 0.12 | 0.18 | 0.26 | 0.38 |
//! | `blur` | σ of a Gaussian blur, pixels | 0.5 | 0.75 | 1.0 | 1.5 | 2.0 |
//! | `contrast` | `c` of `(v − mean) · c + mean` | 0.4 | 0.3 | 0.2 | 0.1 | 0.05 |
//! | `brightness` | `b` of `v + b` | 0.1 | 0.2 | 0.3 | 0.4 | 0.5 |
//! | `jpeg` | JPEG quality | 25 | 18 | 15 | 10 | 7 |
//! | `pixelate` | side factor of the down-sampling | 0.6 | 0.5 | 0.4 | 0.3 | 0.25 |
//!
//! Noise, contrast, brightness, JPEG and pixelation use ImageNet-C's values. The blur is
//! ImageNet-C's `gaussian_blur` with σ scaled for 28 × 28 images (ImageNet-C blurs
//! 224 × 224 images with σ of 1 to 6 pixels; this is about that fraction of a 28-pixel
//! side, floored at half a pixel). Differences from ImageNet-C: brightness adds to the
//! value directly (ImageNet-C adds to HSV's V, the same for grayscale images); JPEG is
//! encoded by mozjpeg's libjpeg (baseline, its default quantization tables at the
//! quality), decoded as [`crate::preprocess::decode_image`] decodes files; pixelation
//! averages boxes of the down-sampled size (PIL's `BOX`) and scales back by repeating
//! pixels. Noise is drawn from a seeded generator: the same seed and image give the same
//! result.

use serde::Serialize;

use super::RobustnessError;
use crate::preprocess::{Image8, decode_image, to_luma_pil, to_rgb_pil};

/// The highest severity.
pub const MAX_SEVERITY: usize = 5;

/// A corruption (parameters in the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    /// Additive Gaussian noise.
    GaussianNoise,
    /// Gaussian blur.
    Blur,
    /// Lower contrast.
    Contrast,
    /// Brighter.
    Brightness,
    /// JPEG compression.
    Jpeg,
    /// Pixelation.
    Pixelate,
}

impl Corruption {
    /// Every corruption.
    pub const ALL: [Corruption; 6] = [
        Corruption::GaussianNoise,
        Corruption::Blur,
        Corruption::Contrast,
        Corruption::Brightness,
        Corruption::Jpeg,
        Corruption::Pixelate,
    ];

    /// Its name in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Corruption::GaussianNoise => "gaussian_noise",
            Corruption::Blur => "blur",
            Corruption::Contrast => "contrast",
            Corruption::Brightness => "brightness",
            Corruption::Jpeg => "jpeg",
            Corruption::Pixelate => "pixelate",
        }
    }

    /// Its parameter at `severity` (1..=5; see the module docs for what it means).
    ///
    /// # Errors
    /// [`RobustnessError::Severity`] outside 1..=5.
    pub fn parameter(self, severity: usize) -> Result<f64, RobustnessError> {
        if !(1..=MAX_SEVERITY).contains(&severity) {
            return Err(RobustnessError::Severity { severity });
        }
        let table: [f64; 5] = match self {
            Corruption::GaussianNoise => [0.08, 0.12, 0.18, 0.26, 0.38],
            Corruption::Blur => [0.5, 0.75, 1.0, 1.5, 2.0],
            Corruption::Contrast => [0.4, 0.3, 0.2, 0.1, 0.05],
            Corruption::Brightness => [0.1, 0.2, 0.3, 0.4, 0.5],
            Corruption::Jpeg => [25.0, 18.0, 15.0, 10.0, 7.0],
            Corruption::Pixelate => [0.6, 0.5, 0.4, 0.3, 0.25],
        };
        Ok(table[severity - 1])
    }

    /// Applies the corruption at `severity` (0 = the image unchanged) to `image`; `seed`
    /// drives the noise (other corruptions are deterministic).
    ///
    /// # Errors
    /// [`RobustnessError::Severity`] above 5, [`RobustnessError::Jpeg`] and
    /// [`RobustnessError::JpegDecode`] when the JPEG round trip fails.
    pub fn apply(
        self,
        image: &Image8,
        severity: usize,
        seed: u64,
    ) -> Result<Image8, RobustnessError> {
        super::check_data(image, 0)?;
        if severity == 0 {
            return Ok(image.clone());
        }
        let p = self.parameter(severity)?;
        let values = |f: &dyn Fn(usize, f64) -> f64| -> Image8 {
            let data = image
                .data
                .iter()
                .enumerate()
                .map(|(i, &v)| to_u8(f(i, f64::from(v) / 255.0)))
                .collect();
            Image8 {
                data,
                ..image.clone()
            }
        };
        Ok(match self {
            Corruption::GaussianNoise => {
                let mut rng = Normal::new(seed);
                let noise: Vec<f64> = (0..image.data.len()).map(|_| rng.sample()).collect();
                values(&|i, v| v + p * noise[i])
            }
            Corruption::Contrast => {
                let c = image.channels.max(1);
                let pixels = (image.data.len() / c).max(1) as f64;
                // ImageNet-C: the mean over the whole image (all channels).
                let mean = image
                    .data
                    .iter()
                    .map(|&v| f64::from(v) / 255.0)
                    .sum::<f64>()
                    / (pixels * c as f64);
                values(&|_, v| (v - mean) * p + mean)
            }
            Corruption::Brightness => values(&|_, v| v + p),
            Corruption::Blur => blur(image, p),
            Corruption::Jpeg => jpeg(image, p as u8)?,
            Corruption::Pixelate => pixelate(image, p),
        })
    }
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A value in `[0, 1]` to 8 bits (clipped, rounded half away from zero).
fn to_u8(v: f64) -> u8 {
    if v.is_nan() {
        return 0;
    }
    (v.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// Standard normal draws from a seeded xorshift generator (Box–Muller).
struct Normal {
    state: u64,
    spare: Option<f64>,
}

impl Normal {
    /// The state is SplitMix64's mix of the seed: neighbouring seeds (image `i` and
    /// `i + 1`) start from unrelated, non-zero states.
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        Self {
            state: if z == 0 { 0x9e37_79b9_7f4a_7c15 } else { z },
            spare: None,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.state ^= self.state << 13;
        self.state ^= self.state >> 7;
        self.state ^= self.state << 17;
        ((self.state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }

    fn sample(&mut self) -> f64 {
        if let Some(s) = self.spare.take() {
            return s;
        }
        let (u, v) = (self.uniform(), self.uniform());
        let r = (-2.0 * u.ln()).sqrt();
        let angle = 2.0 * std::f64::consts::PI * v;
        self.spare = Some(r * angle.sin());
        r * angle.cos()
    }
}

/// A separable Gaussian blur of standard deviation `sigma` pixels (kernel radius
/// `⌈3σ⌉`, edges repeated, as scikit-image's `gaussian(mode='nearest')` which ImageNet-C
/// calls).
fn blur(image: &Image8, sigma: f64) -> Image8 {
    let radius = (3.0 * sigma).ceil() as isize;
    let kernel: Vec<f64> = (-radius..=radius)
        .map(|i| (-((i * i) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f64 = kernel.iter().sum();
    let kernel: Vec<f64> = kernel.iter().map(|k| k / total).collect();
    let (w, h, c) = (image.width, image.height, image.channels);
    let at = |x: isize, limit: usize| x.clamp(0, limit as isize - 1) as usize;
    let source: Vec<f64> = image.data.iter().map(|&v| f64::from(v) / 255.0).collect();
    let mut rows = vec![0.0; source.len()];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                rows[(y * w + x) * c + ch] = kernel
                    .iter()
                    .enumerate()
                    .map(|(j, k)| {
                        k * source[(y * w + at(x as isize + j as isize - radius, w)) * c + ch]
                    })
                    .sum();
            }
        }
    }
    let mut data = vec![0u8; source.len()];
    for y in 0..h {
        for x in 0..w {
            for ch in 0..c {
                let v: f64 = kernel
                    .iter()
                    .enumerate()
                    .map(|(j, k)| {
                        k * rows[(at(y as isize + j as isize - radius, h) * w + x) * c + ch]
                    })
                    .sum();
                data[(y * w + x) * c + ch] = to_u8(v);
            }
        }
    }
    Image8 {
        data,
        ..image.clone()
    }
}

/// Down-samples to `⌊side · factor⌋` by averaging boxes (PIL's `BOX` filter), then back
/// to the original size by repeating pixels.
fn pixelate(image: &Image8, factor: f64) -> Image8 {
    let (w, h, c) = (image.width, image.height, image.channels);
    let (sw, sh) = (
        ((w as f64 * factor) as usize).max(1),
        ((h as f64 * factor) as usize).max(1),
    );
    // Box of small pixel (i, j): source rows [i·h/sh, (i+1)·h/sh), with fractional
    // coverage at the edges (PIL's BOX filter).
    let coverage = |small: usize, n_small: usize, n: usize| -> Vec<(usize, f64)> {
        let scale = n as f64 / n_small as f64;
        let (start, end) = (small as f64 * scale, (small + 1) as f64 * scale);
        (start.floor() as usize..(end.ceil() as usize).min(n))
            .map(|p| {
                let overlap = (end.min(p as f64 + 1.0) - start.max(p as f64)).max(0.0);
                (p, overlap)
            })
            .filter(|(_, o)| *o > 0.0)
            .collect()
    };
    let mut small = vec![0u8; sw * sh * c];
    for i in 0..sh {
        let ys = coverage(i, sh, h);
        for j in 0..sw {
            let xs = coverage(j, sw, w);
            for ch in 0..c {
                let (mut sum, mut weight) = (0.0, 0.0);
                for &(y, wy) in &ys {
                    for &(x, wx) in &xs {
                        sum += wy * wx * f64::from(image.data[(y * w + x) * c + ch]);
                        weight += wy * wx;
                    }
                }
                small[(i * sw + j) * c + ch] = to_u8(sum / weight / 255.0);
            }
        }
    }
    let mut data = vec![0u8; w * h * c];
    for y in 0..h {
        let i = (y * sh / h).min(sh - 1);
        for x in 0..w {
            let j = (x * sw / w).min(sw - 1);
            for ch in 0..c {
                data[(y * w + x) * c + ch] = small[(i * sw + j) * c + ch];
            }
        }
    }
    Image8 {
        data,
        ..image.clone()
    }
}

/// Encodes `image` as a baseline JPEG of `quality` and decodes it again.
fn jpeg(image: &Image8, quality: u8) -> Result<Image8, RobustnessError> {
    let failed = |reason| RobustnessError::Jpeg {
        width: image.width,
        height: image.height,
        reason,
    };
    let color = match image.channels {
        1 => mozjpeg::ColorSpace::JCS_GRAYSCALE,
        3 => mozjpeg::ColorSpace::JCS_RGB,
        _ => return Err(failed("only grayscale and RGB images are encoded")),
    };
    if image.width == 0 || image.height == 0 {
        return Err(failed("the image is empty"));
    }
    // libjpeg reports fatal errors by unwinding (mozjpeg-sys's `unwinding` feature).
    let encoded = std::panic::catch_unwind(|| -> std::io::Result<Vec<u8>> {
        let mut compress = mozjpeg::Compress::new(color);
        compress.set_size(image.width, image.height);
        compress.set_quality(f32::from(quality));
        compress.set_optimize_scans(false);
        let mut started = compress.start_compress(Vec::new())?;
        started.write_scanlines(&image.data)?;
        started.finish()
    })
    .map_err(|_| failed("libjpeg failed to encode"))?
    .map_err(|_| failed("libjpeg could not write the image"))?;
    let decoded = decode_image(&encoded, std::path::Path::new("<jpeg corruption>"))
        .map_err(RobustnessError::JpegDecode)?;
    Ok(match image.channels {
        1 => to_luma_pil(&decoded),
        _ => to_rgb_pil(&decoded),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn neighbouring_seeds_give_unrelated_noise() {
        // Seeds 2j and 2j + 1 once mapped to the same state: pairs of images shared
        // their noise.
        let draws = |seed: u64| {
            let mut normal = Normal::new(seed);
            (0..8).map(|_| normal.sample()).collect::<Vec<f64>>()
        };
        for seed in 0..64u64 {
            let (a, b) = (draws(seed), draws(seed + 1));
            let close = a
                .iter()
                .zip(&b)
                .filter(|(x, y)| (*x - *y).abs() < 0.05)
                .count();
            assert!(close <= 2, "seeds {seed}, {}: {a:?} vs {b:?}", seed + 1);
        }
    }

    fn gradient() -> Image8 {
        Image8 {
            width: 28,
            height: 28,
            channels: 1,
            data: (0..784).map(|i| ((i * 37) % 256) as u8).collect(),
        }
    }

    #[test]
    fn severities_outside_zero_to_five_are_errors() {
        for c in Corruption::ALL {
            assert!(matches!(
                c.apply(&gradient(), 6, 0),
                Err(RobustnessError::Severity { severity: 6 })
            ));
        }
    }

    #[test]
    fn stronger_corruptions_move_the_image_further() {
        let image = gradient();
        for c in Corruption::ALL {
            let distance = |s: usize| -> f64 {
                let out = c.apply(&image, s, 7).unwrap();
                assert_eq!((out.width, out.height, out.channels), (28, 28, 1), "{c}");
                out.data
                    .iter()
                    .zip(&image.data)
                    .map(|(a, b)| (f64::from(*a) - f64::from(*b)).abs())
                    .sum::<f64>()
            };
            assert!(distance(1) > 0.0, "{c}");
            assert!(
                distance(5) > distance(1),
                "{c}: {} vs {}",
                distance(5),
                distance(1)
            );
        }
    }
}

/// One corruption's outcome at one severity on a labelled set.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CorruptionResult {
    /// The corruption.
    pub corruption: Corruption,
    /// Its severity (0: the clean images).
    pub severity: usize,
    /// Accuracy, verdict flags and calibration (ECE) on the corrupted images.
    pub summary: super::SetSummary,
    /// How well each OoD score tells the corrupted images from the clean ones (AUROC 0.5
    /// at severity 0).
    pub detection: super::ShiftDetection,
}

/// Corrupts `images` at `severity` (image `i` with noise seed `seed + i`) and measures
/// the result with `classifier`; `clean_scores` are the clean images' scores
/// ([`super::evaluate`]).
///
/// # Errors
/// [`Corruption::apply`]'s, [`super::evaluate`]'s, [`super::summarize`]'s and
/// [`super::shift_detection`]'s errors.
#[allow(clippy::too_many_arguments)]
pub fn run_corruption<B: burn::tensor::backend::Backend>(
    classifier: &crate::Classifier<B>,
    images: &[Image8],
    labels: &[usize],
    clean_scores: &[crate::scores::OodScores],
    corruption: Corruption,
    severity: usize,
    seed: u64,
    batch: usize,
) -> Result<CorruptionResult, RobustnessError> {
    super::check_labels(images.len(), labels, classifier.config().n_classes)?;
    let corrupted = images
        .iter()
        .enumerate()
        .map(|(i, image)| corruption.apply(image, severity, seed.wrapping_add(i as u64)))
        .collect::<Result<Vec<_>, _>>()?;
    let (results, scores) = super::evaluate(classifier, &corrupted, batch)?;
    Ok(CorruptionResult {
        corruption,
        severity,
        summary: super::summarize(&results, labels)?,
        detection: super::shift_detection(clean_scores, &scores)?,
    })
}
