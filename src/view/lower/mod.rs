//! ViewDefinitions compiled to the SQL of other engines: one statement per view that runs inside
//! the engine, over the resource tables as `convert` writes them (and `warehouse` names them).
//!
//! The view is compiled once ([`crate::view::plan::compile_view`]): its FHIRPath checked against
//! the schema and lowered to [`Node`]s, its selects spread into branches. This module is one
//! lowering of that compiled view (DataFusion's is [`crate::view::plan`]): every FHIRPath value is
//! a SQL list, every path step a `transform` / `filter` / `flatten` with a lambda, every `forEach`
//! a lateral unnest of `{i, v}` items, `unionAll` a `UNION ALL` (BigQuery, without lambdas,
//! gets ordered array subqueries; Snowflake, whose nested columns are semi-structured, reads
//! fields with `GET` and casts each VARIANT to its type). What a dialect cannot express is
//! an error naming the place in the view and the dialect, never SQL that computes something else.
//!
//! ```
//! use fhir2parquet::view::lower::{to_sql, Dialect, SqlOptions};
//! use fhir2parquet::view::ViewDefinition;
//!
//! let view = ViewDefinition::from_json(&serde_json::json!({
//!     "resource": "Patient",
//!     "select": [{"column": [{"name": "id", "path": "getResourceKey()"},
//!                            {"name": "family", "path": "name.family.first()"}]}]
//! })).unwrap();
//! let sql = to_sql(&view, &SqlOptions::new(Dialect::Duckdb)).unwrap();
//! assert!(sql.contains("FROM \"Patient\" AS r"));
//! ```

mod decimal;
pub mod dialect;

use std::cell::Cell;
use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use arrow::datatypes::{DataType, Fields};
use datafusion::common::ScalarValue;

pub use dialect::Dialect;

use super::fhirpath::eval::{Boundary, JsonKind, MathFn, Node, StrFn};
use super::fhirpath::parse::Op;
use super::plan::{compile_view_with, Step};
use super::udf::Output;
use super::ViewDefinition;

/// What to compile a view to.
#[derive(Clone, Debug)]
pub struct SqlOptions {
    pub dialect: Dialect,
    /// Table names by resource type (`Patient` → `fhir.patient`); the type itself otherwise.
    pub tables: HashMap<String, String>,
    /// `CREATE OR REPLACE VIEW` this name `AS` the query.
    pub create_view: Option<String>,
}

impl SqlOptions {
    pub fn new(dialect: Dialect) -> SqlOptions {
        SqlOptions {
            dialect,
            tables: HashMap::new(),
            create_view: None,
        }
    }
}

/// The alias of the resource table in every statement.
const ROOT: &str = "r";

/// One SQL statement computing `view`.
pub fn to_sql(view: &ViewDefinition, opts: &SqlOptions) -> Result<String> {
    let compiled = compile_view_with(view, false, true)?;
    let d = opts.dialect;
    let schema =
        crate::schema::node::arrow_schema(view.fhir_version, &view.resource).ok_or_else(|| {
            anyhow!(
                "{} is not a resource type of FHIR {}",
                view.resource,
                view.fhir_version
            )
        })?;
    let table = opts
        .tables
        .get(&view.resource)
        .cloned()
        .unwrap_or_else(|| view.resource.clone());
    let l = Lower {
        d,
        root_fields: schema.fields().clone(),
        next: Cell::new(0),
    };
    let root = Cx {
        focus: Val::Row,
        index: "0".into(),
    };
    let mut filters = Vec::new();
    for f in &compiled.filters {
        let v = l.lower(&f.node, &root, &f.at)?;
        filters.push(format!("coalesce({}, FALSE)", l.one(&v, &f.at)?));
    }
    let mut selects = Vec::new();
    for b in &compiled.branches {
        let mut joins = Vec::new();
        let mut items: HashMap<&str, Cx> = HashMap::new();
        let mut columns: HashMap<&str, String> = HashMap::new();
        for step in &b.steps {
            let (internal, func) = match step {
                Step::Column { internal, func } | Step::Unnest { internal, func } => {
                    (internal, func)
                }
            };
            let cx = match &func.item {
                None => &root,
                Some(c) => items.get(c.as_str()).expect("an earlier unnest"),
            };
            let v = l.lower(&func.node, cx, &func.at)?;
            match (&func.output, step) {
                (Output::Value { collection, dt }, Step::Column { .. }) => {
                    // `view` gives a column of a complex type as the element's FHIR JSON,
                    // put together with what `_overflow` keeps of it; the typed struct the
                    // engine has would leave that out.
                    if matches!(Lower::dt(&v), DataType::Struct(_)) {
                        bail!(
                            "{}: a column of a complex type is its FHIR JSON (its extensions and \
                             what _overflow keeps included), which {} SQL does not build: select \
                             its elements (address.city), or run the view with `fhir2parquet view`",
                            func.at,
                            d.name()
                        );
                    }
                    columns.insert(internal, l.output(&v, *collection, dt, &func.at)?);
                }
                (Output::Items { or_null, .. }, Step::Unnest { .. }) => {
                    // The items' type as the engine has them: the typed columns', also where
                    // the view's compiler read the items from JSON (because a path below leaves
                    // the typed columns: that path is then the error, by its place).
                    let dt = Lower::dt(&v);
                    let list = l.many(&v, &func.at)?;
                    let k = joins.len();
                    let (join, item, index) = d.unnest(&list, *or_null, k, &dt);
                    joins.push(join);
                    items.insert(
                        internal,
                        Cx {
                            focus: Val::One(item, dt),
                            index,
                        },
                    );
                }
                _ => bail!("{}: internal error: a step of an unexpected kind", func.at),
            }
        }
        let cols: Vec<String> = b
            .columns
            .iter()
            .zip(&compiled.types)
            .map(|((name, internal, dt, _), want)| {
                let e = columns[internal.as_str()].clone();
                let e = if dt == want {
                    e
                } else {
                    match d.type_name(want) {
                        Some(t) => format!("CAST({e} AS {t})"),
                        None => e,
                    }
                };
                format!("{e} AS {}", d.ident(name))
            })
            .collect();
        let mut sql = format!(
            "SELECT {}\nFROM {} AS {ROOT}",
            cols.join(",\n       "),
            d.table(&table)
        );
        for j in &joins {
            sql.push('\n');
            sql.push_str(j);
        }
        if !filters.is_empty() {
            sql.push_str("\nWHERE ");
            sql.push_str(&filters.join("\n  AND "));
        }
        selects.push(sql);
    }
    let query = selects.join("\nUNION ALL\n");
    Ok(match &opts.create_view {
        Some(name) => format!("CREATE OR REPLACE VIEW {} AS\n{query}", d.table(name)),
        None => query,
    })
}

/// A FHIRPath value in SQL.
#[derive(Clone, Debug)]
enum Val {
    /// The resource's row (its columns are `r.name`).
    Row,
    /// None or one value: the expression, NULL for none.
    One(String, DataType),
    /// A list of values (never NULL, no NULL items).
    Many(String, DataType),
    /// A list of values that may hold NULL items (dropped when the list is used: path steps
    /// pass them on, so a chain of steps filters once).
    Nullable(String, DataType),
}

/// What an expression is evaluated on: the focus and the `%rowIndex`.
struct Cx {
    focus: Val,
    index: String,
}

impl Cx {
    /// The same row index, another focus (the items of `where`, `select`, a function's input).
    fn with_focus(&self, focus: Val) -> Cx {
        Cx {
            focus,
            index: self.index.clone(),
        }
    }
}

/// The SQL operator of a FHIRPath comparison (`~` as `=`: its text is normalized apart).
fn comparison(op: Op, at: &str) -> Result<&'static str> {
    Ok(match op {
        Op::Eq | Op::Equiv => "=",
        Op::Ne | Op::NotEquiv => "<>",
        Op::Lt => "<",
        Op::Le => "<=",
        Op::Gt => ">",
        Op::Ge => ">=",
        _ => bail!("{at}: internal error: {op:?} is not a comparison"),
    })
}

