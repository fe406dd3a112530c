//! Photos in class folders (the ImageNet layout: `root/<class>/<image>`), with the
//! reference's training augmentation and torchvision's eval transforms.
//!
//! Training (`RandomResizedCrop(crop)`, `RandomHorizontalFlip`, `ToTensor`, dequantization
//! noise `U(0, 1/255)` clamped to `[0, 1]`, `Normalize`) draws every random number from
//! the item's generator, so epochs are reproducible. Evaluation is `Resize(resize)`,
//! `CenterCrop(crop)` (1-crop) or `TenCrop(crop)` (10-crop).

use std::path::{Path, PathBuf};

use trustgc::preprocess::{
    Image8, Region, center_crop_offsets, pil_resize_bilinear, pil_resize_bilinear_region,
    read_image, resized_size, to_rgb_pil,
};
use trustgc_core::input::InputSpec;
use trustgc_core::rng::Mt19937;

use crate::data::{DataError, SampleError, Samples};

/// File extensions read as images.
const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// The eval/training geometry and normalization of photos.
#[derive(Clone, Debug, PartialEq)]
pub struct PhotoSpec {
    /// Shorter side after resizing (eval).
    pub resize: usize,
    /// Crop side.
    pub crop: usize,
    /// Per-channel means.
    pub mean: [f32; 3],
    /// Per-channel standard deviations.
    pub std: [f32; 3],
}

impl PhotoSpec {
    /// From a model's input representation.
    pub fn from_input(input: &InputSpec) -> Option<Self> {
        match input {
            InputSpec::ImageNet {
                resize,
                crop,
                mean,
                std,
            } => Some(Self {
                resize: *resize,
                crop: *crop,
                mean: *mean,
                std: *std,
            }),
            InputSpec::Grayscale(_) => None,
        }
    }
}

/// Labelled photos found in class folders.
#[derive(Clone, Debug)]
pub struct PhotoSamples {
    /// `(file, label)` of every usable image.
    pub files: Vec<(PathBuf, usize)>,
    /// Class folder names, in label order.
    pub classes: Vec<String>,
    /// Geometry and normalization.
    pub spec: PhotoSpec,
}

fn uniform(rng: &mut Mt19937) -> f64 {
    f64::from(rng.next_u32()) / 4_294_967_296.0
}

/// `random.randint(0, n)` style: uniform in `0..=n`.
fn below_or_equal(rng: &mut Mt19937, n: usize) -> usize {
    rng.random_interval(n as u64) as usize
}

/// Python's `round` (half to even).
fn round(x: f64) -> usize {
    let r = x.round();
    let r = if (x - x.trunc()).abs() == 0.5 && r % 2.0 != 0.0 {
        r - x.signum()
    } else {
        r
    };
    r.max(0.0) as usize
}

