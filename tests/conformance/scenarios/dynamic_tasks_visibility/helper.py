import digdag


def keep(value):
    digdag.env.store({"v": value})
