"""The MASN network (Seo et al., ACL 2021): modules, task heads, losses and official-weight import.

Depends on nothing else in this project (extract/, pipeline/ and weights/ build on it).
"""

from masn.model.config import MASNConfig
from masn.model.masn import MASN, MASNOutput, VideoFeatures

__all__ = ["MASN", "MASNConfig", "MASNOutput", "VideoFeatures"]
