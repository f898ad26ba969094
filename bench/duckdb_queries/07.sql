SELECT cat.coding[1].code AS category, COUNT(*) AS observations FROM (SELECT unnest(category) AS cat FROM {Observation}) GROUP BY 1 ORDER BY observations DESC, category
