//! The FHIR schema: the model generated from the specification ([`generate`], [`model`]) and its
//! mapping to Arrow ([`node`]). The mapping is documented in `docs/schema.md`.

pub mod generate;
pub mod model;
pub mod node;
pub mod print;

use std::sync::OnceLock;

pub use model::Model;

/// The version of the mapping from the FHIR model to Arrow. Bump it whenever a column changes.
pub const SCHEMA_VERSION: &str = "3";

static R4_MODEL_TEXT: &str = include_str!("../../schemas/r4/model.json");

/// The embedded FHIR R4 (4.0.1) model.
pub fn r4() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| Model::parse(R4_MODEL_TEXT).expect("the embedded R4 model parses"))
}
