"""Sample compute-to-data algorithm: summary statistics of every CSV input.

Runs with the Ocean C2D layout: inputs under $DATA_DIR/inputs/<did>/<index>, results written to
$DATA_DIR/outputs. Only the aggregate leaves the provider, never the rows.
"""
import csv
import json
import os
import statistics

data_dir = os.environ.get("DATA_DIR", "/data")
dids = json.loads(os.environ.get("DIDS", "[]"))
custom_path = os.path.join(data_dir, "inputs", "algoCustomData.json")
custom = json.load(open(custom_path)) if os.path.exists(custom_path) else {}

summary = {}
for did in dids:
    folder = os.path.join(data_dir, "inputs", did)
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), newline="") as handle:
            rows = list(csv.DictReader(handle))
        columns = {}
        for column in rows[0].keys() if rows else []:
            try:
                values = [float(row[column]) for row in rows]
            except ValueError:
                columns[column] = {"distinct": len({row[column] for row in rows})}
                continue
            columns[column] = {"mean": round(statistics.mean(values), 3), "min": min(values), "max": max(values)}
        summary[f"{did}/{name}"] = {"rows": len(rows), "columns": columns}
        print(f"read {len(rows)} rows from input {name} of {did}")

result = {"inputs": summary, "algoCustomData": custom}
with open(os.path.join(data_dir, "outputs", "result.json"), "w") as handle:
    json.dump(result, handle, indent=2)
print("wrote result.json")
