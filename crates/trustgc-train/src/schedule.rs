//! Learning-rate schedules that resume exactly (their iteration count is checkpointed).

use burn::optim::LearningRate;
use burn::optim::lr_scheduler::LrScheduler;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

/// A learning-rate schedule, as written in a training config.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum LrSchedule {
    /// The same rate throughout.
    Constant,
    /// Multiply the rate by `gamma` at the start of each listed epoch (the reference's
    /// "cooling steps": ×0.1 per stage).
    Step {
        /// Epochs (0-based) at which the rate drops.
        milestones: Vec<usize>,
        /// The factor.
        gamma: f64,
    },
    /// Cosine decay from the base rate to `min_factor × base` over the run.
    Cosine {
        /// Final rate as a fraction of the base rate.
        min_factor: f64,
    },
}

/// [`LrSchedule`] evaluated per iteration.
#[derive(Clone, Debug)]
pub struct ScheduledLr {
    base: f64,
    schedule: LrSchedule,
    iterations_per_epoch: usize,
    total_iterations: usize,
    iteration: usize,
}

impl ScheduledLr {
    /// The schedule for `epochs` epochs of `iterations_per_epoch` steps.
    pub fn new(
        base: f64,
        schedule: LrSchedule,
        iterations_per_epoch: usize,
        epochs: usize,
    ) -> Self {
        Self {
            base,
            schedule,
            iterations_per_epoch: iterations_per_epoch.max(1),
            total_iterations: (iterations_per_epoch * epochs).max(1),
            iteration: 0,
        }
    }

    /// The rate at `iteration` (0-based).
    pub fn rate_at(&self, iteration: usize) -> f64 {
        match &self.schedule {
            LrSchedule::Constant => self.base,
            LrSchedule::Step { milestones, gamma } => {
                let epoch = iteration / self.iterations_per_epoch;
                let drops = milestones.iter().filter(|&&m| m <= epoch).count();
                self.base * gamma.powi(drops as i32)
            }
            LrSchedule::Cosine { min_factor } => {
                let t = (iteration as f64 / self.total_iterations as f64).min(1.0);
                let cos = 0.5 * (1.0 + (std::f64::consts::PI * t).cos());
                self.base * (min_factor + (1.0 - min_factor) * cos)
            }
        }
    }
}

impl LrScheduler for ScheduledLr {
    type Record<B: Backend> = usize;

    fn step(&mut self) -> LearningRate {
        let rate = self.rate_at(self.iteration);
        self.iteration += 1;
        rate
    }

    fn to_record<B: Backend>(&self) -> usize {
        self.iteration
    }

    fn load_record<B: Backend>(mut self, record: usize) -> Self {
        self.iteration = record;
        self
    }
}
