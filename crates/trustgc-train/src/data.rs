//! Labelled images and a data loader whose every epoch is reproducible.
//!
//! burn's own loader keeps one shuffling generator for its whole life, so a run resumed
//! from a checkpoint would see other batches than an uninterrupted one. [`EpochLoader`]
//! instead derives each epoch's order, dequantization noise and flips from
//! `(seed, epoch, position)`, and starts counting epochs where the checkpoint left off:
//! a resumed run sees exactly the batches the uninterrupted run would have seen.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use burn::data::dataloader::{DataLoader, DataLoaderIterator, Progress};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use trustgc_core::head::smoothed_targets;
use trustgc_core::input::GrayscaleInput;
use trustgc_core::rng::{Mt19937, permutation_from};

use crate::idx::{IdxError, read_images, read_labels};

/// Why a dataset could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// An IDX file is missing or malformed.
    #[error(transparent)]
    Idx(#[from] IdxError),
    /// No file of the expected name is in the folder.
    #[error("no {name}[.gz] in {dir}")]
    Missing {
        /// The folder searched.
        dir: PathBuf,
        /// The file name looked for.
        name: String,
    },
    /// Images and labels disagree.
    #[error("{images} images but {labels} labels")]
    Count {
        /// Number of images.
        images: usize,
        /// Number of labels.
        labels: usize,
    },
    /// A label is outside `0..classes`.
    #[error("label {label} of image {index} is not below the class count {classes}")]
    Label {
        /// Image index.
        index: usize,
        /// Its label.
        label: usize,
        /// Number of classes.
        classes: usize,
    },
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An image folder has no class folders.
    #[error("{dir} has no class folders (expected {dir}/<class>/<image>)")]
    NoClasses {
        /// The folder.
        dir: PathBuf,
    },
    /// An image could not be decoded (and bad images are not to be skipped).
    #[error("cannot use {path} (pass --skip-bad-images to leave such files out): {source}")]
    BadImage {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<trustgc::preprocess::ImageError>,
    },
    /// Images are not square.
    #[error("images are {rows}x{cols}; square images are needed")]
    NotSquare {
        /// Rows.
        rows: usize,
        /// Columns.
        cols: usize,
    },
    /// An image folder has another number of class folders than the model has classes.
    #[error("{dir} has {folders} class folders; the model has {classes} classes")]
    ClassCount {
        /// The folder.
        dir: PathBuf,
        /// Class folders found in it.
        folders: usize,
        /// Classes of the model.
        classes: usize,
    },
}

/// Why an item of a [`Samples`] could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// The item's image file cannot be read or decoded.
    #[error("cannot read {path}")]
    Image {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: Box<trustgc::preprocess::ImageError>,
    },
}

impl SampleError {
    /// Reports on stderr that the item is left out, and why.
    pub fn warn_skipped(&self) {
        match self {
            // The image error names the file and its cause.
            SampleError::Image { source, .. } => {
                eprintln!("warning: skipping an unreadable image: {source}")
            }
        }
    }
}

/// Which part of an IDX dataset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdxSplit {
    /// `train-*` (60 000 images for Fashion-MNIST).
    Train,
    /// `t10k-*` (10 000 images).
    Test,
}

/// Square grayscale images with labels, held in memory.
#[derive(Clone, Debug)]
pub struct LabeledImages {
    /// `count · side²` pixels.
    pub pixels: Arc<Vec<u8>>,
    /// One label per image.
    pub labels: Arc<Vec<u8>>,
    /// Side of each image.
    pub side: usize,
}

fn find(dir: &Path, name: &str) -> Result<PathBuf, DataError> {
    for candidate in [dir.join(name), dir.join(format!("{name}.gz"))] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(DataError::Missing {
        dir: dir.to_path_buf(),
        name: name.to_string(),
    })
}

impl LabeledImages {
    /// Reads an MNIST-style folder (`train-images-idx3-ubyte[.gz]`, ...).
    pub fn read_idx(dir: &Path, split: IdxSplit, classes: usize) -> Result<Self, DataError> {
        let prefix = match split {
            IdxSplit::Train => "train",
            IdxSplit::Test => "t10k",
        };
        let images = read_images(&find(dir, &format!("{prefix}-images-idx3-ubyte"))?)?;
        let labels = read_labels(&find(dir, &format!("{prefix}-labels-idx1-ubyte"))?)?;
        Self::new(
            images.pixels,
            labels,
            images.rows,
            images.cols,
            images.count,
            classes,
        )
    }

