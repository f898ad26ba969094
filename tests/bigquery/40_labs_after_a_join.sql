-- source: written for this corpus, in the form of a public cirrhosis-cohort pipeline over bigquery-public-data.fhir_synthea (its CTE 4: INNER JOIN observation, then CROSS JOIN UNNEST of the joined table's codings, SAFE_CAST(LEFT(... , 10) AS DATE)); the pipeline itself reads STU3 fields and extension slices (us_core_race) this schema does not have
WITH cohort AS (
  SELECT c.subject.patientId AS patient_id,
         MIN(SAFE_CAST(LEFT(c.onset.dateTime, 10) AS DATE)) AS t0_diagnosis_date
  FROM `bigquery-public-data.fhir_synthea.condition` AS c
  CROSS JOIN UNNEST(c.code.coding) AS cond_coding
  WHERE cond_coding.system = 'http://snomed.info/sct'
    AND REGEXP_CONTAINS(cond_coding.code, r'^15777000$')
  GROUP BY patient_id
)
SELECT
  cd.patient_id,
  obs_coding.code AS loinc_code,
  obs.value.quantity.value AS lab_value,
  SAFE_CAST(LEFT(obs.effective.dateTime, 10) AS DATE) AS observation_date
FROM
  cohort AS cd
INNER JOIN
  `bigquery-public-data.fhir_synthea.observation` AS obs ON cd.patient_id = obs.subject.patientId
CROSS JOIN
  UNNEST(obs.code.coding) AS obs_coding
WHERE
  obs_coding.system = 'http://loinc.org'
  AND obs_coding.code IN ('2339-0', '4548-4')
  AND obs.status IN ('final', 'amended', 'corrected')
  AND SAFE_CAST(LEFT(obs.effective.dateTime, 10) AS DATE) >= cd.t0_diagnosis_date
-- reference: DuckDB over the NDJSON
WITH cohort AS (
  SELECT ref_id(c.subject, 'Patient') AS pid, MIN(CAST(left(c.onsetDateTime, 10) AS DATE)) AS t0
  FROM Condition c, unnest(c.code.coding) AS t(cc)
  WHERE cc.system = 'http://snomed.info/sct' AND cc.code = '15777000' GROUP BY 1
)
SELECT cohort.pid, oc.code, o.valueQuantity.value, CAST(left(o.effectiveDateTime, 10) AS DATE)
FROM cohort JOIN Observation o ON cohort.pid = ref_id(o.subject, 'Patient'), unnest(o.code.coding) AS t(oc)
WHERE oc.system = 'http://loinc.org' AND oc.code IN ('2339-0', '4548-4')
  AND o.status IN ('final', 'amended', 'corrected') AND CAST(left(o.effectiveDateTime, 10) AS DATE) >= cohort.t0
