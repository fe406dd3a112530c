//! [`FlowPlan`]: the network of a [`GcConfig`], derived once.
//!
//! The plan lists the flow's invertible blocks in execution order, each with its kind, its
//! input shape, the configs of its subnets, the node number it has in the reference graph
//! and the path of its parameters. It drives everything that depends on the architecture:
//! building the [`Flow`](crate::flow::Flow), the checkpoint key table
//! ([`crate::keymap::key_table`]), the parameter count ([`FlowPlan::num_params`]) and the
//! reference node list ([`GcConfig::nodes`]).
//!
//! # The reference graph
//! The reference builds FrEIA's `ReversibleGraphNet` from the node list
//! `[input] + blocks + [out_fc] + [DCT, out_conv, PERM] + [split]`; a node's position in
//! that list is the `N` of its checkpoint keys `inn.module_list.N.…`. The blocks are:
//! the entry downsampling coupling (node 1), Haar downsampling (2), a slow coupling with a
//! 1x1 subnet (3), then per stage a downsampling coupling (stride 2) or a slow coupling
//! (stride 1) followed by slow couplings. The flow runs the blocks in that order, then the
//! DCT, the split into `z_fc` (the first `n_loss_dims` values) and `z_conv`, and finally
//! the random permutation of `z_fc`.

use crate::config::{ConfigError, GcConfig, MAX_PARAMS};
use crate::keymap::key_table_of_plan;
use crate::layers::coupling::split_channels;
use crate::layers::subnet::{BottleneckConfig, Conv1x1NetConfig, EntryNetConfig, SubnetLayout};

/// The most blocks a flow may have over all stages.
pub const MAX_BLOCKS: usize = 4096;

/// What a block is, with the configs of its subnets.
#[derive(Clone, Debug)]
pub enum BlockLayers {
    /// The entry downsampling coupling (reference node `Strided entry_flow`).
    EntryDown {
        /// `s_hi`, stride 2.
        strided: EntryNetConfig,
        /// `s_lo`.
        low_res: EntryNetConfig,
    },
    /// Haar downsampling (`downsampling entry_flow`).
    Haar,
    /// The slow coupling with the 1x1 subnet after Haar (`downsampling entry_flow 1x1`).
    Entry1x1 {
        /// `s`.
        subnet: Conv1x1NetConfig,
    },
    /// The downsampling coupling opening a stride-2 stage.
    Down {
        /// Stage index (0-based).
        stage: usize,
        /// `s_hi`, stride 2.
        strided: BottleneckConfig,
        /// `s_lo`.
        low_res: BottleneckConfig,
    },
    /// A slow coupling with a bottleneck subnet, block `block` (0-based, counting the
    /// stage's downsampling block) of stage `stage`.
    Slow {
        /// Stage index (0-based).
        stage: usize,
        /// Block index within the stage (0-based).
        block: usize,
        /// `s`.
        subnet: BottleneckConfig,
    },
}

/// One invertible block of the flow.
#[derive(Clone, Debug)]
pub struct BlockSpec {
    /// The node's index `N` in the reference graph (`inn.module_list.N`).
    pub node: usize,
    /// The reference's node name (with its trailing spaces).
    pub name: String,
    /// What the block is.
    pub layers: BlockLayers,
    /// Input channels.
    pub channels: usize,
    /// Input side (height = width).
    pub side: usize,
    /// The path of the block's parameters in [`GenerativeClassifier`](crate::GenerativeClassifier),
    /// e.g. `flow.stages.1.down`.
    pub path: String,
}

/// A subnet of a block: reference name (`s`, `s_hi`, `s_lo`), our field and its layers.
pub type SubnetOfBlock = (&'static str, &'static str, SubnetLayout);

impl BlockSpec {
    /// Whether the block halves the resolution and quadruples the channels.
    pub fn downsamples(&self) -> bool {
        matches!(
            self.layers,
            BlockLayers::EntryDown { .. } | BlockLayers::Haar | BlockLayers::Down { .. }
        )
    }

    /// Whether the block is an affine coupling (it has an act-norm + permutation stage).
    pub fn is_coupling(&self) -> bool {
        !matches!(self.layers, BlockLayers::Haar)
    }

