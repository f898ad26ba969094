//! Options whose values are a few names (`--format delta|parquet`): each such enum lists its
//! values with their names and what they mean, so that the command line parses and explains
//! them (and a library caller can show them) without the library depending on a
//! command-line parser.
//!
//! ```
//! use fhir2parquet::choice::Choice;
//! use fhir2parquet::dataset::Format;
//! assert_eq!(Format::from_name("parquet"), Some(Format::Parquet));
//! assert_eq!(Format::Delta.name(), "delta");
//! ```

/// An enum of a few named values.
pub trait Choice: Copy + PartialEq + Send + Sync + 'static {
    /// Every value, in the order shown: the value, its name, what it means.
    const CHOICES: &'static [(Self, &'static str, &'static str)];
    /// Other names a value is also taken by.
    const ALIASES: &'static [(&'static str, Self)] = &[];

    /// The value's name.
    fn name(self) -> &'static str {
        Self::CHOICES
            .iter()
            .find(|c| c.0 == self)
            .map(|c| c.1)
            .expect("every value is listed")
    }

    /// The value of a name (or of an alias).
    fn from_name(name: &str) -> Option<Self> {
        Self::CHOICES
            .iter()
            .find(|c| c.1 == name)
            .map(|c| c.0)
            .or_else(|| Self::ALIASES.iter().find(|a| a.0 == name).map(|a| a.1))
    }
}
