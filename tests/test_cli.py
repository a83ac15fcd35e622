"""Bad input: one line naming the bad value and the valid choices."""

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vitcore import ConfigError
from vitcore.config import RunConfig


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
def test_bad_input_is_one_line(args, needle):
    line = _error_line(cli("train", "--device", "cpu", "--model", "vit-tiny", *args))
    assert needle in line


def test_mismatched_labels_dataset(tmp_path):
    from vitcore import data

    for name in ("cat", "dog", "muffin"):
        (tmp_path / name).mkdir()
        for i in range(2):
            data.embedded_image(0, "train", i).save(tmp_path / name / f"{i}.png")
    line = _error_line(cli("train", "--device", "cpu", "--model", "vit-tiny", "--dataset", str(tmp_path)))
    assert "labels ['cat', 'dog', 'muffin']; dog_food needs ['chicken', 'dog', 'muffin']" in line


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
def test_bench_option_bad_values_are_one_line(option, needle, tmp_path):
    line = _error_line(cli("bench", "--device", "cpu", "--plugins", "torch_ddp", "--no-reference",
                           "--option", option, "--out", str(tmp_path)))
    assert needle in line


def test_bench_options_set_every_point_and_label_it():
    from vitcore import bench

    groups, _ = bench.plan(["torch_ddp"], [8, 16], None, profile="fast", model="vit-tiny", device="cpu",
                           options={"freeze_gc": True, "attention": "eager"})
    cfgs = [c for g in groups for c in g]
    assert [c.batch_size for c in cfgs] == [8, 16]
    assert all(c.freeze_gc and c.attention == "eager" and c.variant == "attention=eager,freeze_gc=True" for c in cfgs)
