"""CLIs: a user's mistake is one line on stderr, exit code 2, no traceback, no output file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def run(repo_root, *args):
    return subprocess.run([sys.executable, *args], cwd=repo_root, capture_output=True, text=True, timeout=120)


def test_bad_models_json(repo_root, tmp_path):
    proc = run(repo_root, "scripts/model_inventory.py", "--models", "{oops", "--out", str(tmp_path / "m.csv"))
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("error: --models: not valid JSON")
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "m.csv").exists()


def test_bad_config_file(repo_root, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text((repo_root / "config.yaml").read_text().replace("seed: 0", "seed: 0\nsed: 1"))
    proc = run(repo_root, "scripts/model_inventory.py", "--config", str(cfg), "--out", str(tmp_path / "m.csv"))
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"error: {cfg}: sed: unknown key 'sed'")


def test_unknown_preset_names_the_role(repo_root, tmp_path):
    proc = run(repo_root, "scripts/model_inventory.py", "--models", '{"vae": {"random": "huge"}}',
               "--out", str(tmp_path / "m.csv"))
    assert proc.returncode == 2
    assert "models.vae.random: unknown preset 'huge'" in proc.stderr


def test_missing_input_file(repo_root, tmp_path):
    proc = run(repo_root, "scripts/make_demo_data.py", "summary", "--captions", str(tmp_path / "none.json"),
               "--cifar", str(tmp_path), "--subject", str(tmp_path), "--out", str(tmp_path / "s.json"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"error: {tmp_path / 'none.json'}: captions file not found"
    assert not (tmp_path / "s.json").exists()


def test_sigterm_leaves_no_temporary_file_and_exits_143(tmp_path):
    import signal
    import time

    script = tmp_path / "slow.py"
    script.write_text(
        "import sys, time\n"
        "from diffscale import atomic\n"
        "from diffscale.cli import run_cli\n"
        "def main():\n"
        f"    with atomic.atomic_path({str(tmp_path / 'out.txt')!r}) as tmp:\n"
        "        tmp.write_text('half')\n"
        "        print('writing', flush=True)\n"
        "        time.sleep(60)\n"
        "sys.exit(run_cli(main))\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGTERM)
    start = time.monotonic()
    assert proc.wait(timeout=30) == 143 and time.monotonic() - start < 30
    assert [p.name for p in tmp_path.iterdir()] == ["slow.py"]  # neither out.txt nor its .tmp


def test_a_count_flag_below_one_is_refused_before_anything_is_written(repo_root, tmp_path):
    cases = [("scripts/make_demo_data.py", "subject", "--out", str(tmp_path / "s"), "--n", "-1"),
             ("scripts/make_demo_data.py", "cifar", "--out", str(tmp_path / "c"), "--per-class", "0"),
             ("scripts/filter_coco.py", "--captions", "c.json", "--out-dir", str(tmp_path / "f"), "--threads", "0"),
             ("scripts/ddpm_table.py", "--stage", "amp", "--runs", "r", "--out", str(tmp_path / "t.csv"),
              "--train-steps", "ten")]
    for args in cases:
        proc = run(repo_root, *args)
        assert proc.returncode == 2, args
        flag, value = args[-2:]
        shown = repr(value) if not value.lstrip("-").isdigit() else value
        script = Path(args[0]).name + (f" {args[1]}" if args[1] in ("subject", "cifar") else "")
        assert proc.stderr == (f"error: argument {flag}: expected a positive integer, not {shown} (see {script} "
                               f"--help)\n")  # one line: no usage block before it
    assert list(tmp_path.iterdir()) == []


def test_a_gpu_embedding_run_on_no_cpus_is_refused(tmp_path):
    import pytest

    from diffscale.embed.stage import plan_run
    from diffscale.errors import ConfigError

    with pytest.raises(ConfigError, match="^embed: cpus must be at least 1, not 0$"):
        plan_run("images", tmp_path / "m.json", tmp_path / "out", "gpu", "pinned", 1, None, cpus=0)


def test_an_output_path_that_cannot_be_written_is_one_line_naming_it(repo_root, tmp_path):
    """A file where a folder is wanted, a folder where a file is wanted: the path and the reason."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    proc = run(repo_root, "scripts/model_inventory.py", "--config", "config.yaml", "--out", str(blocker / "m.csv"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"error: {blocker}: is a file, where a folder is needed; give another path or move the file"
    folder = tmp_path / "a-folder"
    (folder / "inside").mkdir(parents=True)
    proc = run(repo_root, "scripts/model_inventory.py", "--config", "config.yaml", "--out", str(folder))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"error: {folder}: Is a directory"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a-file", "a-folder", "inside"]  # no temporary left


def test_a_file_system_error_names_the_target_not_the_temporary_file():
    from diffscale.cli import os_error_path

    error = IsADirectoryError(21, "Is a directory", "/r/.table.csv.123.tmp", None, "/r/table.csv")
    assert os_error_path(error) == "/r/table.csv"
    assert os_error_path(OSError(30, "Read-only file system", "/ro/.out.77.tmp")) == "/ro/out"
    assert os_error_path(OSError(13, "Permission denied", "/x/.hidden.json")) == "/x/.hidden.json"


