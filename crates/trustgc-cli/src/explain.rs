//! `trustgc explain`: why a generative classifier decided as it did ([`trustgc::explain`]).
//!
//! Per image, into its folder:
//! - `counterfactual.png`: the 8-bit counterfactual at the model's input resolution (an
//!   image `trustgc classify` takes as it is);
//! - `path.png`: the images along the latent line from the input to the counterfactual,
//!   each labelled with its step and what the model says of it;
//! - `difference.png`: the input, the counterfactual and their difference (a diverging
//!   colour map with its scale bar);
//! - `heatmap.png`: the pixel attributions of the margin (path-integrated gradients from
//!   the counterfactual to the input, [`trustgc::explain::attribution`]) overlaid on the
//!   input at the model's input resolution, beside the gradient × input map, each with
//!   its scale bar;
//! - `explanation.json`: the margin decomposition and every number of the counterfactual
//!   and of the attributions.
//!
//! With `--prototypes`, `prototypes.png`: a grid of the class prototypes and samples,
//! labelled with the class names and with what the model says of each picture.
//!
//! With `--both-or-neither`, `both-or-neither.png`: for the images given, the top two
//! class log-likelihoods per dimension against each other, over the band where `log p(x)`
//! is typical (the range fitted in `ood.json`), each point marked by the model's verdict.
//!
//! Pictures are composed on an RGB canvas: the model's images are enlarged with
//! nearest-neighbour sampling (pixels stay pixels) and pasted; text, frames and the colour
//! scale are drawn with plotters' bitmap backend and the embedded DejaVu Sans
//! ([`crate::plots::register_font`]). The difference map uses ColorBrewer's red–blue
//! diverging scheme ([`colorous::RED_BLUE`]): red where the counterfactual is brighter,
//! blue where it is darker, white for no change. The heatmap uses the same scheme over a
//! greyed copy of the input: red pixels pull toward the predicted class, blue ones toward
//! the contrast class.
//!
//! The attributions need gradients: the command runs on the autodiff wrapper of the
//! chosen backend (the explanation itself on the plain backend inside it).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use burn::tensor::backend::{AutodiffBackend, Backend};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use plotters::backend::BitMapBackend;
use plotters::coord::Shift;
use plotters::prelude::{DrawingArea, IntoDrawingArea, Rectangle};
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{Color, IntoFont, RGBColor, TextStyle};
use serde_json::{Value, json};
use trustgc::explain::{
    Attribution, AttributionSettings, ExplainError, ExplainSettings, Explanation, ModelImage,
    PixelMap, PrototypeSettings, Recheck,
};
use trustgc::image::codecs::png::{CompressionType, FilterType as PngFilter, PngEncoder};
use trustgc::image::imageops::{self, FilterType};
use trustgc::image::{ExtendedColorType, ImageEncoder, RgbImage};
use trustgc::preprocess::read_image;
use trustgc::{Classifier, ClassifyError};
use trustgc_backend::{AutodiffTask, BackendTask, run_on, run_on_autodiff};

use crate::model_dir;
use crate::plots::{DrawError, FONT, PlotError, register_font};

type BoxError = Box<dyn std::error::Error>;

/// `trustgc explain`.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// Image files (PNG or JPEG).
    #[arg(required_unless_present = "prototypes")]
    images: Vec<PathBuf>,
    /// A shipped model's name (built into the binary), a model folder, or a released
    /// model on the hub (`hub:beta_8`).
    #[arg(long, default_value = model_dir::DEFAULT_MODEL)]
    model: String,
    /// The class to contrast with the predicted one (a class name or index; default: the
    /// runner-up).
    #[arg(long)]
    contrast: Option<String>,
    /// The folder to write into (one subfolder per image when several are given).
    #[arg(long, default_value = "explanations")]
    out: PathBuf,
    /// One JSON object per image on stdout instead of tables.
    #[arg(long)]
    json: bool,
    /// The posterior the contrast class must reach in the counterfactual.
    #[arg(long, default_value_t = 0.9)]
    target: f64,
    /// Images in the path strip, the input and the counterfactual included.
    #[arg(long, default_value_t = 7)]
    frames: usize,
    /// Latent dimensions listed with the largest margin terms.
    #[arg(long, default_value_t = 10)]
    top: usize,
    /// The largest latent step searched for the 8-bit counterfactual (0: none).
    #[arg(long, default_value_t = 4.0)]
    image_max_step: f64,
    /// Trapezoid intervals of the path integral of the attributions (`heatmap.png`).
    #[arg(long, default_value_t = 128)]
    steps: usize,
    /// Path points per backward pass of the attributions (memory grows with it).
    #[arg(long, default_value_t = 16)]
    attribution_batch: usize,
    /// Draw the class prototypes and samples (`prototypes.png`) instead of explaining
    /// images.
    #[arg(long, conflicts_with = "contrast")]
    prototypes: bool,
    /// Plot the images' top two class log-likelihoods against the typical range of
    /// `ood.json` (`both-or-neither.png`) instead of explaining them.
    #[arg(long, conflicts_with_all = ["contrast", "prototypes"])]
    both_or_neither: bool,
    /// What the prototype grid shows (with `--prototypes`).
    #[command(flatten)]
    grid: GridArgs,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N` (default: $BURN_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
}

/// What a grid of class prototypes and samples shows (`explain --prototypes`,
/// `prototypes`).
#[derive(Args, Debug, Clone)]
pub struct GridArgs {
    /// Samples per class beside the prototype.
    #[arg(long, default_value_t = 4)]
    samples: usize,
    /// Temperature of the samples.
    #[arg(long, default_value_t = 0.7)]
    temperature: f64,
    /// Classes to draw (names or indices, comma-separated; default: all, or the first 10
    /// of a model with more than 20).
    #[arg(long, value_delimiter = ',')]
    classes: Vec<String>,
    /// Seed of the samples' noise.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

/// `trustgc prototypes`: the class prototypes and samples as one grid picture.
#[derive(Args, Debug)]
pub struct PrototypesArgs {
    /// A shipped model's name (built into the binary), a model folder, or a released
    /// model on the hub (`hub:beta_8`).
    #[arg(long, default_value = model_dir::DEFAULT_MODEL)]
    model: String,
    /// The PNG file to write.
    #[arg(long, default_value = "prototypes.png")]
    out: PathBuf,
    /// What the grid shows.
    #[command(flatten)]
    grid: GridArgs,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N` (default: $BURN_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
}

/// What a prototype grid is drawn from, and where it goes.
struct GridRequest<'a> {
    model: &'a str,
    file: PathBuf,
    grid: &'a GridArgs,
}

/// `trustgc prototypes` (the same grid as `trustgc explain --prototypes`, into a file).
pub fn prototypes_command(args: PrototypesArgs) -> Result<(), BoxError> {
    let spec = crate::device(&args.device)?;
    run_on(&spec, PrototypesTask { args })?
}

struct PrototypesTask {
    args: PrototypesArgs,
}

impl BackendTask for PrototypesTask {
    type Output = Result<(), BoxError>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let classifier: Classifier<B> = model_dir::resolve(&args.model)?.classifier(&device)?;
        prototypes(
            &classifier,
            &GridRequest {
                model: &args.model,
                file: args.out.clone(),
                grid: &args.grid,
            },
        )
    }
}

