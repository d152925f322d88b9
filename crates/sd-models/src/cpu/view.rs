//! A CPU tensor's values read in place: the kernels' operands without `into_data`, which copies
//! any tensor whose storage is shared, as a layer's weight always is (a 1280-channel 3×3 weight
//! is 29 MB in bf16, once per call).

use burn::backend::Flex;
use burn::backend::flex::FlexTensor;
use burn::tensor::{DType, Tensor, bf16};

use super::linear::Values;

/// A CPU tensor's storage, held (shared, not copied) while its values are read.
pub(crate) struct Held(FlexTensor);

impl Held {
    /// The storage of `t` when it lives on the CPU backend without autodiff.
    pub(crate) fn of<const D: usize>(t: Tensor<D>) -> Option<Held> {
        t.try_into_primitive::<Flex>().ok().map(Held)
    }

    /// The values in row-major order: `None` for a strided view or a dtype other than f32 and
    /// bf16.
    pub(crate) fn values(&self) -> Option<Values<'_>> {
        let (start, end) = self.0.layout().contiguous_offsets()?;
        let bytes = self.0.bytes();
        match self.0.dtype() {
            DType::F32 => cast::<f32>(bytes).get(start..end).map(Values::F32),
            DType::BF16 => cast::<bf16>(bytes).get(start..end).map(Values::Bf16),
            _ => None,
        }
    }
}

/// The whole elements of `T` in `bytes` (empty when the buffer is not aligned for `T`, which the
/// backend's allocations always are).
fn cast<T: Plain>(bytes: &[u8]) -> &[T] {
    // SAFETY: `T` is f32 or bf16, for which every bit pattern is a value; `align_to` only hands
    // out the aligned middle.
    let (head, values, _) = unsafe { bytes.align_to::<T>() };
    if head.is_empty() { values } else { &[] }
}

/// Element types any bit pattern is a value of.
trait Plain {}
impl Plain for f32 {}
impl Plain for bf16 {}
