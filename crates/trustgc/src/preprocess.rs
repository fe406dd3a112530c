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
//! Decoders: the decoded 8-bit pixels are Pillow's, value for value. PNG is decoded
//! losslessly. JPEG is decoded by libjpeg-turbo's decoder, the C code Pillow decodes it
//! with, built from source, with Pillow's settings and Pillow's colour handling (grayscale,
//! YCbCr, RGB, CMYK and YCCK files): `tests/jpeg_pillow.rs` checks it byte for byte against
//! Pillow on every kind of JPEG (baseline, progressive, arithmetic-coded, every chroma
//! subsampling, restart intervals, damaged entropy-coded data). A JPEG libjpeg refuses is a
//! typed error ([`JpegError`]), never an exit of the process.
//!
//! Untrusted images cost bounded work: [`decode_image`] refuses from the header an image
//! over [`MAX_IMAGE_PIXELS`] pixels or [`MAX_DECODED_BYTES`] decoded bytes, and a JPEG
//! that ends before its image does or has over [`MAX_JPEG_SCANS`] scans; the resize
//! computes only the pixels the center crop keeps ([`pil_resize_bilinear_region`]), so a
//! 100,000 x 1 image costs what a square one does.

use std::ops::Range;
use std::path::{Path, PathBuf};

use image::{DynamicImage, ImageDecoder};
use trustgc_core::input::{GrayscaleInput, InputSpec};

mod jpeg;

pub use jpeg::{JpegError, MAX_JPEG_SCANS};

/// Why an image could not be turned into a model input.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// The file could not be read: missing, unreadable, not a regular file (a pipe or
    /// device is refused unread) or over [`trustgc_io::Cap::IMAGE`].
    #[error(transparent)]
    Io(#[from] trustgc_io::ReadError),
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
    /// The header declares an image over [`MAX_IMAGE_PIXELS`] pixels or
    /// [`MAX_DECODED_BYTES`] decoded bytes: refused before any pixel is decoded.
    #[error(
        "{path}: a {width}x{height} image is over the limits of {MAX_IMAGE_PIXELS} pixels \
         and {MAX_DECODED_BYTES} bytes decoded"
    )]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
    },
    /// The file ends before the image does (Pillow refuses such files: "image file is
    /// truncated").
    #[error("{path} is truncated: its {format} data ends before the image is complete")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// The image format.
        format: &'static str,
    },
    /// The image cannot be turned into the model's input.
    #[error("{path}: {source}")]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong with the decoded image.
        #[source]
        source: InputError,
    },
}

