//! A compiled FHIRPath expression as a DataFusion scalar function: its arguments are the
//! resource columns it reads (and the `forEach` item it is relative to), its result one value,
//! a list, a filter or the items to unnest.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, Int32Array, RecordBatch, RecordBatchOptions, StringArray,
    StringBuilder, StructArray,
};
use arrow::datatypes::{DataType, Field, Fields, Schema};
use base64::Engine as _;
use datafusion::common::{exec_err, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::{col, Expr};

use super::fhirpath::eval::{indexed_items, item_fields, truthy, Coll, Env, Node};
use crate::encode::encode_row_with;
use crate::schema::node::{resource_members, Member};
use crate::schema::FhirVersion;

/// What a compiled expression gives back.
#[derive(Debug, Clone)]
pub enum Output {
    /// `where`: true when the result is exactly `true`.
    Filter,
    /// A column: one value (an error when there are more) or, for `collection`, a list.
    Value { collection: bool, dt: DataType },
    /// `forEach`/`forEachOrNull`/`repeat`: `List<Struct{i, v}>` to unnest.
    Items { or_null: bool, dt: DataType },
}

impl Output {
    /// The Arrow type of the function's result.
    pub fn data_type(&self) -> DataType {
        match self {
            Output::Filter => DataType::Boolean,
            Output::Value { collection, dt } => {
                let dt = output_type(dt);
                if *collection {
                    DataType::List(Arc::new(Field::new_list_field(dt, true)))
                } else {
                    dt
                }
            }
            Output::Items { dt, .. } => DataType::List(Arc::new(Field::new_list_field(
                DataType::Struct(item_fields(dt)),
                true,
            ))),
        }
    }
}

/// Binary (base64Binary) is given as its base64 text, as in FHIR JSON; `{}` as a string.
fn output_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Binary | DataType::Null => DataType::Utf8,
        other => other.clone(),
    }
}

/// The resource columns a compiled expression reads.
#[derive(Debug, Clone)]
pub enum Args {
    /// These typed columns.
    Columns(Vec<String>),
    /// The columns of some of the resource's elements, and `_overflow`: the function reads
    /// the resource's JSON (those elements of it), put together as `to-ndjson` does.
    Resource {
        version: FhirVersion,
        resource_type: String,
        elements: Vec<String>,
        columns: Vec<String>,
    },
}

/// A compiled expression, where in the view it comes from, and what it reads.
#[derive(Debug)]
pub struct ViewFunction {
    name: String,
    /// `select[0].column[1].path`: for errors.
    at: String,
    node: Node,
    output: Output,
    /// The `forEach` item column the expression is relative to, if any: the first argument.
    item: Option<String>,
    /// The resource columns read: the other arguments.
    root_fields: Vec<String>,
    /// Set when the expression reads the resource's JSON: its type, and the elements read.
    root_json: Option<(FhirVersion, String, Vec<String>)>,
    signature: Signature,
}

impl PartialEq for ViewFunction {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for ViewFunction {}
impl Hash for ViewFunction {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state)
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

impl ViewFunction {
    /// The call of a compiled expression, as a DataFusion expression.
    pub fn call(at: &str, node: Node, output: Output, item: Option<String>, args: Args) -> Expr {
        let (udf, columns) = Self::udf(at, node, output, item, args);
        let args: Vec<Expr> = columns
            .iter()
            .map(|c| col(datafusion::common::Column::from_name(c)))
            .collect();
        udf.call(args)
    }

    /// The function, and the columns to call it with (in order).
    pub fn udf(
        at: &str,
        node: Node,
        output: Output,
        item: Option<String>,
        args: Args,
    ) -> (ScalarUDF, Vec<String>) {
        let (mut root_fields, root_json) = match args {
            Args::Columns(c) => (c, None),
            Args::Resource {
                version,
                resource_type,
                elements,
                columns,
            } => (columns, Some((version, resource_type, elements))),
        };
        if item.is_none() && root_fields.is_empty() {
            // A function needs an argument to know how many rows it has.
            root_fields.push("id".into());
        }
        let name = format!("fhirpath_{}", NEXT.fetch_add(1, Ordering::Relaxed));
        let columns: Vec<String> = item.iter().chain(root_fields.iter()).cloned().collect();
        let f = ViewFunction {
            name,
            at: at.to_string(),
            node,
            output,
            item,
            root_fields,
            root_json,
            signature: Signature::variadic_any(Volatility::Immutable),
        };
        (ScalarUDF::new_from_impl(f), columns)
    }

