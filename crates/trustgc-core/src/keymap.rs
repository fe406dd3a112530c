//! The one declared translation between the reference's checkpoint keys and trustgc's
//! parameter paths.
//!
//! The reference saves `{'inn': model.model.state_dict(), 'mu', 'mu_t', 'mu_m'}`; its flow
//! keys are `inn.module_list.N.<module keys>` with `N` the node's position in the list
//! given to FrEIA's `ReversibleGraphNet` (REFERENCE.md §1-2, [`GcConfig::nodes`]).
//! [`key_table`] lists every tensor of a model of a given config: reference key, its
//! shape in the reference file, our path, and how the tensor is translated. It is built
//! from the small per-module tables below, which are the whole mapping; nothing else in
//! trustgc knows a reference key.

use crate::config::{GcConfig, NodeKind};

/// How a reference tensor becomes ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transform {
    /// Same values, same shape.
    Identity,
    /// Same values in the same order, another shape (e.g. `[1, C, 1, 1]` → `[C]`).
    Reshape,
    /// A `[C, C, 1, 1]` permutation matrix `w` becomes the index vector `p` `[C]` with
    /// `w[i, p[i]] = 1` (so that `conv1x1(v, w)[:, i] = v[:, p[i]]`).
    PermutationMatrix,
}

/// What a tensor is, which decides its dtype and checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Trained by gradient descent.
    Trainable,
    /// BatchNorm running statistics.
    Buffer,
    /// BatchNorm `num_batches_tracked` (an int64 scalar in the reference).
    Counter,
    /// A fixed tensor derived from the architecture (permutations, Haar, DCT, unshuffle
    /// kernels); checked against the closed form on import.
    Fixed(FixedKind),
}

/// The fixed tensors, by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FixedKind {
    /// A channel permutation (`w` or `w_inv`).
    Permutation,
    /// The inverse of the permutation at the same node (`w_inv`).
    InversePermutation,
    /// One-hot 2x2 pixel-unshuffle kernels (`reshape_kernels.K`).
    UnshuffleKernels,
    /// Haar kernels (`haar_weights`).
    HaarKernels,
    /// The DCT matrix (`weight`).
    DctWeight,
    /// Its inverse (`inv_weight`).
    DctInverseWeight,
}

/// One row of the key table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyMapping {
    /// Key in the reference checkpoint, e.g. `inn.module_list.4.s.2.weight`.
    pub reference: String,
    /// Shape in the reference checkpoint (`[]` for a scalar).
    pub reference_shape: Vec<usize>,
    /// Our parameter path, e.g. `flow.blocks...conv_reduce.weight`.
    pub ours: String,
    /// Our shape.
    pub shape: Vec<usize>,
    /// How the reference tensor becomes ours.
    pub transform: Transform,
    /// What the tensor is.
    pub role: Role,
}

/// A layer inside a subnet, by kind.
#[derive(Clone, Copy)]
enum Layer {
    /// BatchNorm over `channels`.
    Norm(usize),
    /// Convolution `[out, in, k, k]`, with or without bias.
    Conv {
        cin: usize,
        cout: usize,
        kernel: usize,
        bias: bool,
    },
}

/// `(PyTorch Sequential index, our field, layer)` of each subnet kind.
type SubnetTable = Vec<(&'static str, &'static str, Layer)>;

fn bottleneck_table(cin: usize, cout: usize, width: usize) -> SubnetTable {
    use Layer::*;
    vec![
        ("0", "bn_in", Norm(cin)),
        (
            "2",
            "conv_reduce",
            Conv {
                cin,
                cout: width,
                kernel: 1,
                bias: false,
            },
        ),
        ("3", "bn_reduce", Norm(width)),
        (
            "5",
            "conv_spatial",
            Conv {
                cin: width,
                cout: width,
                kernel: 3,
                bias: false,
            },
        ),
        ("6", "bn_spatial", Norm(width)),
        (
            "8",
            "conv_expand",
            Conv {
                cin: width,
                cout: 4 * width,
                kernel: 1,
                bias: false,
            },
        ),
        ("9", "bn_expand", Norm(4 * width)),
        (
            "11",
            "conv_out",
            Conv {
                cin: 4 * width,
                cout,
                kernel: 1,
                bias: true,
            },
        ),
    ]
}

fn entry_strided_table(cin: usize, cout: usize, hidden: usize) -> SubnetTable {
    use Layer::*;
    vec![
        (
            "0",
            "conv_in",
            Conv {
                cin,
                cout: hidden,
                kernel: 3,
                bias: false,
            },
        ),
        ("1", "bn_in", Norm(hidden)),
        (
            "3",
            "conv_strided",
            Conv {
                cin: hidden,
                cout: hidden,
                kernel: 3,
                bias: false,
            },
        ),
        ("4", "bn_strided", Norm(hidden)),
        (
            "6",
            "conv_out",
            Conv {
                cin: hidden,
                cout,
                kernel: 1,
                bias: true,
            },
        ),
    ]
}

