//! Type-directed compilation of FHIRPath to [`Node`]s, against the spec-driven schema: every
//! path is checked against the FHIR model before any data is read, so a misspelt element or a
//! `where` that is not boolean is an error up front.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;

use crate::schema::model::Kind;
use crate::schema::node::{struct_fields, Member, Prim, Shape, DECIMAL_PRECISION, DECIMAL_SCALE};
use crate::schema::FhirVersion;

use super::eval::{Boundary, Conversion, JsonKind, MathFn, Node, StrFn};
use super::parse::{Ast, Op};

/// The static type of a FHIRPath collection's items.
#[derive(Clone, Debug)]
pub enum Ty {
    /// The resource (`root`), a complex datatype or a backbone element.
    Object {
        fhir: String,
        members: Arc<Vec<Member>>,
        root: bool,
    },
    /// A primitive, by its FHIR type name, and its Arrow type.
    Prim { fhir: String, dt: DataType },
    /// An object read from JSON text (the resource's JSON, or an item past the typed schema's
    /// bounds): checked against the FHIR definitions (`def`, the elements under `prefix`), with no
    /// bound on depth.
    Json {
        fhir: String,
        def: String,
        prefix: String,
        root: bool,
    },
    /// A choice element (`value[x]`) before `ofType()`: per alternative, the FHIR type, the node
    /// that reads it (None: beyond the typed schema) and its type.
    Choice {
        alts: Vec<(String, Option<Node>, Ty)>,
    },
    /// `{}`, or `ofType()` of a type the element cannot have.
    Nothing,
}

impl Ty {
    pub fn data_type(&self) -> DataType {
        match self {
            Ty::Object { members, .. } => DataType::Struct(struct_fields(members)),
            Ty::Prim { dt, .. } => dt.clone(),
            Ty::Json { .. } => DataType::Utf8,
            Ty::Choice { .. } | Ty::Nothing => DataType::Null,
        }
    }

    pub fn prim(fhir: &str, dt: DataType) -> Ty {
        Ty::Prim {
            fhir: fhir.into(),
            dt,
        }
    }

    fn is_boolean(&self) -> bool {
        matches!(self, Ty::Nothing)
            || matches!(
                self,
                Ty::Prim {
                    dt: DataType::Boolean,
                    ..
                }
            )
    }

    /// The type's name, for messages.
    pub fn describe(&self) -> String {
        match self {
            Ty::Object { fhir, .. } | Ty::Prim { fhir, .. } | Ty::Json { fhir, .. } => fhir.clone(),
            Ty::Choice { alts, .. } => format!(
                "a choice of {}",
                alts.iter()
                    .map(|a| a.0.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Ty::Nothing => "empty".into(),
        }
    }
}

/// Names a compiled expression can use: the view's constants, and the resource columns read.
///
/// A scope compiles either against the typed columns (`root` is a [`Ty::Object`]) or against
/// the resource's JSON (`root` is a [`Ty::Json`]: typed columns and `_overflow` put back
/// together). A typed compile that reaches past the typed schema's bounds fails and sets
/// `beyond`: the caller compiles again against the JSON.
pub struct Scope<'a> {
    /// The FHIR version whose definitions paths past the typed columns are checked against.
    pub version: FhirVersion,
    pub constants: &'a HashMap<String, (ScalarValue, Ty)>,
    pub root: Ty,
    /// Top-level columns of the resource that the compiled expressions read.
    pub root_fields: RefCell<BTreeSet<String>>,
    /// Set when a typed compile failed because a path leaves the typed schema.
    pub beyond: Cell<bool>,
    /// Set when a JSON compile reads the resource (`%resource`, or a path from the root).
    pub reads_root: Cell<bool>,
    /// The resource's elements (JSON names) a JSON compile reads: only they are put together.
    pub json_fields: RefCell<BTreeSet<String>>,
}

pub type CompileResult<T> = Result<T, String>;

fn decimal_type() -> DataType {
    DataType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE)
}

pub fn member_ty(m: &Member) -> Ty {
    match &m.shape {
        Shape::Prim(p) => Ty::prim(&m.fhir_type, p.data_type()),
        Shape::Struct(children) => Ty::Object {
            fhir: m.fhir_type.clone(),
            members: children.clone(),
            root: false,
        },
        Shape::Json => Ty::prim("Resource", DataType::Utf8),
    }
}

