//! Printing results as a table, CSV, JSON or NDJSON.

use std::io::Write;

use anyhow::Result;
use arrow::array::RecordBatch;

use crate::cli::PrintFormat;

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
                writeln!(
                    out,
                    "{}",
                    arrow::util::pretty::pretty_format_batches(batches)?
                )?;
            }
        }
        PrintFormat::Csv => {
            let mut w = arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut *out);
            for b in batches {
                w.write(b)?;
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
