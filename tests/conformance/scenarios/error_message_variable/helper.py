def boom():
    raise ValueError("bad input from helper")
