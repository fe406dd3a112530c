//! How an image becomes the tensor a model takes: the representation part of a model's
//! config (decoding and resizing image files live in `trustgc`).
//!
//! [`GrayscaleInput`] is the representation of single-channel images (Fashion-MNIST):
//! the entry coupling of the IB-INN splits its input's channels in two, so a one-channel
//! image cannot enter it directly. We pad the `size x size` image with black
//! (`pad` pixels on each side) and fold each `s x s` block of pixels into `s²` channels
//! (space-to-depth, channel `s·r + c` holds pixel `(s·i + r, s·j + c)`). Both steps are
//! bijections with unit Jacobian, so the model's density is a density of the padded
//! image; the padded border is black like Fashion-MNIST's own border, and receives the
//! same dequantization noise in training, so it carries no special information.

use serde::{Deserialize, Serialize};

use crate::config::ConfigError;

/// The largest image side (resize, crop, grayscale size, padding) a representation may ask
/// for: large enough for any model of this family, small enough that preprocessing one image
/// stays within tens of megabytes and no size computed from it overflows.
pub const MAX_SIDE: usize = 4096;

/// The input representation a model was trained with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum InputSpec {
    /// torchvision's ImageNet eval transform: `Resize(resize)` (PIL bilinear, antialiased),
    /// `CenterCrop(crop)`, `ToTensor`, `Normalize(mean, std)`.
    ImageNet {
        /// Shorter side after resizing (256).
        resize: usize,
        /// Side of the center crop (224).
        crop: usize,
        /// Per-channel means (RGB).
        mean: [f32; 3],
        /// Per-channel standard deviations (RGB).
        std: [f32; 3],
    },
    /// A grayscale image padded and folded into channels, see [`GrayscaleInput`].
    Grayscale(GrayscaleInput),
}

impl InputSpec {
    /// The released ImageNet models' eval transform.
    pub fn imagenet() -> Self {
        InputSpec::ImageNet {
            resize: 256,
            crop: 224,
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }

    /// Checks that the representation can be computed: positive sizes no larger than
    /// [`MAX_SIDE`], a crop inside the resized image, a block size dividing the padded
    /// image, finite means and finite positive standard deviations. [`GcConfig::validate`]
    /// (and so every config parser) calls it before anything else uses the representation.
    ///
    /// [`GcConfig::validate`]: crate::GcConfig::validate
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |value: String, requirement: &'static str| ConfigError::Invalid {
            field: "input",
            value,
            requirement,
        };
        let finite = |v: f32| v.is_finite();
        let positive = |v: f32| v.is_finite() && v > 0.0;
        match self {
            InputSpec::ImageNet {
                resize,
                crop,
                mean,
                std,
            } => {
                if *crop == 0 || *resize > MAX_SIDE || crop > resize {
                    return Err(invalid(
                        format!("resize {resize}, crop {crop}"),
                        "needs 1 <= crop <= resize <= 4096",
                    ));
                }
                if !mean.iter().all(|&m| finite(m)) || !std.iter().all(|&s| positive(s)) {
                    return Err(invalid(
                        format!("mean {mean:?}, std {std:?}"),
                        "means must be finite and standard deviations finite and positive",
                    ));
                }
            }
            InputSpec::Grayscale(g) => {
                if g.size == 0 || g.size > MAX_SIDE || g.pad > MAX_SIDE {
                    return Err(invalid(
                        format!("size {}, pad {}", g.size, g.pad),
                        "needs 1 <= size <= 4096 and pad <= 4096",
                    ));
                }
                let s = g.space_to_depth;
                if s == 0 || g.padded_size() % s != 0 {
                    return Err(invalid(
                        format!("space_to_depth {s}, padded size {}", g.padded_size()),
                        "the block side must be at least 1 and divide size + 2 * pad",
                    ));
                }
                if !finite(g.mean) || !positive(g.std) {
                    return Err(invalid(
                        format!("mean {}, std {}", g.mean, g.std),
                        "the mean must be finite and the standard deviation finite and positive",
                    ));
                }
            }
        }
        Ok(())
    }

    /// The model input shape `[channels, height, width]` this representation produces
    /// (call [`validate`](Self::validate) first: a block side of 0 divides by zero).
    pub fn model_shape(&self) -> [usize; 3] {
        match self {
            InputSpec::ImageNet { crop, .. } => [3, *crop, *crop],
            InputSpec::Grayscale(g) => g.model_shape(),
        }
    }

    /// `Σ_d ln std_d / D`: the mean log standard deviation over the model's input
    /// dimensions (the Normalize Jacobian per dimension, for bits per dimension).
    pub fn mean_log_std(&self) -> f64 {
        match self {
            InputSpec::ImageNet { std, .. } => {
                std.iter().map(|s| f64::from(*s).ln()).sum::<f64>() / 3.0
            }
            InputSpec::Grayscale(g) => f64::from(g.std).ln(),
        }
    }
}

