"""One process per study or run directory; a dead holder leaves no stale lock."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from lmablate.errors import LmablateError
from lmablate.locks import MARKER, check_claim, exclusive, folder_kind


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


# ------------------------------------------------------------------ whose folder it is


def test_a_claimed_folder_is_marked_with_its_kind_and_accepted_again(tmp_path):
    for what, kind in (("training", "run"), ("study", "study")):
        folder = tmp_path / kind
        with exclusive(folder, what):
            (folder / "anything.txt").write_text("a file of the user's, added later")
        assert folder_kind(folder) == kind
        with exclusive(folder, what):  # its own kind: accepted, whatever else it holds
            pass


def test_a_folder_of_another_kind_or_of_other_files_is_refused_untouched(tmp_path):
    run = tmp_path / "run"
    with exclusive(run, "training"):
        pass
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.md").write_text("keep me")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / MARKER).write_text("{not json")
    for folder, what, says in (
        (run, "study", "is an lmablate run folder, not a study folder"),
        (mine, "training", r"already holds files lmablate did not write \(notes.md\)"),
        (mine, "study", "already holds files lmablate did not write"),
        (broken, "training", "did not write"),
    ):
        before = sorted(p.name for p in folder.iterdir())
        with pytest.raises(LmablateError, match=says):
            check_claim(folder, what)
        with pytest.raises(LmablateError, match=says), exclusive(folder, what):
            pass
        assert sorted(p.name for p in folder.iterdir()) == before  # not even a lock file


def test_folders_written_before_the_marker_are_recognised_by_their_names(tmp_path):
    run, study, odd = tmp_path / "run", tmp_path / "study", tmp_path / "odd"
    for folder, names in (
        (run, ["config.json", "metrics.jsonl", "checkpoint/", ".lock"]),
        (study, ["study.yaml", "runs/", "report/", ".lock"]),
        (odd, ["config.json", "thesis.tex"]),  # a run's name beside one no run writes
    ):
        folder.mkdir()
        for name in names:
            (folder / name.rstrip("/")).mkdir() if name.endswith("/") else (
                folder / name
            ).write_text("")
    assert (folder_kind(run), folder_kind(study), folder_kind(odd)) == ("run", "study", None)
    assert (
        folder_kind(tmp_path / "missing") == "" and folder_kind(tmp_path / "run/checkpoint") == ""
    )
    with exclusive(run, "training"):
        pass
    assert (run / MARKER).is_file()  # marked from now on
