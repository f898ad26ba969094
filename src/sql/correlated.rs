//! Correlated subqueries over an outer row's list, and `x IN UNNEST(list)`, as vectorized
//! expressions.
//!
//! BigQuery queries look into a row's lists with subqueries:
//! `EXISTS (SELECT 1 FROM UNNEST(o.code.coding) c WHERE c.system = 'http://loinc.org')`,
//! `(SELECT value.string FROM UNNEST(extension) WHERE url = '...')`,
//! `ARRAY(SELECT c.code FROM UNNEST(code.coding) c)`. DataFusion 55 plans no UNNEST of an outer
//! column in a subquery; these forms say exactly what a FHIRPath expression over the row says, so
//! each becomes a `fhirpath()` call (compiled to vectorized functions by the views' compiler):
//!
//! | BigQuery | FHIRPath |
//! |---|---|
//! | `EXISTS (SELECT 1 FROM UNNEST(o.list) c WHERE cond)` | `list.where(cond).exists()` |
//! | `(SELECT c.x FROM UNNEST(o.list) c WHERE cond)` | `list.where(cond).select(x)`, the first value (BigQuery fails on more than one) |
//! | `(SELECT COUNT(*) FROM UNNEST(o.list) c WHERE cond)` | `list.where(cond).count()` |
//! | `ARRAY(SELECT c.x FROM UNNEST(o.list) c WHERE cond)` | `list.where(cond).select(x)`, every value |
//!
//! Conditions and selections may use `=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`, `AND`, `OR`, `NOT`,
//! `IS [NOT] NULL`, `IN (...)`, `LIKE`, `UPPER`, `LOWER`, `STARTS_WITH`, `ENDS_WITH`, `LENGTH`,
//! literals and paths of the element; anything else is an error naming the form that works.

use datafusion::sql::sqlparser::ast::{
    AccessExpr, BinaryOperator, Expr, FunctionArguments, GroupByExpr, LimitClause, Query,
    SelectItem, SetExpr, Subscript, TableFactor, UnaryOperator, Value,
};

use super::idioms::{index_position, parse_expr, plain_args};
use super::scope::Scopes;

const FORM: &str = "write the list's UNNEST in the outer FROM (FROM t AS o, UNNEST(o.list) AS c) \
                    or use fhirpath('list.where(...)')";

/// What the subquery gives.
#[derive(Clone, Copy, PartialEq)]
enum Want {
    Exists,
    Scalar,
    Array,
}

/// Rewrites one expression node (its children done) if it is one of the forms above.
pub(crate) fn rewrite(expr: &mut Expr, scopes: &Scopes) -> Result<(), String> {
    let new = match expr {
        Expr::InUnnest {
            expr: x,
            array_expr,
            negated,
        } => {
            let not = if *negated { "NOT " } else { "" };
            Some(parse_expr(&format!(
                "CASE WHEN ({x}) IS NULL THEN NULL ELSE {not}coalesce(array_has({array_expr}, {x}), false) END"
            ))?)
        }
        Expr::Exists { subquery, negated } => over_list(subquery, scopes, Want::Exists)?
            .map(|e| {
                if *negated {
                    parse_expr(&format!("NOT ({e})"))
                } else {
                    Ok(e)
                }
            })
            .transpose()?,
        Expr::Subquery(q) => match without_from(q)? {
            Some(e) => Some(e),
            None => over_list(q, scopes, Want::Scalar)?,
        },
        Expr::Function(f) if f.name.to_string().eq_ignore_ascii_case("ARRAY") => match &f.args {
            FunctionArguments::Subquery(q) => over_list(q, scopes, Want::Array)?,
            _ => None,
        },
        _ => None,
    };
    if let Some(e) = new {
        *expr = e;
    }
    Ok(())
}

