//! PNG pictures for the out-of-distribution and calibration reports: ROC curves
//! ([`roc_png`]) and reliability diagrams with the histogram of confidences
//! ([`reliability_png`]).
//!
//! Each picture is drawn with [`plotters`] into an in-memory RGB buffer at [`SCALE`]
//! times its size, shrunk to [`WIDTH`] × [`HEIGHT`] pixels with a Catmull-Rom filter
//! (plotters' bitmap backend does not antialias lines: supersampling does), encoded by
//! `image`'s PNG encoder and written atomically with [`trustgc_io::write_file`]. Text
//! is set in DejaVu Sans, embedded in the binary (`assets/DejaVuSans.ttf`, its licence
//! in `assets/LICENSE-DejaVuSans.txt`) and registered with plotters' `ab_glyph` font
//! backend: no system font, no fontconfig.
//! Colours are d3's Tableau 10 categorical scheme ([`colorous::TABLEAU10`]), the
//! default cycle of matplotlib.
//!
//! The axes follow [`trustgc::metrics`]: a detection score accepts an input as
//! in-distribution when it is `≥` the threshold, so a ROC point is
//! (`fpr` = the fraction of the OoD set accepted, `tpr` = the fraction of the
//! in-distribution set accepted); the reliability diagram uses the 15 equal-width bins
//! of [`trustgc::metrics::CalibrationReport::reliability`].

// The ood-eval report calls these; until it is wired in, only the tests do.

use std::path::Path;
use std::sync::OnceLock;

use plotters::backend::{BitMapBackend, DrawingBackend};
use plotters::coord::Shift;
use plotters::prelude::{
    ChartBuilder, Circle, DashedLineSeries, DrawingArea, DrawingAreaErrorKind, IntoDrawingArea,
    LineSeries, PathElement, Rectangle, SeriesLabelPosition,
};
use plotters::style::{Color, FontStyle, RGBColor, ShapeStyle, WHITE};
use trustgc::image::codecs::png::PngEncoder;
use trustgc::image::imageops::{self, FilterType};
use trustgc::image::{ExtendedColorType, ImageEncoder, ImageError, RgbImage};
use trustgc::metrics::{CalibrationReport, ReliabilityBin, RocPoint};

/// Width of every picture, in pixels.
pub const WIDTH: u32 = 900;
/// Height of every picture, in pixels.
pub const HEIGHT: u32 = 700;
/// The pictures are drawn at this multiple of their size, then shrunk (antialiasing).
pub const SCALE: u32 = 2;

/// Points of a ROC curve closer than this to the last point kept, in both coordinates,
/// are left out of the drawing: the drawn curve is then at most this far from the exact
/// one in each coordinate, under one pixel of the ≈ 780 × 560-pixel plot, while a curve
/// of any length shrinks to at most ≈ 2,000 segments (`fpr` and `tpr` only grow, by 2 in
/// all, and each kept point moves one of them by more than this).
pub const ROC_THIN: f64 = 1e-3;

/// DejaVu Sans 2.37 (Bitstream Vera licence, see `assets/LICENSE-DejaVuSans.txt`).
const DEJAVU_SANS: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
/// The family name the embedded font is registered under (plotters' name for
/// [`plotters::style::FontFamily::SansSerif`]).
pub(crate) const FONT: &str = "sans-serif";

/// Font sizes, in pixels of the final picture.
const TITLE_SIZE: u32 = 26;
const AXIS_DESC_SIZE: u32 = 19;
const TICK_SIZE: u32 = 15;
const LEGEND_SIZE: u32 = 16;

/// A length in pixels of the final picture, in pixels of the canvas drawn on.
const fn px(length: u32) -> u32 {
    length * SCALE
}

/// The text style of `size` pixels (of the final picture).
fn font(size: u32) -> (&'static str, u32) {
    (FONT, px(size))
}

/// The colour of the chance / perfect-calibration diagonal.
const DIAGONAL: RGBColor = RGBColor(110, 110, 110);
/// The colour of the grid lines.
const GRID: RGBColor = RGBColor(225, 225, 225);
/// The colour of the axes and of the legend's frame.
const AXIS: RGBColor = RGBColor(40, 40, 40);

/// The error of drawing on the bitmap backend: plotters' typed drawing-area error over
/// the bitmap backend's error type (which plotters does not re-export by name).
pub type DrawError = DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>;