/// Why a decoded image cannot be turned into the model's input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// The image has no pixels.
    #[error("the image is empty ({width}x{height})")]
    Empty {
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
    },
    /// The image is smaller than the crop the model needs after resizing.
    #[error("a {width}x{height} image cannot be resized and cropped to {crop}x{crop}")]
    TooSmall {
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

/// Most pixels of an image [`read_image`] decodes: Pillow's own refusal threshold (twice
/// its `Image.MAX_IMAGE_PIXELS`, where it raises `DecompressionBombError`), 178,956,970
/// pixels, a 16,384 x 10,922 photo. Checked on the header, before any pixel is decoded.
pub const MAX_IMAGE_PIXELS: u64 = 178_956_970;

/// Most bytes the decoded pixels of an image may take (512 MiB, the `image` crate's
/// default allocation limit): an RGB image of [`MAX_IMAGE_PIXELS`] pixels, or an RGBA
/// 16-bit one of a quarter of that. Checked on the header, and given to the decoder as its
/// allocation limit.
pub const MAX_DECODED_BYTES: u64 = 512 << 20;

/// Reads and decodes an image file: [`decode_image`] on its bytes. Only a regular file of
/// at most [`trustgc_io::Cap::IMAGE`] is read ([`ImageError::Io`] otherwise).
pub fn read_image(path: &Path) -> Result<DynamicImage, ImageError> {
    let bytes = trustgc_io::read_capped(path, trustgc_io::Cap::IMAGE)?;
    decode_image(&bytes, path)
}

/// Decodes an image (PNG or JPEG) held in memory; `path` names it in errors.
///
/// The pixels are Pillow's `Image.open(f)` (see the [module](self) doc): a grayscale JPEG
/// is [`DynamicImage::ImageLuma8`], a colour one [`DynamicImage::ImageRgb8`] (a CMYK or
/// YCCK one already converted to RGB as Pillow's `convert('RGB')` converts it); EXIF
/// orientation is not applied, as Pillow does not apply it.
///
/// Memory is bounded before any pixel is decoded: the header's size is held to
/// [`MAX_IMAGE_PIXELS`] and [`MAX_DECODED_BYTES`] ([`ImageError::TooLarge`]), and the PNG
/// decoder is given [`MAX_DECODED_BYTES`] as its allocation limit. A JPEG must be
/// complete, as Pillow requires: one that ends before its end-of-image marker is
/// [`ImageError::Truncated`], not decoded with the missing part filled in. (Pillow also
/// accepts a JPEG that lacks only the final marker after complete image data; this refuses
/// it.) A JPEG of more than [`MAX_JPEG_SCANS`] scans is refused too. A PNG whose image data
/// is cut short is a decoder error.
///
/// A JPEG that libjpeg cannot decode is an [`ImageError::Decode`] whose source is an
/// [`image::ImageError::Decoding`] holding a [`JpegError`]. libjpeg's fatal errors unwind
/// out of its C code to a `catch_unwind` here, so the program must be built with
/// `panic = "unwind"` (the default); with `panic = "abort"` such a file aborts it.
///
/// # Errors
/// [`ImageError::Decode`], [`ImageError::Empty`], [`ImageError::TooLarge`],
/// [`ImageError::Truncated`], each naming `path`.
pub fn decode_image(bytes: &[u8], path: &Path) -> Result<DynamicImage, ImageError> {
    let decode_err = |source| ImageError::Decode {
        path: path.to_path_buf(),
        source,
    };
    if image::guess_format(bytes).ok() == Some(image::ImageFormat::Jpeg) {
        return jpeg::decode(bytes).map_err(|refusal| match refusal {
            jpeg::Refusal::Empty { width, height } => ImageError::Empty {
                path: path.to_path_buf(),
                width,
                height,
            },
            jpeg::Refusal::TooLarge { width, height } => ImageError::TooLarge {
                path: path.to_path_buf(),
                width,
                height,
            },
            jpeg::Refusal::Truncated => ImageError::Truncated {
                path: path.to_path_buf(),
                format: "JPEG",
            },
            jpeg::Refusal::Jpeg(e) => decode_err(image::ImageError::Decoding(
                image::error::DecodingError::new(image::ImageFormat::Jpeg.into(), e),
            )),
        });
    }
    let mut reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| decode_err(image::ImageError::IoError(e)))?;
    let format = reader.format();
    let too_large = |(width, height)| ImageError::TooLarge {
        path: path.to_path_buf(),
        width,
        height,
    };
    // The PNG decoder holds its buffers to the limit as it reads the header: its size,
    // read here, says what it refuses.
    let png_size = (format == Some(image::ImageFormat::Png))
        .then(|| png_size(bytes))
        .flatten();
    if let Some((width, height)) = png_size
        && u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS
    {
        return Err(too_large((width, height)));
    }
    let mut limits = image::Limits::default();
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(|e| match (e, png_size) {
        // Pixels of up to 8 bytes (16-bit RGBA) over the limit: the image is too large.
        (image::ImageError::Limits(_), Some((width, height)))
            if u64::from(width) * u64::from(height) * 8 > MAX_DECODED_BYTES =>
        {
            too_large((width, height))
        }
        (e, _) => decode_err(e),
    })?;
    let (width, height) = decoder.dimensions();
    if width == 0 || height == 0 {
        return Err(ImageError::Empty {
            path: path.to_path_buf(),
            width,
            height,
        });
    }
    if u64::from(width) * u64::from(height) > MAX_IMAGE_PIXELS
        || decoder.total_bytes() > MAX_DECODED_BYTES
    {
        return Err(too_large((width, height)));
    }
    DynamicImage::from_decoder(decoder).map_err(decode_err)
}

