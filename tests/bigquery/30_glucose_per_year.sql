-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: DATE_TRUNC(date, YEAR)
SELECT DATE_TRUNC(DATE(TIMESTAMP(effective.dateTime)), YEAR) AS year, COUNT(*) AS n
FROM observation
WHERE code.coding[SAFE_OFFSET(0)].code = '2339-0'
GROUP BY 1
-- reference: DuckDB over the NDJSON
SELECT CAST(date_trunc('year', CAST(CAST(effectiveDateTime AS TIMESTAMPTZ) AS DATE)) AS DATE), COUNT(*)
FROM Observation WHERE code.coding[1].code = '2339-0' GROUP BY 1
