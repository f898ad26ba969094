-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: APPROX_TOP_COUNT, its structs unnested
SELECT t.value AS class, t.count AS encounters
FROM (SELECT APPROX_TOP_COUNT(class.code, 2) AS top_classes FROM encounter) x,
     UNNEST(x.top_classes) t
-- reference: DuckDB over the NDJSON
SELECT class.code, COUNT(*) FROM Encounter GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 2
