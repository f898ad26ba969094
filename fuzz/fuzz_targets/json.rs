#![no_main]
//! See `fhir2parquet::fuzz::json`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fhir2parquet::fuzz::json(data));
