-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: TIMESTAMP and TIMESTAMP_DIFF over the schema's dateTime strings
SELECT id, TIMESTAMP_DIFF(TIMESTAMP(deceased.dateTime), TIMESTAMP(birthDate), DAY) AS days_lived
FROM patient
WHERE deceased.dateTime IS NOT NULL
-- reference: DuckDB over the NDJSON
SELECT id, CAST(trunc((epoch(CAST(deceasedDateTime AS TIMESTAMPTZ)) - epoch(CAST(birthDate AS TIMESTAMPTZ))) / 86400) AS BIGINT)
FROM Patient WHERE deceasedDateTime IS NOT NULL
