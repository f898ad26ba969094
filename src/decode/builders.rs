//! Arrow builders sized for the batches they fill.
//!
//! A builder starts empty (most columns of a wide schema never get a value) and, at each flush,
//! is replaced by one sized like the batch it gave: arrow's `finish()` leaves a builder with no
//! capacity, so a used column would otherwise regrow by doubling in every batch.

use arrow::array::{
    ArrayBuilder, BooleanArray, BooleanBuilder, GenericByteArray, GenericByteBuilder,
    PrimitiveArray, PrimitiveBuilder,
};
use arrow::datatypes::{ArrowPrimitiveType, ByteArrayType};

pub(super) fn primitives<T: ArrowPrimitiveType>(len: usize) -> PrimitiveBuilder<T> {
    PrimitiveBuilder::with_capacity(len)
}

pub(super) fn bytes<T: ByteArrayType>(len: usize, bytes: usize) -> GenericByteBuilder<T> {
    GenericByteBuilder::with_capacity(len, bytes)
}

/// The builder's array; the builder is replaced by one sized like it.
pub(super) fn finish_primitives<T: ArrowPrimitiveType>(
    b: &mut PrimitiveBuilder<T>,
) -> PrimitiveArray<T> {
    let next = primitives(b.len());
    std::mem::replace(b, next).finish()
}

pub(super) fn finish_bytes<T: ByteArrayType>(b: &mut GenericByteBuilder<T>) -> GenericByteArray<T> {
    let next = bytes(b.len(), b.values_slice().len());
    std::mem::replace(b, next).finish()
}

pub(super) fn finish_booleans(b: &mut BooleanBuilder) -> BooleanArray {
    let next = BooleanBuilder::with_capacity(b.len());
    std::mem::replace(b, next).finish()
}
