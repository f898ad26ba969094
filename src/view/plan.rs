//! A ViewDefinition compiled to a DataFusion plan.
//!
//! Selects multiply and `unionAll` adds, so a view is first spread into *branches*: one per
//! combination of `unionAll` choices, each a straight line of steps (unnest the items of a
//! `forEach`, compute a column). Every branch is a plan over the resource table: a filter for
//! `where`, a projection per column and an `unnest` per `forEach`; the view is the `UNION ALL`
//! of its branches, with the columns in the view's order.

use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};

use anyhow::{anyhow, bail, Result};
use arrow::datatypes::DataType;
use datafusion::common::UnnestOptions;
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{cast, col, Expr};

use super::definition::{Expr as PathExpr, Select, ViewDefinition};
use super::fhirpath::compile::{Scope, Ty};
use super::fhirpath::eval::Node;
use super::udf::{Output, ViewFunction};
use crate::schema::node::resource_members;

/// The items an expression is relative to: the resource, or the `forEach` item in a column.
#[derive(Clone)]
struct Context {
    column: Option<String>,
    ty: Ty,
}

#[derive(Clone)]
enum Step {
    Column { internal: String, expr: Expr },
    Unnest { internal: String, expr: Expr },
}

#[derive(Clone, Default)]
struct Branch {
    steps: Vec<Step>,
    /// (view column name, internal column, type, whether the path is always empty: `{}`).
    columns: Vec<(String, String, DataType, bool)>,
}

struct Compiler<'v> {
    view: &'v ViewDefinition,
    root: Ty,
    next: Cell<usize>,
}

/// Plans `view` over `table`, the resource type's table.
pub fn plan(view: &ViewDefinition, table: DataFrame) -> Result<DataFrame> {
    let members = resource_members(&view.resource)
        .ok_or_else(|| anyhow!("resource: {} is not an R4 resource type", view.resource))?;
    let c = Compiler {
        view,
        root: Ty::Object {
            fhir: view.resource.clone(),
            members,
            root: true,
        },
        next: Cell::new(0),
    };
    let root = Context {
        column: None,
        ty: c.root.clone(),
    };
    let mut df = table;
    for f in &view.filters {
        let (node, ty, fields) = c.compile(f, &root.ty)?;
        if !matches!(
            ty,
            Ty::Prim {
                dt: DataType::Boolean,
                ..
            } | Ty::Nothing
        ) {
            bail!(
                "{}: evaluates to {}, where needs a boolean",
                f.at,
                ty.describe()
            );
        }
        df = df.filter(ViewFunction::call(
            &f.at,
            node,
            Output::Filter,
            None,
            fields,
        ))?;
    }
    let mut branches = vec![Branch::default()];
    for s in &view.select {
        branches = product(branches, c.select(s, &root)?);
    }
    let names: Vec<String> = branches[0].columns.iter().map(|c| c.0.clone()).collect();
    // One type per column across branches: an always-empty column takes the type of the others.
    let mut types: Vec<Option<DataType>> = vec![None; names.len()];
    for b in &branches {
        for (i, (name, _, dt, empty)) in b.columns.iter().enumerate() {
            match &types[i] {
                _ if *empty => {}
                None => types[i] = Some(dt.clone()),
                Some(a) if a != dt => {
                    bail!("unionAll: the column {name:?} is {a} in one branch and {dt} in another")
                }
                _ => {}
            }
        }
    }
    let types: Vec<DataType> = types
        .into_iter()
        .zip(&branches[0].columns)
        .map(|(t, c)| t.unwrap_or_else(|| c.2.clone()))
        .collect();
    let mut out: Option<DataFrame> = None;
    for b in branches {
        let mut d = df.clone();
        for step in &b.steps {
            d = match step {
                Step::Column { internal, expr } => d.with_column(internal, expr.clone())?,
                Step::Unnest { internal, expr } => d
                    .with_column(internal, expr.clone())?
                    .unnest_columns_with_options(&[internal], UnnestOptions::new())?,
            };
        }
        let select: Vec<Expr> = b
            .columns
            .iter()
            .zip(&types)
            .map(|((name, internal, dt, _), want)| {
                let e = col(datafusion::common::Column::from_name(internal));
                let e = if dt == want { e } else { cast(e, want.clone()) };
                e.alias(name)
            })
            .collect();
        let d = d.select(select)?;
        out = Some(match out {
            None => d,
            Some(prev) => prev.union(d)?,
        });
    }
    out.ok_or_else(|| anyhow!("the view has no columns"))
}

