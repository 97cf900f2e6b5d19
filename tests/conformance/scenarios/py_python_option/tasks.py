import sys


def report(label):
    with open("out.txt", "a") as f:
        f.write(f"{label} optimize={sys.flags.optimize}\n")
