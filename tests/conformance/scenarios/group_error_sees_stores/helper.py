import digdag


def keep():
    digdag.env.store({"saved": "stored_before_failure"})