impl Scope<'_> {
    /// Compiles `ast` for items of type `focus`.
    pub fn compile(&self, ast: &Ast, focus: &Ty) -> CompileResult<(Node, Ty)> {
        match ast {
            Ast::Empty => Ok((Node::Lit(ScalarValue::Null), Ty::Nothing)),
            Ast::Str(s) => Ok((
                Node::Lit(ScalarValue::Utf8(Some(s.clone()))),
                Ty::prim("string", DataType::Utf8),
            )),
            Ast::Int(i) => {
                let v = i32::try_from(*i).map_err(|_| format!("integer {i} is out of range"))?;
                Ok((
                    Node::Lit(ScalarValue::Int32(Some(v))),
                    Ty::prim("integer", DataType::Int32),
                ))
            }
            Ast::Dec(text) => Ok((decimal_lit(text)?, Ty::prim("decimal", decimal_type()))),
            Ast::Bool(b) => Ok((
                Node::Lit(ScalarValue::Boolean(Some(*b))),
                Ty::prim("boolean", DataType::Boolean),
            )),
            Ast::DateTime(t) => Ok((
                Node::Lit(ScalarValue::Utf8(Some(t.clone()))),
                Ty::prim(
                    if t.contains('T') { "dateTime" } else { "date" },
                    DataType::Utf8,
                ),
            )),
            Ast::Time(t) => Ok((
                Node::Lit(ScalarValue::Utf8(Some(t.clone()))),
                Ty::prim("time", DataType::Utf8),
            )),
            Ast::Var(name) => match name.as_str() {
                "rowIndex" => Ok((Node::RowIndex, Ty::prim("integer", DataType::Int32))),
                "resource" | "rootResource" => {
                    self.reads_root.set(true);
                    Ok((Node::Root, self.root.clone()))
                }
                _ => match self.constants.get(name) {
                    Some((v, ty)) => Ok((Node::Lit(v.clone()), ty.clone())),
                    None => match environment(name) {
                        Some(url) => Ok((
                            Node::Lit(ScalarValue::Utf8(Some(url))),
                            Ty::prim("string", DataType::Utf8),
                        )),
                        None => Err(format!("%{name} is not a constant of this view")),
                    },
                },
            },
            Ast::This => Ok((Node::Focus, focus.clone())),
            // `type().name`, `type().namespace`: the static type of the input (System for
            // literals, FHIR for elements), one per item.
            Ast::Member(Some(call), part)
                if matches!(&**call, Ast::Call(_, f, a) if f == "type" && a.is_empty())
                    && (part == "name" || part == "namespace") =>
            {
                let Ast::Call(src, _, _) = &**call else {
                    unreachable!("a call")
                };
                let (node, ty) = match src.as_deref() {
                    Some(s) => self.compile(s, focus)?,
                    None => (Node::Focus, focus.clone()),
                };
                let literal = matches!(
                    src.as_deref(),
                    Some(
                        Ast::Int(_)
                            | Ast::Dec(_)
                            | Ast::Str(_)
                            | Ast::Bool(_)
                            | Ast::DateTime(_)
                            | Ast::Time(_)
                    )
                );
                let (namespace, name) = match &ty {
                    Ty::Prim { fhir, .. } if literal => {
                        let mut n = fhir.clone();
                        n[..1].make_ascii_uppercase();
                        ("System", n)
                    }
                    Ty::Prim { fhir, .. } | Ty::Object { fhir, .. } | Ty::Json { fhir, .. } => {
                        ("FHIR", fhir.clone())
                    }
                    Ty::Nothing => return Ok((Node::Lit(ScalarValue::Null), Ty::Nothing)),
                    other => return Err(format!("type() of {}", other.describe())),
                };
                let text = if part == "name" {
                    name
                } else {
                    namespace.to_string()
                };
                // The input's items, each replaced by the text.
                let (each, _) = self.call(node, ty, "select", &[Ast::Str(text)])?;
                Ok((each, Ty::prim("string", DataType::Utf8)))
            }
            // A primitive's id or extensions after a function (`birthDate.first().extension`):
            // the primitive's items read as elements, the same functions applied to them.
            Ast::Member(Some(src), name)
                if (name == "id" || name == "extension")
                    && matches!(self.root, Ty::Json { .. }) =>
            {
                let (node, ty) = self.compile(src, focus)?;
                match self.member(node, &ty, name) {
                    Err(e) if matches!(ty, Ty::Prim { .. }) => match element_chain(src) {
                        Some(chain) => {
                            let (n, t) = self.compile(&chain, focus).map_err(|_| e)?;
                            self.member(n, &t, name)
                        }
                        None => Err(e),
                    },
                    other => other,
                }
            }
            Ast::Member(src, name) => {
                let (node, ty) = match src {
                    Some(s) => self.compile(s, focus)?,
                    None => {
                        // `Patient.name`: a path may start with the resource type.
                        if let Ty::Object {
                            fhir, root: true, ..
                        }
                        | Ty::Json {
                            fhir, root: true, ..
                        } = focus
                        {
                            if fhir == name {
                                return Ok((Node::Focus, focus.clone()));
                            }
                        }
                        (Node::Focus, focus.clone())
                    }
                };
                self.member(node, &ty, name)
            }
            Ast::Index(src, idx) => {
                let (node, ty) = self.compile(src, focus)?;
                self.no_choice(&ty, "[]")?;
                let (i, ity) = self.compile(idx, focus)?;
                if !matches!(
                    &ity,
                    Ty::Prim {
                        dt: DataType::Int32,
                        ..
                    }
                ) {
                    return Err(format!(
                        "an index must be an integer, not {}",
                        ity.describe()
                    ));
                }
                Ok((Node::Index(Box::new(node), Box::new(i)), ty))
            }
            // `combine()` and `union()`: the argument is relative to the same focus as the
            // input, as the two sides of `|` are.
            Ast::Call(src, name, args)
                if matches!(
                    name.as_str(),
                    "exclude" | "intersect" | "subsetOf" | "supersetOf"
                ) && args.len() == 1 =>
            {
                let (ln, lt) = match src.as_deref() {
                    Some(s) => self.compile(s, focus)?,
                    None => (Node::Focus, focus.clone()),
                };
                let (rn, rt) = self.compile(&args[0], focus)?;
                // Of one type, as the sides of `|` are.
                let Node::Union(l, r) = self.binary(Op::Union, ln, lt.clone(), rn, rt.clone())?.0
                else {
                    unreachable!("a union")
                };
                let ty = match lt {
                    Ty::Nothing => rt,
                    t => t,
                };
                Ok(match name.as_str() {
                    "exclude" | "intersect" => (
                        Node::Filter {
                            src: l,
                            other: r,
                            keep: name == "intersect",
                            distinct: name == "intersect",
                        },
                        ty,
                    ),
                    "subsetOf" => (Node::SubsetOf(l, r), Ty::prim("boolean", DataType::Boolean)),
                    _ => (Node::SubsetOf(r, l), Ty::prim("boolean", DataType::Boolean)),
                })
            }
            Ast::Call(src, name, args)
                if matches!(name.as_str(), "combine" | "union") && args.len() == 1 =>
            {
                let (ln, lt) = match src.as_deref() {
                    Some(s) => self.compile(s, focus)?,
                    None => (Node::Focus, focus.clone()),
                };
                let (rn, rt) = self.compile(&args[0], focus)?;
                let (node, ty) = self.binary(Op::Union, ln, lt, rn, rt)?;
                match (name.as_str(), node) {
                    ("combine", Node::Union(l, r)) => Ok((Node::Combine(l, r), ty)),
                    (_, node) => Ok((node, ty)),
                }
            }
            // `is()` of a System type (`Boolean`, `System.String`, `System.Patient`) on an
            // element of the resource: its elements have FHIR types (`FHIR.boolean`), so it is
            // not one (false; empty for no element). Literals and function results are System
            // values, tested as usual.
            Ast::Call(Some(src), name, args)
                if name == "is"
                    && args.len() == 1
                    && system_only(&args[0])
                    && element_path(src) =>
            {
                self.known_type(name, &args[0])?;
                let (node, ty) = self.compile(src, focus)?;
                self.unless_empty(node, ty, Node::Lit(ScalarValue::Boolean(Some(false))))
            }
            // A decimal literal's text keeps the places it was written with (`1.0`); other
            // decimals have the view's scale, written without trailing zeros.
            Ast::Call(Some(src), name, args)
                if name == "toString" && args.is_empty() && matches!(&**src, Ast::Dec(_)) =>
            {
                let Ast::Dec(text) = &**src else {
                    unreachable!("a decimal literal")
                };
                Ok((
                    Node::Lit(ScalarValue::Utf8(Some(text.clone()))),
                    Ty::prim("string", DataType::Utf8),
                ))
            }
            // A boundary is per item and reads the text an element was written with: taken
            // before a function that only picks items by position (`value.first()
            // .lowBoundary(1)` is `value.lowBoundary(1).first()`), it reaches the element.
            Ast::Call(Some(src), name, args)
                if (name == "lowBoundary" || name == "highBoundary")
                    && matches!(&**src, Ast::Call(Some(_), f, _) if POSITIONAL.contains(&f.as_str())) =>
            {
                let Ast::Call(Some(inner), f, fargs) = &**src else {
                    unreachable!("a positional function")
                };
                let boundary = Ast::Call(Some(inner.clone()), name.clone(), args.clone());
                self.compile(
                    &Ast::Call(Some(Box::new(boundary)), f.clone(), fargs.clone()),
                    focus,
                )
            }
            // `x.iif(...)`: its arguments relative to the one item of x.
            Ast::Call(Some(src), name, args) if name == "iif" => {
                let (node, ty) = self.compile(src, focus)?;
                self.no_choice(&ty, "iif()")?;
                let (body, bt) = self.compile(&Ast::Call(None, name.clone(), args.clone()), &ty)?;
                Ok((Node::With(Box::new(node), Box::new(body)), bt))
            }
            // `iif()` at the start of an expression: its arguments over the same focus.
            Ast::Call(None, name, args) if name == "iif" => {
                if !(2..=3).contains(&args.len()) {
                    return Err(format!("iif() takes 2 or 3 arguments, not {}", args.len()));
                }
                let (c, ct) = self.compile(&args[0], focus)?;
                if !ct.is_boolean() {
                    return Err(format!(
                        "the condition of iif() is {}, not a boolean",
                        ct.describe()
                    ));
                }
                let (a, at) = self.compile(&args[1], focus)?;
                let (b, bt) = match args.get(2) {
                    Some(x) => self.compile(x, focus)?,
                    None => (Node::Lit(ScalarValue::Null), Ty::Nothing),
                };
                let ty = one_type("iif()", &at, &bt)?;
                let dt = ty.data_type();
                let c = cast_to(c, &ct, &DataType::Boolean);
                Ok((
                    Node::Iif(
                        Box::new(c),
                        Box::new(cast_to(a, &at, &dt)),
                        Box::new(cast_to(b, &bt, &dt)),
                    ),
                    ty,
                ))
            }
            // `given.where(id = 'g1')`: criteria on the id or extensions of primitive items
            // are taken over the items as elements; the values of those that pass are given.
            Ast::Call(Some(src), name, args)
                if name == "where" && matches!(self.root, Ty::Json { .. }) =>
            {
                let (node, ty) = self.compile(src, focus)?;
                match self.call(node, ty.clone(), name, args) {
                    Err(e) if matches!(ty, Ty::Prim { .. }) => {
                        let Some(chain) = element_chain(src) else {
                            return Err(e);
                        };
                        let (n, t) = self.compile(&chain, focus).map_err(|_| e.clone())?;
                        let (w, _) = self.call(n, t, name, args).map_err(|_| e)?;
                        let Ty::Prim { fhir, .. } = ty else {
                            unreachable!("a primitive")
                        };
                        let p = Prim::of(&fhir);
                        Ok((
                            Node::JsonField(Box::new(w), "value".into(), JsonKind::Prim(p)),
                            Ty::prim(&fhir, p.data_type()),
                        ))
                    }
                    other => other,
                }
            }
            Ast::Call(src, name, args) => {
                let (node, ty) = match src.as_deref() {
                    // A decimal literal's boundaries and precision come from its text.
                    Some(Ast::Dec(text)) if name.ends_with("Boundary") || name == "precision" => (
                        Node::Lit(ScalarValue::Utf8(Some(text.clone()))),
                        Ty::prim("decimal", decimal_type()),
                    ),
                    Some(Ast::Neg(x))
                        if name.ends_with("Boundary") && matches!(**x, Ast::Dec(_)) =>
                    {
                        let Ast::Dec(text) = &**x else {
                            unreachable!("a decimal")
                        };
                        (
                            Node::Lit(ScalarValue::Utf8(Some(format!("-{text}")))),
                            Ty::prim("decimal", decimal_type()),
                        )
                    }
                    Some(s) => self.compile(s, focus)?,
                    None => (Node::Focus, focus.clone()),
                };
                self.call(node, ty, name, args)
            }
            // A date or date-time plus or minus a time-valued quantity.
            Ast::Binary(op @ (Op::Add | Op::Sub), l, r) if matches!(**r, Ast::Quantity(..)) => {
                let Ast::Quantity(n, unit) = &**r else {
                    unreachable!("a quantity")
                };
                let (ln, lt) = self.compile(l, focus)?;
                let dated = matches!(&lt, Ty::Prim { fhir, .. } if matches!(fhir.as_str(), "date" | "dateTime" | "instant"));
                if !dated {
                    return Err(format!(
                        "{op:?} of {} and the quantity {n} '{unit}': only a date or date-time \
                         takes a duration",
                        lt.describe()
                    ));
                }
                let amount: f64 = n.parse().map_err(|_| format!("the number {n}"))?;
                let amount = if *op == Op::Sub { -amount } else { amount };
                if crate::view::fhirpath::eval::add_duration("2000-01-01", 1.0, unit).is_none() {
                    return Err(format!("'{unit}' is not a unit of time"));
                }
                let src = cast_to(ln, &lt, &DataType::Utf8);
                let fhir = match &lt {
                    Ty::Prim { fhir, .. } if fhir == "date" => "date",
                    _ => "dateTime",
                };
                Ok((
                    Node::DateAdd(Box::new(src), amount, unit.clone()),
                    Ty::prim(fhir, DataType::Utf8),
                ))
            }
            Ast::Quantity(n, unit) => Ok((
                // Calendar units as written (`1 week`), UCUM codes quoted (`1 'wk'`).
                Node::Lit(ScalarValue::Utf8(Some(
                    match crate::view::fhirpath::parse::CALENDAR_UNITS.contains(&unit.as_str()) {
                        true => format!("{n} {unit}"),
                        false => format!("{n} '{unit}'"),
                    },
                ))),
                Ty::prim("Quantity", DataType::Utf8),
            )),
            Ast::Binary(op, l, r) => {
                let (ln, lt) = self.compile(l, focus)?;
                let (rn, rt) = self.compile(r, focus)?;
                self.binary(*op, ln, lt, rn, rt)
            }
            Ast::Neg(x) => {
                let (n, t) = self.compile(x, focus)?;
                self.binary(
                    Op::Sub,
                    Node::Lit(ScalarValue::Int32(Some(0))),
                    Ty::prim("integer", DataType::Int32),
                    n,
                    t,
                )
            }
        }
    }

    fn no_choice(&self, ty: &Ty, what: &str) -> CompileResult<()> {
        if let Ty::Choice { alts, .. } = ty {
            let names: Vec<&str> = alts.iter().map(|a| a.0.as_str()).collect();
            return Err(format!(
                "{what} on a choice element: pick a type first with ofType({})",
                names.join("|")
            ));
        }
        Ok(())
    }

    /// Whether items of `ty` can be there with none of their typed columns: a complex type
    /// cut short by the schema's bounds (a CodeableConcept three datatypes deep keeps its
    /// `coding` in `_overflow`) with no typed element the specification requires (an
    /// Extension's `url`). Such items are seen whole only in the resource's JSON. An item with
    /// nothing but extensions is not looked for (see below).
    fn hides_items(&self, ty: &Ty) -> bool {
        // The resource itself is always there.
        let Ty::Object {
            fhir,
            members,
            root: false,
        } = ty
        else {
            return false;
        };
        // Extensions alone are left out: a datatype two deep holds its `extension` in
        // `_overflow` (a Coding inside a CodeableConcept), and reading every such item from the
        // JSON for an item with nothing but extensions would slow every view that filters them.
        let hidden = |m: &Member| m.cut && m.name != "extension" && m.name != "modifierExtension";
        if !members.iter().any(hidden) {
            return false;
        }
        match self.version.model().get(fhir) {
            // Backbone elements are cut only where they recur (`item.item`): an item holds
            // more than its nested items.
            _ if fhir == "BackboneElement" || fhir == "Element" => false,
            Some(td) => !td.elements.iter().any(|e| {
                e.min >= 1
                    && e.parent().is_empty()
                    && members.iter().any(|m| !m.cut && m.name == e.name())
            }),
            None => true,
        }
    }

    /// A compiled expression's value as a whole: past the typed columns when its items may
    /// hide there (see [`Scope::hides_items`]).
    pub fn whole(&self, ty: &Ty) -> CompileResult<()> {
        match self.hides_items(ty) {
            true => self.beyond(format!("a {} as a whole", ty.describe())),
            false => Ok(()),
        }
    }

    /// The boolean `value` of a type test, empty for an empty input (`exists()` reads a
    /// choice's alternatives).
    fn unless_empty(&self, node: Node, ty: Ty, value: Node) -> CompileResult<(Node, Ty)> {
        let (input, _) = self.call(node, ty, "exists", &[])?;
        Ok((
            Node::Iif(
                Box::new(input),
                Box::new(value),
                Box::new(Node::Lit(ScalarValue::Boolean(None))),
            ),
            Ty::prim("boolean", DataType::Boolean),
        ))
    }

    /// Fails a typed compile that reaches past the typed schema: the caller compiles again
    /// against the resource's JSON.
    fn beyond<T>(&self, what: String) -> CompileResult<T> {
        self.beyond.set(true);
        Err(format!("{what} is beyond the typed schema"))
    }

    fn member(&self, node: Node, ty: &Ty, name: &str) -> CompileResult<(Node, Ty)> {
        // A primitive read as its elements (see [`element_chain`]).
        if let Some(name) = name.strip_prefix(ELEMENTS) {
            return match self.member(node, ty, name)? {
                (
                    Node::JsonField(src, field, JsonKind::Prim(_) | JsonKind::Text),
                    Ty::Prim { fhir, .. },
                ) => Ok((
                    Node::JsonField(src, field, JsonKind::Element),
                    Ty::Json {
                        fhir,
                        def: "Element".into(),
                        prefix: String::new(),
                        root: false,
                    },
                )),
                _ => Err(format!("'{name}' is not a primitive read from JSON")),
            };
        }
        let (fhir, members, root) = match ty {
            Ty::Object {
                fhir,
                members,
                root,
            } => (fhir, members, *root),
            Ty::Json {
                def, prefix, root, ..
            } => {
                let (node, t) = json_member(self.version, node, def, prefix, name, ty)?;
                if *root {
                    let mut f = self.json_fields.borrow_mut();
                    match &t {
                        Ty::Choice { alts } => {
                            for (_, n, _) in alts {
                                if let Some(Node::JsonField(_, json_name, _)) = n {
                                    f.insert(json_name.clone());
                                }
                            }
                        }
                        _ => {
                            f.insert(name.to_string());
                        }
                    }
                }
                return Ok((node, t));
            }
            Ty::Nothing => return Ok((Node::Lit(ScalarValue::Null), Ty::Nothing)),
            // A member of a choice (`value.unit`): that of the alternatives that have it, as
            // FHIRPath reads the value whatever its type; they must agree on the member's type.
            Ty::Choice { alts } => {
                let mut found: Vec<(Node, Ty)> = Vec::new();
                for (t, n, at) in alts {
                    if !matches!(at, Ty::Object { .. } | Ty::Json { .. }) && n.is_some() {
                        continue;
                    }
                    match n {
                        // Past the typed columns: only if the type has the member at all.
                        None if self.version.model().type_at(t, name).is_some() => {
                            return self.beyond(format!("{t}.{name}"))
                        }
                        None => {}
                        Some(n) => {
                            if let Ok(r) = self.member(n.clone(), at, name) {
                                found.push(r);
                            }
                        }
                    }
                }
                let agree = found
                    .windows(2)
                    .all(|w| w[0].1.data_type() == w[1].1.data_type());
                if found.is_empty() || !agree {
                    self.no_choice(ty, &format!("'.{name}'"))?;
                }
                let (mut out, out_ty) = found.remove(0);
                for (n, _) in found {
                    out = Node::Combine(Box::new(out), Box::new(n));
                }
                return Ok((out, out_ty));
            }
            Ty::Prim { fhir, .. } if name == "extension" || name == "id" => {
                // A primitive's id and extensions are in `_name` beside it: in JSON.
                return match node {
                    Node::JsonField(src, field, JsonKind::Prim(_) | JsonKind::Text) => {
                        let element = Ty::Json {
                            fhir: "Element".into(),
                            def: "Element".into(),
                            prefix: String::new(),
                            root: false,
                        };
                        let under = Node::JsonField(src, format!("_{field}"), JsonKind::Object);
                        self.member(under, &element, name)
                    }
                    _ if matches!(self.root, Ty::Object { .. }) => {
                        self.beyond(format!("the {name} of a {fhir}"))
                    }
                    _ => Err(format!(
                        "'{name}' of a {fhir} is reached from the element that holds it \
                         (name.given.extension), not after a function"
                    )),
                };
            }
            Ty::Prim { fhir, .. } => {
                return Err(format!(
                    "'{name}' is not an element of the primitive {fhir}"
                ))
            }
        };
        if let Some(m) = members.iter().find(|m| m.name == name) {
            if m.cut {
                return self.beyond(format!("{fhir}.{name}"));
            }
            if root {
                self.root_fields.borrow_mut().insert(name.to_string());
            }
            return Ok((Node::Field(Box::new(node), name.to_string()), member_ty(m)));
        }
        // A type beyond the schema's bounds keeps its place with no column.
        let alts: Vec<(String, Option<Node>, Ty)> = members
            .iter()
            .filter(|m| is_choice_of(&m.name, name, &m.fhir_type))
            .map(|m| match m.cut {
                false => (
                    m.fhir_type.clone(),
                    Some(Node::Field(Box::new(node.clone()), m.name.clone())),
                    member_ty(m),
                ),
                true => (m.fhir_type.clone(), None, Ty::Nothing),
            })
            .collect();
        if !alts.is_empty() {
            if root {
                let mut rf = self.root_fields.borrow_mut();
                for m in members.iter().filter(|m| !m.cut) {
                    if is_choice_of(&m.name, name, &m.fhir_type) {
                        rf.insert(m.name.clone());
                    }
                }
            }
            return Ok((Node::Lit(ScalarValue::Null), Ty::Choice { alts }));
        }
        Err(format!("{fhir} has no element '{name}'"))
    }

    fn call(&self, node: Node, ty: Ty, name: &str, args: &[Ast]) -> CompileResult<(Node, Ty)> {
        // A function sees the items themselves: all of them only in JSON when they may hide.
        self.whole(&ty)?;
        let arity = |n: std::ops::RangeInclusive<usize>| {
            if n.contains(&args.len()) {
                Ok(())
            } else {
                Err(format!(
                    "{name}() takes {n:?} arguments, not {}",
                    args.len()
                ))
            }
        };
        let boolean = Ty::prim("boolean", DataType::Boolean);
        let b = Box::new(node.clone());
        match name {
            "where" => {
                arity(1..=1)?;
                self.no_choice(&ty, "where()")?;
                let (cond, ct) = self.compile(&args[0], &ty)?;
                if !ct.is_boolean() {
                    return Err(format!(
                        "the condition of where() is {}, not a boolean",
                        ct.describe()
                    ));
                }
                Ok((Node::Where(b, Box::new(cond)), ty))
            }
            "exists" | "empty" => {
                arity(0..=1)?;
                let (node, ty) = if args.len() == 1 {
                    self.call(node, ty, "where", args)?
                } else {
                    (node, ty)
                };
                let exists = match &ty {
                    Ty::Choice { alts } if alts.iter().any(|a| a.1.is_none()) => {
                        return self.beyond("a value of a type".into())
                    }
                    Ty::Choice { alts } => {
                        Node::AnyExists(alts.iter().filter_map(|a| a.1.clone()).collect())
                    }
                    _ => Node::Exists(Box::new(node)),
                };
                Ok((
                    if name == "exists" {
                        exists
                    } else {
                        Node::Not(Box::new(exists))
                    },
                    boolean,
                ))
            }
            "count" => {
                arity(0..=0)?;
                self.no_choice(&ty, "count()")?;
                Ok((Node::Count(b), Ty::prim("integer", DataType::Int32)))
            }
            // The one item, none for none; several are an error (FHIRPath 5.3.3).
            "single" => {
                arity(0..=0)?;
                self.no_choice(&ty, name)?;
                Ok((Node::With(b, Box::new(Node::Focus)), ty))
            }
            "first" | "last" => {
                arity(0..=0)?;
                self.no_choice(&ty, name)?;
                Ok((
                    if name == "first" {
                        Node::First(b)
                    } else {
                        Node::Last(b)
                    },
                    ty,
                ))
            }
            "not" => {
                arity(0..=0)?;
                // One item of another type counts as true (FHIRPath 4.5, singleton
                // evaluation): not() of it is false.
                if matches!(ty, Ty::Prim { .. }) && !ty.is_boolean() {
                    // Of one item only: more is an error.
                    let body = Node::Iif(
                        Box::new(Node::Exists(Box::new(Node::Focus))),
                        Box::new(Node::Lit(ScalarValue::Boolean(Some(false)))),
                        Box::new(Node::Lit(ScalarValue::Boolean(None))),
                    );
                    return Ok((Node::With(b, Box::new(body)), boolean));
                }
                if !ty.is_boolean() {
                    return Err(format!("not() of {}, not a boolean", ty.describe()));
                }
                Ok((Node::Not(b), boolean))
            }
            "join" => {
                arity(0..=1)?;
                self.no_choice(&ty, "join()")?;
                let sep = match args.first() {
                    None => String::new(),
                    Some(a) => self.string_arg(a)?,
                };
                Ok((Node::Join(b, sep), Ty::prim("string", DataType::Utf8)))
            }
            name if StrFn::from_name(name).is_some() => {
                let (f, n) = StrFn::from_name(name).expect("a string function");
                arity(n)?;
                self.no_choice(&ty, name)?;
                if !matches!(ty, Ty::Prim { .. } | Ty::Nothing) {
                    return Err(format!("{name}() of {}, not a string", ty.describe()));
                }
                let src = cast_to(node, &ty, &DataType::Utf8);
                let mut compiled = Vec::new();
                for a in args {
                    let (an, at) = self.compile(a, &ty)?;
                    compiled.push(cast_to(an, &at, &f.arg_type()));
                }
                let (fhir, dt) = f.result();
                Ok((Node::Str(f, Box::new(src), compiled), Ty::prim(fhir, dt)))
            }
            "take" | "skip" | "tail" => {
                arity(if name == "tail" { 0..=0 } else { 1..=1 })?;
                self.no_choice(&ty, name)?;
                let count = |a: &Ast| -> CompileResult<Node> {
                    match a {
                        Ast::Int(i) => Ok(Node::Lit(ScalarValue::Int32(Some(*i as i32)))),
                        Ast::Var(v) => match self.constants.get(v) {
                            Some((c @ ScalarValue::Int32(_), _)) => Ok(Node::Lit(c.clone())),
                            _ => Err(format!("%{v} is not an integer constant")),
                        },
                        _ => Err(format!("{name}() takes an integer")),
                    }
                };
                let one = Node::Lit(ScalarValue::Int32(Some(1)));
                let zero = Node::Lit(ScalarValue::Int32(Some(0)));
                let (skip, take) = match name {
                    "take" => (zero, Some(Box::new(count(&args[0])?))),
                    "skip" => (count(&args[0])?, None),
                    _ => (one, None),
                };
                Ok((
                    Node::Slice {
                        src: b,
                        skip: Box::new(skip),
                        take,
                    },
                    ty,
                ))
            }
            "select" => {
                arity(1..=1)?;
                self.no_choice(&ty, "select()")?;
                let (p, pt) = self.compile(&args[0], &ty)?;
                Ok((Node::Select(b, Box::new(p)), pt))
            }
            "all" => {
                arity(1..=1)?;
                self.no_choice(&ty, "all()")?;
                let (cond, ct) = self.compile(&args[0], &ty)?;
                if !ct.is_boolean() {
                    return Err(format!(
                        "the criteria of all() are {}, not a boolean",
                        ct.describe()
                    ));
                }
                Ok((
                    Node::All(b, Box::new(cast_to(cond, &ct, &DataType::Boolean))),
                    boolean,
                ))
            }
            "trace" => {
                arity(1..=2)?;
                Ok((node, ty))
            }
            name if MathFn::from_name(name).is_some() => {
                let (f, n) = MathFn::from_name(name).expect("a math function");
                arity(n)?;
                if !is_number(&ty) {
                    return Err(format!("{name}() of {}, not a number", ty.describe()));
                }
                let arg = match args.first() {
                    Some(a) => {
                        let (an, at) = self.compile(a, &ty)?;
                        if !is_number(&at) {
                            return Err(format!("{name}() takes a number, not {}", at.describe()));
                        }
                        Some((an, at))
                    }
                    None => None,
                };
                let ints = ty.data_type() == DataType::Int32
                    && arg
                        .as_ref()
                        .is_none_or(|(_, t)| t.data_type() == DataType::Int32);
                let out = match f.integer_result(ints) {
                    true => Ty::prim("integer", DataType::Int32),
                    false => Ty::prim("decimal", decimal_type()),
                };
                Ok((Node::Math(f, b, arg.map(|(a, _)| Box::new(a))), out))
            }
            "allTrue" | "anyTrue" | "allFalse" | "anyFalse" => {
                arity(0..=0)?;
                if !ty.is_boolean() {
                    return Err(format!("{name}() of {}, not booleans", ty.describe()));
                }
                let item = match name {
                    "allTrue" | "anyTrue" => Node::Focus,
                    _ => Node::Not(Box::new(Node::Focus)),
                };
                Ok((
                    match name {
                        "allTrue" | "allFalse" => Node::All(b, Box::new(item)),
                        _ => Node::Exists(Box::new(Node::Where(b, Box::new(item)))),
                    },
                    boolean,
                ))
            }
            "hasValue" => {
                arity(0..=0)?;
                if !matches!(ty, Ty::Prim { .. } | Ty::Nothing) {
                    return Ok((Node::Lit(ScalarValue::Boolean(Some(false))), boolean));
                }
                Ok((Node::Exists(b), boolean))
            }
            "sort" => {
                self.no_choice(&ty, "sort()")?;
                if !matches!(ty, Ty::Prim { .. } | Ty::Nothing) {
                    return Err(format!(
                        "sort() of {}: sort values, or by $this",
                        ty.describe()
                    ));
                }
                let descending = match args {
                    [] | [Ast::This] => false,
                    [Ast::Neg(x)] if matches!(**x, Ast::This) => true,
                    _ => return Err("sort() takes no key, $this or -$this".into()),
                };
                Ok((Node::Sort(b, descending), ty))
            }
            "today" | "now" => {
                arity(0..=0)?;
                let fhir = if name == "today" { "date" } else { "dateTime" };
                Ok((Node::Now(name == "now"), Ty::prim(fhir, DataType::Utf8)))
            }
            "encode" | "decode" => {
                arity(1..=1)?;
                let form = self.string_arg(&args[0])?;
                if !matches!(form.as_str(), "base64" | "urlbase64" | "hex") {
                    return Err(format!("{name}('{form}'): base64, urlbase64 or hex"));
                }
                let src = cast_to(node, &ty, &DataType::Utf8);
                Ok((
                    Node::Encode(Box::new(src), form, name == "encode"),
                    Ty::prim("string", DataType::Utf8),
                ))
            }
            "escape" | "unescape" => {
                arity(1..=1)?;
                let form = self.string_arg(&args[0])?;
                if !matches!(form.as_str(), "html" | "json") {
                    return Err(format!("{name}('{form}'): html or json"));
                }
                let src = cast_to(node, &ty, &DataType::Utf8);
                Ok((
                    Node::Encode(Box::new(src), form, name == "escape"),
                    Ty::prim("string", DataType::Utf8),
                ))
            }
            "split" => {
                arity(1..=1)?;
                let sep = self.string_arg(&args[0])?;
                let src = cast_to(node, &ty, &DataType::Utf8);
                Ok((
                    Node::Split(Box::new(src), sep),
                    Ty::prim("string", DataType::Utf8),
                ))
            }
            "distinct" => {
                arity(0..=0)?;
                self.no_choice(&ty, name)?;
                Ok((Node::Distinct(b), ty))
            }
            "isDistinct" => {
                arity(0..=0)?;
                self.no_choice(&ty, name)?;
                let distinct = Node::Count(Box::new(Node::Distinct(b.clone())));
                Ok((
                    Node::Compare(Op::Eq, Box::new(distinct), Box::new(Node::Count(b))),
                    boolean,
                ))
            }
            // `as` takes one item: several are an error (FHIRPath 6.3.2), as fhirpath.js has
            // it. A choice has one value; through a list of them, the items of the type asked.
            "as" => {
                arity(1..=1)?;
                match ty {
                    Ty::Choice { .. } => {
                        let (n, t) = self.call(node, ty, "ofType", args)?;
                        Ok((Node::With(Box::new(n), Box::new(Node::Focus)), t))
                    }
                    _ => self.call(Node::With(b, Box::new(Node::Focus)), ty, "ofType", args),
                }
            }
            // `is` follows the FHIR type hierarchy (a `code` is a `string`, an `Age` a
            // `Quantity`); `as` and `ofType` take the type itself, as the official suite has it.
            "is" => {
                arity(1..=1)?;
                let want = self.known_type(name, &args[0])?;
                let model = self.version.model();
                let is_a = |t: &str| same_type(t, &want) || model.is_a(t, &want);
                let is = match &ty {
                    Ty::Choice { alts } => {
                        let mut present = Vec::new();
                        for (t, n, _) in alts.iter().filter(|a| is_a(&a.0)) {
                            match n {
                                Some(n) => present.push(n.clone()),
                                None => return self.beyond(format!("is({t})")),
                            }
                        }
                        match present.is_empty() {
                            true => Node::Lit(ScalarValue::Boolean(Some(false))),
                            false => Node::AnyExists(present),
                        }
                    }
                    Ty::Object { fhir, .. } | Ty::Prim { fhir, .. } | Ty::Json { fhir, .. }
                        if is_a(fhir) =>
                    {
                        self.call(node.clone(), ty.clone(), "exists", &[])?.0
                    }
                    _ => Node::Lit(ScalarValue::Boolean(Some(false))),
                };
                self.unless_empty(node, ty, is)
            }
            name if conversion(name).is_some() => {
                arity(0..=0)?;
                self.no_choice(&ty, name)?;
                if !matches!(ty, Ty::Prim { .. } | Ty::Nothing) {
                    return Err(format!("{name}() of {}, not a value", ty.describe()));
                }
                let (to, test) = conversion(name).expect("a conversion");
                let out = match (test, to) {
                    (true, _) => boolean,
                    (_, Conversion::Boolean) => boolean,
                    (_, Conversion::Integer) => Ty::prim("integer", DataType::Int32),
                    (_, Conversion::Decimal) => Ty::prim("decimal", decimal_type()),
                    (_, Conversion::String) => Ty::prim("string", DataType::Utf8),
                    (_, Conversion::Date) => Ty::prim("date", DataType::Utf8),
                    (_, Conversion::DateTime) => Ty::prim("dateTime", DataType::Utf8),
                    (_, Conversion::Time) => Ty::prim("time", DataType::Utf8),
                    (_, Conversion::Quantity) => Ty::prim("Quantity", DataType::Utf8),
                };
                Ok((Node::Convert { src: b, to, test }, out))
            }
            "ofType" => {
                arity(1..=1)?;
                let want = self.known_type(name, &args[0])?;
                match &ty {
                    Ty::Choice { alts } => match alts.iter().find(|a| same_type(&a.0, &want)) {
                        Some((t, None, _)) => self.beyond(format!("ofType({t})")),
                        Some((_, Some(n), t)) => Ok((n.clone(), t.clone())),
                        None => Ok((Node::Lit(ScalarValue::Null), Ty::Nothing)),
                    },
                    Ty::Object { fhir, .. } | Ty::Prim { fhir, .. } | Ty::Json { fhir, .. }
                        if same_type(fhir, &want) =>
                    {
                        Ok((node, ty))
                    }
                    _ => Ok((Node::Lit(ScalarValue::Null), Ty::Nothing)),
                }
            }
            "extension" => {
                arity(1..=1)?;
                let url = self.string_arg(&args[0])?;
                let (ext, ext_ty) = self.member(node, &ty, "extension")?;
                let (url_node, _) = self.member(Node::Focus, &ext_ty, "url")?;
                let cond = Node::Compare(
                    Op::Eq,
                    Box::new(url_node),
                    Box::new(Node::Lit(ScalarValue::Utf8(Some(url)))),
                );
                Ok((Node::Where(Box::new(ext), Box::new(cond)), ext_ty))
            }
            "getResourceKey" => {
                arity(0..=0)?;
                self.member(node, &ty, "id")
            }
            "getReferenceKey" => {
                arity(0..=1)?;
                match &ty {
                    Ty::Object { fhir, .. } | Ty::Json { fhir, .. } if fhir == "Reference" => {}
                    Ty::Nothing => {}
                    other => {
                        return Err(format!(
                            "getReferenceKey() of {}, not a Reference",
                            other.describe()
                        ))
                    }
                }
                let want = args.first().map(type_name).transpose()?;
                Ok((
                    Node::ReferenceKey(b, want),
                    Ty::prim("string", DataType::Utf8),
                ))
            }
            // The digits a value was written with (FHIRPath 5.7): after the point of a decimal;
            // of a date, date-time or time, all but the time zone's.
            "precision" => {
                arity(0..=0)?;
                let fhir = match &ty {
                    Ty::Prim { fhir, .. } => fhir.as_str(),
                    Ty::Nothing => return Ok((node, ty)),
                    other => return Err(format!("precision() of {}", other.describe())),
                };
                let strip = |src: Node, pattern: &str| {
                    Node::Str(
                        StrFn::ReplaceMatches,
                        Box::new(src),
                        vec![
                            Node::Lit(ScalarValue::Utf8(Some(pattern.into()))),
                            Node::Lit(ScalarValue::Utf8(Some(String::new()))),
                        ],
                    )
                };
                let digits = match fhir {
                    "decimal" => match node {
                        Node::Lit(ScalarValue::Utf8(Some(_))) => strip(node, r"^[^.]*\.?"),
                        Node::JsonField(src, f, JsonKind::Prim(_) | JsonKind::Text) => {
                            strip(Node::JsonField(src, f, JsonKind::Text), r"^[^.]*\.?")
                        }
                        _ if matches!(self.root, Ty::Object { .. }) => {
                            return self.beyond("the written precision of a decimal".into())
                        }
                        _ => {
                            return Err("precision() of a decimal is taken on an element's value \
                                        or a literal, not after a function"
                                .into())
                        }
                    },
                    "date" | "dateTime" | "time" if ty.data_type() == DataType::Utf8 => {
                        strip(strip(node, "(Z|[+-][0-9][0-9]:[0-9][0-9])$"), "[^0-9]")
                    }
                    other => return Err(format!("precision() of {other} is not supported")),
                };
                Ok((
                    Node::Str(StrFn::Length, Box::new(digits), vec![]),
                    Ty::prim("integer", DataType::Int32),
                ))
            }
            "lowBoundary" | "highBoundary" => {
                arity(0..=1)?;
                let precision = match args.first() {
                    None => None,
                    Some(Ast::Int(p)) if (0..=28).contains(p) => Some(*p as u8),
                    // A precision no value has: empty (FHIRPath 5.7).
                    Some(Ast::Int(_)) | Some(Ast::Neg(_)) => {
                        return Ok((Node::Lit(ScalarValue::Null), Ty::Nothing))
                    }
                    Some(_) => return Err(format!("{name}(): the precision must be 0 to 28")),
                };
                let high = name == "highBoundary";
                let kind = match &ty {
                    Ty::Prim { fhir, .. } => match fhir.as_str() {
                        "date" => Boundary::Date,
                        "dateTime" => Boundary::DateTime,
                        "time" => Boundary::Time,
                        "decimal" => {
                            // The precision a decimal was written with is in its JSON text.
                            let text = match node {
                                Node::JsonField(src, f, JsonKind::Prim(_) | JsonKind::Text) => {
                                    Node::JsonField(src, f, JsonKind::Text)
                                }
                                Node::Lit(ScalarValue::Utf8(Some(t))) => {
                                    Node::Lit(ScalarValue::Utf8(Some(t)))
                                }
                                _ if matches!(self.root, Ty::Object { .. }) => {
                                    return self.beyond("the written precision of a decimal".into())
                                }
                                _ => {
                                    return Err(format!(
                                        "{name}() of a decimal is taken on an element's value \
                                         (value.lowBoundary()), not after a function"
                                    ))
                                }
                            };
                            return Ok((
                                Node::Boundary(Box::new(text), Boundary::Decimal(precision), high),
                                ty,
                            ));
                        }
                        other => return Err(format!("{name}() of {other} is not supported")),
                    },
                    Ty::Nothing => return Ok((node, ty)),
                    other => return Err(format!("{name}() of {}", other.describe())),
                };
                let boundary = Node::Boundary(b, kind, high);
                // To the precision of a date's year (4 digits), month (6) or day (8), of a date
                // or a date-time: the boundary's text cut there, a date (FHIRPath 5.7:
                // `@2014.lowBoundary(6)` is `@2014-01`, `@2014-01-01T08.lowBoundary(8)`
                // `@2014-01-01`).
                let date_part = match precision {
                    Some(4) => Some(4),
                    Some(6) => Some(7),
                    Some(8) => Some(10),
                    _ => None,
                };
                match (kind, date_part) {
                    (Boundary::Date | Boundary::DateTime, Some(len)) => Ok((
                        Node::Str(
                            StrFn::Substring,
                            Box::new(boundary),
                            vec![
                                Node::Lit(ScalarValue::Int32(Some(0))),
                                Node::Lit(ScalarValue::Int32(Some(len))),
                            ],
                        ),
                        Ty::prim("date", DataType::Utf8),
                    )),
                    _ => Ok((boundary, ty)),
                }
            }
            _ => Err(format!("the function {name}() is not supported")),
        }
    }

    /// The type a function names (`ofType(Quantity)`): one of the data's version's types or a
    /// System type; anything else is an error (a misspelt type would give empty silently).
    fn known_type(&self, function: &str, a: &Ast) -> CompileResult<String> {
        const SYSTEM: &[&str] = &[
            "Boolean", "String", "Integer", "Decimal", "Date", "DateTime", "Time", "Quantity",
        ];
        let name = type_name(a)?;
        if SYSTEM.contains(&name.as_str()) || self.version.model().get(&name).is_some() {
            return Ok(name);
        }
        Err(format!(
            "{function}({name}): {name} is not a type of FHIR {} nor a System type",
            self.version
        ))
    }

    fn string_arg(&self, a: &Ast) -> CompileResult<String> {
        match a {
            Ast::Str(s) => Ok(s.clone()),
            Ast::Var(v) => match self.constants.get(v) {
                Some((ScalarValue::Utf8(Some(s)), _)) => Ok(s.clone()),
                None if environment(v).is_some() => Ok(environment(v).expect("checked")),
                _ => Err(format!("%{v} is not a string constant")),
            },
            _ => Err("expected a string".into()),
        }
    }

    fn binary(&self, op: Op, ln: Node, lt: Ty, rn: Node, rt: Ty) -> CompileResult<(Node, Ty)> {
        let comparison = matches!(
            op,
            Op::Eq | Op::Ne | Op::Equiv | Op::NotEquiv | Op::Lt | Op::Le | Op::Gt | Op::Ge
        );
        if comparison && (is_quantity(&lt) || is_quantity(&rt)) {
            let (l, r) = (quantity_text(ln, &lt)?, quantity_text(rn, &rt)?);
            return Ok((
                Node::QuantityCmp(op, Box::new(l), Box::new(r)),
                Ty::prim("boolean", DataType::Boolean),
            ));
        }
        for t in [&lt, &rt] {
            self.no_choice(t, &format!("{op:?}"))?;
            if let Ty::Object { fhir, .. } = t {
                let equality = matches!(op, Op::Eq | Op::Ne | Op::Equiv | Op::NotEquiv);
                if op != Op::Union && !equality {
                    return Err(format!("{op:?} of a {fhir} (an object, not a value)"));
                }
            }
        }
        let boolean = Ty::prim("boolean", DataType::Boolean);
        let (l, r) = (Box::new(ln), Box::new(rn));
        match op {
            Op::And | Op::Or | Op::Xor | Op::Implies => {
                if !lt.is_boolean() || !rt.is_boolean() {
                    return Err(format!(
                        "{op:?} of {} and {}: both sides must be boolean",
                        lt.describe(),
                        rt.describe()
                    ));
                }
                let (l, r) = (
                    cast_to(*l, &lt, &DataType::Boolean),
                    cast_to(*r, &rt, &DataType::Boolean),
                );
                Ok((Node::Logic(op, Box::new(l), Box::new(r)), boolean))
            }
            Op::Eq | Op::Ne | Op::Equiv | Op::NotEquiv | Op::Lt | Op::Le | Op::Gt | Op::Ge => {
                let (ld, rd) = (lt.data_type(), rt.data_type());
                let common = common_type(&ld, &rd).ok_or_else(|| {
                    format!("cannot compare {} with {}", lt.describe(), rt.describe())
                })?;
                let temporal = |t: &Ty| matches!(t, Ty::Prim { fhir, .. } if matches!(fhir.as_str(), "date" | "dateTime" | "time"));
                // Dates, date-times and times kept as text: compared by their components, to
                // the precision both have (an instant's column is a timestamp, compared as one).
                // A date and a string are values of different types (no implicit conversion
                // from String): never equal.
                let text = |t: &Ty| {
                    matches!(
                        t,
                        Ty::Prim {
                            dt: DataType::Utf8,
                            ..
                        }
                    ) && !temporal(t)
                };
                let dated =
                    |t: &Ty| temporal(t) || matches!(t, Ty::Prim { fhir, .. } if fhir == "instant");
                if matches!(op, Op::Eq | Op::Ne | Op::Equiv | Op::NotEquiv)
                    && ((dated(&lt) && text(&rt)) || (text(&lt) && dated(&rt)))
                {
                    let both = Node::Logic(
                        Op::And,
                        Box::new(Node::Exists(l)),
                        Box::new(Node::Exists(r)),
                    );
                    let differ = matches!(op, Op::Ne | Op::NotEquiv);
                    let otherwise = match op {
                        Op::Equiv => Some(false),
                        Op::NotEquiv => Some(true),
                        _ => None,
                    };
                    return Ok((
                        Node::Iif(
                            Box::new(both),
                            Box::new(Node::Lit(ScalarValue::Boolean(Some(differ)))),
                            Box::new(Node::Lit(ScalarValue::Boolean(otherwise))),
                        ),
                        boolean,
                    ));
                }
                // A string is not in order with a date (no implicit conversion from String).
                if matches!(op, Op::Lt | Op::Le | Op::Gt | Op::Ge)
                    && ((dated(&lt) && text(&rt)) || (text(&lt) && dated(&rt)))
                {
                    return Err(format!(
                        "cannot put {} and {} in order: convert the text first (toDate(), \
                         toDateTime())",
                        lt.describe(),
                        rt.describe()
                    ));
                }
                // An instant (a timestamp column) beside a date or date-time literal: compared
                // as dates are, to the precision both have.
                let instant = |t: &Ty| matches!(t, Ty::Prim { fhir, .. } if fhir == "instant");
                if (common == DataType::Utf8 && (temporal(&lt) || temporal(&rt)))
                    || (instant(&lt) && temporal(&rt))
                    || (temporal(&lt) && instant(&rt))
                {
                    return Ok((Node::Temporal(op, l, r), boolean));
                }
                let l = cast_to(*l, &lt, &common);
                let r = cast_to(*r, &rt, &common);
                Ok((Node::Compare(op, Box::new(l), Box::new(r)), boolean))
            }
            Op::In | Op::Contains => {
                let (ld, rd) = (lt.data_type(), rt.data_type());
                let common = common_type(&ld, &rd).ok_or_else(|| {
                    format!(
                        "{op:?} of {} and {}: the types differ",
                        lt.describe(),
                        rt.describe()
                    )
                })?;
                let l = Box::new(cast_to(*l, &lt, &common));
                let r = Box::new(cast_to(*r, &rt, &common));
                Ok((
                    match op {
                        Op::In => Node::Member(l, r),
                        _ => Node::Member(r, l),
                    },
                    boolean,
                ))
            }
            Op::Concat => Ok((
                Node::Concat(
                    Box::new(cast_to(*l, &lt, &DataType::Utf8)),
                    Box::new(cast_to(*r, &rt, &DataType::Utf8)),
                ),
                Ty::prim("string", DataType::Utf8),
            )),
            Op::Add if lt.data_type() == DataType::Utf8 && rt.data_type() == DataType::Utf8 => {
                Ok((Node::Plus(l, r), Ty::prim("string", DataType::Utf8)))
            }
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::IntDiv | Op::Mod => {
                if !is_number(&lt) || !is_number(&rt) {
                    return Err(format!(
                        "{op:?} of {} and {}: both sides must be numbers",
                        lt.describe(),
                        rt.describe()
                    ));
                }
                let ints = lt.data_type() == DataType::Int32 && rt.data_type() == DataType::Int32;
                let out = if ints && op != Op::Div {
                    Ty::prim("integer", DataType::Int32)
                } else {
                    Ty::prim("decimal", decimal_type())
                };
                let dt = out.data_type();
                let (l, r) = if ints {
                    (*l, *r)
                } else {
                    (cast_to(*l, &lt, &dt), cast_to(*r, &rt, &dt))
                };
                Ok((Node::Arith(op, Box::new(l), Box::new(r)), out))
            }
            Op::Union => {
                let t = one_type("union", &lt, &rt)?;
                let dt = t.data_type();
                Ok((
                    Node::Union(
                        Box::new(cast_to(*l, &lt, &dt)),
                        Box::new(cast_to(*r, &rt, &dt)),
                    ),
                    t,
                ))
            }
        }
    }
}

