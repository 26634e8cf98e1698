"""``python -m clipforge.cli ...`` (used by ``torchrun -m clipforge.cli train ...``)."""

from . import main

main()
