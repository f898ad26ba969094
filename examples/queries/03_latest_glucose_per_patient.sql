-- The latest glucose (LOINC 2339-0) value per patient.
SELECT patient, value, unit
FROM (
  SELECT reference_id(subject) AS patient,
         valueQuantity.value AS value,
         valueQuantity.unit AS unit,
         ROW_NUMBER() OVER (PARTITION BY reference_id(subject) ORDER BY effectiveDateTime_ts DESC) AS rn
  FROM Observation
  WHERE has_code(code, 'http://loinc.org', '2339-0')
)
WHERE rn = 1
ORDER BY patient;
