"""The README, run as a new user would: its commands, as written, against the embedded server.

The README marks what to run with HTML comments (invisible when rendered):

* ``<!-- tutorial -->`` before a ```sh block: run it in "the first terminal", a bash that
  lives for the whole section, so ``cd``, ``export`` and shell variables carry over; a
  failing command fails the test (``set -e``);
* ``<!-- tutorial: background -->``: run it in "a second terminal" (its own process
  group, the first terminal's directory and environment), e.g. the daemon;
* ``<!-- tutorial: until output -->``: run it until its output block matches (a
  command whose output depends on timing, e.g. ``jobs list`` while a job retries);
* ``<!-- tutorial: interrupt -->``: Ctrl-C in the second terminal; it must exit 0;
* ``<!-- output -->`` before a ```text block: the previous command block's output;
* ``<!-- output: daemon -->``: lines the second terminal prints, waited for.

Output lines match whole lines of the real output, with whitespace runs and digit runs
(ids, timestamps, durations) free, ``...`` matching anything, and the README's example
home ``/home/you`` (and tutorial directory ``/home/you/tutorial``) standing for the real
ones, in paths and in URIs.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from kongtaskd.embedded import bin_dir
from tests.support import kill_process_group, wait_for

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"

#: The README's stand-in for the reader's home directory; the test's own replaces it (and
#: the tutorial's directory replaces EXAMPLE_HOME/tutorial).
EXAMPLE_HOME = "/home/you"

#: Seconds a step (or the wait for a daemon line) may take; the embedded server starts
#: in about a second, a job runs in milliseconds, a retry's back-off is 2.7 s.
STEP_TIMEOUT = 60.0

_DIRECTIVE = re.compile(r"<!--\s*(tutorial(?::\s*[a-z ]+?)?|output(?::\s*daemon)?)\s*-->")
_FENCE = re.compile(r"```(\w*)\n(.*?)```", re.DOTALL)


@dataclass
class Step:
    kind: str  # "run", "background", "until", "interrupt", "output", "daemon"
    text: str
    line: int  # where it is in README.md, for failure messages


def section(heading: str) -> tuple[str, int]:
    """The text of the README section ``## heading...`` and the line it starts on."""
    text = README.read_text()
    start = text.index(f"\n## {heading}") + 1
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else len(text)], text[:start].count("\n") + 1


def steps(heading: str) -> list[Step]:
    body, first_line = section(heading)
    kinds = {
        "tutorial": "run",
        "tutorial: background": "background",
        "tutorial: until output": "until",
        "tutorial: interrupt": "interrupt",
        "output": "output",
        "output: daemon": "daemon",
    }
    found: list[Step] = []
    for match in _DIRECTIVE.finditer(body):
        directive = " ".join(match.group(1).split())
        assert directive in kinds, f"README.md: unknown directive <!-- {directive} -->"
        kind = kinds[directive]
        line = first_line + body[: match.start()].count("\n")
        if kind == "interrupt":
            found.append(Step(kind, "", line))
            continue
        fence = _FENCE.search(body, match.end())
        assert fence is not None, f"README.md:{line}: <!-- {directive} --> without a block"
        between = body[match.end() : fence.start()]
        assert not between.strip(), f"README.md:{line}: text between directive and block"
        language = fence.group(1)
        expected = "sh" if kind in ("run", "background", "until") else "text"
        assert language == expected, f"README.md:{line}: expected a ```{expected} block"
        found.append(Step(kind, fence.group(2), line))
    return found


def line_pattern(expected: str, places: dict[str, Path]) -> re.Pattern[str]:
    """A regex for one expected output line (see the module docstring). ``places`` maps
    the README's example paths to the real ones (longest first)."""
    expected = expected.strip()
    for example in sorted(places, key=len, reverse=True):
        real = str(places[example])
        expected = expected.replace(example, real)
        expected = expected.replace(example.replace("/", "%2F"), real.replace("/", "%2F"))
    regex = ""
    for part in re.split(r"(\.\.\.|\d+|\s+)", expected):
        if part == "...":
            regex += ".*"
        elif part.isdigit():
            regex += r"\d+"
        elif part.isspace():
            regex += r"\s+"
        else:
            regex += re.escape(part)
    return re.compile(regex)


def unmatched(expected: str, output: str, places: dict[str, Path]) -> list[str]:
    """The expected lines no line of ``output`` matches (in any order)."""
    lines = [line.strip() for line in output.splitlines()]
    missing = []
    for want in expected.strip().splitlines():
        pattern = line_pattern(want, places)
        if not any(pattern.fullmatch(line) for line in lines):
            missing.append(want)
    return missing