fn entry_low_res_table(cin: usize, cout: usize, hidden: usize) -> SubnetTable {
    use Layer::*;
    vec![
        (
            "0",
            "conv_in",
            Conv {
                cin,
                cout: hidden,
                kernel: 3,
                bias: false,
            },
        ),
        ("1", "bn_in", Norm(hidden)),
        (
            "3",
            "conv_out",
            Conv {
                cin: hidden,
                cout,
                kernel: 1,
                bias: false,
            },
        ),
    ]
}

fn conv_1x1_table(cin: usize, cout: usize, hidden: usize) -> SubnetTable {
    use Layer::*;
    vec![
        (
            "0",
            "conv_in",
            Conv {
                cin,
                cout: hidden,
                kernel: 1,
                bias: true,
            },
        ),
        (
            "2",
            "conv_out",
            Conv {
                cin: hidden,
                cout,
                kernel: 1,
                bias: true,
            },
        ),
    ]
}

/// Collects rows with a common reference prefix and path prefix.
struct Rows<'a> {
    rows: &'a mut Vec<KeyMapping>,
}

impl Rows<'_> {
    fn push(
        &mut self,
        reference: String,
        reference_shape: Vec<usize>,
        ours: String,
        shape: Vec<usize>,
        transform: Transform,
        role: Role,
    ) {
        self.rows.push(KeyMapping {
            reference,
            reference_shape,
            ours,
            shape,
            transform,
            role,
        });
    }

    fn same(&mut self, reference: String, ours: String, shape: Vec<usize>, role: Role) {
        self.push(
            reference,
            shape.clone(),
            ours,
            shape,
            Transform::Identity,
            role,
        );
    }

    fn subnet(&mut self, reference: &str, ours: &str, table: SubnetTable) {
        for (index, field, layer) in table {
            let (r, o) = (format!("{reference}.{index}"), format!("{ours}.{field}"));
            match layer {
                Layer::Norm(c) => {
                    self.same(
                        format!("{r}.weight"),
                        format!("{o}.weight"),
                        vec![c],
                        Role::Trainable,
                    );
                    self.same(
                        format!("{r}.bias"),
                        format!("{o}.bias"),
                        vec![c],
                        Role::Trainable,
                    );
                    self.same(
                        format!("{r}.running_mean"),
                        format!("{o}.running_mean"),
                        vec![c],
                        Role::Buffer,
                    );
                    self.same(
                        format!("{r}.running_var"),
                        format!("{o}.running_var"),
                        vec![c],
                        Role::Buffer,
                    );
                    self.push(
                        format!("{r}.num_batches_tracked"),
                        vec![],
                        format!("{o}.num_batches_tracked"),
                        vec![1],
                        Transform::Reshape,
                        Role::Counter,
                    );
                }
                Layer::Conv {
                    cin,
                    cout,
                    kernel,
                    bias,
                } => {
                    self.same(
                        format!("{r}.weight"),
                        format!("{o}.weight"),
                        vec![cout, cin, kernel, kernel],
                        Role::Trainable,
                    );
                    if bias {
                        self.same(
                            format!("{r}.bias"),
                            format!("{o}.bias"),
                            vec![cout],
                            Role::Trainable,
                        );
                    }
                }
            }
        }
    }

    /// act_norm, act_offset, w, w_inv of a coupling with `channels` output channels.
    fn output_stage(&mut self, reference: &str, ours: &str, channels: usize) {
        let c = channels;
        for name in ["act_norm", "act_offset"] {
            self.push(
                format!("{reference}.{name}"),
                vec![1, c, 1, 1],
                format!("{ours}.{name}"),
                vec![c],
                Transform::Reshape,
                Role::Trainable,
            );
        }
        self.push(
            format!("{reference}.w"),
            vec![c, c, 1, 1],
            format!("{ours}.permutation"),
            vec![c],
            Transform::PermutationMatrix,
            Role::Fixed(FixedKind::Permutation),
        );
        self.push(
            format!("{reference}.w_inv"),
            vec![c, c, 1, 1],
            format!("{ours}.inverse_permutation"),
            vec![c],
            Transform::PermutationMatrix,
            Role::Fixed(FixedKind::InversePermutation),
        );
    }

    fn down_coupling(
        &mut self,
        reference: &str,
        ours: &str,
        channels: usize,
        strided: SubnetTable,
        low_res: SubnetTable,
    ) {
        let (c1, c2) = (channels - channels / 2, channels / 2);
        self.output_stage(reference, ours, 4 * channels);
        self.subnet(
            &format!("{reference}.s_hi"),
            &format!("{ours}.subnet_strided"),
            strided,
        );
        self.subnet(
            &format!("{reference}.s_lo"),
            &format!("{ours}.subnet_low_res"),
            low_res,
        );
        for (k, c) in [(0, c1), (1, c2)] {
            self.same(
                format!("{reference}.reshape_kernels.{k}"),
                format!("{ours}.unshuffle_kernels_{}", k + 1),
                vec![4 * c, 1, 2, 2],
                Role::Fixed(FixedKind::UnshuffleKernels),
            );
        }
    }
}

