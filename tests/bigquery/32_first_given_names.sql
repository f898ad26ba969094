-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: UNNEST ... WITH OFFSET
SELECT p.id, g AS first_given
FROM patient p, UNNEST(p.name) n, UNNEST(n.given) g WITH OFFSET pos
WHERE n.use = 'official' AND pos = 0
-- reference: DuckDB over the NDJSON
SELECT p.id, n.given[1] FROM Patient p, unnest(p.name) AS t(n) WHERE n.use = 'official' AND len(n.given) > 0
