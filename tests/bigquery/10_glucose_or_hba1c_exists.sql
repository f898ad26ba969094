-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: EXISTS over the row's codings
SELECT code.text, COUNT(*) AS n
FROM observation o
WHERE EXISTS (SELECT 1 FROM UNNEST(o.code.coding) c
              WHERE c.system = 'http://loinc.org' AND c.code IN ('2339-0', '4548-4'))
GROUP BY code.text
-- reference: DuckDB over the NDJSON
SELECT o.code.text, COUNT(*) FROM Observation o
WHERE EXISTS (SELECT 1 FROM unnest(o.code.coding) AS t(c) WHERE c.system = 'http://loinc.org' AND c.code IN ('2339-0', '4548-4'))
GROUP BY 1