/// Which of the two reports of a reliability diagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Report {
    /// The report before recalibration (the `before` argument).
    Before,
    /// The report after recalibration (the `after` argument).
    After,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Before => "before",
            Self::After => "after",
        })
    }
}

/// Why a plot could not be drawn or written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The embedded font was rejected by the font backend (a broken build: the font is
    /// fixed at compile time). plotters' `InvalidFont` carries no detail and is not an
    /// error type, so there is no source.
    #[error("the embedded font DejaVu Sans could not be parsed")]
    Font,
    /// [`roc_png`] was given no curve: an empty ROC plot would say nothing.
    #[error("no ROC curve to draw")]
    NoCurves,
    /// A ROC curve has no point.
    #[error("ROC curve {curve:?} has no point")]
    EmptyCurve {
        /// The curve's name.
        curve: String,
    },
    /// A ROC point lies outside the unit square (or is NaN).
    #[error("ROC curve {curve:?}: point {index} (fpr {fpr}, tpr {tpr}) is outside [0, 1]²")]
    RocPointOutOfRange {
        /// The curve's name.
        curve: String,
        /// The point's index in the curve.
        index: usize,
        /// Its false positive rate.
        fpr: f64,
        /// Its true positive rate.
        tpr: f64,
    },
    /// A curve's AUROC is not in `[0, 1]` (or is NaN).
    #[error("ROC curve {curve:?}: AUROC {auroc} is outside [0, 1]")]
    AurocOutOfRange {
        /// The curve's name.
        curve: String,
        /// The AUROC given.
        auroc: f64,
    },
    /// A reliability bin has an edge, mean confidence or accuracy that is not in
    /// `[0, 1]` (or NaN), or edges in the wrong order.
    #[error(
        "reliability bin {index} of the {report} report is invalid: edges ({lower}, {upper}], \
         mean confidence {mean_confidence:?}, accuracy {accuracy:?}"
    )]
    InvalidBin {
        /// Which report.
        report: Report,
        /// The bin's index.
        index: usize,
        /// Its lower edge.
        lower: f64,
        /// Its upper edge.
        upper: f64,
        /// Its mean confidence.
        mean_confidence: Option<f64>,
        /// Its accuracy.
        accuracy: Option<f64>,
    },
    /// plotters failed to draw (a layout too small for the text, a font glyph error).
    #[error("cannot draw the plot: {0}")]
    Draw(#[from] DrawError),
    /// The PNG encoder failed.
    #[error("cannot encode the plot as PNG: {0}")]
    Encode(#[source] ImageError),
    /// The PNG could not be written.
    #[error(transparent)]
    Write(#[from] trustgc_io::WriteError),
}

/// Draws the ROC curves of several OoD sets (or several scores) against one
/// in-distribution set into a PNG at `path`, with the chance diagonal and a legend
/// giving each curve's AUROC (in %, as the ood-eval table does).
///
/// Each curve is `(name, auroc, points)` with `auroc` a fraction in `[0, 1]` and
/// `points` as [`trustgc::metrics::roc_curve`] returns them; the x axis is the false
/// positive rate (the fraction of the OoD set accepted as in-distribution), the y axis
/// the true positive rate (the fraction of the in-distribution set accepted). Long
/// curves are thinned for drawing ([`ROC_THIN`]).
///
/// # Errors
///
/// [`PlotError::NoCurves`] for an empty `curves`, [`PlotError::EmptyCurve`],
/// [`PlotError::RocPointOutOfRange`], [`PlotError::AurocOutOfRange`] for bad input;
/// [`PlotError::Draw`], [`PlotError::Encode`] and [`PlotError::Font`] when drawing fails;
/// [`PlotError::Write`] when the file cannot be written (nothing is left at `path`
/// then).
pub fn roc_png(
    path: &Path,
    title: &str,
    curves: &[(String, f64, Vec<RocPoint>)],
) -> Result<(), PlotError> {
    let png = roc_picture(title, curves)?.png;
    trustgc_io::write_file(path, &[], &png)?;
    Ok(())
}

/// Draws a reliability diagram into a PNG at `path`: in the upper panel, the accuracy
/// of each non-empty equal-width bin against its mean confidence (points joined by
/// lines) with the diagonal of perfect calibration; in the lower panel, the histogram
/// of confidences (the number of samples per bin). With `after` (the report after
/// recalibration), both reports are drawn, in two colours, with the legend
/// "before (ECE x.xx %)" / "after (ECE y.yy %)".
///
/// A report whose bins are all empty (or that has no bins) draws a plot with the
/// diagonal and no points or bars, not an error: it is what the data says.
///
/// # Errors
///
/// [`PlotError::InvalidBin`] for a bin with an edge, mean confidence or accuracy
/// outside `[0, 1]`; [`PlotError::Draw`], [`PlotError::Encode`] and [`PlotError::Font`]
/// when drawing fails; [`PlotError::Write`] when the file cannot be written.
pub fn reliability_png(
    path: &Path,
    title: &str,
    before: &CalibrationReport,
    after: Option<&CalibrationReport>,
) -> Result<(), PlotError> {
    let png = reliability_picture(title, before, after)?.png;
    trustgc_io::write_file(path, &[], &png)?;
    Ok(())
}

/// A picture drawn in memory.
struct Picture {
    /// The PNG file's bytes.
    png: Vec<u8>,
    /// Where a point of the diagonal away from the data landed, in pixels of the
    /// picture ([`ROC_PROBE`], [`RELIABILITY_PROBE`]). Read by the tests only.
    #[cfg_attr(not(test), allow(dead_code))]
    probe: (u32, u32),
}

/// The `i`-th colour of the Tableau 10 scheme (cycling).
fn colour(i: usize) -> RGBColor {
    let c = colorous::TABLEAU10[i % colorous::TABLEAU10.len()];
    RGBColor(c.r, c.g, c.b)
}

/// Registers the embedded font with plotters, once per process.
pub(crate) fn register_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS).is_ok()
    });
    if ok { Ok(()) } else { Err(PlotError::Font) }
}

