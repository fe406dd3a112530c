//! One fetch against the hub and its cache: downloads (with timeouts, into the cache
//! layout of `huggingface_hub` and hf-hub, every server value checked before a path is
//! built from it), the checks of every fetched file, the removal of corrupt and partial
//! files, and the one-time conversion of the authors' checkpoints.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use reqwest::Url;
use safetensors::SafeTensorError;
use trustgc_core::GcConfig;

use super::catalog::Pretrained;
use super::error::{Corruption, HttpError, HubError};
use super::http::{Http, header, parse_endpoint, url_with};
use super::layout::{Cached, Layout};
use super::options::HubOptions;
use super::progress::Bar;
use super::validate::{
    check_file_name, check_repo_id, check_revision, is_blob_id, is_commit_id, shown,
};
use crate::ood::OodStats;
use crate::weights::convert::convert_checkpoint_verified;

/// What became of one file request.
pub(super) enum Fetched {
    /// Here it is (a snapshot path).
    Found(PathBuf),
    /// The hub (or the cache's record of the hub) says it does not exist.
    Missing,
    /// Offline mode and not cached.
    NotCached,
}

/// One fetch: the options, the checked repository id, the HTTP client (none offline)
/// and the cache layout.
pub(super) struct Hub<'a> {
    options: &'a HubOptions,
    owner: String,
    name: String,
    endpoint: Url,
    http: Option<Http>,
    layout: Layout,
}

