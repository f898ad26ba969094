//! A ViewDefinition compiled ([`compile_view`]), then planned in DataFusion ([`plan`]).
//!
//! Selects multiply and `unionAll` adds, so a view is first spread into *branches*: one per
//! combination of `unionAll` choices, each a straight line of steps (unnest the items of a
//! `forEach`, compute a column). Every branch is a plan over the resource table: a filter for
//! `where`, a projection per column and an `unnest` per `forEach`; the view is the `UNION ALL`
//! of its branches, with the columns in the view's order.
//!
//! Each path is compiled against the typed columns; one that leaves them (into what `_overflow`
//! keeps) is compiled against the resource's JSON instead, and a `forEach` or `repeat` whose
//! columns leave them takes its items from the JSON (a `Beyond` error tells the items step to
//! retry).
//! The compiled view is engine-neutral: [`crate::view::lower`] turns it into other engines' SQL.

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
use super::fhirpath::parse::Ast;
use super::udf::{Args, Output, ViewFunction};
use crate::schema::node::{member_fields, resource_members, OVERFLOW_COLUMN};
use crate::schema::FhirVersion;

/// The items an expression is relative to: the resource, or the `forEach` item in a column.
#[derive(Clone)]
struct Context {
    column: Option<String>,
    ty: Ty,
}

/// One compiled FHIRPath expression of a view, engine-neutral: the node, what it gives, the
/// `forEach` item column it is relative to and the resource columns it reads.
#[derive(Clone, Debug)]
pub struct Func {
    /// Where in the view (`select[0].column[1].path`).
    pub at: String,
    pub node: Node,
    pub output: Output,
    pub item: Option<String>,
    pub args: Args,
}

impl Func {
    /// As a DataFusion expression.
    fn expr(&self) -> Expr {
        ViewFunction::call(
            &self.at,
            self.node.clone(),
            self.output.clone(),
            self.item.clone(),
            self.args.clone(),
        )
    }
}

/// A step of a branch: compute a column, or unnest the items of a `forEach` / `repeat` into a
/// column (`{i, v}`: the item's index and the item).
#[derive(Clone, Debug)]
pub enum Step {
    Column { internal: String, func: Func },
    Unnest { internal: String, func: Func },
}

/// One combination of `unionAll` choices: a straight line of steps.
#[derive(Clone, Default, Debug)]
pub struct Branch {
    pub steps: Vec<Step>,
    /// (view column name, internal column, type, whether the path is always empty: `{}`).
    pub columns: Vec<(String, String, DataType, bool)>,
}

/// A view compiled, before any engine: the `where` filters, the branches (the view is their
/// `UNION ALL`), and the view's columns with one type each.
#[derive(Debug)]
pub struct Compiled {
    pub filters: Vec<Func>,
    pub branches: Vec<Branch>,
    pub names: Vec<String>,
    pub types: Vec<DataType>,
}

struct Compiler<'v> {
    view: &'v ViewDefinition,
    root: Ty,
    next: Cell<usize>,
    /// Every path over the resource's JSON, none over typed columns.
    all_json: bool,
    /// `repeat` over the typed columns only, to the schema's depth, noting the elements past
    /// it (for engines that read the typed columns only: see [`Node::Repeat`]).
    bounded_repeat: bool,
}

/// Plans `view` over `table`, the resource type's table.
pub fn plan(view: &ViewDefinition, table: DataFrame) -> Result<DataFrame> {
    plan_with(view, table, false)
}

