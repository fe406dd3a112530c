"""A plain PyTorch port of the ImageNet generative classifier's forward pass.

Written from the specification (shared docs/REFERENCE.md), not from the original code, as
the PyTorch peer that `trustgc bench` is compared with (benches/peer/compare.sh). It is a
straightforward eager-mode port, the way one would write it in PyTorch:

* the fixed channel permutations of the couplings are index gathers (``v[:, perm]``), not
  1x1 convolutions with permutation matrices;
* the downsampling couplings' 2x2 reshape is ``F.pixel_unshuffle`` and the Haar transform
  sums and differences of the four pixel phases, not grouped convolutions;
* the head is low rank: ``z_conv . mu_conv_y = (z_conv mu_m^T) mu_t^T`` with the class
  norms ``|mu_conv_y|^2`` computed once, so ``mu_conv = mu_t mu_m`` (1000 x 147456 for the
  ImageNet model) is never formed (``Head.distances_full`` does form it, as the original
  code does on every call, for ``bench_peer.py --full-forward``);
* BatchNorm runs in eval mode on its running statistics (``F.batch_norm``), not folded.

Weights use the reference's state-dict layout (``inn.module_list.N...``, ``mu``, ``mu_t``,
``mu_m``): ``Model.from_state_dict`` takes the mini model's ``mini.safetensors`` (checked
against the golden outputs by check_golden.py) or the random weights of
``random_state_dict`` at an architecture's size (what bench_peer.py times).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F


# --------------------------------------------------------------------------------------
# Architecture


@dataclass(frozen=True)
class Arch:
    """The hyper-parameters that fix the network's shapes (REFERENCE.md sections 1, 5)."""

    input_shape: tuple[int, int, int]
    n_classes: int
    n_loss_dims: int
    mu_low_rank_k: int
    base_width: int
    planes: tuple[int, ...]
    blocks: tuple[int, ...]
    strides: tuple[int, ...]
    clamp: float = 0.7
    act_norm: float = 0.7
    entry_1x1_hidden: int = 48
    haar_rebalance: float = 0.5
    dct_rebalance: float = 0.5
    permute_seed: int = 0
    bn_eps: float = 1e-5

    @property
    def total_dims(self) -> int:
        c, h, w = self.input_shape
        return c * h * w

    @property
    def conv_dims(self) -> int:
        return self.total_dims - self.n_loss_dims


PRESETS = {
    # The released ImageNet GC (`_trustworthy_gc`).
    "imagenet": Arch(
        input_shape=(3, 224, 224),
        n_classes=1000,
        n_loss_dims=3072,
        mu_low_rank_k=128,
        base_width=64,
        planes=(64, 128, 256, 512),
        blocks=(3, 4, 6, 3),
        strides=(1, 2, 2, 2),
    ),
    # The golden mini model (shared golden/mini/config.json).
    "mini": Arch(
        input_shape=(3, 112, 112),
        n_classes=10,
        n_loss_dims=768,
        mu_low_rank_k=8,
        base_width=16,
        planes=(32, 64, 64, 128),
        blocks=(1, 2, 1, 1),
        strides=(1, 2, 1, 2),
    ),
}


def arch_from_reference_config(path: str) -> Arch:
    """Reads a config.json in the reference's format (golden/mini/config.json)."""
    with open(path) as f:
        cfg = json.load(f)
    bb = cfg["backbone"]
    return Arch(
        input_shape=tuple(cfg["input_dims"]),
        n_classes=cfg["n_classes"],
        n_loss_dims=cfg["n_loss_dims_1d"],
        mu_low_rank_k=cfg["mu_low_rank_k"],
        base_width=bb["base_width"],
        planes=tuple(bb["planes"]),
        blocks=tuple(bb["blocks"]),
        strides=tuple(bb["strides"]),
        clamp=bb["clamp"],
        act_norm=bb["act_norm"],
        entry_1x1_hidden=bb["entry_1x1_subnet_hidden"],
        haar_rebalance=cfg["haar"]["rebalance"],
        dct_rebalance=cfg["head"]["dct_rebalance"],
        permute_seed=cfg["head"]["permute_random_seed"],
        bn_eps=bb["bn_eps"],
    )


