//! How each SQL engine spells what a view needs: lists, lambdas, unnesting, errors, types.

use arrow::datatypes::DataType;

/// The SQL dialects a view compiles to.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// DuckDB.
    Duckdb,
    /// Spark SQL and Databricks.
    Spark,
}

impl Dialect {
    pub fn name(self) -> &'static str {
        match self {
            Dialect::Duckdb => "duckdb",
            Dialect::Spark => "spark",
        }
    }

    /// A quoted identifier.
    pub fn ident(self, name: &str) -> String {
        match self {
            Dialect::Duckdb => format!("\"{}\"", name.replace('"', "\"\"")),
            Dialect::Spark => format!("`{}`", name.replace('`', "``")),
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
            Dialect::Duckdb => format!("'{}'", s.replace('\'', "''")),
            Dialect::Spark => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        }
    }

    pub fn empty_list(self) -> &'static str {
        match self {
            Dialect::Duckdb => "[]",
            Dialect::Spark => "array()",
        }
    }

    pub fn list_of(self, item: &str) -> String {
        match self {
            Dialect::Duckdb => format!("[{item}]"),
            Dialect::Spark => format!("array({item})"),
        }
    }

    pub fn filter(self, list: &str, var: &str, cond: &str) -> String {
        match self {
            Dialect::Duckdb => format!("list_filter({list}, {var} -> {cond})"),
            Dialect::Spark => format!("filter({list}, {var} -> {cond})"),
        }
    }

    pub fn transform(self, list: &str, var: &str, f: &str) -> String {
        match self {
            Dialect::Duckdb => format!("list_transform({list}, {var} -> {f})"),
            Dialect::Spark => format!("transform({list}, {var} -> {f})"),
        }
    }

    pub fn flatten(self, lists: &str) -> String {
        format!("flatten({lists})")
    }

    pub fn len(self, list: &str) -> String {
        match self {
            Dialect::Duckdb => format!("len({list})"),
            Dialect::Spark => format!("size({list})"),
        }
    }

    /// The item at a 1-based position (negative: from the end); NULL when there is none.
    pub fn at(self, list: &str, pos: &str) -> String {
        match self {
            Dialect::Duckdb => format!("({list})[{pos}]"),
            Dialect::Spark => format!("try_element_at({list}, {pos})"),
        }
    }

    pub fn concat_lists(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Duckdb => format!("list_concat({a}, {b})"),
            Dialect::Spark => format!("concat({a}, {b})"),
        }
    }

    pub fn join_strings(self, list: &str, sep: &str) -> String {
        match self {
            Dialect::Duckdb => format!("array_to_string({list}, {sep})"),
            Dialect::Spark => format!("array_join({list}, {sep})"),
        }
    }

    pub fn concat_strings(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Duckdb => format!("({a} || {b})"),
            Dialect::Spark => format!("concat({a}, {b})"),
        }
    }

    /// An expression that fails the query with `msg`.
    pub fn error(self, msg: &str) -> String {
        match self {
            Dialect::Duckdb => format!("error({})", self.string(msg)),
            Dialect::Spark => format!("raise_error({})", self.string(msg)),
        }
    }

    /// The group of the first match of a regular expression, NULL when none.
    pub fn regex_group(self, s: &str, pattern: &str, group: usize) -> String {
        match self {
            Dialect::Duckdb => format!(
                "nullif(regexp_extract({s}, {}, {group}), '')",
                self.string(pattern)
            ),
            Dialect::Spark => format!(
                "nullif(regexp_extract({s}, {}, {group}), '')",
                self.string(pattern)
            ),
        }
    }

    /// Integer division, NULL for a zero divisor.
    pub fn int_div(self, a: &str, b: &str) -> String {
        match self {
            Dialect::Duckdb => format!("({a} // nullif({b}, 0))"),
            Dialect::Spark => format!("CAST(({a}) div nullif({b}, 0) AS INT)"),
        }
    }

    /// Base64 text of binary.
    pub fn base64(self, b: &str) -> String {
        match self {
            Dialect::Duckdb => format!("to_base64({b})"),
            Dialect::Spark => format!("base64({b})"),
        }
    }

    /// The SQL type of a primitive result column (None: not a primitive).
    pub fn type_name(self, dt: &DataType) -> Option<&'static str> {
        Some(match (self, dt) {
            (_, DataType::Boolean) => "BOOLEAN",
            (_, DataType::Int32) => "INTEGER",
            (Dialect::Spark, DataType::Int64) => "BIGINT",
            (Dialect::Duckdb, DataType::Int64) => "BIGINT",
            (_, DataType::Decimal128(_, _)) => "DECIMAL(38,18)",
            (Dialect::Duckdb, DataType::Utf8 | DataType::Null) => "VARCHAR",
            (Dialect::Spark, DataType::Utf8 | DataType::Null) => "STRING",
            (Dialect::Duckdb, DataType::Timestamp(_, _)) => "TIMESTAMPTZ",
            (Dialect::Spark, DataType::Timestamp(_, _)) => "TIMESTAMP",
            (Dialect::Duckdb, DataType::Binary) => "BLOB",
            (Dialect::Spark, DataType::Binary) => "BINARY",
            _ => return None,
        })
    }
}
