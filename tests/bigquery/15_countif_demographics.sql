-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: COUNTIF, double-quoted strings
SELECT COUNTIF(gender = 'male') AS males, COUNTIF(gender = "female") AS females,
       COUNTIF(deceased.dateTime IS NOT NULL) AS deceased
FROM patient
-- reference: DuckDB over the NDJSON
SELECT count(*) FILTER (WHERE gender = 'male'), count(*) FILTER (WHERE gender = 'female'),
       count(*) FILTER (WHERE deceasedDateTime IS NOT NULL) FROM Patient
