-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: TIMESTAMP_ADD with an INTERVAL
SELECT class.code, COUNT(*) AS n
FROM encounter
WHERE TIMESTAMP(period.end) <= TIMESTAMP_ADD(TIMESTAMP(period.start), INTERVAL 30 MINUTE)
GROUP BY 1
-- reference: DuckDB over the NDJSON
SELECT class.code, COUNT(*) FROM Encounter
WHERE CAST(period."end" AS TIMESTAMPTZ) <= CAST(period."start" AS TIMESTAMPTZ) + INTERVAL 30 MINUTE GROUP BY 1
