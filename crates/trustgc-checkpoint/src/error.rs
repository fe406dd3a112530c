//! The error type of the reader.

use std::fmt;
use std::io;

/// Which part of a checkpoint a byte offset in an error refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Section {
    /// The pickle `<archive>/data.pkl` of a zip checkpoint; offsets are relative to that entry.
    DataPkl,
    /// The first pickle of a legacy file (the magic number); offsets are file offsets.
    LegacyMagic,
    /// The second pickle of a legacy file (the protocol version); offsets are file offsets.
    LegacyProtocol,
    /// The third pickle of a legacy file (system information); offsets are file offsets.
    LegacySysInfo,
    /// The main pickle of a legacy file (the saved object); offsets are file offsets.
    LegacyMain,
    /// The pickled list of storage keys of a legacy file; offsets are file offsets.
    LegacyStorageKeys,
    /// The raw storages at the end of a legacy file; offsets are file offsets.
    LegacyStorages,
}

impl fmt::Display for Section {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Section::DataPkl => "data.pkl",
            Section::LegacyMagic => "the legacy magic-number pickle",
            Section::LegacyProtocol => "the legacy protocol-version pickle",
            Section::LegacySysInfo => "the legacy sys-info pickle",
            Section::LegacyMain => "the legacy main pickle",
            Section::LegacyStorageKeys => "the legacy storage-key list",
            Section::LegacyStorages => "the legacy storage data",
        })
    }
}

/// What is wrong with a pickle at a given opcode.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PickleProblem {
    /// The opcode needs more values on the stack than there are.
    StackUnderflow,
    /// The opcode needs a MARK and there is none.
    MissingMark,
    /// A memo read (GET) of an index that was never stored.
    MissingMemo {
        /// The memo index.
        index: u64,
    },
    /// A value has the wrong type for the opcode or call.
    WrongType {
        /// What the opcode or call needs.
        expected: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// A string is not valid UTF-8.
    InvalidUtf8,
    /// A text-encoded number (INT, FLOAT, LONG) does not parse.
    InvalidNumber,
    /// A declared length is negative.
    NegativeLength,
    /// The PROTO opcode names a protocol newer than 5.
    UnsupportedProtocol {
        /// The protocol number.
        version: u8,
    },
    /// A call (REDUCE) of an allowed global with arguments it does not accept.
    BadArguments {
        /// The global called, `module.name`.
        callable: &'static str,
        /// What is wrong with the arguments.
        reason: &'static str,
    },
    /// A persistent id (BINPERSID) that is not a torch storage reference.
    BadPersistentId {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A persistent id in a pickle that has no persistent objects (legacy header pickles).
    UnexpectedPersistentId,
    /// A storage on a device this reader does not know.
    UnsupportedLocation {
        /// The location string, e.g. `meta`.
        location: String,
    },
    /// Two persistent ids name the same storage key with different dtypes or sizes.
    ConflictingStorage {
        /// The storage key.
        key: String,
    },
    /// A BUILD (set state) on something other than a dict.
    UnsupportedBuild {
        /// The type of the object BUILD targets.
        target: &'static str,
    },
    /// STOP with an empty stack.
    EmptyResult,
}

impl fmt::Display for PickleProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PickleProblem::StackUnderflow => f.write_str("stack underflow"),
            PickleProblem::MissingMark => f.write_str("no MARK on the stack"),
            PickleProblem::MissingMemo { index } => {
                write!(f, "memo index {index} was never stored")
            }
            PickleProblem::WrongType { expected, found } => {
                write!(f, "expected {expected}, found {found}")
            }
            PickleProblem::InvalidUtf8 => f.write_str("string is not valid UTF-8"),
            PickleProblem::InvalidNumber => f.write_str("text number does not parse"),
            PickleProblem::NegativeLength => f.write_str("negative length"),
            PickleProblem::UnsupportedProtocol { version } => {
                write!(f, "pickle protocol {version} is not supported (at most 5)")
            }
            PickleProblem::BadArguments { callable, reason } => {
                write!(f, "bad arguments to {callable}: {reason}")
            }
            PickleProblem::BadPersistentId { reason } => {
                write!(
                    f,
                    "persistent id is not a torch storage reference: {reason}"
                )
            }
            PickleProblem::UnexpectedPersistentId => {
                f.write_str("persistent id in a pickle that cannot have one")
            }
            PickleProblem::UnsupportedLocation { location } => {
                write!(f, "storage location {location:?} is not supported")
            }
            PickleProblem::ConflictingStorage { key } => {
                write!(
                    f,
                    "storage {key:?} is declared twice with different dtype or size"
                )
            }
            PickleProblem::UnsupportedBuild { target } => {
                write!(f, "BUILD on a {target} is not supported")
            }
            PickleProblem::EmptyResult => f.write_str("STOP with an empty stack"),
        }
    }
}

