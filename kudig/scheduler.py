"""The scheduler's decisions, pure: which sessions of a scheduled workflow are due, with time as an input.

digdag's `ScheduleExecutor` keeps, per workflow, the next slot (session time and run time) and the
last session time it fired. Each tick it fires every slot whose run time has come — after downtime,
every missed slot one after another — unless `skip_delayed_by` says the slot is too late or
`skip_on_overtime` finds an attempt of the workflow still running; either way the pointer moves on.
`plan_schedule` is that tick: state, schedule and `now` in; sessions to start, slots skipped, the new
state and when to wake up out. The controller (one Workflow status per schedule, the Session name as
the lock) and `kudig scheduler` (this machine) both call it, so they fire the same sessions.

State changes that are the user's, not the clock's:
* a new or changed `schedule:` starts from the first slot whose run time is at or after `now` (no
  catch-up of slots from before the schedule existed);
* `from_time` (set by `enable` and `reschedule --skip-to`, digdag's `skipSchedule`/`nextTime`)
  restarts from the first slot at or after it: `enable` does not flood with everything missed
  while disabled unless asked;
* `suspended` fires nothing and keeps the pointer where it is (so `enable --catch-up` can run
  the missed slots, as digdag's enable does).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from kudig.schedule import Schedule, ScheduleTime

#: At most this many sessions per tick: a catch-up after a long downtime proceeds in bounded steps.
MAX_FIRED_PER_TICK = 100


@dataclass(frozen=True)
class ScheduleState:
    """What the scheduler remembers of one workflow's schedule between ticks."""

    schedule_key: str = ""  # the schedule's definition as text: a change restarts the pointer
    next_session_time: datetime | None = None
    next_run_time: datetime | None = None
    last_session_time: datetime | None = None  # the last slot fired (digdag's last_session_time)
    from_time: str = ""  # the last `from_time` applied


@dataclass(frozen=True)
class Fire:
    """Start a session: `last_executed` is its `last_executed_session_time`."""

    session_time: datetime
    run_time: datetime
    last_executed: datetime | None


@dataclass(frozen=True)
class Skip:
    session_time: datetime
    run_time: datetime
    reason: str  # "delayed" or "overtime"


@dataclass
class ScheduleDecision:
    state: ScheduleState
    fire: list[Fire] = field(default_factory=list)
    skipped: list[Skip] = field(default_factory=list)
    wakeup: datetime | None = None  # the next run time (None: the schedule has ended)


def plan_schedule(
    schedule: Schedule,
    state: ScheduleState,
    now: datetime,
    *,
    schedule_key: str,
    from_time: datetime | None = None,
    from_key: str = "",
    suspended: bool = False,
    active_attempt: bool = False,
) -> ScheduleDecision:
    """One tick of the scheduler for one workflow (see the module docstring)."""
    if state.schedule_key != schedule_key or state.next_run_time is None or state.next_session_time is None:
        first = schedule.first_schedule_time(now)
        state = replace(
            state,
            schedule_key=schedule_key,
            next_session_time=first.session_time,
            next_run_time=first.run_time,
        )
    if from_key and from_key != state.from_time:
        start = schedule.first_schedule_time(from_time if from_time is not None else now)
        state = replace(
            state, from_time=from_key, next_session_time=start.session_time, next_run_time=start.run_time
        )
    decision = ScheduleDecision(state)
    if suspended:
        decision.wakeup = None
        return decision
    slot = ScheduleTime(session_time=state.next_session_time, run_time=state.next_run_time)  # type: ignore[arg-type]
    last = state.last_session_time
    while not slot.finished and slot.run_time <= now and len(decision.fire) < MAX_FIRED_PER_TICK:
        if schedule.should_skip_delayed(now, slot.run_time):
            decision.skipped.append(Skip(slot.session_time, slot.run_time, "delayed"))
        elif schedule.skip_on_overtime and (active_attempt or decision.fire):
            # digdag: an attempt of this workflow is still running when the slot fires
            decision.skipped.append(Skip(slot.session_time, slot.run_time, "overtime"))
        else:
            decision.fire.append(Fire(slot.session_time, slot.run_time, last))
            last = slot.session_time
        slot = schedule.next_schedule_time(slot.session_time)
    decision.state = replace(
        state, next_session_time=slot.session_time, next_run_time=slot.run_time, last_session_time=last
    )
    decision.wakeup = None if slot.finished else (now if slot.run_time <= now else slot.run_time)
    return decision
