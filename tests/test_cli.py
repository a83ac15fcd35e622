"""Bad input: one line naming the bad value and the valid choices."""

import json
import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitcore import ConfigError
from vitcore.spec.config import RunConfig
from vitcore.store import results


def cli(*args, timeout=180):
    return subprocess.run([sys.executable, "-m", "vitcore.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _error_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("vitcore: error:")]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
    return lines[0]


@pytest.mark.parametrize("args,needle", [
    (["--plugin", "nope"], "unknown plugin 'nope'; valid: torch_ddp, torch_ddp_fp16, low_level_zero_s1"),
    (["--batch-size", "0"], "batch size 0 must be a positive integer"),
    (["--epochs", "-1"], "epochs -1 must be an integer >= 0"),
    (["--plugin", "hybrid_parallel", "--tp-size", "3", "--nproc", "3"], "tp size 3 does not divide vit-tiny's 4 attention heads"),
    (["--dataset", "/nonexistent/dog_food"], "dataset path '/nonexistent/dog_food' does not exist"),
    (["--model", "vit-huge"], "unknown model 'vit-huge'; valid: vit-base, vit-tiny"),
    (["--plugin", "gemini", "--device", "cpu"], "plugin 'gemini' with bf16 needs CUDA (colossalai GeminiPlugin"),
])
@pytest.mark.slow
def test_bad_input_is_one_line(args, needle):
    line = _error_line(cli("train", "--device", "cpu", "--model", "vit-tiny", *args))
    assert needle in line


@pytest.mark.slow
def test_a_one_class_folder_is_one_line(tmp_path):
    from vitcore.inputs import data

    for name in ("cat",):
        (tmp_path / name).mkdir()
        for i in range(2):
            data.embedded_image(0, "train", i).save(tmp_path / name / f"{i}.png")
    line = _error_line(cli("train", "--device", "cpu", "--model", "vit-tiny", "--dataset", str(tmp_path)))
    assert "has 1 class folder(s) ['cat']; a classifier needs at least 2" in line


@pytest.mark.slow
def test_train_prints_epochs_and_sources(tmp_path):
    p = cli("train", "--plugin", "torch_ddp", "--model", "vit-tiny", "--epochs", "2", "--subset", "150",
            "--dataset", "embedded", "--device", "cpu", "--out", str(tmp_path / "h.json"))
    assert p.returncode == 0, p.stderr[-2000:]
    assert "epoch 1/2" in p.stdout and "epoch 2/2" in p.stdout and "eval_accuracy=" in p.stdout
    assert "dataset=embedded:synthetic-dog-food" in p.stdout and "weights=random-init" in p.stdout


@settings(max_examples=80, deadline=None)
@given(batch=st.integers(-4, 64), epochs=st.integers(-3, 3), tp=st.integers(1, 5), world=st.integers(1, 8))
def test_config_validation_property(batch, epochs, tp, world):
    """A config either validates into a consistent layout or raises ConfigError, never anything else."""
    try:
        cfg = RunConfig(plugin="hybrid_parallel", model="vit-tiny", batch_size=batch, epochs=epochs,
                        tp_size=tp, world_size=world, device="cpu")
    except ConfigError as e:
        assert "\n" not in str(e)
        return
    assert batch >= 1 and epochs >= 0 and 4 % tp == 0 and world % tp == 0
    assert cfg.dp_size * cfg.tp_size * cfg.pp_size == world


@pytest.mark.parametrize("option,needle", [
    ("speed=fast", "--option 'speed=fast': expected NAME=VALUE with NAME one of attention, grad_checkpoint"),
    ("freeze_gc", "--option 'freeze_gc': expected NAME=VALUE"),
    ("freeze_gc=maybe", "--option 'freeze_gc=maybe': freeze_gc takes true or false"),
    ("attention=flash", "unknown attention 'flash'; valid: eager, sdpa"),
])
@pytest.mark.slow
def test_bench_option_bad_values_are_one_line(option, needle, tmp_path):
    line = _error_line(cli("bench", "--device", "cpu", "--plugins", "torch_ddp", "--no-reference",
                           "--option", option, "--out", str(tmp_path)))
    assert needle in line


@pytest.mark.parametrize("option,needle", [  # the plugins' own options (issue 17): typed and ranged
    ("speed=fast", "with NAME one of attention, grad_checkpoint, compile, fused_optimizer, plugin_kernels, freeze_gc, "
                   "overlap_communication, reduce_bucket_size_in_m, enable_async_reduce, max_prefetch, hidden_dim, "
                   "shard_param_frac, offload_optim_frac, enable_flash_attention, enable_jit_fused"),
    ("overlap_communication=maybe", "--option 'overlap_communication=maybe': overlap_communication takes true or "
                                    "false, not 'maybe'"),
    ("max_prefetch=-1", "--option 'max_prefetch=-1': max_prefetch takes an integer >= 0, not -1"),
    ("hidden_dim=7.5", "--option 'hidden_dim=7.5': hidden_dim takes an integer >= 1, not '7.5'"),
    ("shard_param_frac=2", "--option 'shard_param_frac=2': shard_param_frac takes a number in [0, 1], not 2.0"),
])
def test_bench_plugin_option_bad_values_are_one_line_before_anything_is_written(option, needle, tmp_path):
    rc, _, err = in_process("bench", "--device", "cpu", "--plugins", "hybrid_parallel", "--no-reference",
                            "--option", option, "--out", str(tmp_path / "o"))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "o").exists()


def test_bench_option_no_selected_entry_has_is_one_line(tmp_path):
    rc, _, err = in_process("bench", "--device", "cpu", "--plugins", "torch_ddp", "--no-reference",
                            "--option", "enable_jit_fused=true", "--out", str(tmp_path / "o"))
    assert rc == 2 and len(err.strip().splitlines()) == 1, err
    assert "nothing to measure" in err and "plugin 'torch_ddp' has no option 'enable_jit_fused'; its options: none" in err
    assert not (tmp_path / "o").exists()


def test_bench_ablate_names_its_modes():
    rc, _, err = in_process("bench", "--device", "cpu", "--ablate", "plugins", "--out", "/nonexistent/o")
    assert rc == 2 and err.strip().startswith("vitcore: error: argument --ablate: invalid choice: 'plugins'")
    assert "'all', 'profile', 'plugin'" in err and len(err.strip().splitlines()) == 1
    args = options_parser().parse_args(["bench", "--ablate", "--plugins", "gemini"])
    assert (args.ablate, args.plugins) == ("all", ["gemini"])
    assert options_parser().parse_args(["bench", "--ablate", "plugin"]).ablate == "plugin"
    assert options_parser().parse_args(["bench"]).ablate is None


def options_parser():
    from vitcore.cli import options

    return options.build_parser()


def test_bench_options_set_every_point_and_label_it():
    from vitcore.measure import bench

    groups, _ = bench.plan(["torch_ddp"], [8, 16], None, profile="fast", model="vit-tiny", device="cpu",
                           options={"freeze_gc": True, "attention": "eager"})
    cfgs = [c for g in groups for c in g]
    assert [c.batch_size for c in cfgs] == [8, 16]
    assert all(c.freeze_gc and c.attention == "eager" and c.variant == "attention=eager,freeze_gc=True" for c in cfgs)


# --- the command line's own surface: --version, plugins, env, help ---------------------------------------
def in_process(*argv) -> tuple[int, str, str]:
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from vitcore.cli import commands as vitcore_cli

    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            rc = vitcore_cli.main(list(argv))
        except SystemExit as e:  # argparse: --help, --version, usage errors
            rc = e.code
    return rc, out.getvalue(), err.getvalue()


def test_version_exits_0_and_prints_the_package_version():
    from vitcore import __version__

    p = cli("--version", timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(f"vitcore {__version__}") and len(p.stdout.splitlines()) == 1


def test_plugins_lists_every_registry_entry_with_its_precisions_and_whether_it_runs_here():
    from vitcore.spec import plugins

    rc, out, _ = in_process("plugins", "--device", "cpu")
    assert rc == 0
    rows = {ln.split()[0]: ln for ln in out.splitlines()[2:]}
    assert list(rows) == list(plugins.REGISTRY)
    for name, spec in plugins.REGISTRY.items():
        cells = rows[name].split()
        assert cells[1:4] == [spec.family, "/".join(spec.precisions), str(spec.min_world_size)], rows[name]
        assert cells[4:6] == [spec.compile.where, "boosting"], rows[name]  # where torch.compile applies
        here = " ".join(cells[6:])
        if spec.cpu_precisions:
            assert here.startswith("yes: " + "/".join(spec.cpu_precisions)), here
        else:
            assert here.startswith("no;") and spec.cpu_reason in here, here
    assert in_process("plugins", "--device", "tpu")[0] == 2


def test_env_names_the_budget_file_of_this_device_and_whether_it_exists(tmp_path):
    from vitcore.gate import budget_files
    from vitcore.spec import points
    from vitcore.spec.env import environment

    env = environment()
    rc, out, _ = in_process("env", "--budgets", str(tmp_path))
    assert rc == 0
    fields = dict(ln.split(None, 1) if not ln.startswith(("device identity", "budget file")) else
                  (ln[:15].strip(), ln[15:].strip()) for ln in out.splitlines())
    assert fields["device identity"] == points.device_key(env)
    assert fields["torch"] == env["torch"] and fields["colossalai"] == env["colossalai"]
    path = budget_files.budget_path(tmp_path, env)
    assert fields["budget file"].startswith(f"{path} (missing")
    path.write_text('{"entries": {}}')
    assert f"{path} (exists)" in in_process("env", "--budgets", str(tmp_path))[1]


def test_each_subcommand_has_its_own_help_with_defaults_and_examples():
    helps = {cmd: in_process(cmd, "--help")[1] for cmd in ("train", "bench", "report", "plugins", "env")}
    assert len(set(helps.values())) == 5
    assert all("examples:\n  vitcore " + cmd in text for cmd, text in helps.items())
    assert "Fine-tune the ViT preset" in helps["train"] and "Time training steps" not in helps["train"]
    assert "--plugin PLUGIN       registry entry; `vitcore plugins` lists them (default:" in helps["train"]
    assert "(default: 8,32,64,128)" in helps["bench"] and "(default: 32)" in helps["train"]
    for group in ("what to measure:", "how each point is timed:", "output:", "the gate (docs/gate.md):"):
        assert group in helps["bench"]


def test_bench_dataset_needs_finetune_and_is_checked_before_measuring(tmp_path):
    rc, _, err = in_process("bench", "--device", "cpu", "--plugins", "torch_ddp", "--dataset", "embedded",
                            "--out", str(tmp_path / "o"))
    assert rc == 2 and err.strip() == ("vitcore: error: --dataset 'embedded' is the fine-tuning's data and needs "
                                       "--finetune (throughput is timed on random tensors); add --finetune or leave "
                                       "--dataset out")
    rc, _, err = in_process("bench", "--device", "cpu", "--plugins", "torch_ddp", "--finetune", "--dataset",
                            "/nonexistent/dog_food", "--out", str(tmp_path / "o"))
    assert rc == 2 and len(err.strip().splitlines()) == 1 and "'/nonexistent/dog_food' does not exist" in err
    assert not (tmp_path / "o").exists()  # refused before anything was written


# --- a tiny CPU bench: --json, the console, the log ---------------------------------------------------------
# Run with an unknown third-party package making noise in the parent and the workers (tests/support/third_party_noise.py):
# the console rule is checked by the shape of the suite's own lines, never by a list of known messages.
TINY = ["bench", "--device", "cpu", "--model", "vit-tiny", "--plugins", "torch_ddp", "--batch-sizes", "4,8",
        "--steps", "2", "--repeats", "2", "--warmup", "1", "--min-window", "0", "--no-reference"]
THIRD_PARTY_LINE = re.compile(r"\[vitcore\] (\d+) lines? of third-party output in (\S+)$")


@pytest.fixture(scope="module")
def tiny_json(tmp_path_factory):
    from tests.support import third_party_noise

    out = tmp_path_factory.mktemp("tiny")
    p = subprocess.run([sys.executable, "-m", "vitcore.cli", *TINY, "--json", "--out", str(out)], capture_output=True,
                       text=True, timeout=600, env=third_party_noise.environ(tmp_path_factory.mktemp("noise")))
    assert p.returncode == 0, p.stderr[-3000:]
    return p, out


@pytest.mark.slow
def test_bench_json_prints_the_points_as_json_lines_on_stdout(tiny_json):
    from vitcore.spec import points

    p, out = tiny_json
    rows = [json.loads(ln) for ln in p.stdout.splitlines()]
    assert [(r["plugin"], r["batch_size"], r["status"]) for r in rows] == [("torch_ddp", 4, "ok"), ("torch_ddp", 8, "ok")]
    identity = [f.name for f in points.FIELDS if f.identity]
    assert all(set(identity) <= set(r) and r["images_per_s"] > 0 and r["git_sha"] and r["dataset"] for r in rows)
    assert [points.key(r) for r in rows] == [points.key(r) for r in results.read_points(out / "points.jsonl")]
    assert "[vitcore]" not in p.stdout  # everything else went to stderr


@pytest.mark.slow
def test_console_has_one_line_per_point_and_only_the_suite_s_own_lines(tiny_json):
    from tests.support import third_party_noise
    from vitcore.processes import output as console

    p, out = tiny_json
    lines = p.stderr.splitlines()
    per_point = [ln for ln in lines if re.match(r"\[\d/2\] torch_ddp fp32 bs[48]: [\d.]+ img/s ±\d+%, \d+ s", ln)]
    assert len(per_point) == 2 and per_point[0].startswith("[1/2]") and per_point[1].startswith("[2/2]"), p.stderr
    assert "(ETA " in per_point[0]  # no terminal here: the line carries the ETA
    assert [ln for ln in lines if not console.is_own(ln)] == [], p.stderr  # the rule: the suite's shapes only
    assert third_party_noise.MARK not in p.stderr + p.stdout
    m = THIRD_PARTY_LINE.match(lines[-1])
    assert m and m[2] == str(out / "bench.log"), p.stderr
    assert lines[-2].startswith("[vitcore] bench done in ") and "2 measured, 0 reused (2 ok" in lines[-2]
    assert lines[-3].startswith("[vitcore] summary (CPU: a smoke test") and "verdicts: 2 " in lines[-3]
    assert len(lines) <= 6, p.stderr
    log = (out / "bench.log").read_text()
    assert int(m[1]) == len(log.splitlines()) - 1 - 3  # all but the run's header and the table of 2 points
    mark = third_party_noise.MARK
    for where in ("import torch", "run measure_group"):  # the parent's import and a worker's, the workers' run
        for channel in ("a record of an unknown logger", "a record through its own StreamHandler", "a warning",
                        "os.write to fd 2", "a print"):
            assert f"{mark} {where}: {channel}" in log, (where, channel)


def warn_in_worker():
    """Run in a spawned worker: a third-party-style warning and a print."""
    import warnings

    warnings.warn("a third-party warning (test)", UserWarning, stacklevel=1)
    print("a third-party print (test)", flush=True)
    return 1


@pytest.mark.slow
@pytest.mark.parametrize("verbose", [False, True])
def test_worker_output_goes_to_the_log_and_to_the_console_only_when_verbose(tmp_path, capfd, verbose):
    from vitcore.processes import launch

    log = tmp_path / "bench.log"
    assert launch.spawn(warn_in_worker, (), world_size=1, device="cpu", timeout_s=300,
                        output=launch.WorkerOutput(str(log), verbose)) == [1]
    console = capfd.readouterr()
    text = log.read_text()
    assert "UserWarning: a third-party warning (test)" in text and "a third-party print (test)" in text
    assert ("a third-party warning (test)" in console.err + console.out) == verbose
    assert ("a third-party print (test)" in console.err + console.out) == verbose
