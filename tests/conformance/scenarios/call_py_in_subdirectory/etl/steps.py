import os

import digdag


def extract(source):
    with open("extracted.txt", "w") as f:
        f.write(f"{source} in {os.path.basename(os.getcwd())}\n")
    digdag.env.store({"rows": 3})
