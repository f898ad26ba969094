-- source: a public Pulumi program querying bigquery-public-data.fhir_synthea (patients by postal code with given observation or condition codes); the codes those of the small Synthea sample (glucose, prediabetes) instead of the program's
SELECT
  address_entry.postalCode,
  COUNT(*) as patients
FROM `bigquery-public-data.fhir_synthea.patient`,
UNNEST(address) AS address_entry
WHERE id in (
  SELECT DISTINCT subject.patientId
  FROM
    `bigquery-public-data.fhir_synthea.observation`,
    UNNEST(code.coding) AS coding_entry
  WHERE
    CAST(coding_entry.code AS STRING) IN ("2339-0", "84215-3", "75443-2", "71802-3")

  UNION DISTINCT

  SELECT DISTINCT subject.patientId
  FROM
    `bigquery-public-data.fhir_synthea.condition`,
    UNNEST(code.coding) AS coding_entry
  WHERE
    CAST(coding_entry.code AS STRING) IN ("15777000", "225444004", "370143000", "287185009", "86849004", "287182007")
)
GROUP BY address_entry.postalCode
-- reference: DuckDB over the NDJSON
SELECT a.postalCode, COUNT(*) FROM Patient p, unnest(p.address) AS t(a)
WHERE p.id IN (
  SELECT ref_id(o.subject, 'Patient') FROM Observation o, unnest(o.code.coding) AS t(c) WHERE c.code IN ('2339-0', '84215-3', '75443-2', '71802-3')
  UNION
  SELECT ref_id(x.subject, 'Patient') FROM Condition x, unnest(x.code.coding) AS t(c) WHERE c.code IN ('15777000', '225444004', '370143000', '287185009', '86849004', '287182007'))
GROUP BY 1
