import digdag


def load(count):
    digdag.env.store({"loaded_rows": int(count)})
