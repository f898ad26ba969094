SELECT year(CAST(period.start AS TIMESTAMPTZ)) AS year, COUNT(*) AS encounters FROM {Encounter} GROUP BY 1 ORDER BY 1
