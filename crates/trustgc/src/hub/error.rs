//! Why a pretrained model could not be fetched: [`HubError`], and [`Corruption`] of a
//! downloaded file.

use std::path::PathBuf;
use std::time::Duration;

use safetensors::SafeTensorError;
use trustgc_core::ConfigError;

use super::options::DEFAULT_REPO;
use crate::weights::convert::ConvertError;
use crate::weights::model_dir::ModelDirError;

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
    /// The file could not be opened: not a regular file, or over its size cap.
    #[error("{0}")]
    Open(#[source] Box<trustgc_io::ReadError>),
    /// The bytes received are not those the hub announced: the SHA-256 the hub gives
    /// large (LFS) files as their ETag differs from that of what arrived.
    #[error("its SHA-256 is {actual}, the hub announced {expected}")]
    Digest {
        /// The announced digest.
        expected: Box<trustgc_io::Sha256Digest>,
        /// The digest of the bytes received.
        actual: Box<trustgc_io::Sha256Digest>,
    },
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
    /// [`HubOptions::repo_id`](super::HubOptions::repo_id) is not of the form `owner/name`.
    #[error(
        "{repo_id:?} is not a repository id of the form owner/name: {reason} (set TRUSTGC_HUB_REPO or HubOptions::repo_id)"
    )]
    InvalidRepoId {
        /// What was given (at most 200 characters of it).
        repo_id: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The hub client could not be set up (e.g. [`HubOptions::endpoint`](super::HubOptions::endpoint) is not a URL).
    #[error("cannot set up a hub client for {endpoint}: {source} (check HF_ENDPOINT)")]
    Client {
        /// The endpoint.
        endpoint: String,
        /// Why.
        #[source]
        source: ClientError,
    },
    /// [`HubOptions::revision`](super::HubOptions::revision) is not a branch, tag or commit
    /// name trustgc accepts; nothing was read or written.
    #[error(
        "{revision:?} is not a valid revision: {reason}; set TRUSTGC_HUB_REVISION (or HubOptions::revision, or `@REV` after the model name) to a branch, tag or commit such as main, v1.0 or a 40-hex commit id"
    )]
    InvalidRevision {
        /// What was given (at most 200 characters of it).
        revision: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// A file name trustgc asked for is not a plain relative path (a bug: the names come
    /// from the [`Pretrained`](super::Pretrained) catalog).
    #[error("{file:?} is not a plain relative file name: {reason}")]
    InvalidFileName {
        /// The name.
        file: String,
        /// The rule it breaks.
        reason: &'static str,
    },
    /// The hub sent (or the cache recorded) a value a cache path would be built from, and
    /// it is not what a hub sends: a commit id that is not 40 hex digits, a blob id
    /// (`ETag`) that is not 40 or 64 hex digits, a link that leaves the cache. Nothing was
    /// written outside the cache and nothing outside it was read.
    #[error(
        "the hub at {endpoint} answered for {file} of {repo_id} with {what} {value:?}, which is not a valid value; refused before any file was written (a broken or hostile server: check HF_ENDPOINT; if the value comes from the cache, delete the repository's folder in the cache)"
    )]
    UnsafeServerValue {
        /// The hub.
        endpoint: String,
        /// The repository.
        repo_id: String,
        /// The file requested.
        file: String,
        /// Which value (e.g. `an ETag (blob id)`).
        what: &'static str,
        /// The value (at most 200 characters of it).
        value: String,
    },
    /// The hub did not connect or did not send anything for longer than the timeout;
    /// nothing was cached (a partial file was removed).
    #[error(
        "the hub at {endpoint} sent nothing for {after:?} ({phase}) for {file} of {repo_id}; nothing was cached; check the network connection and HF_ENDPOINT, raise {} (HubOptions::{}) for a slow connection, set HF_HUB_OFFLINE=1 to use cached files only, or load a local model folder with Classifier::from_dir",
        phase.variable(), phase.field()
    )]
    Timeout {
        /// The hub.
        endpoint: String,
        /// The repository.
        repo_id: String,
        /// The file requested.
        file: String,
        /// Connecting or waiting for data.
        phase: TimeoutPhase,
        /// The timeout that ran out.
        after: Duration,
        /// What the HTTP exchange gave.
        #[source]
        source: Box<HttpError>,
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
        /// What the HTTP exchange gave.
        #[source]
        source: Box<HttpError>,
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
        /// What the HTTP exchange gave.
        #[source]
        source: Box<HttpError>,
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
    /// The hub could not be reached (connection refused, DNS, TLS).
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
        /// What the HTTP exchange gave.
        #[source]
        source: Box<HttpError>,
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
        /// What the HTTP exchange gave.
        #[source]
        source: Box<HttpError>,
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
    /// Another process is downloading the same file and held its lock too long.
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
        /// What the HTTP exchange gave.
        #[source]
        source: Box<HttpError>,
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

/// Connecting or waiting for data (see [`HubError::Timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutPhase {
    /// Opening the connection ([`HubOptions::connect_timeout`](super::HubOptions::connect_timeout)).
    Connect,
    /// Waiting for the answer or for more of the body
    /// ([`HubOptions::read_timeout`](super::HubOptions::read_timeout)).
    Read,
}

impl TimeoutPhase {
    fn variable(self) -> &'static str {
        match self {
            Self::Connect => "TRUSTGC_HUB_CONNECT_TIMEOUT",
            Self::Read => "TRUSTGC_HUB_READ_TIMEOUT",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Self::Connect => "connect_timeout",
            Self::Read => "read_timeout",
        }
    }
}

impl std::fmt::Display for TimeoutPhase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Connect => "connecting",
            Self::Read => "waiting for data",
        })
    }
}

/// Why the hub client could not be set up (see [`HubError::Client`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The endpoint is not a URL.
    #[error("not a URL: {0}")]
    Url(#[source] url::ParseError),
    /// The endpoint is a URL but not an `http` or `https` one with a host.
    #[error("not an http(s) URL with a host")]
    NotHttp,
    /// The HTTP client could not be built (e.g. TLS set-up).
    #[error("the HTTP client could not be built: {0}")]
    Http(#[source] reqwest::Error),
    /// The I/O runtime could not be started.
    #[error("the I/O runtime could not be started: {0}")]
    Runtime(#[source] std::io::Error),
}

/// How one HTTP exchange with the hub failed (the source of several [`HubError`]s).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// No answer, or the body broke off: connection, DNS, TLS, timeout.
    #[error("{method} {url}: {source}")]
    Transport {
        /// `HEAD` or `GET`.
        method: &'static str,
        /// The URL.
        url: String,
        /// The HTTP client's error.
        #[source]
        source: reqwest::Error,
    },
    /// An answer with an error status.
    #[error("{method} {url} answered HTTP {status}")]
    Status {
        /// `HEAD` or `GET`.
        method: &'static str,
        /// The URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The answer lacks a header every hub answer has.
    #[error("{method} {url} answered without {header}")]
    MissingHeader {
        /// `HEAD` or `GET`.
        method: &'static str,
        /// The URL.
        url: String,
        /// The header (or headers) missing.
        header: &'static str,
    },
    /// The body is not as long as announced (`Content-Length` or `X-Linked-Size`).
    #[error("GET {url}: {received} bytes arrived where {expected} were announced")]
    Length {
        /// The URL.
        url: String,
        /// The size announced.
        expected: u64,
        /// The bytes that arrived (counting stops past `expected`).
        received: u64,
    },
}
