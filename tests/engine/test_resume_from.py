"""`retry --resume-from +task` (digdag's RetryIT, retry-1.dig): what the new attempt keeps."""

from __future__ import annotations

import pytest

from kudig.engine.core import resumable_results, resume_from
from kudig.errors import KudigError

from .driver import drive

RETRY_1 = """
+step1:
  sh>: one
+step2:
  +a:
    sh>: two-a
  +b:
    sh>: fail
+step3:
  sh>: three
"""


def test_resume_from_keeps_only_what_comes_before() -> None:
    failed = drive(RETRY_1)
    assert failed.state == "group_error"
    kept = resume_from(failed.engine.state, "+step2+a")
    assert sorted(kept) == ["+wf+step1"]
    kept = resume_from(failed.engine.state, "+step2+b")
    assert sorted(kept) == ["+wf+step1", "+wf+step2+a"]
    # the new attempt runs the named task and everything after it
    rerun = drive(
        RETRY_1.replace("sh>: fail", "sh>: fixed"), resume=resume_from(failed.engine.state, "+step2+a")
    )
    assert rerun.started == ["+wf+step2+a", "+wf+step2+b", "+wf+step3"]
    assert rerun.state == "success"


def test_resume_keeps_every_success_and_resume_from_agrees_on_the_first_failure() -> None:
    failed = drive(RETRY_1)
    assert sorted(resumable_results(failed.engine.state)) == ["+wf+step1", "+wf+step2+a"]


def test_resume_from_keeps_generated_subtasks_of_kept_tasks() -> None:
    text = "+gen:\n  loop>: 2\n  _do:\n    sh>: x\n+last:\n  sh>: fail\n"
    failed = drive(text)
    kept = resume_from(failed.engine.state, "+last")
    assert "+wf+gen" in kept and "+wf+gen^sub+loop-1" in kept
    rerun = drive(text.replace("sh>: fail", "sh>: ok"), resume=kept)
    assert rerun.started == ["+wf+last"]


def test_resume_from_must_name_exactly_one_task_and_keep_only_successes() -> None:
    failed = drive(RETRY_1)
    with pytest.raises(KudigError, match="No task matches"):
        resume_from(failed.engine.state, "+nope")
    with pytest.raises(KudigError, match="did not succeed"):
        resume_from(failed.engine.state, "+step3")  # never ran: +step2 before it failed
    twins = drive("+x:\n  +a:\n    sh>: fail\n+y:\n  +a:\n    sh>: y\n")
    with pytest.raises(KudigError, match="matches 2 tasks"):
        resume_from(twins.engine.state, "+a")
