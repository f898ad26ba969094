-- source: Google Cloud's BigQuery example over bigquery-public-data.fhir_synthea (patients with hypertension or diabetes and their medications), as reproduced in public Cloud Healthcare API tutorials; ≥ 1 medication instead of 7 and Prediabetes for Diabetes, for the small sample
SELECT
  MR.patientId,
  P.last_name,
  ARRAY_TO_STRING(P.first_name, " ") AS First_name,
  Condition.Codes,
  Condition.Conditions,
  MR.med_count
FROM
  (SELECT
    id,
    name[safe_offset(0)].family as last_name,
    name[safe_offset(0)].given as first_name,
    TIMESTAMP(deceased.dateTime) AS deceased_datetime
  FROM `bigquery-public-data.fhir_synthea.patient`) AS P
JOIN
  (SELECT  subject.patientId as patientId,
           COUNT(DISTINCT medication.codeableConcept.coding[safe_offset(0)].code) AS med_count
   FROM    `bigquery-public-data.fhir_synthea.medication_request`
   WHERE   status = 'active'
   GROUP BY 1
   ) AS MR
ON MR.patientId = P.id
JOIN
  (SELECT
  PatientId,
  STRING_AGG(DISTINCT condition_desc, ", ") AS Conditions,
  STRING_AGG(DISTINCT condition_code, ", ") AS Codes
  FROM(
    SELECT
      subject.patientId as PatientId,
              code.coding[safe_offset(0)].code condition_code,
              code.coding[safe_offset(0)].display condition_desc
       FROM `bigquery-public-data.fhir_synthea.condition`
       wHERE
         code.coding[safe_offset(0)].display = 'Prediabetes'
         OR
         code.coding[safe_offset(0)].display = 'Hypertension'
    )
  GROUP BY PatientId
  ) AS Condition
ON MR.patientId = Condition.PatientId
WHERE med_count >= 1
AND P.deceased_datetime is NULL /*only alive patients*/
GROUP BY patientId, last_name, first_name, Condition.Codes, Condition.Conditions, MR.med_count
ORDER BY last_name
-- reference: DuckDB over the NDJSON
WITH p AS (SELECT id, name[1].family AS last_name, array_to_string(name[1].given, ' ') AS first_name
           FROM Patient WHERE deceasedDateTime IS NULL),
mr AS (SELECT ref_id(subject, 'Patient') AS pid, COUNT(DISTINCT medicationCodeableConcept.coding[1].code) AS n
       FROM MedicationRequest WHERE status = 'active' GROUP BY 1),
c AS (SELECT ref_id(subject, 'Patient') AS pid,
             string_agg(DISTINCT code.coding[1].display, ', ' ORDER BY code.coding[1].display) AS conditions,
             string_agg(DISTINCT code.coding[1].code, ', ' ORDER BY code.coding[1].code) AS codes
      FROM Condition WHERE code.coding[1].display IN ('Prediabetes', 'Hypertension') GROUP BY 1)
SELECT mr.pid, p.last_name, p.first_name, c.codes, c.conditions, mr.n
FROM p JOIN mr ON mr.pid = p.id JOIN c ON c.pid = mr.pid WHERE mr.n >= 1