/// Why one image could not be explained.
#[derive(Debug, thiserror::Error)]
pub enum ExplainImageError {
    /// The model could not explain it.
    #[error(transparent)]
    Explain(#[from] ExplainError),
    /// A picture could not be drawn or written.
    #[error("cannot write {picture}")]
    Picture {
        /// The file.
        picture: PathBuf,
        /// Why.
        #[source]
        source: PlotError,
    },
    /// `explanation.json` could not be written.
    #[error(transparent)]
    Write(#[from] trustgc_io::WriteError),
    /// The folder could not be created.
    #[error("cannot create the folder {dir}")]
    Folder {
        /// The folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// `trustgc explain`: returns how many images failed.
pub fn explain(args: ExplainArgs) -> Result<usize, BoxError> {
    let spec = crate::device(&args.device)?;
    run_on_autodiff(&[spec], ExplainTask { args })?
}

struct ExplainTask {
    args: ExplainArgs,
}

impl AutodiffTask for ExplainTask {
    type Output = Result<usize, BoxError>;

    fn run<A: AutodiffBackend>(self, devices: Vec<A::Device>) -> Self::Output {
        let args = self.args;
        let device = devices.into_iter().next().expect("one device");
        let classifier: Classifier<A::InnerBackend> =
            model_dir::resolve(&args.model)?.classifier(&device)?;
        if args.prototypes {
            prototypes(
                &classifier,
                &GridRequest {
                    model: &args.model,
                    file: args.out.join("prototypes.png"),
                    grid: &args.grid,
                },
            )?;
            return Ok(0);
        }
        if args.both_or_neither {
            return both_or_neither(&classifier, &args);
        }
        let settings = ExplainSettings {
            contrast: args
                .contrast
                .as_deref()
                .map(|name| classifier.class_index(name))
                .transpose()?,
            target_posterior: args.target,
            path_frames: args.frames,
            top_dimensions: args.top,
            image_max_step: args.image_max_step,
            ..ExplainSettings::default()
        };
        let attribution = AttributionSettings {
            steps: args.steps,
            batch: args.attribution_batch,
        };
        let bar = (args.images.len() > 1 && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(args.images.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                    .expect("a valid template"),
            );
            bar
        });
        let dirs = image_dirs(&args.out, &args.images);
        let mut failures = 0;
        for (path, dir) in args.images.iter().zip(&dirs) {
            if let Some(bar) = &bar {
                bar.set_message(path.display().to_string());
            }
            let result = explain_one::<A>(&classifier, path, dir, &settings, &attribution);
            let report = || match &result {
                Ok(value) if args.json => println!("{value}"),
                Ok(value) => print_table(value),
                Err(e) => {
                    eprintln!("error: {}: {e}", path.display());
                    // Causes, unless the message above already says them.
                    let mut said = e.to_string();
                    let mut source = std::error::Error::source(e);
                    while let Some(cause) = source {
                        let text = cause.to_string();
                        if !said.contains(&text) {
                            eprintln!("  caused by: {text}");
                        }
                        said = text;
                        source = cause.source();
                    }
                }
            };
            match &bar {
                Some(bar) => bar.suspend(report),
                None => report(),
            }
            failures += usize::from(result.is_err());
            if let Some(bar) = &bar {
                bar.inc(1);
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        Ok(failures)
    }
}

/// The output folder of each image: `out` for a single image, else `out/<file stem>`
/// (`-2`, `-3`, … appended to repeated stems).
fn image_dirs(out: &Path, images: &[PathBuf]) -> Vec<PathBuf> {
    if images.len() == 1 {
        return vec![out.to_path_buf()];
    }
    let mut seen = std::collections::HashMap::<String, usize>::new();
    images
        .iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into());
            let count = seen.entry(stem.clone()).or_insert(0);
            *count += 1;
            match *count {
                1 => out.join(stem),
                n => out.join(format!("{stem}-{n}")),
            }
        })
        .collect()
}

/// Explains one image file and writes its pictures; returns its JSON object.
fn explain_one<A: AutodiffBackend>(
    classifier: &Classifier<A::InnerBackend>,
    path: &Path,
    dir: &Path,
    settings: &ExplainSettings,
    attribution_settings: &AttributionSettings,
) -> Result<Value, ExplainImageError> {
    let image = read_image(path).map_err(|e| ExplainError::Classify(e.into()))?;
    let x = classifier
        .preprocess(&[image])
        .map_err(|e| match e {
            ClassifyError::Input { source, .. } => {
                ClassifyError::Image(trustgc::preprocess::ImageError::Input {
                    path: path.to_path_buf(),
                    source,
                })
            }
            other => other,
        })
        .map_err(ExplainError::from)?;
    let explanation = classifier.explain(x.clone(), settings)?;
    let attribution = classifier.attribute::<A>(x.clone(), &explanation, attribution_settings)?;
    // A map that is not finite (NaN error) is warned about too.
    let error = attribution.completeness_error();
    if error.is_nan() || error > 1e-2 {
        eprintln!(
            "warning: {}: the attributions sum to {:.4} nats but the margin changes by {:.4} ({} steps): raise --steps",
            path.display(),
            attribution.sum(),
            attribution.margin_change(),
            attribution.steps
        );
    }
    let input = classifier.input_images(x)?.remove(0);
    let cf = &explanation.counterfactual;
    let latent_image = classifier.input_images(cf.input.clone())?.remove(0);
    // The picture of the counterfactual: the 8-bit counterfactual when the search found
    // one, else x' made an 8-bit image (which the model may not classify as the contrast).
    let (shown, shown_check) = match &cf.image {
        Some(image) if image.reached => (image.image.clone(), &image.recheck),
        Some(image) => (
            latent_image.quantized(),
            cf.quantized.as_ref().unwrap_or(&image.recheck),
        ),
        None => (
            latent_image.quantized(),
            cf.quantized.as_ref().unwrap_or(&cf.exact),
        ),
    };
    std::fs::create_dir_all(dir).map_err(|source| ExplainImageError::Folder {
        dir: dir.to_path_buf(),
        source,
    })?;
    let files = Files::in_dir(dir);
    let picture = |file: &Path, result: Result<Vec<u8>, PlotError>| {
        result
            .and_then(|png| Ok(trustgc_io::write_file(file, &[path], &png)?))
            .map_err(|source| ExplainImageError::Picture {
                picture: file.to_path_buf(),
                source,
            })
    };
    picture(
        &files.counterfactual,
        encode_png(&shown.to_image().to_rgb8()),
    )?;
    let names = |class: usize| explanation.likelihoods.class_name(class);
    let frames = classifier.input_images(cf.path.inputs.clone())?;
    picture(
        &files.path,
        path_picture(
            &frames,
            &cf.path.steps,
            cf.path.image_checks.as_deref(),
            &names,
            cf.contrast,
        ),
    )?;
    let difference = input.difference(&shown)?;
    picture(
        &files.difference,
        difference_picture(&input, &shown, &difference, &explanation, shown_check),
    )?;
    let spec = classifier
        .config()
        .input
        .as_ref()
        .ok_or(ClassifyError::NoInputSpec)
        .map_err(ExplainError::from)?;
    let integrated = PixelMap::of(spec, &attribution.integrated)?;
    let gradient_times_input = PixelMap::of(spec, &attribution.gradient_times_input)?;
    picture(
        &files.heatmap,
        heatmap_picture(
            &input,
            &integrated,
            &gradient_times_input,
            &attribution,
            &names,
        ),
    )?;
    let mut value = explanation_json(path, &explanation, &files, shown_check);
    value["attribution"] = attribution_json(&attribution, &integrated, &files);
    let text = serde_json::to_string_pretty(&value).expect("an explanation serializes");
    trustgc_io::write_file(&files.json, &[path], text.as_bytes())?;
    Ok(value)
}

/// The files written for one image.
struct Files {
    counterfactual: PathBuf,
    path: PathBuf,
    difference: PathBuf,
    heatmap: PathBuf,
    json: PathBuf,
}

impl Files {
    fn in_dir(dir: &Path) -> Self {
        Self {
            counterfactual: dir.join("counterfactual.png"),
            path: dir.join("path.png"),
            difference: dir.join("difference.png"),
            heatmap: dir.join("heatmap.png"),
            json: dir.join("explanation.json"),
        }
    }
}

/// A class score for the JSON output.
fn class_json(likelihoods: &trustgc::Likelihoods, class: usize) -> Value {
    json!({
        "class": class,
        "name": likelihoods.class_name(class),
        "posterior": likelihoods.log_posterior[class].exp(),
        "log_likelihood": likelihoods.class_log_likelihoods[class],
    })
}

/// A recheck for the JSON output: the class predicted for the image and its posterior,
/// and the posterior of the class the image should have (`posterior`).
fn check_json(check: &Recheck) -> Value {
    json!({
        "predicted": check.predicted,
        "predicted_name": check.likelihoods.class_name(check.predicted),
        "predicted_posterior": check.likelihoods.log_posterior[check.predicted].exp(),
        "posterior": check.posterior,
    })
}

/// The JSON object of one explanation (the keys of issue 12's `--json`).
fn explanation_json<B: Backend>(
    path: &Path,
    explanation: &Explanation<B>,
    files: &Files,
    shown: &Recheck,
) -> Value {
    let l = &explanation.likelihoods;
    let m = &explanation.margin;
    let cf = &explanation.counterfactual;
    let shown_path = |p: &Path| p.display().to_string();
    json!({
        "image": path.display().to_string(),
        "predicted": class_json(l, m.predicted),
        "contrast": class_json(l, m.contrast),
        "margin": m.margin,
        "margin_decomposition": {
            "margin": m.margin,
            "model_margin": m.model_margin,
            "posterior_log_odds": m.posterior_log_odds,
            "groups": m.groups,
            "top": m.top,
        },
        "counterfactual": {
            "class": cf.contrast,
            "name": l.class_name(cf.contrast),
            "predicted": shown.predicted,
            "predicted_name": l.class_name(shown.predicted),
            "posterior": shown.posterior,
            "reached": shown.agrees_with(cf.target_posterior),
            "png": shown_path(&files.counterfactual),
            "path_png": shown_path(&files.path),
            "difference_png": shown_path(&files.difference),
            "target_posterior": cf.target_posterior,
            "latent": {
                "step": cf.step,
                "reached": cf.reached,
                "expected_posterior": cf.expected_posterior,
                "latent_distance": cf.latent_distance,
                "mean_distance": cf.mean_distance,
                "round_trip": cf.round_trip,
                "exact": check_json(&cf.exact),
                "clamped": cf.clamped.as_ref().map(check_json),
                "quantized": cf.quantized.as_ref().map(check_json),
            },
            "image": cf.image.as_ref().map(|image| json!({
                "step": image.step,
                "reached": image.reached,
                "evaluations": image.evaluations,
                "latent_distance": image.latent_distance,
                "check": check_json(&image.recheck),
            })),
            "path": {
                "steps": cf.path.steps,
                "posteriors": cf.path.posteriors,
                "image_posteriors": cf.path.image_checks.as_ref().map(|checks| {
                    checks.iter().map(|c| c.posterior).collect::<Vec<_>>()
                }),
            },
        },
    })
}

/// The `attribution` object of the JSON output.
fn attribution_json(attribution: &Attribution, pixels: &PixelMap, files: &Files) -> Value {
    json!({
        "sum": attribution.sum(),
        "margin_change": attribution.margin_change(),
        "png": files.heatmap.display().to_string(),
        "completeness_error": attribution.completeness_error(),
        "steps": attribution.steps,
        "baseline": attribution.baseline,
        "margin_input": attribution.margin_input,
        "margin_baseline": attribution.margin_baseline,
        "padding": pixels.padding,
        "largest_pixel": pixels.largest(),
        "gradient_times_input_sum": attribution.gradient_times_input_sum(),
    })
}

/// The table of one explanation (from its JSON object).
fn print_table(value: &Value) {
    let f = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let (p, c) = (&value["predicted"], &value["contrast"]);
    println!("{}", s(&value["image"]));
    println!(
        "  predicted {} (p = {:.4}); contrast {} (p = {:.4})",
        s(&p["name"]),
        f(&p["posterior"]),
        s(&c["name"]),
        f(&c["posterior"])
    );
    let d = &value["margin_decomposition"];
    println!(
        "  margin log p(x|{}) − log p(x|{}) = {:.4} nats (Σ of {} latent terms; the model's own: {:.4})",
        s(&p["name"]),
        s(&c["name"]),
        f(&d["margin"]),
        d["groups"].as_array().map_or(0, |g| g
            .iter()
            .map(|g| g["dims"].as_u64().unwrap_or(0))
            .sum::<u64>()),
        f(&d["model_margin"])
    );
    println!(
        "  {:<18} {:>7} {:>10} {:>10}",
        "latent group", "dims", "Σ m_i", "Σ |m_i|"
    );
    for g in d["groups"].as_array().into_iter().flatten() {
        println!(
            "  {:<18} {:>7} {:>10.4} {:>10.4}",
            s(&g["name"]),
            g["dims"].as_u64().unwrap_or(0),
            f(&g["total"]),
            f(&g["total_abs"])
        );
    }
    println!(
        "  {:<8} {:<18} {:>9} {:>9} {:>9} {:>9}",
        "dim", "group", "m_i", "z_i", "μ_a,i", "μ_b,i"
    );
    for t in d["top"].as_array().into_iter().flatten() {
        let group = match t["group"]["band"].as_u64() {
            Some(band) => format!("z_conv band {band}"),
            None => "z_fc".into(),
        };
        println!(
            "  {:<8} {:<18} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
            t["index"].as_u64().unwrap_or(0),
            group,
            f(&t["term"]),
            f(&t["z"]),
            f(&t["mean_predicted"]),
            f(&t["mean_contrast"])
        );
    }
    let cf = &value["counterfactual"];
    let latent = &cf["latent"];
    let check = |v: &Value| {
        if v.is_null() {
            "-".to_string()
        } else {
            format!(
                "{} {:.4} (p({}) = {:.4})",
                s(&v["predicted_name"]),
                f(&v["predicted_posterior"]),
                s(&c["name"]),
                f(&v["posterior"])
            )
        }
    };
    println!(
        "  latent counterfactual: step t = {:.4} along μ_b − μ_a (‖Δ‖ = {:.3}); the model on x' = f⁻¹(z'): {}; clamped: {}; 8-bit: {}; round trip max |f(x') − z'| = {:.2e}",
        f(&latent["step"]),
        f(&latent["mean_distance"]),
        check(&latent["exact"]),
        check(&latent["clamped"]),
        check(&latent["quantized"]),
        f(&latent["round_trip"]["max_abs_error"])
    );
    if !cf["image"].is_null() {
        println!(
            "  8-bit counterfactual: step t = {:.4}: {} ({})",
            f(&cf["image"]["step"]),
            check(&cf["image"]["check"]),
            if cf["image"]["reached"].as_bool() == Some(true) {
                "reaches the target"
            } else {
                "does not reach the target"
            }
        );
    }
    let at = &value["attribution"];
    if !at.is_null() {
        println!(
            "  attributions (integrated gradients from the counterfactual, {} steps): Σ = {:.4} nats, m(x) − m(x') = {:.4} (relative error {:.1e}); Σ gradient × input = {:.4}",
            at["steps"].as_u64().unwrap_or(0),
            f(&at["sum"]),
            f(&at["margin_change"]),
            f(&at["completeness_error"]),
            f(&at["gradient_times_input_sum"])
        );
    }
    println!(
        "  wrote {}, {}, {}, {}",
        s(&cf["png"]),
        s(&cf["path_png"]),
        s(&cf["difference_png"]),
        s(&at["png"])
    );
}

/// `trustgc explain --prototypes` and `trustgc prototypes`.
fn prototypes<B: Backend>(classifier: &Classifier<B>, args: &GridRequest) -> Result<(), BoxError> {
    let n_classes = classifier.config().n_classes;
    let grid = args.grid;
    let classes = if grid.classes.is_empty() {
        if n_classes > 20 {
            eprintln!(
                "the model has {n_classes} classes: drawing the first 10 (choose with --classes)"
            );
        }
        (0..n_classes.min(if n_classes > 20 { 10 } else { n_classes })).collect()
    } else {
        grid.classes
            .iter()
            .map(|name| classifier.class_index(name))
            .collect::<Result<Vec<usize>, ExplainError>>()?
    };
    let settings = PrototypeSettings {
        classes: Some(classes),
        samples: grid.samples,
        temperature: grid.temperature,
        seed: grid.seed,
    };
    let prototypes = classifier.prototypes(&settings)?;
    let names = classifier.config().class_names.clone();
    let name = |class: usize| {
        names
            .get(class)
            .cloned()
            .unwrap_or_else(|| class.to_string())
    };
    let protos = classifier.input_images(prototypes.prototypes.clone())?;
    let samples = match &prototypes.samples {
        Some(samples) => classifier.input_images(samples.clone())?,
        None => Vec::new(),
    };
    // The pictures are 8-bit images: label each with what the model says of that image.
    let proto_checks = prototypes
        .prototype_quantized_checks
        .as_ref()
        .unwrap_or(&prototypes.prototype_checks);
    let sample_checks = prototypes
        .sample_quantized_checks
        .as_ref()
        .unwrap_or(&prototypes.sample_checks);
    let k = prototypes.samples_per_class;
    let mut rows = Vec::new();
    for (row, &class) in prototypes.classes.iter().enumerate() {
        let mut cells = vec![Cell::new(
            &protos[row].quantized(),
            caption(&proto_checks[row], &name),
        )];
        for s in 0..k {
            let i = row * k + s;
            cells.push(Cell::new(
                &samples[i].quantized(),
                caption(&sample_checks[i], &name),
            ));
        }
        rows.push((name(class), cells));
    }
    let mut columns = vec!["prototype f⁻¹(μ_y)".to_string()];
    columns.extend((1..=k).map(|s| format!("sample {s}, τ = {}", prototypes.temperature)));
    let title = [
        format!("Class prototypes and samples: {}", args.model),
        "under each picture: the model's class and posterior for that 8-bit picture (green: its row's class)"
            .to_string(),
    ];
    let png = grid_picture(&title, &columns, &rows)?;
    if let Some(dir) = args.file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let file = &args.file;
    trustgc_io::write_file(file, &[], &png)?;

    let agree = |checks: &[Recheck]| checks.iter().filter(|c| c.agrees()).count();
    let n = prototypes.classes.len();
    println!(
        "prototypes classified as their class: {} of {n} (as 8-bit images: {})",
        agree(&prototypes.prototype_checks),
        prototypes
            .prototype_quantized_checks
            .as_deref()
            .map_or("-".into(), |c| agree(c).to_string())
    );
    if k > 0 {
        println!(
            "samples at τ = {} classified as their class: {} of {} (as 8-bit images: {})",
            prototypes.temperature,
            agree(&prototypes.sample_checks),
            prototypes.sample_checks.len(),
            prototypes
                .sample_quantized_checks
                .as_deref()
                .map_or("-".into(), |c| agree(c).to_string())
        );
    }
    println!("wrote {}", file.display());
    Ok(())
}

/// How the model judges one image of the "both or neither" plot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Judged {
    /// Confident in one class.
    Confident,
    /// Typical of several classes.
    Ambiguous,
    /// Out of distribution.
    OutOfDistribution,
    /// No verdict (the model has no `ood.json`).
    Unjudged,
}

impl Judged {
    fn of(verdict: Option<&trustgc::Verdict>) -> Self {
        match verdict {
            Some(trustgc::Verdict::Confident { .. }) => Judged::Confident,
            Some(trustgc::Verdict::Ambiguous { .. }) => Judged::Ambiguous,
            Some(trustgc::Verdict::OutOfDistribution { .. }) => Judged::OutOfDistribution,
            None => Judged::Unjudged,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Judged::Confident => "confident (one class)",
            Judged::Ambiguous => "ambiguous (both)",
            Judged::OutOfDistribution => "out of distribution (neither)",
            Judged::Unjudged => "no verdict (no ood.json)",
        }
    }

