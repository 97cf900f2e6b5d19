import digdag


def fan_out():
    """Generated subtasks run one after another unless the py> task makes them parallel."""
    digdag.env.subtask_config["_parallel"] = True
    digdag.env.add_subtask({"sh>": "touch a.started && sh wait_for.sh b.started"})
    digdag.env.add_subtask({"sh>": "touch b.started && sh wait_for.sh a.started"})
