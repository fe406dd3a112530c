//! A pickle virtual machine that builds data, never calls anything.
//!
//! It implements the opcodes of protocols 2 to 5 that plain data and torch tensor
//! checkpoints use. Globals are resolved against an allow-list (`collections.OrderedDict`,
//! the torch tensor/parameter rebuild functions, the storage classes, `torch.device`);
//! any other global is [`CheckpointError::ForbiddenGlobal`]. REDUCE on an allowed global
//! builds the corresponding Rust value. Objects live in an arena and refer to each other
//! by index, so shared and cyclic structures cost nothing extra and free no memory twice.
//!
//! Every length read from the input is checked against the bytes left before anything
//! is allocated, and everything the machine creates (stack slots, marks, memo entries,
//! container items, objects, strings) is charged to a [`MemoryBudget`] as it is created:
//! a pickle of a few bytes per object (nested empty lists, `DUP` runs) stops with
//! [`CheckpointError::LimitExceeded`] ([`Limit::PickleMemory`]) instead of exhausting
//! memory. Nothing recurses, so nesting costs no stack.

use std::collections::HashMap;
use std::io::{self, Read};
use std::rc::Rc;

use crate::error::{CheckpointError, PickleProblem, Section};
use crate::{DType, Limit};

/// An index into the [`Arena`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ObjId(usize);

/// A pickle value. Containers and torch objects live in the arena.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer that does not fit in i64: little-endian two's complement bytes.
    BigInt(Rc<[u8]>),
    Float(#[allow(dead_code, reason = "optimizer hyper-parameters are parsed, not used")] f64),
    Str(Rc<str>),
    Bytes(Rc<[u8]>),
    Obj(ObjId),
}

/// An allowed global: nothing here can run code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Callable {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    RebuildParameterWithState,
    /// A storage class: `torch.FloatStorage` etc. (typed) or `torch.UntypedStorage` (u8).
    StorageClass(DType),
    Device,
}

impl Callable {
    fn name(self) -> &'static str {
        match self {
            Callable::OrderedDict => "collections.OrderedDict",
            Callable::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2",
            Callable::RebuildParameter => "torch._utils._rebuild_parameter",
            Callable::RebuildParameterWithState => "torch._utils._rebuild_parameter_with_state",
            Callable::StorageClass(_) => "a torch storage class",
            Callable::Device => "torch.device",
        }
    }
}

/// The allow-list.
fn resolve_global(module: &str, name: &str) -> Option<Callable> {
    Some(match (module, name) {
        ("collections", "OrderedDict") => Callable::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Callable::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Callable::RebuildParameter,
        ("torch._utils", "_rebuild_parameter_with_state") => Callable::RebuildParameterWithState,
        ("torch", "device") => Callable::Device,
        ("torch", "UntypedStorage") => Callable::StorageClass(DType::U8),
        ("torch", class) => Callable::StorageClass(match class {
            "DoubleStorage" => DType::F64,
            "FloatStorage" => DType::F32,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        }),
        _ => return None,
    })
}

/// A reference to (a slice of) a storage, as a persistent id declares it.
#[derive(Clone, Debug)]
pub(crate) struct StorageRef {
    /// The key of the root storage (zip entry `data/<key>`, legacy storage-list key).
    pub key: Rc<str>,
    pub dtype: DType,
    pub location: Rc<str>,
    /// Offset in elements of this storage into the root storage (legacy storage views).
    pub elem_offset: u64,
    /// Elements of this storage.
    pub numel: u64,
    /// Elements of the root storage.
    pub root_numel: u64,
}

/// A tensor as `_rebuild_tensor_v2` describes it; nothing is read yet.
#[derive(Clone, Debug)]
pub(crate) struct TensorRef {
    pub storage: StorageRef,
    pub storage_offset: u64,
    pub shape: Vec<u64>,
    pub stride: Vec<u64>,
}

/// A dict (plain or OrderedDict), in insertion order.
#[derive(Debug, Default)]
pub(crate) struct Dict {
    pub entries: Vec<(Value, Value)>,
    index: HashMap<HashKey, usize>,
}

/// Keys of dicts that are deduplicated like Python does (strings, ints, bools, None, bytes).
#[derive(Debug, PartialEq, Eq, Hash)]
enum HashKey {
    Str(Rc<str>),
    Int(i64),
    None,
    Bytes(Rc<[u8]>),
}

/// Longer dict keys are not deduplicated (hashing them on every SETITEM of a shared key
/// would make parsing quadratic); a duplicate of one surfaces as
/// [`CheckpointError::DuplicateKey`] when it matters.
const MAX_HASHED_KEY: usize = 256;

