"""``xaibench``: the Hydra entry point.

    xaibench                                        # the default experiment
    xaibench experiment=NAME                        # conf/experiment/NAME.yaml
    xaibench model=vit_synth dataset=synthetic_image method=chefer
    xaibench -m method=staa,chefer                  # a sweep (one run folder per value)
    xaibench dataset.n_samples=8                    # limit every dataset of the experiment
    xaibench resume=true hydra.run.dir=DIR          # continue an interrupted run
    xaibench --help                                 # the options, the components and their parameters

The configs are the package's ``xaibench.conf`` (the repository's ``conf/``),
found through Hydra's ``pkg://`` search path, so an installed wheel runs from
any folder; ``--config-dir DIR`` or ``hydra.searchpath=[file://DIR]`` add a
user's own config folders.  Every run folder gets the tables of
:mod:`xaibench.analysis.results` and ``provenance.json``.

Exit status: 0 complete; 2 a user mistake, Hydra's own included (a message, no traceback); 130 interrupted;
in a multirun a failing point is recorded in its folder (``error.txt``, provenance status ``failed``), the
other points still run and the command exits 1 at the end.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from ..errors import UserError

FAILED: list = []
_STATE = {"task_started": False}
SWEEP_ENV = "XAIBENCH_SWEEP"
DOCS = "README.md (Running experiments), docs/extending.md, docs/metrics.md"


def register_schemas() -> None:
    """The primary config's schema and every component's typed config into Hydra's ConfigStore (each
    registration stores ``schema/<group>/<name>``, which the YAML files of the group extend).  Must run before
    Hydra composes."""
    from .. import datasets, methods, metrics, models  # noqa: F401
    from .options import store_schema

    store_schema()


def _task(cfg):
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf.errors import OmegaConfBaseException

    from .runner import Runner

    _STATE["task_started"] = True
    hc = HydraConfig.get()
    out = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        try:
            from .options import run_options

            opts = run_options(cfg)
            if opts.threads is not None:
                torch.set_num_threads(int(opts.threads))
            choices = {g: hc.runtime.choices.get(g) for g in ("model", "dataset", "method", "metric")}
            sweep = None
            if multirun:
                sweep = json.loads(os.environ.get(SWEEP_ENV, "{}") or "{}")
                sweep.update(job=int(hc.job.num), dir=str(hc.sweep.dir))
            summary, status = Runner(cfg, out, choices, sweep=sweep, overrides=list(hc.overrides.task)).run()
        except OmegaConfBaseException as e:  # e.g. ${oc.env:NOT_SET}: an interpolation that cannot resolve
            raise UserError(f"the configuration could not be resolved: {str(e).splitlines()[0]}") from None
    except UserError as e:
        print(f"xaibench: error: {e}", file=sys.stderr)
        if not multirun:
            sys.exit(2)
        _record_failure(out, e)
        return None
    if status != "complete":
        sys.exit(130)
    return summary


def _record_failure(out: Path, e: Exception):
    """A failing point of a sweep: its error in its own folder; the other points go on."""
    from ..io import atomic_write_text

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "error.txt", f"{type(e).__name__}: {e}\n")
    prov = out / "provenance.json"
    data = json.loads(prov.read_text()) if prov.exists() else {}
    data.update(status="failed", error=str(e))
    atomic_write_text(prov, json.dumps(data, indent=2, default=str))
    FAILED.append(str(out))


def _check_folder(arg: str):
    """``hydra.run.dir`` / ``hydra.sweep.dir``: an existing file, or a folder that cannot be created, is a
    clear error before Hydra tries (Hydra itself would print a traceback)."""
    key, _, value = arg.partition("=")
    if "${" in value:  # an interpolation (e.g. ${now:...}) that Hydra resolves
        return
    p = Path(os.path.expanduser(value))
    if p.exists() and not p.is_dir():
        raise UserError(f"{key}={value} is a file, not a folder; choose a folder for the run's results")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(f"{key}={value}: the folder cannot be created ({e.strerror or e}); choose a folder you "
                        f"can write to") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise UserError(f"{key}={value} is not writable; choose a folder you can write to")


def read_override(parser, arg: str, word: str, hint: str):
    """One command-line override parsed by Hydra's grammar, with its key; a mistake is one line
    (``cannot read the {word} ...`` / ``the {word} ... has no key``) ending with ``hint``."""
    try:
        (o,) = parser.parse_overrides([arg])
    except Exception as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(f"cannot read the {word} {arg!r}: {msg}. {hint}") from None
    if not o.key_or_group:
        raise UserError(f"the {word} {arg!r} has no key. {hint}")
    return o


def _check_grammar(args) -> None:
    """An override Hydra cannot parse (``=5``) is one clear line, not Hydra's traceback."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    skip = False
    for a in args:
        if skip:
            skip = False
            continue
        if a in ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp", "--experimental-rerun"):
            skip = True
            continue
        if a.startswith("-"):
            continue
        hint = ("Overrides are KEY=VALUE (e.g. seed=1, method=staa, 'method.lambda=[0,1]'); see `xaibench --help`")
        o = read_override(parser, a, "override", hint)
        key = o.key_or_group
        if key in ("experiment", "model", "dataset", "method", "metric") and not o.is_sweep_override() \
                and not isinstance(o.value(), (str, type(None))):
            raise UserError(f"{a}: {key}=NAME selects a config by its name (`xaibench --help` lists them)")


