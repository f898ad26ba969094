//! `fhirpath(expression [, table])` in SQL: a FHIRPath expression of the views' subset evaluated on
//! the rows of a resource table, typed columns and `_overflow` alike, compiled by the views'
//! compiler.
//!
//! DataFusion gives a scalar function its arguments, not the row, so each call is rewritten in
//! the parsed statement, before planning, into a call of the compiled expression with the
//! columns it reads: `fhirpath('name.family')` over `Patient AS p` becomes
//! `fhirpath_7("p"."name")`; a path past the typed columns reads every column (the resource's
//! JSON is put together from them). The table is the one resource table of the statement, or
//! the one the second argument names (a table name or an alias).

use std::ops::ControlFlow;

use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{CopyToSource, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{
    Expr, FunctionArg, FunctionArgExpr, FunctionArguments, TableFactor, Value, VisitMut, VisitorMut,
};

use super::idioms::parse_expr;
use crate::schema::FhirVersion;

/// Rewrites every `fhirpath(...)` call of a statement, registering the compiled functions.
pub fn rewrite_statement(
    stmt: &mut DfStatement,
    ctx: &SessionContext,
    tables: &[String],
    version: FhirVersion,
) -> Result<(), String> {
    match stmt {
        DfStatement::Statement(s) => rewrite(&mut **s, ctx, tables, version),
        DfStatement::Explain(e) => rewrite_statement(&mut e.statement, ctx, tables, version),
        DfStatement::CopyTo(c) => match &mut c.source {
            CopyToSource::Query(q) => rewrite(&mut **q, ctx, tables, version),
            CopyToSource::Relation(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

fn rewrite<T: VisitMut>(
    node: &mut T,
    ctx: &SessionContext,
    tables: &[String],
    version: FhirVersion,
) -> Result<(), String> {
    let mut v = Calls {
        ctx,
        tables,
        version,
        relations: Vec::new(),
    };
    // The resource tables first (FROM clauses are visited after the select list).
    let _ = node.visit(&mut Relations(&mut v));
    match node.visit(&mut v) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct Calls<'a> {
    ctx: &'a SessionContext,
    tables: &'a [String],
    version: FhirVersion,
    /// The resource tables of the statement: (resource type, the name columns are qualified by).
    relations: Vec<(String, String)>,
}

struct Relations<'a, 'b>(&'a mut Calls<'b>);

impl VisitorMut for Relations<'_, '_> {
    type Break = ();

    fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table { name, alias, .. } = t {
            let table = name.to_string().trim_matches('"').to_string();
            if self.0.tables.contains(&table)
                && crate::schema::node::resource_members(self.0.version, &table).is_some()
            {
                let q = alias
                    .as_ref()
                    .map_or(table.clone(), |a| a.name.value.clone());
                self.0.relations.push((table, q));
            }
        }
        ControlFlow::Continue(())
    }
}

impl VisitorMut for Calls<'_> {
    type Break = String;

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<String> {
        let Expr::Function(f) = expr else {
            return ControlFlow::Continue(());
        };
        if !f.name.to_string().eq_ignore_ascii_case("fhirpath") {
            return ControlFlow::Continue(());
        }
        match self.call(&f.args) {
            Ok(e) => {
                *expr = e;
                ControlFlow::Continue(())
            }
            Err(e) => ControlFlow::Break(e),
        }
    }
}

impl Calls<'_> {
    fn call(&self, args: &FunctionArguments) -> Result<Expr, String> {
        const USAGE: &str = "fhirpath('expression') or fhirpath('expression', 'table or alias')";
        let FunctionArguments::List(list) = args else {
            return Err(format!("use {USAGE}"));
        };
        let text: Vec<String> = list
            .args
            .iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v))) => match &v.value {
                    Value::SingleQuotedString(s) => Ok(s.clone()),
                    _ => Err(format!(
                        "fhirpath(): the arguments are text literals: {USAGE}"
                    )),
                },
                _ => Err(format!(
                    "fhirpath(): the arguments are text literals: {USAGE}"
                )),
            })
            .collect::<Result<_, _>>()?;
        let (path, table) = match text.as_slice() {
            [p] => (p, None),
            [p, t] => (p, Some(t)),
            _ => return Err(format!("use {USAGE}")),
        };
        let mut candidates: Vec<&(String, String)> = self
            .relations
            .iter()
            .filter(|(t, q)| table.is_none_or(|want| want == t || want == q))
            .collect();
        // A table named twice under one name (subqueries) is one candidate.
        candidates.sort();
        candidates.dedup();
        let (resource_type, qualifier) = match candidates.as_slice() {
            [one] => one,
            [] => {
                return Err(match table {
                    Some(t) => {
                        format!("fhirpath(): no resource table or alias {t} in the statement")
                    }
                    None => "fhirpath(): the statement reads no resource table (FROM Patient, ...)"
                        .into(),
                })
            }
            _ => {
                return Err(format!(
                    "fhirpath('{path}'): the statement reads several resource tables: name one, \
                     fhirpath('{path}', 'alias')"
                ))
            }
        };
        let (udf, columns) = crate::view::plan::path_function(self.version, resource_type, path)
            .map_err(|e| format!("{e:#}"))?;
        let name = udf.name().to_string();
        self.ctx.register_udf(udf);
        let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let args: Vec<String> = columns
            .iter()
            .map(|c| format!("{}.{}", quote(qualifier), quote(c)))
            .collect();
        parse_expr(&format!("{name}({})", args.join(", ")))
    }
}
