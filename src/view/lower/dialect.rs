//! How each SQL engine spells what a view needs: lists, lambdas (or, in BigQuery, array
//! subqueries), unnesting, structs, errors, JSON, types.

use arrow::datatypes::DataType;

use crate::schema::engines::{self, Sql};

/// The SQL dialects a view compiles to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// DuckDB.
    Duckdb,
    /// Spark SQL and Databricks.
    Spark,
    /// Trino and Amazon Athena (engine version 3).
    Trino,
    /// Google BigQuery.
    Bigquery,
    /// Snowflake, over the tables `warehouse snowflake` loads (nested columns semi-structured).
    Snowflake,
}

impl crate::choice::Choice for Dialect {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (Dialect::Duckdb, "duckdb", "DuckDB"),
        (Dialect::Spark, "spark", "Spark SQL and Databricks"),
        (Dialect::Trino, "trino", "Trino and Amazon Athena (engine version 3)"),
        (Dialect::Bigquery, "bigquery", "Google BigQuery"),
        (Dialect::Snowflake, "snowflake", "Snowflake, over the tables `warehouse snowflake` loads (nested columns semi-structured)"),
    ];
}

use Dialect::{Bigquery, Duckdb, Snowflake, Spark, Trino};

impl Dialect {
    /// The dialect's name (`duckdb`), as `view --sql` takes it.
    pub fn name(self) -> &'static str {
        crate::choice::Choice::name(self)
    }

    /// A quoted identifier.
    pub fn ident(self, name: &str) -> String {
        engines::ident(self.engine(), name)
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
            // Snowflake reads backslash escapes in literals.
            Snowflake => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "''")),
            Spark | Bigquery => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        }
    }

    pub fn empty_list(self) -> &'static str {
        match self {
            Duckdb | Bigquery | Snowflake => "[]",
            Spark => "array()",
            Trino => "ARRAY[]",
        }
    }

    pub fn list_of(self, item: &str) -> String {
        match self {
            Duckdb | Bigquery => format!("[{item}]"),
            Spark => format!("array({item})"),
            Trino => format!("ARRAY[{item}]"),
            Snowflake => format!("ARRAY_CONSTRUCT({item})"),
        }
    }

    /// A lambda's parameter over items of type `dt`. Snowflake's list items are VARIANT: a
    /// typed parameter makes each item a value of its SQL type (a JSON null a SQL NULL); items
    /// that are structs stay VARIANT, whose fields [`Dialect::field`] reads.
    fn param(self, var: &str, dt: &DataType) -> String {
        match (self, semi_structured_type(dt)) {
            (Snowflake, Some(t)) => format!("{var} {t}"),
            _ => var.to_string(),
        }
    }

    /// The items of `list` (of items of type `dt`) for which `cond` (over `var`) holds, in
    /// order.
    pub fn filter(self, list: &str, var: &str, dt: &DataType, cond: &str) -> String {
        match self {
            Duckdb => format!("list_filter({list}, lambda {var}: {cond})"),
            Spark | Trino => format!("filter({list}, {var} -> {cond})"),
            Snowflake => format!("FILTER({list}, {} -> {cond})", self.param(var, dt)),
            Bigquery => format!(
                "ARRAY(SELECT {var} FROM UNNEST({list}) AS {var} WITH OFFSET AS {var}_o \
                 WHERE {cond} ORDER BY {var}_o)"
            ),
        }
    }

    /// The items of `list` that are not NULL (in Snowflake, not JSON null either).
    pub fn drop_nulls(self, list: &str, var: &str, dt: &DataType) -> String {
        match self {
            Snowflake => format!("ARRAY_COMPACT({list})"),
            _ => self.filter(list, var, dt, &format!("{var} IS NOT NULL")),
        }
    }

    /// `f` (over `var`) of every item of `list` (of items of type `dt`), in order.
    pub fn transform(self, list: &str, var: &str, dt: &DataType, f: &str) -> String {
        match self {
            Duckdb => format!("list_transform({list}, lambda {var}: {f})"),
            Spark | Trino => format!("transform({list}, {var} -> {f})"),
            Snowflake => format!("TRANSFORM({list}, {} -> {f})", self.param(var, dt)),
            Bigquery => format!(
                "ARRAY(SELECT {f} FROM UNNEST({list}) AS {var} WITH OFFSET AS {var}_o \
                 ORDER BY {var}_o)"
            ),
        }
    }

    /// The items of the lists `f` (over `var`) gives for every item of `list`, in order.
    pub fn flat_map(self, list: &str, var: &str, dt: &DataType, f: &str) -> String {
        match self {
            Bigquery => format!(
                "ARRAY(SELECT {var}_y FROM UNNEST({list}) AS {var} WITH OFFSET AS {var}_o, \
                 UNNEST({f}) AS {var}_y WITH OFFSET AS {var}_p ORDER BY {var}_o, {var}_p)"
            ),
            Snowflake => format!("ARRAY_FLATTEN({})", self.transform(list, var, dt, f)),
            _ => format!("flatten({})", self.transform(list, var, dt, f)),
        }
    }

    pub fn len(self, list: &str) -> String {
        match self {
            Duckdb => format!("len({list})"),
            Spark => format!("size({list})"),
            Trino => format!("cardinality({list})"),
            Bigquery => format!("ARRAY_LENGTH({list})"),
            Snowflake => format!("ARRAY_SIZE({list})"),
        }
    }

    /// The item (of type `dt`) at a 1-based position (`-1`: the last); NULL when there is none.
    pub fn at(self, list: &str, pos: &str, dt: &DataType) -> String {
        match self {
            Duckdb => format!("({list})[{pos}]"),
            Spark => format!("try_element_at({list}, {pos})"),
            Trino => format!("element_at({list}, {pos})"),
            Bigquery if pos == "-1" => {
                format!("({list})[SAFE_ORDINAL(ARRAY_LENGTH({list}))]")
            }
            Bigquery => format!("({list})[SAFE_ORDINAL({pos})]"),
            Snowflake if pos == "-1" => {
                self.item(&format!("GET({list}, ARRAY_SIZE({list}) - 1)"), dt)
            }
            Snowflake => self.item(&format!("GET({list}, {pos} - 1)"), dt),
        }
    }

    /// A list item (or struct field) of type `dt` as a value of its SQL type. In Snowflake
    /// nested values are VARIANT: a primitive is cast (a JSON null becomes a SQL NULL), a
    /// struct stays VARIANT with JSON null made SQL NULL.
    pub fn item(self, e: &str, dt: &DataType) -> String {
        match (self, semi_structured_type(dt)) {
            (Snowflake, Some(t)) => format!("CAST({e} AS {t})"),
            (Snowflake, None) => format!("STRIP_NULL_VALUE({e})"),
            _ => e.to_string(),
        }
    }

    /// The field `name` (of type `dt`) of a struct value `x`; NULL when `x` is NULL. A list
    /// field is given as it is (the caller makes it an ARRAY, and NULL an empty list).
    pub fn field(self, x: &str, name: &str, dt: &DataType) -> String {
        match self {
            Snowflake => {
                let get = format!("GET({x}, {})", self.string(name));
                match dt {
                    DataType::List(_) => get,
                    _ => self.item(&get, dt),
                }
            }
            _ => format!("({x}).{}", self.ident(name)),
        }
    }

    /// A column of the resource table that is a list, as an ARRAY (in Snowflake, a list of
    /// structs of more than a thousand leaves is loaded as VARIANT).
    pub fn list_column(self, e: &str) -> String {
        match self {
            Snowflake => format!("AS_ARRAY({e})"),
            _ => e.to_string(),
        }
    }

    pub fn concat_lists(self, a: &str, b: &str) -> String {
        match self {
            Duckdb => format!("list_concat({a}, {b})"),
            Spark | Trino => format!("concat({a}, {b})"),
            Bigquery => format!("ARRAY_CONCAT({a}, {b})"),
            Snowflake => format!("ARRAY_CAT({a}, {b})"),
        }
    }

    /// The items of `list` without repeats, the first of each kept in
    /// its place (FHIRPath's union).
    pub fn distinct(self, list: &str, var: &str) -> String {
        match self {
            Duckdb => format!(
                "list_filter({list}, lambda {var}, {var}_i: list_position({list}, {var}) = {var}_i)"
            ),
            Spark | Trino => format!("array_distinct({list})"),
            Snowflake => format!("ARRAY_DISTINCT({list})"),
            Bigquery => format!(
                "ARRAY(SELECT ANY_VALUE({var}) FROM UNNEST({list}) AS {var} WITH OFFSET AS \
                 {var}_o GROUP BY TO_JSON_STRING({var}) ORDER BY MIN({var}_o))"
            ),
        }
    }

    /// The items of `list` from the 0-based `skip` on, at most `take` of them.
    pub fn slice(self, list: &str, skip: &str, take: Option<&str>, var: &str) -> String {
        match self {
            Duckdb => match take {
                Some(t) => format!("{list}[{skip} + 1:{skip} + {t}]"),
                None => format!("{list}[{skip} + 1:]"),
            },
            Spark | Trino => {
                let size = self.len(list);
                let t = take.map_or(size.clone(), str::to_string);
                format!(
                    "(CASE WHEN {skip} >= {size} OR {t} = 0 THEN {} ELSE slice({list}, {skip} + 1, {t}) END)",
                    self.empty_list()
                )
            }
            Snowflake => match take {
                Some(t) => format!("ARRAY_SLICE({list}, {skip}, {skip} + {t})"),
                None => format!("ARRAY_SLICE({list}, {skip}, {})", self.len(list)),
            },
            Bigquery => {
                let upto = take.map_or(String::new(), |t| format!(" AND {var}_o < {skip} + {t}"));
                format!(
                    "ARRAY(SELECT {var} FROM UNNEST({list}) AS {var} WITH OFFSET AS {var}_o \
                     WHERE {var}_o >= {skip}{upto} ORDER BY {var}_o)"
                )
            }
        }
    }

    /// The parts of `s` between the occurrences of `sep` (a literal).
    pub fn split(self, s: &str, sep: &str) -> String {
        match self {
            Duckdb => format!("string_split({s}, {})", self.string(sep)),
            // Spark splits by a regular expression: the separator quoted.
            Spark => format!("split({s}, {}, -1)", self.string(&format!("\\Q{sep}\\E"))),
            Trino => format!("split({s}, {})", self.string(sep)),
            Bigquery => format!("SPLIT({s}, {})", self.string(sep)),
            Snowflake => format!("SPLIT({s}, {})", self.string(sep)),
        }
    }

    /// The items of `list` in order, ascending or descending.
    pub fn sort(self, list: &str, descending: bool, var: &str) -> String {
        let dir = if descending { "DESC" } else { "ASC" };
        match self {
            Duckdb => format!("list_sort({list}, '{dir}')"),
            Spark => format!("sort_array({list}, {})", !descending),
            Trino => match descending {
                false => format!("array_sort({list})"),
                true => format!("reverse(array_sort({list}))"),
            },
            Bigquery => {
                format!("ARRAY(SELECT {var} FROM UNNEST({list}) AS {var} ORDER BY {var} {dir})")
            }
            Snowflake => format!(
                "ARRAY_SORT({list}, {})",
                if descending { "FALSE" } else { "TRUE" }
            ),
        }
    }

    /// Whether `list` holds `x`.
    pub fn list_contains(self, list: &str, x: &str) -> String {
        match self {
            Duckdb => format!("list_contains({list}, {x})"),
            Spark => format!("array_contains({list}, {x})"),
            Trino => format!("contains({list}, {x})"),
            Bigquery => format!("({x} IN UNNEST({list}))"),
            Snowflake => format!("ARRAY_CONTAINS(TO_VARIANT({x}), {list})"),
        }
    }

    /// Every match of a regular expression in `s` replaced (`$1` for a group, as FHIRPath
    /// writes it).
    pub fn regex_replace(self, s: &str, pattern: &str, with: &str) -> String {
        let groups_backslashed = with
            .split('$')
            .enumerate()
            .map(|(i, part)| match i {
                0 => part.to_string(),
                _ if part.starts_with(|c: char| c.is_ascii_digit()) => format!("\\{part}"),
                _ => format!("${part}"),
            })
            .collect::<String>();
        // Single-line mode, as FHIRPath's regular expressions are (Snowflake: its 's' parameter).
        let dotall = self.string(&format!("(?s){pattern}"));
        match self {
            Duckdb => format!(
                "regexp_replace({s}, {}, {}, 'g')",
                dotall,
                self.string(&groups_backslashed)
            ),
            Spark | Trino => format!("regexp_replace({s}, {}, {})", dotall, self.string(with)),
            Bigquery => format!(
                "REGEXP_REPLACE({s}, {}, {})",
                dotall,
                self.string(&groups_backslashed)
            ),
            Snowflake => format!(
                "REGEXP_REPLACE({s}, {}, {}, 1, 0, 's')",
                self.string(&posix_groups(pattern, 0).0),
                self.string(&groups_backslashed)
            ),
        }
    }

    /// An instant (a timestamp) as FHIR instant text in UTC to the millisecond
    /// (`2010-01-09T19:04:32.819Z`), whatever the session's time zone.
    pub fn instant_text(self, x: &str) -> String {
        match self {
            Duckdb => format!("strftime(timezone('UTC', {x}), '%Y-%m-%dT%H:%M:%S.%gZ')"),
            Spark => format!(
                "date_format(from_utc_timestamp(to_utc_timestamp({x}, current_timezone()), 'UTC'), \
                 \"yyyy-MM-dd'T'HH:mm:ss.SSS'Z'\")"
            ),
            Trino => format!(
                "format_datetime({x} AT TIME ZONE 'UTC', 'yyyy-MM-dd''T''HH:mm:ss.SSS''Z''')"
            ),
            Bigquery => format!("FORMAT_TIMESTAMP('%Y-%m-%dT%H:%M:%E3SZ', {x}, 'UTC')"),
            Snowflake => format!(
                "TO_VARCHAR(CONVERT_TIMEZONE('UTC', {x}), 'YYYY-MM-DD\"T\"HH24:MI:SS.FF3\"Z\"')"
            ),
        }
    }

    /// The first `n` characters of `s`.
    pub fn prefix(self, s: &str, n: &str) -> String {
        match self {
            Snowflake | Bigquery => format!("LEFT({s}, {n})"),
            _ => format!("substr({s}, 1, {n})"),
        }
    }

    /// Whether two lists hold equal items in the same order.
    pub fn lists_equal(self, a: &str, b: &str) -> String {
        match self {
            Bigquery => format!("(TO_JSON_STRING({a}) = TO_JSON_STRING({b}))"),
            _ => format!("({a} = {b})"),
        }
    }

    /// Text as FHIRPath's `~` compares it: lower case, runs of white space as one space,
    /// trimmed.
    pub fn equivalent_text(self, s: &str) -> String {
        let ws = self.string(r"\s+");
        match self {
            Duckdb => format!("lower(trim(regexp_replace({s}, {ws}, ' ', 'g')))"),
            _ => format!("lower(trim(regexp_replace({s}, {ws}, ' ')))"),
        }
    }

    pub fn join_strings(self, list: &str, sep: &str) -> String {
        match self {
            Duckdb => format!("array_to_string({list}, {sep})"),
            Spark | Trino => format!("array_join({list}, {sep})"),
            Bigquery | Snowflake => format!("ARRAY_TO_STRING({list}, {sep})"),
        }
    }

    pub fn concat_strings(self, a: &str, b: &str) -> String {
        match self {
            Duckdb | Trino | Snowflake => format!("({a} || {b})"),
            Spark | Bigquery => format!("concat({a}, {b})"),
        }
    }

    /// An expression of type `dt` (None: a list) that fails the query with `msg`. `witness` is
    /// a value of the row: Snowflake has no function that raises an error, so there the error
    /// is a conversion of the message to a number that fails, made to depend on the row so
    /// that it is not evaluated (and fails) while the statement compiles.
    pub fn error(self, msg: &str, witness: &str, dt: Option<&DataType>) -> String {
        let m = self.string(msg);
        match self {
            Duckdb => format!("error({m})"),
            Spark => format!("raise_error({m})"),
            Trino => format!("fail({m})"),
            Bigquery => format!("ERROR({m})"),
            Snowflake => {
                let fail =
                    format!("TO_NUMBER({m} || coalesce(LEFT(TO_VARCHAR({witness}), 0), ''))");
                match dt.and_then(|t| self.type_name(t)) {
                    Some(t) => format!("CAST({fail} AS {t})"),
                    None => self.list_of(&fail),
                }
            }
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
            // Snowflake's expressions are POSIX: no non-capturing groups.
            Snowflake => {
                let (p, g) = posix_groups(pattern, group);
                format!(
                    "nullif(REGEXP_SUBSTR({s}, {}, 1, 1, 'e', {g}), '')",
                    self.string(&p)
                )
            }
            _ => format!(
                "nullif(regexp_extract({s}, {}, {group}), '')",
                self.string(pattern)
            ),
        }
    }

    /// Whether a regular expression matches somewhere in `s`.
    /// Whether `s` holds a match of `pattern`; with `dotall`, in FHIRPath's single-line mode
    /// (`.` matches a newline too).
    pub fn regex_test(self, s: &str, pattern: &str, dotall: bool) -> String {
        let pattern_text = match dotall {
            true => format!("(?s){pattern}"),
            false => pattern.to_string(),
        };
        match self {
            Duckdb => format!("regexp_matches({s}, {})", self.string(&pattern_text)),
            Spark => format!("({s} rlike {})", self.string(&pattern_text)),
            Trino => format!("regexp_like({s}, {})", self.string(&pattern_text)),
            Bigquery => format!("REGEXP_CONTAINS({s}, {})", self.string(&pattern_text)),
            // REGEXP_LIKE matches the whole text; 's': single-line mode.
            Snowflake => format!(
                "(REGEXP_INSTR({s}, {}{}) > 0)",
                self.string(&posix_groups(pattern, 0).0),
                if dotall { ", 1, 1, 0, 's'" } else { "" }
            ),
        }
    }

    /// The 1-based position of `needle` in `s` (0: none).
    pub fn position(self, s: &str, needle: &str) -> String {
        match self {
            Spark => format!("instr({s}, {needle})"),
            Snowflake => format!("CHARINDEX({needle}, {s})"),
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
            Snowflake => format!(
                "CAST(GET(TRY_PARSE_JSON({json}), {}) AS VARCHAR)",
                self.string(key)
            ),
        }
    }

    /// A DECIMAL(38,18) as text, every digit of the scale written.
    pub fn decimal_text(self, v: &str) -> String {
        match self {
            Spark => format!("format_string('%.18f', {v})"),
            Bigquery => format!("FORMAT('%.18f', CAST({v} AS BIGNUMERIC))"),
            Snowflake => format!("TO_VARCHAR(CAST({v} AS NUMBER(38,18)))"),
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
            Snowflake => format!("TO_VARCHAR(LAST_DAY(TO_DATE({first})), 'YYYY-MM-DD')"),
        }
    }

    /// Integer division, NULL for a zero divisor.
    pub fn int_div(self, a: &str, b: &str) -> String {
        match self {
            Duckdb => format!("({a} // nullif({b}, 0))"),
            Spark => format!("CAST(({a}) div nullif({b}, 0) AS INT)"),
            Trino => format!("({a} / nullif({b}, 0))"),
            Bigquery => format!("DIV({a}, NULLIF({b}, 0))"),
            // `/` gives a decimal: truncated toward zero, as the others do.
            Snowflake => format!("CAST(TRUNC({a} / nullif({b}, 0)) AS INTEGER)"),
        }
    }

    /// Base64 text of binary, and binary of base64 text.
    pub fn base64(self, b: &str) -> String {
        match self {
            Duckdb | Trino => format!("to_base64({b})"),
            Spark => format!("base64({b})"),
            Bigquery => format!("TO_BASE64({b})"),
            Snowflake => format!("BASE64_ENCODE({b})"),
        }
    }

    pub fn unbase64(self, text: &str) -> String {
        match self {
            Duckdb | Trino => format!("from_base64({text})"),
            Spark => format!("unbase64({text})"),
            Bigquery => format!("FROM_BASE64({text})"),
            Snowflake => format!("BASE64_DECODE_BINARY({text})"),
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
            // An OBJECT, as the loaded nested columns are: a NULL field is left out.
            Snowflake => {
                let parts: Vec<String> = fields
                    .iter()
                    .map(|(n, e)| format!("{}, {e}", self.string(n)))
                    .collect();
                format!("OBJECT_CONSTRUCT({})", parts.join(", "))
            }
        }
    }

    /// The join that unnests `list` (of items of type `dt`) as the `k`th item column: the
    /// join, the item, its 0-based index. `or_null`: a row with no items keeps one, NULL, at
    /// index 0.
    pub fn unnest(
        self,
        list: &str,
        or_null: bool,
        k: usize,
        dt: &DataType,
    ) -> (String, String, String) {
        match self {
            Duckdb => {
                let t = format!("u{k}");
                let items = format!(
                    "list_transform({list}, lambda x, i: {{'i': CAST(i - 1 AS INTEGER), 'v': x}})"
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
            // OUTER => TRUE gives a row of NULLs for an empty list.
            Snowflake => (
                format!(
                    ", LATERAL FLATTEN(input => {list}{}) AS u{k}",
                    if or_null { ", outer => TRUE" } else { "" }
                ),
                self.item(&format!("u{k}.value"), dt),
                format!("CAST(coalesce(u{k}.index, 0) AS INTEGER)"),
            ),
        }
    }

    /// The SQL type of a primitive result column (None: not a primitive).
    pub fn type_name(self, dt: &DataType) -> Option<&'static str> {
        engines::sql_type(self.engine(), dt)
    }

    /// A type spelled whole, structs and lists included (Trino's ROW casts).
    pub fn full_type(self, dt: &DataType) -> Option<String> {
        engines::sql_full_type(self.engine(), dt)
    }

    /// The engine whose words name our types.
    fn engine(self) -> Sql {
        match self {
            Duckdb => Sql::Duckdb,
            Spark => Sql::Spark,
            Trino => Sql::Trino,
            Bigquery => Sql::Bigquery,
            Snowflake => Sql::Snowflake,
        }
    }
}

