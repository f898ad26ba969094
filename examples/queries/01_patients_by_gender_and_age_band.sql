-- Patients by gender and age band (age on 2020-01-01, in decades).
SELECT gender,
       CAST(FLOOR((EXTRACT(EPOCH FROM TIMESTAMP '2020-01-01T00:00:00Z') - EXTRACT(EPOCH FROM birthDate_ts))
                  / 31557600 / 10) * 10 AS INT) AS age_band,
       COUNT(*) AS patients
FROM Patient
GROUP BY 1, 2
ORDER BY 1, 2;
