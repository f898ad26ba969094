-- Patients by US Core race (a nested extension), text form.
SELECT extension_value(extension, 'http://hl7.org/fhir/us/core/StructureDefinition/us-core-race', 'text') AS race,
       COUNT(*) AS patients
FROM Patient
GROUP BY 1
ORDER BY patients DESC, race;
