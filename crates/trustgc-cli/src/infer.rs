//! `trustgc infer`: run a model on a batch tensor and write its latents and likelihoods
//! (or, with `--reverse`, map latents back to inputs).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use clap::Args;
use safetensors::tensor::TensorView;
use trustgc::weights::reference::model_from_reference_tensors;
use trustgc::weights::safetensors::model_from_tensors;
use trustgc::weights::safetensors::read_safetensors;
use trustgc::weights::{Tensor as RawTensor, Values as RawValues};
use trustgc_backend::{BackendTask, run_on};
use trustgc_core::flow::FlowInverse;
use trustgc_core::{GcConfig, GenerativeClassifier, Mode};

use crate::model_dir::{self, ModelRef};

type BoxError = Box<dyn std::error::Error>;

/// What `infer` refuses in its input tensors and outputs.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// An input value is NaN or infinite: the outputs would be NaN, not an answer.
    #[error("`{key}` in {path} holds a non-finite value ({value}) at flat index {index}")]
    NonFiniteInput {
        /// The input file.
        path: PathBuf,
        /// The tensor.
        key: String,
        /// The first bad value's flat index.
        index: usize,
        /// The value.
        value: f64,
    },
    /// An input tensor has a zero-sized dimension (a batch of no images or latents).
    #[error("`{key}` in {path} has shape {shape:?}: it holds no values")]
    Empty {
        /// The input file.
        path: PathBuf,
        /// The tensor.
        key: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// The model produced NaN or infinite values from finite inputs (inputs far outside
    /// what the model was trained on, e.g. latents of enormous norm with `--reverse`);
    /// nothing was written.
    #[error(
        "the model's output `{key}` holds {count} non-finite values (first at flat index {index}); nothing was written"
    )]
    NonFiniteOutput {
        /// The output tensor.
        key: String,
        /// How many values are not finite.
        count: usize,
        /// The first one's flat index.
        index: usize,
    },
}

/// `trustgc infer`.
#[derive(Args, Debug)]
pub struct InferArgs {
    /// A model folder (config.json + model.safetensors), a shipped model's name, a released
    /// model on the hub (`hub:beta_8`, `hub:OWNER/NAME/beta_8[@REV]`), an original `.pt`
    /// checkpoint, or a safetensors file of weights (trustgc or reference key names). For
    /// files give `--config`, else the released ImageNet architecture is assumed.
    #[arg(long)]
    weights: String,
    /// The architecture (a config.json) for a weights file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Input safetensors: `x` `[B, C, H, W]` (already normalized), or `z_fc` and `z_conv`
    /// with `--reverse`.
    #[arg(long)]
    input: PathBuf,
    /// Output safetensors.
    #[arg(long)]
    output: PathBuf,
    /// Map latents back to inputs.
    #[arg(long)]
    reverse: bool,
    /// `cpu`, `wgpu`, `wgpu:N` or `cuda:N` (default: $BURN_DEVICE, else cpu).
    #[arg(long)]
    device: Option<String>,
}

fn load_model<B: Backend>(
    args: &InferArgs,
    device: &B::Device,
) -> Result<(GcConfig, GenerativeClassifier<B>), BoxError> {
    match model_dir::resolve(&args.weights)? {
        ModelRef::Dir(dir) if !dir.is_dir() => {}
        model => return Ok(model.load(device)?),
    }
    let path = Path::new(&args.weights);
    let config = match &args.config {
        Some(file) => {
            let text = trustgc_io::read_text_capped(file, trustgc_io::Cap::JSON)?;
            GcConfig::from_json(&text).map_err(|source| trustgc::ModelDirError::Config {
                path: file.clone(),
                source,
            })?
        }
        None => GcConfig::imagenet(),
    };
    if path.extension().is_some_and(|e| e == "pt") {
        let model = trustgc::weights::reference::load_checkpoint::<B>(path, &config, device)?;
        return Ok((config, model));
    }
    let tensors = read_safetensors(path)?;
    let reference = tensors.keys().any(|k| k.starts_with("inn.module_list."));
    let model = if reference {
        model_from_reference_tensors(&config, &tensors, device)?
    } else {
        model_from_tensors(&config, &tensors, device)?
    };
    Ok((config, model))
}

