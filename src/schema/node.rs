//! The mapping from the FHIR model to Arrow: a [`Node`] tree per resource type, with the rules that
//! bound its width and depth, and the Arrow fields it stands for.
//!
//! ```
//! use fhir2parquet::schema::FhirVersion;
//! let schema = fhir2parquet::schema::node::arrow_schema(FhirVersion::R4, "Observation").unwrap();
//! assert!(schema.field_with_name("valueQuantity").is_ok());
//! assert!(schema.field_with_name("effectiveDateTime_ts").is_ok());
//! ```

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};

use arrow::datatypes::{DataType, Field, FieldRef, Fields, Schema, TimeUnit};

use super::model::{ElementDef, Kind, Model, TypeDef};
use super::FhirVersion;

/// Datatypes nest at most this deep (Reference → Identifier → CodeableConcept → Coding);
/// anything deeper is kept in the row's overflow.
pub const MAX_DATATYPE_DEPTH: usize = 3;
/// A recursive backbone element (`Questionnaire.item.item`) is followed this many times.
pub const MAX_BACKBONE_RECURSION: usize = 2;
/// A choice element with more types than this is open (`Extension.value[x]`): only
/// [`OPEN_CHOICE_TYPES`] get typed columns, the rest goes to overflow. Outside `Extension` (in
/// `Task.output.value[x]`, `Parameters.parameter.value[x]`, ...) every primitive type is typed too:
/// one column each, and these elements are few.
const OPEN_CHOICE_THRESHOLD: usize = 30;
/// The types of an open choice that get typed columns.
pub const OPEN_CHOICE_TYPES: &[&str] = &[
    "boolean",
    "integer",
    "decimal",
    "string",
    "code",
    "uri",
    "date",
    "dateTime",
    "Coding",
    "CodeableConcept",
    "Quantity",
    "Reference",
    "Identifier",
    "Period",
    "Address",
];
/// The name of the column that keeps, per row, every value the typed columns cannot hold.
pub const OVERFLOW_COLUMN: &str = "_overflow";
/// The suffix of the parsed companion column of a date, dateTime or time element.
pub const COMPANION_SUFFIX: &str = "_ts";
/// Decimal columns: Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE).
pub const DECIMAL_PRECISION: u8 = 38;
pub const DECIMAL_SCALE: i8 = 18;

/// A FHIR primitive, by the Arrow type it maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prim {
    Boolean,
    Integer,
    Decimal,
    String,
    Date,
    DateTime,
    Time,
    Instant,
    Base64,
}

impl Prim {
    pub fn of(fhir_type: &str) -> Prim {
        match fhir_type {
            "boolean" => Prim::Boolean,
            "integer" | "positiveInt" | "unsignedInt" => Prim::Integer,
            "decimal" => Prim::Decimal,
            "date" => Prim::Date,
            "dateTime" => Prim::DateTime,
            "time" => Prim::Time,
            "instant" => Prim::Instant,
            "base64Binary" => Prim::Base64,
            _ => Prim::String,
        }
    }

    pub fn data_type(self) -> DataType {
        match self {
            Prim::Boolean => DataType::Boolean,
            Prim::Integer => DataType::Int32,
            Prim::Decimal => DataType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
            Prim::String | Prim::Date | Prim::DateTime | Prim::Time => DataType::Utf8,
            Prim::Instant => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            Prim::Base64 => DataType::Binary,
        }
    }

    /// The type of the parsed companion column, for the primitives kept as text.
    pub fn companion_type(self) -> Option<DataType> {
        match self {
            Prim::Date | Prim::DateTime => Some(DataType::Timestamp(
                TimeUnit::Microsecond,
                Some("UTC".into()),
            )),
            // Microseconds since midnight: Spark 4, Delta, Athena and Redshift Spectrum cannot
            // read Parquet TIME.
            Prim::Time => Some(DataType::Int64),
            _ => None,
        }
    }
}

/// The shape of one element's value.
#[derive(Debug, Clone)]
pub enum Shape {
    Prim(Prim),
    Struct(Arc<Vec<Member>>),
    /// A whole resource (`contained`, `Bundle.entry.resource`), kept as its JSON text.
    Json,
}

/// One JSON property of an object and how it is stored.
#[derive(Debug, Clone)]
pub struct Member {
    /// The JSON property name (`valueQuantity` for a choice).
    pub name: String,
    /// The FHIR type (`Quantity`, `dateTime`, `BackboneElement`, `Resource`).
    pub fhir_type: String,
    pub repeated: bool,
    pub shape: Shape,
    /// Whether the primitive extension `_name` has a column of its own.
    pub prim_ext: bool,
    /// Known to the specification but beyond the schema's bounds: kept in overflow.
    pub cut: bool,
}