    fn colour(self) -> RGBColor {
        // Tableau 10: green, orange, red, grey.
        let c = colorous::TABLEAU10[match self {
            Judged::Confident => 4,
            Judged::Ambiguous => 1,
            Judged::OutOfDistribution => 2,
            Judged::Unjudged => 9,
        }];
        RGBColor(c.r, c.g, c.b)
    }
}

/// One image of the "both or neither" plot: its top two class log-likelihoods per
/// dimension (nats), its label and how the model judged it.
struct Scored {
    top: f64,
    second: f64,
    label: String,
    judged: Judged,
}

/// `trustgc explain --both-or-neither`: returns how many images failed.
fn both_or_neither<B: Backend>(
    classifier: &Classifier<B>,
    args: &ExplainArgs,
) -> Result<usize, BoxError> {
    let d = classifier.config().total_dims() as f64;
    let mut points = Vec::new();
    let mut failures = 0;
    for path in &args.images {
        match classifier.likelihoods_file(path) {
            Ok(l) => {
                let mut ll = l.class_log_likelihoods.clone();
                ll.sort_by(|a, b| b.total_cmp(a));
                let judged = Judged::of(l.verdict.as_ref());
                let ranked = l.top_k(2);
                println!(
                    "{}: log p(x|{})/D = {:.4}, log p(x|{})/D = {:.4}, log p(x)/D = {:.4} nats: {}",
                    path.display(),
                    ranked[0].name,
                    ranked[0].log_likelihood / d,
                    ranked[1].name,
                    ranked[1].log_likelihood / d,
                    l.log_marginal / d,
                    l.verdict_text().unwrap_or_else(|| "no verdict".into())
                );
                points.push(Scored {
                    top: ll[0] / d,
                    second: ll.get(1).copied().unwrap_or(ll[0]) / d,
                    label: path
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    judged,
                });
            }
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                failures += 1;
            }
        }
    }
    if points.is_empty() {
        return Ok(failures);
    }
    let band = classifier
        .ood()
        .map(|ood| (ood.marginal_low, ood.marginal_high));
    let png = both_or_neither_picture(
        &points,
        band,
        classifier.config().n_classes,
        d,
        &format!("Both or neither: {}", args.model),
    )?;
    std::fs::create_dir_all(&args.out)?;
    let file = args.out.join("both-or-neither.png");
    trustgc_io::write_file(&file, &[], &png)?;
    println!("wrote {}", file.display());
    Ok(failures)
}

