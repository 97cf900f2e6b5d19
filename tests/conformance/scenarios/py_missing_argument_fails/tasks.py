def needs(required_value):
    open("ran.txt", "w").write(required_value)
