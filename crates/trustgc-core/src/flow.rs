//! The invertible network (the reference's `model.model`, a FrEIA `ReversibleGraphNet`).
//!
//! The flow is the ordered list of its [`FlowPlan`]'s blocks ([`Flow::steps`]), each an
//! [`Invertible`] step, followed by DCT pooling, the split into the first `n_loss_dims`
//! features and the rest, and a random permutation of the first part. `z_fc` is the
//! permuted first part, `z_conv` the rest; `log_det` sums every step's contribution per
//! sample. The forward pass is a fold over the steps, the inverse the reversed fold.

use burn::module::Module;
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;

use crate::config::{ConfigError, GcConfig};
use crate::layers::batch_norm::BatchNorm2d;
use crate::layers::coupling::{DownCoupling, DownCouplingConfig, SlowCoupling, SlowCouplingConfig};
use crate::layers::dct::{DctPooling, DctPoolingConfig};
use crate::layers::haar::{HaarDownsampling, HaarDownsamplingConfig};
use crate::layers::subnet::{Bottleneck, Conv1x1Net, EntryLowResNet, EntryStridedNet};
use crate::layers::{
    BatchNorms, FeaturePermutation, FeaturePermutationConfig, FlowStep, Invertible, Mode,
    SubnetOutput, flatten_batch,
};
use crate::plan::{BlockLayers, FlowPlan};
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
    /// The plan the flow was built from (node numbers, shapes, parameter paths).
    pub plan: FlowPlan,
}

/// The flow's inverse for a batch.
#[derive(Debug, Clone)]
pub struct FlowInverse<B: Backend> {
    /// `[batch, C, H, W]`.
    pub x: Tensor<B, 4>,
    /// `[batch]`, the sum of the steps' inverse log-dets; by the reference's DCT quirk it
    /// equals `−log_det(x) + 2·(DCT term)`.
    pub log_det: Tensor<B, 1>,
}

/// A step of the flow with its node number in the reference graph.
pub struct StepRef<'a, B: Backend> {
    /// The node index `N` (`inn.module_list.N`).
    pub node: usize,
    /// The step.
    pub step: &'a dyn FlowStep<B>,
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

/// One node's output, given to the observer of [`Flow::forward_observed`].
#[derive(Debug, Clone)]
pub struct NodeTrace<B: Backend> {
    /// The reference `module_list` index.
    pub index: usize,
    /// The node's outputs, each flattened to `[batch, numel]`.
    pub outputs: Vec<Tensor<B, 2>>,
    /// Raw subnet outputs flattened to `[batch, numel]`, named as the reference
    /// (`s`, `s_hi`, `s_lo`).
    pub subnet_outputs: Vec<SubnetOutput<B>>,
    /// The node's log-det contribution `[batch]`.
    pub log_det: Tensor<B, 1>,
}

/// The flow's blocks in execution order as `&dyn FlowStep` or `&mut dyn FlowStep` (the
/// one place that knows how the module's fields line up with the plan's blocks).
macro_rules! blocks_in_order {
    ($flow:expr, $($borrow:tt)+) => {{
        let mut steps: Vec<$($borrow)+ dyn FlowStep<B>> =
            vec![$($borrow)+ $flow.entry, $($borrow)+ $flow.haar, $($borrow)+ $flow.entry_1x1];
        for stage in $($borrow)+ $flow.stages {
            if let Some(down) = $($borrow)+ stage.down {
                steps.push(down);
            }
            for block in $($borrow)+ stage.blocks {
                steps.push(block);
            }
        }
        debug_assert_eq!(steps.len(), $flow.plan.blocks.len());
        steps
    }};
}

/// The coupling configs of a freshly built model. Their output permutations come from one
/// numpy legacy generator seeded once, as the reference's constructor draws them in
/// sequence; loading a checkpoint replaces them.
struct CouplingConfigs {
    rng: Mt19937,
    clamp: f64,
    act_norm: f64,
}