/// torchvision's `RandomResizedCrop.get_params` with scale (0.08, 1) and ratio (3/4, 4/3):
/// `(top, left, height, width)`.
pub fn random_resized_crop_params(
    width: usize,
    height: usize,
    rng: &mut Mt19937,
) -> (usize, usize, usize, usize) {
    let area = (width * height) as f64;
    let (log_lo, log_hi) = ((3.0f64 / 4.0).ln(), (4.0f64 / 3.0).ln());
    for _ in 0..10 {
        let target_area = area * (0.08 + (1.0 - 0.08) * uniform(rng));
        let aspect = (log_lo + (log_hi - log_lo) * uniform(rng)).exp();
        let w = round((target_area * aspect).sqrt());
        let h = round((target_area / aspect).sqrt());
        if w > 0 && w <= width && h > 0 && h <= height {
            let top = below_or_equal(rng, height - h);
            let left = below_or_equal(rng, width - w);
            return (top, left, h, w);
        }
    }
    let ratio = width as f64 / height as f64;
    let (w, h) = if ratio < 3.0 / 4.0 {
        (width, round(width as f64 / (3.0 / 4.0)))
    } else if ratio > 4.0 / 3.0 {
        (round(height as f64 * (4.0 / 3.0)), height)
    } else {
        (width, height)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

fn crop_rect(image: &Image8, top: usize, left: usize, h: usize, w: usize) -> Image8 {
    let c = image.channels;
    let mut data = Vec::with_capacity(h * w * c);
    for y in top..top + h {
        data.extend_from_slice(
            &image.data[(y * image.width + left) * c..(y * image.width + left + w) * c],
        );
    }
    Image8 {
        width: w,
        height: h,
        channels: c,
        data,
    }
}

fn flip(image: &Image8) -> Image8 {
    let c = image.channels;
    let mut data = Vec::with_capacity(image.data.len());
    for y in 0..image.height {
        for x in (0..image.width).rev() {
            data.extend_from_slice(
                &image.data[(y * image.width + x) * c..(y * image.width + x + 1) * c],
            );
        }
    }
    Image8 {
        data,
        ..image.clone()
    }
}

impl PhotoSamples {
    /// Scans `root/<class>/*` (classes in sorted folder order, as torchvision's
    /// ImageFolder). Every image is decoded once: unreadable ones are reported with their
    /// path and left out (`skip_bad`), or end the scan with an error.
    pub fn open(root: &Path, spec: PhotoSpec, skip_bad: bool) -> Result<Self, DataError> {
        let io = |path: &Path, source| DataError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut classes: Vec<String> = std::fs::read_dir(root)
            .map_err(|e| io(root, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        classes.sort();
        if classes.is_empty() {
            return Err(DataError::NoClasses {
                dir: root.to_path_buf(),
            });
        }
        let mut files = Vec::new();
        for (label, class) in classes.iter().enumerate() {
            let dir = root.join(class);
            let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
                .map_err(|e| io(&dir, e))?
                .filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.extension()
                        .map(|x| {
                            EXTENSIONS.contains(&x.to_string_lossy().to_ascii_lowercase().as_str())
                        })
                        .unwrap_or(false)
                })
                .collect();
            names.sort();
            for path in names {
                match read_image(&path) {
                    Ok(_) => files.push((path, label)),
                    Err(e) if skip_bad => eprintln!("warning: skipping {}: {e}", path.display()),
                    Err(e) => {
                        return Err(DataError::BadImage {
                            path,
                            source: Box::new(e),
                        });
                    }
                }
            }
        }
        Ok(Self {
            files,
            classes,
            spec,
        })
    }

    fn decode(&self, i: usize) -> Result<Image8, SampleError> {
        let path = &self.files[i].0;
        read_image(path)
            .map(|image| to_rgb_pil(&image))
            .map_err(|source| SampleError::Image {
                path: path.clone(),
                source: Box::new(source),
            })
    }

    /// Checks that there is one class folder per class of a model with `classes` classes.
    pub fn check_classes(&self, root: &Path, classes: usize) -> Result<(), DataError> {
        if self.classes.len() == classes {
            Ok(())
        } else {
            Err(DataError::ClassCount {
                dir: root.to_path_buf(),
                folders: self.classes.len(),
                classes,
            })
        }
    }

    /// `(width, height)` of the resize before the crops (at least the crop size).
    fn resized_dims(&self, rgb: &Image8) -> (usize, usize) {
        let (w, h) = resized_size(rgb.width, rgb.height, self.spec.resize);
        (w.max(self.spec.crop), h.max(self.spec.crop))
    }

    /// The `crop x crop` square at `(top, left)` of the resize, computing only that square
    /// (an elongated photo's full resize could be gigabytes).
    fn resized_square(
        &self,
        rgb: &Image8,
        (w, h): (usize, usize),
        top: usize,
        left: usize,
    ) -> Image8 {
        let c = self.spec.crop;
        let region = Region {
            left,
            top,
            width: c,
            height: c,
        };
        pil_resize_bilinear_region(rgb, w, h, region)
    }

    fn eval_crop(&self, rgb: &Image8) -> Image8 {
        let dims = self.resized_dims(rgb);
        let (left, top) = center_crop_offsets(dims.0, dims.1, self.spec.crop);
        self.resized_square(rgb, dims, top, left)
    }

    fn normalize(&self, image: &Image8, mut rng: Option<&mut Mt19937>, out: &mut [f32]) {
        let n = image.width * image.height;
        for (i, px) in image.data.chunks_exact(3).enumerate() {
            for ch in 0..3 {
                let mut v = f32::from(px[ch]) / 255.0;
                if let Some(rng) = rng.as_deref_mut() {
                    v = (v + (rng.next_u32() >> 8) as f32 / 16_777_216.0 / 255.0).min(1.0);
                }
                out[ch * n + i] = (v - self.spec.mean[ch]) / self.spec.std[ch];
            }
        }
    }

    /// torchvision's `Resize(resize)` + `TenCrop(crop)`: the four corners and the center,
    /// then the same of the mirrored image; writes `10·C·H·W` values.
    pub fn write_ten_crop(&self, i: usize, out: &mut [f32]) -> Result<(), SampleError> {
        let rgb = self.decode(i)?;
        let dims = self.resized_dims(&rgb);
        let c = self.spec.crop;
        let per = 3 * c * c;
        let (rw, rh) = dims;
        for m in 0..2 {
            let (cl, ct) = center_crop_offsets(rw, rh, c);
            let corners = [(0, 0), (0, rw - c), (rh - c, 0), (rh - c, rw - c), (ct, cl)];
            for (k, (top, left)) in corners.into_iter().enumerate() {
                // The mirrored image's square at `left` is the mirror of the square at
                // `rw − left − c`.
                let piece = match m {
                    0 => self.resized_square(&rgb, dims, top, left),
                    _ => flip(&self.resized_square(&rgb, dims, top, rw - left - c)),
                };
                self.normalize(
                    &piece,
                    None,
                    &mut out[(m * 5 + k) * per..(m * 5 + k + 1) * per],
                );
            }
        }
        Ok(())
    }
}

impl Samples for PhotoSamples {
    fn len(&self) -> usize {
        self.files.len()
    }

    fn label(&self, i: usize) -> usize {
        self.files[i].1
    }

    fn shape(&self) -> [usize; 3] {
        [3, self.spec.crop, self.spec.crop]
    }

    fn write(
        &self,
        i: usize,
        rng: Option<&mut Mt19937>,
        augment: bool,
        out: &mut [f32],
    ) -> Result<(), SampleError> {
        let rgb = self.decode(i)?;
        match rng {
            Some(rng) if augment => {
                let (top, left, h, w) = random_resized_crop_params(rgb.width, rgb.height, rng);
                let piece = pil_resize_bilinear(
                    &crop_rect(&rgb, top, left, h, w),
                    self.spec.crop,
                    self.spec.crop,
                );
                let piece = if rng.next_u32() & 1 == 1 {
                    flip(&piece)
                } else {
                    piece
                };
                self.normalize(&piece, Some(rng), out);
            }
            rng => {
                let piece = self.eval_crop(&rgb);
                self.normalize(&piece, rng, out);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crop_parameters_stay_inside_the_image() {
        let mut rng = Mt19937::new(3);
        for (w, h) in [(451, 300), (300, 451), (64, 64), (1000, 20), (7, 900)] {
            for _ in 0..200 {
                let (top, left, ch, cw) = random_resized_crop_params(w, h, &mut rng);
                assert!(
                    ch > 0 && cw > 0 && top + ch <= h && left + cw <= w,
                    "{w}x{h}: {top} {left} {ch} {cw}"
                );
            }
        }
    }

    #[test]
    fn python_rounding() {
        assert_eq!(round(2.5), 2);
        assert_eq!(round(3.5), 4);
        assert_eq!(round(3.4), 3);
    }
}
