//! The invertible network (the reference's `model.model`, a FrEIA `ReversibleGraphNet`).
//!
//! Execution order (REFERENCE.md §1): entry downsampling coupling → Haar → 1x1 slow
//! coupling → for each stage, a downsampling coupling (stride 2) or a slow coupling
//! (stride 1) followed by slow couplings → DCT pooling → split into the first
//! `n_loss_dims` features and the rest → random permutation of the first part.
//! `z_fc` is the permuted first part, `z_conv` the rest; `log_det` sums every node's
//! contribution per sample.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::config::{ConfigError, GcConfig};
use crate::layers::FeaturePermutation;
use crate::layers::batch_norm::BatchNorm2d;
use crate::layers::coupling::{DownCoupling, OutputStageInit, SlowCoupling};
use crate::layers::dct::DctPooling;
use crate::layers::haar::HaarDownsampling;
use crate::layers::subnet::{
    Bottleneck, Conv1x1Net, EntryLowResNet, EntryStridedNet, NormSettings,
};
use crate::layers::{BatchNorms, Mode};
use crate::rng::{Mt19937, legacy_permutation, permutation_from};

/// The entry downsampling coupling.
pub type EntryCoupling<B> = DownCoupling<B, EntryStridedNet<B>, EntryLowResNet<B>>;
/// A downsampling coupling with bottleneck subnets.
pub type StageDownCoupling<B> = DownCoupling<B, Bottleneck<B>, Bottleneck<B>>;
/// A slow coupling with a bottleneck subnet.
pub type StageSlowCoupling<B> = SlowCoupling<B, Bottleneck<B>>;

/// One stage of the invertible ResNet.
#[derive(Module, Debug)]
pub struct Stage<B: Backend> {
    /// The downsampling coupling that opens a stride-2 stage.
    pub down: Option<StageDownCoupling<B>>,
    /// The slow couplings (all blocks of a stride-1 stage; the rest of a stride-2 one).
    pub blocks: Vec<StageSlowCoupling<B>>,
}

/// The invertible network: input `[B, C, H, W]` ↔ `(z_fc [B, L], z_conv [B, D − L])`.
#[derive(Module, Debug)]
pub struct Flow<B: Backend> {
    /// Reference node 1, `Strided entry_flow`.
    pub entry: EntryCoupling<B>,
    /// Reference node 2, `downsampling entry_flow`.
    pub haar: HaarDownsampling<B>,
    /// Reference node 3, `downsampling entry_flow 1x1`.
    pub entry_1x1: SlowCoupling<B, Conv1x1Net<B>>,
    /// The ResNet stages.
    pub stages: Vec<Stage<B>>,
    /// DCT pooling of the final map.
    pub dct: DctPooling<B>,
    /// The permutation of the loss dimensions (`PERM_FC_0 1`).
    pub permute: FeaturePermutation<B>,
    /// Number of loss dimensions (`z_fc`).
    pub n_loss_dims: usize,
    /// Channels of the final map.
    pub final_channels: usize,
    /// Side of the final map.
    pub dct_size: usize,
}

/// The flow's outputs for a batch.
#[derive(Debug, Clone)]
pub struct FlowOutput<B: Backend> {
    /// `[batch, n_loss_dims]`.
    pub z_fc: Tensor<B, 2>,
    /// `[batch, D − n_loss_dims]`.
    pub z_conv: Tensor<B, 2>,
    /// `[batch]`, `log |det ∂z/∂x|` with the reference's DCT convention.
    pub log_det: Tensor<B, 1>,
}

