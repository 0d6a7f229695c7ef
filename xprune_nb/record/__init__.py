"""Layer 8, the record: a study's timeline (history, snapshots, transactions), its files
(``io``: study files, checkpoints, Hugging Face folders, atomic writes, the class resolver) and
its recipes (``recipe``)."""