    fn run(&self, args: &[ArrayRef], n: usize) -> std::result::Result<ArrayRef, String> {
        let (item, roots) = match self.item {
            Some(_) => (Some(&args[0]), &args[1..]),
            None => (None, args),
        };
        let fields: Fields = self
            .root_fields
            .iter()
            .zip(roots)
            .map(|(name, a)| Field::new(name, a.data_type().clone(), true))
            .collect();
        let root: ArrayRef = match &self.root_json {
            None => Arc::new(
                StructArray::try_new_with_length(fields, roots.to_vec(), None, n)
                    .map_err(|e| e.to_string())?,
            ),
            Some((version, resource_type, elements)) => {
                resource_json(*version, resource_type, elements, fields, roots, n)?
            }
        };
        let (focus, row_index) = match item {
            None => (
                Coll::singletons(root.clone()),
                Arc::new(Int32Array::from(vec![0; n])) as ArrayRef,
            ),
            Some(item) => {
                let st = item.as_struct();
                (
                    Coll::from_nullable(st.column(1).clone())?,
                    st.column(0).clone(),
                )
            }
        };
        let env = Env {
            root: &root,
            row_index: &row_index,
            row_of: None,
        };
        let c = self.node.eval(&focus, &env)?;
        Ok(match &self.output {
            Output::Filter => Arc::new(truthy(&c)?),
            Output::Value { collection, .. } => {
                let c = Coll {
                    values: to_output(&c.values),
                    offsets: c.offsets,
                };
                if *collection {
                    Arc::new(c.into_list())
                } else {
                    c.singleton()?
                }
            }
            Output::Items { or_null, .. } => Arc::new(indexed_items(&c, *or_null)?),
        })
    }
}

/// The JSON text of each row's resource (of the `elements` read), from their columns and
/// `_overflow`.
fn resource_json(
    version: FhirVersion,
    resource_type: &str,
    elements: &[String],
    fields: Fields,
    columns: &[ArrayRef],
    n: usize,
) -> std::result::Result<ArrayRef, String> {
    let members: Vec<Member> = resource_members(version, resource_type)
        .ok_or("not a resource type")?
        .iter()
        .filter(|m| elements.contains(&m.name))
        .cloned()
        .collect();
    let keep = |pointer: &str| {
        let top = pointer.split('/').nth(1).unwrap_or("");
        let top = top.strip_prefix('_').unwrap_or(top);
        elements.iter().any(|e| e == top)
    };
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::new(fields)),
        columns.to_vec(),
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(|e| e.to_string())?;
    let mut out = StringBuilder::with_capacity(n, n * 1024);
    let mut text = String::new();
    for row in 0..n {
        text.clear();
        encode_row_with(resource_type, &members, &batch, row, &keep)
            .map_err(|e| format!("{e:#}"))?
            .write_to(&mut text);
        out.append_value(&text);
    }
    Ok(Arc::new(out.finish()))
}

fn to_output(a: &ArrayRef) -> ArrayRef {
    match a.data_type() {
        DataType::Binary => {
            let b = a.as_binary::<i32>();
            let e = base64::engine::general_purpose::STANDARD;
            Arc::new(
                b.iter()
                    .map(|v| v.map(|v| e.encode(v)))
                    .collect::<StringArray>(),
            )
        }
        DataType::Null => arrow::array::new_null_array(&DataType::Utf8, a.len()),
        _ => a.clone(),
    }
}

impl ScalarUDFImpl for ViewFunction {
    fn name(&self) -> &str {
        &self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(self.output.data_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        match self.run(&arrays, n) {
            Ok(a) => {
                let want = self.output.data_type();
                if a.data_type() != &want {
                    return exec_err!(
                        "{}: internal error: computed {} where {} was planned",
                        self.at,
                        a.data_type(),
                        want
                    );
                }
                Ok(ColumnarValue::Array(a))
            }
            Err(e) => exec_err!("{}: {e}", self.at),
        }
    }
}
