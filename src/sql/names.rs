//! Names as BigQuery and its FHIR schemas spell them, resolved against the typed schema before
//! DataFusion plans a statement.
//!
//! Published FHIR-on-BigQuery queries were written for the Cloud Healthcare API's schema (and the
//! SQL on FHIR v1 draft), which spells some things differently from ours, and for BigQuery, which
//! matches names without regard to case. Each name of a statement is looked up in the tables and
//! `UNNEST` elements in scope (correlated subqueries see the outer query's), and respelled:
//!
//! | written | resolves to |
//! |---|---|
//! | `FROM \`project.dataset.medication_request\``, `FROM observation` | the resource table (`MedicationRequest`, `Observation`); the name as written stays the table's alias |
//! | `o.effectivedatetime`, `o.Subject.Reference` | `o.effectiveDateTime`, `o.subject.reference`: names in any case |
//! | `value.quantity.value`, `deceased.boolean`, `o.effective.dateTime` | `valueQuantity.value`, `deceasedBoolean`, `o.effectiveDateTime`: a choice element nested by type |
//! | `subject.patientId`, `serviceProvider.organizationId` (any `<type>Id` of a Reference) | the id the Reference points to when it points to that type, else NULL |
//! | `FROM Observation o, o.code.coding c` | `UNNEST(o.code.coding) AS c` (an implicit UNNEST) |
//! | `FROM Patient p, UNNEST(p.extension)` with `url` | the element's fields by name, as an UNNEST without alias allows |
//! | `"http://loinc.org"` | a string: a double-quoted text that names no table, column or alias |
//! | `SELECT o.value.quantity.value` | a column named `value`, after the path's last field (`value_1` for a second) |
//!
//! A name that resolves to nothing is left as written, for DataFusion's error and its hint.

use std::collections::HashSet;
use std::ops::ControlFlow;

use arrow::datatypes::DataType;
use datafusion::sql::sqlparser::ast::{
    AccessExpr, Expr, GroupByExpr, Ident, ObjectName, ObjectNamePart, OrderBy, OrderByKind, Query,
    Select, SelectItem, SetExpr, Subscript, TableAlias, TableFactor, Value, Visit, VisitMut,
    Visitor, VisitorMut,
};

use datafusion::sql::parser::{CopyToSource, Statement as DfStatement};

use super::idioms::parse_expr;
use super::scope::{Binding, Scopes};
use crate::schema::node::arrow_schema;
use crate::schema::FhirVersion;

/// Resolves the names of a parsed statement in place (queries, `EXPLAIN` and `COPY (query) TO`).
pub fn rewrite_statement(
    stmt: &mut DfStatement,
    tables: &[String],
    version: FhirVersion,
) -> Result<(), String> {
    match stmt {
        DfStatement::Statement(s) => rewrite(&mut **s, tables, version),
        DfStatement::Explain(e) => rewrite_statement(&mut e.statement, tables, version),
        DfStatement::CopyTo(c) => match &mut c.source {
            CopyToSource::Query(q) => rewrite(&mut **q, tables, version),
            CopyToSource::Relation(_) => Ok(()),
        },
        _ => Ok(()),
    }
}

/// Resolves the names of a statement in place (see the module docs).
pub fn rewrite<T: VisitMut + Visit>(
    node: &mut T,
    tables: &[String],
    version: FhirVersion,
) -> Result<(), String> {
    let mut known = Known::default();
    let _ = Visit::visit(&*node, &mut known);
    // A table of unknown columns (a registered view) may have a column by any name: there a
    // double-quoted text stays an identifier.
    let strings = known
        .read
        .iter()
        .all(|t| known.ctes.contains(t) || tables.iter().any(|r| table_key(r) == table_key(t)));
    let mut names = Names {
        tables,
        version,
        ctes: known.ctes,
        known: known.names,
        strings,
        scopes: Vec::new(),
        frames: Vec::new(),
        anonymous: 0,
        keep: HashSet::new(),
    };
    match VisitMut::visit(node, &mut names) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(e) => Err(e),
    }
}

