//! Our Arrow types in each engine's own words: the one place that spells them, for the
//! `warehouse` statements (the column types each engine reads from our Parquet: [`hive`] for
//! Athena's and Databricks' DDL, [`bigquery`] schema files, [`snowflake`] columns) and for the
//! SQL that views compile to ([`sql_type`], [`sql_full_type`]: the casts and lambda parameters
//! of each [`Sql`] dialect).
//!
//! The column types we write are few: string, boolean, int32, int64 (the time companions), float64,
//! decimal(38,18), timestamp(µs, UTC), binary, and lists and structs of them.
//!
//! ```
//! use arrow::datatypes::DataType;
//! use fhir2parquet::schema::engines::{hive, sql_type, Sql};
//! assert_eq!(hive(&DataType::Int32), "INT"); // Athena's DDL
//! assert_eq!(sql_type(Sql::Trino, &DataType::Int32), Some("INTEGER")); // in a query
//! ```

use arrow::datatypes::{DataType, Field};
use serde_json::{json, Value};

/// The SQL dialects whose queries (casts, lambda parameters) name our types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sql {
    Duckdb,
    Spark,
    Trino,
    Bigquery,
    Snowflake,
}

/// A quoted identifier in the dialect's words.
pub fn ident(engine: Sql, name: &str) -> String {
    match engine {
        Sql::Duckdb | Sql::Trino | Sql::Snowflake => double_quote(name),
        Sql::Spark | Sql::Bigquery => backquote(name),
    }
}

/// The SQL type of a primitive (None: a list or a struct).
pub fn sql_type(engine: Sql, dt: &DataType) -> Option<&'static str> {
    use Sql::*;
    Some(match (engine, dt) {
        (Bigquery, DataType::Boolean) => "BOOL",
        (_, DataType::Boolean) => "BOOLEAN",
        (Bigquery, DataType::Int32 | DataType::Int64) => "INT64",
        (_, DataType::Int32) => "INTEGER",
        (_, DataType::Int64) => "BIGINT",
        (Bigquery, DataType::Decimal128(p, s)) if fits_numeric(*p, *s) => "NUMERIC",
        (Bigquery, DataType::Decimal128(_, _)) => "BIGNUMERIC",
        (Snowflake, DataType::Decimal128(_, _)) => "NUMBER(38,18)",
        (_, DataType::Decimal128(_, _)) => "DECIMAL(38,18)",
        (Bigquery, DataType::Float64) => "FLOAT64",
        (_, DataType::Float64) => "DOUBLE",
        (Duckdb | Trino | Snowflake, DataType::Utf8 | DataType::LargeUtf8 | DataType::Null) => {
            "VARCHAR"
        }
        (Spark | Bigquery, DataType::Utf8 | DataType::LargeUtf8 | DataType::Null) => "STRING",
        (Duckdb, DataType::Timestamp(_, _)) => "TIMESTAMPTZ",
        (Snowflake, DataType::Timestamp(_, _)) => "TIMESTAMP_TZ",
        (_, DataType::Timestamp(_, _)) => "TIMESTAMP",
        (Duckdb, DataType::Binary | DataType::LargeBinary) => "BLOB",
        (Spark, DataType::Binary | DataType::LargeBinary) => "BINARY",
        (Trino, DataType::Binary | DataType::LargeBinary) => "VARBINARY",
        (Bigquery, DataType::Binary | DataType::LargeBinary) => "BYTES",
        (Snowflake, DataType::Binary | DataType::LargeBinary) => "BINARY",
        _ => return None,
    })
}

/// A type spelled whole, structs and lists included (DuckDB's view casts, Trino's ROW casts,
/// BigQuery's DDL). Snowflake's nested values are semi-structured: OBJECT and ARRAY.
pub fn sql_full_type(engine: Sql, dt: &DataType) -> Option<String> {
    use Sql::*;
    Some(match dt {
        DataType::Struct(_) if engine == Snowflake => "OBJECT".into(),
        DataType::List(_) | DataType::LargeList(_) if engine == Snowflake => "ARRAY".into(),
        DataType::Struct(fields) => {
            let parts: Option<Vec<String>> = fields
                .iter()
                .map(|f| {
                    Some(format!(
                        "{} {}",
                        ident(engine, f.name()),
                        sql_full_type(engine, f.data_type())?
                    ))
                })
                .collect();
            match engine {
                Trino => format!("ROW({})", parts?.join(", ")),
                // Spark's `name: type` takes its colon as optional.
                Bigquery | Spark => format!("STRUCT<{}>", parts?.join(", ")),
                Duckdb | Snowflake => format!("STRUCT({})", parts?.join(", ")),
            }
        }
        DataType::List(f) | DataType::LargeList(f) => {
            let inner = sql_full_type(engine, f.data_type())?;
            match engine {
                Trino => format!("ARRAY({inner})"),
                Spark | Bigquery => format!("ARRAY<{inner}>"),
                Duckdb | Snowflake => format!("{inner}[]"),
            }
        }
        other => sql_type(engine, other)?.to_string(),
    })
}

/// Hive, Athena (Glue), Spark and Databricks: `ARRAY<...>`, `STRUCT<`name`:...>`. Every name is
/// backquoted (Hive identifiers may not start with `_`, and ours do).
pub fn hive(t: &DataType) -> String {
    match t {
        DataType::Utf8 | DataType::LargeUtf8 => "STRING".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int32 => "INT".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Decimal128(p, s) => format!("DECIMAL({p},{s})"),
        DataType::Timestamp(_, _) => "TIMESTAMP".into(),
        DataType::Binary | DataType::LargeBinary => "BINARY".into(),
        DataType::List(f) | DataType::LargeList(f) => format!("ARRAY<{}>", hive(f.data_type())),
        DataType::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|f| format!("{}:{}", backquote(f.name()), hive(f.data_type())))
                .collect();
            format!("STRUCT<{}>", inner.join(","))
        }
        other => unreachable!("no column of our schema is {other}"),
    }
}

