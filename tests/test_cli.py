"""The command line as a new user meets it: --version, --help, and one clear line with exit status 2 for every
kind of user mistake -- Hydra's own included -- before any model loads (issues 16, 19 and 20)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import xaibench

ROOT = Path(__file__).resolve().parents[1]
XAIBENCH = [sys.executable, "-c", "from xaibench.run.app import main; main()"]


def cli(*args, cwd=ROOT):
    return subprocess.run(XAIBENCH + list(args), capture_output=True, text=True, cwd=cwd, timeout=600,
                          env=dict(os.environ, HYDRA_FULL_ERROR="0"))


def test_version_is_xaibenchs():
    p = cli("--version")
    assert p.returncode == 0 and p.stdout.startswith(f"xaibench {xaibench.__version__}")
    assert "Hydra" not in p.stdout


def test_help_describes_the_options_and_the_method_parameters():
    p = cli("--help")
    assert p.returncode == 0
    out = p.stdout
    for option in ("seed", "batch_size", "device", "precision", "resume", "allow_change"):
        assert f"  {option}  [" in out, option
    assert "threshold mu_t + lambda sigma_t" in out  # STAA's lambda, with its help and range
    assert "lambda [1.0] number in [0.0, 5.0]" in out
    assert "docs/extending.md" in out and "method configs:" in out


@pytest.mark.parametrize("args,needle", [
    (["method.lambda=-1"], "method.lambda=-1"),  # a global override, checked before anything loads
    (["method=staa", "method.lambda=-1"], "allowed range is [0.0, 5.0]"),
    (["method=staa", "method.lambda=abc"], "method.lambda=abc"),
    (["seed=abc"], "seed"),
    (["model=bogus"], "bogus"),  # Hydra: no such config
    (["seeed=1"], "seeed"),  # Hydra: not a key
    (["=5"], "=5"),  # Hydra: grammar
    (["method.lambda=${oc.env:XAIBENCH_NOT_SET}"], "XAIBENCH_NOT_SET"),  # an interpolation that cannot resolve
    (["hydra.run.dir=/proc/xaibench-forbidden/run"], "hydra.run.dir"),
    # two settings of one metric would write rows of the same names (the second's values under both)
    (["experiment.metrics=[srg,{config:srg,spacing:ends}]"], "lists the metric 'srg' twice"),
])
def test_user_mistakes_exit_2_with_one_message_and_no_traceback(tmp_path, args, needle):
    extra = [] if any(a.startswith("hydra.run.dir") for a in args) else [f"hydra.run.dir={tmp_path / 'run'}"]
    p = cli(*args, *extra)
    assert p.returncode == 2, (p.returncode, p.stderr[-2000:])
    assert needle in p.stderr and "Traceback" not in p.stderr + p.stdout
    assert not (tmp_path / "run" / "rows.jsonl").exists()
    assert "%|" not in p.stderr  # refused before any model or sample was loaded (no progress bar)


def test_the_range_message_names_the_field_and_its_range(tmp_path):
    p = cli("method.lambda=-1", f"hydra.run.dir={tmp_path / 'run'}")
    line = [ln for ln in p.stderr.splitlines() if "method" in ln][0]
    assert "method" in line and "lambda=-1" in line and "[0.0, 5.0]" in line
