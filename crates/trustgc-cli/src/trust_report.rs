//! `trustgc trust-report`: one report of everything measured about a model's trust on a
//! labelled set: out-of-distribution detection against other sets, calibration, attacks
//! (FGSM, PGD, adaptive PGD) and common corruptions, as `report.json`, `report.md` and
//! PNG plots in one folder.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use plotters::backend::BitMapBackend;
use plotters::prelude::{ChartBuilder, Circle, IntoDrawingArea, LineSeries, PathElement};
use plotters::style::{Color, RGBColor, ShapeStyle, WHITE};
use serde::Serialize;
use trustgc::Classifier;
use trustgc::image::codecs::png::PngEncoder;
use trustgc::image::imageops::{self, FilterType};
use trustgc::image::{ExtendedColorType, ImageEncoder, RgbImage};
use trustgc::metrics::{
    Bootstrap, CalibrationReport, DetectionReport, apply_temperature, calibration_report,
    detection_report, roc_curve,
};
use trustgc::ood::Verdict;
use trustgc::robustness::corrupt::{Corruption, CorruptionResult, MAX_SEVERITY, run_corruption};
use trustgc::robustness::{evaluate, summarize};
use trustgc::scores::{OodScores, ScoreKind};
use trustgc_backend::{AutodiffTask, run_on_autodiff};

use crate::attack::{
    AttackReport, ImageSet, LabelledArgs, open_unlabelled, parse_levels, percent, plan, progress,
    run_attacks,
};
use crate::model_dir;
use crate::plots::{FONT, PlotError};

type BoxError = Box<dyn std::error::Error>;

/// `trustgc trust-report`.
#[derive(Args, Debug)]
pub struct TrustReportArgs {
    /// The model and the in-distribution images (`--limit` also caps each OoD set).
    #[command(flatten)]
    pub set: LabelledArgs,
    /// Attack at most this many of them (attacks cost ~10-40 gradient steps per image).
    #[arg(long)]
    pub attack_limit: Option<usize>,
    /// Out-of-distribution sets, `NAME=PATH` (an IDX file or folder, or a folder of
    /// images); repeatable.
    #[arg(long = "ood", value_parser = crate::ood_eval::parse_named)]
    pub ood: Vec<(String, PathBuf)>,
    // `std::vec::Vec`: one value holding the whole list, which clap's derive would
    // otherwise read as a repeated `f64` argument.
    /// Attack budgets in 8-bit levels (ε = e/255), comma-separated.
    #[arg(long, default_value = "1,2,4,8", value_parser = parse_levels)]
    pub eps: std::vec::Vec<f64>,
    /// PGD steps.
    #[arg(long, default_value_t = trustgc::robustness::attack::DEFAULT_STEPS)]
    pub steps: usize,
    /// Adaptive PGD steps (0: no adaptive attack).
    #[arg(long, default_value_t = trustgc::robustness::attack::DEFAULT_ADAPTIVE_STEPS)]
    pub adaptive_steps: usize,
    /// Images per batch.
    #[arg(long, default_value_t = 50)]
    pub batch: usize,
    /// The report folder (created; files in it are replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N` (default: $BURN_DEVICE, else cpu).
    #[arg(long)]
    pub device: Option<String>,
}

/// One OoD set's detection numbers.
#[derive(Debug, Serialize)]
struct OodSetReport {
    name: String,
    source: String,
    images: usize,
    /// The fraction the verdict flags.
    flag_rate: Option<f64>,
    /// Every score's metrics (in-distribution positive).
    detection: Vec<(ScoreKind, DetectionReport)>,
}

/// The calibration section.
#[derive(Debug, Serialize)]
struct CalibrationSection {
    /// The model's own posteriors.
    before: CalibrationReport,
    /// With the model's temperature (`calibration.json`), when it has one.
    after: Option<CalibrationReport>,
    temperature: Option<f64>,
}

/// Seconds per section.
#[derive(Debug, Default, Serialize)]
struct Timing {
    load: f64,
    clean_and_ood: f64,
    attacks: f64,
    corruptions: f64,
    plots: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    model: String,
    data: String,
    images: usize,
    clean_accuracy: f64,
    clean_flag_rate: Option<f64>,
    calibration: CalibrationSection,
    ood: Vec<OodSetReport>,
    attacked_images: usize,
    attacks: AttackReport,
    corruptions: Vec<CorruptionResult>,
    timing_seconds: Timing,
    convention: &'static str,
    /// Every file written into the report folder, `report.json` included.
    files: Vec<String>,
}

struct TrustReportTask {
    args: TrustReportArgs,
}

