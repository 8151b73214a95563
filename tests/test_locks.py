"""One process per study or run directory; a dead holder leaves no stale lock."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from lmablate.errors import LmablateError
from lmablate.locks import exclusive


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    # the inner lock opens the file again, a separate open file description, as a second
    # process would
    with (
        exclusive(tmp_path, "study"),
        pytest.raises(LmablateError, match=r"is in use by lmablate \(pid \d+\)"),
        exclusive(tmp_path, "study"),
    ):
        pass
    with exclusive(tmp_path, "study"):  # released on exit
        pass


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = (
        f"from pathlib import Path; from lmablate.locks import exclusive\n"
        f"import time\nwith exclusive(Path({str(tmp_path)!r}), 'study'):\n"
        "    print('held', flush=True); time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(LmablateError, match="is in use"), exclusive(tmp_path, "study"):
        pass
    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    deadline = time.monotonic() + 10
    while True:
        try:
            with exclusive(tmp_path, "study"):
                break
        except LmablateError:
            assert time.monotonic() < deadline, "the lock outlived its process"
            time.sleep(0.1)


def test_cli_run_refuses_a_study_in_use(tmp_path):
    from helpers import run_cli

    study = tmp_path / "study.yaml"
    study.write_text(
        "name: busy\ndata: {source: builtin}\nbaseline: {max_steps: 5, warmup_steps: 1}\n"
    )
    with exclusive(tmp_path / "out", "study"):
        result = run_cli("run", str(study), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "is in use by lmablate (pid" in result.stderr and "Traceback" not in result.stderr


def test_an_output_path_that_is_a_file_is_a_clear_error(tmp_path):
    (tmp_path / "taken").write_text("a file")
    for path, message in (
        (tmp_path / "taken", "is a file, not a directory"),
        (tmp_path / "taken" / "run", r"taken is a file, so .* cannot be created in it"),
    ):
        with pytest.raises(LmablateError, match=message), exclusive(path, "run"):
            pass
    assert (tmp_path / "taken").read_text() == "a file"
