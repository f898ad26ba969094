//! The idioms of FHIR analytics SQL (BigQuery's, mostly), rewritten before DataFusion plans a
//! statement.
//!
//! DataFusion 55 plans neither a field after an index (`code.coding[1].code`: "Dot access not
//! supported for non-string expr") nor an `UNNEST` in FROM that refers to a table before it
//! ("Nested identifiers are not yet supported for OuterReferenceColumn"). Both are rewritten in
//! the parsed statement into forms it plans, and plans well:
//!
//! - `x[i].f` and `(expr).f` become `x[i]['f']` (DataFusion's field access), to any depth.
//! - `FROM t AS o, UNNEST(o.x) AS c` becomes `FROM (SELECT *, unnest(o.x) AS c FROM t AS o) AS o`:
//!   the unnest stays DataFusion's vectorized one, `o.col` still names the table's columns and
//!   `c.f` the element's fields. Several unnests nest, each over the previous one; `CROSS JOIN`
//!   and `JOIN ... ON TRUE` are the same; `LEFT JOIN UNNEST(...) ON TRUE` keeps rows whose list
//!   is empty or null (with NULL for the element); `WITH OFFSET [AS n]` adds the 0-based
//!   position (`offset` by default), `WITH ORDINALITY` the 1-based one (`ordinality`).
//! - `[OFFSET(i)]`, `[SAFE_OFFSET(i)]` (0-based), `[ORDINAL(i)]`, `[SAFE_ORDINAL(i)]` (1-based)
//!   become DataFusion's 1-based index, which gives NULL out of range (BigQuery's `SAFE_` form;
//!   the plain form raises an error there).
//! - `DATE(x)` is `CAST(x AS DATE)`; `DATE_DIFF(a, b, DAY | MONTH | YEAR)` counts the boundaries
//!   crossed from `b` to `a`, as BigQuery does.
//!
//! `SAFE_CAST`, `EXTRACT`, `IFNULL`, `ARRAY_LENGTH` and backquoted identifiers DataFusion plans as
//! they are.

use std::ops::ControlFlow;

use datafusion::sql::parser::{CopyToSource, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    AccessExpr, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, JoinConstraint,
    JoinOperator, Query, SetExpr, Statement, Subscript, TableFactor, TableWithJoins, Value,
    VisitMut, VisitorMut,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

/// BigQuery's `#` line comments as `--` ones, which the parser reads: a `#` outside quotes and
/// comments starts a comment to the end of the line.
pub fn hash_comments(sql: &str) -> std::borrow::Cow<'_, str> {
    if !sql.contains('#') {
        return sql.into();
    }
    let mut out = String::with_capacity(sql.len() + 8);
    let mut quote: Option<char> = None;
    let mut comment = false;
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        match (quote, comment, c) {
            (_, true, '\n') => comment = false,
            (_, true, _) => {}
            (Some(q), _, c) if c == q => quote = None,
            (Some(_), _, '\\') => {
                out.push(c);
                if let Some(n) = chars.next() {
                    out.push(n);
                }
                continue;
            }
            (Some(_), _, _) => {}
            (None, _, '\'' | '"' | '`') => quote = Some(c),
            (None, _, '-') if chars.peek() == Some(&'-') => comment = true,
            (None, _, '#') => {
                comment = true;
                out.push_str("--");
                continue;
            }
            _ => {}
        }
        out.push(c);
    }
    out.into()
}

