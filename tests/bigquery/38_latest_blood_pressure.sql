-- source: a public Synthea-on-BigQuery analysis (github README, "Use Case 2: High Blood Pressure", over bigquery-public-data.fhir_synthea.observation): the DECLARE/SET script variables written as their dates, STU3's context.encounterId as R4's encounter.encounterId; its # comment, patientID and O.issued as published
SELECT o.id AS observation_id,
  o.subject.patientId AS patient_id,
  o.encounter.encounterId AS encounter_id,
  o.value.quantity.value AS obs_value,
  o.value.quantity.unit AS obs_unit,
  o.code.coding[safe_offset(0)].code AS obs_code,
  o.code.text AS obs_desc,
  o.category[safe_offset(0)].coding[safe_offset(0)].code AS cat_code,
  o.component[safe_offset(0)].code.text AS comp_code1,
  o.component[safe_offset(0)].value.quantity.value AS comp_val1,
  o.component[safe_offset(0)].value.quantity.unit AS comp_unit1,
    o.component[safe_offset(1)].code.text AS comp_code2,
  o.component[safe_offset(1)].value.quantity.value AS comp_val2,
  o.component[safe_offset(1)].value.quantity.unit AS comp_unit2,
  O.issued,
  o.status,
  #partition by patient, order by issued date desc (latest on top)
  ROW_NUMBER() OVER
  ( PARTITION BY o.subject.patientID
    ORDER BY o.issued DESC
  ) AS latest
FROM `bigquery-public-data.fhir_synthea.observation` o
WHERE 1=1
AND code.text LIKE '%Blood Pressure%'
AND o.status = 'final'
AND CAST(o.issued AS DATE) BETWEEN '2015-01-01' AND '2018-12-31'
-- reference: DuckDB over the NDJSON
SELECT o.id, ref_id(o.subject, 'Patient'), ref_id(o.encounter, 'Encounter'),
  o.valueQuantity.value, o.valueQuantity.unit, o.code.coding[1].code, o.code.text,
  o.category[1].coding[1].code,
  o.component[1].code.text, o.component[1].valueQuantity.value, o.component[1].valueQuantity.unit,
  o.component[2].code.text, o.component[2].valueQuantity.value, o.component[2].valueQuantity.unit,
  strftime(CAST(o.issued AS TIMESTAMPTZ), '%Y-%m-%dT%H:%M:%S.%gZ'), o.status,
  ROW_NUMBER() OVER (PARTITION BY ref_id(o.subject, 'Patient') ORDER BY CAST(o.issued AS TIMESTAMPTZ) DESC)
FROM Observation o
WHERE o.code.text LIKE '%Blood Pressure%' AND o.status = 'final'
  AND CAST(CAST(o.issued AS TIMESTAMPTZ) AS DATE) BETWEEN DATE '2015-01-01' AND DATE '2018-12-31'
