-- Immunizations by CVX vaccine code, with the number of patients.
SELECT code_of(vaccineCode, 'http://hl7.org/fhir/sid/cvx') AS cvx,
       vaccineCode.text AS vaccine,
       COUNT(*) AS doses,
       COUNT(DISTINCT reference_id(patient)) AS patients
FROM Immunization
GROUP BY 1, 2
ORDER BY doses DESC, cvx;