/// Whether `column` is the column of type `fhir_type` of the choice element `base`
/// (`valueQuantity` of `value`).
fn is_choice_of(column: &str, base: &str, fhir_type: &str) -> bool {
    column.len() == base.len() + fhir_type.len()
        && column.starts_with(base)
        && column[base.len()..].eq_ignore_ascii_case(fhir_type)
        && column[base.len()..].starts_with(|c: char| c.is_ascii_uppercase())
}

/// Functions that pick items by their position only, keeping each as it is.
const POSITIONAL: &[&str] = &["first", "last", "single", "tail", "skip", "take"];

/// Marks a member to be read as elements (a primitive with its `id` and `extension`).
const ELEMENTS: &str = "\u{1}";

/// `src` with the primitive it reads taken as elements: its last path step marked, through
/// the functions that pick items without looking at their values (positional ones, `where`,
/// indexers). None where `src` has another form.
fn element_chain(src: &Ast) -> Option<Ast> {
    match src {
        Ast::Member(s, name) if !name.starts_with(ELEMENTS) => {
            Some(Ast::Member(s.clone(), format!("{ELEMENTS}{name}")))
        }
        Ast::Call(Some(s), f, args) if POSITIONAL.contains(&f.as_str()) || f == "where" => Some(
            Ast::Call(Some(Box::new(element_chain(s)?)), f.clone(), args.clone()),
        ),
        Ast::Index(s, i) => Some(Ast::Index(Box::new(element_chain(s)?), i.clone())),
        _ => None,
    }
}

