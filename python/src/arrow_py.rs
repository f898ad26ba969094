//! Arrow data into and out of `pyarrow` through the Arrow C data and stream interfaces: the
//! buffers are shared, not copied. (arrow's own `pyarrow` feature does the same, but it turns on
//! features that make every crate above arrow build a second time.)

use arrow::array::{ArrayData, RecordBatch, RecordBatchIterator, RecordBatchReader};
use arrow::datatypes::Schema;
use arrow::ffi::{from_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow::ffi_stream::FFI_ArrowArrayStream;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

fn pyarrow_class<'py>(py: Python<'py>, name: &str) -> PyResult<Bound<'py, PyAny>> {
    py.import("pyarrow")?.getattr(name)
}

/// A reader as a `pyarrow.RecordBatchReader`, which reads it as it is read.
pub fn reader(
    py: Python<'_>,
    reader: Box<dyn RecordBatchReader + Send>,
) -> PyResult<Bound<'_, PyAny>> {
    let stream = FFI_ArrowArrayStream::new(reader);
    // pyarrow moves the stream out of `stream` (its release callback with it).
    pyarrow_class(py, "RecordBatchReader")?
        .call_method1("_import_from_c", (&raw const stream as usize,))
}

/// A batch as a `pyarrow.RecordBatch`.
pub fn batch(py: Python<'_>, batch: RecordBatch) -> PyResult<Bound<'_, PyAny>> {
    let schema = batch.schema();
    let one = RecordBatchIterator::new(vec![Ok(batch)], schema);
    reader(py, Box::new(one))?.call_method0("read_next_batch")
}

/// A schema as a `pyarrow.Schema`.
pub fn schema<'py>(py: Python<'py>, schema: &Schema) -> PyResult<Bound<'py, PyAny>> {
    let c_schema =
        FFI_ArrowSchema::try_from(schema).map_err(|e| PyValueError::new_err(e.to_string()))?;
    pyarrow_class(py, "Schema")?.call_method1("_import_from_c", (&raw const c_schema as usize,))
}

/// A `pyarrow.Array`'s data.
pub fn array_data(value: &Bound<'_, PyAny>) -> PyResult<ArrayData> {
    let mut array = FFI_ArrowArray::empty();
    let mut schema = FFI_ArrowSchema::empty();
    // pyarrow fills both structs; `from_ffi` takes the array (and its release callback).
    value.call_method1(
        "_export_to_c",
        (&raw mut array as usize, &raw mut schema as usize),
    )?;
    // SAFETY: pyarrow filled `array` and `schema` with a valid exported array.
    unsafe { from_ffi(array, &schema) }.map_err(|e| PyValueError::new_err(e.to_string()))
}
