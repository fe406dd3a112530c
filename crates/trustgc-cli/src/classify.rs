//! `trustgc classify`, `trustgc preprocess` and `trustgc fit-ood`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use trustgc::ood::{Calibration, FitSettings, LatentGaussian};
use trustgc::preprocess::read_model_input;
use trustgc::scores::{model_pixels, png_bits};
use trustgc::{Classifier, Likelihoods, OodStats, Verdict};
use trustgc_backend::{BackendTask, run_on};
use trustgc_core::input::InputSpec;
use trustgc_train::data::{
    EpochLoader, GrayscaleSamples, IdxSplit, LabeledImages, LoaderSettings, Samples,
};

use crate::model_dir;

type BoxError = Box<dyn std::error::Error>;

/// `trustgc classify`.
#[derive(Args, Debug)]
pub struct ClassifyArgs {
    /// Image files (PNG or JPEG).
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// A shipped model's name (built into the binary), a model folder, or a released
    /// model on the hub (`hub:beta_8`).
    #[arg(long, default_value = model_dir::DEFAULT_MODEL)]
    model: String,
    /// How many classes to list per image.
    #[arg(long, default_value_t = 3)]
    top_k: usize,
    /// One JSON object per line instead of tables.
    #[arg(long)]
    json: bool,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N` (default: $BURN_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
}

/// `trustgc preprocess`.
#[derive(Args, Debug)]
pub struct PreprocessArgs {
    /// Image files.
    #[arg(required = true)]
    images: Vec<PathBuf>,
    /// Use this model's input representation.
    #[arg(long, conflicts_with = "preset")]
    model: Option<String>,
    /// Use a built-in representation: `imagenet` (the released models' eval transform).
    #[arg(long)]
    preset: Option<String>,
    /// Where to write the batch `x` `[B, C, H, W]` (safetensors).
    #[arg(long)]
    output: PathBuf,
}

/// `trustgc fit-ood`.
#[derive(Args, Debug)]
pub struct FitOodArgs {
    /// Labelled in-distribution images: IDX files (grayscale models) or class folders of
    /// photos named as the model's classes (photo models).
    #[arg(long)]
    data: PathBuf,
    /// Photos: leave out (and report) images that cannot be decoded, instead of failing.
    #[arg(long)]
    skip_bad_images: bool,
    /// IDX data: `test` (t10k-*) or `train`.
    #[arg(long, default_value = "test")]
    split: String,
    /// Fit on this many images (after `--skip`) and measure the false-alarm rate on the
    /// others.
    #[arg(long)]
    calibrate: Option<usize>,
    /// Leave the first this many images out of the fit (they are measured as held-out
    /// images), e.g. to keep images used by tests out of the calibration.
    #[arg(long, default_value_t = 0)]
    skip: usize,
    /// The false-alarm rate of the marginal test (both tails) and of each class test.
    #[arg(long, default_value_t = FitSettings::default().alpha)]
    alpha: f64,
    /// The false-alarm rate of the complexity test (the model against a PNG encoder;
    /// docs/ood.md) [default: 0.01 with a latent test, 0.03 without one (--no-latent,
    /// photo models): the rates add up to 5 % either way]
    #[arg(long)]
    alpha_complexity: Option<f64>,
    /// Fit no complexity test (verdicts as before it existed).
    #[arg(long)]
    no_complexity: bool,
    /// The false-alarm rate of the latent test (the latent's Mahalanobis distance under a
    /// Gaussian refitted on real latents; docs/ood.md).
    #[arg(long, default_value_t = FitSettings::default().alpha_latent.unwrap_or(0.02))]
    alpha_latent: f64,
    /// Fit no latent test.
    #[arg(long)]
    no_latent: bool,
    /// IDX data: the split whose images the latent test's Gaussian is fitted on. It must
    /// not be the calibration images (their statistics set the threshold); the training
    /// split is the natural choice.
    #[arg(long, default_value = "train")]
    latent_split: String,
    /// How many images (the first of `--latent-split`) the Gaussian is fitted on.
    #[arg(long, default_value_t = 10_000)]
    latent_images: usize,
    /// Principal directions of the Gaussian's covariance (the rest share one variance).
    #[arg(long, default_value_t = trustgc::ood::DEFAULT_LATENT_RANK)]
    latent_rank: usize,
    /// The least posterior of a class that agrees with an input (two or more agreeing
    /// classes make a verdict ambiguous).
    #[arg(long, default_value_t = 0.1)]
    min_posterior: f64,
    /// The model folder (`ood.json` is written into it; the shipped models are built into
    /// the binary: give their folder, e.g. `weights/fashion-mnist` in the repository).
    #[arg(long)]
    model: String,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N`.
    #[arg(long)]
    device: Option<String>,
}

