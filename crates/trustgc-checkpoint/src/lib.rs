//! # trustgc-checkpoint
//!
//! A safe reader for the `.pt` files that PyTorch's `torch.save` writes, in both the zip
//! format (torch >= 1.6) and the legacy format (a stream of pickles followed by raw
//! storages). It returns the tensors a checkpoint holds, keyed by their path in the saved
//! object (`inn.module_list.4.s.2.weight`, `mu`), **without executing any pickled code**:
//!
//! - the pickle machine only builds data; a global that is not on a short allow-list
//!   (`collections.OrderedDict`, `torch._utils._rebuild_tensor_v2`,
//!   `torch._utils._rebuild_parameter[_with_state]`, the `torch.*Storage` classes,
//!   `torch.device`) is a [`CheckpointError::ForbiddenGlobal`], before anything else;
//! - every size in the file (lengths, element counts, shapes, strides, offsets) is checked,
//!   with checked arithmetic, against the bytes that are really there before any
//!   allocation, and [`Limits`] bound nesting and memory: no input panics or exhausts
//!   memory (the `fuzz/` targets check this);
//! - storage bytes are read only for the tensors the caller keeps: the optimizer state
//!   (`opt`) and the activations FrEIA leaves in the state dict (`inn.tmp_var_*`) are
//!   parsed but never read with [`default_keep`].
//!
//! Tensors may be views (storage offset, arbitrary strides, shared storages); their values
//! come out in row-major order of the view. Floats are widened losslessly to `f64`,
//! integers and booleans to `i64`.
//!
//! ```no_run
//! use trustgc_checkpoint::{default_keep, read_checkpoint, Values};
//!
//! let ckpt = read_checkpoint("beta_8.avg.pt", default_keep)?;
//! for (key, tensor) in &ckpt.tensors {
//!     println!("{key}: {:?} {}", tensor.shape, tensor.dtype);
//! }
//! let mu = ckpt.get("mu").expect("a GC checkpoint has mu");
//! if let Values::Float(v) = &mu.values {
//!     println!("mu[0] = {}", v[0]);
//! }
//! # Ok::<(), trustgc_checkpoint::CheckpointError>(())
//! ```
//!
//! [`inspect_checkpoint`] lists keys, shapes and dtypes without reading any storage.

mod error;
mod pickle;
mod reader;

use std::fmt;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;

pub use error::{CheckpointError, Limit, PickleProblem, RequiredElements, Section, ViewGeometry};

/// The container format of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A zip archive with `<archive>/data.pkl` and `<archive>/data/<key>` (torch >= 1.6).
    Zip,
    /// The legacy stream: magic number, protocol version, sys info, main pickle, storage
    /// keys, raw storages (torch < 1.6, or `_use_new_zipfile_serialization=False`).
    Legacy,
}

/// The element type of a tensor, from its storage class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE half precision (`torch.HalfStorage`).
    F16,
    /// bfloat16 (`torch.BFloat16Storage`).
    BF16,
    /// IEEE single precision (`torch.FloatStorage`).
    F32,
    /// IEEE double precision (`torch.DoubleStorage`).
    F64,
    /// 64-bit signed integer (`torch.LongStorage`).
    I64,
    /// 32-bit signed integer (`torch.IntStorage`).
    I32,
    /// 16-bit signed integer (`torch.ShortStorage`).
    I16,
    /// 8-bit signed integer (`torch.CharStorage`).
    I8,
    /// 8-bit unsigned integer (`torch.ByteStorage`, `torch.UntypedStorage`).
    U8,
    /// Boolean, one byte each (`torch.BoolStorage`).
    Bool,
}

impl DType {
    /// Bytes per element in the file.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Whether values come out as [`Values::Float`] (else [`Values::Int`]).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::BF16 | DType::F32 | DType::F64)
    }

    /// torch's name: `float32`, `int64`, `bool`, ...
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "float16",
            DType::BF16 => "bfloat16",
            DType::F32 => "float32",
            DType::F64 => "float64",
            DType::I64 => "int64",
            DType::I32 => "int32",
            DType::I16 => "int16",
            DType::I8 => "int8",
            DType::U8 => "uint8",
            DType::Bool => "bool",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The values of a tensor, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Floating-point values, widened losslessly to `f64` (`as f32` gives back an f32 bit for bit).
    Float(Vec<f64>),
    /// Integer and boolean values (booleans as 0 / 1).
    Int(Vec<i64>),
}

