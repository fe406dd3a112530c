//! What a training run reports while it runs: a [`ProgressEvent`] per training or
//! validation batch and per finished epoch, handed to a [`TrainObserver`].
//!
//! The default observer, [`ConsolePrinter`], draws a live progress bar (epoch, iteration,
//! running loss and accuracy, ETA) when stderr is a terminal, and otherwise prints plain
//! lines to stderr: one at the first iteration and about ten per epoch, one when the
//! validation starts and one at each epoch's end with the training and validation means.
//!
//! A library user passes any observer (a closure taking `&ProgressEvent` will do) to
//! [`run_with_observer`](crate::fit::run_with_observer):
//!
//! ```no_run
//! use std::path::{Path, PathBuf};
//! use burn::backend::{Autodiff, Flex};
//! use trustgc_train::config::TrainConfig;
//! use trustgc_train::fit::run_with_observer;
//! use trustgc_train::progress::ProgressEvent;
//! use trustgc_train::step::Quantity;
//!
//! let config = TrainConfig::fashion_mnist(PathBuf::from("data/fashion-mnist"));
//! let observer = |event: &ProgressEvent| {
//!     if let ProgressEvent::EpochEnd(end) = event {
//!         let accuracy = end.valid.get(Quantity::Accuracy).unwrap_or(f64::NAN);
//!         println!("epoch {}: validation accuracy {accuracy:.2} %", end.epoch);
//!     }
//! };
//! let device = Default::default();
//! run_with_observer::<Autodiff<Flex>>(
//!     &config,
//!     Path::new("runs/fashion"),
//!     false,
//!     None,
//!     std::slice::from_ref(&device),
//!     Box::new(observer),
//! )?;
//! # Ok::<(), trustgc_train::fit::TrainError>(())
//! ```
//!
//! Inside, [`ObserverRenderer`] is burn-train's metrics renderer: it turns burn-train's
//! per-batch metric updates into these events.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use burn::train::LearnerSummary;
use burn::train::metric::{MetricDefinition, MetricId, NumericEntry};
use burn::train::renderer::{
    EvaluationName, EvaluationProgress, MetricState, MetricsRenderer, MetricsRendererEvaluation,
    MetricsRendererTraining, ProgressType, TrainingProgress,
};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::step::Quantity;

/// A model's parameter count (floating-point tensors, as `Module::num_params` counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamCount {
    /// All parameters.
    pub total: usize,
    /// Parameters that require a gradient: those the optimizer updates (for a
    /// `mu_only` run, the class means but not the frozen flow).
    pub trainable: usize,
}

impl ParamCount {
    /// Counts the parameters of `module`.
    pub fn of<B: Backend, M: Module<B>>(module: &M) -> Self {
        let mut count = ParamCounter(ParamCount::default());
        module.visit(&mut count);
        count.0
    }
}

struct ParamCounter(ParamCount);

impl<B: Backend> ModuleVisitor<B> for ParamCounter {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        let tensor = param.val();
        let n = tensor.shape().num_elements();
        self.0.total += n;
        if tensor.is_require_grad() {
            self.0.trainable += n;
        }
    }
}

/// Sample-weighted means of the run's metrics ([`Quantity`]) over some batches.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MetricMeans {
    sums: [f64; Quantity::ALL.len()],
    weights: [usize; Quantity::ALL.len()],
}

impl MetricMeans {
    /// The mean of `quantity` (accuracy in percent), or `None` when no batch reported it.
    pub fn get(&self, quantity: Quantity) -> Option<f64> {
        let i = index(quantity);
        (self.weights[i] > 0).then(|| self.sums[i] / self.weights[i] as f64)
    }

    /// Adds `value`, the mean of `quantity` over `samples` samples.
    pub fn add(&mut self, quantity: Quantity, value: f64, samples: usize) {
        let i = index(quantity);
        self.sums[i] += value * samples as f64;
        self.weights[i] += samples;
    }

    /// Adds all the means of `other`.
    fn merge(&mut self, other: &MetricMeans) {
        for i in 0..Quantity::ALL.len() {
            self.sums[i] += other.sums[i];
            self.weights[i] += other.weights[i];
        }
    }
}