/// The token of `huggingface-cli login` when none is given: `HF_TOKEN_PATH`, else
/// `$HF_HOME/token` (`~/.cache/huggingface/token`); none with
/// `HF_HUB_DISABLE_IMPLICIT_TOKEN`.
fn implicit_token() -> Option<String> {
    let set = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if set("HF_HUB_DISABLE_IMPLICIT_TOKEN").is_some() {
        return None;
    }
    let path = set("HF_TOKEN_PATH").map(PathBuf::from).or_else(|| {
        let home = set("HF_HOME").map(PathBuf::from).or_else(|| {
            let xdg = set("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| set("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
            Some(xdg.join("huggingface"))
        })?;
        Some(home.join("token"))
    })?;
    let mut text = String::new();
    let cap = trustgc_io::Cap {
        bytes: 4096,
        what: "a token file",
    };
    trustgc_io::open_regular(&path, cap)
        .ok()?
        .file
        .take(4096)
        .read_to_string(&mut text)
        .ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// Deletes a file when dropped, unless disarmed.
struct RemoveOnDrop<'p>(Option<&'p Path>);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        if let Some(path) = self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl<'a> Hub<'a> {
    /// Checks the repository id and the revision, and sets up the client (none offline).
    /// Nothing is read or written yet.
    pub(super) fn new(options: &'a HubOptions) -> Result<Self, HubError> {
        let (owner, name) =
            check_repo_id(&options.repo_id).map_err(|reason| HubError::InvalidRepoId {
                repo_id: shown(&options.repo_id),
                reason,
            })?;
        check_revision(&options.revision).map_err(|reason| HubError::InvalidRevision {
            revision: shown(&options.revision),
            reason,
        })?;
        let client_error = |source| HubError::Client {
            endpoint: options.endpoint.clone(),
            source,
        };
        let endpoint = parse_endpoint(&options.endpoint).map_err(client_error)?;
        let http = if options.offline {
            None
        } else {
            let token = options.token.clone().or_else(implicit_token);
            Some(Http::new(options, token.as_deref()).map_err(client_error)?)
        };
        Ok(Self {
            options,
            owner: owner.to_string(),
            name: name.to_string(),
            endpoint,
            http,
            layout: Layout::new(&options.cache_dir, &options.repo_folder()),
        })
    }

    fn repo_dir(&self) -> PathBuf {
        self.layout.repo_dir().to_path_buf()
    }

    fn unsafe_value(&self, file: &str, what: &'static str, value: &str) -> HubError {
        HubError::UnsafeServerValue {
            endpoint: self.options.endpoint.clone(),
            repo_id: self.options.repo_id.clone(),
            file: file.to_string(),
            what,
            value: shown(value),
        }
    }

    fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
        move |source| HubError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// The commit `revision` stands for in the cache: itself when it is a commit id,
    /// else what `refs/<revision>` records.
    fn commit_in_cache(&self, file: &str, revision: &str) -> Result<Option<String>, HubError> {
        if is_commit_id(revision) {
            return Ok(Some(revision.to_string()));
        }
        self.layout.read_ref(revision).map_err(|invalid| {
            self.unsafe_value(
                file,
                "a commit id recorded in the cache's refs/",
                &invalid.found,
            )
        })
    }

    /// `file` at `revision` from the cache alone.
    fn cache_only(&self, file: &str, revision: &str) -> Result<Fetched, HubError> {
        let Some(commit) = self.commit_in_cache(file, revision)? else {
            return Ok(Fetched::NotCached);
        };
        match self.layout.cached(&commit, file) {
            Cached::File { .. } => Ok(Fetched::Found(self.layout.snapshot(&commit, file))),
            Cached::Unsafe(value) => Err(self.unsafe_value(file, "a link in the cache", &value)),
            Cached::Absent if self.layout.known_missing(&commit, file) => Ok(Fetched::Missing),
            Cached::Absent => Ok(Fetched::NotCached),
        }
    }

    /// Downloads (or finds in the cache) one file of the repository.
    fn file(&self, file: &str, revision: &str) -> Result<Fetched, HubError> {
        check_file_name(file).map_err(|reason| HubError::InvalidFileName {
            file: file.to_string(),
            reason,
        })?;
        // A commit's files never change: a cached one needs no request.
        if is_commit_id(revision)
            && let Cached::File { .. } = self.layout.cached(revision, file)
        {
            return Ok(Fetched::Found(self.layout.snapshot(revision, file)));
        }
        let Some(http) = &self.http else {
            return self.cache_only(file, revision);
        };
        match self.download(http, file, revision) {
            Ok(fetched) => Ok(fetched),
            Err(error) => {
                self.layout.remove_partial_blobs();
                // An unreachable, failing or silent hub: use the cache when it can answer.
                let transient = match &error {
                    HubError::Network { .. } | HubError::Timeout { .. } => true,
                    HubError::Server { status, .. } => matches!(status, 500 | 502..=504),
                    _ => false,
                };
                if transient
                    && let Ok(found @ (Fetched::Found(_) | Fetched::Missing)) =
                        self.cache_only(file, revision)
                {
                    return Ok(found);
                }
                Err(error)
            }
        }
    }

    /// The resolve URL of `file` at `revision`.
    fn resolve_url(&self, revision: &str, file: &str) -> Url {
        let mut segments = vec![self.owner.as_str(), self.name.as_str(), "resolve", revision];
        segments.extend(file.split('/'));
        url_with(&self.endpoint, &segments)
    }

    /// One file through the network: `HEAD` (conditional when cached), checks of the
    /// commit id, the blob id and the size, then the body into `blobs/<etag>` unless it is
    /// there, then the snapshot link and the ref.
    fn download(&self, http: &Http, file: &str, revision: &str) -> Result<Fetched, HubError> {
        let url = self.resolve_url(revision, file);
        let cached_commit = self.commit_in_cache(file, revision).ok().flatten();
        let cached_etag =
            cached_commit
                .as_deref()
                .and_then(|commit| match self.layout.cached(commit, file) {
                    Cached::File { etag } => etag,
                    _ => None,
                });
        let head = http
            .head(&url, cached_etag.as_deref())
            .map_err(|e| self.map_error(http, file, e))?;
        let status = head.status().as_u16();
        let commit = header(&head, "x-repo-commit");
        if let Some(commit) = commit
            && !is_commit_id(commit)
        {
            return Err(self.unsafe_value(file, "an X-Repo-Commit (commit id)", commit));
        }
        if status == 404 {
            if let Some(commit) = commit {
                let repo_dir = self.repo_dir();
                self.layout
                    .mark_missing(commit, file)
                    .map_err(Self::io_error(&repo_dir))?;
                if !is_commit_id(revision) {
                    self.layout
                        .write_ref(revision, commit)
                        .map_err(Self::io_error(&repo_dir))?;
                }
            }
            return Ok(Fetched::Missing);
        }
        let missing = |header| {
            let error = HttpError::MissingHeader {
                method: "HEAD",
                url: url.to_string(),
                header,
            };
            self.map_error(http, file, error)
        };
        if status == 304 {
            let (Some(etag), Some(commit)) = (cached_etag, cached_commit) else {
                return Err(missing("a cached file for its 304 Not Modified"));
            };
            return self.finish(file, revision, &commit, &etag);
        }
        if !(200..400).contains(&status) {
            let error = HttpError::Status {
                method: "HEAD",
                url: url.to_string(),
                status,
            };
            return Err(self.map_error(http, file, error));
        }
        let etag = header(&head, "x-linked-etag")
            .or_else(|| header(&head, "etag"))
            .ok_or_else(|| missing("ETag"))?;
        let etag = etag.strip_prefix("W/").unwrap_or(etag).trim_matches('"');
        if !is_blob_id(etag) {
            return Err(self.unsafe_value(file, "an ETag (blob id)", etag));
        }
        let commit = commit.ok_or_else(|| missing("X-Repo-Commit"))?;
        let size = header(&head, "x-linked-size")
            .or_else(|| header(&head, "content-length"))
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| missing("a size (X-Linked-Size or Content-Length)"))?;
        // A model folder's JSON files are at most a few MB; a hub that announces more than
        // MAX_JSON_BYTES is refused before any byte is written.
        if file.ends_with(".json") && size > MAX_JSON_BYTES {
            return Err(self.unsafe_value(file, "a JSON file's size", &size.to_string()));
        }
        let (etag, commit) = (etag.to_string(), commit.to_string());
        drop(head);
        if !self.layout.has_blob(&etag) {
            self.download_blob(http, &url, file, &etag, size)?;
        }
        self.finish(file, revision, &commit, &etag)
    }

    /// Links the blob into the snapshot of `commit` and records the ref.
    fn finish(
        &self,
        file: &str,
        revision: &str,
        commit: &str,
        etag: &str,
    ) -> Result<Fetched, HubError> {
        let repo_dir = self.repo_dir();
        if !is_commit_id(revision) {
            self.layout
                .write_ref(revision, commit)
                .map_err(Self::io_error(&repo_dir))?;
        }
        let path = self
            .layout
            .link(commit, file, etag)
            .map_err(Self::io_error(&repo_dir))?;
        Ok(Fetched::Found(path))
    }

    /// The body of `url` into `blobs/<etag>`: under the blob's lock, into
    /// `blobs/<etag>.incomplete` (removed on any failure), renamed into place when
    /// exactly `size` bytes arrived.
    fn download_blob(
        &self,
        http: &Http,
        url: &Url,
        file: &str,
        etag: &str,
        size: u64,
    ) -> Result<(), HubError> {
        let blobs = self.layout.blobs_dir();
        self.layout
            .make_dirs(Some(&blobs))
            .map_err(Self::io_error(&blobs))?;
        // Partial files of killed downloads (not locked by anyone) go first.
        self.layout.remove_partial_blobs();
        let lock_path = self.layout.lock_path(etag);
        let Some(_lock) = self.layout.lock(etag).map_err(Self::io_error(&lock_path))? else {
            return Err(HubError::Locked { path: lock_path });
        };
        if self.layout.has_blob(etag) {
            return Ok(()); // another process finished it meanwhile
        }
        let blob = self.layout.blob(etag);
        let partial = blobs.join(format!("{etag}.incomplete"));
        let _ = std::fs::remove_file(&partial);
        let mut out = std::fs::File::options()
            .write(true)
            .create_new(true)
            .open(&partial)
            .map_err(Self::io_error(&partial))?;
        let mut guard = RemoveOnDrop(Some(&partial));
        // Large (LFS) files have their SHA-256 as ETag: what arrives is checked against it.
        let announced = trustgc_io::Sha256Digest::from_hex(etag);
        let mut digest = trustgc_io::Sha256Stream::default();
        let mut response = http.get(url).map_err(|e| self.map_error(http, file, e))?;
        let bar = Bar::new(self.options.progress, file, size);
        let mut received = 0u64;
        while let Some(chunk) = http
            .chunk(&mut response, url)
            .map_err(|e| self.map_error(http, file, e))?
        {
            received = received.saturating_add(chunk.len() as u64);
            if received > size {
                break;
            }
            out.write_all(&chunk).map_err(Self::io_error(&partial))?;
            digest.update(&chunk);
            bar.set(received);
        }
        if received != size {
            let error = HttpError::Length {
                url: url.to_string(),
                expected: size,
                received,
            };
            return Err(self.map_error(http, file, error));
        }
        if let Some(expected) = announced {
            let actual = digest.finish();
            if actual != expected {
                return Err(HubError::CorruptDownload {
                    repo_id: self.options.repo_id.clone(),
                    file: file.to_string(),
                    path: partial.clone(),
                    source: Corruption::Digest {
                        expected: Box::new(expected),
                        actual: Box::new(actual),
                    },
                });
            }
        }
        out.flush()
            .and_then(|()| out.sync_all())
            .map_err(Self::io_error(&partial))?;
        drop(out);
        std::fs::rename(&partial, &blob).map_err(Self::io_error(&blob))?;
        guard.0 = None;
        Ok(())
    }

    /// Whether the cache records `file` as absent at `revision`.
    fn known_missing(&self, file: &str, revision: &str) -> bool {
        self.commit_in_cache(file, revision)
            .ok()
            .flatten()
            .is_some_and(|commit| self.layout.known_missing(&commit, file))
    }

    /// An optional file: `None` when absent (or, offline, not cached). Files absent at a
    /// commit stay absent, so a recorded 404 at a commit is not asked again.
    fn optional(&self, file: &str, revision: &str) -> Result<Option<PathBuf>, HubError> {
        if is_commit_id(revision) && self.known_missing(file, revision) {
            return Ok(None);
        }
        Ok(match self.file(file, revision)? {
            Fetched::Found(path) => Some(path),
            Fetched::Missing | Fetched::NotCached => None,
        })
    }

    /// Maps an HTTP failure on `file` onto a [`HubError`].
    fn map_error(&self, http: &Http, file: &str, error: HttpError) -> HubError {
        let o = self.options;
        let (repo_id, endpoint, file) = (o.repo_id.clone(), o.endpoint.clone(), file.to_string());
        if let Some((phase, after)) = http.timeout_of(&error) {
            return HubError::Timeout {
                endpoint,
                repo_id,
                file,
                phase,
                after,
                source: Box::new(error),
            };
        }
        match error {
            HttpError::Status { status, .. } if matches!(status, 401 | 403 | 407) => {
                HubError::Unauthorized {
                    repo_id,
                    file,
                    status,
                    token_given: http.has_token(),
                    source: Box::new(error),
                }
            }
            HttpError::Status { status, .. } if matches!(status, 429 | 500..=599) => {
                HubError::Server {
                    endpoint,
                    repo_id,
                    file,
                    status,
                    source: Box::new(error),
                }
            }
            HttpError::Transport { ref source, .. } if source.is_body() || source.is_decode() => {
                HubError::Interrupted {
                    repo_id,
                    file,
                    source: Box::new(error),
                }
            }
            HttpError::Length {
                expected, received, ..
            } if received < expected => HubError::Interrupted {
                repo_id,
                file,
                source: Box::new(error),
            },
            HttpError::Transport { .. } => HubError::Network {
                endpoint,
                repo_id,
                file,
                source: Box::new(error),
            },
            other => HubError::Hub {
                endpoint,
                repo_id,
                file,
                source: Box::new(other),
            },
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
        is_commit_id(commit).then(|| commit.to_string())
    }

    /// The commit `revision` resolved to when it was last fetched, from the cache.
    fn cached_commit(&self) -> Option<String> {
        let revision = &self.options.revision;
        self.commit_in_cache(revision, revision).ok().flatten()
    }

    /// Layout (a): a converted model folder in the repository.
    pub(super) fn converted(&self, variant: Pretrained) -> Result<Fetched, HubError> {
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
    pub(super) fn original(&self, variant: Pretrained) -> Result<Fetched, HubError> {
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
            // Not expected (files are snapshot paths); keep the name one safe component.
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
        self.convert(&pt, &dir)?;
        Ok(Fetched::Found(dir))
    }

    /// Converts `pt` into `dir`. [`convert_checkpoint_verified`] writes a temporary sibling folder
    /// (`.<variant>.partial-<pid>`, after removing those of killed conversions) and
    /// renames it into place, so `dir` is complete or absent; when another process
    /// finished the same conversion first, its folder is used.
    fn convert(&self, pt: &Path, dir: &Path) -> Result<(), HubError> {
        let parent = dir.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(parent).map_err(|source| HubError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
        if self.options.progress {
            eprintln!(
                "converting {} into a trustgc model folder (once; kept in {})",
                pt.display(),
                dir.display()
            );
        }
        // An LFS blob is named by its SHA-256: the cached checkpoint is checked against it
        // again before conversion (it may have been damaged on disk since the download).
        let expected = std::fs::read_link(pt)
            .ok()
            .and_then(|target| {
                target
                    .file_name()
                    .and_then(|n| n.to_str())
                    .map(str::to_owned)
            })
            .and_then(|name| trustgc_io::Sha256Digest::from_hex(&name));
        match convert_checkpoint_verified(pt, &self.options.architecture, dir, expected) {
            Ok(()) => {}
            // Another process finished the same conversion first.
            Err(_) if is_model_dir(dir) => return Ok(()),
            Err(source) => {
                return Err(HubError::Conversion {
                    checkpoint: pt.to_path_buf(),
                    source,
                });
            }
        }
        for missing in ["config.json", "model.safetensors"] {
            if !dir.join(missing).is_file() {
                let _ = std::fs::remove_dir_all(dir);
                return Err(HubError::ConversionOutput {
                    checkpoint: pt.to_path_buf(),
                    missing,
                });
            }
        }
        Ok(())
    }

    /// After both layouts came back missing: is it the repository, the revision, or
    /// the files?
    pub(super) fn not_found(&self, tried: Vec<String>) -> HubError {
        let o = self.options;
        if let Some(http) = &self.http {
            let repo = url_with(&self.endpoint, &["api", "models", &self.owner, &self.name]);
            if let Ok(false) = http.exists(&repo) {
                return HubError::RepoNotFound {
                    repo_id: o.repo_id.clone(),
                    endpoint: o.endpoint.clone(),
                };
            }
            let revision = url_with(&repo, &["revision", &o.revision]);
            if let Ok(false) = http.exists(&revision) {
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

fn is_model_dir(dir: &Path) -> bool {
    dir.join("config.json").is_file() && dir.join("model.safetensors").is_file()
}

/// The largest `config.json` or `ood.json` the hub loader accepts: 16 MiB, the limit of a
/// local model folder's JSON files (`Cap::JSON`). The ImageNet config with its 1000 class
/// names is about 30 kB; an `ood.json` with a latent test holds its Gaussian (1.6 MB for
/// the shipped Fashion-MNIST model; `fit-ood` refuses ranks that would pass 12 MiB).
const MAX_JSON_BYTES: u64 = 16 << 20;

/// A JSON file of the cache, at most [`MAX_JSON_BYTES`] of it.
fn read_json(path: &Path) -> Result<Vec<u8>, Corruption> {
    let cap = trustgc_io::Cap {
        bytes: MAX_JSON_BYTES,
        what: "a model folder's JSON file from the hub",
    };
    trustgc_io::read_capped(path, cap).map_err(|e| Corruption::Open(Box::new(e)))
}

/// A file of the cache, opened for reading (regular files only).
fn open_cached(path: &Path) -> Result<std::fs::File, Corruption> {
    trustgc_io::open_regular(path, trustgc_io::Cap::TENSORS)
        .map(|opened| opened.file)
        .map_err(|e| Corruption::Open(Box::new(e)))
}

fn check_config(path: &Path) -> Result<(), Corruption> {
    let text = read_json(path)?;
    let text = String::from_utf8_lossy(&text);
    GcConfig::from_json(&text)
        .map(|_| ())
        .map_err(|e| Corruption::Config(Box::new(e)))
}

fn check_ood(path: &Path) -> Result<(), Corruption> {
    let text = read_json(path)?;
    serde_json::from_slice::<OodStats>(&text)
        .map(|_| ())
        .map_err(Corruption::Ood)
}

/// The checks of `SafeTensors::deserialize` (header length, header JSON, tensor offsets
/// and sizes, data length equal to the file's) without reading the tensor data.
fn check_safetensors(path: &Path) -> Result<(), Corruption> {
    const MAX_HEADER: u64 = 100_000_000;
    let mut file = open_cached(path)?;
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
    let mut file = open_cached(path)?;
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