/// Whether a type specifier names a System type only: `System.X`, or a System type's name
/// that no FHIR type has (`Boolean`; FHIR's is `boolean`).
fn system_only(a: &Ast) -> bool {
    match a {
        Ast::Member(Some(ns), _) => matches!(&**ns, Ast::Member(None, s) if s == "System"),
        Ast::Member(None, n) => matches!(
            n.as_str(),
            "Boolean" | "String" | "Integer" | "Decimal" | "Date" | "DateTime" | "Time"
        ),
        _ => false,
    }
}

/// Whether an expression gives elements of the resource (FHIR-typed): a path, or functions
/// that keep the items they are given (`first()`, `where(...)`, ...) over one.
fn element_path(a: &Ast) -> bool {
    match a {
        Ast::Member(None, _) => true,
        Ast::Member(Some(src), _) => element_path(src),
        Ast::Index(src, _) => element_path(src),
        Ast::Call(Some(src), f, _) => {
            matches!(
                f.as_str(),
                "first"
                    | "last"
                    | "single"
                    | "tail"
                    | "skip"
                    | "take"
                    | "where"
                    | "distinct"
                    | "ofType"
                    | "as"
                    | "extension"
            ) && element_path(src)
        }
        _ => false,
    }
}

/// A type specifier: `Quantity`, `FHIR.Quantity`, `System.String`.
/// Whether a value is a quantity: a literal or conversion, a Quantity element (or one of its
/// kinds), a choice that may be one.
fn is_quantity(t: &Ty) -> bool {
    const KINDS: &[&str] = &[
        "Quantity",
        "Age",
        "Duration",
        "Distance",
        "Count",
        "SimpleQuantity",
        "MoneyQuantity",
    ];
    match t {
        Ty::Prim { fhir, .. } => fhir == "Quantity",
        Ty::Object { fhir, .. } | Ty::Json { fhir, .. } => KINDS.contains(&fhir.as_str()),
        Ty::Choice { alts } => alts.iter().any(|a| KINDS.contains(&a.0.as_str())),
        Ty::Nothing => false,
    }
}

