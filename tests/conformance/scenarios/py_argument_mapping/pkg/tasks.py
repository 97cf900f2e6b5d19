"""py> entry points that receive params by argument name."""


def _write(line):
    with open("py_out.txt", "a") as f:
        f.write(line + "\n")


def positional(a, b="default_b"):
    _write(f"positional a={a} b={b}")


def keywords(a, **kwargs):
    _write(
        "keywords a={} b={} has_session_time={} has_a_in_kwargs={}".format(
            a, kwargs.get("b"), "session_time" in kwargs, "a" in kwargs
        )
    )


def typed(count, flag, items):
    _write(f"typed {type(count).__name__}={count} {type(flag).__name__}={flag} {type(items).__name__}={items}")


class Greeter:
    def __init__(self, greeting):
        self.greeting = greeting

    def hello(self, name):
        _write(f"method {self.greeting} {name}")

    def run(self):
        _write(f"class run {self.greeting}")
