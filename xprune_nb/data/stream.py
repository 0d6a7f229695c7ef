"""A split kept as the user gave it (``Dataset``, ``DataLoader``, iterable), never copied whole.

:class:`StreamSplit` reads only what a study needs: seeded, bounded samples for measurement,
scoring and explanations, and the user's own loader for retraining (their transforms,
augmentation and sampler apply).

Sampling rule (see DESIGN.md): ``sample(n)`` gives ``n`` examples, deterministic under the seed.

* A dataset with ``__len__`` (map-style, or the dataset of a ``DataLoader``): seeded indices are
  drawn and only those items are read (``dataset[i]``, joined with the loader's own
  ``collate_fn``). When the labels are known without reading items (a ``targets`` or
  ``labels`` attribute, as torchvision's and many users' datasets have), the order is
  stratified by class; otherwise it is a seeded permutation. Every label is never read to
  stratify.
* An iterable without a length (``IterableDataset``, a ``DataLoader`` over one, an endless
  stream): items pass through a seeded shuffle buffer of :data:`SHUFFLE_BUFFER` items, and at
  most ``n + SHUFFLE_BUFFER`` items are read, so an endless stream is never consumed forever.
  Its bounded sample (``limit`` rows) is read once and kept, as re-reading means refilling
  the buffer; a map-style dataset's sample is read batch by batch when evaluated, and kept only
  once :attr:`X` is asked for.

Samples are prefixes of one seeded order, so ``sample(8)`` is the first 8 rows of
``sample(100)``: the probe, the reference set and the evaluation sample agree, and ``.X`` /
``.y`` (the split's bounded sample of ``limit`` rows, read on first use) serve every consumer
that wants tensors.

Examples
--------
>>> import torch
>>> from torch.utils.data import TensorDataset
>>> ds = TensorDataset(torch.randn(1000, 3), torch.randint(0, 4, (1000,)))
>>> split = StreamSplit(ds, limit=100, seed=0)
>>> len(split), split.size, split.X.shape
(100, 1000, torch.Size([100, 3]))
>>> torch.equal(split.sample(10)[0], split.X[:10])
True
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.data._utils.collate import default_collate

from ..core.errors import ConfigError, DataError
from .batch import concat, take
from .sampling import stratified_order
from .stream_items import is_stream, join_groups, known_labels, split_batch

__all__ = ["StreamSplit", "SHUFFLE_BUFFER", "is_stream", "known_labels"]

#: items held by the shuffle buffer that samples an iterable without a length
SHUFFLE_BUFFER = 256
#: items read at a time when sampling a map-style dataset
_CHUNK = 64
#: with ``classes=`` and no known labels, at most this many times ``n`` items are read
_FILTER_READS = 20


class StreamSplit:
    """One split of a study read from the user's own source; see the module docstring.

    Parameters
    ----------
    source : DataLoader, Dataset or iterable
        Kept as given (never copied). Items or batches are ``(input, label)`` pairs,
        ``(input, label, group)`` triples (the group of every drawn item is read with it,
        docs/groups.md), or mappings with a ``labels`` entry (token models: ``input_ids``,
        ``attention_mask``...).
    limit : int or None
        Rows of the bounded sample :attr:`X` / :attr:`y`; ``None`` reads the whole source
        there (refused for a source without a length).
    seed : int
        Seeds the order in which items are sampled.
    name, call : str
        For error messages (``Study(test=...)``).
    """

    index = None   # positions in an unsplit dataset: not known for a user's source

    def __init__(self, source, *, limit: int | None, seed: int = 0, name: str = "data",
                 call: str = "Study") -> None:
        if hasattr(source, "__next__"):
            raise ConfigError.bad_value(call, name, "a DataLoader, a Dataset or another "
                                        "re-iterable source (a generator or iterator can be "
                                        "read only once)", source)
        self.source, self.name, self.call = source, name, call
        self.user_loader = source if isinstance(source, DataLoader) else None
        self.dataset = source.dataset if self.user_loader is not None else source
        self.map_style = (not isinstance(self.dataset, IterableDataset)
                          and hasattr(self.dataset, "__getitem__")
                          and hasattr(self.dataset, "__len__"))
        self.size: int | None = len(self.dataset) if self.map_style else _length(self.dataset)
        if limit is None and self.size is None:
            raise ConfigError.bad_value(call, name, "data with a length when every example is "
                                        "asked for ('all' samples); this source has no "
                                        "__len__: give eval_samples= / score_samples= a number",
                                        source)
        self.limit = limit if limit is None or self.size is None else min(limit, self.size)
        if self.size == 0:
            raise DataError(f"{call}({name}=...): the data is empty; give at least one example.")
        self.seed = int(seed)
        self._view: tuple | None = None
        self._labels: torch.Tensor | None = None
        self._order: torch.Tensor | None = None
        self._first: tuple | None = None   # (index, item) looked at by first_item()
        self._raw_groups: list | None = None  # third entries of the sample's (x, y, g) items
        #: int64 group codes of the bounded sample (set by the study, docs/groups.md) and, when
        #: given as ``Study(groups=...)``, the codes of every item of the dataset
        self.groups: torch.Tensor | None = None
        self.given_groups: torch.Tensor | None = None

    # ------------------------------------------------------------------ reading
    def _collate(self, items: list):
        collate = (self.user_loader.collate_fn if self.user_loader is not None
                   else default_collate)
        try:
            batch = collate(items)
        except (RuntimeError, TypeError) as exc:   # items of different structures or shapes
            raise DataError(f"{self.call}({self.name}=...): items could not be joined into a "
                            f"batch ({exc}); every item must have the same structure, e.g. all "
                            "(x, y) or all (x, y, g), with inputs of one shape.") from exc
        return split_batch(batch, self.call, self.name, with_groups=True)

    def order(self, seed: int | None = None) -> torch.Tensor:
        """The seeded order in which a map-style dataset's items are sampled (stratified by
        class when its labels are known); ``seed`` defaults to the split's own."""
        seed = self.seed if seed is None else int(seed)
        if seed == self.seed and self._order is not None:
            return self._order
        gen = torch.Generator().manual_seed(seed)
        labels = known_labels(self.dataset)
        order = (torch.randperm(self.size, generator=gen) if labels is None
                 else stratified_order(labels, generator=gen))
        if seed == self.seed:
            self._order = order
        return order

    def first_item(self):
        """The raw item (``dataset[i]``, before collation) that a map-style sample reads
        first; kept, so the sample does not read it again (None for an iterable source)."""
        if not self.map_style:
            return None
        if self._first is None:
            index = int(self.order()[0])
            self._first = (index, self._read_item(index))
        return self._first[1]

    def _item(self, i: int):
        if self._first is not None and self._first[0] == i:
            item, self._first = self._first[1], None   # read once, as if never peeked at
            return item
        return self._read_item(i)

    def _read_item(self, i: int):
        """``dataset[i]``, with a failure inside the user's ``__getitem__`` reported as the
        package's error naming the split and the item (a raw IndexError from deep inside a
        user's dataset says neither which split nor which item)."""
        try:
            return self.dataset[i]
        except Exception as exc:   # noqa: BLE001 - any error of the user's code, re-raised
            raise DataError(
                f"{self.call}({self.name}=...): reading item {i} of the dataset raised "
                f"{type(exc).__name__}: {exc}. Check the dataset's __getitem__ (and __len__, "
                f"which says {self.size} items).") from exc

    def read(self, indices: Sequence[int]):
        """``(inputs, labels, groups)`` of the given items of a map-style dataset, read one by
        one (``dataset[i]``) and joined with the loader's ``collate_fn``; ``groups`` are the
        third entries of ``(x, y, g)`` items (a list), or None."""
        parts = [self._collate([self._item(int(i)) for i in indices[s:s + _CHUNK]])
                 for s in range(0, len(indices), _CHUNK)]
        if not parts:
            raise DataError(f"{self.call}({self.name}=...): no example to read.")
        return self._join(parts)

    def _join(self, parts: list) -> tuple:
        return (concat([p[0] for p in parts]), torch.cat([p[1] for p in parts]),
                join_groups([p[2] for p in parts], self.call, self.name))

    def _rows(self) -> Iterator[tuple]:
        """Rows ``(x with a batch dimension of 1, y, [g] or None)`` of an iterable source."""
        for batch in self.source:
            if self.user_loader is None:
                batch = default_collate([batch])   # an item of a plain iterable
            x, y, g = split_batch(batch, self.call, self.name, with_groups=True)
            for r in range(len(y)):
                yield take(x, slice(r, r + 1)), y[r:r + 1], None if g is None else g[r:r + 1]

    def _buffered(self, n: int, keep, seed: int) -> Iterator[tuple]:
        """``n`` rows through a seeded shuffle buffer (at most ``n + SHUFFLE_BUFFER`` read,
        times 20 at most when ``keep`` filters by class)."""
        gen = torch.Generator().manual_seed(seed)
        rows = self._rows()
        buffer = list(itertools.islice(rows, SHUFFLE_BUFFER))
        given = 0
        reads = len(buffer)
        while buffer and given < n and reads <= (n + SHUFFLE_BUFFER) * _FILTER_READS:
            pick = int(torch.randint(len(buffer), (1,), generator=gen))
            row = buffer[pick]
            nxt = next(rows, None)
            if nxt is None:
                buffer.pop(pick)
            else:
                buffer[pick] = nxt
                reads += 1
            if keep(row[1]):
                given += 1
                yield row

    def _chunks(self, n: int | None, classes, seed: int, chunk: int = _CHUNK
                ) -> Iterator[tuple]:
        """``(inputs, labels, groups)`` chunks of the first ``n`` examples (``None``: all) of the
        seeded order, only of ``classes`` when given; items are read as the chunks are asked
        for, so a caller that goes batch by batch never holds the whole sample."""
        wanted = None if classes is None else torch.tensor(list(classes))
        if not self.map_style:
            keep = (lambda y: True) if wanted is None else (
                lambda y: bool(torch.isin(y, wanted).all()))
            rows = []
            for row in self._buffered(n, keep, seed):
                rows.append(row)
                if len(rows) == chunk:
                    yield self._join(rows)
                    rows = []
            if rows:
                yield self._join(rows)
            return
        order = self.order(seed)
        labels = known_labels(self.dataset)
        if wanted is not None and labels is not None:
            order = order[torch.isin(labels[order], wanted)]
        if wanted is None or labels is not None:
            idx = order if n is None else order[:n]
            for s in range(0, len(idx), chunk):
                yield self.read(idx[s:s + chunk].tolist())
            return
        # labels unknown: read in the seeded order, keep those of ``classes``, bounded reads
        found, start = 0, 0
        cap = min(self.size, max(n or self.size, 1) * _FILTER_READS)
        while (n is None or found < n) and start < cap:
            x, y, g = self.read(order[start:start + chunk].tolist())
            sel = torch.nonzero(torch.isin(y, wanted)).flatten()
            if n is not None:
                sel = sel[:n - found]
            if len(sel):
                found += len(sel)
                yield take(x, sel), y[sel], None if g is None else [g[i] for i in sel.tolist()]
            start += chunk

    # ------------------------------------------------------------------ samples
    def sample(self, n: int | None, classes: Sequence[int] | None = None,
               seed: int | None = None):
        """``(inputs, labels)`` of ``n`` examples (``None``: all), the first ``n`` of the seeded
        order; with ``classes``, only examples of those classes. ``seed`` defaults to the
        split's own (whose sample is cached as :attr:`X` / :attr:`y`)."""
        seed = self.seed if seed is None else int(seed)
        if n is None and self.size is None:
            raise ConfigError.bad_value(self.call, "samples", "a number of samples (this data "
                                        "has no length)", n)
        own = classes is None and seed == self.seed and n is not None
        if own and not self.map_style and self.limit is not None and n <= self.limit:
            self._sampled()   # an iterable is read through its buffer once, then kept
        if own and self._view is not None and n <= len(self._view[1]):
            x, y = self._view
            return take(x, slice(0, n)), y[:n]
        return self._read(n, classes, seed)[:2]

    def _read(self, n: int | None, classes, seed: int):
        parts = list(self._chunks(n, classes, seed))
        if not parts:
            raise ConfigError.bad_value(self.call, "classes" if classes is not None else
                                        self.name, "data with examples" + (
                                            " of those classes among the first items read"
                                            if classes is not None else ""),
                                        list(classes) if classes is not None else self.source)
        return self._join(parts)

    def _sampled(self) -> tuple:
        if self._view is None:
            x, self._labels, self._raw_groups = self._read(self.limit, None, self.seed)
            self._view = (x, self._labels)
        return self._view

    @property
    def X(self):
        """Inputs of the split's bounded sample (``limit`` rows, read and kept on first use)."""
        return self._sampled()[0]

    @property
    def y(self) -> torch.Tensor:
        """Labels of the split's bounded sample (``limit`` rows; only the labels are kept)."""
        if self._labels is None and not self.map_style:
            self._sampled()   # an iterable's sample is read once, and kept
        elif self._labels is None:
            parts = list(self._chunks(self.limit, None, self.seed))
            self._raw_groups = join_groups([p[2] for p in parts], self.call, self.name)
            self._labels = torch.cat([p[1] for p in parts])
        return self._labels

    def raw_groups(self) -> list | None:
        """The third entries of the bounded sample's ``(x, y, g)`` items, in sample order (read
        with the labels: only the drawn items), or None for ``(x, y)`` items."""
        _ = self.y
        return self._raw_groups

    def __len__(self) -> int:
        known = self._labels if self._labels is not None else None
        return int(len(known)) if known is not None else int(
            self.limit if self.limit is not None else self.size)

    def iter_batches(self, batch_size: int) -> Iterator[tuple]:
        """``(inputs, labels)`` batches of the bounded sample (every example with no bound),
        in order, read batch by batch unless the sample is already held: evaluating a large
        split costs one batch of memory."""
        if self._view is not None:
            x, y = self._view
            for s in range(0, len(y), batch_size):
                yield take(x, slice(s, s + batch_size)), y[s:s + batch_size]
            return
        for x, y, _ in self._chunks(self.limit, None, self.seed, chunk=batch_size):
            yield x, y

    def class_counts(self, num_classes: int | None = None) -> list[int]:
        """Examples per class in the bounded sample."""
        return torch.bincount(self.y, minlength=num_classes or 0).tolist()

    # ------------------------------------------------------------------ training
    def train_loader(self, batch_size: int, generator: torch.Generator) -> DataLoader:
        """The loader retraining iterates: the user's own ``DataLoader`` as given, or a
        ``DataLoader`` over their ``Dataset`` (seeded shuffling for a map-style one); either
        way their transforms and augmentation apply to every batch."""
        if self.user_loader is not None:
            return self.user_loader
        if self.map_style:
            return DataLoader(self.dataset, batch_size=batch_size, shuffle=True,
                              generator=generator)
        return DataLoader(self.dataset, batch_size=batch_size)

    def loader(self, batch_size: int = 64, shuffle: bool = False, seed: int = 0
               ) -> DataLoader:
        """A DataLoader over this split, as :meth:`Split.loader` gives: the user's own loader as
        given, or one over their dataset (seeded shuffling)."""
        if self.user_loader is not None:
            return self.user_loader
        return DataLoader(self.dataset, batch_size=batch_size, shuffle=shuffle and self.map_style,
                          generator=torch.Generator().manual_seed(seed))

    def describe(self) -> dict:
        """What this split was (not a copy of it): for study files and error messages."""
        what = type(self.source).__name__
        if self.user_loader is not None:
            what += f" over {type(self.dataset).__name__}"
        return {"type": what, "size": self.size, "limit": self.limit}

    def __repr__(self) -> str:
        d = self.describe()
        return (f"StreamSplit({d['type']}, size={d['size'] if d['size'] is not None else '?'}"
                f", sample={d['limit'] if d['limit'] is not None else 'all'})")


def _length(source) -> int | None:
    try:
        return int(len(source))
    except TypeError:
        return None