/// The curve `log(p(x|a) + p(x|b)) − log K = D·c` in per-dimension units: the runner-up's
/// `log p(x|b)/D` at the top class's `u` (`None` past the curve's asymptote, where the
/// top class alone exceeds `c`). A uniform prior over `K` classes, the others ignored.
fn typical_curve(u: f64, c: f64, classes: usize, d: f64) -> Option<f64> {
    let ln_k = (classes as f64).ln();
    let inside = 1.0 - (d * (u - c) - ln_k).exp();
    (inside > 0.0).then(|| c + (ln_k + inside.ln()) / d)
}

/// Draws the "both or neither" scatter plot.
fn both_or_neither_picture(
    points: &[Scored],
    band: Option<(f64, f64)>,
    classes: usize,
    d: f64,
    title: &str,
) -> Result<Vec<u8>, PlotError> {
    use plotters::prelude::{
        ChartBuilder, Circle, EmptyElement, LineSeries, PathElement, Polygon, Text,
    };
    use plotters::style::WHITE;
    let mut low = points
        .iter()
        .map(|p| p.second.min(p.top))
        .fold(f64::INFINITY, f64::min);
    let mut high = points
        .iter()
        .map(|p| p.top.max(p.second))
        .fold(f64::NEG_INFINITY, f64::max);
    if let Some((a, b)) = band {
        low = low.min(a);
        high = high.max(b);
    }
    let pad = 0.08 * (high - low).max(0.05);
    let range = (low - pad)..(high + pad);
    let (width, height) = (860u32, 760u32);
    compose(width, height, &[], |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, TITLE_SIZE + 2))
            .margin(MARGIN)
            .x_label_area_size(48)
            .y_label_area_size(64)
            .build_cartesian_2d(range.clone(), range.clone())?;
        chart
            .configure_mesh()
            .x_desc("log p(x | top class) / D, nats")
            .y_desc("log p(x | runner-up) / D, nats")
            .label_style((FONT, LABEL_SIZE - 2))
            .axis_desc_style((FONT, LABEL_SIZE))
            .bold_line_style(RGBColor(225, 225, 225))
            .light_line_style(WHITE)
            .draw()?;
        if let Some((a, b)) = band {
            // The band between the curves of log p(x)/D = a and = b, clipped to the plot.
            let steps = 400;
            let curve = |c: f64| -> Vec<(f64, f64)> {
                (0..=steps)
                    .filter_map(|i| {
                        let u = range.start + (range.end - range.start) * i as f64 / steps as f64;
                        typical_curve(u, c, classes, d).map(|v| (u, v.max(range.start)))
                    })
                    .collect()
            };
            let (lower, upper) = (curve(a), curve(b));
            let mut outline = upper.clone();
            if let Some(&(u, _)) = upper.last() {
                outline.push((u, range.start));
            }
            outline.extend(lower.iter().rev().copied());
            if let Some(&(u, _)) = lower.last() {
                outline.insert(upper.len() + 1, (u, range.start));
            }
            let fill = RGBColor(120, 160, 220);
            chart
                .draw_series(std::iter::once(Polygon::new(outline, fill.mix(0.25))))?
                .label("log p(x)/D in the typical range of ood.json")
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 20, y + 6)], fill.mix(0.4).filled())
                });
        }
        let diagonal = RGBColor(110, 110, 110);
        chart
            .draw_series(LineSeries::new(
                [(range.start, range.start), (range.end, range.end)],
                diagonal.stroke_width(1),
            ))?
            .label("both equally likely (runner-up = top)")
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], diagonal.stroke_width(1))
            });
        for judged in [
            Judged::Confident,
            Judged::Ambiguous,
            Judged::OutOfDistribution,
            Judged::Unjudged,
        ] {
            let mine: Vec<&Scored> = points.iter().filter(|p| p.judged == judged).collect();
            if mine.is_empty() {
                continue;
            }
            let colour = judged.colour();
            chart
                .draw_series(
                    mine.iter()
                        .map(|p| Circle::new((p.top, p.second), 5, colour.filled())),
                )?
                .label(judged.label())
                .legend(move |(x, y)| Circle::new((x + 10, y), 5, colour.filled()));
        }
        // Names for the points that are not simply confident (those crowd the diagonal),
        // each moved up or down by whole lines until it overlaps no name placed before it.
        let size = LABEL_SIZE - 4;
        let line = size as i32 + 1;
        let named: Vec<&Scored> = points
            .iter()
            .filter(|p| p.judged != Judged::Confident)
            .collect();
        let mut placed: Vec<[i32; 4]> = Vec::new();
        let mut offsets = Vec::with_capacity(named.len());
        for p in &named {
            let (x, y) = chart.backend_coord(&(p.top, p.second));
            let width = text_width(&p.label, size) as i32;
            let boxed = |dy: i32| [x + 4, y + dy - line, x + 4 + width, y + dy];
            let overlaps = |b: &[i32; 4]| {
                placed
                    .iter()
                    .any(|o| b[0] < o[2] && o[0] < b[2] && b[1] < o[3] && o[1] < b[3])
            };
            let dy = [0, -1, 1, -2, 2, -3, 3, -4, 4]
                .iter()
                .map(|k| -2 + k * line)
                .find(|&dy| !overlaps(&boxed(dy)))
                .unwrap_or(-2);
            placed.push(boxed(dy));
            offsets.push((4, dy));
        }
        chart.draw_series(named.iter().zip(offsets).map(|(p, offset)| {
            EmptyElement::at((p.top, p.second))
                + Text::new(
                    p.label.clone(),
                    offset,
                    text_style(size, &INK, Pos::new(HPos::Left, VPos::Bottom)),
                )
        }))?;
        chart
            .configure_series_labels()
            .position(plotters::chart::SeriesLabelPosition::UpperLeft)
            .label_font((FONT, LABEL_SIZE - 2))
            .background_style(WHITE.mix(0.9))
            .border_style(FRAME)
            .draw()?;
        Ok(())
    })
}

