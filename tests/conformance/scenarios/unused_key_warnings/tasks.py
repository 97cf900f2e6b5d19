def f(x):
    print("f", x)


def g():
    print("g")
