//! `trustgc ood-eval`: how well each out-of-distribution score separates in-distribution
//! images from other sets.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use trustgc::image::{DynamicImage, GrayImage};
use trustgc::metrics::{
    Bootstrap, DetectionReport, calibration_report, detection_report, roc_curve,
};
use trustgc::preprocess::read_image;
use trustgc::scores::{OodScores, ScoreKind, model_pixels, png_bits};
use trustgc::{Classifier, Verdict};
use trustgc_backend::{BackendTask, run_on};

use crate::model_dir;

type BoxError = Box<dyn std::error::Error>;

/// `trustgc ood-eval`.
#[derive(Args, Debug)]
pub struct OodEvalArgs {
    /// A shipped model's name, a model folder, or a released model on the hub.
    #[arg(long, default_value = model_dir::DEFAULT_MODEL)]
    pub model: String,
    /// In-distribution images: a folder of IDX files (`t10k-*` / `train-*`), an IDX
    /// images file, or a folder of PNG/JPEG images (searched recursively).
    #[arg(long = "in")]
    pub in_set: PathBuf,
    /// With an IDX folder: `test` (t10k-*) or `train`.
    #[arg(long, default_value = "test")]
    pub split: String,
    /// Skip this many in-distribution images first (e.g. those `ood.json` was fitted on).
    #[arg(long, default_value_t = 0)]
    pub skip: usize,
    /// Use at most this many images of each set.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Out-of-distribution sets, `NAME=PATH` (same kinds of PATH as `--in`); repeatable.
    #[arg(long = "ood", value_parser = parse_named, required = true)]
    pub ood: Vec<(String, PathBuf)>,
    /// Images per batch.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Write every image's scores here, one JSON object per line.
    #[arg(long)]
    pub scores: Option<PathBuf>,
    /// Bootstrap resamples for the 95 % intervals (0: none).
    #[arg(long, default_value_t = 200)]
    pub bootstrap: usize,
    /// Write pictures into this folder: `roc-<set>.png` (every score's ROC curve against
    /// each OoD set) and `reliability.png` (the in-distribution set's calibration).
    #[arg(long)]
    pub plots: Option<PathBuf>,
    /// Print one JSON object (every metric) instead of tables.
    #[arg(long)]
    pub json: bool,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N` (default: $BURN_DEVICE, else cpu).
    #[arg(long)]
    pub device: Option<String>,
}

/// A `NAME=PATH` value of `--ood` (shared with `trust-report`).
pub(crate) fn parse_named(text: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = text
        .split_once('=')
        .ok_or_else(|| format!("`{text}`: give NAME=PATH"))?;
    if name.is_empty() || path.is_empty() {
        return Err(format!("`{text}`: give NAME=PATH, both non-empty"));
    }
    Ok((name.to_string(), PathBuf::from(path)))
}

/// Where a set's images come from.
enum Source {
    /// Grayscale images of an IDX file, with their labels when the folder has them.
    Idx(trustgc_train::idx::IdxImages, Option<Vec<u8>>),
    /// Image files.
    Files(Vec<PathBuf>),
}

impl Source {
    fn len(&self) -> usize {
        match self {
            Source::Idx(idx, _) => idx.count,
            Source::Files(files) => files.len(),
        }
    }

    /// Image `i`, decoded.
    fn image(&self, i: usize) -> Result<DynamicImage, BoxError> {
        match self {
            Source::Idx(idx, _) => {
                let n = idx.rows * idx.cols;
                luma_image(idx.cols, idx.rows, &idx.pixels[i * n..(i + 1) * n])
            }
            Source::Files(files) => Ok(read_image(&files[i])?),
        }
    }

    /// The label of image `i`, when known.
    fn label(&self, i: usize) -> Option<usize> {
        match self {
            Source::Idx(_, Some(labels)) => labels.get(i).map(|&l| usize::from(l)),
            _ => None,
        }
    }

    fn name_of(&self, i: usize) -> String {
        match self {
            Source::Idx(..) => format!("#{i}"),
            Source::Files(files) => files[i].display().to_string(),
        }
    }
}

/// Opens `path` as a set: an IDX images file, a folder of IDX files, or a folder of
/// images.
fn open_set(path: &Path, split: &str) -> Result<Source, BoxError> {
    let prefix = match split {
        "train" => "train",
        _ => "t10k",
    };
    let idx_in = |dir: &Path, kind: &str| -> Option<PathBuf> {
        ["", ".gz"]
            .into_iter()
            .map(|ext| dir.join(format!("{prefix}-{kind}{ext}")))
            .find(|p| p.is_file())
    };
    if path.is_dir() {
        if let Some(file) = idx_in(path, "images-idx3-ubyte") {
            let images = trustgc_train::idx::read_images(&file)?;
            let labels = idx_in(path, "labels-idx1-ubyte")
                .map(|f| trustgc_train::idx::read_labels(&f))
                .transpose()?;
            return Ok(Source::Idx(images, labels));
        }
        let files = crate::attack::image_files(path, true)?;
        if files.is_empty() {
            return Err(format!(
                "{} holds no PNG or JPEG images and no {split} IDX file",
                path.display()
            )
            .into());
        }
        return Ok(Source::Files(files));
    }
    Ok(Source::Idx(trustgc_train::idx::read_images(path)?, None))
}

/// One set's per-image scores (images that could not be read are counted, not scored).
struct Scored {
    name: String,
    scores: Vec<OodScores>,
    verdicts: Vec<Option<Verdict>>,
    /// Posteriors and labels of the images whose label is known.
    posteriors: Vec<f64>,
    labels: Vec<usize>,
    skipped: usize,
}

struct OodEvalTask {
    args: OodEvalArgs,
}

fn progress(len: usize, name: &str) -> Option<ProgressBar> {
    (std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new(len as u64);
        bar.set_style(
            ProgressStyle::with_template("{msg:12} {bar:40} {pos}/{len} {eta}")
                .expect("a valid template"),
        );
        bar.set_message(name.to_string());
        bar
    })
}

fn score_set<B: burn::tensor::backend::Backend>(
    classifier: &Classifier<B>,
    name: &str,
    source: &Source,
    range: std::ops::Range<usize>,
    batch: usize,
) -> Result<Scored, BoxError> {
    let spec = classifier
        .config()
        .input
        .clone()
        .ok_or("the model has no input representation")?;
    let dims = classifier.config().total_dims();
    let ood = classifier.ood();
    let bar = progress(range.len(), name);
    let mut out = Scored {
        name: name.to_string(),
        scores: Vec::with_capacity(range.len()),
        verdicts: Vec::with_capacity(range.len()),
        posteriors: Vec::new(),
        labels: Vec::new(),
        skipped: 0,
    };
    // With a complexity test in its statistics the classifier encodes each image's PNG
    // itself (`Likelihoods::complexity`); otherwise it is done here, once.
    let own_png = ood.is_none_or(|o| o.complexity_low.is_none());
    let indices: Vec<usize> = range.collect();
    for chunk in indices.chunks(batch.max(1)) {
        let mut images = Vec::with_capacity(chunk.len());
        let mut bits = Vec::with_capacity(chunk.len());
        let mut labels = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let image = source.image(i).and_then(|image| {
                let pixels = model_pixels(&image, &spec)
                    .map_err(|e| format!("{}: {e}", source.name_of(i)))?;
                Ok((image, own_png.then(|| png_bits(&pixels))))
            });
            match image {
                Ok((image, b)) => {
                    images.push(image);
                    bits.push(b);
                    labels.push(source.label(i));
                }
                Err(e) => {
                    out.skipped += 1;
                    let report = || eprintln!("warning: {name}: skipped: {e}");
                    match &bar {
                        Some(bar) => bar.suspend(report),
                        None => report(),
                    }
                }
            }
        }
        let results = classifier.likelihoods_batch(&images)?;
        for ((result, b), label) in results.iter().zip(bits).zip(labels) {
            out.scores.push(OodScores::new(result, dims, b, ood));
            out.verdicts.push(result.verdict.clone());
            if let Some(label) = label {
                out.posteriors
                    .extend(result.log_posterior.iter().map(|l| l.exp()));
                out.labels.push(label);
            }
        }
        if let Some(bar) = &bar {
            bar.inc(chunk.len() as u64);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if out.scores.is_empty() {
        return Err(format!("{name}: none of its images could be scored").into());
    }
    Ok(out)
}

impl BackendTask for OodEvalTask {
    type Output = Result<Vec<Scored>, BoxError>;

    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let classifier: Classifier<B> = model_dir::resolve(&args.model)?.classifier(&device)?;
        let mut sets = Vec::new();
        let in_source = open_set(&args.in_set, &args.split)?;
        let start = args.skip.min(in_source.len());
        let end = args
            .limit
            .map_or(in_source.len(), |l| (start + l).min(in_source.len()));
        sets.push(score_set(
            &classifier,
            "in",
            &in_source,
            start..end,
            args.batch,
        )?);
        for (name, path) in &args.ood {
            let source = open_set(path, &args.split)?;
            let end = args.limit.map_or(source.len(), |l| l.min(source.len()));
            sets.push(score_set(&classifier, name, &source, 0..end, args.batch)?);
        }
        Ok(sets)
    }
}

/// The fraction of a set that the verdict calls out of distribution, with a 95 % Wilson
/// interval; `None` without OoD statistics.
fn flag_rate(set: &Scored) -> Option<(f64, f64, f64)> {
    if set.verdicts.iter().any(Option::is_none) {
        return None;
    }
    let n = set.verdicts.len() as f64;
    let k = set
        .verdicts
        .iter()
        .filter(|v| matches!(v, Some(Verdict::OutOfDistribution { .. })))
        .count() as f64;
    let p = k / n;
    let z = 1.959_963_984_540_054_f64;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    Some((p, (centre - half).max(0.0), (centre + half).min(1.0)))
}

/// Every score's detection metrics for one OoD set against the in-distribution set.
fn detection(
    in_set: &Scored,
    out_set: &Scored,
    bootstrap: Option<Bootstrap>,
) -> Result<Vec<(ScoreKind, DetectionReport)>, BoxError> {
    let mut out = Vec::new();
    for kind in ScoreKind::ALL {
        let values =
            |set: &Scored| -> Option<Vec<f64>> { set.scores.iter().map(|s| s.get(kind)).collect() };
        let (Some(a), Some(b)) = (values(in_set), values(out_set)) else {
            continue;
        };
        // A set of one image has no bootstrap interval (the report's `ci` is null).
        let bootstrap = bootstrap.filter(|_| a.len() >= 2 && b.len() >= 2);
        let report = detection_report(&a, &b, bootstrap)
            .map_err(|e| format!("{} vs {}, score {kind}: {e}", in_set.name, out_set.name))?;
        out.push((kind, report));
    }
    Ok(out)
}

fn interval(
    report: &DetectionReport,
    pick: impl Fn(&trustgc::metrics::DetectionIntervals) -> trustgc::metrics::Interval,
) -> String {
    report
        .ci
        .as_ref()
        .map(|ci| {
            let i = pick(ci);
            format!(" [{:.3}, {:.3}]", i.low, i.high)
        })
        .unwrap_or_default()
}

/// `trustgc ood-eval`.
pub fn ood_eval(args: OodEvalArgs) -> Result<(), BoxError> {
    let spec = crate::device(&args.device)?;
    let scores_path = args.scores.clone();
    let (json, resamples, model) = (args.json, args.bootstrap, args.model.clone());
    let plots = args.plots.clone();
    // The sets' files, which no output may replace.
    let mut inputs: Vec<PathBuf> = Vec::new();
    for path in std::iter::once(&args.in_set).chain(args.ood.iter().map(|(_, p)| p)) {
        inputs.push(path.clone());
        if let Ok(entries) = std::fs::read_dir(path) {
            inputs.extend(entries.flatten().map(|e| e.path()));
        }
    }
    if let Some(path) = &args.scores {
        let refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        trustgc_io::check_target(path, &refs)?;
    }
    let sets = run_on(&spec, OodEvalTask { args })??;
    if let Some(path) = scores_path {
        let mut text = String::new();
        for set in &sets {
            for (scores, verdict) in set.scores.iter().zip(&set.verdicts) {
                let mut value = serde_json::to_value(scores)?;
                value["set"] = serde_json::json!(set.name);
                value["verdict"] = serde_json::to_value(verdict)?;
                text.push_str(&value.to_string());
                text.push('\n');
            }
        }
        let refs: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
        trustgc_io::write_file(&path, &refs, text.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    let bootstrap = (resamples > 0).then_some(Bootstrap { resamples, seed: 0 });
    let in_set = &sets[0];
    let calibration = (!in_set.labels.is_empty())
        .then(|| {
            let k = in_set.posteriors.len() / in_set.labels.len();
            calibration_report(&in_set.posteriors, k, &in_set.labels)
        })
        .transpose()?;
    let mut reports = Vec::new();
    for set in &sets[1..] {
        reports.push((set, detection(in_set, set, bootstrap)?));
    }
    if let Some(dir) = &plots {
        std::fs::create_dir_all(dir).map_err(trustgc_io::WriteError::io(dir))?;
        for (set, report) in &reports {
            let mut curves = Vec::new();
            for (kind, r) in report {
                let values = |s: &Scored| -> Vec<f64> {
                    s.scores.iter().filter_map(|x| x.get(*kind)).collect()
                };
                let points = roc_curve(&values(in_set), &values(set))?;
                curves.push((kind.name().to_string(), r.auroc, points));
            }
            let path = dir.join(format!("roc-{}.png", file_stem(&set.name)));
            let title = format!("ROC: {} against {}", in_set_label(&model), set.name);
            crate::plots::roc_png(&path, &title, &curves)?;
            eprintln!("wrote {}", path.display());
        }
        if let Some(c) = &calibration {
            let path = dir.join("reliability.png");
            let title = format!("Reliability of {} on the in-distribution set", model);
            crate::plots::reliability_png(&path, &title, c, None)?;
            eprintln!("wrote {}", path.display());
        }
    }
    if json {
        let sets_json: Vec<serde_json::Value> = sets
            .iter()
            .map(|set| {
                let rate = flag_rate(set);
                let scores = reports
                    .iter()
                    .find(|(s, _)| std::ptr::eq(*s, set))
                    .map(|(_, r)| {
                        r.iter()
                            .map(|(k, rep)| (k.name().to_string(), serde_json::json!(rep)))
                            .collect::<serde_json::Map<_, _>>()
                    });
                serde_json::json!({
                    "name": set.name,
                    "images": set.scores.len(),
                    "skipped": set.skipped,
                    "verdict_ood_rate": rate.map(|r| r.0),
                    "verdict_ood_rate_ci95": rate.map(|r| [r.1, r.2]),
                    "detection": scores,
                })
            })
            .collect();
        let value = serde_json::json!({
            "model": model,
            "convention": "scores: higher = more in-distribution; AUPR-in takes the in-distribution set as positive, AUPR-out the OoD set; FPR at 95 % TPR = fraction of the OoD set accepted when 95 % of the in-distribution set is",
            "bootstrap_resamples": resamples,
            "calibration": calibration,
            "sets": sets_json,
        });
        println!("{value}");
        return Ok(());
    }
    println!(
        "in-distribution: {} images ({} skipped); verdict 'out of distribution' (false alarms): {}",
        in_set.scores.len(),
        in_set.skipped,
        flag_rate(in_set)
            .map(|(p, lo, hi)| format!("{:.2} % [{:.2}, {:.2}]", 100.0 * p, 100.0 * lo, 100.0 * hi))
            .unwrap_or_else(|| "- (no ood.json)".into())
    );
    if let Some(c) = &calibration {
        println!(
            "calibration on it: accuracy {:.2} %, ECE {:.4} (15 bins), adaptive ECE {:.4}, MCE {:.4}, classwise ECE {:.4}, NLL {:.4}, Brier {:.4}",
            100.0 * c.accuracy,
            c.ece,
            c.adaptive_ece,
            c.mce,
            c.classwise_ece,
            c.nll,
            c.brier
        );
    }
    println!(
        "scores: higher = more in-distribution; AUPR-in: the in-distribution set positive, AUPR-out: the OoD set positive; FPR@95%TPR: the fraction of the OoD set accepted when 95 % of the in-distribution set is; [95 % bootstrap intervals, {resamples} resamples]"
    );
    for (set, report) in &reports {
        println!();
        println!(
            "{}: {} images ({} skipped); verdict 'out of distribution': {}",
            set.name,
            set.scores.len(),
            set.skipped,
            flag_rate(set)
                .map(|(p, lo, hi)| format!(
                    "{:.2} % [{:.2}, {:.2}]",
                    100.0 * p,
                    100.0 * lo,
                    100.0 * hi
                ))
                .unwrap_or_else(|| "-".into())
        );
        println!(
            "  {:<19} {:>21} {:>22} {:>22} {:>22}",
            "score", "AUROC", "AUPR-in", "AUPR-out", "FPR@95%TPR"
        );
        for (kind, r) in report {
            let cell = |v: f64, ci: String| format!("{v:.3}{ci}");
            println!(
                "  {:<19} {:>21} {:>22} {:>22} {:>22}",
                kind.name(),
                cell(r.auroc, interval(r, |c| c.auroc)),
                cell(r.aupr_in, interval(r, |c| c.aupr_in)),
                cell(r.aupr_out, interval(r, |c| c.aupr_out)),
                cell(r.fpr_at_95_tpr, interval(r, |c| c.fpr_at_95_tpr)),
            );
        }
    }
    Ok(())
}

/// A set's name as a file name: letters, digits, `-` and `_` kept, anything else `_`.
fn file_stem(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// How the in-distribution set is named in titles.
fn in_set_label(model: &str) -> String {
    format!("in-distribution ({model})")
}

/// An 8-bit grayscale image of `width · height` row-major `pixels` (one IDX image).
pub(crate) fn luma_image(
    width: usize,
    height: usize,
    pixels: &[u8],
) -> Result<DynamicImage, BoxError> {
    let image = GrayImage::from_raw(width as u32, height as u32, pixels.to_vec())
        .ok_or("an IDX image of inconsistent size")?;
    Ok(DynamicImage::ImageLuma8(image))
}
