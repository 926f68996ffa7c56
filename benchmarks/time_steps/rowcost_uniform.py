"""The rowcost kernel with every row of the same length (the same total work as rowcost's
sorted rows): the dynamic schedule must not lose to static here."""
from __future__ import annotations

from time_steps import rowcost

NAME = "rowcost_uniform"
SIZES = {k: dict(v, uniform=True) for k, v in rowcost.SIZES.items()}
init = rowcost.init
OUTPUTS, VARIANTS, CHECK = rowcost.OUTPUTS, rowcost.VARIANTS, rowcost.CHECK
SC_CODE, NUMBA_CODE, NOTES = rowcost.SC_CODE, rowcost.NUMBA_CODE, rowcost.NOTES
CODE_MODULE = rowcost  # the functions (for the line counts) live there
