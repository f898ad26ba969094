-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: ARRAY(SELECT ... FROM UNNEST(...))
SELECT id, ARRAY_TO_STRING(ARRAY(SELECT c.code FROM UNNEST(code.coding) c), ',') AS codes
FROM condition
-- reference: DuckDB over the NDJSON
SELECT id, array_to_string(list_transform(code.coding, c -> c.code), ',') FROM Condition
