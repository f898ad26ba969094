//! Results as people and files take them: printed as a table, CSV, JSON or NDJSON, and collected
//! with their columns even when there are no rows.

use std::io::Write;
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Decimal128Type, Field, Schema};

/// How results are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PrintFormat {
    #[default]
    Table,
    Csv,
    Json,
    Ndjson,
}

impl crate::choice::Choice for PrintFormat {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (PrintFormat::Table, "table", ""),
        (PrintFormat::Csv, "csv", ""),
        (PrintFormat::Json, "json", ""),
        (PrintFormat::Ndjson, "ndjson", ""),
    ];
}

/// The batches of `df`; no rows is one empty batch, so printers and writers still know the
/// columns (a CSV header, a Parquet schema).
pub async fn collect_with_schema(
    df: datafusion::dataframe::DataFrame,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let mut batches = df.collect().await?;
    batches.retain(|b| b.num_rows() > 0);
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
}

/// A batch as people read it in a table or CSV: decimals without the trailing zeros of their
/// scale (`1.5`, not `1.500000000000000000`) and, for CSV, lists and structs as JSON text.
pub(crate) fn readable(batch: &RecordBatch, csv: bool) -> Result<RecordBatch> {
    let schema = batch.schema();
    let any = |f: fn(&DataType) -> bool| schema.fields().iter().any(|field| f(field.data_type()));
    let nested = csv && any(DataType::is_nested);
    if !nested && !any(|dt| matches!(dt, DataType::Decimal128(_, _))) {
        return Ok(batch.clone());
    }
    // Nested values as JSON: the batch's own JSON rows, read with the parser that keeps number
    // text and member order.
    let text = if nested {
        let mut buf = Vec::new();
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
        w.write(batch)?;
        w.finish()?;
        String::from_utf8(buf)?
    } else {
        String::new()
    };
    let rows = text
        .lines()
        .map(crate::json::parse)
        .collect::<Result<Vec<_>, _>>()?;
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let text: Option<ArrayRef> = match f.data_type() {
            DataType::Decimal128(_, scale) => {
                let d = c.as_primitive::<Decimal128Type>();
                let scale = *scale;
                Some(Arc::new(
                    d.iter()
                        .map(|v| v.map(|v| trimmed_decimal(v, scale)))
                        .collect::<StringArray>(),
                ))
            }
            dt if csv && dt.is_nested() => Some(Arc::new(
                (0..c.len())
                    .map(|i| match rows[i].get(f.name()) {
                        None | Some(crate::json::Json::Null) => None,
                        Some(v) => Some(v.to_string()),
                    })
                    .collect::<StringArray>(),
            )),
            _ => None,
        };
        match text {
            Some(t) => {
                fields.push(Field::new(f.name(), DataType::Utf8, true));
                columns.push(t);
            }
            None => {
                fields.push(f.as_ref().clone());
                columns.push(c.clone());
            }
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// A decimal's text without the trailing zeros of its scale.
fn trimmed_decimal(v: i128, scale: i8) -> String {
    use arrow::datatypes::DecimalType;
    let t = Decimal128Type::format_decimal(v, 38, scale);
    if t.contains('.') {
        t.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        t
    }
}

pub fn print_batches(
    batches: &[RecordBatch],
    format: PrintFormat,
    out: &mut dyn Write,
) -> Result<()> {
    match format {
        PrintFormat::Table => {
            if batches.iter().all(|b| b.num_rows() == 0) {
                if let Some(b) = batches.first() {
                    let names: Vec<_> = b
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| f.name().clone())
                        .collect();
                    writeln!(out, "({}) 0 rows", names.join(", "))?;
                } else {
                    writeln!(out, "0 rows")?;
                }
            } else {
                let batches = batches
                    .iter()
                    .map(|b| readable(b, false))
                    .collect::<Result<Vec<_>>>()?;
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(&batches)?
                )?;
            }
        }
        PrintFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for b in batches {
                w.write(&readable(b, true)?)?;
            }
        }
        PrintFormat::Json => {
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::JsonArray>(&mut *out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            writeln!(out)?;
        }
        PrintFormat::Ndjson => {
            let mut w = arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, arrow::json::writer::LineDelimited>(&mut *out);
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
        }
    }
    Ok(())
}
