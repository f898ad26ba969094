-- source: written for this corpus, in the form of Google Cloud's BigQuery example over bigquery-public-data.fhir_synthea (patients with hypertension or diabetes and their medications), as reproduced in public Cloud Healthcare API tutorials: medication.codeableConcept and subject.patientId
SELECT medication.codeableConcept.coding[SAFE_OFFSET(0)].display AS medication,
       COUNT(DISTINCT subject.patientId) AS patients
FROM medication_request
GROUP BY 1
-- reference: DuckDB over the NDJSON
SELECT medicationCodeableConcept.coding[1].display, COUNT(DISTINCT ref_id(subject, 'Patient'))
FROM MedicationRequest GROUP BY 1
