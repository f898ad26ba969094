-- source: SQL on FHIR v1 draft, github.com/FHIR/sql-on-fhir (sql-on-fhir.md and examples/) (diabetics_with_high_hba1c.sql; R4's verificationStatus is a CodeableConcept, so its code is compared; HbA1c above 5.8 since 2010 instead of 6.5 since 2017, for rows of the sample)
WITH diabetics as (
  SELECT DISTINCT subject.reference person_ref
  FROM condition,
       UNNEST(code.coding) coding
  WHERE verificationstatus.coding[OFFSET(0)].code = 'confirmed' AND
        coding.system = 'http://snomed.info/sct' AND
        (coding.code = '15777000' OR
         coding.code = '44054006')
),
hba1c_values as (
  SELECT subject.reference person_ref,
         value.quantity.value,
         value.quantity.unit,
         coding.system,
         coding.code,
         coding.display,
         effectivedatetime
  FROM observation o,
       UNNEST(code.coding) coding
  WHERE coding.system = 'http://loinc.org' AND
        coding.code = '4548-4' AND
        status = 'final'
)
SELECT d.person_ref,
       h.value,
       h.display result_display,
       h.effectivedatetime
FROM diabetics d
JOIN hba1c_values h ON d.person_ref = h.person_ref
WHERE h.value > 5.8 AND
      h.effectivedatetime > '2010'
-- reference: DuckDB over the NDJSON
WITH diabetics AS (
  SELECT DISTINCT c.subject.reference AS person_ref
  FROM Condition c, unnest(c.code.coding) AS t(coding)
  WHERE c.verificationStatus.coding[1].code = 'confirmed' AND coding.system = 'http://snomed.info/sct'
    AND coding.code IN ('15777000', '44054006')
), h AS (
  SELECT o.subject.reference AS person_ref, o.valueQuantity.value AS value, coding.display, o.effectiveDateTime
  FROM Observation o, unnest(o.code.coding) AS t(coding)
  WHERE coding.system = 'http://loinc.org' AND coding.code = '4548-4' AND o.status = 'final'
)
SELECT d.person_ref, h.value, h.display, h.effectiveDateTime
FROM diabetics d JOIN h ON d.person_ref = h.person_ref
WHERE h.value > 5.8 AND h.effectiveDateTime > '2010'
