"""A patient-level feature table from a FHIR export, and a model trained on it.

Converts the sample export that ships in examples/, builds one row per patient with a SQL on FHIR
ViewDefinition (demographics) and SQL (encounter counts, last measurements), trains a
scikit-learn model that tells the patients with prediabetes from the others, and saves a plot.

    pip install . scikit-learn matplotlib pandas
    python examples/python/patient_features.py [WORK_DIR]
"""

import pathlib
import sys

import matplotlib
import pandas as pd

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import LeaveOneOut, cross_val_predict  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

import fhir2parquet as f2p  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent
EXAMPLES = HERE.parent
work = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "python-example")
work.mkdir(parents=True, exist_ok=True)
data = work / "fhir"

# 1. The export as Delta tables, one per resource type.
result = f2p.convert(EXAMPLES / "synthea-sample", data)
print(f"converted {sum(result.rows.values()):,} resources of {len(result.rows)} types")

# 2. Demographics with a ViewDefinition (the file's FHIRPath columns), as an Arrow table.
patients = f2p.view(EXAMPLES / "views" / "patient_demographics.json", data).to_pandas()

# 3. Counts and last measurements with SQL over the tables (LOINC codes of body mass index,
#    body weight and hemoglobin; reference_id() gives the patient's id of a reference).
measures = f2p.sql(
    data,
    """
    WITH last AS (
      SELECT reference_id(subject) AS patient, code.coding[1].code AS loinc,
             valueQuantity.value AS value,
             ROW_NUMBER() OVER (PARTITION BY reference_id(subject), code.coding[1].code
                                ORDER BY effectiveDateTime_ts DESC) AS n
      FROM Observation
      WHERE code.coding[1].code IN ('39156-5', '29463-7', '718-7')
    )
    SELECT patient,
           MAX(CASE WHEN loinc = '39156-5' THEN CAST(value AS DOUBLE) END) AS bmi,
           MAX(CASE WHEN loinc = '29463-7' THEN CAST(value AS DOUBLE) END) AS weight_kg,
           MAX(CASE WHEN loinc = '718-7' THEN CAST(value AS DOUBLE) END) AS hemoglobin
    FROM last WHERE n = 1 GROUP BY patient
    """,
).to_pandas()
encounters = f2p.sql(
    data,
    "SELECT reference_id(subject) AS patient, COUNT(*) AS encounters FROM Encounter GROUP BY 1",
).to_pandas()
label = f2p.sql(
    data,
    """
    SELECT DISTINCT reference_id(subject) AS patient, TRUE AS prediabetes
    FROM Condition, UNNEST(code.coding) AS c
    WHERE c.system = 'http://snomed.info/sct' AND c.code = '15777000'
    """,
).to_pandas()

# 4. One row per patient.
features = (
    patients[["id", "gender", "birth_date"]]
    .merge(measures, left_on="id", right_on="patient", how="left")
    .drop(columns="patient")
    .merge(encounters, left_on="id", right_on="patient", how="left")
    .drop(columns="patient")
    .merge(label, left_on="id", right_on="patient", how="left")
    .drop(columns="patient")
)
features["age"] = (pd.Timestamp.today() - pd.to_datetime(features["birth_date"])).dt.days / 365.25
features["female"] = (features["gender"] == "female").astype(int)
features["encounters"] = features["encounters"].fillna(0)
features["prediabetes"] = features["prediabetes"].astype("boolean").fillna(False).astype(bool)
columns = ["age", "female", "encounters", "bmi", "weight_kg", "hemoglobin"]
features[columns] = features[columns].fillna(features[columns].mean())
features.to_csv(work / "features.csv", index=False)
print(features[["id", *columns, "prediabetes"]].round(1).to_string(index=False))

# 5. A model, judged on patients it did not see (leave-one-out on this small sample).
model = make_pipeline(StandardScaler(), LogisticRegression())
X, y = features[columns].to_numpy(), features["prediabetes"].to_numpy()
predicted = cross_val_predict(model, X, y, cv=LeaveOneOut())
accuracy = float((predicted == y).mean())
print(f"leave-one-out accuracy: {accuracy:.2f} over {len(y)} patients")

# 6. A plot: age against body mass index, by label.
fig, ax = plt.subplots(figsize=(5, 4))
for value, colour in ((False, "tab:blue"), (True, "tab:red")):
    rows = features[features["prediabetes"] == value]
    ax.scatter(rows["age"], rows["bmi"], c=colour, label="prediabetes" if value else "none")
ax.set_xlabel("age (years)")
ax.set_ylabel("last body mass index")
ax.legend()
fig.tight_layout()
fig.savefig(work / "age_bmi.png", dpi=100)
print(f"wrote {work / 'features.csv'} and {work / 'age_bmi.png'}")
