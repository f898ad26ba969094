//! Regenerates the committed schema model from FHIR StructureDefinitions.
//!
//! Usage: `fhir-schema-gen DEFINITIONS_DIR OUT_DIR`, for example
//! `cargo run --bin fhir-schema-gen -- ../shared/fhir-definitions/r4 schemas/r4`.

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [defs, out] = args.as_slice() else {
        anyhow::bail!("usage: fhir-schema-gen DEFINITIONS_DIR OUT_DIR");
    };
    let model = fhir2parquet::schema::generate::generate_model(&PathBuf::from(defs))?;
    let out = PathBuf::from(out);
    fs_err::create_dir_all(&out)?;
    fs_err::write(out.join("model.json"), model)?;
    eprintln!("wrote {}", out.join("model.json").display());
    Ok(())
}
