fn main() {
    let model = fhir2parquet::schema::FhirVersion::R4.model();
    let mut rows: Vec<_> = model
        .resource_types()
        .into_iter()
        .map(|t| {
            let s =
                fhir2parquet::schema::node::arrow_schema(fhir2parquet::schema::FhirVersion::R4, t)
                    .unwrap();
            let (w, d) = fhir2parquet::schema::node::width_and_depth(&s);
            (w, d, t)
        })
        .collect();
    rows.sort();
    for r in &rows {
        println!("{:>6} {:>3} {}", r.0, r.1, r.2);
    }
    println!("{} types", rows.len());
}
