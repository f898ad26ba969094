//! Parquet rows back to FHIR JSON: the inverse of [`crate::decode`], and the proof that nothing
//! was lost. The typed columns give the resource, then each `_overflow` entry is set at its JSON
//! Pointer.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use crate::dataset::deletion::reader;
use anyhow::{bail, Context, Result};
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::datatypes::{Decimal128Type, Int32Type, TimestampMicrosecondType};
use base64::Engine as _;

use crate::dataset::DataFile;
use crate::decode::datetime::instant_text;
use crate::decode::decimal::decimal_text;
use crate::json::{self, Json};
use crate::schema::node::{
    primitive_extension_members, resource_members, Member, Prim, Shape, OVERFLOW_COLUMN,
};
use crate::store::{Location, RemoteFile};

/// Writes every resource type of a converted dataset (local or on a store) to
/// `out/<Type>.ndjson`; returns the counts.
pub fn to_ndjson(dataset: impl Into<Location>, out: &Path) -> Result<BTreeMap<String, u64>> {
    let dataset = &dataset.into();
    fs_err::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let mut counts = BTreeMap::new();
    for table in crate::dataset::tables(dataset)? {
        let (name, version) = (table.name, table.fhir_version);
        let members = resource_members(version, &name).expect("a resource table");
        let schema = crate::schema::node::arrow_schema(version, &name).expect("a resource table");
        let mut w = BufWriter::new(File::create(out.join(format!("{name}.ndjson")))?);
        let mut n = 0;
        let mut line = String::new();
        let selections: Vec<_> = match &table.delta {
            Some(snap) => snap.files.iter().map(|f| f.selection()).collect(),
            None => Vec::new(),
        };
        for (i, f) in table.files.iter().enumerate() {
            // The rows a deletion vector removed are not the table's.
            let selection = selections.get(i).cloned().flatten();
            let reader = match (f, dataset) {
                (DataFile::Local(p), _) => reader(File::open(p)?, selection)?,
                (DataFile::Remote { path, size }, Location::Remote(remote)) => {
                    reader(RemoteFile::new(remote, path.clone(), *size), selection)?
                }
                (DataFile::Remote { .. }, Location::Local(_)) => unreachable!("a local dataset"),
            };
            for batch in reader {
                let batch = to_table_schema(batch?, &schema)?;
                for row in 0..batch.num_rows() {
                    line.clear();
                    encode_row(&name, &members, &batch, row)?.write_to(&mut line);
                    line.push('\n');
                    w.write_all(line.as_bytes())?;
                    n += 1;
                }
            }
        }
        w.flush()?;
        counts.insert(name, n);
    }
    Ok(counts)
}

/// `batch`, read from a file, as a batch of the table's schema: a file written with
/// `--columns present` holds part of the typed schema's columns, and the others are NULL. The
/// columns are matched by name, down to the fields of structs (partition columns, which are not
/// in the files, are not in the table's schema either).
pub fn to_table_schema(
    batch: RecordBatch,
    schema: &arrow::datatypes::Schema,
) -> Result<RecordBatch> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let options = arrow::compute::CastOptions::default();
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
            Some(c) => datafusion::common::nested_struct::cast_column(c, f.data_type(), &options)
                .with_context(|| format!("column {} does not fit the table's schema", f.name())),
            None => Ok(arrow::array::new_null_array(
                f.data_type(),
                batch.num_rows(),
            )),
        })
        .collect::<Result<Vec<_>>>()?;
    let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(
        std::sync::Arc::new(schema.clone()),
        columns,
        &options,
    )?)
}

/// One row of a resource table as the FHIR JSON resource.
pub fn encode_row(
    resource_type: &str,
    members: &[Member],
    batch: &RecordBatch,
    row: usize,
) -> Result<Json<'static>> {
    encode_row_with(resource_type, members, batch, row, &|_| true)
}

/// One row as FHIR JSON, of `members` only (the batch holds their columns, in order, and
/// `_overflow`), with the `_overflow` entries whose JSON Pointer `keep` accepts.
pub fn encode_row_with(
    resource_type: &str,
    members: &[Member],
    batch: &RecordBatch,
    row: usize,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Json<'static>> {
    let mut obj = vec![(
        Cow::Borrowed("resourceType"),
        Json::Str(Cow::Owned(resource_type.to_string())),
    )];
    encode_members(members, batch.columns(), row, &mut obj);
    let mut doc = Json::Obj(Cow::Owned(obj));
    if let Some(col) = batch.column_by_name(OVERFLOW_COLUMN) {
        let col = col.as_string::<i32>();
        if col.is_valid(row) {
            let kept = json::parse(col.value(row)).context("an _overflow value is not JSON")?;
            let Json::Obj(entries) = kept else {
                bail!("an _overflow value is not a JSON object")
            };
            for (pointer, value) in entries.into_owned() {
                if keep(&pointer) {
                    set_pointer(&mut doc, &pointer, value.into_owned());
                }
            }
        }
    }
    Ok(doc)
}

