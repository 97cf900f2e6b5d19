import os
import sys


def probe():
    print("hello from py")
    print("to stderr", file=sys.stderr)
    with open("env.txt", "w") as f:
        f.write(f"API_MODE={os.environ.get('API_MODE')} session_time_env={os.environ.get('session_time')}\n")