impl CouplingConfigs {
    fn slow(&mut self, channels: usize) -> SlowCouplingConfig {
        SlowCouplingConfig::new(channels, permutation_from(&mut self.rng, channels))
            .with_clamp(self.clamp)
            .with_act_norm(self.act_norm)
    }

    fn down(&mut self, channels: usize) -> DownCouplingConfig {
        DownCouplingConfig::new(channels, permutation_from(&mut self.rng, 4 * channels))
            .with_clamp(self.clamp)
            .with_act_norm(self.act_norm)
    }
}

impl<B: Backend> Flow<B> {
    /// Builds the flow of `config` with freshly initialized parameters, block by block
    /// from its [`plan`](GcConfig::plan).
    ///
    /// Convolution weights are initialized lazily: building allocates only the small
    /// fixed tensors until a parameter is used or loaded.
    ///
    /// # Errors
    /// [`ConfigError`] when the config fails [`GcConfig::validate`]; nothing is allocated.
    pub fn new(config: &GcConfig, device: &B::Device) -> Result<Self, ConfigError> {
        config.validate()?;
        let plan = config.plan();
        let mut couplings = CouplingConfigs {
            rng: Mt19937::new(1234),
            clamp: config.clamp,
            act_norm: config.act_norm,
        };
        let (mut entry, mut haar, mut entry_1x1) = (None, None, None);
        let mut stages: Vec<Stage<B>> = (0..config.planes.len())
            .map(|_| Stage {
                down: None,
                blocks: Vec::new(),
            })
            .collect();
        for block in &plan.blocks {
            let channels = block.channels;
            match &block.layers {
                BlockLayers::EntryDown { strided, low_res } => {
                    let coupling = couplings.down(channels);
                    entry = Some(coupling.init(
                        strided.init_strided(device),
                        low_res.init_low_res(device),
                        device,
                    ));
                }
                BlockLayers::Haar => {
                    haar = Some(
                        HaarDownsamplingConfig::new(channels)
                            .with_rebalance(config.haar_rebalance)
                            .init(device),
                    );
                }
                BlockLayers::Entry1x1 { subnet } => {
                    entry_1x1 = Some(couplings.slow(channels).init(subnet.init(device), device));
                }
                BlockLayers::Down {
                    stage,
                    strided,
                    low_res,
                } => {
                    let coupling = couplings.down(channels);
                    stages[*stage].down =
                        Some(coupling.init(strided.init(device), low_res.init(device), device));
                }
                BlockLayers::Slow { stage, subnet, .. } => {
                    let coupling = couplings.slow(channels).init(subnet.init(device), device);
                    stages[*stage].blocks.push(coupling);
                }
            }
        }
        let missing = "every plan has an entry coupling, Haar and a 1x1 coupling";
        Ok(Self {
            entry: entry.expect(missing),
            haar: haar.expect(missing),
            entry_1x1: entry_1x1.expect(missing),
            stages,
            dct: DctPoolingConfig::new(plan.final_channels, plan.final_side)
                .with_rebalance(config.dct_rebalance)
                .init(device),
            permute: FeaturePermutationConfig::new(legacy_permutation(
                config.permute_seed,
                config.n_loss_dims,
            ))
            .init(device),
            plan,
        })
    }

    /// The invertible blocks in execution order, each with its reference node number.
    pub fn steps(&self) -> Vec<StepRef<'_, B>> {
        blocks_in_order!(self, &)
            .into_iter()
            .zip(&self.plan.blocks)
            .map(|(step, spec)| StepRef {
                node: spec.node,
                step,
            })
            .collect()
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

    /// [`forward`](Self::forward) that hands every node's output and log-det to
    /// `observer`, in execution order, keyed by the reference's node numbers.
    pub fn forward_observed(
        &self,
        x: Tensor<B, 4>,
        mode: Mode,
        observer: &mut dyn FnMut(NodeTrace<B>),
    ) -> FlowOutput<B> {
        self.run_forward(x, mode, Some(observer))
    }