    /// `[channels, side, side]` of the input.
    pub fn input_shape(&self) -> [usize; 3] {
        [self.channels, self.side, self.side]
    }

    /// `[channels, side, side]` of the output.
    pub fn output_shape(&self) -> [usize; 3] {
        if self.downsamples() {
            [4 * self.channels, self.side / 2, self.side / 2]
        } else {
            self.input_shape()
        }
    }

    /// The block's subnets with their layers, in the reference's state-dict order.
    pub fn subnets(&self) -> Vec<SubnetOfBlock> {
        match &self.layers {
            BlockLayers::EntryDown { strided, low_res } => vec![
                ("s_hi", "subnet_strided", strided.strided_layout()),
                ("s_lo", "subnet_low_res", low_res.low_res_layout()),
            ],
            BlockLayers::Haar => Vec::new(),
            BlockLayers::Entry1x1 { subnet } => vec![("s", "subnet", subnet.layout())],
            BlockLayers::Down {
                strided, low_res, ..
            } => vec![
                ("s_hi", "subnet_strided", strided.layout()),
                ("s_lo", "subnet_low_res", low_res.layout()),
            ],
            BlockLayers::Slow { subnet, .. } => vec![("s", "subnet", subnet.layout())],
        }
    }
}

/// The flow of a [`GcConfig`]: its blocks and the nodes after them.
#[derive(Clone, Debug)]
pub struct FlowPlan {
    /// The invertible blocks in execution order.
    pub blocks: Vec<BlockSpec>,
    /// Node index of `out_fc` (an output node, no module).
    pub out_fc_node: usize,
    /// Node index of the DCT pooling.
    pub dct_node: usize,
    /// Node index of `out_conv` (an output node, no module).
    pub out_conv_node: usize,
    /// Node index of the permutation of the loss dimensions.
    pub permute_node: usize,
    /// Node index of the split into `z_fc` and `z_conv`.
    pub split_node: usize,
    /// Channels of the final map the DCT pools.
    pub final_channels: usize,
    /// Side of the final map.
    pub final_side: usize,
    /// `D`, the latent dimension.
    pub total_dims: usize,
    /// `L`, the loss dimensions (`z_fc`).
    pub n_loss_dims: usize,
}

fn overflow(what: &'static str) -> ConfigError {
    ConfigError::Overflow { what }
}