class Terminal:
    """The first terminal: one bash for the whole section, commands fed one block at a time.

    Each block is written to a file and sourced with stdin from /dev/null, so a command
    that reads stdin cannot swallow the next block.
    """

    def __init__(self, cwd: Path, env: dict[str, str], scratch: Path) -> None:
        self.scratch = scratch
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self._send("set -e")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def _send(self, text: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def run(self, script: str, *, may_fail: bool = False, timeout: float = STEP_TIMEOUT) -> str:
        """Run ``script``; return its output (stdout and stderr). With ``may_fail`` it runs
        in a subshell, so it can neither fail the terminal nor change its state."""
        path = self.scratch / f"block-{uuid.uuid4().hex[:8]}.sh"
        path.write_text(script)
        marker = f"__done_{uuid.uuid4().hex}__"
        source = f"source {shlex.quote(str(path))} < /dev/null"
        if may_fail:
            self._send(f"if ( {source} ); then echo {marker} 0; else echo {marker} $?; fi")
        else:
            self._send(f"{source}\necho {marker} 0")
        output: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(
                    f"still running after {timeout}s:\n{script}\n--- output ---\n{''.join(output)}"
                ) from None
            if line is None:
                raise AssertionError(
                    f"a command failed (exit {self.proc.wait()}):\n{script}\n"
                    f"--- output ---\n{''.join(output)}"
                )
            if line.startswith(marker):
                self.last_status = int(line.split()[1])
                return "".join(output)
            output.append(line)

    def state(self) -> tuple[Path, dict[str, str]]:
        """The current directory and exported environment, for a second terminal."""
        env_file = self.scratch / "env"
        cwd = self.run(f"env -0 > {shlex.quote(str(env_file))}; pwd").strip().splitlines()[-1]
        pairs = env_file.read_bytes().split(b"\0")
        env = dict(item.decode().split("=", 1) for item in pairs if b"=" in item)
        return Path(cwd), env

    def close(self) -> None:
        kill_process_group(self.proc)


class Background:
    """The second terminal: one block in its own process group (so Ctrl-C reaches all of
    it, as in a terminal), output to a file."""

    def __init__(self, script: str, cwd: Path, env: dict[str, str], scratch: Path) -> None:
        self.log_path = scratch / f"background-{uuid.uuid4().hex[:8]}.log"
        path = scratch / f"background-{uuid.uuid4().hex[:8]}.sh"
        path.write_text(script)
        self.log_file = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            ["bash", "--noprofile", "--norc", "-e", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=env,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def interrupt(self) -> int:
        """Ctrl-C: SIGINT to the whole foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)
        try:
            return self.proc.wait(STEP_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"still running {STEP_TIMEOUT}s after Ctrl-C:\n{self.output()}"
            ) from None

    def close(self) -> None:
        kill_process_group(self.proc)
        self.log_file.close()


def user_environment(home: Path) -> dict[str, str]:
    """A new user's environment: this Python's scripts first on PATH, a home of their own,
    no database settings, a psql (the wheel's, as the README suggests, if none is here)."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PG", "KONGTASK_", "DATABASE_URL", "NOTIFY_SOCKET", "XDG_"))
    }
    path = [str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")]
    if shutil.which("psql", path=os.pathsep.join(path)) is None:
        path.append(str(bin_dir()))
    env["PATH"] = os.pathsep.join(path)
    env["HOME"] = str(home)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def server_stopped(data_dir: Path) -> bool:
    return not (data_dir / "postmaster.pid").exists()


def rerun_until_output(
    terminal: Terminal, command: Step, expected: Step, places: dict[str, Path]
) -> None:
    """Run ``command`` again until it exits 0 with ``expected``'s lines in its output."""
    last = ""

    def matches() -> bool:
        nonlocal last
        last = terminal.run(command.text, may_fail=True)
        return terminal.last_status == 0 and not unmatched(expected.text, last, places)

    try:
        wait_for(matches, timeout=STEP_TIMEOUT, interval=0.2, what=f"README.md:{expected.line}")
    except AssertionError:
        missing = unmatched(expected.text, last, places)
        raise AssertionError(
            f"README.md:{expected.line}: output never matched; missing {missing}\n"
            f"--- last output (exit {terminal.last_status}) ---\n{last}"
        ) from None


def wait_for_daemon(daemon: Background, expected: Step, places: dict[str, Path]) -> None:
    """Wait until the second terminal has printed every line of ``expected``."""
    try:
        wait_for(
            lambda: not unmatched(expected.text, daemon.output(), places),
            timeout=STEP_TIMEOUT,
            interval=0.1,
            what=f"README.md:{expected.line}",
        )
    except AssertionError:
        missing = unmatched(expected.text, daemon.output(), places)
        raise AssertionError(
            f"README.md:{expected.line}: the daemon never printed {missing}\n"
            f"--- daemon output ---\n{daemon.output()}"
        ) from None


def follow(steps_: list[Step], terminal: Terminal, scratch: Path, places: dict[str, Path]) -> None:
    """Run the steps in order; leave no process behind."""
    daemon: Background | None = None
    last_run: Step | None = None
    last_output = ""
    try:
        for step in steps_:
            where = f"README.md:{step.line}"
            if step.kind == "run":
                last_run, last_output = step, terminal.run(step.text)
            elif step.kind == "until":
                last_run, last_output = step, ""  # run by the output step that follows
            elif step.kind == "background":
                assert daemon is None, f"{where}: a second background block"
                cwd, env = terminal.state()
                daemon = Background(step.text, cwd, env, scratch)
            elif step.kind == "interrupt":
                assert daemon is not None, f"{where}: nothing runs in the background"
                code = daemon.interrupt()
                assert code == 0, f"{where}: exit {code} after Ctrl-C:\n{daemon.output()}"
            elif step.kind == "output":
                assert last_run is not None, f"{where}: output of no command"
                if last_run.kind == "until":
                    rerun_until_output(terminal, last_run, step, places)
                else:
                    missing = unmatched(step.text, last_output, places)
                    assert not missing, (
                        f"{where}: missing {missing}\n--- output of README.md:{last_run.line} "
                        f"---\n{last_output}"
                    )
            elif step.kind == "daemon":
                assert daemon is not None, f"{where}: nothing runs in the background"
                wait_for_daemon(daemon, step, places)
    finally:
        if daemon is not None:
            daemon.close()


def test_readme_marks_its_steps() -> None:
    """The parser sees what the README means to run (guards against a silent no-op)."""
    tutorial = steps("Tutorial")
    kinds = [step.kind for step in tutorial]
    assert kinds.count("background") == 1 and kinds[-2:] == ["interrupt", "daemon"]
    assert kinds.count("run") >= 4 and "until" in kinds
    quick = [step.kind for step in steps("Quick start")]
    assert quick.count("run") >= 2 and quick.count("daemon") >= 2


def test_the_tutorial_as_written(tmp_path: Path) -> None:
    """Every tutorial command, in a clean directory, against a fresh embedded server."""
    directory = tmp_path / "tutorial"
    directory.mkdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = user_environment(tmp_path / "home")
    terminal = Terminal(directory, env, scratch)
    try:
        started = time.monotonic()
        follow(steps("Tutorial"), terminal, scratch, {f"{EXAMPLE_HOME}/tutorial": directory})
        elapsed = time.monotonic() - started
    finally:
        terminal.close()
    data_dir = directory / "pgdata"
    assert (data_dir / "PG_VERSION").read_text().strip() == "18"
    # The daemon started the server, so its Ctrl-C stopped it.
    assert server_stopped(data_dir)
    print(f"tutorial ran in {elapsed:.1f}s")


def test_the_first_command_and_the_quick_start(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The README's run command (the example config, embedded default, no DATABASE_URL)
    runs the example jobs that the Quick start enqueues."""
    first_block = _FENCE.search(README.read_text())
    assert first_block is not None
    run_line = next(
        line for line in first_block.group(2).splitlines() if "conf/kongtask.yaml" in line
    )
    install, _, command = run_line.partition(" && ")
    assert install == "pip install '.[embedded]'", run_line
    assert command == "kongtaskd -c conf/kongtask.yaml", run_line
    # A checkout, as far as the commands need one: the config and the examples it names.
    checkout = tmp_path / "kongtaskd"
    shutil.copytree(REPO / "conf", checkout / "conf")
    shutil.copytree(REPO / "examples", checkout / "examples", ignore=_no_caches)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    # A short home: the server's socket goes in its data directory only while that path
    # fits a socket address (about 100 bytes), and the README shows it there.
    home = Path(tempfile.mkdtemp(prefix="kt-home-"))
    request.addfinalizer(lambda: shutil.rmtree(home, ignore_errors=True))
    env = user_environment(home)
    env["EXAMPLE_OUTBOX"] = str(tmp_path / "outbox")
    terminal = Terminal(checkout, env, scratch)
    quick_start = steps("Quick start")
    try:
        follow(
            [Step("background", command, 1), *quick_start, Step("interrupt", "", 0)],
            terminal,
            scratch,
            {EXAMPLE_HOME: home},
        )
    finally:
        terminal.close()
    # The embedded default: the user's state directory, started and stopped by the daemon.
    data_dir = home / ".local" / "state" / "kongtaskd" / "pgdata"
    assert (data_dir / "PG_VERSION").exists()
    wait_for(lambda: server_stopped(data_dir), timeout=10, what="the server to stop")
    outbox = sorted(path.name for path in (tmp_path / "outbox").iterdir())
    assert {"order-1.eml", "mug-thumb.pgm", "teapot-thumb.pgm"} <= set(outbox), outbox


def _no_caches(directory: str, names: list[str]) -> list[str]:
    return [name for name in names if name == "__pycache__"]


@pytest.fixture(autouse=True)
def _needs_the_wheel() -> None:
    # Fails, not skips: the README's first command promises the embedded server.
    bin_dir()
