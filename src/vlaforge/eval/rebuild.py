"""``vlaforge report DIR``: rebuild the HTML report of any evaluation, comparison, ablation,
generalization, chain, robustness or transfer directory from its results JSON alone."""

from __future__ import annotations

import json
from pathlib import Path


def rebuild_report(path: str) -> Path:
    from vlaforge.eval.ablate import write_ablate_report
    from vlaforge.eval.chains import write_chains_report
    from vlaforge.eval.compare import write_compare_report
    from vlaforge.eval.generalization import write_generalization_report
    from vlaforge.eval.report import render_eval_report
    from vlaforge.eval.robustness import write_robustness_report
    from vlaforge.eval.transfer import write_transfer_report

    writers = {"results.json": render_eval_report, "compare.json": write_compare_report, "ablate.json": write_ablate_report,
               "generalization.json": write_generalization_report, "chains.json": write_chains_report,
               "robustness.json": write_robustness_report, "transfer.json": write_transfer_report}
    d = Path(path)
    if d.is_file():
        d = d.parent
    for name, write in writers.items():
        if (d / name).is_file():
            try:
                data = json.loads((d / name).read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{d / name} is not valid JSON: {e}") from None
            return write(data, d)
    raise FileNotFoundError(f"no results JSON in {d}; expected one of {', '.join(writers)}")
