//! The released ImageNet models, once: their names, β, file names and reported
//! accuracies, and the one parser of β written as text.
//!
//! The hub ([`crate::hub::fetch_model_dir`]) and the converter's model card
//! ([`crate::weights::convert`]) both read this catalog.
//!
//! ```
//! use trustgc::Beta;
//! use trustgc::hub::catalog::{Pretrained, parse_beta};
//!
//! let variant: Pretrained = "beta_8".parse()?;
//! assert_eq!(variant, Pretrained::Beta8);
//! assert_eq!(variant.file_name(), "beta_8.avg.pt");
//! assert_eq!(variant.reported_top1(), Some(74.59));
//! assert_eq!(Pretrained::from_file_name("beta_inf.avg.pt"), Some(Pretrained::BetaInf));
//! assert_eq!(parse_beta("inf")?, Beta::Infinity);
//! assert_eq!(parse_beta("0.5")?, Beta::Finite(0.5));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::str::FromStr;

use trustgc_core::Beta;

/// One of the eight ImageNet models the authors of the IB-INN (Mackowiak et al., CVPR
/// 2021) released as `beta_X.avg.pt`, named by the β of the information-bottleneck
/// objective they were trained with (β = 0: purely generative, β = ∞: plain
/// cross-entropy).
///
/// Accuracies are the paper's top-1 on the ImageNet validation set, single center crop
/// ([`Pretrained::reported_top1`]). A public report (ibinn_imagenet issue #7) measured much
/// lower accuracy for some of the released files ([`Pretrained::publicly_measured_top1`]:
/// β=2 0.56 %, β=32 36.81 %, β=∞ 74.40 %); the cause is unknown, so measure before you
/// rely on a variant.
///
/// Load one with `Classifier::pretrained` (feature `pretrained`, see [`crate::hub`]):
///
/// ```no_run
/// use trustgc::burn::backend::Flex;
/// use trustgc::{Classifier, Pretrained};
///
/// let classifier = Classifier::<Flex>::pretrained(Pretrained::Beta8, &Default::default())?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// Naming a variant needs no network:
///
/// ```
/// use trustgc::Pretrained;
///
/// for variant in Pretrained::ALL {
///     println!("{variant}: {} ({:?} % top-1 reported)", variant.file_name(), variant.reported_top1());
/// }
/// assert_eq!("inf".parse::<Pretrained>()?, Pretrained::BetaInf);
/// assert!("beta_3".parse::<Pretrained>().is_err());
/// # Ok::<(), trustgc::hub::catalog::ParsePretrainedError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Pretrained {
    /// β = 0, the purely generative objective (`beta_0.avg.pt`). Top-1: not reported.
    Beta0,
    /// β = 1 (`beta_1.avg.pt`). Top-1 reported in the paper: 67.30 %.
    Beta1,
    /// β = 2 (`beta_2.avg.pt`). Top-1 reported in the paper: 71.73 % (a public report
    /// measured 0.56 % for the released file).
    Beta2,
    /// β = 4 (`beta_4.avg.pt`). Top-1 reported in the paper: 73.69 %.
    Beta4,
    /// β = 8 (`beta_8.avg.pt`). Top-1 reported in the paper: 74.59 %.
    Beta8,
    /// β = 16 (`beta_16.avg.pt`). Top-1 reported in the paper: 75.54 %.
    Beta16,
    /// β = 32 (`beta_32.avg.pt`). Top-1 reported in the paper: 76.18 % (a public report
    /// measured 36.81 % for the released file).
    Beta32,
    /// β = ∞, plain cross-entropy (`beta_inf.avg.pt`). Top-1 reported in the paper:
    /// 76.27 % (a public report measured 74.40 % for the released file).
    BetaInf,
}

/// Per variant: β, the paper's top-1, the public report's top-1.
struct Entry {
    beta: Beta,
    reported_top1: Option<f64>,
    publicly_measured_top1: Option<f64>,
}

impl Pretrained {
    /// Every released variant, in increasing β.
    pub const ALL: [Pretrained; 8] = [
        Pretrained::Beta0,
        Pretrained::Beta1,
        Pretrained::Beta2,
        Pretrained::Beta4,
        Pretrained::Beta8,
        Pretrained::Beta16,
        Pretrained::Beta32,
        Pretrained::BetaInf,
    ];

    fn entry(self) -> Entry {
        let (beta, reported_top1, publicly_measured_top1) = match self {
            Pretrained::Beta0 => (Beta::Finite(0.0), None, None),
            Pretrained::Beta1 => (Beta::Finite(1.0), Some(67.30), None),
            Pretrained::Beta2 => (Beta::Finite(2.0), Some(71.73), Some(0.56)),
            Pretrained::Beta4 => (Beta::Finite(4.0), Some(73.69), None),
            Pretrained::Beta8 => (Beta::Finite(8.0), Some(74.59), None),
            Pretrained::Beta16 => (Beta::Finite(16.0), Some(75.54), None),
            Pretrained::Beta32 => (Beta::Finite(32.0), Some(76.18), Some(36.81)),
            Pretrained::BetaInf => (Beta::Infinity, Some(76.27), Some(74.40)),
        };
        Entry {
            beta,
            reported_top1,
            publicly_measured_top1,
        }
    }

