"""Layer 1, the core: the records and rules every other layer uses.

Errors (``errors``), the one table of parameter constraints (``params``), the progress/stop
protocol (``progress``), a study's history of steps (``history``), unit scores (``scores``),
files written atomically and read within limits (``atomic``, ``limits``, ``reading``), the
package version (``version``) and the map of moved module paths (``moved``). Nothing here
imports any other part of the package.
"""
