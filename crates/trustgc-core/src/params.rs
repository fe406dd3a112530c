//! Reading and replacing a module's tensors by path, without I/O.
//!
//! Paths are the field names from the module root joined by `.` (`Vec` elements by
//! index), e.g. `flow.stages.1.blocks.0.subnet.conv_reduce.weight`. Loaders use
//! [`parameter_shapes`] to check a file against a model before anything is allocated and
//! [`replace_parameters`] to put the values in; exporters use [`parameter_values`].

use std::collections::HashMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

/// The element kind of a parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    /// A float tensor.
    Float,
    /// An integer tensor.
    Int,
}

/// Path, kind and shape of one parameter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamShape {
    /// The dotted path.
    pub path: String,
    /// Float or int.
    pub kind: ParamKind,
    /// The shape.
    pub shape: Vec<usize>,
}

#[derive(Default)]
struct PathStack {
    parts: Vec<String>,
}

impl PathStack {
    fn enter(&mut self, name: &str) {
        self.parts.push(name.to_string());
    }
    fn exit(&mut self) {
        self.parts.pop();
    }
    fn path(&self) -> String {
        self.parts.join(".")
    }
}

struct ShapeVisitor {
    stack: PathStack,
    out: Vec<ParamShape>,
}

impl<B: Backend> ModuleVisitor<B> for ShapeVisitor {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out.push(ParamShape {
            path: self.stack.path(),
            kind: ParamKind::Float,
            shape: param.lazy_shape().dims::<D>().to_vec(),
        });
    }
    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        self.out.push(ParamShape {
            path: self.stack.path(),
            kind: ParamKind::Int,
            shape: param.lazy_shape().dims::<D>().to_vec(),
        });
    }
}

/// Every parameter (and running statistic) of `module` with its path and shape, without
/// initializing lazy parameters.
pub fn parameter_shapes<B: Backend, M: Module<B>>(module: &M) -> Vec<ParamShape> {
    let mut visitor = ShapeVisitor {
        stack: PathStack::default(),
        out: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

struct ValueVisitor {
    stack: PathStack,
    out: Vec<(String, TensorData)>,
}

impl<B: Backend> ModuleVisitor<B> for ValueVisitor {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        self.out.push((self.stack.path(), param.val().into_data()));
    }
    fn visit_int<const D: usize>(&mut self, param: &Param<Tensor<B, D, Int>>) {
        self.out.push((self.stack.path(), param.val().into_data()));
    }
}

/// Every parameter's values by path (initializes lazy parameters).
pub fn parameter_values<B: Backend, M: Module<B>>(module: &M) -> Vec<(String, TensorData)> {
    let mut visitor = ValueVisitor {
        stack: PathStack::default(),
        out: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

struct ReplaceMapper<'a, B: Backend> {
    stack: PathStack,
    values: &'a mut HashMap<String, TensorData>,
    device: B::Device,
}

impl<B: Backend> ModuleMapper<B> for ReplaceMapper<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        match self.values.remove(&self.stack.path()) {
            Some(data) => {
                let id = param.id;
                // Keep the data's precision (float32 checkpoints give float32 parameters).
                let dtype = data.dtype;
                let tensor = Tensor::<B, D>::from_data(data, (&self.device, dtype));
                param.transform_for_load(tensor, id)
            }
            None => param,
        }
    }
    fn map_int<const D: usize>(
        &mut self,
        param: Param<Tensor<B, D, Int>>,
    ) -> Param<Tensor<B, D, Int>> {
        match self.values.remove(&self.stack.path()) {
            Some(data) => {
                let id = param.id;
                let tensor = Tensor::<B, D, Int>::from_data(data, &self.device);
                param.transform_for_load(tensor, id)
            }
            None => param,
        }
    }
}

/// Replaces the parameters named in `values` (path → data of the parameter's shape),
/// removing each used entry from `values`; what is left was not found in the module.
/// Float parameters take the dtype of their data.
///
/// Shapes must have been checked (see [`parameter_shapes`]): a wrong shape panics in burn.
pub fn replace_parameters<B: Backend, M: Module<B>>(
    module: M,
    values: &mut HashMap<String, TensorData>,
    device: &B::Device,
) -> M {
    let mut mapper = ReplaceMapper::<B> {
        stack: PathStack::default(),
        values,
        device: device.clone(),
    };
    module.map(&mut mapper)
}

struct GradVisitor<'a, B: burn::tensor::backend::AutodiffBackend> {
    stack: PathStack,
    grads: &'a B::Gradients,
    out: Vec<(String, TensorData)>,
}

impl<B: burn::tensor::backend::AutodiffBackend> ModuleVisitor<B> for GradVisitor<'_, B> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.stack.enter(name);
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.exit();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<B, D>>) {
        if let Some(grad) = param.val().grad(self.grads) {
            self.out.push((self.stack.path(), grad.into_data()));
        }
    }
}

/// The gradient of every parameter that has one, by path.
pub fn parameter_gradients<B: burn::tensor::backend::AutodiffBackend, M: Module<B>>(
    module: &M,
    grads: &B::Gradients,
) -> Vec<(String, TensorData)> {
    let mut visitor = GradVisitor::<B> {
        stack: PathStack::default(),
        grads,
        out: Vec::new(),
    };
    module.visit(&mut visitor);
    visitor.out
}

struct CastMapper {
    dtype: burn::tensor::DType,
}

impl<B: Backend> ModuleMapper<B> for CastMapper {
    fn map_float<const D: usize>(&mut self, param: Param<Tensor<B, D>>) -> Param<Tensor<B, D>> {
        let dtype = self.dtype;
        // Cast, then make the result a leaf again so that gradients land on it.
        param.map(|tensor| {
            let require_grad = tensor.is_require_grad();
            tensor.cast(dtype).detach().set_require_grad(require_grad)
        })
    }
}

/// Casts every float parameter and running statistic of `module` to `dtype` (e.g.
/// [`DType::F64`](burn::tensor::DType::F64) to run a model in double precision on a backend that supports
/// it, such as Flex).
pub fn cast_floats<B: Backend, M: Module<B>>(module: M, dtype: burn::tensor::DType) -> M {
    module.map(&mut CastMapper { dtype })
}
