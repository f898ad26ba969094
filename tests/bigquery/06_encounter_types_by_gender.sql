-- source: Looker's healthcare block over the Cloud Healthcare API's BigQuery export (LEFT JOIN UNNEST chains, encounter.subject.patientId = patient.id): its LEFT JOIN UNNEST chain and join on patientId as published, the select list ours (the block generates it per dashboard)
SELECT patient.gender, encounter__type__coding.display AS type, COUNT(DISTINCT encounter.id) AS encounters
FROM `lookerdata.healthcare_demo_live.encounter` AS encounter
LEFT JOIN UNNEST(encounter.type) as encounter__type
LEFT JOIN UNNEST(encounter__type.coding) as encounter__type__coding
LEFT JOIN `lookerdata.healthcare_demo_live.patient` AS patient ON encounter.subject.patientId = patient.id
GROUP BY 1, 2
-- reference: DuckDB over the NDJSON
SELECT p.gender, tc.display, COUNT(DISTINCT e.id)
FROM Encounter e LEFT JOIN unnest(e.type) AS t1(et) ON TRUE LEFT JOIN unnest(et.coding) AS t2(tc) ON TRUE
LEFT JOIN Patient p ON ref_id(e.subject, 'Patient') = p.id
GROUP BY 1, 2
