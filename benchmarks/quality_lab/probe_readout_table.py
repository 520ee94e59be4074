"""Exp 9a table: mean ARI (3 seeds) per set for each sweep setting, and margin = min over sets of
(mean ARI − target). Single-slice sets reuse their per-slice row for std="all".

Usage: python probe_readout_table.py SWEEP.jsonl [top_n]
"""
import json
import sys
from collections import defaultdict

import numpy as np

TARGET = {"osmfish_cortex": 0.69, "allen_merfish_visp": 0.683, "baristaseq_visp_3slices": 0.716,
          "codex_spleen_3slices": 0.678}
SHORT = {"osmfish_cortex": "osm", "allen_merfish_visp": "allen", "baristaseq_visp_3slices": "barista",
         "codex_spleen_3slices": "codex12k"}
SINGLE = ("osmfish_cortex", "allen_merfish_visp")


def load(path):
    acc = defaultdict(list)
    for line in open(path):
        r = json.loads(line)
        key = (r["std"], tuple(r["scales"]), r["w_expr"], r["smooth_k"], r["steps"])
        acc[(r["set"], key)].append(r["ari"])
        if r["set"] in SINGLE:
            acc[(r["set"], ("all",) + key[1:])].append(r["ari"])
    return acc


def table(acc):
    keys = sorted({k for _, k in acc})
    rows = []
    for k in keys:
        m = {s: np.mean(acc[(s, k)]) for s in TARGET if (s, k) in acc}
        sd = {s: np.std(acc[(s, k)], ddof=1) for s in TARGET if (s, k) in acc}
        if len(m) < len(TARGET):
            continue
        rows.append((min(m[s] - TARGET[s] for s in TARGET), np.mean(list(m.values())), k, m, sd))
    return rows


def fmt_key(k):
    std, scales, w, sk, st = k
    return f"{std:5s} {','.join(map(str, scales)):11s} expr{w:.1f} sm{sk}x{st}"


def main(path, top=25):
    rows = table(load(path))
    print(f"{len(rows)} complete settings")
    head = "| setting | " + " | ".join(SHORT[s] for s in TARGET) + " | mean | min(ARI−target) |"
    print(head)
    print("|" + "---|" * (len(TARGET) + 3))
    for margin, mean, k, m, sd in sorted(rows, key=lambda r: -r[0])[:top]:
        print(f"| {fmt_key(k)} | " + " | ".join(f"{m[s]:.3f}±{sd[s]:.3f}" for s in TARGET)
              + f" | {mean:.3f} | {margin:+.3f} |")
    # marginal effects: mean over the rest of the grid of the per-setting margin and per-set ARI
    for i, nm in enumerate(("std", "scales", "w_expr", "smooth_k", "steps")):
        print(f"\nmarginal over {nm}:")
        g = defaultdict(list)
        for margin, mean, k, m, sd in rows:
            g[k[i]].append([m[s] for s in TARGET] + [margin])
        for v, arr in sorted(g.items(), key=lambda t: str(t[0])):
            a = np.array(arr)
            print(f"  {str(v):16s} " + " ".join(f"{SHORT[s]} {x:.3f}" for s, x in zip(TARGET, a.mean(0)[:4]))
                  + f"  margin mean {a[:, 4].mean():+.3f} best {a[:, 4].max():+.3f}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 25)