fn index(quantity: Quantity) -> usize {
    Quantity::ALL
        .iter()
        .position(|&q| q == quantity)
        .unwrap_or_default()
}

/// How far a training or validation pass of one epoch has come.
#[derive(Clone, Debug, PartialEq)]
pub struct StepProgress {
    /// The epoch (1-based).
    pub epoch: usize,
    /// The run's last epoch.
    pub epochs: usize,
    /// Batches done in this pass (1-based).
    pub iteration: usize,
    /// Batches in this pass.
    pub iterations: usize,
    /// The metrics of the last batch.
    pub batch: MetricMeans,
    /// The means since the start of this pass.
    pub running: MetricMeans,
    /// Time since the start of this pass.
    pub elapsed: Duration,
}

impl StepProgress {
    /// Batches per second so far (`None` before any time has passed).
    pub fn rate(&self) -> Option<f64> {
        let seconds = self.elapsed.as_secs_f64();
        (seconds > 0.0 && self.iteration > 0).then(|| self.iteration as f64 / seconds)
    }

    /// The time left in this pass at the rate so far.
    pub fn eta(&self) -> Option<Duration> {
        if self.iteration == 0 {
            return None;
        }
        let left = self.iterations.saturating_sub(self.iteration) as f64;
        let per_iteration = self.elapsed.as_secs_f64() / self.iteration as f64;
        Duration::try_from_secs_f64(per_iteration * left).ok()
    }
}

/// An epoch's results.
#[derive(Clone, Debug, PartialEq)]
pub struct EpochEnd {
    /// The epoch (1-based).
    pub epoch: usize,
    /// The run's last epoch.
    pub epochs: usize,
    /// Means over the epoch's training batches.
    pub train: MetricMeans,
    /// Means over the validation batches (empty without validation data).
    pub valid: MetricMeans,
    /// Time of the training pass.
    pub train_time: Duration,
    /// Time of the validation pass.
    pub valid_time: Duration,
}

/// Something that happened in a run.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// The run starts (once per invocation, before the first batch).
    Start {
        /// The first epoch trained now (after the checkpoint of a resumed run).
        first_epoch: usize,
        /// The run's last epoch.
        epochs: usize,
        /// Training batches per epoch.
        iterations: usize,
        /// The model's parameters.
        params: ParamCount,
    },
    /// A training batch was processed (and the optimizer stepped).
    Train(StepProgress),
    /// A validation batch was processed.
    Valid(StepProgress),
    /// An epoch's training and validation are done.
    EpochEnd(EpochEnd),
    /// Training stopped: all epochs are done, or it was interrupted.
    End,
}

/// Receives a run's [`ProgressEvent`]s, in order, on burn-train's metrics thread.
///
/// Any `FnMut(&ProgressEvent) + Send` closure is an observer.
pub trait TrainObserver: Send {
    /// Called once per event.
    fn on_event(&mut self, event: &ProgressEvent);
}

impl<F: FnMut(&ProgressEvent) + Send> TrainObserver for F {
    fn on_event(&mut self, event: &ProgressEvent) {
        self(event)
    }
}

/// The default [`TrainObserver`]: a live progress bar on a terminal, plain lines otherwise
/// (both on stderr).
pub struct ConsolePrinter {
    bar: Option<Bar>,
    plain: bool,
}

struct Bar {
    bar: ProgressBar,
    valid: bool,
    epoch: usize,
}

impl ConsolePrinter {
    /// A bar if stderr is a terminal, plain lines if not.
    pub fn new() -> Self {
        Self {
            bar: None,
            plain: !std::io::stderr().is_terminal(),
        }
    }

    /// Plain lines even on a terminal.
    pub fn plain() -> Self {
        Self {
            bar: None,
            plain: true,
        }
    }

    fn print(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn clear_bar(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.bar.finish_and_clear();
        }
    }

