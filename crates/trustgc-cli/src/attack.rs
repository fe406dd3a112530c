//! `trustgc attack`: FGSM, PGD and the adaptive PGD against a model's posterior
//! ([`trustgc::robustness::attack`]); accuracy under attack, how many attacked images the
//! verdict flags, and AUROC clean vs attacked for every OoD score.
//!
//! Also the labelled and unlabelled image sets of `attack` and `trust-report`: IDX files
//! (a folder with `t10k-*`/`train-*` files, read by `trustgc_train::idx`) or folders of
//! class folders (`DIR/<class>/*.png|jpg`, classes named as the model names them, or in
//! sorted order as torchvision's ImageFolder when the names differ).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use trustgc::Classifier;
use trustgc::preprocess::{Image8, read_image};
use trustgc::robustness::attack::{
    AttackKind, AttackResult, AttackSettings, Attacker, DEFAULT_ADAPTIVE_STEPS, DEFAULT_STEPS,
    run_attack,
};
use trustgc::robustness::{SetSummary, evaluate, summarize};
use trustgc::scores::{OodScores, model_pixels};
use trustgc_backend::{AutodiffTask, run_on_autodiff};

use crate::model_dir;

type BoxError = Box<dyn std::error::Error>;

/// Why a set of images could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SetError {
    /// The path is neither an IDX file, a folder of IDX files nor a folder of images.
    #[error("{path} holds no {split} IDX files and no PNG or JPEG images")]
    Nothing {
        /// The path.
        path: PathBuf,
        /// The split looked for.
        split: String,
    },
    /// A folder could not be listed.
    #[error("cannot list {path}")]
    List {
        /// The folder.
        path: PathBuf,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// An IDX file could not be read.
    #[error(transparent)]
    Idx(#[from] trustgc_train::idx::IdxError),
    /// An image could not be read or converted to the model's pixels.
    #[error("{path}")]
    Image {
        /// The image.
        path: PathBuf,
        /// What went wrong.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Class folders that are not one per class of the model.
    #[error("{path} has {folders} class folders; the model has {classes} classes")]
    Classes {
        /// The folder.
        path: PathBuf,
        /// Its class folders.
        folders: usize,
        /// The model's classes.
        classes: usize,
    },
    /// An IDX images file without its labels file.
    #[error(
        "{path}: labelled data needs the labels file beside the images (`{split}-labels-idx1-ubyte[.gz]`)"
    )]
    NoLabels {
        /// The folder.
        path: PathBuf,
        /// The split.
        split: String,
    },
    /// Images and labels of different counts.
    #[error("{path}: {images} images but {labels} labels")]
    Count {
        /// The folder.
        path: PathBuf,
        /// Images.
        images: usize,
        /// Labels.
        labels: usize,
    },
    /// The model has no input representation.
    #[error("the model has no input representation: it cannot take images")]
    NoInputSpec,
    /// `--split` other than `test` or `train`.
    #[error("--split {split}: use `test` or `train`")]
    Split {
        /// What was given.
        split: String,
    },
}

/// Images in the model's pixel space (`model_pixels`), with labels when known.
pub struct ImageSet {
    /// The images.
    pub images: Vec<Image8>,
    /// Their labels (empty for an unlabelled set).
    pub labels: Vec<usize>,
    /// Where they came from, in words.
    pub source: String,
}

impl ImageSet {
    /// Images `start..end` only.
    pub fn range(mut self, start: usize, end: usize) -> Self {
        let end = end.min(self.images.len());
        let start = start.min(end);
        self.images = self.images[start..end].to_vec();
        if !self.labels.is_empty() {
            self.labels = self.labels[start..end].to_vec();
        }
        self.source = format!("{}, images {start}..{end}", self.source);
        self
    }
}

fn prefix(split: &str) -> Result<&'static str, SetError> {
    match split {
        "test" => Ok("t10k"),
        "train" => Ok("train"),
        other => Err(SetError::Split {
            split: other.to_string(),
        }),
    }
}