/// Plans `view` over `table`; with `all_json`, every path is evaluated over the resources' JSON
/// (typed columns and `_overflow` put together), none over the typed columns: the same rows,
/// slower. For checks and measurements.
pub fn plan_with(view: &ViewDefinition, table: DataFrame, all_json: bool) -> Result<DataFrame> {
    let compiled = compile_view(view, all_json)?;
    let mut df = table;
    for f in &compiled.filters {
        df = df.filter(f.expr())?;
    }
    let mut out: Option<DataFrame> = None;
    for b in &compiled.branches {
        let mut d = df.clone();
        for step in &b.steps {
            d = match step {
                Step::Column { internal, func } => d.with_column(internal, func.expr())?,
                Step::Unnest { internal, func } => d
                    .with_column(internal, func.expr())?
                    .unnest_columns_with_options(&[internal], UnnestOptions::new())?,
            };
        }
        let select: Vec<Expr> = b
            .columns
            .iter()
            .zip(&compiled.types)
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

/// Compiles a view: its paths checked and compiled against the schema, its selects spread into
/// branches. `all_json` as for [`plan_with`].
pub fn compile_view(view: &ViewDefinition, all_json: bool) -> Result<Compiled> {
    compile_view_with(view, all_json, false)
}

/// [`compile_view`]; with `bounded_repeat`, a `repeat` over typed columns goes to the schema's
/// depth and names the elements past it instead of being read from JSON.
pub fn compile_view_with(
    view: &ViewDefinition,
    all_json: bool,
    bounded_repeat: bool,
) -> Result<Compiled> {
    let c = Compiler::new(view, all_json, bounded_repeat)?;
    let root = c.root_context();
    let mut filters = Vec::new();
    for f in &view.filters {
        let Expression {
            node,
            ty,
            fields,
            root_json,
        } = c.compile(f, &root, false)?;
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
        filters.push(Func {
            at: f.at.clone(),
            node,
            output: Output::Filter,
            item: None,
            args: c.args(fields, root_json),
        });
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
    Ok(Compiled {
        filters,
        branches,
        names,
        types,
    })
}

/// A FHIRPath expression over the rows of a resource table, as a scalar function giving the
/// collection (a list) per row: the function, and the table's columns to call it with. Paths
/// past the typed columns read the resource's JSON, as in views.
pub fn path_function(
    version: FhirVersion,
    resource_type: &str,
    path: &str,
) -> Result<(datafusion::logical_expr::ScalarUDF, Vec<String>)> {
    let view = ViewDefinition::from_json(&serde_json::json!({
        "resource": resource_type,
        "select": [{"column": [{"name": "v", "path": path, "collection": true}]}]
    }))
    .and_then(|v| v.for_version(version))
    .map_err(|e| anyhow!("{e:#}"))?;
    let c = Compiler::new(&view, false, false)?;
    let mut e = view.select[0].columns[0].path.clone();
    e.at = format!("fhirpath('{path}')");
    let compiled = c.compile(&e, &c.root_context(), false)?;
    match compiled.ty {
        Ty::Choice { .. } => bail!("{}: is a choice element: pick a type with ofType()", e.at),
        Ty::Object { root: true, .. } | Ty::Json { root: true, .. } => {
            bail!("{}: gives the whole resource", e.at)
        }
        _ => {}
    }
    let output = Output::Value {
        collection: true,
        dt: compiled.ty.data_type(),
    };
    let args = c.args(compiled.fields, compiled.root_json);
    Ok(ViewFunction::udf(&e.at, compiled.node, output, None, args))
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

impl<'v> Compiler<'v> {
    fn new(view: &'v ViewDefinition, all_json: bool, bounded_repeat: bool) -> Result<Self> {
        let members = resource_members(view.fhir_version, &view.resource).ok_or_else(|| {
            anyhow!(
                "resource: {} is not a resource type of FHIR {}",
                view.resource,
                view.fhir_version
            )
        })?;
        Ok(Compiler {
            view,
            root: Ty::Object {
                fhir: view.resource.clone(),
                members,
                root: true,
            },
            next: Cell::new(0),
            all_json,
            bounded_repeat,
        })
    }

    /// The resource itself, as the items of the view's top-level selects.
    fn root_context(&self) -> Context {
        Context {
            column: None,
            ty: self.root.clone(),
        }
    }

    fn internal(&self) -> String {
        let n = self.next.get();
        self.next.set(n + 1);
        format!("__view_{n}")
    }

    /// The type of the resource's JSON.
    fn json_root(&self) -> Ty {
        Ty::Json {
            fhir: self.view.resource.clone(),
            def: self.view.resource.clone(),
            prefix: String::new(),
            root: true,
        }
    }

    fn scope(&self, root: Ty) -> Scope<'_> {
        Scope {
            version: self.view.fhir_version,
            constants: &self.view.constants,
            root,
            root_fields: Default::default(),
            beyond: Default::default(),
            reads_root: Default::default(),
            json_fields: Default::default(),
        }
    }

    /// The arguments of a function: the typed columns it reads, or with `root_json` the columns
    /// of the resource's elements it reads from JSON (and `_overflow`), to put that part of the
    /// resource's JSON together.
    fn args(&self, fields: Vec<String>, root_json: Option<Vec<String>>) -> Args {
        let Some(elements) = root_json else {
            return Args::Columns(fields);
        };
        let members =
            resource_members(self.view.fhir_version, &self.view.resource).expect("a resource type");
        let mut columns = Vec::new();
        let mut kept = Vec::new();
        for m in members.iter().filter(|m| elements.contains(&m.name)) {
            kept.push(m.name.clone());
            columns.extend(member_fields(m).iter().map(|f| f.name().clone()));
        }
        columns.push(OVERFLOW_COLUMN.to_string());
        Args::Resource {
            version: self.view.fhir_version,
            resource_type: self.view.resource.clone(),
            elements: kept,
            columns,
        }
    }

    /// Compiles `e` for the items of `cx`: against the typed columns where the path stays
    /// within them, else (or with `json`) against the resource's JSON. Items of a typed
    /// `forEach` have no JSON: there a path beyond the typed columns is a [`Beyond`] error, and
    /// the `forEach` is compiled again over JSON.
    fn compile(&self, e: &PathExpr, cx: &Context, json: bool) -> Result<Expression> {
        let (root, focus) = self.start(cx, json || self.all_json, &e.at)?;
        let typed = matches!(root, Ty::Object { .. });
        let scope = self.scope(root);
        // A value taken whole (a column, a forEach's items) whose items may hide past the
        // typed columns is read from the JSON.
        let compiled = scope
            .compile(&e.ast, &focus)
            .and_then(|(node, ty)| scope.whole(&ty).map(|()| (node, ty)));
        match compiled {
            Ok((node, ty)) if typed => Ok(Expression {
                node,
                ty,
                fields: scope.root_fields.into_inner().into_iter().collect(),
                root_json: None,
            }),
            Ok((node, ty)) => {
                let root_json = (cx.column.is_none() || scope.reads_root.get())
                    .then(|| scope.json_fields.into_inner().into_iter().collect());
                Ok(Expression {
                    node,
                    ty,
                    fields: Vec::new(),
                    root_json,
                })
            }
            Err(m) if typed && scope.beyond.get() => match cx.column {
                Some(_) => Err(anyhow::Error::new(Beyond(format!("{}: {m}", e.at)))),
                None => self.compile(e, cx, true),
            },
            Err(m) => bail!("{}: {m}", e.at),
        }
    }

    /// What a path for the items of `cx` compiles against: the scope's root and the focus. The
    /// typed columns, or with `json` (and for items that are not typed structs: JSON objects,
    /// primitives, nothing, which compile the same either way) the resource's JSON. Items of a
    /// typed `forEach` have no JSON: asking for it is a [`Beyond`] error.
    fn start(&self, cx: &Context, json: bool, at: &str) -> Result<(Ty, Ty)> {
        let json_items = !matches!(cx.ty, Ty::Object { .. });
        match (json || json_items, &cx.column) {
            (false, _) => Ok((self.root.clone(), cx.ty.clone())),
            (true, None) => Ok((self.json_root(), self.json_root())),
            (true, Some(_)) if json_items => Ok((self.json_root(), cx.ty.clone())),
            (true, Some(_)) => Err(anyhow::Error::new(Beyond(format!(
                "{at}: the items it is relative to are typed"
            )))),
        }
    }

    /// A select's branches; a `forEach` or `repeat` whose select reaches past the typed
    /// columns is taken over the JSON of its items.
    fn select(&self, s: &Select, parent: &Context) -> Result<Vec<Branch>> {
        let items = s.for_each.is_some() || !s.repeat.is_empty();
        match self.select_in(s, parent, false) {
            Err(e) if items && e.is::<Beyond>() => self.select_in(s, parent, true),
            other => other,
        }
    }

    fn select_in(&self, s: &Select, parent: &Context, json: bool) -> Result<Vec<Branch>> {
        let mut start = Branch::default();
        let cx = if let Some((e, or_null)) = &s.for_each {
            let c = self.compile(e, parent, json)?;
            if let Ty::Object { root: true, .. } | Ty::Json { root: true, .. } = c.ty {
                self.resource_items(&mut start, e, *or_null, parent, json)?
            } else {
                self.items(&mut start, e, c, *or_null, parent)?
            }
        } else if !s.repeat.is_empty() {
            let c = self.repeat(&s.repeat, parent, json)?;
            self.items(&mut start, &s.repeat[0], c, false, parent)?
        } else {
            parent.clone()
        };
        for c in &s.columns {
            let Expression {
                node,
                ty,
                fields,
                root_json,
            } = self.compile(&c.path, &cx, false)?;
            if let Ty::Choice { .. } = ty {
                bail!(
                    "{}: is a choice element: pick a type with ofType()",
                    c.path.at
                );
            }
            if let Ty::Object { root: true, .. } | Ty::Json { root: true, .. } = ty {
                bail!("{}: a column cannot hold the whole resource", c.path.at);
            }
            // A column of a complex type is its FHIR JSON, read from the resource's JSON: a
            // typed struct would leave out what `_overflow` keeps of it (a datatype's
            // extensions) and give binary as bytes. Items of a typed `forEach` have no JSON:
            // the `forEach` is taken over the JSON of its items instead.
            let (node, ty, fields, root_json) = match (&ty, &cx.column) {
                (Ty::Object { .. }, None) => {
                    let e = self.compile(&c.path, &cx, true)?;
                    (e.node, e.ty, e.fields, e.root_json)
                }
                (Ty::Object { fhir, .. }, Some(_)) => {
                    return Err(anyhow::Error::new(Beyond(format!(
                        "{}: a column of {fhir} is its FHIR JSON",
                        c.path.at
                    ))))
                }
                _ => (node, ty, fields, root_json),
            };
            let dt = ty.data_type();
            let output = Output::Value {
                collection: c.collection == Some(true),
                dt,
            };
            let internal = self.internal();
            let out_dt = output.data_type();
            let func = Func {
                at: c.path.at.clone(),
                node,
                output,
                item: cx.column.clone(),
                args: self.args(fields, root_json),
            };
            start.steps.push(Step::Column {
                internal: internal.clone(),
                func,
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

    /// `forEach` over the resource itself (`where(gender = 'male')`): a row when the path gives
    /// the resource, none when it gives nothing; the resource the context of its columns. The
    /// unnested items are `(path).exists().where($this)`: one `true` or none.
    fn resource_items(
        &self,
        b: &mut Branch,
        e: &PathExpr,
        or_null: bool,
        parent: &Context,
        json: bool,
    ) -> Result<Context> {
        if or_null {
            bail!(
                "{}: forEachOrNull over the resource itself is not supported: use forEach, or a \
                 where of the view",
                e.at
            );
        }
        let items = PathExpr {
            at: e.at.clone(),
            text: format!("({}).exists().where($this)", e.text),
            ast: Ast::Call(
                Some(Box::new(Ast::Call(
                    Some(Box::new(e.ast.clone())),
                    "exists".into(),
                    Vec::new(),
                ))),
                "where".into(),
                vec![Ast::This],
            ),
        };
        let c = self.compile(&items, parent, json)?;
        self.items(b, &items, c, false, parent)?;
        Ok(self.root_context())
    }

    /// Adds the unnest of the compiled items to `b`; the new context is the item column.
    fn items(
        &self,
        b: &mut Branch,
        e: &PathExpr,
        c: Expression,
        or_null: bool,
        parent: &Context,
    ) -> Result<Context> {
        match &c.ty {
            Ty::Choice { .. } => bail!("{}: is a choice element: pick a type with ofType()", e.at),
            Ty::Object { root: true, .. } | Ty::Json { root: true, .. } => {
                bail!("{}: forEach over the resource itself", e.at)
            }
            _ => {}
        }
        let dt = c.ty.data_type();
        let internal = self.internal();
        let func = Func {
            at: e.at.clone(),
            node: c.node,
            output: Output::Items { or_null, dt },
            item: parent.column.clone(),
            args: self.args(c.fields, c.root_json),
        };
        b.steps.push(Step::Unnest {
            internal: internal.clone(),
            func,
        });
        Ok(Context {
            column: Some(internal),
            ty: c.ty,
        })
    }

    /// `repeat`: the paths compiled for each depth. Over typed columns, for each depth the
    /// schema has, with one item type for all; a path that reaches past the typed columns makes
    /// it a [`Beyond`] error (the data may go deeper), and it is compiled over JSON, where a
    /// recursive element's last level applies again at every depth below. A path that does
    /// not apply at a depth (the element is not there) gives nothing there.
    fn repeat(&self, paths: &[PathExpr], parent: &Context, json: bool) -> Result<Expression> {
        let (root, start) = self.start(parent, json || self.all_json, &paths[0].at)?;
        let over_json = !matches!(root, Ty::Object { .. });
        let mut levels: Vec<Vec<Node>> = Vec::new();
        let mut types: Vec<Ty> = Vec::new();
        let mut fields = BTreeSet::new();
        let mut reads_root = false;
        let mut json_fields = BTreeSet::new();
        let mut cyclic = false;
        let mut beyond: Vec<String> = Vec::new();
        let mut current = vec![start];
        while let Some(level_ty) = merge_all(&current) {
            if levels.len() >= MAX_REPEAT_LEVELS {
                bail!(
                    "{}: the paths of repeat reach {MAX_REPEAT_LEVELS} types deep without coming back \
                     to one",
                    paths[0].at
                );
            }
            let mut nodes = Vec::new();
            let mut next = Vec::new();
            for p in paths {
                let scope = self.scope(root.clone());
                let (node, ty) =
                    match scope.compile(&p.ast, &level_ty) {
                        Ok(x) => x,
                        Err(_) if scope.beyond.get() && self.bounded_repeat && !over_json => {
                            let element = p.text.rsplit('.').next().unwrap_or_default();
                            if !p.text.split('.').all(|s| {
                                !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric())
                            }) {
                                bail!(
                                "{}: repeat over typed columns takes element paths (answer.item), \
                                 not {:?}",
                                p.at,
                                p.text
                            );
                            }
                            if !beyond.iter().any(|b| b == element) {
                                beyond.push(element.to_string());
                            }
                            continue;
                        }
                        Err(m) if scope.beyond.get() => {
                            return Err(anyhow::Error::new(Beyond(format!("{}: {m}", p.at))))
                        }
                        Err(_) => continue,
                    };
                match ty {
                    Ty::Object { .. } | Ty::Json { .. } => {}
                    Ty::Nothing => continue,
                    other => bail!(
                        "{}: repeat needs paths to elements with children, not {}",
                        p.at,
                        other.describe()
                    ),
                }
                fields.extend(scope.root_fields.into_inner());
                reads_root |= scope.reads_root.get();
                json_fields.extend(scope.json_fields.into_inner());
                nodes.push(node);
                next.push(ty);
            }
            if nodes.is_empty() {
                break;
            }
            types.extend(next.iter().cloned());
            levels.push(nodes);
            if over_json {
                let Some(t) = merge_all(&next) else {
                    bail!(
                        "{}: the paths of repeat reach elements of different types",
                        paths[0].at
                    );
                };
                if same_json(&t, &level_ty) {
                    cyclic = true;
                    break;
                }
            }
            current = next;
        }
        let Some(item) = merge_all(&types) else {
            return Ok(Expression {
                node: Node::Lit(datafusion::common::ScalarValue::Null),
                ty: Ty::Nothing,
                fields: Vec::new(),
                root_json: None,
            });
        };
        let dt = item.data_type();
        let node = Node::Repeat {
            src: Box::new(Node::Focus),
            levels,
            dt,
            cyclic,
            beyond,
        };
        Ok(Expression {
            node,
            ty: item,
            fields: fields.into_iter().collect(),
            root_json: (over_json && (parent.column.is_none() || reads_root))
                .then(|| json_fields.into_iter().collect()),
        })
    }
}

/// `repeat` over typed columns follows the schema's depths; over JSON, types that lead from one
/// to another without coming back are an error past this many.
const MAX_REPEAT_LEVELS: usize = 16;

/// Whether two JSON object types are the same element.
fn same_json(a: &Ty, b: &Ty) -> bool {
    matches!((a, b), (
        Ty::Json { def: d1, prefix: p1, .. },
        Ty::Json { def: d2, prefix: p2, .. },
    ) if d1 == d2 && p1 == p2)
}

/// A path reaches past the typed columns, from items that have no JSON (a typed `forEach`).
#[derive(Debug)]
struct Beyond(String);

impl std::fmt::Display for Beyond {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is beyond the typed schema", self.0)
    }
}

impl std::error::Error for Beyond {}

/// A compiled expression: its node and type, the typed resource columns it reads, or the
/// resource's elements it reads from JSON.
struct Expression {
    node: Node,
    ty: Ty,
    fields: Vec<String>,
    root_json: Option<Vec<String>>,
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
            .filter_map(|m| {
                let o = by_name.get(m.name.as_str())?;
                if m.cut || o.cut {
                    // Past the typed columns at one of the depths: a path to it is compiled
                    // over JSON.
                    return Some(Member {
                        cut: true,
                        shape: Shape::Json,
                        ..m.clone()
                    });
                }
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
        (Ty::Json { .. }, Ty::Json { .. }) if same_json(a, b) => Some(a.clone()),
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