/// The caption of a picture whose class should be `check.class`.
fn caption(check: &Recheck, name: &dyn Fn(usize) -> String) -> Vec<(String, RGBColor)> {
    let p = check.likelihoods.log_posterior[check.predicted].exp();
    if check.agrees() {
        vec![(format!("{} {:.2}", name(check.predicted), p), AGREES)]
    } else {
        vec![(format!("{} {:.2}", name(check.predicted), p), DISAGREES)]
    }
}

/// Text colour of a picture the model classifies as intended.
const AGREES: RGBColor = RGBColor(24, 110, 48);
/// Text colour of a picture the model classifies otherwise.
const DISAGREES: RGBColor = RGBColor(190, 30, 30);
/// Text colour of titles and labels.
const INK: RGBColor = RGBColor(30, 30, 30);
/// Frame colour around the pictures.
const FRAME: RGBColor = RGBColor(150, 150, 150);

/// Margin around a picture, in pixels.
const MARGIN: u32 = 16;
/// Height of the title line.
const TITLE: u32 = 34;
/// Height of a column header or caption line.
const LINE: u32 = 20;
/// Font sizes.
const TITLE_SIZE: u32 = 18;
const LABEL_SIZE: u32 = 15;

/// The enlargement of a model image: to at least 112 pixels on a side, by an integer
/// factor (nearest neighbour keeps the pixels square).
fn zoom(image: &ModelImage) -> u32 {
    (112 / image.width.max(1) as u32).max(1)
}

/// A model image, enlarged, with caption lines.
struct Cell {
    image: RgbImage,
    caption: Vec<(String, RGBColor)>,
}

impl Cell {
    fn new(image: &ModelImage, caption: Vec<(String, RGBColor)>) -> Self {
        let rgb = image.to_image().to_rgb8();
        let f = zoom(image);
        let image = imageops::resize(&rgb, rgb.width() * f, rgb.height() * f, FilterType::Nearest);
        Self { image, caption }
    }
}

/// Encodes an RGB image as PNG.
fn encode_png(image: &RgbImage) -> Result<Vec<u8>, PlotError> {
    let mut png = Vec::new();
    PngEncoder::new_with_quality(&mut png, CompressionType::Best, PngFilter::Adaptive)
        .write_image(
            image,
            image.width(),
            image.height(),
            ExtendedColorType::Rgb8,
        )
        .map_err(PlotError::Encode)?;
    Ok(png)
}

/// The width in pixels of `text` set at `size` pixels (0 when the font cannot measure it).
fn text_width(text: &str, size: u32) -> u32 {
    if register_font().is_err() {
        return 0;
    }
    (FONT, size)
        .into_font()
        .box_size(text)
        .map_or(0, |(w, _)| w)
}

/// A text style of `size` pixels in `color`, anchored at `pos`.
fn text_style(size: u32, color: &RGBColor, pos: Pos) -> TextStyle<'static> {
    (FONT, size).into_font().color(color).pos(pos)
}

/// Draws on a white canvas of `width` × `height` after pasting `images` at their
/// positions, and encodes it.
fn compose(
    width: u32,
    height: u32,
    images: &[(&RgbImage, u32, u32)],
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(), DrawError>,
) -> Result<Vec<u8>, PlotError> {
    register_font()?;
    let mut canvas = RgbImage::from_pixel(width, height, trustgc::image::Rgb([255, 255, 255]));
    for &(image, x, y) in images {
        imageops::overlay(&mut canvas, image, i64::from(x), i64::from(y));
    }
    {
        let root = BitMapBackend::with_buffer(&mut canvas, (width, height)).into_drawing_area();
        draw(&root)?;
        root.present()?;
    }
    encode_png(&canvas)
}

/// A grid of pictures: a title, column headers, one row per class with its name on the
/// left, a caption under each picture.
fn grid_picture(
    title: &[String],
    columns: &[String],
    rows: &[(String, Vec<Cell>)],
) -> Result<Vec<u8>, PlotError> {
    let cell_w = rows
        .iter()
        .flat_map(|(_, cells)| cells.iter().map(|c| c.image.width()))
        .max()
        .unwrap_or(112)
        .max(150);
    let image_h = rows
        .iter()
        .flat_map(|(_, cells)| cells.iter().map(|c| c.image.height()))
        .max()
        .unwrap_or(112);
    let captions = rows
        .iter()
        .flat_map(|(_, cells)| cells.iter().map(|c| c.caption.len()))
        .max()
        .unwrap_or(0) as u32;
    let label_w = rows
        .iter()
        .map(|(label, _)| text_width(label, LABEL_SIZE + 1))
        .max()
        .map_or(0, |w| if w == 0 { 0 } else { w + 24 });
    let cell_h = image_h + captions * LINE + 12;
    let n_cols = columns.len() as u32;
    let title_h = TITLE + (title.len().max(1) as u32 - 1) * LINE;
    let title_w = title
        .iter()
        .enumerate()
        .map(|(i, t)| text_width(t, if i == 0 { TITLE_SIZE } else { LABEL_SIZE }))
        .max()
        .unwrap_or(0);
    let width = (2 * MARGIN + label_w + n_cols * (cell_w + 8)).max(2 * MARGIN + title_w);
    let top = MARGIN + title_h + LINE + 6;
    let height = top + rows.len() as u32 * cell_h + MARGIN;
    let mut pasted = Vec::new();
    for (r, (_, cells)) in rows.iter().enumerate() {
        for (c, cell) in cells.iter().enumerate() {
            let x = MARGIN + label_w + c as u32 * (cell_w + 8) + (cell_w - cell.image.width()) / 2;
            let y = top + r as u32 * cell_h;
            pasted.push((&cell.image, x, y));
        }
    }
    compose(width, height, &pasted, |root| {
        let centre_top = Pos::new(HPos::Center, VPos::Top);
        for (i, line) in title.iter().enumerate() {
            let (size, y) = match i {
                0 => (TITLE_SIZE, MARGIN),
                _ => (LABEL_SIZE, MARGIN + TITLE + (i as u32 - 1) * LINE - 6),
            };
            let style = text_style(size, &INK, Pos::new(HPos::Left, VPos::Top));
            root.draw_text(line, &style, (MARGIN as i32, y as i32))?;
        }
        for (c, column) in columns.iter().enumerate() {
            let x = MARGIN + label_w + c as u32 * (cell_w + 8) + cell_w / 2;
            root.draw_text(
                column,
                &text_style(LABEL_SIZE, &INK, centre_top),
                (x as i32, (MARGIN + title_h) as i32),
            )?;
        }
        for (r, (label, cells)) in rows.iter().enumerate() {
            let y = top + r as u32 * cell_h;
            root.draw_text(
                label,
                &text_style(LABEL_SIZE + 1, &INK, Pos::new(HPos::Right, VPos::Center)),
                ((MARGIN + label_w - 12) as i32, (y + image_h / 2) as i32),
            )?;
            for (c, cell) in cells.iter().enumerate() {
                let x =
                    MARGIN + label_w + c as u32 * (cell_w + 8) + (cell_w - cell.image.width()) / 2;
                let (w, h) = (cell.image.width() as i32, cell.image.height() as i32);
                root.draw(&Rectangle::new(
                    [(x as i32 - 1, y as i32 - 1), (x as i32 + w, y as i32 + h)],
                    FRAME.stroke_width(1),
                ))?;
                for (line, (text, color)) in cell.caption.iter().enumerate() {
                    root.draw_text(
                        text,
                        &text_style(LABEL_SIZE, color, centre_top),
                        (
                            (x + cell.image.width() / 2) as i32,
                            (y + image_h + 4 + line as u32 * LINE) as i32,
                        ),
                    )?;
                }
            }
        }
        Ok(())
    })
}

/// The path strip: one row of frames with their steps and what the model says of each
/// frame's 8-bit image.
fn path_picture(
    frames: &[ModelImage],
    steps: &[f64],
    checks: Option<&[Recheck]>,
    name: &dyn Fn(usize) -> String,
    contrast: usize,
) -> Result<Vec<u8>, PlotError> {
    let cells: Vec<Cell> = frames
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let caption = match checks {
                Some(checks) => {
                    let check = &checks[i];
                    let p = check.likelihoods.log_posterior[check.predicted].exp();
                    let color = if check.agrees() { AGREES } else { INK };
                    vec![
                        (format!("{} {:.2}", name(check.predicted), p), color),
                        (
                            format!("p({}) = {:.2}", name(contrast), check.posterior),
                            INK,
                        ),
                    ]
                }
                None => Vec::new(),
            };
            Cell::new(&frame.quantized(), caption)
        })
        .collect();
    let columns: Vec<String> = steps.iter().map(|t| format!("t = {t:.2}")).collect();
    let title = [
        format!(
            "Path x(t) = f⁻¹(z + t·(μ_b − μ_a)) toward {}",
            name(contrast)
        ),
        "under each frame: the model's class and posterior for that 8-bit picture, and p(contrast)"
            .to_string(),
    ];
    grid_picture(&title, &columns, &[(String::new(), cells)])
}

