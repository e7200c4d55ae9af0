"""Running an experiment: the only code that reads the ml_collections config.

`settings` validates the config, `workspace` owns the workdir, `stages` holds the stage
functions and their table, `run` plans and runs them.
"""