impl Values {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            Values::Float(v) => v.len(),
            Values::Int(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The float values, if these are floats.
    pub fn as_float(&self) -> Option<&[f64]> {
        match self {
            Values::Float(v) => Some(v),
            Values::Int(_) => None,
        }
    }

    /// The integer values, if these are integers.
    pub fn as_int(&self) -> Option<&[i64]> {
        match self {
            Values::Int(v) => Some(v),
            Values::Float(_) => None,
        }
    }
}

/// A tensor read from a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// The shape; empty for a scalar.
    pub shape: Vec<usize>,
    /// The element type in the file.
    pub dtype: DType,
    /// The values, row-major (`shape.iter().product()` of them).
    pub values: Values,
}

impl Tensor {
    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.values.len()
    }
}

/// The tensors of a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    /// The container format.
    pub format: Format,
    /// The kept tensors, keyed by their flattened path, in file order.
    pub tensors: Vec<(String, Tensor)>,
}

impl Checkpoint {
    /// The tensor with this flattened key.
    pub fn get(&self, key: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(k, _)| k == key).map(|(_, t)| t)
    }
}

/// What a checkpoint says about one tensor, without its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// The flattened key.
    pub key: String,
    /// The shape.
    pub shape: Vec<usize>,
    /// The strides, in elements.
    pub stride: Vec<u64>,
    /// The offset of the first element in the storage, in elements.
    pub storage_offset: u64,
    /// The element type.
    pub dtype: DType,
    /// The key of the storage (zip entry `data/<key>` or legacy storage key).
    pub storage_key: String,
    /// Where the storage was when saved: `cpu`, `cuda:0`, ...
    pub location: String,
}

/// Every tensor a checkpoint holds, as [`inspect_checkpoint`] lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// The container format.
    pub format: Format,
    /// All tensors in file order, including those [`default_keep`] drops.
    pub tensors: Vec<TensorInfo>,
}

/// Resource limits. The defaults read any real checkpoint; they exist so that a hostile
/// file fails with [`CheckpointError::LimitExceeded`] instead of exhausting memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Deepest container nesting followed when flattening keys (default 64; values above
    /// 1024 count as 1024).
    pub max_depth: usize,
    /// Most dimensions of a tensor (default 64, torch's own limit).
    pub max_dims: usize,
    /// Most elements materialized over all returned tensors, counting for each tensor the
    /// larger of its element count and the storage span it covers. `None` (the default):
    /// four per input byte plus 2^20, which no real checkpoint reaches (each stored element
    /// takes at least one byte of the file).
    pub max_elements: Option<u64>,
    /// Most bytes of bookkeeping the pickle machine may create while unpickling (stack
    /// slots, marks, memo entries, container items, objects, strings), shared by all the
    /// pickles of a file and counted as they are created, so that a small pickle of cheap
    /// opcodes (millions of nested empty lists, at about 90 bytes of bookkeeping per
    /// pickle byte) fails with [`CheckpointError::LimitExceeded`] ([`Limit::PickleMemory`])
    /// instead of growing without bound. `None` (the default): 48 per pickle byte plus
    /// 64 MiB, at most 1 GiB, where the pickle bytes are `data.pkl`'s size (zip) or the
    /// file's (legacy: where the main pickle ends is not known before it is read). Real
    /// checkpoints stay well below: their pickles (keys, shapes, storage references) cost
    /// about 24 bytes of bookkeeping per byte. The heap really held can be up to about
    /// twice the count (growing vectors keep spare capacity).
    pub max_pickle_memory: Option<u64>,
}

impl Limits {
    /// The pickle machine's budget for a pickle of `pickle_len` bytes: see
    /// [`Limits::max_pickle_memory`].
    pub fn pickle_memory(&self, pickle_len: u64) -> u64 {
        self.max_pickle_memory.unwrap_or_else(|| {
            pickle_len
                .saturating_mul(48)
                .saturating_add(64 << 20)
                .min(1 << 30)
        })
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_dims: 64,
            max_elements: None,
            max_pickle_memory: None,
        }
    }
}

