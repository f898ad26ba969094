//! BigQuery aggregates DataFusion has no counterpart for.
//!
//! `APPROX_TOP_COUNT(x, n)`: the `n` most frequent values of `x` with their counts, as BigQuery
//! gives them: a list of `STRUCT<value, count INT64>`, most frequent first (ties by value, so the
//! answer is the same on every run; NULL is a value like any other). The counts are exact: every
//! distinct value of a group is held while it is aggregated.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, ListArray, StructArray};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::{DataType, Field, FieldRef, Fields, Int64Type};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

/// Registers the aggregates.
pub fn register(ctx: &SessionContext) {
    ctx.register_udaf(AggregateUDF::from(TopCount::new()));
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct TopCount {
    signature: Signature,
}

impl TopCount {
    fn new() -> Self {
        TopCount {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

fn item(value: &DataType) -> DataType {
    DataType::Struct(Fields::from(vec![
        Field::new("value", value.clone(), true),
        Field::new("count", DataType::Int64, false),
    ]))
}

impl AggregateUDFImpl for TopCount {
    fn name(&self) -> &str {
        "approx_top_count"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        if !args[1].is_integer() {
            return exec_err!("APPROX_TOP_COUNT(x, n): n is an integer, not {}", args[1]);
        }
        Ok(DataType::List(Arc::new(Field::new_list_field(
            item(&args[0]),
            true,
        ))))
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        Ok(Box::new(Counts {
            value_type: args.expr_fields[0].data_type().clone(),
            counts: HashMap::new(),
            n: None,
        }))
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let value = args.input_fields[0].data_type().clone();
        Ok(vec![
            Arc::new(Field::new_list(
                "values",
                Field::new_list_field(value, true),
                true,
            )),
            Arc::new(Field::new_list(
                "counts",
                Field::new_list_field(DataType::Int64, true),
                true,
            )),
            Arc::new(Field::new("n", DataType::Int64, true)),
        ])
    }
}

#[derive(Debug)]
struct Counts {
    value_type: DataType,
    counts: HashMap<ScalarValue, i64>,
    n: Option<i64>,
}

impl Counts {
    fn set_n(&mut self, n: &ArrayRef) -> Result<()> {
        if self.n.is_some() {
            return Ok(());
        }
        let n = arrow::compute::cast(n, &DataType::Int64)?;
        let n = n.as_primitive::<Int64Type>();
        if let Some(v) = n.iter().flatten().next() {
            if v < 1 {
                return exec_err!("APPROX_TOP_COUNT(x, n): n must be at least 1, not {v}");
            }
            self.n = Some(v);
        }
        Ok(())
    }
}

impl Accumulator for Counts {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        self.set_n(&values[1])?;
        for i in 0..values[0].len() {
            let v = ScalarValue::try_from_array(&values[0], i)?;
            *self.counts.entry(v).or_default() += 1;
        }
        Ok(())
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        self.set_n(&states[2])?;
        let values = states[0].as_list::<i32>();
        let counts = states[1].as_list::<i32>();
        for row in 0..values.len() {
            if values.is_null(row) {
                continue;
            }
            let vs = values.value(row);
            let cs = counts.value(row);
            let cs = cs.as_primitive::<Int64Type>();
            for i in 0..vs.len() {
                let v = ScalarValue::try_from_array(&vs, i)?;
                *self.counts.entry(v).or_default() += cs.value(i);
            }
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let (values, counts): (Vec<ScalarValue>, Vec<i64>) =
            self.counts.iter().map(|(v, c)| (v.clone(), *c)).unzip();
        let values = ScalarValue::new_list_nullable(&values, &self.value_type);
        let counts: Vec<ScalarValue> = counts
            .into_iter()
            .map(|c| ScalarValue::Int64(Some(c)))
            .collect();
        let counts = ScalarValue::new_list_nullable(&counts, &DataType::Int64);
        Ok(vec![
            ScalarValue::List(values),
            ScalarValue::List(counts),
            ScalarValue::Int64(self.n),
        ])
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        let mut top: Vec<(&ScalarValue, i64)> = self.counts.iter().map(|(v, c)| (v, *c)).collect();
        // Most frequent first; among equals, by value (NULL last), for one answer every run.
        top.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then_with(|| match (a.0.is_null(), b.0.is_null()) {
                    (false, false) => a.0.partial_cmp(b.0).unwrap_or(std::cmp::Ordering::Equal),
                    (x, y) => x.cmp(&y),
                })
        });
        top.truncate(self.n.unwrap_or(0).max(0) as usize);
        let values: Vec<ScalarValue> = top.iter().map(|(v, _)| (*v).clone()).collect();
        let values: ArrayRef = if values.is_empty() {
            arrow::array::new_empty_array(&self.value_type)
        } else {
            ScalarValue::iter_to_array(values)?
        };
        let counts: ArrayRef = Arc::new(Int64Array::from_iter_values(top.iter().map(|t| t.1)));
        let DataType::Struct(fields) = item(&self.value_type) else {
            unreachable!("a struct")
        };
        let items = StructArray::try_new(fields.clone(), vec![values, counts], None)?;
        let list = ListArray::try_new(
            Arc::new(Field::new_list_field(DataType::Struct(fields), true)),
            OffsetBuffer::from_lengths([items.len()]),
            Arc::new(items),
            None,
        )?;
        Ok(ScalarValue::List(Arc::new(list)))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self
                .counts
                .keys()
                .map(|k| k.size() + std::mem::size_of::<i64>())
                .sum::<usize>()
    }
}
