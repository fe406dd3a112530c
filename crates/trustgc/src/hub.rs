//! Pretrained models from a Hugging Face hub (feature `pretrained`).
//!
//! ```no_run
//! # use burn::backend::Flex;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use trustgc::hub::{Pretrained, PretrainedExt};
//! use trustgc::{Classifier, GenerativeClassifier};
//!
//! let device = Default::default();
//! // The classifier API (likelihoods, posteriors, verdicts) ...
//! let classifier = Classifier::<Flex>::pretrained(Pretrained::Beta8, &device)?;
//! // ... or the bare model.
//! let model = GenerativeClassifier::<Flex>::pretrained(Pretrained::Beta8, &device)?;
//! # let _ = (classifier, model); Ok(()) }
//! ```
//!
//! [`fetch_model_dir`] returns a local *model folder* (`config.json`, `model.safetensors`,
//! optional `ood.json`), the same kind of folder [`Classifier::from_dir`] opens. A local
//! path always overrides the hub: to use files you already have (or a repository this
//! module cannot reach), call [`Classifier::from_dir`] on the folder and no network access
//! happens.
//!
//! # Where the files come from
//! The repository ([`HubOptions::repo_id`], `TRUSTGC_HUB_REPO`) may hold either layout:
//! - **converted**: `beta_8/config.json` + `beta_8/model.safetensors` (+ optional
//!   `beta_8/ood.json`, `beta_8/README.md`) for each variant. The folder hf-hub downloads
//!   them into is returned as it is.
//! - **originals**: the authors' `beta_8.avg.pt` at the top of the repository. It is
//!   downloaded and converted once with [`crate::convert::convert_checkpoint`] into
//!   `<cache>/trustgc-converted/models--<owner>--<name>/<commit>/beta_8/`; later calls reuse
//!   that folder. The conversion writes into a temporary sibling folder and renames it into
//!   place, so a crash never leaves a partial conversion where it would be used.
//!
//! The converted layout is tried first. **The default repository [`DEFAULT_REPO`] does not
//! exist yet**: the trustgc maintainers have to publish the converted files there, with
//! the authors' permission. Until then pass a repository that holds the files
//! (`TRUSTGC_HUB_REPO`, [`HubOptions::repo_id`]) or load a local folder.
//!
//! # Cache
//! hf-hub's cache (`HF_HUB_CACHE`, default `$HF_HOME/hub`, `~/.cache/huggingface/hub`):
//! `models--owner--name/blobs/<etag>` holds the content, `snapshots/<commit>/<path>` links
//! to it, `refs/<revision>` names the commit. Every file is checked after it is
//! downloaded or found in the cache (`config.json` must parse as a [`GcConfig`],
//! `model.safetensors` must have a valid safetensors header whose sizes match the file,
//! `ood.json` must parse, a `.pt` must start like a PyTorch file); a file that fails is
//! deleted (blob and snapshot link) before [`HubError::CorruptDownload`] is returned, so
//! the next call downloads it again. After a failed transfer the partial
//! `blobs/*.incomplete` file hf-hub leaves behind is deleted too (unless another process
//! is still writing it).
//!
//! # Environment ([`HubOptions::from_env`])
//! | Variable | Meaning |
//! |---|---|
//! | `TRUSTGC_HUB_REPO` | repository id `owner/name` (default [`DEFAULT_REPO`]) |
//! | `TRUSTGC_HUB_REVISION` | branch, tag or commit (default `main`) |
//! | `HF_ENDPOINT` | hub URL (default `https://huggingface.co`; a mirror) |
//! | `HF_HUB_CACHE`, `HF_HOME` | cache folder (see above) |
//! | `HF_TOKEN` | access token for private or gated repositories |
//! | `HF_HUB_OFFLINE` | `1`: use cached files only, never touch the network |

use std::fmt;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Mutex;
use std::time::Duration;

use burn::tensor::backend::Backend;
use hf_hub::progress::{DownloadEvent, Progress, ProgressEvent, ProgressHandler};
use hf_hub::{HFClient, HFError, HFRepositorySync, RepoTypeModel};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use safetensors::SafeTensorError;
use trustgc_core::{Beta, ConfigError, GcConfig, GenerativeClassifier};

use crate::classifier::{Classifier, ModelDirError, OodStats};
use crate::convert::{ConvertError, convert_checkpoint};

/// The repository [`HubOptions::from_env`] uses when `TRUSTGC_HUB_REPO` is not set.
///
/// **It does not exist yet.** The trustgc maintainers have to publish the converted
/// models there (with the permission of the authors, Mackowiak et al., who released the
/// original checkpoints); until they do, every download from it fails with
/// [`HubError::RepoNotFound`]. Pass a repository that holds the files instead
/// (`TRUSTGC_HUB_REPO` or [`HubOptions::repo_id`]), or load a local model folder with
/// [`Classifier::from_dir`].
pub const DEFAULT_REPO: &str = "trustgc/ibinn-imagenet";

/// The public Hugging Face hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// The folder of the hub cache holding checkpoints trustgc converted itself.
pub const CONVERTED_DIR: &str = "trustgc-converted";

/// Downloads shorter than this show no progress bar.
const MIN_BAR_BYTES: u64 = 1 << 20;

