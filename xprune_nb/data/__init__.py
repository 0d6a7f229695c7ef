"""The data layer: splits, bundles, bundled datasets, ground truth and seeded sampling.

Every source a user gives (a bundled dataset by name, ``(X, y)`` tensors, a ``Dataset``, a
``DataLoader``, a recipe's data file or factory) becomes one :class:`DataBundle` of three
:class:`Split` objects; :func:`resolve_data` does that for a study. Seeded, bounded reference
samples come from :func:`stratified_indices`.

Modules, lowest first: :mod:`.checks` (class indices and names), :mod:`.split` (``Split``,
``DataBundle``), :mod:`.sampling`, :mod:`.convert` (user data → bundle), :mod:`.raw` (NumPy
arrays of the bundled datasets), :mod:`.sources` (their registry and options), :mod:`.bundled`
(``load``), :mod:`.ground_truth` (``digits_boxes`` evidence boxes). Each imports only those
before it. :mod:`.batch` (lowest of all) moves, counts, slices and joins inputs that are a tensor
or a mapping of tensors (``input_ids``, ``attention_mask``... padded per batch).

Examples
--------
>>> from xprune_nb import data
>>> bundle = data.load("moons", n_samples=100)
>>> isinstance(bundle, data.DataBundle), len(bundle.val)
(True, 20)
"""

from .bundled import available, load
from .checks import check_classes, check_labels
from .convert import StudyData, as_split, bundle, resolve_data
from .ground_truth import boxes
from .sampling import batches, stratified_indices
from .split import DataBundle, Split

__all__ = ["Split", "DataBundle", "StudyData", "load", "available", "as_split", "bundle",
           "resolve_data", "stratified_indices", "batches", "check_classes", "check_labels",
           "boxes"]
