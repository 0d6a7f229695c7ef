"""Dynamic (input-dependent, DyFiP-style) pruning: the gated network (``net``), cutting a model
at a branch point (``split``), which channels each path keeps (``paths``), building
(``build``), training (``train``), honest measurement (``eval``), the study step (``step``) and
the trade-off sweep (``sweep``)."""