fn flag_rate(results: &[trustgc::Likelihoods]) -> Option<f64> {
    if results.iter().any(|r| r.verdict.is_none()) || results.is_empty() {
        return None;
    }
    let flagged = results
        .iter()
        .filter(|r| matches!(r.verdict, Some(Verdict::OutOfDistribution { .. })))
        .count();
    Some(flagged as f64 / results.len() as f64)
}

/// Every score's detection report of `in_scores` against `out_scores`.
fn detections(
    in_scores: &[OodScores],
    out_scores: &[OodScores],
) -> Result<Vec<(ScoreKind, DetectionReport)>, BoxError> {
    let mut out = Vec::new();
    for kind in ScoreKind::ALL {
        let values =
            |set: &[OodScores]| -> Option<Vec<f64>> { set.iter().map(|s| s.get(kind)).collect() };
        let (Some(a), Some(b)) = (values(in_scores), values(out_scores)) else {
            continue;
        };
        let bootstrap = (a.len() >= 2 && b.len() >= 2).then_some(Bootstrap {
            resamples: 200,
            seed: 0,
        });
        out.push((kind, detection_report(&a, &b, bootstrap)?));
    }
    Ok(out)
}

impl AutodiffTask for TrustReportTask {
    type Output = Result<(), BoxError>;

