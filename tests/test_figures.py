"""The run figure (oodbench.figures): which bars are marked, and that a degenerate cell is not drawn as 0 %."""

from __future__ import annotations

import json

import pandas as pd

from oodbench.figures import bar_marks, plot_run


def _cells(ccu_flags):
    base = {"in_dist": "shapes", "protocol": "paper", "arch": "small_cnn", "auroc": 50.0, "aupr_in": 50.0}
    return pd.DataFrame(
        [
            {**base, "method": "msp", "ood_set": "a", "threat": "linf", "fpr": 98.0, "flags": []},
            {**base, "method": "sofl", "ood_set": "a", "threat": "linf", "fpr": 88.0, "flags": ["zero-grad"]},
            {**base, "method": "ccu", "ood_set": "a", "threat": "linf", "fpr": 0.0, "flags": ccu_flags},
            {**base, "method": "ccu", "ood_set": "b", "threat": "linf", "fpr": 0.0, "flags": []},
        ]
    )


def test_bar_marks_name_ties_and_other_flags_and_leave_clean_cells_alone():
    marks = bar_marks(_cells(["zero-grad", "ties"]))
    assert marks == {("shapes", "sofl", "linf"): "†", ("shapes", "ccu", "linf"): "ties"}  # ties on one set: average
    assert bar_marks(_cells([])) == {("shapes", "sofl", "linf"): "†"}


def test_plot_run_draws_a_run_with_a_tied_cell(tmp_path):
    run = tmp_path / "run"
    (run / "cells").mkdir(parents=True)
    for i, cell in enumerate(_cells(["ties"]).to_dict("records")):
        (run / "cells" / f"{i}.json").write_text(json.dumps(cell))
    path = plot_run([run], tmp_path / "fig.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