/// `(SELECT x)` and `(SELECT x WHERE c)`, as google-fhir-views writes each column: the value
/// itself (NULL where the condition does not hold).
fn without_from(q: &Query) -> Result<Option<Expr>, String> {
    let SetExpr::Select(select) = &*q.body else {
        return Ok(None);
    };
    let plain = select.from.is_empty()
        && q.with.is_none()
        && q.order_by.is_none()
        && q.limit_clause.is_none()
        && select.having.is_none()
        && select.distinct.is_none()
        && matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty());
    let [item] = select.projection.as_slice() else {
        return Ok(None);
    };
    let (SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. }) = item else {
        return Ok(None);
    };
    // An aggregate without FROM aggregates one row: not the value; left to DataFusion.
    if !plain || matches!(e, Expr::Function(_)) {
        return Ok(None);
    }
    Ok(Some(match &select.selection {
        None => Expr::Nested(Box::new(e.clone())),
        Some(c) => parse_expr(&format!("CASE WHEN {c} THEN {e} END"))?,
    }))
}

/// The `fhirpath()` call a subquery over an outer row's list stands for, or None when it is
/// not one.
fn over_list(q: &Query, scopes: &Scopes, want: Want) -> Result<Option<Expr>, String> {
    let SetExpr::Select(select) = &*q.body else {
        return Ok(None);
    };
    let [from] = select.from.as_slice() else {
        // Several FROM items, one of them an UNNEST of the outer row: no form of ours.
        for twj in &select.from {
            if let TableFactor::UNNEST { array_exprs, .. } = &twj.relation {
                if let [list] = array_exprs.as_slice() {
                    if outer_list(list, scopes).is_some() {
                        return Err(format!(
                            "a subquery over UNNEST({list}) with more than one FROM item is not \
                             supported; {FORM}"
                        ));
                    }
                }
            }
        }
        return Ok(None);
    };
    let TableFactor::UNNEST {
        alias,
        array_exprs,
        with_offset,
        with_ordinality,
        ..
    } = &from.relation
    else {
        return Ok(None);
    };
    let [list] = array_exprs.as_slice() else {
        return Ok(None);
    };
    let Some(outer) = outer_list(list, scopes) else {
        return Ok(None);
    };
    let (table, path) = outer?;
    let refuse = |what: &str| {
        Err(format!(
            "{what} in a subquery over UNNEST({list}) is not supported; {FORM}"
        ))
    };
    if !from.joins.is_empty() {
        return refuse("a JOIN");
    }
    if *with_offset || *with_ordinality {
        return refuse("WITH OFFSET");
    }
    if q.with.is_some() || q.order_by.is_some() {
        return refuse("WITH or ORDER BY");
    }
    let first = match &q.limit_clause {
        None => false,
        Some(LimitClause::LimitOffset {
            limit: Some(l),
            offset: None,
            ..
        }) if l.to_string() == "1" => true,
        Some(_) => return refuse("a LIMIT other than 1"),
    };
    if !matches!(&select.group_by, GroupByExpr::Expressions(g, _) if g.is_empty())
        || select.having.is_some()
    {
        return refuse("GROUP BY");
    }
    let element = Element {
        alias: alias.as_ref().map(|a| a.name.value.clone()),
    };
    let mut fp = path.join(".");
    if let Some(cond) = &select.selection {
        fp = format!("{fp}.where({})", element.fhirpath(cond)?);
    }
    let [item] = select.projection.as_slice() else {
        return refuse("more than one selected value");
    };
    let selected = match item {
        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => Some(e),
        _ => None,
    };
    if want != Want::Exists {
        match selected {
            Some(Expr::Function(f)) if f.name.to_string().eq_ignore_ascii_case("count") => {
                let arg = f.args.to_string();
                if arg != "(*)" && arg != "(1)" {
                    let args = plain_args(f).unwrap_or_default();
                    let [e] = args.as_slice() else {
                        return refuse("this COUNT");
                    };
                    fp = format!("{fp}.select({})", element.fhirpath(e)?);
                }
                fp = format!("{fp}.count()");
            }
            Some(e) => {
                let s = element.fhirpath(e)?;
                if s != "$this" {
                    fp = format!("{fp}.select({s})");
                }
            }
            None => return refuse("SELECT *"),
        }
        if select.distinct.is_some() {
            fp = format!("{fp}.distinct()");
        }
        if first {
            fp = format!("{fp}.first()");
        }
    } else {
        fp = format!("{fp}.exists()");
    }
    let call = format!(
        "fhirpath('{}', '{}')",
        fp.replace('\'', "''"),
        table.replace('\'', "''")
    );
    Ok(Some(parse_expr(&match want {
        Want::Array => call,
        _ => format!("{call}[1]"),
    })?))
}

