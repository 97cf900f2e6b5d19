import digdag


def keep(value):
    """Store `value` as `v` for the tasks that come after this one."""
    digdag.env.store({"v": value})
