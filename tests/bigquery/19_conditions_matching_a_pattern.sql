-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: REGEXP_CONTAINS
SELECT code.coding[SAFE_OFFSET(0)].display AS condition, COUNT(*) AS n
FROM condition
WHERE REGEXP_CONTAINS(code.coding[SAFE_OFFSET(0)].display, r'(?i)diabet|hypertens')
GROUP BY 1
-- reference: DuckDB over the NDJSON
SELECT code.coding[1].display, COUNT(*) FROM Condition
WHERE regexp_matches(code.coding[1].display, '(?i)diabet|hypertens') GROUP BY 1
