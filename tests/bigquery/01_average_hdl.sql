-- source: SQL on FHIR v1 draft, github.com/FHIR/sql-on-fhir (sql-on-fhir.md and examples/): sql-on-fhir.md's average HDL query as published
SELECT subject.reference,
       AVG(value.quantity.value) avg_hdl
FROM observation o,
     UNNEST(o.code.coding) c
WHERE c.system = 'http://loinc.org' AND
      c.code = '2085-9' AND
      o.effective.datetime > '2017'
GROUP BY subject.reference
-- reference: DuckDB over the NDJSON
SELECT o.subject.reference, AVG(o.valueQuantity.value)
FROM Observation o, unnest(o.code.coding) AS t(c)
WHERE c.system = 'http://loinc.org' AND c.code = '2085-9' AND o.effectiveDateTime > '2017'
GROUP BY 1