    /// Wraps images and labels, checking that they agree.
    pub fn new(
        pixels: Vec<u8>,
        labels: Vec<u8>,
        rows: usize,
        cols: usize,
        count: usize,
        classes: usize,
    ) -> Result<Self, DataError> {
        if rows != cols {
            return Err(DataError::NotSquare { rows, cols });
        }
        if labels.len() != count || pixels.len() != count * rows * cols {
            return Err(DataError::Count {
                images: count,
                labels: labels.len(),
            });
        }
        if let Some((index, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, l)| usize::from(**l) >= classes)
        {
            return Err(DataError::Label {
                index,
                label: label.into(),
                classes,
            });
        }
        Ok(Self {
            pixels: Arc::new(pixels),
            labels: Arc::new(labels),
            side: rows,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.side * self.side;
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Label of image `i`.
    pub fn label(&self, i: usize) -> usize {
        self.labels[i].into()
    }
}

/// A batch: inputs, labels and (smoothed) one-hot targets.
#[derive(Clone, Debug)]
pub struct GcBatch<B: Backend> {
    /// Model inputs `[batch, C, H, W]`.
    pub x: Tensor<B, 4>,
    /// Class labels.
    pub labels: Vec<usize>,
    /// Targets `[batch, classes]`.
    pub targets: Tensor<B, 2>,
}

/// How a loader turns images into batches.
#[derive(Clone, Debug)]
pub struct LoaderSettings {
    /// Images per batch (the last batch may be smaller).
    pub batch_size: usize,
    /// Shuffle with this seed (each epoch differently); `None` keeps the order.
    pub shuffle: Option<u64>,
    /// Add uniform dequantization noise `U(0, 1/255)` drawn from this seed.
    pub dequantize: Option<u64>,
    /// Draw new noise every epoch (training) or the same for every epoch (validation).
    pub noise_per_epoch: bool,
    /// Augment (random flips for grayscale data; random resized crops and flips for photos).
    /// Needs `dequantize` as the seed.
    pub flip: bool,
    /// Label smoothing ε of the targets (0 for one-hot).
    pub label_smoothing: f64,
    /// Number of classes.
    pub classes: usize,
}

/// A labelled dataset that writes its items as model inputs.
pub trait Samples: Send + Sync {
    /// Number of items.
    fn len(&self) -> usize;
    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Label of item `i`.
    fn label(&self, i: usize) -> usize;
    /// The model input shape `[C, H, W]`.
    fn shape(&self) -> [usize; 3];
    /// Writes item `i` into `out` (`C·H·W` values). With `rng` (training), adds
    /// dequantization noise and, when `augment`, draws the augmentation from it too.
    ///
    /// # Errors
    /// [`SampleError`], naming the item's file, when it cannot be read.
    fn write(
        &self,
        i: usize,
        rng: Option<&mut Mt19937>,
        augment: bool,
        out: &mut [f32],
    ) -> Result<(), SampleError>;
}

/// IDX images with the grayscale representation.
#[derive(Clone, Debug)]
pub struct GrayscaleSamples {
    /// The images.
    pub images: LabeledImages,
    /// Their representation.
    pub input: GrayscaleInput,
}

impl Samples for GrayscaleSamples {
    fn len(&self) -> usize {
        self.images.len()
    }

    fn label(&self, i: usize) -> usize {
        self.images.label(i)
    }

    fn shape(&self) -> [usize; 3] {
        self.input.model_shape()
    }

    fn write(
        &self,
        i: usize,
        rng: Option<&mut Mt19937>,
        augment: bool,
        out: &mut [f32],
    ) -> Result<(), SampleError> {
        let side = self.input.padded_size();
        match rng {
            Some(rng) => {
                // One uniform per padded pixel, then the flip: the order every trained
                // model's reproduction depends on.
                let noise: Vec<f32> = (0..side * side)
                    .map(|_| (rng.next_u32() >> 8) as f32 / 16_777_216.0)
                    .collect();
                let flip = augment && rng.next_u32() & 1 == 1;
                self.input
                    .write(self.images.image(i), Some(&noise), flip, out);
            }
            None => self.input.write(self.images.image(i), None, false, out),
        }
        Ok(())
    }
}

/// A data loader over (a subset of) some [`Samples`] with reproducible epochs.
#[derive(Clone)]
pub struct EpochLoader<B: Backend> {
    data: Arc<dyn Samples>,
    indices: Arc<Vec<usize>>,
    settings: LoaderSettings,
    epoch: Arc<AtomicUsize>,
    device: B::Device,
}

/// SplitMix64, to derive independent 32-bit seeds from tuples.
pub(crate) fn mix(values: &[u64]) -> u32 {
    let mut z: u64 = 0x9e37_79b9_7f4a_7c15;
    for &v in values {
        z = z.wrapping_add(v).wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
    }
    (z ^ (z >> 32)) as u32
}

impl<B: Backend> EpochLoader<B> {
    /// A loader over `indices` of `data`, whose first `iter()` is epoch `start_epoch`.
    pub fn new(
        data: Arc<dyn Samples>,
        indices: Vec<usize>,
        settings: LoaderSettings,
        start_epoch: usize,
        device: B::Device,
    ) -> Self {
        Self {
            data,
            indices: Arc::new(indices),
            settings,
            epoch: Arc::new(AtomicUsize::new(start_epoch)),
            device,
        }
    }

    /// The order of the items in `epoch`.
    fn order(&self, epoch: usize) -> Vec<usize> {
        match self.settings.shuffle {
            Some(seed) => {
                let mut rng = Mt19937::new(mix(&[seed, epoch as u64]));
                permutation_from(&mut rng, self.indices.len())
                    .into_iter()
                    .map(|i| self.indices[i])
                    .collect()
            }
            None => self.indices.as_ref().clone(),
        }
    }

    /// Builds the batch of `items` (dataset indices) of `epoch`. Items that cannot be read
    /// are reported on stderr with their file and left out of the batch.
    pub fn batch(&self, items: &[usize], epoch: usize) -> GcBatch<B> {
        let s = &self.settings;
        let [c, h, w] = self.data.shape();
        let per_item = c * h * w;
        let mut x = Vec::with_capacity(items.len() * per_item);
        let mut labels = Vec::with_capacity(items.len());
        let mut sample = vec![0f32; per_item];
        let noise_epoch = if s.noise_per_epoch { epoch as u64 } else { 0 };
        for &item in items {
            let mut rng = s
                .dequantize
                .map(|seed| Mt19937::new(mix(&[seed, noise_epoch, item as u64])));
            match self.data.write(item, rng.as_mut(), s.flip, &mut sample) {
                Ok(()) => {
                    x.extend_from_slice(&sample);
                    labels.push(self.data.label(item));
                }
                Err(error) => error.warn_skipped(),
            }
        }
        let n = labels.len();
        let x = Tensor::from_data(TensorData::new(x, [n, c, h, w]), &self.device);
        let targets = smoothed_targets(&labels, s.classes, s.label_smoothing, &self.device);
        GcBatch { x, labels, targets }
    }

    /// The next epoch this loader will produce.
    pub fn next_epoch(&self) -> usize {
        self.epoch.load(Ordering::SeqCst)
    }
}

struct EpochIter<'a, B: Backend> {
    loader: &'a EpochLoader<B>,
    order: Vec<usize>,
    epoch: usize,
    position: usize,
}

impl<B: Backend> Iterator for EpochIter<'_, B> {
    type Item = GcBatch<B>;

    fn next(&mut self) -> Option<GcBatch<B>> {
        if self.position >= self.order.len() {
            return None;
        }
        let end = (self.position + self.loader.settings.batch_size).min(self.order.len());
        let batch = self
            .loader
            .batch(&self.order[self.position..end], self.epoch);
        self.position = end;
        Some(batch)
    }
}

impl<B: Backend> DataLoaderIterator<GcBatch<B>> for EpochIter<'_, B> {
    fn progress(&self) -> Progress {
        Progress::new(self.position, self.order.len())
    }
}

impl<B: Backend> DataLoader<B, GcBatch<B>> for EpochLoader<B> {
    fn iter<'a>(&'a self) -> Box<dyn DataLoaderIterator<GcBatch<B>> + 'a> {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst);
        Box::new(EpochIter {
            loader: self,
            order: self.order(epoch),
            epoch,
            position: 0,
        })
    }

    fn num_items(&self) -> usize {
        self.indices.len()
    }

    fn to_device(&self, device: &B::Device) -> Arc<dyn DataLoader<B, GcBatch<B>>> {
        let mut loader = self.clone();
        loader.device = device.clone();
        Arc::new(loader)
    }

    fn slice(&self, start: usize, end: usize) -> Arc<dyn DataLoader<B, GcBatch<B>>> {
        let mut loader = self.clone();
        loader.indices = Arc::new(self.indices[start..end.min(self.indices.len())].to_vec());
        Arc::new(loader)
    }
}
