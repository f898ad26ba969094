-- source: SQL on FHIR v1 draft, github.com/FHIR/sql-on-fhir (sql-on-fhir.md and examples/): examples/average_hdl.sql as published, its date 2015 instead of 2017 (more rows of the sample)
SELECT subject.reference,
       AVG(value.quantity.value) avg_hdl
FROM observation o,
     UNNEST(o.code.coding) c
WHERE c.system = 'http://loinc.org' AND
      c.code = '2085-9' AND
      o.effectivedatetime > '2015'
GROUP BY subject.reference
-- reference: DuckDB over the NDJSON
SELECT o.subject.reference, AVG(o.valueQuantity.value)
FROM Observation o, unnest(o.code.coding) AS t(c)
WHERE c.system = 'http://loinc.org' AND c.code = '2085-9' AND o.effectiveDateTime > '2015'
GROUP BY 1