    fn draw(&mut self, step: &StepProgress, valid: bool) {
        let prefix = format!(
            "{} {}/{}",
            if valid { "valid" } else { "epoch" },
            step.epoch,
            step.epochs
        );
        let same = matches!(&self.bar, Some(b) if b.valid == valid && b.epoch == step.epoch);
        if !same {
            self.clear_bar();
            let style =
                ProgressStyle::with_template("{prefix} [{bar:30.cyan/blue}] {pos}/{len}  {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("=> ");
            let bar = ProgressBar::with_draw_target(
                Some(step.iterations as u64),
                ProgressDrawTarget::stderr(),
            )
            .with_style(style)
            .with_prefix(prefix);
            self.bar = Some(Bar {
                bar,
                valid,
                epoch: step.epoch,
            });
        }
        if let Some(bar) = &self.bar {
            bar.bar.set_length(step.iterations as u64);
            bar.bar.set_position(step.iteration as u64);
            bar.bar.set_message(format!(
                "loss {}  acc {}  eta {}",
                number(step.running.get(Quantity::Loss), 4),
                percent(step.running.get(Quantity::Accuracy)),
                step.eta().map_or_else(|| "-".to_string(), format_duration),
            ));
        }
    }
}

impl Default for ConsolePrinter {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ConsolePrinter {
    fn drop(&mut self) {
        self.clear_bar();
    }
}

/// Whether a plain line is printed after training batch `iteration` of `iterations`: the
/// first, then about ten per epoch (not the last: the epoch's line follows it).
fn prints_line(iteration: usize, iterations: usize) -> bool {
    let every = iterations.div_ceil(10).max(1);
    iteration == 1 || (iteration.is_multiple_of(every) && iteration < iterations)
}

impl TrainObserver for ConsolePrinter {
    fn on_event(&mut self, event: &ProgressEvent) {
        match event {
            ProgressEvent::Start {
                first_epoch,
                epochs,
                iterations,
                params,
            } => {
                self.print(&format_params(params));
                self.print(&format_start(*first_epoch, *epochs, *iterations));
            }
            ProgressEvent::Train(step) if self.plain => {
                if prints_line(step.iteration, step.iterations) {
                    self.print(&format_step_line(step));
                }
            }
            ProgressEvent::Valid(step) if self.plain => {
                if step.iteration == 1 {
                    self.print(&format!(
                        "epoch {}/{}  validating ({} batches)",
                        step.epoch, step.epochs, step.iterations
                    ));
                }
            }
            ProgressEvent::Train(step) => self.draw(step, false),
            ProgressEvent::Valid(step) => self.draw(step, true),
            ProgressEvent::EpochEnd(end) => {
                self.clear_bar();
                self.print(&format_epoch_line(end));
            }
            ProgressEvent::End => self.clear_bar(),
        }
    }
}

/// `"12,345,678"`.
fn group_digits(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn number(value: Option<f64>, decimals: usize) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.decimals$}"))
}

fn percent(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_string(), |v| format!("{v:.2}%"))
}

/// A duration for people: `"42s"`, `"7m05s"`, `"3h04m"`, `"2d05h"` (rounded down).
fn format_duration(duration: Duration) -> String {
    let s = duration.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
    }
}

/// The one-line model summary: `"model: 1,234 parameters (1,000 trainable)"`.
fn format_params(params: &ParamCount) -> String {
    format!(
        "model: {} parameters ({} trainable)",
        group_digits(params.total),
        group_digits(params.trainable)
    )
}

fn format_start(first_epoch: usize, epochs: usize, iterations: usize) -> String {
    let resumed = if first_epoch > 1 {
        format!(" (resumed after epoch {})", first_epoch - 1)
    } else {
        String::new()
    };
    let epochs = if first_epoch == epochs {
        format!("epoch {epochs} of {epochs}")
    } else {
        format!("epochs {first_epoch}-{epochs}")
    };
    format!("training {epochs}{resumed}, {iterations} batches each")
}

