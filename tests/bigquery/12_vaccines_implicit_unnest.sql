-- source: written for this corpus, in the form of SQL on FHIR v1 draft, github.com/FHIR/sql-on-fhir (sql-on-fhir.md and examples/): the implicit UNNEST of a path in FROM (observation o, o.code.coding c)
SELECT c.display, COUNT(*) AS doses
FROM immunization i, i.vaccineCode.coding c
GROUP BY c.display
-- reference: DuckDB over the NDJSON
SELECT c.display, COUNT(*) FROM Immunization i, unnest(i.vaccineCode.coding) AS t(c) GROUP BY 1
