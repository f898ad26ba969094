-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: a scalar subquery over the row's extensions, as the Healthcare API's BigQuery how-to writes it
SELECT
  id,
  (SELECT value.string FROM UNNEST(extension) WHERE url = 'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName') AS maiden_name
FROM patient
-- reference: DuckDB over the NDJSON
SELECT p.id, (SELECT e.valueString FROM unnest(p.extension) AS t(e)
              WHERE e.url = 'http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName') FROM Patient p