/// The default filter: keeps everything except the optimizer state (`opt` and `opt.*`) and
/// FrEIA's stored activations (`inn.tmp_var_*`).
pub fn default_keep(key: &str) -> bool {
    !(key == "opt" || key.starts_with("opt.") || key.starts_with("inn.tmp_var_"))
}

/// Reads the tensors of a checkpoint file whose flattened key `keep` accepts.
///
/// Storages of dropped tensors are never read. See [`read_checkpoint_bytes`] for the rules.
pub fn read_checkpoint(
    path: impl AsRef<Path>,
    keep: impl Fn(&str) -> bool,
) -> Result<Checkpoint, CheckpointError> {
    read_checkpoint_with_limits(path, keep, &Limits::default())
}

/// [`read_checkpoint`] with explicit [`Limits`].
pub fn read_checkpoint_with_limits(
    path: impl AsRef<Path>,
    keep: impl Fn(&str) -> bool,
    limits: &Limits,
) -> Result<Checkpoint, CheckpointError> {
    let (reader, len) = open_file(path.as_ref())?;
    reader::read(reader, len, &keep, limits)
}

/// Reads the tensors of a checkpoint held in memory whose flattened key `keep` accepts.
///
/// Keys join the path through nested dicts (and list indices) with `.`; a dict key that is
/// an int is written in decimal. Tensors outside dicts and lists are not reachable and
/// not returned; a tensor at the top level has the empty key.
pub fn read_checkpoint_bytes(
    bytes: &[u8],
    keep: impl Fn(&str) -> bool,
) -> Result<Checkpoint, CheckpointError> {
    read_checkpoint_bytes_with_limits(bytes, keep, &Limits::default())
}

/// [`read_checkpoint_bytes`] with explicit [`Limits`].
pub fn read_checkpoint_bytes_with_limits(
    bytes: &[u8],
    keep: impl Fn(&str) -> bool,
    limits: &Limits,
) -> Result<Checkpoint, CheckpointError> {
    reader::read(
        std::io::Cursor::new(bytes),
        bytes.len() as u64,
        &keep,
        limits,
    )
}

/// [`read_checkpoint_bytes_with_limits`] from any seekable reader of `len` bytes (a file,
/// a buffer, a member of an archive). Only the pickles, the storage headers and the
/// storages of kept tensors are read.
pub fn read_checkpoint_from<R: std::io::Read + std::io::Seek>(
    reader: R,
    len: u64,
    keep: impl Fn(&str) -> bool,
    limits: &Limits,
) -> Result<Checkpoint, CheckpointError> {
    reader::read(reader, len, &keep, limits)
}

/// Lists every tensor of a checkpoint file (key, shape, dtype, storage) without reading
/// any storage. The file is still fully validated: pickle, allow-list, views against
/// their storages, and storage sizes against the file.
pub fn inspect_checkpoint(path: impl AsRef<Path>) -> Result<Inventory, CheckpointError> {
    let (reader, len) = open_file(path.as_ref())?;
    reader::inspect(reader, len, &Limits::default())
}

/// [`inspect_checkpoint`] for a checkpoint held in memory.
pub fn inspect_checkpoint_bytes(bytes: &[u8]) -> Result<Inventory, CheckpointError> {
    reader::inspect(
        std::io::Cursor::new(bytes),
        bytes.len() as u64,
        &Limits::default(),
    )
}

fn open_file(path: &Path) -> Result<(BufReader<File>, u64), CheckpointError> {
    let trustgc_io::Opened { file, len } =
        trustgc_io::open_regular(path, trustgc_io::Cap::TENSORS)?;
    Ok((BufReader::with_capacity(1 << 16, file), len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filter() {
        assert!(default_keep("mu"));
        assert!(default_keep("inn.module_list.4.s.2.weight"));
        assert!(default_keep("optimizer"));
        assert!(!default_keep("opt"));
        assert!(!default_keep("opt.state.0.momentum_buffer"));
        assert!(!default_keep("inn.tmp_var_12"));
    }
}
