import digdag


def store():
    digdag.env.store({"blob": "ab" * (1024 * 1024)})  # 2 MiB
