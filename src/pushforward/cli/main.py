"""The ``pushforward`` command: train, eval, sample, demo."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import torch
import torch.distributed

from pushforward.cli.demo import main_demo
from pushforward.cli.diagnose import run_diagnose
from pushforward.cli.evaluate import run_eval, run_sample
from pushforward.cli.plot import run_plot
from pushforward.cli.reflow import run_distill, run_reflow
from pushforward.cli.train import run_train
from pushforward.inference import declared_fields
from pushforward.registry import available
from pushforward.sampling.mcmc import KERNELS
from pushforward.sampling.objectives import OBJECTIVES

EPILOG = """examples:
  pushforward train --data builtin:moons --model nsf --out runs/moons
  pushforward eval runs/moons --data builtin:moons
  pushforward sample runs/moons -n 1000 --out samples.npy
  pushforward plot runs/moons              figures into runs/moons
  pushforward reflow runs/fm --out runs/fm-2       straighter paths (fm runs)
  pushforward distill runs/fm-2 --out runs/fm-1    a one-step model
  pushforward demo                         NSF, flow matching and one-step MeanFlow on two moons

Bad input (missing file, NaN in data, unknown model, ...) exits with status 2
and one line on standard error.
"""

DIAGNOSE_EPILOG = """draws -n posterior samples for each test pair (theta_i, x_i), simulated from
the prior and the simulator (not the training set), and prints one JSON object:
simulation-based calibration (KS p-values of the rank of each coordinate among the
samples; Talts et al. 2018), expected coverage of highest-density regions (signed
area: positive is conservative, negative overconfident), TARP (area to curve:
positive is overdispersed, negative underdispersed; Lemos et al. 2023), and with a
prior the share of samples outside its support. Writes RUN_DIR/diagnostics.json,
sbc_ranks.png, coverage.png, tarp.png and report.html (figures need matplotlib).

example:
  pushforward diagnose runs/npe --data theta_test.npy --context x_test.npy -n 1000
"""

TRAIN_EPILOG = """examples:
  pushforward train --data builtin:moons --model nsf --out runs/moons
  pushforward train --data x.csv --context c.csv --model nsf --out runs/cond \\
      --set transforms=4 --set hidden=[64,64] --steps 5000
  pushforward train --data x.npy --model maf --config config.toml --out runs/maf
  pushforward train --data x.npy --model maf --config config.toml --out runs/maf --resume
  pushforward train --data B.npy --source A.npy --model fm --out runs/a-to-b
  pushforward train --data theta.npy --context x.npy --prior prior.json --model nsf \
      --set embedding=set --set observation_shape=[10,2] --out runs/npe
  pushforward train --target builtin:gmm-40 --model nsf --objective path-gradient \
      --steps 5000 --out runs/gmm
  pushforward train --target energy.py:log_density --features 8 --model realnvp --out runs/e

config.toml:
  [model]            # any keyword of the model (see pushforward.build)
  transforms = 4
  hidden = [64, 64]
  [train]            # steps, max_steps, batch_size, lr, seed, n, validation, ema,
  steps = 5000       # warmup, clip, weight_decay, log_every, eval_every,
  lr = 2e-3          # checkpoint_every, patience, convergence_patience,
                     # prepare_workers

Without --steps (or steps in [train]) a run trains to convergence: until the
validation loss has not improved for 10 validations (convergence_patience,
60 for fm, whose regression loss improves slowly; patience overrides it; one every
eval_every = 100 steps, or for a run with --context about every five epochs,
10 to 100 steps), at most max_steps = 20000 steps, and keeps the best
weights; config.json's train.budget and train.result say how it ended. --steps N
trains exactly N steps (a run without validation rows trains 2000).

--set values are TOML literals: 4, 1e-3, [64, 64], true, "text". Flags override
the config file. features and context are set from the data. Data and context
are standardised with statistics of the training split; the saved model holds
the standardisation as its preprocessing, so pushforward.load(RUN_DIR) works in
the data's units.

