//! The released ImageNet models by name: the [`catalog`] of what was released (always
//! available), and downloads from a Hugging Face hub (feature `pretrained`, on by default).
//!
//! ```no_run
//! use trustgc::burn::backend::Flex;
//! use trustgc::hub::{Pretrained, PretrainedExt};
//! use trustgc::{Classifier, GenerativeClassifier};
//!
//! let device = Default::default();
//! // The classifier API (likelihoods, posteriors, verdicts) ...
//! let classifier = Classifier::<Flex>::pretrained(Pretrained::Beta8, &device)?;
//! // ... or the bare model.
//! let model = GenerativeClassifier::<Flex>::pretrained(Pretrained::Beta8, &device)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [`fetch_model_dir`] returns a local *model folder* (`config.json`, `model.safetensors`,
//! optional `ood.json`), the same kind of folder [`Classifier::from_dir`](crate::Classifier::from_dir) opens. A local
//! path always overrides the hub: to use files you already have (or a repository this
//! module cannot reach), call [`Classifier::from_dir`](crate::Classifier::from_dir) on the folder and no network access
//! happens.
//!
//! # Where the files come from
//! The repository ([`HubOptions::repo_id`], `TRUSTGC_HUB_REPO`) may hold either layout:
//! - **converted**: `beta_8/config.json` + `beta_8/model.safetensors` (+ optional
//!   `beta_8/ood.json`, `beta_8/README.md`) for each variant. The snapshot folder they
//!   are downloaded into is returned as it is.
//! - **originals**: the authors' `beta_8.avg.pt` at the top of the repository. It is
//!   downloaded and converted once with [`crate::weights::convert::convert_checkpoint`] into
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
//! The Hugging Face cache (`HF_HUB_CACHE`, default `$HF_HOME/hub`,
//! `~/.cache/huggingface/hub`), in the layout `huggingface_hub` and hf-hub use, so the
//! three share it: `models--owner--name/blobs/<etag>` holds the content,
//! `snapshots/<commit>/<path>` links to it, `refs/<revision>` names the commit. trustgc
//! downloads itself (with its own HTTP client, see docs/hub.md for why) and checks every
//! value a path is built from before the path is built: the repository id and the
//! revision ([`HubError::InvalidRepoId`], [`HubError::InvalidRevision`]), and the
//! commit id (40 hex digits) and blob id (`ETag`, 40 or 64 hex digits) the hub sends or
//! the cache recorded ([`HubError::UnsafeServerValue`]); links in the cache are followed
//! only when they point at `blobs/<etag>`. A download goes into
//! `blobs/<etag>.incomplete` under the blob's lock and is renamed into place only when
//! exactly the announced size arrived; on any failure the partial file is deleted, and
//! partial files of killed processes are deleted by the next download (unless another
//! process holds their lock).
//!
//! Every file is checked after it is downloaded or found in the cache (`config.json`
//! must parse as a [`GcConfig`](crate::GcConfig), `model.safetensors` must have a valid
//! safetensors header whose sizes match the file, `ood.json` must parse, a `.pt` must
//! start like a PyTorch file); a file that fails is deleted (blob and snapshot link)
//! before [`HubError::CorruptDownload`] is returned, so the next call downloads it again.
//!
//! # Timeouts
//! Connecting may take [`HubOptions::connect_timeout`] (30 s) and the hub may stay silent
//! (before answering, or in the middle of a body) for [`HubOptions::read_timeout`]
//! (60 s); then the request fails with [`HubError::Timeout`] (after
//! [`HubOptions::max_retries`] retries), or falls back to the cache when the file is
//! there.
//!
//! # Environment ([`HubOptions::from_env`])
//! | Variable | Meaning |
//! |---|---|
//! | `TRUSTGC_HUB_REPO` | repository id `owner/name` (default [`DEFAULT_REPO`]) |
//! | `TRUSTGC_HUB_REVISION` | branch, tag or commit (default `main`) |
//! | `HF_ENDPOINT` | hub URL (default `https://huggingface.co`; a mirror) |
//! | `HF_HUB_CACHE`, `HF_HOME` | cache folder (see above) |
//! | `HF_TOKEN` | access token for private or gated repositories (else the token file of `huggingface-cli login`) |
//! | `HF_HUB_OFFLINE` | `1`: use cached files only, never touch the network |
//! | `TRUSTGC_HUB_CONNECT_TIMEOUT` | seconds to open a connection (default 30) |
//! | `TRUSTGC_HUB_READ_TIMEOUT` | seconds the hub may send nothing (default 60) |

#[cfg(feature = "pretrained")]
mod cache;
pub mod catalog;
#[cfg(feature = "pretrained")]
mod error;
#[cfg(feature = "pretrained")]
mod fetch;
#[cfg(feature = "pretrained")]
mod http;
#[cfg(feature = "pretrained")]
mod layout;
#[cfg(feature = "pretrained")]
mod options;
#[cfg(feature = "pretrained")]
mod progress;
#[cfg(feature = "pretrained")]
mod validate;

pub use catalog::{ParseBetaError, ParsePretrainedError, Pretrained, parse_beta};
#[cfg(feature = "pretrained")]
pub use error::{ClientError, Corruption, HttpError, HubError, TimeoutPhase};
#[cfg(feature = "pretrained")]
pub use fetch::{PretrainedExt, fetch_model_dir};
#[cfg(feature = "pretrained")]
pub use options::{
    CONVERTED_DIR, DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENDPOINT, DEFAULT_READ_TIMEOUT, DEFAULT_REPO,
    HubOptions,
};