@dataclass
class NodeSpec:
    """One node of the flow: its index N in ``inn.module_list.N`` and its layer."""

    node: int
    kind: str  # "entry_down", "haar", "entry_1x1", "down", "slow", "dct"
    channels: int  # input channels
    side: int  # input height = width
    width: int = 0  # bottleneck width (down, slow)
    hidden: int = 0  # entry subnets' hidden width
    convs: list = field(default_factory=list)  # (prefix, cin, cout, kernel, stride, bias)
    bns: list = field(default_factory=list)  # (prefix, channels)


def split_channels(c: int) -> tuple[int, int]:
    """(c1, c2) = (C - C//2, C//2): the coupling's passive and active halves."""
    return c - c // 2, c // 2


def _bottleneck_layers(prefix, cin, cout, width, stride):
    convs = [
        (f"{prefix}.2", cin, width, 1, 1, False),
        (f"{prefix}.5", width, width, 3, stride, False),
        (f"{prefix}.8", width, 4 * width, 1, 1, False),
        (f"{prefix}.11", 4 * width, cout, 1, 1, True),
    ]
    bns = [(f"{prefix}.0", cin), (f"{prefix}.3", width), (f"{prefix}.6", width), (f"{prefix}.9", 4 * width)]
    return convs, bns


def plan(arch: Arch) -> list[NodeSpec]:
    """The flow's nodes in execution order (REFERENCE.md section 1)."""
    c, h, w = arch.input_shape
    assert h == w, "square inputs only"
    nodes = []
    n = 1
    # Entry downsampling coupling.
    c1, c2 = split_channels(c)
    hid = arch.base_width
    p = f"inn.module_list.{n}"
    spec = NodeSpec(n, "entry_down", c, h, hidden=hid)
    spec.convs = [
        (f"{p}.s_hi.0", c1, hid, 3, 1, False),
        (f"{p}.s_hi.3", hid, hid, 3, 2, False),
        (f"{p}.s_hi.6", hid, 8 * c2, 1, 1, True),
        (f"{p}.s_lo.0", 4 * c2, hid, 3, 1, False),
        (f"{p}.s_lo.3", hid, 8 * c1, 1, 1, False),
    ]
    spec.bns = [(f"{p}.s_hi.1", hid), (f"{p}.s_hi.4", hid), (f"{p}.s_lo.1", hid)]
    nodes.append(spec)
    c, side = 4 * c, h // 2
    n += 1
    # Haar.
    nodes.append(NodeSpec(n, "haar", c, side))
    c, side = 4 * c, side // 2
    n += 1
    # The 1x1 coupling.
    c1, c2 = split_channels(c)
    p = f"inn.module_list.{n}"
    spec = NodeSpec(n, "entry_1x1", c, side, hidden=arch.entry_1x1_hidden)
    spec.convs = [
        (f"{p}.s.0", c1, arch.entry_1x1_hidden, 1, 1, True),
        (f"{p}.s.2", arch.entry_1x1_hidden, 2 * c2, 1, 1, True),
    ]
    nodes.append(spec)
    n += 1
    # The stages.
    for planes, blocks, stride in zip(arch.planes, arch.blocks, arch.strides):
        width = planes * arch.base_width // 64
        for j in range(blocks):
            c1, c2 = split_channels(c)
            p = f"inn.module_list.{n}"
            if j == 0 and stride == 2:
                spec = NodeSpec(n, "down", c, side, width=width)
                hi_c, hi_b = _bottleneck_layers(f"{p}.s_hi", c1, 8 * c2, width, 2)
                lo_c, lo_b = _bottleneck_layers(f"{p}.s_lo", 4 * c2, 8 * c1, width, 1)
                spec.convs, spec.bns = hi_c + lo_c, hi_b + lo_b
                nodes.append(spec)
                c, side = 4 * c, side // 2
            else:
                assert stride in (1, 2)
                spec = NodeSpec(n, "slow", c, side, width=width)
                spec.convs, spec.bns = _bottleneck_layers(f"{p}.s", c1, 2 * c2, width, 1)
                nodes.append(spec)
            n += 1
    # Output node out_fc, then DCT (its index: after out_fc).
    n += 1
    nodes.append(NodeSpec(n, "dct", c, side))
    return nodes


