def explode():
    raise RuntimeError("the input file is corrupt")