/// A point of the ROC diagonal that curves better than chance stay away from.
const ROC_PROBE: (f64, f64) = (0.75, 0.75);
/// A point of the reliability diagonal below every confidence of 10 or fewer classes.
const RELIABILITY_PROBE: (f64, f64) = (0.05, 0.05);

/// Fills a white canvas of [`SCALE`] × ([`WIDTH`], [`HEIGHT`]) pixels with `draw`,
/// shrinks it to [`WIDTH`] × [`HEIGHT`] and encodes it as PNG; `draw` returns the canvas
/// pixel of the probe point of the diagonal.
fn render(
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Result<(i32, i32), DrawError>,
) -> Result<Picture, PlotError> {
    register_font()?;
    let mut canvas = RgbImage::new(px(WIDTH), px(HEIGHT));
    let (probe_x, probe_y) = {
        let root =
            BitMapBackend::with_buffer(&mut canvas, (px(WIDTH), px(HEIGHT))).into_drawing_area();
        root.fill(&WHITE)?;
        let probe = draw(&root)?;
        root.present()?;
        probe
    };
    let picture = imageops::resize(&canvas, WIDTH, HEIGHT, FilterType::CatmullRom);
    let mut png = Vec::new();
    PngEncoder::new(&mut png)
        .write_image(&picture, WIDTH, HEIGHT, ExtendedColorType::Rgb8)
        .map_err(PlotError::Encode)?;
    let probe = (probe_x.max(0) as u32 / SCALE, probe_y.max(0) as u32 / SCALE);
    Ok(Picture { png, probe })
}

/// Checks the curves (see [`roc_png`]'s errors).
fn check_curves(curves: &[(String, f64, Vec<RocPoint>)]) -> Result<(), PlotError> {
    if curves.is_empty() {
        return Err(PlotError::NoCurves);
    }
    let unit = |v: f64| (0.0..=1.0).contains(&v);
    for (name, auroc, points) in curves {
        if points.is_empty() {
            return Err(PlotError::EmptyCurve {
                curve: name.clone(),
            });
        }
        if !unit(*auroc) {
            return Err(PlotError::AurocOutOfRange {
                curve: name.clone(),
                auroc: *auroc,
            });
        }
        if let Some((index, p)) = points
            .iter()
            .enumerate()
            .find(|(_, p)| !(unit(p.fpr) && unit(p.tpr)))
        {
            return Err(PlotError::RocPointOutOfRange {
                curve: name.clone(),
                index,
                fpr: p.fpr,
                tpr: p.tpr,
            });
        }
    }
    Ok(())
}