# --------------------------------------------------------------------------------------
# Layers


def _scale(act_norm: torch.Tensor) -> torch.Tensor:
    """scale(a) = 0.1 * softplus_{beta=0.5}(a) (torch's threshold 20)."""
    return 0.1 * F.softplus(act_norm, beta=0.5)


def permutation_from_matrix(w: torch.Tensor) -> torch.Tensor:
    """The index form of a 1x1 permutation convolution: out[:, i] = v[:, perm[i]]."""
    m = w.reshape(w.shape[0], w.shape[1])
    perm = m.argmax(dim=1)
    expected = torch.zeros_like(m)
    expected[torch.arange(m.shape[0]), perm] = 1.0
    if not torch.equal(m, expected):
        raise ValueError("w is not a permutation matrix")
    if torch.unique(perm).numel() != perm.numel():
        raise ValueError("w repeats a channel")
    return perm


class Conv:
    def __init__(self, sd, prefix, stride, padding):
        self.weight = sd[f"{prefix}.weight"]
        self.bias = sd.get(f"{prefix}.bias")
        self.stride = stride
        self.padding = padding

    def __call__(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)


class BatchNorm:
    def __init__(self, sd, prefix, eps):
        self.mean = sd[f"{prefix}.running_mean"]
        self.var = sd[f"{prefix}.running_var"]
        self.weight = sd[f"{prefix}.weight"]
        self.bias = sd[f"{prefix}.bias"]
        self.eps = eps

    def __call__(self, x):
        return F.batch_norm(x, self.mean, self.var, self.weight, self.bias, False, 0.0, self.eps)


class Bottleneck:
    """BN-ReLU-conv1x1-BN-ReLU-conv3x3(stride)-BN-ReLU-conv1x1-BN-ReLU-conv1x1(bias)."""

    def __init__(self, sd, prefix, stride, eps):
        self.bn0 = BatchNorm(sd, f"{prefix}.0", eps)
        self.conv2 = Conv(sd, f"{prefix}.2", 1, 0)
        self.bn3 = BatchNorm(sd, f"{prefix}.3", eps)
        self.conv5 = Conv(sd, f"{prefix}.5", stride, 1)
        self.bn6 = BatchNorm(sd, f"{prefix}.6", eps)
        self.conv8 = Conv(sd, f"{prefix}.8", 1, 0)
        self.bn9 = BatchNorm(sd, f"{prefix}.9", eps)
        self.conv11 = Conv(sd, f"{prefix}.11", 1, 0)

    def __call__(self, x):
        x = self.conv2(F.relu(self.bn0(x)))
        x = self.conv5(F.relu(self.bn3(x)))
        x = self.conv8(F.relu(self.bn6(x)))
        return self.conv11(F.relu(self.bn9(x)))


class EntryStrided:
    """s_hi of the entry block: conv3x3-BN-ReLU-conv3x3 s2-BN-ReLU-conv1x1(bias)."""

    def __init__(self, sd, prefix, eps):
        self.conv0 = Conv(sd, f"{prefix}.0", 1, 1)
        self.bn1 = BatchNorm(sd, f"{prefix}.1", eps)
        self.conv3 = Conv(sd, f"{prefix}.3", 2, 1)
        self.bn4 = BatchNorm(sd, f"{prefix}.4", eps)
        self.conv6 = Conv(sd, f"{prefix}.6", 1, 0)

    def __call__(self, x):
        x = F.relu(self.bn1(self.conv0(x)))
        x = F.relu(self.bn4(self.conv3(x)))
        return self.conv6(x)


class EntryLowRes:
    """s_lo of the entry block: conv3x3-BN-ReLU-conv1x1."""

    def __init__(self, sd, prefix, eps):
        self.conv0 = Conv(sd, f"{prefix}.0", 1, 1)
        self.bn1 = BatchNorm(sd, f"{prefix}.1", eps)
        self.conv3 = Conv(sd, f"{prefix}.3", 1, 0)

    def __call__(self, x):
        return self.conv3(F.relu(self.bn1(self.conv0(x))))


