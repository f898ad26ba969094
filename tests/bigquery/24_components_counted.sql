-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: (SELECT COUNT(*) FROM UNNEST(...))
SELECT (SELECT COUNT(*) FROM UNNEST(component)) AS components, COUNT(*) AS observations
FROM observation
GROUP BY 1
-- reference: DuckDB over the NDJSON
SELECT len(coalesce(component, [])), COUNT(*) FROM Observation GROUP BY 1
