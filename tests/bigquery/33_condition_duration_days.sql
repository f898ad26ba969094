-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: DATE_DIFF over onset and abatement choices
SELECT code.coding[SAFE_OFFSET(0)].code AS code,
       AVG(DATE_DIFF(DATE(TIMESTAMP(abatement.dateTime)), DATE(TIMESTAMP(onset.dateTime)), DAY)) AS days
FROM condition
WHERE abatement.dateTime IS NOT NULL
GROUP BY 1
-- reference: DuckDB over the NDJSON
SELECT code.coding[1].code, AVG(CAST(CAST(abatementDateTime AS TIMESTAMPTZ) AS DATE) - CAST(CAST(onsetDateTime AS TIMESTAMPTZ) AS DATE))
FROM Condition WHERE abatementDateTime IS NOT NULL GROUP BY 1