fn print_table(path: &std::path::Path, result: &Likelihoods, top_k: usize) {
    println!("{}", path.display());
    let bpd = result
        .bits_per_dim
        .map(|b| format!("{b:.3} bits/dim, "))
        .unwrap_or_default();
    println!(
        "  {bpd}log p(x) = {:.1} nats; verdict: {}",
        result.log_marginal,
        result.verdict_text().unwrap_or_else(|| "-".into())
    );
    println!(
        "  {:<24} {:>10} {:>18}",
        "class", "posterior", "log p(x|y) [nats]"
    );
    for score in result.top_k(top_k) {
        println!(
            "  {:<24} {:>10.4} {:>18.1}",
            score.name, score.posterior, score.log_likelihood
        );
    }
}

struct ClassifyTask {
    args: ClassifyArgs,
}

impl BackendTask for ClassifyTask {
    type Output = Result<usize, BoxError>;

    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let classifier: Classifier<B> = model_dir::resolve(&args.model)?.classifier(&device)?;
        let bar = (args.images.len() > 1 && std::io::stderr().is_terminal()).then(|| {
            let bar = ProgressBar::new(args.images.len() as u64);
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                    .expect("a valid template"),
            );
            bar
        });
        let mut failures = 0;
        for path in &args.images {
            match classifier.likelihoods_file(path) {
                Ok(result) => {
                    let emit = || {
                        if args.json {
                            let mut value =
                                serde_json::to_value(&result).expect("likelihoods serialize");
                            value["image"] = serde_json::json!(path.display().to_string());
                            value["top_k"] = serde_json::to_value(result.top_k(args.top_k))
                                .expect("scores serialize");
                            println!("{value}");
                        } else {
                            print_table(path, &result, args.top_k);
                        }
                    };
                    match &bar {
                        Some(bar) => bar.suspend(emit),
                        None => emit(),
                    }
                }
                Err(e) => {
                    failures += 1;
                    let report = || eprintln!("error: {}: {e}", path.display());
                    match &bar {
                        Some(bar) => bar.suspend(report),
                        None => report(),
                    }
                }
            }
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

/// `trustgc classify`: returns how many images failed.
pub fn classify(args: ClassifyArgs) -> Result<usize, BoxError> {
    let spec = crate::device(&args.device)?;
    run_on(&spec, ClassifyTask { args })?
}

/// `trustgc preprocess`.
pub fn preprocess(args: PreprocessArgs) -> Result<(), BoxError> {
    let spec = match (&args.model, args.preset.as_deref()) {
        (Some(model), _) => model_dir::resolve(model)?
            .config()?
            .input
            .ok_or("the model has no input representation")?,
        (None, Some("imagenet")) | (None, None) => InputSpec::imagenet(),
        (None, Some(other)) => {
            return Err(format!("--preset {other}: only `imagenet` is built in").into());
        }
    };
    let [c, h, w] = spec.model_shape();
    let mut data: Vec<f32> = Vec::with_capacity(args.images.len() * c * h * w);
    for path in &args.images {
        data.extend(read_model_input(path, &spec)?);
    }
    let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(
        safetensors::Dtype::F32,
        vec![args.images.len(), c, h, w],
        &bytes,
    )?;
    let encoded = safetensors::serialize(vec![("x".to_string(), view)], None)?;
    let inputs: Vec<&std::path::Path> = args.images.iter().map(PathBuf::as_path).collect();
    trustgc_io::write_file(&args.output, &inputs, &encoded)?;
    eprintln!(
        "wrote x [{}, {c}, {h}, {w}] to {}",
        args.images.len(),
        args.output.display()
    );
    Ok(())
}

/// The likelihoods of every image of an IDX split (a grayscale model's data), in order,
/// with a progress bar on a terminal; and the images (with their labels).
pub(crate) fn idx_likelihoods<B: burn::tensor::backend::Backend>(
    classifier: &Classifier<B>,
    data_dir: &std::path::Path,
    split: &str,
) -> Result<(Vec<Likelihoods>, LabeledImages), BoxError> {
    let (results, images) = idx_map(classifier, data_dir, split, None, |x| {
        classifier.likelihoods_tensor(x)
    })?;
    Ok((results, images))
}

/// The latents `[z_fc, z_conv]` of the first `limit` images (all when `None`) of an IDX
/// split, with their labels.
pub(crate) fn idx_latents<B: burn::tensor::backend::Backend>(
    classifier: &Classifier<B>,
    data_dir: &std::path::Path,
    split: &str,
    limit: Option<usize>,
) -> Result<(Vec<Vec<f32>>, Vec<usize>), BoxError> {
    let (latents, images) = idx_map(classifier, data_dir, split, limit, |x| {
        classifier.latents_tensor(x)
    })?;
    let labels = (0..latents.len()).map(|i| images.label(i)).collect();
    Ok((latents, labels))
}

/// Runs `f` over an IDX split's images (the first `limit`), in batches of 100 model
/// inputs, and collects one result per image.
fn idx_map<B: burn::tensor::backend::Backend, T>(
    classifier: &Classifier<B>,
    data_dir: &std::path::Path,
    split: &str,
    limit: Option<usize>,
    mut f: impl FnMut(burn::tensor::Tensor<B, 4>) -> Result<Vec<T>, trustgc::ClassifyError>,
) -> Result<(Vec<T>, LabeledImages), BoxError> {
    let config = classifier.config();
    let Some(InputSpec::Grayscale(input)) = &config.input else {
        return Err(
            "IDX data needs a grayscale model (one with a grayscale input representation)".into(),
        );
    };
    let split = match split {
        "test" => IdxSplit::Test,
        "train" => IdxSplit::Train,
        other => return Err(format!("--split {other}: use `test` or `train`").into()),
    };
    let images = LabeledImages::read_idx(data_dir, split, config.n_classes)?;
    if images.is_empty() {
        return Err(format!("{} holds no images", data_dir.display()).into());
    }
    let data: Arc<dyn Samples> = Arc::new(GrayscaleSamples {
        images: images.clone(),
        input: input.clone(),
    });
    let settings = LoaderSettings {
        batch_size: 100,
        shuffle: None,
        dequantize: None,
        noise_per_epoch: false,
        flip: false,
        label_smoothing: 0.0,
        classes: config.n_classes,
    };
    let device = classifier.device().clone();
    let count = limit.map_or(data.len(), |l| l.min(data.len()));
    let loader = EpochLoader::<B>::new(data.clone(), (0..count).collect(), settings, 0, device);
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| ProgressBar::new(count as u64));
    let mut results = Vec::with_capacity(count);
    for batch in burn::data::dataloader::DataLoader::iter(&loader) {
        results.extend(f(batch.x)?);
        if let Some(bar) = &bar {
            bar.set_position(results.len() as u64);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // Results are paired with images by index: the loader must have dropped none.
    if results.len() != count {
        return Err(format!(
            "{}: {} of {count} images were scored; every IDX image should be",
            data_dir.display(),
            results.len(),
        )
        .into());
    }
    Ok((results, images))
}

/// Likelihoods, labels and PNG sizes of labelled images.
type Scored = (Vec<Likelihoods>, Vec<usize>, Vec<f64>);

/// Likelihoods, labels and PNG sizes (of the 8-bit crops the model sees) of the photos in
/// the class folders of `data_dir`, whose classes must be the model's.
fn photo_likelihoods<B: burn::tensor::backend::Backend>(
    classifier: &Classifier<B>,
    data_dir: &std::path::Path,
    skip_bad_images: bool,
) -> Result<Scored, BoxError> {
    let config = classifier.config();
    let spec = config
        .input
        .clone()
        .ok_or("the model has no input representation")?;
    let photo_spec = trustgc_train::photos::PhotoSpec::from_input(&spec)
        .ok_or("class folders of photos need a model with an image_net input representation")?;
    let photos = trustgc_train::photos::PhotoSamples::open(data_dir, photo_spec, skip_bad_images)?;
    if photos.classes != config.class_names {
        return Err(format!(
            "the class folders of {} ({}) are not the model's classes ({})",
            data_dir.display(),
            photos.classes.join(", "),
            config.class_names.join(", ")
        )
        .into());
    }
    if photos.files.is_empty() {
        return Err(format!("{} holds no images", data_dir.display()).into());
    }
    let bar = std::io::stderr()
        .is_terminal()
        .then(|| ProgressBar::new(photos.files.len() as u64));
    let (mut results, mut labels, mut bits) = (Vec::new(), Vec::new(), Vec::new());
    for chunk in photos.files.chunks(16) {
        let images = chunk
            .iter()
            .map(|(path, _)| trustgc::preprocess::read_image(path))
            .collect::<Result<Vec<_>, _>>()?;
        for image in &images {
            bits.push(png_bits(&model_pixels(image, &spec)?));
        }
        results.extend(classifier.likelihoods_batch(&images)?);
        labels.extend(chunk.iter().map(|(_, label)| *label));
        if let Some(bar) = &bar {
            bar.inc(chunk.len() as u64);
        }
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    Ok((results, labels, bits))
}

/// Refuses a latent test that cannot be fitted or stored, before any image is read: a
/// latent beyond [`trustgc::ood::latent::MAX_LATENT_DIMS`], a rank outside `1..D`, or a
/// Gaussian whose `ood.json` would pass the 16 MiB a model folder's JSON file may hold
/// (about 24 bytes per number as written).
fn check_latent_size(config: &trustgc::GcConfig, rank: usize) -> Result<(), BoxError> {
    let d = config.total_dims();
    let max = trustgc::ood::latent::MAX_LATENT_DIMS;
    if d > max {
        return Err(format!(
            "the latent test needs a latent of at most {max} dimensions; this model's has {d}: fit with --no-latent"
        )
        .into());
    }
    if rank == 0 || rank >= d {
        return Err(format!("--latent-rank {rank} must be between 1 and {}", d - 1).into());
    }
    let numbers = (rank + config.n_classes) * d + d;
    if numbers.saturating_mul(24) > 12 << 20 {
        return Err(format!(
            "--latent-rank {rank}: the Gaussian ({numbers} numbers) would make ood.json larger than a model folder may hold; use a smaller rank"
        )
        .into());
    }
    Ok(())
}

struct FitOodTask {
    args: FitOodArgs,
}

impl BackendTask for FitOodTask {
    type Output = Result<(OodStats, Option<(usize, f64, f64)>, PathBuf), BoxError>;

    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let dir = model_dir::resolve(&args.model)?.writable_dir()?;
        // The statistics in `ood.json` (if any) are being replaced: not read.
        let (config, model) = model_dir::load::<B>(&dir, &device)?;
        let classifier = Classifier::new(config.clone(), model, &device);
        let mut latents: Option<(LatentGaussian, Vec<Vec<f32>>)> = None;
        let (results, labels, complexity_bits) = match &config.input {
            Some(InputSpec::ImageNet { .. }) => {
                if !args.no_latent {
                    eprintln!(
                        "note: no latent test: it is fitted on IDX data only (photo models' latents, {} dimensions, are also beyond its {} limit); --no-latent silences this",
                        config.total_dims(),
                        trustgc::ood::latent::MAX_LATENT_DIMS
                    );
                }
                let (results, labels, bits) =
                    photo_likelihoods(&classifier, &args.data, args.skip_bad_images)?;
                (results, labels, (!args.no_complexity).then_some(bits))
            }
            _ => {
                let (results, images) = idx_likelihoods(&classifier, &args.data, &args.split)?;
                if !args.no_latent {
                    check_latent_size(&config, args.latent_rank)?;
                    if args.latent_split == args.split {
                        return Err(format!(
                            "--latent-split {} is the calibration split: the Gaussian must be fitted on other images than those that set its threshold",
                            args.latent_split
                        )
                        .into());
                    }
                    let (fit, fit_labels) = idx_latents(
                        &classifier,
                        &args.data,
                        &args.latent_split,
                        Some(args.latent_images),
                    )
                    .map_err(|e| {
                        format!(
                            "the latent test's fitting images (--latent-split {}): {e} (--no-latent fits the other tests without it)",
                            args.latent_split
                        )
                    })?;
                    let gaussian = LatentGaussian::fit(
                        &fit,
                        &fit_labels,
                        config.n_classes,
                        config.n_loss_dims,
                        args.latent_rank,
                    )?;
                    let (own, _) = idx_latents(&classifier, &args.data, &args.split, None)?;
                    latents = Some((gaussian, own));
                }
                // The complexity test's PNG sizes, from the 8-bit images the model sees.
                let spec = config
                    .input
                    .clone()
                    .ok_or("the model has no input representation")?;
                let complexity_bits: Option<Vec<f64>> = (!args.no_complexity)
                    .then(|| {
                        (0..images.len())
                            .map(|i| {
                                let image = crate::ood_eval::luma_image(
                                    images.side,
                                    images.side,
                                    images.image(i),
                                )?;
                                let pixels = model_pixels(&image, &spec)?;
                                Ok::<f64, BoxError>(png_bits(&pixels))
                            })
                            .collect::<Result<Vec<f64>, BoxError>>()
                    })
                    .transpose()?;
                let labels = (0..images.len()).map(|i| images.label(i)).collect();
                (results, labels, complexity_bits)
            }
        };
        let d = config.total_dims() as f64;
        let (mut marginal, mut classes, mut posteriors) = (Vec::new(), Vec::new(), Vec::new());
        let mut complexity = Vec::new();
        for (i, result) in results.into_iter().enumerate() {
            if let Some(bits) = &complexity_bits {
                complexity.push(trustgc::scores::complexity(
                    result.log_marginal,
                    bits[i],
                    config.total_dims(),
                ));
            }
            marginal.push(result.log_marginal / d);
            classes.push(result.class_distances);
            posteriors.push(result.log_posterior);
        }
        let start = args.skip.min(labels.len());
        let end = match args.calibrate {
            Some(n) => start.saturating_add(n).min(labels.len()),
            None => labels.len(),
        };
        if start == end {
            return Err(format!(
                "no images left to fit on ({} images, --skip {})",
                labels.len(),
                args.skip
            )
            .into());
        }
        let source = format!(
            "{} split of {}, images {start}..{end}",
            args.split,
            args.data
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        );
        // The default rates add up to 5 % with or without the latent test.
        let defaults = if latents.is_some() {
            FitSettings::default()
        } else {
            FitSettings::without_latent()
        };
        let alpha_complexity = args
            .alpha_complexity
            .or(defaults.alpha_complexity)
            .unwrap_or(0.03);
        let settings = FitSettings {
            alpha: args.alpha,
            alpha_complexity: (!args.no_complexity).then_some(alpha_complexity),
            min_posterior: args.min_posterior,
            alpha_latent: latents.as_ref().map(|_| args.alpha_latent),
        };
        let latent_statistics: Option<Vec<f64>> = latents
            .as_ref()
            .map(|(gaussian, own)| gaussian.statistics(own));
        let all = Calibration {
            marginal: &marginal,
            complexity: complexity_bits.is_some().then_some(complexity.as_slice()),
            class_distances: &classes,
            log_posteriors: &posteriors,
            latent: latent_statistics.as_deref(),
            labels: &labels,
        };
        let fit = Calibration {
            marginal: &marginal[start..end],
            complexity: all.complexity.map(|c| &c[start..end]),
            class_distances: &classes[start..end],
            log_posteriors: &posteriors[start..end],
            latent: all.latent.map(|c| &c[start..end]),
            labels: &labels[start..end],
        };
        let stats = OodStats::fit(&settings, &fit, latents.map(|(g, _)| g), source)?;
        let held_out: Vec<usize> = (0..start).chain(end..labels.len()).collect();
        let held_out = (!held_out.is_empty()).then(|| {
            let alarms = held_out
                .iter()
                .filter(|&&i| {
                    stats.verdict_of(&all, i) != Some(Verdict::Confident { class: labels[i] })
                })
                .count();
            let ood = held_out
                .iter()
                .filter(|&&i| {
                    matches!(
                        stats.verdict_of(&all, i),
                        Some(Verdict::OutOfDistribution { .. })
                    )
                })
                .count();
            let n = held_out.len() as f64;
            (held_out.len(), alarms as f64 / n, ood as f64 / n)
        });
        Ok((stats, held_out, dir))
    }
}

/// `trustgc fit-ood`.
pub fn fit_ood(args: FitOodArgs) -> Result<(), BoxError> {
    if !(args.alpha > 0.0 && args.alpha < 1.0) {
        return Err(format!("--alpha {} must be between 0 and 1", args.alpha).into());
    }
    if let Some(alpha) = args.alpha_complexity
        && !(alpha > 0.0 && alpha < 1.0)
    {
        return Err(format!("--alpha-complexity {alpha} must be between 0 and 1").into());
    }
    if !(args.alpha_latent > 0.0 && args.alpha_latent < 1.0) {
        return Err(format!(
            "--alpha-latent {} must be between 0 and 1",
            args.alpha_latent
        )
        .into());
    }
    if !(args.min_posterior > 0.0 && args.min_posterior <= 1.0) {
        return Err(format!("--min-posterior {} must be in (0, 1]", args.min_posterior).into());
    }
    let spec = crate::device(&args.device)?;
    let (stats, held_out, dir) = run_on(&spec, FitOodTask { args })??;
    trustgc::weights::model_dir::write_model_file(
        &dir,
        "ood.json",
        serde_json::to_string_pretty(&stats)?.as_bytes(),
    )?;
    println!(
        "fitted on {} images (alpha {}): log p(x)/D typical range [{:.4}, {:.4}]",
        stats.images, stats.alpha, stats.marginal_low, stats.marginal_high
    );
    if let Some(test) = &stats.latent {
        println!(
            "latent test: Gaussian fitted on {} images (rank {}), threshold {:.4} (alpha {})",
            test.gaussian.images,
            test.gaussian.components.len(),
            test.threshold,
            test.alpha
        );
    }
    println!(
        "false alarms (not 'confident' in the right class) on the fitting images: {:.2} %",
        100.0 * stats.false_alarm_rate
    );
    if let Some((images, alarms, ood)) = held_out {
        println!(
            "on the {images} held-out images: not 'confident' in the right class {:.2} %, called out of distribution {:.2} %",
            100.0 * alarms,
            100.0 * ood
        );
    }
    println!("wrote {}", dir.join("ood.json").display());
    Ok(())
}