impl Dict {
    fn insert(&mut self, key: Value, value: Value) {
        let hk = match &key {
            Value::Str(s) if s.len() > MAX_HASHED_KEY => None,
            Value::Bytes(b) if b.len() > MAX_HASHED_KEY => None,
            Value::Str(s) => Some(HashKey::Str(s.clone())),
            Value::Int(i) => Some(HashKey::Int(*i)),
            Value::Bool(b) => Some(HashKey::Int(i64::from(*b))),
            Value::None => Some(HashKey::None),
            Value::Bytes(b) => Some(HashKey::Bytes(b.clone())),
            _ => None,
        };
        match hk {
            Some(hk) => {
                if let Some(&i) = self.index.get(&hk) {
                    self.entries[i].1 = value;
                } else {
                    self.index.insert(hk, self.entries.len());
                    self.entries.push((key, value));
                }
            }
            None => self.entries.push((key, value)),
        }
    }
}

/// An object in the arena.
#[derive(Debug)]
pub(crate) enum Object {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Dict),
    Set(Vec<Value>),
    Global(Callable),
    Storage(StorageRef),
    Tensor(TensorRef),
    Device,
}

impl Object {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Object::Tuple(_) => "tuple",
            Object::List(_) => "list",
            Object::Dict(_) => "dict",
            Object::Set(_) => "set",
            Object::Global(_) => "global",
            Object::Storage(_) => "storage",
            Object::Tensor(_) => "tensor",
            Object::Device => "torch.device",
        }
    }
}

/// All objects of one unpickled value.
#[derive(Debug, Default)]
pub(crate) struct Arena {
    objects: Vec<Object>,
}

impl Arena {
    fn push(&mut self, o: Object) -> Value {
        self.objects.push(o);
        Value::Obj(ObjId(self.objects.len() - 1))
    }

    pub(crate) fn get(&self, id: ObjId) -> &Object {
        &self.objects[id.0]
    }

    fn get_mut(&mut self, id: ObjId) -> &mut Object {
        &mut self.objects[id.0]
    }

    pub(crate) fn len(&self) -> usize {
        self.objects.len()
    }

    pub(crate) fn kind(&self, v: &Value) -> &'static str {
        match v {
            Value::None => "None",
            Value::Bool(_) => "bool",
            Value::Int(_) | Value::BigInt(_) => "int",
            Value::Float(_) => "float",
            Value::Str(_) => "str",
            Value::Bytes(_) => "bytes",
            Value::Obj(id) => self.get(*id).kind(),
        }
    }
}

/// Storages declared by persistent ids: key -> (dtype, root numel), in first-seen order.
#[derive(Debug, Default)]
pub(crate) struct StorageTable {
    pub decls: HashMap<Rc<str>, (DType, u64)>,
    pub order: Vec<Rc<str>>,
}

/// The byte source of a pickle, with the number of bytes it may still read.
pub(crate) struct Input<'r, R: Read> {
    reader: &'r mut R,
    pub pos: u64,
    end: u64,
    section: Section,
}

impl<'r, R: Read> Input<'r, R> {
    /// `pos` is the offset reported in errors for the first byte; `available` the bytes left.
    pub(crate) fn new(reader: &'r mut R, pos: u64, available: u64, section: Section) -> Self {
        Input {
            reader,
            pos,
            end: pos.saturating_add(available),
            section,
        }
    }

    fn remaining(&self) -> u64 {
        self.end - self.pos
    }

    fn need(&self, n: u64) -> Result<(), CheckpointError> {
        if n > self.remaining() {
            return Err(CheckpointError::Truncated {
                section: self.section,
                offset: self.pos,
                needed: n,
                available: self.remaining(),
            });
        }
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8]) -> Result<(), CheckpointError> {
        let n = buf.len() as u64;
        self.need(n)?;
        match self.reader.read_exact(buf) {
            Ok(()) => {
                self.pos += n;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(CheckpointError::Truncated {
                section: self.section,
                offset: self.pos,
                needed: n,
                available: 0,
            }),
            Err(source) => Err(CheckpointError::Read {
                section: self.section,
                offset: self.pos,
                source,
            }),
        }
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], CheckpointError> {
        let mut b = [0u8; N];
        self.fill(&mut b)?;
        Ok(b)
    }

    fn u8(&mut self) -> Result<u8, CheckpointError> {
        Ok(self.array::<1>()?[0])
    }

    fn bytes(&mut self, n: u64) -> Result<Vec<u8>, CheckpointError> {
        // Checked against the bytes left before allocating.
        self.need(n)?;
        let n = usize::try_from(n).map_err(|_| CheckpointError::Truncated {
            section: self.section,
            offset: self.pos,
            needed: n,
            available: self.remaining(),
        })?;
        let mut v = vec![0u8; n];
        self.fill(&mut v)?;
        Ok(v)
    }

    /// Bytes up to (not including) the next newline.
    fn line(&mut self) -> Result<Vec<u8>, CheckpointError> {
        let mut v = Vec::new();
        loop {
            let b = self.u8()?;
            if b == b'\n' {
                return Ok(v);
            }
            v.push(b);
        }
    }
}

/// What the machine may still create, in bytes of bookkeeping: one budget is shared by all
/// the pickles of a file.
///
/// The charges approximate the heap the machine holds: a stack slot, container item or
/// memo entry costs the size of what it stores (plus a hash slot for memo and dict
/// entries), an object its arena slot, a string or byte string its length plus a
/// reference count. Nothing is given back when a value is popped, so the count is an
/// upper bound of what is live.
#[derive(Debug)]
pub(crate) struct MemoryBudget {
    used: u64,
    max: u64,
}

