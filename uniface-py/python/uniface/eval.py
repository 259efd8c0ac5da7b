"""The protocols behind ``docs/ACCURACY.md`` as library calls, so that a notebook reproduces
our figures (and measures its own data) the way ``uniface eval`` does.

* :func:`lfw` — the LFW View 2 10-fold protocol end to end (f32, f16 and i8 templates);
* :func:`describe_folder` — one descriptor per photo of a folder of identities, for
  :func:`uniface.calibrate`;
* :func:`k_fold`, :func:`tar_at_far`, :func:`eer` — the metrics on your own pair distances.
"""

from ._uniface import KFold, LfwReport
from ._uniface import describe_folder as describe_folder
from ._uniface import eer as eer
from ._uniface import k_fold as k_fold
from ._uniface import lfw as lfw
from ._uniface import tar_at_far as tar_at_far

__all__ = ["KFold", "LfwReport", "describe_folder", "eer", "k_fold", "lfw", "tar_at_far"]