/// The input, the counterfactual and their difference with a colour scale.
fn difference_picture<B: Backend>(
    input: &ModelImage,
    shown: &ModelImage,
    difference: &[f32],
    explanation: &Explanation<B>,
    shown_check: &Recheck,
) -> Result<Vec<u8>, PlotError> {
    let l = &explanation.likelihoods;
    let m = &explanation.margin;
    let largest = difference.iter().fold(0f32, |a, d| a.max(d.abs()));
    // A symmetric scale rounded up to a tenth, at least 0.1.
    let scale = ((f64::from(largest) * 10.0).ceil() / 10.0).clamp(0.1, 1.0);
    let diverging = |v: f64| {
        let c = colorous::RED_BLUE.eval_continuous((0.5 - 0.5 * v / scale).clamp(0.0, 1.0));
        trustgc::image::Rgb([c.r, c.g, c.b])
    };
    let diff_image = RgbImage::from_fn(input.width as u32, input.height as u32, |x, y| {
        diverging(f64::from(
            difference[(y as usize) * input.width + x as usize],
        ))
    });
    let f = zoom(input);
    let (w, h) = (input.width as u32 * f, input.height as u32 * f);
    let diff_image = imageops::resize(&diff_image, w, h, FilterType::Nearest);
    let a = Cell::new(input, Vec::new()).image;
    let b = Cell::new(shown, Vec::new()).image;
    let panel_w = w.max(200) + 24;
    let bar_w = 110;
    let cf = &explanation.counterfactual;
    let shown_step = match cf.image.as_ref().filter(|i| i.reached) {
        Some(image) => format!("8-bit counterfactual at latent step t = {:.2}", image.step),
        None => format!("x' made an 8-bit image, latent step t = {:.2}", cf.step),
    };
    let foot = [
        format!("pixel values in [0, 1]; largest change {largest:.2}; {shown_step}"),
        format!(
            "x' = f⁻¹(z + t·(μ_b − μ_a)) itself, before clamping, reaches p = {:.2} at t = {:.2}",
            cf.target_posterior, cf.step
        ),
    ];
    let foot_w = foot
        .iter()
        .map(|line| text_width(line, LABEL_SIZE - 1))
        .max()
        .unwrap_or(0);
    let width = (2 * MARGIN + 3 * panel_w + bar_w).max(2 * MARGIN + foot_w);
    let top = MARGIN + TITLE + 2 * LINE + 8;
    let foot_top = top + h + LINE + 16;
    let height = foot_top + 2 * LINE + MARGIN;
    let x0 = |i: u32| MARGIN + i * panel_w + (panel_w - w) / 2;
    let images = [
        (&a, x0(0), top),
        (&b, x0(1), top),
        (&diff_image, x0(2), top),
    ];
    let title = format!(
        "{} → {}: margin log p(x|a) − log p(x|b) = {:.2} nats",
        l.class_name(m.predicted),
        l.class_name(m.contrast),
        m.margin
    );
    let headers = [
        (
            "input (as the model sees it)".to_string(),
            format!(
                "{} {:.3}",
                l.class_name(m.predicted),
                l.log_posterior[m.predicted].exp()
            ),
        ),
        (
            "counterfactual (8-bit)".to_string(),
            format!(
                "{} {:.3}",
                l.class_name(shown_check.predicted),
                shown_check.likelihoods.log_posterior[shown_check.predicted].exp()
            ),
        ),
        (
            "difference".to_string(),
            "counterfactual − input".to_string(),
        ),
    ];
    compose(width, height, &images, |root| {
        let centre_top = Pos::new(HPos::Center, VPos::Top);
        root.draw_text(
            &title,
            &text_style(TITLE_SIZE, &INK, Pos::new(HPos::Left, VPos::Top)),
            (MARGIN as i32, MARGIN as i32),
        )?;
        for (i, (header, sub)) in headers.iter().enumerate() {
            let cx = (x0(i as u32) + w / 2) as i32;
            root.draw_text(
                header,
                &text_style(LABEL_SIZE, &INK, centre_top),
                (cx, (MARGIN + TITLE) as i32),
            )?;
            let color = match i {
                1 if shown_check.agrees() => AGREES,
                1 => DISAGREES,
                _ => INK,
            };
            root.draw_text(
                sub,
                &text_style(LABEL_SIZE, &color, centre_top),
                (cx, (MARGIN + TITLE + LINE) as i32),
            )?;
            let x = x0(i as u32) as i32;
            root.draw(&Rectangle::new(
                [(x - 1, top as i32 - 1), (x + w as i32, (top + h) as i32)],
                FRAME.stroke_width(1),
            ))?;
        }
        // The colour scale: a vertical bar from +scale (top) to −scale (bottom).
        let bar_x = (MARGIN + 3 * panel_w) as i32;
        let (bar_top, bar_h) = (top as i32, h as i32);
        for row in 0..bar_h {
            let v = scale * (1.0 - 2.0 * f64::from(row) / f64::from(bar_h - 1).max(1.0));
            let c = diverging(v).0;
            root.draw(&Rectangle::new(
                [(bar_x, bar_top + row), (bar_x + 18, bar_top + row + 1)],
                RGBColor(c[0], c[1], c[2]).filled(),
            ))?;
        }
        root.draw(&Rectangle::new(
            [(bar_x - 1, bar_top - 1), (bar_x + 19, bar_top + bar_h)],
            FRAME.stroke_width(1),
        ))?;
        let label = Pos::new(HPos::Left, VPos::Center);
        for k in 0..=4 {
            let v = scale * (1.0 - 0.5 * f64::from(k));
            let y = bar_top + (f64::from(bar_h - 1) * f64::from(k) / 4.0).round() as i32;
            root.draw(&Rectangle::new(
                [(bar_x + 19, y), (bar_x + 24, y + 1)],
                INK.filled(),
            ))?;
            root.draw_text(
                &format!("{v:+.2}"),
                &text_style(LABEL_SIZE - 2, &INK, label),
                (bar_x + 28, y),
            )?;
        }
        root.draw_text(
            "brighter",
            &text_style(LABEL_SIZE - 2, &INK, Pos::new(HPos::Left, VPos::Bottom)),
            (bar_x - 4, bar_top - 10),
        )?;
        root.draw_text(
            "darker",
            &text_style(LABEL_SIZE - 2, &INK, Pos::new(HPos::Left, VPos::Top)),
            (bar_x - 4, bar_top + bar_h + 10),
        )?;
        for (i, line) in foot.iter().enumerate() {
            root.draw_text(
                line,
                &text_style(LABEL_SIZE - 1, &INK, Pos::new(HPos::Left, VPos::Top)),
                (MARGIN as i32, (foot_top + i as u32 * LINE) as i32),
            )?;
        }
        Ok(())
    })
}

/// A pixel map's colour on the red–blue scale at `scale`: red for `+scale`, blue for
/// `−scale`.
fn diverging_colour(v: f64, scale: f64) -> [u8; 3] {
    let c = colorous::RED_BLUE.eval_continuous((0.5 - 0.5 * v / scale).clamp(0.0, 1.0));
    [c.r, c.g, c.b]
}

/// `map` over a greyed copy of `input`, one square of `zoom` pixels per model pixel: the
/// colour of each value blended in with opacity `|v| / scale`.
fn overlay(input: &ModelImage, map: &PixelMap, scale: f64, zoom: u32) -> RgbImage {
    let grey = input.to_image().to_luma8();
    let small = RgbImage::from_fn(map.width as u32, map.height as u32, |x, y| {
        let v = map.values[y as usize * map.width + x as usize];
        let alpha = (v.abs() / scale).clamp(0.0, 1.0);
        // The image lightened (grey 90..240) so that the colours stay legible on it.
        let g = 90.0 + 150.0 * f64::from(grey.get_pixel(x, y).0[0]) / 255.0;
        let c = diverging_colour(v, scale);
        trustgc::image::Rgb(c.map(|c| ((1.0 - alpha) * g + alpha * f64::from(c)).round() as u8))
    });
    imageops::resize(
        &small,
        small.width() * zoom,
        small.height() * zoom,
        FilterType::Nearest,
    )
}

/// A symmetric colour scale for `map`: the 99th percentile of its `|value|` (a few
/// extreme pixels would otherwise leave the rest colourless; they saturate), rounded up
/// to 2 significant digits; a tiny positive value for an all-zero map.
fn symmetric_scale(map: &PixelMap) -> f64 {
    let mut magnitudes: Vec<f64> = map.values.iter().map(|v| v.abs()).collect();
    magnitudes.sort_by(f64::total_cmp);
    let Some(&high) =
        magnitudes.get((magnitudes.len() * 99 / 100).min(magnitudes.len().max(1) - 1))
    else {
        return 1e-12;
    };
    if high.is_nan() || high <= 0.0 {
        return 1e-12;
    }
    let unit = 10f64.powf(high.log10().floor() - 1.0);
    (high / unit).ceil() * unit
}

/// A scale bar's label: 3 significant digits, signed.
fn scale_label(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 0.01 && v.abs() < 1000.0 {
        let decimals = (2 - v.abs().log10().floor() as i32).max(0) as usize;
        format!("{v:+.decimals$}")
    } else {
        format!("{v:+.2e}")
    }
}

