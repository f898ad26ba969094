-- source: google-fhir-views (github.com/google/fhir-py), the SQL its BigQuery runner generates for a view of Patient: each column a FROM-less scalar subquery
SELECT (SELECT birthDate) AS birthDate,(SELECT id) AS __patientId__ FROM `test_project.test_dataset`.Patient
-- reference: DuckDB over the NDJSON
SELECT birthDate, id FROM Patient
