//! FHIRPath, the subset SQL on FHIR v2 requires: parsed ([`parse`]), compiled against the
//! schema ([`compile`]) and evaluated a batch at a time over Arrow arrays ([`eval`]).

pub mod compile;
pub mod eval;
pub mod parse;