/// The plain line of a training batch:
/// `"epoch 1/5  iter  94/938  loss 3.1234  acc 45.67%  2.10 it/s  eta 7m12s"`, with the
/// running means of the epoch.
fn format_step_line(step: &StepProgress) -> String {
    let width = step.iterations.to_string().len();
    let rate = match step.rate() {
        Some(r) if r >= 1.0 => format!("{r:.2} it/s"),
        Some(r) => format!("{:.2} s/it", 1.0 / r),
        None => "- it/s".to_string(),
    };
    format!(
        "epoch {}/{}  iter {:>width$}/{}  loss {}  acc {}  {rate}  eta {}",
        step.epoch,
        step.epochs,
        step.iteration,
        step.iterations,
        number(step.running.get(Quantity::Loss), 4),
        percent(step.running.get(Quantity::Accuracy)),
        step.eta().map_or_else(|| "-".to_string(), format_duration),
    )
}

/// The line of a finished epoch: `"epoch 1/5 done  train loss 3.1234  acc 45.67%  |  valid
/// loss 3.0000  acc 47.00%  bits/dim 4.1234  |  2m03s + 12s"` (training + validation time);
/// without validation batches, only the training part and time.
fn format_epoch_line(end: &EpochEnd) -> String {
    let train = format!(
        "epoch {}/{} done  train loss {}  acc {}",
        end.epoch,
        end.epochs,
        number(end.train.get(Quantity::Loss), 4),
        percent(end.train.get(Quantity::Accuracy)),
    );
    if end.valid == MetricMeans::default() {
        return format!("{train}  |  {}", format_duration(end.train_time));
    }
    format!(
        "{train}  |  valid loss {}  acc {}  bits/dim {}  |  {} + {}",
        number(end.valid.get(Quantity::Loss), 4),
        percent(end.valid.get(Quantity::Accuracy)),
        number(end.valid.get(Quantity::BitsPerDim), 4),
        format_duration(end.train_time),
        format_duration(end.valid_time),
    )
}

/// The epoch being trained or validated.
struct EpochState {
    epoch: usize,
    epochs: usize,
    train: MetricMeans,
    valid: MetricMeans,
    /// When the training pass began (the end of the previous epoch or of the setup).
    train_start: Instant,
    /// When the validation pass began (the last training batch).
    valid_start: Option<Instant>,
    /// When the last training batch was reported.
    last_train: Instant,
}

/// burn-train's metrics renderer that reports to a [`TrainObserver`].
///
/// It follows the batches of each epoch, keeps the running means of the metrics named by
/// [`Quantity::name`], and detects an epoch's end: its last validation batch, the first
/// batch of the next epoch, or the end of training.
pub struct ObserverRenderer {
    // burn-train's renderer must be `Sync`; the observer need only be `Send`.
    observer: Mutex<Box<dyn TrainObserver>>,
    batch_size: usize,
    quantities: HashMap<MetricId, Quantity>,
    batch: MetricMeans,
    epoch: Option<EpochState>,
    /// When the current epoch's training pass began.
    mark: Instant,
}

impl ObserverRenderer {
    /// A renderer for batches of `batch_size` samples (the last one may be smaller).
    pub fn new(observer: Box<dyn TrainObserver>, batch_size: usize) -> Self {
        Self {
            observer: Mutex::new(observer),
            batch_size: batch_size.max(1),
            quantities: HashMap::new(),
            batch: MetricMeans::default(),
            epoch: None,
            mark: Instant::now(),
        }
    }

    /// Passes `event` to the observer.
    pub fn emit(&mut self, event: &ProgressEvent) {
        let observer = self
            .observer
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        observer.on_event(event);
    }

    fn record(&mut self, state: MetricState) {
        if let MetricState::Numeric(entry, value) = state
            && let Some(&quantity) = self.quantities.get(&entry.metric_id)
        {
            let (value, samples) = match value {
                NumericEntry::Value(v) => (v, 1),
                NumericEntry::Aggregated {
                    aggregated_value,
                    count,
                } => (aggregated_value, count),
            };
            self.batch.add(quantity, value, samples);
        }
    }

    fn finish_epoch(&mut self) {
        if let Some(state) = self.epoch.take() {
            let now = Instant::now();
            let (train_time, valid_time) = match state.valid_start {
                Some(valid_start) => (valid_start - state.train_start, now - valid_start),
                None => (state.last_train - state.train_start, Duration::ZERO),
            };
            self.mark = now;
            self.emit(&ProgressEvent::EpochEnd(EpochEnd {
                epoch: state.epoch,
                epochs: state.epochs,
                train: state.train,
                valid: state.valid,
                train_time,
                valid_time,
            }));
        }
    }

