-- source: written for this corpus, in BigQuery's documented functions and FROM forms (cloud.google.com/bigquery/docs/reference/standard-sql), applied to the Healthcare API's FHIR schema as its how-to pages do: names in any case, a project and dataset before the table
SELECT Gender, COUNT(*) AS n FROM `my-project.fhir_r4.Patient` GROUP BY Gender
-- reference: DuckDB over the NDJSON
SELECT gender, COUNT(*) FROM Patient GROUP BY 1