/// The 0-based position an index names: `[OFFSET(n)]`, `[SAFE_OFFSET(n)]`, `[ORDINAL(n)]`,
/// `[SAFE_ORDINAL(n)]`, or the shell's 1-based `[n]`; a literal number only.
fn offset(index: &Expr) -> Option<u64> {
    let number = |e: &Expr| e.to_string().parse::<u64>().ok();
    match index_position(index).ok()? {
        Some((true, i)) => number(i),
        Some((false, i)) => number(i)?.checked_sub(1),
        None => number(index)?.checked_sub(1),
    }
}

/// The outer resource table (its name in the query) a subquery's list belongs to, and the
/// list's path in it; None when the list is not the outer row's; an error when it is a list of an
/// UNNEST element of the outer query.
fn outer_list(list: &Expr, scopes: &Scopes) -> Option<Result<(String, Vec<String>), String>> {
    let parts: Vec<String> = match list {
        Expr::Identifier(i) => vec![i.value.clone()],
        Expr::CompoundIdentifier(p) => p.iter().map(|i| i.value.clone()).collect(),
        _ => return None,
    };
    match scopes.named(&parts[0]) {
        Some(b) if b.resource.is_some() => {
            Some(Ok((b.alias.clone().expect("named"), parts[1..].to_vec())))
        }
        Some(b) if b.ty.is_some() => Some(Err(format!(
            "a subquery over UNNEST({list}), a list of an UNNEST element of the outer query, \
             is not supported; {FORM}"
        ))),
        Some(_) => None,
        None => scopes
            .column_owner(&parts[0])
            .map(|b| Ok((b.alias.clone().expect("named"), parts))),
    }
}

/// The UNNEST element of a subquery, by the name it has there (if any).
struct Element {
    alias: Option<String>,
}

impl Element {
    /// A path of the element, relative to it.
    fn path(&self, parts: &[String]) -> Option<String> {
        match &self.alias {
            Some(a) if parts[0].eq_ignore_ascii_case(a) => Some(if parts.len() == 1 {
                "$this".to_string()
            } else {
                parts[1..].join(".")
            }),
            _ => None,
        }
    }