struct Lower {
    d: Dialect,
    root_fields: Fields,
    next: Cell<usize>,
}

impl Lower {
    fn var(&self) -> String {
        let n = self.next.get();
        self.next.set(n + 1);
        format!("x_{n}")
    }

    fn unsupported<T>(&self, at: &str, what: &str) -> Result<T> {
        bail!(
            "{at}: {what} cannot be compiled to {} SQL (it runs with `fhir2parquet view`)",
            self.d.name()
        )
    }

    /// The values as a list.
    fn many(&self, v: &Val, at: &str) -> Result<String> {
        match v {
            Val::Many(l, _) => Ok(l.clone()),
            Val::Nullable(l, dt) => Ok(self.d.drop_nulls(l, &self.var(), dt)),
            Val::One(x, dt) => Ok(self.d.drop_nulls(&self.d.list_of(x), &self.var(), dt)),
            Val::Row => self.unsupported(at, "the whole resource as a value"),
        }
    }

    /// The one value (NULL for none; the first of several).
    fn one(&self, v: &Val, at: &str) -> Result<String> {
        match v {
            Val::One(x, _) => Ok(x.clone()),
            Val::Many(l, dt) => Ok(self.d.at(l, "1", dt)),
            Val::Nullable(_, dt) => Ok(self.d.at(&self.many(v, at)?, "1", dt)),
            Val::Row => self.unsupported(at, "the whole resource as a value"),
        }
    }

    fn dt(v: &Val) -> DataType {
        match v {
            Val::One(_, dt) | Val::Many(_, dt) | Val::Nullable(_, dt) => dt.clone(),
            Val::Row => DataType::Null,
        }
    }

    /// A column or struct field of type `dt`, as a value.
    fn wrap(&self, e: String, dt: &DataType) -> Val {
        match dt {
            DataType::List(f) => Val::Nullable(
                format!(
                    "coalesce({}, {})",
                    self.d.list_column(&e),
                    self.d.empty_list()
                ),
                f.data_type().clone(),
            ),
            other => Val::One(e, other.clone()),
        }
    }

    fn field(&self, v: &Val, name: &str, at: &str) -> Result<Val> {
        // A path past the typed columns (an element kept in _overflow) has no field.
        let past = || {
            anyhow!(
                "{at}: '{name}' is past the typed columns (kept in _overflow): it cannot be \
                 compiled to {} SQL (it runs with `fhir2parquet view`)",
                self.d.name()
            )
        };
        let find = |fields: &Fields| {
            fields
                .iter()
                .find(|f| f.name() == name)
                .map(|f| f.data_type().clone())
                .ok_or_else(past)
        };
        let d = self.d;
        let q = d.ident(name);
        // A struct's field (Snowflake: of an OBJECT, a VARIANT cast to the field's type); a
        // lambda's variable needs no parentheses.
        let get = |x: &str, dt: &DataType, paren: bool| match (d, paren) {
            (Dialect::Snowflake, _) | (_, true) => d.field(x, name, dt),
            (_, false) => format!("{x}.{q}"),
        };
        match v {
            // A column of the table has its type.
            Val::Row => {
                let dt = find(&self.root_fields)?;
                Ok(self.wrap(format!("{ROOT}.{q}"), &dt))
            }
            Val::One(x, DataType::Struct(fields)) => {
                let dt = find(fields)?;
                Ok(self.wrap(get(x, &dt, true), &dt))
            }
            // A NULL item gives NULL children: the NULLs are dropped once, where the list is used.
            Val::Many(l, st @ DataType::Struct(fields))
            | Val::Nullable(l, st @ DataType::Struct(fields)) => {
                let dt = find(fields)?;
                let v = self.var();
                Ok(match &dt {
                    DataType::List(f) => Val::Nullable(
                        d.flat_map(
                            l,
                            &v,
                            st,
                            &format!(
                                "coalesce({}, {})",
                                d.list_column(&get(&v, &dt, false)),
                                d.empty_list()
                            ),
                        ),
                        f.data_type().clone(),
                    ),
                    other => Val::Nullable(
                        d.transform(l, &v, st, &get(&v, other, false)),
                        other.clone(),
                    ),
                })
            }
            _ => Err(past()),
        }
    }

