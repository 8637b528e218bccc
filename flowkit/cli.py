"""The ``flowkit`` command: run, validate, list, sample and evaluate experiments.

No command prints a traceback (``--debug`` shows it). Exit status: 0 success, 1 a run that
cannot be used (damaged files, locked by another process) or a failure while running, 2 bad
input (an invalid experiment or option; every problem with its key path), 130 interrupted.
``--help`` on every subcommand shows examples.
"""

from __future__ import annotations

import argparse
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from flowkit.atomic import atomic_write
from flowkit.checks import OptionError
from flowkit.errors import ConfigError, DamagedRunError, RunInUseError
from flowkit.registry import REGISTRIES, RegistryError, did_you_mean

EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
#: Errors of bad input: exit status 2.
INPUT_ERRORS = (ConfigError, OptionError, RegistryError)
#: Errors of a run that cannot be used as it is: exit status 1, with the message only.
RUN_ERRORS = (DamagedRunError, RunInUseError, OSError)

RUN_EXAMPLES = """examples:
  flowkit run                        # built-in default: N(0, I) -> moons, reflow, distill
  flowkit run examples/two_half_circles.yaml
  flowkit run examples/moons_reflow.yaml --set training.steps=500 --set seed=1
  flowkit run examples/digits.yaml --set stages[0].training.lr=3e-4 --out /tmp/runs
  flowkit run --resume                          # continue the latest run of the default experiment
  flowkit run --resume runs/moons_reflow-20250101-120000
  flowkit run examples/moons_reflow.yaml --nproc 2     # 2 processes (torchrun, DDP)
  torchrun --nproc_per_node=2 -m flowkit run examples/moons_reflow.yaml   # the same
"""
VALIDATE_EXAMPLES = """examples:
  flowkit validate examples/moons_reflow.yaml
  flowkit validate my.yaml --set evaluation.n_samples=500
"""
LIST_EXAMPLES = """examples:
  flowkit list              # every registry
  flowkit list solvers      # one registry (singular names work too: flowkit list solver)
"""
SAMPLE_EXAMPLES = """examples:
  flowkit sample runs/moons_reflow-20250101-120000 --solver euler --steps 1 --n 2000 --out x.png
  flowkit sample RUN --stage 1-rf --solver dopri5 --n 5000 --out samples.safetensors
  flowkit sample RUN --steps 8 --out samples.npy --force   # overwrite samples.npy
  flowkit sample RUN --class 3 --guidance 2.5 --n 64 --out grid.png   # class 3, guided
"""
EVAL_EXAMPLES = """examples:
  flowkit eval runs/moons_reflow-20250101-120000
"""


def add_debug(parser: argparse.ArgumentParser, default: object = False) -> None:
    parser.add_argument(
        "--debug",
        action="store_true",
        default=default,
        help="show the traceback of an error (errors print a one-line message otherwise)",
    )


def add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one value (repeatable); KEY is a dotted path such as training.lr or "
        "stages[1].solver.steps, VALUE is parsed as YAML (3e-4, [1, 2], null, {name: euler})",
    )
    parser.add_argument(
        "--device",
        dest="overrides",
        action=DeviceOverride,
        metavar="DEVICE",
        help="where the flows train and sample: auto (CUDA when available), cpu, cuda, cuda:N "
        "or mps; the same as --set device=DEVICE",
    )


