//! bf16 autocast on the CPU backend: what `--dtype bf16` means where the CPU has bf16 dot products
//! ([`crate::cpu::bf16_autocast`]).
//!
//! The weights of every linear and convolution layer are stored in bf16 (half their memory), and
//! their products run in bf16 with f32 accumulation ([`crate::cpu::gemm_bf16`]); every other
//! parameter (norms, embeddings, biases) and every activation stays f32 — what
//! `torch.autocast("cpu", dtype=torch.bfloat16)` does for these models. Elsewhere (other
//! backends, CPUs without AVX512-BF16) `bf16` casts the whole model, as before.

use burn::module::{Module, ModuleMapper, Param};
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{FloatCastAdapter, ModuleAdapter, ModuleContext};
use burn::tensor::{DType, Device, Tensor};

/// Whether a model of compute dtype `dtype` on `device` runs as bf16 autocast.
pub fn applies(dtype: DType, device: Option<&Device>) -> bool {
    dtype == DType::BF16 && device == Some(&Device::flex()) && crate::cpu::bf16_autocast()
}

/// Whether the parameter `name` of a module of type `module_type` (Burn's `Struct:Linear` form)
/// is a product's weight, stored in bf16 under autocast.
fn bf16_param(module_type: Option<&str>, name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    last == "weight" && matches!(module_type, Some("Struct:Linear" | "Struct:Conv2d"))
}

/// The load-time cast of autocast: products' weights to bf16, every other float to f32.
#[derive(Debug, Clone, Default)]
pub(crate) struct AutocastAdapter;

impl ModuleAdapter for AutocastAdapter {
    fn adapt(&self, tensor: PackTensor, ctx: ModuleContext<'_>) -> PackTensor {
        let target = match bf16_param(ctx.module_type(), &tensor.name) {
            true => DType::BF16,
            false => DType::F32,
        };
        FloatCastAdapter::to(target).adapt(tensor, ctx)
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// `module` cast as autocast stores it (for models built in memory).
pub fn cast<M: Module>(module: M) -> M {
    #[derive(Default)]
    struct Autocast {
        /// Types of the modules entered, innermost last.
        stack: Vec<String>,
        /// The innermost `Struct:`/`Enum:` entries' field names.
        name: Vec<String>,
    }
    impl ModuleMapper for Autocast {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.stack.push(container_type.to_string());
            self.name.push(name.to_string());
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
            self.name.pop();
        }
        fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let holder = self
                .stack
                .iter()
                .rev()
                .find(|t| t.starts_with("Struct:") || t.starts_with("Enum:"))
                .map(String::as_str);
            // The mapper sees the parameter without its field name: a product's module has two
            // floats, the 2-D/4-D weight and the 1-D bias.
            let target = match bf16_param(holder, "weight") && D > 1 {
                true => DType::BF16,
                false => DType::F32,
            };
            param.map(|t| t.cast(target))
        }
    }
    module.map(&mut Autocast::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_products_weights_are_bf16() {
        assert!(bf16_param(
            Some("Struct:Linear"),
            "down_blocks.0.attentions.0.proj_in.weight"
        ));
        assert!(bf16_param(Some("Struct:Conv2d"), "weight"));
        assert!(!bf16_param(Some("Struct:Linear"), "to_q.bias"));
        assert!(!bf16_param(Some("Struct:GroupNorm"), "norm.gamma"));
        assert!(!bf16_param(
            Some("Struct:Embedding"),
            "token_embedding.weight"
        ));
        let device = Device::flex();
        let conv = cast(crate::layers::conv2d(4, 8, 3, 1, 1, &device));
        assert_eq!(conv.weight.val().dtype(), DType::BF16);
        assert_eq!(conv.bias.unwrap().val().dtype(), DType::F32);
        let norm = cast(crate::layers::group_norm(2, 8, 1e-5, &device));
        assert_eq!(norm.gamma.unwrap().val().dtype(), DType::F32);
    }
}
