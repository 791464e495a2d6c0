"""Few-shot data: Omniglot, miniImageNet and the built-in glyphs set, served as episodes."""
from meta.data.base import FewShotSplit

__all__ = ["FewShotSplit"]
