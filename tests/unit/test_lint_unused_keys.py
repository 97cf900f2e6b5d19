"""digdag's `Parameter 'x' is not used at task +t.` warning, idiom by idiom.

Each idiom's expected keys are what real digdag 0.10.5.1 printed for it (`digdag run`, local mode;
the td family against the TD stand-in, tests/td_server.py): it warns only for operators that read
single keys (echo>, notify>, if>, wait>, s3_wait>), never for one built on its BaseOperator (sh>,
py>, the td family, http>, call>...) or for the loops, which read their whole config. The
conformance scenario `unused_key_warnings` runs the same idioms through `kudig run`/`kudig check`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from kudig.compiler import compile_workflow
from kudig.lint import unused_keys
from kudig.yamlload import load_dig_text

# (idiom, the task's YAML, the keys digdag reported, in any order)
IDIOMS: list[tuple[str, str, set[str]]] = [
    ("sh> exports every key", 'sh>: echo "$FOO"\nfoo: 1\nshel: bash\n_retyr: 3', set()),
    ("echo> with an extra key", "echo>: hi\nbar: 2", {"bar"}),
    ("echo> message: beside a command", "echo>: hi\nmessage: m", {"message"}),
    ("echo> message: with an empty command", 'echo>: ""\nmessage: m', {"message"}),
    ("echo> _env", "echo>: hi\n_env: {A: 1}", set()),
    ("echo> _export children", "echo>: hi\n_export: {k: 1, j: 2}", set()),
    ("echo> _secrets", "echo>: hi\n_secrets: {x: true}", set()),
    ("echo> _check and _error", "echo>: hi\n_check: {echo>: c}\n_error: {echo>: e}", set()),
    ("echo> _retry", "echo>: hi\n_retry: 1", {"_retry"}),
    ("echo> an unknown _key", "echo>: hi\n_custom: 1", {"_custom"}),
    ("echo> _parallel and _do", "echo>: hi\n_parallel: true\n_do: {echo>: x}", {"_parallel", "_do"}),
    ("echo> timeout", "echo>: hi\ntimeout: 10s", {"timeout"}),
    ("echo> docker", "echo>: hi\ndocker: {image: x}", {"docker"}),
    ("_type: echo with an extra key", "_type: echo\n_command: via type\nextra_t: 1", {"extra_t"}),
    ("notify> with an extra key", "notify>: hello\nextra_n: 1", {"extra_n"}),
    (
        "if> _retry and an extra key",
        "if>: true\n_do: {echo>: in}\n_retry: 1\nextra_if: 1",
        {"_retry", "extra_if"},
    ),
    ("wait> poll_interval and an extra key", "wait>: 1s\npoll_interval: 1s\nextra_wait: 1", {"extra_wait"}),
    ("fail> never succeeds, never warns", "fail>: boom\nextra_fail: 1", set()),
    ("py> arguments", "py>: tasks.f\nx: 1\nunused_py: 2", set()),
    ("loop> with an extra key", "loop>: 1\n_do: {echo>: l}\nextra_loop: 1", set()),
    ("for_each> with an extra key", "for_each>: {v: [1]}\n_do: {echo>: fe}\nextra_fe: 1", set()),
    ("call> with an extra key", "call>: child.dig\nextra_call: 1", set()),
    ("td> query file rendering ${source}", "td>: q.sql\nsource: ev\nother_t: 2", set()),
    ("td> query file without ${}", "td>: plain.sql\nsource_p: 1", set()),
    ("td> inline query", "td>:\nsource_i: 1\nquery: SELECT ${source_i}\nother_i: 2", set()),
    ("td> file and query: both", "td>: plain.sql\nquery: SELECT 2", set()),
    ("td_run> session_time", "td_run>: sq\nsession_time: 2024-01-01T00:00:00+00:00\nextra_r: 1", set()),
    ("td_wait> with an extra key", "td_wait>: plain.sql\nextra_w: 1", set()),
    ("td_ddl> with an extra key", "td_ddl>:\ncreate_tables: [t111]\nextra_ddl: 1", set()),
    ("td_wait_table> with an extra key", "td_wait_table>: t111\nrows: 0\nextra_wt: 1", set()),
    ("td_for_each> with an extra key", "td_for_each>: plain.sql\nextra_fe: 1\n_do: {echo>: x}", set()),
]


def warned(task_yaml: str) -> list[str]:
    body = "".join(f"  {line}\n" for line in task_yaml.splitlines())
    tasks = compile_workflow("wf", load_dig_text(f"+t:\n{body}", "wf.dig", Path(".")))
    out = []
    for notice in unused_keys(tasks):
        text = str(notice)
        assert text.startswith("wf.dig:1: Parameter '") and " is not used at task +wf+t." in text, text
        out.append(text.split("'")[1])
    return out


@pytest.mark.parametrize(("idiom", "task_yaml", "expected"), IDIOMS, ids=[i[0] for i in IDIOMS])
def test_warnings_are_digdags(idiom: str, task_yaml: str, expected: set[str]) -> None:
    keys = warned(task_yaml)
    assert len(keys) == len(expected), keys
    assert set(keys) == expected


def test_the_idioms_count_what_digdag_printed() -> None:
    """digdag printed 14 warnings over these 31 idioms."""
    assert sum(len(warned(task_yaml)) for _, task_yaml, _ in IDIOMS) == 14


def test_a_near_miss_gets_a_suggestion() -> None:
    tasks = compile_workflow(
        "wf", load_dig_text("+t:\n  wait>: 1s\n  poll_intervall: 1s\n", "wf.dig", Path("."))
    )
    (notice,) = unused_keys(tasks)
    assert str(notice) == (
        "wf.dig:1: Parameter 'poll_intervall' is not used at task +wf+t. (did you mean [poll_interval]?)"
    )
