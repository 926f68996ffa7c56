"""The rowcost kernel with every row of the same length (the same total work as rowcost's
sorted rows): the dynamic schedule must not lose to static here."""
from __future__ import annotations

from time_steps.rowcost import (CHECK, NUMBA_CODE, OUTPUTS, SC_CODE, VARIANTS,  # noqa: F401
                                init, nb_rowcost, np_rowcost, run_numba, sc_dynamic, sc_rows,
                                sc_static)
from time_steps import rowcost

NAME = "rowcost_uniform"
SIZES = {k: dict(v, uniform=True) for k, v in rowcost.SIZES.items()}
NOTES = rowcost.NOTES
CODE_MODULE = rowcost  # the functions (for the line counts) live there