/// One of the eight ImageNet models the authors released (REFERENCE.md §5), named by the
/// β of the IB-INN objective they were trained with.
///
/// Accuracies are the paper's top-1 on the ImageNet validation set, single center crop
/// ([`Pretrained::reported_top1`]). A public report (ibinn_imagenet issue #7) measured much
/// lower accuracy for some of the released files (β=2 0.56 %, β=32 36.81 %, β=∞ 74.40 %);
/// the cause is unknown, so measure before you rely on a variant.
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

    /// The folder of the converted model in a repository, e.g. `beta_8`.
    pub fn folder(self) -> &'static str {
        let name = self.file_name();
        &name[..name.len() - ".avg.pt".len()]
    }

    /// The β the model was trained with.
    pub fn beta(self) -> Beta {
        match self {
            Pretrained::Beta0 => Beta::Finite(0.0),
            Pretrained::Beta1 => Beta::Finite(1.0),
            Pretrained::Beta2 => Beta::Finite(2.0),
            Pretrained::Beta4 => Beta::Finite(4.0),
            Pretrained::Beta8 => Beta::Finite(8.0),
            Pretrained::Beta16 => Beta::Finite(16.0),
            Pretrained::Beta32 => Beta::Finite(32.0),
            Pretrained::BetaInf => Beta::Infinity,
        }
    }

    /// The top-1 accuracy (percent, ImageNet validation, single crop) the paper reports;
    /// `None` for β = 0, which it does not report. See the type's docs for a public report
    /// of much lower accuracy for some released files.
    pub fn reported_top1(self) -> Option<f64> {
        match self {
            Pretrained::Beta0 => None,
            Pretrained::Beta1 => Some(67.30),
            Pretrained::Beta2 => Some(71.73),
            Pretrained::Beta4 => Some(73.69),
            Pretrained::Beta8 => Some(74.59),
            Pretrained::Beta16 => Some(75.54),
            Pretrained::Beta32 => Some(76.18),
            Pretrained::BetaInf => Some(76.27),
        }
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

/// Accepts `beta_8`, `beta8`, `beta-8`, `8`, `beta_8.avg.pt`, `beta_inf`, `inf`,
/// `infinity`, `∞` (any case).
impl FromStr for Pretrained {
    type Err = ParsePretrainedError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let rest = lower.strip_suffix(".avg.pt").unwrap_or(&lower);
        let rest = rest
            .strip_prefix("beta")
            .or_else(|| rest.strip_prefix("β"))
            .unwrap_or(rest);
        let rest = rest.trim_start_matches(['_', '-', '=', ' ']);
        let variant = match rest {
            "0" => Pretrained::Beta0,
            "1" => Pretrained::Beta1,
            "2" => Pretrained::Beta2,
            "4" => Pretrained::Beta4,
            "8" => Pretrained::Beta8,
            "16" => Pretrained::Beta16,
            "32" => Pretrained::Beta32,
            "inf" | "infinity" | "∞" => Pretrained::BetaInf,
            _ => {
                return Err(ParsePretrainedError {
                    input: s.to_string(),
                });
            }
        };
        Ok(variant)
    }
}

/// Where and how [`fetch_model_dir`] looks for a model.
///
/// [`HubOptions::from_env`] fills every field from the environment; change fields
/// afterwards to override it.
#[derive(Clone)]
pub struct HubOptions {
    /// Repository id `owner/name` (`TRUSTGC_HUB_REPO`, default [`DEFAULT_REPO`], which does
    /// not exist yet, see there).
    pub repo_id: String,
    /// Branch, tag or 40-hex commit (`TRUSTGC_HUB_REVISION`, default `main`).
    pub revision: String,
    /// Hub URL (`HF_ENDPOINT`, default [`DEFAULT_ENDPOINT`]).
    pub endpoint: String,
    /// hf-hub cache folder (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Access token (`HF_TOKEN`). `None`: hf-hub still uses the token file of
    /// `huggingface-cli login` (`HF_TOKEN_PATH`, `$HF_HOME/token`) when there is one.
    pub token: Option<String>,
    /// Cached files only, no network access (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Show progress bars on stderr (default: when stderr is a terminal).
    pub progress: bool,
    /// Retries of a request after a connection failure, timeout or 5xx answer (hf-hub's
    /// default 5).
    pub max_retries: usize,
    /// Base of the exponential backoff between retries (hf-hub's default 100 ms; the
    /// `n`-th wait is at most `2^n` times this).
    pub retry_base_delay: Duration,
    /// Architecture of original `.avg.pt` checkpoints found in the repository (layout b):
    /// the released ImageNet one, [`GcConfig::imagenet`], unless changed.
    pub architecture: GcConfig,
}

/// Never prints the token.
impl fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubOptions")
            .field("repo_id", &self.repo_id)
            .field("revision", &self.revision)
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("offline", &self.offline)
            .field("progress", &self.progress)
            .field("max_retries", &self.max_retries)
            .field("retry_base_delay", &self.retry_base_delay)
            .field("architecture", &"GcConfig { .. }")
            .finish()
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// hf-hub's (and huggingface_hub's) cache folder resolution.
fn default_cache_dir() -> PathBuf {
    if let Some(dir) =
        env_nonempty("HF_HUB_CACHE").or_else(|| env_nonempty("HUGGINGFACE_HUB_CACHE"))
    {
        return PathBuf::from(dir);
    }
    let home = if let Some(home) = env_nonempty("HF_HOME") {
        PathBuf::from(home)
    } else if let Some(xdg) = env_nonempty("XDG_CACHE_HOME") {
        PathBuf::from(xdg).join("huggingface")
    } else {
        let home = env_nonempty("HOME").unwrap_or_else(|| "/tmp".to_string());
        PathBuf::from(home).join(".cache").join("huggingface")
    };
    home.join("hub")
}

