"""Layer 3, shared mechanisms: what criteria, pruning, explanations and the timeline all do to
a model (masks, gates, slices, attention modules, BatchNorm recalibration, LRP rules, the
device). It imports only the core, the data layer and itself."""