class Conv1x1Net:
    """The subnet of the coupling after Haar: conv1x1(bias)-ReLU-conv1x1(bias)."""

    def __init__(self, sd, prefix):
        self.conv0 = Conv(sd, f"{prefix}.0", 1, 0)
        self.conv2 = Conv(sd, f"{prefix}.2", 1, 0)

    def __call__(self, x):
        return self.conv2(F.relu(self.conv0(x)))


class CouplingOutput:
    """Act-norm (softplus scale, offset) then the fixed channel permutation, by index."""

    def __init__(self, sd, prefix):
        self.act_norm = sd[f"{prefix}.act_norm"]
        self.act_offset = sd[f"{prefix}.act_offset"]
        # A checkpoint stores the permutation as a matrix `w`; random_state_dict stores the
        # index form `perm` (a key the reference does not have) to keep no C x C matrices.
        perm = sd.get(f"{prefix}.perm")
        self.perm = perm if perm is not None else permutation_from_matrix(sd[f"{prefix}.w"])

    def __call__(self, u):
        scale = _scale(self.act_norm)
        v = u * scale + self.act_offset
        log_det_per_pixel = torch.log(scale + 1e-12).sum()
        return v[:, self.perm], log_det_per_pixel


class SlowCoupling:
    def __init__(self, sd, n, subnet, clamp):
        self.subnet = subnet
        self.out = CouplingOutput(sd, f"inn.module_list.{n}")
        self.clamp = clamp

    def __call__(self, x):
        c = x.shape[1]
        c1, c2 = split_channels(c)
        x1, x2 = x[:, :c1], x[:, c1:]
        a = self.subnet(x1)
        ls = self.clamp * torch.tanh(0.1 * a[:, :c2])
        x2 = x2 * torch.exp(ls) + 0.1 * a[:, c2:]
        y, ld_pixel = self.out(torch.cat([x1, x2], dim=1))
        h, w = x.shape[2], x.shape[3]
        return y, ls.sum(dim=(1, 2, 3)) + h * w * ld_pixel


class DownCoupling:
    def __init__(self, sd, n, s_hi, s_lo, clamp):
        self.s_hi, self.s_lo = s_hi, s_lo
        self.out = CouplingOutput(sd, f"inn.module_list.{n}")
        self.clamp = clamp

    def __call__(self, x):
        c = x.shape[1]
        c1, c2 = split_channels(c)
        x1, x2 = x[:, :c1], x[:, c1:]
        a1 = self.s_hi(x1)
        ls1 = self.clamp * torch.tanh(0.2 * a1[:, : 4 * c2])
        y2 = F.pixel_unshuffle(x2, 2) * torch.exp(ls1) + a1[:, 4 * c2 :]
        a2 = self.s_lo(y2)
        ls2 = self.clamp * torch.tanh(0.2 * a2[:, : 4 * c1])
        y1 = F.pixel_unshuffle(x1, 2) * torch.exp(ls2) + a2[:, 4 * c1 :]
        y, ld_pixel = self.out(torch.cat([y1, y2], dim=1))
        h, w = y.shape[2], y.shape[3]
        return y, ls1.sum(dim=(1, 2, 3)) + ls2.sum(dim=(1, 2, 3)) + h * w * ld_pixel


class Haar:
    """2x2 Haar wavelets per channel, ordered by wavelet, times 0.5 * rebalance."""

    def __init__(self, rebalance):
        self.factor = 0.5 * rebalance
        self.log_det_per_4 = math.log(16.0) + 4.0 * math.log(self.factor)

    def __call__(self, x):
        b, c, h, w = x.shape
        p00, p01 = x[:, :, 0::2, 0::2], x[:, :, 0::2, 1::2]
        p10, p11 = x[:, :, 1::2, 0::2], x[:, :, 1::2, 1::2]
        bands = [
            p00 + p01 + p10 + p11,
            p00 - p01 + p10 - p11,
            p00 + p01 - p10 - p11,
            p00 - p01 - p10 + p11,
        ]
        y = torch.cat(bands, dim=1) * self.factor
        log_det = (c * h * w / 4) * self.log_det_per_4
        return y, torch.full((b,), log_det, dtype=x.dtype)


