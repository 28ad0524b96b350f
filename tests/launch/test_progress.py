"""Progress output when stdout is a file or a pipe (as under pytest's capture, ``nohup`` or
``tether launch``): plain lines while the work runs, not one render at the end."""

from __future__ import annotations

import subprocess
import sys
import time

from rich.progress import Progress

from tether.launch.progress import LineProgress, progress_bar, training_progress


def _lines(text: str, needle: str) -> list[str]:
    return [line for line in text.splitlines() if needle in line]


def test_a_pipe_gets_a_line_at_the_start_and_at_the_end_within_the_interval(capsys):
    with progress_bar(interval_s=3600) as progress:
        assert isinstance(progress, LineProgress)
        bar = progress.add_task("collect", total=10)
        for _ in range(10):
            progress.advance(bar)
        first = _lines(capsys.readouterr().out, "collect")
        progress.advance(bar)  # past the end: the final line is not printed again
    lines = first + _lines(capsys.readouterr().out, "collect")
    assert len(lines) == 2, lines
    assert " 10%" in lines[0]
    assert "100%" in lines[1]
    assert "\x1b" not in "".join(lines)  # no cursor or colour control codes in a log


def test_every_update_prints_when_the_interval_is_zero(capsys):
    with progress_bar(interval_s=0) as progress:
        bar = progress.add_task("eval", total=None)
        for done in range(1, 5):
            progress.update(bar, completed=done, total=4)
    assert len(_lines(capsys.readouterr().out, "eval")) == 4


def test_training_lines_show_steps_and_loss_while_training(capsys):
    with training_progress("beso", 300) as on_step:
        on_step(149, 0.25)  # a resumed run's first step
        out = capsys.readouterr().out
        assert _lines(out, "150/300") and "loss 0.2500" in out
        on_step(299, 0.125)
    assert "300/300" in capsys.readouterr().out


def test_disabled_progress_prints_nothing(capsys):
    with training_progress("beso", 10, disable=True) as on_step:
        for step in range(10):
            on_step(step, 1.0)
    assert capsys.readouterr().out == ""
    assert type(progress_bar(disable=True)) is Progress


def test_a_training_redirected_to_a_file_logs_progress_before_it_ends(tmp_path):
    script = (
        "import time\n"
        "from tether.launch.progress import training_progress\n"
        "with training_progress('train', 3) as on_step:\n"
        "    on_step(0, 1.0)\n"
        "    time.sleep(60)\n"
    )
    log = tmp_path / "train.log"
    with log.open("w") as f:
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=f, stderr=subprocess.STDOUT)
        try:
            for _ in range(200):  # up to 20 s for the interpreter to start and print
                if "1/3" in log.read_text():
                    break
                time.sleep(0.1)
            assert proc.poll() is None, "the process ended: the line must come while it runs"
            assert "1/3" in log.read_text(), log.read_text()
        finally:
            proc.kill()
            proc.wait()
