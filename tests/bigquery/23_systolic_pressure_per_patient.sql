-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: a scalar subquery over the row's components
SELECT subject.patientId,
       AVG((SELECT comp.value.quantity.value FROM UNNEST(o.component) comp
            WHERE comp.code.coding[SAFE_OFFSET(0)].code = '8480-6')) AS systolic
FROM observation o
WHERE o.code.coding[SAFE_OFFSET(0)].code = '55284-4'
GROUP BY 1
-- reference: DuckDB over the NDJSON
SELECT ref_id(o.subject, 'Patient'),
       AVG((SELECT c.valueQuantity.value FROM unnest(o.component) AS t(c) WHERE c.code.coding[1].code = '8480-6'))
FROM Observation o WHERE o.code.coding[1].code = '55284-4' GROUP BY 1