def dct_matrix(n: int) -> torch.Tensor:
    """W[k, j] = 2 cos(pi (2j + 1) k / 2N)."""
    k = np.arange(n)[:, None]
    j = np.arange(n)[None, :]
    return torch.from_numpy((2.0 * np.cos(np.pi * (2 * j + 1) * k / (2 * n))).astype(np.float32))


class Dct:
    """2-D DCT-II per channel, flattened as (v*N + u)*C + c, times rebalance / (2(N+1))."""

    def __init__(self, weight, rebalance):
        self.w = weight
        n = weight.shape[0]
        self.factor = rebalance / (2.0 * (n + 1))
        self.log_half = math.log(0.5)

    def __call__(self, x):
        b, c, n, _ = x.shape
        t = torch.matmul(torch.matmul(self.w, x), self.w.t())  # t[b, c, u, v]
        y = t.permute(0, 3, 2, 1).reshape(b, -1) * self.factor  # [b, v, u, c]
        return y, torch.full((b,), n * n * c * self.log_half, dtype=x.dtype)


def random_permutation(n: int, seed: int) -> np.ndarray:
    """PermuteRandom's permutation: numpy's legacy generator seeded with `seed`."""
    return np.random.RandomState(seed).permutation(n)


# --------------------------------------------------------------------------------------
# Model


class Flow:
    def __init__(self, arch: Arch, sd: dict):
        self.arch = arch
        self.nodes = []
        for spec in plan(arch):
            n, p = spec.node, f"inn.module_list.{spec.node}"
            if spec.kind == "entry_down":
                layer = DownCoupling(
                    sd, n, EntryStrided(sd, f"{p}.s_hi", arch.bn_eps), EntryLowRes(sd, f"{p}.s_lo", arch.bn_eps), arch.clamp
                )
            elif spec.kind == "haar":
                layer = Haar(arch.haar_rebalance)
            elif spec.kind == "entry_1x1":
                layer = SlowCoupling(sd, n, Conv1x1Net(sd, f"{p}.s"), arch.clamp)
            elif spec.kind == "down":
                layer = DownCoupling(
                    sd,
                    n,
                    Bottleneck(sd, f"{p}.s_hi", 2, arch.bn_eps),
                    Bottleneck(sd, f"{p}.s_lo", 1, arch.bn_eps),
                    arch.clamp,
                )
            elif spec.kind == "slow":
                layer = SlowCoupling(sd, n, Bottleneck(sd, f"{p}.s", 1, arch.bn_eps), arch.clamp)
            elif spec.kind == "dct":
                layer = Dct(sd[f"{p}.weight"], arch.dct_rebalance)
            else:
                raise AssertionError(spec.kind)
            self.nodes.append((n, layer))
        self.perm = torch.from_numpy(random_permutation(arch.n_loss_dims, arch.permute_seed))

    def __call__(self, x, intermediates: dict | None = None):
        """(z_fc, z_conv, log|det J|); `intermediates` receives each node's (output, log-det)."""
        log_det = torch.zeros(x.shape[0], dtype=x.dtype)
        for n, layer in self.nodes:
            x, ld = layer(x)
            log_det = log_det + ld
            if intermediates is not None:
                intermediates[n] = (x, ld)
        L = self.arch.n_loss_dims
        z_fc = x[:, :L][:, self.perm]
        z_conv = x[:, L:]
        return z_fc, z_conv, log_det


