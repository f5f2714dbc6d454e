"""Safety scorers (toxicity, bias heuristic, ...) behind one Scorer interface.

Importing this package stays light: scorer modules, and the torch or detoxify
they need, load only when a scorer is created.
"""

from cai.safety.base import Scorer
from cai.safety.registry import DEFAULT_SCORER, SCORERS, create_scorer, scorer_class

__all__ = ["DEFAULT_SCORER", "SCORERS", "Scorer", "create_scorer", "scorer_class"]
