-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: FORMAT_DATE over DATE(TIMESTAMP(...))
SELECT FORMAT_DATE('%Y-%m', DATE(TIMESTAMP(period.start))) AS month, COUNT(*) AS encounters
FROM encounter
GROUP BY month
ORDER BY month
-- reference: DuckDB over the NDJSON
SELECT strftime(CAST(period."start" AS TIMESTAMPTZ), '%Y-%m'), COUNT(*) FROM Encounter GROUP BY 1
