-- The five most common conditions (SNOMED CT code and display), ties by code.
SELECT c.code AS code, c.display AS display, COUNT(*) AS conditions
FROM Condition cond, UNNEST(cond.code.coding) AS c
WHERE c.system = 'http://snomed.info/sct'
GROUP BY 1, 2
ORDER BY conditions DESC, code
LIMIT 5;
