"""``benchmark.leaderboard``: the names of :mod:`benchmark.boards`, where the leaderboards are made."""

from .boards import *  # noqa: F401,F403
from .boards import __all__  # noqa: F401