/// A quantity's text (see [`Node::QuantityText`]), from a literal or an element.
fn quantity_text(node: Node, t: &Ty) -> CompileResult<Node> {
    match t {
        Ty::Prim { fhir, .. } if fhir == "Quantity" => Ok(node),
        Ty::Nothing => Ok(node),
        Ty::Object { .. } => Ok(Node::QuantityText(Box::new(node))),
        Ty::Choice { alts } => match alts.iter().find(|a| a.0 == "Quantity") {
            Some((_, Some(n), _)) => Ok(Node::QuantityText(Box::new(n.clone()))),
            _ => Err("a Quantity past the typed columns cannot be compared yet".into()),
        },
        other => Err(format!(
            "a quantity cannot be compared with {}",
            other.describe()
        )),
    }
}

/// `toInteger()` and the rest: what they convert to, and whether they only test
/// (`convertsTo...`).
fn conversion(name: &str) -> Option<(Conversion, bool)> {
    let (test, what) = match name.strip_prefix("convertsTo") {
        Some(w) => (true, w),
        None => (false, name.strip_prefix("to")?),
    };
    let to = match what {
        "Boolean" => Conversion::Boolean,
        "Integer" => Conversion::Integer,
        "Decimal" => Conversion::Decimal,
        "String" => Conversion::String,
        "Date" => Conversion::Date,
        "DateTime" => Conversion::DateTime,
        "Time" => Conversion::Time,
        "Quantity" => Conversion::Quantity,
        _ => return None,
    };
    Some((to, test))
}

