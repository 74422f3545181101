"""Infrastructure shared by heads, parity and convert (no model or firmware knowledge).

Errors and exit codes, the one-line CLI behaviour, console entry points,
thread limits, tool versions and file hashing. The bottom of the dependency
order: it imports none of the three packages.
"""
