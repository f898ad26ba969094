-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: APPROX_QUANTILES(x, 2)[OFFSET(1)]
SELECT APPROX_QUANTILES(value.quantity.value, 2)[OFFSET(1)] AS median_bmi
FROM observation
WHERE code.coding[SAFE_OFFSET(0)].code = '39156-5'
-- reference: DuckDB over the NDJSON
SELECT quantile_cont(valueQuantity.value, 0.5) FROM Observation WHERE code.coding[1].code = '39156-5'