    fn run<B: burn::tensor::backend::AutodiffBackend>(
        self,
        devices: Vec<B::Device>,
    ) -> Self::Output {
        let args = self.args;
        let device = devices[0].clone();
        let mut timing = Timing::default();
        let started = Instant::now();
        let levels = args.eps.clone();
        let classifier: Classifier<B::InnerBackend> =
            model_dir::resolve(&args.set.model)?.classifier(&device)?;
        let k = classifier.config().n_classes;
        let set = args.set.open(&classifier)?;
        trustgc::robustness::check_labels(set.images.len(), &set.labels, k)?;
        let mut ood_sets = Vec::new();
        for (name, path) in &args.ood {
            let s = open_unlabelled(path, &args.set.split, &classifier)?;
            let end = args.set.limit.unwrap_or(s.images.len());
            ood_sets.push((name.clone(), s.range(0, end)));
        }
        timing.load = started.elapsed().as_secs_f64();

        // Clean images: accuracy, verdicts, calibration; OoD sets against them.
        let section = Instant::now();
        let bar = progress(set.images.len(), "clean images");
        let (clean, clean_scores) = evaluate(&classifier, &set.images, args.batch)?;
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        let clean_summary = summarize(&clean, &set.labels)?;
        let logits: Vec<f64> = clean
            .iter()
            .flat_map(|r| r.class_log_likelihoods.iter().copied())
            .collect();
        let before = calibration_report(&apply_temperature(&logits, k, 1.0)?, k, &set.labels)?;
        let temperature = classifier.temperature().map(|t| t.temperature);
        let calibration = CalibrationSection {
            before,
            after: temperature.and(clean_summary.calibration.clone()),
            temperature,
        };
        let mut ood = Vec::new();
        let mut ood_scores = Vec::new();
        for (name, s) in &ood_sets {
            let bar = progress(s.images.len(), name);
            let (results, scores) = evaluate(&classifier, &s.images, args.batch)?;
            if let Some(bar) = bar {
                bar.finish_and_clear();
            }
            ood.push(OodSetReport {
                name: name.clone(),
                source: s.source.clone(),
                images: s.images.len(),
                flag_rate: flag_rate(&results),
                detection: detections(&clean_scores, &scores)?,
            });
            ood_scores.push(scores);
            eprintln!(
                "{name}: {} images, flagged {}",
                s.images.len(),
                percent(flag_rate(&results))
            );
        }
        timing.clean_and_ood = section.elapsed().as_secs_f64();

        // Attacks, on the first `--attack-limit` images.
        let section = Instant::now();
        let attacked = args
            .attack_limit
            .map_or(set.images.len(), |l| l.min(set.images.len()));
        let attack_set = ImageSet {
            images: set.images[..attacked].to_vec(),
            labels: set.labels[..attacked].to_vec(),
            source: format!("{}, first {attacked}", set.source),
        };
        let adaptive =
            (args.adaptive_steps > 0 && classifier.ood().is_some()).then_some(args.adaptive_steps);
        let attacks = run_attacks::<B>(
            &args.set.model,
            &device,
            &attack_set,
            &plan(&levels, args.steps, adaptive),
            args.batch,
        )?;
        timing.attacks = section.elapsed().as_secs_f64();

        // Corruptions at every severity.
        let section = Instant::now();
        let bar = progress(Corruption::ALL.len() * MAX_SEVERITY, "corruptions");
        let mut corruptions = Vec::new();
        for corruption in Corruption::ALL {
            for severity in 0..=MAX_SEVERITY {
                if severity > 0 || corruption == Corruption::ALL[0] {
                    corruptions.push(run_corruption(
                        &classifier,
                        &set.images,
                        &set.labels,
                        &clean_scores,
                        corruption,
                        severity,
                        0,
                        args.batch,
                    )?);
                }
                if let Some(bar) = &bar
                    && severity > 0
                {
                    bar.inc(1);
                }
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
        timing.corruptions = section.elapsed().as_secs_f64();

        // Files.
        let section = Instant::now();
        let out = &args.out;
        std::fs::create_dir_all(out).map_err(trustgc_io::WriteError::io(out))?;
        let mut files: Vec<String> = Vec::new();
        let model_label = args.set.model.clone();
        let reliability = out.join("reliability.png");
        crate::plots::reliability_png(
            &reliability,
            &format!("Reliability of {model_label}"),
            &calibration.before,
            calibration.after.as_ref(),
        )?;
        files.push("reliability.png".into());
        for ((name, _), scores) in ood_sets.iter().zip(&ood_scores) {
            let mut curves = Vec::new();
            let report = ood.iter().find(|o| &o.name == name);
            for (kind, r) in report.map(|o| o.detection.as_slice()).unwrap_or_default() {
                let values = |s: &[OodScores]| -> Vec<f64> {
                    s.iter().filter_map(|x| x.get(*kind)).collect()
                };
                curves.push((
                    kind.name().to_string(),
                    r.auroc,
                    roc_curve(&values(&clean_scores), &values(scores))?,
                ));
            }
            let file = format!("roc-{}.png", file_stem(name));
            crate::plots::roc_png(
                &out.join(&file),
                &format!("ROC: in-distribution against {name}"),
                &curves,
            )?;
            files.push(file);
        }
        let corruption_series: Vec<Series> = Corruption::ALL
            .iter()
            .map(|&c| Series {
                name: c.name().to_string(),
                points: corruptions
                    .iter()
                    .filter(|r| r.corruption == c || r.severity == 0)
                    .map(|r| (r.severity as f64, r.summary.accuracy, r.summary.flag_rate))
                    .collect(),
            })
            .collect();
        let png = lines_png(
            &format!("Corruptions: {model_label} on {} images", set.images.len()),
            "severity",
            &corruption_series,
        )?;
        trustgc_io::write_file(&out.join("corruptions.png"), &[], &png)?;
        files.push("corruptions.png".into());
        let mut attack_series: Vec<Series> = Vec::new();
        for a in &attacks.attacks {
            let name = a.result.settings.kind.name().to_string();
            let point = (
                a.result.settings.levels(),
                a.result.summary.accuracy,
                a.result.summary.flag_rate,
            );
            match attack_series.iter_mut().find(|s| s.name == name) {
                Some(s) => s.points.push(point),
                None => attack_series.push(Series {
                    name,
                    points: vec![
                        (0.0, attacks.clean.accuracy, attacks.clean.flag_rate),
                        point,
                    ],
                }),
            }
        }
        let png = lines_png(
            &format!("Attacks: {model_label} on {attacked} images"),
            "ε (8-bit levels)",
            &attack_series,
        )?;
        trustgc_io::write_file(&out.join("attacks.png"), &[], &png)?;
        files.push("attacks.png".into());
        files.push("report.md".into());
        files.push("report.json".into());
        timing.plots = section.elapsed().as_secs_f64();
        let report = Report {
            model: args.set.model.clone(),
            data: set.source.clone(),
            images: set.images.len(),
            clean_accuracy: clean_summary.accuracy,
            clean_flag_rate: clean_summary.flag_rate,
            calibration,
            ood,
            attacked_images: attacked,
            attacks,
            corruptions,
            timing_seconds: timing,
            convention: "fractions, not percentages; flag rate: the fraction the verdict calls out of distribution; AUROC: in-distribution (clean) images positive, every score higher = more in-distribution; the best score of an attack or corruption is chosen on the same images",
            files,
        };
        let markdown = markdown(&report, started.elapsed().as_secs_f64());
        trustgc_io::write_file(&out.join("report.md"), &[], markdown.as_bytes())?;
        trustgc_io::write_file(
            &out.join("report.json"),
            &[],
            serde_json::to_string_pretty(&report)?.as_bytes(),
        )?;
        eprintln!(
            "wrote {} files into {} in {:.1} s",
            report.files.len(),
            out.display(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}

/// A set's name as a file name.
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

fn pct(v: f64) -> String {
    format!("{:.2} %", 100.0 * v)
}

/// `report.md`.
fn markdown(report: &Report, seconds: f64) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# Trust report: {}\n", report.model);
    let _ = writeln!(
        md,
        "{} labelled images ({}); {:.0} s in all (load {:.1} s, clean and OoD {:.1} s, attacks {:.1} s, corruptions {:.1} s, plots {:.1} s).\n",
        report.images,
        report.data,
        seconds,
        report.timing_seconds.load,
        report.timing_seconds.clean_and_ood,
        report.timing_seconds.attacks,
        report.timing_seconds.corruptions,
        report.timing_seconds.plots
    );
    let _ = writeln!(md, "## Clean images and calibration\n");
    let _ = writeln!(md, "| | value |\n|---|---|");
    let _ = writeln!(md, "| accuracy | {} |", pct(report.clean_accuracy));
    let _ = writeln!(
        md,
        "| flagged by the verdict (false alarms) | {} |",
        percent(report.clean_flag_rate)
    );
    let c = &report.calibration;
    let _ = writeln!(
        md,
        "| ECE (15 bins), model's own posterior | {} |",
        pct(c.before.ece)
    );
    if let (Some(after), Some(t)) = (&c.after, c.temperature) {
        let _ = writeln!(
            md,
            "| ECE with the temperature T = {t:.4} | {} |",
            pct(after.ece)
        );
    }
    let _ = writeln!(
        md,
        "| NLL, Brier (model's own posterior) | {:.4}, {:.4} |\n",
        c.before.nll, c.before.brier
    );
    let _ = writeln!(md, "![reliability](reliability.png)\n");
    if !report.ood.is_empty() {
        let _ = writeln!(md, "## Out-of-distribution sets\n");
        let _ = writeln!(
            md,
            "| set | images | flagged | best score | AUROC | FPR@95%TPR |\n|---|---|---|---|---|---|"
        );
        for o in &report.ood {
            let best = o
                .detection
                .iter()
                .max_by(|a, b| a.1.auroc.total_cmp(&b.1.auroc));
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                o.name,
                o.images,
                percent(o.flag_rate),
                best.map_or("-".into(), |b| b.0.name().to_string()),
                best.map_or("-".into(), |b| format!("{:.3}", b.1.auroc)),
                best.map_or("-".into(), |b| format!("{:.3}", b.1.fpr_at_95_tpr)),
            );
        }
        let _ = writeln!(md);
        for o in &report.ood {
            let _ = writeln!(md, "![ROC {}](roc-{}.png)\n", o.name, file_stem(&o.name));
        }
    }
    let a = &report.attacks;
    let _ = writeln!(md, "## Adversarial attacks\n");
    let _ = writeln!(
        md,
        "On the first {} images; L∞, ε in 8-bit levels; PGD step size 2.5 ε / steps, no random start. Clean: accuracy {}, flagged {}.\n",
        a.images,
        pct(a.clean.accuracy),
        percent(a.clean.flag_rate)
    );
    let _ = writeln!(
        md,
        "| attack | ε·255 | steps | accuracy | flagged | misclassified and not flagged | best score (AUROC clean vs attacked) | s |\n|---|---|---|---|---|---|---|---|"
    );
    for t in &a.attacks {
        let r = &t.result;
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} ({:.3}) | {:.0} |",
            r.settings.kind.name(),
            r.settings.levels(),
            r.settings.steps,
            pct(r.summary.accuracy),
            percent(r.summary.flag_rate),
            percent(r.summary.undetected_errors),
            r.detection.best,
            r.detection.best_auroc,
            t.seconds
        );
    }
    let _ = writeln!(md, "\n![attacks](attacks.png)\n");
    let _ = writeln!(md, "## Corruptions\n");
    let _ = writeln!(
        md,
        "| corruption | severity | accuracy | ECE | flagged | best score (AUROC clean vs corrupted) |\n|---|---|---|---|---|---|"
    );
    for r in &report.corruptions {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} |",
            if r.severity == 0 {
                "none"
            } else {
                r.corruption.name()
            },
            r.severity,
            pct(r.summary.accuracy),
            r.summary
                .calibration
                .as_ref()
                .map_or_else(|| "-".into(), |c| pct(c.ece)),
            percent(r.summary.flag_rate),
            if r.severity == 0 {
                "- (all tie)".to_string()
            } else {
                format!("{} ({:.3})", r.detection.best, r.detection.best_auroc)
            }
        );
    }
    let _ = writeln!(md, "\n![corruptions](corruptions.png)\n");
    let _ = writeln!(
        md,
        "Flagged: the fraction the verdict calls out of distribution. AUROC: clean images positive, every score higher = more in-distribution; the best score of an attack or corruption is chosen on the same images (an optimistic pick). At severity 0 every score ties (AUROC 0.5)."
    );
    md
}