impl FlowPlan {
    /// Derives the plan of `config`, with checked arithmetic. Called by
    /// [`GcConfig::validate`] after the per-field checks; use [`GcConfig::plan`] on a
    /// validated config.
    pub(crate) fn derive(config: &GcConfig) -> Result<Self, ConfigError> {
        let total_blocks = config
            .blocks
            .iter()
            .try_fold(0usize, |acc, &b| acc.checked_add(b))
            .ok_or(overflow("block count"))?;
        if total_blocks > MAX_BLOCKS {
            return Err(ConfigError::Invalid {
                field: "blocks",
                value: format!("{total_blocks} blocks in all"),
                requirement: "a flow has at most 4096 blocks",
            });
        }
        let [c, h, w] = config.input_shape;
        let total_dims = c
            .checked_mul(h)
            .and_then(|v| v.checked_mul(w))
            .ok_or(overflow("input size"))?;
        // Downsampling keeps channels · side² = D, so no block has more than D channels and
        // no subnet more than 4·D: checking 16·D once keeps every size below in range.
        total_dims.checked_mul(16).ok_or(overflow("input size"))?;
        let (momentum, epsilon) = (config.bn_momentum, config.bn_eps);
        let [mut channels, mut side, _] = config.input_shape;
        let mut blocks = Vec::with_capacity(total_blocks + 3);
        let mut push = |name: String, layers: BlockLayers, path: String, ch: usize, sd: usize| {
            blocks.push(BlockSpec {
                node: blocks.len() + 1,
                name,
                layers,
                channels: ch,
                side: sd,
                path,
            });
        };

        let (c1, c2) = split_channels(channels);
        let hidden = config.base_width;
        push(
            "Strided entry_flow".into(),
            BlockLayers::EntryDown {
                strided: EntryNetConfig::new(c1, 8 * c2, hidden)
                    .with_momentum(momentum)
                    .with_epsilon(epsilon),
                low_res: EntryNetConfig::new(4 * c2, 8 * c1, hidden)
                    .with_momentum(momentum)
                    .with_epsilon(epsilon),
            },
            "flow.entry".into(),
            channels,
            side,
        );
        (channels, side) = (4 * channels, side / 2);
        push(
            "downsampling entry_flow".into(),
            BlockLayers::Haar,
            "flow.haar".into(),
            channels,
            side,
        );
        (channels, side) = (4 * channels, side / 2);
        let (c1, c2) = split_channels(channels);
        push(
            "downsampling entry_flow 1x1".into(),
            BlockLayers::Entry1x1 {
                subnet: Conv1x1NetConfig::new(c1, 2 * c2, config.entry_1x1_hidden),
            },
            "flow.entry_1x1".into(),
            channels,
            side,
        );
        for stage in 0..config.planes.len() {
            let width = config.bottleneck_width(stage);
            let bottleneck = |cin: usize, cout: usize, stride: usize| {
                BottleneckConfig::new(cin, cout, width)
                    .with_stride(stride)
                    .with_momentum(momentum)
                    .with_epsilon(epsilon)
            };
            let mut slow_blocks = 0;
            for block in 0..config.blocks[stage] {
                let (c1, c2) = split_channels(channels);
                if block == 0 && config.strides[stage] == 2 {
                    push(
                        "Strided entry_flow".into(),
                        BlockLayers::Down {
                            stage,
                            strided: bottleneck(c1, 8 * c2, 2),
                            low_res: bottleneck(4 * c2, 8 * c1, 1),
                        },
                        format!("flow.stages.{stage}.down"),
                        channels,
                        side,
                    );
                    (channels, side) = (4 * channels, side / 2);
                } else {
                    push(
                        format!("middle_flow {}_{} ", stage + 1, block + 1),
                        BlockLayers::Slow {
                            stage,
                            block,
                            subnet: bottleneck(c1, 2 * c2, 1),
                        },
                        format!("flow.stages.{stage}.blocks.{slow_blocks}"),
                        channels,
                        side,
                    );
                    slow_blocks += 1;
                }
            }
        }
        let out_fc_node = blocks.len() + 1;
        Ok(Self {
            blocks,
            out_fc_node,
            dct_node: out_fc_node + 1,
            out_conv_node: out_fc_node + 2,
            permute_node: out_fc_node + 3,
            split_node: out_fc_node + 4,
            final_channels: channels,
            final_side: side,
            total_dims,
            n_loss_dims: config.n_loss_dims,
        })
    }

    /// Number of values in every tensor the model holds and the reference saves
    /// (parameters, BatchNorm statistics and counters, fixed tensors, class means), in
    /// trustgc's shapes; `None` on overflow.
    pub fn checked_num_params(&self, config: &GcConfig) -> Option<usize> {
        key_table_of_plan(self, config)
            .iter()
            .try_fold(0usize, |acc, row| {
                let numel = row
                    .shape
                    .iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(d))?;
                acc.checked_add(numel)
            })
    }

    /// [`checked_num_params`](Self::checked_num_params) of a validated config.
    pub fn num_params(&self, config: &GcConfig) -> usize {
        self.checked_num_params(config)
            .expect("a validated config has a parameter count below MAX_PARAMS")
    }
}

impl GcConfig {
    /// The flow's plan. Call on a validated config ([`GcConfig::validate`]).
    ///
    /// # Panics
    /// When the config fails validation.
    pub fn plan(&self) -> FlowPlan {
        FlowPlan::derive(self).expect("plan() needs a validated GcConfig")
    }

    /// Validates the plan's parameter count against [`MAX_PARAMS`].
    pub(crate) fn check_plan(&self) -> Result<FlowPlan, ConfigError> {
        let plan = FlowPlan::derive(self)?;
        let params = plan
            .checked_num_params(self)
            .ok_or(overflow("parameter count"))?;
        if params > MAX_PARAMS {
            return Err(ConfigError::TooLarge {
                params,
                max: MAX_PARAMS,
            });
        }
        Ok(plan)
    }
}
