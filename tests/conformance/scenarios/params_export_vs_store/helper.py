import digdag


def export_with_child():
    """digdag.env.export reaches this task's own generated children only."""
    digdag.env.export({"v": "exported"})
    digdag.env.add_subtask({"sh>": 'echo "child=${v}" >> out.txt'})


def keep(value):
    digdag.env.store({"v": value})
