-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: value IN UNNEST(array)
SELECT COUNT(*) AS n FROM patient p WHERE 'Mr.' IN UNNEST(p.name[SAFE_OFFSET(0)].prefix)
-- reference: DuckDB over the NDJSON
SELECT COUNT(*) FROM Patient p WHERE list_contains(p.name[1].prefix, 'Mr.')