fn encode_members(
    members: &[Member],
    columns: &[ArrayRef],
    row: usize,
    out: &mut Vec<(Cow<'static, str>, Json<'static>)>,
) {
    let mut c = 0;
    for m in members.iter().filter(|m| !m.cut) {
        let col = &columns[c];
        c += 1;
        if let Shape::Prim(p) = m.shape {
            if p.companion_type().is_some() {
                c += 1;
            }
        }
        if col.is_valid(row) {
            out.push((
                Cow::Owned(m.name.clone()),
                encode_value(&m.shape, m.repeated, col, row),
            ));
        }
        if m.prim_ext {
            let ext = &columns[c];
            c += 1;
            if ext.is_valid(row) {
                let shape = Shape::Struct(primitive_extension_members());
                out.push((
                    Cow::Owned(format!("_{}", m.name)),
                    encode_value(&shape, m.repeated, ext, row),
                ));
            }
        }
    }
}

fn encode_value(shape: &Shape, repeated: bool, col: &ArrayRef, row: usize) -> Json<'static> {
    if repeated {
        let items = col.as_list::<i32>().value(row);
        return Json::Arr(
            (0..items.len())
                .map(|i| {
                    if items.is_valid(i) {
                        encode_item(shape, &items, i)
                    } else {
                        Json::Null
                    }
                })
                .collect(),
        );
    }
    encode_item(shape, col, row)
}

fn encode_item(shape: &Shape, col: &ArrayRef, i: usize) -> Json<'static> {
    let owned = |s: String| Json::Str(Cow::Owned(s));
    match shape {
        Shape::Prim(p) => match p {
            Prim::Boolean => Json::Bool(col.as_boolean().value(i)),
            Prim::Integer => Json::Num(Cow::Owned(
                col.as_primitive::<Int32Type>().value(i).to_string(),
            )),
            Prim::Decimal => Json::Num(Cow::Owned(decimal_text(
                col.as_primitive::<Decimal128Type>().value(i),
            ))),
            Prim::String | Prim::Date | Prim::DateTime | Prim::Time => {
                owned(col.as_string::<i32>().value(i).to_string())
            }
            Prim::Instant => owned(instant_text(
                col.as_primitive::<TimestampMicrosecondType>().value(i),
            )),
            Prim::Base64 => owned(
                base64::engine::general_purpose::STANDARD.encode(col.as_binary::<i32>().value(i)),
            ),
        },
        Shape::Struct(children) => {
            let s = col.as_struct();
            let mut obj = Vec::new();
            encode_members(children, s.columns(), i, &mut obj);
            Json::Obj(Cow::Owned(obj))
        }
        Shape::Json => {
            let text = col.as_string::<i32>().value(i);
            json::parse(text).unwrap_or_else(|_| owned(text.to_string()))
        }
    }
}

/// Sets `value` at a JSON Pointer, creating objects on the way and growing arrays with nulls.
pub fn set_pointer(doc: &mut Json<'static>, pointer: &str, value: Json<'static>) {
    let tokens: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect();
    set_at(doc, &tokens, value);
}

fn set_at(cur: &mut Json<'static>, tokens: &[String], value: Json<'static>) {
    let Some((token, rest)) = tokens.split_first() else {
        *cur = value;
        return;
    };
    let index = token
        .parse::<usize>()
        .ok()
        .filter(|_| matches!(cur, Json::Arr(_)));
    if let (Some(i), Json::Arr(items)) = (index, &mut *cur) {
        let items = items.to_mut();
        if items.len() <= i {
            items.resize(i + 1, Json::Null);
        }
        return set_at(&mut items[i], rest, value);
    }
    // A typed value where the pointer goes deeper: the overflow holds the truth.
    if !matches!(cur, Json::Obj(_)) {
        *cur = Json::Obj(Cow::Owned(Vec::new()));
    }
    let Json::Obj(members) = cur else {
        unreachable!()
    };
    let members = members.to_mut();
    let pos = match members.iter().position(|(k, _)| k == token) {
        Some(p) => p,
        None => {
            members.push((Cow::Owned(token.clone()), Json::Null));
            members.len() - 1
        }
    };
    set_at(&mut members[pos].1, rest, value)
}