impl HubOptions {
    /// Options from the environment; see the fields for the variables and defaults.
    pub fn from_env() -> Self {
        let offline = env_nonempty("HF_HUB_OFFLINE").is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "1" | "true" | "yes" | "on"
            )
        });
        Self {
            repo_id: env_nonempty("TRUSTGC_HUB_REPO").unwrap_or_else(|| DEFAULT_REPO.to_string()),
            revision: env_nonempty("TRUSTGC_HUB_REVISION").unwrap_or_else(|| "main".to_string()),
            endpoint: env_nonempty("HF_ENDPOINT")
                .map(|e| e.trim_end_matches('/').to_string())
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string()),
            cache_dir: default_cache_dir(),
            token: env_nonempty("HF_TOKEN"),
            offline,
            progress: std::io::stderr().is_terminal(),
            max_retries: 5,
            retry_base_delay: Duration::from_millis(100),
            architecture: GcConfig::imagenet(),
        }
    }

    /// The repository's folder in the cache, `models--owner--name`.
    pub fn repo_folder(&self) -> String {
        format!("models--{}", self.repo_id.replace('/', "--"))
    }

    /// Where a checkpoint of the originals layout, converted at `commit`, is kept.
    pub fn converted_dir(&self, commit: &str, variant: Pretrained) -> PathBuf {
        self.cache_dir
            .join(CONVERTED_DIR)
            .join(self.repo_folder())
            .join(commit)
            .join(variant.folder())
    }
}

