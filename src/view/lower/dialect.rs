//! How each SQL engine spells what a view needs: lists, lambdas (or, in BigQuery, array
//! subqueries), unnesting, structs, errors, JSON, types.

use arrow::datatypes::DataType;

/// The SQL dialects a view compiles to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// DuckDB.
    Duckdb,
    /// Spark SQL and Databricks.
    Spark,
    /// Trino and Amazon Athena (engine version 3).
    Trino,
    /// Google BigQuery.
    Bigquery,
}

use Dialect::{Bigquery, Duckdb, Spark, Trino};

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Duckdb => "duckdb",
            Spark => "spark",
            Trino => "trino",
            Bigquery => "bigquery",
        }
    }

    /// A quoted identifier.
    pub fn ident(self, name: &str) -> String {
        match self {
            Duckdb | Trino => format!("\"{}\"", name.replace('"', "\"\"")),
            Spark | Bigquery => format!("`{}`", name.replace('`', "``")),
        }
    }

    /// A table name: `schema.table` parts quoted one by one.
    pub fn table(self, name: &str) -> String {
        name.split('.')
            .map(|p| self.ident(p))
            .collect::<Vec<_>>()
            .join(".")
    }

    /// A text literal.
    pub fn string(self, s: &str) -> String {
        match self {
            Duckdb | Trino => format!("'{}'", s.replace('\'', "''")),
            Spark | Bigquery => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        }
    }

    pub fn empty_list(self) -> &'static str {
        match self {
            Duckdb | Bigquery => "[]",
            Spark => "array()",
            Trino => "ARRAY[]",
        }
    }

    pub fn list_of(self, item: &str) -> String {
        match self {
            Duckdb | Bigquery => format!("[{item}]"),
            Spark => format!("array({item})"),
            Trino => format!("ARRAY[{item}]"),
        }
    }

    /// The items of `list` for which `cond` (over `var`) holds, in order.
    pub fn filter(self, list: &str, var: &str, cond: &str) -> String {
        match self {
            Duckdb => format!("list_filter({list}, {var} -> {cond})"),
            Spark | Trino => format!("filter({list}, {var} -> {cond})"),
            Bigquery => format!(
                "ARRAY(SELECT {var} FROM UNNEST({list}) AS {var} WITH OFFSET AS {var}_o \
                 WHERE {cond} ORDER BY {var}_o)"
            ),
        }
    }

    /// `f` (over `var`) of every item of `list`, in order.
    pub fn transform(self, list: &str, var: &str, f: &str) -> String {
        match self {
            Duckdb => format!("list_transform({list}, {var} -> {f})"),
            Spark | Trino => format!("transform({list}, {var} -> {f})"),
            Bigquery => format!(
                "ARRAY(SELECT {f} FROM UNNEST({list}) AS {var} WITH OFFSET AS {var}_o \
                 ORDER BY {var}_o)"
            ),
        }
    }

    /// The items of the lists `f` (over `var`) gives for every item of `list`, in order.
    pub fn flat_map(self, list: &str, var: &str, f: &str) -> String {
        match self {
            Bigquery => format!(
                "ARRAY(SELECT {var}_y FROM UNNEST({list}) AS {var} WITH OFFSET AS {var}_o, \
                 UNNEST({f}) AS {var}_y WITH OFFSET AS {var}_p ORDER BY {var}_o, {var}_p)"
            ),
            _ => format!("flatten({})", self.transform(list, var, f)),
        }
    }

    pub fn len(self, list: &str) -> String {
        match self {
            Duckdb => format!("len({list})"),
            Spark => format!("size({list})"),
            Trino => format!("cardinality({list})"),
            Bigquery => format!("ARRAY_LENGTH({list})"),
        }
    }

    /// The item at a 1-based position (`-1`: the last); NULL when there is none.
    pub fn at(self, list: &str, pos: &str) -> String {
        match self {
            Duckdb => format!("({list})[{pos}]"),
            Spark => format!("try_element_at({list}, {pos})"),
            Trino => format!("element_at({list}, {pos})"),
            Bigquery if pos == "-1" => {
                format!("({list})[SAFE_ORDINAL(ARRAY_LENGTH({list}))]")
            }
            Bigquery => format!("({list})[SAFE_ORDINAL({pos})]"),
        }
    }

    pub fn concat_lists(self, a: &str, b: &str) -> String {
        match self {
            Duckdb => format!("list_concat({a}, {b})"),
            Spark | Trino => format!("concat({a}, {b})"),
            Bigquery => format!("ARRAY_CONCAT({a}, {b})"),
        }
    }

    pub fn join_strings(self, list: &str, sep: &str) -> String {
        match self {
            Duckdb => format!("array_to_string({list}, {sep})"),
            Spark | Trino => format!("array_join({list}, {sep})"),
            Bigquery => format!("ARRAY_TO_STRING({list}, {sep})"),
        }
    }

    pub fn concat_strings(self, a: &str, b: &str) -> String {
        match self {
            Duckdb | Trino => format!("({a} || {b})"),
            Spark | Bigquery => format!("concat({a}, {b})"),
        }
    }

    /// An expression that fails the query with `msg`.
    pub fn error(self, msg: &str) -> String {
        let m = self.string(msg);
        match self {
            Duckdb => format!("error({m})"),
            Spark => format!("raise_error({m})"),
            Trino => format!("fail({m})"),
            Bigquery => format!("ERROR({m})"),
        }
    }

    /// The group of the first match of a regular expression, NULL when none.
    pub fn regex_group(self, s: &str, pattern: &str, group: usize) -> String {
        match self {
            // BigQuery gives the one capturing group: the others are made non-capturing.
            Bigquery => format!(
                "REGEXP_EXTRACT({s}, {})",
                self.string(&only_group(pattern, group))
            ),
            _ => format!(
                "nullif(regexp_extract({s}, {}, {group}), '')",
                self.string(pattern)
            ),
        }
    }

    /// Whether a regular expression matches somewhere in `s`.
    pub fn regex_test(self, s: &str, pattern: &str) -> String {
        let p = self.string(pattern);
        match self {
            Duckdb => format!("regexp_matches({s}, {p})"),
            Spark => format!("({s} rlike {p})"),
            Trino => format!("regexp_like({s}, {p})"),
            Bigquery => format!("REGEXP_CONTAINS({s}, {p})"),
        }
    }

    /// The 1-based position of `needle` in `s` (0: none).
    pub fn position(self, s: &str, needle: &str) -> String {
        match self {
            Spark => format!("instr({s}, {needle})"),
            _ => format!("strpos({s}, {needle})"),
        }
    }

    /// The JSON text of the member `key` of a JSON object text, NULL when absent.
    pub fn json_member(self, json: &str, key: &str) -> String {
        match self {
            Duckdb => format!(
                "json_extract_string({json}, {})",
                self.string(&format!("$.\"{key}\""))
            ),
            Spark => format!(
                "get_json_object({json}, {})",
                self.string(&format!("$['{key}']"))
            ),
            Trino => format!(
                "json_extract_scalar({json}, {})",
                self.string(&format!("$[\"{key}\"]"))
            ),
            Bigquery => format!(
                "JSON_EXTRACT_SCALAR({json}, {})",
                self.string(&format!("$[\"{key}\"]"))
            ),
        }
    }

    /// A DECIMAL(38,18) as text, every digit of the scale written.
    pub fn decimal_text(self, v: &str) -> String {
        match self {
            Spark => format!("format_string('%.18f', {v})"),
            Bigquery => format!("FORMAT('%.18f', CAST({v} AS BIGNUMERIC))"),
            _ => format!("CAST({v} AS VARCHAR)"),
        }
    }

    /// The last day of the month of a `YYYY-MM-01` text, as `YYYY-MM-DD` text.
    pub fn month_end(self, first: &str) -> String {
        match self {
            Duckdb => format!("strftime(last_day(CAST({first} AS DATE)), '%Y-%m-%d')"),
            Spark => format!("date_format(last_day(to_date({first})), 'yyyy-MM-dd')"),
            Trino => format!("date_format(last_day_of_month(CAST({first} AS DATE)), '%Y-%m-%d')"),
            Bigquery => format!("FORMAT_DATE('%Y-%m-%d', LAST_DAY(CAST({first} AS DATE)))"),
        }
    }

    /// Integer division, NULL for a zero divisor.
    pub fn int_div(self, a: &str, b: &str) -> String {
        match self {
            Duckdb => format!("({a} // nullif({b}, 0))"),
            Spark => format!("CAST(({a}) div nullif({b}, 0) AS INT)"),
            Trino => format!("({a} / nullif({b}, 0))"),
            Bigquery => format!("DIV({a}, NULLIF({b}, 0))"),
        }
    }

    /// Base64 text of binary, and binary of base64 text.
    pub fn base64(self, b: &str) -> String {
        match self {
            Duckdb | Trino => format!("to_base64({b})"),
            Spark => format!("base64({b})"),
            Bigquery => format!("TO_BASE64({b})"),
        }
    }

    pub fn unbase64(self, text: &str) -> String {
        match self {
            Duckdb | Trino => format!("from_base64({text})"),
            Spark => format!("unbase64({text})"),
            Bigquery => format!("FROM_BASE64({text})"),
        }
    }

    /// A struct of named values; `dt` is the struct's type (Trino spells it).
    pub fn struct_of(self, fields: &[(String, String)], dt: &DataType) -> String {
        match self {
            Duckdb => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(n, e)| format!("{}: {e}", self.string(n)))
                    .collect();
                format!("{{{}}}", parts.join(", "))
            }
            Spark => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(n, e)| format!("{}, {e}", self.string(n)))
                    .collect();
                format!("named_struct({})", parts.join(", "))
            }
            Trino => {
                let values: Vec<&str> = fields.iter().map(|(_, e)| e.as_str()).collect();
                format!(
                    "CAST(ROW({}) AS {})",
                    values.join(", "),
                    self.full_type(dt).unwrap_or_default()
                )
            }
            Bigquery => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(n, e)| format!("{e} AS {}", self.ident(n)))
                    .collect();
                format!("STRUCT({})", parts.join(", "))
            }
        }
    }

    /// The join that unnests `list` as the `k`th item column: the join, the item, its 0-based
    /// index. `or_null`: a row with no items keeps one, NULL, at index 0.
    pub fn unnest(self, list: &str, or_null: bool, k: usize) -> (String, String, String) {
        match self {
            Duckdb => {
                let t = format!("u{k}");
                let items = format!(
                    "list_transform({list}, (x, i) -> {{'i': CAST(i - 1 AS INTEGER), 'v': x}})"
                );
                (
                    format!(
                        "{} JOIN LATERAL (SELECT unnest({items}) AS e) AS {t} ON TRUE",
                        if or_null { "LEFT" } else { "INNER" }
                    ),
                    format!("{t}.e.v"),
                    format!("coalesce({t}.e.i, 0)"),
                )
            }
            Spark => (
                format!(
                    "LATERAL VIEW {}posexplode({list}) u{k} AS i{k}, v{k}",
                    if or_null { "OUTER " } else { "" }
                ),
                format!("v{k}"),
                format!("CAST(coalesce(i{k}, 0) AS INT)"),
            ),
            // A row of one field per item: UNNEST spreads a row's fields into columns.
            Trino => (
                format!(
                    "{} UNNEST(transform({list}, x -> ROW(x))) WITH ORDINALITY AS u{k}(v, i){}",
                    if or_null { "LEFT JOIN" } else { "CROSS JOIN" },
                    if or_null { " ON TRUE" } else { "" }
                ),
                format!("u{k}.v"),
                format!("coalesce(CAST(u{k}.i AS INTEGER) - 1, 0)"),
            ),
            Bigquery => (
                format!(
                    "{} UNNEST({list}) AS v{k} WITH OFFSET AS i{k}",
                    if or_null { "LEFT JOIN" } else { "CROSS JOIN" }
                ),
                format!("v{k}"),
                format!("coalesce(i{k}, 0)"),
            ),
        }
    }

    /// The SQL type of a primitive result column (None: not a primitive).
    pub fn type_name(self, dt: &DataType) -> Option<&'static str> {
        Some(match (self, dt) {
            (Bigquery, DataType::Boolean) => "BOOL",
            (_, DataType::Boolean) => "BOOLEAN",
            (Bigquery, DataType::Int32 | DataType::Int64) => "INT64",
            (_, DataType::Int32) => "INTEGER",
            (_, DataType::Int64) => "BIGINT",
            (Bigquery, DataType::Decimal128(_, _)) => "BIGNUMERIC",
            (_, DataType::Decimal128(_, _)) => "DECIMAL(38,18)",
            (Bigquery, DataType::Float64) => "FLOAT64",
            (_, DataType::Float64) => "DOUBLE",
            (Duckdb | Trino, DataType::Utf8 | DataType::Null) => "VARCHAR",
            (Spark | Bigquery, DataType::Utf8 | DataType::Null) => "STRING",
            (Duckdb, DataType::Timestamp(_, _)) => "TIMESTAMPTZ",
            (_, DataType::Timestamp(_, _)) => "TIMESTAMP",
            (Duckdb, DataType::Binary) => "BLOB",
            (Spark, DataType::Binary) => "BINARY",
            (Trino, DataType::Binary) => "VARBINARY",
            (Bigquery, DataType::Binary) => "BYTES",
            _ => return None,
        })
    }

    /// A type spelled whole, structs and lists included (Trino's ROW casts).
    pub fn full_type(self, dt: &DataType) -> Option<String> {
        Some(match dt {
            DataType::Struct(fields) => {
                let parts: Option<Vec<String>> = fields
                    .iter()
                    .map(|f| {
                        Some(format!(
                            "{} {}",
                            self.ident(f.name()),
                            self.full_type(f.data_type())?
                        ))
                    })
                    .collect();
                match self {
                    Trino => format!("ROW({})", parts?.join(", ")),
                    // Spark's `name: type` takes its colon as optional.
                    Bigquery | Spark => format!("STRUCT<{}>", parts?.join(", ")),
                    Duckdb => format!("STRUCT({})", parts?.join(", ")),
                }
            }
            DataType::List(f) => {
                let inner = self.full_type(f.data_type())?;
                match self {
                    Trino => format!("ARRAY({inner})"),
                    Spark | Bigquery => format!("ARRAY<{inner}>"),
                    Duckdb => format!("{inner}[]"),
                }
            }
            DataType::Int64 if self == Trino => "BIGINT".into(),
            other => self.type_name(other)?.to_string(),
        })
    }
}

/// `pattern` with every capturing group but the `group`th made non-capturing.
fn only_group(pattern: &str, group: usize) -> String {
    let mut out = String::new();
    let mut n = 0;
    let mut chars = pattern.chars().peekable();
    let mut escaped = false;
    while let Some(c) = chars.next() {
        out.push(c);
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '(' if chars.peek() != Some(&'?') => {
                n += 1;
                if n != group {
                    out.push_str("?:");
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bigquery_keeps_the_one_group_asked_for() {
        assert_eq!(only_group("^(a)/(b)(?:c)$", 2), "^(?:a)/(b)(?:c)$");
        assert_eq!(only_group("^(a)/(b)$", 1), "^(a)/(?:b)$");
    }
}
