//! Image files → the tensors a model takes, as the reference's PyTorch code does it.
//!
//! For the released ImageNet models this is torchvision's eval transform,
//! `Resize(256)` (Pillow's antialiased bilinear filter), `CenterCrop(224)`, `ToTensor`,
//! `Normalize(mean, std)`. [`pil_resize_bilinear`] reproduces Pillow's fixed-point
//! two-pass resampler (`libImaging/Resample.c`) operation for operation, so the resized
//! 8-bit images equal Pillow's; images are first converted to RGB as Pillow's
//! `convert('RGB')` does (grayscale replicated, alpha dropped, palettes expanded, 16-bit
//! grayscale clipped at 255, 16-bit colour reduced to its high byte).
//!
//! Decoders: PNG is decoded losslessly, so PNG inputs match Pillow exactly; JPEG decoders
//! may differ from libjpeg-turbo's by one level in a few pixels.

use std::path::{Path, PathBuf};

use image::DynamicImage;
use trustgc_core::input::{GrayscaleInput, InputSpec};

/// Why an image could not be turned into a model input.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an image we can decode.
    #[error("cannot decode {path} as an image: {source}")]
    Decode {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        #[source]
        source: image::ImageError,
    },
    /// The image has no pixels.
    #[error("{path} is an empty image ({width}x{height})")]
    Empty {
        /// The file.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
    },
    /// The image is smaller than the crop the model needs after resizing.
    #[error("{path}: a {width}x{height} image cannot be resized and cropped to {crop}x{crop}")]
    TooSmall {
        /// The file.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The crop side.
        crop: usize,
    },
}

/// An 8-bit image, row-major, `channels` interleaved values per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image8 {
    /// Width.
    pub width: usize,
    /// Height.
    pub height: usize,
    /// 1 (grayscale) or 3 (RGB).
    pub channels: usize,
    /// `height · width · channels` values.
    pub data: Vec<u8>,
}

/// Reads and decodes an image file.
pub fn read_image(path: &Path) -> Result<DynamicImage, ImageError> {
    let bytes = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let image = image::load_from_memory(&bytes).map_err(|source| ImageError::Decode {
        path: path.to_path_buf(),
        source,
    })?;
    if image.width() == 0 || image.height() == 0 {
        return Err(ImageError::Empty {
            path: path.to_path_buf(),
            width: image.width(),
            height: image.height(),
        });
    }
    Ok(image)
}

/// Pillow's `convert('RGB')`.
pub fn to_rgb_pil(image: &DynamicImage) -> Image8 {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let data: Vec<u8> = match image {
        DynamicImage::ImageLuma8(g) => g.as_raw().iter().flat_map(|&v| [v, v, v]).collect(),
        DynamicImage::ImageLumaA8(g) => g
            .as_raw()
            .chunks_exact(2)
            .flat_map(|p| [p[0], p[0], p[0]])
            .collect(),
        DynamicImage::ImageRgb8(rgb) => rgb.as_raw().clone(),
        DynamicImage::ImageRgba8(rgba) => rgba
            .as_raw()
            .chunks_exact(4)
            .flat_map(|p| [p[0], p[1], p[2]])
            .collect(),
        // Pillow opens 16-bit grayscale as mode I;16 and clips it to 255 on conversion.
        DynamicImage::ImageLuma16(g) => g
            .as_raw()
            .iter()
            .map(|&v| v.min(255) as u8)
            .flat_map(|v| [v, v, v])
            .collect(),
        DynamicImage::ImageLumaA16(g) => g
            .as_raw()
            .chunks_exact(2)
            .map(|p| p[0].min(255) as u8)
            .flat_map(|v| [v, v, v])
            .collect(),
        // Pillow reads 16-bit colour PNGs as RGB, keeping each sample's high byte.
        DynamicImage::ImageRgb16(rgb) => rgb.as_raw().iter().map(|&v| (v >> 8) as u8).collect(),
        DynamicImage::ImageRgba16(rgba) => rgba
            .as_raw()
            .chunks_exact(4)
            .flat_map(|p| [(p[0] >> 8) as u8, (p[1] >> 8) as u8, (p[2] >> 8) as u8])
            .collect(),
        other => other.to_rgb8().into_raw(),
    };
    Image8 {
        width,
        height,
        channels: 3,
        data,
    }
}