/// Rewrites the idioms of a statement (queries, `EXPLAIN` and `COPY (query) TO` included) in
/// place; an error names the construct and the supported form.
pub fn rewrite_statement(stmt: &mut DfStatement) -> Result<(), String> {
    match stmt {
        DfStatement::Statement(s) => rewrite(s),
        DfStatement::Explain(e) => rewrite_statement(&mut e.statement),
        DfStatement::CopyTo(c) => match &mut c.source {
            CopyToSource::Query(q) => done(q.visit(&mut Idioms)),
            CopyToSource::Relation(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Rewrites the idioms of a SQL statement in place.
pub fn rewrite(stmt: &mut Statement) -> Result<(), String> {
    done(stmt.visit(&mut Idioms))
}

fn done(flow: ControlFlow<String>) -> Result<(), String> {
    match flow {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct Idioms;

impl VisitorMut for Idioms {
    type Break = String;

    fn pre_visit_query(&mut self, query: &mut Query) -> ControlFlow<Self::Break> {
        match lateral_in(&mut query.body) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<Self::Break> {
        match rewrite_expr(expr) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }
}

fn rewrite_expr(expr: &mut Expr) -> Result<(), String> {
    match expr {
        Expr::CompoundFieldAccess { root, access_chain } => {
            // Leading `.name`s after a plain identifier are table, column and field names, which
            // DataFusion resolves itself; every `.name` after an index, or after any other
            // expression, is a field.
            let mut fields = !matches!(**root, Expr::Identifier(_) | Expr::CompoundIdentifier(_));
            for access in access_chain.iter_mut() {
                match access {
                    AccessExpr::Subscript(Subscript::Index { index }) => {
                        fields = true;
                        if let Some(i) = bigquery_index(index)? {
                            *index = i;
                        }
                    }
                    AccessExpr::Subscript(_) => fields = true,
                    AccessExpr::Dot(Expr::Identifier(name)) if fields => {
                        let name = Expr::value(Value::SingleQuotedString(name.value.clone()));
                        *access = AccessExpr::Subscript(Subscript::Index { index: name });
                    }
                    AccessExpr::Dot(_) => {}
                }
            }
        }
        Expr::Function(f) => {
            if let Some(e) = bigquery_function(f)? {
                *expr = e;
            }
        }
        // BigQuery's raw strings (r'\d'): DataFusion's strings take no escapes either.
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedRawStringLiteral(s) | Value::DoubleQuotedRawStringLiteral(s) => {
                v.value = Value::SingleQuotedString(s.clone());
            }
            _ => {}
        },
        Expr::Extract { field, expr: x, .. } if field.to_string().eq_ignore_ascii_case("DATE") => {
            *expr = parse_expr(&format!("CAST({x} AS DATE)"))?;
        }
        Expr::Cast { data_type, .. } => {
            use datafusion::sql::sqlparser::ast::{DataType as SqlType, ExactNumberInfo};
            let bigquery = match data_type {
                SqlType::Float64 => Some(SqlType::Double(ExactNumberInfo::None)),
                SqlType::Int64 => Some(SqlType::BigInt(None)),
                SqlType::Bool => Some(SqlType::Boolean),
                SqlType::Custom(name, _) => match name.to_string().to_ascii_uppercase().as_str() {
                    "NUMERIC" => Some(SqlType::Decimal(ExactNumberInfo::PrecisionAndScale(38, 9))),
                    "BIGNUMERIC" => {
                        Some(SqlType::Decimal(ExactNumberInfo::PrecisionAndScale(76, 38)))
                    }
                    _ => None,
                },
                _ => None,
            };
            if let Some(t) = bigquery {
                *data_type = t;
            }
        }
        _ => {}
    }
    Ok(())
}

/// The arguments of a plain function call `f(a, b, ...)`.
pub(crate) fn plain_args(f: &Function) -> Option<Vec<&Expr>> {
    let FunctionArguments::List(list) = &f.args else {
        return None;
    };
    list.args
        .iter()
        .map(|a| match a {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
            _ => None,
        })
        .collect()
}

fn function_name(f: &Function) -> String {
    f.name.to_string().to_ascii_uppercase()
}

/// `OFFSET(i)` and friends inside `[...]`, as DataFusion's 1-based index.
fn bigquery_index(index: &Expr) -> Result<Option<Expr>, String> {
    if index.to_string() == "0" {
        // BigQuery reads a bare [0] as the first element (an offset); here [1] is the first.
        // NULL would be a silent wrong answer.
        return Err(
            "[0]: indexes in the shell are 1-based ([1] is the first element); BigQuery's \
             0-based form is [OFFSET(0)] or [SAFE_OFFSET(0)]"
                .to_string(),
        );
    }
    Ok(match index_position(index)? {
        Some((true, i)) => Some(parse_expr(&format!("({i}) + 1"))?),
        Some((false, i)) => Some(i.clone()),
        None => None,
    })
}

/// The position a BigQuery index function names: `OFFSET(i)`, `SAFE_OFFSET(i)` (0-based, true)
/// or `ORDINAL(i)`, `SAFE_ORDINAL(i)` (1-based, false), with `i`; None for any other expression.
pub(crate) fn index_position(index: &Expr) -> Result<Option<(bool, &Expr)>, String> {
    let Expr::Function(f) = index else {
        return Ok(None);
    };
    let name = function_name(f);
    let zero_based = match name.as_str() {
        "OFFSET" | "SAFE_OFFSET" => true,
        "ORDINAL" | "SAFE_ORDINAL" => false,
        _ => return Ok(None),
    };
    let args = plain_args(f).unwrap_or_default();
    let [i] = args.as_slice() else {
        return Err(format!(
            "[{name}(...)] takes one position, as in [{name}(0)]"
        ));
    };
    Ok(Some((zero_based, i)))
}

/// BigQuery functions DataFusion does not have, as expressions it plans.
fn bigquery_function(f: &Function) -> Result<Option<Expr>, String> {
    let name = function_name(f);
    let Some(args) = plain_args(f) else {
        return Ok(None);
    };
    let sql = |s: String| parse_expr(&s).map(Some);
    match (name.as_str(), args.as_slice()) {
        ("DATE", [x]) => Ok(Some(parse_expr(&format!("CAST({x} AS DATE)"))?)),
        ("TIMESTAMP", [x]) => sql(format!("CAST({x} AS TIMESTAMP)")),
        ("TIMESTAMP_MICROS", [x]) => sql(format!("to_timestamp_micros({x})")),
        ("TIMESTAMP_MILLIS", [x]) => sql(format!("to_timestamp_millis({x})")),
        ("TIMESTAMP_SECONDS", [x]) => sql(format!("to_timestamp_seconds({x})")),
        ("UNIX_MICROS", [x]) => sql(format!(
            "CAST(CAST(CAST({x} AS TIMESTAMP) AS BIGINT) / 1000 AS BIGINT)"
        )),
        ("UNIX_SECONDS", [x]) => sql(format!(
            "CAST(CAST(CAST({x} AS TIMESTAMP) AS BIGINT) / 1000000000 AS BIGINT)"
        )),
        ("TIMESTAMP_DIFF" | "DATETIME_DIFF", [a, b, part]) => {
            let part = part.to_string().to_ascii_uppercase();
            let nanos: i64 = match part.as_str() {
                "MICROSECOND" => 1_000,
                "MILLISECOND" => 1_000_000,
                "SECOND" => 1_000_000_000,
                "MINUTE" => 60_000_000_000,
                "HOUR" => 3_600_000_000_000,
                "DAY" => 86_400_000_000_000,
                other => {
                    return Err(format!(
                        "{name}(..., {other}): the parts supported are MICROSECOND, MILLISECOND, \
                         SECOND, MINUTE, HOUR and DAY"
                    ))
                }
            };
            let ns = |x: &Expr| format!("CAST(CAST({x} AS TIMESTAMP) AS BIGINT)");
            sql(format!("CAST(({} - {}) / {nanos} AS BIGINT)", ns(a), ns(b)))
        }
        (
            "TIMESTAMP_ADD" | "TIMESTAMP_SUB" | "DATE_ADD" | "DATE_SUB" | "DATETIME_ADD"
            | "DATETIME_SUB",
            [x, Expr::Interval(i)],
        ) => {
            let unit = i
                .leading_field
                .as_ref()
                .map(|f| f.to_string().to_ascii_lowercase())
                .ok_or_else(|| format!("{name}: write the interval as INTERVAL n DAY"))?;
            let n = &i.value;
            let interval = match &**n {
                Expr::Value(v) if matches!(v.value, Value::Number(..)) => {
                    format!("INTERVAL '{n} {unit}'")
                }
                _ => format!("(CAST({n} AS BIGINT) * INTERVAL '1 {unit}')"),
            };
            let op = if name.ends_with("_SUB") { "-" } else { "+" };
            let cast = if name.starts_with("DATE_") {
                "DATE"
            } else {
                "TIMESTAMP"
            };
            sql(format!("(CAST({x} AS {cast}) {op} {interval})"))
        }
        ("DATE_TRUNC" | "TIMESTAMP_TRUNC" | "DATETIME_TRUNC", [x, Expr::Identifier(part)])
            if part.quote_style.is_none() =>
        {
            let part = part.value.to_ascii_lowercase();
            let truncated = format!("date_trunc('{part}', CAST({x} AS TIMESTAMP))");
            sql(if name == "DATE_TRUNC" {
                format!("CAST({truncated} AS DATE)")
            } else {
                truncated
            })
        }
        ("IF", [c, a, b]) => sql(format!("CASE WHEN {c} THEN {a} ELSE {b} END")),
        ("COUNTIF", [c]) => sql(format!("COUNT(CASE WHEN {c} THEN 1 END)")),
        ("LOGICAL_AND", [c]) => sql(format!("bool_and({c})")),
        ("LOGICAL_OR", [c]) => sql(format!("bool_or({c})")),
        ("APPROX_COUNT_DISTINCT", [x]) => sql(format!("approx_distinct({x})")),
        ("APPROX_QUANTILES", [x, n]) => {
            let n: u32 = n
                .to_string()
                .parse()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .ok_or_else(|| {
                    format!("APPROX_QUANTILES({x}, {n}): the number of quantiles is a literal from 1 to 100")
                })?;
            let mut items = vec![format!("CAST(min({x}) AS DOUBLE)")];
            for i in 1..n {
                items.push(format!(
                    "CAST(approx_percentile_cont({x}, {}) AS DOUBLE)",
                    f64::from(i) / f64::from(n)
                ));
            }
            items.push(format!("CAST(max({x}) AS DOUBLE)"));
            sql(format!("make_array({})", items.join(", ")))
        }
        ("APPROX_TOP_SUM", _) => Err(format!(
            "{name} is not supported; write SELECT x, SUM(w) AS s ... GROUP BY x ORDER BY s \
             DESC LIMIT k"
        )),
        ("GENERATE_ARRAY", [a, b]) => sql(format!("generate_series({a}, {b})")),
        ("GENERATE_ARRAY", [a, b, s]) => sql(format!("generate_series({a}, {b}, {s})")),
        ("FORMAT_DATE", [f, d]) => sql(format!("to_char(CAST({d} AS DATE), {f})")),
        ("FORMAT_TIMESTAMP" | "FORMAT_DATETIME", [f, t]) => {
            sql(format!("to_char(CAST({t} AS TIMESTAMP), {f})"))
        }
        ("PARSE_DATE", [f, s]) => sql(format!("to_date({s}, {f})")),
        ("PARSE_TIMESTAMP" | "PARSE_DATETIME", [f, s]) => sql(format!("to_timestamp({s}, {f})")),
        ("REGEXP_CONTAINS", [s, r]) => sql(format!("regexp_like({s}, {r})")),
        ("REGEXP_EXTRACT", [s, r]) => sql(format!("regexp_match({s}, {r})[1]")),
        ("SAFE_DIVIDE", [a, b]) => sql(format!(
            "CAST({a} AS DOUBLE) / NULLIF(CAST({b} AS DOUBLE), 0)"
        )),
        ("DIV", [a, b]) => sql(format!("CAST(({a}) / ({b}) AS BIGINT)")),
        ("DATE_DIFF", [a, b, part]) => {
            let day = |x: &Expr| format!("CAST(CAST(CAST({x} AS DATE) AS INT) AS BIGINT)");
            let field = |name: &str, x: &Expr| {
                format!("CAST(date_part('{name}', CAST({x} AS DATE)) AS BIGINT)")
            };
            let sql = match part.to_string().to_ascii_uppercase().as_str() {
                "DAY" => format!("({} - {})", day(a), day(b)),
                "MONTH" => format!(
                    "(({} - {}) * 12 + {} - {})",
                    field("year", a),
                    field("year", b),
                    field("month", a),
                    field("month", b)
                ),
                "YEAR" => format!("({} - {})", field("year", a), field("year", b)),
                other => {
                    return Err(format!(
                        "DATE_DIFF(..., {other}): the parts supported are DAY, MONTH and YEAR"
                    ))
                }
            };
            Ok(Some(parse_expr(&sql)?))
        }
        _ => Ok(None),
    }
}

pub(crate) fn parse_expr(sql: &str) -> Result<Expr, String> {
    Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
        .map_err(|e| format!("internal rewrite of {sql}: {e}"))
}

fn parse_query(sql: &str) -> Result<Query, String> {
    Parser::new(&GenericDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_query())
        .map(|q| *q)
        .map_err(|e| format!("internal rewrite of {sql}: {e}"))
}

/// Every SELECT of a query body.
fn lateral_in(body: &mut SetExpr) -> Result<(), String> {
    match body {
        SetExpr::Select(select) => {
            let from = std::mem::take(&mut select.from);
            select.from = lateral(from)?;
            Ok(())
        }
        SetExpr::SetOperation { left, right, .. } => {
            lateral_in(left)?;
            lateral_in(right)
        }
        _ => Ok(()),
    }
}

/// How an UNNEST joins what stands before it.
#[derive(Clone, Copy, PartialEq)]
enum Keep {
    /// Comma, CROSS JOIN, JOIN ... ON TRUE: rows with an empty list are dropped.
    Matches,
    /// LEFT JOIN ... ON TRUE: they are kept, with NULL.
    All,
}

const FORM: &str = "FROM t AS o, UNNEST(o.list) AS x (or CROSS JOIN / JOIN ... ON TRUE / \
                    LEFT JOIN ... ON TRUE)";

/// The FROM clause with each UNNEST that follows a relation folded into it.
fn lateral(from: Vec<TableWithJoins>) -> Result<Vec<TableWithJoins>, String> {
    let mut out: Vec<TableWithJoins> = Vec::new();
    for (i, mut twj) in from.into_iter().enumerate() {
        let joins = std::mem::take(&mut twj.joins);
        if i > 0 && is_unnest(&twj.relation) {
            let prev = out.pop().expect("i > 0");
            out.push(fold(Some(prev), twj.relation, Keep::Matches)?);
        } else if is_unnest(&twj.relation) {
            // `FROM UNNEST([1, 2]) AS x`: x names the element, as in BigQuery.
            out.push(fold(None, twj.relation, Keep::Matches)?);
        } else {
            out.push(twj);
        }
        for join in joins {
            if !is_unnest(&join.relation) {
                out.last_mut().expect("pushed above").joins.push(join);
                continue;
            }
            let keep = match &join.join_operator {
                JoinOperator::CrossJoin(JoinConstraint::None) => Keep::Matches,
                JoinOperator::Join(c) | JoinOperator::Inner(c) if on_true(c) => Keep::Matches,
                JoinOperator::Left(c) | JoinOperator::LeftOuter(c) if on_true(c) => Keep::All,
                other => {
                    return Err(format!(
                        "UNNEST in {} is not supported; write {FORM}",
                        join_name(other)
                    ))
                }
            };
            let prev = out.last_mut().expect("pushed above");
            // After `JOIN t AS obs ON ...`, an UNNEST of obs's list (a CROSS JOIN, or any with
            // an inner join before it) goes into that join: obs's rows with their elements,
            // joined as obs was. The same rows: the join's condition cannot name the element.
            let into_last = prev.joins.last().is_some_and(|last| {
                matches!(
                    last.join_operator,
                    JoinOperator::Join(_) | JoinOperator::Inner(_)
                ) && unnest_root(&join.relation).is_some_and(|root| {
                    relation_name(&last.relation).is_some_and(|n| n.eq_ignore_ascii_case(&root))
                })
            });
            if into_last {
                let mut last = prev.joins.pop().expect("checked");
                let joined = TableWithJoins {
                    relation: last.relation,
                    joins: vec![],
                };
                last.relation = fold(Some(joined), join.relation, keep)?.relation;
                prev.joins.push(last);
                continue;
            }
            let prev = out.pop().expect("pushed above");
            out.push(fold(Some(prev), join.relation, keep)?);
        }
    }
    Ok(out)
}

fn join_name(op: &JoinOperator) -> String {
    let text = format!("{op:?}");
    let name = text.split('(').next().unwrap_or("this join");
    format!("a {name} join")
}

fn on_true(c: &JoinConstraint) -> bool {
    match c {
        JoinConstraint::On(e) => e.to_string().eq_ignore_ascii_case("true"),
        JoinConstraint::None => true,
        _ => false,
    }
}

/// The first name of an UNNEST's list: `obs` for `UNNEST(obs.code.coding)`.
fn unnest_root(t: &TableFactor) -> Option<String> {
    let TableFactor::UNNEST { array_exprs, .. } = t else {
        return None;
    };
    match array_exprs.first()? {
        Expr::CompoundIdentifier(parts) if parts.len() > 1 => Some(parts[0].value.clone()),
        _ => None,
    }
}

/// The name a relation's columns are qualified by: its alias, or a table's own name.
fn relation_name(t: &TableFactor) -> Option<String> {
    match t {
        TableFactor::Table { alias: Some(a), .. } | TableFactor::Derived { alias: Some(a), .. } => {
            Some(a.name.value.clone())
        }
        TableFactor::Table {
            name, alias: None, ..
        } => name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.clone()),
        _ => None,
    }
}

fn is_unnest(t: &TableFactor) -> bool {
    matches!(t, TableFactor::UNNEST { .. })
}

/// `prev` with one more column per UNNEST: `(SELECT *, unnest(list) AS x FROM prev) AS alias`.
/// Without `prev` (an UNNEST first in FROM): `(SELECT unnest(list) AS x) AS _x`.
fn fold(
    prev: Option<TableWithJoins>,
    unnest: TableFactor,
    keep: Keep,
) -> Result<TableWithJoins, String> {
    let TableFactor::UNNEST {
        alias,
        array_exprs,
        with_offset,
        with_offset_alias,
        with_ordinality,
    } = unnest
    else {
        unreachable!("checked by is_unnest")
    };
    let [list] = array_exprs.as_slice() else {
        return Err(format!(
            "UNNEST of {} lists at once is not supported; write one UNNEST per list: {FORM}",
            array_exprs.len()
        ));
    };
    let Some(alias) = alias else {
        return Err(format!(
            "UNNEST({list}) in FROM needs a name: UNNEST({list}) AS x"
        ));
    };
    let Some(prev) = prev else {
        let list = list.to_string();
        let sql = format!(
            "SELECT * FROM (SELECT unnest({list}) AS {}) AS \"_{}\"",
            alias.name, alias.name.value
        );
        if with_offset || with_ordinality {
            return Err(format!(
                "WITH OFFSET on an UNNEST first in FROM is not supported; {FORM}"
            ));
        }
        return from_item(&sql);
    };
    if !prev.joins.is_empty() {
        return Err(format!(
            "UNNEST({list}) after a JOIN is not supported; unnest first and join after, or \
             join in a subquery: {FORM}"
        ));
    }
    let name = match &prev.relation {
        TableFactor::Table { alias: Some(a), .. } | TableFactor::Derived { alias: Some(a), .. } => {
            a.name.clone()
        }
        TableFactor::Table {
            name, alias: None, ..
        } => match name.0.last() {
            Some(part) => match part.as_ident() {
                Some(i) => i.clone(),
                None => return Err(format!("UNNEST({list}) after {name}: give it an alias")),
            },
            None => return Err(format!("UNNEST({list}): give the table before it an alias")),
        },
        other => {
            return Err(format!(
                "UNNEST({list}) after {other} is not supported: give it an alias, {FORM}"
            ))
        }
    };
    let list = list.to_string();
    let element = match keep {
        Keep::Matches => format!("unnest({list})"),
        Keep::All => format!(
            "unnest(CASE WHEN cardinality({list}) > 0 THEN {list} ELSE make_array(NULL) END)"
        ),
    };
    let mut columns = vec![format!("{element} AS {}", alias.name)];
    let position = |start: i64| match keep {
        Keep::Matches => {
            format!("unnest(range({start}, CAST(cardinality({list}) AS BIGINT) + {start}))")
        }
        Keep::All => format!(
            "unnest(CASE WHEN cardinality({list}) > 0 THEN range({start}, \
             CAST(cardinality({list}) AS BIGINT) + {start}) ELSE make_array(NULL) END)"
        ),
    };
    if with_offset {
        let n = with_offset_alias.map_or("\"offset\"".to_string(), |a| a.to_string());
        columns.push(format!("{} AS {n}", position(0)));
    }
    if with_ordinality {
        columns.push(format!("{} AS ordinality", position(1)));
    }
    let sql = format!(
        "SELECT * FROM (SELECT *, {} FROM {prev}) AS {name}",
        columns.join(", ")
    );
    from_item(&sql)
}

/// The FROM item of a `SELECT * FROM <item>` written here.
fn from_item(sql: &str) -> Result<TableWithJoins, String> {
    let query = parse_query(sql)?;
    let SetExpr::Select(select) = *query.body else {
        unreachable!("a SELECT was written")
    };
    let mut from = select.from;
    Ok(from.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> String {
        let mut stmt = Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0);
        rewrite(&mut stmt).unwrap();
        stmt.to_string()
    }

    #[test]
    fn fields_after_an_index_become_named_field_access() {
        assert_eq!(
            rewritten("SELECT code.coding[1].code FROM Observation"),
            "SELECT code.coding[1]['code'] FROM Observation"
        );
        assert_eq!(
            rewritten("SELECT o.code.coding[1].code.x FROM Observation AS o"),
            "SELECT o.code.coding[1]['code']['x'] FROM Observation AS o"
        );
        assert_eq!(
            rewritten("SELECT code.coding[OFFSET(0)].code, code.coding[ORDINAL(2)] FROM t"),
            "SELECT code.coding[(0) + 1]['code'], code.coding[2] FROM t"
        );
    }

    #[test]
    fn unnest_after_a_table_becomes_a_subquery() {
        assert_eq!(
            rewritten("SELECT o.id, c.code FROM Observation AS o, UNNEST(o.code.coding) AS c"),
            "SELECT o.id, c.code FROM (SELECT *, unnest(o.code.coding) AS c \
             FROM Observation AS o) AS o"
        );
    }

    #[test]
    fn unnest_after_an_inner_join_goes_into_the_joined_table() {
        assert_eq!(
            rewritten(
                "SELECT c.code FROM p JOIN Observation AS o ON p.id = o.pid \
                 CROSS JOIN UNNEST(o.code.coding) AS c"
            ),
            "SELECT c.code FROM p JOIN (SELECT *, unnest(o.code.coding) AS c FROM Observation \
             AS o) AS o ON p.id = o.pid"
        );
        let mut stmt = Parser::parse_sql(
            &GenericDialect {},
            "SELECT 1 FROM p LEFT JOIN o ON p.id = o.pid CROSS JOIN UNNEST(o.x) AS c",
        )
        .unwrap()
        .remove(0);
        let e = rewrite(&mut stmt).unwrap_err();
        assert!(e.contains("after a JOIN"), "{e}");
    }

    #[test]
    fn unsupported_forms_name_the_supported_one() {
        let mut stmt = Parser::parse_sql(
            &GenericDialect {},
            "SELECT 1 FROM Observation AS o, UNNEST(o.code.coding)",
        )
        .unwrap()
        .remove(0);
        let e = rewrite(&mut stmt).unwrap_err();
        assert!(e.contains("needs a name"), "{e}");
        let mut stmt = Parser::parse_sql(&GenericDialect {}, "SELECT code.coding[0] FROM t")
            .unwrap()
            .remove(0);
        let e = rewrite(&mut stmt).unwrap_err();
        assert!(e.contains("[OFFSET(0)]"), "{e}");
    }

    fn expr(sql: &str) -> String {
        let mut stmt = Parser::parse_sql(&GenericDialect {}, &format!("SELECT {sql}"))
            .unwrap()
            .remove(0);
        rewrite(&mut stmt).unwrap();
        stmt.to_string().trim_start_matches("SELECT ").to_string()
    }

    #[test]
    fn hash_comments_become_dash_comments_outside_quotes() {
        assert_eq!(
            hash_comments("SELECT '#a', \"#b\" # why\nFROM t -- #c\n"),
            "SELECT '#a', \"#b\" -- why\nFROM t -- #c\n"
        );
    }

    #[test]
    fn bigquery_functions_become_datafusion_forms() {
        for (bigquery, datafusion) in [
            ("IF(a, 1, 2)", "CASE WHEN a THEN 1 ELSE 2 END"),
            ("COUNTIF(a > 1)", "COUNT(CASE WHEN a > 1 THEN 1 END)"),
            ("LOGICAL_AND(a)", "bool_and(a)"),
            ("TIMESTAMP(x)", "CAST(x AS TIMESTAMP)"),
            (
                "TIMESTAMP_DIFF(a, b, HOUR)",
                "CAST((CAST(CAST(a AS TIMESTAMP) AS BIGINT) - CAST(CAST(b AS TIMESTAMP) AS \
                 BIGINT)) / 3600000000000 AS BIGINT)",
            ),
            (
                "TIMESTAMP_ADD(t, INTERVAL 3 DAY)",
                "(CAST(t AS TIMESTAMP) + INTERVAL '3 day')",
            ),
            (
                "DATE_SUB(d, INTERVAL n MONTH)",
                "(CAST(d AS DATE) - (CAST(n AS BIGINT) * INTERVAL '1 month'))",
            ),
            (
                "DATE_TRUNC(d, MONTH)",
                "CAST(date_trunc('month', CAST(d AS TIMESTAMP)) AS DATE)",
            ),
            ("EXTRACT(DATE FROM t)", "CAST(t AS DATE)"),
            ("CAST(x AS FLOAT64)", "CAST(x AS DOUBLE)"),
            ("GENERATE_ARRAY(1, 9, 2)", "generate_series(1, 9, 2)"),
            ("FORMAT_DATE('%Y', d)", "to_char(CAST(d AS DATE), '%Y')"),
            ("PARSE_DATE('%Y%m%d', s)", "to_date(s, '%Y%m%d')"),
            ("REGEXP_CONTAINS(s, r'\\d')", "regexp_like(s, '\\d')"),
            (
                "SAFE_DIVIDE(a, b)",
                "CAST(a AS DOUBLE) / NULLIF(CAST(b AS DOUBLE), 0)",
            ),
            (
                "APPROX_QUANTILES(x, 2)",
                "make_array(CAST(min(x) AS DOUBLE), CAST(approx_percentile_cont(x, 0.5) AS \
                 DOUBLE), CAST(max(x) AS DOUBLE))",
            ),
        ] {
            assert_eq!(expr(bigquery), datafusion, "{bigquery}");
        }
    }
}