impl MemoryBudget {
    pub(crate) fn new(max: u64) -> Self {
        MemoryBudget { used: 0, max }
    }

    fn charge(&mut self, bytes: usize) -> Result<(), CheckpointError> {
        let used = self.used.saturating_add(bytes as u64);
        if used > self.max {
            return Err(CheckpointError::LimitExceeded {
                limit: Limit::PickleMemory,
                value: used,
                max: self.max,
                key: None,
            });
        }
        self.used = used;
        Ok(())
    }
}

/// A stack slot or container item.
const VALUE_COST: usize = size_of::<Value>();
/// An object's arena slot.
const OBJECT_COST: usize = size_of::<Object>();
/// A memo entry: the key, the value and the hash table's control byte, rounded up.
const MEMO_COST: usize = size_of::<(u64, Value)>() + 8;
/// A dict entry: key and value, and the index entry of a hashed key.
const DICT_ENTRY_COST: usize = size_of::<(Value, Value)>() + size_of::<(HashKey, usize)>() + 8;
/// A storage declaration: its table entry and its place in the order.
const STORAGE_DECL_COST: usize = size_of::<(Rc<str>, (DType, u64))>() + 8 + size_of::<Rc<str>>();
/// The counts in front of an `Rc`'s data.
const RC_COST: usize = 2 * size_of::<usize>();

/// The result of unpickling: a root value and the objects it refers to.
#[derive(Debug)]
pub(crate) struct Unpickled {
    pub root: Value,
    pub arena: Arena,
}

/// Runs one pickle.
///
/// `storages` receives the storages that BINPERSID declares; `None` forbids persistent ids.
///
/// Everything it creates is charged to `budget`; [`CheckpointError::LimitExceeded`] with
/// [`Limit::PickleMemory`] when that runs out.
pub(crate) fn unpickle<R: Read>(
    input: &mut Input<'_, R>,
    storages: Option<&mut StorageTable>,
    max_dims: usize,
    budget: &mut MemoryBudget,
) -> Result<Unpickled, CheckpointError> {
    let mut vm = Vm {
        budget,
        arena: Arena::default(),
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        storages,
        max_dims,
        section: input.section,
        op: 0,
        op_offset: 0,
    };
    let root = vm.run(input)?;
    Ok(Unpickled {
        root,
        arena: vm.arena,
    })
}

struct Vm<'s> {
    budget: &'s mut MemoryBudget,
    arena: Arena,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
    storages: Option<&'s mut StorageTable>,
    max_dims: usize,
    section: Section,
    op: u8,
    op_offset: u64,
}

mod op {
    pub const MARK: u8 = b'(';
    pub const STOP: u8 = b'.';
    pub const POP: u8 = b'0';
    pub const POP_MARK: u8 = b'1';
    pub const DUP: u8 = b'2';
    pub const FLOAT: u8 = b'F';
    pub const INT: u8 = b'I';
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const NONE: u8 = b'N';
    pub const REDUCE: u8 = b'R';
    pub const BINSTRING: u8 = b'T';
    pub const SHORT_BINSTRING: u8 = b'U';
    pub const BINUNICODE: u8 = b'X';
    pub const APPEND: u8 = b'a';
    pub const BUILD: u8 = b'b';
    pub const GLOBAL: u8 = b'c';
    pub const DICT: u8 = b'd';
    pub const EMPTY_DICT: u8 = b'}';
    pub const APPENDS: u8 = b'e';
    pub const GET: u8 = b'g';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
    pub const LIST: u8 = b'l';
    pub const EMPTY_LIST: u8 = b']';
    pub const PUT: u8 = b'p';
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const SETITEM: u8 = b's';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_TUPLE: u8 = b')';
    pub const SETITEMS: u8 = b'u';
    pub const BINFLOAT: u8 = b'G';
    pub const BINPERSID: u8 = b'Q';
    pub const PROTO: u8 = 0x80;
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const LONG1: u8 = 0x8a;
    pub const LONG4: u8 = 0x8b;
    pub const BINBYTES: u8 = b'B';
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE8: u8 = 0x8d;
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_SET: u8 = 0x8f;
    pub const ADDITEMS: u8 = 0x90;
    pub const FROZENSET: u8 = 0x91;
    pub const STACK_GLOBAL: u8 = 0x93;
    pub const MEMOIZE: u8 = 0x94;
    pub const FRAME: u8 = 0x95;
    pub const BYTEARRAY8: u8 = 0x96;
}