fn type_name(a: &Ast) -> CompileResult<String> {
    match a {
        Ast::Member(None, n) => Ok(n.clone()),
        Ast::Member(Some(ns), n) if matches!(&**ns, Ast::Member(None, s) if s == "FHIR" || s == "System") => {
            Ok(n.clone())
        }
        _ => Err("expected a type name, like Quantity or string".into()),
    }
}

/// Whether a value of FHIR type `fhir` is a `want` to `ofType()` and `as`: the type itself (a
/// `code` is not a `string` there, as the official FHIRPath suite has it; `is` follows the
/// hierarchy too), or the System type of the same name (`String` for `string`).
fn same_type(fhir: &str, want: &str) -> bool {
    fhir == want
        || (want.starts_with(|c: char| c.is_ascii_uppercase())
            && fhir.eq_ignore_ascii_case(want)
            && fhir.starts_with(|c: char| c.is_ascii_lowercase())
            && matches!(
                want,
                "String" | "Boolean" | "Integer" | "Decimal" | "Date" | "DateTime" | "Time"
            ))
}

/// Whether a value is a number (or nothing).
fn is_number(t: &Ty) -> bool {
    matches!(t, Ty::Nothing)
        || matches!(t.data_type(), DataType::Int32 | DataType::Decimal128(_, _))
}