/// Every combination of one branch of `a` followed by one of `b`.
fn product(a: Vec<Branch>, b: Vec<Branch>) -> Vec<Branch> {
    let mut out = Vec::with_capacity(a.len() * b.len());
    for x in &a {
        for y in &b {
            let mut z = x.clone();
            z.steps.extend(y.steps.iter().cloned());
            z.columns.extend(y.columns.iter().cloned());
            out.push(z);
        }
    }
    out
}

impl Compiler<'_> {
    fn internal(&self) -> String {
        let n = self.next.get();
        self.next.set(n + 1);
        format!("__view_{n}")
    }

    fn compile(&self, e: &PathExpr, focus: &Ty) -> Result<(Node, Ty, Vec<String>)> {
        let scope = Scope {
            constants: &self.view.constants,
            root: self.root.clone(),
            root_fields: Default::default(),
        };
        let (node, ty) = scope
            .compile(&e.ast, focus)
            .map_err(|m| anyhow!("{}: {m}", e.at))?;
        let fields: BTreeSet<String> = scope.root_fields.into_inner();
        Ok((node, ty, fields.into_iter().collect()))
    }

    fn select(&self, s: &Select, parent: &Context) -> Result<Vec<Branch>> {
        let mut start = Branch::default();
        let cx = if let Some((e, or_null)) = &s.for_each {
            let (node, ty, fields) = self.compile(e, &parent.ty)?;
            self.items(&mut start, e, node, ty, fields, *or_null, parent)?
        } else if !s.repeat.is_empty() {
            let (node, ty, fields) = self.repeat(&s.repeat, &parent.ty)?;
            self.items(&mut start, &s.repeat[0], node, ty, fields, false, parent)?
        } else {
            parent.clone()
        };
        for c in &s.columns {
            let (node, ty, fields) = self.compile(&c.path, &cx.ty)?;
            if let Ty::Choice { .. } = ty {
                bail!(
                    "{}: is a choice element: pick a type with ofType()",
                    c.path.at
                );
            }
            if let Ty::Object { root: true, .. } = ty {
                bail!("{}: a column cannot hold the whole resource", c.path.at);
            }
            let dt = ty.data_type();
            let output = Output::Value {
                collection: c.collection == Some(true),
                dt,
            };
            let internal = self.internal();
            let out_dt = output.data_type();
            let expr = ViewFunction::call(&c.path.at, node, output, cx.column.clone(), fields);
            start.steps.push(Step::Column {
                internal: internal.clone(),
                expr,
            });
            let empty = matches!(ty, Ty::Nothing);
            start
                .columns
                .push((c.name.clone(), internal, out_dt, empty));
        }
        let mut branches = vec![start];
        for n in &s.select {
            branches = product(branches, self.select(n, &cx)?);
        }
        if !s.union_all.is_empty() {
            let mut alts = Vec::new();
            for u in &s.union_all {
                alts.extend(self.select(u, &cx)?);
            }
            branches = product(branches, alts);
        }
        Ok(branches)
    }

    /// Adds the unnest of `node`'s items to `b`; the new context is the item column.
    #[allow(clippy::too_many_arguments)]
    fn items(
        &self,
        b: &mut Branch,
        e: &PathExpr,
        node: Node,
        ty: Ty,
        fields: Vec<String>,
        or_null: bool,
        parent: &Context,
    ) -> Result<Context> {
        match &ty {
            Ty::Choice { .. } => bail!("{}: is a choice element: pick a type with ofType()", e.at),
            Ty::Object { root: true, .. } => bail!("{}: forEach over the resource itself", e.at),
            _ => {}
        }
        let dt = ty.data_type();
        let internal = self.internal();
        let expr = ViewFunction::call(
            &e.at,
            node,
            Output::Items { or_null, dt },
            parent.column.clone(),
            fields,
        );
        b.steps.push(Step::Unnest {
            internal: internal.clone(),
            expr,
        });
        Ok(Context {
            column: Some(internal),
            ty,
        })
    }

    /// `repeat`: the paths compiled for each depth the schema has, and one item type for all.
    /// A path that does not apply at a depth (the element is not there, or beyond the schema's
    /// bounds) gives nothing there.
    fn repeat(&self, paths: &[PathExpr], focus: &Ty) -> Result<(Node, Ty, Vec<String>)> {
        let mut levels: Vec<Vec<Node>> = Vec::new();
        let mut types: Vec<Ty> = Vec::new();
        let mut fields = BTreeSet::new();
        let mut current = vec![focus.clone()];
        while let Some(level_ty) = merge_all(&current) {
            if levels.len() >= 16 {
                break;
            }
            let mut nodes = Vec::new();
            let mut next = Vec::new();
            for p in paths {
                let Ok((node, ty, f)) = self.compile(p, &level_ty) else {
                    continue;
                };
                match ty {
                    Ty::Object { .. } => {}
                    Ty::Nothing => continue,
                    other => bail!(
                        "{}: repeat needs paths to elements with children, not {}",
                        p.at,
                        other.describe()
                    ),
                }
                fields.extend(f);
                nodes.push(node);
                next.push(ty);
            }
            if nodes.is_empty() {
                break;
            }
            types.extend(next.iter().cloned());
            levels.push(nodes);
            current = next;
        }
        let Some(item) = merge_all(&types) else {
            return Ok((
                Node::Lit(datafusion::common::ScalarValue::Null),
                Ty::Nothing,
                Vec::new(),
            ));
        };
        let dt = item.data_type();
        let node = Node::Repeat(Box::new(Node::Focus), levels, dt);
        Ok((node, item, fields.into_iter().collect()))
    }
}

