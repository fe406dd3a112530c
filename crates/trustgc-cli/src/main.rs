//! `trustgc`: the command line of trustgc.

mod attack;
mod bench;
mod calibrate;
mod classify;
mod convert;
mod explain;
mod infer;
mod model_dir;
mod ood_eval;
mod plots;
mod train;
mod trust_report;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Generative classifiers: train, evaluate, convert and run them.
#[derive(Parser, Debug)]
#[command(name = "trustgc", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a generative classifier.
    Train(train::TrainArgs),
    /// Fine-tune a trained or converted model (all parameters, or the class means only).
    Finetune(train::FinetuneArgs),
    /// Accuracy, nll and bits/dim of a model on a labelled dataset.
    Eval(train::EvalArgs),
    /// Classify images: per-class likelihoods, posteriors and a verdict.
    Classify(classify::ClassifyArgs),
    /// Write images as the model sees them (a batch tensor `x`, safetensors).
    Preprocess(classify::PreprocessArgs),
    /// Fit the out-of-distribution statistics of a model on in-distribution data.
    FitOod(classify::FitOodArgs),
    /// Run a model on a batch tensor and write latents, log-dets and likelihoods.
    Infer(infer::InferArgs),
    /// Convert an original `.avg.pt` checkpoint into a trustgc model folder.
    Convert(convert::ConvertArgs),
    /// Measure how well each out-of-distribution score separates in-distribution images
    /// from other sets (AUROC, AUPR, FPR at 95 % TPR).
    OodEval(ood_eval::OodEvalArgs),
    /// Fit a temperature on the posteriors (on a validation split), measure the
    /// calibration before and after on held-out images, and store it in the model folder.
    Calibrate(calibrate::CalibrateArgs),
    /// Time the likelihoods (or, with `--train`, a training step) of a model or of an
    /// architecture with random weights: ms/image, images/s, GFLOP/s and peak memory.
    Bench(bench::BenchArgs),
    /// Explain a decision: the margin decomposed over the latent dimensions, a
    /// counterfactual of another class (by inverting the flow) and its pictures; or, with
    /// `--prototypes`, a grid of class prototypes and samples.
    Explain(explain::ExplainArgs),
    /// Draw the class prototypes f⁻¹(μ_y) and samples f⁻¹(μ_y + τ·ε) as one grid PNG
    /// (the same grid as `explain --prototypes`).
    Prototypes(explain::PrototypesArgs),
    /// Attack a model (FGSM, PGD, adaptive PGD): accuracy under attack, how many attacked
    /// images the verdict flags, AUROC clean vs attacked.
    Attack(attack::AttackArgs),
    /// One report of a model's trust: OoD detection, calibration, attacks and
    /// corruptions, as report.json, report.md and PNGs.
    TrustReport(trust_report::TrustReportArgs),
}

/// The device named by `--device`, or by `BURN_DEVICE` (default: the CPU).
pub(crate) fn device(
    spec: &Option<String>,
) -> Result<trustgc_backend::DeviceSpec, Box<dyn std::error::Error>> {
    Ok(match spec {
        Some(text) => trustgc_backend::DeviceSpec::parse(text)?,
        None => trustgc_backend::DeviceSpec::from_env()?,
    })
}

/// Exit code when some images could not be classified (the others were).
const EXIT_SOME_FAILED: u8 = 3;

/// What a command that ran to its end reports.
enum Outcome {
    /// Everything was done.
    Done,
    /// Some of the inputs failed (each reported on stderr), the others were done.
    SomeFailed,
}

/// Restores the default action of SIGPIPE, which Rust's runtime sets to "ignore": a
/// closed pipe (`trustgc classify … | head`) then ends the process quietly, as it ends
/// `cat` or `grep`, instead of making the next `println!` panic with "Broken pipe".
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: `signal` with SIG_DFL installs no handler of ours; it runs first thing in
    // `main`, before any other thread exists, so no thread can race on the disposition.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// The only place that decides the exit status: 0 when done, 3 when some images could
/// not be classified, 1 on an error (printed with its causes), 2 on bad arguments (clap).
fn main() -> ExitCode {
    quiet_on_closed_pipe();
    let cli = Cli::parse();
    let done = |result: Result<(), Box<dyn std::error::Error>>| result.map(|()| Outcome::Done);
    let result = match cli.command {
        Command::Train(args) => done(train::train(args)),
        Command::Finetune(args) => done(train::finetune(args)),
        Command::Eval(args) => done(train::eval(args)),
        Command::Classify(args) => classify::classify(args).map(|failures| {
            if failures > 0 {
                Outcome::SomeFailed
            } else {
                Outcome::Done
            }
        }),
        Command::Preprocess(args) => done(classify::preprocess(args)),
        Command::FitOod(args) => done(classify::fit_ood(args)),
        Command::Infer(args) => done(infer::infer(args)),
        Command::Convert(args) => done(convert::convert(args)),
        Command::OodEval(args) => done(ood_eval::ood_eval(args)),
        Command::Calibrate(args) => done(calibrate::calibrate(args)),
        Command::Bench(args) => done(bench::bench(args)),
        Command::Attack(args) => done(attack::attack(args)),
        Command::TrustReport(args) => done(trust_report::trust_report(args)),
        Command::Prototypes(args) => done(explain::prototypes_command(args)),
        Command::Explain(args) => explain::explain(args).map(|failures| {
            if failures > 0 {
                Outcome::SomeFailed
            } else {
                Outcome::Done
            }
        }),
    };
    match result {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::SomeFailed) => ExitCode::from(EXIT_SOME_FAILED),
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = std::error::Error::source(&*e);
            while let Some(cause) = source {
                eprintln!("  caused by: {cause}");
                source = cause.source();
            }
            ExitCode::FAILURE
        }
    }
}
