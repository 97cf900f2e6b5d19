"""digdag's common CLI options on the local commands (issue #11): -O/--task-log, -l/--log-level,
-L/--log, -c/--config, -X KEY=VALUE, and the system config keys they share."""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from kudig.errors import ConfigError
from kudig.local.sysconfig import SystemConfig, parse_properties

REPO = Path(__file__).resolve().parents[2]


def _kudig(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("KUDIG_SECRET_", "KUDIG_CONFIG"))}
    full["KUDIG_CONFIG_DIR"] = str(cwd / "home-config")  # never the developer's own config
    full["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full.get("PYTHONPATH", "")]))
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "kudig.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=full,
    )


# ------------------------------------------------------------------ the properties format


def test_properties_format_is_javas() -> None:
    text = (
        "# a comment\n"
        "! another\n"
        "\n"
        "a=1\n"
        "b = two words \n"
        "c: 3\n"
        "d 4\n"
        "   e=indented\n"
        "f=first \\\n"
        "    second\n"
        "g=tab\\there\\nnewline\n"
        "h\\=k=escaped key\n"
        "i=\\u00e9t\\u00e9\n"
        "j=\n"
        "k\n"
        "url=http://x:1/y\n"
    )
    assert parse_properties(text) == {
        "a": "1",
        "b": "two words ",
        "c": "3",
        "d": "4",
        "e": "indented",
        "f": "first second",
        "g": "tab\there\nnewline",
        "h=k": "escaped key",
        "i": "été",
        "j": "",
        "k": "",
        "url": "http://x:1/y",
    }


def test_malformed_unicode_escape_names_the_line() -> None:
    with pytest.raises(ConfigError, match=r"^conf:2: Malformed \\uxxxx escape"):
        parse_properties("a=1\nb=\\u12\n", "conf")


def test_config_sources_in_digdags_order(tmp_path: Path) -> None:
    """default file < KUDIG_CONFIG < -X < explicit -c (digdag's Command.loadSystemProperties,
    ConfigIT.verifyPrecedenceWith{Default,Explicit}ConfigFile)."""
    (tmp_path / "config").write_text(
        "params.a=default\nparams.b=default\nparams.c=default\nparams.d=default\n"
    )
    (tmp_path / "explicit").write_text("params.c=explicit\nparams.d=explicit\n")
    env = {"KUDIG_CONFIG_DIR": str(tmp_path), "KUDIG_CONFIG": "params.b=env\nparams.c=env\nparams.d=env"}
    cfg = SystemConfig.load(None, ["params.c=x", "params.d=x"], env)
    assert cfg.params() == {"a": "default", "b": "env", "c": "x", "d": "x"}
    cfg = SystemConfig.load(str(tmp_path / "explicit"), ["params.c=x"], env)
    assert cfg.params() == {"b": "env", "c": "explicit", "d": "explicit"}  # no default file with -c


def test_dotted_params_nest_and_conflicts_are_errors() -> None:
    cfg = SystemConfig({"params.db.host": "h", "params.db.port": "5432", "params.x": "1", "other": "y"})
    assert cfg.params() == {"db": {"host": "h", "port": "5432"}, "x": "1"}
    with pytest.raises(ConfigError, match=r"Parameter 'a\.b' is set but 'a' is not an object"):
        SystemConfig({"params.a": "1", "params.a.b": "2"}).params()


# ------------------------------------------------------------------ -O / --task-log

WF = "+first:\n  sh>: echo out-of-first ${x}\n+second:\n  echo>: out-of-second\n"
TASK_LOG = re.compile(r"^\+wf\+(first|second)@[0-9a-f]{16}\.\d+@.+\.log\.gz$")


def _task_logs(root: Path) -> dict[str, str]:
    """Task name -> the text of its log file, checking digdag's layout on the way."""
    (day,) = list(root.iterdir())
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", day.name)
    (session,) = list(day.iterdir())
    assert session.name == "0.1wf@20240130T000000+0000"
    out = {}
    for f in session.iterdir():
        assert TASK_LOG.match(f.name), f.name  # gzipped at the end: no plain .log left behind
        out[f.name.split("@")[0]] = gzip.decompress(f.read_bytes()).decode()
    return out