    fn literal(&self, s: &ScalarValue, at: &str) -> Result<Val> {
        let d = self.d;
        Ok(match s {
            ScalarValue::Null => Val::One("NULL".into(), DataType::Null),
            ScalarValue::Utf8(None) | ScalarValue::Int32(None) | ScalarValue::Boolean(None) => {
                Val::One("NULL".into(), s.data_type())
            }
            ScalarValue::Utf8(Some(t)) => Val::One(d.string(t), DataType::Utf8),
            ScalarValue::Int32(Some(i)) => Val::One(
                self.cast(&i.to_string(), &DataType::Int32, at)?,
                DataType::Int32,
            ),
            ScalarValue::Boolean(Some(b)) => {
                Val::One(if *b { "TRUE" } else { "FALSE" }.into(), DataType::Boolean)
            }
            ScalarValue::Decimal128(Some(v), p, sc) => Val::One(
                self.cast(
                    &d.string(&crate::decode::decimal::decimal_text(*v)),
                    &DataType::Decimal128(*p, *sc),
                    at,
                )?,
                DataType::Decimal128(*p, *sc),
            ),
            ScalarValue::Decimal128(None, p, sc) => {
                Val::One("NULL".into(), DataType::Decimal128(*p, *sc))
            }
            ScalarValue::Binary(Some(b)) => {
                use base64::Engine as _;
                let text = d.string(&base64::engine::general_purpose::STANDARD.encode(b));
                Val::One(d.unbase64(&text), DataType::Binary)
            }
            ScalarValue::TimestampMicrosecond(Some(us), tz) => {
                let text = crate::decode::datetime::instant_text(*us);
                let t = d.type_name(&s.data_type()).expect("a timestamp type");
                Val::One(
                    format!("CAST({} AS {t})", d.string(&text)),
                    DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, tz.clone()),
                )
            }
            other => {
                return self.unsupported(at, &format!("a constant of type {}", other.data_type()))
            }
        })
    }

    fn cast(&self, e: &str, dt: &DataType, at: &str) -> Result<String> {
        match self.d.type_name(dt) {
            Some(t) => Ok(format!("CAST({e} AS {t})")),
            None => self.unsupported(at, &format!("a conversion to {dt}")),
        }
    }

    fn lower(&self, node: &Node, cx: &Cx, at: &str) -> Result<Val> {
        let d = self.d;
        let boolean = |e: String| Val::One(e, DataType::Boolean);
        Ok(match node {
            Node::Focus => cx.focus.clone(),
            Node::Root => Val::Row,
            Node::RowIndex => Val::One(cx.index.clone(), DataType::Int32),
            Node::Lit(s) => self.literal(s, at)?,
            Node::Field(src, name) => self.field(&self.lower(src, cx, at)?, name, at)?,
            Node::Where(src, cond) => {
                let s = self.lower(src, cx, at)?;
                if let Val::Row = s {
                    // The resource, or nothing: a list of one marker when the condition holds.
                    let c = self.one(&self.lower(cond, cx, at)?, at)?;
                    return Ok(Val::Many(
                        format!(
                            "CASE WHEN coalesce({c}, FALSE) THEN {} ELSE {} END",
                            d.list_of("TRUE"),
                            d.empty_list()
                        ),
                        DataType::Null,
                    ));
                }
                let dt = Self::dt(&s);
                let (list, nulls) = match &s {
                    Val::Nullable(l, _) => (l.clone(), true),
                    other => (self.many(other, at)?, false),
                };
                let v = self.var();
                let inner = cx.with_focus(Val::One(v.clone(), dt.clone()));
                let c = self.one(&self.lower(cond, &inner, at)?, at)?;
                let keep = match nulls {
                    true => format!("{v} IS NOT NULL AND coalesce({c}, FALSE)"),
                    false => format!("coalesce({c}, FALSE)"),
                };
                Val::Many(d.filter(&list, &v, &dt, &keep), dt)
            }
            Node::Exists(src) => {
                let list = self.many(&self.lower(src, cx, at)?, at)?;
                boolean(format!("({} > 0)", d.len(&list)))
            }
            Node::AnyExists(alts) => {
                let mut parts = Vec::new();
                for a in alts {
                    let list = self.many(&self.lower(a, cx, at)?, at)?;
                    parts.push(format!("{} > 0", d.len(&list)));
                }
                if parts.is_empty() {
                    boolean("FALSE".into())
                } else {
                    boolean(format!("({})", parts.join(" OR ")))
                }
            }
            Node::Empty(src) => {
                let list = self.many(&self.lower(src, cx, at)?, at)?;
                boolean(format!("({} = 0)", d.len(&list)))
            }
            Node::Count(src) => {
                let list = self.many(&self.lower(src, cx, at)?, at)?;
                Val::One(
                    format!("CAST({} AS INTEGER)", d.len(&list)),
                    DataType::Int32,
                )
            }
            Node::First(src) | Node::Last(src) => {
                let s = self.lower(src, cx, at)?;
                match s {
                    Val::One(..) => s,
                    Val::Many(_, ref dt) | Val::Nullable(_, ref dt) => {
                        let pos = if matches!(node, Node::First(_)) {
                            "1"
                        } else {
                            "-1"
                        };
                        Val::One(d.at(&self.many(&s, at)?, pos, dt), dt.clone())
                    }
                    Val::Row => return self.unsupported(at, "first() of the resource"),
                }
            }
            Node::Index(src, i) => {
                let s = self.lower(src, cx, at)?;
                let dt = Self::dt(&s);
                let list = self.many(&s, at)?;
                let i = self.one(&self.lower(i, cx, at)?, at)?;
                Val::One(
                    format!(
                        "CASE WHEN {i} >= 0 THEN {} END",
                        d.at(&list, &format!("{i} + 1"), &dt)
                    ),
                    dt,
                )
            }
            Node::Not(src) => boolean(format!(
                "(NOT {})",
                self.one(&self.lower(src, cx, at)?, at)?
            )),
            Node::Join(src, sep) => {
                let s = self.lower(src, cx, at)?;
                let list = self.many(&s, at)?;
                let v = self.var();
                let text = d.transform(
                    &list,
                    &v,
                    &Self::dt(&s),
                    &self.cast(&v, &DataType::Utf8, at)?,
                );
                Val::One(
                    format!(
                        "CASE WHEN {} = 0 THEN NULL ELSE {} END",
                        d.len(&list),
                        d.join_strings(&text, &d.string(sep))
                    ),
                    DataType::Utf8,
                )
            }
            Node::Compare(op @ (Op::Eq | Op::Ne | Op::Equiv | Op::NotEquiv), l, r) => {
                let (lv, rv) = (self.lower(l, cx, at)?, self.lower(r, cx, at)?);
                let equiv = matches!(op, Op::Equiv | Op::NotEquiv);
                let not = if matches!(op, Op::Ne | Op::NotEquiv) {
                    "NOT "
                } else {
                    ""
                };
                let text = Self::dt(&lv) == DataType::Utf8 || Self::dt(&rv) == DataType::Utf8;
                match (&lv, &rv) {
                    (Val::One(..), Val::One(..)) => {
                        let (mut a, mut b) = (self.one(&lv, at)?, self.one(&rv, at)?);
                        if equiv && text {
                            (a, b) = (d.equivalent_text(&a), d.equivalent_text(&b));
                        }
                        let number =
                            |t: &DataType| matches!(t, DataType::Int32 | DataType::Decimal128(..));
                        let decimal = |t: &DataType| matches!(t, DataType::Decimal128(..));
                        let (x, y) = (Self::dt(&lv), Self::dt(&rv));
                        let same = match () {
                            _ if equiv
                                && number(&x)
                                && number(&y)
                                && (decimal(&x) || decimal(&y)) =>
                            {
                                let dec = DataType::Decimal128(38, 18);
                                d.decimals_equivalent(
                                    &self.cast(&a, &dec, at)?,
                                    &self.cast(&b, &dec, at)?,
                                )
                            }
                            _ => format!("{a} = {b}"),
                        };
                        boolean(match equiv {
                            true => format!(
                                "({not}(CASE WHEN {a} IS NULL AND {b} IS NULL THEN TRUE \
                                 WHEN {a} IS NULL OR {b} IS NULL THEN FALSE ELSE {same} END))"
                            ),
                            false => format!("({not}({a} = {b}))"),
                        })
                    }
                    _ if equiv => {
                        return self.unsupported(at, "~ or !~ of collections of several items")
                    }
                    // Collections: empty when either is, else equal items in order.
                    _ => {
                        let (a, b) = (self.many(&lv, at)?, self.many(&rv, at)?);
                        boolean(format!(
                            "(CASE WHEN {} = 0 OR {} = 0 THEN NULL ELSE {not}{} END)",
                            d.len(&a),
                            d.len(&b),
                            d.lists_equal(&a, &b)
                        ))
                    }
                }
            }
            Node::Temporal(op, l, r) => {
                // The text of dates compared to the precision both have: empty when they
                // agree that far and one goes further. Exact for dates and for date-times
                // written with the same offset; the offsets are not reconciled here.
                let (lv, rv) = (self.lower(l, cx, at)?, self.lower(r, cx, at)?);
                let text = |v: &Val| -> Result<String> {
                    let x = self.one(v, at)?;
                    match Self::dt(v) {
                        DataType::Timestamp(..) => Ok(d.instant_text(&x)),
                        _ => self.cast(&x, &DataType::Utf8, at),
                    }
                };
                let (a, b) = (text(&lv)?, text(&rv)?);
                let m = format!("least(length({a}), length({b}))");
                let (pa, pb) = (d.prefix(&a, &m), d.prefix(&b, &m));
                let sym = comparison(*op, at)?;
                let undecided = match op {
                    Op::Equiv => "FALSE",
                    Op::NotEquiv => "TRUE",
                    _ => "NULL",
                };
                boolean(format!(
                    "(CASE WHEN {pa} <> {pb} THEN {pa} {sym} {pb} \
                     WHEN length({a}) = length({b}) THEN {a} {sym} {b} ELSE {undecided} END)"
                ))
            }
            Node::Compare(op, l, r) => {
                let a = self.one(&self.lower(l, cx, at)?, at)?;
                let b = self.one(&self.lower(r, cx, at)?, at)?;
                let sym = comparison(*op, at)?;
                boolean(format!("({a} {sym} {b})"))
            }
            Node::Logic(op, l, r) => {
                let a = self.one(&self.lower(l, cx, at)?, at)?;
                let b = self.one(&self.lower(r, cx, at)?, at)?;
                boolean(match op {
                    Op::And => format!("({a} AND {b})"),
                    Op::Or => format!("({a} OR {b})"),
                    Op::Xor => format!("({a} <> {b})"),
                    Op::Implies => format!("((NOT {a}) OR {b})"),
                    _ => bail!("{at}: internal error: {op:?} is not a boolean operator"),
                })
            }
            Node::Arith(op, l, r) => {
                let lv = self.lower(l, cx, at)?;
                let rv = self.lower(r, cx, at)?;
                let ints = Self::dt(&lv) == DataType::Int32 && Self::dt(&rv) == DataType::Int32;
                let (a, b) = (self.one(&lv, at)?, self.one(&rv, at)?);
                if ints && *op != Op::Div {
                    Val::One(
                        match op {
                            Op::Add => format!("({a} + {b})"),
                            Op::Sub => format!("({a} - {b})"),
                            Op::Mul => format!("({a} * {b})"),
                            Op::IntDiv => d.int_div(&a, &b),
                            Op::Mod => format!("({a} % nullif({b}, 0))"),
                            _ => bail!("{at}: internal error: {op:?}"),
                        },
                        DataType::Int32,
                    )
                } else {
                    // Exact, as `view` computes it (see `decimal.rs`).
                    let dec = DataType::Decimal128(38, 18);
                    let (a, b) = (self.cast(&a, &dec, at)?, self.cast(&b, &dec, at)?);
                    let e = match op {
                        Op::Add => d.decimal_add(&a, &b, false),
                        Op::Sub => d.decimal_add(&a, &b, true),
                        Op::Mul => d.decimal_mul(&a, &b),
                        Op::Div => d.decimal_div(&a, &b, &self.var()),
                        Op::IntDiv => d.decimal_int_div(&a, &b, &self.var()),
                        Op::Mod => format!("({a} % nullif({b}, 0))"),
                        _ => bail!("{at}: internal error: {op:?}"),
                    };
                    Val::One(self.cast(&e, &dec, at)?, dec)
                }
            }
            Node::Concat(l, r) => {
                let a = self.one(&self.lower(l, cx, at)?, at)?;
                let b = self.one(&self.lower(r, cx, at)?, at)?;
                Val::One(
                    d.concat_strings(&format!("coalesce({a}, '')"), &format!("coalesce({b}, '')")),
                    DataType::Utf8,
                )
            }
            Node::Combine(l, r) => {
                let lv = self.lower(l, cx, at)?;
                let rv = self.lower(r, cx, at)?;
                let dt = match Self::dt(&lv) {
                    DataType::Null => Self::dt(&rv),
                    t => t,
                };
                Val::Many(
                    d.concat_lists(&self.many(&lv, at)?, &self.many(&rv, at)?),
                    dt,
                )
            }
            Node::Select(src, projection) => {
                let sv = self.lower(src, cx, at)?;
                let dt = Self::dt(&sv);
                let list = self.many(&sv, at)?;
                let v = self.var();
                let inner = cx.with_focus(Val::One(v.clone(), dt.clone()));
                let p = self.lower(projection, &inner, at)?;
                let pdt = Self::dt(&p);
                let f = self.many(&p, at)?;
                Val::Many(d.flat_map(&list, &v, &dt, &f), pdt)
            }
            Node::All(src, cond) => {
                let sv = self.lower(src, cx, at)?;
                let dt = Self::dt(&sv);
                let list = self.many(&sv, at)?;
                let v = self.var();
                let inner = cx.with_focus(Val::One(v.clone(), dt.clone()));
                let c = self.one(&self.lower(cond, &inner, at)?, at)?;
                let failing = d.filter(&list, &v, &dt, &format!("NOT coalesce({c}, FALSE)"));
                boolean(format!("({} = 0)", d.len(&failing)))
            }
            Node::Filter {
                src,
                other,
                keep,
                distinct,
            } => {
                let av = self.lower(src, cx, at)?;
                let dt = Self::dt(&av);
                let a = self.many(&av, at)?;
                let b = self.many(&self.lower(other, cx, at)?, at)?;
                let v = self.var();
                let inside = d.list_contains(&b, &v);
                let cond = match keep {
                    true => format!("coalesce({inside}, FALSE)"),
                    false => format!("NOT coalesce({inside}, FALSE)"),
                };
                let kept = d.filter(&a, &v, &dt, &cond);
                match distinct {
                    true => Val::Many(d.distinct(&kept, &self.var()), dt),
                    false => Val::Many(kept, dt),
                }
            }
            Node::SubsetOf(a, b) => {
                let av = self.lower(a, cx, at)?;
                let dt = Self::dt(&av);
                let a = self.many(&av, at)?;
                let b = self.many(&self.lower(b, cx, at)?, at)?;
                let v = self.var();
                let outside = d.filter(
                    &a,
                    &v,
                    &dt,
                    &format!("NOT coalesce({}, FALSE)", d.list_contains(&b, &v)),
                );
                boolean(format!("({} = 0)", d.len(&outside)))
            }
            Node::Math(f, src, arg) => {
                let sv = self.lower(src, cx, at)?;
                let x = self.one(&sv, at)?;
                let e = match (f, arg) {
                    (MathFn::Abs, None) => format!("abs({x})"),
                    (MathFn::Ceiling, None) => format!("ceil({x})"),
                    (MathFn::Floor, None) => format!("floor({x})"),
                    (MathFn::Truncate, None) => {
                        format!("(CASE WHEN {x} < 0 THEN ceil({x}) ELSE floor({x}) END)")
                    }
                    (MathFn::Round, None) => format!("round({x})"),
                    (MathFn::Round, Some(p)) => {
                        format!("round({x}, {})", self.one(&self.lower(p, cx, at)?, at)?)
                    }
                    (MathFn::Sqrt, None) => format!("sqrt({x})"),
                    (MathFn::Exp, None) => format!("exp({x})"),
                    (MathFn::Ln, None) => format!("ln({x})"),
                    (f, _) => {
                        let name = format!("{f:?}").to_lowercase();
                        return self.unsupported(at, &format!("{name}()"));
                    }
                };
                // The argument of round() is a precision: the value's type decides.
                match f.integer_result(Self::dt(&sv) == DataType::Int32) {
                    true => Val::One(format!("CAST({e} AS INTEGER)"), DataType::Int32),
                    false => {
                        let dec = DataType::Decimal128(38, 18);
                        Val::One(self.cast(&e, &dec, at)?, dec)
                    }
                }
            }
            Node::Sort(src, descending) => {
                let v = self.lower(src, cx, at)?;
                let dt = Self::dt(&v);
                let list = self.many(&v, at)?;
                Val::Many(d.sort(&list, *descending, &self.var()), dt)
            }
            Node::Now(false) => Val::One(
                self.cast("current_date", &DataType::Utf8, at)?,
                DataType::Utf8,
            ),
            Node::Now(true) => return self.unsupported(at, "now()"),
            Node::DateAdd(..) => return self.unsupported(at, "a date plus a duration"),
            Node::With(src, body) => {
                let sv = self.lower(src, cx, at)?;
                let dt = Self::dt(&sv);
                let inner = cx.with_focus(Val::One(self.one(&sv, at)?, dt));
                self.lower(body, &inner, at)?
            }
            Node::QuantityText(..) | Node::QuantityCmp(..) => {
                return self.unsupported(at, "a comparison of quantities")
            }
            Node::Encode(_, form, encode) => {
                let name = match (form.as_str(), encode) {
                    ("html" | "json", true) => "escape",
                    ("html" | "json", false) => "unescape",
                    (_, true) => "encode",
                    (_, false) => "decode",
                };
                return self.unsupported(at, &format!("{name}('{form}')"));
            }
            Node::Split(src, sep) => {
                let x = self.one(&self.lower(src, cx, at)?, at)?;
                Val::Many(
                    format!(
                        "(CASE WHEN {x} IS NULL THEN {} ELSE {} END)",
                        d.empty_list(),
                        d.split(&x, sep)
                    ),
                    DataType::Utf8,
                )
            }
            Node::Distinct(src) => {
                let v = self.lower(src, cx, at)?;
                let dt = Self::dt(&v);
                Val::Many(d.distinct(&self.many(&v, at)?, &self.var()), dt)
            }
            Node::Str(f, src, args) => {
                let sv = self.lower(src, cx, at)?;
                let s = self.cast(&self.one(&sv, at)?, &DataType::Utf8, at)?;
                let inner = cx.with_focus(Val::One(s.clone(), DataType::Utf8));
                let mut a = Vec::new();
                let mut lits = Vec::new();
                for arg in args {
                    a.push(self.one(&self.lower(arg, &inner, at)?, at)?);
                    lits.push(match arg {
                        Node::Lit(ScalarValue::Utf8(Some(t))) => Some(t.clone()),
                        _ => None,
                    });
                }
                let literal = |k: usize, what: &str| -> Result<String> {
                    lits[k].clone().ok_or_else(|| {
                        anyhow::anyhow!(
                            "{at}: {what} takes a literal regular expression in {} SQL",
                            d.name()
                        )
                    })
                };
                let (fhir, dt) = f.result();
                let _ = fhir;
                let e = match f {
                    StrFn::StartsWith => {
                        format!(
                            "({} = {})",
                            d.prefix(&s, &format!("length({})", a[0])),
                            a[0]
                        )
                    }
                    StrFn::EndsWith => format!(
                        "(CASE WHEN length({a0}) > length({s}) THEN FALSE \
                         ELSE substr({s}, length({s}) - length({a0}) + 1) = {a0} END)",
                        a0 = a[0]
                    ),
                    StrFn::Contains => format!("({} > 0)", d.position(&s, &a[0])),
                    StrFn::Upper => format!("upper({s})"),
                    StrFn::Lower => format!("lower({s})"),
                    StrFn::Trim => format!("trim({s})"),
                    StrFn::Length => format!("CAST(length({s}) AS INTEGER)"),
                    StrFn::IndexOf => format!("CAST({} - 1 AS INTEGER)", d.position(&s, &a[0])),
                    StrFn::Substring => {
                        let start = &a[0];
                        let part = match a.get(1) {
                            Some(len) => {
                                format!("substr({s}, {start} + 1, greatest({len}, 0))")
                            }
                            None => format!("substr({s}, {start} + 1)"),
                        };
                        format!(
                            "(CASE WHEN {start} < 0 OR {start} >= length({s}) THEN NULL \
                             ELSE {part} END)"
                        )
                    }
                    StrFn::Replace => format!("replace({s}, {}, {})", a[0], a[1]),
                    StrFn::Matches => d.regex_test(&s, &literal(0, "matches()")?, true),
                    StrFn::MatchesFull => {
                        d.regex_test(&s, &format!("^(?:{})$", literal(0, "matchesFull()")?), true)
                    }
                    StrFn::ReplaceMatches => match literal(0, "replaceMatches()")?.as_str() {
                        // An empty expression matches nothing to replace.
                        "" => s.clone(),
                        p => d.regex_replace(&s, p, &literal(1, "replaceMatches()")?),
                    },
                };
                Val::One(e, dt)
            }
            Node::Iif(c, a, b) => {
                let c = self.one(&self.lower(c, cx, at)?, at)?;
                let (av, bv) = (self.lower(a, cx, at)?, self.lower(b, cx, at)?);
                let dt = match Self::dt(&av) {
                    DataType::Null => Self::dt(&bv),
                    t => t,
                };
                match (&av, &bv) {
                    (Val::One(x, _), Val::One(y, _)) => Val::One(
                        format!("(CASE WHEN coalesce({c}, FALSE) THEN {x} ELSE {y} END)"),
                        dt,
                    ),
                    _ => Val::Many(
                        format!(
                            "(CASE WHEN coalesce({c}, FALSE) THEN {} ELSE {} END)",
                            self.many(&av, at)?,
                            self.many(&bv, at)?
                        ),
                        dt,
                    ),
                }
            }
            Node::Slice { src, skip, take } => {
                let v = self.lower(src, cx, at)?;
                let dt = Self::dt(&v);
                let list = self.many(&v, at)?;
                let k = self.one(&self.lower(skip, cx, at)?, at)?;
                let k = format!("greatest(coalesce({k}, 0), 0)");
                let t = match take {
                    Some(t) => Some(format!(
                        "greatest(coalesce({}, 0), 0)",
                        self.one(&self.lower(t, cx, at)?, at)?
                    )),
                    None => None,
                };
                Val::Many(d.slice(&list, &k, t.as_deref(), &self.var()), dt)
            }
            Node::Member(item, coll) => {
                let x = self.one(&self.lower(item, cx, at)?, at)?;
                let cv = self.lower(coll, cx, at)?;
                let list = self.many(&cv, at)?;
                boolean(format!(
                    "(CASE WHEN {x} IS NULL THEN NULL ELSE {} END)",
                    d.list_contains(&list, &x)
                ))
            }
            Node::Convert { to, test, .. } => {
                let name = format!("{}{:?}()", if *test { "convertsTo" } else { "to" }, to);
                return self.unsupported(at, &name);
            }
            Node::Plus(l, r) => {
                let a = self.one(&self.lower(l, cx, at)?, at)?;
                let b = self.one(&self.lower(r, cx, at)?, at)?;
                // NULL when either is (FHIRPath: empty).
                Val::One(d.concat_strings(&a, &b), DataType::Utf8)
            }
            Node::Union(l, r) => {
                let lv = self.lower(l, cx, at)?;
                let rv = self.lower(r, cx, at)?;
                let dt = match Self::dt(&lv) {
                    DataType::Null => Self::dt(&rv),
                    t => t,
                };
                let both = d.concat_lists(&self.many(&lv, at)?, &self.many(&rv, at)?);
                Val::Many(d.distinct(&both, &self.var()), dt)
            }
            Node::Cast(src, dt) => match self.lower(src, cx, at)? {
                Val::One(x, DataType::Timestamp(..)) if dt == &DataType::Utf8 => {
                    Val::One(d.instant_text(&x), dt.clone())
                }
                Val::Many(l, from @ DataType::Timestamp(..)) if dt == &DataType::Utf8 => {
                    let v = self.var();
                    Val::Many(d.transform(&l, &v, &from, &d.instant_text(&v)), dt.clone())
                }
                Val::One(x, _) => Val::One(self.cast(&x, dt, at)?, dt.clone()),
                Val::Many(l, from) => {
                    let v = self.var();
                    Val::Many(
                        d.transform(&l, &v, &from, &self.cast(&v, dt, at)?),
                        dt.clone(),
                    )
                }
                Val::Nullable(l, from) => {
                    let v = self.var();
                    Val::Nullable(
                        d.transform(&l, &v, &from, &self.cast(&v, dt, at)?),
                        dt.clone(),
                    )
                }
                Val::Row => return self.unsupported(at, "a conversion of the resource"),
            },
            Node::ReferenceKey(src, want) => {
                let refs = self.field(&self.lower(src, cx, at)?, "reference", at)?;
                let v = self.var();
                let key = self.reference_key(&v, want.as_deref());
                let w = self.var();
                match refs {
                    Val::One(x, _) => {
                        Val::One(self.reference_key(&x, want.as_deref()), DataType::Utf8)
                    }
                    Val::Many(l, _) | Val::Nullable(l, _) => Val::Many(
                        d.drop_nulls(
                            &d.transform(&l, &v, &DataType::Utf8, &key),
                            &w,
                            &DataType::Utf8,
                        ),
                        DataType::Utf8,
                    ),
                    Val::Row => unreachable!("a field is never the row"),
                }
            }
            Node::Boundary(src, kind, high) => {
                let b = |x: &str| self.boundary(x, *kind, *high);
                if let Boundary::Decimal(precision) = kind {
                    return self.decimal_boundary(src, *precision, *high, cx, at);
                }
                match (self.lower(src, cx, at)?, kind) {
                    (Val::One(x, dt), _) => Val::One(b(&x), dt),
                    (Val::Many(l, dt), _) => {
                        let v = self.var();
                        Val::Many(d.transform(&l, &v, &dt, &b(&v)), dt)
                    }
                    (Val::Nullable(l, dt), _) => {
                        let v = self.var();
                        Val::Nullable(d.transform(&l, &v, &dt, &b(&v)), dt)
                    }
                    (Val::Row, _) => return self.unsupported(at, "a boundary of the resource"),
                }
            }
            Node::Repeat {
                src,
                levels,
                dt,
                cyclic,
                beyond,
            } => {
                if *cyclic {
                    return self.unsupported(at, "repeat over JSON");
                }
                let focus = self.lower(src, cx, at)?;
                let start = Cx {
                    focus,
                    index: cx.index.clone(),
                };
                let mut items: Option<String> = None;
                for p in levels.first().into_iter().flatten() {
                    let children = self.lower(p, &start, at)?;
                    let sub = self.expand_all(&children, 1, levels, dt, at)?;
                    items = Some(match items {
                        None => sub,
                        Some(prev) => d.concat_lists(&prev, &sub),
                    });
                }
                let Some(items) = items else {
                    return self.unsupported(at, "a repeat that reaches nothing");
                };
                let items = if beyond.is_empty() {
                    items
                } else {
                    // The typed columns hold the schema's depths; a row with deeper data (in
                    // _overflow) stops the query rather than giving part of the items.
                    let deeper = format!("/({})\":", beyond.join("|"));
                    let overflow = format!("{ROOT}.{}", d.ident("_overflow"));
                    let test = d.regex_test(&overflow, &deeper, false);
                    format!(
                        "CASE WHEN coalesce({test}, FALSE) THEN {} ELSE {items} END",
                        d.error(
                            &format!(
                                "{at}: a resource nests {} deeper than the typed columns (kept \
                                 in _overflow): run this view with `fhir2parquet view`",
                                beyond.join(", ")
                            ),
                            &overflow,
                            None
                        )
                    )
                };
                Val::Many(items, dt.clone())
            }
            // A path compiled over JSON reads typed columns where they hold it.
            Node::JsonField(_, name, JsonKind::Element) => bail!(
                "{at}: the id or extensions of '{name}' after a function are read from the \
                 resource's JSON: not compiled to {} SQL (it runs with `fhir2parquet view`)",
                self.d.name()
            ),
            Node::JsonField(src, name, _) => self.field(&self.lower(src, cx, at)?, name, at)?,
        })
    }

    /// `lowBoundary()` / `highBoundary()` of a decimal element, from the text it was written
    /// with: the `_overflow` entry where the text differs from the value, else the value's
    /// shortest text. Takes an element reached from the resource through single elements
    /// (`value.ofType(Quantity).value`), whose JSON Pointer is known.
    fn decimal_boundary(
        &self,
        src: &Node,
        precision: Option<u8>,
        high: bool,
        cx: &Cx,
        at: &str,
    ) -> Result<Val> {
        let d = self.d;
        fn pointer(n: &Node) -> Option<String> {
            match n {
                Node::Focus => Some(String::new()),
                Node::JsonField(inner, name, _) | Node::Field(inner, name) => {
                    Some(format!("{}/{name}", pointer(inner)?))
                }
                _ => None,
            }
        }
        let (Node::JsonField(inner, name, _), Val::Row, None) = (src, &cx.focus, precision) else {
            return self.unsupported(
                at,
                "lowBoundary() / highBoundary() of a decimal other than an element of the resource \
                 (without a precision)",
            );
        };
        let Some(ptr) = pointer(src) else {
            return self.unsupported(at, "lowBoundary() / highBoundary() of this decimal");
        };
        let Val::One(value, _) = self.field(&self.lower(inner, cx, at)?, name, at)? else {
            return self.unsupported(at, "lowBoundary() / highBoundary() of a repeating decimal");
        };
        let overflow = format!("{ROOT}.{}", d.ident("_overflow"));
        let written = d.json_member(&overflow, &ptr);
        let full = d.decimal_text(&value);
        let shortest = format!(
            "CASE WHEN {full} LIKE '%.%' THEN \
             regexp_replace(regexp_replace({full}, '0+$', ''), '[.]$', '') ELSE {full} END"
        );
        let t = format!("coalesce({written}, {shortest})");
        let scale = format!(
            "CASE WHEN {t} LIKE '%.%' THEN length({t}) - {} ELSE 0 END",
            d.position(&t, "'.'")
        );
        let dec = DataType::Decimal128(38, 18);
        let half = self.cast(
            &d.concat_strings(
                &format!(
                    "rpad('0.', {}, '0')",
                    self.cast(&format!("{scale} + 2"), &DataType::Int32, at)?
                ),
                "'5'",
            ),
            &dec,
            at,
        )?;
        let v = self.cast(&t, &dec, at)?;
        let sign = if high { "+" } else { "-" };
        let moved = self.cast(&format!("{v} {sign} {half}"), &dec, at)?;
        Ok(Val::One(
            format!(
                "CASE WHEN {value} IS NULL OR lower({t}) LIKE '%e%' THEN NULL \
                 WHEN {scale} >= 18 THEN {v} ELSE {moved} END"
            ),
            dec,
        ))
    }

    /// Depth first, the items of `children` (reached at depth `k`) each followed by what the
    /// paths of the levels below reach from it, projected to `dt`.
    fn expand_all(
        &self,
        children: &Val,
        k: usize,
        levels: &[Vec<Node>],
        dt: &DataType,
        at: &str,
    ) -> Result<String> {
        let d = self.d;
        let cdt = Self::dt(children);
        let list = self.many(children, at)?;
        let y = self.var();
        let mut each = d.list_of(&self.project(&y, &cdt, dt, at)?);
        if k < levels.len() {
            let item = Cx {
                focus: Val::One(y.clone(), cdt.clone()),
                index: "0".into(),
            };
            for p in &levels[k] {
                let below = self.lower(p, &item, at)?;
                each = d.concat_lists(&each, &self.expand_all(&below, k + 1, levels, dt, at)?);
            }
        }
        Ok(d.flat_map(&list, &y, &cdt, &each))
    }

    /// `x` (of type `from`) as a value of type `to`: the fields `to` has, recursively (the items
    /// of a recursive element at several depths, made one type).
    fn project(&self, x: &str, from: &DataType, to: &DataType, at: &str) -> Result<String> {
        let d = self.d;
        if from == to {
            return Ok(x.to_string());
        }
        match (from, to) {
            (DataType::Struct(ff), DataType::Struct(tf)) => {
                let mut parts = Vec::new();
                for f in tf {
                    let src = ff
                        .iter()
                        .find(|g| g.name() == f.name())
                        .ok_or_else(|| anyhow!("{at}: internal error: no field {}", f.name()))?;
                    let get = d.field(x, f.name(), src.data_type());
                    let e = self.project(&get, src.data_type(), f.data_type(), at)?;
                    parts.push((f.name().clone(), e));
                }
                let st = d.struct_of(&parts, to);
                Ok(format!(
                    "CASE WHEN {} IS NULL THEN NULL ELSE {st} END",
                    d.item(x, from)
                ))
            }
            (DataType::List(a), DataType::List(b)) => {
                let v = self.var();
                let inner = self.project(&v, a.data_type(), b.data_type(), at)?;
                let list = d.list_column(x);
                Ok(d.transform(&list, &v, a.data_type(), &inner))
            }
            (_, other) => self.cast(x, other, at),
        }
    }

    /// `lowBoundary()` / `highBoundary()` of date, dateTime or time text, as the view runner
    /// computes them ([`crate::view::fhirpath::eval::boundary`]).
    fn boundary(&self, t: &str, kind: Boundary, high: bool) -> String {
        let d = self.d;
        let s = |x: &str| d.string(x);
        let cat = |parts: &[String]| -> String {
            parts
                .iter()
                .skip(1)
                .fold(parts[0].clone(), |acc, p| d.concat_strings(&acc, p))
        };
        let pick = |lo: &str, hi: &str| s(if high { hi } else { lo });
        let date = |x: &str| -> String {
            let last_day = d.month_end(&cat(&[x.to_string(), s("-01")]));
            format!(
                "CASE length({x}) WHEN 4 THEN {} WHEN 7 THEN {} ELSE {x} END",
                cat(&[x.to_string(), pick("-01-01", "-12-31")]),
                if high {
                    last_day
                } else {
                    cat(&[x.to_string(), s("-01")])
                }
            )
        };
        let time = |c: &str| -> String {
            let part = |pos: usize, lo: &str, hi: &str| {
                format!(
                    "CASE WHEN length({c}) >= {} THEN substr({c}, {pos}, 2) ELSE {} END",
                    pos + 1,
                    pick(lo, hi)
                )
            };
            let f = d.regex_group(c, "[.]([0-9]+)", 1);
            let frac = format!(
                "CASE WHEN {f} IS NULL THEN {} WHEN length({f}) >= 3 THEN {f} ELSE rpad({f}, 3, {}) END",
                pick("000", "999"),
                pick("0", "9")
            );
            cat(&[
                format!("substr({c}, 1, 2)"),
                s(":"),
                part(4, "00", "59"),
                s(":"),
                part(7, "00", "59"),
                s("."),
                frac,
            ])
        };
        match kind {
            Boundary::Date => date(t),
            Boundary::Time => time(t),
            Boundary::DateTime | Boundary::Decimal(_) => {
                let day = date(&d.regex_group(t, "^([0-9-]+)", 1));
                let clock = d.regex_group(t, "T([0-9:.]+)", 1);
                let offset = d.regex_group(t, "T[0-9:.]+(Z|[+-][0-9:]+)$", 1);
                format!(
                    "CASE WHEN {clock} IS NULL THEN {} ELSE {} END",
                    cat(&[
                        day.clone(),
                        pick("T00:00:00.000+14:00", "T23:59:59.999-12:00")
                    ]),
                    cat(&[
                        day,
                        s("T"),
                        time(&clock),
                        format!("coalesce({offset}, {})", pick("+14:00", "-12:00")),
                    ])
                )
            }
        }
    }

    /// The id a reference text points to (as `getReferenceKey()` reads it), when its type is
    /// `want` (or any).
    fn reference_key(&self, s: &str, want: Option<&str>) -> String {
        let d = self.d;
        const TYPED: &str = "^(?:.*/)?([A-Z][A-Za-z0-9]*)/([^/?]+)(?:/_history/[^/]+)?$";
        let typed = format!(
            "CASE WHEN {s} NOT LIKE '%?%' THEN {} END",
            d.regex_group(s, TYPED, 2)
        );
        match want {
            Some(t) => format!(
                "CASE WHEN {} = {} THEN {typed} END",
                d.regex_group(s, TYPED, 1),
                d.string(t)
            ),
            // A contained resource (`#p1`) has no key of its own.
            None => format!(
                "coalesce({}, {typed})",
                d.regex_group(s, "^urn:(?:uuid|oid):(.+)$", 1)
            ),
        }
    }

    /// A column of the view: one value (an error when there are more), or the list.
    fn output(&self, v: &Val, collection: bool, dt: &DataType, at: &str) -> Result<String> {
        let d = self.d;
        let text = |e: String| -> Result<String> {
            Ok(match dt {
                DataType::Binary => d.base64(&e),
                DataType::Null => self.cast("NULL", &DataType::Utf8, at)?,
                _ => e,
            })
        };
        if collection {
            let list = self.many(v, at)?;
            return Ok(match dt {
                DataType::Binary => {
                    let w = self.var();
                    d.transform(&list, &w, dt, &d.base64(&w))
                }
                DataType::Null => format!(
                    "CAST({} AS {})",
                    d.empty_list(),
                    d.full_type(&DataType::List(std::sync::Arc::new(
                        arrow::datatypes::Field::new_list_field(DataType::Utf8, true)
                    )))
                    .expect("a list of text")
                ),
                _ => list,
            });
        }
        match v {
            Val::One(x, _) => text(x.clone()),
            Val::Many(..) | Val::Nullable(..) => {
                let l = self.many(v, at)?;
                text(format!(
                    "CASE WHEN {} > 1 THEN {} ELSE {} END",
                    d.len(&l),
                    d.error(
                        &format!(
                            "{at}: gave more than one value where one was expected (set \"collection\": true, or use first())"
                        ),
                        &d.len(&l),
                        Some(&Self::dt(v))
                    ),
                    d.at(&l, "1", &Self::dt(v))
                ))
            }
            Val::Row => self.unsupported(at, "the whole resource as a column"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sql(view: serde_json::Value, opts: &SqlOptions) -> Result<String> {
        to_sql(&ViewDefinition::from_json(&view).unwrap(), opts)
    }

    fn names_view() -> serde_json::Value {
        json!({"resource": "Patient", "select": [
            {"column": [{"name": "id", "path": "getResourceKey()"}]},
            {"forEachOrNull": "name", "column": [
                {"name": "family", "path": "family"},
                {"name": "given", "path": "given.join(' ')"},
                {"name": "i", "path": "%rowIndex"}]}]})
    }

    #[test]
    fn each_dialect_spells_lists_lambdas_and_unnesting_its_way() {
        let duck = sql(names_view(), &SqlOptions::new(Dialect::Duckdb)).unwrap();
        assert!(duck.contains("FROM \"Patient\" AS r"), "{duck}");
        assert!(
            duck.contains("list_filter(coalesce(r.\"name\", [])"),
            "{duck}"
        );
        assert!(duck.contains("LEFT JOIN LATERAL (SELECT unnest("), "{duck}");
        assert!(duck.contains("array_to_string("), "{duck}");
        assert!(duck.contains("coalesce(u0.e.i, 0) AS \"i\""), "{duck}");

        let spark = sql(names_view(), &SqlOptions::new(Dialect::Spark)).unwrap();
        assert!(spark.contains("FROM `Patient` AS r"), "{spark}");
        assert!(
            spark.contains("filter(coalesce(r.`name`, array())"),
            "{spark}"
        );
        assert!(spark.contains("LATERAL VIEW OUTER posexplode("), "{spark}");
        assert!(spark.contains("array_join("), "{spark}");
        assert!(!spark.contains("list_"), "{spark}");

        let trino = sql(names_view(), &SqlOptions::new(Dialect::Trino)).unwrap();
        assert!(
            trino.contains("filter(coalesce(r.\"name\", ARRAY[])"),
            "{trino}"
        );
        assert!(
            trino.contains("LEFT JOIN UNNEST(transform(")
                && trino.contains("WITH ORDINALITY AS u0(v, i) ON TRUE"),
            "{trino}"
        );
        assert!(
            trino.contains("coalesce(CAST(u0.i AS INTEGER) - 1, 0) AS \"i\""),
            "{trino}"
        );

        // BigQuery has no lambdas: array subqueries that keep the order.
        let bq = sql(names_view(), &SqlOptions::new(Dialect::Bigquery)).unwrap();
        assert!(bq.contains("FROM `Patient` AS r"), "{bq}");
        assert!(
            bq.contains("ARRAY(SELECT x_0 FROM UNNEST(coalesce(r.`name`, [])) AS x_0 WITH OFFSET AS x_0_o WHERE x_0 IS NOT NULL ORDER BY x_0_o)"),
            "{bq}"
        );
        assert!(bq.contains("LEFT JOIN UNNEST("), "{bq}");
        assert!(bq.contains("ARRAY_TO_STRING("), "{bq}");
        assert!(!bq.contains("->"), "{bq}");
    }

    #[test]
    fn snowflake_reads_the_semi_structured_columns_with_casts() {
        let sf = sql(names_view(), &SqlOptions::new(Dialect::Snowflake)).unwrap();
        assert!(sf.contains("FROM \"Patient\" AS r"), "{sf}");
        // Nested columns are OBJECT / ARRAY: fields read with GET, primitives cast from VARIANT.
        assert!(
            sf.contains("ARRAY_COMPACT(coalesce(AS_ARRAY(r.\"name\"), []))"),
            "{sf}"
        );
        assert!(
            sf.contains("CAST(GET(STRIP_NULL_VALUE(u0.value), 'family') AS VARCHAR) AS \"family\""),
            "{sf}"
        );
        // A list of text joined: typed lambda parameters make the VARIANT items text.
        assert!(sf.contains("ARRAY_TO_STRING(TRANSFORM("), "{sf}");
        assert!(sf.contains(" VARCHAR -> "), "{sf}");
        // forEachOrNull: a lateral FLATTEN that keeps a row for an empty list.
        assert!(
            sf.contains(", LATERAL FLATTEN(input => ") && sf.contains(", outer => TRUE) AS u0"),
            "{sf}"
        );
        assert!(
            sf.contains("CAST(coalesce(u0.index, 0) AS INTEGER) AS \"i\""),
            "{sf}"
        );
        assert!(!sf.contains("list_") && !sf.contains("->  "), "{sf}");

        // Where the items are structs, the parameter stays VARIANT.
        let v = json!({"resource": "Patient", "select": [{"column": [
            {"name": "official", "path": "name.where(use = 'official').family.first()"}]}]});
        let sf = sql(v, &SqlOptions::new(Dialect::Snowflake)).unwrap();
        assert!(
            sf.contains("CAST(GET(x_0, 'use') AS VARCHAR) = 'official'"),
            "{sf}"
        );
        assert!(
            sf.contains("FILTER(coalesce(AS_ARRAY(r.\"name\"), []), x_0 -> "),
            "{sf}"
        );
        // first(): the 0-based GET of the item, cast to the column's type.
        assert!(sf.contains("CAST(GET(ARRAY_COMPACT("), "{sf}");
        assert!(sf.contains(", 1 - 1) AS VARCHAR) AS \"official\""), "{sf}");
    }

    #[test]
    fn snowflake_has_no_error_function_so_a_failing_conversion_names_the_place() {
        let v = json!({"resource": "Patient", "select": [{"column": [
            {"name": "family", "path": "name.family"}]}]});
        let sf = sql(v, &SqlOptions::new(Dialect::Snowflake)).unwrap();
        // Cast to the column's type, made to depend on the row (not folded while compiling).
        assert!(
            sf.contains("CAST(TO_NUMBER('select[0].column[0].path: gave more than one value"),
            "{sf}"
        );
        assert!(
            sf.contains("|| coalesce(LEFT(TO_VARCHAR(ARRAY_SIZE("),
            "{sf}"
        );
        assert!(sf.contains("), 0), '')) AS VARCHAR)"), "{sf}");
    }

    #[test]
    fn text_literals_are_escaped_per_dialect() {
        assert_eq!(Dialect::Duckdb.string("O'Brien \\ x"), "'O''Brien \\ x'");
        assert_eq!(Dialect::Spark.string("O'Brien \\ x"), "'O\\'Brien \\\\ x'");
        assert_eq!(Dialect::Duckdb.ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(Dialect::Spark.ident("a`b"), "`a``b`");
    }

    #[test]
    fn tables_and_create_view() {
        let mut opts = SqlOptions::new(Dialect::Spark);
        opts.tables
            .insert("Patient".into(), "fhir.patient_table".into());
        opts.create_view = Some("analytics.names".into());
        let s = sql(names_view(), &opts).unwrap();
        assert!(
            s.starts_with("CREATE OR REPLACE VIEW `analytics`.`names` AS\nSELECT"),
            "{s}"
        );
        assert!(s.contains("FROM `fhir`.`patient_table` AS r"), "{s}");
    }

    #[test]
    fn a_single_column_with_several_values_fails_in_the_engine() {
        let v = json!({"resource": "Patient", "select": [{"column": [
            {"name": "family", "path": "name.family"}]}]});
        let duck = sql(v.clone(), &SqlOptions::new(Dialect::Duckdb)).unwrap();
        assert!(duck.contains("error('select[0].column[0].path: gave more than one value"));
        let spark = sql(v.clone(), &SqlOptions::new(Dialect::Spark)).unwrap();
        assert!(spark.contains("raise_error('select[0].column[0].path: gave more than one value"));
        let trino = sql(v.clone(), &SqlOptions::new(Dialect::Trino)).unwrap();
        assert!(trino.contains("fail('select[0].column[0].path: gave more than one value"));
        let bq = sql(v.clone(), &SqlOptions::new(Dialect::Bigquery)).unwrap();
        assert!(bq.contains("ERROR('select[0].column[0].path: gave more than one value"));
        let sf = sql(v, &SqlOptions::new(Dialect::Snowflake)).unwrap();
        assert!(sf.contains("TO_NUMBER('select[0].column[0].path: gave more than one value"));
    }

    #[test]
    fn what_a_dialect_cannot_express_names_the_place_and_the_dialect() {
        let v = json!({"resource": "Patient", "select": [{"forEach": "address", "column": [
            {"name": "lat", "path": "extension('http://hl7.org/fhir/StructureDefinition/geolocation').extension('latitude').value.ofType(decimal)"}]}]});
        let e = format!(
            "{:#}",
            sql(v, &SqlOptions::new(Dialect::Spark)).unwrap_err()
        );
        assert!(e.contains("select[0]"), "{e}");
        assert!(e.contains("spark SQL"), "{e}");
        assert!(e.contains("_overflow"), "{e}");
    }

    #[test]
    fn complex_columns_and_primitive_elements_are_refused_by_name() {
        // `view` gives these from the resource's JSON; an engine's struct would leave out
        // what `_overflow` keeps, so every dialect refuses them.
        for (path, says) in [
            ("address.first()", "a column of a complex type"),
            ("birthDate.first().extension.url", "after a function"),
            ("name.given.where(id = 'g1')", "after a function"),
        ] {
            let v = json!({"resource": "Patient", "select": [{"column": [
                {"name": "c", "path": path, "collection": true}]}]});
            for d in [Dialect::Duckdb, Dialect::Spark, Dialect::Bigquery] {
                let e = format!("{:#}", sql(v.clone(), &SqlOptions::new(d)).unwrap_err());
                assert!(e.contains("select[0].column[0].path"), "{path}: {e}");
                assert!(e.contains(says), "{path}: {e}");
            }
        }
    }

    #[test]
    fn repeat_is_bounded_by_the_typed_depth_with_a_guard() {
        let v = json!({"resource": "Questionnaire", "select": [{"repeat": ["item"], "column": [
            {"name": "link", "path": "linkId"}]}]});
        let duck = sql(v.clone(), &SqlOptions::new(Dialect::Duckdb)).unwrap();
        assert!(
            duck.contains("regexp_matches(r.\"_overflow\", '/(item)\":')"),
            "{duck}"
        );
        // Trino projects the items of each depth to one ROW type, spelled out.
        let trino = sql(v.clone(), &SqlOptions::new(Dialect::Trino)).unwrap();
        assert!(trino.contains("regexp_like(r.\"_overflow\""), "{trino}");
        assert!(trino.contains("CAST(ROW("), "{trino}");
        assert!(
            duck.contains("nests item deeper than the typed columns"),
            "{duck}"
        );
        // Snowflake: REGEXP_LIKE would match the whole text; the guard's error is a list.
        let sf = sql(v, &SqlOptions::new(Dialect::Snowflake)).unwrap();
        assert!(
            sf.contains("(REGEXP_INSTR(r.\"_overflow\", '/(item)\":') > 0)"),
            "{sf}"
        );
        assert!(
            sf.contains("THEN ARRAY_CONSTRUCT(TO_NUMBER('select[0].repeat[0]: "),
            "{sf}"
        );
        assert!(sf.contains("OBJECT_CONSTRUCT('id', "), "{sf}");
    }
}