/// The one type of two sides that make one collection (`|`, the branches of `iif`): nothing
/// takes the other's; otherwise they must agree.
fn one_type(what: &str, a: &Ty, b: &Ty) -> CompileResult<Ty> {
    match (a, b) {
        (Ty::Nothing, t) | (t, Ty::Nothing) => Ok(t.clone()),
        (x, y) if x.data_type() == y.data_type() => Ok(x.clone()),
        _ => Err(format!(
            "{what} of {} and {}: the types differ",
            a.describe(),
            b.describe()
        )),
    }
}

fn cast_to(node: Node, ty: &Ty, dt: &DataType) -> Node {
    if &ty.data_type() == dt {
        node
    } else {
        Node::Cast(Box::new(node), dt.clone())
    }
}

fn common_type(l: &DataType, r: &DataType) -> Option<DataType> {
    use DataType::*;
    Some(match (l, r) {
        (a, b) if a == b => a.clone(),
        (Null, b) => b.clone(),
        (a, Null) => a.clone(),
        (Int32, d @ Decimal128(_, _)) | (d @ Decimal128(_, _), Int32) => d.clone(),
        (t @ Timestamp(_, _), Utf8) | (Utf8, t @ Timestamp(_, _)) => t.clone(),
        _ => return None,
    })
}