class DeviceOverride(argparse.Action):
    """``--device D``: appends the override ``device=D`` (after any ``--set``)."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: object,
        option: str | None = None,
    ) -> None:
        overrides = list(getattr(namespace, self.dest, None) or [])
        setattr(namespace, self.dest, [*overrides, f"device={values}"])


def positive_int(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def cmd_run(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """``flowkit run``: in this process (joining torchrun's process group when launched by
    torchrun), or through torchrun on ``--nproc`` processes."""
    from flowkit import distributed
    from flowkit.experiment import runner

    if args.nproc is not None and args.nproc > 1:
        if distributed.launched_by_torchrun():
            raise ConfigError(
                [("--nproc", "already running under torchrun; leave out --nproc or torchrun")]
            )
        runner.resolve(args.config, args.overrides)  # report a bad experiment once, not per rank
        given = sys.argv[1:] if argv is None else list(argv)
        ranks = distributed.without_option(given, "--nproc")
        if args.bind_cpus is None and distributed.can_bind_ranks(args.nproc):
            ranks.append("--bind-cpus")  # flowkit starts every local rank: each its own CPUs
        return distributed.launch_torchrun(args.nproc, ranks)
    with distributed.process_group(bind_cpus=bool(args.bind_cpus)):
        runner.run(args.config, args.overrides, args.out, args.resume, args.quiet)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``flowkit`` command."""
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(
        prog="flowkit",
        description="Flow matching, rectified flow, reflow and distillation experiments.",
        epilog=RUN_EXAMPLES,
        formatter_class=fmt,
    )
    add_debug(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="run an experiment", epilog=RUN_EXAMPLES, formatter_class=fmt)
    p.add_argument("config", nargs="?", help="experiment YAML (default: the built-in default)")
    add_overrides(p)
    p.add_argument("--out", default="runs", help="parent of the run directory (default: runs)")
    p.add_argument(
        "--resume",
        nargs="?",
        const=True,
        default=False,
        metavar="RUN_DIR",
        help="continue an interrupted run: RUN_DIR, or without a value the latest run of this "
        "experiment under --out; finished stages are skipped",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars or log lines")
    p.add_argument(
        "--nproc",
        type=positive_int,
        metavar="N",
        help="run on N local processes: launches torchrun with the same arguments "
        "(DistributedDataParallel training, sharded reflow and evaluation; see docs/scaling.md)",
    )
    p.add_argument(
        "--bind-cpus",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="in a distributed run, bind each process to its own share of this machine's CPUs "
        "(default: on with --nproc where there is a CPU per rank, off in a launch by torchrun "
        "itself; see docs/scaling.md)",
    )

    p = sub.add_parser(
        "validate",
        help="check an experiment without running it",
        epilog=VALIDATE_EXAMPLES,
        formatter_class=fmt,
    )
    p.add_argument("config", nargs="?", help="experiment YAML (default: the built-in default)")
    add_overrides(p)

    p = sub.add_parser(
        "list", help="list registered components", epilog=LIST_EXAMPLES, formatter_class=fmt
    )
    p.add_argument("kind", nargs="?", help=f"one of: {', '.join(REGISTRIES)}")

    p = sub.add_parser(
        "sample", help="sample a trained run's flow", epilog=SAMPLE_EXAMPLES, formatter_class=fmt
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--solver", default="euler", help="solver name (default: euler)")
    p.add_argument("--steps", type=positive_int, help="solver steps (fixed-step solvers)")
    p.add_argument("--n", type=positive_int, default=1000, help="number of samples (default: 1000)")
    p.add_argument("--stage", help="flow stage to sample (default: the last flow)")
    p.add_argument("--seed", type=int, default=0, help="seed of the source samples (default: 0)")
    p.add_argument(
        "--class", dest="label", type=int, help="sample this class (class-conditional runs)"
    )
    p.add_argument(
        "--guidance", type=float, help="classifier-free guidance scale w (conditional runs)"
    )
    p.add_argument(
        "--guidance-interval",
        type=float,
        nargs=2,
        metavar=("T_LO", "T_HI"),
        help="guide only for T_LO <= t <= T_HI (needs --guidance)",
    )
    p.add_argument("--out", required=True, help="output file: .safetensors, .npy, or .png (a plot)")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")

    p = sub.add_parser(
        "eval",
        help="re-evaluate a run and rewrite its report",
        epilog=EVAL_EXAMPLES,
        formatter_class=fmt,
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--quiet", action="store_true", help="no log lines")
    for command in sub.choices.values():
        add_debug(command, default=argparse.SUPPRESS)
    return parser


def registry_key(kind: str, keys: list[str]) -> str:
    """``solver`` or ``solvers`` -> ``solvers`` (a ConfigError for kinds not in ``keys``)."""
    for key in keys:
        if kind in (key, key.rstrip("s"), key.removesuffix("s").replace("_", " ")):
            return key
    raise ConfigError(
        [
            (
                "kind",
                f"unknown kind {kind!r}; choose from {', '.join(keys)}." + did_you_mean(kind, keys),
            )
        ]
    )


def cmd_list(kind: str | None) -> int:
    from flowkit.experiment.stages import STAGE_TYPES

    registries = {**REGISTRIES, "stages": STAGE_TYPES}
    keys = [registry_key(kind, list(registries))] if kind else list(registries)
    for key in keys:
        entries = registries[key].entries()
        print(f"{key}:")
        width = max((len(e.name) for e in entries), default=0)
        for entry in entries:
            print(f"  {entry.name.ljust(width)}  {entry.description}")
    return 0


def cmd_validate(config: str | None, overrides: list[str]) -> int:
    from flowkit.experiment.runner import resolve

    experiment = resolve(config, overrides)
    stages = ", ".join(f"{s.name} ({s.type})" for s in experiment.stages)
    print(f"OK: {experiment.name}: {stages}")
    return 0


SAMPLE_SUFFIXES = (".safetensors", ".npy", ".png")


def check_output(out: Path, force: bool) -> None:
    """Refuse an output path that is a directory, a symbolic link, has an unknown suffix, or
    exists (without ``force``)."""
    if out.is_symlink():
        raise ConfigError(
            [("--out", f"{str(out)!r} is a symbolic link; flowkit does not write through links")]
        )
    if out.is_dir():
        raise ConfigError([("--out", f"{str(out)!r} is a directory; give a file name")])
    if out.suffix.lower() not in SAMPLE_SUFFIXES:
        raise ConfigError([("--out", f"must end in .safetensors, .npy or .png, got {str(out)!r}")])
    if out.exists() and not force:
        raise ConfigError([("--out", f"{str(out)!r} exists; pass --force to overwrite it")])


def write_samples(x: object, out: Path) -> None:
    """Save samples by the suffix of ``out``: safetensors, npy, or a PNG plot (atomically: a
    new file replaces ``out``, never written through a link)."""
    from flowkit.figures import single_figure

    suffix = out.suffix.lower()
    write: Callable[[Path], object]
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        def write(tmp: Path) -> None:
            save_file({"x": x.contiguous()}, str(tmp))

    elif suffix == ".npy":

        def write(tmp: Path) -> None:
            np.save(tmp, x.numpy())

    else:
        arr = x.numpy()
        if not (arr.ndim == 2 and arr.shape[1] == 2) and arr.ndim != 4:
            raise ConfigError(
                [("--out", f"a PNG needs 2-D points or images, got shape {arr.shape}")]
            )

        def write(tmp: Path) -> None:
            single_figure(arr, out.stem).savefig(tmp, format="png", dpi=110)

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, write)


def cmd_sample(args: argparse.Namespace) -> int:
    from flowkit.experiment import runner

    out = Path(args.out)
    check_output(out, args.force)
    try:
        x = runner.sample_run(
            args.run,
            args.n,
            args.solver,
            args.steps,
            args.stage,
            args.seed,
            label=args.label,
            guidance=args.guidance,
            guidance_interval=args.guidance_interval,
        )
    except ConfigError as err:  # name the flags, not sample_run's arguments
        flags = {"label": "--class", "guidance_interval": "--guidance-interval"}
        raise ConfigError([(flags.get(k, f"--{k}"), m) for k, m in err.problems]) from None
    check_output(out, args.force)  # again: it may have appeared while sampling
    write_samples(x, out)
    print(f"wrote {len(x)} samples to {args.out}")
    return 0


def dispatch(args: argparse.Namespace, argv: Sequence[str] | None) -> int:
    """Run the chosen command."""
    if args.command == "list":
        return cmd_list(args.kind)
    if args.command == "validate":
        return cmd_validate(args.config, args.overrides)
    if args.command == "run":
        return cmd_run(args, argv)
    if args.command == "eval":
        from flowkit.experiment import runner

        runner.evaluate_run(args.run, quiet=args.quiet)
        return 0
    return cmd_sample(args)


@contextmanager
def short_warnings() -> Iterator[None]:
    """Print warnings as ``flowkit: warning: MESSAGE`` lines."""
    previous = warnings.formatwarning
    warnings.formatwarning = lambda message, *args, **kwargs: f"flowkit: warning: {message}\n"
    try:
        yield
    finally:
        warnings.formatwarning = previous


def exit_status(err: BaseException) -> int:
    """The exit status of a command that raised ``err``."""
    if isinstance(err, INPUT_ERRORS):
        return EXIT_CONFIG
    return EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``flowkit`` console script; returns the exit status."""
    args = build_parser().parse_args(argv)
    prefix = f"flowkit {args.command}:"
    try:
        with short_warnings():
            return dispatch(args, argv)
    except KeyboardInterrupt:
        print("interrupted; continue with: flowkit run --resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (e.g. `flowkit list | head`): stop quietly, like other Unix tools.
        sys.stderr.close()
        return 0
    except Exception as err:
        if args.debug:
            traceback.print_exc()
        if isinstance(err, INPUT_ERRORS + RUN_ERRORS):
            print(f"{prefix} {err}", file=sys.stderr)
        else:
            hint = "" if args.debug else " (run with --debug for the traceback)"
            print(f"{prefix} {type(err).__name__}: {err}{hint}", file=sys.stderr)
        return exit_status(err)
