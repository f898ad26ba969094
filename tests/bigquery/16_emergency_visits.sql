-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: IF and LOGICAL_OR per patient
SELECT subject.patientId,
       LOGICAL_OR(class.code = 'EMER') AS had_emergency,
       IF(COUNT(*) > 20, 'frequent', 'occasional') AS visits
FROM encounter
GROUP BY 1
-- reference: DuckDB over the NDJSON
SELECT ref_id(subject, 'Patient'), bool_or(class.code = 'EMER'),
       CASE WHEN COUNT(*) > 20 THEN 'frequent' ELSE 'occasional' END
FROM Encounter GROUP BY 1
