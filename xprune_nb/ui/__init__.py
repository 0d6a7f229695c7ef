"""Layer 11, the faces: the panel (``widgets``), classroom exercises (``exercises``), the
``%xprune`` magics, the command line, Voila/JupyterLab serving and ``compare_techniques``."""
