-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: nested extensions unnested in FROM
SELECT ext2.value.coding.display AS race, COUNT(DISTINCT p.id) AS patients
FROM patient p, UNNEST(p.extension) ext, UNNEST(ext.extension) ext2
WHERE ext.url = 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race'
  AND ext2.url = 'ombCategory'
GROUP BY race
-- reference: DuckDB over the NDJSON
SELECT e2.valueCoding.display, COUNT(DISTINCT p.id)
FROM Patient p, unnest(p.extension) AS t1(e), unnest(e.extension) AS t2(e2)
WHERE e.url = 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race' AND e2.url = 'ombCategory'
GROUP BY 1
