//! `trustgc calibrate`: fit a temperature on the class distances on a validation split,
//! measure it on the held-out images, and store it as the model folder's
//! `calibration.json`.

use std::path::PathBuf;

use clap::Args;
use trustgc::Classifier;
use trustgc::calibration::TemperatureScaling;
use trustgc::metrics::{CalibrationReport, apply_temperature, calibration_report, fit_temperature};
use trustgc_backend::{BackendTask, run_on};

use crate::classify::idx_likelihoods;
use crate::model_dir;

type BoxError = Box<dyn std::error::Error>;

/// `trustgc calibrate`.
#[derive(Args, Debug)]
pub struct CalibrateArgs {
    /// The model folder (`calibration.json` is written into it; for the shipped model,
    /// its folder in the repository, `weights/fashion-mnist`).
    #[arg(long)]
    model: String,
    /// Folder with labelled images as IDX files.
    #[arg(long)]
    data: PathBuf,
    /// `test` (t10k-*) or `train`.
    #[arg(long, default_value = "test")]
    split: String,
    /// Leave the first this many images out of the fit (they are evaluated).
    #[arg(long, default_value_t = 0)]
    skip: usize,
    /// Fit on this many images after `--skip`; the others are the evaluation images
    /// (default: half of what is left after `--skip`).
    #[arg(long)]
    calibrate: Option<usize>,
    /// Measure and print, but do not write `calibration.json`.
    #[arg(long)]
    dry_run: bool,
    /// Write every image's label and class log-likelihoods here, one JSON object per
    /// line (for your own analysis).
    #[arg(long)]
    logits: Option<PathBuf>,
    /// Draw the reliability diagram before and after, with the histogram of confidences,
    /// into this PNG.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// One JSON object on the last line (at least `ece_before`, `ece_after`, fractions).
    #[arg(long)]
    json: bool,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N`.
    #[arg(long)]
    device: Option<String>,
}

/// What calibrate measured.
struct Measured {
    scaling: TemperatureScaling,
    before: CalibrationReport,
    after: CalibrationReport,
    dir: PathBuf,
}

struct CalibrateTask {
    args: CalibrateArgs,
}

impl BackendTask for CalibrateTask {
    type Output = Result<Measured, BoxError>;

    fn run<B: burn::tensor::backend::Backend>(self, device: B::Device) -> Self::Output {
        let args = self.args;
        let dir = model_dir::resolve(&args.model)?.writable_dir()?;
        // The model's own posteriors: any calibration.json is being replaced, not applied.
        let (config, model) = model_dir::load::<B>(&dir, &device)?;
        let k = config.n_classes;
        let classifier = Classifier::new(config, model, &device);
        // The outputs never replace an input: the model's files or the data's.
        let mut inputs: Vec<PathBuf> = trustgc::weights::model_dir::MODEL_FILES
            .iter()
            .map(|name| dir.join(name))
            .collect();
        if let Ok(entries) = std::fs::read_dir(&args.data) {
            inputs.extend(entries.flatten().map(|e| e.path()));
        }
        let inputs: Vec<&std::path::Path> = inputs.iter().map(PathBuf::as_path).collect();
        for output in args.logits.iter().chain(&args.plot) {
            trustgc_io::check_target(output, &inputs)?;
        }
        let (results, images) = idx_likelihoods(&classifier, &args.data, &args.split)?;
        let n = results.len();
        if let Some(path) = &args.logits {
            let mut text = String::new();
            for (i, r) in results.iter().enumerate() {
                let line = serde_json::json!({
                    "index": i,
                    "label": images.label(i),
                    "class_log_likelihoods": r.class_log_likelihoods,
                });
                text.push_str(&line.to_string());
                text.push('\n');
            }
            trustgc_io::write_file(path, &inputs, text.as_bytes())?;
        }
        let start = args.skip.min(n);
        let end = match args.calibrate {
            Some(c) => start.saturating_add(c).min(n),
            None => start + (n - start) / 2,
        };
        let evaluate: Vec<usize> = (0..start).chain(end..n).collect();
        if end - start < 2 || evaluate.len() < 2 {
            return Err(format!(
                "{n} images, --skip {start}: too few to fit on ({}) or to evaluate on ({})",
                end - start,
                evaluate.len()
            )
            .into());
        }
        // Class log-likelihoods: their class-specific part is what the temperature divides
        // (the shared part cancels in the softmax).
        let logits = |indices: &mut dyn Iterator<Item = usize>| -> (Vec<f64>, Vec<usize>) {
            let mut flat = Vec::new();
            let mut labels = Vec::new();
            for i in indices {
                flat.extend(&results[i].class_log_likelihoods);
                labels.push(images.label(i));
            }
            (flat, labels)
        };
        let (fit_logits, fit_labels) = logits(&mut (start..end));
        let (eval_logits, eval_labels) = logits(&mut evaluate.iter().copied());
        let temperature = fit_temperature(&fit_logits, k, &fit_labels)?;
        let before =
            calibration_report(&apply_temperature(&eval_logits, k, 1.0)?, k, &eval_labels)?;
        let after = calibration_report(
            &apply_temperature(&eval_logits, k, temperature)?,
            k,
            &eval_labels,
        )?;
        let name = args
            .data
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let evaluated_on = if start > 0 {
            format!(
                "{} split of {name}, images 0..{start} and {end}..{n}",
                args.split
            )
        } else {
            format!("{} split of {name}, images {end}..{n}", args.split)
        };
        let scaling = TemperatureScaling {
            temperature,
            fitted_images: end - start,
            fitted_on: format!("{} split of {name}, images {start}..{end}", args.split),
            ece_before: before.ece,
            ece_after: after.ece,
            evaluated_images: evaluate.len(),
            evaluated_on,
        };
        scaling.check()?;
        Ok(Measured {
            scaling,
            before,
            after,
            dir,
        })
    }
}

/// `trustgc calibrate`.
pub fn calibrate(args: CalibrateArgs) -> Result<(), BoxError> {
    let spec = crate::device(&args.device)?;
    let (json, dry_run, plot) = (args.json, args.dry_run, args.plot.clone());
    let Measured {
        scaling,
        before,
        after,
        dir,
    } = run_on(&spec, CalibrateTask { args })??;
    if !dry_run {
        trustgc::weights::model_dir::write_model_file(
            &dir,
            "calibration.json",
            serde_json::to_string_pretty(&scaling)?.as_bytes(),
        )?;
    }
    let row = |name: &str, r: &CalibrationReport| {
        println!(
            "  {name:<7} ECE {:.2} %  adaptive ECE {:.2} %  MCE {:.2} %  classwise ECE {:.2} %  NLL {:.4}  Brier {:.4}  accuracy {:.2} %",
            100.0 * r.ece,
            100.0 * r.adaptive_ece,
            100.0 * r.mce,
            100.0 * r.classwise_ece,
            r.nll,
            r.brier,
            100.0 * r.accuracy
        );
    };
    println!(
        "temperature {:.4}, fitted on {} ({} images); measured on {} ({} images):",
        scaling.temperature,
        scaling.fitted_on,
        scaling.fitted_images,
        scaling.evaluated_on,
        scaling.evaluated_images
    );
    row("before", &before);
    row("after", &after);
    if let Some(path) = &plot {
        let title = format!(
            "Reliability before and after T = {:.3}",
            scaling.temperature
        );
        crate::plots::reliability_png(path, &title, &before, Some(&after))?;
        println!("wrote {}", path.display());
    }
    if dry_run {
        println!("(--dry-run: nothing written)");
    } else {
        println!("wrote {}", dir.join("calibration.json").display());
    }
    if json {
        let value = serde_json::json!({
            "temperature": scaling.temperature,
            "ece_before": before.ece,
            "ece_after": after.ece,
            "fitted_on": scaling.fitted_on,
            "evaluated_on": scaling.evaluated_on,
            "before": before,
            "after": after,
            "written": !dry_run,
        });
        println!("{value}");
    }
    Ok(())
}