/// The SQL type a Snowflake VARIANT item of type `dt` is cast to (None: it stays VARIANT).
fn semi_structured_type(dt: &DataType) -> Option<&'static str> {
    match dt {
        DataType::Struct(_) | DataType::Null => None,
        DataType::List(_) => Some("ARRAY"),
        other => Snowflake.type_name(other),
    }
}

/// The groups a regular expression opens, in order: the byte offset of each `(` (not escaped,
/// not in a bracket class) and whether it captures (`(?:...)` does not).
fn groups(pattern: &str) -> Vec<(usize, bool)> {
    let mut out = Vec::new();
    let mut chars = pattern.char_indices().peekable();
    let (mut escaped, mut in_class) = (false, false);
    while let Some((i, c)) = chars.next() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '[' => in_class = true,
            ']' => in_class = false,
            '(' if !in_class => out.push((i, chars.peek().map(|p| p.1) != Some('?'))),
            _ => {}
        }
    }
    out
}

/// `pattern` with its non-capturing groups made capturing (POSIX expressions have no others),
/// and the number the `group`th capturing group then has.
fn posix_groups(pattern: &str, group: usize) -> (String, usize) {
    let (mut out, mut from) = (String::new(), 0);
    let (mut capturing, mut target) = (0, group);
    for (at, captures) in groups(pattern) {
        if captures {
            capturing += 1;
        } else if pattern[at..].starts_with("(?:") {
            // `(?:` → `(`: one more group before the ones that follow.
            out.push_str(&pattern[from..=at]);
            from = at + 3;
            if capturing < group {
                target += 1;
            }
        }
    }
    out.push_str(&pattern[from..]);
    (out, target)
}