/// The points of a ROC curve to draw: the first, the last, and every point more than
/// [`ROC_THIN`] away from the last one kept in `fpr` or in `tpr`.
fn thin(points: &[RocPoint]) -> Vec<(f64, f64)> {
    let mut kept: Vec<(f64, f64)> = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let far = kept.last().is_none_or(|&(fpr, tpr)| {
            (p.fpr - fpr).abs() > ROC_THIN || (p.tpr - tpr).abs() > ROC_THIN
        });
        if far || i + 1 == points.len() {
            kept.push((p.fpr, p.tpr));
        }
    }
    kept
}

/// A short line in `style` for a legend entry.
fn legend_line(style: ShapeStyle) -> impl Fn((i32, i32)) -> PathElement<(i32, i32)> {
    move |(x, y)| PathElement::new(vec![(x, y), (x + px(24) as i32, y)], style)
}

/// Tick labels of a unit axis.
fn tenths(v: &f64) -> String {
    format!("{v:.1}")
}

/// Draws the ROC picture.
fn roc_picture(title: &str, curves: &[(String, f64, Vec<RocPoint>)]) -> Result<Picture, PlotError> {
    check_curves(curves)?;
    render(|root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, font(TITLE_SIZE))
            .margin(px(24))
            .x_label_area_size(px(54))
            .y_label_area_size(px(76))
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate (OoD accepted)")
            .y_desc("true positive rate (in-distribution accepted)")
            .x_labels(11)
            .y_labels(11)
            .x_label_formatter(&tenths)
            .y_label_formatter(&tenths)
            .label_style(font(TICK_SIZE))
            .axis_desc_style(font(AXIS_DESC_SIZE))
            .bold_line_style(GRID.stroke_width(px(1)))
            .light_line_style(WHITE)
            .axis_style(AXIS.stroke_width(px(1)))
            .draw()?;

        let chance = DIAGONAL.stroke_width(px(2));
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                px(10),
                px(7),
                chance,
            ))?
            .label("chance (AUROC 50 %)")
            .legend(legend_line(chance));
        for (i, (name, auroc, points)) in curves.iter().enumerate() {
            let style = colour(i).stroke_width(px(3));
            chart
                .draw_series(LineSeries::new(thin(points), style))?
                .label(format!("{name} (AUROC {:.2} %)", 100.0 * auroc))
                .legend(legend_line(style));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .margin(px(18))
            .legend_area_size(px(34))
            .label_font(font(LEGEND_SIZE))
            .background_style(WHITE.mix(0.92))
            .border_style(AXIS.stroke_width(px(1)))
            .draw()?;
        Ok(chart.backend_coord(&ROC_PROBE))
    })
}

/// Checks one report's bins (see [`reliability_png`]'s errors).
fn check_bins(report: Report, bins: &[ReliabilityBin]) -> Result<(), PlotError> {
    let unit = |v: f64| (0.0..=1.0).contains(&v);
    let unit_or_none = |v: Option<f64>| v.is_none_or(unit);
    for (index, bin) in bins.iter().enumerate() {
        let ok = unit(bin.lower)
            && unit(bin.upper)
            && bin.lower <= bin.upper
            && unit_or_none(bin.mean_confidence)
            && unit_or_none(bin.accuracy);
        if !ok {
            return Err(PlotError::InvalidBin {
                report,
                index,
                lower: bin.lower,
                upper: bin.upper,
                mean_confidence: bin.mean_confidence,
                accuracy: bin.accuracy,
            });
        }
    }
    Ok(())
}

