-- source: written for this corpus, in the form of Looker's healthcare block over the Cloud Healthcare API's BigQuery export (LEFT JOIN UNNEST chains, encounter.subject.patientId = patient.id): a join on <type>Id
SELECT e.class.code AS class, COUNT(*) AS observations
FROM observation o
JOIN encounter e ON o.encounter.encounterId = e.id
GROUP BY 1
-- reference: DuckDB over the NDJSON
SELECT e.class.code, COUNT(*) FROM Observation o JOIN Encounter e ON ref_id(o.encounter, 'Encounter') = e.id GROUP BY 1