--source FILE (flow matching, fm) learns a flow from the rows of FILE onto the
data instead of from a Gaussian (Liu et al. 2023, rectified flow): FILE has the
same number of features as the data, any number of rows (a source row is drawn
at random for each data row of a batch, paired by the model's coupling: ot by
default, or --set coupling="independent"), and is standardised with its own
statistics. Its rows are stored in the model, so pushforward sample RUN_DIR -n N
maps N of them, and --source NEW.npy maps given rows. A flow from an empirical
source has no density (no log_prob).
--target fits a flow to an unnormalized log-density log p~(x) instead of data:
every step draws --batch-size samples of the flow. --objective reverse-kl (the
reparameterised reverse KL), path-gradient (the same loss with the path gradient:
--set objective.estimator="drop-in" evaluates it through the inverse instead of the
fast pass), forward-kl (maximum likelihood on exact target samples; --set
objective.path_gradient=true), alpha (--set objective.alpha=2.0), fab (flow
annealed importance sampling bootstrap, mass-covering; --set objective.buffer=true,
objective.n_intermediate=8, objective.transition="metropolis"). [train] options
beta (initial inverse temperature) and anneal (steps to reach 1) temper the target,
eval_samples (2000) sets the importance-sampling evaluation every eval_every steps
(ess and log_z go to metrics.jsonl), dtype = "float64" trains in double precision.
A target may return -inf outside its support, never NaN or +inf.
RUN_DIR gets config.json, model.json + model.safetensors, metrics.jsonl and
checkpoints/.
"""

EVAL_EPILOG = """prints one JSON object: nll (mean negative log-likelihood, nats per example,
in the data's original units), nll_se (its standard error), n, and for built-in
toys with an exact density entropy and kl = nll - entropy; bpd for image data.
Built-in toys are drawn fresh with --seed (default: the run's training seed + 1,
a sample the run never saw). A model without log_prob (distilled, a flow from
--source) prints sample metrics instead: energy_distance and sliced_wasserstein
between one model sample per data row and the data (original units), metric_rows,
n; --sample-metrics adds them for any model.

examples:
  pushforward eval runs/moons --data builtin:moons
  pushforward eval runs/cond --data test_x.csv --context test_c.csv
  pushforward eval runs/fm --data builtin:moons --solver dopri5 --atol 1e-6 --rtol 1e-6
"""

SAMPLE_EPILOG = """samples are in the data's original units. With --context, a file with one row
conditions all N samples; a file with M rows writes M*N rows, the N samples of
context row m in rows m*N ... (m+1)*N - 1.

A run trained with --source FILE maps source rows onto the data: -n N maps N
rows drawn at random from the stored training source; --source NEW (instead of
-n) maps every row of NEW, in the source's original units, to the same row of
the output (deterministic: the ODE has no noise). --context then has one row,
or one row per source row.

examples:
  pushforward sample runs/moons -n 1000 --out samples.npy --seed 3
  pushforward sample runs/cond -n 100 --context c.csv --out samples.npy
  pushforward sample runs/fm -n 10000 --solver heun --steps 16 --out samples.npy
  pushforward sample runs/a-to-b --source A_new.npy --out mapped.npy
  pushforward sample runs/gmm --mcmc isir --chains 32 --steps 2000 --out chains.npy

--mcmc KERNEL (a run of train --target) runs flow-based MCMC on the run's target:
imh (independent Metropolis-Hastings, the flow as proposal), isir (iterated
sampling importance resampling), neutra / neutra-mala (HMC / MALA in the flow's
latent space), local-global (flow moves and MALA steps), hmc / mala (in the
data's units, started from the flow). It writes (steps, chains, features) and
prints the acceptance rate, the largest R-hat and the smallest ESS.
"""


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on standard error, status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _subparser(commands, name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (default: torch's; demo: 1, fastest for small flows)",
    )
    return commands.add_parser(
        name,
        parents=[common],
        help=help_text,
        description=help_text,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def _solver_arguments(command: argparse.ArgumentParser, likelihood: bool) -> None:
    """The inference options models declare (``log_prob_options`` for eval,
    ``sample_options`` for sample) as flags; a model refuses those it does not declare."""
    group = command.add_argument_group(
        "inference options (models that declare them: fm, meanflow, shortcut, ...)"
    )
    declared = declared_fields("LogProbOptions" if likelihood else "SampleOptions")
    for name, field in declared.items():
        flag, text = "--" + name.replace("_", "-"), field.metadata.get("help", name)
        if str(field.type).startswith("bool"):
            # A switch: absent leaves the model's default (None), present sets it.
            group.add_argument(flag, dest=name, action="store_true", default=None, help=text)
            continue
        group.add_argument(flag, dest=name, type=_flag_type(field.type), help=text)


def _flag_type(annotation: object) -> type:
    """The argparse type of an options field annotated ``int | None``, ``float``, ``str | None``."""
    text = str(annotation)
    for kind in (int, float, str):
        if text.startswith(kind.__name__):
            return kind
    raise TypeError(f"cannot make a command-line flag of an option typed {text}")


REFLOW_EPILOG = """draws --pairs source points, solves the parent fm run's ODE accurately for their
ends (dopri5 at atol = rtol = 1e-6 by default; a fixed-step --solver takes
--solver-steps, default 100) and trains on that fixed coupling: reflow trains the
next rectified fm model (Liu et al. 2023), distill a one-step model x1 = x0 + v(x0, 0)
(InstaFlow, Liu et al. 2024), both from the parent's weights unless --set init="fresh".
NEW_RUN is a normal run directory (data and standardisation as the parent's;
config.json records the lineage) for sample, eval, plot and pushforward.load. A
distilled model has no log_prob: eval prints sample metrics for it.

--set KEY=VALUE: training options (ema, warmup, clip, validation, ...), init, or
model options (time_sampling="u-shaped", loss="pseudo-huber"; model.steps=... for
an option that shares a training option's name).

NEW_RUN also holds pairs.safetensors, the pairs trained on (standardised). An
interrupted run (Ctrl-C, a kill) continues with the same command and --resume: its
saved pairs are loaded, not drawn again, and training goes on from the last
checkpoint; the parent, model and pair options must be the same, training options
may change (more --steps).

examples:
  pushforward reflow runs/fm --out runs/fm-2 --set time_sampling='"u-shaped"'
  pushforward reflow runs/fm-2 --out runs/fm-3 --pairs 50000 --solver rk4 --solver-steps 200
  pushforward distill runs/fm-2 --out runs/fm-1step --set loss='"pseudo-huber"'
  pushforward distill runs/fm-2 --out runs/fm-1step --set loss='"pseudo-huber"' --resume
"""


def _pair_commands(commands) -> None:
    """The ``reflow`` and ``distill`` subcommands: new runs trained on an fm run's pairs."""
    helps = {
        "reflow": "retrain an fm run on the coupling its ODE gives (k-rectified flow)",
        "distill": "distil an fm run into a one-step model",
    }
    for name, help_text in helps.items():
        command = _subparser(commands, name, help_text, REFLOW_EPILOG)
        command.add_argument("run", metavar="RUN_DIR", help="an fm run directory")
        command.add_argument("--out", required=True, help="new run directory to write")
        command.add_argument("--pairs", type=int, help="source points to solve (20000)")
        command.add_argument("--steps", type=int, help="optimisation steps (2000)")
        command.add_argument("--batch-size", type=int, dest="batch_size", help="minibatch (512)")
        command.add_argument("--lr", type=float, help="peak learning rate (1e-3)")
        command.add_argument("--seed", type=int, help="random seed (the parent's)")
        command.add_argument("--solver", help="ODE solver of the pairs (dopri5)")
        command.add_argument(
            "--solver-steps", type=int, dest="solver_steps", help="steps of a fixed-step solver"
        )
        command.add_argument("--atol", type=float, help="absolute tolerance (1e-6)")
        command.add_argument("--rtol", type=float, help="relative tolerance (1e-6)")
        command.add_argument("--context", help="context rows to draw from (the parent's file)")
        if name == "distill":
            command.add_argument("--guidance", type=float, help="guidance scale of the teacher")
        command.add_argument("--set", action="append", metavar="KEY=VALUE", help="an option")
        command.add_argument(
            "--resume",
            action="store_true",
            help="continue the interrupted run in --out: its saved pairs are loaded and "
            "training goes on from the last checkpoint",
        )
        command.add_argument("--quiet", action="store_true", help="no progress bar or summary")


def parser() -> argparse.ArgumentParser:
    """The ``pushforward`` argument parser."""
    root = _Parser(
        prog="pushforward",
        description="Flow-based generative modelling: train, sample and evaluate flows.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = root.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    train = _subparser(
        commands, "train", "train a model on data and write a run directory", TRAIN_EPILOG
    )
    train.add_argument("--data", help="data file (.npy, .npz, .csv) or builtin:NAME")
    train.add_argument(
        "--target",
        help="fit an unnormalized log-density instead of data: FILE.py:NAME (a function of a "
        "(batch, D) tensor returning (batch,), or an object with log_prob) or builtin:NAME",
    )
    train.add_argument(
        "--features", type=int, help="the target's dimension D, where it does not say it"
    )
    train.add_argument(
        "--objective",
        help=f"objective against a --target ({', '.join(OBJECTIVES)}; default reverse-kl)",
    )
    train.add_argument("--context", help="context file, one row per data row")
    train.add_argument(
        "--prior",
        help="JSON file of the prior the data (parameters) were drawn from: "
        '{"type": "box_uniform", "low": [...], "high": [...]} keeps every sample in the box; '
        '{"type": "gaussian", "mean": [...], "std": [...]} (or "cov")',
    )
    train.add_argument(
        "--source",
        help="source data file or builtin:NAME: learn a flow from its rows onto the data "
        "(fm) instead of from a Gaussian",
    )
    train.add_argument("--model", help=f"model name ({', '.join(available())})")
    train.add_argument("--out", required=True, help="run directory to write")
    train.add_argument("--config", help="TOML file with [model] and [train] tables")
    train.add_argument(
        "--steps", type=int, help="optimisation steps (default: train to convergence)"
    )
    train.add_argument("--batch-size", type=int, dest="batch_size", help="minibatch size (512)")
    train.add_argument("--lr", type=float, help="peak learning rate (1e-3)")
    train.add_argument("--seed", type=int, help="random seed (0)")
    train.add_argument(
        "--n", type=int, help="examples to draw from a built-in set / first rows of a file"
    )
    train.add_argument(
        "--latlon",
        action="store_true",
        help="the data file has two columns, latitude and longitude in degrees: model them "
        "as unit vectors of S^2 (rfm, sphere-nsf); eval and plot read the run's files the "
        "same way and sample writes latitude and longitude",
    )
    train.add_argument(
        "--init",
        metavar="RUN_DIR",
        help="start from the weights and units of this trained run (an fm run fine-tuned by "
        "maximum likelihood: --model ffjord)",
    )
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--set", action="append", metavar="KEY=VALUE", help="a model option")
    train.add_argument("--quiet", action="store_true", help="no progress bar or summary")

    evaluate = _subparser(
        commands, "eval", "evaluate a trained run's log-likelihood on data", EVAL_EPILOG
    )
    evaluate.add_argument("run", metavar="RUN_DIR", help="run directory written by train")
    evaluate.add_argument(
        "--data",
        help="data file or builtin:NAME; with --target, a file of exact target samples",
    )
    evaluate.add_argument(
        "--target",
        help="importance-sampling metrics against FILE.py:NAME or builtin:NAME (default for "
        "a run of train --target: its own target)",
    )
    evaluate.add_argument("--context", help="context file: one row per data row, or one row")
    evaluate.add_argument(
        "-n", "--n", type=int, help="examples (built-in sets: 20000 toys; --target: flow samples)"
    )
    evaluate.add_argument(
        "--seed", type=int, help="seed of built-in data (default: training seed + 1)"
    )
    evaluate.add_argument(
        "--sample-metrics",
        action="store_true",
        help="add energy distance and sliced Wasserstein of samples (always on without log_prob)",
    )
    evaluate.add_argument(
        "--latlon",
        action="store_true",
        help="the data file has latitude and longitude in degrees (the default for a run "
        "trained with --latlon)",
    )
    _solver_arguments(evaluate, likelihood=True)

    sample = _subparser(commands, "sample", "draw samples from a trained run", SAMPLE_EPILOG)
    sample.add_argument("run", metavar="RUN_DIR", help="run directory written by train")
    count = sample.add_mutually_exclusive_group()
    count.add_argument("-n", type=int, help="samples (per context row)")
    count.add_argument(
        "--source",
        help="map the rows of this file (a run trained with --source) instead of drawing -n",
    )
    sample.add_argument("--context", help="context file (one row, or M rows for M*N samples)")
    sample.add_argument("--out", required=True, help="output .npy file")
    sample.add_argument("--seed", type=int, default=0, help="random seed (0)")
    sample.add_argument(
        "--latlon",
        action="store_true",
        help="write points of S^2 as latitude and longitude in degrees (the default for a "
        "run trained with --latlon)",
    )
    mcmc = sample.add_argument_group("flow MCMC on a run of train --target")
    mcmc.add_argument(
        "--mcmc",
        help=f"run Markov chains with the flow as proposal or map ({', '.join(KERNELS)}); "
        "--steps is then the number of kept steps (1000)",
    )
    mcmc.add_argument("--chains", type=int, help="chains side by side (16)")
    mcmc.add_argument("--warmup", type=int, help="steps run and dropped first (0)")
    mcmc.add_argument("--target", help="the target (default: the one the run was fitted to)")
    mcmc.add_argument(
        "--observation",
        help="with --mcmc mala|hmc and --prior: sample theta given this one row x_o from a "
        "likelihood run (trained with --data x.npy --context theta.npy)",
    )
    mcmc.add_argument("--prior", help="the prior JSON file over theta (with --observation)")
    _solver_arguments(sample, likelihood=False)

    plot = _subparser(
        commands,
        "plot",
        "draw a run's figures into RUN_DIR (needs matplotlib)",
        "writes RUN_DIR/loss.png (training and validation loss) and, for unconditional\n"
        "2-D runs, RUN_DIR/samples.png (data, samples, density contours) or a sample\n"
        "grid for image runs.\n\nexample:\n  pushforward plot runs/moons",
    )
    plot.add_argument("run", metavar="RUN_DIR", help="run directory written by train")
    plot.add_argument(
        "--context",
        help="one observation (a file of one row): draw a pairplot of the posterior "
        "samples given it into RUN_DIR/posterior.png",
    )
    _pair_commands(commands)

    diagnose = _subparser(
        commands,
        "diagnose",
        "calibration of a posterior run on held-out simulations (SBC, coverage, TARP)",
        DIAGNOSE_EPILOG,
    )
    diagnose.add_argument("run", metavar="RUN_DIR", help="run directory written by train")
    diagnose.add_argument("--data", required=True, help="test parameters theta, one per row")
    diagnose.add_argument(
        "--context", required=True, help="their simulated observations x, row for row"
    )
    diagnose.add_argument("-n", "--n", type=int, help="posterior samples per test pair (500)")
    diagnose.add_argument("--seed", type=int, default=0, help="random seed (0)")
    diagnose.add_argument(
        "--prior",
        help="a prior JSON file: report the share of samples outside its support (default: "
        "the run's --prior)",
    )
    diagnose.add_argument(
        "--no-coverage",
        action="store_true",
        dest="no_coverage",
        help="skip expected coverage (it scores every sample: an ODE solve each for fm)",
    )

    demo = _subparser(
        commands,
        "demo",
        "train NSF, flow matching and MeanFlow on built-in 2-D data, write runs and a report",
        "trains each model like pushforward train into --out/MODEL (default\n"
        "./pushforward-demo/nsf, fm and meanflow: a discrete flow, a 20-step ODE sampler and\n"
        "a one-step generator), writes figures when matplotlib\n"
        "is installed, prints the test log-likelihood (original units) and the KL to the\n"
        "true density as one JSON line per model, and writes --out/report.html with the\n"
        "runs side by side.\n\n"
        "examples:\n  pushforward demo\n"
        "  pushforward demo --model maf,nsf --data 8gaussians --steps 1000 --out runs/demo",
    )
    demo.add_argument(
        "--model",
        default="nsf,fm,meanflow",
        help=f"comma-separated model names (nsf,fm,meanflow; any of {', '.join(available())})",
    )
    demo.add_argument("--data", default="moons", help="built-in 2-D dataset")
    demo.add_argument("--steps", type=int, default=2000, help="training steps")
    demo.add_argument(
        "--eval-n", type=int, default=10_000, help="fresh test points per model (10000)"
    )
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="runs trained at once, each in its own process (default: one per CPU core)",
    )
    demo.add_argument(
        "--out", default="pushforward-demo", help="directory of the runs (replaced if a demo)"
    )
    return root


def _set_threads(arguments: argparse.Namespace) -> None:
    threads = arguments.threads
    if threads is None and arguments.command == "demo":
        # Small flows run fastest on one thread; more threads only contend,
        # badly so when other processes share the cores.
        threads = 1
    if threads is not None:
        if threads < 1:
            raise ValueError(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


@contextmanager
def _process_group() -> Iterator[None]:
    """Joins the process group of a ``torchrun`` launch (gloo: the CLI trains on the CPU)."""
    # torchrun sets WORLD_SIZE in every worker; a single process needs no group.
    if int(os.environ.get("WORLD_SIZE", "1")) < 2:
        yield
        return
    if torch.distributed.is_initialized():
        yield
        return
    torch.distributed.init_process_group("gloo")
    try:
        yield
    finally:
        torch.distributed.destroy_process_group()


def _dispatch(arguments: argparse.Namespace) -> int:
    _set_threads(arguments)
    if arguments.command == "train":
        with _process_group():
            return run_train(arguments)
    if arguments.command == "eval":
        return run_eval(arguments)
    if arguments.command == "sample":
        return run_sample(arguments)
    if arguments.command == "plot":
        return run_plot(arguments)
    if arguments.command == "diagnose":
        return run_diagnose(arguments)
    if arguments.command in ("reflow", "distill"):
        return run_reflow(arguments) if arguments.command == "reflow" else run_distill(arguments)
    return main_demo(
        arguments.steps,
        arguments.data,
        arguments.model,
        arguments.seed,
        arguments.out,
        arguments.eval_n,
        arguments.jobs,
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (2 for bad input, one line on stderr)."""
    try:
        arguments = parser().parse_args(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    if arguments.command is None:
        parser().print_help()
        return 2
    try:
        return _dispatch(arguments)
    except (ValueError, TypeError, OSError) as error:
        print(f"pushforward: error: {_one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        # fit wrote a checkpoint before raising: the run can be continued.
        print(
            "pushforward: interrupted (continue a train, reflow or distill run with --resume)",
            file=sys.stderr,
        )
        return 130
    except RuntimeError as error:
        # Training failures such as a loss that stays NaN: not bad input, still one line.
        print(f"pushforward: error: {_one_line(error)}", file=sys.stderr)
        return 1


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


if __name__ == "__main__":
    sys.exit(main())