    /// The folder of the converted model in a repository, e.g. `beta_8`.
    pub fn folder(self) -> &'static str {
        match self {
            Pretrained::Beta0 => "beta_0",
            Pretrained::Beta1 => "beta_1",
            Pretrained::Beta2 => "beta_2",
            Pretrained::Beta4 => "beta_4",
            Pretrained::Beta8 => "beta_8",
            Pretrained::Beta16 => "beta_16",
            Pretrained::Beta32 => "beta_32",
            Pretrained::BetaInf => "beta_inf",
        }
    }

    /// The name of the authors' checkpoint, e.g. `beta_8.avg.pt`.
    pub fn file_name(self) -> &'static str {
        match self {
            Pretrained::Beta0 => "beta_0.avg.pt",
            Pretrained::Beta1 => "beta_1.avg.pt",
            Pretrained::Beta2 => "beta_2.avg.pt",
            Pretrained::Beta4 => "beta_4.avg.pt",
            Pretrained::Beta8 => "beta_8.avg.pt",
            Pretrained::Beta16 => "beta_16.avg.pt",
            Pretrained::Beta32 => "beta_32.avg.pt",
            Pretrained::BetaInf => "beta_inf.avg.pt",
        }
    }

    /// The variant whose released file is called exactly `name` (`beta_8.avg.pt`).
    pub fn from_file_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.file_name() == name)
    }

    /// The variant trained with `beta`, if one was released.
    pub fn from_beta(beta: Beta) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.beta() == beta)
    }

    /// The β the model was trained with.
    pub fn beta(self) -> Beta {
        self.entry().beta
    }

    /// The top-1 accuracy (percent, ImageNet validation, single crop) the paper reports;
    /// `None` for β = 0, which it does not report. See the type's docs for a public report
    /// of much lower accuracy for some released files.
    pub fn reported_top1(self) -> Option<f64> {
        self.entry().reported_top1
    }

    /// The top-1 accuracy (percent) a public report (ibinn_imagenet issue #7) measured for
    /// the released file, where it differs from the paper's; `None` where it reported
    /// nothing different.
    pub fn publicly_measured_top1(self) -> Option<f64> {
        self.entry().publicly_measured_top1
    }
}

/// Shows the folder name, `beta_8` or `beta_inf` (which [`FromStr`] accepts back).
impl fmt::Display for Pretrained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.folder())
    }
}

/// A name that is not one of the released variants.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a released model; use one of beta_0, beta_1, beta_2, beta_4, beta_8, beta_16, beta_32, beta_inf (also written beta8, 8, inf)"
)]
pub struct ParsePretrainedError {
    /// What was given.
    pub input: String,
}

/// Accepts what [`parse_beta`] accepts when it names a released β: `beta_8`, `beta8`,
/// `beta-8`, `8`, `beta_8.avg.pt`, `beta_inf`, `inf`, `infinity`, `∞` (any case).
impl FromStr for Pretrained {
    type Err = ParsePretrainedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let name = lower.strip_suffix(".avg.pt").unwrap_or(&lower);
        parse_beta(name)
            .ok()
            .and_then(Pretrained::from_beta)
            .ok_or_else(|| ParsePretrainedError {
                input: s.to_string(),
            })
    }
}

/// Text that names no β.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a β: give a number ≥ 0 or `inf` (optionally written beta_8, β=8)")]
pub struct ParseBetaError {
    /// What was given.
    pub input: String,
}

/// Parses β written as text: a finite number ≥ 0 (`8`, `0.5`) or infinity (`inf`,
/// `infinity`, `∞`), optionally after `beta` or `β` and a separator (`beta_8`, `beta-8`,
/// `β=8`, `beta8`); any case, surrounding spaces ignored.
///
/// # Errors
/// [`ParseBetaError`] for anything else, including negative, NaN and infinite numbers
/// written as numbers (`-1`, `nan`, `1e999`).
pub fn parse_beta(text: &str) -> Result<Beta, ParseBetaError> {
    let lower = text.trim().to_lowercase();
    let rest = match lower
        .strip_prefix("beta")
        .or_else(|| lower.strip_prefix('β'))
    {
        Some(rest) => rest.trim_start_matches(['_', '-', '=', ' ']),
        None => &lower,
    };
    match rest {
        "inf" | "infinity" | "∞" => Ok(Beta::Infinity),
        number => match number.parse::<f64>() {
            Ok(beta) if beta.is_finite() && beta >= 0.0 => Ok(Beta::Finite(beta)),
            _ => Err(ParseBetaError {
                input: text.to_string(),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_through_its_names() {
        for variant in Pretrained::ALL {
            assert_eq!(variant.to_string().parse::<Pretrained>(), Ok(variant));
            assert_eq!(variant.file_name().parse::<Pretrained>(), Ok(variant));
            assert_eq!(
                Pretrained::from_file_name(variant.file_name()),
                Some(variant)
            );
            assert_eq!(Pretrained::from_beta(variant.beta()), Some(variant));
        }
        assert_eq!(Pretrained::from_file_name("mini.avg.pt"), None);
    }

    #[test]
    fn beta_text() {
        assert_eq!(parse_beta("8"), Ok(Beta::Finite(8.0)));
        assert_eq!(parse_beta(" 0.5 "), Ok(Beta::Finite(0.5)));
        assert_eq!(parse_beta("BETA_16"), Ok(Beta::Finite(16.0)));
        assert_eq!(parse_beta("β=2"), Ok(Beta::Finite(2.0)));
        assert_eq!(parse_beta("∞"), Ok(Beta::Infinity));
        assert_eq!(parse_beta("betainf"), Ok(Beta::Infinity));
        for bad in ["-1", "-8", "nan", "1e999", "", "beta", "eight"] {
            assert!(parse_beta(bad).is_err(), "{bad}");
        }
    }
}