/// `pattern` with every capturing group but the `group`th made non-capturing.
fn only_group(pattern: &str, group: usize) -> String {
    let (mut out, mut from) = (String::new(), 0);
    let capturing = groups(pattern).into_iter().filter(|g| g.1);
    for (n, (at, _)) in capturing.enumerate() {
        if n + 1 != group {
            out.push_str(&pattern[from..=at]);
            out.push_str("?:");
            from = at + 1;
        }
    }
    out.push_str(&pattern[from..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snowflake_regular_expressions_have_posix_groups_only() {
        assert_eq!(
            posix_groups("^(?:.*/)?([A-Z]+)/([^/?]+)(?:/_history/[^/]+)?$", 2),
            ("^(.*/)?([A-Z]+)/([^/?]+)(/_history/[^/]+)?$".to_string(), 3)
        );
        assert_eq!(posix_groups("^urn:(?:uuid|oid):(.+)$", 1).1, 2);
        assert_eq!(posix_groups("[(]x(y)", 1), ("[(]x(y)".to_string(), 1));
        let g = Snowflake.regex_group("s", "^(?:a)(b)$", 1);
        assert_eq!(g, "nullif(REGEXP_SUBSTR(s, '^(a)(b)$', 1, 1, 'e', 2), '')");
    }

    #[test]
    fn snowflake_items_are_cast_from_variant() {
        let text = DataType::Utf8;
        assert_eq!(Snowflake.item("v", &text), "CAST(v AS VARCHAR)");
        assert_eq!(
            Snowflake.field("x", "family", &text),
            "CAST(GET(x, 'family') AS VARCHAR)"
        );
        let st = DataType::Struct(Default::default());
        assert_eq!(
            Snowflake.field("x", "code", &st),
            "STRIP_NULL_VALUE(GET(x, 'code'))"
        );
        assert_eq!(
            Snowflake.filter("l", "v", &text, "v = 'a'"),
            "FILTER(l, v VARCHAR -> v = 'a')"
        );
        assert_eq!(Snowflake.filter("l", "v", &st, "c"), "FILTER(l, v -> c)");
        assert_eq!(Snowflake.drop_nulls("l", "v", &text), "ARRAY_COMPACT(l)");
        assert_eq!(
            Snowflake.at("l", "-1", &text),
            "CAST(GET(l, ARRAY_SIZE(l) - 1) AS VARCHAR)"
        );
        assert_eq!(Snowflake.string("a'b\\c"), "'a''b\\\\c'");
    }

    #[test]
    fn bigquery_keeps_the_one_group_asked_for() {
        assert_eq!(only_group("^(a)/(b)(?:c)$", 2), "^(?:a)/(b)(?:c)$");
        assert_eq!(only_group("^(a)/(b)$", 1), "^(a)/(?:b)$");
    }
}
