"""Imported by the worker processes of the tuning tests: every trial's fit (``_tuning_handlers._fit``,
which the refit does not use) first sleeps SLOW_TRIAL_SECONDS, so a test can kill a worker while
its trial runs. training.fit itself is untouched."""

from __future__ import annotations

import os
import time
from typing import Any

from pgmlops import training
from pgmlops.tuning import _handlers as _tuning_handlers

SLOW_TRIAL_SECONDS = float(os.environ.get("PGMLOPS_TEST_SLOW_TRIAL_SECONDS", "2"))


def _slow_fit(*args: Any, **kwargs: Any) -> training.FitResult:
    time.sleep(SLOW_TRIAL_SECONDS)
    return training.fit(*args, **kwargs)


_tuning_handlers._fit = _slow_fit
