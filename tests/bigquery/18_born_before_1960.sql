-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: PARSE_DATE
SELECT COUNT(*) AS n FROM patient WHERE PARSE_DATE('%Y-%m-%d', birthDate) < DATE '1960-01-01'
-- reference: DuckDB over the NDJSON
SELECT COUNT(*) FROM Patient WHERE CAST(birthDate AS DATE) < DATE '1960-01-01'