fn idx_file(dir: &Path, prefix: &str, kind: &str) -> Option<PathBuf> {
    ["", ".gz"]
        .into_iter()
        .map(|ext| dir.join(format!("{prefix}-{kind}{ext}")))
        .find(|p| p.is_file())
}

/// The images of an IDX file as 8-bit images, converted to the model's pixels.
fn idx_images(
    path: &Path,
    spec: &trustgc::core::input::InputSpec,
) -> Result<Vec<Image8>, SetError> {
    let idx = trustgc_train::idx::read_images(path)?;
    let n = idx.rows * idx.cols;
    (0..idx.count)
        .map(|i| {
            let image = trustgc::image::GrayImage::from_raw(
                idx.cols as u32,
                idx.rows as u32,
                idx.pixels[i * n..(i + 1) * n].to_vec(),
            )
            .map(trustgc::image::DynamicImage::ImageLuma8);
            let image = image.ok_or_else(|| SetError::Image {
                path: path.to_path_buf(),
                source: "an IDX image of inconsistent size".into(),
            })?;
            model_pixels(&image, spec).map_err(|e| SetError::Image {
                path: path.to_path_buf(),
                source: Box::new(e),
            })
        })
        .collect()
}

const EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

/// Image files directly in `dir` (or under it, with `recursive`; links to folders are not
/// followed), sorted. A folder or entry that cannot be read is an error, never skipped.
pub(crate) fn image_files(dir: &Path, recursive: bool) -> Result<Vec<PathBuf>, SetError> {
    let unreadable = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SetError::List { path, source }
    };
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(unreadable(&dir))? {
            let entry = entry.map_err(unreadable(&dir))?;
            let path = entry.path();
            let is_dir = entry.file_type().map_err(unreadable(&path))?.is_dir();
            if is_dir && recursive {
                stack.push(path);
            } else if path
                .extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

fn read_pixels(path: &Path, spec: &trustgc::core::input::InputSpec) -> Result<Image8, SetError> {
    let image = read_image(path).map_err(|e| SetError::Image {
        path: path.to_path_buf(),
        source: Box::new(e),
    })?;
    model_pixels(&image, spec).map_err(|e| SetError::Image {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// A labelled set: a folder of IDX files of `split`, or a folder of class folders.
pub fn open_labelled<B: burn::tensor::backend::Backend>(
    path: &Path,
    split: &str,
    classifier: &Classifier<B>,
) -> Result<ImageSet, SetError> {
    let config = classifier.config();
    let spec = config.input.as_ref().ok_or(SetError::NoInputSpec)?;
    let prefix = prefix(split)?;
    if let Some(file) = idx_file(path, prefix, "images-idx3-ubyte") {
        let images = idx_images(&file, spec)?;
        let labels_file =
            idx_file(path, prefix, "labels-idx1-ubyte").ok_or_else(|| SetError::NoLabels {
                path: path.to_path_buf(),
                split: prefix.to_string(),
            })?;
        let labels: Vec<usize> = trustgc_train::idx::read_labels(&labels_file)?
            .into_iter()
            .map(usize::from)
            .collect();
        if labels.len() != images.len() {
            return Err(SetError::Count {
                path: path.to_path_buf(),
                images: images.len(),
                labels: labels.len(),
            });
        }
        return Ok(ImageSet {
            images,
            labels,
            source: format!("{split} split of {}", path.display()),
        });
    }
    let unreadable = |source| SetError::List {
        path: path.to_path_buf(),
        source,
    };
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(path).map_err(unreadable)? {
        let entry = entry.map_err(unreadable)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Hidden folders (`.git`, `.ipynb_checkpoints`) are not classes.
        if entry.file_type().map_err(unreadable)?.is_dir() && !name.starts_with('.') {
            folders.push(name);
        }
    }
    folders.sort();
    if folders.is_empty() {
        return Err(SetError::Nothing {
            path: path.to_path_buf(),
            split: split.to_string(),
        });
    }
    if folders.len() != config.n_classes {
        return Err(SetError::Classes {
            path: path.to_path_buf(),
            folders: folders.len(),
            classes: config.n_classes,
        });
    }
    // Folders named as the model's classes map by name; otherwise in sorted order.
    let by_name = folders
        .iter()
        .all(|f| config.class_names.iter().any(|n| n == f));
    let mut set = ImageSet {
        images: Vec::new(),
        labels: Vec::new(),
        source: format!("class folders of {}", path.display()),
    };
    let mut classes = Vec::with_capacity(folders.len());
    for (index, folder) in folders.iter().enumerate() {
        let label = if by_name {
            config
                .class_names
                .iter()
                .position(|n| n == folder)
                .unwrap_or(index)
        } else {
            index
        };
        classes.push((label, image_files(&path.join(folder), false)?));
    }
    // Round robin over the classes (the first image of each class, then the second, …):
    // the first N images, as `--skip`, `--limit` and `--attack-limit` take them, hold
    // every class in proportion instead of the first classes only.
    let longest = classes.iter().map(|(_, files)| files.len()).max();
    for rank in 0..longest.unwrap_or(0) {
        for (label, files) in &classes {
            if let Some(file) = files.get(rank) {
                set.images.push(read_pixels(file, spec)?);
                set.labels.push(*label);
            }
        }
    }
    Ok(set)
}

/// An unlabelled set: an IDX images file, a folder with IDX files of `split`, or a folder
/// of images (searched recursively).
pub fn open_unlabelled<B: burn::tensor::backend::Backend>(
    path: &Path,
    split: &str,
    classifier: &Classifier<B>,
) -> Result<ImageSet, SetError> {
    let spec = classifier
        .config()
        .input
        .as_ref()
        .ok_or(SetError::NoInputSpec)?;
    let prefix = prefix(split)?;
    let file = if path.is_file() {
        Some(path.to_path_buf())
    } else {
        idx_file(path, prefix, "images-idx3-ubyte")
    };
    let images = match file {
        Some(file) => idx_images(&file, spec)?,
        None => image_files(path, true)?
            .iter()
            .map(|f| read_pixels(f, spec))
            .collect::<Result<Vec<_>, _>>()?,
    };
    if images.is_empty() {
        return Err(SetError::Nothing {
            path: path.to_path_buf(),
            split: split.to_string(),
        });
    }
    Ok(ImageSet {
        images,
        labels: Vec::new(),
        source: path.display().to_string(),
    })
}

/// A progress bar on a terminal (none otherwise).
pub fn progress(len: usize, message: &str) -> Option<ProgressBar> {
    std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(len as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg:28} {bar:30} {pos}/{len} {elapsed} (eta {eta})")
                .expect("a valid template"),
        );
        bar.set_message(message.to_string());
        bar
    })
}

/// Parses `1,2,4,8` (8-bit levels).
pub(crate) fn parse_levels(text: &str) -> Result<Vec<f64>, String> {
    text.split(',')
        .map(|t| {
            let v: f64 = t
                .trim()
                .parse()
                .map_err(|_| format!("`{t}` is not a number of 8-bit levels"))?;
            if v.is_finite() && v > 0.0 && v <= 255.0 {
                Ok(v)
            } else {
                Err(format!("ε = {v}/255: give levels in (0, 255]"))
            }
        })
        .collect()
}

/// The model and the labelled images of `trustgc attack` and `trustgc trust-report`.
#[derive(Args, Debug)]
pub struct LabelledArgs {
    /// A shipped model's name, a model folder, or a released model on the hub.
    #[arg(long, default_value = model_dir::DEFAULT_MODEL)]
    pub model: String,
    /// Labelled images: a folder of IDX files (`t10k-*` / `train-*`) or of class folders.
    #[arg(long)]
    pub data: PathBuf,
    /// With IDX files: `test` (t10k-*) or `train`.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Skip this many images first (e.g. those `ood.json` was fitted on).
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// Use at most this many images (after `--skip`).
    #[arg(long)]
    pub limit: Option<usize>,
}

impl LabelledArgs {
    /// The images `--data`, `--split`, `--skip` and `--limit` name.
    pub fn open<B: burn::tensor::backend::Backend>(
        &self,
        classifier: &Classifier<B>,
    ) -> Result<ImageSet, SetError> {
        let set = open_labelled(&self.data, &self.split, classifier)?;
        let end = self
            .limit
            .map_or(set.images.len(), |l| self.skip.saturating_add(l));
        Ok(set.range(self.skip, end))
    }
}

/// `trustgc attack`.
#[derive(Args, Debug)]
pub struct AttackArgs {
    /// The model and the images to attack.
    #[command(flatten)]
    pub set: LabelledArgs,
    /// Budgets ε in 8-bit levels (ε = e/255), comma-separated.
    #[arg(long, default_value = "1,2,4,8", value_parser = parse_levels)]
    pub eps: std::vec::Vec<f64>,
    /// Also run the adaptive attack (PGD that keeps log p(x) and the class test typical).
    #[arg(long)]
    pub adaptive: bool,
    /// PGD steps (step size 2.5 ε / steps).
    #[arg(long, default_value_t = DEFAULT_STEPS)]
    pub steps: usize,
    /// Adaptive PGD steps (step size 2.5 ε / steps).
    #[arg(long, default_value_t = DEFAULT_ADAPTIVE_STEPS)]
    pub adaptive_steps: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N` (default: $BURN_DEVICE, else cpu).
    #[arg(long)]
    pub device: Option<String>,
}

/// Every attack's outcome on one set, with the clean baseline.
#[derive(Debug, Serialize)]
pub struct AttackReport {
    /// Where the images came from.
    pub source: String,
    /// Images attacked.
    pub images: usize,
    /// The clean images' summary.
    pub clean: SetSummary,
    /// One entry per attack and budget.
    pub attacks: Vec<TimedAttack>,
}

/// An attack's result and its time.
#[derive(Debug, Serialize)]
pub struct TimedAttack {
    /// The result.
    #[serde(flatten)]
    pub result: AttackResult,
    /// Wall-clock seconds (attack and evaluation).
    pub seconds: f64,
}

/// The attacks of a run: FGSM and PGD at every budget, then adaptive PGD (if asked).
pub fn plan(levels: &[f64], steps: usize, adaptive: Option<usize>) -> Vec<AttackSettings> {
    let mut out = Vec::new();
    for &e in levels {
        out.push(AttackSettings::fgsm(e));
        out.push(AttackSettings::pgd_steps(AttackKind::Pgd, e, steps));
    }
    if let Some(steps) = adaptive {
        for &e in levels {
            out.push(AttackSettings::pgd_steps(AttackKind::AdaptivePgd, e, steps));
        }
    }
    out
}

/// Runs `attacks` on a labelled set: the attacker on the autodiff backend, the
/// evaluation on its inner backend.
pub fn run_attacks<B: burn::tensor::backend::AutodiffBackend>(
    model: &str,
    device: &B::Device,
    set: &ImageSet,
    attacks: &[AttackSettings],
    batch: usize,
) -> Result<AttackReport, BoxError> {
    let resolved = model_dir::resolve(model)?;
    let classifier: Classifier<B> = resolved.classifier(device)?;
    let evaluator: Classifier<B::InnerBackend> = resolved.classifier(device)?;
    let attacker = Attacker::new(&classifier)?;
    trustgc::robustness::check_labels(
        set.images.len(),
        &set.labels,
        classifier.config().n_classes,
    )?;
    let (clean_results, clean_scores): (_, Vec<OodScores>) =
        evaluate(&evaluator, &set.images, batch)?;
    let clean = summarize(&clean_results, &set.labels)?;
    let mut out = Vec::new();
    for settings in attacks {
        let name = format!("{} ε={}/255", settings.kind, settings.levels());
        let bar = progress(set.images.len(), &name);
        let started = Instant::now();
        let result = run_attack(
            &attacker,
            &evaluator,
            &set.images,
            &set.labels,
            &clean_scores,
            settings,
            batch,
            &mut |done| {
                if let Some(bar) = &bar {
                    bar.set_position(done as u64);
                }
            },
        )?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let seconds = started.elapsed().as_secs_f64();
        eprintln!(
            "{name}: accuracy {:.2} %, flagged {}, {:.1} s",
            100.0 * result.summary.accuracy,
            percent(result.summary.flag_rate),
            seconds
        );
        out.push(TimedAttack { result, seconds });
    }
    Ok(AttackReport {
        source: set.source.clone(),
        images: set.images.len(),
        clean,
        attacks: out,
    })
}

/// `x.xx %` or `-`.
pub fn percent(v: Option<f64>) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{:.2} %", 100.0 * v))
}

struct AttackTask {
    args: AttackArgs,
}

impl AutodiffTask for AttackTask {
    type Output = Result<AttackReport, BoxError>;

    fn run<B: burn::tensor::backend::AutodiffBackend>(
        self,
        devices: Vec<B::Device>,
    ) -> Self::Output {
        let args = self.args;
        let device = devices[0].clone();
        let opener: Classifier<B::InnerBackend> =
            model_dir::resolve(&args.set.model)?.classifier(&device)?;
        let set = args.set.open(&opener)?;
        let attacks = plan(
            &args.eps,
            args.steps,
            args.adaptive.then_some(args.adaptive_steps),
        );
        run_attacks::<B>(&args.set.model, &device, &set, &attacks, args.batch)
    }
}

/// Prints the attack table.
pub fn print_table(report: &AttackReport) {
    println!(
        "{} images ({}); clean: accuracy {:.2} %, flagged {}",
        report.images,
        report.source,
        100.0 * report.clean.accuracy,
        percent(report.clean.flag_rate)
    );
    println!(
        "{:<13} {:>6} {:>6} {:>10} {:>10} {:>12} {:>9} {:>18} {:>8}",
        "attack",
        "ε·255",
        "steps",
        "accuracy",
        "flagged",
        "undetected",
        "ECE",
        "best AUROC",
        "seconds"
    );
    for a in &report.attacks {
        let r = &a.result;
        println!(
            "{:<13} {:>6} {:>6} {:>9.2}% {:>10} {:>12} {:>9} {:>18} {:>8.1}",
            r.settings.kind.name(),
            r.settings.levels(),
            r.settings.steps,
            100.0 * r.summary.accuracy,
            percent(r.summary.flag_rate),
            percent(r.summary.undetected_errors),
            r.summary
                .calibration
                .as_ref()
                .map_or_else(|| "-".into(), |c| format!("{:.4}", c.ece)),
            format!("{:.3} ({})", r.detection.best_auroc, r.detection.best),
            a.seconds
        );
    }
    println!(
        "flagged: the verdict calls the image out of distribution; undetected: misclassified and not flagged; best AUROC: clean (positive) vs attacked, the best OoD score chosen on these images"
    );
}

/// `trustgc attack`.
pub fn attack(args: AttackArgs) -> Result<(), BoxError> {
    let spec = crate::device(&args.device)?;
    let json = args.json;
    let started = Instant::now();
    let report = run_on_autodiff(&[spec], AttackTask { args })??;
    if json {
        let mut value = serde_json::to_value(&report)?;
        value["seconds"] = serde_json::json!(started.elapsed().as_secs_f64());
        println!("{value}");
    } else {
        print_table(&report);
        println!("total {:.1} s", started.elapsed().as_secs_f64());
    }
    Ok(())
}