/// Pillow's `convert('L')`: `L = (19595·R + 38470·G + 7471·B + 2¹⁵) >> 16` (ITU-R 601-2).
pub fn to_luma_pil(image: &DynamicImage) -> Image8 {
    let (width, height) = (image.width() as usize, image.height() as usize);
    let data: Vec<u8> = match image {
        DynamicImage::ImageLuma8(g) => g.as_raw().clone(),
        DynamicImage::ImageLumaA8(g) => g.as_raw().chunks_exact(2).map(|p| p[0]).collect(),
        DynamicImage::ImageLuma16(g) => g.as_raw().iter().map(|&v| v.min(255) as u8).collect(),
        DynamicImage::ImageLumaA16(g) => g
            .as_raw()
            .chunks_exact(2)
            .map(|p| p[0].min(255) as u8)
            .collect(),
        other => to_rgb_pil(other)
            .data
            .chunks_exact(3)
            .map(|p| {
                ((19595 * u32::from(p[0])
                    + 38470 * u32::from(p[1])
                    + 7471 * u32::from(p[2])
                    + 0x8000)
                    >> 16) as u8
            })
            .collect(),
    };
    Image8 {
        width,
        height,
        channels: 1,
        data,
    }
}

/// Fixed-point precision of Pillow's 8-bit resampler.
const PRECISION_BITS: u32 = 32 - 8 - 2;