impl Vm<'_> {
    fn err(&self, problem: PickleProblem) -> CheckpointError {
        CheckpointError::Pickle {
            problem,
            opcode: self.op,
            section: self.section,
            offset: self.op_offset,
        }
    }

    /// Pushes onto the stack, charging the slot.
    fn push(&mut self, v: Value) -> Result<(), CheckpointError> {
        self.budget.charge(VALUE_COST)?;
        self.stack.push(v);
        Ok(())
    }

    /// Puts an object in the arena, charging its slot and what it holds.
    fn alloc(&mut self, o: Object) -> Result<Value, CheckpointError> {
        let held = match &o {
            Object::Tuple(items) | Object::List(items) | Object::Set(items) => {
                items.len() * VALUE_COST
            }
            Object::Dict(d) => d.entries.len() * DICT_ENTRY_COST,
            Object::Tensor(t) => (t.shape.len() + t.stride.len()) * size_of::<u64>(),
            Object::Global(_) | Object::Storage(_) | Object::Device => 0,
        };
        self.budget.charge(OBJECT_COST + held)?;
        Ok(self.arena.push(o))
    }

    fn wrong_type(&self, expected: &'static str, found: &Value) -> CheckpointError {
        self.err(PickleProblem::WrongType {
            expected,
            found: self.arena.kind(found),
        })
    }

    fn pop(&mut self) -> Result<Value, CheckpointError> {
        // Values above the last mark belong to it; popping below it is an underflow too.
        if self.marks.last().is_some_and(|&m| self.stack.len() <= m) {
            return Err(self.err(PickleProblem::StackUnderflow));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.err(PickleProblem::StackUnderflow))
    }

    fn top(&self) -> Result<&Value, CheckpointError> {
        if self.marks.last().is_some_and(|&m| self.stack.len() <= m) {
            return Err(self.err(PickleProblem::StackUnderflow));
        }
        self.stack
            .last()
            .ok_or_else(|| self.err(PickleProblem::StackUnderflow))
    }

    /// Pops everything above the last mark, and the mark.
    fn pop_mark(&mut self) -> Result<Vec<Value>, CheckpointError> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| self.err(PickleProblem::MissingMark))?;
        Ok(self.stack.split_off(m))
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>, CheckpointError> {
        let floor = self.marks.last().copied().unwrap_or(0);
        if self.stack.len() < floor + n {
            return Err(self.err(PickleProblem::StackUnderflow));
        }
        Ok(self.stack.split_off(self.stack.len() - n))
    }

    fn memo_get(&self, index: u64) -> Result<Value, CheckpointError> {
        self.memo
            .get(&index)
            .cloned()
            .ok_or_else(|| self.err(PickleProblem::MissingMemo { index }))
    }

    fn memo_put(&mut self, index: u64) -> Result<(), CheckpointError> {
        let v = self.top()?.clone();
        self.budget.charge(MEMO_COST)?;
        self.memo.insert(index, v);
        Ok(())
    }

    /// A `str` from UTF-8 bytes, charged.
    fn string(&mut self, bytes: Vec<u8>) -> Result<Value, CheckpointError> {
        self.budget.charge(bytes.len() + RC_COST)?;
        String::from_utf8(bytes)
            .map(|s| Value::Str(Rc::from(s)))
            .map_err(|_| self.err(PickleProblem::InvalidUtf8))
    }

    /// A `bytes` value, charged.
    fn byte_string(&mut self, bytes: Vec<u8>) -> Result<Value, CheckpointError> {
        self.budget.charge(bytes.len() + RC_COST)?;
        Ok(Value::Bytes(Rc::from(bytes)))
    }

    fn length_u64(&self, n: i64) -> Result<u64, CheckpointError> {
        u64::try_from(n).map_err(|_| self.err(PickleProblem::NegativeLength))
    }

    fn run<R: Read>(&mut self, input: &mut Input<'_, R>) -> Result<Value, CheckpointError> {
        loop {
            self.op_offset = input.pos;
            // Running out of input here (no STOP) is a truncation like any other.
            self.op = input.u8()?;
            match self.op {
                op::PROTO => {
                    let version = input.u8()?;
                    if version > 5 {
                        return Err(self.err(PickleProblem::UnsupportedProtocol { version }));
                    }
                }
                op::FRAME => {
                    // Frames only group opcodes; the length must fit in what is left.
                    let n = u64::from_le_bytes(input.array()?);
                    input.need(n)?;
                }
                op::STOP => {
                    return self
                        .stack
                        .pop()
                        .ok_or_else(|| self.err(PickleProblem::EmptyResult));
                }
                op::MARK => {
                    self.budget.charge(size_of::<usize>())?;
                    self.marks.push(self.stack.len());
                }
                op::POP => {
                    if self.marks.last() == Some(&self.stack.len()) {
                        // Python's POP on an empty mark frame discards the mark.
                        self.marks.pop();
                    } else {
                        self.pop()?;
                    }
                }
                op::POP_MARK => {
                    self.pop_mark()?;
                }
                op::DUP => {
                    let v = self.top()?.clone();
                    self.push(v)?;
                }
                op::NONE => self.push(Value::None)?,
                op::NEWTRUE => self.push(Value::Bool(true))?,
                op::NEWFALSE => self.push(Value::Bool(false))?,
                op::BININT => {
                    let v = i32::from_le_bytes(input.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                op::BININT1 => {
                    let v = input.u8()?;
                    self.push(Value::Int(v.into()))?;
                }
                op::BININT2 => {
                    let v = u16::from_le_bytes(input.array()?);
                    self.push(Value::Int(v.into()))?;
                }
                op::LONG1 => {
                    let n = input.u8()?;
                    let bytes = input.bytes(n.into())?;
                    self.budget.charge(bytes.len() + RC_COST)?;
                    self.push(long_from_bytes(bytes))?;
                }
                op::LONG4 => {
                    let n = i32::from_le_bytes(input.array()?);
                    let n = self.length_u64(n.into())?;
                    let bytes = input.bytes(n)?;
                    self.budget.charge(bytes.len() + RC_COST)?;
                    self.push(long_from_bytes(bytes))?;
                }
                op::INT => {
                    let line = input.line()?;
                    let v = match line.as_slice() {
                        b"01" => Value::Bool(true),
                        b"00" => Value::Bool(false),
                        s => std::str::from_utf8(s)
                            .ok()
                            .and_then(|s| s.trim().parse::<i64>().ok())
                            .map(Value::Int)
                            .ok_or_else(|| self.err(PickleProblem::InvalidNumber))?,
                    };
                    self.push(v)?;
                }
                op::BINFLOAT => {
                    let v = f64::from_be_bytes(input.array()?);
                    self.push(Value::Float(v))?;
                }
                op::FLOAT => {
                    let line = input.line()?;
                    let v = std::str::from_utf8(&line)
                        .ok()
                        .and_then(|s| s.trim().parse::<f64>().ok())
                        .ok_or_else(|| self.err(PickleProblem::InvalidNumber))?;
                    self.push(Value::Float(v))?;
                }
                op::BINUNICODE => {
                    let n = u32::from_le_bytes(input.array()?);
                    let b = input.bytes(n.into())?;
                    let v = self.string(b)?;
                    self.push(v)?;
                }
                op::SHORT_BINUNICODE => {
                    let n = input.u8()?;
                    let b = input.bytes(n.into())?;
                    let v = self.string(b)?;
                    self.push(v)?;
                }
                op::BINUNICODE8 => {
                    let n = u64::from_le_bytes(input.array()?);
                    let b = input.bytes(n)?;
                    let v = self.string(b)?;
                    self.push(v)?;
                }
                // Python 2 `str`; torch.load decodes it as UTF-8.
                op::BINSTRING => {
                    let n = i32::from_le_bytes(input.array()?);
                    let n = self.length_u64(n.into())?;
                    let b = input.bytes(n)?;
                    let v = self.string(b)?;
                    self.push(v)?;
                }
                op::SHORT_BINSTRING => {
                    let n = input.u8()?;
                    let b = input.bytes(n.into())?;
                    let v = self.string(b)?;
                    self.push(v)?;
                }
                op::BINBYTES => {
                    let n = u32::from_le_bytes(input.array()?);
                    let b = input.bytes(n.into())?;
                    let v = self.byte_string(b)?;
                    self.push(v)?;
                }
                op::SHORT_BINBYTES => {
                    let n = input.u8()?;
                    let b = input.bytes(n.into())?;
                    let v = self.byte_string(b)?;
                    self.push(v)?;
                }
                op::BINBYTES8 | op::BYTEARRAY8 => {
                    let n = u64::from_le_bytes(input.array()?);
                    let b = input.bytes(n)?;
                    let v = self.byte_string(b)?;
                    self.push(v)?;
                }
                op::EMPTY_TUPLE => {
                    let v = self.alloc(Object::Tuple(Vec::new()))?;
                    self.push(v)?;
                }
                op::TUPLE => {
                    let items = self.pop_mark()?;
                    let v = self.alloc(Object::Tuple(items))?;
                    self.push(v)?;
                }
                op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                    let n = usize::from(self.op - op::TUPLE1 + 1);
                    let items = self.pop_n(n)?;
                    let v = self.alloc(Object::Tuple(items))?;
                    self.push(v)?;
                }
                op::EMPTY_LIST => {
                    let v = self.alloc(Object::List(Vec::new()))?;
                    self.push(v)?;
                }
                op::LIST => {
                    let items = self.pop_mark()?;
                    let v = self.alloc(Object::List(items))?;
                    self.push(v)?;
                }
                op::APPEND => {
                    let item = self.pop()?;
                    let target = self.top()?.clone();
                    self.budget.charge(VALUE_COST)?;
                    self.list_mut(&target)?.push(item);
                }
                op::APPENDS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.budget.charge(items.len() * VALUE_COST)?;
                    self.list_mut(&target)?.extend(items);
                }
                op::EMPTY_DICT => {
                    let v = self.alloc(Object::Dict(Dict::default()))?;
                    self.push(v)?;
                }
                op::DICT => {
                    let items = self.pop_mark()?;
                    let mut d = Dict::default();
                    let mut it = items.into_iter();
                    while let Some(k) = it.next() {
                        let v = it
                            .next()
                            .ok_or_else(|| self.err(PickleProblem::StackUnderflow))?;
                        d.insert(k, v);
                    }
                    let v = self.alloc(Object::Dict(d))?;
                    self.push(v)?;
                }
                op::SETITEM => {
                    let value = self.pop()?;
                    let key = self.pop()?;
                    let target = self.top()?.clone();
                    self.budget.charge(DICT_ENTRY_COST)?;
                    self.dict_mut(&target)?.insert(key, value);
                }
                op::SETITEMS => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err(self.err(PickleProblem::StackUnderflow));
                    }
                    let target = self.top()?.clone();
                    self.budget.charge(items.len() / 2 * DICT_ENTRY_COST)?;
                    let d = self.dict_mut(&target)?;
                    let mut it = items.into_iter();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        d.insert(k, v);
                    }
                }
                op::EMPTY_SET => {
                    let v = self.alloc(Object::Set(Vec::new()))?;
                    self.push(v)?;
                }
                op::ADDITEMS => {
                    let items = self.pop_mark()?;
                    let target = self.top()?.clone();
                    self.budget.charge(items.len() * VALUE_COST)?;
                    match &target {
                        Value::Obj(id) => match self.arena.get_mut(*id) {
                            Object::Set(s) => s.extend(items),
                            _ => return Err(self.wrong_type("set", &target)),
                        },
                        _ => return Err(self.wrong_type("set", &target)),
                    }
                }
                op::FROZENSET => {
                    let items = self.pop_mark()?;
                    let v = self.alloc(Object::Set(items))?;
                    self.push(v)?;
                }
                op::PUT => {
                    let line = input.line()?;
                    let index = std::str::from_utf8(&line)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| self.err(PickleProblem::InvalidNumber))?;
                    self.memo_put(index)?;
                }
                op::BINPUT => {
                    let index = input.u8()?;
                    self.memo_put(index.into())?;
                }
                op::LONG_BINPUT => {
                    let index = u32::from_le_bytes(input.array()?);
                    self.memo_put(index.into())?;
                }
                op::MEMOIZE => {
                    let index = self.memo.len() as u64;
                    self.memo_put(index)?;
                }
                op::GET => {
                    let line = input.line()?;
                    let index = std::str::from_utf8(&line)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                        .ok_or_else(|| self.err(PickleProblem::InvalidNumber))?;
                    let v = self.memo_get(index)?;
                    self.push(v)?;
                }
                op::BINGET => {
                    let index = input.u8()?;
                    let v = self.memo_get(index.into())?;
                    self.push(v)?;
                }
                op::LONG_BINGET => {
                    let index = u32::from_le_bytes(input.array()?);
                    let v = self.memo_get(index.into())?;
                    self.push(v)?;
                }
                op::GLOBAL => {
                    let module = input.line()?;
                    let name = input.line()?;
                    let v = self.global(&module, &name)?;
                    self.push(v)?;
                }
                op::STACK_GLOBAL => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                        let bad = if matches!(module, Value::Str(_)) {
                            &name
                        } else {
                            &module
                        };
                        return Err(self.wrong_type("str", bad));
                    };
                    let v = self.global(module.as_bytes(), name.as_bytes())?;
                    self.push(v)?;
                }
                op::REDUCE => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(&callable, &args)?;
                    self.push(v)?;
                }
                op::BUILD => {
                    let _state = self.pop()?;
                    let target = self.top()?;
                    // OrderedDict state dicts carry `_metadata` as instance state: ignored.
                    match target {
                        Value::Obj(id) if matches!(self.arena.get(*id), Object::Dict(_)) => {}
                        other => {
                            let target = self.arena.kind(other);
                            return Err(self.err(PickleProblem::UnsupportedBuild { target }));
                        }
                    }
                }
                op::BINPERSID => {
                    let pid = self.pop()?;
                    let v = self.persistent_load(&pid)?;
                    self.push(v)?;
                }
                other => {
                    // INST, OBJ, NEWOBJ, NEWOBJ_EX (object construction), EXT1-4, PERSID,
                    // STRING, UNICODE, LONG (text forms), buffers, and non-opcodes.
                    return Err(CheckpointError::UnsupportedOpcode {
                        opcode: other,
                        section: self.section,
                        offset: self.op_offset,
                    });
                }
            }
        }
    }

    fn list_mut(&mut self, target: &Value) -> Result<&mut Vec<Value>, CheckpointError> {
        if let Value::Obj(id) = target
            && matches!(self.arena.get(*id), Object::List(_))
        {
            let Object::List(l) = self.arena.get_mut(*id) else {
                unreachable!("checked above")
            };
            return Ok(l);
        }
        Err(self.wrong_type("list", target))
    }

    fn dict_mut(&mut self, target: &Value) -> Result<&mut Dict, CheckpointError> {
        if let Value::Obj(id) = target
            && matches!(self.arena.get(*id), Object::Dict(_))
        {
            let Object::Dict(d) = self.arena.get_mut(*id) else {
                unreachable!("checked above")
            };
            return Ok(d);
        }
        Err(self.wrong_type("dict", target))
    }

    fn global(&mut self, module: &[u8], name: &[u8]) -> Result<Value, CheckpointError> {
        let module = String::from_utf8_lossy(module);
        let name = String::from_utf8_lossy(name);
        match resolve_global(&module, &name) {
            Some(c) => self.alloc(Object::Global(c)),
            None => Err(CheckpointError::ForbiddenGlobal {
                module: module.into_owned(),
                name: name.into_owned(),
                section: self.section,
                offset: self.op_offset,
            }),
        }
    }

    fn tuple_items(&self, v: &Value) -> Result<&[Value], CheckpointError> {
        if let Value::Obj(id) = v
            && let Object::Tuple(items) = self.arena.get(*id)
        {
            return Ok(items);
        }
        Err(self.wrong_type("tuple", v))
    }

    fn bad_args(&self, callable: Callable, reason: &'static str) -> CheckpointError {
        self.err(PickleProblem::BadArguments {
            callable: callable.name(),
            reason,
        })
    }

    fn reduce(&mut self, callable: &Value, args: &Value) -> Result<Value, CheckpointError> {
        let c = match callable {
            Value::Obj(id) => match self.arena.get(*id) {
                Object::Global(c) => *c,
                _ => return Err(self.wrong_type("an allowed global", callable)),
            },
            _ => return Err(self.wrong_type("an allowed global", callable)),
        };
        let args = self.tuple_items(args)?;
        // Checked before copying: a shared huge tuple must not be copied per call.
        if args.len() > 7 {
            return Err(self.bad_args(c, "too many arguments"));
        }
        let args = args.to_vec();
        match c {
            Callable::OrderedDict => {
                if !args.is_empty() {
                    return Err(self.bad_args(c, "expected no arguments"));
                }
                self.alloc(Object::Dict(Dict::default()))
            }
            Callable::RebuildTensorV2 => {
                if args.len() != 6 && args.len() != 7 {
                    return Err(self.bad_args(c, "expected 6 or 7 arguments"));
                }
                let storage = match &args[0] {
                    Value::Obj(id) => match self.arena.get(*id) {
                        Object::Storage(s) => s.clone(),
                        _ => return Err(self.bad_args(c, "argument 0 is not a storage")),
                    },
                    _ => return Err(self.bad_args(c, "argument 0 is not a storage")),
                };
                let storage_offset = match args[1] {
                    Value::Int(o) if o >= 0 => o as u64,
                    _ => return Err(self.bad_args(c, "storage offset is not a non-negative int")),
                };
                let shape = self
                    .int_tuple(&args[2])?
                    .ok_or_else(|| self.bad_args(c, "size is not a tuple of non-negative ints"))?;
                let stride = self.int_tuple(&args[3])?.ok_or_else(|| {
                    self.bad_args(c, "stride is not a tuple of non-negative ints")
                })?;
                if shape.len() != stride.len() {
                    return Err(self.bad_args(c, "size and stride differ in length"));
                }
                if !matches!(args[4], Value::Bool(_) | Value::Int(_)) {
                    return Err(self.bad_args(c, "requires_grad is not a bool"));
                }
                self.alloc(Object::Tensor(TensorRef {
                    storage,
                    storage_offset,
                    shape,
                    stride,
                }))
            }
            Callable::RebuildParameter | Callable::RebuildParameterWithState => {
                let n = if c == Callable::RebuildParameter {
                    3
                } else {
                    4
                };
                if args.len() != n {
                    return Err(self.bad_args(c, "wrong number of arguments"));
                }
                match &args[0] {
                    Value::Obj(id) if matches!(self.arena.get(*id), Object::Tensor(_)) => {
                        Ok(args[0].clone())
                    }
                    _ => Err(self.bad_args(c, "argument 0 is not a tensor")),
                }
            }
            Callable::Device => match args.as_slice() {
                [Value::Str(_)] | [Value::Str(_), Value::Int(_)] => self.alloc(Object::Device),
                _ => Err(self.bad_args(c, "expected (str) or (str, int)")),
            },
            Callable::StorageClass(_) => Err(self.bad_args(c, "storage classes are not callable")),
        }
    }

    /// A tuple of non-negative ints (`None` if it is not one); longer than `max_dims` is
    /// an error before anything is copied.
    fn int_tuple(&self, v: &Value) -> Result<Option<Vec<u64>>, CheckpointError> {
        let Ok(items) = self.tuple_items(v) else {
            return Ok(None);
        };
        if items.len() > self.max_dims {
            return Err(CheckpointError::LimitExceeded {
                limit: Limit::Dimensions,
                value: items.len() as u64,
                max: self.max_dims as u64,
                key: None,
            });
        }
        Ok(items
            .iter()
            .map(|x| match x {
                Value::Int(i) if *i >= 0 => Some(*i as u64),
                _ => None,
            })
            .collect())
    }

    fn persistent_load(&mut self, pid: &Value) -> Result<Value, CheckpointError> {
        let bad = |vm: &Self, reason| vm.err(PickleProblem::BadPersistentId { reason });
        if self.storages.is_none() {
            return Err(self.err(PickleProblem::UnexpectedPersistentId));
        }
        let items = self
            .tuple_items(pid)
            .map_err(|_| bad(self, "not a tuple"))?;
        if items.len() != 5 && items.len() != 6 {
            return Err(bad(self, "expected 5 or 6 elements"));
        }
        let items = items.to_vec();
        match &items[0] {
            Value::Str(s) if &**s == "storage" => {}
            _ => return Err(bad(self, "first element is not 'storage'")),
        }
        let dtype = match &items[1] {
            Value::Obj(id) => match self.arena.get(*id) {
                Object::Global(Callable::StorageClass(d)) => *d,
                _ => return Err(bad(self, "second element is not a storage class")),
            },
            _ => return Err(bad(self, "second element is not a storage class")),
        };
        let Value::Str(key) = &items[2] else {
            return Err(bad(self, "storage key is not a str"));
        };
        if key.len() > MAX_STORAGE_KEY {
            return Err(bad(self, "storage key is longer than 256 bytes"));
        }
        let Value::Str(location) = &items[3] else {
            return Err(bad(self, "location is not a str"));
        };
        if !location_supported(location) {
            return Err(self.err(PickleProblem::UnsupportedLocation {
                location: location.to_string(),
            }));
        }
        let numel = match items[4] {
            Value::Int(n) if n >= 0 => n as u64,
            _ => return Err(bad(self, "element count is not a non-negative int")),
        };
        // Legacy files: optional view metadata (view_key, offset, size) into the root storage.
        let (elem_offset, view_numel) = match items.get(5) {
            None | Some(Value::None) => (0, numel),
            Some(v) => {
                let view = self
                    .tuple_items(v)
                    .map_err(|_| bad(self, "view metadata is not a tuple"))?;
                match view {
                    [Value::Str(_), Value::Int(o), Value::Int(n)] if *o >= 0 && *n >= 0 => {
                        let (o, n) = (*o as u64, *n as u64);
                        if o.checked_add(n).is_none_or(|end| end > numel) {
                            return Err(bad(self, "storage view outside its root storage"));
                        }
                        (o, n)
                    }
                    _ => return Err(bad(self, "view metadata is not (str, int, int)")),
                }
            }
        };
        let conflict = {
            let table = self.storages.as_deref_mut().expect("checked above");
            match table.decls.get(key) {
                Some(&(d, n)) => d != dtype || n != numel,
                None => {
                    self.budget.charge(STORAGE_DECL_COST)?;
                    table.decls.insert(key.clone(), (dtype, numel));
                    table.order.push(key.clone());
                    false
                }
            }
        };
        if conflict {
            return Err(self.err(PickleProblem::ConflictingStorage {
                key: key.to_string(),
            }));
        }
        self.alloc(Object::Storage(StorageRef {
            key: key.clone(),
            dtype,
            location: location.clone(),
            elem_offset,
            numel: view_numel,
            root_numel: numel,
        }))
    }
}

