-- source: a public BigQuery exercise over bigquery-public-data.fhir_synthea (living patients with a single condition and their medications); family names from T instead of A, no LIMIT (ties)
WITH alive_patients AS (
  SELECT DISTINCT
    p.id AS patient_id
  FROM
    `bigquery-public-data.fhir_synthea.patient` AS p,
    UNNEST(p.name) AS n
  WHERE
    (p.deceased.boolean IS FALSE OR p.deceased.boolean IS NULL)
    AND STARTS_WITH(UPPER(n.family), 'T')
),
patients_with_one_condition AS (
  SELECT
    c.subject.patientId AS patient_id,
    ANY_VALUE(coding.code) AS condition_code,
    ANY_VALUE(coding.display) AS condition_name
  FROM
    `bigquery-public-data.fhir_synthea.condition` AS c
    LEFT JOIN UNNEST(c.code.coding) AS coding
  WHERE
    c.subject.patientId IN (SELECT patient_id FROM alive_patients)
  GROUP BY
    c.subject.patientId
  HAVING
    COUNT(DISTINCT coding.code) = 1
),
patient_medication_counts AS (
  SELECT
    mr.subject.patientId AS patient_id,
    COUNT(DISTINCT med_coding.code) AS medication_count
  FROM
    `bigquery-public-data.fhir_synthea.medication_request` AS mr
    LEFT JOIN UNNEST(mr.medication.codeableConcept.coding) AS med_coding
  WHERE
    mr.subject.patientId IN (SELECT patient_id FROM patients_with_one_condition)
  GROUP BY
    mr.subject.patientId
)
SELECT
  p.condition_name AS Condition_Name,
  p.condition_code AS Condition_Code,
  MAX(pm.medication_count) AS Max_Number_of_Different_Meds_Prescribed
FROM
  patients_with_one_condition AS p
  LEFT JOIN patient_medication_counts AS pm
  ON p.patient_id = pm.patient_id
GROUP BY 1, 2
ORDER BY Max_Number_of_Different_Meds_Prescribed DESC
-- reference: DuckDB over the NDJSON
WITH alive AS (SELECT DISTINCT p.id FROM Patient p, unnest(p.name) AS t(n)
               WHERE upper(n.family) LIKE 'T%'), -- no Patient of the NDJSON has deceasedBoolean
one AS (SELECT ref_id(c.subject, 'Patient') AS pid, min(coding.code) AS code, min(coding.display) AS name
        FROM Condition c LEFT JOIN unnest(c.code.coding) AS t(coding) ON TRUE
        WHERE ref_id(c.subject, 'Patient') IN (SELECT id FROM alive)
        GROUP BY 1 HAVING COUNT(DISTINCT coding.code) = 1),
meds AS (SELECT ref_id(m.subject, 'Patient') AS pid, COUNT(DISTINCT mc.code) AS n
         FROM MedicationRequest m LEFT JOIN unnest(m.medicationCodeableConcept.coding) AS t(mc) ON TRUE
         WHERE ref_id(m.subject, 'Patient') IN (SELECT pid FROM one) GROUP BY 1)
SELECT one.name, one.code, MAX(meds.n) FROM one LEFT JOIN meds ON one.pid = meds.pid GROUP BY 1, 2