/// Where a member list is built: how many datatypes deep, which datatypes are open (to stop
/// recursion) and how many times a recursive backbone was followed.
#[derive(Clone, Default)]
struct Ctx {
    datatypes: Vec<String>,
    in_backbone: bool,
    backbone_recursion: usize,
}

struct Builder<'m> {
    model: &'m Model,
    version: FhirVersion,
}

impl Builder<'_> {
    /// The members of the element at `prefix` of `def` ("" for the type itself).
    fn members(&self, def: &TypeDef, prefix: &str, cx: &Ctx) -> Vec<Member> {
        let mut out = Vec::new();
        for e in def.elements.iter().filter(|e| e.parent() == prefix) {
            self.element(def, e, cx, &mut out);
        }
        out
    }

    fn element(&self, def: &TypeDef, e: &ElementDef, cx: &Ctx, out: &mut Vec<Member>) {
        let name = e.name();
        if name == "extension" || name == "modifierExtension" {
            out.push(self.extension_member(name, cx));
            return;
        }
        if let Some(target) = &e.content_ref {
            let mut m = Member {
                name: name.to_string(),
                fhir_type: "BackboneElement".into(),
                repeated: e.repeated,
                shape: Shape::Json,
                prim_ext: false,
                cut: true,
            };
            if cx.backbone_recursion < MAX_BACKBONE_RECURSION {
                let inner = Ctx {
                    backbone_recursion: cx.backbone_recursion + 1,
                    in_backbone: true,
                    ..cx.clone()
                };
                m.shape = Shape::Struct(Arc::new(self.members(def, target, &inner)));
                m.cut = false;
            }
            out.push(m);
            return;
        }
        let choice = name.strip_suffix("[x]");
        let open = e.types.len() > OPEN_CHOICE_THRESHOLD;
        for t in &e.types {
            let member_name = match choice {
                Some(base) => format!("{base}{}{}", t[..1].to_ascii_uppercase(), &t[1..]),
                None => name.to_string(),
            };
            let mut m = self.typed_member(def, e, member_name, t, cx);
            let primitive = self
                .model
                .get(t)
                .is_some_and(|td| td.kind == Kind::Primitive);
            let typed =
                OPEN_CHOICE_TYPES.contains(&t.as_str()) || (primitive && def.name != "Extension");
            if open && !typed {
                m.cut = true;
            }
            out.push(m);
        }
    }

    fn typed_member(
        &self,
        def: &TypeDef,
        e: &ElementDef,
        name: String,
        t: &str,
        cx: &Ctx,
    ) -> Member {
        let mut m = Member {
            name,
            fhir_type: t.to_string(),
            repeated: e.repeated,
            shape: Shape::Json,
            prim_ext: false,
            cut: false,
        };
        match self.model.get(t) {
            _ if t == "BackboneElement" || t == "Element" => {
                let inner = Ctx {
                    in_backbone: true,
                    ..cx.clone()
                };
                m.shape = Shape::Struct(Arc::new(self.members(def, &e.path, &inner)));
            }
            Some(td) if td.kind == Kind::Primitive => {
                m.shape = Shape::Prim(Prim::of(t));
                m.prim_ext = cx.datatypes.is_empty() && !cx.in_backbone;
            }
            Some(td) if td.kind == Kind::Complex => {
                if cx.datatypes.len() >= MAX_DATATYPE_DEPTH || cx.datatypes.iter().any(|d| d == t) {
                    m.cut = true;
                } else {
                    let mut inner = cx.clone();
                    inner.datatypes.push(t.to_string());
                    m.shape = Shape::Struct(Arc::new(self.members(td, "", &inner)));
                }
            }
            // Resource, or a named resource type: kept whole as JSON.
            _ => m.shape = Shape::Json,
        }
        m
    }

    /// `extension` / `modifierExtension`. On a resource: extensions holding one more level of
    /// extensions. On a backbone element: `extension` without nesting. Anywhere else (datatypes,
    /// `modifierExtension` of backbone elements): overflow.
    fn extension_member(&self, name: &str, cx: &Ctx) -> Member {
        let nested = match (cx.datatypes.is_empty(), cx.in_backbone, name) {
            (true, false, "extension") => Some(true),
            (true, false, _) => Some(false),
            (true, true, "extension") => Some(false),
            _ => None,
        };
        let mut m = Member {
            name: name.to_string(),
            fhir_type: "Extension".into(),
            repeated: true,
            shape: Shape::Json,
            prim_ext: false,
            cut: true,
        };
        if let Some(nested) = nested {
            m.shape = Shape::Struct(self.extension_members(nested));
            m.cut = false;
        }
        m
    }

    /// The members of `Extension` (`nested`: with extensions of their own), made once per
    /// version: every element of every type has them, a thousand times in a wide type.
    fn extension_members(&self, nested: bool) -> Arc<Vec<Member>> {
        type Cells = [OnceLock<Arc<Vec<Member>>>; 2];
        static CACHE: [Cells; 3] = [
            [OnceLock::new(), OnceLock::new()],
            [OnceLock::new(), OnceLock::new()],
            [OnceLock::new(), OnceLock::new()],
        ];
        CACHE[self.version as usize][nested as usize]
            .get_or_init(|| self.make_extension_members(nested))
            .clone()
    }

    fn make_extension_members(&self, nested: bool) -> Arc<Vec<Member>> {
        let def = self
            .model
            .get("Extension")
            .expect("the model has Extension");
        // Values inside extensions are datatypes one level down: no extensions of their own.
        let cx = Ctx {
            datatypes: vec!["Extension".into()],
            ..Default::default()
        };
        let mut out = Vec::new();
        for e in def.elements.iter().filter(|e| e.parent().is_empty()) {
            if e.name() == "extension" {
                let mut m = self.extension_member("extension", &cx);
                if nested {
                    m.shape = Shape::Struct(self.extension_members(false));
                    m.cut = false;
                }
                out.push(m);
            } else {
                self.element(def, e, &cx, &mut out);
            }
        }
        Arc::new(out)
    }

    /// The extensions of a primitive (`_birthDate.extension`): typed values of primitive types
    /// only (data-absent-reason, original text); complex values go to overflow.
    fn primitive_extension_members(&self) -> Arc<Vec<Member>> {
        let mut members = (*self.extension_members(false)).clone();
        for m in &mut members {
            if m.name.starts_with("value") && matches!(m.shape, Shape::Struct(_)) {
                m.cut = true;
            }
        }
        Arc::new(members)
    }
}

