import hashlib

import digdag


def store_rows():
    # about 10 KB: larger than a pod's 4 KiB termination message
    digdag.env.store({"rows": [{"id": i, "name": "row-%d" % i} for i in range(300)]})


def store_mib():
    # 1 MiB of varied text (not one repeated character), with its digest to check it arrived whole
    text = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(16384))
    digdag.env.store({"mib": text, "mib_sha": hashlib.sha256(text.encode()).hexdigest()})


def check(mib, mib_sha):
    ok = hashlib.sha256(mib.encode()).hexdigest() == mib_sha
    print("mib length=%d intact=%s" % (len(mib), ok))
