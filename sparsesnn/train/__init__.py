"""Training a configured run: the TOML schema (:mod:`.config`), config to live objects (:mod:`.factory`), batches
(:mod:`.batching`), one optimiser step (:mod:`.step`), the loop with exact resume (:mod:`.trainer`), the run
directory's files (:mod:`.rundir`, :mod:`.checkpoint`), losses and distillation, several processes
(:mod:`.distributed`), TensorBoard and process settings (:mod:`.runtime`)."""