fn bilinear(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 { 1.0 - x } else { 0.0 }
}

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc`: for each output
/// position, the first input index, the number of taps, and fixed-point weights.
fn coefficients(in_size: usize, out_size: usize) -> (usize, Vec<(usize, usize)>, Vec<i32>) {
    let (in0, in1) = (0.0f32, in_size as f32);
    let scale = f64::from(in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut k = vec![0f64; ksize];
    for xx in 0..out_size {
        let center = f64::from(in0) + (xx as f64 + 0.5) * scale;
        let ss = 1.0 / filterscale;
        // C's (int) conversion truncates toward zero.
        let xmin = ((center - support + 0.5) as i64).max(0) as usize;
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let taps = xmax - xmin;
        let mut ww = 0.0;
        for (x, kx) in k.iter_mut().enumerate().take(taps) {
            let w = bilinear((x as f64 + xmin as f64 - center + 0.5) * ss);
            *kx = w;
            ww += w;
        }
        for x in 0..ksize {
            let w = if x < taps {
                if ww != 0.0 { k[x] / ww } else { k[x] }
            } else {
                0.0
            };
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            weights[xx * ksize + x] = if w < 0.0 {
                (-0.5 + fixed) as i32
            } else {
                (0.5 + fixed) as i32
            };
        }
        bounds.push((xmin, taps));
    }
    (ksize, bounds, weights)
}

fn clip8(v: i64) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Pillow's `Image.resize((width, height), Image.BILINEAR)` for 8-bit images with 1 or
/// 3 channels: the antialiased bilinear filter, horizontal pass then vertical pass, each
/// in 22-bit fixed point with rounding and clipping to 8 bits in between.
pub fn pil_resize_bilinear(image: &Image8, width: usize, height: usize) -> Image8 {
    let c = image.channels;
    let need_horizontal = width != image.width;
    let need_vertical = height != image.height;
    let (ksize_h, bounds_h, weights_h) = coefficients(image.width, width);
    let (ksize_v, mut bounds_v, weights_v) = coefficients(image.height, height);
    // Rows of the source the vertical pass will read.
    let first = bounds_v[0].0;
    let last = bounds_v[height - 1].0 + bounds_v[height - 1].1;

    let mut current = image.clone();
    if need_horizontal {
        for b in bounds_v.iter_mut() {
            b.0 -= first;
        }
        let rows = last - first;
        let mut out = vec![0u8; rows * width * c];
        for yy in 0..rows {
            let src =
                &image.data[(yy + first) * image.width * c..(yy + first + 1) * image.width * c];
            for xx in 0..width {
                let (xmin, taps) = bounds_h[xx];
                let k = &weights_h[xx * ksize_h..xx * ksize_h + taps];
                for ch in 0..c {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (x, &w) in k.iter().enumerate() {
                        ss += i64::from(src[(x + xmin) * c + ch]) * i64::from(w);
                    }
                    out[(yy * width + xx) * c + ch] = clip8(ss);
                }
            }
        }
        current = Image8 {
            width,
            height: rows,
            channels: c,
            data: out,
        };
    }
    if need_vertical {
        let mut out = vec![0u8; height * current.width * c];
        for yy in 0..height {
            let (ymin, taps) = bounds_v[yy];
            let k = &weights_v[yy * ksize_v..yy * ksize_v + taps];
            for xx in 0..current.width {
                for ch in 0..c {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (y, &w) in k.iter().enumerate() {
                        ss += i64::from(current.data[((y + ymin) * current.width + xx) * c + ch])
                            * i64::from(w);
                    }
                    out[(yy * current.width + xx) * c + ch] = clip8(ss);
                }
            }
        }
        current = Image8 {
            width: current.width,
            height,
            channels: c,
            data: out,
        };
    }
    current
}

/// torchvision's output size for `Resize(size)` with an int: the shorter side becomes
/// `size`, the longer `int(size · long / short)`. Returns `(width, height)`.
pub fn resized_size(width: usize, height: usize, size: usize) -> (usize, usize) {
    if width <= height {
        (size, (size as f64 * height as f64 / width as f64) as usize)
    } else {
        ((size as f64 * width as f64 / height as f64) as usize, size)
    }
}

/// Python's `round` (half to even) of a non-negative value.
fn round_half_even(x: f64) -> usize {
    let floor = x.floor();
    let diff = x - floor;
    let rounded = if diff > 0.5 || (diff == 0.5 && floor % 2.0 != 0.0) {
        floor + 1.0
    } else {
        floor
    };
    rounded as usize
}

/// torchvision's `CenterCrop(size)` offsets `(left, top)` for an image at least that large.
pub fn center_crop_offsets(width: usize, height: usize, size: usize) -> (usize, usize) {
    (
        round_half_even((width - size) as f64 / 2.0),
        round_half_even((height - size) as f64 / 2.0),
    )
}

/// Crops a `size x size` square at `(left, top)`.
pub fn crop(image: &Image8, left: usize, top: usize, size: usize) -> Image8 {
    let c = image.channels;
    let mut data = Vec::with_capacity(size * size * c);
    for y in top..top + size {
        let row = &image.data[(y * image.width + left) * c..(y * image.width + left + size) * c];
        data.extend_from_slice(row);
    }
    Image8 {
        width: size,
        height: size,
        channels: c,
        data,
    }
}

/// `Resize(resize)` then `CenterCrop(crop)` on an 8-bit image.
pub fn resize_and_crop(
    image: &Image8,
    resize: usize,
    crop_size: usize,
    path: &Path,
) -> Result<Image8, ImageError> {
    let (w, h) = resized_size(image.width, image.height, resize);
    if w < crop_size || h < crop_size || w == 0 || h == 0 {
        return Err(ImageError::TooSmall {
            path: path.to_path_buf(),
            width: image.width as u32,
            height: image.height as u32,
            crop: crop_size,
        });
    }
    let resized = pil_resize_bilinear(image, w, h);
    let (left, top) = center_crop_offsets(w, h, crop_size);
    Ok(crop(&resized, left, top, crop_size))
}

/// `ToTensor` + `Normalize`: CHW float32, `(v/255 − mean_c)/std_c`.
pub fn normalize_chw(image: &Image8, mean: &[f32], std: &[f32]) -> Vec<f32> {
    let (c, n) = (image.channels, image.width * image.height);
    let mut out = vec![0f32; c * n];
    for (i, px) in image.data.chunks_exact(c).enumerate() {
        for ch in 0..c {
            out[ch * n + i] = (f32::from(px[ch]) / 255.0 - mean[ch]) / std[ch];
        }
    }
    out
}

/// The whole transform of `spec` for one decoded image: the model's input, `C·H·W` values.
pub fn model_input(
    image: &DynamicImage,
    spec: &InputSpec,
    path: &Path,
) -> Result<Vec<f32>, ImageError> {
    match spec {
        InputSpec::ImageNet {
            resize,
            crop,
            mean,
            std,
        } => {
            let cropped = resize_and_crop(&to_rgb_pil(image), *resize, *crop, path)?;
            Ok(normalize_chw(&cropped, mean, std))
        }
        InputSpec::Grayscale(g) => {
            let small = grayscale_pixels(image, g, path)?;
            let mut out = vec![0f32; g.padded_size() * g.padded_size()];
            g.write(&small.data, None, false, &mut out);
            Ok(out)
        }
    }
}

/// A grayscale image at the representation's `size x size`: Pillow's `convert('L')`, the
/// shorter side resized to `size` (antialiased bilinear), center-cropped. An image already
/// `size x size` and grayscale is used as it is.
pub fn grayscale_pixels(
    image: &DynamicImage,
    spec: &GrayscaleInput,
    path: &Path,
) -> Result<Image8, ImageError> {
    let luma = to_luma_pil(image);
    if luma.width == spec.size && luma.height == spec.size {
        return Ok(luma);
    }
    resize_and_crop(&luma, spec.size, spec.size, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_rounding_and_sizes() {
        assert_eq!(round_half_even(0.5), 0);
        assert_eq!(round_half_even(1.5), 2);
        assert_eq!(round_half_even(2.5), 2);
        assert_eq!(round_half_even(80.0), 80);
        assert_eq!(resized_size(451, 300, 256), (384, 256));
        assert_eq!(resized_size(300, 451, 256), (256, 384));
        assert_eq!(center_crop_offsets(384, 256, 224), (80, 16));
        assert_eq!(center_crop_offsets(225, 225, 224), (0, 0));
        assert_eq!(center_crop_offsets(227, 227, 224), (2, 2));
    }

    #[test]
    fn resizing_to_the_same_size_is_the_identity() {
        let image = Image8 {
            width: 3,
            height: 2,
            channels: 1,
            data: vec![0, 50, 100, 150, 200, 250],
        };
        assert_eq!(pil_resize_bilinear(&image, 3, 2), image);
    }
}