/// The members all the object types have, recursively: one type for items of several depths of
/// a recursive element.
fn merge_all(types: &[Ty]) -> Option<Ty> {
    let mut it = types.iter();
    let mut acc = it.next()?.clone();
    for t in it {
        acc = merge(&acc, t)?;
    }
    Some(acc)
}

fn merge(a: &Ty, b: &Ty) -> Option<Ty> {
    use crate::schema::node::{Member, Shape};
    use std::sync::Arc;
    fn members(a: &[Member], b: &[Member]) -> Vec<Member> {
        let by_name: HashMap<&str, &Member> = b.iter().map(|m| (m.name.as_str(), m)).collect();
        a.iter()
            .filter(|m| !m.cut)
            .filter_map(|m| {
                let o = by_name.get(m.name.as_str()).filter(|o| !o.cut)?;
                let shape = match (&m.shape, &o.shape) {
                    (Shape::Struct(x), Shape::Struct(y)) => Shape::Struct(Arc::new(members(x, y))),
                    (x, _) => x.clone(),
                };
                Some(Member {
                    shape,
                    prim_ext: m.prim_ext && o.prim_ext,
                    ..m.clone()
                })
            })
            .collect()
    }
    match (a, b) {
        (
            Ty::Object {
                fhir, members: x, ..
            },
            Ty::Object { members: y, .. },
        ) => Some(Ty::Object {
            fhir: fhir.clone(),
            members: Arc::new(members(x, y)),
            root: false,
        }),
        _ => None,
    }
}