    /// [`forward_observed`](Self::forward_observed) collecting the traces.
    pub fn forward_traced(
        &self,
        x: Tensor<B, 4>,
        mode: Mode,
    ) -> (FlowOutput<B>, Vec<NodeTrace<B>>) {
        let mut trace = Vec::new();
        let out = self.forward_observed(x, mode, &mut |node| trace.push(node));
        (out, trace)
    }

    fn run_forward(
        &self,
        x: Tensor<B, 4>,
        mode: Mode,
        mut observer: Option<&mut dyn FnMut(NodeTrace<B>)>,
    ) -> FlowOutput<B> {
        let batch = x.dims()[0];
        let mut log_det = Tensor::zeros([batch], (&x.device(), x.dtype()));
        let mut x = x;
        for StepRef { node, step } in self.steps() {
            let (y, step_log_det) = match observer.as_deref_mut() {
                Some(observe) => {
                    let (y, step_log_det, subnets) = step.forward_traced(x, mode);
                    observe(NodeTrace {
                        index: node,
                        outputs: vec![flatten_batch(&y)],
                        subnet_outputs: subnets,
                        log_det: step_log_det.clone(),
                    });
                    (y, step_log_det)
                }
                None => step.forward(x, mode),
            };
            x = y;
            log_det = log_det.add(step_log_det);
        }

        let (t, dct_log_det) = self.dct.forward(x, mode);
        log_det = log_det.add(dct_log_det.clone());
        let total = t.dims()[1];
        let n_loss_dims = self.plan.n_loss_dims;
        let z_fc_raw = t.clone().narrow(1, 0, n_loss_dims);
        let z_conv = t.clone().narrow(1, n_loss_dims, total - n_loss_dims);
        let (z_fc, permute_log_det) = self.permute.forward(z_fc_raw.clone(), mode);
        if let Some(observe) = observer {
            let zeros = permute_log_det.zeros_like();
            observe(NodeTrace {
                index: self.plan.dct_node,
                outputs: vec![t],
                subnet_outputs: Vec::new(),
                log_det: dct_log_det,
            });
            observe(NodeTrace {
                index: self.plan.split_node,
                outputs: vec![z_fc_raw, z_conv.clone()],
                subnet_outputs: Vec::new(),
                log_det: zeros,
            });
            observe(NodeTrace {
                index: self.plan.permute_node,
                outputs: vec![z_fc.clone()],
                subnet_outputs: Vec::new(),
                log_det: permute_log_det.clone(),
            });
        }
        FlowOutput {
            z_fc,
            z_conv,
            log_det: log_det.add(permute_log_det),
        }
    }

    /// Inverts the flow: the permutation, the DCT, then the steps in reverse order.
    ///
    /// # Shapes
    /// - `z_fc`: `[batch, L]`, `z_conv`: `[batch, D − L]`
    /// - output: `[batch, C, H, W]`, log-det `[batch]`
    ///
    /// # Returns
    /// The input and the sum of the steps' inverse log-dets ([`FlowInverse`]).
    pub fn inverse(&self, z_fc: Tensor<B, 2>, z_conv: Tensor<B, 2>, mode: Mode) -> FlowInverse<B> {
        let (z_fc_raw, mut log_det) = self.permute.inverse(z_fc, mode);
        let t = Tensor::cat(vec![z_fc_raw, z_conv], 1);
        let (mut x, dct_log_det) = self.dct.inverse(t, mode);
        log_det = log_det.add(dct_log_det);
        for StepRef { step, .. } in self.steps().into_iter().rev() {
            let (y, step_log_det) = step.inverse(x, mode);
            x = y;
            log_det = log_det.add(step_log_det);
        }
        FlowInverse { x, log_det }
    }
}

impl<B: Backend> BatchNorms<B> for Flow<B> {
    fn for_each_batch_norm(&mut self, f: &mut dyn FnMut(&mut BatchNorm2d<B>)) {
        for step in blocks_in_order!(self, &mut) {
            step.for_each_batch_norm(f);
        }
    }
}