/// One line of a plot: `(x, accuracy, flag rate)` points.
struct Series {
    name: String,
    points: Vec<(f64, f64, Option<f64>)>,
}

const WIDTH: u32 = 900;
const HEIGHT: u32 = 700;
const SCALE: u32 = 2;
/// Width of the legend column, in pixels of the final picture.
const LEGEND_WIDTH: u32 = 170;

const fn px(v: u32) -> u32 {
    v * SCALE
}

fn colour(i: usize) -> RGBColor {
    let c = colorous::TABLEAU10[i % colorous::TABLEAU10.len()];
    RGBColor(c.r, c.g, c.b)
}

/// Two panels against the same x axis: accuracy (upper) and the verdict's flag rate
/// (lower), one line per series, drawn at twice the size and shrunk (antialiasing), as
/// the other plots of the CLI ([`crate::plots`]).
fn lines_png(title: &str, x_label: &str, series: &[Series]) -> Result<Vec<u8>, PlotError> {
    crate::plots::register_font()?;
    let x_max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .fold(1.0f64, f64::max);
    let mut canvas = RgbImage::new(px(WIDTH), px(HEIGHT));
    {
        let root =
            BitMapBackend::with_buffer(&mut canvas, (px(WIDTH), px(HEIGHT))).into_drawing_area();
        root.fill(&WHITE)?;
        // plotters puts the title's top at the area's top edge, where the ascenders of a
        // 24-pixel font were cut off: leave a margin above it.
        let root = root.margin(px(8), 0, 0, 0).titled(title, (FONT, px(24)))?;
        // The legend gets its own column on the right, clear of every line.
        let (plots, legend) = root.split_horizontally(px(WIDTH - LEGEND_WIDTH));
        for (i, s) in series.iter().enumerate() {
            let y = px(60 + 26 * i as u32) as i32;
            let style: ShapeStyle = colour(i).stroke_width(px(3));
            legend.draw(&PathElement::new(
                vec![(px(8) as i32, y), (px(36) as i32, y)],
                style,
            ))?;
            legend.draw(&plotters::element::Text::new(
                s.name.clone(),
                (px(44) as i32, y - px(9) as i32),
                (FONT, px(15)),
            ))?;
        }
        let panels = plots.split_evenly((2, 1));
        for (panel_index, panel) in panels.iter().enumerate() {
            let label = if panel_index == 0 {
                "accuracy"
            } else {
                "flagged by the verdict"
            };
            let mut chart = ChartBuilder::on(panel)
                .margin(px(10))
                .x_label_area_size(px(40))
                .y_label_area_size(px(60))
                .build_cartesian_2d(0f64..x_max * 1.02, 0f64..1.02f64)?;
            chart
                .configure_mesh()
                .x_desc(x_label)
                .y_desc(label)
                .label_style((FONT, px(14)))
                .axis_desc_style((FONT, px(16)))
                .light_line_style(WHITE)
                .draw()?;
            for (i, s) in series.iter().enumerate() {
                let style: ShapeStyle = colour(i).stroke_width(px(3));
                let points: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .filter_map(|&(x, acc, flag)| {
                        if panel_index == 0 {
                            Some((x, acc))
                        } else {
                            flag.map(|f| (x, f))
                        }
                    })
                    .collect();
                chart.draw_series(LineSeries::new(points.clone(), style))?;
                chart.draw_series(
                    points
                        .iter()
                        .map(|&p| Circle::new(p, px(4), colour(i).filled())),
                )?;
            }
        }
        root.present()?;
    }
    let picture = imageops::resize(&canvas, WIDTH, HEIGHT, FilterType::CatmullRom);
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&picture, WIDTH, HEIGHT, ExtendedColorType::Rgb8)
        .map_err(PlotError::Encode)?;
    Ok(png)
}

/// `trustgc trust-report`.
pub fn trust_report(args: TrustReportArgs) -> Result<(), BoxError> {
    let spec = crate::device(&args.device)?;
    let inputs: Vec<&Path> = std::iter::once(args.set.data.as_path())
        .chain(args.ood.iter().map(|(_, p)| p.as_path()))
        .collect();
    if inputs.iter().any(|p| args.out.starts_with(p)) {
        return Err(format!(
            "--out {} lies inside an input folder; choose a report folder elsewhere",
            args.out.display()
        )
        .into());
    }
    run_on_autodiff(&[spec], TrustReportTask { args })?
}