/// torch's storage keys are short numbers; longer keys are refused so that hashing
/// them stays cheap.
pub(crate) const MAX_STORAGE_KEY: usize = 256;

/// `cpu`, `cuda`, `cuda:N`, `mps`, `xpu`, `xpu:N`: where torch.save found the storage.
/// The bytes in the file are the same wherever the storage lived.
fn location_supported(loc: &str) -> bool {
    if loc.len() > 32 {
        return false;
    }
    let (dev, idx) = match loc.split_once(':') {
        Some((d, i)) => (d, Some(i)),
        None => (loc, None),
    };
    let idx_ok = idx.is_none_or(|i| !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()));
    match dev {
        "cpu" | "mps" => idx.is_none(),
        "cuda" | "xpu" => idx_ok,
        _ => false,
    }
}

/// Python's `decode_long`: little-endian two's complement.
fn long_from_bytes(bytes: Vec<u8>) -> Value {
    if bytes.is_empty() {
        return Value::Int(0);
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let fill = if negative { 0xff } else { 0 };
    if bytes.len() <= 8 || bytes[8..].iter().all(|&b| b == fill) {
        // Fits if the bytes above 8 are sign extension and bit 63 agrees with the sign.
        let mut b = [fill; 8];
        let n = bytes.len().min(8);
        b[..n].copy_from_slice(&bytes[..n]);
        let v = i64::from_le_bytes(b);
        if (v < 0) == negative {
            return Value::Int(v);
        }
    }
    Value::BigInt(Rc::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longs() {
        assert!(matches!(long_from_bytes(vec![]), Value::Int(0)));
        assert!(matches!(long_from_bytes(vec![0xff]), Value::Int(-1)));
        assert!(matches!(long_from_bytes(vec![0x80, 0x00]), Value::Int(128)));
        assert!(matches!(
            long_from_bytes(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0]),
            Value::BigInt(_)
        ));
        assert!(matches!(
            long_from_bytes(vec![0, 0, 0, 0, 0, 0, 0, 0x80, 0xff]),
            Value::Int(i64::MIN)
        ));
    }

    #[test]
    fn locations() {
        for ok in ["cpu", "cuda", "cuda:0", "cuda:12", "mps", "xpu:1"] {
            assert!(location_supported(ok), "{ok}");
        }
        for bad in ["meta", "cuda:", "cuda:x", "cpu:0", ""] {
            assert!(!location_supported(bad), "{bad}");
        }
    }
}