    /// The epoch, iteration and iterations of `item`.
    fn position(&self, item: &TrainingProgress) -> (usize, usize, usize, usize) {
        let epoch = item.global_progress.items_processed;
        let epochs = item.global_progress.items_total;
        let iteration = item.iteration.unwrap_or(1);
        let iterations = item
            .progress
            .as_ref()
            .map_or(iteration, |p| p.items_total.div_ceil(self.batch_size))
            .max(iteration);
        (epoch, epochs, iteration, iterations)
    }
}

impl MetricsRendererTraining for ObserverRenderer {
    fn update_train(&mut self, state: MetricState) {
        self.record(state);
    }

    fn update_valid(&mut self, state: MetricState) {
        self.record(state);
    }

    fn render_train(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let (epoch, epochs, iteration, iterations) = self.position(&item);
        if self.epoch.as_ref().is_some_and(|s| s.epoch != epoch) {
            self.finish_epoch();
        }
        let now = Instant::now();
        let mark = self.mark;
        let state = self.epoch.get_or_insert_with(|| EpochState {
            epoch,
            epochs,
            train: MetricMeans::default(),
            valid: MetricMeans::default(),
            train_start: mark,
            valid_start: None,
            last_train: mark,
        });
        let batch = std::mem::take(&mut self.batch);
        state.train.merge(&batch);
        state.last_train = now;
        let step = StepProgress {
            epoch,
            epochs,
            iteration,
            iterations,
            batch,
            running: state.train.clone(),
            elapsed: now - state.train_start,
        };
        self.emit(&ProgressEvent::Train(step));
    }

    fn render_valid(&mut self, item: TrainingProgress, _indicators: Vec<ProgressType>) {
        let (epoch, epochs, iteration, iterations) = self.position(&item);
        let done = item
            .progress
            .as_ref()
            .is_some_and(|p| p.items_processed >= p.items_total);
        let batch = std::mem::take(&mut self.batch);
        let Some(state) = self.epoch.as_mut().filter(|s| s.epoch == epoch) else {
            // Validation without a training pass of that epoch: nothing to attach it to.
            return;
        };
        let now = Instant::now();
        let valid_start = *state.valid_start.get_or_insert(state.last_train);
        state.valid.merge(&batch);
        let step = StepProgress {
            epoch,
            epochs,
            iteration,
            iterations,
            batch,
            running: state.valid.clone(),
            elapsed: now - valid_start,
        };
        self.emit(&ProgressEvent::Valid(step));
        if done {
            self.finish_epoch();
        }
    }

    fn on_train_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        self.finish_epoch();
        self.emit(&ProgressEvent::End);
        Ok(())
    }
}

impl MetricsRendererEvaluation for ObserverRenderer {
    fn update_test(&mut self, _name: EvaluationName, _state: MetricState) {}

    fn render_test(&mut self, _item: EvaluationProgress, _indicators: Vec<ProgressType>) {}

    fn on_test_end(
        &mut self,
        _summary: Option<LearnerSummary>,
    ) -> Result<(), Box<dyn core::error::Error>> {
        Ok(())
    }
}

impl MetricsRenderer for ObserverRenderer {
    fn manual_close(&mut self) {}