/// What made a downloaded file unusable (see [`HubError::CorruptDownload`]).
#[derive(Debug, thiserror::Error)]
pub enum Corruption {
    /// `config.json` is not a valid config.
    #[error("config.json is not a valid model config: {0}")]
    Config(#[source] Box<ConfigError>),
    /// The safetensors header is invalid or does not match the file's size.
    #[error("not a valid safetensors file: {0}")]
    Safetensors(#[source] Box<SafeTensorError>),
    /// `ood.json` is not valid out-of-distribution statistics.
    #[error("ood.json is not valid out-of-distribution statistics: {0}")]
    Ood(#[source] serde_json::Error),
    /// The file does not start like a PyTorch checkpoint (zip or legacy pickle).
    #[error("the file does not start like a PyTorch checkpoint (first bytes {first_bytes:02x?})")]
    NotACheckpoint {
        /// Its first bytes.
        first_bytes: Vec<u8>,
    },
    /// The file could not be read.
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
}

fn token_hint(token_given: &bool) -> &'static str {
    if *token_given {
        "the token given (HF_TOKEN or HubOptions::token) was refused: check that it is valid and has read access to the repository, and accept the repository's terms on the hub website if it is gated"
    } else {
        "set HF_TOKEN (or HubOptions::token) to an access token with read access to the repository, and accept its terms on the hub website if it is gated"
    }
}

fn join(files: &[String]) -> String {
    files.join(", ")
}

/// Why a pretrained model could not be fetched. Every message says what to do.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HubError {
    /// [`HubOptions::repo_id`] is not of the form `owner/name`.
    #[error(
        "`{repo_id}` is not a repository id of the form owner/name (set TRUSTGC_HUB_REPO or HubOptions::repo_id)"
    )]
    InvalidRepoId {
        /// What was given.
        repo_id: String,
    },
    /// The hub client could not be set up (e.g. [`HubOptions::endpoint`] is not a URL).
    #[error("cannot set up a hub client for {endpoint}: {source} (check HF_ENDPOINT)")]
    Client {
        /// The endpoint.
        endpoint: String,
        /// hf-hub's error.
        #[source]
        source: Box<HFError>,
    },
    /// The repository does not exist (HTTP 404 on the repository).
    #[error(
        "repository {repo_id} does not exist on {endpoint}{}; set TRUSTGC_HUB_REPO (or HubOptions::repo_id) to a repository that holds the models, or load a local model folder with Classifier::from_dir (see docs/hub.md)",
        if .repo_id == DEFAULT_REPO { " (the default repository has not been published yet)" } else { "" }
    )]
    RepoNotFound {
        /// The repository.
        repo_id: String,
        /// The hub.
        endpoint: String,
    },
    /// The repository exists but the revision (branch, tag, commit) does not.
    #[error(
        "repository {repo_id} has no revision `{revision}`; set TRUSTGC_HUB_REVISION (or HubOptions::revision) to an existing branch, tag or commit (default main)"
    )]
    RevisionNotFound {
        /// The repository.
        repo_id: String,
        /// The revision.
        revision: String,
    },
    /// Neither layout is in the repository (HTTP 404 on every file tried).
    #[error(
        "{repo_id} at revision {revision} holds none of the files trustgc looks for (tried {}); the repository needs either a converted model folder (`<variant>/config.json` + `<variant>/model.safetensors`) or the original `<variant>.avg.pt` at its top; pick another repository or revision (TRUSTGC_HUB_REPO, TRUSTGC_HUB_REVISION) or load a local model folder with Classifier::from_dir (see docs/hub.md)",
        join(.tried)
    )]
    NotFound {
        /// The repository.
        repo_id: String,
        /// The revision.
        revision: String,
        /// The files looked for, in order.
        tried: Vec<String>,
    },
    /// A file the model needs is missing although the rest of its folder is there.
    #[error(
        "{repo_id} at revision {revision} has no {file} although the rest of the model folder is there: the upload is incomplete; ask the repository's maintainers to upload it, or use another revision"
    )]
    FileNotFound {
        /// The repository.
        repo_id: String,
        /// The revision.
        revision: String,
        /// The missing file.
        file: String,
    },
    /// The hub refused access (HTTP 401 or 403).
    #[error("the hub refused access to {file} of {repo_id} (HTTP {status}): {}", token_hint(.token_given))]
    Unauthorized {
        /// The repository.
        repo_id: String,
        /// The file requested.
        file: String,
        /// 401 or 403.
        status: u16,
        /// Whether a token was sent.
        token_given: bool,
        /// hf-hub's error.
        #[source]
        source: Box<HFError>,
    },
    /// The hub failed (HTTP 5xx, or 429 too many requests); nothing was cached.
    #[error(
        "the hub at {endpoint} answered HTTP {status} for {file} of {repo_id}: a problem on the server's side, nothing was cached; retry later"
    )]
    Server {
        /// The hub.
        endpoint: String,
        /// The repository.
        repo_id: String,
        /// The file requested.
        file: String,
        /// The status.
        status: u16,
        /// hf-hub's error.
        #[source]
        source: Box<HFError>,
    },
    /// Offline mode and the model is not in the cache.
    #[error(
        "offline mode (HF_HUB_OFFLINE / HubOptions::offline) and {repo_id} at revision {revision} is not in the cache at {cache_dir} (looked for {}); unset HF_HUB_OFFLINE and run once online to download it, point HF_HUB_CACHE at a cache that holds it, or load a local model folder with Classifier::from_dir",
        join(.tried)
    )]
    OfflineNotCached {
        /// The repository.
        repo_id: String,
        /// The revision.
        revision: String,
        /// The cache searched.
        cache_dir: PathBuf,
        /// The files looked for.
        tried: Vec<String>,
    },
    /// The hub could not be reached (connection refused, DNS, timeout, TLS).
    #[error(
        "cannot reach the hub at {endpoint} for {file} of {repo_id}: {source}; check the network connection and HF_ENDPOINT, set HF_HUB_OFFLINE=1 to use cached files only, or load a local model folder with Classifier::from_dir"
    )]
    Network {
        /// The hub.
        endpoint: String,
        /// The repository.
        repo_id: String,
        /// The file requested.
        file: String,
        /// hf-hub's error.
        #[source]
        source: Box<HFError>,
    },
    /// The transfer broke off before the whole file arrived (fewer bytes than announced);
    /// the partial file was removed from the cache.
    #[error(
        "the download of {file} from {repo_id} broke off before the whole file arrived ({source}); the partial file was removed from the cache, run again to retry"
    )]
    Interrupted {
        /// The repository.
        repo_id: String,
        /// The file requested.
        file: String,
        /// hf-hub's error.
        #[source]
        source: Box<HFError>,
    },
    /// A downloaded (or cached) file is unusable; it was removed from the cache, so the
    /// next call downloads it again.
    #[error(
        "{file} from {repo_id} is corrupt: {source}; it was removed from the cache ({path}), so the next call downloads it again; if this repeats, the file in the repository itself is broken"
    )]
    CorruptDownload {
        /// The repository.
        repo_id: String,
        /// The file's path in the repository.
        file: String,
        /// Where it was in the cache.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: Corruption,
    },
    /// Converting an original checkpoint failed; nothing was kept of the conversion.
    #[error("cannot convert {checkpoint} into a trustgc model folder: {source}")]
    Conversion {
        /// The downloaded checkpoint.
        checkpoint: PathBuf,
        /// The converter's error.
        #[source]
        source: ConvertError,
    },
    /// The converter reported success but did not write a file every model folder has.
    #[error(
        "converting {checkpoint} produced no {missing}; this is a bug in the converter, nothing was kept"
    )]
    ConversionOutput {
        /// The downloaded checkpoint.
        checkpoint: PathBuf,
        /// The missing file name.
        missing: &'static str,
    },
    /// Another process is downloading the same file and held hf-hub's lock too long.
    #[error(
        "another process is downloading the same file and holds its lock ({path}); wait for it to finish and run again (delete the lock file only if no other process is running)"
    )]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// Any other answer of the hub.
    #[error(
        "unexpected answer from the hub at {endpoint} for {file} of {repo_id}: {source}; check that HF_ENDPOINT points at a Hugging Face hub"
    )]
    Hub {
        /// The hub.
        endpoint: String,
        /// The repository.
        repo_id: String,
        /// The file requested.
        file: String,
        /// hf-hub's error.
        #[source]
        source: Box<HFError>,
    },
    /// A file-system operation in the cache failed.
    #[error("cannot use the cache at {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The fetched model folder could not be loaded.
    #[error("the model folder {dir} fetched from the hub could not be loaded: {source}")]
    Load {
        /// The folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: ModelDirError,
    },
}

/// What became of one file request.
enum Fetched {
    /// Here it is (a snapshot path).
    Found(PathBuf),
    /// The hub (or the cache's record of the hub) says it does not exist.
    Missing,
    /// Offline mode and not cached.
    NotCached,
}

/// One fetch: the options plus a client.
struct Hub<'a> {
    options: &'a HubOptions,
    repo: HFRepositorySync<RepoTypeModel>,
}