def test_a_file_in_the_way_of_a_folder_is_named_as_the_problem(tmp_path):
    from diffscale.cli import os_error_text

    blocker = tmp_path / "out"
    blocker.write_text("")
    under = NotADirectoryError(20, "Not a directory", str(blocker / "manifest.parquet"))
    assert os_error_text(under) == (f"{blocker}: is a file, where a folder is needed (for {blocker}/manifest.parquet); "
                                    "give another path or move the file")
    assert os_error_text(OSError(13, "Permission denied", "/x/y")) == "/x/y: Permission denied"


def test_an_os_error_that_is_not_about_an_unwritable_path_keeps_its_traceback():
    from diffscale.cli import run_cli

    def bug():
        raise FileNotFoundError(2, "No such file or directory", "/internal/intermediate.bin")

    with pytest.raises(FileNotFoundError):
        run_cli(bug)


def test_a_device_that_is_no_device_is_one_line_naming_the_flag(repo_root, tmp_path):
    for script, args in (("scripts/generate.py", ["--prompt", "x", "--model-path", str(tmp_path)]),
                         ("scripts/flux_cache.py", ["--dataset", str(tmp_path), "--config", "config.yaml"])):
        for device in ("tpu", "gpu0", "cuda:x"):
            proc = run(repo_root, script, *args, "--out", str(tmp_path / "out"), "--device", device)
            assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
                f"error: --device: expected cpu, cuda or cuda:N, not {device!r}"], (script, proc.stderr)
    assert not (tmp_path / "out").exists()


def test_a_models_flag_that_is_not_a_mapping_and_a_share_above_one_are_one_line(repo_root, tmp_path):
    proc = run(repo_root, "scripts/model_inventory.py", "--models", '"tiny"', "--out", str(tmp_path / "m.csv"))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --models: expected a JSON object of role: spec (the config's models: section), not str"]
    proc = run(repo_root, "scripts/model_inventory.py", "--models", "{}", "--out", str(tmp_path / "m.csv"))
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: --models: expected a JSON object of role: spec (the config's models: section), not an empty one"]
    proc = run(repo_root, "scripts/make_demo_data.py", "coco", "--n", "4", "--people-fraction", "2",
               "--captions", str(tmp_path / "c.json"), "--images", str(tmp_path / "img"))
    assert proc.returncode == 2 and "--people-fraction: expected a number from 0 to 1, not 2" in proc.stderr
    assert not list(tmp_path.iterdir())


def test_flags_that_need_others_and_counts_below_one_are_one_line_each():
    from diffscale.cli import at_least_one, needs
    from diffscale.errors import ConfigError

    needs("--config", {"--hw": "a40", "--gpus": 2})
    with pytest.raises(ConfigError, match="^--config needs --hw$"):
        needs("--config", {"--hw": None, "--gpus": 2})
    with pytest.raises(ConfigError, match="^--config needs --hw, --precision and --gpus$"):
        needs("--config", {"--hw": None, "--precision": None, "--gpus": None})
    at_least_one("--stop-after", None, "the step to end after")  # not given
    at_least_one("--stop-after", 1, "the step to end after")
    with pytest.raises(ConfigError, match=r"^--stop-after: 0 is not a positive integer \(the step to end after\)$"):
        at_least_one("--stop-after", 0, "the step to end after")


def test_flags_of_config_given_with_a_run_config_are_refused_not_ignored(repo_root, tmp_path):
    import json
    import subprocess
    import sys

    from diffscale.cli import only_with
    from diffscale.errors import ConfigError

    only_with("--config", {"--hw": None, "--set": []}, "--run-config")  # none given
    with pytest.raises(ConfigError, match=r"^--hw goes with --config \(a --run-config already says it\)$"):
        only_with("--config", {"--hw": "a100", "--gpus": None}, "--run-config")
    with pytest.raises(ConfigError, match=r"^--hw, --gpus and --set go with --config \(a --settings already says "
                                          r"them\)$"):
        only_with("--config", {"--hw": "a100", "--gpus": 8, "--set": ["batch=2"]}, "--settings")
    # the scripts: refused before anything runs (train_unet ran on, ignoring --hw a100 --gpus 8)
    proc = subprocess.run([sys.executable, "scripts/train_unet.py", "--run-config", json.dumps({"run": {}}),
                           "--hw", "a100", "--gpus", "8", "--images", "i", "--text", "t", "--out",
                           str(tmp_path / "run")], cwd=repo_root, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and not (tmp_path / "run").exists()
    assert proc.stderr == "error: --hw and --gpus go with --config (a --run-config already says them)\n"


def test_the_training_scripts_check_their_count_flags_alike(repo_root, tmp_path):
    for script, args in (("scripts/train_unet.py", ["--run-config", "{}", "--images", "i", "--text", "t"]),
                         ("scripts/flux_lora.py", ["--run-config", "{}"])):
        proc = run(repo_root, script, *args, "--out", str(tmp_path / "out"), "--stop-after", "-1")
        assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
            "error: --stop-after: -1 is not a positive integer (the step to end after)"], (script, proc.stderr)
    assert not (tmp_path / "out").exists()
