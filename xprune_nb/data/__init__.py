"""The data layer: splits, bundles, bundled datasets, ground truth and seeded sampling.

Every source a user gives (a bundled dataset by name, ``(X, y)`` tensors, a ``Dataset``, a
``DataLoader``, a recipe's data file or factory) becomes one :class:`DataBundle` of three
:class:`Split` objects; :func:`resolve_data` does that for a study. Seeded, bounded reference
samples come from :func:`stratified_indices`.

Modules, lowest first: :mod:`.batch` (inputs that are a tensor or a mapping of tensors such
as ``input_ids``/``attention_mask``: moved, counted, sliced, joined with padding),
:mod:`.checks` (class indices and names), :mod:`.split` (``Split``, ``DataBundle``),
:mod:`.sampling` (seeded stratified indices and orders), :mod:`.stream` (a user's loader or
dataset kept as given, read through seeded bounded samples), :mod:`.tensors` (tensors, arrays
and small datasets → checked tensor splits), :mod:`.convert` (user data → bundle),
:mod:`.draw` (reference samples of any split), :mod:`.epochs` (one training epoch's
batches), :mod:`.raw` (NumPy arrays of the bundled datasets), :mod:`.sources` (their
registry and options), :mod:`.bundled` (``load``),
:mod:`.ground_truth` (``digits_boxes`` evidence boxes). Each imports only those before it.

Examples
--------
>>> from xprune_nb import data
>>> bundle = data.load("moons", n_samples=100)
>>> isinstance(bundle, data.DataBundle), len(bundle.val)
(True, 20)
"""

from .bundled import available, load
from .checks import check_classes, check_labels
from .convert import StudyData, as_split, bundle, check_samples, resolve_data
from .draw import draw
from .ground_truth import boxes
from .sampling import batches, stratified_indices
from .split import DataBundle, Split
from .stream import StreamSplit

__all__ = ["Split", "StreamSplit", "DataBundle", "StudyData", "load", "available", "as_split",
           "bundle", "resolve_data", "check_samples", "draw", "stratified_indices", "batches",
           "check_classes", "check_labels", "boxes"]
