-- Medication requests per patient, with the patient's name.
SELECT p.id AS patient, p.name[1].family AS family, COUNT(m.id) AS requests
FROM Patient p
LEFT JOIN MedicationRequest m ON reference_id(m.subject) = p.id
GROUP BY 1, 2
ORDER BY requests DESC, patient;