class Head:
    """Gaussian class means, mu_conv low rank (mu_t @ mu_m)."""

    def __init__(self, sd: dict):
        self.mu_fc = sd["mu"][0]  # [K, L]
        self.mu_t = sd["mu_t"]  # [K, k]
        self.mu_m = sd["mu_m"]  # [k, D - L]
        self.fc_norms, self.conv_norms = self.class_norms()

    def class_norms(self):
        """|mu_fc_y|^2 and |mu_conv_y|^2 = diag(mu_t (mu_m mu_m^T) mu_t^T): once per model."""
        gram = self.mu_m @ self.mu_m.t()
        return (self.mu_fc**2).sum(1), ((self.mu_t @ gram) * self.mu_t).sum(1)

    def distances(self, z_fc, z_conv):
        """d_y = |z_fc - mu_fc_y|^2 + |z_conv - mu_conv_y|^2 by expansion, low rank."""
        cross_fc = z_fc @ self.mu_fc.t()
        cross_conv = (z_conv @ self.mu_m.t()) @ self.mu_t.t()
        z_norm = (z_fc**2).sum(1, keepdim=True) + (z_conv**2).sum(1, keepdim=True)
        return z_norm + self.fc_norms + self.conv_norms - 2.0 * (cross_fc + cross_conv)

    def distances_full(self, z_fc, z_conv):
        """The original code's head: mu_conv = mu_t @ mu_m materialized on every call."""
        mu_conv = self.mu_t @ self.mu_m
        cross = z_fc @ self.mu_fc.t() + z_conv @ mu_conv.t()
        z_norm = (z_fc**2).sum(1, keepdim=True) + (z_conv**2).sum(1, keepdim=True)
        return z_norm + (self.mu_fc**2).sum(1) + (mu_conv**2).sum(1) - 2.0 * cross


class Model:
    def __init__(self, arch: Arch, sd: dict):
        self.arch = arch
        self.flow = Flow(arch, sd)
        self.head = Head(sd)

    @classmethod
    def from_state_dict(cls, arch: Arch, sd: dict) -> "Model":
        """`sd`: reference keys to float32 torch tensors (other keys are ignored)."""
        return cls(arch, sd)

    @classmethod
    def from_safetensors(cls, arch: Arch, path: str) -> "Model":
        from safetensors.torch import load_file

        return cls(arch, load_file(path))

    def forward(self, x, full_head: bool = False):
        """(z_fc, z_conv, log_det, logits) with logits = -d/2, as the reference's `logits_tr`."""
        z_fc, z_conv, log_det = self.flow(x)
        d = (self.head.distances_full if full_head else self.head.distances)(z_fc, z_conv)
        return z_fc, z_conv, log_det, -0.5 * d

    def likelihoods(self, x, full_head: bool = False):
        """What `trustgc bench` times (trustgc's `Classifier::likelihoods_tensor`): the flow,
        the head, class log-likelihoods, the log-marginal under a uniform prior, posteriors and
        the per-dimension distances of the loss dimensions, all read back to the host."""
        if not bool(torch.isfinite(x).all()):
            raise ValueError("the input is not finite")
        arch = self.arch
        z_fc, z_conv, log_det, logits = self.forward(x, full_head)
        d_total = arch.total_dims
        # In float64: log|det J| is ~1e5, where float32's spacing (~0.01) would show in the
        # posteriors.
        class_ll = logits.double() + log_det.double()[:, None] - 0.5 * d_total * math.log(2.0 * math.pi)
        joint = class_ll - math.log(arch.n_classes)
        log_marginal = torch.logsumexp(joint, dim=1)
        log_posterior = joint - log_marginal[:, None]
        fc_dist = ((z_fc**2).sum(1, keepdim=True) + self.head.fc_norms - 2.0 * (z_fc @ self.head.mu_fc.t())) / arch.n_loss_dims
        out = {
            "class_log_likelihoods": class_ll.numpy(),
            "logits": logits.numpy(),
            "log_marginal": log_marginal.numpy(),
            "log_posterior": log_posterior.numpy(),
            "class_distances": fc_dist.numpy(),
        }
        if not np.isfinite(out["log_marginal"]).all():
            raise ValueError("the log-marginal likelihood is not finite")
        return out


# --------------------------------------------------------------------------------------
# Random weights at an architecture's size


