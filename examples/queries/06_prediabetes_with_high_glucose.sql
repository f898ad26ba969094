-- A cohort: patients with prediabetes (SNOMED 15777000) and a glucose (LOINC 2339-0) above 95 mg/dL.
SELECT DISTINCT reference_id(c.subject) AS patient
FROM Condition c
JOIN Observation o ON reference_id(o.subject) = reference_id(c.subject)
WHERE has_code(c.code, 'http://snomed.info/sct', '15777000')
  AND has_code(o.code, 'http://loinc.org', '2339-0')
  AND o.valueQuantity.value > 95
ORDER BY patient;