/// Which resource limit was exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Limit {
    /// Nesting depth of containers while flattening the unpickled object.
    Depth,
    /// Number of container visits while flattening (shared containers visited many times).
    Visits,
    /// Bytes of keys and shapes listed (keys repeated by shared containers).
    Metadata,
    /// Number of tensor dimensions.
    Dimensions,
    /// Elements materialized in memory, over all returned tensors.
    Elements,
    /// Decompressed size of a zip entry.
    EntrySize,
    /// Bytes of bookkeeping the pickle machine creates (stack, memo, containers, strings).
    PickleMemory,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Limit::Depth => "nesting depth",
            Limit::Visits => "container visits",
            Limit::Metadata => "key and shape bytes",
            Limit::Dimensions => "tensor dimensions",
            Limit::Elements => "materialized elements",
            Limit::EntrySize => "zip entry size",
            Limit::PickleMemory => "pickle machine memory (bytes)",
        })
    }
}

/// Everything that can go wrong while reading a checkpoint.
///
/// Every variant says what is wrong and where: the section and byte offset for pickle
/// problems, the flattened key for tensor problems, the storage key or zip entry for
/// storage problems.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The checkpoint path is not a regular file (a pipe or device is refused unread) or
    /// could not be opened.
    #[error(transparent)]
    Open(#[from] trustgc_io::ReadError),
    /// An I/O error while reading a section of the checkpoint.
    #[error("I/O error in {section} at byte {offset}")]
    Read {
        /// The section being read.
        section: Section,
        /// The offset where the read started.
        offset: u64,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The input is empty.
    #[error("the input is empty, not a checkpoint")]
    Empty,
    /// The input is neither a zip archive nor a legacy torch.save stream.
    #[error(
        "unrecognized format: starts with {prefix:02x?}, neither a zip archive (PK\\x03\\x04) nor a legacy torch.save pickle (\\x80)"
    )]
    UnrecognizedFormat {
        /// The first bytes of the input (at most 8).
        prefix: Vec<u8>,
    },
    /// The zip archive itself is invalid (e.g. truncated: no end-of-central-directory record).
    #[error("invalid zip archive")]
    Zip {
        /// The error of the zip reader.
        #[source]
        source: zip::result::ZipError,
    },
    /// A zip entry could not be opened or read.
    #[error("cannot read zip entry {entry:?}")]
    ZipEntry {
        /// The entry name.
        entry: String,
        /// The error of the zip reader.
        #[source]
        source: zip::result::ZipError,
    },
    /// An I/O error while reading a zip entry (e.g. a corrupt deflate stream or CRC mismatch).
    #[error("I/O error while reading zip entry {entry:?}")]
    ZipEntryRead {
        /// The entry name.
        entry: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// A zip entry ended before its declared size.
    #[error("zip entry {entry:?} holds {read} of its {declared} declared bytes")]
    ZipEntryShort {
        /// The entry name.
        entry: String,
        /// Bytes read.
        read: u64,
        /// Bytes declared in the archive.
        declared: u64,
    },
    /// A zip entry the format requires is not in the archive.
    #[error("zip entry {entry:?} is missing")]
    MissingEntry {
        /// The entry name.
        entry: String,
    },
    /// The zip `byteorder` entry is neither `little` nor `big`.
    #[error("unsupported byte order {found:?} in the zip byteorder entry")]
    UnsupportedByteOrder {
        /// Its content (lossily decoded, at most 32 bytes).
        found: String,
    },
    /// A legacy file whose first pickle is not torch's magic number.
    #[error("not a legacy torch.save file: the first pickle is not the magic number")]
    BadMagic,
    /// A legacy file with a protocol version other than 1001.
    #[error("unsupported legacy protocol version {found:?} (expected 1001)")]
    UnsupportedLegacyProtocol {
        /// The version found, if it is an integer.
        found: Option<i64>,
    },
    /// The input ends before a declared length.
    #[error(
        "truncated input: {section} needs {needed} bytes at byte {offset}, only {available} are left"
    )]
    Truncated {
        /// The section being read.
        section: Section,
        /// Where the read starts.
        offset: u64,
        /// Bytes needed.
        needed: u64,
        /// Bytes left.
        available: u64,
    },
    /// A pickle refers to a global (class or function) that is not on the allow-list.
    /// Nothing is ever called; the reader stops here.
    #[error(
        "forbidden global {module}.{name} in {section} at byte {offset}: only torch tensor and OrderedDict globals are allowed"
    )]
    ForbiddenGlobal {
        /// The module, e.g. `os`.
        module: String,
        /// The name, e.g. `system`.
        name: String,
        /// The pickle.
        section: Section,
        /// Offset of the GLOBAL / STACK_GLOBAL opcode.
        offset: u64,
    },
    /// A pickle opcode this reader does not implement (object construction, extensions, buffers).
    #[error("unsupported pickle opcode {opcode:#04x} in {section} at byte {offset}")]
    UnsupportedOpcode {
        /// The opcode byte.
        opcode: u8,
        /// The pickle.
        section: Section,
        /// Offset of the opcode.
        offset: u64,
    },
    /// A malformed pickle.
    #[error("malformed pickle: {problem} (opcode {opcode:#04x} in {section} at byte {offset})")]
    Pickle {
        /// What is wrong.
        problem: PickleProblem,
        /// The opcode byte.
        opcode: u8,
        /// The pickle.
        section: Section,
        /// Offset of the opcode.
        offset: u64,
    },
    /// A resource limit (see [`crate::Limits`]) was exceeded.
    #[error("limit exceeded: {limit} {value} > {max}{}", at_key(key))]
    LimitExceeded {
        /// The limit.
        limit: Limit,
        /// The value reached (a lower bound when counting stopped early).
        value: u64,
        /// The maximum allowed.
        max: u64,
        /// The flattened key where it happened, if known.
        key: Option<String>,
    },
    /// A tensor's shape has more elements than fit in memory addresses.
    #[error("tensor {key:?}: shape {shape:?} overflows")]
    ShapeOverflow {
        /// The flattened key.
        key: String,
        /// The declared shape.
        shape: Vec<u64>,
    },
    /// A tensor view reaches outside its storage.
    #[error(
        "tensor {key:?}: view ({view}) needs {required} elements of storage {storage_key:?}, which has {storage_numel}"
    )]
    ViewOutOfBounds {
        /// The flattened key.
        key: String,
        /// The storage key.
        storage_key: String,
        /// The view's offset, shape and strides.
        view: Box<ViewGeometry>,
        /// Elements the view needs.
        required: RequiredElements,
        /// Elements the storage has.
        storage_numel: u64,
    },
    /// The bytes of a storage in the file do not match the size its persistent id declares,
    /// or the declared size overflows.
    #[error(
        "storage {storage_key:?}: declared {declared_numel} elements of {element_size} bytes, the file has {actual_bytes} bytes"
    )]
    StorageSizeMismatch {
        /// The storage key.
        storage_key: String,
        /// Elements declared in the pickle.
        declared_numel: u64,
        /// Bytes per element.
        element_size: u64,
        /// Bytes the file holds for it.
        actual_bytes: u64,
    },
    /// A legacy storage record has a negative element count.
    #[error("storage {storage_key:?}: negative element count {count} at byte {offset}")]
    NegativeStorageCount {
        /// The storage key.
        storage_key: String,
        /// The count read.
        count: i64,
        /// Offset of the count.
        offset: u64,
    },
    /// A tensor refers to a storage whose bytes are not in the file.
    #[error("storage {storage_key:?} is not in the file")]
    MissingStorage {
        /// The storage key.
        storage_key: String,
    },
    /// The legacy storage-key list names a storage the main pickle never declared.
    #[error("legacy storage-key list names {storage_key:?}, which the main pickle never declared")]
    UndeclaredStorage {
        /// The storage key.
        storage_key: String,
    },
    /// The legacy storage-key list names a storage twice.
    #[error("legacy storage-key list names {storage_key:?} twice")]
    DuplicateStorageKey {
        /// The storage key.
        storage_key: String,
    },
    /// The legacy storage-key pickle is not a list of strings.
    #[error("legacy storage-key pickle is not a list of strings (found {found})")]
    BadStorageKeyList {
        /// What was found.
        found: &'static str,
    },
    /// Two tensors flatten to the same key.
    #[error("two tensors have the flattened key {key:?}")]
    DuplicateKey {
        /// The key.
        key: String,
    },
    /// A dict whose key cannot be flattened into a string holds a container or tensor.
    #[error("dict under {parent:?} has a {kind} key, which cannot be flattened")]
    UnsupportedDictKey {
        /// The flattened key of the dict.
        parent: String,
        /// The type of the key.
        kind: &'static str,
    },
}

/// The geometry of a tensor view, in elements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewGeometry {
    /// Offset of the first element in the storage.
    pub storage_offset: u64,
    /// The shape.
    pub shape: Vec<u64>,
    /// The strides.
    pub stride: Vec<u64>,
}

impl fmt::Display for ViewGeometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "offset {}, shape {:?}, stride {:?}",
            self.storage_offset, self.shape, self.stride
        )
    }
}

/// Elements a view needs, or an overflow of 64 bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequiredElements {
    /// That many elements.
    Count(u64),
    /// More than `u64::MAX`.
    Overflow,
}

impl fmt::Display for RequiredElements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequiredElements::Count(n) => write!(f, "{n}"),
            RequiredElements::Overflow => f.write_str("more than 2^64"),
        }
    }
}

fn at_key(key: &Option<String>) -> String {
    match key {
        Some(k) => format!(" at key {k:?}"),
        None => String::new(),
    }
}