pub fn backquote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

pub fn double_quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Snowflake, loading Parquet with the vectorized scanner: nested values are semi-structured
/// (OBJECT, ARRAY); a struct (or list of structs) of more than [`SNOWFLAKE_MAX_OBJECT_FIELDS`]
/// leaf fields is a VARIANT.
pub fn snowflake(f: &Field) -> String {
    match f.data_type() {
        t @ (DataType::Struct(_) | DataType::List(_))
            if crate::schema::node::leaf_count(t) > SNOWFLAKE_MAX_OBJECT_FIELDS =>
        {
            "VARIANT".into()
        }
        DataType::Utf8 | DataType::LargeUtf8 => "VARCHAR".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int32 | DataType::Int64 => "NUMBER(38,0)".into(),
        DataType::Float64 => "FLOAT".into(),
        DataType::Decimal128(p, s) => format!("NUMBER({p},{s})"),
        DataType::Timestamp(_, _) => "TIMESTAMP_TZ".into(),
        DataType::Binary | DataType::LargeBinary => "BINARY".into(),
        DataType::List(_) | DataType::LargeList(_) => "ARRAY".into(),
        DataType::Struct(_) => "OBJECT".into(),
        other => unreachable!("no column of our schema is {other}"),
    }
}

/// Snowflake's limit on the fields of an OBJECT loaded from a Parquet struct.
pub const SNOWFLAKE_MAX_OBJECT_FIELDS: usize = 1000;

/// Whether BigQuery's NUMERIC holds the decimal: 9 digits after the point, 29 before.
fn fits_numeric(precision: u8, scale: i8) -> bool {
    (0..=9).contains(&scale) && i32::from(precision) - i32::from(scale) <= 29
}

/// BigQuery's nesting limit: RECORD levels.
pub const BIGQUERY_MAX_DEPTH: usize = 15;

/// A BigQuery schema field, as BigQuery reads our Parquet with list inference (a list is a
/// REPEATED field, not a RECORD holding a `list` of `element`s) and decimal(38,18) as
/// BIGNUMERIC (NUMERIC has 9 digits after the point and would round).
pub fn bigquery(f: &Field) -> Value {
    let (t, mode) = match f.data_type() {
        DataType::List(inner) | DataType::LargeList(inner) => (inner.as_ref(), "REPEATED"),
        _ => (f, "NULLABLE"),
    };
    let mut field = json!({"name": f.name(), "mode": mode});
    let ty = match t.data_type() {
        DataType::Utf8 | DataType::LargeUtf8 => "STRING",
        DataType::Boolean => "BOOLEAN",
        DataType::Int32 | DataType::Int64 => "INTEGER",
        DataType::Float64 => "FLOAT",
        DataType::Decimal128(p, s) if fits_numeric(*p, *s) => "NUMERIC",
        DataType::Decimal128(_, _) => "BIGNUMERIC",
        DataType::Timestamp(_, _) => "TIMESTAMP",
        DataType::Binary | DataType::LargeBinary => "BYTES",
        DataType::Struct(fields) => {
            field["fields"] = Value::Array(fields.iter().map(|c| bigquery(c)).collect());
            "RECORD"
        }
        other => unreachable!("no column of our schema is {other}"),
    };
    field["type"] = json!(ty);
    field
}

/// RECORD levels of a BigQuery field (lists do not count with list inference).
pub fn record_depth(t: &DataType) -> usize {
    match t {
        DataType::List(f) | DataType::LargeList(f) => record_depth(f.data_type()),
        DataType::Struct(fields) => {
            1 + fields
                .iter()
                .map(|f| record_depth(f.data_type()))
                .max()
                .unwrap_or(0)
        }
        _ => 0,
    }
}

/// BigQuery's type of a column in DDL (`STRUCT<...>`, `ARRAY<...>`): as its queries spell it.
pub fn bigquery_ddl(t: &DataType) -> String {
    sql_full_type(Sql::Bigquery, t)
        .unwrap_or_else(|| unreachable!("no column of our schema is {t}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{Fields, TimeUnit};
    use std::sync::Arc;

    fn coding_list() -> DataType {
        let coding = DataType::Struct(Fields::from(vec![
            Field::new("system", DataType::Utf8, true),
            Field::new("_code", DataType::Utf8, true),
        ]));
        DataType::List(Arc::new(Field::new("item", coding, true)))
    }

    #[test]
    fn hive_types_backquote_every_name() {
        assert_eq!(
            hive(&coding_list()),
            "ARRAY<STRUCT<`system`:STRING,`_code`:STRING>>"
        );
        assert_eq!(hive(&DataType::Decimal128(38, 18)), "DECIMAL(38,18)");
        let ts = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        assert_eq!(hive(&ts), "TIMESTAMP");
    }

    #[test]
    fn bigquery_lists_are_repeated_and_decimals_bignumeric() {
        let f = bigquery(&Field::new("coding", coding_list(), true));
        assert_eq!(f["mode"], "REPEATED");
        assert_eq!(f["type"], "RECORD");
        assert_eq!(f["fields"][1]["name"], "_code");
        let d = bigquery(&Field::new("value", DataType::Decimal128(38, 18), true));
        assert_eq!(d["type"], "BIGNUMERIC");
        assert_eq!(record_depth(&coding_list()), 1);
    }
}
