"""Merges the result folders of the lab runs into benchmarks/results/niche_quality.

Renames: runs made before `concat_composition=1.0` became the default are
`improved-no_concat_composition`; `improved-concat_composition` runs are `improved`.
Drops the CODEX runs of the abandoned 30k-cell window (the table uses the 12k window).
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import niche_quality as nq  # noqa: E402

RENAME = {"improved": "improved-no_concat_composition", "improved-concat_composition": "improved"}
out = ROOT / "benchmarks" / "results" / "niche_quality"
runs = []
for folder in sys.argv[1:]:
    for r in json.loads((Path(folder) / "results.json").read_text())["runs"]:
        if r["set"] == "codex_spleen_3slices" and (r.get("subset") or {}).get("max_cells") != 12000:
            continue
        if Path(folder) != out:
            r["method"] = RENAME.get(r["method"], r["method"])
            if r["method"].startswith("improved") and r["kind"] == "improved" and r["method"] != "improved":
                r["kind"] = "ablation"
            if r["method"] == "improved":
                r["kind"] = "improved"
        key = ("set", "method", "seed", "subset", "epochs")
        runs = [x for x in runs if any(x.get(k) != r.get(k) for k in key)] + [r]
nq.write_outputs(out, runs, nq.machine_note())
print(len(runs), "runs")