def test_task_log_holds_each_tasks_lines(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text(WF)
    proc = _kudig(tmp_path, "run", "wf.dig", "--no-save", "-t", "2024-01-30", "-p", "x=1", "-O", "logs")
    assert proc.returncode == 0, proc.stderr
    assert "out-of-first 1" in proc.stdout  # still on the terminal
    logs = _task_logs(tmp_path / "logs")
    assert set(logs) == {"+wf+first", "+wf+second"}
    assert "[INFO] (+wf+first): sh>: echo out-of-first 1" in logs["+wf+first"]
    assert "out-of-first 1\n" in logs["+wf+first"] and "out-of-second" not in logs["+wf+first"]
    assert "out-of-second\n" in logs["+wf+second"]


def test_task_log_from_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text(WF)
    (tmp_path / "conf").write_text("log-server.type=local\nlog-server.local.path=from-config\n")
    proc = _kudig(tmp_path, "run", "wf.dig", "--no-save", "-t", "2024-01-30", "-p", "x=2", "-c", "conf")
    assert proc.returncode == 0, proc.stderr
    assert "out-of-first 2" in _task_logs(tmp_path / "from-config")["+wf+first"]
    # -O wins over the config, as in digdag's Run (it sets both keys)
    proc = _kudig(
        tmp_path, "run", "wf.dig", "--no-save", "-t", "2024-01-30", "-p", "x=3", "-c", "conf", "-O", "o"
    )
    assert proc.returncode == 0, proc.stderr
    assert "out-of-first 3" in _task_logs(tmp_path / "o")["+wf+first"]


def test_failed_task_log_has_the_error(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text("+first:\n  sh>: echo before; exit 3\n")
    proc = _kudig(tmp_path, "run", "wf.dig", "--no-save", "-t", "2024-01-30", "-O", "logs")
    assert proc.returncode == 1
    text = _task_logs(tmp_path / "logs")["+wf+first"]
    assert "before\n" in text and "[ERROR] (+wf+first): Command failed with code 3" in text


# ------------------------------------------------------------------ -l / -L


def test_log_level_error_hides_info_and_warnings_not_output(tmp_path: Path) -> None:
    # echo> reads only its command: digdag warns of `shel` (a sh> task never warns)
    (tmp_path / "wf.dig").write_text("+a:\n  sh>: echo printed\n+b:\n  echo>: also\n  shel: bash\n")
    normal = _kudig(tmp_path, "run", "wf.dig", "--no-save")
    assert "[INFO] (+wf+a)" in normal.stdout and "is not used" in normal.stderr
    quiet = _kudig(tmp_path, "run", "wf.dig", "--no-save", "-l", "error")
    assert quiet.returncode == 0, quiet.stderr
    assert "[INFO]" not in quiet.stdout and quiet.stderr == ""
    assert quiet.stdout.splitlines() == ["printed", "also", "Success."]
    warn = _kudig(tmp_path, "run", "wf.dig", "--no-save", "--log-level", "warn")
    assert "[INFO]" not in warn.stdout and "is not used" in warn.stderr


def test_log_level_error_still_reports_a_failure(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text("+a:\n  sh>: exit 2\n")
    proc = _kudig(tmp_path, "run", "wf.dig", "--no-save", "-l", "error")
    assert proc.returncode == 1
    assert "[ERROR] (+wf+a): Command failed with code 2" in proc.stdout
    assert "* +wf+a" in proc.stderr


def test_log_level_debug_shows_more(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text("+a:\n  sh>: echo printed\n")
    proc = _kudig(tmp_path, "run", "wf.dig", "--no-save", "-l", "debug", "-X", "params.k=v")
    assert proc.returncode == 0, proc.stderr
    assert "[DEBUG] (main): Read system config from -X" in proc.stdout
    assert "[DEBUG] (main):   Task[1]: +wf+a" in proc.stdout  # digdag's run: each task at the end
    assert "[INFO] (+wf+a)" in proc.stdout


def test_log_file_takes_the_log_lines(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text("+a:\n  sh>: echo printed\n+b:\n  echo>: also\n  shel: bash\n")
    proc = _kudig(tmp_path, "run", "wf.dig", "--no-save", "-L", "logs/kudig.log")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["printed", "also", "Success."] and proc.stderr == ""
    text = (tmp_path / "logs/kudig.log").read_text()
    assert "[INFO] (+wf+a): sh>: echo printed" in text and "[WARN] (main): wf.dig:3: Parameter 'shel'" in text
    _kudig(tmp_path, "run", "wf.dig", "--no-save", "--log", "logs/kudig.log")
    assert (tmp_path / "logs/kudig.log").read_text().count("sh>: echo printed") == 2  # appended


# ------------------------------------------------------------------ -c / -X: params, secrets, limits

PARAMS_WF = "+show:\n  echo>: \"a=${typeof a == 'undefined' ? 'unset' : a} b=${b} c=${c} d=${d} n=${nest.x}/${nest.y}\"\n"


def test_config_params_precedence_against_p_and_P(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text(PARAMS_WF)
    (tmp_path / "home-config").mkdir()
    (tmp_path / "home-config" / "config").write_text(
        "params.a=default\nparams.b=default\nparams.c=default\nparams.d=default\nparams.nest.x=default\n"
    )
    (tmp_path / "p.yml").write_text("c: file\nd: file\nnest:\n  y: file\n")
    proc = _kudig(tmp_path, "run", "wf.dig", "--no-save", "-X", "params.b=x", "-P", "p.yml", "-p", "d=cli")
    assert proc.returncode == 0, proc.stderr
    assert "a=default b=x c=file d=cli n=default/file" in proc.stdout
    # an explicit -c replaces the default file, and wins over -X (digdag's ConfigIT)
    (tmp_path / "explicit.properties").write_text("params.b=explicit\nparams.c=explicit\nparams.nest.x=e\n")
    proc = _kudig(
        tmp_path,
        "run",
        "wf.dig",
        "--no-save",
        "-c",
        "explicit.properties",
        "-X",
        "params.b=x",
        "-Xparams.d=x",
        "-P",
        "p.yml",
    )
    assert proc.returncode == 0, proc.stderr
    assert "a=unset b=explicit c=file d=file n=e/file" in proc.stdout


def test_x_overrides_the_config_file_and_kudig_config_env(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text(PARAMS_WF)
    (tmp_path / "home-config").mkdir()
    (tmp_path / "home-config" / "config").write_text(
        "params.a=file\nparams.b=file\nparams.c=file\nparams.d=file\n"
    )
    env = {"KUDIG_CONFIG": "params.b=env\nparams.c=env\nparams.nest.x=env\nparams.nest.y=env"}
    proc = _kudig(tmp_path, "run", "wf.dig", "--no-save", "-X", "params.c=x", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "a=file b=env c=x d=file n=env/env" in proc.stdout


def test_p_never_overrides_export_and_nor_does_the_config(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text("_export:\n  b: exported\n" + PARAMS_WF)
    proc = _kudig(
        tmp_path, "run", "wf.dig", "--no-save", "-X", "params.b=x", "-p", "c=1", "-p", "d=2", "-p", "nest.x=3"
    )
    assert "b=exported c=1 d=2 n=3/" in proc.stdout, proc.stdout


def test_check_shows_the_config_params(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text("+a:\n  echo>: ${x}\n")
    (tmp_path / "c.properties").write_text("params.x=1\nparams.y=2\n")
    proc = _kudig(tmp_path, "check", "wf.dig", "-c", "c.properties", "-p", "y=3")
    assert proc.returncode == 0, proc.stderr
    assert 'params: {"x": "1", "y": "3"}' in proc.stdout


def test_config_secrets_come_after_the_local_ones(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text('+a:\n  sh>: echo "got=$S"\n  _env:\n    S: ${secret:db.password}\n')
    proc = _kudig(tmp_path, "run", "wf.dig", "--no-save", "-X", "secrets.db.password=from-config")
    assert proc.returncode == 0, proc.stderr
    assert "got=from-config" in proc.stdout
    proc = _kudig(
        tmp_path,
        "run",
        "wf.dig",
        "--no-save",
        "-X",
        "secrets.db.password=from-config",
        env={"KUDIG_SECRET_DB__PASSWORD": "from-env"},
    )
    assert "got=from-env" in proc.stdout


def test_limits_from_the_config_and_flags_win(tmp_path: Path) -> None:
    (tmp_path / "wf.dig").write_text("+l:\n  loop>: 3\n  _do:\n    echo>: i=${i}\n")
    proc = _kudig(tmp_path, "run", "wf.dig", "--no-save", "-X", "executor.task_max_run=3")
    assert proc.returncode == 1 and "Too many tasks. Limit: 3" in proc.stdout + proc.stderr
    proc = _kudig(
        tmp_path, "run", "wf.dig", "--no-save", "-X", "executor.task_max_run=3", "--max-tasks", "10"
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    proc = _kudig(tmp_path, "run", "wf.dig", "--no-save", "-X", "agent.max-task-threads=1")
    assert proc.returncode == 0, proc.stderr


# ------------------------------------------------------------------ bad input: one line


ALL, RUN_SCHED, RUN_CHECK = ("run", "check", "scheduler"), ("run", "scheduler"), ("run", "check")
BAD = [
    (ALL, ["-l", "loud"], r"^error: Unknown log level 'loud': expected error, warn, info, debug or trace$"),
    (ALL, ["-X", "novalue"], r"^error: Invalid -X 'novalue': expected KEY=VALUE"),
    (ALL, ["-X", "=v"], r"^error: Invalid -X '=v': expected KEY=VALUE"),
    (ALL, ["-c", "missing.properties"], r"^error: Config file not found: missing\.properties"),
    (ALL, ["-c", "."], r"^error: Config file \. is a directory"),
    (ALL, ["-c", "bad.properties"], r"^error: bad\.properties:2: Malformed \\uxxxx escape"),
    (
        ALL,
        ["-X", "params.a=1", "-X", "params.a.b=2"],
        r"^error: Parameter 'a\.b' is set but 'a' is not an object$",
    ),
    (ALL, ["-L", "afile/x.log"], r"^error: Cannot write the log file afile/x\.log: Not a directory$"),
    (
        RUN_SCHED,
        ["-X", "agent.max-task-threads=many"],
        r"^error: Config agent\.max-task-threads: expected an integer",
    ),
    (
        RUN_SCHED,
        ["-X", "agent.max-task-threads=-1"],
        r"^error: Config agent\.max-task-threads: expected 0 or more",
    ),
    (RUN_SCHED, ["-X", "log-server.type=s3"], r"^error: Config log-server\.type: expected local or null"),
    (RUN_SCHED, ["-X", "secrets.bad key=1"], r"^error: Invalid secret key 'bad key'"),
    (RUN_SCHED, ["-O", "afile"], r"^error: Cannot write task logs in afile: Not a directory$"),
    (
        RUN_CHECK,
        ["-X", "executor.task_max_run=0"],
        r"^error: Config executor\.task_max_run: expected 1 or more",
    ),
    (RUN_CHECK, ["--max-tasks", "0"], r"^error: --max-tasks must be 1 or more, got 0$"),
]


@pytest.mark.parametrize(
    ("command", "args", "pattern"),
    [(command, args, pattern) for commands, args, pattern in BAD for command in commands],
)
def test_bad_values_give_one_line(tmp_path: Path, command: str, args: list[str], pattern: str) -> None:
    (tmp_path / "wf.dig").write_text("+a:\n  echo>: x\n")
    (tmp_path / "bad.properties").write_text("a=1\nb=\\uZZZZ\n")
    (tmp_path / "afile").write_text("")
    argv = {"run": ["run", "wf.dig", "--no-save"], "check": ["check", "wf.dig"], "scheduler": ["scheduler"]}[
        command
    ]
    proc = _kudig(tmp_path, *argv, *args)
    assert proc.returncode == 1, proc
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert re.search(pattern, lines[0]), lines[0]


# ------------------------------------------------------------------ the scheduler


def test_scheduler_sessions_honour_log_level_and_task_logs(tmp_path: Path) -> None:
    import io
    from datetime import UTC, datetime

    from kudig.local.console import Console
    from kudig.local.scheduler import LocalScheduler, ScheduledSession
    from kudig.workflow import load_workflow_text

    wf = load_workflow_text(
        "wf", "timezone: UTC\nschedule:\n  daily>: 07:00:00\n+a:\n  sh>: echo scheduled-output\n", tmp_path
    )
    out = io.StringIO()
    sched = LocalScheduler(
        [wf], status_dir=None, console=Console("error", out=out), task_log_root=tmp_path / "logs", out=out
    )
    t = datetime(2024, 1, 30, tzinfo=UTC)
    assert sched.run_local(ScheduledSession(wf, t, t, None, 1))
    sched.log("INFO", "hidden at -l error")
    assert out.getvalue() == "scheduled-output\n"
    (f,) = (tmp_path / "logs").glob("*/0.1wf@20240130T000000+0000/+wf+a@*.log.gz")
    assert gzip.decompress(f.read_bytes()).decode() == "scheduled-output\n"  # INFO lines filtered out too