/// The grayscale representation: pad, scale to `[0, 1]`, normalize, space-to-depth.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrayscaleInput {
    /// Side of the (square) source image, 28 for Fashion-MNIST.
    pub size: usize,
    /// Black pixels added on each side.
    pub pad: usize,
    /// Mean subtracted after scaling to `[0, 1]`.
    pub mean: f32,
    /// Standard deviation divided by after subtracting the mean.
    pub std: f32,
    /// Space-to-depth block side `s` (the model sees `s²` channels).
    pub space_to_depth: usize,
}

impl GrayscaleInput {
    /// The Fashion-MNIST setting: 28x28 padded to 32x32, 2x2 blocks → `[4, 16, 16]`;
    /// mean and standard deviation of the training pixels (0.2860, 0.3530).
    pub fn fashion_mnist() -> Self {
        Self {
            size: 28,
            pad: 2,
            mean: 0.2860,
            std: 0.3530,
            space_to_depth: 2,
        }
    }

    /// Side of the padded image.
    pub fn padded_size(&self) -> usize {
        self.size + 2 * self.pad
    }

    /// The model's input shape `[s², padded / s, padded / s]`.
    pub fn model_shape(&self) -> [usize; 3] {
        let s = self.space_to_depth;
        let side = self.padded_size() / s;
        [s * s, side, side]
    }

    /// Writes one image into `out` (`s²·(padded/s)²` values, the model's layout).
    ///
    /// `pixels` are `size x size` bytes, row-major. `noise`, when given, holds one value in
    /// `[0, 1)` per *padded* pixel (row-major), added as `noise/255` before normalization
    /// (dequantization; the sum is clamped to `[0, 1]` as the reference does). `flip`
    /// mirrors the image left-right.
    pub fn write(&self, pixels: &[u8], noise: Option<&[f32]>, flip: bool, out: &mut [f32]) {
        let (n, p, s) = (self.size, self.pad, self.space_to_depth);
        let side = self.padded_size();
        let small = side / s;
        debug_assert_eq!(pixels.len(), n * n);
        debug_assert_eq!(out.len(), side * side);
        for y in 0..side {
            for x in 0..side {
                let source = if y >= p && y < p + n && x >= p && x < p + n {
                    let (sy, sx) = (y - p, x - p);
                    let sx = if flip { n - 1 - sx } else { sx };
                    pixels[sy * n + sx]
                } else {
                    0
                };
                let mut value = f32::from(source) / 255.0;
                if let Some(noise) = noise {
                    value = (value + noise[y * side + x] / 255.0).min(1.0);
                }
                let channel = s * (y % s) + x % s;
                out[(channel * small + y / s) * small + x / s] = (value - self.mean) / self.std;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn representations_that_cannot_work_are_config_errors() {
        let gray = |f: &dyn Fn(&mut GrayscaleInput)| {
            let mut g = GrayscaleInput::fashion_mnist();
            f(&mut g);
            InputSpec::Grayscale(g)
        };
        let bad = [
            gray(&|g| g.space_to_depth = 0),
            gray(&|g| g.space_to_depth = 3),
            gray(&|g| g.size = 0),
            gray(&|g| g.pad = usize::MAX / 2),
            gray(&|g| g.std = 0.0),
            gray(&|g| g.mean = f32::NAN),
            InputSpec::ImageNet {
                resize: 100,
                crop: 224,
                mean: [0.0; 3],
                std: [1.0; 3],
            },
            InputSpec::ImageNet {
                resize: 256,
                crop: 224,
                mean: [0.0; 3],
                std: [1.0, -1.0, 1.0],
            },
        ];
        for spec in bad {
            let err = spec.validate().expect_err(&format!("{spec:?}"));
            assert!(
                matches!(err, ConfigError::Invalid { field: "input", .. }),
                "{err}"
            );
        }
        assert!(InputSpec::imagenet().validate().is_ok());
        assert!(
            InputSpec::Grayscale(GrayscaleInput::fashion_mnist())
                .validate()
                .is_ok()
        );
    }

    #[test]
    fn space_to_depth_layout() {
        let spec = GrayscaleInput {
            size: 2,
            pad: 1,
            mean: 0.0,
            std: 1.0,
            space_to_depth: 2,
        };
        let v = |p: f32| p / 255.0;
        assert_eq!(spec.model_shape(), [4, 2, 2]);
        let mut out = vec![0.0; 16];
        spec.write(&[1, 2, 3, 4], None, false, &mut out);
        // padded 4x4: row 1 = [0,1,2,0], row 2 = [0,3,4,0]; channel 3 = pixels (odd row, odd col)
        assert_eq!(&out[12..16], &[v(1.0), 0.0, 0.0, 0.0]);
        assert_eq!(&out[0..4], &[0.0, 0.0, 0.0, v(4.0)]);
        let mut flipped = vec![0.0; 16];
        spec.write(&[1, 2, 3, 4], None, true, &mut flipped);
        assert_eq!(&flipped[8..12], &[0.0, v(1.0), 0.0, 0.0]);
        assert_eq!(&flipped[0..4], &[0.0, 0.0, 0.0, v(3.0)]);
    }
}
