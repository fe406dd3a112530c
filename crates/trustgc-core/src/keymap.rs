//! The one declared translation between the reference's checkpoint keys and trustgc's
//! parameter paths.
//!
//! The reference saves `{'inn': model.model.state_dict(), 'mu', 'mu_t', 'mu_m'}`; its flow
//! keys are `inn.module_list.N.<module keys>` with `N` the node's position in the list
//! given to FrEIA's `ReversibleGraphNet` (see [`crate::plan`] and [`GcConfig::nodes`]).
//! [`key_table`] lists every tensor of a model of a given config: reference key, its
//! shape in the reference file, our path, and how the tensor is translated. It walks the
//! config's [`FlowPlan`]: the blocks give the node numbers and our paths, the subnet
//! configs their layers ([`SubnetLayout`]), and the rules below the names of a coupling's
//! output stage and of the fixed tensors. Nothing else in trustgc knows a reference key.

use crate::config::GcConfig;
use crate::layers::coupling::split_channels;
use crate::layers::subnet::{SubnetLayer, SubnetLayout};
use crate::plan::{BlockLayers, FlowPlan};

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

    fn subnet(&mut self, reference: &str, ours: &str, table: SubnetLayout) {
        for (index, field, layer) in table {
            let (r, o) = (format!("{reference}.{index}"), format!("{ours}.{field}"));
            match layer {
                SubnetLayer::Norm(c) => {
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
                SubnetLayer::Conv {
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

    /// The two unshuffle kernels of a downsampling coupling over `channels` inputs.
    fn unshuffle_kernels(&mut self, reference: &str, ours: &str, channels: usize) {
        let (c1, c2) = split_channels(channels);
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
    key_table_of_plan(&config.plan(), config)
}

/// [`key_table`] from an already derived plan (used by validation to count parameters).
pub(crate) fn key_table_of_plan(plan: &FlowPlan, config: &GcConfig) -> Vec<KeyMapping> {
    let mut rows = Vec::new();
    let mut out = Rows { rows: &mut rows };
    for block in &plan.blocks {
        let reference = format!("inn.module_list.{}", block.node);
        let ours = block.path.as_str();
        if let BlockLayers::Haar = block.layers {
            out.same(
                format!("{reference}.haar_weights"),
                format!("{ours}.kernels"),
                vec![4 * block.channels, 1, 2, 2],
                Role::Fixed(FixedKind::HaarKernels),
            );
            continue;
        }
        // A coupling: its output stage (act-norm + permutation), then its subnets, then
        // the unshuffle kernels of a downsampling one (the reference's parameter order).
        out.output_stage(&reference, ours, block.output_shape()[0]);
        for (reference_name, field, layout) in block.subnets() {
            out.subnet(
                &format!("{reference}.{reference_name}"),
                &format!("{ours}.{field}"),
                layout,
            );
        }
        if block.downsamples() {
            out.unshuffle_kernels(&reference, ours, block.channels);
        }
    }
    let reference = format!("inn.module_list.{}", plan.dct_node);
    let n = plan.final_side;
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
    let (classes, loss) = (config.n_classes, config.n_loss_dims);
    let conv = plan.total_dims - loss;
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
