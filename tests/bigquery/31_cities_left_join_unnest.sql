-- source: written for this corpus, in the form of Looker's healthcare block over the Cloud Healthcare API's BigQuery export (LEFT JOIN UNNEST chains, encounter.subject.patientId = patient.id): LEFT JOIN UNNEST keeps rows with no element
SELECT a.city, COUNT(*) AS patients
FROM patient p
LEFT JOIN UNNEST(p.address) AS a
GROUP BY 1
-- reference: DuckDB over the NDJSON
SELECT a.city, COUNT(*) FROM Patient p LEFT JOIN unnest(p.address) AS t(a) ON TRUE GROUP BY 1