def random_state_dict(arch: Arch, seed: int = 0) -> dict:
    """Weights in the reference's key layout, initialized as trustgc's random presets are:
    Kaiming-normal convolutions (gain sqrt 2, fan-in), zero biases, identity BatchNorm
    statistics, act-norm at scale `arch.act_norm`, zero offsets, random permutations (as
    index vectors under the key `perm`, not as matrices `w`),
    mu_fc one-hot patterns and N(0, 0.1) low-rank conv means."""
    g = torch.Generator().manual_seed(seed)
    rng = np.random.RandomState(seed)
    sd = {}
    nodes = plan(arch)
    # scale(raw) = 0.2 log(1 + exp(raw / 2)) = act_norm  =>  raw = 2 log(exp(5 act_norm) - 1)
    raw = 2.0 * math.log(math.expm1(arch.act_norm / 0.2))
    for spec in nodes:
        p = f"inn.module_list.{spec.node}"
        for prefix, cin, cout, k, _stride, bias in spec.convs:
            std = math.sqrt(2.0 / (cin * k * k))
            sd[f"{prefix}.weight"] = torch.randn(cout, cin, k, k, generator=g) * std
            if bias:
                sd[f"{prefix}.bias"] = torch.zeros(cout)
        for prefix, ch in spec.bns:
            sd[f"{prefix}.weight"] = torch.ones(ch)
            sd[f"{prefix}.bias"] = torch.zeros(ch)
            sd[f"{prefix}.running_mean"] = torch.zeros(ch)
            sd[f"{prefix}.running_var"] = torch.ones(ch)
        if spec.kind in ("entry_down", "down", "entry_1x1", "slow"):
            cout = 4 * spec.channels if spec.kind in ("entry_down", "down") else spec.channels
            sd[f"{p}.act_norm"] = torch.full((1, cout, 1, 1), raw)
            sd[f"{p}.act_offset"] = torch.zeros(1, cout, 1, 1)
            sd[f"{p}.perm"] = torch.from_numpy(rng.permutation(cout))
        if spec.kind == "dct":
            sd[f"{p}.weight"] = dct_matrix(spec.side)
    K, L, k = arch.n_classes, arch.n_loss_dims, arch.mu_low_rank_k
    mu = torch.zeros(K, L)
    repeats = L // K
    for r in range(repeats):
        mu[torch.arange(K), r * K + torch.arange(K)] = 1.0 / math.sqrt(2.0 * repeats)
    sd["mu"] = mu[None]
    sd["mu_t"] = torch.randn(K, k, generator=g) * 0.1
    sd["mu_m"] = torch.randn(k, arch.conv_dims, generator=g) * 0.1
    return sd


# --------------------------------------------------------------------------------------
# FLOPs (the count of trustgc_core::flops, so that GFLOP/s figures compare)


def flops_per_image(arch: Arch) -> int:
    """Useful FLOPs per image of inference with cached class norms: the subnets'
    convolutions (2 per multiply-add), the DCT's two products (4 C N^3) and the head's
    products (2 L K + 2 (D - L) k + 2 k K). Element-wise work, gathers and the Haar sums
    are not counted, exactly as trustgc_core::flops."""
    total = 0
    for spec in plan(arch):
        if spec.kind == "dct":
            total += 4 * spec.channels * spec.side**3
            continue
        side = spec.side
        for prefix, cin, cout, k, stride, _bias in spec.convs:
            # s_lo of a downsampling block runs at half the input side.
            in_side = side // 2 if ".s_lo." in prefix else side
            # In a bottleneck, layers after the strided 3x3 run at its output side.
            if spec.kind == "down" and ".s_hi." in prefix and prefix.rsplit(".", 1)[1] in ("8", "11"):
                in_side = side // 2
            if spec.kind == "entry_down" and prefix.endswith("s_hi.6"):
                in_side = side // 2
            pad = k // 2
            out = (in_side + 2 * pad - k) // stride + 1
            total += 2 * cin * cout * k * k * out * out
    K, L, k = arch.n_classes, arch.n_loss_dims, arch.mu_low_rank_k
    total += 2 * L * K + 2 * arch.conv_dims * k + 2 * k * K
    return total
