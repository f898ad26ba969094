-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: NOT EXISTS over another table, correlated by patientId
SELECT p.gender, COUNT(*) AS n
FROM patient p
WHERE NOT EXISTS (
  SELECT 1 FROM condition c
  WHERE c.subject.patientId = p.id AND c.code.coding[SAFE_OFFSET(0)].display = "Hypertension")
GROUP BY 1
-- reference: DuckDB over the NDJSON
SELECT p.gender, COUNT(*) FROM Patient p
WHERE NOT EXISTS (SELECT 1 FROM Condition c WHERE ref_id(c.subject, 'Patient') = p.id AND c.code.coding[1].display = 'Hypertension')
GROUP BY 1