/// FHIR's environment variables (FHIRPath in FHIR, "Variables"): `%sct`, `%loinc`, `%ucum`,
/// `%vs-[name]` and `%ext-[name]`; a view's own constants come first.
fn environment(name: &str) -> Option<String> {
    match name {
        "sct" => Some("http://snomed.info/sct".into()),
        "loinc" => Some("http://loinc.org".into()),
        "ucum" => Some("http://unitsofmeasure.org".into()),
        _ => {
            if let Some(vs) = name.strip_prefix("vs-").filter(|n| !n.is_empty()) {
                return Some(format!("http://hl7.org/fhir/ValueSet/{vs}"));
            }
            name.strip_prefix("ext-")
                .filter(|n| !n.is_empty())
                .map(|e| format!("http://hl7.org/fhir/StructureDefinition/{e}"))
        }
    }
}

/// A decimal literal as a Decimal128 at the schema's scale.
pub fn decimal_lit(text: &str) -> CompileResult<Node> {
    let (v, _) = crate::decode::decimal::parse_decimal(text)
        .ok_or_else(|| format!("decimal {text} is out of range"))?;
    Ok(Node::Lit(ScalarValue::Decimal128(
        Some(v),
        DECIMAL_PRECISION,
        DECIMAL_SCALE,
    )))
}

/// The JSON property `name` of an object of type `def` (elements under `prefix`), checked
/// against the FHIR definitions: one element, or the alternatives of a choice.
fn json_member(
    version: FhirVersion,
    node: Node,
    def: &str,
    prefix: &str,
    name: &str,
    ty: &Ty,
) -> CompileResult<(Node, Ty)> {
    let model = version.model();
    let td = model
        .get(def)
        .ok_or_else(|| format!("{def} is not a FHIR type"))?;
    let under = |e: &&crate::schema::model::ElementDef| e.parent() == prefix;
    let element_ty = |e: &crate::schema::model::ElementDef, t: &str| -> Ty {
        if let Some(target) = &e.content_ref {
            return Ty::Json {
                fhir: "BackboneElement".into(),
                def: def.to_string(),
                prefix: target.clone(),
                root: false,
            };
        }
        match model.get(t) {
            _ if t == "BackboneElement" || t == "Element" => Ty::Json {
                fhir: t.to_string(),
                def: def.to_string(),
                prefix: e.path.clone(),
                root: false,
            },
            Some(d) if d.kind == Kind::Primitive => Ty::prim(t, Prim::of(t).data_type()),
            Some(d) if d.kind == Kind::Complex => Ty::Json {
                fhir: t.to_string(),
                def: t.to_string(),
                prefix: String::new(),
                root: false,
            },
            // Resources (contained, Bundle.entry.resource) are JSON text, as in the columns.
            _ => Ty::prim("Resource", DataType::Utf8),
        }
    };
    let read = |src: Node, json_name: String, t: &Ty| {
        let kind = match t {
            Ty::Prim { fhir, .. } if fhir == "Resource" => JsonKind::Object,
            Ty::Prim { fhir, .. } => JsonKind::Prim(Prim::of(fhir)),
            _ => JsonKind::Object,
        };
        Node::JsonField(Box::new(src), json_name, kind)
    };
    if let Some(e) = td.elements.iter().filter(under).find(|e| e.name() == name) {
        let t = e
            .types
            .first()
            .map(String::as_str)
            .unwrap_or("BackboneElement");
        let out = element_ty(e, t);
        return Ok((read(node, name.to_string(), &out), out));
    }
    let choice = format!("{name}[x]");
    if let Some(e) = td
        .elements
        .iter()
        .filter(under)
        .find(|e| e.name() == choice)
    {
        let alts = e
            .types
            .iter()
            .map(|t| {
                let out = element_ty(e, t);
                let json_name = format!("{name}{}{}", t[..1].to_ascii_uppercase(), &t[1..]);
                (t.clone(), Some(read(node.clone(), json_name, &out)), out)
            })
            .collect();
        return Ok((Node::Lit(ScalarValue::Null), Ty::Choice { alts }));
    }
    // A choice's alternative by its JSON name (`valueQuantity`), as the typed columns name it.
    for e in td.elements.iter().filter(under) {
        let Some(base) = e.name().strip_suffix("[x]") else {
            continue;
        };
        let Some(rest) = name.strip_prefix(base) else {
            continue;
        };
        if let Some(t) = e
            .types
            .iter()
            .find(|t| t[..1].to_ascii_uppercase() + &t[1..] == rest)
        {
            let out = element_ty(e, t);
            return Ok((read(node, name.to_string(), &out), out));
        }
    }
    Err(format!("{} has no element '{name}'", ty.describe()))
}