fn input_tensor<B: Backend, const D: usize>(
    tensors: &HashMap<String, RawTensor>,
    key: &str,
    path: &Path,
    device: &B::Device,
) -> Result<Tensor<B, D>, BoxError> {
    let t = tensors
        .get(key)
        .ok_or_else(|| format!("{} holds no tensor `{key}`", path.display()))?;
    let RawValues::Float(values) = &t.values else {
        return Err(format!("`{key}` in {} must be a float tensor", path.display()).into());
    };
    if t.shape.len() != D {
        return Err(format!(
            "`{key}` in {} has shape {:?}; {D} dimensions are needed",
            path.display(),
            t.shape
        )
        .into());
    }
    if t.shape.contains(&0) {
        return Err(InferError::Empty {
            path: path.to_path_buf(),
            key: key.to_string(),
            shape: t.shape.clone(),
        }
        .into());
    }
    // Finite as float32 too: 1e39 in a float64 file would become infinite.
    let data: Vec<f32> = values.iter().map(|&v| v as f32).collect();
    if let Some(index) = data.iter().position(|v| !v.is_finite()) {
        return Err(InferError::NonFiniteInput {
            path: path.to_path_buf(),
            key: key.to_string(),
            index,
            value: values[index],
        }
        .into());
    }
    Ok(Tensor::from_data(
        TensorData::new(data, t.shape.clone()),
        device,
    ))
}

/// Writes the outputs, all finite, to `path`, which must not be one of `inputs`.
fn write(path: &Path, inputs: &[&Path], outputs: Vec<(&str, TensorData)>) -> Result<(), BoxError> {
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(outputs.len());
    for (name, d) in outputs {
        let d = d.convert::<f32>();
        let values = d.as_slice::<f32>().map_err(|e| format!("{name}: {e:?}"))?;
        let count = values.iter().filter(|v| !v.is_finite()).count();
        if let Some(index) = values.iter().position(|v| !v.is_finite()) {
            return Err(InferError::NonFiniteOutput {
                key: name.to_string(),
                count,
                index,
            }
            .into());
        }
        data.push((
            name.to_string(),
            d.shape.as_slice().to_vec(),
            d.as_bytes().to_vec(),
        ));
    }
    let views: Vec<(String, TensorView<'_>)> = data
        .iter()
        .map(|(n, s, b)| {
            Ok((
                n.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), b)?,
            ))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    trustgc_io::write_file(path, inputs, &safetensors::serialize(views, None)?)?;
    Ok(())
}

struct InferTask {
    args: InferArgs,
}

impl BackendTask for InferTask {
    type Output = Result<(), BoxError>;

    fn run<B: Backend>(self, device: B::Device) -> Self::Output {
        let args = self.args;
        // The output never replaces an input: the tensors, the weights (a file, or a model
        // folder's files) or the config.
        let weights = Path::new(&args.weights);
        let (weights_file, config_file) = (
            weights.join("model.safetensors"),
            weights.join("config.json"),
        );
        let mut inputs = vec![args.input.as_path(), weights, &weights_file, &config_file];
        inputs.extend(args.config.as_deref());
        let (config, model) = load_model::<B>(&args, &device)?;
        let tensors = read_safetensors(&args.input)?;
        if args.reverse {
            let z_fc: Tensor<B, 2> = input_tensor(&tensors, "z_fc", &args.input, &device)?;
            let z_conv: Tensor<B, 2> = input_tensor(&tensors, "z_conv", &args.input, &device)?;
            let (b1, l) = (z_fc.dims()[0], z_fc.dims()[1]);
            let (b2, c) = (z_conv.dims()[0], z_conv.dims()[1]);
            if b1 != b2 || l != config.n_loss_dims || c != config.conv_dims() {
                return Err(format!(
                    "z_fc {:?} and z_conv {:?} do not fit the model ([B, {}] and [B, {}])",
                    [b1, l],
                    [b2, c],
                    config.n_loss_dims,
                    config.conv_dims()
                )
                .into());
            }
            let FlowInverse { x, log_det } = model.flow.inverse(z_fc, z_conv, Mode::Eval);
            write(
                &args.output,
                &inputs,
                vec![
                    ("x", x.into_data()),
                    ("log_det_inverse", log_det.into_data()),
                ],
            )?;
        } else {
            let x: Tensor<B, 4> = input_tensor(&tensors, "x", &args.input, &device)?;
            model.check_input(&x.dims())?;
            let out = model.forward(x, Mode::Eval);
            let class_log_likelihoods = out.class_log_likelihoods();
            let logits = out.logits();
            write(
                &args.output,
                &inputs,
                vec![
                    ("z_fc", out.z_fc.into_data()),
                    ("z_conv", out.z_conv.into_data()),
                    ("log_det", out.log_det.into_data()),
                    ("logits", logits.into_data()),
                    ("class_log_likelihoods", class_log_likelihoods.into_data()),
                ],
            )?;
        }
        eprintln!("wrote {}", args.output.display());
        Ok(())
    }
}

/// `trustgc infer`.
pub fn infer(args: InferArgs) -> Result<(), BoxError> {
    let spec = crate::device(&args.device)?;
    run_on(&spec, InferTask { args })?
}
