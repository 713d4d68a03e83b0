import json
import re

import pytest
from conftest import run_cli


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path):
    rc, out, err = run_cli("pipeline", "tests/configs/pipeline_tiny.yaml", "--set", f"out={tmp_path / 'demo'}",
                           "--quiet", cwd=None)
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


@pytest.mark.slow
def test_pipeline_with_reference_checkpoints(tmp_path):
    """The default: the shipped reference models, nothing trained but the re-ID baselines."""
    demo = tmp_path / "demo"
    args = ("pipeline", "tests/configs/pipeline_tiny.yaml", "--set", f"out={demo}", "--set", "from_scratch=false",
            "--quiet")
    rc, out, err = run_cli(*args)
    assert rc == 0, err[-3000:]
    assert not (demo / "stage1" / "state.pt").exists()  # installed, not trained
    report = (demo / "report.md").read_text()
    assert "the reference checkpoints shipped with the package" in report
    assert (demo / "stage1" / "eval" / "metrics.md").read_text() in report
    for fig in re.findall(r"\]\(figures/([^)]+)\)", report):
        assert (demo / "figures" / fig).exists(), fig
    rc, out, err = run_cli(*args[:-1])
    assert rc == 0, err[-3000:]
    assert "reusing" in out
    # one output folder holds one kind of run: from scratch on top of reference models is refused
    rc, out, err = run_cli("pipeline", "tests/configs/pipeline_tiny.yaml", "--set", f"out={demo}", "--from-scratch")
    assert rc == 2 and "reference checkpoints" in err and err.count("\n") == 1