/// A PNG's width and height, from its header chunk (`None` if it does not start with one).
fn png_size(data: &[u8]) -> Option<(u32, u32)> {
    if data.get(12..16)? != b"IHDR" {
        return None;
    }
    let field = |at: usize| Some(u32::from_be_bytes(data.get(at..at + 4)?.try_into().ok()?));
    Some((field(16)?, field(20)?))
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

/// Pillow's `precompute_coeffs` followed by `normalize_coeffs_8bpc` for the output
/// positions `outputs` of a resize from `in_size` to `out_size`: for each, the first input
/// index, the number of taps, and fixed-point weights (`ksize` per position). Each
/// position's coefficients depend only on that position, so any range of them equals the
/// same range of the whole table.
fn coefficients(
    in_size: usize,
    out_size: usize,
    outputs: Range<usize>,
) -> (usize, Vec<(usize, usize)>, Vec<i32>) {
    let (in0, in1) = (0.0f32, in_size as f32);
    let scale = f64::from(in1 - in0) / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = 1.0 * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(outputs.len());
    let mut weights = vec![0i32; outputs.len() * ksize];
    let mut k = vec![0f64; ksize];
    for (i, xx) in outputs.enumerate() {
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
            weights[i * ksize + x] = if w < 0.0 {
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
///
/// This returns the whole `width x height` image; [`pil_resize_bilinear_region`] computes
/// only a part of it, in time and memory bounded by that part.
pub fn pil_resize_bilinear(image: &Image8, width: usize, height: usize) -> Image8 {
    pil_resize_bilinear_region(
        image,
        width,
        height,
        Region {
            left: 0,
            top: 0,
            width,
            height,
        },
    )
}

/// A rectangle of an image: columns `left..left + width`, rows `top..top + height`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// First column.
    pub left: usize,
    /// First row.
    pub top: usize,
    /// Number of columns.
    pub width: usize,
    /// Number of rows.
    pub height: usize,
}

/// The `region` of [`pil_resize_bilinear`]`(image, width, height)`, equal to it value for
/// value, computing only the region.
///
/// Pillow's resampler computes each output pixel from a window of input pixels whose
/// position and weights depend only on that pixel's position, so only the region's
/// columns (for the input rows the region's rows read) and rows are computed. Time and
/// memory are bounded by the region and the input it reads, whatever `width` and `height`
/// are: `Resize(256)` of a 100,000 x 1 image is 25,600,000 x 256, of which a center crop
/// needs 224 x 224.
///
/// # Panics
/// If `region` reaches outside `width x height`.
pub fn pil_resize_bilinear_region(
    image: &Image8,
    width: usize,
    height: usize,
    region: Region,
) -> Image8 {
    assert!(
        region.left + region.width <= width && region.top + region.height <= height,
        "{region:?} outside a {width}x{height} image"
    );
    let c = image.channels;
    let empty = Image8 {
        width: region.width,
        height: region.height,
        channels: c,
        data: Vec::new(),
    };
    if region.width == 0 || region.height == 0 {
        return empty;
    }
    let columns = region.left..region.left + region.width;
    let rows = region.top..region.top + region.height;
    let need_horizontal = width != image.width;
    let need_vertical = height != image.height;

    // The input rows the region's rows read: their filter windows, or themselves.
    let (ksize_v, mut bounds_v, weights_v) = if need_vertical {
        coefficients(image.height, height, rows.clone())
    } else {
        (1, rows.clone().map(|y| (y, 1)).collect(), Vec::new())
    };
    let first = bounds_v[0].0;
    let last = bounds_v[region.height - 1].0 + bounds_v[region.height - 1].1;
    for b in bounds_v.iter_mut() {
        b.0 -= first;
    }

    // Horizontal pass on those rows, the region's columns only.
    let stride = image.width * c;
    let mut current = Vec::with_capacity((last - first) * region.width * c);
    if need_horizontal {
        let (ksize_h, bounds_h, weights_h) = coefficients(image.width, width, columns);
        for y in first..last {
            let src = &image.data[y * stride..(y + 1) * stride];
            for (i, &(xmin, taps)) in bounds_h.iter().enumerate() {
                let k = &weights_h[i * ksize_h..i * ksize_h + taps];
                for ch in 0..c {
                    let mut ss: i64 = 1 << (PRECISION_BITS - 1);
                    for (x, &w) in k.iter().enumerate() {
                        ss += i64::from(src[(x + xmin) * c + ch]) * i64::from(w);
                    }
                    current.push(clip8(ss));
                }
            }
        }
    } else {
        for y in first..last {
            current.extend_from_slice(
                &image.data[y * stride + columns.start * c..][..columns.len() * c],
            );
        }
    }
    if !need_vertical {
        return Image8 {
            data: current,
            ..empty
        };
    }

    // Vertical pass.
    let row = region.width * c;
    let mut out = Vec::with_capacity(region.height * row);
    for (i, &(ymin, taps)) in bounds_v.iter().enumerate() {
        let k = &weights_v[i * ksize_v..i * ksize_v + taps];
        for xx in 0..row {
            let mut ss: i64 = 1 << (PRECISION_BITS - 1);
            for (y, &w) in k.iter().enumerate() {
                ss += i64::from(current[(y + ymin) * row + xx]) * i64::from(w);
            }
            out.push(clip8(ss));
        }
    }
    Image8 { data: out, ..empty }
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

/// `Resize(resize)` then `CenterCrop(crop)` on an 8-bit image, computing only the crop
/// (see [`pil_resize_bilinear_region`]): bounded by the crop however elongated the image.
pub fn resize_and_crop(
    image: &Image8,
    resize: usize,
    crop_size: usize,
) -> Result<Image8, InputError> {
    let (w, h) = resized_size(image.width, image.height, resize);
    if w < crop_size || h < crop_size || w == 0 || h == 0 {
        return Err(InputError::TooSmall {
            width: image.width as u32,
            height: image.height as u32,
            crop: crop_size,
        });
    }
    let (left, top) = center_crop_offsets(w, h, crop_size);
    Ok(pil_resize_bilinear_region(
        image,
        w,
        h,
        Region {
            left,
            top,
            width: crop_size,
            height: crop_size,
        },
    ))
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

/// The whole transform of `spec` for one decoded image: the model's input, `C·H·W` values
/// (what [`Classifier::preprocess`](crate::Classifier::preprocess) stacks into a batch).
///
/// # Errors
/// [`InputError`] when the image is empty or too small for the crop.
pub fn model_input(image: &DynamicImage, spec: &InputSpec) -> Result<Vec<f32>, InputError> {
    if image.width() == 0 || image.height() == 0 {
        return Err(InputError::Empty {
            width: image.width(),
            height: image.height(),
        });
    }
    match spec {
        InputSpec::ImageNet {
            resize,
            crop,
            mean,
            std,
        } => {
            let cropped = resize_and_crop(&to_rgb_pil(image), *resize, *crop)?;
            Ok(normalize_chw(&cropped, mean, std))
        }
        InputSpec::Grayscale(g) => {
            let small = grayscale_pixels(image, g)?;
            let mut out = vec![0f32; g.padded_size() * g.padded_size()];
            g.write(&small.data, None, false, &mut out);
            Ok(out)
        }
    }
}

/// Reads an image file and applies [`model_input`].
///
/// # Errors
/// As [`read_image`], and [`ImageError::Input`] naming the file when [`model_input`] fails.
pub fn read_model_input(path: &Path, spec: &InputSpec) -> Result<Vec<f32>, ImageError> {
    model_input(&read_image(path)?, spec).map_err(|source| ImageError::Input {
        path: path.to_path_buf(),
        source,
    })
}

/// A grayscale image at the representation's `size x size`: Pillow's `convert('L')`, the
/// shorter side resized to `size` (antialiased bilinear), center-cropped. An image already
/// `size x size` and grayscale is used as it is.
pub fn grayscale_pixels(image: &DynamicImage, spec: &GrayscaleInput) -> Result<Image8, InputError> {
    let luma = to_luma_pil(image);
    if luma.width == spec.size && luma.height == spec.size {
        return Ok(luma);
    }
    resize_and_crop(&luma, spec.size, spec.size)
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