/// One node's output, recorded by [`Flow::forward_traced`].
#[derive(Debug, Clone)]
pub struct NodeTrace<B: Backend> {
    /// The reference `module_list` index.
    pub index: usize,
    /// The node's outputs, each flattened to `[batch, numel]`.
    pub outputs: Vec<Tensor<B, 2>>,
    /// Raw subnet outputs flattened to `[batch, numel]`, named as the reference
    /// (`s`, `s_hi`, `s_lo`).
    pub subnet_outputs: Vec<(&'static str, Tensor<B, 2>)>,
    /// The node's log-det contribution `[batch]`.
    pub log_det: Tensor<B, 1>,
}

fn flat4<B: Backend>(x: &Tensor<B, 4>) -> Tensor<B, 2> {
    let [b, c, h, w] = x.dims();
    x.clone().reshape([b, c * h * w])
}

/// Draws the coupling permutations for a freshly built model: one numpy legacy generator
/// seeded once, as the reference's constructor draws them in sequence. Loading a
/// checkpoint replaces them.
struct PermutationSource {
    rng: Mt19937,
}

impl PermutationSource {
    fn next(&mut self, n: usize) -> Vec<usize> {
        permutation_from(&mut self.rng, n)
    }
}

impl<B: Backend> Flow<B> {
    /// Builds the flow of `config` with freshly initialized parameters.
    ///
    /// Convolution weights are initialized lazily: building allocates only the small
    /// fixed tensors until a parameter is used or loaded.
    ///
    /// # Errors
    /// [`ConfigError`] when the config fails [`GcConfig::validate`]; nothing is allocated.
    pub fn new(config: &GcConfig, device: &B::Device) -> Result<Self, ConfigError> {
        config.validate()?;
        let norm = NormSettings {
            momentum: config.bn_momentum,
            epsilon: config.bn_eps,
        };
        let mut perms = PermutationSource {
            rng: Mt19937::new(1234),
        };
        let mut output = |channels: usize| OutputStageInit {
            act_norm: config.act_norm,
            permutation: perms.next(channels),
        };
        let clamp = config.clamp;

        let mut channels = config.input_shape[0];
        let (c1, c2) = (channels - channels / 2, channels / 2);
        let entry = DownCoupling::new(
            channels,
            EntryStridedNet::new(c1, 8 * c2, config.base_width, norm, device),
            EntryLowResNet::new(4 * c2, 8 * c1, config.base_width, norm, device),
            clamp,
            &output(4 * channels),
            device,
        );
        channels *= 4;
        let haar = HaarDownsampling::new(channels, config.haar_rebalance, device);
        channels *= 4;
        let (c1, c2) = (channels - channels / 2, channels / 2);
        let entry_1x1 = SlowCoupling::new(
            channels,
            Conv1x1Net::new(c1, 2 * c2, config.entry_1x1_hidden, device),
            clamp,
            &output(channels),
            device,
        );

        let mut stages = Vec::with_capacity(config.planes.len());
        for stage in 0..config.planes.len() {
            let width = config.bottleneck_width(stage);
            let mut down = None;
            let mut blocks = Vec::new();
            for block in 0..config.blocks[stage] {
                let (c1, c2) = (channels - channels / 2, channels / 2);
                if block == 0 && config.strides[stage] == 2 {
                    down = Some(DownCoupling::new(
                        channels,
                        Bottleneck::new(c1, 8 * c2, width, 2, norm, device),
                        Bottleneck::new(4 * c2, 8 * c1, width, 1, norm, device),
                        clamp,
                        &output(4 * channels),
                        device,
                    ));
                    channels *= 4;
                } else {
                    blocks.push(SlowCoupling::new(
                        channels,
                        Bottleneck::new(c1, 2 * c2, width, 1, norm, device),
                        clamp,
                        &output(channels),
                        device,
                    ));
                }
            }
            stages.push(Stage { down, blocks });
        }

        let n = config.dct_size();
        Ok(Self {
            entry,
            haar,
            entry_1x1,
            stages,
            dct: DctPooling::new(n, config.dct_rebalance, device),
            permute: FeaturePermutation::new(
                &legacy_permutation(config.permute_seed, config.n_loss_dims),
                device,
            ),
            n_loss_dims: config.n_loss_dims,
            final_channels: channels,
            dct_size: n,
        })
    }

    /// Runs the flow.
    ///
    /// # Shapes
    /// - `x`: `[batch, C, H, W]`
    ///
    /// # Returns
    /// `z_fc [batch, L]`, `z_conv [batch, D − L]`, `log_det [batch]`.
    pub fn forward(&self, x: Tensor<B, 4>, mode: Mode) -> FlowOutput<B> {
        self.run_forward(x, mode, None)
    }

    /// [`forward`](Self::forward) that also records every node's output and log-det,
    /// keyed by the reference's `module_list` index.
    pub fn forward_traced(
        &self,
        x: Tensor<B, 4>,
        mode: Mode,
    ) -> (FlowOutput<B>, Vec<NodeTrace<B>>) {
        let mut trace = Vec::new();
        let out = self.run_forward(x, mode, Some(&mut trace));
        (out, trace)
    }