/// The members of a resource type of a FHIR version, or None for a type the version does not
/// have.
pub fn resource_members(version: FhirVersion, resource_type: &str) -> Option<Arc<Vec<Member>>> {
    static CACHES: PerType<Arc<Vec<Member>>> = PerType::new();
    CACHES.get_or_make(version, resource_type, || {
        let model = version.model();
        let def = model
            .get(resource_type)
            .filter(|d| d.kind == Kind::Resource && !d.is_abstract)?;
        Some(Arc::new(Builder { model, version }.members(
            def,
            "",
            &Ctx::default(),
        )))
    })
}

/// Values made once per version and resource type, kept for the process (clones share them).
struct PerType<T>([OnceLock<RwLock<HashMap<String, T>>>; 3]);

impl<T: Clone> PerType<T> {
    const fn new() -> Self {
        PerType([OnceLock::new(), OnceLock::new(), OnceLock::new()])
    }

    /// The value of `resource_type`, made by `make` the first time (`None` is not kept).
    fn get_or_make(
        &self,
        version: FhirVersion,
        resource_type: &str,
        make: impl FnOnce() -> Option<T>,
    ) -> Option<T> {
        let cache = self.0[version as usize].get_or_init(Default::default);
        if let Some(v) = cache.read().unwrap().get(resource_type) {
            return Some(v.clone());
        }
        let made = make()?;
        cache
            .write()
            .unwrap()
            .insert(resource_type.to_string(), made.clone());
        Some(made)
    }
}

/// The Arrow fields of one member: the value column, its companion, its primitive extension.
pub fn member_fields(m: &Member) -> Vec<Field> {
    if m.cut {
        return Vec::new();
    }
    let mut out = Vec::new();
    let wrap = |dt: DataType| {
        if m.repeated {
            DataType::List(Arc::new(Field::new_list_field(dt, true)))
        } else {
            dt
        }
    };
    match &m.shape {
        Shape::Prim(p) => {
            out.push(Field::new(&m.name, wrap(p.data_type()), true));
            if let Some(c) = p.companion_type() {
                out.push(Field::new(
                    format!("{}{COMPANION_SUFFIX}", m.name),
                    wrap(c),
                    true,
                ));
            }
            if m.prim_ext {
                out.push(Field::new(
                    format!("_{}", m.name),
                    wrap(primitive_extension_type()),
                    true,
                ));
            }
        }
        Shape::Struct(children) => out.push(Field::new(
            &m.name,
            wrap(DataType::Struct(struct_fields(children))),
            true,
        )),
        Shape::Json => out.push(Field::new(&m.name, wrap(DataType::Utf8), true)),
    }
    out
}