def _sweep_info(args) -> dict:
    """The keys a ``-m`` command sweeps (``method.lambda=0,1`` -> ``method.lambda``) and the command itself."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in args if not a.startswith("-")]
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception:  # Hydra reports grammar errors itself
        return {}
    keys = [o.key_or_group for o in parsed if o.is_sweep_override()]
    return {"keys": keys, "command": overrides}


def version_text() -> str:
    import xaibench

    from .provenance import git_revision

    rev = git_revision()
    return f"xaibench {xaibench.__version__}" + (f" (git {rev[:12]}{'-dirty' if rev.endswith('-dirty') else ''})"
                                                 if rev != "unknown" else "")


def help_text() -> str:
    """``xaibench --help``: the options (typed, with their help), the components with their parameters."""
    import textwrap

    from ..config import conf_dir
    from .options import RunConfig

    register_schemas()
    from .plan import registry

    out = [version_text(), "", "usage: xaibench [-m] [KEY=VALUE ...]   (a Hydra app; --hydra-help for Hydra's own)", "",
           "Options (KEY=VALUE; defaults in brackets):"]
    for s in RunConfig.specs():
        out.append(textwrap.fill(f"  {s.key}  [{_show(s.default)}]  {s.allowed()}: {s.help}", 110,
                                 subsequent_indent="      "))
    out += ["", "Components: select one with GROUP=NAME (e.g. method=staa), set a parameter with GROUP.KEY=VALUE "
                "(e.g. method.lambda=0.5); without a selection, GROUP.KEY=VALUE applies to every component of the "
                "experiment that takes KEY."]
    conf = conf_dir()
    for group in ("experiment", "model", "dataset", "method", "metric"):
        names = sorted(p.stem for p in (conf / group).glob("*.yaml"))
        out.append("")
        out.append(textwrap.fill(f"{group} configs: {', '.join(names)}", 110, subsequent_indent="    "))
        if group in ("method", "metric"):
            reg = registry(group)
            for name in reg.available():
                cls = reg.config(name)
                if cls is None or not cls.specs():
                    continue
                out.append(f"  {name}:")
                for s in cls.specs():
                    out.append(textwrap.fill(f"    {s.key} [{_show(s.default)}] {s.allowed()}"
                                             + (f": {s.help}" if s.help else ""), 110, subsequent_indent="        "))
    out += ["", f"Model and dataset parameters: see conf/model/, conf/dataset/ and {DOCS}.", ""]
    return "\n".join(out)


def _show(v) -> str:
    from dataclasses import MISSING

    if v is MISSING:
        return "required"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def main():
    args = sys.argv[1:]
    try:
        if "--version" in args or "-V" in args:
            print(version_text())
            return
        if "--help" in args or "-h" in args:
            print(help_text())
            return
        _check_grammar(args)
        for a in args:
            if a.lstrip("+").startswith(("hydra.run.dir=", "hydra.sweep.dir=")):
                _check_folder(a.lstrip("+"))
        import hydra

        register_schemas()
        if "-m" in args or "--multirun" in args:
            os.environ[SWEEP_ENV] = json.dumps(_sweep_info(args))
        try:
            hydra.main(config_path="pkg://xaibench.conf", config_name="config", version_base="1.3")(_task)()
        except SystemExit as e:
            if e.code == 1 and not _STATE["task_started"]:
                # Hydra's own report of a mistake in the command line or a config (it printed the message)
                print("xaibench: error: the command line or a config could not be composed (see above); "
                      f"`xaibench --help` lists the options and configs", file=sys.stderr)
                sys.exit(2)
            raise
    except UserError as e:
        print(f"xaibench: error: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("\nxaibench: interrupted before the run started; nothing was written", file=sys.stderr)
        sys.exit(130)
    from .callbacks import outcome_lines

    text = outcome_lines(FAILED)  # points that failed here, or whose worker died (the local launcher notes them)
    if text:
        print(text, file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