struct Names<'a> {
    tables: &'a [String],
    /// The dataset's FHIR version: the tables' schemas.
    version: FhirVersion,
    /// Names of the statement's common table expressions (lower case).
    ctes: HashSet<String>,
    /// Every name the statement gives (see [`Known`]).
    known: HashSet<String>,
    /// Whether a double-quoted text that names nothing is a string: every table read is a
    /// resource table or a common table expression.
    strings: bool,
    /// One scope per SELECT, innermost last.
    scopes: Vec<Vec<Binding>>,
    /// The number of scopes when each query began.
    frames: Vec<usize>,
    anonymous: usize,
    /// Expressions that are not names to resolve: the field names of `x[1].field` and the
    /// select-list aliases ORDER BY, GROUP BY and HAVING refer to. Compared by address only.
    keep: HashSet<*const Expr>,
}

/// Collects the bare names of an expression that name a select-list column.
struct AliasRefs<'a>(&'a HashSet<String>, &'a mut HashSet<*const Expr>);

impl Visitor for AliasRefs<'_> {
    type Break = ();

    fn pre_visit_expr(&mut self, e: &Expr) -> ControlFlow<()> {
        if let Expr::Identifier(i) = e {
            if self.0.contains(&i.value.to_ascii_lowercase()) {
                self.1.insert(e as *const Expr);
            }
        }
        ControlFlow::Continue(())
    }
}

/// The names of a statement's common table expressions, and every name it gives (aliases,
/// those tables and their columns), lower case.
#[derive(Default)]
struct Known {
    ctes: HashSet<String>,
    names: HashSet<String>,
    /// The last part of every table name read (lower case).
    read: HashSet<String>,
}

impl Visitor for Known {
    type Break = ();

    fn pre_visit_query(&mut self, q: &Query) -> ControlFlow<()> {
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                let name = cte.alias.name.value.to_ascii_lowercase();
                self.ctes.insert(name.clone());
                self.names.insert(name);
                for c in &cte.alias.columns {
                    self.names.insert(c.name.value.to_ascii_lowercase());
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, s: &Select) -> ControlFlow<()> {
        for item in &s.projection {
            if let SelectItem::ExprWithAlias { alias, .. } = item {
                self.names.insert(alias.value.to_ascii_lowercase());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &TableFactor) -> ControlFlow<()> {
        if let Some(a) = table_alias(t) {
            self.names.insert(a.name.value.to_ascii_lowercase());
        }
        if let TableFactor::Table { name, .. } = t {
            if let Some(last) = name.0.last().and_then(|p| p.as_ident()) {
                let last = last.value.rsplit('.').next().unwrap_or(&last.value);
                self.read.insert(last.to_ascii_lowercase());
            }
        }
        ControlFlow::Continue(())
    }
}

fn table_alias(t: &TableFactor) -> Option<&TableAlias> {
    match t {
        TableFactor::Table { alias, .. }
        | TableFactor::Derived { alias, .. }
        | TableFactor::UNNEST { alias, .. } => alias.as_ref(),
        _ => None,
    }
}

/// A table name as matched: case and underscores aside (`medication_request`, `MedicationRequest`).
fn table_key(name: &str) -> String {
    name.replace('_', "").to_ascii_lowercase()
}

/// `Patient` for `patientId` (or `patientID`), `MedicationRequest` for `medicationRequestId`.
fn id_target(name: &str) -> Option<String> {
    let split = name.len().checked_sub(2)?;
    let (stem, id) = (name.get(..split)?, name.get(split..)?);
    if !id.eq_ignore_ascii_case("id") {
        return None;
    }
    let mut chars = stem.chars();
    let first = chars.next()?;
    Some(first.to_ascii_uppercase().to_string() + chars.as_str())
}

/// The field of a struct named `name`, exactly or without regard to case.
fn field<'f>(
    fields: &'f arrow::datatypes::Fields,
    name: &str,
) -> Option<&'f arrow::datatypes::FieldRef> {
    fields.iter().find(|f| f.name() == name).or_else(|| {
        let mut found = fields
            .iter()
            .filter(|f| f.name().eq_ignore_ascii_case(name));
        let one = found.next()?;
        found.next().is_none().then_some(one)
    })
}

/// One resolved step of a path.
enum Step {
    Field(String),
    /// `<type>Id` of a Reference: the referenced id when it points to that type.
    ReferenceId(String),
}

/// The first step of `names` from a value of type `ty`: a field (in any case), a choice element
/// nested by type (`value.quantity` -> `valueQuantity`, two names), or, for a last name,
/// `<type>Id` of a Reference; with its type and the names it took.
fn step(ty: &DataType, names: &[&str]) -> Option<(Step, DataType, usize)> {
    let DataType::Struct(fields) = ty else {
        return None;
    };
    let name = *names.first()?;
    if let Some(f) = field(fields, name) {
        return Some((Step::Field(f.name().clone()), f.data_type().clone(), 1));
    }
    if let Some(next) = names.get(1) {
        if let Some(f) = field(fields, &format!("{name}{next}")) {
            return Some((Step::Field(f.name().clone()), f.data_type().clone(), 2));
        }
    }
    let is_reference = field(fields, "reference").is_some() && field(fields, "type").is_some();
    if is_reference && names.len() == 1 {
        return id_target(name).map(|t| (Step::ReferenceId(t), DataType::Utf8, 1));
    }
    None
}

/// Walks `names` from a value of type `ty`: the steps and their type, or None where it gets
/// nowhere.
fn walk(ty: &DataType, names: &[&str]) -> Option<(Vec<Step>, DataType)> {
    let mut steps = Vec::new();
    let mut ty = ty.clone();
    let mut rest = names;
    while !rest.is_empty() {
        let (s, t, used) = step(&ty, rest)?;
        steps.push(s);
        ty = t;
        rest = &rest[used..];
    }
    Some((steps, ty))
}

fn ident(s: &str) -> Ident {
    Ident::new(s)
}

/// The expression for `root` (idents) followed by the steps.
fn path_expr(root: Vec<Ident>, steps: &[Step]) -> Result<Expr, String> {
    let mut parts = root;
    for s in steps {
        match s {
            Step::Field(f) => parts.push(ident(f)),
            Step::ReferenceId(target) => {
                let reference = compound(parts);
                return parse_expr(&format!(
                    "CASE WHEN reference_type({reference}) = '{target}' THEN \
                     reference_id({reference}) END"
                ));
            }
        }
    }
    Ok(compound(parts))
}

fn compound(mut parts: Vec<Ident>) -> Expr {
    if parts.len() == 1 {
        Expr::Identifier(parts.remove(0))
    } else {
        Expr::CompoundIdentifier(parts)
    }
}

impl Names<'_> {
    /// Leaves a bare name that is one of the select list's column names as it is (ORDER BY,
    /// GROUP BY and HAVING refer to those first), also inside an expression.
    fn keep_alias(&mut self, e: &Expr, aliases: &HashSet<String>) {
        let _ = Visit::visit(e, &mut AliasRefs(aliases, &mut self.keep));
    }

