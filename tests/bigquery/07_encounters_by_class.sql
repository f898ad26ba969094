-- source: a public FHIR analytics SQL template for the Cloud Healthcare API's BigQuery schema (encounters by class, subject.patientId AS patientId): the CTE of its active-encounters macro as published without its template parameters, the outer count ours
WITH Enc AS (
  SELECT
    id,
    subject.patientId AS patientId,
    CASE WHEN UPPER(class.code) IN ('IMP', 'ACUTE', 'NONAC') THEN 'IMP/ACUTE/NONAC' ELSE class.code END AS encounter_class
  FROM Encounter
)
SELECT encounter_class, COUNT(*) AS encounters, COUNT(DISTINCT patientId) AS patients
FROM Enc
GROUP BY encounter_class
-- reference: DuckDB over the NDJSON
SELECT CASE WHEN upper(class.code) IN ('IMP', 'ACUTE', 'NONAC') THEN 'IMP/ACUTE/NONAC' ELSE class.code END,
       COUNT(*), COUNT(DISTINCT ref_id(subject, 'Patient'))
FROM Encounter GROUP BY 1
