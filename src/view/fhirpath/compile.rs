//! Type-directed compilation of FHIRPath to [`Node`]s, against the spec-driven schema: every
//! path is checked against the FHIR model before any data is read, so a misspelt element or a
//! `where` that is not boolean is an error up front.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use arrow::datatypes::DataType;
use datafusion::common::ScalarValue;

use crate::schema::node::{struct_fields, Member, Shape, DECIMAL_PRECISION, DECIMAL_SCALE};

use super::eval::{Boundary, Node};
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
    /// A choice element (`value[x]`) before `ofType()`: the node of its object and, per
    /// alternative, the FHIR type, the column and the type.
    Choice {
        src: Box<Node>,
        alts: Vec<(String, String, Ty)>,
    },
    /// `{}`, or `ofType()` of a type the element cannot have.
    Nothing,
}

impl Ty {
    pub fn data_type(&self) -> DataType {
        match self {
            Ty::Object { members, .. } => DataType::Struct(struct_fields(members)),
            Ty::Prim { dt, .. } => dt.clone(),
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
            Ty::Object { fhir, .. } | Ty::Prim { fhir, .. } => fhir.clone(),
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
pub struct Scope<'a> {
    pub constants: &'a HashMap<String, (ScalarValue, Ty)>,
    pub root: Ty,
    /// Top-level columns of the resource that the compiled expressions read.
    pub root_fields: RefCell<BTreeSet<String>>,
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
                "resource" | "rootResource" => Ok((Node::Root, self.root.clone())),
                _ => match self.constants.get(name) {
                    Some((v, ty)) => Ok((Node::Lit(v.clone()), ty.clone())),
                    None => Err(format!("%{name} is not a constant of this view")),
                },
            },
            Ast::This => Ok((Node::Focus, focus.clone())),
            Ast::Member(src, name) => {
                let (node, ty) = match src {
                    Some(s) => self.compile(s, focus)?,
                    None => {
                        // `Patient.name`: a path may start with the resource type.
                        if let Ty::Object {
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
            Ast::Call(src, name, args) => {
                let (node, ty) = match src {
                    Some(s) => self.compile(s, focus)?,
                    None => (Node::Focus, focus.clone()),
                };
                self.call(node, ty, name, args)
            }
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

    fn member(&self, node: Node, ty: &Ty, name: &str) -> CompileResult<(Node, Ty)> {
        let (fhir, members, root) = match ty {
            Ty::Object {
                fhir,
                members,
                root,
            } => (fhir, members, *root),
            Ty::Nothing => return Ok((Node::Lit(ScalarValue::Null), Ty::Nothing)),
            Ty::Choice { .. } => {
                self.no_choice(ty, &format!("'.{name}'"))?;
                unreachable!()
            }
            Ty::Prim { fhir, .. } => {
                return Err(format!(
                    "'{name}' is not an element of the primitive {fhir}"
                ))
            }
        };
        if let Some(m) = members.iter().find(|m| m.name == name) {
            if m.cut {
                return Err(format!(
                    "{fhir}.{name} is beyond the typed schema (its values are kept in _overflow, \
                     which views do not read)"
                ));
            }
            if root {
                self.root_fields.borrow_mut().insert(name.to_string());
            }
            return Ok((Node::Field(Box::new(node), name.to_string()), member_ty(m)));
        }
        // A type beyond the schema's bounds keeps its place with no column: ofType() says so.
        let alts: Vec<(String, String, Ty)> = members
            .iter()
            .filter(|m| is_choice_of(&m.name, name, &m.fhir_type))
            .map(|m| match m.cut {
                false => (m.fhir_type.clone(), m.name.clone(), member_ty(m)),
                true => (m.fhir_type.clone(), String::new(), Ty::Nothing),
            })
            .collect();
        if !alts.is_empty() {
            if root {
                let mut rf = self.root_fields.borrow_mut();
                for a in alts.iter().filter(|a| !a.1.is_empty()) {
                    rf.insert(a.1.clone());
                }
            }
            return Ok((
                Node::Lit(ScalarValue::Null),
                Ty::Choice {
                    src: Box::new(node),
                    alts,
                },
            ));
        }
        Err(format!("{fhir} has no element '{name}'"))
    }

    fn call(&self, node: Node, ty: Ty, name: &str, args: &[Ast]) -> CompileResult<(Node, Ty)> {
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
                    Ty::Choice { src, alts } => Node::AnyExists(
                        alts.iter()
                            .filter(|a| !a.1.is_empty())
                            .map(|a| Node::Field(src.clone(), a.1.clone()))
                            .collect(),
                    ),
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
            "ofType" => {
                arity(1..=1)?;
                let want = type_name(&args[0])?;
                match &ty {
                    Ty::Choice { src, alts } => {
                        match alts.iter().find(|a| same_type(&a.0, &want)) {
                            Some((t, col, _)) if col.is_empty() => Err(format!(
                                "ofType({t}): values of this type are beyond the typed schema \
                                 (kept in _overflow, which views do not read)"
                            )),
                            Some((_, col, t)) => {
                                Ok((Node::Field(src.clone(), col.clone()), t.clone()))
                            }
                            None => Ok((Node::Lit(ScalarValue::Null), Ty::Nothing)),
                        }
                    }
                    Ty::Object { fhir, .. } | Ty::Prim { fhir, .. } if same_type(fhir, &want) => {
                        Ok((node, ty))
                    }
                    _ => Ok((Node::Lit(ScalarValue::Null), Ty::Nothing)),
                }
            }
            "extension" => {
                arity(1..=1)?;
                let url = self.string_arg(&args[0])?;
                let (ext, ext_ty) = self.member(node, &ty, "extension")?;
                let cond = Node::Compare(
                    Op::Eq,
                    Box::new(Node::Field(Box::new(Node::Focus), "url".into())),
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
                    Ty::Object { fhir, .. } if fhir == "Reference" => {}
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
            "lowBoundary" | "highBoundary" => {
                arity(0..=1)?;
                let kind = match &ty {
                    Ty::Prim { fhir, .. } => match fhir.as_str() {
                        "date" => Boundary::Date,
                        "dateTime" => Boundary::DateTime,
                        "time" => Boundary::Time,
                        other => {
                            return Err(format!(
                                "{name}() of {other} is not supported (decimals do not keep the \
                                 precision they were written with)"
                            ))
                        }
                    },
                    Ty::Nothing => return Ok((node, ty)),
                    other => return Err(format!("{name}() of {}", other.describe())),
                };
                Ok((Node::Boundary(b, kind, name == "highBoundary"), ty))
            }
            _ => Err(format!("the function {name}() is not supported")),
        }
    }

    fn string_arg(&self, a: &Ast) -> CompileResult<String> {
        match a {
            Ast::Str(s) => Ok(s.clone()),
            Ast::Var(v) => match self.constants.get(v) {
                Some((ScalarValue::Utf8(Some(s)), _)) => Ok(s.clone()),
                _ => Err(format!("%{v} is not a string constant")),
            },
            _ => Err("expected a string".into()),
        }
    }

    fn binary(&self, op: Op, ln: Node, lt: Ty, rn: Node, rt: Ty) -> CompileResult<(Node, Ty)> {
        for t in [&lt, &rt] {
            self.no_choice(t, &format!("{op:?}"))?;
            if let Ty::Object { fhir, .. } = t {
                if op != Op::Union {
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
                let l = cast_to(*l, &lt, &common);
                let r = cast_to(*r, &rt, &common);
                Ok((Node::Compare(op, Box::new(l), Box::new(r)), boolean))
            }
            Op::Concat => Ok((
                Node::Concat(
                    Box::new(cast_to(*l, &lt, &DataType::Utf8)),
                    Box::new(cast_to(*r, &rt, &DataType::Utf8)),
                ),
                Ty::prim("string", DataType::Utf8),
            )),
            Op::Add if lt.data_type() == DataType::Utf8 && rt.data_type() == DataType::Utf8 => {
                Ok((Node::Concat(l, r), Ty::prim("string", DataType::Utf8)))
            }
            Op::Add | Op::Sub | Op::Mul | Op::Div | Op::IntDiv | Op::Mod => {
                let numeric = |t: &Ty| {
                    matches!(t, Ty::Nothing)
                        || matches!(t.data_type(), DataType::Int32 | DataType::Decimal128(_, _))
                };
                if !numeric(&lt) || !numeric(&rt) {
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
                let t = match (&lt, &rt) {
                    (Ty::Nothing, t) | (t, Ty::Nothing) => t.clone(),
                    (a, b) if a.data_type() == b.data_type() => a.clone(),
                    _ => {
                        return Err(format!(
                            "union of {} and {}: the types differ",
                            lt.describe(),
                            rt.describe()
                        ))
                    }
                };
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

/// A type specifier: `Quantity`, `FHIR.Quantity`, `System.String`.
fn type_name(a: &Ast) -> CompileResult<String> {
    match a {
        Ast::Member(None, n) => Ok(n.clone()),
        Ast::Member(Some(ns), n) if matches!(&**ns, Ast::Member(None, s) if s == "FHIR" || s == "System") => {
            Ok(n.clone())
        }
        _ => Err("expected a type name, like Quantity or string".into()),
    }
}

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
