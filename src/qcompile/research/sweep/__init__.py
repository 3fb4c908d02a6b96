"""Parameter-sensitivity sweeps: ``run`` expands Hydra's sweep grammar into jobs, prepares their
batches and writes the results table; ``batches`` runs batches (in this process or a process
pool); ``launch`` runs them through Hydra's launcher plugins (Slurm, joblib, Ray); ``summary``
writes the summary page."""