    /// The FHIRPath of a condition or selection over the element.
    fn fhirpath(&self, e: &Expr) -> Result<String, String> {
        let unsupported = || {
            Err(format!(
                "{e} in a subquery over an UNNEST of the outer row is not supported; {FORM}"
            ))
        };
        Ok(match e {
            Expr::Identifier(i) => match self.path(std::slice::from_ref(&i.value)) {
                Some(p) => p,
                None => return unsupported(),
            },
            Expr::CompoundIdentifier(parts) => {
                let parts: Vec<String> = parts.iter().map(|p| p.value.clone()).collect();
                match self.path(&parts) {
                    Some(p) => p,
                    None => {
                        return Err(format!(
                            "{e} refers to the outer row inside a subquery over an UNNEST of it, \
                             which is not supported; {FORM}"
                        ))
                    }
                }
            }
            Expr::CompoundFieldAccess { root, access_chain } => {
                let mut out = self.fhirpath(root)?;
                for a in access_chain {
                    match a {
                        AccessExpr::Dot(Expr::Identifier(i)) => {
                            out = if out == "$this" {
                                i.value.clone()
                            } else {
                                format!("{out}.{}", i.value)
                            }
                        }
                        AccessExpr::Subscript(Subscript::Index { index }) => {
                            out = format!(
                                "{out}[{}]",
                                offset(index).ok_or_else(|| {
                                    format!(
                                        "{index} as an index inside a subquery over an UNNEST of \
                                     the outer row is not supported; write [OFFSET(n)] with a \
                                     number"
                                    )
                                })?
                            )
                        }
                        _ => return unsupported(),
                    }
                }
                out
            }
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => {
                    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
                }
                Value::Number(n, _) => n.to_string(),
                Value::Boolean(b) => b.to_string(),
                Value::Null => "{}".to_string(),
                _ => return unsupported(),
            },
            Expr::Nested(x) => format!("({})", self.fhirpath(x)?),
            Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Eq => "=",
                    BinaryOperator::NotEq => "!=",
                    BinaryOperator::Lt => "<",
                    BinaryOperator::LtEq => "<=",
                    BinaryOperator::Gt => ">",
                    BinaryOperator::GtEq => ">=",
                    BinaryOperator::And => "and",
                    BinaryOperator::Or => "or",
                    _ => return unsupported(),
                };
                format!(
                    "({}) {op} ({})",
                    self.fhirpath(left)?,
                    self.fhirpath(right)?
                )
            }
            Expr::UnaryOp {
                op: UnaryOperator::Not,
                expr,
            } => format!("({}).not()", self.fhirpath(expr)?),
            Expr::IsNull(x) => format!("({}).empty()", self.fhirpath(x)?),
            Expr::IsNotNull(x) => format!("({}).exists()", self.fhirpath(x)?),
            Expr::InList {
                expr,
                list,
                negated,
            } => {
                let items: Result<Vec<String>, String> =
                    list.iter().map(|i| self.fhirpath(i)).collect();
                let test = format!("({}) in ({})", self.fhirpath(expr)?, items?.join(" | "));
                if *negated {
                    format!("({test}).not()")
                } else {
                    test
                }
            }
            Expr::Like {
                negated,
                expr,
                pattern,
                escape_char: None,
                any: false,
            } => {
                let Expr::Value(v) = &**pattern else {
                    return unsupported();
                };
                let Value::SingleQuotedString(p) = &v.value else {
                    return unsupported();
                };
                let mut re = String::from("^");
                for ch in p.chars() {
                    match ch {
                        '%' => re.push_str(".*"),
                        '_' => re.push('.'),
                        c if c.is_alphanumeric() || c == ' ' => re.push(c),
                        c => {
                            re.push('\\');
                            re.push(c)
                        }
                    }
                }
                re.push('$');
                let re = re.replace('\\', "\\\\").replace('\'', "\\'");
                let test = format!("({}).matches('{re}')", self.fhirpath(expr)?);
                if *negated {
                    format!("({test}).not()")
                } else {
                    test
                }
            }
            Expr::Function(f) => {
                let Some(args) = plain_args(f) else {
                    return unsupported();
                };
                let args: Vec<String> = args
                    .into_iter()
                    .map(|e| self.fhirpath(e))
                    .collect::<Result<_, _>>()?;
                match (
                    f.name.to_string().to_ascii_uppercase().as_str(),
                    args.as_slice(),
                ) {
                    ("UPPER", [x]) => format!("({x}).upper()"),
                    ("LOWER", [x]) => format!("({x}).lower()"),
                    ("LENGTH" | "CHAR_LENGTH", [x]) => format!("({x}).length()"),
                    ("STARTS_WITH", [x, p]) => format!("({x}).startsWith({p})"),
                    ("ENDS_WITH", [x, p]) => format!("({x}).endsWith({p})"),
                    _ => return unsupported(),
                }
            }
            _ => return unsupported(),
        })
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> Result<String, String> {
        let mut stmt = Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0);
        let tables = vec!["Observation".to_string(), "Patient".to_string()];
        super::super::names::rewrite(&mut stmt, &tables, crate::schema::FhirVersion::R4)?;
        Ok(stmt.to_string())
    }

    #[test]
    fn exists_over_the_rows_list_is_fhirpath_exists() {
        assert_eq!(
            rewritten(
                "SELECT o.id FROM Observation o WHERE EXISTS (SELECT 1 FROM UNNEST(o.code.coding) c \
                 WHERE c.system = 'http://loinc.org' AND c.code IN ('1', '2'))"
            )
            .unwrap(),
            "SELECT o.id AS id FROM Observation o WHERE fhirpath('code.coding.where(((system) = \
             (''http://loinc.org'')) and ((code) in (''1'' | ''2''))).exists()', 'o')[1]"
        );
        assert!(rewritten(
            "SELECT 1 FROM Observation o WHERE NOT EXISTS (SELECT 1 FROM UNNEST(o.category) c)"
        )
        .unwrap()
        .contains("NOT (fhirpath('category.exists()', 'o')[1])"));
    }

    #[test]
    fn scalar_array_and_count_subqueries() {
        let sql = rewritten(
            "SELECT (SELECT value.string FROM UNNEST(extension) WHERE url = 'u') AS m, \
             ARRAY(SELECT n.family FROM UNNEST(p.name) n WHERE n.family LIKE 'A%') AS f, \
             (SELECT COUNT(*) FROM UNNEST(p.address)) AS a FROM Patient p",
        )
        .unwrap();
        assert!(
            sql.contains(
                "fhirpath('extension.where((url) = (''u'')).select(valueString)', 'p')[1] AS m"
            ),
            "{sql}"
        );
        assert!(
            sql.contains(
                "fhirpath('name.where((family).matches(''^A.*$'')).select(family)', 'p') AS f"
            ),
            "{sql}"
        );
        assert!(
            sql.contains("fhirpath('address.count()', 'p')[1] AS a"),
            "{sql}"
        );
        let sql = rewritten(
            "SELECT (SELECT c.valueQuantity.value FROM UNNEST(o.component) c \
             WHERE c.code.coding[SAFE_OFFSET(0)].code = '8480-6') FROM Observation o",
        )
        .unwrap();
        assert!(
            sql.contains("component.where((code.coding[0].code) = (''8480-6''))"),
            "{sql}"
        );
    }

    #[test]
    fn a_subquery_without_from_is_its_value() {
        assert_eq!(
            rewritten("SELECT (SELECT birthDate) AS b, (SELECT id WHERE active) AS i FROM Patient")
                .unwrap(),
            "SELECT (Patient.birthDate) AS b, CASE WHEN Patient.active THEN Patient.id END AS i \
             FROM Patient"
        );
    }

    #[test]
    fn in_unnest_is_array_has() {
        assert_eq!(
            rewritten("SELECT 1 FROM Patient p WHERE 'Mr.' NOT IN UNNEST(p.name[1].prefix)")
                .unwrap(),
            "SELECT 1 FROM Patient p WHERE CASE WHEN ('Mr.') IS NULL THEN NULL ELSE NOT \
             coalesce(array_has(p.name[1].prefix, 'Mr.'), false) END"
        );
    }

    #[test]
    fn forms_without_a_counterpart_name_the_ones_that_work() {
        for sql in [
            "SELECT ARRAY(SELECT g FROM UNNEST(p.name) n, UNNEST(n.given) g) FROM Patient p",
            "SELECT 1 FROM Patient p, UNNEST(p.name) n WHERE EXISTS (SELECT 1 FROM UNNEST(n.given) g)",
            "SELECT (SELECT c.code FROM UNNEST(o.code.coding) c WHERE c.code = o.id) FROM Observation o",
            "SELECT (SELECT c.code FROM UNNEST(o.code.coding) c ORDER BY c.code) FROM Observation o",
            "SELECT (SELECT c.code FROM UNNEST(o.code.coding) c WHERE c.code || 'x' = 'y') FROM Observation o",
        ] {
            let e = rewritten(sql).unwrap_err();
            assert!(e.contains("UNNEST(o.list) AS c"), "{sql}: {e}");
        }
    }
}
