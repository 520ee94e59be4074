"""Merges the result folders of the lab runs into benchmarks/results/niche_quality.

Renames (the default changed during the study): runs named `improved` before the readout
existed are `improved-no_concat_composition` (weight 0), `improved-concat_composition` runs
are `improved-concat1` (weight 1), `lab-concat2` runs are `improved` (weight 2, the default).
Drops the CODEX runs of the abandoned 30k-cell window (the table uses the 12k window).
"""
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import niche_quality as nq  # noqa: E402

RENAME = {"improved": "improved-no_concat_composition", "improved-concat_composition": "improved-concat1",
          "lab-concat2": "improved"}
out = ROOT / "benchmarks" / "results" / "niche_quality"
out.mkdir(parents=True, exist_ok=True)
runs = []
for arg in sys.argv[1:]:
    folder, _, flag = arg.partition(":")  # "folder:keep" = runs made with today's names
    for r in json.loads((Path(folder) / "results.json").read_text())["runs"]:
        if r["set"] == "codex_spleen_3slices" and (r.get("subset") or {}).get("max_cells") != 12000:
            continue
        if flag != "keep":
            r["method"] = RENAME.get(r["method"], r["method"])
            if r["method"].startswith("improved") and r["kind"] == "improved" and r["method"] != "improved":
                r["kind"] = "ablation"
            if r["method"] == "improved":
                r["kind"] = "improved"
        key = ("set", "method", "seed", "subset", "epochs")
        runs = [x for x in runs if any(x.get(k) != r.get(k) for k in key)] + [r]
nq.write_outputs(out, runs, nq.machine_note())
print(len(runs), "runs")
