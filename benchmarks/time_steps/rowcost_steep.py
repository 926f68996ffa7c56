"""The rowcost kernel with rows whose cost grows as the square of the row index (about the
same total work as rowcost's linear rows): a static split into halves leaves one worker 7/8
of the work, so no schedule can beat static by more than 1.75x on 2 workers (1.5x on the
linear rows), room for #26's "dynamic >= 1.6x static on sorted rows"."""
from __future__ import annotations

from time_steps import rowcost

NAME = "rowcost_steep"
SIZES = {k: dict(v, steep=True) for k, v in rowcost.SIZES.items()}
init = rowcost.init
OUTPUTS, VARIANTS, CHECK = rowcost.OUTPUTS, rowcost.VARIANTS, rowcost.CHECK
SC_CODE, NUMBA_CODE, NOTES = rowcost.SC_CODE, rowcost.NUMBA_CODE, rowcost.NOTES
CODE_MODULE = rowcost  # the functions (for the line counts) live there