fn is_commit_hash(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

impl<'a> Hub<'a> {
    fn new(options: &'a HubOptions) -> Result<Self, HubError> {
        let (owner, name) = match options.repo_id.split_once('/') {
            Some((owner, name)) if !owner.is_empty() && !name.is_empty() && !name.contains('/') => {
                (owner, name)
            }
            _ => {
                return Err(HubError::InvalidRepoId {
                    repo_id: options.repo_id.clone(),
                });
            }
        };
        let mut builder = HFClient::builder()
            .endpoint(options.endpoint.clone())
            .cache_dir(options.cache_dir.clone())
            .retry_max_attempts(options.max_retries)
            .retry_base_delay(options.retry_base_delay)
            .user_agent(format!("trustgc/{}; hf-hub/1", env!("CARGO_PKG_VERSION")));
        if let Some(token) = &options.token {
            builder = builder.token(token.clone());
        }
        let client = builder.build_sync().map_err(|source| HubError::Client {
            endpoint: options.endpoint.clone(),
            source: Box::new(source),
        })?;
        Ok(Self {
            options,
            repo: client.model(owner, name),
        })
    }

    fn repo_dir(&self) -> PathBuf {
        self.options.cache_dir.join(self.options.repo_folder())
    }

    /// Downloads (or finds in the cache) one file of the repository.
    fn file(&self, file: &str, revision: &str) -> Result<Fetched, HubError> {
        let progress = self
            .options
            .progress
            .then(|| Progress::new(Bar::new(file.to_string())));
        let result = self
            .repo
            .download_file()
            .filename(file)
            .revision(revision)
            .local_files_only(self.options.offline)
            .maybe_progress(progress)
            .send();
        match result {
            Ok(path) => Ok(Fetched::Found(path)),
            Err(HFError::EntryNotFound { .. }) => Ok(Fetched::Missing),
            Err(HFError::LocalEntryNotFound { .. }) => Ok(Fetched::NotCached),
            Err(error) => {
                self.remove_partial_blobs();
                let error = self.map_error(file, error);
                // hf-hub falls back to the cache when the hub is unreachable or failing,
                // but not for files the cache records as missing: do that here.
                if matches!(error, HubError::Network { .. } | HubError::Server { .. })
                    && self.known_missing(file, revision)
                {
                    return Ok(Fetched::Missing);
                }
                Err(error)
            }
        }
    }

    /// Whether the cache records `file` as absent at `revision` (hf-hub's
    /// `.no_exist/<commit>/<file>` markers, written on a 404).
    fn known_missing(&self, file: &str, revision: &str) -> bool {
        let commit = if is_commit_hash(revision) {
            Some(revision.to_string())
        } else {
            std::fs::read_to_string(self.repo_dir().join("refs").join(revision))
                .ok()
                .map(|text| text.trim().to_string())
        };
        commit.is_some_and(|commit| {
            let dir = self.repo_dir();
            dir.join(".no_exist").join(&commit).join(file).is_file()
                && !dir.join("snapshots").join(&commit).join(file).exists()
        })
    }

    /// An optional file: `None` when absent (or, offline, not cached). Files absent at a
    /// commit stay absent, so a recorded 404 at a commit is not asked again.
    fn optional(&self, file: &str, revision: &str) -> Result<Option<PathBuf>, HubError> {
        if is_commit_hash(revision) && self.known_missing(file, revision) {
            return Ok(None);
        }
        Ok(match self.file(file, revision)? {
            Fetched::Found(path) => Some(path),
            Fetched::Missing | Fetched::NotCached => None,
        })
    }

    /// Maps an hf-hub error on `file` onto a [`HubError`].
    fn map_error(&self, file: &str, error: HFError) -> HubError {
        let o = self.options;
        let (repo_id, endpoint, file) = (o.repo_id.clone(), o.endpoint.clone(), file.to_string());
        match error {
            HFError::RepoNotFound { .. } => HubError::RepoNotFound { repo_id, endpoint },
            HFError::RevisionNotFound { revision, .. } => {
                HubError::RevisionNotFound { repo_id, revision }
            }
            HFError::AuthRequired { .. } | HFError::Forbidden { .. } => {
                let status = match &error {
                    HFError::AuthRequired { context } | HFError::Forbidden { context } => {
                        context.status.as_u16()
                    }
                    _ => 401,
                };
                HubError::Unauthorized {
                    repo_id,
                    file,
                    status,
                    token_given: o.token.is_some(),
                    source: Box::new(error),
                }
            }
            HFError::RateLimited { .. } => HubError::Server {
                endpoint,
                repo_id,
                file,
                status: 429,
                source: Box::new(error),
            },
            HFError::Http { ref context } if context.status.is_server_error() => {
                let status = context.status.as_u16();
                HubError::Server {
                    endpoint,
                    repo_id,
                    file,
                    status,
                    source: Box::new(error),
                }
            }
            HFError::Http { ref context } if matches!(context.status.as_u16(), 401 | 403 | 407) => {
                let status = context.status.as_u16();
                HubError::Unauthorized {
                    repo_id,
                    file,
                    status,
                    token_given: o.token.is_some(),
                    source: Box::new(error),
                }
            }
            HFError::Request { ref source, .. } if source.is_body() || source.is_decode() => {
                HubError::Interrupted {
                    repo_id,
                    file,
                    source: Box::new(error),
                }
            }
            HFError::Request { .. } => HubError::Network {
                endpoint,
                repo_id,
                file,
                source: Box::new(error),
            },
            HFError::CacheLockTimeout { path } => HubError::Locked { path },
            HFError::Io(source) => HubError::Io {
                path: self.repo_dir(),
                source,
            },
            other => HubError::Hub {
                endpoint,
                repo_id,
                file,
                source: Box::new(other),
            },
        }
    }

    /// Deletes `blobs/*.incomplete` left by a failed transfer, unless another process
    /// holds its hf-hub lock (is still downloading it).
    fn remove_partial_blobs(&self) {
        let blobs = self.repo_dir().join("blobs");
        let Ok(entries) = std::fs::read_dir(&blobs) else {
            return;
        };
        let locks = self
            .options
            .cache_dir
            .join(".locks")
            .join(self.options.repo_folder());
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(etag) = name.strip_suffix(".incomplete") else {
                continue;
            };
            let lock_path = locks.join(format!("{etag}.lock"));
            // hf-hub holds an exclusive lock on this file while it writes the blob.
            let lock = match std::fs::OpenOptions::new().write(true).open(&lock_path) {
                Ok(file) => match file.try_lock() {
                    Ok(()) => Some(file),
                    Err(_) => continue,
                },
                Err(_) => None,
            };
            let _ = std::fs::remove_file(entry.path());
            drop(lock);
        }
    }

    /// Deletes a cached file: its blob and its snapshot link.
    fn remove_cached(&self, snapshot: &Path) {
        if let Ok(target) = std::fs::read_link(snapshot) {
            let blob = snapshot.parent().unwrap_or(Path::new(".")).join(target);
            let _ = std::fs::remove_file(blob);
        }
        let _ = std::fs::remove_file(snapshot);
    }

    /// Checks a fetched file; removes it from the cache when it is unusable.
    fn check(
        &self,
        file: &str,
        path: &Path,
        check: impl FnOnce(&Path) -> Result<(), Corruption>,
    ) -> Result<(), HubError> {
        check(path).map_err(|source| {
            self.remove_cached(path);
            HubError::CorruptDownload {
                repo_id: self.options.repo_id.clone(),
                file: file.to_string(),
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// The commit a snapshot path belongs to (`.../snapshots/<commit>/...`).
    fn commit_of(&self, snapshot: &Path) -> Option<String> {
        let rest = snapshot
            .strip_prefix(self.repo_dir().join("snapshots"))
            .ok()?;
        let commit = rest.components().next()?.as_os_str().to_str()?;
        is_commit_hash(commit).then(|| commit.to_string())
    }

    /// The commit `revision` resolved to when it was last fetched, from the cache.
    fn cached_commit(&self) -> Option<String> {
        let revision = &self.options.revision;
        if is_commit_hash(revision) {
            return Some(revision.clone());
        }
        let text = std::fs::read_to_string(self.repo_dir().join("refs").join(revision)).ok()?;
        let commit = text.trim();
        is_commit_hash(commit).then(|| commit.to_string())
    }

    /// Layout (a): a converted model folder in the repository.
    fn converted(&self, variant: Pretrained) -> Result<Fetched, HubError> {
        let folder = variant.folder();
        let config_name = format!("{folder}/config.json");
        let config = match self.file(&config_name, &self.options.revision)? {
            Fetched::Found(path) => path,
            other => return Ok(other),
        };
        self.check(&config_name, &config, check_config)?;
        // Pin the other files to the commit config.json came from.
        let revision = self
            .commit_of(&config)
            .unwrap_or_else(|| self.options.revision.clone());
        let weights_name = format!("{folder}/model.safetensors");
        let weights = match self.file(&weights_name, &revision)? {
            Fetched::Found(path) => path,
            Fetched::Missing => {
                return Err(HubError::FileNotFound {
                    repo_id: self.options.repo_id.clone(),
                    revision: self.options.revision.clone(),
                    file: weights_name,
                });
            }
            Fetched::NotCached => {
                return Err(HubError::OfflineNotCached {
                    repo_id: self.options.repo_id.clone(),
                    revision: self.options.revision.clone(),
                    cache_dir: self.options.cache_dir.clone(),
                    tried: vec![weights_name],
                });
            }
        };
        self.check(&weights_name, &weights, check_safetensors)?;
        let ood_name = format!("{folder}/ood.json");
        if let Some(ood) = self.optional(&ood_name, &revision)? {
            self.check(&ood_name, &ood, check_ood)?;
        }
        // The model card, for the licence and provenance; not needed to load the model.
        self.optional(&format!("{folder}/README.md"), &revision)?;
        let dir = config
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Fetched::Found(dir))
    }

    /// Layout (b): the authors' checkpoint, converted once into the trustgc cache.
    fn original(&self, variant: Pretrained) -> Result<Fetched, HubError> {
        if self.options.offline
            && let Some(commit) = self.cached_commit()
        {
            let dir = self.options.converted_dir(&commit, variant);
            if is_model_dir(&dir) {
                return Ok(Fetched::Found(dir));
            }
        }
        let name = variant.file_name();
        let pt = match self.file(name, &self.options.revision)? {
            Fetched::Found(path) => path,
            other => return Ok(other),
        };
        self.check(name, &pt, check_checkpoint)?;
        let commit = self
            .commit_of(&pt)
            .or_else(|| self.cached_commit())
            // Not expected (hf-hub returns snapshot paths); keep the name one safe component.
            .unwrap_or_else(|| {
                let safe: String = (self.options.revision.chars())
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect();
                format!("revision-{safe}")
            });
        let dir = self.options.converted_dir(&commit, variant);
        if is_model_dir(&dir) {
            return Ok(Fetched::Found(dir));
        }
        self.convert(&pt, variant, &dir)?;
        Ok(Fetched::Found(dir))
    }

    /// Converts `pt` into `dir` through a temporary sibling folder and a rename.
    fn convert(&self, pt: &Path, variant: Pretrained, dir: &Path) -> Result<(), HubError> {
        let parent = dir.parent().unwrap_or(Path::new("."));
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| HubError::Io { path, source }
        };
        std::fs::create_dir_all(parent).map_err(io(parent))?;
        remove_stale_conversions(parent, variant);
        let tmp = parent.join(format!(
            ".{}.partial-{}",
            variant.folder(),
            std::process::id()
        ));
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        // `convert_checkpoint` creates `tmp` itself (atomically, from its own partial
        // folder); it must not exist yet.
        if self.options.progress {
            eprintln!(
                "converting {} into a trustgc model folder (once; kept in {})",
                pt.display(),
                dir.display()
            );
        }
        let result = convert_checkpoint(pt, &self.options.architecture, &tmp)
            .map_err(|source| HubError::Conversion {
                checkpoint: pt.to_path_buf(),
                source,
            })
            .and_then(|()| {
                for missing in ["config.json", "model.safetensors"] {
                    if !tmp.join(missing).is_file() {
                        return Err(HubError::ConversionOutput {
                            checkpoint: pt.to_path_buf(),
                            missing,
                        });
                    }
                }
                Ok(())
            });
        if let Err(error) = result {
            let _ = std::fs::remove_dir_all(&tmp);
            return Err(error);
        }
        if let Err(source) = std::fs::rename(&tmp, dir) {
            let _ = std::fs::remove_dir_all(&tmp);
            // Another process finished the same conversion first.
            if !is_model_dir(dir) {
                return Err(HubError::Io {
                    path: dir.to_path_buf(),
                    source,
                });
            }
        }
        Ok(())
    }

    /// After both layouts came back missing: is it the repository, the revision, or
    /// the files?
    fn not_found(&self, tried: Vec<String>) -> HubError {
        let o = self.options;
        if !o.offline {
            if let Ok(false) = self.repo.exists().send() {
                return HubError::RepoNotFound {
                    repo_id: o.repo_id.clone(),
                    endpoint: o.endpoint.clone(),
                };
            }
            if let Ok(false) = self.repo.revision_exists().revision(&o.revision).send() {
                return HubError::RevisionNotFound {
                    repo_id: o.repo_id.clone(),
                    revision: o.revision.clone(),
                };
            }
        }
        HubError::NotFound {
            repo_id: o.repo_id.clone(),
            revision: o.revision.clone(),
            tried,
        }
    }
}

/// Removes conversion folders left by processes that no longer run (Linux; elsewhere
/// only this process's own).
fn remove_stale_conversions(parent: &Path, variant: Pretrained) {
    let prefix = format!(".{}.partial-", variant.folder());
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let proc_fs = Path::new("/proc/self").exists();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix(&prefix) else {
            continue;
        };
        let gone = pid == std::process::id().to_string()
            || (proc_fs && !Path::new("/proc").join(pid).exists());
        if gone {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn is_model_dir(dir: &Path) -> bool {
    dir.join("config.json").is_file() && dir.join("model.safetensors").is_file()
}

fn check_config(path: &Path) -> Result<(), Corruption> {
    let text = std::fs::read(path).map_err(Corruption::Read)?;
    let text = String::from_utf8_lossy(&text);
    GcConfig::from_json(&text)
        .map(|_| ())
        .map_err(|e| Corruption::Config(Box::new(e)))
}

fn check_ood(path: &Path) -> Result<(), Corruption> {
    let text = std::fs::read(path).map_err(Corruption::Read)?;
    serde_json::from_slice::<OodStats>(&text)
        .map(|_| ())
        .map_err(Corruption::Ood)
}

/// The checks of `SafeTensors::deserialize` (header length, header JSON, tensor offsets
/// and sizes, data length equal to the file's) without reading the tensor data.
fn check_safetensors(path: &Path) -> Result<(), Corruption> {
    const MAX_HEADER: u64 = 100_000_000;
    let mut file = std::fs::File::open(path).map_err(Corruption::Read)?;
    let len = file.metadata().map_err(Corruption::Read)?.len();
    let bad = |e| Err(Corruption::Safetensors(Box::new(e)));
    if len < 8 {
        return bad(SafeTensorError::HeaderTooSmall);
    }
    let mut n = [0u8; 8];
    file.read_exact(&mut n).map_err(Corruption::Read)?;
    let n = u64::from_le_bytes(n);
    if n > MAX_HEADER {
        return bad(SafeTensorError::HeaderTooLarge);
    }
    if 8 + n > len {
        return bad(SafeTensorError::InvalidHeaderLength);
    }
    let mut header = vec![0u8; n as usize];
    file.read_exact(&mut header).map_err(Corruption::Read)?;
    let metadata: safetensors::tensor::Metadata = match serde_json::from_slice(&header) {
        Ok(m) => m,
        Err(e) => return bad(SafeTensorError::InvalidHeaderDeserialization(e)),
    };
    if 8 + n + metadata.data_len() as u64 != len {
        return bad(SafeTensorError::MetadataIncompleteBuffer);
    }
    Ok(())
}

/// A PyTorch checkpoint is a zip archive (`PK\x03\x04`) or, in the legacy format, a pickle
/// (`\x80` and the protocol, 2 to 5).
fn check_checkpoint(path: &Path) -> Result<(), Corruption> {
    let mut file = std::fs::File::open(path).map_err(Corruption::Read)?;
    let mut first = Vec::with_capacity(4);
    (&mut file)
        .take(4)
        .read_to_end(&mut first)
        .map_err(Corruption::Read)?;
    let zip = first.starts_with(b"PK\x03\x04");
    let pickle = first.len() >= 2 && first[0] == 0x80 && (2..=5).contains(&first[1]);
    if zip || pickle {
        Ok(())
    } else {
        Err(Corruption::NotACheckpoint { first_bytes: first })
    }
}

/// Returns a local model folder (`config.json`, `model.safetensors`, optional `ood.json`)
/// for `variant`, downloading it (and converting it, for the originals layout) on first
/// use. See the module docs for the layouts, the cache and the checks.
///
/// A local folder needs no hub: open it with [`Classifier::from_dir`].
///
/// # Errors
/// A [`HubError`] whose message says what to do: [`HubError::RepoNotFound`],
/// [`HubError::NotFound`] (neither layout), [`HubError::Unauthorized`],
/// [`HubError::Server`], [`HubError::Network`], [`HubError::OfflineNotCached`],
/// [`HubError::Interrupted`], [`HubError::CorruptDownload`], [`HubError::Conversion`], ...
pub fn fetch_model_dir(variant: Pretrained, options: &HubOptions) -> Result<PathBuf, HubError> {
    let hub = Hub::new(options)?;
    let converted = hub.converted(variant)?;
    if let Fetched::Found(dir) = converted {
        return Ok(dir);
    }
    let original = hub.original(variant)?;
    if let Fetched::Found(dir) = original {
        return Ok(dir);
    }
    let folder = variant.folder();
    let tried = vec![
        format!("{folder}/config.json"),
        format!("{folder}/model.safetensors"),
        variant.file_name().to_string(),
    ];
    match (converted, original) {
        (Fetched::Missing, Fetched::Missing) => Err(hub.not_found(tried)),
        _ => Err(HubError::OfflineNotCached {
            repo_id: options.repo_id.clone(),
            revision: options.revision.clone(),
            cache_dir: options.cache_dir.clone(),
            tried,
        }),
    }
}

/// Loading a released model by name: `GenerativeClassifier::<B>::pretrained(Pretrained::Beta8, &device)`
/// with this trait in scope.
///
/// A local path always overrides the hub: to load files you already have, use
/// [`Classifier::from_dir`] (or [`crate::native::load_safetensors`]) instead.
pub trait PretrainedExt: Sized {
    /// The device type of the backend.
    type Device;

    /// Fetches `variant` with [`HubOptions::from_env`] (see [`fetch_model_dir`]) and loads
    /// it on `device`.
    fn pretrained(variant: Pretrained, device: &Self::Device) -> Result<Self, HubError> {
        Self::pretrained_with(variant, &HubOptions::from_env(), device)
    }

    /// Fetches `variant` with `options` and loads it on `device`.
    fn pretrained_with(
        variant: Pretrained,
        options: &HubOptions,
        device: &Self::Device,
    ) -> Result<Self, HubError>;
}

impl<B: Backend> PretrainedExt for GenerativeClassifier<B> {
    type Device = B::Device;

    fn pretrained_with(
        variant: Pretrained,
        options: &HubOptions,
        device: &B::Device,
    ) -> Result<Self, HubError> {
        let dir = fetch_model_dir(variant, options)?;
        match crate::classifier::load_model_dir(&dir, device) {
            Ok((_, model)) => Ok(model),
            Err(source) => Err(HubError::Load { dir, source }),
        }
    }
}

impl<B: Backend> PretrainedExt for Classifier<B> {
    type Device = B::Device;

    fn pretrained_with(
        variant: Pretrained,
        options: &HubOptions,
        device: &B::Device,
    ) -> Result<Self, HubError> {
        let dir = fetch_model_dir(variant, options)?;
        Classifier::from_dir(&dir, device).map_err(|source| HubError::Load { dir, source })
    }
}

impl<B: Backend> Classifier<B> {
    /// Fetches a released model from the hub with [`HubOptions::from_env`] and opens it
    /// (feature `pretrained`; see [`crate::hub`]). A local folder needs no hub: use
    /// [`Classifier::from_dir`].
    pub fn pretrained(variant: Pretrained, device: &B::Device) -> Result<Self, HubError> {
        <Self as PretrainedExt>::pretrained(variant, device)
    }

    /// [`Classifier::pretrained`] with explicit options.
    pub fn pretrained_with(
        variant: Pretrained,
        options: &HubOptions,
        device: &B::Device,
    ) -> Result<Self, HubError> {
        <Self as PretrainedExt>::pretrained_with(variant, options, device)
    }
}

/// An indicatif progress bar for one file, fed by hf-hub's download events.
struct Bar {
    name: String,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bar {
    fn new(name: String) -> Self {
        Self {
            name,
            bar: Mutex::new(None),
        }
    }
}

impl ProgressHandler for Bar {
    fn on_progress(&self, event: &ProgressEvent) {
        let ProgressEvent::Download(event) = event else {
            return;
        };
        let mut bar = self
            .bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match event {
            DownloadEvent::Start { total_bytes, .. } => {
                if *total_bytes >= MIN_BAR_BYTES && bar.is_none() {
                    let style = ProgressStyle::with_template(
                        "{msg} {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
                    )
                    .unwrap_or_else(|_| ProgressStyle::default_bar());
                    let new = ProgressBar::with_draw_target(
                        Some(*total_bytes),
                        ProgressDrawTarget::stderr(),
                    )
                    .with_style(style)
                    .with_message(self.name.clone());
                    *bar = Some(new);
                }
            }
            DownloadEvent::Progress { files } => {
                if let Some(bar) = bar.as_ref() {
                    for file in files {
                        bar.set_position(file.bytes_completed);
                    }
                }
            }
            DownloadEvent::AggregateProgress {
                bytes_completed, ..
            } => {
                if let Some(bar) = bar.as_ref() {
                    bar.set_position(*bytes_completed);
                }
            }
            DownloadEvent::Complete => {
                if let Some(bar) = bar.take() {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        let bar = self
            .bar
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(bar) = bar.take() {
            bar.finish_and_clear();
        }
    }
}
