//! [`fetch_model_dir`] and the loaders of released models by name.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use trustgc_core::GenerativeClassifier;

use super::cache::{Fetched, Hub};
use super::{HubError, HubOptions, Pretrained};
use crate::classifier::Classifier;
use crate::weights::model_dir::{ModelDirError, load_model_dir};

/// Returns a local model folder (`config.json`, `model.safetensors`, optional `ood.json`)
/// for `variant`, downloading it (and converting it, for the originals layout) on first
/// use. See the module docs for the layouts, the cache and the checks.
///
/// A local folder needs no hub: open it with [`Classifier::from_dir`].
///
/// # Errors
/// A [`HubError`] whose message says what to do: [`HubError::RepoNotFound`],
/// [`HubError::NotFound`] (neither layout), [`HubError::Unauthorized`],
/// [`HubError::Server`], [`HubError::Network`], [`HubError::Timeout`],
/// [`HubError::OfflineNotCached`], [`HubError::Interrupted`], [`HubError::CorruptDownload`],
/// [`HubError::Conversion`], [`HubError::InvalidRevision`],
/// [`HubError::UnsafeServerValue`] (a hub value that would lead a path out of the
/// cache), ...
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
/// [`Classifier::from_dir`] (or [`crate::weights::safetensors::load_safetensors`]) instead.
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
    ) -> Result<Self, HubError> {
        let dir = fetch_model_dir(variant, options)?;
        Self::open_model_dir(&dir, device).map_err(|source| HubError::Load { dir, source })
    }

    /// Opens a fetched model folder.
    fn open_model_dir(dir: &Path, device: &Self::Device) -> Result<Self, ModelDirError>;
}

impl<B: Backend> PretrainedExt for GenerativeClassifier<B> {
    type Device = B::Device;

    fn open_model_dir(dir: &Path, device: &B::Device) -> Result<Self, ModelDirError> {
        Ok(load_model_dir(dir, device)?.1)
    }
}

impl<B: Backend> PretrainedExt for Classifier<B> {
    type Device = B::Device;

    fn open_model_dir(dir: &Path, device: &B::Device) -> Result<Self, ModelDirError> {
        Classifier::from_dir(dir, device)
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
