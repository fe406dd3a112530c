//! Post-hoc recalibration native to the generative classifier: a temperature on the
//! class distances, stored as `calibration.json` beside a model.
//!
//! A GC's posterior is `p(y|x) ∝ p(y) · exp(−½ ‖z − μ_y‖²)` (plus the low-rank conv term):
//! the class-specific part of `log p(x|y)`. A temperature `T` divides that part,
//! `p_T(y|x) ∝ p(y) · exp(−½ ‖z − μ_y‖² / T)`: `T > 1` softens over-confident posteriors,
//! `T < 1` sharpens under-confident ones. Densities (`log p(x|y)`, `log p(x)`) are
//! unchanged, and so is the ranking of the classes under a uniform prior (with a prior,
//! `p(y)` weighs relatively more when `T > 1`; the temperature is fitted without one). `trustgc calibrate` fits `T` by minimizing the NLL
//! on a validation split ([`crate::metrics::fit_temperature`]); [`Classifier`] applies it
//! to [`Likelihoods::log_posterior`](crate::Likelihoods::log_posterior) once the model
//! folder has a `calibration.json`.
//!
//! The verdict's class test keeps using the uncalibrated posterior, the one its
//! thresholds (`ood.json`) were fitted with: a class can agree with an input (at least
//! 10 % of the uncalibrated posterior) while its displayed, calibrated posterior is a
//! little lower or higher.
//!
//! [`Classifier`]: crate::Classifier

use serde::{Deserialize, Serialize};

use crate::metrics::{MAX_TEMPERATURE, MIN_TEMPERATURE};

/// A fitted temperature and what it was fitted and measured on (`calibration.json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TemperatureScaling {
    /// The temperature `T` dividing the class-specific log-likelihood terms.
    pub temperature: f64,
    /// Images it was fitted on.
    pub fitted_images: usize,
    /// Where they came from.
    pub fitted_on: String,
    /// Top-label ECE (15 equal-width bins) on the evaluation images before scaling.
    pub ece_before: f64,
    /// The same after scaling.
    pub ece_after: f64,
    /// Images of that evaluation.
    pub evaluated_images: usize,
    /// Where they came from.
    pub evaluated_on: String,
}

/// Why a `calibration.json` cannot be used.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum CalibrationCheckError {
    /// The temperature is not a finite number in the range the fit searches.
    #[error(
        "temperature {temperature} is not a finite number in [{MIN_TEMPERATURE}, {MAX_TEMPERATURE}]"
    )]
    Temperature {
        /// The value.
        temperature: f64,
    },
}

impl TemperatureScaling {
    /// Checks the temperature.
    ///
    /// # Errors
    /// [`CalibrationCheckError::Temperature`] for a temperature that is not finite or
    /// outside `[MIN_TEMPERATURE, MAX_TEMPERATURE]` (a `0` would divide by zero, a
    /// negative one would reverse the classes).
    pub fn check(&self) -> Result<(), CalibrationCheckError> {
        let t = self.temperature;
        if !(t.is_finite() && (MIN_TEMPERATURE..=MAX_TEMPERATURE).contains(&t)) {
            return Err(CalibrationCheckError::Temperature { temperature: t });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scaling(temperature: f64) -> TemperatureScaling {
        TemperatureScaling {
            temperature,
            fitted_images: 10,
            fitted_on: "a".into(),
            ece_before: 0.1,
            ece_after: 0.01,
            evaluated_images: 10,
            evaluated_on: "b".into(),
        }
    }

    #[test]
    fn only_usable_temperatures_pass() {
        assert_eq!(scaling(1.5).check(), Ok(()));
        for t in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e300] {
            assert!(scaling(t).check().is_err(), "{t}");
        }
        let json = serde_json::to_string(&scaling(1.5)).unwrap();
        let back: TemperatureScaling = serde_json::from_str(&json).unwrap();
        assert_eq!(back, scaling(1.5));
    }
}
