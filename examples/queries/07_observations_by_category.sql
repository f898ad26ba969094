-- Observations by category code.
SELECT code_of(cat, NULL) AS category, COUNT(*) AS observations
FROM (SELECT unnest(category) AS cat FROM Observation)
GROUP BY 1
ORDER BY observations DESC, category;
