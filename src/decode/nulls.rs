//! All-null arrays for the columns that had no value in a batch.
//!
//! Most of a resource table's thousand columns are empty in most batches. Appending their nulls
//! value by value writes offsets and validity bits for nothing, for every leaf under every absent
//! struct; these arrays are instead views of one buffer of zeros per thread, which all of them
//! share (zeroed offsets are a valid empty string or list, zeroed validity bits are all null).

use std::cell::RefCell;

use arrow::array::{make_array, ArrayData, ArrayRef};
use arrow::buffer::{Buffer, MutableBuffer};
use arrow::datatypes::DataType;

thread_local! {
    static ZEROS: RefCell<Buffer> = RefCell::new(Buffer::from(MutableBuffer::new(0)));
}

/// An array of `len` nulls of type `dt`.
pub(super) fn null_array(dt: &DataType, len: usize) -> ArrayRef {
    ZEROS.with(|zeros| {
        let mut zeros = zeros.borrow_mut();
        // The widest buffer any type needs: 16-byte decimals, or offsets of `len + 1` values.
        let need = (len + 1) * 16;
        if zeros.len() < need {
            *zeros = Buffer::from(MutableBuffer::from_len_zeroed(need.next_power_of_two()));
        }
        make_array(null_data(&zeros, dt, len))
    })
}

fn null_data(zeros: &Buffer, dt: &DataType, len: usize) -> ArrayData {
    let bits = zeros.slice_with_length(0, len.div_ceil(8));
    let builder = ArrayData::builder(dt.clone())
        .len(len)
        .null_bit_buffer(Some(bits.clone()));
    let builder = match dt {
        DataType::Struct(fields) => builder.child_data(
            fields
                .iter()
                .map(|f| null_data(zeros, f.data_type(), len))
                .collect(),
        ),
        DataType::List(item) => builder
            .add_buffer(zeros.slice_with_length(0, (len + 1) * 4))
            .child_data(vec![ArrayData::new_empty(item.data_type())]),
        DataType::Utf8 | DataType::Binary => builder
            .add_buffer(zeros.slice_with_length(0, (len + 1) * 4))
            .add_buffer(zeros.slice_with_length(0, 0)),
        DataType::Boolean => builder.add_buffer(bits),
        other => match other.primitive_width() {
            Some(width) => builder.add_buffer(zeros.slice_with_length(0, width * len)),
            None => return ArrayData::new_null(other, len),
        },
    };
    builder
        .build()
        .expect("zeroed buffers make a valid all-null array")
}

#[cfg(test)]
mod tests {
    use arrow::array::{new_null_array, Array};
    use arrow::datatypes::Schema;

    use super::null_array;

    #[test]
    fn equal_to_arrows_own_null_arrays() {
        for t in ["Observation", "Patient", "Claim"] {
            let schema: Schema =
                crate::schema::node::arrow_schema(crate::schema::FhirVersion::R4, t).unwrap();
            for f in schema.fields() {
                for len in [0, 1, 7, 8193] {
                    let ours = null_array(f.data_type(), len);
                    ours.to_data().validate_full().unwrap();
                    assert_eq!(ours.null_count(), len);
                    assert_eq!(
                        &ours,
                        &new_null_array(f.data_type(), len),
                        "{t}.{}",
                        f.name()
                    );
                }
            }
        }
    }
}