    /// The canonical resource table a FROM name stands for: `Observation` for `observation`,
    /// `medication_request` or `` `project.dataset.Observation` ``.
    fn table(&self, name: &ObjectName) -> Option<String> {
        let last = name.0.last()?.as_ident()?.value.clone();
        let last = last.rsplit('.').next().unwrap_or(&last).to_string();
        if name.0.len() == 1 && self.ctes.contains(&last.to_ascii_lowercase()) {
            return None;
        }
        self.tables
            .iter()
            .find(|t| table_key(t) == table_key(&last))
            .cloned()
    }

    fn binding_named(&self, name: &str) -> Option<&Binding> {
        Scopes(&self.scopes).named(name)
    }

    /// Resolves a written path (`o.value.quantity.value`, `effectivedatetime`): the expression
    /// to plan and its type, or None when it resolves to nothing known.
    fn resolve(&self, parts: &[Ident]) -> Result<Option<(Expr, DataType)>, String> {
        let names: Vec<&str> = parts.iter().map(|p| p.value.as_str()).collect();
        // Qualified by a binding's name.
        if let Some(b) = self.binding_named(names[0]) {
            let Some(ty) = &b.ty else {
                return Ok(None);
            };
            let alias = b.alias.clone().expect("named");
            return match walk(ty, &names[1..]) {
                Some((steps, t)) => Ok(Some((path_expr(vec![ident(&alias)], &steps)?, t))),
                None => Ok(None),
            };
        }
        // A column (or an UNNEST element's field) of the innermost scope that has it.
        for scope in self.scopes.iter().rev() {
            let mut found = scope.iter().filter_map(|b| {
                let ty = b.ty.as_ref()?;
                walk(ty, &names).map(|r| (b, r))
            });
            let Some((b, (steps, t))) = found.next() else {
                continue;
            };
            if found.next().is_some() {
                return Ok(None);
            }
            // Qualified, so that the name means the same wherever it is read again (an UNNEST
            // without a name was given one).
            let root = b.alias.iter().map(|a| ident(a)).collect();
            return Ok(Some((path_expr(root, &steps)?, t)));
        }
        Ok(None)
    }

