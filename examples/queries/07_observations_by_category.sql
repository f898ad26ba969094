-- Observations by category code.
SELECT code_of(cat, NULL) AS category, COUNT(*) AS observations
FROM Observation o, UNNEST(o.category) AS cat
GROUP BY 1
ORDER BY observations DESC, category;