/// Draws the reliability picture.
fn reliability_picture(
    title: &str,
    before: &CalibrationReport,
    after: Option<&CalibrationReport>,
) -> Result<Picture, PlotError> {
    check_bins(Report::Before, &before.reliability)?;
    if let Some(after) = after {
        check_bins(Report::After, &after.reliability)?;
    }
    // (report, legend label); the i-th is drawn in colour(i).
    let mut series = vec![match after {
        Some(_) => (before, format!("before (ECE {:.2} %)", 100.0 * before.ece)),
        None => (
            before,
            format!("accuracy per bin (ECE {:.2} %)", 100.0 * before.ece),
        ),
    }];
    if let Some(after) = after {
        series.push((after, format!("after (ECE {:.2} %)", 100.0 * after.ece)));
    }
    render(|root| {
        let (upper, lower) = root.split_vertically(px(HEIGHT) * 64 / 100);

        let mut chart = ChartBuilder::on(&upper)
            .caption(title, font(TITLE_SIZE))
            .margin(px(24))
            .margin_bottom(px(8))
            .x_label_area_size(px(56))
            .y_label_area_size(px(76))
            .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
        chart
            .configure_mesh()
            .x_desc("mean confidence in the bin")
            .y_desc("accuracy")
            .x_labels(11)
            .y_labels(6)
            .x_label_formatter(&tenths)
            .y_label_formatter(&tenths)
            .label_style(font(TICK_SIZE))
            .axis_desc_style(font(AXIS_DESC_SIZE))
            .bold_line_style(GRID.stroke_width(px(1)))
            .light_line_style(WHITE)
            .axis_style(AXIS.stroke_width(px(1)))
            .draw()?;
        let diagonal = DIAGONAL.stroke_width(px(2));
        chart
            .draw_series(DashedLineSeries::new(
                [(0.0, 0.0), (1.0, 1.0)],
                px(10),
                px(7),
                diagonal,
            ))?
            .label("perfect calibration")
            .legend(legend_line(diagonal));
        for (i, (report, label)) in series.iter().enumerate() {
            let points: Vec<(f64, f64)> = report
                .reliability
                .iter()
                .filter_map(|bin| Some((bin.mean_confidence?, bin.accuracy?)))
                .collect();
            let line = colour(i).stroke_width(px(3));
            chart
                .draw_series(LineSeries::new(points.iter().copied(), line))?
                .label(label.as_str())
                .legend(legend_line(line));
            chart.draw_series(
                points
                    .iter()
                    .map(|&xy| Circle::new(xy, px(5), colour(i).filled())),
            )?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .margin(px(16))
            .legend_area_size(px(34))
            .label_font(font(LEGEND_SIZE))
            .background_style(WHITE.mix(0.92))
            .border_style(AXIS.stroke_width(px(1)))
            .draw()?;
        let probe = chart.backend_coord(&RELIABILITY_PROBE);

        // The histogram: one bar per bin and report, side by side.
        let max_count = series
            .iter()
            .flat_map(|(report, _)| report.reliability.iter().map(|bin| bin.count))
            .max()
            .unwrap_or(0)
            .max(1) as u64;
        let mut histogram = ChartBuilder::on(&lower)
            .margin(px(24))
            .margin_top(px(4))
            .x_label_area_size(px(56))
            .y_label_area_size(px(76))
            .build_cartesian_2d(0f64..1f64, 0u64..max_count + max_count / 10 + 1)?;
        histogram
            .configure_mesh()
            .x_desc(format!(
                "confidence ({} equal-width bins)",
                before.reliability.len()
            ))
            .y_desc("samples")
            .x_labels(11)
            .y_labels(5)
            .x_label_formatter(&tenths)
            .label_style(font(TICK_SIZE))
            .axis_desc_style(font(AXIS_DESC_SIZE))
            .bold_line_style(GRID.stroke_width(px(1)))
            .light_line_style(WHITE)
            .axis_style(AXIS.stroke_width(px(1)))
            .draw()?;
        let n_series = series.len();
        for (i, (report, _)) in series.iter().enumerate() {
            let fill = colour(i).mix(0.85).filled();
            histogram.draw_series(report.reliability.iter().filter(|bin| bin.count > 0).map(
                |bin| {
                    // A gap of 8 % of the bin width on both sides; the rest shared by
                    // the reports.
                    let gap = 0.08 * (bin.upper - bin.lower);
                    let share = (bin.upper - bin.lower - 2.0 * gap) / n_series as f64;
                    let left = bin.lower + gap + share * i as f64;
                    Rectangle::new([(left, 0), (left + share, bin.count as u64)], fill)
                },
            ))?;
        }
        Ok(probe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use trustgc::metrics::{
        apply_temperature, auroc, calibration_report, fit_temperature, roc_curve,
    };

    /// A fresh, empty folder for one test.
    fn temp_dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("trustgc-plots-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    // SplitMix64: deterministic pseudo-random numbers.
    use trustgc::core::rng::SplitMix64 as Rng;

    /// Three OoD sets, nearer and nearer the in-distribution one; 5,000 scores each.
    fn sample_curves() -> Vec<(String, f64, Vec<RocPoint>)> {
        let mut rng = Rng(7);
        let in_scores: Vec<f64> = (0..5000).map(|_| rng.normal()).collect();
        [("far OoD", 2.5), ("near OoD", 1.0), ("very near OoD", 0.3)]
            .into_iter()
            .map(|(name, shift)| {
                let out: Vec<f64> = (0..5000).map(|_| rng.normal() - shift).collect();
                let area = auroc(&in_scores, &out).unwrap();
                (name.to_string(), area, roc_curve(&in_scores, &out).unwrap())
            })
            .collect()
    }

    /// Over-confident logits of 10 classes, and the report before and after temperature
    /// scaling.
    fn sample_reports() -> (CalibrationReport, CalibrationReport) {
        let (n, k) = (4000, 10);
        let mut rng = Rng(11);
        let mut logits = Vec::with_capacity(n * k);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let label = (rng.uniform() * k as f64) as usize;
            let strength = 4.0 * rng.uniform();
            for class in 0..k {
                let signal = if class == label { strength } else { 0.0 };
                // ×2.5: sharper than the data warrant, so over-confident.
                logits.push(2.5 * (signal + rng.normal()));
            }
            labels.push(label);
        }
        let probs = apply_temperature(&logits, k, 1.0).unwrap();
        let before = calibration_report(&probs, k, &labels).unwrap();
        let t = fit_temperature(&logits, k, &labels).unwrap();
        let calibrated = apply_temperature(&logits, k, t).unwrap();
        let after = calibration_report(&calibrated, k, &labels).unwrap();
        (before, after)
    }

    /// Decodes a PNG and checks what every picture must satisfy: its size, several
    /// colours, a white background in the corner, and the grey dashed diagonal near
    /// `probe`.
    fn check_picture(png: &[u8], probe: (u32, u32)) -> RgbImage {
        let image = trustgc::image::load_from_memory(png).unwrap().to_rgb8();
        assert_eq!(image.dimensions(), (WIDTH, HEIGHT));
        let colours: std::collections::HashSet<[u8; 3]> = image.pixels().map(|p| p.0).collect();
        assert!(colours.len() >= 6, "{} colours", colours.len());
        assert_eq!(image.get_pixel(2, 2).0, [255, 255, 255], "white background");
        // The dashed diagonal passes through `probe`; a dash is 10 px, a gap 7, so
        // within ±12 px along it some pixel is of its grey (shrinking blends the edges
        // of the 2-pixel line with white: grey, and at least 30 levels darker than it).
        let (px, py) = probe;
        let on_diagonal = (0..=24).any(|d| {
            let [r, g, b] = image.get_pixel(px + d - 12, py + 12 - d).0;
            let grey = r.abs_diff(g) <= 4 && g.abs_diff(b) <= 4;
            grey && (DIAGONAL.0..=225).contains(&r)
        });
        assert!(on_diagonal, "no grey diagonal near {probe:?}");
        image
    }

    /// How many pixels are of this colour (within 8 levels per channel: shrinking the
    /// canvas leaves the inside of lines and bars as drawn, and blends only edges).
    fn count_colour(image: &RgbImage, colour: RGBColor) -> usize {
        image
            .pixels()
            .filter(|p| {
                let [r, g, b] = p.0;
                r.abs_diff(colour.0) <= 8 && g.abs_diff(colour.1) <= 8 && b.abs_diff(colour.2) <= 8
            })
            .count()
    }

    /// Where the sample pictures go, to be looked at ($TRUSTGC_PLOTS_DIR, or none).
    fn keep(name: &str, png: &[u8]) {
        if let Some(dir) = std::env::var_os("TRUSTGC_PLOTS_DIR") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(Path::new(&dir).join(name), png).unwrap();
        }
    }

    #[test]
    fn roc_png_draws_every_curve_and_the_diagonal() {
        let curves = sample_curves();
        assert!(curves.iter().all(|(_, _, points)| points.len() > 5000));
        let dir = temp_dir("roc");
        let path = dir.join("roc.png");
        roc_png(&path, "ROC: MNIST against three OoD sets", &curves).unwrap();
        let png = std::fs::read(&path).unwrap();
        let picture = roc_picture("ROC: MNIST against three OoD sets", &curves).unwrap();
        assert_eq!(png, picture.png, "drawing is deterministic");
        let image = check_picture(&png, picture.probe);
        for i in 0..curves.len() {
            let n = count_colour(&image, colour(i));
            assert!(n > 300, "curve {i}: {n} pixels of its colour");
        }
        assert!(count_colour(&image, DIAGONAL) > 100);
        keep("roc.png", &png);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn thinning_keeps_the_ends_and_stays_within_a_pixel() {
        let (_, _, points) = &sample_curves()[1];
        let kept = thin(points);
        assert!(
            kept.len() < points.len() / 2,
            "{} of {}",
            kept.len(),
            points.len()
        );
        let (first, last) = (&points[0], &points[points.len() - 1]);
        assert_eq!(kept[0], (first.fpr, first.tpr));
        assert_eq!(kept[kept.len() - 1], (last.fpr, last.tpr));
        // Every exact point is within ROC_THIN of some kept point, in each coordinate.
        for p in points {
            let near = kept
                .iter()
                .any(|&(x, y)| (p.fpr - x).abs() <= ROC_THIN && (p.tpr - y).abs() <= ROC_THIN);
            assert!(near, "{p:?} left out");
        }
    }

    #[test]
    fn roc_png_rejects_bad_curves() {
        let path = temp_dir("roc-bad").join("roc.png");
        assert!(matches!(roc_png(&path, "t", &[]), Err(PlotError::NoCurves)));
        let empty = vec![("set".to_string(), 0.5, vec![])];
        assert!(matches!(
            roc_png(&path, "t", &empty),
            Err(PlotError::EmptyCurve { curve }) if curve == "set"
        ));
        let point = |fpr, tpr| RocPoint {
            threshold: 0.0,
            fpr,
            tpr,
        };
        let outside = vec![(
            "set".to_string(),
            0.5,
            vec![point(0.0, 0.0), point(f64::NAN, 0.5)],
        )];
        assert!(matches!(
            roc_png(&path, "t", &outside),
            Err(PlotError::RocPointOutOfRange { index: 1, .. })
        ));
        let bad_auroc = vec![("set".to_string(), 1.5, vec![point(0.0, 0.0)])];
        assert!(matches!(
            roc_png(&path, "t", &bad_auroc),
            Err(PlotError::AurocOutOfRange { .. })
        ));
        assert!(!path.exists());
        std::fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn reliability_png_draws_both_reports_and_the_histogram() {
        let (before, after) = sample_reports();
        assert!(
            before.ece > 2.0 * after.ece,
            "{} vs {}",
            before.ece,
            after.ece
        );
        let dir = temp_dir("reliability");
        let path = dir.join("reliability.png");
        let title = "Reliability: before and after temperature scaling";
        reliability_png(&path, title, &before, Some(&after)).unwrap();
        let png = std::fs::read(&path).unwrap();
        let picture = reliability_picture(title, &before, Some(&after)).unwrap();
        assert_eq!(png, picture.png);
        let image = check_picture(&png, picture.probe);
        // Lines and markers in full colour, bars at 85 % over white: both reports drawn.
        for i in 0..2 {
            let n = count_colour(&image, colour(i));
            assert!(n > 300, "report {i}: {n} pixels of its colour");
        }
        keep("reliability.png", &png);

        let single = reliability_picture("one report", &before, None).unwrap();
        let image = check_picture(&single.png, single.probe);
        assert_eq!(count_colour(&image, colour(1)), 0, "no second report");
        keep("reliability-single.png", &single.png);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn reliability_png_of_empty_bins_is_a_plot_without_data() {
        let (mut report, _) = sample_reports();
        for bin in &mut report.reliability {
            (bin.count, bin.mean_confidence, bin.accuracy) = (0, None, None);
        }
        let picture = reliability_picture("empty", &report, None).unwrap();
        let image = check_picture(&picture.png, picture.probe);
        // Only the legend's sample line is in the report's colour.
        let n = count_colour(&image, colour(0));
        assert!(n < 150, "{n} pixels of the report's colour");
        keep("reliability-empty.png", &picture.png);
        report.reliability.clear();
        reliability_picture("no bins", &report, None).unwrap();
    }

    #[test]
    fn reliability_png_rejects_bad_bins() {
        let (mut before, after) = sample_reports();
        before.reliability[3].accuracy = Some(1.5);
        let err = reliability_picture("t", &after, Some(&before))
            .err()
            .unwrap();
        assert!(
            matches!(
                err,
                PlotError::InvalidBin {
                    report: Report::After,
                    index: 3,
                    ..
                }
            ),
            "{err}"
        );
        before.reliability[3].accuracy = Some(0.5);
        before.reliability[0].upper = f64::NAN;
        assert!(matches!(
            reliability_picture("t", &before, None),
            Err(PlotError::InvalidBin {
                report: Report::Before,
                index: 0,
                ..
            })
        ));
    }
}