    /// The type of an expression that is a path of known bindings.
    pub(crate) fn type_of(&self, e: &Expr) -> Option<DataType> {
        match e {
            Expr::Identifier(i) => self
                .resolve(std::slice::from_ref(i))
                .ok()
                .flatten()
                .map(|r| r.1),
            Expr::CompoundIdentifier(parts) => self.resolve(parts).ok().flatten().map(|r| r.1),
            _ => None,
        }
    }

    /// Binds the FROM clause of a SELECT, rewriting table names and implicit UNNESTs.
    fn bind_from(&mut self, select: &mut Select) -> Result<(), String> {
        self.scopes.push(Vec::new());
        for twj in select.from.iter_mut() {
            self.bind(&mut twj.relation)?;
            for join in twj.joins.iter_mut() {
                self.bind(&mut join.relation)?;
            }
        }
        Ok(())
    }

    fn bind(&mut self, t: &mut TableFactor) -> Result<(), String> {
        // `o.code.coding c` after `Observation o`: an implicit UNNEST.
        if let TableFactor::Table {
            name,
            alias,
            args: None,
            ..
        } = t
        {
            let implicit = name.0.len() >= 2
                && name.0[0].as_ident().is_some_and(|first| {
                    self.scopes.last().is_some_and(|s| {
                        s.iter().any(|b| {
                            b.alias
                                .as_deref()
                                .is_some_and(|a| a.eq_ignore_ascii_case(&first.value))
                        })
                    })
                });
            if implicit {
                let parts: Vec<Ident> = name
                    .0
                    .iter()
                    .filter_map(|p| p.as_ident().cloned())
                    .collect();
                *t = TableFactor::UNNEST {
                    alias: alias.take(),
                    array_exprs: vec![compound(parts)],
                    with_offset: false,
                    with_offset_alias: None,
                    with_ordinality: false,
                };
            }
        }
        let binding = match t {
            TableFactor::Table { name, alias, .. } => match self.table(name) {
                Some(table) => {
                    let written = name
                        .0
                        .last()
                        .and_then(|p| p.as_ident())
                        .map(|i| i.value.rsplit('.').next().unwrap_or(&i.value).to_string());
                    if alias.is_none() && written.as_deref() != Some(table.as_str()) {
                        *alias = Some(TableAlias {
                            explicit: true,
                            name: ident(written.as_deref().unwrap_or(&table)),
                            columns: Vec::new(),
                            at: None,
                        });
                    }
                    *name = ObjectName(vec![ObjectNamePart::Identifier(ident(&table))]);
                    let ty = arrow_schema(self.version, &table)
                        .map(|s| DataType::Struct(s.fields().clone()));
                    Binding {
                        alias: Some(
                            alias
                                .as_ref()
                                .map_or(table.clone(), |a| a.name.value.clone()),
                        ),
                        ty,
                        resource: Some(table),
                    }
                }
                None => Binding {
                    alias: Some(
                        alias
                            .as_ref()
                            .map(|a| a.name.value.clone())
                            .unwrap_or_else(|| name.to_string()),
                    ),
                    ty: None,
                    resource: None,
                },
            },
            TableFactor::UNNEST {
                alias, array_exprs, ..
            } => {
                let mut ty = None;
                if let [list] = array_exprs.as_mut_slice() {
                    self.rewrite_expr(list)?;
                    if let Some(DataType::List(item)) = self.type_of(list) {
                        ty = Some(item.data_type().clone());
                    }
                }
                if alias.is_none() && matches!(ty, Some(DataType::Struct(_))) {
                    self.anonymous += 1;
                    *alias = Some(TableAlias {
                        explicit: true,
                        name: ident(&format!("_unnest{}", self.anonymous)),
                        columns: Vec::new(),
                        at: None,
                    });
                }
                Binding {
                    alias: alias.as_ref().map(|a| a.name.value.clone()),
                    ty,
                    resource: None,
                }
            }
            other => Binding {
                alias: table_alias(other).map(|a| a.name.value.clone()),
                ty: None,
                resource: None,
            },
        };
        self.scopes.last_mut().expect("pushed").push(binding);
        Ok(())
    }

