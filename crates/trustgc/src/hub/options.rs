//! Where and how the hub is asked: [`HubOptions`], filled from the environment.

use std::fmt;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use trustgc_core::GcConfig;

use super::catalog::Pretrained;

/// The repository [`HubOptions::from_env`] uses when `TRUSTGC_HUB_REPO` is not set.
///
/// **It does not exist yet.** The trustgc maintainers have to publish the converted
/// models there (with the permission of the authors, Mackowiak et al., who released the
/// original checkpoints); until they do, every download from it fails with
/// [`HubError::RepoNotFound`](super::HubError::RepoNotFound). Pass a repository that holds the files instead
/// (`TRUSTGC_HUB_REPO` or [`HubOptions::repo_id`]), or load a local model folder with
/// [`Classifier::from_dir`](crate::Classifier::from_dir).
pub const DEFAULT_REPO: &str = "trustgc/ibinn-imagenet";

/// The public Hugging Face hub.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// [`HubOptions::connect_timeout`] unless `TRUSTGC_HUB_CONNECT_TIMEOUT` says otherwise.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// [`HubOptions::read_timeout`] unless `TRUSTGC_HUB_READ_TIMEOUT` says otherwise.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// The folder of the hub cache holding checkpoints trustgc converted itself.
pub const CONVERTED_DIR: &str = "trustgc-converted";

/// Where and how [`fetch_model_dir`](super::fetch_model_dir) looks for a model.
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
    /// Hugging Face cache folder (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
    /// `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`), shared with
    /// `huggingface_hub` and hf-hub.
    pub cache_dir: PathBuf,
    /// Access token (`HF_TOKEN`). `None`: the token file of `huggingface-cli login`
    /// (`HF_TOKEN_PATH`, else `$HF_HOME/token`) is used when there is one, unless
    /// `HF_HUB_DISABLE_IMPLICIT_TOKEN` is set.
    pub token: Option<String>,
    /// Cached files only, no network access (`HF_HUB_OFFLINE=1`).
    pub offline: bool,
    /// Show progress bars on stderr (default: when stderr is a terminal).
    pub progress: bool,
    /// Retries of a request after a connection failure, timeout or a 408, 429, 500,
    /// 502, 503 or 504 answer (default 5). A body that breaks off is not retried.
    pub max_retries: usize,
    /// Base of the exponential backoff between retries (default 100 ms; the `n`-th wait
    /// is `2^n` times this, at most 10 s).
    pub retry_base_delay: Duration,
    /// How long opening a connection may take (`TRUSTGC_HUB_CONNECT_TIMEOUT`, in seconds;
    /// default [`DEFAULT_CONNECT_TIMEOUT`], 30 s).
    pub connect_timeout: Duration,
    /// How long the hub may send nothing: waiting for an answer, or for more of a body
    /// (`TRUSTGC_HUB_READ_TIMEOUT`, in seconds; default [`DEFAULT_READ_TIMEOUT`], 60 s).
    /// It bounds each wait, not a whole download, so large files on slow connections
    /// are not cut off.
    pub read_timeout: Duration,
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
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("architecture", &"GcConfig { .. }")
            .finish()
    }
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A timeout in seconds from `name`: a positive number (decimals allowed) up to one day;
/// anything else (unset, empty, `0`, negative, not a number) gives `default`.
fn env_seconds(name: &str, default: Duration) -> Duration {
    env_nonempty(name)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .unwrap_or(default)
}

/// huggingface_hub's (and hf-hub's) cache folder resolution.
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
            connect_timeout: env_seconds("TRUSTGC_HUB_CONNECT_TIMEOUT", DEFAULT_CONNECT_TIMEOUT),
            read_timeout: env_seconds("TRUSTGC_HUB_READ_TIMEOUT", DEFAULT_READ_TIMEOUT),
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