    fn run_forward(
        &self,
        x: Tensor<B, 4>,
        mode: Mode,
        mut trace: Option<&mut Vec<NodeTrace<B>>>,
    ) -> FlowOutput<B> {
        let tracing = trace.is_some();
        let mut index = 1;
        let mut record = |outputs: Vec<Tensor<B, 2>>,
                          subnets: Vec<(&'static str, Tensor<B, 2>)>,
                          log_det: &Tensor<B, 1>,
                          index: usize| {
            if let Some(trace) = trace.as_deref_mut() {
                trace.push(NodeTrace {
                    index,
                    outputs,
                    subnet_outputs: subnets,
                    log_det: log_det.clone(),
                });
            }
        };

        let ((x, mut log_det), (a1, a2)) = self.entry.forward_with_subnet_outputs(x, mode);
        if tracing {
            record(
                vec![flat4(&x)],
                vec![("s_hi", flat4(&a1)), ("s_lo", flat4(&a2))],
                &log_det,
                index,
            );
        }
        index += 1;
        let (x, ld) = self.haar.forward(x);
        if tracing {
            record(vec![flat4(&x)], vec![], &ld, index);
        }
        log_det = log_det.add(ld);
        index += 1;
        let ((mut x, ld), a) = self.entry_1x1.forward_with_subnet_output(x, mode);
        if tracing {
            record(vec![flat4(&x)], vec![("s", flat4(&a))], &ld, index);
        }
        log_det = log_det.add(ld);
        index += 1;

        for stage in &self.stages {
            if let Some(down) = &stage.down {
                let ((y, ld), (a1, a2)) = down.forward_with_subnet_outputs(x, mode);
                if tracing {
                    record(
                        vec![flat4(&y)],
                        vec![("s_hi", flat4(&a1)), ("s_lo", flat4(&a2))],
                        &ld,
                        index,
                    );
                }
                x = y;
                log_det = log_det.add(ld);
                index += 1;
            }
            for block in &stage.blocks {
                let ((y, ld), a) = block.forward_with_subnet_output(x, mode);
                if tracing {
                    record(vec![flat4(&y)], vec![("s", flat4(&a))], &ld, index);
                }
                x = y;
                log_det = log_det.add(ld);
                index += 1;
            }
        }

        // index now points at out_fc; DCT, out_conv, PERM and split follow.
        let (dct_index, perm_index, split_index) = (index + 1, index + 3, index + 4);
        let (t, ld) = self.dct.forward(x);
        if tracing {
            record(vec![t.clone()], vec![], &ld, dct_index);
        }
        log_det = log_det.add(ld);
        let total = t.dims()[1];
        let z_fc_raw = t.clone().narrow(1, 0, self.n_loss_dims);
        let z_conv = t.narrow(1, self.n_loss_dims, total - self.n_loss_dims);
        let z_fc = self.permute.forward(z_fc_raw.clone());
        if tracing {
            let zeros = log_det.zeros_like();
            record(vec![z_fc_raw, z_conv.clone()], vec![], &zeros, split_index);
            record(vec![z_fc.clone()], vec![], &zeros, perm_index);
        }
        FlowOutput {
            z_fc,
            z_conv,
            log_det,
        }
    }

    /// Inverts the flow.
    ///
    /// # Shapes
    /// - `z_fc`: `[batch, L]`, `z_conv`: `[batch, D − L]`
    /// - output: `[batch, C, H, W]`, log-det `[batch]`
    ///
    /// # Returns
    /// `(x, log_det_inv)`. `log_det_inv` is the sum of the nodes' inverse log-dets; by the
    /// reference's DCT quirk it equals `−log_det(x) + 2·DCT term`.
    pub fn inverse(
        &self,
        z_fc: Tensor<B, 2>,
        z_conv: Tensor<B, 2>,
        mode: Mode,
    ) -> (Tensor<B, 4>, Tensor<B, 1>) {
        let z_fc_raw = self.permute.inverse(z_fc);
        let t = Tensor::cat(vec![z_fc_raw, z_conv], 1);
        let (mut x, mut log_det) = self.dct.inverse(t, self.final_channels, self.dct_size);
        for stage in self.stages.iter().rev() {
            for block in stage.blocks.iter().rev() {
                let (y, ld) = block.inverse(x, mode);
                x = y;
                log_det = log_det.add(ld);
            }
            if let Some(down) = &stage.down {
                let (y, ld) = down.inverse(x, mode);
                x = y;
                log_det = log_det.add(ld);
            }
        }
        let (x, ld) = self.entry_1x1.inverse(x, mode);
        log_det = log_det.add(ld);
        let (x, ld) = self.haar.inverse(x);
        log_det = log_det.add(ld);
        let (x, ld) = self.entry.inverse(x, mode);
        (x, log_det.add(ld))
    }
}

impl<B: Backend> BatchNorms<B> for Flow<B> {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm2d<B>)) {
        self.entry.for_each_batch_norm(f);
        self.entry_1x1.for_each_batch_norm(f);
        for stage in &mut self.stages {
            if let Some(down) = &mut stage.down {
                down.for_each_batch_norm(f);
            }
            for block in &mut stage.blocks {
                block.for_each_batch_norm(f);
            }
        }
    }
}