    /// Respells one expression node (its children are done already).
    fn rewrite_expr(&self, expr: &mut Expr) -> Result<(), String> {
        match expr {
            Expr::Identifier(i) => {
                if let Some((e, _)) = self.resolve(std::slice::from_ref(i))? {
                    *expr = e;
                } else if i.quote_style == Some('"')
                    && self.strings
                    && self.binding_named(&i.value).is_none()
                    && !self.known.contains(&i.value.to_ascii_lowercase())
                {
                    // BigQuery's string literal.
                    *expr = Expr::value(Value::SingleQuotedString(i.value.clone()));
                }
            }
            Expr::CompoundIdentifier(parts) => {
                if let Some((e, _)) = self.resolve(parts)? {
                    *expr = e;
                }
            }
            Expr::CompoundFieldAccess { root, access_chain } => {
                // The names before the first index are one path: `a.b.c[1].d` is parsed as `a`
                // with `.b`, `.c`, `[1]`, `.d`.
                let mut parts = match &**root {
                    Expr::Identifier(i) => vec![i.clone()],
                    Expr::CompoundIdentifier(p) => p.clone(),
                    _ => return Ok(()),
                };
                let leading = access_chain
                    .iter()
                    .take_while(|a| matches!(a, AccessExpr::Dot(Expr::Identifier(_))))
                    .count();
                for a in &access_chain[..leading] {
                    if let AccessExpr::Dot(Expr::Identifier(i)) = a {
                        parts.push(i.clone());
                    }
                }
                let Some((path, mut ty)) = self.resolve(&parts)? else {
                    return Ok(());
                };
                if !matches!(path, Expr::Identifier(_) | Expr::CompoundIdentifier(_)) {
                    return Ok(());
                }
                **root = path;
                access_chain.drain(..leading);
                let mut i = 0;
                while i < access_chain.len() {
                    match (&access_chain[i], &ty) {
                        (AccessExpr::Subscript(Subscript::Index { .. }), DataType::List(item)) => {
                            ty = item.data_type().clone();
                            i += 1;
                        }
                        (AccessExpr::Dot(Expr::Identifier(name)), DataType::Struct(_)) => {
                            let mut names = vec![name.value.clone()];
                            if let Some(AccessExpr::Dot(Expr::Identifier(next))) =
                                access_chain.get(i + 1)
                            {
                                names.push(next.value.clone());
                            }
                            let refs: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
                            // A field, or a choice of two names; a Reference's id ends a
                            // path only as a plain name, not after an index.
                            let Some((Step::Field(f), t, used)) = step(&ty, &refs) else {
                                return Ok(());
                            };
                            access_chain[i] = AccessExpr::Dot(Expr::Identifier(ident(&f)));
                            if used == 2 {
                                access_chain.remove(i + 1);
                            }
                            ty = t;
                            i += 1;
                        }
                        _ => return Ok(()),
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// The names a select list gives its columns (lower case).
fn aliases(select: &Select) -> HashSet<String> {
    select
        .projection
        .iter()
        .filter_map(|i| match i {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

/// The column name BigQuery gives an unnamed path in a select list: its last field as written.
fn implicit_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i) => Some(i.value.clone()),
        Expr::CompoundIdentifier(parts) => parts.last().map(|p| p.value.clone()),
        Expr::CompoundFieldAccess { access_chain, .. } => match access_chain.last() {
            Some(AccessExpr::Dot(Expr::Identifier(i))) => Some(i.value.clone()),
            _ => None,
        },
        _ => None,
    }
}

/// Names each unnamed path of a select list after its last field (`value`, then `value_1`).
fn name_columns(select: &mut Select) {
    let mut taken = aliases(select);
    for item in select.projection.iter_mut() {
        let SelectItem::UnnamedExpr(e) = item else {
            continue;
        };
        let Some(base) = implicit_name(e) else {
            continue;
        };
        let mut name = base.clone();
        let mut n = 0;
        while !taken.insert(name.to_ascii_lowercase()) {
            n += 1;
            name = format!("{base}_{n}");
        }
        *item = SelectItem::ExprWithAlias {
            expr: e.clone(),
            alias: ident(&name),
        };
    }
}

impl VisitorMut for Names<'_> {
    type Break = String;

    fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<String> {
        self.frames.push(self.scopes.len());
        if let SetExpr::Select(select) = &mut *q.body {
            name_columns(select);
            let aliases = aliases(select);
            if let Some(OrderBy {
                kind: OrderByKind::Expressions(items),
                ..
            }) = &q.order_by
            {
                for item in items {
                    self.keep_alias(&item.expr, &aliases);
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<String> {
        if let Expr::CompoundFieldAccess { access_chain, .. } = expr {
            for a in access_chain.iter() {
                if let AccessExpr::Dot(e) = a {
                    self.keep.insert(e as *const Expr);
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _q: &mut Query) -> ControlFlow<String> {
        let n = self.frames.pop().unwrap_or(0);
        self.scopes.truncate(n);
        if self.frames.is_empty() {
            self.keep.clear();
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_select(&mut self, select: &mut Select) -> ControlFlow<String> {
        name_columns(select);
        let aliases = aliases(select);
        if let GroupByExpr::Expressions(exprs, _) = &select.group_by {
            for e in exprs {
                self.keep_alias(e, &aliases);
            }
        }
        if let Some(h) = &select.having {
            self.keep_alias(h, &aliases);
        }
        match self.bind_from(select) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<String> {
        if self.keep.remove(&(expr as *const Expr)) {
            return ControlFlow::Continue(());
        }
        let done = self
            .rewrite_expr(expr)
            .and_then(|()| super::correlated::rewrite(expr, &Scopes(&self.scopes)));
        match done {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => ControlFlow::Break(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn rewritten(sql: &str) -> String {
        let mut stmt = Parser::parse_sql(&GenericDialect {}, sql)
            .unwrap()
            .remove(0);
        let tables: Vec<String> = [
            "Observation",
            "Patient",
            "Condition",
            "MedicationRequest",
            "Encounter",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        super::rewrite(&mut stmt, &tables, crate::schema::FhirVersion::R4).unwrap();
        stmt.to_string()
    }

    #[test]
    fn healthcare_api_spellings_resolve_to_the_typed_columns() {
        assert_eq!(
            rewritten("SELECT o.value.quantity.value FROM `p.d.observation` o"),
            "SELECT o.valueQuantity.value AS value FROM Observation o"
        );
        assert_eq!(
            rewritten("SELECT subject.patientId FROM observation WHERE effectivedatetime > '2017'"),
            "SELECT CASE WHEN reference_type(observation.subject) = 'Patient' THEN \
             reference_id(observation.subject) END AS patientId FROM Observation AS observation \
             WHERE observation.effectiveDateTime > '2017'"
        );
        assert_eq!(
            rewritten("SELECT p.deceased.boolean AS d FROM patient p"),
            "SELECT p.deceasedBoolean AS d FROM Patient p"
        );
    }

    #[test]
    fn implicit_unnest_and_unnamed_unnest() {
        assert_eq!(
            rewritten("SELECT c.code FROM Observation o, o.code.coding c"),
            "SELECT c.code AS code FROM Observation o, UNNEST(o.code.coding) c"
        );
        assert_eq!(
            rewritten("SELECT url FROM Patient p, UNNEST(p.extension)"),
            "SELECT _unnest1.url AS url FROM Patient p, UNNEST(p.extension) AS _unnest1"
        );
    }

    #[test]
    fn double_quoted_text_is_a_string_unless_it_names_something() {
        assert_eq!(
            rewritten("SELECT \"gender\" FROM Patient WHERE gender = \"male\""),
            "SELECT Patient.gender AS gender FROM Patient WHERE Patient.gender = 'male'"
        );
    }

    #[test]
    fn double_quotes_stay_identifiers_beside_a_table_of_unknown_columns() {
        assert_eq!(
            rewritten("SELECT \"patient_id\" FROM patient_view WHERE \"x\" = 'male'"),
            "SELECT \"patient_id\" AS patient_id FROM patient_view WHERE \"x\" = 'male'"
        );
    }

    #[test]
    fn paths_after_an_index_resolve_too() {
        assert_eq!(
            rewritten(
                "SELECT medication.codeableConcept.coding[SAFE_OFFSET(0)].Code FROM medication_request"
            ),
            "SELECT medication_request.medicationCodeableConcept.coding[SAFE_OFFSET(0)].code AS Code \
             FROM MedicationRequest AS medication_request"
        );
    }
}
