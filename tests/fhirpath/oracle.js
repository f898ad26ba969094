// Evaluates FHIRPath expressions with fhirpath.js (HL7's JavaScript implementation, npm
// `fhirpath`, its R4 model): the reference answers of the differential test
// (tests/it/fhirpath_oracle.rs).
//
//   node oracle.js JOBS.json RESULTS.json
//
// JOBS.json: {"resources": [...], "expressions": [...]}; RESULTS.json: one array per resource,
// one entry per expression: the values (JSON), or {"error": text}.
const fs = require("fs");
const fhirpath = require("fhirpath");
const r4 = require("fhirpath/fhir-context/r4");

const [jobsPath, resultsPath] = process.argv.slice(2);
const jobs = JSON.parse(fs.readFileSync(jobsPath, "utf8"));
const compiled = jobs.expressions.map((e) => {
  try {
    return fhirpath.compile(e, r4);
  } catch (err) {
    return { error: String(err.message || err) };
  }
});
const results = jobs.resources.map((resource) =>
  compiled.map((f) => {
    if (f.error) return f;
    try {
      return JSON.parse(JSON.stringify(f(resource)));
    } catch (err) {
      return { error: String(err.message || err) };
    }
  })
);
fs.writeFileSync(resultsPath, JSON.stringify(results));
