#![no_main]
//! See `fhir2parquet::fuzz::view`.
libfuzzer_sys::fuzz_target!(|data: &[u8]| fhir2parquet::fuzz::view(data));