/// `heatmap.png`: the input, the integrated gradients over it and the gradient × input
/// map over it, each map with its own scale bar (nats per pixel).
fn heatmap_picture(
    input: &ModelImage,
    integrated: &PixelMap,
    gradient_times_input: &PixelMap,
    attribution: &Attribution,
    name: &dyn Fn(usize) -> String,
) -> Result<Vec<u8>, PlotError> {
    let zoom = (224 / input.width.max(1) as u32).max(1);
    let (w, h) = (input.width as u32 * zoom, input.height as u32 * zoom);
    let plain = {
        let rgb = input.to_image().to_rgb8();
        imageops::resize(&rgb, w, h, FilterType::Nearest)
    };
    let scales = [
        symmetric_scale(integrated),
        symmetric_scale(gradient_times_input),
    ];
    let maps = [
        overlay(input, integrated, scales[0], zoom),
        overlay(input, gradient_times_input, scales[1], zoom),
    ];
    let bar_w = 96;
    let panel_w = w + 24;
    let x0 = [MARGIN, MARGIN + panel_w, MARGIN + 2 * panel_w + bar_w];
    let (a, b) = (name(attribution.predicted), name(attribution.contrast));
    let baseline = match attribution.baseline {
        trustgc::explain::AttributionBaseline::ImageCounterfactual => "the 8-bit counterfactual",
        trustgc::explain::AttributionBaseline::LatentCounterfactual => {
            "the latent counterfactual x'"
        }
        trustgc::explain::AttributionBaseline::Given => "the given baseline",
    };
    let title =
        format!("Why {a} and not {b}: pixel attributions of the margin log p(x|a) − log p(x|b)");
    let foot = [
        format!(
            "integrated gradients along the straight path from {baseline} to the input, {} steps: \
             Σ = {:.3} nats = m(x) − m(x') = {:.3} − ({:.3}) (relative error {:.1e})",
            attribution.steps,
            attribution.sum(),
            attribution.margin_input,
            attribution.margin_baseline,
            attribution.completeness_error()
        ),
        format!(
            "red: pixels that raise the margin (evidence for {a}); blue: evidence for {b}; \
             gradient × input = (x − x')·∂m/∂x at the input (Σ = {:.3}, need not add up)",
            attribution.gradient_times_input_sum()
        ),
        format!(
            "colours saturate at the 99th percentile of |value| (largest: {} and {} nats)",
            scale_label(integrated.largest()).trim_start_matches('+'),
            scale_label(gradient_times_input.largest()).trim_start_matches('+'),
        ),
    ];
    let foot_w = foot
        .iter()
        .map(|line| text_width(line, LABEL_SIZE - 2))
        .max()
        .unwrap_or(0);
    let title_w = text_width(&title, TITLE_SIZE);
    let width = (x0[2] + w + bar_w + MARGIN)
        .max(2 * MARGIN + foot_w)
        .max(2 * MARGIN + title_w);
    let top = MARGIN + TITLE + LINE + 8;
    let foot_top = top + h + 30;
    let height = foot_top + foot.len() as u32 * LINE + MARGIN;
    let images = [
        (&plain, x0[0], top),
        (&maps[0], x0[1], top),
        (&maps[1], x0[2], top),
    ];
    let headers = [
        format!("input ({} × {})", input.width, input.height),
        "integrated gradients".to_string(),
        "gradient × input".to_string(),
    ];
    compose(width, height, &images, |root| {
        root.draw_text(
            &title,
            &text_style(TITLE_SIZE, &INK, Pos::new(HPos::Left, VPos::Top)),
            (MARGIN as i32, MARGIN as i32),
        )?;
        for (i, header) in headers.iter().enumerate() {
            let x = x0[i] as i32;
            root.draw_text(
                header,
                &text_style(LABEL_SIZE, &INK, Pos::new(HPos::Center, VPos::Top)),
                (x + w as i32 / 2, (MARGIN + TITLE) as i32),
            )?;
            root.draw(&Rectangle::new(
                [(x - 1, top as i32 - 1), (x + w as i32, (top + h) as i32)],
                FRAME.stroke_width(1),
            ))?;
        }
        // A scale bar right of each map: +scale (top) to −scale (bottom).
        for (k, &scale) in scales.iter().enumerate() {
            let bar_x = (x0[k + 1] + w + 8) as i32;
            let (bar_top, bar_h) = (top as i32, h as i32);
            for row in 0..bar_h {
                let v = scale * (1.0 - 2.0 * f64::from(row) / f64::from(bar_h - 1).max(1.0));
                let c = diverging_colour(v, scale);
                root.draw(&Rectangle::new(
                    [(bar_x, bar_top + row), (bar_x + 14, bar_top + row + 1)],
                    RGBColor(c[0], c[1], c[2]).filled(),
                ))?;
            }
            root.draw(&Rectangle::new(
                [(bar_x - 1, bar_top - 1), (bar_x + 15, bar_top + bar_h)],
                FRAME.stroke_width(1),
            ))?;
            for j in 0..=4 {
                let v = scale * (1.0 - 0.5 * f64::from(j));
                let y = bar_top + (f64::from(bar_h - 1) * f64::from(j) / 4.0).round() as i32;
                root.draw(&Rectangle::new(
                    [(bar_x + 15, y), (bar_x + 19, y + 1)],
                    INK.filled(),
                ))?;
                root.draw_text(
                    &scale_label(v),
                    &text_style(LABEL_SIZE - 3, &INK, Pos::new(HPos::Left, VPos::Center)),
                    (bar_x + 21, y),
                )?;
            }
            root.draw_text(
                "nats/pixel",
                &text_style(LABEL_SIZE - 3, &INK, Pos::new(HPos::Left, VPos::Top)),
                (bar_x - 4, bar_top + bar_h + 6),
            )?;
        }
        for (i, line) in foot.iter().enumerate() {
            root.draw_text(
                line,
                &text_style(LABEL_SIZE - 2, &INK, Pos::new(HPos::Left, VPos::Top)),
                (MARGIN as i32, (foot_top + i as u32 * LINE) as i32),
            )?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::Flex;
    use trustgc::Shipped;
    use trustgc::image::DynamicImage;
    use trustgc_backend::CpuAutodiff;

    fn decode(png: &[u8]) -> DynamicImage {
        trustgc::image::load_from_memory(png).unwrap()
    }

    fn example(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/images")
            .join(name)
    }

    /// Where the pictures go to be looked at ($TRUSTGC_PLOTS_DIR), else a temporary
    /// folder removed at the end.
    fn out_dir(name: &str) -> (PathBuf, bool) {
        match std::env::var_os("TRUSTGC_PLOTS_DIR") {
            Some(dir) => (PathBuf::from(dir).join(name), true),
            None => (
                std::env::temp_dir().join(format!("trustgc-explain-{}-{name}", std::process::id())),
                false,
            ),
        }
    }

    #[test]
    fn explain_writes_readable_pictures_of_the_expected_sizes() {
        let classifier =
            Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default()).unwrap();
        let (dir, keep) = out_dir("bag");
        let _ = std::fs::remove_dir_all(&dir);
        let settings = ExplainSettings::default();
        let value = explain_one::<CpuAutodiff>(
            &classifier,
            &example("bag.png"),
            &dir,
            &settings,
            &AttributionSettings::default(),
        )
        .unwrap();
        assert_eq!(value["predicted"]["name"], "Bag");
        for key in [
            "image",
            "predicted",
            "contrast",
            "margin",
            "counterfactual",
            "attribution",
        ] {
            assert!(!value[key].is_null(), "{key}");
        }
        // The attributions add up to the change of the margin (1 %, the CLI's warning).
        let at = &value["attribution"];
        let (sum, change) = (
            at["sum"].as_f64().unwrap(),
            at["margin_change"].as_f64().unwrap(),
        );
        assert!(
            (sum - change).abs() <= 1e-2 * change.abs(),
            "{sum} vs {change}"
        );
        assert_eq!(
            at["png"].as_str().unwrap(),
            dir.join("heatmap.png").display().to_string()
        );
        for key in ["class", "posterior", "png"] {
            assert!(
                !value["counterfactual"][key].is_null(),
                "counterfactual.{key}"
            );
        }
        let read = |name: &str| decode(&std::fs::read(dir.join(name)).unwrap());
        let counterfactual = read("counterfactual.png");
        assert_eq!((counterfactual.width(), counterfactual.height()), (28, 28));
        // The written counterfactual is classified as the JSON says.
        let again = classifier
            .likelihoods_file(&dir.join("counterfactual.png"))
            .unwrap();
        assert_eq!(
            again.predicted().class as u64,
            value["counterfactual"]["predicted"].as_u64().unwrap()
        );
        assert!(
            (again.log_posterior[value["counterfactual"]["class"].as_u64().unwrap() as usize]
                .exp()
                - value["counterfactual"]["posterior"].as_f64().unwrap())
            .abs()
                < 1e-9
        );
        // 7 frames of 112 px (28 × 4) and captions; three panels and a scale bar.
        let path = read("path.png");
        assert!(
            path.width() >= 7 * 112 && path.height() >= 112,
            "{:?}",
            (path.width(), path.height())
        );
        let difference = read("difference.png");
        assert!(difference.width() >= 3 * 112 && difference.height() >= 112);
        // The input and two maps at the model's 28 × 28 pixels, enlarged 8 times.
        let heatmap = read("heatmap.png");
        assert!(
            heatmap.width() >= 3 * 224 && heatmap.height() >= 224,
            "{:?}",
            (heatmap.width(), heatmap.height())
        );
        let json: Value =
            serde_json::from_slice(&std::fs::read(dir.join("explanation.json")).unwrap()).unwrap();
        assert_eq!(json, value);
        if !keep {
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn the_difference_picture_uses_the_diverging_scale() {
        let classifier =
            Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default()).unwrap();
        let image = read_image(&example("trouser.png")).unwrap();
        let x = classifier.preprocess(&[image]).unwrap();
        let explanation = classifier
            .explain(x.clone(), &ExplainSettings::default())
            .unwrap();
        let input = classifier.input_images(x).unwrap().remove(0);
        let shown = explanation.counterfactual.image.as_ref().unwrap();
        let difference = input.difference(&shown.image).unwrap();
        let png = difference_picture(
            &input,
            &shown.image,
            &difference,
            &explanation,
            &shown.recheck,
        )
        .unwrap();
        let picture = decode(&png).to_rgb8();
        // Both ends of the red–blue scale appear (the scale bar at least).
        let has = |want: [u8; 3]| {
            picture
                .pixels()
                .any(|p| p.0.iter().zip(want).all(|(a, b)| a.abs_diff(b) <= 12))
        };
        let red = colorous::RED_BLUE.eval_continuous(0.0);
        let blue = colorous::RED_BLUE.eval_continuous(1.0);
        assert!(has([red.r, red.g, red.b]) && has([blue.r, blue.g, blue.b]));
        assert_eq!(picture.get_pixel(1, 1).0, [255, 255, 255]);
    }

    #[test]
    fn the_heatmap_overlays_the_map_on_the_image_at_its_resolution() {
        let input = ModelImage {
            width: 28,
            height: 28,
            channels: 1,
            pixels: (0..28 * 28).map(|i| (i % 28) as f32 / 27.0).collect(),
            padding_max: 0.0,
        };
        let mut values = vec![0.0; 28 * 28];
        values[0] = 2.0;
        values[1] = -2.0;
        values[2] = 1.0;
        let map = PixelMap {
            width: 28,
            height: 28,
            values,
            padding: 0.0,
        };
        let picture = overlay(&input, &map, 2.0, 8);
        assert_eq!((picture.width(), picture.height()), (224, 224));
        // Full opacity at ±scale: the ends of the red–blue scale; each model pixel is an
        // 8 × 8 square.
        let red = colorous::RED_BLUE.eval_continuous(0.0);
        let blue = colorous::RED_BLUE.eval_continuous(1.0);
        assert_eq!(picture.get_pixel(7, 7).0, [red.r, red.g, red.b]);
        assert_eq!(picture.get_pixel(8, 0).0, [blue.r, blue.g, blue.b]);
        // Half the scale: half way between the image's grey and the colour.
        let half = picture.get_pixel(16, 0).0;
        assert!(half[0] > half[2], "{half:?}");
        // No attribution: the lightened image, grey.
        let grey = picture.get_pixel(27 * 8, 8).0;
        assert!(
            grey[0] == grey[1] && grey[1] == grey[2] && grey[0] == 240,
            "{grey:?}"
        );
        let dark = picture.get_pixel(3 * 8, 8).0;
        assert!(dark[0] < grey[0], "{dark:?}");
        // The scale: the 99th percentile of |value| (199 of 1..=200), rounded up to 2
        // significant digits; labels with 3.
        let ramp = PixelMap {
            width: 20,
            height: 10,
            values: (1..=200).map(f64::from).collect(),
            padding: 0.0,
        };
        assert_eq!(symmetric_scale(&ramp), 200.0);
        assert_eq!(scale_label(0.88), "+0.880");
        assert_eq!(scale_label(-12.5), "-12.5");
        assert_eq!(scale_label(-4.4e-3), "-4.40e-3");
    }

    #[test]
    fn prototypes_grid_names_every_class() {
        let (dir, keep) = out_dir("prototypes");
        let grid = GridArgs {
            samples: 3,
            temperature: 0.7,
            classes: Vec::new(),
            seed: 0,
        };
        let args = GridRequest {
            model: "fashion-mnist",
            file: dir.join("prototypes.png"),
            grid: &grid,
        };
        let classifier =
            Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default()).unwrap();
        prototypes(&classifier, &args).unwrap();
        let picture = decode(&std::fs::read(dir.join("prototypes.png")).unwrap());
        // 10 rows of 112-pixel pictures, 4 columns.
        assert!(picture.height() >= 10 * 112 && picture.width() >= 4 * 112);
        let hat = GridArgs {
            classes: vec!["Hat".into()],
            ..grid.clone()
        };
        let bad = GridRequest { grid: &hat, ..args };
        let err = prototypes(&classifier, &bad).unwrap_err();
        assert!(err.to_string().contains("Hat"), "{err}");
        if !keep {
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[test]
    fn images_the_model_cannot_take_are_errors() {
        let classifier =
            Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default()).unwrap();
        let (dir, _) = out_dir("missing");
        let err = explain_one::<CpuAutodiff>(
            &classifier,
            Path::new("no-such-image.png"),
            &dir,
            &ExplainSettings::default(),
            &AttributionSettings::default(),
        )
        .unwrap_err();
        assert!(
            matches!(err, ExplainImageError::Explain(ExplainError::Classify(_))),
            "{err}"
        );
        assert!(!dir.join("counterfactual.png").exists());
    }

    #[test]
    fn both_or_neither_plots_every_image() {
        let (dir, keep) = out_dir("both-or-neither");
        let _ = std::fs::remove_dir_all(&dir);
        let images: Vec<PathBuf> = ["bag.png", "trouser.png", "chelsea.png"]
            .iter()
            .map(|name| example(name))
            .chain([PathBuf::from("no-such-image.png")])
            .collect();
        let args = ExplainArgs::try_parse_from(
            ["explain", "--both-or-neither", "--out"]
                .into_iter()
                .map(String::from)
                .chain([dir.display().to_string()])
                .chain(images.iter().map(|p| p.display().to_string())),
        )
        .unwrap();
        let classifier =
            Classifier::<Flex>::shipped(Shipped::FashionMnist, &Default::default()).unwrap();
        assert!(classifier.ood().is_some(), "the shipped model has ood.json");
        let failures = both_or_neither(&classifier, &args).unwrap();
        assert_eq!(failures, 1, "the missing image");
        let plot = decode(&std::fs::read(dir.join("both-or-neither.png")).unwrap());
        assert_eq!((plot.width(), plot.height()), (860, 760));
        let rgb = plot.to_rgb8();
        // A point of each verdict drawn (Tableau colours), the band filled.
        let has = |want: RGBColor| {
            rgb.pixels().any(|p| {
                p.0.iter()
                    .zip([want.0, want.1, want.2])
                    .all(|(a, b)| a.abs_diff(b) <= 6)
            })
        };
        assert!(has(Judged::Confident.colour()), "a confident point");
        if !keep {
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// `ExplainArgs` as clap parses them.
    #[derive(clap::Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ExplainArgs,
    }

    impl ExplainArgs {
        fn try_parse_from(words: impl IntoIterator<Item = String>) -> Result<Self, clap::Error> {
            use clap::Parser;
            Wrapper::try_parse_from(words).map(|w| w.args)
        }
    }

    #[test]
    fn the_typical_curve_is_where_the_marginal_is_c() {
        let (c, k, d) = (-2.0, 10, 1024.0);
        for u in [-2.5, -2.1, -2.0, -1.999] {
            let v = typical_curve(u, c, k, d).unwrap();
            // log(e^{Du} + e^{Dv}) − log K = D·c.
            let (a, b) = (d * u, d * v);
            let m = a.max(b);
            let marginal = m + ((a - m).exp() + (b - m).exp()).ln() - (k as f64).ln();
            assert!((marginal - d * c).abs() < 1e-6, "{u}: {marginal}");
        }
        // Past the asymptote the top class alone is above c.
        assert!(typical_curve(-2.0 + 0.01, c, k, d).is_none());
    }

    #[test]
    fn several_images_get_one_folder_each() {
        let out = Path::new("out");
        let dirs = image_dirs(
            out,
            &[
                PathBuf::from("a/x.png"),
                PathBuf::from("b/x.png"),
                PathBuf::from("y.jpg"),
            ],
        );
        assert_eq!(dirs, [out.join("x"), out.join("x-2"), out.join("y")]);
        assert_eq!(
            image_dirs(out, &[PathBuf::from("x.png")]),
            [out.to_path_buf()]
        );
    }
}
