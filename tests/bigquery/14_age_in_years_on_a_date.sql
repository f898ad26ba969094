-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: DATE_DIFF with EXTRACT(DATE FROM ...)
SELECT id, DATE_DIFF(DATE '2020-01-01', EXTRACT(DATE FROM TIMESTAMP(birthDate)), YEAR) AS year_boundaries
FROM patient
-- reference: DuckDB over the NDJSON
SELECT id, 2020 - year(CAST(birthDate AS DATE)) FROM Patient