pub fn struct_fields(members: &[Member]) -> Fields {
    members.iter().flat_map(member_fields).collect()
}

/// `_name` of a primitive: its `id` and its extensions. The same in every version (its typed
/// extension values are [`OPEN_CHOICE_TYPES`], in the order all three list them; tested).
pub fn primitive_extension_members() -> Arc<Vec<Member>> {
    static M: OnceLock<Arc<Vec<Member>>> = OnceLock::new();
    M.get_or_init(|| {
        let b = Builder {
            model: FhirVersion::R4.model(),
            version: FhirVersion::R4,
        };
        Arc::new(vec![
            Member {
                name: "id".into(),
                fhir_type: "string".into(),
                repeated: false,
                shape: Shape::Prim(Prim::String),
                prim_ext: false,
                cut: false,
            },
            Member {
                name: "extension".into(),
                fhir_type: "Extension".into(),
                repeated: true,
                shape: Shape::Struct(b.primitive_extension_members()),
                prim_ext: false,
                cut: false,
            },
        ])
    })
    .clone()
}

fn primitive_extension_type() -> DataType {
    DataType::Struct(struct_fields(&primitive_extension_members()))
}

/// The Arrow schema of a resource type's table in a FHIR version.
pub fn arrow_schema(version: FhirVersion, resource_type: &str) -> Option<Schema> {
    static CACHES: PerType<Schema> = PerType::new();
    CACHES.get_or_make(version, resource_type, || {
        let members = resource_members(version, resource_type)?;
        let mut fields: Vec<Field> = struct_fields(&members)
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(OVERFLOW_COLUMN, DataType::Utf8, true));
        Some(Schema::new(fields))
    })
}

/// Leaf columns (as Parquet counts them) under a type.
pub fn leaf_count(t: &DataType) -> usize {
    match t {
        DataType::List(f) | DataType::LargeList(f) => leaf_count(f.data_type()),
        DataType::Struct(fields) => fields.iter().map(|f| leaf_count(f.data_type())).sum(),
        _ => 1,
    }
}

/// Leaf columns (as Parquet counts them) and the deepest nesting of records (as BigQuery counts
/// them: a repeated field is not a level of its own).
pub fn width_and_depth(schema: &Schema) -> (usize, usize) {
    fn walk(dt: &DataType, depth: usize) -> (usize, usize) {
        match dt {
            DataType::Struct(fs) => fs.iter().fold((0, depth), |(n, d), f| {
                let (n2, d2) = walk(f.data_type(), depth + 1);
                (n + n2, d.max(d2))
            }),
            DataType::List(f) => walk(f.data_type(), depth),
            _ => (1, depth),
        }
    }
    schema.fields().iter().fold((0, 0), |(n, d), f| {
        let (n2, d2) = walk(f.data_type(), 1);
        (n + n2, d.max(d2))
    })
}

/// `schema` with only the leaf columns `kept` (over its leaves, in order) and the fields that
/// lead to them: a part of a typed schema, same names, types and nesting, same metadata.
pub fn prune_schema(schema: &Schema, kept: &[bool]) -> Arc<Schema> {
    let fields = prune_fields(schema.fields(), kept, &mut 0);
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

/// The fields of `fields` that lead to a kept leaf (`kept` over their leaves, in order; `next`
/// counts them), each with only such children.
pub fn prune_fields(fields: &Fields, kept: &[bool], next: &mut usize) -> Vec<FieldRef> {
    fields
        .iter()
        .filter_map(|f| prune_field(f, kept, next))
        .collect()
}

fn prune_field(f: &FieldRef, kept: &[bool], next: &mut usize) -> Option<FieldRef> {
    let with = |dt: DataType| Arc::new(f.as_ref().clone().with_data_type(dt));
    match f.data_type() {
        DataType::Struct(children) => {
            let pruned = prune_fields(children, kept, next);
            let whole = pruned.len() == children.len()
                && pruned
                    .iter()
                    .zip(children.iter())
                    .all(|(a, b)| Arc::ptr_eq(a, b));
            match (pruned.is_empty(), whole) {
                (true, _) => None,
                (false, true) => Some(f.clone()),
                (false, false) => Some(with(DataType::Struct(pruned.into()))),
            }
        }
        DataType::List(item) => {
            prune_field(item, kept, next).map(|i| match Arc::ptr_eq(&i, item) {
                true => f.clone(),
                false => with(DataType::List(i)),
            })
        }
        _ => {
            let k = kept[*next];
            *next += 1;
            k.then(|| f.clone())
        }
    }
}
