-- source: google-fhir-views (github.com/google/fhir-py), the SQL its BigQuery runner generates for a view of Observation (id, status, issued, and the subject's patientId)
SELECT (SELECT id) AS id,(SELECT status) AS status,(SELECT issued) AS time,(SELECT subject.patientId AS idFor_) AS __patientId__ FROM `test_project.test_dataset`.Observation
-- reference: DuckDB over the NDJSON
-- (an instant reads back as UTC to the millisecond)
SELECT id, status, strftime(CAST(issued AS TIMESTAMPTZ), '%Y-%m-%dT%H:%M:%S.%gZ'), ref_id(subject, 'Patient') FROM Observation
