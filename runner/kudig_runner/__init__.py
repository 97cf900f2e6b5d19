"""kudig's task runner: runs one work task (sh>, py>, ...) in a pod or as a local subprocess.

Standard library only (copied into users' images). Entry point: `python -m kudig_runner`
(see __main__.py); protocol in protocol.py; operators registered in dispatch.OPERATORS.
"""
