"""`python -m kudig_operator` runs the controller."""

from kudig_operator.main import run

run()