/// Every tensor of a model of `config`, in the reference's state-dict order.
///
/// Call on a validated config.
pub fn key_table(config: &GcConfig) -> Vec<KeyMapping> {
    let mut rows = Vec::new();
    let mut out = Rows { rows: &mut rows };
    let mut channels = config.input_shape[0];
    let mut stage_blocks: Vec<usize> = vec![0; config.planes.len()];
    for node in config.nodes() {
        let reference = format!("inn.module_list.{}", node.index);
        match node.kind {
            NodeKind::EntryDown => {
                let (c1, c2) = (channels - channels / 2, channels / 2);
                let hidden = config.base_width;
                out.down_coupling(
                    &reference,
                    "flow.entry",
                    channels,
                    entry_strided_table(c1, 8 * c2, hidden),
                    entry_low_res_table(4 * c2, 8 * c1, hidden),
                );
                channels *= 4;
            }
            NodeKind::Haar => {
                out.same(
                    format!("{reference}.haar_weights"),
                    "flow.haar.kernels".into(),
                    vec![4 * channels, 1, 2, 2],
                    Role::Fixed(FixedKind::HaarKernels),
                );
                channels *= 4;
            }
            NodeKind::Entry1x1 => {
                let (c1, c2) = (channels - channels / 2, channels / 2);
                out.output_stage(&reference, "flow.entry_1x1", channels);
                out.subnet(
                    &format!("{reference}.s"),
                    "flow.entry_1x1.subnet",
                    conv_1x1_table(c1, 2 * c2, config.entry_1x1_hidden),
                );
            }
            NodeKind::Down { stage } => {
                let (c1, c2) = (channels - channels / 2, channels / 2);
                let width = config.bottleneck_width(stage);
                out.down_coupling(
                    &reference,
                    &format!("flow.stages.{stage}.down"),
                    channels,
                    bottleneck_table(c1, 8 * c2, width),
                    bottleneck_table(4 * c2, 8 * c1, width),
                );
                channels *= 4;
            }
            NodeKind::Slow { stage, .. } => {
                let (c1, c2) = (channels - channels / 2, channels / 2);
                let ours = format!("flow.stages.{stage}.blocks.{}", stage_blocks[stage]);
                stage_blocks[stage] += 1;
                out.output_stage(&reference, &ours, channels);
                out.subnet(
                    &format!("{reference}.s"),
                    &format!("{ours}.subnet"),
                    bottleneck_table(c1, 2 * c2, config.bottleneck_width(stage)),
                );
            }
            NodeKind::Dct => {
                let n = config.dct_size();
                out.same(
                    format!("{reference}.weight"),
                    "flow.dct.weight".into(),
                    vec![n, n],
                    Role::Fixed(FixedKind::DctWeight),
                );
                out.same(
                    format!("{reference}.inv_weight"),
                    "flow.dct.inverse_weight".into(),
                    vec![n, n],
                    Role::Fixed(FixedKind::DctInverseWeight),
                );
            }
            NodeKind::Input
            | NodeKind::OutFc
            | NodeKind::OutConv
            | NodeKind::PermuteRandom
            | NodeKind::Split => {}
        }
    }
    let (classes, loss, conv) = (config.n_classes, config.n_loss_dims, config.conv_dims());
    out.push(
        "mu".into(),
        vec![1, classes, loss],
        "head.mu_fc".into(),
        vec![classes, loss],
        Transform::Reshape,
        Role::Trainable,
    );
    if config.mu_low_rank_k > 0 {
        let k = config.mu_low_rank_k;
        out.same(
            "mu_t".into(),
            "head.mu_t".into(),
            vec![classes, k],
            Role::Trainable,
        );
        out.same(
            "mu_m".into(),
            "head.mu_m".into(),
            vec![k, conv],
            Role::Trainable,
        );
    } else {
        out.push(
            "mu_conv".into(),
            vec![1, classes, conv],
            "head.mu_conv".into(),
            vec![classes, conv],
            Transform::Reshape,
            Role::Trainable,
        );
    }
    rows
}

/// Whether a reference key is an activation FrEIA 0.2 leaves in saved state dicts
/// (`inn.tmp_var_K`), which loaders ignore.
pub fn is_activation_key(key: &str) -> bool {
    key.strip_prefix("inn.tmp_var_")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()))
}
