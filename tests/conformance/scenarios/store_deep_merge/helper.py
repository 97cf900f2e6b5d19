import digdag


def first():
    digdag.env.store({"conf": {"a": 1, "nested": {"x": "first"}}, "list": [1, 2]})


def second():
    digdag.env.store({"conf": {"b": 2, "nested": {"y": "second"}}, "list": [3]})
