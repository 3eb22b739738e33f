"""Export parity of the shipped specs: ONNX (onnxruntime) or torch.export vs the eager flow.

One spec per architecture (specs that differ only in their data export the same graph),
at its quick size, untrained (random weights are the harder case: nothing is near the
identity). Prints a markdown table: max |Δ log p| and max |Δ x| on held-out test data
(the flow's own samples where the data is not on this machine), relative to max(1,
|eager|), and the time to export both programs.

    python benchmarks/export_parity.py [--format onnx|torch-export] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--format", default="onnx")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("-n", type=int, default=256)
    args = ap.parse_args()
    from test_export import _architectures

    import flowspec
    from flowspec.export import export_flow

    print("| spec | log_prob: max abs Δ log p (rel) | sample: max abs Δ x (rel) | checked on "
          "| export s |")
    print("|---|---|---|---|---|")
    for spec in _architectures():
        torch.manual_seed(0)
        flow = flowspec.load(spec, quick=True)
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            rep = export_flow(flow, out, fmt=args.format, data_dir=args.data_dir, n_check=args.n)
            seconds = time.perf_counter() - t0
        cells = {p.program: f"{p.max_abs_diff:.1e} ({p.rel_diff:.0e})" for p in rep.programs}
        for b in rep.skipped:
            cells.setdefault(b.program, f"not exported: {b.kind}")
        where = rep.inputs_source.split(":")[0]
        print(f"| {spec.stem} | {cells.get('log_prob', '')} | {cells.get('sample', '')} | "
              f"{where} | {seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