    fn register_metric(&mut self, definition: MetricDefinition) {
        if let Some(&quantity) = Quantity::ALL.iter().find(|q| q.name() == definition.name) {
            self.quantities.insert(definition.metric_id, quantity);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use burn::backend::{Autodiff, Flex};
    use burn::data::dataloader::Progress;
    use burn::train::metric::{MetricAttributes, MetricEntry, SerializedEntry};

    use super::*;

    fn means(loss: f64, accuracy: f64, samples: usize) -> MetricMeans {
        let mut m = MetricMeans::default();
        m.add(Quantity::Loss, loss, samples);
        m.add(Quantity::Accuracy, accuracy, samples);
        m
    }

    #[test]
    fn durations_read_as_people_write_them() {
        let d = Duration::from_secs;
        assert_eq!(format_duration(Duration::from_millis(400)), "0s");
        assert_eq!(format_duration(d(59)), "59s");
        assert_eq!(format_duration(d(60)), "1m00s");
        assert_eq!(format_duration(d(7 * 60 + 5)), "7m05s");
        assert_eq!(format_duration(d(3599)), "59m59s");
        assert_eq!(format_duration(d(3 * 3600 + 4 * 60 + 59)), "3h04m");
        assert_eq!(format_duration(d(2 * 86400 + 5 * 3600 + 1)), "2d05h");
    }

    #[test]
    fn a_step_line_shows_position_running_means_rate_and_eta() {
        let step = StepProgress {
            epoch: 2,
            epochs: 5,
            iteration: 94,
            iterations: 938,
            batch: means(9.0, 0.0, 64),
            running: means(3.12345, 45.678, 94 * 64),
            // 94 batches in 47 s: 2 it/s, 844 batches (422 s) left.
            elapsed: Duration::from_secs(47),
        };
        assert_eq!(step.rate(), Some(2.0));
        assert_eq!(step.eta(), Some(Duration::from_secs(422)));
        assert_eq!(
            format_step_line(&step),
            "epoch 2/5  iter  94/938  loss 3.1235  acc 45.68%  2.00 it/s  eta 7m02s"
        );
        let slow = StepProgress {
            iteration: 1,
            iterations: 3,
            elapsed: Duration::from_secs(4),
            running: MetricMeans::default(),
            ..step
        };
        assert_eq!(
            format_step_line(&slow),
            "epoch 2/5  iter 1/3  loss -  acc -  4.00 s/it  eta 8s"
        );
    }

    #[test]
    fn an_epoch_line_shows_training_and_validation_means() {
        let mut valid = means(2.5, 50.0, 100);
        valid.add(Quantity::BitsPerDim, 3.25, 100);
        let end = EpochEnd {
            epoch: 1,
            epochs: 1,
            train: means(3.0, 40.0, 512),
            valid,
            train_time: Duration::from_secs(123),
            valid_time: Duration::from_secs(12),
        };
        assert_eq!(
            format_epoch_line(&end),
            "epoch 1/1 done  train loss 3.0000  acc 40.00%  |  valid loss 2.5000  acc 50.00%  \
             bits/dim 3.2500  |  2m03s + 12s"
        );
        let unvalidated = EpochEnd {
            valid: MetricMeans::default(),
            ..end
        };
        assert_eq!(
            format_epoch_line(&unvalidated),
            "epoch 1/1 done  train loss 3.0000  acc 40.00%  |  2m03s"
        );
    }

    #[test]
    fn about_ten_lines_per_epoch() {
        let printed = |n| (1..=n).filter(|&i| prints_line(i, n)).collect::<Vec<_>>();
        assert_eq!(printed(8), [1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(
            printed(938),
            [1, 94, 188, 282, 376, 470, 564, 658, 752, 846]
        );
        assert_eq!(printed(1), [1]);
    }

    #[test]
    fn the_model_line_groups_digits() {
        let params = ParamCount {
            total: 1_234_567,
            trainable: 999,
        };
        assert_eq!(
            format_params(&params),
            "model: 1,234,567 parameters (999 trainable)"
        );
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(100_000), "100,000");
    }

    #[derive(Module, Debug)]
    struct TwoParams<B: Backend> {
        trained: Param<Tensor<B, 2>>,
        frozen: Param<Tensor<B, 1>>,
    }

    #[test]
    fn trainable_parameters_are_those_that_require_a_gradient() {
        type B = Autodiff<Flex>;
        let device = Default::default();
        let module = TwoParams::<B> {
            trained: Param::from_tensor(Tensor::zeros([3, 4], &device)),
            frozen: Param::from_tensor(Tensor::zeros([5], &device)),
        };
        let count = ParamCount::of(&module);
        assert_eq!(count.total, module.num_params());
        assert_eq!((count.total, count.trainable), (17, 17));
        let module = TwoParams {
            frozen: module.frozen.set_require_grad(false),
            ..module
        };
        assert_eq!(ParamCount::of(&module).trainable, 12);
        assert_eq!(ParamCount::of(&module.no_grad()).trainable, 0);
    }

    /// Feeds the renderer what burn-train's event processor would for one batch.
    fn batch(renderer: &mut ObserverRenderer, loss: f64, accuracy: f64, samples: usize) {
        for (name, value) in [("loss", loss), ("accuracy", accuracy), ("other", 7.0)] {
            let entry = MetricEntry::new(
                MetricId::new(Arc::new(name.to_string())),
                SerializedEntry::new(String::new(), String::new()),
            );
            let value = NumericEntry::Aggregated {
                aggregated_value: value,
                count: samples,
            };
            renderer.update_train(MetricState::Numeric(entry, value));
        }
    }

    fn progress(epoch: usize, iteration: usize, done: usize, total: usize) -> TrainingProgress {
        TrainingProgress {
            progress: Some(Progress::new(done, total)),
            global_progress: Progress::new(epoch, 2),
            iteration: Some(iteration),
        }
    }

    #[test]
    fn the_renderer_reports_batches_and_sample_weighted_epoch_means() {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = events.clone();
        let observer = move |event: &ProgressEvent| sink.lock().unwrap().push(event.clone());
        let mut r = ObserverRenderer::new(Box::new(observer), 4);
        for name in ["loss", "accuracy", "other"] {
            r.register_metric(MetricDefinition {
                metric_id: MetricId::new(Arc::new(name.to_string())),
                name: name.to_string(),
                description: None,
                attributes: MetricAttributes::None,
            });
        }
        // Epoch 1: 6 training samples in batches of 4 and 2, 4 validation samples.
        batch(&mut r, 3.0, 25.0, 4);
        r.render_train(progress(1, 1, 4, 6), vec![]);
        batch(&mut r, 6.0, 100.0, 2);
        r.render_train(progress(1, 2, 6, 6), vec![]);
        batch(&mut r, 2.0, 50.0, 4);
        r.render_valid(progress(1, 1, 4, 4), vec![]);
        // Epoch 2 has no validation: it ends with training.
        batch(&mut r, 1.0, 75.0, 4);
        r.render_train(progress(2, 1, 4, 6), vec![]);
        r.on_train_end(None).unwrap();

        let events = events.lock().unwrap();
        let kinds: Vec<&str> = events
            .iter()
            .map(|e| match e {
                ProgressEvent::Train(_) => "train",
                ProgressEvent::Valid(_) => "valid",
                ProgressEvent::EpochEnd(_) => "epoch",
                ProgressEvent::End => "end",
                ProgressEvent::Start { .. } => "start",
            })
            .collect();
        assert_eq!(
            kinds,
            ["train", "train", "valid", "epoch", "train", "epoch", "end"]
        );
        let ProgressEvent::Train(second) = &events[1] else {
            unreachable!()
        };
        assert_eq!((second.iteration, second.iterations), (2, 2));
        assert_eq!(second.batch.get(Quantity::Loss), Some(6.0));
        // (4·3 + 2·6) / 6 and (4·25 + 2·100) / 6.
        assert_eq!(second.running.get(Quantity::Loss), Some(4.0));
        assert_eq!(second.running.get(Quantity::Accuracy), Some(50.0));
        assert_eq!(second.running.get(Quantity::NllJoint), None);
        let ProgressEvent::EpochEnd(first) = &events[3] else {
            unreachable!()
        };
        assert_eq!((first.epoch, first.epochs), (1, 2));
        assert_eq!(first.train, second.running);
        assert_eq!(first.valid, means(2.0, 50.0, 4));
        let ProgressEvent::EpochEnd(last) = &events[5] else {
            unreachable!()
        };
        assert_eq!(last.epoch, 2);
        assert_eq!(last.train, means(1.0, 75.0, 4));
        assert_eq!(last.valid, MetricMeans::default());
        assert_eq!(last.valid_time, Duration::ZERO);
    }
}
