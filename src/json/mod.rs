//! A small JSON document model that keeps what FHIR needs to stay lossless: numbers keep their
//! exact text, object members keep their order, strings borrow from the input where they can.
//!
//! ```
//! use fhir2parquet::json::{parse, Json};
//! let doc = parse(r#"{"value": 1.50, "unit": "mg"}"#).unwrap();
//! let Json::Obj(members) = &doc else { panic!() };
//! assert_eq!(members[0].1, Json::Num("1.50".into()));
//! assert_eq!(doc.to_string(), r#"{"value":1.50,"unit":"mg"}"#);
//! ```

mod parse;
mod write;

use std::borrow::Cow;

pub use parse::{parse, parse_in, ParseError};
pub use write::{escape_pointer_token, write_json_string};

/// A parsed JSON value borrowing from its input line.
#[derive(Debug, Clone, PartialEq)]
pub enum Json<'a> {
    Null,
    Bool(bool),
    /// A number, as its exact text.
    Num(Cow<'a, str>),
    Str(Cow<'a, str>),
    /// Items: in the parser's arena ([`parse_in`]) or owned.
    Arr(Cow<'a, [Json<'a>]>),
    /// Members in their order: in the parser's arena ([`parse_in`]) or owned.
    Obj(Cow<'a, [(Cow<'a, str>, Json<'a>)]>),
}

impl<'a> Json<'a> {
    /// The member `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json<'a>> {
        match self {
            Json::Obj(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Json::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The JSON type's name, for messages (never the value: it may be patient data).
    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "boolean",
            Json::Num(_) => "number",
            Json::Str(_) => "string",
            Json::Arr(_) => "array",
            Json::Obj(_) => "object",
        }
    }

    /// Appends the compact JSON text of this value.
    pub fn write_to(&self, out: &mut String) {
        write::write_value(self, out)
    }

    /// Whether two documents are equal as FHIR JSON: object member order aside, numbers by their
    /// exact text.
    pub fn same_as(&self, other: &Json) -> bool {
        match (self, other) {
            (Json::Obj(a), Json::Obj(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .all(|(k, v)| b.iter().any(|(k2, v2)| k == k2 && v.same_as(v2)))
            }
            (Json::Arr(a), Json::Arr(b)) => {
                a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| x.same_as(y))
            }
            (Json::Null, Json::Null) => true,
            (Json::Bool(a), Json::Bool(b)) => a == b,
            (Json::Num(a), Json::Num(b)) | (Json::Str(a), Json::Str(b)) => a == b,
            _ => false,
        }
    }
}

impl std::fmt::Display for Json<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        self.write_to(&mut s);
        f.write_str(&s)
    }
}

impl Json<'_> {
    /// The value with object members sorted by name, recursively: equal for documents that are
    /// [`Json::same_as`] each other.
    pub fn canonical(&self) -> String {
        fn sorted<'b>(v: &Json<'b>) -> Json<'b> {
            match v {
                Json::Obj(m) => {
                    let mut m: Vec<_> = m.iter().map(|(k, v)| (k.clone(), sorted(v))).collect();
                    m.sort_by(|a, b| a.0.cmp(&b.0));
                    Json::Obj(Cow::Owned(m))
                }
                Json::Arr(a) => Json::Arr(a.iter().map(sorted).collect()),
                v => v.clone(),
            }
        }
        sorted(self).to_string()
    }

    /// A copy that owns all its text.
    pub fn into_owned(self) -> Json<'static> {
        match self {
            Json::Null => Json::Null,
            Json::Bool(b) => Json::Bool(b),
            Json::Num(n) => Json::Num(Cow::Owned(n.into_owned())),
            Json::Str(s) => Json::Str(Cow::Owned(s.into_owned())),
            Json::Arr(a) => Json::Arr(a.into_owned().into_iter().map(Json::into_owned).collect()),
            Json::Obj(m) => Json::Obj(
                m.into_owned()
                    .into_iter()
                    .map(|(k, v)| (Cow::Owned(k.into_owned()), v.into_owned()))
                    .collect(),
            ),
        }
    }
}
