"""`flowspec train` as a person sees it: in a real 80-column pseudo-terminal (a progress bar
with step count and ETA that fits) and in a pipe (one timestamped line per record, never
wrapped). Both run the installed CLI in a subprocess."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pty")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d ")
STEPS = 600
LOG = 250


def _env(tmp_path, **extra):
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "NO_COLOR")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", XDG_CACHE_HOME=str(tmp_path / "cache"),
               **extra)
    return env


def _train_args(spec, out):
    return [sys.executable, "-m", "flowspec_cli.main", "train", str(spec), "--out", str(out),
            "--device", "cpu", "--set", f"train.steps={STEPS}", "--set", f"train.log_every={LOG}",
            "--set", "train.eval_every=0", "--set", "train.sample_every=0",
            "--set", "train.checkpoint_every=0", "--set", "train.ema=null"]


def test_progress_bar_in_an_80_column_terminal(tiny_spec_path, tmp_path):
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    proc = subprocess.Popen(_train_args(tiny_spec_path, tmp_path / "runs"), stdin=slave,
                            stdout=slave, stderr=slave, env=_env(tmp_path, TERM="xterm"),
                            start_new_session=True)
    os.close(slave)
    chunks = []
    deadline = time.time() + 240
    while time.time() < deadline:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=60) == 0, b"".join(chunks).decode(errors="replace")[-3000:]
    screen = ANSI.sub("", b"".join(chunks).decode("utf-8", errors="replace"))
    lines = [line for line in re.split(r"[\r\n]", screen) if line.strip()]
    assert lines and max(len(line) for line in lines) <= 80, max(lines, key=len)
    bars = [m for line in lines
            if (m := re.search(rf"train .*?(\d+)/{STEPS} +\d+:\d\d:\d\d eta (\d+:\d\d:\d\d)",
                               line))]
    assert bars, screen[-2000:]
    moving = [m for m in bars if 0 < int(m.group(1)) < STEPS]
    assert moving, "no frame showed the bar part-way"
    # the bar moves every step, not only every log_every steps
    assert any(int(m.group(1)) % LOG for m in moving), [m.group(1) for m in moving]
    assert int(bars[-1].group(1)) == STEPS and bars[-1].group(2) == "0:00:00"
    assert any("loss" in line and "nats/dim" in line for line in lines)


def test_plain_log_lines_in_a_pipe(tiny_spec_path, tmp_path):
    out = tmp_path / "a_deliberately_long_directory_name_so_records_pass_80_columns" / "runs"
    args = _train_args(tiny_spec_path, out)
    args[args.index(f"train.steps={STEPS}")] = "train.steps=40"
    args[args.index(f"train.log_every={LOG}")] = "train.log_every=10"
    args[args.index("train.eval_every=0")] = "train.eval_every=1"
    r = subprocess.run(args, capture_output=True, text=True, env=_env(tmp_path), timeout=240)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "\x1b[" not in r.stdout
    assert all(STAMP.match(line) for line in lines), lines
    steps = [line for line in lines if re.search(r"^\S+ step \d+/40 ", line)]
    assert len(steps) == 4
    assert all("loss=" in line and "examples_per_s=" in line for line in steps)
    assert any(len(line) > 80 for line in lines)  # long records stay whole
    assert any(" epoch " in line and " val: nll_nats=" in line for line in lines)
    assert "loss in nats/dim" in lines[0] and str(out) in lines[0]
    assert lines[-3].endswith(" done: " + str(next((out / "tiny").iterdir())))
    assert " last checkpoint (step 40, val): " in lines[-2]
    assert " best checkpoint (step " in lines[-1]
