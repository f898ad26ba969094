-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: SAFE_DIVIDE of two COUNTIFs
SELECT subject.patientId, SAFE_DIVIDE(COUNTIF(status = 'stopped'), COUNT(*)) AS stopped_share
FROM medication_request
GROUP BY 1
-- reference: DuckDB over the NDJSON
SELECT ref_id(subject, 'Patient'), (count(*) FILTER (WHERE status = 'stopped'))::DOUBLE / COUNT(*)
FROM MedicationRequest GROUP BY 1
