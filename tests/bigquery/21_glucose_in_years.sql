-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: IN UNNEST(GENERATE_ARRAY(...))
SELECT EXTRACT(YEAR FROM TIMESTAMP(effective.dateTime)) AS year, COUNT(*) AS n
FROM observation
WHERE code.coding[SAFE_OFFSET(0)].code = '2339-0'
  AND EXTRACT(YEAR FROM TIMESTAMP(effective.dateTime)) IN UNNEST(GENERATE_ARRAY(2012, 2018, 2))
GROUP BY year
-- reference: DuckDB over the NDJSON
SELECT year(CAST(effectiveDateTime AS TIMESTAMPTZ)), COUNT(*) FROM Observation
WHERE code.coding[1].code = '2339-0' AND year(CAST(effectiveDateTime AS TIMESTAMPTZ)) IN (2012, 2014, 2016, 2018)
GROUP BY 1
