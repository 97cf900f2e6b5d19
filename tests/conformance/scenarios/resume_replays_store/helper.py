import digdag


def produce(value):
    with open("produced.txt", "a") as f:
        f.write("produced\n")
    digdag.env.store({"v": value})
