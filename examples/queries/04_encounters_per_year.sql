-- Encounters per year of their start.
SELECT CAST(date_part('year', fhir_date_start(period.start)) AS INT) AS year, COUNT(*) AS encounters
FROM Encounter
GROUP BY 1
ORDER BY 1;
