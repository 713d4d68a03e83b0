import json
import re

import pytest

from conftest import run_cli


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path):
    rc, out, err = run_cli("pipeline", "tests/configs/pipeline_tiny.yaml", "--set", f"out={tmp_path / 'demo'}", "--quiet",
                           cwd=None)
    assert rc == 0, err[-3000:]
    demo = tmp_path / "demo"
    report = (demo / "report.md").read_text()
    for fig in re.findall(r"\]\(figures/([^)]+)\)", report):
        assert (demo / "figures" / fig).exists(), fig
    assert len(re.findall(r"\]\(figures/", report)) == 6
    # every number of the ablation table comes from the run's own results
    results = (demo / "reid" / "results.md").read_text()
    assert results in report
    assert (demo / "stage1" / "eval" / "metrics.md").read_text() in report
    assert (demo / "stage2" / "eval" / "metrics.md").read_text() in report
    times = json.loads((demo / "times.json").read_text())
    assert set(times) >= {"data", "stage1", "pose", "stage2", "build", "reid"}
    # a rerun reuses every finished stage
    rc, out, err = run_cli("pipeline", "tests/configs/pipeline_tiny.yaml", "--set", f"out={demo}")
    assert rc == 0, err[-3000:]
    assert out.count("reusing") >= 4
