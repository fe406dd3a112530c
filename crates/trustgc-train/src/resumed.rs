//! Correct epoch numbers for metric loggers of a resumed run.
//!
//! burn-train 0.21's event store numbers the epochs it hands to metric loggers from 1 until
//! the first epoch of a run ends (its counter only learns the real epoch from that epoch's
//! summary). In a run resumed after epoch N, the first resumed epoch (N + 1) is therefore
//! logged as epoch 1: `FileMetricLogger` would overwrite `train/epoch-1` and `valid/epoch-1`,
//! and `metrics.csv` would mislabel its rows. [`ResumedEpochs`] wraps a logger and numbers
//! the epochs as the training loop does.

use std::collections::HashMap;

use burn::train::logger::MetricLogger;
use burn::train::metric::store::{EpochSummary, MetricsUpdate, Split};
use burn::train::metric::{MetricDefinition, NumericEntry};

/// A metric logger whose epochs count from `resumed_after + 1`.
pub struct ResumedEpochs<L> {
    inner: L,
    first: usize,
    next: HashMap<Split, usize>,
}

impl<L: MetricLogger> ResumedEpochs<L> {
    /// Wraps `inner` for a run that continues after epoch `resumed_after` (0: a fresh run).
    pub fn new(inner: L, resumed_after: usize) -> Self {
        Self {
            inner,
            first: resumed_after + 1,
            next: HashMap::new(),
        }
    }

    /// The epoch the training loop is in for `split`.
    pub fn epoch(&self, split: &Split) -> usize {
        self.next.get(split).copied().unwrap_or(self.first)
    }
}

impl<L: MetricLogger> MetricLogger for ResumedEpochs<L> {
    fn log(&mut self, update: MetricsUpdate, _epoch: usize, split: &Split) {
        let epoch = self.epoch(split);
        self.inner.log(update, epoch, split);
    }

    fn read_numeric(
        &mut self,
        name: &str,
        epoch: usize,
        split: &Split,
    ) -> Result<Vec<NumericEntry>, String> {
        self.inner.read_numeric(name, epoch, split)
    }

    fn log_metric_definition(&mut self, definition: MetricDefinition) {
        self.inner.log_metric_definition(definition);
    }

    fn log_epoch_summary(&mut self, summary: EpochSummary) {
        self.next
            .insert(summary.split.clone(), summary.epoch_number + 1);
        self.inner.log_epoch_summary(summary);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records the epochs it is given.
    #[derive(Default)]
    struct Seen(Vec<(usize, String)>);

    impl MetricLogger for Seen {
        fn log(&mut self, _update: MetricsUpdate, epoch: usize, split: &Split) {
            self.0.push((epoch, format!("{split:?}")));
        }
        fn read_numeric(
            &mut self,
            _name: &str,
            _epoch: usize,
            _split: &Split,
        ) -> Result<Vec<NumericEntry>, String> {
            Ok(Vec::new())
        }
        fn log_metric_definition(&mut self, _definition: MetricDefinition) {}
        fn log_epoch_summary(&mut self, _summary: EpochSummary) {}
    }

    fn update() -> MetricsUpdate {
        MetricsUpdate::new(Vec::new(), Vec::new())
    }

    #[test]
    fn a_resumed_run_logs_its_real_epochs() {
        let mut logger = ResumedEpochs::new(Seen::default(), 7);
        // burn-train 0.21 says "epoch 1" until the first summary.
        logger.log(update(), 1, &Split::Train);
        logger.log(update(), 1, &Split::Valid);
        logger.log_epoch_summary(EpochSummary {
            epoch_number: 8,
            split: Split::Train,
        });
        logger.log(update(), 9, &Split::Train);
        logger.log(update(), 1, &Split::Valid);
        let seen: Vec<usize> = logger.inner.0.iter().map(|(e, _)| *e).collect();
        assert_eq!(seen, [8, 8, 9, 8]);
    }

    #[test]
    fn a_fresh_run_counts_from_one() {
        let mut logger = ResumedEpochs::new(Seen::default(), 0);
        logger.log(update(), 1, &Split::Train);
        assert_eq!(logger.inner.0[0].0, 1);
    }
}
